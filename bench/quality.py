"""Quality benchmark: base vs LlamaIndex-default adapter vs AdapterLab-default adapter.

Split the real Lyft questions (../shared/data/qa/lyft_2021_train_dataset.json) by chunk into
train / test (seeded; no chunk's questions on both sides), train both adapters on the train
side only (AdapterLab takes its own validation split from the train side), and report hit@5,
MRR@5, nDCG@10 on the test side with paired bootstrap 95% CIs and p-values against the base.

    python bench/quality.py [--dataset PATH] [--seeds 0 1 2] [--adapter linear]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.datasets import QADataset  # noqa: E402
from core.embedders import AdapterEmbedder, resolve_embedder  # noqa: E402
from core.evaluation import compare  # noqa: E402
from core.training import TrainConfig, split_by_chunk, train  # noqa: E402
from core.workspace import Workspace  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "lyft_2021_train_dataset.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(SHARED))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--adapter", default="linear")
    ap.add_argument("--test-fraction", type=float, default=0.3)
    ap.add_argument("--workspace", default=os.environ.get("ADAPTERLAB_WORKSPACE", str(Path(tempfile.gettempdir()) / "adapterlab-bench")))
    args = ap.parse_args()

    ds = QADataset.load(args.dataset)
    ws = Workspace(args.workspace)
    emb = resolve_embedder("default", workspace=ws)
    print(f"dataset: {args.dataset} ({len(ds.queries)} questions, {len(ds.corpus)} chunks); adapter: {args.adapter}\n")
    print("| seed | system | hit@5 | MRR@5 | nDCG@10 | Δ MRR@5 [95% CI] | p (MRR) | Δ hit@5 [95% CI] | p (hit) | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        train_q, test_q = split_by_chunk(ds, args.test_fraction, seed)
        test_chunks = {ds.relevant_docs[q][0] for q in test_q}
        train_ds = ds.subset(train_q, [c for c in ds.corpus if c not in test_chunks])
        test_ds = ds.subset(test_q)
        t = time.time()
        li = train(train_ds, emb, TrainConfig.llamaindex_defaults(args.adapter, epochs=4))
        t_li = time.time() - t
        t = time.time()
        al = train(train_ds, emb, TrainConfig(adapter=args.adapter, seed=seed))
        t_al = time.time() - t
        cmp = compare(
            test_ds,
            {"base": emb, "LlamaIndex defaults": AdapterEmbedder(emb, li.adapter), "AdapterLab default": AdapterEmbedder(emb, al.adapter)},
            baseline="base",
        )
        secs = {"base": "", "LlamaIndex defaults": f"{t_li:.1f}", "AdapterLab default": f"{t_al:.1f}"}
        for row in cmp.rows():
            name = row["system"]
            if name == "base":
                d1 = p1 = d2 = p2 = ""
            else:
                lo, hi = row["mrr@5 CI"]
                d1 = f"{row['Δ mrr@5']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                p1 = f"{row['mrr@5 p']:.3f}"
                lo, hi = row["hit@5 CI"]
                d2 = f"{row['Δ hit@5']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                p2 = f"{row['hit@5 p']:.3f}"
            print(f"| {seed} | {name} | {row['hit@5']:.3f} | {row['mrr@5']:.3f} | {row['ndcg@10']:.3f} | {d1} | {p1} | {d2} | {p2} | {secs[name]} |")
        if al.best_epoch == 0:
            print(f"| {seed} | (AdapterLab kept the identity: no validation gain) | | | | | | | | |")


if __name__ == "__main__":
    main()
