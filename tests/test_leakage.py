"""The leakage check: identical and near-duplicate questions, shared chunks, severity, exclusion."""

from __future__ import annotations

import numpy as np
import pytest

from core.datasets import QADataset
from core.leakage import LARGE_SHARE, LeakageReport, check_leakage


def _ds(queries: dict[str, str], rel: dict[str, str], corpus: dict[str, str]) -> QADataset:
    return QADataset(queries, corpus, {q: [d] for q, d in rel.items()})


CORPUS = {f"c{i}": f"passage number {i} about topic {i}" for i in range(10)}


def test_identical_questions_ignore_case_spacing_and_punctuation():
    train = _ds({"t1": "What was Lyft's revenue in 2021?", "t2": "Who is the CEO?"}, {"t1": "c0", "t2": "c1"}, CORPUS)
    ev = _ds(
        {"e1": "what was  lyfts revenue in 2021", "e2": "What was the revenue in 2020?"},
        {"e1": "c5", "e2": "c6"},
        CORPUS,
    )
    rep = check_leakage(ev, train)
    assert rep.identical == ["e1"] and rep.near_duplicate == [] and rep.threshold is None  # no vectors: cosine skipped
    assert rep.examples[0] == {
        "eval": "what was  lyfts revenue in 2021",
        "train": "What was Lyft's revenue in 2021?",
        "cosine": 1.0,
    }
    assert rep.shared_chunks == [] and rep.on_shared_chunks == []


def test_near_duplicates_by_cosine_on_given_vectors():
    train = _ds({"t1": "a", "t2": "b"}, {"t1": "c0", "t2": "c1"}, CORPUS)
    ev = _ds({"e1": "x", "e2": "y", "e3": "z"}, {"e1": "c5", "e2": "c6", "e3": "c7"}, CORPUS)
    tv = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
    evv = np.array([[0.99, 0.05, 0], [0.6, 0.8, 0], [0, 0.1, 1]], dtype=np.float32)  # e1 ~ t1 (cos 0.9987)
    rep = check_leakage(ev, train, eval_vecs=evv, train_vecs=tv, threshold=0.95)
    assert rep.near_duplicate == ["e1"] and rep.threshold == 0.95
    assert rep.examples == [{"eval": "x", "train": "a", "cosine": pytest.approx(0.9987, abs=1e-3)}]
    assert check_leakage(ev, train, eval_vecs=evv, train_vecs=tv, threshold=0.75).near_duplicate == ["e1", "e2"]


def test_embedder_is_used_for_the_vectors():
    class Fake:
        def embed_queries(self, texts):
            return np.array([[1.0, 0.0] if "revenue" in t else [0.0, 1.0] for t in texts], dtype=np.float32)

    train = _ds({"t1": "revenue please"}, {"t1": "c0"}, CORPUS)
    ev = _ds({"e1": "the revenue?", "e2": "staff"}, {"e1": "c3", "e2": "c4"}, CORPUS)
    assert check_leakage(ev, train, Fake()).near_duplicate == ["e1"]


def test_shared_chunks_by_id_and_by_text():
    corpus_eval = dict(CORPUS)
    corpus_eval["other-id"] = "  Passage number 2 ABOUT topic 2 "  # same text as c2, another id
    train = _ds({"t1": "q one", "t2": "q two"}, {"t1": "c1", "t2": "c2"}, CORPUS)
    ev = _ds(
        {"e1": "new 1", "e2": "new 2", "e3": "new 3", "e4": "new 4"},
        {"e1": "c1", "e2": "other-id", "e3": "c7", "e4": "c1"},
        corpus_eval,
    )
    rep = check_leakage(ev, train)
    assert rep.shared_chunks == ["c1", "other-id"]
    assert rep.on_shared_chunks == ["e1", "e2", "e4"]
    assert rep.leaked("questions") == set() and rep.leaked("chunks") == {"e1", "e2", "e4"}
    assert rep.severity == "medium"  # 3 of 4 questions about trained passages, none duplicated


def test_shared_chunks_by_text_cut_otherwise():
    """The same filing chunked twice (a LlamaIndex file against the app's own chunks): an evaluation chunk whose text
    mostly lies in a training target is shared, though no id or whole text matches."""
    passage = " ".join(f"word{i}" for i in range(400))
    train = _ds({"t1": "q one"}, {"t1": "long"}, {"long": passage})
    ev = _ds(
        {"e1": "new 1", "e2": "new 2"},
        {"e1": "recut", "e2": "other"},
        {
            "recut": " ".join(f"word{i}" for i in range(150, 330)) + " and a tail",  # a piece of the trained passage
            "other": " ".join(f"term{i}" for i in range(180)),
        },
    )
    rep = check_leakage(ev, train)
    assert rep.shared_chunks == ["recut"] and rep.on_shared_chunks == ["e1"]


def test_severity_and_round_trip():
    train = _ds({f"t{i}": f"question {i}" for i in range(20)}, {f"t{i}": f"c{i % 10}" for i in range(20)}, CORPUS)
    # the evaluation set *is* the training set: everything leaks
    rep = check_leakage(train, train)
    assert rep.duplicate_share == 1.0 >= LARGE_SHARE and rep.severity == "high"
    assert rep.leaked() == set(train.queries)
    assert LeakageReport.from_dict(rep.to_dict()) == rep
    assert rep.counts() == {"identical": 20, "near_duplicate": 0, "shared_chunks": 10, "on_shared_chunks": 20}
    clean = _ds({"e": "unrelated"}, {"e": "fresh"}, {"fresh": "fresh text"})
    assert check_leakage(clean, train).severity == "none"
    with pytest.raises(ValueError, match="mode"):
        rep.leaked("everything")
