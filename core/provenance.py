"""What a comparison measured: the evaluation set, where each system came from, and how much each
adapter's training set overlaps the evaluation set. The report and the Compare page read this
*context* (a plain dict saved with the comparison) to put provenance and caveats first.

Context layout (``build_context``)::

    {"created_at": 1764000000.0, "base_model": "all-MiniLM-L6-v2", "top_k": 5,
     "eval_set": {"name", "dataset_id", "path", "n_queries", "n_corpus",
                  "sources": {"llm": 700, "offline": 90}, "llm_models": ["gpt-4o-mini"],
                  "documents": ["lyft_2021.pdf"]},
     "systems": {display name: {"kind", "id", "run_name", "step", "settings", "train_set",
                                "picked_on_eval"}},
     "leakage": [{"train_set": {...}, "systems": [names], "report": LeakageReport.to_dict()}],
     "excluded": {"mode": "questions", "n": 12, "of": 790}}      # only after exclusion

Question sources come from the workspace's questions table (by query id), from a dataset's
registry entry (imported real queries record theirs), or from the id prefix ``imported-`` that
:mod:`core.real_queries` gives its queries (it survives a round trip through a JSON file).

Example::

    ctx = build_context(ws, eval_ds, "uber questions", named_specs(ws, specs), base_embedder, dataset_id=did)
    cmp2, ctx2 = exclude_leaked(cmp, ctx, mode="questions")
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .datasets import QADataset
from .leakage import NEAR_DUPLICATE_COSINE, LeakageReport, check_leakage
from .workspace import Workspace

if TYPE_CHECKING:
    from .embedders import Embedder
    from .generators import QuestionGenerator

IMPORTED_SOURCE = "imported"
IMPORTED_PREFIX = "imported-"
SOURCE_LABELS = {
    "llm": "written by an LLM",
    "offline": "offline pseudo-queries (no LLM)",
    IMPORTED_SOURCE: "imported real queries",
    "import": "imported",
    "manual": "written by hand",
    "unknown": "of unknown origin (a dataset file)",
}
_BATCH = 900  # SQLite's default limit on host parameters is 999


# ------------------------------------------------------------------------------------------------
# question generators (so an evaluation set can name the LLM that wrote its questions)
# ------------------------------------------------------------------------------------------------
def record_generator(
    ws: Workspace, generator: QuestionGenerator, questions_per_chunk: int, answered_by: Sequence[str] = ()
) -> None:
    """Remember which generator a generation key stands for; call before generating (and
    :func:`core.questions.generate_questions` calls it again with the models that answered).

    The record: ``{"kind", "model", "requested", "answered_by"}``. ``requested`` is the model name typed;
    ``answered_by`` every model the server said answered under this key, as shown
    (:func:`core.llm.model_display_name`), kept over runs: a local server answers any name it is sent, so the
    name typed ("gpt-4o-mini") may not be the model that wrote the questions. ``model`` is what the questions'
    LLM is shown as: the first model that answered, else the name typed."""
    from .generators import generation_key

    key = generation_key(generator, questions_per_chunk)
    before = ws.get_setting(f"generator:{key}") or {}
    requested = getattr(generator, "model", None)
    answered = [m for m in before.get("answered_by") or [] if m]
    answered += [m for m in dict.fromkeys(answered_by) if m and m not in answered]
    record: dict[str, Any] = {"kind": getattr(generator, "kind", None), "model": answered[0] if answered else requested}
    if requested is not None:
        record["requested"] = requested
    if answered:
        record["answered_by"] = answered
    ws.set_setting(f"generator:{key}", record)


def generator_models(record: dict[str, Any]) -> list[str]:
    """The models a generator record (:func:`record_generator`) names as the questions' LLM: those the server said
    answered, else the name typed (a record from before answers were recorded)."""
    return [m for m in record.get("answered_by") or [] if m] or ([record["model"]] if record.get("model") else [])


def _in_batches(ws: Workspace, sql: str, ids: Sequence[str]) -> list[dict]:
    out: list[dict] = []
    ids = list(ids)
    for i in range(0, len(ids), _BATCH):
        part = ids[i : i + _BATCH]
        out += ws.query(sql.format(marks=",".join("?" * len(part))), tuple(part))
    return out


def _question_rows(ws: Workspace | None, ds: QADataset) -> dict[str, dict]:
    qids = list(ds.queries)
    found: dict[str, dict] = {}
    if ws is not None and qids:
        for r in _in_batches(ws, "SELECT id, chunk_id, source FROM questions WHERE id IN ({marks})", qids):
            found[r["id"]] = r
    return found


def _source(found: dict[str, dict], q: str) -> str:
    return found[q]["source"] if q in found else IMPORTED_SOURCE if q.startswith(IMPORTED_PREFIX) else "unknown"


def per_question_sources(ws: Workspace | None, ds: QADataset) -> dict[str, str]:
    """Question id -> where it came from (``"llm"``, ``"offline"``, ``"imported"``, ... or ``"unknown"``: a
    dataset file's question the workspace has no record of), for every query of ``ds``."""
    found = _question_rows(ws, ds)
    return {q: _source(found, q) for q in ds.queries}


def question_sources(ws: Workspace | None, ds: QADataset, recorded: dict[str, int] | None = None) -> dict[str, Any]:
    """``{"sources": {source: count}, "llm_models": [...]}`` for the dataset's queries; ``llm_models`` names the
    models the server said answered (:func:`generator_models`), not only the name typed."""
    if recorded:
        return {"sources": dict(recorded), "llm_models": []}
    found = _question_rows(ws, ds)
    counts: dict[str, int] = {}
    for q in ds.queries:
        src = _source(found, q)
        counts[src] = counts.get(src, 0) + 1
    models: list[str] = []
    llm_chunks = sorted({r["chunk_id"] for r in found.values() if r["source"] == "llm"})
    if ws is not None and llm_chunks:
        keys = {
            r["gen_key"]
            for r in _in_batches(
                ws, "SELECT DISTINCT gen_key FROM generation_done WHERE chunk_id IN ({marks})", llm_chunks
            )
        }
        for key in sorted(keys):
            gen = ws.get_setting(f"generator:{key}") or {}
            if gen.get("kind") == "llm":
                models += [m for m in generator_models(gen) if m not in models]
    return {"sources": counts, "llm_models": models}


def asked_documents(ws: Workspace | None, ds: QADataset) -> list[str]:
    """The file names of the documents ``ds``'s questions ask about: from its node metadata, else by its chunk ids
    in ``ws``; empty for a file made elsewhere (its chunks are no workspace's)."""
    targets = list(dict.fromkeys(d for q in ds.queries for d in ds.relevant_docs.get(q, [])))
    names = {str(m.get("filename") or m.get("doc_id")) for d in targets if (m := ds.node_meta.get(d))}
    if not names and ws is not None and targets:
        rows = _in_batches(
            ws,
            "SELECT DISTINCT d.filename FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})",
            targets,
        )
        names = {r["filename"] for r in rows}
    return sorted(names)


def _dataset_row(ws: Workspace | None, dataset_id: str | None) -> dict | None:
    if ws is None or not dataset_id:
        return None
    rows = ws.query("SELECT * FROM datasets WHERE id=?", (dataset_id,))
    if not rows:
        return None
    row = rows[0]
    try:
        row["meta"] = json.loads(row.get("meta") or "{}")
    except ValueError:
        row["meta"] = {}
    return row


def eval_set_info(
    ws: Workspace | None, ds: QADataset, name: str, dataset_id: str | None = None, path: str | None = None
) -> dict[str, Any]:
    """Name, size, question sources (and LLM models), documents covered."""
    row = _dataset_row(ws, dataset_id)
    recorded = ((row or {}).get("meta") or {}).get("sources")
    info = {
        "name": name,
        "dataset_id": dataset_id,
        "path": str(path) if path else None,
        "n_queries": len(ds.queries),
        "n_corpus": len(ds.corpus),
        "documents": asked_documents(ws, ds),
    }
    info.update(question_sources(ws, ds, recorded))
    return info


def describe_sources(info: dict[str, Any]) -> str:
    """'700 written by an LLM (gpt-4o-mini), 90 offline pseudo-queries (no LLM)'."""
    parts = []
    for src, n in sorted((info.get("sources") or {}).items(), key=lambda kv: -kv[1]):
        label = SOURCE_LABELS.get(src, src)
        if src == "llm" and info.get("llm_models"):
            label += f" ({', '.join(info['llm_models'])})"
        parts.append(f"{n} {label}")
    return ", ".join(parts) or "unknown"


# ------------------------------------------------------------------------------------------------
# systems
# ------------------------------------------------------------------------------------------------
def _same_file(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _train_set(ws: Workspace, dataset_id: str | None, path: str | None) -> dict[str, Any] | None:
    if dataset_id:
        row = _dataset_row(ws, dataset_id)
        return {
            "dataset_id": dataset_id,
            "name": row["name"] if row else f"(deleted dataset {dataset_id})",
            "n_queries": row["n_queries"] if row else None,
        }
    if path:
        return {"path": str(path), "name": Path(path).name, "n_queries": None}
    return None


def _run_info(ws: Workspace, run_id: str, eval_dataset_id: str | None, eval_path: str | None) -> dict[str, Any]:
    from .runs import get_run

    run = get_run(ws, run_id)
    if run is None:
        return {"run_id": run_id, "run_name": None, "train_set": None, "picked_on_eval": False}
    req = run.get("config") or {}

    def is_this_set(role: str) -> bool:  # the run's <role>_dataset_id / _path names the set evaluated on
        rid = req.get(f"{role}_dataset_id")
        return bool((rid and rid == eval_dataset_id) or _same_file(req.get(f"{role}_dataset_path"), eval_path))

    val_id, val_path = req.get("val_dataset_id"), req.get("val_dataset_path")
    picked = is_this_set("val")
    result = run.get("result") or {}
    if run["kind"] == "finetune":
        validation = "none: every epoch set was trained"
    elif run["kind"] == "distill":
        validation = f"none: distilled from the fine-tune {result.get('teacher') or '?'} (every step)"
    elif result.get("selection") and not (val_id or val_path):
        validation = "cross-validation on the training questions"
        if is_this_set("eval"):  # named as "You will evaluate on" (--eval-dataset)
            validation += ", designed from this set's chunks (never its questions)"
        elif result["selection"].get("stand_in"):  # nothing named: the ingested chunks no question asks about
            validation += ", designed from the ingested chunks no training question asks about (never any questions)"
    else:
        validation = (_train_set(ws, val_id, val_path) or {}).get("name") or "a split of the training chunks"
    return {
        "run_id": run_id,
        "run_name": run["name"],
        "run_kind": run["kind"],
        "settings": req.get("config") or {},
        "embedder": req.get("embedder"),
        "train_set": _train_set(ws, req.get("dataset_id"), req.get("dataset_path")),
        "validation": validation,
        # a distillation also trained on offline pseudo-queries made from every ingested chunk (never on
        # evaluation questions): said beside its training set
        "pseudo_queries": result.get("n_pseudo_queries") if run["kind"] == "distill" else None,
        "eval_chunks": result.get("n_eval_chunks") if run["kind"] == "distill" else None,
        "picked_on_eval": picked,
        "best_epoch": result.get("best_epoch"),
        # what cross-validation chose (epochs, lr, shrinkage): what the adapter is, beside the settings it was given
        "chosen": {k: result["selection"].get(k) for k in ("train", "epochs", "lr", "alpha")}
        if result.get("selection")
        else None,
    }


def describe_systems(
    ws: Workspace, named: Sequence[tuple[str, dict]], eval_dataset_id: str | None = None, eval_path: str | None = None
) -> dict[str, dict[str, Any]]:
    """Display name -> where the system comes from (kind, id, run, training set, settings)."""
    from .adapters import read_adapter_meta

    out: dict[str, dict[str, Any]] = {}
    for name, spec in named:
        kind = spec.get("kind")
        info: dict[str, Any] = {"kind": kind}
        if kind == "base":
            info["id"] = spec.get("spec") or "default"
        elif kind == "api":
            info["id"] = spec.get("spec")
        elif kind in ("run", "checkpoint"):
            info.update(_run_info(ws, spec["run_id"], eval_dataset_id, eval_path))
            if info.get("run_kind") == "distill":
                from .runs import adapter_dir

                info["_folder"] = str(adapter_dir(ws, spec["run_id"]))
            info["id"] = spec["run_id"] + (f"/step_{int(spec['step'])}" if kind == "checkpoint" else "")
            if kind == "checkpoint":
                info["step"] = int(spec["step"])
        elif kind == "adapter_dir":
            info["id"] = str(spec.get("path"))
            info["_folder"] = str(spec.get("path"))
            meta = read_adapter_meta(spec["path"]) if Path(spec["path"]).is_dir() else {}
            run_id = spec.get("run_id") or meta.get("run_id")
            if run_id:
                info.update(_run_info(ws, run_id, eval_dataset_id, eval_path))
            if spec.get("train_dataset"):
                info["train_set"] = _train_set(ws, None, spec["train_dataset"])
            if spec.get("step") is not None:
                info["step"] = int(spec["step"])
                info["checkpoint"] = True
            info.setdefault("settings", meta.get("config") or {})
        info["checkpoint"] = bool(info.get("checkpoint") or kind == "checkpoint")
        out[name] = info
    return out


# ------------------------------------------------------------------------------------------------
# leakage per training set
# ------------------------------------------------------------------------------------------------
def _load_train(ws: Workspace, ref: dict[str, Any]) -> QADataset:
    if ref.get("dataset_id"):
        from .datasets import load_dataset

        return load_dataset(ws, ref["dataset_id"])
    return QADataset.load(ref["path"])


def leakage_by_training_set(
    ws: Workspace,
    eval_ds: QADataset,
    systems: dict[str, dict[str, Any]],
    embedder: Embedder,
    threshold: float = NEAR_DUPLICATE_COSINE,
) -> list[dict[str, Any]]:
    """One leakage report per distinct training set among ``systems`` (adapters sharing a run share one),
    with ``text_coverage``: the share of the text the evaluation set's questions ask about among the chunks
    that training set's questions ask about (:func:`core.distill.eval_overlap`: a dataset built in the
    workspace ranks among every chunk of its documents, so its corpus says nothing of which ones a sample of
    questions covered)."""
    groups: dict[str, dict[str, Any]] = {}
    for name, info in systems.items():
        ref = info.get("train_set")
        if not ref:
            continue
        key = ref.get("dataset_id") or ref.get("path")
        groups.setdefault(key, {"train_set": ref, "systems": []})["systems"].append(name)
    eval_vecs = None
    out = []
    for entry in groups.values():
        try:
            train = _load_train(ws, entry["train_set"])
        except Exception as exc:  # a deleted or unreadable training set: say so, check the others
            entry["error"] = f"the training set could not be read ({exc})"
            out.append(entry)
            continue
        entry["train_set"] = {**entry["train_set"], "n_queries": len(train.queries)}
        # the share of the evaluation questions' text among the training questions' chunks (the same passage
        # chunked apart still counts); low: other text than the training questions are about
        from .distill import eval_overlap  # an adapter is compared: torch is loaded anyway

        entry["text_coverage"] = eval_overlap(train, eval_ds)
        # the documents both sets' questions ask about, by the file names the workspace knows: an evaluation set
        # wholly about the training questions' own documents measures new sections of them, not another filing
        eval_docs, train_docs = set(asked_documents(ws, eval_ds)), set(asked_documents(ws, train))
        if eval_docs and eval_docs <= train_docs:
            entry["training_documents"] = sorted(eval_docs)
        if embedder is not None and eval_vecs is None:
            eval_vecs = embedder.embed_queries(list(eval_ds.queries.values()))
        train_vecs = embedder.embed_queries(list(train.queries.values())) if embedder is not None else None
        rep = check_leakage(eval_ds, train, threshold=threshold, eval_vecs=eval_vecs, train_vecs=train_vecs)
        entry["report"] = rep.to_dict()
        out.append(entry)
    return out


def distilled_coverage(systems: dict[str, dict[str, Any]], eval_prints: set[str]) -> None:
    """Set ``distilled_coverage`` on each distilled adapter of ``systems``: the share of the evaluation set's
    chunk text (``eval_prints``, :func:`core.distill.text_fingerprints`) among the chunks it was distilled
    over (:func:`core.distill.read_ranked`). A distilled adapter is fitted to the documents it ranked; below
    :data:`core.carryover.MIN_DISTILLED_COVERAGE` the caveats say so. Other systems get nothing."""
    for info in systems.values():
        folder = info.pop("_folder", None)
        if not folder:
            continue
        from .distill import coverage, read_ranked  # an adapter system: torch is loaded to run it anyway

        ranked = read_ranked(folder)
        if ranked is not None and (cov := coverage(eval_prints, ranked)) is not None:
            info["distilled_coverage"] = cov


def build_context(
    ws: Workspace,
    eval_ds: QADataset,
    eval_name: str,
    named: Sequence[tuple[str, dict]],
    base_embedder: Embedder,
    dataset_id: str | None = None,
    path: str | None = None,
    top_k: int = 5,
    threshold: float = NEAR_DUPLICATE_COSINE,
) -> dict[str, Any]:
    """Everything the report states besides the numbers (see the module docstring)."""
    from .launch import embedder_name

    systems = describe_systems(ws, named, eval_dataset_id=dataset_id, eval_path=path)
    # the evaluation set's text fingerprints: which of it distilled adapters ranked
    if any(i.get("_folder") for i in systems.values()):
        from .distill import text_fingerprints  # an adapter is compared: torch is loaded anyway

        distilled_coverage(systems, text_fingerprints(eval_ds.corpus.values()))
    base_spec = next((s.get("spec") for _, s in named if s.get("kind") == "base"), "default")
    eval_info = eval_set_info(ws, eval_ds, eval_name, dataset_id=dataset_id, path=path)
    if base_embedder is not None and any(i.get("train_set") for i in systems.values()):
        # whether its chunks are longer than the base model reads: where the distil recipe gained over the
        # question-trained adapter (core.distill.LONG_CHUNKS_SHARE); Compare points to it only there
        from .distill import asked_texts, long_chunk_share  # an adapter is compared: torch is loaded anyway

        eval_info["long_chunk_share"] = long_chunk_share(asked_texts(eval_ds), base_embedder)
    return {
        "created_at": time.time(),
        "base_model": embedder_name(base_spec),
        "top_k": top_k,
        "eval_set": eval_info,
        "systems": systems,
        "leakage": leakage_by_training_set(ws, eval_ds, systems, base_embedder, threshold=threshold),
        "leak_threshold": threshold,
    }


def leaked_ids(context: dict[str, Any], mode: str = "questions") -> set[str]:
    """Evaluation query ids leaked from any adapter's training set (see :meth:`LeakageReport.leaked`)."""
    out: set[str] = set()
    for entry in (context or {}).get("leakage") or []:
        if entry.get("report"):
            out |= LeakageReport.from_dict(entry["report"]).leaked(mode)
    return out


def exclude_leaked(cmp, context: dict[str, Any], mode: str = "questions"):
    """The comparison re-computed without the leaked questions, and its context noting the exclusion."""
    ids = leaked_ids(context, mode) & set(cmp.results[cmp.baseline].query_ids)
    new_cmp = cmp.excluding(ids) if ids else cmp
    ctx = dict(context)
    ctx["excluded"] = {"mode": mode, "n": len(ids), "of": cmp.n_queries}
    return new_cmp, ctx


def comparison_context(ws: Workspace, cmp, extra: dict[str, Any]) -> dict[str, Any]:
    """The saved context of a comparison; for one saved before contexts existed, rebuilt from its
    dataset and systems when they still exist (else a minimal one from the comparison itself)."""
    if extra.get("context"):
        return extra["context"]
    from .launch import build_systems, named_specs

    specs = [s for s in extra.get("systems") or [] if s.get("kind") != "base"]
    embedder = extra.get("embedder", "default")
    ds = None
    if extra.get("dataset_id"):
        from .datasets import load_dataset

        try:
            ds = load_dataset(ws, extra["dataset_id"])
        except Exception:
            ds = None
    try:
        named = named_specs(ws, specs, embedder=embedder)
    except ValueError:
        named = []
    if ds is None or [n for n, _ in named] != list(cmp.results):
        return {
            "base_model": embedder_label(embedder),
            "top_k": cmp.top_k,
            "eval_set": {"name": cmp.dataset_name, "n_queries": cmp.n_queries, "sources": {}, "documents": []},
            "systems": {},
            "leakage": [],
        }
    base = build_systems(ws, [], embedder=embedder)
    return build_context(
        ws, ds, cmp.dataset_name, named, next(iter(base.values())), dataset_id=extra["dataset_id"], top_k=cmp.top_k
    )


def embedder_label(spec: str) -> str:
    from .launch import embedder_name

    return embedder_name(spec)
