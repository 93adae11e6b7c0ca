"""The embedding cache's SQLite index + float32 shards: bulk reads/writes, shards, migration, crashes."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

import core.vectorstore as vs
from core.embedders import CachedEmbedder, EmbeddingCache, text_key


def _keys(n, prefix="t"):
    return [hashlib.sha256(f"{prefix}{i}".encode()).digest() for i in range(n)]


def test_matrix_round_trip_with_duplicates_and_missing(tmp_path):
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    keys = _keys(50)
    vecs = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    assert cache.get_matrix("m", keys)[0] is None and cache.dimension("m") is None
    cache.put_matrix("m", keys[:40], vecs[:40])
    ask = [keys[3], keys[45], keys[3], keys[0]]
    mat, have = cache.get_matrix("m", ask)
    assert have.tolist() == [True, False, True, True]
    assert np.array_equal(mat[[0, 2, 3]], vecs[[3, 3, 0]]) and not mat[1].any()
    assert cache.dimension("m") == 8 and cache.count("m") == 40 and cache.count("other") == 0
    # a replaced key reads its new vector; the dictionary interface agrees with the matrix one
    cache.put_many("m", [(keys[3], np.ones(8, np.float32))])
    got = cache.get_many("m", [keys[3], keys[45]])
    assert list(got) == [keys[3]] and np.array_equal(got[keys[3]], np.ones(8)) and cache.count("m") == 40
    # many keys go through the join path; same answers
    many = keys * 60
    mat2, have2 = cache.get_matrix("m", many)
    assert have2.sum() == 40 * 60 and np.array_equal(mat2[45], np.zeros(8)) and np.array_equal(mat2[0], vecs[0])


def test_one_identity_one_dimension(tmp_path):
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    cache.put_matrix("m", _keys(2), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="4-d vectors"):
        cache.put_matrix("m", _keys(1, "x"), np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="one row per key"):
        cache.put_matrix("m", _keys(3), np.zeros((2, 4), np.float32))


def test_shards_roll_over_and_stay_readable(tmp_path, monkeypatch):
    monkeypatch.setattr(vs, "SHARD_BYTES", 10 * 4 * 4)  # 10 rows of 4-d per shard
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    keys = _keys(35)
    vecs = np.arange(35 * 4, dtype=np.float32).reshape(35, 4)
    cache.put_matrix("m", keys[:7], vecs[:7])
    cache.put_matrix("m", keys[7:], vecs[7:])
    assert len(list((tmp_path / "emb.vectors").iterdir())) == 4
    mat, have = EmbeddingCache(tmp_path / "emb.sqlite").get_matrix("m", keys[::-1])
    assert have.all() and np.array_equal(mat, vecs[::-1])


def test_bytes_a_crashed_writer_left_are_overwritten(tmp_path):
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    keys = _keys(4)
    cache.put_matrix("m", keys[:2], np.ones((2, 3), np.float32))
    (shard,) = (tmp_path / "emb.vectors").iterdir()
    with open(shard, "ab") as f:  # appended but never committed
        f.write(np.full((5, 3), 7, np.float32).tobytes())
    cache.put_matrix("m", keys[2:], np.full((2, 3), 2, np.float32))
    assert shard.stat().st_size == 4 * 3 * 4
    mat, have = cache.get_matrix("m", keys)
    assert have.all() and mat[:2].tolist() == [[1] * 3] * 2 and mat[2:].tolist() == [[2] * 3] * 2


def test_a_cache_written_by_the_first_release_is_migrated(tmp_path):
    path = tmp_path / "embeddings.sqlite"
    con = sqlite3.connect(path)  # the first release's schema, written as it wrote it
    con.execute(
        "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, key BLOB NOT NULL, "
        "dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model, key)) WITHOUT ROWID"
    )
    rng = np.random.default_rng(1)
    texts = [f"passage {i}" for i in range(30)]
    old = {t: rng.normal(size=6).astype(np.float32) for t in texts}
    con.executemany(
        "INSERT INTO vectors(model, key, dim, vec) VALUES (?, ?, ?, ?)",
        [("old-model", text_key("p:", t), 6, v.tobytes()) for t, v in old.items()]
        + [("api-model", text_key("p:", "q"), 3, np.ones(3, np.float32).tobytes())],
    )
    con.commit()
    con.close()

    class Never:
        identity, dimension = "old-model", 6

        def embed_texts(self, texts, progress=None):
            raise AssertionError(f"re-embedded {texts}")

    cache = EmbeddingCache(path)
    out = CachedEmbedder(Never(), cache).embed_texts(texts[::-1])
    assert np.array_equal(out, np.stack([old[t] for t in texts[::-1]]))
    assert cache.count() == 31 and cache.count("api-model") == 1 and cache.dimension("api-model") == 3
    con = sqlite3.connect(path)
    assert not con.execute("SELECT 1 FROM sqlite_master WHERE name='vectors'").fetchone()
    con.close()
    assert EmbeddingCache(path).count() == 31  # opening again changes nothing


def test_two_processes_fill_one_cache(tmp_path):
    path = tmp_path / "emb.sqlite"
    EmbeddingCache(path)
    code = (
        "import sys, hashlib, numpy as np\n"
        "from core.vectorstore import EmbeddingCache\n"
        "c = EmbeddingCache(sys.argv[1]); w = int(sys.argv[2])\n"
        "for b in range(20):\n"
        "    keys = [hashlib.sha256(f'{w}-{b}-{i}'.encode()).digest() for i in range(25)]\n"
        "    c.put_matrix('m', keys, np.full((25, 4), w * 1000 + b, np.float32))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(w)]) for w in (1, 2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    cache = EmbeddingCache(path)
    assert cache.count("m") == 2 * 20 * 25
    for w in (1, 2):
        for b in (0, 19):
            keys = [hashlib.sha256(f"{w}-{b}-{i}".encode()).digest() for i in range(25)]
            mat, have = cache.get_matrix("m", keys)
            assert have.all() and (mat == w * 1000 + b).all()
