"""PDF -> text per page -> chunks with stable ids, stored in the workspace catalog.

One concept per module:

* :mod:`~core.documents.pdf`: :func:`load_pdf` reads one PDF (bytes or a path) into
  :class:`PageText` per page (pypdfium2, pypdf fallback), in a forked child process with memory
  and time limits; every problem is a :class:`PDFError` with a ``kind`` and what to do.
* :mod:`~core.documents.cleanup`: :func:`clean_pages` (whitespace, hyphenation at line ends, NULs,
  page numbers, paragraphs).
* :mod:`~core.documents.chunking`: :func:`chunk_pages` splits pages into :class:`Chunk` objects
  of at most ``chunk_size`` tokens on sentence boundaries, with overlap and deterministic ids.
* :mod:`~core.documents.catalog`: :func:`ingest_files` runs both for a batch of uploads,
  deduplicates by content hash and writes the catalog (``documents``, ``pages``, ``chunks``);
  :func:`rechunk` re-chunks stored pages without parsing the PDFs again; list/get/delete;
  :func:`document_overview` splits the ingested documents from the files that failed.

The public names of all four are importable from ``core.documents``. Nothing here imports
Streamlit.

Example::

    from core.workspace import Workspace
    from core.documents import ChunkSettings, ingest_files, list_documents, tokenizer_counter

    ws = Workspace("./workspace")
    counter = tokenizer_counter(model.tokenizer)            # model: a SentenceTransformer
    reports = ingest_files(ws, [("lyft.pdf", pdf_bytes)], ChunkSettings(),
                           token_counter=counter, max_seq_length=model.max_seq_length)
    for r in reports:
        print(r.filename, r.status, r.chunks, r.error)
"""

from .catalog import (
    DocumentOverview,
    IngestReport,
    clear_failed_documents,
    delete_document,
    document_overview,
    get_chunk,
    get_pages,
    ingest_files,
    list_chunks,
    list_documents,
    rechunk,
    saved_chunk_settings,
)
from .chunking import (
    Chunk,
    ChunkSettings,
    TokenCounter,
    approx_token_count,
    chunk_id,
    chunk_pages,
    split_sentences,
    tokenizer_counter,
)
from .cleanup import clean_pages
from .pdf import (
    DEFAULT_MAX_BYTES,
    HEADER_WINDOW,
    MIN_TEXT_CHARS,
    PARALLEL_MIN_PAGES,
    PDF_MEMORY_LIMIT_MB,
    PDF_TIME_LIMIT_S,
    LoadedPDF,
    PageText,
    PDFError,
    load_pdf,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "HEADER_WINDOW",
    "MIN_TEXT_CHARS",
    "PARALLEL_MIN_PAGES",
    "PDF_MEMORY_LIMIT_MB",
    "PDF_TIME_LIMIT_S",
    "Chunk",
    "ChunkSettings",
    "DocumentOverview",
    "IngestReport",
    "LoadedPDF",
    "PDFError",
    "PageText",
    "TokenCounter",
    "approx_token_count",
    "chunk_id",
    "chunk_pages",
    "clean_pages",
    "clear_failed_documents",
    "delete_document",
    "document_overview",
    "get_chunk",
    "get_pages",
    "ingest_files",
    "list_chunks",
    "list_documents",
    "load_pdf",
    "rechunk",
    "saved_chunk_settings",
    "split_sentences",
    "tokenizer_counter",
]
