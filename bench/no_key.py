"""Protocol (d), the no-key path, per offline question method: does an adapter trained on offline
pseudo-queries lift retrieval on *real* questions?

Offline questions (each method of :data:`core.pseudo_queries.OFFLINE_METHODS`) are generated over
the Lyft 10-K PDF (ingested once into ``WORKSPACE/offline``); adapters train on them; the test is
every real LLM question of ``../shared/data/qa/lyft_2021_train_dataset.json`` over its own chunks
(the adapter is query-only, so the two chunkings need not match). Nothing is chosen on the real
questions: every setting is fixed in advance or chosen by cross-validation on the offline
questions. Rows per seed: base, LlamaIndex's defaults and the AdapterLab default trained on each
method's questions (``+ conservative``: the same, with the :data:`CONSERVATIVE` setting).

    python bench/no_key.py [--methods keywords cloze headings mixture] [--seeds 0 1 2] [--conservative]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import SHARED
from core.datasets import QADataset
from core.embedders import AdapterEmbedder, resolve_embedder
from core.evaluation import compare
from core.pseudo_queries import OFFLINE_METHODS, offline_generator
from core.reports import labelled_rows
from core.training import TrainConfig, train
from core.workspace import Workspace

#: the conservative setting for offline signals, fixed in advance (not tuned on real questions):
#: a third of the default learning rate, so cross-validation on pseudo-queries cannot move far.
CONSERVATIVE = {"lr": 1e-4}


def offline_workspace(ws_dir: str | Path, pdf: Path) -> Workspace:
    """The Lyft PDF ingested into its own workspace (once; reused)."""
    from core.documents import ingest_files, list_documents

    ws = Workspace(Path(ws_dir) / "offline")
    if not list_documents(ws):
        ingest_files(ws, [(pdf.name, pdf)])
    return ws


def offline_dataset(ws: Workspace, method: str, per_chunk: int = 2, seed: int = 0) -> QADataset:
    """``per_chunk`` questions per chunk by ``method``, over every chunk of ``ws`` (not stored)."""
    rows = ws.query("SELECT id, doc_id, text FROM chunks ORDER BY doc_id, idx")
    return offline_over({r["id"]: r["text"] for r in rows}, method, per_chunk, seed)


def offline_over(corpus: dict[str, str], method: str, per_chunk: int = 2, seed: int = 0) -> QADataset:
    """``per_chunk`` questions per chunk by ``method`` over ``corpus`` (id -> text, in order), the generator
    fitted on all of it; question ids ``METHOD-CHUNK-K``."""
    gen = offline_generator(method, seed=seed)
    if hasattr(gen, "fit"):
        gen.fit(corpus.values())
    queries, relevant = {}, {}
    for cid, text in corpus.items():
        for k, q in enumerate(gen.generate(text, per_chunk)):
            qid = f"{method}-{cid}-{k}"
            queries[qid], relevant[qid] = q, [cid]
    return QADataset(queries, dict(corpus), relevant, "text")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(SHARED))
    ap.add_argument("--methods", nargs="+", default=list(OFFLINE_METHODS), choices=list(OFFLINE_METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-chunk", type=int, default=2)
    ap.add_argument("--no-llamaindex", action="store_true", help="skip the LlamaIndex-defaults rows")
    ap.add_argument("--conservative", action="store_true", help=f"add the conservative setting {CONSERVATIVE}")
    ap.add_argument(
        "--workspace",
        default=os.environ.get("ADAPTERLAB_WORKSPACE", str(Path(tempfile.gettempdir()) / "adapterlab-bench")),
    )
    args = ap.parse_args()

    test = QADataset.load(args.dataset)
    ws = Workspace(args.workspace)
    emb = resolve_embedder("default", workspace=ws)
    ows = offline_workspace(args.workspace, Path(args.dataset).parents[1] / "10k" / "lyft_2021.pdf")
    print(f"test: {args.dataset} ({len(test.queries)} real questions, {len(test.corpus)} chunks)\n")
    data = {m: offline_dataset(ows, m, args.per_chunk) for m in args.methods}
    for m, d in data.items():
        print(f"- {m}: {len(d.queries)} questions over {len(d.corpus)} chunks; e.g. {next(iter(d.queries.values()))!r}")
    summary: dict[str, list[tuple[float, float, float, float]]] = {}
    print(
        "\n| seed | system | hit@5 | MRR@5 | Δ hit@5 [95% CI] | Δ MRR@5 [95% CI] | p (hit / MRR) | selection | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        systems, notes = {"base": emb}, {"base": ("", "")}
        for m, train_ds in data.items():
            li = dataclasses.replace(TrainConfig.llamaindex_defaults("linear", epochs=4), seed=seed)
            runs = [] if args.no_llamaindex else [(f"{m} · LlamaIndex defaults", li)]
            runs.append((f"{m} · AdapterLab default", TrainConfig(adapter="linear", seed=seed)))
            if args.conservative:
                runs.append((f"{m} · conservative", TrainConfig(adapter="linear", seed=seed, **CONSERVATIVE)))
            for name, cfg in runs:
                t = time.time()
                res = train(train_ds, emb, cfg, target_chunks=set(test.corpus))
                systems[name] = AdapterEmbedder(emb, res.adapter)
                how = (
                    f"cv {res.cv.design}: {'ep ' + str(res.cv.epochs) if res.cv.train else 'identity'}"
                    if res.cv
                    else f"{cfg.epochs} ep"
                )
                notes[name] = (how, f"{time.time() - t:.1f}")
        cmp = compare(test, systems, baseline="base")
        for row in labelled_rows(cmp):  # rows keyed by display labels (core.reports), as bench/quality.py reads them
            name = row["system"]
            d1 = d2 = p = ""
            if name != "base":
                lo, hi = row["hit@5 CI"]
                d1 = f"{100 * row['Δ hit@5']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                lo2, hi2 = row["mrr@5 CI"]
                d2 = f"{100 * row['Δ mrr@5']:+.1f} [{100 * lo2:+.1f}, {100 * hi2:+.1f}]"
                p = f"{row['hit@5 p']:.3f} / {row['mrr@5 p']:.3f}"
                summary.setdefault(name, []).append((100 * row["Δ hit@5"], 100 * row["Δ mrr@5"], 100 * hi, 100 * hi2))
            print(
                f"| {seed} | {name} | {row['hit@5']:.3f} | {row['mrr@5']:.3f} | {d1} | {d2} | {p} | {notes[name][0]} | {notes[name][1]} |",
                flush=True,
            )
    print("\n### Median over seeds (Δ in points; min in brackets; * = a seed significantly below base)\n")
    print("| system | Δ hit@5 median [min] | Δ MRR@5 median [min] |")
    print("|---|---|---|")
    for name, vals in summary.items():
        h, mr = [v[0] for v in vals], [v[1] for v in vals]
        sig_h = "*" if any(v[2] < 0 for v in vals) else ""
        sig_m = "*" if any(v[3] < 0 for v in vals) else ""
        print(
            f"| {name} | {statistics.median(h):+.1f} [{min(h):+.1f}]{sig_h} | {statistics.median(mr):+.1f} [{min(mr):+.1f}]{sig_m} |"
        )


if __name__ == "__main__":
    main()
