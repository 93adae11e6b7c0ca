"""Metrics checked by hand on tiny known vectors, comparisons, significance, serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from core.adapters import AdapterError, build_adapter
from core.datasets import QADataset
from core.embedders import AdapterEmbedder
from core.evaluation import (
    Comparison,
    FixedCorpusScorer,
    RankResult,
    add_holm,
    compare,
    evaluate,
    holm_adjust,
    metric_names,
    paired_difference,
    rank_embeddings,
)

# Corpus = the 5 standard basis vectors, so a query's cosine score for doc j is its j-th
# (normalised) component: the ranking can be read off the query vector.
CORPUS = np.eye(5, dtype=np.float32)
QUERIES = np.array(
    [
        [5, 4, 3, 2, 1],  # q0: relevant d2 -> rank 3
        [1, 2, 3, 4, 5],  # q1: relevant d0, d3 -> ranks 5 and 2
        [3, 3, 2, 1, 0],  # q2: relevant d1, tied with d0 -> pessimistic rank 2 (not 1)
    ],
    dtype=np.float32,
)
RELEVANT = [[2], [0, 3], [1]]


def _ndcg(ranks, n_rel, k=10):
    dcg = sum(1 / math.log2(r + 1) for r in ranks if r <= k)
    idcg = sum(1 / math.log2(j + 2) for j in range(min(n_rel, k)))
    return dcg / idcg


def test_hand_computed_metrics_top5():
    first, pq, top_idx, top_sc = rank_embeddings(QUERIES, CORPUS, RELEVANT, top_k=5)
    assert first.tolist() == [3, 2, 2]
    assert pq["hit@5"].tolist() == [1, 1, 1]
    assert np.allclose(pq["mrr@5"], [1 / 3, 1 / 2, 1 / 2])
    assert np.allclose(pq["recall@5"], [1, 1, 1])
    assert np.allclose(pq["ndcg@10"], [_ndcg([3], 1), _ndcg([2, 5], 2), _ndcg([2], 1)])
    assert top_idx[0].tolist() == [0, 1, 2, 3, 4] and top_idx[1].tolist() == [4, 3, 2, 1, 0]
    assert np.allclose(top_sc[0], QUERIES[0] / np.linalg.norm(QUERIES[0]))


@pytest.mark.parametrize(
    "k, hit, mrr, recall",
    [
        (1, [0, 0, 0], [0, 0, 0], [0, 0, 0]),
        (2, [0, 1, 1], [0, 1 / 2, 1 / 2], [0, 1 / 2, 1]),
        (3, [1, 1, 1], [1 / 3, 1 / 2, 1 / 2], [1, 1 / 2, 1]),
    ],
)
def test_hand_computed_metrics_small_k(k, hit, mrr, recall):
    _, pq, _, _ = rank_embeddings(QUERIES, CORPUS, RELEVANT, top_k=k)
    assert pq[f"hit@{k}"].tolist() == hit
    assert np.allclose(pq[f"mrr@{k}"], mrr)
    assert np.allclose(pq[f"recall@{k}"], recall)
    assert set(pq) == set(metric_names(k))


def test_ties_do_not_flatter():
    # every chunk scores the same: the relevant one counts as last
    first, pq, _, _ = rank_embeddings(np.ones((1, 5), np.float32), CORPUS, [[4]], top_k=3)
    assert first[0] == 5 and pq["hit@3"][0] == 0 and pq["mrr@3"][0] == 0
    # a duplicate of the relevant chunk that is not itself relevant ranks ahead of it
    corpus = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    first, pq, _, _ = rank_embeddings(np.array([[1, 0.1]], np.float32), corpus, [[1]], top_k=1)
    assert first[0] == 2 and pq["hit@1"][0] == 0


def test_tied_relevant_chunks_take_distinct_ranks():
    # two relevant chunks with identical vectors, both at the top: ranks 1 and 2, nDCG exactly 1
    corpus = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    first, pq, _, _ = rank_embeddings(np.array([[1, 0]], np.float32), corpus, [[0, 1]], top_k=1)
    assert first[0] == 1
    assert pq["ndcg@10"][0] == pytest.approx(1.0)
    assert pq["recall@1"][0] == pytest.approx(0.5)


def test_metrics_ignore_vector_norms_and_validate_inputs():
    _, a, _, _ = rank_embeddings(QUERIES, CORPUS, RELEVANT)
    _, b, _, _ = rank_embeddings(QUERIES * 7.5, CORPUS * 0.1, RELEVANT)
    assert all(np.allclose(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="top_k"):
        rank_embeddings(QUERIES, CORPUS, RELEVANT, top_k=0)
    with pytest.raises(ValueError, match="5-d but corpus vectors are 4-d"):
        rank_embeddings(QUERIES, CORPUS[:, :4], RELEVANT)


def test_a_query_with_nothing_relevant_in_the_corpus_scores_zero():
    first, pq, _, _ = rank_embeddings(QUERIES[:1], CORPUS, [[]])
    assert math.isinf(first[0]) and pq["hit@5"][0] == 0 and pq["ndcg@10"][0] == 0


# ------------------------------------------------------------------------------------------------
# datasets and embedders
# ------------------------------------------------------------------------------------------------
class LookupEmbedder:
    """Vectors from a table: queries and chunks by their text."""

    def __init__(self, vectors: dict[str, np.ndarray], identity: str = "lookup"):
        self.vectors = vectors
        self.identity = identity
        self.dimension = len(next(iter(vectors.values())))
        self.calls = 0

    def _get(self, texts):
        self.calls += 1
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)

    embed_queries = lambda self, texts, progress=None: self._get(texts)  # noqa: E731
    embed_texts = lambda self, texts, progress=None: self._get(texts)  # noqa: E731


def tiny_dataset() -> tuple[QADataset, dict[str, np.ndarray]]:
    corpus = {f"d{j}": f"doc {j}" for j in range(5)}
    queries = {f"q{i}": f"query {i}" for i in range(3)}
    rel = {f"q{i}": [f"d{j}" for j in r] for i, r in enumerate(RELEVANT)}
    vectors = {f"doc {j}": CORPUS[j] for j in range(5)}
    vectors.update({f"query {i}": QUERIES[i] for i in range(3)})
    return QADataset(queries, corpus, rel), vectors


def test_evaluate_on_a_dataset():
    ds, vectors = tiny_dataset()
    res = evaluate(ds, LookupEmbedder(vectors), top_k=5)
    assert res.query_ids == ["q0", "q1", "q2"]
    assert res.metrics["hit@5"] == 1.0
    assert res.metrics["mrr@5"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert res.top_ids[1][:2] == ["d4", "d3"]


def _adapter_swapping(dim: int, perm: list[int]):
    a = build_adapter("linear", dim)
    with torch.no_grad():
        a.linear.weight.copy_(torch.eye(dim)[perm])
    return a


def test_compare_gives_the_base_row_and_deltas():
    ds, vectors = tiny_dataset()
    base = LookupEmbedder(vectors)
    # an adapter that moves each query's mass onto its relevant chunk: reverse q1, swap dims 0/2 of q0
    better = _adapter_swapping(5, [2, 1, 0, 3, 4])
    systems = {"base": base, "swap": AdapterEmbedder(base, better)}
    cmp = compare(ds, systems, top_k=5, dataset_name="tiny", n_resamples=200)
    assert base.calls == 2  # corpus once + queries once, shared by the adapter system
    rows = {r["system"]: r for r in cmp.rows()}
    assert list(rows) == ["base", "swap"]
    assert "delta_mrr@5" not in rows["base"]
    swap = cmp.results["swap"]
    for m in cmp.metric_names:
        assert rows["swap"][f"delta_{m}"] == pytest.approx(swap.metrics[m] - cmp.results["base"].metrics[m])
        lo, hi = rows["swap"][f"ci_low_{m}"], rows["swap"][f"ci_high_{m}"]
        assert lo <= rows["swap"][f"delta_{m}"] <= hi
        assert 0 <= rows["swap"][f"p_{m}"] <= rows["swap"][f"p_holm_{m}"] <= 1
        assert isinstance(rows["swap"][f"significant_{m}"], bool)
    # values only: every key is a metric id or a prefixed one, never a display label
    assert all(" " not in key for row in rows.values() for key in row)
    # q0: d2 moves to the top; rank 3 -> 1
    assert swap.first_rank[0] == 1
    table = cmp.table()
    assert list(table["system"]) == ["base", "swap"]


def test_compare_refuses_a_misfit_adapter_and_bad_baselines():
    ds, vectors = tiny_dataset()
    base = LookupEmbedder(vectors)
    with pytest.raises(AdapterError, match="expects 4-dimensional"):
        compare(ds, {"base": base, "bad": AdapterEmbedder(base, build_adapter("linear", 4))})
    with pytest.raises(ValueError, match="baseline"):
        compare(ds, {"base": base}, baseline="nope")
    with pytest.raises(ValueError, match="at least one"):
        compare(ds, {})


# ------------------------------------------------------------------------------------------------
# significance
# ------------------------------------------------------------------------------------------------
def test_identical_systems_have_no_difference():
    a = np.random.default_rng(0).random(40)
    for metric in ("hit@5", "mrr@5"):
        d = paired_difference(metric, a, a.copy())
        assert d == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}


def test_a_clearly_better_system_is_significant():
    rng = np.random.default_rng(1)
    base_hit = (rng.random(60) < 0.4).astype(float)
    better_hit = np.maximum(base_hit, (rng.random(60) < 0.8).astype(float))
    d = paired_difference("hit@5", base_hit, better_hit)
    assert d["delta"] > 0 and d["p_value"] < 0.05 and d["ci_low"] > 0

    base_rr = rng.random(60) * 0.5
    better_rr = np.minimum(1.0, base_rr + 0.2 + rng.random(60) * 0.1)
    d = paired_difference("mrr@5", base_rr, better_rr)
    assert d["delta"] == pytest.approx(float(np.mean(better_rr - base_rr)))
    assert d["p_value"] < 0.05 and d["ci_low"] > 0 and d["ci_high"] >= d["delta"]
    # and the other way round it is significantly worse
    d = paired_difference("mrr@5", better_rr, base_rr)
    assert d["ci_high"] < 0 and d["p_value"] < 0.05


def test_a_noisy_difference_is_not_significant():
    rng = np.random.default_rng(2)
    a = (rng.random(30) < 0.5).astype(float)
    b = a.copy()
    b[:2] = 1 - b[:2]  # one query better, one worse (or two flips): no evidence either way
    d = paired_difference("hit@5", a, b)
    assert d["p_value"] > 0.05 and d["ci_low"] <= 0 <= d["ci_high"]


def test_holm_step_down_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.2]) == [0.2]
    assert holm_adjust([0.5, 0.6]) == [1.0, 1.0]  # clipped to 1
    assert holm_adjust([]) == []
    sig = add_holm(
        {
            "a": {"hit@5": {"p_value": 0.01}, "mrr@5": {"p_value": 0.02}},
            "b": {"hit@5": {"p_value": 0.04}, "mrr@5": {"p_value": 0.02}},
        }
    )
    # one family per metric, over the systems
    assert (sig["a"]["hit@5"]["p_adjusted"], sig["b"]["hit@5"]["p_adjusted"]) == pytest.approx((0.02, 0.04))
    assert (sig["a"]["mrr@5"]["p_adjusted"], sig["b"]["mrr@5"]["p_adjusted"]) == pytest.approx((0.04, 0.04))


def _fake_comparison(n_systems: int, p_lucky: float = 0.02) -> Comparison:
    """Systems whose raw p-values are given: one 'lucky' at p_lucky, the others at 0.5."""
    n = 10
    hits = np.ones(n)
    res = RankResult(
        [f"q{i}" for i in range(n)],
        np.ones(n),
        {m: hits for m in metric_names(5)},
        [["d"] * 10] * n,
        np.zeros((n, 10), dtype=np.float32),
        5,
    )
    results = {"base": res, **{f"ck{i}": res for i in range(n_systems)}}
    sig = {
        f"ck{i}": {
            m: {"delta": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p_value": p_lucky if i == 0 else 0.5}
            for m in metric_names(5)
        }
        for i in range(n_systems)
    }
    return Comparison("set", 5, "base", results, sig)


def test_significance_is_judged_on_the_holm_adjusted_p():
    one = _fake_comparison(1)
    assert one.significant("ck0", "hit@5") is True and one.significant("base", "hit@5") is None
    many = _fake_comparison(15)  # 0.02 * 15 = 0.3: luck among 15 checkpoints is not evidence
    row = next(r for r in many.rows() if r["system"] == "ck0")
    assert row["p_hit@5"] == 0.02 and row["p_holm_hit@5"] == pytest.approx(0.3)
    assert row["significant_hit@5"] is False and many.significant("ck0", "hit@5") is False
    # a comparison saved before the adjustment existed gains it on load
    d = many.to_dict()
    for per in d["significance"].values():
        for v in per.values():
            v.pop("p_adjusted")
    assert Comparison.from_dict(d).significance["ck0"]["hit@5"]["p_adjusted"] == pytest.approx(0.3)


def test_excluding_queries_recomputes_the_statistics():
    ds, vectors = tiny_dataset()
    base = LookupEmbedder(vectors)
    cmp = compare(
        ds, {"base": base, "swap": AdapterEmbedder(base, _adapter_swapping(5, [2, 1, 0, 3, 4]))}, n_resamples=100
    )
    sub = cmp.excluding(["q0"], n_resamples=100)
    assert sub.n_queries == 2 and sub.results["swap"].query_ids == ["q1", "q2"]
    for name in ("base", "swap"):
        assert sub.results[name].metrics["mrr@5"] == pytest.approx(cmp.results[name].per_query["mrr@5"][1:].mean())
    assert sub.significance["swap"]["mrr@5"]["delta"] == pytest.approx(
        sub.results["swap"].metrics["mrr@5"] - sub.results["base"].metrics["mrr@5"]
    )
    assert cmp.n_queries == 3  # the original is untouched
    with pytest.raises(ValueError, match="no question"):
        cmp.excluding(["q0", "q1", "q2"])


# ------------------------------------------------------------------------------------------------
# serialisation and drill-down
# ------------------------------------------------------------------------------------------------
def _comparison() -> Comparison:
    ds, vectors = tiny_dataset()
    base = LookupEmbedder(vectors)
    worse = _adapter_swapping(5, [1, 0, 2, 3, 4])  # q2: d1 gets d0's score and vice versa
    return compare(
        ds,
        {
            "base": base,
            "swap": AdapterEmbedder(base, _adapter_swapping(5, [2, 1, 0, 3, 4])),
            "other": AdapterEmbedder(base, worse),
        },
        dataset_name="tiny",
        n_resamples=100,
    )


def test_comparison_round_trip():
    cmp = _comparison()
    cmp.results["base"].first_rank[2] = np.inf  # a query whose chunk is missing survives JSON
    back = Comparison.from_dict(json.loads(json.dumps(cmp.to_dict())))
    assert (back.dataset_name, back.top_k, back.baseline, back.alpha) == ("tiny", 5, "base", 0.05)
    assert list(back.results) == list(cmp.results)
    for name, r in cmp.results.items():
        b = back.results[name]
        assert b.query_ids == r.query_ids and b.top_ids == r.top_ids
        assert np.array_equal(b.first_rank, r.first_rank)
        assert b.metrics == pytest.approx(r.metrics)
        assert np.allclose(b.top_scores, r.top_scores)
    assert back.significance == cmp.significance
    assert back.table().equals(cmp.table())


def test_per_query_frame():
    cmp = _comparison()
    frame = cmp.per_query_frame("swap").set_index("query_id")
    base_ranks = cmp.results["base"].first_rank
    swap_ranks = cmp.results["swap"].first_rank
    for i, q in enumerate(["q0", "q1", "q2"]):
        expected = "better" if swap_ranks[i] < base_ranks[i] else "worse" if swap_ranks[i] > base_ranks[i] else "same"
        assert frame.loc[q, "change"] == expected
        assert frame.loc[q, "base_rank"] == base_ranks[i] and frame.loc[q, "rank"] == swap_ranks[i]
    assert frame.loc["q0", "change"] == "better"  # rank 3 -> 1
    assert len(frame.loc["q0", "top_ids"]) == 5
    other = cmp.per_query_frame("other").set_index("query_id")
    assert other.loc["q2", "change"] == "same"  # d0 and d1 swap places but stay tied
    assert set(cmp.per_query_frame("base")["change"]) == {"same"}


# ------------------------------------------------------------------------------------------------
# the bounded-memory ranking against the first release's implementation (kept here verbatim)
# ------------------------------------------------------------------------------------------------
def _reference_rank_embeddings(query_vecs, corpus_vecs, relevant, top_k=5, keep=None, block=1024):
    def norm(x):
        x = np.asarray(x, dtype=np.float32)
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(n, 1e-12)

    q = norm(query_vecs)
    c = norm(corpus_vecs)
    n, m = q.shape[0], c.shape[0]
    keep = min(max(keep or 0, top_k, 10), m)
    first = np.full(n, np.inf)
    hit, mrr, ndcg, recall = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    top_idx = np.zeros((n, keep), dtype=np.int64)
    top_sc = np.zeros((n, keep), dtype=np.float32)
    for start in range(0, n, block):
        s = q[start : start + block] @ c.T
        part = np.argpartition(-s, keep - 1, axis=1)[:, :keep]
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        top_idx[start : start + len(s)] = np.take_along_axis(part, order, axis=1)
        top_sc[start : start + len(s)] = np.take_along_axis(ps, order, axis=1)
        for r in range(len(s)):
            i = start + r
            rel = np.asarray(relevant[i], dtype=np.int64)
            if rel.size == 0:
                continue
            rel = np.unique(rel)
            rel_scores = np.sort(s[r, rel])[::-1]
            at_least = (s[r][None, :] >= rel_scores[:, None]).sum(axis=1)
            rel_at_least = (rel_scores[None, :] >= rel_scores[:, None]).sum(axis=1)
            ranks = (at_least - rel_at_least) + np.arange(1, rel.size + 1)
            best = int(ranks.min())
            first[i] = best
            if best <= top_k:
                hit[i] = 1.0
                mrr[i] = 1.0 / best
            recall[i] = float((ranks <= top_k).sum()) / rel.size
            dcg = float(sum(1.0 / math.log2(rk + 1) for rk in ranks if rk <= 10))
            idcg = float(sum(1.0 / math.log2(j + 2) for j in range(min(rel.size, 10))))
            ndcg[i] = dcg / idcg if idcg else 0.0
    per_query = {f"hit@{top_k}": hit, f"mrr@{top_k}": mrr, "ndcg@10": ndcg, f"recall@{top_k}": recall}
    return first, per_query, top_idx, top_sc


def _exact_rows(rng, n: int) -> np.ndarray:
    """``n`` vectors of 16 entries (ten ±1, six ±3: norm 8), so that every cosine between two of them is a
    multiple of 1/64 in any order of summation. Exact ties then stay exact in every BLAS kernel: with
    Gaussian vectors, one CPU's matrix product gave two copies of a chunk different scores."""
    mags = np.tile(np.array([1.0] * 10 + [3.0] * 6, dtype=np.float32), (n, 1))
    return (rng.permuted(mags, axis=1) * rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n, 16))).astype(
        np.float32
    )


def _tied_problem(seed: int, n_corpus: int = 400, n_queries: int = 120):
    rng = np.random.default_rng(seed)
    corpus = _exact_rows(rng, n_corpus)
    # exact ties: duplicated chunks (some relevant, some not) and all-zero chunks
    dup = rng.choice(n_corpus, size=n_corpus // 5, replace=False)
    corpus[dup[: len(dup) // 2]] = corpus[dup[len(dup) // 2 :]]
    corpus[rng.choice(n_corpus, size=8, replace=False)] = 0.0
    queries = _exact_rows(rng, n_queries)
    queries[: n_queries // 4] = corpus[rng.choice(n_corpus, size=n_queries // 4)]  # a query equal to a chunk
    queries[n_queries // 4 : n_queries // 4 + 3] = 0.0  # every chunk ties
    relevant = []
    for i in range(n_queries):
        k = int(rng.integers(0, 5))  # 0..4 relevant chunks, with repeats, some near the query
        rel = list(rng.choice(n_corpus, size=k))
        if k and i < n_queries // 4:
            rel.append(int(np.argmax(corpus @ queries[i])))
        relevant.append(rel + rel[:1])
    return queries, corpus, relevant


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kwargs", [{}, {"block": 7}, {"memory_bytes": 40_000}])
def test_bounded_ranking_matches_the_reference_implementation(seed, kwargs, monkeypatch):
    import core.evaluation

    # a small budget: blocks of 25 queries, and the corpus is divided by its norms, not copied
    monkeypatch.setattr(core.evaluation, "CORPUS_COPY_BYTES", 64 * 16 * 4)
    queries, corpus, relevant = _tied_problem(seed)
    for top_k in (1, 5, 12):
        ref = _reference_rank_embeddings(queries, corpus, relevant, top_k=top_k)
        got = rank_embeddings(queries, corpus, relevant, top_k=top_k, **kwargs)
        assert np.array_equal(got[0], ref[0])
        for name in ref[1]:
            assert np.array_equal(got[1][name], ref[1][name]), name
        assert got[2].shape == ref[2].shape
        assert np.allclose(got[3], ref[3], atol=1e-6)
        # tied scores may list tied chunks in either order; untied positions are the same chunks
        c = corpus / np.maximum(np.linalg.norm(corpus, axis=1, keepdims=True), 1e-12)
        q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        for i in range(len(queries)):
            assert np.allclose((q[i] @ c[got[2][i]].T), ref[3][i], atol=1e-6)


def test_bounded_ranking_block_size_follows_the_memory_budget():
    from core.evaluation import rank_block_size

    assert rank_block_size(1_000_000, 1 << 30) < rank_block_size(100_000, 1 << 30)
    assert rank_block_size(1_000_000, 1 << 30) * 1_000_000 * 4 <= 1 << 30
    assert rank_block_size(10, 1) == 1


def test_bounded_ranking_many_relevant_chunks_tied_at_the_top_k_boundary():
    # 12 identical relevant chunks fill (and overflow) the kept top 10, plus non-relevant twins:
    # ranks at the boundary must come from full counts, not from the top-k alone
    rng = np.random.default_rng(5)
    corpus = rng.normal(size=(60, 8)).astype(np.float32)
    corpus[:15] = corpus[0]
    queries = np.stack([corpus[0], corpus[0] + 0.01, rng.normal(size=8).astype(np.float32)])
    relevant = [list(range(12)), list(range(3, 14)) + [40], [0, 1, 2, 50]]
    for top_k in (1, 5, 10, 12):
        ref = _reference_rank_embeddings(queries, corpus, relevant, top_k=top_k)
        got = rank_embeddings(queries, corpus, relevant, top_k=top_k)
        assert np.array_equal(got[0], ref[0])
        assert all(np.array_equal(got[1][k], ref[1][k]) for k in ref[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixed_corpus_scorer_gives_rank_embeddings_metrics_exactly(seed):
    # duplicated and all-zero chunks, queries equal to chunks, 0 to 5 relevant chunks with repeats
    queries, corpus, relevant = _tied_problem(seed)
    for top_k in (1, 5, 12):
        scorer = FixedCorpusScorer(corpus, relevant, top_k)
        for q in (queries, queries * 3.0 + 0.01):  # built once, scores any query vectors
            _, ref, _, _ = rank_embeddings(q, corpus, relevant, top_k=top_k)
            got = scorer(q)
            assert set(got) == set(ref)
            for name in ref:
                assert np.array_equal(got[name], ref[name]), name
    width = max(len(set(r)) for r in relevant)
    assert FixedCorpusScorer.fits(len(queries), corpus, width)
    assert not FixedCorpusScorer.fits(10_000, np.zeros((10_000, 8), dtype=np.float32))
    assert FixedCorpusScorer.if_fits(corpus, relevant, 5) is not None
    assert FixedCorpusScorer.if_fits(np.zeros((10_000, 8), dtype=np.float32), [[0]] * 10_000) is None


def test_fixed_corpus_scorer_ranks_unnormalised_and_mixed_score_matrices_as_the_query_vectors():
    """Cross-validation scores a linear adapter's shrunk copies as mixes of two score matrices: the
    products with unnormalised query vectors rank as the cosines do, and a mix of two of them ranks as
    the same mix of the query vectors."""
    rng = np.random.default_rng(3)
    corpus = rng.normal(size=(40, 8)).astype(np.float32)
    relevant = [[int(i)] for i in rng.integers(0, 40, 12)] + [[1, 2], [5, 6, 7]]
    q0 = rng.normal(size=(14, 8)).astype(np.float32)
    q1 = q0 + rng.normal(scale=0.8, size=q0.shape).astype(np.float32)
    scorer = FixedCorpusScorer(corpus, relevant, 5)
    s0, s1 = scorer.scores(q0, normalize=False), scorer.scores(q1, normalize=False)
    for name, want in scorer(q1).items():
        assert np.allclose(scorer.metrics_of_scores(s1)[name], want), name
    for a in (0.25, 0.5, 0.75):
        mixed = scorer.metrics_of_scores(s0 + a * (s1 - s0))
        for name, want in scorer(q0 + a * (q1 - q0)).items():
            assert np.allclose(mixed[name], want), (a, name)


def test_all_or_nothing_values_get_the_same_exact_test_whatever_the_metric():
    """recall@k with one relevant chunk per question is hit@k question by question: the same outcomes get the
    same test and p (a normal approximation gave recall p 0.014 where hit's exact p was 0.031)."""
    from core.evaluation import test_name

    a = np.zeros(40)
    b = a.copy()
    b[:6] = 1
    b[6:7] = 0
    a[39] = 1  # 6 better, 1 worse
    hit, recall = paired_difference("hit@5", a, b), paired_difference("recall@5", a, b)
    assert hit["p_value"] == recall["p_value"] == pytest.approx(0.125, abs=1e-9)
    assert test_name("recall@5", a, b) == "exact McNemar" and test_name("recall@5") == "Wilcoxon signed-rank"
    graded = b * 0.5
    assert test_name("mrr@5", a, graded) == "Wilcoxon signed-rank"


def test_checkpoints_pay_for_their_search_without_taking_the_adapters_verdict():
    """144 checkpoints in the appendix turned a final adapter's significant MRR into "no": the systems compared
    are adjusted among themselves, each checkpoint among every comparison."""
    from core.evaluation import add_holm

    sig = {"linear": {"mrr@5": {"p_value": 0.01}}, "two-layer": {"mrr@5": {"p_value": 0.02}}}
    sig.update({f"linear @ step {i}": {"mrr@5": {"p_value": 0.01}} for i in range(100)})
    out = add_holm(sig)
    assert out["linear"]["mrr@5"]["p_adjusted"] == pytest.approx(0.02)  # Holm over the two adapters
    assert out["two-layer"]["mrr@5"]["p_adjusted"] == pytest.approx(0.02)
    assert out["linear @ step 0"]["mrr@5"]["p_adjusted"] == pytest.approx(1.0)  # over all 102
