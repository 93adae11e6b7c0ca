"""Saved comparisons, the self-contained HTML report, CSV and charts."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest

from core.carryover import OWN_CHUNKS_CARRYOVER, PSEUDO_QUERY_CARRYOVER
from core.evaluation import Comparison, RankResult, paired_difference
from core.leakage import LeakageReport
from core.reports import (
    comparison_csv,
    comparison_figures,
    html_report,
    list_comparisons,
    load_comparison,
    save_comparison,
    summary_figure,
    summary_rows,
    update_comparison_extra,
)

N = 40


def _result(hits: np.ndarray, rr: np.ndarray, first: np.ndarray) -> RankResult:
    qids = [f"q{i}" for i in range(N)]
    per_query = {"hit@5": hits, "mrr@5": rr, "ndcg@10": rr, "recall@5": hits}
    top_ids = [[f"n{(i + j) % 9}" for j in range(10)] for i in range(N)]
    return RankResult(qids, first, per_query, top_ids, np.linspace(1, 0, 10 * N, dtype=np.float32).reshape(N, 10), 5)


@pytest.fixture
def cmp() -> Comparison:
    rng = np.random.default_rng(0)
    base_first = rng.integers(1, 12, N).astype(float)
    base_first[0] = np.inf
    better_first = np.maximum(1, base_first - 3)
    better_first[0] = 1
    results = {}
    for name, first in (("base", base_first), ("linear adapter", better_first)):
        hits = (first <= 5).astype(float)
        rr = np.where(first <= 5, 1 / first, 0.0)
        results[name] = _result(hits, rr, first)
    sig = {
        "linear adapter": {
            m: paired_difference(
                m, results["base"].per_query[m], results["linear adapter"].per_query[m], n_resamples=300
            )
            for m in ("hit@5", "mrr@5", "ndcg@10", "recall@5")
        }
    }
    return Comparison("lyft <eval> set", 5, "base", results, sig)


def test_save_and_load_round_trip(ws, cmp):
    eval_id = save_comparison(ws, cmp, name="nightly", extra={"dataset_id": "ds-1", "systems": [{"kind": "base"}]})
    assert (ws.root / "evaluations" / f"{eval_id}.json").is_file()
    assert [(c["id"], c["name"]) for c in list_comparisons(ws)] == [(eval_id, "nightly")]
    back, extra = load_comparison(ws, eval_id)
    assert extra == {"dataset_id": "ds-1", "systems": [{"kind": "base"}]}
    assert back.table().equals(cmp.table())
    assert np.isinf(back.results["base"].first_rank[0])
    assert back.per_query_frame("linear adapter").equals(cmp.per_query_frame("linear adapter"))
    with pytest.raises(KeyError, match="no saved comparison"):
        load_comparison(ws, "eval-nope")


def test_summary_rows(cmp):
    rows = summary_rows(cmp)
    assert [r["system"] for r in rows] == ["base", "linear adapter"]
    assert "Δ mrr@5" not in rows[0]
    sig = cmp.significance["linear adapter"]["mrr@5"]
    assert rows[1]["Δ mrr@5"] == round(sig["delta"], 4)
    assert rows[1]["Δ mrr@5 95% CI"] == f"[{sig['ci_low']:+.3f}, {sig['ci_high']:+.3f}]"
    assert rows[1]["mrr@5 significant"] == ("yes" if sig["p_value"] < 0.05 else "no") == "yes"


def test_html_report_is_self_contained(cmp):
    hist = {"linear adapter": [{"type": "epoch", "epoch": e, "val": {"mrr@5": 0.5 + e / 100}} for e in range(4)]}
    page = html_report(cmp, histories=hist, title="Q3 <retrieval> report", notes={"base model": "all-MiniLM-L6-v2"})
    assert page.lstrip().lower().startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<title>Q3 &lt;retrieval&gt; report</title>" in page
    assert "lyft &lt;eval&gt; set" in page and "<eval>" not in page  # escaped
    for row in summary_rows(cmp):
        for m in ("hit@5", "mrr@5", "ndcg@10", "recall@5"):
            assert f"<td>{row[m]}</td>" in page
    assert "significant" in page and 'class="sig"' in page
    assert "With linear adapter, the right passage is in the top 5 for" in page  # the one-minute summary
    assert page.count("<details") >= 2 and "Every metric, p-values and tests" in page and "Training curves" in page
    assert "all-MiniLM-L6-v2" in page
    # plotly.js is inlined: no script is fetched from anywhere
    assert not re.search(r"<script[^>]+src=", page, flags=re.I)
    assert "Plotly.newPlot" in page and len(page) > 1_000_000
    assert page.count("plotly.js v") >= 1


def test_html_report_with_only_the_baseline(cmp):
    only = Comparison(cmp.dataset_name, 5, "base", {"base": cmp.results["base"]})
    page = html_report(only)
    assert "With base, the right passage is in the top 5" in page and "<td>base</td>" in page
    assert summary_figure(only) is None
    assert set(comparison_figures(only)) == {"metrics"}


def test_the_summary_chart_writes_each_value_beyond_its_interval(cmp):
    fig = summary_figure(cmp)
    bars = [t for t in fig.data if t.type == "bar"]
    notes = list(fig.layout.annotations)
    assert len(notes) == sum(len(b.x) for b in bars)  # one label a bar
    for b, group in zip(bars, (notes[: len(bars[0].x)], notes[len(bars[0].x) :])):
        for v, plus, minus, note in zip(b.x, b.error_x.array, b.error_x.arrayminus, group):
            end = v + plus if v >= 0 else v - minus  # the whisker's far end: no line crosses the text there
            assert note.x == pytest.approx(max(end, v) if v >= 0 else min(end, v))
            assert note.text == f"{v:+.1f}".replace("-", "\u2212") and note.xanchor == ("left" if v >= 0 else "right")
    assert fig.layout.legend.yref == "container"  # below the axis title, not over it


def test_chart_labels_wrap_instead_of_cutting_a_run_name():
    from core.reports import _wrap_label

    assert _wrap_label("linear · corpus_softmax · lr 0.0003 · epochs by CV") == (
        "linear · corpus_softmax<br>lr 0.0003 · epochs by CV"
    )
    assert _wrap_label("base") == "base" and _wrap_label("a <b> name") == "a &lt;b&gt; name"


def test_comparison_csv_parses(cmp):
    frame = pd.read_csv(io.StringIO(comparison_csv(cmp, {"systems": {"linear adapter": {"id": "run-42"}}})))
    assert list(frame["system"]) == ["base", "linear adapter"]
    assert list(frame.columns[:2]) == ["system", "id"] and frame.loc[1, "id"] == "run-42"  # names first, ids beside
    assert frame.loc[0, "queries"] == N
    assert frame.loc[1, "mrr@5"] == pytest.approx(cmp.results["linear adapter"].metrics["mrr@5"], abs=1e-4)
    assert frame.loc[1, "mrr@5 significant"] == "yes"
    assert np.isnan(frame.loc[0, "Δ mrr@5"])


def test_figures(cmp):
    figs = comparison_figures(
        cmp, {"linear adapter": [{"type": "epoch", "epoch": 0, "val": {"mrr@5": 0.4}}, {"type": "step", "step": 1}]}
    )
    assert set(figs) == {"metrics", "deltas", "curves"}
    assert len(figs["metrics"].data) == 4  # one bar series per metric
    assert list(figs["metrics"].data[0].x) == ["base", "linear adapter"]
    assert list(figs["deltas"].data[0].x) == ["linear adapter"]
    assert list(figs["curves"].data[0].y) == [0.4]


def _context(leak: LeakageReport | None = None, sources: dict | None = None, checkpoints: int = 0) -> dict:
    systems = {
        "linear adapter": {
            "kind": "run",
            "id": "run-20261124-031400-7a52cb",
            "run_name": "linear adapter",
            "train_set": {"name": "lyft train", "n_queries": 40},
            "settings": {"adapter": "linear", "loss": "corpus_softmax", "lr": 1e-4, "epochs": 12},
        }
    }
    for i in range(checkpoints):
        systems[f"linear adapter @ step {i + 1}"] = {
            "kind": "checkpoint",
            "checkpoint": True,
            "step": i + 1,
            "id": f"run-20261124-031400-7a52cb/step_{i + 1}",
        }
    return {
        "created_at": 1_790_000_000.0,
        "base_model": "all-MiniLM-L6-v2",
        "top_k": 5,
        "eval_set": {
            "name": "lyft <eval> set",
            "n_queries": N,
            "n_corpus": 9,
            "sources": sources or {"llm": N},
            "llm_models": ["gpt-4o-mini"],
            "documents": ["lyft_2021.pdf"],
        },
        "systems": systems,
        "leakage": [
            {
                "train_set": {"name": "lyft train", "n_queries": 40},
                "systems": list(systems),
                "report": (leak or LeakageReport(N, 40, 0.95)).to_dict(),
            }
        ],
    }


def _with_checkpoints(cmp: Comparison, n: int) -> Comparison:
    results = dict(cmp.results)
    sig = dict(cmp.significance)
    for i in range(n):
        results[f"linear adapter @ step {i + 1}"] = cmp.results["linear adapter"]
        sig[f"linear adapter @ step {i + 1}"] = cmp.significance["linear adapter"]
    return Comparison(cmp.dataset_name, 5, "base", results, sig)


def test_report_names_systems_and_keeps_ids_to_the_appendix(cmp):
    big = _with_checkpoints(cmp, 3)
    page = html_report(big, context=_context(checkpoints=3))
    first, appendix = page.split("<h2>Appendix</h2>")
    assert "linear adapter" in first and "run-20261124-031400-7a52cb/step" not in first
    assert (
        "@ step" not in first.split("<h2>Summary</h2>")[1].split("Where each adapter")[0]
    )  # no checkpoint rows up top
    assert "Checkpoints (3): compared on the evaluation set" in appendix
    assert "best here: picked on the evaluation set" in appendix and "run-20261124-031400-7a52cb/step_1" in appendix
    assert "3 checkpoint(s) were compared on this evaluation set" in first  # and the caveat is on the first screen
    assert "Holm-adjusted for all 4 comparisons; the other systems" in first
    # provenance on the first screen: set, size, question source and model, documents, base model, training set
    for text in (
        "lyft &lt;eval&gt; set: 40 questions",
        "40 written by an LLM (gpt-4o-mini)",
        "lyft_2021.pdf",
        "all-MiniLM-L6-v2",
        "lyft train (40 questions)",
        "linear adapter · corpus_softmax loss · lr 0.0001",
    ):
        assert text in first, text


def test_large_overlap_gets_a_red_warning(cmp):
    qids = cmp.results["base"].query_ids
    leak = LeakageReport(
        N, 40, 0.95, identical=qids[:30], near_duplicate=qids[30:32], shared_chunks=["n1"], on_shared_chunks=qids[:32]
    )
    page = html_report(cmp, context=_context(leak))
    first = page.split("<h2>Summary</h2>")[0]
    red = re.search(r"<div class='caveat error'>(.*?)</div>", first)
    assert red and "32 of 40 evaluation questions (80%)" in red.group(1)
    assert "do not measure generalisation" in red.group(1)
    assert "repeat its training questions, so this does not show that it generalises" in page
    small = LeakageReport(N, 40, 0.95, identical=qids[:1])
    calm = html_report(cmp, context=_context(small))
    assert "caveat error" not in calm and "1 evaluation question(s) are identical or near-identical" in calm


def test_pseudo_query_caveat_quotes_the_measured_carry_over(cmp):
    page = html_report(cmp, context=_context(sources={"offline": N}))
    first = page.split("<h2>Summary</h2>")[0]
    assert "have not been shown to carry over to real queries" in first

    def pt(x):
        return f"{x * 100:+.1f} pt".replace("-", "\u2212")

    # measured on real questions: over the chunks AdapterLab makes, and over LlamaIndex's longer ones
    own = OWN_CHUNKS_CARRYOVER
    assert (
        f"{pt(own['adapter_gain_hit@5'])} hit@5 and {pt(own['adapter_gain_mrr@5'])} MRR@5 searching the chunks" in first
    )
    c = PSEUDO_QUERY_CARRYOVER
    assert f"{pt(c['real_eval_gain_hit@5'])} / {pt(c['real_eval_gain_mrr@5'])}" in first
    assert "carry over" not in html_report(cmp, context=_context(sources={"llm": N}))


def test_a_distilled_adapter_evaluated_on_documents_it_never_ranked_is_flagged(cmp):
    from core.carryover import DISTILLED_ELSEWHERE

    ctx = _context()
    ctx["systems"]["linear adapter"]["distilled_coverage"] = 0.03
    first = html_report(cmp, context=ctx).split("<h2>Summary</h2>")[0]
    assert "linear adapter was distilled over other documents: 3% of this evaluation set&#x27;s text" in first
    assert f"{100 * DISTILLED_ELSEWHERE['over_other_gain_hit@5']:+.1f}".replace("-", "\u2212") in first
    ctx["systems"]["linear adapter"]["distilled_coverage"] = 0.9
    assert "distilled over other documents" not in html_report(cmp, context=ctx)


def test_a_question_trained_adapter_on_other_documents_is_pointed_to_the_distil_recipe(cmp):
    ctx = _context()
    ctx["systems"]["linear adapter"].update(run_kind="adapter", embedder="default")
    ctx["leakage"][0]["text_coverage"] = 0.04
    first = html_report(cmp, context=ctx).split("<h2>Summary</h2>")[0]
    assert "the adapter was trained on questions about other text (4% of what this evaluation set" in first
    assert "train --eval-dataset with this file" in first
    for change in ({"text_coverage": 0.8}, {"text_coverage": None}):  # the same documents; not measured
        ctx["leakage"][0].update(change)
        assert "questions about other text" not in html_report(cmp, context=ctx)
    ctx["leakage"][0]["text_coverage"] = 0.04
    # chunks the base model reads whole: the distil recipe gained no more there, so no pointer to it
    ctx["eval_set"]["long_chunk_share"] = 0.1
    first = html_report(cmp, context=ctx).split("<h2>Summary</h2>")[0]
    assert "questions about other text" in first and "reads whole (10% longer than it reads)" in first
    assert "train --eval-dataset with this file" not in first
    ctx["eval_set"]["long_chunk_share"] = 0.9
    assert "train --eval-dataset with this file" in html_report(cmp, context=ctx)
    for info in ({"run_kind": "distill"}, {"run_kind": "adapter", "embedder": "openai:text-embedding-3-small"}):
        ctx["systems"]["linear adapter"].update(info)  # distilled already; an API base cannot be fine-tuned
        assert "questions about other text" not in html_report(cmp, context=ctx)


def test_update_comparison_extra(ws, cmp):
    eval_id = save_comparison(ws, cmp, extra={"dataset_id": "x"})
    update_comparison_extra(ws, eval_id, {"dataset_id": "x", "context": {"base_model": "m"}})
    assert load_comparison(ws, eval_id)[1]["context"] == {"base_model": "m"}


# -- user text in exports and charts ---------------------------------------------------------------
EVIL_LINK = '<a href="http://evil.example/x">click</a>'
FORMULAS = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tsneaky", "\rsneaky"]


def _renamed(cmp: Comparison, names: list[str], baseline: str = "base", dataset: str | None = None) -> Comparison:
    """``cmp`` with its adapter result copied under each of ``names`` (and the baseline renamed)."""
    results = {baseline: cmp.results["base"], **{n: cmp.results["linear adapter"] for n in names}}
    sig = {n: cmp.significance["linear adapter"] for n in names}
    return Comparison(dataset or cmp.dataset_name, 5, baseline, results, sig)


def test_csv_export_neutralises_formulas_and_keeps_numbers(cmp):
    text = comparison_csv(_renamed(cmp, FORMULAS, baseline="=base"))
    frame = pd.read_csv(io.StringIO(text), keep_default_na=False)
    systems = list(frame["system"])
    assert systems == ["'=base", *("'" + n for n in FORMULAS)]
    assert not any(s.startswith(("=", "+", "-", "@", "\t", "\r")) for s in systems)
    # numbers stay numbers, negative ones included (no quote in front)
    assert frame["mrr@5"].dtype.kind == "f" and frame["queries"].dtype.kind == "i"
    deltas = pd.read_csv(io.StringIO(comparison_csv(_renamed(cmp, ["a"], baseline="b"))))
    assert deltas["Δ mrr@5"].dtype.kind == "f"
    worse = {
        m: paired_difference(
            m, cmp.results["linear adapter"].per_query[m], cmp.results["base"].per_query[m], n_resamples=100
        )
        for m in ("hit@5", "mrr@5", "ndcg@10", "recall@5")
    }
    negative = comparison_csv(
        Comparison(
            "d",
            5,
            "linear adapter",
            {"linear adapter": cmp.results["linear adapter"], "base": cmp.results["base"]},
            {"base": worse},
        )
    )
    assert ",-0." in negative and ",'-" not in negative  # a negative delta is a plain number
    assert pd.read_csv(io.StringIO(negative))["Δ mrr@5"].iloc[1] < 0


def test_charts_and_report_show_names_as_text(cmp):
    evil = _renamed(cmp, [EVIL_LINK], baseline="<b>base</b>", dataset="<i>eval</i> " + EVIL_LINK)
    figs = comparison_figures(evil, {EVIL_LINK: [{"type": "epoch", "epoch": 0, "val": {"mrr@5": 0.4}}]})
    for name, fig in figs.items():
        spec = fig.to_plotly_json()
        strings = []

        def walk(x, strings=strings):
            if isinstance(x, str):
                strings.append(x)
            elif isinstance(x, dict):
                for v in x.values():
                    walk(v)
            elif isinstance(x, (list, tuple)):
                for v in x:
                    walk(v)
            elif hasattr(x, "tolist"):
                walk(x.tolist())

        walk(spec)
        assert not [s for s in strings if "<a " in s or "<b>" in s or "<i>" in s], name
    assert list(figs["metrics"].data[0].x)[1] == '&lt;a href="http://evil.example/x"&gt;click&lt;/a&gt;'
    assert "&lt;i&gt;eval&lt;/i&gt;" in figs["metrics"].layout.title.text
    page = html_report(evil, title="report")
    assert 'href="http://evil.example' not in page.replace('\\"', '"').replace("\\u003c", "<")
    assert "against the &lt;b&gt;base&lt;/b&gt;" in page  # main's report names the baseline in its notes


def test_cv_figure_names_a_shrunk_choice_with_its_own_estimate():
    """The curves are the full step (alpha 1); a choice shrunk toward the identity says so, with
    the estimate that chose it, instead of a star on a curve point below the identity."""
    from core.reports import cv_figure

    points = [
        {
            "type": "cv",
            "lr": 3e-4,
            "epoch": e,
            "hit@5 mean": 0.80 - 0.002 * e,
            "hit@5 std": 0.05,
            "mrr@5 mean": 0.63 - 0.002 * e,
            "mrr@5 std": 0.06,
            "gain": -0.002 * e,
            "gain_se": 0.004,
        }
        for e in range(4)
    ]
    selection = {
        "type": "selection",
        "train": True,
        "lr": 3e-4,
        "epochs": 3,
        "alpha": 0.5,
        "shrinkage": {"0.25": 0.004, "0.5": 0.0092, "1": -0.006},
    }
    star = [t for t in cv_figure(points + [selection]).data if t.marker.symbol == "star"]
    assert len(star) == 1 and list(star[0].x) == [3]
    assert "alpha 0.5" in star[0].name and "+0.92 pt" in star[0].name and "curves = alpha 1" in star[0].name
    full = cv_figure(points + [{**selection, "alpha": 1.0}]).data
    assert [t.name for t in full if t.marker.symbol == "star"] == ["chosen (epoch 3)"]
    # with the shrunk choice's own out-of-fold point recorded, the star sits at its MRR (above the identity's
    # 0.63 here), not at the alpha-1 curve's 0.624 below it
    own = {"hit@5 mean": 0.805, "hit@5 std": 0.05, "mrr@5 mean": 0.6384, "mrr@5 std": 0.06, "gain": 0.0092}
    star = [t for t in cv_figure(points + [{**selection, "shrunk_point": own}]).data if t.marker.symbol == "star"]
    assert list(star[0].y) == [0.6384] and "its MRR, the curves are alpha 1" in star[0].name
