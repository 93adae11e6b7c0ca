"""Offline question methods (core.pseudo_queries): inverse cloze, headings, mixture, the registry."""

from __future__ import annotations

import pytest

from core.pseudo_queries import (
    DEFAULT_OFFLINE_METHOD,
    OFFLINE_METHODS,
    ClozeGenerator,
    HeadingGenerator,
    MixtureGenerator,
    is_heading,
    offline_generator,
)
from core.questions import (
    OfflineGenerator,
    build_dataset,
    generate_questions,
    generation_key,
)
from core.workspace import Workspace

CHUNKS = [
    (
        "Our Growth Strategy\n"
        "We plan to expand the bike-share network into twelve additional metropolitan regions next year. "
        "Our business could be adversely affected by many factors. "
        "Ok."
    ),
    (
        "Autonomous vehicle partnerships with Motional will start commercial service in Las Vegas. "
        "Our business could be adversely affected by many factors."
    ),
    (
        "Risks Related to Operational Factors\n"
        "Insurance reserves for auto liability claims rose sharply because claim severity increased."
    ),
]


def fitted(gen):
    return gen.fit(CHUNKS)


def test_cloze_takes_an_informative_sentence_and_masks_its_key_word():
    gen = fitted(ClozeGenerator())
    qs = gen.generate(CHUNKS[0], 2)
    assert len(qs) == 1  # the boilerplate sentence (also in chunk 2) and the 1-word sentence are skipped
    q = qs[0]
    assert q.endswith("?") and "metropolitan" in q.lower() or "bike-share" in q.lower()
    sentence = "We plan to expand the bike-share network into twelve additional metropolitan regions next year"
    assert q.rstrip("?") != sentence  # one distinctive word is gone: not a verbatim copy
    assert len(q.split()) == len(sentence.split()) - 1
    assert gen.generate(CHUNKS[0], 2) == qs  # deterministic
    assert gen.generate("", 2) == [] and gen.generate(CHUNKS[0], 0) == []


def test_cloze_without_mask_keeps_the_sentence():
    q = fitted(ClozeGenerator(mask=False)).generate(CHUNKS[2], 1)[0]
    assert q == "Insurance reserves for auto liability claims rose sharply because claim severity increased?"


def test_cloze_works_unfitted_and_skips_sentences_with_few_keywords():
    qs = ClozeGenerator().generate(CHUNKS[1], 3)
    # "Our business could be adversely affected by many factors" has under three keywords
    assert len(qs) == 1 and qs[0].endswith("?") and "Motional" in qs[0]


@pytest.mark.parametrize(
    "sentence,expected",
    [
        # pointers elsewhere in the document, contents lines, check boxes: nobody searches with these
        ("For further information, see Note 2 of the notes to our consolidated financial statements", False),
        ("The following financial statements are included in Part II, Item 8 of this report", False),
        ("Security Ownership of Certain Beneficial Owners and Related Stockholder Matters Item 13", False),
        ("Refer to Note 17 to the consolidated financial statements for the 2020 events", False),
        ("Yes \u2612 No \u2610 Indicate by check mark whether the registrant is a shell company", False),
        # a table row flattened into text: numbers side by side, twice
        ("Operating cash flows from operating leases $ 80,329 $ 67,825 from finance leases 1,102 1,980", False),
        # prose, numbers and a mention of a note without a pointer included
        ("Revenue increased 36% to $3.2 billion in 2021 compared to 2020, driven by ride volume", True),
        ("Revenue was 3,208 million and 2,365 million in 2021 and 2020", True),
        ("The Company agrees to employ you in the position of Chief Financial Officer", True),
        ("Holders of the notes may convert them at any time before maturity", True),
    ],
)
def test_cloze_statement_filter(sentence, expected):
    assert ClozeGenerator.is_statement(sentence) is expected


def test_cloze_skips_a_navigation_sentence_for_the_next_best_one():
    chunk = (
        "Insurance reserves for auto liability claims rose sharply because claim severity increased. "
        "For details on the insurance reserves and claim severity see Note 9 of the consolidated statements."
    )
    qs = ClozeGenerator(mask=False).generate(chunk, 2)
    assert qs == ["Insurance reserves for auto liability claims rose sharply because claim severity increased?"]


@pytest.mark.parametrize(
    "line,expected",
    [
        ("Our Growth Strategy", True),
        ("Risks Related to Operational Factors", True),
        ("Item 7. Management's Discussion and Analysis", True),
        ("Competition", True),
        ("• our ability to attract and retain qualified drivers;", False),
        ("We depend on our key personnel and other highly skilled personnel.", False),
        ("LyftUp programs included:", False),
        ("By: /s/ Logan Green", False),
        ("Revenue 3,208,323 2,364,681 3,615,960", False),
        ("the continued challenges of a rapidly-evolving industry", False),
    ],
)
def test_is_heading(line, expected):
    assert is_heading(line) is expected


def test_headings_ask_the_chunk_its_own_and_the_preceding_heading():
    gen = fitted(HeadingGenerator())
    assert gen.generate(CHUNKS[0], 2) == ["What about our Growth Strategy?"]
    # chunk 2 has no heading of its own: it continues the section chunk 1 ended in
    assert gen.generate(CHUNKS[1], 2) == ["What about our Growth Strategy?"]
    # chunk 3's own heading; the heading further back (chunk 2 had none) is not used
    assert gen.generate(CHUNKS[2], 2) == ["What about Risks Related to Operational Factors?"]
    assert HeadingGenerator().generate("no heading here, just words.", 2) == []


def test_mixture_takes_each_method_in_turn():
    gen = fitted(MixtureGenerator())
    qs = gen.generate(CHUNKS[0], 3)
    assert len(qs) == 3
    assert qs[0] == "What about our Growth Strategy?"  # headings first
    assert qs[1] == fitted(ClozeGenerator()).generate(CHUNKS[0], 1)[0]  # then cloze
    assert qs[2] in fitted(OfflineGenerator()).generate(CHUNKS[0], 3)  # then keywords


def test_registry_and_errors():
    assert DEFAULT_OFFLINE_METHOD in OFFLINE_METHODS
    assert set(OFFLINE_METHODS) >= {"keywords", "cloze", "headings", "mixture"}
    assert isinstance(offline_generator("keywords"), OfflineGenerator)
    for m in OFFLINE_METHODS:
        g = offline_generator(m, seed=1)
        assert g.kind == "offline" and g.seed == 1
    with pytest.raises(ValueError, match="unknown offline method 'nope'.*keywords"):
        offline_generator("nope")


def test_each_method_has_its_own_generation_key_and_keywords_keep_theirs():
    keys = {m: generation_key(offline_generator(m), 2) for m in OFFLINE_METHODS}
    assert len(set(keys.values())) == len(keys)
    assert keys["keywords"] == generation_key(OfflineGenerator(), 2)  # unchanged: existing workspaces resume
    assert generation_key(ClozeGenerator(mask=False), 2) != keys["cloze"]


def test_generate_questions_in_a_workspace_fits_in_document_order(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.db() as con:
        con.execute(
            "INSERT INTO documents(id, filename, size_bytes, pages, chars, extractor, status, added_at) "
            "VALUES ('d1', 'a.pdf', 1000, 1, 500, 'test', 'ok', 0)"
        )
        for i, t in enumerate(CHUNKS):
            con.execute(
                "INSERT INTO chunks(id, doc_id, idx, text, page_start, page_end, n_tokens) "
                "VALUES (?, 'd1', ?, ?, 1, 1, 10)",
                (f"c{i}", i, t),
            )
    report = generate_questions(ws, offline_generator("headings"), questions_per_chunk=2)
    assert report["questions_added"] == 3
    ds = build_dataset(ws, sources=["offline"])
    by_chunk = {ds.relevant_docs[q][0]: t for q, t in ds.queries.items()}
    assert by_chunk["c1"] == "What about our Growth Strategy?"  # learnt from chunk c0 by fit()
    again = generate_questions(ws, offline_generator("headings"), questions_per_chunk=2)
    assert again["chunks_done_now"] == 0  # resumes under its own key
    assert generate_questions(ws, offline_generator("cloze"), questions_per_chunk=1)["chunks_done_now"] == 3
