"""``otelab demo``: the paper's headline effect on a real model, in one headless command.

Two parts:

1. **Theory**: :func:`otelab.toy.verify.verify` checks every identity of the paper numerically
   (and, without ``--quick``, reproduces the toy collapse of Eq. 3 vs Eq. 4).
2. **Practice**: sequential editing of the default model (SmolLM2-135M) with the built-in
   fact bank, comparing pairs of editors on the *same* stream of edit batches: an
   OTE-aligned editor against a misaligned one (:data:`DEFAULT_PAIRS`). After every
   ``eval_every`` steps each run is scored on all edits so far (efficacy, paraphrase,
   specificity against the unedited model), on held-out text (perplexity, top-1
   agreement with the unedited model), on latent drift of subject states, and at the
   start and end on general capability probes.

The target values of each request are optimised **once**, on the unedited model, kept
in the value bank (:mod:`otelab.engine.valuebank`, so a second demo reuses them) and shared by
every run (``--fresh-values`` is the seed code's per-step protocol: values re-optimised
every step on each run's edited model, at several times the cost). For the built-in fact
bank and SmolLM2 they ship with otelab (:data:`otelab.engine.valuebank.FACTBANK_VALUES`): they are
imported into the bank when they were computed for this exact model fingerprint, value
settings and templates, and computed as usual otherwise (a one-line note says which).

The layers above the edited ones never change, so the hidden state that makes the model say the new object does not depend on
earlier edits except through its starting point; sharing it isolates what the demo is
about: the update rule. The residual ``V − W K`` is still taken against each run's own
current weights.

Outputs (``--out``, default ``runs/demo``): ``metrics.json`` (settings, verification,
per-step metrics of every run, final summary, timings) and ``report.html`` (one
self-contained page: plotly panels from :mod:`otelab.views.panels`, tables, the settings).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

# (aligned run, misaligned run) pairs: "method:mode". Chosen by measurement, see docs in
# DEFAULT_NOTE and the settings in metrics.json.
DEFAULT_PAIRS = (("alphaedit:memorize-full", "alphaedit:memorize-nullspace"),
                 ("memit:aligned", "memit:naive"))
PAIR_TITLES = {
    ("alphaedit:memorize-full", "alphaedit:memorize-nullspace"):
        "Table 1: memorize-the-latest, memorize-full = Eq. 4 as printed (keeps −S C0 P) vs "
        "memorize-nullspace = Eq. 3 (null-space shortcut)",
    ("memit:aligned", "memit:naive"): "Tables 2/5: MEMIT, OTE-aligned vs naive (repeated one-time edit)",
    ("alphaedit:aligned", "alphaedit:naive"): "Tables 2/5: AlphaEdit, OTE-aligned vs naive",
    ("alphaedit:aligned", "alphaedit:memorize-nullspace"):
        "Tables 2/5: AlphaEdit, OTE-aligned vs naive (memorize-nullspace: for AlphaEdit the same update as Eq. 3)",
    ("prune:aligned", "prune:no-ec"): "Table 5: PRUNE, with vs without Algorithm 1's error correction",
    ("rect:aligned", "rect:no-ec"): "Table 5: RECT, with vs without Algorithm 1's error correction",
}
# the report's headings and contents name a pair by these; the full title goes in the section text
PAIR_SHORT = {
    ("alphaedit:memorize-full", "alphaedit:memorize-nullspace"): "Table 1, Eq. 4 vs Eq. 3",
    ("memit:aligned", "memit:naive"): "Tables 2/5, MEMIT",
    ("alphaedit:aligned", "alphaedit:naive"): "Tables 2/5, AlphaEdit",
    ("alphaedit:aligned", "alphaedit:memorize-nullspace"): "Tables 2/5, AlphaEdit vs Eq. 3",
    ("prune:aligned", "prune:no-ec"): "Table 5, PRUNE",
    ("rect:aligned", "rect:no-ec"): "Table 5, RECT",
}
# direction of "better" for the summary's per-metric verdict
HIGHER_BETTER = ("efficacy_all", "paraphrase_all", "specificity", "specificity_retained", "top1_agreement",
                 "glue_mean")
LOWER_BETTER = ("ppl", "latent_drift_unrelated", "neighbourhood_kl")
# differences within these count as ties: scores in [0, 1] (one edit of 50 is 0.02), else relative
TIE_ABS, TIE_REL = 0.02, 0.02
SUMMARY_METRICS = ("efficacy_all", "paraphrase_all", "efficacy_latest", "specificity", "specificity_retained",
                   "neighbourhood_kl", "ppl", "top1_agreement", "latent_drift_unrelated", "glue_mean", "delta_norm")
# the report's summary as two tables of short headers (one of 14 columns ran past a 1440 px window):
# (table title, [(summary key, column header, what the column is)])
SUMMARY_TABLES = (
    ("The edits", [("efficacy_all", "efficacy", "edit prompts prefer the new object, all edits so far"),
                   ("paraphrase_all", "paraphrase", "the same on paraphrases of the edit prompts"),
                   ("efficacy_latest", "latest batch", "efficacy on the last batch only"),
                   ("specificity", "specificity", "neighbourhood prompts still prefer the true object"),
                   ("specificity_retained", "spec. kept", "neighbourhood prompts keep the unedited model's choice"),
                   ("neighbourhood_kl", "neighb. KL", "KL to the unedited model on neighbourhood prompts")]),
    ("The rest of the model", [("ppl", "perplexity", "on held-out texts"),
                               ("top1_agreement", "top-1 agree", "next-token agreement with the unedited model"),
                               ("latent_drift_unrelated", "latent drift",
                                "1 − cos of unrelated subjects' hidden states"),
                               ("glue_mean", "probes", "mean probe accuracy"),
                               ("delta_norm", "‖W − W0‖", "Σ‖W − W0‖_F over the edited layers"),
                               ("edit_s_per_step", "s / step", "wall-clock seconds per edit step")]),
)
# how the findings name each compared metric
METRIC_WORDS = {"efficacy_all": "efficacy on all edits so far", "paraphrase_all": "paraphrase success on all edits",
                "specificity": "specificity (neighbourhood prompts still right)",
                "specificity_retained": "specificity retained", "neighbourhood_kl": "neighbourhood KL",
                "ppl": "held-out perplexity", "top1_agreement": "top-1 agreement with the unedited model",
                "latent_drift_unrelated": "latent drift of unrelated subjects", "glue_mean": "probe accuracy"}


@dataclass
class DemoConfig:
    """Everything that decides what the demo runs (all of it is written to metrics.json).

    Attributes:
        model: preset name or path (``None``: ``$OTELAB_MODEL`` or SmolLM2-135M).
        data: ``"factbank"`` (built in) or ``"counterfact"`` (``$OTELAB_DATA_DIR`` or the Hugging Face Hub).
        pairs: ``(aligned, misaligned)`` run specs ``"method:mode"``.
        n_records: edits in the stream (the first fact-bank records). The default, 200 in 2 steps
            of 100 (the paper's step size) scored after each step, is the longest stream that
            the measured stage costs put within 5 minutes for a cold run on 2 CPU cores with the
            shipped values (README, "Timing").
        batch_size: edits per step.
        eval_every: score every this many steps (and always at the last step).
        cov_tokens: tokens of the preserved covariance C0.
        corpus: covariance corpus spec (``None``: the default Wikipedia corpus).
        n_para, n_neigh: paraphrase / neighbourhood prompts scored per record.
        glue_n: items per general-capability task (0: skip), scored at step 0 and at the end.
        glue_every_eval: also score general capability at every checkpoint (slower).
        n_texts, max_len: held-out texts for perplexity / top-1 agreement and their token limit.
        latent_n: subject states tracked for latent drift (half edited, half unrelated).
        umap: draw a UMAP of the subject states at the end (needs ``umap-learn``).
        fresh_values: the seed code's per-step protocol: values re-optimised every step on each
            run's edited model, instead of banked values of the unedited model shared by all runs.
        values_bank: the folder of the value bank that stores the shared values per request
            (:class:`otelab.engine.valuebank.ValueBank`; ``None``: the model's default bank in the otelab cache).
        verify_quick: the small verification (no toy collapse).
        skip_verify: leave the verification out.
    """

    model: Optional[str] = None
    data: str = "factbank"
    pairs: tuple = DEFAULT_PAIRS
    n_records: int = 200
    batch_size: int = 100
    eval_every: int = 1
    cov_tokens: int = 20_000
    corpus: Optional[str] = None
    n_para: int = 1
    n_neigh: int = 2
    glue_n: int = 20
    n_texts: int = 8
    max_len: int = 64
    latent_n: int = 20
    umap: bool = True
    glue_every_eval: bool = False
    fresh_values: bool = False
    values_bank: Optional[str] = None
    verify_quick: bool = False
    skip_verify: bool = False

    @classmethod
    def quick(cls, **over: Any) -> "DemoConfig":
        """The CI size: a 4-edit stream in batches of 2, tiny evaluation sets, the quick verification."""
        from otelab.config import CI_COV_TOKENS

        base = cls(n_records=4, batch_size=2, eval_every=1, cov_tokens=CI_COV_TOKENS, glue_n=4, n_texts=2,
                   max_len=32, latent_n=6, umap=False, verify_quick=True)
        return replace(base, **over)

    def runs(self) -> list[str]:
        """The distinct run specs, in pair order."""
        return list(dict.fromkeys(s for p in self.pairs for s in p))

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        from otelab.engine.session import SessionError, check_combo

        for name in ("n_records", "batch_size", "eval_every", "cov_tokens", "max_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("n_para", "n_neigh", "glue_n", "n_texts", "latent_n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.data not in ("factbank", "counterfact"):
            raise ValueError(f"data must be 'factbank' or 'counterfact', got {self.data!r}")
        if self.n_records % self.batch_size:
            raise ValueError(f"n_records ({self.n_records}) must be a multiple of batch_size ({self.batch_size})")
        if not self.pairs:
            raise ValueError("pairs is empty: give at least one (aligned, misaligned) pair")
        for p in self.pairs:
            if len(p) != 2:
                raise ValueError(f"pair {p!r} must hold two run specs 'method:mode'")
            for spec in p:
                method, colon, mode = spec.partition(":")
                if not colon:
                    raise ValueError(f"run spec {spec!r}: expected 'method:mode'")
                try:
                    check_combo(method, mode)
                except SessionError as err:
                    raise ValueError(f"run spec {spec!r}: {err}") from None


def parse_pairs(text: str) -> tuple:
    """``"memit:aligned/memit:naive,alphaedit:aligned/alphaedit:naive"`` -> pairs."""
    pairs = []
    for chunk in text.split(","):
        parts = [s.strip() for s in chunk.split("/")]
        if len(parts) != 2 or not all(parts):
            raise argparse.ArgumentTypeError(f"{chunk!r}: a pair is 'method:mode/method:mode' (aligned/misaligned)")
        pairs.append(tuple(parts))
    return tuple(pairs)


def run_label(spec: str) -> str:
    """``"memit:naive"`` -> ``"MEMIT naive"`` (the workbench's naming)."""
    from otelab.workbench.bench import track_label

    method, _, mode = spec.partition(":")
    return track_label(method, mode)


# --------------------------------------------------------------------------- data

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
    from otelab.workbench.bench import Sizes, WorkbenchData, load_data

    sizes = Sizes(n_records=cfg.n_records, batch_size=cfg.batch_size, glue_n=cfg.glue_n, n_texts=cfg.n_texts,
                  max_len=cfg.max_len, latent_n=cfg.latent_n, cov_tokens=cfg.cov_tokens)
    if cfg.data == "factbank":
        data = load_data(sizes)
    else:  # the same layout as the workbench's, from CounterFact
        from otelab.cli.eval import held_out_texts
        from otelab.data.loaders import load_counterfact, load_glue

        n_edit = min(cfg.latent_n // 2, cfg.n_records)
        records = load_counterfact(n=cfg.n_records + cfg.latent_n - n_edit)
        if len(records) < cfg.n_records:
            raise ValueError(f"CounterFact gave {len(records)} records, the stream needs {cfg.n_records}")
        stream, unrelated = records[:cfg.n_records], records[cfg.n_records:]
        data = WorkbenchData(stream=stream,
                             glue={t: load_glue(t, n=cfg.glue_n) for t in sizes.glue_tasks} if cfg.glue_n else {},
                             texts=held_out_texts(cfg.n_texts) if cfg.n_texts else [],
                             latent_records=stream[:n_edit] + unrelated,
                             latent_stream_index=list(range(n_edit)) + [None] * len(unrelated))
    data.stream = [_slim(r, cfg.n_para, cfg.n_neigh) for r in data.stream]
    return data


# --------------------------------------------------------------------------- one run

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


# --------------------------------------------------------------------------- the whole demo

def _verdict(a: dict, b: dict) -> dict:
    """Per summary metric, which of the two final rows is better: ``aligned``, ``misaligned`` or ``tie``.

    A difference counts only beyond :data:`TIE_ABS` for metrics in [0, 1] (HIGHER_BETTER)
    and beyond :data:`TIE_REL` of the larger value for the others.
    """
    out = {}
    for m in HIGHER_BETTER + LOWER_BETTER:
        x, y = a.get(m), b.get(m)
        if x is None or y is None or math.isnan(x) or math.isnan(y):
            continue
        sign = 1 if m in HIGHER_BETTER else -1
        d = sign * (x - y)
        tol = TIE_ABS if m in HIGHER_BETTER else TIE_REL * max(abs(x), abs(y))
        out[m] = {"aligned": x, "misaligned": y, "better": "aligned" if d > tol else "misaligned" if d < -tol else "tie"}
    return out


def _final(report, label) -> dict:
    return report.latest(label)


def run_demo(cfg: DemoConfig, out: str | Path = "runs/demo", progress: bool = True) -> dict:
    """Run the verification and the editing comparison; write ``metrics.json`` and ``report.html``.

    Arguments:
        cfg: the settings.
        out: output folder (created).
        progress: tqdm bars.
    Returns:
        The dict written to ``metrics.json``.
    """
    from tqdm.auto import tqdm

    from otelab.engine.covariance import get_covariance
    from otelab.eval.metrics import Baseline
    from otelab.models.loading import load_model
    from otelab.eval.report import Report

    cfg.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    verify_res = None
    if not cfg.skip_verify:
        from otelab.toy.verify import verify

        t0 = time.perf_counter()
        print("[1/2] theory: checking every identity of the paper numerically"
              + (" (quick)" if cfg.verify_quick else " and the toy collapse"), flush=True)
        verify_res = verify(quick=cfg.verify_quick)
        timings["verify"] = time.perf_counter() - t0
        n_ok = sum(r["passed"] for r in verify_res["identities"])
        print(f"      {n_ok}/{len(verify_res['identities'])} identities hold to {verify_res['tolerance']:g} "
              f"({timings['verify']:.0f} s)", flush=True)

    print("[2/2] practice: sequential editing on a real model", flush=True)
    t0 = time.perf_counter()
    loaded = load_model(cfg.model)
    timings["model_load"] = time.perf_counter() - t0
    layers = list(loaded.layers)
    t0 = time.perf_counter()
    cov = get_covariance(loaded, layers, corpus=cfg.corpus, n_tokens=cfg.cov_tokens, progress=progress)
    timings["covariance"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = load_demo_data(cfg)
    latent_layer = max(layers) + 1
    baseline = Baseline.compute(loaded.model, loaded.tokenizer, data.stream, texts=data.texts or None,
                                max_len=cfg.max_len, latent_layer=latent_layer if data.latent_records else None,
                                latent_records=data.latent_records or None, show_progress=progress)
    step0 = _step0(loaded, data, baseline)
    timings["baseline"] = time.perf_counter() - t0

    B, steps = cfg.batch_size, cfg.n_records // cfg.batch_size
    values, values_note = None, ""
    if not cfg.fresh_values:
        from otelab.engine.valuebank import FACTBANK_VALUES, ValueBank, fill_from_export

        t0 = time.perf_counter()
        bank = ValueBank(loaded, path=cfg.values_bank, progress=progress)
        requests = [r.request() for r in data.stream[:steps * B]]
        if cfg.data == "factbank":   # the values shipped with otelab, used only if computed with this exact spec
            values_note = fill_from_export(bank, FACTBANK_VALUES, requests)
            if values_note:
                print(f"      values: {values_note}", flush=True)
        bank.compute(requests)   # what is missing, with a progress bar
        values = [bank.get([r.request() for r in data.stream[t * B:(t + 1) * B]], compute=False)
                  for t in range(steps)]
        timings["values"] = time.perf_counter() - t0

    results: dict[str, RunResult] = {}
    specs = cfg.runs()
    with tqdm(total=steps * len(specs), desc="sequential editing", unit="step", disable=not progress) as bar:
        for spec in specs:
            t0 = time.perf_counter()
            results[spec] = run_stream(loaded, cov, spec, data, baseline, step0, cfg, values, latent_layer, bar)
            timings[f"run {results[spec].label}"] = time.perf_counter() - t0

    projection = None
    if cfg.umap and baseline.latent is not None:
        t0 = time.perf_counter()
        projection = _projection(baseline, data, results, cfg)
        timings["umap"] = time.perf_counter() - t0

    combined = Report.combine(*(r.report for r in results.values()))
    summary, pairs = [], []
    for spec, r in results.items():
        fin = _final(combined, r.label)
        summary.append({"run": r.label, "spec": spec, **{m: fin.get(m) for m in SUMMARY_METRICS},
                        "edit_s_per_step": sum(r.step_seconds) / max(1, len(r.step_seconds))})
    for a, b in cfg.pairs:
        fa, fb = _final(combined, results[a].label), _final(combined, results[b].label)
        v = _verdict(fa, fb)
        pairs.append({"title": PAIR_TITLES.get((a, b), f"{run_label(a)} vs {run_label(b)}"),
                      "aligned": a, "misaligned": b, "metrics": v,
                      "aligned_better": [m for m, d in v.items() if d["better"] == "aligned"],
                      "misaligned_better": [m for m, d in v.items() if d["better"] == "misaligned"],
                      "trajectory": pair_trajectory(combined, results[a].label, results[b].label)})
    timings["total"] = time.perf_counter() - t_all

    settings = demo_settings(cfg, loaded, data, latent_layer, shared_values=values is not None,
                             values_note=values_note)
    for p in pairs:
        p["findings"] = pair_findings(p, settings)
    metrics = {"format": "otelab-demo/1", "settings": settings, "verify": verify_res, "summary": summary,
               "pairs": pairs, "runs": {spec: {"label": r.label, "step_seconds": r.step_seconds,
                                               "eval_seconds": r.eval_seconds, "final": _final(combined, r.label)}
                                        for spec, r in results.items()},
               "report": json.loads(combined.to_json()), "timings": timings}
    from otelab.cache import atomic_write_bytes

    atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=1, default=_json_default).encode("utf-8"))
    from otelab.views import html_report
    html_report.write(out / "report.html", "otelab demo: aligned vs misaligned sequential editing",
                      build_sections(metrics, results, projection),
                      subtitle=_subtitle(settings), settings=settings)
    return metrics


def demo_settings(cfg: DemoConfig, loaded, data, latent_layer: int, *, shared_values: bool = True,
                  values_note: str = "") -> dict:
    """The exact settings of a demo run, as written to metrics.json and shown in the report.

    Arguments:
        cfg: the demo's settings.
        loaded: the model that was edited (:class:`otelab.models.loading.LoadedModel`).
        data: the stream's :class:`otelab.workbench.bench.WorkbenchData` (its probe tasks and latent records).
        latent_layer: the ``hidden_states`` index of the latent-drift states.
        shared_values: whether the target values were optimised once and shared by every run.
        values_note: where the shared values came from (the shipped file, or why not).
    Returns:
        ``asdict(cfg)`` with ``model`` naming the model that was loaded, plus what was resolved
        at run time (layers, preset, fingerprint, steps, versions, device).
    """
    import platform

    import torch

    return {**asdict(cfg),
            # cfg.model None means "the default model", which the report showed as "—": name the one loaded
            "model": cfg.model or loaded.preset.name,
            "pairs": [list(p) for p in cfg.pairs], "model_resolved": loaded.preset.name,
            "layers": list(loaded.layers), "preset": loaded.preset.to_dict(), "fingerprint": loaded.fingerprint,
            "n_steps": cfg.n_records // cfg.batch_size, "latent_layer": latent_layer,
            "values": "optimised once per batch on the unedited model, shared by all runs" if shared_values
            else "optimised per run and step",
            "glue_tasks": sorted(data.glue), "n_latent_records": len(data.latent_records),
            "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "device": str(loaded.device), "values_source": values_note}


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _step0(loaded, data, baseline) -> dict:
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


def _projection(baseline, data, results: dict, cfg: DemoConfig):
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


# --------------------------------------------------------------------------- report

def _subtitle(settings: dict) -> str:
    src = "fact-bank" if settings["data"] == "factbank" else "CounterFact"
    return (f"{settings['model_resolved']} (layers {settings['layers']}), {settings['n_records']} {src} edits "
            f"in {settings['n_steps']} batches of {settings['batch_size']}, C0 from {settings['cov_tokens']:,} tokens")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def latest_note(p: dict) -> str:
    """What "misaligned better on earlier edits" means when the aligned run is a memorize-the-latest rule.

    Memorize-the-latest (Eq. 4, ``memorize-full``) asks each step to fit the latest batch and keep
    the preserved keys where the unedited model had them; earlier edits are not in its objective,
    so overwriting them is what it is meant to do, and its pull-back −S C0 P undoes part of them.
    Eq. 3 drops that term, so more of what earlier steps wrote stays in W, the same leftover that
    moves the model away from the unedited one. Without this sentence a reader takes a higher
    efficacy over all edits for Eq. 3 as a point against the paper's Table 1.

    Arguments:
        p: one entry of ``metrics["pairs"]`` (``aligned``, ``misaligned``, ``metrics``).
    Returns:
        The explanation, or ``""`` when the pair is not memorize-the-latest or the misaligned run
        is not better on the all-edits scores.
    """
    if not p["aligned"].partition(":")[2].startswith("memorize-"):
        return ""
    won = [m for m in ("efficacy_all", "paraphrase_all") if p["metrics"].get(m, {}).get("better") == "misaligned"]
    if not won:
        return ""
    A, B = run_label(p["aligned"]), run_label(p["misaligned"])
    return (f"Why {B} is ahead on {' and '.join(METRIC_WORDS[m] for m in won)}: memorize-the-latest asks each "
            f"step to fit the latest batch and keep the preserved knowledge, not earlier edits, so {A} may "
            "overwrite them (Eq. 4's pull-back −S C0 P undoes part of them), while Eq. 3 drops that term and more "
            "of what earlier steps wrote stays in W, the same leftover that moves the model away from the unedited "
            f"one. So this is no point against {A}: Table 1's claim is about preservation (specificity, "
            "neighbourhood KL, perplexity, top-1 agreement, latent drift, probes).")


def pair_sentence(p: dict) -> str:
    """One line with the final numbers of a pair on the key metrics (no adjectives added).

    Arguments:
        p: one entry of ``metrics["pairs"]``.
    Returns:
        The numbers, the count of metrics each run is better on, and :func:`latest_note` where it applies.
    """
    keys = [m for m in ("efficacy_all", "specificity", "ppl", "top1_agreement", "latent_drift_unrelated", "glue_mean")
            if m in p["metrics"]]
    nums = "; ".join(f"{m} {_fmt(p['metrics'][m]['aligned'])} vs {_fmt(p['metrics'][m]['misaligned'])}" for m in keys)
    ab, mb = p["aligned_better"], p["misaligned_better"]
    note = latest_note(p)
    return (f"{run_label(p['aligned'])} vs {run_label(p['misaligned'])}: {nums}. Of {len(p['metrics'])} metrics, "
            f"aligned better on {len(ab)}" + (f" ({', '.join(ab)})" if ab else "")
            + f", misaligned better on {len(mb)}" + (f" ({', '.join(mb)})" if mb else "")
            + f", the rest within tolerance ({TIE_ABS} for scores, {TIE_REL:.0%} relative otherwise)."
            + (f" {note}" if note else ""))


def pair_trajectory(combined, aligned_label: str, misaligned_label: str) -> list[dict]:
    """The pair's verdict at every checkpoint both runs were scored at (step ≥ 1).

    Arguments:
        combined: the :class:`otelab.eval.report.Report` holding both runs.
        aligned_label, misaligned_label: their labels.
    Returns:
        Per checkpoint, ``{"step", "edits", "metrics"}`` with ``metrics`` as in :func:`_verdict`.
    """
    df = combined.to_frame()
    rows = {lab: {int(st): dict(zip(g["metric"], g["value"])) for st, g in d.groupby("step")}
            for lab, d in df.groupby("label")}
    a, b = rows.get(aligned_label, {}), rows.get(misaligned_label, {})
    return [{"step": t, "edits": a[t].get("edits"), "metrics": _verdict(a[t], b[t])}
            for t in sorted(set(a) & set(b)) if t >= 1]


def _gap_metric(final: dict) -> Optional[str]:
    """The decided metric with the largest gap at the end (scores in absolute, others relative)."""
    def size(m):
        d = final[m]
        x, y = d["aligned"], d["misaligned"]
        return abs(x - y) if m in HIGHER_BETTER else abs(x - y) / max(abs(x), abs(y), 1e-12)
    decided = [m for m, d in final.items() if d["better"] != "tie"]
    return max(decided, key=size) if decided else None


def pair_findings(p: dict, settings: dict) -> str:
    """What the stream shows for one pair, in words, from the measured numbers only.

    Arguments:
        p: one entry of ``metrics["pairs"]`` (``aligned``, ``misaligned``, ``metrics`` at the
            end, ``trajectory`` from :func:`pair_trajectory`).
        settings: ``metrics["settings"]`` (stream length, batch size).
    Returns:
        A paragraph: where the two runs stand after the stream, with numbers, and how the
        largest gap developed over the checkpoints.
    """
    A, B = run_label(p["aligned"]), run_label(p["misaligned"])
    fin = p["metrics"]
    words = lambda m: METRIC_WORDS.get(m, m)
    nums = lambda m: f"{_fmt(fin[m]['aligned'])} vs {_fmt(fin[m]['misaligned'])}"
    ahead = [m for m, d in fin.items() if d["better"] == "aligned"]
    behind = [m for m, d in fin.items() if d["better"] == "misaligned"]
    steps = settings["n_steps"]
    head = (f"After {settings['n_records']} edits ({steps} step{'s' if steps != 1 else ''} of "
            f"{settings['batch_size']}), {A} vs {B}: ")
    if not ahead and not behind:
        text = (head + f"the two are within tolerance on all {len(fin)} metrics, so this stream does not "
                "separate them (" + "; ".join(f"{words(m)} {nums(m)}" for m in fin) + ").")
    else:
        parts = []
        if ahead:
            parts.append(f"{A} is better on " + "; ".join(f"{words(m)} ({nums(m)})" for m in ahead))
        if behind:
            parts.append(f"{B} is better on " + "; ".join(f"{words(m)} ({nums(m)})" for m in behind))
        ties = [words(m) for m, d in fin.items() if d["better"] == "tie"]
        text = head + ", and ".join(parts) + (f"; within tolerance on {', '.join(ties)}." if ties else ".")
    gap = _gap_metric(fin)
    traj = [c for c in p.get("trajectory", []) if gap in c["metrics"]]
    if gap is not None and len(traj) >= 2:
        sign = 1 if gap in HIGHER_BETTER else -1     # positive: the aligned run is better
        diffs = [sign * (c["metrics"][gap]["aligned"] - c["metrics"][gap]["misaligned"]) for c in traj]
        first = next((c for c in traj if c["metrics"][gap]["better"] != "tie"), None)
        trend = ("grew" if abs(diffs[-1]) > abs(diffs[0]) * 1.5 else "shrank" if abs(diffs[-1]) < abs(diffs[0]) / 1.5
                 else "stayed about the same")
        text += (f" The largest gap, in {words(gap)}, {trend} over the stream: {A} minus {B}"
                 + (" (sign flipped so that positive favours " + A + ")" if sign < 0 else "")
                 + " was " + ", ".join(f"{d:+.3g} after {int(c['edits'])}" for d, c in zip(diffs, traj)) + " edits"
                 + (f"; it first exceeded the tolerance after {int(first['edits'])} edits." if first else "."))
    note = latest_note(p)
    return f"{text} {note}" if note else text


def pair_heading(pair: tuple, index: int) -> str:
    """The short name a pair's sections carry in the report's headings and contents.

    Arguments:
        pair: ``(aligned spec, misaligned spec)``.
        index: the pair's place in the run (1-based), the name of a pair without a short name.
    Returns:
        At most about 30 characters (``"Table 1, Eq. 4 vs Eq. 3"``, ``"Pair 3"``).
    """
    return PAIR_SHORT.get(tuple(pair), f"Pair {index}")


def summary_html(summary: Sequence[dict], settings: dict) -> str:
    """The final metrics of every run as the tables of :data:`SUMMARY_TABLES`, each with a key to its columns.

    Arguments:
        summary: ``metrics["summary"]``, one row per run.
        settings: ``metrics["settings"]`` (what the scores were measured on).
    Returns:
        HTML: per table a subheading, the table (run label plus at most six short columns) and a key.
    """
    import html as _html

    from otelab.views.html_report import table_html

    on = {"specificity": f"{settings['n_neigh']} neighbourhood prompt(s) per edit",
          "ppl": f"{settings['n_texts']} held-out texts of {settings['max_len']} tokens",
          "glue_mean": f"{', '.join(settings['glue_tasks']) or 'no'} probes, {settings['glue_n']} items each"}
    out = []
    for title, cols in SUMMARY_TABLES:
        rows = [{"run": r["run"], **{head: r.get(key) for key, head, _ in cols}} for r in summary]
        key = "; ".join(f"<b>{_html.escape(head)}</b>: {_html.escape(what)}"
                        + (f" ({_html.escape(on[k])})" if k in on else "") for k, head, what in cols)
        out.append(f"<h3>{_html.escape(title)}</h3>{table_html(rows)}<p class='caption'>{key}.</p>")
    return "\n".join(out)


def build_sections(metrics: dict, results: dict, projection=None) -> list[tuple]:
    """The report's sections: summary, verification, then per pair every panel of :data:`otelab.views.panels.PANELS`.

    Arguments:
        metrics: what :func:`run_demo` writes to metrics.json.
        results: ``{spec: RunResult}``.
        projection: the UMAP of subject states (:class:`otelab.workbench.bench.LatentProjection`) or None.
    Returns:
        ``(kind, title, content, caption)`` tuples for :func:`otelab.views.html_report.render`; titles are
        short (they make the contents), the detail is in the captions.
    """
    import html as _html

    from otelab.views import panels
    from otelab.eval.report import Report

    s = metrics["settings"]
    secs: list[tuple] = []
    intro = ("<p>Every edit batch is applied by each editor in turn to the same unedited model; metrics compare "
             "the edited model with the unedited one. <b>Aligned</b> editors carry what the paper's OTE objective "
             "needs from step to step; <b>misaligned</b> ones drop it (the naive rule forgets earlier edits' keys; "
             "Eq. 3, mode memorize-nullspace, drops the pull-back term S C0 P that Eq. 4, mode memorize-full, "
             "keeps).</p><ul>"
             + "".join(f"<li>{_html.escape(p['findings'])}</li>" for p in metrics["pairs"]) + "</ul>")
    secs.append(("text", "What was run and what it shows", intro, ""))
    secs.append(("text", "Summary: final metrics of every run", summary_html(metrics["summary"], s),
                 f"After {s['n_records']} edits ({s['n_steps']} steps of {s['batch_size']})."))
    v = metrics.get("verify")
    if v is not None:
        rows = [{"identity": r["name"], "paper": r["ref"], "max rel. residual": r["max_rel_residual"],
                 "passed": r["passed"]} for r in v["identities"]]
        secs.append(("table", "Theory: every identity, checked numerically", rows,
                     f"Largest relative residual over random problems and steps; passes below {v['tolerance']:g}."))
        neg = [{"rule": r["name"], "paper": r["ref"],
                **{f"t={t}": d for t, d in zip(r["steps"], r["ote_distance"])}} for r in v["negatives"]]
        secs.append(("table", "Theory: rules expected to leave the OTE path", neg,
                     "Distance from the OTE path ‖W_t − W_OTE,t‖/‖W_OTE,t − W0‖ at a few steps."))
        if v.get("toy_collapse"):
            secs.append(("figure", "Theory: the toy collapse (Eq. 3 vs Eq. 4)", panels.toy_figure(v["toy_collapse"]),
                         "The synthetic OLS world of notebook 01."))
    for i, p in enumerate(metrics["pairs"], start=1):
        la, lb = results[p["aligned"]].label, results[p["misaligned"]].label
        rep = Report.combine(results[p["aligned"]].report, results[p["misaligned"]].report)
        proj = None
        if projection is not None:
            proj = copy.copy(projection)
            proj.after = {k: x for k, x in projection.after.items() if k in (la, lb)}
        short = pair_heading((p["aligned"], p["misaligned"]), i)
        styles = panels.style_heading([la, lb])   # the panels' own mapping: A solid, B dashed
        lines = _html.escape(f"{p['title']}. {styles[0].upper()}{styles[1:]}.")
        for n, panel in enumerate(panels.PANELS):
            # the pair's first panel carries its numbers; the others say what they show
            caption = f"<b>{lines}</b> " + _html.escape(pair_sentence(p)) if n == 0 else (
                f"{lines} {panel.caption}" if panel.caption else lines)
            if "projection" in panel.needs and proj is None:
                caption += " (UMAP not drawn in this run.)"
            secs.append(("figure", f"{short}: {panel.title}", panels.build(panel, rep, projection=proj, order=[la, lb]),
                         caption))
    rows, ours = paper_beside(metrics)
    if rows:
        secs.append(("table", "The paper beside otelab", rows,
                     f"otelab: {ours}; the paper's figure from the table named in each row, at the paper's own "
                     "model and scale (otelab.paper.claims). CounterFact scores as fractions."))
    timing_rows = [{"phase": k, "seconds": v} for k, v in metrics["timings"].items()]
    secs.append(("table", "Timings", timing_rows, "Wall-clock seconds on this machine."))
    return secs


def paper_beside(metrics: dict) -> tuple[list[dict], str]:
    """otelab's final numbers next to the paper's printed ones, for every claim a run of this demo tests.

    Arguments:
        metrics: what :func:`run_demo` returns (``settings``, ``summary``).
    Returns:
        ``(rows, ours)``: one row per (claim, run, metric) with ``otelab``, ``paper`` and the paper's
        setting; ``ours`` names otelab's model and scale.
    """
    from otelab.paper import claims as paper
    s = metrics["settings"]
    final = {r["spec"]: r for r in metrics["summary"]}
    ours = (f"{s.get('model_resolved') or s.get('model')}, {s['n_records']} {s['data']} edits "
            f"in {s['n_steps']} steps of {s['batch_size']}")
    rows = []
    for c in paper.CLAIMS:
        for r in paper.beside(c.key, final, ours=ours, names={sp: final[sp]["run"] for sp in final}):
            rows.append({"claim": c.where, "run": r["run"], "metric": r["metric"], "otelab": r["otelab"],
                         "paper": r["paper"], "paper setting": r["paper_setting"]})
    return rows, ours


# --------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``otelab demo``."""
    d = DemoConfig()
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--model", default=None, help="preset, HF id or path (default: $OTELAB_MODEL or smollm2-135m)")
    parser.add_argument("--quick", action="store_true",
                        help="CI size: 4 edits in batches of 2, tiny evaluation sets, quick verification "
                             "(also when $OTELAB_CI_SIZE is set)")
    parser.add_argument("--data", default=None, choices=["factbank", "counterfact"],
                        help="the edit stream: the built-in fact bank (default) or CounterFact ($OTELAB_DATA_DIR / HF Hub)")
    parser.add_argument("--pairs", type=parse_pairs, default=None, metavar="A/B,...",
                        help="aligned/misaligned run pairs as method:mode/method:mode, comma-separated (default: "
                             + ",".join("/".join(p) for p in DEFAULT_PAIRS) + ")")
    parser.add_argument("--n", type=int, default=None, help=f"edits in the stream (default {d.n_records})")
    parser.add_argument("--batch", type=int, default=None, help=f"edits per step (default {d.batch_size})")
    parser.add_argument("--eval-every", type=int, default=None, help=f"score every N steps (default {d.eval_every})")
    parser.add_argument("--cov-tokens", type=int, default=None, help=f"tokens of C0 (default {d.cov_tokens})")
    parser.add_argument("--corpus", default=None, help="covariance corpus: 'wiki' (default), 'wikitext' or a path")
    parser.add_argument("--glue-n", type=int, default=None, help=f"items per probe task, 0 to skip (default {d.glue_n})")
    parser.add_argument("--glue-every-eval", action="store_true",
                        help="score general capability at every checkpoint, not only at the start and the end")
    parser.add_argument("--values-bank", default=None, metavar="DIR",
                        help="the value bank's folder (default: the model's bank in the otelab cache; see `otelab values`)")
    parser.add_argument("--fresh-values", action="store_true",
                        help="the seed code's per-step protocol: re-optimise target values every step on each run's "
                             "edited model (slower) instead of banked values of the unedited model")
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP picture of subject states")
    parser.add_argument("--skip-verify", action="store_true", help="leave out the theory verification")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The :class:`DemoConfig` of parsed command-line options."""
    from otelab.config import ci_size

    over = {k: v for k, v in dict(model=args.model, data=args.data, pairs=args.pairs, n_records=args.n, batch_size=args.batch,
                                  eval_every=args.eval_every, cov_tokens=args.cov_tokens, corpus=args.corpus,
                                  glue_n=args.glue_n, values_bank=args.values_bank).items() if v is not None}
    if args.fresh_values:
        over["fresh_values"] = True
    if args.glue_every_eval:
        over["glue_every_eval"] = True
    if args.no_umap:
        over["umap"] = False
    if args.skip_verify:
        over["skip_verify"] = True
    return DemoConfig.quick(**over) if (args.quick or ci_size()) else replace(DemoConfig(), **over)


def format_summary(metrics: dict) -> str:
    """The printed summary: final metrics per run, then one line per pair."""
    from otelab.cli.tables import format_table

    cols = ["run", "efficacy_all", "paraphrase_all", "specificity", "ppl", "top1_agreement",
            "latent_drift_unrelated", "glue_mean", "delta_norm", "edit_s_per_step"]
    lines = [format_table(metrics["summary"], cols), ""]
    lines += ["- " + p["findings"] for p in metrics["pairs"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``otelab demo``; exit status 1 if an identity of the verification fails."""
    try:
        cfg = config_from_args(args)
        cfg.check()
    except ValueError as err:
        print(f"otelab demo: {err}", file=sys.stderr)
        return 2
    metrics = run_demo(cfg, args.out, progress=not args.no_progress)
    print()
    print(format_summary(metrics))
    out = Path(args.out)
    print(f"\nwrote {out / 'metrics.json'} and {out / 'report.html'} ({metrics['timings']['total']:.0f} s in all)")
    v = metrics.get("verify")
    return 0 if v is None or v["passed"] else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m otelab.demo.run``."""
    parser = argparse.ArgumentParser(prog="otelab demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
