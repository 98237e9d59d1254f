"""Protocol runs: the recorded 2,000-edit runs found and ordered, their settings, which share the protocol's λ."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional

from otelab.workbench.stream import load_runs

METHOD_ORDER = ("memit", "alphaedit", "prune", "rect", "rlsedit")
MODE_ORDER = ("aligned", "no-ec", "naive")


def setting(run: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """A run's setting (``settings``, else ``session``), e.g. ``method``, ``mode``, ``cov_weight``."""
    return run.get("settings", {}).get(key, run.get("session", {}).get(key, default))


def one_time(run: Mapping[str, Any]) -> bool:
    """True for the one-time edit of the whole stream (a stream of one batch)."""
    s = run["stream"]
    return s["batch_size"] >= len(s["case_ids"])


def run_spec(run: Mapping[str, Any]) -> str:
    """The run as an :mod:`otelab.paper.claims` spec: ``"memit:aligned"``, ``"rect:no-ec"``, ``"memit:one-time"``."""
    return f"{setting(run, 'method')}:{'one-time' if one_time(run) else setting(run, 'mode')}"


def _order(run: Mapping[str, Any]) -> tuple:
    method, mode = setting(run, "method"), setting(run, "mode")
    kind = 4 if one_time(run) else MODE_ORDER.index(mode) if mode in MODE_ORDER else 3
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), str(method), kind,
            str(mode), setting(run, "rect_keep") or 0, setting(run, "values") != "bank",
            setting(run, "cov_weight") or 0)


def protocol_runs(folder: str | Path | None = None, *files: str | Path) -> dict[str, dict[str, Any]]:
    """The recorded runs of ``folder`` and of single ``files``, by label, in editor order.

    Arguments:
        folder: a results folder (e.g. ``experiments/results/paper2000``); missing or None: none.
        files: more run files (e.g. the λ = 1,000 aligned MEMIT run recorded before the folder);
            a file whose label the folder already has is left out (the folder's run is kept).
    Returns:
        ``{label: run}`` (:func:`otelab.workbench.stream.load_runs`: each run has ``file`` and ``complete``),
        sorted by method (MEMIT, AlphaEdit, PRUNE, RECT, RLSEdit), then aligned, no-ec, naive,
        one-time, then λ.
    Raises:
        FileNotFoundError: a file in ``files`` does not exist (the folder may be missing: runs
            appear in it over time).
    """
    runs = dict(load_runs(folder)) if folder is not None and Path(folder).is_dir() else {}
    for f in map(Path, files):
        if not f.is_file():
            raise FileNotFoundError(f"no recorded run {f}")
        for label, run in load_runs(f.parent, f.name).items():
            runs.setdefault(label, run)
    return dict(sorted(runs.items(), key=lambda kv: _order(kv[1])))


def in_sweep(run: Mapping[str, Any]) -> bool:
    """True for a run of the λ sweep: sequential aligned MEMIT with banked values."""
    return (setting(run, "method") == "memit" and setting(run, "mode") == "aligned" and not one_time(run)
            and setting(run, "values", "bank") == "bank")


def protocol_lambda(runs: Mapping[str, Mapping[str, Any]]) -> Optional[float]:
    """The λ the editors outside the λ sweep were run with (the most common one), or None if there are none."""
    lams = Counter(setting(r, "cov_weight") for r in runs.values() if not in_sweep(r))
    lams.pop(None, None)
    return lams.most_common(1)[0][0] if lams else None


def editors(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The runs at the protocol's λ (:func:`protocol_lambda`); all runs when no λ is shared."""
    lam = protocol_lambda(runs)
    return {k: r for k, r in runs.items() if lam is None or setting(r, "cov_weight") == lam}


def sweep_runs(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The λ sweep's runs (:func:`in_sweep`), by increasing λ."""
    out = {k: r for k, r in runs.items() if in_sweep(r)}
    return dict(sorted(out.items(), key=lambda kv: setting(kv[1], "cov_weight") or 0))


def in_progress(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``"<label>: <edits> of <n> edits"`` for every run whose final evaluation is not in yet."""
    out = []
    for label, r in runs.items():
        if not r.get("complete", r.get("final") is not None):
            done = r["steps"][-1]["edits"] if r["steps"] else 0
            out.append(f"{label}: {done:,} of {len(r['stream']['case_ids']):,} edits")
    return out
