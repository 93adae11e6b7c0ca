"""A warm ``python -m core train`` as a whole process: wall time, and where the import time goes.

Runs the command once to fill the cache (not timed), then ``--repeats`` times as fresh
processes (the median kept), and once more under ``python -X importtime`` to split the time:
torch, ``torch._dynamo`` (imported by ``torch.optim.Optimizer``'s first use, whatever the
caller does), and whether sentence-transformers / transformers were imported at all (a warm
run must not: the dimension and identity come from the cache).

    python bench/warm_run.py [--workspace /tmp/alws_r7] [--dataset PATH] [--repeats 3] [-- extra train args]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "qa" / "lyft_2021_train_dataset.json"


def importtimes(stderr: str) -> dict[str, float]:
    """Cumulative import seconds per top-level-imported module name (last occurrence)."""
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cum, name = (p.strip() for p in line.split("|", 2))
        try:
            out[name.strip()] = int(cum) / 1e6
        except ValueError:
            continue
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/alws_r7"))
    ap.add_argument("--dataset", type=Path, default=SHARED)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("extra", nargs="*", help="more train arguments (after --)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        if args.workspace.exists():
            shutil.copytree(args.workspace, ws)
        cmd = [
            sys.executable,
            "-m",
            "core",
            "train",
            "--workspace",
            str(ws),
            "--dataset",
            str(args.dataset),
            "--epochs",
            "4",
            "--selection",
            "holdout",
            "--json",
            *args.extra,
        ]
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        print(f"fill the cache (first run, not counted): {time.perf_counter() - t:.1f} s")
        walls = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
            walls.append(time.perf_counter() - t)
        prof = subprocess.run(
            [sys.executable, "-X", "importtime", *cmd[1:]], cwd=ROOT, check=True, capture_output=True, text=True
        )
    imp = importtimes(prof.stderr)
    print()
    print("| measure | seconds |")
    print("| --- | ---: |")
    print(
        f"| warm `python -m core train` (whole process, median of {len(walls)}) | {statistics.median(walls):.2f} "
        f"({', '.join(f'{w:.2f}' for w in walls)}) |"
    )
    for name in ("torch", "torch._dynamo", "core.cli", "scipy", "pandas", "sentence_transformers", "transformers"):
        print(f"| import {name} | {imp[name]:.2f} |" if name in imp else f"| import {name} | not imported |")


if __name__ == "__main__":
    main()
