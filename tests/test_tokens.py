"""otelab.models.tokens: the one padding routine of the engine and the evaluation layer."""
from __future__ import annotations

import pytest
import torch

from otelab.models.tokens import pad_batch, position_ids


def test_right_and_left_padding_place_the_tokens_and_the_mask():
    seqs = [[5, 6, 7], [8]]
    ids, mask = pad_batch(seqs, 0, "cpu")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch(seqs, 9, "cpu", side="left")
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long


def test_position_ids_start_at_each_rows_first_real_token():
    _, mask = pad_batch([[1, 2, 3], [4]], 0, "cpu", side="left")
    assert position_ids(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    _, mask = pad_batch([[1, 2, 3], [4]], 0, "cpu")
    assert position_ids(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


def test_a_bad_padding_side_is_refused():
    with pytest.raises(ValueError, match="padding_side"):
        pad_batch([[1]], 0, "cpu", side="middle")
