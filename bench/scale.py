"""Scale: ranking a million chunks, the embedding cache at a million vectors, Ray vs the local engine.

Prints three tables (results and the machine they ran on in bench/README.md):

1. ``core.evaluation.rank_embeddings`` on synthetic 384-d vectors, 2,000 queries, 1-3 relevant
   chunks each: time and peak memory above the vectors, against the bare matrix product (torch,
   in query blocks so that it fits too). ``before`` is the first release's loop (kept below);
   it is only run where it fits this machine (``--before 100000,400000``).
2. The embedding cache: bulk insert, bulk read (every vector back as one matrix) and size on
   disk, one SQLite row per vector (before, kept below) against the index + float32 shards.
3. ``python -m core embed``'s engines on the same texts: Ray local mode against the local one.

Each measurement runs in its own process so that its peak memory (``ru_maxrss``) is its own.

    .venv/bin/python bench/scale.py                       # all three
    .venv/bin/python bench/scale.py --only rank --sizes 100000,400000,1000000 --before 100000
    .venv/bin/python bench/scale.py --only cache --cache-sizes 100000,1000000
    .venv/bin/python bench/scale.py --only ray --texts 400
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIM = 384
QUERIES = 2000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------------------------------------
# the first release's implementations, kept for "before"
# ------------------------------------------------------------------------------------------------
def old_rank_embeddings(query_vecs, corpus_vecs, relevant, top_k=5, block=1024):
    def norm(x):
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    q, c = norm(query_vecs), norm(corpus_vecs)
    n, m = q.shape[0], c.shape[0]
    keep = min(max(top_k, 10), m)
    first = np.full(n, np.inf)
    top_idx = np.zeros((n, keep), dtype=np.int64)
    for start in range(0, n, block):
        s = q[start : start + block] @ c.T
        part = np.argpartition(-s, keep - 1, axis=1)[:, :keep]
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        top_idx[start : start + len(s)] = np.take_along_axis(part, order, axis=1)
        for r in range(len(s)):
            rel = np.unique(np.asarray(relevant[start + r], dtype=np.int64))
            if rel.size == 0:
                continue
            rel_scores = np.sort(s[r, rel])[::-1]
            at_least = (s[r][None, :] >= rel_scores[:, None]).sum(axis=1)
            rel_at_least = (rel_scores[None, :] >= rel_scores[:, None]).sum(axis=1)
            ranks = (at_least - rel_at_least) + np.arange(1, rel.size + 1)
            first[start + r] = ranks.min()
            _ = float(sum(1.0 / math.log2(rk + 1) for rk in ranks if rk <= 10))
    return first, top_idx


class OldEmbeddingCache:
    """The first release's cache: one SQLite row per vector."""

    def __init__(self, path):
        self.path = str(path)
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, key BLOB NOT NULL, "
                "dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model, key)) WITHOUT ROWID"
            )

    def _connect(self):
        con = sqlite3.connect(self.path, timeout=30.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    def get_many(self, model, keys):
        found = {}
        con = self._connect()
        try:
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                for key, dim, vec in con.execute(
                    f"SELECT key, dim, vec FROM vectors WHERE model=? AND key IN ({marks})", (model, *part)
                ):
                    found[bytes(key)] = np.frombuffer(vec, dtype=np.float32, count=dim)
        finally:
            con.close()
        return found

    def put_many(self, model, items):
        with self._connect() as con:
            con.executemany(
                "INSERT OR REPLACE INTO vectors(model, key, dim, vec) VALUES (?, ?, ?, ?)",
                [(model, k, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes()) for k, v in items],
            )


# ------------------------------------------------------------------------------------------------
# children (one measurement each)
# ------------------------------------------------------------------------------------------------
def _problem(m: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((m, DIM), dtype=np.float32)
    queries = rng.standard_normal((QUERIES, DIM), dtype=np.float32)
    relevant = [list(rng.integers(0, m, size=int(rng.integers(1, 4)))) for _ in range(QUERIES)]
    return queries, corpus, relevant


def child_rank(impl: str, m: int) -> dict:
    import torch

    queries, corpus, relevant = _problem(m)
    if impl == "bare":
        block = 256
        buf = torch.empty((block, m), dtype=torch.float32)
        qt, ct = torch.from_numpy(queries), torch.from_numpy(corpus)
        base, t0 = _rss_bytes(), time.perf_counter()
        for s in range(0, QUERIES, block):
            qb = qt[s : s + block]
            torch.mm(qb, ct.T, out=buf[: qb.shape[0]])
    elif impl == "before":
        base, t0 = _rss_bytes(), time.perf_counter()
        old_rank_embeddings(queries, corpus, relevant)
    else:
        from core.evaluation import rank_embeddings

        base, t0 = _rss_bytes(), time.perf_counter()
        rank_embeddings(queries, corpus, relevant, top_k=5)
    secs = time.perf_counter() - t0
    return {
        "seconds": secs,
        "peak_above_vectors_gb": (_peak_bytes() - base) / 1e9,
        "peak_gb": _peak_bytes() / 1e9,
        "vectors_gb": corpus.nbytes / 1e9,
        "threads": torch.get_num_threads(),
    }


def _keys(n: int) -> list[bytes]:
    import hashlib

    return [hashlib.sha256(i.to_bytes(8, "little")).digest() for i in range(n)]


def child_cache(impl: str, n: int, folder: str) -> dict:
    rng = np.random.default_rng(0)
    keys = _keys(n)
    path = Path(folder) / "embeddings.sqlite"
    batch = 512  # CachedEmbedder writes every 512 new texts
    vecs = rng.standard_normal((n, DIM), dtype=np.float32)
    if impl == "before":
        cache = OldEmbeddingCache(path)
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            cache.put_many("m", list(zip(keys[s : s + batch], vecs[s : s + batch])))
        t_ins = time.perf_counter() - t0
        del cache
        cache = OldEmbeddingCache(path)
        base, t0 = _rss_bytes(), time.perf_counter()
        found = cache.get_many("m", keys)
        mat = np.stack([found[k] for k in keys])
    else:
        from core.vectorstore import EmbeddingCache

        cache = EmbeddingCache(path)
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            cache.put_matrix("m", keys[s : s + batch], vecs[s : s + batch])
        t_ins = time.perf_counter() - t0
        cache = EmbeddingCache(path)
        base, t0 = _rss_bytes(), time.perf_counter()
        mat, have = cache.get_matrix("m", keys)
        assert have.all()
    t_read = time.perf_counter() - t0
    assert np.array_equal(mat[:: max(1, n // 1000)], vecs[:: max(1, n // 1000)])
    size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    return {
        "insert_per_s": n / t_ins,
        "read_per_s": n / t_read,
        "insert_s": t_ins,
        "read_s": t_read,
        "disk_gb": size / 1e9,
        "read_peak_above_gb": (_peak_bytes() - base) / 1e9,
    }


def child_engine(engine: str, texts_file: str, folder: str) -> dict:
    from core.embed_engine import embed_to_cache
    from core.workspace import Workspace

    texts = json.loads(Path(texts_file).read_text())
    ws = Workspace(folder)
    rep = embed_to_cache(ws, "default", texts, [], engine=engine, actors=None)
    # a second run: nothing left to embed
    again = embed_to_cache(ws, "default", texts, [], engine=engine)
    return {
        "seconds": rep.seconds,
        "texts": rep.embedded,
        "per_s": rep.rate,
        "actors": rep.actors,
        "second_run_embedded": again.embedded,
        "second_run_s": again.seconds,
    }


def _run_child(*args: str, timeout: float = 3600) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(rows: list[dict], cols: list[str]) -> str:
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    out = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    out += ["| " + " | ".join(x.ljust(w) for x, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(out)


def bench_rank(sizes: list[int], before: set[int]) -> None:
    rows = []
    for m in sizes:
        bare = _run_child("rank", "bare", str(m))
        new = _run_child("rank", "after", str(m))
        row = {
            "chunks": f"{m:,}",
            "vectors GB": f"{new['vectors_gb']:.2f}",
            "bare product s": f"{bare['seconds']:.1f}",
            "after s": f"{new['seconds']:.1f}",
            "after / bare": f"{new['seconds'] / bare['seconds']:.2f}x",
            "after peak above vectors GB": f"{new['peak_above_vectors_gb']:.2f}",
        }
        if m in before:
            old = _run_child("rank", "before", str(m))
            row.update(
                {
                    "before s": f"{old['seconds']:.1f}",
                    "before peak above vectors GB": f"{old['peak_above_vectors_gb']:.2f}",
                }
            )
        else:
            row.update({"before s": "not run", "before peak above vectors GB": "not run"})
        rows.append(row)
        print(f"  rank {m:,}: {row}", file=sys.stderr, flush=True)
    print(f"\nrank_embeddings, {QUERIES:,} queries x {DIM}-d, torch threads {new['threads']}\n")
    print(
        _table(
            rows,
            [
                "chunks",
                "vectors GB",
                "bare product s",
                "before s",
                "before peak above vectors GB",
                "after s",
                "after / bare",
                "after peak above vectors GB",
            ],
        )
    )


def bench_cache(sizes: list[int], before: set[int]) -> None:
    rows = []
    for n in sizes:
        for impl in ("before", "after"):
            if impl == "before" and n not in before:
                continue
            folder = tempfile.mkdtemp(prefix="scale-cache-", dir=os.environ.get("SCALE_TMP"))
            try:
                r = _run_child("cache", impl, str(n), folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            rows.append(
                {
                    "vectors": f"{n:,}",
                    "cache": "one row per vector (before)" if impl == "before" else "index + shards (after)",
                    "insert /s": f"{r['insert_per_s']:,.0f}",
                    "read /s": f"{r['read_per_s']:,.0f}",
                    "insert s": f"{r['insert_s']:.1f}",
                    "read s": f"{r['read_s']:.2f}",
                    "disk GB": f"{r['disk_gb']:.2f}",
                    "read peak above GB": f"{r['read_peak_above_gb']:.2f}",
                }
            )
            print(f"  cache {impl} {n:,}: {rows[-1]}", file=sys.stderr, flush=True)
    print(f"\nembedding cache, {DIM}-d float32, inserts in batches of 512, one bulk read of every vector\n")
    print(
        _table(
            rows, ["vectors", "cache", "insert /s", "insert s", "read /s", "read s", "disk GB", "read peak above GB"]
        )
    )


def bench_ray(n_texts: int) -> None:
    src = Path("/work/shared/data/qa/lyft_2021_train_dataset.json")
    if src.exists():
        texts = list(dict.fromkeys(json.loads(src.read_text())["corpus"].values()))[:n_texts]
    else:
        rng = np.random.default_rng(0)
        words = "revenue riders drivers insurance growth market loss quarter vehicle platform".split()
        texts = [" ".join(rng.choice(words, size=120)) + f" ({i})" for i in range(n_texts)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tf = Path(tmp) / "texts.json"
        tf.write_text(json.dumps(texts))
        for engine in ("local", "ray"):
            r = _run_child("engine", engine, str(tf), str(Path(tmp) / engine))
            rows.append(
                {
                    "engine": engine,
                    "texts": r["texts"],
                    "actors": r["actors"],
                    "seconds (incl. start-up)": f"{r['seconds']:.1f}",
                    "texts/s": f"{r['per_s']:.1f}",
                    "second run: embedded": r["second_run_embedded"],
                    "second run s": f"{r['second_run_s']:.2f}",
                }
            )
            print(f"  engine {engine}: {rows[-1]}", file=sys.stderr, flush=True)
    print(f"\nembedding engines on the same {len(texts)} chunk texts (all-MiniLM-L6-v2, CPU)\n")
    print(
        _table(
            rows,
            [
                "engine",
                "texts",
                "actors",
                "seconds (incl. start-up)",
                "texts/s",
                "second run: embedded",
                "second run s",
            ],
        )
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "rank":
            out = child_rank(rest[0], int(rest[1]))
        elif kind == "cache":
            out = child_cache(rest[0], int(rest[1]), rest[2])
        else:
            out = child_engine(rest[0], rest[1], rest[2])
        print(json.dumps(out))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["rank", "cache", "ray"])
    ap.add_argument("--sizes", default="100000,400000,1000000", help="corpus sizes for rank_embeddings")
    ap.add_argument(
        "--before",
        default="100000",
        help="sizes at which the old ranking also runs (it needs ~26 bytes x chunks x 1024 of memory)",
    )
    ap.add_argument("--cache-sizes", default="100000,1000000")
    ap.add_argument("--cache-before", default="100000,1000000")
    ap.add_argument("--texts", type=int, default=400, help="texts for the engine comparison")
    a = ap.parse_args()

    def ints(s: str) -> list[int]:
        return [int(x) for x in s.split(",") if x]

    if a.only in (None, "rank"):
        bench_rank(ints(a.sizes), set(ints(a.before)))
    if a.only in (None, "cache"):
        bench_cache(ints(a.cache_sizes), set(ints(a.cache_before)))
    if a.only in (None, "ray"):
        bench_ray(a.texts)


if __name__ == "__main__":
    main()
