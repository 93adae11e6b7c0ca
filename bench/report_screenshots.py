"""Render the stakeholder report and the Compare page, and screenshot them in headless Chromium.

    python bench/report_screenshots.py [--out docs/screenshots] [--keep DIR]

On the shared Lyft questions (split by chunk, 70% train / 30% held out, seed 0, both registered in
a fresh workspace) it trains the default linear adapter as a run named "linear (recipe)" (a
checkpoint per epoch) and saves two comparisons:

- the held-out questions: ``report-summary.png`` (first screen of the HTML report),
  ``report-appendix.png`` (the whole report, appendix opened) and ``compare-summary.png``
  (the Compare page);
- issue 12's scenario, the run and its checkpoints evaluated on their own training questions:
  ``report-leaked.png`` and ``compare-leaked.png`` (the red leakage warning, the checkpoint caveat).

Uses Debian's Chromium through Playwright and ``streamlit run app.py``, like the end-to-end tests.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
LYFT = ROOT.parent / "shared" / "data" / "qa" / "lyft_2021_train_dataset.json"
CHROMIUM = os.environ.get("ADAPTERLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def prepare(ws_dir: Path) -> dict:
    """Registered datasets, one trained run, two saved comparisons; returns their ids and reports."""
    from core.datasets import QADataset
    from core.launch import evaluate_with_context
    from core.questions import save_dataset, split_dataset
    from core.reports import html_report, save_comparison
    from core.runs import create_run, execute_run, get_run, read_history
    from core.training import TrainConfig
    from core.workspace import Workspace

    ws = Workspace(ws_dir)
    train, test = split_dataset(QADataset.load(LYFT), by="chunk", val_fraction=0.3, seed=0)
    train_id = save_dataset(ws, train, "Lyft 10-K questions (training)", role="train")
    test_id = save_dataset(ws, test, "Lyft 10-K questions (held out)", role="eval")
    run_id = create_run(ws, TrainConfig(), dataset_id=train_id, name="linear (recipe)")
    execute_run(ws, run_id)
    hist = {get_run(ws, run_id)["name"]: read_history(ws, run_id)}
    out = {}
    leaked_specs = [{"kind": "run", "run_id": run_id}] + [
        {"kind": "checkpoint", "run_id": run_id, "step": int(h["step"])}
        for h in read_history(ws, run_id)
        if h.get("type") == "checkpoint"
    ]
    for key, ds_id, ds, specs in (
        ("leaked", train_id, train, leaked_specs),
        ("heldout", test_id, test, [{"kind": "run", "run_id": run_id}]),
    ):
        name = "Lyft 10-K questions (training)" if key == "leaked" else "Lyft 10-K questions (held out)"
        cmp, ctx = evaluate_with_context(ws, ds, name, specs, dataset_id=ds_id)
        save_comparison(
            ws,
            cmp,
            name,
            extra={"dataset_id": ds_id, "systems": specs, "run_ids": [run_id], "embedder": "default", "context": ctx},
        )
        path = ws_dir.parent / f"report-{key}.html"
        path.write_text(
            html_report(cmp, hist, title=f"AdapterLab retrieval report: {name}", context=ctx), encoding="utf-8"
        )
        out[key] = path
        time.sleep(1.1)  # newest comparison (held out) is the one the page shows first
    return out


def shoot_report(browser, html_path: Path, png: Path, open_details: bool = False) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 1100})
    page.goto(html_path.as_uri())
    page.wait_for_selector(".js-plotly-plot")
    page.wait_for_timeout(800)
    if open_details:
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        page.wait_for_timeout(800)
    page.screenshot(path=str(png), full_page=open_details)
    page.close()


def shoot_compare(browser, url: str, out: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1500})
    page.goto(f"{url}/compare")
    page.get_by_text("Where each adapter comes from").wait_for(timeout=120_000)
    page.wait_for_timeout(2500)
    page.screenshot(path=str(out / "compare-summary.png"))
    box = page.get_by_test_id("stSelectbox").filter(has_text="Comparison").first
    box.click()
    page.get_by_role("option").filter(has_text="training").first.click()
    page.get_by_text("do not measure generalisation").wait_for(timeout=60_000)
    page.wait_for_timeout(2500)
    page.screenshot(path=str(out / "compare-leaked.png"))
    page.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--keep", help="work in this folder instead of a temporary one")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.keep or tempfile.mkdtemp(prefix="adapterlab-report-"))
    work.mkdir(parents=True, exist_ok=True)
    reports = prepare(work / "ws")

    import socket

    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, ADAPTERLAB_WORKSPACE=str(work / "ws"), OMP_NUM_THREADS="1")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            shoot_report(browser, reports["heldout"], out / "report-summary.png")
            shoot_report(browser, reports["leaked"], out / "report-leaked.png")
            shoot_report(browser, reports["heldout"], out / "report-appendix.png", open_details=True)
            shoot_compare(browser, url, out)
            browser.close()
    finally:
        server.terminate()
        server.wait(15)
    print(f"reports in {work}; screenshots in {out}")


if __name__ == "__main__":
    main()
