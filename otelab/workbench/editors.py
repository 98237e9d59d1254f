"""The editors as the workbench offers them: display names, valid modes, session labels; its error type.

:data:`METHOD_NAMES`, :func:`valid_modes`, :func:`_combo_error` and :func:`check_settings` are what the workbench's
dropdowns and settings checks read (:mod:`otelab.views.controls`, :class:`otelab.workbench.bench.Workbench`).
"""
from __future__ import annotations

from typing import Optional

from otelab import ote
from otelab.engine.session import METHODS, SessionError, check_combo

__all__ = ["METHOD_NAMES", "WorkbenchError", "valid_modes", "method_options", "check_settings", "plural", "track_label"]

METHOD_NAMES = ote.DISPLAY_NAMES       # method -> display name, read live from the registry


class WorkbenchError(ValueError):
    """A workbench action that cannot be done (nothing was changed)."""


def valid_modes(method: str, preset=None) -> list[str]:
    """The modes that ``method`` supports, from the registry (:func:`otelab.ote.valid_modes`; [] if unknown).

    ``preset`` is accepted for callers that pass one; validity does not depend on it.
    """
    return ote.valid_modes(method)


def method_options() -> list[tuple[str, str]]:
    """``[(display name, method), ...]`` for every registered method: the editor dropdowns' options."""
    return [(ote.display_name(m), m) for m in ote.methods()]


def _combo_error(method: str, mode: str, preset=None) -> Optional[str]:
    """Why ``(method, mode)`` is not a session configuration (:func:`otelab.engine.session.check_combo`), or None."""
    try:
        check_combo(method, mode)
    except SessionError as err:
        return str(err)
    return None


def plural(n: int, word: str, many: Optional[str] = None) -> str:
    """``"1 edit"``, ``"2 edits"``; ``many`` for irregular plurals (``plural(2, "batch", "batches")``)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def track_label(method: str, mode: str) -> str:
    """``"MEMIT aligned"``: the name a session's curves carry."""
    return f"{METHOD_NAMES.get(method, method)} {mode}"


def check_settings(method: str, mode: str, compare, batch_size, eval_every, preset, n_stream: int) -> None:
    """Raise a :class:`WorkbenchError` naming the first bad workbench setting (nothing is changed).

    Arguments:
        method, mode: session A's editor; compare: session B's ``(method, mode)`` or None.
        batch_size, eval_every: as for :class:`otelab.workbench.bench.Workbench`.
        preset: the model's preset (checked against each editor).
        n_stream: records in the request stream.
    """
    for m, md in [(method, mode)] + ([tuple(compare)] if compare else []):
        if m not in METHODS:
            raise WorkbenchError(f"unknown method {m!r}; choose one of {', '.join(METHODS)}")
        err = _combo_error(m, md, preset)
        if err:
            raise WorkbenchError(err)
    if compare is not None and len(tuple(compare)) != 2:
        raise WorkbenchError(f"compare must be a (method, mode) pair, got {compare!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise WorkbenchError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size > n_stream:
        raise WorkbenchError(f"batch_size {batch_size} exceeds the stream's {n_stream} records")
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 0:
        raise WorkbenchError(f"eval_every must be an integer >= 0, got {eval_every!r}")
