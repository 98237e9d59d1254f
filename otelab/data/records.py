"""Data records: ``FactRecord`` (CounterFact-style), ``ZsreRecord`` and the ``DataError`` a bad record raises."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from otelab.data.requests import EditRequest


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
