"""Value bank files: checksummed safetensors shards, the index, the lock, exported files, on-disk format.

Layout: one folder per *spec* (model fingerprint + value settings + layer + templates),
``<cache>/values/<model>-<spec digest>/`` by default, holding

* ``shard-*.safetensors``: the values of one computed chunk (``z``, ``z_init``, the NLL
  trajectory and the steps of each request), with the spec, the request keys and the
  SHA-256 of the tensors in the file's metadata, so that every shard describes itself;
* ``index.json``: the spec and, per shard, its request keys and the SHA-256 of the file.

A shard is written (atomically) after each chunk, then the index; a computation killed at
any point resumes where it stopped (a shard whose index entry is missing is adopted after
its own checksum is verified). A shard whose file checksum, tensor checksum or spec does
not match is never used: a :class:`ValueBankWarning` names it and why, it is renamed
``*.bad`` and its requests are recomputed.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from otelab.cache import atomic_write_bytes, atomic_write_json, cache_dir, sha256_file


class ValueBankError(ValueError):
    """A bank file that cannot be used (import of a foreign or corrupted file)."""


class ValueBankWarning(UserWarning):
    """A stored shard was ignored (corrupted or mismatched); its values are recomputed."""


def short_fingerprint(fingerprint) -> str:
    """``"sha256:246f0120de7a…"`` -> ``"246f0120de7a"`` (for messages)."""
    return str(fingerprint).rpartition(":")[2][:12]


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors: each name, dtype, shape and exact bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ShardStore:
    """The on-disk side of a value bank: its index and verified shards under one folder.

    A subclass (:class:`otelab.engine.valuebank.ValueBank`) sets ``path`` (the folder), ``spec`` (the
    value spec every shard must carry), ``_where`` (request key -> (shard name, row)) and
    ``_loaded_shards`` (shard name -> its tensors and keys, read once).
    """

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise index updates between processes filling the same bank."""
        with open(self.path / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read_index(self) -> dict:
        file = self.path / "index.json"
        if not file.is_file():
            return {"spec": self.spec, "shards": {}}
        try:
            index = json.loads(file.read_text(encoding="utf-8"))
            assert isinstance(index.get("shards"), dict)
        except Exception as e:   # a garbled index is rebuilt from the self-describing shards
            warnings.warn(f"value bank {self.path}: index.json cannot be read ({type(e).__name__}); "
                          "rebuilding it from the shards", ValueBankWarning, stacklevel=3)
            return {"spec": self.spec, "shards": {}}
        if index.get("spec") != self.spec:
            other = index.get("spec") or {}
            differ = sorted(k for k in set(other) | set(self.spec) if other.get(k) != self.spec.get(k))
            raise ValueBankError(f"{self.path} holds the value bank of another model or value spec "
                                 f"({other.get('model')}, differs in {differ}); give another folder")
        return index

    def _check_shard(self, file: Path, sha_file: str | None) -> tuple[dict | None, str | None]:
        """Read and verify one shard; returns (tensors + keys, None) or (None, why it cannot be used).

        A shard of another spec is reported with a reason starting "another spec"."""
        from safetensors import safe_open

        if sha_file is not None and sha256_file(file) != sha_file:
            return None, "its file checksum does not match the index (file corrupted)"
        try:
            with safe_open(str(file), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            spec, keys = json.loads(meta["otelab_spec"]), json.loads(meta["keys"])
        except Exception as e:   # truncated or garbled file: safetensors/json raise various types
            return None, f"it cannot be read ({type(e).__name__}: {e})"
        if spec != self.spec:
            differ = sorted(k for k in set(spec) | set(self.spec) if spec.get(k) != self.spec.get(k))
            return None, f"another spec: it was computed for {spec.get('model')} with other fields {differ}"
        if tensors_sha256(tensors) != meta.get("sha256"):
            return None, "its tensor checksum does not match (file corrupted)"
        if set(tensors) != {"z", "z_init", "nll", "steps"} or any(t.shape[0] != len(keys) for t in tensors.values()):
            return None, "its tensors do not match its keys"
        return {"keys": keys, **tensors}, None

    def _reject(self, file: Path, why: str) -> None:
        warnings.warn(f"ignoring value bank shard {file}: {why}; its values will be recomputed",
                      ValueBankWarning, stacklevel=4)
        if file.exists():
            os.replace(file, file.with_suffix(".bad"))   # kept for inspection, never read again

    def _scan(self, verify: bool = False) -> list[tuple[str, str]]:
        """Load the index; adopt shards written but not indexed (a kill in between); optionally verify all."""
        bad = []
        with self._lock():
            index = self._read_index()
            changed = not (self.path / "index.json").is_file()
            for name in sorted(p.name for p in self.path.glob("shard-*.safetensors")):
                entry = index["shards"].get(name)
                if entry is not None and not verify:
                    continue
                data, why = self._check_shard(self.path / name, entry["sha256"] if entry else None)
                if data is None and why.startswith("another spec") and entry is None:
                    # not ours (copied in by hand): left alone, never indexed
                    warnings.warn(f"value bank {self.path}: ignoring {name}: {why}", ValueBankWarning, stacklevel=3)
                    continue
                if data is None:
                    bad.append((name, why))
                    self._reject(self.path / name, why)
                    index["shards"].pop(name, None)
                else:
                    index["shards"][name] = {"keys": data["keys"], "sha256": sha256_file(self.path / name)}
                    self._loaded_shards[name] = data
                changed = changed or entry is None or data is None
            for name in [s for s in index["shards"] if not (self.path / s).is_file()]:
                del index["shards"][name]     # a shard removed by hand: its values are simply missing
                changed = True
            if changed:
                atomic_write_json(self.path / "index.json", index, indent=None)
        self._where = {k: (name, row) for name, e in sorted(index["shards"].items())
                       for row, k in enumerate(e["keys"])}
        return bad

    def _shard(self, name: str) -> dict | None:
        """A verified shard's tensors (read once per bank object)."""
        if name not in self._loaded_shards:
            index = self._read_index()
            entry = index["shards"].get(name)
            data, why = self._check_shard(self.path / name, entry["sha256"] if entry else None)
            if data is None:
                with self._lock():
                    self._reject(self.path / name, why)
                    index = self._read_index()
                    index["shards"].pop(name, None)
                    atomic_write_json(self.path / "index.json", index, indent=None)
                self._where = {k: w for k, w in self._where.items() if w[0] != name}
                return None
            self._loaded_shards[name] = data
        return self._loaded_shards[name]

    def _add_shard(self, name: str, tensors: dict, keys: list, meta: dict) -> None:
        """Write one shard atomically, register it in the index (under the lock) and in memory."""
        from safetensors.torch import save

        atomic_write_bytes(self.path / name, save(tensors, metadata=meta))
        with self._lock():
            index = self._read_index()
            index["shards"][name] = {"keys": keys, "sha256": sha256_file(self.path / name)}
            atomic_write_json(self.path / "index.json", index, indent=None)
        self._loaded_shards[name] = {"keys": keys, **tensors}
        self._where.update({k: (name, row) for row, k in enumerate(keys)})


def read_export(file: str | os.PathLike, spec: dict) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Read a file written by :meth:`otelab.engine.valuebank.ValueBank.export` and check it against a value spec.

    Arguments:
        file: the exported file.
        spec: the :func:`otelab.engine.valuebank.value_spec` its values must have been computed with (model
            fingerprint, value settings, layer, templates).
    Returns:
        ``(keys, tensors)``: the bank key of every row and ``z``, ``z_init`` ``[n, d]``,
        ``nll`` ``[n, v_steps]``, ``steps`` ``[n]``.
    Raises:
        ValueBankError: the file cannot be read, fails its checksum, was computed for
            another spec, or its tensors do not match its keys.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        other, keys = json.loads(meta["otelab_spec"]), json.loads(meta["keys"])
    except Exception as e:   # truncated or garbled file: safetensors/json raise various types
        raise ValueBankError(f"{file}: not a readable value bank export ({type(e).__name__}: {e})") from None
    if tensors_sha256(tensors) != meta.get("sha256"):
        raise ValueBankError(f"{file}: checksum mismatch (file corrupted)")
    if other != spec:
        differ = sorted(k for k in set(other) | set(spec) if other.get(k) != spec.get(k))
        raise ValueBankError(f"{file}: computed for another model or value spec ({other.get('model')} "
                             f"{short_fingerprint(other.get('fingerprint'))}…, differs in {differ}); this model is "
                             f"{spec['model']} {short_fingerprint(spec['fingerprint'])}…")
    if set(tensors) != {"z", "z_init", "nll", "steps"} or any(t.shape[0] != len(keys) for t in tensors.values()):
        raise ValueBankError(f"{file}: its tensors do not match its keys")
    return keys, tensors


def list_banks(root: str | os.PathLike | None = None) -> list[dict]:
    """The banks under ``root`` (default ``<cache>/values``), read from their indexes (no model needed).

    Returns:
        Per bank: ``{"path", "model", "fingerprint", "values", "shards", "templates"}``.
    """
    root = Path(root) if root is not None else cache_dir("values")
    out = []
    for index_file in sorted(root.glob("*/index.json")):
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
            spec, shards = index["spec"], index["shards"]
        except Exception:
            out.append({"path": str(index_file.parent), "model": "?", "fingerprint": "?", "values": 0,
                        "shards": 0, "templates": 0})
            continue
        out.append({"path": str(index_file.parent), "model": spec.get("model"), "fingerprint": spec.get("fingerprint"),
                    "values": len({k for e in shards.values() for k in e["keys"]}), "shards": len(shards),
                    "templates": len(spec.get("templates", []))})
    return out
