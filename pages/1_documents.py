"""Step 1 · Documents: upload PDFs (ingested in the background), chunk settings, chunk browser."""

import streamlit as st

from core.documents import (
    DEFAULT_MAX_BYTES,
    ChunkSettings,
    clear_failed_documents,
    delete_document,
    document_overview,
    list_chunks,
    saved_chunk_settings,
)
from core.launch import start_ingest, start_rechunk
from ui import state, widgets
from ui.helpers import chunk_label, chunk_rows, document_rows, documents_hint, failed_line, ingest_rows, md_escape

ws, jm = widgets.page_header(
    "Documents",
    "Step 1 of 4 · Upload the PDFs your users search. Each is split into chunks that fit the base "
    "embedder; the chunks are what questions are asked about and what retrieval ranks.",
)

overview = document_overview(ws)  # the counts below are taken from the lists they sit above
docs, failed = overview.documents, overview.failed
m = st.columns(4)
m[0].metric("Documents", len(docs), help="Ingested documents: the table below. Files that failed are not counted.")
m[1].metric("Chunks", overview.chunks)
m[2].metric(
    "Truncated chunks",
    overview.truncated,
    help="Chunks longer than the embedder's input limit (it would cut them). Lower the chunk size if many.",
)
m[3].metric(
    "Files with errors",
    len(failed),
    help="Files whose ingest failed: nothing of them is in the workspace. Listed below with what to do.",
)


# ------------------------------------------------------------------------------------------------
# upload
# ------------------------------------------------------------------------------------------------
def show_ingest_result(job: dict) -> None:
    result = job.get("result") or {}
    reports = result.get("reports")
    if reports is None:  # a re-chunk job
        st.success(f"{md_escape(job['title'])}: done, {result.get('chunks', 0)} chunks now stored.")
        return
    ok = [r for r in reports if r["status"] == "ok"]
    bad = [r for r in reports if r["status"] == "error"]
    msg = f"Last upload: {len(ok)} of {len(reports)} file(s) ingested"
    (st.warning if bad else st.success)(
        msg + (f", {len(bad)} with errors: each reason in full under “Files with errors” below." if bad else ".")
    )
    st.dataframe(ingest_rows(reports), hide_index=True, width="stretch", key="ingest_report")
    listed = {d["filename"] for d in failed}
    for r in (r for r in bad if r["filename"] not in listed):  # cleared from that list since: the reason here
        # the product's errors already start with the file's name
        err = str(r["error"] or "")
        st.error(
            md_escape(err) if err.startswith(r["filename"]) else f"**{md_escape(r['filename'])}**: {md_escape(err)}"
        )


st.subheader("Upload PDFs")
uploader_key = f"doc_upload_{st.session_state.get('upload_generation', 0)}"
busy = widgets.any_active("ingest")
settings = saved_chunk_settings(ws)
with st.container(border=True):
    files = st.file_uploader(
        "PDF files",
        type=["pdf"],
        accept_multiple_files=True,
        key=uploader_key,
        help=f"Up to {DEFAULT_MAX_BYTES // (1024 * 1024)} MB per file. Scanned (image-only), encrypted or "
        "damaged files are reported in words; the other files of the same upload still go in.",
    )

    with st.expander("Chunking settings", icon=":material/tune:"):
        saved = ws.get_setting("chunk_settings") or {}
        st.caption(
            "Sizes are in tokens of the base embedder. **Auto** fits each chunk to the embedder's input "
            "limit (its max sequence length minus room for special tokens) with about 12% overlap."
        )
        if saved.get("resolved_chunk_size"):
            st.caption(
                f"Last used: {saved['resolved_chunk_size']} tokens per chunk, "
                f"{saved['resolved_chunk_overlap']} overlap (embedder limit: "
                f"{saved.get('max_seq_length') or 'unknown'} tokens)."
            )
        auto = st.toggle("Auto (fit the embedder)", value=settings.chunk_size == 0, key="chunk_auto")
        c1, c2 = st.columns(2)
        size = c1.number_input(
            "Chunk size (tokens)",
            min_value=16,
            max_value=8192,
            step=16,
            value=settings.chunk_size or int(saved.get("resolved_chunk_size") or 240),
            disabled=auto,
            key="chunk_size",
        )
        overlap = c2.number_input(
            "Overlap (tokens)",
            min_value=0,
            max_value=4096,
            step=4,
            value=max(settings.chunk_overlap, 0)
            if settings.chunk_size
            else int(saved.get("resolved_chunk_overlap") or 29),
            disabled=auto,
            key="chunk_overlap",
        )
        try:
            new_settings = ChunkSettings() if auto else ChunkSettings(int(size), int(overlap))
        except ValueError as exc:
            st.error(md_escape(exc))
            new_settings = None
        widgets.embedder_picker("doc_embedder")
        st.caption(
            "These settings apply to the next upload. **Re-chunk** rebuilds the chunks of every document "
            "from its stored pages (no PDF is parsed again). Questions about chunks whose text changes no "
            "longer match a chunk: generate questions again afterwards."
        )
        if st.button(
            "Re-chunk all documents",
            key="rechunk_start",
            icon=":material/refresh:",
            disabled=new_settings is None or busy or not docs,
        ):
            try:
                start_rechunk(jm, ws, new_settings, embedder=state.base_embedder())
            except ValueError as exc:
                st.error(md_escape(exc))
            else:
                st.rerun()

    if st.button(
        f"Ingest {len(files)} file(s)" if files else "Ingest",
        key="ingest_start",
        type="primary",
        disabled=not files or busy or new_settings is None,
        icon=":material/upload_file:",
    ):
        try:
            start_ingest(
                jm, ws, [(f.name, f.getvalue()) for f in files], embedder=state.base_embedder(), settings=new_settings
            )
        except ValueError as exc:
            st.error(md_escape(exc))
        else:
            st.session_state["upload_generation"] = st.session_state.get("upload_generation", 0) + 1
            st.rerun()
    if busy:
        st.caption("A document job is running: new uploads can start when it ends.")
    widgets.job_panel("ingest", key="ingest", result_view=show_ingest_result)


# ------------------------------------------------------------------------------------------------
# documents, files that failed, chunks
# ------------------------------------------------------------------------------------------------
def show_failed() -> None:
    st.subheader(f"Files with errors ({len(failed)})")
    these, it = ("this file", "it") if len(failed) == 1 else (f"these {len(failed)} files", "them")
    st.warning(
        f"Not ingested: nothing of {these} is in the workspace, and the counts above leave {it} out. Fix each as "
        "its line says and add it again above"
        + ("; the documents already ingested are not affected." if docs else "."),
        icon=":material/error:",
    )
    st.markdown("\n".join(f"- {failed_line(d)}" for d in failed))
    if st.button(
        "Clear this list",
        key="doc_clear_failed",
        icon=":material/playlist_remove:",
        help="Forgets these failed attempts only: no ingested document, chunk or question is touched.",
    ):
        n = clear_failed_documents(ws)
        st.toast(f"Cleared {n} failed file(s) from the list.")
        st.rerun()


if not docs:
    widgets.empty_state(documents_hint(len(files or []), busy, len(failed)))
    if failed:
        show_failed()
    st.stop()

st.subheader("Documents in the workspace")
st.dataframe(document_rows(docs), hide_index=True, width="stretch", key="doc_table")
with st.popover("Remove a document", icon=":material/delete:"):
    by_name = {d["id"]: d["filename"] for d in docs}
    gone = st.selectbox("Document", list(by_name), format_func=by_name.get, key="doc_delete_pick")
    st.caption("Its chunks go too; questions about them stay until you delete them on the Questions page.")
    if st.button("Remove", key="doc_delete", type="primary"):
        n = delete_document(ws, gone)
        st.toast(f"Removed {md_escape(by_name[gone])} and {n} chunks.")
        st.rerun()
if failed:
    show_failed()

st.subheader("Chunk browser")
f1, f2 = st.columns([2, 1])
search = f1.text_input("Search chunk text", key="chunk_search", placeholder="e.g. revenue")
names = {None: "All documents", **{d["id"]: d["filename"] for d in docs}}
doc_id = f2.selectbox("Source file", list(names), format_func=names.get, key="chunk_doc")
LIMIT = 500
chunks = list_chunks(ws, doc_id=doc_id, search=search or None, limit=LIMIT + 1)
if not chunks:
    st.info("No chunk matches this search.")
else:
    if len(chunks) > LIMIT:
        st.caption(f"Showing the first {LIMIT} matching chunks: refine the search to see others.")
        chunks = chunks[:LIMIT]
    else:
        st.caption(f"{len(chunks)} matching chunk(s). Select a row to read it in full.")
    event = st.dataframe(
        chunk_rows(chunks),
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key="chunk_table",
    )
    rows = (event.selection.rows if event is not None and hasattr(event, "selection") else []) or [0]
    chunk = chunks[min(rows[0], len(chunks) - 1)]
    with st.container(border=True):
        st.markdown(
            f"**{md_escape(chunk_label(chunk))}** · {chunk['n_tokens']} tokens"
            + (" · :material/warning: longer than the embedder's limit (truncated)" if chunk["truncated"] else "")
        )
        st.text(chunk["text"])
widgets.next_step("Generate questions about these chunks: they become the training pairs.", "questions")
