"""API keys: which endpoint may receive which key, and the one scrubber every error path uses.

Two rules, applied by :mod:`core.llm` and :mod:`core.embedders`:

* **The environment key goes only to the environment's endpoint.** ``OPENAI_API_KEY`` is sent
  to ``OPENAI_BASE_URL`` when that is set, else to OpenAI itself, and to nothing else. A base
  URL typed in the dashboard or passed in code gets a key only when one is typed or passed
  with it (:func:`key_for`); a local server that needs no key still works.
* **No key reaches an error message, the catalog, a log or stderr.** :func:`scrub` masks every
  key this process has used (:func:`remember_key`; the environment's key is always known),
  exactly and as partial echoes (any run of 8 or more of its characters), plus anything shaped
  like a key: ``sk-…`` tokens and the value after ``Bearer``/``Basic``. Error paths (the chat
  client, the embedders, runs, jobs, the CLI) call it before a text leaves them, and
  :func:`install_log_scrubber` (called when this module is imported) scrubs every log record
  this process creates, tracebacks included.

Keys are held in memory only; nothing here writes one anywhere.

Example::

    remember_key("sk-live-1234567890abcdef")
    scrub("401: bad key sk-live-1234567890abcdef (Bearer sk-live-1234567890abcdef)")
    # '401: bad key *** (Bearer ***)'
    key_for("http://localhost:8000/v1", None)   # None: the environment key stays home
"""

from __future__ import annotations

import logging
import os
import re
import threading
from urllib.parse import urlsplit

ENV_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
MASK = "***"

#: A known key's run of at least this many characters is masked wherever it appears.
PARTIAL_MIN = 8
#: Stand-in keys for servers that need none: not secrets, never masked.
_PLACEHOLDERS = frozenset({"no-key-required", "sk-no-key-required", "EMPTY", "none", "None"})

_KEYLIKE = re.compile(
    r"""(?ix)
      \b(?:sk|pk|rk)[-_](?=[A-Za-z0-9_\-*.]*[0-9*])[A-Za-z0-9_\-*.]{8,}  # sk-..., sk-proj-..., starred echoes
    | (?<=\bBearer\ )[A-Za-z0-9._~+/=*\-]+         # Authorization header values
    | (?<=\bBasic\ )[A-Za-z0-9._~+/=*\-]+
    """
)
# JSON/headers that name the key: "api_key": "...", authorization=..., x-api-key: ...
_NAMED = re.compile(
    r"""(?i)((?:api[_-]?key|authorization|x-api-key|access[_-]?token)["']?\s*[:=]\s*["']?)((?!Bearer\b|Basic\b|none\b)[^\s"',}]+)"""
)

_known: set[str] = set()
_lock = threading.Lock()


def remember_key(key: str | None) -> None:
    """Make :func:`scrub` mask ``key`` from now on (held in memory only)."""
    if key and isinstance(key, str) and key.strip() and key not in _PLACEHOLDERS and len(key.strip()) >= 4:
        with _lock:
            _known.add(key.strip())


def _known_keys(extra: tuple[str | None, ...] = ()) -> list[str]:
    keys = set(_known)
    env = os.environ.get(ENV_KEY)
    for k in (env, *extra):
        if k and isinstance(k, str) and k.strip() and k not in _PLACEHOLDERS and len(k.strip()) >= 4:
            keys.add(k.strip())
    return sorted(keys, key=len, reverse=True)


def _mask_partials(text: str, key: str) -> str:
    """``text`` with every run of >= PARTIAL_MIN characters of ``key`` replaced by the mask."""
    if len(key) < PARTIAL_MIN or len(text) < PARTIAL_MIN:
        return text
    grams = {key[i : i + PARTIAL_MIN] for i in range(len(key) - PARTIAL_MIN + 1)}
    hit = bytearray(len(text))
    found = False
    for j in range(len(text) - PARTIAL_MIN + 1):
        if text[j : j + PARTIAL_MIN] in grams:
            hit[j : j + PARTIAL_MIN] = b"\x01" * PARTIAL_MIN
            found = True
    if not found:
        return text
    out, j = [], 0
    while j < len(text):
        if hit[j]:
            while j < len(text) and hit[j]:
                j += 1
            out.append(MASK)
        else:
            out.append(text[j])
            j += 1
    return "".join(out)


def scrub(text: object, *keys: str | None, limit: int | None = None) -> str:
    """``text`` (any object, as ``str``) with API keys and key-shaped tokens masked as ``***``.

    Masks: every key given here, remembered with :func:`remember_key` or set in
    ``OPENAI_API_KEY`` (the whole key, and any run of :data:`PARTIAL_MIN` or more of its
    characters: a server that echoes half a key is caught); ``sk-…``-like tokens; the value
    after ``Bearer``/``Basic``; values named ``api_key``/``authorization``/``x-api-key``.
    ``limit`` shortens the result (with ``...``) for display.
    """
    s = str(text)
    if s:
        for key in _known_keys(keys):
            s = s.replace(key, MASK)
            s = _mask_partials(s, key)
        s = _KEYLIKE.sub(MASK, s)
        s = _NAMED.sub(lambda m: m.group(1) + MASK if m.group(2) != MASK else m.group(0), s)
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 3)] + "..."
    return s


# ------------------------------------------------------------------------------------------------
# which key goes where
# ------------------------------------------------------------------------------------------------
def _norm_url(url: str | None) -> str:
    """A base URL reduced for comparison: scheme, lower-case host, explicit port, path without '/'."""
    u = urlsplit((url or "").strip())
    scheme = (u.scheme or "https").lower()
    port = u.port or (443 if scheme == "https" else 80)
    return f"{scheme}://{(u.hostname or '').lower()}:{port}{u.path.rstrip('/')}"


def environment_base_url() -> str:
    """Where the environment's key may go: ``OPENAI_BASE_URL`` or OpenAI's API."""
    return (os.environ.get(ENV_BASE_URL) or "").strip() or DEFAULT_BASE_URL


def key_for(base_url: str | None, key: str | None = None) -> str | None:
    """The key to send to ``base_url``: ``key`` when given, else ``OPENAI_API_KEY`` but only when
    ``base_url`` is ``None`` or is the environment's own endpoint (:func:`environment_base_url`)."""
    if key:
        remember_key(key)
        return key
    env_key = os.environ.get(ENV_KEY) or None
    if env_key is None:
        return None
    remember_key(env_key)
    if base_url is None or not str(base_url).strip() or _norm_url(base_url) == _norm_url(environment_base_url()):
        return env_key
    return None


# ------------------------------------------------------------------------------------------------
# logs
# ------------------------------------------------------------------------------------------------
_installed = False


def install_log_scrubber() -> None:
    """Scrub every log record this process creates (message and traceback), once per process."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
            clean = scrub(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and not record.exc_text:
                formatted = logging.Formatter().formatException(record.exc_info)
                record.exc_text = scrub(formatted)
        except Exception:  # a log call must never fail because of the scrubber
            pass
        return record

    logging.setLogRecordFactory(factory)


install_log_scrubber()
