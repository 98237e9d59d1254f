"""A value bank: MEMIT target values computed once per request, stored on disk, reused everywhere.

A target value (:func:`otelab.engine.values.compute_values`) depends only on the unedited model,
the preset's value settings, the value layer, the context templates and the request
itself (not on its batch-mates: every request stops on its own NLL). So it is computed
once and kept, keyed per request by all of these.

The on-disk layout (checksummed shards and an index, written so that a killed computation resumes)
is described in :mod:`otelab.engine.bankfiles`.

Protocols. The bank holds values optimised once on the **unedited** model (``--values
bank``). The seed code's protocol re-optimises the values every step on the **edited**
model (``EditSession.step(batch)`` without values; ``--values per-step``): there a damaged
editor's errors feed into its next targets.

Example (a tiny random model; values go to a temporary folder)::

    >>> import tempfile
    >>> from otelab.models.loading import tiny_model
    >>> from otelab.data.requests import EditRequest
    >>> from otelab.engine.valuebank import ValueBank
    >>> lm = tiny_model("llama"); lm.preset = lm.preset.replace(v_steps=2)
    >>> reqs = [EditRequest("{} lives in", "Alice", "Paris"), EditRequest("{} works as a", "Bob", "cook")]
    >>> bank = ValueBank(lm, path=tempfile.mkdtemp(), progress=False)
    >>> len(bank.missing(reqs))
    2
    >>> vals = bank.get(reqs)             # computed, stored
    >>> tuple(vals.z.shape) == (2, lm.model.config.hidden_size), len(bank.missing(reqs))
    (True, 0)
    >>> bool((bank.get(reqs[::-1]).z[0] == vals.z[1]).all())   # read back, in request order
    True
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

import torch

from otelab.engine import values as V
from otelab.cache import atomic_write_bytes, cache_dir
from otelab.data.files import BUILTIN_DIR
from otelab.data.requests import EditRequest
from otelab.engine.bankfiles import (  # noqa: F401  (re-exported: imported from here by the CLI and tests)
    ShardStore, ValueBankError, ValueBankWarning, list_banks, read_export, short_fingerprint, tensors_sha256,
)

# the values of the whole built-in fact bank for the default model, shipped with otelab
# (`otelab values export --data factbank`); used by `otelab demo` when its spec matches
FACTBANK_VALUES = BUILTIN_DIR / "factbank-values-smollm2-135m.safetensors"
FORMAT = 1   # bump when the optimisation in otelab.engine.values changes its result: old banks then stop matching
_SETTINGS = ("v_lr", "v_steps", "clamp_factor", "kl_factor", "v_weight_decay", "dtype")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def request_fields(r: EditRequest) -> dict:
    """What of a request its value depends on (the prompt as a template, the subject, the new target)."""
    return {"prompt": r.template, "subject": r.subject, "target_new": r.target_new}


def value_spec(loaded, templates: Sequence[str] | None = None, layer: int | None = None) -> dict:
    """Everything besides the request that a value depends on.

    Arguments:
        loaded: a :class:`otelab.models.loading.LoadedModel`.
        templates: context templates (default :func:`otelab.engine.keys.context_templates`).
        layer: the value layer (default the preset's last edited layer).
    Returns:
        A JSON-able dict: format, model name and fingerprint, value settings, early-stop
        threshold, layer, templates.
    """
    from otelab.engine.keys import context_templates

    p = loaded.preset
    return {"format": FORMAT, "model": p.name, "fingerprint": str(loaded.fingerprint),
            "settings": {k: getattr(p, k) for k in _SETTINGS}, "early_stop_nll": V.EARLY_STOP_NLL,
            "layer": max(p.layers) if layer is None else int(layer),
            "templates": list(context_templates(loaded) if templates is None else templates)}


class ValueBank(ShardStore):
    """Per-request target values of one model and value spec, on disk.

    Arguments:
        loaded: a :class:`otelab.models.loading.LoadedModel` (the unedited model: values are
            always optimised on the model as loaded).
        path: the bank's folder (default ``<cache>/values/<model>-<spec digest>``).
        templates: context templates (default the model's :func:`otelab.engine.keys.context_templates`).
        chunk: requests optimised and stored together (bounds memory and the work lost to a kill).
        progress: show a ``tqdm`` bar (with ETA) while computing.
    """

    def __init__(self, loaded, path: str | os.PathLike | None = None, templates: Sequence[str] | None = None,
                 chunk: int = V.DEFAULT_CHUNK, progress: bool = True):
        if chunk < 1:
            raise ValueError(f"ValueBank: chunk must be ≥ 1, got {chunk}")
        self.loaded, self.chunk, self.progress = loaded, chunk, progress
        self.spec = value_spec(loaded, templates)
        self.spec_id = _digest(self.spec)[:16]
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in loaded.preset.name)
        self.path = Path(path) if path is not None else cache_dir("values") / f"{slug}-{self.spec_id}"
        self.path.mkdir(parents=True, exist_ok=True)
        self._where: dict[str, tuple[str, int]] = {}      # request key -> (shard name, row)
        self._loaded_shards: dict[str, dict[str, torch.Tensor]] = {}
        self._scan()

    # ------------------------------------------------------------------ keys and index

    def key(self, request: EditRequest) -> str:
        """The bank key of one request (SHA-256 of the spec digest and the request's fields)."""
        return _digest({"spec": self.spec_id, "request": request_fields(request)})[:32]

    def __len__(self) -> int:
        return len(self._where)

    def _write_shard(self, keys: list[str], requests: list[EditRequest], res: V.ValueResult,
                     seconds: float) -> str:

        steps = self.spec["settings"]["v_steps"]
        n = len(keys)
        nll = torch.full((n, steps), float("nan"))
        for s, row in enumerate(res.losses):
            nll[:, s] = torch.tensor(row)
        tensors = {"z": res.z.detach().float().cpu().contiguous(), "z_init": res.z_init.detach().float().cpu().contiguous(),
                   "nll": nll, "steps": torch.tensor(res.row_steps, dtype=torch.int32)}
        name = f"shard-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{keys[0][:8]}.safetensors"
        meta = {"otelab_spec": json.dumps(self.spec, sort_keys=True), "keys": json.dumps(keys),
                "requests": json.dumps([request_fields(r) for r in requests], ensure_ascii=False),
                "sha256": tensors_sha256(tensors), "seconds": f"{seconds:.3f}"}
        self._add_shard(name, tensors, keys, meta)
        return name

    # ------------------------------------------------------------------ public API

    def missing(self, requests: Sequence[EditRequest]) -> list[EditRequest]:
        """The requests whose values are not in the bank (each once, in first-seen order).

        Arguments:
            requests: edit requests.
        Returns:
            A list of :class:`EditRequest`.
        """
        seen, out = set(), []
        for r in requests:
            k = self.key(r)
            if k not in self._where and k not in seen:
                seen.add(k)
                out.append(r)
        return out

    def compute(self, requests: Sequence[EditRequest]) -> int:
        """Compute and store the values still missing for ``requests``, one shard per chunk.

        Arguments:
            requests: validated edit requests.
        Returns:
            The number of values computed.
        """
        from tqdm.auto import tqdm

        todo = self.missing(requests)
        if not todo:
            return 0
        bar = tqdm(total=len(todo), desc=f"target values ({self.spec['model']})", unit="value",
                   disable=not self.progress)
        try:
            for i in range(0, len(todo), self.chunk):
                part = todo[i:i + self.chunk]
                t = time.perf_counter()
                res = V.compute_values(self.loaded, part, self.spec["layer"], templates=self.spec["templates"],
                                       chunk=self.chunk)
                self._write_shard([self.key(r) for r in part], part, res, time.perf_counter() - t)
                bar.update(len(part))
        finally:
            bar.close()
        return len(todo)

    def get(self, requests: Sequence[EditRequest], progress: bool | None = None,
            compute: bool = True) -> V.ValueResult:
        """The values of ``requests``, in request order; missing ones are computed (in chunks) and stored.

        Arguments:
            requests: validated edit requests (duplicates allowed).
            progress: override the bank's ``progress`` for this call.
            compute: compute what is missing (True), or raise :class:`ValueBankError` (False: e.g.
                while the model is being edited, when values must come from the unedited one).
        Returns:
            :class:`otelab.engine.values.ValueResult` on ``loaded.device``: ``z``, ``z_init`` ``[n, d_model]``,
            ``losses`` ``[steps][n]`` (each request's NLL trajectory, its last value repeated after it
            stopped), ``steps`` (the longest) and ``row_steps``.
        """
        if not requests:
            raise ValueError("ValueBank.get: no requests")
        old, self.progress = self.progress, self.progress if progress is None else progress
        try:
            for _ in range(2):   # a shard found corrupted while reading is recomputed once
                if not compute and (todo := self.missing(requests)):
                    raise ValueBankError(f"value bank {self.path}: {len(todo)} of the {len(requests)} values are "
                                         f"missing (first: {todo[0].name}) and computing is off")
                self.compute(requests)
                rows = []
                for r in requests:
                    name, row = self._where[self.key(r)]
                    data = self._shard(name)
                    if data is None:
                        break
                    rows.append((data, row))
                else:
                    break
            else:
                raise ValueBankError(f"value bank {self.path}: shards keep failing their checks")
        finally:
            self.progress = old
        dev = self.loaded.device
        pick = lambda k: torch.stack([d[k][i] for d, i in rows])
        nll, steps = pick("nll"), pick("steps")                                    # [n, v_steps], [n]
        n_steps = int(steps.max())
        losses = [[round(float(nll[j, min(s, int(steps[j]) - 1)]), 6) for j in range(len(rows))]
                  for s in range(n_steps)]
        return V.ValueResult(z=pick("z").to(dev), z_init=pick("z_init").to(dev), losses=losses,
                             steps=n_steps, row_steps=[int(s) for s in steps])

    def verify(self) -> dict:
        """Re-check every shard (file and tensor checksums, spec); bad ones are set aside.

        Returns:
            ``{"path", "shards", "values", "bad": [(shard, why), ...]}``.
        """
        bad = self._scan(verify=True)
        return {"path": str(self.path), "shards": len({w[0] for w in self._where.values()}),
                "values": len(self._where), "bad": bad}

    def export(self, file: str | os.PathLike, requests: Sequence[EditRequest] | None = None) -> Path:
        """Write the bank (or the values of ``requests``, computed if missing) to one safetensors file.

        Arguments:
            file: destination (written atomically).
            requests: export only these (in this order); default every stored value.
        Returns:
            The file's path.
        """
        from safetensors.torch import save

        if requests is not None:
            self.compute(requests)
            keys = list(dict.fromkeys(self.key(r) for r in requests))
        else:
            keys = sorted(self._where)
        if not keys:
            raise ValueBankError(f"value bank {self.path} is empty: nothing to export")
        rows = []
        for k in keys:
            data = self._shard(self._where[k][0])
            if data is None:
                raise ValueBankError(f"value bank {self.path}: a shard failed its checks during export; run it again")
            rows.append((data, self._where[k][1]))
        tensors = {name: torch.stack([d[name][i] for d, i in rows]).contiguous() for name in ("z", "z_init", "nll", "steps")}
        meta = {"otelab_spec": json.dumps(self.spec, sort_keys=True), "keys": json.dumps(keys),
                "sha256": tensors_sha256(tensors), "otelab_value_bank": str(FORMAT)}
        file = Path(file)
        atomic_write_bytes(file, save(tensors, metadata=meta))
        return file

    def _add_rows(self, keys: list[str], tensors: dict[str, torch.Tensor], source: str,
                  wanted: set[str] | None = None) -> int:
        """Store, as one new shard, the rows of checked tensors whose keys this bank lacks.

        Arguments:
            keys: one bank key per row of ``tensors`` (of this bank's spec).
            tensors: ``z``, ``z_init`` ``[n, d]``, ``nll`` ``[n, v_steps]``, ``steps`` ``[n]``.
            source: where they come from (kept in the shard's metadata).
            wanted: store only these keys (default every key the bank lacks).
        Returns:
            The number of values stored (values already in the bank are never replaced).
        """

        rows, seen = [], set()
        for i, k in enumerate(keys):
            if k not in self._where and k not in seen and (wanted is None or k in wanted):
                seen.add(k)
                rows.append(i)
        if not rows:
            return 0
        keys = [keys[i] for i in rows]
        tensors = {name: t[rows].contiguous() for name, t in tensors.items()}
        sha = tensors_sha256(tensors)
        name = f"shard-import-{sha[:16]}.safetensors"
        meta = {"otelab_spec": json.dumps(self.spec, sort_keys=True), "keys": json.dumps(keys), "sha256": sha,
                "imported_from": source}
        self._add_shard(name, tensors, keys, meta)
        return len(keys)

    @classmethod
    def import_(cls, file: str | os.PathLike, loaded, path: str | os.PathLike | None = None,
                templates: Sequence[str] | None = None, **kw) -> "ValueBank":
        """Add the values of an exported file to this model's bank, after checking them.

        Arguments:
            file: a file written by :meth:`export`.
            loaded, path, templates, kw: as for :class:`ValueBank`.
        Returns:
            The bank, with the file's values it lacked stored as one shard (values already
            in the bank are kept as they are).
        Raises:
            ValueBankError: the file cannot be read, fails its checksum, or was computed for
                another model, value settings or templates (nothing is written then).
        """
        keys, tensors = read_export(file, value_spec(loaded, templates))
        bank = cls(loaded, path=path, templates=templates, **kw)   # only now: a refused file creates nothing
        bank._add_rows(keys, tensors, Path(file).name)
        return bank


def fill_from_export(bank: ValueBank, file: str | os.PathLike, requests: Sequence[EditRequest]) -> str:
    """Import from an exported file the values of ``requests`` that ``bank`` lacks, if the file matches.

    The file is used only when it was computed with the bank's exact spec (model
    fingerprint, value settings, layer, templates) and passes its checksum; values
    already in the bank are never replaced. Otherwise nothing is written and the caller
    computes the values as usual.

    Arguments:
        bank: the bank to fill (e.g. the demo's).
        file: a file written by :meth:`ValueBank.export` (e.g. :data:`FACTBANK_VALUES`).
        requests: the requests whose values are wanted.
    Returns:
        A one-line note: how many values were imported, or why the file was not used;
        ``""`` when the bank already held every value.
    """
    todo = {bank.key(r) for r in bank.missing(requests)}
    if not todo:
        return ""
    name = Path(file).name
    if not Path(file).is_file():
        return f"{name} not found: computing the {len(todo)} missing values"
    try:
        keys, tensors = read_export(file, bank.spec)
    except ValueBankError as e:
        return f"not using {name}: {str(e).removeprefix(str(file) + ': ')}; computing the {len(todo)} missing values"
    n = bank._add_rows(keys, tensors, name, wanted=todo)
    rest = len(todo) - n
    checked = f"{bank.spec['model']} {short_fingerprint(bank.spec['fingerprint'])}"
    return (f"imported {n} values from {name} (checked: {checked}…)"
            + (f"; computing the {rest} it lacks" if rest else ""))
