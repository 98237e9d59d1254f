"""otelab: a workbench for sequential knowledge editing (OTE-aligned editing).

The public API, by layer:

- the linear-algebra core (``otelab.ote``): every update rule of the paper, once;
- the synthetic OLS toy (``otelab.toy.world``);
- models and the editing engine (``otelab.models.loading``, ``otelab.engine.session``);
- data and evaluation (``otelab.data.loaders``, ``otelab.eval.metrics``, ``otelab.eval.drift``, ``otelab.eval.report``);
- the workbench and the demo (``otelab.workbench.bench``, ``otelab.demo.run``), without their widgets.

The notebook helpers (``otelab.toy.plots``, ``otelab.toy.exercises``, ``otelab.views.widgets``) are imported
from their modules so that ``import otelab`` stays light.
"""
from otelab.ote import (
    MODES, EditError, Prune, Rect, SequentialEditor, SolveError, aligned_update, alphaedit_update,
    conflict_update, corrected_step, memorize_latest_full, memorize_latest_nullspace, memorize_latest_recentred,
    naive_update,
    nullspace_projector, omitted_term, ote_update, prune, rect, resolve_first, resolve_forget,
    resolve_latest, resolve_mean, rls_init, rls_step, solve_normal, system_matrix,
)
from otelab.data.requests import EditRequest, RequestError
from otelab.toy.world import ToyConfig, ToyTrace, ToyWorld, make_world, run_rule
from otelab.models.loading import DEFAULT_PRESET, PRESETS, LoadedModel, Preset, get_preset, load_model, tiny_model
from otelab.data.corpus import Corpus, get_corpus
from otelab.engine.covariance import get_covariance
from otelab.engine.keys import compute_keys, context_templates
from otelab.engine.values import ValueResult, compute_values
from otelab.engine.session import METHODS, SESSION_MODES, EditSession, SessionError, StepRecord
from otelab.data.loaders import DataError, FactRecord, ZsreRecord, load_counterfact, load_factbank, load_glue, load_probes, load_zsre
from otelab.eval.metrics import Baseline, edit_scores, general_capability
from otelab.eval.drift import LMBaseline, latent_drift, lm_drift, perplexity
from otelab.eval.report import Report
from otelab.eval.measure import METRICS, evaluate, measure
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("otelab")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "MODES", "EditError", "Prune", "Rect", "SequentialEditor", "SolveError", "aligned_update", "alphaedit_update",
    "conflict_update", "corrected_step", "memorize_latest_full", "memorize_latest_nullspace",
    "memorize_latest_recentred", "naive_update", "nullspace_projector", "omitted_term", "ote_update", "prune", "rect",
    "resolve_first", "resolve_forget", "resolve_latest", "resolve_mean", "rls_init", "rls_step", "solve_normal",
    "system_matrix",
    "EditRequest", "RequestError", "ToyConfig", "ToyTrace", "ToyWorld", "make_world", "run_rule",
    "DEFAULT_PRESET", "PRESETS", "LoadedModel", "Preset", "get_preset", "load_model", "tiny_model",
    "Corpus", "get_corpus", "get_covariance", "compute_keys", "context_templates", "ValueResult", "compute_values",
    "METHODS", "SESSION_MODES", "EditSession", "SessionError", "StepRecord",
    "DataError", "FactRecord", "ZsreRecord", "load_counterfact", "load_factbank", "load_glue", "load_probes",
    "load_zsre", "Baseline", "edit_scores", "general_capability", "LMBaseline", "latent_drift", "lm_drift",
    "perplexity", "Report", "METRICS", "measure", "evaluate", "__version__",
]
