"""UI latency of the dashboard in a real browser: page first loads, and click responses while a
training job runs in the server.

Prepares a workspace through ``core`` (a generated 12-page PDF ingested, offline questions, a
train / validation split saved, 20 finished runs with long histories, five saved comparisons), starts
``streamlit run app.py`` on a free local port over it (the e2e fixture's server, so the same
environment: offline, one OpenMP thread) and drives Debian's Chromium with Playwright:

* **first load**: a fresh browser context (a new Streamlit session) opens the page URL; timed
  until the page's title and a known element (a table, a chart, the tabs) are shown, the script
  has finished (``data-test-script-state="notRunning"``) and no skeleton, spinner or stale
  element is left. Median of ``--loads`` (default 3). The server's very first page view (cold
  imports) is reported on its own, for information.
* **reload**: the same, as a reload in a browser that has the front-end code cached (a user's
  second visit); this separates the server's and Streamlit's work from fetching and parsing
  the JavaScript bundles (plotly's is several MB), which a fresh context pays every time.
* **click response**: the time from a click to the UI showing its effect, median of
  ``--clicks`` (default 5), measured twice: with the server idle, and while a long training job
  runs (started by pressing **Start training** on the Train page, like a user's: since issue 7
  in a child process of the server, see ``core.run_process``) and a second tab watches its live chart. The clicks:
  a tab on Questions (client side only), the comparison selectbox on Compare (a server rerun
  that redraws tables and charts), a chunk search on Documents (a server rerun).

Targets: first load < 3 s, click response < 1 s. Prints a Markdown table with PASS / MISS.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/ui_latency.py [--loads 3] [--clicks 5] [--keep] \\
        [--runs 20] [--long-epochs 200] [--comparisons 5] [--workspace KEPT/ws]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from core.documents import list_chunks  # noqa: E402
from core.jobs import JobManager  # noqa: E402
from core.launch import start_evaluation, start_generation, start_ingest  # noqa: E402
from core.questions import build_dataset, list_datasets, load_dataset, save_dataset, split_dataset  # noqa: E402
from core.runs import create_run, execute_run  # noqa: E402
from core.training import TrainConfig  # noqa: E402
from core.workspace import Workspace  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, StreamlitServer  # noqa: E402
from tests.pdfs import make_text_pdf, sample_report_pages  # noqa: E402

LOAD_TARGET_S = 3.0
CLICK_TARGET_S = 1.0
LONG_COPIES = 20  # the long run's dataset: the training questions this many times
SHARE_TARGET = 0.8  # training with the live chart open keeps this share of its headless steps/s
SEARCH = "insurance"

# page -> (title, CSS selector of an element that only shows once the page's content is there)
PAGES = {
    "documents": ("Documents", '[data-testid="stDataFrame"] table[role="grid"]'),
    "questions": ("Questions", '[role="tab"]'),
    "train": ("Train", '[data-testid="stMetric"]'),  # a finished run: its curves are behind an expander
    "compare": ("Compare", '[data-testid="stDataFrame"] table[role="grid"]'),  # its charts are behind expanders
}
# Each page at its own URL ("/" forwards to "/documents", one more script run: measured at "/documents").
URL_PATHS = {name: name for name in PAGES}

READY_JS = """([title, sel]) => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.dataset.testScriptState !== 'notRunning' || app.dataset.testConnectionState !== 'CONNECTED') return false;
    const h = document.querySelector('h1');
    if (!h || !h.innerText.includes(title)) return false;
    if (!document.querySelector(sel)) return false;
    return !document.querySelector('[data-testid="stSkeleton"], [data-testid="stSpinner"], [data-stale="true"]');
}"""


# ------------------------------------------------------------------------------------------------
# workspace
# ------------------------------------------------------------------------------------------------
def report_pages() -> list[str]:
    """The 4-page sample report for three fictional companies and years: 12 distinct pages."""
    out = []
    for company, short, year, prev in [
        ("Northwind Mobility", "Northwind", "2021", "2020"),
        ("Bluefin Transit", "Bluefin", "2019", "2018"),
        ("Cedar Rides", "Cedar", "2023", "2022"),
    ]:
        out += [
            p.replace("Northwind Mobility", company)
            .replace("Northwind", short)
            .replace("2021", year)
            .replace("2020", prev)
            for p in sample_report_pages()
        ]
    return out


def prepare_workspace(root: Path, runs: int = 20, long_epochs: int = 200, comparisons: int = 5) -> dict:
    """Everything a user would have after some weeks of use, made through core: ``runs`` finished
    runs (the first a short default-like one, the newest ``long_epochs`` epochs at batch size 1
    with a validation every epoch: thousands of steps; the others a sixth of that, no validation) and ``comparisons`` saved comparisons (the first two at
    k=5 and k=3, which the click measurement switches between)."""
    ws = Workspace(root)
    jm = JobManager(ws)
    try:
        job = start_ingest(jm, ws, [("northwind-report.pdf", make_text_pdf(report_pages(), page_numbers=True))])
        jm.wait(job)
        assert jm.get(job)["status"] == "done", jm.get(job)
        job = start_generation(jm, ws, generator="offline", questions_per_chunk=4)
        jm.wait(job)
        train, val = split_dataset(build_dataset(ws), by="chunk", val_fraction=0.2, seed=0)
        train_id = save_dataset(ws, train, "train (by chunk)", role="train")
        val_id = save_dataset(ws, val, "validation (by chunk)", role="val")
        run_id = create_run(
            ws,
            TrainConfig(adapter="linear", epochs=12),
            dataset_id=train_id,
            val_dataset_id=val_id,
            name="linear (prepared)",
        )
        execute_run(ws, run_id)
        run_ids = [run_id]
        for i in range(1, runs):  # the newest (shown first on Train) validates every epoch, the others none
            cfg = TrainConfig(
                adapter="linear",
                epochs=long_epochs if i == runs - 1 else max(1, long_epochs // 6),
                batch_size=1,
                selection="holdout" if i == runs - 1 else "none",
                lr=1e-3 * (1 + i % 4),
                checkpoint_every=1_000_000,
                seed=i,
            )
            rid = create_run(ws, cfg, dataset_id=train_id, name=f"linear long #{i}")
            execute_run(ws, rid)
            run_ids.append(rid)
        steps = sum(
            1
            for line in (ws.run_dir(run_ids[-1]) / "history.jsonl").read_text().splitlines()
            if '"type": "step"' in line
        )
        for c, k in enumerate((5, 3, 10, 8, 20)[:comparisons]):
            systems = [{"kind": "run", "run_id": r} for r in dict.fromkeys([run_id] + run_ids[-1 - c :][:3])]
            job = start_evaluation(jm, ws, val_id, systems, top_k=k, name=f"validation k={k}")
            jm.wait(job)
            assert jm.get(job)["status"] == "done", jm.get(job)
        return {
            "chunks": len(list_chunks(ws)),
            "search_hits": len(list_chunks(ws, search=SEARCH)),
            "train_questions": len(train.queries),
            "runs": len(run_ids),
            "steps_newest": steps,
            "comparisons": comparisons,
        }
    finally:
        jm.shutdown()


# ------------------------------------------------------------------------------------------------
# measurements
# ------------------------------------------------------------------------------------------------
def first_load(browser, url: str, name: str) -> tuple[float, float]:
    """(seconds until the page title shows, seconds until the page is complete and idle)."""
    title, sel = PAGES[name]
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    try:
        t = time.perf_counter()
        page.goto(f"{url}/{URL_PATHS[name]}")
        page.wait_for_function(
            "t => { const h = document.querySelector('h1'); return h && h.innerText.includes(t); }",
            arg=title,
            timeout=60_000,
            polling=25,
        )
        t_title = time.perf_counter() - t
        page.wait_for_function(READY_JS, arg=[title, sel], timeout=60_000, polling=25)
        return t_title, time.perf_counter() - t
    finally:
        ctx.close()


def reloads(browser, url: str, name: str, n: int) -> list[float]:
    """Reloads of a page in one browser context: a new Streamlit session each time, but the
    browser's cache already holds the front-end code (plotly's bundle included)."""
    title, sel = PAGES[name]
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    try:
        page.goto(f"{url}/{URL_PATHS[name]}")
        page.wait_for_function(READY_JS, arg=[title, sel], timeout=60_000)
        out = []
        for _ in range(n):
            t = time.perf_counter()
            page.reload()
            page.wait_for_function(READY_JS, arg=[title, sel], timeout=60_000, polling=25)
            out.append(time.perf_counter() - t)
        return out
    finally:
        ctx.close()


def key(page: Page, k: str):
    return page.locator(f".st-key-{k}")


def go(page: Page, url: str, name: str) -> None:
    title, sel = PAGES[name]
    page.goto(f"{url}/{URL_PATHS[name]}")
    page.wait_for_function(READY_JS, arg=[title, sel], timeout=60_000)


def timed(action, done_js: str, page: Page, arg=None) -> float:
    t = time.perf_counter()
    action()
    page.wait_for_function(done_js, arg=arg, timeout=30_000, polling=25)
    return time.perf_counter() - t


def clicks_questions_tab(page: Page, url: str, n: int) -> list[float]:
    go(page, url, "questions")
    out = []
    review = page.get_by_role("tab", name="Review & edit")
    gen = page.get_by_role("tab", name="Generate")
    shown = """() => { const t = document.querySelector('[role="tab"][aria-selected="true"]');
                       const box = document.querySelector('.st-key-q_search input');
                       return t && t.innerText.includes('Review') && box && box.offsetParent !== null; }"""
    for _ in range(n):
        gen.click()
        expect(key(page, "gen_start")).to_be_visible()
        out.append(timed(review.click, shown, page))
    return out


def clicks_compare_select(page: Page, url: str, n: int) -> list[float]:
    go(page, url, "compare")
    out = []
    caption_has = """k => { const app = document.querySelector('[data-testid="stApp"]');
        const caps = Array.from(document.querySelectorAll('[data-testid="stMarkdownContainer"]'));
        return caps.some(c => c.innerText.includes('Evaluation set:') && c.innerText.includes('k = ' + k))
            && !document.querySelector('[data-testid="stSkeleton"], [data-stale="true"]'); }"""
    current = (
        3
        if "k = 3"
        in page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="Evaluation set:").first.inner_text()
        else 5
    )
    for _ in range(n):
        target = 5 if current == 3 else 3
        key(page, "eval_view").get_by_role("combobox").click()
        option = page.get_by_role("option", name=re.compile(rf"validation k={target}"))
        out.append(timed(option.click, caption_has, page, arg=target))
        current = target
    return out


def clicks_documents_search(page: Page, url: str, n: int, n_all: int, n_hits: int) -> list[float]:
    go(page, url, "documents")
    box = key(page, "chunk_search").locator("input")
    out = []
    shows = """n => Array.from(document.querySelectorAll('[data-testid="stCaptionContainer"]'))
                     .some(c => c.innerText.startsWith(n + ' matching chunk'))"""
    term = ""
    for _ in range(n):
        term, expected = ("", n_all) if term == SEARCH else (SEARCH, n_hits)
        box.fill(term)
        out.append(timed(lambda: box.press("Enter"), shows, page, arg=expected))
    return out


def add_long_dataset(ws_root: Path, copies: int) -> int:
    """Save the newest training dataset repeated ``copies`` times (new question ids, the same texts:
    nothing new to embed) as the newest ``train`` dataset, which the Train page picks by default.
    The long run then outlasts every throughput window at batch size 1 within the page's 500-epoch
    limit. Returns its number of questions."""
    ws = Workspace(ws_root)
    src = next(d for d in list_datasets(ws) if d.get("role") == "train")
    ds = load_dataset(ws, src["id"])
    queries = {f"{q}~{i}": text for i in range(copies) for q, text in ds.queries.items()}
    relevant = {f"{q}~{i}": docs for i in range(copies) for q, docs in ds.relevant_docs.items()}
    long = type(ds)(queries, ds.corpus, relevant, ds.mode, ds.node_meta)
    save_dataset(ws, long, f"bench: {copies} x {src['name']}", role="train")
    return len(queries)


def start_long_training(page: Page, url: str) -> None:
    """Press Start training with enough work to outlast the measurements (a child process of the server)."""
    go(page, url, "train")
    if key(page, "train_recipe").count() == 0 or not key(page, "train_recipe").is_visible():
        page.get_by_text("New training run").click()
    key(page, "train_recipe").get_by_text("Adapter on the questions").click()  # auto: fine-tune, then distil
    expect(key(page, "hp_epochs")).to_be_visible()
    # one hold-out split (the default cross-validates every epoch count per fold: progress reads differently)
    box = key(page, "hp_selection").get_by_role("combobox")
    box.click()
    box.fill("One hold-out split")
    page.get_by_role("option", name="One hold-out split").first.click()
    expect(key(page, "hp_selection").get_by_role("combobox")).to_have_value(re.compile("One hold-out split"))
    for k, v in (("hp_epochs", 500), ("hp_batch_size", 1), ("hp_checkpoint_every", 1_000_000)):
        box = key(page, k).locator("input")
        box.fill(str(v))
        box.press("Enter")
        expect(box).to_have_value(str(v))
    key(page, "train_name").locator("input").fill("bench: long run")
    key(page, "train_start").locator("button").click()
    expect(page.get_by_test_id("stProgress").filter(has_text=re.compile(r"epoch \d+/500"))).to_be_visible(
        timeout=120_000
    )
    expect(page.locator(".js-plotly-plot").first).to_be_visible()


def history_steps(ws: Path) -> int:
    newest = max((ws / "runs").glob("*/history.jsonl"), key=lambda p: p.stat().st_mtime)
    return sum(1 for line in newest.read_text().splitlines() if '"type": "step"' in line)


# ------------------------------------------------------------------------------------------------
def fmt_row(what: str, where: str, values: list[float], target: float | None, titles: list[float] | None = None) -> str:
    med = statistics.median(values)
    runs = ", ".join(f"{v:.2f}" for v in values)
    if titles:
        runs += f" (title shown at {statistics.median(titles):.2f})"
    verdict = "info" if target is None else ("PASS" if med < target else "MISS")
    tgt = "–" if target is None else f"< {target:g} s"
    return f"| {what} | {where} | {runs} | {med:.2f} | {tgt} | {verdict} |"


class _Rows(list):
    """The table's rows, each also printed to stderr when measured (a later failure keeps them)."""

    def append(self, row: str) -> None:
        print(row, file=sys.stderr, flush=True)
        super().append(row)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loads", type=int, default=3, help="first loads per page (median)")
    ap.add_argument("--clicks", type=int, default=5, help="clicks per interaction and condition (median)")
    ap.add_argument(
        "--window", type=float, default=12.0, help="seconds per training-throughput window (live chart, headless)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace and server log")
    ap.add_argument("--runs", type=int, default=20, help="finished runs in the workspace")
    ap.add_argument(
        "--long-epochs",
        type=int,
        default=200,
        help="epochs of the newest run (batch size 1); the others but the first: a sixth",
    )
    ap.add_argument("--comparisons", type=int, default=5, choices=range(2, 6), help="saved comparisons")
    ap.add_argument("--workspace", type=Path, help="reuse a workspace kept by an earlier --keep (skips preparing)")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"Chromium not found at {CHROMIUM}: apt-get install chromium", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="adapterlab-ui-bench-"))
    ws = tmp / "ws"
    t = time.perf_counter()
    if args.workspace:  # a copy, so that the long training run below never lands in the kept one
        shutil.copytree(args.workspace, ws, ignore=shutil.ignore_patterns("*.lock"))
        facts = json.loads((args.workspace / "bench_facts.json").read_text())
    else:
        facts = prepare_workspace(ws, args.runs, args.long_epochs, args.comparisons)
        (ws / "bench_facts.json").write_text(json.dumps(facts))
    print(
        f"workspace ready in {time.perf_counter() - t:.1f} s: {facts['chunks']} chunks, "
        f"{facts['train_questions']} training questions, {facts['runs']} finished runs (newest: "
        f"{facts['steps_newest']} steps), {facts['comparisons']} comparisons ({ws})",
        file=sys.stderr,
    )
    server = StreamlitServer(ws, tmp / "streamlit.log")
    rows: list[str] = _Rows()
    notes: list[str] = []
    try:
        t = time.perf_counter()
        server.start()
        boot = time.perf_counter() - t
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            cold_title, cold = first_load(browser, server.url, "documents")
            rows.append(fmt_row("server start (health check)", "`streamlit run app.py`", [boot], None))
            rows.append(
                fmt_row("first view after server start (cold imports)", "Documents", [cold], None, [cold_title])
            )
            for name, (title, _) in PAGES.items():
                loads = [first_load(browser, server.url, name) for _ in range(args.loads)]
                rows.append(fmt_row("first load", title, [b for _, b in loads], LOAD_TARGET_S, [a for a, _ in loads]))
            for name, (title, _) in PAGES.items():
                rows.append(
                    fmt_row(
                        "reload (front-end code cached)",
                        title,
                        reloads(browser, server.url, name, args.loads),
                        LOAD_TARGET_S,
                    )
                )

            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            page.set_default_timeout(30_000)
            interactions = [
                ("Questions: switch tab", lambda: clicks_questions_tab(page, server.url, args.clicks)),
                (
                    "Compare: change the comparison selectbox",
                    lambda: clicks_compare_select(page, server.url, args.clicks),
                ),
                (
                    f"Documents: chunk search '{SEARCH}' / cleared",
                    lambda: clicks_documents_search(
                        page, server.url, args.clicks, facts["chunks"], facts["search_hits"]
                    ),
                ),
            ]
            for label, run in interactions:
                rows.append(fmt_row("click response, server idle", label, run(), CLICK_TARGET_S))

            watcher_ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            watcher = watcher_ctx.new_page()
            watcher.set_default_timeout(30_000)
            long_questions = add_long_dataset(ws, LONG_COPIES)
            start_long_training(watcher, server.url)  # this tab keeps watching the live chart
            # the throughput target: the live chart open, nothing else going on
            time.sleep(2)  # let the first live reruns settle (measurement, not a correctness wait)
            sl0, tl0 = history_steps(ws), time.perf_counter()
            time.sleep(args.window)
            sl1, tl1 = history_steps(ws), time.perf_counter()
            live_rate = (sl1 - sl0) / (tl1 - tl0)
            s0, t0 = history_steps(ws), time.perf_counter()
            for label, run in interactions:
                rows.append(fmt_row("click response, training running", label, run(), CLICK_TARGET_S))
            s1, t1 = history_steps(ws), time.perf_counter()
            running = (
                watcher.get_by_test_id("stMarkdownContainer")
                .filter(has_text="bench: long run")
                .filter(has_text="running")
            )
            still = running.count() > 0
            click_rate = (s1 - s0) / (t1 - t0)
            notes.append(
                f"training throughput (child process, {long_questions} questions, batch size 1): "
                f"{live_rate:.0f} optimizer steps/s with a tab open on its "
                f"live chart ({args.window:.0f} s), {click_rate:.0f} during the clicks above (same tab open); the run "
                f"was {'still running' if still else 'NOT running any more'} at the end of the measurements"
            )
            watcher_ctx.close()
            ctx.close()
            # the same training with no browser session open (no live chart, no sidebar polling)
            time.sleep(3)  # let the closed sessions' last reruns finish (measurement, not a correctness wait)
            s2, t2 = history_steps(ws), time.perf_counter()
            time.sleep(args.window)
            s3, t3 = history_steps(ws), time.perf_counter()
            headless = (s3 - s2) / (t3 - t2)
            notes.append(f"the same training with no browser session open: {headless:.0f} optimizer steps/s")
            for label, rate, target in (
                ("live chart open", live_rate, SHARE_TARGET),
                ("live chart open + the clicks above", click_rate, None),
            ):
                share = rate / headless if headless else float("nan")
                rows.append(
                    f"| training steps/s vs headless | {label} | {rate:.0f} / {headless:.0f} | {share:.0%} | "
                    + (f"≥ {target:.0%} | {'PASS' if share >= target else 'MISS'} |" if target else "(info) | |")
                )
            browser.close()
    finally:
        server.stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"UI latency: Chromium headless, 1400x1000, {args.loads} first loads per page (fresh session each), "
        f"{args.clicks} clicks per interaction; times in seconds.\n"
    )
    print("| measure | page / action | runs (s) | median (s) | target | result |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    for n in notes:
        print(f"\n{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
