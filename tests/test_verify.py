"""Tests for otelab.verify (``otelab verify``): JSON keys, exit status, the failing path."""
from __future__ import annotations

import argparse
import json

import pytest

from otelab import verify


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    verify.add_arguments(p)
    return p.parse_args(list(argv))


def test_quick_json_passes(capsys):
    assert verify.run(_args("--json", "--quick", "--seeds", "2")) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"identities", "negatives", "toy_collapse", "passed"} <= set(out)
    assert out["toy_collapse"] is None                      # --quick skips the toy
    names = [r["name"] for r in out["identities"]]
    assert len(names) == len(verify.IDENTITIES) >= 12
    for r in out["identities"]:
        assert set(r) >= {"name", "ref", "max_rel_residual", "passed"}
        assert r["passed"] and r["max_rel_residual"] < 1e-9
    refs = " ".join(r["ref"] for r in out["identities"])
    for ref in ("Lemma 3.1", "Prop. 3.2", "Remark A.1", "Cor. A.2", "Prop. A.3", "Prop. 3.5", "Remark A.4",
                "RLSEdit"):
        assert ref in refs
    naive = next(r for r in out["negatives"] if r["name"].startswith("naive"))
    assert naive["grows"] and naive["ote_distance"][-1] > naive["ote_distance"][0]


def test_table_output(capsys):
    assert verify.main(["--quick", "--seeds", "1"]) == 0
    text = capsys.readouterr().out
    assert "Lemma 3.1" in text and "pass" in text and "identities hold" in text


def test_failing_identity_exits_1(monkeypatch, capsys):
    broken = list(verify.IDENTITIES) + [("a broken identity", "nowhere", lambda i, quick: 0.5)]
    monkeypatch.setattr(verify, "IDENTITIES", broken)
    assert verify.run(_args("--json", "--quick", "--seeds", "1")) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is False and out["identities"][-1]["passed"] is False


def test_bad_seeds():
    with pytest.raises(ValueError, match="seeds"):
        verify.verify(seeds=0)


@pytest.mark.slow
def test_full_verify_json(capsys):
    assert verify.run(_args("--json")) == 0
    out = json.loads(capsys.readouterr().out)
    toy = out["toy_collapse"]
    assert len(toy["nullspace_preserved_error_by_step"]) == len(toy["full_preserved_error_by_step"]) == 200
    assert toy["acceptance"]
