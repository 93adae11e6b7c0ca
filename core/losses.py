"""Training losses for adapters, one function per loss, looked up by name in :data:`LOSSES`.

Every loss takes a :class:`LossBatch` (the adapted, normalised query vectors of one batch and
the chunks they are scored against) and returns a scalar tensor. The trainer calls
``LOSSES[config.loss](batch)``, so a new loss is one function and one :class:`Loss` member here.

Inputs shared by all losses:

* ``queries``: ``(b, d)`` adapted query vectors, L2-normalised (cosine similarity is a dot
  product);
* ``targets``: ``(b,)`` corpus row of each question's positive chunk;
* ``corpus``: ``(m, d)`` L2-normalised chunk vectors, every chunk the user will search;
* ``excluded``: per question, corpus rows that must never be its negatives (other relevant
  chunks, near-duplicates of the positive: the false-negative guard);
* ``hard``: ``(b, h)`` mined hard negatives (corpus rows) or None;
* ``groups``: None, or ``(query_groups (b,), corpus_groups (m,))`` integer codes: a chunk whose code is
  neither 0 (shared) nor its question's is never that question's negative (questions of code 0 keep
  every chunk): ``TrainConfig.separate_sources``;
* ``temperature``: softmax temperature on cosine similarities (scale = 1 / temperature).

Example::

    batch = LossBatch(queries=F.normalize(adapter(q), dim=-1), targets=t, corpus=c,
                      excluded=[torch.tensor([], dtype=torch.long)] * len(t), temperature=0.05)
    loss = LOSSES[Loss.CORPUS_SOFTMAX](batch)
    loss.backward()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported inside the losses: core.train_config (and the CLI) read Loss without it
    import torch


class Loss(StrEnum):
    """Names of the adapter losses (the values stored in a run's config)."""

    CORPUS_SOFTMAX = "corpus_softmax"
    IN_BATCH = "in_batch"


@dataclass
class LossBatch:
    """One optimisation step's inputs (see the module docstring for shapes)."""

    queries: torch.Tensor
    targets: torch.Tensor
    corpus: torch.Tensor
    excluded: list[torch.Tensor]
    temperature: float
    hard: torch.Tensor | None = None
    candidates: torch.Tensor | None = None  # sorted corpus rows to score instead of every chunk (sampling)
    excluded_mask: torch.Tensor | None = None  # (b, m) bool: ``excluded`` as a mask over the corpus, when given
    groups: tuple[torch.Tensor, torch.Tensor] | None = None  # (query codes (b,), corpus codes (m,)); 0 = shared

    def other_group(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Bool mask, the shape of ``rows`` ((b, k) per question, or (k,) for every question: broadcast to
        (b, k)), of the corpus rows outside each question's group (None when there are no groups)."""
        if self.groups is None:
            return None
        qg, cg = self.groups
        codes = cg[rows]
        if codes.dim() == 1:
            codes = codes[None, :]
        return (codes != 0) & (qg[:, None] != 0) & (codes != qg[:, None])


def corpus_softmax(batch: LossBatch) -> torch.Tensor:
    """Cross-entropy of each question over the whole corpus (AdapterLab's default).

    Every chunk other than the positive is a negative, except the question's ``excluded`` rows
    (their logits are set to -inf). Cheap when the corpus is a cached matrix: one ``(b, m)``
    product per step. With ``batch.candidates`` (a large corpus: sampled negatives) the softmax
    runs over those rows plus the batch's positives and hard negatives instead of every chunk;
    with ``batch.hard`` alone (``hard_negatives``), each question's over its positive and its own
    mined hard negatives.
    """
    import torch
    import torch.nn.functional as F

    device = batch.corpus.device
    if batch.candidates is not None:
        return _sampled_softmax(batch)
    if batch.hard is not None:
        return _hard_softmax(batch)
    logits = batch.queries @ batch.corpus.T / batch.temperature
    other = batch.other_group(torch.arange(batch.corpus.shape[0], device=device))
    if other is not None:
        logits = logits.masked_fill(other, float("-inf"))
    if batch.excluded_mask is not None:  # the same -inf entries, one op instead of a loop over the batch
        return F.cross_entropy(logits.masked_fill(batch.excluded_mask, float("-inf")), batch.targets)
    rows = [torch.full_like(ex, r) for r, ex in enumerate(batch.excluded) if ex.numel()]
    if rows:
        cols = torch.cat([ex for ex in batch.excluded if ex.numel()])
        logits = logits.index_put((torch.cat(rows), cols), torch.tensor(float("-inf"), device=device))
    return F.cross_entropy(logits, batch.targets)


def _hard_softmax(batch: LossBatch) -> torch.Tensor:
    """Each question's softmax over its positive (column 0) and its own mined hard negatives, which
    the miner drew from outside its excluded rows (a spare slot repeats the positive: masked)."""
    import torch
    import torch.nn.functional as F

    rows = torch.cat([batch.targets[:, None], batch.hard], dim=1)  # (b, 1 + h)
    logits = torch.einsum("bd,bhd->bh", batch.queries, batch.corpus[rows]) / batch.temperature
    spare = rows == batch.targets[:, None]
    other = batch.other_group(rows)
    if other is not None:
        spare |= other
    spare[:, 0] = False
    logits = logits.masked_fill(spare, float("-inf"))
    return F.cross_entropy(logits, torch.zeros_like(batch.targets))


def _sampled_softmax(batch: LossBatch) -> torch.Tensor:
    """Softmax over the batch's positives, its hard negatives and ``batch.candidates``."""
    import torch
    import torch.nn.functional as F

    parts = [batch.targets, batch.candidates]
    if batch.hard is not None:
        parts.append(batch.hard.flatten())
    cand = torch.unique(torch.cat(parts))  # sorted
    logits = batch.queries @ batch.corpus[cand].T / batch.temperature
    pos = torch.searchsorted(cand, batch.targets)
    other = batch.other_group(cand)
    if other is not None:
        other = other.clone()
        other[torch.arange(len(pos), device=pos.device), pos] = False
        logits = logits.masked_fill(other, float("-inf"))
    for r, ex in enumerate(batch.excluded):
        if ex.numel():
            bad = torch.isin(cand, ex)
            bad[pos[r]] = False
            if bad.any():
                logits[r, bad] = float("-inf")
    return F.cross_entropy(logits, pos)


def in_batch(batch: LossBatch) -> torch.Tensor:
    """LlamaIndex's loss: multiple-negatives ranking over the batch's own positives.

    Question ``i``'s candidates are the positive chunks of the batch (its own at column ``i``)
    plus any mined ``hard`` negatives. A candidate that is the question's own chunk (another
    question's positive, or a hard negative) or one of its ``excluded`` rows is masked out.
    Needs at least two questions per batch. LlamaIndex's scale 20 is ``temperature=0.05``.
    """
    import torch
    import torch.nn.functional as F

    device = batch.corpus.device
    tgt = batch.targets
    cand = tgt if batch.hard is None else torch.cat([tgt, batch.hard.flatten()])
    logits = batch.queries @ batch.corpus[cand].T / batch.temperature
    other = batch.other_group(cand)
    for r, ex in enumerate(batch.excluded):
        bad = cand == tgt[r]
        if other is not None:
            bad |= other[r]
        if ex.numel():
            bad |= torch.isin(cand, ex)
        bad[r] = False
        if bad.any():
            logits[r, bad] = float("-inf")
    return F.cross_entropy(logits, torch.arange(len(tgt), device=device))


#: Loss name -> loss function; the trainer looks losses up here.
LOSSES: dict[Loss, Callable[[LossBatch], torch.Tensor]] = {
    Loss.CORPUS_SOFTMAX: corpus_softmax,
    Loss.IN_BATCH: in_batch,
}

#: Losses whose negatives are the batch's other questions: they need batch_size >= 2.
NEEDS_BATCH = frozenset({Loss.IN_BATCH})
