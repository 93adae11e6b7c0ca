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


def in_phase(progress: Progress | None, start: float, end: float) -> Progress | None:
    """``progress`` for one phase of a longer task: the phase's own ``done / total`` mapped into ``[start, end]``
    of the whole (reported as thousandths), so the next phase carries the bar on instead of sending it back to
    0%; the message keeps the phase's own count. ``None`` stays ``None``."""
    if progress is None:
        return None

    def report(done: float, total: int, message: str = "") -> None:
        frac = min(max(float(done) / float(total), 0.0), 1.0) if total else 1.0
        progress(round(1000 * (start + (end - start) * frac)), 1000, message)

    return report
