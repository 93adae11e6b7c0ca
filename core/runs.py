"""Training runs kept in the workspace: settings, live history, checkpoints, the final adapter.

A run lives in ``runs/<run_id>/``::

    run.json          the request: config, dataset, embedder spec (never an API key)
    history.jsonl     one JSON event per line, appended as training goes (the live plot reads it)
    adapter/          the final (best) adapter, LlamaIndex folder format
    adapter/checkpoints/step_N/
    model/            a full fine-tune's sentence-transformers folder (kind "finetune")

and as a row in the catalog's ``runs`` table (status queued | running | done | failed |
cancelled | interrupted, result summary). :func:`execute_run` is what the CLI and the
dashboard's background job both call.

A run has a *kind* (``run.json``'s ``"kind"``; :func:`run_kind`): ``adapter`` (the default,
:func:`create_run`) or ``finetune`` (:func:`create_finetune_run`: every weight of a
sentence-transformers base model trained, see :mod:`core.finetune`; it must re-embed the corpus).

Example::

    run_id = create_run(ws, TrainConfig(adapter="linear"), dataset_id="...", embedder="default")
    result = execute_run(ws, run_id)
    read_history(ws, run_id)[-1]
"""

from __future__ import annotations

import io
import json
from contextlib import contextmanager
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

from .datasets import QADataset
from .embedders import resolve_embedder
from .keys import scrub
from .training import TrainConfig, TrainResult, list_checkpoints, train
from .workspace import Workspace, atomic_write_json, new_id

ACTIVE = ("queued", "running")
RUN_KINDS = ("adapter", "finetune")
HEARTBEAT_S = 2.0
STALE_AFTER_S = 20.0


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

    ``eval_dataset_*`` names the set the adapter will be compared on: only its chunk ids are read,
    to choose the cross-validation design. ``corpus_negatives``: every chunk ingested in the
    workspace (the corpus the user will search) is a negative in training.
    """
    config.validate()
    if not (dataset_id or dataset_path):
        raise ValueError("a training run needs a dataset: dataset_id (workspace) or dataset_path (file)")
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
    label = name or f"{config.adapter} · {config.loss} · lr {config.lr:g} · {config.epochs} ep"
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
    resolve_base_path(embedder)
    if not (dataset_id or dataset_path):
        raise ValueError("a fine-tune run needs a dataset: dataset_id (workspace) or dataset_path (file)")
    opts = {k: v for k, v in (embedder_options or {}).items() if k in ("query_prefix", "passage_prefix") and v}
    return _register(ws, {"kind": "finetune", "config": config.to_dict(), "dataset_id": dataset_id,
                          "dataset_path": dataset_path, "embedder": embedder, "embedder_options": opts},
                     name or f"full fine-tune · lr {config.lr:g} · {config.epochs} ep")


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


def workspace_chunk_count(ws: Workspace) -> int:
    """Chunks of the workspace's ingested documents: what a fine-tuned model must re-embed."""
    rows = ws.query("SELECT COUNT(*) AS n FROM chunks c JOIN documents d ON d.id=c.doc_id WHERE d.status='ok'")
    return int(rows[0]["n"]) if rows else 0


def _set_status(ws: Workspace, run_id: str, status: str, result: dict | None = None, error: str | None = None) -> None:
    with ws.db() as con:
        con.execute(
            "UPDATE runs SET status=?, result=COALESCE(?, result), error=?, updated_at=? WHERE id=?",
            (status, json.dumps(result) if result is not None else None, None if error is None else scrub(error),
             time.time(), run_id),
        )


def _load_ds(ws: Workspace, dataset_id: str | None, path: str | None) -> QADataset | None:
    if dataset_id:
        from .datasets import load_dataset

        return load_dataset(ws, dataset_id)
    if path:
        return QADataset.load(path)
    return None


@contextmanager
def _recording(ws: Workspace, run_id: str, callback: Callable[[dict[str, Any]], None] | None):
    """Mark the run running, stream its events to ``history.jsonl`` (and ``callback``), beat its
    heartbeat while the body runs, and mark it failed if the body raises. Yields the event sink."""
    hist_path = ws.run_dir(run_id) / "history.jsonl"
    hist_path.write_text("")
    _set_status(ws, run_id, "running")
    beating = threading.Event()

    def heartbeat() -> None:  # lets other processes tell a live run from one whose process died
        while not beating.wait(HEARTBEAT_S):
            with ws.db() as con:
                con.execute("UPDATE runs SET updated_at=? WHERE id=? AND status='running'", (time.time(), run_id))

    threading.Thread(target=heartbeat, daemon=True).start()
    with open(hist_path, "a", buffering=1, encoding="utf-8") as fh:
        def on_event(event: dict[str, Any]) -> None:
            fh.write(json.dumps(event) + "\n")
            if callback:
                callback(event)

        try:
            yield on_event
        except BaseException as exc:
            _set_status(ws, run_id, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            beating.set()


def execute_run(
    ws: Workspace,
    run_id: str,
    *,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int, str], None] | None = None,
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
    if run_kind(request) == "finetune":
        return _execute_finetune(ws, run_id, request, cancel=cancel, progress=progress, callback=callback,
                                 out_dir=out_dir)
    config = TrainConfig.from_dict(request["config"])
    with _recording(ws, run_id, callback) as on_event:
        train_ds = _load_ds(ws, request.get("dataset_id"), request.get("dataset_path"))
        val_ds = _load_ds(ws, request.get("val_dataset_id"), request.get("val_dataset_path"))
        opts = dict(request.get("embedder_options") or {})
        embedder = resolve_embedder(request.get("embedder") or "default", workspace=ws, api_key=api_key, **opts)
        eval_ds = _load_ds(ws, request.get("eval_dataset_id"), request.get("eval_dataset_path"))
        negatives = workspace_chunks(ws) if request.get("corpus_negatives", True) else None
        result = train(
            train_ds, embedder, config, out_dir=d / "adapter", val_dataset=val_ds,
            callback=on_event, cancel=cancel, progress=progress, negatives=negatives,
            allow_custom_code=allow_custom_code,
            target_chunks=set(eval_ds.corpus) & {c for ids in eval_ds.relevant_docs.values() for c in ids} if eval_ds else None,
        )
    summary = result.summary()
    if out_dir is not None:
        from .adapters import save_adapter

        save_adapter(result.adapter, out_dir, embedder=embedder.identity, config=config.to_dict(),
                     best_epoch=result.best_epoch, best_val=result.best_metrics, base_val=result.base_metrics, run_id=run_id)
        summary["exported_to"] = str(out_dir)
    _set_status(ws, run_id, "cancelled" if result.cancelled else "done", result=summary)
    return result


def workspace_chunks(ws: Workspace) -> dict[str, str]:
    """Every ingested chunk (id -> text): the corpus the user will search, used as negatives."""
    with ws.db() as con:
        return {r[0]: r[1] for r in con.execute("SELECT id, text FROM chunks")}


def _execute_finetune(ws: Workspace, run_id: str, request: dict[str, Any], *, cancel, progress, callback, out_dir):
    """A ``finetune`` run: :func:`core.finetune.finetune` into ``model/``, history as adapter runs write it."""
    from .finetune import FinetuneConfig, finetune

    config = FinetuneConfig.from_dict(request["config"])
    with _recording(ws, run_id, callback) as on_event:
        train_ds = _load_ds(ws, request.get("dataset_id"), request.get("dataset_path"))
        opts = request.get("embedder_options") or {}
        result = finetune(
            train_ds, request.get("embedder") or "default", model_dir(ws, run_id),
            epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed, loss=config.loss,
            warmup_ratio=config.warmup_ratio, device=config.device, query_prefix=opts.get("query_prefix", ""),
            passage_prefix=opts.get("passage_prefix", ""), corpus_size=workspace_chunk_count(ws) or None,
            progress=progress, cancel=cancel, callback=on_event,
        )
    summary = result.summary()
    if out_dir is not None and result.out_dir is not None:
        import shutil

        shutil.copytree(result.out_dir, out_dir, dirs_exist_ok=True)
        summary["exported_to"] = str(out_dir)
    _set_status(ws, run_id, "cancelled" if result.cancelled else "done", result=summary)
    return result


def list_runs(ws: Workspace) -> list[dict[str, Any]]:
    rows = ws.query("SELECT * FROM runs ORDER BY created_at DESC")
    for r in rows:
        r["config"] = json.loads(r["config"]) if r["config"] else {}
        r["result"] = json.loads(r["result"]) if r["result"] else None
        r["kind"] = run_kind(r["config"])
    return rows


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


def mark_interrupted(ws: Workspace, run_ids_alive: set[str] | None = None) -> int:
    """Runs left ``running``/``queued`` by a process that died become ``interrupted`` (checkpoints kept)."""
    alive = run_ids_alive or set()
    n = 0
    cutoff = time.time() - STALE_AFTER_S
    for r in ws.query("SELECT id, updated_at FROM runs WHERE status IN ('queued','running')"):
        if r["id"] not in alive and r["updated_at"] < cutoff:
            ckpts = run_checkpoints(ws, r["id"])
            _set_status(ws, r["id"], "interrupted", result={"last_checkpoint": str(ckpts[-1]) if ckpts else None},
                        error="the server stopped while this run was in progress")
            n += 1
    return n


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
