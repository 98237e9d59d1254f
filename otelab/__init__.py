"""otelab: a workbench for sequential knowledge editing (OTE-aligned editing)."""
from otelab.ote import (
    MODES, EditError, Prune, Rect, SequentialEditor, SolveError, aligned_update, alphaedit_update,
    conflict_update, corrected_step, memorize_latest_full, memorize_latest_nullspace, naive_update,
    nullspace_projector, omitted_term, ote_update, prune, rect, resolve_first, resolve_forget,
    resolve_latest, resolve_mean, rls_init, rls_step, solve_normal, system_matrix,
)
from otelab.requests import EditRequest, RequestError

__version__ = "0.1.0"
