"""Importing real queries from a CSV: text and page matching, what cannot be matched, provenance."""

from __future__ import annotations

import time

import numpy as np
import pytest

from core.datasets import DatasetError, QADataset
from core.provenance import eval_set_info, question_sources
from core.questions import list_datasets, load_dataset
from core.real_queries import import_real_queries, parse_queries_csv, save_real_queries

CHUNKS = {
    # doc, idx, page_start, page_end, text
    "a0": ("doc-annual", 0, 1, 1, "Revenue grew 36% to $3.2 billion in 2021, driven by ride volume."),
    "a1": ("doc-annual", 1, 2, 2, "Our Chief Executive Officer is Logan Green. The board has nine members"),
    "a2": ("doc-annual", 2, 2, 3, "and meets four times a year. Insurance costs rose sharply during the period."),
    "h0": ("doc-handbook", 0, 1, 1, "Employees may work remotely up to three days per week with approval."),
}


def _ws_with_chunks(ws):
    now = time.time()
    with ws.db() as con:
        for did, name, pages in (("doc-annual", "annual_report.pdf", 3), ("doc-handbook", "Handbook.pdf", 1)):
            con.execute(
                "INSERT INTO documents(id, filename, size_bytes, pages, chars, status, added_at) "
                "VALUES (?, ?, 1, ?, 1, 'ok', ?)",
                (did, name, pages, now),
            )
        for cid, (did, idx, p0, p1, text) in CHUNKS.items():
            con.execute(
                "INSERT INTO chunks(id, doc_id, idx, text, page_start, page_end, n_tokens) VALUES (?, ?, ?, ?, ?, ?, 10)",
                (cid, did, idx, text, p0, p1),
            )
    return ws


CSV = """query,relevant_text,page,document
How much did revenue grow?,"revenue grew 36%  to $3.2 billion",,
Who runs the company?,Logan Green,,
How often does the board meet?,The board has nine members and meets four times a year,,
Can I work from home?,,1,handbook
What happened to insurance?,,3,annual_report.pdf
Where is the office?,The headquarters are in San Francisco,,
Page without a document?,,2,
Missing page,,9,annual_report
who runs the company?,,2,annual_report.pdf
"""


def test_text_and_page_matching_and_the_rows_that_fail(ws):
    ds, report = import_real_queries(_ws_with_chunks(ws), CSV.encode("utf-8"))
    by_text = {t: ds.relevant_docs[q] for q, t in ds.queries.items()}
    assert by_text["How much did revenue grow?"] == ["a0"]  # exact, ignoring case and spacing
    assert by_text["How often does the board meet?"] == ["a1", "a2"]  # straddles two chunks: both count
    assert by_text["Can I work from home?"] == ["h0"]  # page 1 of Handbook.pdf (name without extension, any case)
    assert by_text["What happened to insurance?"] == ["a2"]  # page 3 falls in a2's pages 2-3
    # the repeated query (other case) is merged: chunks of both rows
    assert by_text["Who runs the company?"] == ["a1", "a2"] and report.merged == 1
    assert report.rows == 9 and report.matched == 6 and len(ds.queries) == 5
    assert report.by_method == {"exact text": 2, "word overlap": 1, "page": 3}
    reasons = {u["row"]: u["reason"] for u in report.unmatched}
    assert set(reasons) == {7, 8, 9}
    assert reasons[7].startswith("no chunk contains this text (best word overlap")
    assert "add a 'document' column" in reasons[8]
    assert reasons[9] == "no chunk on page 9 of annual_report.pdf (3 pages)"
    assert report.summary() == (
        "6 of 9 rows matched (3 page, 2 exact text, 1 word overlap); 3 not matched; 1 repeated queries merged"
    )
    assert set(ds.corpus) == set(CHUNKS)  # retrieval over everything users search
    assert all(q.startswith("imported-") for q in ds.queries)
    assert ds.node_meta["h0"]["filename"] == "Handbook.pdf"


def test_a_passage_found_in_many_chunks_does_not_say_where_the_answer_is(ws):
    # a one-letter "answer" is in every chunk: marking them all relevant would make the query a sure hit
    csv_text = "query,relevant_text,page,document\nx?,e,,\nremote work?,e,1,handbook\n"
    ds, report = import_real_queries(_ws_with_chunks(ws), csv_text)
    assert [u["row"] for u in report.unmatched] == [2]
    assert report.unmatched[0]["reason"].startswith("the relevant text is in 4 chunks, too many")
    assert "its page and document" in report.unmatched[0]["reason"]
    # within the document named beside it, the same text is in one chunk: that locates the answer
    assert list(ds.relevant_docs.values()) == [["h0"]] and report.by_method == {"exact text": 1}


def test_embedding_similarity_matches_a_paraphrase(ws):
    class Fake:
        def embed_texts(self, texts, progress=None):
            return np.array(
                [[1.0, 0.1] if ("office" in t or "headquarters" in t.lower()) else [0.0, 1.0] for t in texts],
                dtype=np.float32,
            )

    _ws_with_chunks(ws)
    with ws.db() as con:
        con.execute("UPDATE chunks SET text='Our main office is located downtown.' WHERE id='h0'")
    ds, report = import_real_queries(
        ws, "query,text\nWhere is the office?,The headquarters are in the city centre\n", embedder=Fake()
    )
    assert list(ds.relevant_docs.values()) == [["h0"]] and report.by_method == {"embedding similarity": 1}


def test_saved_imports_say_where_the_questions_come_from(ws):
    ds, report = import_real_queries(_ws_with_chunks(ws), CSV)
    did = save_real_queries(ws, ds, "support questions (real)", report)
    row = next(d for d in list_datasets(ws) if d["id"] == did)
    assert row["role"] == "eval" and row["meta"]["sources"] == {"imported": 5}
    assert row["meta"]["import"]["unmatched"] == 3
    info = eval_set_info(ws, load_dataset(ws, did), row["name"], dataset_id=did)
    assert info["sources"] == {"imported": 5} and info["documents"] == ["Handbook.pdf", "annual_report.pdf"]
    # the id prefix survives a round trip through a plain JSON file
    path = ds.save(ws.root / "eval.json")
    assert question_sources(ws, QADataset.load(path))["sources"] == {"imported": 5}
    # never added to the questions table (so never to a training split)
    assert ws.query("SELECT COUNT(*) AS n FROM questions")[0]["n"] == 0


@pytest.mark.parametrize(
    "data, message",
    [
        ("", "empty"),
        ("question;notes\nx;y\n", "a 'relevant_text' or a 'page' column"),
        ("text,page\na,1\n", "no 'query' column"),
        ("query,page\n", "no rows"),
        (b"\xff\xfequery", "not UTF-8"),
    ],
)
def test_unreadable_files_say_what_is_wrong(data, message):
    with pytest.raises(DatasetError, match=message):
        parse_queries_csv(data)


def test_semicolons_and_aliases(ws):
    rows = parse_queries_csv("Question;Relevant Text\nWhat grew?;Revenue grew 36%\n")
    assert rows == [{"row": 2, "query": "What grew?", "text": "Revenue grew 36%", "page": "", "document": ""}]
    with pytest.raises(DatasetError, match="no query could be matched"):
        import_real_queries(_ws_with_chunks(ws), "query,page,document\nx,7,nowhere.pdf\n")


def test_a_page_below_1_and_thresholds_out_of_range_are_refused(ws):
    """A page of -2 was read as page 2; a min_cosine of -3 matched any row to some chunk."""
    w = _ws_with_chunks(ws)
    csv = "query,page,document\nWhat is on it?,-2,annual_report.pdf\nAnd here?,p. 2,annual_report.pdf\n"
    ds, report = import_real_queries(w, csv.encode())
    assert report.matched == 1 and list(ds.queries.values()) == ["And here?"]
    assert report.unmatched[0]["reason"] == "page '-2' is not a page number (1 or more)"
    for kw in ({"min_cosine": -3.0}, {"min_overlap": 5.0}, {"min_cosine": 0.0}):
        with pytest.raises(ValueError, match="must be above 0 and at most 1"):
            import_real_queries(w, csv.encode(), **kw)
