"""Adapter training on cached embeddings.

The base embedder runs once per unique text (through the workspace cache); every epoch after
that is tensor arithmetic on those vectors, so an epoch takes milliseconds.

Recipe (GUIDE section 5, re-measured in bench/README.md): identity-initialised adapter;
shuffled batches with no two sibling questions (same chunk) in one batch; every chunk of the
training set is a negative (ingested chunks without questions only with
``unlabelled_negatives``: they would teach the adapter to avoid the chunks new questions ask
about); near-duplicates of the positive are never negatives (the false-negative guard); model
selection by k-fold cross-validation on all the training questions (:mod:`core.selection`): the
epochs, the shrinkage toward the identity (and, with ``lr_grid``, the learning rate) are chosen on
pooled out-of-fold results, the untrained identity is kept only when training does not help out
of fold, and the chosen setting is refit on every training question (then shrunk).
``selection="holdout"`` keeps the first release's single validation split (best epoch kept). On the
CPU the folds train side by side in threads (:func:`fold_workers`), each seeded on its own, so the
choice does not depend on how they were scheduled.

Losses live in :mod:`core.losses` (``corpus_softmax``, the default: a softmax over every chunk;
``in_batch``: LlamaIndex's); the trainer calls ``LOSSES[config.loss]``. The learning rate of each
step is :func:`get_lr` (linear warm-up, then constant).

Example::

    cfg = TrainConfig(adapter="linear", epochs=8)
    result = train(train_ds, CachedEmbedder(...), cfg, out_dir="runs/r1")
    result.best_epoch, result.val_history[-1]
"""

from __future__ import annotations

import functools
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import adapters as adapters_mod
from . import selection as sel
from .datasets import QADataset
from .embedders import pick_device
from .evaluation import EmbeddedDataset, FixedCorpusScorer, embed_dataset, rank_embeddings
from .losses import LOSSES, Loss, LossBatch
from .optim import OPTIMIZERS  # torch's update rules without importing torch._dynamo (see core.optim)
from .progress import Progress, in_phase
from .train_config import (  # noqa: F401
    DEFAULT_LR,
    FALLBACK_LR,
    FIELD_HELP,
    OPTIMIZER_NAMES,
    SELECTIONS,
    SEPARATE_SOURCES_NOTE,
    TrainConfig,
    TrainingError,
)
from .workspace import replace_folder

Callback = Callable[[dict[str, Any]], None]


SAMPLED_RANDOM = 4096  # random chunks per step when negatives are sampled
SAMPLED_HARD = 32  # mined hard negatives per question when negatives are sampled
_SEED_LOCK = threading.Lock()


class TrainingCancelled(Exception):
    pass


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
    cv: sel.CVResult | None = None
    filtered_out: int = 0
    negatives: str = ""
    n_pseudo_queries: int = 0  # offline pseudo-queries the final fit trained on (pseudo_queries)

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
            "selection": self.cv.to_dict() if self.cv else None,
            "filtered_out": self.filtered_out,
            "negatives": self.negatives,
            "n_pseudo_queries": self.n_pseudo_queries,
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


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup_steps``, then constant."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def get_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warm-up, then ``base_lr``."""
    return base_lr * warmup_factor(step, warmup_steps)


@dataclass
class _Problem:
    """Training tensors built once from the cached vectors: every fit and fold reuses them."""

    query_vecs: torch.Tensor  # (n, d) base query vectors of the training questions
    targets: torch.Tensor  # (n,) corpus row of each question's first relevant chunk
    corpus: torch.Tensor  # (m, d) normalised chunk vectors: every chunk is a negative
    excluded: list[torch.Tensor]  # per question: corpus rows that are never its negatives
    relevant: list[list[int]]  # per question: every relevant corpus row (for validation)
    hard: torch.Tensor | None  # (n, h) mined hard negatives (in_batch loss, or sampled negatives)
    corpus_np: np.ndarray
    sampled: bool = False  # corpus_softmax over sampled negatives instead of every chunk
    restricted: bool = False  # corpus_softmax over each question's mined hard negatives only
    excluded_mask: torch.Tensor | None = None  # (n, m) bool form of ``excluded`` where it is small
    groups: tuple[torch.Tensor, torch.Tensor] | None = None  # (per question, per chunk) source codes, 0 = shared

    def negatives_note(self) -> str:
        return self._negatives_note() + (self._groups_note() if self.groups is not None else "")

    def _groups_note(self) -> str:
        cg = self.groups[1]
        n_off, n_written = int((cg == SOURCE_CODES[OFFLINE]).sum()), int((cg == SOURCE_CODES[WRITTEN]).sum())
        return (
            f"; {SEPARATE_SOURCES_NOTE} ({n_off} offline-only, {n_written} "
            "written-only): each question's negatives are its own kind's chunks and the shared ones"
        )

    def _negatives_note(self) -> str:
        m = self.corpus.shape[0]
        if self.sampled:
            return (
                f"sampled: in-batch + {self.hard.shape[1]} mined hard negatives per question + "
                f"{min(SAMPLED_RANDOM, m)} random chunks per step, of {m} chunks"
            )
        if self.restricted:
            return f"the base model's top {self.hard.shape[1]} chunks per question (of {m})"
        return f"every chunk ({m})"


OFFLINE, WRITTEN = "offline", "written"
SOURCE_CODES = {OFFLINE: 1, WRITTEN: 2}  # 0: a chunk both kinds ask about, or none (every question's negative)


def source_groups(ds: QADataset, qids: list[str], sources: Mapping[str, str] | None) -> dict[str, str]:
    """Chunk id -> ``"offline"`` or ``"written"`` for the chunks that only offline pseudo-queries, or only
    written questions (an LLM's, imported, by hand), ask about, and the other chunks of a document (by
    ``node_meta``) only one kind asks about, when both kinds have such chunks; else ``{}``.

    ``sources``: question id -> its source (the workspace's record: ``"offline"``, ``"llm"``, ...); questions
    it does not name count for neither kind. Mixed, the two kinds phrase questions differently (a sentence
    of the chunk with a word removed, against a question), and where they ask about separate chunks the
    training loss drops by sending each phrasing toward its own chunks: a written query about an offline
    chunk is then sent away from it (bench/README, "Offline and written questions on separate chunks").
    :func:`train` keeps each kind's negatives to its own chunks and the shared ones (``separate_sources``).
    """
    if not sources:
        return {}
    kinds: dict[str, set[str]] = {}
    for q in qids:
        src = sources.get(q)
        if src is None:
            continue
        kind = OFFLINE if src == OFFLINE else WRITTEN
        for c in ds.relevant_docs.get(q, []):
            kinds.setdefault(c, set()).add(kind)
    groups = {c: next(iter(k)) for c, k in kinds.items() if len(k) == 1}
    # a document only one kind asks about is that kind's, with its chunks no question asks about: otherwise
    # the other kind would still learn to send its phrasing away from that document
    by_doc: dict[str, set[str]] = {}
    for c, k in kinds.items():
        doc = ds.document_of(c)
        if doc is not None:
            by_doc.setdefault(doc, set()).update(k)
    for c in ds.corpus:
        k = by_doc.get(ds.document_of(c) or "")
        if c not in kinds and k is not None and len(k) == 1:
            groups[c] = next(iter(k))
    return groups if set(groups.values()) == {OFFLINE, WRITTEN} else {}


def _near_duplicates(
    corpus: torch.Tensor, rows: list[int], threshold: float, block: int = 2048
) -> dict[int, list[int]]:
    """For each corpus row in ``rows``: the other rows with cosine >= threshold (false negatives)."""
    out: dict[int, list[int]] = {}
    if threshold <= 0:
        return {r: [] for r in rows}
    for i in range(0, len(rows), block):
        part = rows[i : i + block]
        sims = corpus[part] @ corpus.T
        for j, r in enumerate(part):
            hits = torch.nonzero(sims[j] >= threshold).flatten().tolist()
            out[r] = [h for h in hits if h != r]
    return out


def _build_problem(
    emb: EmbeddedDataset,
    ds: QADataset,
    qids: list[str],
    config: TrainConfig,
    device,
    groups: Mapping[str, str] | None = None,
) -> _Problem:
    """``groups``: :func:`source_groups` (chunk id -> kind); a question's kind is its chunk's."""
    qpos = {q: i for i, q in enumerate(emb.query_ids)}
    npos = {n: i for i, n in enumerate(emb.node_ids)}
    corpus = F.normalize(torch.from_numpy(emb.corpus_vecs).to(device), dim=-1)
    qv = torch.from_numpy(emb.query_vecs[[qpos[q] for q in qids]]).to(device)
    targets = [npos[ds.relevant_docs[q][0]] for q in qids]
    codes = None
    if groups:
        cg = torch.tensor([SOURCE_CODES.get(groups.get(n, ""), 0) for n in emb.node_ids], dtype=torch.int8)
        codes = (cg[torch.tensor(targets, dtype=torch.long)].to(device), cg.to(device))
    dups = _near_duplicates(corpus, sorted(set(targets)), config.false_negative_threshold)
    excluded, relevant = [], []
    for q, t in zip(qids, targets):
        rel = [npos[d] for d in ds.relevant_docs[q] if d in npos]
        relevant.append(rel)
        # other relevant chunks and near-duplicates of the positive are not negatives
        # (never the target itself, should a dataset list it twice: its logit would become -inf)
        ex = sorted((set(rel) | set(dups[t])) - {t})
        excluded.append(torch.tensor(ex, dtype=torch.long, device=device))
    sampled = (
        config.loss == Loss.CORPUS_SOFTMAX
        and config.sample_negatives_above > 0
        and corpus.shape[0] > config.sample_negatives_above
    )
    n_hard = SAMPLED_HARD if sampled else config.hard_negatives
    hard = _mine_hard(qv, corpus, targets, excluded, n_hard, groups=codes) if n_hard else None
    return _Problem(
        qv,
        torch.tensor(targets, dtype=torch.long, device=device),
        corpus,
        excluded,
        relevant,
        hard,
        emb.corpus_vecs,
        sampled,
        restricted=hard is not None and not sampled and config.loss == Loss.CORPUS_SOFTMAX,
        excluded_mask=_excluded_mask(excluded, corpus.shape[0], device) if not sampled else None,
        groups=codes,
    )


EXCLUDED_MASK_CELLS = 1 << 25  # (questions x chunks) up to which the excluded rows are also kept as a mask


def _excluded_mask(excluded: list[torch.Tensor], m: int, device) -> torch.Tensor | None:
    """``excluded`` as an (n, m) boolean mask, so a step masks its batch in one op (None when large)."""
    if len(excluded) * m > EXCLUDED_MASK_CELLS:
        return None
    mask = torch.zeros((len(excluded), m), dtype=torch.bool, device=device)
    for i, ex in enumerate(excluded):
        if ex.numel():
            mask[i, ex] = True
    return mask


def _mine_hard(
    qv: torch.Tensor,
    corpus: torch.Tensor,
    targets: list[int],
    excluded: list[torch.Tensor],
    k: int,
    block: int = 1024,
    groups: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """Per question, the ``k`` chunks the base model ranks highest that are neither its own chunk
    nor one of its excluded rows, nor (``groups``) outside its source group (computed in blocks of
    questions, so memory stays bounded). Where
    fewer than ``k`` such chunks exist, the spare slots hold the question's own chunk, which every
    loss treats as no negative."""
    k = min(k, corpus.shape[0] - 1)
    if k <= 0:
        return None
    out = []
    with torch.no_grad():
        qn = F.normalize(qv, dim=-1)
        for start in range(0, qn.shape[0], block):
            scores = qn[start : start + block] @ corpus.T
            if groups is not None:
                qg, cg = groups[0][start : start + block], groups[1]
                scores.masked_fill_(
                    (cg[None, :] != 0) & (qg[:, None] != 0) & (cg[None, :] != qg[:, None]), float("-inf")
                )
            for r in range(scores.shape[0]):
                i = start + r
                scores[r, targets[i]] = float("-inf")
                if excluded[i].numel():
                    scores[r, excluded[i]] = float("-inf")
            top = scores.topk(k, dim=1)
            own = torch.tensor(targets[start : start + scores.shape[0]], device=corpus.device)[:, None]
            out.append(torch.where(torch.isinf(top.values), own, top.indices))
    return torch.cat(out)


def _loss(
    adapter, prob: _Problem, batch: list[int], config: TrainConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The configured loss (:data:`core.losses.LOSSES`) on one batch of training rows (``generator``
    draws the sampled negatives, when the corpus is large enough to sample them)."""
    device = prob.corpus.device
    idx = torch.tensor(batch, dtype=torch.long, device=device)
    m = prob.corpus.shape[0]
    candidates = None
    if prob.sampled:  # random chunks drawn from the fit's generator, which _fit seeds
        candidates = torch.randperm(m, device=device, generator=generator)[:SAMPLED_RANDOM]
    return LOSSES[config.loss](
        LossBatch(
            queries=F.normalize(adapter(prob.query_vecs[idx]), dim=-1),
            targets=prob.targets[idx],
            corpus=prob.corpus,
            excluded=[prob.excluded[i] for i in batch],
            temperature=config.temperature,
            hard=None if prob.hard is None else prob.hard[idx],
            candidates=candidates,
            excluded_mask=None if prob.excluded_mask is None else prob.excluded_mask[idx],
            groups=None if prob.groups is None else (prob.groups[0][idx], prob.groups[1]),
        )
    )


def _outputs(adapter, query_vecs: torch.Tensor) -> np.ndarray:
    """``adapter``'s query vectors in eval mode, as numpy (its training mode restored)."""
    was_training = adapter.training
    adapter.eval()
    with torch.no_grad():
        out = adapter(query_vecs).cpu().numpy()
    adapter.train(was_training)
    return out


def _metrics(
    adapter, query_vecs: torch.Tensor, corpus_np: np.ndarray, relevant: list[list[int]], top_k: int
) -> dict[str, np.ndarray]:
    """Per-question metrics of ``adapter`` (the same ranking rules as :mod:`core.evaluation`)."""
    _, per_query, _, _ = rank_embeddings(_outputs(adapter, query_vecs), corpus_np, relevant, top_k=top_k)
    return per_query


def _means(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(v.mean()) for k, v in per_query.items()}


def _fit(
    prob: _Problem,
    rows: list[int],
    config: TrainConfig,
    lr: float,
    epochs: int,
    seed: int,
    dim: int,
    *,
    on_epoch: Callable[[int, int, torch.nn.Module, list[float]], bool | None] | None = None,
    on_step: Callable[[int, int, float, float], None] | None = None,
    cancel: threading.Event | None = None,
    allow_custom_code: bool = False,
    shuffle_seed: int | None = None,
    warmup_epochs: int | None = None,
) -> tuple[torch.nn.Module, bool]:
    """Train a fresh identity-initialised adapter on ``rows`` of ``prob`` for ``epochs``.

    ``seed`` seeds the initialisation and, unless ``shuffle_seed`` is given, the batch order.
    The warm-up is ``warmup_ratio`` of ``warmup_epochs`` (default: ``epochs``) worth of steps.

    ``on_epoch(epoch, step, adapter, losses)`` runs after epoch 0 (the identity) and every epoch;
    returning True stops early. Returns (adapter, cancelled).
    """
    rng = random.Random(seed if shuffle_seed is None else shuffle_seed)
    device = prob.corpus.device
    with _SEED_LOCK:  # folds may train side by side: the global generator seeds one fit at a time
        torch.manual_seed(seed)
        adapter = adapters_mod.build_adapter(
            config.adapter, dim, allow_custom_code=allow_custom_code, **config.adapter_kwargs
        ).to(device)
        # this fit's own draws continue the seeded stream after the initial weights, as one fit alone would
        generator = torch.Generator(device=device)
        if device.type == "cpu":
            generator.set_state(torch.get_rng_state())
        else:  # the initial weights came from the CPU generator; the device's is freshly seeded
            generator.manual_seed(seed)
    opt_kwargs: dict[str, Any] = {"lr": lr}
    if config.optimizer != "sgd" or config.weight_decay:
        opt_kwargs["weight_decay"] = config.weight_decay
    optimizer = OPTIMIZERS[config.optimizer](adapter.parameters(), **opt_kwargs)
    warmup = int(math.ceil(len(rows) / config.batch_size) * (warmup_epochs or epochs) * config.warmup_ratio)
    groups = [int(prob.targets[i]) for i in rows]
    step = 0
    if on_epoch and on_epoch(0, 0, adapter, []):
        return adapter, False
    adapter.train()
    for epoch in range(1, epochs + 1):
        losses: list[float] = []
        for batch in sibling_free_batches(groups, config.batch_size, rng):
            if cancel is not None and cancel.is_set():
                return adapter, True
            cur_lr = get_lr(step, lr, warmup)
            for group in optimizer.param_groups:
                group["lr"] = cur_lr
            loss = _loss(adapter, prob, [rows[b] for b in batch], config, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            if on_step:
                on_step(step, epoch, losses[-1], cur_lr)
        if on_epoch and on_epoch(epoch, step, adapter, losses):
            break
    return adapter, False


def _average_refits(
    adapter,
    prob: _Problem,
    rows: list[int],
    config: TrainConfig,
    lr: float,
    epochs: int,
    dim: int,
    cancel: threading.Event | None,
    allow_custom_code: bool,
) -> dict[str, torch.Tensor]:
    """The mean of ``adapter``'s weights and those of ``config.average_refits - 1`` more refits that
    start from the same initial weights and see the batches in other orders."""
    states = [adapter.state_dict()]
    for j in range(1, config.average_refits):
        other, cancelled = _fit(
            prob,
            rows,
            config,
            lr,
            epochs,
            config.seed,
            dim,
            cancel=cancel,
            allow_custom_code=allow_custom_code,
            shuffle_seed=config.seed + 7919 * j,
        )
        if cancelled:
            break
        states.append(other.state_dict())
    return {k: torch.stack([st[k].float() for st in states]).mean(0).to(states[0][k].dtype) for k in states[0]}


def _score(metrics: dict[str, float], select: str, top_k: int) -> tuple[float, float]:
    key = {"mrr": f"mrr@{top_k}", "hit": f"hit@{top_k}", "ndcg": "ndcg@10"}[select]
    tie = f"hit@{top_k}" if select != "hit" else f"mrr@{top_k}"
    return (round(metrics[key], 10), round(metrics[tie], 10))


#: at most this many chunks of the new documents are embedded to compare them with the training chunks
TARGET_SAMPLE = 2000


def _target_texts(
    ds: QADataset, target_chunks: set[str] | Mapping[str, str] | None, negatives: dict[str, str] | None, seed: int = 0
) -> dict[str, str]:
    """id -> text of the named evaluation set's chunks that are not training chunks (its texts when
    ``target_chunks`` maps ids to texts, else looked up among the ingested chunks), a seeded sample of at
    most :data:`TARGET_SAMPLE`; empty when no evaluation set is named or its texts are unknown."""
    if not target_chunks:
        return {}
    labelled = {d for ids in ds.relevant_docs.values() for d in ids}
    pool = {**(negatives or {}), **target_chunks} if isinstance(target_chunks, Mapping) else negatives or {}
    texts = {c: pool[c] for c in sorted(target_chunks) if c in pool and c not in labelled}
    if len(texts) > TARGET_SAMPLE:
        keep = random.Random(seed).sample(sorted(texts), TARGET_SAMPLE)
        texts = {c: texts[c] for c in sorted(keep)}
    return texts


#: ``searched_chunks`` stand in for the documents users will search only when they are at least this share of
#: every chunk there is (the ingested ones and the training set's): a few chunks whose questions the filter
#: dropped say nothing of where queries go, and a user who asked about every chunk keeps the measured blind rule
STAND_IN_SHARE = 0.1


#: the group of :func:`unasked_search_chunks` for chunks of the training set's corpus that no ingested document holds
OWN_CORPUS = "the training set's corpus"


def unasked_search_chunks(
    ds: QADataset, documents: Mapping[str, Mapping[str, str]], unaskable: Collection[str] = ()
) -> dict[str, dict[str, str]]:
    """The chunks users will search that no question of ``ds`` asks about, per document (name -> id -> text),
    standing in for the evaluation set when none is named: the new documents, or the new parts of one, that the
    adapter must carry to.

    ``documents`` maps each ingested document to its chunks (id -> text). A document the questions were made
    from (they ask about some of its chunk ids) gives the chunks they do not ask about; a document they
    mostly do not cover by text (:func:`core.distill.uncovered_documents`, the rule ``auto`` reads) gives every
    chunk; a document covered by text under other ids (the same filing imported chunked apart) gives nothing.
    The training set's own corpus gives its chunks no question asks about that no document holds (group
    :data:`OWN_CORPUS`; a split's held-out part is not in it, but a sample's unasked chunks are). Empty when
    all that is under :data:`STAND_IN_SHARE` of every chunk. Kept per document because one document of
    another kind of text among them decides the validation (:func:`_validation`). ``unaskable``: chunks a
    question generator tried and found nothing to ask about (a passage repeated elsewhere, contents, a table:
    :func:`core.runs.unaskable_chunks`) are left out: they are not new parts that queries will go to, and as
    a stand-in they made the offline-question adapter overfit its own chunking (bench/README, "In-corpus
    questions when nothing is named").

    Example::

        unasked_search_chunks(train_half, {"doc": {"c1": "...", "c2": "..."}})  # {"doc": {"c2": "..."}}: c1 asked
    """
    from .distill import asked_texts, uncovered_documents

    asked = {c for ids in ds.relevant_docs.values() for c in ids}
    foreign = {name: chunks for name, chunks in documents.items() if not asked & set(chunks)}
    uncovered = set(uncovered_documents(asked_texts(ds), {n: list(c.values()) for n, c in foreign.items()}))
    skip = asked | set(unaskable)
    out: dict[str, dict[str, str]] = {}
    for name, chunks in documents.items():
        if name in uncovered or name not in foreign:
            out[name] = {c: t for c, t in chunks.items() if c not in skip}
    held = {c for chunks in documents.values() for c in chunks}
    out[OWN_CORPUS] = {c: t for c, t in ds.corpus.items() if c not in skip and c not in held}
    out = {name: chunks for name, chunks in out.items() if chunks}
    n = sum(len(chunks) for chunks in out.values())
    return out if n >= STAND_IN_SHARE * len(every_search_chunk(ds, documents)) else {}


def every_search_chunk(ds: QADataset, documents: Mapping[str, Mapping[str, str]]) -> set[str]:
    """The ids of every chunk users will search: the training set's and the ingested ``documents``' (as for
    :func:`unasked_search_chunks`), the whole that :data:`STAND_IN_SHARE` is a share of."""
    return set(ds.corpus).union(*(set(c) for c in documents.values()))


def _text_share(target_chunks: set[str] | Mapping[str, str] | None, train_texts: list[str]) -> float | None:
    """The share of the evaluation set's chunk text among the training chunks (:func:`core.distill.eval_overlap`'s
    measure, so the design and ``auto``'s recipe read an evaluation set alike, however each was chunked), or
    ``None`` when its texts are not given (the design then compares chunk ids)."""
    if not isinstance(target_chunks, Mapping) or not target_chunks:
        return None
    from .distill import coverage, text_fingerprints

    return coverage(text_fingerprints(target_chunks.values()), text_fingerprints(train_texts))


def _validation(
    setting: str,
    design: str,
    target_texts: dict[str, str],
    emb: EmbeddedDataset,
    train_chunks: list[str],
    embedder,
    record: Callable[[dict[str, Any]], None],
    progress: Progress | None,
    stand_in: int = 0,
    groups: Mapping[str, list[str]] | None = None,
) -> tuple[str, str, int]:
    """(validation, reason, stand-in chunks read) of a cross-validation: the user's ``cv_validation``, or under
    ``auto`` on the *chunks* design :func:`core.selection.choose_validation` on the neighbour mixing of the
    evaluation set's chunks (embedded through the cache) with the training chunks. ``stand_in``: no evaluation
    set is named and ``target_texts`` are that many chunks no training question asks about
    (:func:`unasked_search_chunks`); returned when the check read them, else 0. ``groups`` (document -> ids of
    ``target_texts``): each document of at least :data:`core.selection.MIXING_NEIGHBOURS` chunks (else of two)
    is checked on its own and the lowest mixing decides, so one document of another kind of text keeps the
    stricter ranking however many same-kind chunks sit beside it."""
    if design != "chunks" or setting != "auto":
        where = "the held-out chunks only" if setting == "fold" else "every chunk"
        return setting, f"chosen by the user: held-out questions ranked against {where}", 0
    if len(target_texts) < 2:
        return *sel.choose_validation(None), 0
    what = (
        f"the {stand_in} chunks no training question asks about (no evaluation set named: they stand in for the "
        "documents you will search)"
        if stand_in
        else "the evaluation set's chunks"
    )
    record({"type": "phase", "message": f"comparing {what} with the training chunks"})
    npos = {c: i for i, c in enumerate(emb.node_ids)}
    train_vecs = emb.corpus_vecs[[npos[c] for c in train_chunks]]
    vecs = embedder.embed_texts(list(target_texts.values()), progress=progress)
    tpos = {c: i for i, c in enumerate(target_texts)}
    groups = groups or {}
    parts = {g: ids for g, ids in groups.items() if len(ids) >= sel.MIXING_NEIGHBOURS} or {
        g: ids for g, ids in groups.items() if len(ids) >= 2
    }
    if len(groups) > 1 and parts:  # spans documents: each checked on its own (small ones only when all are)
        each = {g: sel.neighbour_mixing(train_vecs, vecs[[tpos[c] for c in ids]]) for g, ids in parts.items()}
        mixing = min(each.values())
        what += " (per document, the lowest decides: " + ", ".join(f"{g} {m:.2f}" for g, m in each.items()) + ")"
    else:
        mixing = sel.neighbour_mixing(train_vecs, vecs)
    validation, reason = sel.choose_validation(mixing)
    return validation, f"{what}: {reason}", stand_in


def _with_negatives(ds: QADataset, negatives: dict[str, str] | None) -> QADataset:
    """``ds`` with extra chunks (e.g. every ingested chunk) added to its corpus as negatives."""
    if not negatives:
        return ds
    seen = set(ds.corpus.values())
    extra = {n: t for n, t in negatives.items() if n not in ds.corpus and t not in seen}
    if not extra:
        return ds
    return QADataset(dict(ds.queries), {**ds.corpus, **extra}, dict(ds.relevant_docs), ds.mode, dict(ds.node_meta))


def _pseudo_dataset(
    ds: QADataset, chunks: dict[str, str], train_q: list[str], n: int, seed: int
) -> tuple[QADataset, dict[str, str]]:
    """``ds`` plus offline pseudo-queries (``n`` per chunk, each made from its own chunk's text only,
    the generator fitted on every chunk in order), appended after the real questions, and the
    chunks they point at added to the corpus. Returns (dataset, pseudo question id -> its chunk).

    Which chunks get them: every chunk of ``ds`` that has training questions (cross-validation
    holds those out as new chunks, which get pseudo-queries like a new document's would), and the
    ingested chunks without any, at most as many as the real questions allow (``len(train_q) // n``,
    a seeded sample): pseudo-queries add a signal about the corpus next to the real questions,
    never more rows than them, however large the corpus. The method is the app's default offline
    one (inverse cloze, :mod:`core.pseudo_queries`).
    """
    from .pseudo_queries import offline_generator

    gen = offline_generator(None, seed=seed)
    seen = set(ds.corpus.values())  # an ingested copy of a training chunk (other id, same text) is that chunk
    corpus = {**{c: t for c, t in chunks.items() if c not in ds.corpus and t not in seen}, **ds.corpus}
    order = list(dict.fromkeys([*(c for c in chunks if c in corpus), *ds.corpus]))
    labelled = {d for q in train_q for d in ds.relevant_docs.get(q, [])}
    cap = max(1, len(train_q) // max(1, n))
    pool = [c for c in order if c not in labelled]
    if len(pool) > cap:
        keep = set(random.Random(seed).sample(pool, cap))
        pool = [c for c in pool if c in keep]
    asked = set(pool) | (labelled & set(ds.corpus))
    if hasattr(gen, "fit"):
        gen.fit([corpus[c] for c in order])
    queries, relevant, owner = dict(ds.queries), dict(ds.relevant_docs), {}
    taken = {t.strip().lower() for t in ds.queries.values()}
    for c in order:
        if c not in asked:
            continue
        for j, text in enumerate(gen.generate(corpus[c], n)):
            if text.strip().lower() in taken:
                continue
            qid = f"pseudo:{c}:{j}"
            queries[qid], relevant[qid], owner[qid] = text, [c], c
            taken.add(text.strip().lower())
    keep_chunks = set(owner.values()) | set(ds.corpus)
    corpus = {c: t for c, t in corpus.items() if c in keep_chunks}  # a chunk with no pseudo-query stays out
    return QADataset(queries, corpus, relevant, ds.mode, dict(ds.node_meta)), owner


def _with_pseudo(prob: _Problem, rows: list[int], pseudo_rows: list[int]) -> list[int]:
    """``rows`` plus the pseudo-query rows whose chunk has no real question among ``rows``."""
    if not pseudo_rows:
        return rows
    labelled = {int(prob.targets[i]) for i in rows}
    return rows + [p for p in pseudo_rows if int(prob.targets[p]) not in labelled]


def _interpolate(
    init: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """Weights ``init + alpha (trained - init)``: alpha 0 is the untrained (identity) adapter, 1 the trained one."""
    return {k: (init[k].float() + alpha * (trained[k].float() - init[k].float())).to(trained[k].dtype) for k in trained}


@dataclass
class _FoldScores:
    """One fold's out-of-fold scores: the untrained identity's, each epoch's (with the mean metrics), each
    (epoch, alpha) shrunk copy's; per held-out question."""

    base: np.ndarray | None = None
    epochs: dict[int, tuple[np.ndarray, dict[str, float]]] = field(default_factory=dict)
    shrunk: dict[tuple[int, float], tuple[np.ndarray, dict[str, float]]] = field(default_factory=dict)


#: environment variable: how many cross-validation folds train side by side (default: see :func:`fold_workers`)
CV_WORKERS_ENV = "ADAPTERLAB_CV_WORKERS"
#: above this many bytes of chunk vectors the folds train one at a time: each fold's scoring keeps its own
#: normalised copy of the chunks and score matrices, and at that size a step is no longer a small product
SIDE_BY_SIDE_MAX_CORPUS_BYTES = 64 << 20


def fold_workers(config: TrainConfig, device: torch.device, n_folds: int, corpus_bytes: int = 0) -> int:
    """How many folds train side by side in threads: as many as torch's CPU threads (each fold's steps are
    small products that one thread runs nearly as fast as two, so folds in parallel finish sooner), at most
    one per fold; ``ADAPTERLAB_CV_WORKERS`` overrides it. One at a time on a GPU (one device runs one fold's
    kernels at a time anyway), for adapters that are not built in (a forward pass that draws random
    numbers, e.g. dropout, would make the folds' results depend on scheduling) and for a large corpus
    (``corpus_bytes`` above :data:`SIDE_BY_SIDE_MAX_CORPUS_BYTES`: memory). While folds train side by side,
    torch's thread count is shared out among them (it is process-wide; restored afterwards)."""
    if (
        device.type != "cpu"
        or not adapters_mod.draws_no_random_numbers(config.adapter)
        or corpus_bytes > SIDE_BY_SIDE_MAX_CORPUS_BYTES
    ):
        return 1
    env = os.environ.get(CV_WORKERS_ENV, "").strip()
    want = int(env) if env.isdigit() and int(env) > 0 else torch.get_num_threads()
    return max(1, min(n_folds, want))


def _run_folds(
    tasks: list[Callable[[Callable[..., None], threading.Event], _FoldScores]],
    workers: int,
    tick: Callable[..., None],
    cancel: threading.Event | None,
) -> list[_FoldScores]:
    """Each fold task's scores, in task order. With ``workers`` > 1 the tasks run in that many threads,
    torch's CPU threads shared out among them; ``tick`` (progress: it may write to a database connection
    of this thread) is always called from the calling thread. A cancel, or one task's error, stops the
    others after their current step."""
    halt = threading.Event()
    if workers <= 1:
        out = []
        for task in tasks:
            out.append(task(tick, cancel or halt))
            if cancel is not None and cancel.is_set():
                break
        return out
    ticks: queue.SimpleQueue = queue.SimpleQueue()

    def drain() -> None:
        while True:
            try:
                tick(*ticks.get_nowait())
            except queue.Empty:
                return

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))  # read by each new worker thread's first parallel op
    pool = ThreadPoolExecutor(workers, thread_name_prefix="adapterlab-fold")
    try:
        futures = [pool.submit(task, lambda *a: ticks.put(a), halt) for task in tasks]
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            drain()
            if (cancel is not None and cancel.is_set()) or any(f.exception() for f in finished):
                halt.set()
        drain()
        return [f.result() for f in futures]  # re-raises a task's error
    finally:
        # however this ends (done, a fold's error, Ctrl-C, even a second Ctrl-C while stopping), no fold
        # trains on: each stops after its current step (the finished ones are not affected)
        halt.set()
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            torch.set_num_threads(threads)


def cross_validate(
    prob: _Problem,
    config: TrainConfig,
    dim: int,
    design: str,
    design_reason: str,
    record: Callable[[dict[str, Any]], None] | None = None,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    allow_custom_code: bool = False,
    units: list[Any] | None = None,
    pseudo_rows: list[int] | None = None,
    validation: str = "corpus",
    validation_reason: str = "",
) -> sel.CVResult:
    """k-fold cross-validation over (lr in the grid) x (epochs 0..config.epochs, or up to twice that:
    :func:`core.selection.max_epochs`) [x shrinkage alpha];
    see :mod:`core.selection`. ``units[i]`` (e.g. the document of question ``i``) keeps whole
    documents in one fold under ``cv_fold_order="blocks"``. ``pseudo_rows`` (rows after the real
    questions) are never validated; each fold trains on those whose chunk has no real question in
    its training rows (the held-out chunks' included, as a new document's would be). ``validation``
    (the *chunks* design): ``corpus`` ranks held-out questions against every chunk, ``fold`` against the
    held-out chunks only (:func:`core.selection.choose_validation`)."""
    t0 = time.time()
    pseudo_rows = list(pseudo_rows or [])
    n = prob.targets.shape[0] - len(pseudo_rows)
    blocks = design == "chunks" and config.cv_fold_order == "blocks"
    # new documents: rank held-out questions against the held-out chunks only (as a new document searched on its
    # own), or against every chunk (as if added to the training documents' index: stricter)
    on_fold = design == "chunks" and validation == "fold"
    folds = sel.make_folds(
        prob.targets[:n].tolist(),
        config.cv_folds,
        design,
        config.seed,
        blocks=blocks,
        units=units[:n] if units else None,
    )
    k = config.top_k
    hk, mk = f"hit@{k}", f"mrr@{k}"
    grid = list(config.lr_grid) or [float(config.lr)]
    alphas = sorted({float(a) for a in config.shrinkage_grid} | {1.0})
    rule = sel.resolve_rule(config.cv_rule, design)
    top = sel.max_epochs(config.cv_rule, design, config.epochs)
    total = len(grid) * len(folds) * top

    def run_fold(lr: float, f_i: int, val: list[int], tick: Callable[..., None], halt: threading.Event) -> _FoldScores:
        """Train fold ``f_i`` for ``top`` epochs at ``lr`` and score each epoch (and its shrunk copies) on
        the fold's held-out questions; ``tick(lr, f_i, epoch)`` after each epoch; stops when ``halt`` is set."""
        vs = set(val)
        rows = _with_pseudo(prob, [i for i in range(n) if i not in vs], pseudo_rows)
        val_qv = prob.query_vecs[val]
        val_rel = [prob.relevant[i] for i in val]
        fold_corpus, fold_rel = prob.corpus_np, val_rel
        if on_fold:
            held = sorted({r for rel in val_rel for r in rel})
            at = {r: j for j, r in enumerate(held)}
            fold_corpus, fold_rel = prob.corpus_np[held], [[at[r] for r in rel] for rel in val_rel]
        # every epoch and shrunk copy is scored on the same questions and chunks: prepared once
        fixed = FixedCorpusScorer.if_fits(fold_corpus, fold_rel, k)

        def score_out(
            out: np.ndarray | None, s: torch.Tensor | None = None
        ) -> tuple[dict[str, np.ndarray], np.ndarray]:
            """(per-question metrics, per-question selection score (hit@k + MRR@k) / 2) of adapted query vectors,
            or of the fold scorer's score matrix ``s`` for them."""
            if s is not None:
                pq = fixed.metrics_of_scores(s)
            else:
                pq = rank_embeddings(out, fold_corpus, fold_rel, top_k=k)[1] if fixed is None else fixed(out)
            return pq, (pq[hk] + pq[mk]) / 2

        got = _FoldScores()
        init: dict[str, torch.Tensor] = {}
        init_out: list[np.ndarray] = []
        init_scores: list[torch.Tensor] = []

        def on_epoch(epoch, step, adapter, losses):
            out = _outputs(adapter, val_qv)
            affine = adapters_mod.affine_in_weights(adapter)
            # an affine adapter's shrunk copies rank as the same mix of two score matrices (one product per epoch)
            s = fixed.scores(out, normalize=False) if affine and fixed is not None else None
            pq, score = score_out(out, s)
            if epoch == 0:
                got.base = score
                if affine:
                    init_out.append(out)
                    init_scores.append(s)
                else:
                    init.update({k2: v2.detach().clone() for k2, v2 in adapter.state_dict().items()})
            else:
                tick(lr, f_i, epoch)
                if len(alphas) > 1:
                    trained = None if affine else {k2: v2.detach().clone() for k2, v2 in adapter.state_dict().items()}
                    for a in alphas:
                        if a == 1.0:
                            got.shrunk[(epoch, a)] = (score, _means(pq))
                            continue
                        if s is not None:  # the shrunk weights' scores, from the two score matrices
                            spq, sscore = score_out(None, init_scores[0] + a * (s - init_scores[0]))
                        elif affine:  # the shrunk weights' outputs, from the two outputs
                            spq, sscore = score_out(init_out[0] + a * (out - init_out[0]))
                        else:
                            adapter.load_state_dict(_interpolate(init, trained, a))
                            spq, sscore = score_out(_outputs(adapter, val_qv))
                        got.shrunk[(epoch, a)] = (sscore, _means(spq))
                    if trained is not None:
                        adapter.load_state_dict(trained)
            got.epochs[epoch] = (score, _means(pq))
            return halt.is_set()

        _fit(
            prob,
            rows,
            config,
            lr,
            top,
            config.seed + f_i,
            dim,
            on_epoch=on_epoch,
            cancel=halt,
            allow_custom_code=allow_custom_code,
            warmup_epochs=config.epochs,
        )
        return got

    done = 0

    def tick(lr: float, f_i: int, epoch: int) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, f"cross-validation: lr {lr:g}, fold {f_i + 1}/{len(folds)}, epoch {epoch}")

    workers = fold_workers(config, prob.corpus.device, len(folds), prob.corpus_np.nbytes)
    gains: dict[tuple, tuple[float, float]] = {}
    shrunk_points: dict[tuple, dict[str, float]] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    for lr in grid:
        tasks = [functools.partial(run_fold, lr, f_i, val) for f_i, val in enumerate(folds)]
        fold_scores = _run_folds(tasks, workers, tick, cancel)
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled("cancelled during cross-validation")
        # pooled in fold order, however the folds were scheduled
        base = [f.base for f in fold_scores]
        per_epoch = {e: [f.epochs[e] for f in fold_scores] for e in fold_scores[0].epochs}
        shrunk = {key: [f.shrunk[key] for f in fold_scores] for key in fold_scores[0].shrunk}
        curve = []
        for epoch in sorted(per_epoch):
            scores = [s for s, _ in per_epoch[epoch]]
            gain, se = sel.pooled_gain(scores, base)
            if epoch > 0:
                if len(alphas) > 1:
                    for a in alphas:
                        gains[(lr, epoch, a)] = sel.pooled_gain([sc for sc, _ in shrunk[(epoch, a)]], base)
                        if a != 1.0:  # the chart marks a shrunk choice at its own estimate, not the alpha-1 curve's
                            shrunk_points[(lr, epoch, a)] = sel.curve_point(
                                [m for _, m in shrunk[(epoch, a)]], *gains[(lr, epoch, a)]
                            )
                else:
                    gains[(lr, epoch, 1.0)] = (gain, se)
            point = {"epoch": epoch, **sel.curve_point([m for _, m in per_epoch[epoch]], gain, se)}
            curve.append(point)
            if record:
                record({"type": "cv", "lr": lr, **point})
        curves[f"{lr:g}"] = curve
    if config.shrinkage_gate and len(alphas) > 1:
        (lr, epochs, alpha), gain, se, train_it = sel.choose(
            {key: v for key, v in gains.items() if key[2] == 1.0}, rule, config.cv_min_gain_se
        )
        if train_it:
            alpha = max(alphas, key=lambda a: (round(gains[(lr, epochs, a)][0], 12), -a))
            gain, se = gains[(lr, epochs, alpha)]
    else:
        (lr, epochs, alpha), gain, se, train_it = sel.choose(gains, rule, config.cv_min_gain_se)
    shrinkage = {f"{a:g}": gains[(lr, epochs, a)][0] for a in alphas} if len(alphas) > 1 else {}
    return sel.CVResult(
        design,
        design_reason,
        len(folds),
        k,
        lr,
        epochs,
        gain,
        se,
        train_it,
        sel.rule_text(rule, config.shrinkage_grid)
        + (f" (rule 'auto': {rule} for the {design} design)" if config.cv_rule == "auto" else ""),
        curves,
        time.time() - t0,
        alpha=alpha,
        shrinkage=shrinkage,
        fold_order="blocks" if blocks else "shuffled",
        validation=validation if design == "chunks" else "corpus",
        validation_reason=validation_reason if design == "chunks" else "",
        side_by_side=workers,
        shrunk_point=shrunk_points.get((lr, epochs, alpha), {}) if train_it else {},
    )


def train(
    train_dataset: QADataset,
    embedder,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    val_dataset: QADataset | None = None,
    callback: Callback | None = None,
    cancel: threading.Event | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: Progress | None = None,
    negatives: dict[str, str] | None = None,
    target_chunks: set[str] | Mapping[str, str] | None = None,
    searched_chunks: Mapping[str, Mapping[str, str]] | None = None,
    target_documents: Mapping[str, str] | None = None,
    allow_custom_code: bool = False,
    question_sources: Mapping[str, str] | None = None,
) -> TrainResult:
    """Train an adapter for ``embedder`` on ``train_dataset``.

    Args:
        train_dataset: question -> chunk pairs (``QADataset``).
        embedder: the frozen base embedder; wrap it in ``CachedEmbedder`` so texts are embedded
            once across runs.
        config: :class:`TrainConfig` (defaults: AdapterLab's recipe, cross-validated).
        out_dir: where the final adapter is saved in LlamaIndex's folder format.
        val_dataset: explicit validation data: selection becomes a hold-out on it (best epoch kept).
        callback: receives dicts: ``{"type": "step", "step", "epoch", "loss", "lr"}``,
            ``{"type": "epoch", "epoch", "step", "train_loss", "val": {...} | None, "best": bool}``,
            ``{"type": "cv", "lr", "epoch", "gain", "gain_se", "hit@k mean", "hit@k std", ...}``,
            ``{"type": "selection", ...CVResult}``, ``{"type": "checkpoint", "step", "path"}``,
            ``{"type": "phase", "message"}``.
        cancel: set it to stop after the current step; the best state so far is saved.
        checkpoint_dir: checkpoints ``step_N`` go here (default ``out_dir/checkpoints``).
        negatives: extra chunks (id -> text), e.g. every ingested chunk: negatives in training when
            ``config.unlabelled_negatives`` is on (ignored otherwise, and recorded as such).
        target_chunks: chunk ids the adapter will be evaluated on (or id -> text); ``cv_design="auto"``
            uses them to choose between the "new questions" and "new documents" validation designs, and
            ``cv_validation="auto"`` their texts (from the mapping or ``negatives``) to tell whether the new
            documents hold the same kinds of text as the training ones (none: the stricter validation).
        searched_chunks: when no ``target_chunks`` are given, the chunks users will search that no training
            question asks about (document -> id -> text, :func:`unasked_search_chunks`): they stand in for the new
            documents in ``cv_validation="auto"``'s same-kind check, each document on its own (the design stays
            *chunks*, new documents).
        target_documents: chunk id -> the document it belongs to, for ``target_chunks`` that span several:
            each document is checked on its own and the lowest mixing decides (as for ``searched_chunks``).
        allow_custom_code: the user's opt-in to import ``config.adapter`` when it is an import
            path (``pkg.mod:Class``); see :func:`core.adapters.resolve_adapter_class`.
        question_sources: question id -> where it came from (``"offline"``, ``"llm"``, ...: the workspace's
            record, :func:`core.provenance.per_question_sources`); with ``config.separate_sources``, offline and
            written questions about separate chunks keep their negatives apart (:func:`source_groups`).
    """
    config = config or TrainConfig()
    config.validate()
    t0 = time.time()
    emit = callback or (lambda e: None)
    history: list[dict[str, Any]] = []

    def record(event: dict[str, Any]) -> None:
        history.append(event)
        emit(event)

    device = torch.device(pick_device(config.device))
    filtered_out = 0
    if config.filter_questions:
        from .question_filter import filter_dataset

        train_dataset, dropped = filter_dataset(train_dataset)
        filtered_out = len(dropped)
        record(
            {
                "type": "phase",
                "message": f"question filter: dropped {filtered_out} question(s) that cannot work as search queries",
            }
        )
    if not train_dataset.queries:
        raise TrainingError("no training questions: generate or import questions first")

    # ---- data -------------------------------------------------------------------------------
    selection = "holdout" if val_dataset is not None else config.selection
    if selection == "holdout" and val_dataset is None and config.val_fraction > 0:
        train_q, val_q = split_by_chunk(train_dataset, config.val_fraction, config.seed)
    else:
        train_q, val_q = list(train_dataset.queries), []
    if not train_q:
        raise TrainingError("no training questions: generate or import questions first")
    stand_in = sum(len(c) for c in (searched_chunks or {}).values()) if not target_chunks else 0
    if stand_in:  # no evaluation set named: the chunks no training question asks about, per document
        merged = {c: t for chunks in searched_chunks.values() for c, t in chunks.items()}
        target_texts = _target_texts(train_dataset, merged, None)
        owner = {c: g for g, chunks in searched_chunks.items() for c in chunks}
    else:
        target_texts = _target_texts(train_dataset, target_chunks, negatives)
        owner = dict(target_documents or {})
    target_groups: dict[str, list[str]] = {}  # document -> its chunks among target_texts (one check each)
    for c in target_texts:
        target_groups.setdefault(owner.get(c, ""), []).append(c)
    pseudo_owner: dict[str, str] = {}
    if config.pseudo_queries and negatives:
        base_ds = _with_negatives(train_dataset, negatives if config.unlabelled_negatives else None)
        full, pseudo_owner = _pseudo_dataset(base_ds, negatives, train_q, config.pseudo_queries, config.seed)
        labelled = {d for q in train_q for d in train_dataset.relevant_docs[q]}
        n_unl = len({c for c in pseudo_owner.values() if c not in labelled})
        record(
            {
                "type": "phase",
                "message": f"pseudo-queries (inverse cloze): {len(pseudo_owner)} made from chunk text; "
                f"{n_unl} chunk(s) without training questions get theirs in training",
            }
        )
        if not config.unlabelled_negatives:
            record(
                {
                    "type": "phase",
                    "message": "negatives: the training chunks only (unlabelled_negatives is off), plus the "
                    f"{n_unl} chunk(s) that got pseudo-queries",
                }
            )
    else:
        if config.pseudo_queries:
            record({"type": "phase", "message": "pseudo-queries: off (no ingested chunks were passed to training)"})
        if negatives and not config.unlabelled_negatives:
            record({"type": "phase", "message": "negatives: the training chunks only (unlabelled_negatives is off)"})
            negatives = None
        full = _with_negatives(train_dataset, negatives)
    record({"type": "phase", "message": f"embedding {len(full.corpus)} chunks and {len(full.queries)} questions"})
    # one bar for the whole run: embedding, then the cross-validation (most of the work), then the final fit
    phases = (0.2, 0.25, 0.9) if selection == "cv" else (0.2, 0.2, 0.2)
    emb = embed_dataset(full, embedder, progress=in_phase(progress, 0.0, phases[0]))
    dim = emb.query_vecs.shape[1]
    groups = source_groups(full, train_q, question_sources) if config.separate_sources else {}
    prob = _build_problem(emb, full, list(full.queries), config, device, groups=groups)
    record({"type": "phase", "message": f"negatives: {prob.negatives_note()}"})
    qpos = {q: i for i, q in enumerate(emb.query_ids)}
    rows = [qpos[q] for q in train_q]
    pseudo_rows = [qpos[q] for q in pseudo_owner]
    adapters_mod.check_adapter_fits(
        adapters_mod.build_adapter(config.adapter, dim, allow_custom_code=allow_custom_code, **config.adapter_kwargs),
        dim,
        where=f"adapter {config.adapter}",
    )

    # holdout validation data (explicit set, or the split's questions over the training corpus)
    if val_dataset is not None:
        v = embed_dataset(val_dataset, embedder)
        val = (torch.from_numpy(v.query_vecs).to(device), v.corpus_vecs, v.relevant)
    elif val_q:
        val = (prob.query_vecs[[qpos[q] for q in val_q]], prob.corpus_np, [prob.relevant[qpos[q]] for q in val_q])
    else:
        val = None
    n_val = len(val[2]) if val else 0

    # ---- cross-validation ---------------------------------------------------------------------
    cv = None
    shrink = 1.0
    epochs = config.epochs
    lr = float(config.lr)
    cancelled = False
    if selection == "cv":
        if config.cv_design == "auto":
            trained = set(full.relevant_docs[q][0] for q in train_q)
            design, reason = sel.choose_design(
                trained,
                set(target_chunks) if target_chunks else None,
                shared=_text_share(target_chunks, [full.corpus[c] for c in trained if c in full.corpus]),
            )
        else:
            design, reason = config.cv_design, "chosen by the user"
        if design == "questions" and len({full.relevant_docs[q][0] for q in train_q}) == len(train_q):
            # nothing to hold out while keeping a sibling in training: the folds test new chunks
            reason += (
                "; but every chunk has one training question, so each held-out question's chunk has none "
                "left in training and the estimate is that of new documents (conservative: it tends to "
                "choose fewer epochs than new questions on these chunks would bear)"
            )
        validation, validation_reason, read = _validation(
            config.cv_validation,
            design,
            target_texts,
            emb,
            sorted({full.relevant_docs[q][0] for q in train_q}),
            embedder,
            record,
            in_phase(progress, phases[0], phases[1]),
            stand_in=stand_in,
            groups=target_groups,
        )
        record(
            {
                "type": "phase",
                "message": f"{config.cv_folds}-fold cross-validation ({design}"
                + (f"; validation: {validation_reason}" if design == "chunks" else "")
                + ")",
            }
        )
        try:
            units = [(full.node_meta.get(full.relevant_docs[q][0]) or {}).get("doc_id") for q in full.queries]
            units = units[: len(units) - len(pseudo_rows)]
            cv = cross_validate(
                prob,
                config,
                dim,
                design,
                reason,
                record=record,
                cancel=cancel,
                progress=in_phase(progress, phases[1], phases[2]),
                allow_custom_code=allow_custom_code,
                units=units if any(u is not None for u in units) else None,
                pseudo_rows=pseudo_rows,
                validation=validation,
                validation_reason=validation_reason,
            )
        except TrainingCancelled:
            cancelled = True
        if cv is not None:
            cv.stand_in = read  # the stand-in chunks the validation read (the run record and Compare say so)
            record({"type": "selection", **cv.to_dict()})
            record({"type": "phase", "message": cv.summary_line()})
            lr, epochs = cv.lr, (cv.epochs if cv.train else 0)
            shrink = cv.alpha if cv.train else 1.0

    # ---- the final fit ----------------------------------------------------------------------
    out_dir = Path(out_dir) if out_dir else None
    ckpt_root = Path(checkpoint_dir) if checkpoint_dir else (out_dir / "checkpoints" if out_dir else None)
    checkpoints: list[str] = []
    meta = {"embedder": getattr(embedder, "identity", "?"), "config": config.to_dict()}
    state: dict[str, Any] = {
        "best_epoch": 0,
        "best_metrics": None,
        "base_metrics": None,
        "best_score": None,
        "best_state": None,
        "stale": 0,
    }
    n_real = len(rows)
    rows = _with_pseudo(prob, rows, pseudo_rows)
    steps_per_epoch = math.ceil(len(rows) / config.batch_size)

    def save_ckpt(adapter, step: int) -> None:
        if ckpt_root is None:
            return
        path = ckpt_root / f"step_{step}"
        # staged, then moved into place whole: a kill while it is written leaves no half checkpoint behind
        replace_folder(path, lambda dst: adapters_mod.save_adapter(adapter, dst, step=step, **meta))
        checkpoints.append(str(path))
        record({"type": "checkpoint", "step": step, "path": str(path)})

    fit_progress = in_phase(progress, phases[2], 1.0)

    def on_step(step, epoch, loss, cur_lr):
        record({"type": "step", "step": step, "epoch": epoch, "loss": loss, "lr": cur_lr})
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            save_ckpt(adapter_ref[0], step)
        if fit_progress:
            fit_progress(step, steps_per_epoch * max(epochs, 1), f"epoch {epoch}/{epochs}")

    adapter_ref: list[torch.nn.Module] = []

    def on_epoch(epoch, step, adapter, losses):
        if not adapter_ref:
            adapter_ref.append(adapter)
        snapshot = {k2: v2.detach().clone() for k2, v2 in adapter.state_dict().items()}
        if epoch == 0:
            state["init_state"] = snapshot
        event = {
            "type": "epoch",
            "epoch": epoch,
            "step": step,
            "train_loss": float(np.mean(losses)) if losses else None,
            "val": None,
            "best": False,
        }
        if epoch and not config.checkpoint_every:
            save_ckpt(adapter, step)
        if val is not None and n_val:
            metrics = _means(_metrics(adapter, val[0], val[1], val[2], config.top_k))
            event["val"] = metrics
            score = _score(metrics, config.select_metric, config.top_k)
            if epoch == 0:
                state["base_metrics"] = metrics
            if state["best_score"] is None or score > state["best_score"]:
                state.update(best_score=score, best_metrics=metrics, best_epoch=epoch, best_state=snapshot, stale=0)
                event["best"] = True
            else:
                state["stale"] += 1
        elif epoch or state["best_state"] is None:  # the identity stands until an epoch completes
            state.update(best_epoch=epoch, best_state=snapshot)
            event["best"] = epoch == epochs
        if epoch or val is not None:
            record(event)
        if config.patience and state["stale"] >= config.patience:
            record({"type": "phase", "message": f"early stop: no validation gain for {state['stale']} epochs"})
            return True
        return False

    if not cancelled:
        if cv is not None:
            record(
                {
                    "type": "phase",
                    "message": (
                        f"refit on all {n_real} questions"
                        + (f" and {len(rows) - n_real} pseudo-queries" if len(rows) > n_real else "")
                        + f": {epochs} epoch(s) at lr {lr:g}"
                        if epochs
                        else "keeping the untrained identity"
                    ),
                }
            )
        adapter, cancelled = _fit(
            prob,
            rows,
            config,
            lr,
            epochs,
            config.seed,
            dim,
            on_epoch=on_epoch,
            on_step=on_step,
            cancel=cancel,
            allow_custom_code=allow_custom_code,
        )
    else:
        adapter = adapters_mod.build_adapter(
            config.adapter, dim, allow_custom_code=allow_custom_code, **config.adapter_kwargs
        ).to(device)
    if state["best_state"] is not None and (config.keep_best or cancelled or selection != "holdout"):
        adapter.load_state_dict(state["best_state"])
    if config.average_refits > 1 and cv is not None and epochs and not cancelled:
        averaged = _average_refits(adapter, prob, rows, config, lr, epochs, dim, cancel, allow_custom_code)
        adapter.load_state_dict(averaged)
        record(
            {
                "type": "phase",
                "message": f"weights averaged over {config.average_refits} refits (same start, different batch orders)",
            }
        )
    if shrink != 1.0 and epochs and not cancelled and state.get("init_state") is not None:
        adapter.load_state_dict(_interpolate(state["init_state"], adapter.state_dict(), shrink))
        record(
            {
                "type": "phase",
                "message": f"weights shrunk toward the identity: identity + {shrink:g} x (trained - identity)",
            }
        )
    adapter.eval()
    best_epoch = state["best_epoch"]
    if out_dir is not None:
        adapters_mod.save_adapter(
            adapter,
            out_dir,
            best_epoch=best_epoch,
            best_val=state["best_metrics"],
            base_val=state["base_metrics"],
            selection=cv.to_dict() if cv else None,
            **meta,
        )
    return TrainResult(
        adapter=adapter.cpu(),
        out_dir=out_dir,
        best_epoch=best_epoch,
        best_metrics=state["best_metrics"],
        base_metrics=state["base_metrics"],
        history=history,
        checkpoints=checkpoints,
        cancelled=cancelled,
        seconds=time.time() - t0,
        n_train_queries=n_real,
        n_pseudo_queries=len(rows) - n_real,
        n_val_queries=n_val,
        cv=cv,
        filtered_out=filtered_out,
        negatives=prob.negatives_note(),
    )


def list_checkpoints(path: str | Path) -> list[Path]:
    """``step_N`` folders under ``path`` (a checkpoint dir or an adapter dir with ``checkpoints/``), by step."""
    path = Path(path)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith("step_")
        and p.name[5:].isdigit()
        # a complete one (a run killed while writing one, before checkpoints were staged, left only a temp file)
        and (p / adapters_mod.CONFIG_FILE).is_file()
        and (p / adapters_mod.WEIGHTS_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[5:]))
