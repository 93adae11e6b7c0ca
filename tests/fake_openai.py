"""A real, local, OpenAI-compatible HTTP server for tests (no network needed).

It speaks just enough of the OpenAI REST API for the ``openai`` client to talk to it:

* ``POST /v1/chat/completions``: answers with questions derived from the context found in the
  prompt (the text between two ``-----`` lines, else the whole last message), formatted the
  way real models format them: a preamble, ``1.`` / ``Q2)`` / ``**3.**`` / ``- `` numbering,
  blank lines and, now and then, a repeated question. The questions depend only on the
  context and their position, so a retried or repeated request gets the same questions.
* ``POST /v1/embeddings``: deterministic unit vectors (hashed bag of words into ``dim``
  dimensions), so texts sharing words get similar vectors. ``input`` may be a string or a
  list; ``encoding_format`` ``"float"`` or ``"base64"`` (the ``openai`` client's default);
  ``dimensions`` overrides ``dim``.
* ``GET /v1/models``: a one-model list (``server.model_name``), or ``server.served_models``.

Fault injection: ``server.faults`` is a deque; each POST request consumes its first entry (``GET /models``
takes none):

=============  ==================================================================
``"429"``      429 with ``Retry-After: <server.retry_after>`` (``"429:0.05"`` sets it)
``"500"``      500 with an OpenAI-style error body (any ``"4xx"``/``"5xx"`` works;
               ``"400:some message"`` sets the error message)
``"503"``      503
``"401"``      401 invalid API key
``"timeout"``  sleeps ``server.timeout_sleep`` seconds before answering
``"garbage"``  200 whose text holds no question (chat) / no vectors (embeddings)
``"malformed"``  200 with a body that is not JSON
``"echo:400"``   400 (or any code) whose error message echoes the request's Authorization header
``"echo-partial:500"``  the same with only the middle of the key (first and last 4 characters cut)
``"bad-base64"``  embeddings: 200 whose vectors are strings that are not base64
``"html:405"``   405 (or any code, 200 too) with an HTML page, as a web app answers
=============  ==================================================================

Embedding modes, the ways real local servers answer (attributes, off by default):

* ``server.per_token = True``: one vector per token for each input (a list of lists), as
  llama.cpp's Python server does for a model with no pooling; tokens are the words that
  :func:`fake_embedding` hashes, each token's vector is ``fake_embedding(token)``. With
  ``server.per_token_offset_bug = True`` as well, every input after the first of a request gets
  its token vectors read at the wrong offset of the flat output buffer, exactly as
  llama-cpp-python 0.3.36's server does (``pos += n_tokens`` where ``n_tokens * dim`` is meant).
* ``server.delay_per_token = s``: each embeddings request sleeps ``s`` seconds per token of
  its inputs before answering; with ``server.serial = True`` requests are worked on one at a
  time, and a request the client gave up on is still worked to the end (like llama.cpp).
* ``server.dim_sequence = [64, 32]``: the n-th embeddings request answers vectors of
  ``dim_sequence[n]`` numbers (the last entry from then on): a dimension that changes.
* ``server.nan_vectors = True``: the first vector of every answer holds a NaN.

``server.answer_model = "/models/x.gguf"``: the ``model`` a chat answer names (default: the one asked
for, echoed, as llama.cpp's servers do whatever model they loaded: set ``server.model_name`` to the file
for that).

``server.chat_delay = s``: every chat request sleeps ``s`` seconds before answering (a slow server).

``server.max_in_flight`` is the most embeddings requests that were ever being answered at once.

A chat answer longer than the request's ``max_tokens`` (4 characters a token) is cut there, with
``finish_reason`` ``"length"``, as a real server does.

``server.responder = fn(body) -> str | dict`` replaces the chat answer (a ``str`` is the
message content, a ``dict`` the whole JSON response; raising gives a 500);
``server.embed_responder = fn(texts, body) -> list[list[float]]`` does the same for embeddings.
``server.require_key = "sk-..."`` answers 401 to requests without that bearer key.
``server.requests`` records every request as ``{"path", "body", "headers"}`` (the body parsed
from JSON, ``None`` if it was not JSON; header lookups ignore case).

Example::

    with FakeOpenAI() as server:
        client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        server.faults.append("429")
        ...
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_STOP = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in
    into is it its may more most must not of on or our over shall should so such than that the
    their them then there these they this those to under up upon was we were what when where
    which while who whom why will with would you your also other any each""".split()
)

_TEMPLATES = (
    "What does the context say about {}?",
    "How is {} described in the passage?",
    "Which details does the text give about {}?",
    "Why does the passage mention {}?",
    "According to the document, what is notable about {}?",
    "In what way does the context discuss {}?",
)

_EMBED_TOKEN = re.compile(r"[a-z0-9]+")


class Headers(dict):
    """Request headers; lookups ignore case (``h["Authorization"] == h["authorization"]``)."""

    def __init__(self, items=()):
        super().__init__((str(k).lower(), v) for k, v in items)

    def __getitem__(self, key):
        return super().__getitem__(str(key).lower())

    def __contains__(self, key):
        return super().__contains__(str(key).lower())

    def get(self, key, default=None):
        return super().get(str(key).lower(), default)


def fake_questions(context: str, n: int) -> list[str]:
    """The ``n`` distinct questions the fake model asks about ``context`` (deterministic)."""
    words = re.findall(r"[A-Za-z][A-Za-z0-9'-]*", context)
    content = [w for w in words if w.lower() not in _STOP and len(w) > 2] or words or ["this topic"]
    out = []
    for i in range(n):
        start = (i * 3) % len(content)
        window = [content[(start + j) % len(content)] for j in range(min(3, len(content)))]
        out.append(_TEMPLATES[i % len(_TEMPLATES)].format(" ".join(window)))
    return out


def fake_tokens(text: str) -> list[str]:
    """The fake model's tokens: lower-cased words and numbers."""
    return _EMBED_TOKEN.findall(text.lower())


def fake_embedding(text: str, dim: int = 64) -> list[float]:
    """A unit vector: hashed bag of lower-cased words (signed feature hashing)."""
    vec = [0.0] * dim
    for tok in fake_tokens(text):
        h = hashlib.blake2b(tok.encode(), digest_size=8).digest()
        idx = int.from_bytes(h[:4], "little") % dim
        vec[idx] += 1.0 if h[4] & 1 else -1.0
    norm = sum(v * v for v in vec) ** 0.5
    if norm == 0:
        vec[0] = 1.0
        return vec
    return [v / norm for v in vec]


def _format_answer(questions: list[str], style: int) -> str:
    """Format questions the way chat models do (the style rotates per request)."""
    n = len(questions)
    style %= 5
    if style == 0:
        body = "\n\n".join(f"{i}. {q}" for i, q in enumerate(questions, 1))
        return f"Here are {n} questions based on the context:\n\n{body}"
    if style == 1:
        return "\n".join(f"Q{i}) {q}" for i, q in enumerate(questions, 1))
    if style == 2:
        lines = [f"**{i}.** {q}" for i, q in enumerate(questions, 1)]
        if questions:
            lines.append(f"**{n + 1}.** {questions[0]}")  # the occasional duplicate
        return "Sure! Here are some quiz questions:\n\n" + "\n".join(lines) + "\n\nLet me know if you need more."
    if style == 3:
        return "\n".join(f'- "{q}"' for q in questions)
    return "\n".join(f"Question {i}: {q}\n" for i, q in enumerate(questions, 1))


def _extract_context(prompt: str) -> str:
    parts = re.split(r"^\s*-{3,}\s*$", prompt, flags=re.M)
    if len(parts) >= 3:
        return parts[1].strip()
    return prompt


def _extract_n(prompt: str, context: str) -> int:
    rest = prompt.replace(context, " ")
    m = re.search(r"\b(\d{1,2})\s+(?:[\w-]+\s+){0,3}questions?\b", rest, flags=re.I)
    return int(m.group(1)) if m else 2


class FakeOpenAI:
    """The server; see the module docstring. Use as a context manager or call :meth:`close`."""

    def __init__(self, dim: int = 64, timeout_sleep: float = 2.0, retry_after: str = "0"):
        self.dim = dim
        self.timeout_sleep = timeout_sleep
        self.retry_after = retry_after
        self.faults: collections.deque = collections.deque()
        self.requests: list[dict[str, Any]] = []
        self.responder: Callable[[dict], str | dict] | None = None
        self.embed_responder: Callable[[list[str], dict], list[list[float]]] | None = None
        self.require_key: str | None = None
        self.model_name = "fake-model"
        self.answer_model: str | None = None
        self.served_models: list[str] | None = None
        self.chat_delay = 0.0
        self.per_token = False
        self.per_token_offset_bug = False
        self.delay_per_token = 0.0
        self.serial = False
        self.dim_sequence: list[int] | None = None
        self.nan_vectors = False
        self.max_in_flight = 0
        self._in_flight = 0
        self._embed_count = 0
        self._serial_lock = threading.Lock()
        self._lock = threading.Lock()
        self._chat_count = 0
        self._connections: set[socket.socket] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)

            def finish(self):
                with server._lock:
                    server._connections.discard(self.connection)
                super().finish()

            def log_message(self, format, *args):  # noqa: A002 - silence stderr access log
                pass

            def do_GET(self):  # noqa: N802
                server._handle(self, "GET")

            def do_POST(self):  # noqa: N802
                server._handle(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop listening and drop the open (keep-alive) connections, as a server that goes down does: a client's
        next request is refused."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- helpers for tests ----------------------------------------------------------------------
    def set_responder(self, fn: Callable[[dict], str | dict] | None) -> None:
        self.responder = fn

    def calls(self, path_suffix: str = "/chat/completions") -> list[dict[str, Any]]:
        """Recorded requests whose path ends with ``path_suffix``."""
        with self._lock:
            return [r for r in self.requests if r["path"].endswith(path_suffix)]

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        return self.calls("/chat/completions")

    @property
    def embedding_requests(self) -> list[dict[str, Any]]:
        return self.calls("/embeddings")

    # -- request handling -----------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        try:
            length = int(h.headers.get("Content-Length") or 0)
            raw = h.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = h.path.split("?", 1)[0]
            with self._lock:
                self.requests.append({"path": path, "body": body, "headers": Headers(h.headers.items())})
                fault = self.faults.popleft() if self.faults and method == "POST" else None
            self._respond(h, method, path, body, fault)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. after a timeout)

    def _send(self, h, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("x-request-id", f"req_{len(self.requests)}")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        leaving = getattr(h, "before_reply", None)
        if leaving is not None:  # the request stops counting as in flight before the client can see its answer
            h.before_reply = None
            leaving()
        h.wfile.write(data)
        h.wfile.flush()

    @staticmethod
    def _error(message: str, type_: str, code: str | None = None) -> dict:
        return {"error": {"message": message, "type": type_, "param": None, "code": code}}

    def _respond(self, h, method: str, path: str, body: Any, fault: str | None) -> None:
        if self.require_key is not None and h.headers.get("Authorization") != f"Bearer {self.require_key}":
            return self._send(
                h, 401, self._error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            )
        if fault is not None:
            fault = str(fault)
            if fault.startswith("429"):
                retry_after = fault.split(":", 1)[1] if ":" in fault else self.retry_after
                return self._send(
                    h,
                    429,
                    self._error("Rate limit reached. Please slow down.", "requests", "rate_limit_exceeded"),
                    {"Retry-After": retry_after},
                )
            if fault.startswith("echo"):  # a careless server that quotes the credentials back
                how, _, code = fault.partition(":")
                auth = h.headers.get("Authorization") or ""
                key = auth.split(" ", 1)[1] if " " in auth else auth
                said = f"Authorization: {auth}" if how == "echo" else f"key fragment {key[4:-4]} is not valid"
                return self._send(
                    h, int(code or 400), self._error(f"Bad credentials ({said}).", "invalid_request_error")
                )
            if fault.startswith("html:"):  # a web app or a web server, not an API: an HTML page
                page = b"<!DOCTYPE html><html><head><title>Not an API</title></head><body>Hello</body></html>"
                h.send_response(int(fault[5:]))
                h.send_header("Content-Type", "text/html; charset=utf-8")
                h.send_header("Content-Length", str(len(page)))
                h.end_headers()
                h.wfile.write(page)
                h.wfile.flush()
                return None
            if fault == "401":
                return self._send(
                    h, 401, self._error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
                )
            if fault[:3].isdigit() and fault[3:4] in ("", ":"):
                code = int(fault[:3])
                message = fault[4:] or f"Injected error {code}."
                return self._send(
                    h, code, self._error(message, "server_error" if code >= 500 else "invalid_request_error")
                )
            if fault == "timeout":
                time.sleep(self.timeout_sleep)
            elif fault == "malformed":
                return self._send(h, 200, b'{"id": "chatcmpl-broken", "choices": [ {"message": ')
            elif fault not in ("garbage", "bad-base64"):
                raise ValueError(f"unknown fault {fault!r}")
        garbage = fault == "garbage"
        if method == "GET" and path.endswith("/models"):
            return self._send(
                h,
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                        for m in self.served_models or [self.model_name]
                    ],
                },
            )
        if method == "POST" and path.endswith("/chat/completions"):
            return self._chat(h, body or {}, garbage)
        if method == "POST" and path.endswith("/embeddings"):
            with self._lock:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            done = threading.Event()

            def leave() -> None:
                if not done.is_set():
                    done.set()
                    with self._lock:
                        self._in_flight -= 1

            h.before_reply = leave
            try:
                return self._embeddings(h, body or {}, garbage, bad_base64=fault == "bad-base64")
            finally:
                h.before_reply = None
                leave()
        return self._send(h, 404, self._error(f"Unknown path {path}.", "invalid_request_error"))

    def _chat(self, h, body: dict, garbage: bool) -> None:
        messages = body.get("messages") or []
        prompt = ""
        for m in reversed(messages):
            if m.get("role") == "user":
                content = m.get("content")
                prompt = (
                    content
                    if isinstance(content, str)
                    else " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
                )
                break
        with self._lock:
            style = self._chat_count
            self._chat_count += 1
        if self.chat_delay:
            time.sleep(self.chat_delay)
        if garbage:
            content: str | dict = "I'm sorry, but I can't help with that request."
        elif self.responder is not None:
            try:
                content = self.responder(body)
            except Exception as exc:  # a raising responder is a server error
                return self._send(h, 500, self._error(f"Responder failed: {exc}", "server_error"))
        else:
            context = _extract_context(prompt)
            content = _format_answer(fake_questions(context, _extract_n(prompt, context)), style)
        if isinstance(content, dict):
            return self._send(h, 200, content)
        finish_reason = "stop"
        cap = body.get("max_tokens") or body.get("max_completion_tokens")
        if cap and len(content) > 4 * int(cap):  # like a real server: cut at max_tokens (4 characters a token)
            content, finish_reason = content[: 4 * int(cap)], "length"
        prompt_tokens = max(1, len(prompt) // 4)
        completion_tokens = max(1, len(content) // 4)
        self._send(
            h,
            200,
            {
                "id": f"chatcmpl-{style}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.answer_model or body.get("model", self.model_name),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def _embeddings(self, h, body: dict, garbage: bool, bad_base64: bool = False) -> None:
        inp = body.get("input", "")
        texts = [inp] if isinstance(inp, str) else [str(t) for t in inp]
        with self._lock:
            n = self._embed_count
            self._embed_count += 1
        dim = int(body.get("dimensions") or self.dim)
        if self.dim_sequence:
            dim = self.dim_sequence[min(n, len(self.dim_sequence) - 1)]
        if self.delay_per_token:
            seconds = self.delay_per_token * sum(len(fake_tokens(t)) for t in texts)
            if self.serial:
                with self._serial_lock:
                    time.sleep(seconds)
            else:
                time.sleep(seconds)
        if garbage:
            vectors: list[Any] = []
        elif self.embed_responder is not None:
            vectors = self.embed_responder(texts, body)
        elif self.per_token:
            vectors = [[fake_embedding(tok, dim) for tok in fake_tokens(t) or ["."]] for t in texts]
            if self.per_token_offset_bug:
                flat = [x for rows in vectors for row in rows for x in row]
                pos, wrong = 0, []
                for rows in vectors:
                    wrong.append([flat[pos + j * dim : pos + (j + 1) * dim] for j in range(len(rows))])
                    pos += len(rows)
                vectors = wrong
        else:
            vectors = [fake_embedding(t, dim) for t in texts]
        if self.nan_vectors and vectors:
            vectors[0] = [float("nan")] + list(vectors[0][1:])
        b64 = body.get("encoding_format") == "base64" and not self.per_token  # like llama.cpp: floats only
        data = []
        for i, v in enumerate(vectors):
            flat = isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)
            emb: Any = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if b64 and flat else v
            if bad_base64:
                emb = "this is not base64!"
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(max(1, len(t.split())) for t in texts)
        self._send(
            h,
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model", self.model_name),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )
