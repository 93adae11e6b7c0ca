"""BERT-family sentence-transformers folders run in plain torch, without sentence-transformers.

Importing ``sentence_transformers`` costs about 3.5-4.5 s on the 2-core reference machine (it pulls
``transformers``, scikit-learn, pandas and datasets) against 1 s for ``torch``: a fifth of a cold
``python -m core train`` on the guide's dataset. The models AdapterLab ships and recommends
(all-MiniLM-L6-v2, BGE, E5, GTE) are a BERT encoder followed by pooling and, often, normalisation;
that pipeline is a few dozen lines of torch. :class:`LeanSentenceEncoder` runs it from the folder's
own files: ``tokenizer.json`` through the ``tokenizers`` library, ``model.safetensors`` (never a
pickle), the pooling of ``1_Pooling/config.json``. Its vectors match sentence-transformers' to float
rounding (``tests/test_torch_encoder.py`` compares both on real text, including truncated and
padded batches), so it shares the model's cache identity.

:func:`lean_support` says whether a folder qualifies; anything else (another architecture, a Dense
layer, a default prompt, a pickle-only checkpoint, a GPU) loads through sentence-transformers as
before. ``ADAPTERLAB_ENCODER=sentence-transformers`` forces the sentence-transformers path.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ENV_SWITCH = "ADAPTERLAB_ENCODER"
_ARCHITECTURES = ("bert",)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def lean_support(folder: str | os.PathLike, device: str = "cpu") -> tuple[dict | None, str]:
    """``(pipeline, "")`` when :class:`LeanSentenceEncoder` reproduces the folder's model, else
    ``(None, reason)``. The pipeline is :func:`core.onnx_embedder.read_pipeline`'s plus the model
    config."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("sentence-transformers", "st"):
        return None, f"{ENV_SWITCH} asks for sentence-transformers"
    if device != "cpu":
        return None, f"device {device}: the plain-torch encoder is used on CPU only"
    folder = Path(folder)
    if not folder.is_dir():
        return None, "not a local folder"
    from .onnx_embedder import OnnxBackendError, read_pipeline

    try:
        pipeline = read_pipeline(folder)
    except OnnxBackendError as exc:
        return None, str(exc)
    config = _read_json(folder / "config.json")
    if config.get("model_type") not in _ARCHITECTURES:
        return None, f"model type {config.get('model_type')!r} (plain torch runs {', '.join(_ARCHITECTURES)})"
    if config.get("position_embedding_type", "absolute") != "absolute" or config.get("hidden_act", "gelu") != "gelu":
        return None, "a BERT variant (position embeddings or activation) the plain-torch encoder does not run"
    if not (folder / "tokenizer.json").is_file() or not (folder / "model.safetensors").is_file():
        return None, "needs tokenizer.json and model.safetensors"
    return {**pipeline, "config": config}, ""


class _Layer:
    """Parameter names of one BERT encoder layer, in the checkpoint's own spelling."""

    def __init__(self, prefix: str):
        a = f"{prefix}attention."
        self.q, self.k, self.v = (f"{a}self.{n}" for n in ("query", "key", "value"))
        self.attn_out, self.attn_norm = f"{a}output.dense", f"{a}output.LayerNorm"
        self.up, self.down, self.norm = (
            f"{prefix}intermediate.dense",
            f"{prefix}output.dense",
            f"{prefix}output.LayerNorm",
        )


class LeanSentenceEncoder:
    """The part of ``SentenceTransformer`` that AdapterLab uses (``encode``, ``max_seq_length``,
    the dimension, token counts), for a folder :func:`lean_support` accepts."""

    def __init__(self, folder: str | os.PathLike, pipeline: dict):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.pipeline = pipeline
        cfg = pipeline["config"]
        self.hidden = int(cfg["hidden_size"])
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.max_seq_length = int(pipeline["max_seq_length"] or min(int(cfg.get("max_position_embeddings", 512)), 512))
        weights = load_file(str(self.folder / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
        self.w = {k[len(prefix) :]: v.float() for k, v in weights.items() if k.startswith(prefix)}
        self.layers = [_Layer(f"encoder.layer.{i}.") for i in range(int(cfg["num_hidden_layers"]))]
        needed = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight"]
        for layer in self.layers:
            for name in (layer.q, layer.k, layer.v, layer.attn_out, layer.attn_norm, layer.up, layer.down, layer.norm):
                needed += [f"{name}.weight", f"{name}.bias"]
        missing = [k for k in needed if k not in self.w]
        if missing:
            raise ValueError(f"{self.folder}: the checkpoint lacks {missing[:3]} (not a BERT encoder)")
        self._torch = torch
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self._counter = Tokenizer.from_file(str(self.folder / "tokenizer.json"))  # never truncates
        self._counter.no_truncation()
        self._counter.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_length, strategy="longest_first")
        pad = cfg.get("pad_token_id", 0) or 0
        pad_token = self.tokenizer.id_to_token(pad) or "[PAD]"
        self.tokenizer.enable_padding(pad_id=pad, pad_token=pad_token)

    # -- what SentenceTransformerEmbedder asks of a model ---------------------------------------
    def get_sentence_embedding_dimension(self) -> int:
        return int(self.pipeline["dimension"])

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        texts = [t.lower() for t in texts] if self.pipeline["do_lower_case"] else list(texts)
        return [len(e.ids) for e in self._counter.encode_batch(texts, add_special_tokens=True)]

    def encode(self, texts: Sequence[str], batch_size: int = 32, **_ignored) -> np.ndarray:
        """Sentence vectors, float32, in the order given; batches of similar length."""
        texts = list(texts)
        out = np.zeros((len(texts), self.get_sentence_embedding_dimension()), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        step = max(int(batch_size), 1)
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            out[idx] = self._batch([texts[i] for i in idx])
        return out

    # -- the model -------------------------------------------------------------------------------
    def _batch(self, texts: list[str]) -> np.ndarray:
        from .onnx_embedder import pool

        torch = self._torch
        if self.pipeline["do_lower_case"]:
            texts = [t.lower() for t in texts]
        enc = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        types = torch.tensor([e.type_ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        with torch.inference_mode():
            tokens = self._forward(ids, types, mask)
        return pool(tokens.numpy(), mask.numpy(), self.pipeline["pooling"], self.pipeline["normalize"])

    def _forward(self, ids, types, mask):
        torch = self._torch
        F = torch.nn.functional
        w = self.w
        n, length = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids]
        if "embeddings.token_type_embeddings.weight" in w:
            x = x + w["embeddings.token_type_embeddings.weight"][types]
        x = x + w["embeddings.position_embeddings.weight"][:length].unsqueeze(0)
        x = self._norm(x, "embeddings.LayerNorm")
        # Keys that are padding are masked out; no mask at all when nothing is padded (the fast path).
        attn_mask = None if bool(mask.all()) else mask.bool()[:, None, None, :]
        head = self.hidden // self.heads
        for layer in self.layers:

            def split(name, h=x):
                return (
                    F.linear(h, w[f"{name}.weight"], w[f"{name}.bias"])
                    .view(n, length, self.heads, head)
                    .transpose(1, 2)
                )

            ctx = F.scaled_dot_product_attention(
                split(layer.q), split(layer.k), split(layer.v), attn_mask=attn_mask, scale=1.0 / math.sqrt(head)
            )
            ctx = ctx.transpose(1, 2).reshape(n, length, self.hidden)
            x = self._norm(
                F.linear(ctx, w[f"{layer.attn_out}.weight"], w[f"{layer.attn_out}.bias"]) + x, layer.attn_norm
            )
            up = F.gelu(F.linear(x, w[f"{layer.up}.weight"], w[f"{layer.up}.bias"]))
            x = self._norm(F.linear(up, w[f"{layer.down}.weight"], w[f"{layer.down}.bias"]) + x, layer.norm)
        return x

    def _norm(self, x, name: str):
        return self._torch.nn.functional.layer_norm(
            x, (self.hidden,), self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps
        )


__all__ = ["ENV_SWITCH", "LeanSentenceEncoder", "lean_support"]
