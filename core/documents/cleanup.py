"""Clean-up of extracted PDF text: whitespace, hyphenation at line ends, NULs, page numbers, paragraphs.

Example::

    clean_pages(["Our remarkable year.\\r\\nIt was re-\\r\\nmarkable indeed.\\x00"])
    # -> ['Our remarkable year. It was remarkable indeed.']
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence

log = logging.getLogger(__name__)


class _RawPages(list):
    """Raw page texts (a plain list to every reader), which may carry ``prepared``:
    ``(normalized, chains)`` where the odd pages of ``normalized`` are already through
    :func:`_normalize_chars` and ``chains`` are their :func:`_word_chains` (work the
    extraction's child process did). :func:`clean_pages` uses it; nothing else needs to."""

    prepared: tuple[list[str], set[str]] | None = None


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
