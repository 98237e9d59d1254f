"""The preserved covariance C0 = mean over tokens of k kᵀ, streamed and cached.

k is the input to a layer's MLP output matrix W_out (``down_proj`` / ``c_proj`` /
``fc_out``) at one token of ordinary text: the same kind of vector as an edit key.
C0 is the raw (uncentred) second moment, divided by the token count so that it
is a mean, not a sum, and does not grow with the corpus.

How it is computed (``compute_covariance``):

- documents from a ``Corpus`` are tokenised one by one (the tokenizer's own
  special tokens included, as for any prompt), each truncated to ``max_len``;
  the last document is cut so that exactly ``n_tokens`` tokens are used;
- documents are right-padded into batches; padding positions are masked out
  (with causal attention, right padding never changes the real tokens' keys);
- forward pre-hooks on the W_out modules add kᵀk of the real tokens into float64
  accumulators, all requested layers in one pass;
- the hook on the last requested layer raises a private exception that ends the
  forward there, so the upper layers and the LM head are never run.

Results are cached as safetensors files, one per layer, under
``cache_dir("covariance")``. The file's metadata holds the exact request (model
fingerprint, layer, corpus id, token count, max_len, dtype) and the SHA-256 of the
tensor bytes. ``get_covariance`` reuses a file only when both match; a mismatching,
truncated or corrupted file is reported with a warning and recomputed. What it returns
is always owned memory (a copy, never a mapping of the file).
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import torch

from otelab.config import CI_COV_TOKENS, ci_size
from otelab.models.tokens import pad_batch

if TYPE_CHECKING:
    from otelab.data.corpus import Corpus
    from otelab.models.loading import LoadedModel

CACHE_FORMAT = 1
DEFAULT_N_TOKENS = 100_000
_TENSOR_NAME = "C0"


class CovarianceCacheWarning(UserWarning):
    """A cached covariance file was ignored (mismatch, corruption) and recomputed."""


class _StopForward(Exception):
    """Raised by the hook on the last needed layer to end the forward pass early."""


def _normalise_layers(loaded: "LoadedModel", layers: int | Iterable[int]) -> list[int]:
    """Sorted unique layer indices, each checked against the model's block count."""
    layer_list = [layers] if isinstance(layers, int) else list(layers)
    if not layer_list:
        raise ValueError("layers is empty: give at least one layer index")
    n_blocks = len(loaded.adapter.blocks(loaded.model))
    for layer in layer_list:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_blocks:
            raise ValueError(f"layer {layer!r} is not a layer index of this model "
                             f"(it has {n_blocks} layers: 0..{n_blocks - 1})")
    return sorted(set(layer_list))


def _token_batches(tokenizer, corpus: "Corpus", n_tokens: int, max_len: int,
                   batch_size: int) -> Iterator[list[list[int]]]:
    """Yield batches of token-id lists holding exactly ``n_tokens`` tokens in total.

    Stops early (with fewer tokens) only if the corpus runs out.
    """
    remaining, batch = n_tokens, []
    for text in corpus.texts():
        ids = tokenizer(text, truncation=True, max_length=max_len)["input_ids"][:remaining]
        if not ids:
            continue
        batch.append(list(ids))
        remaining -= len(ids)
        if remaining == 0 or len(batch) == batch_size:
            yield batch
            batch = []
        if remaining == 0:
            return
    if batch:
        yield batch


def compute_covariance(loaded: "LoadedModel", layers: int | Iterable[int], corpus: "Corpus",
                       n_tokens: int, max_len: int = 128, batch_size: int = 8,
                       dtype: torch.dtype = torch.float32, progress: bool = True,
                       stop_early: bool = True) -> dict[int, torch.Tensor]:
    """Compute C0 = mean_t k_t k_tᵀ at the input of W_out for several layers, in one pass.

    Arguments:
        loaded: the model (``LoadedModel``: model, tokenizer, adapter, device).
        layers: one layer index or several; duplicates are ignored.
        corpus: where the text comes from (``otelab.data.corpus``).
        n_tokens: exactly this many non-padding tokens are used.
        max_len: each document is truncated to this many tokens.
        batch_size: documents per forward pass.
        dtype: dtype of the returned matrices (accumulation is always float64).
        progress: show a tqdm progress bar over tokens.
        stop_early: end each forward after the last requested layer's W_out input
            (the default); ``False`` runs the whole model, for benchmarks only.

    Returns:
        ``{layer: C0}`` with each C0 of shape [d_i, d_i], symmetric, on ``loaded.device``.

    Raises:
        ValueError: for a bad layer index, non-positive sizes, or a corpus with fewer
            than ``n_tokens`` tokens.
    """
    from tqdm.auto import tqdm

    layer_list = _normalise_layers(loaded, layers)
    for name, value in (("n_tokens", n_tokens), ("max_len", max_len), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    model, tokenizer, device = loaded.model, loaded.tokenizer, torch.device(loaded.device)
    # MPS has no float64; accumulate on the CPU there.
    acc_device = torch.device("cpu") if device.type == "mps" else device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    last = layer_list[-1]

    sums: dict[int, torch.Tensor] = {}  # layer -> [d_i, d_i] float64
    state: dict[str, torch.Tensor] = {}

    def make_hook(layer: int):
        def hook(module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))  # [B, T, d_i]
            k = x[state["mask"]].to(acc_device, torch.float64)  # [n, d_i]
            if layer not in sums:
                sums[layer] = torch.zeros(k.shape[1], k.shape[1], dtype=torch.float64,
                                          device=acc_device)
            sums[layer].addmm_(k.T, k)
            if stop_early and layer == last:
                raise _StopForward
        return hook

    handles = [loaded.adapter.w_out_module(model, layer).register_forward_pre_hook(
        make_hook(layer), with_kwargs=True) for layer in layer_list]
    was_training = model.training
    model.eval()  # dropout off: C0 is a property of the deployed model
    seen = 0
    try:
        with torch.no_grad(), tqdm(total=n_tokens, unit="tok", disable=not progress,
                                   desc=f"C0 layers {layer_list}") as bar:
            for batch in _token_batches(tokenizer, corpus, n_tokens, max_len, batch_size):
                input_ids, mask = pad_batch(batch, pad_id, device)
                state["mask"] = mask.bool()
                try:
                    model(input_ids=input_ids, attention_mask=mask, use_cache=False)
                except _StopForward:
                    pass
                count = int(mask.sum())
                seen += count
                bar.update(count)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if seen < n_tokens:
        raise ValueError(f"corpus {corpus.id!r} has only {seen} tokens (at max_len={max_len}), "
                         f"fewer than n_tokens={n_tokens}")
    out = {}
    for layer in layer_list:
        c = sums[layer] / seen  # [d_i, d_i]
        out[layer] = ((c + c.T) / 2).to(device=device, dtype=dtype)
    return out


# --------------------------------------------------------------------------- cache


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _request(loaded: "LoadedModel", layer: int, corpus_id: str, n_tokens: int, max_len: int,
             dtype: torch.dtype) -> dict:
    """Everything a cached C0 must match to be reused."""
    return {"format": CACHE_FORMAT, "fingerprint": str(loaded.fingerprint), "layer": layer,
            "corpus": corpus_id, "n_tokens": n_tokens, "max_len": max_len,
            "dtype": _dtype_name(dtype)}


def cache_path(request: dict, directory: Path) -> Path:
    """The file for one request: ``C0-L<layer>-<sha256 of the request>.safetensors``."""
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:24]
    return Path(directory) / f"C0-L{request['layer']}-{digest}.safetensors"


def _tensor_sha256(t: torch.Tensor) -> str:
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def _save(path: Path, request: dict, c: torch.Tensor, info: dict) -> None:
    from safetensors.torch import save

    from otelab.cache import atomic_write_bytes

    c = c.detach().cpu().contiguous()
    metadata = {"otelab_request": json.dumps(request, sort_keys=True),
                "sha256": _tensor_sha256(c),
                "otelab_info": json.dumps(info, sort_keys=True)}
    atomic_write_bytes(path, save({_TENSOR_NAME: c}, metadata=metadata))


def _load(path: Path, request: dict) -> tuple[torch.Tensor | None, str | None]:
    """Read a cached C0; returns (tensor, None) or (None, why it cannot be used)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "otelab_request" not in meta or "sha256" not in meta:
                return None, "its metadata has no otelab request/checksum"
            stored = json.loads(meta["otelab_request"])
            if stored != request:
                differ = sorted(k for k in set(stored) | set(request)
                                if stored.get(k) != request.get(k))
                return None, f"its metadata does not match the request (fields {differ})"
            # a copy: a tensor mapped from the file would change (or SIGBUS) if the file is rewritten
            c = f.get_tensor(_TENSOR_NAME).clone()
    except Exception as e:  # truncated or garbled file: safetensors/json raise various types
        return None, f"it cannot be read ({type(e).__name__}: {e})"
    if _tensor_sha256(c) != meta["sha256"]:
        return None, "its checksum does not match (file corrupted)"
    if c.ndim != 2 or c.shape[0] != c.shape[1] or _dtype_name(c.dtype) != request["dtype"]:
        return None, f"it holds a tensor of shape {tuple(c.shape)} and dtype {c.dtype}"
    return c, None


def resolve_n_tokens(loaded: "LoadedModel", n_tokens: int | None = None) -> int:
    """The token count :func:`get_covariance` uses for ``n_tokens``.

    Arguments:
        loaded: the model; its preset's ``mom2_n_tokens`` is the default.
        n_tokens: an explicit count, or ``None``.
    Returns:
        ``n_tokens``, or the preset's ``mom2_n_tokens`` (``DEFAULT_N_TOKENS`` if it has none),
        capped at ``CI_COV_TOKENS`` at CI size.
    """
    if n_tokens is not None:
        return n_tokens
    n_tokens = int(getattr(loaded.preset, "mom2_n_tokens", None) or DEFAULT_N_TOKENS)
    return min(n_tokens, CI_COV_TOKENS) if ci_size() else n_tokens


def get_covariance(loaded: "LoadedModel", layers: int | Iterable[int],
                   corpus: "Corpus | str | None" = None, n_tokens: int | None = None,
                   max_len: int = 128, batch_size: int = 8, dtype: torch.dtype = torch.float32,
                   progress: bool = True, refresh: bool = False,
                   directory: str | Path | None = None) -> dict[int, torch.Tensor]:
    """C0 for each requested layer, from the cache when possible, else computed and cached.

    Layers missing from the cache are computed together in one pass. A cache file
    whose metadata differs from the request, whose checksum fails, or which cannot
    be parsed is never used: a ``CovarianceCacheWarning`` names it and the reason,
    and it is recomputed and overwritten.

    Arguments:
        loaded: the model (``LoadedModel``); its ``fingerprint`` keys the cache.
        layers: one layer index or several.
        corpus: a ``Corpus``, a spec for ``otelab.data.corpus.get_corpus`` ("wiki",
            "wikitext", a path), or ``None`` for the default Wikipedia corpus.
        n_tokens: tokens to average over; ``None`` uses the preset's ``mom2_n_tokens``
            (``DEFAULT_N_TOKENS`` if the preset has none), capped at ``CI_COV_TOKENS`` at CI size.
        max_len, batch_size, dtype, progress: as in ``compute_covariance``.
        refresh: recompute even if a valid cache file exists.
        directory: cache folder; default ``cache_dir("covariance")``.

    Returns:
        ``{layer: C0}``, each [d_i, d_i] of ``dtype`` on ``loaded.device``.
    """
    from otelab.cache import cache_dir
    from otelab.data.corpus import get_corpus

    layer_list = _normalise_layers(loaded, layers)
    corpus = get_corpus(corpus)
    n_tokens = resolve_n_tokens(loaded, n_tokens)
    folder = Path(directory) if directory is not None else cache_dir("covariance")
    folder.mkdir(parents=True, exist_ok=True)

    out: dict[int, torch.Tensor] = {}
    todo: dict[int, tuple[dict, Path]] = {}
    for layer in layer_list:
        request = _request(loaded, layer, corpus.id, n_tokens, max_len, dtype)
        path = cache_path(request, folder)
        if path.exists() and not refresh:
            c, why = _load(path, request)
            if c is not None:
                out[layer] = c.to(loaded.device)
                continue
            warnings.warn(f"ignoring cached covariance {path}: {why}; recomputing it",
                          CovarianceCacheWarning, stacklevel=2)
        todo[layer] = (request, path)

    if todo:
        start = time.perf_counter()
        fresh = compute_covariance(loaded, list(todo), corpus, n_tokens, max_len=max_len,
                                   batch_size=batch_size, dtype=dtype, progress=progress)
        info = {"seconds": round(time.perf_counter() - start, 3),
                "layers_in_pass": sorted(todo), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for layer, (request, path) in todo.items():
            _save(path, request, fresh[layer], info)
            out[layer] = fresh[layer]
    return {layer: out[layer] for layer in layer_list}
