"""Quality of the ONNX backends against the torch one: does int8 move hit@5 / MRR@5?

Two measurements on the real Lyft questions (../shared/data/qa/lyft_2021_train_dataset.json),
each backend's vectors cached under its own identity in ``--workspace``:

1. **base retrieval**: every question (668) over the whole corpus (334 chunks), per backend,
   Δ against torch with a paired bootstrap 95% CI (core.evaluation.compare);
2. **the AdapterLab default adapter** (linear, cross-validated) on protocol (c) (bench/quality.py:
   70/30 chunk split, ``--seeds``), trained on each backend's own vectors, test side, Δ against
   the torch adapter.

Also the per-text cosine between each backend's vectors and torch's (the same texts).

    ADAPTERLAB_WORKSPACE=/tmp/alws_onnx7 python bench/onnx_quality.py [--backends onnx-fp32 onnx-int8] [--seeds 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import SHARED, protocol  # noqa: E402
from core.datasets import QADataset  # noqa: E402
from core.embedders import AdapterEmbedder, resolve_embedder, with_backend  # noqa: E402
from core.evaluation import compare  # noqa: E402
from core.reports import labelled_rows  # noqa: E402
from core.training import TrainConfig, train  # noqa: E402
from core.workspace import Workspace  # noqa: E402


def table(cmp, title: str) -> None:
    print(f"\n### {title}\n")
    print("| system | hit@5 | MRR@5 | Δ hit@5 [95% CI] (pt) | Δ MRR@5 [95% CI] (pt) | p (hit / MRR) |")
    print("|---|---|---|---|---|---|")
    for row in labelled_rows(cmp):
        if "Δ hit@5" in row and row.get("hit@5 CI"):
            lo, hi = row["hit@5 CI"]
            d1 = f"{100 * row['Δ hit@5']:+.2f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            lo, hi = row["mrr@5 CI"]
            d2 = f"{100 * row['Δ mrr@5']:+.2f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            p = f"{row['hit@5 p']:.3f} / {row['mrr@5 p']:.3f}"
        else:
            d1 = d2 = p = "(reference)"
        print(f"| {row['system']} | {row['hit@5']:.4f} | {row['mrr@5']:.4f} | {d1} | {d2} | {p} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(SHARED))
    ap.add_argument("--model", default="default", help="the model spec without a backend suffix")
    ap.add_argument("--backends", nargs="+", default=["onnx-fp32", "onnx-int8"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--workspace",
        default=os.environ.get("ADAPTERLAB_WORKSPACE", str(Path(tempfile.gettempdir()) / "adapterlab-bench")),
    )
    args = ap.parse_args()

    ds = QADataset.load(args.dataset)
    ws = Workspace(args.workspace)
    embs = {"torch": resolve_embedder(with_backend(args.model, "torch"), workspace=ws)}
    for b in args.backends:
        embs[b] = resolve_embedder(with_backend(args.model, b), workspace=ws)
    print(f"dataset: {args.dataset} ({len(ds.queries)} questions, {len(ds.corpus)} chunks)")
    texts = list(ds.queries.values()) + list(ds.corpus.values())
    vecs = {}
    for name, emb in embs.items():
        t = time.perf_counter()
        vecs[name] = emb.embed_texts(texts)
        print(f"{name}: {emb.identity}, {len(texts)} texts ready in {time.perf_counter() - t:.1f} s (cache hits count)")
    print("\n| backend | cosine to torch: min | 1st percentile | mean |\n|---|---|---|---|")
    for name in args.backends:
        cos = (vecs[name] * vecs["torch"]).sum(axis=1)
        print(f"| {name} | {cos.min():.4f} | {np.percentile(cos, 1):.4f} | {cos.mean():.4f} |")

    table(compare(ds, embs, baseline="torch"), f"Base retrieval, all {len(ds.queries)} questions, whole corpus")
    for seed in args.seeds:
        train_ds, test_ds, test_chunks = protocol(ds, "c", seed)
        systems = {}
        for name, emb in embs.items():
            res = train(
                train_ds, emb, TrainConfig(adapter="linear", seed=seed), negatives=ds.corpus, target_chunks=test_chunks
            )
            systems[f"{name} base"] = emb
            systems[f"{name} + default adapter"] = AdapterEmbedder(emb, res.adapter)
        table(
            compare(test_ds, systems, baseline="torch + default adapter"),
            f"Protocol (c) seed {seed}: {len(test_ds.queries)} test questions, whole corpus, Δ vs the torch adapter",
        )


if __name__ == "__main__":
    main()
