"""The `otelab` command line, end to end on a tiny model."""
from __future__ import annotations

import json

import pytest

from otelab.cli.main import build_parser, main


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

    from otelab.engine.session import EditSession
    from otelab.models.loading import load_model
    s = EditSession.load(out / "session", load_model("tiny-llama"), progress=False)
    assert s.n_steps == 2 and [r.subject for r in s.requests] == ["Alice", "Bob", "Carol"]


def test_edit_rejects_a_bad_request_before_loading_anything(tmp_path, capsys):
    reqs = tmp_path / "bad.json"
    reqs.write_text(json.dumps([{"prompt": "Someone lives in", "subject": "Dave", "target_new": "Rome"}]))
    rc = main(["edit", "--model", "no-such-model", "--requests", str(reqs), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{reqs}: line 1:" in err and "not in the prompt" in err
    assert not (tmp_path / "o").exists()


BAD_FILES = {  # name: (file name, content, what the one-line message must say)
    "malformed JSON list": ("r.json", '[\n {"prompt": "{} is", "subject": "A", "target_new": "B"},\n {"prompt" "x"}\n]',
                            "line 3, column"),
    "bad JSONL line": ("r.jsonl", '{"prompt": "{} is", "subject": "A", "target_new": "B"}\n\n{"prompt": \n',
                       "line 3, column"),
    "JSONL in a .json file": ("r.json", '{"prompt": "{} is", "subject": "A", "target_new": "B"}\n{oops}\n',
                              "line 2, column"),
    "missing field": ("r.json", '[{"prompt": "{} is", "subject": "A", "target_new": "B"},\n'
                                ' {"prompt": "{} is", "target_new": "B"}]', "line 2: record 1: missing field(s) ['subject']"),
    "wrong type": ("r.jsonl", '{"prompt": "{} is", "subject": "A", "target_new": "B"}\n'
                              '{"prompt": "{} is", "subject": 3, "target_new": "B"}', "line 2: request #1"),
    "two slots": ("r.jsonl", '{"prompt": "{} and {} are", "subject": "A", "target_new": "B"}', "exactly one"),
    "empty file": ("r.json", "", "empty"),
    "no records": ("r.json", "[]", "no records"),
    "not a list": ("r.json", '{"prompt": "{} is", "subject": "A",\n "target_new": "B"}', "expected a JSON list"),
    "CounterFact record": ("cf.json", json.dumps([{"case_id": 7, "requested_rewrite": {
        "prompt": "{} is in", "subject": "X", "target_new": {"str": "Rome"}}}]), "line 1: record 0 (case_id 7)"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_edit_bad_request_files_fail_in_one_line_before_the_model(tmp_path, capsys, kind):
    name, text, message = BAD_FILES[kind]
    f = tmp_path / name
    f.write_text(text)
    rc = main(["edit", "--model", "no-such-model", "--requests", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and str(f) in err and message in err, err
    assert "Traceback" not in err and "could not load model" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("n", ["0", "-1", "x"])
def test_n_must_be_positive_or_all(tmp_path, capsys, n):
    with pytest.raises(SystemExit) as exc:
        main(["edit", "--model", "no-such-model", "--n", n, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "--n" in capsys.readouterr().err


def test_n_means_the_same_for_files_and_the_fact_bank(tmp_path):
    from otelab.cli.edit import count_or_all, read_records
    from otelab.data.loaders import load_factbank
    f = tmp_path / "r.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": "{} is", "subject": f"S{i}", "target_new": "B"}) for i in range(5)))
    assert count_or_all("all") is None and count_or_all("3") == 3
    assert len(read_records(None, 3)) == 3 and len(read_records(str(f), 3)) == 3
    assert len(read_records(None, None)) == len(load_factbank()) and len(read_records(str(f), None)) == 5


@pytest.mark.parametrize("argv, message", [
    (["edit", "--method", "memit", "--mode", "no-ec"], "no-ec"),
    (["edit", "--method", "rlsedit", "--mode", "conflict"], "conflict"),
    (["demo", "--pairs", "memit:no-ec/memit:naive"], "memit:no-ec"),
    (["demo", "--pairs", "memit:aligned/bogus:naive"], "bogus"),
])
def test_invalid_method_mode_combinations_fail_before_the_model(tmp_path, capsys, argv, message):
    rc = main([*argv, "--model", "no-such-model", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "could not load model" not in err, err
    assert not (tmp_path / "o").exists()


def test_edit_refuses_an_out_folder_whose_session_is_not_one(tmp_path, capsys):
    (tmp_path / "o" / "session").mkdir(parents=True)
    (tmp_path / "o" / "session" / "mine.txt").write_text("keep")
    rc = main(["edit", "--model", "no-such-model", "--out", str(tmp_path / "o")])
    assert rc == 2 and "not an otelab session" in capsys.readouterr().err
    assert (tmp_path / "o" / "session" / "mine.txt").read_text() == "keep"


def test_rerunning_edit_into_the_same_out_leaves_no_stale_steps(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i} talks about cities, rivers and people." for i in range(200)))
    reqs = tmp_path / "reqs.jsonl"
    reqs.write_text("\n".join(json.dumps({"prompt": "{} lives in", "subject": s, "target_new": "Paris"})
                              for s in ("Alice", "Bob", "Carol")))
    out = tmp_path / "run"
    common = ["edit", "--model", "tiny-llama", "--requests", str(reqs), "--corpus", str(corpus),
              "--cov-tokens", "400", "--out", str(out)]
    assert main([*common, "--batch", "1"]) == 0
    (out / "steps" / "notes.txt").write_text("mine")
    assert main([*common, "--batch", "2"]) == 0
    names = sorted(p.name for p in (out / "steps").iterdir())
    assert names == ["notes.txt", "step_0001.json", "step_0002.json"]
    assert len(json.loads((out / "steps" / "step_0001.json").read_text())["requests"]) == 2
