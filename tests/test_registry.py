"""The editor registry (``otelab.ote.EDITORS``): one row makes a new editor available everywhere.

The done-when test of issue 15: a toy post-processing regulariser, written here (an operator and a
row), is accepted by ``EditSession``, the command line, the workbench's dropdowns, the toy and the
demo's pairs with no other edit. And the built-in rows give the configurations they always gave.
"""
from __future__ import annotations

import json

import pytest
import torch

from otelab import ote
from otelab.engine.session import METHODS, SESSION_MODES, EditSession, SessionError, check_combo, editor_config
from otelab.data.requests import EditRequest
from otelab.models.loading import tiny_model, tiny_preset

REQS = [EditRequest("{} lives in the city of", "Alice", "Paris"),
        EditRequest("{} works as a", "Bob", "doctor")]


def top_direction(W0: torch.Tensor):
    """The toy regulariser: keep only the top singular direction of each edit, ``σ1 u1 v1ᵀ``."""
    def op(D: torch.Tensor) -> torch.Tensor:                     # [d_o, d_i] -> [d_o, d_i]
        U, s, Vh = torch.linalg.svd(D, full_matrices=False)
        return s[0] * torch.outer(U[:, 0], Vh[0])
    return op


@pytest.fixture
def top1():
    """The row, registered for one test and removed after it (other tests see the built-ins only)."""
    spec = ote.register_editor(ote.EditorSpec("top1", "Top-1", ote.post_modes("Top-1"), post=top_direction,
                                              doc="MEMIT + the top singular direction of each step"))
    try:
        yield spec
    finally:
        ote.unregister_editor("top1")


def small_cov(lm):
    d_i = lm.adapter.get_W(lm.model, lm.layers[0]).shape[1]
    X = torch.randn(d_i, 4 * d_i, generator=torch.Generator().manual_seed(0))   # [d_i, 4 d_i]
    return {l: 1e-2 * X @ X.T / X.shape[1] for l in lm.layers}


# ----------------------------------------------------------------------------- done when

def test_a_registered_row_is_an_edit_session(top1):
    assert "top1" in METHODS and "top1" in ote.methods()
    check_combo("top1", "no-ec")
    with pytest.raises(SessionError, match="prune, rect and top1"):
        check_combo("memit", "no-ec")
    lm = tiny_model("llama")
    lm.preset = lm.preset.replace(v_steps=2)
    W_start = {l: lm.adapter.get_W(lm.model, l).detach().clone() for l in lm.layers}
    for mode in ("aligned", "no-ec"):
        s = EditSession(lm, "top1", mode, cov=small_cov(lm), progress=False)
        s.step(REQS)
        for l in lm.layers:
            delta = lm.adapter.get_W(lm.model, l).double() - s.W0[l].double()     # [d_o, d_i]
            assert torch.linalg.matrix_rank(delta, rtol=1e-6) == 1, (mode, l)
        assert s.editors[lm.layers[0]].correct is (mode == "aligned")
        s.reset()
    assert all(torch.equal(lm.adapter.get_W(lm.model, l), W_start[l]) for l in lm.layers)
    with pytest.raises(SessionError, match="memorize-full"):
        EditSession(lm, "top1", "memorize-full", cov=small_cov(lm), progress=False)


def test_a_registered_row_is_a_cli_choice(top1, tmp_path):
    from otelab.cli.main import build_parser, main

    args = build_parser().parse_args(["edit", "--method", "top1", "--mode", "no-ec"])
    assert (args.method, args.mode) == ("top1", "no-ec")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i} talks about cities, rivers and people." for i in range(100)))
    reqs = tmp_path / "reqs.jsonl"
    reqs.write_text("\n".join(json.dumps({"prompt": r.prompt, "subject": r.subject, "target_new": r.target_new})
                              for r in REQS))
    rc = main(["edit", "--model", "tiny-llama", "--method", "top1", "--requests", str(reqs), "--batch", "2",
               "--corpus", str(corpus), "--cov-tokens", "200", "--out", str(tmp_path / "run")])
    assert rc == 0


def test_an_unregistered_name_is_not_a_cli_choice():
    from otelab.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["edit", "--method", "top1"])


def test_a_registered_row_is_in_the_workbench_dropdowns(top1):
    from otelab.workbench.bench import METHOD_NAMES, _combo_error, method_options, track_label, valid_modes

    assert method_options()[-1] == ("Top-1", "top1")
    assert [m for _, m in method_options()[:5]] == ["memit", "alphaedit", "prune", "rect", "rlsedit"]
    assert valid_modes("top1") == ["aligned", "naive", "no-ec"]
    assert METHOD_NAMES["top1"] == "Top-1" and track_label("top1", "no-ec") == "Top-1 no-ec"
    assert _combo_error("top1", "aligned") is None and "memorize-full" in _combo_error("top1", "memorize-full")


def test_a_registered_row_is_a_toy_rule(top1):
    from otelab.toy.world import RULES, ToyConfig, make_world, rules, run_rule

    assert "top1" not in RULES and {"top1", "top1-corrected"} <= set(rules())
    world = make_world(ToyConfig(d_o=8, d_i=16, n0=64, r=4, n=2, T=5, seed=1))
    plain = run_rule(world, "top1", cond_every=0)
    fixed = run_rule(world, "top1-corrected", cond_every=0)
    assert torch.linalg.matrix_rank(plain.W_final - world.W0, rtol=1e-8) <= 5    # one direction per step
    assert max(fixed.virtual_ote_distance) < 1e-8                                 # Prop. A.3: W + E on the OTE path
    assert plain.ote_distance[-1] > 1e-3


def test_a_registered_row_is_a_demo_pair(top1):
    from otelab.demo import run as demo

    pairs = demo.parse_pairs("top1:aligned/top1:no-ec")
    demo.DemoConfig(pairs=pairs).check()
    assert demo.run_label("top1:no-ec") == "Top-1 no-ec"
    with pytest.raises(ValueError, match="top1:conflict"):
        demo.DemoConfig(pairs=(("top1:conflict", "memit:naive"),)).check()


def test_after_unregistering_the_row_is_gone():
    from otelab.toy.world import rules
    from otelab.workbench.bench import method_options

    spec = ote.register_editor(ote.EditorSpec("top1", "Top-1", ote.post_modes("Top-1"), post=top_direction))
    with pytest.raises(ote.EditError, match="already registered"):
        ote.register_editor(spec)
    ote.unregister_editor("top1")
    assert "top1" not in METHODS and "top1" not in rules() and len(method_options()) == 5
    with pytest.raises(SessionError, match="unknown method 'top1'"):
        check_combo("top1", "aligned")


def test_a_bad_row_is_refused():
    with pytest.raises(ote.EditError, match="post-processing runs in core modes"):
        ote.EditorSpec("bad", "Bad", {"memorize-full": ote.mode_spec("memorize-full")}, post=top_direction)
    with pytest.raises(ote.EditError, match="unknown session mode"):
        ote.EditorSpec("bad", "Bad", {"rls": ote.ModeSpec("rls")})
    with pytest.raises(ote.EditError, match="lower-case"):
        ote.register_editor(ote.EditorSpec("Bad:x", "Bad", ote.post_modes("Bad"), post=top_direction))
    assert "Bad:x" not in ote.EDITORS


# ----------------------------------------------------------------------------- the built-in rows

C0_HAT = (lambda X: X @ X.T / 12)(torch.randn(6, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
W0 = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

# (method, mode) -> (core mode, correct, P is the projector, C0 is μ Ĉ0, λ, post-processing operator):
# what editor_config returned before the registry (the engine's table in otelab.engine.session).
EXPECTED = {
    ("memit", "aligned"): ("aligned", True, False, True, 0.0, None),
    ("memit", "naive"): ("naive", True, False, True, 0.0, None),
    ("memit", "memorize-full"): ("memorize-full", True, False, True, 0.0, None),
    ("memit", "conflict"): ("conflict", True, False, True, 0.0, None),
    ("alphaedit", "aligned"): ("aligned", True, True, False, "l2", None),
    ("alphaedit", "naive"): ("naive", True, True, False, "l2", None),
    ("alphaedit", "memorize-nullspace"): ("memorize-nullspace", True, True, False, "l2", None),
    ("alphaedit", "memorize-full"): ("memorize-full", True, True, True, "l2", None),
    ("alphaedit", "conflict"): ("conflict", True, True, False, "l2", None),
    ("prune", "aligned"): ("aligned", True, False, True, 0.0, ote.Prune),
    ("prune", "naive"): ("naive", True, False, True, 0.0, ote.Prune),
    ("prune", "no-ec"): ("aligned", False, False, True, 0.0, ote.Prune),
    ("rect", "aligned"): ("aligned", True, False, True, 0.0, ote.Rect),
    ("rect", "naive"): ("naive", True, False, True, 0.0, ote.Rect),
    ("rect", "no-ec"): ("aligned", False, False, True, 0.0, ote.Rect),
    ("rlsedit", "aligned"): ("rls", True, False, True, "rls", None),
    ("rlsedit", "naive"): ("naive", True, False, True, "rls", None),
}


def test_the_built_in_rows_accept_exactly_their_modes():
    assert tuple(METHODS) == ("memit", "alphaedit", "prune", "rect", "rlsedit")
    assert SESSION_MODES == ("aligned", "naive", "no-ec", "memorize-nullspace", "memorize-full", "conflict")
    valid = {(m, md) for m in METHODS for md in SESSION_MODES if md in ote.valid_modes(m)}
    assert valid == set(EXPECTED)
    for m in METHODS:
        for md in SESSION_MODES:
            if (m, md) not in EXPECTED:
                with pytest.raises(SessionError):
                    check_combo(m, md)
    assert all(ote.EDITORS[m].modes[md].paper for m, md in EXPECTED)


@pytest.mark.parametrize("method, mode", sorted(EXPECTED))
def test_editor_config_is_what_it_was(method, mode):
    preset = tiny_preset("llama")
    cfg = editor_config(method, mode, preset, C0_HAT, W0, rls_lam=0.7, rect_keep=0.3)
    core, correct, has_P, has_C0, lam, post = EXPECTED[(method, mode)]
    assert set(cfg) == {"mode", "P", "C0", "lam", "post", "correct"}
    assert (cfg["mode"], cfg["correct"]) == (core, correct)
    if has_P:
        assert torch.equal(cfg["P"], ote.nullspace_projector(C0_HAT, preset.nullspace_threshold))
    else:
        assert cfg["P"] is None
    if has_C0:
        assert torch.equal(cfg["C0"], preset.cov_weight * C0_HAT)
    else:
        assert cfg["C0"] is None
    assert cfg["lam"] == {"l2": preset.alphaedit_l2, "rls": 0.7}.get(lam, lam)
    if post is None:
        assert cfg["post"] is None
    else:
        assert type(cfg["post"]) is post
    if post is ote.Prune:
        assert cfg["post"].sigma_ref == ote.Prune.for_weights(W0).sigma_ref
    if post is ote.Rect:
        assert cfg["post"].keep == 0.3 and torch.equal(cfg["post"].W_ref, W0) and cfg["post"].W_ref is not W0


def test_defaults_come_from_the_table():
    from otelab.engine.session import RECT_KEEP, RLS_LAM

    assert (RECT_KEEP, RLS_LAM) == (0.2, 1.0)
    cfg = editor_config("rect", "aligned", tiny_preset("llama"), C0_HAT, W0)
    assert cfg["post"].keep == 0.2
    assert editor_config("rlsedit", "aligned", tiny_preset("llama"), C0_HAT, W0)["lam"] == 1.0


def test_the_messages_name_the_methods_that_take_a_mode():
    with pytest.raises(SessionError, match=r"mode 'no-ec' \(no error correction\) applies to prune and rect only"):
        check_combo("memit", "no-ec")
    with pytest.raises(SessionError, match="mode 'conflict' is defined for memit and alphaedit, not 'rlsedit'"):
        check_combo("rlsedit", "conflict")
    with pytest.raises(SessionError, match=r"AlphaEdit's shortcut \(Eq. 3\): use method 'alphaedit'"):
        check_combo("memit", "memorize-nullspace")
    with pytest.raises(SessionError, match="unknown method 'rome'; expected one of \\('memit', 'alphaedit'"):
        check_combo("rome", "aligned")
