"""The sequential-editing workbench, without any widget: sessions, a request stream and live metrics.

:class:`Workbench` steps one or two :class:`otelab.engine.session.EditSession` (e.g. aligned
vs naive MEMIT, each on its own copy of the model) through the same stream of
fact-bank records, one batch per step, and after every step measures:

- edit metrics on all edits so far and on the latest batch (efficacy, paraphrase)
  and specificity of all edits so far (:func:`otelab.eval.metrics.edit_scores`);
- perplexity and top-1 agreement on held-out text (:func:`otelab.eval.metrics.lm_drift`);
- latent drift at the last edited layer, edited vs unrelated records
  (:func:`otelab.eval.drift.latent_drift`);
- every ``eval_every`` steps, general capability per task
  (:func:`otelab.eval.metrics.general_capability`) and a 2-D UMAP of the hidden states
  before and after editing (:func:`otelab.eval.drift.umap_2d`), the two slow ones.

**Replay mode** (:meth:`Sizes.replay`, :func:`replay_data`, :class:`BankValues`) steps the
recorded runs' stream, the seeded draw of 2,000 CounterFact records, 100 edits per step:
the target values are read from the value bank (``otelab values compute --data
counterfact --n 2000 --seed 0 --templates plain``), never optimised on a click, and the
edit metrics are scored on a small fixed sample of the stream (:attr:`WorkbenchData.sample`),
so that a step returns in seconds and 2,000 edits take minutes.

Everything is compared with the *unedited* model: its outputs are cached once, at
construction (:class:`otelab.eval.metrics.Baseline`). Step 0 of every report is the
unedited model, scored on the first batch it is about to be edited with.

The metrics land in one :class:`otelab.eval.report.Report` per session (metric names in
:data:`METRICS`), which :mod:`otelab.views.panels` turns into figures and
:mod:`otelab.views.widgets` puts behind buttons.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from otelab.config import CI_COV_TOKENS, ci_size
from otelab import ote
from otelab.engine.session import METHODS, EditSession, SessionError, check_combo
from otelab.eval.report import Report

METHOD_NAMES = ote.DISPLAY_NAMES       # method -> display name, read live from the registry
# Metric names the workbench writes into its reports (the panels read these).
METRICS = {
    "efficacy_all": "efficacy, all edits so far",
    "paraphrase_all": "paraphrase, all edits so far",
    "efficacy_latest": "efficacy, latest batch",
    "paraphrase_latest": "paraphrase, latest batch",
    "specificity": "specificity (neighbourhood keeps its answer)",
    "specificity_retained": "neighbourhood preference as the unedited model's",
    "neighbourhood_kl": "KL(unedited ‖ edited) on neighbourhood prompts",
    "edits": "edits so far",
    "ppl": "perplexity on held-out text",
    "ppl_unedited": "the unedited model's perplexity",
    "top1_agreement": "top-1 agreement with the unedited model",
    "latent_drift": "latent drift 1 − cos, all latent records",
    "latent_drift_edited": "latent drift 1 − cos, edited records",
    "latent_drift_unrelated": "latent drift 1 − cos, unrelated records",
    "glue/<task>/acc": "general capability: accuracy per task",
    "glue/<task>/agreement": "general capability: share of items answered as the unedited model did",
    "glue/<task>/margin": "general capability: log-likelihood of the unedited answer minus the best other label",
}


# Replay mode: the recorded runs' stream is the seeded draw of this many CounterFact records.
REPLAY_DRAW = 2000
REPLAY_SEED = 0
FILL_COMMAND = "otelab values compute --data counterfact --n {n} --seed {seed} --templates plain"


class WorkbenchError(ValueError):
    """A workbench action that cannot be done (nothing was changed)."""


@dataclass(frozen=True)
class Sizes:
    """How much data the workbench uses.

    Attributes:
        n_records: length of the request stream (fact-bank records).
        batch_size: requests per step.
        glue_n: items per general-capability task.
        glue_tasks: the tasks.
        n_texts: held-out texts for perplexity / top-1 agreement.
        max_len: token limit per held-out text.
        latent_n: records whose hidden states are tracked (half from the stream, half unrelated).
        cov_tokens: tokens of the covariance corpus (``None``: the preset's).
        eval_every: general capability and UMAP every this many steps.
        sample_per_batch: stream records per batch the edit metrics score (``None``: every
            edited record; replay mode scores a few, see :attr:`WorkbenchData.sample`).
    """

    n_records: int = 60
    batch_size: int = 5
    glue_n: int = 40
    glue_tasks: tuple[str, ...] = ("sst2", "mrpc", "cola", "rte", "mmlu")
    n_texts: int = 16
    max_len: int = 128
    latent_n: int = 40
    cov_tokens: Optional[int] = None
    eval_every: int = 2
    sample_per_batch: Optional[int] = None

    @classmethod
    def default(cls, ci: Optional[bool] = None) -> "Sizes":
        """The interactive sizes, or the small CI sizes when ``ci`` (default :func:`ci_size`)."""
        if ci is None:
            ci = ci_size()
        if ci:
            return cls(n_records=8, batch_size=1, glue_n=10, n_texts=4, max_len=64, latent_n=20,
                       cov_tokens=CI_COV_TOKENS, eval_every=2)
        return cls()

    @classmethod
    def replay(cls, ci: Optional[bool] = None) -> "Sizes":
        """Replay mode's sizes: the recorded runs' 2,000 edits in steps of 100, cheap measurements.

        No general capability or UMAP per click (``glue_n=0``, ``eval_every=0``); 4 held-out
        texts; one scored record per batch (20 after 2,000 edits: a click's metrics stay at a
        few seconds). At CI size (``ci``, default :func:`ci_size`): the first 10 records of the
        draw in steps of 5, 2 scored per batch.
        """
        if ci is None:
            ci = ci_size()
        if ci:
            return cls(n_records=10, batch_size=5, glue_n=0, glue_tasks=(), n_texts=2, max_len=64, latent_n=10,
                       cov_tokens=CI_COV_TOKENS, eval_every=0, sample_per_batch=2)
        return cls(n_records=REPLAY_DRAW, batch_size=100, glue_n=0, glue_tasks=(), n_texts=4, max_len=128,
                   latent_n=20, eval_every=0, sample_per_batch=1)


@dataclass
class WorkbenchData:
    """What the workbench edits and measures with.

    Attributes:
        stream: the records to edit, in order (``FactRecord``-like: prompt, subject,
            target_new, target_true, paraphrase_prompts, neighborhood_prompts; ``.request()``).
        glue: ``{task: items}`` for general capability (may be empty).
        texts: held-out texts for perplexity and top-1 agreement (may be empty).
        latent_records: records whose subject states are tracked for latent drift.
        latent_stream_index: for each latent record, its index in ``stream`` (``None``: unrelated).
        sample: the stream positions the edit metrics score, ascending (``None``: every edited
            record). Only these records' neighbourhoods are cached before editing.
    """

    stream: list
    glue: dict = field(default_factory=dict)
    texts: list = field(default_factory=list)
    latent_records: list = field(default_factory=list)
    latent_stream_index: list = field(default_factory=list)
    sample: Optional[list] = None

    def __post_init__(self) -> None:
        if not self.stream:
            raise WorkbenchError("the request stream is empty")
        if len(self.latent_stream_index) != len(self.latent_records):
            raise WorkbenchError(f"latent_stream_index has {len(self.latent_stream_index)} entries for "
                                 f"{len(self.latent_records)} latent records")
        for i, r in enumerate(self.stream):
            if not callable(getattr(r, "request", None)):
                raise WorkbenchError(f"stream record {i} ({type(r).__name__}) has no .request() method")
        if self.sample is not None:
            bad = [i for i in self.sample if isinstance(i, bool) or not isinstance(i, int)
                   or not 0 <= i < len(self.stream)]
            if bad:
                raise WorkbenchError(f"sample position {bad[0]!r} is not a stream index (0..{len(self.stream) - 1})")
            if list(self.sample) != sorted(set(self.sample)):
                raise WorkbenchError("sample positions must be ascending and distinct")

    def scored(self, n_done: int) -> list[int]:
        """The stream positions the edit metrics score after ``n_done`` edits."""
        if self.sample is None:
            return list(range(n_done))
        return [i for i in self.sample if i < n_done]


def load_data(sizes: Optional[Sizes] = None) -> WorkbenchData:
    """The built-in fact bank as a stream, GLUE-style probes, held-out text and latent records.

    The stream is the first ``sizes.n_records`` fact-bank records; the latent records
    are the first ``latent_n // 2`` of the stream (they get edited as the stream
    advances) plus as many records from after the stream (never edited). GLUE items
    and held-out texts come from ``$OTELAB_DATA_DIR`` when set, else the built-in
    probes and the default Wikipedia corpus.

    Arguments:
        sizes: default :meth:`Sizes.default`.

    Returns:
        A :class:`WorkbenchData`.
    """
    from otelab.data.texts import held_out_texts
    from otelab.data.loaders import load_factbank, load_glue

    sizes = sizes or Sizes.default()
    bank = load_factbank()
    if sizes.n_records >= len(bank):
        raise WorkbenchError(f"n_records {sizes.n_records} leaves no unrelated records in the "
                             f"{len(bank)}-record fact bank")
    stream = bank[:sizes.n_records]
    n_edit = min(sizes.latent_n // 2, len(stream))
    unrelated = bank[sizes.n_records:sizes.n_records + sizes.latent_n - n_edit]
    glue = {t: load_glue(t, n=sizes.glue_n) for t in sizes.glue_tasks} if sizes.glue_n else {}
    texts = held_out_texts(sizes.n_texts) if sizes.n_texts else []
    return WorkbenchData(stream=stream, glue=glue, texts=texts, latent_records=stream[:n_edit] + unrelated,
                         latent_stream_index=list(range(n_edit)) + [None] * len(unrelated))


def replay_data(sizes: Optional[Sizes] = None, seed: int = REPLAY_SEED) -> WorkbenchData:
    """Replay mode's data: the recorded runs' CounterFact stream, a scored sample, held-out text.

    The stream is the first ``sizes.n_records`` of ``sample_records(load_counterfact(),
    REPLAY_DRAW, seed)``, the draw of ``otelab values compute --data counterfact --n 2000
    --seed 0`` and of the recorded 2,000-edit runs, so the value bank holds its values. The
    edit metrics score ``sizes.sample_per_batch`` records of every batch (seeded,
    :func:`otelab.workbench.stream.batch_sample`); the latent records are the first half of that sample
    (edited as the stream reaches them) and as many records from outside the draw (never edited).

    Arguments:
        sizes: default :meth:`Sizes.replay`.
        seed: the draw's seed (the sample and the unrelated records use it too).

    Returns:
        A :class:`WorkbenchData` without general-capability probes (unless ``sizes.glue_n``).

    Raises:
        WorkbenchError: ``$OTELAB_DATA_DIR`` is not set (CounterFact is not built in), or the
            sizes ask for more than the draw.
    """
    import os

    from otelab.data.texts import held_out_texts
    from otelab.data.files import ENV_VAR
    from otelab.data.loaders import load_counterfact, load_glue, sample_records
    from otelab.workbench.stream import batch_sample

    sizes = sizes or Sizes.replay()
    if not os.environ.get(ENV_VAR):
        raise WorkbenchError(f"replay mode edits CounterFact: set ${ENV_VAR} to the folder holding "
                             f"counterfact/counterfact-edit.json")
    if not 1 <= sizes.n_records <= REPLAY_DRAW:
        raise WorkbenchError(f"replay mode streams at most the {REPLAY_DRAW} drawn records, got n_records "
                             f"{sizes.n_records}")
    pool = load_counterfact()
    draw = sample_records(pool, REPLAY_DRAW, seed)
    stream = draw[:sizes.n_records]
    sample = batch_sample(len(stream), sizes.batch_size, sizes.sample_per_batch, seed)
    edited = sample[:sizes.latent_n // 2]
    drawn = {id(r) for r in draw}
    unrelated = sample_records([r for r in pool if id(r) not in drawn], sizes.latent_n - len(edited), seed + 1)
    glue = {t: load_glue(t, n=sizes.glue_n) for t in sizes.glue_tasks} if sizes.glue_n else {}
    texts = held_out_texts(sizes.n_texts) if sizes.n_texts else []
    return WorkbenchData(stream=stream, glue=glue, texts=texts, latent_records=[stream[i] for i in edited] + unrelated,
                         latent_stream_index=edited + [None] * len(unrelated), sample=sample)


class BankValues:
    """Target values read from a value bank: replay mode's values, never optimised on a click.

    Called with a batch of requests it returns their :class:`otelab.engine.values.ValueResult`;
    a value missing from the bank raises a one-line :class:`WorkbenchError` naming the
    command that fills it (computing it here would take the click from seconds to minutes).
    Values depend only on the unedited model, so one bank serves every session.

    Arguments:
        loaded: the model, UNEDITED when this is built (the bank is keyed by its fingerprint
            and value settings).
        path: the bank's folder (default the bank's own under the cache, the one
            ``otelab values compute`` fills and ``otelab.workbench.stream.value_provider(session, "bank",
            templates=["{}"])`` reads).
        templates: prompts the values were optimised on (default the plain prompt, as the
            recorded runs).
        fill: the command that fills the bank, named in the messages.
    """

    def __init__(self, loaded, path=None, templates=("{}",),
                 fill: str = FILL_COMMAND.format(n=REPLAY_DRAW, seed=REPLAY_SEED)):
        from otelab.engine.valuebank import ValueBank

        self.bank = ValueBank(loaded, path=path, templates=list(templates), progress=False)
        self.fill = fill

    def missing(self, requests: list) -> int:
        """How many of ``requests`` have no value in the bank."""
        return len(self.bank.missing(requests))

    def note(self, requests: list) -> tuple[str, bool]:
        """``(one-line status of the bank for these requests, whether every value is there)``."""
        n = self.missing(requests)
        if not n:
            return f"values: all {len(requests)} in the value bank {self.bank.path}", True
        return (f"values: {n} of {len(requests)} in the stream are not in the value bank {self.bank.path}; "
                f"fill it with `{self.fill}` (roughly half a second per value on two CPU cores)"), False

    def __call__(self, requests: list):
        n = self.missing(requests)
        if n:
            raise WorkbenchError(f"{n} of the {len(requests)} target values of this step are not in the value bank; "
                                 f"fill it with `{self.fill}`")
        return self.bank.get(requests, progress=False, compute=False)


@dataclass
class LatentProjection:
    """A 2-D picture of subject hidden states before and after editing (one UMAP fit for all).

    Attributes:
        step: the step it was computed at.
        before: the unedited states projected; ``[n, 2]`` (numpy).
        after: per session label, its edited states projected; each ``[n, 2]``.
        edited: per latent record, whether it had been edited by ``step``.
        names: per latent record, a short name (the subject).
    """

    step: int
    before: Any
    after: dict
    edited: list
    names: list


def valid_modes(method: str, preset=None) -> list[str]:
    """The modes that ``method`` supports, from the registry (:func:`otelab.ote.valid_modes`; [] if unknown).

    ``preset`` is accepted for callers that pass one; validity does not depend on it.
    """
    return ote.valid_modes(method)


def method_options() -> list[tuple[str, str]]:
    """``[(display name, method), ...]`` for every registered method: the editor dropdowns' options."""
    return [(ote.display_name(m), m) for m in ote.methods()]


def _combo_error(method: str, mode: str, preset=None) -> Optional[str]:
    """Why ``(method, mode)`` is not a session configuration (:func:`otelab.engine.session.check_combo`), or None."""
    try:
        check_combo(method, mode)
    except SessionError as err:
        return str(err)
    return None


def plural(n: int, word: str, many: Optional[str] = None) -> str:
    """``"1 edit"``, ``"2 edits"``; ``many`` for irregular plurals (``plural(2, "batch", "batches")``)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def track_label(method: str, mode: str) -> str:
    """``"MEMIT aligned"``: the name a session's curves carry."""
    return f"{METHOD_NAMES.get(method, method)} {mode}"


def glue_row(loaded, glue: dict, progress: bool = False, reference=None) -> dict[str, float]:
    """General-capability scores per task and the mean accuracy; {} without probes.

    Arguments:
        loaded: the model as it is now.
        glue: ``{task: items}``.
        progress: a progress bar.
        reference: the unedited model's :class:`otelab.eval.metrics.CapabilityAnswers` on the same
            items (:attr:`Workbench.glue_reference`), or None.

    Returns:
        ``glue/<task>/acc`` and ``glue_mean``; with a reference also ``glue/<task>/agreement``
        (share answered as the unedited model did) and ``glue/<task>/margin`` (log-likelihood
        of the unedited answer minus the best other label), which move when accuracy cannot.
    """
    from otelab.eval.metrics import capability_answers

    if not glue:
        return {}
    ans = capability_answers(loaded.model, loaded.tokenizer, glue, show_progress=progress)
    return _glue_scores(ans, reference)


def _glue_scores(ans, reference=None) -> dict[str, float]:
    """:func:`glue_row`'s row from answers already computed."""
    from otelab.eval.metrics import capability_scores

    res = capability_scores(ans, reference)
    row = {f"glue/{task}/acc": d["acc"] for task, d in res.items()}
    row["glue_mean"] = sum(row.values()) / len(row)
    for task, d in res.items():
        row.update({f"glue/{task}/{k}": d[k] for k in ("agreement", "margin") if k in d})
    return row


def edit_row(model, tok, records: list, latest: list, baseline) -> dict[str, float]:
    """Edit metrics of ``records``: all of them (``*_all``, specificity) and those flagged ``latest``.

    Arguments:
        model, tok: the model as it is now.
        records: the scored records; latest: per record, whether it belongs to the latest batch.
        baseline: the unedited model's cached outputs.

    Returns:
        ``efficacy_all``, ``paraphrase_all``, ``efficacy_latest``, ``paraphrase_latest``, ``specificity``,
        ``specificity_retained``, ``neighbourhood_kl`` (NaN where nothing is scored).
    """
    from otelab.eval.metrics import edit_scores

    nan = float("nan")
    if not records:
        return dict.fromkeys(("efficacy_all", "paraphrase_all", "efficacy_latest", "paraphrase_latest",
                              "specificity", "specificity_retained", "neighbourhood_kl"), nan)
    res = edit_scores(model, tok, records, baseline=baseline, show_progress=False)
    last = [d for d, f in zip(res["per_record"], latest) if f]

    def mean(key):
        xs = [d[key] for d in last if d[key] == d[key]]
        return sum(xs) / len(xs) if xs else nan

    return {"efficacy_all": res["efficacy"], "paraphrase_all": res["paraphrase"],
            "efficacy_latest": mean("efficacy"), "paraphrase_latest": mean("paraphrase"),
            "specificity": res["specificity"], "specificity_retained": res["specificity_retained"],
            "neighbourhood_kl": res["neighbourhood_kl"]}


def measure(loaded, session, data: "WorkbenchData", baseline, n_done: int, batch_size: int, latent_layer: int,
            glue: bool = False, tick: Optional[Callable[[str], None]] = None,
            label: str = "", glue_reference=None) -> tuple[dict, Optional[torch.Tensor]]:
    """The metrics of a session's current model after ``n_done`` edits of the stream.

    Everything is compared with the unedited model (``baseline``), never with the previous step.

    Arguments:
        loaded, session: the model and the :class:`EditSession` editing it.
        data: the stream, probes, held-out text and latent records; the edit metrics score
            ``data.scored(n_done)`` (every edited record, or those of :attr:`WorkbenchData.sample`).
        baseline: the unedited model's cached outputs (:class:`otelab.eval.metrics.Baseline`).
        n_done: edits of the stream applied so far.
        batch_size: edits per step (the latest batch is the last ``batch_size`` of them).
        latent_layer: block whose output holds the subject states for latent drift.
        glue: also score general capability.
        tick: called with a message before each metric group (progress feedback).
        label: the session's name in those messages.
        glue_reference: the unedited model's capability answers (see :func:`glue_row`), or None.

    Returns:
        ``(row, latent states [n_latent, d] or None)``; the row holds :data:`METRICS` that apply,
        plus ``delta_norm`` and, when ``glue``, :func:`glue_row`'s scores.
    """
    from otelab.eval.drift import hidden_states_at_subject, latent_drift, lm_drift

    tick = tick or (lambda msg: None)
    model, tok = loaded.model, loaded.tokenizer
    idx = data.scored(n_done)
    tick(f"{label}: edit metrics on {len(idx)} of {plural(n_done, 'edit')}")
    row = {"edits": float(n_done),
           **edit_row(model, tok, [data.stream[i] for i in idx], [i >= n_done - batch_size for i in idx], baseline),
           "delta_norm": session.delta_norm()}
    if baseline.lm is not None:
        tick(f"{label}: perplexity and top-1 agreement")
        row.update(lm_drift(model, tok, baseline.lm, show_progress=False))
    after = None
    if baseline.latent is not None:
        tick(f"{label}: latent drift")
        after = hidden_states_at_subject(model, tok, data.latent_records, latent_layer)
        mask = torch.tensor([i is not None and i < n_done for i in data.latent_stream_index])
        d = latent_drift(baseline.latent.states, after, mask)
        row.update(latent_drift=d["cos_drift"], latent_drift_edited=d["cos_drift_edited"],
                   latent_drift_unrelated=d["cos_drift_unrelated"])
    if glue and data.glue:
        tick(f"{label}: general capability")
        row.update(glue_row(loaded, data.glue, reference=glue_reference))
    return row, after


class Track:
    """One session of the workbench: its model, its :class:`EditSession` and its :class:`Report`."""

    def __init__(self, loaded, method: str, mode: str, label: str, cov: dict, undo_depth: int):
        self.loaded, self.label = loaded, label
        self.session = EditSession(loaded, method, mode, cov=cov, undo_depth=undo_depth, progress=False)
        self.report = Report(label, meta={"method": method, "mode": mode})
        self.step_seconds: list[float] = []   # edit time of each step (not in the report: it is volatile)

    @property
    def method(self) -> str:
        return self.session.method

    @property
    def mode(self) -> str:
        return self.session.mode


def _report_upto(rep: Report, step: int) -> Report:
    """A copy of ``rep`` without the rows after ``step`` (Report has no row deletion)."""
    out = Report(rep.label, rep.meta)
    df = rep.to_frame()
    for s, grp in df[df["step"] <= step].groupby("step", sort=True):
        out.add(int(s), dict(zip(grp["metric"], grp["value"])))
    return out


class Workbench:
    """Sequential editing of one or two sessions on a request stream, with metrics after every step.

    Arguments:
        loaded: an *unedited* :class:`otelab.models.loading.LoadedModel` (session A edits it in place).
        data: the stream and the evaluation sets (:func:`load_data`).
        method, mode: session A's editor.
        compare: ``(method, mode)`` of session B, which edits a deep copy of ``loaded``
            (or ``loaded_b``) with the same stream; ``None`` for one session.
        loaded_b: the model for session B (default ``copy.deepcopy(loaded)``, made when first needed).
        batch_size: requests per step.
        eval_every: general capability and UMAP every this many steps (0: never).
        cov: ``{layer: Ĉ0}``; default :func:`otelab.engine.covariance.get_covariance` with ``corpus`` and ``cov_tokens``.
        corpus, cov_tokens: for the default covariance.
        latent_layer: index into ``hidden_states`` for latent drift; default the output of
            the last edited block (``max(layers) + 1``).
        max_len: token limit per held-out text.
        projector: ``f(before [n, d], after [m, d]) -> (emb_before [n, 2], emb_after [m, 2])``;
            default :func:`otelab.eval.drift.umap_2d` (seed 0).
        undo_depth: steps that can be undone.
        progress: tqdm bars while computing the baselines.
        values: ``f(requests) -> ValueResult`` giving each step's target values once for every
            session (e.g. :class:`BankValues`: replay mode); ``None``: each session optimises
            its values inside its step (the slow way, about a second per request on a CPU).
    """

    def __init__(self, loaded, data: WorkbenchData, *, method: str = "memit", mode: str = "aligned",
                 compare: Optional[tuple[str, str]] = None, loaded_b=None, batch_size: int = 2,
                 eval_every: int = 1, cov: Optional[dict] = None, corpus=None, cov_tokens: Optional[int] = None,
                 latent_layer: Optional[int] = None, max_len: int = 128, projector: Optional[Callable] = None,
                 undo_depth: int = 3, progress: bool = False, values: Optional[Callable[[list], Any]] = None):
        from otelab.eval.metrics import Baseline

        if values is not None and not callable(values):
            raise WorkbenchError(f"values must be a callable f(requests) -> ValueResult, got {type(values).__name__}")
        self.loaded, self.data, self.values = loaded, data, values
        self._loaded_b = loaded_b
        self.undo_depth = int(undo_depth)
        self.progress = progress
        self.max_len = int(max_len)
        self.projector = projector
        self._check_settings(method, mode, compare, batch_size, eval_every)
        self.eval_every = int(eval_every)
        n_blocks = loaded.n_layers
        self.latent_layer = max(loaded.layers) + 1 if latent_layer is None else int(latent_layer)
        if not 0 <= self.latent_layer <= n_blocks:
            raise WorkbenchError(f"latent_layer must be in 0..{n_blocks} (an index into hidden_states), "
                                 f"got {self.latent_layer}")
        if cov is None:
            from otelab.engine.covariance import get_covariance
            cov = get_covariance(loaded, list(loaded.layers), corpus=corpus, n_tokens=cov_tokens, progress=progress)
        self.cov = cov
        model, tok = loaded.model, loaded.tokenizer
        t0 = time.perf_counter()
        # Everything "vs unedited" is measured against these, computed once on the unedited model.
        self.baseline = Baseline.compute(
            model, tok, [data.stream[i] for i in data.scored(len(data.stream))], texts=data.texts or None, max_len=self.max_len,
            latent_layer=self.latent_layer if data.latent_records else None,
            latent_records=data.latent_records or None, show_progress=progress)
        self.glue_reference = None   # the unedited answers: agreement and margin are measured against them
        if data.glue:
            from otelab.eval.metrics import capability_answers
            self.glue_reference = capability_answers(model, tok, data.glue, show_progress=progress)
        self.glue_unedited = _glue_scores(self.glue_reference, self.glue_reference) if data.glue else {}
        self._unedited_generations: dict[tuple[str, int], str] = {}
        self._step0_cache: dict[int, dict] = {}
        self.baseline_seconds = time.perf_counter() - t0
        self.tracks: list[Track] = []
        self.projections: dict[int, LatentProjection] = {}
        self.batch_size = int(batch_size)
        self._undoable = 0
        self._build(method, mode, compare)

    # ------------------------------------------------------------------ settings
    def _check_settings(self, method, mode, compare, batch_size, eval_every) -> None:
        for m, md in [(method, mode)] + ([tuple(compare)] if compare else []):
            if m not in METHODS:
                raise WorkbenchError(f"unknown method {m!r}; choose one of {', '.join(METHODS)}")
            err = _combo_error(m, md, self.loaded.preset)
            if err:
                raise WorkbenchError(err)
        if compare is not None and len(tuple(compare)) != 2:
            raise WorkbenchError(f"compare must be a (method, mode) pair, got {compare!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise WorkbenchError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > len(self.data.stream):
            raise WorkbenchError(f"batch_size {batch_size} exceeds the stream's {len(self.data.stream)} records")
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 0:
            raise WorkbenchError(f"eval_every must be an integer >= 0, got {eval_every!r}")

    def _build(self, method: str, mode: str, compare) -> None:
        """Reset every session (unedited weights back) and start afresh with these settings."""
        for tr in self.tracks:
            tr.session.reset()
        labels = [track_label(method, mode)]
        specs = [(self.loaded, method, mode)]
        if compare is not None:
            if self._loaded_b is None:
                self._loaded_b = copy.deepcopy(self.loaded)   # the unedited weights: A was reset above
            mb, mdb = compare
            lb = track_label(mb, mdb)
            labels.append(lb if lb != labels[0] else lb + " (B)")
            specs.append((self._loaded_b, mb, mdb))
        self.tracks = [Track(lm, m, md, lab, self.cov, self.undo_depth)
                       for (lm, m, md), lab in zip(specs, labels)]
        for tr in self.tracks:
            tr.report.add_meta(batch_size=self.batch_size, preset=self.loaded.preset.name,
                               layers=list(self.loaded.layers))
        self.projections = {}
        self._undoable = 0
        row = self._step0()
        for tr in self.tracks:
            tr.report.add(0, row)

    def configure(self, method: Optional[str] = None, mode: Optional[str] = None, *, compare="keep",
                  batch_size: Optional[int] = None, eval_every: Optional[int] = None) -> str:
        """Change the editor(s) or the batch size: every session is rebuilt from the unedited model.

        Arguments:
            method, mode: session A's editor (``None``: keep).
            compare: session B's ``(method, mode)``, ``None`` for no session B, ``"keep"`` to keep it.
            batch_size: requests per step (``None``: keep).
            eval_every: only changes how often the slow metrics run; does not rebuild.

        Returns:
            A status message saying what was rebuilt and what was discarded.

        Raises:
            WorkbenchError: an invalid setting (nothing is changed).
        """
        a = self.tracks[0]
        method = a.method if method is None else method
        mode = a.mode if mode is None else mode
        if isinstance(compare, str) and compare == "keep":
            compare = (self.tracks[1].method, self.tracks[1].mode) if len(self.tracks) > 1 else None
        batch_size = self.batch_size if batch_size is None else batch_size
        ev = self.eval_every if eval_every is None else eval_every
        self._check_settings(method, mode, compare, batch_size, ev)
        self.eval_every = int(ev)
        old = (a.method, a.mode, (self.tracks[1].method, self.tracks[1].mode) if len(self.tracks) > 1 else None,
               self.batch_size)
        new = (method, mode, tuple(compare) if compare else None, batch_size)
        if old == new:
            return f"settings unchanged: {self.describe()}"
        steps, edits = self.n_steps, self.n_edits
        self.batch_size = int(batch_size)
        self._build(method, mode, tuple(compare) if compare else None)
        was = f" (discarded {plural(edits, 'edit')} from {plural(steps, 'step')})" if steps else ""
        return f"rebuilt: {self.describe()}; sessions reset to the unedited model{was}"

    def describe(self) -> str:
        """``"MEMIT aligned vs MEMIT naive, batch 2"``."""
        return " vs ".join(t.label for t in self.tracks) + f", batch {self.batch_size}"

    # ------------------------------------------------------------------ state
    @property
    def n_steps(self) -> int:
        return self.tracks[0].session.n_steps

    @property
    def n_edits(self) -> int:
        return self.n_steps * self.batch_size

    @property
    def steps_left(self) -> int:
        """Full batches left in the stream."""
        return (len(self.data.stream) - self.n_edits) // self.batch_size

    @property
    def can_undo(self) -> bool:
        return self._undoable > 0

    def report(self) -> Report:
        """All sessions' metrics in one :class:`Report` (one label per session)."""
        if len(self.tracks) == 1:
            return self.tracks[0].report
        return Report.combine(*(t.report for t in self.tracks))

    def status_line(self) -> str:
        """``"step 2 · 4 edits · last step 31.2 s: edit 2.1 s (MEMIT aligned 1.0 s, MEMIT naive 1.1 s),
        evaluation 29.1 s · 2 steps left"``.

        The last step's wall time splits into the edits (per session) and the evaluation (the
        metrics, UMAP; with banked values also fetching them), which is usually most of it.
        """
        parts = [f"step {self.n_steps}", plural(self.n_edits, "edit")]
        total = self.last_step_seconds
        if self.n_steps and total is not None and all(t.step_seconds for t in self.tracks):
            edit = sum(t.step_seconds[-1] for t in self.tracks)
            each = (" (" + ", ".join(f"{t.label} {t.step_seconds[-1]:.1f} s" for t in self.tracks) + ")"
                    if len(self.tracks) > 1 else "")
            parts.append(f"last step {total:.1f} s: edit {edit:.1f} s{each}, evaluation {total - edit:.1f} s")
        parts.append(f"{plural(self.steps_left, 'step')} left")
        return " · ".join(parts)

    @property
    def last_step_seconds(self) -> Optional[float]:
        """Wall time of the last step, editing and metrics included."""
        return getattr(self, "_last_wall", None)

    def values_note(self) -> tuple[str, bool]:
        """``(one line on where the target values come from, whether the whole stream is covered)``."""
        if self.values is None:
            return "values: optimised inside every step (slow)", True
        note = getattr(self.values, "note", None)
        if note is None:
            return "values: from the given provider", True
        return note([r.request() for r in self.data.stream])

    def fill_values(self, n: Optional[int] = None) -> int:
        """Compute the bank's missing values of the first ``n`` stream records (default all) now.

        Only for a :class:`BankValues` provider. The values are optimised on the unedited
        model (its weights are put back for the computation, bit for bit), so this works
        at any step; it takes about a second per value on a CPU.

        Returns:
            How many values were computed.
        """
        if not isinstance(self.values, BankValues):
            raise WorkbenchError("fill_values needs a BankValues provider (replay mode)")
        if self.values.bank.loaded is not self.loaded:
            raise WorkbenchError("fill_values: the value bank was built on another model object than session A's")
        reqs = [r.request() for r in self.data.stream[:n]]
        with unedited_weights(self.tracks[0].session):
            return self.values.bank.compute(reqs)

    # ------------------------------------------------------------------ metrics
    def _step0(self) -> dict[str, float]:
        """The unedited model's row: scored on the first batch to be edited (cached per batch size)."""
        if self.batch_size not in self._step0_cache:
            first = [self.data.stream[i] for i in self.data.scored(self.batch_size)]
            row = {"edits": 0.0, **edit_row(self.loaded.model, self.loaded.tokenizer, first, [True] * len(first),
                                            self.baseline), "delta_norm": 0.0}
            if self.baseline.lm is not None:
                row.update(ppl=self.baseline.lm.ppl, ppl_unedited=self.baseline.lm.ppl, top1_agreement=1.0)
            if self.baseline.latent is not None:
                row.update(latent_drift=0.0, latent_drift_edited=0.0, latent_drift_unrelated=0.0)
            row.update(self.glue_unedited)
            self._step0_cache[self.batch_size] = row
        return dict(self._step0_cache[self.batch_size])

    def _edited_mask(self, n_edits: int) -> list[bool]:
        return [i is not None and i < n_edits for i in self.data.latent_stream_index]

    def _measure(self, tr: Track, step: int, slow: bool, tick) -> Optional[torch.Tensor]:
        """Metrics of one session after ``step`` (added to its report); returns its latent states [n, d] or None."""
        row, after = measure(tr.loaded, tr.session, self.data, self.baseline, step * self.batch_size,
                             self.batch_size, self.latent_layer, glue=slow, tick=tick, label=tr.label,
                             glue_reference=self.glue_reference)
        tr.report.add(step, row)
        return after

    def _project(self, step: int, afters: dict) -> None:
        import numpy as np

        project = self.projector
        if project is None:
            from otelab.eval.drift import umap_2d

            def project(b, a):
                return umap_2d(b, a, seed=0)
        before = self.baseline.latent.states
        labels = list(afters)
        eb, ea = project(before, torch.cat([afters[l] for l in labels]))
        ea = np.asarray(ea)
        n = before.shape[0]
        names = [getattr(r, "subject", str(i)) for i, r in enumerate(self.data.latent_records)]
        self.projections[step] = LatentProjection(
            step=step, before=np.asarray(eb), after={l: ea[i * n:(i + 1) * n] for i, l in enumerate(labels)},
            edited=self._edited_mask(step * self.batch_size), names=names)

    def flat_tasks(self) -> list[str]:
        """Capability tasks whose accuracy cannot move: the unedited model gives every item the same answer.

        Accuracy is then that answer's share of the gold labels (often exactly chance) until
        answers flip; agreement and margin (``glue/<task>/agreement``, ``margin``) show the change.
        """
        ref = self.glue_reference
        if ref is None:
            return []
        return [t for t in ref.gold if len(set(ref.predictions(t))) == 1]

    @property
    def projection(self) -> Optional[LatentProjection]:
        """The latest UMAP picture (None before the first slow evaluation)."""
        return self.projections[max(self.projections)] if self.projections else None

    def phases(self, k: int = 1) -> int:
        """How many progress ticks :meth:`step` ``(k)`` reports (for a progress bar's maximum)."""
        total = 0
        for s in range(self.n_steps + 1, self.n_steps + k + 1):
            slow = self.eval_every > 0 and s % self.eval_every == 0
            per = 2 + (self.baseline.lm is not None) + (self.baseline.latent is not None)
            per += bool(slow and self.data.glue)
            total += len(self.tracks) * per + bool(slow and self.baseline.latent is not None)
            total += self.values is not None
        return total

    # ------------------------------------------------------------------ actions
    def step(self, k: int = 1, on_progress: Optional[Callable[[int, int, str], None]] = None,
             on_step: Optional[Callable[[int], None]] = None) -> list[dict]:
        """Edit the next ``k`` batches of the stream in every session, measuring after each.

        Arguments:
            k: number of steps.
            on_progress: called as ``on_progress(done, total, message)`` before each phase
                (editing one session, one metric group, ...), ``total`` = :meth:`phases`.
            on_step: called with the step number after each step is edited and measured
                (e.g. to redraw panels between the ``k`` steps).

        Returns:
            Per step, ``{label: StepRecord}``.

        Raises:
            WorkbenchError: the stream has fewer than ``k`` full batches left (nothing is done).
            Any error of a session's step: every session is returned to where it was before
            that step (earlier steps of the ``k`` stay).
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise WorkbenchError(f"k must be a positive integer, got {k!r}")
        if k > self.steps_left:
            raise WorkbenchError(f"the stream has {plural(self.steps_left, 'full batch', 'full batches')} of "
                                 f"{self.batch_size} left, asked for {plural(k, 'step')}; reset, or lower the batch size")
        total, done = self.phases(k), 0

        def tick(msg: str) -> None:
            nonlocal done
            if on_progress is not None:
                on_progress(done, total, msg)
            done += 1

        out = []
        for _ in range(k):
            t0 = time.perf_counter()
            step = self.n_steps + 1
            batch = self.data.stream[self.n_edits:self.n_edits + self.batch_size]
            reqs = [r.request() for r in batch]
            recs, stepped = {}, []
            try:
                val = None
                if self.values is not None:   # one set of targets for every session, fetched before any edit
                    tick(f"step {step}: target values of {plural(len(reqs), 'request')}")
                    val = self.values(reqs)
                for tr in self.tracks:
                    tick(f"step {step}: editing with {tr.label} ({plural(len(reqs), 'request')})")
                    t = time.perf_counter()
                    recs[tr.label] = tr.session.step(reqs, values=val)
                    stepped.append(tr)
                    tr.step_seconds.append(time.perf_counter() - t)
                slow = self.eval_every > 0 and step % self.eval_every == 0
                afters = {}
                for tr in self.tracks:
                    afters[tr.label] = self._measure(tr, step, slow, tick)
                if slow and self.baseline.latent is not None:
                    tick(f"step {step}: UMAP of the hidden states")
                    self._project(step, afters)
            except BaseException:
                for tr in stepped:   # keep the sessions in lockstep: nothing of this step stays
                    tr.session.undo()
                    tr.step_seconds.pop()
                    tr.report = _report_upto(tr.report, step - 1)
                self.projections.pop(step, None)
                raise
            self._undoable = min(self._undoable + 1, self.undo_depth)
            self._last_wall = time.perf_counter() - t0
            out.append(recs)
            if on_step is not None:
                on_step(step)
        if on_progress is not None:
            on_progress(total, total, "done")
        return out

    def undo(self) -> str:
        """Revert the last step in every session (weights, editor states, metrics).

        Returns:
            A status message.

        Raises:
            WorkbenchError: nothing to undo, or the undo depth is exhausted.
        """
        if self.n_steps == 0:
            raise WorkbenchError("nothing to undo: no step has been made")
        if not self.can_undo:
            raise WorkbenchError(f"cannot undo further: only the last {plural(self.undo_depth, 'step')} "
                                 f"{'is' if self.undo_depth == 1 else 'are'} kept")
        step = self.n_steps
        for tr in self.tracks:
            tr.session.undo()
            if tr.step_seconds:
                tr.step_seconds.pop()
            tr.report = _report_upto(tr.report, step - 1)
        self.projections = {s: p for s, p in self.projections.items() if s < step}
        self._undoable -= 1
        self._last_wall = None
        return f"undid step {step}: back to step {self.n_steps} ({plural(self.n_edits, 'edit')})"

    def reset(self) -> str:
        """Every session back to the unedited model; the stream starts again."""
        steps = self.n_steps
        for tr in self.tracks:
            tr.session.reset()
            tr.step_seconds.clear()
            tr.report = _report_upto(tr.report, 0)
        self.projections = {}
        self._undoable = 0
        self._last_wall = None
        return f"reset: back to the unedited model (discarded {plural(steps, 'step')})"

    # ------------------------------------------------------------------ probing
    def generate(self, prompt: str, max_new_tokens: int = 20) -> dict[str, str]:
        """Greedy continuations of ``prompt`` by the unedited model and by each session's current model.

        The unedited continuation is computed by putting the unedited weights back for
        a moment (bit for bit, then the edited ones again), and cached per prompt.

        Returns:
            ``{"unedited": text, label: text, ...}``.
        """
        from otelab.eval.metrics import greedy_generate

        if not isinstance(prompt, str) or not prompt.strip():
            raise WorkbenchError("the probe prompt is empty")
        key = (prompt, int(max_new_tokens))
        tr0 = self.tracks[0]
        if key not in self._unedited_generations:
            with unedited_weights(tr0.session):
                self._unedited_generations[key] = greedy_generate(
                    tr0.loaded.model, tr0.loaded.tokenizer, [prompt], max_new_tokens)[0]
        out = {"unedited": self._unedited_generations[key]}
        for tr in self.tracks:
            out[tr.label] = greedy_generate(tr.loaded.model, tr.loaded.tokenizer, [prompt], max_new_tokens)[0]
        return out


class unedited_weights:
    """Context manager: the session's model has its unedited W in every edited layer inside the block.

    The current (edited) weights are put back on exit, bit for bit, also after an error.
    """

    def __init__(self, session: EditSession):
        self.session = session
        self._saved: dict[int, torch.Tensor] = {}

    def __enter__(self):
        s = self.session
        a, model = s.loaded.adapter, s.loaded.model
        self._saved = {l: a.get_W(model, l).detach().clone() for l in s.layers}   # [d_o, d_i] each
        for l in s.layers:
            a.set_W(model, l, s.W0[l])
        return s.loaded

    def __exit__(self, *exc) -> None:
        a, model = self.session.loaded.adapter, self.session.loaded.model
        for l, W in self._saved.items():
            a.set_W(model, l, W)
        self._saved = {}
