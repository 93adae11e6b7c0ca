"""Step 4 · Compare: base embedder vs API embedder vs adapters and checkpoints on an evaluation
set; metrics with deltas, confidence intervals and significance; charts; per-query drill-down;
HTML report and CSV export."""

import streamlit as st

from core.evaluation import NDCG_K
from core.questions import list_datasets, load_dataset
from core.reports import comparison_csv, comparison_figures, html_report, list_comparisons, load_comparison, summary_rows
from core.runs import get_run, has_adapter, list_runs, read_history, run_checkpoints
from core.tasks import start_evaluation
from core.workspace import safe_display_name
from ui import state, widgets
from ui.helpers import comparison_label, dataset_label, drilldown_rows, fmt_delta_cell, pick_default, preview, ranked_above

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
    widgets.empty_state("Generate questions first and save a validation split (or import an evaluation set): "
                        "a comparison needs held-out questions.", "questions", "Go to Questions")
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
        st.success(f"{job['title']}: done. The results are below.")


if datasets:
    with st.expander("New comparison", expanded=not comparisons, icon=":material/add:"):
        ids = [d["id"] for d in datasets]
        labels = {d["id"]: dataset_label(d) for d in datasets}
        ds_id = st.selectbox("Evaluation set", ids, index=pick_default(datasets, ("eval", "val")), format_func=labels.get,
                             key="eval_ds", help="The validation split, or an imported set (e.g. questions over "
                                                 "another document). Never a set the adapters trained on.")
        c1, c2 = st.columns(2)
        with c1:
            embedder = widgets.embedder_picker("eval_embedder")
            k = st.number_input("k (hit@k, MRR@k, recall@k)", 1, 100, value=5, key="eval_k",
                                help="The guide uses k = 5. nDCG is always @10.")
        with c2:
            st.markdown("**Systems to compare**")
            st.checkbox(f"Base embedder (`{embedder}`): always included, the baseline", value=True, disabled=True,
                        key="eval_base")
            systems: list[dict] = []
            if state.api_configured():
                if st.checkbox("An API embedder", key="eval_api_on"):
                    model = st.text_input("API embedding model", value="text-embedding-3-small", key="eval_api_model")
                    st.caption(f"Endpoint: {widgets.api_endpoint()}")
                    options = widgets.api_request_fields("eval_api")
                    systems.append({"kind": "api", "spec": f"openai:{(model or '').strip() or 'text-embedding-3-small'}",
                                    "options": options})
            else:
                st.caption("API embedder: not configured. " + widgets.API_HELP)
            runs = [r for r in list_runs(ws) if r["status"] in FINISHED]
            usable = [r for r in runs if (r.get("config") or {}).get("embedder", "default") == embedder]
            other = len(runs) - len(usable)
            run_labels = {r["id"]: f"{r['name']} ({r['status']})" for r in usable if has_adapter(ws, r["id"])}
            picked = st.multiselect("Trained adapters (best state of each run)", list(run_labels),
                                    default=list(run_labels)[:3], format_func=run_labels.get, key="eval_runs")
            systems += [{"kind": "run", "run_id": rid} for rid in picked]
            ck_opts = {f"{r['id']}|{p.name[5:]}": f"{r['name']} @ step {p.name[5:]}"
                       for r in usable for p in run_checkpoints(ws, r["id"])}
            ck = st.multiselect("Checkpoints", list(ck_opts), format_func=ck_opts.get, key="eval_ckpts",
                                help="Intermediate states saved while training (e.g. to see over-training).")
            systems += [{"kind": "checkpoint", "run_id": v.split("|")[0], "step": int(v.split("|")[1])} for v in ck]
            if other:
                st.caption(f"{other} finished run(s) trained on another base embedder are hidden: choose that "
                           "embedder to compare them.")
            if not usable and not runs:
                st.caption("No trained adapter yet: you can still measure the base embedder.")
        name = st.text_input("Comparison name (optional)", key="eval_name", placeholder=labels[ds_id].split(" · ")[0])
        busy = widgets.any_active("evaluate")
        if st.button("Run comparison", key="eval_start", type="primary", disabled=busy, icon=":material/play_arrow:"):
            try:
                start_evaluation(jm, ws, ds_id, systems, top_k=int(k), embedder=embedder,
                                 api_key=state.session_api_key(), name=(name or "").strip() or None,
                                 embedder_options=widgets.embedder_options("eval_embedder"))
            except ValueError as exc:
                st.error(str(exc))
            else:
                st.rerun()

widgets.job_panel("evaluate", key="eval", result_view=show_done)

# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------
comparisons = list_comparisons(ws)
if not comparisons:
    widgets.empty_state("No comparison yet: pick an evaluation set and the systems above, then press "
                        "**Run comparison**.")
    st.stop()

st.subheader("Results")
views = {c["id"]: comparison_label(c) for c in comparisons}
if st.session_state.get("eval_view") not in views:
    st.session_state["eval_view"] = comparisons[0]["id"]
view = st.selectbox("Comparison", list(views), format_func=views.get, key="eval_view")
try:
    cmp, extra = load_comparison(ws, view)
except (KeyError, OSError, ValueError) as exc:
    st.error(f"This comparison cannot be read: {exc}")
    st.stop()

kk = cmp.top_k
rows = summary_rows(cmp)
base_row = next(r for r in rows if r["system"] == cmp.baseline)
st.caption(f"Evaluation set: **{cmp.dataset_name}** · {base_row['queries']} questions · k = {kk} · "
           f"baseline: **{cmp.baseline}**")

# headline cards: one per system
cards = st.columns(min(len(rows), 4))
for i, r in enumerate(rows[:8]):
    col = cards[i % len(cards)]
    delta = r.get(f"Δ mrr@{kk}")
    sig = r.get(f"mrr@{kk} significant")
    col.metric(f"{r['system']}: MRR@{kk}", f"{r[f'mrr@{kk}']:.3f}",
               delta=None if delta is None else f"{delta:+.3f}" + (" (significant)" if sig == "yes" else " (n.s.)"),
               delta_color="normal" if delta is not None and abs(delta) >= 5e-4 else "off",  # no green arrow for ±0
               help=f"hit@{kk} {r[f'hit@{kk}']:.3f} · nDCG@{NDCG_K} {r[f'ndcg@{NDCG_K}']:.3f}")

main_cols = ["system", "queries", f"hit@{kk}", f"mrr@{kk}", f"ndcg@{NDCG_K}", f"recall@{kk}"]
delta_cols = [c for m in (f"hit@{kk}", f"mrr@{kk}", f"ndcg@{NDCG_K}")
              for c in (f"Δ {m}", f"Δ {m} 95% CI", f"{m} p", f"{m} significant")]
table = [{**{c: r.get(c) for c in main_cols}, **{c: fmt_delta_cell(c, r.get(c)) for c in delta_cols}} for r in rows]
st.dataframe(table, hide_index=True, width="stretch", key="eval_table",
             column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in main_cols[2:]})
st.caption("Δ is against the baseline. Significant = p < 0.05 (exact McNemar test for hit@k, Wilcoxon signed-rank "
           "for MRR and nDCG). A CI that contains 0 means the difference may be noise: generate more questions.")

histories = {}
for rid in dict.fromkeys(extra.get("run_ids") or []):
    r = get_run(ws, rid)
    if r is not None:
        histories[r["name"]] = read_history(ws, rid)
figs = comparison_figures(cmp, histories)
t1, t2, t3 = st.tabs(["Metrics", "Change vs baseline", "Training curves"])
with t1:
    st.plotly_chart(figs["metrics"], key="eval_fig_metrics", width="stretch")
with t2:
    if "deltas" in figs:
        st.plotly_chart(figs["deltas"], key="eval_fig_deltas", width="stretch")
    else:
        st.caption("Only the baseline was evaluated: nothing to compare it with.")
with t3:
    if "curves" in figs and histories:
        st.plotly_chart(figs["curves"], key="eval_fig_curves", width="stretch")
        st.caption("Epoch 0 is the untrained identity (the base model): a curve that peaks and falls shows over-training.")
    else:
        st.caption("No training run in this comparison.")

# ------------------------------------------------------------------------------------------------
# drill-down
# ------------------------------------------------------------------------------------------------
st.subheader("Per-query drill-down")
others = [s for s in cmp.results if s != cmp.baseline]
if not others:
    st.caption("Add an adapter or an API embedder to the comparison to see which questions got better or worse.")
else:
    try:
        dataset = load_dataset(ws, extra["dataset_id"]) if extra.get("dataset_id") else None
    except (OSError, ValueError):
        dataset = None
    if dataset is None:
        st.caption("The evaluation set was deleted: questions and chunks are shown by id.")
    system = st.selectbox("System", others, key="dd_system")
    dd = drilldown_rows(cmp, system, dataset)
    n = {c: sum(1 for r in dd if r["change"] == c) for c in ("better", "worse", "same")}
    m = st.columns(3)
    m[0].metric("Better (relevant chunk ranked higher)", n["better"])
    m[1].metric("Worse", n["worse"])
    m[2].metric("Unchanged", n["same"])
    change = st.segmented_control("Show", ["worse", "better", "same", "all"], default="worse" if n["worse"] else "all",
                                  key="dd_change") or "all"
    shown = [r for r in dd if change == "all" or r["change"] == change]
    if not shown:
        st.caption(f"No question is {change}.")
    else:
        st.dataframe(shown, hide_index=True, width="stretch", key="dd_table", height=300,
                     column_config={"query_id": None, "question": st.column_config.TextColumn(width="large")})
        qlabels = {r["query_id"]: f"{preview(r['question'], 90)} (rank {r['base rank']} → {r['rank']})" for r in shown}
        qid = st.selectbox("Question", list(qlabels), format_func=qlabels.get, key="dd_query")
        detail = ranked_above(cmp, system, qid, dataset)
        with st.container(border=True):
            st.markdown(f"**Question:** {(dataset.queries.get(qid) if dataset else qid)}")
            rank = detail["rank"]
            st.markdown(f"Rank of the relevant chunk with **{system}**: **{rank if rank else 'not found'}** "
                        f"(baseline: {next(r['base rank'] for r in dd if r['query_id'] == qid)})")
            for rel in detail["relevant"]:
                st.markdown(f"**Relevant chunk** · {rel['where']}")
                st.text(rel["text"])
            if detail["above"]:
                st.markdown(f"**Ranked above it by {system}:**")
                for a in detail["above"]:
                    with st.expander(f"#{a['rank']} · {a['where']} · {preview(a['text'], 80)}"):
                        st.text(a["text"])
                if detail["beyond_stored"]:
                    st.caption("…and more chunks beyond the stored top list.")
            elif rank == 1:
                st.success("Ranked first: nothing above it.")

# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
st.subheader("Export")
notes = {"evaluation set": cmp.dataset_name, "base embedder": extra.get("embedder", "default"), "k": kk,
         "systems": ", ".join(cmp.results)}
e1, e2, _ = st.columns([1, 1, 2])
stem = safe_display_name(f"adapterlab-{cmp.dataset_name}")
e1.download_button("HTML report (self-contained)", key="eval_download_html", type="primary", on_click="ignore",
                   data=lambda: html_report(cmp, histories, title=f"AdapterLab retrieval report: {cmp.dataset_name}",
                                            notes=notes),
                   file_name=f"{stem}.html", mime="text/html", icon=":material/description:")
e2.download_button("Table (CSV)", key="eval_download_csv", data=lambda: comparison_csv(cmp), on_click="ignore",
                   file_name=f"{stem}.csv", mime="text/csv", icon=":material/table:")
st.caption("The HTML report opens offline (charts included) and can be mailed as is.")
