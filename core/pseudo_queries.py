"""Offline (no-key) question generators beyond keyword questions, and the registry of offline methods.

Every method makes pseudo-queries from the documents themselves, with no LLM and no network,
deterministically; all are stored with source ``offline`` (so the pseudo-query caveats apply to
them). The methods (:data:`OFFLINE_METHODS`):

* ``keywords``: :class:`core.generators.OfflineGenerator`, keyword questions ("What is said about
  Board, Committee and Plan?").
* ``cloze``: inverse-cloze pairs. An informative sentence of the chunk is the query and the
  chunk is the target. The corpus vectors are fixed *full* chunks, so the sentence is still in
  its target: to keep this from being a pure copy signal, sentences that recur in other chunks
  (boilerplate) are skipped, and the sentence's single most distinctive keyword is removed
  from the query, so the query must match the rest of the chunk's meaning, not one rare word.
* ``headings``: section headings ("Our Growth Strategy", "Risks Related to Operational
  Factors") asked as questions ("What about our Growth Strategy?"). A chunk is asked its own
  headings, then the last heading of the chunk before it (the section its text continues: no
  copy of its text).
* ``mixture``: round-robin over headings, cloze and keywords for each chunk.

The default (:data:`DEFAULT_OFFLINE_METHOD`) is the method that hurt real-question retrieval least
when measured (bench/README.md, "Protocol (d)", bench/no_key.py): none met the target of +1 pt
hit@5 on real questions searching the LlamaIndex file's chunks. Searching the chunks the app itself
makes, which the questions were made from, the default method's adapter gained +1.4 / +1.5 (hit@5 /
MRR@5; bench/no_key_own_chunks.py); the app quotes both (:mod:`core.carryover`).

Example::

    gen = offline_generator("cloze", seed=0)
    gen.fit(chunk_texts_in_document_order)       # generate_questions() does this for you
    gen.generate(chunk_text, 2)
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from .generators import _SENTENCE_SPLIT, _WORD, OfflineGenerator, dedupe_questions, normalize_question

CLOZE_VERSION = 3  # 3: navigation sentences and table rows are skipped
HEADINGS_VERSION = 1
MIXTURE_VERSION = 1

#: a sentence that points elsewhere in the document instead of saying something: "see Note 14",
#: "refer to Part II, Item 8", "as described in Exhibit A", a contents line ("... Item 13"), check boxes
_NAVIGATION = re.compile(
    r"\b(?:see|refer\s+to|described\s+in|included\s+in|set\s+forth\s+in)\b[^.]{0,80}?"
    r"\b(?:Note|Item|Part|Section|Exhibit|Appendix|Schedule|page)\s+[0-9IVXA-H]"
    r"|\b(?:Item|Part|Note)\s+[0-9IVX]+[A-C]?\s*[.:]?\s*$"
    r"|[\u2610\u2611\u2612]",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"^\$?\(?\d[\d.,]*%?\)?$")
#: a table row flattened into text: this many places (or more) where two numbers stand side by side
#: ("leases $ 80,329 $ 67,825 ... 1,102 1,980"); prose puts a word between its numbers
TABLE_ROW_NUMBER_PAIRS = 2
_BULLET = re.compile(r"^\s*(?:[-\u2022*\u25cf\u25aa\u2013]|\(?[0-9ivx]{1,4}[.)])\s")
_SMALL = frozenset(
    [
        "a",
        "an",
        "and",
        "as",
        "at",
        "by",
        "for",
        "from",
        "in",
        "into",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
        "vs",
        "via",
        "our",
        "its",
    ]
)


def _norm_sentence(s: str) -> str:
    return normalize_question(s)


class ClozeGenerator:
    """Inverse-cloze pseudo-queries: an informative sentence of the chunk, its top keyword removed.

    Args:
        seed: kept for the generation key and for ties; the choice is deterministic.
        mask: remove the sentence's most distinctive keyword from the query (default True),
            so the pair is not a verbatim copy of the target's text.
        min_words, max_words: sentence length bounds (shorter ones carry too little, longer
            ones are paragraphs glued by PDF extraction).

    Sentences are ranked by the mean idf weight of their best keywords (the same weights as
    the keyword generator, fitted over the whole corpus); a sentence that appears in another
    chunk too (overlap aside, boilerplate such as "our business could be adversely affected")
    is skipped because it names no single chunk.
    """

    kind = "offline"
    method = "cloze"

    def __init__(self, seed: int = 0, mask: bool = True, min_words: int = 6, max_words: int = 45):
        self.seed = int(seed)
        self.mask = bool(mask)
        self.min_words, self.max_words = int(min_words), int(max_words)
        self._kw = OfflineGenerator(seed=seed)
        self._sentence_df: Counter[str] | None = None

    def __repr__(self) -> str:
        return f"ClozeGenerator(seed={self.seed}, mask={self.mask})"

    @property
    def generation_spec(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "method_version": CLOZE_VERSION,
            "mask": self.mask,
            "words": [self.min_words, self.max_words],
        }

    @property
    def needs_fit(self) -> bool:
        return self._sentence_df is None

    def fit(self, texts: Iterable[str]) -> ClozeGenerator:
        texts = list(texts)
        self._kw.fit(texts)
        df: Counter[str] = Counter()
        for t in texts:
            df.update({_norm_sentence(s) for s in self._sentences(t)})
        self._sentence_df = df
        return self

    @staticmethod
    def _sentences(text: str) -> list[str]:
        out = []
        for line in (text or "").splitlines():
            line = re.sub(r"\s+", " ", line).strip()
            if not line or is_heading(line):
                continue  # a heading is not a sentence (and would glue onto the next one)
            for s in _SENTENCE_SPLIT.split(line):
                s = _BULLET.sub("", (s or "").strip()).strip()
                if s:
                    out.append(s)
        return out

    @staticmethod
    def is_statement(sentence: str, tokens: list[str] | None = None) -> bool:
        """False for text no one would search with: a pointer elsewhere in the document ("see Note 14
        ... included in Part II, Item 8"), a contents line ("... Item 13"), check boxes, or a table row
        (:data:`TABLE_ROW_NUMBER_PAIRS` or more places where two numbers stand side by side)."""
        if _NAVIGATION.search(sentence):
            return False
        is_num = [bool(_NUMBER.match(t)) for t in (_WORD.findall(sentence) if tokens is None else tokens)]
        return sum(a and b for a, b in zip(is_num, is_num[1:])) < TABLE_ROW_NUMBER_PAIRS

    def generate(self, chunk_text: str, n: int, cancel: Any = None) -> list[str]:
        if n < 1:
            return []
        sents = self._sentences(chunk_text)
        if not sents:
            return []
        kw = self._kw
        words_all = [w for s in sents for w in _WORD.findall(s) if kw._is_content(w)]
        tf = Counter(w.lower() for w in words_all)
        weight = {lw: (1.0 + math.log(c)) * kw._idf(lw) for lw, c in tf.items()}
        ranked: list[tuple[float, int, str]] = []
        seen_norm: set[str] = set()
        for i, s in enumerate(sents):
            toks = _WORD.findall(s)
            if not self.min_words <= len(toks) <= self.max_words or not self.is_statement(s, toks):
                continue
            norm = _norm_sentence(s)
            if norm in seen_norm:
                continue  # repeated inside the chunk (PDF headers, overlap)
            seen_norm.add(norm)
            if self._sentence_df is not None and self._sentence_df.get(norm, 0) > 1:
                continue  # boilerplate: the same sentence names several chunks
            kws = sorted({w.lower() for w in toks if kw._is_content(w)}, key=lambda k: (-weight[k], k))
            if len(kws) < 3:
                continue
            score = sum(weight[k] for k in kws[:4]) / min(4, len(kws))
            ranked.append((score, i, kws[0]))
        ranked.sort(key=lambda x: (-x[0], x[1]))
        out: list[str] = []
        for _score, i, top in ranked:
            q = self._query(sents[i], top)
            if q and dedupe_questions(out + [q], 0.85)[-1:] == [len(out)]:
                out.append(q)
            if len(out) >= n:
                break
        return out

    def _query(self, sentence: str, top: str) -> str | None:
        s = sentence.strip().rstrip(".;:!?,").strip()
        if self.mask:
            s = re.sub(r"(?<![\w$])" + re.escape(top) + r"(?![\w])", " ", s, count=0, flags=re.IGNORECASE)
            s = re.sub(r"\s+([,;:.)])", r"\1", re.sub(r"\s{2,}", " ", s)).strip(" ,;:")
        if len(_WORD.findall(s)) < 4:
            return None
        return s[:1].upper() + s[1:] + "?"


def is_heading(line: str) -> bool:
    """A line that reads like a section heading: short, capitalised, no sentence punctuation.

    "Our Growth Strategy", "Risks Related to Operational Factors", "Item 7. Management's
    Discussion and Analysis": yes. A bullet, a sentence, a table row of numbers, a line
    ending in ":" or ",": no.
    """
    s = line.strip()
    if not s or _BULLET.match(s) or len(s) > 90:
        return False
    if (
        any(c in s for c in ":/$@|")
        or s.endswith((",", ";", "?"))
        or (s.endswith(".") and not re.match(r"(?i)^item\s+\d", s))
    ):
        return False
    words = re.findall(r"[A-Za-z][A-Za-z'\u2019\-]*", s)
    if not 1 <= len(words) <= 12 or not s[:1].isalpha() or not s[:1].isupper():
        return False
    digits = sum(c.isdigit() for c in s)
    if digits > 4 or digits > len(s) / 5:
        return False  # table rows, page furniture, addresses
    long_words = [w for w in words if len(w) >= 4]
    if not long_words:
        return False
    caps = [w for w in words if w.lower() not in _SMALL]
    cap_share = sum(w[:1].isupper() for w in caps) / max(1, len(caps))
    return cap_share >= 0.6 or (len(words) <= 3 and s[:1].isupper())


def _heading_question(h: str) -> str:
    h = re.sub(r"(?i)^item\s+\d+[a-z]?\.\s*", "", h.strip()).rstrip(".").strip()
    if not h:
        return ""
    if h.isupper():
        h = h.title()
    first, _, rest = h.partition(" ")
    if first.lower() in _SMALL or first.lower() in ("other", "certain", "recent"):
        h = (
            first.lower() + " " + rest
        ).strip()  # "Our Growth Strategy" -> "our Growth Strategy"; names keep their case
    return f"What about {h}?"  # the bundled model is uncased: case is for the reader only


class HeadingGenerator:
    """Section headings of the documents asked as questions ("What about our Growth Strategy?").

    :meth:`fit` reads the chunks in document order (``generate_questions`` passes them so) and
    remembers, for each chunk, the last heading of the chunk before it (the section its text
    continues; a heading further back would name many chunks at once). ``generate`` asks the
    headings inside the chunk, top first, then that earlier heading (no copy of the chunk's
    text). A chunk with no heading near it gets no question from this method (``mixture`` fills
    those with cloze and keyword questions).
    """

    kind = "offline"
    method = "headings"

    def __init__(self, seed: int = 0, max_heading_chars: int = 90):
        self.seed = int(seed)
        self.max_heading_chars = int(max_heading_chars)
        self._context: dict[int, str] | None = None

    def __repr__(self) -> str:
        return f"HeadingGenerator(seed={self.seed})"

    @property
    def generation_spec(self) -> dict[str, Any]:
        return {"method": self.method, "method_version": HEADINGS_VERSION}

    @property
    def needs_fit(self) -> bool:
        return self._context is None

    @staticmethod
    def _key(text: str) -> int:
        return zlib.crc32(re.sub(r"\s+", " ", text or "").strip().encode("utf-8"))

    @staticmethod
    def headings_in(text: str) -> list[str]:
        """The heading lines of ``text``, top to bottom, without repeats."""
        out: list[str] = []
        for line in (text or "").splitlines():
            line = re.sub(r"\s+", " ", line).strip()
            if is_heading(line) and line not in out:
                out.append(line)
        return out

    def fit(self, texts: Iterable[str]) -> HeadingGenerator:
        ctx: dict[int, str] = {}
        previous = ""  # the last heading of the chunk just before (a heading further back names too many chunks)
        for t in texts:
            ctx.setdefault(self._key(t), previous)
            hs = self.headings_in(t)
            previous = hs[-1] if hs else ""
        self._context = ctx
        return self

    def generate(self, chunk_text: str, n: int, cancel: Any = None) -> list[str]:
        if n < 1:
            return []
        inside = self.headings_in(chunk_text)
        before = (self._context or {}).get(self._key(chunk_text), "")
        cands = inside + ([before] if before and before not in inside else [])
        out: list[str] = []
        for h in cands:
            q = _heading_question(h)
            if q and len(_WORD.findall(q)) >= 3 and dedupe_questions(out + [q], 0.85)[-1:] == [len(out)]:
                out.append(q)
            if len(out) >= n:
                break
        return out


class MixtureGenerator:
    """Headings, cloze and keyword questions in turn for each chunk (each asked for what it can give)."""

    kind = "offline"
    method = "mixture"

    def __init__(self, seed: int = 0, parts: tuple[str, ...] = ("headings", "cloze", "keywords")):
        self.seed = int(seed)
        self.parts = tuple(parts)
        self._gens = [OFFLINE_METHODS[p][1](seed) for p in self.parts]
        self._fitted = False

    def __repr__(self) -> str:
        return f"MixtureGenerator(seed={self.seed}, parts={self.parts})"

    @property
    def generation_spec(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "method_version": MIXTURE_VERSION,
            "parts": [getattr(g, "generation_spec", {"method": "keywords"}) for g in self._gens],
        }

    @property
    def needs_fit(self) -> bool:
        return not self._fitted

    def fit(self, texts: Iterable[str]) -> MixtureGenerator:
        texts = list(texts)
        for g in self._gens:
            g.fit(texts)
        self._fitted = True
        return self

    def generate(self, chunk_text: str, n: int, cancel: Any = None) -> list[str]:
        if n < 1:
            return []
        pools = [list(g.generate(chunk_text, n)) for g in self._gens]
        out: list[str] = []
        while len(out) < n and any(pools):
            for pool in pools:
                while pool:
                    q = pool.pop(0)
                    if dedupe_questions(out + [q], 0.85)[-1:] == [len(out)]:
                        out.append(q)
                        break
                if len(out) >= n:
                    break
        return out


#: name -> (label for the UI and CLI help, factory(seed) -> generator)
OFFLINE_METHODS: dict[str, tuple[str, Callable[[int], Any]]] = {
    "keywords": ('Keyword questions ("What is said about A and B?")', lambda seed: OfflineGenerator(seed=seed)),
    "cloze": ("Inverse cloze (a sentence of the chunk, its key word removed)", lambda seed: ClozeGenerator(seed=seed)),
    "headings": ('Section headings ("What about our Growth Strategy?")', lambda seed: HeadingGenerator(seed=seed)),
    "mixture": ("Mixture (headings, cloze and keywords in turn)", lambda seed: MixtureGenerator(seed=seed)),
}

#: the offline method the app uses unless told otherwise (see bench/README.md, "Protocol (d)")
DEFAULT_OFFLINE_METHOD = "cloze"


def offline_generator(method: str | None = None, seed: int = 0) -> Any:
    """A fresh offline generator for ``method`` (default :data:`DEFAULT_OFFLINE_METHOD`)."""
    method = method or DEFAULT_OFFLINE_METHOD
    if method not in OFFLINE_METHODS:
        raise ValueError(f"unknown offline method {method!r}: use one of {', '.join(OFFLINE_METHODS)}")
    return OFFLINE_METHODS[method][1](int(seed))


def _offline_method_help() -> str:
    from .carryover import OWN_CHUNKS_CARRYOVER as own

    return (
        "How offline questions are made from your documents (no LLM). Measured on real LLM questions about a "
        "10-K: an adapter trained on inverse-cloze pairs (the default) over the chunks this app cuts lifted them "
        f"by {100 * own['adapter_gain_hit@5']:+.1f} hit@5 / {100 * own['adapter_gain_mrr@5']:+.1f} MRR@5 points, "
        "and by less on a longer chunking of the same filing; "
        "keyword questions and section headings made it worse. For an adapter you will deploy, generate "
        "questions with an LLM or import real queries."
    )


#: what the Questions page says about choosing a method (measured: bench/README.md, "Protocol (d)" and
#: "The no-key path on AdapterLab's own chunks"; the numbers come from :mod:`core.carryover`)
OFFLINE_METHOD_HELP = _offline_method_help()
