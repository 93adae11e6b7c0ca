"""Offline and written questions on separate chunks: one training set, with and without
``TrainConfig.separate_sources``.

A user may have an LLM's (or real) questions about some documents and only offline pseudo-queries about
others (no key, or no budget, for those). For each protocol of ``bench/quality.py`` with a new document
((a) (r) (e) (f), and (u) with ``--eval-dataset``) and seed, the written questions of the training part
are joined by the default offline questions (2 per chunk) over the **new** part's chunks, and four systems
train (the AdapterLab default settings, cross-validated):

- ``written alone``: the written questions only (the AdapterLab default row of ``bench/quality.py``);
- ``offline alone``: the new part's offline questions only;
- ``both, one pool``: both kinds in one set, every chunk every question's negative (``separate_sources``
  off: what training did before);
- ``both, separate``: the same set with ``separate_sources`` (the default): each kind's negatives are its own
  part's chunks.

With ``--systems``, two full fine-tunes of the mixed set can join them (minutes each on a CPU, where the
adapters take seconds; ``core.finetune`` with its default settings):

- ``fine-tune, one pool``: every batch mixes the kinds (the default: ``FinetuneConfig.separate_sources`` off);
- ``fine-tune, one kind per batch``: the option: each batch holds one kind (sentence-transformers'
  multi-dataset batches), so in-batch negatives never set one kind's phrasing against the other's chunks.

``--distil`` also distils each of them into a query-only adapter (``core.distill`` with its defaults, ranking
every chunk, the mixed set's questions), as Fine-tune, then distil would: a row ``..., distilled`` each.

The new part's test questions (never trained on) are ranked among **every** chunk of the file (in (u) both
filings), as a user searching all their documents would: ``bench/quality.py`` ranks the new part alone,
which hides where a system sends queries between the parts. Each part counts as its own document
(``node_meta``), as for a user who ingested them as two files. Nothing is chosen on the test questions.

    python bench/mixed_sources.py --protocols a r e f --seeds 0 1 2 [--json out.json]
    python bench/mixed_sources.py --protocols u --eval-dataset uber_questions.json --seeds 0 1 2
    python bench/mixed_sources.py --protocols u --eval-dataset uber_questions.json --seeds 0 \
        --systems "fine-tune, one pool" "fine-tune, one kind per batch"
    python bench/mixed_sources.py --protocols a --seeds 0 1 --systems "fine-tune, one pool" --distil
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.distill import by_system, delta_row  # noqa: E402
from bench.no_key import offline_over  # noqa: E402
from bench.quality import SHARED, load_eval_dataset, split  # noqa: E402
from core.datasets import QADataset  # noqa: E402
from core.distill import DistillConfig, distill_adapter, teacher_readers  # noqa: E402
from core.embedders import AdapterEmbedder, resolve_embedder  # noqa: E402
from core.evaluation import compare  # noqa: E402
from core.finetune import finetune  # noqa: E402
from core.pseudo_queries import DEFAULT_OFFLINE_METHOD  # noqa: E402
from core.reports import labelled_rows  # noqa: E402
from core.training import TrainConfig, train  # noqa: E402
from core.workspace import Workspace  # noqa: E402

SYSTEMS = ("written alone", "offline alone", "both, one pool", "both, separate")
FINETUNES = ("fine-tune, one pool", "fine-tune, one kind per batch")


def sets(train_ds: QADataset, new_part: dict[str, str], ingested: dict[str, str]) -> dict[str, QADataset]:
    """The training set of each system; each part of ``ingested`` is its own document."""
    off = offline_over(new_part, DEFAULT_OFFLINE_METHOD, 2)
    meta = {c: {"doc_id": "new part" if c in new_part else "training part"} for c in ingested}
    both = QADataset(
        {**train_ds.queries, **off.queries},
        {**train_ds.corpus, **off.corpus},
        {**train_ds.relevant_docs, **off.relevant_docs},
        "text",
        meta,
    )
    return {
        "written alone": train_ds,
        "offline alone": off,
        **{name: both for name in ("both, one pool", "both, separate", *FINETUNES)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(SHARED))
    ap.add_argument("--eval-dataset", default=None, help="protocol (u): questions over another document")
    ap.add_argument("--protocols", nargs="+", default=["a", "r", "e", "f"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=[*SYSTEMS, *FINETUNES])
    ap.add_argument("--distil", action="store_true", help="also distil each fine-tune (Fine-tune, then distil)")
    ap.add_argument("--json", default=None, help="write every per-seed Δ here")
    ap.add_argument(
        "--workspace",
        default=os.environ.get("ADAPTERLAB_WORKSPACE", str(Path(tempfile.gettempdir()) / "adapterlab-bench")),
    )
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    emb = resolve_embedder("default", workspace=ws)
    ds = QADataset.load(args.dataset)
    eval_ds = load_eval_dataset(args.eval_dataset, args.protocols)
    print("| protocol | seed | system | hit@5 | MRR@5 | Δ hit@5 [95% CI] | Δ MRR@5 [95% CI] | p (hit / MRR) |")
    print("|---|---|---|---|---|---|---|---|")
    deltas: dict[str, dict[str, float]] = {}
    for pn in args.protocols:
        for seed in args.seeds:
            train_ds, test_ds, test_chunks, ingested = split(ds, eval_ds, pn, seed)
            new_part = {c: t for c, t in ingested.items() if c in test_chunks}
            training = sets(train_ds, new_part, ingested)
            sources = {
                q: ("offline" if q.startswith(f"{DEFAULT_OFFLINE_METHOD}-") else "llm")
                for q in training["both, one pool"].queries
            }
            systems = {"base": emb}
            for name in args.systems:
                apart = name not in ("both, one pool", "fine-tune, one pool")
                if name in FINETUNES:
                    out = tempfile.mkdtemp(prefix="mixed-ft-")
                    ft = finetune(
                        training[name], "default", out, seed=seed, separate_sources=apart, question_sources=sources
                    )
                    print(f"<!-- {name}: {ft.seconds:.0f} s, {ft.steps} steps, batches {ft.batches} -->", flush=True)
                    systems[name] = resolve_embedder(out, workspace=ws)
                    if args.distil:
                        cfg = DistillConfig(seed=seed)
                        readers = teacher_readers(out, cfg, short=emb.max_seq_length, workspace=ws)
                        questions = list(training[name].queries.values())
                        student, _ = distill_adapter(readers, emb, questions, list(ingested.values()), cfg)
                        systems[f"{name}, distilled"] = AdapterEmbedder(emb, student)
                    continue
                cfg = TrainConfig(adapter="linear", seed=seed, separate_sources=apart)
                result = train(
                    training[name], emb, cfg, negatives=ingested, target_chunks=test_chunks, question_sources=sources
                )
                systems[name] = AdapterEmbedder(emb, result.adapter)
            ranked = QADataset(dict(test_ds.queries), dict(ingested), dict(test_ds.relevant_docs), "text")
            for row in labelled_rows(compare(ranked, systems, baseline="base")):
                if row["system"] == "base":
                    print(f"| ({pn}) | {seed} | base | {row['hit@5']:.3f} | {row['mrr@5']:.3f} | | | |", flush=True)
                    continue
                line, deltas[f"{pn}|{row['system']}|{seed}"] = delta_row(f"| ({pn}) | {seed} | {row['system']} ", row)
                print(line, flush=True)
    print("\n| protocol | system | mean Δ hit@5 | mean Δ MRR@5 | per seed (hit / MRR) |")
    print("|---|---|---|---|---|")
    for (pn, name), (h, m) in by_system(deltas).items():
        seeds = ", ".join(f"{a:+.2f} / {b:+.2f}" for a, b in zip(h, m))
        print(f"| ({pn}) | {name} | {statistics.mean(h):+.2f} | {statistics.mean(m):+.2f} | {seeds} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"deltas": deltas}, indent=1))


if __name__ == "__main__":
    main()
