"""A warm command (every text it needs already in the embedding cache) never imports
sentence-transformers nor loads the model: the dimension and identity come from the cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.embedders import CachedEmbedder, EmbeddingCache, SentenceTransformerEmbedder, resolve_embedder
from core.workspace import Workspace
from tests.test_runs import small_dataset

pytestmark = pytest.mark.integration  # the real bundled model fills the cache once

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from core.cli import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("sentence_transformers", "transformers", "pandas", "plotly", "onnxruntime") if m in sys.modules)
print("\\nPROBE " + json.dumps({"rc": rc, "heavy": heavy}))
"""


def _probe(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(line[6:])


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A workspace whose cache holds every text of a small dataset, and that dataset's file."""
    root = tmp_path_factory.mktemp("warm")
    ws = Workspace(root / "ws")
    ds = small_dataset()
    emb = resolve_embedder("default", workspace=ws)
    emb.embed_texts(list(ds.queries.values()) + list(ds.corpus.values()))
    return ws, str(ds.save(root / "train.json"))


def test_a_cached_embedder_reads_its_dimension_from_the_cache(warm):
    ws, _ = warm
    emb = CachedEmbedder(SentenceTransformerEmbedder("default"), EmbeddingCache(ws.embeddings_path))
    assert emb.dimension == 384 and not emb.base.loaded
    assert emb.embed_texts([]).shape == (0, 384) and not emb.base.loaded
    fresh = CachedEmbedder(SentenceTransformerEmbedder("default"), EmbeddingCache(ws.root / "other.sqlite"))
    assert fresh.dimension == 384 and fresh.base.loaded  # nothing cached: the model says


def test_warm_train_and_evaluate_never_import_sentence_transformers(warm, tmp_path):
    ws, dataset = warm
    out = tmp_path / "adapter"
    train = _probe(
        "train",
        "--workspace",
        str(ws.root),
        "--dataset",
        dataset,
        "--epochs",
        "2",
        "--selection",
        "holdout",
        "--out",
        str(out),
        "--json",
    )
    assert train == {"rc": 0, "heavy": []}
    assert (out / "config.json").is_file()
    evaluate = _probe("evaluate", "--workspace", str(ws.root), "--dataset", dataset, "--adapter", str(out), "--json")
    assert evaluate["rc"] == 0 and "sentence_transformers" not in evaluate["heavy"]
    assert "transformers" not in evaluate["heavy"]


def test_warm_train_on_the_onnx_backend_imports_neither_transformers_nor_onnxruntime(warm, tmp_path):
    """``--embedder default@onnx-int8`` with every vector cached under its own identity: nothing heavy loads."""
    ws, dataset = warm
    ds = small_dataset()
    emb = resolve_embedder("default@onnx-int8", workspace=ws)  # exports once into the workspace
    emb.embed_texts(list(ds.queries.values()) + list(ds.corpus.values()))
    assert emb.base.model_file.is_file() and emb.base.folder.is_relative_to(ws.root)
    out = tmp_path / "adapter"
    argv = ["train", "--workspace", str(ws.root), "--dataset", dataset, "--embedder", "default@onnx-int8"]
    train = _probe(*argv, "--epochs", "2", "--selection", "holdout", "--out", str(out), "--json")
    assert train == {"rc": 0, "heavy": []}
    # the adapter folder records the identity its vectors came from
    assert any("st:all-MiniLM-L6-v2#onnx-int8" in p.read_text() for p in out.glob("*.json"))
