"""Step 3 · Train: configure an adapter, launch it in the background, watch the live loss and
validation curves, cancel, list checkpoints, keep every run, download the adapter folder."""

import json

import streamlit as st

from core.adapters import registered_adapters
from core.questions import list_datasets
from core.runs import adapter_dir, delete_run, has_adapter, get_run, list_runs, read_history, run_checkpoints, zip_folder
from core.tasks import job_for_run, start_training
from core.reports import has_curves, training_figure
from core.training import FIELD_HELP, LOSSES, OPTIMIZERS, TrainConfig
from ui import state, widgets
from ui.helpers import ACTIVE, dataset_label, history_summary, pick_default, run_label, run_rows

ws, jm = widgets.page_header(
    "Train",
    "Step 3 of 4 · Train a small adapter on top of the frozen embedder. Embeddings are computed once and "
    "cached, so epochs take milliseconds; validation after every epoch keeps the best state (the untrained "
    "identity included, so the result is never worse than the base model on validation).",
)
widgets.show_flash()

jm.reap()  # jobs and runs left 'running' by a process that stopped become 'interrupted' (checkpoints kept)

datasets = list_datasets(ws)
HELP = FIELD_HELP
ADAPTER_LABELS = {"linear": "Linear (LlamaIndex LinearLayer)", "two-layer": "Two-layer residual MLP (LlamaIndex TwoLayerNN)",
                  "low-rank": "Low-rank residual (custom example)"}
CUSTOM = "__custom__"
HP_FIELDS = ["epochs", "batch_size", "lr", "loss", "optimizer", "weight_decay", "warmup_ratio", "temperature",
             "val_fraction", "select_metric", "top_k", "checkpoint_every", "patience", "seed", "keep_best", "device"]


def adapter_choice() -> str:
    a = st.session_state.get("train_adapter", "linear")
    return (st.session_state.get("train_adapter_path") or "linear").strip() if a == CUSTOM else a


def apply_defaults() -> None:
    """Fill the hyperparameter widgets from the chosen preset for the chosen adapter."""
    adapter = adapter_choice()
    preset = st.session_state.get("train_preset", "recipe")
    cfg = TrainConfig.llamaindex_defaults(adapter=adapter) if preset == "llamaindex" else TrainConfig(adapter=adapter)
    for name in HP_FIELDS:
        st.session_state[f"hp_{name}"] = getattr(cfg, name)


# ------------------------------------------------------------------------------------------------
# new run
# ------------------------------------------------------------------------------------------------
runs = list_runs(ws)
if not datasets:
    widgets.empty_state("Generate questions first, then save a train / validation split: training needs a "
                        "dataset of question/chunk pairs.", "questions", "Go to Questions")
else:
    with st.expander("New training run", expanded=not any(r["status"] in ACTIVE for r in runs), icon=":material/add:"):
        if "hp_epochs" not in st.session_state:
            apply_defaults()
        ids = [d["id"] for d in datasets]
        labels = {d["id"]: dataset_label(d) for d in datasets}
        d1, d2 = st.columns(2)
        train_ds = d1.selectbox("Training dataset", ids, index=pick_default(datasets, ("train",)),
                                format_func=labels.get, key="train_ds")
        vals = [None] + ids
        # Default: hold out part of the training chunks. The saved validation split is what Compare
        # evaluates on; selecting the best epoch on it too would flatter the adapter.
        val_ds = d2.selectbox("Validation dataset (model selection)", vals, index=0, key="train_val_ds",
                              format_func=lambda v, labels=labels: "Hold out part of the training chunks" if v is None else labels[v],
                              help="Picks the best epoch. Never use your final evaluation set here.")
        if val_ds is not None and val_ds == train_ds:
            st.warning("The validation set is the training set: the best epoch will look better than it is.")

        c1, c2 = st.columns(2)
        with c1:
            embedder = widgets.embedder_picker("train_embedder")
        with c2:
            names = list(registered_adapters()) + [CUSTOM]
            st.selectbox("Adapter", names, key="train_adapter", on_change=apply_defaults,
                         format_func=lambda a: ADAPTER_LABELS.get(a, "Your own class (import path)" if a == CUSTOM else f"{a} (registered)"),
                         help="Linear and two-layer save in LlamaIndex's format and load in AdapterEmbeddingModel.")
            if st.session_state.get("train_adapter") == CUSTOM:
                st.text_input("Import path of an nn.Module with forward(embed) and get_config_dict()",
                              key="train_adapter_path", placeholder="mypkg.adapters:MyAdapter", on_change=apply_defaults)
            st.text_input("Adapter options (JSON)", value="{}", key="train_adapter_kwargs",
                          help="Constructor overrides, e.g. {\"hidden_features\": 512} (two-layer), {\"bias\": true} "
                               "(linear), {\"rank\": 16} (low-rank).")
            st.radio("Starting point", ["recipe", "llamaindex"], key="train_preset", on_change=apply_defaults,
                     horizontal=True, format_func={"recipe": "AdapterLab recipe",
                                                   "llamaindex": "LlamaIndex defaults"}.get,
                     help="LlamaIndex's engine settings (lr 2e-5, batch 10, in-batch loss) barely move the weights; "
                          "the recipe uses a softmax over the whole corpus and a higher learning rate.")

        st.markdown("**Hyperparameters**")
        h = st.columns(4)
        h[0].number_input("Epochs", 1, 500, key="hp_epochs", help=HELP["epochs"])
        h[1].number_input("Batch size", 1, 4096, key="hp_batch_size", help=HELP["batch_size"])
        h[2].number_input("Learning rate", min_value=1e-7, max_value=1.0, format="%.1e", step=1e-5, key="hp_lr",
                          help=HELP["lr"])
        h[3].selectbox("Loss", list(LOSSES), key="hp_loss", help=HELP["loss"])
        h[0].selectbox("Optimizer", list(OPTIMIZERS), key="hp_optimizer", help=HELP["optimizer"])
        h[1].number_input("Weight decay", 0.0, 1.0, step=0.01, format="%.3f", key="hp_weight_decay",
                          help=HELP["weight_decay"])
        h[2].number_input("Warm-up ratio", 0.0, 0.99, step=0.05, key="hp_warmup_ratio", help=HELP["warmup_ratio"])
        h[3].number_input("Temperature", 0.001, 10.0, step=0.01, format="%.3f", key="hp_temperature",
                          help=HELP["temperature"])
        h[0].number_input("Validation fraction", 0.0, 0.89, step=0.05, key="hp_val_fraction",
                          help=HELP["val_fraction"] + " (Ignored when a validation dataset is chosen.)")
        h[1].selectbox("Select best epoch by", ["mrr", "hit", "ndcg"], key="hp_select_metric", help=HELP["select_metric"])
        h[2].number_input("Validation k", 1, 100, key="hp_top_k", help=HELP["top_k"])
        h[3].number_input("Checkpoint every N steps", 0, 1_000_000, key="hp_checkpoint_every",
                          help=HELP["checkpoint_every"])
        h[0].number_input("Early-stop patience (epochs)", 0, 500, key="hp_patience", help=HELP["patience"])
        h[1].number_input("Seed", 0, 2**31 - 1, key="hp_seed", help=HELP["seed"])
        h[2].selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="hp_device", help=HELP["device"])
        h[3].checkbox("Keep the best epoch", key="hp_keep_best", help=HELP["keep_best"])

        name = st.text_input("Run name (optional)", key="train_name", placeholder="e.g. linear, lr 1e-4")
        if st.button("Start training", key="train_start", type="primary", icon=":material/play_arrow:"):
            try:
                kwargs = json.loads(st.session_state.get("train_adapter_kwargs") or "{}")
                if not isinstance(kwargs, dict):
                    raise ValueError("adapter options must be a JSON object, e.g. {\"hidden_features\": 512}")
                values = {f: st.session_state[f"hp_{f}"] for f in HP_FIELDS}
                config = TrainConfig(adapter=adapter_choice(), adapter_kwargs=kwargs, **values)
                _, run_id = start_training(jm, ws, config, dataset_id=train_ds, val_dataset_id=val_ds,
                                           embedder=embedder, name=(name or "").strip() or None,
                                           api_key=state.session_api_key(),
                                           embedder_options=widgets.embedder_options("train_embedder"))
            except (ValueError, TypeError) as exc:  # TrainingError and bad JSON are ValueErrors
                st.error(f"Cannot start this run: {exc}")
            else:
                st.session_state["train_view"] = run_id
                st.rerun()


# ------------------------------------------------------------------------------------------------
# one run: live while it trains
# ------------------------------------------------------------------------------------------------
def draw_run(run: dict) -> None:
    run_id = run["id"]
    cfg = (run.get("config") or {}).get("config") or {}
    k = int(cfg.get("top_k", 5))
    hist = read_history(ws, run_id)
    s = history_summary(hist)
    job = job_for_run(jm, run_id)
    active = run["status"] in ACTIVE

    top, btn = st.columns([5, 1], vertical_alignment="center")
    top.markdown(f"**{run['name']}** · `{run['status']}` · {cfg.get('adapter')} on "
                 f"`{(run.get('config') or {}).get('embedder')}`")
    if active:
        if job and jm.is_local(job["id"]):
            if btn.button("Cancel", key=f"train_cancel_{run_id}", icon=":material/stop_circle:",
                          help="Stops after the current step; the best state so far is saved."):
                jm.cancel(job["id"])
                st.toast("Cancelling: the best state so far will be saved.")
        elif job is None:
            btn.caption("running in another process")
        pct = float((job or {}).get("progress") or 0.0)
        msg = (job or {}).get("message") or s["phase"] or ("waiting for the run before it" if run["status"] == "queued" else "starting…")
        st.progress(min(max(pct, 0.0), 1.0), text=f"{pct:.0%} · {msg}")

    base, best = s["base_val"], s["best_val"]
    mk = f"mrr@{k}"
    m = st.columns(4)
    m[0].metric("Epochs done", f"{s['epochs_done']} / {cfg.get('epochs', '?')}")
    m[1].metric("Last step loss", "–" if s["last_loss"] is None else f"{s['last_loss']:.4f}")
    m[2].metric(f"Val {mk} (base)", "–" if mk not in base else f"{base[mk]:.3f}")
    m[3].metric(f"Val {mk} (best epoch {s['best_epoch'] if s['best_epoch'] is not None else '–'})",
                "–" if mk not in best else f"{best[mk]:.3f}",
                delta=None if (mk not in best or mk not in base) else f"{best[mk] - base[mk]:+.3f}",
                delta_color="normal" if mk in best and mk in base and abs(best[mk] - base[mk]) >= 5e-4 else "off")
    if has_curves(hist):
        st.plotly_chart(training_figure(hist, k), key=f"train_chart_{run_id}", width="stretch")
    elif active:
        st.caption("The chart appears after the first training step (embedding comes first; cached texts are free).")
    else:
        st.caption("This run recorded no training step.")


def draw_finished(run: dict) -> None:
    run_id = run["id"]
    if run["status"] == "failed":
        st.error(f"This run failed: {run.get('error') or 'unknown error'}")
    elif run["status"] == "interrupted":
        last = (run.get("result") or {}).get("last_checkpoint")
        st.warning(f"This run was interrupted ({run.get('error') or 'the server stopped'}). "
                   + (f"Last checkpoint: `{last}`." if last else "No checkpoint was saved."))
    elif run["status"] == "cancelled":
        st.warning("This run was cancelled: the best state reached before the stop was saved.")
    res = run.get("result") or {}
    if res.get("best_epoch") == 0 and run["status"] == "done":
        st.info("Validation never beat the untrained identity: the saved adapter is the identity (same results "
                "as the base model). Try a higher learning rate, more questions, or fewer epochs.")
    ckpts = run_checkpoints(ws, run_id)
    folder = adapter_dir(ws, run_id)
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Checkpoints**")
        if ckpts:
            st.dataframe([{"checkpoint": p.name, "step": int(p.name[5:])} for p in ckpts], hide_index=True,
                         width="stretch", key=f"ckpt_table_{run_id}", height=min(38 + 35 * len(ckpts), 250))
        else:
            st.caption("No checkpoint saved.")
    with c2:
        st.markdown("**Download**")
        if has_adapter(ws, run_id):
            st.download_button("Adapter folder (LlamaIndex format, zip)", data=lambda: zip_folder(folder, "adapter"),
                               file_name=f"{run_id}-adapter.zip", mime="application/zip", on_click="ignore",
                               key=f"train_download_{run_id}", icon=":material/download:", type="primary")
            st.caption("`config.json` + `pytorch_model.bin` (+ `checkpoints/`): loads in LlamaIndex's "
                       "`AdapterEmbeddingModel(base, path, LinearLayer)` or with `core.adapters.load_adapter`.")
        else:
            st.caption("No final adapter was saved for this run" + (": its checkpoints are below." if ckpts else "."))
        if ckpts:
            names = {p.name: p for p in ckpts}
            pick = st.selectbox("Checkpoint", list(names), index=len(names) - 1, key=f"ckpt_pick_{run_id}")
            st.download_button(f"Checkpoint {pick} (zip)", data=lambda p=names[pick]: zip_folder(p, pick),
                               file_name=f"{run_id}-{pick}.zip", mime="application/zip", on_click="ignore",
                               key=f"ckpt_download_{run_id}")


if not runs:
    if datasets:
        widgets.empty_state("No training run yet: choose a dataset and press **Start training** above.")
    st.stop()
st.subheader("Runs")

run_labels = {r["id"]: run_label(r) for r in runs}
active_runs = [r for r in runs if r["status"] in ACTIVE]
if st.session_state.get("train_view") not in run_labels:
    st.session_state["train_view"] = (active_runs[-1] if active_runs else runs[0])["id"]
view = st.selectbox("Show run", list(run_labels), format_func=run_labels.get, key="train_view")
run = get_run(ws, view)
if run is None:  # deleted from another tab meanwhile
    st.rerun()

with st.container(border=True):
    if run["status"] in ACTIVE:
        @st.fragment(run_every=widgets.POLL_S)
        def live() -> None:
            jm.reap()  # a run whose process died ends as 'interrupted' instead of polling forever
            current = get_run(ws, view)
            if current is None or current["status"] not in ACTIVE:
                st.rerun(scope="app")  # finished: redraw once with the results, and stop polling
            draw_run(current)

        live()
    else:
        draw_run(run)
        draw_finished(run)

st.markdown("**Run history**")
st.dataframe(run_rows(runs), hide_index=True, width="stretch", key="run_table", column_config={"id": None})
h1, h2 = st.columns([1, 3])
with h1.popover("Delete a run", icon=":material/delete:"):
    gone = st.selectbox("Run", list(run_labels), format_func=run_labels.get, key="run_delete_pick")
    disabled = next(r for r in runs if r["id"] == gone)["status"] in ACTIVE
    if st.button("Delete", key="run_delete", disabled=disabled, help="Running runs cannot be deleted: cancel first."):
        delete_run(ws, gone)
        widgets.flash(f"Deleted {run_labels[gone]}.")
        st.rerun()
if any(r["status"] in ("done", "cancelled", "interrupted") for r in runs):
    widgets.next_step("Compare the base embedder with your adapters and checkpoints on held-out questions.", "compare")
