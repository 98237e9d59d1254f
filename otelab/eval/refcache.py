"""The unedited model's references on disk: computed once per model and evaluation, read back by later runs.

A long stream's evaluation compares every checkpoint with what the UNEDITED model
said (:class:`otelab.eval.baseline.Baseline`, general-capability answers). Like the
value bank, those answers depend only on the unedited model and on what is
evaluated, so a run stores them under the cache (``references/<key>.pt`` with a
``.json`` beside it) and the next run with the same model and inputs reads them
instead of spending minutes recomputing them.

The key is the SHA-256 of everything the answers depend on (the model's
fingerprint, the prompts, texts, tasks and sizes, otelab's version and
:data:`FORMAT`); the file is checked against the SHA-256 its ``.json`` records
and loaded with ``torch.load(weights_only=True)``. A missing, torn or corrupted
entry is recomputed and rewritten (atomically); nothing else is ever touched.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from otelab.cache import atomic_write_bytes, atomic_write_json, cache_dir

__all__ = ["FORMAT", "reference_key", "default_dir", "load", "save"]

FORMAT = "otelab-references/1"  # bump when what a reference holds, or how it is computed, changes


def reference_key(request: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a JSON-able request, with :data:`FORMAT` and otelab's version mixed in."""
    try:
        version = metadata.version("otelab")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    text = json.dumps({"format": FORMAT, "otelab": version, **request}, sort_keys=True, ensure_ascii=False,
                      default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_dir() -> Path:
    """``<otelab cache>/references``."""
    return cache_dir("references")


def _paths(directory: Path, key: str) -> tuple[Path, Path]:
    return directory / f"{key[:32]}.pt", directory / f"{key[:32]}.json"


def load(directory: str | Path, key: str) -> Optional[dict[str, Any]]:
    """The stored state for ``key``, or None when there is none or it fails its checks.

    Arguments:
        directory: the references folder.
        key: :func:`reference_key` of the request.

    Returns:
        The state dict :func:`save` stored, verified (SHA-256 of the file, the key inside it).
    """
    data_path, meta_path = _paths(Path(directory), key)
    if not (data_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        raw = data_path.read_bytes()
        if meta.get("key") != key or hashlib.sha256(raw).hexdigest() != meta.get("sha256"):
            return None
        stored = torch.load(io.BytesIO(raw), weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError, KeyError, AttributeError, TypeError, pickle.UnpicklingError):
        return None
    if not isinstance(stored, dict) or stored.get("key") != key:
        return None
    return stored["state"]


def save(directory: str | Path, key: str, state: Mapping[str, Any], summary: Mapping[str, Any] = ()) -> Path:
    """Store ``state`` for ``key``: the data file first, then its ``.json`` (so a torn write reads as missing).

    Arguments:
        directory: the references folder (created when missing).
        key: :func:`reference_key` of the request.
        state: plain containers and tensors.
        summary: a few human-readable facts for the ``.json`` (model, sizes).

    Returns:
        The data file's path.
    """
    data_path, meta_path = _paths(Path(directory), key)
    buf = io.BytesIO()
    torch.save({"key": key, "state": dict(state)}, buf)
    raw = buf.getvalue()
    atomic_write_bytes(data_path, raw)
    atomic_write_json(meta_path, {"format": FORMAT, "key": key, "sha256": hashlib.sha256(raw).hexdigest(),
                                  "bytes": len(raw), **dict(summary)})
    return data_path
