"""Data files: where a dataset is read from (path, ``$OTELAB_DATA_DIR``, built-in, Hub); JSON / JSON Lines reading."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from otelab.data.records import DataError

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


def resolve_file(key: str, path: str | os.PathLike | None, source: str) -> Path | None:
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


def from_hf(key: str) -> list[dict]:
    """Download a dataset from the Hugging Face Hub (opt-in; needs ``datasets``)."""
    if key not in HF_SOURCES:
        raise ValueError(f"no Hugging Face source for {key!r}; pass path= or set {ENV_VAR}")
    try:
        import datasets
    except ImportError:
        raise ImportError("source='hf' needs the optional package `datasets`: pip install datasets") from None
    name, config, split = HF_SOURCES[key]
    return [dict(r) for r in datasets.load_dataset(name, config, split=split)]
