"""``python -m core``: the whole pipeline headless.

    python -m core ingest data/lyft_2021.pdf data/uber_2021.pdf
    python -m core generate --generator offline --documents lyft_2021.pdf --out train.json
    python -m core train --dataset train.json --adapter linear --out adapters/linear
    python -m core finetune --dataset train.json --out models/ft      # the full fine-tune reference
    python -m core distill --teacher RUN_ID --out adapters/distilled   # that fine-tune as a query-only adapter
    python -m core evaluate --dataset eval.json --adapter adapters/linear --report report.html
    python -m core import-queries real_queries.csv --out eval.json
    python -m core export --run RUN_ID --format sentence-transformers --out models/tuned

Every command takes ``--workspace DIR`` (default ``$ADAPTERLAB_WORKSPACE`` or ``./workspace``)
and ``--json`` for machine-readable output; tables are the default. Errors are one line on
stderr naming the file or item and what to do, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class CLIError(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# output helpers
# ------------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.4f}"
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, float) for x in v):
        return f"[{v[0]:+.3f}, {v[1]:+.3f}]"
    return str(v)


def _in_points(row: dict[str, Any], metrics: Sequence[str]) -> dict[str, Any]:
    """``row`` (a :func:`core.reports.labelled_rows` row) for the table: each metric's Δ and CI in points, as the
    sentences and the report give them ("+2.2"), and its p-values to 3 decimals ("<0.001" below that)."""
    from .evaluation import p_text

    out = dict(row)
    for m in metrics:
        if f"Δ {m}" not in row:
            continue
        out[f"Δ {m} (pt)"] = f"{100 * row[f'Δ {m}']:+.1f}"
        lo, hi = row[f"{m} CI"]
        out[f"{m} CI (pt)"] = f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"
        p = row[f"{m} p (Holm)"]
        out[f"{m} p (Holm)"] = p_text(p)
    return out


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Plain-text table; columns default to the keys of the first row."""
    if not rows:
        return "(nothing)"
    cols = columns or list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, sep, *body])


class _Bar:
    """A tqdm progress bar fed by (done, total, message) callbacks; silent with --json."""

    def __init__(self, enabled: bool, desc: str):
        self.enabled = enabled and sys.stderr.isatty() or enabled and os.environ.get("ADAPTERLAB_PROGRESS") == "1"
        self.desc = desc
        self.bar = None

    def __call__(self, done: float, total: float, message: str = "") -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None or self.bar.total != total:
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=total, desc=self.desc, file=sys.stderr, leave=False)
        self.bar.n = done
        self.bar.set_postfix_str(message[:60], refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _emit(args, payload: Any, table: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(table)


def _prefixes(args) -> dict[str, str]:
    """Query/passage prefixes for sentence-transformers models that need them (E5, BGE)."""
    return {
        k: v
        for k, v in (
            ("query_prefix", getattr(args, "query_prefix", "")),
            ("passage_prefix", getattr(args, "passage_prefix", "")),
        )
        if v
    }


def _api_options(args) -> dict[str, Any]:
    """--api-timeout/--api-batch-size/--api-concurrency as resolve_embedder kwargs (only those given).

    They shape the requests of ``openai:`` embedders, not their vectors: recorded with a run,
    never part of an embedder's identity, ignored by other embedders.
    """
    return {
        k: v
        for k, v in (
            ("api_timeout", getattr(args, "api_timeout", None)),
            ("api_batch_size", getattr(args, "api_batch_size", None)),
            ("api_concurrency", getattr(args, "api_concurrency", None)),
        )
        if v is not None
    }


class _FlagDefault(str):
    """A flag's default value, told apart from the same text typed (``--embedder default``) by its type."""


def _backend_name(spec: str) -> str:
    """The backend a local model's spec runs on, as a person reads it: 'PyTorch', 'ONNX Runtime int8'."""
    from .onnx_embedder import split_backend

    backend = split_backend(spec)[1]
    return "PyTorch" if backend == "torch" else "ONNX Runtime " + backend.removeprefix("onnx-")


def _backend_label(spec: str) -> str:
    """'all-MiniLM-L6-v2 on PyTorch', 'all-MiniLM-L6-v2 on ONNX Runtime int8': a model and its backend."""
    from .launch import embedder_name
    from .onnx_embedder import split_backend

    if spec.strip().startswith("openai:"):
        return embedder_name(spec)
    return f"{embedder_name(split_backend(spec)[0])} on {_backend_name(spec)}"


def _embedder_options(args) -> dict[str, Any]:
    return {**_prefixes(args), **_api_options(args)}


def _workspace(args):
    from .workspace import Workspace

    return Workspace(args.workspace)


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------
def cmd_ingest(args) -> int:
    from .documents import ChunkSettings, ingest_files
    from .embedders import resolve_embedder

    ws = _workspace(args)
    emb = resolve_embedder(args.embedder, workspace=ws, **_embedder_options(args))
    settings = ChunkSettings(chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
    if not (math.isfinite(args.max_mb) and args.max_mb > 0):
        raise CLIError(f"--max-mb must be a positive number of megabytes, got {args.max_mb}")
    files = []
    for f in args.files:
        p = Path(f)
        if p.is_dir():
            raise CLIError(f"{f}: a folder; pass its PDF files (e.g. {Path(f) / '*.pdf'})")
        if not p.is_file():
            raise CLIError(f"{f}: no such file")
        files.append((p.name, p))
    bar = _Bar(not args.json, "ingest")
    reports = ingest_files(
        ws,
        files,
        settings,
        token_counter=emb.token_counter() if hasattr(emb, "token_counter") else None,
        max_seq_length=getattr(emb, "max_seq_length", None),
        max_bytes=int(args.max_mb * 1024 * 1024),
        progress=bar,
    )
    bar.close()
    rows = [
        {
            "file": r.filename,
            "status": r.status,
            "pages": r.pages,
            "chars": r.chars,
            "chunks": r.chunks,
            "truncated": r.truncated,
            "error": r.error,
        }
        for r in reports
    ]
    _emit(args, rows, format_table(rows))
    failed = [r.filename for r in reports if r.status == "error"]
    if not failed:
        return 0
    if len(failed) < len(reports):  # the others are in: say so, and still exit non-zero so a script notices
        print(
            f"{len(failed)} of {len(reports)} files failed ({', '.join(failed)}); the others are ingested. Fix the "
            "failed files and ingest them again, or remove them: python -m core documents --remove NAME",
            file=sys.stderr,
        )
    return 1


def _select_docs(ws, names: Sequence[str] | None) -> list[str] | None:
    from .documents import list_documents

    if not names:
        return None
    docs = [d for d in list_documents(ws) if d["status"] == "ok"]
    chosen = []
    for n in names:
        match = [d["id"] for d in docs if d["filename"] == n or d["id"].startswith(n) or d["filename"] == Path(n).name]
        if not match:
            known = ", ".join(sorted(d["filename"] for d in docs)) or "none (run ingest first)"
            raise CLIError(f"document {n!r} is not in the workspace; ingested documents: {known}")
        chosen.extend(match)
    return chosen


def cmd_generate(args) -> int:
    from .datasets import DatasetError, build_dataset, split_dataset
    from .generators import DEFAULT_PROMPT_TEMPLATE, LLMGenerator, estimate_generation
    from .llm import LLMSettings
    from .questions import (
        answered_by_text,
        generate_questions,
        nothing_generated,
        pending_chunks,
        sampled_chunk_ids,
        shortfall_text,
    )
    from .runs import ingested_chunks

    ws = _workspace(args)
    _check_out_file(args.out, "--out")
    _check_out_file(args.val_out, "--val-out")
    if args.out and args.val_out and Path(args.out).resolve() == Path(args.val_out).resolve():
        raise CLIError(
            f"--out and --val-out are the same file ({args.out}): the validation side would overwrite the training side"
        )
    doc_ids = _select_docs(ws, args.documents)
    chunks = ingested_chunks(ws, doc_ids)
    if not chunks:
        raise CLIError("no chunks to generate questions from: run `python -m core ingest FILE.pdf` first")
    if args.sample_chunks is not None and args.sample_chunks < 1:
        raise CLIError(f"--sample-chunks must be at least 1, got {args.sample_chunks}")
    # None = every chunk; a sample keeps the same chunks for the same --seed, so a rerun resumes them
    chunk_ids = sampled_chunk_ids(ws, doc_ids, args.sample_chunks, args.seed)
    template = DEFAULT_PROMPT_TEMPLATE
    if args.prompt_file:
        template = Path(args.prompt_file).read_text(encoding="utf-8")
    if args.generator == "llm":
        settings = LLMSettings(model=args.model, base_url=args.base_url, concurrency=args.concurrency).resolved()
        if settings.api_key is None and settings.base_url is None:  # OpenAI itself, and nothing to sign with
            raise CLIError(
                "no API key for OpenAI: set OPENAI_API_KEY, or give --base-url for an OpenAI-compatible server "
                "(a local one may need no key); --generator offline needs neither"
            )
        generator = LLMGenerator(settings, prompt_template=template)
        todo = pending_chunks(ws, generator, args.questions_per_chunk, doc_ids=doc_ids, chunk_ids=chunk_ids)
        est = estimate_generation(
            [c["text"] for c in todo], args.questions_per_chunk, template, settings.model, settings.resolved().base_url
        )
        print(
            f"estimate for {len(todo)} of {len(chunk_ids or chunks)} chunks still to do: {est['calls']} calls, "
            f"~{est['prompt_tokens']:,} prompt + ~{est['completion_tokens']:,} "
            f"completion tokens"
            + (f", ~${est['cost_usd']:.2f}" if est.get("cost_usd") is not None else "")
            + ("" if est["priced"] else " (not priced: not OpenAI's API)"),
            file=sys.stderr,
        )
    else:
        from .pseudo_queries import offline_generator

        generator = offline_generator(args.offline_method, seed=args.seed)
    from .provenance import record_generator

    record_generator(ws, generator, args.questions_per_chunk)  # so evaluation sets can name the LLM
    bar = _Bar(not args.json, "generate")
    try:
        with _one_interrupt():
            report = generate_questions(
                ws,
                generator,
                questions_per_chunk=args.questions_per_chunk,
                doc_ids=doc_ids,
                chunk_ids=chunk_ids,
                progress=bar,
            )
    except KeyboardInterrupt:  # each finished chunk was saved as it finished
        raise CLIError(
            "interrupted; the chunks finished before it are saved: rerun the same command to resume"
        ) from None
    finally:
        bar.close()
    failures = report.get("failures") or []
    if nothing_generated(report):  # nothing new: no file that looks fine
        raise CLIError(
            f"every chunk this run tried failed ({len(failures)}); nothing was written. First error: "
            f"{failures[0]['error'].rstrip('.')}. Fix it and rerun the same command (finished chunks are kept)"
        )
    # the questions this generator made (the workspace may also hold other generators' questions), and with a
    # sample, only its chunks' (an earlier sample's questions would otherwise join this one's file)
    try:
        ds = build_dataset(ws, doc_ids=doc_ids, sources=[args.generator], chunk_ids=chunk_ids)
    except DatasetError:
        if report["questions_added"] or not report["chunks_total"]:
            raise
        how = (
            "offline questions are made from sentences that say something (not headings, table rows or text "
            "repeated across the documents); a document of mostly tables, or the same text in two files, can "
            "leave none. Try --generator llm, another --offline-method, or remove a duplicate document"
            if args.generator == "offline"
            else "the model answered without a usable question; check the model and the prompt template"
        )
        raise CLIError(
            f"no question could be made from the {report['chunks_total']} chosen chunk(s), so nothing was written: "
            f"{how}"
        ) from None
    out: dict[str, Any] = {"report": report}
    if args.val_out:
        by = args.split_by
        if by is None:  # whole documents where there are two or more; one document can only be split by chunk
            n_docs = len({ds.document_of(n) for n in ds.corpus} - {None})
            by = "document" if n_docs >= 2 or args.val_documents else "chunk"
            if by == "chunk":
                print(
                    "note: one document, so --val-out holds out chunks with all their questions (--split-by chunk); "
                    "with two or more documents the default holds out whole documents",
                    file=sys.stderr,
                    flush=True,
                )
        train_ds, val_ds = split_dataset(
            ds,
            by=by,
            val_fraction=args.val_fraction,
            seed=args.seed,
            val_docs=_select_docs(ws, args.val_documents),
        )
        train_ds.save(args.out)
        val_ds.save(args.val_out)
        out.update(train=args.out, val=args.val_out, n_train=len(train_ds.queries), n_val=len(val_ds.queries))
    else:
        ds.save(args.out)
        out.update(dataset=args.out, n_queries=len(ds.queries), n_corpus=len(ds.corpus))
    if args.generator == "llm":  # questions no user would type ("the passage", no question mark): counted, kept
        from .question_filter import filter_dataset

        flagged = filter_dataset(ds)[1]
        out["unsearchable"] = len(flagged)
        if flagged:
            out["unsearchable_examples"] = [ds.queries[q] for q in list(flagged)[:3]]
    rows = [
        {"output": k, "value": v}
        for k, v in out.items()
        if k not in ("report", "unsearchable", "unsearchable_examples")
    ]
    rows += [
        {"output": k, "value": v} for k, v in report.items() if k not in ("failures", "model_requested", "answered_by")
    ]
    if answered := answered_by_text(report):  # a local server answers any model name: say which one wrote them
        rows.append({"output": "model", "value": answered})
    if short := shortfall_text(report):  # fewer questions than asked for: said, not only counted
        rows.append({"output": "fewer questions", "value": short})
    if out.get("unsearchable"):
        rows.append(
            {
                "output": "unsearchable questions",
                "value": f"{out['unsearchable']} name the passage, lack a question mark or copy their chunk (e.g. "
                f"{out['unsearchable_examples'][0]!r}); kept: the Questions page lists and removes them",
            }
        )
    if failures:
        rows.append({"output": "failed chunks", "value": f"{len(failures)} (rerun the same command to retry them)"})
    _emit(args, out, format_table(rows))
    return 0


def cmd_distill(args) -> int:
    from .runs import create_distill_run, get_run

    ws = _workspace(args)
    for p in (args.dataset, args.eval_dataset):
        if p and not Path(p).is_file():
            raise CLIError(f"{p}: no such dataset file")
    _check_out_folder(args.out)
    teacher = get_run(ws, args.teacher)
    if teacher is not None and (teacher["kind"] != "finetune" or teacher["status"] != "done"):
        raise CLIError(f"run {args.teacher} is not a finished full fine-tune: run `python -m core finetune` first")
    from .distill import DistillConfig

    given = {
        k: getattr(args, k)
        for k in ("steps", "lr", "temperature", "pseudo_queries", "teacher_max_tokens", "teacher_blend")
    }
    cfg = DistillConfig(seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    try:
        run_id = create_distill_run(
            ws,
            args.teacher,
            cfg,
            dataset_path=str(Path(args.dataset).resolve()) if args.dataset else None,
            doc_ids=_select_docs(ws, args.documents),
            eval_dataset_path=str(Path(args.eval_dataset).resolve()) if args.eval_dataset else None,
            embedder=args.embedder,
            embedder_options=_prefixes(args),
            name=args.name,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    result = _run_with_bar(args, ws, run_id, "distil", "saved no adapter")
    out = {"run_id": run_id, "out": str(Path(args.out)) if args.out else None, **result.summary()}
    rows = [{"output": k, "value": v} for k, v in out.items() if k != "config"]
    table = format_table(rows) + (
        f"\n\nrun {run_id}: the adapter is in the workspace (and in {args.out})"
        if args.out
        else f"\n\nrun {run_id}: the adapter is in the workspace"
    )
    table += f"; compare it with `python -m core evaluate --dataset EVAL.json --run {run_id}`"
    if "searched" in out and not out["searched"]:
        from .carryover import blind_distillation_note

        table += "\nnote: " + blind_distillation_note()
    _emit(args, out, table)
    return _cancelled_exit(run_id, result.cancelled, args.out)


def _train_config(args):
    from dataclasses import fields

    from .training import TrainConfig

    adapter = args.adapter or "linear"
    if args.llamaindex_defaults:
        cfg = TrainConfig.llamaindex_defaults(adapter, epochs=args.epochs or 4)
    else:
        cfg = TrainConfig(adapter=adapter)
    try:
        kwargs = json.loads(args.adapter_kwargs) if args.adapter_kwargs else {}
    except json.JSONDecodeError as exc:
        raise CLIError(f"--adapter-kwargs is not JSON ({exc.msg}): write it like '{{\"rank\": 16}}'") from None
    if not isinstance(kwargs, dict):
        raise CLIError(f"--adapter-kwargs must be a JSON object, like '{{\"rank\": 16}}'; got {args.adapter_kwargs}")
    if args.hidden_features is not None:  # 0 is refused by the check below, not taken as "the default"
        kwargs["hidden_features"] = args.hidden_features
    if args.bias:
        kwargs["bias"] = True
    cfg.adapter_kwargs = kwargs
    # every setting the parser has a flag for (adapter and adapter_kwargs are handled above): a new
    # TrainConfig field needs only its add_argument below
    for name in (f.name for f in fields(TrainConfig) if f.name not in ("adapter", "adapter_kwargs")):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    cfg.validate()
    from .adapters import resolve_adapter_class

    # an unknown adapter fails before a run is created; an import path typed here is the user's opt-in
    resolve_adapter_class(cfg.adapter, allow_import=True)
    return cfg


_ARGS_OUT: Any = object()  # _run_with_bar's default: the command's own --out


def _chosen_cell(cv: Any, lr: float, epoch: int) -> str:
    """The CV table's "chosen" cell: ``*`` on the candidate trained (with its shrinkage alpha, since the gain
    column is the full step), or on epoch 0 when the identity is kept; else empty."""
    if cv.train and lr == cv.lr and epoch == cv.epochs:
        if cv.alpha != 1 and cv.shrunk_point:  # the shrunk copy's own row follows
            return f"shrunk by alpha {cv.alpha:g}: next row"
        return f"* (alpha {cv.alpha:g})" if cv.alpha != 1 else "*"
    return "*" if not cv.train and epoch == 0 else ""


def _cv_rows(cv: Any, top_k: int) -> list[dict[str, Any]]:
    """The CV table: per learning rate and epoch, the mean ± std across folds of hit@k and MRR@k and the pooled
    gain, at alpha 1 (the full step); a shrunk choice gets its own row after the full step it was shrunk from."""

    def row(lr: str, epoch: Any, p: dict[str, float], chosen: str) -> dict[str, Any]:
        return {
            "lr": lr,
            "epoch": epoch,
            **{m: f"{p[f'{m} mean']:.3f} ± {p[f'{m} std']:.3f}" for m in (f"hit@{top_k}", f"mrr@{top_k}")},
            "gain (pt)": f"{100 * p['gain']:+.2f} ± {100 * p['gain_se']:.2f}",
            "chosen": chosen,
        }

    rows = []
    for lr, curve in cv.curves.items():
        for p in curve:
            rows.append(row(lr, p["epoch"], p, _chosen_cell(cv, float(lr), p["epoch"])))
            if cv.shrunk_point and cv.train and float(lr) == cv.lr and p["epoch"] == cv.epochs:
                rows.append(row(lr, f"{p['epoch']}, alpha {cv.alpha:g}", cv.shrunk_point, "* (this one)"))
    return rows


def _check_out_file(path: str | None, flag: str) -> None:
    """Before the work starts: a file ``flag`` names must not be a folder (found only when it is written)."""
    if path and Path(path).is_dir():
        raise CLIError(f"{flag} {path}: that is a folder; give a file name")


def _check_out_folder(out: str | None) -> None:
    """Before a run starts: ``--out`` must be a folder this process can create or write (a file there, or a
    parent it may not write, would fail only after minutes of training)."""
    if not out:
        return
    from .export import ExportError, check_output_folder

    path = Path(out)
    try:
        check_output_folder(path)
    except ExportError as exc:
        raise CLIError(f"--out {exc}") from None
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"--out {out}: cannot write under {parent}; give a folder you can write to")


def _run_with_bar(args, ws, run_id: str, label: str, on_interrupt: str, out_dir: Any = _ARGS_OUT, **kwargs: Any):
    """:func:`core.runs.execute_run` with a progress bar (unless ``--json``) and ``--out`` (or ``out_dir``:
    ``None`` keeps the result in the workspace only). SIGINT (Ctrl-C) or SIGTERM cancels the run
    (:func:`_signals_cancel`; the run's record says which, and :func:`_cancelled_exit` exits 128 + its number); a
    second Ctrl-C ends it as one clear error, ``interrupted; run RUN_ID <on_interrupt>``."""
    from .runs import execute_run, note_cancel_reason

    out = args.out if out_dir is _ARGS_OUT else out_dir
    bar = _Bar(not args.json, label)
    cancel = threading.Event()
    try:
        with _signals_cancel(run_id, cancel, bar):
            result = execute_run(ws, run_id, progress=bar, cancel=cancel, out_dir=out, **kwargs)
    except KeyboardInterrupt:
        raise CLIError(f"interrupted; run {run_id} {on_interrupt}") from None
    finally:
        bar.close()
    signum = _STOPPED_BY.get(run_id)
    if signum is not None and result.cancelled:
        note_cancel_reason(ws, run_id, f"stopped by {_signal_name(signum)}; its best state before the signal was saved")
    return result


#: run id -> the signal (SIGINT or SIGTERM) that cancelled it in this process (:func:`_signals_cancel`)
_STOPPED_BY: dict[str, int] = {}
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@contextmanager
def _signals_cancel(run_id: str, cancel: threading.Event, bar: _Bar) -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM (``kill``, ``timeout``, a job scheduler stopping the command) cancel the run as
    the Train page's Cancel does: it stops after its current step, saves its best state so far and ends
    ``cancelled``, where a killed run stayed ``running`` (SIGTERM) or ended ``interrupted`` with checkpoints only
    (Ctrl-C). One line on stderr says so at once.

    A second one stops at once, as it would without this: Ctrl-C raises KeyboardInterrupt (the run ends
    ``interrupted``, its checkpoints kept; more Ctrl-C while that unwinds are ignored, as :func:`_one_interrupt`
    explains), SIGTERM ends the process (its run's ``owner`` then names a dead process, so the next reaper, the
    dashboard's or ``python -m core runs``, marks it ``interrupted`` without waiting for its heartbeat to age).
    A signal this process ignores (``nohup``, a background job's Ctrl-C) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}

    def handler(signum: int, frame: Any) -> None:
        name = _signal_name(signum)
        if run_id not in _STOPPED_BY:
            _STOPPED_BY[run_id] = signum
            cancel.set()
            line = (
                f"{name}: stopping run {run_id} after its current step, keeping its best state so far "
                f"({name} again stops it at once)\n"
            )
            # os.write, not print: the handler may run inside the progress bar's own write to sys.stderr
            os.write(2, (("\n" if bar.bar is not None else "") + line).encode())
            return
        before = previous[signum]
        if before is signal.default_int_handler:
            signal.signal(signum, signal.SIG_IGN)
            raise KeyboardInterrupt
        signal.signal(signum, before)
        signal.raise_signal(signum)  # SIG_DFL: the process ends here

    caught = [s for s in _STOP_SIGNALS if previous[s] not in (signal.SIG_IGN, None)]
    for s in caught:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s in caught:
            signal.signal(s, previous[s])


@contextmanager
def _one_interrupt() -> Iterator[None]:
    """Ctrl-C stops a command (KeyboardInterrupt: ``generate``) once; more Ctrl-C while it stops are ignored,
    so that stopping is not cut halfway: in a training command (whose second Ctrl-C does the same, see
    :func:`_signals_cancel`: marking the run interrupted, ending the cross-validation's fold threads) a second
    interrupt inside a lock's release left a bare RuntimeError instead."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
        signal.SIG_IGN,
        None,
    ):
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def first(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


#: ``train`` flags that only the ``adapter`` recipe reads: given one, ``auto`` trains the adapter
_ADAPTER_ONLY = ("adapter", "adapter_kwargs", "hidden_features", "bias", "llamaindex_defaults", "val_dataset")


def _adapter_flags(args) -> list[str]:
    """The adapter-only flags given on the command line (as ``--flag``)."""
    from dataclasses import fields

    from .training import TrainConfig

    given = [n for n in _ADAPTER_ONLY if getattr(args, n, None)]  # store_true flags default to False
    given += [
        f.name
        for f in fields(TrainConfig)
        if f.name not in ("seed", "device", *_ADAPTER_ONLY) and getattr(args, f.name, None) is not None
    ]
    return ["--" + n.replace("_", "-") for n in given]


def _attention_dropout(value: str) -> float | str:
    """``finetune --attention-dropout``: ``auto``, ``model`` or a rate, checked by :class:`FinetuneConfig`'s rule."""
    from .finetune import FinetuneConfig, FinetuneError

    word = value.strip().lower()
    try:
        setting: float | str = float(word)
    except ValueError:
        setting = word
    try:
        FinetuneConfig(attention_dropout=setting).validate()
    except FinetuneError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return setting


def _recipe(args, ws) -> tuple[str, str]:
    """(recipe, why) of a ``train`` command (core.distill.choose_recipe for ``auto``)."""
    from .datasets import QADataset
    from .runs import auto_recipe

    given = _adapter_flags(args)
    if args.recipe == "distil" and given:
        raise CLIError(f"{', '.join(given)} set(s) the adapter recipe's training; --recipe distil does not read them")
    if args.recipe == "adapter":
        return "adapter", "--recipe adapter"
    if args.recipe == "auto" and given:
        return "adapter", f"adapter settings given ({', '.join(given)})"
    eval_ds = QADataset.load(args.eval_dataset) if args.eval_dataset else None
    recipe, why = auto_recipe(ws, QADataset.load(args.dataset), eval_ds, args.embedder)
    if args.recipe == "distil" and recipe != "distil":
        from .export import is_api_embedder

        if is_api_embedder(args.embedder):
            raise CLIError(f"--recipe distil: {why}")
        from .distill import OFFLINE_REASON

        if eval_ds is not None or OFFLINE_REASON in why:  # auto's reason says what it measured for these
            return "distil", f"--recipe distil; auto would train the adapter: {why}"
        return "distil", (
            "--recipe distil; nothing says which documents you will search, and distilled over other documents "
            "the adapter can lose on them"
        )
    return recipe, why


def _offline_note(ws, path: str, separate: bool = True) -> str | None:
    """The Train page's warning for a training file of offline pseudo-queries (by this workspace's record of
    the questions it generated), naming the CLI's distil recipe, and, when they and written questions ask about
    separate chunks and ``separate`` (the run's ``separate_sources``), what training does about it; ``None`` for
    other questions."""
    from .carryover import mixed_sources_note, offline_training_caveat
    from .datasets import QADataset
    from .provenance import question_sources
    from .runs import separate_source_chunks

    ds = QADataset.load(path)
    n = question_sources(ws, ds)["sources"].get("offline", 0)
    if not n:
        return None
    note = offline_training_caveat(n, len(ds.queries), distil_how="`train --recipe distil`")
    apart = separate_source_chunks(ws, ds) if separate else None
    return note + (" " + mixed_sources_note(*apart) if apart else "")


def _mixed_distil_note(ws, path: str) -> str | None:
    """For the distil recipe: what it did with a training file whose offline and written questions (by this
    workspace's record) ask about separate chunks (:func:`core.carryover.mixed_sources_distil_note`); else None."""
    from .carryover import mixed_sources_distil_note
    from .datasets import QADataset
    from .runs import separate_source_chunks

    apart = separate_source_chunks(ws, QADataset.load(path))
    if not apart:
        return None
    return (
        f"offline pseudo-queries and written questions here ask about separate chunks ({apart[0]:,} offline-only, "
        f"{apart[1]:,} written-only). {mixed_sources_distil_note()}"
    )


def _finetune_run(args, ws, config, name: str | None) -> str:
    """A ``finetune`` run of ``--dataset`` on ``--embedder`` (with its prefixes): ``finetune`` and ``train``'s
    distil recipe create theirs the same way."""
    from .runs import create_finetune_run

    return create_finetune_run(
        ws,
        config,
        dataset_path=str(Path(args.dataset).resolve()),
        embedder=args.embedder,
        embedder_options=_prefixes(args),
        name=name,
    )


def _distil_expectation(args, ws, ft_cfg, dcfg) -> str:
    """One line, before the distil recipe starts: the fine-tune's steps and, at the pace of this workspace's
    last fine-tune of the same base model, how long both runs should take (core.distill.recipe_estimate)."""
    from .datasets import QADataset
    from .distill import recipe_estimate
    from .finetune import duration_text, training_pairs
    from .runs import distil_chunks, list_runs

    ds = QADataset.load(args.dataset)
    eval_ds = QADataset.load(args.eval_dataset) if args.eval_dataset else None
    n_ranked = len(dict.fromkeys(distil_chunks(ws, ds, eval_ds)))
    n_pairs = len(training_pairs(ds)[0])
    est = recipe_estimate(
        list_runs(ws),
        args.embedder,
        n_pairs,
        n_ranked,
        epochs=ft_cfg.epochs,
        batch_size=ft_cfg.batch_size,
        max_ranked_chunks=dcfg.max_ranked_chunks,
    )
    line = f"expect: a fine-tune of {est['steps']:,} step{'s' * (est['steps'] != 1)} of {ft_cfg.batch_size} questions"
    if est["finetune_seconds"] is None:
        return line + f" (several seconds each on a CPU), then a distillation ranking {n_ranked:,} chunks"
    line += f" (about {duration_text(est['finetune_seconds'])}), then a distillation ranking {n_ranked:,} chunks"
    if est["distil_seconds"] is not None:
        line += f" (about {duration_text(est['distil_seconds'])})"
    return line + f", at this machine's pace in {est['basis']}"


def _train_distil(args, ws, why: str) -> int:
    """``train`` by the distil recipe: a full fine-tune run, then a distillation run of it (two runs)."""
    from .distill import DistillConfig
    from .finetune import FinetuneConfig, duration_text
    from .runs import create_distill_run

    seed = args.seed if args.seed is not None else 0
    ft_cfg = FinetuneConfig(seed=seed, **({"device": args.device} if args.device else {}))
    dcfg = DistillConfig(seed=seed)
    mixed = _mixed_distil_note(ws, args.dataset)
    if not args.json:
        print(f"recipe: distil ({why})", file=sys.stderr, flush=True)
        print(_distil_expectation(args, ws, ft_cfg, dcfg), file=sys.stderr, flush=True)
        if mixed:
            print(f"note: {mixed}", file=sys.stderr, flush=True)
    ft_id = _finetune_run(args, ws, ft_cfg, f"{args.name} · fine-tune" if args.name else None)
    # the fine-tuned model stays in the workspace; --out receives the adapter
    ft = _run_with_bar(args, ws, ft_id, "fine-tune", "saved no model", out_dir=None)
    if ft.cancelled and ft_id in _STOPPED_BY:  # a signal stops the command, not only this run: no distillation
        return _cancelled_exit(ft_id, True, None)
    if ft.cancelled or ft.out_dir is None:
        raise CLIError(f"the fine-tune (run {ft_id}) ended without a model: nothing to distil")
    run_id = create_distill_run(
        ws,
        ft_id,
        dcfg,
        eval_dataset_path=str(Path(args.eval_dataset).resolve()) if args.eval_dataset else None,
        name=args.name,
    )
    result = _run_with_bar(args, ws, run_id, "distil", "saved no adapter")
    summary = {"recipe": "distil", "reason": why, "run_id": run_id, "finetune_run_id": ft_id, **result.summary()}
    if mixed:
        summary["note"] = mixed
    d_seconds = result.details.get("seconds") or 0.0
    rows = [
        {"step": "fine-tune", "run": ft_id, "took": duration_text(ft.seconds), "detail": f"{ft.steps} steps"},
        {
            "step": "distil",
            "run": run_id,
            "took": duration_text(d_seconds),
            "detail": f"KL {result.details.get('first_loss') or 0:.4f} -> {result.details.get('final_loss') or 0:.4f}, "
            f"{result.details.get('n_chunks')} chunks ranked",
        },
    ]
    table = format_table(rows) + (
        f"\n\nrecipe: distil ({why})\nthe adapter maps the base model's query vectors: your index stays as it is"
        + (
            f" (the fine-tuned model, run {ft_id}, would re-embed {ft.n_corpus_chunks:,} chunks)"
            if ft.n_corpus_chunks
            else ""
        )
        + (f"\nadapter saved to {args.out}" if args.out else f"\nadapter in {ws.run_dir(run_id) / 'adapter'}")
        + f"\ncompare it with `python -m core evaluate --dataset EVAL.json --run {run_id}`"
    )
    _emit(args, summary, table)
    return _cancelled_exit(run_id, result.cancelled, args.out)


def cmd_train(args) -> int:
    from .runs import create_run

    ws = _workspace(args)
    for p in (args.dataset, args.val_dataset, args.eval_dataset):
        if p and not Path(p).is_file():
            raise CLIError(f"{p}: no such dataset file")
    _check_out_folder(args.out)
    from .datasets import QADataset

    train_ds = QADataset.load(args.dataset)  # validate before creating the run
    recipe, why = _recipe(args, ws)
    if recipe == "distil":
        return _train_distil(args, ws, why)
    cfg = _train_config(args)
    run_id = create_run(
        ws,
        cfg,
        dataset_path=str(Path(args.dataset).resolve()),
        val_dataset_path=str(Path(args.val_dataset).resolve()) if args.val_dataset else None,
        eval_dataset_path=str(Path(args.eval_dataset).resolve()) if args.eval_dataset else None,
        embedder=args.embedder,
        embedder_options=_embedder_options(args),
        name=args.name,
    )
    result = _run_with_bar(
        args, ws, run_id, "train", f"keeps its checkpoints under {ws.run_dir(run_id)}", allow_custom_code=True
    )
    if args.out and result.checkpoints:
        src = ws.run_dir(run_id) / "adapter" / "checkpoints"
        shutil.copytree(src, Path(args.out) / "checkpoints", dirs_exist_ok=True)
    rows = []
    for h in result.val_history:
        row = {"epoch": h["epoch"], "train_loss": h["train_loss"]}
        row.update(h["val"] or {})
        row["best"] = "*" if h["epoch"] == result.best_epoch else ""
        rows.append(row)
    summary = {"run_id": run_id, **result.summary()}
    if result.cv is not None:
        rows = _cv_rows(result.cv, cfg.top_k)
    table = format_table(rows) if rows else "(no validation: the last epoch is kept)"
    if result.cv is not None:
        table += "\n\n" + result.cv.summary_line() + f"\nrule: {result.cv.rule}"
        if result.cv.shrinkage:
            by_alpha = ", ".join(f"{a} {100 * g:+.2f}" for a, g in result.cv.shrinkage.items())
            table += f"\ngain at epoch {result.cv.epochs} by shrinkage alpha (pt): {by_alpha} " + (
                "(the table's rows are alpha 1, the full step, but the chosen one's)"
                if result.cv.shrunk_point
                else "(the table's gain column is alpha 1, the full step)"
            )
    table += (
        f"\n\nrun {run_id}: best epoch {result.best_epoch}"
        + (
            " (the untrained identity: training did not beat the base model on validation)"
            if result.best_epoch == 0 and rows
            else ""
        )
        + (f" ({result.filtered_out} unsearchable question(s) filtered out)" if result.filtered_out else "")
        + f"; {result.n_train_queries} training / {result.n_val_queries} validation questions; {result.seconds:.1f}s"
        + (f"\nadapter saved to {args.out}" if args.out else f"\nadapter in {ws.run_dir(run_id) / 'adapter'}")
    )
    if args.eval_dataset and (args.recipe == "adapter" or _adapter_flags(args)):
        # the adapter by hand where auto would distil (auto's own choice of the adapter already weighed it: on
        # documents cut into chunks the base model reads whole the distillation gained no more)
        from .runs import auto_recipe

        if auto_recipe(ws, train_ds, QADataset.load(args.eval_dataset), args.embedder)[0] == "distil":
            table += (
                "\nthe evaluation set is other documents, mostly in chunks longer than the base model reads: there, on "
                "the measured protocols (bench/README), an adapter trained on the questions gained little and a full "
                "fine-tune distilled into an adapter gained more, and `--recipe auto` would run that: the same command "
                "with `--recipe distil` (and no adapter settings)"
            )
    from .train_config import SEPARATE_SOURCES_NOTE

    if SEPARATE_SOURCES_NOTE in (result.negatives or ""):
        table += f"\nnegatives: {result.negatives}"
    cv = result.cv
    if (
        cv is not None
        and not args.eval_dataset
        and cv.design == "chunks"
        and not cv.stand_in
        and cfg.cv_design == "auto"
        and cfg.cv_validation == "auto"
    ):
        from .selection import BLIND_NOTE

        blind = (
            f"{BLIND_NOTE}. If real queries will ask about these same chunks, `--cv-design questions` validates for "
            "that; if they will search other documents, name them with `--eval-dataset`"
        )
        table += f"\nnote: {blind}"
        summary["validation_note"] = blind
    table += f"\nrecipe: adapter ({why})"
    summary = {"recipe": "adapter", "reason": why, **summary}
    offline = _offline_note(ws, args.dataset, separate=cfg.separate_sources)
    if offline:
        table += f"\nnote: {offline}"
        summary["offline_caveat"] = offline
    if args.val_dataset and args.recipe == "auto":  # LlamaIndex's guide validates on the other company's questions
        from .runs import validation_elsewhere

        elsewhere = validation_elsewhere(ws, train_ds, QADataset.load(args.val_dataset), args.embedder)
        if elsewhere:
            table += f"\nnote: {elsewhere}"
            summary["validation_note"] = elsewhere
    _emit(args, {**summary, "history": result.val_history}, table)
    return _cancelled_exit(run_id, result.cancelled, args.out)


def _cancelled_exit(run_id: str, cancelled: bool, out: str | None) -> int:
    """0, or for a run cancelled while it trained 1 (from the Train page, say) or 128 + the signal's number (130
    for SIGINT, 143 for SIGTERM: what a shell, ``timeout --preserve-status`` or a scheduler reads as "ended by
    that signal"), with a line saying so: its saved state is the best before the stop, not the run the command
    asked for."""
    signum = _STOPPED_BY.pop(run_id, None)
    if not cancelled:
        return 0
    where = f"{out} holds" if out else "the workspace keeps"
    if signum is not None:
        print(
            f"run {run_id} was stopped by {_signal_name(signum)} before it finished: {where} its best state before "
            "the stop, not a full run",
            file=sys.stderr,
        )
        return 128 + signum
    print(
        f"run {run_id} was cancelled before it finished: {where} its best state before the cancel, not a full run",
        file=sys.stderr,
    )
    return 1


def cmd_finetune(args) -> int:
    from dataclasses import fields

    from .datasets import QADataset
    from .finetune import FinetuneConfig, batches_note, describe_cost
    from .runs import get_run

    ws = _workspace(args)
    if not Path(args.dataset).is_file():
        raise CLIError(f"{args.dataset}: no such dataset file")
    _check_out_folder(args.out)
    QADataset.load(args.dataset)  # validate before creating the run
    cfg = FinetuneConfig(**{f.name: getattr(args, f.name) for f in fields(FinetuneConfig)})
    run_id = _finetune_run(args, ws, cfg, args.name)
    result = _run_with_bar(args, ws, run_id, "fine-tune", "saved no model")
    summary = {"run_id": run_id, **((get_run(ws, run_id) or {}).get("result") or result.summary())}
    epochs = [h for h in result.history if h.get("type") == "epoch"]
    rows = [{"epoch": h["epoch"], "steps": h["step"], "train_loss": h["train_loss"]} for h in epochs]
    table = format_table(rows) if rows else "(no training step)"
    where = args.out or (str(result.out_dir) if result.out_dir else None)
    table += (
        f"\n\nrun {run_id}: full fine-tune of {args.embedder}, {result.steps} steps on "
        f"{result.n_train_queries} questions"
        + (" (cancelled)" if result.cancelled else "")
        + (f"\nbatches: {batches_note(result.batches)}" if result.batches else "")
        + f"\n{describe_cost(result.cost())}"
        + (
            f"\nmodel saved to {where} (a sentence-transformers folder); compare it with "
            f"`python -m core evaluate --dataset EVAL.json --run {run_id}`"
            if where
            else "\nno model was saved"
        )
    )
    _emit(args, summary, table)
    return _cancelled_exit(run_id, result.cancelled, args.out)


def _distil_command(ws, act: dict[str, Any], args) -> str:
    """The ``train --recipe distil`` line for a caveat's distil action (:func:`core.summary.caveats`): the
    adapter run's base and query/passage prefixes, as Compare's button queues it; for an adapter folder,
    the prefixes this ``evaluate`` gave the base."""
    from .runs import get_run

    run = get_run(ws, act["run_id"]) if act.get("run_id") else None
    opts = (run["config"].get("embedder_options") or {}) if run else _prefixes(args)
    flags = [] if act.get("embedder") in (None, "default") else ["--embedder", act["embedder"]]
    for k in ("query_prefix", "passage_prefix"):
        if opts.get(k):
            flags += [f"--{k.replace('_', '-')}", opts[k]]
    cmd = ["python", "-m", "core", "train", "--dataset", act["dataset_path"], "--eval-dataset", act["eval_path"]]
    return (
        f"NEXT: {shlex.join([*cmd, '--recipe', 'distil', *flags])} --out DIR   (minutes; then evaluate with "
        "--adapter DIR)"
    )


def _base_for_runs(ws, args) -> tuple[str, dict[str, Any]]:
    """The base embedder and options ``evaluate`` runs with: the flags', unless the ``--run`` adapters were
    trained on another base model or with other prefixes. An adapter maps its own base model's vectors, so it
    is measured on them: with no base flag given and every run on one base, that base (said on stderr); else a
    one-line error with the flags to give. Runs on different bases cannot share one comparison."""
    from .onnx_embedder import split_backend
    from .runs import get_run

    given = (args.embedder, _prefixes(args))
    bases: dict[str, tuple[str, dict[str, str]]] = {}
    for run_id in args.run or []:
        run = get_run(ws, run_id) or {}
        req = run.get("config") or {}
        if run.get("kind") == "finetune":  # its own model embeds everything
            continue
        opts = req.get("embedder_options") or {}
        bases[run_id] = (
            req.get("embedder") or "default",
            {k: v for k, v in opts.items() if k.endswith("_prefix") and v},
        )
    # the same model on another backend (ONNX: vectors within about 0.99 cosine) is the user's own choice
    other = {r: b for r, b in bases.items() if (split_backend(b[0])[0], b[1]) != (split_backend(given[0])[0], given[1])}
    if not other:
        spec = args.embedder
        own = {b[0] for b in bases.values()}
        if (
            not getattr(args, "embedder_given", True)
            and len(own) == 1
            and split_backend(next(iter(own)))[1] != (split_backend(spec)[1])
        ):  # no --embedder: the runs' own backend, as their own model and prefixes
            spec = next(iter(own))
            print(
                f"evaluating on the base model the run{'s were' if len(bases) > 1 else ' was'} trained on "
                f"({_backend_label(spec)}): --embedder {shlex.quote(spec)}",
                file=sys.stderr,
            )
        elsewhere: dict[str, list[str]] = {}
        for run_id, base in bases.items():
            if split_backend(base[0])[1] != split_backend(spec)[1]:
                elsewhere.setdefault(base[0], []).append(run_id)
        if elsewhere:  # a backend named outright: allowed, and said (one line)
            print(
                f"evaluating on {_backend_label(spec)} (--embedder {shlex.quote(spec)}); "
                + "; ".join(
                    f"run{'s' if len(ids) > 1 else ''} {', '.join(ids)} {'were' if len(ids) > 1 else 'was'} trained on "
                    f"its {_backend_name(other_spec)} backend (--embedder {shlex.quote(other_spec)} measures "
                    f"{'them' if len(ids) > 1 else 'it'} there)"
                    for other_spec, ids in elsewhere.items()
                )
                + ": the same model, near-identical vectors",
                file=sys.stderr,
            )
        return spec, _embedder_options(args)

    def flags(base: tuple[str, dict[str, str]]) -> str:
        out = ["--embedder", base[0]]
        for k, v in sorted(base[1].items()):
            out += [f"--{k.replace('_', '-')}", v]
        return shlex.join(out)

    explicit = args.embedder != "default" or _prefixes(args) or args.adapter or args.api_embedder
    distinct = set(map(repr, bases.values()))
    if not explicit and len(distinct) == 1:
        base = next(iter(bases.values()))
        print(
            f"evaluating on the base model the run{'s were' if len(bases) > 1 else ' was'} trained on "
            f"({_backend_label(base[0])}): {flags(base)}",
            file=sys.stderr,
        )
        return base[0], {**_api_options(args), **base[1]}
    run_id, base = next(iter(other.items()))
    kept = (
        " (with --adapter or --api-embedder the base is not switched to the runs' own for you)"
        if (args.adapter or args.api_embedder) and not (args.embedder != "default" or _prefixes(args))
        else ""
    )
    raise CLIError(
        f"run {run_id} was trained on another base model or prefix ({flags(base)}) than this evaluation's "
        f"({flags(given)}){kept}; an adapter is measured on its own base model's vectors: evaluate it with "
        f"{flags(base)}, apart from runs on other bases"
    )


def cmd_evaluate(args) -> int:
    from .datasets import QADataset
    from .launch import evaluate_with_context
    from .runs import get_run, has_adapter, run_checkpoints

    ws = _workspace(args)
    _check_out_file(args.report, "--report")
    for flag, given, what in (
        ("--run", args.run, "run id (python -m core runs lists them)"),
        ("--adapter", args.adapter, "adapter folder"),
        ("--api-embedder", args.api_embedder, "embedder, e.g. openai:text-embedding-3-small"),
    ):
        if given == []:  # the flag with nothing after it (an empty shell variable): only the base model would run
            raise CLIError(f"{flag} was given without a value: name at least one {what}, or leave the flag out")
    ds = QADataset.load(args.dataset)
    # Importing a class runs its module: only when the user asks (the flag, or a class path they typed).
    allow = bool(args.allow_custom_code)
    typed = [args.adapter_class] if args.adapter_class else []
    api_opts = _api_options(args)
    specs: list[dict[str, Any]] = [
        {"kind": "api", "spec": spec, **({"options": api_opts} if api_opts else {})} for spec in args.api_embedder or []
    ]
    if args.train_dataset and not Path(args.train_dataset).is_file():  # the leakage check would silently skip it
        raise CLIError(f"--train-dataset {args.train_dataset}: no such file")
    train_ds = str(Path(args.train_dataset).resolve()) if args.train_dataset else None
    for path in args.adapter or []:
        p = Path(path)
        specs.append(
            {"kind": "adapter_dir", "path": str(p), "adapter_cls": args.adapter_class, "train_dataset": train_ds}
        )
        if args.checkpoints:
            from .evaluation import checkpoint_name
            from .training import list_checkpoints

            for ck in list_checkpoints(p):
                step = int(ck.name.split("_")[-1]) if ck.name.split("_")[-1].isdigit() else None
                specs.append(
                    {
                        "kind": "adapter_dir",
                        "path": str(ck),
                        "name": checkpoint_name(p.name, ck.name.split("_")[-1]),
                        "adapter_cls": args.adapter_class,
                        "train_dataset": train_ds,
                        "step": step,
                    }
                )
    for run_id in args.run or []:
        run = get_run(ws, run_id)
        if run is None:
            raise CLIError(f"run {run_id!r} is not in the workspace (python -m core runs lists them)")
        ckpts = run_checkpoints(ws, run_id) if args.checkpoints else []
        if run.get("kind") == "finetune" or has_adapter(ws, run_id):
            specs.append({"kind": "run", "run_id": run_id})
        elif not ckpts:  # e.g. interrupted before the end: only checkpoints were saved
            n = len(run_checkpoints(ws, run_id))
            raise CLIError(
                f"run {run_id} saved no final adapter (it did not finish)"
                + (f"; evaluate its {n} checkpoint(s) with --checkpoints" if n else " and no checkpoint")
            )
        else:
            print(
                f"run {run_id} saved no final adapter (it did not finish): evaluating its checkpoints", file=sys.stderr
            )
        for ck in ckpts:
            specs.append({"kind": "checkpoint", "run_id": run_id, "step": int(ck.name.split("_")[-1])})
    embedder, options = _base_for_runs(ws, args)
    same = [sp for sp in specs if sp.get("kind") == "api" and sp["spec"].strip() == embedder.strip()]
    if same:  # the base model itself: a second row of the same numbers
        specs = [sp for sp in specs if sp not in same]
        print(f"note: --api-embedder {embedder} is this evaluation's base model: compared once, as the base",
              file=sys.stderr)  # fmt: skip
    bar = _Bar(not args.json, "evaluate")
    name = args.name or Path(args.dataset).name + (" (without leaked questions)" if args.exclude_leaked else "")
    cmp, context = evaluate_with_context(
        ws,
        ds,
        name,
        specs,
        top_k=args.top_k,
        embedder=embedder,
        embedder_options=options,
        dataset_path=str(Path(args.dataset).resolve()),
        exclude_leaked=args.exclude_leaked,
        progress=bar,
        allow_custom_code=allow,
        allow_classes=typed,
    )
    bar.close()
    from .reports import labelled_rows

    rows = labelled_rows(cmp)
    if args.save:
        from .reports import save_comparison

        run_ids = [s["run_id"] for s in specs if s.get("kind") in ("run", "checkpoint")]
        save_comparison(
            ws,
            cmp,
            name=name,
            extra={
                "dataset_path": str(Path(args.dataset).resolve()),
                "systems": specs,
                "run_ids": run_ids,
                "embedder": embedder,
                "api_embedders": args.api_embedder or [],
                "embedder_options": options,
                "context": context,
            },
        )
    if args.report:
        from .reports import html_report
        from .runs import read_history
        from .workspace import atomic_write_text

        histories = {}
        for s in specs:
            if s.get("kind") == "run":
                run = get_run(ws, s["run_id"])
                histories[run["name"]] = read_history(ws, s["run_id"])
        atomic_write_text(
            args.report, html_report(cmp, histories, title=f"AdapterLab retrieval report: {name}", context=context)
        )
    k = args.top_k
    cols = [
        "system",
        "queries",
        f"hit@{k}",
        f"mrr@{k}",
        "ndcg@10",
        f"Δ hit@{k} (pt)",
        f"hit@{k} CI (pt)",
        f"hit@{k} p (Holm)",
        f"Δ mrr@{k} (pt)",
        f"mrr@{k} CI (pt)",
        f"mrr@{k} p (Holm)",
    ]
    table = format_table([_in_points(r, (f"hit@{k}", f"mrr@{k}")) for r in rows], cols)
    table += (
        "\n\nΔ = system - base, in points (0.01 of hit@k or MRR@k); CI = paired bootstrap 95% interval; p = McNemar "
        "(hit) / Wilcoxon (mrr), Holm-adjusted over the systems compared."
    )
    from .summary import caveats, summary_sentences

    notes = summary_sentences(cmp, context)
    for c in caveats(cmp, context):
        notes.append(f"{c['level'].upper()}: {c['text']}")
        act = c.get("action") or {}
        if act.get("recipe") == "distil" and act.get("dataset_path") and act.get("eval_path"):
            notes.append(_distil_command(ws, act, args))
    table += "\n\n" + "\n".join(notes)
    if args.report:
        table += f"\nreport written to {args.report}"
    if args.save:
        table += f"\ncomparison saved in the workspace as {name!r} (the Compare page lists it)"
    if args.json:
        for r in rows:
            r["id"] = str(((context.get("systems") or {}).get(r["system"]) or {}).get("id", ""))
        for c in caveats(cmp, context):  # stdout stays the rows' JSON; what could mislead still reaches the caller
            print(f"{c['level'].upper()}: {c['text']}", file=sys.stderr)
    _emit(args, rows, table)
    return 0


def cmd_embed(args) -> int:
    from .datasets import QADataset
    from .documents import list_chunks
    from .embed_engine import collect_texts, embed_to_cache

    ws = _workspace(args)
    if not args.dataset and args.documents is None:
        raise CLIError("say what to embed: --dataset FILE (its chunks and questions) and/or --documents [NAME ...]")
    chunks: list[str] = []
    if args.documents is not None:
        ids = _select_docs(ws, args.documents) if args.documents else None
        rows = list_chunks(ws) if ids is None else [r for d in ids for r in list_chunks(ws, doc_id=d)]
        if not rows:
            raise CLIError("no ingested chunks to embed (run ingest first, or name a --dataset)")
        chunks = [r["text"] for r in rows]
    passages, queries = list(chunks), []
    for path in args.dataset or []:
        p, q = collect_texts(QADataset.load(path))
        passages += p
        queries += q
    bar = _Bar(not args.json, f"embed ({args.engine})")
    report = embed_to_cache(
        ws,
        args.embedder,
        passages,
        queries,
        engine=args.engine,
        ray_address=args.ray_address,
        actors=args.actors,
        batch_size=args.batch_size,
        embedder_options=_embedder_options(args),
        progress=bar,
    )
    bar.close()
    row = report.to_dict()
    _emit(
        args,
        row,
        format_table(
            [
                {
                    # nothing embedded (all cached): no rate to show, rather than "0.0000"
                    k: (row[k] if k != "texts_per_second" or row["embedded"] else None)
                    for k in (
                        "engine",
                        "identity",
                        "texts",
                        "cached",
                        "embedded",
                        "seconds",
                        "texts_per_second",
                        "actors",
                    )
                }
            ]
        ),
    )
    return 0


def cmd_import_queries(args) -> int:
    from .embedders import resolve_embedder
    from .real_queries import import_real_queries, save_real_queries

    ws = _workspace(args)
    p = Path(args.file)
    if not p.is_file():
        raise CLIError(f"{args.file}: no such file")
    emb = None if args.no_embedding else resolve_embedder(args.embedder, workspace=ws, **_prefixes(args))
    ds, report = import_real_queries(
        ws,
        p.read_bytes(),
        embedder=emb,
        doc_ids=_select_docs(ws, args.documents),
        min_overlap=args.min_overlap,
        min_cosine=args.min_cosine,
        source=str(p),
    )
    out: dict[str, Any] = {
        "summary": report.summary(),
        "queries": len(ds.queries),
        "corpus": len(ds.corpus),
        "unmatched": report.unmatched,
    }
    if args.out:
        ds.save(args.out)
        out["out"] = args.out
    if args.save:
        out["dataset_id"] = save_real_queries(ws, ds, args.save, report)
    table = report.summary()
    if report.unmatched:
        table += "\n\nnot matched:\n" + format_table(report.unmatched, ["row", "query", "reason"])
    if args.out:
        table += f"\n\nevaluation set written to {args.out} ({len(ds.queries)} queries over {len(ds.corpus)} chunks)"
    if args.save:
        table += f"\nsaved in the workspace as {args.save!r} ({out['dataset_id']})"
    if not (args.out or args.save):
        table += "\n\n(nothing written: pass --out FILE.json and/or --save NAME to keep the evaluation set)"
    _emit(args, out, table)
    return 0


def cmd_runs(args) -> int:
    from .runs import list_runs, reap_runs

    ws = _workspace(args)
    reap_runs(ws)  # a run whose process died (killed, crashed) shows as interrupted, not running
    rows = [
        {
            "run": r["id"],
            "kind": r["kind"],
            "name": r["name"],
            "status": r["status"],
            "best_epoch": (r["result"] or {}).get("best_epoch"),
            "val_mrr": ((r["result"] or {}).get("best_metrics") or {}).get("mrr@5"),
            # a cross-validated run has no hold-out: its out-of-fold gain, (hit@k + MRR@k)/2 in points
            "cv_gain_pt": None if not sel else round(100 * sel["gain"], 2),
        }
        for r in list_runs(ws)
        for sel in [(r["result"] or {}).get("selection")]
    ]
    _emit(args, rows, format_table(rows))
    return 0


def cmd_export(args) -> int:
    from .export import export_run

    ws = _workspace(args)
    out = export_run(ws, args.run, args.format, args.out)
    if args.format == "llamaindex":
        from .adapters import read_adapter_meta

        kind = read_adapter_meta(out).get("adapter_cls")
        if kind not in (None, "linear", "two-layer"):  # LlamaIndex ships those two classes
            print(
                f"note: LlamaIndex's AdapterEmbeddingModel has no {kind} class: load this folder with AdapterLab "
                "(core.adapters.load_adapter) and pass the module as adapter=, or export as sentence-transformers",
                file=sys.stderr,
            )
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    _emit(
        args,
        {"run": args.run, "format": args.format, "out": str(out), "files": files},
        f"exported {args.run} as {args.format} to {out} ({len(files)} files)",
    )
    return 0


def cmd_documents(args) -> int:
    from .documents import delete_document, list_documents

    ws = _workspace(args)
    for name in args.remove or []:  # any status: a file that failed to ingest is listed until removed
        docs = list_documents(ws)
        # by file name (a path's last part), or by an id prefix long enough not to match by accident
        match = [
            d for d in docs if d["filename"] in (name, Path(name).name) or (len(name) >= 6 and d["id"].startswith(name))
        ]
        if len(match) != 1:
            known = ", ".join(sorted(d["filename"] for d in docs)) or "none"
            how = "is not in the workspace" if not match else "names more than one document: give its id"
            raise CLIError(f"document {name!r} {how}; documents: {known}")
        n = delete_document(ws, match[0]["id"])
        print(
            f"removed {match[0]['filename']} and its {n} chunks (questions about them stay until deleted on the "
            "Questions page)",
            file=sys.stderr,
        )
    rows = [
        {
            "id": d["id"],
            "filename": d["filename"],
            "status": d["status"],
            "pages": d["pages"],
            "chars": d["chars"],
            "chunks": d.get("n_chunks"),
            "truncated": d.get("n_truncated"),
            "error": d.get("error"),
        }
        for d in list_documents(ws)
    ]
    for r in rows:
        r["id"] = r["id"][:12]
    _emit(args, rows, format_table(rows))
    return 0


# ------------------------------------------------------------------------------------------------
def _setting_help(name: str) -> str:
    """A training setting's help, read from :class:`core.train_config.TrainConfig` (with its default)."""
    from dataclasses import MISSING, fields

    from .train_config import FIELD_HELP, TrainConfig

    f = next(f for f in fields(TrainConfig) if f.name == name)
    default = f.default if f.default is not MISSING else None
    text = FIELD_HELP[name].replace("%", "%%")
    return text if default in (None, "") or isinstance(default, bool) else f"{text} (default {default})"


class _Parser(argparse.ArgumentParser):
    """A usage error in two lines, not under the command's whole usage block (about 40 lines for ``train``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from .finetune import FinetuneConfig
    from .pseudo_queries import DEFAULT_OFFLINE_METHOD, OFFLINE_METHODS

    ft_defaults = FinetuneConfig()  # the finetune flags' defaults are its own (a slots dataclass: read an instance)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workspace", default=None, help="workspace directory (default: $ADAPTERLAB_WORKSPACE or ./workspace)"
    )
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    emb = argparse.ArgumentParser(add_help=False)
    emb.add_argument(
        "--embedder",
        default=_FlagDefault("default"),  # evaluate tells it from a typed one (main sets args.embedder_given)
        help="'default' (bundled all-MiniLM-L6-v2), a sentence-transformers name or path, or openai:MODEL; "
        "add @onnx-int8 or @onnx-fp32 to a local model for the ONNX Runtime backend (e.g. default@onnx-int8: "
        "exported once into the workspace, its vectors cached apart)",
    )
    emb.add_argument(
        "--query-prefix", default="", help="text put before every query (E5: 'query: ', BGE: an instruction)"
    )
    emb.add_argument("--passage-prefix", default="", help="text put before every chunk (E5: 'passage: ')")
    api = emb.add_argument_group("API embedders (openai:MODEL)", "request settings; they never change the vectors")
    api.add_argument(
        "--api-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds to wait for one answer (default 60); a batch that times out is split in halves",
    )
    api.add_argument("--api-batch-size", type=int, metavar="N", help="texts per request, at most (default 128)")
    api.add_argument(
        "--api-concurrency",
        type=int,
        metavar="N",
        help="requests in flight at once (default 1; a local server works on one at a time)",
    )

    p = _Parser(prog="python -m core", description="AdapterLab: fine-tune embedding adapters on your PDFs.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", parents=[common, emb], help="load PDFs into the workspace and chunk them")
    s.add_argument("files", nargs="+", help="PDF files")
    s.add_argument("--chunk-size", type=int, default=0, help="tokens per chunk (0 = fit the embedder)")
    s.add_argument("--chunk-overlap", type=int, default=-1, help="overlap in tokens (-1 = about 12%%)")
    s.add_argument("--max-mb", type=float, default=200, help="refuse files larger than this (MB)")
    s.set_defaults(fn=cmd_ingest)

    s = sub.add_parser("generate", parents=[common], help="generate question/chunk pairs")
    s.add_argument(
        "--generator",
        choices=["offline", "llm"],
        default="offline",
        help="offline pseudo-queries (no LLM needed, weaker) or an OpenAI-compatible LLM",
    )
    s.add_argument(
        "--offline-method",
        choices=list(OFFLINE_METHODS),
        default=DEFAULT_OFFLINE_METHOD,
        help="how offline questions are made (with --generator offline): "
        + "; ".join(f"{k}: {v[0]}" for k, v in OFFLINE_METHODS.items()),
    )
    s.add_argument(
        "--questions-per-chunk", type=int, default=2, help="questions asked of each chunk (default %(default)s)"
    )
    s.add_argument("--documents", nargs="*", help="only these ingested documents (file name or id prefix)")
    s.add_argument(
        "--sample-chunks",
        type=int,
        default=None,
        metavar="N",
        help="only a random N of the chunks, spread over the documents (the same N chunks for the same --seed, so a "
        "rerun resumes them): a quick evaluation set from a long filing, or a cap on LLM calls. The dataset written "
        "still ranks among every chunk",
    )
    s.add_argument("--model", default="gpt-4o-mini", help="LLM model (with --generator llm; default %(default)s)")
    s.add_argument(
        "--base-url",
        default=None,
        help="OpenAI-compatible base URL (default $OPENAI_BASE_URL, else OpenAI, which needs $OPENAI_API_KEY)",
    )
    s.add_argument("--concurrency", type=int, default=4, help="LLM requests in flight at once (default %(default)s)")
    s.add_argument("--prompt-file", help="a prompt template with {context_str} and {num_questions_per_chunk}")
    s.add_argument("--out", required=True, help="LlamaIndex dataset JSON to write")
    s.add_argument("--val-out", help="also split and write the validation/evaluation side here")
    s.add_argument(
        "--split-by",
        choices=["document", "chunk"],
        default=None,
        help="with --val-out: hold out whole documents (the default with two or more documents), or seeded chunks "
        "with all their questions (the default with one)",
    )
    s.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="with --val-out: the share of the questions held out (whole documents or chunks; default %(default)s)",
    )
    s.add_argument(
        "--val-documents", nargs="*", help="documents that form the validation side (with --split-by document)"
    )
    s.add_argument("--seed", type=int, default=0, help="seeds the chunk sample, the split and offline questions")
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("train", parents=[common, emb], help="train an adapter on a dataset")
    s.add_argument("--dataset", required=True, help="training dataset (LlamaIndex JSON)")
    s.add_argument(
        "--val-dataset", help="validation dataset for model selection (default: cross-validation on the questions)"
    )
    s.add_argument(
        "--recipe",
        choices=["auto", "adapter", "distil"],
        default="auto",
        help="adapter: train the adapter on the questions (seconds, any base model). distil: fully fine-tune the "
        "sentence-transformers base on them, then distil it into a linear adapter that ranks the documents you "
        "will search like the fine-tune (minutes; measured best on new documents, bench/README). auto (default): "
        "distil for a local base model when the documents you will search are known (named by --eval-dataset, unless "
        "its questions are about the training chunks, or ingested documents the questions are not about) and mostly "
        "cut into chunks longer than the base model reads, else adapter; any adapter setting below means adapter",
    )
    s.add_argument(
        "--adapter",
        help=_setting_help("adapter") + " An import path is imported: typing it is your consent to run that module.",
    )
    s.add_argument("--adapter-kwargs", help="JSON constructor overrides, e.g. '{\"rank\": 16}'")
    s.add_argument("--hidden-features", type=int, help="hidden size of two-layer (default 1024)")
    s.add_argument("--bias", action="store_true", help="linear adapter with a bias")
    s.add_argument(
        "--llamaindex-defaults",
        action="store_true",
        help="LlamaIndex's engine settings (lr 2e-5, batch 10, in-batch loss)",
    )
    from .losses import Loss
    from .selection import DESIGNS, VALIDATIONS
    from .train_config import OPTIMIZER_NAMES, SELECTIONS

    s.add_argument("--epochs", type=int, help=_setting_help("epochs"))
    s.add_argument("--batch-size", type=int, help=_setting_help("batch_size"))
    s.add_argument("--lr", type=float, help=_setting_help("lr"))
    s.add_argument("--loss", choices=[str(x) for x in Loss], help=_setting_help("loss"))
    s.add_argument("--optimizer", choices=list(OPTIMIZER_NAMES), help=_setting_help("optimizer"))
    s.add_argument("--weight-decay", type=float, help=_setting_help("weight_decay"))
    s.add_argument("--warmup-ratio", type=float, help=_setting_help("warmup_ratio"))
    s.add_argument("--temperature", type=float, help=_setting_help("temperature"))
    s.add_argument("--seed", type=int, help=_setting_help("seed"))
    s.add_argument("--device", help=_setting_help("device"))
    s.add_argument("--selection", choices=list(SELECTIONS), help=_setting_help("selection"))
    s.add_argument("--cv-folds", type=int, help=_setting_help("cv_folds"))
    s.add_argument("--cv-design", choices=list(DESIGNS), help=_setting_help("cv_design"))
    s.add_argument(
        "--eval-dataset",
        help="the dataset you will evaluate on: only its chunks are read, to choose the validation design "
        "and to tell whether they are the same kinds of text as the training chunks (its questions are never "
        "trained on). Without it, the ingested chunks no training question asks about stand in for it, when "
        "there are enough of them (a tenth of every chunk)",
    )
    s.add_argument("--lr-grid", type=float, nargs="+", help=_setting_help("lr_grid"))
    s.add_argument("--cv-fold-order", choices=["blocks", "shuffled"], help=_setting_help("cv_fold_order"))
    s.add_argument("--cv-validation", choices=list(VALIDATIONS), help=_setting_help("cv_validation"))
    s.add_argument("--shrinkage-grid", type=float, nargs="*", help=_setting_help("shrinkage_grid"))
    s.add_argument("--cv-rule", choices=["auto", "best", "one_se_fewer", "one_se_more"], help=_setting_help("cv_rule"))
    s.add_argument(
        "--unlabelled-negatives",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=_setting_help("unlabelled_negatives"),
    )
    s.add_argument(
        "--separate-sources",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=_setting_help("separate_sources"),
    )
    s.add_argument("--average-refits", type=int, help=_setting_help("average_refits"))
    s.add_argument("--pseudo-queries", type=int, help=_setting_help("pseudo_queries"))
    s.add_argument("--sample-negatives-above", type=int, help=_setting_help("sample_negatives_above"))
    s.add_argument("--false-negative-threshold", type=float, help=_setting_help("false_negative_threshold"))
    s.add_argument("--hard-negatives", type=int, help=_setting_help("hard_negatives"))
    s.add_argument("--cv-min-gain-se", type=float, help=_setting_help("cv_min_gain_se"))
    s.add_argument("--filter-questions", action="store_true", default=None, help=_setting_help("filter_questions"))
    s.add_argument("--val-fraction", type=float, help=_setting_help("val_fraction"))
    s.add_argument("--checkpoint-every", type=int, help=_setting_help("checkpoint_every"))
    s.add_argument("--patience", type=int, help=_setting_help("patience"))
    s.add_argument("--top-k", type=int, help=_setting_help("top_k"))
    s.add_argument("--name", help="a label for the run")
    s.add_argument("--out", help="folder for the final adapter (LlamaIndex format) and its checkpoints/")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser(
        "finetune",
        parents=[common, emb],
        help="fully fine-tune a sentence-transformers base model (the expensive reference: it re-embeds the corpus)",
    )
    s.add_argument("--dataset", required=True, help="training dataset (LlamaIndex JSON)")
    s.add_argument(
        "--epochs", type=int, default=ft_defaults.epochs, help="passes over the questions (default %(default)s)"
    )
    s.add_argument(
        "--batch-size",
        type=int,
        default=ft_defaults.batch_size,
        help="questions per step; the other chunks are the negatives (default %(default)s)",
    )
    s.add_argument("--lr", type=float, default=ft_defaults.lr, help="AdamW learning rate (default %(default)s)")
    s.add_argument("--seed", type=int, default=ft_defaults.seed, help="seeds the batch order (default %(default)s)")
    s.add_argument(
        "--loss",
        choices=["mnrl", "cached_mnrl"],
        default="mnrl",
        help="MultipleNegativesRankingLoss, or its cached variant (large batches, little memory)",
    )
    s.add_argument(
        "--warmup-ratio",
        type=float,
        default=ft_defaults.warmup_ratio,
        help="share of the steps the learning rate ramps up (default %(default)s)",
    )
    s.add_argument(
        "--read-tokens",
        type=int,
        default=0,
        help="tokens of each text the saved model reads (0: the base model's own length; capped at its position "
        "limit, 512 for the default). Re-embedding with it anyway, a longer read sees more of long chunks: "
        "bench/README, 'Both lengths on first questions and on a new kind of text'",
    )
    s.add_argument(
        "--separate-sources",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="when offline pseudo-queries and written questions ask about separate chunks, each batch holds one "
        "kind (needs the workspace's record of each question's source). Off by default: measured, the fine-tune "
        "gained the same either way (bench/README, 'Offline and written questions on separate chunks')",
    )
    s.add_argument(
        "--attention-dropout",
        type=_attention_dropout,
        default="auto",
        metavar="auto|model|P",
        help="dropout on the attention probabilities while training. auto (the default): 0 on a CPU, where PyTorch's "
        "fused attention then runs and a step takes about two thirds of the time, and the model's own elsewhere; "
        "model: the model's own (0.1 for the default); or a rate. bench/README, 'The fine-tune without attention "
        "dropout on a CPU'",
    )
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    s.add_argument("--name", help="a label for the run")
    s.add_argument("--out", help="also copy the fine-tuned model (a sentence-transformers folder) here")
    s.set_defaults(fn=cmd_finetune)

    s = sub.add_parser(
        "distill",
        parents=[common, emb],
        help="train a query-only adapter to rank like a full fine-tune (no re-embedding at query time)",
    )
    s.add_argument("--teacher", required=True, help="a finetune run id of this workspace, or a model folder")
    s.add_argument(
        "--dataset", help="the training questions (LlamaIndex JSON; default: the teacher run's own training set)"
    )
    s.add_argument(
        "--documents", nargs="*", help="the ingested documents to rank among (default: all; new ones included)"
    )
    s.add_argument(
        "--eval-dataset",
        help="a dataset of the documents you will search (your evaluation set): its chunks are ranked too, never "
        "its questions. A distilled adapter is fitted to the documents it ranks: name them when not ingested",
    )
    # no defaults here: DistillConfig's are the ones (and importing it would load torch for --help)
    s.add_argument("--steps", type=int, help="full-batch steps (default 200)")
    s.add_argument("--lr", type=float, help="default 0.001")
    s.add_argument("--temperature", type=float, help="of both softmaxes over the chunks (default 0.05)")
    s.add_argument("--pseudo-queries", type=int, help="offline pseudo-queries per chunk (0: none; default 2)")
    s.add_argument(
        "--teacher-max-tokens",
        type=int,
        help="tokens of each text the teacher reads (default 512, capped at its position limit; 0: its own length)",
    )
    s.add_argument(
        "--teacher-blend",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score with the mean of the teacher's cosines at the base model's length and at --teacher-max-tokens "
        "(default: the long read alone when the distillation ranks another document altogether, such as another "
        "company's filing, else blended; --teacher-blend / --no-teacher-blend decide it)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--name", help="a label for the run")
    s.add_argument("--out", help="also write the adapter (LlamaIndex format) to this folder")
    s.set_defaults(fn=cmd_distill)

    s = sub.add_parser("evaluate", parents=[common, emb], help="hit-rate / MRR of base and adapters side by side")
    s.add_argument("--dataset", required=True, help="evaluation dataset (LlamaIndex JSON)")
    s.add_argument("--adapter", nargs="*", help="adapter folders (AdapterLab or LlamaIndex)")
    s.add_argument(
        "--adapter-class",
        help="class of the --adapter folders: linear, two-layer, low-rank, or an import path pkg.mod:Class "
        "(imported because you typed it; use for folders without adapterlab.json)",
    )
    s.add_argument(
        "--allow-custom-code",
        action="store_true",
        help="let adapter folders and runs whose adapterlab.json names an import path import it "
        "(runs that module's code: only for folders you trust)",
    )
    s.add_argument("--run", nargs="*", help="workspace run ids (adapter runs, and full fine-tune runs)")
    s.add_argument("--checkpoints", action="store_true", help="also evaluate every step_N checkpoint")
    s.add_argument("--api-embedder", nargs="*", help="extra embedders to compare, e.g. openai:text-embedding-3-small")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--save", action="store_true", help="keep the comparison in the workspace (dashboard Compare page)")
    s.add_argument("--name", help="a name for the evaluation set in the output (default: the file name)")
    s.add_argument(
        "--train-dataset", help="the --adapter folders' training set, for the leakage check (runs know theirs)"
    )
    s.add_argument(
        "--exclude-leaked",
        nargs="?",
        const="questions",
        choices=["questions", "chunks"],
        help="drop evaluation questions leaked from training: 'questions' (identical or near-identical, "
        "the default) or 'chunks' (also every question about a trained chunk)",
    )
    s.add_argument("--report", help="also write the stakeholder HTML report to this file")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser(
        "embed",
        parents=[common, emb],
        help="fill the workspace's embedding cache ahead of train/evaluate (locally or on Ray)",
    )
    s.add_argument("--dataset", nargs="+", metavar="FILE", help="LlamaIndex dataset JSON: its chunks and its questions")
    s.add_argument(
        "--documents",
        nargs="*",
        metavar="NAME",
        help="ingested documents' chunks (file name or id prefix; none named: every document)",
    )
    s.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process; ray: Ray Data actors, one model each (pip install -r requirements-scale.txt)",
    )
    s.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="a Ray cluster (ray://HOST:10001 or HOST:6379); default: a local Ray on this machine",
    )
    s.add_argument(
        "--actors", type=int, metavar="N", help="Ray actors (default: one per GPU, else a quarter of the CPUs)"
    )
    s.add_argument("--batch-size", type=int, default=256, metavar="N", help="texts per Ray batch (default 256)")
    s.set_defaults(fn=cmd_embed)

    s = sub.add_parser(
        "import-queries",
        parents=[common, emb],
        help="turn a CSV of real queries (query + relevant_text or page) into an evaluation set",
    )
    s.add_argument("file", help="CSV with a header: query, and relevant_text or page (+ document)")
    s.add_argument("--out", help="LlamaIndex dataset JSON to write")
    s.add_argument("--save", metavar="NAME", help="also register it in the workspace as an evaluation set")
    s.add_argument(
        "--documents", nargs="*", help="only these ingested documents form the corpus (file name or id prefix)"
    )
    s.add_argument("--min-overlap", type=float, default=0.85, help="share of a passage's words one chunk must hold")
    s.add_argument("--min-cosine", type=float, default=0.75, help="embedding similarity for a passage no chunk holds")
    s.add_argument("--no-embedding", action="store_true", help="match text without the embedding model")
    s.set_defaults(fn=cmd_import_queries)

    s = sub.add_parser("runs", parents=[common], help="list training runs")
    s.set_defaults(fn=cmd_runs)
    s = sub.add_parser(
        "export", parents=[common], help="write a run as a sentence-transformers model or adapter folder"
    )
    s.add_argument("--run", required=True, help="run id (see `python -m core runs`)")
    s.add_argument(
        "--format",
        choices=["sentence-transformers", "llamaindex"],
        default="sentence-transformers",
        help="sentence-transformers: a model folder (query route = base + adapter, document route = base) "
        "with a model card; llamaindex: the adapter folder (config.json + pytorch_model.bin)",
    )
    s.add_argument("--out", required=True, help="folder to write")
    s.set_defaults(fn=cmd_export)
    s = sub.add_parser("documents", parents=[common], help="list ingested documents (and remove some)")
    s.add_argument(
        "--remove",
        nargs="+",
        metavar="NAME",
        help="remove these documents (file name or id prefix; a file that failed to ingest too) with their chunks",
    )
    s.set_defaults(fn=cmd_documents)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "embedder"):  # evaluate takes a run's own base unless one was named
        args.embedder_given = not isinstance(args.embedder, _FlagDefault)
        args.embedder = str(args.embedder)
    from .adapters import AdapterError
    from .datasets import DatasetError
    from .embedders import EmbedderError
    from .finetune import FinetuneError
    from .training import TrainingError

    known: tuple[type[BaseException], ...] = (
        CLIError,
        DatasetError,
        AdapterError,
        EmbedderError,
        TrainingError,
        FinetuneError,
        ValueError,
    )
    try:
        from .llm import LLMError

        known += (LLMError,)
    except ImportError:  # pragma: no cover
        pass
    try:
        return int(args.fn(args) or 0)
    except known as exc:
        from .keys import scrub

        print(f"error: {scrub(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the command cannot read or write: a folder where a file goes, no permission
        from .keys import scrub

        path = exc.filename2 or exc.filename  # a rename's target (an atomic write), else the path itself
        where = f"{path}: " if path else ""
        print(f"error: {where}{scrub(exc.strerror or exc)}", file=sys.stderr)
        return 2
