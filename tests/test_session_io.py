"""Saving sessions never loses work: what save refuses, atomic replacement under SIGKILL, verified loads."""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

import pytest
import torch

from otelab.engine import store as session_store
from otelab.engine.session import EditSession, SessionError
from otelab.models.loading import tiny_model
from otelab.data.requests import EditRequest

REQS = [EditRequest("{} lives in the city of", "Alice", "Paris"),
        EditRequest("{} works as a", "Bob", "doctor")]


def cov_for(lm):
    d_i = lm.adapter.get_W(lm.model, lm.layers[0]).shape[1]
    X = torch.randn(d_i, 4 * d_i, generator=torch.Generator().manual_seed(0))
    return {l: 1e-2 * X @ X.T / X.shape[1] for l in lm.layers}


def fresh():
    lm = tiny_model("llama")
    lm.preset = lm.preset.replace(v_steps=2)
    return lm


@pytest.fixture(scope="module")
def two_sessions():
    """Session A (one step) and B (two steps) on two copies of the same tiny model."""
    lm_a, lm_b = fresh(), fresh()
    a = EditSession(lm_a, "memit", "aligned", cov=cov_for(lm_a), progress=False)
    a.step(REQS[:1])
    b = EditSession(lm_b, "memit", "aligned", cov=cov_for(lm_b), progress=False)
    b.step(REQS[:1])
    b.step(REQS[1:])
    return a, b


def which(path, a, b, lm):
    """Load ``path`` onto ``lm`` (verified), say whether it is A or B, and reset ``lm``."""
    s = EditSession.load(path, lm, cov=cov_for(lm), progress=False)
    try:
        got = [r.requests for r in s.history]
        for name, ref in (("A", a), ("B", b)):
            if got == [r.requests for r in ref.history]:
                for l in lm.layers:
                    assert torch.equal(lm.adapter.get_W(lm.model, l), ref.loaded.adapter.get_W(ref.loaded.model, l))
                return name
        raise AssertionError(f"{path} holds neither session: {got}")
    finally:
        s.reset()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".otelab-"))


# ----------------------------------------------------------------------------- what save refuses

def test_save_refuses_a_folder_that_is_not_a_session(two_sessions, tmp_path):
    a, _ = two_sessions
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "notes.txt").write_text("my notes")
    (runs / "session.json").write_text("{}")     # even with a file of that name
    with pytest.raises(SessionError, match="not an otelab session") as err:
        a.save(runs)
    assert str(runs) in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in runs.iterdir()) == ["notes.txt", "session.json"]
    assert (runs / "notes.txt").read_text() == "my notes"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", [".", "..", "cwd"])
def test_save_refuses_the_working_directory_and_its_parents(two_sessions, tmp_path, monkeypatch, where):
    a, _ = two_sessions
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    monkeypatch.chdir(work)
    target = work if where == "cwd" else where
    with pytest.raises(SessionError, match="working directory"):
        a.save(target)
    assert (work / "keep.txt").read_text() == "x"
    assert leftovers(work) == [] and leftovers(tmp_path) == []


def test_save_refuses_a_file(two_sessions, tmp_path):
    a, _ = two_sessions
    f = tmp_path / "s"
    f.write_text("data")
    with pytest.raises(SessionError, match="not a folder"):
        a.save(f)
    assert f.read_text() == "data"


def test_save_replaces_a_session_and_fills_an_empty_folder(two_sessions, tmp_path):
    a, b = two_sessions
    empty = tmp_path / "empty"
    empty.mkdir()
    a.save(empty)
    a.save(tmp_path / "s")
    b.save(tmp_path / "s")
    lm = fresh()
    assert which(empty, a, b, lm) == "A"
    assert which(tmp_path / "s", a, b, lm) == "B"
    assert sorted(os.listdir(tmp_path / "s")) == ["session.json", "state.safetensors"]
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- loading twice

def test_load_onto_an_already_edited_model_is_refused_and_reset_returns_to_w0(two_sessions, tmp_path):
    a, b = two_sessions
    b.save(tmp_path / "s")
    lm = fresh()
    W0 = {l: lm.adapter.get_W(lm.model, l).clone() for l in lm.layers}
    s = EditSession.load(tmp_path / "s", lm, cov=cov_for(lm), progress=False)
    edited = {l: lm.adapter.get_W(lm.model, l).clone() for l in lm.layers}
    with pytest.raises(SessionError, match="already edited"):
        EditSession.load(tmp_path / "s", lm, cov=cov_for(lm), progress=False)
    for l in lm.layers:                                   # the refused load changed nothing
        assert torch.equal(lm.adapter.get_W(lm.model, l), edited[l])
    with pytest.raises(SessionError, match="already edited"):   # nor onto the model that made it
        EditSession.load(tmp_path / "s", b.loaded, cov=cov_for(lm), progress=False)
    s.reset()
    for l in lm.layers:
        assert torch.equal(lm.adapter.get_W(lm.model, l), W0[l])


# ----------------------------------------------------------------------------- recovery of leftovers

def test_interrupted_between_renames_is_restored_on_load(two_sessions, tmp_path):
    """The path is missing but the complete new session waits beside it: load puts it back."""
    a, b = two_sessions
    target = tmp_path / "s"
    b.save(target)
    a.save(tmp_path / "other")
    os.rename(target, tmp_path / ".otelab-new-s-abc")
    (tmp_path / ".otelab-new-s-abc" / session_store.MARKER).write_text(
        json.dumps({"role": "new", "target": "s", "complete": True}))
    os.rename(tmp_path / "other", tmp_path / ".otelab-old-s-1234")
    (tmp_path / ".otelab-old-s-1234" / session_store.MARKER).write_text(
        json.dumps({"role": "old", "target": "s", "complete": True}))
    assert which(target, a, b, fresh()) == "B"
    assert leftovers(tmp_path) == []


def test_stale_temporary_folders_are_removed_but_nothing_else(two_sessions, tmp_path):
    a, _ = two_sessions
    stale = tmp_path / ".otelab-new-s-zzz"
    stale.mkdir()
    (stale / "state.safetensors").write_bytes(b"x" * 1000)
    (stale / session_store.MARKER).write_text(json.dumps({"role": "new", "target": "s", "complete": False}))
    empty = tmp_path / ".otelab-new-s-empty"
    empty.mkdir()
    lookalike = tmp_path / ".otelab-new-s-mine"       # the name, but no marker: not otelab's
    lookalike.mkdir()
    (lookalike / "data.txt").write_text("keep")
    other_target = tmp_path / ".otelab-old-s-x"       # a marker for another target
    other_target.mkdir()
    (other_target / session_store.MARKER).write_text(json.dumps({"role": "old", "target": "t"}))
    a.save(tmp_path / "s")
    assert leftovers(tmp_path) == [".otelab-new-s-mine", ".otelab-old-s-x"]
    assert (lookalike / "data.txt").read_text() == "keep"


# ----------------------------------------------------------------------------- kill -9 during save

def _fork_and_kill(run_child, kill_after=None):
    """Run ``run_child`` in a forked child; SIGKILL it after ``kill_after`` s (or it kills itself)."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            torch.set_num_threads(1)      # no thread pool carried over the fork
            run_child()
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:   # a hung child fails the test instead of hanging it
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the child process hung")
        time.sleep(0.002)


def _kill_at_line(n, fn):
    """Run ``fn``; SIGKILL this process at the ``n``-th line executed in otelab's save code or shutil."""
    files = {session_store.__file__, os.path.abspath(sys.modules["shutil"].__file__)}
    count = [0]

    def tracer(frame, event, arg):
        if frame.f_code.co_filename not in files:
            return None
        if event == "line":
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_at_every_line_of_save_leaves_the_old_or_the_new_session(two_sessions, tmp_path):
    """Deterministic fault injection: SIGKILL at each of 30 seeded random lines of a save over a session."""
    a, b = two_sessions
    target = tmp_path / "s"
    a.save(target)
    total = _kill_at_line(0, lambda: b.save(target))                 # lines one replacing save runs
    assert total > 50
    points = sorted(random.Random(0).sample(range(1, total + 1), 30))
    lm, seen = fresh(), []
    for n in points:
        a.save(target)                                               # the old session, every time
        status = _fork_and_kill(lambda: _kill_at_line(n, lambda: b.save(target)))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        seen.append(which(target, a, b, lm))
        assert leftovers(tmp_path) == []
        assert sorted(os.listdir(target)) == ["session.json", "state.safetensors"]
    assert set(seen) == {"A", "B"}, seen                            # kills landed before and after the swap


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_at_random_instants_while_saving(two_sessions, tmp_path):
    """A child saves A, B, A, B, ... over one path; it is SIGKILLed at 25 seeded random instants."""
    a, b = two_sessions
    target = tmp_path / "s"
    a.save(target)
    t = time.perf_counter()
    for _ in range(5):
        b.save(target)
    per_save = (time.perf_counter() - t) / 5

    def loop():
        while True:
            a.save(target)
            b.save(target)

    rng, lm, seen = random.Random(1), fresh(), []
    for _ in range(25):
        status = _fork_and_kill(loop, kill_after=rng.uniform(0.5, 4.0) * per_save)
        assert os.WIFSIGNALED(status), status
        seen.append(which(target, a, b, lm))
        assert sorted(os.listdir(target)) == ["session.json", "state.safetensors"]
    assert set(seen) <= {"A", "B"}
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- corruption is detected on load

def _rewrite_state(folder, change):
    from safetensors.torch import load_file, save_file
    t = load_file(str(folder / "state.safetensors"))
    change(t)
    save_file(t, str(folder / "state.safetensors"))


def _flip_last_byte(f):
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x40
    f.write_bytes(bytes(data))


def _nan(t):
    t["delta.1"] = t["delta.1"].clone()
    t["delta.1"][0, 0] = float("nan")


def _edit_history(f):
    meta = json.loads(f.read_text())
    meta["history"][0]["requests"][0]["target_new"] = "London"
    f.write_text(json.dumps(meta))


CORRUPTIONS = {
    "flipped byte": ("state.safetensors", _flip_last_byte, "does not match its checksum"),
    "NaN": ("state.safetensors", lambda f: _rewrite_state(f.parent, _nan), r"holds NaN"),
    "missing editor.1.A": ("state.safetensors", lambda f: _rewrite_state(f.parent, lambda t: t.pop("editor.1.A")),
                           "tensor 'editor.1.A' is missing"),
    "truncated": ("state.safetensors", lambda f: f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2]),
                  "truncated"),
    "missing file": ("state.safetensors", lambda f: f.unlink(), "missing"),
    "bad JSON": ("session.json", lambda f: f.write_text(f.read_text()[:-20]), "not valid JSON"),
    "edited JSON": ("session.json", _edit_history, "does not match its checksum"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_every_corruption_is_one_session_error_naming_the_file(two_sessions, tmp_path, kind):
    a, _ = two_sessions
    a.save(tmp_path / "s")
    name, corrupt, message = CORRUPTIONS[kind]
    corrupt(tmp_path / "s" / name)
    lm = fresh()
    W = {l: lm.adapter.get_W(lm.model, l).clone() for l in lm.layers}
    with pytest.raises(SessionError, match=message) as err:
        EditSession.load(tmp_path / "s", lm, cov=cov_for(lm), progress=False)
    assert str(tmp_path / "s" / name) in str(err.value) and "\n" not in str(err.value)
    for l in lm.layers:
        assert torch.equal(lm.adapter.get_W(lm.model, l), W[l])


def test_eval_prints_a_corrupt_session_without_traceback_before_loading_the_model(two_sessions, tmp_path):
    import subprocess
    a, _ = two_sessions
    a.save(tmp_path / "s")
    f = tmp_path / "s" / "state.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    env = dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1")
    for args in (["--session", str(tmp_path / "s")], ["--session", str(tmp_path / "nowhere")]):
        proc = subprocess.run([sys.executable, "-m", "otelab.cli.main", "eval", "--model", "no-such-model-xyz", *args],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert str(tmp_path) in proc.stderr and "no-such-model" not in proc.stderr   # the model was never loaded


# ----------------------------------------------------------------------------- the covariance a session was made with

def test_a_session_made_with_an_explicit_cov_needs_the_same_cov(two_sessions, tmp_path):
    a, _ = two_sessions
    a.save(tmp_path / "s")
    lm = fresh()
    W0 = {l: lm.adapter.get_W(lm.model, l).clone() for l in lm.layers}
    with pytest.raises(SessionError, match="explicit cov"):
        EditSession.load(tmp_path / "s", lm, progress=False)
    other = {l: 2 * c for l, c in cov_for(lm).items()}
    with pytest.raises(SessionError, match="given cov differs .* layer"):
        EditSession.load(tmp_path / "s", lm, cov=other, progress=False)
    for l in lm.layers:                            # refused before any weight changed
        assert torch.equal(lm.adapter.get_W(lm.model, l), W0[l])
    assert EditSession.load(tmp_path / "s", lm, cov=cov_for(lm), progress=False).n_steps == 1


def test_a_default_covariance_is_rebuilt_and_checked(tmp_path, monkeypatch):
    from otelab.engine import covariance
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i} talks about cities, rivers and people." for i in range(100)))
    lm = fresh()
    s = EditSession(lm, "memit", "aligned", corpus=str(corpus), n_tokens=300, progress=False)
    s.step(REQS[:1])
    s.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "session.json").read_text())
    assert meta["cov_spec"]["n_tokens"] == 300 and meta["cov_spec"]["corpus_id"].startswith("text:")
    assert set(meta["cov_spec"]["sha256"]) == {str(l) for l in lm.layers}
    lm2 = fresh()
    assert EditSession.load(tmp_path / "s", lm2, progress=False).n_steps == 1   # rebuilt from the cache
    real = covariance.get_covariance
    monkeypatch.setattr(covariance, "get_covariance",
                        lambda *a, **k: {l: c * 1.001 for l, c in real(*a, **k).items()})
    with pytest.raises(SessionError, match="rebuilt covariance .* differs"):
        EditSession.load(tmp_path / "s", fresh(), progress=False)


# ----------------------------------------------------------------------------- resumed sessions key like fresh ones

def test_a_resumed_session_keys_its_edits_with_the_unedited_models_templates(tmp_path):
    """Context prefixes come from W0, even when the process's first session is a load.

    Before the fix, a resumed session generated (and cached for the whole process) its MEMIT
    context prefixes from the *edited* weights, so every later edit was keyed differently.
    """
    from otelab.engine import keys

    big = [EditRequest("{} lives in the city of", "Alice", "Tokyo"), EditRequest("{} works as a", "Bob", "pilot"),
           EditRequest("{} speaks", "Carol", "French")]
    def gpt2():   # on the tiny GPT-2, two edits change the greedy prefixes
        lm = tiny_model("gpt2")
        lm.preset = lm.preset.replace(v_steps=2)
        return lm

    keys._TEMPLATE_CACHE.clear()
    ref_lm = gpt2()
    ref = EditSession(ref_lm, "memit", "aligned", cov=cov_for(ref_lm), progress=False)
    ref.step(big[:2])
    ref.save(tmp_path / "s")
    edited = keys.context_templates(ref_lm)         # what the edited model would give
    assert edited != ref.templates, "the test needs an edit that changes the greedy prefixes"
    ref.step(big[2:])

    keys._TEMPLATE_CACHE.clear()                    # a new process
    lm = gpt2()
    s = EditSession.load(tmp_path / "s", lm, cov=cov_for(lm), progress=False)
    assert s.templates == ref.templates
    s.step(big[2:])
    for l in lm.layers:
        assert torch.equal(lm.adapter.get_W(lm.model, l), ref_lm.adapter.get_W(ref_lm.model, l))


def test_a_session_saved_with_other_templates_is_refused(two_sessions, tmp_path):
    a, _ = two_sessions
    a.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "session.json").read_text())
    assert meta["templates"] == a.templates
    lm = fresh()
    lm.preset = lm.preset.replace(context_templates=((3, 1),))
    with pytest.raises(SessionError):
        EditSession.load(tmp_path / "s", lm, cov=cov_for(lm), progress=False)
