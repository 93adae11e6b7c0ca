"""core.llm against the local fake OpenAI server, through the real ``openai`` client."""

from __future__ import annotations

import logging
import math
import threading
import time

import openai
import pytest

from core.generators import estimate_generation, fill_prompt
from core.llm import (
    PRICES_PER_MTOK,
    UNREACHED_RETRIES,
    ChatClient,
    LLMError,
    LLMSettings,
    estimate_tokens,
    key_status,
    model_display_name,
    run_bounded,
)
from tests.fake_openai import FakeOpenAI, fake_embedding

KEY = "sk-test-SECRET-0123456789abcdef"
MSGS = [{"role": "user", "content": "---\nTides follow the moon and the sun.\n---\nWrite 2 questions."}]


def settings_for(server, **kw) -> LLMSettings:
    base = dict(model="fake-model", base_url=server.base_url, api_key=KEY, timeout=5.0, max_retries=3, backoff=0.001)
    base.update(kw)
    return LLMSettings(**base)


# -- settings ---------------------------------------------------------------------------------
def test_settings_repr_hides_key_and_resolves_env(monkeypatch):
    s = LLMSettings(api_key=KEY)
    assert KEY not in repr(s)
    assert "api_key" not in s.public_dict()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-xyz")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:9/v1")
    r = LLMSettings().resolved()
    assert r.api_key == "sk-from-env-xyz" and r.base_url == "http://localhost:9/v1"
    assert LLMSettings(api_key=KEY).resolved().api_key == KEY  # explicit wins


def test_settings_validation():
    with pytest.raises(ValueError, match="timeout"):
        LLMSettings(timeout=0)
    with pytest.raises(ValueError, match="concurrency"):
        LLMSettings(concurrency=0)
    with pytest.raises(ValueError, match="model"):
        LLMSettings(model=" ")


def test_key_status_never_shows_the_key(monkeypatch):
    assert key_status(LLMSettings()) == "no key"
    assert key_status(LLMSettings(api_key=KEY)) == "key set (entered in this session)"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert key_status(LLMSettings()) == "key set (from OPENAI_API_KEY)"
    assert key_status(LLMSettings().resolved()) == "key set (from OPENAI_API_KEY)"
    for s in (LLMSettings(), LLMSettings(api_key=KEY)):
        status = key_status(s)
        assert not any(part in status for part in (KEY[:6], KEY[-6:]))


# -- one call ---------------------------------------------------------------------------------
def test_complete_sends_key_and_returns_text(fake_openai):
    client = ChatClient(settings_for(fake_openai))
    text = client.complete(MSGS)
    assert "?" in text
    (req,) = fake_openai.chat_requests
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    assert req["body"]["model"] == "fake-model"
    assert KEY not in repr(client)


def test_429_then_success_honours_retry_after(fake_openai):
    fake_openai.faults.append("429:0.3")
    client = ChatClient(settings_for(fake_openai))
    t0 = time.monotonic()
    assert "?" in client.complete(MSGS)
    assert time.monotonic() - t0 >= 0.3
    assert len(fake_openai.chat_requests) == 2


@pytest.mark.parametrize("fault", ["500", "503"])
def test_server_errors_are_retried(fake_openai, fault):
    fake_openai.faults.extend([fault, fault])
    client = ChatClient(settings_for(fake_openai))
    assert "?" in client.complete(MSGS)
    assert len(fake_openai.chat_requests) == 3


def test_server_error_gives_up_after_retries(fake_openai):
    fake_openai.faults.extend(["500"] * 10)
    client = ChatClient(settings_for(fake_openai, max_retries=2))
    with pytest.raises(LLMError) as info:
        client.complete(MSGS)
    assert info.value.kind == "server" and info.value.status == 500
    assert "3 attempts" in str(info.value)
    assert len(fake_openai.chat_requests) == 3


def test_timeout_is_retried_then_reported(fake_openai):
    fake_openai.timeout_sleep = 1.5
    fake_openai.faults.append("timeout")
    client = ChatClient(settings_for(fake_openai, timeout=0.25))
    assert "?" in client.complete(MSGS)
    assert len(fake_openai.chat_requests) == 2

    fake_openai.faults.extend(["timeout", "timeout"])
    client = ChatClient(settings_for(fake_openai, timeout=0.25, max_retries=1))
    with pytest.raises(LLMError) as info:
        client.complete(MSGS)
    assert info.value.kind == "timeout"
    assert "0.25 s" in str(info.value) and "timeout" in str(info.value)


def test_a_timed_out_request_is_retried_with_a_longer_wait(fake_openai):
    """A slow local server (2 cores, one request at a time) timed out at 60 s, and each retry waited the same 60 s
    and timed out again: each retry after a timeout waits twice as long, up to MAX_TIMEOUT_FACTOR times."""
    fake_openai.chat_delay = 0.4
    client = ChatClient(settings_for(fake_openai, timeout=0.25, max_retries=3))
    assert "?" in client.complete(MSGS)  # 0.25 s ran out, 0.5 s did not
    assert len(fake_openai.chat_requests) == 2

    fake_openai.chat_delay = 1.5
    client = ChatClient(settings_for(fake_openai, timeout=0.1, max_retries=3))
    t0 = time.monotonic()
    with pytest.raises(LLMError) as info:
        client.complete(MSGS)
    assert 0.1 + 0.2 + 0.4 + 0.4 <= time.monotonic() - t0 < 1.5  # capped at 4 x 0.1 s
    assert "within 0.1 s (retries waited up to 0.4 s; gave up after 4 attempts)" in str(info.value)


def test_401_is_not_retried_and_hides_the_key(fake_openai):
    fake_openai.require_key = "sk-the-right-one"
    client = ChatClient(settings_for(fake_openai))
    with pytest.raises(LLMError) as info:
        client.complete(MSGS)
    err = info.value
    assert err.kind == "auth" and err.status == 401
    assert "OPENAI_API_KEY" in str(err)
    assert KEY not in str(err) and KEY[:8] not in str(err)
    assert len(fake_openai.chat_requests) == 1


def test_400_is_not_retried(fake_openai):
    fake_openai.faults.append("400")
    client = ChatClient(settings_for(fake_openai))
    with pytest.raises(LLMError) as info:
        client.complete(MSGS)
    assert info.value.kind == "bad_request"
    assert len(fake_openai.chat_requests) == 1


@pytest.mark.parametrize(
    "said",
    [
        "Requested tokens (1337) exceed context window of 512",  # llama-cpp-python's server
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
    ],
)
def test_a_prompt_longer_than_the_context_window_says_so_and_what_to_do(fake_openai, said):
    """A local server started with a small context (llama.cpp's default) refuses long chunks: "Check the model
    name and the settings" pointed nowhere; the message now names the cause and the three ways out."""
    fake_openai.faults.append(f"400:{said}")
    with pytest.raises(LLMError) as info:
        ChatClient(settings_for(fake_openai)).complete(MSGS)
    text = str(info.value)
    assert info.value.kind == "bad_request" and "longer than the model's context window" in text
    assert "smaller chunks" in text and "--n_ctx" in text and said.split(".")[0] in text
    assert len(fake_openai.chat_requests) == 1  # not retried


def test_error_messages_say_what_happened_then_what_to_do(fake_openai):
    """A 404 read "answered 404: Error code: 404 Check the model name ..." (the client's wrapping doubled, no
    sentence break), and a web app's 405 "refused the request (405): ... Check the model name and settings":
    each message is now what happened (with what the server said) and what to do, and a 405, a 501 or a web page
    says the base URL is not an OpenAI-compatible API."""
    client = ChatClient(settings_for(fake_openai, max_retries=2))

    def error(*faults: str) -> LLMError:
        fake_openai.faults.extend(faults)
        with pytest.raises(LLMError) as info:
            client.complete(MSGS)
        assert "Error code" not in str(info.value) and ". ." not in str(info.value)
        return info.value

    err = error("404:The model `gpt-4o-mimi` does not exist or you do not have access to it.")
    assert str(err) == (
        f"'fake-model' at {fake_openai.base_url} answered 404 (not found): The model `gpt-4o-mimi` does not exist "
        "or you do not have access to it. Check the model name and the base URL (an OpenAI-compatible one usually "
        "ends in /v1)."
    )
    for fault, status in (("html:405", "405 Method Not Allowed with a web page"), ("501", "501 Not Implemented")):
        n = len(fake_openai.chat_requests)
        err = error(fault)
        assert err.kind == "bad_request" and len(fake_openai.chat_requests) == n + 1  # not retried
        assert str(err) == (
            f"{fake_openai.base_url} is not an OpenAI-compatible API: it answered {status}. Check the base URL: it "
            "should be the server's OpenAI-compatible endpoint, which usually ends in /v1 (e.g. http://localhost:8000/v1)."
        )
    err = error("html:200")
    assert (
        err.kind == "bad_request"
        and "not an OpenAI-compatible API: it answered the chat request with a web page" in str(err)
    )
    err = error("html:404")
    assert "not an OpenAI-compatible API: it answered 404 Not Found with a web page. Check the base URL" in str(err)
    assert str(error("400:The temperature must be at most 2")).endswith(
        "refused the request (400 Bad Request): The temperature must be at most 2. Check the model name and the "
        "settings."
    )
    # a prompt over the context window names that cause (test_a_prompt_longer_than_the_context_window_says_so...)
    assert "refused the request (400 Bad Request): the prompt is longer than the model's context window: Requested " \
        "tokens (5000) exceed context window of 4096. Cut the documents" in str(
        error("400:Requested tokens (5000) exceed context window of 4096"))  # fmt: skip
    assert str(error("500", "500", "500")).endswith(
        "had a server error (500; gave up after 3 attempts): Injected error 500. Try again later."
    )


def test_malformed_body_is_a_bad_response(fake_openai):
    fake_openai.faults.append("malformed")
    client = ChatClient(settings_for(fake_openai))
    with pytest.raises(LLMError) as info:
        client.complete(MSGS)
    assert info.value.kind == "bad_response"
    assert "OpenAI-compatible" in str(info.value)


def test_connection_refused(fake_openai):
    url = fake_openai.base_url
    fake_openai.close()
    client = ChatClient(LLMSettings(model="m", base_url=url, api_key=KEY, max_retries=1, backoff=0.001, timeout=2))
    with pytest.raises(LLMError) as info:
        client.complete(MSGS)
    assert info.value.kind == "connection"
    assert "base URL" in str(info.value)


def test_a_server_never_reached_gives_up_in_a_few_retries(fake_openai):
    """A server that is down (or a wrong base URL) was retried max_retries times with backoff (a minute with the
    defaults) before anyone heard of it: a client the server never answered gives up after UNREACHED_RETRIES."""
    url = fake_openai.base_url
    fake_openai.close()
    waits: list[float] = []
    client = ChatClient(LLMSettings(model="m", base_url=url, api_key=KEY, max_retries=5, timeout=2), sleep=waits.append)
    with pytest.raises(LLMError) as info:
        client.complete(MSGS)
    assert info.value.kind == "connection" and info.value.never_answered
    assert len(waits) == UNREACHED_RETRIES and sum(waits) < 10  # the default backoff: about 3 s in all
    assert "3 attempts" in str(info.value) and "base URL" in str(info.value)


def test_a_server_that_answered_once_gets_every_retry_when_it_drops(fake_openai):
    """A server restarting mid-run refuses connections for a while: once it has answered, every retry is used."""
    waits: list[float] = []
    client = ChatClient(settings_for(fake_openai, max_retries=5), sleep=waits.append)
    assert "?" in client.complete(MSGS) and client.reached
    fake_openai.close()
    with pytest.raises(LLMError) as info:
        client.complete(MSGS)
    assert info.value.kind == "connection" and not info.value.never_answered
    assert len(waits) == 5 and "6 attempts" in str(info.value)


def test_no_key_needed_for_a_local_server_but_needed_for_openai(fake_openai):
    client = ChatClient(LLMSettings(model="m", base_url=fake_openai.base_url))
    assert "?" in client.complete(MSGS)
    with pytest.raises(LLMError) as info:
        ChatClient(LLMSettings(model="m")).complete(MSGS)
    assert info.value.kind == "auth" and "OPENAI_API_KEY" in str(info.value)


def test_key_never_logged(fake_openai, caplog):
    caplog.set_level(logging.DEBUG)
    fake_openai.faults.extend(["429", "500", "timeout", "401"])
    fake_openai.timeout_sleep = 1.0
    client = ChatClient(settings_for(fake_openai, timeout=0.2))
    with pytest.raises(LLMError) as info:
        client.complete(MSGS)
    assert info.value.kind == "auth"
    assert "retry" in caplog.text  # our warnings were logged...
    assert KEY not in caplog.text  # ...without the key
    assert KEY[-10:] not in caplog.text


def test_backoff_delay_is_exponential_and_capped():
    client = ChatClient(LLMSettings(model="m", base_url="http://127.0.0.1:9/v1", backoff=1.0, max_backoff=5.0))
    d0 = [client.backoff_delay(0) for _ in range(50)]
    d2 = [client.backoff_delay(2) for _ in range(50)]
    assert all(0.5 <= d <= 1.5 for d in d0)
    assert all(2.0 <= d <= 5.0 for d in d2)
    assert all(d <= 5.0 for d in (client.backoff_delay(10) for _ in range(20)))


def test_the_answering_model_is_reported_and_a_path_shown_as_its_file_name(fake_openai):
    fake_openai.answer_model = "/srv/models/SmolLM2-135M-Instruct.Q4_1.gguf"  # llama.cpp: the file it loaded
    answer = ChatClient(settings_for(fake_openai, model="gpt-4o-mini")).chat(MSGS)
    assert answer.model == "/srv/models/SmolLM2-135M-Instruct.Q4_1.gguf" and answer.finish_reason == "stop"
    assert model_display_name(answer.model) == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model_display_name("C:\\models\\phi-3.gguf") == "phi-3.gguf"
    for name in ("gpt-4o-mini-2024-07-18", "meta-llama/Llama-3.1-8B-Instruct", "qwen2.5:7b"):
        assert model_display_name(name) == name  # names, not paths: as they are
    assert model_display_name("") is None and model_display_name(None) is None


# -- many calls -------------------------------------------------------------------------------
def test_map_complete_bounded_concurrency_and_order(fake_openai):
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def slow(body):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return "Echo: what is " + body["messages"][0]["content"] + "?"

    fake_openai.responder = slow
    client = ChatClient(settings_for(fake_openai, concurrency=3))
    seen = []
    caller = threading.get_ident()

    def on_result(i, res):
        assert threading.get_ident() == caller
        seen.append(i)

    msgs = [[{"role": "user", "content": f"item {i}"}] for i in range(10)]
    results = client.map_complete(msgs, on_result=on_result)
    assert sorted(seen) == list(range(10))
    assert results == [f"Echo: what is item {i}?" for i in range(10)]
    assert 1 < state["max"] <= 3


def test_map_complete_delivers_errors_and_honours_cancel(fake_openai):
    fake_openai.faults.append("400")
    client = ChatClient(settings_for(fake_openai, concurrency=1))
    cancel = threading.Event()
    got = {}

    def on_result(i, res):
        got[i] = res
        if i == 1:
            cancel.set()

    msgs = [[{"role": "user", "content": f"item {i}"}] for i in range(6)]
    results = client.map_complete(msgs, on_result=on_result, cancel=cancel)
    assert isinstance(got[0], LLMError) and got[0].kind == "bad_request"
    assert isinstance(got[1], str)
    assert results[2:] == [None] * 4
    assert len(fake_openai.chat_requests) == 2


def test_run_bounded_threads_cancel_stops_new_work():
    cancel = threading.Event()
    started = []

    def fn(x):
        started.append(x)
        time.sleep(0.02)
        return x * 2

    def on_result(i, r):
        if len(started) >= 4:
            cancel.set()

    out = run_bounded(fn, list(range(50)), concurrency=2, on_result=on_result, cancel=cancel)
    assert len(started) < 10
    assert all(out[i] == i * 2 for i in started)


# -- estimates --------------------------------------------------------------------------------
def test_estimate_tokens():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd" * 100) in range(20, 120)  # ~100 by the 4-chars rule


def test_fill_prompt_and_estimate_generation_still_import_from_core_llm():
    import core.llm as llm

    assert llm.fill_prompt is fill_prompt and llm.estimate_generation is estimate_generation


def test_estimate_generation_numbers():
    template = "Context:\n{context_str}\nWrite {num_questions_per_chunk} questions."
    chunks = ["x" * 400, "y" * 800]
    est = estimate_generation(chunks, 3, template, "gpt-4o-mini")
    assert est["calls"] == 2
    expected_prompt = sum(estimate_tokens(fill_prompt(template, c, 3)) + 8 for c in chunks)
    assert est["prompt_tokens"] == expected_prompt
    assert est["completion_tokens"] == 2 * (3 * 25 + 10)
    pin, pout = PRICES_PER_MTOK["gpt-4o-mini"]
    assert math.isclose(
        est["cost_usd"], (est["prompt_tokens"] * pin + est["completion_tokens"] * pout) / 1e6, rel_tol=1e-4
    )
    assert estimate_generation(chunks, 3, template, "my-local-llama")["cost_usd"] is None
    # a local server answering to "gpt-4o-mini" is not priced at OpenAI's rates (it showed $0.00)
    local = estimate_generation(chunks, 3, template, "gpt-4o-mini", "http://127.0.0.1:8765/v1")
    assert local["cost_usd"] is None and local["priced"] is False
    assert estimate_generation(chunks, 3, template, "gpt-4o-mini", "https://api.openai.com/v1")["priced"] is True
    with pytest.raises(ValueError):
        estimate_generation(chunks, 0, template, "gpt-4o-mini")


# -- the fake server itself (used by other tests) ---------------------------------------------
def test_fake_embeddings_through_real_client(fake_openai):
    client = openai.OpenAI(api_key=KEY, base_url=fake_openai.base_url, max_retries=0)
    resp = client.embeddings.create(model="fake-embed", input=["revenue grew", "revenue grew fast", "tides"])
    vecs = [d.embedding for d in resp.data]
    assert len(vecs) == 3 and len(vecs[0]) == 64
    assert all(abs(sum(v * v for v in vec) - 1) < 1e-5 for vec in vecs)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert dot(vecs[0], vecs[1]) > dot(vecs[0], vecs[2])
    assert resp.usage.prompt_tokens > 0
    single = client.embeddings.create(model="e", input="tides", encoding_format="float")
    assert single.data[0].embedding == pytest.approx(fake_embedding("tides"), abs=1e-6)
    assert fake_openai.embedding_requests[0]["headers"]["authorization"] == f"Bearer {KEY}"


def test_fake_server_standalone_context_manager():
    with FakeOpenAI(dim=8) as server:
        client = openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0)
        assert len(client.embeddings.create(model="e", input="a b").data[0].embedding) == 8
        server.faults.append("garbage")
        text = client.chat.completions.create(model="m", messages=MSGS).choices[0].message.content
        assert "?" not in text
