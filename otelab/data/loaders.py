"""Data loaders: the built-in fact bank and probes, CounterFact, zsRE, GLUE-style tasks and MMLU.

Every loader validates every record it reads and raises :class:`DataError` naming the
record (index, and case_id / subject where there is one) and the field at fault.

Where the data comes from (``source="auto"``, the default), first match wins:

1. ``path`` when given;
2. ``$OTELAB_DATA_DIR/<relative path>`` when the variable is set and the file exists,
   with the relative paths of :data:`RELATIVE_PATHS` (e.g. ``glue/sst2.json``);
3. otelab's built-in data in the repository's ``data/`` folder: the fact bank stands in
   for CounterFact, the probes for the GLUE tasks and MMLU. zsRE has no built-in copy.

``source="builtin"`` skips 1-2; ``source="hf"`` downloads from the Hugging Face Hub with
the optional ``datasets`` package (CounterFact, GLUE and MMLU only).

``n`` keeps the first ``n`` records, after validation, so subsets are deterministic.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from otelab.data.requests import EditRequest

ENV_VAR = "OTELAB_DATA_DIR"
BUILTIN_DIR = Path(__file__).resolve().parents[2] / "data"
GLUE_TASKS = ("sst2", "mrpc", "cola", "rte", "nli", "mmlu")
COUNTERFACT_SPLITS = ("edit", "train", "edit-1k")
RELATIVE_PATHS = {
    **{f"counterfact-{s}": f"counterfact/counterfact-{s}.json" for s in COUNTERFACT_SPLITS},
    "zsre": "zsre/zsre_mend_train-1k.json",
    **{t: f"glue/{t}.json" for t in GLUE_TASKS},
}
# Hugging Face Hub ids for source="hf": (dataset, config, split)
HF_SOURCES = {
    "counterfact": ("azhx/counterfact", None, "train"),
    **{t: ("nyu-mll/glue", t, "validation") for t in ("sst2", "mrpc", "cola", "rte")},
    "mmlu": ("cais/mmlu", "all", "test"),
}
NLI_LABELS = {"entailment": 0, "not_entailment": 1}  # the RTE convention: 0 entailment, 1 not


class DataError(ValueError):
    """A malformed data file or record. The message names the record and the field."""


# ----------------------------------------------------------------------------- records

@dataclass
class FactRecord:
    """One counterfactual edit with its evaluation prompts (CounterFact-style).

    Attributes:
        case_id: identifier from the file (or the record's index).
        subject: the subject, e.g. ``"Danielle Darrieux"``.
        prompt: the edit prompt as a template with ``{}`` where the subject goes.
        relation_id: Wikidata-style relation id (``"P17"``); ``None`` for flat files.
        target_new: the object to write in.
        target_true: the object the fact has before the edit.
        paraphrase_prompts: full-text prompts that ask the same fact differently.
        neighborhood_prompts: full-text prompts about other subjects whose answer is
            ``target_true``; they must keep that answer after the edit.
        generation_prompts: full-text prompts for free generation about the subject.
        reference_text: text about ``target_new`` for the consistency metric, or ``None``.
    """

    case_id: Any
    subject: str
    prompt: str
    relation_id: str | None
    target_new: str
    target_true: str
    paraphrase_prompts: list[str] = field(default_factory=list)
    neighborhood_prompts: list[str] = field(default_factory=list)
    generation_prompts: list[str] = field(default_factory=list)
    reference_text: str | None = None

    @property
    def text(self) -> str:
        """The edit prompt with the subject filled in (``replace``, not ``format``: prompts may hold other braces)."""
        return self.prompt.replace("{}", self.subject, 1)

    def request(self) -> EditRequest:
        """The edit as an :class:`~otelab.data.requests.EditRequest`."""
        return EditRequest(prompt=self.prompt, subject=self.subject, target_new=self.target_new,
                           target_true=self.target_true, case_id=self.case_id)


@dataclass
class ZsreRecord:
    """One zsRE question-answering edit (MEND format).

    Attributes:
        case_id: the record's index in the file.
        subject: the entity asked about; it occurs literally in ``prompt``.
        prompt: the question (``src``), e.g. ``"What is the product made by UniFirst?"``.
        target_new: the new answer (``alt``).
        target_true: the original answer (``answers[0]``).
        rephrase: the question asked differently.
        loc: an unrelated Natural Questions prompt (kept verbatim, ``"nq question: ..."``).
        loc_ans: its answer, which must not change.
    """

    case_id: Any
    subject: str
    prompt: str
    target_new: str
    target_true: str
    rephrase: str
    loc: str
    loc_ans: str

    @property
    def text(self) -> str:
        return self.prompt

    def request(self) -> EditRequest:
        """The edit as an :class:`~otelab.data.requests.EditRequest` (subject given literally)."""
        return EditRequest(prompt=self.prompt, subject=self.subject, target_new=self.target_new,
                           target_true=self.target_true, case_id=self.case_id)


# ----------------------------------------------------------------------------- validation helpers

def _where(origin: str, index: int, rec: Any = None) -> str:
    tag = ""
    if isinstance(rec, dict):
        if "case_id" in rec:
            tag = f" (case_id {rec['case_id']!r})"
        elif isinstance(rec.get("subject"), str):
            tag = f" (subject {rec['subject']!r})"
    return f"{origin}: record {index}{tag}"


def _get(rec: dict, key: str, where: str, kind: type | tuple = str, nonempty: bool = True, name: str | None = None):
    """Fetch ``rec[key]`` checking presence, type and (for strings) non-emptiness."""
    name = name or key
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
    if key not in rec:
        raise DataError(f"{where}: missing field {name!r}")
    value = rec[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {name!r} must be {expected}, got {type(value).__name__}")
    if nonempty and isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: field {name!r} is empty")
    return value


def _str_list(rec: dict, key: str, where: str, required: bool = False) -> list[str]:
    if key not in rec and not required:
        return []
    value = _get(rec, key, where, list)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise DataError(f"{where}: field {key!r}[{i}] must be a non-empty string, got {item!r}")
    return list(value)


def _template(prompt: str, subject: str, where: str, field_name: str = "prompt") -> str:
    """Turn a prompt into a ``{}`` template, checking the subject is in it."""
    if "{}" in prompt:
        if prompt.count("{}") != 1:
            raise DataError(f"{where}: field {field_name!r} must contain exactly one '{{}}', got {prompt!r}")
        return prompt
    i = prompt.rfind(subject)
    if i < 0:
        raise DataError(f"{where}: field 'subject' {subject!r} is not in the {field_name} {prompt!r}")
    return prompt[:i] + "{}" + prompt[i + len(subject):]


def _check_errors(errors: str) -> None:
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")


def _collect(raw: Sequence, origin: str, convert: Callable[[Any, str, int], Any], errors: str) -> list:
    """Convert every record, raising on the first bad one or skipping bad ones with a warning."""
    _check_errors(errors)
    out, skipped = [], []
    for i, rec in enumerate(raw):
        try:
            out.append(convert(rec, _where(origin, i, rec), i))
        except DataError as err:
            msg = str(err)
            if isinstance(raw, Records):   # name the line too
                msg = msg.replace(f"{origin}: record {i}", f"{origin}: line {raw.line(i)}: record {i}", 1)
            if errors == "raise":
                raise DataError(f"{msg} (pass errors='skip' to drop invalid records)") from None
            skipped.append(msg)
    if skipped:
        warnings.warn(f"{origin}: skipped {len(skipped)} invalid record(s), e.g. {skipped[0]}", stacklevel=3)
    return out


def _first(items: list, n: int | None) -> list:
    if n is None:
        return items
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int or None, got {n!r}")
    return items[:n]


# ----------------------------------------------------------------------------- file resolution

class Records(list):
    """Records read from a JSON or JSON Lines file; :meth:`line` says where record ``i`` starts."""

    def __init__(self, items, text: str, jsonl: bool):
        super().__init__(items)
        self._text, self._jsonl, self._lines = text, jsonl, None

    def line(self, i: int) -> int:
        """1-based line of the file on which record ``i`` starts (found on first use only)."""
        if self._lines is None:
            self._lines = _record_lines(self._text, self._jsonl)
        return self._lines[i]


def _record_lines(text: str, jsonl: bool) -> list[int]:
    if jsonl:
        return [n for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    dec, ws, out = json.JSONDecoder(), " \t\r\n", []
    i = text.index("[") + 1
    line, counted = 1, 0
    while True:
        while text[i] in ws + ",":
            i += 1
        if text[i] == "]":
            return out
        line += text.count("\n", counted, i)
        counted = i
        out.append(line)
        i = dec.raw_decode(text, i)[1]


def read_records(path: str | os.PathLike) -> Records:
    """Read a file of records: a JSON list, or JSON Lines (one object per line).

    A file ending in ``.jsonl``, or whose first non-blank line is a whole JSON value while
    the file as a whole is not, is read as JSON Lines.

    Arguments:
        path: the file.
    Returns:
        :class:`Records` (a list that knows each record's line).
    Raises:
        DataError: naming the file and the line of malformed JSON, an empty file, or a
            JSON value that is not a list.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty (no records)")
    jsonl = path.suffix == ".jsonl"
    if not jsonl:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            first = next(line for line in text.splitlines() if line.strip())
            try:
                json.loads(first)
                jsonl = True               # a whole value on line 1 but not overall: JSON Lines
            except json.JSONDecodeError:
                raise DataError(f"{path}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg})") from None
        else:
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
            return Records(data, text, jsonl=False)
    data = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {n}, column {err.colno}: not valid JSON ({err.msg})") from None
    return Records(data, text, jsonl=True)



def _resolve(key: str, path: str | os.PathLike | None, source: str) -> Path | None:
    """The file to read for dataset ``key``; ``None`` means "use the built-in data"."""
    if source not in ("auto", "builtin", "hf"):
        raise ValueError(f"source must be 'auto', 'builtin' or 'hf', got {source!r}")
    if path is not None:
        if source != "auto":
            raise ValueError(f"give either path or source={source!r}, not both")
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"data file not found: {p}")
        return p
    if source == "builtin":
        return None
    root = os.environ.get(ENV_VAR)
    if root:
        p = Path(root).expanduser() / RELATIVE_PATHS[key]
        if p.is_file():
            return p
        warnings.warn(f"{ENV_VAR} is set but {p} does not exist; using otelab's built-in data", stacklevel=3)
    return None


def _from_hf(key: str) -> list[dict]:
    """Download a dataset from the Hugging Face Hub (opt-in; needs ``datasets``)."""
    if key not in HF_SOURCES:
        raise ValueError(f"no Hugging Face source for {key!r}; pass path= or set {ENV_VAR}")
    try:
        import datasets
    except ImportError:
        raise ImportError("source='hf' needs the optional package `datasets`: pip install datasets") from None
    name, config, split = HF_SOURCES[key]
    return [dict(r) for r in datasets.load_dataset(name, config, split=split)]


# ----------------------------------------------------------------------------- CounterFact

def _rome_record(rec: Any, where: str, index: int) -> FactRecord:
    rw = _get(rec, "requested_rewrite", where, dict)
    subject = _get(rw, "subject", where, name="requested_rewrite.subject")
    prompt = _get(rw, "prompt", where, name="requested_rewrite.prompt")
    prompt = _template(prompt, subject, where, "requested_rewrite.prompt")
    targets = {}
    for key in ("target_new", "target_true"):
        t = _get(rw, key, where, (dict, str), name=f"requested_rewrite.{key}")
        targets[key] = _get(t, "str", where, name=f"requested_rewrite.{key}.str") if isinstance(t, dict) else t
        if not targets[key].strip():
            raise DataError(f"{where}: field 'requested_rewrite.{key}' is empty")
    relation = rw.get("relation_id")
    if relation is not None and not isinstance(relation, str):
        raise DataError(f"{where}: field 'requested_rewrite.relation_id' must be str, got {type(relation).__name__}")
    reference = rec.get("reference_text")
    if reference is not None and not isinstance(reference, str):
        raise DataError(f"{where}: field 'reference_text' must be str, got {type(reference).__name__}")
    return FactRecord(case_id=rec.get("case_id", index), subject=subject, prompt=prompt, relation_id=relation,
                      target_new=targets["target_new"].strip(), target_true=targets["target_true"].strip(),
                      paraphrase_prompts=_str_list(rec, "paraphrase_prompts", where),
                      neighborhood_prompts=_str_list(rec, "neighborhood_prompts", where),
                      generation_prompts=_str_list(rec, "generation_prompts", where),
                      reference_text=reference)


def _flat_record(rec: Any, where: str, index: int) -> FactRecord:
    subject = _get(rec, "subject", where)
    prompt = _template(_get(rec, "prompt", where), subject, where)
    target_new = _get(rec, "target_new", where)
    target_true = _get(rec, "ground_truth", where)
    paraphrases = [_get(rec, "rephrase_prompt", where)] if "rephrase_prompt" in rec else []
    neighbours = []
    if "locality_prompt" in rec:
        loc = _get(rec, "locality_prompt", where)
        loc_truth = rec.get("locality_ground_truth", target_true)
        if not isinstance(loc_truth, str):
            raise DataError(f"{where}: field 'locality_ground_truth' must be str, got {type(loc_truth).__name__}")
        if loc_truth.strip() == target_true.strip():  # it only checks locality if its answer is target_true
            neighbours.append(loc)
    return FactRecord(case_id=rec.get("case_id", index), subject=subject, prompt=prompt, relation_id=None,
                      target_new=target_new.strip(), target_true=target_true.strip(),
                      paraphrase_prompts=paraphrases, neighborhood_prompts=neighbours)


def _detect_format(raw: list, origin: str) -> str:
    if not raw:
        raise DataError(f"{origin}: the file holds no records")
    first = raw[0]
    if isinstance(first, dict) and "requested_rewrite" in first:
        return "rome"
    if isinstance(first, dict) and "ground_truth" in first:
        return "flat"
    raise DataError(f"{_where(origin, 0, first)}: neither ROME format (no field 'requested_rewrite') "
                    f"nor flat format (no field 'ground_truth')")


def _rebuild_neighbourhoods(records: list[FactRecord], max_neighbours: int) -> None:
    """Flat files carry one locality prompt; add prompts of other records with the same
    template and true object (same relation, same answer), in file order, up to ``max_neighbours``."""
    groups: dict[tuple[str, str], list[FactRecord]] = {}
    for r in records:
        groups.setdefault((r.prompt, r.target_true), []).append(r)
    for r in records:
        prompts = list(r.neighborhood_prompts)
        for other in groups[(r.prompt, r.target_true)]:
            if len(prompts) >= max_neighbours:
                break
            if other is not r and other.subject != r.subject and other.text not in prompts:
                prompts.append(other.text)
        r.neighborhood_prompts = prompts[:max_neighbours]


def load_counterfact(path: str | os.PathLike | None = None, n: int | None = None, fmt: str = "auto",
                     split: str = "edit", source: str = "auto", errors: str = "raise",
                     max_neighbours: int = 10) -> list[FactRecord]:
    """Load CounterFact-style edits, in the original ROME format or the flat EasyEdit/MEND one.

    Flat records (``case_id?, prompt, subject, target_new, ground_truth, rephrase_prompt,
    locality_prompt, locality_ground_truth``) have the subject written in the prompt; it
    is replaced by ``{}`` (its last occurrence). A flat record has one locality prompt,
    so its neighbourhood is rebuilt: its own ``locality_prompt`` (when its answer is the
    record's true object) followed by the prompts of OTHER records in the whole file with
    the same template and the same true object, in file order, at most ``max_neighbours``.
    Its ``rephrase_prompt`` becomes the one paraphrase; flat records have no generation
    prompts, reference text or relation id.

    Arguments:
        path: a JSON (or .jsonl) file; see the module docstring for what happens without it.
        n: keep the first ``n`` records (after validation and neighbourhood rebuilding).
        fmt: ``"auto"`` (detect from the first record), ``"rome"`` or ``"flat"``.
        split: which file under ``$OTELAB_DATA_DIR/counterfact``: ``"edit"``, ``"train"`` or ``"edit-1k"``.
        source: ``"auto"``, ``"builtin"`` (the fact bank) or ``"hf"`` (``azhx/counterfact``).
        errors: ``"raise"`` on the first invalid record, or ``"skip"`` invalid ones with a warning.
        max_neighbours: cap on rebuilt flat-format neighbourhoods.

    Returns:
        A list of :class:`FactRecord`.
    """
    _check_errors(errors)
    if fmt not in ("auto", "rome", "flat"):
        raise ValueError(f"fmt must be 'auto', 'rome' or 'flat', got {fmt!r}")
    if split not in COUNTERFACT_SPLITS:
        raise ValueError(f"split must be one of {COUNTERFACT_SPLITS}, got {split!r}")
    if source == "hf" and path is None:
        raw, origin = _from_hf("counterfact"), "huggingface:azhx/counterfact"
    else:
        file = _resolve(f"counterfact-{split}", path, source)
        if file is None:
            return load_factbank(n)
        raw, origin = read_records(file), str(file)
    fmt = _detect_format(raw, origin) if fmt == "auto" else fmt
    records = _collect(raw, origin, _rome_record if fmt == "rome" else _flat_record, errors)
    if fmt == "flat":
        _rebuild_neighbourhoods(records, max_neighbours)
    return _first(records, n)


def load_factbank(n: int | None = None) -> list[FactRecord]:
    """Load otelab's built-in fact bank (``data/factbank.json``, ROME format; see ``data/README.md``).

    Arguments:
        n: keep the first ``n`` records.

    Returns:
        A list of :class:`FactRecord`, every one with paraphrases, neighbourhood and
        generation prompts and a reference text.
    """
    file = BUILTIN_DIR / "factbank.json"
    return _first(_collect(read_records(file), "built-in fact bank", _rome_record, "raise"), n)


# ----------------------------------------------------------------------------- zsRE

def _zsre_record(rec: Any, where: str, index: int) -> ZsreRecord:
    subject = _get(rec, "subject", where)
    src = _get(rec, "src", where)
    if subject not in src:
        raise DataError(f"{where}: field 'subject' {subject!r} is not in the prompt 'src' {src!r}")
    answers = _str_list(rec, "answers", where, required=True)
    if not answers:
        raise DataError(f"{where}: field 'answers' is empty")
    return ZsreRecord(case_id=rec.get("case_id", index), subject=subject, prompt=src,
                      target_new=_get(rec, "alt", where).strip(), target_true=answers[0].strip(),
                      rephrase=_get(rec, "rephrase", where), loc=_get(rec, "loc", where),
                      loc_ans=_get(rec, "loc_ans", where))


def load_zsre(path: str | os.PathLike | None = None, n: int | None = None, errors: str = "raise") -> list[ZsreRecord]:
    """Load zsRE edits in MEND's format (``subject, src, pred, rephrase, alt, answers, loc, loc_ans``).

    otelab ships no zsRE data: give ``path`` or set ``$OTELAB_DATA_DIR`` (file
    ``zsre/zsre_mend_train-1k.json``). MEND's sample contains records with an empty
    ``alt``; they raise :class:`DataError` unless ``errors="skip"``.

    Arguments:
        path: a JSON file.
        n: keep the first ``n`` valid records.
        errors: ``"raise"`` or ``"skip"`` (drop invalid records with a warning).

    Returns:
        A list of :class:`ZsreRecord`.
    """
    _check_errors(errors)
    file = _resolve("zsre", path, "auto")
    if file is None:
        raise FileNotFoundError(f"zsRE has no built-in copy: pass path= or set {ENV_VAR} to a folder "
                                f"holding {RELATIVE_PATHS['zsre']}")
    return _first(_collect(read_records(file), str(file), _zsre_record, errors), n)


# ----------------------------------------------------------------------------- GLUE-style tasks and MMLU

def _label(rec: dict, where: str) -> int:
    label = _get(rec, "label", where, int)
    if label not in (0, 1):
        raise DataError(f"{where}: field 'label' must be 0 or 1, got {label!r}")
    return label


def _single(rec: Any, where: str, index: int) -> dict:
    return {"sentence": _get(rec, "sentence", where), "label": _label(rec, where), "idx": _get(rec, "idx", where, int)}


def _pair(rec: Any, where: str, index: int) -> dict:
    return {"sentence1": _get(rec, "sentence1", where), "sentence2": _get(rec, "sentence2", where),
            "label": _label(rec, where), "idx": _get(rec, "idx", where, int)}


def _nli(rec: Any, where: str, index: int) -> dict:
    """nli's ``{index, ..., label: "entailment"|"not_entailment"}`` -> the RTE format."""
    if isinstance(rec, dict) and "idx" in rec and isinstance(rec.get("label"), int):
        return _pair(rec, where, index)  # already in the RTE format
    label = _get(rec, "label", where)
    if label not in NLI_LABELS:
        raise DataError(f"{where}: field 'label' must be one of {sorted(NLI_LABELS)}, got {label!r}")
    idx = _get(rec, "index", where, (str, int))
    try:
        idx = int(idx)
    except ValueError:
        raise DataError(f"{where}: field 'index' must be an integer, got {idx!r}") from None
    return {"sentence1": _get(rec, "sentence1", where), "sentence2": _get(rec, "sentence2", where),
            "label": NLI_LABELS[label], "idx": idx}


def _mmlu(rec: Any, where: str, index: int) -> dict:
    choices = _str_list(rec, "choices", where, required=True)
    if len(choices) != 4:
        raise DataError(f"{where}: field 'choices' must hold 4 options, got {len(choices)}")
    answer = _get(rec, "answer", where, int)
    if not 0 <= answer <= 3:
        raise DataError(f"{where}: field 'answer' must be 0-3, got {answer}")
    return {"question": _get(rec, "question", where), "subject": _get(rec, "subject", where),
            "choices": choices, "answer": answer}


_GLUE_CONVERTERS = {"sst2": _single, "cola": _single, "mrpc": _pair, "rte": _pair, "nli": _nli, "mmlu": _mmlu}


def load_glue(task: str, path: str | os.PathLike | None = None, n: int | None = None,
              source: str = "auto", errors: str = "raise") -> list[dict]:
    """Load a general-capability task as a list of dicts.

    Formats returned: ``sst2`` (1 positive, 0 negative) and ``cola`` (1 acceptable,
    0 unacceptable): ``{sentence, label, idx}``; ``mrpc`` (1 paraphrase) and ``rte``:
    ``{sentence1, sentence2, label, idx}`` with RTE's convention 0 = entailment,
    1 = not entailment; ``nli`` is read from ``{index, sentence1, sentence2, label}``
    with string labels and returned in the RTE format (``"entailment"`` -> 0,
    ``"not_entailment"`` -> 1, ``index`` -> ``idx``); ``mmlu``:
    ``{question, subject, choices[4], answer 0-3}``.

    Arguments:
        task: one of ``sst2, mrpc, cola, rte, nli, mmlu``.
        path: a JSON file; without it ``$OTELAB_DATA_DIR/glue/<task>.json``, then the
            built-in probes (``nli`` falls back to the RTE probes).
        n: keep the first ``n`` records.
        source: ``"auto"``, ``"builtin"`` or ``"hf"`` (GLUE validation splits, MMLU test).
        errors: ``"raise"`` or ``"skip"``.

    Returns:
        A list of dicts in the format above.
    """
    _check_errors(errors)
    if task not in _GLUE_CONVERTERS:
        raise ValueError(f"unknown task {task!r}; expected one of {GLUE_TASKS}")
    if source == "hf" and path is None:
        raw, origin = _from_hf(task), f"huggingface:{HF_SOURCES[task][0]}/{task}"
    else:
        file = _resolve(task, path, source)
        if file is None:
            return load_probes("rte" if task == "nli" else task, n)
        raw, origin = read_records(file), str(file)
    return _first(_collect(raw, origin, _GLUE_CONVERTERS[task], errors), n)


def load_probes(task: str, n: int | None = None) -> list[dict]:
    """Load otelab's built-in probe set for ``sst2, mrpc, cola, rte`` or ``mmlu`` (``data/probes``).

    Arguments:
        task: the task name.
        n: keep the first ``n`` items.

    Returns:
        A list of dicts in :func:`load_glue`'s formats.
    """
    if task not in ("sst2", "mrpc", "cola", "rte", "mmlu"):
        raise ValueError(f"no built-in probes for {task!r}; expected sst2, mrpc, cola, rte or mmlu")
    file = BUILTIN_DIR / "probes" / f"{task}.json"
    return _first(_collect(read_records(file), f"built-in {task} probes", _GLUE_CONVERTERS[task], "raise"), n)


def sample_records(records: Sequence, n: int, seed: int) -> list:
    """A seeded draw of ``n`` records without replacement, in draw order (the stream order).

    Arguments:
        records: the pool (e.g. every CounterFact record).
        n: how many to draw (at most ``len(records)``).
        seed: the draw's seed; the same seed and pool give the same list.
    Returns:
        A list of ``n`` records.
    """
    import random

    if not 0 <= n <= len(records):
        raise ValueError(f"sample_records: cannot draw {n} of {len(records)} records")
    return random.Random(seed).sample(list(records), n)
