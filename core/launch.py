"""The long operations the dashboard launches, as background jobs (see :mod:`core.jobs`).

Training runs in a child process (:mod:`core.run_process`): the job thread only waits for it.

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

Optional keys: ``name`` (a display name), ``adapter_cls`` and ``train_dataset`` (a training set
file, for the leakage check) on ``adapter_dir``, ``step`` on an ``adapter_dir`` checkpoint.
Custom adapter code (an adapter given as ``pkg.mod:Class``) is imported only when the caller
passes ``allow_custom_code=True``: the user's explicit opt-in (the dashboard's tick box),
never a value read from a file or the catalog.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from .jobs import JobCancelled, JobContext, JobInterrupted, JobManager
from .workspace import Workspace

SystemSpec = dict[str, Any]


def job_manager(ws: Workspace) -> JobManager:
    """The dashboard's job manager for ``ws``: its reaper also marks runs whose process died."""
    from .runs import reap_runs

    return JobManager(ws, reapers=[reap_runs])


def _train_job(
    ws: Workspace,
    run_id: str,
    api_key: str | None = None,
    allow_custom_code: bool = False,
    after: str | None = None,
):
    """A job that trains ``run_id`` in a child process (:func:`core.run_process.train_in_child`). ``after``: the
    run queued before it as one plan (a fine-tune before its distillation); if that run was cancelled, this one
    ends cancelled too instead of starting from what the cancelled run left."""

    def job(ctx: JobContext) -> dict:
        from .run_process import ChildDied, train_in_child
        from .runs import cancel_queued_run, get_run

        if after is not None and (get_run(ws, after) or {}).get("status") == "cancelled":
            cancel_queued_run(ws, run_id, "cancelled: the fine-tune before it was cancelled")
            raise JobCancelled()
        try:
            return train_in_child(
                ws,
                run_id,
                job_id=ctx.job_id,
                cancel=ctx.cancel_event,
                api_key=api_key,
                allow_custom_code=allow_custom_code,
            )
        except ChildDied as exc:
            raise JobInterrupted(str(exc)) from exc

    return job


def _embedder(ws: Workspace, spec: str, api_key: str | None = None, base_url: str | None = None, **opts: Any):
    from .embedders import resolve_embedder

    return resolve_embedder(spec or "default", workspace=ws, api_key=api_key, base_url=base_url, **opts)


def _chunking_args(emb) -> dict[str, Any]:
    counter = emb.token_counter() if hasattr(emb, "token_counter") else None
    return {"token_counter": counter, "max_seq_length": getattr(emb, "max_seq_length", None)}


# ------------------------------------------------------------------------------------------------
def start_ingest(
    jm: JobManager,
    ws: Workspace,
    files: list[tuple[str, bytes]],
    embedder: str = "default",
    settings=None,
    max_bytes: int | None = None,
) -> str:
    """Ingest uploaded files (name, bytes) in the background. Result: ``{"reports": [...]}``."""
    from .documents import DEFAULT_MAX_BYTES, ingest_files

    if not files:
        raise ValueError("no files to ingest: choose one or more PDFs")
    files = list(files)

    def job(ctx: JobContext) -> dict:
        emb = _embedder(ws, embedder)
        reports = ingest_files(
            ws,
            files,
            settings,
            max_bytes=max_bytes or DEFAULT_MAX_BYTES,
            progress=ctx.progress,
            cancel=ctx.cancel_event,
            **_chunking_args(emb),
        )
        return {"reports": [asdict(r) for r in reports]}

    from .workspace import safe_display_name

    names = ", ".join(safe_display_name(n) for n, _ in files[:3]) + (" …" if len(files) > 3 else "")
    return jm.submit("ingest", f"Ingest {len(files)} file(s): {names}", job, {"files": [n for n, _ in files]})


def start_rechunk(jm: JobManager, ws: Workspace, settings, embedder: str = "default") -> str:
    from .documents import rechunk

    def job(ctx: JobContext) -> dict:
        emb = _embedder(ws, embedder)
        n = rechunk(ws, settings, progress=ctx.progress, **_chunking_args(emb))
        return {"chunks": n}

    return jm.submit("ingest", "Re-chunk all documents", job, {"settings": asdict(settings)})


def start_generation(
    jm: JobManager,
    ws: Workspace,
    generator: str = "offline",
    questions_per_chunk: int = 2,
    doc_ids: list[str] | None = None,
    llm_settings=None,
    prompt_template: str | None = None,
    seed: int = 0,
    offline_method: str | None = None,
    sample_chunks: int | None = None,
) -> str:
    """Generate questions for every chunk not yet done (resumable). Result: the generation report.

    ``offline_method``: one of :data:`core.pseudo_queries.OFFLINE_METHODS` (default: its default).
    ``sample_chunks``: only a seeded random sample of that many chunks (:func:`core.questions.sampled_chunk_ids`)."""
    from . import questions as q

    chunk_ids = q.sampled_chunk_ids(ws, doc_ids, sample_chunks, seed)

    if generator == "llm":
        from .llm import LLMSettings

        settings = (llm_settings or LLMSettings()).resolved()
        if not settings.api_key and not settings.base_url:
            raise ValueError(
                "no API key: set OPENAI_API_KEY before starting the app, or enter a key in the form "
                "(a local OpenAI-compatible server given by its base URL needs none)"
            )
        gen = q.LLMGenerator(settings, prompt_template=prompt_template or q.DEFAULT_PROMPT_TEMPLATE)
        label = f"LLM {settings.model}"
    elif generator == "offline":
        from .pseudo_queries import DEFAULT_OFFLINE_METHOD, offline_generator

        gen = offline_generator(offline_method, seed=seed)
        label = f"offline, {offline_method or DEFAULT_OFFLINE_METHOD}"
    else:
        raise ValueError(f"unknown generator {generator!r}: use 'offline' or 'llm'")

    def job(ctx: JobContext) -> dict:
        from .provenance import record_generator

        record_generator(ws, gen, questions_per_chunk)  # so evaluation sets can name the LLM
        report = q.generate_questions(
            ws,
            gen,
            questions_per_chunk=questions_per_chunk,
            doc_ids=doc_ids,
            chunk_ids=chunk_ids,
            progress=ctx.progress,
            cancel=ctx.cancel_event,
        )
        if ctx.cancelled and not report.get("cancelled"):
            # Stop came after every chunk had been sent (requests in flight finish): nothing is left to go on
            # with, so the job ends done, not "stopped: start it again to go on"
            ctx.cancel_event.clear()
        return report

    return jm.submit(
        "generate",
        f"Generate {questions_per_chunk} questions/chunk ({label})"
        + (f" for a sample of {len(chunk_ids)} chunks" if chunk_ids is not None else ""),
        job,
        {
            "generator": generator,
            "questions_per_chunk": questions_per_chunk,
            "doc_ids": doc_ids,
            "sample_chunks": sample_chunks,
            **({"offline_method": getattr(gen, "method", "keywords")} if generator == "offline" else {}),
        },
    )


def start_training(
    jm: JobManager,
    ws: Workspace,
    config,
    dataset_id: str,
    val_dataset_id: str | None = None,
    embedder: str = "default",
    name: str | None = None,
    api_key: str | None = None,
    embedder_options: dict[str, Any] | None = None,
    allow_custom_code: bool = False,
    eval_dataset_id: str | None = None,
) -> tuple[str, str]:
    """Create a run and train it in a child process (runs queue one after another). Returns (job id, run id).

    ``eval_dataset_id``: the set the adapter will be evaluated on (optional); cross-validation's
    ``cv_design="auto"`` uses its chunks to choose the validation design.

    An adapter given as an import path is refused here, before anything is imported or queued,
    unless ``allow_custom_code``; with it, the class is imported and checked at once.
    """
    from .adapters import resolve_adapter_class
    from .runs import create_run

    resolve_adapter_class(config.adapter, allow_import=allow_custom_code)  # AdapterError is a ValueError

    run_id = create_run(
        ws,
        config,
        dataset_id=dataset_id,
        val_dataset_id=val_dataset_id,
        embedder=embedder,
        embedder_options=embedder_options,
        name=name,
        eval_dataset_id=eval_dataset_id,
    )

    job = _train_job(ws, run_id, api_key=api_key, allow_custom_code=allow_custom_code)
    job_id = jm.submit(
        "train", f"Train {config.adapter} adapter", job, {"run_id": run_id}, on_skip=_skipped(ws, run_id)
    )
    return job_id, run_id


def custom_code_systems(ws: Workspace, systems: list[SystemSpec]) -> dict[str, str]:
    """Label -> import path for the systems whose adapter folder names custom code (imports nothing)."""
    from .adapters import folder_import_path
    from .runs import adapter_dir

    out: dict[str, str] = {}
    for s in systems:
        kind = s.get("kind")
        if kind == "run":
            path = adapter_dir(ws, s["run_id"])
        elif kind == "checkpoint":
            path = adapter_dir(ws, s["run_id"]) / "checkpoints" / f"step_{int(s['step'])}"
        elif kind == "adapter_dir":
            path = Path(s["path"])
        else:
            continue
        named = folder_import_path(path)
        if named:
            out[s.get("name") or s.get("run_id") or str(path)] = named
    return out


def start_finetune(
    jm: JobManager,
    ws: Workspace,
    dataset_id: str,
    config=None,
    embedder: str = "default",
    name: str | None = None,
    embedder_options: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Create a full fine-tune run (:mod:`core.finetune`) and train it in a child process, in the same
    queue as adapter runs. Returns (job id, run id). An API embedder is refused at once."""
    from .runs import create_finetune_run

    run_id = create_finetune_run(
        ws, config, dataset_id=dataset_id, embedder=embedder, embedder_options=embedder_options, name=name
    )
    job = _train_job(ws, run_id)
    job_id = jm.submit("train", f"Full fine-tune of {embedder}", job, {"run_id": run_id}, on_skip=_skipped(ws, run_id))
    return job_id, run_id


def start_distill(
    jm: JobManager,
    ws: Workspace,
    teacher_run_id: str,
    config=None,
    dataset_id: str | None = None,
    name: str | None = None,
    eval_dataset_id: str | None = None,
    after_teacher: bool = False,
) -> tuple[str, str]:
    """Create a distillation run (:mod:`core.distill`) of a fine-tune run and train it in a child process,
    in the same queue as the other runs. Returns (job id, run id). The fine-tune may still be queued or
    training ("fine-tune, then distil"): the queue runs it first, and this run fails with the reason
    if it ends without a model. ``dataset_id``: the training questions (default: the fine-tune's);
    ``eval_dataset_id``: a dataset of the documents you will search, whose chunks it ranks too.
    ``after_teacher``: queued with the fine-tune as one plan, so cancelling the fine-tune cancels it too."""
    from .runs import create_distill_run

    run_id = create_distill_run(
        ws, teacher_run_id, config, dataset_id=dataset_id, eval_dataset_id=eval_dataset_id, name=name
    )
    job = _train_job(ws, run_id, after=teacher_run_id if after_teacher else None)
    job_id = jm.submit(
        "train", "Distil a fine-tune into a linear adapter", job, {"run_id": run_id}, on_skip=_skipped(ws, run_id)
    )
    return job_id, run_id


def _skipped(ws: Workspace, run_id: str):
    """``on_skip`` for a training job: its run ends cancelled rather than staying queued (and then reading as a
    crash once the reaper finds no process training it)."""
    from .runs import cancel_queued_run

    return lambda: cancel_queued_run(ws, run_id)


def start_finetune_then_distil(
    jm: JobManager,
    ws: Workspace,
    dataset_id: str,
    finetune_config=None,
    distill_config=None,
    *,
    embedder: str = "default",
    embedder_options: dict[str, Any] | None = None,
    eval_dataset_id: str | None = None,
    name: str | None = None,
) -> tuple[str, str]:
    """The ``distil`` recipe from the dashboard: queue a full fine-tune on ``dataset_id``, then its
    distillation into a linear adapter (over the ingested documents and ``eval_dataset_id``'s chunks).
    Both settings are checked before anything is queued. Returns (fine-tune run id, distil run id)."""
    from .distill import DistillConfig

    distill_config = distill_config or DistillConfig()
    distill_config.validate()
    _, ft_id = start_finetune(
        jm,
        ws,
        dataset_id,
        finetune_config,
        embedder=embedder,
        embedder_options=embedder_options,
        name=f"{name} · fine-tune" if name else None,
    )
    _, run_id = start_distill(
        jm, ws, ft_id, distill_config, eval_dataset_id=eval_dataset_id, name=name, after_teacher=True
    )
    return ft_id, run_id


def finetune_system(ws: Workspace, run: dict, name: str | None = None) -> tuple[str, Any]:
    """(label, embedder) of a ``finetune`` run: its own model, its own cache identity, and its cost in
    the label (:func:`core.finetune.system_label`: ``"<name, default the run's> · re-embeds N chunks"``)."""
    from .embedders import resolve_embedder
    from .finetune import system_label
    from .runs import has_model, model_dir

    if not has_model(ws, run["id"]):
        raise ValueError(f"run {run['name']!r} saved no fine-tuned model (status {run['status']})")
    request = run.get("config") or {}
    opts = request.get("embedder_options") or {}
    emb = resolve_embedder(
        str(model_dir(ws, run["id"])),
        workspace=ws,
        query_prefix=opts.get("query_prefix", ""),
        passage_prefix=opts.get("passage_prefix", ""),
    )
    return system_label(name or run["name"], (run.get("result") or {}).get("cost")), emb


def embedder_name(spec: str | None) -> str:
    """A short name a person reads for an embedder spec: 'all-MiniLM-L6-v2', 'text-embedding-3-small (API)'."""
    spec = (spec or "default").strip()
    if spec.startswith("st:"):
        spec = spec[3:]
    if spec in ("", "default"):
        return "all-MiniLM-L6-v2"
    if spec.startswith("openai:"):
        return f"{spec.split(':', 1)[1].strip()} (API)"
    from .onnx_embedder import split_backend

    model, backend = split_backend(spec)
    if backend != "torch":  # 'all-MiniLM-L6-v2 (ONNX int8)', not 'default@onnx-int8'
        return f"{embedder_name(model)} (ONNX {backend.removeprefix('onnx-')})"
    return Path(spec.rstrip("/\\")).name or spec


def named_specs(ws: Workspace, systems: list[SystemSpec], embedder: str = "default") -> list[tuple[str, SystemSpec]]:
    """(display name, spec) for the base embedder and each system, in order: names a person reads
    (the run's name, 'name @ step N' for a checkpoint), made unique; ids stay in the specs."""
    from .evaluation import checkpoint_name
    from .runs import get_run

    out: list[tuple[str, SystemSpec]] = [(f"base ({embedder_name(embedder)})", {"kind": "base", "spec": embedder})]
    used = {out[0][0]}
    for s in systems:
        kind = s.get("kind")
        if kind == "base":
            continue
        if kind == "api":
            name = s.get("name") or embedder_name(s["spec"])
        elif kind in ("run", "checkpoint"):
            run = get_run(ws, s["run_id"])
            if run is None and kind == "run":
                raise ValueError(f"run {s['run_id']} no longer exists")
            run_name = run["name"] if run else s["run_id"]
            name = s.get("name") or (run_name if kind == "run" else checkpoint_name(run_name, int(s["step"])))
            if kind == "run" and run.get("kind") == "finetune" and not s.get("name"):
                from .finetune import system_label

                name = system_label(run_name, (run.get("result") or {}).get("cost"))
        elif kind == "adapter_dir":
            name = s.get("name") or Path(s["path"]).name
        else:
            raise ValueError(f"unknown system kind {kind!r}")
        if name in used:  # two runs with one name: tell them apart by id
            suffix = (s.get("run_id") or "")[-6:] or str(len(used) + 1)
            name = f"{name} ({suffix})"
            while name in used:
                name += "'"
        used.add(name)
        out.append((name, s))
    return out


def build_systems(
    ws: Workspace,
    systems: list[SystemSpec],
    embedder: str = "default",
    api_key: str | None = None,
    api_base_url: str | None = None,
    embedder_options: dict[str, Any] | None = None,
    allow_custom_code: bool = False,
    allow_classes=(),
) -> dict[str, Any]:
    """Name -> embedder for :func:`core.evaluation.compare`; the base embedder is always first.
    Names are :func:`named_specs`'s. Adapters whose folder names an import path load only with
    ``allow_custom_code``; an ``adapter_dir``'s ``adapter_cls`` that is an import path loads only
    with it or when it is in ``allow_classes`` (class paths the user typed)."""
    from .adapters import load_adapter
    from .embedders import AdapterEmbedder
    from .runs import adapter_dir, get_run

    # the key/URL also serve a base that is itself an API embedder (adapters trained on API vectors)
    base = _embedder(ws, embedder, api_key=api_key, base_url=api_base_url, **(embedder_options or {}))
    out: dict[str, Any] = {}
    for name, s in named_specs(ws, systems, embedder=embedder):
        kind = s.get("kind")
        if kind == "base":
            out[name] = base
        elif kind == "api":
            out[name] = _embedder(ws, s["spec"], api_key=api_key, base_url=api_base_url, **(s.get("options") or {}))
        elif kind == "run":
            run = get_run(ws, s["run_id"])
            if run.get("kind") == "finetune":  # its own model: the evaluation corpus is embedded with it
                out[name] = finetune_system(ws, run, name=name)[1]
                continue
            out[name] = AdapterEmbedder(
                base, load_adapter(adapter_dir(ws, s["run_id"]), allow_custom_code=allow_custom_code), name=name
            )
        elif kind == "checkpoint":
            path = adapter_dir(ws, s["run_id"]) / "checkpoints" / f"step_{int(s['step'])}"
            out[name] = AdapterEmbedder(base, load_adapter(path, allow_custom_code=allow_custom_code), name=name)
        elif kind == "adapter_dir":
            out[name] = AdapterEmbedder(
                base,
                load_adapter(
                    s["path"],
                    adapter_cls=s.get("adapter_cls"),
                    allow_custom_code=allow_custom_code
                    or (bool(s.get("adapter_cls")) and s.get("adapter_cls") in allow_classes),
                ),
                name=name,
            )
    return out


def drop_checkpoints_equal_to_their_run(cmp, named: list[tuple[str, SystemSpec]]):
    """``(comparison, {checkpoint name: run name})``: a checkpoint whose results match its own run's final
    adapter on every question (the run kept that epoch) is that adapter; counted twice, it would enlarge the Holm
    family for nothing and could turn the adapter's verdict. It is left out, and the significance is
    re-adjusted over the systems that remain."""
    import numpy as np

    from .evaluation import Comparison

    finals = {s["run_id"]: n for n, s in named if s.get("kind") == "run" and n in cmp.results}
    same: dict[str, str] = {}
    for name, spec in named:
        final = finals.get(spec.get("run_id")) if spec.get("kind") == "checkpoint" else None
        if final is None or name not in cmp.results:
            continue
        a, b = cmp.results[name], cmp.results[final]
        if np.array_equal(a.first_rank, b.first_rank) and all(
            np.array_equal(v, b.per_query.get(m)) for m, v in a.per_query.items()
        ):
            same[name] = final
    if not same:
        return cmp, same
    results = {n: r for n, r in cmp.results.items() if n not in same}
    significance = {n: v for n, v in cmp.significance.items() if n not in same}
    return Comparison(cmp.dataset_name, cmp.top_k, cmp.baseline, results, significance, cmp.alpha), same


def evaluate_with_context(
    ws: Workspace,
    ds,
    dataset_name: str,
    systems: list[SystemSpec],
    top_k: int = 5,
    embedder: str = "default",
    api_key: str | None = None,
    api_base_url: str | None = None,
    embedder_options: dict[str, Any] | None = None,
    dataset_id: str | None = None,
    dataset_path: str | None = None,
    exclude_leaked: str | None = None,
    progress=None,
    allow_custom_code: bool = False,
    allow_classes=(),
):
    """Compare the systems on ``ds`` and describe what was measured (:mod:`core.provenance`).

    ``exclude_leaked`` (``questions`` or ``chunks``) drops the evaluation questions leaked from
    any adapter's training set before the statistics. Returns ``(comparison, context)``.
    """
    from .evaluation import compare
    from .provenance import build_context
    from .provenance import exclude_leaked as drop_leaked

    named = named_specs(ws, systems, embedder=embedder)
    built = build_systems(
        ws,
        systems,
        embedder=embedder,
        api_key=api_key,
        api_base_url=api_base_url,
        embedder_options=embedder_options,
        allow_custom_code=allow_custom_code,
        allow_classes=allow_classes,
    )
    cmp = compare(ds, built, baseline=next(iter(built)), top_k=top_k, dataset_name=dataset_name, progress=progress)
    cmp, same = drop_checkpoints_equal_to_their_run(cmp, named)
    named = [(n, s) for n, s in named if n not in same]
    context = build_context(
        ws, ds, dataset_name, named, next(iter(built.values())), dataset_id=dataset_id, path=dataset_path, top_k=top_k
    )
    if same:
        context["same_as_final"] = same
    if exclude_leaked:
        cmp, context = drop_leaked(cmp, context, exclude_leaked)
    return cmp, context


def start_evaluation(
    jm: JobManager,
    ws: Workspace,
    dataset_id: str,
    systems: list[SystemSpec],
    top_k: int = 5,
    embedder: str = "default",
    api_key: str | None = None,
    api_base_url: str | None = None,
    name: str | None = None,
    exclude_leaked: str | None = None,
    allow_custom_code: bool = False,
    embedder_options: dict[str, Any] | None = None,
) -> str:
    """Compare systems on a workspace dataset in the background. Result: ``{"eval_id": ...}``."""
    from .datasets import list_datasets, load_dataset
    from .reports import save_comparison

    meta = next((d for d in list_datasets(ws) if d["id"] == dataset_id), None)
    if meta is None:
        raise ValueError("that evaluation dataset no longer exists: pick another")
    custom = custom_code_systems(ws, systems)
    if custom and not allow_custom_code:
        raise ValueError(
            f"{len(custom)} adapter(s) name custom code to import ({', '.join(sorted(set(custom.values())))}): "
            "tick 'Allow custom code' if you trust that code, or leave them out."
        )

    def job(ctx: JobContext) -> dict:
        ds = load_dataset(ws, dataset_id)
        ctx.progress(0, 1, "embedding the evaluation set (cached texts are free)")
        cmp, context = evaluate_with_context(
            ws,
            ds,
            meta["name"],
            systems,
            top_k=top_k,
            embedder=embedder,
            api_key=api_key,
            api_base_url=api_base_url,
            dataset_id=dataset_id,
            embedder_options=embedder_options,
            exclude_leaked=exclude_leaked,
            progress=ctx.progress,
            allow_custom_code=allow_custom_code,
        )
        run_ids = [s["run_id"] for s in systems if s.get("kind") in ("run", "checkpoint")]
        eval_id = save_comparison(
            ws,
            cmp,
            name=name or meta["name"],
            extra={
                "dataset_id": dataset_id,
                "systems": systems,
                "run_ids": run_ids,
                "embedder": embedder,
                "embedder_options": embedder_options or {},
                "context": context,
            },
        )
        return {"eval_id": eval_id}

    return jm.submit(
        "evaluate",
        # the base model is always compared too: the title counts it, as the results table lists it
        f"Compare the base model and {len(systems)} other system(s) on {meta['name']}"
        if systems
        else f"Evaluate the base model on {meta['name']}",
        job,
        {"dataset_id": dataset_id, "systems": systems, "top_k": top_k},
    )


def job_for_run(jm: JobManager, run_id: str) -> dict | None:
    for j in jm.list(kind="train", limit=200):
        if isinstance(j.get("params"), dict) and j["params"].get("run_id") == run_id:
            return j
    return None
