"""Data sources: validating and converting CounterFact (ROME / flat), zsRE, GLUE-style and MMLU records."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

from otelab.data.files import Records
from otelab.data.records import DataError, FactRecord, ZsreRecord

NLI_LABELS = {"entailment": 0, "not_entailment": 1}  # the RTE convention: 0 entailment, 1 not


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


def check_errors(errors: str) -> None:
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")


def collect(raw: Sequence, origin: str, convert: Callable[[Any, str, int], Any], errors: str) -> list:
    """Convert every record, raising on the first bad one or skipping bad ones with a warning."""
    check_errors(errors)
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


def keep_first(items: list, n: int | None) -> list:
    if n is None:
        return items
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int or None, got {n!r}")
    return items[:n]


# ----------------------------------------------------------------------------- CounterFact

def rome_record(rec: Any, where: str, index: int) -> FactRecord:
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


def flat_record(rec: Any, where: str, index: int) -> FactRecord:
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


def detect_format(raw: list, origin: str) -> str:
    if not raw:
        raise DataError(f"{origin}: the file holds no records")
    first = raw[0]
    if isinstance(first, dict) and "requested_rewrite" in first:
        return "rome"
    if isinstance(first, dict) and "ground_truth" in first:
        return "flat"
    raise DataError(f"{_where(origin, 0, first)}: neither ROME format (no field 'requested_rewrite') "
                    f"nor flat format (no field 'ground_truth')")


def rebuild_neighbourhoods(records: list[FactRecord], max_neighbours: int) -> None:
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


# ----------------------------------------------------------------------------- zsRE

def zsre_record(rec: Any, where: str, index: int) -> ZsreRecord:
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


GLUE_CONVERTERS = {"sst2": _single, "cola": _single, "mrpc": _pair, "rte": _pair, "nli": _nli, "mmlu": _mmlu}
