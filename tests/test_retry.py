"""The retry policy shared by the chat client and the embeddings client: delays, Retry-After, cancel."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from core.embedders import EmbeddingCancelled, OpenAIEmbedder
from core.llm import ChatClient, LLMSettings
from core.retry import RetryPolicy, retry_after


def _exc(headers):
    return SimpleNamespace(response=SimpleNamespace(headers=headers))


def test_delay_is_exponential_honours_retry_after_and_is_capped():
    p = RetryPolicy(backoff=1.0, max_backoff=10.0)
    assert all(0.5 <= p.delay(0) <= 1.5 for _ in range(50))
    assert all(2.0 <= p.delay(2) <= 6.0 for _ in range(50))
    assert all(p.delay(9) <= 10.0 for _ in range(20))
    assert p.delay(0, _exc({"retry-after": "7"})) >= 7.0
    assert p.delay(0, _exc({"retry-after": "700"})) == 10.0
    assert retry_after(_exc({"retry-after-ms": "250"})) == pytest.approx(0.25)
    assert retry_after(_exc({"retry-after": "soon"})) is None and retry_after(None) is None


def test_a_wait_ends_when_cancelled():
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    t0 = time.monotonic()
    assert RetryPolicy().sleep(30.0, cancel) is True
    assert time.monotonic() - t0 < 5.0
    assert RetryPolicy().sleep(0.01, threading.Event()) is False


def test_both_clients_use_the_shared_policy():
    chat = ChatClient(LLMSettings(model="m", base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=4, backoff=0.5))
    emb = OpenAIEmbedder("e", base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=3, backoff=0.25)
    assert isinstance(chat.retry_policy, RetryPolicy) and isinstance(emb.retry_policy, RetryPolicy)
    assert (chat.retry_policy.max_retries, chat.retry_policy.backoff) == (4, 0.5)
    assert (emb.retry_policy.max_retries, emb.retry_policy.backoff) == (3, 0.25)


def test_embeddings_honour_retry_after(fake_openai):
    fake_openai.faults.append("429:0.3")
    emb = OpenAIEmbedder("fake-embed", base_url=fake_openai.base_url, api_key="sk-test", backoff=0.001)
    t0 = time.monotonic()
    assert emb.embed_texts(["one", "two"]).shape[0] == 2
    assert time.monotonic() - t0 >= 0.3


def test_embedding_retries_can_be_cancelled(fake_openai):
    fake_openai.faults.extend(["429:30"] * 3)  # the server asks for 30 s each time
    cancel = threading.Event()
    emb = OpenAIEmbedder("fake-embed", base_url=fake_openai.base_url, api_key="sk-test", backoff=0.001, cancel=cancel)
    threading.Timer(0.3, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(EmbeddingCancelled, match="cancelled"):
        emb.embed_texts(["one", "two"])
    assert time.monotonic() - t0 < 10.0
    assert len(fake_openai.embedding_requests) == 1  # no request after the cancel
