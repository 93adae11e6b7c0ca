"""Cold 4-epoch training as whole processes: LlamaIndex's real engine vs ``python -m core train``.

Each row is a fresh process timed from the outside (wall clock, like ``time``: interpreter start,
imports, model load, embedding, training, saving), plus its CPU seconds (user + sys of the
process and its children: less sensitive to other work on the machine than wall time):

* ``li``: LlamaIndex's ``EmbeddingAdapterFinetuneEngine`` with its defaults, 4 epochs, run by
  ``bench/llamaindex_engine_run.py`` under ``--li-python`` (a separate LlamaIndex venv).
* ``al``: ``python -m core train --llamaindex-defaults --epochs 4`` (the engine's settings:
  linear, AdamW lr 2e-5, batch 10, in-batch loss, no validation) in a FRESH empty workspace,
  so every text is embedded (cold cache).
* ``al-default``: ``python -m core train`` with AdapterLab's default recipe, also cold.
* ``li-passive``: ``li`` with ``OMP_WAIT_POLICY=PASSIVE``, the thread setting AdapterLab's own
  processes now use (``core/threads.py``): the same advantage given to LlamaIndex.
* ``al-before``: ``al`` run from another checkout (``--before-root``, e.g. ``git archive`` of an
  older commit into a folder), for before/after rows measured under the same load.

Repeats are interleaved (li, al, al-default, li, al, ...) so every system sees the same load;
the table gives medians and the ratio of medians. The load average is read before every run.

    HF_HUB_OFFLINE=1 python bench/cold_vs_llamaindex.py [--li-python /tmp/li/bin/python]
        [--repeats 3] [--systems li al al-default] [--embedder SPEC] [--log runs.jsonl]

``--embedder`` goes to AdapterLab's rows only (LlamaIndex's row always uses the bundled
all-MiniLM-L6-v2 through ``HuggingFaceEmbedding``), so another backend of the same model can be
timed against the same anchor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "qa" / "lyft_2021_train_dataset.json"
LABELS = {
    "li": "LlamaIndex `EmbeddingAdapterFinetuneEngine`, defaults, N epochs",
    "al": "AdapterLab `python -m core train --llamaindex-defaults --epochs N`, cold",
    "al-default": "AdapterLab `python -m core train` (default recipe), cold",
    "li-passive": "LlamaIndex engine as `li`, with `OMP_WAIT_POLICY=PASSIVE`",
    "al-before": "`al` from the --before-root checkout",
}


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def torch_threads(python: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [python, "-c", "import torch; print(torch.get_num_threads(), torch.__version__)"],
        capture_output=True,
        text=True,
        env=env,
    )
    return out.stdout.strip() or out.stderr.strip()[-200:]


def command(system: str, args, tmp: Path) -> list[str]:
    if system.startswith("li"):
        return [
            args.li_python,
            str(ROOT / "bench" / "llamaindex_engine_run.py"),
            "--dataset",
            str(args.dataset),
            "--out",
            str(tmp / "model_output"),
            "--epochs",
            str(args.epochs),
        ]
    cmd = [
        sys.executable,
        "-m",
        "core",
        "train",
        "--workspace",
        str(tmp / "ws"),
        "--dataset",
        str(args.dataset),
        "--embedder",
        args.embedder,
        "--json",
    ]
    if system in ("al", "al-before"):
        cmd += ["--llamaindex-defaults", "--epochs", str(args.epochs)]
    return cmd


def run_one(system: str, args, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="cold-vs-li-") as tmp:
        cmd = command(system, args, Path(tmp))
        cwd = args.before_root if system == "al-before" else ROOT
        if system == "li-passive":
            env = {**env, "OMP_WAIT_POLICY": "PASSIVE"}
        load = load_average()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=args.timeout)
        except subprocess.TimeoutExpired:  # the child was killed: the row says "more than"
            return {"system": system, "wall": None, "timed_out": args.timeout, "load_before": load}
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{system} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row = {"system": system, "wall": wall, "cpu": cpu, "load_before": load, "load_after": load_average()}
    if system.startswith("li"):  # the runner's JSON line (LlamaIndex's colour codes may precede it)
        row["phases"] = json.loads(proc.stdout[proc.stdout.rindex('{"phases"') :].splitlines()[0])["phases"]
    else:
        row["train_seconds"] = json.loads(proc.stdout)["seconds"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--li-python", default="/tmp/li/bin/python", help="python of a venv with LlamaIndex")
    ap.add_argument("--dataset", type=Path, default=SHARED)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--systems", nargs="+", choices=list(LABELS), default=list(LABELS))
    ap.add_argument("--embedder", default="default", help="AdapterLab's --embedder for the al rows")
    ap.add_argument("--before-root", type=Path, help="another AdapterLab checkout, for the al-before rows")
    ap.add_argument("--timeout", type=float, help="kill a run after this many seconds (reported as more than)")
    ap.add_argument("--log", type=Path, help="append every run as a JSON line here (kept if interrupted)")
    args = ap.parse_args()
    if "al-before" in args.systems and not args.before_root:
        ap.error("al-before needs --before-root")
    # every process starts from the same environment: no wait policy unless a row sets one
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["HF_HUB_OFFLINE"] = "1"
    threads = {"project venv": torch_threads(sys.executable, env)}
    if any(s.startswith("li") for s in args.systems):
        threads["LlamaIndex venv"] = torch_threads(args.li_python, env)
    print(f"torch threads, version: {threads}; cores: {os.cpu_count()}", flush=True)
    rows: list[dict] = []
    for rep in range(args.repeats):
        for system in args.systems:
            row = run_one(system, args, env)
            row["repeat"] = rep
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.log:
                with args.log.open("a") as fh:
                    fh.write(json.dumps({**row, "embedder": args.embedder}) + "\n")
    done = [r for r in rows if r["wall"] is not None]
    loads = [r["load_before"] for r in rows] + [r["load_after"] for r in done]
    print(
        f"\ndataset {args.dataset.name}, {args.epochs} epochs, {args.repeats} interleaved repeat(s); load average "
        f"(1 min) during the runs {min(loads):.1f}-{max(loads):.1f}; AdapterLab embedder {args.embedder}\n"
    )
    anchors = [a for a in ("li", "li-passive") if a in args.systems]
    print(
        "| process | wall s (median; each) | CPU s (median) | "
        + " | ".join(f"`{a}` / this, wall (CPU)" for a in anchors)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(anchors))
    med: dict[str, tuple[float, float] | None] = {}
    for s in args.systems:
        mine = [r for r in done if r["system"] == s]
        killed = [r for r in rows if r["system"] == s and r["wall"] is None]
        med[s] = (
            (statistics.median(r["wall"] for r in mine), statistics.median(r["cpu"] for r in mine))
            if mine and not killed
            else None
        )
    for s in args.systems:
        each = [
            f"{r['wall']:.1f}" if r["wall"] is not None else f"> {r['timed_out']:.0f}" for r in rows if r["system"] == s
        ]
        m = med[s]
        ratios = []
        for a in anchors:
            if m is None or med[a] is None:
                lo = min((r["timed_out"] for r in rows if r["system"] == a and r["wall"] is None), default=None)
                ratios.append(f"> {lo / m[0]:.1f}x" if (m is not None and lo) else "-")
            else:
                ratios.append(f"{med[a][0] / m[0]:.1f}x ({med[a][1] / m[1]:.1f}x)")
        wall = f"{m[0]:.1f}" if m else "-"
        cpu = f"{m[1]:.1f}" if m else "-"
        print(f"| {LABELS[s]} | {wall} ({', '.join(each)}) | {cpu} | " + " | ".join(ratios) + " |")
    for a in anchors:
        li_rows = [r for r in done if r["system"] == a]
        if li_rows:
            keys = li_rows[0]["phases"]
            print(
                f"\n`{a}` by phase (median s): "
                + "; ".join(f"{k} {statistics.median(r['phases'][k] for r in li_rows):.1f}" for k in keys)
            )


if __name__ == "__main__":
    main()
