"""Dashboard pages with ``streamlit.testing.v1.AppTest``: empty states, the happy path over a
workspace prepared through ``core`` (real PDFs, offline questions, a tiny real training run, a
saved comparison), background jobs started from the pages, and errors shown in words.

Each test gets its own copy of the prepared workspace (``$ADAPTERLAB_WORKSPACE``), so the
``st.cache_resource`` singletons, keyed by workspace root, never leak between tests.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from core.documents import ingest_files
from core.embedders import resolve_embedder
from core.evaluation import compare
from core.generators import DEFAULT_PROMPT_TEMPLATE
from core.launch import build_systems
from core.questions import (
    OFFLINE_LIMITS,
    OfflineGenerator,
    build_dataset,
    generate_questions,
    save_dataset,
    split_dataset,
)
from core.reports import save_comparison
from core.runs import create_run, execute_run
from core.training import TrainConfig
from core.workspace import Workspace
from tests.pdfs import corrupt_pdf_bytes, make_encrypted_pdf, make_text_pdf, sample_report_pages
from ui.widgets import PAGES

pytestmark = pytest.mark.integration  # the real bundled embedding model runs here

ROOT = Path(__file__).resolve().parents[1]
ACTIVE = ("queued", "running")


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / name), default_timeout=60)


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def texts(elements) -> str:
    """The elements' text as a user reads it: Markdown backslash escapes (user text is escaped
    so that it shows as typed, see ``ui.helpers.md_escape``) are removed."""
    return re.sub(r"\\(.)", r"\1", "\n".join(str(e.value) for e in elements))


def frame(at: AppTest, *columns: str):
    """The first table (st.dataframe) that has all these columns, as a pandas DataFrame."""
    for df in at.dataframe:
        value = df.value
        if all(c in value.columns for c in columns):
            return value
    raise AssertionError(f"no table with columns {columns}: {[list(d.value.columns) for d in at.dataframe]}")


def wait_jobs(root: Path, kind: str, timeout: float = 60.0) -> list[dict]:
    """Wait until no job of ``kind`` is queued or running; returns the jobs (newest first)."""
    ws = Workspace(root)
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = ws.query("SELECT * FROM jobs WHERE kind=? ORDER BY created_at DESC", (kind,))
        if jobs and all(j["status"] not in ACTIVE for j in jobs):
            return jobs
        time.sleep(0.1)
    raise AssertionError(f"{kind} job still running after {timeout}s")


def rerun_until_settled(at: AppTest, root: Path, kind: str) -> list[dict]:
    jobs = wait_jobs(root, kind)
    at.run()
    no_exceptions(at)
    return jobs


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Two ingested PDFs, offline questions, a by-document split, a 2-epoch run, a comparison."""
    root = tmp_path_factory.mktemp("prepared") / "ws"
    ws = Workspace(root)
    emb = resolve_embedder("default", workspace=ws)
    pages = sample_report_pages()
    reports = ingest_files(
        ws,
        [("northwind.pdf", make_text_pdf(pages[:2])), ("harbor.pdf", make_text_pdf(pages[2:]))],
        token_counter=emb.token_counter(),
        max_seq_length=emb.max_seq_length,
    )
    assert [r.status for r in reports] == ["ok", "ok"]
    generate_questions(ws, OfflineGenerator(), questions_per_chunk=3)
    full = build_dataset(ws)
    train, val = split_dataset(full, by="document", val_docs=["harbor.pdf"])
    train_id = save_dataset(ws, train, "northwind train", role="train")
    val_id = save_dataset(ws, val, "harbor validation", role="val")
    run_id = create_run(
        ws, TrainConfig(epochs=2, batch_size=8), dataset_id=train_id, val_dataset_id=val_id, name="tiny linear"
    )
    execute_run(ws, run_id)
    systems = [{"kind": "run", "run_id": run_id}]
    cmp = compare(val, build_systems(ws, systems), top_k=5, dataset_name="harbor validation")
    eval_id = save_comparison(
        ws,
        cmp,
        "harbor validation",
        extra={"dataset_id": val_id, "systems": systems, "run_ids": [run_id], "embedder": "default"},
    )
    n_questions = ws.query("SELECT COUNT(*) AS n FROM questions")[0]["n"]
    n_chunks = ws.query("SELECT COUNT(*) AS n FROM chunks")[0]["n"]
    return SimpleNamespace(
        root=root,
        run_id=run_id,
        eval_id=eval_id,
        train_id=train_id,
        val_id=val_id,
        n_questions=n_questions,
        n_chunks=n_chunks,
        n_val=len(val.queries),
        val=val,
    )


@pytest.fixture
def prepared_ws(prepared, tmp_path, monkeypatch) -> Path:
    """A private copy of the prepared workspace, selected through $ADAPTERLAB_WORKSPACE."""
    dst = tmp_path / "ws"
    shutil.copytree(prepared.root, dst)
    monkeypatch.setenv("ADAPTERLAB_WORKSPACE", str(dst))
    return dst


@pytest.fixture
def empty_ws(tmp_path, monkeypatch) -> Path:
    dst = tmp_path / "empty-ws"
    monkeypatch.setenv("ADAPTERLAB_WORKSPACE", str(dst))
    return dst


# ------------------------------------------------------------------------------------------------
# app.py: router and sidebar
# ------------------------------------------------------------------------------------------------
def test_app_routes_and_sidebar_counts(prepared_ws, prepared):
    at = app()
    at.run()
    no_exceptions(at)
    assert [t.value for t in at.title] == ["Documents"]  # the default page
    side = {m.label: m.value for m in at.sidebar.metric}
    assert side == {
        "Documents": "2",
        "Chunks": str(prepared.n_chunks),
        "Questions": str(prepared.n_questions),
        "Runs": "1",
    }
    assert str(prepared_ws) in texts(at.sidebar.code)
    assert "No job running." in texts(at.sidebar.caption)
    for script, title in [
        ("pages/2_questions.py", "Questions"),
        ("pages/3_train.py", "Train"),
        ("pages/4_compare.py", "Compare"),
    ]:
        at.switch_page(script)
        at.run()
        no_exceptions(at)
        assert at.title[0].value == title


def test_each_page_is_served_at_its_own_url(empty_ws):
    """/documents, /questions, /train, /compare. Streamlit serves a default page at the root only: with
    Documents the default page, /documents was "Page not found". The root still opens Documents (a hidden
    default page). AppTest opens no URL, so this reads the pages st.navigation registered (AppTest's record
    of them, which its switch_page resolves against); tests/e2e/test_page_urls_e2e.py opens the URLs in a
    browser, the root's forward to /documents and the Back button included."""
    at = app()
    at.run()
    no_exceptions(at)
    assert [t.value for t in at.title] == ["Documents"]  # what the root opens
    by_url = {
        info["url_pathname"]: Path(str(info["script_path"])).resolve()
        for info in at._registered_pages.values()
        if info.get("url_pathname")  # the root's is ""
    }
    assert by_url == {name: (ROOT / path).resolve() for name, (path, _, _) in PAGES.items()}


def test_training_settings_survive_a_page_change(prepared_ws):
    at = app()
    at.run()
    at.switch_page("pages/3_train.py")
    at.run()
    at.radio(key="train_recipe").set_value("adapter").run()  # the adapter form (auto: fine-tune, then distil)
    at.number_input(key="hp_epochs").set_value(7).run()
    at.switch_page("pages/1_documents.py")
    at.run()
    at.switch_page("pages/3_train.py")
    at.run()
    no_exceptions(at)
    assert at.radio(key="train_recipe").value == "adapter"  # the recipe chosen stays too
    assert at.number_input(key="hp_epochs").value == 7


def test_app_on_an_empty_workspace(empty_ws):
    at = app()
    at.run()
    no_exceptions(at)
    assert {m.label: m.value for m in at.sidebar.metric} == {
        "Documents": "0",
        "Chunks": "0",
        "Questions": "0",
        "Runs": "0",
    }
    assert (empty_ws / "catalog.sqlite").exists()
    assert "Upload PDFs first" in texts(at.info)


# ------------------------------------------------------------------------------------------------
# Documents
# ------------------------------------------------------------------------------------------------
def test_documents_empty_state(empty_ws):
    at = page("1_documents.py")
    at.run()
    no_exceptions(at)
    assert "Upload PDFs first" in texts(at.info)
    assert at.button(key="ingest_start").disabled and at.button(key="ingest_start").label == "Ingest"
    assert at.file_uploader(key="doc_upload_0").accept_multiple_files


def test_documents_hint_follows_the_files_picked(empty_ws):
    """The empty state's hint says the next step there is: with files picked in the uploader it is the
    Ingest button, not "Upload PDFs first"."""
    at = page("1_documents.py")
    at.run()
    assert "Upload PDFs first" in texts(at.info)
    at.file_uploader(key="doc_upload_0").set_value(
        [("report.pdf", make_text_pdf(["Some text. " * 40]), "application/pdf")]
    )
    at.run()
    no_exceptions(at)
    hint = texts(at.info)
    assert "Upload PDFs first" not in hint
    assert "1 file(s) picked, not ingested yet: press **Ingest 1 file(s)**" in hint
    assert at.button(key="ingest_start").label == "Ingest 1 file(s)"


def test_documents_with_only_failed_files_lists_them_apart(empty_ws):
    """No document ingested, two files failed: the counts say 0 documents and 2 files with errors, the
    hint does not send the user to upload as if nothing happened, and each failure is listed with why
    and what to do; nothing is offered for re-chunking."""
    ingest_files(Workspace(empty_ws), [("broken.pdf", corrupt_pdf_bytes()), ("locked.pdf", make_encrypted_pdf())])
    at = page("1_documents.py")
    at.run()
    no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Documents"], metrics["Chunks"], metrics["Files with errors"]) == ("0", "0", "2")
    assert "No document is ingested yet" in texts(at.info) and "Upload PDFs first" not in texts(at.info)
    assert "Files with errors (2)" in [h.value for h in at.subheader]
    listed = texts(at.markdown)
    assert "**broken.pdf** is damaged and cannot be read" in listed
    assert "**locked.pdf** is encrypted: remove the password" in listed
    assert at.button(key="rechunk_start").disabled
    assert not [d for d in at.dataframe if "size (MB)" in d.value.columns]  # no empty documents table


def test_documents_lists_documents_and_chunks(prepared_ws, prepared):
    at = page("1_documents.py")
    at.run()
    no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Documents"] == "2" and metrics["Chunks"] == str(prepared.n_chunks)
    docs = frame(at, "file", "size (MB)")
    assert set(docs["file"]) == {"northwind.pdf", "harbor.pdf"}
    assert set(docs["pages"]) == {2}
    chunks = frame(at, "file", "tokens", "text")
    assert len(chunks) == prepared.n_chunks
    assert "northwind.pdf" in texts(at.markdown)  # the selected chunk's source and pages
    assert any("Northwind Mobility" in t.value for t in at.text)  # its full text

    at.text_input(key="chunk_search").input("Proposition 22").run()
    no_exceptions(at)
    found = frame(at, "file", "tokens", "text")
    assert 1 <= len(found) < prepared.n_chunks
    assert set(found["file"]) == {"harbor.pdf"}
    assert any("Proposition 22" in t.value for t in at.text)


def test_documents_upload_ingests_good_files_and_explains_bad_ones(empty_ws):
    at = page("1_documents.py")
    at.run()
    good = make_text_pdf(sample_report_pages())
    at.file_uploader(key="doc_upload_0").set_value(
        [("report.pdf", good, "application/pdf"), ("broken.pdf", corrupt_pdf_bytes(), "application/pdf")]
    )
    at.run()
    assert at.button(key="ingest_start").label == "Ingest 2 file(s)"
    at.button(key="ingest_start").click().run()
    no_exceptions(at)
    jobs = rerun_until_settled(at, empty_ws, "ingest")
    assert jobs[0]["status"] == "done"
    report = frame(at, "file", "truncated chunks", "error")
    assert list(report["file"]) == ["report.pdf", "broken.pdf"]
    ok = report[report["file"] == "report.pdf"].iloc[0]
    assert ok["pages"] == 4 and ok["chunks"] > 0 and ok["characters"] > 1000
    # the reason in words, once: under "Files with errors", not again in a red box beside the report's row
    assert "broken.pdf" not in texts(at.error)
    assert "each reason in full under “Files with errors” below" in texts(at.warning)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Documents"] == "1" and metrics["Files with errors"] == "1"
    assert at.file_uploader(key="doc_upload_1") is not None  # the uploader was reset for the next batch

    # the lists under the counts hold what the counts count: the document table the one ingested file, with
    # the chunks counted; the failed file apart, with the reason in full
    docs = frame(at, "file", "size (MB)")
    assert list(docs["file"]) == ["report.pdf"] and str(len(docs)) == metrics["Documents"]
    assert str(docs["chunks"].sum()) == metrics["Chunks"]
    assert "Files with errors (1)" in [h.value for h in at.subheader]
    reason = report[report["file"] == "broken.pdf"].iloc[0]["error"]
    assert reason.startswith("broken.pdf ")
    assert f"**broken.pdf**{reason[len('broken.pdf') :]}" in texts(at.markdown)
    assert "Upload PDFs first" not in texts(at.info)

    # forgetting the failure keeps the ingested document and its chunks
    at.button(key="doc_clear_failed").click().run()
    no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Documents"], metrics["Files with errors"]) == ("1", "0")
    assert metrics["Chunks"] == str(ok["chunks"])
    assert list(frame(at, "file", "size (MB)")["file"]) == ["report.pdf"]
    assert "Files with errors (1)" not in [h.value for h in at.subheader]
    assert reason in texts(at.error)  # cleared from the list: the last upload's report still says why


def test_documents_failed_ingest_job_shows_its_error(empty_ws):
    Workspace(empty_ws).set_setting("ui.base_embedder", str(empty_ws / "no-such-model"))
    at = page("1_documents.py")
    at.run()
    at.file_uploader(key="doc_upload_0").set_value(
        [("report.pdf", make_text_pdf(["Some text. " * 40]), "application/pdf")]
    )
    at.run()
    at.button(key="ingest_start").click().run()
    jobs = rerun_until_settled(at, empty_ws, "ingest")
    assert jobs[0]["status"] == "failed"
    assert "failed" in texts(at.error)
    assert jobs[0]["error"] in texts(at.error)


# ------------------------------------------------------------------------------------------------
# Questions
# ------------------------------------------------------------------------------------------------
def test_a_damaged_workspace_catalog_is_said_on_the_page(empty_ws):
    """Not a traceback: which file, and what to do."""
    page("1_documents.py").run()  # creates the workspace
    (empty_ws / "catalog.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 80 + b"garbage" * 50)
    for f in empty_ws.glob("catalog.sqlite-*"):
        f.unlink()
    from ui import state

    state._workspace.clear()  # a new server process: nothing cached
    at = page("1_documents.py")
    at.run()
    no_exceptions(at)
    assert texts(at.error).startswith(f"The workspace catalog {empty_ws / 'catalog.sqlite'} cannot be read (")


def test_questions_empty_state(empty_ws):
    at = page("2_questions.py")
    at.run()
    no_exceptions(at)
    assert "Upload PDFs first" in texts(at.info)
    assert at.button(key="import_start").disabled  # importing stays possible, once a file is chosen


def test_questions_happy_path(prepared_ws, prepared):
    at = page("2_questions.py")
    at.run()
    no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Questions"] == str(prepared.n_questions)
    assert metrics["Chunks with questions"] == f"{prepared.n_chunks} / {prepared.n_chunks}"
    assert OFFLINE_LIMITS in texts(at.warning)  # offline by default (no key) and its limits stated
    editor = at.data_editor[0].value
    assert len(editor) == prepared.n_questions
    assert set(editor["file"]) == {"northwind.pdf", "harbor.pdf"}
    assert editor["chunk preview"].str.len().gt(0).all()
    # split preview (by document, two documents) and the saved datasets
    assert metrics["Train questions"].isdigit() and metrics["Validation questions"].isdigit()
    datasets = frame(at, "name", "role", "corpus chunks")
    assert set(datasets["role"]) == {"train", "val"}
    assert at.download_button(key="export_download") is not None

    at.text_input(key="q_search").input("zzz-no-such-question").run()
    assert len(at.data_editor[0].value) == 0


def test_questions_lists_and_removes_llm_questions_no_user_would_type(prepared_ws, prepared):
    from core.questions import add_question

    ws = Workspace(prepared_ws)
    row = ws.query("SELECT id, text FROM chunks ORDER BY length(text) DESC LIMIT 1")[0]
    chunk = row["id"]
    bad = add_question(ws, chunk, "What does the passage say about revenue?", source="llm")
    good = add_question(ws, chunk, "How much did Northwind's revenue grow in 2021?", source="llm")
    # a copy of the chunk's *later* text: the page checked only a preview of its start
    tail = " ".join(row["text"].split()[-14:])
    assert tail[:40] not in row["text"][:160]
    copy = add_question(ws, chunk, f"Is it true that {tail}?", source="llm")
    at = page("2_questions.py")
    at.run()
    no_exceptions(at)
    # offline questions (sentences by design) are not flagged; the LLM's question about "the passage" is, and the copy
    remove = at.button(key="unsearchable_remove")
    assert remove.label == "Remove these 2"
    remove.click().run()
    no_exceptions(at)
    left = {r["id"] for r in ws.query("SELECT id FROM questions WHERE source = 'llm'")}
    assert left == {good} and not {bad, copy} & left
    assert "Removed 2 unsearchable question(s)." in texts(at.success)


def test_questions_offline_generation_runs_in_background(prepared_ws, prepared):
    at = page("2_questions.py")
    at.run()
    at.number_input(key="gen_n").set_value(1)
    at.button(key="gen_start").click().run()
    no_exceptions(at)
    jobs = rerun_until_settled(at, prepared_ws, "generate")
    assert jobs[0]["status"] == "done"
    assert "question(s) added" in texts(at.success)


def test_questions_offline_method_is_selectable(prepared_ws, prepared):
    from core.pseudo_queries import DEFAULT_OFFLINE_METHOD, OFFLINE_METHOD_HELP, OFFLINE_METHODS

    at = page("2_questions.py")
    at.run()
    box = at.selectbox(key="gen_offline_method")
    assert box.value == DEFAULT_OFFLINE_METHOD and len(box.options) == len(OFFLINE_METHODS)
    assert any("default" in o for o in box.options)
    assert OFFLINE_METHOD_HELP in texts(at.caption)  # what was measured, in plain words
    box.set_value("cloze").run()
    at.number_input(key="gen_n").set_value(1)
    at.button(key="gen_start").click().run()
    no_exceptions(at)
    jobs = rerun_until_settled(at, prepared_ws, "generate")
    assert jobs[0]["status"] == "done" and "offline, cloze" in jobs[0]["title"]
    assert json.loads(jobs[0]["result"])["chunks_done_before"] == 0  # a new method is a new generation, not a resume


def test_questions_llm_without_key_shows_estimate_and_refuses(prepared_ws, prepared):
    at = page("2_questions.py")
    at.run()
    at.radio(key="gen_kind").set_value("llm").run()
    no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["LLM calls"] == str(prepared.n_chunks)
    assert int(metrics["Prompt tokens"].replace(",", "")) > 0
    assert "no key" in texts(at.warning)
    assert at.text_input(key="llm_key_input").value == ""
    at.button(key="gen_start").click().run()
    assert "no API key" in texts(at.error)
    # a key typed in the form is kept in this session only, never shown
    at.text_input(key="llm_key_input").input("sk-test-1234567890").run()
    no_exceptions(at)
    assert "key set (entered in this session)" in texts(at.caption)
    assert "sk-test" not in texts(at.caption) + texts(at.markdown) + texts(at.warning)
    assert at.text_input(key="llm_key_input").value == ""
    assert "sk-test" not in json.dumps([r for r in Workspace(prepared_ws).query("SELECT * FROM settings")])


def test_questions_llm_generation_against_a_local_server(prepared_ws, prepared, fake_openai):
    fake_openai.require_key = "sk-local-test"
    at = page("2_questions.py")
    at.run()
    at.radio(key="gen_kind").set_value("llm").run()
    at.text_input(key="llm_base_url").input(fake_openai.base_url)
    at.text_input(key="llm_model").input("fake-model").run()
    # no key for a local server: said plainly, not as a warning (many need none)
    assert "A local server may need none." in texts(at.caption) and "no key" not in texts(at.warning)
    at.text_input(key="llm_key_input").input("sk-local-test").run()
    assert "key set (entered in this session)" in texts(at.caption)
    at.button(key="gen_start").click().run()
    no_exceptions(at)
    jobs = rerun_until_settled(at, prepared_ws, "generate")
    assert jobs[0]["status"] == "done", jobs[0]["error"]
    assert "question(s) added" in texts(at.success)
    chat = [r for r in fake_openai.requests if r["path"].endswith("/chat/completions")]
    assert len(chat) == prepared.n_chunks
    assert chat[0]["body"]["model"] == "fake-model"
    for f in prepared_ws.rglob("*"):  # the key is never written (catalog, WAL, caches, datasets)
        assert not f.is_file() or b"sk-local-test" not in f.read_bytes(), f


def llm_questions_page(fake_openai, sample: int) -> AppTest:
    """The Questions page set to generate with the local fake LLM server on a sample of ``sample`` chunks."""
    at = page("2_questions.py")
    at.run()
    at.radio(key="gen_kind").set_value("llm").run()
    at.text_input(key="llm_base_url").input(fake_openai.base_url)
    at.text_input(key="llm_model").input("fake-model")
    at.number_input(key="gen_sample").set_value(sample).run()
    return at


def test_questions_llm_generation_on_a_sample_of_chunks(prepared_ws, prepared, fake_openai):
    """ "Sample of chunks" limits the estimate and the LLM calls to that many chunks, and says so in the job."""
    assert prepared.n_chunks > 2
    at = llm_questions_page(fake_openai, sample=2)
    no_exceptions(at)
    assert {m.label: m.value for m in at.metric}["LLM calls"] == "2"
    at.button(key="gen_start").click().run()
    no_exceptions(at)
    jobs = rerun_until_settled(at, prepared_ws, "generate")
    assert jobs[0]["status"] == "done", jobs[0]["error"]
    assert jobs[0]["title"].endswith("for a sample of 2 chunks")
    assert len([r for r in fake_openai.requests if r["path"].endswith("/chat/completions")]) == 2


def test_questions_generation_settings_survive_a_reload_and_nothing_left_is_said(prepared_ws, prepared, fake_openai):
    """The page says Generate again "with the same settings" resumes: after a reload (a new session) the settings
    came back at gpt-4o-mini, no sample and the default template, so "resume" re-asked every chunk under another
    model. The last Generate's settings are the workspace's defaults now (never the key); with every chosen chunk
    done, Generate is off and the page says why."""
    at = llm_questions_page(fake_openai, sample=2)
    at.text_area(key="prompt_template").input(DEFAULT_PROMPT_TEMPLATE + "\nAsk about numbers.").run()
    at.button(key="gen_start").click().run()
    jobs = rerun_until_settled(at, prepared_ws, "generate")
    assert jobs[0]["status"] == "done", jobs[0]["error"]

    again = page("2_questions.py")  # a new session: a reload
    again.run()
    no_exceptions(again)
    assert again.radio(key="gen_kind").value == "llm"
    assert again.text_input(key="llm_model").value == "fake-model"
    assert again.text_input(key="llm_base_url").value == fake_openai.base_url
    assert again.number_input(key="gen_sample").value == 2
    assert again.text_area(key="prompt_template").value.endswith("Ask about numbers.")
    assert {m.label: m.value for m in again.metric}["LLM calls"] == "0"
    assert again.button(key="gen_start").disabled
    assert "Every chosen chunk already has its questions from this model" in texts(again.info)


def test_questions_result_names_the_model_that_answered_and_any_shortfall(prepared_ws, prepared, fake_openai):
    """A local server answers whatever name is typed: the result says which model wrote the questions, and that
    fewer were made than asked for (one per chunk where two were asked)."""
    fake_openai.served_models = ["/models/SmolLM2-135M-Instruct.Q4_1.gguf"]
    fake_openai.set_responder(lambda body: "1. How did Northwind's revenue change in 2021?")
    at = llm_questions_page(fake_openai, sample=2)
    at.button(key="gen_start").click().run()
    jobs = rerun_until_settled(at, prepared_ws, "generate")
    no_exceptions(at)
    assert jobs[0]["status"] == "done", jobs[0]["error"]
    assert "Answered by SmolLM2-135M-Instruct.Q4_1.gguf (you asked for fake-model)." in texts(at.caption).replace(
        "\\", ""
    )
    short = texts(at.info).replace("\\", "")
    assert "of the 4 questions asked for were made" in short and "They count as done with these settings" in short


def test_questions_llm_generation_where_every_chunk_fails_is_an_error(prepared_ws, prepared, fake_openai):
    """Fewer failed chunks than the give-up count end without raising: the page must not show them as a green
    "0 question(s) added"."""
    fake_openai.set_responder(lambda body: "I'm sorry, but I can't help with that request.")
    at = llm_questions_page(fake_openai, sample=2)
    at.button(key="gen_start").click().run()
    jobs = rerun_until_settled(at, prepared_ws, "generate")
    no_exceptions(at)
    assert jobs[0]["status"] == "done", jobs[0]["error"]
    assert "Last generation" not in texts(at.success)
    err = texts(at.error)
    assert "every chunk it tried failed (2), so no question was added. First error: The model 'fake-model'" in err
    assert "ending with '?'. Fix the problem" in err  # one full stop between the quoted error and the advice
    assert "generate again (chunks finished before are kept)" in err


def test_questions_llm_generation_progress_text_counts_the_failed_chunks(
    prepared_ws, prepared, fake_openai, monkeypatch
):
    """The running job's progress text (what the page shows beside its bar) counted a failed chunk as handled with
    no word of it: it says how many failed so far; the result after it still lists the failures."""
    import dataclasses

    from core.jobs import JobContext
    from core.llm import LLMSettings

    resolved = LLMSettings.resolved
    monkeypatch.setattr(LLMSettings, "resolved", lambda self: dataclasses.replace(resolved(self), max_retries=0))
    shown: list[tuple[float, str]] = []  # the job row's progress and message after each report: what the page reads
    report = JobContext.progress

    def recorded(self, done, total, message="", force=False):
        report(self, done, total, message, force)
        row = self.ws.query("SELECT progress, message FROM jobs WHERE id=?", (self.job_id,))[0]
        shown.append((row["progress"], row["message"]))

    monkeypatch.setattr(JobContext, "progress", recorded)
    asked = []

    def responder(body):
        asked.append(body)
        if len(asked) == 1:
            raise RuntimeError("boom")
        return "1. What does the passage say about revenue?\n2. How did revenue change?"

    fake_openai.set_responder(responder)
    at = llm_questions_page(fake_openai, sample=2)
    at.button(key="gen_start").click().run()
    jobs = rerun_until_settled(at, prepared_ws, "generate")
    assert jobs[0]["status"] == "done", jobs[0]["error"]
    assert shown[-1][0] == 1.0 and shown[-1][1].startswith("1 of 2 chunks done · 1 failed"), shown
    assert "1 chunk(s) failed and were not marked done" in texts(at.warning)


def test_questions_import_malformed_json_shows_error(prepared_ws):
    at = page("2_questions.py")
    at.run()
    at.file_uploader(key="import_file_0").set_value(("bad.json", b'{"queries": {', "application/json"))
    at.run()
    at.button(key="import_start").click().run()
    no_exceptions(at)
    assert "Could not import: 'bad.json': not valid JSON" in texts(at.error)  # the file named once


def test_questions_import_real_queries_csv(prepared_ws, prepared):
    at = page("2_questions.py")
    at.run()
    val = prepared.val
    qid = next(iter(val.queries))
    chunk = val.relevant_docs[qid][0]
    rows = [
        "query,relevant_text,page,document",
        f'"How did harbor do?","{val.corpus[chunk][10:80]}",,',
        '"What is on the first page?",,1,harbor.pdf',
        '"Unrelated?","words that appear in no document whatsoever here",,',
    ]
    at.file_uploader(key="real_queries_file").set_value(("real.csv", "\n".join(rows).encode(), "text/csv"))
    at.run()
    at.text_input(key="real_queries_name").input("harbor real queries")
    at.button(key="real_queries_start").click().run()
    no_exceptions(at)
    assert "Imported **harbor real queries** as an evaluation set: 2 of 3 rows matched" in texts(at.success)
    unmatched = frame(at, "row", "query", "reason")
    assert list(unmatched["row"]) == [4] and "no chunk contains this text" in unmatched.iloc[0]["reason"]
    table = frame(at, "name", "role", "corpus chunks")
    assert table[table["name"] == "harbor real queries"]["role"].tolist() == ["eval"]


def test_questions_import_real_queries_error_shows_the_files_text_as_typed(prepared_ws, prepared):
    """A CSV's header names come back in the error: shown as text, never rendered as Markdown (an image link)."""
    at = page("2_questions.py")
    at.run()
    bad = b"![x](http://127.0.0.1:9/t.png),**bold**\nsome,row\n"
    at.file_uploader(key="real_queries_file").set_value(("real*.csv", bad, "text/csv"))
    at.run()
    at.button(key="real_queries_start").click().run()
    no_exceptions(at)
    (err,) = at.error
    assert "\\!\\[x\\]" in err.value and "\\*\\*bold" in err.value  # every Markdown character escaped
    assert texts(at.error).startswith("Could not import real*.csv: no 'query' column (found: ![x](http")  # named once


def test_questions_import_and_save_split(prepared_ws, prepared):
    at = page("2_questions.py")
    at.run()
    data = prepared.val.dumps().encode()
    at.file_uploader(key="import_file_0").set_value(("uber_eval.json", data, "application/json"))
    at.run()
    at.text_input(key="import_name").input("uber eval")
    at.button(key="import_start").click().run()
    no_exceptions(at)
    n = len(prepared.val.queries)
    assert f"Imported uber eval: {n:,} questions over {len(prepared.val.corpus):,} chunks" in texts(at.success)
    assert at.file_uploader(key="import_file_1").value is None  # a fresh uploader: no second, duplicate import
    names = list(frame(at, "name", "role", "corpus chunks")["name"])
    assert "uber eval" in names
    # by document with none picked: the page names the document the seeded pick holds out
    held = [c.value.replace("\\", "") for c in at.caption if c.value.startswith("None picked, so the seeded pick")]
    assert len(held) == 1 and ("harbor.pdf" in held[0]) != ("northwind.pdf" in held[0]), held

    at.radio(key="split_by").set_value("chunk").run()
    shown = texts(at.caption)
    assert "of the" in shown and "questions held out (whole chunks" in shown
    assert "The validation side ranks among every chunk of the documents" in shown
    at.button(key="split_save").click().run()
    no_exceptions(at)
    assert "Saved" in texts(at.success)
    assert len(frame(at, "name", "role", "corpus chunks")) == 5
    # saved again: the second pair gets names of its own (two of one name could not be told apart)
    at.button(key="split_save").click().run()
    names = list(frame(at, "name", "role", "corpus chunks")["name"])
    assert len(names) == 7 and len(set(names)) == 7, names
    assert {"train (by chunk)", "train (by chunk) (2)", "validation (by chunk) (2)"} <= set(names), names
    assert "Saved **train (by chunk) (2)**" in texts(at.success) or "train (by chunk) \\(2\\)" in texts(at.success)


# ------------------------------------------------------------------------------------------------
# Train
# ------------------------------------------------------------------------------------------------
def test_train_empty_state(empty_ws):
    at = page("3_train.py")
    at.run()
    no_exceptions(at)
    assert "Generate questions first" in texts(at.info)
    assert all(b.key != "train_start" for b in at.button)  # no run form without a dataset


def test_train_shows_run_history_curves_and_downloads(prepared_ws, prepared):
    at = page("3_train.py")
    at.run()
    at.radio(key="train_recipe").set_value("adapter").run()  # the adapter form (auto: fine-tune, then distil)
    no_exceptions(at)
    runs = frame(at, "run", "status", "epoch kept")
    assert list(runs["run"]) == ["tiny linear"] and list(runs["status"]) == ["done"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Epochs done"] == "2 / 2"
    assert any(label.startswith("Val MRR@5 (best epoch") for label in metrics)
    assert len(at.get("plotly_chart")) == 0  # "Training curves" is closed: no figure is built
    at.session_state["train_curves_open"] = True  # the user opens it
    at.run()
    no_exceptions(at)
    charts = at.get("plotly_chart")
    assert len(charts) == 1 and "Training loss" in charts[0].proto.spec
    ckpts = frame(at, "checkpoint", "step")
    assert list(ckpts["checkpoint"])[-1].startswith("step_")
    assert at.download_button(key=f"train_download_{prepared.run_id}") is not None
    assert "AdapterEmbeddingModel(base, path, LinearLayer)" in texts(at.caption)  # the class of this run's adapter
    st_export = at.download_button(key=f"st_download_{prepared.run_id}")  # core.export: the model folder zip
    assert st_export is not None and st_export.label == "Sentence-transformers model (zip)"
    assert at.number_input(key="hp_epochs").value == TrainConfig().epochs  # defaults from TrainConfig
    assert at.number_input(key="hp_lr").value == pytest.approx(TrainConfig().lr)


def test_train_does_not_promise_the_configured_epochs_before_cross_validation_chose(prepared_ws, prepared):
    """A run stopped while its folds trained: no selection yet, so no "0 / 12" (the refit may train up to twice
    the configured epochs, or none)."""
    from core.runs import _set_status

    ws = Workspace(prepared_ws)
    run_id = create_run(ws, TrainConfig(epochs=12), dataset_id=prepared.train_id, name="stopped in cv")
    point = {"type": "cv", "lr": 3e-4, "epoch": 0, "gain": 0.0, "gain_se": 0.0, "hit@5 mean": 0.5, "hit@5 std": 0.1}
    (ws.run_dir(run_id) / "history.jsonl").write_text(json.dumps(point) + "\n")
    _set_status(ws, run_id, "cancelled", error="cancelled during cross-validation")
    at = page("3_train.py")
    at.session_state["train_view"] = run_id
    at.run()
    no_exceptions(at)
    epochs = next(m for m in at.metric if m.label == "Epochs done")
    assert epochs.value == "0" and "Cross-validation chooses how many epochs" in epochs.proto.help


def test_train_shows_a_cross_validated_run_by_its_estimate(prepared_ws, prepared):
    """A finished cross-validated run (history as core.training records it: steps, epochs without
    validation, the selection): the out-of-fold gain and the chosen epoch/alpha instead of empty
    hold-out metrics, progress against the chosen epochs, and a loss chart without an empty panel."""
    from core.runs import _set_status
    from core.selection import CVResult

    ws = Workspace(prepared_ws)
    run_id = create_run(ws, TrainConfig(epochs=12), dataset_id=prepared.train_id, name="cv run")
    sel = CVResult(
        design="chunks",
        design_reason="r",
        folds=5,
        top_k=5,
        lr=3e-4,
        epochs=2,
        gain=0.0123,
        gain_se=0.004,
        train=True,
        rule="rule",
        alpha=0.5,
        validation="fold",
        validation_reason="the evaluation set's chunks: the new documents hold the same kinds of text",
        seconds=2.61,
        side_by_side=2,
    ).to_dict()
    events = [{"type": "selection", **sel}]
    for epoch in (1, 2):
        events += [
            {"type": "step", "step": 2 * epoch - i, "epoch": epoch, "loss": 1.0 / epoch, "lr": 3e-4} for i in (1, 0)
        ]
        events.append(
            {"type": "epoch", "epoch": epoch, "step": 2 * epoch, "train_loss": 1.0 / epoch, "val": None, "best": False}
        )
    (ws.run_dir(run_id) / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    from core.train_config import SEPARATE_SOURCES_NOTE

    kept_apart = f"every chunk (40); {SEPARATE_SOURCES_NOTE} (12 offline-only, 28 written-only): each question's ..."
    _set_status(
        ws,
        run_id,
        "done",
        result={
            "best_epoch": 2,
            "base_metrics": None,
            "best_metrics": None,
            "selection": sel,
            "negatives": kept_apart,
        },
    )

    at = page("3_train.py")
    at.session_state["train_view"] = run_id
    at.session_state["train_curves_open"] = True
    at.run()
    no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Epochs done"] == "2 / 2" and metrics["Chosen epoch · α"] == "2 · 0.5", metrics
    # trained on the workspace's offline questions: the estimate says it is a gain on pseudo-queries
    assert metrics["Gain on offline questions (CV)"] == "+1.23 pt", metrics
    assert not any(k.startswith("Val ") for k in metrics), metrics
    assert "This gain is on held-out offline pseudo-queries" in " ".join(c.value for c in at.caption)
    assert "refit on every question for 2 epoch(s)" in texts(at.success)
    assert "(5 folds, new documents)** in 2.6 s (2 folds at a time): estimated gain" in texts(at.success)
    assert "Validation: the evaluation set's chunks: the new documents hold the same kinds of text." in texts(
        at.success
    )
    assert f"Negatives: {kept_apart}." in texts(at.caption)  # offline and written questions were kept apart
    (chart,) = at.get("plotly_chart")
    assert "Training loss" in chart.proto.spec and "Validation (hit@5" not in chart.proto.spec
    history = frame(at, "run", "CV gain (pt)")
    assert list(history["CV gain (pt)"])[0] == 1.23


def test_train_recipe_auto_names_the_ingested_documents_the_questions_are_not_about(prepared_ws):
    """The prepared workspace trains on northwind's questions with harbor.pdf ingested too. Chunked as the app
    chunks (within the 256 tokens the base model reads), Auto trains the adapter and says why; re-chunked longer,
    Auto fine-tunes, then distils, and says why; by hand the adapter recipe brings back its form."""
    from core.documents import ChunkSettings, rechunk

    at = page("3_train.py")
    at.run()
    no_exceptions(at)
    assert at.radio(key="train_recipe").value == "auto"
    # "You will evaluate on" starts at the set Compare opens with: the by-document validation split (harbor)
    named = at.selectbox(key="train_eval_ds")
    assert named.value is not None and named.format_func(named.value).startswith("harbor validation"), named.value
    why = "ingested documents the questions mostly do not ask about: harbor.pdf) are cut into chunks the base model"
    assert f"the evaluation set named; {why} reads whole" in texts(at.caption)
    assert at.number_input(key="hp_epochs") is not None
    # from here the ingested documents alone tell (the saved split keeps the chunks it was cut from)
    at.selectbox(key="train_eval_ds").select_index(0).run()  # "Not named"
    assert f"Auto: the documents you will search ({why} reads whole" in texts(at.caption)
    # the validation's stand-in: harbor's chunks (no northwind question asks about them) and northwind's unasked
    assert re.search(r"Nothing named: the \d+ chunks no training question asks about \(\d+% of \d+\) stand in",
                     texts(at.caption)), texts(at.caption)  # fmt: skip
    emb = resolve_embedder("default")
    rechunk(Workspace(prepared_ws), ChunkSettings(chunk_size=600), emb.token_counter(), emb.max_seq_length)
    at.run()
    no_exceptions(at)
    caption = texts(at.caption)
    assert "Auto: fine-tune, then distil over the documents you will search" in caption
    assert (
        "ingested documents the questions mostly do not ask about: harbor.pdf" in caption and "northwind" not in caption
    )
    assert any(b.key == "train_start_distil" for b in at.button) and all(b.key != "train_start" for b in at.button)
    # what it will cost, before it starts: no fine-tune has run here, so the steps (seconds come with one)
    md = texts(at.markdown)
    assert re.search(r"full fine-tune\*\* of the base model on the training questions \(\d+ steps? of 32 questions: "
                     r"several seconds each on a CPU\)", md), md  # fmt: skip
    assert re.search(r"as the fine-tune does \(\d+ distinct chunks\)", md), md
    assert "The progress bar says the time left once the first steps have run." in texts(at.caption)
    at.radio(key="train_recipe").set_value("adapter").run()
    assert any(b.key == "train_start" for b in at.button) and at.selectbox(key="train_val_ds") is not None


def test_train_page_says_what_a_blind_run_assumes_when_every_chunk_is_asked_about(prepared_ws):
    """Trained on questions about every chunk of both documents with nothing named, nothing stands in for the
    evaluation set: the form says the stricter blind estimate applies and where to say otherwise."""
    from core.datasets import build_dataset, save_dataset
    from core.selection import BLIND_NOTE

    ws = Workspace(prepared_ws)
    everything = save_dataset(ws, build_dataset(ws), "everything", role="train")
    at = page("3_train.py")
    at.run()
    at.selectbox(key="train_ds").set_value(everything).run()
    at.selectbox(key="train_eval_ds").select_index(0).run()  # "Not named"
    at.radio(key="train_recipe").set_value("adapter").run()
    no_exceptions(at)
    caption = texts(at.caption)
    assert BLIND_NOTE[0].upper() + BLIND_NOTE[1:] in caption and "“New questions, same chunks”" in caption
    assert "stand in for the documents you will search" not in caption


def test_the_distil_recipe_states_its_expected_time_at_the_pace_of_this_workspaces_last_fine_tune(
    prepared_ws, prepared
):
    """With a finished fine-tune of the same base model here, the form says how long both runs should take:
    its seconds per question for the fine-tune, its timed re-embedding (scaled) for the distillation."""
    from core.datasets import list_datasets
    from core.distill import _DISTIL_PER_REEMBED
    from core.finetune import FinetuneConfig, duration_text
    from core.runs import _set_status, create_finetune_run

    ws = Workspace(prepared_ws)
    rid = create_finetune_run(ws, FinetuneConfig(), dataset_id=prepared.train_id, name="last week's")
    cost = {"train_seconds": 240.0, "chunks_to_reembed": 100, "reembed_seconds_estimate": 20.0}
    result = {"kind": "finetune", "seconds": 240.0, "steps": 4, "epochs": 1, "n_train_queries": 120, "cost": cost}
    _set_status(ws, rid, "done", result=result)
    n_questions = next(d["n_queries"] for d in list_datasets(ws) if d["id"] == prepared.train_id)

    at = page("3_train.py")
    at.run()
    at.radio(key="train_recipe").set_value("distil").run()  # Auto trains the adapter on the app's short chunks
    no_exceptions(at)
    md = texts(at.markdown)
    assert f"questions: about {duration_text(2.0 * n_questions)} here)" in md, md  # 240 s / 120 questions
    n_ranked = int(re.search(r"as the fine-tune does \((\d+) distinct chunks, about ", md).group(1))
    assert f"{n_ranked} distinct chunks, about {duration_text(0.2 * n_ranked * _DISTIL_PER_REEMBED)} here)" in md
    assert "Times at this machine's pace in the fine-tune \u201clast week's\u201d: 120 questions in 4.0 min" in texts(
        at.caption
    )


def test_train_launch_runs_in_background(prepared_ws, prepared):
    at = page("3_train.py")
    at.run()
    at.radio(key="train_recipe").set_value("adapter").run()  # the adapter form (auto: fine-tune, then distil)
    at.number_input(key="hp_epochs").set_value(1)
    at.selectbox(key="hp_selection").set_value("none")  # one plain epoch: this test is about the background job
    assert at.number_input(key="hp_pseudo_queries").value == 0  # off, as TrainConfig has it
    at.number_input(key="hp_pseudo_queries").set_value(2)
    assert at.selectbox(key="hp_cv_validation").value == "auto"  # as TrainConfig has it
    at.selectbox(key="hp_cv_validation").set_value("fold")
    at.text_input(key="train_name").input("ui run")
    at.button(key="train_start").click().run()
    no_exceptions(at)
    jobs = rerun_until_settled(at, prepared_ws, "train")
    runs = frame(at, "run", "status", "epoch kept")
    assert list(runs["run"]) == ["ui run", "tiny linear"]
    assert list(runs["status"]) == ["done", "done"]
    request = json.loads(
        (Workspace(prepared_ws).run_dir(json.loads(jobs[0]["params"])["run_id"]) / "run.json").read_text()
    )
    assert request["config"]["pseudo_queries"] == 2  # the page's settings reach the run
    assert request["config"]["cv_validation"] == "fold"
    assert at.selectbox(key="train_view").value != prepared.run_id  # the new run is shown


def test_train_on_an_api_embedder_records_its_request_settings(prepared_ws, prepared, fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    at = page("3_train.py")
    at.run()
    at.radio(key="train_embedder_kind").set_value("api").run()
    at.text_input(key="train_embedder_api").input("fake-embed")
    at.number_input(key="train_embedder_api_timeout").set_value(45.0)
    at.number_input(key="train_embedder_api_batch").set_value(16).run()
    at.number_input(key="hp_epochs").set_value(1)
    at.button(key="train_start").click().run()
    no_exceptions(at)
    jobs = rerun_until_settled(at, prepared_ws, "train")
    assert jobs[0]["status"] == "done", jobs[0]["error"]
    run_id = json.loads(jobs[0]["params"])["run_id"]
    request = json.loads((Workspace(prepared_ws).run_dir(run_id) / "run.json").read_text())
    assert request["embedder"] == "openai:fake-embed"
    assert request["embedder_options"] == {"api_timeout": 45.0, "api_batch_size": 16, "api_concurrency": 1}
    assert max(len(r["body"]["input"]) for r in fake_openai.embedding_requests) <= 16
    # default selection is cross-validation: the headline shows its estimate, not an empty hold-out metric
    metrics = {m.label: m.value for m in at.metric}
    gain = metrics.get("Cross-validated gain") or metrics.get("Gain on offline questions (CV)") or ""
    assert gain.endswith(" pt") and "Chosen epoch · α" in metrics, metrics
    if metrics["Chosen epoch · α"] == "identity":  # nothing refit: the configured epochs stay the plan
        assert metrics["Epochs done"] == "0 / 1", metrics


def test_train_cancel_from_the_page(prepared_ws, prepared):
    at = page("3_train.py")
    at.run()
    at.radio(key="train_recipe").set_value("adapter").run()  # the adapter form (auto: fine-tune, then distil)
    at.number_input(key="hp_epochs").set_value(500)
    at.number_input(key="hp_batch_size").set_value(1)
    at.number_input(key="hp_checkpoint_every").set_value(1_000_000)
    at.button(key="train_start").click().run()
    no_exceptions(at)
    run_id = at.selectbox(key="train_view").value
    assert run_id != prepared.run_id
    at.button(key=f"train_cancel_{run_id}").click().run()
    rerun_until_settled(at, prepared_ws, "train")
    assert Workspace(prepared_ws).query("SELECT status FROM runs WHERE id=?", (run_id,))[0]["status"] == "cancelled"
    assert "cancelled" in texts(at.warning)
    assert at.download_button(key=f"train_download_{run_id}") is not None  # the best state so far is kept


def test_train_bad_settings_show_error(prepared_ws):
    at = page("3_train.py")
    at.run()
    at.radio(key="train_recipe").set_value("adapter").run()  # the adapter form (auto: fine-tune, then distil)
    at.text_input(key="train_adapter_kwargs").input("{not json")
    at.button(key="train_start").click().run()
    no_exceptions(at)
    assert "Cannot start this run" in texts(at.error)
    at.number_input(key="hp_seed").set_value(3).run()  # a field the starting point does not set
    at.radio(key="train_preset").set_value("llamaindex").run()
    from ui.helpers import hp_key

    # the fields the starting point changes get new widget keys (a stale browser value cannot land on them)
    assert hp_key("lr", at.session_state) == "hp_lr__1"
    assert at.number_input(key=hp_key("lr", at.session_state)).value == pytest.approx(2e-5)
    assert at.selectbox(key=hp_key("loss", at.session_state)).value == "in_batch"
    assert at.number_input(key="hp_seed").value == 3  # what the user typed elsewhere stays
    at.selectbox(key="train_adapter").set_value("two-layer").run()  # LlamaIndex's lr is the same for every adapter
    assert hp_key("lr", at.session_state) == "hp_lr__1"
    at.radio(key="train_preset").set_value("recipe").run()
    assert at.number_input(key=hp_key("lr", at.session_state)).value == pytest.approx(
        TrainConfig(adapter="two-layer").lr
    )
    assert hp_key("lr", at.session_state) == "hp_lr__2" and at.number_input(key="hp_seed").value == 3


# ------------------------------------------------------------------------------------------------
# Compare
# ------------------------------------------------------------------------------------------------
def test_compare_empty_state(empty_ws):
    at = page("4_compare.py")
    at.run()
    no_exceptions(at)
    assert "Generate questions first" in texts(at.info)


def test_compare_shows_table_charts_drilldown_and_exports(prepared_ws, prepared):
    at = page("4_compare.py")
    at.run()
    no_exceptions(at)
    table = frame(at, "system", "queries")
    assert len(table) == 2
    assert table.iloc[0]["system"] == "base (all-MiniLM-L6-v2)"
    assert table.iloc[1]["system"] == "tiny linear" and table.iloc[1]["id"] == prepared.run_id  # name, id beside
    for col in ("hit@5", "mrr@5", "ndcg@10", "Δ mrr@5", "Δ mrr@5 95% CI", "mrr@5 p (Holm)", "mrr@5 significant"):
        assert col in table.columns
    assert table.iloc[1]["mrr@5 significant"] in ("yes", "no")
    # the summary first: provenance, caveats, one sentence per system, a compact table, one chart
    md = texts(at.markdown)
    assert "**Evaluation set:** harbor validation" in md and "offline pseudo-queries" in md
    # the fixture's set ranks 3 chunks: both systems find every passage, and the sentence says so, not "noise"
    assert "With tiny linear, as with the base model, the right passage is in the top 5 for every question" in md
    warnings = texts(at.warning)
    assert "chose its best epoch on this same evaluation set" in warnings  # the run validated on this set
    assert "have not been shown to carry over to real queries" in warnings  # offline questions
    compact = frame(at, "system", "Δ hit@5 (95% CI)", "significant")
    assert list(compact["system"]) == ["base (all-MiniLM-L6-v2)", "tiny linear"]
    assert (
        frame(at, "system", "trained on", "overlap with the evaluation set")
        .iloc[0]["trained on"]
        .startswith("northwind train")
    )
    assert len(at.get("plotly_chart")) == 0  # the chart and the training curves are closed: neither is built
    at.session_state["eval_chart_open"] = True  # the user opens the chart of the deltas
    at.run()
    no_exceptions(at)
    charts = at.get("plotly_chart")
    assert len(charts) == 1 and "Change against the" in charts[0].proto.spec
    at.session_state["eval_curves_open"] = True  # and "Training curves": now it is built too
    at.run()
    no_exceptions(at)
    assert len(at.get("plotly_chart")) == 2
    metrics = {m.label: m.value for m in at.metric}
    better, worse, same = (int(metrics[k]) for k in ("Better (relevant chunk ranked higher)", "Worse", "Unchanged"))
    assert better + worse + same == prepared.n_val
    assert "Relevant chunk" in texts(at.markdown)
    assert at.download_button(key="eval_download_html") is not None
    assert at.download_button(key="eval_download_csv") is not None
    assert "OPENAI_API_KEY" in texts(at.caption)  # how to configure the API embedder


def test_compare_drills_into_a_comparison_the_cli_saved_from_a_file(prepared_ws, prepared, tmp_path):
    """`evaluate --save` records the file it was given, not a workspace set: the drill-down reads that file
    instead of saying the evaluation set was deleted and showing ids."""
    from core.reports import load_comparison

    path = tmp_path / "harbor_eval.json"
    prepared.val.save(path)
    ws = Workspace(prepared_ws)
    cmp, _ = load_comparison(ws, prepared.eval_id)
    eval_id = save_comparison(ws, cmp, "harbor_eval.json", extra={"dataset_path": str(path)})
    at = page("4_compare.py")
    at.run()
    at.selectbox(key="eval_view").set_value(eval_id).run()
    no_exceptions(at)
    assert "could not be read" not in texts(at.caption) and "was deleted" not in texts(at.caption)
    question = next(iter(prepared.val.queries.values()))
    assert question in texts(at.markdown) + "\n".join(at.selectbox(key="dd_query").options)
    path.unlink()
    at.run()
    assert f"The evaluation file {path} could not be read (moved or deleted)" in texts(at.caption)


def test_compare_reruns_without_leaked_questions(prepared_ws, prepared):
    from core.datasets import QADataset
    from core.launch import evaluate_with_context
    from core.questions import load_dataset

    ws = Workspace(prepared_ws)
    train, val = load_dataset(ws, prepared.train_id), load_dataset(ws, prepared.val_id)
    copied = list(train.queries)[:3]  # three training questions slipped into the evaluation set
    mixed = QADataset(
        {**val.queries, **{q: train.queries[q] for q in copied}},
        {**val.corpus, **train.corpus},
        {**val.relevant_docs, **{q: train.relevant_docs[q] for q in copied}},
    )
    cmp, ctx = evaluate_with_context(ws, mixed, "mixed set", [{"kind": "run", "run_id": prepared.run_id}])
    eval_id = save_comparison(ws, cmp, "mixed set", extra={"systems": [], "run_ids": [prepared.run_id], "context": ctx})
    at = page("4_compare.py")
    at.run()
    at.selectbox(key="eval_view").set_value(eval_id).run()
    no_exceptions(at)
    assert f"3 of {len(mixed.queries)} evaluation questions (25%) are identical or near-identical" in texts(at.error)
    at.button(key="eval_exclude_q").click().run()
    no_exceptions(at)
    assert at.selectbox(key="eval_view").value != eval_id
    assert "3 leaked question(s) (duplicated questions) were excluded" in texts(at.info)
    assert frame(at, "system", "queries").iloc[0]["queries"] == len(mixed.queries) - 3
    assert not [b for b in at.button if b.key == "eval_exclude_q"]  # nothing left to exclude
    # the overlap counts describe the set as checked: they now say the repeated ones are out of the numbers
    overlap = frame(at, "system", "overlap with the evaluation set").iloc[0]["overlap with the evaluation set"]
    assert overlap.startswith("3 identical") and overlap.endswith(
        f"the repeated questions are excluded here: the numbers are on the other {len(mixed.queries) - 3}"
    )


def test_compare_queues_the_distil_recipe_for_an_adapter_evaluated_on_other_documents(
    prepared_ws, prepared, monkeypatch
):
    """The prepared comparison evaluates an adapter trained on northwind's questions on harbor's: Compare says
    the question-trained adapter may not carry over to another filing. Harbor's chunks are the app's, which
    the base model reads whole, where the distil recipe gained no more: no button. Where chunks are longer
    (here: the threshold lowered to 0), one click queues the recipe that did (a fine-tune on the adapter's
    training set, then its distillation ranking this set's chunks)."""
    import core.distill
    from core.distill import ranked_coverage
    from core.questions import load_dataset
    from core.runs import adapter_dir, get_run, list_runs

    at = page("4_compare.py")
    at.run()
    no_exceptions(at)
    info = texts(at.info)
    assert "the adapter was trained on questions about other text" in info
    assert "This set's chunks are ones the base model reads whole (0% longer than it reads)" in info
    assert not [b for b in at.button if b.key == f"eval_distil_{prepared.train_id}"]
    monkeypatch.setattr(core.distill, "LONG_CHUNKS_SHARE", 0.0)
    at.run()
    assert "fine-tune, then distil over the searched documents" in texts(at.info)
    at.button(key=f"eval_distil_{prepared.train_id}").click().run()
    no_exceptions(at)
    assert not [b for b in at.button if b.key == f"eval_distil_{prepared.train_id}"]  # queued once, not twice
    assert "Queued: " in texts(at.success) and "compare it here once it is done" in texts(at.success)
    jobs = wait_jobs(prepared_ws, "train")
    assert [j["status"] for j in jobs] == ["done", "done"], jobs
    again = page("4_compare.py")  # another session: the run is found in the workspace, not offered twice
    again.run()
    assert "Run: " in texts(again.success) and "(done;" in texts(again.success)
    assert not [b for b in again.button if b.key == f"eval_distil_{prepared.train_id}"]
    ws = Workspace(prepared_ws)
    runs = {r["kind"]: r for r in list_runs(ws)}
    distilled = get_run(ws, runs["distill"]["id"])
    assert get_run(ws, runs["finetune"]["id"])["config"]["dataset_id"] == prepared.train_id
    assert distilled["config"]["eval_dataset_id"] == prepared.val_id
    harbor = load_dataset(ws, prepared.val_id)
    assert ranked_coverage(adapter_dir(ws, distilled["id"]), harbor.corpus.values()) == 1.0
    assert at.session_state["train_view"] == runs["finetune"]["id"]  # the Train page opens on it


def test_compare_launch_runs_in_background(prepared_ws, prepared):
    at = page("4_compare.py")
    at.run()
    at.number_input(key="eval_k").set_value(3)
    at.button(key="eval_start").click().run()
    no_exceptions(at)
    jobs = rerun_until_settled(at, prepared_ws, "evaluate")
    assert jobs[0]["status"] == "done"
    assert at.selectbox(key="eval_view").value == json.loads(jobs[0]["result"])["eval_id"]
    table = frame(at, "system", "queries")
    assert "hit@3" in table.columns  # the new comparison is the one shown
    assert len(at.selectbox(key="eval_view").options) == 2


def test_compare_an_api_embedder_with_its_request_settings(prepared_ws, prepared, fake_openai, monkeypatch):
    """Timeout, batch size and concurrency sit beside the API model; they reach its requests and
    are recorded with the comparison. The fake server answers per token, as llama.cpp's does."""
    fake_openai.per_token = True
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    at = page("4_compare.py")
    at.run()
    at.checkbox(key="eval_api_on").check().run()
    assert fake_openai.base_url in texts(at.caption)  # the endpoint, beside the fields
    at.text_input(key="eval_api_model").input("fake-embed")
    at.number_input(key="eval_api_timeout").set_value(30.0)
    at.number_input(key="eval_api_batch").set_value(3)
    at.number_input(key="eval_api_concurrency").set_value(2).run()
    at.button(key="eval_start").click().run()
    no_exceptions(at)
    jobs = rerun_until_settled(at, prepared_ws, "evaluate")
    assert jobs[0]["status"] == "done", jobs[0]["error"]
    assert max(len(r["body"]["input"]) for r in fake_openai.embedding_requests) <= 3
    from core.reports import load_comparison

    cmp, extra = load_comparison(Workspace(prepared_ws), json.loads(jobs[0]["result"])["eval_id"])
    assert "fake-embed (API)" in cmp.results  # main names API systems by model (core.launch.embedder_name)
    api = next(s for s in extra["systems"] if s["kind"] == "api")
    assert api["options"] == {"api_timeout": 30.0, "api_batch_size": 3, "api_concurrency": 2}


# ------------------------------------------------------------------------------------------------
# hardening: user text is text, custom code needs an opt-in
# ------------------------------------------------------------------------------------------------
BEACON = "![x](http://beacon.example/b.png) [click](http://evil.example/l) <a href='http://evil.example/a'>a</a>"
LIVE_MARKDOWN = re.compile(r"(?<!\\)!\\?\[|(?<!\\)\]\(|(?<!\\)<a\s|(?<!\\)\bhttps?(?<!\\):(?=//)")


def markdown_texts(at: AppTest) -> list[str]:
    """Every string the page hands to Streamlit's Markdown renderer (bodies of markdown, captions,
    alerts and toasts; labels of metrics, widgets and expanders; progress texts), not st.text/st.code."""
    out: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        kind = type(node).__name__
        if proto is not None and kind not in ("Text", "Code", "Dataframe", "UnknownElement"):
            if kind == "Block" or hasattr(proto, "WhichOneof") and proto.DESCRIPTOR.name == "Block":
                if proto.WhichOneof("type") == "expandable":
                    out.append(proto.expandable.label)
            else:
                for attr in ("body", "label", "text"):
                    value = getattr(proto, attr, None)
                    if isinstance(value, str) and value:
                        out.append(value)
        for child in (getattr(node, "children", None) or {}).values():
            walk(child)

    walk(at._tree)
    return out


def assert_no_live_markdown(at: AppTest) -> None:
    live = [t for t in markdown_texts(at) if LIVE_MARKDOWN.search(t)]
    assert not live, f"user text rendered as live Markdown: {live[:3]}"


def test_user_and_document_text_is_shown_as_text(prepared_ws, prepared):
    ws = Workspace(prepared_ws)
    with ws.db() as con:  # hostile names everywhere a user or a PDF can put text
        con.execute("UPDATE documents SET filename=? WHERE filename='northwind.pdf'", (f"{BEACON}.pdf",))
        con.execute("UPDATE runs SET name=?", (f"run {BEACON}",))
        con.execute(  # a file that failed: its name and reason are listed on the Documents page
            "INSERT INTO documents(id, filename, size_bytes, pages, chars, status, error, added_at) "
            "VALUES (?, ?, 10, 0, 0, 'error', ?, ?)",
            ("f" * 64, f"failed {BEACON}.pdf", f"failed {BEACON}.pdf is damaged: {BEACON}", time.time()),
        )
        con.execute(
            "INSERT INTO jobs(id, kind, title, status, params, owner, error, created_at, updated_at) "
            "VALUES ('evaluate-x', 'evaluate', ?, 'failed', '{}', '1:x', ?, ?, ?)",
            (f"Compare {BEACON}", f"boom {BEACON}", time.time() + 5, time.time() + 5),
        )
        con.execute(
            "INSERT INTO jobs(id, kind, title, status, params, owner, error, created_at, updated_at) "
            "VALUES ('ingest-x', 'ingest', ?, 'done', ?, '1:x', NULL, ?, ?)",
            (f"Ingest {BEACON}", "{}", time.time() + 5, time.time() + 5),
        )
        con.execute(
            "UPDATE jobs SET result=? WHERE id='ingest-x'",
            (
                json.dumps(
                    {"reports": [{"filename": f"{BEACON}.pdf", "status": "error", "error": f"{BEACON} is damaged"}]}
                ),
            ),
        )
        row = con.execute("SELECT path FROM datasets WHERE id=?", (prepared.val_id,)).fetchone()
    path = prepared_ws / row[0]
    data = json.loads(path.read_text())
    data["queries"] = {q: f"{BEACON} {t}" for q, t in data["queries"].items()}
    data["corpus"] = {n: f"{BEACON} {t}" for n, t in data["corpus"].items()}
    path.write_text(json.dumps(data))

    for script in ("1_documents.py", "3_train.py", "4_compare.py"):
        at = page(script)
        at.run()
        no_exceptions(at)
        assert "beacon\\.example" in "\n".join(markdown_texts(at)), script  # the text is shown...
        assert_no_live_markdown(at)  # ...as text
    at.segmented_control(key="dd_change").set_value("all").run()
    assert "evil\\.example" in "\n".join(markdown_texts(at))


def _evil_module(root: Path, name: str) -> Path:
    marker = root / f"{name}.ran"
    (root / f"{name}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from core.adapters import LinearLayer as Evil\n"
    )
    return marker


def test_train_custom_import_path_needs_the_tick_box(prepared_ws, prepared, tmp_path, monkeypatch):
    marker = _evil_module(tmp_path, "adapterlab_evil_train")
    monkeypatch.syspath_prepend(str(tmp_path))
    at = page("3_train.py")
    at.run()
    at.radio(key="train_recipe").set_value("adapter").run()  # the adapter form (auto: fine-tune, then distil)
    at.selectbox(key="train_adapter").set_value("__custom__").run()
    at.text_input(key="train_adapter_path").input("adapterlab_evil_train:Evil").run()
    at.number_input(key="hp_epochs").set_value(1).run()
    assert not marker.exists(), "typing the path imported it"
    assert "runs its code" in texts(at.warning)
    at.button(key="train_start").click().run()
    no_exceptions(at)
    assert "import path" in texts(at.error) and not marker.exists()
    at.checkbox(key="train_allow_custom").check().run()
    at.button(key="train_start").click().run()
    no_exceptions(at)
    assert marker.exists()  # imported on the explicit opt-in, at start
    jobs = rerun_until_settled(at, prepared_ws, "train")
    assert jobs[0]["status"] == "done"


def test_compare_asks_before_importing_an_adapter_folder_class(prepared_ws, prepared, tmp_path, monkeypatch):
    marker = _evil_module(tmp_path, "adapterlab_evil_compare")
    monkeypatch.syspath_prepend(str(tmp_path))
    meta = prepared_ws / "runs" / prepared.run_id / "adapter" / "adapterlab.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "adapter_cls": "adapterlab_evil_compare:Evil"}))
    at = page("4_compare.py")
    at.run()
    assert "custom classes" in texts(at.warning)
    at.button(key="eval_start").click().run()
    no_exceptions(at)
    assert "Allow custom code" in texts(at.error) and not marker.exists()
    assert not Workspace(prepared_ws).query("SELECT id FROM jobs WHERE kind='evaluate'")


# ------------------------------------------------------------------------------------------------
# pure helpers behind the pages
# ------------------------------------------------------------------------------------------------
def test_editor_changes_and_config_help():
    from core.training import FIELD_HELP
    from ui.helpers import editor_changes, question_frame

    original = question_frame(
        [
            {
                "id": "a",
                "text": "What was revenue?",
                "chunk_preview": "Revenue...",
                "filename": "f.pdf",
                "page_start": 1,
                "page_end": 1,
                "source": "llm",
            },
            {
                "id": "b",
                "text": "Who insures drivers?",
                "chunk_preview": "Insurance...",
                "filename": "f.pdf",
                "page_start": 2,
                "page_end": 3,
                "source": "llm",
            },
            {
                "id": "c",
                "text": "Where is Harbor Risk?",
                "chunk_preview": "Harbor...",
                "filename": "f.pdf",
                "page_start": 3,
                "page_end": 3,
                "source": "llm",
            },
        ]
    )
    edited = original.copy()
    edited.loc[0, "question"] = "What was revenue in 2021?"
    edited.loc[1, "delete"] = True
    edited.loc[2, "question"] = "  "
    updates, deletes = editor_changes(original, edited)
    assert updates == {"a": "What was revenue in 2021?"}
    assert deletes == ["b", "c"]
    assert list(original["pages"]) == ["p. 1", "pp. 2–3", "p. 3"]

    from dataclasses import fields

    assert {f.name for f in fields(TrainConfig)} <= set(FIELD_HELP), "every training setting has its help line"
    assert all(FIELD_HELP.values())


def test_training_figure_marks_best_epoch():
    from core.reports import has_curves, training_figure

    hist = [
        {"type": "epoch", "epoch": 0, "step": 0, "train_loss": None, "val": {"hit@5": 0.5, "mrr@5": 0.3}, "best": True},
        {"type": "step", "step": 1, "epoch": 1, "loss": 1.2, "lr": 1e-4},
        {"type": "step", "step": 2, "epoch": 1, "loss": 1.0, "lr": 1e-4},
        {"type": "epoch", "epoch": 1, "step": 2, "train_loss": 1.1, "val": {"hit@5": 0.6, "mrr@5": 0.4}, "best": True},
        {"type": "step", "step": 3, "epoch": 2, "loss": 0.9, "lr": 1e-4},
        {
            "type": "epoch",
            "epoch": 2,
            "step": 3,
            "train_loss": 0.9,
            "val": {"hit@5": 0.55, "mrr@5": 0.35},
            "best": False,
        },
    ]
    assert not has_curves(hist[:0]) and has_curves(hist)
    fig = training_figure(hist, 5)
    names = [t.name for t in fig.data]
    assert "loss per step" in names and "val MRR@5" in names and "val hit@5" in names
    best = next(t for t in fig.data if t.name.startswith("best epoch"))
    assert best.name == "best epoch (1)" and list(best.x) == [2]


def test_training_figure_without_validation_is_one_panel():
    """A cross-validated run refits without a hold-out: no empty validation panel under the loss."""
    from core.reports import training_figure

    hist = [
        {"type": "step", "step": 1, "epoch": 1, "loss": 1.2, "lr": 1e-4},
        {"type": "step", "step": 2, "epoch": 1, "loss": 1.0, "lr": 1e-4},
        {"type": "epoch", "epoch": 1, "step": 2, "train_loss": 1.1, "val": None, "best": False},
    ]
    fig = training_figure(hist, 5)
    assert [a.text for a in fig.layout.annotations] == ["Training loss"]
    assert "yaxis2" not in fig.layout.to_plotly_json() and fig.layout.xaxis.title.text == "optimizer step"
    with_val = training_figure([*hist, {**hist[-1], "epoch": 2, "val": {"hit@5": 0.5, "mrr@5": 0.3}}], 5)
    assert len(with_val.layout.annotations) == 2


def test_run_rows_show_the_cross_validated_gain_where_there_is_no_hold_out():
    from ui.helpers import run_rows

    def run(result):
        return {"id": "r", "name": "n", "status": "done", "config": {"config": {"top_k": 5}}, "result": result}

    holdout, cv = run_rows(
        [
            run({"base_metrics": {"mrr@5": 0.5}, "best_metrics": {"mrr@5": 0.55}, "selection": None}),
            run({"base_metrics": None, "best_metrics": None, "selection": {"gain": 0.00917, "train": True}}),
        ]
    )
    assert holdout["Δ MRR"] == 0.05 and holdout["CV gain (pt)"] is None
    assert cv["Δ MRR"] is None and cv["CV gain (pt)"] == 0.92
    # the table says which epoch each run kept, beside the setting (a CV refit may train more than it)
    row = run_rows([run({"best_epoch": 24, "selection": {"gain": 0.01, "train": True}})])[0]
    assert row["epoch kept"] == 24 and "epochs (set)" in row and "best epoch" not in row


def test_hp_fields_get_a_new_key_only_when_a_preset_changes_their_value():
    from ui.helpers import HP_GENERATION, hp_key, set_hp_fields

    state: dict = {}
    linear = {"epochs": 12, "lr": 3e-4, "seed": 0}
    assert set_hp_fields(state, linear, None) == ["epochs", "lr", "seed"]  # first fill: plain keys
    assert [hp_key(n, state) for n in linear] == ["hp_epochs", "hp_lr", "hp_seed"]
    state["hp_epochs"] = 7  # the user's own edit
    two_layer = {**linear, "lr": 5e-4}
    assert set_hp_fields(state, two_layer, linear) == ["lr"]
    assert hp_key("lr", state) == "hp_lr__1" and state["hp_lr__1"] == 5e-4 and "hp_lr" not in state
    assert state["hp_epochs"] == 7  # not touched: the preset does not change it
    # the same choice again (a callback run twice when Streamlit restarts an interrupted rerun): nothing moves
    assert set_hp_fields(state, two_layer, two_layer) == [] and state["hp_epochs"] == 7
    state["hp_lr"] = 3e-4  # a stale browser value under the old key...
    assert set_hp_fields(state, linear, two_layer) == ["lr"]
    assert hp_key("lr", state) == "hp_lr__2" and state["hp_lr__2"] == 3e-4
    assert "hp_lr" not in state and "hp_lr__1" not in state  # ...and the old keys are gone
    del state["hp_seed"]  # a field missing from the state is always filled
    assert set_hp_fields(state, linear, linear) == ["seed"] and state[HP_GENERATION] == {"lr": 2}


def test_md_text_keeps_user_text_literal():
    from ui.helpers import md_text

    assert (
        md_text("[click](http://x) **bold** `code` <b> $x$") == r"\[click\](http://x) \*\*bold\*\* \`code\` \<b\> \$x\$"
    )
    assert md_text("all-MiniLM-L6-v2 (bundled)") == "all-MiniLM-L6-v2 (bundled)"


def test_md_escape_makes_every_markdown_construct_literal():
    from ui.helpers import md_escape

    hostile = (
        "![x](http://h/b.png) [l](https://e.x) <a href='x'>a</a> **b** _i_ `c` # h\n> q\n- li\n1. n "
        ":red[c] :smile: $x^2$ www.e.com a@b.co ~~s~~ | t | \\ &amp;"
    )
    out = md_escape(hostile)
    assert re.sub(r"\\(.)", r"\1", out) == hostile  # shown exactly as written
    assert not LIVE_MARKDOWN.search(out)
    for special in "![]()*`<>@$&#:~_.|":
        assert not re.search(r"(?<!\\)" + re.escape(special), out), special  # every one escaped
    assert md_escape(None) == "" and md_escape("What was revenue in 2021?") == "What was revenue in 2021?"


def test_train_warns_that_offline_training_questions_carry_over_less(prepared_ws, prepared):
    at = page("3_train.py")
    at.run()
    no_exceptions(at)
    warnings = [w.value for w in at.warning]
    assert any(
        "offline pseudo-queries" in w and "expect a smaller gain on real queries than on these" in w for w in warnings
    ), warnings
    # what each recipe was measured to carry over to real questions over the app's own chunks, and where to run
    # the one that carried more
    from core.carryover import OWN_CHUNKS_CARRYOVER as o

    def pair(key):
        return f"{100 * o[f'{key}_gain_hit@5']:+.1f} pt hit@5 / {100 * o[f'{key}_gain_mrr@5']:+.1f} pt MRR@5"

    assert any(
        f"the adapter {pair('adapter')}" in w and f"\u201cThen distil it\u201d) {pair('distilled')}" in w
        for w in warnings
    ), warnings


def test_train_says_offline_and_written_questions_on_separate_documents_are_kept_apart(prepared_ws):
    """northwind.pdf's questions rewritten by hand, harbor.pdf's left offline: the Train page says, before a
    run starts, that training keeps the two kinds' negatives apart, with the measured reason."""
    from core.carryover import mixed_sources_note
    from core.datasets import build_dataset
    from core.questions import add_question, save_dataset

    ws = Workspace(prepared_ws)
    (north,) = ws.query("SELECT id FROM documents WHERE filename = 'northwind.pdf'")
    chunks = [r["id"] for r in ws.query("SELECT id FROM chunks WHERE doc_id = ?", (north["id"],))]
    with ws.db() as con:
        con.execute(f"DELETE FROM questions WHERE chunk_id IN ({','.join('?' * len(chunks))})", chunks)
    for i, c in enumerate(chunks):
        add_question(ws, c, f"How did Northwind's section {i} change from 2020 to 2021?")
    ds_id = save_dataset(ws, build_dataset(ws), "mixed kinds", role="train")
    n_off = ws.query("SELECT COUNT(*) AS n FROM chunks")[0]["n"] - len(chunks)
    at = page("3_train.py")
    at.session_state["train_ds"] = ds_id
    at.run()
    no_exceptions(at)
    assert mixed_sources_note(n_off, len(chunks)) in texts(at.info)
    assert "-4.2 pt hit@5".replace("-", "\u2212") in mixed_sources_note(n_off, len(chunks))  # the measured loss


def test_train_live_chart_is_thinned_and_ends_at_the_latest_step(prepared_ws, prepared):
    """While a run trains, its chart (a fragment of its own) draws at most LIVE_STEP_POINTS loss
    points, and the latest step recorded before the redraw is among them."""
    at = page("3_train.py")
    at.run()
    at.radio(key="train_recipe").set_value("adapter").run()  # the adapter form (auto: fine-tune, then distil)
    at.number_input(key="hp_epochs").set_value(500)
    at.number_input(key="hp_batch_size").set_value(1)
    at.number_input(key="hp_checkpoint_every").set_value(1_000_000)
    at.selectbox(key="hp_selection").set_value("none")
    at.button(key="train_start").click().run()
    no_exceptions(at)
    run_id = at.selectbox(key="train_view").value
    history = Workspace(prepared_ws).run_dir(run_id) / "history.jsonl"
    deadline = time.time() + 120
    steps = 0
    while steps <= 1_000 and time.time() < deadline:
        time.sleep(0.2)
        steps = (
            sum(1 for line in history.read_text().splitlines() if '"type": "step"' in line) if history.exists() else 0
        )
    assert steps > 1_000, f"only {steps} steps after 120 s"
    try:
        at.run()
        no_exceptions(at)
        charts = [c for c in at.get("plotly_chart") if "Training loss" in c.proto.spec]
        assert len(charts) == 1
        loss = json.loads(charts[0].proto.spec)["data"][0]
        assert len(loss["x"]) <= 600 and loss["x"][-1] >= steps  # thinned, and it reaches the last step read
        assert any(m.label == "Epochs done" for m in at.metric)  # the numbers fragment drew too
    finally:
        at.button(key=f"train_cancel_{run_id}").click().run()
        rerun_until_settled(at, prepared_ws, "train")


def test_the_onnx_backend_is_chosen_beside_the_base_embedder(prepared_ws):
    at = page("3_train.py")
    at.run()
    assert at.radio(key="train_embedder_backend").value == "torch"
    at.radio(key="train_embedder_backend").set_value("onnx-int8").run()
    no_exceptions(at)
    assert Workspace(prepared_ws).get_setting("ui.base_embedder") == "default@onnx-int8"
    again = page("4_compare.py")
    again.run()  # the workspace's choice on every page: bundled model, int8 backend
    assert again.radio(key="eval_embedder_kind").value == "default"
    assert again.radio(key="eval_embedder_backend").value == "onnx-int8"
    again.radio(key="eval_embedder_backend").set_value("torch").run()
    assert Workspace(prepared_ws).get_setting("ui.base_embedder") == "default"


def test_persisted_widget_values_come_back_when_streamlit_drops_them(monkeypatch):
    """A run that skips app.py's re-assignment can let Streamlit drop a Train form value; the next run puts it back
    from the plain copy, instead of the field coming back at its minimum."""
    import ui.state as state_mod

    class FakeStreamlit:
        session_state: dict = {}

    monkeypatch.setattr(state_mod, "st", FakeStreamlit)
    FakeStreamlit.session_state.update({"hp_lr": 3e-4, "hp_epochs": 12, "chunk_search": "revenue"})
    state_mod.persist_widget_state(("hp_",))
    del FakeStreamlit.session_state["hp_lr"]  # dropped by Streamlit in a run that did not re-assign it
    FakeStreamlit.session_state["hp_epochs"] = 6  # the user's later edit is what is kept
    state_mod.persist_widget_state(("hp_",))
    assert FakeStreamlit.session_state["hp_lr"] == 3e-4 and FakeStreamlit.session_state["hp_epochs"] == 6
    del FakeStreamlit.session_state["hp_epochs"]
    state_mod.persist_widget_state(("hp_",))
    assert FakeStreamlit.session_state["hp_epochs"] == 6
    assert "chunk_search" not in FakeStreamlit.session_state["_adapterlab_persisted"]  # other keys are not kept
