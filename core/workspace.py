"""Where everything lives on disk: an SQLite catalog plus plain files.

Layout of a workspace directory::

    catalog.sqlite          documents, chunks, questions, datasets, runs, evaluations, jobs, settings
    embeddings.sqlite       the embedding cache index (see ``core.vectorstore.EmbeddingCache``)
    embeddings.vectors/     its float32 vector shards, memory-mapped on read
    documents/<sha256>.pdf  stored copies of ingested PDFs, named by content hash
    datasets/<id>.json      LlamaIndex ``EmbeddingQAFinetuneDataset`` files
    runs/<run_id>/          one training run: config, history, checkpoints, best adapter
    evaluations/<id>.json   saved comparisons

Every file write goes through :func:`atomic_write_bytes` (temp file + ``os.replace``), and
the catalog runs in WAL mode with a busy timeout, so two processes sharing one workspace
never see a half-written file or corrupt the database. User-supplied names are never used
as paths: files are named by content hash or generated id.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ENV_VAR = "ADAPTERLAB_WORKSPACE"
DEFAULT_DIR = "workspace"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,            -- sha256 of the file bytes
    filename TEXT NOT NULL,         -- display name only, never a path
    size_bytes INTEGER NOT NULL,
    pages INTEGER NOT NULL DEFAULT 0,
    chars INTEGER NOT NULL DEFAULT 0,
    extractor TEXT,
    status TEXT NOT NULL,           -- ok | error
    error TEXT,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pages (
    doc_id TEXT NOT NULL,
    page INTEGER NOT NULL,          -- 1-based page number
    text TEXT NOT NULL,
    PRIMARY KEY (doc_id, page)
);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    page_start INTEGER NOT NULL,
    page_end INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, idx);
CREATE TABLE IF NOT EXISTS questions (
    id TEXT PRIMARY KEY,
    chunk_id TEXT NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,           -- llm | offline | import | manual
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS questions_chunk ON questions(chunk_id);
CREATE TABLE IF NOT EXISTS generation_done (
    gen_key TEXT NOT NULL,          -- hash of generator settings
    chunk_id TEXT NOT NULL,
    n_questions INTEGER NOT NULL,
    done_at REAL NOT NULL,
    PRIMARY KEY (gen_key, chunk_id)
);
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    path TEXT NOT NULL,             -- relative to the workspace root
    role TEXT,                      -- train | val | eval | import | NULL
    n_queries INTEGER NOT NULL,
    n_corpus INTEGER NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,           -- queued | running | done | failed | cancelled | interrupted
    config TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,             -- ingest | generate | train | evaluate | ...
    title TEXT NOT NULL,
    status TEXT NOT NULL,           -- running | done | failed | cancelled | interrupted
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT,
    owner TEXT NOT NULL,            -- "<pid>:<boot token>" of the process running it
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


def resolve_workspace_dir(path: str | os.PathLike | None = None) -> Path:
    """The workspace directory: ``path`` if given, else ``$ADAPTERLAB_WORKSPACE``, else ``./workspace``."""
    chosen = path or os.environ.get(ENV_VAR) or DEFAULT_DIR
    return Path(chosen).expanduser().resolve()


def _process_umask() -> int:
    """This process's umask, read without changing it where the system says it (Linux), else set and restored."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as fh:
            return int(next(line for line in fh if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half. The file gets the
    mode an ordinary write would give it (the old file's, else 0666 less the umask), not the temporary file's
    private 0600: a report or a dataset written for others stays readable by them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with contextlib.suppress(OSError):  # a file system without modes keeps its own
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def replace_folder(folder: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """``write(path)`` a whole folder into a staging place beside ``folder``, then put it where ``folder`` is,
    replacing what was there as a whole: no file of the old folder stays beside the new ones, and a failed
    ``write`` leaves the old folder as it was. The folder gets the mode a plain ``mkdir`` would give it."""
    out = Path(folder)
    if out.exists() and not out.is_dir():  # a file is never replaced by a folder
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".new", dir=out.parent))
    try:
        write(staging / "new")
        if out.exists():
            out.rename(staging / "old")  # removed with the staging folder
        (staging / "new").rename(out)
        umask = os.umask(0)
        os.umask(umask)
        out.chmod(0o777 & ~umask)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False))


def new_id(prefix: str = "") -> str:
    """A short, sortable, unique id: ``<prefix><yyyymmdd-hhmmss>-<6 hex>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{prefix}{stamp}-{uuid.uuid4().hex[:6]}"


_SAFE = re.compile(r"[^\w.-]+")  # \w: letters and digits of every script, and "_"


def safe_display_name(name: str, max_len: int = 120) -> str:
    """A file name reduced to a harmless display label (never used as a path).

    Letters and digits of any script stay (``résumé_文件.pdf`` is kept as is, NFC-normalized);
    directories, spaces, controls, bidi overrides and other symbols become ``_``.
    """
    base = os.path.basename(unicodedata.normalize("NFC", str(name)).replace("\\", "/")) or "unnamed"
    return _SAFE.sub("_", base)[:max_len]


class WorkspaceError(ValueError):
    """The workspace cannot be opened (a damaged catalog): the message says which file and what to do."""


class Workspace:
    """An AdapterLab workspace: an SQLite catalog plus the files it points to.

    Example::

        ws = Workspace("./workspace")          # created if missing
        with ws.db() as con:
            n = con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    Connections are opened per call (``ws.db()``), so a ``Workspace`` can be shared between
    threads; SQLite's WAL mode and a 30 s busy timeout make concurrent processes safe.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = resolve_workspace_dir(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("documents", "datasets", "runs", "evaluations", "exports"):
            (self.root / sub).mkdir(exist_ok=True)
        con = sqlite3.connect(self.catalog_path, timeout=30.0)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)  # idempotent; executescript commits by itself
        except sqlite3.DatabaseError as exc:  # not "locked" (OperationalError waits 30 s): a damaged or foreign file
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise WorkspaceError(
                f"the workspace catalog {self.catalog_path} cannot be read ({exc}). Restore it from a backup, or "
                "use another workspace folder (--workspace or ADAPTERLAB_WORKSPACE); the files beside it are untouched"
            ) from None
        finally:
            con.close()

    # -- paths ---------------------------------------------------------------------------
    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.sqlite"

    @property
    def embeddings_path(self) -> Path:
        return self.root / "embeddings.sqlite"

    def path(self, *parts: str) -> Path:
        """A path inside the workspace; refuses anything that would escape it."""
        p = (self.root.joinpath(*parts)).resolve()
        if self.root not in p.parents and p != self.root:
            raise ValueError(f"path {p} escapes the workspace {self.root}")
        return p

    def run_dir(self, run_id: str) -> Path:
        return self.path("runs", run_id)

    # -- database ------------------------------------------------------------------------
    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction: committed on success, rolled back on error."""
        con = sqlite3.connect(self.catalog_path, timeout=30.0, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("BEGIN IMMEDIATE")  # take the write lock up front: read-then-write never fails mid-way
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            else:
                con.execute("COMMIT")
        finally:
            con.close()

    def query(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        with self.db() as con:
            return [dict(r) for r in con.execute(sql, params).fetchall()]

    # -- settings ------------------------------------------------------------------------
    def get_setting(self, key: str, default: Any = None) -> Any:
        rows = self.query("SELECT value FROM settings WHERE key=?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def set_setting(self, key: str, value: Any) -> None:
        with self.db() as con:
            con.execute(
                "INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    def counts(self) -> dict[str, int]:
        """Counts of documents (ok / error), chunks, questions (and chunks that have some),
        datasets, runs and saved comparisons: the dashboard's status numbers, in one query."""
        row = self.query(
            "SELECT "
            "(SELECT COUNT(*) FROM documents WHERE status='ok') AS documents, "
            "(SELECT COUNT(*) FROM documents WHERE status!='ok') AS bad_documents, "
            "(SELECT COUNT(*) FROM chunks) AS chunks, "
            "(SELECT COUNT(*) FROM questions) AS questions, "
            "(SELECT COUNT(DISTINCT q.chunk_id) FROM questions q JOIN chunks c ON c.id = q.chunk_id) AS chunks_with_questions, "
            "(SELECT COUNT(*) FROM datasets) AS datasets, "
            "(SELECT COUNT(*) FROM runs) AS runs, "
            "(SELECT COUNT(*) FROM evaluations) AS evaluations"
        )[0]
        return {k: int(v or 0) for k, v in row.items()}

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"
