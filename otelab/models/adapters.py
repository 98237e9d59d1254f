"""Architecture adapters: where blocks, norms, embeddings and W live; ``get_W`` is always ``[d_o, d_i]``.

The editing code never touches a model's module names directly: an *adapter*
(one small class per architecture) knows where the transformer blocks, the final
norm, the embeddings and the edited matrix W live, and hides GPT-2's Conv1D,
which stores Wᵀ.
"""
from __future__ import annotations

import torch

# --------------------------------------------------------------------------- adapters


class ArchAdapter:
    """Where things live in one architecture; W is always handed out as ``[d_o, d_i]``.

    Subclasses set the dotted paths below. ``module_template`` can be overridden per
    instance (e.g. to edit another matrix with the same layout).
    """

    arch: str = ""
    model_types: tuple[str, ...] = ()
    blocks_path: str = ""
    norm_path: str = ""
    embed_path: str = ""
    unembed_path: str = "lm_head"
    default_template: str = ""
    transposed: bool = False  # True when the module stores Wᵀ ([d_i, d_o]), as GPT-2's Conv1D does

    def __init__(self, module_template: str | None = None):
        self.module_template = module_template or self.default_template

    def __repr__(self) -> str:
        return f"{type(self).__name__}(module_template={self.module_template!r})"

    def blocks(self, model) -> torch.nn.ModuleList:
        """The ModuleList of transformer blocks."""
        return model.get_submodule(self.blocks_path)

    def block(self, model, layer: int) -> torch.nn.Module:
        """Transformer block ``layer`` (its output is the residual stream after that layer)."""
        blocks = self.blocks(model)
        if not 0 <= layer < len(blocks):
            raise IndexError(f"layer {layer} out of range: the model has {len(blocks)} layers (0..{len(blocks) - 1})")
        return blocks[layer]

    def n_layers(self, model) -> int:
        """Number of transformer blocks."""
        return len(self.blocks(model))

    def final_norm(self, model) -> torch.nn.Module:
        """The norm applied before the unembedding."""
        return model.get_submodule(self.norm_path)

    def embed(self, model) -> torch.nn.Embedding:
        """The token embedding."""
        return model.get_submodule(self.embed_path)

    def unembed(self, model) -> torch.nn.Linear:
        """The LM head."""
        return model.get_submodule(self.unembed_path)

    def module_name(self, layer: int) -> str:
        """Dotted name of W's module at ``layer``."""
        return self.module_template.format(layer)

    def w_out_module(self, model, layer: int) -> torch.nn.Module:
        """The module holding W at ``layer`` (its forward input is the key, width d_i)."""
        self.block(model, layer)  # range check with a clear message
        return model.get_submodule(self.module_name(layer))

    def get_W(self, model, layer: int) -> torch.Tensor:
        """W at ``layer`` as a ``[d_o, d_i]`` view sharing storage with the model (detached)."""
        weight = self.w_out_module(model, layer).weight.detach()
        return weight.T if self.transposed else weight  # [d_o, d_i]

    def add_(self, model, layer: int, delta: torch.Tensor) -> None:
        """In place: W[layer] += delta, with delta ``[d_o, d_i]`` cast to W's dtype and device."""
        W = self.get_W(model, layer)  # [d_o, d_i]
        self._check_shape(W, delta, layer, "delta")
        with torch.no_grad():
            W.add_(delta.to(device=W.device, dtype=W.dtype))

    def set_W(self, model, layer: int, new_W: torch.Tensor) -> None:
        """In place: W[layer] = new_W, given ``[d_o, d_i]``."""
        W = self.get_W(model, layer)  # [d_o, d_i]
        self._check_shape(W, new_W, layer, "W")
        with torch.no_grad():
            W.copy_(new_W.to(device=W.device, dtype=W.dtype))

    def d_in(self, model) -> int:
        """d_i: width of the keys (W's input)."""
        return self.get_W(model, 0).shape[1]

    def d_out(self, model) -> int:
        """d_o: width of the values (W's output, the residual stream)."""
        return self.get_W(model, 0).shape[0]

    def _check_shape(self, W: torch.Tensor, given: torch.Tensor, layer: int, what: str) -> None:
        if tuple(given.shape) != tuple(W.shape):
            raise ValueError(f"{what} for layer {layer} ({self.module_name(layer)}) has shape "
                             f"{tuple(given.shape)}, expected [d_o, d_i] = {tuple(W.shape)}")


class GPT2Adapter(ArchAdapter):
    """GPT-2: Conv1D stores W transposed, ``weight`` is ``[d_i, d_o]``."""

    arch, model_types = "gpt2", ("gpt2",)
    blocks_path, norm_path, embed_path = "transformer.h", "transformer.ln_f", "transformer.wte"
    default_template = "transformer.h.{}.mlp.c_proj"
    transposed = True


class GPTJAdapter(ArchAdapter):
    """GPT-J: ``fc_out`` is an ordinary Linear."""

    arch, model_types = "gptj", ("gptj",)
    blocks_path, norm_path, embed_path = "transformer.h", "transformer.ln_f", "transformer.wte"
    default_template = "transformer.h.{}.mlp.fc_out"


class LlamaAdapter(ArchAdapter):
    """LLaMA and Mistral (and SmolLM2): the MLP's ``down_proj``."""

    arch, model_types = "llama", ("llama", "mistral")
    blocks_path, norm_path, embed_path = "model.layers", "model.norm", "model.embed_tokens"
    default_template = "model.layers.{}.mlp.down_proj"


class Qwen2Adapter(LlamaAdapter):
    """Qwen2 / Qwen2.5: laid out like LLaMA."""

    arch, model_types = "qwen2", ("qwen2",)


ADAPTERS: dict[str, type[ArchAdapter]] = {
    cls.arch: cls for cls in (GPT2Adapter, GPTJAdapter, LlamaAdapter, Qwen2Adapter)}
_BY_MODEL_TYPE = {mt: cls for cls in ADAPTERS.values() for mt in cls.model_types}


def detect_adapter(config, module_template: str | None = None) -> ArchAdapter:
    """Pick the adapter for a Hugging Face config from its ``model_type``.

    Arguments:
        config: a ``PretrainedConfig`` (anything with ``model_type``).
        module_template: optional override of the edited module's name template.

    Returns:
        An ``ArchAdapter`` instance.

    Raises:
        ValueError: for an unsupported ``model_type``, listing the supported ones.
    """
    model_type = getattr(config, "model_type", None)
    if model_type not in _BY_MODEL_TYPE:
        raise ValueError(f"unsupported model_type {model_type!r}; otelab supports: "
                         f"{', '.join(sorted(_BY_MODEL_TYPE))}")
    return _BY_MODEL_TYPE[model_type](module_template)
