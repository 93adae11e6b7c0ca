"""Import real user queries as an evaluation set: the best evidence that an adapter helps.

The input is a CSV file with a header row. Column ``query`` (or ``question``) holds what a user
searched; each row then says where the answer is, in one of two ways:

- ``relevant_text`` (or ``text``, ``answer``, ``passage``): a passage of the document. It is
  matched to chunks by exact substring (case and spacing ignored), else by word overlap
  (at least ``min_overlap`` of its words in one chunk, or in two consecutive chunks when the
  passage straddles a boundary), else by embedding similarity (cosine at least
  ``min_cosine``) when an embedder is given. A passage found in more than ``MAX_TEXT_MATCHES``
  chunks (a name, a number, a stock phrase) does not locate the answer, and marking every such
  chunk relevant would make the query a near-certain hit, so the row is left unmatched;
- ``page`` with ``document`` (file name; optional when the workspace holds one document): every
  chunk of that page is relevant.

Rows that cannot be matched are listed with the reason, never guessed. The evaluation corpus
is every chunk of the workspace's documents (or of ``doc_ids``), so retrieval is measured over
what users will search. Query ids start with ``imported-`` and the dataset's registry entry
records the source ``imported``, so reports say where the questions came from. The queries are
*not* added to the workspace's questions table: they are for evaluation only and must never
leak into a training split.

Example::

    ds, report = import_real_queries(ws, Path("queries.csv").read_bytes(), embedder=emb)
    print(report.summary())          # "38 of 40 rows matched (30 exact text, 6 page, 2 word overlap); 2 not matched"
    dataset_id = save_real_queries(ws, ds, "support tickets (real)", report)

CLI: ``python -m core import-queries queries.csv --out eval.json [--save NAME]``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .datasets import DatasetError, QADataset
from .provenance import IMPORTED_PREFIX, IMPORTED_SOURCE
from .workspace import Workspace

if TYPE_CHECKING:
    from .embedders import Embedder

QUERY_COLUMNS = ("query", "question", "queries", "search")
TEXT_COLUMNS = ("relevant_text", "relevant", "text", "answer", "passage", "relevant_passage", "context")
PAGE_COLUMNS = ("page", "page_number", "page_no", "pages")
DOCUMENT_COLUMNS = ("document", "doc", "file", "filename", "file_name", "source")
MIN_OVERLAP = 0.85
MIN_COSINE = 0.75
MAX_TEXT_MATCHES = 3  # a passage found in more chunks than this does not say where the answer is
MAX_BYTES = 20 * 1024 * 1024


@dataclass
class QueryImportReport:
    rows: int = 0
    matched: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    unmatched: list[dict[str, Any]] = field(default_factory=list)  # {"row": line number, "query", "reason"}
    merged: int = 0  # rows whose query repeated an earlier one (their chunks were added to it)

    def summary(self) -> str:
        how = ", ".join(f"{n} {m}" for m, n in sorted(self.by_method.items(), key=lambda kv: -kv[1]))
        text = f"{self.matched} of {self.rows} rows matched" + (f" ({how})" if how else "")
        if self.unmatched:
            text += f"; {len(self.unmatched)} not matched"
        if self.merged:
            text += f"; {self.merged} repeated queries merged"
        return text


def _col(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _norm(text: str) -> str:
    s = unicodedata.normalize("NFKC", str(text)).lower()
    s = s.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    s = re.sub(r"[\u2010-\u2015]", "-", s)
    return re.sub(r"\s+", " ", s).strip().strip("\"'\u2026. ")


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", _norm(text)))


def parse_queries_csv(data: bytes | str, source: str = "CSV file") -> list[dict[str, Any]]:
    """Rows ``{"row", "query", "text", "page", "document"}`` from the CSV (header row required)."""
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise DatasetError(f"{source}: larger than {MAX_BYTES // 2**20} MB; split it.")
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{source}: not UTF-8 text ({exc.reason}). Save the CSV as UTF-8.") from exc
    if not data.strip():
        raise DatasetError(f"{source}: the file is empty.")
    try:
        dialect = csv.Sniffer().sniff(data[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(data), dialect)
    header = next(reader, None) or []
    cols = [_col(h) for h in header]

    def find(options: Sequence[str]) -> int | None:
        return next((cols.index(o) for o in options if o in cols), None)

    qi, ti, pi, di = find(QUERY_COLUMNS), find(TEXT_COLUMNS), find(PAGE_COLUMNS), find(DOCUMENT_COLUMNS)
    if qi is None:
        raise DatasetError(
            f"{source}: no 'query' column (found: {', '.join(header) or 'no header'}). "
            "Expected columns: query, and relevant_text or page (with document)."
        )
    if ti is None and pi is None:
        raise DatasetError(
            f"{source}: a 'relevant_text' or a 'page' column is needed besides 'query' (found: {', '.join(header)})."
        )
    rows = []
    for line_no, rec in enumerate(reader, start=2):
        if not any(c.strip() for c in rec):
            continue

        def cell(i: int | None, rec: list[str] = rec) -> str:
            return rec[i].strip() if i is not None and i < len(rec) else ""

        rows.append(
            {
                "row": line_no,
                "query": re.sub(r"\s+", " ", cell(qi)),
                "text": cell(ti),
                "page": cell(pi),
                "document": cell(di),
            }
        )
    if not rows:
        raise DatasetError(f"{source}: the file has a header but no rows.")
    return rows


def _workspace_chunks(ws: Workspace, doc_ids: Sequence[str] | None) -> list[dict[str, Any]]:
    sql = (
        "SELECT c.id, c.doc_id, c.idx, c.text, c.page_start, c.page_end, d.filename, d.pages "
        "FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE d.status = 'ok'"
    )
    params: tuple = ()
    if doc_ids:
        sql += f" AND c.doc_id IN ({','.join('?' * len(doc_ids))})"
        params = tuple(doc_ids)
    return ws.query(sql + " ORDER BY d.filename, c.doc_id, c.idx", params)


def _resolve_document(value: str, docs: dict[str, dict[str, Any]]) -> tuple[str | None, str | None]:
    """(doc id, reason when not found) for a document cell: file name (with or without extension,
    any case) or an id prefix; empty is fine when there is one document."""
    if not value:
        if len(docs) == 1:
            return next(iter(docs)), None
        return None, f"no document named, and the workspace has {len(docs)}: add a 'document' column"
    v = value.strip().lower().replace("\\", "/").rsplit("/", 1)[-1]
    for did, d in docs.items():
        name = (d["filename"] or "").lower()
        if v in (name, name.rsplit(".", 1)[0]) or (len(v) >= 6 and did.startswith(v)):
            return did, None
    return None, f"document {value!r} is not in the workspace"


def _page_number(value: str) -> int | None:
    """The first number in a page cell ("12", "p. 12", "12-13"); None for none, or a page below 1 ("-2", "0")."""
    m = re.search(r"-?\d+", value or "")
    return int(m.group()) if m and int(m.group()) >= 1 else None


def import_real_queries(
    ws: Workspace,
    data: bytes | str,
    embedder: Embedder | str | None = None,
    doc_ids: Sequence[str] | None = None,
    min_overlap: float = MIN_OVERLAP,
    min_cosine: float = MIN_COSINE,
    source: str = "CSV file",
) -> tuple[QADataset, QueryImportReport]:
    """The CSV's queries matched to the workspace's chunks, as an evaluation :class:`QADataset`.

    ``embedder``: an embedder, or a spec (``"default"``) resolved through the workspace's cache;
    None matches text without embeddings. Raises :class:`DatasetError` when the file cannot be
    read or no row could be matched.
    """
    if not (0 < min_overlap <= 1 and 0 < min_cosine <= 1):  # a cosine of -3 matched "Paris" to a 10-K chunk
        raise ValueError(
            f"min_overlap and min_cosine must be above 0 and at most 1, got {min_overlap:g} and {min_cosine:g}"
        )
    rows = parse_queries_csv(data, source)
    if isinstance(embedder, str):
        from .embedders import resolve_embedder

        embedder = resolve_embedder(embedder, workspace=ws)
    chunks = _workspace_chunks(ws, doc_ids)
    if not chunks:
        raise DatasetError("The workspace has no chunks: ingest the documents these queries are about first.")
    docs = {c["doc_id"]: {"filename": c["filename"], "pages": c["pages"]} for c in chunks}
    normed = [_norm(c["text"]) for c in chunks]
    words = [_words(c["text"]) for c in chunks]
    by_doc: dict[str, list[int]] = {}
    for i, c in enumerate(chunks):
        by_doc.setdefault(c["doc_id"], []).append(i)
    chunk_vecs = None
    report = QueryImportReport(rows=len(rows))
    queries: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    seen: dict[str, str] = {}

    def too_many(hits: list[int], how: str) -> str:
        return (
            f"the relevant text {how} {len(hits):,} chunks, too many to say where the answer is (at most "
            f"{MAX_TEXT_MATCHES}): give a longer passage from the answer's chunk, or its page and document"
        )

    def match_text(text: str, pool: list[int]) -> tuple[list[int], str, str]:
        nonlocal chunk_vecs
        t = _norm(text)
        hits = [i for i in pool if t and t in normed[i]]
        if hits:
            return (hits, "exact text", "") if len(hits) <= MAX_TEXT_MATCHES else ([], "", too_many(hits, "is in"))
        tw = _words(text)
        best_score, best = 0.0, []
        if len(tw) >= 3:
            scores = [(len(tw & words[i]) / len(tw), i) for i in pool]
            best_score = max(s for s, _ in scores)
            if best_score >= min_overlap:
                hits = [i for s, i in scores if s >= best_score - 1e-9]
                if len(hits) > MAX_TEXT_MATCHES:
                    return [], "", too_many(hits, "matches the words of")
                return hits, "word overlap", ""
            for a, b in zip(pool, pool[1:]):  # a passage across a chunk boundary
                if chunks[a]["doc_id"] == chunks[b]["doc_id"]:
                    s = len(tw & (words[a] | words[b])) / len(tw)
                    if s >= min_overlap and s > best_score:
                        best_score, best = s, [a, b]
            if best:
                return best, "word overlap", ""
        reason = f"no chunk contains this text (best word overlap {best_score:.0%}, below {min_overlap:.0%})"
        if embedder is not None:
            if chunk_vecs is None:
                chunk_vecs = np.asarray(embedder.embed_texts([c["text"] for c in chunks]), dtype=np.float32)
                chunk_vecs /= np.maximum(np.linalg.norm(chunk_vecs, axis=1, keepdims=True), 1e-12)
            v = np.asarray(embedder.embed_texts([text]), dtype=np.float32)[0]
            v /= max(float(np.linalg.norm(v)), 1e-12)
            sims = chunk_vecs[pool] @ v
            j = int(sims.argmax())
            if sims[j] >= min_cosine:
                return [pool[j]], "embedding similarity", ""
            reason += f"; closest chunk by meaning only at cosine {float(sims[j]):.2f} (below {min_cosine:.2f})"
        return [], "", reason

    for r in rows:
        if not r["query"]:
            report.unmatched.append({"row": r["row"], "query": "", "reason": "empty query"})
            continue
        pool = list(range(len(chunks)))
        doc_id = None
        if r["document"] or (r["page"] and not r["text"]):
            doc_id, why = _resolve_document(r["document"], docs)
            if doc_id is None:
                report.unmatched.append({"row": r["row"], "query": r["query"], "reason": why})
                continue
            pool = by_doc[doc_id]
        hits: list[int] = []
        method, reason = "", ""
        if r["text"]:
            hits, method, reason = match_text(r["text"], pool)
        if not hits and r["page"]:
            page = _page_number(r["page"])
            if page is None:
                reason = (reason + "; " if reason else "") + f"page {r['page']!r} is not a page number (1 or more)"
            else:
                doc_id = doc_id or _resolve_document("", docs)[0]
                if doc_id is None:
                    reason = (reason + "; " if reason else "") + "a page needs a document: add a 'document' column"
                else:
                    hits = [i for i in by_doc[doc_id] if chunks[i]["page_start"] <= page <= chunks[i]["page_end"]]
                    method = "page"
                    if not hits:
                        d = docs[doc_id]
                        reason = (reason + "; " if reason else "") + (
                            f"no chunk on page {page} of {d['filename']} ({d['pages']} pages)"
                        )
        if not hits:
            report.unmatched.append(
                {"row": r["row"], "query": r["query"], "reason": reason or "no relevant text or page given"}
            )
            continue
        ids = [chunks[i]["id"] for i in hits]
        key = _norm(r["query"])
        if key in seen:
            qid = seen[key]
            relevant[qid] = list(dict.fromkeys(relevant[qid] + ids))
            report.merged += 1
        else:
            qid = f"{IMPORTED_PREFIX}{r['row']:05d}-{hashlib.sha1(r['query'].encode('utf-8')).hexdigest()[:8]}"
            seen[key] = qid
            queries[qid] = r["query"]
            relevant[qid] = ids
        report.matched += 1
        report.by_method[method] = report.by_method.get(method, 0) + 1
    if not queries:
        first = report.unmatched[0] if report.unmatched else {"row": "-", "reason": "no rows"}
        raise DatasetError(f"{source}: no query could be matched to a chunk (row {first['row']}: {first['reason']}).")
    corpus = {c["id"]: c["text"] for c in chunks}
    node_meta = {
        c["id"]: {
            "doc_id": c["doc_id"],
            "filename": c["filename"],
            "page_start": c["page_start"],
            "page_end": c["page_end"],
        }
        for c in chunks
    }
    ds = QADataset(queries, corpus, relevant, "text", node_meta)
    ds.validate(source)
    return ds, report


def save_real_queries(ws: Workspace, ds: QADataset, name: str, report: QueryImportReport | None = None) -> str:
    """Register the imported queries as an evaluation set whose questions' source is ``imported``."""
    import json

    from .datasets import save_dataset

    did = save_dataset(ws, ds, name, role="eval")
    row = ws.query("SELECT meta FROM datasets WHERE id=?", (did,))[0]
    meta = json.loads(row["meta"] or "{}")
    meta["sources"] = {IMPORTED_SOURCE: len(ds.queries)}
    if report is not None:
        meta["import"] = {
            "rows": report.rows,
            "matched": report.matched,
            "by_method": report.by_method,
            "unmatched": len(report.unmatched),
        }
    with ws.db() as con:
        con.execute("UPDATE datasets SET meta=? WHERE id=?", (json.dumps(meta), did))
    return did
