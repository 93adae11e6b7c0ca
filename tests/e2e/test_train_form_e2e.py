"""The Train form in a real browser: a keystroke right after picking another adapter or starting
point must not bring the previous choice's settings back.

Picking an adapter fills the form with its defaults in the rerun that the pick starts (two-layer:
lr 5e-4, linear 3e-4). A keystroke sent before that rerun's answer reaches the browser carries the
browser's stale values, and Streamlit took the stale learning rate as the user's own edit: the run
trained two-layer at linear's rate (seen in 2 of 3 Playwright walk-throughs). The page now gives a
field a new widget key whenever a preset changes its value, so a stale value cannot land on it.

The workspace gets its dataset through ``core`` before the page opens: this test is about the form.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from core.datasets import QADataset, save_dataset
from core.train_config import TrainConfig
from core.workspace import Workspace
from tests.e2e.test_dashboard_e2e import key, nav, settle

pytestmark = pytest.mark.e2e


def lr_pattern(lr: float) -> re.Pattern:
    """The learning rate as the form shows it ('5.0e-04' or '5.0e-4')."""
    mantissa, exp = f"{lr:.1e}".split("e")
    sign = "-" if int(exp) < 0 else r"\+?"
    return re.compile(rf"^{re.escape(mantissa)}e{sign}0*{abs(int(exp))}$")


def field(page: Page, name: str):
    """The input of hyperparameter ``name``, whatever the generation of its widget key (``hp_lr``,
    ``hp_lr__1``, ...), left out while a rerun still shows the replaced element (``data-stale``)."""
    return page.locator(f"[data-testid='stElementContainer'][class*='st-key-hp_{name}']:not([data-stale='true']) input")


def expect_field(page: Page, name: str, value) -> None:
    """Once the reruns the inputs started have finished, the field shows ``value`` (one element: while a
    rerun replaces a field's widget, the old and the new one can both be on the page for a moment)."""
    settle(page)
    loc = field(page, name)
    expect(loc).to_have_count(1, timeout=60_000)
    expect(loc).to_have_value(value, timeout=60_000)


@pytest.fixture(scope="module")
def with_dataset(server):
    ws = Workspace(server.workspace)
    corpus = {f"n{i}": f"Chunk {i} of the filing: revenue, riders and drivers in region {i}." for i in range(6)}
    queries = {f"q{i}": f"What happened in region {i}?" for i in range(6)}
    save_dataset(ws, QADataset(queries, corpus, {f"q{i}": [f"n{i}"] for i in range(6)}), "tiny train", role="train")
    return server


def test_a_fast_keystroke_after_picking_an_adapter_keeps_its_defaults(page: Page, with_dataset):
    page.goto(with_dataset.url)
    expect(page.get_by_role("heading", name="Documents", level=1)).to_be_visible(timeout=60_000)
    nav(page, "Train")
    expect_field(page, "lr", lr_pattern(TrainConfig(adapter="linear").lr))

    for _ in range(3):  # the race is a timing: try it a few times, each must hold
        for adapter, label in (("two-layer", "Two-layer"), ("linear", "Linear")):
            box = key(page, "train_adapter").get_by_role("combobox")
            box.click()
            box.fill(label)
            page.get_by_role("option", name=re.compile(re.escape(label))).first.click()
            # no wait for the defaults: type into another field at once, as a fast user (or a script) does
            epochs = field(page, "epochs")
            epochs.fill("7")
            epochs.press("Enter")
            expect(box).to_have_value(re.compile(re.escape(label)), timeout=60_000)
            expect_field(page, "lr", lr_pattern(TrainConfig(adapter=adapter).lr))
            expect_field(page, "epochs", "7")  # the keystroke itself is kept

    # the starting point: LlamaIndex's defaults, then a fast keystroke into a field it does not set
    key(page, "train_preset").get_by_text("LlamaIndex defaults").click()
    seed = field(page, "seed")
    seed.fill("3")
    seed.press("Enter")
    li = TrainConfig.llamaindex_defaults()
    expect_field(page, "lr", lr_pattern(li.lr))
    expect_field(page, "epochs", str(li.epochs))
    expect_field(page, "batch_size", str(li.batch_size))
    expect_field(page, "seed", "3")
