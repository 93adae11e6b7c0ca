"""One retry policy for every remote call (chat completions and embeddings).

Exponential backoff with jitter (``backoff * 2**attempt``, times 0.5-1.5), at least what the
server asked for (``retry-after-ms`` or ``Retry-After``, seconds or an HTTP date), at most
``max_backoff`` per wait. Waits are cancellable: given a cancel token with ``wait(seconds)``
(a ``threading.Event``), a wait ends the moment it is set.

Example::

    policy = RetryPolicy(max_retries=5, backoff=1.0)
    for attempt in range(policy.max_retries + 1):
        try:
            return call()
        except Transient as exc:
            if attempt == policy.max_retries or policy.sleep(policy.delay(attempt, exc), cancel):
                raise   # sleep() returns True when cancelled
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``Retry-After``), if any."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            try:  # an HTTP date
                from email.utils import parsedate_to_datetime

                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError, IndexError):
                return None
    return None


@dataclass
class RetryPolicy:
    """How many retries, how long between them, and a wait that a cancel token interrupts.

    ``sleeper`` replaces the wait in tests (it gets the seconds; cancellation is then checked
    before and after it).
    """

    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    sleeper: Callable[[float], None] | None = None

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds before retry number ``attempt + 1``: exponential with jitter, or Retry-After."""
        delay = min(self.max_backoff, self.backoff * (2**attempt)) * (0.5 + random.random())
        asked = retry_after(exc)
        if asked is not None:
            delay = max(delay, asked)
        return min(delay, self.max_backoff)

    def sleep(self, seconds: float, cancel: CancelToken | None = None) -> bool:
        """Wait ``seconds`` unless cancelled first; True when cancelled (before or during the wait)."""
        if cancel is not None and cancel.is_set():
            return True
        if self.sleeper is not None:
            self.sleeper(seconds)
        elif cancel is not None and hasattr(cancel, "wait"):
            cancel.wait(seconds)
        elif cancel is not None:  # a token without wait(): poll it
            end = time.monotonic() + seconds
            while not cancel.is_set() and time.monotonic() < end:
                time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        else:
            time.sleep(seconds)
        return cancel is not None and cancel.is_set()
