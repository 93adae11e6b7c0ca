"""Embedding speed: AdapterLab's cached embedder against a bare ``SentenceTransformer.encode``.

The same texts (default 2,000 from the Lyft 10-K: the workspace's chunks, the Lyft dataset's
chunks and questions, and the second half of each chunk, so lengths vary as real corpora do),
the same bundled all-MiniLM-L6-v2, loaded once before timing. Rows:

* **bare encode**: ``SentenceTransformer.encode(texts)`` with its defaults (batch 32), the floor;
* **AdapterLab, cold**: ``CachedEmbedder(SentenceTransformerEmbedder)`` into a fresh cache: hashing,
  lookup, embedding, writing every vector (what a first comparison or training run pays);
* **AdapterLab, warm**: the same texts again (all cached);
* **ONNX fp32 / ONNX int8** (``--backends``): :class:`core.onnx_embedder.OnnxEmbedder` uncached,
  the same batch size as the bare encode, sorted by length as ``encode`` does; exported (once, into
  ``--workspace``'s ``models/onnx``, else a temporary folder) and loaded before timing. The last
  column is the speed-up over the bare encode of the same repeat set.

Each timed row runs ``--repeats`` times (alternating, the median kept: the machine is shared).

    python bench/embed_speed.py [--workspace /tmp/alws_r7] [--n 2000] [--repeats 3] [--backends onnx-fp32 onnx-int8]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.threads import prefer_passive_waiting  # noqa: E402

# Every row runs under the thread policy AdapterLab's entry points set (core/threads.py), the
# bare encode too: before torch loads, idle OpenMP threads sleep instead of spinning.
prefer_passive_waiting()

from core.embedders import BACKENDS, CachedEmbedder, EmbeddingCache, OnnxEmbedder, SentenceTransformerEmbedder  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "lyft_2021_train_dataset.json"


def lyft_texts(workspace: Path | None, n: int) -> list[str]:
    texts: list[str] = []
    for cat in sorted(workspace.rglob("catalog.sqlite")) if workspace else []:
        with sqlite3.connect(cat) as con:
            try:
                texts += [r[0] for r in con.execute("SELECT text FROM chunks ORDER BY id")]
            except sqlite3.OperationalError:
                continue
    if SHARED.is_file():
        ds = json.loads(SHARED.read_text())
        texts += list(ds["corpus"].values()) + list(ds["queries"].values())
    texts += [t[len(t) // 2 :] for t in list(texts) if len(t) > 200]
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    if not unique:
        raise SystemExit("no texts: pass --workspace with ingested chunks, or put the Lyft dataset in shared/data/qa")
    return (unique * (n // len(unique) + 1))[:n] if len(unique) < n else unique[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/alws_r7"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32, help="the bare encode's default; ONNX rows use it too")
    ap.add_argument("--backends", nargs="*", default=["onnx-fp32", "onnx-int8"], choices=["onnx-fp32", "onnx-int8"])
    args = ap.parse_args()

    texts = lyft_texts(args.workspace if args.workspace.exists() else None, args.n)
    st_emb = SentenceTransformerEmbedder("default")  # AdapterLab's path (plain torch on CPU, core.torch_encoder)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(st_emb.path, device="cpu")  # the bare reference; loaded once, excluded
    model.encode(texts[:8], show_progress_bar=False)  # warm the kernels
    lens = [len(t) for t in texts]
    print(
        f"{len(texts)} texts, {statistics.mean(lens):.0f} chars on average (min {min(lens)}, max {max(lens)}); "
        f"torch threads {__import__('torch').get_num_threads()}"
    )

    models_dir = (
        args.workspace / "models" / "onnx" if args.workspace.exists() else Path(tempfile.mkdtemp(prefix="onnx-"))
    )
    onnx = {}
    for b in args.backends:
        e = OnnxEmbedder("default", BACKENDS[b], models_dir=models_dir, batch_size=args.batch_size)
        e.embed_texts(texts[:8])  # export (once) and load, excluded
        onnx[f"ONNX {BACKENDS[b]} (batch {args.batch_size})"] = e
    bare_name = f"bare SentenceTransformer.encode (batch {args.batch_size})"

    times: dict[str, list[float]] = {}

    def timed(name: str, fn) -> None:
        t = time.perf_counter()
        fn()
        times.setdefault(name, []).append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            timed(bare_name, lambda: model.encode(texts, batch_size=args.batch_size, show_progress_bar=False))
            for name, e in onnx.items():
                timed(name, lambda e=e: e.embed_texts(texts))
            cache = EmbeddingCache(Path(tmp) / f"cold-{r}.sqlite")
            cached = CachedEmbedder(st_emb, cache)
            timed("AdapterLab CachedEmbedder, cold cache", lambda c=cached: c.embed_texts(texts))
            timed("AdapterLab CachedEmbedder, warm cache", lambda c=cached: c.embed_texts(texts))

    bare = statistics.median(times[bare_name])
    print()
    print("| path | median s | texts/s | vs bare encode | speed-up (per repeat) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, ts in times.items():
        m = statistics.median(ts)
        per = " / ".join(f"{b / t:.2f}x" for b, t in zip(times[bare_name], ts))
        print(f"| {name} | {m:.2f} | {len(texts) / m:,.0f} | {100 * (m / bare - 1):+.0f}% | {per} |")


if __name__ == "__main__":
    main()
