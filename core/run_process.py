"""A training run in its own process: what the dashboard's training job starts.

The Streamlit server only reads a run (its catalog row, ``history.jsonl``, checkpoints); the
training loop runs in a fresh interpreter (``python -m core.run_process``, never a fork of the
server: torch's threads and ``fork`` do not mix), so the live chart's polling and the training
loop no longer share one interpreter lock.

The child owns the run: it writes the history, the checkpoints, the run's status and heartbeat
(:func:`core.runs.execute_run`), and the job's progress. The parent (a job thread of the server,
see :func:`core.launch.start_training`) waits for it, turns a cancel into the run's ``cancel``
file, and when the child dies without finishing the run (killed, out of memory) marks the run
and the job ``interrupted`` at once. A server restart leaves the child running: it finishes the
run, and the new server shows it as running in another process (Cancel still works, by file).

Secrets and flags go to the child on its standard input (never on its command line or on disk):
``{"api_key": ..., "allow_custom_code": ..., "job_id": ..., "sys_path": [...]}``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .keys import scrub
from .workspace import Workspace

POLL_S = 0.2
LOG_NAME = "process.log"


class ChildDied(RuntimeError):
    """The training process ended without finishing its run (the run is marked ``interrupted``)."""


def child_command(ws: Workspace, run_id: str) -> list[str]:
    return [sys.executable, "-m", "core.run_process", "--workspace", str(ws.root), "--run", run_id]


def train_in_child(
    ws: Workspace,
    run_id: str,
    *,
    job_id: str | None = None,
    cancel: threading.Event | None = None,
    api_key: str | None = None,
    allow_custom_code: bool = False,
    on_start=None,
) -> dict[str, Any]:
    """Train ``run_id`` in a child process and wait for it; returns the run's result summary.

    ``cancel`` (set from any thread) asks the child to stop after its current step. Raises
    :class:`ChildDied` (the run marked ``interrupted``) when the child exits without ending the
    run, and ``RuntimeError`` with the run's error when it failed. ``on_start(pid)`` is told the
    child's pid (tests use it to kill the child).
    """
    from .runs import get_run, mark_run_interrupted, request_cancel

    payload = {
        "api_key": api_key,
        "allow_custom_code": bool(allow_custom_code),
        "job_id": job_id,
        "sys_path": [p for p in sys.path if p and Path(p).is_dir()],
    }
    log_path = ws.run_dir(run_id) / LOG_NAME
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            child_command(ws, run_id),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=os.getcwd(),
            start_new_session=True,
            close_fds=True,
        )
    try:
        proc.stdin.write(json.dumps(payload).encode())
        proc.stdin.close()
    except BrokenPipeError:  # the child died at start-up: judged below by its exit
        pass
    if on_start:
        on_start(proc.pid)
    asked = False
    while proc.poll() is None:
        if cancel is not None and cancel.is_set() and not asked:
            request_cancel(ws, run_id)
            asked = True
        time.sleep(POLL_S)
    run = get_run(ws, run_id) or {}
    status = run.get("status")
    if status == "cancelled" and not (cancel is not None and cancel.is_set()):
        # stopped from outside the job (a SIGTERM to the child, the Train page's cancel of another process): the
        # job ends cancelled as its run did, not done
        from .jobs import JobCancelled

        raise JobCancelled()
    if status in ("done", "cancelled"):
        return {"run_id": run_id, **(run.get("result") or {})}
    if status == "failed":
        raise RuntimeError(run.get("error") or "the training run failed")
    how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
    tail = _log_tail(log_path)
    mark_run_interrupted(
        ws,
        run_id,
        f"the training process stopped ({how}) before the run ended"
        + (f": {tail}" if tail and proc.returncode > 0 else ""),
    )
    raise ChildDied(f"the training process stopped ({how}); checkpoints saved so far are kept")


def _log_tail(path: Path, n: int = 400) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return scrub(text[-n:].splitlines()[-1] if text else "")


def _child_main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m core.run_process",
        description="train one workspace run (started by the dashboard; reads secrets as JSON on stdin)",
    )
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--run", required=True)
    args = parser.parse_args(argv)
    payload = json.loads(sys.stdin.read() or "{}")
    for p in reversed(payload.get("sys_path") or []):
        if p not in sys.path:
            sys.path.insert(1, p)

    from .jobs import JobContext
    from .runs import execute_run, get_run
    from .status import ACTIVE

    ws = Workspace(args.workspace)
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())  # a plain kill stops after the step, keeping the best
    progress = None
    if payload.get("job_id"):
        ctx = JobContext(payload["job_id"], ws, cancel_event=cancel)
        progress = ctx.progress
    try:
        execute_run(
            ws,
            args.run,
            cancel=cancel,
            progress=progress,
            api_key=payload.get("api_key"),
            allow_custom_code=bool(payload.get("allow_custom_code")),
        )
    except Exception as exc:
        run = get_run(ws, args.run)
        if run is not None and run["status"] in ACTIVE:  # failed before the run started recording
            from .runs import _set_status

            _set_status(ws, args.run, "failed", error=f"{type(exc).__name__}: {exc}")
        print(scrub(f"{type(exc).__name__}: {exc}"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from .threads import prefer_passive_waiting

    prefer_passive_waiting()  # torch is not imported yet: idle threads sleep instead of spinning
    sys.exit(_child_main())
