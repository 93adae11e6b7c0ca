"""The question/context dataset type, compatible with LlamaIndex's ``EmbeddingQAFinetuneDataset``.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .workspace import atomic_write_json


class DatasetError(ValueError):
    """A dataset file that cannot be used, with a message naming the file and the problem."""


# json.loads recurses once per nesting level: a file of 100,000 '[' ends in RecursionError.
_TOO_DEEP = ("its JSON is nested too deeply to be a dataset. A LlamaIndex dataset is an object holding "
             "'queries', 'corpus' and 'relevant_docs'.")


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
    def from_dict(cls, data: Any, source: str = "dataset") -> "QADataset":
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
                raise DatasetError(f"{source}: '{key}' must be an object (id -> value), got {type(data[key]).__name__}.")
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
        no_rel = [q for q in self.queries if not self.relevant_docs.get(q)]
        if no_rel:
            raise DatasetError(
                f"{source}: {len(no_rel)} quer{'y has' if len(no_rel) == 1 else 'ies have'} no relevant "
                f"node (first: {no_rel[0]!r}). Every query needs at least one id in relevant_docs."
            )
        dangling = [(q, d) for q, ds in self.relevant_docs.items() if q in self.queries for d in ds if d not in self.corpus]
        if dangling:
            q, d = dangling[0]
            raise DatasetError(
                f"{source}: {len(dangling)} relevant id(s) are not in the corpus (first: query {q!r} -> {d!r})."
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "QADataset":
        path = Path(path)
        if not path.exists():
            raise DatasetError(f"{path}: no such file.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: not a UTF-8 text file ({exc.reason}). Expected LlamaIndex dataset JSON.") from exc
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from exc
        except RecursionError:
            raise DatasetError(f"{path}: {_TOO_DEEP}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def loads(cls, text: str | bytes, source: str = "uploaded file") -> "QADataset":
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

    def pairs(self) -> list[tuple[str, str]]:
        """(query id, first relevant node id) for every query."""
        return [(q, self.relevant_docs[q][0]) for q in self.queries]

    def subset(self, query_ids: list[str], corpus_ids: list[str] | None = None) -> "QADataset":
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
