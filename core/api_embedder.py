"""The OpenAI-compatible embeddings API as an :class:`~core.embedders.Embedder`, made for real servers.

OpenAI and local servers (llama.cpp, Ollama, vLLM, Text Embeddings Inference, LocalAI) answer
``/v1/embeddings`` in slightly different ways. :class:`OpenAIEmbedder` takes vectors as floats
or base64; mean-pools per-token answers (marking it in the identity); turns any other unusable
answer into an :class:`UnusableAnswer` at once, naming what the server returned; retries only
timeouts, connection errors, 429 and 5xx; and sizes its requests for slow servers. Import it
from :mod:`core.embedders`, which re-exports everything here.

Example::

    emb = OpenAIEmbedder("nomic-embed-text", base_url="http://127.0.0.1:11434/v1", api_key="none",
                         timeout=120, batch_size=32)
    vectors = emb.embed_texts(["a chunk", "another chunk"])
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Sequence

import numpy as np

from .embedders import EmbedderError, Progress, _as_f32, format_eta, format_rate
from .keys import ENV_KEY, environment_base_url, key_for, scrub
from .retry import RetryPolicy

log = logging.getLogger(__name__)


DEFAULT_API_TIMEOUT = 60.0
DEFAULT_API_BATCH_SIZE = 128
DEFAULT_API_CONCURRENCY = 1
POOLED_SUFFIX = "|pooled=mean"  # identity mark of vectors AdapterLab averaged from per-token answers


def _too_long_hint(detail: str) -> str:
    """What to change when a server refuses a text longer than it takes at once (a small context, or llama-server's
    physical batch), else ""."""
    from .llm import CONTEXT_OVERFLOW

    too_large = "too large to process" in detail.lower()  # llama-server: "increase the physical batch size"
    if not (too_large or CONTEXT_OVERFLOW.search(detail)):
        return ""
    return (
        " A chunk is longer than the server takes at once: cut the documents into smaller chunks (Documents page, "
        "Chunking settings, then Re-chunk; CLI: ingest --chunk-size), or start the server with a longer "
        + (
            "context and batch (llama-server: --ctx-size 2048 --batch-size 2048 --ubatch-size 2048)."
            if too_large
            else "context (llama.cpp: --n_ctx 2048)."
        )
    )


class UnusableAnswer(EmbedderError):
    """A 200 answer that holds no usable vectors (wrong shape, NaN, bad base64): never retried."""


class EmbeddingCancelled(EmbedderError):
    """The caller's cancel token was set while embedding through the API."""


class _BatchTimedOut(Exception):
    """A batch of several texts got no answer in time: the caller splits it."""


def describe_json(value, depth: int = 0) -> str:
    """The shape of a JSON value in words: ``a list of 12 lists of 576 numbers``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:6])
        return f"an object with keys {keys}" if value else "an empty object"
    if isinstance(value, list):
        if not value:
            return "an empty list"
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value[:50]):
            return f"a list of {len(value)} numbers"
        inner = describe_json(value[0], depth + 1) if depth < 2 else "..."
        kind = "lists" if isinstance(value[0], list) else "items"
        return f"a list of {len(value)} {kind} (the first: {inner})"
    return type(value).__name__


def _decode_b64(text: str) -> np.ndarray:
    import base64
    import binascii

    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64 ({exc})") from exc
    if not raw or len(raw) % 4:
        raise ValueError(f"base64 of {len(raw)} bytes, not a whole number of float32 values")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def parse_embedding(value) -> tuple[np.ndarray, bool]:
    """One answer item's ``embedding`` -> (vector, pooled).

    A list of numbers or a base64 string is one vector; a list of lists (or of base64 strings)
    is one vector per token, averaged here (``pooled`` True). Anything else raises ``ValueError``
    naming the shape.
    """
    if isinstance(value, str):
        return _decode_b64(value), False
    if not isinstance(value, list) or not value:
        raise ValueError(f"it is {describe_json(value)}, not a list of numbers")
    if isinstance(value[0], str):  # one base64 vector per token
        rows = [_decode_b64(v) if isinstance(v, str) else None for v in value]
        if any(r is None for r in rows) or len({r.shape[0] for r in rows}) != 1:
            raise ValueError(f"it is {describe_json(value)} of mixed kinds or lengths")
        return np.stack(rows).mean(axis=0), True
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise ValueError(f"it is {describe_json(value)}, whose parts differ in length or are not numbers") from None
    if arr.ndim == 1:
        return arr, False
    if arr.ndim == 2 and arr.shape[0] > 0 and arr.shape[1] > 0:
        return arr.mean(axis=0), True
    raise ValueError(f"it is {describe_json(value)}, an array of shape {arr.shape}")


_POOLING_NOTED: set[str] = set()
# what servers started without embeddings answer (llama-cpp-python: 500; llama-server: 501)
_EMBEDDINGS_OFF = re.compile(r"embedding=True|does not support embeddings|--embeddings?\b", re.I)


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint through the ``openai`` client.

    Works with OpenAI and with local servers whose answers differ in small ways: vectors as
    floats or base64, and per-token answers (one vector per token, from a model with no pooling,
    e.g. llama.cpp's Python server), which are mean-pooled here and marked in the identity
    (``...|pooled=mean``) so the cache never mixes them with a server's own pooled vectors, and
    asked one text per request (llama-cpp-python's server returns wrong token vectors for all but
    the first text of a request). Any
    other unusable answer (no vectors, a wrong count, a changing dimension, NaN/inf, bad base64)
    is an :class:`UnusableAnswer` at once; only timeouts, connection errors, 429 and 5xx are
    retried (a timed-out single text with a doubled wait each time). Requests are sized by the measured speed of the server (at most what it answers in
    half the timeout, and at most ``batch_size`` texts); a batch of several texts that still times
    out is split in halves (down to one text) and the size that worked is kept for the rest of
    this embedder's life.

    Args:
        model: e.g. ``"text-embedding-3-small"``.
        base_url / api_key: default to ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``; the
            environment's key is sent only to the environment's endpoint, so another
            ``base_url`` needs its own ``api_key`` (:func:`core.keys.key_for`). The key is kept
            in memory only: never in the identity, the cache, a log, a message, an error or a file.
        batch_size: texts per request (at most). timeout: seconds to wait for one answer.
        concurrency: requests in flight at once (1 suits a local server, which works on one
            request at a time anyway). None of these changes the vectors, so none is in the identity.
        max_retries / backoff: retries on 429, 5xx, timeouts and connection errors, by the
            retry policy shared with the chat client (:class:`core.retry.RetryPolicy`: exponential
            backoff with jitter, honouring ``Retry-After``).
        cancel: a ``threading.Event`` (settable later as ``.cancel``): once set, a retry wait ends
            at once, no new request starts, and :class:`EmbeddingCancelled` is raised.
    """

    #: tokens OpenAI's embedding models read; another server's model and context are unknown, so chunks are sized
    #: for :data:`OTHER_SERVER_MAX_TOKENS` there (auto chunking, the "truncated" count): a local server such as
    #: llama.cpp's cuts a longer text at its context without a word, embedding its start only
    OPENAI_MAX_TOKENS = 8191
    OTHER_SERVER_MAX_TOKENS = 512

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = DEFAULT_API_BATCH_SIZE,
        max_retries: int = 5,
        timeout: float = DEFAULT_API_TIMEOUT,
        backoff: float = 1.0,
        dimension: int | None = None,
        concurrency: int = DEFAULT_API_CONCURRENCY,
        cancel=None,
    ):
        check_api_options(timeout=timeout, batch_size=batch_size, concurrency=concurrency)
        self.model_name = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._api_key = key_for(base_url, api_key)
        self.batch_size = int(batch_size)
        self.concurrency = int(concurrency)
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.backoff = backoff
        self._dimension = dimension
        self.host = (self.base_url or "https://api.openai.com/v1").rstrip("/")
        # what auto chunking fits: OpenAI's models read 8191 tokens; another server's context is unknown (a BERT-style
        # embedding model reads 512, and llama.cpp truncates past its context silently), so 512 there
        self.max_seq_length = self.OPENAI_MAX_TOKENS if "api.openai.com" in self.host else self.OTHER_SERVER_MAX_TOKENS
        self.pooling: str | None = None  # None until the server answers: "native" or "mean"
        self._batch_limit: int | None = None  # the batch size that worked after a timeout
        self._secs_per_char: float | None = None  # how fast the server answers, measured
        self._last_ok: int | None = None  # texts in the last request that was answered
        self._encoding: str | None = None  # None: the client's default (base64); "float" if base64 is refused
        self._lock = threading.Lock()
        self._client = None
        self.cancel = cancel  # a threading.Event (or anything with is_set()): stops waits and new requests

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy shared with the chat client, with this embedder's settings."""
        return RetryPolicy(max_retries=self.max_retries, backoff=self.backoff, max_backoff=60.0)

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise EmbeddingCancelled(f"Embedding via {self._where()} was cancelled; texts already embedded are cached.")

    def __repr__(self) -> str:
        return f"OpenAIEmbedder(model={self.model_name!r}, base_url={self.base_url!r})"

    @property
    def identity(self) -> str:
        """``openai:MODEL@URL``, plus ``|pooled=mean`` once the server has answered per token."""
        base = f"openai:{self.model_name}@{self.host}"
        return base + POOLED_SUFFIX if self.pooling == "mean" else base

    @property
    def identity_settled(self) -> bool:
        """False until an answer has shown whether the server pools (the identity may still change)."""
        return self.pooling is not None

    @property
    def identity_candidates(self) -> list[str]:
        """The identities this embedder may settle on: native vectors, or per-token ones pooled here."""
        base = f"openai:{self.model_name}@{self.host}"
        return [base, base + POOLED_SUFFIX]

    @property
    def options(self) -> dict:
        """The request settings (recorded with a run; not part of the identity)."""
        return {"api_timeout": self.timeout, "api_batch_size": self.batch_size, "api_concurrency": self.concurrency}

    @property
    def cache_chunk(self) -> int:
        """Texts :class:`core.embedders.CachedEmbedder` hands over at a time, caching each hand's answers before the
        next: one round of requests (a text a request when the server answers per token), so a run that fails
        half-way keeps what the server answered instead of losing up to 511 texts of work."""
        per_request = 1 if self.pooling == "mean" else self.batch_size
        return max(1, per_request * self.concurrency)

    @property
    def progress_note(self) -> str:
        notes = []
        if self.pooling == "mean":
            notes.append("per-token vectors mean-pooled")
        if self._batch_limit is not None:
            notes.append(f"batches of {self._batch_limit} after a timeout")
        return " · ".join(notes)

    @property
    def client(self):
        if self._client is None:
            if not self._api_key:
                if os.environ.get(ENV_KEY):
                    raise EmbedderError(
                        f"No API key for the embeddings model {self.model_name!r} at {self.base_url}: "
                        f"{ENV_KEY} is only sent to {environment_base_url()}. Enter a key for this endpoint "
                        "(it is kept in memory only; a local server that needs no key accepts any value, "
                        "e.g. none)."
                    )
                raise EmbedderError(
                    f"No API key for the embeddings model {self.model_name!r}: set OPENAI_API_KEY "
                    "(or enter a key in the dashboard; it is kept in memory only). A local server "
                    "that needs no key accepts any value, e.g. OPENAI_API_KEY=none."
                )
            import openai

            self._client = openai.OpenAI(
                api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout
            )
        return self._client

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._embed_batch(["dimension probe"])
        return int(self._dimension)

    def count_tokens(self, text: str) -> int:
        return max(1, math.ceil(len(text) / 4))

    # -- one request ----------------------------------------------------------------------------
    def _where(self) -> str:
        return f"{self.model_name!r} at {self.host}"

    def _safe(self, text: object, limit: int = 300) -> str:
        """Server text fit for a message: never an API key (:func:`core.keys.scrub`), never a page long."""
        return scrub(text, self._api_key, limit=limit)

    def _unusable(self, what: str, change: str) -> UnusableAnswer:
        return UnusableAnswer(
            f"The embeddings endpoint for {self._where()} answered, but {what}. {change} "
            "(Not retried: the same request would get the same answer.)"
        )

    def _parse(self, body: bytes, n: int) -> np.ndarray:
        import json

        try:
            payload = json.loads(body)
        except ValueError:
            raise self._unusable(
                f"its answer is not JSON: {self._safe(body[:200].decode('utf-8', 'replace'))!r}",
                "Check that the base URL points at an OpenAI-compatible API (it usually ends in /v1).",
            ) from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            error = payload.get("error") if isinstance(payload, dict) else None
            if error:
                what = f"with an error instead of vectors: {self._safe(error)}"
            elif isinstance(payload, dict) and "embeddings" in payload:
                what = "with an 'embeddings' field (a native, non-OpenAI answer) instead of a 'data' list"
            else:
                what = f"with {describe_json(payload)} instead of an object holding a 'data' list"
            raise self._unusable(what, "Use the server's OpenAI-compatible route (usually /v1) as the base URL.")
        if not data:
            raise self._unusable(
                f"'data' is empty: no vectors for {n} input{'s' * (n != 1)}",
                f"Check that {self.model_name!r} is an embedding model the server serves with embeddings "
                "enabled (llama.cpp: --embedding true).",
            )
        if len(data) != n:
            raise self._unusable(
                f"it returned {len(data)} vectors for {n} inputs",
                "The server may cap the inputs per request: lower the batch size (--api-batch-size).",
            )
        if all(isinstance(d, dict) and isinstance(d.get("index"), int) for d in data):
            data = sorted(data, key=lambda d: d["index"])
        vectors, pooled = [], []
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "embedding" not in item:
                raise self._unusable(
                    f"data[{i}] is {describe_json(item)} without an 'embedding'",
                    "Use a server with an OpenAI-compatible /embeddings route.",
                )
            try:
                vec, was_pooled = parse_embedding(item["embedding"])
            except ValueError as exc:
                raise self._unusable(
                    f"the embedding in data[{i}] is unusable: {exc}",
                    "Check the server's embeddings settings and encoding_format.",
                ) from None
            vectors.append(vec)
            pooled.append(was_pooled)
        dims = sorted({v.shape[0] for v in vectors})
        if len(dims) > 1:
            raise self._unusable(
                f"its vectors have different lengths in one answer ({dims})",
                "Check the server's model and pooling settings.",
            )
        if len(set(pooled)) > 1:
            raise self._unusable(
                "it mixed per-token and per-text vectors in one answer", "Check the server's pooling settings."
            )
        arr = _as_f32(np.stack(vectors))
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr).all(axis=1)).sum())
            raise self._unusable(
                f"{bad} of its {n} vectors hold NaN or infinite values",
                "The model or its quantisation is broken for these inputs: try another model file or server.",
            )
        self._settle(pooled[0], arr.shape[1])
        return arr

    def _settle(self, pooled: bool, dim: int) -> None:
        """Record how the server answers and check it never changes within a run."""
        with self._lock:
            if self._dimension is not None and dim != self._dimension:
                raise self._unusable(
                    f"its vectors now have {dim} numbers where earlier answers had {self._dimension}",
                    "The server changed model (or its dimensions setting) in the middle of the run: serve one "
                    "model under this name, then run again (cached vectors are kept per model).",
                )
            mode = "mean" if pooled else "native"
            if self.pooling is not None and mode != self.pooling:
                raise self._unusable(
                    "it switched between one vector per text and one vector per token during the run",
                    "Serve the model with fixed pooling settings, then run again.",
                )
            self._dimension = dim
            self.pooling = mode
        if pooled and self.identity not in _POOLING_NOTED:
            _POOLING_NOTED.add(self.identity)
            log.warning(
                "embeddings %s: the server answers one vector per token (a model served without pooling); "
                "AdapterLab averages them into one vector per text (mean pooling) and sends one text per "
                "request (llama-cpp-python's server returns wrong token vectors for every text after the first "
                "of a request). These vectors are cached apart from pooled ones, as %s. For the model's own "
                "pooling, serve it with pooling on (llama.cpp's llama-server: --pooling mean).",
                self._where(),
                self.identity,
            )

    def _request(self, batch: list[str]) -> np.ndarray:
        import openai

        last: Exception | None = None
        attempts = 0
        timeout = self.timeout
        while attempts <= self.max_retries:
            self._check_cancel()
            attempts += 1
            try:
                extra = {"encoding_format": self._encoding} if self._encoding else {}
                started = time.monotonic()
                raw = self.client.embeddings.with_raw_response.create(
                    model=self.model_name, input=batch, timeout=timeout, **extra
                )
                vectors = self._parse(raw.http_response.content, len(batch))
                self._observe(time.monotonic() - started, sum(len(t) for t in batch), len(batch))
                return vectors
            except openai.AuthenticationError:
                raise EmbedderError(
                    f"The embeddings endpoint rejected the API key (401) for {self._where()}: check OPENAI_API_KEY."
                ) from None  # the server's text may echo the key: never chain it
            except openai.RateLimitError as exc:
                last = exc
            except openai.APITimeoutError as exc:
                if len(batch) > 1:
                    raise _BatchTimedOut() from exc
                last = exc
                # A server that works on one request at a time is still busy with the copy we gave up
                # on, so the same wait would time out again: double it (up to 8 times the timeout).
                timeout = min(timeout * 2, self.timeout * 8)
            except openai.APIConnectionError as exc:
                last = exc
            except openai.APIStatusError as exc:
                detail = self._safe(getattr(exc, "message", None) or exc)
                if exc.status_code >= 500 and _EMBEDDINGS_OFF.search(detail):
                    raise EmbedderError(  # a server started without embeddings: retrying cannot help
                        f"The embeddings endpoint for {self._where()} answered {exc.status_code}: {detail}. Start the "
                        "server with embeddings on (llama.cpp's Python server: --embedding true; llama-server: "
                        "--embeddings)."
                    ) from None
                if exc.status_code >= 500 and _too_long_hint(detail):  # the same chunk fails again: no retry
                    raise EmbedderError(
                        f"The embeddings endpoint for {self._where()} answered {exc.status_code}: {detail}."
                        f"{_too_long_hint(detail)}"
                    ) from None
                if exc.status_code >= 500:
                    last = exc
                else:
                    if (
                        exc.status_code in (400, 422)
                        and self._encoding is None
                        and ("encoding_format" in detail or "base64" in detail)
                    ):
                        self._encoding = "float"  # a server that only speaks floats: ask for them
                        attempts -= 1
                        continue
                    hint = (
                        " Lower the batch size (--api-batch-size)."
                        if exc.status_code == 413
                        else " Serve the model with pooling on (llama.cpp's llama-server: --pooling mean)."
                        if "pooling" in detail.lower()
                        else _too_long_hint(detail)
                    )
                    raise EmbedderError(
                        f"The embeddings endpoint refused the request ({exc.status_code}) for {self._where()}: "
                        f"{detail}.{hint}"
                    ) from None
            if attempts <= self.max_retries:
                wait = self.retry_policy.delay(attempts - 1, last)
                log.warning(
                    "embeddings %s: %s; retry %d in %.1fs", self.model_name, type(last).__name__, attempts, wait
                )
                if self.retry_policy.sleep(wait, self.cancel):
                    break
        self._check_cancel()
        if isinstance(last, openai.APITimeoutError):
            raise EmbedderError(
                f"The embeddings endpoint for {self._where()} gave no answer, even for a single text, in "
                f"{attempts} attempts (waiting {self.timeout:g} s, then up to {timeout / 2:g} s). The server "
                "is slower than the timeout: raise it "
                "(--api-timeout, or Timeout in the dashboard). Texts already embedded are cached."
            ) from None
        kind = f"{type(last).__name__}: {self._safe(last, 200)}" if last else "error"
        raise EmbedderError(
            f"The embeddings endpoint for {self._where()} kept failing ({kind}) after {attempts} attempts. "
            "Check the service and try again; texts already embedded are cached and will not be sent again."
        ) from None

    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        """One request; on a timeout, the two halves (recursively, down to one text)."""
        try:
            vectors = self._request(batch)
            if self.pooling == "mean" and len(batch) > 1:
                # Per-token answers are only trusted one text per request: llama-cpp-python's server
                # (0.3.36) reads the token vectors of every text after the first at a wrong offset.
                vectors = np.concatenate([vectors[:1], *(self._request([t]) for t in batch[1:])])
            return vectors
        except _BatchTimedOut:
            half = (len(batch) + 1) // 2
            with self._lock:
                if self._batch_limit is None or half < self._batch_limit:
                    self._batch_limit = half
                    log.warning(
                        "embeddings %s: no answer within %g s for %d texts; splitting, and sending at most %d "
                        "per request from now on (--api-timeout / --api-batch-size change this)",
                        self.model_name,
                        self.timeout,
                        len(batch),
                        half,
                    )
            return np.concatenate([self._embed_batch(batch[:half]), self._embed_batch(batch[half:])])

    def _observe(self, seconds: float, chars: int, n: int) -> None:
        """Learn the server's speed from an answer: slow-downs at once, speed-ups by half. Answers
        much quicker than the timeout (a cloud API's, mostly latency) teach nothing to fear."""
        with self._lock:
            self._last_ok = n
            if seconds < 0.05 * self.timeout:
                return
            rate = seconds / max(chars, 1)
            old = self._secs_per_char
            self._secs_per_char = rate if old is None or rate > old else (old + rate) / 2

    def _next_size(self, texts: Sequence[str] = (), start: int = 0) -> int:
        """Texts for the next request from ``start``: at most the batch size (or the size that worked
        after a timeout), at most 8 times the last answered request, and no more than the measured
        speed answers in half the timeout, so a slow local server is not sent a batch it cannot
        finish in time (and then keeps working on after we gave up)."""
        if self.pooling == "mean":
            return 1  # see _embed_batch
        size = min(self.batch_size, self._batch_limit or self.batch_size)
        if self._last_ok is not None:
            size = min(size, 8 * self._last_ok)
        if self._secs_per_char is None or not texts:
            return size
        budget = 0.5 * self.timeout / self._secs_per_char  # characters
        n, chars = 0, 0
        for text in texts[start : start + size]:
            chars += len(text)
            if n and chars > budget:
                break
            n += 1
        return max(n, 1)

    # -- many texts -----------------------------------------------------------------------------
    def _embed(self, texts: Sequence[str], progress: Progress | None) -> np.ndarray:
        texts = list(texts)
        n = len(texts)
        if not n:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        started = time.monotonic()
        out: dict[int, np.ndarray] = {}
        done = 0

        def report() -> None:
            if progress:
                per_s = done / max(time.monotonic() - started, 1e-6)
                left = f" · {format_eta((n - done) / per_s)} left" if 0 < done < n else ""
                note = self.progress_note
                progress(
                    done, n, f"embedding via API · {format_rate(per_s)} texts/s{left}" + (f" · {note}" if note else "")
                )

        if self.concurrency <= 1:
            pos = 0
            while pos < n:
                self._check_cancel()
                part = texts[pos : pos + self._next_size(texts, pos)]
                out[pos] = self._embed_batch(part)
                pos += len(part)
                done = pos
                report()
        else:
            import queue

            results: queue.Queue = queue.Queue()
            cursor = [0]
            stop = threading.Event()

            def take():
                self._check_cancel()
                with self._lock:
                    if stop.is_set() or cursor[0] >= n:
                        return None
                    start = cursor[0]
                    cursor[0] += self._next_size(texts, start)
                return start, texts[start : cursor[0]]

            def worker() -> None:
                try:
                    while (job := take()) is not None:
                        start, part = job
                        results.put((start, part, self._embed_batch(part), None))
                except BaseException as exc:  # delivered to the calling thread
                    stop.set()
                    results.put((None, None, None, exc))

            for _ in range(min(self.concurrency, math.ceil(n / self._next_size()))):
                threading.Thread(target=worker, name="embed-api", daemon=True).start()
            while done < n:
                start, part, vecs, exc = results.get()
                if exc is not None:
                    stop.set()
                    raise exc
                out[start] = vecs
                done += len(part)
                report()
        return np.concatenate([out[k] for k in sorted(out)])

    def embed_queries(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self._embed(texts, progress)

    def embed_texts(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self._embed(texts, progress)


def check_api_options(
    timeout: float | None = None, batch_size: int | None = None, concurrency: int | None = None
) -> None:
    """Raise a clear :class:`EmbedderError` for an unusable timeout, batch size or concurrency."""
    if timeout is not None and not (float(timeout) > 0):
        raise EmbedderError(f"The API timeout must be more than 0 seconds, got {timeout}.")
    if batch_size is not None and int(batch_size) < 1:
        raise EmbedderError(f"The API batch size must be at least 1, got {batch_size}.")
    if concurrency is not None and int(concurrency) < 1:
        raise EmbedderError(f"The API concurrency must be at least 1, got {concurrency}.")
