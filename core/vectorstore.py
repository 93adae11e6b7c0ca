"""The persistent embedding cache: an SQLite index plus contiguous float32 shards.

Vectors are keyed by (embedder cache identity, role + sha256 of the text; see
:func:`core.embedders.text_key`): the cache identity names the model and what changes its vectors
but the prefixes, which the role holds (see :attr:`core.embedders.CachedEmbedder.cache_identity`). The first release stored one SQLite row per vector; at a
million chunks that costs per-row overhead on every insert and one Python object per vector on
every read (measured in ``bench/scale.py``, tables in ``bench/README.md``). Here:

* ``embeddings.sqlite`` (the same file) holds the index: ``(model, key) -> (shard, row)`` and the
  shards: ``(id, model, dim, rows, file)``.
* ``embeddings.vectors/`` beside it holds the shards: raw little-endian float32 files of
  ``rows x dim``, appended to and memory-mapped on read (``np.memmap``: nothing is ever
  unpickled). A shard is closed at :data:`SHARD_BYTES` and a new one started.

Raw float32 shards were chosen over Arrow/Lance because the access pattern is "append a block,
gather rows by position", which a memory-mapped numpy array does with no dependency and no
decoding; the index stays in SQLite, which the workspace already uses for everything else.

Writers take SQLite's write lock (``BEGIN IMMEDIATE``) before appending, so several threads or
processes can fill one cache. A shard's committed length is its ``rows`` column, not the file's
size: bytes a crashed writer appended without committing are overwritten by the next writer.

A cache written by the first release (table ``vectors``, one row per vector) is migrated into
shards the first time it is opened, in batches, and the old table dropped.

Example::

    cache = EmbeddingCache(ws.embeddings_path)
    cache.put_matrix("model-id", keys, vectors)             # (n, dim) float32
    mat, have = cache.get_matrix("model-id", keys)          # rows in the order of keys
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SHARD_BYTES = 1 << 30  # a shard is closed once it holds this many bytes
_MIGRATE_BATCH = 20_000


class EmbeddingCache:
    """Vectors by (embedder identity, role + text hash): SQLite index, float32 shards on disk.

    ``get_matrix``/``put_matrix`` move whole matrices; ``get_many``/``put_many`` keep the
    dictionary interface of the first release. Safe for several threads and processes.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.shard_dir = Path(self.path).with_suffix(".vectors")
        self._maps: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()
        with closing(self._connect()) as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS shards (id INTEGER PRIMARY KEY, model TEXT NOT NULL, "
                "dim INTEGER NOT NULL, rows INTEGER NOT NULL, file TEXT NOT NULL)"
            )
            con.execute(
                "CREATE TABLE IF NOT EXISTS vector_index (model TEXT NOT NULL, key BLOB NOT NULL, "
                "shard INTEGER NOT NULL, row INTEGER NOT NULL, PRIMARY KEY (model, key)) WITHOUT ROWID"
            )
            legacy = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='vectors'").fetchone()
        if legacy:
            self._migrate_legacy()

    # -- connections ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    # -- reading -------------------------------------------------------------------------------
    def dimension(self, model: str) -> int | None:
        """The dimension of ``model``'s stored vectors, or None when none are stored."""
        con = self._connect()
        try:
            row = con.execute("SELECT dim FROM shards WHERE model=? LIMIT 1", (model,)).fetchone()
        finally:
            con.close()
        return int(row[0]) if row else None

    def _shard_array(self, shard: int, dim: int, rows: int, file: str) -> np.ndarray:
        """A read-only memory map of a shard's first ``rows`` committed rows (re-mapped when it grew)."""
        with self._lock:
            cached = self._maps.get((shard, dim))
            if cached is not None and cached.shape[0] >= rows:
                return cached
            arr = np.memmap(self.shard_dir / file, dtype="<f4", mode="r", shape=(rows, dim))
            self._maps[(shard, dim)] = arr
            return arr

    def _locate(
        self, con: sqlite3.Connection, model: str, keys: Sequence[bytes]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each key: position in ``keys``, shard id, row (only the keys that are stored)."""
        pos_of: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            pos_of.setdefault(bytes(k), []).append(i)
        pos, shard, row = [], [], []
        uniq = list(pos_of)
        if len(uniq) <= 2000:
            for start in range(0, len(uniq), 500):
                part = uniq[start : start + 500]
                marks = ",".join("?" * len(part))
                for k, s, r in con.execute(
                    f"SELECT key, shard, row FROM vector_index WHERE model=? AND key IN ({marks})", (model, *part)
                ):
                    for p in pos_of[bytes(k)]:
                        pos.append(p), shard.append(s), row.append(r)
        else:  # many keys: one join against a temporary table instead of thousands of IN lists
            con.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (key BLOB PRIMARY KEY) WITHOUT ROWID")
            con.execute("DELETE FROM wanted")
            con.executemany("INSERT OR IGNORE INTO wanted(key) VALUES (?)", ((k,) for k in uniq))
            for k, s, r in con.execute(
                "SELECT w.key, v.shard, v.row FROM wanted w JOIN vector_index v ON v.model=? AND v.key=w.key", (model,)
            ):
                for p in pos_of[bytes(k)]:
                    pos.append(p), shard.append(s), row.append(r)
            con.execute("DELETE FROM wanted")
        return np.asarray(pos, dtype=np.int64), np.asarray(shard, dtype=np.int64), np.asarray(row, dtype=np.int64)

    def get_matrix(
        self, model: str, keys: Sequence[bytes], dim: int | None = None
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """``(matrix, have)``: row i holds the vector of ``keys[i]`` when ``have[i]``, zeros otherwise.

        The matrix is a fresh float32 array of ``(len(keys), dim)``; ``dim`` defaults to the stored
        one, and the matrix is None when nothing is stored for ``model`` and ``dim`` is not given.
        """
        have = np.zeros(len(keys), dtype=bool)
        con = self._connect()
        try:
            con.execute("BEGIN")  # one snapshot for the index and the shard lengths
            shards = {
                s: (d, r, f)
                for s, d, r, f in con.execute("SELECT id, dim, rows, file FROM shards WHERE model=?", (model,))
            }
            if shards:
                pos, shard, row = self._locate(con, model, keys)
            con.execute("COMMIT")
        finally:
            con.close()
        if not shards:
            return (None if dim is None else np.zeros((len(keys), dim), dtype=np.float32)), have
        dims = {d for d, _, _ in shards.values()}
        stored = dims.pop() if len(dims) == 1 else None
        if stored is None:
            raise ValueError(
                f"the cache holds vectors of several dimensions for {model!r}: delete {self.shard_dir} to rebuild it"
            )
        if dim is not None and dim != stored:
            raise ValueError(f"asked for {dim}-d vectors but the cache holds {stored}-d ones for {model!r}")
        out = np.zeros((len(keys), stored), dtype=np.float32)
        for s in np.unique(shard):
            sel = shard == s
            d, r, f = shards[int(s)]
            out[pos[sel]] = self._shard_array(int(s), d, r, f)[row[sel]]
        have[pos] = True
        return out, have

    def get_many(self, model: str, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        """The stored vectors of ``keys`` as a dict (missing keys absent)."""
        mat, have = self.get_matrix(model, keys)
        if mat is None:
            return {}
        return {bytes(k): mat[i] for i, k in enumerate(keys) if have[i]}

    def count(self, model: str | None = None) -> int:
        with closing(self._connect()) as con:
            if model is None:
                return con.execute("SELECT COUNT(*) FROM vector_index").fetchone()[0]
            return con.execute("SELECT COUNT(*) FROM vector_index WHERE model=?", (model,)).fetchone()[0]

    def models(self) -> list[str]:
        with closing(self._connect()) as con:
            return [r[0] for r in con.execute("SELECT DISTINCT model FROM shards ORDER BY model")]

    # -- writing -------------------------------------------------------------------------------
    def put_matrix(self, model: str, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` under ``keys[i]`` (replacing what a key held): one append, one transaction."""
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        if vecs.ndim != 2 or vecs.shape[0] != len(keys):
            raise ValueError(f"put_matrix needs one row per key: {len(keys)} keys, vectors of shape {vecs.shape}")
        if not len(keys):
            return
        dim = int(vecs.shape[1])
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")  # the write lock: one appender per cache at a time
            try:
                self._append(con, model, [bytes(k) for k in keys], vecs, dim)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()

    def _append(self, con: sqlite3.Connection, model: str, keys: list[bytes], vecs: np.ndarray, dim: int) -> None:
        other = con.execute("SELECT dim FROM shards WHERE model=? AND dim<>? LIMIT 1", (model, dim)).fetchone()
        if other:
            raise ValueError(
                f"the cache holds {other[0]}-d vectors for {model!r}, not {dim}-d: one identity, one dimension"
            )
        done = 0
        while done < len(keys):
            cur = con.execute(
                "SELECT id, rows, file FROM shards WHERE model=? AND dim=? ORDER BY id DESC LIMIT 1", (model, dim)
            ).fetchone()
            cap = max(1, SHARD_BYTES // (dim * 4))
            if cur is None or cur[1] >= cap:
                tag = hashlib.sha256(model.encode("utf-8")).hexdigest()[:12]
                sid = con.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM shards").fetchone()[0]
                cur = (sid, 0, f"{tag}-{sid:05d}.f32")
                con.execute(
                    "INSERT INTO shards(id, model, dim, rows, file) VALUES (?, ?, ?, 0, ?)", (sid, model, dim, cur[2])
                )
            sid, rows, file = cur
            take = min(len(keys) - done, cap - rows)
            block = vecs[done : done + take]
            fd = os.open(self.shard_dir / file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.ftruncate(fd, rows * dim * 4)  # drop bytes a crashed writer left past the committed rows
                os.pwrite(fd, block.tobytes(), rows * dim * 4)
                os.fsync(fd)
            finally:
                os.close(fd)
            con.executemany(
                "INSERT OR REPLACE INTO vector_index(model, key, shard, row) VALUES (?, ?, ?, ?)",
                ((model, k, sid, rows + i) for i, k in enumerate(keys[done : done + take])),
            )
            con.execute("UPDATE shards SET rows=? WHERE id=?", (rows + take, sid))
            done += take

    def put_many(self, model: str, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        items = list(items)
        if not items:
            return
        self.put_matrix(model, [k for k, _ in items], np.stack([np.asarray(v, dtype=np.float32) for _, v in items]))

    # -- the first release's table -------------------------------------------------------------
    def _migrate_legacy(self) -> None:
        """Move the first release's one-row-per-vector table into shards, then drop it."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                if not con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='vectors'").fetchone():
                    con.execute("COMMIT")  # another process migrated it meanwhile
                    return
                total = con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
                if total:
                    log.info("migrating %d cached vectors from the first release's table into shards", total)
                    self.shard_dir.mkdir(parents=True, exist_ok=True)
                models = [r[0] for r in con.execute("SELECT DISTINCT model FROM vectors")]
                for model in models:
                    dims = con.execute(
                        "SELECT dim, COUNT(*) FROM vectors WHERE model=? GROUP BY dim ORDER BY COUNT(*) DESC", (model,)
                    ).fetchall()
                    dim = int(dims[0][0])
                    if len(dims) > 1:  # one identity, one dimension: keep the majority, they are re-embedded if needed
                        log.warning(
                            "cache: %s held vectors of dimensions %s; kept the %d-d ones",
                            model,
                            [d for d, _ in dims],
                            dim,
                        )
                    cur = con.execute("SELECT key, vec FROM vectors WHERE model=? AND dim=?", (model, dim))
                    while batch := cur.fetchmany(_MIGRATE_BATCH):
                        keys = [bytes(k) for k, _ in batch]
                        vecs = np.frombuffer(b"".join(bytes(v[: dim * 4]) for _, v in batch), dtype="<f4").reshape(
                            -1, dim
                        )
                        self._append(con, model, keys, vecs, dim)
                con.execute("DROP TABLE vectors")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()
