"""Embedding speed: AdapterLab's cached embedder against a bare ``SentenceTransformer.encode``.

The same texts (default 2,000 from the Lyft 10-K: the workspace's chunks, the Lyft dataset's
chunks and questions, and the second half of each chunk, so lengths vary as real corpora do),
the same bundled all-MiniLM-L6-v2, loaded once before timing. Rows:

* **bare encode**: ``SentenceTransformer.encode(texts)`` with its defaults (batch 32), the floor;
* **AdapterLab, cold**: ``CachedEmbedder(SentenceTransformerEmbedder)`` into a fresh cache: hashing,
  lookup, embedding, writing every vector (what a first comparison or training run pays);
* **AdapterLab, warm**: the same texts again (all cached);
* **ONNX int8** (``--onnx``, when onnxruntime/optimum are installed): the ``onnx-int8`` embedder
  (its own cache identity), cold, after its one-time export into the workspace.

Each timed row runs ``--repeats`` times (alternating, the median kept: the machine is shared).

    python bench/embed_speed.py [--workspace /tmp/alws_r7] [--n 2000] [--repeats 3] [--onnx]
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

from core.embedders import CachedEmbedder, EmbeddingCache, SentenceTransformerEmbedder  # noqa: E402

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
    ap.add_argument("--onnx", action="store_true", help="also time the ONNX int8 embedder")
    args = ap.parse_args()

    texts = lyft_texts(args.workspace if args.workspace.exists() else None, args.n)
    st_emb = SentenceTransformerEmbedder("default")
    model = st_emb.model  # loaded once, excluded
    model.encode(texts[:8], show_progress_bar=False)  # warm the kernels
    lens = [len(t) for t in texts]
    print(
        f"{len(texts)} texts, {statistics.mean(lens):.0f} chars on average (min {min(lens)}, max {max(lens)}); "
        f"torch threads {__import__('torch').get_num_threads()}"
    )

    times: dict[str, list[float]] = {}

    def timed(name: str, fn) -> None:
        t = time.perf_counter()
        fn()
        times.setdefault(name, []).append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            timed("bare SentenceTransformer.encode (batch 32)", lambda: model.encode(texts, show_progress_bar=False))
            cache = EmbeddingCache(Path(tmp) / f"cold-{r}.sqlite")
            cached = CachedEmbedder(st_emb, cache)
            timed("AdapterLab CachedEmbedder, cold cache", lambda: cached.embed_texts(texts))
            timed("AdapterLab CachedEmbedder, warm cache", lambda: cached.embed_texts(texts))
            if args.onnx:
                from core.embedders import resolve_embedder
                from core.workspace import Workspace

                ws = Workspace(Path(tmp) / "ws")
                onnx = resolve_embedder("onnx-int8", workspace=None)
                if r == 0:
                    t = time.perf_counter()
                    onnx.export_into(ws)
                    print(f"ONNX int8 export (once per workspace): {time.perf_counter() - t:.1f} s")
                onnx.attach_workspace(ws)
                onnx_cached = CachedEmbedder(onnx, EmbeddingCache(Path(tmp) / f"onnx-{r}.sqlite"))
                timed("ONNX int8 (CachedEmbedder, cold cache)", lambda: onnx_cached.embed_texts(texts))

    bare = statistics.median(times["bare SentenceTransformer.encode (batch 32)"])
    print()
    print("| path | median s | texts/s | vs bare encode |")
    print("| --- | ---: | ---: | ---: |")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m:.2f} | {len(texts) / m:,.0f} | {100 * (m / bare - 1):+.0f}% |")


if __name__ == "__main__":
    main()
