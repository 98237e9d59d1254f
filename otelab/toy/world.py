r"""The synthetic least-squares world: one linear layer, a preserved key set, a stream of edits.

The toy strips a locate-and-edit method down to its algebra. ``W0 [d_o, d_i]``
is the unedited layer; the preserved keys ``K0 [d_i, n0]`` have ``r`` strong
directions (singular values ``logspace(0, -1)``) plus a weak isotropic tail, so
``C0 = K0 K0ᵀ`` has an *approximate* null space (the tail) that AlphaEdit's
projector keeps. Edit keys share the strong directions but carry a larger tail,
so edits live partly in that approximate null space: exactly where the
null-space shortcut of memorize-the-latest (Eq. 3) silently damages ``K0``.

Every rule is a :class:`otelab.ote.SequentialEditor`; :func:`run_rule` runs one
over the stream and records, per step, the numbers the notebooks plot.
Everything is float64 and seeded by ``ToyConfig.seed``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Hashable, Optional, Union

import torch

from otelab.ote import (
    EDITORS, EditError, SequentialEditor, nullspace_projector, omitted_term, ote_update,
    resolve_first, resolve_forget, resolve_latest, resolve_mean,
)

Tensor = torch.Tensor

__all__ = ["ToyConfig", "ToyWorld", "ToyTrace", "make_world", "run_rule", "RULES", "rules", "TASKS",
           "collapse_summary", "collapse_sweep", "forgetting_table"]


# --------------------------------------------------------------------------- the world

@dataclass(frozen=True)
class ToyConfig:
    """Everything that defines a toy world; the same config always gives the same world.

    Arguments:
        d_o, d_i: output and input width of the edited layer.
        n0: number of preserved keys.
        r: number of strong directions of the preserved keys.
        top, bottom: the strong singular values are ``logspace(top, bottom, r)`` (base 10).
        k0_tail: std of the isotropic tail of the preserved keys.
        edit_tail: std of the isotropic tail of the edit keys (larger: edits reach
            into the approximate null space).
        n: keys per edit batch; T: number of batches.
        value_noise: targets are ``V_t = W0 K_t + value_noise · N`` with ``N`` scaled
            to the size of ``W0 K_t`` (1.0: the new value is as far from the old as the old is from 0).
        conflict_frac: fraction of batches after the first that re-edit earlier keys.
        conflict_keys: how many keys of such a batch are re-edits (the rest are new).
        threshold: eigenvalue cut-off of the null-space projector on the *mean* covariance ``K0K0ᵀ/n0``.
        lam: Tikhonov weight λ of every rule.
        mu: rules that keep the preserved term use ``C0 = mu · K0K0ᵀ / n0``.
        seed: seed of the ``torch.Generator`` everything is drawn from.
    """

    d_o: int = 128
    d_i: int = 256
    n0: int = 2000
    r: int = 64
    top: float = 0.0
    bottom: float = -1.0
    k0_tail: float = 0.1
    edit_tail: float = 0.3
    n: int = 1
    T: int = 200
    value_noise: float = 1.0
    conflict_frac: float = 0.0
    conflict_keys: int = 1
    threshold: float = 0.05
    lam: float = 0.01
    mu: float = 100.0
    seed: int = 0

    def __post_init__(self):
        for name in ("d_o", "d_i", "n0", "r", "n", "T"):
            if int(getattr(self, name)) < 1:
                raise EditError(f"ToyConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.r > self.d_i:
            raise EditError(f"ToyConfig.r = {self.r} exceeds d_i = {self.d_i}")
        if not 0 <= self.conflict_frac <= 1:
            raise EditError(f"ToyConfig.conflict_frac must be in [0, 1], got {self.conflict_frac}")
        if self.conflict_frac > 0 and not 1 <= self.conflict_keys <= self.n:
            raise EditError(f"ToyConfig.conflict_keys must be in [1, n = {self.n}], got {self.conflict_keys}")
        if self.lam < 0 or self.mu < 0:
            raise EditError(f"ToyConfig.lam and mu must be ≥ 0, got lam={self.lam}, mu={self.mu}")


@dataclass
class ToyWorld:
    """A drawn toy world (see :func:`make_world`).

    Attributes:
        cfg: the config it was drawn from.
        W0: ``[d_o, d_i]``; K0: ``[d_i, n0]``; V0 = W0 K0 ``[d_o, n0]``.
        C0: the raw second moment ``K0 K0ᵀ`` ``[d_i, d_i]``.
        C0w: the weighted ``mu · K0K0ᵀ/n0`` used by rules that keep the preserved term.
        P: the null-space projector of ``K0K0ᵀ/n0`` at ``cfg.threshold``.
        batches: ``T`` tuples ``(K_t [d_i, n], V_t [d_o, n], ids_t)``; a repeated id is a re-edit.
    """

    cfg: ToyConfig
    W0: Tensor
    K0: Tensor
    V0: Tensor
    C0: Tensor
    C0w: Tensor
    P: Tensor
    batches: list = field(repr=False)

    @property
    def null_dims(self) -> int:
        """Rank of the projector: the dimension of the approximate null space."""
        return int(round(float(torch.trace(self.P))))

    @property
    def leak(self) -> float:
        """Fraction of the preserved keys' energy inside the projector's range, ``tr(P C0) / tr(C0)``.

        Zero for an exact null space; what Eq. 3 can damage.
        """
        return float(torch.trace(self.P @ self.C0) / torch.trace(self.C0))

    def __repr__(self) -> str:
        c = self.cfg
        return (f"ToyWorld(d_o={c.d_o}, d_i={c.d_i}, n0={c.n0}, T={len(self.batches)}, n={c.n}, "
                f"null_dims={self.null_dims}, seed={c.seed})")


def make_world(cfg: Optional[ToyConfig] = None, **overrides) -> ToyWorld:
    """Draw the toy world of ``cfg`` (defaults: notebook 01's memorize-the-latest toy).

    Arguments:
        cfg: a :class:`ToyConfig`; keyword overrides replace its fields.
    Returns:
        A :class:`ToyWorld`, float64, fully determined by ``cfg``.
    """
    cfg = replace(cfg or ToyConfig(), **overrides)
    g = torch.Generator().manual_seed(int(cfg.seed))
    f64 = dict(dtype=torch.float64, generator=g)
    d_o, d_i = cfg.d_o, cfg.d_i
    W0 = torch.randn(d_o, d_i, **f64) / math.sqrt(d_i)                    # [d_o, d_i]
    U, _ = torch.linalg.qr(torch.randn(d_i, d_i, **f64))                   # random orthonormal basis
    Ur = U[:, : cfg.r]                                                     # [d_i, r] strong directions
    s = torch.logspace(cfg.top, cfg.bottom, cfg.r, dtype=torch.float64)    # [r]

    def keys(m: int, tail: float) -> Tensor:
        return Ur @ (s[:, None] * torch.randn(cfg.r, m, **f64)) + tail * torch.randn(d_i, m, **f64)

    K0 = keys(cfg.n0, cfg.k0_tail)                                         # [d_i, n0]
    V0 = W0 @ K0                                                           # [d_o, n0]
    C0 = K0 @ K0.T                                                         # [d_i, d_i]
    C0 = (C0 + C0.T) / 2
    C0w = cfg.mu * C0 / cfg.n0
    P = nullspace_projector(C0 / cfg.n0, cfg.threshold)

    def values(K: Tensor) -> Tensor:
        old = W0 @ K                                                       # [d_o, m]
        noise = torch.randn(old.shape, **f64)
        return old + cfg.value_noise * noise * (old.norm() / noise.norm())

    batches, seen, next_id = [], [], 0
    edited: dict[int, Tensor] = {}                                         # id -> key [d_i]
    for t in range(cfg.T):
        n_re = 0
        if t > 0 and cfg.conflict_frac > 0 and float(torch.rand(1, generator=g)) < cfg.conflict_frac:
            n_re = min(cfg.conflict_keys, len(seen))
        re_ids = [seen[int(i)] for i in torch.randperm(len(seen), generator=g)[:n_re]]
        K_new = keys(cfg.n - n_re, cfg.edit_tail)                          # [d_i, n - n_re]
        new_ids = list(range(next_id, next_id + K_new.shape[1]))
        next_id += K_new.shape[1]
        for j, i in enumerate(new_ids):
            edited[i] = K_new[:, j]
        K = torch.cat([torch.stack([edited[i] for i in re_ids], 1) if re_ids else K_new[:, :0], K_new], 1)
        batches.append((K, values(K), re_ids + new_ids))
        seen += new_ids
    return ToyWorld(cfg, W0, K0, V0, C0, C0w, P, batches)


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


# --------------------------------------------------------------------------- the trace

METRICS = ("preserved_error", "edits_error", "latest_error", "delta_norm", "cond", "ote_distance",
           "virtual_ote_distance", "omitted_norm", "error_norm")


@dataclass
class ToyTrace:
    """Per-step metrics of one rule on one world (index i is after step i + 1).

    Attributes:
        rule: the rule's name; task: the task whose OTE ``ote_distance`` compares with.
        preserved_error: ``‖W_t K0 − V0‖ / ‖V0‖``.
        edits_error: ``‖W_t K − V‖ / ‖V‖`` over every edited key at its latest requested value.
        latest_error: the same over the latest batch.
        delta_norm: ``‖W_t − W0‖_F``.
        cond: condition number of ``W_t`` (NaN on steps where it was not computed).
        ote_distance: ``‖W_t − W_OTE,t‖ / ‖W_OTE,t − W0‖`` for the rule's task.
        virtual_ote_distance: the same for ``W_t + E_t`` (Algorithm 1's virtual weights, Prop. A.3);
            NaN unless the editor carries an error ``E``.
        omitted_norm: ``‖S_t C0 P‖`` with ``S_t = W_t − W0``, the term Eq. 3 drops from Eq. 4
            (memorize rules only; NaN otherwise).
        error_norm: ``‖E_t‖_F``, Algorithm 1's carried error (NaN unless the editor carries one).
        W_final: ``W_T`` ``[d_o, d_i]``.
    """

    rule: str
    task: str
    preserved_error: list = field(default_factory=list)
    edits_error: list = field(default_factory=list)
    latest_error: list = field(default_factory=list)
    delta_norm: list = field(default_factory=list)
    cond: list = field(default_factory=list)
    ote_distance: list = field(default_factory=list)
    virtual_ote_distance: list = field(default_factory=list)
    omitted_norm: list = field(default_factory=list)
    error_norm: list = field(default_factory=list)
    W_final: Optional[Tensor] = field(default=None, repr=False)

    @property
    def steps(self) -> list[int]:
        return list(range(1, len(self.preserved_error) + 1))

    def to_dict(self) -> dict[str, list]:
        """``{"step": [...], metric: [...]}``, plain floats."""
        return {"step": self.steps, **{m: list(getattr(self, m)) for m in METRICS}}

    def to_frame(self):
        """The trace as a pandas DataFrame, one row per step, with ``rule`` and ``task`` columns."""
        import pandas as pd

        df = pd.DataFrame(self.to_dict())
        df.insert(0, "rule", self.rule)
        df.insert(1, "task", self.task)
        return df

    def at(self, metric: str, step: int) -> float:
        """The value of ``metric`` after ``step`` (1-based)."""
        return getattr(self, metric)[step - 1]


def _rel(num: Tensor, den: Tensor) -> float:
    return float(num.norm() / den.norm().clamp_min(torch.finfo(den.dtype).tiny))


def run_rule(world: ToyWorld, rule: Union[str, Callable[[ToyWorld], SequentialEditor]], *,
             name: Optional[str] = None, task: Optional[str] = None, T: Optional[int] = None,
             cond_every: int = 10, ote_every: int = 1, progress: bool = False) -> ToyTrace:
    """Run one rule over the world's edit stream and record the per-step metrics.

    Arguments:
        world: from :func:`make_world`.
        rule: a name in :func:`rules` (:data:`RULES` and the registry's post-processing editors),
            or a factory ``world -> SequentialEditor``.
        name: label of the trace (defaults to the rule's name).
        task: which OTE to compare with: ``"all"`` edits so far, the ``"latest"`` batch,
            or the ``"resolved"`` active set (conflict mode); inferred from the editor's mode.
        T: run only the first ``T`` batches.
        cond_every: compute ``cond(W_t)`` every this many steps (and at the last); 0: never.
        ote_every: compute the OTE distance and the omitted-term norm every this many
            steps (and at the first and last; NaN elsewhere).
        progress: show a tqdm bar.
    Returns:
        A :class:`ToyTrace`.
    """
    forget_previous = False
    if isinstance(rule, str):
        known = rules()
        if rule not in known:
            raise EditError(f"unknown toy rule {rule!r}; expected one of {sorted(known)} or a factory")
        factory, default_task = known[rule]
        forget_previous = rule == "memorize-conflict"
        name = name or rule
    else:
        factory, default_task = rule, None
        name = name or getattr(rule, "__name__", "custom")
    editor = factory(world)
    task = task or default_task or _MODE_TASK[editor.mode]
    if task not in TASKS:
        raise EditError(f"unknown task {task!r}; expected one of {TASKS}")
    batches = world.batches[: T if T is not None else len(world.batches)]
    W0 = world.W0
    # The objective whose OTE the rule should track. Eq. 3 drops C0 from its solve
    # but is meant to approximate the full task, so it is compared with the full OTE.
    P, lam = editor.P, editor.lam
    C0 = editor.C0 if editor.C0 is not None or editor.mode != "memorize-nullspace" else world.C0w
    memorize = editor.mode.startswith("memorize") or forget_previous
    trace = ToyTrace(name, task)
    V0_norm = world.V0.norm()
    latest: dict[Hashable, tuple[Tensor, Tensor]] = {}        # id -> (k, latest requested v)
    allK, allV = [], []
    W = W0.clone()
    it = batches
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(batches, desc=name, leave=False)
    for t, (K, V, ids) in enumerate(it, start=1):
        delta = torch.zeros_like(W)
        if forget_previous and t > 1:
            prev = world.batches[t - 2][2]
            # a key re-edited in this batch is dropped here and comes back with its new value
            delta = editor.forget([i for i in prev if i in editor.keys], W)
            W = W + delta
        if editor.mode == "conflict":
            d = editor.step(K, V, W, ids=ids)
        else:
            d = editor.step(K, V, W)
        W = W + d
        for j, i in enumerate(ids):
            latest[i] = (K[:, j], V[:, j])
        allK.append(K), allV.append(V)
        last = t == len(batches)

        D = W - W0                                              # [d_o, d_i]
        # ‖D K0‖² = tr(D C0 Dᵀ): cheaper than forming D K0 [d_o, n0]
        trace.preserved_error.append(math.sqrt(max(float((D @ world.C0 * D).sum()), 0.0)) / float(V0_norm))
        Ke = torch.stack([k for k, _ in latest.values()], 1)   # [d_i, m]
        Ve = torch.stack([v for _, v in latest.values()], 1)   # [d_o, m]
        trace.edits_error.append(_rel(W @ Ke - Ve, Ve))
        trace.latest_error.append(_rel(W @ K - V, V))
        trace.delta_norm.append(float(D.norm()))
        trace.error_norm.append(float(editor.E.norm()) if editor.E is not None else float("nan"))
        want_cond = cond_every and (t % cond_every == 0 or last or t == 1)
        if want_cond:
            sv = torch.linalg.svdvals(W)
            trace.cond.append(float(sv[0] / sv[-1]))
        else:
            trace.cond.append(float("nan"))
        if t % ote_every == 0 or last or t == 1:
            if task == "all":
                Kt, Vt = torch.cat(allK, 1), torch.cat(allV, 1)
            elif task == "latest":
                Kt, Vt = K, V
            else:
                Kt = torch.stack([k for k, _ in editor.keys.values()], 1)
                Vt = torch.stack([v for _, v in editor.keys.values()], 1)
            W_ote = W0 + ote_update(W0, Kt, Vt, P=P, C0=C0, lam=lam)
            trace.ote_distance.append(_rel(W - W_ote, W_ote - W0))
            virtual = _rel(W + editor.E - W_ote, W_ote - W0) if editor.E is not None else float("nan")
            trace.virtual_ote_distance.append(virtual)
        else:
            trace.ote_distance.append(float("nan"))
            trace.virtual_ote_distance.append(float("nan"))
        if memorize and (t % ote_every == 0 or last or t == 1):
            trace.omitted_norm.append(float(omitted_term(D, P=P, C0=world.C0w).norm()))
        else:
            trace.omitted_norm.append(float("nan"))
    trace.W_final = W
    return trace


# --------------------------------------------------------------------------- summaries

def collapse_summary(cfg: Optional[ToyConfig] = None, *, steps=(1, 10, 20, 50, 100, 200),
                     cond_every: int = 0) -> dict:
    """Notebook 01's headline: Eq. 3 (null-space) vs Eq. 4 (full) memorize-the-latest.

    Returns:
        A dict with the config, ``null_dims``, both per-step preserved-error lists
        (``nullspace_preserved_error_by_step``, ``full_preserved_error_by_step``),
        the same at ``steps``, the final ratio and whether the acceptance bar holds
        (ratio ≥ 10 at the last step and still rising: last step > step 20).
    """
    cfg = cfg or ToyConfig()
    world = make_world(cfg)
    ns = run_rule(world, "memorize-nullspace", cond_every=cond_every, ote_every=cfg.T)
    full = run_rule(world, "memorize-full", cond_every=cond_every, ote_every=cfg.T)
    T = len(ns.preserved_error)
    steps = [s for s in steps if s <= T]
    ratio = ns.preserved_error[-1] / full.preserved_error[-1]
    rising = ns.preserved_error[-1] > ns.preserved_error[min(20, T) - 1]
    return {
        "config": asdict(cfg),
        "null_dims": world.null_dims,
        "nullspace_preserved_error_by_step": ns.preserved_error,
        "full_preserved_error_by_step": full.preserved_error,
        "steps": steps,
        "nullspace_at_steps": [ns.at("preserved_error", s) for s in steps],
        "full_at_steps": [full.at("preserved_error", s) for s in steps],
        "nullspace_latest_error": ns.latest_error[-1],
        "full_latest_error": full.latest_error[-1],
        "final_ratio": ratio,
        "rising": bool(rising),
        "acceptance": bool(ratio >= 10 and rising),
    }


def collapse_sweep(base: Optional[ToyConfig] = None, *, grid: dict, seeds=(0,), T: Optional[int] = None,
                   progress: bool = False):
    """Final preserved-error ratio (Eq. 3 / Eq. 4) over a grid of config changes.

    Arguments:
        base: the config to vary; grid: ``{field: [values]}`` (the cartesian product is run).
        seeds: world seeds; T: shorter streams for speed.
    Returns:
        A DataFrame with one row per (grid point, seed): the fields, ``seed``,
        ``null_dims``, ``leak`` (see :attr:`ToyWorld.leak`), ``nullspace``, ``full`` (final preserved errors) and ``ratio``.
    """
    import itertools

    import pandas as pd

    base = base or ToyConfig()
    names = list(grid)
    combos = list(itertools.product(*(grid[k] for k in names), seeds))
    if progress:
        from tqdm.auto import tqdm
        combos = tqdm(combos, desc="sweep", leave=False)
    rows = []
    for combo in combos:
        over = dict(zip(names, combo[:-1]))
        cfg = replace(base, seed=combo[-1], **over, **({"T": T} if T else {}))
        world = make_world(cfg)
        ns = run_rule(world, "memorize-nullspace", cond_every=0, ote_every=cfg.T)
        full = run_rule(world, "memorize-full", cond_every=0, ote_every=cfg.T)
        rows.append({**over, "seed": combo[-1], "null_dims": world.null_dims, "leak": world.leak,
                     "nullspace": ns.preserved_error[-1], "full": full.preserved_error[-1],
                     "ratio": ns.preserved_error[-1] / full.preserved_error[-1]})
    return pd.DataFrame(rows)


def forgetting_table(world: ToyWorld, traces: list[ToyTrace]):
    """Toy analogue of the paper's Table 9: what happens to edits that are no longer the latest.

    For every key edited before the last batch: ``still_edited = ‖W_T k − W0 k‖ / ‖v − W0 k‖``
    (1: the edit is still there, 0: back to its pre-edit value) and
    ``recall_error = ‖W_T k − v‖ / ‖v − W0 k‖``.

    Returns:
        A DataFrame, one row per trace, with the means of both.
    """
    import pandas as pd

    last_ids = set(world.batches[-1][2]) if world.batches else set()
    first: dict = {}
    for K, V, ids in world.batches:
        for j, i in enumerate(ids):
            if i not in last_ids:
                first[i] = (K[:, j], V[:, j])                  # latest requested value wins
    K = torch.stack([k for k, _ in first.values()], 1)         # [d_i, m]
    V = torch.stack([v for _, v in first.values()], 1)         # [d_o, m]
    rows = []
    for tr in traces:
        moved = (tr.W_final - world.W0) @ K                    # [d_o, m]
        wanted = V - world.W0 @ K
        rows.append({"rule": tr.rule,
                     "still_edited": float((moved.norm(dim=0) / wanted.norm(dim=0)).mean()),
                     "recall_error": float(((tr.W_final @ K - V).norm(dim=0) / wanted.norm(dim=0)).mean()),
                     "preserved_error": tr.preserved_error[-1]})
    return pd.DataFrame(rows)
