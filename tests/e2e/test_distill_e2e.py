""" "Fine-tune, then distil" in a real browser: with an evaluation set named, the Train page's recipe
``auto`` offers it; one click queues a full fine-tune and its distillation (ranking the evaluation set's
chunks too); both finish in the background; the distilled adapter shows its steps and where it came
from, and Compare ranks it beside the base model and the fine-tune.

The workspace gets its questions through ``core`` before the page opens: this test is about the runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from core.datasets import QADataset, save_dataset
from core.runs import list_runs
from core.workspace import Workspace
from tests.e2e.test_dashboard_e2e import JOB_TIMEOUT, choose, expect_selected, key, nav, settle, snap, wait_for_grid

pytestmark = pytest.mark.e2e

TOPICS = ["revenue", "riders", "drivers", "insurance", "litigation", "autonomy", "scooters", "airports"]


def save_filing_sets(ws: Workspace) -> tuple[str, str]:
    """Questions over one filing (training) and over another company's (evaluation); their dataset ids."""
    corpus = {
        f"n{i}": f"The filing's section on {t} gives the {t} figures for 2021 and 2020." for i, t in enumerate(TOPICS)
    }
    queries = {f"q{i}": f"What were the {t} figures in 2021?" for i, t in enumerate(TOPICS)}
    ds = QADataset(queries, corpus, {f"q{i}": [f"n{i}"] for i in range(len(TOPICS))})
    train_id = save_dataset(ws, ds, "filing questions", role="train")
    # chunks longer than the base model reads (256 tokens), where the distillation's gains were measured (on
    # chunks it reads whole Auto trains the adapter)
    other = {
        f"o{i}": " ".join(
            f"Another company's report on {t}, part {k}: its {t} numbers for year {2000 + k}." for k in range(25)
        )
        for i, t in enumerate(TOPICS)
    }
    asks = {f"a{i}": f"How did the other company do on {t}?" for i, t in enumerate(TOPICS)}
    eval_id = save_dataset(
        ws, QADataset(asks, other, {f"a{i}": [f"o{i}"] for i in range(len(TOPICS))}), "other filing", role="eval"
    )
    return train_id, eval_id


@pytest.fixture(scope="module")
def with_questions(server):
    save_filing_sets(Workspace(server.workspace))
    return server


def test_fine_tune_then_distil_from_the_train_page_and_compare_them(page: Page, with_questions, artifacts: Path):
    server = with_questions
    page.goto(server.url)
    expect(page.get_by_role("heading", name="Documents", level=1)).to_be_visible(timeout=60_000)
    nav(page, "Train")
    # "You will evaluate on" starts at the newest evaluation set (Compare's default): the other filing, the
    # documents users will search, so auto distils
    expect_selected(page, "train_eval_ds", "other filing")
    expect(page.get_by_text("Auto: fine-tune, then distil over the documents you will search").first).to_be_visible()
    expect(page.get_by_text("and the evaluation set's chunks (never its questions)").first).to_be_visible()
    key(page, "train_name").locator("input").fill("ft e2e")
    key(page, "train_name").locator("input").press("Enter")
    settle(page)
    snap(page, artifacts / "distil-recipe.png")
    key(page, "train_start_distil").locator("button").click()

    rows = wait_for_grid(
        page,
        lambda rows: len(rows) == 2 and all(r["status"] == "done" for r in rows),
        "run",
        "status",
        "adapter",
        timeout=JOB_TIMEOUT,
    )
    assert [r["adapter"] for r in rows] == ["linear (distilled)", "full fine-tune"], rows
    distilled = next(r for r in list_runs(Workspace(server.workspace)) if r["kind"] == "distill")
    assert distilled["name"] == "ft e2e" and distilled["result"]["teacher"] == "ft e2e · fine-tune"
    assert distilled["result"]["steps_done"] == 200 and distilled["result"]["n_eval_chunks"] == len(TOPICS)

    # the distilled run's card: its steps, its teacher, an adapter to download
    settle(page)  # the rerun that the finished runs started: it would close an open dropdown
    choose(page, "train_view", distilled["name"])
    settle(page)
    expect(page.get_by_test_id("stMetric").filter(has_text="Steps done").last).to_contain_text("200 / 200")
    expect(page.get_by_text("Distilled from the full fine-tune").first).to_be_visible()
    expect(key(page, f"train_download_{distilled['id']}")).to_be_visible()
    snap(page, artifacts / "distil-run.png")

    # Compare: both runs are offered; the distilled adapter is ranked beside the base and the fine-tune
    nav(page, "Compare")
    expect(key(page, "eval_runs")).to_contain_text(distilled["name"])
    key(page, "eval_start").locator("button").click()
    results = wait_for_grid(
        page, lambda rows: len(rows) >= 3, "system", "hit@5", "MRR@5", "significant", timeout=JOB_TIMEOUT
    )
    systems = [r["system"] for r in results]
    assert systems[0].startswith("base") and distilled["name"] in systems, systems
    assert any(s.startswith("ft e2e · fine-tune · full fine-tune (re-embeds") for s in systems), systems
    snap(page, artifacts / "distil-compare.png")
