"""The one-minute summary: plain sentences, the compact table, caveats."""

from __future__ import annotations

import numpy as np
import pytest

from core.evaluation import Comparison, RankResult, metric_names
from core.summary import (
    caveats,
    checkpoint_rows,
    compact_rows,
    main_systems,
    settings_text,
    summary_sentences,
    system_sentence,
)

N = 790


def _res(n_hits: int, rr: float) -> RankResult:
    hits = np.zeros(N)
    hits[:n_hits] = 1
    per = {"hit@5": hits, "mrr@5": hits * rr, "ndcg@10": hits * rr, "recall@5": hits}
    first = np.where(hits == 1, 1.0, np.inf)
    return RankResult([f"q{i}" for i in range(N)], first, per, [["d"] * 10] * N, np.zeros((N, 10), np.float32), 5)


def _sig(delta: float, lo: float, hi: float, p: float) -> dict:
    return {m: {"delta": delta, "ci_low": lo, "ci_high": hi, "p_value": p} for m in metric_names(5)}


def _cmp(**extra) -> Comparison:
    results = {"base (all-MiniLM-L6-v2)": _res(575, 0.7), "linear (recipe)": _res(601, 0.7)}
    sig = {"linear (recipe)": _sig(26 / N, 12 / N, 40 / N, 0.001)}
    for name, (hits, s) in extra.items():
        results[name] = _res(hits, 0.7)
        sig[name] = s
    return Comparison("uber questions", 5, "base (all-MiniLM-L6-v2)", results, sig)


def test_the_sentence_a_stakeholder_reads():
    cmp = _cmp()
    assert system_sentence(cmp, "linear (recipe)") == (
        "With linear (recipe), the right passage is in the top 5 for 76.1% of questions, up from 72.8%: "
        "26 more of 790 questions (95% CI 12 to 40); significant."
    )
    ctx = {"base_model": "all-MiniLM-L6-v2"}
    assert summary_sentences(cmp, ctx)[0] == (
        "With the base model alone (all-MiniLM-L6-v2), the right passage is in the top 5 for 72.8% of the 790 "
        "evaluation questions."
    )


def test_losses_and_noise_are_said_plainly():
    worse = _sig(-10 / N, -20 / N, 3 / N, 0.2)
    cmp = _cmp(**{"two-layer": (565, worse)})
    text = system_sentence(cmp, "two-layer")
    assert (
        "down from 72.8%: 10 fewer of 790 questions (95% CI \u221220 to 3); not significant (it could be noise)."
        in text
    )
    row = {r["system"]: r for r in compact_rows(cmp)}["two-layer"]
    assert row["significant"] == "no" and row["Δ hit@5 (95% CI)"] == "\u22121.3 pt (\u22122.5 to +0.4)"
    # MRR's change in points too (hundredths of MRR), as the CLI table, the chart and the sentences give it
    assert row["Δ MRR@5 (95% CI)"] == "\u22121.3 pt (\u22122.5 to +0.4)"
    assert row["hit@5"] == "71.5%" and row["MRR@5"] == f"{565 * 0.7 / N:.3f}"


def test_compact_table_leaves_checkpoints_to_the_appendix():
    ck = _sig(30 / N, 10 / N, 50 / N, 0.01)
    cmp = _cmp(**{"linear (recipe) @ step 10": (605, ck), "linear (recipe) @ step 20": (590, ck)})
    ctx = {
        "systems": {
            "linear (recipe) @ step 10": {"checkpoint": True, "id": "run-1/step_10"},
            "linear (recipe) @ step 20": {"checkpoint": True, "id": "run-1/step_20"},
            "linear (recipe)": {"kind": "run", "id": "run-1"},
        }
    }
    assert main_systems(cmp, ctx) == ["linear (recipe)"]
    assert [r["system"] for r in compact_rows(cmp, ctx)] == ["base (all-MiniLM-L6-v2)", "linear (recipe)"]
    cks = checkpoint_rows(cmp, ctx)
    assert [r["note"] != "" for r in cks] == [True, False]  # step 10 scores best here: marked as picked on this set
    assert cks[0]["id"] == "run-1/step_10"
    texts = [c["text"] for c in caveats(cmp, ctx)]
    assert any("2 checkpoint(s) were compared" in t and "Holm-adjusted for all 3 comparisons" in t for t in texts)
    # Holm over 3 systems: 0.001 * 3 still significant
    assert {r["system"]: r["significant"] for r in compact_rows(cmp, ctx)}["linear (recipe)"] == "yes"


def test_selection_on_the_evaluation_set_is_flagged():
    cmp = _cmp()
    ctx = {"systems": {"linear (recipe)": {"kind": "run", "picked_on_eval": True}}}
    assert system_sentence(cmp, "linear (recipe)", ctx).endswith(
        "chosen on this same evaluation set, so this is optimistic."
    )
    assert any(
        c["level"] == "warning" and "chose its best epoch on this same evaluation set" in c["text"]
        for c in caveats(cmp, ctx)
    )


def test_settings_text():
    assert (
        settings_text({"adapter": "linear", "loss": "in_batch", "lr": 2e-5, "epochs": 4, "batch_size": 10})
        == "linear adapter · in_batch loss · lr 2e-05 · 4 epochs · batch 10"
    )
    assert settings_text({}) == "" and settings_text({"adapter": "two-layer"}) == "two-layer adapter · default lr"
    # what cross-validation chose replaces the lr and epochs it was given (it may go past them), with its shrinkage
    given = {"adapter": "linear", "loss": "corpus_softmax", "lr": 3e-4, "epochs": 12, "batch_size": 32}
    assert settings_text(given, {"train": True, "epochs": 11, "lr": 1e-3, "alpha": 0.25}) == (
        "linear adapter · corpus_softmax loss · lr 0.001 · 11 epochs chosen by cross-validation · "
        "shrunk toward the identity by alpha 0.25 · batch 32"
    )
    assert settings_text(given, {"train": True, "epochs": 24, "lr": 3e-4, "alpha": 1.0}).endswith(
        "lr 0.0003 · 24 epochs chosen by cross-validation · batch 32"
    )
    assert "the untrained identity" in settings_text(given, {"train": False, "epochs": 0, "lr": 3e-4, "alpha": 1.0})


def test_tiny_sets_and_short_rankings_are_flagged():
    """A handful of questions, a corpus no longer than k, a base model already at 100%: the numbers cannot tell
    systems apart, and the caveats say why instead of leaving an interval of 0 to 0 to read as certainty."""
    n = 8
    hits = np.ones(n)
    per = {"hit@5": hits, "mrr@5": hits, "ndcg@10": hits, "recall@5": hits}
    res = RankResult([f"q{i}" for i in range(n)], np.ones(n), per, [["d"] * 3] * n, np.zeros((n, 3), np.float32), 5)
    sig = {m: {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0} for m in metric_names(5)}
    cmp = Comparison("tiny", 5, "base", {"base": res, "linear": res}, {"linear": sig})
    texts = [c["text"] for c in caveats(cmp, {"eval_set": {"n_corpus": 3}})]
    assert any(t.startswith("Each question is ranked among only 3 chunk(s), no more than the top 5") for t in texts)
    assert any(t.startswith("Only 8 evaluation questions: one question moves hit@5 by 12 points") for t in texts)
    texts = [c["text"] for c in caveats(cmp, {"eval_set": {"n_corpus": 67}})]
    assert any(
        t.startswith("The base model already finds the right passage in its top 5 for every question") for t in texts
    )
    # and the sentence does not call a change that cannot happen "not significant (it could be noise)"
    assert system_sentence(cmp, "linear") == (
        "With linear, as with the base model, the right passage is in the top 5 for every question: hit@5 cannot "
        "show a gain on this set."
    )
    assert not [
        c
        for c in caveats(_cmp(), {"eval_set": {"n_corpus": 900}})
        if "questions:" in c["text"] or "chunk(s)" in c["text"]
    ]


def test_a_comparison_without_its_leaked_questions_does_not_say_they_repeat_training_questions():
    from core.leakage import LeakageReport

    cmp = _cmp()
    qids = cmp.results["linear (recipe)"].query_ids
    leak = LeakageReport(N, 40, 0.95, identical=qids[:500], on_shared_chunks=qids[:500])
    ctx = {"leakage": [{"systems": ["linear (recipe)"], "report": leak.to_dict()}]}
    assert "But 500 of these 790 questions repeat its training questions" in system_sentence(
        cmp, "linear (recipe)", ctx
    )
    ctx["excluded"] = {"mode": "questions", "n": 500, "of": N + 500}
    assert "repeat its training questions" not in system_sentence(cmp, "linear (recipe)", ctx)


def test_a_checkpoint_equal_to_its_runs_adapter_is_listed_once():
    """A run that kept its step-20 state: that checkpoint is the adapter itself. Counted twice it would enlarge
    the Holm family (and could turn the adapter's verdict); it is dropped and the caveats say why."""
    from core.launch import drop_checkpoints_equal_to_their_run

    ck = _sig(26 / N, 12 / N, 40 / N, 0.02)
    cmp = _cmp(
        **{"linear (recipe) @ step 20": (601, ck), "linear (recipe) @ step 10": (590, _sig(0.01, 0, 0.02, 0.04))}
    )
    cmp.significance["linear (recipe)"] = _sig(26 / N, 12 / N, 40 / N, 0.02)
    cmp = Comparison(cmp.dataset_name, 5, cmp.baseline, cmp.results, cmp.significance)
    assert cmp.significance["linear (recipe) @ step 10"]["hit@5"]["p_adjusted"] == pytest.approx(0.06)
    assert cmp.significance["linear (recipe)"]["hit@5"]["p_adjusted"] == pytest.approx(0.02)  # not the checkpoints
    named = [
        ("base (all-MiniLM-L6-v2)", {"kind": "base"}),
        ("linear (recipe)", {"kind": "run", "run_id": "run-1"}),
        ("linear (recipe) @ step 20", {"kind": "checkpoint", "run_id": "run-1", "step": 20}),
        ("linear (recipe) @ step 10", {"kind": "checkpoint", "run_id": "run-1", "step": 10}),
    ]
    out, same = drop_checkpoints_equal_to_their_run(cmp, named)
    assert same == {"linear (recipe) @ step 20": "linear (recipe)"}
    assert list(out.results) == ["base (all-MiniLM-L6-v2)", "linear (recipe)", "linear (recipe) @ step 10"]
    assert out.significance["linear (recipe) @ step 10"]["hit@5"]["p_adjusted"] == pytest.approx(0.04)  # a family of 2
    texts = [c["text"] for c in caveats(out, {"same_as_final": same})]
    assert "linear (recipe) @ step 20 is linear (recipe) itself (the same result on every question" in texts[0]
    assert drop_checkpoints_equal_to_their_run(out, named[:2]) == (out, {})


def test_an_adapter_on_other_text_gets_both_measured_cases_and_the_table_is_the_measure():
    """Held-out sections of the training filing and another company's filing both read as "other text" (no
    statistic measured here tells them apart): the caveat quoted only the other filing's numbers beside a measured
    +4.5 pt gain on the same filing; it now gives both cases and says the table measures this set."""
    from core.carryover import DISTILLED_ELSEWHERE, SAME_KIND_CARRYOVER

    def pt(x):
        return f"{100 * float(x):+.1f} pt".replace("-", "\u2212")

    cmp = _cmp()
    ctx = {
        "systems": {"linear (recipe)": {"run_kind": "adapter", "embedder": "default", "run_id": "run-1"}},
        "eval_set": {"name": "val", "long_chunk_share": 0.9},
        "leakage": [{"systems": ["linear (recipe)"], "text_coverage": 0.0, "train_set": {}}],
    }
    (c,) = [c for c in caveats(cmp, ctx) if "trained on questions about other text" in c["text"]]
    assert (
        f"On another company's filing, the adapter trained on the questions gained {pt(DISTILLED_ELSEWHERE['adapter_gain_hit@5'])}"
        in c["text"]
    )
    lo, hi = pt(SAME_KIND_CARRYOVER["adapter_min_gain_hit@5"]), pt(SAME_KIND_CARRYOVER["adapter_max_gain_hit@5"])
    assert f"on new sections of the training filing itself the adapter gained {lo} to {hi}" in c["text"]
    assert "The table measures this set." in c["text"]


def test_the_overlap_line_says_what_a_shared_chunk_is():
    """Between two companies' filings a 'shared chunk' is text both hold (boilerplate), not a common chunk id."""
    from core.leakage import LeakageReport
    from core.summary import overlap_text

    rep = LeakageReport(78, 40, 0.95, shared_chunks=["a", "b"], on_shared_chunks=["q1", "q2", "q3"])
    assert overlap_text(rep) == (
        "0 identical and 0 near-identical (cosine \u2265 0.95) questions; 2 chunks whose text is mostly in trained "
        "passages (the same chunk, or text two documents share, such as boilerplate; 3 of 78 evaluation questions "
        "ask about one)"
    )
