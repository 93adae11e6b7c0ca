"""The ONNX Runtime backend (core.onnx_embedder): spec parsing, identity, pipeline reading, and
(integration) a real export of the bundled model, its vectors against torch's, export once,
and a corrupt file exported again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.embedders import (
    CachedEmbedder,
    EmbedderError,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    resolve_embedder,
    split_backend,
    with_backend,
)
from core.onnx_embedder import MANIFEST, pool, read_pipeline

ROOT = Path(__file__).resolve().parents[1]

TEXTS = [
    "What was Lyft's revenue in 2021?",
    "How many active riders did the company report?",
    "Risk factors",
    "x",
    "The COVID-19 pandemic and the related responses of governments have had, and may continue to have, an "
    "adverse impact on our business, financial condition and results of operations. " * 8,  # past 256 tokens
    "Our marketplace connects riders and drivers; we also offer bikes and scooters in several cities.",
    "  Leading and trailing spaces, and UPPER case words.  ",
    "Net loss attributable to common stockholders was $1.0 billion.",
]


def test_split_backend_and_with_backend():
    assert split_backend("default@onnx-int8") == ("default", "onnx-int8")
    assert split_backend("/models/x@ONNX-FP32") == ("/models/x", "onnx-fp32")
    assert split_backend("default@torch") == ("default", "torch")
    assert split_backend("default") == ("default", "torch")
    assert split_backend("org/model@v2") == ("org/model@v2", "torch")  # an unknown suffix is part of the name
    assert with_backend("default@onnx-int8", "torch") == "default"
    assert with_backend("default", "onnx-fp32") == "default@onnx-fp32"
    assert with_backend("", "onnx-int8") == "default@onnx-int8"


def test_identity_is_its_own_and_construction_loads_nothing(tmp_path):
    int8 = resolve_embedder("default@onnx-int8", cache=False)
    fp32 = resolve_embedder("default@onnx-fp32", cache=False)
    torch_ = resolve_embedder("default", cache=False)
    assert isinstance(int8, OnnxEmbedder) and isinstance(torch_, SentenceTransformerEmbedder)
    assert int8.identity == "st:all-MiniLM-L6-v2#onnx-int8"
    assert len({int8.identity, fp32.identity, torch_.identity}) == 3
    assert int8.dimension == 384 and int8.max_seq_length == 256 and not int8.loaded  # from the folder's JSON
    pre = OnnxEmbedder("default", "int8", models_dir=tmp_path, query_prefix="query: ")
    assert pre.identity == "st:all-MiniLM-L6-v2#onnx-int8|q=query: |p="
    assert SentenceTransformerEmbedder("default", query_prefix="query: ").identity == "st:all-MiniLM-L6-v2|q=query: |p="


def test_the_workspace_holds_the_export(ws):
    emb = resolve_embedder("default@onnx-int8", workspace=ws)
    assert isinstance(emb, CachedEmbedder) and emb.base.folder.parent == ws.path("models", "onnx")
    assert emb.identity == "st:all-MiniLM-L6-v2#onnx-int8"


def test_api_models_have_no_onnx_backend():
    with pytest.raises(EmbedderError, match="local models only"):
        resolve_embedder("openai:text-embedding-3-small@onnx-int8", cache=False)


def test_pipeline_is_read_from_the_model_folder(tmp_path):
    from core.embedders import bundled_model_path

    assert read_pipeline(bundled_model_path()) == {
        "pooling": ["mean"],
        "normalize": True,
        "max_seq_length": 256,
        "do_lower_case": False,
        "dimension": 384,
    }
    folder = tmp_path / "m"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 8, "pooling_mode": "cls"}))
    mods = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(mods))
    assert read_pipeline(folder)["pooling"] == ["cls"] and read_pipeline(folder)["normalize"] is False
    mods.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(mods))
    with pytest.raises(EmbedderError, match="torch backend"):
        OnnxEmbedder(str(folder), "int8", models_dir=tmp_path)
    with pytest.raises(EmbedderError, match="local model folder"):
        OnnxEmbedder("some/hub-model", "int8", models_dir=tmp_path)


def test_pooling_matches_its_definitions():
    x = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(pool(x, mask, ["mean"], False), [[1, 2], [8, 9]])
    np.testing.assert_allclose(pool(x, mask, ["cls", "max"], False), [[0, 1, 2, 3], [6, 7, 10, 11]])
    np.testing.assert_allclose(pool(x, mask, ["mean_sqrt_len"], False)[0], np.array([2, 4]) / np.sqrt(2))
    assert np.allclose(np.linalg.norm(pool(x, mask, ["mean"], True), axis=1), 1)


def test_constructing_imports_neither_onnxruntime_nor_transformers(tmp_path):
    probe = (
        "import sys; from core.embedders import resolve_embedder; "
        "e = resolve_embedder('default@onnx-int8', cache=False); e.identity, e.dimension; "
        "print(sorted(m for m in ('onnxruntime', 'transformers', 'sentence_transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------------------------------------
# the real bundled model (integration)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    models = tmp_path_factory.mktemp("onnx")
    int8 = OnnxEmbedder("default", "int8", models_dir=models)
    vec = int8.embed_texts(TEXTS)
    return models, int8, vec


@pytest.mark.integration
def test_int8_and_fp32_vectors_are_close_to_torch(exported):
    models, int8, vec = exported
    ref = SentenceTransformerEmbedder("default", device="cpu").embed_texts(TEXTS)
    fp32 = OnnxEmbedder("default", "fp32", models_dir=models).embed_texts(TEXTS)
    assert vec.shape == ref.shape == (len(TEXTS), 384) and vec.dtype == np.float32
    cos_fp32 = (fp32 * ref).sum(axis=1)
    cos_int8 = (vec * ref).sum(axis=1)
    assert cos_fp32.min() > 0.9999  # the export itself is exact up to float noise
    # int8 weights: measured min 0.984 / mean 0.994 over 1,002 Lyft texts (bench/onnx_quality.py) on one
    # machine; on an AVX2 CPU without VNNI, min 0.974 / mean 0.992 over 308 (bench/README, "ONNX Runtime
    # backend"). Per-tensor weights, or a broken export, fall far below (0.88 min)
    assert cos_int8.min() > 0.97 and cos_int8.mean() > 0.99, cos_int8
    np.testing.assert_allclose(int8.embed_queries(TEXTS), vec, atol=1e-6)  # no prefixes: the same vectors
    # activations are quantised per batch, so another batch moves a text's int8 vector a little
    assert (int8.embed_queries(TEXTS[:3]) * vec[:3]).sum(axis=1).min() > 0.98
    assert int8.count_tokens_batch(TEXTS) == SentenceTransformerEmbedder("default").count_tokens_batch(TEXTS)


@pytest.mark.integration
def test_export_happens_once_and_the_manifest_checks_it(exported):
    models, int8, vec = exported
    assert int8.export_seconds > 0
    folder = int8.folder
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["source"]["identity"] == "st:all-MiniLM-L6-v2"
    assert set(manifest["files"]) == {"model_fp32.onnx", "model_int8.onnx"}
    stamp = os.stat(folder / "model_int8.onnx").st_mtime_ns
    again = OnnxEmbedder("default", "int8", models_dir=models)
    np.testing.assert_allclose(again.embed_texts(TEXTS), vec, atol=1e-6)
    assert again.export_seconds == 0 and os.stat(folder / "model_int8.onnx").st_mtime_ns == stamp


@pytest.mark.integration
def test_a_corrupt_or_missing_file_is_exported_again(exported):
    models, _, vec = exported
    target = next(models.iterdir()) / "model_int8.onnx"
    target.write_bytes(b"not an onnx file")
    fixed = OnnxEmbedder("default", "int8", models_dir=models)
    np.testing.assert_allclose(fixed.embed_texts(TEXTS), vec, atol=1e-6)
    assert fixed.export_seconds > 0 and target.stat().st_size > 1_000_000
    target.unlink()
    again = OnnxEmbedder("default", "int8", models_dir=models)
    again.ensure_exported()
    assert again.export_seconds > 0 and target.is_file()


@pytest.mark.integration
def test_quantised_vectors_never_mix_with_fp32_ones_in_the_cache(ws, exported):
    models, _, vec = exported
    torch_ = resolve_embedder("default", workspace=ws)
    int8 = resolve_embedder("default@onnx-int8", workspace=ws)
    int8.base.folder = next(models.iterdir())  # reuse the module's export
    a = torch_.embed_texts(TEXTS)
    b = int8.embed_texts(TEXTS)
    assert int8.stats.misses == len(TEXTS)  # torch's cached vectors were not taken for int8 ones
    np.testing.assert_allclose(b, vec, atol=1e-5)
    assert not np.allclose(a, b, atol=1e-4)
    assert int8.cache.dimension("st:all-MiniLM-L6-v2#onnx-int8") == 384


@pytest.mark.integration
def test_a_run_on_the_int8_backend_says_so_and_exports_the_torch_model(ws, tmp_path, exported):
    from core.embedders import bundled_model_path
    from core.export import base_model_path, export_run
    from core.runs import create_run, execute_run
    from core.training import TrainConfig
    from tests.test_runs import small_dataset

    models, _, _ = exported
    (ws.path("models", "onnx")).mkdir(parents=True, exist_ok=True)
    for p in next(models.iterdir()).iterdir():  # the module's export, as if this workspace had made it
        (ws.path("models", "onnx", p.parent.name)).mkdir(exist_ok=True)
        (ws.path("models", "onnx", p.parent.name, p.name)).write_bytes(p.read_bytes())
    path = str(small_dataset().save(tmp_path / "train.json"))
    cfg = TrainConfig(epochs=1, batch_size=6, device="cpu", selection="none")
    run_id = create_run(ws, cfg, dataset_path=path, embedder="default@onnx-int8")
    execute_run(ws, run_id)
    request = json.loads((ws.run_dir(run_id) / "run.json").read_text())
    assert request["embedder"] == "default@onnx-int8"
    assert base_model_path("default@onnx-int8") == bundled_model_path()
    out = export_run(ws, run_id, "sentence-transformers", tmp_path / "st")
    card = (out / "README.md").read_text()
    assert "**Base model:** all-MiniLM-L6-v2 (bundled, offline)" in card
    assert "**Backend:** ONNX Runtime, int8 weights" in card
