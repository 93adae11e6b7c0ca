"""Hindsight envelope: how much could *any* fixed setting of the default training give on the test side?

A diagnostic, not a recipe. For each protocol of ``bench/quality.py`` it trains the default
adapter with no selection at every (learning rate, epochs) of a grid, shrinks it toward the
identity at every alpha, and scores each on the protocol's **test** questions. The best cell is
an upper bound on what selection (cross-validation, a hold-out, or a lucky guess) can reach with
this training signal: if even the best cell is below a target, the training signal, not the
selection, is what falls short. Choosing a default from these cells would be choosing on the
test set: the numbers are read only as bounds.

    python bench/oracle_envelope.py [--protocols a r] [--seeds 0 1 2] [--adapter linear]

Cells print as the mean over seeds of Δ hit@5 / Δ MRR@5 (points) against the base model.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import SHARED, load_eval_dataset, split  # noqa: E402
from core.adapters import build_adapter  # noqa: E402
from core.datasets import QADataset  # noqa: E402
from core.embedders import AdapterEmbedder, resolve_embedder  # noqa: E402
from core.evaluation import rank_embeddings  # noqa: E402
from core.training import TrainConfig, _interpolate, train  # noqa: E402
from core.workspace import Workspace  # noqa: E402


def _test_vectors(ds: QADataset, emb) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """(base query vectors, chunk vectors, relevant rows) of a test dataset, from the cache."""
    qids, nodes = list(ds.queries), list(ds.corpus)
    pos = {n: i for i, n in enumerate(nodes)}
    qv = emb.embed_queries([ds.queries[q] for q in qids])
    cv = emb.embed_texts([ds.corpus[n] for n in nodes])
    return qv, cv, [[pos[d] for d in ds.relevant_docs[q] if d in pos] for q in qids]


def _hit_mrr(qv: np.ndarray, cv: np.ndarray, rel: list[list[int]]) -> np.ndarray:
    _, per_query, _, _ = rank_embeddings(qv, cv, rel, top_k=5)
    return 100 * np.array([per_query["hit@5"].mean(), per_query["mrr@5"].mean()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(SHARED))
    ap.add_argument("--protocols", nargs="+", default=["a", "r"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--adapter", default="linear")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 4, 8, 12])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--eval-dataset", default=None, help="protocol (u): questions over another document (quality.py)")
    ap.add_argument("--workspace", default=os.environ.get("ADAPTERLAB_WORKSPACE", "/tmp/alws_oracle"))
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    emb = resolve_embedder("default", workspace=ws)
    ds = QADataset.load(args.dataset)
    eval_ds = load_eval_dataset(args.eval_dataset, args.protocols)
    print(f"embedder: {emb.identity}; dataset: {args.dataset}; adapter: {args.adapter}; seeds {args.seeds}")
    for pn in args.protocols:
        cells: dict[tuple[float, int, float], list[np.ndarray]] = {}
        for seed in args.seeds:
            train_ds, test_ds, test_chunks, _ = split(ds, eval_ds, pn, seed)
            qv, cv, rel = _test_vectors(test_ds, emb)
            base = _hit_mrr(qv, cv, rel)
            for lr, epochs in itertools.product(args.lrs, args.epochs):
                cfg = TrainConfig(adapter=args.adapter, selection="none", epochs=epochs, seed=seed, lr=lr)
                res = train(train_ds, emb, cfg, negatives=ds.corpus, target_chunks=test_chunks)
                trained = {k: v.clone() for k, v in res.adapter.state_dict().items()}
                torch.manual_seed(seed)  # the fit's own start (core.training._fit seeds it so)
                init = build_adapter(args.adapter, qv.shape[1]).state_dict()
                for alpha in args.alphas:
                    res.adapter.load_state_dict(_interpolate(init, trained, alpha))
                    out = AdapterEmbedder(emb, res.adapter).transform(qv)
                    cells.setdefault((lr, epochs, alpha), []).append(_hit_mrr(out, cv, rel) - base)
        mean = {k: np.mean(v, axis=0) for k, v in cells.items()}
        print(f"\n### Protocol ({pn}): Δ hit@5 / Δ MRR@5 on the test questions, mean over seeds {args.seeds}\n")
        print("| lr | epochs | " + " | ".join(f"α {a:g}" for a in args.alphas) + " |")
        print("|---|---|" + "---|" * len(args.alphas))
        for lr, epochs in itertools.product(args.lrs, args.epochs):
            row = " | ".join("{:+.2f} / {:+.2f}".format(*mean[(lr, epochs, a)]) for a in args.alphas)
            print(f"| {lr:g} | {epochs} | {row} |")
        best_hit = max(mean, key=lambda k: mean[k][0])
        best_mrr = max(mean, key=lambda k: mean[k][1])
        best_sum = max(mean, key=lambda k: mean[k].sum())
        for what, k in (("hit@5", best_hit), ("MRR@5", best_mrr), ("(hit@5 + MRR@5)", best_sum)):
            print(
                f"\nbest cell by {what}: lr {k[0]:g}, {k[1]} epochs, α {k[2]:g}: {mean[k][0]:+.2f} / {mean[k][1]:+.2f}"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
