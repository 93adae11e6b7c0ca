"""Documents in the workspace catalog (SQLite ``documents``, ``pages``, ``chunks``).

:func:`ingest_files` loads a batch of uploads (:mod:`core.documents.pdf`), deduplicates by content
hash, chunks them (:mod:`core.documents.chunking`) and writes the catalog; :func:`rechunk` re-chunks
the stored pages with new settings without parsing the PDFs again; the rest reads and deletes.

Example::

    reports = ingest_files(ws, [("lyft.pdf", pdf_bytes)], ChunkSettings(),
                           token_counter=counter, max_seq_length=model.max_seq_length)
    for r in reports:
        print(r.filename, r.status, r.chunks, r.error)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hashing import file_sha256
from ..progress import Progress
from ..workspace import Workspace, atomic_write_bytes, safe_display_name
from .chunking import Chunk, ChunkSettings, TokenCounter, _chunk
from .pdf import DEFAULT_MAX_BYTES, PageText, PDFError, _load_bytes, _read_source

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(slots=True)
class IngestReport:
    """The outcome for one file: ``status`` is ``"ok"``, ``"duplicate"`` or ``"error"``."""

    filename: str
    doc_id: str | None
    status: str
    pages: int = 0
    chars: int = 0
    chunks: int = 0
    truncated: int = 0
    error: str | None = None
    error_kind: str | None = None


def saved_chunk_settings(ws: Workspace) -> ChunkSettings:
    """The chunk settings last used in this workspace (as requested, auto values kept auto)."""
    saved = ws.get_setting("chunk_settings") or {}
    try:
        return ChunkSettings(int(saved.get("chunk_size", 0)), int(saved.get("chunk_overlap", -1)))
    except (TypeError, ValueError):
        return ChunkSettings()


def _save_settings(ws: Workspace, settings: ChunkSettings, max_seq_length: int | None) -> ChunkSettings:
    r = settings.resolved(max_seq_length)
    ws.set_setting(
        "chunk_settings",
        {
            "chunk_size": settings.chunk_size,
            "chunk_overlap": settings.chunk_overlap,
            "resolved_chunk_size": r.chunk_size,
            "resolved_chunk_overlap": r.chunk_overlap,
            "max_seq_length": max_seq_length,
        },
    )
    return r


def _record_error(ws: Workspace, doc_id: str, name: str, size: int, message: str) -> None:
    with ws.db() as con:
        row = con.execute("SELECT status FROM documents WHERE id=?", (doc_id,)).fetchone()
        if row is not None and row["status"] == "ok":
            return  # never overwrite a good document with an error about the same bytes
        con.execute(
            "INSERT OR REPLACE INTO documents(id, filename, size_bytes, pages, chars, extractor, "
            "status, error, added_at) VALUES(?, ?, ?, 0, 0, NULL, 'error', ?, ?)",
            (doc_id, name, size, message, time.time()),
        )


def _store_chunks(con, doc_id: str, chunks: list[Chunk]) -> None:
    con.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
    con.executemany(
        "INSERT OR REPLACE INTO chunks(id, doc_id, idx, text, page_start, page_end, n_tokens, truncated) "
        "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
        [(c.id, c.doc_id, c.idx, c.text, c.page_start, c.page_end, c.n_tokens, int(c.truncated)) for c in chunks],
    )


def ingest_files(
    ws: Workspace,
    files: Iterable[tuple[str, bytes | str | os.PathLike]],
    settings: ChunkSettings | None = None,
    token_counter: TokenCounter | None = None,
    max_seq_length: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    memory_limit_mb: float | None = None,
    time_limit_s: float | None = None,
) -> list[IngestReport]:
    """Parse, chunk and store a batch of PDFs; each file succeeds or fails on its own.

    Args:
        ws: the workspace.
        files: ``(uploaded name, bytes or path)`` pairs. Names are display labels only: the
            stored copy is ``documents/<sha256>.pdf``.
        settings: chunk settings; ``None`` reuses the workspace's last settings
            (:func:`saved_chunk_settings`), auto by default. The settings used are saved as
            ``ws.get_setting("chunk_settings")``.
        token_counter, max_seq_length: as for :func:`chunk_pages`.
        max_bytes: the size limit per file.
        progress: called as ``progress(done, total, message)`` before and after each file.
        cancel: when set, files not yet started are skipped (no report for them); the file
            in progress is finished first.
        memory_limit_mb, time_limit_s: limits of parsing one file (see :func:`load_pdf`); a
            file over them fails alone with ``error_kind="over_limit"``.

    Returns:
        one :class:`IngestReport` per processed file, in order. A file whose bytes are already
        stored with status ok (or repeated in the same batch) is ``"duplicate"`` and nothing is
        redone. A bad file gives ``"error"`` with ``error``/``error_kind`` (a :class:`PDFError`
        kind, or ``"internal"`` for an unexpected failure) and is also recorded in
        ``documents`` with status ``'error'`` under its sha256, so the UI can list it.

    Example::

        reports = ingest_files(ws, [("lyft.pdf", Path("lyft.pdf")), ("uber.pdf", uber_bytes)],
                               token_counter=tokenizer_counter(model), max_seq_length=256)
        bad = [r for r in reports if r.status == "error"]
    """
    files = list(files)
    total = len(files)
    if settings is None:
        settings = saved_chunk_settings(ws)
    _save_settings(ws, settings, max_seq_length)  # validates before any file is touched
    cache: dict[str, int] = {}
    reports: list[IngestReport] = []
    seen: set[str] = set()

    for i, (upload_name, source) in enumerate(files):
        if cancel is not None and cancel.is_set():
            break
        name = safe_display_name(upload_name)
        if progress:
            progress(i, total, f"Reading {name}")
        report = _ingest_one(
            ws,
            name,
            source,
            settings,
            token_counter,
            max_seq_length,
            max_bytes,
            cache,
            seen,
            (memory_limit_mb, time_limit_s),
        )
        reports.append(report)
        if progress:
            what = {
                "ok": f"{name}: {report.pages} pages, {report.chunks} chunks",
                "duplicate": f"{name}: already in the workspace",
                "error": f"{name}: {report.error}",
            }[report.status]
            progress(i + 1, total, what)
    return reports


def _ingest_one(
    ws: Workspace,
    name: str,
    source,
    settings: ChunkSettings,
    token_counter,
    max_seq_length,
    max_bytes: int,
    cache: dict[str, int],
    seen: set[str],
    limits: tuple[float | None, float | None] = (None, None),
) -> IngestReport:
    doc_id: str | None = None
    size = 0
    try:
        try:
            data = _read_source(source, name, max_bytes)
        except PDFError as exc:
            if exc.kind == "too_large":  # record it under its hash without keeping the bytes
                if isinstance(source, (bytes, bytearray, memoryview)):
                    doc_id, size = hashlib.sha256(source).hexdigest(), len(source)
                else:
                    doc_id, size = file_sha256(source), Path(source).stat().st_size
            raise
        size = len(data)
        doc_id = hashlib.sha256(data).hexdigest()

        existing = ws.query("SELECT status, pages, chars FROM documents WHERE id=?", (doc_id,))
        if doc_id in seen or (existing and existing[0]["status"] == "ok"):
            counts = ws.query(
                "SELECT COUNT(*) AS n, COALESCE(SUM(truncated), 0) AS t FROM chunks WHERE doc_id=?", (doc_id,)
            )[0]
            row = existing[0] if existing else {"pages": 0, "chars": 0}
            return IngestReport(name, doc_id, "duplicate", row["pages"], row["chars"], counts["n"], counts["t"])

        doc = _load_bytes(data, name, *limits)
        twin = _same_text_document(ws, doc)
        if twin is not None:  # a re-saved copy: other bytes, the same text (its chunks would all be counted twice)
            counts = ws.query(
                "SELECT COUNT(*) AS n, COALESCE(SUM(truncated), 0) AS t FROM chunks WHERE doc_id=?", (twin["id"],)
            )[0]
            return IngestReport(
                name,
                twin["id"],
                "duplicate",
                twin["pages"],
                twin["chars"],
                counts["n"],
                counts["t"],
                error=f"the same text as {twin['filename']}, already ingested: not added again",
            )
        chunks = _chunk(doc.pages, doc.doc_id, settings, token_counter, max_seq_length, cache)
        atomic_write_bytes(ws.path("documents", f"{doc.doc_id}.pdf"), data)
        with ws.db() as con:
            con.execute(
                "INSERT OR REPLACE INTO documents(id, filename, size_bytes, pages, chars, extractor, "
                "status, error, added_at) VALUES(?, ?, ?, ?, ?, ?, 'ok', NULL, ?)",
                (doc.doc_id, doc.filename, doc.size_bytes, len(doc.pages), doc.chars, doc.extractor, time.time()),
            )
            # a fixed file of the same name replaces its failed attempt: "Files with errors" no longer lists it
            con.execute("DELETE FROM documents WHERE status <> 'ok' AND filename=?", (name,))
            con.execute("DELETE FROM pages WHERE doc_id=?", (doc.doc_id,))
            con.executemany(
                "INSERT INTO pages(doc_id, page, text) VALUES(?, ?, ?)",
                [(doc.doc_id, p.page, p.text) for p in doc.pages],
            )
            _store_chunks(con, doc.doc_id, chunks)
        seen.add(doc.doc_id)
        return IngestReport(
            name, doc.doc_id, "ok", len(doc.pages), doc.chars, len(chunks), sum(c.truncated for c in chunks)
        )
    except PDFError as exc:
        if doc_id is None:  # only for a missing path: nothing to key the record by
            return IngestReport(name, None, "error", error=str(exc), error_kind=exc.kind)
        _record_error(ws, doc_id, name, size, str(exc))
        return IngestReport(name, doc_id, "error", error=str(exc), error_kind=exc.kind)
    except FileNotFoundError as exc:
        return IngestReport(name, None, "error", error=f"{name}: {exc}", error_kind="not_found")
    except Exception as exc:  # a bug or an I/O failure must not sink the rest of the batch
        log.exception("ingesting %s failed", name)
        message = f"{name} could not be ingested ({type(exc).__name__}: {exc}); please report this."
        if doc_id is not None:
            try:
                _record_error(ws, doc_id, name, size, message)
            except Exception:
                log.exception("could not record the error for %s", name)
        return IngestReport(name, doc_id, "error", error=message, error_kind="internal")


def _same_text_document(ws: Workspace, doc) -> dict[str, Any] | None:
    """An ingested document whose pages hold ``doc``'s text (a copy saved again, so other bytes; or rendered
    again, so lines break elsewhere), if any: the same words page by page, whitespace aside. Only documents of
    the same page count are read."""

    def words(text: str) -> str:
        return " ".join(text.split())

    mine = [words(p.text) for p in doc.pages]
    for row in ws.query(
        "SELECT id, filename, pages, chars FROM documents WHERE status='ok' AND pages=? AND id<>?",
        (len(doc.pages), doc.doc_id),
    ):
        texts = ws.query("SELECT text FROM pages WHERE doc_id=? ORDER BY page", (row["id"],))
        if [words(r["text"]) for r in texts] == mine:
            return row
    return None


def rechunk(
    ws: Workspace,
    settings: ChunkSettings,
    token_counter: TokenCounter | None = None,
    max_seq_length: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Re-chunk every ok document from its stored pages (the PDFs are not parsed again).

    Each document's chunks are replaced in one transaction. Chunk ids are deterministic, so
    unchanged chunks keep their ids; changed chunks get new ids, and questions that pointed at
    old ids no longer match a chunk. Saves ``settings`` as the workspace's chunk settings.

    Returns:
        the total number of chunks now stored.

    Example::

        n = rechunk(ws, ChunkSettings(chunk_size=128, chunk_overlap=16), tokenizer_counter(model), 256)
    """
    _save_settings(ws, settings, max_seq_length)
    docs = ws.query("SELECT id, filename FROM documents WHERE status='ok' ORDER BY added_at, id")
    cache: dict[str, int] = {}
    total = 0
    for i, d in enumerate(docs):
        rows = ws.query("SELECT page, text FROM pages WHERE doc_id=? ORDER BY page", (d["id"],))
        pages = [PageText(r["page"], r["text"]) for r in rows]
        chunks = _chunk(pages, d["id"], settings, token_counter, max_seq_length, cache)
        with ws.db() as con:
            _store_chunks(con, d["id"], chunks)
        total += len(chunks)
        if progress:
            progress(i + 1, len(docs), f"{d['filename']}: {len(chunks)} chunks")
    return total


# =============================================================================================
# Read helpers
# =============================================================================================
def list_documents(ws: Workspace) -> list[dict]:
    """All documents (ok and error), oldest first, with ``n_chunks`` and ``n_truncated``."""
    return ws.query(
        "SELECT d.*, COUNT(c.id) AS n_chunks, COALESCE(SUM(c.truncated), 0) AS n_truncated "
        "FROM documents d LEFT JOIN chunks c ON c.doc_id = d.id "
        "GROUP BY d.id ORDER BY d.added_at, d.id"
    )


@dataclass(slots=True)
class DocumentOverview:
    """The catalog's documents split the way the Documents page shows them, with totals taken from
    these very lists, so that a count and the list beside it cannot disagree.

    ``documents`` are the ingested ones (status ok, oldest first, with ``n_chunks`` and
    ``n_truncated``): the only ones with chunks. ``failed`` are the files whose ingest failed
    (status error): nothing of them is stored but the record, whose ``error`` names the file, says
    why and what to do. They stay listed until removed (:func:`clear_failed_documents`).
    """

    documents: list[dict]
    failed: list[dict]

    @property
    def chunks(self) -> int:
        return sum(int(d["n_chunks"] or 0) for d in self.documents)

    @property
    def truncated(self) -> int:
        return sum(int(d["n_truncated"] or 0) for d in self.documents)


def document_overview(ws: Workspace) -> DocumentOverview:
    """:func:`list_documents`, split into the ingested documents and the files that failed."""
    docs = list_documents(ws)
    return DocumentOverview([d for d in docs if d["status"] == "ok"], [d for d in docs if d["status"] != "ok"])


def clear_failed_documents(ws: Workspace) -> int:
    """Forget the records of files that failed to ingest; returns how many. Only records whose
    status is not ok at the moment of the delete go (one transaction), so a document ingested in
    the meantime, even from the same bytes, is kept with its pages and chunks."""
    with ws.db() as con:
        return con.execute("DELETE FROM documents WHERE status <> 'ok'").rowcount


def list_chunks(
    ws: Workspace, doc_id: str | None = None, search: str | None = None, limit: int | None = None
) -> list[dict]:
    """Chunks in document order, with their document's ``filename``.

    Args:
        doc_id: only this document's chunks.
        search: only chunks whose text contains this (case-insensitive for ASCII).
        limit: at most this many rows.
    """
    sql = "SELECT c.*, d.filename FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE 1=1"
    params: list = []
    if doc_id is not None:
        sql += " AND c.doc_id = ?"
        params.append(doc_id)
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        sql += " AND c.text LIKE ? ESCAPE '\\'"
        params.append(f"%{escaped}%")
    sql += " ORDER BY d.added_at, c.doc_id, c.idx"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return ws.query(sql, tuple(params))


def get_chunk(ws: Workspace, chunk_id: str) -> dict | None:
    """One chunk with its ``filename``, or ``None``."""
    rows = ws.query(
        "SELECT c.*, d.filename FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id = ?",
        (chunk_id,),
    )
    return rows[0] if rows else None


def get_pages(ws: Workspace, doc_id: str) -> list[PageText]:
    """The stored cleaned pages of one document."""
    rows = ws.query("SELECT page, text FROM pages WHERE doc_id=? ORDER BY page", (doc_id,))
    return [PageText(r["page"], r["text"]) for r in rows]


def delete_document(ws: Workspace, doc_id: str) -> int:
    """Remove a document, its pages, its chunks and its stored PDF; returns chunks removed.

    Questions that point at the removed chunks are left for the caller to handle.
    """
    if not _SHA256.match(doc_id or ""):
        raise ValueError(f"not a document id (sha256 hex): {doc_id!r}")
    with ws.db() as con:
        n = con.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,)).rowcount
        con.execute("DELETE FROM pages WHERE doc_id=?", (doc_id,))
        con.execute("DELETE FROM documents WHERE id=?", (doc_id,))
    try:
        ws.path("documents", f"{doc_id}.pdf").unlink()
    except FileNotFoundError:
        pass
    return n
