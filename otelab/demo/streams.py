"""The demo's data and its editing: one editor's pass over the stream, scored at the checkpoints."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from otelab.demo.config import DemoConfig, run_label

__all__ = ["load_demo_data", "RunResult", "run_stream", "step0_row", "final_projection"]


def _slim(record, n_para: int, n_neigh: int):
    """A copy of a fact-bank record with fewer paraphrase / neighbourhood prompts (cheaper scoring)."""
    r = copy.copy(record)
    r.paraphrase_prompts = list(record.paraphrase_prompts[:n_para])
    r.neighborhood_prompts = list(record.neighborhood_prompts[:n_neigh])
    return r


def load_demo_data(cfg: DemoConfig):
    """The stream, evaluation sets and latent records (via :func:`otelab.workbench.bench.load_data`).

    Returns:
        A :class:`otelab.workbench.bench.WorkbenchData` whose stream records carry at most
        ``n_para`` paraphrases and ``n_neigh`` neighbourhood prompts.
    """
    from otelab.workbench.data import WorkbenchData, load_data

    if cfg.data == "factbank":
        data = load_data(cfg)
    else:  # the same layout as the workbench's, from CounterFact
        from otelab.data.texts import held_out_texts
        from otelab.data.loaders import load_counterfact, load_glue

        n_edit = min(cfg.latent_n // 2, cfg.n_records)
        records = load_counterfact(n=cfg.n_records + cfg.latent_n - n_edit)
        if len(records) < cfg.n_records:
            raise ValueError(f"CounterFact gave {len(records)} records, the stream needs {cfg.n_records}")
        stream, unrelated = records[:cfg.n_records], records[cfg.n_records:]
        data = WorkbenchData(stream=stream,
                             glue={t: load_glue(t, n=cfg.glue_n) for t in cfg.glue_tasks} if cfg.glue_n else {},
                             texts=held_out_texts(cfg.n_texts) if cfg.n_texts else [],
                             latent_records=stream[:n_edit] + unrelated,
                             latent_stream_index=list(range(n_edit)) + [None] * len(unrelated))
    data.stream = [_slim(r, cfg.n_para, cfg.n_neigh) for r in data.stream]
    return data


@dataclass
class RunResult:
    """One editor's pass over the stream."""

    spec: str
    label: str
    report: Any                                   # otelab.eval.report.Report
    latent_after: Any = None                      # [n_latent, d] at the last step, or None
    step_seconds: list = field(default_factory=list)
    eval_seconds: float = 0.0


def run_stream(loaded, cov: dict, spec: str, data, baseline, step0: dict, cfg: DemoConfig,
               values: Optional[list] = None, latent_layer: Optional[int] = None, bar=None) -> RunResult:
    """Edit the whole stream with one editor, scoring at the checkpoints; the model is reset afterwards.

    Arguments:
        loaded: the unedited model (edited in place, restored bit for bit at the end).
        cov: ``{layer: Ĉ0}``.
        spec: ``"method:mode"``.
        data: from :func:`load_demo_data`; baseline: the unedited model's :class:`otelab.eval.metrics.Baseline`.
        step0: the unedited model's metrics row (step 0 of the report).
        values: per batch, a precomputed :class:`otelab.engine.values.ValueResult` (None: optimised per step).
        latent_layer: index into ``hidden_states`` (default: output of the last edited block).
        bar: a tqdm bar advanced once per step.
    Returns:
        A :class:`RunResult`.
    """
    from otelab.engine.session import EditSession
    from otelab.eval.report import Report
    from otelab.workbench.bench import measure

    method, _, mode = spec.partition(":")
    label = run_label(spec)
    latent_layer = max(loaded.layers) + 1 if latent_layer is None else latent_layer
    B = cfg.batch_size
    steps = cfg.n_records // B
    session = EditSession(loaded, method, mode, cov=cov, progress=False, undo_depth=0)
    report = Report(label, meta={"method": method, "mode": mode, "spec": spec})
    report.add(0, step0)
    out = RunResult(spec, label, report)
    try:
        for t in range(1, steps + 1):
            batch = [r.request() for r in data.stream[(t - 1) * B:t * B]]
            if bar is not None:
                bar.set_postfix_str(f"{label}: step {t}/{steps}")
            t0 = time.perf_counter()
            session.step(batch, values=values[t - 1] if values is not None else None)
            out.step_seconds.append(time.perf_counter() - t0)
            if t % cfg.eval_every == 0 or t == steps:
                t0 = time.perf_counter()
                row, after = measure(loaded, session, data, baseline, t * B, B, latent_layer, glue=t == steps or cfg.glue_every_eval)
                out.eval_seconds += time.perf_counter() - t0
                report.add(t, row)
                if t == steps:
                    out.latent_after = after
            if bar is not None:
                bar.update(1)
    finally:
        session.reset()
    return out


def step0_row(loaded, data, baseline) -> dict:
    """The unedited model's row: scored on the whole stream (efficacy is then the floor)."""
    from otelab.eval.metrics import edit_scores
    from otelab.workbench.bench import glue_row

    res = edit_scores(loaded.model, loaded.tokenizer, data.stream, baseline=baseline, show_progress=False)
    row = {"edits": 0.0, "efficacy_all": res["efficacy"], "paraphrase_all": res["paraphrase"],
           "specificity": res["specificity"], "specificity_retained": res["specificity_retained"],
           "neighbourhood_kl": res["neighbourhood_kl"], "delta_norm": 0.0}
    if baseline.lm is not None:
        row.update(ppl=baseline.lm.ppl, ppl_unedited=baseline.lm.ppl, top1_agreement=1.0)
    if baseline.latent is not None:
        row.update(latent_drift=0.0, latent_drift_edited=0.0, latent_drift_unrelated=0.0)
    row.update(glue_row(loaded, data.glue))
    return row


def final_projection(baseline, data, results: dict, cfg: DemoConfig):
    """One UMAP fit on the unedited and every run's final subject states."""
    import numpy as np
    import torch

    from otelab.eval.drift import umap_2d
    from otelab.workbench.bench import LatentProjection

    runs = [r for r in results.values() if r.latent_after is not None]
    if not runs:
        return None
    before = baseline.latent.states
    eb, ea = umap_2d(before, torch.cat([r.latent_after for r in runs]), seed=0)
    n = before.shape[0]
    ea = np.asarray(ea)
    return LatentProjection(step=cfg.n_records // cfg.batch_size, before=np.asarray(eb),
                            after={r.label: ea[i * n:(i + 1) * n] for i, r in enumerate(runs)},
                            edited=[i is not None for i in data.latent_stream_index],
                            names=[getattr(r, "subject", str(i)) for i, r in enumerate(data.latent_records)])
