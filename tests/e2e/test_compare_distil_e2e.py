"""Compare's way to the recipe that carries over, in a real browser: an adapter trained on one filing's
questions is compared on another company's; the caveat says the question-trained adapter did not carry over
there and offers "fine-tune, then distil" for that evaluation set; one click queues both runs, they finish in
the background, the button gives way to the finished run, and a new comparison ranks the distilled adapter.

The workspace gets its questions and the adapter run through ``core`` before the page opens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from core.runs import create_run, execute_run, list_runs
from core.training import TrainConfig
from core.workspace import Workspace
from tests.e2e.test_dashboard_e2e import JOB_TIMEOUT, choose, key, nav, settle, snap, wait_for_grid
from tests.e2e.test_distill_e2e import save_filing_sets

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def with_adapter(server):
    ws = Workspace(server.workspace)
    train_id, _ = save_filing_sets(ws)
    run_id = create_run(ws, TrainConfig(epochs=2, batch_size=8), dataset_id=train_id, name="questions adapter")
    execute_run(ws, run_id)
    return server, train_id


def test_compare_queues_fine_tune_then_distil_for_the_evaluation_set(page: Page, with_adapter, artifacts: Path):
    server, train_id = with_adapter
    page.goto(server.url)
    expect(page.get_by_role("heading", name="Documents", level=1)).to_be_visible(timeout=60_000)
    nav(page, "Compare")
    choose(page, "eval_ds", "other filing")
    settle(page)
    key(page, "eval_start").locator("button").click()
    wait_for_grid(page, lambda rows: len(rows) == 2, "system", "hit@5", "MRR@5", "significant", timeout=JOB_TIMEOUT)
    settle(page)
    expect(page.get_by_text("the adapter was trained on questions about other text").first).to_be_visible()
    # (the button has a help tooltip, which Streamlit draws inside the same container)
    button = key(page, f"eval_distil_{train_id}").get_by_role(
        "button", name="Fine-tune, then distil for this evaluation set"
    )
    expect(button).to_be_visible()
    snap(page, artifacts / "compare-distil-offer.png")
    button.click()
    expect(page.get_by_text("Queued: ").first).to_be_visible()
    expect(key(page, f"eval_distil_{train_id}")).to_have_count(0)  # offered once

    # the runs finish in the background; the Train page lists them
    nav(page, "Train")
    rows = wait_for_grid(
        page,
        lambda rows: len(rows) == 3 and all(r["status"] == "done" for r in rows),
        "run",
        "status",
        "adapter",
        timeout=JOB_TIMEOUT,
    )
    assert sorted(r["adapter"] for r in rows)[:2] == ["full fine-tune", "linear"], rows
    distilled = next(r for r in list_runs(Workspace(server.workspace)) if r["kind"] == "distill")
    assert distilled["config"]["dataset_id"] == train_id and distilled["result"]["n_eval_chunks"] == 8

    # back on Compare: the finished run instead of the button, and a new comparison ranks it
    nav(page, "Compare")
    expect(page.get_by_text(f"Run: {distilled['name']} (done;").first).to_be_visible()
    settle(page)
    form = page.locator("details").filter(has=page.get_by_text("New comparison")).first
    if form.get_attribute("open") is None:  # folded once there are results
        page.get_by_text("New comparison").first.click()
    choose(page, "eval_ds", "other filing")
    settle(page)
    expect(key(page, "eval_runs")).to_contain_text(distilled["name"])
    key(page, "eval_start").locator("button").click()
    results = wait_for_grid(
        page,
        lambda rows: any(distilled["name"] in r["system"] for r in rows),
        "system",
        "hit@5",
        "MRR@5",
        "significant",
        timeout=JOB_TIMEOUT,
    )
    assert results[0]["system"].startswith("base"), results
    snap(page, artifacts / "compare-distil-done.png")
