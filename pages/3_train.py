"""Step 3 · Train: configure an adapter, launch it in the background, watch the live loss and
validation curves, cancel, list checkpoints, keep every run, download the adapter folder."""

import json

import streamlit as st

from core.adapters import read_adapter_meta, registered_adapters
from core.carryover import (
    blind_distillation_note,
    mixed_sources_note,
    offline_training_caveat,
    unnamed_search_sets_note,
)
from core.datasets import list_datasets
from core.distill import LONG_CHUNKS_SHARE, RECIPES, DistillConfig, recipe_estimate
from core.export import EXPORTABLE_TEXT, export_zip, is_api_embedder, run_export_support
from core.finetune import LOSSES as FT_LOSSES
from core.finetune import FinetuneConfig, cost_label, describe_cost, duration_text, read_lengths
from core.launch import job_for_run, start_distill, start_finetune, start_finetune_then_distil, start_training
from core.losses import Loss
from core.reports import MAX_STEP_POINTS, cv_figure, has_curves, metric_label, training_figure
from core.runs import (
    adapter_dir,
    delete_run,
    get_run,
    has_adapter,
    has_model,
    list_runs,
    model_dir,
    read_history,
    request_cancel,
    run_checkpoints,
    unnamed_search_sets,
    workspace_chunk_count,
    zip_folder,
)
from core.selection import BLIND_NOTE, VALIDATIONS
from core.train_config import FIELD_HELP, OPTIMIZER_NAMES, SELECTIONS, SEPARATE_SOURCES_NOTE, TrainConfig
from ui import state, widgets
from ui.helpers import (
    ACTIVE,
    EVAL_ROLES,
    dataset_label,
    history_summary,
    hp_key,
    md_escape,
    pick_default,
    run_label,
    run_rows,
    set_hp_fields,
)

ws, jm = widgets.page_header(
    "Train",
    "Step 3 of 4 · Train a small adapter on top of the frozen embedder: your index keeps the base model's "
    "vectors. Two recipes: fine-tune the base model, then distil it into the adapter (minutes; the measured "
    "best on new documents cut into chunks longer than the base model reads, once it knows which documents you "
    "will search), or train the adapter "
    "on the questions over cached vectors (seconds; cross-validation picks how long, and keeps the base model "
    "when training does not help out of fold).",
)
widgets.show_flash()

jm.reap()  # jobs and runs left 'running' by a process that stopped become 'interrupted' (checkpoints kept)

datasets = list_datasets(ws)
HELP = FIELD_HELP
ADAPTER_LABELS = {
    "linear": "Linear (LlamaIndex LinearLayer)",
    "two-layer": "Two-layer residual MLP (LlamaIndex TwoLayerNN)",
    "low-rank": "Low-rank residual (custom example)",
}
CUSTOM = "__custom__"
PRESET_FOR = "hp_preset_for"  # session state: the (adapter, starting point) whose values the form holds
HP_FIELDS = [
    "epochs",
    "batch_size",
    "lr",
    "loss",
    "optimizer",
    "weight_decay",
    "warmup_ratio",
    "temperature",
    "selection",
    "cv_folds",
    "cv_design",
    "val_fraction",
    "select_metric",
    "top_k",
    "checkpoint_every",
    "patience",
    "seed",
    "keep_best",
    "device",
    "pseudo_queries",
    "cv_validation",
]


@st.cache_data(show_spinner=False, max_entries=64)
def _offline_share(root: str, dataset_id: str) -> tuple[int, int, tuple[int, int] | None]:
    """(offline questions, all questions, (offline-only, written-only) chunks when training keeps the two kinds
    apart) of a saved dataset (saved datasets never change)."""
    from core.datasets import load_dataset
    from core.provenance import question_sources
    from core.runs import separate_source_chunks

    ds = load_dataset(ws, dataset_id)
    n_offline = question_sources(ws, ds)["sources"].get("offline", 0)
    return n_offline, len(ds.queries), separate_source_chunks(ws, ds) if n_offline else None


@st.cache_data(show_spinner=False, max_entries=64)
def _design(root: str, train_id: str, eval_id: str | None) -> str:
    """The validation design ``auto`` would choose for these saved datasets (core.selection.choose_design, the
    share of the evaluation set's text among the training chunks read as training reads it)."""
    from core.datasets import load_dataset
    from core.distill import eval_overlap
    from core.selection import choose_design

    train = load_dataset(ws, train_id)
    other = load_dataset(ws, eval_id) if eval_id else None

    def chunks(ds) -> set[str]:
        return {c for ids in ds.relevant_docs.values() for c in ids}

    if other is None:
        return choose_design(chunks(train), None)[0]
    return choose_design(chunks(train), chunks(other), shared=eval_overlap(train, other))[0]


def adapter_choice() -> str:
    a = st.session_state.get("train_adapter", "linear")
    return (st.session_state.get("train_adapter_path") or "linear").strip() if a == CUSTOM else a


def preset_values(adapter: str, preset: str) -> dict:
    """The hyperparameter fields' values for an adapter and a starting point (recipe or llamaindex)."""
    cfg = TrainConfig.llamaindex_defaults(adapter=adapter) if preset == "llamaindex" else TrainConfig(adapter=adapter)
    return {name: getattr(cfg, name) for name in HP_FIELDS}


def hk(name: str) -> str:
    """The current widget key of hyperparameter ``name`` (ui.helpers.hp_key)."""
    return hp_key(name, st.session_state)


def apply_defaults() -> None:
    """Fill the hyperparameter fields that the chosen adapter and starting point set differently from
    the previous choice (two-layer: the learning rate; LlamaIndex's defaults: most fields), each under
    a new widget key so a value the browser sent before this rerun cannot land on it; what the user
    typed into the other fields stays (ui.helpers.set_hp_fields)."""
    choice = (adapter_choice(), st.session_state.get("train_preset", "recipe"))
    before = st.session_state.get(PRESET_FOR)
    set_hp_fields(st.session_state, preset_values(*choice), preset_values(*before) if before else None)
    st.session_state[PRESET_FOR] = choice


def distill_config() -> DistillConfig:
    """The settings of the Distil form (its defaults until the user opens and changes it)."""
    get = st.session_state.get
    return DistillConfig(
        steps=int(get("dist_steps", DistillConfig.steps)),
        pseudo_queries=int(get("dist_pseudo", DistillConfig.pseudo_queries)),
        lr=float(get("dist_lr", DistillConfig.lr)),
        temperature=float(get("dist_temperature", DistillConfig.temperature)),
        seed=int(get("dist_seed", 0)),
    )


RECIPE_LABELS = {
    "auto": "Auto (recommended)",
    "adapter": "Adapter on the questions (seconds)",
    "distil": "Fine-tune, then distil (minutes)",
}


@st.cache_data(show_spinner=False, max_entries=64)
def _auto(
    root: str, train_id: str, eval_id: str | None, embedder: str, documents: tuple[str, ...], n_chunks: int
) -> tuple[str, str]:
    """core.runs.auto_recipe for saved datasets (the ingested ``documents`` and their chunk count key the
    cache: an ingest, a deletion or a re-chunk asks again)."""
    from core.datasets import load_dataset
    from core.runs import auto_recipe

    eval_ds = load_dataset(ws, eval_id) if eval_id else None
    return auto_recipe(ws, load_dataset(ws, train_id), eval_ds, embedder)


@st.cache_data(show_spinner=False, max_entries=64)
def _validation_elsewhere(
    root: str, train_id: str, val_id: str, embedder: str, documents: tuple[str, ...], n_chunks: int
) -> str | None:
    """core.runs.validation_elsewhere for saved datasets, worded for this page (the ingested documents key the
    cache, as for :func:`_auto`)."""
    from core.datasets import load_dataset
    from core.runs import validation_elsewhere

    return validation_elsewhere(ws, load_dataset(ws, train_id), load_dataset(ws, val_id), embedder, where="page")


@st.cache_data(show_spinner=False, max_entries=64)
def _ranked_count(root: str, train_id: str, eval_id: str | None, documents: tuple[str, ...], n_chunks: int) -> int:
    """Distinct chunks a distillation would rank (core.runs.distil_chunks; the ingested ``documents`` and
    their chunk count key the cache)."""
    from core.datasets import load_dataset
    from core.runs import distil_chunks

    eval_ds = load_dataset(ws, eval_id) if eval_id else None
    return len(dict.fromkeys(distil_chunks(ws, load_dataset(ws, train_id), eval_ds)))


@st.cache_data(show_spinner=False, max_entries=64)
def _unnamed_sets(
    root: str, train_id: str, embedder: str, datasets: tuple[str, ...], documents: tuple[str, ...], n_chunks: int
):
    """core.runs.unnamed_search_sets as ids (the saved datasets and the ingested documents key the cache)."""
    return [d["id"] for d in unnamed_search_sets(ws, train_id, embedder)]


@st.cache_data(show_spinner=False, max_entries=64)
def _long_share(root: str, dataset_id: str, embedder: str) -> float | None:
    """core.distill.long_chunk_share of a saved dataset's asked chunks for the base model ``embedder``."""
    from core.datasets import load_dataset
    from core.distill import asked_texts, long_chunk_share
    from core.embedders import resolve_embedder

    return long_chunk_share(asked_texts(load_dataset(ws, dataset_id)), resolve_embedder(embedder, workspace=ws))


@st.cache_data(show_spinner=False, max_entries=64)
def _stand_in(root: str, train_id: str, documents: tuple[str, ...], n_chunks: int, n_tried: int) -> tuple[int, int]:
    """(chunks that stand in for an evaluation set when none is named, every chunk): core.runs.search_stand_in
    (the ingested documents key the cache, as for :func:`_auto`, and the chunks generators have tried)."""
    from core.datasets import load_dataset
    from core.runs import search_stand_in

    stand_in, every = search_stand_in(ws, load_dataset(ws, train_id))
    return sum(map(len, stand_in.values())), every


def documents_key() -> tuple[tuple[str, ...], int]:
    """(the documents that ingested cleanly, their chunk count): the cache key of what Auto reads of them,
    read once per render (an ingest, a deletion or a re-chunk changes it)."""
    ids = tuple(r["id"] for r in ws.query("SELECT id FROM documents WHERE status='ok' ORDER BY id"))
    return ids, workspace_chunk_count(ws)


def page_recipe(
    choice: str, embedder: str, train_ds: str, eval_ds: str | None, docs: tuple[tuple[str, ...], int]
) -> tuple[str | None, str]:
    """(the recipe the form runs, why): ``auto`` by core.runs.auto_recipe (the documents you will search are
    known when an evaluation set of other text is named or ingested documents are not the questions' own);
    ``None`` for ``distil`` on an API base, which cannot be fine-tuned."""
    if choice == "adapter":
        return "adapter", ""
    auto, why = _auto(str(ws.root), train_ds, eval_ds, embedder, *docs)
    if choice == "auto":
        return auto, why
    if is_api_embedder(embedder):
        return None, why
    return "distil", "" if auto == "distil" else why


def finetune_config() -> FinetuneConfig:
    """The settings of the Full fine-tune form (its defaults until the user opens and changes it)."""
    get = st.session_state.get
    d = FinetuneConfig()  # an instance: a slots dataclass's class attributes are not its defaults
    return FinetuneConfig(
        epochs=int(get("ft_epochs", d.epochs)),
        batch_size=int(get("ft_batch_size", d.batch_size)),
        lr=float(get("ft_lr", d.lr)),
        loss=get("ft_loss", d.loss),
        seed=int(get("ft_seed", d.seed)),
        read_tokens=int(get("ft_read_tokens", d.read_tokens)),
    )


def read_length_choice(base: str) -> None:
    """The saved fine-tune's input length, when the base model reads less than its position table allows."""
    own, limit = read_lengths(base)
    if not (own and limit and limit > own):
        return
    long = workspace_chunk_count(ws, truncated_only=True)
    st.selectbox(
        "Input length of the saved model",
        [0, limit],
        key="ft_read_tokens",
        format_func=lambda n: (
            f"{own} tokens (the base model's)" if n == 0 else f"{n} tokens (reads more of each chunk)"
        ),
        help="Training runs at the base model's length either way. Using the fine-tune means re-embedding the "
        "corpus, so it can read more of each chunk then; re-embedding takes about twice as long.",
    )
    st.caption(
        (
            f"{long:,} ingested chunks here are longer than {own} tokens: the base model does not see their end. "
            if long
            else ""
        )
        + "Measured on the Lyft 10-K's chunks (median 484 tokens; bench/README, “Both lengths”): read at 512, the "
        "fine-tune gained +4.9 hit@5 on a new kind of text, against +2.0 at 256, and on new questions about its "
        "training chunks it gained on questions about their end and lost 4 points on questions about their start."
    )


def distil_recipe_form(
    train_ds: str, eval_ds: str | None, embedder: str, docs: tuple[tuple[str, ...], int], n_questions: int
) -> None:
    """The *Fine-tune, then distil* recipe: what it does and costs, a name, and one start button."""
    n_chunks = docs[1]
    ranked = ([f"the {n_chunks:,} ingested chunks"] if n_chunks else []) + ["the training set's chunks"]
    if eval_ds:
        ranked.append("the evaluation set's chunks (never its questions)")
    ft_cfg = finetune_config()
    n_ranked = _ranked_count(str(ws.root), train_ds, eval_ds, *docs)
    est = recipe_estimate(
        list_runs(ws), embedder, n_questions, n_ranked, epochs=ft_cfg.epochs, batch_size=ft_cfg.batch_size
    )
    ft_cost = f"{est['steps']:,} step{'s' * (est['steps'] != 1)} of {ft_cfg.batch_size} questions: " + (
        f"about {duration_text(est['finetune_seconds'])} here"
        if est["finetune_seconds"] is not None
        else "several seconds each on a CPU"
    )
    di_cost = f"{n_ranked:,} distinct chunks" + (
        f", about {duration_text(est['distil_seconds'])} here" if est["distil_seconds"] is not None else ""
    )
    st.markdown(
        "**Two runs, one after the other:**\n"
        f"1. a **full fine-tune** of the base model on the training questions ({ft_cost});\n"
        "2. its **distillation** into a linear adapter: on the base model's query vectors, it learns to rank "
        + (", ".join(ranked[:-1]) + " and " + ranked[-1] if len(ranked) > 1 else ranked[0])
        + f" as the fine-tune does ({di_cost}). Only the adapter is used: your index keeps the base model's vectors."
    )
    st.caption(
        "Settings: the **Full fine-tune** and **Distil** forms below (their defaults until you change them). A "
        "distilled adapter is fitted to the documents it ranks: ingest the documents you will search first. "
        + (
            f"Times at this machine's pace in {md_escape(est['basis'])}; the progress bar says the time left."
            if est["basis"]
            else "The progress bar says the time left once the first steps have run."
        )
    )
    name = st.text_input("Run name (optional)", key="train_name", placeholder="e.g. fine-tune, then distil")
    if st.button(
        "Start: fine-tune, then distil", key="train_start_distil", type="primary", icon=":material/play_arrow:"
    ):
        try:
            ft_id, _ = start_finetune_then_distil(
                jm,
                ws,
                train_ds,
                finetune_config(),
                distill_config(),
                embedder=embedder,
                embedder_options=widgets.embedder_options("train_embedder"),
                eval_dataset_id=eval_ds,
                name=(name or "").strip() or None,
            )
        except (ValueError, TypeError) as exc:  # FinetuneError is a ValueError
            st.error(f"Cannot start this recipe: {md_escape(exc)}")
        else:
            st.session_state["train_view"] = ft_id  # the run training now; its distillation follows
            st.rerun()


# ------------------------------------------------------------------------------------------------
# new run
# ------------------------------------------------------------------------------------------------
runs = list_runs(ws)
if not datasets:
    widgets.empty_state(
        "Generate questions first, then save a train / validation split: training needs a "
        "dataset of question/chunk pairs.",
        "questions",
        "Go to Questions",
    )
else:
    with st.expander("New training run", expanded=not any(r["status"] in ACTIVE for r in runs), icon=":material/add:"):
        if PRESET_FOR not in st.session_state:  # the first visit: fill the form once (never again from here:
            apply_defaults()  # writing a field's state over what the browser holds would drop a user's edit)
        ids = [d["id"] for d in datasets]
        labels = {d["id"]: dataset_label(d) for d in datasets}
        d1, d2 = st.columns(2)
        train_ds = d1.selectbox(
            "Training dataset", ids, index=pick_default(datasets, ("train",)), format_func=labels.get, key="train_ds"
        )
        vals = [None] + ids
        # the set Compare opens with (the newest evaluation set, else validation split): what the user will most
        # likely evaluate on; naming it picks the matching validation design (bench/README, "In-corpus questions
        # when nothing is named": on new chunks of the same documents, naming it gained about a point)
        named = next(
            (d["id"] for r in EVAL_ROLES for d in datasets if d.get("role") == r and d["id"] != train_ds), None
        )
        eval_ds = d2.selectbox(
            "You will evaluate on (optional)",
            vals,
            index=vals.index(named),
            key="train_eval_ds",
            format_func=lambda v, labels=labels: "Not named" if v is None else labels[v],
            help="Starts at the set Compare opens with (the newest evaluation set, else validation split). Only its "
            "chunks are read, never its questions. They tell Auto that these are the documents you "
            "will search (fine-tune, then distil ranks them), unless its questions are mostly about the training "
            "set's own chunks: new questions on the same documents, where the adapter trained on the questions "
            "gained more (Auto trains it); for the adapter recipe, they pick the validation "
            "design (new questions about the training chunks, or new documents) and, for new documents, whether "
            "they are the same kinds of text as the training chunks: then validation ranks held-out questions "
            "among the held-out chunks, as a new document is searched. Not named: the ingested chunks no training "
            "question asks about stand in for its chunks in that check, when they are at least a tenth of every chunk.",
        )
        n_offline, n_total, apart = _offline_share(str(ws.root), train_ds)
        if n_offline:
            st.warning(offline_training_caveat(n_offline, n_total), icon=":material/warning:")
        if apart:
            st.info(mixed_sources_note(*apart), icon=":material/call_split:")

        c1, c2 = st.columns(2)
        with c1:
            embedder = widgets.embedder_picker("train_embedder")
        st.session_state.setdefault("train_recipe", "auto")
        recipe = c2.radio(
            "Recipe",
            list(RECIPES),
            key="train_recipe",
            format_func=RECIPE_LABELS.get,
            help="Adapter: trained on the questions, over the cached vectors (seconds; any base model). Fine-tune, "
            "then distil: a full fine-tune of the base model on the questions, distilled into a linear adapter that "
            "ranks the documents you will search like the fine-tune (minutes; sentence-transformers bases). Auto "
            "picks by the measured rule in core.distill.choose_recipe.",
        )
        docs = documents_key()
        effective, why = page_recipe(recipe, embedder, train_ds, eval_ds, docs)
        if why:
            c2.caption(("Auto: " if recipe == "auto" else "") + md_escape(why) + ".")
        if recipe == "auto" and effective == "adapter" and not eval_ds and not is_api_embedder(embedder):
            # blind: saved sets about documents Auto cannot see may be the ones users will search
            unseen = _unnamed_sets(str(ws.root), train_ds, embedder, tuple(ids), *docs)
            if unseen:
                st.info(
                    md_escape(unnamed_search_sets_note([d["name"] for d in datasets if d["id"] in unseen])),
                    icon=":material/lightbulb:",
                )
        if effective == "distil":
            n_questions = next((int(d.get("n_queries") or 0) for d in datasets if d["id"] == train_ds), 0)
            distil_recipe_form(train_ds, eval_ds, embedder, docs, n_questions)
        elif effective == "adapter":
            # Default: cross-validate on the training questions. The saved validation split is what Compare
            # evaluates on; selecting the best epoch on it too would flatter the adapter.
            val_ds = c1.selectbox(  # beside the adapter's own settings, under the base embedder
                "Validation dataset (model selection)",
                vals,
                index=0,
                key="train_val_ds",
                format_func=lambda v, labels=labels: (
                    "Cross-validate on the training questions" if v is None else labels[v]
                ),
                help="Default: k-fold cross-validation on every training question chooses the epochs, then "
                "the adapter is refit on all of them. A dataset chosen here replaces that with a single "
                "hold-out (best epoch kept). Never use your final evaluation set here.",
            )
            if val_ds is None and not eval_ds:  # what the validation reads with nothing named
                tried = ws.query("SELECT COUNT(*) AS n FROM generation_done")[0]["n"]
                n, every = _stand_in(str(ws.root), train_ds, *docs, tried)
                c1.caption(
                    f"Nothing named: the {n:,} chunks no training question asks about ({n / max(every, 1):.0%} of "
                    f"{every:,}) stand in for the documents you will search, to tell whether they are the same kinds "
                    "of text as the training chunks (then held-out questions are ranked among the held-out chunks)."
                    if n
                    else BLIND_NOTE[0].upper() + BLIND_NOTE[1:] + ". Name the set you will evaluate on if you know it, "
                    "or, if real queries will ask about these same chunks, set Validation design (under "
                    "Hyperparameters) to “New questions, same chunks”."
                )
            if val_ds is not None and val_ds == train_ds:
                c1.warning("The validation set is the training set: the best epoch will look better than it is.")
            elif val_ds is not None and recipe == "auto" and not eval_ds:  # LlamaIndex's guide validates so
                elsewhere = _validation_elsewhere(str(ws.root), train_ds, val_ds, embedder, *docs)
                if elsewhere:
                    c1.info(md_escape(elsewhere[0].upper() + elsewhere[1:]) + ".", icon=":material/lightbulb:")
            # an evaluation set of other documents: the question-trained adapter may not carry over (bench/README)
            if (
                eval_ds
                and _design(str(ws.root), train_ds, eval_ds) == "chunks"
                and not is_api_embedder(state.base_embedder())
                and (_long_share(str(ws.root), eval_ds, state.base_embedder()) or 0) >= LONG_CHUNKS_SHARE
            ):
                st.info(
                    "**New documents:** an adapter trained on these questions may gain little on documents it has not "
                    "seen. On the measured new-document protocols (bench/README, “Distilling the fine-tune”) it gained "
                    "under 1 point of hit@5 on another company's filing and on a new kind of text, where a full "
                    "fine-tune distilled into an adapter gained about 3, on chunks longer than the base model reads "
                    "(as most of this set's are); on a third it was the other way round. For "
                    "the larger gain, choose the recipe **Fine-tune, then distil** above (minutes on a CPU), and "
                    "compare both on your evaluation set.",
                    icon=":material/lightbulb:",
                )
            with c2:
                names = list(registered_adapters()) + [CUSTOM]
                st.selectbox(
                    "Adapter",
                    names,
                    key="train_adapter",
                    on_change=apply_defaults,
                    format_func=lambda a: ADAPTER_LABELS.get(
                        a, "Your own class (import path)" if a == CUSTOM else f"{a} (registered)"
                    ),
                    help="Linear and two-layer save in LlamaIndex's format and load in AdapterEmbeddingModel.",
                )
                allow_custom = False
                if st.session_state.get("train_adapter") == CUSTOM:
                    st.text_input(
                        "Import path of an nn.Module with forward(embed) and get_config_dict()",
                        key="train_adapter_path",
                        placeholder="mypkg.adapters:MyAdapter",
                        on_change=apply_defaults,
                    )
                    st.warning(widgets.CUSTOM_CODE_WARNING, icon=":material/warning:")
                    allow_custom = st.checkbox(
                        "Allow custom code: import this module when the run starts", key="train_allow_custom"
                    )
                if st.session_state.get("train_adapter", "linear") != "linear":
                    st.info(
                        "Linear is recommended: on the measured protocols (bench/README.md) the two-layer adapter "
                        "was worse than linear on new documents and on a chunk split, where its extra capacity "
                        "memorises the training chunks, and only slightly ahead on new questions about the "
                        "training chunks; the low-rank adapter (fewer weights) was worse than linear on all three.",
                        icon=":material/recommend:",
                    )
                # a default via session state, not value=: app.py re-assigns "train_" keys to keep them across
                # pages (ui.state.persist_widget_state), and Streamlit warns when a widget has both
                st.session_state.setdefault("train_adapter_kwargs", "{}")
                st.text_input(
                    "Adapter options (JSON)",
                    key="train_adapter_kwargs",
                    help='Constructor overrides, e.g. {"hidden_features": 512} (two-layer), {"bias": true} '
                    '(linear), {"rank": 16} (low-rank).',
                )
                st.radio(
                    "Starting point",
                    ["recipe", "llamaindex"],
                    key="train_preset",
                    on_change=apply_defaults,
                    horizontal=True,
                    format_func={"recipe": "AdapterLab recipe", "llamaindex": "LlamaIndex defaults"}.get,
                    help="LlamaIndex's engine settings (lr 2e-5, batch 10, in-batch loss) barely move the weights; "
                    "the recipe uses a softmax over the whole corpus and a higher learning rate.",
                )

            st.markdown("**Hyperparameters**")
            h = st.columns(4)
            h[0].number_input("Epochs", 1, 500, key=hk("epochs"), help=HELP["epochs"])
            h[1].number_input("Batch size", 1, 4096, key=hk("batch_size"), help=HELP["batch_size"])
            h[2].number_input(
                "Learning rate", min_value=1e-7, max_value=1.0, format="%.1e", step=1e-5, key=hk("lr"), help=HELP["lr"]
            )
            h[3].selectbox("Loss", [str(x) for x in Loss], key=hk("loss"), help=HELP["loss"])
            h[0].selectbox("Optimizer", list(OPTIMIZER_NAMES), key=hk("optimizer"), help=HELP["optimizer"])
            h[1].number_input(
                "Weight decay", 0.0, 1.0, step=0.01, format="%.3f", key=hk("weight_decay"), help=HELP["weight_decay"]
            )
            h[2].number_input("Warm-up ratio", 0.0, 0.99, step=0.05, key=hk("warmup_ratio"), help=HELP["warmup_ratio"])
            h[3].number_input(
                "Temperature", 0.001, 10.0, step=0.01, format="%.3f", key=hk("temperature"), help=HELP["temperature"]
            )
            h[0].selectbox(
                "Model selection",
                list(SELECTIONS),
                key=hk("selection"),
                help=HELP["selection"],
                format_func={
                    "cv": "Cross-validation",  # the default: its help says why (a quarter-width column)
                    "holdout": "One hold-out split",
                    "none": "None: train all epochs",
                }.get,
            )
            h[1].number_input("Folds", 2, 20, key=hk("cv_folds"), help=HELP["cv_folds"])
            h[2].selectbox(
                "Validation design",
                ["auto", "questions", "chunks"],
                key=hk("cv_design"),
                help=HELP["cv_design"],
                format_func={
                    "auto": "Auto",  # from the evaluation set: the help says so
                    "questions": "New questions, same chunks",
                    "chunks": "New documents",
                }.get,
            )
            h[3].selectbox(
                "New-document validation",
                list(VALIDATIONS),
                key=hk("cv_validation"),
                help=HELP["cv_validation"],
                format_func={
                    "auto": "Auto",
                    "fold": "Among the held-out chunks",
                    "corpus": "Among every chunk (stricter)",
                }.get,
            )
            h[0].number_input("Pseudo-queries per chunk", 0, 16, key=hk("pseudo_queries"), help=HELP["pseudo_queries"])
            h[1].selectbox(
                "Select best epoch by", ["mrr", "hit", "ndcg"], key=hk("select_metric"), help=HELP["select_metric"]
            )
            h[2].number_input("Validation k", 1, 100, key=hk("top_k"), help=HELP["top_k"])
            h[3].number_input(
                "Checkpoint every N steps", 0, 1_000_000, key=hk("checkpoint_every"), help=HELP["checkpoint_every"]
            )
            h[0].number_input("Early-stop patience (epochs)", 0, 500, key=hk("patience"), help=HELP["patience"])
            h[1].number_input("Seed", 0, 2**31 - 1, key=hk("seed"), help=HELP["seed"])
            h[2].selectbox("Device", ["auto", "cpu", "cuda", "mps"], key=hk("device"), help=HELP["device"])
            h[3].checkbox("Keep the best epoch", key=hk("keep_best"), help=HELP["keep_best"])
            h[0].number_input(
                "Hold-out fraction",
                0.0,
                0.89,
                step=0.05,
                key=hk("val_fraction"),
                help=HELP["val_fraction"] + " (Ignored when a validation dataset is chosen.)",
            )

            name = st.text_input("Run name (optional)", key="train_name", placeholder="e.g. linear, lr 1e-4")
            if st.button("Start training", key="train_start", type="primary", icon=":material/play_arrow:"):
                try:
                    kwargs = json.loads(st.session_state.get("train_adapter_kwargs") or "{}")
                    if not isinstance(kwargs, dict):
                        raise ValueError('adapter options must be a JSON object, e.g. {"hidden_features": 512}')
                    values = {f: st.session_state[hk(f)] for f in HP_FIELDS}
                    config = TrainConfig(adapter=adapter_choice(), adapter_kwargs=kwargs, **values)
                    _, run_id = start_training(
                        jm,
                        ws,
                        config,
                        dataset_id=train_ds,
                        val_dataset_id=val_ds,
                        eval_dataset_id=eval_ds,
                        embedder=embedder,
                        name=(name or "").strip() or None,
                        api_key=state.session_api_key(),
                        allow_custom_code=allow_custom,
                        embedder_options=widgets.embedder_options("train_embedder"),
                    )
                except (ValueError, TypeError) as exc:  # TrainingError and bad JSON are ValueErrors
                    st.error(f"Cannot start this run: {md_escape(exc)}")
                else:
                    st.session_state["train_view"] = run_id
                    st.rerun()
        else:
            st.warning(f"Fine-tune, then distil cannot run here: {md_escape(why)}.", icon=":material/block:")


if datasets:
    with st.expander("Full fine-tune (the expensive reference)", icon=":material/model_training:"):
        n_chunks = workspace_chunk_count(ws)
        st.markdown(
            "Trains **every weight** of the base model with sentence-transformers' own trainer "
            "(MultipleNegativesRankingLoss, no two questions of one chunk in a batch). It shows what training the "
            "whole model gives beside the adapters, and it is not cheap:"
        )
        st.markdown(
            "- training runs the whole model on every batch: **minutes** on a CPU, not the adapter's seconds;\n"
            "- the fine-tuned model changes chunk vectors too, so using it means **re-embedding the whole corpus** "
            + (f"({n_chunks:,} chunks in this workspace) " if n_chunks else "")
            + "and rebuilding any vector index. An adapter changes queries only: the index stays as it is;\n"
            "- it is a reference, not a ceiling. Measured on the shared Lyft questions (bench/README): on another "
            "company's filing it gained +4.3 hit@5 where the adapter trained on the questions gained about 0; on new "
            "questions about its own training chunks it gained +0.6, the adapter +4.0."
        )
        ft_base = state.base_embedder()
        if ft_base.startswith("openai:"):
            st.warning(
                f"The base embedder is `{ft_base}`, an API: its weights are not here to fine-tune. Choose a "
                "sentence-transformers base in **New training run** above (adapters work on API embedders)."
            )
        else:
            st.caption(f"Base model: `{ft_base}` (the base embedder chosen above).")
            ids = [d["id"] for d in datasets]
            labels = {d["id"]: dataset_label(d) for d in datasets}
            ft_ds = st.selectbox(
                "Training dataset", ids, index=pick_default(datasets, ("train",)), format_func=labels.get, key="ft_ds"
            )
            f = st.columns(5)
            f[0].number_input("Epochs", 1, 100, value=1, key="ft_epochs")
            f[1].number_input(
                "Batch size",
                2,
                4096,
                value=32,
                key="ft_batch_size",
                help="Questions per step; the batch's other chunks are the negatives.",
            )
            f[2].number_input(
                "Learning rate", min_value=1e-7, max_value=1e-2, value=2e-5, format="%.1e", step=1e-5, key="ft_lr"
            )
            f[3].selectbox(
                "Loss",
                list(FT_LOSSES),
                key="ft_loss",
                format_func={"mnrl": "MultipleNegativesRanking", "cached_mnrl": "Cached MNRL (big batches)"}.get,
            )
            f[4].number_input("Seed", 0, 2**31 - 1, value=0, key="ft_seed")
            read_length_choice(ft_base)
            ft_name = st.text_input("Run name (optional)", key="ft_name", placeholder="e.g. full fine-tune, 1 epoch")
            then_distil = st.checkbox(
                "Then distil it into a linear adapter (its gain on the base model's vectors: no re-embedding)",
                value=True,
                key="ft_then_distil",
                help="Queues a distillation run after the fine-tune, with the settings of "
                "**Distil a fine-tune** below; it appears in Compare as an adapter.",
            )
            reembed = f"{n_chunks:,} chunks" if n_chunks else "the whole corpus"
            if st.button(
                f"Start full fine-tune (using it re-embeds {reembed})", key="ft_start", icon=":material/play_arrow:"
            ):
                try:
                    cfg = finetune_config()
                    dcfg = distill_config() if then_distil else None
                    if dcfg is not None:
                        dcfg.validate()  # before anything is queued: a bad distil setting starts nothing
                    _, run_id = start_finetune(
                        jm, ws, ft_ds, cfg, embedder=ft_base, name=(ft_name or "").strip() or None
                    )
                    if dcfg is not None:  # ranking the evaluation set named above too (its chunks only)
                        start_distill(jm, ws, run_id, dcfg, eval_dataset_id=st.session_state.get("train_eval_ds"))
                except (ValueError, TypeError) as exc:  # FinetuneError is a ValueError
                    st.error(f"Cannot start this fine-tune: {exc}")
                else:
                    st.session_state["train_view"] = run_id
                    st.rerun()

    with st.expander("Distil a fine-tune into an adapter (your index stays as it is)", icon=":material/compress:"):
        st.markdown(
            "Trains a **linear adapter** on the base model's query vectors to rank every ingested chunk the way a "
            "full fine-tune does (KL divergence to its softmax). The queries are the fine-tune's training "
            "questions plus offline pseudo-queries from each ingested chunk, new documents included, and the "
            "evaluation set named in **New training run** has its chunks ranked too; no evaluation question is "
            "used. The index keeps the base model's vectors: only queries pass through the adapter. Once the fine-tune exists, it embeds the chunks and queries with it once (as using the "
            "fine-tune would; cached), then trains in seconds."
        )
        st.caption(
            "Measured (bench/README, “Distilling the fine-tune”): on another company's filing and on a new kind "
            "of text, cut into chunks longer than the base model reads, where the adapter trained on the questions "
            "gained little, the distilled one kept most of the fine-tune's gain, when that filing was among the "
            "chunks it ranked; distilled over the training filing only, it lost on the other. On chunks the base "
            "model reads whole, neither gained (“Chunks the base model reads whole”). Check it on your own "
            "evaluation set in Compare."
        )
        teachers = [
            r for r in runs if r.get("kind") == "finetune" and (r["status"] in ACTIVE or has_model(ws, r["id"]))
        ]
        dcols = st.columns(5)
        dcols[0].number_input("Steps", 1, 10_000, value=DistillConfig.steps, key="dist_steps")
        dcols[1].number_input(
            "Pseudo-queries per chunk",
            0,
            16,
            value=DistillConfig.pseudo_queries,
            key="dist_pseudo",
            help="Offline queries made from each ingested chunk's own text, so every document shapes the map.",
        )
        dcols[2].number_input(
            "Learning rate", min_value=1e-6, max_value=1.0, value=DistillConfig.lr, format="%.1e", key="dist_lr"
        )
        dcols[3].number_input(
            "Temperature",
            0.001,
            10.0,
            value=DistillConfig.temperature,
            step=0.01,
            format="%.3f",
            key="dist_temperature",
            help="Of both softmaxes over the chunks: lower matches the fine-tune's top ranks more closely.",
        )
        dcols[4].number_input("Seed", 0, 2**31 - 1, value=0, key="dist_seed")
        if not teachers:
            st.caption("No full fine-tune yet: start one above (with “Then distil it” ticked, this runs after it).")
        else:
            tlabels = {r["id"]: f"{r['name']} ({r['status']})" for r in teachers}
            teacher = st.selectbox("Fine-tune to distil", list(tlabels), format_func=tlabels.get, key="dist_teacher")
            if st.button("Start distillation", key="dist_start", icon=":material/play_arrow:"):
                try:
                    _, run_id = start_distill(
                        jm, ws, teacher, distill_config(), eval_dataset_id=st.session_state.get("train_eval_ds")
                    )
                except (ValueError, TypeError) as exc:
                    st.error(f"Cannot start this distillation: {md_escape(exc)}")
                else:
                    st.session_state["train_view"] = run_id
                    st.rerun()


# ------------------------------------------------------------------------------------------------
# one run: live while it trains
# ------------------------------------------------------------------------------------------------
# While a run trains, its numbers refresh every LIVE_S and its chart every LIVE_CHART_S, from at
# most LIVE_STEP_POINTS loss points: every redraw costs the server and the browser CPU that the
# training process (on the same machine) would otherwise get (bench/ui_latency.py measures it).
LIVE_S = 2.0
LIVE_CHART_S = 4.0
LIVE_STEP_POINTS = 600


def draw_run(run: dict, hist: list[dict]) -> None:
    """A run's title, cancel button and progress while active, its numbers and the CV verdict."""
    run_id = run["id"]
    cfg = (run.get("config") or {}).get("config") or {}
    k = int(cfg.get("top_k", 5))
    s = history_summary(hist)
    job = job_for_run(jm, run_id)
    active = run["status"] in ACTIVE

    finetune = run.get("kind") == "finetune"
    distill = run.get("kind") == "distill"
    what = "full fine-tune of" if finetune else ("linear adapter, distilled, on" if distill else None)
    top, btn = st.columns([5, 1], vertical_alignment="center")
    top.markdown(
        f"**{md_escape(run['name'])}** · `{run['status']}` · "
        f"{what or md_escape(cfg.get('adapter')) + ' on'} "
        f"{md_escape((run.get('config') or {}).get('embedder'))}"
    )
    if active:
        if job and jm.is_local(job["id"]):
            if btn.button(
                "Cancel",
                key=f"train_cancel_{run_id}",
                icon=":material/stop_circle:",
                help="Stops after the current step; the best state so far is saved.",
            ):
                jm.cancel(job["id"])
                st.toast("Cancelling: the best state so far will be saved.")
        elif btn.button(
            "Cancel",
            key=f"train_cancel_{run_id}",
            icon=":material/stop_circle:",
            help="This run trains in another process (started before a server restart, or by the CLI): "
            "it stops after the current step; the best state so far is saved.",
        ):
            request_cancel(ws, run_id)
            st.toast("Cancelling: the best state so far will be saved.")
        pct = float((job or {}).get("progress") or 0.0)
        msg = (
            (job or {}).get("message")
            or s["phase"]
            or ("waiting for the run before it" if run["status"] == "queued" else "starting…")
        )
        st.progress(min(max(pct, 0.0), 1.0), text=f"{pct:.0%} · {md_escape(msg)}")

    base, best = s["base_val"], s["best_val"]
    mk = f"mrr@{k}"
    cv = next((h for h in reversed(hist) if h.get("type") == "selection"), None)
    m = st.columns(4)
    if distill:  # steps toward the fine-tune's ranking: no epochs, no validation
        res = run.get("result") or {}
        steps = [h for h in hist if h.get("type") == "step"]
        m[0].metric("Steps done", f"{len(steps)} / {cfg.get('steps', '?')}")
        m[1].metric(
            "KL to the fine-tune",
            "–" if not steps else f"{steps[-1]['loss']:.3g}",
            help="How far the adapter's ranking of the chunks is from the fine-tune's (0: the same); "
            "it starts at the base model's distance.",
            delta=None if len(steps) < 2 else f"{steps[-1]['loss'] - steps[0]['loss']:+.4f} since step 1",
            delta_color="inverse",
        )
        m[2].metric(
            "Queries",
            "–" if "n_questions" not in res else f"{res['n_questions'] + res['n_pseudo_queries']:,}",
            help="The fine-tune's training questions plus offline pseudo-queries from the ingested chunks.",
        )
        reads = [n for n in res.get("teacher_reads") or [] if n]
        m[3].metric(
            "Chunks ranked",
            "–" if "n_chunks" not in res else f"{res['n_chunks']:,}",
            help=None
            if not reads
            else "The fine-tune read each chunk and query at "
            + (f"{reads[0]} and {reads[1]} tokens, its scores averaged" if len(reads) == 2 else f"{reads[0]} tokens")
            + " (bench/README, “Both lengths”)"
            + (f": {res['teacher_blend_reason']}." if res.get("teacher_blend_reason") else "."),
        )
        return
    # a cross-validated refit runs the chosen epochs, not the configured maximum
    planned = cv["epochs"] if cv is not None and cv["train"] else cfg.get("epochs", "?")
    request = run.get("config") or {}
    cross_validates = cfg.get("selection", "cv") == "cv" and not (
        request.get("val_dataset_id") or request.get("val_dataset_path")
    )  # a validation set given makes it a hold-out
    if cv is None and not finetune and (cross_validates or any(h.get("type") == "cv" for h in hist)):
        # the folds come first, and they choose the refit's epochs: "0 / 12" would promise the configured maximum
        m[0].metric(
            "Epochs done",
            "cross-validating" if active else f"{s['epochs_done']}",
            help=f"Cross-validation chooses how many epochs the refit on every question trains (up to "
            f"{cfg.get('epochs', '?')}; twice that when it validates on new questions about the same chunks); "
            "the count starts after it.",
        )
    else:
        m[0].metric("Epochs done", f"{s['epochs_done']} / {planned}")
    m[1].metric("Last step loss", "–" if s["last_loss"] is None else f"{s['last_loss']:.4f}")
    if finetune:  # no validation curve: its price instead
        cost = (run.get("result") or {}).get("cost") or next((h for h in hist if h.get("type") == "cost"), {})
        n = cost.get("chunks_to_reembed", workspace_chunk_count(ws))
        m[2].metric(
            "Chunks to re-embed to use it",
            f"{n:,}" if n else "all",
            help="A fine-tuned model changes chunk "
            "vectors too: the whole corpus is embedded again, and any vector index rebuilt.",
        )
        m[3].metric("Training time", "–" if cost.get("train_seconds") is None else duration_text(cost["train_seconds"]))
    elif cv is not None and not base:  # cross-validated: no hold-out curve, the out-of-fold estimate instead
        ds_id = (run.get("config") or {}).get("dataset_id")
        n_off, n_all, _ = _offline_share(str(ws.root), ds_id) if ds_id else (0, 0, None)
        pseudo = n_all and n_off * 2 > n_all  # the estimate is then on held-out pseudo-queries, not real questions
        m[2].metric(
            "Gain on offline questions (CV)" if pseudo else "Cross-validated gain",
            f"{100 * cv['gain']:+.2f} pt",
            help=f"Out of fold, in points of (hit@{k} + MRR@{k})/2 over the untrained identity, "
            f"± {100 * cv['gain_se']:.2f} (standard error across folds). It is the best of the candidates (epochs, "
            "α) these folds compared, so a little optimistic: Compare measures the adapter on your evaluation set."
            + (
                f" {n_off:,} of the {n_all:,} training questions are offline pseudo-queries, so this is a gain on "
                "pseudo-queries: real questions have gained much less (the warning in the form above)."
                if pseudo
                else ""
            ),
        )
        if pseudo:
            st.caption(
                f"This gain is on held-out offline pseudo-queries ({n_off:,} of the {n_all:,} training questions are "
                "offline): real questions have gained much less. Compare on an evaluation set of real questions shows "
                "what it does for them."
            )
        m[3].metric(  # a short value: a quarter of the page is narrow
            "Chosen epoch · α",
            f"{cv['epochs']} · {cv.get('alpha', 1.0):g}"  # α 1 too: the label promises both
            if cv["train"]
            else "identity",
            help="The epochs (and shrinkage toward the identity, α) the cross-validation chose for the refit "
            "on every question; 'identity' = training did not help out of fold, the base model is kept.",
        )
    else:
        m[2].metric(f"Val {metric_label(mk)} (base)", "–" if mk not in base else f"{base[mk]:.3f}")
        m[3].metric(
            f"Val {metric_label(mk)} (best epoch {s['best_epoch'] if s['best_epoch'] is not None else '–'})",
            "–" if mk not in best else f"{best[mk]:.3f}",
            delta=None if (mk not in best or mk not in base) else f"{best[mk] - base[mk]:+.3f}",
            delta_color="normal" if mk in best and mk in base and abs(best[mk] - base[mk]) >= 5e-4 else "off",
        )
    if cv:
        (st.success if cv["train"] else st.info)(
            f"**Cross-validation ({cv['folds']} folds, {'new questions, same chunks' if cv['design'] == 'questions' else 'new documents'}"
            f"{', contiguous blocks in document order' if cv['design'] == 'chunks' and cv.get('fold_order') == 'blocks' else ''})**"
            + (f" in {cv['seconds']:.1f} s" if cv.get("seconds") else "")
            + (f" ({cv['side_by_side']} folds at a time)" if cv.get("side_by_side", 1) > 1 else "")
            + ": "
            f"estimated gain {100 * cv['gain']:+.2f} ± {100 * cv['gain_se']:.2f} points of (hit@{k} + MRR@{k})/2 → "
            + (
                f"refit on every question for {cv['epochs']} epoch(s) at lr {cv['lr']:g}"
                + (
                    f", then shrunk toward the identity (alpha {cv['alpha']:g})."
                    if cv.get("alpha", 1.0) != 1.0
                    else "."
                )
                if cv["train"]
                else "training did not help out of fold, so the saved adapter is the untrained identity (same as the base model)."
            )
            + f" Rule: {cv['rule']}. Design: {cv['design_reason']}."
            + (
                f" Validation: {cv['validation_reason']}."
                if cv["design"] == "chunks" and cv.get("validation_reason")
                else ""
            )
        )
    negatives = (run.get("result") or {}).get("negatives") or ""
    if SEPARATE_SOURCES_NOTE in negatives:
        st.caption(f"Negatives: {md_escape(negatives)}.")


def draw_charts(run: dict, hist: list[dict], max_points: int = MAX_STEP_POINTS) -> None:
    """The cross-validation chart (when the run cross-validated) and the training curves."""
    run_id = run["id"]
    k = int(((run.get("config") or {}).get("config") or {}).get("top_k", 5))
    active = run["status"] in ACTIVE
    if any(h.get("type") == "cv" for h in hist):
        st.plotly_chart(cv_figure(hist, k), key=f"cv_chart_{run_id}", width="stretch")
    if has_curves(hist):
        st.plotly_chart(training_figure(hist, k, max_points=max_points), key=f"train_chart_{run_id}", width="stretch")
    elif active:
        st.caption("The chart appears after the first training step (embedding comes first; cached texts are free).")
    else:
        st.caption("This run recorded no training step.")


def draw_finetune_files(run: dict) -> None:
    """A full fine-tune's price and its model folder (no adapter, no checkpoints)."""
    run_id = run["id"]
    cost = (run.get("result") or {}).get("cost")
    st.info(
        describe_cost(cost) + " Compare it with the adapters on the Compare page, where it is labelled "
        f"“{cost_label(cost)}”."
    )
    batches = (run.get("result") or {}).get("batches_note")
    if batches:
        st.caption(f"Batches: {md_escape(batches)}.")
    if has_model(ws, run_id):
        st.download_button(
            "Fine-tuned model (sentence-transformers folder, zip)",
            on_click="ignore",
            data=lambda: zip_folder(model_dir(ws, run_id), "model"),
            file_name=f"{run_id}-model.zip",
            mime="application/zip",
            key=f"ft_download_{run_id}",
            icon=":material/download:",
        )
        st.caption(f"Loads with `SentenceTransformer(path)`; on this machine: `{model_dir(ws, run_id)}`.")
    else:
        st.caption("No fine-tuned model was saved for this run.")


def draw_st_export(run: dict) -> None:
    """The sentence-transformers export (core.export): a model folder, or for an API base the adapter and a card."""
    run_id = run["id"]
    why = run_export_support(ws, run_id)
    if why:
        st.caption(f"No sentence-transformers export: {md_escape(why)}. {EXPORTABLE_TEXT}")
        return
    api = is_api_embedder((run.get("config") or {}).get("embedder"))
    st.download_button(
        "Adapter with model card (zip)" if api else "Sentence-transformers model (zip)",
        data=lambda: export_zip(ws, run_id),
        file_name=f"{run_id}-sentence-transformers.zip",
        mime="application/zip",
        on_click="ignore",
        key=f"st_download_{run_id}",
        icon=":material/download:",
    )
    st.caption(
        "An API base model has no sentence-transformers form: the adapter alone, with a loader snippet in "
        "its README.md."
        if api
        else "`SentenceTransformer(path).encode_query(...)` = base model + adapter; `encode_document(...)` = the "
        "base model's vectors (no re-indexing). Stock modules only; model card in README.md."
    )


def draw_finished(run: dict) -> None:
    run_id = run["id"]
    if run["status"] == "failed":
        st.error(f"This run failed: {md_escape(run.get('error') or 'unknown error')}")
    elif run["status"] == "interrupted":
        last = (run.get("result") or {}).get("last_checkpoint")
        st.warning(
            f"This run was interrupted ({md_escape(run.get('error') or 'the server stopped')}). "
            + (f"Last checkpoint: {md_escape(last)}." if last else "No checkpoint was saved.")
        )
    elif run["status"] == "cancelled":  # the reason, where one was recorded: a CLI run's signal, a queued run's cancel
        why = run.get("error")
        st.warning(
            f"This run was cancelled ({md_escape(why)})."
            if why
            else "This run was cancelled: the best state reached before the stop was saved."
        )
    res = run.get("result") or {}
    if run.get("kind") == "finetune":
        draw_finetune_files(run)
        return
    if run.get("kind") == "distill" and run["status"] in ("done", "cancelled"):
        st.info(
            f"Distilled from the full fine-tune **{md_escape(res.get('teacher') or '?')}**: a linear adapter on the "
            f"base model's query vectors, trained on {res.get('n_questions', 0):,} questions and "
            f"{res.get('n_pseudo_queries', 0):,} pseudo-queries to rank {res.get('n_chunks', 0):,} chunks"
            + (
                f" (a seeded sample of the {res['n_chunks_distinct']:,})"
                if (res.get("n_chunks_distinct") or 0) > (res.get("n_chunks") or 0)
                else ""
            )
            + " as the fine-tune does"
            + (
                f" (the {res['n_eval_chunks']:,} of the evaluation set named with it among them; never its questions)"
                if res.get("n_eval_chunks")
                else ""
            )
            + ". The index keeps the base model's vectors. It is fitted to the documents it ranked: Compare it with "
            "the fine-tune and the base model on your evaluation set (it warns when that set's documents were not "
            "among them)."
        )
        if "searched" in res and not res["searched"]:
            st.warning(blind_distillation_note(), icon=":material/warning:")
    if res.get("best_epoch") == 0 and run["status"] == "done":
        st.info(
            "Validation never beat the untrained identity: the saved adapter is the identity (same results "
            "as the base model). Try a higher learning rate, more questions, or fewer epochs."
        )
    ckpts = run_checkpoints(ws, run_id)
    folder = adapter_dir(ws, run_id)
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Checkpoints**")
        if ckpts:
            st.dataframe(
                [{"checkpoint": p.name, "step": int(p.name[5:])} for p in ckpts],
                hide_index=True,
                width="stretch",
                key=f"ckpt_table_{run_id}",
                height=min(38 + 35 * len(ckpts), 250),
            )
        else:
            st.caption("No checkpoint saved.")
    with c2:
        st.markdown("**Download**")
        if has_adapter(ws, run_id):
            st.download_button(
                "Adapter folder (LlamaIndex format, zip)",
                data=lambda: zip_folder(folder, "adapter"),
                file_name=f"{run_id}-adapter.zip",
                mime="application/zip",
                on_click="ignore",
                key=f"train_download_{run_id}",
                icon=":material/download:",
                type="primary",
            )
            kind = str(read_adapter_meta(folder).get("adapter_cls"))  # LlamaIndex ships linear and two-layer classes
            li_class = {"linear": "LinearLayer", "two-layer": "TwoLayerNN"}.get(kind)
            st.caption(
                "`config.json` + `pytorch_model.bin` (+ `checkpoints/`): loads in LlamaIndex's "
                f"`AdapterEmbeddingModel(base, path, {li_class})` or with `core.adapters.load_adapter`."
                if li_class
                else "`config.json` + `pytorch_model.bin` (+ `checkpoints/`): LlamaIndex has no class for this "
                "adapter; load it with `core.adapters.load_adapter`."
            )
            draw_st_export(run)
        else:
            st.caption("No final adapter was saved for this run" + (": its checkpoints are below." if ckpts else "."))
        if ckpts:
            names = {p.name: p for p in ckpts}
            pick = st.selectbox("Checkpoint", list(names), index=len(names) - 1, key=f"ckpt_pick_{run_id}")
            st.download_button(
                f"Checkpoint {pick} (zip)",
                data=lambda p=names[pick]: zip_folder(p, pick),
                file_name=f"{run_id}-{pick}.zip",
                mime="application/zip",
                on_click="ignore",
                key=f"ckpt_download_{run_id}",
            )


if not runs:
    if datasets:
        widgets.empty_state("No training run yet: choose a dataset and a recipe, and press **Start** above.")
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

        @st.fragment(run_every=LIVE_S)
        def live() -> None:
            jm.reap()  # a run whose process died ends as 'interrupted' instead of polling forever
            current = get_run(ws, view)
            if current is None or current["status"] != run["status"]:
                # finished: redraw once with the results and stop polling; queued -> running: once, so the
                # run history below (drawn outside this fragment) does not keep saying "queued"
                st.rerun(scope="app")
            draw_run(current, read_history(ws, view))  # only the lines appended since the last poll are parsed

        @st.fragment(run_every=LIVE_CHART_S)
        def live_chart() -> None:
            draw_charts(run, read_history(ws, view), max_points=LIVE_STEP_POINTS)

        live()
        live_chart()
    else:
        hist = read_history(ws, view)
        draw_run(run, hist)
        # A finished run's charts are built only while this is open (on_change="rerun" makes .open
        # tell): a page load that never opens it neither builds them nor fetches the chart library.
        curves = st.expander(
            "Training curves", icon=":material/show_chart:", key="train_curves_open", on_change="rerun"
        )
        if curves.open:
            with curves:
                draw_charts(run, hist)
        draw_finished(run)

st.markdown("**Run history**")
st.dataframe(
    run_rows(runs),
    hide_index=True,
    width="stretch",
    key="run_table",
    placeholder="–",  # a cross-validated run has no hold-out metrics, a hold-out run no CV gain
    column_config={
        "id": None,
        "epochs (set)": st.column_config.NumberColumn(
            help="The epochs setting; with cross-validation the most it may choose (twice that on the questions "
            "design)."
        ),
        "epoch kept": st.column_config.NumberColumn(
            help="The epoch the run kept: the best on the hold-out, or the epochs cross-validation chose for the "
            "refit (0: the untrained identity)."
        ),
    },
)
h1, h2 = st.columns([1, 3])
with h1.popover("Delete a run", icon=":material/delete:"):
    gone = st.selectbox("Run", list(run_labels), format_func=run_labels.get, key="run_delete_pick")
    disabled = next(r for r in runs if r["id"] == gone)["status"] in ACTIVE
    if st.button("Delete", key="run_delete", disabled=disabled, help="Running runs cannot be deleted: cancel first."):
        delete_run(ws, gone)
        widgets.flash(f"Deleted {md_escape(run_labels[gone])}.")
        st.rerun()
if any(r["status"] in ("done", "cancelled", "interrupted") for r in runs):
    widgets.next_step("Compare the base embedder with your adapters and checkpoints on held-out questions.", "compare")
