"""Test data shared by conftest's fixtures and by test modules that need it outside a fixture
(parametrised helpers). Imported as ``shared``: ``from conftest import ...`` would find
``notebooks/conftest.py`` when pytest collects both folders, as CI does."""
from __future__ import annotations

import torch

from otelab.data.requests import EditRequest
from otelab.models.loading import LoadedModel

# five requests: subjects of one to four words, at the start, in the middle and before a possessive
REQUESTS = (
    EditRequest("{} lives in the city of", "Alice Smith", "Paris"),
    EditRequest("The capital of {} is", "Norway", "Rome"),
    EditRequest("{} plays", "Bob", "chess"),
    EditRequest("People in {} speak", "the land of Oz", "French"),
    EditRequest("{}'s favourite food is", "Carol", "pizza"),
)


def _eye_cov(lm: LoadedModel, scale: float = 1.0) -> dict[int, torch.Tensor]:
    """C0 = scale · I for every edited layer of ``lm``: a covariance that needs no corpus.

    Arguments:
        lm: the model.
        scale: the diagonal.
    Returns:
        layer -> ``[d_i, d_i]``.
    """
    return {l: scale * torch.eye(lm.adapter.get_W(lm.model, l).shape[1]) for l in lm.layers}
