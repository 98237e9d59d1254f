"""The `otelab` command line, end to end on a tiny model."""
from __future__ import annotations

import json

from otelab.cli import build_parser, main


def test_every_command_is_wired():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"verify", "edit", "eval", "demo"} <= set(sub.choices)


def test_edit_writes_steps_and_a_loadable_session(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i} talks about cities, rivers and people." for i in range(200)))
    reqs = tmp_path / "reqs.jsonl"
    reqs.write_text("\n".join(json.dumps(d) for d in [
        {"prompt": "{} lives in the city of", "subject": "Alice", "target_new": "Paris"},
        {"prompt": "{} works as a", "subject": "Bob", "target_new": "doctor"},
        {"prompt": "The favourite food of {} is", "subject": "Carol", "target_new": "pizza"}]))
    out = tmp_path / "run"
    rc = main(["edit", "--model", "tiny-llama", "--requests", str(reqs), "--batch", "2",
               "--corpus", str(corpus), "--cov-tokens", "400", "--out", str(out)])
    assert rc == 0
    steps = sorted((out / "steps").glob("step_*.json"))
    assert [json.loads(p.read_text())["step"] for p in steps] == [1, 2]
    assert len(json.loads(steps[1].read_text())["requests"]) == 1
    printed = capsys.readouterr().out
    assert "‖Δ‖" in printed and "saved the session" in printed

    from otelab.engine import EditSession
    from otelab.models import load_model
    s = EditSession.load(out / "session", load_model("tiny-llama"), progress=False)
    assert s.n_steps == 2 and [r.subject for r in s.requests] == ["Alice", "Bob", "Carol"]


def test_edit_rejects_a_bad_request_before_loading_anything(tmp_path):
    import pytest

    from otelab.requests import RequestError
    reqs = tmp_path / "bad.json"
    reqs.write_text(json.dumps([{"prompt": "Someone lives in", "subject": "Dave", "target_new": "Rome"}]))
    with pytest.raises(RequestError, match="not in the prompt"):
        main(["edit", "--model", "tiny-llama", "--requests", str(reqs), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
