"""Training runs kept in the workspace: settings, live history, checkpoints, the final adapter.

A run lives in ``runs/<run_id>/``::

    run.json          the request: config, dataset, embedder spec (never an API key)
    history.jsonl     one JSON event per line, appended as training goes (the live plot reads it)
    owner             ``pid:token`` of the process training it (so a dead one is seen at once)
    cancel            present when someone asked the run to stop (any process may write it)
    adapter/          the final (best) adapter, LlamaIndex folder format
    adapter/checkpoints/step_N/
    model/            a full fine-tune's sentence-transformers folder (kind "finetune")

and as a row in the catalog's ``runs`` table (status queued | running | done | failed |
cancelled | interrupted, result summary). :func:`execute_run` is what the CLI and the
dashboard's training process (:mod:`core.run_process`) both call.

A run has a *kind* (``run.json``'s ``"kind"``; :func:`run_kind`): ``adapter`` (the default,
:func:`create_run`), ``finetune`` (:func:`create_finetune_run`: every weight of a
sentence-transformers base model trained, see :mod:`core.finetune`; it must re-embed the corpus) or
``distill`` (:func:`create_distill_run`: a linear adapter trained to rank like a fine-tune, see
:mod:`core.distill`; it saves ``adapter/`` as adapter runs do, so Compare and export treat it as one).

Example::

    run_id = create_run(ws, TrainConfig(adapter="linear"), dataset_id="...", embedder="default")
    result = execute_run(ws, run_id)
    read_history(ws, run_id)[-1]
"""

from __future__ import annotations

import errno
import io
import json
import threading
import time
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from .datasets import QADataset
from .embedders import resolve_embedder
from .keys import scrub
from .progress import Progress
from .status import ACTIVE, HEARTBEAT_S, STALE_AFTER_S, Status, owner_dead, process_token
from .training import TrainConfig, TrainResult, every_search_chunk, list_checkpoints, train, unasked_search_chunks
from .workspace import Workspace, atomic_write_json, new_id

RUN_KINDS = ("adapter", "finetune", "distill")
CANCEL_POLL_S = 0.25


def portable_embedder(spec: str) -> str:
    """``spec`` with a local model folder given relative to the current directory made absolute (a backend
    suffix such as ``@onnx-int8`` kept): a run records it, and the dashboard, ``export`` or a later ``evaluate``
    read it from other directories. Names (``default``, a hub name, ``openai:...``) are kept as given."""
    base, at, backend = spec.rpartition("@") if "@onnx" in spec else (spec, "", "")
    if base and not base.startswith(("openai:", "st:")) and Path(base).is_dir():
        return str(Path(base).resolve()) + at + backend
    return spec


def create_run(
    ws: Workspace,
    config: TrainConfig,
    *,
    dataset_id: str | None = None,
    dataset_path: str | None = None,
    val_dataset_id: str | None = None,
    val_dataset_path: str | None = None,
    eval_dataset_id: str | None = None,
    eval_dataset_path: str | None = None,
    corpus_negatives: bool = True,
    embedder: str = "default",
    embedder_options: dict[str, Any] | None = None,
    name: str | None = None,
) -> str:
    """Register a run (status ``queued``) and return its id. Exactly one dataset source is needed.

    ``eval_dataset_*`` names the set the adapter will be compared on: only its chunks are read (ids and
    texts, never its questions), to choose the cross-validation design and its validation
    (``TrainConfig.cv_validation``). ``corpus_negatives``: every chunk ingested in the
    workspace (the corpus the user will search) is a negative in training.
    """
    config.validate()
    if not (dataset_id or dataset_path):
        raise ValueError("a training run needs a dataset: dataset_id (workspace) or dataset_path (file)")
    embedder = portable_embedder(embedder)
    run_id = new_id("run-")
    opts = {k: v for k, v in (embedder_options or {}).items() if k not in ("api_key",)}
    request = {
        "config": config.to_dict(),
        "dataset_id": dataset_id,
        "dataset_path": dataset_path,
        "val_dataset_id": val_dataset_id,
        "val_dataset_path": val_dataset_path,
        "eval_dataset_id": eval_dataset_id,
        "eval_dataset_path": eval_dataset_path,
        "corpus_negatives": corpus_negatives,
        "embedder": embedder,
        "embedder_options": opts,
    }
    d = ws.run_dir(run_id)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / "run.json", request)
    now = time.time()
    # a cross-validated run chooses its epochs (on the questions design up to twice the setting): its name
    # says so rather than quoting the setting as if it were what ran
    # (a validation set given makes it a hold-out on that set: core.training.train)
    held_out = bool(val_dataset_id or val_dataset_path)
    epochs = "epochs by CV" if config.selection == "cv" and not held_out else f"{config.epochs} ep"
    if held_out or config.selection == "holdout":
        epochs += ", best on the hold-out"
    label = name or f"{config.adapter} · {config.loss} · lr {config.lr:g} · {epochs}"
    with ws.db() as con:
        con.execute(
            "INSERT INTO runs(id, name, status, config, created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?)",
            (run_id, label, json.dumps(request), now, now),
        )
    return run_id


def create_finetune_run(
    ws: Workspace,
    config=None,
    *,
    dataset_id: str | None = None,
    dataset_path: str | None = None,
    embedder: str = "default",
    embedder_options: dict[str, Any] | None = None,
    name: str | None = None,
) -> str:
    """Register a full fine-tune run (kind ``finetune``, status ``queued``) and return its id.

    ``config`` is a :class:`core.finetune.FinetuneConfig`; ``embedder`` must be a
    sentence-transformers model (an ``openai:`` embedder is refused here, before anything runs).
    """
    from .finetune import FinetuneConfig, resolve_base_path

    config = config or FinetuneConfig()
    config.validate()
    embedder = portable_embedder(embedder)
    resolve_base_path(embedder)
    if not (dataset_id or dataset_path):
        raise ValueError("a fine-tune run needs a dataset: dataset_id (workspace) or dataset_path (file)")
    opts = {k: v for k, v in (embedder_options or {}).items() if k in ("query_prefix", "passage_prefix") and v}
    return _register(
        ws,
        {
            "kind": "finetune",
            "config": config.to_dict(),
            "dataset_id": dataset_id,
            "dataset_path": dataset_path,
            "embedder": embedder,
            "embedder_options": opts,
        },
        name or f"full fine-tune · lr {config.lr:g} · {config.epochs} ep",
    )


def create_distill_run(
    ws: Workspace,
    teacher: str,
    config=None,
    *,
    dataset_id: str | None = None,
    dataset_path: str | None = None,
    doc_ids: list[str] | None = None,
    eval_dataset_id: str | None = None,
    eval_dataset_path: str | None = None,
    embedder: str = "default",
    embedder_options: dict[str, Any] | None = None,
    name: str | None = None,
) -> str:
    """Register a distillation run (kind ``distill``, status ``queued``) and return its id.

    ``teacher`` is a ``finetune`` run of this workspace (by id) or a sentence-transformers folder.
    A teacher run may still be queued or training (the runs queue one after another: "fine-tune, then
    distil"); it is checked again when this run starts. With a teacher run, the base embedder, its
    prefixes and (unless given) the training questions are the teacher's own: the adapter maps the
    very model the fine-tune started from. ``doc_ids``: the ingested documents whose chunks it ranks
    among (default all, new ones included). ``eval_dataset_id`` / ``eval_dataset_path``: a dataset of the
    documents you will search (your evaluation set): its chunks are ranked too, never its questions. A
    distilled adapter is fitted to the documents it ranks (over one filing only, it lost on another:
    bench/README), so the documents you will search belong here when they are not ingested.
    ``config`` is a :class:`core.distill.DistillConfig`.
    """
    from .distill import DistillConfig

    config = config or DistillConfig()
    config.validate()
    request: dict[str, Any] = {"kind": "distill", "config": config.to_dict(), "doc_ids": list(doc_ids or []) or None}
    t = get_run(ws, teacher)
    if t is not None:
        if t["kind"] != "finetune":
            raise ValueError(f"run {t['name']!r} is not a full fine-tune: only a fine-tune can be distilled")
        if t["status"] not in ACTIVE and not has_model(ws, teacher):
            raise ValueError(
                f"the fine-tune {t['name']!r} ended {t['status']} without saving a model: nothing to distil"
            )
        treq = t["config"] or {}
        request.update(
            teacher_run_id=teacher,
            teacher_spec=None,
            embedder=treq.get("embedder") or "default",
            embedder_options=dict(treq.get("embedder_options") or {}),
        )
        if not (dataset_id or dataset_path):
            dataset_id, dataset_path = treq.get("dataset_id"), treq.get("dataset_path")
        teacher_name = t["name"]
    else:  # a model folder, or an embedder spec (``default``, ``st:NAME``): what ``--teacher`` takes headless
        folder = Path(teacher)
        if folder.is_dir():
            teacher = str(folder.resolve())
        elif not (teacher == "default" or teacher.startswith("st:")):
            raise ValueError(
                f"{teacher}: neither a fine-tune run of this workspace nor a model folder (see `python -m core runs`)"
            )
        opts = {k: v for k, v in (embedder_options or {}).items() if k in ("query_prefix", "passage_prefix") and v}
        request.update(
            teacher_run_id=None, teacher_spec=teacher, embedder=portable_embedder(embedder), embedder_options=opts
        )
        teacher_name = folder.name if folder.is_dir() else teacher
    if not (dataset_id or dataset_path):
        raise ValueError("a distillation needs the training questions: dataset_id (workspace) or dataset_path (file)")
    request.update(
        dataset_id=dataset_id,
        dataset_path=dataset_path,
        eval_dataset_id=eval_dataset_id,
        eval_dataset_path=eval_dataset_path,
    )
    return _register(ws, request, name or f"distilled from {teacher_name} · {config.steps} steps")


def _register(ws: Workspace, request: dict[str, Any], label: str) -> str:
    run_id = new_id("run-")
    d = ws.run_dir(run_id)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / "run.json", request)
    now = time.time()
    with ws.db() as con:
        con.execute(
            "INSERT INTO runs(id, name, status, config, created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?)",
            (run_id, label, json.dumps(request), now, now),
        )
    return run_id


def run_kind(run_or_request: dict[str, Any] | None) -> str:
    """``adapter`` or ``finetune``, from a run row (``get_run``) or its request (``run.json``)."""
    r = run_or_request or {}
    if r.get("kind") in RUN_KINDS:
        return r["kind"]
    request = r.get("config")
    if isinstance(request, dict) and request.get("kind") in RUN_KINDS:
        return request["kind"]
    return "adapter"


def _clean_chunks_sql(columns: str, doc_ids: list[str] | None) -> tuple[str, tuple[str, ...]]:
    """(query, parameters) selecting ``columns`` of the chunks of documents that ingested cleanly, only
    ``doc_ids`` when given (``c``: chunks, ``d``: documents); the caller adds the order."""
    sql = f"SELECT {columns} FROM chunks c JOIN documents d ON d.id=c.doc_id WHERE d.status='ok'"
    if doc_ids:
        sql += f" AND c.doc_id IN ({','.join('?' * len(doc_ids))})"
    return sql, tuple(doc_ids or ())


def ingested_chunks(ws: Workspace, doc_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """``{id, text}`` of every chunk of the chosen documents (all when ``None``) that ingested cleanly, in order."""
    sql, params = _clean_chunks_sql("c.id, c.text", doc_ids)
    return ws.query(sql + " ORDER BY c.doc_id, c.idx", params)


def ingested_documents_text(ws: Workspace, doc_ids: list[str] | None = None) -> dict[str, list[str]]:
    """Display name -> chunk texts of every document that ingested cleanly (in chunk order); only ``doc_ids``
    when given."""
    return {name: list(chunks.values()) for name, chunks in ingested_by_document(ws, doc_ids).items()}


def ingested_by_document(ws: Workspace, doc_ids: list[str] | None = None) -> dict[str, dict[str, str]]:
    """Display name -> {chunk id -> text} of every document that ingested cleanly (chunks in order); only
    ``doc_ids`` when given."""
    sql, params = _clean_chunks_sql("d.filename AS name, c.id, c.text", doc_ids)
    rows = ws.query(sql + " ORDER BY d.filename, c.idx", params)
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        out.setdefault(r["name"], {})[r["id"]] = r["text"]
    return out


def chunk_documents(ws: Workspace, ds: QADataset) -> dict[str, str]:
    """Chunk id -> the file name of the document it belongs to, for ``ds``'s chunks: by the workspace's ingested
    chunks (a dataset file generated here keeps their ids), else by the dataset's own ``node_meta``; "" unknown."""
    ingested = {c: name for name, chunks in ingested_by_document(ws).items() for c in chunks}
    return {
        c: ingested.get(c) or (ds.node_meta.get(c) or {}).get("filename") or ds.document_of(c) or "" for c in ds.corpus
    }


def unaskable_chunks(ws: Workspace) -> set[str]:
    """Chunks a question generator tried here and found nothing to ask about, and that hold no question: a
    passage the document repeats elsewhere, a contents line, a table (``generation_done`` with no question)."""
    rows = ws.query(
        "SELECT DISTINCT g.chunk_id FROM generation_done g "
        "WHERE NOT EXISTS (SELECT 1 FROM questions q WHERE q.chunk_id = g.chunk_id)"
    )
    return {r["chunk_id"] for r in rows}


def search_stand_in(ws: Workspace, ds: QADataset) -> tuple[dict[str, dict[str, str]], int]:
    """(:func:`core.training.unasked_search_chunks` of ``ds`` over the workspace's ingested documents, leaving out
    :func:`unaskable_chunks`; the count of every chunk users will search): what a run with no evaluation set named
    reads in its place, and the whole it is a share of."""
    docs = ingested_by_document(ws)
    return unasked_search_chunks(ds, docs, unaskable_chunks(ws)), len(every_search_chunk(ds, docs))


def searched_documents(
    ws: Workspace, train_ds: QADataset, eval_named: bool, doc_ids: list[str] | None = None
) -> str | None:
    """What ``auto`` knows of the documents users will search beyond the training questions' (see
    :func:`core.distill.choose_recipe`): the evaluation set named, ingested documents the questions are
    not about (:func:`core.distill.uncovered_documents`; only ``doc_ids`` when given, as a distillation limited
    to them ranks), or ``None``."""
    from .distill import asked_texts, describe_searched, uncovered_documents

    # the chunks the questions ask about: a dataset built in the workspace ranks among every chunk of its
    # documents, so its corpus says nothing of which ones a sample of questions covers
    uncovered = uncovered_documents(asked_texts(train_ds), ingested_documents_text(ws, doc_ids))
    return describe_searched(eval_named, uncovered)


def auto_recipe(ws: Workspace, train_ds: QADataset, eval_ds: QADataset | None, embedder: str) -> tuple[str, str]:
    """(recipe, why) of ``train``'s ``auto`` for these datasets in ``ws``: :func:`core.distill.auto_choice`
    with the workspace's ingested documents and the share of the training questions it generated offline."""
    from .distill import auto_choice
    from .provenance import question_sources

    offline = question_sources(ws, train_ds)["sources"].get("offline", 0) / max(1, len(train_ds.queries))
    return auto_choice(
        embedder, train_ds, ingested_documents_text(ws), eval_ds, offline, training_documents(ws, train_ds, eval_ds),
        workspace=ws,
    )  # fmt: skip


def training_documents(ws: Workspace, train_ds: QADataset, eval_ds: QADataset | None) -> list[str]:
    """The documents ``eval_ds`` asks about when they are all among those ``train_ds``'s questions ask about (by
    file name in ``ws``: a validation split of the training documents, say), else empty: such a set measures
    new sections of the training documents, not another company's."""
    from .provenance import asked_documents

    if eval_ds is None:
        return []
    asked = set(asked_documents(ws, eval_ds))
    return sorted(asked) if asked and asked <= set(asked_documents(ws, train_ds)) else []


def validation_elsewhere(
    ws: Workspace, train_ds: QADataset, val_ds: QADataset, embedder: str, where: str = "cli"
) -> str | None:
    """:func:`core.carryover.validation_elsewhere_note` (worded for ``where``: ``cli`` or ``page``) when ``val_ds``
    (a validation set given to the adapter recipe) is about documents Auto would fine-tune, then distil for were
    it named as the evaluation set, and Auto without it trains the adapter; else ``None``."""
    from .carryover import validation_elsewhere_note

    if auto_recipe(ws, train_ds, val_ds, embedder)[0] != "distil":
        return None
    return validation_elsewhere_note(where) if auto_recipe(ws, train_ds, None, embedder)[0] == "adapter" else None


def unnamed_search_sets(ws: Workspace, train_id: str, embedder: str | None = None) -> list[dict[str, Any]]:
    """Saved datasets besides ``train_id`` whose chunks are mostly neither the training set's nor in an
    ingested document (by :func:`core.distill.text_fingerprints`, as :func:`searched_documents` reads
    coverage): sets about documents that Auto cannot see, such as an imported evaluation set of another
    filing. Auto does not distil for them unless one is named; the Train page says they are there.
    A validation split of the training document is covered by its ingested text, so it is not listed. With
    ``embedder`` (the base model), only sets whose chunks are mostly longer than it reads
    (:func:`core.distill.long_chunk_share`): for chunks it reads whole Auto trains the adapter anyway."""
    from .datasets import list_datasets, load_dataset
    from .distill import uncovered_documents

    others = [d for d in list_datasets(ws) if d["id"] != train_id]
    if not others:
        return []
    known = list(load_dataset(ws, train_id).corpus.values())
    for texts in ingested_documents_text(ws).values():
        known.extend(texts)
    sets = {d["id"]: load_dataset(ws, d["id"]) for d in others}
    uncovered = set(uncovered_documents(known, {i: list(ds.corpus.values()) for i, ds in sets.items()}))
    if embedder is not None and uncovered:
        from .distill import LONG_CHUNKS_SHARE, asked_texts, long_chunk_share

        base = resolve_embedder(embedder, workspace=ws)
        uncovered = {i for i in uncovered if (long_chunk_share(asked_texts(sets[i]), base) or 0) >= LONG_CHUNKS_SHARE}
    return [d for d in others if d["id"] in uncovered]


def workspace_chunk_count(ws: Workspace, truncated_only: bool = False) -> int:
    """Chunks of the workspace's ingested documents: what a fine-tuned model must re-embed (``truncated_only``:
    those longer than the embedder reads, flagged at ingestion)."""
    where = "d.status='ok'" + (" AND c.truncated=1" if truncated_only else "")
    rows = ws.query(f"SELECT COUNT(*) AS n FROM chunks c JOIN documents d ON d.id=c.doc_id WHERE {where}")
    return int(rows[0]["n"]) if rows else 0


def cancel_queued_run(ws: Workspace, run_id: str, why: str = "cancelled before it started") -> bool:
    """End a run that never started as ``cancelled`` with ``why``; False if it had already started or ended."""
    with ws.db() as con:
        cur = con.execute(
            "UPDATE runs SET status=?, error=?, updated_at=? WHERE id=? AND status=?",
            (Status.CANCELLED.value, scrub(why), time.time(), run_id, Status.QUEUED.value),
        )
    return cur.rowcount > 0


def _set_status(ws: Workspace, run_id: str, status: str, result: dict | None = None, error: str | None = None) -> None:
    with ws.db() as con:
        con.execute(
            "UPDATE runs SET status=?, result=COALESCE(?, result), error=?, updated_at=? WHERE id=?",
            (
                status,
                json.dumps(result) if result is not None else None,
                None if error is None else scrub(error),
                time.time(),
                run_id,
            ),
        )


def _load_ds(ws: Workspace, dataset_id: str | None, path: str | None) -> QADataset | None:
    if dataset_id:
        from .datasets import load_dataset

        return load_dataset(ws, dataset_id)
    if path:
        return QADataset.load(path)
    return None


def owner_path(ws: Workspace, run_id: str) -> Path:
    return ws.run_dir(run_id) / "owner"


def cancel_path(ws: Workspace, run_id: str) -> Path:
    return ws.run_dir(run_id) / "cancel"


def request_cancel(ws: Workspace, run_id: str) -> bool:
    """Ask a run to stop after its current step (from any process: the dashboard, a second
    server, the CLI); it ends ``cancelled`` keeping its best state. False if it is not active."""
    run = get_run(ws, run_id)
    if run is None or run["status"] not in ACTIVE:
        return False
    cancel_path(ws, run_id).write_text(str(time.time()))
    return True


def note_cancel_reason(ws: Workspace, run_id: str, why: str) -> bool:
    """Record why a ``cancelled`` run stopped (its ``error``, where an interrupted run keeps its reason): e.g. the
    CLI's "stopped by SIGTERM". False if the run is not cancelled."""
    with ws.db() as con:
        cur = con.execute(
            "UPDATE runs SET error=?, updated_at=? WHERE id=? AND status=?",
            (scrub(why), time.time(), run_id, Status.CANCELLED.value),
        )
    return cur.rowcount > 0


@contextmanager
def _recording(
    ws: Workspace, run_id: str, callback: Callable[[dict[str, Any]], None] | None, cancel: threading.Event | None = None
):
    """Mark the run running, stream its events to ``history.jsonl`` (and ``callback``), beat its
    heartbeat while the body runs, and mark it failed if the body raises (interrupted on Ctrl-C, its
    checkpoints kept). Yields the event sink.

    The process that trains owns the run: its ``pid:token`` goes to ``owner`` (a reaper in any
    process sees at once that it died) and it watches the ``cancel`` file, setting ``cancel``."""
    d = ws.run_dir(run_id)
    hist_path = d / "history.jsonl"
    hist_path.write_text("")
    atomic_write_json(owner_path(ws, run_id), process_token())
    _set_status(ws, run_id, Status.RUNNING)
    beating = threading.Event()

    def heartbeat() -> None:  # lets other processes tell a live run from one whose process died
        last = 0.0
        while not beating.wait(CANCEL_POLL_S):
            if cancel is not None and not cancel.is_set() and cancel_path(ws, run_id).exists():
                cancel.set()
            if time.time() - last >= HEARTBEAT_S:
                last = time.time()
                with ws.db() as con:
                    con.execute("UPDATE runs SET updated_at=? WHERE id=? AND status='running'", (last, run_id))

    threading.Thread(target=heartbeat, name=f"adapterlab-run-{run_id}", daemon=True).start()
    with open(hist_path, "a", buffering=1, encoding="utf-8") as fh:

        def on_event(event: dict[str, Any]) -> None:
            fh.write(json.dumps(event) + "\n")
            if callback:
                callback(event)

        try:
            yield on_event
        except KeyboardInterrupt:  # Ctrl-C in the CLI (or a Python session): stopped, not broken
            mark_run_interrupted(ws, run_id, "stopped with Ctrl-C before it finished")
            raise
        except BaseException as exc:
            _set_status(ws, run_id, Status.FAILED, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            beating.set()


def execute_run(
    ws: Workspace,
    run_id: str,
    *,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    api_key: str | None = None,
    out_dir: str | Path | None = None,
    allow_custom_code: bool = False,
) -> TrainResult:
    """Train run ``run_id``; history streams to ``history.jsonl``; status and result to the catalog.

    ``out_dir`` (CLI ``--out``) gets a copy of the final adapter besides the run's own folder.
    A ``finetune`` run returns a :class:`core.finetune.FinetuneResult` (``out_dir``: a copy of its model).
    ``allow_custom_code`` is the caller's opt-in to import an adapter given as ``pkg.mod:Class``;
    ``run.json`` alone never allows it.
    """
    d = ws.run_dir(run_id)
    request = json.loads((d / "run.json").read_text())
    cancel = cancel if cancel is not None else threading.Event()  # the ``cancel`` file sets it too
    if run_kind(request) == "finetune":
        return _execute_finetune(
            ws, run_id, request, cancel=cancel, progress=progress, callback=callback, out_dir=out_dir
        )
    if run_kind(request) == "distill":
        return _execute_distill(
            ws, run_id, request, cancel=cancel, progress=progress, callback=callback, out_dir=out_dir
        )
    from .provenance import per_question_sources

    config = TrainConfig.from_dict(request["config"])
    with _recording(ws, run_id, callback, cancel) as on_event:
        train_ds = _load_ds(ws, request.get("dataset_id"), request.get("dataset_path"))
        val_ds = _load_ds(ws, request.get("val_dataset_id"), request.get("val_dataset_path"))
        opts = dict(request.get("embedder_options") or {})
        embedder = resolve_embedder(request.get("embedder") or "default", workspace=ws, api_key=api_key, **opts)
        eval_ds = _load_ds(ws, request.get("eval_dataset_id"), request.get("eval_dataset_path"))
        negatives = workspace_chunks(ws) if request.get("corpus_negatives", True) else None
        result = train(
            train_ds,
            embedder,
            config,
            out_dir=d / "adapter",
            val_dataset=val_ds,
            callback=on_event,
            cancel=cancel,
            progress=progress,
            negatives=negatives,
            allow_custom_code=allow_custom_code,
            question_sources=per_question_sources(ws, train_ds),
            target_chunks={  # the evaluation set's chunks with their texts (the design and the validation read them)
                c: eval_ds.corpus[c] for ids in eval_ds.relevant_docs.values() for c in ids if c in eval_ds.corpus
            }
            if eval_ds
            else None,
            target_documents=chunk_documents(ws, eval_ds) if eval_ds else None,  # checked per document
            # none named: the chunks users will search that no training question asks about stand in for it (in
            # the automatic validation's same-kind check, the one place they are read)
            searched_chunks=search_stand_in(ws, train_ds)[0]
            if eval_ds is None and config.selection == "cv" and config.cv_validation == "auto"
            else None,
        )
    summary = result.summary()
    if out_dir is not None:
        from .adapters import save_adapter

        _copy_out(
            ws,
            run_id,
            summary,
            out_dir,
            result.cancelled,
            lambda dst: save_adapter(
                result.adapter,
                dst,
                embedder=embedder.identity,
                config=config.to_dict(),
                best_epoch=result.best_epoch,
                best_val=result.best_metrics,
                base_val=result.base_metrics,
                run_id=run_id,
            ),
        )
    _set_status(ws, run_id, Status.CANCELLED if result.cancelled else Status.DONE, result=summary)
    return result


def _copy_out(
    ws: Workspace,
    run_id: str,
    summary: dict[str, Any],
    out_dir: str | Path,
    cancelled: bool,
    write: Callable[[Path], Any],
) -> None:
    """``write(folder)`` the finished run's copy, which replaces ``out_dir`` (``--out``) as a whole, noting it
    in ``summary``. When the copy cannot be written (a file in the way, a folder of other files, no permission),
    the run still ends done, its result in the workspace, and the error says so and how to copy it later."""
    from .export import written_by_adapterlab
    from .workspace import replace_folder

    try:
        out = Path(out_dir)
        if out.is_dir() and any(out.iterdir()) and not written_by_adapterlab(out):  # checked before the run too
            raise OSError(errno.ENOTEMPTY, "not empty, and AdapterLab did not write it", str(out))
        replace_folder(out, write)  # an earlier run's folder goes as a whole: none of its checkpoints stay
    except OSError as exc:
        _set_status(ws, run_id, Status.CANCELLED if cancelled else Status.DONE, result=summary)
        raise OSError(
            f"run {run_id} finished and is saved in the workspace, but copying it to {out_dir} failed "
            f"({exc.strerror or exc}): `python -m core export --run {run_id} --out FOLDER` copies it"
        ) from exc
    summary["exported_to"] = str(out_dir)


def separate_source_chunks(ws: Workspace, ds: QADataset) -> tuple[int, int] | None:
    """(offline-only chunks, written-only chunks) when training ``ds`` in ``ws`` will keep its offline and
    written questions' negatives apart (:func:`core.training.source_groups`, by the workspace's record of each
    question's source), else None."""
    from .provenance import per_question_sources
    from .training import OFFLINE, source_groups

    groups = source_groups(ds, list(ds.queries), per_question_sources(ws, ds))
    if not groups:
        return None
    n_off = sum(1 for g in groups.values() if g == OFFLINE)
    return n_off, len(groups) - n_off


def workspace_chunks(ws: Workspace) -> dict[str, str]:
    """Every ingested chunk (id -> text): the corpus the user will search, used as negatives."""
    with ws.db() as con:
        return {r[0]: r[1] for r in con.execute("SELECT id, text FROM chunks")}


def _execute_finetune(ws: Workspace, run_id: str, request: dict[str, Any], *, cancel, progress, callback, out_dir):
    """A ``finetune`` run: :func:`core.finetune.finetune` into ``model/``, history as adapter runs write it."""
    from .finetune import FinetuneConfig, finetune
    from .provenance import per_question_sources

    config = FinetuneConfig.from_dict(request["config"])
    with _recording(ws, run_id, callback, cancel) as on_event:
        train_ds = _load_ds(ws, request.get("dataset_id"), request.get("dataset_path"))
        opts = request.get("embedder_options") or {}
        result = finetune(
            train_ds,
            request.get("embedder") or "default",
            model_dir(ws, run_id),
            **config.to_dict(),
            query_prefix=opts.get("query_prefix", ""),
            passage_prefix=opts.get("passage_prefix", ""),
            corpus_size=workspace_chunk_count(ws) or None,
            question_sources=per_question_sources(ws, train_ds) if config.separate_sources else None,
            progress=progress,
            cancel=cancel,
            callback=on_event,
        )
    summary = result.summary()
    if out_dir is not None and result.out_dir is not None:
        import shutil

        src = result.out_dir
        _copy_out(ws, run_id, summary, out_dir, result.cancelled, lambda dst: shutil.copytree(src, dst))
    _set_status(ws, run_id, Status.CANCELLED if result.cancelled else Status.DONE, result=summary)
    return result


def distill_teacher(ws: Workspace, request: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """(embedder spec, display name, prefixes) of a ``distill`` request's teacher, checked now: a
    teacher run that failed, was cancelled before saving, or was deleted raises ``ValueError``."""
    rid = request.get("teacher_run_id")
    if not rid:
        spec = request.get("teacher_spec") or "default"
        if Path(spec).is_absolute() and not Path(spec).is_dir():
            raise ValueError(f"the teacher model folder {spec} is gone")
        return spec, Path(spec).name, dict(request.get("embedder_options") or {})
    t = get_run(ws, rid)
    if t is None:
        raise ValueError("the fine-tune this run distils was deleted: start a new fine-tune, then distil it")
    if t["status"] in ACTIVE and not has_model(ws, rid):
        raise ValueError(f"the fine-tune {t['name']!r} is still {t['status']}: distil it once it is done")
    if not has_model(ws, rid):
        raise ValueError(
            f"the fine-tune {t['name']!r} ended {t['status']} without a model"
            + (f" ({t['error']})" if t.get("error") else "")
            + ": nothing to distil. Fix or rerun the fine-tune, then distil it."
        )
    opts = (t.get("config") or {}).get("embedder_options") or {}
    return str(model_dir(ws, rid)), t["name"], {k: opts[k] for k in ("query_prefix", "passage_prefix") if opts.get(k)}


def distil_chunks(ws: Workspace, ds: QADataset, eval_ds: QADataset | None = None, doc_ids=None) -> list[str]:
    """Every chunk a distillation of ``ds``'s questions ranks, as users will search them: the ingested
    documents' (``doc_ids``, default all, new ones included), the dataset's own, and the named evaluation
    set's (its chunks only: its questions are never read). Texts may repeat: the distillation ranks each once."""
    chunks = [r["text"] for r in ingested_chunks(ws, doc_ids)] + list(ds.corpus.values())
    return chunks + (list(eval_ds.corpus.values()) if eval_ds is not None else [])


def _execute_distill(ws: Workspace, run_id: str, request: dict[str, Any], *, cancel, progress, callback, out_dir):
    """A ``distill`` run: :func:`core.distill.distill_adapter` into ``adapter/`` (a LlamaIndex folder)."""
    from .adapters import save_adapter
    from .distill import (
        DistillConfig,
        DistillResult,
        distill_adapter,
        resolve_teacher_blend,
        save_ranked,
        teacher_readers,
    )

    config = DistillConfig.from_dict(request["config"])
    with _recording(ws, run_id, callback, cancel) as on_event:
        t0 = time.time()
        teacher_spec, teacher_name, teacher_opts = distill_teacher(ws, request)
        ds = _load_ds(ws, request.get("dataset_id"), request.get("dataset_path"))
        eval_named = bool(request.get("eval_dataset_id") or request.get("eval_dataset_path"))
        eval_ds = _load_ds(ws, request.get("eval_dataset_id"), request.get("eval_dataset_path")) if eval_named else None
        chunks = distil_chunks(ws, ds, eval_ds, request.get("doc_ids"))
        n_eval_chunks = len(eval_ds.corpus) if eval_ds is not None else 0
        base = resolve_embedder(
            request.get("embedder") or "default", workspace=ws, **(request.get("embedder_options") or {})
        )
        # the blend's short read is the index's: the base model's input length; auto reads long alone for
        # another document altogether
        blend, blend_why = resolve_teacher_blend(
            config, ds, ingested_documents_text(ws, request.get("doc_ids")), eval_ds
        )
        config = replace(config, teacher_blend=blend)
        short = getattr(base, "max_seq_length", None)
        teachers = teacher_readers(teacher_spec, config, short=short, workspace=ws, **teacher_opts)
        adapter, summary = distill_adapter(
            teachers,
            base,
            list(ds.queries.values()),
            chunks,
            config,
            progress=progress,
            cancel=cancel,
            callback=on_event,
        )
        summary.update(
            teacher=teacher_name,
            teacher_run_id=request.get("teacher_run_id"),
            n_eval_chunks=n_eval_chunks,
            # what told it where users will search (None: nothing; the CLI and the run card say so)
            searched=searched_documents(ws, ds, eval_named, request.get("doc_ids")),
            teacher_blend=blend,
            teacher_blend_reason=blend_why,
            seconds=time.time() - t0,
        )
        meta = {
            "embedder": base.identity,
            "distilled_from": " + ".join(t.identity for t in teachers),
            "run_id": run_id,
            **summary,
        }
        save_adapter(adapter, adapter_dir(ws, run_id), **meta)
        save_ranked(adapter_dir(ws, run_id), chunks)
    if out_dir is not None:
        _copy_out(
            ws,
            run_id,
            summary,
            out_dir,
            summary["cancelled"],
            lambda dst: (save_adapter(adapter, dst, **meta), save_ranked(dst, chunks)),
        )
    _set_status(ws, run_id, Status.CANCELLED if summary["cancelled"] else Status.DONE, result=summary)
    return DistillResult(adapter=adapter, details=summary)


def list_runs(ws: Workspace) -> list[dict[str, Any]]:
    rows = ws.query("SELECT * FROM runs ORDER BY created_at DESC")
    for r in rows:
        r["config"] = json.loads(r["config"]) if r["config"] else {}
        r["result"] = json.loads(r["result"]) if r["result"] else None
        r["kind"] = run_kind(r["config"])
    return rows


def distillations_for(ws: Workspace, dataset_id: str, eval_dataset_id: str) -> list[dict[str, Any]]:
    """Distill runs on ``dataset_id``'s questions that rank ``eval_dataset_id``'s chunks, queued, running or done
    (newest first): what Compare's "fine-tune, then distil for this evaluation set" would start again."""
    return [
        r
        for r in list_runs(ws)
        if r["kind"] == "distill"
        and r["status"] not in ("failed", "cancelled")
        and r["config"].get("dataset_id") == dataset_id
        and r["config"].get("eval_dataset_id") == eval_dataset_id
    ]


def get_run(ws: Workspace, run_id: str) -> dict[str, Any] | None:
    rows = ws.query("SELECT * FROM runs WHERE id=?", (run_id,))
    if not rows:
        return None
    r = rows[0]
    r["config"] = json.loads(r["config"]) if r["config"] else {}
    r["result"] = json.loads(r["result"]) if r["result"] else None
    r["kind"] = run_kind(r["config"])
    return r


_HISTORY_CACHE: dict[str, tuple[int, int, list[dict[str, Any]]]] = {}
_HISTORY_LOCK = threading.Lock()


def read_history(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    """Events so far (a partly written last line is skipped: the run may still be writing).

    The live chart polls this every second while a run writes thousands of events, so only the
    bytes appended since the last call are parsed (per file, keyed by inode; a rewritten file
    is read again from the start). Returns a new list each time.
    """
    path = ws.run_dir(run_id) / "history.jsonl"
    try:
        st = path.stat()
    except FileNotFoundError:
        return []
    key = str(path)
    with _HISTORY_LOCK:
        ino, offset, events = _HISTORY_CACHE.get(key, (st.st_ino, 0, []))
        if ino != st.st_ino or st.st_size < offset:
            offset, events = 0, []
        if st.st_size > offset:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read(st.st_size - offset)
            complete = chunk.rfind(b"\n") + 1  # parse whole lines only; a partial last line waits
            events = list(events)
            for line in chunk[:complete].splitlines():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
            offset += complete
            _HISTORY_CACHE[key] = (st.st_ino, offset, events)
        return list(events)


def adapter_dir(ws: Workspace, run_id: str) -> Path:
    return ws.run_dir(run_id) / "adapter"


def has_adapter(ws: Workspace, run_id: str) -> bool:
    """True when the run saved its final adapter folder (an interrupted run may have only checkpoints)."""
    return (adapter_dir(ws, run_id) / "config.json").is_file()


def model_dir(ws: Workspace, run_id: str) -> Path:
    """A ``finetune`` run's sentence-transformers folder."""
    return ws.run_dir(run_id) / "model"


def has_model(ws: Workspace, run_id: str) -> bool:
    """True when a ``finetune`` run saved its fine-tuned model."""
    from .finetune import MARKER

    return (model_dir(ws, run_id) / MARKER).is_file()


def run_checkpoints(ws: Workspace, run_id: str) -> list[Path]:
    return list_checkpoints(adapter_dir(ws, run_id))


def run_owner(ws: Workspace, run_id: str) -> str | None:
    """``pid:token`` of the process that trains (or trained) the run, if it started."""
    try:
        return json.loads(owner_path(ws, run_id).read_text())
    except (OSError, ValueError):
        return None


def mark_run_interrupted(
    ws: Workspace, run_id: str, reason: str = "the server stopped while this run was in progress"
) -> bool:
    """Mark one active run ``interrupted`` (naming its last checkpoint); False if it had already ended."""
    ckpts = run_checkpoints(ws, run_id)
    with ws.db() as con:
        cur = con.execute(
            f"UPDATE runs SET status=?, result=?, error=?, updated_at=? WHERE id=? AND status IN ({','.join('?' * len(ACTIVE))})",
            (
                Status.INTERRUPTED.value,
                json.dumps({"last_checkpoint": str(ckpts[-1]) if ckpts else None}),
                scrub(reason),
                time.time(),
                run_id,
                *ACTIVE,
            ),
        )
        return cur.rowcount > 0


def mark_interrupted(ws: Workspace, run_ids_alive: set[str] | None = None) -> int:
    """Runs left ``running``/``queued`` by a process that died become ``interrupted`` (checkpoints kept).

    A run is dead when its owner process (the ``owner`` file) no longer exists, or when its
    heartbeat is older than ``STALE_AFTER_S`` and it is not in ``run_ids_alive`` (runs a live
    job still owns, e.g. queued behind another)."""
    alive = run_ids_alive or set()
    n = 0
    cutoff = time.time() - STALE_AFTER_S
    for r in ws.query("SELECT id, status, updated_at FROM runs WHERE status IN ('queued','running')"):
        owner = run_owner(ws, r["id"]) if r["status"] == Status.RUNNING else None
        if (owner is not None and owner_dead(owner)) or (r["id"] not in alive and r["updated_at"] < cutoff):
            n += mark_run_interrupted(
                ws, r["id"], "the process training this run stopped (server restart, crash or kill)"
            )
    return n


def reap_runs(ws: Workspace) -> int:
    """The runs' reaper (a :class:`core.jobs.JobManager` hook, and what ``python -m core runs``
    calls): a run whose process died is ``interrupted``, unless a live job still owns it."""
    from .jobs import live_job_params

    alive = {p.get("run_id") for p in live_job_params(ws)}
    return mark_interrupted(ws, {a for a in alive if a})


def delete_run(ws: Workspace, run_id: str) -> None:
    import shutil

    with ws.db() as con:
        con.execute("DELETE FROM runs WHERE id=?", (run_id,))
    shutil.rmtree(ws.run_dir(run_id), ignore_errors=True)


def zip_folder(path: str | Path, arc_root: str | None = None) -> bytes:
    """A folder as zip bytes (for downloading an adapter)."""
    path = Path(path)
    root = arc_root or path.name
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(path.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                zf.write(p, f"{root}/{p.relative_to(path).as_posix()}")
    return buf.getvalue()
