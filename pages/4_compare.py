"""Step 4 · Compare: base embedder vs API embedder vs adapters and checkpoints on an evaluation
set. The results read like the report: what was measured and its caveats, one sentence per
system, a compact table and one chart; then the details (every metric with p-values, checkpoints,
training curves, the leakage check), the per-query drill-down, HTML report and CSV export."""

import streamlit as st

from core.datasets import QADataset, list_datasets, load_dataset
from core.evaluation import NDCG_K, checkpoint_name
from core.finetune import system_label
from core.launch import custom_code_systems, start_evaluation, start_finetune_then_distil
from core.provenance import comparison_context, exclude_leaked, leaked_ids
from core.reports import (
    comparison_csv,
    comparison_figures,
    html_report,
    list_comparisons,
    load_comparison,
    save_comparison,
    summary_figure,
    update_comparison_extra,
)
from core.runs import (
    distillations_for,
    get_run,
    has_adapter,
    has_model,
    list_runs,
    read_history,
    run_checkpoints,
)
from core.summary import (
    caveats,
    checkpoint_rows,
    compact_rows,
    leakage_entries,
    overlap_text,
    provenance_items,
    summary_sentences,
    system_provenance,
)
from core.workspace import safe_display_name
from ui import state, widgets
from ui.helpers import (
    EVAL_ROLES,
    comparison_detail_rows,
    comparison_label,
    dataset_label,
    drilldown_rows,
    md_escape,
    pick_default,
    preview,
    ranked_above,
)

ws, jm = widgets.page_header(
    "Compare",
    "Step 4 of 4 · Rank every chunk of an evaluation set for each held-out question, with the base "
    "embedder, an API embedder and your adapters. hit@k: the right chunk is in the top k; MRR@k: 1 / its "
    f"rank (0 beyond k); nDCG@{NDCG_K}. Deltas come with a paired bootstrap 95% CI and a significance test.",
)
widgets.show_flash()

datasets = list_datasets(ws)
comparisons = list_comparisons(ws)
if not datasets and not comparisons:
    widgets.empty_state(
        "Generate questions first and save a validation split (or import an evaluation set): "
        "a comparison needs held-out questions.",
        "questions",
        "Go to Questions",
    )
    st.stop()

# ------------------------------------------------------------------------------------------------
# new comparison
# ------------------------------------------------------------------------------------------------
FINISHED = ("done", "cancelled", "interrupted")


def show_done(job: dict) -> None:
    eval_id = (job.get("result") or {}).get("eval_id")
    if eval_id and st.session_state.get("eval_last_job") != job["id"]:
        st.session_state["eval_last_job"] = job["id"]
        st.session_state["eval_view"] = eval_id  # show the new comparison below
        st.success(f"{md_escape(job['title'])}: done. The results are below.")


if datasets:
    with st.expander("New comparison", expanded=not comparisons, icon=":material/add:"):
        ids = [d["id"] for d in datasets]
        labels = {d["id"]: dataset_label(d) for d in datasets}
        ds_id = st.selectbox(
            "Evaluation set",
            ids,
            index=pick_default(datasets, EVAL_ROLES),
            format_func=labels.get,
            key="eval_ds",
            help="The validation split, or an imported set (e.g. questions over "
            "another document). Never a set the adapters trained on.",
        )
        c1, c2 = st.columns(2)
        with c1:
            embedder = widgets.embedder_picker("eval_embedder")
            k = st.number_input(
                "k (hit@k, MRR@k, recall@k)",
                1,
                100,
                value=5,
                key="eval_k",
                help="The guide uses k = 5. nDCG is always @10.",
            )
        with c2:
            st.markdown("**Systems to compare**")
            st.checkbox(
                f"Base embedder ({md_escape(embedder)}): always included, the baseline",
                value=True,
                disabled=True,
                key="eval_base",
            )
            systems: list[dict] = []
            if state.api_configured():
                if st.checkbox("An API embedder", key="eval_api_on"):
                    model = st.text_input("API embedding model", value="text-embedding-3-small", key="eval_api_model")
                    st.caption(f"Endpoint: {md_escape(widgets.api_endpoint())}")
                    options = widgets.api_request_fields("eval_api")
                    systems.append(
                        {
                            "kind": "api",
                            "spec": f"openai:{(model or '').strip() or 'text-embedding-3-small'}",
                            "options": options,
                        }
                    )
            else:
                st.caption("API embedder: not configured. " + widgets.API_HELP)
            runs = [r for r in list_runs(ws) if r["status"] in FINISHED]
            usable = [r for r in runs if (r.get("config") or {}).get("embedder", "default") == embedder]
            other = len(runs) - len(usable)
            run_labels = {r["id"]: f"{r['name']} ({r['status']})" for r in usable if has_adapter(ws, r["id"])}
            run_labels.update(
                {  # full fine-tunes: their own model, and their price in the label
                    r["id"]: system_label(f"{r['name']} ({r['status']})", (r.get("result") or {}).get("cost"))
                    for r in usable
                    if r.get("kind") == "finetune" and has_model(ws, r["id"])
                }
            )
            picked = st.multiselect(
                "Trained adapters (best state of each run)",
                list(run_labels),
                default=list(run_labels)[:3],
                format_func=run_labels.get,
                key="eval_runs",
            )
            systems += [{"kind": "run", "run_id": rid} for rid in picked]
            ck_opts = {
                f"{r['id']}|{p.name[5:]}": checkpoint_name(r["name"], p.name[5:])
                for r in usable
                for p in run_checkpoints(ws, r["id"])
            }
            ck = st.multiselect(
                "Checkpoints",
                list(ck_opts),
                format_func=ck_opts.get,
                key="eval_ckpts",
                help="Intermediate states saved while training (e.g. to see over-training).",
            )
            systems += [{"kind": "checkpoint", "run_id": v.split("|")[0], "step": int(v.split("|")[1])} for v in ck]
            if other:
                st.caption(
                    f"{other} finished run(s) trained on another base embedder are hidden: choose that "
                    "embedder to compare them."
                )
            if not usable and not runs:
                st.caption("No trained adapter yet: you can still measure the base embedder.")
            allow_custom = False
            if custom_code_systems(ws, systems):
                st.warning(
                    "Some of these adapters are custom classes: comparing them imports their Python module. "
                    + widgets.CUSTOM_CODE_WARNING,
                    icon=":material/warning:",
                )
                allow_custom = st.checkbox("Allow custom code for these adapters", key="eval_allow_custom")
        name = st.text_input("Comparison name (optional)", key="eval_name", placeholder=labels[ds_id].split(" · ")[0])
        leave_out = st.checkbox(
            "Leave out evaluation questions that repeat an adapter's training questions",
            key="eval_exclude",
            help="Identical or near-identical (cosine ≥ 0.95 on the base "
            "model's vectors) to a question of any compared adapter's training set.",
        )
        busy = widgets.any_active("evaluate")
        if st.button("Run comparison", key="eval_start", type="primary", disabled=busy, icon=":material/play_arrow:"):
            try:
                start_evaluation(
                    jm,
                    ws,
                    ds_id,
                    systems,
                    top_k=int(k),
                    embedder=embedder,
                    api_key=state.session_api_key(),
                    name=(name or "").strip() or None,
                    exclude_leaked="questions" if leave_out else None,
                    allow_custom_code=allow_custom,
                    embedder_options=widgets.embedder_options("eval_embedder"),
                )
            except ValueError as exc:
                st.error(md_escape(exc))
            else:
                st.rerun()

widgets.job_panel("evaluate", key="eval", result_view=show_done)

# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------
comparisons = list_comparisons(ws)
if not comparisons:
    widgets.empty_state(
        "No comparison yet: pick an evaluation set and the systems above, then press **Run comparison**."
    )
    st.stop()

st.subheader("Results")
views = {c["id"]: comparison_label(c) for c in comparisons}
if st.session_state.get("eval_view_next") in views:  # a comparison made on this page below: show it
    st.session_state["eval_view"] = st.session_state.pop("eval_view_next")
if st.session_state.get("eval_view") not in views:
    st.session_state["eval_view"] = comparisons[0]["id"]
view = st.selectbox("Comparison", list(views), format_func=views.get, key="eval_view")
try:
    cmp, extra = load_comparison(ws, view)
except (KeyError, OSError, ValueError) as exc:
    st.error(f"This comparison cannot be read: {md_escape(exc)}")
    st.stop()
context = comparison_context(ws, cmp, extra)
if not extra.get("context") and context.get("systems"):  # saved before contexts existed: keep the rebuilt one
    update_comparison_extra(ws, view, {**extra, "context": context})

kk = cmp.top_k
LEVELS = {"error": st.error, "warning": st.warning, "info": st.info}

# what was measured, and what could make it mislead
with st.container(border=True):
    st.markdown("  \n".join(f"**{label}:** {md_escape(text)}" for label, text in provenance_items(cmp, context)))
for c in caveats(cmp, context):
    LEVELS.get(c["level"], st.info)(md_escape(c["text"]))
    act = c.get("action") or {}
    if act.get("recipe") == "distil" and act.get("dataset_id") and act.get("eval_dataset_id"):
        # the recipe that carried over to new documents, one click away
        done = distillations_for(ws, act["dataset_id"], act["eval_dataset_id"])
        if done:
            pending = done[0]["status"] in ("queued", "running")
            st.success(
                f"{'Queued' if pending else 'Run'}: {done[0]['name']} ({done[0]['status']}; a full fine-tune, then "
                "its distillation over the ingested documents and this set's chunks). "
                + (
                    "It takes minutes; compare it here once it is done."
                    if pending
                    else "Compare it on this set: New comparison, under Trained adapters."
                )
            )
            widgets.link("train", "Follow it on the Train page" if pending else "Open it on the Train page")
        elif st.button(
            "Fine-tune, then distil for this evaluation set (minutes)",
            key=f"eval_distil_{act['dataset_id']}",
            icon=":material/play_arrow:",
            help="Queues two runs on the adapter's training set: a full fine-tune of the base model, then its "
            "distillation into a linear adapter that ranks the ingested documents and this set's chunks (never "
            "its questions). Only the base model runs at query time; the index stays as it is.",
        ):
            try:
                adapter_run = get_run(ws, act["run_id"]) if act.get("run_id") else None
                trained = (adapter_run or {}).get("config") or {}
                ft_id, _ = start_finetune_then_distil(
                    jm,
                    ws,
                    act["dataset_id"],
                    embedder=act["embedder"],
                    embedder_options=trained.get("embedder_options"),  # the adapter's prefixes, if any
                    eval_dataset_id=act["eval_dataset_id"],
                )
            except (KeyError, ValueError, TypeError) as exc:  # a dataset deleted since; FinetuneError
                st.error(f"Cannot start this recipe: {md_escape(exc)}")
            else:
                st.session_state["train_view"] = ft_id  # the Train page opens on the run training first
                st.rerun()
n_dup, n_all = len(leaked_ids(context, "questions")), len(leaked_ids(context, "chunks"))
n_dup, n_all = (n if n < cmp.n_queries else 0 for n in (n_dup, n_all))  # all leaked: nothing left to re-run on
if (n_dup or n_all) and not context.get("excluded"):
    x1, x2 = st.columns(2)
    modes = []
    if n_dup:
        modes.append(
            (
                "questions",
                x1.button(
                    f"Re-run without the {n_dup} repeated question(s)",
                    key="eval_exclude_q",
                    icon=":material/filter_alt:",
                    help="Identical or near-identical to a training question of a compared adapter.",
                ),
            )
        )
    if n_all > n_dup:
        modes.append(
            (
                "chunks",
                x2.button(
                    f"Re-run without the {n_all} question(s) about trained passages",
                    key="eval_exclude_c",
                    icon=":material/filter_alt:",
                    help="Also every question whose passage an adapter trained on: "
                    "what is left measures new passages only.",
                ),
            )
        )
    for mode, clicked in modes:
        if clicked:
            try:
                new_cmp, new_ctx = exclude_leaked(cmp, context, mode)
            except ValueError as exc:
                st.error(md_escape(exc))
            else:
                name = next((c["name"] for c in comparisons if c["id"] == view), cmp.dataset_name)
                st.session_state["eval_view_next"] = save_comparison(
                    ws, new_cmp, name=f"{name} (without leaked questions)", extra={**extra, "context": new_ctx}
                )
                st.rerun()

# the one-minute summary: one sentence per system, a compact table, one chart
st.markdown("\n".join(f"- {md_escape(line)}" for line in summary_sentences(cmp, context)))
st.dataframe(compact_rows(cmp, context), hide_index=True, width="stretch", key="eval_summary")
st.caption(
    f"Δ: change against the baseline in points (hundredths of hit@{kk} or of MRR@{kk}), with its 95% confidence "
    f"interval. Significant: p < {cmp.alpha} after Holm's adjustment for the systems compared; the intervals are "
    'each system\'s own, not adjusted, so with several systems one that just clears 0 can still read "no".'
)
# The chart of the deltas is built only while open (on_change="rerun" makes .open tell): the table
# above carries the same numbers, and a first load without a chart skips the chart library too.
chart = st.expander(
    "Chart: change against the baseline with 95% CIs",
    icon=":material/bar_chart:",
    key="eval_chart_open",
    on_change="rerun",
)
if chart.open:
    with chart:
        fig = summary_figure(cmp, context)
        if fig is not None:
            st.plotly_chart(fig, key="eval_fig_summary", width="stretch")
        else:
            st.caption("Only the baseline was measured: there is no change to chart.")
prov = [
    p
    for p in system_provenance(cmp, context)
    if not ((context.get("systems") or {}).get(p["system"]) or {}).get("checkpoint")
]
if prov:
    st.markdown("**Where each adapter comes from**")
    st.dataframe(prov, hide_index=True, width="stretch", key="eval_provenance")

# details
st.subheader("Details")
with st.expander("Every metric, p-values and tests", icon=":material/table:"):
    ids = {n: str(((context.get("systems") or {}).get(n) or {}).get("id", "")) for n in cmp.results}
    table = comparison_detail_rows(cmp, ids)
    metric_cols = [f"hit@{kk}", f"mrr@{kk}", f"ndcg@{NDCG_K}", f"recall@{kk}"]
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        key="eval_table",
        column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in metric_cols},
    )
    st.caption(
        f"Δ is against the baseline, with a paired bootstrap 95% CI. p: exact McNemar test for hit@k, Wilcoxon "
        f"signed-rank for MRR and nDCG (McNemar for any metric that is 0 or 1 on every question); p (Holm): adjusted among the systems compared (a checkpoint among every comparison); "
        f"significant = p (Holm) < {cmp.alpha}. A CI that contains 0 means the difference may be noise; the CIs are "
        "not adjusted for the number of systems."
    )
cks = checkpoint_rows(cmp, context)
if cks:
    with st.expander(f"Checkpoints ({len(cks)}): compared on this evaluation set", icon=":material/flag:"):
        st.dataframe(cks, hide_index=True, width="stretch", key="eval_ckpt_table")
        st.caption(
            "Picking the best checkpoint on the set it is measured on overstates its gain: confirm the choice "
            "on questions it was not picked on."
        )


def run_histories() -> dict[str, list[dict]]:
    """Each compared run's history by run name (read when a chart or the report needs it)."""
    out = {}
    for rid in dict.fromkeys(extra.get("run_ids") or []):
        r = get_run(ws, rid)
        if r is not None:
            out[r["name"]] = read_history(ws, rid)
    return out


# Built only while open (on_change="rerun" makes .open tell): every run's history is read and
# charted here, which a page load that never opens it should not pay for.
curves = st.expander("Training curves", icon=":material/show_chart:", key="eval_curves_open", on_change="rerun")
if curves.open:
    with curves:
        histories = run_histories()
        figs = comparison_figures(cmp, histories)
        if "curves" in figs and histories:
            st.plotly_chart(figs["curves"], key="eval_fig_curves", width="stretch")
            st.caption(
                "Epoch 0 is the untrained identity (the base model): a curve that peaks and falls shows over-training."
            )
        else:
            st.caption("No training run in this comparison.")
leaks = leakage_entries(context)
if leaks:
    with st.expander("Leakage check: training sets against the evaluation set", icon=":material/water_drop:"):
        for entry, rep in leaks:
            who = ", ".join(entry.get("systems") or [])
            train = (entry.get("train_set") or {}).get("name", "")
            st.markdown(
                f"**{md_escape(who)}**, trained on **{md_escape(train)}**: "
                f"{md_escape(entry.get('error') or overlap_text(rep, context.get('excluded')))}."
            )
            if rep is not None and rep.examples:
                st.dataframe(
                    [
                        {"evaluation question": e["eval"], "training question": e["train"], "cosine": e["cosine"]}
                        for e in rep.examples
                    ],
                    hide_index=True,
                    width="stretch",
                )

# ------------------------------------------------------------------------------------------------
# drill-down
# ------------------------------------------------------------------------------------------------
st.subheader("Per-query drill-down")
others = [s for s in cmp.results if s != cmp.baseline]
if not others:
    st.caption("Add an adapter or an API embedder to the comparison to see which questions got better or worse.")
else:
    try:  # a workspace set, or the file `evaluate` was given (saved with --save)
        if extra.get("dataset_id"):
            dataset = load_dataset(ws, extra["dataset_id"])
        else:
            dataset = QADataset.load(extra["dataset_path"]) if extra.get("dataset_path") else None
    except (OSError, ValueError):
        dataset = None
    if dataset is None:
        st.caption(
            f"The evaluation file {md_escape(extra['dataset_path'])} could not be read (moved or deleted): questions "
            "and chunks are shown by id."
            if extra.get("dataset_path") and not extra.get("dataset_id")
            else "The evaluation set was deleted: questions and chunks are shown by id."
        )
    system = st.selectbox("System", others, key="dd_system")
    dd = drilldown_rows(cmp, system, dataset)
    n = {c: sum(1 for r in dd if r["change"] == c) for c in ("better", "worse", "same")}
    m = st.columns(3)
    m[0].metric("Better (relevant chunk ranked higher)", n["better"])
    m[1].metric("Worse", n["worse"])
    m[2].metric("Unchanged", n["same"])
    change = (
        st.segmented_control(
            "Show", ["worse", "better", "same", "all"], default="worse" if n["worse"] else "all", key="dd_change"
        )
        or "all"
    )
    shown = [r for r in dd if change == "all" or r["change"] == change]
    if not shown:
        st.caption(f"No question is {change}.")
    else:
        st.dataframe(
            shown,
            hide_index=True,
            width="stretch",
            key="dd_table",
            height=300,
            column_config={"query_id": None, "question": st.column_config.TextColumn(width="large")},
        )
        qlabels = {r["query_id"]: f"{preview(r['question'], 90)} (rank {r['base rank']} → {r['rank']})" for r in shown}
        qid = st.selectbox("Question", list(qlabels), format_func=qlabels.get, key="dd_query")
        detail = ranked_above(cmp, system, qid, dataset)
        with st.container(border=True):
            st.markdown(f"**Question:** {md_escape(dataset.queries.get(qid) if dataset else qid)}")
            rank = detail["rank"]
            st.markdown(
                f"Rank of the relevant chunk with **{md_escape(system)}**: **{rank if rank else 'not found'}** "
                f"(baseline: {next(r['base rank'] for r in dd if r['query_id'] == qid)})"
            )
            for rel in detail["relevant"]:
                st.markdown(f"**Relevant chunk** · {md_escape(rel['where'])}")
                st.text(rel["text"])
            if detail["above"]:
                st.markdown(f"**Ranked above it by {md_escape(system)}:**")
                for a in detail["above"]:
                    with st.expander(f"#{a['rank']} · {md_escape(a['where'])} · {md_escape(preview(a['text'], 80))}"):
                        st.text(a["text"])
                if detail["beyond_stored"]:
                    st.caption("…and more chunks beyond the stored top list.")
            elif rank == 1:
                st.success("Ranked first: nothing above it.")

# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
st.subheader("Export")
e1, e2, _ = st.columns([1, 1, 2])
stem = safe_display_name(f"adapterlab-{cmp.dataset_name}")
e1.download_button(
    "HTML report (self-contained)",
    key="eval_download_html",
    type="primary",
    on_click="ignore",
    data=lambda: html_report(
        cmp, run_histories(), title=f"AdapterLab retrieval report: {cmp.dataset_name}", context=context
    ),
    file_name=f"{stem}.html",
    mime="text/html",
    icon=":material/description:",
)
e2.download_button(
    "Table (CSV)",
    key="eval_download_csv",
    data=lambda: comparison_csv(cmp, context),
    on_click="ignore",
    file_name=f"{stem}.csv",
    mime="text/csv",
    icon=":material/table:",
)
st.caption("The HTML report opens offline (charts included) and can be mailed as is.")
