"""Questions in the workspace: running a generator over the chunks (resumable, saved per chunk)
and the question set (list, add, edit, delete, de-duplicate).

The pipeline step is (chunk) -> N questions about it, each question paired with the chunk it
came from; that pairing is the training signal, exactly as LlamaIndex's
``generate_qa_embedding_pairs`` builds it. The generators themselves (LLM, offline, prompt,
parsing) are in :mod:`core.generators`; datasets, their registry and splits in
:mod:`core.datasets`. Their names are re-exported here for code that imports them from
``core.questions``.

Example::

    ws = Workspace("./workspace")
    gen = LLMGenerator(LLMSettings(model="gpt-4o-mini"))      # or OfflineGenerator()
    report = generate_questions(ws, gen, questions_per_chunk=2)  # resumable, saved per chunk
    ds = build_dataset(ws)
    train, val = split_dataset(ds, by="chunk", val_fraction=0.2)
    save_dataset(ws, train, "lyft train", role="train")
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import random
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

# Moved to core.datasets and core.generators; re-exported for code that imports them from here.
from .datasets import (  # noqa: F401
    DATASET_ROLES,
    DatasetError,
    QADataset,
    build_dataset,
    delete_dataset,
    import_dataset,
    list_datasets,
    load_dataset,
    save_dataset,
    split_dataset,
)
from .generators import (  # noqa: F401
    DEFAULT_PROMPT_TEMPLATE,
    OFFLINE_LIMITS,
    OFFLINE_VERSION,
    PLACEHOLDERS,
    LLMGenerator,
    OfflineGenerator,
    QuestionGenerator,
    dedupe_questions,
    estimate_generation,
    fill_prompt,
    generation_key,
    normalize_question,
    parse_questions,
    question_similarity,
    validate_prompt_template,
)
from .keys import scrub
from .llm import LLMError, run_bounded
from .progress import Progress
from .workspace import Workspace

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# generation over the workspace
# ------------------------------------------------------------------------------------------------
class _AnyEvent:
    """Set when any of the given events is set (the user's cancel or our own stop)."""

    def __init__(self, *events: Any):
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)

    def wait(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not self.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.05, left))
        return True


def _select_chunks(ws: Workspace, doc_ids: Sequence[str] | None, chunk_ids: Sequence[str] | None) -> list[dict]:
    sql = "SELECT id, doc_id, idx, text FROM chunks"
    where, params = [], []
    if doc_ids is not None:
        where.append(f"doc_id IN ({','.join('?' * len(doc_ids))})" if doc_ids else "0")
        params.extend(doc_ids)
    if chunk_ids is not None:
        where.append(f"id IN ({','.join('?' * len(chunk_ids))})" if chunk_ids else "0")
        params.extend(chunk_ids)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY doc_id, idx"
    return ws.query(sql, tuple(params))


def _save_chunk_questions(
    ws: Workspace, chunk_id: str, questions: Sequence[str], gen_key: str, n: int, source: str, threshold: float
) -> int:
    """Store one chunk's new questions and mark it done, in one transaction. Returns how many were added."""
    cleaned = [re.sub(r"\s+", " ", q).strip() for q in questions if q and str(q).strip()]
    with ws.db() as con:
        existing = [
            r[0] for r in con.execute("SELECT text FROM questions WHERE chunk_id=? ORDER BY created_at", (chunk_id,))
        ]
        keep = dedupe_questions(existing + cleaned, threshold)
        new = [cleaned[i - len(existing)] for i in keep if i >= len(existing)][:n]
        now = time.time()
        con.executemany(
            "INSERT INTO questions(id, chunk_id, text, source, created_at) VALUES (?, ?, ?, ?, ?)",
            [(uuid.uuid4().hex, chunk_id, q, source, now + k * 1e-6) for k, q in enumerate(new)],
        )
        con.execute(
            "INSERT OR REPLACE INTO generation_done(gen_key, chunk_id, n_questions, done_at) VALUES (?, ?, ?, ?)",
            (gen_key, chunk_id, len(new), now),
        )
    return len(new)


T = TypeVar("T")


def sample_chunk_ids(chunk_ids: Sequence[T], n: int | None, seed: int = 0) -> list[T]:
    """A seeded random sample of ``n`` of ``chunk_ids``, kept in their order (all of them when ``n`` is
    ``None``, 0 or at least their count): spread over every document, the same for the same seed, so a
    rerun resumes the same chunks. For a quick evaluation set from a long filing, or a cap on LLM calls.
    Any sequence samples the same way (:mod:`core.distill` passes row numbers)."""
    ids = list(chunk_ids)
    if not n or n >= len(ids):
        return ids
    if n < 0:
        raise ValueError(f"the sample size must be positive, got {n}.")
    keep = set(random.Random(seed).sample(range(len(ids)), n))
    return [c for i, c in enumerate(ids) if i in keep]


def sampled_chunk_ids(ws: Workspace, doc_ids: Sequence[str] | None, n: int | None, seed: int = 0) -> list[str] | None:
    """The chunk ids a generation over ``doc_ids`` (``None``: every document) asks about when limited to a
    sample of ``n`` (:func:`sample_chunk_ids`); ``None`` (every chunk) when ``n`` is ``None``, 0, or not
    below the number of chunks."""
    if not n:
        return None
    ids = [c["id"] for c in _select_chunks(ws, doc_ids, None)]
    return None if n >= len(ids) else sample_chunk_ids(ids, n, seed)


def pending_chunks(
    ws: Workspace,
    generator: QuestionGenerator,
    questions_per_chunk: int,
    doc_ids: Sequence[str] | None = None,
    chunk_ids: Sequence[str] | None = None,
) -> list[dict]:
    """The chunks a :func:`generate_questions` run with these settings would still call the
    generator for (the rest are done under the same generation key): what an estimate counts."""
    key = generation_key(generator, questions_per_chunk)
    done_ids = {r["chunk_id"] for r in ws.query("SELECT chunk_id FROM generation_done WHERE gen_key=?", (key,))}
    return [c for c in _select_chunks(ws, doc_ids, chunk_ids) if c["id"] not in done_ids]


def generate_questions(
    ws: Workspace,
    generator: QuestionGenerator,
    questions_per_chunk: int = 2,
    doc_ids: Sequence[str] | None = None,
    chunk_ids: Sequence[str] | None = None,
    progress: Progress | None = None,
    cancel: Any = None,
    concurrency: int | None = None,
    dedupe_threshold: float = 0.85,
    max_consecutive_failures: int = 5,
) -> dict[str, Any]:
    """Generate questions for every chunk not yet done under this generation key, saving each chunk at once.

    Each finished chunk's questions and its ``generation_done`` row are written in one
    transaction, so a crash, a cancel or a kill loses nothing and a rerun resumes without
    repeating a call. Questions near-duplicating each other or the chunk's existing
    questions are dropped. LLM chunks run ``concurrency`` (default: the generator's) at a
    time. A chunk that fails after its retries is listed in ``failures`` and not marked done, except one the
    model answered without a usable question in a run where it wrote questions for other chunks: that chunk is
    done with none (``chunks_without_questions``), so a rerun does not ask it again.
    After ``max_consecutive_failures`` failures in a row (or one rejected key, or a server that cannot be reached
    at all: a connection error before any chunk of the run succeeded) generation stops with an :class:`LLMError`
    whose ``report`` attribute holds the report so far.

    ``progress(handled, total, message)`` is called after each chunk, failed ones included; the message says how
    many are done and how many failed so far (``"90 of 120 chunks done · 30 failed"``, then the error of a chunk
    that just failed). ``cancel`` is a ``threading.Event``: once set, no new chunk starts (those in flight are still
    saved).

    Returns ``{"gen_key", "chunks_total", "chunks_done_before", "chunks_done_now",
    "questions_added", "chunks_without_questions", "failures": [{"chunk_id", "error"}], "cancelled", "chunks_left",
    "model_requested", "answered_by", "questions_per_chunk", "questions_asked", "questions_written",
    "chunks_with_fewer_questions", "duplicates_dropped", "answers_cut"}``
    (``chunks_without_questions``: chunks done now that got none: nothing to ask, or every question a duplicate;
    ``questions_asked``: ``questions_per_chunk`` for each chunk done now, beside ``questions_written`` (by the
    generator) and ``questions_added``; ``chunks_with_fewer_questions``: chunks done now that got fewer than asked
    (they stay done: asking again would pile up duplicates), ``duplicates_dropped`` the questions written but
    dropped as near-duplicates (of each other or of the chunk's questions already there), ``answers_cut`` the LLM
    answers cut at their length limit (``max_tokens``; the questions they completed are kept); say them with
    :func:`shortfall_text`;
    ``chunks_left``: chunks of this run neither done nor failed (never started after a stop or a fatal error);
    ``cancelled``: ``cancel`` was set *and* it left chunks undone (a stop pressed after every chunk was sent
    lets those in flight finish: then nothing is left, and the run is not reported cancelled);
    ``model_requested``: an LLM generator's model name as typed, else ``None``; ``answered_by``: the models the
    server said wrote this run's questions, most chunks first, a file path shown as its file name: say them with
    :func:`answered_by_text`). The models that answered are also recorded for the generation key
    (:func:`core.provenance.record_generator`), so evaluation sets name them.
    """
    n = int(questions_per_chunk)
    if n < 1:
        raise ValueError(f"questions_per_chunk must be at least 1, got {questions_per_chunk}.")
    chunks = _select_chunks(ws, doc_ids, chunk_ids)
    key = generation_key(generator, n)
    done_ids = {r["chunk_id"] for r in ws.query("SELECT chunk_id FROM generation_done WHERE gen_key=?", (key,))}
    todo = [c for c in chunks if c["id"] not in done_ids]
    report: dict[str, Any] = {
        "gen_key": key,
        "chunks_total": len(chunks),
        "chunks_done_before": len(chunks) - len(todo),
        "chunks_done_now": 0,
        "questions_added": 0,
        "chunks_without_questions": 0,
        # asked for vs. made: a model may write fewer than asked, and repeats are dropped (see shortfall_text)
        "questions_per_chunk": n,
        "questions_asked": 0,
        "questions_written": 0,
        "chunks_with_fewer_questions": 0,
        "duplicates_dropped": 0,
        "answers_cut": 0,  # LLM answers cut at max_tokens (their complete questions kept)
        "failures": [],
        "cancelled": False,
        "chunks_left": 0,
        # the model name typed (LLM generators) and the models the server said answered, as shown: a local server
        # answers whatever name it is sent (see answered_by_text)
        "model_requested": getattr(generator, "model", None) if getattr(generator, "kind", None) == "llm" else None,
        "answered_by": [],
    }
    if not todo:
        if progress:
            progress(len(chunks), len(chunks), "all chunks already have questions")
        return report
    if progress and report["chunks_done_before"]:  # a resumed run starts where the last one stopped, not at 0%
        progress(report["chunks_done_before"], len(chunks), f"{report['chunks_done_before']} of {len(chunks)} chunks "
                 "already done; asking the others")  # fmt: skip
    if getattr(generator, "needs_fit", False) and hasattr(generator, "fit"):
        generator.fit(_distinct_documents_text(ws))
    source = getattr(generator, "kind", "llm")
    if source not in ("llm", "offline"):
        source = "llm"
    if concurrency is None:
        concurrency = int(getattr(generator, "concurrency", 1) or 1)
    try:
        takes_cancel = "cancel" in inspect.signature(generator.generate).parameters
    except (TypeError, ValueError):
        takes_cancel = False

    stop = threading.Event()
    token = _AnyEvent(cancel, stop)
    state: dict[str, Any] = {
        "consecutive": 0,
        "last": None,
        "fatal": None,
        "why": "",
        "handled": 0,
        "no_question": [],
        "answered_by": {},  # model the server named -> chunks it answered
    }

    def work(chunk: dict) -> list[str]:
        if takes_cancel:
            return generator.generate(chunk["text"], n, cancel=token)
        return generator.generate(chunk["text"], n)

    def unreachable(err: LLMError) -> bool:
        """A connection error while no chunk of this run has succeeded and the server never answered the client.
        Once it has answered, a connection error is a server restarting mid-run: retried, counted as a failure."""
        return err.kind == "connection" and not report["chunks_done_now"] and err.never_answered

    def on_result(i: int, res: Any) -> None:
        chunk = todo[i]
        if isinstance(res, BaseException):
            if isinstance(res, LLMError) and res.kind == "cancelled":
                return
            report["failures"].append({"chunk_id": chunk["id"], "error": scrub(res)})
            if isinstance(res, LLMError) and res.kind == "bad_response":
                state["no_question"].append(chunk["id"])
            state["consecutive"] += 1
            state["last"] = res
            if isinstance(res, LLMError) and res.kind in ("auth", "bad_request"):
                state["fatal"], state["why"] = res, "the server rejected the request"
                stop.set()
            elif isinstance(res, LLMError) and unreachable(res):
                # the server was never reached (down, or a wrong base URL): the other chunks would only wait the
                # same retries out, minutes for nothing
                state["fatal"], state["why"] = res, "the server could not be reached"
                stop.set()
            elif state["consecutive"] >= max_consecutive_failures:
                state["fatal"], state["why"] = res, f"{state['consecutive']} chunks in a row failed"
                stop.set()
            log.warning("questions: chunk %s failed: %s", chunk["id"], res)
        else:
            model = getattr(res, "model", None)
            if model:
                state["answered_by"][model] = state["answered_by"].get(model, 0) + 1
            written = list(res or [])
            added = _save_chunk_questions(ws, chunk["id"], written, key, n, source, dedupe_threshold)
            report["chunks_done_now"] += 1
            report["questions_added"] += added
            report["chunks_without_questions"] += not added
            report["questions_asked"] += n
            report["questions_written"] += min(len(written), n)
            report["chunks_with_fewer_questions"] += added < n
            report["duplicates_dropped"] += max(0, min(len(written), n) - added)
            report["answers_cut"] += bool(getattr(res, "truncated", False))
            state["consecutive"] = 0
        state["handled"] += 1
        if progress:
            # the bar moves with every chunk handled, so the message says how many of them failed: counts first
            # (a narrow bar cuts the end), then what this chunk's failure was
            failed = len(report["failures"])
            msg = f"{report['chunks_done_before'] + report['chunks_done_now']} of {len(chunks)} chunks done" + (
                f" · {failed} failed" if failed else ""
            )
            if isinstance(res, BaseException):
                msg += f" · chunk {chunk['idx']} of {chunk['doc_id'][:12]}: {scrub(res)}"
            progress(report["chunks_done_before"] + state["handled"], len(chunks), msg)

    run_bounded(work, todo, concurrency, on_result, token)
    # chunks never started, or stopped in a retry's wait: what a rerun goes on with. A stop pressed once every chunk
    # was sent (the requests in flight finish) left nothing, and is no stop to tell of.
    report["chunks_left"] = len(todo) - state["handled"]
    report["cancelled"] = bool(cancel is not None and cancel.is_set() and report["chunks_left"])
    report["answered_by"] = sorted(state["answered_by"], key=lambda m: -state["answered_by"][m])
    if report["answered_by"]:  # provenance names the model that wrote the questions, not only the name typed
        from .provenance import record_generator

        record_generator(ws, generator, n, answered_by=report["answered_by"])
    fatal = state["fatal"]
    if fatal is None and report["chunks_done_now"] and state["no_question"]:
        # The model answered these chunks twice without a question (a table, a contents page) while it wrote
        # questions for others, so the chunk, not the model, is the cause: done with none, not retried at every
        # rerun. With no chunk answered they stay failures (the model or the prompt is the likelier cause).
        unanswered = set(state["no_question"])
        for chunk_id in state["no_question"]:
            _save_chunk_questions(ws, chunk_id, [], key, n, source, dedupe_threshold)
        report["failures"] = [f for f in report["failures"] if f["chunk_id"] not in unanswered]
        report["chunks_done_now"] += len(unanswered)
        report["chunks_without_questions"] += len(unanswered)
        report["questions_asked"] += n * len(unanswered)
        report["chunks_with_fewer_questions"] += len(unanswered)
    if fatal is not None:
        msg = (
            f"Stopped generating questions: {state['why']}. {report['chunks_done_now']} chunk(s) were saved in this run; "
            f"fix the problem and run again to resume (finished chunks are not repeated). Last error: {scrub(fatal)}"
        )
        err: Exception
        if isinstance(fatal, LLMError):
            err = LLMError(msg, kind=fatal.kind, status=fatal.status)
        else:
            err = RuntimeError(msg)
        err.report = report  # type: ignore[attr-defined]
        raise err
    return report


def _distinct_documents_text(ws: Workspace) -> list[str]:
    """Every chunk's text, document by document in order, each document's text once: an offline generator learns
    from it which sentences repeat across the corpus (boilerplate it skips), and a second copy of a document (a
    re-saved PDF: other bytes, the same text) would make every sentence of it repeat, leaving no question."""
    by_doc: dict[str, list[str]] = {}
    for r in ws.query("SELECT doc_id, text FROM chunks ORDER BY doc_id, idx"):
        by_doc.setdefault(r["doc_id"], []).append(r["text"])
    seen: set[str] = set()
    out: list[str] = []
    for texts in by_doc.values():
        key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
        if key not in seen:
            seen.add(key)
            out += texts
    return out


def answered_by_text(report: dict) -> str | None:
    """Which model wrote a run's questions, in words, or ``None`` when the server named none (or nothing was
    answered): ``"answered by SmolLM2-135M-Instruct.Q4_1.gguf (you asked for gpt-4o-mini)"`` where the server
    answered with another model than the name typed (a local server answers any name), ``"answered by
    gpt-4o-mini-2024-07-18"`` for the dated version of the name typed, ``"answered by gpt-4o-mini"``."""
    models = [m for m in report.get("answered_by") or [] if m]
    if not models:
        return None
    asked = report.get("model_requested")
    text = "answered by " + ", ".join(models)
    if asked and any(m != asked and not m.startswith(f"{asked}-") for m in models):
        text += f" (you asked for {asked})"
    return text


def shortfall_text(report: dict) -> str | None:
    """Fewer questions than asked for, in words, or ``None`` when every chunk done got all it was asked for:
    ``"12 of the 80 questions asked for were made: 4 of 4 chunks got fewer than 20 (the model wrote 13; 1
    repeated a question and was dropped). They count as done with these settings."``"""
    short = int(report.get("chunks_with_fewer_questions") or 0)
    if not short:
        return None
    asked, written = int(report.get("questions_asked") or 0), int(report.get("questions_written") or 0)
    dup = int(report.get("duplicates_dropped") or 0)
    why = []
    if written < asked:
        why.append(f"{'the model' if report.get('model_requested') else 'the generator'} wrote {written}")
    if cut := int(report.get("answers_cut") or 0):
        why.append(f"{cut} answer{'s were' if cut != 1 else ' was'} cut at the length limit")
    if dup:
        why.append(f"{dup} repeated a question and {'was' if dup == 1 else 'were'} dropped")
    done = int(report.get("chunks_done_now") or 0)
    return (
        f"{report.get('questions_added', 0)} of the {asked} questions asked for were made: {short} of {done} "
        f"chunk{'s' * (done != 1)} got fewer than {report.get('questions_per_chunk')}"
        + (f" ({'; '.join(why)})" if why else "")
        + ". They count as done with these settings."
    )


def nothing_generated(report: dict) -> bool:
    """Whether a generation run ended with every chunk it tried failed (and was not cancelled): fewer
    chunks than ``max_consecutive_failures`` fail without raising, and such a run must not read as done."""
    return bool(report.get("failures")) and not report.get("chunks_done_now") and not report.get("cancelled")


# ------------------------------------------------------------------------------------------------
# the question set
# ------------------------------------------------------------------------------------------------
PREVIEW_CHARS = 160


def list_questions(
    ws: Workspace, search: str | None = None, doc_id: str | None = None, limit: int | None = None
) -> list[dict]:
    """Questions with their chunk and document: id, text, chunk_id, chunk_preview, doc_id,
    filename, page_start, page_end, source, created_at. ``search`` matches the question text
    (case-insensitive substring)."""
    sql = (
        "SELECT q.id, q.text, q.chunk_id, substr(c.text, 1, ?) AS chunk_preview, c.doc_id, d.filename, "
        "c.page_start, c.page_end, c.idx AS chunk_idx, q.source, q.created_at "
        "FROM questions q LEFT JOIN chunks c ON c.id = q.chunk_id LEFT JOIN documents d ON d.id = c.doc_id"
    )
    where: list[str] = []
    params: list[Any] = [PREVIEW_CHARS]
    if search:
        esc = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("q.text LIKE ? ESCAPE '\\'")
        params.append(f"%{esc}%")
    if doc_id is not None:
        where.append("c.doc_id = ?")
        params.append(doc_id)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY d.filename, c.doc_id, c.idx, q.created_at"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return ws.query(sql, tuple(params))


def add_question(ws: Workspace, chunk_id: str, text: str, source: str = "manual") -> str:
    """Add a question about ``chunk_id``; returns its id."""
    text = re.sub(r"\s+", " ", str(text or "")).strip()
    if not text:
        raise ValueError("A question cannot be empty.")
    with ws.db() as con:
        if con.execute("SELECT 1 FROM chunks WHERE id=?", (chunk_id,)).fetchone() is None:
            raise ValueError(f"No chunk {chunk_id!r} in this workspace.")
        qid = uuid.uuid4().hex
        con.execute(
            "INSERT INTO questions(id, chunk_id, text, source, created_at) VALUES (?, ?, ?, ?, ?)",
            (qid, chunk_id, text, source, time.time()),
        )
    return qid


def update_question(ws: Workspace, qid: str, text: str) -> None:
    """Replace a question's text."""
    text = re.sub(r"\s+", " ", str(text or "")).strip()
    if not text:
        raise ValueError("A question cannot be empty; delete it instead.")
    with ws.db() as con:
        cur = con.execute("UPDATE questions SET text=? WHERE id=?", (text, qid))
        if cur.rowcount == 0:
            raise ValueError(f"No question {qid!r} in this workspace.")


def delete_questions(ws: Workspace, ids: Iterable[str]) -> int:
    """Delete questions by id; returns how many were deleted."""
    ids = list(ids)
    if not ids:
        return 0
    with ws.db() as con:
        total = 0
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            total += con.execute(f"DELETE FROM questions WHERE id IN ({','.join('?' * len(part))})", part).rowcount
    return total


def dedupe_workspace_questions(ws: Workspace, threshold: float = 0.85, within_chunk: bool = False) -> int:
    """Delete near-duplicate questions (keeping the oldest); returns how many were removed.

    By default across the whole workspace (a question asked twice about two chunks is a
    contradictory training pair); ``within_chunk=True`` only compares questions of one chunk.
    """
    rows = ws.query("SELECT id, chunk_id, text FROM questions ORDER BY created_at, id")
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["chunk_id"] if within_chunk else ""].append(r)
    drop: list[str] = []
    for group in groups.values():
        keep = set(dedupe_questions([r["text"] for r in group], threshold))
        drop.extend(r["id"] for i, r in enumerate(group) if i not in keep)
    return delete_questions(ws, drop)


def question_source_counts(ws: Workspace) -> dict[str, int]:
    """How many questions each generator made: ``{"llm": 120, "offline": 40, ...}``."""
    rows = ws.query("SELECT source, COUNT(*) AS n FROM questions GROUP BY source ORDER BY source")
    return {r["source"]: int(r["n"]) for r in rows}
