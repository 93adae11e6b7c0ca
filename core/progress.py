"""The progress callback every long step takes, defined once.

``progress(done, total, message)``: ``done`` of ``total`` units (``done`` may be fractional) with a
short message for a progress bar or a log line. Callers pass ``None`` for no reporting.

Example::

    def show(done: float, total: int, message: str) -> None:
        print(f"{done}/{total} {message}")

    embedder.embed_texts(chunks, progress=show)
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, int, str], None]
