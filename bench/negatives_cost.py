"""Where does the corpus softmax become the cost? Time of one optimizer step (forward and
backward, batch 32, 384-d, linear adapter) over every chunk and over sampled negatives
(in-batch + 32 mined hard negatives per question + 4,096 random chunks), by corpus size, and
the time of a default cross-validated run at 2 questions per chunk that this implies.

    python bench/negatives_cost.py [--sizes 1000 5000 10000 50000]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.training import SAMPLED_HARD, SAMPLED_RANDOM, TrainConfig, _loss, _mine_hard, _Problem  # noqa: E402


def step_seconds(prob: _Problem, cfg: TrainConfig, repeats: int = 5) -> float:
    adapter = torch.nn.Linear(prob.corpus.shape[1], prob.corpus.shape[1], bias=False)
    best = float("inf")
    for r in range(repeats):
        batch = list(range(r * 32, r * 32 + 32))
        t = time.perf_counter()
        _loss(adapter, prob, batch, cfg).backward()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 50000])
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = TrainConfig()
    print("| chunks | every chunk ms/step | sampled ms/step | default CV run, every chunk (est.) | sampled (est.) |")
    print("|---|---|---|---|---|")
    for m in args.sizes:
        corpus = F.normalize(torch.randn(m, 384), dim=-1)
        n = 32 * 5
        targets = torch.randint(0, m, (n,))
        qv = corpus[targets] + 0.3 * torch.randn(n, 384)
        empty = [torch.tensor([], dtype=torch.long)] * n
        hard = _mine_hard(qv, corpus, targets.tolist(), empty, SAMPLED_HARD)
        full = _Problem(qv, targets, corpus, empty, [[int(t)] for t in targets], None, corpus.numpy(), False)
        sampled = _Problem(qv, targets, corpus, empty, [[int(t)] for t in targets], hard, corpus.numpy(), True)
        a, b = step_seconds(full, cfg), step_seconds(sampled, cfg)
        # 2 questions per chunk; 5 folds x 12 epochs on 4/5 of them plus a ~3-epoch refit
        steps = math.ceil(2 * m / 32) * (cfg.cv_folds * cfg.epochs * 0.8 + 3)
        print(
            f"| {m:,} | {1000 * a:.1f} | {1000 * b:.1f} | {a * steps / 60:.1f} min | {b * steps / 60:.1f} min |",
            flush=True,
        )
    print(
        f"\nsampled = in-batch + {SAMPLED_HARD} hard negatives per question + {SAMPLED_RANDOM} random chunks per step"
    )


if __name__ == "__main__":
    main()
