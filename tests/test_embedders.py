"""Embedders: the bundled model, the persistent cache (never re-embed), the OpenAI-compatible API
against a local fake server (batching, retries, errors, key hygiene), specs, and adapters on queries."""

from __future__ import annotations

import json
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
    POOLED_SUFFIX,
    AdapterEmbedder,
    CachedEmbedder,
    EmbedderError,
    EmbeddingCache,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    UnusableAnswer,
    resolve_embedder,
)
from tests.fake_openai import fake_embedding, fake_tokens


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
    docs = st_model.embed_texts(
        [
            "Revenue rose by 36 percent in fiscal 2021 compared with the prior year.",
            "Our drivers must pass a background check every year.",
            "The cat slept on the warm windowsill all afternoon.",
        ]
    )
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
        st_model.count_tokens("hello world"),
        st_model.count_tokens("a much longer sentence about revenue"),
    ]
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
    out = emb.embed_texts(["v"])
    con = sqlite3.connect(tmp_path / "emb.sqlite")
    ((dim, rows, file),) = con.execute("SELECT dim, rows, file FROM shards").fetchall()
    con.close()
    raw = (tmp_path / "emb.vectors" / file).read_bytes()
    assert (dim, rows) == (6, 1) and len(raw) == 6 * 4  # float32 bytes, nothing pickled
    assert np.array_equal(np.frombuffer(raw, dtype="<f4"), out[0])


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


@pytest.mark.parametrize(
    "fault, says",
    [
        ("garbage", r"'data' is empty: no vectors for 1 input"),
        ("malformed", r"answer is not JSON: '\{\"id\": \"chatcmpl-broken"),
        ("bad-base64", r"data\[0\] is unusable: not valid base64"),
    ],
)
def test_openai_embedder_fails_at_once_on_an_unusable_answer(fake_openai, fault, says):
    """A 200 without usable vectors is not a transient failure: one attempt, and the message
    says what the server returned (it used to be retried six times, then 'check the service')."""
    fake_openai.faults.extend([fault] * 3)
    with pytest.raises(UnusableAnswer, match=says) as err:
        _api(fake_openai, max_retries=5).embed_texts(["a"])
    assert "Not retried" in str(err.value)
    assert len(fake_openai.embedding_requests) == 1


def test_openai_embedder_checks_the_vector_count(fake_openai):
    fake_openai.embed_responder = lambda texts, body: [fake_embedding(t) for t in texts][:-1]
    with pytest.raises(
        UnusableAnswer, match=r"returned 1 vectors for 2 inputs.*lower the batch size \(--api-batch-size\)"
    ):
        _api(fake_openai, max_retries=3).embed_texts(["a", "b"])
    assert len(fake_openai.embedding_requests) == 1


# -- answers that real local servers give --------------------------------------------------------
def _mean_of_tokens(text: str, dim: int = 64) -> np.ndarray:
    return np.mean([fake_embedding(tok, dim) for tok in fake_tokens(text)], axis=0)


def test_per_token_answers_are_mean_pooled_and_said_once(fake_openai, caplog):
    """llama.cpp's Python server answers a model without pooling with one vector per token per
    input (lists of different lengths): pooled here, said once, marked in the identity."""
    fake_openai.per_token = True
    emb = _api(fake_openai, batch_size=2, max_retries=5)
    native_identity = emb.identity
    texts = ["revenue grew", "drivers are independent contractors in most markets", "one"]
    with caplog.at_level("WARNING", logger="core.api_embedder"):
        out = emb.embed_texts(texts)
        emb.embed_queries(["what about revenue growth?"])
    assert out.shape == (3, 64)
    assert np.allclose(out, np.stack([_mean_of_tokens(t) for t in texts]), atol=1e-6)
    # nothing retried; after the first answer showed per-token vectors, one text per request
    assert [r["body"]["input"] for r in fake_openai.embedding_requests] == [
        texts[:2],
        texts[1:2],
        texts[2:],
        ["what about revenue growth?"],
    ]
    assert emb.identity == native_identity + POOLED_SUFFIX
    said = [r for r in caplog.records if "one vector per token" in r.getMessage()]
    assert len(said) == 1 and "mean pooling" in said[0].getMessage()
    assert emb.dimension == 64


def test_per_token_answers_are_asked_one_text_per_request(fake_openai):
    """llama-cpp-python's server reads the token vectors of every text after the first of a request
    at a wrong offset: only one-text answers are used, whatever the batch size."""
    fake_openai.per_token = True
    fake_openai.per_token_offset_bug = True
    texts = ["revenue grew", "drivers are independent contractors", "insurance reserves rose", "one"]
    out = _api(fake_openai, batch_size=64).embed_texts(texts)
    assert np.allclose(out, np.stack([_mean_of_tokens(t) for t in texts]), atol=1e-6)
    assert [len(r["body"]["input"]) for r in fake_openai.embedding_requests] == [4, 1, 1, 1]


def test_cache_never_mixes_pooled_and_native_vectors(fake_openai, tmp_path):
    path = tmp_path / "emb.sqlite"
    native = CachedEmbedder(_api(fake_openai), EmbeddingCache(path))
    native.embed_texts(["alpha beta", "gamma delta"])  # the server pooled: native vectors cached
    assert native.identity == f"openai:fake-embed@{fake_openai.base_url}"

    fake_openai.per_token = True  # the same model name, now served without pooling
    n = len(fake_openai.embedding_requests)
    pooled = CachedEmbedder(_api(fake_openai), EmbeddingCache(path))
    out = pooled.embed_texts(["alpha beta", "epsilon zeta"])
    assert pooled.identity.endswith(POOLED_SUFFIX)
    # the native vector of "alpha beta" was not reused: both texts are pooled vectors
    assert np.allclose(out, np.stack([_mean_of_tokens("alpha beta"), _mean_of_tokens("epsilon zeta")]), atol=1e-6)
    sent = [t for r in fake_openai.embedding_requests[n:] for t in r["body"]["input"]]
    assert sorted(sent) == ["alpha beta", "epsilon zeta"]  # one probe text, then the rest: nothing twice

    # a third process finds both vectors under the pooled identity and sends nothing new
    n = len(fake_openai.embedding_requests)
    again = CachedEmbedder(_api(fake_openai), EmbeddingCache(path)).embed_texts(["epsilon zeta", "alpha beta", "eta"])
    assert [r["body"]["input"] for r in fake_openai.embedding_requests[n:]] == [["eta"]]
    assert np.allclose(again[:2], out[::-1], atol=1e-6)

    # with everything cached no server is needed (nor asked)
    fake_openai.close()
    offline = CachedEmbedder(_api(fake_openai), EmbeddingCache(path))
    assert offline.embed_texts(["gamma delta"]).shape == (1, 64)


def test_a_dimension_that_changes_between_calls_is_a_clear_error(fake_openai):
    fake_openai.dim_sequence = [64, 32]
    emb = _api(fake_openai, batch_size=2, max_retries=5)
    with pytest.raises(UnusableAnswer, match=r"now have 32 numbers where earlier answers had 64.*changed model"):
        emb.embed_texts(["a", "b", "c", "d"])
    assert len(fake_openai.embedding_requests) == 2


def test_nan_vectors_are_a_clear_error(fake_openai):
    fake_openai.nan_vectors = True
    with pytest.raises(UnusableAnswer, match=r"1 of its 3 vectors hold NaN or infinite values"):
        _api(fake_openai, max_retries=5).embed_texts(["a", "b", "c"])
    assert len(fake_openai.embedding_requests) == 1


@pytest.mark.parametrize(
    "vectors, says",
    [
        ([[1.0, 2.0], [1.0]], r"different lengths in one answer \(\[1, 2\]\)"),
        ([{"x": 1}, [1.0]], r"data\[0\] is unusable: it is an object with keys 'x'"),
        ([[[1.0, 2.0], [3.0]], [1.0, 2.0]], r"data\[0\] is unusable: it is a list of 2 lists .*differ in length"),
    ],
)
def test_other_shapes_name_what_the_server_returned(fake_openai, vectors, says):
    fake_openai.embed_responder = lambda texts, body: vectors
    with pytest.raises(UnusableAnswer, match=says):
        _api(fake_openai, max_retries=5).embed_texts(["a", "b"])
    assert len(fake_openai.embedding_requests) == 1


def test_chunks_for_another_server_are_sized_for_512_tokens_not_openais_8191(fake_openai, monkeypatch):
    """A local server's context is unknown, and llama.cpp's cuts a longer text without a word: auto chunking had
    sized chunks for OpenAI's 8191 tokens, so a 4-page PDF became one chunk embedded only to token 512."""
    from core.api_embedder import OpenAIEmbedder
    from core.documents import ChunkSettings

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    local = _api(fake_openai)
    assert local.max_seq_length == 512
    assert OpenAIEmbedder("text-embedding-3-small", api_key="sk-x").max_seq_length == 8191
    assert ChunkSettings().resolved(local.max_seq_length).chunk_size < 512


def test_a_refused_request_is_not_retried(fake_openai):
    fake_openai.faults.extend(["400"] * 3)
    with pytest.raises(EmbedderError, match=r"refused the request \(400\)"):
        _api(fake_openai, max_retries=5).embed_texts(["a"])
    assert len(fake_openai.embedding_requests) == 1


def test_llama_servers_refusal_of_unpooled_models_says_which_flag(fake_openai):
    fake_openai.faults.append("400:Pooling type 'none' is not OAI compatible. Please use a different pooling type")
    with pytest.raises(EmbedderError, match=r"\(400\).*not OAI compatible.*--pooling mean"):
        _api(fake_openai, max_retries=5).embed_texts(["a"])
    assert len(fake_openai.embedding_requests) == 1


@pytest.mark.parametrize(
    "fault, flag",
    [
        ("500:input is too large to process. increase the physical batch size", "--ubatch-size"),  # llama-server
        ("400:Requested tokens (700) exceed context window of 512", "--n_ctx"),  # llama-cpp-python's server
    ],
)
def test_a_chunk_longer_than_the_server_takes_says_what_to_change(fake_openai, fault, flag):
    """A local embedding server started with a small context or batch refuses long chunks: the error names the
    two ways out (smaller chunks, a larger server setting) instead of the server's words alone."""
    code = fault.split(":")[0]
    fake_openai.faults.extend([fault] * 6)
    with pytest.raises(EmbedderError) as info:
        _api(fake_openai, max_retries=0).embed_texts(["a"])
    text = str(info.value)
    assert "smaller chunks" in text and flag in text, text
    assert code == "500" or len(fake_openai.embedding_requests) == 1


@pytest.mark.parametrize(
    "fault",
    [
        "500:Llama model must be created with embedding=True to call this method",  # llama-cpp-python's server
        "501:This server does not support embeddings. Start it with `--embeddings`",  # llama-server
    ],
)
def test_a_server_without_embeddings_fails_at_once(fake_openai, fault):
    fake_openai.faults.extend([fault] * 3)
    with pytest.raises(EmbedderError, match=r"answered 50\d: .*Start the server with embeddings on"):
        _api(fake_openai, max_retries=5).embed_texts(["a"])
    assert len(fake_openai.embedding_requests) == 1


def test_a_server_that_refuses_base64_is_asked_for_floats(fake_openai):
    fake_openai.faults.append("400:unsupported encoding_format: base64")
    out = _api(fake_openai, max_retries=0).embed_texts(["a b"])
    assert np.allclose(out[0], fake_embedding("a b"), atol=1e-6)
    assert [r["body"].get("encoding_format") for r in fake_openai.embedding_requests] == ["base64", "float"]


# -- slow servers ----------------------------------------------------------------------------------
def test_a_timeout_splits_the_batch_and_the_size_that_worked_is_kept(fake_openai, caplog):
    """A server that needs time per token and works on one request at a time (llama.cpp): the
    whole batch times out, its halves do not; later batches use the smaller size at once."""
    fake_openai.delay_per_token = 0.1
    fake_openai.serial = True
    texts = [f"w{i}" for i in range(12)]  # one token each: a batch of n takes 0.1 * n s
    # 8 texts need 0.8 s > 0.7; the first half waits 0.1 s for the abandoned request, then 0.4 s
    emb = _api(fake_openai, batch_size=8, timeout=0.7, max_retries=0)
    with caplog.at_level("WARNING", logger="core.api_embedder"):
        out = emb.embed_texts(texts)
    assert np.allclose(out, np.array([fake_embedding(t) for t in texts]), atol=1e-6)
    sizes = [len(r["body"]["input"]) for r in fake_openai.embedding_requests]
    assert sizes[:3] == [8, 4, 4] and max(sizes[3:]) <= 4 and sum(sizes) == 20, sizes  # 8 timed out, then halves
    assert any("splitting" in r.getMessage() for r in caplog.records)
    assert "batches of 4" in emb.progress_note


def test_requests_are_sized_by_the_measured_speed(fake_openai, caplog):
    """Once one answer has shown how fast the server is, a request holds no more than it can
    answer in half the timeout: no timeout at all, no abandoned work piling up on the server."""
    fake_openai.delay_per_token = 0.05
    fake_openai.serial = True
    emb = _api(fake_openai, batch_size=64, timeout=1.0, max_retries=0)
    emb.embed_texts(["alpha beta"])  # 0.1 s for 10 characters
    texts = [f"alpha beta {i}" for i in range(16)]  # 3 tokens, 0.15 s each: 2.4 s in one request
    with caplog.at_level("WARNING", logger="core.api_embedder"):
        out = emb.embed_texts(texts)
    assert np.allclose(out, np.array([fake_embedding(t) for t in texts]), atol=1e-6)
    sizes = [len(r["body"]["input"]) for r in fake_openai.embedding_requests[1:]]
    assert sum(sizes) == 16 and 1 <= max(sizes) <= 4, sizes  # <= 0.5 s of work each
    assert not any("splitting" in r.getMessage() for r in caplog.records)


def test_a_fast_server_soon_gets_full_batches(fake_openai):
    emb = _api(fake_openai, batch_size=50)
    emb.embed_texts(["one text first"])  # as the cache does to settle the identity
    emb.embed_texts([f"text {i}" for i in range(200)])
    sizes = [len(r["body"]["input"]) for r in fake_openai.embedding_requests]
    assert sizes == [1, 8, 50, 50, 50, 42]  # at most 8x the last answered request, then the batch size


def test_a_single_text_that_times_out_says_raise_the_timeout(fake_openai):
    fake_openai.delay_per_token = 0.5
    emb = _api(fake_openai, timeout=0.2, max_retries=1)
    with pytest.raises(
        EmbedderError,
        match=r"no answer, even for a single text, in 2 attempts \(waiting 0.2 s, then "
        r"up to 0.4 s\).*--api-timeout",
    ):
        emb.embed_texts(["one"])
    assert len(fake_openai.embedding_requests) == 2


def test_a_single_text_gets_a_longer_wait_on_each_retry(fake_openai):
    """The server still works on the copy we gave up on (llama.cpp): the retry waits longer."""
    fake_openai.delay_per_token = 0.5
    fake_openai.serial = True
    emb = _api(fake_openai, timeout=0.2, max_retries=5)
    out = emb.embed_texts(["one"])  # waits of 0.2, 0.4, 0.8, 1.6 s: the last outlasts the queue
    assert np.allclose(out[0], fake_embedding("one"), atol=1e-6)
    assert 2 <= len(fake_openai.embedding_requests) <= 5


def test_concurrency_bounds_requests_in_flight_and_keeps_order(fake_openai):
    fake_openai.delay_per_token = 0.02
    texts = [f"text number {i}" for i in range(24)]
    emb = _api(fake_openai, batch_size=2, concurrency=3)
    out = emb.embed_texts(texts)
    assert np.allclose(out, np.array([fake_embedding(t) for t in texts]), atol=1e-6)
    assert 1 < fake_openai.max_in_flight <= 3


def test_a_failure_under_concurrency_reaches_the_caller(fake_openai):
    fake_openai.faults.extend(["401"])
    with pytest.raises(EmbedderError, match="401"):
        _api(fake_openai, batch_size=1, concurrency=4).embed_texts(["a", "b", "c", "d"])


def test_progress_shows_texts_per_second(fake_openai, tmp_path):
    seen: list[tuple[float, float, str]] = []
    emb = CachedEmbedder(_api(fake_openai, batch_size=2), EmbeddingCache(tmp_path / "emb.sqlite"))
    emb.embed_texts(["a", "b", "c", "d", "e"], progress=lambda d, t, m: seen.append((d, t, m)))
    assert seen[-1][0] == seen[-1][1] == 5
    assert all("texts/s" in m for _, _, m in seen)
    assert any(m.endswith("left · 0 cached") or " left · " in m for d, t, m in seen if 0 < d < t)  # time left
    raw: list[str] = []
    _api(fake_openai).embed_texts(["x"], progress=lambda d, t, m: raw.append(m))
    assert raw and "texts/s" in raw[-1]


def test_format_eta():
    from core.embedders import format_eta

    assert [format_eta(s) for s in (0, 40.4, 185, 3720)] == ["0 s", "40 s", "3 min 05 s", "1 h 02 min"]


def test_missing_texts_are_embedded_longest_first_and_returned_in_order(tmp_path):
    calls: list[list[str]] = []

    class Recorder:
        identity, dimension = "rec", 2

        def embed_texts(self, texts, progress=None):
            calls.append(list(texts))
            return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)

        embed_queries = embed_texts

    emb = CachedEmbedder(Recorder(), EmbeddingCache(tmp_path / "e.sqlite"), chunk=2)
    texts = ["bb", "a", "dddd", "ccc", "a"]
    out = emb.embed_texts(texts)
    assert calls == [["dddd", "ccc"], ["bb", "a"]]
    assert out[:, 0].tolist() == [2, 1, 4, 3, 1]


def test_api_options_are_checked_and_kept_out_of_the_identity(fake_openai):
    emb = resolve_embedder(
        "openai:m", api_key="sk-x", base_url=fake_openai.base_url, api_timeout=7.5, api_batch_size=3, api_concurrency=2
    )
    assert (emb.timeout, emb.batch_size, emb.concurrency) == (7.5, 3, 2)
    assert emb.options == {"api_timeout": 7.5, "api_batch_size": 3, "api_concurrency": 2}
    assert emb.identity == resolve_embedder("openai:m", base_url=fake_openai.base_url).identity
    assert emb.client.timeout == 7.5
    for bad in ({"api_timeout": 0}, {"api_batch_size": 0}, {"api_concurrency": 0}):
        with pytest.raises(EmbedderError, match="must be"):
            resolve_embedder("openai:m", **bad)
    # a sentence-transformers spec ignores them
    assert isinstance(resolve_embedder("default", api_timeout=1, api_batch_size=1), SentenceTransformerEmbedder)


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
    for f in tmp_path.rglob("*"):  # the database, its WAL / SHM files and the vector shards
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f.name


def test_cached_api_embedder_sends_only_new_texts(fake_openai, tmp_path):
    path = tmp_path / "emb.sqlite"
    CachedEmbedder(_api(fake_openai), EmbeddingCache(path)).embed_texts(["one", "two"])
    n = len(fake_openai.embedding_requests)
    CachedEmbedder(_api(fake_openai), EmbeddingCache(path)).embed_texts(["two", "three", "one"])
    new = fake_openai.embedding_requests[n:]
    assert [r["body"]["input"] for r in new] == [["three"]]


def test_an_api_run_that_fails_half_way_keeps_what_the_server_answered(fake_openai, tmp_path):
    """Each round of requests is cached before the next: a server that dies half-way costs the failed round,
    not the whole run (before, the cache was written once per 512 texts, so a failed run kept nothing)."""
    path = tmp_path / "emb.sqlite"
    texts = [f"passage number {i}" for i in range(40)]
    # three requests answered (a probe, then two batches), then the server fails
    fake_openai.faults.extend([None] * 3 + ["500"] * 10)
    with pytest.raises(EmbedderError):
        CachedEmbedder(_api(fake_openai, batch_size=4, max_retries=1), EmbeddingCache(path)).embed_texts(texts)
    fake_openai.faults.clear()  # the server is back
    sent = len(fake_openai.embedding_requests)
    CachedEmbedder(_api(fake_openai, batch_size=4), EmbeddingCache(path)).embed_texts(texts)
    answered = [t for r in fake_openai.embedding_requests[:3] for t in r["body"]["input"]]
    again = [t for r in fake_openai.embedding_requests[sent:] for t in r["body"]["input"]]
    assert len(answered) > 4 and sorted(again) == sorted(set(texts) - set(answered))  # only the rest is sent


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
        _ = missing.dimension


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


def test_an_input_length_kept_in_the_tokenizer_config_alone_is_read_and_tags_the_identity(tmp_path):
    """sentence-transformers 6 folders keep max_seq_length in tokenizer_config.json only: it is read from
    there (capped at the position table; transformers' 1e30 "no limit" ignored), the identity says so, and
    an unreadable config leaves the tag off rather than failing before the model loads."""
    from core.onnx_embedder import position_limit, tokenizer_max_length, tokenizer_only_length

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"module_output_name": "token_embeddings"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 256}))
    assert tokenizer_only_length(tmp_path) == 256 and position_limit(tmp_path) == 512
    assert SentenceTransformerEmbedder(str(tmp_path)).identity.endswith("@len256")
    assert SentenceTransformerEmbedder(str(tmp_path), max_seq_length=512).identity.endswith("@len512")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 4096}))
    assert tokenizer_max_length(tmp_path) == 512  # the position table caps it
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1e30}))
    assert tokenizer_max_length(tmp_path) is None
    # the old format states it in sentence_bert_config.json: nothing to tag, the identity is unchanged
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    assert tokenizer_only_length(tmp_path) is None and "@len" not in SentenceTransformerEmbedder(str(tmp_path)).identity
    (tmp_path / "sentence_bert_config.json").write_text("{not json")
    assert "@len" not in SentenceTransformerEmbedder(str(tmp_path)).identity


# ------------------------------------------------------------------------------------------------
# each role's vectors are keyed by its own prefix: another query prefix re-embeds no passage
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def sent_to_model(monkeypatch):
    """Both local backends' forward pass replaced by a stable fake that records each input it gets."""
    from core.onnx_embedder import OnnxEmbedder

    sent: list[str] = []

    def encode(self, texts, prefix, progress=None):
        sent.extend(prefix + t for t in texts)
        return np.stack([CountingEmbedder(dim=384)._vec(prefix + t) for t in texts]).astype(np.float32)

    monkeypatch.setattr(SentenceTransformerEmbedder, "_encode", encode)
    monkeypatch.setattr(OnnxEmbedder, "_encode", encode)
    return sent


PASSAGES = ["Revenue grew 36% in 2021.", "Drivers are independent contractors.", "Insurance reserves rose."]


@pytest.mark.parametrize("spec", ["default", "default@onnx-int8"])
def test_changing_only_the_query_prefix_embeds_no_passage_again(ws, sent_to_model, spec):
    """A passage's vector depends on the model, its backend and input length, the passage prefix and its text:
    runs that differ only in their query prefix share every chunk vector (and each embeds its own queries)."""
    question = "How much did revenue grow?"
    for qp in ("", "query: ", "search_query: "):
        emb = resolve_embedder(spec, workspace=ws, query_prefix=qp, passage_prefix="passage: ")
        emb.embed_texts(PASSAGES)
        emb.embed_queries([question])
    assert sorted(t for t in sent_to_model if t.startswith("passage: ")) == sorted("passage: " + p for p in PASSAGES)
    assert [t for t in sent_to_model if not t.startswith("passage: ")] == [
        question,
        "query: " + question,
        "search_query: " + question,
    ]
    # and the other way round: another passage prefix leaves the queries cached
    before = len(sent_to_model)
    emb = resolve_embedder(spec, workspace=ws, query_prefix="query: ", passage_prefix="")
    emb.embed_queries([question])
    emb.embed_texts(PASSAGES)
    assert sorted(sent_to_model[before:]) == sorted(PASSAGES)
    assert emb.stats.hits == 1 and emb.stats.misses == len(PASSAGES)


def test_vectors_cached_under_a_prefixed_identity_are_still_used(ws, sent_to_model):
    """A workspace whose cache was written while the prefixes were part of the cache key keeps its vectors."""
    from core.embedders import text_key

    old = "st:all-MiniLM-L6-v2|q=query: |p=passage: "  # the identity vectors used to be stored under
    vecs = np.stack([CountingEmbedder(dim=384)._vec("passage: " + p) for p in PASSAGES])
    EmbeddingCache(ws.embeddings_path).put_matrix(old, [text_key("p:passage: ", p) for p in PASSAGES], vecs)
    emb = resolve_embedder("default", workspace=ws, query_prefix="query: ", passage_prefix="passage: ")
    assert emb.identity == old
    assert np.array_equal(emb.embed_texts(PASSAGES), vecs) and sent_to_model == []
    # carried over: a run with another query prefix finds them too
    other = resolve_embedder("default", workspace=ws, query_prefix="q: ", passage_prefix="passage: ")
    assert np.array_equal(other.embed_texts(PASSAGES), vecs) and sent_to_model == []
