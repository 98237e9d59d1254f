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

import os
from typing import Sequence

from otelab.data.files import (  # noqa: F401  (re-exported: imported from here by the CLI, tests and notebooks)
    BUILTIN_DIR, COUNTERFACT_SPLITS, ENV_VAR, GLUE_TASKS, HF_SOURCES, RELATIVE_PATHS, Records, from_hf,
    read_records, resolve_file,
)
from otelab.data.records import DataError, FactRecord, ZsreRecord  # noqa: F401  (re-exported)
from otelab.data.sources import (  # noqa: F401  (NLI_LABELS re-exported)
    GLUE_CONVERTERS, NLI_LABELS, check_errors, collect, detect_format, flat_record, keep_first,
    rebuild_neighbourhoods, rome_record, zsre_record,
)

# ----------------------------------------------------------------------------- CounterFact

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
    check_errors(errors)
    if fmt not in ("auto", "rome", "flat"):
        raise ValueError(f"fmt must be 'auto', 'rome' or 'flat', got {fmt!r}")
    if split not in COUNTERFACT_SPLITS:
        raise ValueError(f"split must be one of {COUNTERFACT_SPLITS}, got {split!r}")
    if source == "hf" and path is None:
        raw, origin = from_hf("counterfact"), "huggingface:azhx/counterfact"
    else:
        file = resolve_file(f"counterfact-{split}", path, source)
        if file is None:
            return load_factbank(n)
        raw, origin = read_records(file), str(file)
    fmt = detect_format(raw, origin) if fmt == "auto" else fmt
    records = collect(raw, origin, rome_record if fmt == "rome" else flat_record, errors)
    if fmt == "flat":
        rebuild_neighbourhoods(records, max_neighbours)
    return keep_first(records, n)


def load_factbank(n: int | None = None) -> list[FactRecord]:
    """Load otelab's built-in fact bank (``data/factbank.json``, ROME format; see ``data/README.md``).

    Arguments:
        n: keep the first ``n`` records.

    Returns:
        A list of :class:`FactRecord`, every one with paraphrases, neighbourhood and
        generation prompts and a reference text.
    """
    file = BUILTIN_DIR / "factbank.json"
    return keep_first(collect(read_records(file), "built-in fact bank", rome_record, "raise"), n)


# ----------------------------------------------------------------------------- zsRE

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
    check_errors(errors)
    file = resolve_file("zsre", path, "auto")
    if file is None:
        raise FileNotFoundError(f"zsRE has no built-in copy: pass path= or set {ENV_VAR} to a folder "
                                f"holding {RELATIVE_PATHS['zsre']}")
    return keep_first(collect(read_records(file), str(file), zsre_record, errors), n)


# ----------------------------------------------------------------------------- GLUE-style tasks and MMLU

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
    check_errors(errors)
    if task not in GLUE_CONVERTERS:
        raise ValueError(f"unknown task {task!r}; expected one of {GLUE_TASKS}")
    if source == "hf" and path is None:
        raw, origin = from_hf(task), f"huggingface:{HF_SOURCES[task][0]}/{task}"
    else:
        file = resolve_file(task, path, source)
        if file is None:
            return load_probes("rte" if task == "nli" else task, n)
        raw, origin = read_records(file), str(file)
    return keep_first(collect(raw, origin, GLUE_CONVERTERS[task], errors), n)


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
    return keep_first(collect(read_records(file), f"built-in {task} probes", GLUE_CONVERTERS[task], "raise"), n)


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
