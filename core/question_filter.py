"""Which generated questions can work as search queries.

A question written *about* a passage ("What does the passage say about revenue?", "According
to the context, ...") names the passage instead of its subject: a real user would never type
it, and it teaches an adapter to match the word "passage". A line with no question mark is
often a preamble or an instruction, and a "question" that copies a long run of its chunk is a
lookup, not a query.

Measured on the real Lyft 10-K questions (bench/README.md): 18% mention "the context"/"the
document" and 24% lack a question mark, yet dropping them from *training* lowered the
cross-validated adapter's test gains on every protocol (less data hurt more than the noise),
so training keeps them by default (``TrainConfig.filter_questions``). The filter flags an LLM's
questions instead: ``generate`` counts them, and the Questions page lists them with a button that
removes them (for an evaluation set, they measure the wrong thing).

Example::

    why_not_searchable("What is the total revenue from the passage?")   # 'refers to "the passage"'
    kept, dropped = filter_dataset(ds)
"""

from __future__ import annotations

import re

from .datasets import QADataset

_REFERS = re.compile(
    r"\b(?:(?:the|this|that)\s+(?:(?:given|provided|above|following)\s+)?|(?:given|provided|above|following)\s+)"
    r"(?:passage|context(?:\s+information)?|document|text|excerpt|paragraph|snippet|chunk)\b",
    re.IGNORECASE,
)
_COPY_WORDS = 12  # a run of this many words of the chunk inside the question is a copy


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def why_not_searchable(question: str, chunk: str | None = None) -> str | None:
    """The reason ``question`` cannot work as a search query, or None when it can."""
    q = question.strip()
    if not q:
        return "empty"
    m = _REFERS.search(q)
    if m:
        return f'refers to "{m.group(0).lower()}"'
    if "?" not in q:
        return "no question mark"
    if chunk:
        words = _words(q)
        if len(words) >= _COPY_WORDS:
            chunk_text = " " + " ".join(_words(chunk)) + " "
            for i in range(len(words) - _COPY_WORDS + 1):
                if " " + " ".join(words[i : i + _COPY_WORDS]) + " " in chunk_text:
                    return f"copies {_COPY_WORDS}+ words of its chunk"
    return None


def filter_dataset(ds: QADataset) -> tuple[QADataset, dict[str, str]]:
    """(the dataset without unsearchable questions, {dropped question id: reason})."""
    dropped: dict[str, str] = {}
    for qid, text in ds.queries.items():
        rel = ds.relevant_docs.get(qid) or []
        reason = why_not_searchable(text, ds.corpus.get(rel[0]) if rel else None)
        if reason:
            dropped[qid] = reason
    kept = [q for q in ds.queries if q not in dropped]
    return ds.subset(kept), dropped


def unsearchable_questions(ws, rows: list[dict]) -> dict[str, tuple[str, str]]:
    """Of question rows (:func:`core.questions.list_questions`: id, text, chunk_id, source), the LLM's that cannot
    work as search queries: id -> (text, why), each checked against its *whole* chunk, as :func:`filter_dataset`
    and ``generate`` check them (a preview of the chunk's start missed copies of its later text). Offline
    questions are sentences by design: not checked."""
    llm = [r for r in rows if r.get("source") == "llm"]
    ids = sorted({r["chunk_id"] for r in llm})
    texts: dict[str, str] = {}
    for start in range(0, len(ids), 500):  # SQLite's bound-variable limit
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        texts.update(
            (r["id"], r["text"]) for r in ws.query(f"SELECT id, text FROM chunks WHERE id IN ({marks})", tuple(part))
        )
    out = {}
    for r in llm:
        why = why_not_searchable(r["text"], texts.get(r["chunk_id"]))
        if why:
            out[r["id"]] = (r["text"], why)
    return out
