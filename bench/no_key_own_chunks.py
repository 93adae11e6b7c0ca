"""Protocol (d) on AdapterLab's own chunking: does training on offline questions lift real questions
over the chunks the app itself makes?

``bench/no_key.py`` (protocol (d)) ingests the Lyft PDF without a model's input limit, so its chunks
are 512 tokens, longer than the bundled model reads. A user of the app gets chunks the model reads
whole (240 tokens: ``ChunkSettings().resolved(256)``). This script ingests the PDF as the app does
(``WORKSPACE/own-chunks``), makes the default offline questions (2 per chunk) over every chunk, and
trains three systems on them per seed: the AdapterLab default adapter, a full fine-tune (default
settings) and that fine-tune distilled into an adapter (default settings). The 668 real LLM
questions of ``../shared`` test them two ways:

- **own chunks** (what a user of the app searches): each question's relevant chunks are the PDF's
  chunks that lie mostly (half of their word 4-grams or more) inside the question's chunk in the
  JSON file, ranked among all the PDF's chunks; questions whose JSON chunk matches no PDF chunk are
  left out. The distillation ranks the PDF's chunks.
- **the JSON's chunks** (protocol (d)'s test, the issue's: the LlamaIndex file's longer chunks). The
  distillation ranks the PDF's chunks and the JSON's, as for a user who names that file.

Nothing is chosen on the real questions. A fine-tune takes about 6 minutes per seed on two CPU cores.

    python bench/no_key_own_chunks.py --seeds 0 1 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.distill import by_system, delta_row  # noqa: E402
from bench.no_key import offline_dataset  # noqa: E402
from bench.quality import SHARED  # noqa: E402
from core.datasets import QADataset  # noqa: E402
from core.distill import DistillConfig, distill_adapter, long_chunk_share, teacher_readers  # noqa: E402
from core.documents import ingest_files, list_documents  # noqa: E402
from core.embedders import AdapterEmbedder, resolve_embedder  # noqa: E402
from core.evaluation import compare  # noqa: E402
from core.finetune import finetune  # noqa: E402
from core.pseudo_queries import DEFAULT_OFFLINE_METHOD  # noqa: E402
from core.reports import labelled_rows  # noqa: E402
from core.training import TrainConfig, train  # noqa: E402
from core.workspace import Workspace  # noqa: E402

INSIDE = 0.5  # a PDF chunk is relevant when this share of its word 4-grams is in the question's JSON chunk


def grams(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {" ".join(words[i : i + 4]) for i in range(max(1, len(words) - 3))}


def relabel(ds: QADataset, corpus: dict[str, str]) -> QADataset:
    """``ds``'s questions with their relevant chunks among ``corpus`` (another chunking of the same text)."""
    own = {cid: grams(text) for cid, text in corpus.items()}
    inside = {}
    for jid, text in ds.corpus.items():
        g = grams(text)
        inside[jid] = [cid for cid, p in own.items() if p and len(p & g) / len(p) >= INSIDE]
    kept = {q: t for q, t in ds.queries.items() if inside[ds.relevant_docs[q][0]]}
    return QADataset(kept, dict(corpus), {q: inside[ds.relevant_docs[q][0]] for q in kept}, "text")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(SHARED))
    ap.add_argument("--pdf", default=str(Path(SHARED).parents[1] / "10k" / "lyft_2021.pdf"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", default=None, help="write every per-seed Δ here")
    ap.add_argument("--workspace", default=os.environ.get("ADAPTERLAB_WORKSPACE", "/tmp/adapterlab-bench"))
    args = ap.parse_args()
    ws = Workspace(Path(args.workspace) / "own-chunks")
    emb = resolve_embedder("default", workspace=ws)
    if not list_documents(ws):  # as the app ingests: chunks the base model reads whole
        pdf = Path(args.pdf)
        ingest_files(ws, [(pdf.name, pdf)], token_counter=emb.token_counter(), max_seq_length=emb.max_seq_length)
    train_ds = offline_dataset(ws, DEFAULT_OFFLINE_METHOD, 2)
    pdf_chunks = train_ds.corpus
    real = QADataset.load(args.dataset)
    tests = {"own chunks": relabel(real, pdf_chunks), "the JSON's chunks": real}
    ranked = {
        "own chunks": list(pdf_chunks.values()),
        "the JSON's chunks": [*pdf_chunks.values(), *real.corpus.values()],
    }
    share = long_chunk_share(list(pdf_chunks.values()), emb)
    own = tests["own chunks"]
    print(
        f"{len(train_ds.queries):,} offline questions over {len(pdf_chunks):,} PDF chunks ({share:.0%} longer than the "
        f"base model reads); own chunks: {len(own.queries)} of {len(real.queries)} real questions matched, "
        f"{statistics.mean(len(v) for v in own.relevant_docs.values()):.1f} relevant chunks each\n"
    )
    print("| test | seed | system | hit@5 | MRR@5 | Δ hit@5 [95% CI] | Δ MRR@5 [95% CI] | p (hit / MRR) |")
    print("|---|---|---|---|---|---|---|---|")
    deltas: dict[str, dict[str, float]] = {}
    for seed in args.seeds:
        t = time.time()
        adapter = train(train_ds, emb, TrainConfig(adapter="linear", seed=seed)).adapter
        adapter_s, t = time.time() - t, time.time()
        ft = finetune(train_ds, "default", Path(tempfile.mkdtemp(prefix="ft-own-")), seed=seed)
        ft_s = time.time() - t
        config = DistillConfig(seed=seed)
        readers = teacher_readers(str(ft.out_dir), config, short=emb.max_seq_length, workspace=ws)
        tuned = resolve_embedder(str(ft.out_dir), workspace=ws)
        for test_name, test in tests.items():
            t = time.time()
            student, _ = distill_adapter(readers, emb, list(train_ds.queries.values()), ranked[test_name], config)
            distil_s = time.time() - t
            systems = {
                "base": emb,
                f"AdapterLab default ({adapter_s:.0f} s)": AdapterEmbedder(emb, adapter),
                f"fine-tune, then distil ({ft_s:.0f} s + {distil_s:.0f} s)": AdapterEmbedder(emb, student),
                "full fine-tune (re-embeds)": tuned,
            }
            for row in labelled_rows(compare(test, systems, baseline="base")):
                name = row["system"]
                if name == "base":
                    print(
                        f"| {test_name} | {seed} | base | {row['hit@5']:.3f} | {row['mrr@5']:.3f} | | | |", flush=True
                    )
                    continue
                line, deltas[f"{test_name}|{name.split(' (')[0]}|{seed}"] = delta_row(
                    f"| {test_name} | {seed} | {name} ", row
                )
                print(line, flush=True)
    print("\n| test | system | seeds | median Δ hit@5 / MRR@5 | per seed (hit@5) |\n|---|---|---|---|---|")
    for (test_name, name), (h, m) in by_system(deltas).items():
        print(
            f"| {test_name} | {name} | {len(h)} | {statistics.median(h):+.2f} / {statistics.median(m):+.2f} | "
            f"{', '.join(f'{x:+.2f}' for x in h)} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"deltas": deltas}, indent=1))


if __name__ == "__main__":
    main()
