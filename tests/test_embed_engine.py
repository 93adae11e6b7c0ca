"""``python -m core embed``: the local engine, and Ray in local mode (same vectors, same metrics)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from core.datasets import QADataset
from core.embed_engine import collect_texts, embed_to_cache, missing_texts
from core.embedders import EmbedderError, EmbeddingCache, resolve_embedder, text_key
from core.evaluation import evaluate
from core.workspace import Workspace

TOPICS = [
    "revenue",
    "riders",
    "insurance",
    "drivers",
    "autonomous vehicles",
    "bikes and scooters",
    "litigation",
    "share repurchases",
    "the pandemic",
    "data privacy",
    "tax credits",
    "leases",
]


def _dataset(tmp_path) -> QADataset:
    corpus = {
        f"n{i}": f"The company discusses {t} at length in section {i}, with figures for {2019 + i % 3}."
        for i, t in enumerate(TOPICS)
    }
    queries = {f"q{i}": f"What does the report say about {t}?" for i, t in enumerate(TOPICS[:8])}
    rel = {f"q{i}": [f"n{i}"] for i in range(8)}
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"queries": queries, "corpus": corpus, "relevant_docs": rel, "mode": "text"}))
    return QADataset.load(path)


def _vectors(ws: Workspace, ds: QADataset) -> np.ndarray:
    emb = resolve_embedder("default", workspace=ws)
    roles = {"p": "p:", "q": "p:"}
    passages, queries = collect_texts(ds)
    keys = [text_key(roles["p"], t) for t in passages] + [text_key(roles["q"], t) for t in queries]
    mat, have = EmbeddingCache(ws.embeddings_path).get_matrix(emb.identity, keys)
    assert have.all()
    return mat


def test_local_engine_fills_the_cache_and_resumes(tmp_path):
    ds = _dataset(tmp_path)
    ws = Workspace(tmp_path / "ws")
    passages, queries = collect_texts(ds)
    first = embed_to_cache(ws, "default", passages[:5], [])
    assert (first.embedded, first.cached) == (5, 0)
    second = embed_to_cache(ws, "default", passages, queries)
    assert second.cached == 5 and second.embedded == len(passages) + len(queries) - 5
    again = embed_to_cache(ws, "default", passages, queries)
    assert again.embedded == 0
    emb = resolve_embedder("default", workspace=ws)
    todo, have = missing_texts(
        EmbeddingCache(ws.embeddings_path), emb.identity, {"p": "p:", "q": "p:"}, passages, queries
    )
    assert todo == [] and have == len(set(passages) | set(queries))


def test_embed_command_needs_something_to_embed(tmp_path, capsys):
    from core.cli import main

    assert main(["embed", "--workspace", str(tmp_path / "ws")]) == 2
    assert "--dataset" in capsys.readouterr().err


def test_ray_engine_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    ds = _dataset(tmp_path)
    with pytest.raises(EmbedderError, match="requirements-scale.txt"):
        embed_to_cache(Workspace(tmp_path / "ws"), "default", *collect_texts(ds), engine="ray")


def test_ray_local_mode_matches_the_local_engine(tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements-scale.txt")
    from core.cli import main

    ds = _dataset(tmp_path)
    local_ws, ray_ws = Workspace(tmp_path / "local"), Workspace(tmp_path / "ray")
    passages, queries = collect_texts(ds)
    embed_to_cache(local_ws, "default", passages, queries)
    embed_to_cache(ray_ws, "default", passages[:4], [])  # a run that stopped early: the rest is resumed
    rc = main(
        [
            "embed",
            "--workspace",
            str(ray_ws.root),
            "--dataset",
            str(tmp_path / "small.json"),
            "--engine",
            "ray",
            "--batch-size",
            "8",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["engine"] == "ray" and out["cached"] == 4
    assert out["embedded"] == len(passages) + len(queries) - 4
    assert np.allclose(_vectors(ray_ws, ds), _vectors(local_ws, ds), atol=1e-5)
    a = evaluate(ds, resolve_embedder("default", workspace=local_ws))
    b = evaluate(ds, resolve_embedder("default", workspace=ray_ws))
    assert a.metrics == b.metrics and np.array_equal(a.first_rank, b.first_rank)
