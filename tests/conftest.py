"""Shared fixtures: an offline environment, a fresh workspace, and a local fake OpenAI server."""

from __future__ import annotations

import pytest

from core.workspace import Workspace
from tests.fake_openai import FakeOpenAI


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    """Every test runs offline and never sees the developer's real OpenAI settings."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "ADAPTERLAB_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    # The fake server lives on 127.0.0.1: never route it through a proxy.
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    # Keys remembered for scrubbing live for the process: one test's key (which may contain a word
    # such as "questions") must not mask another test's text.
    from core import keys

    with keys._lock:
        keys._known.clear()


@pytest.fixture
def fake_openai():
    """A running :class:`tests.fake_openai.FakeOpenAI` (``.base_url``, ``.faults``, ``.requests``)."""
    server = FakeOpenAI()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def ws(tmp_path):
    """A fresh, empty workspace under the test's tmp dir."""
    return Workspace(tmp_path / "ws")
