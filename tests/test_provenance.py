"""What a comparison measured: question sources, system names and origins, leakage per training set."""

from __future__ import annotations

import time

import numpy as np
import pytest

from core.datasets import QADataset
from core.evaluation import compare
from core.launch import embedder_name, named_specs
from core.provenance import (
    build_context,
    describe_sources,
    exclude_leaked,
    leaked_ids,
    question_sources,
    record_generator,
)
from core.questions import generation_key, save_dataset
from core.runs import _set_status, create_run
from core.summary import caveats
from core.training import TrainConfig


class FakeLLM:
    kind = "llm"
    model = "gpt-4o-mini"
    prompt_template = "{context_str} {num_questions_per_chunk}"


class Vectors:
    """A deterministic fake base embedder: a text's vector from its hash (same text, same vector)."""

    identity = "fake"
    dimension = 8

    def _vec(self, t: str) -> np.ndarray:
        return np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(8).astype(np.float32)

    def embed_queries(self, texts, progress=None):
        return np.stack([self._vec(t) for t in texts])

    embed_texts = embed_queries


def _ds(prefix: str, n: int = 6) -> QADataset:
    corpus = {f"c{i}": f"chunk text {i}" for i in range(n)}
    queries = {f"{prefix}{i}": f"{prefix} question {i}?" for i in range(n)}
    return QADataset(queries, corpus, {f"{prefix}{i}": [f"c{i}"] for i in range(n)})


def test_question_sources_and_the_llm_model(ws):
    now = time.time()
    with ws.db() as con:
        con.executemany(
            "INSERT INTO questions(id, chunk_id, text, source, created_at) VALUES (?, ?, ?, ?, ?)",
            [("q1", "c1", "a?", "llm", now), ("q2", "c2", "b?", "offline", now), ("q3", "c1", "c?", "llm", now)],
        )
        con.execute(
            "INSERT INTO generation_done(gen_key, chunk_id, n_questions, done_at) VALUES (?, 'c1', 2, ?)",
            (generation_key(FakeLLM(), 2), now),
        )
    record_generator(ws, FakeLLM(), 2)
    ds = QADataset(
        {"q1": "a?", "q2": "b?", "q3": "c?", "x": "from a file?"},
        {"c1": "t", "c2": "u"},
        {"q1": ["c1"], "q2": ["c2"], "q3": ["c1"], "x": ["c2"]},
    )
    info = question_sources(ws, ds)
    assert info == {"sources": {"llm": 2, "offline": 1, "unknown": 1}, "llm_models": ["gpt-4o-mini"]}
    assert describe_sources(info) == (
        "2 written by an LLM (gpt-4o-mini), 1 offline pseudo-queries (no LLM), 1 of unknown origin (a dataset file)"
    )


def test_names_are_what_people_called_things(ws):
    train_id = save_dataset(ws, _ds("t"), "train set", role="train")
    r1 = create_run(ws, TrainConfig(epochs=1), dataset_id=train_id, name="linear (recipe)")
    r2 = create_run(ws, TrainConfig(epochs=1), dataset_id=train_id, name="linear (recipe)")
    named = named_specs(
        ws,
        [
            {"kind": "run", "run_id": r1},
            {"kind": "run", "run_id": r2},
            {"kind": "checkpoint", "run_id": r1, "step": 12},
            {"kind": "api", "spec": "openai:text-embedding-3-small"},
            {"kind": "adapter_dir", "path": "/x/adapters/my-linear/"},
        ],
    )
    assert [n for n, _ in named] == [
        "base (all-MiniLM-L6-v2)",
        "linear (recipe)",
        f"linear (recipe) ({r2[-6:]})",
        "linear (recipe) @ step 12",
        "text-embedding-3-small (API)",
        "my-linear",
    ]
    assert embedder_name("sentence-transformers/all-mpnet-base-v2") == "all-mpnet-base-v2"
    assert embedder_name("default@onnx-int8") == "all-MiniLM-L6-v2 (ONNX int8)"  # not 'default@onnx-int8'
    assert embedder_name("/models/e5-small@onnx-fp32") == "e5-small (ONNX fp32)"
    with pytest.raises(ValueError, match="no longer exists"):
        named_specs(ws, [{"kind": "run", "run_id": "run-gone"}])


def test_context_flags_leakage_and_selection_on_the_evaluation_set(ws):
    train = _ds("t")
    train_id = save_dataset(ws, train, "train set", role="train")
    val_id = save_dataset(ws, _ds("v"), "validation set", role="val")
    run_id = create_run(ws, TrainConfig(epochs=1), dataset_id=train_id, val_dataset_id=val_id, name="linear (recipe)")
    specs = [{"kind": "run", "run_id": run_id}]
    named = named_specs(ws, specs)
    emb = Vectors()

    # evaluated on its own training set: every question leaks
    ctx = build_context(ws, train, "train set", named, emb, dataset_id=train_id)
    info = ctx["systems"]["linear (recipe)"]
    assert info["id"] == run_id and info["train_set"]["name"] == "train set" and not info["picked_on_eval"]
    assert info["settings"]["epochs"] == 1 and info["validation"] == "validation set"
    (entry,) = ctx["leakage"]
    assert entry["systems"] == ["linear (recipe)"] and entry["report"]["identical"] == list(train.queries)
    assert leaked_ids(ctx) == set(train.queries)
    assert ctx["eval_set"]["n_queries"] == 6 and ctx["base_model"] == "all-MiniLM-L6-v2"

    # evaluated on the set that chose its best epoch: optimistic
    ctx = build_context(ws, _ds("v"), "validation set", named, emb, dataset_id=val_id)
    assert ctx["systems"]["linear (recipe)"]["picked_on_eval"] is True
    assert leaked_ids(ctx) == set() and leaked_ids(ctx, "chunks") == {f"v{i}" for i in range(6)}  # same chunks

    # cross-validated with the evaluation set named ("You will evaluate on"): its chunks chose the design, which
    # the table says, and only on that set
    cv_id = create_run(ws, TrainConfig(epochs=1), dataset_id=train_id, eval_dataset_id=val_id, name="cv")
    _set_status(ws, cv_id, "done", {"selection": {"design": "chunks", "train": True}})
    named = named_specs(ws, [{"kind": "run", "run_id": cv_id}])
    designed = "cross-validation on the training questions, designed from this set's chunks (never its questions)"
    assert (
        build_context(ws, _ds("v"), "validation set", named, emb, dataset_id=val_id)["systems"]["cv"]["validation"]
        == designed
    )
    other = build_context(ws, train, "train set", named, emb, dataset_id=train_id)["systems"]["cv"]
    assert other["validation"] == "cross-validation on the training questions" and not other["picked_on_eval"]

    # nothing named, and the ingested chunks no training question asks about stood in for it: said on any set
    blind_id = create_run(ws, TrainConfig(epochs=1), dataset_id=train_id, name="blind")
    _set_status(ws, blind_id, "done", {"selection": {"design": "chunks", "train": True, "stand_in": 12}})
    named = named_specs(ws, [{"kind": "run", "run_id": blind_id}])
    assert build_context(ws, _ds("v"), "validation set", named, emb, dataset_id=val_id)["systems"]["blind"][
        "validation"
    ] == (
        "cross-validation on the training questions, designed from the ingested chunks no training question asks "
        "about (never any questions)"
    )


def test_text_coverage_reads_the_chunks_the_questions_ask_about(ws):
    """A training set built in the workspace ranks among every chunk (its corpus covers the document) but its
    questions may ask about a sample: the evaluation questions about the other chunks are about text new to
    the adapter (Compare then points at fine-tune, then distil), those about the sampled ones are not."""
    words = "fleet drivers riders insurance bikes scooters leases taxes offices markets".split()
    corpus = {f"c{i}": f"the filing section {i} covers {words[i]} across many fiscal years in detail" for i in range(8)}

    def asking(prefix: str, chunks: list[int]) -> QADataset:
        return QADataset(
            {f"{prefix}{i}": f"{prefix} about {words[i]}?" for i in chunks},
            corpus,
            {f"{prefix}{i}": [f"c{i}"] for i in chunks},
        )

    train_id = save_dataset(ws, asking("t", [0, 1]), "sampled train", role="train")
    named = named_specs(ws, [{"kind": "run", "run_id": create_run(ws, TrainConfig(epochs=1), dataset_id=train_id)}])
    (entry,) = build_context(ws, asking("e", [2, 3, 4, 5]), "elsewhere", named, Vectors())["leakage"]
    assert entry["text_coverage"] == 0.0  # the corpora are the same; the questions' chunks are not
    (entry,) = build_context(ws, asking("e", [0, 1]), "same chunks", named, Vectors())["leakage"]
    assert entry["text_coverage"] == 1.0


def test_exclude_leaked_re_runs_the_statistics_without_them(ws):
    train = _ds("t", 10)
    ev = QADataset(
        {**{f"t{i}": f"t question {i}?" for i in range(3)}, **{f"e{i}": f"new question {i}?" for i in range(7)}},
        train.corpus,
        {**{f"t{i}": [f"c{i}"] for i in range(3)}, **{f"e{i}": [f"c{i + 3}"] for i in range(7)}},
    )
    train_id = save_dataset(ws, train, "train set", role="train")
    run_id = create_run(ws, TrainConfig(epochs=1), dataset_id=train_id, name="lin")
    named = named_specs(ws, [{"kind": "run", "run_id": run_id}])
    emb = Vectors()
    ctx = build_context(ws, ev, "eval", named, emb)
    assert leaked_ids(ctx) == {"t0", "t1", "t2"}
    cmp = compare(ev, {n: emb for n, _ in named}, n_resamples=50)
    clean, ctx2 = exclude_leaked(cmp, ctx, "questions")
    assert clean.n_queries == 7 and "t0" not in clean.results["lin"].query_ids
    assert ctx2["excluded"] == {"mode": "questions", "n": 3, "of": 10} and "excluded" not in ctx
    # the caveats: before, the leaked questions are flagged; after, only that they were left out (no advice to
    # exclude what is already excluded)
    before = " ".join(c["text"] for c in caveats(cmp, ctx))
    after = [c["text"] for c in caveats(clean, ctx2)]
    assert "identical or near-identical" in before
    assert not any("identical or near-identical" in t for t in after)
    assert any(t.startswith("3 leaked question(s) (duplicated questions) were excluded") for t in after)
