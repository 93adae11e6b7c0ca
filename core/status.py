"""Statuses of jobs and runs, and how a process tells a live owner from a dead one (defined once).

A job (:mod:`core.jobs`) and a training run (:mod:`core.runs`) share one life cycle::

    queued -> running -> done | failed | cancelled | interrupted

``interrupted`` is what a reaper writes for a row left ``queued``/``running`` by a process that
stopped: its heartbeat (``updated_at``, refreshed every :data:`HEARTBEAT_S`) is older than
:data:`STALE_AFTER_S`, or its owner process (``"pid:token"``) no longer exists.

The members are ``str``: ``Status.RUNNING == "running"`` and they go into SQLite unchanged.
"""

from __future__ import annotations

import os
import uuid
from enum import StrEnum


class Status(StrEnum):
    """Status of a job or a run (both tables use these words)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


JobStatus = Status
RunStatus = Status

ACTIVE: tuple[str, ...] = (Status.QUEUED.value, Status.RUNNING.value)
FINISHED: tuple[str, ...] = (Status.DONE.value, Status.CANCELLED.value, Status.INTERRUPTED.value)
HEARTBEAT_S = 2.0
STALE_AFTER_S = 20.0

PROCESS_TOKEN = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"


def process_token() -> str:
    """``"pid:token"`` naming this process (a fresh token after a fork, since the pid changed)."""
    global PROCESS_TOKEN
    if int(PROCESS_TOKEN.split(":", 1)[0]) != os.getpid():
        PROCESS_TOKEN = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return PROCESS_TOKEN


def owner_dead(owner: str | None) -> bool:
    """True when the process named by an owner token (``pid:token``) no longer exists.

    This very process is never judged dead here (its rows are judged by their heartbeat); a
    token that names no pid, or a pid this user may not signal, is not judged dead either.
    """
    try:
        pid = int(str(owner).split(":", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """A child killed but not yet waited for still has a pid: on Linux, read its state."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False
