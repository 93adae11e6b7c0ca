"""The whole pipeline in Python: a generated PDF -> chunks -> offline questions -> split -> adapters
-> comparison -> exported folders, with the real bundled model; and the same on API embeddings
from the local fake OpenAI server, where the second run must not call the API at all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.adapters import load_adapter
from core.documents import ChunkSettings, ingest_files
from core.embedders import AdapterEmbedder, CachedEmbedder, SentenceTransformerEmbedder, resolve_embedder
from core.evaluation import compare, evaluate
from core.questions import OfflineGenerator, build_dataset, generate_questions, split_dataset
from core.reports import html_report, load_comparison, save_comparison
from core.runs import zip_folder
from core.training import TrainConfig, split_by_chunk, train
from core.workspace import Workspace
from tests.pdfs import make_text_pdf, sample_report_pages

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundled_model():
    """Load the bundled model once for the module (sentence-transformers models are cached per process)."""
    model = SentenceTransformerEmbedder("default", device="cpu")
    assert model.dimension == 384
    return model


@pytest.fixture(scope="module")
def report_pdf() -> bytes:
    return make_text_pdf(sample_report_pages(), page_numbers=True)


def _workspace_dataset(ws: Workspace, pdf: bytes, token_counter=None, max_seq_length=None):
    reports = ingest_files(
        ws,
        [("northwind.pdf", pdf)],
        ChunkSettings(chunk_size=64, chunk_overlap=8),
        token_counter=token_counter,
        max_seq_length=max_seq_length,
    )
    assert [r.status for r in reports] == ["ok"] and reports[0].pages == 4
    gen = generate_questions(ws, OfflineGenerator(seed=0), questions_per_chunk=3)
    assert gen["failures"] == [] and gen["questions_added"] > 0
    return build_dataset(ws)


def test_pdf_to_compared_adapters_with_the_bundled_model(tmp_path, bundled_model, report_pdf):
    ws = Workspace(tmp_path / "ws")
    emb = resolve_embedder("default", workspace=ws, device="cpu")
    ds = _workspace_dataset(ws, report_pdf, emb.token_counter(), emb.max_seq_length)
    assert len(ds.corpus) >= 20 and len(ds.queries) >= 40
    train_ds, eval_ds = split_dataset(ds, by="chunk", val_fraction=0.25, seed=0)
    train_rel = {d for q in train_ds.queries for d in train_ds.relevant_docs[q]}
    assert not train_rel & {d for q in eval_ds.queries for d in eval_ds.relevant_docs[q]}

    configs = {
        "linear": TrainConfig(
            adapter="linear", epochs=4, lr=1e-3, batch_size=16, device="cpu", val_fraction=0.2, selection="holdout"
        ),
        "two-layer": TrainConfig(
            adapter="two-layer",
            adapter_kwargs={"hidden_features": 128},
            epochs=4,
            lr=1e-3,
            batch_size=16,
            device="cpu",
            val_fraction=0.2,
            selection="holdout",
        ),
    }
    results = {}
    for name, cfg in configs.items():
        res = train(train_ds, emb, cfg, out_dir=tmp_path / name)
        results[name] = res
        # selection can only keep or improve the validation score, never fall below the base model
        key = "mrr@5"
        assert res.best_metrics[key] >= res.base_metrics[key]
        if res.best_metrics[key] == res.base_metrics[key]:
            assert res.best_metrics["hit@5"] >= res.base_metrics["hit@5"]
        # ... and those numbers are what the returned adapter really scores on that split
        _, val_q = split_by_chunk(train_ds, cfg.val_fraction, cfg.seed)
        val_part = train_ds.subset(val_q)
        assert evaluate(val_part, AdapterEmbedder(emb, res.adapter)).metrics == pytest.approx(
            res.best_metrics, abs=1e-6
        )
        assert evaluate(val_part, emb).metrics == pytest.approx(res.base_metrics, abs=1e-6)
    # the embedder ran once per text: everything the second training needed was cached
    assert emb.stats.misses == len(train_ds.corpus) + len(train_ds.queries)

    # exported folders load, and give the same query vectors as the trained adapters
    systems = {"base": emb}
    for name, res in results.items():
        loaded = load_adapter(tmp_path / name)
        x = torch.from_numpy(emb.embed_queries(list(eval_ds.queries.values())[:5]))
        assert torch.allclose(loaded(x), res.adapter(x), atol=1e-5)
        systems[name] = AdapterEmbedder(emb, loaded, name=name)
        assert b"config.json" in zip_folder(tmp_path / name)

    cmp = compare(eval_ds, systems, baseline="base", dataset_name="held-out chunks", n_resamples=300)
    table = cmp.table()
    assert list(table["system"]) == ["base", "linear", "two-layer"]
    assert (table["queries"] == len(eval_ds.queries)).all()
    base_row = table.iloc[0]
    assert 0 < base_row["hit@5"] <= 1 and base_row["mrr@5"] <= base_row["hit@5"]
    for name in ("linear", "two-layer"):
        row = table[table["system"] == name].iloc[0]
        assert row["delta_hit@5"] == pytest.approx(row["hit@5"] - base_row["hit@5"])
        assert 0 <= row["p_mrr@5"] <= 1
    eval_id = save_comparison(ws, cmp, name="integration")
    back, _ = load_comparison(ws, eval_id)
    assert back.table().equals(table)
    page = html_report(back, histories={n: r.history for n, r in results.items()})
    assert "two-layer" in page and "Validation MRR by epoch" in page


def test_adapter_on_api_embeddings_end_to_end(tmp_path, fake_openai, report_pdf):
    key = "sk-integration-test"
    ws = Workspace(tmp_path / "ws")

    def api():
        return resolve_embedder("openai:fake-embed", workspace=ws, api_key=key, base_url=fake_openai.base_url)

    ds = _workspace_dataset(ws, report_pdf)  # no tokenizer for an API model: approximate token counts
    train_ds, eval_ds = split_dataset(ds, by="chunk", val_fraction=0.25, seed=1)
    emb = api()
    assert isinstance(emb, CachedEmbedder)
    cfg = TrainConfig(
        adapter="linear", epochs=3, lr=1e-3, batch_size=16, device="cpu", val_fraction=0.2, selection="holdout"
    )
    first = train(train_ds, emb, cfg, out_dir=tmp_path / "api-linear")
    assert fake_openai.embedding_requests, "the first run embeds through the API"
    assert first.adapter.get_config_dict()["in_features"] == 64
    assert first.best_metrics["mrr@5"] >= first.base_metrics["mrr@5"]

    n = len(fake_openai.embedding_requests)
    second = train(
        train_ds,
        api(),
        TrainConfig(
            adapter="two-layer", adapter_kwargs={"hidden_features": 32}, epochs=2, device="cpu", selection="holdout"
        ),
        out_dir=tmp_path / "api-2layer",
    )
    assert len(fake_openai.embedding_requests) == n, "the second run must come from the cache"
    assert second.best_metrics["mrr@5"] >= second.base_metrics["mrr@5"]

    base = api()
    cmp = compare(
        eval_ds,
        {"api": base, "api+linear": AdapterEmbedder(base, load_adapter(tmp_path / "api-linear"))},
        n_resamples=200,
    )
    assert set(cmp.results) == {"api", "api+linear"}
    assert all(np.isfinite(v) for v in cmp.results["api+linear"].metrics.values())
    for req in fake_openai.embedding_requests:
        assert req["headers"]["Authorization"] == f"Bearer {key}"
