"""Edit scores: CounterFact-style efficacy, paraphrase and specificity, zsRE token accuracy, bootstrap intervals.

The "vs unedited" variants read the unedited model's cached outputs from an
:class:`otelab.eval.baseline.Baseline`; this module does not import it (the
baseline sits above the metrics and imports them), so ``baseline`` is typed
``Any`` here and only its ``neighbour(key)`` and ``zsre_loc`` are used.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch

from otelab.eval.records import fill_subject, get_field, record_label, target_string
from otelab.eval.scoring import teacher_forced

def coarse_kl(p_logprobs: torch.Tensor, p_ids: torch.Tensor, q_full: torch.Tensor) -> float:
    """KL(P || Q) on the coarsened distribution {top-k tokens of P, everything else}.

    By the data-processing inequality this is a lower bound of the full KL and
    equals it when k is the vocabulary size; it lets the unedited model's
    next-token distribution be cached as k numbers instead of the whole vocabulary.

    Arguments:
        p_logprobs: the reference (unedited) log-probs of its top-k tokens; [k].
        p_ids: those tokens' ids; [k].
        q_full: the other model's full log-distribution; [V].

    Returns:
        The KL divergence in nats (>= 0).
    """
    q = q_full[p_ids.to(q_full.device)].float().cpu()  # [k]
    p = p_logprobs.float()
    kl = float((p.exp() * (p - q)).sum())
    p_rest = max(0.0, 1.0 - float(p.exp().sum()))
    q_rest = max(1e-12, 1.0 - float(q.exp().sum()))
    if p_rest > 1e-9:
        kl += p_rest * (math.log(p_rest) - math.log(q_rest))
    return max(kl, 0.0)


def fact_prompts(rec: Any, where: str) -> dict[str, Any]:
    """The prompts of a CounterFact-style record: edit, paraphrases, neighbourhood."""
    prompt = get_field(rec, "prompt", where=where)
    subject = get_field(rec, "subject", where=where)
    if not isinstance(prompt, str) or not isinstance(subject, str):
        raise ValueError(f"{where}: fields 'prompt' and 'subject' must be strings")
    new = target_string(get_field(rec, "target_new", where=where), where, "target_new")
    if not new or not new.strip():
        raise ValueError(f"{where}: the new target is empty")
    true = target_string(get_field(rec, "target_true", None), where, "target_true")
    para = list(get_field(rec, "paraphrase_prompts", None) or [])
    neigh = list(get_field(rec, "neighborhood_prompts", None) or [])
    for name, lst in (("paraphrase_prompts", para), ("neighborhood_prompts", neigh)):
        for j, s in enumerate(lst):
            if not isinstance(s, str):
                raise ValueError(f"{where}: {name}[{j}] must be a string, got {type(s).__name__}")
    return dict(edit=fill_subject(prompt, subject), new=new, true=true, para=para, neigh=neigh)


def is_zsre_record(rec: Any) -> bool:
    """True for zsRE-style records (they carry ``loc``/``loc_ans``)."""
    return get_field(rec, "loc", None) is not None and get_field(rec, "loc_ans", None) is not None


def zsre_loc_prompt(loc: str) -> str:
    """A zsRE out-of-scope question as asked: with a trailing "?"."""
    # ROME's zsRE loader asks the out-of-scope NQ question with a trailing "?"
    return loc if loc.rstrip().endswith("?") else loc + "?"


# ----------------------------------------------------------------------------
# CounterFact-style edit metrics


def nanmean(xs: Iterable[float]) -> float:
    """Mean of the values that are neither None nor NaN (NaN when none is left)."""
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def edit_scores(model, tok, records: Sequence[Any], batch_size: int = 32, baseline: Any = None,
                show_progress: bool | None = None) -> dict[str, Any]:
    """Efficacy, generalisation and specificity of edits, as in ROME/MEMIT's CounterFact evaluation.

    Per prompt the model compares the mean token log-prob of the new and the
    true target (:func:`target_logprobs`). Per record:

    - ``efficacy``: edit prompt prefers the new target (P(new) > P(true)).
    - ``efficacy_magnitude``: P(new) - P(true) on the edit prompt, where P is
      exp(mean token log-prob) as in the seed code.
    - ``efficacy_top1``: the model's greedy teacher-forced tokens spell the whole
      new target (usable without a true target).
    - ``paraphrase`` / ``paraphrase_magnitude``: the same over the paraphrase prompts.
    - ``specificity`` / ``specificity_magnitude``: neighbourhood prompts still
      prefer the true target (P(true) > P(new)) / P(true) - P(new).
    - with a ``baseline`` (the unedited model): ``specificity_unedited`` (the same
      number for the unedited model), ``specificity_retained`` (the preference
      true-vs-new is the one the unedited model had), ``neighbourhood_top1``
      (the top-1 next token equals the unedited one) and ``neighbourhood_kl``
      (KL(unedited || edited) of the next-token distribution, see :func:`coarse_kl`).

    Record scores average their prompts; the returned numbers average records
    (ROME's macro average), skipping records where a score is undefined.

    Arguments:
        model, tok: the (edited) model and its tokenizer.
        records: CounterFact-style records (``FactRecord``, ``EditRequest`` or dicts with
            prompt, subject, target_new, target_true, paraphrase_prompts, neighborhood_prompts).
        batch_size: sequences per forward pass; all prompts of all records are batched together.
        baseline: the unedited model's :class:`otelab.eval.baseline.Baseline` for the "vs unedited" variants.

    Returns:
        dict of the averages above, ``n`` (records) and ``per_record`` (list of dicts).
    """
    records = list(records)
    facts = [fact_prompts(r, record_label(r, i)) for i, r in enumerate(records)]
    prompts: list[str] = []
    targets: list[str] = []
    index: list[tuple[int, str, int]] = []  # (record, kind, prompt j) for each (new, true) pair
    for i, f in enumerate(facts):
        for kind, plist in (("edit", [f["edit"]]), ("para", f["para"]), ("neigh", f["neigh"])):
            if f["true"] is None and kind != "edit":
                continue  # paraphrase/neighbourhood scores compare against the true target
            for j, p in enumerate(plist):
                index.append((i, kind, j))
                prompts += [p, p]
                targets += [f["new"], f["true"] if f["true"] is not None else f["new"]]
    hook = _kl_hook(index, facts, baseline) if baseline is not None else None
    res = teacher_forced(model, tok, prompts, targets, batch_size, first_hook=hook, show_progress=show_progress)
    per: list[dict[str, Any]] = []
    for i, (rec, f) in enumerate(zip(records, facts)):
        per.append(dict(case_id=get_field(rec, "case_id", i), efficacy=float("nan"), efficacy_magnitude=float("nan"),
                        efficacy_top1=float("nan"), _para=[], _para_mag=[], _neigh=[], _neigh_mag=[],
                        _neigh_base=[], _retained=[], _top1=[], _kl=[]))
    for k, (i, kind, j) in enumerate(index):
        rn, rt = res[2 * k], res[2 * k + 1]
        f, d = facts[i], per[i]
        lp_new, lp_true = rn.mean_logprob, rt.mean_logprob
        if kind == "edit":
            d["efficacy_top1"] = float(bool((rn.argmax == torch.as_tensor(rn.target_ids)).all()))
            if f["true"] is not None:
                d["efficacy"] = float(lp_new > lp_true)
                d["efficacy_magnitude"] = math.exp(lp_new) - math.exp(lp_true)
        elif kind == "para":
            d["_para"].append(float(lp_new > lp_true))
            d["_para_mag"].append(math.exp(lp_new) - math.exp(lp_true))
        else:
            d["_neigh"].append(float(lp_true > lp_new))
            d["_neigh_mag"].append(math.exp(lp_true) - math.exp(lp_new))
            if baseline is not None:
                st = baseline.neighbour((f["neigh"][j], f["new"], f["true"]))
                d["_neigh_base"].append(float(st.lp_true > st.lp_new))
                d["_retained"].append(float((lp_true > lp_new) == (st.lp_true > st.lp_new)))
                top1, kl = rt.first
                d["_top1"].append(float(top1 == st.top1))
                d["_kl"].append(kl)
    for d in per:
        d["paraphrase"] = nanmean(d.pop("_para"))
        d["paraphrase_magnitude"] = nanmean(d.pop("_para_mag"))
        d["specificity"] = nanmean(d.pop("_neigh"))
        d["specificity_magnitude"] = nanmean(d.pop("_neigh_mag"))
        base_lists = {"specificity_unedited": d.pop("_neigh_base"), "specificity_retained": d.pop("_retained"),
                      "neighbourhood_top1": d.pop("_top1"), "neighbourhood_kl": d.pop("_kl")}
        if baseline is not None:
            for name, lst in base_lists.items():
                d[name] = nanmean(lst)
    names = ["efficacy", "efficacy_magnitude", "efficacy_top1", "paraphrase", "paraphrase_magnitude",
             "specificity", "specificity_magnitude"]
    if baseline is not None:
        names += ["specificity_unedited", "specificity_retained", "neighbourhood_top1", "neighbourhood_kl"]
    out: dict[str, Any] = {name: nanmean(d[name] for d in per) for name in names}
    out["n"] = len(records)
    out["per_record"] = per
    return out


def _kl_hook(index, facts, baseline: Any):
    """first_hook for :func:`edit_scores`: on each neighbourhood prompt (true-target pair),
    return (top-1 token, KL(unedited || edited)) without keeping the distribution."""
    def hook(k: int, lp: torch.Tensor):
        if k % 2 == 0:
            return None
        i, kind, j = index[k // 2]
        if kind != "neigh":
            return None
        f = facts[i]
        st = baseline.neighbour((f["neigh"][j], f["new"], f["true"]))
        return int(lp.argmax()), coarse_kl(st.topk_logprobs, st.topk_ids, lp)
    return hook


# ----------------------------------------------------------------------------
# zsRE


def zsre_scores(model, tok, records: Sequence[Any], baseline: Any = None, batch_size: int = 32,
                show_progress: bool | None = None) -> dict[str, Any]:
    """zsRE metrics: teacher-forced top-1 token accuracy, as in the seed code.

    - ``efficacy``: fraction of the new answer's tokens the model predicts
      (argmax) after the edit question, averaged per record.
    - ``paraphrase``: the same after the rephrased question.
    - ``specificity`` (needs ``baseline``): on the out-of-scope NQ question
      ``loc`` teacher-forced with ``loc_ans``, the fraction of positions whose
      top-1 token equals the *unedited* model's top-1 (what the seed code checks).

    Arguments:
        model, tok: the (edited) model and its tokenizer.
        records: zsRE records (prompt, subject, target_new, rephrase, loc, loc_ans).
        baseline: :class:`otelab.eval.baseline.Baseline` computed on these records before editing.
        batch_size: sequences per forward pass.

    Returns:
        dict with the averages, ``n`` and ``per_record``.
    """
    records = list(records)
    prompts, targets, index = [], [], []
    for i, rec in enumerate(records):
        where = record_label(rec, i)
        q = fill_subject(get_field(rec, "prompt", where=where), get_field(rec, "subject", ""))
        new = target_string(get_field(rec, "target_new", where=where), where, "target_new")
        if not new or not new.strip():
            raise ValueError(f"{where}: the new target is empty")
        prompts.append(q); targets.append(new); index.append((i, "edit"))
        reph = get_field(rec, "rephrase", None)
        if reph:
            prompts.append(reph); targets.append(new); index.append((i, "para"))
        if baseline is not None and is_zsre_record(rec):
            prompts.append(zsre_loc_prompt(get_field(rec, "loc"))); targets.append(get_field(rec, "loc_ans"))
            index.append((i, "loc"))
    res = teacher_forced(model, tok, prompts, targets, batch_size, show_progress=show_progress)
    per = [dict(case_id=get_field(r, "case_id", i), efficacy=float("nan"), paraphrase=float("nan"),
                specificity=float("nan")) for i, r in enumerate(records)]
    for (i, kind), p, t, r in zip(index, prompts, targets, res):
        if kind == "edit":
            per[i]["efficacy"] = r.token_accuracy
        elif kind == "para":
            per[i]["paraphrase"] = r.token_accuracy
        else:
            ref = baseline.zsre_loc.get((p, t))  # type: ignore[union-attr]
            if ref is None:
                raise KeyError(f"{record_label(records[i], i)}: the baseline has no unedited outputs for {p!r}; "
                               "compute the Baseline on these records before editing")
            per[i]["specificity"] = float((r.argmax == torch.as_tensor(ref)).float().mean())
    names = ["efficacy", "paraphrase"] + (["specificity"] if baseline is not None else [])
    out: dict[str, Any] = {n: nanmean(d[n] for d in per) for n in names}
    out["n"] = len(records)
    out["per_record"] = per
    return out


# ----------------------------------------------------------------------------
# Sampling uncertainty


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped).

    Arguments:
        values: per-record scores (e.g. 0/1 efficacy of a random sample of edits).
        n_boot: bootstrap resamples.
        level: coverage of the interval.
        seed: the resampling seed (same seed, same interval).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when no value is finite.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    x = torch.tensor([float(v) for v in values if v is not None and not math.isnan(v)], dtype=torch.float64)
    if not len(x):
        return float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    means = x[torch.randint(len(x), (n_boot, len(x)), generator=g)].mean(1)  # [n_boot]
    a = (1 - level) / 2
    q = torch.quantile(means, torch.tensor([a, 1 - a], dtype=torch.float64))
    return float(q[0]), float(q[1])
