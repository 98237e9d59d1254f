"""The layer-by-layer key pass (otelab.engine.replay) against a fresh forward per layer."""
from __future__ import annotations

import pytest
import torch

from otelab.engine.session import EditSession
from otelab.engine.keys import compute_keys, context_templates, subject_hidden
from otelab.engine.replay import LayerwiseKeys
from otelab.data.requests import EditRequest
from otelab.engine.values import ValueResult
from otelab.models.loading import tiny_model

from shared import REQUESTS, _eye_cov

ARCHES = ["llama", "gpt2", "gptj", "qwen2"]
REQS = list(REQUESTS)


def values_for(lm, reqs, seed=0):
    """Fixed target values (the replay's job is keys and solves; values come from elsewhere)."""
    z0 = subject_hidden(lm, reqs, max(lm.layers))                                  # [n, d]
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(z0.shape, generator=g)                                      # [n, d]
    # half the preset's clamp (step() refuses ‖z − z_init‖ > clamp_factor·‖z_init‖)
    noise *= 0.5 * lm.preset.clamp_factor * z0.norm(dim=1, keepdim=True) / noise.norm(dim=1, keepdim=True)
    return ValueResult(z=z0 + noise, z_init=z0)


def deltas(lm, s):
    return {l: lm.adapter.get_W(lm.model, l).double() - s.W0[l].double() for l in lm.layers}


def run(arch, keys, batches, mode="aligned", **lk):
    lm = tiny_model(arch)
    s = EditSession(lm, "memit", mode, cov=_eye_cov(lm), keys=keys, progress=False)
    if lk:
        s._lk = LayerwiseKeys(lm, context_templates(lm), lm.layers, max(lm.layers), **lk)
    for b in batches:
        s.step(b, values=values_for(lm, b))
    return lm, s


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("mode", ["aligned", "naive"])
def test_layerwise_step_equals_a_forward_per_layer(arch, mode):
    batches = [REQS[:2], REQS[2:]]
    lm_f, s_f = run(arch, "full", batches, mode)
    lm_l, s_l = run(arch, "layerwise", batches, mode)
    for l, d in deltas(lm_f, s_f).items():
        rel = float((deltas(lm_l, s_l)[l] - d).norm() / d.norm())
        assert rel < 1e-4, f"{arch} layer {l}: layerwise differs by {rel:.2e}"
    for l in lm_f.layers:   # the keys the solves saw, too
        rel = float((s_l.last_kv[l][0] - s_f.last_kv[l][0]).norm() / s_f.last_kv[l][0].norm())
        assert rel < 1e-4


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_keys_match_compute_keys_on_the_unedited_model(arch, make_tiny):
    """Before any update, the first layer's keys are exactly compute_keys' (prefix sharing and packing are exact)."""
    lm = make_tiny(arch)
    templates = context_templates(lm)
    lk = LayerwiseKeys(lm, templates, lm.layers, max(lm.layers), pack_tokens=8)
    seen = {}

    def solve(layer, K, cur):
        seen[layer] = (K, cur)
        return torch.zeros(lm.adapter.get_W(lm.model, layer).shape)

    lk.run(REQS, solve)
    for layer in lm.layers:   # Δ = 0 everywhere, so every layer sees the unedited model
        K, cur = seen[layer]
        assert torch.allclose(K, compute_keys(lm, REQS, layer, templates), atol=1e-5, rtol=1e-4)
        assert torch.allclose(cur, subject_hidden(lm, REQS, max(lm.layers)), atol=1e-5, rtol=1e-4)


def test_chunks_and_cached_lower_states_give_the_same_step():
    """Small chunks, tight packs and the per-prompt cache (undo, then the same step again) change nothing."""
    lm_a, s_a = run("llama", "layerwise", [REQS])
    lm_b, s_b = run("llama", "layerwise", [REQS], chunk_rows=2, pack_tokens=4)
    for l, d in deltas(lm_a, s_a).items():
        assert float((deltas(lm_b, s_b)[l] - d).norm() / d.norm()) < 1e-5
    before = deltas(lm_a, s_a)
    assert len(s_a._lk._below) == len(REQS) * len(context_templates(lm_a))   # every row cached
    s_a.undo()
    s_a.step(REQS, values=values_for(lm_a, REQS))                           # served from the cache
    for l, d in deltas(lm_a, s_a).items():
        assert float((d - before[l]).norm() / before[l].norm()) < 1e-6


def test_cache_is_bounded(tiny_llama, eye_cov):
    lm = tiny_llama
    s = EditSession(lm, "memit", "aligned", cov=eye_cov(lm), progress=False)
    s._lk = LayerwiseKeys(lm, context_templates(lm), lm.layers, max(lm.layers), cache_prompts=4)
    s.step(REQS, values=values_for(lm, REQS))
    assert len(s._lk._below) == 4


def test_row_whose_tokens_merge_with_the_prefix_runs_whole(tiny_llama):
    """A template whose prefix the tokeniser merges with the prompt falls back to a full row, same keys."""
    lm = tiny_llama
    templates = ["{}", "T{}", "Context. {}"]   # "T" + "he cat" tokenises as "The", " cat": no shared "T"
    reqs = [EditRequest("{} sat on the mat", "he cat", "rug")] + REQS[:2]
    lk = LayerwiseKeys(lm, templates, lm.layers, max(lm.layers))
    groups, _ = lk._rows(reqs)
    assert [r for g in groups if g.prefix == -1 for r in g.rows] == [0, 1, 3, 6]   # row 1: "T" + "he cat"
    seen = {}

    def solve(layer, K, cur):
        seen[layer] = K
        return torch.zeros(lm.adapter.get_W(lm.model, layer).shape)

    lk.run(reqs, solve)
    assert torch.allclose(seen[lm.layers[0]], compute_keys(lm, reqs, lm.layers[0], templates), atol=1e-5, rtol=1e-4)


def test_templates_must_include_the_plain_prompt(tiny_llama):
    lm = tiny_llama
    with pytest.raises(ValueError, match="plain prompt"):
        LayerwiseKeys(lm, ["Context. {}"], lm.layers, max(lm.layers))


def test_unknown_key_mode_is_rejected(tiny_llama, eye_cov):
    lm = tiny_llama
    with pytest.raises(ValueError, match="keys must be"):
        EditSession(lm, "memit", "aligned", cov=eye_cov(lm), keys="fast", progress=False)


@pytest.mark.slow
def test_smollm2_layerwise_equals_full():
    """On SmolLM2 (float32), two steps of five fact-bank edits agree with the per-layer forwards to 1e-4."""
    from otelab.data.loaders import load_factbank
    from otelab.models.loading import load_model
    lm = load_model("smollm2-135m")
    reqs = [r.request() for r in load_factbank(n=10)]
    cov = {l: torch.eye(lm.adapter.get_W(lm.model, l).shape[1]) * 1e-2 for l in lm.layers}
    val = values_for(lm, reqs)
    out = {}
    for keys in ("full", "layerwise"):
        s = EditSession(lm, "memit", "aligned", cov=cov, keys=keys, progress=False)
        try:
            for b in (slice(0, 5), slice(5, 10)):
                s.step(reqs[b], values=ValueResult(z=val.z[b], z_init=val.z_init[b]))
            out[keys] = deltas(lm, s)
        finally:
            s.reset()
    for l, d in out["full"].items():
        rel = float((out["layerwise"][l] - d).norm() / d.norm())
        assert rel < 1e-4, f"layer {l}: {rel:.2e}"
