"""An API embedder against a real local OpenAI-compatible server: `evaluate` end to end, timed.

Builds the issue's dataset size from the real Lyft questions (the first 20 questions whose
chunks fit, plus chunks up to 31), then runs, in a fresh workspace and with default settings::

    python -m core evaluate --dataset D --api-embedder openai:MODEL

against ``--base-url`` (no key needed: ``OPENAI_API_KEY=none``), and prints the wall time, what
the embedder said (per-token pooling, batch splits) and the table.

    python bench/api_server.py --base-url http://127.0.0.1:8711/v1 --model smollm2 [-- extra CLI flags]

Start the server first, e.g. llama.cpp's Python server with a small GGUF model::

    python -m llama_cpp.server --model SmolLM2-135M-Instruct.Q4_1.gguf --embedding true \\
        --host 127.0.0.1 --port 8711
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LYFT = ROOT.parent / "shared" / "data" / "qa" / "lyft_2021_train_dataset.json"


def subset(path: Path, n_queries: int = 20, n_chunks: int = 31) -> dict:
    d = json.loads(path.read_text())
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    for qid, text in d["queries"].items():
        if len(queries) >= n_queries:
            break
        rel = d["relevant_docs"][qid]
        if len(set(corpus) | set(rel)) > n_chunks:
            continue
        queries[qid] = text
        corpus.update({r: d["corpus"][r] for r in rel})
    for nid, text in d["corpus"].items():
        if len(corpus) >= n_chunks:
            break
        corpus.setdefault(nid, text)
    return {
        "queries": queries,
        "corpus": corpus,
        "mode": "text",
        "relevant_docs": {q: d["relevant_docs"][q] for q in queries},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", type=Path, default=LYFT)
    ap.add_argument("extra", nargs="*", help="more `evaluate` flags, after --")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "lyft_20q_31c.json"
        data = subset(args.dataset)
        ds.write_text(json.dumps(data))
        cmd = [
            sys.executable,
            "-m",
            "core",
            "evaluate",
            "--dataset",
            str(ds),
            "--api-embedder",
            f"openai:{args.model}",
            "--workspace",
            str(Path(tmp) / "ws"),
            *args.extra,
        ]
        env = {
            **os.environ,
            "OPENAI_BASE_URL": args.base_url,
            "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "none"),
            "HF_HUB_OFFLINE": "1",
        }
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t
    chars = sum(len(v) for v in data["corpus"].values()) + sum(len(v) for v in data["queries"].values())
    print(
        f"{len(data['queries'])} questions, {len(data['corpus'])} chunks, {chars:,} characters; "
        f"exit {proc.returncode}; {seconds / 60:.1f} min ({seconds:.0f} s)"
    )
    for line in proc.stderr.splitlines():
        if line.startswith(("embeddings ", "error:")):
            print(line)
    print(proc.stdout)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
