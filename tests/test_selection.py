"""Cross-validated model selection (core.selection + train(selection="cv")), the false-negative
guard, and hard negatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import selection as sel
from core.datasets import QADataset
from core.evaluation import embed_dataset
from core.training import TrainConfig, _build_problem, _loss, train
from tests.test_training import DIM, TableEmbedder, synthetic


def _cfg(**kw) -> TrainConfig:
    base = dict(adapter="linear", epochs=5, batch_size=16, lr=0.05, warmup_ratio=0.0, device="cpu", cv_folds=3)
    base.update(kw)
    return TrainConfig(**base)


def no_signal(n_chunks: int = 40, per_chunk: int = 2, seed: int = 0):
    """Questions whose vectors are unrelated to their chunk's: nothing to learn that generalises."""
    rng = np.random.default_rng(seed)
    ds, emb = synthetic(n_chunks, per_chunk, rotate=False, seed=seed)
    for text in list(emb.vectors):
        if text.startswith("question"):
            v = rng.normal(size=DIM)
            emb.vectors[text] = v / np.linalg.norm(v)
    return ds, emb


# ------------------------------------------------------------------------------------------------
# folds
# ------------------------------------------------------------------------------------------------
def test_question_folds_keep_each_chunks_other_questions_in_training():
    groups = [c for c in range(30) for _ in range(3)]
    folds = sel.make_folds(groups, 3, "questions", seed=1)
    assert sorted(i for f in folds for i in f) == list(range(90))
    for f in folds:  # no two questions of one chunk in the same held-out fold
        chunks = [groups[i] for i in f]
        assert len(chunks) == len(set(chunks))


def test_chunk_folds_hold_out_whole_chunks():
    groups = [c for c in range(30) for _ in range(2)]
    folds = sel.make_folds(groups, 5, "chunks", seed=0)
    assert sorted(i for f in folds for i in f) == list(range(60))
    owner = {}
    for fi, f in enumerate(folds):
        for i in f:
            assert owner.setdefault(groups[i], fi) == fi  # every question of a chunk in one fold


def test_block_folds_are_contiguous_runs_of_chunks_in_corpus_order():
    groups = [c for c in range(37) for _ in range(2)]  # corpus positions, two questions each
    folds = sel.make_folds(groups, 5, "chunks", seed=3, blocks=True)
    assert len(folds) == 5 and sorted(i for f in folds for i in f) == list(range(74))
    runs = []
    for f in folds:
        chunks = sorted({groups[i] for i in f})
        assert chunks == list(range(chunks[0], chunks[-1] + 1))  # no gap: one contiguous block
        runs.append((chunks[0], chunks[-1]))
    assert sorted(runs) == runs and all(a[1] < b[0] for a, b in zip(runs, runs[1:]))  # blocks in order
    assert max(map(len, folds)) - min(map(len, folds)) <= 2  # balanced by question count
    # the seed does not matter: the order is the corpus's
    assert folds == sel.make_folds(groups, 5, "chunks", seed=9, blocks=True)


def test_block_folds_keep_whole_documents_when_there_are_enough():
    groups = list(range(60))
    docs = [f"d{c // 6}" for c in groups]  # ten documents of six chunks
    folds = sel.make_folds(groups, 5, "chunks", seed=0, blocks=True, units=docs)
    for f in folds:
        held = {docs[i] for i in f}
        assert all(sum(docs[i] == d for i in f) == 6 for d in held)  # every document wholly in one fold
    # fewer documents than folds, or one document holding most questions: contiguous chunk blocks
    one = sel.make_folds(groups, 5, "chunks", seed=0, blocks=True, units=["d0"] * 60)
    assert len(one) == 5


def test_design_follows_the_evaluation_set():
    train = {"a", "b", "c", "d"}
    assert sel.choose_design(train, {"a", "b", "x"})[0] == "questions"
    assert sel.choose_design(train, {"x", "y", "a"})[0] == "chunks"
    assert sel.choose_design(train, None)[0] == "chunks"
    # measured by text (another chunking, or boilerplate shared by two filings): the reason says text, not chunks
    design, why = sel.choose_design(train, {"x", "y"}, shared=0.04)
    assert design == "chunks" and why.startswith("4% of the text the evaluation questions ask about is in the chunks")


def test_choose_rule_trains_only_on_positive_gain_and_prefers_fewer_epochs_on_ties():
    (lr, ep), gain, _, go = sel.choose({(1e-4, 1): (-0.01, 0.01), (1e-4, 2): (-0.002, 0.01)})
    assert not go and ep == 2
    (lr, ep), gain, _, go = sel.choose({(1e-4, 1): (0.02, 0.01), (1e-4, 3): (0.02, 0.01), (1e-3, 2): (0.01, 0.01)})
    assert go and (lr, ep) == (1e-4, 1) and gain == 0.02


def test_one_standard_error_rules_move_within_the_noise_band_and_never_to_a_useless_candidate():
    gains = {
        (1e-4, 1, 1.0): (0.010, 0.004),
        (1e-4, 2, 1.0): (0.012, 0.004),
        (1e-4, 3, 1.0): (0.009, 0.004),
        (1e-4, 4, 1.0): (0.002, 0.004),
        (1e-4, 5, 1.0): (-0.001, 0.004),
    }
    assert sel.choose(gains)[0][1] == 2
    assert sel.choose(gains, "one_se_fewer")[0][1] == 1
    assert sel.choose(gains, "one_se_more")[0][1] == 3
    wide = {key: (g, 0.05) for key, (g, _) in gains.items()}  # a band reaching below zero
    key, gain, _, go = sel.choose(wide, "one_se_more")
    assert go and key[1] == 4 and gain > 0  # the most epochs that still help, not epoch 5
    with pytest.raises(ValueError):
        sel.choose(gains, "bogus")


def test_auto_rule_takes_more_epochs_only_when_validating_on_new_questions_about_trained_chunks():
    assert sel.resolve_rule("auto", "questions") == "one_se_more"
    assert sel.resolve_rule("auto", "chunks") == "best"
    for rule in ("best", "one_se_fewer", "one_se_more"):
        assert sel.resolve_rule(rule, "questions") == sel.resolve_rule(rule, "chunks") == rule
    with pytest.raises(ValueError):
        sel.resolve_rule("bogus", "chunks")
    with pytest.raises(ValueError):
        sel.choose({(1e-4, 1, 1.0): (0.01, 0.001)}, "auto")  # resolved before choosing, never silently "best"

    ds, emb = synthetic()
    chunks = {ds.relevant_docs[q][0] for q in ds.queries}
    same = train(ds, emb, _cfg(warmup_ratio=0.2), target_chunks=chunks).cv  # evaluating on the training chunks
    new = train(ds, emb, _cfg()).cv  # no evaluation set named: new documents
    assert same.design == "questions" and "the most epochs" in same.rule and "one_se_more" in same.rule
    assert new.design == "chunks" and "the most epochs" not in new.rule and "best for the chunks" in new.rule
    # on questions the grid runs to twice the epochs, and its first part is trained exactly as without it
    epochs = _cfg().epochs
    (curve,) = same.curves.values()
    assert len(curve) == 2 * epochs + 1 and len(next(iter(new.curves.values()))) == epochs + 1
    plain = train(ds, emb, _cfg(cv_rule="one_se_more", warmup_ratio=0.2), target_chunks=chunks).cv
    (short,) = plain.curves.values()
    assert len(short) == epochs + 1
    assert [p["gain"] for p in curve[: epochs + 1]] == pytest.approx([p["gain"] for p in short], abs=1e-9)


def test_shrinkage_alpha_zero_is_the_identity_and_one_the_trained_adapter():
    from core.training import _interpolate

    ds, emb = synthetic()
    trained = train(ds, emb, _cfg(selection="none")).adapter
    init = {"linear.weight": torch.eye(DIM)}
    assert trained.state_dict().keys() == init.keys()
    x = torch.randn(4, DIM)
    zero = _interpolate(init, trained.state_dict(), 0.0)
    assert torch.equal(zero["linear.weight"], torch.eye(DIM))
    half = _interpolate(init, trained.state_dict(), 0.5)
    w = trained.state_dict()["linear.weight"]
    assert torch.allclose(half["linear.weight"], (torch.eye(DIM) + w) / 2)
    assert torch.allclose(x @ _interpolate(init, trained.state_dict(), 1.0)["linear.weight"].T, trained(x))


def test_shrinkage_is_chosen_out_of_fold_and_applied_to_the_refit():
    ds, emb = synthetic()
    grid = [0.25, 0.5, 0.75]
    result = train(ds, emb, _cfg(shrinkage_grid=grid))
    cv = result.cv
    assert cv.train and cv.alpha in grid + [1.0] and set(cv.shrinkage) == {"0.25", "0.5", "0.75", "1"}
    assert cv.gain == max(cv.shrinkage.values())  # alpha chosen on the out-of-fold gain
    plain = train(ds, emb, _cfg(epochs=cv.epochs, selection="none")).adapter.state_dict()["linear.weight"]
    want = torch.eye(DIM) + cv.alpha * (plain - torch.eye(DIM))
    assert torch.allclose(result.adapter.state_dict()["linear.weight"], want, atol=1e-6)


def test_a_shrunk_choice_records_its_own_out_of_fold_point_and_the_chart_stars_it():
    """Weak signal and a full step that overshoots: the alpha-1 curve at the chosen epoch sits far below the
    identity while the shrunk copy gains. The star marks the shrunk copy's own estimate, not the curve's point."""
    from core.reports import cv_figure
    from tests.test_training import synthetic as noisy

    ds, emb = noisy(rotate=False, noise=0.6, seed=1)
    history: list[dict] = []
    cv = train(ds, emb, _cfg(shrinkage_grid=[0.25, 0.5, 0.75]), callback=history.append).cv
    assert cv.train and cv.alpha < 1.0 and cv.gain > 0
    curve = cv.curves[f"{cv.lr:g}"]
    own = cv.shrunk_point
    assert own["gain"] == pytest.approx(cv.gain) and own["mrr@5 mean"] > curve[cv.epochs]["mrr@5 mean"]
    assert curve[cv.epochs]["gain"] < 0  # the alpha-1 point the star used to sit on lost out of fold
    star = [t for t in cv_figure(history).data if t.marker.symbol == "star"]
    assert list(star[0].y) == [pytest.approx(own["mrr@5 mean"])] and list(star[0].x) == [cv.epochs]


@pytest.mark.parametrize(
    "kw", [dict(shrinkage_grid=[0.25, 0.5, 0.75]), dict(cv_fold_order="blocks"), dict(cv_rule="one_se_more")]
)
def test_each_selection_option_keeps_the_identity_on_no_signal_data(kw):
    """Each option on top of the earlier rule (shuffled chunk folds, no shrinkage). On pure noise the
    out-of-fold gain of every candidate is zero plus noise, so this fixture's seed 0 is a check of the
    wiring, not a rate; the rate is in bench/README.md."""
    ds, emb = no_signal()
    result = train(ds, emb, _cfg(**{"cv_fold_order": "shuffled", "shrinkage_grid": [], **kw}))
    assert not result.cv.train and result.cv.gain <= 0
    assert torch.allclose(result.adapter.linear.weight, torch.eye(DIM))
    assert result.cv.fold_order == ("blocks" if "cv_fold_order" in kw else "shuffled")


def test_the_default_keeps_the_identity_when_training_cannot_help():
    """Questions that are copies of their chunk: the base model already ranks every one first, so no
    candidate (epochs x alpha) can gain out of fold and the default keeps the identity exactly."""
    ds, emb = synthetic(rotate=False)
    for q, text in ds.queries.items():
        emb.vectors[text] = emb.vectors[ds.corpus[ds.relevant_docs[q][0]]]
    cfg = _cfg(lr=0.5)
    assert cfg.shrinkage_grid and cfg.cv_fold_order == "blocks"  # the defaults
    result = train(ds, emb, cfg)
    assert not result.cv.train and result.cv.gain <= 0
    assert torch.equal(result.adapter.linear.weight, torch.eye(DIM))


# ------------------------------------------------------------------------------------------------
# the rule end to end
# ------------------------------------------------------------------------------------------------
def test_cv_keeps_the_identity_when_there_is_no_signal(tmp_path):
    ds, emb = no_signal()
    result = train(ds, emb, _cfg(cv_fold_order="shuffled", shrinkage_grid=[]), out_dir=tmp_path / "out")
    assert result.cv is not None and not result.cv.train and result.cv.gain <= 0
    assert result.best_epoch == 0
    eye = torch.eye(DIM)
    assert torch.allclose(result.adapter.linear.weight, eye)  # the saved adapter changes nothing
    assert "identity" in result.cv.summary_line()


def test_cv_trains_and_refits_on_everything_when_there_is_signal():
    ds, emb = synthetic()
    events = []
    result = train(ds, emb, _cfg(), callback=events.append)
    cv = result.cv
    assert cv.train and cv.gain > 0.05 and cv.epochs >= 1
    assert result.n_train_queries == len(ds.queries)  # the refit uses every question
    assert result.best_epoch == cv.epochs
    curve = cv.curves[f"{cv.lr:g}"]
    assert [p["epoch"] for p in curve] == list(range(0, 6))
    assert curve[0]["gain"] == 0 and all("hit@5 std" in p for p in curve)  # mean and spread per epoch
    assert any(e["type"] == "selection" for e in events) and sum(e["type"] == "cv" for e in events) == 6


def test_averaged_refits_are_the_mean_of_refits_in_other_batch_orders():
    import torch

    from core.evaluation import embed_dataset
    from core.training import _average_refits, _build_problem

    ds, emb = synthetic()
    one = train(ds, emb, _cfg())
    avg = train(ds, emb, _cfg(average_refits=3))
    assert any("averaged over 3 refits" in e.get("message", "") for e in avg.history)
    w1, w3 = one.adapter.state_dict()["linear.weight"], avg.adapter.state_dict()["linear.weight"]
    assert not torch.allclose(w1, w3)  # the other batch orders moved the weights elsewhere
    # the average of the same refit with itself is that refit
    cfg = _cfg(average_refits=1)
    prob = _build_problem(embed_dataset(ds, emb), ds, list(ds.queries), cfg, torch.device("cpu"))
    same = _average_refits(one.adapter, prob, list(range(len(ds.queries))), cfg, 0.05, 2, DIM, None, False)
    assert torch.equal(same["linear.weight"], w1)


def test_cv_chooses_the_learning_rate_from_the_grid():
    ds, emb = synthetic()
    result = train(ds, emb, _cfg(lr_grid=[1e-6, 0.05]))
    assert result.cv.lr == 0.05 and set(result.cv.curves) == {"1e-06", "0.05"}


def test_auto_design_uses_the_target_chunks():
    ds, emb = synthetic(n_chunks=30)
    r1 = train(ds, emb, _cfg(epochs=1), target_chunks=set(list(ds.corpus)[:10]))
    r2 = train(ds, emb, _cfg(epochs=1), target_chunks={"elsewhere"})
    assert r1.cv.design == "questions" and r2.cv.design == "chunks"
    # the training chunks' text under other ids (an evaluation set chunked apart): read by text, as Auto's
    # recipe reads it (core.distill.eval_overlap), new questions on the same chunks
    renamed = {f"re-{c}": t for c, t in list(ds.corpus.items())[:10]}
    r3 = train(ds, emb, _cfg(epochs=1), target_chunks=renamed)
    assert r3.cv.design == "questions" and "100% of the text the evaluation questions ask about" in r3.cv.design_reason
    assert train(ds, emb, _cfg(epochs=1), target_chunks=set(renamed)).cv.design == "chunks"  # ids alone: new


def test_the_recorded_steps_of_a_cross_validated_run_are_its_refit_no_longer_than_a_plain_run():
    """The run's history (the live loss chart) records the refit's steps only, at most the plain run's
    epochs on the chunks design; the folds' work is bounded by construction and timed in
    bench/quality.py --cv-cost (not here: no timed tests)."""
    ds, emb = synthetic()
    steps = []
    train(ds, emb, _cfg(), callback=lambda e: steps.append(e) if e["type"] == "step" else None)
    refit = len(steps)
    plain = []
    train(ds, emb, _cfg(selection="none"), callback=lambda e: plain.append(e) if e["type"] == "step" else None)
    # the refit's steps are recorded; the folds' are not, but they are bounded by construction
    assert refit <= len(plain)


def _same_selection(a, b) -> None:
    """Two cross-validations chose the same and estimated the same (to float rounding)."""
    assert (a.cv.epochs, a.cv.alpha, a.cv.train, a.cv.lr) == (b.cv.epochs, b.cv.alpha, b.cv.train, b.cv.lr)
    assert a.cv.gain == pytest.approx(b.cv.gain, abs=1e-9) and a.cv.shrinkage == pytest.approx(b.cv.shrinkage)
    assert a.cv.shrunk_point == pytest.approx(b.cv.shrunk_point, abs=1e-9)
    if a.cv.train and a.cv.alpha != 1.0:  # a shrunk choice's own point: the estimate that chose it, with its metrics
        assert a.cv.shrunk_point["gain"] == pytest.approx(a.cv.gain) and "mrr@5 mean" in a.cv.shrunk_point
    else:
        assert a.cv.shrunk_point == {}
    for lr, curve in a.cv.curves.items():
        assert [p["gain"] for p in curve] == pytest.approx([p["gain"] for p in b.cv.curves[lr]], abs=1e-9)
    for k, v in a.adapter.state_dict().items():
        assert torch.allclose(v, b.adapter.state_dict()[k], atol=1e-6)


def test_a_linear_adapter_s_shrunk_outputs_are_the_shrunk_weights_outputs():
    from core import adapters as adapters_mod
    from core.training import _interpolate

    lin = adapters_mod.build_adapter("linear", DIM, bias=True)
    init = {k: v.clone() for k, v in lin.state_dict().items()}
    with torch.no_grad():
        lin.linear.weight.add_(0.3 * torch.randn(DIM, DIM))
        lin.linear.bias.add_(0.1 * torch.randn(DIM))
    x = torch.randn(6, DIM)
    shrunk = adapters_mod.build_adapter("linear", DIM, bias=True)
    shrunk.load_state_dict(_interpolate(init, lin.state_dict(), 0.25))
    with torch.no_grad():
        assert torch.allclose(shrunk(x), x + 0.25 * (lin(x) - x), atol=1e-6)
    assert adapters_mod.affine_in_weights(lin)
    assert not adapters_mod.affine_in_weights(adapters_mod.build_adapter("two-layer", DIM))


@pytest.mark.parametrize("scorer", ["fixed corpus", "rank_embeddings (a corpus too large to copy)"])
def test_cross_validation_scores_a_linear_adapter_s_shrunk_copies_from_its_outputs(monkeypatch, scorer):
    """The shortcut (two score matrices, or two outputs, instead of loading and running each shrunk copy)
    chooses and estimates exactly what loading the shrunk weights does."""
    from core import adapters as adapters_mod
    from core.evaluation import FixedCorpusScorer

    if scorer != "fixed corpus":
        monkeypatch.setattr(FixedCorpusScorer, "if_fits", classmethod(lambda cls, *a, **kw: None))
    ds, emb = synthetic()
    fast = train(ds, emb, _cfg())
    monkeypatch.setattr(adapters_mod, "affine_in_weights", lambda adapter: False)
    _same_selection(fast, train(ds, emb, _cfg()))


@pytest.mark.parametrize("adapter", ["linear", "two-layer", "low-rank"])
def test_folds_side_by_side_choose_what_folds_one_at_a_time_choose(monkeypatch, adapter):
    """Each fold's initial weights and random draws (here sampled negatives) are seeded per fold, so
    scheduling the folds in threads changes nothing but the wall time."""
    from core.training import CV_WORKERS_ENV

    ds, emb = synthetic(n_chunks=40)
    cfg = _cfg(adapter=adapter, sample_negatives_above=20, lr=0.01)
    monkeypatch.setenv(CV_WORKERS_ENV, "1")
    one = train(ds, emb, cfg)
    monkeypatch.setenv(CV_WORKERS_ENV, "3")
    side = train(ds, emb, cfg)
    assert one.summary()["negatives"].startswith("sampled")
    assert (one.cv.side_by_side, side.cv.side_by_side) == (1, 3)  # the run record says how they ran
    _same_selection(one, side)


def test_fold_workers_follow_torch_threads_and_stay_one_where_scheduling_could_matter(monkeypatch):
    from core.training import CV_WORKERS_ENV, SIDE_BY_SIDE_MAX_CORPUS_BYTES, fold_workers

    monkeypatch.delenv(CV_WORKERS_ENV, raising=False)
    cpu = torch.device("cpu")
    assert fold_workers(_cfg(), cpu, 5) == min(5, torch.get_num_threads())
    assert fold_workers(_cfg(), cpu, 1) == 1
    assert fold_workers(_cfg(), torch.device("cuda"), 5) == 1  # one device runs one fold's kernels at a time
    assert fold_workers(_cfg(adapter="mypkg.adapters:Dropout"), cpu, 5) == 1  # custom code may draw numbers
    assert fold_workers(_cfg(), cpu, 5, corpus_bytes=SIDE_BY_SIDE_MAX_CORPUS_BYTES + 1) == 1  # memory
    monkeypatch.setenv(CV_WORKERS_ENV, "4")
    assert fold_workers(_cfg(), cpu, 5) == 4 and fold_workers(_cfg(), cpu, 3) == 3
    monkeypatch.setenv(CV_WORKERS_ENV, "1")
    assert fold_workers(_cfg(), cpu, 5) == 1


def test_folds_side_by_side_report_progress_from_the_calling_thread_and_restore_torch_threads(monkeypatch):
    """Progress may write to a database connection that belongs to the calling thread."""
    import threading

    from core.training import CV_WORKERS_ENV

    monkeypatch.setenv(CV_WORKERS_ENV, "3")
    ds, emb = synthetic()
    threads = torch.get_num_threads()
    calls = []
    train(ds, emb, _cfg(), progress=lambda done, total, msg: calls.append((threading.get_ident(), done, total, msg)))
    cv = [c for c in calls if c[3].startswith("cross-validation")]
    assert {c[0] for c in calls} == {threading.get_ident()}
    # 3 folds x 5 epochs, carried on one bar for the whole run (embedding, cross-validation, the final fit) that
    # never goes back: the cross-validation fills 25% to 90% of it
    assert len(cv) == 15 and {c[2] for c in cv} == {1000} and cv[-1][1] == 900
    fracs = [c[1] / c[2] for c in calls]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    assert torch.get_num_threads() == threads


def test_folds_side_by_side_stop_on_cancel_and_ctrl_c_and_pass_on_a_fold_s_error(monkeypatch):
    import threading

    from core import training
    from core.training import CV_WORKERS_ENV

    monkeypatch.setenv(CV_WORKERS_ENV, "3")
    ds, emb = synthetic()
    cancel = threading.Event()
    ticks = []

    def progress(done, total, msg):
        ticks.append(msg)
        if msg.startswith("cross-validation"):
            cancel.set()

    result = train(ds, emb, _cfg(epochs=200), progress=progress, cancel=cancel)
    assert result.cancelled and result.cv is None
    assert sum(m.startswith("cross-validation") for m in ticks) < 3 * 200  # stopped long before the end

    def interrupt(done, total, msg):  # Ctrl-C in the CLI lands in the calling thread, here in progress
        if msg.startswith("cross-validation"):
            raise KeyboardInterrupt

    threads = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        train(ds, emb, _cfg(epochs=100_000), progress=interrupt)  # would train for minutes if the folds went on
    assert not [t for t in threading.enumerate() if t.name.startswith("adapterlab-fold")]
    assert torch.get_num_threads() == threads

    real_fit = training._fit

    def failing_fit(prob, rows, config, lr, epochs, seed, *a, **kw):
        if seed == config.seed + 1:  # the second fold
            raise RuntimeError("fold 2 ran out of memory")
        return real_fit(prob, rows, config, lr, epochs, seed, *a, **kw)

    monkeypatch.setattr(training, "_fit", failing_fit)
    with pytest.raises(RuntimeError, match="fold 2 ran out of memory"):
        train(ds, emb, _cfg())


# ------------------------------------------------------------------------------------------------
# negatives
# ------------------------------------------------------------------------------------------------
def test_large_corpora_sample_negatives_and_the_run_says_so(monkeypatch):
    import core.training as tr

    monkeypatch.setattr(tr, "SAMPLED_RANDOM", 5)
    monkeypatch.setattr(tr, "SAMPLED_HARD", 2)
    ds, emb = synthetic(n_chunks=20)
    full = train(ds, emb, _cfg(selection="none", epochs=4))
    assert full.summary()["negatives"] == "every chunk (20)"
    seen = []
    orig = tr._loss

    def spy(adapter, prob, batch, config, *rest):
        seen.append(prob.sampled)
        return orig(adapter, prob, batch, config, *rest)

    monkeypatch.setattr(tr, "_loss", spy)
    res = train(ds, emb, _cfg(selection="none", epochs=4, sample_negatives_above=10))
    assert seen and all(seen)
    note = res.summary()["negatives"]
    assert note.startswith("sampled: in-batch + 2 mined hard negatives per question + 5 random chunks per step")
    assert any(e.get("message", "").startswith("negatives: sampled") for e in res.history)
    # sampled training still learns the map
    from core.embedders import AdapterEmbedder
    from core.evaluation import compare

    cmp = compare(ds, {"base": emb, "sampled": AdapterEmbedder(emb, res.adapter)}, baseline="base")
    rows = {r["system"]: r for r in cmp.rows()}
    assert rows["sampled"]["mrr@5"] > rows["base"]["mrr@5"]


def test_mined_hard_negatives_never_include_the_positive_or_excluded_rows():
    import torch

    from core.training import _mine_hard

    torch.manual_seed(0)
    corpus = torch.nn.functional.normalize(torch.randn(30, 8), dim=-1)
    qv = corpus[[0, 1, 2]] + 0.01
    excluded = [torch.tensor([3, 4]), torch.tensor([], dtype=torch.long), torch.tensor([5])]
    hard = _mine_hard(qv, corpus, [0, 1, 2], excluded, k=10, block=2)
    assert hard.shape == (3, 10)
    assert 0 not in hard[0].tolist() and not {3, 4} & set(hard[0].tolist())
    assert 1 not in hard[1].tolist() and 2 not in hard[2].tolist() and 5 not in hard[2].tolist()


def test_mined_hard_negatives_fill_spare_slots_with_the_positive_when_too_few_chunks_qualify():
    import torch

    from core.training import _mine_hard

    corpus = torch.nn.functional.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    excluded = [torch.tensor([1, 2]), torch.tensor([], dtype=torch.long)]
    hard = _mine_hard(corpus[[0, 1]], corpus, [0, 1], excluded, k=4)
    assert sorted(hard[0].tolist()) == [0, 0, 3, 4]  # rows 3 and 4 are its only negatives
    assert sorted(hard[1].tolist()) == [0, 2, 3, 4]


def _dup_dataset():
    """Chunk n1 is a near-copy of n0: for a question about n0, n1 is a false negative."""
    v0 = np.eye(DIM)[0]
    v1 = v0 + 0.01 * np.eye(DIM)[1]
    v2 = np.eye(DIM)[2]
    vectors = {"c0": v0, "c1": v1 / np.linalg.norm(v1), "c2": v2, "q0": v0 + 0.2 * np.eye(DIM)[3], "q2": v2}
    ds = QADataset({"a": "q0", "b": "q2"}, {"n0": "c0", "n1": "c1", "n2": "c2"}, {"a": ["n0"], "b": ["n2"]})
    return ds, TableEmbedder(vectors)


def test_false_negative_guard_masks_near_duplicates_of_the_positive():
    ds, emb = _dup_dataset()
    e = embed_dataset(ds, emb)
    guarded = _build_problem(e, ds, list(ds.queries), TrainConfig(device="cpu"), torch.device("cpu"))
    assert guarded.excluded[0].tolist() == [1] and guarded.excluded[1].tolist() == []
    assert guarded.excluded_mask.nonzero().tolist() == [[0, 1]]  # the same rows, as the loss's one-op mask
    open_ = _build_problem(
        e, ds, list(ds.queries), TrainConfig(device="cpu", false_negative_threshold=0), torch.device("cpu")
    )
    assert open_.excluded[0].tolist() == []
    ident = torch.nn.Identity()
    cfg = TrainConfig(device="cpu")
    # with the near-copy masked, the loss no longer pushes the question away from it
    assert float(_loss(ident, guarded, [0], cfg)) < float(_loss(ident, open_, [0], cfg)) - 0.1


def test_hard_negatives_are_mined_from_the_base_ranking_without_false_negatives():
    ds, emb = _dup_dataset()
    e = embed_dataset(ds, emb)
    prob = _build_problem(
        e, ds, list(ds.queries), TrainConfig(device="cpu", loss="in_batch", hard_negatives=1), torch.device("cpu")
    )
    # question a: n0 is the positive and n1 its near-copy, so the mined negative is n2
    assert prob.hard[0].tolist() == [2]
    assert float(_loss(torch.nn.Identity(), prob, [0, 1], TrainConfig(device="cpu", loss="in_batch"))) >= 0


def test_corpus_softmax_with_hard_negatives_trains_on_each_question_s_mined_chunks_only():
    ds, emb = _dup_dataset()
    e = embed_dataset(ds, emb)
    cfg = TrainConfig(device="cpu", hard_negatives=1)
    prob = _build_problem(e, ds, list(ds.queries), cfg, torch.device("cpu"))
    assert prob.restricted and prob.hard[0].tolist() == [2]  # n1 is n0's near-copy: never a negative
    assert prob.negatives_note() == "the base model's top 1 chunks per question (of 3)"
    full = _build_problem(e, ds, list(ds.queries), TrainConfig(device="cpu"), torch.device("cpu"))
    assert not full.restricted and full.negatives_note() == "every chunk (3)"
    res = train(*synthetic(n_chunks=30), _cfg(selection="none", epochs=2, hard_negatives=5))
    assert "top 5 chunks per question" in res.negatives


def test_every_ingested_chunk_becomes_a_negative_when_asked():
    ds, emb = synthetic(n_chunks=20)
    emb.vectors["extra text"] = np.eye(DIM)[0]
    seen = []
    orig = emb.embed_texts
    emb.embed_texts = lambda texts, progress=None: (seen.extend(texts), orig(texts))[1]
    train(
        ds,
        emb,
        _cfg(selection="none", epochs=1, unlabelled_negatives=True),
        negatives={"x1": "extra text", "n0": "chunk 0"},
    )
    assert "extra text" in seen and seen.count("chunk 0") == 1


def test_unlabelled_chunks_are_not_negatives_by_default():
    ds, emb = synthetic(n_chunks=20)
    emb.vectors["extra text"] = np.eye(DIM)[0]
    seen = []
    orig = emb.embed_texts
    emb.embed_texts = lambda texts, progress=None: (seen.extend(texts), orig(texts))[1]
    res = train(ds, emb, _cfg(selection="none", epochs=1), negatives={"x1": "extra text"})
    assert "extra text" not in seen
    assert any("training chunks only" in e.get("message", "") for e in res.history if e["type"] == "phase")


@pytest.mark.parametrize(
    "bad",
    [
        dict(selection="bogus"),
        dict(cv_folds=1),
        dict(cv_design="x"),
        dict(lr_grid=[0.0]),
        dict(shrinkage_grid=[0.0]),
        dict(shrinkage_grid=[1.5]),
        dict(cv_fold_order="x"),
        dict(cv_rule="x"),
        dict(false_negative_threshold=2.0),
        dict(hard_negatives=-1),
        dict(pseudo_queries=-1),
    ],
)
def test_invalid_selection_settings_are_refused(bad):
    from core.training import TrainingError

    with pytest.raises(TrainingError):
        _cfg(**bad).validate()


def test_a_margin_in_standard_errors_keeps_the_identity_for_a_gain_inside_the_noise():
    gains = {(3e-4, 2, 1.0): (0.010, 0.020), (3e-4, 3, 1.0): (0.004, 0.010)}
    assert sel.choose(gains)[3]  # above zero: trained under the default rule
    key, mean, se, train_it = sel.choose(gains, min_gain_se=1.0)
    assert key == (3e-4, 2, 1.0) and not train_it  # 0.010 is not above one standard error (0.020)
    assert sel.choose({(3e-4, 2, 1.0): (0.05, 0.02)}, min_gain_se=1.0)[3]


def test_the_margin_option_reaches_the_selection():
    ds, emb = no_signal()
    result = train(ds, emb, _cfg(cv_min_gain_se=1e6))  # no out-of-fold gain can clear this margin
    assert not result.cv.train
    assert torch.equal(result.adapter.linear.weight, torch.eye(DIM))


# ------------------------------------------------------------------------------------------------
# pseudo-queries over the ingested chunks (pseudo_queries)
# ------------------------------------------------------------------------------------------------
_TOPICS = [
    "riders", "drivers", "insurance", "autonomous", "bikes", "scooters", "pricing", "regulation",
    "marketplace", "lawsuits", "pandemic", "revenue", "advertising", "maps", "payments", "safety",
]  # fmt: skip


def _doc_chunk(i: int) -> str:
    a, b, c = _TOPICS[i % 16], _TOPICS[(3 * i + 1) % 16], _TOPICS[(5 * i + 2) % 16]
    return (
        f"Section {i} explains how {a} shape quarterly results for unit{i} across regions. "
        f"Management expects {b} programs and {c} costs to change materially during fiscal{i}."
    )


class WordEmbedder:
    """Any text -> the normalised sum of a fixed random vector per word, so a sentence of a chunk
    lies near its chunk; records every query text it embeds."""

    dimension = DIM
    identity = "words"

    def __init__(self):
        self.queries: list[str] = []

    def _vec(self, text: str) -> np.ndarray:
        import zlib

        v = np.zeros(DIM)
        for w in text.lower().replace(".", " ").replace("?", " ").split():
            v += np.random.default_rng(zlib.crc32(w.encode())).normal(size=DIM)
        return v / (np.linalg.norm(v) or 1.0)

    def embed_texts(self, texts, progress=None):
        return np.array([self._vec(t) for t in texts], dtype=np.float32)

    def embed_queries(self, texts, progress=None):
        self.queries.extend(texts)
        return self.embed_texts(texts)


def _pseudo_case(n_chunks: int = 24, labelled: int = 12):
    """Chunks 0..labelled-1 have two real questions each; the rest are ingested without any."""
    chunks = {f"n{i}": _doc_chunk(i) for i in range(n_chunks)}
    queries, rel = {}, {}
    for i in range(labelled):
        for j in range(2):
            queries[f"q{i}_{j}"] = f"What does section {i} say about {_TOPICS[(i + j) % 16]}?"
            rel[f"q{i}_{j}"] = [f"n{i}"]
    ds = QADataset(queries, {f"n{i}": chunks[f"n{i}"] for i in range(labelled)}, rel)
    return ds, chunks


def test_pseudo_queries_come_from_their_own_chunk_and_follow_the_real_questions():
    from core.training import _pseudo_dataset

    ds, chunks = _pseudo_case()
    full, owner = _pseudo_dataset(ds, chunks, list(ds.queries), 2, 0)
    qids = list(full.queries)
    assert qids[: len(ds.queries)] == list(ds.queries) and set(qids[len(ds.queries) :]) == set(owner)
    assert set(owner.values()) == set(chunks)  # the labelled chunks (for held-out folds) and the unlabelled ones
    for q, c in owner.items():
        words = {w.strip(".,?").lower() for w in full.queries[q].split()}
        assert words <= {w.strip(".,?").lower() for w in chunks[c].split()}, (q, full.queries[q])
        assert full.relevant_docs[q] == [c] and full.queries[q] not in ds.queries.values()
    assert set(full.corpus) == set(chunks)
    # never more unlabelled chunks than the real questions allow: 4 questions / 2 per chunk = 2
    small = ds.subset(list(ds.queries)[:4])
    _, owner = _pseudo_dataset(small, chunks, list(small.queries), 2, 0)
    assert len({c for c in owner.values() if c not in small.corpus}) == 2


def test_cross_validation_never_scores_pseudo_queries_and_trains_on_those_of_chunks_without_questions(
    monkeypatch,
):
    import core.training as training

    ds, chunks = _pseudo_case()
    n_real = len(ds.queries)
    folds_seen, fits = [], []
    real_make_folds, real_fit = sel.make_folds, training._fit

    def spy_folds(groups, *a, **kw):
        out = real_make_folds(groups, *a, **kw)
        folds_seen.append((len(groups), out))
        return out

    def spy_fit(prob, rows, *a, **kw):
        fits.append((prob, list(rows)))
        return real_fit(prob, rows, *a, **kw)

    monkeypatch.setattr(sel, "make_folds", spy_folds)
    monkeypatch.setattr(training, "_fit", spy_fit)
    emb = WordEmbedder()
    result = train(ds, emb, _cfg(pseudo_queries=2, lr=0.01), negatives=chunks)
    (n_grouped, folds) = folds_seen[0]
    assert n_grouped == n_real and sorted(i for f in folds for i in f) == list(range(n_real))
    prob = fits[0][0]
    cv_fits = fits[: len(folds)]  # the folds may train side by side: match each fold to its fit by rows
    for fold in folds:
        (rows,) = [
            r for _, r in cv_fits if sorted(x for x in r if x < n_real) == sorted(set(range(n_real)) - set(fold))
        ]
        real = [r for r in rows if r < n_real]
        labelled = {int(prob.targets[r]) for r in real}
        pseudo_targets = {int(prob.targets[r]) for r in rows if r >= n_real}
        assert pseudo_targets and not (pseudo_targets & labelled)
        held_out = {int(prob.targets[r]) for r in fold}
        assert held_out <= pseudo_targets  # a held-out chunk has pseudo-queries, as a new document would
    refit_rows = fits[-1][1]
    assert sorted(r for r in refit_rows if r < n_real) == list(range(n_real))
    assert result.n_train_queries == n_real and result.n_pseudo_queries == len(refit_rows) - n_real > 0
    assert {int(prob.targets[r]) for r in refit_rows if r >= n_real}.isdisjoint(
        {int(prob.targets[r]) for r in range(n_real)}
    )
    assert any("pseudo-queries (inverse cloze)" in e.get("message", "") for e in result.history if e["type"] == "phase")


def test_pseudo_queries_off_embed_no_pseudo_text():
    ds, chunks = _pseudo_case()
    emb = WordEmbedder()
    result = train(ds, emb, _cfg(pseudo_queries=0, lr=0.01), negatives=chunks)
    assert sorted(emb.queries) == sorted(ds.queries.values()) and result.n_pseudo_queries == 0


# ------------------------------------------------------------------------------------------------
# validation for new documents: against the held-out chunks only, when the new documents are alike
# ------------------------------------------------------------------------------------------------
def _clusters(n: int, centre: np.ndarray, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return centre + spread * rng.normal(size=(n, centre.shape[0]))


def test_neighbour_mixing_tells_the_same_kind_of_text_from_another():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(16,)), rng.normal(size=(16,))
    train_side = _clusters(120, a, 0.3, 1)
    same = _clusters(80, a, 0.3, 2)  # drawn like the training chunks
    other = _clusters(80, b, 0.3, 3)  # another kind of text: its own region
    assert sel.neighbour_mixing(train_side, same) > 0.8
    assert sel.neighbour_mixing(train_side, other) < 0.1
    # a mix of both sits between, and the statistic does not depend on the vectors' scale
    half = np.vstack([same[:40], other[:40]])
    assert 0.3 < sel.neighbour_mixing(train_side, half) < 0.8
    assert sel.neighbour_mixing(5 * train_side, 0.1 * same) == pytest.approx(sel.neighbour_mixing(train_side, same))
    # subsampled large sides stay bounded and seeded
    assert sel.neighbour_mixing(train_side, same, limit=50) == sel.neighbour_mixing(train_side, same, limit=50)
    with pytest.raises(ValueError, match="at least two target chunks"):
        sel.neighbour_mixing(train_side, same[:1])


def test_choose_validation_by_mixing():
    assert sel.choose_validation(None)[0] == "corpus"
    v, why = sel.choose_validation(0.9)
    assert v == "fold" and "same kinds of text" in why and "0.90" in why
    v, why = sel.choose_validation(0.2)
    assert v == "corpus" and "another kind of text" in why
    assert "the gain on the new ones can be smaller: measure it on the evaluation set" in why  # protocol (u)
    assert sel.choose_validation(sel.SAME_KIND_MIXING)[0] == "fold"


def _two_kinds(seed: int = 0):
    """Training chunks of one kind; an 'alike' new document drawn the same way and an 'other' one elsewhere."""
    ds, emb = synthetic(40, 2, seed=seed)
    rng = np.random.default_rng(seed + 100)
    far = rng.normal(size=DIM)
    alike, other = {}, {}
    for i in range(30):
        v = rng.normal(size=DIM)
        emb.vectors[f"alike {i}"] = v / np.linalg.norm(v)
        alike[f"a{i}"] = f"alike {i}"
        w = far + 0.2 * rng.normal(size=DIM)
        emb.vectors[f"other {i}"] = w / np.linalg.norm(w)
        other[f"o{i}"] = f"other {i}"
    return ds, emb, alike, other


def test_auto_validation_reads_the_new_documents():
    ds, emb, alike, other = _two_kinds()
    res = train(ds, emb, _cfg(), target_chunks=alike)
    assert res.cv.design == "chunks" and res.cv.validation == "fold"
    assert "the evaluation set's chunks" in res.cv.validation_reason and "same kinds" in res.cv.validation_reason
    res = train(ds, emb, _cfg(), target_chunks=set(other), negatives=other)  # ids: texts from the ingested chunks
    assert res.cv.validation == "corpus" and "another kind of text" in res.cv.validation_reason
    # no evaluation set named and no stand-in (negatives alone say nothing about where queries go): the conservative
    # estimate, as before
    res = train(ds, emb, _cfg(), negatives={**ds.corpus, **alike})
    assert res.cv.validation == "corpus" and "no evaluation set named" in res.cv.validation_reason
    assert "validation: no evaluation set named: held-out questions ranked against every chunk" in res.cv.summary_line()
    # the questions design ranks against every chunk whatever the setting
    res = train(ds, emb, _cfg(cv_validation="fold"), target_chunks=set(ds.corpus))
    assert res.cv.design == "questions" and res.cv.validation == "corpus"


def _words(i: int) -> str:
    """A chunk text of its own: 40 words that no other index shares."""
    return " ".join(f"w{i}x{j}" for j in range(40))


def test_unasked_search_chunks_stand_in_for_the_documents_users_will_search():
    from core.training import OWN_CORPUS, unasked_search_chunks

    def ids(groups):
        return {g: set(chunks) for g, chunks in groups.items()}

    doc = {f"c{i}": _words(i) for i in range(10)}
    asked = QADataset({"q1": "a?", "q2": "b?"}, {"c0": doc["c0"], "c1": doc["c1"]}, {"q1": ["c0"], "q2": ["c1"]})
    # the document the questions were made from: its chunks they do not ask about
    assert ids(unasked_search_chunks(asked, {"doc.pdf": doc})) == {"doc.pdf": {f"c{i}" for i in range(2, 10)}}
    # another document they do not cover: every chunk; the same text under other ids (imported chunked
    # apart): nothing, since the questions cover it
    other = {f"o{i}": _words(100 + i) for i in range(5)}
    same = {f"s{i}": _words(i) for i in range(2)}
    got = unasked_search_chunks(asked, {"doc.pdf": doc, "other.pdf": other, "again.pdf": same})
    assert ids(got) == {"doc.pdf": {f"c{i}" for i in range(2, 10)}, "other.pdf": set(other)}
    assert got["other.pdf"]["o3"] == other["o3"]
    # the training set's own corpus: its chunks no question asks about that no document holds (a sample's)
    sample = asked.subset(["q1"])
    assert ids(unasked_search_chunks(sample, {})) == {OWN_CORPUS: {"c1"}}
    assert ids(unasked_search_chunks(sample, {"doc.pdf": doc})) == {"doc.pdf": {f"c{i}" for i in range(1, 10)}}
    # a few leftovers (under a tenth of every chunk) stand in for nothing: a user who asked about every chunk
    # keeps the blind rule
    big = {f"c{i}": _words(i) for i in range(30)}
    most = QADataset({f"q{i}": "?" for i in range(28)}, big, {f"q{i}": [f"c{i}"] for i in range(28)})
    assert unasked_search_chunks(most, {"doc.pdf": big}) == {}  # 2 of 30
    four = unasked_search_chunks(most.subset([f"q{i}" for i in range(26)]), {"doc.pdf": big})  # 4 of 30
    assert ids(four) == {"doc.pdf": {"c26", "c27", "c28", "c29"}}
    # chunks a generator tried and found nothing to ask about are not new parts: left out (here under the floor)
    assert unasked_search_chunks(most.subset([f"q{i}" for i in range(26)]), {"doc.pdf": big}, {"c26", "c27"}) == {}
    got = unasked_search_chunks(asked, {"doc.pdf": doc, "other.pdf": other}, unaskable={"c2", "o0"})
    assert ids(got) == {"doc.pdf": {f"c{i}" for i in range(3, 10)}, "other.pdf": {f"o{i}" for i in range(1, 5)}}
    # ... and do not make a document "the questions' own": the same text under other ids still stands in for nothing
    assert "again.pdf" not in unasked_search_chunks(asked, {"doc.pdf": doc, "again.pdf": same}, unaskable={"s0"})


def test_the_stand_in_picks_the_validation_when_nothing_is_named():
    ds, emb, alike, other = _two_kinds()
    res = train(ds, emb, _cfg(), searched_chunks={"alike.pdf": alike})
    assert res.cv.design == "chunks" and res.cv.validation == "fold"
    assert "30 chunks no training question asks about (no evaluation set named" in res.cv.validation_reason
    assert "same kinds" in res.cv.validation_reason and res.cv.stand_in == 30  # recorded: Compare says so
    res = train(ds, emb, _cfg(), searched_chunks={"other.pdf": other})
    assert res.cv.design == "chunks" and res.cv.validation == "corpus" and "another kind" in res.cv.validation_reason
    # one document of another kind keeps the stricter ranking, however many same-kind chunks sit beside it
    alike_more = {**alike, **{f"b{i}": f"alike {i} again" for i in range(30)}}
    for i in range(30):
        emb.vectors[f"alike {i} again"] = emb.vectors[f"alike {i}"]
    res = train(ds, emb, _cfg(), searched_chunks={"alike.pdf": alike_more, "other.pdf": other})
    assert res.cv.validation == "corpus" and res.cv.stand_in == 90
    assert "(per document, the lowest decides: alike.pdf " in res.cv.validation_reason
    # a named evaluation set spanning documents is checked the same way (pooled, the same chunks read as alike)
    both = {**alike_more, **other}
    docs = {c: "other.pdf" if c in other else "alike.pdf" for c in both}
    assert train(ds, emb, _cfg(), target_chunks=both).cv.validation == "fold"
    res = train(ds, emb, _cfg(), target_chunks=both, target_documents=docs)
    assert res.cv.validation == "corpus" and "the evaluation set's chunks (per document" in res.cv.validation_reason
    # a named evaluation set wins over the stand-in
    res = train(ds, emb, _cfg(), target_chunks=other, searched_chunks={"alike.pdf": alike})
    assert res.cv.validation == "corpus" and "the evaluation set's chunks" in res.cv.validation_reason
    assert res.cv.stand_in == 0
    # the user's own validation setting reads nothing
    assert train(ds, emb, _cfg(cv_validation="corpus"), searched_chunks={"alike.pdf": alike}).cv.stand_in == 0


def test_fold_validation_ranks_held_out_questions_among_the_held_out_chunks_only():
    ds, emb = synthetic(40, 2, rotate=False, noise=0.9, seed=4)  # noisy questions: retrieval far from perfect
    corpus = train(ds, emb, _cfg(cv_validation="corpus", cv_folds=4, epochs=1))
    fold = train(ds, emb, _cfg(cv_validation="fold", cv_folds=4, epochs=1))
    assert fold.cv.validation == "fold"
    assert "validation: chosen by the user: held-out questions ranked against the held-out chunks only" in (
        fold.cv.summary_line()
    )
    key = f"mrr@{fold.cv.top_k} mean"
    base_corpus, base_fold = (
        corpus.cv.curves[next(iter(corpus.cv.curves))][0],
        fold.cv.curves[next(iter(fold.cv.curves))][0],
    )
    # a quarter of the distractors: the untrained model ranks the held-out chunks higher among their own fold
    assert base_fold[key] > base_corpus[key]


def test_the_cv_summary_says_its_gain_is_the_best_of_its_candidates():
    curve = [{"epoch": e} for e in range(4)]  # epoch 0 is the identity, not a candidate
    r = sel.CVResult(
        design="chunks",
        design_reason="no evaluation set named",
        folds=5,
        top_k=5,
        lr=3e-4,
        epochs=3,
        gain=0.0128,
        gain_se=0.006,
        train=True,
        rule="best",
        curves={"0.0003": curve, "0.001": curve},
        alpha=0.5,
        shrinkage={"0.25": 0.008, "0.5": 0.0128, "0.75": 0.007, "1": -0.01},
    )
    line = r.summary_line()
    assert "gain +1.28 ± 0.60 pt (mean of hit@5 and MRR@5; the best of 24 candidates on these folds" in line
    assert line.endswith("train 3 epoch(s) at lr 0.0003, shrunk toward the identity by alpha 0.5")
