"""Held-out text: the paragraphs perplexity and top-1 agreement are measured on (never edited, never in C0)."""
from __future__ import annotations

import os
from pathlib import Path

from otelab.data.corpus import text_file_corpus, wiki_corpus


def held_out_texts(n: int, min_chars: int = 200) -> list[str]:
    """``n`` held-out paragraphs for perplexity and top-1 agreement.

    WikiText-2 test paragraphs (headings dropped) when
    ``$OTELAB_DATA_DIR/corpus/wikitext2_test.txt`` exists; otherwise the *last*
    documents of the default Wikipedia corpus (covariances stream it from the start).

    Arguments:
        n: how many texts.
        min_chars: skip shorter paragraphs.

    Returns:
        Up to ``n`` strings, always the same ones.
    """
    root = os.environ.get("OTELAB_DATA_DIR")
    wt = Path(root) / "corpus" / "wikitext2_test.txt" if root else None
    if wt is not None and wt.is_file():
        docs = (d for d in text_file_corpus(wt).texts() if not d.startswith("="))
        out = []
        for d in docs:
            if len(d) >= min_chars:
                out.append(d)
                if len(out) == n:
                    break
        return out
    docs = [d for d in wiki_corpus().texts() if len(d) >= min_chars]
    return docs[-n:] if n else []
