"""Background jobs: results, failures, cancellation, lanes, and reaping jobs/runs of dead processes."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from core import jobs as jobs_mod
from core.jobs import JobCancelled, JobManager
from core.launch import job_manager

WAIT = 10.0  # generous upper bound for a job to finish; tests never sleep this long


@pytest.fixture
def jm(ws):
    manager = JobManager(ws)
    yield manager
    manager.shutdown()


def test_submit_wait_get_done(jm):
    job_id = jm.submit("demo", "adds numbers", lambda ctx: {"sum": 1 + 2}, params={"a": 1})
    assert jm.wait(job_id, WAIT)
    job = jm.get(job_id)
    assert job["status"] == "done" and job["result"] == {"sum": 3} and job["progress"] == 1.0
    assert job["params"] == {"a": 1} and job["kind"] == "demo" and job["title"] == "adds numbers"
    assert not jm.is_local(job_id)
    assert [j["id"] for j in jm.list(kind="demo")] == [job_id]
    assert jm.get("no-such-job") is None


def test_progress_is_recorded(jm):
    release = threading.Event()
    reported = threading.Event()

    def fn(ctx):
        ctx.progress(3, 4, "three of four", force=True)
        reported.set()
        release.wait(WAIT)
        return {}

    job_id = jm.submit("demo", "progress", fn)
    assert reported.wait(WAIT)
    job = jm.get(job_id)
    assert job["status"] == "running" and job["progress"] == 0.75 and job["message"] == "three of four"
    assert jm.is_local(job_id) and [j["id"] for j in jm.active()] == [job_id]
    release.set()
    jm.wait(job_id, WAIT)
    assert jm.active() == []


def test_a_failing_job_is_failed_with_its_error(jm):
    def boom(ctx):
        raise RuntimeError("the PDF was empty")

    job_id = jm.submit("demo", "fails", boom)
    jm.wait(job_id, WAIT)
    job = jm.get(job_id)
    assert job["status"] == "failed" and job["error"] == "the PDF was empty"
    assert "RuntimeError" in job["result"]["traceback"]


def test_cancel_a_running_job(jm):
    started = threading.Event()

    def loop(ctx):
        started.set()
        while True:
            ctx.check()
            time.sleep(0.005)

    job_id = jm.submit("demo", "loops", loop)
    assert started.wait(WAIT)
    assert jm.cancel(job_id)
    assert jm.wait(job_id, WAIT)
    job = jm.get(job_id)
    assert job["status"] == "cancelled" and "kept" in job["message"]
    assert jm.cancel("unknown-job") is False


def test_a_job_that_returns_after_cancel_is_cancelled_with_its_result(jm):
    started = threading.Event()

    def polite(ctx):
        started.set()
        ctx.cancel_event.wait(WAIT)
        return {"partial": True}

    job_id = jm.submit("demo", "polite", polite)
    started.wait(WAIT)
    jm.cancel(job_id)
    jm.wait(job_id, WAIT)
    job = jm.get(job_id)
    assert job["status"] == "cancelled" and job["result"] == {"partial": True}


def test_same_lane_runs_serially_other_lanes_in_parallel(jm):
    order: list[str] = []
    release_first = threading.Event()
    first_started = threading.Event()

    def first(ctx):
        order.append("first start")
        first_started.set()
        release_first.wait(WAIT)
        order.append("first end")
        return {}

    def second(ctx):
        order.append("second start")
        return {}

    other_done = threading.Event()

    def other(ctx):  # another lane: runs while "first" is still blocked
        other_done.set()
        return {}

    a = jm.submit("train", "first", first)
    b = jm.submit("train", "second", second)
    assert first_started.wait(WAIT)
    c = jm.submit("evaluate", "other lane", other)
    assert other_done.wait(WAIT) and jm.wait(c, WAIT)
    assert jm.get(b)["status"] == "queued"  # waits for the first training
    assert order == ["first start"]
    release_first.set()
    assert jm.wait(b, WAIT)
    assert order == ["first start", "first end", "second start"]
    assert jm.get(a)["status"] == jm.get(b)["status"] == "done"


def test_cancel_a_queued_job_before_it_starts(jm):
    release = threading.Event()
    ran = []
    a = jm.submit("train", "blocker", lambda ctx: release.wait(WAIT) and {})
    b = jm.submit("train", "never", lambda ctx: ran.append(1) or {})
    jm.cancel(b)
    release.set()
    assert jm.wait(b, WAIT) and jm.wait(a, WAIT)
    assert ran == []
    assert jm.get(b)["status"] == "cancelled" and "before it started" in jm.get(b)["message"]


def test_a_training_job_cancelled_before_it_starts_ends_its_run_cancelled(ws):
    """The run stayed queued ("waiting for the run before it"), then the reaper called it a crash; a fine-tune
    cancelled in "fine-tune, then distil" left its distillation to start from the half-trained model."""
    from core.launch import _skipped, _train_job

    jm = job_manager(ws)
    try:
        release = threading.Event()
        _insert_run(ws, "run-second", status="queued")
        a = jm.submit("train", "blocker", lambda ctx: release.wait(WAIT) and {})
        b = jm.submit("train", "second", lambda ctx: {}, {"run_id": "run-second"}, on_skip=_skipped(ws, "run-second"))
        jm.cancel(b)
        release.set()
        assert jm.wait(b, WAIT) and jm.wait(a, WAIT)
        run = ws.query("SELECT status, error FROM runs WHERE id='run-second'")[0]
        assert run["status"] == "cancelled" and run["error"] == "cancelled before it started"
        _insert_run(ws, "run-ft", status="cancelled")
        _insert_run(ws, "run-distil", status="queued")
        c = jm.submit("train", "distil", _train_job(ws, "run-distil", after="run-ft"), {"run_id": "run-distil"})
        assert jm.wait(c, WAIT) and jm.get(c)["status"] == "cancelled"
        run = ws.query("SELECT status, error FROM runs WHERE id='run-distil'")[0]
        assert run["status"] == "cancelled" and "the fine-tune before it was cancelled" in run["error"]
    finally:
        jm.shutdown()


def test_job_cancelled_exception(jm):
    def fn(ctx):
        raise JobCancelled()

    job_id = jm.submit("demo", "stops itself", fn)
    jm.wait(job_id, WAIT)
    assert jm.get(job_id)["status"] == "cancelled"


# ------------------------------------------------------------------------------------------------
# reaping what a dead process left behind
# ------------------------------------------------------------------------------------------------
def _insert_job(ws, job_id, status="running", owner="4242:deadbeef", age=3600.0, params=None):
    old = time.time() - age
    with ws.db() as con:
        con.execute(
            "INSERT INTO jobs(id, kind, title, status, params, owner, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
            (job_id, "train", "left over", status, json.dumps(params or {}), owner, old, old),
        )


def _insert_run(ws, run_id, status="running", age=3600.0):
    old = time.time() - age
    with ws.db() as con:
        con.execute(
            "INSERT INTO runs(id, name, status, config, created_at, updated_at) VALUES (?,?,?,?,?,?)",
            (run_id, "old run", status, "{}", old, old),
        )


def test_reap_marks_jobs_and_runs_of_a_dead_process_interrupted(ws):
    _insert_job(ws, "train-dead", params={"run_id": "run-dead"})
    _insert_run(ws, "run-dead")
    from core.adapters import build_adapter, save_adapter

    save_adapter(build_adapter("linear", 4), ws.run_dir("run-dead") / "adapter" / "checkpoints" / "step_40")
    _insert_job(ws, "train-fresh", owner=f"{os.getppid()}:otherproc", age=1.0)  # another live process's job
    jm = job_manager(ws)  # reaps on start
    try:
        dead = jm.get("train-dead")
        assert dead["status"] == "interrupted" and "interrupted" in dead["error"]
        assert jm.get("train-fresh")["status"] == "running"
        run = ws.query("SELECT status, result, error FROM runs WHERE id='run-dead'")[0]
        assert run["status"] == "interrupted"
        assert json.loads(run["result"])["last_checkpoint"].endswith("step_40")
        assert jm.reap() == 0  # nothing left to reap
    finally:
        jm.shutdown()


def test_reap_marks_a_cli_run_whose_process_died(ws):
    """A run started by the CLI has no job row: its stale heartbeat alone marks it interrupted."""
    _insert_run(ws, "run-cli-dead")
    _insert_run(ws, "run-cli-alive", age=1.0)
    _insert_run(ws, "run-finished", status="done")
    jm = job_manager(ws)
    try:
        status = {r["id"]: r["status"] for r in ws.query("SELECT id, status FROM runs")}
        assert status == {"run-cli-dead": "interrupted", "run-cli-alive": "running", "run-finished": "done"}
    finally:
        jm.shutdown()


def test_reap_keeps_runs_owned_by_live_jobs(ws):
    # a queued run whose job (in another live process) is still waiting in its lane
    _insert_job(
        ws,
        "train-waiting",
        status="queued",
        owner=f"{os.getppid()}:otherproc",
        age=1.0,
        params={"run_id": "run-waiting"},
    )
    _insert_run(ws, "run-waiting", status="queued")
    jm = job_manager(ws)
    try:
        assert ws.query("SELECT status FROM runs WHERE id='run-waiting'")[0]["status"] == "queued"
    finally:
        jm.shutdown()


def test_reap_never_touches_this_process_live_jobs(ws, monkeypatch):
    monkeypatch.setattr(jobs_mod, "STALE_AFTER_S", -1.0)  # everything looks stale
    jm = JobManager(ws)
    try:
        release = threading.Event()
        job_id = jm.submit("demo", "live", lambda ctx: release.wait(WAIT) and {})
        assert jm.reap() == 0
        release.set()
        jm.wait(job_id, WAIT)
        assert jm.get(job_id)["status"] == "done"
    finally:
        jm.shutdown()


def test_heartbeat_refreshes_running_jobs(ws, monkeypatch):
    monkeypatch.setattr(jobs_mod, "HEARTBEAT_S", 0.02)
    jm = JobManager(ws)
    try:
        release = threading.Event()
        job_id = jm.submit("demo", "beats", lambda ctx: release.wait(WAIT) and {})
        first = jm.get(job_id)["updated_at"]
        deadline = time.time() + WAIT
        while jm.get(job_id)["updated_at"] == first and time.time() < deadline:
            time.sleep(0.02)
        assert jm.get(job_id)["updated_at"] > first
        release.set()
        jm.wait(job_id, WAIT)
    finally:
        jm.shutdown()


def test_reap_marks_a_fresh_job_of_an_exited_process_interrupted_at_once(ws):
    """After a server restart the old process is gone: its jobs need no heartbeat timeout."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    _insert_job(ws, "train-orphan", owner=f"{proc.pid}:gone", age=1.0)
    jm = JobManager(ws)
    try:
        assert jm.get("train-orphan")["status"] == "interrupted"
    finally:
        jm.shutdown()


def test_a_plain_job_manager_reaps_only_jobs(ws):
    """jobs.py is generic: runs are reaped by the hook core.launch.job_manager wires in, not by JobManager."""
    _insert_run(ws, "run-cli-dead")
    jm = JobManager(ws)
    try:
        assert ws.query("SELECT status FROM runs WHERE id='run-cli-dead'")[0]["status"] == "running"
    finally:
        jm.shutdown()
    calls = []
    jm = JobManager(ws, reapers=[lambda w: calls.append(w) or 0])
    try:
        assert calls == [ws]
    finally:
        jm.shutdown()


def test_a_job_raising_interrupted_ends_interrupted(jm):
    from core.jobs import JobInterrupted

    def fn(ctx):
        raise JobInterrupted("its process was killed")

    job_id = jm.submit("demo", "dies", fn)
    jm.wait(job_id, WAIT)
    job = jm.get(job_id)
    assert job["status"] == "interrupted" and "killed" in job["error"]


def test_statuses_are_defined_once():
    from core import runs, status

    assert jobs_mod.HEARTBEAT_S is status.HEARTBEAT_S and runs.STALE_AFTER_S is status.STALE_AFTER_S
    assert jobs_mod.ACTIVE is status.ACTIVE is runs.ACTIVE
    assert status.Status.INTERRUPTED == "interrupted" and "running" in status.ACTIVE
