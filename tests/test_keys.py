"""API keys never leak (core.keys): one scrubber on every error path, the environment key only
for the environment's endpoint. Against the local fake server, which can echo the credentials
it received back in an error body (faults ``echo:CODE`` and ``echo-partial:CODE``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from core import keys
from core.datasets import QADataset
from core.embedders import EmbedderError, OpenAIEmbedder
from core.jobs import JobManager
from core.keys import key_for, scrub
from core.launch import start_generation
from core.llm import ChatClient, LLMError, LLMSettings, key_status
from core.runs import list_runs
from core.workspace import Workspace

SECRET = "sk-proj-LEAKTEST-a1b2c3d4e5f6g7h8i9j0"
MSGS = [{"role": "user", "content": "---\nTides follow the moon.\n---\nWrite 2 questions."}]


def fragments(key: str, n: int = 8) -> list[str]:
    """Every run of ``n`` characters of ``key``: none may appear anywhere."""
    return [key[i : i + n] for i in range(len(key) - n + 1)]


def assert_no_key(text: str | bytes, key: str = SECRET, where: str = "") -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    leaked = [f for f in fragments(key) if f in text]
    assert not leaked, f"key fragments {leaked[:3]} leaked into {where}"


def workspace_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


# -- the scrubber -----------------------------------------------------------------------------
def test_scrub_masks_known_keys_partial_echoes_and_key_shapes():
    keys.remember_key(SECRET)
    assert scrub(f"bad key {SECRET}!") == "bad key ***!"
    assert_no_key(scrub(f"fragment {SECRET[4:-4]} rejected"), where="partial echo")
    assert_no_key(scrub(f"starts {SECRET[:14]}..."), where="prefix echo")
    assert scrub("Incorrect API key provided: sk-abc1*********************wxyz.") == "Incorrect API key provided: ***"
    assert scrub("Authorization: Bearer some.opaque-token_42") == "Authorization: Bearer ***"
    assert scrub('{"api_key": "local-pass-123"}') == '{"api_key": "***"}'
    # ordinary text is left alone
    plain = "Set OPENAI_API_KEY or type a key; task-manager asked 3 questions about sk-report.pdf"
    assert scrub(plain) == plain
    # the placeholder the hints suggest for a local server that needs no key is no secret (it read "=***")
    hint = "A local server that needs no key accepts any value, e.g. OPENAI_API_KEY=none."
    assert scrub(hint) == hint and scrub("OPENAI_API_KEY=nonesuch-secret") == "OPENAI_API_KEY=***"
    assert scrub("x" * 400, limit=300).endswith("...") and len(scrub("x" * 400, limit=300)) == 300


def test_environment_key_is_masked_without_being_remembered(monkeypatch):
    env_key = "env-only-secret-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", env_key)
    assert env_key not in scrub(f"echo {env_key}") and env_key[3:15] not in scrub(f"echo {env_key[3:15]}")


def test_log_records_and_tracebacks_are_scrubbed(caplog):
    keys.remember_key(SECRET)
    log = logging.getLogger("adapterlab.test")
    with caplog.at_level(logging.INFO):
        log.warning("server said %s", f"Bearer {SECRET}")
        try:
            raise RuntimeError(f"body: {SECRET[3:-3]}")
        except RuntimeError:
            log.exception("call failed")
    assert "server said" in caplog.text and "RuntimeError" in caplog.text
    assert_no_key(caplog.text, where="the log")


# -- which key goes where -----------------------------------------------------------------------
def test_environment_key_only_for_the_environment_endpoint(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert key_for(None) == SECRET
    assert key_for("https://api.openai.com/v1/") == SECRET  # the default endpoint, spelled differently
    assert key_for("http://attacker.example:8000/v1") is None
    assert key_for("http://attacker.example:8000/v1", "typed-key-123") == "typed-key-123"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
    assert key_for("http://127.0.0.1:8080/v1") == SECRET
    assert key_for("https://api.openai.com/v1") is None  # now OpenAI itself is "another URL"


def test_chat_client_never_sends_the_environment_key_to_a_typed_url(fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    typed = LLMSettings(model="m", base_url=fake_openai.base_url, max_retries=0)
    assert typed.resolved().api_key is None
    assert "only sent to" in key_status(typed)
    ChatClient(typed).complete(MSGS)  # a local server that needs no key still works
    ChatClient(LLMSettings(model="m", base_url=fake_openai.base_url, api_key="typed-key-123")).complete(MSGS)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    ChatClient(LLMSettings(model="m", max_retries=0)).complete(MSGS)  # the environment's own endpoint
    sent = [r["headers"].get("Authorization") for r in fake_openai.chat_requests]
    assert sent == ["Bearer no-key-required", "Bearer typed-key-123", f"Bearer {SECRET}"]


def test_embedder_never_sends_the_environment_key_to_a_passed_url(fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with pytest.raises(EmbedderError, match="only sent to"):
        OpenAIEmbedder("fake-embed", base_url=fake_openai.base_url).embed_texts(["a"])
    assert fake_openai.embedding_requests == []
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    OpenAIEmbedder("fake-embed").embed_texts(["a"])
    assert fake_openai.embedding_requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"


# -- error paths with an echoing server ------------------------------------------------------------
@pytest.mark.parametrize("fault", ["echo:400", "echo-partial:400", "echo:500", "echo-partial:500"])
def test_embedder_errors_never_carry_the_key(fake_openai, fault):
    fake_openai.faults.extend([fault] * 3)
    emb = OpenAIEmbedder("fake-embed", base_url=fake_openai.base_url, api_key=SECRET, max_retries=1, backoff=0.001)
    with pytest.raises(EmbedderError) as info:
        emb.embed_texts(["a"])
    assert "Bad credentials" in str(info.value)  # the server's words are kept...
    assert_no_key(str(info.value), where="the EmbedderError")  # ...without the key
    assert info.value.__cause__ is None  # the openai exception (with the raw body) is not chained


@pytest.mark.parametrize("fault", ["echo:400", "echo-partial:400", "echo-partial:500"])
def test_chat_errors_never_carry_the_key(fake_openai, fault):
    fake_openai.faults.extend([fault] * 3)
    client = ChatClient(
        LLMSettings(model="m", base_url=fake_openai.base_url, api_key=SECRET, max_retries=1, backoff=0.001)
    )
    with pytest.raises(LLMError) as info:
        client.complete(MSGS)
    assert "Bad credentials" in str(info.value)
    assert_no_key(str(info.value), where="the LLMError")


def _tiny_dataset(path: Path) -> Path:
    ds = QADataset(
        queries={f"q{i}": f"What happened in year {2000 + i}?" for i in range(6)},
        corpus={f"n{i}": f"In year {2000 + i} the company grew by {i} percent." for i in range(6)},
        relevant_docs={f"q{i}": [f"n{i}"] for i in range(6)},
    )
    ds.save(path)
    return path


@pytest.mark.parametrize("fault", ["echo:400", "echo-partial:400"])
def test_cli_train_on_an_echoing_embeddings_endpoint_keeps_the_key_off_stderr_and_the_catalog(
    fake_openai, monkeypatch, capsys, tmp_path, fault
):
    from core.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    fake_openai.faults.extend([fault] * 10)
    ws = tmp_path / "ws"
    rc = main(
        [
            "train",
            "--dataset",
            str(_tiny_dataset(tmp_path / "d.json")),
            "--embedder",
            "openai:fake-embed",
            "--epochs",
            "1",
            "--workspace",
            str(ws),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 2 and "Bad credentials" in err
    assert_no_key(out + err, where="stdout/stderr")
    assert_no_key(workspace_bytes(ws), where="the workspace (catalog.sqlite, run files)")
    (run,) = list_runs(Workspace(ws))
    assert run["status"] == "failed" and "Bad credentials" in run["error"]


def test_a_failed_generation_job_never_stores_a_partial_echo(fake_openai, ws):
    from tests.test_questions import add_docs

    add_docs(ws, {"a.pdf": 2})
    fake_openai.faults.extend(["echo-partial:400"] * 5)
    jm = JobManager(ws)
    try:
        settings = LLMSettings(model="m", base_url=fake_openai.base_url, api_key=SECRET, max_retries=0, concurrency=1)
        job_id = start_generation(jm, ws, generator="llm", llm_settings=settings)
        assert jm.wait(job_id, timeout=30)
        job = jm.get(job_id)
    finally:
        jm.shutdown()
    assert job["status"] == "failed" and "Bad credentials" in job["error"]
    assert_no_key(json.dumps(job, default=str), where="the job row")
    time.sleep(0.05)
    assert_no_key(workspace_bytes(ws.root), where="the workspace")
