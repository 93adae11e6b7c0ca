"""Training on cached embeddings: batching, splits, model selection, callbacks, checkpoints, cancel."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import torch

from core.adapters import LinearLayer, load_adapter
from core.datasets import QADataset
from core.training import (
    TrainConfig,
    TrainingError,
    list_checkpoints,
    sibling_free_batches,
    split_by_chunk,
    train,
)

DIM = 16


class TableEmbedder:
    """Fixed vectors by text; counts what it is asked to embed."""

    def __init__(self, vectors: dict[str, np.ndarray], identity: str = "table"):
        self.vectors = vectors
        self.identity = identity
        self.dimension = DIM
        self.embedded = 0

    def _get(self, texts):
        self.embedded += len(texts)
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)

    def embed_queries(self, texts, progress=None):
        return self._get(texts)

    def embed_texts(self, texts, progress=None):
        return self._get(texts)


def synthetic(n_chunks: int = 60, per_chunk: int = 2, rotate: bool = True, noise: float = 0.15, seed: int = 0):
    """Chunks are random unit vectors; each question is its chunk's vector plus noise, then
    (``rotate``) passed through one fixed random rotation, so base retrieval is poor and a
    linear adapter (the inverse rotation) can fix it for unseen chunks too."""
    rng = np.random.default_rng(seed)
    chunks = rng.normal(size=(n_chunks, DIM))
    chunks /= np.linalg.norm(chunks, axis=1, keepdims=True)
    rot, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    corpus, queries, rel, vectors = {}, {}, {}, {}
    for c in range(n_chunks):
        corpus[f"n{c}"] = f"chunk {c}"
        vectors[f"chunk {c}"] = chunks[c]
        for j in range(per_chunk):
            q = chunks[c] + noise * rng.normal(size=DIM)
            if rotate:
                q = rot @ q
            qid = f"q{c}_{j}"
            queries[qid] = f"question {c}.{j}"
            rel[qid] = [f"n{c}"]
            vectors[f"question {c}.{j}"] = q
    return QADataset(queries, corpus, rel), TableEmbedder(vectors)


def _fast(**kw) -> TrainConfig:
    base = dict(
        adapter="linear",
        epochs=6,
        batch_size=16,
        lr=0.05,
        warmup_ratio=0.0,
        device="cpu",
        val_fraction=0.2,
        selection="holdout",
    )
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------------------------
# batching and splitting
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(25))
def test_sibling_free_batches_property(seed):
    rng = random.Random(seed)
    n_groups = rng.randint(1, 15)
    groups = [rng.randrange(n_groups) for _ in range(rng.randint(1, 80))]
    if seed % 3 == 0:  # one chunk with more questions than there are batches
        groups += [0] * 12
    bs = rng.randint(2, 9)
    batches = sibling_free_batches(groups, bs, random.Random(seed))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(groups)))  # every example exactly once
    for b in batches:
        assert 1 <= len(b) <= bs
        assert len({groups[i] for i in b}) == len(b)  # no siblings together
    biggest = max(groups.count(g) for g in set(groups))
    assert len(batches) >= max(biggest, -(-len(groups) // bs))


def test_big_group_spreads_over_extra_batches():
    groups = [0] * 10 + [1, 2, 3, 4]  # 14 examples, batch 4: group 0 needs 10 batches
    batches = sibling_free_batches(groups, 4, random.Random(0))
    assert len(batches) == 10
    assert all(sum(groups[i] == 0 for i in b) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(14))


def test_sibling_free_batches_are_shuffled_by_seed():
    groups = list(range(40))
    a = sibling_free_batches(groups, 8, random.Random(1))
    b = sibling_free_batches(groups, 8, random.Random(2))
    assert a != b
    assert a == sibling_free_batches(groups, 8, random.Random(1))


def _random_multi_dataset(seed: int) -> QADataset:
    rng = random.Random(seed)
    corpus = {f"n{i}": f"chunk {i}" for i in range(30)}
    queries, rel = {}, {}
    for i in range(70):
        queries[f"q{i}"] = f"question {i}"
        k = 1 if rng.random() < 0.8 else 2
        rel[f"q{i}"] = rng.sample(sorted(corpus), k)
    return QADataset(queries, corpus, rel)


@pytest.mark.parametrize("seed", range(10))
def test_split_by_chunk_never_leaks_a_chunk(seed):
    ds = _random_multi_dataset(seed)
    train_q, val_q = split_by_chunk(ds, 0.2, seed)
    assert sorted(train_q + val_q) == sorted(ds.queries) and not set(train_q) & set(val_q)
    assert train_q and val_q
    train_chunks = {d for q in train_q for d in ds.relevant_docs[q]}
    val_chunks = {d for q in val_q for d in ds.relevant_docs[q]}
    assert not train_chunks & val_chunks


def test_split_by_chunk_is_seeded_and_sized():
    ds, _ = synthetic(n_chunks=40)
    t1, v1 = split_by_chunk(ds, 0.25, 3)
    assert (t1, v1) == split_by_chunk(ds, 0.25, 3)
    assert split_by_chunk(ds, 0.25, 4) != (t1, v1)
    assert len({ds.relevant_docs[q][0] for q in v1}) == 10  # 25% of 40 chunks
    assert split_by_chunk(ds, 0.0, 0) == (list(ds.queries), [])


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
def test_training_learns_a_useful_map(tmp_path):
    ds, emb = synthetic()
    events = []
    result = train(ds, emb, _fast(), out_dir=tmp_path / "out", callback=events.append)
    assert result.best_epoch > 0
    val = result.val_history
    assert val[0]["epoch"] == 0 and val[0]["train_loss"] is None  # the identity, measured first
    assert result.base_metrics == val[0]["val"]
    assert result.best_metrics["mrr@5"] > result.base_metrics["mrr@5"] + 0.2
    assert result.best_metrics["hit@5"] >= result.base_metrics["hit@5"]
    assert max(h["val"]["mrr@5"] for h in val[1:]) == result.best_metrics["mrr@5"]
    assert result.n_train_queries + result.n_val_queries == len(ds.queries)
    assert emb.embedded == len(ds.corpus) + len(ds.queries)  # embedded once, not per epoch
    # the saved adapter is the best one and reproduces its validation score
    saved = load_adapter(tmp_path / "out")
    x = torch.randn(3, DIM)
    assert torch.allclose(saved(x), result.adapter(x), atol=1e-6)
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_training_that_cannot_help_returns_the_identity(tmp_path):
    ds, emb = synthetic(rotate=False, noise=0.0)  # base retrieval is already perfect
    result = train(ds, emb, _fast(epochs=3), out_dir=tmp_path / "out")
    assert result.base_metrics["mrr@5"] == 1.0
    assert result.best_epoch == 0
    assert result.best_metrics == result.base_metrics
    assert torch.equal(result.adapter.linear.weight, torch.eye(DIM))
    assert torch.equal(load_adapter(tmp_path / "out").linear.weight, torch.eye(DIM))


def test_events_history_and_checkpoints(tmp_path):
    ds, emb = synthetic(n_chunks=30)
    events = []
    cfg = _fast(epochs=3, batch_size=10, checkpoint_every=2)
    result = train(ds, emb, cfg, out_dir=tmp_path / "out", callback=events.append)
    assert events == result.history
    kinds = {e["type"] for e in events}
    assert kinds == {"phase", "step", "epoch", "checkpoint"}
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, len(steps) + 1))
    assert all(set(e) == {"type", "step", "epoch", "loss", "lr"} and np.isfinite(e["loss"]) for e in steps)
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]
    assert all(set(e["val"]) == {"hit@5", "mrr@5", "ndcg@10", "recall@5"} for e in epochs)
    assert sum(e["best"] for e in epochs[1:]) >= 1 and epochs[0]["best"]

    ckpt_steps = [e["step"] for e in events if e["type"] == "checkpoint"]
    assert ckpt_steps == [s for s in range(1, len(steps) + 1) if s % 2 == 0]
    listed = list_checkpoints(tmp_path / "out")
    assert [p.name for p in listed] == [f"step_{s}" for s in ckpt_steps]  # sorted by number, not text
    assert [str(p) for p in listed] == result.checkpoints
    assert list_checkpoints(tmp_path / "out" / "checkpoints") == listed
    assert list_checkpoints(tmp_path / "nowhere") == []
    first = load_adapter(listed[0])
    assert isinstance(first, LinearLayer)
    assert not torch.equal(first.linear.weight, torch.eye(DIM))  # trained for 2 steps


def test_checkpoints_every_epoch_by_default(tmp_path):
    ds, emb = synthetic(n_chunks=20, per_chunk=1)
    result = train(ds, emb, _fast(epochs=2, batch_size=4, val_fraction=0.0), out_dir=tmp_path / "o")
    steps_per_epoch = -(-20 // 4)
    assert [p.name for p in list_checkpoints(tmp_path / "o")] == [
        f"step_{steps_per_epoch}",
        f"step_{2 * steps_per_epoch}",
    ]
    # without validation the last epoch is kept
    assert result.best_epoch == 2 and result.base_metrics is None and result.n_val_queries == 0


def test_cancel_from_the_callback_keeps_the_best_state(tmp_path):
    ds, emb = synthetic()
    cancel = threading.Event()
    seen = []

    def cb(event):
        seen.append(event)
        if event["type"] == "step" and event["step"] == 3:
            cancel.set()

    result = train(ds, emb, _fast(epochs=20), out_dir=tmp_path / "out", callback=cb, cancel=cancel)
    assert result.cancelled
    assert max(e["step"] for e in seen if e["type"] == "step") == 3
    assert result.best_epoch == 0  # no epoch finished: the identity is the best validated state
    assert torch.equal(result.adapter.linear.weight, torch.eye(DIM))
    saved = load_adapter(tmp_path / "out")
    assert torch.equal(saved.linear.weight, torch.eye(DIM))
    assert result.summary()["cancelled"] is True


def test_cancel_after_an_epoch_keeps_that_epoch(tmp_path):
    ds, emb = synthetic()
    cancel = threading.Event()

    def cb(event):
        if event["type"] == "epoch" and event["epoch"] == 2:
            cancel.set()

    result = train(ds, emb, _fast(epochs=20), callback=cb, cancel=cancel)
    assert result.cancelled and result.best_epoch in (1, 2)
    assert len(result.val_history) == 3


def test_in_batch_loss_runs_and_learns(tmp_path):
    ds, emb = synthetic()
    result = train(ds, emb, _fast(loss="in_batch", epochs=8, lr=0.05, temperature=0.05))
    losses = [e["loss"] for e in result.history if e["type"] == "step"]
    assert all(np.isfinite(losses))
    assert result.best_metrics["mrr@5"] > result.base_metrics["mrr@5"]


def test_other_relevant_chunks_are_not_negatives_and_duplicates_are_harmless():
    ds, emb = synthetic(n_chunks=30)
    for i, q in enumerate(ds.queries):  # some list their chunk twice, some name a second chunk
        first = ds.relevant_docs[q][0]
        ds.relevant_docs[q] = [first, first] if i % 2 else [first, f"n{(int(first[1:]) + 1) % 30}"]
    result = train(ds, emb, _fast(epochs=2, val_fraction=0.0))
    losses = [e["loss"] for e in result.history if e["type"] == "step"]
    assert losses and all(np.isfinite(losses))
    assert torch.isfinite(result.adapter.linear.weight).all()


def test_two_layer_and_custom_adapters_train(tmp_path):
    ds, emb = synthetic(n_chunks=30)
    two = train(ds, emb, _fast(adapter="two-layer", adapter_kwargs={"hidden_features": 32}, epochs=2, lr=1e-3))
    assert type(two.adapter).__name__ == "TwoLayerNN"
    custom = train(
        ds,
        emb,
        _fast(adapter="tests.custom_adapter_example:MyAdapter", epochs=2),
        out_dir=tmp_path / "c",
        allow_custom_code=True,
    )
    assert type(custom.adapter).__name__ == "MyAdapter"
    assert type(load_adapter(tmp_path / "c", allow_custom_code=True)).__name__ == "MyAdapter"


def test_explicit_validation_dataset(tmp_path):
    ds, emb = synthetic(n_chunks=40)
    val_ids = [q for q in ds.queries if int(q[1:].split("_")[0]) >= 30]
    train_ids = [q for q in ds.queries if q not in val_ids]
    result = train(ds.subset(train_ids), emb, _fast(epochs=3), val_dataset=ds.subset(val_ids))
    assert result.n_train_queries == len(train_ids) and result.n_val_queries == len(val_ids)
    assert result.best_epoch > 0


def test_early_stopping_with_patience():
    ds, emb = synthetic(rotate=False, noise=0.0)  # nothing to gain: stops after `patience` epochs
    result = train(ds, emb, _fast(epochs=10, patience=2))
    assert [h["epoch"] for h in result.val_history] == [0, 1, 2]
    assert any(e["type"] == "phase" and "early stop" in e["message"] for e in result.history)


def test_training_is_repeatable():
    ds, emb = synthetic(n_chunks=30)
    a = train(ds, emb, _fast(epochs=2))
    b = train(ds, emb, _fast(epochs=2))
    assert torch.equal(a.adapter.linear.weight, b.adapter.linear.weight)
    assert a.val_history == b.val_history


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, message",
    [
        ({"loss": "triplet"}, "loss must be one of"),
        ({"optimizer": "lion"}, "optimizer must be one of"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"loss": "in_batch", "batch_size": 1}, "in_batch loss needs batch_size >= 2"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": -1e-3}, "lr must be > 0"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"val_fraction": 0.95}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"select_metric": "recall"}, "select_metric"),
        ({"top_k": 0}, "top_k"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
        ({"patience": -1}, "patience must be >= 0"),
        ({"checkpoint_every": -1}, "checkpoint_every must be >= 0"),
        ({"adapter": "two-layer", "adapter_kwargs": {"hidden_features": -5}}, "hidden_features must be a whole number"),
        ({"adapter": "low-rank", "adapter_kwargs": {"rank": 0}}, "rank must be a whole number from 1"),
        ({"adapter": "two-layer", "adapter_kwargs": {"hidden_features": 10**9}}, "from 1 to 65,536"),
    ],
)
def test_config_validation(kw, message):
    cfg = TrainConfig(**kw)
    with pytest.raises(TrainingError, match=message):
        cfg.validate()
    ds, emb = synthetic(n_chunks=5)
    with pytest.raises(TrainingError, match=message):
        train(ds, emb, cfg)
    assert emb.embedded == 0  # refused before any embedding


def test_config_defaults_and_round_trip():
    assert TrainConfig().lr == 3e-4 and TrainConfig(adapter="two-layer").lr == 5e-4
    assert TrainConfig(adapter="tests.custom_adapter_example:MyAdapter").lr == 3e-4
    assert TrainConfig(lr=3e-3).lr == 3e-3
    cfg = TrainConfig(adapter="two-layer", adapter_kwargs={"hidden_features": 64}, epochs=3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(TrainingError, match="unknown training setting.*colour"):
        TrainConfig.from_dict({"colour": "blue"})


def test_llamaindex_defaults():
    cfg = TrainConfig.llamaindex_defaults("two-layer", epochs=25)
    assert (cfg.adapter, cfg.loss, cfg.lr, cfg.batch_size, cfg.optimizer, cfg.epochs) == (
        "two-layer",
        "in_batch",
        2e-5,
        10,
        "adamw",
        25,
    )
    assert cfg.temperature == pytest.approx(1 / 20)  # LlamaIndex's scale 20
    assert cfg.val_fraction == 0.0 and cfg.keep_best is False
    cfg.validate()
    ds, emb = synthetic(n_chunks=20)
    result = train(ds, emb, TrainConfig.llamaindex_defaults(epochs=1))
    assert result.best_epoch == 1 and result.base_metrics is None


def test_no_training_questions_is_an_error():
    _, emb = synthetic(n_chunks=4, per_chunk=1)
    with pytest.raises(TrainingError, match="no training questions"):
        train(QADataset({}, {"n0": "chunk 0"}, {}), emb, _fast(val_fraction=0.0))


def test_a_phase_carries_the_bar_on_instead_of_sending_it_back():
    from core.progress import in_phase

    seen = []
    first, second = (in_phase(lambda d, t, m: seen.append((d, t, m)), a, b) for a, b in ((0.0, 0.25), (0.25, 1.0)))
    first(10, 10, "embedded 10 of 10")
    second(1, 4, "epoch 1/4")
    second(4, 4, "epoch 4/4")
    assert seen == [(250, 1000, "embedded 10 of 10"), (438, 1000, "epoch 1/4"), (1000, 1000, "epoch 4/4")]
    assert in_phase(None, 0.0, 1.0) is None


def test_a_half_written_checkpoint_is_not_listed(tmp_path):
    """A run killed while a checkpoint was written left step_N holding only a temp file: evaluate --checkpoints
    then failed on it and the Train page offered it; only complete checkpoints are listed."""
    from core.adapters import build_adapter, save_adapter
    from core.training import list_checkpoints

    root = tmp_path / "adapter" / "checkpoints"
    save_adapter(build_adapter("linear", 8), root / "step_10")
    (root / "step_20").mkdir()
    (root / "step_20" / ".pytorch_model.bin.x1.tmp").write_bytes(b"\0" * 10)
    assert [p.name for p in list_checkpoints(tmp_path / "adapter")] == ["step_10"]
