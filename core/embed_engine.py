"""Fill the workspace's embedding cache ahead of training and evaluation, locally or on Ray.

``python -m core embed --dataset FILE`` (or ``--documents ...``) embeds every text that the cache
does not hold yet, so that ``train`` and ``evaluate`` afterwards read vectors only.

* ``engine="local"``: the embedder in this process (:class:`core.embedders.CachedEmbedder`);
  an ``openai:`` embedder sends batched requests with bounded concurrency
  (``--api-batch-size``, ``--api-concurrency``) under the shared retry policy.
* ``engine="ray"``: Ray Data ``map_batches`` over an actor pool, one model per actor (a GPU per
  actor when the cluster has GPUs). Results stream back to this process and are written to the
  same cache batch by batch, so a run that fails keeps what it finished, and running it again
  embeds only what is missing. Ray is optional (``requirements-scale.txt``) and imported only here,
  only when asked for. ``ray_address`` is a cluster's address (``ray://HOST:10001`` or
  ``HOST:6379``); without one a local Ray instance is started on this machine.

Vectors never depend on the engine beyond float noise: both run the same embedder code.

Example::

    from core.embed_engine import collect_texts, embed_to_cache
    passages, queries = collect_texts(dataset=QADataset.load("train.json"))
    report = embed_to_cache(ws, "default", passages, queries, engine="ray")
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .embedders import (
    CachedEmbedder,
    EmbedderError,
    EmbeddingCache,
    resolve_embedder,
    text_key,
)
from .progress import Progress

ENGINES = ("local", "ray")
RAY_HINT = "Ray is not installed: pip install -r requirements-scale.txt (or use --engine local)"


@dataclass
class EmbedReport:
    """What one run did: texts asked for, already cached, newly embedded, and how fast."""

    engine: str
    identity: str
    texts: int
    cached: int
    embedded: int
    seconds: float
    actors: int = 1
    gpus_per_actor: float = 0.0

    @property
    def rate(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "texts_per_second": round(self.rate, 1)}


def collect_texts(dataset=None, chunks: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(passages, queries) to embed: a dataset's corpus and questions, plus any chunk texts."""
    passages = list(dict.fromkeys([*chunks, *((dataset.corpus.values()) if dataset is not None else ())]))
    queries = list(dict.fromkeys(dataset.queries.values())) if dataset is not None else []
    return passages, queries


def _roles(emb) -> dict[str, str]:
    """The cache role of each kind of text ('p' passages, 'q' queries), as CachedEmbedder keys them."""
    return {"p": "p:" + getattr(emb, "passage_prefix", ""), "q": "p:" + getattr(emb, "query_prefix", "")}


def missing_texts(
    cache: EmbeddingCache, identity: str, roles: dict[str, str], passages: Sequence[str], queries: Sequence[str]
) -> tuple[list[tuple[str, str]], int]:
    """The (kind, text) pairs the cache lacks under ``identity`` (a cache identity: see
    :attr:`core.embedders.CachedEmbedder.cache_identity`; one pair per key), and how many it has."""
    items = [("p", t) for t in passages] + [("q", t) for t in queries]
    keys = [text_key(roles[k], t) for k, t in items]
    uniq: dict[bytes, tuple[str, str]] = {}
    for key, item in zip(keys, items):
        uniq.setdefault(key, item)
    ukeys = list(uniq)
    _, have = cache.get_matrix(identity, ukeys)
    todo = [uniq[k] for k, h in zip(ukeys, have) if not h]
    return todo, int(have.sum())


def embed_to_cache(
    workspace,
    spec: str = "default",
    passages: Sequence[str] = (),
    queries: Sequence[str] = (),
    *,
    engine: str = "local",
    ray_address: str | None = None,
    actors: int | None = None,
    batch_size: int = 256,
    embedder_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> EmbedReport:
    """Embed every passage and query that the workspace cache lacks, with ``engine``."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    opts = dict(embedder_options or {})
    started = time.monotonic()
    if engine == "local":
        emb = resolve_embedder(spec, workspace=workspace, **opts)
        if not isinstance(emb, CachedEmbedder):  # pragma: no cover - resolve_embedder caches with a workspace
            raise EmbedderError("the local engine needs a workspace cache")
        before_hits, before_misses = emb.stats.hits, emb.stats.misses
        emb.embed_texts(list(passages), progress=progress)
        emb.embed_queries(list(queries), progress=progress)
        new = emb.stats.misses - before_misses
        asked = (emb.stats.hits - before_hits) + new
        return EmbedReport("local", emb.identity, asked, asked - new, new, time.monotonic() - started)
    return _embed_ray(
        workspace,
        spec,
        passages,
        queries,
        ray_address=ray_address,
        actors=actors,
        batch_size=batch_size,
        opts=opts,
        progress=progress,
        started=started,
    )


# ------------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------------
class EmbedActor:
    """One model per Ray actor: ``__call__`` embeds a batch of {"i", "kind", "text"} rows."""

    def __init__(self, spec: str, opts: dict[str, Any]):
        self.emb = resolve_embedder(spec, workspace=None, cache=False, **opts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        kinds = np.asarray(batch["kind"])
        parts: dict[str, np.ndarray] = {}
        for kind, fn in (("p", self.emb.embed_texts), ("q", self.emb.embed_queries)):
            sel = np.flatnonzero(kinds == kind)
            if sel.size:
                parts[kind] = (sel, np.asarray(fn([texts[i] for i in sel]), dtype=np.float32))
        dim = next(iter(parts.values()))[1].shape[1]
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for sel, vecs in parts.values():
            out[sel] = vecs
        return {"i": np.asarray(batch["i"]), "vector": out, "identity": np.array([self.emb.identity] * len(texts))}


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise EmbedderError(RAY_HINT) from exc
    return ray


def _ray_init(ray, address: str | None) -> bool:
    """Connect to ``address`` or start a local instance; True when this call started/connected it."""
    if ray.is_initialized():
        return False
    core_dir = str(Path(__file__).resolve().parent)
    kwargs: dict[str, Any] = {
        "ignore_reinit_error": True,
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if address:
        # a cluster's workers get this package shipped to them; keys stay in their own environment
        kwargs["runtime_env"] = {"py_modules": [core_dir]}
        ray.init(address=address, **kwargs)
    else:
        root = str(Path(core_dir).parent)
        path = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
        cpus = os.cpu_count() or 1
        ray.init(
            num_cpus=cpus,
            object_store_memory=int(os.environ.get("ADAPTERLAB_RAY_OBJECT_STORE", str(256 << 20))),
            runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}},
            **kwargs,
        )
    return True


def _embed_ray(
    workspace, spec, passages, queries, *, ray_address, actors, batch_size, opts, progress, started
) -> EmbedReport:
    ray = _import_ray()
    cache = EmbeddingCache(workspace.embeddings_path)
    probe = resolve_embedder(spec, workspace=workspace, **opts)  # identity and roles; loads no model
    if not getattr(probe.base, "identity_settled", True):
        # An API embedder's identity is settled by its first answer (per-token answers are pooled
        # under another identity): settle it here with the shortest text before fanning out.
        todo, _ = missing_texts(cache, probe.cache_identity, _roles(probe), passages, queries)
        if todo:
            probe.embed_texts([min((t for _, t in todo), key=len)])
    # the workers check the full identity (prefixes included); the vectors are stored under the cache identity,
    # which leaves the prefixes to each key (a passage's vector does not depend on the query prefix)
    identity, stored_as, roles = probe.identity, probe.cache_identity, _roles(probe)
    todo, cached = missing_texts(cache, stored_as, roles, passages, queries)
    if todo and probe.adopt_legacy([text_key(roles[k], t) for k, t in todo]):
        todo, cached = missing_texts(cache, stored_as, roles, passages, queries)
    total = len(todo) + cached
    report = EmbedReport("ray", identity, total, cached, 0, 0.0)
    if not todo:
        if progress:
            progress(total, total, f"all {total} embeddings cached")
        report.seconds = time.monotonic() - started
        return report
    owned = _ray_init(ray, ray_address)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        n_actors = int(actors or (gpus if gpus else max(1, min(4, int(resources.get("CPU", 1)) // 4))))
        per_gpu = 1.0 if gpus else 0.0
        # CPU actors share the cores (Ray gives each actor's torch as many threads as its CPUs)
        per_cpu = 0 if per_gpu else max(1, int(resources.get("CPU", 1)) // n_actors)
        report.actors, report.gpus_per_actor = n_actors, per_gpu
        rows = [{"i": i, "kind": k, "text": t} for i, (k, t) in enumerate(todo)]
        ds = ray.data.from_items(
            rows, override_num_blocks=max(1, min(len(rows) // max(1, batch_size), 4 * n_actors * 8))
        )
        ds = ds.map_batches(
            EmbedActor,
            fn_constructor_kwargs={"spec": spec, "opts": opts},
            batch_size=batch_size,
            concurrency=n_actors,
            num_gpus=per_gpu,
            num_cpus=per_cpu,
            batch_format="numpy",
        )
        done = 0
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            got = set(np.asarray(batch["identity"]).tolist())
            if got != {identity}:
                raise EmbedderError(
                    f"Ray workers embedded as {sorted(got)} but this process expects {identity!r}: the workers "
                    "see another model or server (check the spec, OPENAI_BASE_URL and the installed model there)."
                )
            idx = np.asarray(batch["i"], dtype=np.int64)
            vecs = np.asarray(
                np.stack(batch["vector"]) if batch["vector"].dtype == object else batch["vector"], dtype=np.float32
            )
            cache.put_matrix(stored_as, [text_key(roles[todo[i][0]], todo[i][1]) for i in idx], vecs)
            done += len(idx)
            report.embedded = done
            if progress:
                rate = done / max(time.monotonic() - started, 1e-6)
                progress(cached + done, total, f"ray · {n_actors} actor(s) · {rate:.0f} texts/s · {cached} cached")
    finally:
        if owned:
            ray.shutdown()
    report.seconds = time.monotonic() - started
    return report
