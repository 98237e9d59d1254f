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
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from otelab import ote
from otelab.eval import metrics as M
FORMAT = "otelab-stream/1"
EDIT_KEYS = ("efficacy", "paraphrase", "specificity")
BASE_KEYS = ("specificity_retained", "neighbourhood_top1", "neighbourhood_kl")


class StreamError(ValueError):
    """A stream could not be started or resumed; nothing was written."""


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
        s = torch.linalg.svdvals(W)                                  # [min(d_o, d_i)]
        cond[str(l)] = float(s[0] / s[-1]) if float(s[-1]) > 0 else float("inf")
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


# ----------------------------------------------------------------------------- evaluation


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
    """

    def __init__(self, loaded, records: Sequence[Any], batch_size: int, *, texts: Sequence[str] = (),
                 tasks: Optional[Mapping[str, Sequence[Mapping]]] = None,
                 demos: Optional[Mapping[str, Sequence[Mapping]]] = None, sample_per_batch: Optional[int] = 20,
                 latent_records: Optional[Sequence[Any]] = None, latent_layer: Optional[int] = None, seed: int = 0,
                 n_boot: int = 1000, eval_batch_size: int = 32, max_len: int = 128,
                 capability_every: Optional[int] = None, progress: bool = True):
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
        model, tok = loaded.model, loaded.tokenizer
        t0 = time.perf_counter()
        self.baseline = M.Baseline.compute(model, tok, [self.records[i] for i in self.sample],
                                           texts=list(texts) or None, max_len=max_len, latent_layer=latent_layer,
                                           latent_records=list(latent_records), batch_size=eval_batch_size,
                                           show_progress=progress)
        self.capability = (M.capability_answers(model, tok, self.tasks, 16, self.demos, progress)
                           if self.tasks else None)
        self.seconds = round(time.perf_counter() - t0, 2)

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
                "reference_seconds": self.seconds}

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
    else:
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
    if session_dir is not None:
        run["session_dir"] = str(session_dir)
    start = session.n_steps
    bar = tqdm(range(start, n_steps), desc=f"{session.method}/{session.mode}", disable=not progress,
               initial=start, total=n_steps)
    for b in bar:
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
        write_run(out, run)
        bar.set_postfix(dW=f"{sum(step['dW'].values()):.0f}")
    return run


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
    from otelab.workbench.bench import unedited_weights

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
