"""Evaluation: edit scores, fluency, general capability, PPL / top-1 and latent drift, the per-step ``Report``;
one measurement and one vocabulary of metric names (:mod:`otelab.eval.measure`).

The evaluation layer never imports the views, the workbench or the demo.
"""
from otelab.eval.drift import LMBaseline, latent_drift, lm_drift, perplexity
from otelab.eval.baseline import Baseline
from otelab.eval.capability import general_capability
from otelab.eval.edit_scores import edit_scores
from otelab.eval.report import Report
from otelab.eval.measure import METRICS, measure, metric

__all__ = ["LMBaseline", "latent_drift", "lm_drift", "perplexity", "Baseline", "edit_scores", "general_capability",
           "Report", "METRICS", "measure", "metric"]
