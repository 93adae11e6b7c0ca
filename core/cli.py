"""``python -m core``: the whole pipeline headless.

    python -m core ingest data/lyft_2021.pdf data/uber_2021.pdf
    python -m core generate --generator offline --documents lyft_2021.pdf --out train.json
    python -m core train --dataset train.json --adapter linear --out adapters/linear
    python -m core evaluate --dataset eval.json --adapter adapters/linear

Every command takes ``--workspace DIR`` (default ``$ADAPTERLAB_WORKSPACE`` or ``./workspace``)
and ``--json`` for machine-readable output; tables are the default. Errors are one line on
stderr naming the file or item and what to do, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

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
    return {k: v for k, v in (("query_prefix", getattr(args, "query_prefix", "")),
                              ("passage_prefix", getattr(args, "passage_prefix", ""))) if v}


def _api_options(args) -> dict[str, Any]:
    """--api-timeout/--api-batch-size/--api-concurrency as resolve_embedder kwargs (only those given).

    They shape the requests of ``openai:`` embedders, not their vectors: recorded with a run,
    never part of an embedder's identity, ignored by other embedders.
    """
    return {k: v for k, v in (("api_timeout", getattr(args, "api_timeout", None)),
                              ("api_batch_size", getattr(args, "api_batch_size", None)),
                              ("api_concurrency", getattr(args, "api_concurrency", None))) if v is not None}


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
    files = []
    for f in args.files:
        p = Path(f)
        if not p.is_file():
            raise CLIError(f"{f}: no such file")
        files.append((p.name, p))
    bar = _Bar(not args.json, "ingest")
    reports = ingest_files(
        ws, files, settings, token_counter=emb.token_counter() if hasattr(emb, "token_counter") else None,
        max_seq_length=getattr(emb, "max_seq_length", None), max_bytes=int(args.max_mb * 1024 * 1024), progress=bar,
    )
    bar.close()
    rows = [
        {"file": r.filename, "status": r.status, "pages": r.pages, "chars": r.chars, "chunks": r.chunks,
         "truncated": r.truncated, "error": r.error}
        for r in reports
    ]
    _emit(args, rows, format_table(rows))
    return 1 if any(r.status == "error" for r in reports) and not any(r.status != "error" for r in reports) else 0


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
    from . import questions as qmod
    from .llm import LLMSettings, estimate_generation

    ws = _workspace(args)
    doc_ids = _select_docs(ws, args.documents)
    chunks = ws.query(
        "SELECT c.id, c.text FROM chunks c JOIN documents d ON d.id=c.doc_id WHERE d.status='ok'"
        + (f" AND c.doc_id IN ({','.join('?' * len(doc_ids))})" if doc_ids else ""),
        tuple(doc_ids or ()),
    )
    if not chunks:
        raise CLIError("no chunks to generate questions from: run `python -m core ingest FILE.pdf` first")
    template = qmod.DEFAULT_PROMPT_TEMPLATE
    if args.prompt_file:
        template = Path(args.prompt_file).read_text(encoding="utf-8")
    if args.generator == "llm":
        settings = LLMSettings(model=args.model, base_url=args.base_url, concurrency=args.concurrency).resolved()
        generator = qmod.LLMGenerator(settings, prompt_template=template)
        todo = qmod.pending_chunks(ws, generator, args.questions_per_chunk, doc_ids=doc_ids)
        est = estimate_generation([c["text"] for c in todo], args.questions_per_chunk, template, settings.model)
        print(
            f"estimate for {len(todo)} of {len(chunks)} chunks still to do: {est['calls']} calls, "
            f"~{est['prompt_tokens']:,} prompt + ~{est['completion_tokens']:,} "
            f"completion tokens" + (f", ~${est['cost_usd']:.2f}" if est.get("cost_usd") is not None else ""),
            file=sys.stderr,
        )
    else:
        generator = qmod.OfflineGenerator(seed=args.seed)
    bar = _Bar(not args.json, "generate")
    report = qmod.generate_questions(ws, generator, questions_per_chunk=args.questions_per_chunk, doc_ids=doc_ids, progress=bar)
    bar.close()
    # the questions this generator made (the workspace may also hold other generators' questions)
    ds = qmod.build_dataset(ws, doc_ids=doc_ids, sources=[args.generator])
    out: dict[str, Any] = {"report": report}
    if args.val_out:
        train_ds, val_ds = qmod.split_dataset(ds, by=args.split_by, val_fraction=args.val_fraction, seed=args.seed,
                                              val_docs=_select_docs(ws, args.val_documents))
        train_ds.save(args.out)
        val_ds.save(args.val_out)
        out.update(train=args.out, val=args.val_out, n_train=len(train_ds.queries), n_val=len(val_ds.queries))
    else:
        ds.save(args.out)
        out.update(dataset=args.out, n_queries=len(ds.queries), n_corpus=len(ds.corpus))
    failures = report.get("failures") or []
    rows = [{"output": k, "value": v} for k, v in out.items() if k != "report"]
    rows += [{"output": k, "value": v} for k, v in report.items() if k != "failures"]
    if failures:
        rows.append({"output": "failed chunks", "value": f"{len(failures)} (rerun the same command to retry them)"})
    _emit(args, out, format_table(rows))
    return 0


def _train_config(args):
    from .training import TrainConfig

    if args.llamaindex_defaults:
        cfg = TrainConfig.llamaindex_defaults(args.adapter, epochs=args.epochs or 4)
    else:
        cfg = TrainConfig(adapter=args.adapter)
    kwargs = json.loads(args.adapter_kwargs) if args.adapter_kwargs else {}
    if args.hidden_features:
        kwargs["hidden_features"] = args.hidden_features
    if args.bias:
        kwargs["bias"] = True
    cfg.adapter_kwargs = kwargs
    for name in ("epochs", "batch_size", "lr", "loss", "optimizer", "weight_decay", "warmup_ratio", "temperature",
                 "seed", "device", "val_fraction", "checkpoint_every", "patience", "top_k"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    cfg.validate()
    from .adapters import resolve_adapter_class

    resolve_adapter_class(cfg.adapter)  # an unknown adapter fails before a run is created
    return cfg


def cmd_train(args) -> int:
    from .runs import create_run, execute_run

    ws = _workspace(args)
    for p in (args.dataset, args.val_dataset):
        if p and not Path(p).is_file():
            raise CLIError(f"{p}: no such dataset file")
    from .datasets import QADataset

    QADataset.load(args.dataset)  # validate before creating the run
    cfg = _train_config(args)
    run_id = create_run(
        ws, cfg, dataset_path=str(Path(args.dataset).resolve()),
        val_dataset_path=str(Path(args.val_dataset).resolve()) if args.val_dataset else None,
        embedder=args.embedder, embedder_options=_embedder_options(args), name=args.name,
    )
    bar = _Bar(not args.json, "train")
    cancel = threading.Event()
    try:
        result = execute_run(ws, run_id, progress=bar, cancel=cancel, out_dir=args.out)
    except KeyboardInterrupt:
        raise CLIError(f"interrupted; run {run_id} keeps its checkpoints under {ws.run_dir(run_id)}")
    finally:
        bar.close()
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
    table = format_table(rows) if rows else "(no validation split: the last epoch is kept)"
    table += (
        f"\n\nrun {run_id}: best epoch {result.best_epoch}"
        + (" (the untrained identity: training did not beat the base model on validation)" if result.best_epoch == 0 and rows else "")
        + f"; {result.n_train_queries} training / {result.n_val_queries} validation questions; {result.seconds:.1f}s"
        + (f"\nadapter saved to {args.out}" if args.out else f"\nadapter in {ws.run_dir(run_id) / 'adapter'}")
    )
    _emit(args, {**summary, "history": result.val_history}, table)
    return 0


def cmd_evaluate(args) -> int:
    from .adapters import load_adapter
    from .datasets import QADataset
    from .embedders import AdapterEmbedder, resolve_embedder
    from .evaluation import compare
    from .runs import adapter_dir, get_run, run_checkpoints

    ws = _workspace(args)
    ds = QADataset.load(args.dataset)
    base = resolve_embedder(args.embedder, workspace=ws, **_embedder_options(args))
    systems: dict[str, Any] = {"base": base}
    for spec in args.api_embedder or []:
        systems[spec] = resolve_embedder(spec, workspace=ws, **_api_options(args))
    for path in args.adapter or []:
        p = Path(path)
        name = p.name if p.name not in systems else str(p)
        systems[name] = AdapterEmbedder(base, load_adapter(p, adapter_cls=args.adapter_class), name=name)
        if args.checkpoints:
            from .training import list_checkpoints

            for ck in list_checkpoints(p):
                systems[f"{p.name}/{ck.name}"] = AdapterEmbedder(base, load_adapter(ck, adapter_cls=args.adapter_class))
    for run_id in args.run or []:
        if get_run(ws, run_id) is None:
            raise CLIError(f"run {run_id!r} is not in the workspace (python -m core runs lists them)")
        systems[run_id] = AdapterEmbedder(base, load_adapter(adapter_dir(ws, run_id)), name=run_id)
        if args.checkpoints:
            for ck in run_checkpoints(ws, run_id):
                systems[f"{run_id}/{ck.name}"] = AdapterEmbedder(base, load_adapter(ck))
    bar = _Bar(not args.json, "evaluate")
    cmp = compare(ds, systems, baseline="base", top_k=args.top_k, dataset_name=Path(args.dataset).name, progress=bar)
    bar.close()
    rows = cmp.rows()
    if args.save:
        from .reports import save_comparison

        save_comparison(ws, cmp, name=Path(args.dataset).name,
                        extra={"embedder": args.embedder, "api_embedders": args.api_embedder or [],
                               "embedder_options": _embedder_options(args)})
    k = args.top_k
    cols = ["system", "queries", f"hit@{k}", f"mrr@{k}", "ndcg@10", f"recall@{k}", f"Δ hit@{k}", f"hit@{k} p",
            f"Δ mrr@{k}", f"mrr@{k} CI", f"mrr@{k} p"]
    table = format_table(rows, cols)
    table += "\n\nΔ = system - base; CI = paired bootstrap 95% interval; p = McNemar (hit) / Wilcoxon (mrr)."
    _emit(args, rows, table)
    return 0


def cmd_runs(args) -> int:
    from .runs import list_runs

    ws = _workspace(args)
    rows = [
        {"run": r["id"], "name": r["name"], "status": r["status"],
         "best_epoch": (r["result"] or {}).get("best_epoch"),
         "val_mrr": ((r["result"] or {}).get("best_metrics") or {}).get("mrr@5")}
        for r in list_runs(ws)
    ]
    _emit(args, rows, format_table(rows))
    return 0


def cmd_documents(args) -> int:
    from .documents import list_documents

    ws = _workspace(args)
    rows = [{"id": d["id"], "filename": d["filename"], "status": d["status"], "pages": d["pages"], "chars": d["chars"],
             "chunks": d.get("n_chunks"), "truncated": d.get("n_truncated"), "error": d.get("error")}
            for d in list_documents(ws)]
    for r in rows:
        r["id"] = r["id"][:12]
    _emit(args, rows, format_table(rows))
    return 0


# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", default=None, help="workspace directory (default: $ADAPTERLAB_WORKSPACE or ./workspace)")
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    emb = argparse.ArgumentParser(add_help=False)
    emb.add_argument("--embedder", default="default",
                     help="'default' (bundled all-MiniLM-L6-v2), a sentence-transformers name or path, or openai:MODEL")
    emb.add_argument("--query-prefix", default="", help="text put before every query (E5: 'query: ', BGE: an instruction)")
    emb.add_argument("--passage-prefix", default="", help="text put before every chunk (E5: 'passage: ')")
    api = emb.add_argument_group("API embedders (openai:MODEL)", "request settings; they never change the vectors")
    api.add_argument("--api-timeout", type=float, metavar="SECONDS",
                     help="seconds to wait for one answer (default 60); a batch that times out is split in halves")
    api.add_argument("--api-batch-size", type=int, metavar="N", help="texts per request, at most (default 128)")
    api.add_argument("--api-concurrency", type=int, metavar="N",
                     help="requests in flight at once (default 1; a local server works on one at a time)")

    p = argparse.ArgumentParser(prog="python -m core", description="AdapterLab: fine-tune embedding adapters on your PDFs.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", parents=[common, emb], help="load PDFs into the workspace and chunk them")
    s.add_argument("files", nargs="+", help="PDF files")
    s.add_argument("--chunk-size", type=int, default=0, help="tokens per chunk (0 = fit the embedder)")
    s.add_argument("--chunk-overlap", type=int, default=-1, help="overlap in tokens (-1 = about 12%%)")
    s.add_argument("--max-mb", type=float, default=200, help="refuse files larger than this (MB)")
    s.set_defaults(fn=cmd_ingest)

    s = sub.add_parser("generate", parents=[common], help="generate question/chunk pairs")
    s.add_argument("--generator", choices=["offline", "llm"], default="offline",
                   help="offline pseudo-queries (no LLM needed, weaker) or an OpenAI-compatible LLM")
    s.add_argument("--questions-per-chunk", type=int, default=2)
    s.add_argument("--documents", nargs="*", help="only these ingested documents (file name or id prefix)")
    s.add_argument("--model", default="gpt-4o-mini", help="LLM model (with --generator llm)")
    s.add_argument("--base-url", default=None, help="OpenAI-compatible base URL (default $OPENAI_BASE_URL)")
    s.add_argument("--concurrency", type=int, default=4)
    s.add_argument("--prompt-file", help="a prompt template with {context_str} and {num_questions_per_chunk}")
    s.add_argument("--out", required=True, help="LlamaIndex dataset JSON to write")
    s.add_argument("--val-out", help="also split and write the validation/evaluation side here")
    s.add_argument("--split-by", choices=["document", "chunk"], default="document")
    s.add_argument("--val-fraction", type=float, default=0.2)
    s.add_argument("--val-documents", nargs="*", help="documents that form the validation side (with --split-by document)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("train", parents=[common, emb], help="train an adapter on a dataset")
    s.add_argument("--dataset", required=True, help="training dataset (LlamaIndex JSON)")
    s.add_argument("--val-dataset", help="validation dataset for model selection (default: a split of the training chunks)")
    s.add_argument("--adapter", default="linear",
                   help="linear, two-layer, low-rank, or an import path pkg.mod:Class")
    s.add_argument("--adapter-kwargs", help='JSON constructor overrides, e.g. \'{"rank": 16}\'')
    s.add_argument("--hidden-features", type=int, help="hidden size of two-layer (default 1024)")
    s.add_argument("--bias", action="store_true", help="linear adapter with a bias")
    s.add_argument("--llamaindex-defaults", action="store_true", help="LlamaIndex's engine settings (lr 2e-5, batch 10, in-batch loss)")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--lr", type=float, help="learning rate (default 1e-4 linear, 5e-4 two-layer)")
    s.add_argument("--loss", choices=["corpus_softmax", "in_batch"])
    s.add_argument("--optimizer", choices=["adamw", "adam", "sgd"])
    s.add_argument("--weight-decay", type=float)
    s.add_argument("--warmup-ratio", type=float)
    s.add_argument("--temperature", type=float, help="softmax temperature (LlamaIndex's scale 20 = 0.05)")
    s.add_argument("--seed", type=int)
    s.add_argument("--device", help="auto, cpu, cuda, mps")
    s.add_argument("--val-fraction", type=float, help="share of training chunks held out for model selection")
    s.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (0 = each epoch)")
    s.add_argument("--patience", type=int, help="early stop after N epochs without validation gain")
    s.add_argument("--top-k", type=int)
    s.add_argument("--name", help="a label for the run")
    s.add_argument("--out", help="folder for the final adapter (LlamaIndex format) and its checkpoints/")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("evaluate", parents=[common, emb], help="hit-rate / MRR of base and adapters side by side")
    s.add_argument("--dataset", required=True, help="evaluation dataset (LlamaIndex JSON)")
    s.add_argument("--adapter", nargs="*", help="adapter folders (AdapterLab or LlamaIndex)")
    s.add_argument("--adapter-class", help="class for adapter folders without adapterlab.json (e.g. two-layer)")
    s.add_argument("--run", nargs="*", help="workspace run ids")
    s.add_argument("--checkpoints", action="store_true", help="also evaluate every step_N checkpoint")
    s.add_argument("--api-embedder", nargs="*", help="extra embedders to compare, e.g. openai:text-embedding-3-small")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--save", action="store_true", help="keep the comparison in the workspace (dashboard Compare page)")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("runs", parents=[common], help="list training runs")
    s.set_defaults(fn=cmd_runs)
    s = sub.add_parser("documents", parents=[common], help="list ingested documents")
    s.set_defaults(fn=cmd_documents)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .adapters import AdapterError
    from .datasets import DatasetError
    from .embedders import EmbedderError
    from .training import TrainingError

    known: tuple[type[BaseException], ...] = (CLIError, DatasetError, AdapterError, EmbedderError, TrainingError, ValueError)
    try:
        from .llm import LLMError

        known += (LLMError,)
    except ImportError:  # pragma: no cover
        pass
    try:
        return int(args.fn(args) or 0)
    except known as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
