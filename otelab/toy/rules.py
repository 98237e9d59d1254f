"""The toy's editing rules: a table of named :class:`otelab.ote.SequentialEditor` factories, each with the
task whose one-time edit it should track; post-processing rules come from the editor registry."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from otelab.ote import EDITORS, SequentialEditor, resolve_first, resolve_forget, resolve_latest, resolve_mean

if TYPE_CHECKING:
    from otelab.toy.world import ToyWorld

__all__ = ["RULES", "rules", "TASKS"]


# --------------------------------------------------------------------------- the rules

TASKS = ("all", "latest", "resolved")


def _ed(mode: str, use_P: bool, use_C0: bool, **kw) -> Callable[[ToyWorld], SequentialEditor]:
    def factory(world: ToyWorld) -> SequentialEditor:
        post = kw.get("post")
        extra = {k: v for k, v in kw.items() if k != "post"}
        return SequentialEditor(world.cfg.d_i, mode, P=world.P if use_P else None,
                                C0=world.C0w if use_C0 else None, lam=world.cfg.lam,
                                post=post(world) if post else None, **extra)
    return factory


def _post_rule(method: str, correct: bool, **options) -> tuple[Callable[[ToyWorld], SequentialEditor], str]:
    """A rule with the post-processing operator of registry row ``method`` (:data:`otelab.ote.EDITORS`)
    on OTE-aligned steps that keep ``C0``: Algorithm 1 when ``correct``, else the operator on each step.

    Arguments:
        method: a row with a ``post`` factory; correct: error correction on;
        options: the row's options to override (``rect_keep=0.4``).
    Returns:
        ``(editor factory, "all")``, a :data:`RULES` entry.
    """
    def post(world: ToyWorld):
        spec = EDITORS[method]
        return spec.post(world.W0, **{**spec.options, **options})
    return _ed("aligned", False, True, post=post, correct=correct), "all"


# name -> (editor factory, the task whose OTE the rule should track).
# A toy name is not an engine mode: toy "prune"/"rect" apply the operator to each step WITHOUT
# error correction (the engine's "prune:no-ec"), "prune-corrected" is Algorithm 1 (the engine's
# "prune:aligned"). Their operators come from the registry (RECT keeps its default 20 %, the
# paper's "stronger" RECT-20 % of Table 6; "rect40" the seed code's naive 40 %).
RULES: dict[str, tuple[Callable[[ToyWorld], SequentialEditor], str]] = {
    "memit": (_ed("aligned", False, True), "all"),                        # sequential MEMIT, OTE-aligned
    "alphaedit": (_ed("aligned", True, False), "all"),                    # AlphaEdit (Eq. 2)
    "naive": (_ed("naive", False, True), "all"),                          # repeated one-time edit
    "memorize-nullspace": (_ed("memorize-nullspace", True, False), "latest"),   # Eq. 3
    "memorize-full": (_ed("memorize-full", True, True), "latest"),        # Eq. 4 as printed
    "memorize-recentred": (_ed("memorize-recentred", True, True), "latest"),  # Eq. 32: OTE of the latest task
    "memorize-conflict": (_ed("conflict", True, True, resolve=resolve_forget), "latest"),  # Eq. 31
    "conflict-latest": (_ed("conflict", False, True, resolve=resolve_latest), "resolved"),
    "conflict-first": (_ed("conflict", False, True, resolve=resolve_first), "resolved"),
    "conflict-mean": (_ed("conflict", False, True, resolve=resolve_mean), "resolved"),
    "rls": (_ed("rls", False, True), "all"),                              # RLSEdit
    "prune": _post_rule("prune", correct=False),
    "prune-corrected": _post_rule("prune", correct=True),
    "rect": _post_rule("rect", correct=False),
    "rect-corrected": _post_rule("rect", correct=True),
    "rect40": _post_rule("rect", correct=False, rect_keep=0.4),
    "rect40-corrected": _post_rule("rect", correct=True, rect_keep=0.4),
}


def rules() -> dict[str, tuple[Callable[[ToyWorld], SequentialEditor], str]]:
    """Every toy rule: :data:`RULES`, plus two for each registry row with a post-processing
    operator that :data:`RULES` does not name: ``<method>`` (uncorrected) and ``<method>-corrected``
    (Algorithm 1), read live so that a row added by :func:`otelab.ote.register_editor` is a rule at once.

    Returns:
        ``{name: (editor factory, task)}``.
    """
    out = dict(RULES)
    for method, spec in EDITORS.items():
        if spec.post is not None and method not in out:
            out[method] = _post_rule(method, correct=False)
            out[f"{method}-corrected"] = _post_rule(method, correct=True)
    return out

_MODE_TASK = {"aligned": "all", "naive": "all", "rls": "all", "memorize-nullspace": "latest",
              "memorize-full": "latest", "memorize-recentred": "latest", "conflict": "resolved"}
