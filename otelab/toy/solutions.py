"""Exercise solutions: the reference code of each exercise, shown only when asked for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

@dataclass(frozen=True, repr=False)
class Solution:
    """The reference solution of one exercise: the code a learner would write, as text.

    Attributes:
        name: the exercise, as in its checker's name (``"eq4"`` for :func:`check_eq4`).
        function: the name the code defines (``"my_eq4"``).
        source: the code, imports included, ready to paste into a cell.
    """

    name: str
    function: str
    source: str

    def define(self) -> Callable:
        """Run the code in a fresh namespace and return the function it defines."""
        namespace: dict = {}
        exec(compile(self.source, f"<solution {self.name}>", "exec"), namespace)
        return namespace[self.function]

    def __str__(self) -> str:
        return self.source

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        # Jupyter shows the code highlighted, as a cell would
        return f"```python\n{self.source}```"


SOLUTIONS = {s.name: s for s in (
    Solution("ote_update", "my_ote", """\
import torch


def my_ote(W0, K, V, C0, lam):
    d_i = K.shape[0]
    A = K @ K.T + lam * torch.eye(d_i, dtype=K.dtype)      # [d_i, d_i]
    if C0 is not None:
        A = A + C0
    B = (V - W0 @ K) @ K.T                                  # [d_o, d_i]
    return torch.linalg.solve(A, B.T).T                     # A symmetric: Δ A = B ⇔ A Δᵀ = Bᵀ
"""),
    Solution("aligned_step", "my_aligned_step", """\
import torch


def my_aligned_step(W, K, V, A_prev, P):
    P = torch.eye(K.shape[0], dtype=K.dtype) if P is None else P
    A = A_prev + K @ K.T @ P                                # [d_i, d_i]
    B = (V - W @ K) @ K.T @ P                               # [d_o, d_i]
    return torch.linalg.solve(A.T, B.T).T, A
"""),
    Solution("prop_a3", "my_corrected_step", """\
from otelab.ote import aligned_update


def my_corrected_step(W, K, V, A_prev, E, post):
    delta, A = aligned_update(W + E, K, V, A_prev)     # the step of the OTE path
    D = delta + E                                      # what should be applied
    applied = post(D)
    return applied, A, D - applied                     # carry what the operator removed
"""),
    Solution("eq4", "my_eq4", """\
import torch


def my_eq4(W, K, V, S, P, C0, lam):
    I = torch.eye(W.shape[1], dtype=W.dtype)
    A = (C0 + K @ K.T) @ P + lam * I                       # [d_i, d_i]
    B = (V - W @ K) @ K.T @ P - S @ C0 @ P                 # [d_o, d_i]
    return torch.linalg.solve(A.T, B.T).T                  # Δ A = B  ⇔  Aᵀ Δᵀ = Bᵀ
"""),
    Solution("conflict_step", "my_revalue", """\
import torch


def my_revalue(W, A_prev, K, V_old, V_new, P):
    B = (V_new - V_old) @ K.T                          # [d_o, d_i]
    if P is not None:
        B = B @ P
    return torch.linalg.solve(A_prev.T, B.T).T         # Δ A = B
"""),
)}


def solution(name: str) -> Solution:
    """The reference solution of an exercise, for when the checker's hints are not enough.

    In a notebook, a cell ending in ``solution("eq4")`` shows the code; nothing is shown
    until it is called, so the solution does not sit under the exercise.

    Arguments:
        name: the exercise: its checker's name without ``check_`` (a key of :data:`SOLUTIONS`).
    Returns:
        A :class:`Solution` (its ``source``, and ``define()`` for the function itself).
    Raises:
        KeyError: for an unknown name, listing the known ones.
    """
    try:
        return SOLUTIONS[name]
    except KeyError:
        raise KeyError(f"no exercise {name!r}; the exercises are {', '.join(SOLUTIONS)}") from None
