"""Pages -> chunks of at most ``chunk_size`` tokens with stable ids.

:func:`chunk_pages` splits on sentence boundaries (paragraph boundaries preferred), with
sentence-level overlap; chunk ids are deterministic (uuid5 of document, index and text), so
re-chunking with the same settings gives the same ids. Token counts come from the embedder's
tokenizer (:func:`tokenizer_counter`) or :func:`approx_token_count`.

Example::

    chunks = chunk_pages(doc.pages, doc.doc_id, ChunkSettings(chunk_size=256), tokenizer_counter(model.tokenizer))
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .pdf import PageText

log = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]

# Namespace for chunk ids (uuid5); fixed forever so ids stay stable across versions.
_CHUNK_NS = uuid.UUID("6f1c8a52-1c1e-4d7e-9a0b-5d0c2f3e8a11")


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
            raise ValueError(f"chunk_size must be at least 16 tokens (or 0 for auto), got {self.chunk_size}")
        if self.chunk_overlap < -1:
            raise ValueError(f"chunk_overlap must be 0 or more tokens (or -1 for auto), got {self.chunk_overlap}")
        if self.chunk_size and self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )

    @property
    def is_auto(self) -> bool:
        return self.chunk_size == 0 or self.chunk_overlap == -1

    def resolved(self, max_seq_length: int | None) -> ChunkSettings:
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
                        f"max_seq_length {max_seq_length} leaves no room for 16-token chunks; set chunk_size explicitly"
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
            para_break = u.para != cur[-1].para and cur_n * 2 >= size and cur_n + para_tokens[u.para] > size
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
