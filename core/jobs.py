"""Background jobs: start, progress, cancel, reattach after a reload or a restart.

A job is a plain function ``fn(ctx: JobContext) -> dict`` run in a background thread. Its
state (status, progress, message, result, error) is written to the workspace's ``jobs`` table,
so any page, tab or process finds it; the running process refreshes ``updated_at`` at least
every few seconds (a heartbeat). A job still marked running whose heartbeat stopped belongs to
a process that died: :meth:`JobManager.reap` marks it ``interrupted``, then calls its
*reapers* (hooks given to the manager, e.g. :func:`core.runs.reap_runs`), so this module stays
generic: it knows nothing of what a job does.

Jobs of one *lane* run one after another (a queue per lane; by default the lane is the job's
kind), so two trainings launched back to back run in turn while other lanes go on.

Example::

    jm = JobManager(ws)
    job_id = jm.submit("train", "linear adapter", lambda ctx: {"ok": True})
    jm.wait(job_id)
    jm.get(job_id)["status"]          # "done"
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .keys import scrub
from .status import ACTIVE, HEARTBEAT_S, STALE_AFTER_S, Status, owner_dead, process_token
from .workspace import Workspace, new_id

log = logging.getLogger(__name__)

Reaper = Callable[[Workspace], int]


class JobCancelled(Exception):
    """Raise from a job (or let ``ctx.check()`` raise it) to end as ``cancelled``."""


class JobInterrupted(Exception):
    """Raise from a job whose work died under it (e.g. its child process was killed): ends ``interrupted``."""


@dataclass
class JobContext:
    """Handed to a job function: report progress, watch for cancellation."""

    job_id: str
    ws: Workspace
    cancel_event: threading.Event = field(default_factory=threading.Event)
    _last_write: float = 0.0

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled()

    def progress(self, done: float, total: float, message: str = "", force: bool = False) -> None:
        frac = 0.0 if not total else max(0.0, min(1.0, float(done) / float(total)))
        now = time.time()
        if not force and now - self._last_write < 0.25 and frac < 1.0:
            return
        self._last_write = now
        with self.ws.db() as con:
            con.execute(
                "UPDATE jobs SET progress=?, message=?, updated_at=? WHERE id=?",
                (frac, scrub(message, limit=500), now, self.job_id),
            )


def _owner_dead(owner: str) -> bool:
    return owner_dead(owner)


def live_job_params(ws: Workspace) -> list[dict]:
    """``params`` of the jobs still queued or running whose owner process is alive and beating.

    What a reaper of another table asks to learn which of its rows a live job still owns.
    """
    cutoff = time.time() - STALE_AFTER_S
    out = []
    for r in ws.query(
        f"SELECT params, owner, updated_at FROM jobs WHERE status IN ({','.join('?' * len(ACTIVE))})", ACTIVE
    ):
        if r["updated_at"] < cutoff or owner_dead(r["owner"]):
            continue
        try:
            params = json.loads(r["params"] or "{}")
        except json.JSONDecodeError:
            continue
        if isinstance(params, dict):
            out.append(params)
    return out


def _row(r: dict) -> dict:
    for key in ("params", "result"):
        if r.get(key):
            try:
                r[key] = json.loads(r[key])
            except json.JSONDecodeError:
                pass
    return r


class JobManager:
    """Runs jobs in background threads and records them in the workspace (see module doc)."""

    def __init__(self, ws: Workspace, reapers: tuple[Reaper, ...] | list[Reaper] = ()):
        self.ws = ws
        self.reapers = list(reapers)
        self._lock = threading.Lock()
        self._cancels: dict[str, threading.Event] = {}
        self._on_skip: dict[str, Callable[[], None]] = {}
        self._done: dict[str, threading.Event] = {}
        self._lanes: dict[str, queue.Queue] = {}
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="adapterlab-heartbeat", daemon=True)
        self._heartbeat.start()
        self.reap()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                live = [j for j, ev in self._done.items() if not ev.is_set()]
            if live:
                try:
                    with self.ws.db() as con:
                        con.executemany(
                            "UPDATE jobs SET updated_at=? WHERE id=? AND status IN ('queued','running')",
                            [(time.time(), j) for j in live],
                        )
                except Exception:  # pragma: no cover - a busy database must not kill the heartbeat
                    log.exception("job heartbeat failed")

    def reap(self) -> int:
        """Mark jobs whose process stopped beating as ``interrupted``, then run the reapers
        (hooks for what those jobs owned); returns how many jobs."""
        cutoff = time.time() - STALE_AFTER_S
        with self._lock:
            mine = {j for j, ev in self._done.items() if not ev.is_set()}
        stale = [
            r["id"]
            for r in self.ws.query("SELECT id, owner, updated_at FROM jobs WHERE status IN ('queued','running')")
            if r["id"] not in mine and (r["updated_at"] < cutoff or _owner_dead(r["owner"]))
        ]
        if stale:
            with self.ws.db() as con:
                con.executemany(
                    "UPDATE jobs SET status='interrupted', error=?, updated_at=? WHERE id=?",
                    [
                        (
                            "interrupted: the process running it stopped (server restart or crash). "
                            "Start it again: finished work is kept.",
                            time.time(),
                            j,
                        )
                        for j in stale
                    ],
                )
        for reaper in self.reapers:
            try:
                reaper(self.ws)
            except Exception:  # pragma: no cover - one hook's failure must not stop the page
                log.exception("reaper %r failed", reaper)
        return len(stale)

    # -- API ------------------------------------------------------------------------------------
    def submit(
        self,
        kind: str,
        title: str,
        fn: Callable[[JobContext], dict | None],
        params: dict[str, Any] | None = None,
        lane: str | None = None,
        on_skip: Callable[[], None] | None = None,
    ) -> str:
        """Queue ``fn`` in ``lane`` (default: ``kind``) and return the job id at once. ``on_skip`` is called
        if the job is cancelled before it starts (``fn`` never runs): e.g. to end the run it would have
        trained, which would otherwise stay queued and later read as a crash."""
        job_id = new_id(f"{kind}-")
        now = time.time()
        ctx = JobContext(job_id, self.ws)
        with self._lock:  # registered before its row exists, so no reap() can take it for dead
            self._cancels[job_id] = ctx.cancel_event
            if on_skip is not None:
                self._on_skip[job_id] = on_skip
            self._done[job_id] = threading.Event()
        with self.ws.db() as con:
            con.execute(
                "INSERT INTO jobs(id, kind, title, status, params, owner, created_at, updated_at) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
                (job_id, kind, title, json.dumps(params or {}), process_token(), now, now),
            )
        with self._lock:
            lane = lane or kind
            if lane not in self._lanes:
                q: queue.Queue = queue.Queue()
                self._lanes[lane] = q
                threading.Thread(target=self._worker, args=(q,), name=f"adapterlab-{lane}", daemon=True).start()
            self._lanes[lane].put((ctx, fn))
        return job_id

    def _worker(self, q: queue.Queue) -> None:
        while True:
            ctx, fn = q.get()
            self._run(ctx, fn)

    def _set(self, job_id: str, **cols: Any) -> None:
        """Update a job's row; every text column goes through :func:`core.keys.scrub` first."""
        for name in ("error", "message", "result"):
            if isinstance(cols.get(name), str):
                cols[name] = scrub(cols[name])
        cols["updated_at"] = time.time()
        sets = ", ".join(f"{k}=?" for k in cols)
        with self.ws.db() as con:
            con.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*cols.values(), job_id))

    def _run(self, ctx: JobContext, fn: Callable[[JobContext], dict | None]) -> None:
        try:
            if ctx.cancelled:
                with self._lock:
                    skip = self._on_skip.pop(ctx.job_id, None)
                if skip is not None:
                    try:
                        skip()
                    except Exception:  # pragma: no cover - the job still ends cancelled
                        log.exception("job %s: on_skip failed", ctx.job_id)
                self._set(ctx.job_id, status="cancelled", message="cancelled before it started")
                return
            with self._lock:
                self._on_skip.pop(ctx.job_id, None)
            self._set(ctx.job_id, status="running")
            result = fn(ctx)
            status = "cancelled" if ctx.cancelled else "done"
            extra = {"progress": 1.0} if status == "done" else {}
            self._set(
                ctx.job_id,
                status=status,
                result=json.dumps(result or {}, default=str),
                **extra,
                message="cancelled: work finished so far is kept" if status == "cancelled" else "done",
            )
        except JobCancelled:
            self._set(ctx.job_id, status="cancelled", message="cancelled: work finished so far is kept")
        except JobInterrupted as exc:
            self._set(ctx.job_id, status=Status.INTERRUPTED.value, error=f"{exc}", message="interrupted")
        except Exception as exc:  # the job's error, in words, for the page
            log.error("job %s failed: %s", ctx.job_id, exc)
            self._set(
                ctx.job_id,
                status="failed",
                error=f"{exc}",
                message="failed",
                result=json.dumps({"traceback": traceback.format_exc(limit=5)}),
            )
        finally:
            with self._lock:
                ev = self._done.get(ctx.job_id)
            if ev:
                ev.set()

    def cancel(self, job_id: str) -> bool:
        """Ask a job to stop; it ends ``cancelled`` keeping what it finished."""
        with self._lock:
            ev = self._cancels.get(job_id)
        if ev is None:
            return False
        ev.set()
        return True

    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        with self._lock:
            ev = self._done.get(job_id)
        return True if ev is None else ev.wait(timeout)

    def get(self, job_id: str) -> dict | None:
        rows = self.ws.query("SELECT * FROM jobs WHERE id=?", (job_id,))
        return _row(rows[0]) if rows else None

    def list(self, kind: str | None = None, status: tuple[str, ...] | None = None, limit: int = 50) -> list[dict]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if kind:
            sql += " AND kind=?"
            args.append(kind)
        if status:
            sql += f" AND status IN ({','.join('?' * len(status))})"
            args.extend(status)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return [_row(r) for r in self.ws.query(sql, tuple(args))]

    def active(self, kind: str | None = None) -> list[dict]:
        return self.list(kind=kind, status=ACTIVE)

    def is_local(self, job_id: str) -> bool:
        """True when this process runs the job (so it can be cancelled from here)."""
        with self._lock:
            ev = self._done.get(job_id)
        return ev is not None and not ev.is_set()

    def shutdown(self) -> None:
        self._stop.set()
        for ev in list(self._cancels.values()):
            ev.set()
