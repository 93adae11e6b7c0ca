"""Export a training run so that other tools can use the tuned embedder.

Two formats:

* ``sentence-transformers``: a model folder that ``SentenceTransformer(path)`` loads with stock
  modules only (never ``trust_remote_code``). Its first module is a query/document
  :class:`~sentence_transformers.base.modules.Router`: the *query* route is the base model's
  modules followed by the adapter written as stock ``Dense`` layers, the *document* route is the
  base modules alone (shared, stored once). So ``model.encode_query(texts)`` gives the vectors
  AdapterLab's :class:`~core.embedders.AdapterEmbedder` makes and ``model.encode_document(texts)``
  (and plain ``encode``) the unchanged base vectors: an existing index needs no re-indexing. The
  run's query/passage prefixes become the model's ``query``/``document`` prompts. A ``README.md``
  model card says what the model is, how it was trained and measured, and how to load it.
  For an API base model (``openai:...``), which has no sentence-transformers form, the folder holds
  the adapter alone (LlamaIndex format) and the card a short loader snippet.
* ``llamaindex``: the run's adapter folder as AdapterLab keeps it (``config.json`` +
  ``pytorch_model.bin``), which LlamaIndex's ``AdapterEmbeddingModel`` reads.

Which adapters become stock modules (:func:`export_support` says why one does not):

* ``linear``: one ``Dense`` (identity activation, with the adapter's bias if it has one);
* ``low-rank`` (``x + B A x``): the same linear map folded into one ``Dense`` (``I + B A``);
* ``two-layer`` without residual: two ``Dense`` layers (the activation, then identity);
* ``two-layer`` with residual and ``relu``, ``gelu``, ``silu`` or ``leaky_relu``: two ``Dense``
  layers whose hidden layer also carries ``x`` and ``-x`` (for these activations
  ``act(x) - act(-x)`` is ``x``, or ``1.01 x`` for leaky ReLU), so the second layer adds ``x`` back
  exactly; with ``tanh`` or ``sigmoid`` it has no stock form;
* custom adapter classes have no stock form: export them as ``llamaindex``.

Example::

    export_run(ws, run_id, "sentence-transformers", "out/tuned")
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer("out/tuned")
    q = model.encode_query(["What was Lyft's revenue in 2021?"])   # adapted query vectors
    d = model.encode_document(chunks)                               # the base model's vectors
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapters import LinearLayer, LowRankResidual, TwoLayerNN, load_adapter
from .workspace import Workspace, atomic_write_text, replace_folder

FORMATS = ("sentence-transformers", "llamaindex")
CARD_FILE = "README.md"
# Activations whose odd part is a multiple of x (act(x) - act(-x) = c * x): value is 1 / c.
_PASS_THROUGH = {"relu": 1.0, "gelu": 1.0, "silu": 1.0, "leaky_relu": 1.0 / 1.01}
_TORCH_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
}
EXPORTABLE_TEXT = (
    "Exports as a sentence-transformers model: linear and low-rank adapters, two-layer adapters "
    "without residual, and residual two-layer adapters with ReLU, GELU, SiLU or leaky ReLU. "
    "Residual two-layer adapters with tanh or sigmoid, and custom adapter classes, export in "
    "the LlamaIndex format only."
)


class ExportError(ValueError):
    """A run that cannot be exported in the asked format; the message says what to do instead."""


def export_support(adapter: nn.Module) -> str | None:
    """``None`` when ``adapter`` has an exact stock sentence-transformers form, else why not."""
    if type(adapter) in (LinearLayer, LowRankResidual):
        return None
    if type(adapter) is TwoLayerNN:
        cfg = adapter.get_config_dict()
        if cfg["add_residual"] and cfg["activation_fn_str"] not in _PASS_THROUGH:
            return (
                f"a residual two-layer adapter with {cfg['activation_fn_str']} has no exact form in stock "
                "sentence-transformers modules (only relu, gelu, silu and leaky_relu do)"
            )
        return None
    return f"the custom adapter class {type(adapter).__name__} has no form in stock sentence-transformers modules"


def adapter_to_dense(adapter: nn.Module) -> list[nn.Module]:
    """The adapter as stock ``Dense`` modules computing the same map (to float precision)."""
    from sentence_transformers.base.modules import Dense

    why = export_support(adapter)
    if why:
        raise ExportError(f"{why}: export it in the llamaindex format instead.")
    with torch.no_grad():
        if isinstance(adapter, LinearLayer):
            lin = adapter.linear
            return [
                Dense(
                    adapter.in_features,
                    adapter.out_features,
                    bias=adapter.bias,
                    activation_function=None,
                    init_weight=lin.weight.detach().clone().float(),
                    init_bias=lin.bias.detach().clone().float() if adapter.bias else None,
                )
            ]
        if isinstance(adapter, LowRankResidual):
            w = torch.eye(adapter.out_features, adapter.in_features, dtype=torch.float64)
            w += adapter.up.weight.double() @ adapter.down.weight.double()
            return [
                Dense(
                    adapter.in_features,
                    adapter.out_features,
                    bias=False,
                    activation_function=None,
                    init_weight=w.float(),
                )
            ]
        cfg = adapter.get_config_dict()
        d, h, o = adapter.in_features, adapter.hidden_features, adapter.out_features
        act = _TORCH_ACTIVATIONS[cfg["activation_fn_str"]]()
        w1, b1 = adapter.linear1.weight.detach().double(), adapter.linear1.bias.detach().double()
        w2, b2 = adapter.linear2.weight.detach().double(), adapter.linear2.bias.detach().double()
        if not cfg["add_residual"]:
            return [
                Dense(d, h, bias=True, activation_function=act, init_weight=w1.float(), init_bias=b1.float()),
                Dense(h, o, bias=True, activation_function=None, init_weight=w2.float(), init_bias=b2.float()),
            ]
        # rw * W2 act(W1 x + b1) + rw * b2 + x, with x carried through the activation as act(x) - act(-x).
        rw = adapter.residual_weight.detach().double()
        eye = torch.eye(d, dtype=torch.float64)
        c = _PASS_THROUGH[cfg["activation_fn_str"]]
        first_w = torch.cat([w1, eye, -eye])
        first_b = torch.cat([b1, torch.zeros(2 * d, dtype=torch.float64)])
        second_w = torch.cat([rw * w2, c * eye, -c * eye], dim=1)
        return [
            Dense(
                d, h + 2 * d, bias=True, activation_function=act, init_weight=first_w.float(), init_bias=first_b.float()
            ),
            Dense(
                h + 2 * d,
                o,
                bias=True,
                activation_function=None,
                init_weight=second_w.float(),
                init_bias=(rw * b2).float(),
            ),
        ]


def base_model_path(embedder: str) -> str:
    """What ``SentenceTransformer(...)`` loads for an AdapterLab embedder spec (``default`` = bundled)."""
    from .embedders import bundled_model_path, split_backend

    spec = split_backend((embedder or "default").strip())[0]  # an ONNX backend exports the torch model it came from
    if spec.startswith("st:"):
        spec = spec[3:]
    return bundled_model_path() if spec in ("", "default") else spec


def is_api_embedder(embedder: str | None) -> bool:
    return str(embedder or "").strip().startswith("openai:")


def build_sentence_transformer(
    adapter: nn.Module, embedder: str = "default", *, query_prefix: str = "", passage_prefix: str = ""
):
    """A ``SentenceTransformer`` whose query route applies ``adapter`` after the base model (see module doc)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Router

    from .embedders import EmbedderError

    dense = adapter_to_dense(adapter)
    path = base_model_path(embedder)
    if os.path.isdir(path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:  # a fresh instance: its modules become part of a new model, so never the embedders' shared one
        base = SentenceTransformer(path, device="cpu")
    except Exception as exc:
        raise EmbedderError(f"could not load the base model {path!r} to export: {exc}") from exc
    modules = list(base.children())
    dim = base.get_embedding_dimension() if hasattr(base, "get_embedding_dimension") else None
    if dim is not None and adapter.get_config_dict().get("in_features") not in (None, dim):
        raise ExportError(
            f"the adapter takes {adapter.get_config_dict()['in_features']}-d vectors but "
            f"{embedder!r} makes {dim}-d ones: export with the base model it was trained on."
        )
    # AdapterLab encodes with no prompt name, so only the base model's default prompt applies, before
    # the run's own prefix; the exported query/document prompts say exactly that.
    default = base.prompts.get(base.default_prompt_name, "") if base.default_prompt_name else ""
    router = Router.for_query_document(query_modules=modules + dense, document_modules=modules)
    # The document prompt is also the default one, so a framework that calls plain ``encode`` for
    # passages gets exactly the vectors AdapterLab indexed.
    return SentenceTransformer(
        modules=[router],
        device="cpu",
        similarity_fn_name="cosine",
        prompts={"query": default + query_prefix, "document": default + passage_prefix},
        default_prompt_name="document",
    )


# ------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------
def _run_parts(ws: Workspace, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from .runs import get_run

    run = get_run(ws, run_id)
    if run is None:
        raise ExportError(f"no run {run_id!r} in this workspace: list them with `python -m core runs`.")
    return run, run.get("config") or {}


#: Written into every folder :func:`export_run` fills: such a folder may be replaced by the next export.
EXPORT_MARKER = ".adapterlab-export.json"


def written_by_adapterlab(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is one AdapterLab wrote (an export, an adapter or a fine-tuned model saved with
    ``--out``), which a new export or run may replace as a whole."""
    from .adapters import META_FILE
    from .finetune import MARKER

    return any((Path(folder) / name).is_file() for name in (EXPORT_MARKER, META_FILE, MARKER))


def check_output_folder(out_dir: str | os.PathLike) -> None:
    """Refuse, before any work, an ``out_dir`` that is a file, or a folder holding files AdapterLab did not write:
    one run's files mixed with another's (a LlamaIndex config beside another run's sentence-transformers modules,
    another run's checkpoints) would give two users of the folder two different adapters."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: a file is in the way; give a folder (a new one, or one AdapterLab wrote before)")
    if out.is_dir() and any(out.iterdir()) and not written_by_adapterlab(out):
        raise ExportError(
            f"{out} is not empty and AdapterLab did not write it: give a new folder, or empty this one (a folder an "
            "earlier export or run wrote is replaced as a whole; AdapterLab never mixes its files with others)"
        )


def export_run(ws: Workspace, run_id: str, fmt: str, out_dir: str | os.PathLike) -> Path:
    """Write run ``run_id`` to ``out_dir`` in ``fmt`` (:data:`FORMATS`); returns the folder. The folder is new,
    empty, or one AdapterLab wrote (:func:`check_output_folder`), which is replaced as a whole once the new
    files are complete."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    check_output_folder(out_dir)

    def write(dst: Path) -> None:
        _export_into(ws, run_id, fmt, dst)
        atomic_write_text(dst / EXPORT_MARKER, json.dumps({"run": run_id, "format": fmt}))

    return replace_folder(out_dir, write)


def _export_into(ws: Workspace, run_id: str, fmt: str, out: Path) -> Path:
    from .runs import adapter_dir, has_adapter, has_model, model_dir

    run, request = _run_parts(ws, run_id)
    if run["kind"] == "finetune":
        if fmt != "sentence-transformers":
            raise ExportError(f"{run_id} is a full fine-tune: it has no adapter; export it as sentence-transformers.")
        if not has_model(ws, run_id):
            raise ExportError(f"{run_id} saved no model (status {run['status']}): nothing to export.")
        shutil.copytree(model_dir(ws, run_id), out, dirs_exist_ok=True)
        atomic_write_text(out / CARD_FILE, finetune_card(ws, run_id))
        return out
    if not has_adapter(ws, run_id):
        from .runs import run_checkpoints

        n = len(run_checkpoints(ws, run_id))
        raise ExportError(
            f"{run_id} saved no final adapter (status {run['status']}): "
            + (
                f"it stopped early; its {n} checkpoint(s) can be compared (`python -m core evaluate --run "
                f"{run_id} --checkpoints`) and downloaded on the Train page, or train it again."
                if n
                else "train it to the end first."
            )
        )
    adapter = load_adapter(adapter_dir(ws, run_id))
    embedder = request.get("embedder") or "default"
    opts = request.get("embedder_options") or {}
    if fmt == "llamaindex" or is_api_embedder(embedder):
        out.mkdir(parents=True, exist_ok=True)
        for p in adapter_dir(ws, run_id).iterdir():
            if p.is_file():
                shutil.copy2(p, out / p.name)
        if fmt == "sentence-transformers":  # an API base: the adapter alone, with a loader in the card
            atomic_write_text(out / CARD_FILE, model_card(ws, run_id, adapter=adapter, adapter_only=True))
        return out
    model = build_sentence_transformer(
        adapter, embedder, query_prefix=opts.get("query_prefix", ""), passage_prefix=opts.get("passage_prefix", "")
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out), create_model_card=False)
    atomic_write_text(out / CARD_FILE, model_card(ws, run_id, adapter=adapter))
    return out


def export_zip(ws: Workspace, run_id: str, fmt: str = "sentence-transformers") -> bytes:
    """The export as zip bytes (the Train page's download), under a folder named for the format."""
    from .runs import zip_folder

    with tempfile.TemporaryDirectory(prefix="adapterlab-export-") as tmp:
        out = export_run(ws, run_id, fmt, Path(tmp) / "model")
        return zip_folder(out, "model" if fmt == "sentence-transformers" else "adapter")


def run_export_support(ws: Workspace, run_id: str) -> str | None:
    """``None`` when the run exports as a sentence-transformers model, else why not (for the UI)."""
    from .runs import adapter_dir, has_adapter

    run, request = _run_parts(ws, run_id)
    if run["kind"] == "finetune":
        return None
    if not has_adapter(ws, run_id):
        return "the run saved no final adapter"
    try:
        adapter = load_adapter(adapter_dir(ws, run_id))
    except Exception as exc:  # a custom class named by import path: never imported for this
        return f"its adapter does not load without custom code ({type(exc).__name__})"
    return export_support(adapter)


# ------------------------------------------------------------------------------------------------
# model card
# ------------------------------------------------------------------------------------------------
def _fmt(x: Any) -> str:
    return "?" if x is None else f"{x:.4f}"


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_md_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def latest_comparison(ws: Workspace, run_id: str) -> tuple[Any, dict[str, Any], dict[str, Any]] | None:
    """The newest saved comparison that evaluated this run: (comparison, context, catalog row)."""
    from .reports import list_comparisons, load_comparison

    for row in list_comparisons(ws):
        try:
            cmp, extra = load_comparison(ws, row["id"])
        except (KeyError, OSError, ValueError):
            continue
        specs = extra.get("systems") or []
        if run_id in (extra.get("run_ids") or []) or any(
            s.get("run_id") == run_id for s in specs if isinstance(s, dict)
        ):
            return cmp, extra.get("context") or {}, row
    return None


def _dataset_line(ws: Workspace, request: dict[str, Any]) -> str:
    if request.get("dataset_id"):
        rows = ws.query("SELECT name FROM datasets WHERE id=?", (request["dataset_id"],))
        name = rows[0]["name"] if rows else request["dataset_id"]
        return f"{name} (workspace dataset {request['dataset_id']})"
    # the file's name only: a model card travels, and a local path says where someone's files are, not what they were
    path = request.get("dataset_path")
    return f"the file {Path(path).name}" if path else "unknown"


def finetune_card(ws: Workspace, run_id: str) -> str:
    """The ``README.md`` of a full fine-tune's export: what it is, its data, settings, the latest comparison, and
    that the corpus must be embedded again with it."""
    from .embedders import DEFAULT_MODEL_LABEL
    from .finetune import describe_cost
    from .summary import compact_rows

    run, request = _run_parts(ws, run_id)
    result = run.get("result") or {}
    embedder = request.get("embedder") or "default"
    base = DEFAULT_MODEL_LABEL if embedder == "default" else embedder
    lines = [
        f"# {base}, fully fine-tuned by AdapterLab ({run['name']})",
        "",
        f"Exported by AdapterLab on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from run `{run_id}`.",
        "",
        f"- **Base model:** {base}; every weight was trained, so **documents must be embedded again** with this "
        "model (an index built with the base model does not match it).",
        f"- **Training data:** {result.get('n_train_queries', '?')} questions from {_dataset_line(ws, request)}",
        *(["- **Cost:** " + describe_cost(result["cost"])] if result.get("cost") else []),
        *(
            ["- **Cancelled before it finished:** this is its state at the cancel, not the full run."]
            if run.get("status") == "cancelled"
            else []
        ),
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(request.get("config") or {}, indent=2, sort_keys=True),
        "```",
        "",
        "## Latest comparison",
        "",
    ]
    found = latest_comparison(ws, run_id)
    if found:
        cmp, ctx, row = found
        lines += [
            f"On **{cmp.dataset_name}** ({cmp.n_queries} questions, `{row['id']}`):",
            "",
            _md_table(compact_rows(cmp, ctx)),
            "",
        ]
    else:
        lines += ["This run is in no saved comparison yet: compare it on the Compare page and export again.", ""]
    lines += [
        "## How to load it",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'model = SentenceTransformer("path/to/this/folder")',
        "q = model.encode_query(questions)",
        "d = model.encode_document(chunks)  # the whole corpus again",
        "```",
        "",
    ]
    return "\n".join(lines)


def model_card(ws: Workspace, run_id: str, *, adapter: nn.Module | None = None, adapter_only: bool = False) -> str:
    """The ``README.md`` of an export: base model, adapter, data, settings, estimates, table, loading."""
    from .adapters import adapter_name
    from .embedders import BACKEND_LABELS, DEFAULT_MODEL_LABEL, split_backend
    from .summary import compact_rows

    run, request = _run_parts(ws, run_id)
    result = run.get("result") or {}
    config = request.get("config") or {}
    embedder = request.get("embedder") or "default"
    opts = request.get("embedder_options") or {}
    model_spec, backend = split_backend(embedder)
    base_label = DEFAULT_MODEL_LABEL if model_spec in ("default", "") else model_spec
    kind = adapter_name(adapter) if adapter is not None else config.get("adapter", "?")
    title = f"AdapterLab adapter {run['name']}" if adapter_only else f"{base_label} + AdapterLab adapter ({kind})"
    lines = [
        f"# {title}",
        "",
        f"Exported by AdapterLab on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from run `{run_id}`.",
        "",
        "## What it is",
        "",
        f"- **Base model:** {base_label}",
        *(
            [
                f"- **Backend:** {BACKEND_LABELS[backend]}: the adapter was trained on those vectors; this "
                "folder's model runs the base in PyTorch (vectors within a cosine of about 0.99 of them)."
            ]
            if backend != "torch" and not is_api_embedder(embedder)
            else []
        ),
        f"- **Adapter:** {kind}" + (f" ({json.dumps(adapter.get_config_dict())})" if adapter is not None else ""),
        "- The adapter maps **query** embeddings only; documents keep the base model's vectors, so an index "
        "built with the base model stays valid.",
        f"- **Training data:** {result.get('n_train_queries', result.get('n_questions', '?'))} questions from "
        f"{_dataset_line(ws, request)}"
        + (
            f", plus {result.get('n_pseudo_queries', 0)} offline pseudo-queries made from the "
            f"{result.get('n_chunks', '?')} chunks it ranks"
            if run["kind"] == "distill"
            else ""
        ),
    ]
    if run.get("status") == "cancelled":
        lines.append(
            "- **Cancelled before it finished:** this is the run's best state before the cancel, not the full run "
            "its settings describe."
        )
    if opts.get("query_prefix") or opts.get("passage_prefix"):
        lines.append(
            f"- **Prefixes:** query {opts.get('query_prefix', '')!r}, passage {opts.get('passage_prefix', '')!r}"
            + ("" if adapter_only else " (the model's `query` and `document` prompts)")
        )
    lines += ["", "## Settings", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    sel = result.get("selection")
    if run["kind"] == "distill":
        lines += [
            "## How it was trained",
            "",
            f"Distilled from the full fine-tune **{result.get('teacher', '?')}**: for each query, the fine-tuned "
            "model's softmax over every chunk (its own vectors) was the target, and the adapter, applied to the "
            f"base model's query vector against the base model's chunk vectors, learned to match it (KL divergence, "
            f"{result.get('steps_done', '?')} steps; from {_fmt(result.get('first_loss'))} to "
            f"{_fmt(result.get('final_loss'))}). No evaluation question was used. There is no cross-validated "
            "estimate: the comparison below (or one on your own evaluation set) is the measure.",
            "",
        ]
    elif sel:
        what = (
            f"trained {sel['epochs']} epoch(s) at lr {sel['lr']:g} on every question"
            + (f", shrunk toward the identity by alpha {sel['alpha']:g}" if sel.get("alpha", 1.0) != 1.0 else "")
            if sel.get("train")
            else "kept the untrained identity: training did not help out of fold"
        )
        lines += [
            "## Estimated gain (cross-validated)",
            "",
            f"{sel['folds']}-fold cross-validation ({sel['design']}: {sel['design_reason']}): gain "
            f"{100 * sel['gain']:+.2f} ± {100 * sel['gain_se']:.2f} points of (hit@{sel['top_k']} + "
            f"MRR@{sel['top_k']})/2 over the base model (± one standard error), so the run {what}."
            + (f" Validation: {sel['validation_reason']}." if sel.get("validation_reason") else ""),
            "",
        ]
    else:
        lines += [
            "## Estimated gain (cross-validated)",
            "",
            "No cross-validated estimate: this run chose its epoch "
            + ("on a hold-out split." if config.get("selection") == "holdout" else "without cross-validation."),
            "",
        ]
    found = latest_comparison(ws, run_id)
    lines += ["## Latest comparison", ""]
    if found:
        cmp, ctx, row = found
        when = time.strftime("%Y-%m-%d", time.gmtime(row["created_at"])) if row.get("created_at") else ""
        lines += [
            f"On **{cmp.dataset_name}** ({cmp.n_queries} questions, saved comparison `{row['id']}` {when}); "
            "Δ against the base model with 95% bootstrap confidence intervals, significance Holm-adjusted:",
            "",
            _md_table(compact_rows(cmp, ctx)),
            "",
        ]
    else:
        lines += [
            "This run is in no saved comparison yet: compare it on the Compare page (or `python -m core "
            "evaluate --dataset FILE --run RUN_ID --save`) and export again to have the table here.",
            "",
        ]
    lines += ["## How to load it", ""]
    if adapter_only:
        model = embedder.split(":", 1)[1]
        question = json.dumps(opts.get("query_prefix", "") + "What was the revenue in 2021?")
        lines += [
            f"The base model `{embedder}` is an API model with no sentence-transformers form, so this folder "
            "holds the adapter alone (LlamaIndex format: `config.json`, `pytorch_model.bin`). Apply it to "
            "the API's query vectors; embed documents with the API as before (no re-indexing):",
            "",
            "```python",
            "import torch",
            "from openai import OpenAI",
            "from core.adapters import load_adapter   # AdapterLab",
            "",
            'adapter = load_adapter("path/to/this/folder")',
            f'vec = OpenAI().embeddings.create(model="{model}", input=[{question}]).data[0].embedding',
            "query_vector = adapter(torch.tensor([vec])).detach().numpy()",
            "```",
            "",
        ]
        if isinstance(adapter, LinearLayer):
            lines += [
                "Without AdapterLab (a linear adapter is one matrix):",
                "",
                "```python",
                'state = torch.load("pytorch_model.bin", weights_only=True)',
                'query_vector = state["linear.weight"] @ torch.tensor(vec)'
                + (' + state["linear.bias"]' if adapter.bias else ""),
                "```",
                "",
            ]
        lines += [
            'LlamaIndex: `AdapterEmbeddingModel(OpenAIEmbedding(...), "path/to/this/folder", adapter_cls=...)`.',
            "",
        ]
    else:
        lines += [
            "Stock sentence-transformers (no `trust_remote_code`):",
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            "",
            'model = SentenceTransformer("path/to/this/folder")',
            'query_vectors = model.encode_query(["What was the revenue in 2021?"])   # base + adapter',
            "document_vectors = model.encode_document(chunks)   # the base model's vectors: no re-indexing",
            "scores = model.similarity(query_vectors, document_vectors)",
            "```",
            "",
            "Use `encode_query` for questions and `encode_document` (or plain `encode`) for passages: a "
            "framework that calls plain `encode` for both gets the base model's vectors for both.",
            "",
        ]
    return "\n".join(lines)
