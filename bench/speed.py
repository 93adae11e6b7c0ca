"""Training speed: LlamaIndex's way vs AdapterLab's way, in one run.

The same 4-epoch linear training on the real Lyft questions (AdamW lr 2e-5, batch 10,
in-batch ranking loss, scale 20: LlamaIndex's engine defaults):

* **LlamaIndex's way** (the anchor): the engine calls the embedding model for every example of
  every batch of every epoch, one text at a time (query and context): 668 x 2 x 4 = 5,344 calls.
  Reproduced here with the same bundled all-MiniLM-L6-v2, one ``encode`` per text.
* **AdapterLab, cold cache**: unique texts embedded once, in batches, into a fresh workspace
  cache; then 4 epochs on tensors.
* **AdapterLab, warm cache**: the same, with every text already cached (a second run, or a
  second adapter on the same data).

The model load is done once before timing and excluded from every row.

    python bench/speed.py [--dataset PATH] [--epochs 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from core.adapters import build_adapter  # noqa: E402
from core.datasets import QADataset  # noqa: E402
from core.embedders import CachedEmbedder, EmbeddingCache, SentenceTransformerEmbedder  # noqa: E402
from core.training import TrainConfig, train  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "lyft_2021_train_dataset.json"


def llamaindex_way(ds: QADataset, emb: SentenceTransformerEmbedder, epochs: int) -> tuple[float, int]:
    """Re-embed every example of every batch of every epoch, one text at a time, through
    sentence-transformers as LlamaIndex does (not AdapterLab's plain-torch encoder)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(emb.path, device="cpu")
    adapter = build_adapter("linear", emb.dimension)
    opt = torch.optim.AdamW(adapter.parameters(), lr=2e-5)
    pairs = ds.pairs()
    calls = 0
    t = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(pairs), generator=g).tolist()
        for start in range(0, len(order), 10):
            batch = [pairs[i] for i in order[start : start + 10]]
            q = torch.stack(
                [torch.from_numpy(model.encode([ds.queries[qid]], show_progress_bar=False)[0]) for qid, _ in batch]
            )
            c = torch.stack(
                [torch.from_numpy(model.encode([ds.corpus[nid]], show_progress_bar=False)[0]) for _, nid in batch]
            )
            calls += 2 * len(batch)
            qa = F.normalize(adapter(q), dim=-1)
            logits = qa @ F.normalize(c, dim=-1).T * 20.0
            loss = F.cross_entropy(logits, torch.arange(len(batch)))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t, calls


def adapterlab_way(ds: QADataset, emb, epochs: int) -> float:
    cfg = TrainConfig.llamaindex_defaults("linear", epochs=epochs)
    t = time.perf_counter()
    train(ds, emb, cfg)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(SHARED))
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    ds = QADataset.load(args.dataset)
    base = SentenceTransformerEmbedder("default")
    base.model.encode(["warm-up"], show_progress_bar=False)  # load once, outside every timing
    with tempfile.TemporaryDirectory() as tmp:
        cached = CachedEmbedder(base, EmbeddingCache(Path(tmp) / "embeddings.sqlite"))
        cold = adapterlab_way(ds, cached, args.epochs)
        cold_misses = cached.stats.misses
        warm_times = []
        for _ in range(5):
            cached.stats.misses = 0
            warm_times.append(adapterlab_way(ds, cached, args.epochs))
        warm = min(warm_times)
        warm_misses = cached.stats.misses
    anchor, calls = llamaindex_way(ds, base, args.epochs)
    print(
        f"dataset: {args.dataset}: {len(ds.queries)} questions, {len(ds.corpus)} chunks; {args.epochs} epochs; "
        f"torch threads {torch.get_num_threads()}\n"
    )
    print("| way | texts sent to the model | seconds | speed-up vs LlamaIndex's way |")
    print("|---|---|---|---|")
    print(f"| LlamaIndex's way (re-embed every batch, one text per call) | {calls:,} | {anchor:.2f} | 1x |")
    print(
        f"| AdapterLab, cold cache (unique texts once, batched) | {cold_misses:,} | {cold:.2f} | {anchor / cold:.1f}x |"
    )
    print(f"| AdapterLab, warm cache (best of 5) | {warm_misses:,} | {warm:.3f} | {anchor / warm:.0f}x |")


if __name__ == "__main__":
    main()
