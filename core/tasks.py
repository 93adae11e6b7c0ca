"""The long operations the dashboard launches, as background jobs (see :mod:`core.jobs`).

Each ``start_*`` function validates its input at once (raising a clear error before anything
is queued), then submits a job that calls the plain core function with a progress callback
and the job's cancel event, and returns the job id. Pages call these and poll the job; the
same functions work from a script or a test without Streamlit.

Systems to compare are plain dicts (``SystemSpec``)::

    {"kind": "base"}                                   # the base embedder
    {"kind": "api", "spec": "openai:text-embedding-3-small"}   # optional "options": {"api_timeout": 120, ...}
    {"kind": "run", "run_id": "run-..."}               # a run's final (best) adapter
    {"kind": "checkpoint", "run_id": "run-...", "step": 120}
    {"kind": "adapter_dir", "path": "/path/to/adapter", "name": "mine"}
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from .jobs import JobContext, JobManager
from .workspace import Workspace

SystemSpec = dict[str, Any]


def _embedder(ws: Workspace, spec: str, api_key: str | None = None, base_url: str | None = None, **opts: Any):
    from .embedders import resolve_embedder

    return resolve_embedder(spec or "default", workspace=ws, api_key=api_key, base_url=base_url, **opts)


def _chunking_args(emb) -> dict[str, Any]:
    counter = emb.token_counter() if hasattr(emb, "token_counter") else None
    return {"token_counter": counter, "max_seq_length": getattr(emb, "max_seq_length", None)}


# ------------------------------------------------------------------------------------------------
def start_ingest(jm: JobManager, ws: Workspace, files: list[tuple[str, bytes]], embedder: str = "default",
                 settings=None, max_bytes: int | None = None) -> str:
    """Ingest uploaded files (name, bytes) in the background. Result: ``{"reports": [...]}``."""
    from .documents import DEFAULT_MAX_BYTES, ingest_files

    if not files:
        raise ValueError("no files to ingest: choose one or more PDFs")
    files = list(files)

    def job(ctx: JobContext) -> dict:
        emb = _embedder(ws, embedder)
        reports = ingest_files(ws, files, settings, max_bytes=max_bytes or DEFAULT_MAX_BYTES,
                               progress=ctx.progress, cancel=ctx.cancel_event, **_chunking_args(emb))
        return {"reports": [asdict(r) for r in reports]}

    names = ", ".join(n for n, _ in files[:3]) + (" …" if len(files) > 3 else "")
    return jm.submit("ingest", f"Ingest {len(files)} file(s): {names}", job, {"files": [n for n, _ in files]})


def start_rechunk(jm: JobManager, ws: Workspace, settings, embedder: str = "default") -> str:
    from .documents import rechunk

    def job(ctx: JobContext) -> dict:
        emb = _embedder(ws, embedder)
        n = rechunk(ws, settings, progress=ctx.progress, **_chunking_args(emb))
        return {"chunks": n}

    return jm.submit("ingest", "Re-chunk all documents", job, {"settings": asdict(settings)})


def start_generation(jm: JobManager, ws: Workspace, generator: str = "offline", questions_per_chunk: int = 2,
                     doc_ids: list[str] | None = None, llm_settings=None, prompt_template: str | None = None,
                     seed: int = 0) -> str:
    """Generate questions for every chunk not yet done (resumable). Result: the generation report."""
    from . import questions as q

    if generator == "llm":
        from .llm import LLMSettings

        settings = (llm_settings or LLMSettings()).resolved()
        if not settings.api_key and not settings.base_url:
            raise ValueError("no API key: set OPENAI_API_KEY before starting the app, or enter a key in the form "
                             "(a local OpenAI-compatible server given by its base URL needs none)")
        gen = q.LLMGenerator(settings, prompt_template=prompt_template or q.DEFAULT_PROMPT_TEMPLATE)
        label = f"LLM {settings.model}"
    elif generator == "offline":
        gen = q.OfflineGenerator(seed=seed)
        label = "offline"
    else:
        raise ValueError(f"unknown generator {generator!r}: use 'offline' or 'llm'")

    def job(ctx: JobContext) -> dict:
        return q.generate_questions(ws, gen, questions_per_chunk=questions_per_chunk, doc_ids=doc_ids,
                                    progress=ctx.progress, cancel=ctx.cancel_event)

    return jm.submit("generate", f"Generate {questions_per_chunk} questions/chunk ({label})", job,
                     {"generator": generator, "questions_per_chunk": questions_per_chunk, "doc_ids": doc_ids})


def start_training(jm: JobManager, ws: Workspace, config, dataset_id: str, val_dataset_id: str | None = None,
                   embedder: str = "default", name: str | None = None, api_key: str | None = None,
                   embedder_options: dict[str, Any] | None = None) -> tuple[str, str]:
    """Create a run and train it in the background (runs queue one after another). Returns (job id, run id)."""
    from .runs import create_run, execute_run

    run_id = create_run(ws, config, dataset_id=dataset_id, val_dataset_id=val_dataset_id, embedder=embedder,
                        embedder_options=embedder_options, name=name)

    def job(ctx: JobContext) -> dict:
        result = execute_run(ws, run_id, cancel=ctx.cancel_event, progress=ctx.progress, api_key=api_key)
        return {"run_id": run_id, **result.summary()}

    job_id = jm.submit("train", f"Train {config.adapter} adapter", job, {"run_id": run_id})
    return job_id, run_id


def build_systems(ws: Workspace, systems: list[SystemSpec], embedder: str = "default", api_key: str | None = None,
                  api_base_url: str | None = None, embedder_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Name -> embedder for :func:`core.evaluation.compare`; the base embedder is always first.

    ``embedder_options`` are the base embedder's ``resolve_embedder`` kwargs (an API base's
    timeout, batch size, concurrency); an ``api`` system carries its own in ``"options"``.
    """
    from .adapters import load_adapter
    from .embedders import AdapterEmbedder
    from .runs import adapter_dir, get_run

    # the key/URL also serve a base that is itself an API embedder (adapters trained on API vectors)
    base = _embedder(ws, embedder, api_key=api_key, base_url=api_base_url, **(embedder_options or {}))
    out: dict[str, Any] = {f"base ({getattr(base, 'label', embedder)})": base}
    for s in systems:
        kind = s.get("kind")
        if kind == "base":
            continue
        if kind == "api":
            out[s["spec"]] = _embedder(ws, s["spec"], api_key=api_key, base_url=api_base_url, **(s.get("options") or {}))
        elif kind == "run":
            run = get_run(ws, s["run_id"])
            if run is None:
                raise ValueError(f"run {s['run_id']} no longer exists")
            out[s.get("name") or run["name"]] = AdapterEmbedder(base, load_adapter(adapter_dir(ws, s["run_id"])))
        elif kind == "checkpoint":
            run = get_run(ws, s["run_id"])
            path = adapter_dir(ws, s["run_id"]) / "checkpoints" / f"step_{int(s['step'])}"
            label = s.get("name") or f"{run['name'] if run else s['run_id']} @ step {s['step']}"
            out[label] = AdapterEmbedder(base, load_adapter(path))
        elif kind == "adapter_dir":
            out[s.get("name") or Path(s["path"]).name] = AdapterEmbedder(base, load_adapter(s["path"]))
        else:
            raise ValueError(f"unknown system kind {kind!r}")
    return out


def start_evaluation(jm: JobManager, ws: Workspace, dataset_id: str, systems: list[SystemSpec], top_k: int = 5,
                     embedder: str = "default", api_key: str | None = None, api_base_url: str | None = None,
                     name: str | None = None, embedder_options: dict[str, Any] | None = None) -> str:
    """Compare systems on a workspace dataset in the background. Result: ``{"eval_id": ...}``."""
    from .evaluation import compare
    from .questions import list_datasets, load_dataset
    from .reports import save_comparison

    meta = next((d for d in list_datasets(ws) if d["id"] == dataset_id), None)
    if meta is None:
        raise ValueError("that evaluation dataset no longer exists: pick another")

    def job(ctx: JobContext) -> dict:
        ds = load_dataset(ws, dataset_id)
        named = build_systems(ws, systems, embedder=embedder, api_key=api_key, api_base_url=api_base_url,
                              embedder_options=embedder_options)
        ctx.progress(0, 1, "embedding the evaluation set (cached texts are free)")
        cmp = compare(ds, named, baseline=next(iter(named)), top_k=top_k, dataset_name=meta["name"], progress=ctx.progress)
        run_ids = [s["run_id"] for s in systems if s.get("kind") in ("run", "checkpoint")]
        eval_id = save_comparison(ws, cmp, name=name or meta["name"],
                                  extra={"dataset_id": dataset_id, "systems": systems, "run_ids": run_ids, "embedder": embedder,
                                         "embedder_options": embedder_options or {}})
        return {"eval_id": eval_id}

    return jm.submit("evaluate", f"Compare {len(systems)} system(s) on {meta['name']}", job,
                     {"dataset_id": dataset_id, "systems": systems, "top_k": top_k})


def job_for_run(jm: JobManager, run_id: str) -> dict | None:
    for j in jm.list(kind="train", limit=200):
        if isinstance(j.get("params"), dict) and j["params"].get("run_id") == run_id:
            return j
    return None
