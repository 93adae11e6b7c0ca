"""core.losses: the loss registry, each loss's masking rules, and the settings' own help."""

from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from core.losses import LOSSES, NEEDS_BATCH, Loss, LossBatch, corpus_softmax, in_batch
from core.train_config import FIELD_HELP, TrainConfig, TrainingError
from core.training import get_lr, warmup_factor


def _batch(**kw) -> LossBatch:
    torch.manual_seed(0)
    corpus = F.normalize(torch.randn(6, 4), dim=-1)
    targets = torch.tensor([0, 2, 4])
    queries = F.normalize(corpus[targets] + 0.3 * torch.randn(3, 4), dim=-1)
    empty = torch.tensor([], dtype=torch.long)
    base = dict(queries=queries, targets=targets, corpus=corpus, excluded=[empty] * 3, temperature=0.05)
    return LossBatch(**{**base, **kw})


def test_every_loss_name_is_in_the_registry_and_nothing_else():
    assert set(LOSSES) == set(Loss)
    assert all(callable(fn) for fn in LOSSES.values())
    assert NEEDS_BATCH <= set(Loss)
    # the config accepts exactly the registered names
    for name in Loss:
        TrainConfig(loss=str(name)).validate()
    with pytest.raises(TrainingError, match="loss must be one of"):
        TrainConfig(loss="triplet").validate()


def test_every_train_config_field_has_its_own_help():
    for f in fields(TrainConfig):
        assert isinstance(f.metadata.get("help"), str) and len(f.metadata["help"]) > 10, f.name
    assert FIELD_HELP == {f.name: f.metadata["help"] for f in fields(TrainConfig)}


def test_cli_train_options_show_the_config_help(capsys, monkeypatch):
    from core.cli import build_parser

    monkeypatch.setenv("COLUMNS", "2000")  # no line wrapping inside a help line

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in ("epochs", "false_negative_threshold", "temperature"):
        assert " ".join(FIELD_HELP[name].split()) in out, name


def test_corpus_softmax_is_cross_entropy_over_every_chunk():
    b = _batch()
    expected = F.cross_entropy(b.queries @ b.corpus.T / 0.05, b.targets)
    assert torch.allclose(corpus_softmax(b), expected)


def test_corpus_softmax_never_uses_excluded_chunks_as_negatives():
    b = _batch()
    # question 0's near-duplicate (row 1) scores as high as its own chunk: masked, it costs nothing
    corpus = b.corpus.clone()
    corpus[1] = corpus[0]
    masked = _batch(
        corpus=corpus,
        excluded=[torch.tensor([1]), torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)],
    )
    unmasked = _batch(corpus=corpus)
    assert corpus_softmax(masked) < corpus_softmax(unmasked)
    logits = masked.queries @ corpus.T / 0.05
    logits[0, 1] = float("-inf")
    assert torch.allclose(corpus_softmax(masked), F.cross_entropy(logits, masked.targets))


def test_in_batch_scores_the_batch_positives_and_masks_own_chunk_hard_negatives():
    b = _batch()
    expected = F.cross_entropy(b.queries @ b.corpus[b.targets].T / 0.05, torch.arange(3))
    assert torch.allclose(in_batch(b), expected)
    # a hard negative that is the question's own chunk is not a negative
    hard = torch.tensor([[0], [3], [5]])
    with_hard = _batch(hard=hard)
    cand = torch.cat([b.targets, hard.flatten()])
    logits = b.queries @ b.corpus[cand].T / 0.05
    logits[0, 3] = float("-inf")  # candidate 3 is row 0 = question 0's own chunk
    assert torch.allclose(in_batch(with_hard), F.cross_entropy(logits, torch.arange(3)))


def test_corpus_softmax_masks_the_same_chunks_from_a_mask_as_from_the_lists():
    excluded = [torch.tensor([1, 5]), torch.tensor([], dtype=torch.long), torch.tensor([0])]
    mask = torch.zeros((3, 6), dtype=torch.bool)
    mask[0, [1, 5]] = True
    mask[2, 0] = True
    q = _batch().queries.clone().requires_grad_(True)
    q2 = q.detach().clone().requires_grad_(True)
    a = corpus_softmax(_batch(queries=q, excluded=excluded))
    b = corpus_softmax(_batch(queries=q2, excluded=excluded, excluded_mask=mask))
    a.backward()
    b.backward()
    assert torch.equal(a, b) and torch.equal(q.grad, q2.grad)


def test_corpus_softmax_with_hard_negatives_ranks_each_question_among_its_own_mined_chunks():
    b = _batch()
    hard = torch.tensor([[3, 5], [5, 1], [3, 4]])  # question 2's second slot is spare (its own chunk, row 4)
    restricted = corpus_softmax(_batch(hard=hard))
    rows = torch.cat([b.targets[:, None], hard], dim=1)
    logits = torch.einsum("bd,bhd->bh", b.queries, b.corpus[rows]) / 0.05
    logits[2, 2] = float("-inf")  # a spare slot repeats the positive: no negative
    assert torch.allclose(restricted, F.cross_entropy(logits, torch.zeros(3, dtype=torch.long)))
    assert not torch.allclose(restricted, corpus_softmax(b))  # not the whole corpus


def test_losses_have_gradients():
    for fn in LOSSES.values():
        q = _batch().queries.clone().requires_grad_(True)
        fn(_batch(queries=q)).backward()
        assert q.grad is not None and torch.isfinite(q.grad).all()


def test_warm_up_schedule_is_linear_then_constant():
    assert [round(get_lr(s, 1e-3, 4), 6) for s in range(6)] == [0.00025, 0.0005, 0.00075, 0.001, 0.001, 0.001]
    assert get_lr(0, 1e-3, 0) == 1e-3
    assert warmup_factor(10, 4) == 1.0


def test_sampled_softmax_over_every_row_is_the_corpus_softmax():
    b = _batch()
    full = corpus_softmax(b)
    every = _batch(candidates=torch.arange(6))
    assert torch.allclose(corpus_softmax(every), full)
    # a subset scores only those rows plus the batch's positives: the targets stay the right columns
    some = _batch(candidates=torch.tensor([1, 5]))
    cand = torch.tensor([0, 1, 2, 4, 5])
    expected = F.cross_entropy(some.queries @ some.corpus[cand].T / 0.05, torch.tensor([0, 2, 3]))
    assert torch.allclose(corpus_softmax(some), expected)
