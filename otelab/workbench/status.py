"""The workbench's one-line texts: where the stream stands, where the values come from, when the UMAP comes."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

from otelab.workbench.editors import plural

if TYPE_CHECKING:
    from otelab.workbench.bench import Workbench

__all__ = ["status_line", "values_note", "umap_note"]


def status_line(wb: "Workbench") -> str:
    """``"step 2 · 4 edits · last step 31.2 s: edit 2.1 s (MEMIT aligned 1.0 s, MEMIT naive 1.1 s),
    evaluation 29.1 s · 2 steps left"``.

    The last step's wall time splits into the edits (per session) and the evaluation (the
    metrics, UMAP; with banked values also fetching them), which is usually most of it.
    """
    parts = [f"step {wb.n_steps}", plural(wb.n_edits, "edit")]
    total = wb.last_step_seconds
    if wb.n_steps and total is not None and all(t.step_seconds for t in wb.tracks):
        edit = sum(t.step_seconds[-1] for t in wb.tracks)
        each = (" (" + ", ".join(f"{t.label} {t.step_seconds[-1]:.1f} s" for t in wb.tracks) + ")"
                if len(wb.tracks) > 1 else "")
        parts.append(f"last step {total:.1f} s: edit {edit:.1f} s{each}, evaluation {total - edit:.1f} s")
    parts.append(f"{plural(wb.steps_left, 'step')} left")
    return " · ".join(parts)


def values_note(values: Optional[Any], stream: Sequence[Any]) -> tuple[str, bool]:
    """``(one line on where the target values come from, whether the whole stream is covered)``.

    Arguments:
        values: the workbench's value provider (``None``: optimised inside every step).
        stream: the workbench's records (``.request()`` gives each edit request).
    """
    if values is None:
        return "values: optimised inside every step (slow)", True
    note = getattr(values, "note", None)
    if note is None:
        return "values: from the given provider", True
    return note([r.request() for r in stream])


def umap_note(has_states: bool, eval_every: int, n_steps: int) -> str:
    """The latent panel's text while it has no UMAP: the step that draws one, or why none will.

    Arguments:
        has_states: whether the workbench measures subject states at all.
        eval_every: steps between slow evaluations (0: never).
        n_steps: steps made so far.

    Examples:
        >>> umap_note(True, 3, 4)
        'the UMAP appears after step 6<br>(slow evaluations every 3 steps)'
    """
    if not has_states:
        return "no UMAP: this workbench<br>measures no subject states"
    if eval_every <= 0:
        return "no UMAP: slow evaluations are off<br>(eval every 0, as in replay mode)"
    due = (n_steps // eval_every + 1) * eval_every
    return f"the UMAP appears after step {due}<br>(slow evaluations every {eval_every} steps)"
