"""Evaluation metrics for knowledge editing (the seed paper's Appendix B / C.5), gathered from their modules.

The metrics are split by concern; this module re-exports their public names,
so ``from otelab.eval.metrics import edit_scores`` and ``M.Baseline`` keep working:

- :mod:`otelab.eval.batching`: tokenising, padding, batched forward passes,
  :class:`ForwardCounter`, the subject's last token.
- :mod:`otelab.eval.scoring`: teacher-forced scoring (:func:`teacher_forced`,
  :func:`target_logprobs`, the mean token log-prob of ``" " + target`` after a
  prompt, as in ROME/MEMIT's CounterFact evaluation).
- :mod:`otelab.eval.edit_scores`: CounterFact-style :func:`edit_scores` (efficacy,
  paraphrase, neighbourhood specificity and their magnitude variants), zsRE token
  accuracy :func:`zsre_scores`, :func:`bootstrap_ci` (percentile bootstrap of a mean).
- :mod:`otelab.eval.fluency`: :func:`ngram_entropy`, :func:`greedy_generate`,
  :func:`generation_fluency`, :func:`tfidf_consistency`.
- :mod:`otelab.eval.capability`: :func:`general_capability` (GLUE-style and MMLU
  prompts, zero- or few-shot, scored by the likelihood of the label words; agreement
  with the unedited model's answers and the log-likelihood margin of its answer).
- :mod:`otelab.eval.baseline`: the unedited reference :class:`Baseline`, cached
  *before* editing, so specificity and drift are always measured against the
  unedited model.

LM drift (Table 7: perplexity, top-1 agreement) and latent drift (Figures 4,
6, 7) live in :mod:`otelab.eval.drift`.
"""
from __future__ import annotations

from otelab.eval.baseline import Baseline, NeighbourStat
from otelab.eval.batching import ForwardCounter
from otelab.eval.capability import (TASKS, CapabilityAnswers, binary_f1, capability_answers, capability_scores,
                                    general_capability, macro_f1, mcc, pick_demonstrations)
from otelab.eval.edit_scores import (bootstrap_ci, coarse_kl, edit_scores, fact_prompts, is_zsre_record, nanmean,
                                     zsre_scores)
from otelab.eval.fluency import generation_fluency, greedy_generate, ngram_entropy, tfidf_consistency
from otelab.eval.records import get_field, record_label
from otelab.eval.scoring import TeacherForced, target_logprobs, teacher_forced

# The former private names that callers outside the evaluation layer still use
# (otelab.workbench.stream reads M._get, M._where, M._fact_pairs, M._nanmean).
_get = get_field
_where = record_label
_fact_pairs = fact_prompts
_nanmean = nanmean

__all__ = [
    "Baseline", "NeighbourStat", "ForwardCounter", "TASKS", "CapabilityAnswers", "binary_f1", "capability_answers",
    "capability_scores", "general_capability", "macro_f1", "mcc", "pick_demonstrations", "bootstrap_ci",
    "coarse_kl", "edit_scores", "fact_prompts", "is_zsre_record", "nanmean", "zsre_scores", "generation_fluency",
    "greedy_generate", "ngram_entropy", "tfidf_consistency", "get_field", "record_label", "TeacherForced",
    "target_logprobs", "teacher_forced",
]
