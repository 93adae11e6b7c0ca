"""Full fine-tune of a sentence-transformers base model: the expensive reference for the adapters.

An adapter changes query vectors only, so the chunk index stays as it is. A full fine-tune
changes every weight of the model, so **every chunk of the corpus must be embedded again** with
the new model (and every query) before it can be used. The result records that price (training
seconds, chunks to re-embed, an estimate of the re-embedding time measured on this machine) so a
comparison shows it beside the cheap adapter. It is a reference, not a ceiling: measured on the
shared Lyft questions it carried to another company's filing, where the question-trained adapter
gained about nothing, and gained less than that adapter on new questions about its own training
chunks (bench/README, "Both lengths on first questions and on a new kind of text").

Built on sentence-transformers' own trainer (``SentenceTransformerTrainer``) with
``MultipleNegativesRankingLoss`` (in-batch negatives) or its cached variant, and the
``NO_DUPLICATES`` batch sampler: a chunk's text appears at most once per batch, so sibling
questions of one chunk never make their own positive a negative. The model is saved as a
sentence-transformers folder (``model.save``) plus ``adapterlab_finetune.json`` (settings, cost
and a fingerprint of the weights, which gives the folder its own embedding-cache identity).

Example::

    result = finetune(train_ds, "default", "models/ft", epochs=1)
    emb = resolve_embedder(str(result.out_dir), workspace=ws)   # cached, like any embedder
    result.cost()   # {"train_seconds": ..., "chunks_to_reembed": ..., "reembed_seconds_estimate": ...}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .datasets import QADataset
from .hashing import update_from_file
from .progress import Progress
from .workspace import atomic_write_json

Callback = Callable[[dict[str, Any]], None]

MARKER = "adapterlab_finetune.json"
#: the words :attr:`FinetuneConfig.attention_dropout` takes besides a rate
ATTENTION_DROPOUT_WORDS = ("auto", "model")
LOSSES = ("mnrl", "cached_mnrl")
#: The weight files a sentence-transformers folder may hold (hashed into the fingerprint).
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_ESTIMATE_SAMPLE = 32


class FinetuneError(ValueError):
    """A fine-tune request that cannot run; the message says what to change."""


@dataclass(slots=True)
class FinetuneConfig:
    """The settings of a fine-tune run (what :func:`finetune` takes besides data, model and folder).

    Defaults: one epoch, batch 32 (31 in-batch negatives per question), AdamW lr 2e-5 with 10%
    linear warm-up: sentence-transformers' usual starting point for a small model.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    seed: int = 0
    loss: str = "mnrl"
    warmup_ratio: float = 0.1
    device: str = "auto"
    #: tokens of each text the saved model reads (0: the base model's own length). Training runs at the base
    #: model's length either way; a longer read lets the re-embedded index see more of long chunks (capped at
    #: the model's position limit). bench/README, "Both lengths on first questions and on a new kind of text".
    read_tokens: int = 0
    #: when offline pseudo-queries and written questions ask about separate chunks
    #: (:func:`core.training.source_groups`), each batch holds one kind, so in-batch negatives never set one kind's
    #: phrasing against the other's chunks (the adapter's ``TrainConfig.separate_sources``, on by default there).
    #: Needs the questions' sources (the workspace's record). Off by default: the adapter lost 4.2 hit@5 to the pool
    #: where the fine-tune gained the same either way (bench/README, "Offline and written questions on separate
    #: chunks").
    separate_sources: bool = False
    #: dropout on the attention probabilities while training: a rate, ``"model"`` (the model's own, 0.1 for the
    #: default) or ``"auto"``: 0 on a CPU, the model's own elsewhere. PyTorch's fused CPU attention kernel has no
    #: dropout, so on a CPU any attention dropout sends every layer to the unfused path: a step takes about 1.5 times
    #: as long. The model's other dropout stays. bench/README, "The fine-tune without attention dropout on a CPU".
    attention_dropout: float | str = "auto"

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise FinetuneError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.epochs < 1:
            raise FinetuneError("epochs must be >= 1")
        if self.batch_size < 2:
            raise FinetuneError("batch_size must be >= 2: the other chunks of a batch are the negatives")
        if not self.lr > 0:
            raise FinetuneError("lr must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise FinetuneError("warmup_ratio must be in [0, 1)")
        if self.read_tokens < 0:
            raise FinetuneError("read_tokens must be >= 0 (0: the base model's own input length)")
        rate = self.attention_dropout
        if rate not in ATTENTION_DROPOUT_WORDS and not (
            isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 <= rate < 1
        ):
            raise FinetuneError(f"attention_dropout must be a rate in [0, 1), 'auto' or 'model', got {rate!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinetuneConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise FinetuneError(f"unknown fine-tune setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class FinetuneResult:
    """What :func:`finetune` did and what it costs.

    ``out_dir`` holds a sentence-transformers folder (``None`` only when cancelled before the
    first step). ``n_corpus_chunks`` is the number of chunks that must be re-embedded with the
    new model before it can serve searches; ``reembed_seconds_estimate`` extrapolates a timed
    sample of them on this machine.
    """

    out_dir: Path | None
    seconds: float
    base_model: str
    steps: int
    epochs: int
    n_train_queries: int
    n_corpus_chunks: int
    reembed_seconds_estimate: float | None
    fingerprint: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    cancelled: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    #: the saved model's input length when ``read_tokens`` changed it from the base model's, else ``None``
    read_tokens: int | None = None
    #: training pairs per batch kind (``{"offline": n, "written": m}``) when each batch held one kind
    #: (``separate_sources``), else ``None``
    batches: dict[str, int] | None = None

    def cost(self) -> dict[str, Any]:
        return {
            "train_seconds": round(self.seconds, 3),
            "chunks_to_reembed": self.n_corpus_chunks,
            "reembed_seconds_estimate": None
            if self.reembed_seconds_estimate is None
            else round(self.reembed_seconds_estimate, 1),
            **({"read_tokens": self.read_tokens} if self.read_tokens else {}),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "kind": "finetune",
            "base_model": self.base_model,
            "out_dir": str(self.out_dir) if self.out_dir else None,
            "seconds": round(self.seconds, 3),
            "steps": self.steps,
            "epochs": self.epochs,
            "n_train_queries": self.n_train_queries,
            "cost": self.cost(),
            "fingerprint": self.fingerprint,
            "cancelled": self.cancelled,
            **({"batches": self.batches, "batches_note": batches_note(self.batches)} if self.batches else {}),
        }


def batches_note(batches: dict[str, int] | None) -> str:
    """One sentence on a fine-tune whose batches each held one kind of question ("" otherwise)."""
    if not batches:
        return ""
    from .train_config import SEPARATE_SOURCES_NOTE

    return (
        f"{SEPARATE_SOURCES_NOTE}: each batch held one kind ({batches.get('offline', 0):,} offline, "
        f"{batches.get('written', 0):,} written questions), so in-batch negatives never set one kind's phrasing "
        "against the other's chunks"
    )


def cost_label(cost: dict[str, Any] | None) -> str:
    """How a fine-tuned system is labelled wherever it is compared: its price in the name, and its input
    length when it reads more (or less) than the base model (``cost`` as :meth:`FinetuneResult.cost` gives it,
    in a run's result)."""
    cost = cost or {}
    n_chunks, read = cost.get("chunks_to_reembed"), cost.get("read_tokens")
    name = f"full fine-tune, reads {read} tokens" if read else "full fine-tune"
    return f"{name} (re-embeds {n_chunks:,} chunks)" if n_chunks is not None else f"{name} (re-embeds the corpus)"


def system_label(name: str, cost: dict[str, Any] | None) -> str:
    """A fine-tune's name where it is compared: ``name · cost_label``, or, for a name that already says "full
    fine-tune" (the default run name), only what the label adds ("full fine-tune · lr 2e-05 · 1 ep · re-embeds
    2,538 chunks"), not the words twice."""
    if "full fine-tune" not in name:
        return f"{name} · {cost_label(cost)}"
    cost = cost or {}
    n_chunks, read = cost.get("chunks_to_reembed"), cost.get("read_tokens")
    parts = [f"reads {read} tokens"] if read else []
    parts.append(f"re-embeds {n_chunks:,} chunks" if n_chunks is not None else "re-embeds the corpus")
    return f"{name} · {', '.join(parts)}"


def resolve_base_path(base_model: str) -> str:
    """A sentence-transformers name or folder for ``base_model``; API embedders are refused."""
    spec = (base_model or "default").strip()
    if spec.startswith("openai:"):
        raise FinetuneError(
            f"{spec!r} is an embeddings API: its weights are not here to fine-tune. A full fine-tune needs a "
            "sentence-transformers base model ('default' or a local model); adapters work on API embedders."
        )
    if spec.startswith("st:"):
        spec = spec[3:]
    from .onnx_embedder import split_backend

    spec = split_backend(spec)[0]  # a fine-tune trains the torch weights, whatever backend embeds
    if spec in ("default", ""):
        from .embedders import bundled_model_path

        return bundled_model_path()
    return spec


def read_lengths(base_model: str) -> tuple[int | None, int | None]:
    """(the input length ``base_model`` reads, the most its position table allows) for a local model folder, as
    the saved model's ``read_tokens`` can choose between them; ``(None, None)`` when that cannot be read here."""
    from .onnx_embedder import OnnxBackendError, position_limit, read_pipeline

    try:
        path = resolve_base_path(base_model)
    except FinetuneError:
        return None, None
    if not os.path.isdir(path):
        return None, None
    try:
        own = read_pipeline(path).get("max_seq_length")
    except OnnxBackendError:
        own = None
    return own, position_limit(path)


def weights_fingerprint(folder: str | Path) -> str:
    """sha256 over the weight files of a model folder (names and bytes): changes when the model does."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in _WEIGHT_SUFFIXES:
            digest.update(p.relative_to(folder).as_posix().encode())
            update_from_file(digest, p)
    return digest.hexdigest()


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The ``adapterlab_finetune.json`` of a fine-tuned folder, or None for any other folder."""
    p = Path(folder) / MARKER
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pair_ids(ds: QADataset) -> list[tuple[str, str]]:
    """(question id, its first relevant chunk id) for each question with a chunk in the corpus, in file order."""
    pairs = []
    for qid in ds.queries:
        docs = [d for d in ds.relevant_docs.get(qid, []) if d in ds.corpus]
        if docs:
            pairs.append((qid, docs[0]))
    return pairs


def training_pairs(ds: QADataset, query_prefix: str = "", passage_prefix: str = "") -> tuple[list[str], list[str]]:
    """(anchor, positive) texts: each question with its first relevant chunk (as adapter training does)."""
    pairs = _pair_ids(ds)
    return [query_prefix + ds.queries[q] for q, _ in pairs], [passage_prefix + ds.corpus[c] for _, c in pairs]


def batch_kinds(ds: QADataset, sources: dict[str, str] | None) -> list[str] | None:
    """Each training pair's batch kind (``"offline"`` or ``"written"``, :func:`training_pairs`' order) when ``ds``
    mixes offline pseudo-queries and written questions on separate chunks (:func:`core.training.source_groups`),
    else None. A question is ``offline`` when its recorded source is; any other question (an LLM's, imported, by
    hand, or without a record) is ``written``: one phrasing per batch is what keeps in-batch negatives from
    teaching each phrasing its own chunks."""
    from .training import OFFLINE, WRITTEN, source_groups

    if not sources or not source_groups(ds, list(ds.queries), sources):
        return None
    return [OFFLINE if sources.get(q) == OFFLINE else WRITTEN for q, _ in _pair_ids(ds)]


def finetune(
    train_dataset: QADataset,
    base_model: str,
    out_dir: str | Path,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 2e-5,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    callback: Callback | None = None,
    loss: str = "mnrl",
    warmup_ratio: float = 0.1,
    device: str = "auto",
    query_prefix: str = "",
    passage_prefix: str = "",
    corpus_size: int | None = None,
    read_tokens: int = 0,
    separate_sources: bool = False,
    attention_dropout: float | str = "auto",
    question_sources: dict[str, str] | None = None,
) -> FinetuneResult:
    """Fine-tune every weight of ``base_model`` on ``train_dataset``; save it in ``out_dir``.

    Args:
        train_dataset: question -> chunk pairs; each question trains with its first relevant chunk.
        base_model: ``default`` (the bundled all-MiniLM-L6-v2), a sentence-transformers name or
            local folder. ``openai:...`` is refused (:class:`FinetuneError`).
        out_dir: the sentence-transformers folder to write (replaced if it exists).
        epochs, batch_size, lr, seed, warmup_ratio: the trainer's settings. ``batch_size`` is
            also the number of in-batch negatives + 1.
        loss: ``mnrl`` (MultipleNegativesRankingLoss) or ``cached_mnrl`` (its gradient-cached
            variant: large batches at small-batch memory).
        progress: ``(step, total_steps, message)`` after each optimizer step.
        cancel: set it to stop after the current step; what was trained so far is saved.
        callback: history events as adapter training emits them: ``{"type": "step", "step",
            "epoch", "loss", "lr"}``, ``{"type": "epoch", "epoch", "step", "train_loss", "val": None,
            "best": False}``, ``{"type": "phase", "message"}``, and at the end ``{"type": "cost", ...}``.
        query_prefix / passage_prefix: put before questions / chunks (E5, BGE), as the embedder will.
        corpus_size: chunks that must be re-embedded with the new model (default: the dataset's
            corpus; a workspace passes its whole chunk count).
        read_tokens: the input length the saved model reads (0: the base model's own), capped at its
            position limit. Training runs at the base model's length either way.
        separate_sources / question_sources: with each question's source (question id -> ``"offline"``,
            ``"llm"``, ...: the workspace's record), a set that mixes offline pseudo-queries and written questions
            on separate chunks trains with one kind per batch (:func:`batch_kinds`; sentence-transformers'
            multi-dataset batches, in proportion to each kind's size). Without sources, or off (the default), one
            pool.
        attention_dropout: the attention-probability dropout while training (:attr:`FinetuneConfig.attention_dropout`:
            a rate, ``"model"`` or ``"auto"``, 0 on a CPU). The saved model's config and the run's settings record it.
    """
    FinetuneConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        loss=loss,
        warmup_ratio=warmup_ratio,
        device=device,
        read_tokens=read_tokens,
        separate_sources=separate_sources,
        attention_dropout=attention_dropout,
    ).validate()
    path = resolve_base_path(base_model)
    anchors, positives = training_pairs(train_dataset, query_prefix, passage_prefix)
    if not anchors:
        raise FinetuneError("no training questions with a chunk: generate or import questions first")
    if len(set(positives)) < 2:
        raise FinetuneError("a fine-tune needs questions about at least two different chunks (in-batch negatives)")
    kinds = batch_kinds(train_dataset, question_sources) if separate_sources else None

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and read_marker(out_dir) is None)):
        raise FinetuneError(
            f"{out_dir} exists and is not a fine-tuned model folder: choose an empty or new folder "
            "(a previous fine-tune's folder is replaced)"
        )
    t0 = time.time()
    n_chunks = int(corpus_size if corpus_size is not None else len(train_dataset.corpus))
    settings = {
        "base_model": base_model,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "loss": loss,
        "warmup_ratio": warmup_ratio,
        "query_prefix": query_prefix,
        "passage_prefix": passage_prefix,
        "read_tokens": read_tokens,
        "separate_sources": separate_sources,
    }
    history: list[dict[str, Any]] = []

    def record(event: dict[str, Any]) -> None:
        history.append(event)
        if callback:
            callback(event)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.path.isdir(path):  # a local folder needs no hub: never let a load try to reach one
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .embedders import pick_device

    dev = pick_device(device)
    rate = attention_rate(attention_dropout, dev)
    settings["attention_dropout"] = "model" if rate is None else rate
    state = {"steps": 0, "epoch_losses": [], "epoch": 1, "total": 0}
    if cancel is None or not cancel.is_set():
        with _quiet():
            record({"type": "phase", "message": f"loading the base model ({base_model})"})
            model = _load_trainable(path, dev, rate)
            _train(
                model,
                anchors,
                positives,
                kinds,
                state,
                record,
                dev,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                loss=loss,
                warmup_ratio=warmup_ratio,
                progress=progress,
                cancel=cancel,
            )
    cancelled = cancel is not None and cancel.is_set()
    train_seconds = time.time() - t0

    fingerprint = estimate = read = None
    saved: Path | None = None
    if state["steps"] > 0:
        read = _set_read_length(model, read_tokens)
        record({"type": "phase", "message": f"saving the fine-tuned model to {out_dir}"})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with _quiet():
            model.save(str(out_dir), create_model_card=False)
        fingerprint = weights_fingerprint(out_dir)
        estimate = _reembed_estimate(model, list(train_dataset.corpus.values()), passage_prefix, n_chunks)
        saved = out_dir
    result = FinetuneResult(
        out_dir=saved,
        seconds=train_seconds,
        base_model=base_model,
        steps=state["steps"],
        epochs=epochs,
        n_train_queries=len(anchors),
        n_corpus_chunks=n_chunks,
        reembed_seconds_estimate=estimate,
        fingerprint=fingerprint,
        history=history,
        cancelled=cancelled,
        settings=settings,
        read_tokens=read,
        batches={k: kinds.count(k) for k in sorted(set(kinds))} if kinds else None,
    )
    record({"type": "cost", **result.cost()})
    if saved is not None:
        atomic_write_json(saved / MARKER, {**result.summary(), "settings": settings, "created_at": time.time()})
    return result


def _train(
    model,
    anchors,
    positives,
    kinds,
    state,
    record,
    dev,
    *,
    epochs,
    batch_size,
    lr,
    seed,
    loss,
    warmup_ratio,
    progress,
    cancel,
) -> None:
    """One ``SentenceTransformerTrainer.train()``; its events become AdapterLab history events. ``kinds`` (one per
    pair, or None): one dataset per kind, so each batch holds one kind (:func:`batch_kinds`)."""
    import datasets as hf_datasets
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers, MultiDatasetBatchSamplers
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    class QuietTrainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict):  # no model card: skip its example encoding
            pass

    class Events(TrainerCallback):
        """Trainer events -> history events, progress and cancellation."""

        def on_train_begin(self, args, st, control, **kw):
            state["total"] = int(st.max_steps or 0)
            state["t_begin"] = time.time()
            record(
                {
                    "type": "phase",
                    "message": f"fine-tuning on {len(anchors)} question/chunk pairs: "
                    f"{state['total']} step{'s' * (state['total'] != 1)} of batch {batch_size}"
                    + (", one kind of question per batch (offline / written)" if kinds else ""),
                }
            )

        def on_epoch_begin(self, args, st, control, **kw):
            state["epoch_losses"] = []

        def on_log(self, args, st, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs:  # the end-of-training summary (train_runtime, ...)
                return
            lv = float(logs["loss"])
            state["epoch_losses"].append(lv)
            record(
                {
                    "type": "step",
                    "step": int(st.global_step),
                    "epoch": state["epoch"],
                    "loss": lv,
                    "lr": float(logs.get("learning_rate", lr)),
                }
            )

        def on_step_end(self, args, st, control, **kw):
            state["steps"] = int(st.global_step)
            if progress:
                progress(
                    st.global_step,
                    state["total"] or st.global_step,
                    f"epoch {state['epoch']}/{epochs} · step {st.global_step}/{state['total']}"
                    + _time_left(time.time() - state["t_begin"], st.global_step, state["total"]),
                )
            if cancel is not None and cancel.is_set():
                control.should_training_stop = True

        def on_epoch_end(self, args, st, control, **kw):
            losses = state["epoch_losses"]
            if losses:
                record(
                    {
                        "type": "epoch",
                        "epoch": state["epoch"],
                        "step": int(st.global_step),
                        "train_loss": float(sum(losses) / len(losses)),
                        "val": None,
                        "best": False,
                    }
                )
            state["epoch"] += 1

    if kinds:  # one dataset per kind, rows in file order: the multi-dataset sampler draws each batch from one
        data = hf_datasets.DatasetDict(
            {
                k: hf_datasets.Dataset.from_dict(
                    {
                        "anchor": [a for a, kk in zip(anchors, kinds, strict=True) if kk == k],
                        "positive": [p for p, kk in zip(positives, kinds, strict=True) if kk == k],
                    }
                )
                for k in sorted(set(kinds))  # a fixed order: the sampler's draws do not depend on the file's
            }
        )
    else:
        data = hf_datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    loss_fn = (
        MultipleNegativesRankingLoss(model)
        if loss == "mnrl"
        else CachedMultipleNegativesRankingLoss(model, mini_batch_size=min(32, batch_size))
    )
    scratch = Path(tempfile.mkdtemp(prefix="adapterlab-ft-"))
    try:
        args = SentenceTransformerTrainingArguments(
            output_dir=str(scratch),
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            warmup_steps=warmup_ratio,
            seed=seed,
            data_seed=seed,
            # a chunk's text at most once per batch: sibling questions never make their positive a negative
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            # with one dataset per kind: batches drawn from each in proportion to its size
            multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=dev == "cpu",
            dataloader_num_workers=0,
        )
        trainer = QuietTrainer(model=model, args=args, train_dataset=data, loss=loss_fn, callbacks=[Events()])
        for cb in (PrinterCallback, ProgressCallback):  # they print to stdout (a --json CLI must stay clean)
            trainer.remove_callback(cb)
        trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _time_left(elapsed: float, done: int, total: int) -> str:
    """`` · about 3 min 05 s left`` at the mean pace of the steps so far (a CPU step takes seconds)."""
    from .embedders import format_eta

    if done <= 0 or done >= total:
        return ""
    return f" · about {format_eta(elapsed / done * (total - done))} left"


@contextlib.contextmanager
def _quiet():
    """No tqdm bars from transformers / datasets while loading, training and saving (the caller reports progress)."""
    import datasets as hf_datasets
    from transformers.utils import logging as hf_logging

    bars, ds_bars = hf_logging.is_progress_bar_enabled(), hf_datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    hf_datasets.disable_progress_bars()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        if ds_bars:
            hf_datasets.enable_progress_bars()


#: the names transformers' configs give the attention-probability dropout (BERT, RoBERTa, MPNet, ...; DistilBERT)
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def attention_rate(setting: float | str, device: str) -> float | None:
    """The attention dropout a fine-tune on ``device`` trains with for :attr:`FinetuneConfig.attention_dropout`
    (``None``: the model's own). ``auto`` is 0 on a CPU only: the speed it buys is the CPU kernel's."""
    if setting == "auto":
        return 0.0 if str(device).startswith("cpu") else None
    return None if setting == "model" else float(setting)


def _load_trainable(path: str, device: str, attention_dropout: float | None = None):
    """A fresh model instance (never the embedders' shared, cached one: training changes it), its attention
    dropout set to ``attention_dropout`` (``None``: the model's own). Dropout modules take their rate when the model
    is built, so a model whose config says otherwise is loaded again with the rate in its config."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path, device=device)
        if attention_dropout is None:
            return model
        config = getattr(getattr(model[0], "auto_model", None), "config", None)
        keys = {k: getattr(config, k) for k in ATTENTION_DROPOUT_KEYS if isinstance(getattr(config, k, None), float)}
        if all(v == attention_dropout for v in keys.values()):
            return model
        del model
        return SentenceTransformer(path, device=device, config_kwargs=dict.fromkeys(keys, attention_dropout))
    except Exception as exc:
        raise FinetuneError(
            f"Could not load the sentence-transformers model {path!r} to fine-tune it: {exc}. Give a local "
            "model folder or a model already in the Hugging Face cache (this machine may have no network)."
        ) from exc


def _set_read_length(model, read_tokens: int) -> int | None:
    """Make ``model`` read ``read_tokens`` tokens (capped at its position limit by the rule a distillation's
    teacher uses, :func:`core.onnx_embedder.position_limit`; sentence-transformers saves the length with it);
    the new length when it differs from the one it was trained at, else ``None``."""
    from .onnx_embedder import positions_cap

    if not read_tokens:
        return None
    try:
        limit = positions_cap(model[0].auto_model.config.max_position_embeddings)
    except (AttributeError, IndexError, TypeError):
        limit = None
    n = min(read_tokens, limit) if limit else read_tokens
    if n == model.max_seq_length:
        return None
    model.max_seq_length = n
    return n


def _reembed_estimate(model, texts: list[str], prefix: str, n_chunks: int) -> float | None:
    """Seconds to embed ``n_chunks`` chunks with ``model``, from a timed sample of the training chunks."""
    sample = [prefix + t for t in texts[:_ESTIMATE_SAMPLE]]
    if not sample or n_chunks <= 0:
        return None
    model.eval()
    t = time.time()
    model.encode(sample, batch_size=32, show_progress_bar=False, convert_to_numpy=True)
    per_chunk = (time.time() - t) / len(sample)
    return per_chunk * n_chunks


def describe_cost(cost: dict[str, Any] | None) -> str:
    """One plain sentence about what a fine-tune cost and what it still costs to use."""
    if not cost:
        return "A full fine-tune re-embeds the whole corpus with the new model before it can be used."
    n = cost.get("chunks_to_reembed")
    est = cost.get("reembed_seconds_estimate")
    text = f"Training took {duration_text(cost.get('train_seconds'))}. Using the model means re-embedding "
    text += f"all {n:,} chunks" if n else "the whole corpus"
    if est is not None:  # "under 1 s" reads wrong after "about"
        text += f" ({'' if est < 1 else 'about '}{duration_text(est)} on this machine)"
    text += " and rebuilding the vector index; an adapter needs neither."
    if cost.get("read_tokens"):
        text += (
            f" The saved model reads {cost['read_tokens']} tokens of each text; it was trained at the base "
            "model's length."
        )
    return text


def duration_text(s: float | None) -> str:
    """Seconds in words a stakeholder reads at a glance: '40 s', '7.5 min', '2.1 h'."""
    if s is None or not math.isfinite(s):
        return "?"
    if s < 1:
        return "under 1 s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
