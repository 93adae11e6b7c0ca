"""Each page at its own URL in a real browser: ``/documents``, ``/questions``, ``/train``, ``/compare``
open their page with no "Page not found" dialog, and the root opens Documents at ``/documents`` without
trapping the browser's Back button there.

Streamlit serves a default page at the root only, so with Documents the default page ``/documents``
was "Page not found" (a modal dialog over the main page). The server is fresh, so the first URL
opened also goes through the deep-link path of a new server (``ui.state.ensure_router``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_dashboard_e2e import settle, snap
from ui.widgets import PAGES

pytestmark = pytest.mark.e2e


def open_url(page: Page, url: str, title: str) -> None:
    page.goto(url)
    # a page's first run in a fresh server imports its modules (torch among them): seconds on a busy machine
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible(timeout=60_000)
    settle(page)


def test_each_page_opens_at_its_own_url(page: Page, server, artifacts: Path):
    for name, (_, title, _) in PAGES.items():
        open_url(page, f"{server.url}/{name}", title)
        expect(page).to_have_url(f"{server.url}/{name}")
        expect(page.get_by_text("Page not found")).to_have_count(0)
        link = page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title)
        expect(link).to_have_attribute("href", f"{server.url}/{name}")
    snap(page, artifacts / "urls-compare.png")


def test_the_root_opens_documents_at_its_url_and_back_leaves(page: Page, server):
    page.goto("data:text/html,<h1>Before</h1>")
    open_url(page, server.url, "Documents")  # the root opens Documents, at its own URL
    expect(page).to_have_url(f"{server.url}/documents")
    expect(page.get_by_text("Page not found")).to_have_count(0)
    expect(page.locator('[data-testid="stSidebarNav"] a[aria-current="page"]')).to_have_text(re.compile("Documents"))
    # Back returns to the root, which shows Documents without forwarding again (each forward pushes
    # /documents onto the history: Back could never leave the app), and the next Back leaves
    page.go_back()
    expect(page).to_have_url(f"{server.url}/")
    expect(page.get_by_role("heading", name="Documents", level=1)).to_be_visible()
    settle(page)
    expect(page).to_have_url(f"{server.url}/")
    page.go_back()
    expect(page.get_by_role("heading", name="Before", level=1)).to_be_visible()
