"""Distilled adapters (core.distill) against the base, the question-trained default and their teacher.

For each protocol of ``bench/quality.py`` and seed: fully fine-tune the base model on the training
questions (:func:`core.finetune.finetune`, that seed), distil it into a linear adapter over every
ingested chunk (the whole file; in (u) the other filing's chunks too), and compare on the test
questions: base, the AdapterLab default (cross-validated, trained on the questions), the fine-tune
(re-embeds the corpus) and the distilled adapter (base vectors only). Δ hit@5 / Δ MRR@5 in points.

    python bench/distill.py --protocols u a r --seeds 0 1 2 --eval-dataset uber_questions.json
    python bench/distill.py --protocols d --seeds 0 1 2     # the no-key path: offline questions train
    python bench/distill.py --protocols u --distil-over training ...   # without the searched documents

A fine-tune takes about 3 minutes per seed on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import (  # noqa: E402
    SHARED,
    distil_recipe,
    load_eval_dataset,
    offline_protocol,
    protocol_documents,
    split,
)
from core.datasets import QADataset  # noqa: E402
from core.distill import DistillConfig  # noqa: E402
from core.embedders import AdapterEmbedder, resolve_embedder  # noqa: E402
from core.evaluation import compare  # noqa: E402
from core.reports import labelled_rows  # noqa: E402
from core.training import TrainConfig, train  # noqa: E402
from core.workspace import Workspace  # noqa: E402


def delta_row(cells: str, row: dict) -> tuple[str, dict[str, float]]:
    """One system's markdown row after its leading ``cells`` (``"| protocol | seed | name "``): hit@5, MRR@5, their
    Δ in points with the 95% CI, and the p-values; and the Δ as ``{"hit", "mrr"}`` (a labelled compare row)."""
    d = {"hit": 100 * row["Δ hit@5"], "mrr": 100 * row["Δ mrr@5"]}
    ci = [row["hit@5 CI"], row["mrr@5 CI"]]
    return (
        f"{cells}| {row['hit@5']:.3f} | {row['mrr@5']:.3f} | {d['hit']:+.1f} [{100 * ci[0][0]:+.1f}, "
        f"{100 * ci[0][1]:+.1f}] | {d['mrr']:+.1f} [{100 * ci[1][0]:+.1f}, {100 * ci[1][1]:+.1f}] | "
        f"{row['hit@5 p']:.3f} / {row['mrr@5 p']:.3f} |"
    ), d


def by_system(deltas: dict[str, dict[str, float]]) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
    """Per-seed Δ keyed ``"protocol|system|seed"`` grouped by (protocol, system), in first-seen order: the
    seeds' (hit@5 Δ, MRR@5 Δ) lists."""
    out: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for key, d in deltas.items():
        pn, name, _ = key.rsplit("|", 2)
        h, m = out.setdefault((pn, name), ([], []))
        h.append(d["hit"])
        m.append(d["mrr"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(SHARED))
    ap.add_argument("--eval-dataset", default=None, help="protocol (u): questions over another document")
    ap.add_argument("--protocols", nargs="+", default=["u", "a", "r"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=DistillConfig.steps)
    ap.add_argument(
        "--distil-over",
        choices=["searched", "training"],
        default="searched",
        help="the chunks the distillation ranks: every ingested chunk, the test documents included (the product's "
        "way), or only the training questions' chunks (what happens when the searched documents are unknown)",
    )
    ap.add_argument(
        "--blend",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the teacher's reads: blended, or the long read alone (default: the product's choice for the protocol's "
        "ingested documents, core.distill.resolve_teacher_blend)",
    )
    ap.add_argument("--json", default=None, help="write every per-seed Δ here")
    ap.add_argument("--workspace", default=os.environ.get("ADAPTERLAB_WORKSPACE", "/tmp/adapterlab-bench"))
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    emb = resolve_embedder("default", workspace=ws)
    ds = QADataset.load(args.dataset)
    eval_ds = load_eval_dataset(args.eval_dataset, args.protocols)
    deltas: dict[str, dict[str, float]] = {}
    print("| protocol | seed | system | hit@5 | MRR@5 | Δ hit@5 [95% CI] | Δ MRR@5 [95% CI] | p (hit / MRR) |")
    print("|---|---|---|---|---|---|---|---|")
    for pn in args.protocols:
        for seed in args.seeds:
            if pn == "d":  # the no-key path: offline questions over the Lyft PDF train, the LLM questions test
                train_ds = offline_protocol(args.workspace, Path(args.dataset).parents[1] / "10k" / "lyft_2021.pdf")
                test_ds, test_chunks = ds, set(ds.corpus)
                ingested = {**train_ds.corpus, **ds.corpus}  # the same filing, chunked twice: both are searched
                negatives = None  # as bench/quality.py trains the default on (d)
            else:
                train_ds, test_ds, test_chunks, ingested = split(ds, eval_ds, pn, seed)
                negatives = ingested
            res = train(
                train_ds, emb, TrainConfig(adapter="linear", seed=seed), negatives=negatives, target_chunks=test_chunks
            )
            ranked = ingested if args.distil_over == "searched" else train_ds.corpus
            documents = protocol_documents(pn, ds, eval_ds, train_ds) if args.distil_over == "searched" else {}
            student, teacher, _, _ = distil_recipe(
                train_ds, list(ranked.values()), emb, ws, seed, args.steps, documents=documents, blend=args.blend
            )
            systems = {
                "base": emb,
                "AdapterLab default": AdapterEmbedder(emb, res.adapter),
                "full fine-tune": teacher,
                "distilled": AdapterEmbedder(emb, student),
            }
            for row in labelled_rows(compare(test_ds, systems, baseline="base")):
                name = row["system"]
                if name == "base":
                    print(f"| {pn} | {seed} | base | {row['hit@5']:.3f} | {row['mrr@5']:.3f} | | | |", flush=True)
                    continue
                line, deltas[f"{pn}|{name}|{seed}"] = delta_row(f"| {pn} | {seed} | {name} ", row)
                print(line, flush=True)
    print("\n| protocol | system | seeds | mean Δ hit@5 / MRR@5 | median Δ hit@5 [min] |\n|---|---|---|---|---|")
    for (pn, name), (h, m) in sorted(by_system(deltas).items()):
        print(
            f"| {pn} | {name} | {len(h)} | {statistics.mean(h):+.2f} / {statistics.mean(m):+.2f} | "
            f"{statistics.median(h):+.1f} [{min(h):+.1f}] |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"deltas": deltas}, indent=1))


if __name__ == "__main__":
    main()
