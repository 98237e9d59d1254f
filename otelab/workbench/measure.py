"""What the workbench measures after a step, always against the unedited model.

The parts are those of :func:`otelab.eval.measure.measure`, under the names of its one vocabulary
(:data:`otelab.eval.measure.METRICS`; the workbench's subset is :data:`METRICS` here):

- edit metrics on all edits so far and on the latest batch (efficacy, paraphrase)
  and specificity of all edits so far (:func:`otelab.eval.measure.edit_metrics` with ``latest``);
- perplexity and top-1 agreement on held-out text (:func:`otelab.eval.measure.lm_metrics`);
- latent drift at the last edited layer, edited vs unrelated records, the edited ones
  being those the stream has reached (:func:`otelab.eval.drift.latent_drift`);
- every ``eval_every`` steps, general capability per task with agreement and margin against the
  unedited answers cached once (:func:`glue_row`) and a 2-D UMAP of the hidden states
  before and after editing (:func:`otelab.eval.drift.umap_2d`), the two slow ones.

The unedited model's outputs are cached once (:class:`otelab.eval.baseline.Baseline`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from otelab.eval.measure import edit_metrics, lm_metrics, metric
from otelab.workbench.editors import plural

if TYPE_CHECKING:
    from otelab.workbench.data import WorkbenchData

__all__ = ["METRICS", "LatentProjection", "glue_row", "glue_scores", "measure", "step0_row",
           "project_states", "flat_tasks", "unedited_reference"]

# The names the workbench writes into its reports (the panels read these), rows of the one vocabulary.
METRICS = {name: metric(name) for name in (
    "efficacy_all", "paraphrase_all", "efficacy_latest", "paraphrase_latest", "specificity", "specificity_retained",
    "neighbourhood_kl", "edits", "delta_norm", "ppl", "ppl_unedited", "top1_agreement", "latent_drift",
    "latent_drift_edited", "latent_drift_unrelated", "glue_mean", "glue/<task>/acc", "glue/<task>/agreement",
    "glue/<task>/margin")}


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
    return glue_scores(ans, reference)


def glue_scores(ans, reference=None) -> dict[str, float]:
    """:func:`glue_row`'s row from answers already computed (``ans``, ``reference``: as for :func:`glue_row`)."""
    from otelab.eval.metrics import capability_scores

    res = capability_scores(ans, reference)
    row = {f"glue/{task}/acc": d["acc"] for task, d in res.items()}
    row["glue_mean"] = sum(row.values()) / len(row)
    for task, d in res.items():
        row.update({f"glue/{task}/{k}": d[k] for k in ("agreement", "margin") if k in d})
    return row


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
    from otelab.eval.drift import hidden_states_at_subject, latent_drift

    tick = tick or (lambda msg: None)
    model, tok = loaded.model, loaded.tokenizer
    idx = data.scored(n_done)
    tick(f"{label}: edit metrics on {len(idx)} of {plural(n_done, 'edit')}")
    row = {"edits": float(n_done),
           **edit_metrics(model, tok, [data.stream[i] for i in idx], baseline,
                          latest=[i >= n_done - batch_size for i in idx]),
           "delta_norm": session.delta_norm()}
    if baseline.lm is not None:
        tick(f"{label}: perplexity and top-1 agreement")
        row.update(lm_metrics(model, tok, baseline))
    after = None
    if baseline.latent is not None:
        tick(f"{label}: latent drift")
        after = hidden_states_at_subject(model, tok, data.latent_records, latent_layer)
        mask = torch.tensor(data.edited_mask(n_done))
        d = latent_drift(baseline.latent.states, after, mask)
        row.update(latent_drift=d["cos_drift"], latent_drift_edited=d["cos_drift_edited"],
                   latent_drift_unrelated=d["cos_drift_unrelated"])
    if glue and data.glue:
        tick(f"{label}: general capability")
        row.update(glue_row(loaded, data.glue, reference=glue_reference))
    return row, after


def unedited_reference(loaded, data: "WorkbenchData", latent_layer: int, max_len: int,
                       progress: bool = False) -> tuple[Any, Any, dict]:
    """What every later measurement compares with, computed once on the unedited model.

    Arguments:
        loaded: the UNEDITED model.
        data: the stream (its scored records), held-out texts, latent records and probes.
        latent_layer: block whose output holds the subject states.
        max_len: token limit per held-out text.
        progress: progress bars.

    Returns:
        ``(baseline, glue_reference, glue_unedited)``: the :class:`otelab.eval.metrics.Baseline`; the
        unedited capability answers (None without probes: agreement and margin are measured against
        them); the unedited model's :func:`glue_row` against itself ({} without probes).
    """
    from otelab.eval.metrics import Baseline

    model, tok = loaded.model, loaded.tokenizer
    baseline = Baseline.compute(
        model, tok, [data.stream[i] for i in data.scored(len(data.stream))], texts=data.texts or None, max_len=max_len,
        latent_layer=latent_layer if data.latent_records else None,
        latent_records=data.latent_records or None, show_progress=progress)
    glue_reference = None
    if data.glue:
        from otelab.eval.metrics import capability_answers
        glue_reference = capability_answers(model, tok, data.glue, show_progress=progress)
    glue_unedited = glue_scores(glue_reference, glue_reference) if data.glue else {}
    return baseline, glue_reference, glue_unedited


def step0_row(loaded, data: "WorkbenchData", baseline, batch_size: int, glue_unedited: dict) -> dict[str, float]:
    """The unedited model's row: scored on the first batch to be edited.

    Arguments:
        loaded: the unedited model.
        data: the stream (its first ``batch_size`` scored records are scored).
        baseline: the unedited model's cached outputs.
        batch_size: edits per step.
        glue_unedited: the unedited model's :func:`glue_row` against itself ({} without probes).

    Returns:
        Step 0 of every report: edit metrics, ``delta_norm`` 0, the unedited perplexity, no drift.
    """
    first = [data.stream[i] for i in data.scored(batch_size)]
    row = {"edits": 0.0, **edit_metrics(loaded.model, loaded.tokenizer, first, baseline, latest=[True] * len(first)),
           "delta_norm": 0.0}
    if baseline.lm is not None:
        row.update(ppl=baseline.lm.ppl, ppl_unedited=baseline.lm.ppl, top1_agreement=1.0)
    if baseline.latent is not None:
        row.update(latent_drift=0.0, latent_drift_edited=0.0, latent_drift_unrelated=0.0)
    row.update(glue_unedited)
    return row


def project_states(projector: Optional[Callable], before: torch.Tensor, afters: dict, step: int, edited: list,
                   names: list) -> LatentProjection:
    """One 2-D fit of the unedited and every session's subject states.

    Arguments:
        projector: ``f(before [n, d], after [m, d]) -> (emb_before [n, 2], emb_after [m, 2])``; None:
            :func:`otelab.eval.drift.umap_2d` (seed 0).
        before: the unedited states, ``[n, d]``.
        afters: ``{label: states [n, d]}`` per session.
        step: the step they were taken at.
        edited, names: per latent record, whether it was edited by ``step`` and its short name.

    Returns:
        The :class:`LatentProjection`.
    """
    import numpy as np

    project = projector
    if project is None:
        from otelab.eval.drift import umap_2d

        def project(b, a):
            return umap_2d(b, a, seed=0)
    labels = list(afters)
    eb, ea = project(before, torch.cat([afters[l] for l in labels]))   # [n, 2], [n * sessions, 2]
    ea = np.asarray(ea)
    n = before.shape[0]
    return LatentProjection(step=step, before=np.asarray(eb),
                            after={l: ea[i * n:(i + 1) * n] for i, l in enumerate(labels)}, edited=edited,
                            names=names)


def flat_tasks(reference) -> list[str]:
    """Capability tasks whose accuracy cannot move: the unedited model gives every item the same answer.

    Arguments:
        reference: the unedited model's :class:`otelab.eval.metrics.CapabilityAnswers`, or None.

    Returns:
        The tasks ([] without a reference).
    """
    if reference is None:
        return []
    return [t for t in reference.gold if len(set(reference.predictions(t))) == 1]
