"""Question generators: the LLM one and the offline one, behind one protocol, with the prompt,
the parsing of model output and near-duplicate detection they share.

A :class:`QuestionGenerator` has ``kind`` (``"llm"`` | ``"offline"``, also the questions'
source) and ``generate(chunk_text, n) -> list[str]``. :class:`LLMGenerator` asks a chat model
(:class:`core.llm.ChatClient`) with :data:`DEFAULT_PROMPT_TEMPLATE` (filled by
:func:`fill_prompt`; :func:`estimate_generation` says the calls, tokens and cost first) and
parses its answer robustly (:func:`parse_questions`); :class:`OfflineGenerator` needs no model
and no network (weaker pseudo-queries: :data:`OFFLINE_LIMITS`). Running a generator over the
workspace's chunks (resumable, saved per chunk) is :func:`core.questions.generate_questions`.

Example::

    gen = LLMGenerator(LLMSettings(model="gpt-4o-mini"))      # or OfflineGenerator()
    print(estimate_generation(chunk_texts, 2, gen.prompt_template, gen.model))
    gen.generate(chunk_text, 2)   # ['What was ...?', 'How many ...?']
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import unicodedata
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from .llm import (
    ANSWER_OVERHEAD_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    PRICES_PER_MTOK,
    TOKENS_PER_QUESTION,
    ChatClient,
    LLMError,
    LLMSettings,
    estimate_tokens,
    model_display_name,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# prompt
# ------------------------------------------------------------------------------------------------
DEFAULT_PROMPT_TEMPLATE = """\
Below is a passage taken from a document.
---------------------
{context_str}
---------------------
You are a teacher writing a quiz about this passage. Using only the passage above, and no \
prior or outside knowledge, write {num_questions_per_chunk} questions for the quiz. Make the \
questions diverse: each should ask about a different fact or aspect of the passage, and each \
must be answerable from the passage alone. Keep to what the passage says.
Reply with the questions only, one per line."""

PLACEHOLDERS = ("{context_str}", "{num_questions_per_chunk}")


def validate_prompt_template(template: str) -> str:
    """``template`` if it has both placeholders, else a ValueError naming the missing ones."""
    if not isinstance(template, str) or not template.strip():
        raise ValueError("The prompt template is empty. Start from the default template.")
    missing = [p for p in PLACEHOLDERS if p not in template]
    if missing:
        raise ValueError(
            f"The prompt template is missing {' and '.join(missing)}. {PLACEHOLDERS[0]} is replaced by "
            f"the chunk's text and {PLACEHOLDERS[1]} by the number of questions to ask; keep both, "
            "written exactly like that."
        )
    return template


# ------------------------------------------------------------------------------------------------
# parsing model output
# ------------------------------------------------------------------------------------------------
_WH = {"what", "which", "who", "whom", "whose", "when", "where", "why", "how"}
_AUX = {
    "is",
    "are",
    "was",
    "were",
    "do",
    "does",
    "did",
    "can",
    "could",
    "should",
    "would",
    "will",
    "has",
    "have",
    "had",
    "may",
    "might",
    "must",
    "shall",
    "am",
}
_IMPERATIVE = {
    "describe",
    "explain",
    "identify",
    "name",
    "list",
    "summarize",
    "summarise",
    "compare",
    "discuss",
    "outline",
    "state",
}
_PREPOSITIONS = {
    "in",
    "on",
    "for",
    "from",
    "by",
    "during",
    "according",
    "under",
    "to",
    "at",
    "of",
    "with",
    "based",
    "per",
    "as",
    "given",
}
_MARKER = re.compile(
    r"""^\s*(?:
        [-*\u2022\u00b7+>]                              # bullets, blockquote
      | \(?\d{1,3}\s*[.):\]]                            # 1.  1)  (1)  1:
      | \(?[a-h][.)](?=\s)                              # a)  b.
      | q(?:uestion)?\s*\#?\d{0,3}\s*[:.)\-]            # Q1:  Q2)  Question 3:  Q:
      | question\s*\#?\d{1,3}\b                         # Question 1
    )\s*""",
    re.I | re.X,
)
_CHATTER = re.compile(
    r"\b(let me know|hope (this|these|that)|would you like|do you want|need (any )?more|anything else|"
    r"feel free|happy to help|i can (also )?(generate|provide|create|write)|here (are|is)\b)",
    re.I,
)
_LABEL = re.compile(r"^(answer|ans|a|explanation|context|note|hint|rationale)\s*[:\-]", re.I)
_SPLIT_NUMBERED = re.compile(r"(?<=\?)\s+(?=(?:\(?\d{1,3}[.)]|q\d{1,3}\b|\*\*|question\s*\d))", re.I)
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"


def _clean_line(line: str) -> str:
    s = line.strip()
    s = s.replace("**", "").replace("__", "").replace("`", "")
    s = re.sub(r"^#{1,6}\s*", "", s)
    for _ in range(4):  # "- 1. Q1: ..." has several markers
        new = _MARKER.sub("", s, count=1)
        new = new.strip().strip("*_").strip()
        if new == s:
            break
        s = new
    s = s.strip().lstrip(_QUOTES).rstrip(_QUOTES).strip()
    if "?" in s and not s.endswith("?"):
        s = s[: s.rfind("?") + 1]  # "What is X? Answer: ..." -> "What is X?"
        s = s.rstrip(_QUOTES).strip()
    return re.sub(r"\s+", " ", s)


#: Twice the longest of GPT's 668 Lyft questions (534 characters; median 169): a line this long is a model's
#: runaway text ("why why why ...?", 8,000 characters from a small model), not a question.
MAX_QUESTION_CHARS = 1000


def _looks_like_question(s: str) -> bool:
    words = s.split()
    if len(words) < 3 or len(s) < 10 or len(s) > MAX_QUESTION_CHARS:
        return False
    if s.endswith(":") or _LABEL.match(s) or _CHATTER.search(s):
        return False
    first = re.sub(r"[^a-z]", "", words[0].lower())
    second = re.sub(r"[^a-z]", "", words[1].lower())
    if s.endswith("?"):
        return True
    if first in _WH or first in _AUX or first in _IMPERATIVE:
        return True
    return first in _PREPOSITIONS and second in _WH


def _json_candidates(text: str) -> list[str] | None:
    t = text.strip()
    if t.startswith("```"):
        t = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", t)
    if not t or t[0] not in "[{":
        return None
    try:
        data = json.loads(t)
    except ValueError:
        return None

    def flatten(x: Any) -> list[str]:
        if isinstance(x, str):
            return [x]
        if isinstance(x, list):
            return [s for item in x for s in flatten(item)]
        if isinstance(x, dict):
            for k in ("question", "query", "text", "q"):
                if isinstance(x.get(k), str):
                    return [x[k]]
            return [s for v in x.values() for s in flatten(v)]
        return []

    return flatten(data)


def parse_questions(text: str, n: int | None = None) -> list[str]:
    """The questions in a model's answer, cleaned, without exact duplicates, at most ``n``.

    Handles preambles ("Here are 2 questions:"), numbering (``1.``, ``1)``, ``Q1:``,
    ``Question 2:``, ``- ``, ``**1.**``), blank lines, quotes, markdown, answers after the
    question, several questions on one line, closing chatter, and JSON lists. A line is kept
    when it ends with "?" or starts with an interrogative word (what, how, is, does, ...,
    "in which", or a quiz imperative such as "Explain"), and has at least three words.

    >>> parse_questions("Here are 2 questions:\\n\\n1. What is X about?\\n2) How big is Y?")
    ['What is X about?', 'How big is Y?']
    """
    if not text:
        return []
    lines = _json_candidates(text)
    if lines is None:
        lines = []
        for raw in str(text).splitlines():
            if raw.strip().startswith("```"):
                continue
            lines.extend(_SPLIT_NUMBERED.split(raw))
    out: list[str] = []
    seen: set[str] = set()
    for raw in lines:
        s = _clean_line(str(raw))
        if not s or not _looks_like_question(s):
            continue
        key = normalize_question(s)
        if key in seen:
            continue
        seen.add(key)
        out.append(s)
        if n is not None and len(out) >= n:
            break
    return out


#: The longest answer asked of a model writing questions: ``MAX_TOKENS_PER_QUESTION`` tokens per question asked
#: plus ``MAX_TOKENS_MARGIN`` (a preamble, numbering). GPT's 668 Lyft questions are ~44 tokens on average (169
#: characters; 90% under ~63, the longest ~134), so a model answering as asked stays well within it, while a small
#: model that rambles (3,798 tokens, 92 s, for 2 questions) is cut off; a cut answer keeps its complete questions.
MAX_TOKENS_PER_QUESTION = 60
MAX_TOKENS_MARGIN = 100


def question_max_tokens(n: int, per_question: int = MAX_TOKENS_PER_QUESTION) -> int:
    """The ``max_tokens`` of an answer asked for ``n`` questions (see :data:`MAX_TOKENS_PER_QUESTION`)."""
    return max(1, int(n)) * int(per_question) + MAX_TOKENS_MARGIN


def complete_part(text: str) -> str:
    """A cut answer (``finish_reason == "length"``) without its unfinished end: up to its last line break or its
    last "?", whichever comes later (a last line that ends in "?" is whole). ``"1. What is X?\n2. How did the"``
    -> ``"1. What is X?"``."""
    t = (text or "").rstrip()
    if t.endswith("?"):
        return t
    end = max(t.rfind("\n"), t.rfind("?") + 1 if "?" in t else -1)
    return t[:end] if end > 0 else ""


def fill_prompt(template: str, context: str, n: int) -> str:
    """``template`` with ``{context_str}`` and ``{num_questions_per_chunk}`` replaced.

    Plain replacement, not ``str.format``: other braces in a user's template stay as written.
    """
    return template.replace("{context_str}", context).replace("{num_questions_per_chunk}", str(n))


def estimate_generation(
    chunk_texts: Iterable[str], questions_per_chunk: int, prompt_template: str, model: str, base_url: str | None = None
) -> dict[str, Any]:
    """What generating ``questions_per_chunk`` questions for each chunk will take.

    Returns ``{"calls", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd",
    "model", "price_per_mtok"}``. Prompt tokens are the filled template per chunk plus
    :data:`MESSAGE_OVERHEAD_TOKENS`; completion tokens assume :data:`TOKENS_PER_QUESTION` per
    question plus :data:`ANSWER_OVERHEAD_TOKENS`. ``cost_usd`` is ``None`` when ``model`` is not
    in :data:`PRICES_PER_MTOK` (e.g. a local model), and when ``base_url`` is a server other than OpenAI's
    (``"priced": False``: another server sets its own price, a local one none, whatever the model's name).
    Retries are not counted.
    """
    if questions_per_chunk < 1:
        raise ValueError(f"questions_per_chunk must be >= 1, got {questions_per_chunk}.")
    calls = 0
    prompt_tokens = 0
    for text in chunk_texts:
        calls += 1
        prompt_tokens += (
            estimate_tokens(fill_prompt(prompt_template, text, questions_per_chunk)) + MESSAGE_OVERHEAD_TOKENS
        )
    completion_tokens = calls * (questions_per_chunk * TOKENS_PER_QUESTION + ANSWER_OVERHEAD_TOKENS)
    priced = not base_url or "api.openai.com" in base_url
    price = PRICES_PER_MTOK.get(model) if priced else None
    cost = None
    if price is not None:
        cost = (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000
    return {
        "calls": calls,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost_usd": cost,
        "model": model,
        "price_per_mtok": price,
        "priced": priced,
    }


# ------------------------------------------------------------------------------------------------
# near-duplicates
# ------------------------------------------------------------------------------------------------
def normalize_question(text: str) -> str:
    """Lower-case, NFKC, punctuation removed (dots/commas inside numbers kept), spaces collapsed."""
    s = unicodedata.normalize("NFKC", str(text)).lower()
    s = s.replace("\u2019", "'")
    s = re.sub(r"(?<=\d),(?=\d{3})", "", s)
    s = re.sub(r"'s\b", "s", s)
    s = re.sub(r"(?<=\d)\.(?=\d)", "\u2024", s)  # protect decimal points
    s = re.sub(r"[^\w\s\u2024]+", " ", s).replace("\u2024", ".")
    return re.sub(r"\s+", " ", s).strip()


def question_similarity(a: str, b: str) -> float:
    """Jaccard similarity of the two questions' normalized word sets (what dedupe uses)."""
    sa, sb = set(normalize_question(a).split()), set(normalize_question(b).split())
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def dedupe_questions(questions: Sequence[str], threshold: float = 0.85) -> list[int]:
    """Indices of the questions to keep: the first of every group of near-duplicates.

    Two questions are near-duplicates when the Jaccard similarity of their normalized word
    sets (:func:`normalize_question`) is at least ``threshold`` ("What was Lyft's revenue in
    2021?" and "What was Lyft's total revenue in 2021?" score 6/7 = 0.86; word order and
    punctuation are ignored; "2020" and "2021" differ). Exact, and fast on thousands of
    questions: it uses prefix filtering (two sets with Jaccard >= t must share one of the
    rarest ``|x| - ceil(t|x|) + 1`` words of each), so only a few candidates are compared.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    sets = [frozenset(normalize_question(q).split()) for q in questions]
    freq = Counter(t for s in sets for t in s)
    index: dict[str, list[int]] = defaultdict(list)
    keep: list[int] = []
    empty_kept = False
    for i, s in enumerate(sets):
        size = len(s)
        if size == 0:
            if not empty_kept:
                empty_kept = True
                keep.append(i)
            continue
        ordered = sorted(s, key=lambda t: (freq[t], t))
        prefix = ordered[: size - math.ceil(threshold * size - 1e-9) + 1]
        dup = False
        checked: set[int] = set()
        for t in prefix:
            for j in index.get(t, ()):
                if j in checked:
                    continue
                checked.add(j)
                other = sets[j]
                small, large = (size, len(other)) if size <= len(other) else (len(other), size)
                if small < threshold * large - 1e-9:  # length filter
                    continue
                inter = len(s & other)
                if inter / (size + len(other) - inter) >= threshold - 1e-12:
                    dup = True
                    break
            if dup:
                break
        if dup:
            continue
        keep.append(i)
        for t in prefix:
            index[t].append(i)
    return keep


# ------------------------------------------------------------------------------------------------
# generators
# ------------------------------------------------------------------------------------------------
@runtime_checkable
class QuestionGenerator(Protocol):
    """What :func:`core.questions.generate_questions` runs: ``kind`` (``"llm"`` | ``"offline"``, also the
    questions' source) and ``generate(chunk_text, n)`` returning at most ``n`` questions. Optional:
    a ``cancel`` keyword on ``generate`` (an event to stop waiting on), ``model``,
    ``prompt_template``, ``seed`` and ``concurrency`` (they name the generation: :func:`generation_key`),
    and ``needs_fit`` with ``fit(texts)`` for a generator that learns from the whole corpus first."""

    kind: str

    def generate(self, chunk_text: str, n: int) -> list[str]: ...


OFFLINE_LIMITS = (
    "Offline pseudo-queries are built from the chunk's own text (a sentence of it, its keywords or its "
    "headings, by the method chosen), not written by a language model: they are weaker than an LLM's questions (they share words with the chunk instead of "
    "paraphrasing it, and cannot ask about meaning), so an adapter trained on them learns less "
    "and scores measured with them look easier than real user questions. Use them to try the "
    "app with no key and no network; use an LLM for results you want to trust."
)

OFFLINE_VERSION = 1  # bump when the offline method changes (part of its generation key)

_STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each either few for
    from further had has have having he her here hers herself him himself his how however i if in
    into is it its itself just least less may me might more most must my myself no nor not now of
    off on once only or other our ours ourselves out over own per same shall she should since so
    some such than that the their theirs them themselves then there therefore these they this those
    through thus to too under until up upon us very via was we were what when where whether which
    while who whom whose why will with within without would yet you your yours yourself including
    included includes include certain approximately among amongst across along around based
    related respectively well one two three four five first second new many much""".split()
)
# Verbs common in report prose: never the subject of an offline question.
_VERBS = frozenset(
    """affect affects believe believes describe describes discuss discusses include includes provide
    provides represent represents remain remains consist consists expect expects intend intends
    require requires result resulted continue continues make makes made become becomes became see
    sees get gets use uses apply applies relate relates occur occurs reflect reflects say says said
    increase increases decrease decreases grow grows grew shown show shows exist exists seek seeks
    allow allows enable enables help helps need needs want wants take takes took give gives gave
    believe believed estimate estimates determine determines recognize recognizes recorded record""".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9&'\-]*[A-Za-z0-9]|[A-Za-z]|\$?\d+(?:[.,]\d+)*%?")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+(?=[A-Z0-9\"'(\u201c$])|\n\s*\n|\n(?=\s*[-\u2022*]\s)")

_OFFLINE_TEMPLATES_1 = (
    "What does the document say about {a}?",
    "What is stated about {a}?",
    "What information is given on {a}?",
)
_OFFLINE_TEMPLATES_2 = (
    "What does the document say about {a} and {b}?",
    "How does the text relate {a} to {b}?",
    "What is reported about {a} in connection with {b}?",
)
_OFFLINE_TEMPLATES_3 = (
    "What is said about {a}, {b} and {c}?",
    "Which facts link {a} with {b} and {c}?",
)


class OfflineGenerator:
    """Pseudo-queries drawn from the chunk itself: no LLM, no network, deterministic.

    Method, per chunk:

    1. Split the chunk into sentences and words; drop stop words.
    2. Weight each word by ``(1 + log tf) * idf``: tf within the chunk; idf from
       :meth:`fit` over all chunks when fitted (``generate_questions`` does that), else a
       proxy favouring long, capitalised and numeric words.
    3. Rank sentences by the mean weight of their best four keywords; take the top ``n``
       (cycling with the next-best keyword when the chunk has fewer sentences).
    4. From each sentence take its top keyword with its neighbouring content words (a key
       phrase of up to three words) plus one or two other keywords, and fill a question
       template ("What does the document say about <phrase> and <keyword>?"). Only keywords
       are kept, so the question is not a copy of the text. The template is picked by a
       random generator seeded with ``seed`` and a CRC of the chunk, so the same chunk always
       gives the same questions.

    These are weaker than an LLM's questions: see :data:`OFFLINE_LIMITS`.

    Example::

        gen = OfflineGenerator()
        gen.generate("Lyft's revenue grew 36% in 2021, driven by ride volume.", 2)
        # ['What is reported about Lyft\\'s revenue in connection with ride volume?', ...]
    """

    kind = "offline"
    limits = OFFLINE_LIMITS

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._df: Counter[str] | None = None
        self._n_docs = 0

    def __repr__(self) -> str:
        return f"OfflineGenerator(seed={self.seed})"

    @property
    def needs_fit(self) -> bool:
        return self._df is None

    def fit(self, texts: Iterable[str]) -> OfflineGenerator:
        """Learn document frequencies over a corpus of chunks (for the idf weights)."""
        df: Counter[str] = Counter()
        n = 0
        for t in texts:
            n += 1
            df.update({w.lower() for w in _WORD.findall(t)})
        self._df, self._n_docs = df, n
        return self

    def _idf(self, word: str) -> float:
        lw = word.lower()
        if self._df is not None and self._n_docs:
            return math.log((1 + self._n_docs) / (1 + self._df.get(lw, 0))) + 1.0
        w = 1.0 + math.log(1 + len(lw))
        if any(c.isdigit() for c in word):
            w *= 1.3
        elif word[:1].isupper():
            w *= 1.2
        return w

    def _is_content(self, word: str) -> bool:
        """A keyword candidate: not a stop word or common verb, not a lower-case -ed/-ly word,
        not two words glued together by PDF extraction ("ofthe", "withclaims")."""
        lw = word.lower()
        if lw in _STOPWORDS or lw in _VERBS or (len(lw) <= 2 and not lw.isdigit()):
            return False
        if not word[:1].isupper() and len(lw) > 4 and lw.endswith(("ed", "ly")):
            return False  # mostly verbs and adverbs ("reported", "materially")
        return not self._glued(lw)

    def _glued(self, lw: str) -> bool:
        """Two stop words run together, or a rare word that splits into two known words (needs :meth:`fit`)."""
        if (
            4 <= len(lw) <= 9
            and lw.isalpha()
            and any(lw[:i] in _STOPWORDS and lw[i:] in _STOPWORDS for i in range(1, len(lw)))
        ):
            return True  # "ofthe", "inthe", "andthe"
        df = self._df
        if df is None or len(lw) < 5 or df.get(lw, 0) > 2 or not lw.isalpha():
            return False

        def known(part: str) -> bool:
            return part in _STOPWORDS or df.get(part, 0) >= 3

        return any(known(lw[:i]) and known(lw[i:]) for i in range(2, len(lw) - 1))

    def generate(self, chunk_text: str, n: int, cancel: Any = None) -> list[str]:
        if n < 1:
            return []
        text = re.sub(r"[ \t]+", " ", chunk_text or "").strip()
        if not text:
            return []
        sentences = [s.strip() for s in _SENTENCE_SPLIT.split(text) if s and s.strip()]
        toks_per_sent = [_WORD.findall(s) for s in sentences]
        content_all = [w for toks in toks_per_sent for w in toks if self._is_content(w)]
        if not content_all:
            return []
        tf = Counter(w.lower() for w in content_all)
        weight = {lw: (1.0 + math.log(c)) * self._idf(lw) for lw, c in tf.items()}
        ranked: list[tuple[float, int]] = []
        for si, toks in enumerate(toks_per_sent):
            kws = sorted({w.lower() for w in toks if self._is_content(w)}, key=lambda k: -weight[k])
            if not kws:
                continue
            score = sum(weight[k] for k in kws[:4]) / min(4, len(kws)) * min(1.0, len(kws) / 3)
            ranked.append((score, si))
        ranked.sort(key=lambda x: (-x[0], x[1]))
        rng = random.Random(self.seed * 1_000_003 + zlib.crc32(text.encode("utf-8")))

        out: list[str] = []
        seen: list[str] = []
        attempts = 0
        while len(out) < n and attempts < n * 4 + 4:
            round_, pos = divmod(attempts, max(1, len(ranked)))
            attempts += 1
            if not ranked:
                break
            si = ranked[pos][1]
            q = self._question(toks_per_sent[si], weight, round_, rng)
            if q is None:
                continue
            if dedupe_questions(seen + [q], 0.85)[-1:] != [len(seen)]:
                continue  # too close to one we already have
            seen.append(q)
            out.append(q)
        return out

    def _question(self, toks: list[str], weight: dict[str, float], round_: int, rng: random.Random) -> str | None:
        content_idx = [i for i, w in enumerate(toks) if self._is_content(w)]
        if not content_idx:
            return None
        by_weight = sorted(content_idx, key=lambda i: (-weight[toks[i].lower()], i))
        # distinct keywords, best first
        order: list[int] = []
        seen_kw: set[str] = set()
        for i in by_weight:
            if toks[i].lower() not in seen_kw:
                seen_kw.add(toks[i].lower())
                order.append(i)
        anchor = order[round_ % len(order)]
        # key phrase: the anchor plus adjacent content words, at most three words
        lo = hi = anchor
        while hi - lo < 2:
            grew = False
            if hi + 1 < len(toks) and self._is_content(toks[hi + 1]):
                hi += 1
                grew = True
            if hi - lo < 2 and lo - 1 >= 0 and self._is_content(toks[lo - 1]):
                lo -= 1
                grew = True
            if not grew:
                break
        phrase = " ".join(toks[lo : hi + 1])
        used = {t.lower() for t in toks[lo : hi + 1]}
        others = [toks[i] for i in order if toks[i].lower() not in used][:2]
        if len(others) >= 2 and rng.random() < 0.35:
            tpl = rng.choice(_OFFLINE_TEMPLATES_3)
            return tpl.format(a=phrase, b=others[0], c=others[1])
        if others:
            return rng.choice(_OFFLINE_TEMPLATES_2).format(a=phrase, b=others[0])
        return rng.choice(_OFFLINE_TEMPLATES_1).format(a=phrase)


class GeneratedQuestions(list):
    """The questions of one model answer (a ``list[str]``), with ``truncated``: the answer was cut at
    ``max_tokens`` (its complete questions are kept), and ``model``: the model the server says wrote them, as
    shown (:func:`core.llm.model_display_name`; ``None`` when the server names none)."""

    def __init__(self, questions: Iterable[str] = (), truncated: bool = False, model: str | None = None):
        super().__init__(questions)
        self.truncated = truncated
        self.model = model


class LLMGenerator:
    """Questions written by a chat model through :class:`core.llm.ChatClient`.

    Args:
        settings: model, endpoint, key, timeouts, retries, concurrency.
        prompt_template: must contain ``{context_str}`` and ``{num_questions_per_chunk}``.
        max_tokens_per_question: the answer's ``max_tokens`` is this per question asked plus
            :data:`MAX_TOKENS_MARGIN` (:func:`question_max_tokens`); ``None`` sends no cap.

    ``generate(chunk_text, n)`` sends the filled template as one user message, parses the
    answer with :func:`parse_questions` and returns at most ``n`` questions (a
    :class:`GeneratedQuestions`, naming the model the server says answered: a local server
    answers whatever model name it is sent, so ``model`` is only the name asked for). An answer cut at ``max_tokens`` keeps the questions it
    completed (:func:`complete_part`). An answer with no question in it is asked again once
    (with four times the cap when it was cut: a model that reasons first); a second one raises
    ``LLMError(kind="bad_response")``.
    """

    kind = "llm"

    def __init__(
        self,
        settings: LLMSettings | None = None,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        client: ChatClient | None = None,
        max_tokens_per_question: int | None = MAX_TOKENS_PER_QUESTION,
    ):
        self.prompt_template = validate_prompt_template(prompt_template)
        self.client = client or ChatClient(settings or LLMSettings())
        self.settings = self.client.settings
        self.max_tokens_per_question = max_tokens_per_question

    def __repr__(self) -> str:
        return f"LLMGenerator(model={self.settings.model!r}, base_url={self.settings.base_url!r})"

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def concurrency(self) -> int:
        return self.settings.concurrency

    def messages(self, chunk_text: str, n: int) -> list[dict]:
        return [{"role": "user", "content": fill_prompt(self.prompt_template, chunk_text, n)}]

    def max_tokens(self, n: int) -> int | None:
        """The ``max_tokens`` of an answer asked for ``n`` questions (``None``: no cap)."""
        if not self.max_tokens_per_question:
            return None
        return question_max_tokens(n, self.max_tokens_per_question)

    def generate(self, chunk_text: str, n: int, cancel: Any = None) -> GeneratedQuestions:
        messages = self.messages(chunk_text, n)
        answer = ""
        cap = self.max_tokens(n)
        cut_at = None
        for attempt in range(2):
            try:
                reply = self.client.chat(messages, max_tokens=cap, cancel=cancel)
            except LLMError as err:
                if err.kind != "bad_response" or attempt == 1:
                    raise
                continue
            answer = reply.text
            qs = parse_questions(complete_part(answer) if reply.truncated else answer, n)
            if qs:
                answered = getattr(self.client, "answering_model", lambda m: m)(reply.model)
                return GeneratedQuestions(qs, truncated=reply.truncated, model=model_display_name(answered))
            cut_at = cap if reply.truncated else None
            if cut_at:
                cap = cut_at * 4  # cut before a whole question: room for a model that reasons before it answers
        preview = re.sub(r"\s+", " ", answer)[:120]
        cut = f"; it was cut at {cut_at} tokens (max_tokens)" if cut_at else ""
        raise LLMError(
            f"The model {self.settings.model!r} answered twice without a usable question "
            f"(answer began: {preview!r}{cut}). Check the model and the prompt template: the answer "
            "should list questions, one per line, each ending with '?'.",
            kind="bad_response",
        )


def generation_key(generator: QuestionGenerator, n: int, prompt_template: str | None = None) -> str:
    """A short hash naming this way of generating (kind, model, template, n; never the key).

    Chunks done under one key are skipped when the same generation runs again (resume);
    changing the model, the template or ``n`` starts a new key.
    """
    kind = getattr(generator, "kind", type(generator).__name__)
    if prompt_template is None:
        prompt_template = getattr(generator, "prompt_template", None)
    spec: dict[str, Any] = {"kind": kind, "n": int(n)}
    if kind == "offline":
        spec.update(seed=getattr(generator, "seed", 0), version=OFFLINE_VERSION)
        spec.update(getattr(generator, "generation_spec", None) or {})  # other offline methods (core.pseudo_queries)
    else:
        spec.update(model=getattr(generator, "model", None), template=prompt_template)
    blob = json.dumps(spec, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:24]
