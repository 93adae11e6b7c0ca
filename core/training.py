"""Adapter training on cached embeddings.

The base embedder runs once per unique text (through the workspace cache); every epoch after
that is tensor arithmetic on those vectors, so an epoch takes milliseconds.

Recipe (GUIDE section 5): identity-initialised adapter; shuffled batches with no two sibling
questions (same chunk) in one batch; a validation split taken from the training data *by
chunk*; validation hit@k / MRR@k every epoch; the best state kept, with the untrained identity
(epoch 0) as a candidate, so the result is never worse than the base model on validation.

Losses:

* ``corpus_softmax`` (default): cross-entropy over the *whole* training corpus, cosine
  similarity / ``temperature``; every other chunk is a negative. Cheap because the corpus is
  a cached matrix.
* ``in_batch``: LlamaIndex's loss (multiple-negatives ranking over the batch's own chunks,
  cosine similarity scaled by ``1 / temperature``, LlamaIndex's scale 20 = temperature 0.05).

Example::

    cfg = TrainConfig(adapter="linear", epochs=8)
    result = train(train_ds, CachedEmbedder(...), cfg, out_dir="runs/r1")
    result.best_epoch, result.val_history[-1]
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import adapters as adapters_mod
from .datasets import QADataset
from .embedders import pick_device
from .evaluation import EmbeddedDataset, embed_dataset, rank_embeddings

Callback = Callable[[dict[str, Any]], None]

LOSSES = ("corpus_softmax", "in_batch")
DEFAULT_LR = {"linear": 1e-4, "two-layer": 5e-4}
FALLBACK_LR = 1e-4
OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


class TrainingError(ValueError):
    """A training request that cannot run; the message says what to change."""


class TrainingCancelled(Exception):
    pass


#: One line of help per :class:`TrainConfig` field (the dashboard shows these next to each input).
FIELD_HELP: dict[str, str] = {
    "adapter": "Which adapter to train on top of the frozen embedder.",
    "adapter_kwargs": "Constructor overrides, e.g. hidden_features or bias.",
    "loss": "corpus_softmax: softmax over the whole training corpus (AdapterLab); in_batch: LlamaIndex's loss.",
    "epochs": "Passes over the training questions; validation runs after each one.",
    "batch_size": "Questions per optimizer step (siblings of one chunk never share a batch).",
    "lr": "Learning rate (default 1e-4 linear, 5e-4 two-layer).",
    "optimizer": "adamw, adam or sgd.",
    "weight_decay": "L2 penalty on the adapter weights (AdamW style).",
    "warmup_ratio": "Share of steps with a linear learning-rate warm-up.",
    "temperature": "Softmax temperature on cosine similarities (LlamaIndex's scale 20 = 0.05).",
    "seed": "Makes the split, the shuffling and the initialisation repeatable.",
    "device": "auto (cuda, mps, cpu) or a torch device string.",
    "val_fraction": "Share of training chunks held out for model selection when no validation set is chosen.",
    "select_metric": "Validation metric that picks the best epoch.",
    "top_k": "k of the validation metrics (hit@k, MRR@k).",
    "checkpoint_every": "Save a checkpoint every N optimizer steps (0 = at each epoch end).",
    "keep_best": "Keep the best validated state (the untrained identity included), never worse than base.",
    "patience": "Stop after this many epochs without validation gain (0 = never).",
}


@dataclass(slots=True)
class TrainConfig:
    """Everything that defines a training run. Defaults are AdapterLab's recipe.

    Attributes:
        adapter: ``linear``, ``two-layer``, a registered name or ``pkg.mod:Class``.
        adapter_kwargs: constructor overrides (``bias``, ``hidden_features``, ...).
        loss: ``corpus_softmax`` or ``in_batch`` (LlamaIndex's).
        epochs, batch_size, optimizer (adamw | adam | sgd), weight_decay.
        lr: learning rate; None = the adapter's default (:data:`DEFAULT_LR`: 1e-4 linear,
            5e-4 two-layer, measured on the Lyft 10-K questions).
        warmup_ratio: share of steps with a linear learning-rate warm-up.
        temperature: softmax temperature on cosine similarities (scale = 1 / temperature).
        seed: makes the split, the shuffling and the init repeatable.
        device: ``auto`` (cuda, mps, cpu) or a torch device string.
        val_fraction: share of training chunks (with their questions) held out for model
            selection when no validation dataset is given; 0 disables selection.
        select_metric: the validation metric that picks the best epoch (``mrr`` or ``hit``).
        top_k: k of the validation metrics.
        checkpoint_every: save a checkpoint every N optimizer steps (0 = at each epoch end).
        keep_best: restore the best validated state (identity included) at the end.
        patience: stop after this many epochs without validation improvement (0 = never).
    """

    adapter: str = "linear"
    adapter_kwargs: dict[str, Any] = field(default_factory=dict)
    loss: str = "corpus_softmax"
    epochs: int = 12
    batch_size: int = 32
    lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    temperature: float = 0.05
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.15
    select_metric: str = "mrr"
    top_k: int = 5
    checkpoint_every: int = 0
    keep_best: bool = True
    patience: int = 0

    @classmethod
    def llamaindex_defaults(cls, adapter: str = "linear", epochs: int = 4) -> "TrainConfig":
        """LlamaIndex's engine settings: AdamW lr 2e-5, batch 10, in-batch loss, scale 20, no selection."""
        return cls(
            adapter=adapter, loss="in_batch", epochs=epochs, batch_size=10, lr=2e-5, optimizer="adamw",
            warmup_ratio=0.1, temperature=0.05, val_fraction=0.0, keep_best=False,
        )

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.adapter, FALLBACK_LR)

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise TrainingError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.optimizer not in OPTIMIZERS:
            raise TrainingError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.epochs < 1:
            raise TrainingError("epochs must be >= 1")
        if self.batch_size < 2 and self.loss == "in_batch":
            raise TrainingError("in_batch loss needs batch_size >= 2 (the other chunks of the batch are the negatives)")
        if self.batch_size < 1:
            raise TrainingError("batch_size must be >= 1")
        if not (self.lr > 0):
            raise TrainingError("lr must be > 0")
        if not (self.temperature > 0):
            raise TrainingError("temperature must be > 0")
        if not (0 <= self.val_fraction < 0.9):
            raise TrainingError("val_fraction must be in [0, 0.9)")
        if not (0 <= self.warmup_ratio < 1):
            raise TrainingError("warmup_ratio must be in [0, 1)")
        if self.select_metric not in ("mrr", "hit", "ndcg"):
            raise TrainingError("select_metric must be mrr, hit or ndcg")
        if self.top_k < 1:
            raise TrainingError("top_k must be >= 1")
        if not isinstance(self.adapter_kwargs, dict) or "allow_custom_code" in self.adapter_kwargs:
            raise TrainingError("adapter_kwargs must be a JSON object of constructor arguments "
                                "(allow_custom_code is not one: it is the user's own choice)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise TrainingError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class TrainResult:
    adapter: torch.nn.Module
    out_dir: Path | None
    best_epoch: int  # 0 = the untrained identity won
    best_metrics: dict[str, float] | None
    base_metrics: dict[str, float] | None
    history: list[dict[str, Any]]
    checkpoints: list[str]
    cancelled: bool = False
    seconds: float = 0.0
    n_train_queries: int = 0
    n_val_queries: int = 0

    @property
    def val_history(self) -> list[dict[str, Any]]:
        return [h for h in self.history if h["type"] == "epoch"]

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "base_metrics": self.base_metrics,
            "checkpoints": self.checkpoints,
            "cancelled": self.cancelled,
            "seconds": round(self.seconds, 3),
            "n_train_queries": self.n_train_queries,
            "n_val_queries": self.n_val_queries,
            "out_dir": str(self.out_dir) if self.out_dir else None,
        }


def split_by_chunk(ds: QADataset, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Query ids for (train, val), grouping queries by their relevant chunks so no chunk's
    questions land on both sides (queries sharing any relevant chunk stay together)."""
    groups = ds.query_groups()
    keys = sorted(groups)
    rng = random.Random(seed)
    rng.shuffle(keys)
    n_val = int(round(len(keys) * val_fraction))
    if val_fraction > 0 and len(keys) >= 4:
        n_val = max(1, n_val)
    if n_val >= len(keys):
        n_val = len(keys) - 1
    val_ids = {q for k in keys[:n_val] for q in groups[k]}
    train = [q for q in ds.queries if q not in val_ids]
    val = [q for q in ds.queries if q in val_ids]
    return train, val


def sibling_free_batches(groups: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle example indices into batches in which no two examples share a group (chunk).

    ``groups[i]`` is the chunk of example ``i``. Greedy: walk a shuffled order, putting each
    example in the first open batch lacking its group. Batches are full except possibly the
    last few when one chunk has more questions than there are batches.
    """
    order = list(range(len(groups)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    seen: list[set[int]] = []
    open_from = 0
    for i in order:
        g = groups[i]
        placed = False
        for b in range(open_from, len(batches)):
            if len(batches[b]) < batch_size and g not in seen[b]:
                batches[b].append(i)
                seen[b].add(g)
                placed = True
                break
        if not placed:
            batches.append([i])
            seen.append({g})
        while open_from < len(batches) and len(batches[open_from]) >= batch_size:
            open_from += 1
    rng.shuffle(batches)
    return batches


def _val_metrics(adapter, qv: torch.Tensor, emb: EmbeddedDataset, rel: list[list[int]], top_k: int) -> dict[str, float]:
    adapter.eval()
    with torch.no_grad():
        out = adapter(qv).cpu().numpy()
    adapter.train()
    _, per_query, _, _ = rank_embeddings(out, emb.corpus_vecs, rel, top_k=top_k)
    return {k: float(v.mean()) for k, v in per_query.items()}


def _score(metrics: dict[str, float], select: str, top_k: int) -> tuple[float, float]:
    key = {"mrr": f"mrr@{top_k}", "hit": f"hit@{top_k}", "ndcg": "ndcg@10"}[select]
    tie = f"hit@{top_k}" if select != "hit" else f"mrr@{top_k}"
    return (round(metrics[key], 10), round(metrics[tie], 10))


def train(
    train_dataset: QADataset,
    embedder,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    val_dataset: QADataset | None = None,
    callback: Callback | None = None,
    cancel: threading.Event | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    allow_custom_code: bool = False,
) -> TrainResult:
    """Train an adapter for ``embedder`` on ``train_dataset``.

    Args:
        train_dataset: question -> chunk pairs (``QADataset``).
        embedder: the frozen base embedder; wrap it in ``CachedEmbedder`` so texts are embedded
            once across runs.
        config: :class:`TrainConfig` (defaults: AdapterLab's recipe).
        out_dir: where the final (best) adapter is saved in LlamaIndex's folder format.
        val_dataset: explicit validation data for model selection; default: ``val_fraction``
            of the training chunks with their questions.
        callback: receives dicts: ``{"type": "step", "step", "epoch", "loss", "lr"}``,
            ``{"type": "epoch", "epoch", "step", "train_loss", "val": {...}, "best": bool}``,
            ``{"type": "checkpoint", "step", "path"}``, ``{"type": "phase", "message"}``.
        cancel: set it to stop after the current step; the best state so far is saved.
        checkpoint_dir: checkpoints ``step_N`` go here (default ``out_dir/checkpoints``).
        allow_custom_code: the user's opt-in to import ``config.adapter`` when it is an import
            path (``pkg.mod:Class``); see :func:`core.adapters.resolve_adapter_class`.
    """
    config = config or TrainConfig()
    config.validate()
    t0 = time.time()
    emit = callback or (lambda e: None)
    history: list[dict[str, Any]] = []

    def record(event: dict[str, Any]) -> None:
        history.append(event)
        emit(event)

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = torch.device(pick_device(config.device))

    # ---- data -------------------------------------------------------------------------------
    if val_dataset is None and config.val_fraction > 0:
        train_q, val_q = split_by_chunk(train_dataset, config.val_fraction, config.seed)
    else:
        train_q, val_q = list(train_dataset.queries), []
    if not train_q:
        raise TrainingError("no training questions: generate or import questions first")

    record({"type": "phase", "message": f"embedding {len(train_dataset.corpus)} chunks and {len(train_dataset.queries)} questions"})
    emb = embed_dataset(train_dataset, embedder, progress=progress)
    dim = emb.query_vecs.shape[1]
    qpos = {q: i for i, q in enumerate(emb.query_ids)}
    npos = {n: i for i, n in enumerate(emb.node_ids)}

    if val_dataset is not None:
        val_emb = embed_dataset(val_dataset, embedder)
        val_rel = val_emb.relevant
        val_qv = torch.from_numpy(val_emb.query_vecs).to(device)
    elif val_q:
        val_emb = emb
        val_rel = [emb.relevant[qpos[q]] for q in val_q]
        val_qv = torch.from_numpy(emb.query_vecs[[qpos[q] for q in val_q]]).to(device)
    else:
        val_emb = None
        val_rel, val_qv = [], None
    n_val = 0 if val_emb is None else len(val_rel)

    tq_idx = [qpos[q] for q in train_q]
    train_qv = torch.from_numpy(emb.query_vecs[tq_idx]).to(device)
    targets = [npos[train_dataset.relevant_docs[q][0]] for q in train_q]
    target_t = torch.tensor(targets, dtype=torch.long, device=device)
    corpus = F.normalize(torch.from_numpy(emb.corpus_vecs).to(device), dim=-1)
    # other relevant chunks of a query are not negatives
    extra_pos = [
        # (never the target itself, should a dataset list it twice: its logit would become -inf)
        [npos[d] for d in train_dataset.relevant_docs[q][1:] if d in npos and npos[d] != npos[train_dataset.relevant_docs[q][0]]]
        for q in train_q
    ]

    # ---- model ------------------------------------------------------------------------------
    adapter = adapters_mod.build_adapter(config.adapter, dim, allow_custom_code=allow_custom_code,
                                         **config.adapter_kwargs).to(device)
    adapters_mod.check_adapter_fits(adapter, dim, where=f"adapter {config.adapter}")
    opt_cls = OPTIMIZERS[config.optimizer]
    opt_kwargs: dict[str, Any] = {"lr": config.lr}
    if config.optimizer != "sgd" or config.weight_decay:
        opt_kwargs["weight_decay"] = config.weight_decay
    optimizer = opt_cls(adapter.parameters(), **opt_kwargs)
    steps_per_epoch = math.ceil(len(train_q) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup = int(total_steps * config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0
    )
    ckpt_every = config.checkpoint_every  # 0: at each epoch end (epochs vary in steps when siblings spill)
    out_dir = Path(out_dir) if out_dir else None
    ckpt_root = Path(checkpoint_dir) if checkpoint_dir else (out_dir / "checkpoints" if out_dir else None)
    checkpoints: list[str] = []
    meta = {"embedder": getattr(embedder, "identity", "?"), "config": config.to_dict()}

    def save_ckpt(step: int) -> None:
        if ckpt_root is None:
            return
        path = ckpt_root / f"step_{step}"
        adapters_mod.save_adapter(adapter, path, step=step, **meta)
        checkpoints.append(str(path))
        record({"type": "checkpoint", "step": step, "path": str(path)})

    # ---- epoch 0: the identity is a candidate --------------------------------------------------
    best_state = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
    best_epoch = 0
    base_metrics = best_metrics = None
    if val_emb is not None and n_val:
        base_metrics = best_metrics = _val_metrics(adapter, val_qv, val_emb, val_rel, config.top_k)
        record({"type": "epoch", "epoch": 0, "step": 0, "train_loss": None, "val": base_metrics, "best": True})
    best_score = _score(best_metrics, config.select_metric, config.top_k) if best_metrics else None

    groups = targets
    step = 0
    cancelled = False
    stale = 0
    adapter.train()
    for epoch in range(1, config.epochs + 1):
        batches = sibling_free_batches(groups, config.batch_size, rng)
        losses = []
        for batch in batches:
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            idx = torch.tensor(batch, dtype=torch.long, device=device)
            q = F.normalize(adapter(train_qv[idx]), dim=-1)
            tgt = target_t[idx]
            if config.loss == "corpus_softmax":
                logits = q @ corpus.T / config.temperature
                for r, i in enumerate(batch):
                    if extra_pos[i]:
                        logits[r, extra_pos[i]] = float("-inf")
                loss = F.cross_entropy(logits, tgt)
            else:
                ctx = corpus[tgt]
                logits = q @ ctx.T / config.temperature
                loss = F.cross_entropy(logits, torch.arange(len(batch), device=device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            lv = float(loss.detach())
            losses.append(lv)
            record({"type": "step", "step": step, "epoch": epoch, "loss": lv, "lr": scheduler.get_last_lr()[0]})
            if ckpt_every and step % ckpt_every == 0:
                save_ckpt(step)
            if progress:
                progress(step, total_steps, f"epoch {epoch}/{config.epochs}")
        if cancelled:
            break
        if not ckpt_every:
            save_ckpt(step)
        train_loss = float(np.mean(losses)) if losses else None
        event = {"type": "epoch", "epoch": epoch, "step": step, "train_loss": train_loss, "val": None, "best": False}
        if val_emb is not None and n_val:
            metrics = _val_metrics(adapter, val_qv, val_emb, val_rel, config.top_k)
            event["val"] = metrics
            score = _score(metrics, config.select_metric, config.top_k)
            if score > best_score:
                best_score, best_metrics, best_epoch = score, metrics, epoch
                best_state = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
                event["best"] = True
                stale = 0
            else:
                stale += 1
        else:
            best_state = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
            best_epoch = epoch
        record(event)
        if config.patience and stale >= config.patience:
            record({"type": "phase", "message": f"early stop: no validation gain for {stale} epochs"})
            break

    if config.keep_best or cancelled:
        adapter.load_state_dict(best_state)
    adapter.eval()
    if out_dir is not None:
        adapters_mod.save_adapter(
            adapter, out_dir, best_epoch=best_epoch, best_val=best_metrics, base_val=base_metrics, **meta
        )
    return TrainResult(
        adapter=adapter.cpu(),
        out_dir=out_dir,
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        base_metrics=base_metrics,
        history=history,
        checkpoints=checkpoints,
        cancelled=cancelled,
        seconds=time.time() - t0,
        n_train_queries=len(train_q),
        n_val_queries=n_val,
    )


def list_checkpoints(path: str | Path) -> list[Path]:
    """``step_N`` folders under ``path`` (a checkpoint dir or an adapter dir with ``checkpoints/``), by step."""
    path = Path(path)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))
