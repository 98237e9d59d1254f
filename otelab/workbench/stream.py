"""Long editing streams (the paper's 2,000 edits in steps of 100) with checkpoints.

- :func:`weight_stats`: ‖W − W0‖_F and the condition number of every edited W,
  recorded after every step (a 576×1536 ``svdvals`` is cheap).
- :class:`StreamEval`: the unedited model's answers, cached before editing, and
  the evaluation run at checkpoints (PPL / top-1 agreement on held-out text,
  latent drift, general capability with agreement and margin, edit metrics on a
  fixed seeded sample with bootstrap intervals) and on the final model (edit
  metrics over every edited record).
- :func:`retention_matrix`: for every batch, the share of its edits still
  written in (efficacy) at every later checkpoint.
- :func:`run_stream`: steps a session through the stream, evaluates at every
  ``checkpoint_every`` steps, writes the run's JSON atomically after every step,
  saves the session at checkpoints and resumes from both.
- :func:`stream_report`: the run as an :class:`otelab.eval.report.Report` (one row per
  checkpoint, the retention matrix as ``retention/<batch>`` metrics).

:class:`StreamEval` lives in :mod:`otelab.workbench.stream_eval`, the recorded runs' readers
(:func:`stream_report`, :func:`load_runs`, :func:`recorded_runs`) in :mod:`otelab.workbench.records`;
their names are importable from here too.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from otelab.eval import metrics as M
from otelab.workbench.probe import unedited_weights
from otelab.workbench.records import RESULTS_ENV, load_runs, recorded_runs, results_dir, run_label, stream_report
from otelab.workbench.stream_eval import BASE_KEYS, EDIT_KEYS, FORMAT, StreamError, StreamEval, batch_sample

__all__ = ["FORMAT", "EDIT_KEYS", "BASE_KEYS", "StreamError", "StreamEval", "batch_sample", "weight_stats",
           "retention_matrix", "write_run", "run_stream", "stream_report", "run_label", "load_runs", "RESULTS_ENV",
           "results_dir", "recorded_runs", "VALUE_SOURCES", "value_provider"]


# ----------------------------------------------------------------------------- weights


def weight_stats(session) -> dict[str, dict[str, float]]:
    """‖W − W0‖_F and cond(W) = σ_max / σ_min of each edited layer, in float64.

    Arguments:
        session: an :class:`otelab.engine.session.EditSession`.

    Returns:
        ``{"dW": {layer: norm}, "cond": {layer: condition number}}`` (layers as strings).
    """
    a, model = session.loaded.adapter, session.loaded.model
    dW, cond = {}, {}
    for l in session.layers:
        W = a.get_W(model, l).detach().double()                      # [d_o, d_i]
        dW[str(l)] = float((W - session.W0[l].double()).norm())
        # σ² are the eigenvalues of the smaller Gram matrix: 4x cheaper than svdvals; in float64 the squared
        # condition number (SmolLM2's edited W: cond ≈ 11-18) stays far from 1/eps
        G = W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W         # [min(d_o, d_i), min(d_o, d_i)]
        ev = torch.linalg.eigvalsh(G)                                # ascending
        cond[str(l)] = float((ev[-1] / ev[0]).sqrt()) if float(ev[0]) > 0 else float("inf")
    return {"dW": dW, "cond": cond}


# ----------------------------------------------------------------------------- retention


def retention_matrix(scores: Sequence[Mapping[int, float]], steps_done: Sequence[int], batch_of: Sequence[int],
                     n_batches: int) -> dict[str, Any]:
    """The share of each batch's edits still written in, at every checkpoint.

    Arguments:
        scores: per checkpoint, ``{record index: efficacy (0/1 or a share)}`` of the
            records scored there.
        steps_done: per checkpoint, how many steps (batches) had been applied.
        batch_of: the batch (0-based step) of every record of the stream.
        n_batches: batches in the stream.

    Returns:
        ``{"steps": steps_done, "share": [n_batches][n_checkpoints], "n": [n_batches][n_checkpoints]}``:
        ``share[b][c]`` is the mean efficacy of batch ``b``'s scored records at checkpoint
        ``c`` (None when the batch was not yet edited or none of its records was scored),
        ``n[b][c]`` how many records it averages.
    """
    if len(scores) != len(steps_done):
        raise ValueError(f"got {len(scores)} checkpoint score sets for {len(steps_done)} checkpoints")
    share = [[None] * len(scores) for _ in range(n_batches)]
    count = [[0] * len(scores) for _ in range(n_batches)]
    for c, (sc, done) in enumerate(zip(scores, steps_done)):
        sums = [0.0] * n_batches
        for i, v in sc.items():
            b = batch_of[int(i)]
            if b < done and v is not None and not math.isnan(v):
                sums[b] += float(v)
                count[b][c] += 1
        for b in range(n_batches):
            if count[b][c]:
                share[b][c] = sums[b] / count[b][c]
    return {"steps": list(steps_done), "share": share, "n": count}


# ----------------------------------------------------------------------------- the run


def _json_safe(x: Any) -> Any:
    """NaN / inf become None so that the file is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_run(path: str | Path, run: Mapping[str, Any]) -> Path:
    """Write a run dict as strict JSON (NaN -> null), atomically."""
    from otelab.cache import atomic_write_bytes

    return atomic_write_bytes(Path(path), json.dumps(_json_safe(run), indent=1, allow_nan=False).encode("utf-8"))


def _case_ids(records: Sequence[Any]) -> list:
    return [M._get(r, "case_id", i) for i, r in enumerate(records)]


def _requests(records: Sequence[Any]) -> list:
    """Edit requests of FactRecords, EditRequests or CounterFact-style dicts."""
    from otelab.data.requests import EditRequest

    out = []
    for r in records:
        if hasattr(r, "request"):
            r = r.request()
        elif isinstance(r, Mapping):
            r = EditRequest(**{k: r[k] for k in ("prompt", "subject", "target_new", "target_true", "case_id") if k in r})
        out.append(r)
    return out


def _refresh_retention(run: dict, ev: StreamEval) -> None:
    cks = run["checkpoints"]
    scores = [{int(i): v for i, v in c.get("efficacy", {}).items()} for c in cks]
    if run.get("final") is not None:  # the final column counts every edited record
        scores[-1] = dict(enumerate(run["final"]["efficacy_per_record"]))
    run["retention"] = retention_matrix(scores, [c["step"] for c in cks], ev.batch_of, ev.n_batches)


def _resume_run(out: Path, session, ev: StreamEval, ids: list) -> dict[str, Any]:
    """The saved run of ``out``, cut back to the session's saved step (what came after is redone).

    Raises:
        StreamError: ``out`` is missing or records another stream, other editor settings or another step.
    """
    if not out.is_file():
        raise StreamError(f"cannot resume: {out} does not exist")
    run = json.loads(out.read_text(encoding="utf-8"))
    if run.get("format") != FORMAT:
        raise StreamError(f"{out} is not an otelab stream run (format {run.get('format')!r})")
    if run["stream"]["case_ids"] != ids or run["stream"]["batch_size"] != ev.batch_size:
        raise StreamError(f"{out} records a different stream (case ids or batch size differ)")
    here = {"method": session.method, "mode": session.mode, "layers": list(session.layers),
            "preset": session.loaded.preset.to_dict()}
    diff = [k for k in here if json.loads(json.dumps(here[k])) != run["session"].get(k)]
    if diff:
        raise StreamError(f"{out} was run with other editor settings ({', '.join(diff)} differ)")
    done = int(run.get("session_step", 0))
    if session.n_steps != done:
        raise StreamError(f"{out} was saved with the session at step {done}, the session given is at step "
                          f"{session.n_steps}; load the session saved beside it")
    # what came after the last saved session is redone
    run["steps"] = [s for s in run["steps"] if s["step"] <= done]
    run["checkpoints"] = [c for c in run["checkpoints"] if c["step"] <= done]
    run["final"] = None
    return run


def _start_run(out: Path, session, ev: StreamEval, ids: list,
               settings: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """A new run: its header, checkpoint 0 (the unedited model), written to ``out``.

    Raises:
        StreamError: ``out`` exists, or the session has already stepped.
    """
    if out.exists():
        raise StreamError(f"{out} exists; pass resume=True to continue it, or choose another file")
    if session.n_steps:
        raise StreamError(f"the session has already made {session.n_steps} step(s); start from a fresh one")
    run = {"format": FORMAT, "settings": dict(settings or {}),
           "session": {"method": session.method, "mode": session.mode, "layers": list(session.layers),
                       "preset": session.loaded.preset.to_dict()},
           "evaluation": ev.settings(), "stream": {"case_ids": ids, "batch_size": ev.batch_size},
           "sample": ev.sample, "unedited_weights": weight_stats(session), "steps": [], "checkpoints": [],
           "final": None, "retention": None, "session_step": 0, "session_dir": None,
           "timings": {"reference": ev.seconds}}
    json.dumps(run["settings"])  # settings must be JSON before any work
    run["checkpoints"].append(ev.checkpoint(session.loaded, 0))
    _refresh_retention(run, ev)
    write_run(out, run)
    return run


def _stream_step(session, ev: StreamEval, run: dict, b: int, values, checkpoint_every: int,
                 session_dir) -> dict[str, Any]:
    """Edit batch ``b``, record its step (and checkpoint, session save) in ``run``; the step's entry."""
    n_steps = ev.n_batches
    reqs = _requests(ev.records[b * ev.batch_size:(b + 1) * ev.batch_size])
    t0 = time.perf_counter()
    val = values(reqs) if values is not None else None
    t_val = time.perf_counter() - t0
    rec = session.step(reqs, values=val)
    step = {"step": rec.step, "edits": min(rec.step * ev.batch_size, len(ev.records)),
            "delta_norms": rec.delta_norms, "timings": dict(rec.timings, provider_values=round(t_val, 3))}
    step.update(weight_stats(session))
    run["steps"].append(step)
    last = rec.step == n_steps
    if rec.step % checkpoint_every == 0 or last:
        if last:
            ck, allrec = ev.final(session.loaded, rec.step)
            run["final"] = allrec
        else:
            ck = ev.checkpoint(session.loaded, rec.step)
        run["checkpoints"].append(ck)
        _refresh_retention(run, ev)
        if session_dir is not None:
            t = time.perf_counter()
            session.save(session_dir)
            run["session_step"] = rec.step
            step["timings"]["save"] = round(time.perf_counter() - t, 3)
    return step


def run_stream(session, evaluator: StreamEval, out: str | Path, *,
               values: Optional[Callable[[list], Any]] = None, checkpoint_every: int = 5,
               session_dir: Optional[str | Path] = None, resume: bool = False,
               settings: Optional[Mapping[str, Any]] = None, progress: bool = True) -> dict[str, Any]:
    """Edit the evaluator's stream batch by batch, evaluating at checkpoints; resumable.

    After every step the run's JSON is rewritten atomically (``weight_stats`` and the
    step's timings); every ``checkpoint_every`` steps and after the last one the model
    is evaluated (:meth:`StreamEval.checkpoint`) and the session saved to
    ``session_dir``; the final model also gets :meth:`StreamEval.final`. Checkpoint 0
    (the unedited model) is measured first.

    Arguments:
        session: an :class:`otelab.engine.session.EditSession`; fresh, or restored with
            ``EditSession.load(session_dir, ...)`` when resuming.
        evaluator: the :class:`StreamEval` built on the unedited model.
        out: the run's JSON file.
        values: ``f(requests) -> ValueResult`` for a batch (e.g. a value bank); None
            optimises values inside ``session.step`` on the edited model (the seed code's protocol).
        checkpoint_every: steps between checkpoints.
        session_dir: where the session is saved at checkpoints (needed to resume).
        resume: continue ``out`` (which must exist and describe the same stream); the
            session must be at the step saved in it.
        settings: free-form settings stored in the JSON (model, method, λ, ...).
        progress: tqdm over steps.

    Returns:
        The run dict, as written to ``out``.

    Raises:
        StreamError: ``out`` exists and ``resume`` is False, or the saved run does
            not match this stream / session.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    if checkpoint_every < 1:
        raise StreamError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    ev = evaluator
    ids = _case_ids(ev.records)
    n_steps = ev.n_batches
    if resume:
        run = _resume_run(out, session, ev, ids)
    else:
        run = _start_run(out, session, ev, ids, settings)
    if session_dir is not None:
        run["session_dir"] = str(session_dir)
    start = session.n_steps
    bar = tqdm(range(start, n_steps), desc=f"{session.method}/{session.mode}", disable=not progress,
               initial=start, total=n_steps)
    for b in bar:
        step = _stream_step(session, ev, run, b, values, checkpoint_every, session_dir)
        write_run(out, run)
        bar.set_postfix(dW=f"{sum(step['dW'].values()):.0f}")
    return run


# ----------------------------------------------------------------------------- values


VALUE_SOURCES = ("bank", "unedited", "edited")


def value_provider(session, source: str = "bank", bank_path: Optional[str | Path] = None,
                   progress: bool = False, templates: Optional[Sequence[str]] = None) -> Optional[Callable[[list], Any]]:
    """Where a stream's target values come from.

    Arguments:
        session: the :class:`otelab.engine.session.EditSession` the values are for.
        source: ``"bank"``: :class:`otelab.engine.valuebank.ValueBank` (values of the unedited
            model, stored and reused); ``"unedited"``: :func:`otelab.engine.values.compute_values`
            on the unedited weights for every batch (nothing stored); ``"edited"``: values
            re-optimised every step on the edited model, the seed code's protocol.
        bank_path: the bank's folder (default: the bank's own, under the cache).
        progress: the bank's progress bar.
        templates: the prompts the values are optimised on (default the model's
            context templates; ``["{}"]``: the plain prompt only).

    Returns:
        ``f(requests) -> ValueResult``, or None for ``"edited"`` with the default templates
        (``session.step`` then optimises the values itself).
    """
    if source not in VALUE_SOURCES:
        raise StreamError(f"unknown value source {source!r}; choose from {', '.join(VALUE_SOURCES)}")
    if source == "edited":
        if templates is None:
            return None   # session.step optimises them itself, on the preset's context templates
        from otelab.engine.values import compute_values
        return lambda reqs: compute_values(session.loaded, reqs, templates=templates)  # current (edited) weights
    if source == "bank":
        try:
            from otelab.engine.valuebank import ValueBank
        except ImportError:
            raise StreamError("the value bank (otelab.engine.valuebank) is not available in this version; "
                              "use the value source 'unedited'") from None
        bank = ValueBank(session.loaded, path=bank_path, templates=templates, progress=progress)

        def get(reqs):
            with unedited_weights(session):  # a value missing from the bank is optimised on the unedited model
                return bank.get(reqs)
        return get

    from otelab.engine.values import compute_values

    def fresh(reqs):
        with unedited_weights(session) as lm:
            return compute_values(lm, reqs, templates=templates)
    return fresh
