"""The sentences of ``qkernels demo``: real English prose from CPython's own documentation, so the demo
needs no data download, and a retrieval task built from it.

The sentences are the first ``n`` distinct sentences of ``pydoc_data.topics`` (prose paragraphs only,
6 to 40 words, topics in sorted order): the same ones on every run. Each keeps its topic. The
retrieval pairs are consecutive sentences of one topic: its 1st and 2nd sentence, its 3rd and 4th,
and so on (an odd last one is left out). The first sentence of each pair is a query, the second
sentences of all pairs are the corpus, and a query is answered when its own partner ranks in the
top k by cosine similarity (recall@k).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from .eval import retrieval_recall_at_k

RECALL_KS = (1, 5)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"])")


def _paragraphs(doc: str) -> Iterator[str]:
    """Prose paragraphs of a pydoc topic, each joined onto one line; code and headings dropped."""
    for para in re.split(r"\n\s*\n", doc):
        lines = para.splitlines()
        # Indented blocks are grammar and code samples; lines of *** or === underline headings.
        if not lines or lines[0].startswith(" "):
            continue
        if any(set(line.strip()) <= set("*=-~^") for line in lines):
            continue
        yield " ".join(line.strip() for line in lines)


def _check_count(fn: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name}: expected a positive int, got {value!r}")
    return value


def topic_sentences(n: int, min_words: int = 6, max_words: int = 40) -> list[tuple[str, str]]:
    """The first ``n`` distinct English sentences of CPython's pydoc topics with their topic, as
    ``(sentence, topic)``, topics in sorted order (the same sentences on every run and Python build).
    Fewer come back when the topics hold fewer."""
    _check_count("topic_sentences", "n", n)
    _check_count("topic_sentences", "min_words", min_words)
    if _check_count("topic_sentences", "max_words", max_words) < min_words:
        raise ValueError(f"topic_sentences: max_words: expected >= min_words ({min_words}), got {max_words}")
    from pydoc_data.topics import topics

    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key in sorted(topics):
        for para in _paragraphs(topics[key]):
            for s in _SENTENCE_END.split(para):
                s = " ".join(s.split())
                ok = min_words <= len(s.split()) <= max_words and s[0].isupper() and s[-1] in ".!?"
                if ok and s not in seen:
                    seen.add(s)
                    out.append((s, key))
                    if len(out) == n:
                        return out
    return out


def load_sentences(n: int, min_words: int = 6, max_words: int = 40) -> list[str]:
    """The sentences of :func:`topic_sentences` without their topics."""
    return [s for s, _ in topic_sentences(n, min_words, max_words)]


def sentence_pairs(topics: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` of consecutive sentences of one topic (``topics[k]`` is the topic of
    sentence k, sentences of a topic contiguous): the 1st and 2nd of each topic, the 3rd and 4th..."""
    if isinstance(topics, str) or not isinstance(topics, Sequence):
        raise TypeError(f"sentence_pairs: topics: expected a sequence of str, got {type(topics).__name__}")
    pairs, start = [], 0
    for k in range(1, len(topics) + 1):
        if k == len(topics) or topics[k] != topics[start]:
            pairs += [(i, i + 1) for i in range(start, k - 1, 2)]
            start = k
    return pairs


def recall_at_k(emb: Tensor, pairs: Sequence[tuple[int, int]], rows: Sequence[int]) -> dict[str, float]:
    """Recall@k (k in ``RECALL_KS``) of each pair's second sentence for its first among the second
    sentences of all pairs; ``emb[r]`` embeds sentence ``rows[r]``."""
    fn = "recall_at_k"
    if not isinstance(emb, Tensor) or emb.dim() != 2 or emb.shape[0] != len(rows):
        got = tuple(emb.shape) if isinstance(emb, Tensor) else type(emb).__name__
        raise ValueError(
            f"{fn}: emb: expected a [rows, D] tensor with {len(rows)} rows (one per rows entry), got {got}"
        )
    if sorted(rows) != list(range(len(rows))):
        raise ValueError(f"{fn}: rows: expected a permutation of 0..{len(rows) - 1}, got {list(rows)[:8]}...")
    if not pairs or any(not (0 <= i < len(rows) and 0 <= j < len(rows)) for i, j in pairs):
        raise ValueError(
            f"{fn}: pairs: expected at least one pair of indices below {len(rows)}, got {list(pairs)[:4]}"
        )
    where = torch.empty(len(rows), dtype=torch.long)
    where[torch.tensor(rows)] = torch.arange(len(rows))
    queries = emb[where[torch.tensor([i for i, _ in pairs])]]
    corpus = emb[where[torch.tensor([j for _, j in pairs])]]
    relevant = torch.arange(len(pairs))
    return {
        f"r@{k}": retrieval_recall_at_k(queries, corpus, relevant, k) for k in RECALL_KS if k <= len(pairs)
    }
