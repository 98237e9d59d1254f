"""General capability: GLUE-style tasks and MMLU scored by label likelihood, and agreement with the unedited model.

Each item becomes a prompt, every label word is scored by its total
log-likelihood after it (:func:`otelab.eval.scoring.teacher_forced`), and the
most likely label is the prediction. With the unedited model's answers
(:class:`CapabilityAnswers`, cached before editing) the agreement and the
log-likelihood margin of its answer are measured as well.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from otelab.eval.scoring import teacher_forced

# ----------------------------------------------------------------------------
# General capability (zero-shot GLUE-style tasks and MMLU)


def _task_item(task: str, item: Mapping, where: str) -> tuple[str, list[str], int]:
    """Prompt, label words and gold option index for one item."""
    def need(name):
        if name not in item:
            raise ValueError(f"{where}: missing field {name!r}")
        return item[name]

    def label01(v):
        if isinstance(v, str):
            v = {"entailment": 0, "not_entailment": 1}.get(v, v)
        if v not in (0, 1):
            raise ValueError(f"{where}: label must be 0/1 (or entailment/not_entailment), got {v!r}")
        return int(v)

    if task == "sst2":
        return (f"Review: {need('sentence').strip()}\nSentiment (positive or negative):",
                ["negative", "positive"], label01(need("label")))
    if task == "mrpc":
        return (f"Sentence 1: {need('sentence1').strip()}\nSentence 2: {need('sentence2').strip()}\n"
                "Question: Do both sentences mean the same thing? Answer yes or no.\nAnswer:",
                ["no", "yes"], label01(need("label")))
    if task == "cola":
        return (f"Sentence: {need('sentence').strip()}\n"
                "Question: Is this sentence grammatically acceptable? Answer yes or no.\nAnswer:",
                ["no", "yes"], label01(need("label")))
    if task in ("rte", "nli"):
        # GLUE RTE: 0 = entailment, 1 = not_entailment
        return (f"{need('sentence1').strip()}\nQuestion: Does this imply that \"{need('sentence2').strip()}\"? "
                "Answer yes or no.\nAnswer:", ["yes", "no"], label01(need("label")))
    if task == "mmlu":
        choices = need("choices")
        if not isinstance(choices, (list, tuple)) or len(choices) != 4:
            raise ValueError(f"{where}: 'choices' must be a list of 4 strings")
        ans = need("answer")
        if isinstance(ans, str) and ans in "ABCD" and len(ans) == 1:
            ans = "ABCD".index(ans)
        if ans not in (0, 1, 2, 3):
            raise ValueError(f"{where}: 'answer' must be 0-3 or A-D, got {ans!r}")
        subject = str(item.get("subject", "")).replace("_", " ").strip()
        head = f"The following is a multiple choice question about {subject}.\n\n" if subject else ""
        body = "\n".join(f"{L}. {str(c).strip()}" for L, c in zip("ABCD", choices))
        return f"{head}{need('question').strip()}\n{body}\nAnswer:", list("ABCD"), int(ans)
    raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")


TASKS = ("sst2", "mrpc", "cola", "rte", "nli", "mmlu")


def binary_f1(y_true: Sequence[int], y_pred: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (0 when it is never predicted nor present)."""
    tp = sum(1 for t, p in zip(y_true, y_pred) if t == positive and p == positive)
    fp = sum(1 for t, p in zip(y_true, y_pred) if t != positive and p == positive)
    fn = sum(1 for t, p in zip(y_true, y_pred) if t == positive and p != positive)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in either list."""
    classes = sorted(set(y_true) | set(y_pred))
    return sum(binary_f1(y_true, y_pred, c) for c in classes) / len(classes) if classes else 0.0


def mcc(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Matthews correlation coefficient of binary labels (0 when undefined, as scikit-learn)."""
    tp = sum(1 for t, p in zip(y_true, y_pred) if t == 1 and p == 1)
    tn = sum(1 for t, p in zip(y_true, y_pred) if t == 0 and p == 0)
    fp = sum(1 for t, p in zip(y_true, y_pred) if t == 0 and p == 1)
    fn = sum(1 for t, p in zip(y_true, y_pred) if t == 1 and p == 0)
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


def _few_shot_prefix(task: str, demos: Sequence[Mapping], where: str) -> str:
    """Worked examples (prompt, a space and the gold label word) separated by blank lines."""
    parts = []
    for j, item in enumerate(demos):
        prompt, options, gold = _task_item(task, item, f"{where} demonstration {j}")
        parts.append(f"{prompt} {options[gold]}\n\n")
    return "".join(parts)


def pick_demonstrations(task: str, pool: Sequence[Mapping], shots: int) -> list[dict]:
    """``shots`` worked examples for a few-shot prompt, the gold labels taking turns.

    Binary tasks alternate label 0 and 1 (so the examples do not teach one answer);
    MMLU cycles A, B, C, D. Items are taken in pool order, so the choice is fixed.

    Arguments:
        task: the task name.
        pool: items NOT evaluated (e.g. the items after the first 100).
        shots: how many examples.

    Returns:
        The chosen items (fewer when the pool runs out of a label).
    """
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    by_label: dict[int, list] = {}
    for j, item in enumerate(pool):
        by_label.setdefault(_task_item(task, item, f"task {task!r} pool item {j}")[2], []).append(item)
    labels = sorted(by_label)
    out: list[dict] = []
    k = 0
    while len(out) < shots and any(by_label.values()):
        lst = by_label[labels[k % len(labels)]]
        if lst:
            out.append(dict(lst.pop(0)))
        k += 1
    return out


@dataclass
class CapabilityAnswers:
    """One model's answers on the general-capability tasks (the unedited reference, cached before editing).

    Attributes:
        gold: ``{task: [gold option index per item]}``.
        scores: ``{task: [[total log-likelihood of each option] per item]}``.
        shots: worked examples in front of every prompt (0 = zero-shot).
    """

    gold: dict[str, list[int]]
    scores: dict[str, list[list[float]]]
    shots: int = 0

    def predictions(self, task: str) -> list[int]:
        return [max(range(len(s)), key=s.__getitem__) for s in self.scores[task]]

    def state(self) -> dict:
        """Plain containers (``torch.load(weights_only=True)`` reads them back; :meth:`from_state`)."""
        return {"gold": dict(self.gold), "scores": dict(self.scores), "shots": int(self.shots)}

    @classmethod
    def from_state(cls, state: dict) -> "CapabilityAnswers":
        return cls(gold=state["gold"], scores=state["scores"], shots=state["shots"])


def capability_answers(model, tok, tasks: Mapping[str, Sequence[Mapping]], batch_size: int = 16,
                       demos: Mapping[str, Sequence[Mapping]] | None = None,
                       show_progress: bool | None = None) -> CapabilityAnswers:
    """Score every label word of every item (total log-likelihood after the prompt).

    Arguments:
        model, tok: a causal LM and its tokenizer.
        tasks: ``{task: items}`` (see :func:`general_capability`).
        batch_size: sequences per forward pass.
        demos: optional ``{task: worked examples}`` put in front of every prompt of
            that task (see :func:`pick_demonstrations`); tasks without demos stay zero-shot.

    Returns:
        :class:`CapabilityAnswers`.
    """
    prompts, targets, owners = [], [], []
    golds: dict[str, list[int]] = {}
    shots = {len(v) for v in (demos or {}).values()}
    for task, items in tasks.items():
        items = list(items)
        if not items:
            raise ValueError(f"task {task!r} has no items")
        prefix = _few_shot_prefix(task, (demos or {}).get(task, ()), f"task {task!r}")
        golds[task] = []
        for j, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise ValueError(f"task {task!r} item {j}: expected a dict, got {type(item).__name__}")
            prompt, options, gold = _task_item(task, item, f"task {task!r} item {j}")
            golds[task].append(gold)
            for o in options:
                prompts.append(prefix + prompt); targets.append(o); owners.append((task, j))
    res = teacher_forced(model, tok, prompts, targets, batch_size, show_progress=show_progress)
    scores: dict[str, list[list[float]]] = {t: [[] for _ in g] for t, g in golds.items()}
    for (task, j), r in zip(owners, res):
        scores[task][j].append(float(r.logprobs.sum()))  # total log-likelihood of the label
    return CapabilityAnswers(gold=golds, scores=scores, shots=max(shots) if shots else 0)


def _margin(s: Sequence[float], ref: int) -> float:
    """Log-likelihood of option ``ref`` minus the best other option."""
    return s[ref] - max(v for o, v in enumerate(s) if o != ref)


def general_capability(model, tok, tasks: Mapping[str, Sequence[Mapping]], batch_size: int = 16,
                       show_progress: bool | None = None, reference: CapabilityAnswers | None = None,
                       demos: Mapping[str, Sequence[Mapping]] | None = None) -> dict[str, dict[str, float]]:
    """Accuracy / F1 on GLUE-style tasks and MMLU, scored by label likelihood, and agreement with the unedited model.

    Each item becomes a prompt in the style of the seed code (e.g. ``Review: …
    Sentiment (positive or negative):``) and every label word (" positive"/
    " negative", " yes"/" no", " A"…" D") is scored by its total log-likelihood
    after the prompt; the most likely label is the prediction. Single-token
    labels share one forward pass per item (prefix sharing).

    A 135M model answers some tasks with one label whatever the input, so accuracy
    can stay flat while the model is damaged. With a ``reference`` (the unedited
    model's :func:`capability_answers` on the same items) two measures that move are
    added: ``agreement`` (share of items answered as the unedited model answered) and
    ``margin`` (mean log-likelihood of the unedited model's answer minus the best other
    label, under this model; the unedited model's own value is ``margin_unedited``, and
    ``margin_change`` is the mean per-item |margin − margin_unedited|, which shifts of
    opposite sign cannot cancel).

    Arguments:
        model, tok: a causal LM and its tokenizer.
        tasks: ``{task: items}`` with task in ``sst2, mrpc, cola, rte, nli, mmlu``
            and items in the GLUE / MMLU formats of the shared data (sst2/cola
            ``sentence, label``; mrpc/rte/nli ``sentence1, sentence2, label``;
            mmlu ``question, choices[4], answer``).
        batch_size: sequences per forward pass.
        reference: the unedited model's answers on the same tasks and items (same demos).
        demos: worked examples per task for a few-shot prompt (default zero-shot).

    Returns:
        ``{task: {"acc", "f1" (binary F1 of label 1; macro F1 for mmlu), "mcc" (cola only),
        "n", and with a reference "agreement", "margin", "margin_unedited", "margin_change"}}``.
    """
    if reference is not None:
        for task, items in tasks.items():
            if task not in reference.gold or len(reference.gold[task]) != len(list(items)):
                raise ValueError(f"the reference has no answers for the {len(list(items))} items of task {task!r}; "
                                 "compute it with capability_answers on the same items")
        want = max((len(v) for v in (demos or {}).values()), default=0)
        if reference.shots != want:
            raise ValueError(f"the reference was scored {reference.shots}-shot, this call is {want}-shot")
    return capability_scores(capability_answers(model, tok, tasks, batch_size, demos, show_progress), reference)


def capability_scores(ans: CapabilityAnswers, reference: CapabilityAnswers | None = None) -> dict[str, dict[str, float]]:
    """The scores of :func:`general_capability` from answers already computed.

    Arguments:
        ans: a model's :func:`capability_answers`.
        reference: the unedited model's answers on the same items, or None.

    Returns:
        See :func:`general_capability`.
    """
    out: dict[str, dict[str, float]] = {}
    for task, gold in ans.gold.items():
        if reference is not None and reference.gold.get(task) != gold:
            raise ValueError(f"task {task!r}: the reference was computed on different items (gold labels differ)")
        pred = ans.predictions(task)
        acc = sum(int(p == g) for p, g in zip(pred, gold)) / len(gold)
        if task == "mmlu":
            row = {"acc": acc, "f1": macro_f1(gold, pred)}
        else:
            # label 1 is the GLUE positive class (positive / paraphrase / acceptable / not_entailment)
            row = {"acc": acc, "f1": binary_f1(gold, pred, 1)}
            if task == "cola":
                row["mcc"] = mcc(gold, pred)
        row["n"] = len(gold)
        if reference is not None:
            ref_pred = reference.predictions(task)
            row["agreement"] = sum(int(p == r) for p, r in zip(pred, ref_pred)) / len(gold)
            row["margin"] = sum(_margin(s, r) for s, r in zip(ans.scores[task], ref_pred)) / len(gold)
            row["margin_unedited"] = sum(_margin(s, r) for s, r in zip(reference.scores[task], ref_pred)) / len(gold)
            # per item |Δ margin|: shifts of opposite sign do not cancel
            row["margin_change"] = sum(abs(_margin(s, r) - _margin(s0, r)) for s, s0, r in
                                       zip(ans.scores[task], reference.scores[task], ref_pred)) / len(gold)
        out[task] = row
    return out
