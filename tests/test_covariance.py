"""Tests for otelab.data.corpus and otelab.engine.covariance (streamed, truncated, cached C0)."""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from otelab.data.corpus import Corpus, get_corpus, json_corpus, text_file_corpus, wiki_corpus
from otelab.engine.covariance import (CovarianceCacheWarning, _request, cache_path, compute_covariance,
                               get_covariance)
from otelab.models.loading import ARCHES

# Written for these tests: varied sentence lengths, so documents end at different
# token counts and the right-padding inside a batch is uneven.
_WORDS = ("river mountain city language music science history painter engine market "
          "winter island doctor garden library village planet bridge poet theory").split()


def _paragraphs(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        n_words = int(torch.randint(3, 40, (1,), generator=g))
        idx = torch.randint(0, len(_WORDS), (n_words,), generator=g).tolist()
        out.append(" ".join(_WORDS[i] for i in idx).capitalize() + ".")
    return out


@pytest.fixture(scope="module")
def models(make_tiny):
    return {arch: make_tiny(arch, seed=0) for arch in ARCHES}


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(_paragraphs(60)), encoding="utf-8")
    return text_file_corpus(path)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path / "cache"))


class _Counter:
    """Counts forward calls of a module (a forward pre-hook)."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls += 1

    def remove(self):
        self.handle.remove()


def _direct_covariance(loaded, layer: int, corpus: Corpus, n_tokens: int, max_len: int):
    """Reference: run the FULL model on one document at a time (no padding), collect every
    key into K [d_i, N], keep the first n_tokens columns, C = K Kᵀ / N in float64."""
    keys = []

    def hook(module, args):
        keys.append(args[0][0].double())  # [T, d_i]

    handle = loaded.adapter.w_out_module(loaded.model, layer).register_forward_pre_hook(hook)
    total = 0
    try:
        with torch.no_grad():
            for text in corpus.texts():
                ids = loaded.tokenizer(text, truncation=True, max_length=max_len)["input_ids"]
                loaded.model(input_ids=torch.tensor([ids]))
                total += len(ids)
                if total >= n_tokens:
                    break
    finally:
        handle.remove()
    K = torch.cat(keys, dim=0)[:n_tokens].T  # [d_i, N]
    assert K.shape[1] == n_tokens
    return K @ K.T / n_tokens  # [d_i, d_i]


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-6) -> bool:
    return bool((a - b).abs().max() <= rel * b.abs().max())


# --------------------------------------------------------------------------- compute


@pytest.mark.parametrize("arch", ARCHES)
def test_streamed_equals_direct(models, corpus, arch):
    loaded = models[arch]
    n_tokens, max_len = 333, 24  # 333 is not a document boundary: the last document is cut
    got = compute_covariance(loaded, [2, 1], corpus, n_tokens, max_len=max_len, batch_size=5,
                             dtype=torch.float64, progress=False)
    assert sorted(got) == [1, 2]
    d_i = loaded.adapter.d_in(loaded.model)
    for layer in (1, 2):
        ref = _direct_covariance(loaded, layer, corpus, n_tokens, max_len)
        assert got[layer].shape == (d_i, d_i)
        assert got[layer].dtype == torch.float64
        assert _close(got[layer], ref), f"layer {layer}: streamed C0 differs from K Kᵀ / N"
    # n_tokens is exact: one token fewer gives a measurably different mean.
    fewer = _direct_covariance(loaded, 1, corpus, n_tokens - 1, max_len)
    assert not _close(got[1], fewer)


@pytest.mark.parametrize("arch", ARCHES)
def test_forward_stops_after_last_requested_layer(models, corpus, arch):
    loaded = models[arch]
    blocks = loaded.adapter.blocks(loaded.model)
    later, last = _Counter(blocks[2]), _Counter(loaded.adapter.w_out_module(loaded.model, 1))
    head = _Counter(loaded.model.get_output_embeddings())
    try:
        compute_covariance(loaded, [0, 1], corpus, 100, max_len=16, batch_size=4, progress=False)
        assert last.calls > 0
        assert later.calls == 0 and head.calls == 0, "layers after the last requested one ran"
        # The same counters do see the full forward when early stopping is off.
        before = last.calls
        compute_covariance(loaded, [0, 1], corpus, 100, max_len=16, batch_size=4, progress=False,
                           stop_early=False)
        passes = last.calls - before
        assert passes > 0 and later.calls == passes and head.calls == passes
    finally:
        for c in (later, last, head):
            c.remove()


@pytest.mark.parametrize("arch", ARCHES)
def test_padding_excluded(models, corpus, arch):
    loaded = models[arch]
    kwargs = dict(n_tokens=400, max_len=32, dtype=torch.float64, progress=False)
    one = compute_covariance(loaded, [1], corpus, batch_size=1, **kwargs)[1]
    many = compute_covariance(loaded, [1], corpus, batch_size=7, **kwargs)[1]
    assert _close(many, one)  # float32 batching noise only; a padding key would be far larger


def test_result_is_symmetric_psd_mean(models, corpus):
    loaded = models["llama"]
    c = compute_covariance(loaded, [1], corpus, 500, max_len=32, progress=False)[1]
    assert c.dtype == torch.float32
    assert torch.equal(c, c.T)
    assert torch.linalg.eigvalsh(c.double()).min() > -1e-6 * c.abs().max()
    # A mean, not a sum: doubling the token count keeps the scale.
    c2 = compute_covariance(loaded, [1], corpus, 1000, max_len=32, progress=False)[1]
    assert 0.5 < c2.trace() / c.trace() < 2


def test_model_mode_restored(corpus, make_tiny):
    loaded = make_tiny("gpt2", seed=3)
    loaded.model.train()  # dropout on: must be switched off during C0 and restored after
    a = compute_covariance(loaded, [1], corpus, 200, max_len=16, progress=False)[1]
    b = compute_covariance(loaded, [1], corpus, 200, max_len=16, progress=False)[1]
    assert torch.equal(a, b)
    assert loaded.model.training


def test_bad_input(models, corpus, tmp_path):
    loaded = models["llama"]
    with pytest.raises(ValueError, match="layer 4"):
        compute_covariance(loaded, [1, 4], corpus, 10, progress=False)
    with pytest.raises(ValueError, match="n_tokens"):
        compute_covariance(loaded, [1], corpus, 0, progress=False)
    small = tmp_path / "small.txt"
    small.write_text("Just a few words here.", encoding="utf-8")
    with pytest.raises(ValueError, match="only .* tokens"):
        compute_covariance(loaded, [1], text_file_corpus(small), 10_000, progress=False)


# --------------------------------------------------------------------------- cache


def _get(loaded, corpus, **kw):
    args = dict(layers=[1], corpus=corpus, n_tokens=200, max_len=16, progress=False)
    args.update(kw)
    return get_covariance(loaded, **args)


def test_cache_hit_runs_no_forward(models, corpus):
    loaded = models["qwen2"]
    calls = _Counter(loaded.model)
    try:
        first = _get(loaded, corpus, layers=[1, 2])
        after_first = calls.calls
        assert after_first > 0
        files = sorted((Path(os.environ["OTELAB_CACHE"]) / "covariance").glob("*.safetensors"))
        assert len(files) == 2
        second = _get(loaded, corpus, layers=[2, 1])
        assert calls.calls == after_first, "a cache hit ran the model"
        for layer in (1, 2):
            assert torch.equal(first[layer], second[layer])
        # A layer missing from the cache is computed (the cached one is reused).
        _get(loaded, corpus, layers=[1, 3])
        assert calls.calls > after_first
    finally:
        calls.remove()


@pytest.mark.parametrize("change", ["n_tokens", "layer", "corpus", "fingerprint", "max_len", "dtype"])
def test_cache_keyed_on_every_field(models, corpus, tmp_path, change):
    loaded = models["gpt2"]
    base = _get(loaded, corpus)[1]
    kw: dict = {}
    target = loaded
    if change == "n_tokens":
        kw["n_tokens"] = 201
    elif change == "layer":
        kw["layers"] = [2]
    elif change == "corpus":
        other = tmp_path / "other.txt"
        other.write_text("\n\n".join(_paragraphs(60, seed=1)), encoding="utf-8")
        kw["corpus"] = text_file_corpus(other)
    elif change == "fingerprint":
        target = dataclasses.replace(loaded, fingerprint=loaded.fingerprint + "-edited")
    elif change == "max_len":
        kw["max_len"] = 17
    else:
        kw["dtype"] = torch.float64
    calls = _Counter(target.model)
    try:
        got = _get(target, kw.pop("corpus", corpus), **kw)
        assert calls.calls > 0, f"changing {change} reused the cache"
    finally:
        calls.remove()
    if change == "fingerprint":  # same weights here, so the recomputed value is the same
        assert _close(got[1], base)


def _only_cache_file(layer: int = 1) -> Path:
    (path,) = (Path(os.environ["OTELAB_CACHE"]) / "covariance").glob(f"C0-L{layer}-*.safetensors")
    return path


def _flip_last_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(1, 9):  # the end of the file is tensor data
        data[-i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, reason", [
    (_flip_last_bytes, "checksum"),
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "cannot be read"),
    (lambda p: p.write_bytes(b"not a safetensors file"), "cannot be read"),
])
def test_corrupted_cache_detected_and_recomputed(models, corpus, damage, reason):
    loaded = models["gptj"]
    good = _get(loaded, corpus)[1]
    path = _only_cache_file()
    damage(path)
    calls = _Counter(loaded.model)
    try:
        with pytest.warns(CovarianceCacheWarning, match=reason) as record:
            again = _get(loaded, corpus)[1]
        assert path.name in str(record[0].message)
        assert calls.calls > 0
    finally:
        calls.remove()
    assert torch.equal(again, good)
    with warnings.catch_warnings():  # the rewritten file is valid again
        warnings.simplefilter("error", CovarianceCacheWarning)
        assert torch.equal(_get(loaded, corpus)[1], good)


def test_metadata_mismatch_recomputed(models, corpus):
    from safetensors import safe_open
    from safetensors.torch import save_file

    loaded = models["llama"]
    good = _get(loaded, corpus)[1]
    path = _only_cache_file()
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensor = f.get_tensor("C0")
    # A valid file at the right place, but for another request (n_tokens 999), with a
    # correct checksum: only the metadata comparison can catch it.
    wrong = dict(json.loads(meta["otelab_request"]), n_tokens=999)
    save_file({"C0": tensor * 2}, str(path), metadata=dict(meta, otelab_request=json.dumps(wrong)))
    with pytest.warns(CovarianceCacheWarning, match=r"does not match the request.*n_tokens"):
        again = _get(loaded, corpus)[1]
    assert torch.equal(again, good)


def test_cache_path_depends_on_request(models):
    loaded = models["llama"]
    a = _request(loaded, 1, "c", 100, 16, torch.float32)
    b = _request(loaded, 1, "c", 101, 16, torch.float32)
    assert cache_path(a, Path("/x")) != cache_path(b, Path("/x"))
    assert cache_path(a, Path("/x")).name.startswith("C0-L1-")


# --------------------------------------------------------------------------- corpora


def test_text_file_corpus(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("First line\ncontinues.\n\n\nSecond paragraph.\n \nThird.\n", encoding="utf-8")
    paragraphs = text_file_corpus(path)
    assert list(paragraphs.texts()) == ["First line continues.", "Second paragraph.", "Third."]
    assert list(paragraphs.texts()) == list(paragraphs.texts())  # a fresh iterator each time
    lines = text_file_corpus(path, split="line")
    assert list(lines.texts()) == ["First line", "continues.", "Second paragraph.", "Third."]
    assert lines.id != paragraphs.id
    old_id = paragraphs.id
    path.write_text("Other text.\n", encoding="utf-8")
    assert text_file_corpus(path).id != old_id, "the id must change with the file's content"
    with pytest.raises(ValueError, match="split"):
        text_file_corpus(path, split="word")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        text_file_corpus(tmp_path / "nope.txt")


def test_json_corpus_sorted_and_validated(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"Zebra": {"title": "Zebra", "extract": "Zebras are striped."},
                                "Apple": {"title": "Apple", "extract": "An apple is a fruit."},
                                "Empty": {"title": "Empty", "extract": "  "}}), encoding="utf-8")
    assert list(json_corpus(path).texts()) == ["An apple is a fruit.", "Zebras are striped."]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Apple": {"title": "Apple"}}), encoding="utf-8")
    with pytest.raises(ValueError, match="'Apple'.*extract"):
        list(json_corpus(bad).texts())


def test_get_corpus(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("Hello.\n", encoding="utf-8")
    assert get_corpus(str(txt)).id.startswith("text:a.txt:")
    c = text_file_corpus(txt)
    assert get_corpus(c) is c
    with pytest.raises(ValueError, match="no-such-corpus"):
        get_corpus("no-such-corpus")


@pytest.fixture
def shared_wiki(data_dir, monkeypatch) -> Path:
    path = data_dir / "corpus" / "wikipedia_vital_summaries_en.json"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    monkeypatch.setenv("OTELAB_DATA_DIR", str(data_dir))   # wiki_corpus() reads it
    return path


def test_shared_wiki_file_by_path(shared_wiki, monkeypatch):
    path = shared_wiki
    corpus = json_corpus(path)
    docs = list(corpus.texts())
    assert len(docs) == 10_033
    assert all(isinstance(d, str) and d for d in docs)
    # wiki_corpus() reads the same file from OTELAB_DATA_DIR without any download.
    import otelab.cache

    def no_network(*args, **kwargs):
        raise AssertionError("wiki_corpus tried to download although OTELAB_DATA_DIR has the file")

    monkeypatch.setattr(otelab.cache, "fetch_from_wheel", no_network)
    wiki = wiki_corpus()
    assert wiki.id == json_corpus(path, name="wiki").id
    assert next(wiki.texts()) == docs[0]


@pytest.mark.slow
def test_smollm2_covariance_on_wiki(tmp_path, shared_wiki):
    from otelab.models.loading import load_model

    path = shared_wiki
    loaded = load_model("smollm2-135m", device="cpu")
    layers = [3, 4, 5, 6, 7]
    cov = get_covariance(loaded, layers, corpus=json_corpus(path, name="wiki"), n_tokens=2000,
                         progress=False, directory=tmp_path / "cov")
    assert sorted(cov) == layers
    for layer, c in cov.items():
        assert c.shape == (1536, 1536)
        assert torch.isfinite(c).all()
        assert torch.equal(c, c.T)
        eig = torch.linalg.eigvalsh(c.double())  # ascending
        assert eig[-1] > 0
        assert eig[0] > -1e-6 * eig[-1], f"layer {layer}: C0 is not PSD"


def test_cached_covariance_is_owned_memory(models, corpus):
    """Rewriting or truncating the cache file under a live session must not change its C0."""
    lm = models["llama"]
    get_covariance(lm, [1], corpus=corpus, n_tokens=300, progress=False)
    c = get_covariance(lm, [1], corpus=corpus, n_tokens=300, progress=False)[1]   # from the file
    before = c.clone()
    path = next((Path(os.environ["OTELAB_CACHE"]) / "covariance").glob("C0-L1-*.safetensors"))
    size = path.stat().st_size
    with open(path, "r+b") as f:                 # in place, as another process rewriting it would
        f.seek(size - 4 * c.numel())
        f.write(b"\x00" * (4 * c.numel()))
    assert torch.equal(c, before)
    with open(path, "r+b") as f:
        f.truncate(100)
    assert torch.equal(c, before)                # a mapped page would now raise SIGBUS
