"""PDF -> text per page -> chunks with stable ids, stored in the workspace catalog.

The flow is three plain functions, each usable alone:

* :func:`load_pdf` reads one PDF (bytes or a path) into :class:`PageText` per page, with
  clean-up (whitespace, hyphenation at line ends, NULs, line endings, paragraphs). It uses
  ``pypdfium2`` (fast, keeps word spacing) and falls back to ``pypdf``. Every problem is a
  :class:`PDFError` whose ``kind`` says what happened and whose message says what to do.
  On Linux the parsing runs in a child process with a memory and a time limit
  (:data:`PDF_MEMORY_LIMIT_MB`, :data:`PDF_TIME_LIMIT_S`), so a decompression bomb or a file
  that sends the parser into a loop fails alone (``kind="over_limit"``) instead of taking the
  app down.
* :func:`chunk_pages` splits pages into :class:`Chunk` objects of at most
  ``chunk_size`` tokens, on sentence boundaries (paragraph boundaries preferred), with
  sentence-level overlap; chunk ids are deterministic, so re-chunking with the same settings
  gives the same ids.
* :func:`ingest_files` runs both for a batch of uploads, deduplicates by content hash and
  writes the catalog (``documents``, ``pages``, ``chunks``); :func:`rechunk` re-chunks the
  stored pages with new settings without parsing the PDFs again.

Example::

    from core.workspace import Workspace
    from core.documents import ChunkSettings, ingest_files, list_documents, tokenizer_counter

    ws = Workspace("./workspace")
    counter = tokenizer_counter(model.tokenizer)            # model: a SentenceTransformer
    reports = ingest_files(ws, [("lyft.pdf", pdf_bytes)], ChunkSettings(),
                           token_counter=counter, max_seq_length=model.max_seq_length)
    for r in reports:
        print(r.filename, r.status, r.chunks, r.error)

Nothing here imports Streamlit.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import marshal
import math
import os
import re
import select
import signal
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .workspace import Workspace, atomic_write_bytes, safe_display_name

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
#: Fewer non-space characters than this over the whole document means "no text layer".
MIN_TEXT_CHARS = 20
#: How far into the file the ``%PDF-`` header may start (the PDF spec allows leading junk).
HEADER_WINDOW = 1024

TokenCounter = Callable[[str], int]

# pypdfium2 is not thread-safe: all calls into it go through this lock.
_PDFIUM_LOCK = threading.Lock()
# Namespace for chunk ids (uuid5); fixed forever so ids stay stable across versions.
_CHUNK_NS = uuid.UUID("6f1c8a52-1c1e-4d7e-9a0b-5d0c2f3e8a11")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _env_number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


#: Memory one PDF may take to parse, in MB on top of what the process already maps
#: (``$ADAPTERLAB_PDF_MEMORY_MB``). Text extraction of real documents needs far less; a page
#: stream that inflates past it (a decompression bomb) stops the parse of that file only.
PDF_MEMORY_LIMIT_MB = _env_number("ADAPTERLAB_PDF_MEMORY_MB", 1024)
#: Seconds one PDF may take to parse (``$ADAPTERLAB_PDF_TIMEOUT_S``).
PDF_TIME_LIMIT_S = _env_number("ADAPTERLAB_PDF_TIMEOUT_S", 300)


# =============================================================================================
# Errors and loaded documents
# =============================================================================================
class PDFError(Exception):
    """A PDF that cannot be used, with a message that names the file and says what to do.

    Attributes:
        kind: one of ``"empty"``, ``"not_pdf"``, ``"encrypted"``, ``"corrupt"``, ``"no_text"``,
            ``"too_large"``, ``"over_limit"`` (parsing needed more memory or time than allowed).
        filename: the display name of the file (never a path).
    """

    KINDS = ("empty", "not_pdf", "encrypted", "corrupt", "no_text", "too_large", "over_limit")

    def __init__(self, kind: str, filename: str, message: str):
        if kind not in self.KINDS:
            raise ValueError(f"unknown PDFError kind {kind!r}; expected one of {self.KINDS}")
        super().__init__(message)
        self.kind = kind
        self.filename = filename

    @property
    def message(self) -> str:
        return str(self)


@dataclass(slots=True)
class PageText:
    """The cleaned text of one page; ``page`` is 1-based. Paragraphs are separated by ``\\n``."""

    page: int
    text: str


@dataclass(slots=True)
class LoadedPDF:
    """A parsed PDF: ``doc_id`` is the sha256 hex of the file bytes."""

    doc_id: str
    filename: str
    size_bytes: int
    pages: list[PageText]
    extractor: str  # "pypdfium2" | "pypdf"

    @property
    def chars(self) -> int:
        return sum(len(p.text) for p in self.pages)


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _err(kind: str, name: str, detail: str = "") -> PDFError:
    messages = {
        "empty": f"{name} is empty (0 bytes): the upload may have been interrupted; upload it again.",
        "not_pdf": (
            f"{name} is not a PDF (no %PDF- header{detail}): export or print it to PDF and upload "
            "that file."
        ),
        "encrypted": (
            f"{name} is encrypted: remove the password (e.g. print to PDF) and upload it again."
        ),
        "corrupt": (
            f"{name} is damaged and cannot be read{detail}: download or export it again "
            "(or open and re-save it with a PDF viewer) and upload the new file."
        ),
        "no_text": (
            f"{name} has no extractable text{detail} (image-only/scanned PDF): run OCR first, "
            f"e.g. `ocrmypdf {name} ocr.pdf`, and upload the result."
        ),
        "too_large": (
            f"{name} is too large ({detail}): split it into smaller PDFs or raise the size limit."
        ),
        "over_limit": (
            f"{name} was not ingested: reading it {detail}. Its compressed content expands far beyond its "
            "file size (a damaged file or a decompression bomb). If it is a genuine document, split it, or "
            "raise ADAPTERLAB_PDF_MEMORY_MB / ADAPTERLAB_PDF_TIMEOUT_S."
        ),
    }
    return PDFError(kind, name, messages[kind])


def _read_source(
    source: bytes | bytearray | memoryview | str | os.PathLike, name: str, max_bytes: int
) -> bytes:
    """The file's bytes, with the size checked before anything large is read."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise _err("too_large", name, f"{_mb(len(data))}, limit {_mb(max_bytes)}")
        return data
    path = Path(source)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if size > max_bytes:
        raise _err("too_large", name, f"{_mb(size)}, limit {_mb(max_bytes)}")
    return path.read_bytes()


def _check_header(data: bytes, name: str) -> None:
    if not data:
        raise _err("empty", name)
    if b"%PDF-" not in data[:HEADER_WINDOW]:
        head = data[:8]
        hint = ""
        if head.startswith(b"PK"):
            hint = "; it looks like a ZIP/Office file"
        elif head.lstrip().startswith((b"<", b"{")):
            hint = "; it looks like HTML/XML/JSON"
        raise _err("not_pdf", name, hint)


def _extract_pdfium(data: bytes, name: str, locked: bool = True) -> list[str]:
    """Raw page texts with pypdfium2; raises PDFError('encrypted') or pdfium's own error.

    A document of :data:`PARALLEL_MIN_PAGES` pages or more is read by two processes (see
    :func:`_extract_forked`); the texts are the same either way. ``locked=False`` is for the
    sandbox child (:func:`_extract_sandboxed`), the only thread of its process, where the
    copy of :data:`_PDFIUM_LOCK` may be held forever.
    """
    import pypdfium2 as pdfium

    if locked:
        with _PDFIUM_LOCK:
            return _extract_pdfium(data, name, locked=False)
    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        # FPDF_ERR_PASSWORD == 4 ("Incorrect password error").
        if getattr(exc, "err_code", None) == 4 or "password" in str(exc).lower():
            raise _err("encrypted", name) from exc
        raise
    try:
        n = len(doc)
        if n >= PARALLEL_MIN_PAGES and _can_fork():
            return _extract_forked(pdfium, doc, data, n)
        return _page_texts(doc, range(n))
    finally:
        doc.close()


def _page_texts(doc, indices: Iterable[int]) -> list[str]:
    """The raw text of the pages ``indices`` (0-based) of an open ``pdfium.PdfDocument``."""
    texts: list[str] = []
    for i in indices:
        page = doc[i]
        try:
            textpage = page.get_textpage()
            try:
                texts.append(textpage.get_text_range())
            finally:
                textpage.close()
        finally:
            page.close()
    return texts


# -- parallel extraction ----------------------------------------------------------------------
#: Documents with at least this many pages are extracted by two processes (Linux, 2+ CPUs):
#: pdfium is not thread-safe, so a forked child reads every other page while this process
#: reads the rest. Tests lower it to force the parallel path on small PDFs.
PARALLEL_MIN_PAGES = 48
#: How long to wait for the child after this process has read its own pages: at least this
#: many seconds, or 4x the time this process took. After that the child is killed and its
#: pages are read here.
_CHILD_TIMEOUT_MIN_S = 10.0
_HEADER = struct.Struct("<Q")


def _can_fork() -> bool:
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False  # macOS: fork is unsafe with system frameworks; Windows: no fork
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except (AttributeError, OSError):
        return (os.cpu_count() or 1) >= 2


def _extract_forked(pdfium, doc, data: bytes, n: int) -> list[str]:
    """Page texts of ``doc`` (``n`` pages), the odd ones read by a forked child process.

    Pages are interleaved rather than split in halves: neighbouring pages cost about the same,
    while the front of a 10-K (dense risk factors) costs far more than the back (tables).

    Called with :data:`_PDFIUM_LOCK` held, so no other thread of this process is inside
    pdfium when it forks and the child's copy of pdfium is consistent. The child only opens
    its own document from ``data``, reads its pages, sends the texts down a pipe and exits
    with ``os._exit``: it takes no lock (not even its copy of ``_PDFIUM_LOCK``, which is held
    there forever), logs nothing and never returns into the caller's code. Any failure of the
    child (fork refused, crash, garbage, timeout) is silent: its pages are read here instead.
    """
    mine, theirs = range(0, n, 2), range(1, n, 2)
    try:
        rfd, wfd = os.pipe()
    except OSError:
        return _page_texts(doc, range(n))
    try:
        pid = os.fork()
    except OSError:  # e.g. not enough memory to fork a large process
        os.close(rfd)
        os.close(wfd)
        return _page_texts(doc, range(n))
    if pid == 0:  # the child: pdfium and strings only, then exit whatever happens
        code = 1
        try:
            os.close(rfd)
            gc.disable()  # no finalizers of the parent's objects run here
            child_doc = pdfium.PdfDocument(data)
            raw = _page_texts(child_doc, theirs)
            normalized = [_normalize_chars(t) for t in raw]  # clean-up's first steps, here
            _write_frame(wfd, (raw, normalized, _word_chains(normalized)))
            code = 0
        except BaseException:
            pass
        finally:
            os._exit(code)

    # the parent
    os.close(wfd)
    child: tuple | None = None
    try:
        t0 = time.monotonic()
        texts = _page_texts(doc, mine)
        deadline = time.monotonic() + max(_CHILD_TIMEOUT_MIN_S, 4 * (time.monotonic() - t0))
        child = _read_child(rfd, deadline, len(theirs))
    finally:
        os.close(rfd)
        if child is None:  # failed, hung, or this process raised: stop the child
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(pid, 0)  # it exits right after sending; never leave a zombie
        except ChildProcessError:  # already reaped elsewhere (e.g. SIGCHLD ignored)
            pass
    out = _RawPages([""] * n)
    out[0::2] = texts
    if child is None:
        log.debug("parallel PDF extraction failed; reading its pages here")
        out[1::2] = _page_texts(doc, theirs)
    else:
        out[1::2] = child[0]
        normalized = [""] * n
        normalized[1::2] = child[1]
        out.prepared = (normalized, child[2])
    return out


class _RawPages(list):
    """Raw page texts (a plain list to every reader), which may carry ``prepared``:
    ``(normalized, chains)`` where the odd pages of ``normalized`` are already through
    :func:`_normalize_chars` and ``chains`` are their :func:`_word_chains` (work the
    extraction's child process did). :func:`clean_pages` uses it; nothing else needs to."""

    prepared: tuple[list[str], set[str]] | None = None


def _read_child(fd: int, deadline: float, n: int) -> tuple | None:
    """The child's ``(raw texts, normalized texts, word chains)`` for ``n`` pages from the pipe,
    or ``None`` on EOF, garbage or timeout."""
    frame = _read_frame(fd, deadline)
    if frame is None:
        return None
    try:
        got = marshal.loads(frame)
    except (EOFError, ValueError, TypeError):
        return None
    if not (
        type(got) is tuple
        and len(got) == 3
        and all(type(x) is list and len(x) == n and all(type(t) is str for t in x) for x in got[:2])
        and type(got[2]) is set
        and all(type(c) is str for c in got[2])
    ):
        return None
    return got


def _extract_pypdf(data: bytes, name: str) -> list[str]:
    """Raw page texts with pypdf; raises PDFError('encrypted'/'corrupt')."""
    import io

    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except Exception:  # missing crypto dependency, unsupported algorithm, ...
                ok = 0
            if not ok:
                raise _err("encrypted", name)
        texts = []
        for page in reader.pages:
            try:
                texts.append(page.extract_text() or "")
            except Exception as exc:  # one bad page should not lose the document
                log.warning("%s: pypdf could not read a page: %s", name, exc)
                texts.append("")
        return texts
    except (PDFError, MemoryError):
        raise
    except getattr(getattr(pypdf, "errors", None), "LimitReachedError", ()) as exc:  # pypdf's own bomb guard
        raise _err("over_limit", name, f"hit pypdf's limit on inflated data ({exc})"[:300]) from exc
    except Exception as exc:  # pypdf raises many types (PdfReadError, ValueError, ...) on broken files
        raise _err("corrupt", name, f" ({type(exc).__name__}: {exc})"[:200]) from exc


def load_pdf(
    source: bytes | str | os.PathLike,
    filename: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    memory_limit_mb: float | None = None,
    time_limit_s: float | None = None,
) -> LoadedPDF:
    """Read one PDF into cleaned text per page.

    Args:
        source: the file's bytes, or a path to it.
        filename: the name to show (reduced by :func:`~core.workspace.safe_display_name`;
            never used as a path). Defaults to the path's base name, or ``"document.pdf"``.
        max_bytes: refuse files larger than this, checked before the file is parsed (or, for a
            path, read).
        memory_limit_mb, time_limit_s: limits of the parse (default :data:`PDF_MEMORY_LIMIT_MB`,
            :data:`PDF_TIME_LIMIT_S`), enforced on Linux by parsing in a child process.

    Returns:
        a :class:`LoadedPDF` whose ``doc_id`` is the sha256 of the bytes. Pages without text
        are kept (with ``text == ""``) so page numbers stay right.

    Raises:
        PDFError: ``kind`` is ``"too_large"``, ``"empty"``, ``"not_pdf"``, ``"encrypted"``,
            ``"corrupt"``, ``"no_text"`` (fewer than :data:`MIN_TEXT_CHARS` non-space
            characters over all pages: a scanned PDF that needs OCR) or ``"over_limit"``.
        FileNotFoundError: ``source`` is a path that does not exist.

    Text comes from ``pypdfium2``; if it cannot open or read the file (other than for a
    password), or finds no text, ``pypdf`` is tried. Owner-password-only PDFs (which any
    viewer opens) are read normally.

    Example::

        doc = load_pdf("lyft_2021.pdf")
        print(doc.filename, len(doc.pages), doc.chars, doc.extractor)
        print(doc.pages[4].page, doc.pages[4].text[:200])
    """
    if filename is None:
        filename = os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "document.pdf"
    name = safe_display_name(filename)
    data = _read_source(source, name, max_bytes)
    return _load_bytes(data, name, memory_limit_mb, time_limit_s)


def _load_bytes(
    data: bytes, name: str, memory_limit_mb: float | None = None, time_limit_s: float | None = None
) -> LoadedPDF:
    _check_header(data, name)
    doc_id = hashlib.sha256(data).hexdigest()
    if _can_sandbox():
        extractor, cleaned = _extract_sandboxed(
            data, name, memory_limit_mb or PDF_MEMORY_LIMIT_MB, time_limit_s or PDF_TIME_LIMIT_S
        )
    else:  # no fork (Windows, macOS): parse here, without the limits
        extractor, cleaned = _extract_and_clean(data, name)
    pages = [PageText(page=i + 1, text=t) for i, t in enumerate(cleaned)]
    return LoadedPDF(doc_id=doc_id, filename=name, size_bytes=len(data), pages=pages, extractor=extractor)


def _extract_and_clean(data: bytes, name: str, locked: bool = True) -> tuple[str, list[str]]:
    """``(extractor, cleaned page texts)``: pdfium, pypdf when pdfium fails or finds no text."""
    raw: list[str] | None = None
    extractor = "pypdfium2"
    pdfium_error: Exception | None = None
    try:
        raw = _extract_pdfium(data, name, locked=locked)
    except (PDFError, MemoryError):
        raise
    except Exception as exc:  # PdfiumError (format/file error) or a failure on a page
        pdfium_error = exc
        log.info("%s: pypdfium2 failed (%s); trying pypdf", name, exc)

    if raw is None or _text_chars(raw, MIN_TEXT_CHARS) < MIN_TEXT_CHARS:
        try:
            fallback = _extract_pypdf(data, name)
        except PDFError:
            if raw is None:
                raise
            fallback = None  # pdfium read it (no text); pypdf choked: keep pdfium's verdict
        if fallback is not None and (raw is None or _text_chars(fallback) > _text_chars(raw)):
            raw, extractor = fallback, "pypdf"

    assert raw is not None
    if not raw:
        detail = f" ({pdfium_error})" if pdfium_error else ""
        raise _err("corrupt", name, f": it contains no pages{detail}")
    if _text_chars(raw, MIN_TEXT_CHARS) < MIN_TEXT_CHARS:
        raise _err("no_text", name, f" in its {len(raw)} page{'s' if len(raw) != 1 else ''}")

    return extractor, clean_pages(raw)


# -- the sandbox: one PDF is parsed in a child process with memory and time limits ------------
def _can_sandbox() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def _address_space_bytes() -> int:
    """This process's mapped virtual memory (what ``RLIMIT_AS`` counts)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _sandbox_child(data: bytes, name: str, memory_limit_mb: float, time_limit_s: float, wfd: int) -> None:
    """In the forked child: limit memory and CPU, parse, send the outcome down ``wfd``, exit.

    Never returns. It runs only pdfium, pypdf and string code, takes no lock of the parent's
    (see :func:`_extract_pdfium`), logs nothing and leaves with ``os._exit``.
    """
    code = 1
    try:
        gc.disable()  # no finalizers of the parent's objects run here
        import faulthandler

        faulthandler.disable()  # running out of its memory is expected here: no crash dump on stderr
        os.setpgid(0, 0)  # its own process group: the parent can stop it with its helper
        import resource

        limit = _address_space_bytes() + int(memory_limit_mb * 1024 * 1024)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
        cpu = int(time_limit_s) + 5  # a backstop: the parent kills it at the wall-clock limit
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu if hard == resource.RLIM_INFINITY else min(cpu, hard), hard))
        try:
            extractor, cleaned = _extract_and_clean(data, name, locked=False)
            message = ("ok", extractor, cleaned)
        except PDFError as exc:
            message = ("pdf_error", exc.kind, str(exc))
        except MemoryError:
            message = ("memory",)
        except Exception as exc:
            message = ("error", type(exc).__name__, str(exc)[:300])
        _write_frame(wfd, message)
        code = 0
    except BaseException:
        pass
    finally:
        os._exit(code)


def _write_frame(fd: int, obj: Any) -> None:
    """Send ``obj`` (marshal-able: strings, numbers, tuples) as one length-prefixed frame on ``fd``."""
    payload = marshal.dumps(obj)
    view = memoryview(_HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


def _read_frame(fd: int, deadline: float) -> bytes | None:
    """One length-prefixed message from ``fd``; ``None`` on EOF (the child died) or timeout
    (then ``time.monotonic() >= deadline``)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = bytearray()
    need, size = _HEADER.size, None
    while True:
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(max(left, 0.001) * 1000):
                return None
            chunk = os.read(fd, max(need - len(buf), 1 << 16))
            if not chunk:
                return None
            buf += chunk
        if size is not None:
            return bytes(buf[_HEADER.size : need])
        (size,) = _HEADER.unpack_from(buf)
        need = _HEADER.size + size


def _extract_sandboxed(data: bytes, name: str, memory_limit_mb: float, time_limit_s: float) -> tuple[str, list[str]]:
    """:func:`_extract_and_clean` in a forked child limited to ``memory_limit_mb`` more memory
    (``RLIMIT_AS``) and ``time_limit_s`` seconds; over a limit, ``PDFError("over_limit")``."""
    import pypdfium2  # noqa: F401 - loaded once here, so every child shares it instead of loading it

    rfd, wfd = os.pipe()
    try:
        with _PDFIUM_LOCK:  # no thread of this process is inside pdfium while it forks
            pid = os.fork()
            if pid == 0:
                os.close(rfd)
                _sandbox_child(data, name, memory_limit_mb, time_limit_s, wfd)
    except OSError as exc:
        os.close(rfd)
        os.close(wfd)
        raise _err("over_limit", name, f"could not start the reader process ({exc.strerror})") from None
    os.close(wfd)
    frame = None
    deadline = time.monotonic() + time_limit_s
    try:
        try:
            os.setpgid(pid, pid)  # also here, so killpg works even before the child ran
        except OSError:
            pass
        frame = _read_frame(rfd, deadline)
    finally:
        os.close(rfd)
        timed_out = frame is None and time.monotonic() >= deadline
        if frame is None:
            for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    kill()
                    break
                except OSError:
                    continue
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = 0
    message = None
    if frame is not None:
        try:
            message = marshal.loads(frame)
        except (EOFError, ValueError, TypeError):
            message = None
    mem = f"{memory_limit_mb:g} MB"
    if not isinstance(message, tuple) or not message:
        if timed_out or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU):
            raise _err("over_limit", name, f"took longer than {time_limit_s:g} s")
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit status {os.WEXITSTATUS(status)}"
        raise _err("over_limit", name, f"stopped the PDF reader ({how}): the file needs more than {mem} of "
                                       "memory to read, or crashed the reader")
    kind = message[0]
    if kind == "ok" and len(message) == 3 and isinstance(message[2], list):
        return str(message[1]), [str(t) for t in message[2]]
    if kind == "pdf_error" and len(message) == 3 and message[1] in PDFError.KINDS:
        raise PDFError(message[1], name, str(message[2]))
    if kind == "memory":
        raise _err("over_limit", name, f"needed more than {mem} of memory")
    if kind == "error" and len(message) == 3:
        raise _err("corrupt", name, f" ({message[1]}: {message[2]})"[:300])
    raise _err("corrupt", name, " (the PDF reader sent an unreadable answer)")


def _text_chars(texts: Sequence[str], enough: int | None = None) -> int:
    """Non-space characters over all pages; stops counting once ``enough`` are found."""
    n = 0
    for t in texts:
        n += len("".join(t.split()))
        if enough is not None and n >= enough:
            break
    return n


# =============================================================================================
# Text clean-up
# =============================================================================================
# Characters that mean "space" / "nothing" in extracted PDF text (one regex pass each is much
# faster than str.translate, which has a fast path for ASCII text only).
_SPACE_CHARS = re.compile("[\t\x0b\x0c\xa0\u1680\u2000-\u200a\u202f\u205f\u3000]")
# NUL, zero-width characters and controls (\x02 is kept: pdfium's hyphen mark, see below).
_DROP_CHARS = re.compile("[\x00\x01\x03-\x08\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")
# pdfium marks a hyphen at a line end (lines already merged) with U+FFFE or \x02; U+00AD is the
# soft hyphen. A literal "-" at a line end is the pypdf form of the same thing. ``(?<!\w)`` and
# the possessive ``\w++`` only make the scan linear: a match always starts at a word start and
# takes the whole word, as ``(\w+)`` would after backtracking.
_HYPHEN_BREAK = re.compile(r"(?<!\w)(\w++)(?:[\ufffe\x02\u00ad] *\n? *|- *\n *)(?=(\w+))")
_STRAY_SOFT = re.compile(r"[\ufffe\x02\u00ad]")
_WORD_CHAIN = re.compile(r"\w++(?:-\w++)*+")
# A bullet glyph in the middle of a line starts a list item: give it its own line. (The match
# starts at the first space after a non-space: " (?<=\S )" is "(?<=\S) " with a literal first
# character, which the regex engine can search for quickly.)
_INLINE_BULLET = re.compile(r" (?<=\S )\ *([\u2022\u25cf\u25aa\u25e6]) +")
_INLINE_BULLET_GLYPHS = ("\u2022", "\u25cf", "\u25aa", "\u25e6")
# A page's last line holding only a number (optionally "Page n" / "n of m" / "- n -").
_PAGE_NUMBER = re.compile(r"(?im)^[ \-\u2013]*(?:page +)?(\d{1,4})(?: +of +\d{1,4})?[ \-\u2013]*\s*\Z")
# A line starting with a bullet glyph starts a paragraph. (Numbers and dashes are left alone:
# "5. The" at a line start is as often a wrapped sentence end as a list item.)
_BULLET = re.compile(r"^[\u2022\u25cf\u25aa\u25a0\u2023\u2043\u25e6]\s")


def clean_pages(raw_pages: Sequence[str]) -> list[str]:
    """Clean the raw text of all pages of one document.

    * drops NULs, zero-width and control characters; ``\\r\\n``/``\\r`` become ``\\n``;
      non-breaking and other odd spaces become plain spaces; runs of spaces collapse;
    * hyphenation at line ends: ``"re-\\nmarkable"`` becomes ``"remarkable"`` when the joined
      word occurs elsewhere in the document and the hyphenated one does not, otherwise the
      hyphen is kept (``"third-\\nparty"`` -> ``"third-party"``);
    * lines are joined into paragraphs (a paragraph ends at a blank line, a short line, or
      before a bullet); the result has one paragraph per line, separated by ``\\n``.

    The document-wide vocabulary is what decides hyphens, so pass all pages at once.

    Example::

        clean_pages(["Our remarkable year.\\r\\nIt was re-\\r\\nmarkable indeed.\\x00"])
        # -> ['Our remarkable year. It was remarkable indeed.']
    """
    pre = raw_pages.prepared if isinstance(raw_pages, _RawPages) else None
    if pre is not None:  # the odd pages were normalized by the extraction's child process
        normalized, odd_chains = list(pre[0]), pre[1]
        for i in range(0, len(normalized), 2):
            normalized[i] = _normalize_chars(raw_pages[i])
    else:
        normalized = [_normalize_chars(t) for t in raw_pages]
    vocab: list[set[str]] = []  # [words, compounds] of the whole document, built on first use

    def fix_hyphen(m: re.Match) -> str:
        if not vocab:
            if pre is None:
                vocab.extend(_vocabulary(_word_chains(normalized)))
            else:
                vocab.extend(_vocabulary(odd_chains | _word_chains(normalized[0::2])))
        words, compounds = vocab
        left, right = m.group(1), m.group(2)
        if (left + right).lower() in words and f"{left}-{right}".lower() not in compounds:
            return left
        return left + "-"

    out = []
    for t in _drop_page_numbers(normalized):
        # only pages that may hold a hyphen break or a stray soft hyphen (a cheap superset test)
        if "\ufffe" in t or "\x02" in t or "\u00ad" in t or "-\n" in t or "- " in t:
            t = _HYPHEN_BREAK.sub(fix_hyphen, t)
            t = _STRAY_SOFT.sub("-", t)
        if any(g in t for g in _INLINE_BULLET_GLYPHS):
            t = _INLINE_BULLET.sub(r"\n\1 ", t)
        out.append(_join_paragraphs(t))
    return out


def _normalize_chars(t: str) -> str:
    """Line endings, dropped characters and odd spaces of one page."""
    if "\r" in t:
        t = t.replace("\r\n", "\n").replace("\r", "\n")
    return _SPACE_CHARS.sub(" ", _DROP_CHARS.sub("", t))


def _word_chains(pages: Iterable[str]) -> set[str]:
    """The distinct chains of words joined by single hyphens ("a-b-c", "word") in ``pages``."""
    chains: set[str] = set()
    for t in pages:
        chains.update(_WORD_CHAIN.findall(t))
    return chains


def _vocabulary(chains: Iterable[str]) -> tuple[set[str], set[str]]:
    r"""Lower-cased words (``\w+``), and hyphenated compounds written on one line (what
    ``re.findall(r"\w+-\w+")`` finds), of the pages whose :func:`_word_chains` these are.

    A chain's words are its parts and its compounds are the pairs a non-overlapping scan finds
    ("a-b", not "b-c", in "a-b-c"). U+FFFE, \x02 and U+00AD are not word characters, so they
    separate words as they are.
    """
    words: set[str] = set()
    compounds: set[str] = set()
    for chain in chains:
        if "-" in chain:
            parts = chain.split("-")
            words.update(parts)
            for i in range(0, len(parts) - 1, 2):
                compounds.add(f"{parts[i]}-{parts[i + 1]}")
        else:
            words.add(chain)
    return {w.lower() for w in words}, {c.lower() for c in compounds}


def _drop_page_numbers(pages: list[str]) -> list[str]:
    """Remove printed page numbers: a last line that is a bare number, when such numbers run in
    step with the page index (same offset) on at least 3 pages and a third of the document."""
    found: dict[int, tuple[int, int]] = {}  # page index -> (offset, position of the line start)
    for i, t in enumerate(pages):
        m = _PAGE_NUMBER.search(t)
        if m and t[: m.start()].strip():
            found[i] = (int(m.group(1)) - i, m.start())
    if len(found) < 3:
        return pages
    offsets: dict[int, int] = {}
    for off, _ in found.values():
        offsets[off] = offsets.get(off, 0) + 1
    best, count = max(offsets.items(), key=lambda kv: kv[1])
    if count < 3 or count * 3 < len(pages):
        return pages
    out = list(pages)
    for i, (off, pos) in found.items():
        if off == best:
            out[i] = pages[i][:pos]
    return out


def _join_paragraphs(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.split("\n")]
    lengths = sorted(len(line) for line in lines if line)
    if not lengths:
        return ""
    # "Full width" of a text line on this page, in characters.
    full = lengths[int(0.8 * (len(lengths) - 1))] if len(lengths) >= 5 else lengths[-1]
    short = 0.7 * full
    # the next non-empty line after each line
    following = [""] * len(lines)
    nxt = ""
    for i in range(len(lines) - 1, -1, -1):
        following[i] = nxt
        if lines[i]:
            nxt = lines[i]
    paras: list[str] = []
    cur: list[str] = []
    for i, line in enumerate(lines):
        if not line:
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        if cur and _BULLET.match(line):
            paras.append(" ".join(cur))
            cur = []
        cur.append(line)
        # a short line ends its paragraph unless the next line clearly continues it
        if len(line) < short and not following[i][:1].islower():
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return "\n".join(paras)


# =============================================================================================
# Chunking
# =============================================================================================
@dataclass(slots=True)
class ChunkSettings:
    """How to cut pages into chunks; sizes are in tokens of the embedder's tokenizer.

    Args:
        chunk_size: the most tokens in one chunk; ``0`` = auto (see :meth:`resolved`).
        chunk_overlap: tokens of trailing whole sentences repeated at the start of the next
            chunk; ``-1`` = auto (about 12% of ``chunk_size``).

    Example::

        ChunkSettings().resolved(256)      # ChunkSettings(chunk_size=240, chunk_overlap=29)
        ChunkSettings().resolved(None)     # ChunkSettings(chunk_size=512, chunk_overlap=64)
        ChunkSettings(200, 20).resolved(256)
    """

    chunk_size: int = 0
    chunk_overlap: int = -1

    def __post_init__(self) -> None:
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int):
            raise ValueError(f"chunk_size must be an integer number of tokens, got {self.chunk_size!r}")
        if isinstance(self.chunk_overlap, bool) or not isinstance(self.chunk_overlap, int):
            raise ValueError(f"chunk_overlap must be an integer number of tokens, got {self.chunk_overlap!r}")
        if self.chunk_size < 0 or 0 < self.chunk_size < 16:
            raise ValueError(
                f"chunk_size must be at least 16 tokens (or 0 for auto), got {self.chunk_size}"
            )
        if self.chunk_overlap < -1:
            raise ValueError(
                f"chunk_overlap must be 0 or more tokens (or -1 for auto), got {self.chunk_overlap}"
            )
        if self.chunk_size and self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )

    @property
    def is_auto(self) -> bool:
        return self.chunk_size == 0 or self.chunk_overlap == -1

    def resolved(self, max_seq_length: int | None) -> "ChunkSettings":
        """Concrete settings for an embedder whose input limit is ``max_seq_length`` tokens.

        Auto ``chunk_size`` is ``max_seq_length - 16`` (room for special tokens) when the limit
        is known, else 512 (API embedders); auto overlap is ``round(0.12 * chunk_size)``
        (64 for the 512 default).

        Raises:
            ValueError: ``max_seq_length`` is not a positive integer, is too small for a
                16-token chunk, or the overlap is not smaller than the chunk size.
        """
        if max_seq_length is not None:
            if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length <= 0:
                raise ValueError(f"max_seq_length must be a positive integer or None, got {max_seq_length!r}")
        size = self.chunk_size
        if size == 0:
            if max_seq_length is None:
                size = 512
            else:
                size = max_seq_length - 16
                if size < 16:
                    raise ValueError(
                        f"max_seq_length {max_seq_length} leaves no room for 16-token chunks; "
                        "set chunk_size explicitly"
                    )
        overlap = self.chunk_overlap
        if overlap == -1:
            overlap = 64 if (self.chunk_size == 0 and max_seq_length is None) else round(0.12 * size)
        if overlap >= size:
            raise ValueError(f"chunk_overlap ({overlap}) must be smaller than chunk_size ({size})")
        return ChunkSettings(size, overlap)


@dataclass(slots=True)
class Chunk:
    """One chunk of a document (a LlamaIndex node). ``truncated`` means the embedder will cut it."""

    id: str
    doc_id: str
    idx: int
    text: str
    page_start: int
    page_end: int
    n_tokens: int
    truncated: bool


def approx_token_count(text: str) -> int:
    """The fallback token count: ``ceil(words * 1.3)`` (close to WordPiece/BPE on English prose)."""
    return math.ceil(len(text.split()) * 1.3)


def tokenizer_counter(tokenizer) -> TokenCounter:
    """A token counter (with a fast ``.batch``) from a Hugging Face tokenizer.

    ``tokenizer`` may be a ``transformers`` tokenizer or anything with a ``.tokenizer``
    attribute holding one (e.g. a ``SentenceTransformer``). Special tokens are not counted
    (that is what the 16-token margin of :meth:`ChunkSettings.resolved` is for).

    Example::

        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer(path)
        count = tokenizer_counter(model)
        count("Hello world")                 # 2
        count.batch(["a b", "c"])            # [2, 1]
    """
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    if not callable(tok):
        raise TypeError(f"expected a Hugging Face tokenizer or a SentenceTransformer, got {type(tokenizer).__name__}")

    def batch(texts: list[str]) -> list[int]:
        if not texts:
            return []
        enc = tok(list(texts), add_special_tokens=False, truncation=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def count(text: str) -> int:
        return batch([text])[0]

    count.batch = batch  # type: ignore[attr-defined]
    return count


_ABBREV = frozenset(
    "mr mrs ms dr prof sr jr st mt inc ltd co corp llc plc no nos vs etc al fig figs approx "
    "dept est e.g i.e cf jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k u.s.a "
    "a.m p.m ph.d gov sec art".split()
)
# A sentence end: terminal punctuation, optional closing quotes/brackets, whitespace, and then
# something that can start a sentence.
_SENT_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[$\u2022A-Z0-9])")
_LAST_WORD = re.compile(r"(\S+)$")


def split_sentences(paragraph: str) -> list[str]:
    """Split one paragraph into sentences (regex with an abbreviation guard; no model needed).

    Example::

        split_sentences("Revenue grew 36%. Dr. Smith left the U.S. in May. Why? Costs.")
        # -> ['Revenue grew 36%.', 'Dr. Smith left the U.S. in May.', 'Why?', 'Costs.']
    """
    out: list[str] = []
    start = 0
    for m in _SENT_END.finditer(paragraph):
        if paragraph[m.start()] == ".":
            w = _LAST_WORD.search(paragraph, start, m.start())
            word = w.group(1).lstrip("(\"'\u201c\u2018[").lower() if w else ""
            if word in _ABBREV or (len(word) == 1 and word.isalpha()) or re.fullmatch(r"(?:[a-z]\.)+[a-z]", word):
                continue
        piece = paragraph[start : m.end()].strip()
        if piece:
            out.append(piece)
        start = m.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out


@dataclass(slots=True)
class _Unit:
    text: str
    page: int
    para: int
    n: int = 0


def _counts(texts: list[str], counter: TokenCounter, cache: dict[str, int]) -> list[int]:
    """Token counts for ``texts``, each distinct string counted once (batched when possible)."""
    todo = list(dict.fromkeys(t for t in texts if t not in cache))
    if todo:
        batch = getattr(counter, "batch", None)
        if callable(batch):
            for i in range(0, len(todo), 2048):
                part = todo[i : i + 2048]
                for t, n in zip(part, batch(part)):
                    cache[t] = int(n)
        else:
            for t in todo:
                cache[t] = int(counter(t))
    return [cache[t] for t in texts]


def _split_long(u: _Unit, size: int, counter: TokenCounter, cache: dict[str, int]) -> list[_Unit]:
    """Split a unit longer than ``size`` tokens on words (and a giant word on characters)."""
    words: list[str] = []
    for w in u.text.split():
        if len(w) > size:  # a "word" of more than `size` characters: cut it (<= 1 token per char)
            words.extend(w[i : i + size] for i in range(0, len(w), size))
        else:
            words.append(w)
    counts = _counts(words, counter, cache)
    pieces: list[_Unit] = []
    cur: list[str] = []
    cur_n = 0
    for w, n in zip(words, counts):
        n = min(n, size)  # a counter that overcounts a single short piece must not loop
        if cur and cur_n + n > size:
            pieces.append(_Unit(" ".join(cur), u.page, u.para, cur_n))
            cur, cur_n = [], 0
        cur.append(w)
        cur_n += n
    if cur:
        pieces.append(_Unit(" ".join(cur), u.page, u.para, cur_n))
    return pieces


def chunk_id(doc_id: str, idx: int, text: str) -> str:
    """The stable id of a chunk: a uuid5 of ``(doc_id, idx, text)``."""
    return str(uuid.uuid5(_CHUNK_NS, f"{doc_id}\x00{idx}\x00{text}"))


def chunk_pages(
    pages: list[PageText],
    doc_id: str,
    settings: ChunkSettings,
    token_counter: TokenCounter | None = None,
    max_seq_length: int | None = None,
) -> list[Chunk]:
    """Cut a document's pages into chunks of at most ``chunk_size`` tokens.

    Args:
        pages: the pages, as from :func:`load_pdf` (paragraphs separated by ``\\n``).
        doc_id: the document's id; part of every chunk id.
        settings: chunk size and overlap; auto values are resolved with ``max_seq_length``.
        token_counter: counts tokens of a string, normally the embedder's tokenizer (see
            :func:`tokenizer_counter`); if it has a ``batch`` attribute (``list[str] ->
            list[int]``) that is used instead. ``None`` uses :func:`approx_token_count`.
        max_seq_length: the embedder's input limit in tokens, if known; chunks longer than it
            are flagged ``truncated``.

    Returns:
        chunks in document order. Sentences are never cut unless a single sentence is longer
        than ``chunk_size`` (then it is cut on words). A chunk ends early at a paragraph
        boundary when it is at least half full and the next paragraph would not fit whole.
        Each chunk after the first starts with the trailing whole sentences of the previous
        one, up to ``chunk_overlap`` tokens. Chunks may span pages (``page_start`` ..
        ``page_end``). Ids are deterministic in ``(doc_id, idx, text)``.

    Token counts are per sentence (each distinct sentence tokenized once) and summed, which
    is exact for WordPiece tokenizers and within a token or two per chunk for BPE.

    Example::

        chunks = chunk_pages(doc.pages, doc.doc_id, ChunkSettings(), tokenizer_counter(model),
                             max_seq_length=model.max_seq_length)
        print(len(chunks), chunks[0].page_start, chunks[0].n_tokens)
    """
    return _chunk(pages, doc_id, settings, token_counter, max_seq_length, {})


def _chunk(
    pages: list[PageText],
    doc_id: str,
    settings: ChunkSettings,
    token_counter: TokenCounter | None,
    max_seq_length: int | None,
    cache: dict[str, int],
) -> list[Chunk]:
    s = settings.resolved(max_seq_length)
    size, overlap = s.chunk_size, s.chunk_overlap
    counter = token_counter or approx_token_count

    units: list[_Unit] = []
    para = 0
    for p in pages:
        for paragraph in p.text.split("\n"):
            paragraph = paragraph.strip()
            if not paragraph:
                continue
            for sent in split_sentences(paragraph):
                units.append(_Unit(sent, p.page, para))
            para += 1
    if not units:
        return []
    for u, n in zip(units, _counts([u.text for u in units], counter, cache)):
        u.n = n
    if any(u.n > size for u in units):
        split: list[_Unit] = []
        for u in units:
            split.extend(_split_long(u, size, counter, cache) if u.n > size else (u,))
        units = split

    para_tokens: dict[int, int] = {}
    for u in units:
        para_tokens[u.para] = para_tokens.get(u.para, 0) + u.n

    groups: list[list[_Unit]] = []
    cur: list[_Unit] = []
    cur_n = 0
    for u in units:
        if cur:
            full = cur_n + u.n > size
            para_break = (
                u.para != cur[-1].para and cur_n * 2 >= size and cur_n + para_tokens[u.para] > size
            )
            if full or para_break:
                groups.append(cur)
                tail: list[_Unit] = []
                tail_n = 0
                for v in reversed(cur[1:]):  # never repeat the whole previous chunk
                    if tail_n + v.n > overlap or tail_n + v.n + u.n > size:
                        break
                    tail.append(v)
                    tail_n += v.n
                cur = tail[::-1]
                cur_n = tail_n
        cur.append(u)
        cur_n += u.n
    if cur:
        groups.append(cur)

    chunks: list[Chunk] = []
    for idx, g in enumerate(groups):
        parts = [g[0].text]
        for prev, u in zip(g, g[1:]):
            parts.append(" " if u.para == prev.para else "\n")
            parts.append(u.text)
        text = "".join(parts)
        n = sum(u.n for u in g)
        chunks.append(
            Chunk(
                id=chunk_id(doc_id, idx, text),
                doc_id=doc_id,
                idx=idx,
                text=text,
                page_start=min(u.page for u in g),
                page_end=max(u.page for u in g),
                n_tokens=n,
                truncated=max_seq_length is not None and n > max_seq_length,
            )
        )
    return chunks


# =============================================================================================
# Ingest into the workspace
# =============================================================================================
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


def _hash_path(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    progress: Callable[[int, int, str], None] | None = None,
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
        report = _ingest_one(ws, name, source, settings, token_counter, max_seq_length, max_bytes, cache, seen,
                             (memory_limit_mb, time_limit_s))
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
                    doc_id, size = _hash_path(Path(source)), Path(source).stat().st_size
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
        chunks = _chunk(doc.pages, doc.doc_id, settings, token_counter, max_seq_length, cache)
        atomic_write_bytes(ws.path("documents", f"{doc.doc_id}.pdf"), data)
        with ws.db() as con:
            con.execute(
                "INSERT OR REPLACE INTO documents(id, filename, size_bytes, pages, chars, extractor, "
                "status, error, added_at) VALUES(?, ?, ?, ?, ?, ?, 'ok', NULL, ?)",
                (doc.doc_id, doc.filename, doc.size_bytes, len(doc.pages), doc.chars, doc.extractor, time.time()),
            )
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


def rechunk(
    ws: Workspace,
    settings: ChunkSettings,
    token_counter: TokenCounter | None = None,
    max_seq_length: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
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


def list_chunks(
    ws: Workspace, doc_id: str | None = None, search: str | None = None, limit: int | None = None
) -> list[dict]:
    """Chunks in document order, with their document's ``filename``.

    Args:
        doc_id: only this document's chunks.
        search: only chunks whose text contains this (case-insensitive for ASCII).
        limit: at most this many rows.
    """
    sql = (
        "SELECT c.*, d.filename FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE 1=1"
    )
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
