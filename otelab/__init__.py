"""otelab: a workbench for sequential knowledge editing (OTE-aligned editing).

The public API, by layer:

- the linear-algebra core (``otelab.ote``): every update rule of the paper, once;
- the synthetic OLS toy (``otelab.toy``);
- models and the editing engine (``otelab.models``, ``otelab.engine``);
- data and evaluation (``otelab.data``, ``otelab.metrics``, ``otelab.drift``, ``otelab.report``);
- the workbench and the demo (``otelab.workbench``, ``otelab.demo``), without their widgets.

The notebook helpers (``otelab.plots``, ``otelab.exercises``, ``otelab.widgets``) are imported
from their modules so that ``import otelab`` stays light.
"""
from otelab.ote import (
    MODES, EditError, Prune, Rect, SequentialEditor, SolveError, aligned_update, alphaedit_update,
    conflict_update, corrected_step, memorize_latest_full, memorize_latest_nullspace, memorize_latest_recentred,
    naive_update,
    nullspace_projector, omitted_term, ote_update, prune, rect, resolve_first, resolve_forget,
    resolve_latest, resolve_mean, rls_init, rls_step, solve_normal, system_matrix,
)
from otelab.requests import EditRequest, RequestError
from otelab.toy import ToyConfig, ToyTrace, ToyWorld, make_world, run_rule
from otelab.models import DEFAULT_PRESET, PRESETS, LoadedModel, Preset, get_preset, load_model, tiny_model
from otelab.corpus import Corpus, get_corpus
from otelab.covariance import get_covariance
from otelab.keys import compute_keys, context_templates
from otelab.values import ValueResult, compute_values
from otelab.engine import METHODS, SESSION_MODES, EditSession, SessionError, StepRecord
from otelab.data import DataError, FactRecord, ZsreRecord, load_counterfact, load_factbank, load_glue, load_probes, load_zsre
from otelab.metrics import Baseline, edit_scores, general_capability
from otelab.drift import LMBaseline, latent_drift, lm_drift, perplexity
from otelab.report import Report, evaluate
from otelab.workbench import Sizes, Workbench, WorkbenchData, WorkbenchError, load_data
from otelab.demo import DemoConfig, run_demo

__version__ = "0.1.0"
