"""Evaluation metrics for knowledge editing (the seed paper's Appendix B / C.5).

Everything here is batched: prompts are padded into batches of ``batch_size``
sequences and scored with one forward pass per batch, with attention masks and
explicit position ids so left and right padding give the same numbers as one
prompt at a time.

- Teacher-forced scoring: :func:`target_logprobs` (mean token log-prob of
  ``" " + target`` after a prompt, as in ROME/MEMIT's CounterFact evaluation).
- CounterFact-style edit metrics: :func:`edit_scores` (efficacy, paraphrase,
  neighbourhood specificity and their magnitude variants) and zsRE token
  accuracy: :func:`zsre_scores`.
- The unedited reference: :class:`Baseline` caches what the unedited model says
  on the neighbourhood / out-of-scope prompts (and optionally LM and latent
  states) *before* editing, so specificity and drift are always measured against
  the unedited model, never against a model that has already been edited.
- Fluency and consistency: :func:`ngram_entropy`, :func:`generation_fluency`,
  :func:`tfidf_consistency`.
- General capability: :func:`general_capability` (GLUE-style and MMLU prompts,
  zero- or few-shot, scored by the likelihood of the label words; agreement with
  the unedited model's answers and the log-likelihood margin of its answer).
- Sampling: :func:`bootstrap_ci` (percentile bootstrap of a mean).

LM drift (Table 7: perplexity, top-1 agreement) and latent drift (Figures 4,
6, 7) live in :mod:`otelab.eval.drift`.
"""
from __future__ import annotations

import inspect
import math
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

# ----------------------------------------------------------------------------
# Counting forward passes


class ForwardCounter:
    """Count calls to a model's ``forward`` (one per batch in every metric here).

    Use as a context manager::

        with ForwardCounter(model) as fc:
            target_logprobs(model, tok, prompts, targets, batch_size=8)
        assert fc.count <= math.ceil(len(prompts) / 8)

    Arguments:
        model: the ``torch.nn.Module`` whose top-level forward is counted
            (``generate`` counts one call per generated token).
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.count = 0
        self._handle = None

    def _hook(self, module, args, kwargs=None):
        self.count += 1

    def __enter__(self) -> "ForwardCounter":
        # the body runs once per batch whether the metric calls the whole model or
        # only its body (see _split_head)
        body = getattr(self.model, "base_model", None)
        target = body if isinstance(body, torch.nn.Module) else self.model
        self._handle = target.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


# ----------------------------------------------------------------------------
# Small helpers shared by the metrics

_MISSING = object()


def _get(rec: Any, name: str, default: Any = _MISSING, where: str = "record") -> Any:
    """Field ``name`` of a dataclass-like or dict record, or ``default``."""
    if isinstance(rec, Mapping):
        if name in rec:
            return rec[name]
    elif hasattr(rec, name):
        return getattr(rec, name)
    if default is _MISSING:
        raise ValueError(f"{where}: missing field {name!r}")
    return default


def _where(rec: Any, i: int) -> str:
    cid = _get(rec, "case_id", None)
    return f"record {i}" + (f" (case_id {cid})" if cid is not None else "")


def _fill(prompt: str, subject: str) -> str:
    """A CounterFact template with its ``{}`` replaced by the subject (str.format would choke on other braces)."""
    return prompt.replace("{}", subject, 1) if "{}" in prompt else prompt


def _str_target(t: Any, where: str, field_name: str) -> str | None:
    if t is None:
        return None
    if isinstance(t, Mapping):  # ROME's {"str": ..., "id": ...}
        t = t.get("str")
    if not isinstance(t, str):
        raise ValueError(f"{where}: field {field_name!r} must be a string, got {type(t).__name__}")
    return t


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tok) -> int:
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tok, name, None)
        if isinstance(v, int):
            return v
    return 0  # never attended to: the attention mask hides padding


def _lead_ids(tok) -> list[int]:
    """Special tokens the tokenizer puts *before* a text (e.g. LLaMA's BOS); trailing ones are dropped."""
    full = tok("a")["input_ids"]
    plain = tok("a", add_special_tokens=False)["input_ids"]
    for k in range(len(full) - len(plain) + 1):
        if full[k:k + len(plain)] == plain:
            return list(full[:k])
    return []


def _encode_many(tok, texts: Sequence[str], lead: bool) -> list[list[int]]:
    """Token ids of each text (with the leading special tokens when ``lead``)."""
    if not texts:
        return []
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    prefix = _lead_ids(tok) if lead else []
    return [prefix + list(x) for x in ids]


def _supports_logits_to_keep(model) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@contextmanager
def _eval_mode(model):
    """Evaluate without dropout, then restore the caller's train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def _progress(iterable, total: int, desc: str, show: bool | None):
    """tqdm over batches; shown by default only when there are many batches."""
    from tqdm.auto import tqdm

    disable = (total < 8) if show is None else (not show)
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False)


def _pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, side: str, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Pad token lists into a batch.

    Returns:
        input_ids [B, T], attention_mask [B, T], position_ids [B, T] (0 at each
        row's first real token, whatever the padding side), and the column
        offset of each row's first real token.
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
    T = max(len(s) for s in seqs)
    B = len(seqs)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    offsets = []
    for b, s in enumerate(seqs):
        off = T - len(s) if side == "left" else 0
        ids[b, off:off + len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[b, off:off + len(s)] = 1
        offsets.append(off)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, T]
    return ids.to(device), mask.to(device), pos.to(device), offsets


def _forward_logits(model, ids, mask, pos, keep: int = 0) -> torch.Tensor:
    """Logits of the last ``keep`` columns (all when 0 or unsupported); [B, keep|T, V]."""
    kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    if keep and _supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits
    if keep and logits.shape[1] != keep:  # the model ignored logits_to_keep
        logits = logits[:, -keep:]
    return logits


def _split_head(model) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """The model's body (returning the final-normed hidden states) and its output layer, or None.

    Scoring needs the logits of a few positions per sequence; applying the
    output layer (``d_model x vocab``, the largest matmul of a small model) to
    just those rows as one 2-D matmul is several times cheaper than
    ``logits_to_keep``, which computes every kept column of every row through
    a batched matmul. Models whose head does more than ``Linear(hidden)``
    (logit soft-capping or scaling) take the full forward instead.
    """
    body = getattr(model, "base_model", None)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    cfg = getattr(model, "config", None)
    if body is None or body is model or type(head) is not torch.nn.Linear:
        return None
    if any(getattr(cfg, a, None) for a in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    return body, head


def _logits_at(model, ids, mask, pos, rows: Sequence[int], cols: Sequence[int]) -> torch.Tensor:
    """Logits at the given (row, column) positions of a padded batch; [N, V]."""
    r = torch.as_tensor(rows, device=ids.device)
    c = torch.as_tensor(cols, device=ids.device)
    split = _split_head(model)
    if split is not None:
        body, head = split
        h = body(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state  # [B, T, D]
        return head(h[r, c])  # [N, V]
    T = ids.shape[1]
    logits = _forward_logits(model, ids, mask, pos, T - int(c.min()))  # [B, keep, V]
    return logits[r, c - (T - logits.shape[1])]


# ----------------------------------------------------------------------------
# Teacher-forced scoring with prefix sharing


@dataclass
class TeacherForced:
    """Teacher-forced result for one (prompt, target) pair.

    Attributes:
        target_ids: the target's tokens (``" " + target``), length m.
        logprobs: log-prob of each target token given everything before it; [m].
        argmax: the model's top-1 token at each of those positions; [m].
        first: whatever ``first_hook`` returned for the distribution at the
            first target position (None when no hook).
    """

    target_ids: list[int]
    logprobs: torch.Tensor  # [m]
    argmax: torch.Tensor  # [m]
    first: Any = None

    @property
    def mean_logprob(self) -> float:
        return float(self.logprobs.mean())

    @property
    def token_accuracy(self) -> float:
        return float((self.argmax == torch.as_tensor(self.target_ids)).float().mean())


def _plan_hosts(inputs: list[tuple[int, ...]]) -> dict[tuple[int, ...], tuple[int, ...]]:
    """Map every input sequence to the longest sequence it is a prefix of.

    A causal LM's logits at position i only depend on tokens <= i, so a pair
    whose input is a prefix of another's is scored from the longer one's forward
    (e.g. single-token targets after the same prompt share one sequence).
    In sorted order all extensions of s directly follow s, so it is enough to
    look at the next element.
    """
    uniq = sorted(set(inputs))
    host: dict[tuple[int, ...], tuple[int, ...]] = {}
    for i in range(len(uniq) - 1, -1, -1):
        s = uniq[i]
        nxt = uniq[i + 1] if i + 1 < len(uniq) else None
        host[s] = host[nxt] if nxt is not None and nxt[:len(s)] == s else s
    return host


def teacher_forced(model, tok, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 32,
                   padding_side: str = "left", first_hook: Callable[[int, torch.Tensor], Any] | None = None,
                   show_progress: bool | None = None) -> list[TeacherForced]:
    """Score ``" " + target`` after each prompt, teacher forced, in padded batches.

    The prompt keeps the tokenizer's leading special tokens (BOS); the target is
    ``" " + target.strip()`` tokenised on its own, as ROME/MEMIT do.
    Pairs are deduplicated by prefix sharing, so the number of forward passes is
    at most ``ceil(len(prompts) / batch_size)``.

    Arguments:
        model: a causal LM (``model(input_ids, attention_mask, position_ids).logits``).
        tok: its tokenizer.
        prompts: the n prompt strings (subject already filled in).
        targets: the n target strings.
        batch_size: sequences per forward pass.
        padding_side: ``"left"`` (default) or ``"right"``; both give the same numbers
            (the output layer is applied only at the positions a target needs).
        first_hook: optional ``f(pair_index, logprobs [V])`` called with the full
            log-distribution at each pair's first target position; its return
            value is stored in ``.first``.
        show_progress: tqdm bar (default: only when there are many batches).

    Returns:
        One :class:`TeacherForced` per pair, in input order.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"got {len(prompts)} prompts but {len(targets)} targets")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i, (p, t) in enumerate(zip(prompts, targets)):
        if not isinstance(p, str) or not isinstance(t, str):
            raise ValueError(f"pair {i}: prompt and target must be strings, got "
                             f"{type(p).__name__} and {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"pair {i}: the target is empty (prompt {p!r})")
    if not prompts:
        return []
    p_ids = _encode_many(tok, prompts, lead=True)
    t_ids = _encode_many(tok, [" " + t.strip() for t in targets], lead=False)
    for i, (p, t) in enumerate(zip(p_ids, t_ids)):
        if not p:
            raise ValueError(f"pair {i}: the prompt {prompts[i]!r} tokenises to nothing and the tokenizer adds no BOS")
        if not t:
            raise ValueError(f"pair {i}: the target {targets[i]!r} tokenises to nothing")
    inputs = [tuple(p + t[:-1]) for p, t in zip(p_ids, t_ids)]
    host_of = _plan_hosts(inputs)
    hosts = sorted(set(host_of.values()), key=lambda s: (-len(s), s))  # similar lengths share a batch
    row_of = {h: r for r, h in enumerate(hosts)}
    served: list[list[int]] = [[] for _ in hosts]  # pair indices per host row
    for i, inp in enumerate(inputs):
        served[row_of[host_of[inp]]].append(i)

    results: list[TeacherForced | None] = [None] * len(prompts)
    device, pad = _device(model), _pad_id(tok)
    n_batches = math.ceil(len(hosts) / batch_size)
    with _eval_mode(model):
        for b0 in _progress(range(0, len(hosts), batch_size), n_batches, "scoring", show_progress):
            chunk = hosts[b0:b0 + batch_size]
            ids, mask, pos, offs = _pad_batch(chunk, pad, padding_side, device)
            # the columns whose next-token distribution some pair of this batch needs
            at: dict[tuple[int, int], int] = {}
            for r in range(len(chunk)):
                for i in served[b0 + r]:
                    c0 = offs[r] + len(p_ids[i]) - 1
                    for c in range(c0, c0 + len(t_ids[i])):
                        at.setdefault((r, c), len(at))
            logits = _logits_at(model, ids, mask, pos, [rc[0] for rc in at], [rc[1] for rc in at])  # [N, V]
            for r in range(len(chunk)):
                for i in served[b0 + r]:
                    tgt = t_ids[i]
                    c0 = offs[r] + len(p_ids[i]) - 1
                    rows = [at[(r, c)] for c in range(c0, c0 + len(tgt))]
                    lp = torch.log_softmax(logits[rows].float(), dim=-1)  # [m, V]
                    tgt_t = torch.as_tensor(tgt, device=lp.device)
                    results[i] = TeacherForced(
                        target_ids=list(tgt),
                        logprobs=lp.gather(1, tgt_t[:, None])[:, 0].cpu(),
                        argmax=lp.argmax(-1).cpu(),
                        first=first_hook(i, lp[0]) if first_hook is not None else None)
    return results  # type: ignore[return-value]


def target_logprobs(model, tok, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 32,
                    padding_side: str = "left", show_progress: bool | None = None) -> torch.Tensor:
    """Mean token log-prob of ``" " + target`` given each prompt (teacher forced).

    This is minus the per-token NLL that ROME/MEMIT's CounterFact evaluation
    compares between the new and the true target.

    Arguments:
        model, tok: the causal LM and its tokenizer.
        prompts: n prompts with the subject filled in.
        targets: n targets.
        batch_size: sequences per forward pass (at most ``ceil(n / batch_size)`` passes).
        padding_side: ``"left"`` or ``"right"``.

    Returns:
        Tensor [n] of mean log-probs (float32, CPU).
    """
    res = teacher_forced(model, tok, prompts, targets, batch_size, padding_side, show_progress=show_progress)
    return torch.tensor([r.mean_logprob for r in res], dtype=torch.float32)


# ----------------------------------------------------------------------------
# The unedited reference


def _topk_summary(k: int) -> Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor, int]]:
    def hook(i: int, lp: torch.Tensor):  # lp: [V] log-probs
        v, idx = lp.topk(min(k, lp.shape[0]))
        return v.cpu(), idx.cpu(), int(lp.argmax())
    return hook


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


@dataclass
class NeighbourStat:
    """What the unedited model says on one neighbourhood prompt."""

    lp_new: float
    lp_true: float
    top1: int
    topk_logprobs: torch.Tensor  # [k]
    topk_ids: torch.Tensor  # [k]


def _fact_pairs(rec: Any, where: str) -> dict[str, Any]:
    """The prompts of a CounterFact-style record: edit, paraphrases, neighbourhood."""
    prompt = _get(rec, "prompt", where=where)
    subject = _get(rec, "subject", where=where)
    if not isinstance(prompt, str) or not isinstance(subject, str):
        raise ValueError(f"{where}: fields 'prompt' and 'subject' must be strings")
    new = _str_target(_get(rec, "target_new", where=where), where, "target_new")
    if not new or not new.strip():
        raise ValueError(f"{where}: the new target is empty")
    true = _str_target(_get(rec, "target_true", None), where, "target_true")
    para = list(_get(rec, "paraphrase_prompts", None) or [])
    neigh = list(_get(rec, "neighborhood_prompts", None) or [])
    for name, lst in (("paraphrase_prompts", para), ("neighborhood_prompts", neigh)):
        for j, s in enumerate(lst):
            if not isinstance(s, str):
                raise ValueError(f"{where}: {name}[{j}] must be a string, got {type(s).__name__}")
    return dict(edit=_fill(prompt, subject), new=new, true=true, para=para, neigh=neigh)


def is_zsre_record(rec: Any) -> bool:
    """True for zsRE-style records (they carry ``loc``/``loc_ans``)."""
    return _get(rec, "loc", None) is not None and _get(rec, "loc_ans", None) is not None


def _zsre_loc_prompt(loc: str) -> str:
    # ROME's zsRE loader asks the out-of-scope NQ question with a trailing "?"
    return loc if loc.rstrip().endswith("?") else loc + "?"


@dataclass
class Baseline:
    """The unedited model's outputs, computed once before any edit.

    Specificity, out-of-scope accuracy and drift compare the edited model with
    these cached numbers (never with the model being edited, whose weights have
    already changed by the time they are measured).

    Attributes:
        neighbourhood: ``(prompt, target_new, target_true) -> NeighbourStat``.
        zsre_loc: ``(loc prompt, loc_ans) -> unedited top-1 tokens`` at each answer position.
        lm: an :class:`otelab.eval.drift.LMBaseline` on held-out text, or None.
        latent: an :class:`otelab.eval.drift.LatentBaseline`, or None.
        kl_topk: how many top tokens of each neighbourhood distribution are kept.
    """

    neighbourhood: dict = field(default_factory=dict)
    zsre_loc: dict = field(default_factory=dict)
    lm: Any = None
    latent: Any = None
    kl_topk: int = 256

    @classmethod
    def compute(cls, model, tok, records: Iterable[Any] = (), *, texts: Sequence[str] | None = None,
                max_len: int = 128, latent_layer: int | None = None, latent_records: Sequence[Any] | None = None,
                batch_size: int = 32, lm_batch_size: int = 8, kl_topk: int = 256,
                show_progress: bool | None = None) -> "Baseline":
        """Run the unedited model once over everything later comparisons need.

        Arguments:
            model, tok: the *unedited* model and its tokenizer.
            records: CounterFact-style records (their neighbourhood prompts are
                cached) and/or zsRE records (their ``loc`` questions are cached).
            texts: held-out texts for perplexity / top-1 agreement (optional).
            max_len: token limit per text.
            latent_layer: when given, also cache ``hidden_states[latent_layer]`` at
                each subject's last token over ``latent_records`` (default: ``records``).
            batch_size, lm_batch_size: sequences per forward pass.
            kl_topk: tokens kept per neighbourhood distribution (see :func:`coarse_kl`).

        Returns:
            A :class:`Baseline`.
        """
        records = list(records)
        base = cls(kl_topk=kl_topk)
        prompts, targets, keys = [], [], []
        seen: set[tuple[str, str, str]] = set()
        z_prompts, z_targets = [], []
        for i, rec in enumerate(records):
            where = _where(rec, i)
            if is_zsre_record(rec):
                z_prompts.append(_zsre_loc_prompt(_get(rec, "loc", where=where)))
                z_targets.append(_get(rec, "loc_ans", where=where))
                continue
            f = _fact_pairs(rec, where)
            for p in f["neigh"]:
                if f["true"] is None:
                    raise ValueError(f"{where}: neighbourhood prompts need a 'target_true'")
                key = (p, f["new"], f["true"])
                if key in seen:
                    continue
                seen.add(key)
                keys.append(key)
                prompts += [p, p]
                targets += [f["true"], f["new"]]
        hook = _topk_summary(kl_topk)
        res = teacher_forced(model, tok, prompts, targets, batch_size,
                             first_hook=lambda i, lp: hook(i, lp) if i % 2 == 0 else None,
                             show_progress=show_progress)
        for j, key in enumerate(keys):
            rt, rn = res[2 * j], res[2 * j + 1]
            v, idx, top1 = rt.first
            base.neighbourhood[key] = NeighbourStat(rn.mean_logprob, rt.mean_logprob, top1, v, idx)
        zres = teacher_forced(model, tok, z_prompts, z_targets, batch_size, show_progress=show_progress)
        for p, t, r in zip(z_prompts, z_targets, zres):
            base.zsre_loc[(p, t)] = r.argmax.tolist()
        if texts is not None:
            from otelab.eval.drift import LMBaseline

            base.lm = LMBaseline.compute(model, tok, texts, max_len=max_len, batch_size=lm_batch_size,
                                         show_progress=show_progress)
        if latent_layer is not None:
            from otelab.eval.drift import LatentBaseline

            base.latent = LatentBaseline.compute(model, tok, latent_records if latent_records is not None else records,
                                                 latent_layer, batch_size=batch_size)
        return base

    def neighbour(self, key: tuple[str, str, str]) -> NeighbourStat:
        try:
            return self.neighbourhood[key]
        except KeyError:
            raise KeyError(f"the baseline has no unedited outputs for neighbourhood prompt {key[0]!r} "
                           f"(targets {key[1]!r}/{key[2]!r}); compute the Baseline on these records "
                           "before editing") from None


# ----------------------------------------------------------------------------
# CounterFact-style edit metrics


def _nanmean(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def edit_scores(model, tok, records: Sequence[Any], batch_size: int = 32, baseline: Baseline | None = None,
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
        baseline: the unedited model's :class:`Baseline` for the "vs unedited" variants.

    Returns:
        dict of the averages above, ``n`` (records) and ``per_record`` (list of dicts).
    """
    records = list(records)
    facts = [_fact_pairs(r, _where(r, i)) for i, r in enumerate(records)]
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
        per.append(dict(case_id=_get(rec, "case_id", i), efficacy=float("nan"), efficacy_magnitude=float("nan"),
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
        d["paraphrase"] = _nanmean(d.pop("_para"))
        d["paraphrase_magnitude"] = _nanmean(d.pop("_para_mag"))
        d["specificity"] = _nanmean(d.pop("_neigh"))
        d["specificity_magnitude"] = _nanmean(d.pop("_neigh_mag"))
        base_lists = {"specificity_unedited": d.pop("_neigh_base"), "specificity_retained": d.pop("_retained"),
                      "neighbourhood_top1": d.pop("_top1"), "neighbourhood_kl": d.pop("_kl")}
        if baseline is not None:
            for name, lst in base_lists.items():
                d[name] = _nanmean(lst)
    names = ["efficacy", "efficacy_magnitude", "efficacy_top1", "paraphrase", "paraphrase_magnitude",
             "specificity", "specificity_magnitude"]
    if baseline is not None:
        names += ["specificity_unedited", "specificity_retained", "neighbourhood_top1", "neighbourhood_kl"]
    out: dict[str, Any] = {name: _nanmean(d[name] for d in per) for name in names}
    out["n"] = len(records)
    out["per_record"] = per
    return out


def _kl_hook(index, facts, baseline: Baseline):
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


def zsre_scores(model, tok, records: Sequence[Any], baseline: Baseline | None = None, batch_size: int = 32,
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
        baseline: :class:`Baseline` computed on these records before editing.
        batch_size: sequences per forward pass.

    Returns:
        dict with the averages, ``n`` and ``per_record``.
    """
    records = list(records)
    prompts, targets, index = [], [], []
    for i, rec in enumerate(records):
        where = _where(rec, i)
        q = _fill(_get(rec, "prompt", where=where), _get(rec, "subject", ""))
        new = _str_target(_get(rec, "target_new", where=where), where, "target_new")
        if not new or not new.strip():
            raise ValueError(f"{where}: the new target is empty")
        prompts.append(q); targets.append(new); index.append((i, "edit"))
        reph = _get(rec, "rephrase", None)
        if reph:
            prompts.append(reph); targets.append(new); index.append((i, "para"))
        if baseline is not None and is_zsre_record(rec):
            prompts.append(_zsre_loc_prompt(_get(rec, "loc"))); targets.append(_get(rec, "loc_ans"))
            index.append((i, "loc"))
    res = teacher_forced(model, tok, prompts, targets, batch_size, show_progress=show_progress)
    per = [dict(case_id=_get(r, "case_id", i), efficacy=float("nan"), paraphrase=float("nan"),
                specificity=float("nan")) for i, r in enumerate(records)]
    for (i, kind), p, t, r in zip(index, prompts, targets, res):
        if kind == "edit":
            per[i]["efficacy"] = r.token_accuracy
        elif kind == "para":
            per[i]["paraphrase"] = r.token_accuracy
        else:
            ref = baseline.zsre_loc.get((p, t))  # type: ignore[union-attr]
            if ref is None:
                raise KeyError(f"{_where(records[i], i)}: the baseline has no unedited outputs for {p!r}; "
                               "compute the Baseline on these records before editing")
            per[i]["specificity"] = float((r.argmax == torch.as_tensor(ref)).float().mean())
    names = ["efficacy", "paraphrase"] + (["specificity"] if baseline is not None else [])
    out: dict[str, Any] = {n: _nanmean(d[n] for d in per) for n in names}
    out["n"] = len(records)
    out["per_record"] = per
    return out


# ----------------------------------------------------------------------------
# Fluency and consistency

_WORD = re.compile(r"\w+|[^\w\s]")


def _ngram_entropy_one(text: str, ns: Sequence[int], weights: Sequence[float]) -> float:
    tokens = _WORD.findall(text)
    hs = []
    for n, w in zip(ns, weights):
        counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        h = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        hs.append(w * h)
    return sum(hs) / len(hs)


def ngram_entropy(texts: str | Sequence[str], ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Weighted n-gram entropy, ROME's fluency score (higher = more varied text).

    For each text: H_n = -Σ p log2 p over the frequency distribution of its
    word n-grams, then the mean of (2/3·H_2, 4/3·H_3); the texts' scores are
    averaged. Words are runs of letters/digits and single punctuation marks
    (a regex stand-in for NLTK's word_tokenize, which the seed code uses).

    Arguments:
        texts: one text or a list of texts.
        ns, weights: n-gram orders and their weights.

    Returns:
        The mean score in bits (0 for texts shorter than 3 words).
    """
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise ValueError("ngram_entropy needs at least one text")
    return sum(_ngram_entropy_one(t, ns, weights) for t in texts) / len(texts)


def greedy_generate(model, tok, prompts: Sequence[str], max_new_tokens: int = 50, batch_size: int = 16,
                    show_progress: bool | None = None) -> list[str]:
    """Greedy continuations of each prompt, generated in left-padded batches.

    Arguments:
        model, tok: a causal LM and its tokenizer.
        prompts: the prompts.
        max_new_tokens: tokens generated per prompt.
        batch_size: prompts per ``generate`` call.

    Returns:
        The decoded continuations (without the prompt), in input order.
    """
    from transformers import GenerationConfig

    ids = _encode_many(tok, prompts, lead=True)
    for i, s in enumerate(ids):
        if not s:
            raise ValueError(f"prompt {i} ({prompts[i]!r}) tokenises to nothing")
    pad = _pad_id(tok)
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tok, "eos_token_id", None)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out: list[str] = [""] * len(ids)
    device = _device(model)
    with _eval_mode(model):
        for b0 in _progress(range(0, len(order), batch_size), math.ceil(len(order) / batch_size), "generating",
                            show_progress):
            rows = order[b0:b0 + batch_size]
            inp, mask, _, _ = _pad_batch([ids[i] for i in rows], pad, "left", device)
            gen = model.generate(input_ids=inp, attention_mask=mask, generation_config=cfg)
            for r, i in enumerate(rows):
                out[i] = tok.decode(gen[r, inp.shape[1]:], skip_special_tokens=True)
    return out


def generation_fluency(model, tok, prompts: Sequence[str], max_new_tokens: int = 50, batch_size: int = 16,
                       show_progress: bool | None = None) -> dict[str, Any]:
    """Generate greedily from each prompt and score the texts' n-gram entropy.

    As in ROME the scored text is prompt + continuation.

    Arguments:
        model, tok: a causal LM and its tokenizer.
        prompts: generation prompts.
        max_new_tokens: tokens per continuation.
        batch_size: prompts per batch.

    Returns:
        ``{"ngram_entropy": float, "texts": [prompt + continuation, ...]}``.
    """
    conts = greedy_generate(model, tok, prompts, max_new_tokens, batch_size, show_progress)
    texts = [p + c for p, c in zip(prompts, conts)]
    return {"ngram_entropy": ngram_entropy(texts), "texts": texts}


def tfidf_consistency(generations: Sequence[str | Sequence[str]], reference_texts: Sequence[str]) -> dict[str, Any]:
    """TF-IDF cosine between each generation and its reference text (ROME's consistency).

    ROME uses an IDF table fitted on Wikipedia; here scikit-learn's
    ``TfidfVectorizer`` (default settings, L2-normalised rows) is fitted on the
    references plus the generations being scored, so no external IDF table is
    needed. Absolute values therefore depend on the evaluated set; compare runs
    on the same records.

    Arguments:
        generations: one text, or a list of texts (joined with spaces), per item.
        reference_texts: one reference text per item (e.g. a Wikipedia-style
            description of the new target).

    Returns:
        ``{"consistency": mean cosine, "per_item": [cosine, ...]}``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(generations) != len(reference_texts):
        raise ValueError(f"got {len(generations)} generations but {len(reference_texts)} reference texts")
    if not generations:
        raise ValueError("tfidf_consistency needs at least one item")
    gens = [g if isinstance(g, str) else " ".join(g) for g in generations]
    for i, r in enumerate(reference_texts):
        if not isinstance(r, str) or not r.strip():
            raise ValueError(f"item {i}: the reference text is empty or not a string")
    vec = TfidfVectorizer().fit(list(reference_texts) + gens)
    a = vec.transform(gens)
    b = vec.transform(list(reference_texts))
    cos = [float(a[i].multiply(b[i]).sum()) for i in range(len(gens))]  # rows are unit-norm
    return {"consistency": sum(cos) / len(cos), "per_item": cos}


# ----------------------------------------------------------------------------
# General capability (zero-shot GLUE-style tasks and MMLU)


def _task_item(task: str, item: Mapping, where: str) -> tuple[str, list[str], int]:
    """Prompt, label words and gold option index for one item."""
    def need(name):
        if name not in item:
            raise ValueError(f"{where}: missing field {name!r}")
        return item[name]

    def label01(v):
        if isinstance(v, str):
            v = {"entailment": 0, "not_entailment": 1}.get(v, v)
        if v not in (0, 1):
            raise ValueError(f"{where}: label must be 0/1 (or entailment/not_entailment), got {v!r}")
        return int(v)

    if task == "sst2":
        return (f"Review: {need('sentence').strip()}\nSentiment (positive or negative):",
                ["negative", "positive"], label01(need("label")))
    if task == "mrpc":
        return (f"Sentence 1: {need('sentence1').strip()}\nSentence 2: {need('sentence2').strip()}\n"
                "Question: Do both sentences mean the same thing? Answer yes or no.\nAnswer:",
                ["no", "yes"], label01(need("label")))
    if task == "cola":
        return (f"Sentence: {need('sentence').strip()}\n"
                "Question: Is this sentence grammatically acceptable? Answer yes or no.\nAnswer:",
                ["no", "yes"], label01(need("label")))
    if task in ("rte", "nli"):
        # GLUE RTE: 0 = entailment, 1 = not_entailment
        return (f"{need('sentence1').strip()}\nQuestion: Does this imply that \"{need('sentence2').strip()}\"? "
                "Answer yes or no.\nAnswer:", ["yes", "no"], label01(need("label")))
    if task == "mmlu":
        choices = need("choices")
        if not isinstance(choices, (list, tuple)) or len(choices) != 4:
            raise ValueError(f"{where}: 'choices' must be a list of 4 strings")
        ans = need("answer")
        if isinstance(ans, str) and ans in "ABCD" and len(ans) == 1:
            ans = "ABCD".index(ans)
        if ans not in (0, 1, 2, 3):
            raise ValueError(f"{where}: 'answer' must be 0-3 or A-D, got {ans!r}")
        subject = str(item.get("subject", "")).replace("_", " ").strip()
        head = f"The following is a multiple choice question about {subject}.\n\n" if subject else ""
        body = "\n".join(f"{L}. {str(c).strip()}" for L, c in zip("ABCD", choices))
        return f"{head}{need('question').strip()}\n{body}\nAnswer:", list("ABCD"), int(ans)
    raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")


TASKS = ("sst2", "mrpc", "cola", "rte", "nli", "mmlu")


def binary_f1(y_true: Sequence[int], y_pred: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (0 when it is never predicted nor present)."""
    tp = sum(1 for t, p in zip(y_true, y_pred) if t == positive and p == positive)
    fp = sum(1 for t, p in zip(y_true, y_pred) if t != positive and p == positive)
    fn = sum(1 for t, p in zip(y_true, y_pred) if t == positive and p != positive)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in either list."""
    classes = sorted(set(y_true) | set(y_pred))
    return sum(binary_f1(y_true, y_pred, c) for c in classes) / len(classes) if classes else 0.0


def mcc(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Matthews correlation coefficient of binary labels (0 when undefined, as scikit-learn)."""
    tp = sum(1 for t, p in zip(y_true, y_pred) if t == 1 and p == 1)
    tn = sum(1 for t, p in zip(y_true, y_pred) if t == 0 and p == 0)
    fp = sum(1 for t, p in zip(y_true, y_pred) if t == 0 and p == 1)
    fn = sum(1 for t, p in zip(y_true, y_pred) if t == 1 and p == 0)
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


def _few_shot_prefix(task: str, demos: Sequence[Mapping], where: str) -> str:
    """Worked examples (prompt, a space and the gold label word) separated by blank lines."""
    parts = []
    for j, item in enumerate(demos):
        prompt, options, gold = _task_item(task, item, f"{where} demonstration {j}")
        parts.append(f"{prompt} {options[gold]}\n\n")
    return "".join(parts)


def pick_demonstrations(task: str, pool: Sequence[Mapping], shots: int) -> list[dict]:
    """``shots`` worked examples for a few-shot prompt, the gold labels taking turns.

    Binary tasks alternate label 0 and 1 (so the examples do not teach one answer);
    MMLU cycles A, B, C, D. Items are taken in pool order, so the choice is fixed.

    Arguments:
        task: the task name.
        pool: items NOT evaluated (e.g. the items after the first 100).
        shots: how many examples.

    Returns:
        The chosen items (fewer when the pool runs out of a label).
    """
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    by_label: dict[int, list] = {}
    for j, item in enumerate(pool):
        by_label.setdefault(_task_item(task, item, f"task {task!r} pool item {j}")[2], []).append(item)
    labels = sorted(by_label)
    out: list[dict] = []
    k = 0
    while len(out) < shots and any(by_label.values()):
        lst = by_label[labels[k % len(labels)]]
        if lst:
            out.append(dict(lst.pop(0)))
        k += 1
    return out


@dataclass
class CapabilityAnswers:
    """One model's answers on the general-capability tasks (the unedited reference, cached before editing).

    Attributes:
        gold: ``{task: [gold option index per item]}``.
        scores: ``{task: [[total log-likelihood of each option] per item]}``.
        shots: worked examples in front of every prompt (0 = zero-shot).
    """

    gold: dict[str, list[int]]
    scores: dict[str, list[list[float]]]
    shots: int = 0

    def predictions(self, task: str) -> list[int]:
        return [max(range(len(s)), key=s.__getitem__) for s in self.scores[task]]


def capability_answers(model, tok, tasks: Mapping[str, Sequence[Mapping]], batch_size: int = 16,
                       demos: Mapping[str, Sequence[Mapping]] | None = None,
                       show_progress: bool | None = None) -> CapabilityAnswers:
    """Score every label word of every item (total log-likelihood after the prompt).

    Arguments:
        model, tok: a causal LM and its tokenizer.
        tasks: ``{task: items}`` (see :func:`general_capability`).
        batch_size: sequences per forward pass.
        demos: optional ``{task: worked examples}`` put in front of every prompt of
            that task (see :func:`pick_demonstrations`); tasks without demos stay zero-shot.

    Returns:
        :class:`CapabilityAnswers`.
    """
    prompts, targets, owners = [], [], []
    golds: dict[str, list[int]] = {}
    shots = {len(v) for v in (demos or {}).values()}
    for task, items in tasks.items():
        items = list(items)
        if not items:
            raise ValueError(f"task {task!r} has no items")
        prefix = _few_shot_prefix(task, (demos or {}).get(task, ()), f"task {task!r}")
        golds[task] = []
        for j, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise ValueError(f"task {task!r} item {j}: expected a dict, got {type(item).__name__}")
            prompt, options, gold = _task_item(task, item, f"task {task!r} item {j}")
            golds[task].append(gold)
            for o in options:
                prompts.append(prefix + prompt); targets.append(o); owners.append((task, j))
    res = teacher_forced(model, tok, prompts, targets, batch_size, show_progress=show_progress)
    scores: dict[str, list[list[float]]] = {t: [[] for _ in g] for t, g in golds.items()}
    for (task, j), r in zip(owners, res):
        scores[task][j].append(float(r.logprobs.sum()))  # total log-likelihood of the label
    return CapabilityAnswers(gold=golds, scores=scores, shots=max(shots) if shots else 0)


def _margin(s: Sequence[float], ref: int) -> float:
    """Log-likelihood of option ``ref`` minus the best other option."""
    return s[ref] - max(v for o, v in enumerate(s) if o != ref)


def general_capability(model, tok, tasks: Mapping[str, Sequence[Mapping]], batch_size: int = 16,
                       show_progress: bool | None = None, reference: CapabilityAnswers | None = None,
                       demos: Mapping[str, Sequence[Mapping]] | None = None) -> dict[str, dict[str, float]]:
    """Accuracy / F1 on GLUE-style tasks and MMLU, scored by label likelihood, and agreement with the unedited model.

    Each item becomes a prompt in the style of the seed code (e.g. ``Review: …
    Sentiment (positive or negative):``) and every label word (" positive"/
    " negative", " yes"/" no", " A"…" D") is scored by its total log-likelihood
    after the prompt; the most likely label is the prediction. Single-token
    labels share one forward pass per item (prefix sharing).

    A 135M model answers some tasks with one label whatever the input, so accuracy
    can stay flat while the model is damaged. With a ``reference`` (the unedited
    model's :func:`capability_answers` on the same items) two measures that move are
    added: ``agreement`` (share of items answered as the unedited model answered) and
    ``margin`` (mean log-likelihood of the unedited model's answer minus the best other
    label, under this model; the unedited model's own value is ``margin_unedited``, and
    ``margin_change`` is the mean per-item |margin − margin_unedited|, which shifts of
    opposite sign cannot cancel).

    Arguments:
        model, tok: a causal LM and its tokenizer.
        tasks: ``{task: items}`` with task in ``sst2, mrpc, cola, rte, nli, mmlu``
            and items in the GLUE / MMLU formats of the shared data (sst2/cola
            ``sentence, label``; mrpc/rte/nli ``sentence1, sentence2, label``;
            mmlu ``question, choices[4], answer``).
        batch_size: sequences per forward pass.
        reference: the unedited model's answers on the same tasks and items (same demos).
        demos: worked examples per task for a few-shot prompt (default zero-shot).

    Returns:
        ``{task: {"acc", "f1" (binary F1 of label 1; macro F1 for mmlu), "mcc" (cola only),
        "n", and with a reference "agreement", "margin", "margin_unedited", "margin_change"}}``.
    """
    if reference is not None:
        for task, items in tasks.items():
            if task not in reference.gold or len(reference.gold[task]) != len(list(items)):
                raise ValueError(f"the reference has no answers for the {len(list(items))} items of task {task!r}; "
                                 "compute it with capability_answers on the same items")
        want = max((len(v) for v in (demos or {}).values()), default=0)
        if reference.shots != want:
            raise ValueError(f"the reference was scored {reference.shots}-shot, this call is {want}-shot")
    return capability_scores(capability_answers(model, tok, tasks, batch_size, demos, show_progress), reference)


def capability_scores(ans: CapabilityAnswers, reference: CapabilityAnswers | None = None) -> dict[str, dict[str, float]]:
    """The scores of :func:`general_capability` from answers already computed.

    Arguments:
        ans: a model's :func:`capability_answers`.
        reference: the unedited model's answers on the same items, or None.

    Returns:
        See :func:`general_capability`.
    """
    out: dict[str, dict[str, float]] = {}
    for task, gold in ans.gold.items():
        if reference is not None and reference.gold.get(task) != gold:
            raise ValueError(f"task {task!r}: the reference was computed on different items (gold labels differ)")
        pred = ans.predictions(task)
        acc = sum(int(p == g) for p, g in zip(pred, gold)) / len(gold)
        if task == "mmlu":
            row = {"acc": acc, "f1": macro_f1(gold, pred)}
        else:
            # label 1 is the GLUE positive class (positive / paraphrase / acceptable / not_entailment)
            row = {"acc": acc, "f1": binary_f1(gold, pred, 1)}
            if task == "cola":
                row["mcc"] = mcc(gold, pred)
        row["n"] = len(gold)
        if reference is not None:
            ref_pred = reference.predictions(task)
            row["agreement"] = sum(int(p == r) for p, r in zip(pred, ref_pred)) / len(gold)
            row["margin"] = sum(_margin(s, r) for s, r in zip(ans.scores[task], ref_pred)) / len(gold)
            row["margin_unedited"] = sum(_margin(s, r) for s, r in zip(reference.scores[task], ref_pred)) / len(gold)
            # per item |Δ margin|: shifts of opposite sign do not cancel
            row["margin_change"] = sum(abs(_margin(s, r) - _margin(s0, r)) for s, s0, r in
                                       zip(ans.scores[task], reference.scores[task], ref_pred)) / len(gold)
        out[task] = row
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
