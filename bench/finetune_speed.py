"""The full fine-tune's pace on a CPU with and without attention dropout (``FinetuneConfig.attention_dropout``).

PyTorch's fused CPU attention kernel runs without dropout only: with the model's own attention-probability
dropout (0.1 for all-MiniLM-L6-v2) every layer takes the unfused path while training. This runs the product's
:func:`core.finetune.finetune` on the first ``--questions`` Lyft questions (batch 32, the default settings)
once per setting, alternating, ``--repeats`` times, and prints seconds per step (best and median) and the
ratio. The model load is outside the timed steps (the trainer's own clock from the first to the last step).

    python bench/finetune_speed.py [--questions 128] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from core.datasets import QADataset  # noqa: E402
from core.finetune import finetune  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "lyft_2021_train_dataset.json"
SETTINGS = {"auto: 0 on a CPU (the default)": "auto", "model: the model's own (0.1)": "model"}


def per_step(ds: QADataset, attention_dropout: str) -> float:
    """Seconds per optimizer step of one fine-tune, by the step events' clock (model load and save excluded)."""
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        finetune(
            ds,
            "default",
            Path(out) / "ft",
            device="cpu",
            attention_dropout=attention_dropout,
            progress=lambda done, total, msg: stamps.append(time.perf_counter()),
        )
    if len(stamps) < 2:
        raise SystemExit("need at least two steps: raise --questions")
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(SHARED))
    ap.add_argument("--questions", type=int, default=128, help="training questions (batch 32: 4 steps for 128)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    full = QADataset.load(args.dataset)
    ids = full.query_ids[: args.questions]
    ds = full.subset(ids, list(dict.fromkeys(d for q in ids for d in full.relevant_docs[q])))  # their chunks only
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for _ in range(args.repeats):
        for label, rate in SETTINGS.items():
            times[label].append(per_step(ds, rate))
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.questions} questions (batch 32), "
        f"{args.repeats} runs each, alternating\n"
    )
    print("| attention dropout | s per step, best | median | vs the default (median) |\n|---|---|---|---|")
    base = statistics.median(next(iter(times.values())))
    for label, ts in times.items():
        med = statistics.median(ts)
        print(f"| {label} | {min(ts):.2f} | {med:.2f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
