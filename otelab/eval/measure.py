"""One measurement and one metric vocabulary: every number otelab reports about an edited model, by name.

:data:`METRICS` is the table of names. Every row says what the number is, which part of
:func:`measure` computes it and which direction is better. The workbench, the demo, ``otelab
eval`` and the long-stream checkpoints all write these names; :func:`metric` resolves any of them,
including the two families that the table holds as patterns:

- ``glue/<task>/<stat>``: a general-capability score per task;
- ``<edit metric>_all`` / ``<edit metric>_latest``: an edit metric over all edits so far or
  over the latest batch only (the workbench's split; :func:`edit_metrics` with ``latest``);
- ``edits/<edit metric>``: an edit metric on a saved session's own requests (``otelab eval``).

:func:`measure` runs the parts (:data:`PARTS`) asked for; each part is also a function of its
own, which is what the workbench calls after every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

__all__ = ["Metric", "METRICS", "SPLITS", "PARTS", "metric", "measure", "edit_metrics", "lm_metrics",
           "glue_metrics", "latent_metrics", "fluency_metrics", "evaluate"]


@dataclass(frozen=True)
class Metric:
    """One row of :data:`METRICS`.

    Attributes:
        text: what the number is, in a few words.
        part: the :func:`measure` part that computes it (``"stream"``: the editing session's own count).
        better: ``"higher"``, ``"lower"`` or ``None`` (a reference, a count).
    """

    text: str
    part: str
    better: Optional[str] = None


METRICS: dict[str, Metric] = {
    # edit scores (Meng et al. 2022's CounterFact metrics; zsRE token accuracy)
    "efficacy": Metric("efficacy: the edited prompt prefers the new target", "edit", "higher"),
    "efficacy_magnitude": Metric("efficacy margin p(new) − p(true)", "edit", "higher"),
    "efficacy_top1": Metric("the new target's first token is the top-1 prediction", "edit", "higher"),
    "paraphrase": Metric("paraphrase: paraphrased prompts prefer the new target", "edit", "higher"),
    "paraphrase_magnitude": Metric("paraphrase margin p(new) − p(true)", "edit", "higher"),
    "specificity": Metric("specificity (neighbourhood keeps its answer)", "edit", "higher"),
    "specificity_magnitude": Metric("neighbourhood margin p(true) − p(new)", "edit", "higher"),
    "specificity_unedited": Metric("the unedited model's specificity on the same prompts", "edit"),
    "specificity_retained": Metric("neighbourhood preference as the unedited model's", "edit", "higher"),
    "neighbourhood_top1": Metric("neighbourhood top-1 as the unedited model's", "edit", "higher"),
    "neighbourhood_kl": Metric("KL(unedited ‖ edited) on neighbourhood prompts", "edit", "lower"),
    # language modelling, against the unedited model
    "ppl": Metric("perplexity on held-out text", "lm", "lower"),
    "ppl_unedited": Metric("the unedited model's perplexity", "lm"),
    "top1_agreement": Metric("top-1 agreement with the unedited model", "lm", "higher"),
    # general capability
    "glue/<task>/acc": Metric("general capability: accuracy per task", "glue", "higher"),
    "glue/<task>/f1": Metric("general capability: F1 per task (MRPC)", "glue", "higher"),
    "glue/<task>/mcc": Metric("general capability: Matthews correlation per task (CoLA)", "glue", "higher"),
    "glue/<task>/agreement": Metric("general capability: share of items answered as the unedited model did",
                                    "glue", "higher"),
    "glue/<task>/margin": Metric("general capability: log-likelihood of the unedited answer minus the best "
                                 "other label", "glue", "higher"),
    "glue_mean": Metric("general capability: mean accuracy over the tasks", "glue", "higher"),
    # latent drift of subject states, against the unedited model
    "latent_drift": Metric("latent drift 1 − cos, all latent records", "latent", "lower"),
    "latent_drift_edited": Metric("latent drift 1 − cos, edited records", "latent"),
    "latent_drift_unrelated": Metric("latent drift 1 − cos, unrelated records", "latent", "lower"),
    "latent_rel_l2": Metric("latent drift ‖after − before‖ / ‖before‖, all latent records", "latent", "lower"),
    # generation
    "ngram_entropy": Metric("n-gram entropy of greedy generations", "fluency", "higher"),
    "consistency": Metric("TF-IDF similarity of generations to the reference text", "fluency", "higher"),
    # the stream itself
    "edits": Metric("edits so far", "stream"),
    "delta_norm": Metric("‖W − W0‖ summed over the edited layers", "stream"),
}

# suffixes of an edit metric: over which records it was averaged
SPLITS = {"_all": "all edits so far", "_latest": "latest batch"}


def metric(name: str) -> Metric:
    """The :data:`METRICS` row of ``name`` (a pattern row for ``glue/<task>/<stat>``, a split of an edit metric).

    Raises:
        KeyError: ``name`` is not in the vocabulary (the message names it).

    Examples:
        >>> metric("efficacy_latest").text
        'efficacy: the edited prompt prefers the new target, latest batch'
        >>> metric("glue/sst2/agreement").part
        'glue'
    """
    if name in METRICS:
        return METRICS[name]
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "glue" and parts[1] and f"glue/<task>/{parts[2]}" in METRICS:
        return METRICS[f"glue/<task>/{parts[2]}"]
    if name.startswith("edits/") and METRICS.get(name[6:], Metric("", "")).part == "edit":
        base = METRICS[name[6:]]
        return Metric(f"{base.text}, on the session's own edit requests", base.part, base.better)
    for suffix, words in SPLITS.items():
        base = METRICS.get(name[:-len(suffix)]) if name.endswith(suffix) else None
        if base is not None and base.part == "edit":
            return Metric(f"{base.text}, {words}", base.part, base.better)
    raise KeyError(f"unknown metric {name!r}: not in otelab.eval.measure.METRICS")


# --------------------------------------------------------------------------- the parts

def edit_metrics(model, tok, records: Sequence[Any], baseline=None, *, latest: Optional[Sequence[bool]] = None,
                 batch_size: int = 32, show_progress: Optional[bool] = False) -> dict[str, float]:
    """Edit scores of ``records`` (CounterFact-style or zsRE, not mixed).

    Arguments:
        model, tok: the model as it is now.
        records: the edited facts to score.
        baseline: an :class:`otelab.eval.baseline.Baseline` of the unedited model (the "vs unedited"
            scores need it).
        latest: per record, whether it belongs to the latest batch: then the workbench's split,
            ``efficacy_all``, ``paraphrase_all``, ``efficacy_latest``, ``paraphrase_latest`` with
            ``specificity``, ``specificity_retained``, ``neighbourhood_kl`` (NaN where nothing is scored).
        batch_size: sequences per forward pass.
        show_progress: a progress bar.

    Returns:
        Without ``latest``, every score :func:`otelab.eval.edit_scores.edit_scores` (or ``zsre_scores``) gives.
    """
    from otelab.eval import metrics as M

    records = list(records)
    if latest is not None:
        if len(latest) != len(records):
            raise ValueError(f"latest has {len(latest)} flags for {len(records)} records")
        if not records:
            return dict.fromkeys(("efficacy_all", "paraphrase_all", "efficacy_latest", "paraphrase_latest",
                                  "specificity", "specificity_retained", "neighbourhood_kl"), float("nan"))
    zs = [M.is_zsre_record(r) for r in records]
    if any(zs) and not all(zs):
        raise ValueError("records mix zsRE and CounterFact-style items; evaluate them separately")
    res = (M.zsre_scores(model, tok, records, baseline, batch_size, show_progress) if zs and all(zs)
           else M.edit_scores(model, tok, records, batch_size, baseline, show_progress))
    if latest is None:
        return {k: v for k, v in res.items() if k not in ("per_record", "n")}
    last = [d for d, f in zip(res["per_record"], latest) if f]

    def mean(key):
        xs = [d[key] for d in last if d[key] == d[key]]
        return sum(xs) / len(xs) if xs else float("nan")

    # zsRE scores have no neighbourhood comparison: those stay NaN
    return {"efficacy_all": res["efficacy"], "paraphrase_all": res["paraphrase"],
            "efficacy_latest": mean("efficacy"), "paraphrase_latest": mean("paraphrase"),
            **{k: res.get(k, float("nan")) for k in ("specificity", "specificity_retained", "neighbourhood_kl")}}


def lm_metrics(model, tok, baseline=None, texts: Optional[Sequence[str]] = None, *, max_len: int = 128,
               batch_size: int = 8, show_progress: Optional[bool] = False) -> dict[str, float]:
    """``ppl``, ``ppl_unedited``, ``top1_agreement`` against ``baseline.lm``; only ``ppl`` on ``texts`` without it."""
    from otelab.eval import drift as D

    if baseline is not None and getattr(baseline, "lm", None) is not None:
        return D.lm_drift(model, tok, baseline.lm, batch_size, show_progress)
    if texts:
        return {"ppl": D.perplexity(model, tok, texts, max_len, batch_size, show_progress)}
    return {}


def glue_metrics(model, tok, glue_tasks: Optional[Mapping[str, Sequence[Mapping]]], *, batch_size: int = 32,
                 show_progress: Optional[bool] = False) -> dict[str, float]:
    """``glue/<task>/<acc|f1|mcc>`` on ``glue_tasks`` (``{task: items}``); {} without tasks.

    Agreement and margin against the unedited answers are the workbench's
    (:func:`otelab.workbench.measure.glue_row`): they need those answers cached first.
    """
    from otelab.eval import metrics as M

    out: dict[str, float] = {}
    for task, d in M.general_capability(model, tok, glue_tasks or {}, batch_size, show_progress).items():
        out.update({f"glue/{task}/{k}": v for k, v in d.items() if k != "n"})
    return out


def latent_metrics(model, tok, baseline, records: Sequence[Any] = (), *, batch_size: int = 32) -> dict[str, float]:
    """Latent drift of the baseline's latent records (``records`` count as edited); {} without them."""
    if baseline is None or getattr(baseline, "latent", None) is None:
        return {}
    d = baseline.latent.drift(model, tok, list(records), batch_size)
    return {"latent_drift": d["cos_drift"], "latent_drift_unrelated": d["cos_drift_unrelated"],
            "latent_drift_edited": d["cos_drift_edited"], "latent_rel_l2": d["rel_l2"]}


def fluency_metrics(model, tok, records: Sequence[Any], *, gen_tokens: int = 50, batch_size: int = 16,
                    show_progress: Optional[bool] = False) -> dict[str, float]:
    """``ngram_entropy`` of greedy generations from the records' generation prompts, ``consistency`` where
    they carry a ``reference_text``; {} without generation prompts."""
    from otelab.eval import metrics as M

    records = list(records)
    prompts, owner = [], []
    for i, r in enumerate(records):
        for p in (M._get(r, "generation_prompts", None) or []):
            prompts.append(p); owner.append(i)
    if not prompts:
        return {}
    flu = M.generation_fluency(model, tok, prompts, gen_tokens, batch_size, show_progress)
    out = {"ngram_entropy": flu["ngram_entropy"]}
    per_rec: dict[int, list[str]] = {}
    for i, t in zip(owner, flu["texts"]):
        per_rec.setdefault(i, []).append(t)
    pairs = [(per_rec[i], M._get(records[i], "reference_text", None)) for i in sorted(per_rec)]
    pairs = [(g, ref) for g, ref in pairs if isinstance(ref, str) and ref.strip()]
    if pairs:
        out["consistency"] = M.tfidf_consistency([g for g, _ in pairs], [ref for _, ref in pairs])["consistency"]
    return out


PARTS: dict[str, Callable[..., dict]] = {"edit": edit_metrics, "lm": lm_metrics, "glue": glue_metrics,
                                         "latent": latent_metrics, "fluency": fluency_metrics}


def measure(model_or_loaded, tok=None, records: Sequence[Any] = (), *, baseline=None,
            glue_tasks: Mapping[str, Sequence[Mapping]] | None = None, texts: Sequence[str] | None = None,
            which: Iterable[str] = ("edit", "lm", "glue", "latent"), batch_size: int = 32, lm_batch_size: int = 8,
            max_len: int = 128, gen_tokens: int = 50, show_progress: bool | None = None) -> dict[str, float]:
    """The standard metric set in one call, as flat ``name -> number`` (names in :data:`METRICS`).

    Parts (:data:`PARTS`; each runs only when asked for in ``which`` and its inputs exist):

    - ``"edit"``: :func:`edit_metrics` (efficacy, paraphrase, specificity, ...; the "vs unedited"
      variants need ``baseline``).
    - ``"lm"``: :func:`lm_metrics`.
    - ``"glue"``: :func:`glue_metrics` on ``glue_tasks``.
    - ``"latent"``: :func:`latent_metrics` (``records`` count as edited).
    - ``"fluency"``: :func:`fluency_metrics`.

    Arguments:
        model_or_loaded: a ``LoadedModel`` (then ``tok`` may be omitted) or a model.
        tok: the tokenizer.
        records: the edited facts to score.
        baseline: an :class:`otelab.eval.baseline.Baseline` computed before editing.
        glue_tasks: ``{task: items}`` for general capability.
        texts: held-out texts for perplexity when ``baseline.lm`` is absent.
        which: the parts to compute.
        batch_size, lm_batch_size: sequences per forward pass.
        max_len: token limit for ``texts``.
        gen_tokens: tokens generated per generation prompt (``"fluency"``).

    Returns:
        dict of floats; to compare "all edits so far" with "the latest batch", use
        :func:`edit_metrics` with ``latest`` (``efficacy_all``, ``efficacy_latest``).
    """
    import torch

    # a LoadedModel carries .model and .tokenizer (a bare HF model also has a .model: its backbone)
    loaded = not isinstance(model_or_loaded, torch.nn.Module)
    model = model_or_loaded.model if loaded else model_or_loaded
    tok = tok if tok is not None else getattr(model_or_loaded, "tokenizer", None) if loaded else None
    if tok is None:
        raise ValueError("measure needs a tokenizer (pass tok, or a LoadedModel)")
    which = set(which)
    unknown = which - set(PARTS)
    if unknown:
        raise ValueError(f"unknown evaluation part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    records = list(records)
    out: dict[str, float] = {}
    if "edit" in which and records:
        out.update(edit_metrics(model, tok, records, baseline, batch_size=batch_size, show_progress=show_progress))
    if "lm" in which:
        out.update(lm_metrics(model, tok, baseline, texts, max_len=max_len, batch_size=lm_batch_size,
                              show_progress=show_progress))
    if "glue" in which and glue_tasks:
        out.update(glue_metrics(model, tok, glue_tasks, batch_size=batch_size, show_progress=show_progress))
    if "latent" in which:
        out.update(latent_metrics(model, tok, baseline, records, batch_size=batch_size))
    if "fluency" in which and records:
        out.update(fluency_metrics(model, tok, records, gen_tokens=gen_tokens, batch_size=min(batch_size, 16),
                                   show_progress=show_progress))
    return out


evaluate = measure   # the name ``otelab.evaluate`` had before the workbench's measurement joined it
