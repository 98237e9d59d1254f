"""What a long stream is evaluated on: the unedited model's answers, cached before the first edit, and checkpoints.

:class:`StreamEval` measures at checkpoints (PPL / top-1 agreement on held-out text, latent
drift, general capability with agreement and margin, edit metrics on a fixed seeded sample
(:func:`batch_sample`) with bootstrap intervals) and on the final model (edit metrics over every
edited record).
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from otelab.eval import drift as D
from otelab.eval import metrics as M
from otelab.eval import refcache

__all__ = ["FORMAT", "EDIT_KEYS", "BASE_KEYS", "StreamError", "batch_sample", "StreamEval"]

FORMAT = "otelab-stream/1"
EDIT_KEYS = ("efficacy", "paraphrase", "specificity")
BASE_KEYS = ("specificity_retained", "neighbourhood_top1", "neighbourhood_kl")


class StreamError(ValueError):
    """A stream could not be started or resumed; nothing was written."""


def batch_sample(n: int, batch_size: int, per_batch: Optional[int], seed: int) -> list[int]:
    """A seeded sample of stream positions, ``per_batch`` from every batch (the checkpoint edit sample).

    Arguments:
        n: records in the stream.
        batch_size: edits per step.
        per_batch: positions drawn from each batch; ``None`` (or at least the batch's size): all of it.
        seed: the draw's seed.

    Returns:
        Sorted stream positions.
    """
    rng = random.Random(seed)
    sample: list[int] = []
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        sample += idx if per_batch is None or per_batch >= len(idx) else sorted(rng.sample(idx, per_batch))
    return sample


def _summary(per: Sequence[Mapping[str, Any]], keys: Sequence[str], n_boot: int, seed: int) -> dict[str, Any]:
    """Mean and bootstrap 95 % interval of each score over records."""
    out: dict[str, Any] = {"n": len(per)}
    for k in keys:
        vals = [d[k] for d in per if k in d]
        out[k] = M._nanmean(vals)
        out[k + "_ci"] = list(M.bootstrap_ci(vals, n_boot=n_boot, seed=seed))
    return out


class StreamEval:
    """What a stream is evaluated on, with the unedited model's answers cached before the first edit.

    Arguments:
        loaded: the :class:`otelab.models.loading.LoadedModel`, UNEDITED when this is built.
        records: the stream's CounterFact-style records, in editing order.
        batch_size: edits per step (fixes which batch each record belongs to).
        texts: held-out texts for PPL / top-1 agreement (not the covariance's texts).
        tasks: ``{task: items}`` for general capability (see :func:`otelab.eval.metrics.general_capability`).
        demos: optional few-shot examples per task (default zero-shot).
        sample_per_batch: records drawn (seeded) from every batch for the checkpoint
            edit metrics and the retention matrix; ``None`` = all.
        latent_records: records whose subject states are tracked (stream records among
            them count as edited once edited); default: the first 20 sampled records.
        latent_layer: ``hidden_states`` index for latent drift (default: the last edited
            layer's output).
        seed: the sample's seed (and the bootstrap's).
        n_boot: bootstrap resamples.
        eval_batch_size: sequences per forward pass.
        max_len: token limit per held-out text.
        capability_every: steps between general-capability evaluations (the costliest
            checkpoint measure: 6 tasks × their items); ``None`` = at every checkpoint. The
            unedited model and the final model are always evaluated.
        progress: show progress bars.
        cache: read the unedited references from, and store them in, ``<otelab cache>/references``
            (``True``) or the given folder (:mod:`otelab.eval.refcache`); ``False`` computes them
            and stores nothing. ``cached`` says afterwards whether they were read back.
    """

    def __init__(self, loaded, records: Sequence[Any], batch_size: int, *, texts: Sequence[str] = (),
                 tasks: Optional[Mapping[str, Sequence[Mapping]]] = None,
                 demos: Optional[Mapping[str, Sequence[Mapping]]] = None, sample_per_batch: Optional[int] = 20,
                 latent_records: Optional[Sequence[Any]] = None, latent_layer: Optional[int] = None, seed: int = 0,
                 n_boot: int = 1000, eval_batch_size: int = 32, max_len: int = 128,
                 capability_every: Optional[int] = None, progress: bool = True,
                 cache: bool | str | Path = False):
        self.records = list(records)
        if not self.records:
            raise StreamError("the stream has no records")
        if batch_size < 1:
            raise StreamError(f"batch_size must be >= 1, got {batch_size}")
        for i, r in enumerate(self.records):  # malformed records fail here, before any model work
            M._fact_pairs(r, M._where(r, i))
        self.batch_size, self.seed, self.n_boot = int(batch_size), int(seed), int(n_boot)
        self.batch_of = [i // self.batch_size for i in range(len(self.records))]
        self.n_batches = self.batch_of[-1] + 1
        self.sample = batch_sample(len(self.records), self.batch_size, sample_per_batch, seed)
        self.tasks = {t: list(v) for t, v in (tasks or {}).items()}
        self.demos = dict(demos) if demos else None
        self.eval_batch_size, self.progress = int(eval_batch_size), progress
        if capability_every is not None and capability_every < 1:
            raise StreamError(f"capability_every must be >= 1 or None, got {capability_every}")
        self.capability_every = capability_every
        if latent_layer is None:
            latent_layer = max(loaded.preset.layers) + 1
        if latent_records is None:
            latent_records = [self.records[i] for i in self.sample[:20]]
        t0 = time.perf_counter()
        self._references(loaded, [self.records[i] for i in self.sample], list(texts), list(latent_records),
                         latent_layer, max_len, cache)
        self.seconds = round(time.perf_counter() - t0, 2)

    def _references(self, loaded, sampled: list, texts: list, latent_records: list, latent_layer: int,
                    max_len: int, cache: bool | str | Path) -> None:
        """Set ``baseline`` and ``capability`` (the unedited model's answers): read from the cache, else computed."""
        model, tok = loaded.model, loaded.tokenizer
        folder = (refcache.default_dir() if cache is True else Path(cache)) if cache else None
        key = refcache.reference_key({
            "model": loaded.fingerprint, "sample": [M.fact_prompts(r, M.record_label(r, i)) for i, r in enumerate(sampled)],
            "texts": texts, "max_len": max_len, "latent_layer": latent_layer,
            "latent": [D._key(r, i) for i, r in enumerate(latent_records)], "tasks": self.tasks, "demos": self.demos,
            "eval_batch_size": self.eval_batch_size}) if folder is not None else None
        stored = refcache.load(folder, key) if folder is not None else None
        self.cached = stored is not None
        if stored is not None:
            self.baseline = M.Baseline.from_state(stored["baseline"], latent_records)
            self.capability = (M.CapabilityAnswers.from_state(stored["capability"])
                               if stored["capability"] is not None else None)
            return
        self.baseline = M.Baseline.compute(model, tok, sampled, texts=texts or None, max_len=max_len,
                                           latent_layer=latent_layer, latent_records=latent_records,
                                           batch_size=self.eval_batch_size, show_progress=self.progress)
        self.capability = (M.capability_answers(model, tok, self.tasks, 16, self.demos, self.progress)
                           if self.tasks else None)
        if folder is not None:
            refcache.save(folder, key, {"baseline": self.baseline.state(), "capability":
                                        self.capability.state() if self.capability is not None else None},
                          {"model": loaded.preset.name, "fingerprint": loaded.fingerprint,
                           "sample": len(sampled), "texts": len(texts), "latent": len(latent_records),
                           "tasks": {t: len(v) for t, v in self.tasks.items()}})

    def settings(self) -> dict[str, Any]:
        """The evaluation's sizes, for the run's JSON."""
        return {"n_records": len(self.records), "batch_size": self.batch_size, "sample": len(self.sample),
                "seed": self.seed, "n_boot": self.n_boot,
                "texts": len(self.baseline.lm.seqs) if self.baseline.lm is not None else 0,
                "latent_records": len(self.baseline.latent.records) if self.baseline.latent is not None else 0,
                "latent_layer": self.baseline.latent.layer if self.baseline.latent is not None else None,
                "tasks": {t: len(v) for t, v in self.tasks.items()},
                "shots": self.capability.shots if self.capability is not None else 0,
                "capability_every": self.capability_every,
                "reference_seconds": self.seconds, "reference_cached": self.cached}

    def _common(self, loaded, n_done: int, capability: bool = True) -> dict[str, Any]:
        """LM drift, latent drift and (when ``capability``) general capability."""
        from otelab.eval.drift import lm_drift

        model, tok = loaded.model, loaded.tokenizer
        out: dict[str, Any] = {}
        if self.baseline.lm is not None:
            out["lm"] = lm_drift(model, tok, self.baseline.lm, show_progress=False)
        if self.baseline.latent is not None:
            out["latent"] = self.baseline.latent.drift(model, tok, self.records[:n_done], self.eval_batch_size)
        if self.capability is not None and capability:
            # before the first edit the model's answers are the cached reference answers
            cap = (M.capability_scores(self.capability, self.capability) if n_done == 0 else
                   M.general_capability(model, tok, self.tasks, 16, False, reference=self.capability,
                                        demos=self.demos))
            out["capability"] = cap
            out["capability_mean"] = {k: sum(d[k] for d in cap.values()) / len(cap)
                                      for k in ("acc", "f1", "agreement", "margin", "margin_change")}
        return out

    def checkpoint(self, loaded, steps_done: int) -> dict[str, Any]:
        """Evaluate the model after ``steps_done`` steps (edit metrics on the sample's edited records).

        Returns:
            ``{"step", "edits", "lm", "latent", "capability", "capability_mean", "edit_sample"
            (means, bootstrap intervals, n), "efficacy" ({record index: 0/1}), "seconds"}``.
        """
        t0 = time.perf_counter()
        n_done = min(steps_done * self.batch_size, len(self.records))
        out: dict[str, Any] = {"step": steps_done, "edits": n_done}
        due = self.capability_every is None or steps_done % self.capability_every == 0
        out.update(self._common(loaded, n_done, capability=due))
        idx = [i for i in self.sample if i < n_done]
        if idx:
            res = M.edit_scores(loaded.model, loaded.tokenizer, [self.records[i] for i in idx],
                                self.eval_batch_size, self.baseline, show_progress=False)
            out["edit_sample"] = _summary(res["per_record"], EDIT_KEYS + BASE_KEYS, self.n_boot, self.seed)
            out["efficacy"] = {str(i): d["efficacy"] for i, d in zip(idx, res["per_record"])}
        out["seconds"] = round(time.perf_counter() - t0, 2)
        return out

    def final(self, loaded, steps_done: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The last checkpoint and the edit metrics over EVERY edited record.

        The checkpoint's sample numbers are read off the all-record scores (the
        vs-unedited neighbourhood variants are left out there, so nothing is scored twice).

        Returns:
            ``(checkpoint, all_records)``; ``all_records`` holds the means, ``n``, the
            bootstrap intervals, the per-record efficacy / paraphrase / specificity lists
            (stream order) and its ``seconds``.
        """
        t0 = time.perf_counter()
        n_done = min(steps_done * self.batch_size, len(self.records))
        ck: dict[str, Any] = {"step": steps_done, "edits": n_done}
        ck.update(self._common(loaded, n_done))
        ck["seconds"] = round(time.perf_counter() - t0, 2)
        t1 = time.perf_counter()
        res = M.edit_scores(loaded.model, loaded.tokenizer, self.records[:n_done], self.eval_batch_size, None,
                            show_progress=self.progress)
        per = res["per_record"]
        allrec = _summary(per, EDIT_KEYS, self.n_boot, self.seed)
        allrec.update({k + "_per_record": [d[k] for d in per] for k in EDIT_KEYS})
        allrec["seconds"] = round(time.perf_counter() - t1, 2)
        idx = [i for i in self.sample if i < n_done]
        ck["edit_sample"] = _summary([per[i] for i in idx], EDIT_KEYS, self.n_boot, self.seed)
        ck["efficacy"] = {str(i): per[i]["efficacy"] for i in idx}
        return ck, allrec
