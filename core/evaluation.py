"""Retrieval metrics, per-query results, and comparisons with significance.

Definitions (the LlamaIndex guide's): for each query rank every chunk of the evaluation
corpus by cosine similarity. ``hit@k`` is 1 when a relevant chunk is in the top k;
``mrr@k`` is 1/rank of the first relevant chunk when it is in the top k, else 0. Also
``ndcg@10`` (binary relevance) and ``recall@k`` (share of the relevant chunks in the top k).
Evaluation is a matrix product and a top-k over cached embeddings: no vector store.

:func:`compare` evaluates several systems on one dataset and reports, for each metric and
each system, the delta against the baseline with a paired bootstrap 95% confidence interval
(``scipy.stats.bootstrap`` on per-query differences) and a paired test: exact McNemar
(``scipy.stats.binomtest`` on discordant queries) for hit@k, Wilcoxon signed-rank
(``scipy.stats.wilcoxon``) for the graded metrics. When several systems are tested against the
baseline, their p-values for each metric are adjusted with Holm's step-down method
(:func:`holm_adjust`), and "significant" is judged on the adjusted value: with 15 checkpoints,
one of them beating the base at p < 0.05 by luck is likely, not rare.

Example::

    res = evaluate(dataset, embedder, top_k=5)
    res.metrics            # {"hit@5": 0.79, "mrr@5": 0.64, "ndcg@10": 0.69, "recall@5": 0.79}
    cmp = compare(dataset, {"base": base, "linear": adapted}, baseline="base")
    cmp.table()            # pandas DataFrame, one row per system
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .datasets import QADataset
from .progress import Progress

if TYPE_CHECKING:
    from .embedders import Embedder

NDCG_K = 10


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def metric_names(top_k: int) -> list[str]:
    return [f"hit@{top_k}", f"mrr@{top_k}", f"ndcg@{NDCG_K}", f"recall@{top_k}"]


@dataclass
class RankResult:
    """Per-query retrieval outcome for one system on one dataset."""

    query_ids: list[str]
    first_rank: np.ndarray  # 1-based rank of the first relevant chunk in the whole corpus
    per_query: dict[str, np.ndarray]  # metric -> per-query values
    top_ids: list[list[str]]  # top max(k, 10) node ids per query
    top_scores: np.ndarray
    top_k: int

    @property
    def metrics(self) -> dict[str, float]:
        return {k: float(v.mean()) if len(v) else float("nan") for k, v in self.per_query.items()}


DEFAULT_RANK_MEMORY = 1 << 30  # bytes of working memory rank_embeddings may use beyond its inputs
CORPUS_COPY_BYTES = 256 << 20  # up to this size the corpus is normalised once (a copy), as before


def _row_norms(x: np.ndarray, rows: int = 65536) -> np.ndarray:
    """``np.linalg.norm(x, axis=1, keepdims=True)`` computed in row chunks (no full-size temporary)."""
    out = np.empty((x.shape[0], 1), dtype=np.float32)
    for a in range(0, x.shape[0], rows):
        out[a : a + rows] = np.linalg.norm(x[a : a + rows], axis=1, keepdims=True)
    return np.maximum(out, 1e-12)


def _relevant_matrix(relevant: Sequence[Sequence[int]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique relevant indices per query, padded into an (n, R) matrix, and the count per query."""
    uniq = [np.unique(np.asarray(relevant[i], dtype=np.int64)) for i in range(n)]
    counts = np.array([u.size for u in uniq], dtype=np.int64)
    width = max(1, int(counts.max()) if n else 1)
    mat = np.zeros((n, width), dtype=np.int64)
    for i, u in enumerate(uniq):
        mat[i, : u.size] = u
    return mat, counts


class FixedCorpusScorer:
    """:func:`rank_embeddings`' per-query metrics for many models' query vectors against one fixed
    corpus and one set of questions (cross-validation scores every epoch of every fold, and every
    shrunk copy): the normalised corpus and the relevant index matrix are built once, and each call
    is one product and exact rank counts, no top-k. The same normalisation, product and pessimistic
    ties as :func:`rank_embeddings`, so the metrics are equal.

    Only where the whole score matrix fits in memory (:meth:`fits`); otherwise use
    :func:`rank_embeddings`, which works in blocks.
    """

    MAX_SCORE_BYTES = 64 << 20

    def __init__(self, corpus_vecs: np.ndarray, relevant: Sequence[Sequence[int]], top_k: int = 5):
        import torch

        c = np.asarray(corpus_vecs, dtype=np.float32)
        self.ct = torch.from_numpy(c) / torch.from_numpy(_row_norms(c))  # as rank_embeddings' small corpus
        mat, self.counts = _relevant_matrix(relevant, len(relevant))
        self.rel = torch.from_numpy(mat)
        self.places = torch.arange(1, mat.shape[1] + 1)
        self.valid = self.places[None, :] <= torch.from_numpy(self.counts)[:, None]
        self.top_k = int(top_k)

    @classmethod
    def fits(cls, n_queries: int, corpus_vecs: np.ndarray, width: int = 1) -> bool:
        m, d = corpus_vecs.shape
        return n_queries * m * max(1, width) * 4 <= cls.MAX_SCORE_BYTES and m * d * 4 <= CORPUS_COPY_BYTES

    @classmethod
    def if_fits(
        cls, corpus_vecs: np.ndarray, relevant: Sequence[Sequence[int]], top_k: int = 5
    ) -> FixedCorpusScorer | None:
        """A scorer for these chunks and questions, or None where :func:`rank_embeddings` must do it."""
        width = max((len(set(r)) for r in relevant), default=1)
        return cls(corpus_vecs, relevant, top_k) if cls.fits(len(relevant), corpus_vecs, width) else None

    def __call__(self, query_vecs: np.ndarray) -> dict[str, np.ndarray]:
        """Per-query metrics, keyed as :func:`rank_embeddings` keys them."""
        return self.metrics_of_scores(self.scores(query_vecs))

    def scores(self, query_vecs: np.ndarray, normalize: bool = True):
        """The (queries, chunks) score matrix as a torch tensor: cosines, or with ``normalize=False`` the
        products of the query vectors as given with the normalised chunks (each row a positive multiple
        of the cosines, so the same ranks: a weighted sum of two such matrices ranks as the same sum of
        the query vectors would)."""
        import torch

        q = _normalize(query_vecs) if normalize else np.asarray(query_vecs, dtype=np.float32)
        with torch.no_grad():
            return torch.mm(torch.from_numpy(q), self.ct.T)

    def metrics_of_scores(self, s) -> dict[str, np.ndarray]:
        """Per-query metrics from a score matrix of :meth:`scores` (ranks only: any positive scale per row)."""
        import torch

        with torch.no_grad():
            rs = torch.gather(s, 1, self.rel).masked_fill(~self.valid, float("-inf"))
            rs, _ = torch.sort(rs, dim=1, descending=True)  # padding (-inf) sorts last
            at_least = (s[:, None, :] >= rs[:, :, None]).sum(dim=2)
            rel_at_least = ((rs[:, None, :] >= rs[:, :, None]) & self.valid[:, None, :]).sum(dim=2)
            ranks = (at_least - rel_at_least + self.places[None, :]).numpy()
        _, hit, mrr, ndcg, recall = _metrics_from_ranks(ranks, self.valid.numpy(), self.counts, self.top_k)
        k = self.top_k
        return {f"hit@{k}": hit, f"mrr@{k}": mrr, f"ndcg@{NDCG_K}": ndcg, f"recall@{k}": recall}


def rank_block_size(n_corpus: int, memory_bytes: int = DEFAULT_RANK_MEMORY) -> int:
    """Queries per block so that a block's float32 scores fit ``memory_bytes``."""
    return int(max(1, min(4096, memory_bytes // (max(1, n_corpus) * 4))))


def rank_embeddings(
    query_vecs: np.ndarray,
    corpus_vecs: np.ndarray,
    relevant: Sequence[Sequence[int]],
    top_k: int = 5,
    keep: int | None = None,
    block: int | None = None,
    memory_bytes: int = DEFAULT_RANK_MEMORY,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Metrics from vectors. ``relevant[i]`` holds the corpus indices relevant to query ``i``.

    Returns (first relevant rank per query, per-query metric arrays, top indices, top scores).
    Ranks are pessimistic, so ties never flatter a system: a non-relevant chunk scoring the same
    as a relevant one counts as ranked above it, and relevant chunks take distinct ranks.

    Memory stays bounded whatever the corpus size: queries go in blocks whose score matrix fits
    ``memory_bytes`` (``block`` overrides the size); a corpus above ``CORPUS_COPY_BYTES`` is never
    copied (the product is divided by its norms instead of normalising it first); the product and
    the top-k run in torch on all cores; the relevant chunks' ranks are read off the top-k, and
    counted over the whole row only where they can change a metric or the reported first rank.
    Beyond the inputs, peak memory is about ``memory_bytes`` plus ~0.2 GB and the outputs.

    Given the same scores, the results are those of the first release's per-row loop (kept as a
    reference in the tests). The scores themselves come from torch's matrix product (and, for a
    large corpus, a division by the norms after it), which may differ from numpy's in the last
    bit, so chunks whose cosines agree to ~1e-7 without being equal may swap places; exact ties
    (duplicate chunks) stay ties.
    """
    import torch

    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    q = _normalize(query_vecs)
    c = np.asarray(corpus_vecs)
    if c.dtype != np.float32:
        c = c.astype(np.float32)
    if c.ndim != 2 or q.shape[1] != c.shape[1]:
        raise ValueError(f"query vectors are {q.shape[1]}-d but corpus vectors are {c.shape[-1]}-d")
    n, m = q.shape[0], c.shape[0]
    keep = min(max(keep or 0, top_k, NDCG_K), m)
    block = int(block or rank_block_size(m, memory_bytes))
    # A corpus whose normalised copy is small is normalised once, exactly as the first release did.
    # A large one is never copied: each block's product is divided by the chunk norms instead.
    whole = m * c.shape[1] * 4 <= min(memory_bytes // 4, CORPUS_COPY_BYTES)
    if whole:
        ct = torch.from_numpy(c) / torch.from_numpy(_row_norms(c))
        inv = None
    else:
        ct = torch.from_numpy(c)
        inv = torch.empty((1, m), dtype=torch.float32)
        for a in range(0, m, 65536):
            inv[0, a : a + 65536] = torch.linalg.vector_norm(ct[a : a + 65536], dim=1).clamp_min_(1e-12)
    top_rows = max(1, (64 << 20) // max(1, m * 4))  # rows per top-k call (its temporaries stay small)
    scores = torch.empty((min(block, n), m), dtype=torch.float32)
    rel_mat, rel_count = _relevant_matrix(relevant, n)
    width = rel_mat.shape[1]
    first = np.full(n, np.inf)
    hit = np.zeros(n)
    mrr = np.zeros(n)
    ndcg = np.zeros(n)
    recall = np.zeros(n)
    top_idx = np.zeros((n, keep), dtype=np.int64)
    top_sc = np.zeros((n, keep), dtype=np.float32)
    places = torch.arange(1, width + 1, dtype=torch.int64)
    limit = max(top_k, NDCG_K)  # ranks beyond this only matter for the best relevant chunk
    with torch.no_grad():
        for start in range(0, n, block):
            qb = torch.from_numpy(q[start : start + block])
            b = qb.shape[0]
            s = torch.mm(qb, ct.T, out=scores[:b])  # one buffer for every block: never two alive
            if inv is not None:
                s.div_(inv)
            ts = torch.empty((b, keep), dtype=torch.float32)
            ti = torch.empty((b, keep), dtype=torch.int64)
            for r0 in range(0, b, top_rows):
                torch.topk(
                    s[r0 : r0 + top_rows],
                    keep,
                    dim=1,
                    largest=True,
                    sorted=True,
                    out=(ts[r0 : r0 + top_rows], ti[r0 : r0 + top_rows]),
                )
            top_idx[start : start + b] = ti.numpy()
            top_sc[start : start + b] = ts.numpy()
            cnt = torch.from_numpy(rel_count[start : start + b])
            if not bool((cnt > 0).any()):
                continue
            valid = places[None, :] <= cnt[:, None]  # (b, width): which padded slots are real
            rs = torch.gather(s, 1, torch.from_numpy(rel_mat[start : start + b]))
            rs = torch.where(valid, rs, torch.tensor(float("-inf")))
            rs, _ = torch.sort(rs, dim=1, descending=True)  # padding (-inf) sorts last
            # Pessimistic ranks: a non-relevant chunk scoring the same as a relevant one is put
            # ahead of it, and relevant chunks take distinct ranks (so nDCG never exceeds 1).
            # How many chunks score at least each relevant score: read off the top `keep` when the
            # relevant score is above the keep-th best (then every chunk at least as good is in
            # it); otherwise count over the whole row, but only where it can matter: the best
            # relevant chunk (its rank is reported) and any other whose rank could still be <= L.
            at_least = (ts[:, None, :] >= rs[:, :, None]).sum(dim=2)
            exact = rs > ts[:, keep - 1 : keep]
            rel_idx = torch.from_numpy(rel_mat[start : start + b])
            rel_in_top = ((ti[:, :, None] == rel_idx[:, None, :]) & valid[:, None, :]).any(dim=2).sum(dim=1)
            lower = (keep - rel_in_top)[:, None] + places[None, :]  # a bound on the rank when not exact
            need = valid & ~exact & ((places == 1)[None, :] | (lower <= limit))
            skip = (valid & ~exact & ~need).numpy()
            if bool(need.any()):
                # numpy's count_nonzero over a comparison is ~10x quicker than torch's bool sum here
                sn, rn, nn = s.numpy(), rs.numpy(), need.numpy()
                cnt_np = at_least.numpy()
                sub = max(1, (64 << 20) // max(1, m))  # rows per comparison mask (about 64 MB)
                for j in np.flatnonzero(nn.any(axis=0)):
                    rows = np.flatnonzero(nn[:, j])
                    for r0 in range(0, rows.size, sub):
                        rr = rows[r0 : r0 + sub]
                        contiguous = rr[-1] - rr[0] + 1 == rr.size
                        part = sn[rr[0] : rr[-1] + 1] if contiguous else sn[rr]
                        cnt_np[rr, j] = np.count_nonzero(part >= rn[rr, j, None], axis=1)
            rel_at_least = ((rs[:, None, :] >= rs[:, :, None]) & valid[:, None, :]).sum(dim=2)
            ranks = (at_least - rel_at_least + places[None, :]).numpy()
            ranks[skip] = np.iinfo(np.int64).max // 2  # beyond every cut-off and the best rank; never read
            sl = slice(start, start + b)
            first[sl], hit[sl], mrr[sl], ndcg[sl], recall[sl] = _metrics_from_ranks(
                ranks, valid.numpy(), rel_count[start : start + b], top_k
            )
    per_query = {f"hit@{top_k}": hit, f"mrr@{top_k}": mrr, f"ndcg@{NDCG_K}": ndcg, f"recall@{top_k}": recall}
    return first, per_query, top_idx, top_sc


def _metrics_from_ranks(
    ranks: np.ndarray, valid: np.ndarray, counts: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(first relevant rank, hit@k, MRR@k, nDCG@10, recall@k) per query from the ranks of its relevant
    chunks (``ranks[i, j]`` of relevant slot j, read where ``valid``; ``counts`` relevant per query)."""
    width = ranks.shape[1]
    has = counts > 0
    best = np.where(valid, ranks, np.iinfo(np.int64).max).min(axis=1)
    first = np.where(has, best, np.inf)
    got = has & (best <= top_k)
    hit = np.where(got, 1.0, 0.0)
    mrr = np.where(got, 1.0 / np.where(got, best, 1), 0.0)
    recall = np.where(has, (valid & (ranks <= top_k)).sum(axis=1) / np.maximum(counts, 1), 0.0)
    gain = np.array([0.0] + [1.0 / math.log2(r + 1) for r in range(1, NDCG_K + 1)])
    idcg_table = np.array([sum(1.0 / math.log2(j + 2) for j in range(min(r, NDCG_K))) for r in range(width + 1)])
    dcg = np.zeros(ranks.shape[0])
    for j in range(width):  # column by column: the same summation order as a per-query sum
        use = valid[:, j] & (ranks[:, j] <= NDCG_K)
        dcg += np.where(use, gain[np.clip(ranks[:, j], 0, NDCG_K)], 0.0)
    idcg = idcg_table[counts]
    ndcg = np.where(has & (idcg > 0), dcg / np.where(idcg > 0, idcg, 1.0), 0.0)
    return first, hit, mrr, ndcg, recall


@dataclass
class EmbeddedDataset:
    """A dataset's query and corpus vectors from one base embedder (compute once, reuse)."""

    dataset: QADataset
    query_ids: list[str]
    node_ids: list[str]
    query_vecs: np.ndarray
    corpus_vecs: np.ndarray
    relevant: list[list[int]]


def embed_dataset(dataset: QADataset, embedder: Embedder, progress: Progress | None = None) -> EmbeddedDataset:
    """Embed a dataset's queries and corpus with ``embedder`` (cached embedders make this free)."""
    qids = list(dataset.queries)
    nids = list(dataset.corpus)
    pos = {n: i for i, n in enumerate(nids)}

    def sub(offset: int, total: int):
        if progress is None:
            return None
        return lambda d, t, msg: progress(offset + d, total, msg)

    total = len(nids) + len(qids)
    cvecs = embedder.embed_texts([dataset.corpus[n] for n in nids], progress=sub(0, total))
    qvecs = embedder.embed_queries([dataset.queries[q] for q in qids], progress=sub(len(nids), total))
    relevant = [[pos[d] for d in dataset.relevant_docs.get(q, []) if d in pos] for q in qids]
    return EmbeddedDataset(dataset, qids, nids, qvecs, cvecs, relevant)


def evaluate_embedded(emb: EmbeddedDataset, query_vecs: np.ndarray | None = None, top_k: int = 5) -> RankResult:
    """Evaluate vectors already computed; ``query_vecs`` replaces the base query vectors (an adapter's)."""
    qv = emb.query_vecs if query_vecs is None else query_vecs
    first, per_query, top_idx, top_sc = rank_embeddings(qv, emb.corpus_vecs, emb.relevant, top_k=top_k)
    top_ids = [[emb.node_ids[j] for j in row] for row in top_idx]
    return RankResult(emb.query_ids, first, per_query, top_ids, top_sc, top_k)


def evaluate(dataset: QADataset, embedder: Embedder, top_k: int = 5, progress: Progress | None = None) -> RankResult:
    """hit@k, MRR@k, nDCG@10 and recall@k of ``embedder`` on ``dataset``, with per-query ranks."""
    return evaluate_embedded(embed_dataset(dataset, embedder, progress), top_k=top_k)


# ------------------------------------------------------------------------------------------------
# significance
# ------------------------------------------------------------------------------------------------
def paired_difference(
    metric: str, a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Delta (b - a), its paired bootstrap CI and a paired test's p-value, on per-query values: the exact
    McNemar test where every value is 0 or 1 (hit@k always; recall@k or MRR@k when each question's value is
    all or nothing, so the same outcomes get the same test and p), else the Wilcoxon signed-rank test."""
    from scipy import stats

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    diff = b - a
    delta = float(diff.mean()) if diff.size else float("nan")
    if diff.size < 2 or np.allclose(diff, 0):
        return {"delta": delta, "ci_low": delta, "ci_high": delta, "p_value": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = stats.bootstrap(
            (diff,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        ).confidence_interval
        if _is_binary(a) and _is_binary(b):
            worse = int(((a == 1) & (b == 0)).sum())
            better = int(((a == 0) & (b == 1)).sum())
            p = stats.binomtest(better, better + worse, 0.5).pvalue if better + worse else 1.0
        else:
            p = stats.wilcoxon(b, a, zero_method="wilcox").pvalue if np.any(diff != 0) else 1.0
    return {"delta": delta, "ci_low": float(ci.low), "ci_high": float(ci.high), "p_value": float(p)}


def p_text(p: float | None) -> str:
    """A p-value as every surface shows it (the CLI, Compare, the report): 3 decimals, "<0.001" below that."""
    if p is None or math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def test_name(metric: str, a: np.ndarray | None = None, b: np.ndarray | None = None) -> str:
    """The paired test behind a metric's p-value (see :func:`paired_difference`); with the per-query values
    ``a`` and ``b``, the one used on them."""
    if a is not None and b is not None:
        binary = _is_binary(np.asarray(a, dtype=float)) and _is_binary(np.asarray(b, dtype=float))
    else:
        binary = metric.startswith("hit@")
    return "exact McNemar" if binary else "Wilcoxon signed-rank"


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error).

    Sort the m p-values ascending, multiply the i-th smallest (0-based) by ``m - i``, take the
    running maximum so the order is kept, clip to 1. ``holm_adjust([0.01, 0.04, 0.03])`` is
    ``[0.03, 0.06, 0.06]``. One p-value is returned unchanged.
    """
    p = np.asarray(list(pvalues), dtype=float)
    m = p.size
    out = np.empty(m)
    running = 0.0
    for i, idx in enumerate(np.argsort(p, kind="stable")):
        running = max(running, (m - i) * p[idx])
        out[idx] = min(1.0, running)
    return out.tolist()


#: How a checkpoint is named wherever it is compared ("<run> @ step N"): see :func:`add_holm`.
CHECKPOINT_MARK = " @ step "


def checkpoint_name(owner: str, step: int | str) -> str:
    """A checkpoint's name wherever it is compared: ``"<run or folder> @ step N"`` (:data:`CHECKPOINT_MARK`)."""
    return f"{owner}{CHECKPOINT_MARK}{step}"


def add_holm(significance: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """A copy of ``significance`` (system -> metric -> stats) with ``p_adjusted`` per entry, one family per
    metric: the systems compared (adapters, API embedders) are adjusted among themselves, and checkpoints
    ("<run> @ step N", exploratory) among every system, so adding a run's checkpoints to the appendix makes
    them pay for the search without taking the verdict from the adapters themselves."""
    out = {name: {m: dict(v) for m, v in per.items()} for name, per in significance.items()}
    metrics = list(dict.fromkeys(m for per in out.values() for m in per))
    for metric in metrics:
        names = [n for n in out if metric in out[n]]
        mains = [n for n in names if CHECKPOINT_MARK not in n]
        for family, adjust in ((mains, mains), (names, [n for n in names if n not in mains])):
            adjusted = holm_adjust([out[n][metric]["p_value"] for n in family])
            for n, p in zip(family, adjusted):
                if n in adjust:
                    out[n][metric]["p_adjusted"] = float(p)
    return out


def significance_against(
    results: dict[str, RankResult], baseline: str, top_k: int, n_resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """Every non-baseline system against ``baseline``: delta, CI, p and Holm-adjusted p per metric."""
    base_res = results[baseline]
    sig: dict[str, dict[str, dict[str, float]]] = {}
    for name, res in results.items():
        if name == baseline:
            continue
        sig[name] = {
            m: paired_difference(m, base_res.per_query[m], res.per_query[m], n_resamples=n_resamples, seed=seed)
            for m in metric_names(top_k)
        }
    return add_holm(sig)


@dataclass
class Comparison:
    """Several systems evaluated on one dataset, against a baseline."""

    dataset_name: str
    top_k: int
    baseline: str
    results: dict[str, RankResult]
    significance: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    alpha: float = 0.05

    def __post_init__(self) -> None:
        # Holm's adjustment is a function of the p-values: (re)computed here, so comparisons
        # saved before it existed gain it on load.
        self.significance = add_holm(self.significance)

    @property
    def metric_names(self) -> list[str]:
        return metric_names(self.top_k)

    @property
    def n_queries(self) -> int:
        return len(self.results[self.baseline].query_ids)

    def significant(self, system: str, metric: str) -> bool | None:
        """True when ``system``'s change in ``metric`` is significant on the Holm-adjusted p; None for the baseline."""
        sig = self.significance.get(system, {}).get(metric)
        if sig is None:
            return None
        return sig.get("p_adjusted", sig["p_value"]) < self.alpha

    def excluding(self, query_ids, n_resamples: int = 2000, seed: int = 0) -> Comparison:
        """The same comparison without ``query_ids`` (e.g. questions leaked from training).

        Per-query results are kept from the full run (ranks are over the same corpus), so
        nothing is re-embedded; means, confidence intervals and tests are recomputed.
        """
        drop = set(query_ids)
        results: dict[str, RankResult] = {}
        for name, r in self.results.items():
            idx = np.array([i for i, q in enumerate(r.query_ids) if q not in drop], dtype=np.int64)
            if idx.size == 0:
                raise ValueError("excluding these questions would leave no question to evaluate on")
            results[name] = RankResult(
                [r.query_ids[i] for i in idx],
                r.first_rank[idx],
                {k: v[idx] for k, v in r.per_query.items()},
                [r.top_ids[i] for i in idx],
                r.top_scores[idx],
                r.top_k,
            )
        sig = significance_against(results, self.baseline, self.top_k, n_resamples=n_resamples, seed=seed)
        return Comparison(self.dataset_name, self.top_k, self.baseline, results, sig, self.alpha)

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict of values per system, keyed like sentence-transformers' evaluators:
        ``system``, ``queries``, each metric (``hit@5``, ``mrr@5``, ...), and for a non-baseline
        system per metric ``delta_<m>``, ``ci_low_<m>``, ``ci_high_<m>`` (paired bootstrap 95%),
        ``p_<m>``, ``p_holm_<m>`` and ``significant_<m>`` (judged on the Holm-adjusted p).
        Display labels ("Δ mrr@5", "95% CI") are made where rows are shown (``core.reports``, ``ui``)."""
        out = []
        for name, res in self.results.items():
            row: dict[str, Any] = {"system": name, "queries": len(res.query_ids)}
            row.update(res.metrics)
            for metric in self.metric_names:
                sig = self.significance.get(name, {}).get(metric)
                if sig is None:
                    continue
                p_holm = sig.get("p_adjusted", sig["p_value"])
                row.update(
                    {
                        f"delta_{metric}": sig["delta"],
                        f"ci_low_{metric}": sig["ci_low"],
                        f"ci_high_{metric}": sig["ci_high"],
                        f"p_{metric}": sig["p_value"],
                        f"p_holm_{metric}": p_holm,
                        f"significant_{metric}": bool(p_holm < self.alpha),
                    }
                )
            out.append(row)
        return out

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows())

    def per_query_frame(self, system: str):
        """Baseline vs ``system`` per query: ranks, change (better / worse / same)."""
        import pandas as pd

        base = self.results[self.baseline]
        other = self.results[system]
        ds_rank = {q: r for q, r in zip(base.query_ids, base.first_rank)}
        rows = []
        mrr_key = f"mrr@{self.top_k}"
        for i, q in enumerate(other.query_ids):
            b_rank = ds_rank.get(q, np.inf)
            o_rank = other.first_rank[i]
            b_rr = base.per_query[mrr_key][i]
            o_rr = other.per_query[mrr_key][i]
            change = "better" if o_rank < b_rank else "worse" if o_rank > b_rank else "same"
            rows.append(
                {
                    "query_id": q,
                    "base_rank": None if np.isinf(b_rank) else int(b_rank),
                    "rank": None if np.isinf(o_rank) else int(o_rank),
                    "base_rr": b_rr,
                    "rr": o_rr,
                    "change": change,
                    "top_ids": other.top_ids[i][: self.top_k],
                    "base_top_ids": base.top_ids[i][: self.top_k],
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset_name,
            "top_k": self.top_k,
            "baseline": self.baseline,
            "alpha": self.alpha,
            "results": {
                name: {
                    "query_ids": r.query_ids,
                    "first_rank": [None if np.isinf(x) else int(x) for x in r.first_rank],
                    "per_query": {k: v.tolist() for k, v in r.per_query.items()},
                    "top_ids": r.top_ids,
                    "top_scores": r.top_scores.tolist(),
                }
                for name, r in self.results.items()
            },
            "significance": self.significance,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Comparison:
        results = {}
        for name, r in d["results"].items():
            results[name] = RankResult(
                list(r["query_ids"]),
                np.array([np.inf if x is None else x for x in r["first_rank"]], dtype=float),
                {k: np.asarray(v, dtype=float) for k, v in r["per_query"].items()},
                [list(x) for x in r["top_ids"]],
                np.asarray(r["top_scores"], dtype=np.float32),
                int(d["top_k"]),
            )
        return cls(
            d["dataset"], int(d["top_k"]), d["baseline"], results, d.get("significance", {}), d.get("alpha", 0.05)
        )


def compare(
    dataset: QADataset,
    systems: dict[str, Any],
    baseline: str | None = None,
    top_k: int = 5,
    dataset_name: str = "dataset",
    n_resamples: int = 2000,
    seed: int = 0,
    progress: Progress | None = None,
) -> Comparison:
    """Evaluate every system (name -> embedder) on ``dataset`` and test each against ``baseline``.

    Systems that share a base embedder (an adapter and its base) reuse one set of corpus and
    query vectors: only the adapter's matrix product is new.
    """
    if not systems:
        raise ValueError("compare() needs at least one system")
    baseline = baseline or next(iter(systems))
    if baseline not in systems:
        raise ValueError(f"baseline {baseline!r} is not among the systems {list(systems)}")
    embedded: dict[str, EmbeddedDataset] = {}
    results: dict[str, RankResult] = {}
    names = list(systems)
    for i, name in enumerate(names):
        system = systems[name]
        base = getattr(system, "base", None)
        adapter_tf = getattr(system, "transform", None)
        root = base if adapter_tf is not None and base is not None else system
        key = root.identity
        if progress:
            progress(i, len(names), f"evaluating {name}")
        if key not in embedded:
            # the embedding itself reports too (an API embedder's texts/s), within this system's share
            sub = (
                None
                if progress is None
                else (
                    lambda d, t, msg, _i=i, _name=name: progress(
                        _i + (d / t if t else 0), len(names), f"{_name}: {msg}"
                    )
                )
            )
            embedded[key] = embed_dataset(dataset, root, progress=sub)
        emb = embedded[key]
        if adapter_tf is not None:
            in_dim = emb.query_vecs.shape[1]
            from .adapters import check_adapter_fits

            check_adapter_fits(system.adapter, in_dim, where=name)
            results[name] = evaluate_embedded(emb, adapter_tf(emb.query_vecs), top_k=top_k)
        else:
            results[name] = evaluate_embedded(emb, top_k=top_k)
    sig = significance_against(results, baseline, top_k, n_resamples=n_resamples, seed=seed)
    if progress:
        progress(len(names), len(names), "done")
    return Comparison(dataset_name, top_k, baseline, results, sig)
