"""The editing engine: keys, values (and the value bank), the preserved covariance, the layer-wise replay and
``EditSession`` (one core ``SequentialEditor`` per edited layer, undo/reset/save/load)."""
from otelab.engine.covariance import get_covariance
from otelab.engine.keys import compute_keys, context_templates
from otelab.engine.session import METHODS, SESSION_MODES, EditSession, SessionError, StepRecord
from otelab.engine.values import ValueResult, compute_values

__all__ = [
    "get_covariance", "compute_keys", "context_templates", "METHODS", "SESSION_MODES", "EditSession",
    "SessionError", "StepRecord", "ValueResult", "compute_values",
]
