"""Edit requests: what to change, validated before anything is applied."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence


class RequestError(ValueError):
    """A malformed edit request. The message names the request."""


@dataclass(frozen=True)
class EditRequest:
    """One fact to write into the model.

    Arguments:
        prompt: the prompt; it must contain the subject, either literally or as a
            ``{}`` placeholder that the subject fills (CounterFact style). One rule for
            braces everywhere (requests and loaders): exactly one ``{}`` is the subject
            slot; any other brace (``{x}``, ``{0}``, a lone ``{``) is literal text; two
            ``{}`` are rejected.
        subject: the subject whose last token carries the key.
        target_new: the new object, e.g. ``"Rome"``.
        target_true: the old object, optional (used by metrics only).
        case_id: an identifier used in error messages and reports.
    """

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None
    case_id: Any = None

    @property
    def text(self) -> str:
        """The prompt with the subject filled in (``replace``, not ``format``: other braces are literal)."""
        return self.prompt.replace("{}", str(self.subject), 1) if isinstance(self.prompt, str) else str(self.prompt)

    @property
    def template(self) -> str:
        """The prompt with ``{}`` where the subject stands."""
        if "{}" in self.prompt:
            return self.prompt
        i = self.prompt.rfind(self.subject)
        return self.prompt[:i] + "{}" + self.prompt[i + len(self.subject):]

    @property
    def name(self) -> str:
        tag = f"#{self.case_id} " if self.case_id is not None else ""
        return f"request {tag}({self.text!r} -> {self.target_new!r})"

    def validate(self, tokenizer=None, max_prompt_tokens: int = 256) -> "EditRequest":
        """Check the request; raise :class:`RequestError` naming it if malformed.

        Arguments:
            tokenizer: when given, also check that the target tokenises to at
                least one token and that the prompt fits ``max_prompt_tokens``.
        Returns:
            ``self``, so calls can be chained.
        """
        for field in ("prompt", "subject", "target_new"):
            value = getattr(self, field)
            if not isinstance(value, str):
                raise RequestError(f"{self.name if field != 'prompt' else 'request'}: field {field!r} must be a string, got {type(value).__name__}")
        if not self.subject.strip():
            raise RequestError(f"{self.name}: the subject is empty")
        if "{}" in self.prompt:
            if self.prompt.count("{}") != 1:
                raise RequestError(f"{self.name}: the prompt template must contain exactly one '{{}}'")
        elif self.subject not in self.prompt:
            raise RequestError(f"{self.name}: the subject {self.subject!r} is not in the prompt {self.prompt!r}")
        if not self.target_new.strip():
            raise RequestError(f"{self.name}: the new target is empty")
        if tokenizer is not None:
            if len(tokenizer(" " + self.target_new.strip(), add_special_tokens=False)["input_ids"]) == 0:
                raise RequestError(f"{self.name}: the new target tokenises to nothing")
            n = len(tokenizer(self.text, add_special_tokens=False)["input_ids"])
            if n > max_prompt_tokens:
                raise RequestError(f"{self.name}: the prompt is too long ({n} tokens > {max_prompt_tokens})")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, index: int | None = None) -> "EditRequest":
        """Build a request from a plain dict, a flat CounterFact record or a ROME record."""
        where = f"record {index}" if index is not None else "record"
        if not isinstance(d, dict):
            raise RequestError(f"{where}: expected an object, got {type(d).__name__}")
        if "requested_rewrite" in d:  # ROME / CounterFact original format
            rw = d["requested_rewrite"]
            try:
                return cls(prompt=rw["prompt"], subject=rw["subject"], target_new=rw["target_new"]["str"],
                           target_true=(rw.get("target_true") or {}).get("str"), case_id=d.get("case_id", index))
            except (KeyError, TypeError) as err:
                raise RequestError(f"{where}: requested_rewrite is missing field {err}") from None
        missing = [k for k in ("prompt", "subject", "target_new") if k not in d]
        if missing:
            raise RequestError(f"{where}: missing field(s) {missing}")
        target_new = d["target_new"]
        if isinstance(target_new, dict):
            target_new = target_new.get("str")
        target_true = d.get("target_true", d.get("ground_truth"))
        if isinstance(target_true, dict):
            target_true = target_true.get("str")
        return cls(prompt=d["prompt"], subject=d["subject"], target_new=target_new,
                   target_true=target_true, case_id=d.get("case_id", index))


def validate_all(requests: Sequence[EditRequest], tokenizer=None, max_prompt_tokens: int = 256) -> list[EditRequest]:
    """Validate every request before any is applied (nothing half-applied)."""
    out = []
    for r in requests:
        if not isinstance(r, EditRequest):
            raise RequestError(f"expected EditRequest, got {type(r).__name__}: {r!r}")
        out.append(r.validate(tokenizer, max_prompt_tokens))
    return out


def as_requests(items: Iterable[EditRequest | dict]) -> list[EditRequest]:
    return [it if isinstance(it, EditRequest) else EditRequest.from_dict(it, i) for i, it in enumerate(items)]
