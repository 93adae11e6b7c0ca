"""Training runs in the workspace (files, catalog, history, export) and the background tasks that
launch them, on API embeddings from the local fake OpenAI server (no model download, no key leak)."""

from __future__ import annotations

import io
import json
import threading
import zipfile

import pytest

from core.adapters import load_adapter
from core.datasets import DatasetError, QADataset
from core.jobs import JobManager
from core.launch import build_systems, start_evaluation, start_training
from core.questions import save_dataset
from core.reports import load_comparison
from core.runs import (
    adapter_dir,
    create_run,
    delete_run,
    execute_run,
    get_run,
    list_runs,
    read_history,
    run_checkpoints,
    zip_folder,
)
from core.training import TrainConfig, TrainingError

SECRET = "sk-proj-DO-NOT-LEAK-123456"
TOPICS = [
    "revenue growth fiscal year",
    "active riders quarter",
    "driver incentives cities",
    "insurance liability policy",
    "captive subsidiary bermuda",
    "reserves actuarial charge",
    "proposition voters contractors",
    "court appeal ruling",
    "airport pickup fee",
    "privacy consumer act",
    "scooter bike business",
    "subscription pass discount",
]


def small_dataset() -> QADataset:
    corpus = {f"node-{i}": f"The report discusses {t} in detail with numbers and dates." for i, t in enumerate(TOPICS)}
    queries, rel = {}, {}
    for i, t in enumerate(TOPICS):
        words = t.split()
        for j, q in enumerate((f"What about {words[0]} {words[1]}?", f"Tell me the {words[-1]} figures")):
            queries[f"q{i}-{j}"] = q
            rel[f"q{i}-{j}"] = [f"node-{i}"]
    return QADataset(queries, corpus, rel)


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


@pytest.fixture
def dataset_file(tmp_path):
    return str(small_dataset().save(tmp_path / "train.json"))


def _api_run(ws, fake_openai, dataset_file, **kw):
    return create_run(
        ws,
        _config(**kw.pop("config", {})),
        dataset_path=dataset_file,
        embedder="openai:fake-embed",
        embedder_options={"base_url": fake_openai.base_url, "api_key": SECRET},
        **kw,
    )


def _files_under(path):
    return [p for p in path.rglob("*") if p.is_file()]


def test_create_and_execute_a_run(ws, fake_openai, dataset_file, tmp_path):
    run_id = _api_run(ws, fake_openai, dataset_file, name="first run")
    assert get_run(ws, run_id)["status"] == "queued"
    events = []
    result = execute_run(ws, run_id, api_key=SECRET, callback=events.append, out_dir=tmp_path / "export")

    run = get_run(ws, run_id)
    assert run["status"] == "done" and run["error"] is None and run["name"] == "first run"
    assert run["result"]["best_epoch"] == result.best_epoch and run["result"]["exported_to"] == str(tmp_path / "export")
    assert [r["id"] for r in list_runs(ws)] == [run_id]

    d = ws.run_dir(run_id)
    request = json.loads((d / "run.json").read_text())
    assert request["embedder"] == "openai:fake-embed" and request["config"]["epochs"] == 2
    assert request["embedder_options"] == {"base_url": fake_openai.base_url}  # the key was dropped

    lines = (d / "history.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.history == events == read_history(ws, run_id)
    assert {e["type"] for e in events} >= {"step", "epoch", "checkpoint"}

    folder = adapter_dir(ws, run_id)
    assert {p.name for p in folder.iterdir()} >= {"config.json", "pytorch_model.bin", "adapterlab.json", "checkpoints"}
    assert load_adapter(folder).get_config_dict() == {"in_features": 64, "out_features": 64, "bias": False}
    assert [p.name for p in run_checkpoints(ws, run_id)] == [
        f"step_{s}" for s in range(2, result.history[-1]["step"] + 1, 2)
    ]
    assert (tmp_path / "export" / "config.json").is_file()
    assert json.loads((tmp_path / "export" / "adapterlab.json").read_text())["run_id"] == run_id

    # the API key is in no file and no catalog row
    for f in _files_under(ws.root) + _files_under(tmp_path / "export"):
        assert SECRET.encode() not in f.read_bytes(), f
    assert SECRET not in json.dumps(list_runs(ws))
    assert fake_openai.embedding_requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_a_second_run_embeds_nothing_new(ws, fake_openai, dataset_file):
    execute_run(ws, _api_run(ws, fake_openai, dataset_file), api_key=SECRET)
    n = len(fake_openai.embedding_requests)
    execute_run(
        ws,
        _api_run(
            ws, fake_openai, dataset_file, config={"adapter": "two-layer", "adapter_kwargs": {"hidden_features": 8}}
        ),
        api_key=SECRET,
    )
    assert len(fake_openai.embedding_requests) == n


def test_run_from_a_workspace_dataset_and_cancel(ws, fake_openai):
    ds_id = save_dataset(ws, small_dataset(), "small", role="train")
    run_id = create_run(
        ws,
        _config(epochs=50),
        dataset_id=ds_id,
        embedder="openai:fake-embed",
        embedder_options={"base_url": fake_openai.base_url},
    )
    cancel = threading.Event()

    def cb(event):
        if event["type"] == "step" and event["step"] == 3:
            cancel.set()

    result = execute_run(ws, run_id, api_key=SECRET, cancel=cancel, callback=cb)
    assert result.cancelled
    run = get_run(ws, run_id)
    assert run["status"] == "cancelled" and run["result"]["cancelled"] is True
    assert (adapter_dir(ws, run_id) / "pytorch_model.bin").is_file()  # the best state so far is kept


def test_a_failing_run_is_marked_failed(ws, fake_openai, dataset_file, tmp_path):
    missing = str(tmp_path / "gone.json")
    run_id = create_run(ws, _config(), dataset_path=missing, embedder="openai:fake-embed")
    with pytest.raises(DatasetError):
        execute_run(ws, run_id)
    run = get_run(ws, run_id)
    assert run["status"] == "failed" and "gone.json" in run["error"] and "DatasetError" in run["error"]


def test_a_run_stopped_with_ctrl_c_is_interrupted_not_failed(ws, fake_openai, dataset_file):
    """The CLI's Ctrl-C reaches the run as KeyboardInterrupt: the Train page then says it was stopped
    and names the last checkpoint, instead of 'This run failed: KeyboardInterrupt:'."""
    run_id = _api_run(ws, fake_openai, dataset_file)

    def cb(event):
        if event["type"] == "step" and event["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute_run(ws, run_id, api_key=SECRET, callback=cb)
    run = get_run(ws, run_id)
    assert run["status"] == "interrupted" and run["error"] == "stopped with Ctrl-C before it finished"
    assert run["result"]["last_checkpoint"].endswith("step_2")  # checkpoint_every=2


def test_create_run_validates_first(ws, dataset_file):
    with pytest.raises(ValueError, match="needs a dataset"):
        create_run(ws, _config())
    with pytest.raises(TrainingError, match="epochs"):
        create_run(ws, _config(epochs=0), dataset_path=dataset_file)
    assert list_runs(ws) == []


def test_a_run_name_quotes_its_epochs_only_when_it_trains_them(ws, dataset_file):
    """A cross-validated run chooses its epochs (up to twice the setting on the questions design), so
    its default name says so instead of quoting the setting."""
    plain = create_run(ws, _config(epochs=7, selection="none"), dataset_path=dataset_file)
    held = create_run(ws, _config(epochs=7, selection="holdout"), dataset_path=dataset_file)
    cv = create_run(ws, _config(epochs=7, selection="cv"), dataset_path=dataset_file)
    # a validation set given turns cross-validation into a hold-out on it (core.training.train)
    cv_val = create_run(ws, _config(epochs=7, selection="cv"), dataset_path=dataset_file, val_dataset_path=dataset_file)
    assert get_run(ws, plain)["name"] == "linear · corpus_softmax · lr 0.001 · 7 ep"
    assert get_run(ws, held)["name"] == "linear · corpus_softmax · lr 0.001 · 7 ep, best on the hold-out"
    assert get_run(ws, cv)["name"] == "linear · corpus_softmax · lr 0.001 · epochs by CV"
    assert get_run(ws, cv_val)["name"] == get_run(ws, held)["name"]


def test_read_history_skips_a_partial_last_line(ws):
    d = ws.run_dir("run-x")
    d.mkdir(parents=True)
    assert read_history(ws, "run-x") == []
    (d / "history.jsonl").write_text('{"type": "step", "step": 1}\n{"type": "step", "step": 2}\n{"type": "ep')
    assert read_history(ws, "run-x") == [{"type": "step", "step": 1}, {"type": "step", "step": 2}]


def test_zip_folder_holds_the_llamaindex_files(ws, fake_openai, dataset_file, tmp_path):
    run_id = _api_run(ws, fake_openai, dataset_file)
    execute_run(ws, run_id, api_key=SECRET)
    folder = adapter_dir(ws, run_id)
    (folder / ".hidden.tmp").write_text("temp")
    data = zip_folder(folder, arc_root="my-adapter")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        assert {"my-adapter/config.json", "my-adapter/pytorch_model.bin", "my-adapter/adapterlab.json"} <= names
        assert any(n.startswith("my-adapter/checkpoints/step_") for n in names)
        assert not any(".hidden" in n for n in names)
        zf.extractall(tmp_path / "unzipped")
    back = load_adapter(tmp_path / "unzipped" / "my-adapter")
    assert back.get_config_dict() == load_adapter(folder).get_config_dict()
    with zipfile.ZipFile(io.BytesIO(zip_folder(folder))) as zf:
        assert "adapter/config.json" in zf.namelist()


def test_delete_run(ws, dataset_file):
    run_id = create_run(ws, _config(), dataset_path=dataset_file)
    delete_run(ws, run_id)
    assert get_run(ws, run_id) is None and not ws.run_dir(run_id).exists()


# ------------------------------------------------------------------------------------------------
# background tasks (what the dashboard launches)
# ------------------------------------------------------------------------------------------------
def test_train_then_compare_in_the_background(ws, fake_openai):
    jm = JobManager(ws)
    try:
        ds_id = save_dataset(ws, small_dataset(), "small", role="train")
        opts = {"base_url": fake_openai.base_url}
        job_id, run_id = start_training(
            jm, ws, _config(), dataset_id=ds_id, embedder="openai:fake-embed", api_key=SECRET, embedder_options=opts
        )
        assert jm.wait(job_id, 60)
        job = jm.get(job_id)
        assert job["status"] == "done", job["error"]
        assert job["result"]["run_id"] == run_id and get_run(ws, run_id)["status"] == "done"
        step = int(run_checkpoints(ws, run_id)[0].name[5:])

        specs = [
            {"kind": "run", "run_id": run_id, "name": "trained"},
            {"kind": "checkpoint", "run_id": run_id, "step": step},
            {"kind": "adapter_dir", "path": str(adapter_dir(ws, run_id)), "name": "folder"},
        ]
        systems = build_systems(
            ws, specs, embedder="openai:fake-embed", api_key=SECRET, api_base_url=fake_openai.base_url
        )
        assert list(systems)[0].startswith("base (") and list(systems)[1:] == [
            "trained",
            f"{get_run(ws, run_id)['name']} @ step {step}",
            "folder",
        ]

        eval_job = start_evaluation(
            jm,
            ws,
            ds_id,
            specs,
            embedder="openai:fake-embed",
            api_key=SECRET,
            api_base_url=fake_openai.base_url,
            name="nightly",
        )
        assert jm.wait(eval_job, 60)
        ej = jm.get(eval_job)
        assert ej["status"] == "done", ej["error"]
        cmp, extra = load_comparison(ws, ej["result"]["eval_id"])
        assert len(cmp.results) == 4 and extra["run_ids"] == [run_id, run_id]
        assert SECRET not in json.dumps(extra)
        with pytest.raises(ValueError, match="no longer exists"):
            start_evaluation(jm, ws, "ds-missing", specs)
        with pytest.raises(ValueError, match="unknown system kind"):
            build_systems(
                ws, [{"kind": "magic"}], embedder="openai:fake-embed", api_key=SECRET, api_base_url=fake_openai.base_url
            )
    finally:
        jm.shutdown()


def test_read_history_parses_only_appended_lines_and_restarts_on_rewrite(tmp_path):
    from core.runs import read_history
    from core.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    d = ws.run_dir("run-x")
    d.mkdir(parents=True)
    path = d / "history.jsonl"
    path.write_text('{"type": "step", "step": 1}\n{"type": "step", "st')
    assert [e["step"] for e in read_history(ws, "run-x")] == [1]  # partial last line waits
    with open(path, "a") as fh:
        fh.write('ep": 2}\n{"type": "step", "step": 3}\n')
    assert [e["step"] for e in read_history(ws, "run-x")] == [1, 2, 3]
    path.write_text('{"type": "step", "step": 9}\n')  # a re-run rewrites the file
    assert [e["step"] for e in read_history(ws, "run-x")] == [9]


def test_training_figure_thins_long_runs_but_keeps_the_last_step():
    from core.reports import MAX_STEP_POINTS, training_figure

    hist = [{"type": "step", "step": i, "epoch": 1, "loss": 1.0 / i} for i in range(1, 10_001)]
    fig = training_figure(hist, 5)
    xs = list(fig.data[0].x)
    assert len(xs) <= MAX_STEP_POINTS + 1 and xs[-1] == 10_000 and xs[0] == 1


def test_thin_series_keeps_spikes_first_and_last_points():
    from core.reports import thin_series

    y = [1.0] * 50_000
    y[12_345], y[40_000] = 9.0, -3.0  # one spike and one dip in a long flat loss
    x = list(range(1, 50_001))
    tx, ty = thin_series(x, y, 600)
    assert len(tx) <= 600 and tx == sorted(tx)
    assert (tx[0], tx[-1]) == (1, 50_000)
    assert 9.0 in ty and -3.0 in ty and tx[ty.index(9.0)] == 12_346
    assert thin_series(x[:10], y[:10], 600) == (x[:10], y[:10])  # a short series is kept whole


def test_a_run_reads_the_evaluation_sets_chunk_texts_to_choose_the_validation(ws, fake_openai, dataset_file, tmp_path):
    """The evaluation file's chunks (ids and texts, never its questions) reach training: an evaluation set of
    new chunks gives the new-documents design, and its texts are compared with the training chunks."""
    full = small_dataset()
    qids = list(full.queries)
    train_ds = full.subset(qids[:12], list(full.corpus)[:6])
    eval_ds = full.subset(qids[12:], list(full.corpus)[6:])
    train_path = str(train_ds.save(tmp_path / "train6.json"))
    eval_path = str(eval_ds.save(tmp_path / "eval6.json"))
    run_id = _api_run(
        ws, fake_openai, train_path, eval_dataset_path=eval_path, config={"selection": "cv", "cv_folds": 3}
    )
    events = []
    result = execute_run(ws, run_id, api_key=SECRET, callback=events.append)
    cv = result.cv
    assert cv.design == "chunks" and cv.validation in ("fold", "corpus")
    assert cv.validation_reason.startswith("the evaluation set's chunks: ")  # its texts were read and compared
    assert any("comparing the evaluation set's chunks" in e.get("message", "") for e in events)
    assert get_run(ws, run_id)["result"]["selection"]["validation_reason"] == cv.validation_reason
    # its questions were never embedded as training questions
    embedded = {t for r in fake_openai.embedding_requests for t in r["body"]["input"]}
    assert embedded and not embedded & set(eval_ds.queries.values())


def test_unaskable_chunks_are_those_a_generator_tried_that_hold_no_question(ws):
    """A chunk a generator found nothing to ask about is unaskable (it cannot stand in for new parts of the
    corpus), unless another generator (or the user) asked something of it; a chunk never tried is not."""
    from core.runs import unaskable_chunks

    with ws.db() as con:
        con.executemany(
            "INSERT INTO generation_done(gen_key, chunk_id, n_questions, done_at) VALUES (?, ?, ?, 0)",
            [("offline", "c1", 0), ("offline", "c2", 0), ("offline", "c3", 2), ("llm", "c2", 1)],
        )
        con.executemany(
            "INSERT INTO questions(id, chunk_id, text, source, created_at) VALUES (?, ?, ?, ?, 0)",
            [("q1", "c3", "What?", "offline"), ("q2", "c2", "Which?", "llm"), ("q3", "c4", "Who?", "manual")],
        )
    assert unaskable_chunks(ws) == {"c1"}


def test_a_local_model_folder_given_relative_is_recorded_absolute(tmp_path, monkeypatch):
    """`train --embedder "base copy"` from one folder, then `export` from another, failed to find the model."""
    from core.runs import portable_embedder

    (tmp_path / "base copy").mkdir()
    monkeypatch.chdir(tmp_path)
    assert portable_embedder("base copy") == str(tmp_path / "base copy")
    assert portable_embedder("base copy@onnx-int8") == str(tmp_path / "base copy") + "@onnx-int8"
    for spec in ("default", "default@onnx-fp32", "openai:text-embedding-3-small", "sentence-transformers/x", "gone"):
        assert portable_embedder(spec) == spec
