"""Questions: generators (LLM and offline), parsing, de-duplication, the question set, datasets and splits.

The pipeline step is (chunk) -> N questions about it, each question paired with the chunk it
came from; that pairing is the training signal, exactly as LlamaIndex's
``generate_qa_embedding_pairs`` builds it. Datasets are :class:`core.datasets.QADataset`
(LlamaIndex ``EmbeddingQAFinetuneDataset`` JSON).

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
import json
import logging
import math
import random
import re
import threading
import time
import unicodedata
import uuid
import zlib
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable, Protocol, Sequence

from .datasets import DatasetError, QADataset
from .keys import scrub
from .llm import ChatClient, LLMError, LLMSettings, fill_prompt, run_bounded
from .workspace import Workspace, atomic_write_json, new_id

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

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
    "is", "are", "was", "were", "do", "does", "did", "can", "could", "should", "would", "will",
    "has", "have", "had", "may", "might", "must", "shall", "am",
}
_IMPERATIVE = {"describe", "explain", "identify", "name", "list", "summarize", "summarise", "compare", "discuss", "outline", "state"}
_PREPOSITIONS = {"in", "on", "for", "from", "by", "during", "according", "under", "to", "at", "of", "with", "based", "per", "as", "given"}
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


def _looks_like_question(s: str) -> bool:
    words = s.split()
    if len(words) < 3 or len(s) < 10:
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
class QuestionGenerator(Protocol):
    kind: str  # "llm" | "offline" (also the questions' source)

    def generate(self, chunk_text: str, n: int) -> list[str]: ...


OFFLINE_LIMITS = (
    "Offline pseudo-queries are built from the chunk's own keywords, not written by a language "
    "model: they are weaker than an LLM's questions (they share words with the chunk instead of "
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

    def fit(self, texts: Iterable[str]) -> "OfflineGenerator":
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
        if 4 <= len(lw) <= 9 and lw.isalpha() and any(
            lw[:i] in _STOPWORDS and lw[i:] in _STOPWORDS for i in range(1, len(lw))
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


class LLMGenerator:
    """Questions written by a chat model through :class:`core.llm.ChatClient`.

    Args:
        settings: model, endpoint, key, timeouts, retries, concurrency.
        prompt_template: must contain ``{context_str}`` and ``{num_questions_per_chunk}``.

    ``generate(chunk_text, n)`` sends the filled template as one user message, parses the
    answer with :func:`parse_questions` and returns at most ``n`` questions. An answer with
    no question in it is asked again once; a second one raises ``LLMError(kind="bad_response")``.
    """

    kind = "llm"

    def __init__(self, settings: LLMSettings | None = None, prompt_template: str = DEFAULT_PROMPT_TEMPLATE, client: ChatClient | None = None):
        self.prompt_template = validate_prompt_template(prompt_template)
        self.client = client or ChatClient(settings or LLMSettings())
        self.settings = self.client.settings

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

    def generate(self, chunk_text: str, n: int, cancel: Any = None) -> list[str]:
        messages = self.messages(chunk_text, n)
        answer = ""
        for attempt in range(2):
            try:
                answer = self.client.complete(messages, cancel=cancel)
            except LLMError as err:
                if err.kind != "bad_response" or attempt == 1:
                    raise
                continue
            qs = parse_questions(answer, n)
            if qs:
                return qs
        preview = re.sub(r"\s+", " ", answer)[:120]
        raise LLMError(
            f"The model {self.settings.model!r} answered twice without a usable question "
            f"(answer began: {preview!r}). Check the model and the prompt template: the answer "
            "should list questions, one per line, each ending with '?'.",
            kind="bad_response",
        )


def generation_key(generator: Any, n: int, prompt_template: str | None = None) -> str:
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
        existing = [r[0] for r in con.execute("SELECT text FROM questions WHERE chunk_id=? ORDER BY created_at", (chunk_id,))]
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


def pending_chunks(ws: Workspace, generator: Any, questions_per_chunk: int, doc_ids: Sequence[str] | None = None,
                   chunk_ids: Sequence[str] | None = None) -> list[dict]:
    """The chunks a :func:`generate_questions` run with these settings would still call the
    generator for (the rest are done under the same generation key): what an estimate counts."""
    key = generation_key(generator, questions_per_chunk)
    done_ids = {r["chunk_id"] for r in ws.query("SELECT chunk_id FROM generation_done WHERE gen_key=?", (key,))}
    return [c for c in _select_chunks(ws, doc_ids, chunk_ids) if c["id"] not in done_ids]


def generate_questions(
    ws: Workspace,
    generator: Any,
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
    time. A chunk that fails after its retries is listed in ``failures`` and not marked done.
    After ``max_consecutive_failures`` failures in a row (or one rejected key) generation
    stops with an :class:`LLMError` whose ``report`` attribute holds the report so far.

    ``progress(handled, total, message)`` is called after each chunk; ``cancel`` is a
    ``threading.Event``: once set, no new chunk starts (those in flight are still saved).

    Returns ``{"gen_key", "chunks_total", "chunks_done_before", "chunks_done_now",
    "questions_added", "failures": [{"chunk_id", "error"}], "cancelled"}``.
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
        "failures": [],
        "cancelled": False,
    }
    if not todo:
        if progress:
            progress(len(chunks), len(chunks), "all chunks already have questions")
        return report
    if getattr(generator, "needs_fit", False) and hasattr(generator, "fit"):
        generator.fit(r["text"] for r in ws.query("SELECT text FROM chunks ORDER BY doc_id, idx"))
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
    state: dict[str, Any] = {"consecutive": 0, "last": None, "fatal": None, "handled": 0}

    def work(chunk: dict) -> list[str]:
        if takes_cancel:
            return generator.generate(chunk["text"], n, cancel=token)
        return generator.generate(chunk["text"], n)

    def on_result(i: int, res: Any) -> None:
        chunk = todo[i]
        if isinstance(res, BaseException):
            if isinstance(res, LLMError) and res.kind == "cancelled":
                return
            report["failures"].append({"chunk_id": chunk["id"], "error": scrub(res)})
            state["consecutive"] += 1
            state["last"] = res
            if isinstance(res, LLMError) and res.kind in ("auth", "bad_request"):
                state["fatal"] = res
                stop.set()
            elif state["consecutive"] >= max_consecutive_failures:
                state["fatal"] = res
                stop.set()
            log.warning("questions: chunk %s failed: %s", chunk["id"], res)
            msg = f"chunk {chunk['idx']} of {chunk['doc_id'][:12]} failed: {scrub(res)}"
        else:
            added = _save_chunk_questions(ws, chunk["id"], list(res or []), key, n, source, dedupe_threshold)
            report["chunks_done_now"] += 1
            report["questions_added"] += added
            state["consecutive"] = 0
            msg = f"{report['chunks_done_before'] + report['chunks_done_now']} of {len(chunks)} chunks done"
        state["handled"] += 1
        if progress:
            progress(report["chunks_done_before"] + state["handled"], len(chunks), msg)

    run_bounded(work, todo, concurrency, on_result, token)
    report["cancelled"] = bool(cancel is not None and cancel.is_set())
    fatal = state["fatal"]
    if fatal is not None:
        why = (
            "the server rejected the request"
            if isinstance(fatal, LLMError) and fatal.kind in ("auth", "bad_request")
            else f"{state['consecutive']} chunks in a row failed"
        )
        msg = (
            f"Stopped generating questions: {why}. {report['chunks_done_now']} chunk(s) were saved in this run; "
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


# ------------------------------------------------------------------------------------------------
# the question set
# ------------------------------------------------------------------------------------------------
PREVIEW_CHARS = 160


def list_questions(ws: Workspace, search: str | None = None, doc_id: str | None = None, limit: int | None = None) -> list[dict]:
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


# ------------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------------
def build_dataset(ws: Workspace, doc_ids: Sequence[str] | None = None, sources: Sequence[str] | None = None) -> QADataset:
    """The workspace's questions as a :class:`QADataset`.

    Corpus: every chunk of the chosen documents (all documents by default), whether or not
    it has questions, so retrieval is measured against the whole document. Queries: the
    questions about those chunks, each relevant to its own chunk. ``node_meta`` holds
    ``{doc_id, filename, page_start, page_end}`` per chunk. ``sources`` keeps only questions
    from those generators (``llm``, ``offline``, ``import``, ``manual``).
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
        c["id"]: {"doc_id": c["doc_id"], "filename": c["filename"], "page_start": c["page_start"], "page_end": c["page_end"]}
        for c in chunks
    }
    queries: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    keep_sources = set(sources) if sources else None
    for q in ws.query("SELECT id, chunk_id, text, source FROM questions ORDER BY created_at, id"):
        if keep_sources is not None and q["source"] not in keep_sources:
            continue
        if q["chunk_id"] in corpus and q["text"].strip():
            queries[q["id"]] = q["text"]
            relevant[q["id"]] = [q["chunk_id"]]
    if not queries:
        raise DatasetError("The chosen documents have no questions yet: generate or add questions first.")
    ds = QADataset(queries, corpus, relevant, "text", node_meta)
    ds.validate("workspace dataset")
    return ds


def _node_doc(ds: QADataset, nid: str) -> str | None:
    meta = ds.node_meta.get(nid) or {}
    return meta.get("doc_id") or meta.get("filename")


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
    ``round(val_fraction * n_documents)`` documents, at least one each side). Each side's
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
        missing = [nid for nid in ds.corpus if _node_doc(ds, nid) is None]
        if missing:
            raise ValueError(
                "This dataset has no document information for its chunks (e.g. an imported file), so it "
                "cannot be split by document: split by chunk instead."
            )
        node_doc = {nid: _node_doc(ds, nid) for nid in ds.corpus}
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
        else:
            k = min(len(docs) - 1, max(1, round(val_fraction * len(docs))))
            shuffled = docs[:]
            rng.shuffle(shuffled)
            val_set = set(shuffled[:k])
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


def question_source_counts(ws: Workspace) -> dict[str, int]:
    """How many questions each generator made: ``{"llm": 120, "offline": 40, ...}``."""
    rows = ws.query("SELECT source, COUNT(*) AS n FROM questions GROUP BY source ORDER BY source")
    return {r["source"]: int(r["n"]) for r in rows}
