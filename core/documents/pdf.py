"""PDF bytes -> cleaned text per page, with the parser fenced in.

:func:`load_pdf` reads one PDF (bytes or a path) into :class:`PageText` per page, cleaned by
:mod:`core.documents.cleanup`. It uses ``pypdfium2`` (fast, keeps word spacing) and falls back to
``pypdf``. Every problem is a :class:`PDFError` whose ``kind`` says what happened and whose message
says what to do. On Linux the parsing runs in a forked child process with a memory and a time limit
(:data:`PDF_MEMORY_LIMIT_MB`, :data:`PDF_TIME_LIMIT_S`; the memory is capped twice: the child's address
space, and its resident memory, which this process watches), so a decompression bomb or a file that sends
the parser into a loop fails alone (``kind="over_limit"``) instead of taking the app down; a long
document is read by two processes (:data:`PARALLEL_MIN_PAGES`).

Example::

    doc = load_pdf("lyft_2021.pdf")
    print(doc.n_pages, doc.extractor, doc.pages[0].text[:200])
"""

from __future__ import annotations

import gc
import hashlib
import logging
import marshal
import os
import select
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..workspace import safe_display_name
from .cleanup import _normalize_chars, _RawPages, _word_chains, clean_pages

log = logging.getLogger(__name__)
# pypdf logs what it works around ("EOF marker not found") on the user's terminal; a file it cannot read gets
# this module's own error, which says what to do
logging.getLogger("pypdf").setLevel(logging.ERROR)

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
#: Fewer non-space characters than this over the whole document means "no text layer".
MIN_TEXT_CHARS = 20
#: How far into the file the ``%PDF-`` header may start (the PDF spec allows leading junk).
HEADER_WINDOW = 1024

# pypdfium2 is not thread-safe: all calls into it go through this lock.
_PDFIUM_LOCK = threading.Lock()


def _env_number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


#: Memory one PDF may take to parse, in MB on top of what the reader process already maps and holds
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
        kind: one of ``"empty"``, ``"not_pdf"``, ``"encrypted"``, ``"corrupt"``, ``"no_pages"``, ``"no_text"``,
            ``"too_large"``, ``"over_limit"`` (parsing needed more memory or time than allowed).
        filename: the display name of the file (never a path).
    """

    KINDS = ("empty", "not_pdf", "encrypted", "corrupt", "no_pages", "no_text", "too_large", "over_limit")

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
        "empty": f"{name} is empty (0 bytes): the upload or copy may have been cut short; add it again.",
        "not_pdf": (f"{name} is not a PDF (no %PDF- header{detail}): export or print it to PDF and add that file."),
        "encrypted": (f"{name} is encrypted: remove the password (e.g. print to PDF) and add it again."),
        "corrupt": (
            f"{name} is damaged and cannot be read{detail}: download or export it again "
            "(or open and re-save it with a PDF viewer) and add the new file."
        ),
        "no_pages": f"{name} has no pages (a readable PDF with nothing in it): add the file that holds the document.",
        "no_text": (
            f"{name} has no extractable text{detail} (image-only/scanned PDF): run OCR first, "
            f"e.g. `ocrmypdf {name} ocr.pdf`, and add the result."
        ),
        "too_large": (f"{name} is too large ({detail}): split it into smaller PDFs or raise the size limit."),
        "over_limit": (
            f"{name} was not ingested: reading it {detail}. Its compressed content expands far beyond its "
            "file size (a damaged file or a decompression bomb). If it is a genuine document, split it, or "
            "raise ADAPTERLAB_PDF_MEMORY_MB / ADAPTERLAB_PDF_TIMEOUT_S."
        ),
    }
    return PDFError(kind, name, messages[kind])


def _read_source(source: bytes | bytearray | memoryview | str | os.PathLike, name: str, max_bytes: int) -> bytes:
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
    try:
        raw = _extract_pdfium(data, name, locked=locked)
    except (PDFError, MemoryError):
        raise
    except Exception as exc:  # PdfiumError (format/file error) or a failure on a page
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
    if not raw:  # a reader opened it and found no page: not damaged, empty (pdfium's own words: "PDFium: Success")
        raise _err("no_pages", name)
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


def _release_free_heap() -> None:
    """Give the pages of the C heap's free memory back (glibc ``malloc_trim``), so that reusing them
    shows in the resident memory the watchdog reads; silently nothing elsewhere (another libc)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _anon_rss_bytes(pid: int) -> int | None:
    """Resident anonymous memory of process ``pid`` (``RssAnon``); ``None`` when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its children (the parallel page reader), where the kernel lists them."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [pid, *(int(c) for c in fh.read().split())]
    except (OSError, ValueError):
        return [pid]


def _memory_watchdog(pid: int, baseline: int, limit_bytes: int) -> Callable[[], bool]:
    """A check for :func:`_read_frame`: true once a process of the reader's tree holds more than
    ``limit_bytes`` of resident anonymous memory beyond the reader's ``baseline``.

    ``RLIMIT_AS`` counts new mappings only. A child forked from a large process (the dashboard after
    an embedding or a training run) inherits that process's freed-but-mapped heap, and a parse that
    reuses it maps nothing new; the reader gives those pages back first (:func:`_release_free_heap`),
    so reusing them makes resident memory grow, which this reads."""

    def over() -> bool:
        for p in _process_tree(pid):
            rss = _anon_rss_bytes(p)
            if rss is not None and rss - baseline > limit_bytes:
                return True
        return False

    return over


def _sandbox_child(data: bytes, name: str, memory_limit_mb: float, time_limit_s: float, wfd: int) -> None:
    """In the forked child: give freed heap pages back, report its resident memory (``("ready", bytes)``, the
    parent's watchdog baseline), limit memory and CPU, parse, send the outcome down ``wfd``, exit.

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

        _release_free_heap()  # memory this process freed but kept mapped: reused, it would count nowhere
        _write_frame(wfd, ("ready", _anon_rss_bytes(os.getpid())))  # the parent's watchdog counts from here
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
        view = view[os.write(fd, view) :]


class _OverMemory(Exception):
    """The watchdog of :func:`_read_frame` fired."""


#: How often the parent reads the PDF reader's memory (seconds).
_WATCH_EVERY_S = 0.02


def _read_frame(fd: int, deadline: float, over_memory: Callable[[], bool] | None = None) -> bytes | None:
    """One length-prefixed message from ``fd``; ``None`` on EOF (the child died) or timeout
    (then ``time.monotonic() >= deadline``). While waiting, ``over_memory()`` is checked every
    :data:`_WATCH_EVERY_S`; :class:`_OverMemory` once it is true."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = bytearray()
    need, size = _HEADER.size, None
    while True:
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            wait = left if over_memory is None else min(left, _WATCH_EVERY_S)
            if not poller.poll(max(wait, 0.001) * 1000):
                if over_memory is not None and over_memory():
                    raise _OverMemory
                if over_memory is None:
                    return None
                continue
            chunk = os.read(fd, need - len(buf))  # never past this frame: the next one stays in the pipe
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
    over_memory = False
    deadline = time.monotonic() + time_limit_s
    try:
        try:
            os.setpgid(pid, pid)  # also here, so killpg works even before the child ran
        except OSError:
            pass
        first = _read_frame(rfd, deadline)  # ("ready", its memory): limits set, the parse starts
        if first is not None:
            baseline = _ready_baseline(first)
            watch = None if baseline is None else _memory_watchdog(pid, baseline, int(memory_limit_mb * 1024 * 1024))
            frame = _read_frame(rfd, deadline, watch)
    except _OverMemory:
        over_memory = True
    finally:
        os.close(rfd)
        timed_out = frame is None and not over_memory and time.monotonic() >= deadline
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
    if over_memory:
        raise _err("over_limit", name, f"needed more than {mem} of memory")
    if not isinstance(message, tuple) or not message:
        if timed_out or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU):
            raise _err("over_limit", name, f"took longer than {time_limit_s:g} s")
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit status {os.WEXITSTATUS(status)}"
        raise _err(
            "over_limit",
            name,
            f"stopped the PDF reader ({how}): the file needs more than {mem} of memory to read, or crashed the reader",
        )
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


def _ready_baseline(frame: bytes) -> int | None:
    """The resident anonymous memory the reader reported once started (its first message,
    ``("ready", bytes)``), or ``None`` (it could not read it: no watchdog then)."""
    try:
        message = marshal.loads(frame)
    except (EOFError, ValueError, TypeError):
        return None
    if type(message) is tuple and len(message) == 2 and message[0] == "ready" and type(message[1]) is int:
        return message[1]
    return None


def _text_chars(texts: Sequence[str], enough: int | None = None) -> int:
    """Non-space characters over all pages; stops counting once ``enough`` are found."""
    n = 0
    for t in texts:
        n += len("".join(t.split()))
        if enough is not None and n >= enough:
            break
    return n
