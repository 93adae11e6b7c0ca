"""One OpenAI-compatible chat client: timeouts, retries with backoff, bounded concurrency, estimates.

The same client talks to OpenAI itself and to any server that speaks its chat API (vLLM,
Ollama, LM Studio, a local test server): set ``base_url``. Model, base URL and key come from
:class:`LLMSettings`, falling back to ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``.

The API key is held in memory only. It is hidden from ``repr``, never put in a log message,
an exception message, a file or the workspace catalog; error text coming back from a server
goes through :func:`core.keys.scrub` before it is shown. ``OPENAI_API_KEY`` is sent only to
the environment's endpoint (``OPENAI_BASE_URL`` or OpenAI): a base URL given in the settings
needs its own key (:func:`core.keys.key_for`).

Token counts and prices (:func:`estimate_tokens`, :data:`PRICES_PER_MTOK`) live here; filling the
question prompt and estimating a whole generation (``fill_prompt``, ``estimate_generation``) live
where questions are made, in :mod:`core.generators`.

Example::

    client = ChatClient(LLMSettings(model="gpt-4o-mini"))
    text = client.complete([{"role": "user", "content": "Ask me one question about tides."}])

    # many prompts, at most ``concurrency`` in flight, each result delivered as it finishes
    client.map_complete(list_of_messages, on_result=lambda i, r: print(i, r))
"""

from __future__ import annotations

import dataclasses
import http
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from .keys import ENV_BASE_URL, ENV_KEY, environment_base_url, key_for, scrub
from .retry import RetryPolicy, retry_after

log = logging.getLogger(__name__)

# The error kinds an LLMError can have.
ERROR_KINDS = ("auth", "rate_limit", "server", "timeout", "connection", "bad_response", "bad_request", "cancelled")
RETRYABLE_KINDS = frozenset({"rate_limit", "server", "timeout", "connection"})
#: Retries of a connection error (refused, name not resolved) while the server has never answered this client: a
#: server that is down or a wrong base URL fails in a few seconds instead of ``max_retries`` backoffs (a minute).
#: Once the server has answered, connection errors get every retry (a server restarting mid-run comes back).
UNREACHED_RETRIES = 2
#: A request that timed out is retried with twice the previous wait, up to this many times ``LLMSettings.timeout``:
#: a slow local server (one request at a time, still working on the one given up on) answers a patient retry,
#: while the same short wait would time out again and again.
MAX_TIMEOUT_FACTOR = 4


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


# ------------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class LLMSettings:
    """Where and how to call the chat model.

    Args:
        model: the chat model name, e.g. ``"gpt-4o-mini"`` or a local server's model.
        base_url: an OpenAI-compatible endpoint (``http://localhost:8000/v1``); ``None`` means
            ``OPENAI_BASE_URL`` or, failing that, OpenAI itself.
        api_key: kept in memory only and hidden from ``repr``; ``None`` means ``OPENAI_API_KEY``,
            but only when ``base_url`` is ``None`` or the environment's own endpoint: a key
            from the environment is never sent to another URL. A local server that needs no
            key works without one when ``base_url`` is set.
        timeout: seconds to wait for one answer before retrying; each retry after a timeout waits
            twice as long as the last, up to :data:`MAX_TIMEOUT_FACTOR` times this.
        max_retries: retries after the first attempt on 429, 5xx, timeouts and connection errors.
        concurrency: requests in flight at once in :meth:`ChatClient.map_complete`.
        temperature: sampling temperature.
        backoff: base delay in seconds of the exponential backoff (``backoff * 2**attempt``,
            with jitter); ``max_backoff`` caps one wait, ``Retry-After`` included.
    """

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    max_retries: int = 5
    concurrency: int = 4
    temperature: float = 0.2
    backoff: float = 1.0
    max_backoff: float = 60.0

    def __post_init__(self) -> None:
        if not self.model or not str(self.model).strip():
            raise ValueError("LLMSettings.model must name a chat model, e.g. 'gpt-4o-mini'.")
        if self.timeout <= 0:
            raise ValueError(f"LLMSettings.timeout must be > 0 seconds, got {self.timeout}.")
        if self.max_retries < 0:
            raise ValueError(f"LLMSettings.max_retries must be >= 0, got {self.max_retries}.")
        if self.concurrency < 1:
            raise ValueError(f"LLMSettings.concurrency must be >= 1, got {self.concurrency}.")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("LLMSettings.backoff and max_backoff must be >= 0.")

    def resolved(self) -> LLMSettings:
        """A copy with ``base_url`` filled from the environment where unset, and ``api_key`` from
        the environment only for the environment's endpoint (see :func:`core.keys.key_for`)."""
        return dataclasses.replace(
            self,
            api_key=key_for(self.base_url, self.api_key),
            base_url=self.base_url or os.environ.get(ENV_BASE_URL) or None,
        )

    def public_dict(self) -> dict[str, Any]:
        """The settings without the key (safe to show, log or save)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.pop("api_key")
        return d


def key_status(settings: LLMSettings | None) -> str:
    """Where the key comes from, in words; never shows any character of the key."""
    env_key = os.environ.get(ENV_KEY) or None
    own = settings.api_key if settings is not None else None
    if own:
        return f"key set (from {ENV_KEY})" if env_key and own == env_key else "key set (entered in this session)"
    if env_key:
        if key_for(settings.base_url if settings is not None else None) is None:
            return (
                f"no key for this base URL ({ENV_KEY} is only sent to {environment_base_url()}; "
                "type a key for this one, or none for a local server that needs none)"
            )
        return f"key set (from {ENV_KEY})"
    return "no key"


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
class LLMError(Exception):
    """A chat call that failed; ``kind`` is one of :data:`ERROR_KINDS` and the message says what to do."""

    def __init__(self, message: str, kind: str = "server", status: int | None = None, never_answered: bool = False):
        super().__init__(message)
        self.kind = kind
        self.status = status
        #: a connection error from a client the server never answered (down, or a wrong base URL), not one mid-run
        self.never_answered = never_answered
        #: the message's parts: what happened, what the server said, what to do (only ``what`` when it is one piece)
        self.what, self.said, self.advice = message, "", ""

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


def _scrub(text: str, key: str | None) -> str:
    """``text`` through the shared scrubber (:func:`core.keys.scrub`), shortened for display."""
    return scrub(text, key, limit=300)


_retry_after = retry_after  # the shared policy's (core.retry); kept under its old name

#: Statuses that say the base URL is not an OpenAI-compatible API at all (a web app, a static file server): 405
#: Method Not Allowed (it takes no POST there), 501 Not Implemented.
NOT_AN_API_STATUS = frozenset({405, 501})
NOT_AN_API_ADVICE = (
    "Check the base URL: it should be the server's OpenAI-compatible endpoint, which usually ends in /v1 "
    "(e.g. http://localhost:8000/v1)."
)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _error(what: str, advice: str, said: str = "", **kw: Any) -> LLMError:
    """An :class:`LLMError` reading "<what happened>[: <what the server said>]. <what to do>", the parts kept
    (``what``, ``said``, ``advice``) so a retry loop can add how many attempts it made."""
    err = LLMError(_sentence(f"{what}: {said}" if said else what) + (f" {advice}" if advice else ""), **kw)
    err.what, err.said, err.advice = what, said, advice
    return err


#: what servers say when a prompt does not fit the model's context: OpenAI's "maximum context length is 8192
#: tokens", llama.cpp's "Requested tokens (600) exceed context window of 512", vLLM's "longer than the maximum
#: model length", and the like
CONTEXT_OVERFLOW = re.compile(
    r"context (?:length|window|size)|maximum (?:model )?(?:context|length)|n_ctx|too many tokens|"
    r"(?:prompt|input) is too long",
    re.IGNORECASE,
)


def _not_an_api(host: str, how: str) -> LLMError:
    return _error(f"{host} is not an OpenAI-compatible API: {how}", NOT_AN_API_ADVICE, kind="bad_request")


def _status_text(code: int) -> str:
    """``405 Method Not Allowed``; the number alone for a status Python does not know."""
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype html", "<html", "<head", "<body", "<?xml")) or (
        head.startswith("<") and "<html" in text[:2000].lower()
    )


def _server_said(exc: BaseException, key: str | None) -> tuple[str, bool]:
    """What the server said in an error, as plain text (its error message, not the ``openai`` client's
    "Error code: 404 - ..." wrapping), scrubbed of the key; and whether it answered with a web page (HTML), which
    no OpenAI-compatible API does (then no text: a page's markup says nothing useful)."""
    body = getattr(exc, "body", None)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        ctype = str(headers.get("content-type") or "").lower()
    except Exception:
        ctype = ""
    text: Any = ""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            text = inner.get("message") or inner.get("detail") or ""
        elif isinstance(inner, str):
            text = inner
        text = text or body.get("detail") or body.get("message") or ""
        if isinstance(text, list):  # FastAPI's 422 detail: [{"loc": ["body", "messages"], "msg": "field required"}]
            text = "; ".join(
                f"{'.'.join(map(str, p.get('loc') or []))}: {p.get('msg')}" if isinstance(p, dict) else str(p)
                for p in text
            )
        elif not isinstance(text, str):
            text = json.dumps(text, default=str)
    elif isinstance(body, str):
        text = body
    if "html" in ctype or (isinstance(text, str) and _looks_like_html(text)):
        return "", True
    if not text:
        text = re.sub(r"^Error code: \d{3}(?: - )?", "", str(getattr(exc, "message", None) or exc))
    text = " ".join(str(text).split())
    code = getattr(exc, "status_code", None)
    if code and text.lower().strip(". ") in (_status_text(code).lower(), _status_text(code).lower()[4:]):
        return "", False  # "Not Found" says no more than the status
    return (_scrub(text, key) if text else ""), False


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    """One chat completion: its text, why it ended (``"stop"``; ``"length"`` when cut at ``max_tokens``) and the
    model the server says answered (``None`` when it names none; a local server may name a file path)."""

    text: str
    finish_reason: str | None = None
    model: str | None = None

    @property
    def truncated(self) -> bool:
        """Cut at ``max_tokens``: the last line may be unfinished."""
        return self.finish_reason == "length"


_MODEL_FILE = re.compile(r"\.(gguf|ggml|bin|safetensors|onnx|pt|pth|llamafile)$", re.I)


def model_display_name(name: str | None) -> str | None:
    """The name to show for the model a server says answered: a file path's file name (llama.cpp answers with
    the ``.gguf`` it loaded: ``/models/SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``SmolLM2-135M-Instruct.Q4_1.gguf``),
    any other name as it is (``gpt-4o-mini-2024-07-18``, ``meta-llama/Llama-3.1-8B-Instruct``, ``qwen2.5:7b``)."""
    if name is None or not str(name).strip():
        return None
    name = str(name).strip()
    is_path = (
        name.startswith(("/", "~", "./", "../", "\\"))
        or "\\" in name
        or re.match(r"^[A-Za-z]:[\\/]", name) is not None
        or _MODEL_FILE.search(name) is not None
    )
    if is_path:
        return re.split(r"[\\/]", name.rstrip("\\/"))[-1] or name
    return name


def _refuses_max_tokens(exc: BaseException) -> bool:
    """A 400 saying the model takes no ``max_tokens`` (OpenAI's reasoning models: "Unsupported parameter:
    'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.")."""
    import openai

    if not isinstance(exc, openai.BadRequestError):
        return False
    text = str(getattr(exc, "message", "") or exc).lower()
    return "max_tokens" in text and any(w in text for w in ("unsupported", "not supported", "max_completion_tokens"))


# ------------------------------------------------------------------------------------------------
# bounded concurrency
# ------------------------------------------------------------------------------------------------
def run_bounded(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    concurrency: int = 4,
    on_result: Callable[[int, Any], None] | None = None,
    cancel: CancelToken | None = None,
) -> list[Any]:
    """Call ``fn(item)`` for every item with at most ``concurrency`` calls in flight.

    ``on_result(index, result_or_exception)`` is called **in the calling thread**, one result at
    a time, as each call finishes (so it may write to SQLite without locking). An exception
    raised by ``fn`` is delivered, not raised. Once ``cancel.is_set()``, no new call starts;
    calls already in flight finish and are still delivered. Returns the results in input
    order, ``None`` for items never started.
    """
    results: list[Any] = [None] * len(items)
    if not items:
        return results
    concurrency = max(1, int(concurrency))
    if concurrency == 1:  # no threads needed: simpler tracebacks, same contract
        for i, item in enumerate(items):
            if cancel is not None and cancel.is_set():
                break
            try:
                results[i] = fn(item)
            except Exception as exc:  # delivered, not raised
                results[i] = exc
            if on_result is not None:
                on_result(i, results[i])
        return results
    next_i = 0
    pending: dict[Future, int] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm") as pool:
        while True:
            while next_i < len(items) and len(pending) < concurrency and not (cancel is not None and cancel.is_set()):
                pending[pool.submit(fn, items[next_i])] = next_i
                next_i += 1
            if not pending:
                break
            done, _ = wait(list(pending), timeout=0.25, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                exc = fut.exception()
                results[i] = exc if exc is not None else fut.result()
                if on_result is not None:
                    on_result(i, results[i])
    return results


# ------------------------------------------------------------------------------------------------
# the chat client
# ------------------------------------------------------------------------------------------------
class ChatClient:
    """An OpenAI-compatible chat client with our own retry loop (the ``openai`` client's is off).

    Retries (``settings.max_retries`` times) on 429, 5xx, timeouts and connection errors, with
    exponential backoff and jitter, honouring ``Retry-After``. Never retries 401/403 (a wrong
    key) or 400/404/422 (a wrong model or request). A connection error before the server has
    ever answered this client is retried only :data:`UNREACHED_RETRIES` times (``reached`` says
    whether it has answered). Thread-safe: one client may serve many threads.

    Args:
        settings: :class:`LLMSettings`; missing key/base URL are taken from the environment.
        sleep: injectable ``sleep(seconds)`` for tests (default: waits on the cancel event
            when one is given, else ``time.sleep``).
    """

    def __init__(self, settings: LLMSettings | None = None, *, sleep: Callable[[float], None] | None = None):
        self.settings = (settings or LLMSettings()).resolved()
        self._sleep = sleep
        self._client = None
        self._lock = threading.Lock()
        self.reached = False  # the server has answered this client at least once (any HTTP answer, errors too)
        self._served: list[str] | None = None  # the models the server lists (served_models), asked once
        self._served_asked = False
        self._served_lock = threading.Lock()
        self._max_tokens_ok = True  # False once the model refused max_tokens (then it is not sent)

    def __repr__(self) -> str:
        return f"ChatClient(model={self.settings.model!r}, base_url={self.settings.base_url!r})"

    @property
    def host(self) -> str:
        return (self.settings.base_url or "https://api.openai.com/v1").rstrip("/")

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                key = self.settings.api_key
                if not key:
                    if not self.settings.base_url:
                        raise LLMError(
                            f"No API key: set {ENV_KEY} or enter a key in the settings (it is kept in memory "
                            "only). For a local OpenAI-compatible server, set its base URL instead.",
                            kind="auth",
                        )
                    key = "no-key-required"  # local servers usually accept any key
                import openai

                self._client = openai.OpenAI(
                    api_key=key, base_url=self.settings.base_url, timeout=self.settings.timeout, max_retries=0
                )
            return self._client

    # -- one call -----------------------------------------------------------------------------
    def _classify(self, exc: BaseException, timeout: float | None = None) -> LLMError:
        """Turn an ``openai`` exception into an :class:`LLMError`: one sentence of what happened (with what the
        server said, scrubbed), one of what to do (``timeout``: the wait that ran out)."""
        import openai

        s = self.settings
        key = s.api_key
        where = f"{s.model!r} at {self.host}"
        if isinstance(exc, openai.APITimeoutError):
            longer = f" (retries waited up to {timeout:g} s)" if timeout and timeout > s.timeout else ""
            return _error(
                f"No answer from {where} within {s.timeout:g} s{longer}",
                "The server may be overloaded: try again later, raise the timeout or lower the concurrency.",
                kind="timeout",
            )
        if isinstance(exc, openai.APIConnectionError):
            return _error(
                f"Could not connect to {self.host}",
                "Check the base URL and that the server is running (and reachable from this machine).",
                kind="connection",
            )
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            # The server's own text may echo part of the key: never show it.
            hint = ""
            if not s.api_key and os.environ.get(ENV_KEY):
                hint = (
                    f" No key was sent: {ENV_KEY} goes only to {environment_base_url()}, so a base URL "
                    "entered here needs its own key."
                )
            return _error(
                f"{self.host} rejected the API key ({exc.status_code})",
                f"Check {ENV_KEY} or the key entered in the settings, and that it may use this model.{hint}",
                kind="auth",
                status=exc.status_code,
            )
        said, web_page = _server_said(exc, key)
        if isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            if code in NOT_AN_API_STATUS or (web_page and 400 <= code < 500):
                return _not_an_api(self.host, f"it answered {_status_text(code)}{' with a web page' * web_page}")
        if isinstance(exc, openai.RateLimitError):
            return _error(
                f"{where} is rate limiting us (429)",
                "Lower the concurrency, wait, or check your account's quota.",
                said=said,
                kind="rate_limit",
                status=429,
            )
        if isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            if code >= 500:
                return _error(
                    f"{where} had a server error ({code})", "Try again later.", said=said, kind="server", status=code
                )
            if code == 404:
                return _error(
                    f"{where} answered 404 (not found)",
                    "Check the model name and the base URL (an OpenAI-compatible one usually ends in /v1).",
                    said=said,
                    kind="bad_request",
                    status=code,
                )
            if CONTEXT_OVERFLOW.search(said or ""):  # llama.cpp's small default context, or a long chunk
                return _error(
                    f"{where} refused the request ({_status_text(code)}): the prompt is longer than the model's "
                    "context window",
                    "Cut the documents into smaller chunks (Documents page, Chunking settings, then Re-chunk; CLI: "
                    "ingest --chunk-size), shorten the prompt template, or give the model a longer context (a "
                    "llama.cpp server: --n_ctx 4096).",
                    said=said,
                    kind="bad_request",
                    status=code,
                )
            return _error(
                f"{where} refused the request ({_status_text(code)})",
                "Check the model name and the settings.",
                said=said,
                kind="bad_request",
                status=code,
            )
        if isinstance(exc, (openai.APIResponseValidationError, ValueError)):
            return _error(
                f"{where} sent an answer that is not a valid chat completion",
                "Check that the base URL is an OpenAI-compatible endpoint (it usually ends in /v1).",
                said=said,
                kind="bad_response",
            )
        return _error(
            f"Calling {where} failed ({type(exc).__name__})",
            "Check the base URL and the server, and try again.",
            said=said,
            kind="server",
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        """The shared retry policy (:mod:`core.retry`) with this client's settings."""
        s = self.settings
        return RetryPolicy(max_retries=s.max_retries, backoff=s.backoff, max_backoff=s.max_backoff, sleeper=self._sleep)

    def _wait(self, seconds: float, cancel: CancelToken | None) -> bool:
        """Wait ``seconds`` before a retry; True when cancelled (before or during the wait)."""
        return self.retry_policy.sleep(seconds, cancel)

    def backoff_delay(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1``: exponential with jitter, or Retry-After."""
        return self.retry_policy.delay(attempt, exc)

    def _create(
        self, messages: list[dict], temperature: float | None, max_tokens: int | None, timeout: float | None = None
    ) -> ChatAnswer:
        kwargs: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": self.settings.temperature if temperature is None else temperature,
        }
        if timeout is not None and timeout != self.settings.timeout:
            kwargs["timeout"] = timeout
        if max_tokens is not None and self._max_tokens_ok:
            kwargs["max_tokens"] = max_tokens
        resp = self.client.chat.completions.create(**kwargs)
        if isinstance(resp, str):  # the openai client hands back a body that is not JSON as text
            how = "a web page" if _looks_like_html(resp) else "text that is not JSON"
            raise _not_an_api(self.host, f"it answered the chat request with {how}")
        choices = getattr(resp, "choices", None)
        if not choices:
            raise _error(
                f"{self.settings.model!r} at {self.host} returned no choices",
                "Check that the base URL is an OpenAI-compatible chat endpoint (it usually ends in /v1).",
                kind="bad_response",
            )
        finish = getattr(choices[0], "finish_reason", None)
        content = getattr(choices[0].message, "content", None)
        if content is None and finish == "length":
            content = ""  # cut at max_tokens before any text (a model that reasons first): no question, asked again
        if not isinstance(content, str):
            raise _error(
                f"{self.settings.model!r} at {self.host} returned an empty message (finish_reason={finish!r})",
                "Try again, or use a model that answers chat requests with text.",
                kind="bad_response",
            )
        model = getattr(resp, "model", None)
        return ChatAnswer(content, finish, model if isinstance(model, str) and model.strip() else None)

    def complete(
        self,
        messages: list[dict],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cancel: CancelToken | None = None,
    ) -> str:
        """The assistant's text for ``messages``; raises :class:`LLMError` after the retries."""
        return self.chat(messages, temperature=temperature, max_tokens=max_tokens, cancel=cancel).text

    def chat(
        self,
        messages: list[dict],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cancel: CancelToken | None = None,
    ) -> ChatAnswer:
        """:meth:`complete` with what else the server said: why the answer ended (``"length"``: cut at
        ``max_tokens``) and which model answered. A model that refuses ``max_tokens`` (OpenAI's reasoning models
        want ``max_completion_tokens``, which counts their reasoning too) is asked again without it, and this
        client sends it no more."""
        import openai

        s = self.settings
        last: LLMError | None = None
        attempt = 0
        timeout = s.timeout  # doubled after each timeout, up to MAX_TIMEOUT_FACTOR times the setting
        while True:
            if cancel is not None and cancel.is_set():
                raise LLMError("Cancelled.", kind="cancelled")
            try:
                answer = self._create(messages, temperature, max_tokens, timeout)
                self.reached = True
                return answer
            except LLMError as err:
                if err.kind == "bad_response":
                    self.reached = True  # an answer, just not a usable one
                raise
            except (openai.OpenAIError, ValueError) as exc:
                if isinstance(exc, openai.APIStatusError):
                    self.reached = True
                if max_tokens is not None and self._max_tokens_ok and _refuses_max_tokens(exc):
                    self._max_tokens_ok = False
                    log.info("chat %s: the model takes no max_tokens; asking without it", s.model)
                    continue
                err = self._classify(exc, timeout)
                if not err.retryable:
                    raise err from None
                last = err
                if err.kind == "timeout":
                    timeout = min(timeout * 2, s.timeout * MAX_TIMEOUT_FACTOR)
                if attempt >= s.max_retries:
                    break
                if err.kind == "connection" and not self.reached and attempt >= UNREACHED_RETRIES:
                    break  # never answered: down or a wrong URL, not a blip; say so in seconds
                if cancel is not None and cancel.is_set():
                    raise LLMError("Cancelled.", kind="cancelled") from None  # no wait, no retry, after a stop
                delay = self.backoff_delay(attempt, exc)
                log.warning(
                    "chat %s: %s (%s); retry %d/%d in %.2fs",
                    s.model,
                    err.kind,
                    err.status or "-",
                    attempt + 1,
                    s.max_retries,
                    delay,
                )
                if self._wait(delay, cancel):
                    raise LLMError("Cancelled.", kind="cancelled") from None
                attempt += 1
        assert last is not None
        what, gave_up = last.what.rstrip(". "), f"gave up after {attempt + 1} attempts"
        err = _error(
            f"{what[:-1]}; {gave_up})" if what.endswith(")") else f"{what} ({gave_up})",
            last.advice,
            said=last.said,
            kind=last.kind,
            status=last.status,
            never_answered=last.kind == "connection" and not self.reached,
        )
        raise err from None

    # -- which model answered ------------------------------------------------------------------------
    def served_models(self) -> list[str] | None:
        """The model ids the server lists (``GET /models``), asked once per client; ``None`` when it lists none
        or cannot say (an error, a server without that route)."""
        with self._served_lock:
            if not self._served_asked:
                self._served_asked = True
                try:
                    page = self.client.models.list(timeout=min(self.settings.timeout, 15.0))
                    ids = [str(m.id) for m in getattr(page, "data", None) or [] if getattr(m, "id", None)]
                except Exception as exc:  # only a better name for the model is at stake
                    log.info("chat %s: the server does not list its models (%s)", self.settings.model, exc)
                    ids = []
                self._served = ids or None
            return self._served

    def answering_model(self, reported: str | None) -> str | None:
        """The model that wrote an answer whose ``model`` field is ``reported``, as well as the server tells.

        A name other than the one asked for is believed (OpenAI names the dated version it ran,
        ``gpt-4o-mini-2024-07-18``). The name asked for, or none, may be only an echo: llama.cpp's servers
        answer with the one model they loaded whatever name they are sent, and repeat that name. So when the
        server lists exactly one model (:meth:`served_models`) and not the one asked for, that one answered
        (``/models/SmolLM2-135M-Instruct.Q4_1.gguf``). Otherwise ``reported``."""
        asked = self.settings.model
        if reported and reported != asked:
            return reported
        served = self.served_models()
        if served and len(served) == 1 and asked not in served:
            return served[0]
        return reported

    # -- many calls ---------------------------------------------------------------------------
    def map_complete(
        self,
        list_of_messages: Sequence[list[dict]],
        on_result: Callable[[int, str | Exception], None] | None = None,
        cancel: CancelToken | None = None,
        concurrency: int | None = None,
    ) -> list[str | Exception | None]:
        """:meth:`complete` for each message list, ``settings.concurrency`` at a time.

        ``on_result(index, text_or_exception)`` runs in the calling thread as each finishes.
        After ``cancel`` is set no new request starts. Returns results in input order
        (``None`` where never started). See :func:`run_bounded`.
        """
        return run_bounded(
            lambda msgs: self.complete(msgs, cancel=cancel),
            list(list_of_messages),
            concurrency or self.settings.concurrency,
            on_result,
            cancel,
        )


# ------------------------------------------------------------------------------------------------
# estimates
# ------------------------------------------------------------------------------------------------
# USD per 1M tokens (input, output), OpenAI list prices as published in 2025. Check the
# provider's page for current prices; any model not listed gets ``cost_usd = None``.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
}
TOKENS_PER_QUESTION = 25  # a generated question plus its numbering, on average
ANSWER_OVERHEAD_TOKENS = 10  # a preamble such as "Here are 2 questions:"
MESSAGE_OVERHEAD_TOKENS = 8  # role markers and framing per chat request

_ENCODING = None
_ENCODING_TRIED = False


def estimate_tokens(text: str) -> int:
    """Approximate token count of ``text``.

    Uses ``tiktoken``'s ``cl100k_base`` when that package is installed and its encoding is
    available offline; otherwise ``ceil(len(text) / 4)`` (about 4 characters per token for
    English, within ~20% for typical prose). An estimate for planning, not for billing.
    """
    global _ENCODING, _ENCODING_TRIED
    if not text:
        return 0
    if not _ENCODING_TRIED:
        _ENCODING_TRIED = True
        try:  # optional; never a dependency
            import tiktoken  # type: ignore

            _ENCODING = tiktoken.get_encoding("cl100k_base")
        except Exception:
            _ENCODING = None
    if _ENCODING is not None:
        try:
            return len(_ENCODING.encode(text, disallowed_special=()))
        except Exception:
            pass
    return max(1, math.ceil(len(text) / 4))


def __getattr__(name: str):
    """``fill_prompt`` and ``estimate_generation`` moved to :mod:`core.generators` (where questions
    are made); importing them from here still works, without this module importing that one."""
    if name in ("fill_prompt", "estimate_generation"):
        from . import generators

        return getattr(generators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
