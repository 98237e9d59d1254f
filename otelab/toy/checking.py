"""Exercise checking: the ``CheckResult`` a checker returns, its toy problems and its feedback helpers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from otelab.toy.world import ToyConfig, make_world

Tensor = torch.Tensor
TOL = 1e-8


@dataclass
class CheckResult:
    """The outcome of a checker.

    Attributes:
        passed: whether every output matched the reference within 1e-8 (relative).
        max_rel_error: the largest relative error seen (``inf`` for a shape error or exception).
        step: the step where the first mismatch happened (None if it passed).
        message: the feedback line that was printed.
    """

    passed: bool
    max_rel_error: float
    step: Optional[int]
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message


def exercise_world(seed: int = 0, **over):
    cfg = ToyConfig(d_o=7, d_i=12, n0=40, r=4, n=3, T=5, k0_tail=0.1, edit_tail=0.3,
                    threshold=0.05, lam=0.1, mu=10.0, seed=seed)
    return make_world(cfg, **over)


def rel_error(x: Tensor, y: Tensor) -> float:
    return float((x - y).norm() / y.norm().clamp_min(1e-300))


def _done(res: CheckResult) -> CheckResult:
    print(res.message)
    return res


def _fail_shape(what: str, got, want: tuple, step: int) -> CheckResult:
    got_shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
    return _done(CheckResult(False, float("inf"), step,
                             f"✗ {what} at step {step} has shape {got_shape}; expected a tensor of shape "
                             f"{list(want)}"))


def call_learner(fn: Callable, step: int, *args, **kwargs):
    try:
        return fn(*args, **kwargs), None
    except Exception as err:  # the learner's code: report any failure as feedback
        return None, _done(CheckResult(False, float("inf"), step,
                                       f"✗ your function raised {type(err).__name__} at step {step}: {err}"))


def unpack_outputs(out, names: tuple[str, ...], step: int):
    if len(names) == 1:
        return (out,), None
    if not isinstance(out, (tuple, list)) or len(out) != len(names):
        return None, _done(CheckResult(False, float("inf"), step,
                                       f"✗ your function should return a tuple ({', '.join(names)}); got "
                                       f"{type(out).__name__}"))
    return tuple(out), None


def compare_outputs(outs: tuple, refs: tuple, names: tuple[str, ...], step: int, worst: float,
             hints: list[tuple[str, tuple]]):
    """Check shapes, then values; on a mismatch look for the matching classic mistake."""
    for o, r, n in zip(outs, refs, names):
        if not isinstance(o, Tensor) or tuple(o.shape) != tuple(r.shape):
            return worst, _fail_shape(n, o, tuple(r.shape), step)
    errs = [rel_error(o.to(r), r) for o, r in zip(outs, refs)]
    worst = max(worst, *errs)
    if worst <= TOL:
        return worst, None
    bad = names[max(range(len(errs)), key=errs.__getitem__)]
    hint = ""
    for text, wrong in hints:
        pairs = [(o, w) for o, w in zip(outs, wrong) if w is not None]
        if pairs and all(rel_error(o.to(w), w) <= 1e-6 for o, w in pairs):
            hint = f"; hint: {text}"
            break
    return worst, _done(CheckResult(False, worst, step,
                                    f"✗ differs: max relative error {worst:.2g} in {bad} at step {step}{hint}"))


def report_match(worst: float, what: str) -> CheckResult:
    # round-off differs between machines; below 1e-12 only the bound is printed
    how = "(max relative error < 1e-12)" if worst < 1e-12 else f"(max relative error {worst:.0e})"
    return _done(CheckResult(True, worst, None, f"✓ {what} matches the reference {how}"))
