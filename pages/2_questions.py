"""Step 2 · Questions: generate question/chunk pairs (LLM or offline), review and edit them,
split into train / validation datasets, import and export LlamaIndex dataset JSON."""

import os

import streamlit as st

from core.datasets import (
    DatasetError,
    build_dataset,
    delete_dataset,
    import_dataset,
    list_datasets,
    load_dataset,
    save_dataset,
    split_dataset,
    unused_dataset_name,
)
from core.documents import list_documents
from core.generators import (
    DEFAULT_PROMPT_TEMPLATE,
    OFFLINE_LIMITS,
    LLMGenerator,
    estimate_generation,
    validate_prompt_template,
)
from core.launch import start_generation
from core.llm import ENV_BASE_URL, LLMSettings, key_status
from core.pseudo_queries import DEFAULT_OFFLINE_METHOD, OFFLINE_METHOD_HELP, OFFLINE_METHODS
from core.question_filter import unsearchable_questions
from core.questions import (
    answered_by_text,
    dedupe_workspace_questions,
    delete_questions,
    list_questions,
    nothing_generated,
    pending_chunks,
    question_source_counts,
    sampled_chunk_ids,
    shortfall_text,
    update_question,
)
from core.real_queries import MAX_TEXT_MATCHES, import_real_queries, save_real_queries
from core.workspace import safe_display_name
from ui import state, widgets
from ui.helpers import dataset_label, dataset_rows, editor_changes, md_escape, question_frame

ws, jm = widgets.page_header(
    "Questions",
    "Step 2 of 4 · Each chunk gets a few questions it answers. These (question, chunk) pairs teach the "
    "adapter what your users' questions look like, and held-out pairs measure retrieval.",
)
widgets.show_flash()

counts = ws.counts()
no_chunks = counts["chunks"] == 0
if no_chunks:
    widgets.empty_state(
        "Upload PDFs first: questions are generated from the chunks of your documents. "
        "(You can still import a LlamaIndex dataset below.)",
        "documents",
        "Go to Documents to upload PDFs",
    )

m = st.columns(4)
m[0].metric("Questions", counts["questions"])
m[1].metric("Chunks with questions", f"{counts['chunks_with_questions']} / {counts['chunks']}")
m[2].metric("Documents", counts["documents"])
m[3].metric("Saved datasets", counts["datasets"])

docs = [d for d in list_documents(ws) if d["status"] == "ok" and d["n_chunks"]]
doc_names = {d["id"]: d["filename"] for d in docs}

# tracked by key: the tab a user works in stays open through the rerun after a save or an import (untracked tabs
# went back to Generate whenever a banner above them changed the page)
tab_gen, tab_review, tab_split, tab_io = st.tabs(
    ["Generate", "Review & edit", "Split into train / validation", "Import / export"],
    key="questions_tab",
    on_change="rerun",
)

# ------------------------------------------------------------------------------------------------
# generate
# ------------------------------------------------------------------------------------------------
GENERATORS = {"llm": "LLM (OpenAI or any OpenAI-compatible endpoint)", "offline": "Offline (no key, no network)"}


def remember_key() -> None:
    typed = (st.session_state.get("llm_key_input") or "").strip()
    if typed:
        st.session_state[state.API_KEY_STATE] = typed
    st.session_state["llm_key_input"] = ""  # never leave the key in a widget


def reset_template() -> None:
    st.session_state["prompt_template"] = DEFAULT_PROMPT_TEMPLATE


def forget_key() -> None:
    st.session_state.pop(state.API_KEY_STATE, None)


def show_generation_result(job: dict) -> None:
    r = job.get("result") or {}
    if "questions_added" not in r:
        return
    if nothing_generated(r):
        st.error(
            f"Last generation ({md_escape(job['title'])}): every chunk it tried failed ({len(r['failures'])}), so "
            f"no question was added. First error: {md_escape(r['failures'][0]['error'].rstrip('.'))}. Fix the problem and "
            "generate again (chunks finished before are kept)."
        )
        return
    empty = int(r.get("chunks_without_questions") or 0)
    st.success(
        f"Last generation ({md_escape(job['title'])}): {r['questions_added']} question(s) added for "
        f"{r['chunks_done_now']} chunk(s)"
        + (
            f", {empty} of which got none (nothing the generator could ask there, such as a table, a contents line "
            "or a passage the document repeats, or every question was a duplicate)"
            if empty
            else ""
        )
        + f"; {r['chunks_done_before']} of {r['chunks_total']} chunk(s) were already done with these settings and "
        "were skipped."
    )
    answered = answered_by_text(r)  # a local server answers any model name: the one that wrote them
    if answered:
        st.caption(md_escape(answered[0].upper() + answered[1:] + "."))
    short = shortfall_text(r)
    if short:
        st.info(md_escape(short))
    if r.get("cancelled") and r.get("chunks_left"):
        st.caption(f"{r['chunks_left']} chunk(s) left: Generate again with the same settings to go on.")
    if r.get("failures"):
        st.warning(
            f"{len(r['failures'])} chunk(s) failed and were not marked done: run again to retry them. "
            f"First error: {md_escape(r['failures'][0]['error'])}"
        )


def generation_defaults() -> None:
    """Each generation field starts at the last Generate's value in this workspace, else the product's default
    (a base URL set in the environment wins over a remembered one)."""
    last = ws.get_setting("ui.generation") or {}
    defaults = {
        "gen_kind": last.get("gen_kind") or ("llm" if state.api_configured() else "offline"),
        "gen_n": int(last.get("gen_n") or 2),
        "gen_sample": int(last.get("gen_sample") or 0),
        "gen_offline_method": last.get("gen_offline_method") or DEFAULT_OFFLINE_METHOD,
        "llm_model": last.get("llm_model") or "gpt-4o-mini",
        "llm_base_url": os.environ.get(ENV_BASE_URL) or last.get("llm_base_url") or "",
        "llm_concurrency": int(last.get("llm_concurrency") or 4),
        "prompt_template": last.get("prompt_template") or DEFAULT_PROMPT_TEMPLATE,
    }
    if defaults["gen_kind"] not in GENERATORS or defaults["gen_offline_method"] not in OFFLINE_METHODS:
        defaults.update(gen_kind="offline", gen_offline_method=DEFAULT_OFFLINE_METHOD)
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)


def remember_generation() -> None:
    """The settings of the Generate just started, for the next session on this workspace (no key: never saved)."""
    ws.set_setting("ui.generation", {k: st.session_state.get(k) for k in state.GENERATION_KEYS})


def generate_tab() -> None:
    generation_defaults()
    gen = st.radio(
        "Question generator",
        list(GENERATORS),
        format_func=GENERATORS.get,
        horizontal=True,
        key="gen_kind",
    )
    c1, c2, c3 = st.columns([2, 1, 1])
    picked = c1.multiselect(
        "Documents",
        list(doc_names),
        default=list(doc_names),
        format_func=doc_names.get,
        key="gen_docs",
        help="Generate for the chunks of these documents.",
    )
    n = c2.number_input(
        "Questions per chunk",
        min_value=1,
        max_value=20,
        key="gen_n",
        help="The LlamaIndex guide uses 2. More questions give more training pairs per chunk.",
    )
    sample = int(
        c3.number_input(
            "Sample of chunks (0 = all)",
            min_value=0,
            step=50,
            key="gen_sample",
            help="Ask about a random sample of this many chunks only, spread over the documents: a quick "
            "evaluation set from a long filing, or a cap on LLM calls. The same sample every time, so Generate "
            "again resumes it; the dataset still ranks among every chunk.",
        )
    )
    settings = None
    template = None
    offline_method = None
    todo: list = []
    if gen == "llm":
        with st.container(border=True):
            a, b = st.columns(2)
            model = a.text_input(
                "Model",
                key="llm_model",
                help="The name the server knows the model by (a local server: the name its /v1/models lists).",
            )
            base_url = b.text_input(
                "Base URL",
                key="llm_base_url",
                placeholder="empty = OpenAI · e.g. http://localhost:8000/v1",
                help="Any OpenAI-compatible chat completions endpoint.",
            )
            conc = st.slider(
                "Requests in flight",
                1,
                32,
                key="llm_concurrency",
                help="Parallel requests; failed ones are retried with backoff (429, 5xx, timeouts). Keep 1 for a "
                "local server on a CPU: it answers one request at a time, and parallel ones only wait longer.",
            )
            settings = LLMSettings(
                model=(model or "").strip() or "gpt-4o-mini",
                base_url=(base_url or "").strip() or None,
                api_key=state.session_api_key(),
                concurrency=int(conc),
            )
            k1, k2 = st.columns([3, 1], vertical_alignment="bottom")
            k1.text_input(
                "API key (kept in this browser session only, never saved)",
                type="password",
                key="llm_key_input",
                on_change=remember_key,
                placeholder="sk-…",
            )
            if state.session_api_key():
                k2.button("Forget key", key="llm_key_forget", on_click=forget_key)
            resolved = settings.resolved()
            status = key_status(resolved)
            missing = (
                status == "no key" and resolved.base_url is None
            )  # OpenAI itself needs one; a local server may not
            (st.warning if missing else st.caption)(
                f"Key status: **{md_escape(status)}**."
                + (
                    " Type a key above, or set OPENAI_API_KEY before starting the app."
                    if missing
                    else " A local server may need none."
                    if status == "no key"
                    else ""
                )
            )
            template = st.text_area(
                "Prompt template",
                height=230,
                key="prompt_template",
                help="{context_str} is replaced by the chunk's text, {num_questions_per_chunk} "
                "by the number of questions.",
            )
            st.button("Reset the template", key="prompt_reset", on_click=reset_template, type="tertiary")
            try:
                validate_prompt_template(template)
            except ValueError as exc:
                st.error(md_escape(exc))
                template = None
            if template and picked:
                gen_llm = LLMGenerator(settings, prompt_template=template)
                sample_ids = sampled_chunk_ids(ws, picked, sample)
                todo = pending_chunks(ws, gen_llm, int(n), doc_ids=picked, chunk_ids=sample_ids)
                est = estimate_generation(
                    [c["text"] for c in todo], int(n), template, settings.model, resolved.base_url
                )
                e = st.columns(4)
                e[0].metric("LLM calls", f"{est['calls']:,}")
                e[1].metric("Prompt tokens", f"{est['prompt_tokens']:,}")
                e[2].metric("Completion tokens", f"~{est['completion_tokens']:,}")
                e[3].metric(
                    "Estimated cost",
                    "not priced" if est["cost_usd"] is None else f"${est['cost_usd']:.2f}",
                    help="At OpenAI's prices for its models. "
                    + ("" if est["priced"] else "Another server sets its own price (a local one costs nothing)."),
                )
                st.caption(
                    f"An estimate before starting (retries not counted), for the {len(todo):,} chunks still to "
                    "do: chunks already done with the same model, template and count are skipped."
                )
    else:
        st.warning(OFFLINE_LIMITS, icon=":material/info:")
        methods = list(OFFLINE_METHODS)
        offline_method = st.selectbox(
            "Offline method",
            methods,
            key="gen_offline_method",
            format_func=lambda m: OFFLINE_METHODS[m][0] + (" · default" if m == DEFAULT_OFFLINE_METHOD else ""),
        )
        st.caption(OFFLINE_METHOD_HELP)

    busy = widgets.any_active("generate")
    nothing_left = gen == "llm" and template is not None and bool(picked) and not todo
    if nothing_left:
        st.info(
            "Every chosen chunk already has its questions from this model, template and count: change a setting, "
            "pick other documents or a larger sample to ask more."
        )
    can_start = bool(picked) and not busy and (gen == "offline" or template is not None) and not nothing_left
    if st.button(
        "Generate questions", key="gen_start", type="primary", disabled=not can_start, icon=":material/auto_awesome:"
    ):
        try:
            start_generation(
                jm,
                ws,
                generator=gen,
                questions_per_chunk=int(n),
                doc_ids=None if set(picked) == set(doc_names) else picked,
                llm_settings=settings,
                prompt_template=template,
                offline_method=offline_method,
                sample_chunks=sample or None,
            )
        except ValueError as exc:
            st.error(md_escape(exc))
        else:
            remember_generation()
            st.rerun()
    st.caption(
        "Runs in the background: you can leave this page. **Stop** keeps every finished chunk; pressing "
        "Generate again with the same settings resumes where it stopped."
    )

    def live_count() -> None:
        st.metric("Questions in the workspace", ws.counts()["questions"])

    widgets.job_panel(
        "generate",
        key="gen",
        result_view=show_generation_result,
        live_extra=live_count,
        retry_hint="Press **Generate questions** again with the same settings to resume: "
        "chunks that were finished are kept and not asked again.",
    )


with tab_gen:
    if no_chunks:
        widgets.empty_state("Upload PDFs first: there is no chunk to ask questions about.", "documents")
    else:
        generate_tab()

# ------------------------------------------------------------------------------------------------
# review & edit
# ------------------------------------------------------------------------------------------------
with tab_review:
    if counts["questions"] == 0 or no_chunks:
        widgets.empty_state("Generate questions first (Generate tab), or import a dataset (Import / export tab).")
    else:
        f1, f2 = st.columns([2, 1])
        search = f1.text_input("Search questions", key="q_search", placeholder="e.g. revenue")
        filt = {None: "All documents", **doc_names}
        doc_id = f2.selectbox("Source file", list(filt), format_func=filt.get, key="q_doc")
        LIMIT = 2000
        rows = list_questions(ws, search=search or None, doc_id=doc_id, limit=LIMIT + 1)
        if len(rows) > LIMIT:
            st.caption(f"Showing the first {LIMIT} questions: search or filter to see others.")
            rows = rows[:LIMIT]
        frame = question_frame(rows)
        st.caption(f"{len(frame)} question(s). Edit a question in place or tick **delete**, then save.")
        editor_key = f"q_editor_{st.session_state.get('q_editor_gen', 0)}_{hash(tuple(frame['id']))}"
        edited = st.data_editor(
            frame,
            key=editor_key,
            hide_index=True,
            width="stretch",
            height=420,
            disabled=["chunk preview", "file", "pages", "source", "id"],
            column_config={
                "delete": st.column_config.CheckboxColumn("delete", width="small"),
                "question": st.column_config.TextColumn("question", width="large"),
                "chunk preview": st.column_config.TextColumn(
                    "chunk preview", width="medium", help="The start of the chunk this question is about."
                ),
                "file": st.column_config.TextColumn("file", width="small"),
                "pages": st.column_config.TextColumn("pages", width="small"),
                "id": None,
            },
        )
        updates, deletes = editor_changes(frame, edited)
        if updates or deletes:  # the table is rebuilt for another search or file, and its edits with it
            st.caption(":orange[Unsaved: save before changing the search or the file, which starts a fresh table.]")
        b1, b2 = st.columns([1, 2])
        if b1.button(
            f"Save changes ({len(updates)} edited, {len(deletes)} to delete)",
            key="q_save",
            disabled=not (updates or deletes),
            type="primary",
        ):
            for qid, text in updates.items():
                update_question(ws, qid, text)
            removed = delete_questions(ws, deletes)
            st.session_state["q_editor_gen"] = st.session_state.get("q_editor_gen", 0) + 1
            widgets.flash(f"Saved: {len(updates)} question(s) edited, {removed} deleted.")
            st.rerun()
        with b2.popover("Remove near-duplicates", icon=":material/content_copy:"):
            thr = st.slider(
                "Similarity threshold",
                0.5,
                1.0,
                0.85,
                0.01,
                key="dedupe_threshold",
                help="Questions at least this similar to an older one are removed (across the "
                "workspace: one question pointing at two chunks is a contradictory pair).",
            )
            if st.button("Remove duplicates", key="dedupe_start"):
                removed = dedupe_workspace_questions(ws, float(thr))
                widgets.flash(f"Removed {removed} near-duplicate question(s).")
                st.rerun()
        # an LLM's questions that no user would type (offline ones are sentences by design: not checked)
        unsearchable = unsearchable_questions(ws, rows)  # each against its whole chunk, as training's filter
        if unsearchable:
            with st.popover(
                f"{len(unsearchable)} LLM question(s) here look unsearchable", icon=":material/search_off:"
            ):
                st.caption(
                    "They name the passage instead of its subject (“the passage”, “the document”), lack a question "
                    "mark, or copy their chunk: a user searching would not type them. In an evaluation set they "
                    "measure the wrong thing. For training, dropping them did not help on real 10-K questions (less "
                    "data hurt more: bench/README), so nothing removes them unless you do."
                )
                st.dataframe(
                    [{"question": q, "why": why} for q, why in list(unsearchable.values())[:50]],
                    hide_index=True,
                    width="stretch",
                )
                if st.button(f"Remove these {len(unsearchable)}", key="unsearchable_remove"):
                    removed = delete_questions(ws, list(unsearchable))
                    widgets.flash(f"Removed {removed} unsearchable question(s).")
                    st.rerun()


# ------------------------------------------------------------------------------------------------
# split
# ------------------------------------------------------------------------------------------------
with tab_split:
    sources = question_source_counts(ws)
    keep = None
    if len(sources) > 1:
        keep = (
            st.multiselect(
                "Question sources",
                list(sources),
                default=list(sources),
                key="split_sources",
                format_func=lambda src: f"{src} ({sources[src]} questions)",
                help="E.g. keep only the LLM's questions and leave the offline pseudo-queries out.",
            )
            or None
        )
    try:
        full = build_dataset(ws, sources=keep)
    except DatasetError as exc:
        widgets.empty_state(f"Generate questions first: {md_escape(exc)}")
        full = None
    if full is not None:
        st.markdown(
            "Hold out questions the adapter never trains on. **By document** is the honest test "
            "(e.g. train on Lyft, validate/evaluate on Uber); **by chunk** works with one document."
        )
        by = st.radio(
            "Split",
            ["document", "chunk"],
            horizontal=True,
            key="split_by",
            index=0 if len(docs) > 1 else 1,
            format_func={"document": "By document", "chunk": "By chunk"}.get,
        )
        val_docs = None
        frac = 0.2
        if by == "document":
            val_docs = (
                st.multiselect(
                    "Validation / evaluation documents",
                    list(doc_names),
                    format_func=doc_names.get,
                    key="split_val_docs",
                    help="These documents' questions form the held-out side; the rest train. "
                    "None picked: a seeded pick of documents holding about 20% of the questions.",
                )
                or None
            )
        else:
            frac = st.slider(
                "Share of questions held out",
                0.05,
                0.5,
                0.2,
                0.05,
                key="split_fraction",
                help="Whole chunks go to one side, so no chunk's questions are on both.",
            )
        try:
            train, val = split_dataset(full, by=by, val_fraction=frac, seed=0, val_docs=val_docs)
        except (ValueError, DatasetError) as exc:
            st.warning(md_escape(exc))
        else:
            if by == "document" and not val_docs:  # say which documents the seeded pick held out
                held = sorted(
                    {
                        (val.node_meta.get(c) or {}).get("filename") or doc_names.get(val.document_of(c) or "", "")
                        for ids in val.relevant_docs.values()
                        for c in ids
                    }
                    - {""}
                )
                if held:
                    st.caption(
                        f"None picked, so the seeded pick holds out **{md_escape(', '.join(held))}**: choose the "
                        "documents above to hold out others."
                    )
            s = st.columns(4)
            s[0].metric("Train questions", len(train.queries))
            s[1].metric("Train corpus chunks", len(train.corpus))
            s[2].metric("Validation questions", len(val.queries))
            s[3].metric("Validation corpus chunks", len(val.corpus))
            n_all = len(train.queries) + len(val.queries)
            st.caption(
                f"{len(val.queries) / max(1, n_all):.0%} of the {n_all:,} questions held out"
                + (" (whole chunks, so near the share asked, not exactly it)" if by == "chunk" else "")
                + ". "
                + (
                    "The validation side ranks among every chunk of the documents (as a user's search does), so its "
                    "corpus counts them all; the training side leaves out the chunks the validation questions ask about."
                    if by == "chunk"
                    else "Each side ranks among its own documents' chunks."
                )
            )
            n1, n2 = st.columns(2)
            # keyed by the split: a name typed for one split stays with it, and the default follows the choice
            # (one key kept "train (by document)" after a switch to by chunk)
            train_name = n1.text_input("Training dataset name", value=f"train (by {by})", key=f"split_train_name_{by}")
            val_name = n2.text_input(
                "Validation dataset name", value=f"validation (by {by})", key=f"split_val_name_{by}"
            )
            if st.button(
                "Save train and validation datasets", key="split_save", type="primary", icon=":material/save:"
            ):
                train_name, val_name = (unused_dataset_name(ws, n) for n in (train_name, val_name))
                save_dataset(ws, train, train_name, role="train")
                save_dataset(ws, val, val_name, role="val")
                widgets.flash(
                    f"Saved **{md_escape(train_name)}** ({len(train.queries)} questions) and **{md_escape(val_name)}** "
                    f"({len(val.queries)} questions). Next: train an adapter."
                )
                st.rerun()
        if any(d["role"] == "train" for d in list_datasets(ws)):
            widgets.next_step("Train an adapter on the saved training set.", "train")

# ------------------------------------------------------------------------------------------------
# import / export
# ------------------------------------------------------------------------------------------------
with tab_io:
    datasets = list_datasets(ws)
    st.markdown(
        "Datasets are **LlamaIndex `EmbeddingQAFinetuneDataset` JSON** files: export one to use it in "
        "LlamaIndex, or import one LlamaIndex wrote (e.g. questions over another document to evaluate on)."
    )
    if datasets:
        st.dataframe(
            dataset_rows(datasets), hide_index=True, width="stretch", key="dataset_table", column_config={"id": None}
        )
        labels = {d["id"]: dataset_label(d) for d in datasets}
        e1, e2 = st.columns([3, 1], vertical_alignment="bottom")
        pick = e1.selectbox("Dataset to export", list(labels), format_func=labels.get, key="export_pick")
        chosen = next(d for d in datasets if d["id"] == pick)
        e2.download_button(
            "Download JSON",
            data=lambda pick=pick: load_dataset(ws, pick).dumps(),
            file_name=f"{safe_display_name(chosen['name'])}.json",
            mime="application/json",
            key="export_download",
            on_click="ignore",
            icon=":material/download:",
        )
        with st.popover("Delete a dataset", icon=":material/delete:"):
            gone = st.selectbox("Dataset", list(labels), format_func=labels.get, key="dataset_delete_pick")
            if st.button("Delete", key="dataset_delete"):
                delete_dataset(ws, gone)
                widgets.flash(f"Deleted {md_escape(labels[gone])}.")
                st.rerun()
    else:
        st.caption("No saved dataset yet: split and save one (previous tab) or import one below.")

    with st.container(border=True):
        st.markdown("**Import a dataset**")
        # a new uploader after each import: the file just imported is not offered for a second, duplicate import
        up = st.file_uploader(
            "LlamaIndex dataset JSON", type=["json"], key=f"import_file_{st.session_state.get('import_gen', 0)}"
        )
        i1, i2 = st.columns(2)
        name = i1.text_input("Name", key="import_name", placeholder="e.g. uber questions (eval)")
        roles = {"eval": "evaluation set", "train": "training set", "val": "validation set", "import": "other"}
        role = i2.selectbox("Use as", list(roles), format_func=roles.get, key="import_role")
        if st.button("Import", key="import_start", disabled=up is None, icon=":material/upload:"):
            try:
                new_id = import_dataset(ws, up.getvalue(), name.strip() or up.name, role=role)
            except (DatasetError, ValueError) as exc:
                named = up.name in str(exc)  # a dataset error names its file already
                st.error(f"Could not import{'' if named else ' ' + md_escape(up.name)}: {md_escape(exc)}")
            else:
                got = load_dataset(ws, new_id)
                widgets.flash(
                    f"Imported {md_escape(name.strip() or up.name)}: {len(got.queries):,} questions over "
                    f"{len(got.corpus):,} chunks, as {roles[role]}."
                )
                st.session_state["import_gen"] = st.session_state.get("import_gen", 0) + 1
                st.rerun()

    with st.container(border=True):
        st.markdown("**Import your real queries (CSV): the best evaluation set**")
        st.caption(
            "Columns: `query`, and either `relevant_text` (a passage of the document: matched to its chunks "
            "by exact text, word overlap or meaning) or `page` with `document` (the file name: every chunk "
            f"of that page counts). A passage found in more than {MAX_TEXT_MATCHES} chunks (a name, a number) "
            "does not say where the answer is. Rows that cannot be matched are listed, never guessed. The queries become "
            "an evaluation set only: they are never used for training."
        )
        rq = st.file_uploader("Queries CSV", type=["csv", "txt"], key="real_queries_file")
        rq_name = st.text_input("Name", key="real_queries_name", placeholder="e.g. support questions (real)")
        if st.button(
            "Import queries", key="real_queries_start", disabled=rq is None or no_chunks, icon=":material/upload:"
        ):
            label = rq_name.strip() or f"{rq.name} (real queries)"
            try:
                with st.spinner("Matching the queries to chunks…"):
                    ds, report = import_real_queries(ws, rq.getvalue(), embedder="default", source=rq.name)
                save_real_queries(ws, ds, label, report)
            except (DatasetError, ValueError) as exc:
                why = str(exc).removeprefix(f"{rq.name}: ")  # the file named once
                st.error(f"Could not import {md_escape(rq.name)}: {md_escape(why)}")  # the file's own text: no Markdown
            else:
                st.session_state["real_queries_report"] = {"summary": report.summary(), "unmatched": report.unmatched}
                widgets.flash(f"Imported **{md_escape(label)}** as an evaluation set: {md_escape(report.summary())}.")
                st.rerun()
        last = st.session_state.get("real_queries_report")
        if last and last["unmatched"]:
            st.warning(f"Last import: {last['summary']}. These rows could not be matched:")
            st.dataframe(last["unmatched"], hide_index=True, width="stretch", key="real_queries_unmatched")
