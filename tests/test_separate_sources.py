"""Offline and written questions about separate chunks (``TrainConfig.separate_sources``): which chunks
form each kind's group (:func:`core.training.source_groups`), the losses' group mask, and the
behaviour it exists for: mixed in one pool, a written-style query about an offline document is sent
toward the written questions' document; kept apart, it is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.datasets import QADataset
from core.losses import LOSSES, Loss, LossBatch
from core.training import TrainConfig, source_groups, train
from tests.test_training import DIM, TableEmbedder


def _ds(rel: dict[str, str], corpus: list[str], docs: dict[str, str] | None = None) -> QADataset:
    return QADataset(
        {q: f"text of {q}" for q in rel},
        {c: f"chunk {c}" for c in corpus},
        {q: [c] for q, c in rel.items()},
        "text",
        {c: {"doc_id": d} for c, d in (docs or {}).items()},
    )


# ------------------------------------------------------------------------------------------------
# groups
# ------------------------------------------------------------------------------------------------
def test_groups_need_both_kinds_on_separate_chunks():
    ds = _ds({"w1": "a", "w2": "b", "o1": "c", "o2": "d"}, ["a", "b", "c", "d"])
    sources = {"w1": "llm", "w2": "imported", "o1": "offline", "o2": "offline"}
    assert source_groups(ds, list(ds.queries), sources) == {
        "a": "written",
        "b": "written",
        "c": "offline",
        "d": "offline",
    }
    one_kind = {q: "llm" for q in ds.queries}
    assert source_groups(ds, list(ds.queries), one_kind) == {}
    assert source_groups(ds, list(ds.queries), None) == {}
    assert source_groups(ds, list(ds.queries), {}) == {}


def test_a_chunk_both_kinds_ask_about_is_shared_and_unknown_questions_count_for_neither():
    ds = _ds({"w1": "a", "o1": "a", "w2": "b", "o2": "c", "x": "d"}, ["a", "b", "c", "d"])
    sources = {"w1": "llm", "o1": "offline", "w2": "manual", "o2": "offline"}  # "x" has no record
    assert source_groups(ds, list(ds.queries), sources) == {"b": "written", "c": "offline"}


def test_a_documents_unasked_chunks_join_its_kind_and_a_mixed_documents_stay_shared():
    docs = {"a": "A", "a2": "A", "b": "B", "b2": "B", "m1": "M", "m2": "M", "m3": "M"}
    ds = _ds({"w1": "a", "o1": "b", "w2": "m1", "o2": "m2"}, list(docs), docs)
    sources = {"w1": "llm", "o1": "offline", "w2": "llm", "o2": "offline"}
    groups = source_groups(ds, list(ds.queries), sources)
    # A's unasked chunk is written's, B's offline's; in M both kinds ask: its asked chunks keep their own
    # kind and its unasked chunk is shared
    assert groups == {
        "a": "written",
        "a2": "written",
        "b": "offline",
        "b2": "offline",
        "m1": "written",
        "m2": "offline",
    }


# ------------------------------------------------------------------------------------------------
# the losses' mask
# ------------------------------------------------------------------------------------------------
def _batch(**kw) -> LossBatch:
    g = torch.Generator().manual_seed(0)
    corpus = F.normalize(torch.randn(8, DIM, generator=g), dim=-1)
    queries = F.normalize(corpus[[0, 4]] + 0.3 * torch.randn(2, DIM, generator=g), dim=-1)
    base = dict(
        queries=queries,
        targets=torch.tensor([0, 4]),
        corpus=corpus,
        excluded=[torch.tensor([], dtype=torch.long)] * 2,
        temperature=0.05,
    )
    base.update(kw)
    return LossBatch(**base)


# chunks 0-3 are the first question's kind (1), 4-5 the second's (2), 6-7 shared (0)
GROUPS = (torch.tensor([1, 2], dtype=torch.int8), torch.tensor([1, 1, 1, 1, 2, 2, 0, 0], dtype=torch.int8))


def test_corpus_softmax_with_groups_equals_the_softmax_over_each_questions_own_chunks():
    b = _batch(groups=GROUPS)
    got = LOSSES[Loss.CORPUS_SOFTMAX](b)
    own = [[0, 1, 2, 3, 6, 7], [4, 5, 6, 7]]
    want = torch.stack(
        [
            F.cross_entropy((b.queries[i] @ b.corpus[rows].T / 0.05)[None], torch.tensor([rows.index(t)]))
            for i, (rows, t) in enumerate(zip(own, [0, 4]))
        ]
    ).mean()
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, LOSSES[Loss.CORPUS_SOFTMAX](_batch()))  # the mask changed something


@pytest.mark.parametrize(
    "kw",
    [
        {"hard": torch.tensor([[4, 6, 1], [0, 5, 7]])},  # hard negatives from the other kind are spare slots
        {"candidates": torch.arange(8)},  # sampled negatives
    ],
)
def test_other_loss_paths_mask_the_other_kinds_chunks(kw):
    masked = LOSSES[Loss.CORPUS_SOFTMAX](_batch(groups=GROUPS, **kw))
    assert torch.isfinite(masked)
    if "hard" in kw:  # the same as mining without them: hard rows 4 and 0 dropped
        alone = LOSSES[Loss.CORPUS_SOFTMAX](_batch(hard=torch.tensor([[6, 1, 0], [5, 7, 4]])))
        assert torch.allclose(masked, alone, atol=1e-5)
    else:  # the same as the full softmax with groups
        assert torch.allclose(masked, LOSSES[Loss.CORPUS_SOFTMAX](_batch(groups=GROUPS)), atol=1e-5)


def test_in_batch_masks_a_positive_of_the_other_kind():
    got = LOSSES[Loss.IN_BATCH](_batch(groups=GROUPS, temperature=1.0))
    # each question's only candidate left is its own positive: the loss is zero
    assert torch.allclose(got, torch.tensor(0.0), atol=1e-6)
    assert LOSSES[Loss.IN_BATCH](_batch(temperature=1.0)) > 0.01


# ------------------------------------------------------------------------------------------------
# the confound, end to end
# ------------------------------------------------------------------------------------------------
def confounded(seed: int = 0, n: int = 30, topic: float = 1.5, style: float = 1.5, noise: float = 0.1):
    """Two documents, each chunk its document's topic vector plus its own; written questions ask about A,
    offline ones about B, each kind's phrasing adding its own style vector. Test: written-style questions
    about B's chunks (what real queries about an offline-only document look like)."""
    rng = np.random.default_rng(seed)

    def unit(v):
        return v / np.linalg.norm(v)

    topic_a, topic_b, style_w, style_o = (unit(rng.normal(size=DIM)) for _ in range(4))
    vectors, corpus, queries, rel, meta, sources = {}, {}, {}, {}, {}, {}
    tests = {}
    for doc, t in (("A", topic_a), ("B", topic_b)):
        for i in range(n):
            c = f"{doc}{i}"
            vec = unit(topic * t + unit(rng.normal(size=DIM)))
            corpus[c], vectors[f"chunk {c}"], meta[c] = f"chunk {c}", vec, {"doc_id": doc}
            s, kind = (style_w, "llm") if doc == "A" else (style_o, "offline")
            for j in range(2):
                q = f"q {c}.{j}"
                queries[q], rel[q], sources[q] = q, [c], kind
                vectors[q] = unit(vec + style * s + noise * rng.normal(size=DIM))
            if doc == "B":
                tests[f"t {c}"] = c
                vectors[f"t {c}"] = unit(vec + style * style_w + noise * rng.normal(size=DIM))
    ds = QADataset(queries, corpus, rel, "text", meta)
    test = QADataset({t: t for t in tests}, dict(corpus), {t: [c] for t, c in tests.items()}, "text")
    return ds, test, sources, TableEmbedder(vectors)


def _mass_on_a(adapter, test: QADataset, emb: TableEmbedder) -> float:
    """The test questions' mean softmax mass (temperature 0.05, every chunk) on A's chunks."""
    ids = list(test.corpus)
    c = F.normalize(torch.from_numpy(emb.embed_texts([test.corpus[i] for i in ids])), dim=-1)
    q = torch.from_numpy(emb.embed_queries(list(test.queries.values())))
    with torch.no_grad():
        q = F.normalize(adapter(q) if adapter is not None else q, dim=-1)
    p = torch.softmax(q @ c.T / 0.05, dim=1)
    return float(p[:, torch.tensor([i.startswith("A") for i in ids])].sum(dim=1).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kept_apart_a_written_query_about_the_offline_document_is_not_sent_to_the_written_one(seed):
    ds, test, sources, emb = confounded(seed)
    cfg = dict(adapter="linear", selection="none", epochs=8, batch_size=16, lr=0.2, warmup_ratio=0.0, device="cpu")
    pooled = train(ds, emb, TrainConfig(**cfg, seed=seed, separate_sources=False), question_sources=sources)
    apart = train(ds, emb, TrainConfig(**cfg, seed=seed), question_sources=sources)
    assert (
        "offline and written questions ask about separate chunks (30 offline-only, 30 written-only)" in apart.negatives
    )
    assert "separate" not in pooled.negatives
    base, pooled_a, apart_a = (_mass_on_a(a, test, emb) for a in (None, pooled.adapter, apart.adapter))
    assert pooled_a > base  # the confound: the phrasing of A's questions now points at A
    assert apart_a < pooled_a / 4
    # without a record of the sources there is nothing to keep apart
    assert "separate" not in train(ds, emb, TrainConfig(**cfg, seed=seed)).negatives


# ------------------------------------------------------------------------------------------------
# the product path: the workspace's record of each question's source reaches training
# ------------------------------------------------------------------------------------------------
def test_train_keeps_a_written_documents_and_an_offline_documents_negatives_apart(
    ws, fake_openai, tmp_path, capsys, monkeypatch
):
    """As a user would: questions by hand about one PDF, offline ones about the other, the workspace's
    dataset written to a file, then ``train`` on it: the workspace's record of each question's source reaches
    training, and the run (and the command's output) says the two kinds were kept apart."""
    from core.runs import get_run
    from core.train_config import SEPARATE_SOURCES_NOTE
    from tests.test_cli import cli_inproc

    path, chunks, asked, offline = _mixed_workspace(ws, tmp_path)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    common = ["--dataset", str(path), "--embedder", "openai:fake-embed", "--selection", "none", "--epochs", "2"]
    rc, out, err = cli_inproc(capsys, "train", *common, "--workspace", str(ws.root))
    assert rc == 0, err
    # every chunk of the offline document, asked about or not, is the offline kind's
    note = f"{SEPARATE_SOURCES_NOTE} ({len(chunks[offline])} offline-only, {len(chunks[asked])} written-only)"
    assert f"negatives: every chunk ({sum(map(len, chunks.values()))}); {note}" in out
    from core.carryover import mixed_sources_note

    # said as a note too, with the measured reason, after the offline caveat
    assert "note: " in out and mixed_sources_note(len(chunks[offline]), len(chunks[asked])) in out
    run_id = out.split("\nrun ", 1)[1].split(":", 1)[0]
    assert note in get_run(ws, run_id)["result"]["negatives"]
    rc, out, err = cli_inproc(capsys, "train", *common, "--no-separate-sources", "--workspace", str(ws.root))
    assert rc == 0 and SEPARATE_SOURCES_NOTE not in out, err
    assert "offline pseudo-queries" in out and "ask about separate chunks" not in out  # no claim it kept them apart


def _mixed_workspace(ws, tmp_path):
    """Two PDFs: questions by hand about the first, offline ones about the second; the workspace's dataset
    written to a file. (path, chunk ids per document, the asked document, the offline one)."""
    from core.datasets import build_dataset
    from core.documents import ingest_files
    from core.pseudo_queries import offline_generator
    from core.questions import add_question, generate_questions
    from tests.pdfs import make_text_pdf, sample_report_pages

    pages = sample_report_pages()
    reports = ingest_files(ws, [("asked.pdf", make_text_pdf(pages[:2])), ("offline.pdf", make_text_pdf(pages[2:]))])
    asked, offline = (r.doc_id for r in reports)
    chunks = {d: [r["id"] for r in ws.query("SELECT id FROM chunks WHERE doc_id = ?", (d,))] for d in (asked, offline)}
    for i, c in enumerate(chunks[asked]):  # written questions (by hand) about the first document only
        add_question(ws, c, f"What does section {i} say about revenue, riders and drivers?")
    generate_questions(ws, offline_generator("cloze"), 2, doc_ids=[offline])
    return build_dataset(ws).save(tmp_path / "train.json"), chunks, asked, offline


def test_the_distil_recipe_says_what_the_mix_did_to_it(ws, tmp_path):
    """``train --recipe distil`` on a file whose offline and written questions ask about separate chunks: a note
    with the measured loss of the distilled adapter (and the protocol where it gained) and what to do; none
    for a file of one kind. The Train page's note, shown before any recipe starts, carries the same sentence."""
    from core.carryover import mixed_sources_distil_note, mixed_sources_note
    from core.cli import _mixed_distil_note

    path, chunks, asked, offline = _mixed_workspace(ws, tmp_path)
    note = _mixed_distil_note(ws, str(path))
    assert note is not None and f"({len(chunks[offline])} offline-only, {len(chunks[asked])} written-only)" in note
    assert mixed_sources_distil_note() in note and "Check a distilled adapter on your evaluation set" in note
    assert "\u22123.2 pt hit@5" in mixed_sources_distil_note()  # the measured loss
    assert mixed_sources_distil_note() in mixed_sources_note(1, 2)
    one_kind = QADataset.load(str(path))
    written = [q for q, t in one_kind.queries.items() if "riders and drivers" in t]
    assert (
        _mixed_distil_note(ws, str(one_kind.subset(written, list(one_kind.corpus)).save(tmp_path / "w.json"))) is None
    )


def test_batch_kinds_split_the_fine_tune_only_for_both_kinds_on_separate_chunks():
    from core.finetune import batch_kinds, training_pairs

    ds = _ds({"w1": "a", "o1": "c", "w2": "b", "o2": "d", "x": "zz"}, ["a", "b", "c", "d"])
    sources = {"w1": "llm", "w2": "imported", "o1": "offline", "o2": "offline"}
    # one per training pair ("x" has no chunk in the corpus: no pair), in the pairs' order; no record: written
    assert len(training_pairs(ds)[0]) == 4
    assert batch_kinds(ds, sources) == ["written", "offline", "written", "offline"]
    assert batch_kinds(ds, {**sources, "w2": None}) == ["written", "offline", "written", "offline"]
    assert batch_kinds(ds, None) is None and batch_kinds(ds, {}) is None
    assert batch_kinds(ds, {q: "llm" for q in sources}) is None  # one kind
    both = _ds({"w1": "a", "o1": "a", "w2": "b", "o2": "b"}, ["a", "b"])
    assert batch_kinds(both, sources) is None  # both kinds ask about the same chunks: one pool


def test_the_fine_tune_can_train_one_kind_per_batch_through_the_cli(ws, tmp_path, capsys, monkeypatch):
    """``finetune --separate-sources`` on the mixed workspace's dataset: each batch the loss sees holds one kind of
    question (the written ones are the hand-written "... riders and drivers?"), the run records how many of each,
    and the output says so. By default (measured: the fine-tune gained the same either way) one pool: some batch
    mixes the kinds, and nothing claims otherwise."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from core.datasets import QADataset
    from core.finetune import batches_note
    from core.runs import get_run
    from core.train_config import SEPARATE_SOURCES_NOTE
    from tests.test_cli import cli_inproc

    path, chunks, asked, offline = _mixed_workspace(ws, tmp_path)
    ds = QADataset.load(str(path))

    def written(q: str) -> bool:
        return "riders and drivers" in q.lower()

    n_written = sum(map(written, ds.queries.values()))
    assert 0 < n_written < len(ds.queries)
    seen: list[list[str]] = []
    forward = MultipleNegativesRankingLoss.forward

    def spy(self, features, labels):
        ids = features[0]["input_ids"]
        seen.append(self.model.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return forward(self, features, labels)

    monkeypatch.setattr(MultipleNegativesRankingLoss, "forward", spy)
    common = ["finetune", "--dataset", str(path), "--batch-size", "4", "--workspace", str(ws.root)]
    rc, out, err = cli_inproc(capsys, *common, "--device", "cpu", "--separate-sources")
    assert rc == 0, err
    kinds = [set(map(written, batch)) for batch in seen]
    assert seen and all(len(k) == 1 for k in kinds) and {True, False} == set().union(*kinds)
    assert len(seen) == get_run(ws, out.split("\nrun ", 1)[1].split(":", 1)[0])["result"]["steps"]
    batches = {"offline": len(ds.queries) - n_written, "written": n_written}
    run_id = out.split("\nrun ", 1)[1].split(":", 1)[0]
    result = get_run(ws, run_id)["result"]
    assert result["batches"] == batches and result["batches_note"] == batches_note(batches)
    assert f"batches: {batches_note(batches)}" in out and SEPARATE_SOURCES_NOTE in batches_note(batches)
    # the Train page's panel for the run says it too
    from tests.test_pages import no_exceptions, page, texts

    monkeypatch.setenv("ADAPTERLAB_WORKSPACE", str(ws.root))
    at = page("3_train.py")
    at.session_state["train_view"] = run_id
    at.run()
    no_exceptions(at)
    assert f"Batches: {batches_note(batches)}." in texts(at.caption)

    seen.clear()
    rc, out, err = cli_inproc(capsys, *common, "--device", "cpu")
    assert rc == 0, err
    assert any(len(set(map(written, batch))) == 2 for batch in seen)
    run_id = out.split("\nrun ", 1)[1].split(":", 1)[0]
    assert "batches" not in get_run(ws, run_id)["result"] and "batches:" not in out


def test_train_turns_it_off_with_a_flag():
    from core.cli import _train_config, build_parser

    on = _train_config(build_parser().parse_args(["train", "--dataset", "x.json"]))
    off = _train_config(build_parser().parse_args(["train", "--dataset", "x.json", "--no-separate-sources"]))
    assert on.separate_sources is True and off.separate_sources is False
