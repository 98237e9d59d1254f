"""Tests of otelab.data.loaders: the built-in fact bank and probes, and the CounterFact / zsRE / GLUE loaders."""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from otelab.data import loaders as data
from otelab.data.loaders import DataError, FactRecord, ZsreRecord
from otelab.data.requests import EditRequest

REPO = Path(__file__).resolve().parent.parent
SHARED = os.environ.get(data.ENV_VAR)
needs_shared = pytest.mark.skipif(
    not SHARED or not Path(SHARED).is_dir(),
    reason=f"{data.ENV_VAR} is unset (CI points it at ../shared/data); the reference files cannot be found",
)


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)


# ----------------------------------------------------------------------------- built-in fact bank

@pytest.fixture(scope="module")
def bank() -> list[FactRecord]:
    return data.load_factbank()


def test_factbank_size_and_relations(bank):
    assert len(bank) >= 150
    relations = Counter(r.relation_id for r in bank)
    assert len(relations) >= 8
    assert len({r.case_id for r in bank}) == len(bank)


def test_factbank_records_are_complete(bank):
    for r in bank:
        assert len(r.paraphrase_prompts) >= 2, r.case_id
        assert len(r.neighborhood_prompts) >= 5, r.case_id
        assert len(r.generation_prompts) >= 2, r.case_id
        assert r.reference_text and r.reference_text.strip(), r.case_id
        assert r.target_new != r.target_true, r.case_id
        assert r.subject in r.text and "{}" not in r.text
        # neighbourhood prompts are about other subjects; generation prompts about this one
        assert all(r.subject.lower() not in p.lower() for p in r.neighborhood_prompts), r.case_id
        assert all(r.subject.lower() in p.lower() for p in r.generation_prompts), r.case_id
        assert len(set(r.neighborhood_prompts)) == len(r.neighborhood_prompts)


def test_factbank_targets_come_from_the_same_relation(bank):
    relations = {rel["id"]: rel for rel in json.loads((REPO / "data" / "relations.json").read_text())}
    for r in bank:
        with open(REPO / "data" / relations[r.relation_id]["table"], newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        objects = {row["object"] for row in rows}
        assert r.target_new in objects and r.target_true in objects
        assert any(row["object"] == r.target_true and row["subject"].lower() == r.subject.lower() for row in rows)


def test_factbank_records_convert_to_valid_requests(bank):
    reqs = [r.request() for r in bank]
    assert all(isinstance(q, EditRequest) for q in reqs)
    for q, r in zip(reqs, bank):
        q.validate()
        assert q.text == r.text and q.template == r.prompt and q.target_true == r.target_true


def test_factbank_n_is_a_prefix(bank):
    assert [r.case_id for r in data.load_factbank(n=7)] == [r.case_id for r in bank[:7]]
    assert data.load_factbank(n=0) == []
    with pytest.raises(ValueError, match="n must be"):
        data.load_factbank(n=-1)


def test_factbank_build_is_reproducible(tmp_path):
    """The build script regenerates factbank.json byte for byte from the tables and stored scores."""
    import subprocess
    import sys
    out = tmp_path / "factbank.json"
    subprocess.run([sys.executable, str(REPO / "data" / "build_factbank.py"), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == (REPO / "data" / "factbank.json").read_bytes()


# ----------------------------------------------------------------------------- built-in probes

@pytest.mark.parametrize("task", ["sst2", "cola", "mrpc", "rte"])
def test_binary_probes_are_balanced(task):
    items = data.load_probes(task)
    assert len(items) >= 50
    counts = Counter(x["label"] for x in items)
    assert set(counts) == {0, 1} and counts[0] == counts[1]
    keys = {"sentence", "label", "idx"} if task in ("sst2", "cola") else {"sentence1", "sentence2", "label", "idx"}
    assert all(set(x) == keys for x in items)
    assert len({x["idx"] for x in items}) == len(items)


def test_mmlu_probes():
    items = data.load_probes("mmlu")
    assert len(items) >= 50
    counts = Counter(x["answer"] for x in items)
    assert set(counts) == {0, 1, 2, 3} and max(counts.values()) - min(counts.values()) <= 1
    for x in items:
        assert set(x) == {"question", "subject", "choices", "answer"}
        assert len(x["choices"]) == 4 and len(set(x["choices"])) == 4


def test_probes_reject_unknown_task():
    with pytest.raises(ValueError, match="no built-in probes"):
        data.load_probes("nli")


# ----------------------------------------------------------------------------- CounterFact formats

ROME_REC = {
    "case_id": 7,
    "requested_rewrite": {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux", "relation_id": "P103",
                          "target_new": {"str": "English", "id": "Q1860"}, "target_true": {"str": "French", "id": "Q150"}},
    "paraphrase_prompts": ["Where Danielle Darrieux is from, people speak the language of"],
    "neighborhood_prompts": ["Michel Rocard is a native speaker of", "Robert Schuman, a native"],
    "attribute_prompts": ["J. R. R. Tolkien is a native speaker of"],
    "generation_prompts": ["Danielle Darrieux's mother tongue is"],
}


def flat(case_id, prompt, subject, new, truth, loc="Someone else speaks", loc_truth=None):
    return {"case_id": case_id, "prompt": prompt, "subject": subject, "target_new": new, "ground_truth": truth,
            "rephrase_prompt": f"In other words, {subject} speaks", "locality_prompt": loc,
            "locality_ground_truth": truth if loc_truth is None else loc_truth}


def test_rome_format_parses(tmp_path):
    recs = data.load_counterfact(write_json(tmp_path / "cf.json", [ROME_REC]))
    (r,) = recs
    assert (r.case_id, r.subject, r.prompt, r.relation_id) == (7, "Danielle Darrieux", "The mother tongue of {} is", "P103")
    assert (r.target_new, r.target_true) == ("English", "French")
    assert r.text == "The mother tongue of Danielle Darrieux is"
    assert r.neighborhood_prompts == ROME_REC["neighborhood_prompts"]
    assert r.generation_prompts == ROME_REC["generation_prompts"] and r.reference_text is None
    assert r.request() == EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French", 7)


def test_flat_format_parses(tmp_path):
    rec = flat(3, "The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "English", "French",
               loc="Michel Rocard is a native speaker of")
    (r,) = data.load_counterfact(write_json(tmp_path / "cf.json", [rec]))
    assert (r.case_id, r.prompt, r.relation_id) == (3, "The mother tongue of {} is", None)
    assert (r.target_new, r.target_true) == ("English", "French")
    assert r.paraphrase_prompts == ["In other words, Danielle Darrieux speaks"]
    assert r.neighborhood_prompts == ["Michel Rocard is a native speaker of"]
    assert r.request().validate().text == rec["prompt"]


def test_flat_neighbourhood_rebuild(tmp_path):
    """Neighbours: own locality prompt, then OTHER records with the same template AND true object."""
    recs = [
        flat(0, "The mother tongue of Ann is", "Ann", "English", "French", loc="Loc A speaks"),
        flat(1, "The mother tongue of Bob is", "Bob", "Dutch", "French", loc="Loc B speaks"),
        flat(2, "The mother tongue of Cid is", "Cid", "French", "German", loc="Loc C speaks"),     # other truth
        flat(3, "Dee is a native speaker of", "Dee", "English", "French", loc="Loc D speaks",      # other template
             ),
    ]
    recs[3]["locality_ground_truth"] = "Italian"  # its locality answer differs: not a neighbour of Dee's fact
    out = data.load_counterfact(write_json(tmp_path / "cf.json", recs))
    assert out[0].neighborhood_prompts == ["Loc A speaks", "The mother tongue of Bob is"]
    assert out[1].neighborhood_prompts == ["Loc B speaks", "The mother tongue of Ann is"]
    assert out[2].neighborhood_prompts == ["Loc C speaks"]
    assert out[3].neighborhood_prompts == []
    # n subsets after the rebuild: record 0 still sees record 1 as a neighbour
    assert data.load_counterfact(tmp_path / "cf.json", n=1)[0].neighborhood_prompts == out[0].neighborhood_prompts
    capped = data.load_counterfact(tmp_path / "cf.json", max_neighbours=1)
    assert capped[0].neighborhood_prompts == ["Loc A speaks"]


def test_format_can_be_forced_and_detection_fails_clearly(tmp_path):
    p = write_json(tmp_path / "cf.json", [ROME_REC])
    with pytest.raises(DataError, match=r"record 0 \(case_id 7\): missing field 'subject'"):
        data.load_counterfact(p, fmt="flat")
    with pytest.raises(DataError, match="neither ROME format"):
        data.load_counterfact(write_json(tmp_path / "x.json", [{"foo": 1}]))
    with pytest.raises(DataError, match="no records"):
        data.load_counterfact(write_json(tmp_path / "e.json", []))
    with pytest.raises(DataError, match="expected a JSON list"):
        data.load_counterfact(write_json(tmp_path / "d.json", {"a": 1}))
    bad = tmp_path / "bad.json"
    bad.write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON"):
        data.load_counterfact(bad)


def _rome(**changes):
    rec = json.loads(json.dumps(ROME_REC))
    rec["case_id"] = 11
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = rec
        for k in path:
            target = target[k]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return rec


MALFORMED = [
    # (loader, good record, bad record, field named in the message)
    ("rome", _rome(case_id=7), _rome(requested_rewrite__subject=KeyError), "requested_rewrite.subject"),
    ("rome", _rome(case_id=7), _rome(requested_rewrite__subject="Nobody", requested_rewrite__prompt="The mother tongue of X is"),
     "subject"),
    ("rome", _rome(case_id=7), _rome(requested_rewrite__target_new={"str": "  "}), "requested_rewrite.target_new.str"),
    ("rome", _rome(case_id=7), _rome(paraphrase_prompts="not a list"), "paraphrase_prompts"),
    ("rome", _rome(case_id=7), _rome(neighborhood_prompts=["ok", 5]), "neighborhood_prompts"),
    ("rome", _rome(case_id=7), _rome(requested_rewrite__prompt="{} and {} are"), "requested_rewrite.prompt"),
    ("flat", flat(0, "A of Ann is", "Ann", "x", "y"), {**flat(11, "A of Ann is", "Ann", "x", "y"), "ground_truth": KeyError},
     "ground_truth"),
    ("flat", flat(0, "A of Ann is", "Ann", "x", "y"), flat(11, "A of Ann is", "Bob", "x", "y"), "subject"),
    ("flat", flat(0, "A of Ann is", "Ann", "x", "y"), flat(11, "A of Ann is", "Ann", "", "y"), "target_new"),
    ("flat", flat(0, "A of Ann is", "Ann", "x", "y"), flat(11, "A of Ann is", "Ann", ["x"], "y"), "target_new"),
]


@pytest.mark.parametrize("kind,good,bad,field", MALFORMED)
def test_malformed_counterfact_record_names_record_and_field(tmp_path, kind, good, bad, field):
    bad = {k: v for k, v in bad.items() if v is not KeyError}
    p = write_json(tmp_path / "cf.json", [good, bad])
    with pytest.raises(DataError) as err:
        data.load_counterfact(p, fmt=kind)
    msg = str(err.value)
    assert "record 1 (case_id 11)" in msg and repr(field) in msg and str(p) in msg
    # skipping drops exactly the bad record, with a warning naming it
    with pytest.warns(UserWarning, match="skipped 1 invalid record"):
        kept = data.load_counterfact(p, fmt=kind, errors="skip")
    assert len(kept) == 1 and kept[0].case_id == good.get("case_id", 0)


ZSRE_GOOD = {"subject": "UniFirst", "src": "What is the product made by UniFirst?", "pred": "uniform",
             "rephrase": "What will be the product of UniFirst?", "alt": "unmanned aircraft", "answers": ["uniform"],
             "loc": "nq question: who wrote hamlet", "loc_ans": "Shakespeare", "cond": ""}


@pytest.mark.parametrize("change,field", [
    ({"alt": ""}, "alt"), ({"answers": []}, "answers"), ({"answers": "uniform"}, "answers"),
    ({"subject": "Acme"}, "subject"), ({"loc_ans": 3}, "loc_ans"), ({"rephrase": None}, "rephrase"),
])
def test_malformed_zsre_record(tmp_path, change, field):
    p = write_json(tmp_path / "z.json", [ZSRE_GOOD, {**ZSRE_GOOD, **change}])
    with pytest.raises(DataError) as err:
        data.load_zsre(p)
    assert "record 1" in str(err.value) and repr(field) in str(err.value)


def test_zsre_record(tmp_path):
    (r,) = data.load_zsre(write_json(tmp_path / "z.json", [ZSRE_GOOD]))
    assert isinstance(r, ZsreRecord)
    assert (r.prompt, r.target_new, r.target_true, r.rephrase) == (
        ZSRE_GOOD["src"], "unmanned aircraft", "uniform", ZSRE_GOOD["rephrase"])
    q = r.request().validate()
    assert (q.subject, q.text, q.target_new, q.case_id) == ("UniFirst", ZSRE_GOOD["src"], "unmanned aircraft", 0)


def test_zsre_has_no_builtin(no_env):
    with pytest.raises(FileNotFoundError, match="no built-in"):
        data.load_zsre()


@pytest.mark.parametrize("task,rec,field", [
    ("sst2", {"sentence": "fine", "label": 2, "idx": 0}, "label"),
    ("sst2", {"sentence": "fine", "label": True, "idx": 0}, "label"),
    ("cola", {"label": 1, "idx": 0}, "sentence"),
    ("mrpc", {"sentence1": "a", "sentence2": "b", "label": 1, "idx": "x"}, "idx"),
    ("rte", {"sentence1": "a", "sentence2": "", "label": 0, "idx": 1}, "sentence2"),
    ("nli", {"index": "1", "sentence1": "a", "sentence2": "b", "label": "contradiction"}, "label"),
    ("mmlu", {"question": "q", "subject": "s", "choices": ["a", "b", "c"], "answer": 0}, "choices"),
    ("mmlu", {"question": "q", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 4}, "answer"),
])
def test_malformed_glue_record(tmp_path, task, rec, field):
    good = data.load_probes("rte" if task == "nli" else task, n=1)[0]
    if task == "nli":
        good = {"index": "0", "sentence1": good["sentence1"], "sentence2": good["sentence2"], "label": "entailment"}
    p = write_json(tmp_path / f"{task}.json", [good, rec])
    with pytest.raises(DataError) as err:
        data.load_glue(task, p)
    assert "record 1" in str(err.value) and repr(field) in str(err.value)


def test_nli_labels_follow_rte_convention(tmp_path):
    p = write_json(tmp_path / "nli.json", [
        {"index": "5", "sentence1": "A dog runs.", "sentence2": "An animal runs.", "label": "entailment"},
        {"index": "6", "sentence1": "A dog runs.", "sentence2": "A cat sleeps.", "label": "not_entailment"}])
    assert data.load_glue("nli", p) == [
        {"sentence1": "A dog runs.", "sentence2": "An animal runs.", "label": 0, "idx": 5},
        {"sentence1": "A dog runs.", "sentence2": "A cat sleeps.", "label": 1, "idx": 6}]


def test_bad_arguments(tmp_path, no_env):
    with pytest.raises(ValueError, match="unknown task"):
        data.load_glue("mnli")
    with pytest.raises(ValueError, match="fmt must be"):
        data.load_counterfact(fmt="csv")
    with pytest.raises(ValueError, match="source must be"):
        data.load_glue("sst2", source="web")
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load_glue("sst2", tmp_path / "missing.json")
    with pytest.raises(ValueError, match="errors must be"):
        data.load_glue("sst2", errors="ignore")


def test_hf_source_is_opt_in_with_clear_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_datasets(name, *a, **k):
        if name == "datasets":
            raise ImportError("no module named datasets")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ImportError, match="pip install datasets"):
        data.load_glue("sst2", source="hf")
    with pytest.raises(ValueError, match="no Hugging Face source"):
        data.load_glue("nli", source="hf")


# ----------------------------------------------------------------------------- resolution order

def test_resolution_order(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    write_json(env_dir / "glue" / "sst2.json", [{"sentence": f"env {i}", "label": i % 2, "idx": i} for i in range(3)])
    write_json(env_dir / "counterfact" / "counterfact-edit.json",
               [flat(i, f"The mother tongue of P{i} is", f"P{i}", "English", "French") for i in range(4)])
    explicit = write_json(tmp_path / "mine.json", [{"sentence": "mine", "label": 1, "idx": 0}])

    monkeypatch.delenv(data.ENV_VAR, raising=False)
    builtin = data.load_glue("sst2")
    assert builtin == data.load_probes("sst2")
    assert [r.case_id for r in data.load_counterfact()] == [r.case_id for r in data.load_factbank()]

    monkeypatch.setenv(data.ENV_VAR, str(env_dir))
    assert [x["sentence"] for x in data.load_glue("sst2")] == ["env 0", "env 1", "env 2"]
    assert [r.subject for r in data.load_counterfact()] == ["P0", "P1", "P2", "P3"]
    assert data.load_glue("sst2", explicit) == [{"sentence": "mine", "label": 1, "idx": 0}]
    assert data.load_glue("sst2", source="builtin") == builtin
    # a file missing under the env folder falls back to the built-in data, with a warning
    with pytest.warns(UserWarning, match="does not exist"):
        assert data.load_glue("cola") == data.load_probes("cola")
    with pytest.warns(UserWarning, match="does not exist"):
        assert len(data.load_glue("nli")) == len(data.load_probes("rte"))
    with pytest.raises(ValueError, match="not both"):
        data.load_glue("sst2", explicit, source="builtin")


# ----------------------------------------------------------------------------- the shared reference files

@needs_shared
@pytest.mark.parametrize("split,size", [("edit", 10_000), ("train", 10_000), ("edit-1k", 1_000)])
def test_shared_counterfact(split, size):
    recs = data.load_counterfact(split=split)
    assert len(recs) == size
    groups: dict = {}
    for r in recs:
        groups.setdefault((r.prompt, r.target_true), []).append(r)
    texts: dict = {}
    for r in recs:
        texts.setdefault(r.text, []).append(r)
    for r in recs:
        assert r.subject in r.text and r.paraphrase_prompts and 1 <= len(r.neighborhood_prompts) <= 10
        r.request().validate()
        # rebuilt neighbours: other records' prompts with the same template and true object
        for p in r.neighborhood_prompts[1:]:
            assert any(o is not r and (o.prompt, o.target_true) == (r.prompt, r.target_true) for o in texts[p])
        others = {o.text for o in groups[(r.prompt, r.target_true)] if o.subject != r.subject}
        assert len(r.neighborhood_prompts) == min(10, len(others | {r.neighborhood_prompts[0]}))
    assert data.load_counterfact(split=split, n=5)[4].case_id == recs[4].case_id


@needs_shared
def test_shared_zsre():
    with pytest.raises(DataError, match=r"record 534 \(subject 'Michaela Staniford'\): field 'alt' is empty"):
        data.load_zsre()
    with pytest.warns(UserWarning, match="skipped 2 invalid"):
        recs = data.load_zsre(errors="skip")
    assert len(recs) == 998
    for r in recs:
        r.request().validate()
        assert r.loc.startswith("nq question:") and r.loc_ans


@needs_shared
@pytest.mark.parametrize("task,size", [("sst2", 856), ("mrpc", 258), ("cola", 644), ("rte", 262), ("nli", 2489),
                                       ("mmlu", 1516)])
def test_shared_glue(task, size):
    items = data.load_glue(task)
    assert len(items) == size
    raw = json.loads((Path(SHARED) / "glue" / f"{task}.json").read_text())
    if task == "nli":
        assert Counter(x["label"] for x in items) == Counter(data.NLI_LABELS[x["label"]] for x in raw)
        assert all(x["idx"] == int(y["index"]) for x, y in zip(items, raw))
    else:
        assert items == [{k: y[k] for k in x} for x, y in zip(items, raw)]


# ----------------------------------------------------------------------------- SmolLM2 before editing

@pytest.mark.slow
def test_unedited_smollm2_knows_the_factbank():
    """Before any edit SmolLM2 prefers the true object on the edit prompt and on neighbours."""
    from otelab.eval.metrics import edit_scores
    from otelab.models.loading import load_model
    lm = load_model()
    scores = edit_scores(lm.model, lm.tokenizer, data.load_factbank(n=60), show_progress=False)
    assert scores["efficacy"] <= 0.2
    assert scores["specificity"] >= 0.8


# ----------------------------------------------------------------------------- one rule for braces

@pytest.mark.parametrize("prompt, text", [
    ("{x} {} lives in", "{x} Alice lives in"),
    ("{0} {} lives in", "{0} Alice lives in"),
    ("{ {} lives in", "{ Alice lives in"),
    ("Alice } lives { in", "Alice } lives { in"),
])
def test_other_braces_are_literal_text(prompt, text):
    r = EditRequest(prompt, "Alice", "Paris").validate()
    assert r.text == text and r.name.startswith("request (") and "{}" in r.template
    assert r.template.replace("{}", "Alice", 1) == text


@pytest.mark.parametrize("prompt", ["{} and {} live in", "{}{} x", "{} {x} {}"])
def test_two_slots_are_one_clear_request_error(prompt):
    from otelab.data.requests import RequestError
    with pytest.raises(RequestError, match=r"exactly one '\{\}'"):
        EditRequest(prompt, "Alice", "Paris", case_id=4).validate()


def test_loaders_apply_the_same_brace_rule(tmp_path):
    rec = {"case_id": 1, "prompt": "{x} {} lives in", "subject": "Alice", "target_new": "Rome",
           "ground_truth": "Paris"}
    f = write_json(tmp_path / "flat.json", [rec])
    (r,) = data.load_counterfact(f)
    assert r.text == r.request().text == "{x} Alice lives in"
    g = write_json(tmp_path / "two.json", [rec, dict(rec, case_id=2, prompt="{} and {} live in")])
    with pytest.raises(DataError, match=r"two.json: line \d+: record 1 \(case_id 2\).*exactly one"):
        data.load_counterfact(g)


def test_malformed_files_name_the_file_and_line(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text('{"a": 1}\n\n{"a": 2,}\n')
    with pytest.raises(DataError, match=r"r.jsonl: line 3, column"):
        data.read_records(f)
    (tmp_path / "e.json").write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        data.read_records(tmp_path / "e.json")
    g = write_json(tmp_path / "cf.json", [{"case_id": 1, "prompt": "{} is in", "subject": "A", "target_new": "B",
                                          "ground_truth": "C"}, {"case_id": 2, "prompt": "{} is in", "subject": "A"}])
    with pytest.raises(DataError, match=r"cf.json: line \d+: record 1 \(case_id 2\): missing field 'target_new'"):
        data.load_counterfact(g)
