"""Recorded stream runs (``otelab-stream/1`` JSON): their names, their reports, and where they are kept."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

from otelab import ote
from otelab.workbench.stream_eval import EDIT_KEYS, FORMAT, StreamError

__all__ = ["stream_report", "run_label", "load_runs", "RESULTS_ENV", "results_dir", "recorded_runs"]


def stream_report(run: Mapping[str, Any], label: Optional[str] = None):
    """A run's checkpoints as an :class:`otelab.eval.report.Report` (step = edits so far).

    Metrics: ``ppl``, ``top1_agreement``, ``latent_drift`` (and ``_unrelated`` / ``_edited``),
    ``glue/<task>/<acc|f1|agreement|margin|margin_change>``, ``efficacy`` / ``paraphrase`` / ``specificity`` of
    the sample (``_lo`` / ``_hi``: the bootstrap interval), ``dW/<layer>`` and ``cond/<layer>``,
    and the retention matrix as ``retention/<batch>`` (1-based batch, the share at that checkpoint).
    """
    from otelab.eval.report import Report

    rep = Report(label, meta={"settings": run.get("settings", {}), "session": run.get("session", {})})
    bs = run["stream"]["batch_size"]
    for s in run["steps"]:
        rep.add(s["edits"], {f"dW/{l}": v for l, v in s["dW"].items()})
        rep.add(s["edits"], {f"cond/{l}": v for l, v in s["cond"].items()})
    for c in run["checkpoints"]:
        row: dict[str, Any] = {}
        if "lm" in c:
            row.update(ppl=c["lm"]["ppl"], top1_agreement=c["lm"]["top1_agreement"])
        if "latent" in c:
            row.update(latent_drift=c["latent"]["cos_drift"], latent_drift_unrelated=c["latent"]["cos_drift_unrelated"],
                       latent_drift_edited=c["latent"]["cos_drift_edited"])
        for task, d in c.get("capability", {}).items():
            row.update({f"glue/{task}/{k}": d[k] for k in ("acc", "f1", "agreement", "margin", "margin_change")})
        for k in EDIT_KEYS:
            if "edit_sample" in c:
                row[k] = c["edit_sample"][k]
                row[k + "_lo"], row[k + "_hi"] = c["edit_sample"][k + "_ci"]
        rep.add(c["edits"], row)
    ret = run.get("retention")
    if ret:
        for b, shares in enumerate(ret["share"]):
            for step, v in zip(ret["steps"], shares):
                if v is not None:
                    rep.add(min(step * bs, len(run["stream"]["case_ids"])), {f"retention/{b + 1}": v})
    return rep


def run_label(run: Mapping[str, Any]) -> str:
    """A short name for a recorded run, from its settings: ``"MEMIT aligned λ=10000"``, with the
    options that differ from the protocol's defaults (RECT's share, per-step values, one-time edit)."""
    st = run.get("settings", {})
    ses = run.get("session", {})
    method, mode = st.get("method", ses.get("method", "?")), st.get("mode", ses.get("mode", "?"))
    parts = [ote.display_name(method)]
    n, bs = len(run.get("stream", {}).get("case_ids", [])), run.get("stream", {}).get("batch_size")
    parts.append("one-time edit" if n and bs and bs >= n else mode)
    if method == "rect" and st.get("rect_keep") not in (None, ote.EDITORS["rect"].options["rect_keep"]):
        parts.append(f"{int(round(100 * st['rect_keep']))}%")
    if st.get("values") == "edited":
        parts.append("per-step values")
    if st.get("cov_weight") is not None:
        parts.append(f"λ={st['cov_weight']:g}")
    return " ".join(parts)


def load_runs(folder: str | Path, pattern: str = "*.json") -> dict[str, dict[str, Any]]:
    """Every recorded stream run (``otelab-stream/1`` JSON) in ``folder``, by :func:`run_label`.

    Arguments:
        folder: a results folder, e.g. ``experiments/results/paper2000``.
        pattern: file-name glob.

    Returns:
        ``{label: run}`` in file-name order; each run gains ``"file"`` (its name) and
        ``"complete"`` (True when the final all-record evaluation is in it).
        Files of another format are skipped; a file that is not JSON raises, naming it.
    """
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(Path(folder).glob(pattern)):
        try:
            run = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise StreamError(f"{f}: not valid JSON ({e})") from None
        if not isinstance(run, dict) or run.get("format") != FORMAT:
            continue
        run["file"], run["complete"] = f.name, run.get("final") is not None
        out[run_label(run)] = run
    return out


RESULTS_ENV = "OTELAB_RESULTS_DIR"


def results_dir() -> Path:
    """The folder of recorded experiments: ``$OTELAB_RESULTS_DIR``, else the checkout's ``experiments/results``.

    Found from the package's own location, not the working directory, so a notebook
    finds the records wherever it runs (a copy in another folder, a test's temporary root).
    The folder may not exist (an installed package without the repository).
    """
    import os

    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "experiments" / "results"


def recorded_runs(*folders: str | Path, complete: bool = True) -> tuple[Optional[Path], dict[str, dict[str, Any]]]:
    """The runs of the first folder that holds a complete recorded run (e.g. ``paper2000``, then ``results``).

    Arguments:
        folders: results folders, in order of preference (a missing folder is skipped);
            default ``results_dir() / "paper2000"``, then :func:`results_dir`.
        complete: keep only the complete runs (their final all-record evaluation is in).

    Returns:
        ``(folder, {label: run})`` (:func:`load_runs`), or ``(None, {})`` when no folder has a complete run.
    """
    folders = folders or (results_dir() / "paper2000", results_dir())
    for folder in folders:
        runs = load_runs(folder) if Path(folder).is_dir() else {}
        if any(r["complete"] for r in runs.values()):
            return Path(folder), {k: r for k, r in runs.items() if r["complete"] or not complete}
    return None, {}
