"""The real-model engine on tiny random models of every architecture (fast) and SmolLM2 (slow)."""
from __future__ import annotations

import os

import pytest
import torch

from otelab import ote
from otelab.engine.session import METHODS, EditSession, SessionError, editor_config
from otelab.engine.keys import compute_keys, context_templates, subject_hidden
from otelab.models.loading import tiny_model
from otelab.data.requests import EditRequest, RequestError
from otelab.engine.values import compute_values

ARCHES = ["llama", "gpt2", "gptj", "qwen2"]
REQS = [EditRequest("{} lives in the city of", "Alice", "Paris"),
        EditRequest("{} works as a", "Bob", "doctor"),
        EditRequest("The favourite food of {} is", "Carol", "pizza")]


def small_cov(lm, scale=1e-2):
    d_i = lm.adapter.get_W(lm.model, lm.layers[0]).shape[1]
    g = torch.Generator().manual_seed(0)
    X = torch.randn(d_i, 4 * d_i, generator=g)
    return {l: scale * X @ X.T / X.shape[1] for l in lm.layers}


def params(lm):
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


@pytest.fixture(params=ARCHES)
def lm(request):
    m = tiny_model(request.param)
    m.preset = m.preset.replace(v_steps=4)
    return m


def test_only_edited_layers_change_and_wk_matches_v(lm):
    before = params(lm)
    s = EditSession(lm, "memit", "aligned", cov=small_cov(lm, 1e-9), progress=False)
    s.step(REQS)
    changed = sorted(n for n, p in lm.model.named_parameters() if not torch.equal(p, before[n]))
    expected = sorted(lm.preset.module_template.format(l) + ".weight" for l in lm.layers)
    assert changed == expected
    for layer, (K, V) in s.last_kv.items():
        W = lm.adapter.get_W(lm.model, layer).double()
        err = (W @ K - V).norm() / (V - s.W0[layer].double() @ K).norm()
        assert err < 1e-3, f"layer {layer}: ‖WK − V‖ / ‖V − W0 K‖ = {err:.2e}"


def test_forward_split_is_exact(lm):
    from otelab.models.forward import hidden_after, logits_from
    from otelab.engine.keys import encode
    enc = encode(lm, REQS, ["{}", "Some context. {}"])
    with torch.no_grad():
        full = lm.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
        up = logits_from(lm, hidden_after(lm, enc.input_ids, enc.attention_mask, 1), enc.attention_mask, 2)
    m = enc.attention_mask.bool()
    torch.testing.assert_close(up[m], full[m], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pack_tokens", [1, 12])
def test_suffix_forward_matches_the_full_forward(lm, pack_tokens):
    """Only each row's suffix, packed several rows to a sequence, against cached prefix keys/values: same logits."""
    from otelab.models.forward import SuffixForward, hidden_after, logits_from
    from otelab.engine.keys import pad_batch
    g = torch.Generator().manual_seed(0)
    lens, split = [7, 3, 9, 5, 6], torch.tensor([2, 0, 5, 4, 1])   # row 1 has no prefix at all
    rows = [torch.randint(0, lm.model.config.vocab_size, (n,), generator=g).tolist() for n in lens]
    ids, mask = pad_batch(rows, lm.tokenizer.pad_token_id, "cpu")
    B = len(rows)
    with torch.no_grad():
        h = hidden_after(lm, ids, mask, 1)                                     # [B, T, d]
        delta = torch.randn(B, h.shape[-1], generator=g)
        hp = h.clone()
        hp[torch.arange(B), split] += delta
        full = logits_from(lm, hp, mask, 2)                                    # [B, T, V]
        sf = SuffixForward(lm, h, mask.sum(1), split, 2, pack_tokens=pack_tokens)
        x = sf.suffix.index_put(sf.locate(torch.arange(B), split), delta, accumulate=True)
        part = lm.adapter.unembed(lm.model)(sf.final_hidden(x))                # [n_pack, S, V]
    # suffixes of 5, 3, 4, 1, 5 tokens: packs of at most max(pack_tokens, 5) tokens
    assert sf.suffix.shape[0] == {1: 4, 12: 2}[pack_tokens]
    rr = torch.tensor([b for b, n in enumerate(lens) for _ in range(int(split[b]), n)])
    pp = torch.tensor([t for b, n in enumerate(lens) for t in range(int(split[b]), n)])
    torch.testing.assert_close(part[sf.locate(rr, pp)], full[rr, pp], rtol=1e-5, atol=1e-5)


def test_cached_forward_gives_same_values(lm):
    a = compute_values(lm, REQS[:2], cached=True)
    b = compute_values(lm, REQS[:2], cached=False)
    torch.testing.assert_close(a.z, b.z, rtol=1e-4, atol=1e-5)
    assert a.steps == b.steps


def test_keys_are_template_means(lm):
    templates = context_templates(lm)
    assert templates[0] == "{}" and len(templates) > 1
    assert context_templates(lm) == templates  # deterministic
    K = compute_keys(lm, REQS, lm.layers[0])
    singles = torch.cat([compute_keys(lm, [r], lm.layers[0]) for r in REQS], 1)
    torch.testing.assert_close(K, singles, rtol=1e-4, atol=1e-5)   # batching/padding changes nothing
    assert K.shape == (lm.adapter.get_W(lm.model, lm.layers[0]).shape[1], len(REQS))


def test_undo_and_reset_are_bit_exact(lm):
    before = params(lm)
    s = EditSession(lm, "memit", "aligned", cov=small_cov(lm), progress=False)
    s.step(REQS[:1])
    after1 = params(lm)
    state1 = {l: {k: v.clone() for k, v in e.state_dict().items()} for l, e in s.editors.items()}
    s.step(REQS[1:])
    s.undo()
    assert all(torch.equal(p, after1[n]) for n, p in lm.model.named_parameters())
    for l, e in s.editors.items():
        assert all(torch.equal(v, state1[l][k]) for k, v in e.state_dict().items())
    assert s.n_steps == 1
    s.step(REQS[1:])
    s.reset()
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())
    assert s.n_steps == 0 and all(e.t == 0 for e in s.editors.values())


def test_delta_norm_tracks_the_weight_change(lm):
    s = EditSession(lm, "memit", "aligned", cov=small_cov(lm), progress=False)
    assert s.delta_norm() == 0.0
    s.step(REQS[:1])
    by_hand = sum(float((lm.adapter.get_W(lm.model, l).double() - s.W0[l].double()).norm()) for l in lm.layers)
    assert s.delta_norm() > 0 and abs(s.delta_norm() - by_hand) < 1e-9
    s.reset()
    assert s.delta_norm() == 0.0


def test_save_load_continues_exactly(tmp_path):
    a_lm, b_lm = tiny_model("llama"), tiny_model("llama")
    for m in (a_lm, b_lm):
        m.preset = m.preset.replace(v_steps=3)
    cov = small_cov(a_lm)
    a = EditSession(a_lm, "prune", "aligned", cov=cov, progress=False)
    a.step(REQS[:1])
    a.save(tmp_path / "s")
    b = EditSession.load(tmp_path / "s", b_lm, cov=cov, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a_lm.model.parameters(), b_lm.model.parameters()))
    a.step(REQS[1:])
    b.step(REQS[1:])
    assert all(torch.equal(p, q) for p, q in zip(a_lm.model.parameters(), b_lm.model.parameters()))
    assert [r.requests for r in b.history] == [r.requests for r in a.history]


def test_load_refuses_a_different_model(tmp_path):
    lm = tiny_model("llama")
    lm.preset = lm.preset.replace(v_steps=2)
    s = EditSession(lm, "memit", "aligned", cov=small_cov(lm), progress=False)
    s.step(REQS[:1])
    s.save(tmp_path / "s")
    other = tiny_model("llama", seed=1)
    with pytest.raises(SessionError, match="different model"):
        EditSession.load(tmp_path / "s", other, cov=small_cov(other))


def test_bad_request_changes_nothing(lm):
    s = EditSession(lm, "memit", "aligned", cov=small_cov(lm), progress=False)
    before = params(lm)
    bad = EditRequest("{} lives in", "Alice", "   ")
    with pytest.raises(RequestError, match="empty"):
        s.step([REQS[0], bad])
    with pytest.raises(RequestError, match="not in the prompt"):
        s.step([EditRequest("Someone lives in", "Dave", "Rome")])
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())
    assert s.n_steps == 0 and all(e.t == 0 for e in s.editors.values())


def test_failure_in_a_later_layer_rolls_back_earlier_layers(lm, monkeypatch):
    s = EditSession(lm, "memit", "aligned", cov=small_cov(lm), progress=False)
    s.step(REQS[:1])
    before = params(lm)
    states = {l: {k: v.clone() for k, v in e.state_dict().items()} for l, e in s.editors.items()}
    last = s.editors[lm.layers[-1]]

    def boom(*a, **k):
        raise ote.SolveError("injected failure")
    monkeypatch.setattr(last, "step", boom)
    with pytest.raises(ote.SolveError, match="injected"):
        s.step(REQS[1:])
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())
    for l, e in s.editors.items():
        assert all(torch.equal(v, states[l][k]) for k, v in e.state_dict().items())
    assert s.n_steps == 1


def test_aligned_state_is_one_square_matrix_per_layer():
    lm = tiny_model("gpt2")
    lm.preset = lm.preset.replace(v_steps=2)
    d_i = lm.adapter.get_W(lm.model, lm.layers[0]).shape[1]
    s = EditSession(lm, "memit", "aligned", cov=small_cov(lm), progress=False)
    s.step(REQS[:2])
    assert all(e.state_shapes() == {"A": (d_i, d_i)} for e in s.editors.values())
    s2 = EditSession(lm, "prune", "aligned", cov=small_cov(lm), progress=False)
    s2.step(REQS[:2])
    d_o = lm.adapter.get_W(lm.model, lm.layers[0]).shape[0]
    assert all(e.state_shapes() == {"A": (d_i, d_i), "E": (d_o, d_i)} for e in s2.editors.values())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["aligned", "naive"])
def test_every_method_and_mode_runs(method, mode):
    lm = tiny_model("qwen2")
    lm.preset = lm.preset.replace(v_steps=2, nullspace_threshold=1e3)
    s = EditSession(lm, method, mode, cov=small_cov(lm), progress=False)
    rec = s.step(REQS[:2])
    assert all(v > 0 for v in rec.delta_norms.values())


def test_mode_validation_names_the_problem():
    lm = tiny_model("llama")
    with pytest.raises(SessionError, match="no-ec"):
        EditSession(lm, "memit", "no-ec", cov=small_cov(lm))
    with pytest.raises(SessionError, match="unknown method"):
        editor_config("rome", "aligned", lm.preset, torch.eye(4), torch.eye(4))


def test_conflict_mode_re_edit_takes_latest():
    lm = tiny_model("llama")
    lm.preset = lm.preset.replace(v_steps=6)
    s = EditSession(lm, "memit", "conflict", cov=small_cov(lm, 1e-6), progress=False)
    s.step([EditRequest("{} lives in the city of", "Alice", "Paris")])
    s.step([EditRequest("{} lives in the city of", "Alice", "Rome")])
    assert all(len(e.keys) == 1 for e in s.editors.values())   # one constraint per subject


def test_ote_equivalence_with_fixed_keys_and_values():
    """Aligned MEMIT in 5 batches ≡ the one-time edit of all; naive is not (fixed K, V)."""
    lm = tiny_model("llama")
    layer = lm.layers[0]
    W0 = lm.adapter.get_W(lm.model, layer).double()
    d_o, d_i = W0.shape
    g = torch.Generator().manual_seed(3)
    K = torch.randn(d_i, 15, generator=g, dtype=torch.float64)
    V = W0 @ K + torch.randn(d_o, 15, generator=g, dtype=torch.float64)
    C0 = 50 * small_cov(lm)[layer].double()
    ote_W = W0 + ote.ote_update(W0, K, V, C0=C0)
    for mode, close in (("aligned", True), ("naive", False)):
        e = ote.SequentialEditor(d_i, mode, C0=C0)
        W = W0.clone()
        for b in range(5):
            W = W + e.step(K[:, 3 * b:3 * b + 3], V[:, 3 * b:3 * b + 3], W)
        rel = float((W - ote_W).norm() / (ote_W - W0).norm())
        assert (rel < 1e-8) == close, (mode, rel)


# ----------------------------------------------------------------------------- SmolLM2 (slow)

@pytest.fixture(scope="module")
def smol():
    from otelab.engine.covariance import get_covariance
    from otelab.models.loading import load_model
    lm = load_model("smollm2-135m")
    data = os.environ.get("OTELAB_DATA_DIR")
    corpus = os.path.join(data, "corpus", "wikipedia_vital_summaries_en.json") if data else None
    cov = get_covariance(lm, list(lm.layers), corpus=corpus, n_tokens=20_000, progress=False)
    return lm, cov


def greedy(lm, prompt, n=6):
    ids = lm.tokenizer(prompt, return_tensors="pt")
    out = lm.model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    return lm.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
def test_smollm2_eiffel_tower_to_rome(smol):
    lm, cov = smol
    assert "Paris" in greedy(lm, "The Eiffel Tower is located in the city of")
    s = EditSession(lm, "memit", "aligned", cov=cov, progress=False)
    try:
        s.step([EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome")])
        assert "Rome" in greedy(lm, "The Eiffel Tower is located in the city of")
        assert "Tokyo" in greedy(lm, "The capital of Japan is")
    finally:
        s.reset()


@pytest.mark.slow
def test_smollm2_aligned_batches_equal_one_time_edit(smol):
    """Keys/values computed once on the unedited model and held fixed: 5 aligned batches ≡ OTE."""
    lm, cov = smol
    from otelab.data.loaders import load_factbank
    reqs = [r.request() for r in load_factbank(n=10)]
    preset = lm.preset
    lm.preset = preset.replace(v_steps=5)
    try:
        z = compute_values(lm, reqs).z.double()
        for layer in lm.layers:
            K = compute_keys(lm, reqs, layer).double()                                    # [d_i, 10]
            W0 = lm.adapter.get_W(lm.model, layer).double()
            V = W0 @ K + (z - subject_hidden(lm, reqs, max(lm.layers)).double()).T / len(lm.layers)
            C0 = lm.preset.cov_weight * cov[layer].double()
            ote_W = (W0 + ote.ote_update(W0, K, V, C0=C0)).float()
            for mode in ("aligned", "naive"):
                e = ote.SequentialEditor(W0.shape[1], mode, C0=C0)
                W = W0.float()
                for b in range(5):
                    Wd = W.double()
                    W = (Wd + e.step(K[:, 2 * b:2 * b + 2], V[:, 2 * b:2 * b + 2], Wd)).float()
                rel = float((W - ote_W).norm() / (ote_W - W0.float()).norm())
                if mode == "aligned":
                    assert rel <= 1e-4, f"layer {layer}: aligned differs from OTE by {rel:.2e}"
                else:
                    assert rel > 1e-2, f"layer {layer}: naive unexpectedly equals OTE ({rel:.2e})"
    finally:
        lm.preset = preset


# ----------------------------------------------------------------------------- bad input to a session

@pytest.fixture()
def llama():
    m = tiny_model("llama")
    m.preset = m.preset.replace(v_steps=2)
    return m


@pytest.mark.parametrize("method, mode, message", [("bogus", "aligned", "unknown method"),
                                                   ("memit", "no-ec", "no-ec"), ("memit", "nope", "unknown mode")])
def test_names_are_checked_before_any_covariance_is_computed(llama, monkeypatch, method, mode, message):
    from otelab.engine import covariance
    def no(*a, **k):
        raise AssertionError("a covariance was computed for a bad configuration")
    monkeypatch.setattr(covariance, "get_covariance", no)
    with pytest.raises(SessionError, match=message):
        EditSession(llama, method, mode, progress=False)


def test_values_are_checked_with_clear_messages(llama):
    s = EditSession(llama, "memit", "aligned", cov=small_cov(llama), progress=False)
    W = params(llama)
    good = compute_values(llama, REQS[:1])
    d = good.z.shape[1]
    from otelab.engine.values import ValueResult
    cases = [
        (good.z, "must be an otelab.engine.values.ValueResult"),
        (ValueResult(torch.zeros(1, d + 1), torch.zeros(1, d + 1)), rf"shape \(1, {d + 1}\); this batch of 1 request\(s\) needs \[1, {d}\]"),
        (ValueResult(torch.zeros(2, d), torch.zeros(2, d)), rf"shape \(2, {d}\); this batch of 1 request\(s\) needs \[1, {d}\]"),
        (ValueResult(good.z_init + 1e30, good.z_init), "exceeds the clamp"),
        (ValueResult(good.z * float("nan"), good.z_init), "NaN"),
    ]
    for values, message in cases:
        with pytest.raises(SessionError, match=message):
            s.step(REQS[:1], values=values)
    assert s.n_steps == 0 and all(torch.equal(p, W[n]) for n, p in llama.model.named_parameters())
    s.step(REQS[:1], values=good)                     # the optimiser's own values pass the clamp check
    assert s.n_steps == 1


def test_numpy_covariance_is_converted_and_junk_rejected(llama):
    cov = small_cov(llama)
    a = EditSession(llama, "memit", "aligned", cov={l: c.numpy() for l, c in cov.items()}, progress=False)
    b = EditSession(llama, "memit", "aligned", cov=cov, progress=False)
    assert a.cov_spec["sha256"] == b.cov_spec["sha256"]
    with pytest.raises(SessionError, match="covariance of layer 1"):
        EditSession(llama, "memit", "aligned", cov={l: "C0" for l in cov}, progress=False)
    with pytest.raises(SessionError, match="covariance of layer 1 holds NaN"):
        EditSession(llama, "memit", "aligned", cov={l: c * float("nan") for l, c in cov.items()}, progress=False)


@pytest.mark.parametrize("case_id", [object(), ("a", 1), {1: "x"}, float("nan")])
def test_a_case_id_that_cannot_be_saved_is_rejected_at_step(llama, case_id):
    s = EditSession(llama, "memit", "aligned", cov=small_cov(llama), progress=False)
    W = params(llama)
    with pytest.raises(SessionError, match="case_id"):
        s.step([EditRequest("{} lives in the city of", "Alice", "Paris", case_id=case_id)])
    assert s.n_steps == 0 and all(torch.equal(p, W[n]) for n, p in llama.model.named_parameters())


def test_target_equal_to_the_true_target_warns_and_steps(llama):
    s = EditSession(llama, "memit", "aligned", cov=small_cov(llama), progress=False)
    with pytest.warns(UserWarning, match="equals the true target"):
        s.step([EditRequest("{} lives in the city of", "Alice", "Paris", target_true=" Paris")])
    assert s.n_steps == 1


def test_prompts_with_literal_braces_step(llama):
    s = EditSession(llama, "memit", "aligned", cov=small_cov(llama), progress=False)
    s.step([EditRequest("{x} {} lives in {0} the city of", "Alice", "Paris")])
    assert s.n_steps == 1
