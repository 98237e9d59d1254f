"""The value optimisation: per-request early stopping, batch-mate independence, chunks."""
import pytest
import torch

from otelab.engine import values as V
from otelab.data.loaders import load_factbank, sample_records
from otelab.engine.keys import context_templates

REQS = [r.request() for r in load_factbank(n=8)]


@pytest.fixture(scope="module")
def lm(make_tiny):
    m = make_tiny("llama")
    m.preset = m.preset.replace(v_steps=8)
    return m


@pytest.fixture
def staggered(lm, monkeypatch):
    """An early-stop threshold that stops the requests at different steps (read off a run without it)."""
    monkeypatch.setattr(V, "EARLY_STOP_NLL", float("-inf"))
    free = V.compute_values(lm, REQS)
    monkeypatch.setattr(V, "EARLY_STOP_NLL", float(torch.tensor(free.losses[4]).median()))
    return V.EARLY_STOP_NLL


def test_rows_stop_on_their_own_nll(lm, staggered):
    res = V.compute_values(lm, REQS)
    assert len(set(res.row_steps)) > 1, "the threshold should stop requests at different steps"
    assert res.steps == max(res.row_steps) == len(res.losses)
    for j, s in enumerate(res.row_steps):
        traj = [row[j] for row in res.losses]
        if s < lm.preset.v_steps:                      # stopped early: below the threshold then, not before
            assert traj[s - 1] < staggered and all(x >= staggered for x in traj[:s - 1])
        assert all(x == traj[s - 1] for x in traj[s:])  # frozen afterwards


def test_value_does_not_depend_on_batch_mates(lm, staggered):
    together = V.compute_values(lm, REQS)
    shuffled = sample_records(list(range(len(REQS))), len(REQS), seed=1)
    other = V.compute_values(lm, [REQS[i] for i in shuffled], chunk=3)
    for k, i in enumerate(shuffled):
        alone = V.compute_values(lm, [REQS[i]])
        assert alone.row_steps == [together.row_steps[i]] == [other.row_steps[k]]
        # BLAS is not bitwise batch-invariant: compare with a tolerance
        torch.testing.assert_close(alone.z[0], together.z[i], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(other.z[k], together.z[i], rtol=1e-5, atol=1e-5)


def test_rebuilding_the_forward_and_the_full_forward_agree(lm, staggered, monkeypatch):
    ref = V.compute_values(lm, REQS[:5], cached=False)   # the seed code's full forward
    for share in (0.0, 1.0):                              # never / always rebuild when a row stops
        monkeypatch.setattr(V, "REBUILD_BELOW", share)
        res = V.compute_values(lm, REQS[:5])
        assert res.row_steps == ref.row_steps
        torch.testing.assert_close(res.z, ref.z, rtol=1e-4, atol=1e-5)


def test_concat_keeps_request_order_and_pads_losses(lm, staggered):
    whole = V.compute_values(lm, REQS[:6])
    parts = V.compute_values(lm, REQS[:6], chunk=4)
    assert parts.row_steps == whole.row_steps and len(parts.losses) == parts.steps
    torch.testing.assert_close(parts.z, whole.z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(parts.losses), torch.tensor(whole.losses), rtol=1e-4, atol=1e-5)


def test_bad_arguments_are_refused(lm):
    with pytest.raises(ValueError, match="no requests"):
        V.compute_values(lm, [])
    with pytest.raises(ValueError, match="chunk"):
        V.compute_values(lm, REQS[:1], chunk=0)
    with pytest.raises(ValueError, match="first template"):
        V.compute_values(lm, REQS[:1], templates=context_templates(lm)[1:])


def test_sample_records_is_seeded():
    pool = list(range(100))
    a, b = sample_records(pool, 10, seed=0), sample_records(pool, 10, seed=0)
    assert a == b and len(set(a)) == 10 and a != sample_records(pool, 10, seed=1)
    with pytest.raises(ValueError, match="cannot draw 101"):
        sample_records(pool, 101, seed=0)
