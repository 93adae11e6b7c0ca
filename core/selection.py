"""Cross-validated model selection for adapter training: folds, the per-epoch estimate with its
spread, and the rule that decides between a trained adapter and the untrained identity.

Why: a 100-question hold-out cannot tell a one-point gain from noise (one question is a step of
one point), so the first release often kept the identity and threw real gains away. Training
on cached vectors costs milliseconds per epoch, so k-fold cross-validation is affordable: train
on k-1 folds for every candidate (learning rate, epochs), validate on the held-out fold, pool
the out-of-fold per-question results, pick the best candidate, then refit on everything.

Two validation designs, matched to how the adapter will be used:

* ``questions`` -- *new questions about the same corpus*: each chunk's questions are spread over
  different folds, so a held-out question's chunk keeps its other questions in training.
* ``chunks`` -- *new documents*: folds are groups of chunks, so a held-out question's chunk has
  no question in training (it stays in the corpus as a negative, as in real search). By default
  (``blocks``) each fold is one contiguous run of chunks in document order, whole documents when
  there are several, as a new document or section would be; randomly drawn chunks (``shuffled``)
  leave each held-out chunk's neighbours in training, which flatters longer training.

What a held-out question is ranked against, on the *chunks* design (``cv_validation``): every chunk
(``corpus``: strict, as if the new document joined the training documents' index) or the held-out
chunks only (``fold``: as a new document is searched on its own). ``auto`` takes ``fold`` when the
named evaluation set's chunks are the same kinds of text as the training chunks
(:func:`neighbour_mixing` >= :data:`SAME_KIND_MIXING`), where the strict ranking under-trained; for
another kind of text, or none known, ``corpus``, which guards better where no fold can show the shift. With
none named, the ingested chunks no training question asks about stand in for it
(:func:`core.training.unasked_search_chunks`).

Candidates are (learning rate, epochs, shrinkage alpha): the fold model after each epoch is also
scored shrunk toward the identity, ``identity + alpha (trained - identity)`` for alpha in the
grid (default 0.25, 0.5, 0.75 and 1), which costs evaluations only.

The rule (:func:`choose`): score = (hit@k + MRR@k) / 2 per question; the gain of a candidate is
the mean over all out-of-fold questions of (score with the adapter - score of the base model);
the candidate with the largest gain wins; **train only when that gain is above zero**, otherwise
keep the identity; the refit's weights are shrunk by the chosen alpha. Every training question is
validated exactly once per candidate, so the estimate uses all the data instead of a small split.
Measured on the Lyft protocols (bench/README.md): blocks + shrinkage beat shuffled folds without
shrinkage on all three; the one-standard-error rules (``one_se_fewer`` / ``one_se_more``) are
options, not the default.

Example::

    folds = make_folds(groups=[0, 0, 1, 1, 2], k=2, design="questions", seed=0)
    res = choose({(1e-4, 3): per_fold_gains, ...})
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DESIGNS = ("auto", "questions", "chunks")
VALIDATIONS = ("auto", "corpus", "fold")
#: ``cv_validation="auto"``: the new documents count as the same kinds of text as the training
#: documents at this neighbour mixing or above (:func:`neighbour_mixing`; measured on the Lyft 10-K:
#: 0.83-0.98 where both sides hold the same kinds of section, 0.22-0.37 where the new document is
#: another kind of text, e.g. the filing's employment agreements against its business sections)
SAME_KIND_MIXING = 0.6
#: what a blind run's validation assumed when nothing stood in for the evaluation set (the Train page and the CLI
#: add where to say otherwise)
BLIND_NOTE = (
    "nothing named, and (almost) every chunk has training questions: validation assumes new documents and ranks "
    "held-out questions against every chunk, the stricter estimate"
)
MIXING_NEIGHBOURS = 10


def make_folds(
    groups: Sequence[int], k: int, design: str, seed: int, *, blocks: bool = False, units: Sequence[Any] | None = None
) -> list[list[int]]:
    """Split example indices into ``k`` folds. ``groups[i]`` is the chunk of example ``i``.

    ``questions``: each chunk's examples go to different folds (round robin from a running
    offset), so the other questions of a held-out question's chunk stay in training.
    ``chunks``: all examples of a chunk go to one fold (grouped k-fold), chunks shuffled.
    ``chunks`` with ``blocks``: each fold is one contiguous run of chunks in corpus order
    (``groups`` are corpus positions), like a new document or a new section; ``units[i]``
    (e.g. the document of example ``i``) keeps whole units together when there are at least
    ``k`` of them. Runs are balanced by question count.
    """
    if design not in ("questions", "chunks"):
        raise ValueError(f"design must be 'questions' or 'chunks', got {design!r}")
    by: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(int(g), []).append(i)
    keys = sorted(by)
    if design == "chunks" and blocks:
        return _block_folds(by, keys, k, units)
    rng = random.Random(seed)
    rng.shuffle(keys)
    k = max(2, min(k, len(keys) if design == "chunks" else len(groups)))
    folds: list[list[int]] = [[] for _ in range(k)]
    if design == "chunks":
        for j, key in enumerate(keys):
            folds[j % k].extend(by[key])
    else:
        offset = 0
        for key in keys:
            members = by[key][:]
            rng.shuffle(members)
            for t, i in enumerate(members):
                folds[(offset + t) % k].append(i)
            offset += len(members)
    return [sorted(f) for f in folds if f]


def _block_folds(by: dict[int, list[int]], keys: list[int], k: int, units: Sequence[Any] | None) -> list[list[int]]:
    """Contiguous folds: chunks in corpus order, grouped into units (whole documents when there
    are at least ``k`` of them and none holds half the questions, else single chunks), cut into
    ``k`` runs of about equal size."""
    order: list[list[int]] = []  # units in corpus order, each a list of example indices
    if units is not None:
        pos: dict[Any, int] = {}
        for key in keys:
            u = units[by[key][0]]
            if u not in pos:
                pos[u] = len(order)
                order.append([])
            order[pos[u]].extend(by[key])
        total = sum(len(u) for u in order)
        if len(order) < k or max(len(u) for u in order) * 2 > total:
            order = []
    if not order:
        order = [list(by[key]) for key in keys]
    k = max(2, min(k, len(order)))
    n = sum(len(u) for u in order)
    folds: list[list[int]] = [[] for _ in range(k)]
    done = 0
    for members in order:
        # the fold whose share of the questions this unit's midpoint falls in (midpoints only grow: runs stay contiguous)
        f = min(k - 1, int((done + len(members) / 2) * k / n))
        folds[f].extend(members)
        done += len(members)
    return [sorted(f) for f in folds if f]


def choose_design(
    train_chunks: set[str], target_chunks: set[str] | None, default: str = "chunks", shared: float | None = None
) -> tuple[str, str]:
    """(design, reason) for ``auto``: ``questions`` when the evaluation set's chunks are mostly
    training chunks (new questions about the same corpus), ``chunks`` when they are mostly new.
    ``shared``: that share when the caller measured it otherwise (by text, :func:`core.distill.eval_overlap`,
    for an evaluation set chunked apart from the training set); else by chunk id."""
    if not target_chunks:
        return default, "no evaluation set named: assuming new documents (the stricter estimate)"
    if shared is None:
        shared = len(target_chunks & train_chunks) / len(target_chunks)
        what = f"{shared:.0%} of the evaluation chunks have training questions"
    else:  # by text: the same passage under other chunk ids, or boilerplate two filings share
        what = f"{shared:.0%} of the text the evaluation questions ask about is in the chunks the training questions ask about"
    if shared >= 0.5:
        return "questions", f"{what}: new questions, same corpus"
    return "chunks", f"{what}: new documents"


def neighbour_mixing(
    train_vecs: np.ndarray, target_vecs: np.ndarray, k: int = MIXING_NEIGHBOURS, limit: int = 4000, seed: int = 0
) -> float:
    """How much the target chunks sit among the training chunks (a nearest-neighbour two-sample statistic).

    For each target chunk, the share of its ``k`` nearest neighbours (cosine, among the training and the
    other target chunks) that are training chunks, divided by the share expected if both sides were drawn
    from one distribution, ``n_train / (n_train + n_target - 1)``. About 1: the new documents hold the same
    kinds of text as the training ones; near 0: their chunks mostly neighbour each other, another kind of
    text. A ratio of neighbour counts: no similarity scale enters it, only which chunks are nearest (the
    threshold :data:`SAME_KIND_MIXING` was measured with all-MiniLM-L6-v2 only). Each side is subsampled
    (seeded) to ``limit`` chunks, so a million-chunk corpus costs a ``limit`` x ``2 limit`` product.

    Example::

        neighbour_mixing(np.random.randn(50, 8), np.random.randn(40, 8))  # ~1: one distribution
    """
    rng = np.random.default_rng(seed)
    a = np.asarray(train_vecs, dtype=np.float32)
    b = np.asarray(target_vecs, dtype=np.float32)
    if len(a) > limit:
        a = a[rng.choice(len(a), limit, replace=False)]
    if len(b) > limit:
        b = b[rng.choice(len(b), limit, replace=False)]
    if len(a) == 0 or len(b) < 2:
        raise ValueError("neighbour_mixing needs training chunks and at least two target chunks")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    sims = b @ np.vstack([a, b]).T
    sims[np.arange(len(b)), len(a) + np.arange(len(b))] = -np.inf  # not itself
    k = max(1, min(k, len(a) + len(b) - 1))
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    share = float((nearest < len(a)).mean())
    return share / (len(a) / (len(a) + len(b) - 1))


def choose_validation(mixing: float | None) -> tuple[str, str]:
    """(validation, reason) for ``cv_validation="auto"`` on the *chunks* design.

    ``fold`` (rank each held-out question against the held-out chunks only, as a new document is searched)
    when the new documents are known and hold the same kinds of text as the training ones
    (``mixing >= SAME_KIND_MIXING``); otherwise ``corpus`` (against every training chunk too), the
    conservative estimate: where the new documents are another kind of text, no fold can show how far the
    training carries, and the stricter estimate shrinks more.
    """
    if mixing is None:
        return "corpus", "no evaluation set named: held-out questions ranked against every chunk (conservative)"
    if mixing >= SAME_KIND_MIXING:
        return "fold", (
            f"the new documents hold the same kinds of text as the training ones (neighbour mixing {mixing:.2f}): "
            "held-out questions ranked against the held-out chunks only, as a new document is searched"
        )
    return "corpus", (
        f"the new documents are another kind of text (neighbour mixing {mixing:.2f} < {SAME_KIND_MIXING:g}): "
        "held-out questions ranked against every chunk (conservative). The estimate still comes from held-out "
        "parts of the training documents; the gain on the new ones can be smaller: measure it on the evaluation set"
    )


@dataclass
class CVResult:
    """What cross-validation measured and decided (kept in the run record).

    ``curves[lr]`` is one dict per epoch (0 = the untrained identity): the mean and the standard
    deviation across folds of hit@k and MRR@k, and the pooled gain with its standard error.
    """

    design: str
    design_reason: str
    folds: int
    top_k: int
    lr: float
    epochs: int
    gain: float
    gain_se: float
    train: bool
    rule: str
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    seconds: float = 0.0
    alpha: float = 1.0  # shrinkage toward the identity: final weights = init + alpha (trained - init)
    shrinkage: dict[str, float] = field(default_factory=dict)  # alpha -> gain at the chosen lr and epochs
    fold_order: str = "shuffled"  # chunks design: shuffled chunks, or contiguous blocks in corpus order
    validation: str = "corpus"  # chunks design: held-out questions ranked against every chunk, or the fold's
    validation_reason: str = ""
    side_by_side: int = 1  # folds trained at once (threads on the CPU; ``seconds`` is the wall time)
    stand_in: int = 0  # none named: the ingested chunks no training question asks about that the validation read
    #: a shrunk choice's own out-of-fold point (metric means and stds, gain), as the curves give alpha 1's; empty
    #: when the choice is not shrunk
    shrunk_point: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        what = (
            f"train {self.epochs} epoch(s) at lr {self.lr:g}"
            if self.train
            else "keep the untrained identity (training did not help out of fold)"
        )
        if self.fold_order == "blocks":
            what = "folds of contiguous chunks in document order; " + what
        if self.design == "chunks" and self.validation_reason:
            what = f"validation: {self.validation_reason}; " + what
        if self.train and self.alpha != 1.0:
            what += f", shrunk toward the identity by alpha {self.alpha:g}"
        # the gain is the best candidate's on the very folds that chose it: a little optimistic, and said so
        n = sum(max(0, len(c) - 1) for c in self.curves.values()) * max(1, len(self.shrinkage))
        best_of = f"; the best of {n} candidates on these folds, so a little optimistic" if n > 1 else ""
        return (
            f"{self.folds}-fold cross-validation ({self.design}: {self.design_reason}): "
            f"gain {100 * self.gain:+.2f} ± {100 * self.gain_se:.2f} pt (mean of hit@{self.top_k} and "
            f"MRR@{self.top_k}{best_of}) -> {what}"
        )


RULE = (
    "train only when the best candidate's pooled out-of-fold gain in (hit@k + MRR@k)/2 over the "
    "untrained identity is above zero; otherwise keep the identity"
)


def pooled_gain(fold_scores: Sequence[np.ndarray], fold_base: Sequence[np.ndarray]) -> tuple[float, float]:
    """Mean and standard error of per-question (score - base score), pooled over folds."""
    diffs = np.concatenate([np.asarray(s, float) - np.asarray(b, float) for s, b in zip(fold_scores, fold_base)])
    if diffs.size == 0:
        return 0.0, 0.0
    se = float(diffs.std(ddof=1) / math.sqrt(diffs.size)) if diffs.size > 1 else 0.0
    return float(diffs.mean()), se


RULES = ("auto", "best", "one_se_fewer", "one_se_more")


def resolve_rule(rule: str, design: str) -> str:
    """The epoch rule a design gets under ``auto``: ``one_se_more`` for the *questions* design,
    ``best`` for *chunks* (new documents).

    Why: a refit sees 1/k more questions than each fold, and new questions about chunks the
    adapter trained on keep gaining for more epochs than new chunks do, so on the *questions*
    design the best out-of-fold epoch count is biased low (most of all when every chunk has a
    single training question and the folds in fact test new chunks). Measured over 10 seeds on
    the Lyft protocols (bench/README.md, "The epoch rule per design"): +0.45 hit@5 / +0.16 MRR@5
    on in-corpus questions, +0.87 / +0.80 with the longer grid of :func:`max_epochs`; on new
    documents the same rule lost 0.3 pt hit@5, so ``chunks`` keeps ``best``.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if rule != "auto":
        return rule
    return "one_se_more" if design == "questions" else "best"


def max_epochs(rule: str, design: str, epochs: int) -> int:
    """The longest training cross-validation tries: ``epochs``, or twice that under ``auto`` on the
    *questions* design, whose rule (``one_se_more``) stopped at the end of a 12-epoch grid on half
    the seeds of the in-corpus protocol. The warm-up stays that of ``epochs`` (see
    :func:`core.training.cross_validate`), so the first ``epochs`` epochs are trained exactly as
    without the extension and only later candidates are added."""
    return 2 * epochs if rule == "auto" and design == "questions" else epochs


def rule_text(rule: str = "best", alphas: Sequence[float] = ()) -> str:
    """The selection rule in words, as the run record, the CLI and the Train page show it."""
    shrink = sorted({float(a) for a in alphas} | {1.0})
    what = "candidate (epochs" + (", shrinkage alpha" if len(shrink) > 1 else "") + ")"
    text = f"the {what} with the largest pooled out-of-fold gain in (hit@k + MRR@k)/2 over the untrained identity"
    if rule == "one_se_more":
        text += (
            "; then the most epochs whose gain is above zero and within one standard error of it (the "
            "refit sees 1/k more questions than each fold, and new questions about trained chunks bear more epochs than "
            "new chunks do)"
        )
    elif rule == "one_se_fewer":
        text += "; then the fewest epochs whose gain is within one standard error of it"
    if len(shrink) > 1:
        text += "; final weights = identity + alpha (trained - identity), alpha from " + ", ".join(
            f"{a:g}" for a in shrink
        )
    return "train " + text + "; keep the identity when that gain is not above zero"


def choose(
    gains: dict[tuple, tuple[float, float]], rule: str = "best", min_gain_se: float = 0.0
) -> tuple[tuple, float, float, bool]:
    """Pick the candidate with the largest gain; train only if the chosen gain is > ``min_gain_se``
    standard errors (0: above zero; a margin counters the best of many noisy candidates landing
    above zero by chance).

    ``gains`` maps (lr, epochs >= 1[, shrinkage alpha]) to (mean gain, standard error). Ties go
    to fewer epochs, the smaller learning rate and the smaller alpha (the candidate nearer the
    identity). ``rule``: ``best`` keeps that candidate; ``one_se_fewer`` / ``one_se_more`` take,
    among the candidates whose gain is within one standard error of the best (same lr and
    alpha) and above zero when the best is, the one with the fewest / the most epochs.
    """
    if not gains:
        raise ValueError("no cross-validation candidates")
    if rule not in RULES or rule == "auto":
        raise ValueError(f"rule must be one of {RULES[1:]} (resolve 'auto' first), got {rule!r}")

    def alpha(key: tuple) -> float:
        return key[2] if len(key) > 2 else 1.0

    best = max(gains, key=lambda key: (round(gains[key][0], 12), -key[1], -key[0], -alpha(key)))
    if rule != "best":
        floor = gains[best][0] - gains[best][1]
        positive = gains[best][0] > 0  # when training helps, the rule never falls back to a candidate that does not
        near = [
            key
            for key in gains
            if key[0] == best[0]
            and alpha(key) == alpha(best)
            and gains[key][0] >= floor
            and (gains[key][0] > 0 or not positive)
        ]
        best = (min if rule == "one_se_fewer" else max)(near, key=lambda key: key[1])
    mean, se = gains[best]
    return best, mean, se, mean > max(0.0, min_gain_se) * se and mean > 0


def curve_point(metrics_per_fold: list[dict[str, float]], gain: float, gain_se: float) -> dict[str, float]:
    """Mean and std across folds of each metric, plus the pooled gain, for one epoch."""
    out: dict[str, float] = {"gain": gain, "gain_se": gain_se}
    for key in metrics_per_fold[0]:
        vals = np.array([m[key] for m in metrics_per_fold], dtype=float)
        out[f"{key} mean"] = float(vals.mean())
        out[f"{key} std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return out
