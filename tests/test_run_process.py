"""Training started from the dashboard runs in a child process (core.run_process): it trains, it
cancels, and when it is killed the run is ``interrupted`` in the catalog, the CLI and the page."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import cli
from core.launch import job_manager, start_training
from core.questions import save_dataset
from core.runs import get_run, read_history, run_checkpoints, run_owner
from core.status import owner_dead
from core.training import TrainConfig
from tests.test_runs import SECRET, small_dataset

ROOT = Path(__file__).resolve().parents[1]
WAIT = 120.0


def _config(**kw) -> TrainConfig:
    base = dict(
        adapter="linear",
        epochs=2,
        batch_size=6,
        lr=1e-3,
        device="cpu",
        val_fraction=0.25,
        checkpoint_every=2,
        selection="holdout",
    )
    base.update(kw)
    return TrainConfig(**base)


def _start(ws, jm, fake_openai, **cfg):
    ds_id = save_dataset(ws, small_dataset(), "small", role="train")
    return start_training(
        jm,
        ws,
        _config(**cfg),
        dataset_id=ds_id,
        embedder="openai:fake-embed",
        api_key=SECRET,
        embedder_options={"base_url": fake_openai.base_url},
    )


def _until(cond, what: str, timeout: float = WAIT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _training_pid(ws, run_id) -> int:
    """The pid of the process training the run, once it has taken a few steps."""
    _until(lambda: sum(e.get("type") == "step" for e in read_history(ws, run_id)) >= 3, "training steps")
    return int(run_owner(ws, run_id).split(":")[0])


def test_training_runs_in_a_child_process_and_finishes(ws, fake_openai):
    jm = job_manager(ws)
    try:
        job_id, run_id = _start(ws, jm, fake_openai)
        assert jm.wait(job_id, WAIT)
        job = jm.get(job_id)
        assert job["status"] == "done", job["error"]
        assert job["result"]["run_id"] == run_id and job["result"]["best_epoch"] is not None
        run = get_run(ws, run_id)
        assert run["status"] == "done"
        owner_pid = int(run_owner(ws, run_id).split(":")[0])
        assert owner_pid != os.getpid()  # trained elsewhere: the server only reads
        assert any(e.get("type") == "epoch" for e in read_history(ws, run_id))
        assert SECRET not in (ws.run_dir(run_id) / "process.log").read_text()
        assert SECRET not in (ws.run_dir(run_id) / "run.json").read_text()
    finally:
        jm.shutdown()


def test_cancel_stops_the_child_and_keeps_the_best_state(ws, fake_openai):
    jm = job_manager(ws)
    try:
        job_id, run_id = _start(ws, jm, fake_openai, epochs=100_000, batch_size=1, checkpoint_every=10**9)
        _training_pid(ws, run_id)
        assert jm.cancel(job_id)
        assert jm.wait(job_id, WAIT)
        assert jm.get(job_id)["status"] == "cancelled"
        assert get_run(ws, run_id)["status"] == "cancelled"
        assert (ws.run_dir(run_id) / "adapter" / "config.json").is_file()
    finally:
        jm.shutdown()


def test_a_child_stopped_from_outside_ends_its_job_cancelled_as_its_run(ws, fake_openai):
    """A plain SIGTERM to the training child (not the Train page's Cancel) stops it after the step, keeping the
    best state, and its run ends cancelled: the job said "done" beside it."""
    jm = job_manager(ws)
    try:
        job_id, run_id = _start(ws, jm, fake_openai, epochs=100_000, batch_size=1, checkpoint_every=10**9)
        os.kill(_training_pid(ws, run_id), signal.SIGTERM)
        assert jm.wait(job_id, WAIT)
        assert get_run(ws, run_id)["status"] == "cancelled"
        assert jm.get(job_id)["status"] == "cancelled"
        assert (ws.run_dir(run_id) / "adapter" / "config.json").is_file()
    finally:
        jm.shutdown()


def test_a_killed_child_is_interrupted_in_the_catalog_the_cli_and_the_page(ws, fake_openai, capsys, monkeypatch):
    other = job_manager(ws)  # stands for the server that started the run ...
    try:
        job_id, run_id = _start(ws, other, fake_openai, epochs=100_000, batch_size=1, checkpoint_every=10)
        pid = _training_pid(ws, run_id)
        _until(lambda: run_checkpoints(ws, run_id), "a checkpoint")
        os.kill(pid, signal.SIGKILL)
        # the kernel ends the process asynchronously (milliseconds, more on a loaded machine) ...
        _until(lambda: owner_dead(run_owner(ws, run_id)), "the killed child to be gone", timeout=10)
        # ... and then the CLI, another process, sees it at once (no 20 s heartbeat wait)
        assert cli.main(["runs", "--workspace", str(ws.root), "--json"]) == 0
        rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows[run_id]["status"] == "interrupted"
        assert other.wait(job_id, WAIT)
        job = other.get(job_id)
        assert job["status"] == "interrupted" and "signal 9" in job["error"]
        run = get_run(ws, run_id)
        assert run["status"] == "interrupted" and run["result"]["last_checkpoint"]
    finally:
        other.shutdown()
    monkeypatch.setenv("ADAPTERLAB_WORKSPACE", str(ws.root))
    at = AppTest.from_file(str(ROOT / "pages" / "3_train.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("interrupted" in str(w.value) for w in at.warning)
    assert at.selectbox(key="train_view").value == run_id


def test_the_cli_shows_a_live_child_running_and_any_process_can_cancel_it(ws, fake_openai, capsys):
    """A live child is not reaped (its owner is alive); a cancel file from any process stops it (a second server)."""
    jm = job_manager(ws)
    try:
        job_id, run_id = _start(ws, jm, fake_openai, epochs=100_000, batch_size=1, checkpoint_every=10**9)
        pid = _training_pid(ws, run_id)
        assert cli.main(["runs", "--workspace", str(ws.root), "--json"]) == 0
        assert {r["run"]: r["status"] for r in json.loads(capsys.readouterr().out)}[run_id] == "running"
        from core.runs import request_cancel

        assert request_cancel(ws, run_id)  # any process can cancel by file (Cancel on a second server)
        assert jm.wait(job_id, WAIT)
        assert get_run(ws, run_id)["status"] == "cancelled"
        with pytest.raises(ProcessLookupError):
            _until(lambda: os.kill(pid, 0), "the child to exit", timeout=10)
    finally:
        jm.shutdown()


def test_cancel_during_side_by_side_cross_validation_stops_the_child(ws, fake_openai, monkeypatch):
    """The dashboard's Cancel reaches folds training in threads inside the child (their progress comes
    from the child's main thread, which owns the job's database connection)."""
    monkeypatch.setenv("ADAPTERLAB_CV_WORKERS", "2")  # the child inherits it, whatever this box's cores
    jm = job_manager(ws)
    try:
        job_id, run_id = _start(ws, jm, fake_openai, selection="cv", cv_folds=3, epochs=100_000, batch_size=1)
        _until(lambda: "cross-validation" in (jm.get(job_id).get("message") or ""), "cross-validation progress")
        assert jm.cancel(job_id)
        assert jm.wait(job_id, WAIT)
        assert jm.get(job_id)["status"] == "cancelled"
        assert get_run(ws, run_id)["status"] == "cancelled"
    finally:
        jm.shutdown()


def test_the_train_page_says_why_a_run_was_cancelled(ws, tmp_path, monkeypatch):
    """A CLI run stopped by a signal records which (``note_cancel_reason``): the page says so."""
    from core.runs import _set_status, create_run, note_cancel_reason

    dataset = str(small_dataset().save(tmp_path / "train.json"))
    run_id = create_run(ws, _config(), dataset_path=dataset, embedder="openai:fake-embed")
    assert not note_cancel_reason(ws, run_id, "stopped by SIGTERM")  # only a cancelled run takes a reason
    _set_status(ws, run_id, "cancelled", result={})
    assert note_cancel_reason(ws, run_id, "stopped by SIGTERM; its best state before the signal was saved")
    monkeypatch.setenv("ADAPTERLAB_WORKSPACE", str(ws.root))
    at = AppTest.from_file(str(ROOT / "pages" / "3_train.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="train_view").value == run_id
    assert "This run was cancelled (stopped by SIGTERM; its best state before the signal was saved)." in [
        w.value for w in at.warning
    ]
