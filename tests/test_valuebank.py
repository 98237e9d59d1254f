"""The value bank on tiny models: reuse, integrity, mismatches, resume after SIGKILL, export/import, CLI."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from otelab.engine import values as V
from otelab.cli.main import main
from otelab.data.loaders import load_factbank
from otelab.engine.keys import context_templates
from otelab.models.loading import tiny_model
from otelab.engine.valuebank import ValueBank, ValueBankError, ValueBankWarning

REQS = [r.request() for r in load_factbank(n=6)]
ROOT = Path(__file__).resolve().parent.parent


def tiny(seed=0, **preset):
    m = tiny_model("llama", seed=seed)
    m.preset = m.preset.replace(v_steps=3, **preset)
    return m


@pytest.fixture(scope="module")
def lm():
    return tiny()


def no_compute(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the bank recomputed a stored value")
    monkeypatch.setattr(V, "compute_values", boom)


def test_values_are_stored_and_reused_in_request_order(lm, tmp_path, monkeypatch):
    bank = ValueBank(lm, path=tmp_path, chunk=4, progress=False)
    first = bank.get(REQS)
    direct = V.compute_values(lm, REQS, templates=context_templates(lm))
    torch.testing.assert_close(first.z, direct.z, rtol=1e-5, atol=1e-5)
    assert first.row_steps == direct.row_steps and len(list(tmp_path.glob("shard-*"))) == 2
    no_compute(monkeypatch)
    again = ValueBank(lm, path=tmp_path, progress=False).get([REQS[3], REQS[0], REQS[3]])
    assert torch.equal(again.z, first.z[[3, 0, 3]]) and torch.equal(again.z_init, first.z_init[[3, 0, 3]])
    assert again.row_steps == [first.row_steps[i] for i in (3, 0, 3)]


def test_a_corrupted_shard_is_detected_and_recomputed(lm, tmp_path):
    bank = ValueBank(lm, path=tmp_path, chunk=3, progress=False)
    ref = bank.get(REQS)
    shard = sorted(tmp_path.glob("shard-*.safetensors"))[0]
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF                                           # one flipped bit in the tensor data
    shard.write_bytes(bytes(raw))
    fresh = ValueBank(lm, path=tmp_path, progress=False)
    with pytest.warns(ValueBankWarning, match="checksum"):
        again = fresh.get(REQS)
    torch.testing.assert_close(again.z, ref.z, rtol=1e-5, atol=1e-5)
    assert shard.with_suffix(".bad").exists() and fresh.verify()["bad"] == []


def test_verify_reports_a_damaged_shard(lm, tmp_path):
    ValueBank(lm, path=tmp_path, chunk=3, progress=False).get(REQS)
    shard = sorted(tmp_path.glob("shard-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-10])               # truncated
    bank = ValueBank(lm, path=tmp_path, progress=False)
    with pytest.warns(ValueBankWarning):
        rep = bank.verify()
    assert [name for name, _ in rep["bad"]] == [shard.name] and rep["values"] == 3
    assert len(bank.missing(REQS)) == 3


def test_an_unindexed_shard_is_adopted_after_its_checks(lm, tmp_path, monkeypatch):
    ValueBank(lm, path=tmp_path, chunk=3, progress=False).get(REQS)
    (tmp_path / "index.json").write_text("{not json")         # as if killed while writing (or damaged)
    no_compute(monkeypatch)
    with pytest.warns(ValueBankWarning, match="index"):
        bank = ValueBank(lm, path=tmp_path, progress=False)
    assert bank.missing(REQS) == [] and len(json.loads((tmp_path / "index.json").read_text())["shards"]) == 2


@pytest.mark.parametrize("other", ["fingerprint", "settings", "templates"])
def test_a_mismatched_bank_is_not_reused(lm, tmp_path, other):
    ValueBank(lm, path=tmp_path, progress=False).get(REQS[:2])
    templates = None
    if other == "fingerprint":
        m = tiny(seed=1)
    elif other == "settings":
        m = tiny(v_lr=lm.preset.v_lr * 2)
    else:
        m, templates = lm, context_templates(lm)[:2]
    with pytest.raises(ValueBankError, match="another model or value spec"):
        ValueBank(m, path=tmp_path, templates=templates, progress=False)   # the folder is another bank's
    # without the index, the other spec's shards (e.g. copied in) are ignored and left in place
    (tmp_path / "index.json").unlink()
    with pytest.warns(ValueBankWarning, match="another spec"):
        bank = ValueBank(m, path=tmp_path, templates=templates, progress=False)
    assert len(bank) == 0 and len(bank.missing(REQS[:2])) == 2
    assert len(list(tmp_path.glob("shard-*.safetensors"))) == 1 and not list(tmp_path.glob("*.bad"))


def test_default_location_is_per_spec_under_the_cache(lm, tmp_path, monkeypatch):
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path))
    a, b = ValueBank(lm, progress=False), ValueBank(tiny(seed=1), progress=False)
    assert a.path.parent == b.path.parent == tmp_path.resolve() / "values" and a.path != b.path


def test_export_import_round_trip(lm, tmp_path, monkeypatch):
    src = ValueBank(lm, path=tmp_path / "a", chunk=4, progress=False)
    ref = src.get(REQS)
    file = src.export(tmp_path / "values.safetensors", REQS[:4])
    no_compute(monkeypatch)
    dst = ValueBank.import_(file, lm, path=tmp_path / "b", progress=False)
    assert len(dst) == 4 and dst.missing(REQS) == REQS[4:]
    assert torch.equal(dst.get(REQS[:4]).z, ref.z[:4]) and dst.verify()["bad"] == []
    with pytest.raises(ValueBankError, match="another model"):
        ValueBank.import_(file, tiny(seed=1), path=tmp_path / "c")
    assert not (tmp_path / "c").exists()                       # a refused import writes nothing
    raw = bytearray(file.read_bytes())
    raw[-3] ^= 0x01
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueBankError, match="checksum"):
        ValueBank.import_(tmp_path / "bad.safetensors", lm, path=tmp_path / "d")


def test_shipped_values_are_imported_when_they_match(lm, tmp_path, monkeypatch):
    from otelab.engine.valuebank import fill_from_export

    ref = ValueBank(lm, path=tmp_path / "a", progress=False).get(REQS)
    file = ValueBank(lm, path=tmp_path / "a", progress=False).export(tmp_path / "shipped.safetensors", REQS)
    bank = ValueBank(lm, path=tmp_path / "b", progress=False)
    own = bank.get(REQS[:2])                                   # the user's own values: never replaced
    no_compute(monkeypatch)
    note = fill_from_export(bank, file, REQS[:5])
    assert note.startswith("imported 3 values from shipped.safetensors (checked: tiny-llama")
    assert bank.missing(REQS) == REQS[5:]                      # only what the requests needed
    assert [bank._where[bank.key(r)][0].startswith("shard-import-") for r in REQS[:5]] == [False] * 2 + [True] * 3
    got = ValueBank(lm, path=tmp_path / "b", progress=False).get(REQS[:5])   # from disk, verified
    assert torch.equal(got.z[:2], own.z) and torch.equal(got.z[2:], ref.z[2:5])
    assert fill_from_export(bank, file, REQS[:5]) == ""       # nothing left to import


def test_shipped_values_of_another_model_are_refused_then_computed(lm, tmp_path):
    from otelab.engine.valuebank import fill_from_export

    file = ValueBank(tiny(seed=1), path=tmp_path / "x", progress=False).export(tmp_path / "other.safetensors", REQS[:2])
    bank = ValueBank(lm, path=tmp_path / "b", progress=False)
    note = fill_from_export(bank, file, REQS[:2])
    assert note.startswith("not using other.safetensors: computed for another model or value spec")
    assert "fingerprint" in note and note.endswith("computing the 2 missing values") and len(note.splitlines()) == 1
    assert len(bank) == 0 and not list((tmp_path / "b").glob("shard-*"))
    direct = V.compute_values(lm, REQS[:2], templates=context_templates(lm))
    torch.testing.assert_close(bank.get(REQS[:2]).z, direct.z, rtol=1e-5, atol=1e-5)
    missing = fill_from_export(ValueBank(lm, path=tmp_path / "c", progress=False), tmp_path / "none.safetensors", REQS)
    assert missing == "none.safetensors not found: computing the 6 missing values"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupted_shipped_file_is_detected(lm, tmp_path, damage):
    from otelab.engine.valuebank import fill_from_export

    file = ValueBank(lm, path=tmp_path / "a", progress=False).export(tmp_path / "v.safetensors", REQS[:3])
    raw = bytearray(file.read_bytes())
    if damage == "flip":
        raw[-7] ^= 0x10
    else:
        del raw[-40:]
    file.write_bytes(bytes(raw))
    bank = ValueBank(lm, path=tmp_path / "b", progress=False)
    note = fill_from_export(bank, file, REQS[:3])
    assert note.startswith("not using v.safetensors: " + ("checksum mismatch (file corrupted)" if damage == "flip"
                                                          else "not a readable value bank export"))
    assert len(bank) == 0 and not list((tmp_path / "b").glob("shard-*"))


def test_the_shipped_factbank_values_match_smollm2_spec_and_the_factbank():
    """The shipped file is intact and holds the values of the first fact-bank records, at least the demo's
    default stream (checked without the model)."""
    from otelab.demo.run import DemoConfig
    from safetensors import safe_open

    from otelab.engine.bankfiles import tensors_sha256 as _tensors_sha256
    from otelab.engine.valuebank import FACTBANK_VALUES, _digest, request_fields
    with safe_open(str(FACTBANK_VALUES), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    spec, keys = json.loads(meta["otelab_spec"]), json.loads(meta["keys"])
    assert _tensors_sha256(tensors) == meta["sha256"] and spec["model"] == "smollm2-135m"
    assert len(spec["templates"]) > 1                         # the demo's (context) templates, not plain
    spec_id = _digest(spec)[:16]
    want = [_digest({"spec": spec_id, "request": request_fields(r.request())})[:32] for r in load_factbank()]
    n = len(keys)
    assert keys == want[:n] and n >= DemoConfig().n_records and tuple(tensors["z"].shape) == (n, 576)


@pytest.mark.slow
def test_the_shipped_factbank_values_are_imported_for_smollm2(tmp_path, monkeypatch):
    """On the real model the shipped file matches the demo's spec: its values fill an empty bank, nothing is optimised."""
    from otelab.models.loading import load_model
    from otelab.engine.valuebank import FACTBANK_VALUES, fill_from_export

    reqs = [r.request() for r in load_factbank(n=8)]
    bank = ValueBank(load_model("smollm2-135m"), path=tmp_path, progress=False)   # the demo's: default templates
    assert fill_from_export(bank, FACTBANK_VALUES, reqs).startswith("imported 8 values from " + FACTBANK_VALUES.name)
    no_compute(monkeypatch)
    v = bank.get(reqs)
    assert tuple(v.z.shape) == (8, 576) and all(s >= 1 for s in v.row_steps)


_WORKER = """
import sys
from otelab.data.loaders import load_factbank
from otelab.models.loading import tiny_model
from otelab.engine.valuebank import ValueBank
m = tiny_model("llama")
m.preset = m.preset.replace(v_steps=12)
ValueBank(m, path=sys.argv[1], chunk=1, progress=False).get([r.request() for r in load_factbank(n=int(sys.argv[2]))])
"""


def test_resume_after_sigkill(tmp_path):
    """Kill a computation with SIGKILL at random moments; the bank stays valid and the rest resumes."""
    import random

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    bank_dir, n = tmp_path / "bank", 24   # enough that three kills cannot let it finish
    rng = random.Random(0)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(bank_dir), str(n)], env=env)
        t0 = time.time()
        start = len(list(bank_dir.glob("shard-*.safetensors")))
        while len(list(bank_dir.glob("shard-*.safetensors"))) <= start and time.time() - t0 < 120:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.2))                          # then somewhere inside the next chunk
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    m = tiny_model("llama")
    m.preset = m.preset.replace(v_steps=12)
    bank = ValueBank(m, path=bank_dir, chunk=1, progress=False)
    assert bank.verify()["bad"] == []
    reqs = [r.request() for r in load_factbank(n=n)]
    done = n - len(bank.missing(reqs))
    assert 3 <= done < n, f"{done} of {n} done after three kills"
    got = bank.get(reqs)
    ref = V.compute_values(m, reqs, templates=context_templates(m))
    torch.testing.assert_close(got.z, ref.z, rtol=1e-5, atol=1e-5)


def test_cli_compute_status_export_import(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path / "cache"))
    sel = ["--model", "tiny-llama", "--data", "factbank", "--n", "4", "--seed", "3", "--no-progress"]
    assert main(["values", "compute", *sel, "--chunk", "2"]) == 0
    assert main(["values", "status", *sel]) == 0
    assert "4 of 4 requests done" in capsys.readouterr().out
    assert main(["values", "status"]) == 0 and "tiny-llama" in capsys.readouterr().out
    assert main(["values", "verify", "--model", "tiny-llama"]) == 0
    out = tmp_path / "v.safetensors"
    assert main(["values", "export", *sel, "--out", str(out)]) == 0 and out.is_file()
    assert main(["values", "import", str(out), "--model", "tiny-llama", "--bank", str(tmp_path / "b")]) == 0
    assert "4 new values" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["compute", "--model", "tiny-llama"], "name the requests"),
    (["compute", "--model", "tiny-llama", "--data", "factbank", "--n", "0"], "--n must be ≥ 1"),
    (["compute", "--model", "tiny-llama", "--data", "factbank", "--n", "100000"], "only 465 records"),
    (["compute", "--model", "tiny-llama", "--data", "factbank", "--chunk", "0"], "--chunk must be ≥ 1"),
    (["compute", "--model", "tiny-llama", "--path", "x.json"], "--path needs --data counterfact"),
    (["import", "missing.safetensors", "--model", "tiny-llama"], "missing.safetensors: no such file"),
    (["inspect", "--model", "tiny-llama", "--data", "factbank", "--n", "2"], "not in the bank yet"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["values", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_import_of_a_foreign_file_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path / "cache"))
    file = ValueBank(tiny(seed=1), path=tmp_path / "x", progress=False).export(tmp_path / "x.safetensors", REQS[:1])
    assert main(["values", "import", str(file), "--model", "tiny-llama"]) == 2
    assert "another model" in capsys.readouterr().err


def test_cli_edit_with_banked_values(tmp_path, monkeypatch):
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i} talks about cities, rivers and people." for i in range(200)))
    reqs = tmp_path / "reqs.jsonl"
    reqs.write_text("\n".join(json.dumps({"prompt": r.prompt, "subject": r.subject, "target_new": r.target_new})
                              for r in REQS[:3]))
    argv = ["edit", "--model", "tiny-llama", "--requests", str(reqs), "--batch", "2", "--values", "bank",
            "--corpus", str(corpus), "--cov-tokens", "400", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    from otelab.models.loading import load_model
    bank = ValueBank(load_model("tiny-llama"), progress=False)
    assert len(bank) == 3 and bank.missing(REQS[:3]) == []
    no_compute(monkeypatch)
    assert main(argv[:-1] + [str(tmp_path / "run2")]) == 0       # the second run reuses every value


def test_the_module_example_runs():
    import doctest

    import otelab.engine.valuebank
    res = doctest.testmod(otelab.engine.valuebank)
    assert res.attempted >= 5 and res.failed == 0


@pytest.mark.slow
def test_smollm2_value_does_not_depend_on_batch_mates():
    from otelab.models.loading import load_model

    m = load_model()
    reqs = [r.request() for r in load_factbank(n=3)]
    templates = context_templates(m)
    together = V.compute_values(m, reqs, templates=templates)
    alone = V.compute_values(m, reqs[1:2], templates=templates)
    assert alone.row_steps == together.row_steps[1:2]
    # float32 reductions differ with the batch's shape (and the thread count), so compare the
    # optimised change δ = z − z_init as a whole: it must agree far below any effect of an edit
    delta = together.z[1] - together.z_init[1]
    rel = float((alone.z[0] - together.z[1]).norm() / delta.norm())
    assert rel < 1e-3, f"δ alone vs in a batch differs by {rel:.2e} (relative)"
