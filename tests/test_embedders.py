"""Embedders: the bundled model, the persistent cache (never re-embed), the OpenAI-compatible API
against a local fake server (batching, retries, errors, key hygiene), specs, and adapters on queries."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from core.adapters import build_adapter
from core.embedders import (
    AdapterEmbedder,
    CachedEmbedder,
    EmbedderError,
    EmbeddingCache,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    resolve_embedder,
)
from tests.fake_openai import fake_embedding


class CountingEmbedder:
    """A deterministic fake that records every text it is asked to embed."""

    def __init__(self, dim: int = 6, identity: str = "fake:count", query_prefix: str = "", passage_prefix: str = ""):
        self.dimension = dim
        self.identity = identity
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.calls: list[tuple[str, list[str]]] = []
        self.fail_after: int | None = None  # raise on the call with this index

    def _vec(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(text.encode()))  # stable across processes
        v = rng.normal(size=self.dimension).astype(np.float32)
        return v / np.linalg.norm(v)

    def _embed(self, role: str, prefix: str, texts) -> np.ndarray:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("embedding service went away")
        self.calls.append((role, list(texts)))
        return np.stack([self._vec(prefix + t) for t in texts]) if texts else np.zeros((0, self.dimension), np.float32)

    def embed_queries(self, texts, progress=None):
        return self._embed("query", self.query_prefix, texts)

    def embed_texts(self, texts, progress=None):
        return self._embed("text", self.passage_prefix, texts)

    @property
    def sent(self) -> list[str]:
        return [t for _, batch in self.calls for t in batch]


# ------------------------------------------------------------------------------------------------
# the bundled sentence-transformers model
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def st_model():
    return SentenceTransformerEmbedder("default", device="cpu")


def test_bundled_model_gives_384d_unit_vectors(st_model):
    assert st_model.identity == "st:all-MiniLM-L6-v2"
    assert st_model.dimension == 384
    v = st_model.embed_texts(["Revenue grew 36% in 2021.", "Drivers are independent contractors."])
    assert v.shape == (2, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert st_model.embed_queries([]).shape == (0, 384)


def test_bundled_model_scores_similar_texts_higher(st_model):
    q = st_model.embed_queries(["How much did revenue increase in 2021?"])[0]
    docs = st_model.embed_texts([
        "Revenue rose by 36 percent in fiscal 2021 compared with the prior year.",
        "Our drivers must pass a background check every year.",
        "The cat slept on the warm windowsill all afternoon.",
    ])
    scores = docs @ q
    assert scores[0] > scores[1] and scores[0] > scores[2]


def test_prefixes_are_applied_and_part_of_the_identity(st_model):
    e5 = SentenceTransformerEmbedder("default", query_prefix="query: ", passage_prefix="passage: ", device="cpu")
    assert e5.identity != st_model.identity and "query: " in e5.identity and "passage: " in e5.identity
    text = "insurance reserves"
    assert np.allclose(e5.embed_queries([text]), st_model.embed_texts(["query: " + text]), atol=1e-5)
    assert np.allclose(e5.embed_texts([text]), st_model.embed_texts(["passage: " + text]), atol=1e-5)


def test_token_counter(st_model):
    counter = st_model.token_counter()
    assert counter("hello world") == st_model.count_tokens("hello world") >= 2
    assert counter.batch(["hello world", "a much longer sentence about revenue"]) == [
        st_model.count_tokens("hello world"), st_model.count_tokens("a much longer sentence about revenue")]
    assert st_model.max_seq_length == 256


# ------------------------------------------------------------------------------------------------
# the persistent cache
# ------------------------------------------------------------------------------------------------
def test_cache_never_re_embeds(tmp_path):
    base = CountingEmbedder()
    emb = CachedEmbedder(base, EmbeddingCache(tmp_path / "emb.sqlite"))
    first = emb.embed_texts(["a", "b", "a"])
    assert base.sent == ["a", "b"]  # duplicates inside one call are embedded once
    assert np.array_equal(first[0], first[2])
    assert np.allclose(first[1], base._vec("b"))

    second = emb.embed_texts(["b", "c", "a"])
    assert base.sent == ["a", "b", "c"]  # only the new text was sent
    assert np.allclose(second, np.stack([base._vec(t) for t in "bca"]))
    assert emb.stats.misses == 3 and emb.stats.hits == 2  # 'b' and 'a' of the second call


def test_cache_survives_a_restart(tmp_path):
    path = tmp_path / "emb.sqlite"
    before = CachedEmbedder(CountingEmbedder(), EmbeddingCache(path)).embed_queries(["x", "y"])
    fresh = CountingEmbedder()  # a new process: new embedder, new cache object, same file
    again = CachedEmbedder(fresh, EmbeddingCache(path)).embed_queries(["y", "x", "y"])
    assert fresh.calls == []
    assert np.array_equal(again, before[[1, 0, 1]])


def test_cache_written_by_another_process_is_reused(tmp_path):
    path = tmp_path / "emb.sqlite"
    script = f"""
from pathlib import Path

import numpy as np
from core.embedders import CachedEmbedder, EmbeddingCache
class E:
    identity, dimension, query_prefix, passage_prefix = "fake:count", 6, "", ""
    def embed_texts(self, texts, progress=None):
        return np.arange(6 * len(texts), dtype=np.float32).reshape(len(texts), 6)
CachedEmbedder(E(), EmbeddingCache({str(path)!r})).embed_texts(["alpha", "beta"])
"""
    subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent, check=True, timeout=60)
    base = CountingEmbedder()
    out = CachedEmbedder(base, EmbeddingCache(path)).embed_texts(["beta", "alpha"])
    assert base.calls == []
    assert np.array_equal(out, np.arange(12, dtype=np.float32).reshape(2, 6)[[1, 0]])


def test_cache_is_keyed_by_identity_and_prefix(tmp_path):
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    one = CountingEmbedder(identity="model-one")
    CachedEmbedder(one, cache).embed_texts(["t"])
    two = CountingEmbedder(identity="model-two")
    CachedEmbedder(two, cache).embed_texts(["t"])
    assert two.sent == ["t"]  # another model's vector is never reused

    # without prefixes, a text embedded as a query is not embedded again as a passage
    plain = CountingEmbedder(identity="plain")
    c = CachedEmbedder(plain, cache)
    c.embed_queries(["same text"])
    c.embed_texts(["same text"])
    assert plain.sent == ["same text"]

    # with prefixes, queries and passages are different inputs
    pre = CountingEmbedder(identity="pre", query_prefix="query: ", passage_prefix="passage: ")
    c = CachedEmbedder(pre, cache)
    c.embed_queries(["same text"])
    c.embed_texts(["same text"])
    assert [role for role, _ in pre.calls] == ["query", "text"]
    assert cache.count("model-one") == 1 and cache.count() == 5


def test_cache_keeps_finished_batches_of_an_interrupted_run(tmp_path):
    path = tmp_path / "emb.sqlite"
    base = CountingEmbedder()
    base.fail_after = 2  # the third batch fails
    texts = [f"text {i}" for i in range(10)]
    with pytest.raises(RuntimeError):
        CachedEmbedder(base, EmbeddingCache(path), chunk=3).embed_texts(texts)
    assert len(base.sent) == 6
    retry = CountingEmbedder()
    out = CachedEmbedder(retry, EmbeddingCache(path), chunk=3).embed_texts(texts)
    assert retry.sent == texts[6:]
    assert np.allclose(out, np.stack([retry._vec(t) for t in texts]))


def test_cache_stores_raw_float32_and_handles_empty(tmp_path):
    emb = CachedEmbedder(CountingEmbedder(dim=6), EmbeddingCache(tmp_path / "emb.sqlite"))
    assert emb.embed_texts([]).shape == (0, 6)
    emb.embed_texts(["v"])
    con = sqlite3.connect(tmp_path / "emb.sqlite")
    (dim, vec), = con.execute("SELECT dim, vec FROM vectors").fetchall()
    con.close()
    assert dim == 6 and len(vec) == 6 * 4  # float32 bytes, nothing pickled


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible API (a real HTTP server on 127.0.0.1)
# ------------------------------------------------------------------------------------------------
def _api(fake, **kw) -> OpenAIEmbedder:
    kw.setdefault("api_key", "sk-test")
    kw.setdefault("backoff", 0.01)
    return OpenAIEmbedder("fake-embed", base_url=fake.base_url, **kw)


def test_openai_embedder_batches_and_keeps_order(fake_openai):
    emb = _api(fake_openai, batch_size=4)
    texts = [f"sentence number {i} about revenue" for i in range(10)]
    out = emb.embed_texts(texts)
    reqs = fake_openai.embedding_requests
    assert [len(r["body"]["input"]) for r in reqs] == [4, 4, 2]
    assert all(r["body"]["model"] == "fake-embed" for r in reqs)
    assert out.shape == (10, 64) and out.dtype == np.float32
    assert np.allclose(out, np.array([fake_embedding(t) for t in texts]), atol=1e-6)
    assert emb.dimension == 64
    assert len(fake_openai.embedding_requests) == 3  # the dimension was learnt, not probed


@pytest.mark.parametrize("faults", [["429"], ["500"], ["503", "500"], ["timeout"], ["429", "500", "timeout"]])
def test_openai_embedder_retries_transient_failures(fake_openai, faults):
    fake_openai.timeout_sleep = 1.5
    fake_openai.faults.extend(faults)
    emb = _api(fake_openai, timeout=0.6, max_retries=3)
    out = emb.embed_queries(["what was revenue?"])
    assert np.allclose(out[0], fake_embedding("what was revenue?"), atol=1e-6)
    assert len(fake_openai.embedding_requests) == len(faults) + 1


def test_openai_embedder_gives_up_with_a_clear_error(fake_openai):
    fake_openai.faults.extend(["500"] * 10)
    emb = _api(fake_openai, max_retries=2)
    with pytest.raises(EmbedderError, match=r"kept failing .*after 3 attempts.*cached"):
        emb.embed_texts(["a"])
    assert len(fake_openai.embedding_requests) == 3


def test_openai_embedder_does_not_retry_a_rejected_key(fake_openai):
    fake_openai.faults.append("401")
    emb = _api(fake_openai, max_retries=5)
    with pytest.raises(EmbedderError, match=r"401.*OPENAI_API_KEY"):
        emb.embed_texts(["a"])
    assert len(fake_openai.embedding_requests) == 1


@pytest.mark.parametrize("fault", ["garbage", "malformed"])
def test_openai_embedder_retries_unreadable_answers(fake_openai, fault):
    fake_openai.faults.append(fault)  # a 200 with no vectors / a body that is not JSON
    out = _api(fake_openai, max_retries=2).embed_texts(["a"])
    assert np.allclose(out[0], fake_embedding("a"), atol=1e-6)
    assert len(fake_openai.embedding_requests) == 2


def test_openai_embedder_persistent_garbage_is_an_embedder_error(fake_openai):
    fake_openai.faults.extend(["garbage"] * 5)
    with pytest.raises(EmbedderError, match="kept failing .*No embedding data"):
        _api(fake_openai, max_retries=1).embed_texts(["a"])


def test_openai_embedder_checks_the_vector_count(fake_openai):
    fake_openai.embed_responder = lambda texts, body: [fake_embedding(t) for t in texts][:-1]
    with pytest.raises(EmbedderError, match="returned 1 vectors for 2 inputs"):
        _api(fake_openai, max_retries=0).embed_texts(["a", "b"])


def test_openai_embedder_without_a_key(fake_openai):
    emb = OpenAIEmbedder("fake-embed", base_url=fake_openai.base_url)
    with pytest.raises(EmbedderError, match="No API key"):
        emb.embed_texts(["a"])
    assert fake_openai.embedding_requests == []


def test_api_key_never_reaches_the_cache_or_identity(fake_openai, tmp_path):
    secret = "sk-live-SECRET-0123456789"
    fake_openai.require_key = secret
    api = _api(fake_openai, api_key=secret)
    emb = CachedEmbedder(api, EmbeddingCache(tmp_path / "emb.sqlite"))
    emb.embed_texts(["some chunk text"])
    emb.embed_queries(["a question?"])
    assert fake_openai.embedding_requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    assert secret not in emb.identity and secret not in repr(api)
    assert emb.identity == f"openai:fake-embed@{fake_openai.base_url}"
    for f in tmp_path.iterdir():  # the database and its WAL / SHM files
        assert secret.encode() not in f.read_bytes(), f.name


def test_cached_api_embedder_sends_only_new_texts(fake_openai, tmp_path):
    path = tmp_path / "emb.sqlite"
    CachedEmbedder(_api(fake_openai), EmbeddingCache(path)).embed_texts(["one", "two"])
    n = len(fake_openai.embedding_requests)
    CachedEmbedder(_api(fake_openai), EmbeddingCache(path)).embed_texts(["two", "three", "one"])
    new = fake_openai.embedding_requests[n:]
    assert [r["body"]["input"] for r in new] == [["three"]]


# ------------------------------------------------------------------------------------------------
# specs
# ------------------------------------------------------------------------------------------------
def test_resolve_embedder_specs(ws, tmp_path):
    d = resolve_embedder("default")
    assert isinstance(d, SentenceTransformerEmbedder) and d.identity == "st:all-MiniLM-L6-v2"
    assert resolve_embedder("st:default").identity == d.identity
    cached = resolve_embedder("default", workspace=ws)
    assert isinstance(cached, CachedEmbedder) and cached.cache.path == str(ws.embeddings_path)
    assert cached.identity == d.identity
    assert isinstance(resolve_embedder("default", workspace=ws, cache=False), SentenceTransformerEmbedder)

    api = resolve_embedder("openai:text-embedding-3-small", api_key="sk-x", base_url="http://127.0.0.1:9/v1")
    assert isinstance(api, OpenAIEmbedder) and api.model_name == "text-embedding-3-small"
    assert api.identity == "openai:text-embedding-3-small@http://127.0.0.1:9/v1"
    with pytest.raises(EmbedderError, match="needs a model name"):
        resolve_embedder("openai:")

    missing = resolve_embedder(str(tmp_path / "no-such-model"))
    with pytest.raises(EmbedderError, match="Could not load the sentence-transformers model"):
        missing.dimension


# ------------------------------------------------------------------------------------------------
# adapters apply to queries only
# ------------------------------------------------------------------------------------------------
def test_adapter_embedder_transforms_queries_only():
    base = CountingEmbedder(dim=6)
    adapter = build_adapter("linear", 6)
    with torch.no_grad():
        adapter.linear.weight.mul_(2.0)
    emb = AdapterEmbedder(base, adapter)
    texts = ["q1", "q2"]
    assert np.allclose(emb.embed_queries(texts), 2 * base.embed_queries(texts), atol=1e-6)
    assert np.array_equal(emb.embed_texts(texts), base.embed_texts(texts))
    assert emb.dimension == 6
    assert emb.identity.startswith("fake:count+adapter:")
    other = AdapterEmbedder(base, build_adapter("linear", 6))
    assert other.identity != emb.identity  # different weights, different identity
