"""Check, against the real LlamaIndex packages, that adapter folders move both ways.

Run in an environment that has LlamaIndex (kept out of AdapterLab's own requirements: it pulls
tiktoken, which downloads its encodings at run time):

    python -m venv /tmp/li && /tmp/li/bin/pip install torch==2.13.0 llama-index-core llama-index-embeddings-adapter \
        llama-index-finetuning mistralai==1.12.4   # with mistralai 3.x, `import llama_index.finetuning` fails
    PYTHONPATH=. /tmp/li/bin/python bench/llamaindex_interop.py

1. AdapterLab writes a trained-looking linear and two-layer adapter; LlamaIndex's
   ``LinearLayer.load`` / ``TwoLayerNN.load`` and ``AdapterEmbeddingModel`` load them and
   give the same query vectors as AdapterLab.
2. LlamaIndex writes adapters with ``BaseAdapter.save``; AdapterLab's ``load_adapter`` reads
   them (class inferred from the config) with ``weights_only=True`` and gives the same outputs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.adapters import build_adapter, load_adapter, save_adapter  # noqa: E402


def _li_dataset_class():
    """LlamaIndex's EmbeddingQAFinetuneDataset, loaded from its own file: importing the
    ``llama_index.finetuning`` package pulls every provider (mistralai, ...), which may not import."""
    import importlib.util

    import llama_index

    base = Path(llama_index.__path__[-1] if hasattr(llama_index, "__path__") else "")
    for root in map(Path, llama_index.__path__):
        candidate = root / "finetuning" / "embeddings" / "common.py"
        if candidate.exists():
            base = candidate
            break
    spec = importlib.util.spec_from_file_location("li_common", base)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.EmbeddingQAFinetuneDataset


def main() -> None:
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.embeddings.adapter import AdapterEmbeddingModel
    from llama_index.embeddings.adapter.utils import LinearLayer as LILinear
    from llama_index.embeddings.adapter.utils import TwoLayerNN as LITwoLayer

    torch.manual_seed(0)
    x = torch.randn(4, 384)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, li_cls in (("linear", LILinear), ("two-layer", LITwoLayer)):
            ours = build_adapter(kind, 384)
            with torch.no_grad():
                for p in ours.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            path = Path(tmp) / f"ours-{kind}"
            save_adapter(ours, path)
            theirs = li_cls.load(str(path))
            same = torch.allclose(ours(x), theirs(x), atol=1e-6)
            model = AdapterEmbeddingModel(MockEmbedding(embed_dim=384), str(path), adapter_cls=li_cls)
            q = torch.tensor(model.get_query_embedding("what was the revenue?"))
            base_q = torch.tensor(MockEmbedding(embed_dim=384).get_query_embedding("what was the revenue?"))
            same_model = torch.allclose(q, ours(base_q[None])[0].detach(), atol=1e-5)
            rows.append(
                (f"AdapterLab {kind} -> LlamaIndex {li_cls.__name__}.load / AdapterEmbeddingModel", same and same_model)
            )

            li = li_cls(384, 384) if kind == "linear" else li_cls(384, 1024, 384, bias=True, add_residual=True)
            with torch.no_grad():
                for p in li.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            li_path = Path(tmp) / f"li-{kind}"
            li.save(str(li_path))
            back = load_adapter(li_path)
            rows.append(
                (
                    f"LlamaIndex {li_cls.__name__}.save -> AdapterLab load_adapter ({type(back).__name__})",
                    torch.allclose(li(x), back(x), atol=1e-6),
                )
            )
        # datasets: AdapterLab's JSON -> LlamaIndex, LlamaIndex's JSON -> AdapterLab
        EmbeddingQAFinetuneDataset = _li_dataset_class()

        from core.datasets import QADataset

        ds = QADataset({"q1": "What was revenue?"}, {"n1": "Revenue was $3.2B.", "n2": "Riders grew."}, {"q1": ["n1"]})
        ds.save(Path(tmp) / "ours.json")
        li_ds = EmbeddingQAFinetuneDataset.from_json(str(Path(tmp) / "ours.json"))
        rows.append(
            (
                "AdapterLab dataset JSON -> EmbeddingQAFinetuneDataset.from_json",
                li_ds.queries == ds.queries and li_ds.corpus == ds.corpus and li_ds.relevant_docs == ds.relevant_docs,
            )
        )
        li_ds.save_json(str(Path(tmp) / "li.json"))
        back_ds = QADataset.load(Path(tmp) / "li.json")
        rows.append(
            ("EmbeddingQAFinetuneDataset.save_json -> AdapterLab QADataset.load", back_ds.to_dict() == ds.to_dict())
        )
    print("| direction | same outputs |")
    print("|---|---|")
    for name, ok in rows:
        print(f"| {name} | {'yes' if ok else 'NO'} |")
    if not all(ok for _, ok in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
