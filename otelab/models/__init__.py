"""Models: presets, architecture adapters (``get_W`` is always ``[d_o, d_i]``), loading, partial forwards.

Models never import the engine or the evaluation layer.
"""
from otelab.models.presets import DEFAULT_PRESET, PRESETS, Preset, get_preset
from otelab.models.loading import LoadedModel, load_model, tiny_model

__all__ = ["DEFAULT_PRESET", "PRESETS", "LoadedModel", "Preset", "get_preset", "load_model", "tiny_model"]
