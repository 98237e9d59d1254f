"""The unedited reference: what the model says before any edit, cached once.

Specificity, out-of-scope accuracy, LM drift and latent drift compare the edited
model with these cached numbers, never with the model being edited. The
:class:`Baseline` sits above the metrics and drift: it imports them, they never
import it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch

from otelab.eval.drift import LatentBaseline, LMBaseline
from otelab.eval.edit_scores import fact_prompts, is_zsre_record, zsre_loc_prompt
from otelab.eval.records import get_field, record_label
from otelab.eval.scoring import teacher_forced


def _topk_summary(k: int) -> Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor, int]]:
    """first_hook for :func:`teacher_forced`: keep the top-``k`` log-probs, their ids and the top-1 token."""
    def hook(i: int, lp: torch.Tensor):  # lp: [V] log-probs
        v, idx = lp.topk(min(k, lp.shape[0]))
        return v.cpu(), idx.cpu(), int(lp.argmax())
    return hook


@dataclass
class NeighbourStat:
    """What the unedited model says on one neighbourhood prompt."""

    lp_new: float
    lp_true: float
    top1: int
    topk_logprobs: torch.Tensor  # [k]
    topk_ids: torch.Tensor  # [k]


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
            kl_topk: tokens kept per neighbourhood distribution (see :func:`otelab.eval.edit_scores.coarse_kl`).

        Returns:
            A :class:`Baseline`.
        """
        records = list(records)
        base = cls(kl_topk=kl_topk)
        prompts, targets, keys = [], [], []
        seen: set[tuple[str, str, str]] = set()
        z_prompts, z_targets = [], []
        for i, rec in enumerate(records):
            where = record_label(rec, i)
            if is_zsre_record(rec):
                z_prompts.append(zsre_loc_prompt(get_field(rec, "loc", where=where)))
                z_targets.append(get_field(rec, "loc_ans", where=where))
                continue
            f = fact_prompts(rec, where)
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
            base.lm = LMBaseline.compute(model, tok, texts, max_len=max_len, batch_size=lm_batch_size,
                                         show_progress=show_progress)
        if latent_layer is not None:
            base.latent = LatentBaseline.compute(model, tok, latent_records if latent_records is not None else records,
                                                 latent_layer, batch_size=batch_size)
        return base

    def state(self) -> dict[str, Any]:
        """Plain containers and tensors (``torch.load(weights_only=True)`` reads them back; see :meth:`from_state`)."""
        keys = list(self.neighbourhood)
        stats = [self.neighbourhood[k] for k in keys]
        return {
            "kl_topk": int(self.kl_topk),
            "neighbour_keys": [tuple(k) for k in keys],
            "neighbour_lp": torch.tensor([[st.lp_new, st.lp_true] for st in stats], dtype=torch.float64).reshape(-1, 2),
            "neighbour_top1": [int(st.top1) for st in stats],
            "neighbour_topk_logprobs": [st.topk_logprobs for st in stats],
            "neighbour_topk_ids": [st.topk_ids for st in stats],
            "zsre_loc": [(k[0], k[1], list(v)) for k, v in self.zsre_loc.items()],
            "lm": self.lm.state() if self.lm is not None else None,
            "latent": self.latent.state() if self.latent is not None else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], latent_records: Sequence[Any] = ()) -> "Baseline":
        """The :class:`Baseline` of :meth:`state`; ``latent_records`` are the records its latent states were taken on."""
        base = cls(kl_topk=state["kl_topk"])
        for j, key in enumerate(state["neighbour_keys"]):
            lp_new, lp_true = state["neighbour_lp"][j].tolist()
            base.neighbourhood[tuple(key)] = NeighbourStat(lp_new, lp_true, state["neighbour_top1"][j],
                                                           state["neighbour_topk_logprobs"][j],
                                                           state["neighbour_topk_ids"][j])
        base.zsre_loc = {(p, t): list(v) for p, t, v in state["zsre_loc"]}
        base.lm = LMBaseline.from_state(state["lm"]) if state["lm"] is not None else None
        base.latent = LatentBaseline.from_state(state["latent"], latent_records) if state["latent"] is not None else None
        return base

    def neighbour(self, key: tuple[str, str, str]) -> NeighbourStat:
        try:
            return self.neighbourhood[key]
        except KeyError:
            raise KeyError(f"the baseline has no unedited outputs for neighbourhood prompt {key[0]!r} "
                           f"(targets {key[1]!r}/{key[2]!r}); compute the Baseline on these records "
                           "before editing") from None
