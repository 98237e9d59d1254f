"""Records: the fields of an edit record (dataclass or dict), its filled prompt and its subject's span.

Records come as :class:`otelab.data.loaders.FactRecord`, :class:`otelab.data.requests.EditRequest`
or plain dicts in ROME's CounterFact / zsRE formats; every metric reads them through these helpers.
"""
from __future__ import annotations

from typing import Any, Mapping

_MISSING = object()


def get_field(rec: Any, name: str, default: Any = _MISSING, where: str = "record") -> Any:
    """Field ``name`` of a dataclass-like or dict record, or ``default``."""
    if isinstance(rec, Mapping):
        if name in rec:
            return rec[name]
    elif hasattr(rec, name):
        return getattr(rec, name)
    if default is _MISSING:
        raise ValueError(f"{where}: missing field {name!r}")
    return default


def record_label(rec: Any, i: int) -> str:
    """``"record i"`` with the record's ``case_id`` when it has one (for error messages)."""
    cid = get_field(rec, "case_id", None)
    return f"record {i}" + (f" (case_id {cid})" if cid is not None else "")


def fill_subject(prompt: str, subject: str) -> str:
    """A CounterFact template with its ``{}`` replaced by the subject (str.format would choke on other braces)."""
    return prompt.replace("{}", subject, 1) if "{}" in prompt else prompt


def target_string(t: Any, where: str, field_name: str) -> str | None:
    """A target as a string: ROME's ``{"str": ...}`` unwrapped, None kept; anything else is an error."""
    if t is None:
        return None
    if isinstance(t, Mapping):  # ROME's {"str": ..., "id": ...}
        t = t.get("str")
    if not isinstance(t, str):
        raise ValueError(f"{where}: field {field_name!r} must be a string, got {type(t).__name__}")
    return t


def subject_span(rec: Any, i: int) -> tuple[str, int, int]:
    """The filled prompt and the character span [start, end) of its subject.

    Arguments:
        rec: a record with ``prompt`` (a ``{}`` template, or a text containing the subject;
            then its last occurrence counts) and ``subject``, or a ``(prompt, subject)`` pair.
        i: the record's index (for error messages).

    Returns:
        ``(text, start, end)``.
    """
    where = record_label(rec, i)
    if isinstance(rec, (tuple, list)) and len(rec) == 2:
        prompt, subject = rec
    else:
        prompt, subject = get_field(rec, "prompt", where=where), get_field(rec, "subject", where=where)
    if not isinstance(prompt, str) or not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"{where}: needs a string prompt and a non-empty string subject")
    if "{}" in prompt:
        start = prompt.index("{}")
        return fill_subject(prompt, subject), start, start + len(subject)
    start = prompt.rfind(subject)
    if start < 0:
        raise ValueError(f"{where}: the subject {subject!r} is not in the prompt {prompt!r}")
    return prompt, start, start + len(subject)
