"""Leakage between an adapter's training set and an evaluation set.

An evaluation only measures generalisation when its questions were not trained on. This module
finds, for one (evaluation set, training set) pair:

- **identical questions**: an evaluation question whose normalised text
  (:func:`core.questions.normalize_question`) equals a training question's;
- **near-duplicate questions**: cosine similarity of the base model's (cached) query vectors at
  least ``threshold`` (0.95 by default) to some training question;
- **shared chunks**: evaluation target chunks that are also training targets (same chunk id, the
  same normalised text, or mostly the same text cut otherwise: at least half of the chunk's word
  4-gram fingerprints, :func:`core.distill.text_fingerprints`, among the training targets'), and the
  evaluation questions that point at them.

Shared chunks are expected when the adapter is meant for *new questions about the same
documents*; they are not when it is meant for *new documents*. Duplicated questions are leakage
in either case: above :data:`LARGE_SHARE` of the evaluation questions, the report shows a red
warning that the numbers do not measure generalisation.

Example::

    rep = check_leakage(eval_ds, train_ds, embedder)      # embedder: the base (cache hits)
    rep.counts()      # {"identical": 3, "near_duplicate": 5, "shared_chunks": 40, "on_shared_chunks": 80}
    keep = [q for q in eval_ds.queries if q not in rep.leaked("questions")]
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .datasets import QADataset

if TYPE_CHECKING:
    from .embedders import Embedder

NEAR_DUPLICATE_COSINE = 0.95
#: Share of duplicated evaluation questions from which the numbers are flagged (red) as not
#: measuring generalisation.
LARGE_SHARE = 0.10
#: Share of evaluation questions about training chunks from which the report says the set
#: measures "new questions about trained chunks", not new documents.
CHUNK_SHARE_NOTE = 0.5
#: What ``leaked(mode)`` drops: duplicated questions only, or also every question whose target
#: chunk was trained on.
EXCLUDE_MODES = ("questions", "chunks")


def _norm_text(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", str(text)).lower()).strip()


@dataclass
class LeakageReport:
    """The overlap of one evaluation set with one training set (query and chunk ids of the evaluation set)."""

    n_eval: int
    n_train: int
    threshold: float | None
    identical: list[str] = field(default_factory=list)
    near_duplicate: list[str] = field(default_factory=list)
    shared_chunks: list[str] = field(default_factory=list)
    on_shared_chunks: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)  # a few (eval, train, cosine) pairs

    @property
    def duplicated(self) -> list[str]:
        return self.identical + self.near_duplicate

    @property
    def duplicate_share(self) -> float:
        return len(self.duplicated) / self.n_eval if self.n_eval else 0.0

    @property
    def chunk_share(self) -> float:
        return len(self.on_shared_chunks) / self.n_eval if self.n_eval else 0.0

    @property
    def severity(self) -> str:
        """``high`` (red: duplicated questions), ``medium`` (most questions are about trained chunks),
        ``low`` (some overlap) or ``none``."""
        if self.duplicate_share >= LARGE_SHARE:
            return "high"
        if self.chunk_share >= CHUNK_SHARE_NOTE:
            return "medium"
        if self.duplicated or self.on_shared_chunks:
            return "low"
        return "none"

    def leaked(self, mode: str = "questions") -> set[str]:
        """Evaluation query ids to drop: duplicated questions (``questions``), or also every
        question about a trained chunk (``chunks``)."""
        if mode not in EXCLUDE_MODES:
            raise ValueError(f"mode must be one of {', '.join(EXCLUDE_MODES)}, got {mode!r}")
        out = set(self.duplicated)
        if mode == "chunks":
            out |= set(self.on_shared_chunks)
        return out

    def counts(self) -> dict[str, int]:
        return {
            "identical": len(self.identical),
            "near_duplicate": len(self.near_duplicate),
            "shared_chunks": len(self.shared_chunks),
            "on_shared_chunks": len(self.on_shared_chunks),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LeakageReport:
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in keys})


def _max_cosine(a: np.ndarray, b: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``a``: the best cosine to any row of ``b`` and its index."""
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    best = np.full(len(an), -1.0, dtype=np.float32)
    arg = np.zeros(len(an), dtype=np.int64)
    for start in range(0, len(an), block):
        s = an[start : start + block] @ bn.T
        arg[start : start + len(s)] = s.argmax(axis=1)
        best[start : start + len(s)] = s.max(axis=1)
    return best, arg


def check_leakage(
    eval_ds: QADataset,
    train_ds: QADataset,
    embedder: Embedder | None = None,
    threshold: float = NEAR_DUPLICATE_COSINE,
    eval_vecs: np.ndarray | None = None,
    train_vecs: np.ndarray | None = None,
) -> LeakageReport:
    """Identical and near-duplicate questions, and shared target chunks, between the two sets.

    Near-duplicates need query vectors: pass the base ``embedder`` (its cache makes this free
    for texts already embedded) or the vectors (rows in ``queries`` order). Without either,
    only identical texts and shared chunks are found (``threshold`` is then None).
    """
    from .generators import normalize_question

    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    eval_ids = list(eval_ds.queries)
    train_ids = list(train_ds.queries)
    report = LeakageReport(len(eval_ids), len(train_ids), None)
    if not eval_ids or not train_ids:
        return report

    train_norm: dict[str, str] = {}
    for q in train_ids:
        train_norm.setdefault(normalize_question(train_ds.queries[q]), q)
    identical = []
    for q in eval_ids:
        match = train_norm.get(normalize_question(eval_ds.queries[q]))
        if match is not None:
            identical.append(q)
            if len(report.examples) < 5:
                report.examples.append({"eval": eval_ds.queries[q], "train": train_ds.queries[match], "cosine": 1.0})
    report.identical = identical

    if eval_vecs is None and train_vecs is None and embedder is not None:
        eval_vecs = embedder.embed_queries([eval_ds.queries[q] for q in eval_ids])
        train_vecs = embedder.embed_queries([train_ds.queries[q] for q in train_ids])
    if eval_vecs is not None and train_vecs is not None:
        report.threshold = float(threshold)
        best, arg = _max_cosine(np.asarray(eval_vecs, dtype=np.float32), np.asarray(train_vecs, dtype=np.float32))
        seen = set(identical)
        near = []
        for i in np.argsort(-best, kind="stable"):
            q = eval_ids[i]
            if best[i] < threshold - 1e-6:
                break
            if q in seen:
                continue
            near.append(q)
            if len(report.examples) < 5:
                report.examples.append(
                    {
                        "eval": eval_ds.queries[q],
                        "train": train_ds.queries[train_ids[arg[i]]],
                        "cosine": round(float(best[i]), 4),
                    }
                )
        order = {q: i for i, q in enumerate(eval_ids)}
        report.near_duplicate = sorted(near, key=order.get)

    from .distill import IN_CORPUS_SHARE, coverage, text_fingerprints

    train_targets = {d for q in train_ids for d in train_ds.relevant_docs.get(q, [])}
    train_texts = {_norm_text(train_ds.corpus[d]) for d in train_targets if d in train_ds.corpus}
    # the same passages under another chunking (a LlamaIndex file against the app's own chunks of that filing)
    train_prints = text_fingerprints(train_ds.corpus[d] for d in train_targets if d in train_ds.corpus)
    shared: list[str] = []
    for d in dict.fromkeys(d for q in eval_ids for d in eval_ds.relevant_docs.get(q, [])):
        text = eval_ds.corpus.get(d)
        if (
            d in train_targets
            or (text is not None and _norm_text(text) in train_texts)
            or (text is not None and (coverage(text_fingerprints([text]), train_prints) or 0) >= IN_CORPUS_SHARE)
        ):
            shared.append(d)
    report.shared_chunks = shared
    shared_set = set(shared)
    report.on_shared_chunks = [q for q in eval_ids if shared_set.intersection(eval_ds.relevant_docs.get(q, []))]
    return report
