"""Ingestion speed and text quality: AdapterLab's loader vs a plain pypdf loop, in one run.

For each 10-K: pages per second of ``core.documents.load_pdf`` (pypdfium2 + clean-up) and of
``pypdf.PdfReader(...).pages[i].extract_text()``, and a count of *glued words*: alphabetic
runs of 20+ letters (e.g. "theCompanyreportedrevenue"), which appear when an extractor loses
the spaces between words. English words that long are almost non-existent in these filings.

    python bench/ingest.py [--repeat 3] [PDF ...]

Each side's time is the best of ``--repeat`` runs, with both libraries imported beforehand.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.documents import load_pdf  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "10k"
GLUED = re.compile(r"[A-Za-z]{20,}")


def pypdf_loop(path: Path) -> tuple[float, list[str]]:
    import pypdf

    t = time.perf_counter()
    reader = pypdf.PdfReader(str(path))
    texts = [p.extract_text() or "" for p in reader.pages]
    return time.perf_counter() - t, texts


def ours(path: Path) -> tuple[float, list[str]]:
    t = time.perf_counter()
    loaded = load_pdf(path)
    return time.perf_counter() - t, [p.text for p in loaded.pages]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pdfs", nargs="*", default=[str(SHARED / "lyft_2021.pdf"), str(SHARED / "uber_2021.pdf")])
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings for each side (imports done first)")
    args = ap.parse_args()
    import pypdf  # noqa: F401  (imports outside the timings, for both sides)
    import pypdfium2  # noqa: F401

    print(
        "| file | pages | pypdf s | pypdf pages/s | AdapterLab s | AdapterLab pages/s | speed-up | glued words pypdf | glued words AdapterLab |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    tot_a = tot_b = 0.0
    pages_total = 0
    for pdf in args.pdfs:
        path = Path(pdf)
        runs_b = [pypdf_loop(path) for _ in range(args.repeat)]
        runs_a = [ours(path) for _ in range(args.repeat)]
        tb, tb_texts = min(runs_b, key=lambda r: r[0])
        ta, ta_texts = min(runs_a, key=lambda r: r[0])
        n = len(ta_texts)
        pages_total += n
        tot_a += ta
        tot_b += tb
        gb = sum(len(GLUED.findall(t)) for t in tb_texts)
        ga = sum(len(GLUED.findall(t)) for t in ta_texts)
        print(
            f"| {path.name} | {n} | {tb:.2f} | {n / tb:.0f} | {ta:.2f} | {n / ta:.0f} | {tb / ta:.0f}x | {gb:,} | {ga:,} |"
        )
    print(
        f"| all | {pages_total} | {tot_b:.2f} | {pages_total / tot_b:.0f} | {tot_a:.2f} | {pages_total / tot_a:.0f} | {tot_b / tot_a:.0f}x | | |"
    )


if __name__ == "__main__":
    main()
