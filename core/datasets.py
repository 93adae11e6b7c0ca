"""Question/chunk datasets: the type (LlamaIndex ``EmbeddingQAFinetuneDataset`` compatible), building
one from the workspace's questions, splitting it, and the workspace's dataset registry.

The JSON file is ``{"queries": {qid: text}, "corpus": {node_id: text},
"relevant_docs": {qid: [node_id, ...]}, "mode": "text"}``. :meth:`QADataset.load` reads any
file LlamaIndex wrote and :meth:`QADataset.save` writes one LlamaIndex reads.

Example::

    ds = QADataset.load("lyft_2021_train_dataset.json")
    print(len(ds.queries), len(ds.corpus))
    ds.save("copy.json")
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .workspace import Workspace, atomic_write_json, new_id


class DatasetError(ValueError):
    """A dataset file that cannot be used, with a message naming the file and the problem."""


# json.loads recurses once per nesting level: a file of 100,000 '[' ends in RecursionError.
_TOO_DEEP = (
    "its JSON is nested too deeply to be a dataset. A LlamaIndex dataset is an object holding "
    "'queries', 'corpus' and 'relevant_docs'."
)


@dataclass(slots=True)
class QADataset:
    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]
    mode: str = "text"
    # Optional per-node metadata (source file, pages); not part of the LlamaIndex format and
    # never written into the JSON.
    node_meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -- construction & validation ------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "dataset") -> QADataset:
        if not isinstance(data, dict):
            raise DatasetError(
                f"{source}: expected a JSON object with 'queries', 'corpus' and 'relevant_docs', "
                f"got {type(data).__name__}. Is this a LlamaIndex EmbeddingQAFinetuneDataset file?"
            )
        missing = [k for k in ("queries", "corpus", "relevant_docs") if k not in data]
        if missing:
            raise DatasetError(
                f"{source}: missing key(s) {', '.join(missing)}. A LlamaIndex dataset has "
                "'queries', 'corpus' and 'relevant_docs'."
            )
        for key in ("queries", "corpus", "relevant_docs"):
            if not isinstance(data[key], dict):
                raise DatasetError(
                    f"{source}: '{key}' must be an object (id -> value), got {type(data[key]).__name__}."
                )
        queries = {str(k): v for k, v in data["queries"].items()}
        corpus = {str(k): v for k, v in data["corpus"].items()}
        for kind, mapping in (("query", queries), ("corpus node", corpus)):
            for k, v in mapping.items():
                if not isinstance(v, str):
                    raise DatasetError(f"{source}: {kind} {k!r} has a {type(v).__name__} where text was expected.")
        relevant: dict[str, list[str]] = {}
        for qid, docs in data["relevant_docs"].items():
            if isinstance(docs, str):
                docs = [docs]
            if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
                raise DatasetError(f"{source}: relevant_docs[{qid!r}] must be a list of node ids.")
            relevant[str(qid)] = list(docs)
        ds = cls(queries, corpus, relevant, str(data.get("mode", "text")))
        ds.validate(source)
        return ds

    def validate(self, source: str = "dataset") -> None:
        if self.mode != "text":
            raise DatasetError(f"{source}: mode {self.mode!r} is not supported (only 'text').")
        if not self.queries:
            raise DatasetError(f"{source}: the dataset has no queries.")
        if not self.corpus:
            raise DatasetError(f"{source}: the dataset has no corpus.")
        # a blank question still ranks (and scores), a blank node still gets ranked: neither means anything
        for kind, mapping in (("query", self.queries), ("corpus node", self.corpus)):
            blank = [k for k, v in mapping.items() if not v.strip()]
            if blank:
                raise DatasetError(
                    f"{source}: {len(blank)} {kind}{'' if len(blank) == 1 else 's'} with no text (first: {blank[0]!r}). "
                    "Fill them in or remove them."
                )
        no_rel = [q for q in self.queries if not self.relevant_docs.get(q)]
        if no_rel:
            raise DatasetError(
                f"{source}: {len(no_rel)} quer{'y has' if len(no_rel) == 1 else 'ies have'} no relevant "
                f"node (first: {no_rel[0]!r}). Every query needs at least one id in relevant_docs."
            )
        dangling = [
            (q, d) for q, ds in self.relevant_docs.items() if q in self.queries for d in ds if d not in self.corpus
        ]
        if dangling:
            q, d = dangling[0]
            raise DatasetError(
                f"{source}: {len(dangling)} relevant id(s) are not in the corpus (first: query {q!r} -> {d!r})."
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> QADataset:
        path = Path(path)
        if not path.exists():
            raise DatasetError(f"{path}: no such file.")
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (Windows editors) as the page reads it
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{path}: not a UTF-8 text file ({exc.reason}). Expected LlamaIndex dataset JSON."
            ) from exc
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from exc
        except RecursionError:
            raise DatasetError(f"{path}: {_TOO_DEEP}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def loads(cls, text: str | bytes, source: str = "uploaded file") -> QADataset:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{source}: not valid JSON ({exc}).") from exc
        except RecursionError:
            raise DatasetError(f"{source}: {_TOO_DEEP}") from None
        return cls.from_dict(data, source=source)

    # -- output ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": dict(self.queries),
            "corpus": dict(self.corpus),
            "relevant_docs": {q: list(d) for q, d in self.relevant_docs.items()},
            "mode": self.mode,
        }

    def dumps(self, indent: int | None = 4) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict(), indent=4)

    # -- helpers --------------------------------------------------------------------------
    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    @property
    def node_ids(self) -> list[str]:
        return list(self.corpus)

    def document_of(self, nid: str) -> str | None:
        """The document a chunk came from (``node_meta``'s ``doc_id``, else its ``filename``; None unknown)."""
        meta = self.node_meta.get(nid) or {}
        return meta.get("doc_id") or meta.get("filename")

    def pairs(self) -> list[tuple[str, str]]:
        """(query id, first relevant node id) for every query."""
        return [(q, self.relevant_docs[q][0]) for q in self.queries]

    def subset(self, query_ids: list[str], corpus_ids: list[str] | None = None) -> QADataset:
        """The dataset restricted to ``query_ids`` (and ``corpus_ids``, default: the full corpus)."""
        cids = list(self.corpus) if corpus_ids is None else corpus_ids
        keep = set(cids)
        return QADataset(
            {q: self.queries[q] for q in query_ids},
            {c: self.corpus[c] for c in cids},
            {q: [d for d in self.relevant_docs[q] if d in keep] for q in query_ids},
            self.mode,
            {c: self.node_meta[c] for c in cids if c in self.node_meta},
        )

    def query_groups(self, query_ids: list[str] | None = None) -> dict[str, list[str]]:
        """Queries grouped so that queries sharing any relevant chunk are in one group (keyed by the
        smallest chunk id of the group): the unit a leak-free split moves to one side."""
        qids = list(self.queries) if query_ids is None else list(query_ids)
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for q in qids:
            rel = self.relevant_docs[q]
            for other in rel[1:]:
                a, b = find(rel[0]), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        groups: dict[str, list[str]] = {}
        for q in qids:
            groups.setdefault(find(self.relevant_docs[q][0]), []).append(q)
        return groups

    def __len__(self) -> int:
        return len(self.queries)


# ------------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------------
def build_dataset(
    ws: Workspace,
    doc_ids: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    chunk_ids: Sequence[str] | None = None,
) -> QADataset:
    """The workspace's questions as a :class:`QADataset`.

    Corpus: every chunk of the chosen documents (all documents by default), whether or not
    it has questions, so retrieval is measured against the whole document. Queries: the
    questions about those chunks, each relevant to its own chunk. ``node_meta`` holds
    ``{doc_id, filename, page_start, page_end}`` per chunk. ``sources`` keeps only questions
    from those generators (``llm``, ``offline``, ``import``, ``manual``); ``chunk_ids`` only the
    questions about those chunks (a sample's), the corpus staying whole.
    """
    sql = (
        "SELECT c.id, c.doc_id, c.text, c.page_start, c.page_end, d.filename "
        "FROM chunks c LEFT JOIN documents d ON d.id = c.doc_id"
    )
    params: tuple = ()
    if doc_ids is not None:
        if not doc_ids:
            raise DatasetError("No documents chosen: pick at least one document.")
        sql += f" WHERE c.doc_id IN ({','.join('?' * len(doc_ids))})"
        params = tuple(doc_ids)
    chunks = ws.query(sql + " ORDER BY d.filename, c.doc_id, c.idx", params)
    if not chunks:
        raise DatasetError("The chosen documents have no chunks: add PDFs on the Documents page first.")
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
    queries: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    keep_sources = set(sources) if sources else None
    keep_chunks = set(chunk_ids) if chunk_ids is not None else None
    for q in ws.query("SELECT id, chunk_id, text, source FROM questions ORDER BY created_at, id"):
        if keep_sources is not None and q["source"] not in keep_sources:
            continue
        if keep_chunks is not None and q["chunk_id"] not in keep_chunks:
            continue
        if q["chunk_id"] in corpus and q["text"].strip():
            queries[q["id"]] = q["text"]
            relevant[q["id"]] = [q["chunk_id"]]
    if not queries:
        raise DatasetError("The chosen documents have no questions yet: generate or add questions first.")
    ds = QADataset(queries, corpus, relevant, "text", node_meta)
    ds.validate("workspace dataset")
    return ds


def split_dataset(
    ds: QADataset,
    by: str = "document",
    val_fraction: float = 0.2,
    seed: int = 0,
    val_docs: Sequence[str] | None = None,
) -> tuple[QADataset, QADataset]:
    """Split into (train, val) so that no chunk's questions are on both sides.

    ``by="document"``: whole documents go to one side (``val_docs`` names them by doc id or
    filename, e.g. Uber for evaluation and Lyft for training; otherwise a seeded pick of
    documents holding about ``val_fraction`` of the questions, at least one each side). Each side's
    corpus is its own documents' chunks. Needs ``node_meta`` (datasets built from the
    workspace have it).

    ``by="chunk"``: questions are grouped by their relevant chunk(s); seeded whole groups go
    to val until it holds ``val_fraction`` of the questions. Train corpus = every chunk except
    val's relevant ones; val corpus = every chunk (retrieval over the whole document).
    """
    if by not in ("document", "chunk"):
        raise ValueError(f"by must be 'document' or 'chunk', got {by!r}.")
    if val_docs is None and not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    rng = random.Random(seed)
    qids = list(ds.queries)
    if by == "document":
        missing = [nid for nid in ds.corpus if ds.document_of(nid) is None]
        if missing:
            raise ValueError(
                "This dataset has no document information for its chunks (e.g. an imported file), so it "
                "cannot be split by document: split by chunk instead."
            )
        node_doc = {nid: ds.document_of(nid) for nid in ds.corpus}
        docs = sorted(set(node_doc.values()))
        if len(docs) < 2:
            raise ValueError(
                "Splitting by document needs at least two documents and this dataset has one: split by "
                "chunk instead, or add another document (e.g. one for training, one for validation)."
            )
        if val_docs is not None:
            wanted: set[str] = set()
            names = {nid: (ds.node_meta[nid].get("filename"), ds.node_meta[nid].get("doc_id")) for nid in ds.corpus}
            for v in val_docs:
                hits = {node_doc[nid] for nid, (fn, did) in names.items() if v in (fn, did)}
                if not hits:
                    shown = sorted({fn or did for fn, did in names.values()})
                    raise ValueError(f"No document {v!r} in this dataset. Documents: {', '.join(map(str, shown))}.")
                wanted |= hits
            if len(wanted) == len(docs):
                raise ValueError("All documents were chosen for validation: leave at least one for training.")
            val_set = wanted
        else:  # a seeded pick of documents holding about val_fraction of the questions (not of the documents:
            # with two, the larger one held out 61% where 20% was asked)
            per_doc: dict[str, int] = dict.fromkeys(docs, 0)
            for q in qids:
                per_doc[node_doc[ds.relevant_docs[q][0]]] += 1
            total = max(1, len(qids))
            shuffled = docs[:]
            rng.shuffle(shuffled)
            val_set, held = set(), 0
            for d in shuffled:
                if len(val_set) < len(docs) - 1 and (held + per_doc[d]) / total <= val_fraction:
                    val_set.add(d)
                    held += per_doc[d]
            if not val_set:  # every document alone is over the share: the one nearest to it
                val_set = {min(shuffled, key=lambda d: abs(per_doc[d] / total - val_fraction))}
        val_q = [q for q in qids if node_doc.get(ds.relevant_docs[q][0]) in val_set]
        train_q = [q for q in qids if node_doc.get(ds.relevant_docs[q][0]) not in val_set]
        if not val_q or not train_q:
            side = "validation" if not val_q else "training"
            raise ValueError(
                f"The {side} documents have no questions: generate questions for every document, or choose "
                "other validation documents, or split by chunk."
            )
        val_nodes = [nid for nid in ds.corpus if node_doc[nid] in val_set]
        train_nodes = [nid for nid in ds.corpus if node_doc[nid] not in val_set]
        return ds.subset(train_q, train_nodes), ds.subset(val_q, val_nodes)

    # by chunk: connected groups of queries sharing a relevant chunk
    groups = ds.query_groups(qids)
    if len(groups) < 2:
        raise ValueError(
            "Splitting by chunk needs questions about at least two different chunks; this dataset's "
            "questions are all about one chunk. Generate questions for more chunks."
        )
    position = {nid: i for i, nid in enumerate(ds.corpus)}
    roots = sorted(groups, key=lambda r: min(position.get(ds.relevant_docs[q][0], 0) for q in groups[r]))
    rng.shuffle(roots)
    target = max(1, round(val_fraction * len(qids)))
    val_roots: list[str] = []
    count = 0
    for r in roots[:-1]:  # always leave at least one group for training
        if count >= target:
            break
        val_roots.append(r)
        count += len(groups[r])
    val_ids = {q for r in val_roots for q in groups[r]}
    val_q = [q for q in qids if q in val_ids]
    train_q = [q for q in qids if q not in val_ids]
    val_rel = {nid for q in val_q for nid in ds.relevant_docs[q]}
    train_nodes = [nid for nid in ds.corpus if nid not in val_rel]
    return ds.subset(train_q, train_nodes), ds.subset(val_q, list(ds.corpus))


# ------------------------------------------------------------------------------------------------
# dataset registry in the workspace
# ------------------------------------------------------------------------------------------------
DATASET_ROLES = ("train", "val", "eval", "import")


def save_dataset(ws: Workspace, ds: QADataset, name: str, role: str | None = None) -> str:
    """Save ``ds`` as ``datasets/<id>.json`` (LlamaIndex JSON) and register it; returns the id.

    ``name`` is a display label only (never a path). ``node_meta`` goes to a sidecar file
    ``datasets/<id>.nodes.json`` so the LlamaIndex file stays exactly in its format.
    """
    if role is not None and role not in DATASET_ROLES:
        raise ValueError(f"role must be one of {', '.join(DATASET_ROLES)} or None, got {role!r}.")
    ds.validate(f"dataset {name!r}")
    label = re.sub(r"\s+", " ", str(name or "")).strip()[:200] or "dataset"
    did = new_id("ds-")
    rel = f"datasets/{did}.json"
    path = ws.path("datasets", f"{did}.json")
    ds.save(path)
    meta: dict[str, Any] = {"node_meta": None, "documents": []}
    written = [path]
    if ds.node_meta:
        side = ws.path("datasets", f"{did}.nodes.json")
        atomic_write_json(side, ds.node_meta, indent=None)
        written.append(side)
        meta["node_meta"] = f"datasets/{did}.nodes.json"
        meta["documents"] = sorted({str(m.get("filename") or m.get("doc_id")) for m in ds.node_meta.values() if m})
    try:
        with ws.db() as con:
            con.execute(
                "INSERT INTO datasets(id, name, path, role, n_queries, n_corpus, meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (did, label, rel, role, len(ds.queries), len(ds.corpus), json.dumps(meta), time.time()),
            )
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return did


def unused_dataset_name(ws: Workspace, name: str) -> str:
    """``name``, or ``name (2)``, ``(3)``... when a saved dataset has it: two sets of one name cannot be told apart
    on the Train and Compare pages."""
    name = re.sub(r"\s+", " ", str(name or "")).strip() or "dataset"
    taken = {d["name"] for d in list_datasets(ws)}
    out, i = name, 2
    while out in taken:
        out, i = f"{name} ({i})", i + 1
    return out


def list_datasets(ws: Workspace) -> list[dict]:
    """Registered datasets, newest first: id, name, role, n_queries, n_corpus, path, meta, created_at."""
    rows = ws.query("SELECT * FROM datasets ORDER BY created_at DESC, id DESC")
    for r in rows:
        try:
            r["meta"] = json.loads(r.get("meta") or "{}")
        except ValueError:
            r["meta"] = {}
    return rows


def _dataset_row(ws: Workspace, dataset_id: str) -> dict:
    rows = ws.query("SELECT * FROM datasets WHERE id=?", (dataset_id,))
    if not rows:
        raise DatasetError(f"No dataset {dataset_id!r} in this workspace.")
    row = rows[0]
    row["meta"] = json.loads(row.get("meta") or "{}")
    return row


def load_dataset(ws: Workspace, dataset_id: str) -> QADataset:
    """A registered dataset, with its ``node_meta`` restored."""
    row = _dataset_row(ws, dataset_id)
    ds = QADataset.load(ws.path(*row["path"].split("/")))
    side = row["meta"].get("node_meta")
    if side:
        p = ws.path(*side.split("/"))
        if p.exists():
            ds.node_meta = {k: v for k, v in json.loads(p.read_text(encoding="utf-8")).items() if k in ds.corpus}
    return ds


def delete_dataset(ws: Workspace, dataset_id: str) -> bool:
    """Remove a dataset's files and catalog row; False if there was no such dataset."""
    try:
        row = _dataset_row(ws, dataset_id)
    except DatasetError:
        return False
    paths = [row["path"]] + ([row["meta"]["node_meta"]] if row["meta"].get("node_meta") else [])
    with ws.db() as con:
        con.execute("DELETE FROM datasets WHERE id=?", (dataset_id,))
    for rel in paths:
        ws.path(*rel.split("/")).unlink(missing_ok=True)
    return True


def import_dataset(ws: Workspace, data: bytes | str, name: str, role: str | None = "import") -> str:
    """Register a LlamaIndex dataset file given as bytes; raises :class:`DatasetError` if it is not one."""
    label = re.sub(r"\s+", " ", str(name or "")).strip()[:200] or "imported dataset"
    ds = QADataset.loads(data, source=repr(label))
    return save_dataset(ws, ds, label, role=role)
