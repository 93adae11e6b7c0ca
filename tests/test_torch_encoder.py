"""The plain-torch encoder (core.torch_encoder) against sentence-transformers, on the bundled model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import embedders
from core.embedders import SentenceTransformerEmbedder, bundled_model_path
from core.torch_encoder import ENV_SWITCH, LeanSentenceEncoder, lean_support

ROOT = Path(__file__).resolve().parents[1]

# Real filing prose of very different lengths (one past the model's 256-token limit, so truncation
# is exercised), plus the awkward cases: empty, whitespace, accents and CJK, a lone character.
TEXTS = [
    "What was Lyft's total revenue in 2021?",
    "  How many riders were active in the fourth quarter?  ",
    "",
    "x",
    "Ünïcödé café — naïve résumé; 東京の会社",
    "Risk factors: our business depends on retaining and attracting qualified drivers and riders. "
    "If we fail to cost-effectively attract new qualified drivers, or to increase utilization of our "
    "platform by existing drivers, the reliability of our platform could decline.",
    " ".join(f"Section {i}: the Company recognised revenue from transportation services." for i in range(60)),
]


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(bundled_model_path(), device="cpu")


@pytest.fixture(scope="module")
def lean():
    pipeline, why = lean_support(bundled_model_path())
    assert pipeline is not None, why
    return LeanSentenceEncoder(bundled_model_path(), pipeline)


def test_same_vectors_as_sentence_transformers(lean, reference):
    for batch in (1, 3, 16):  # one text per batch (no padding), mixed lengths (padding), all at once
        ours = lean.encode(TEXTS, batch_size=batch)
        theirs = reference.encode(TEXTS, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)
        assert ours.dtype == np.float32 and ours.shape == theirs.shape == (len(TEXTS), 384)
        assert np.abs(ours - theirs).max() < 1e-5
    assert lean.get_sentence_embedding_dimension() == 384 and lean.max_seq_length == 256


def test_token_counts_match_the_model_tokenizer(lean, reference):
    theirs = [len(ids) for ids in reference.tokenizer(TEXTS, add_special_tokens=True, truncation=False)["input_ids"]]
    assert lean.count_tokens_batch(TEXTS) == theirs
    assert max(theirs) > 256  # the long text is counted whole, never truncated


def test_the_embedder_uses_it_on_cpu_and_the_switch_restores_sentence_transformers(monkeypatch):
    monkeypatch.setattr(embedders, "_MODELS", {})
    emb = SentenceTransformerEmbedder("default", device="cpu")
    assert isinstance(emb.model, LeanSentenceEncoder) and emb.batch_size == 16
    assert emb.count_tokens("What was the revenue?") == emb.count_tokens_batch(["What was the revenue?"])[0] > 2
    monkeypatch.setenv(ENV_SWITCH, "sentence-transformers")
    monkeypatch.setattr(embedders, "_MODELS", {})
    st = SentenceTransformerEmbedder("default", device="cpu")
    assert not isinstance(st.model, LeanSentenceEncoder)
    assert np.abs(emb.embed_texts(TEXTS) - st.embed_texts(TEXTS)).max() < 1e-5
    assert st.identity == emb.identity  # same vectors, same cache identity


def _copy_model(tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(bundled_model_path(), dst)
    return dst


def test_folders_it_does_not_reproduce_are_left_to_sentence_transformers(tmp_path, monkeypatch):
    path = _copy_model(tmp_path)
    assert lean_support(path)[0] is not None
    assert "CPU only" in lean_support(path, device="cuda")[1]
    monkeypatch.setenv(ENV_SWITCH, "st")
    assert lean_support(path)[0] is None
    monkeypatch.delenv(ENV_SWITCH)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    assert "roberta" in lean_support(path)[1]
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").rename(path / "weights.bak")  # a pickle-only checkpoint is never read here
    assert "model.safetensors" in lean_support(path)[1]
    modules = json.loads((path / "modules.json").read_text())
    (path / "modules.json").write_text(
        json.dumps(modules + [{"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}])
    )
    assert lean_support(path)[0] is None


def test_a_checkpoint_that_is_not_bert_falls_back(tmp_path, monkeypatch):
    """lean_support accepts the folder, the weights lack a layer: sentence-transformers loads it."""
    from safetensors.torch import load_file, save_file

    path = _copy_model(tmp_path)
    weights = load_file(str(path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "layer.5." not in k}, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match="lacks"):
        LeanSentenceEncoder(path, lean_support(path)[0])
    monkeypatch.setattr(embedders, "_MODELS", {})
    model = SentenceTransformerEmbedder(str(path), device="cpu").model
    assert not isinstance(model, LeanSentenceEncoder)


def test_a_cold_embedding_never_imports_sentence_transformers(tmp_path):
    code = (
        "import sys; from core.embedders import CachedEmbedder, EmbeddingCache, SentenceTransformerEmbedder\n"
        f"e = CachedEmbedder(SentenceTransformerEmbedder('default', device='cpu'), EmbeddingCache({str(tmp_path)!r} + '/e.sqlite'))\n"
        "v = e.embed_texts(['a first text', 'and a second, longer one']); q = e.embed_queries(['a question?'])\n"
        "assert v.shape == (2, 384) and q.shape == (1, 384) and e.stats.misses == 3, (v.shape, e.stats)\n"
        "print(sorted(m for m in ('sentence_transformers', 'transformers', 'sklearn') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV_SWITCH}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
