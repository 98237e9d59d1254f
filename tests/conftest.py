"""Shared fixtures: tiny random-weight models, small covariances, a few edit requests, the reference-data folder.

Tiny models are cheap (tens of milliseconds once transformers is imported) and edits mutate them, so the model
fixtures build a fresh one per call: no test sees another's edits.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch

from otelab.data.requests import EditRequest
from otelab.models.loading import ARCHES, LoadedModel, tiny_model
from shared import REQUESTS, _eye_cov

REPO = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="session")
def make_tiny() -> Callable[..., LoadedModel]:
    """A factory of fresh tiny random models: ``make_tiny(arch="llama", seed=0, **kwargs)`` (see ``tiny_model``)."""
    def make(arch: str = "llama", seed: int = 0, **kwargs) -> LoadedModel:
        return tiny_model(arch, seed=seed, **kwargs)
    return make


@pytest.fixture
def tiny_llama(make_tiny) -> LoadedModel:
    """A fresh tiny LLaMA (seed 0), private to the test."""
    return make_tiny("llama")


@pytest.fixture(params=ARCHES)
def tiny_any(request, make_tiny) -> LoadedModel:
    """A fresh tiny model of each supported architecture in turn (the test runs once per architecture)."""
    return make_tiny(request.param)


@pytest.fixture
def edit_requests() -> list[EditRequest]:
    """Five edit requests (a fresh list; the requests themselves are immutable)."""
    return list(REQUESTS)


def _spd(d: int, seed: int = 0, n: int | None = None, dtype=torch.float64) -> torch.Tensor:
    """A random symmetric positive-definite ``[d, d]`` matrix, the second moment of ``n`` Gaussian keys.

    Arguments:
        d: the size.
        seed: the generator seed.
        n: how many keys (default ``2 d``, so the matrix is well conditioned).
        dtype: the dtype.
    Returns:
        ``K Kᵀ / n`` for ``K ~ N(0, 1)`` of shape ``[d, n]``.
    """
    n = 2 * d if n is None else n
    K = torch.randn(d, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)   # [d, n]
    return K @ K.T / n


@pytest.fixture(scope="session")
def eye_cov() -> Callable[..., dict[int, torch.Tensor]]:
    """The :func:`_eye_cov` factory: ``eye_cov(lm, scale=1.0)`` -> layer -> ``[d_i, d_i]``."""
    return _eye_cov


@pytest.fixture(scope="session")
def spd() -> Callable[..., torch.Tensor]:
    """The :func:`_spd` factory: ``spd(d, seed=0, n=None)`` -> a random SPD ``[d, d]`` covariance."""
    return _spd


@pytest.fixture(scope="session")
def gen() -> Callable[[int], torch.Generator]:
    """A factory of seeded CPU generators: ``gen(seed)``; tests never touch the global RNG."""
    return lambda seed=0: torch.Generator().manual_seed(seed)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The reference-data folder: ``$OTELAB_DATA_DIR``, else ``../shared/data`` beside the repository; skip if none."""
    root = os.environ.get("OTELAB_DATA_DIR")
    for path in ([Path(root)] if root else []) + [REPO.parent / "shared" / "data"]:
        if path.is_dir():
            return path
    pytest.skip("no reference data: set OTELAB_DATA_DIR (CI points it at ../shared/data)")


# ------------------------------------------------------------------ the demo without downloads

DEMO_TEXTS = ["The river flows through the old town and past the mill before it reaches the sea. " * 3,
              "Many birds spend the winter in warmer regions and return north in the spring to breed. " * 3]


@pytest.fixture
def offline_texts(monkeypatch):
    """Held-out texts without any download (the demo and the workbench read them through otelab.data.texts)."""
    import otelab.data.texts

    monkeypatch.setattr(otelab.data.texts, "held_out_texts", lambda n, min_chars=200: DEMO_TEXTS[:n])


@pytest.fixture
def corpus_file(tmp_path) -> str:
    """A small text file for the preserved covariance (``--corpus``), no download."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(f"Paragraph {i}: the town of Ashford lies on a river; its market sells bread, "
                                 f"cheese and wool to visitors from the north." for i in range(80)))
    return str(path)
