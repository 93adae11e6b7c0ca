"""core.distill: a query-only adapter learns to rank like a teacher that ranks differently."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from core.distill import DistillConfig, distill_adapter, distill_queries
from tests.test_selection import WordEmbedder

CHUNKS = [
    f"Section {i} covers {topic} and {other} for the {year} fiscal year."
    for i, (topic, other, year) in enumerate(
        (t, o, y)
        for t in ("revenue", "drivers", "insurance", "riders", "regulation", "litigation")
        for o in ("costs", "growth", "risk")
        for y in ("2020", "2021")
    )
]


class RotatedTeacher(WordEmbedder):
    """Ranks as the base would after a fixed random linear map of its query vectors: the map a student
    must find. Chunk vectors are the base's, so a perfect student matches it exactly."""

    identity = "rotated-words"

    def __init__(self, strength: float = 0.8):
        super().__init__()
        rng = np.random.default_rng(7)
        dim = self.dimension
        self.m = (np.eye(dim) + strength * rng.normal(size=(dim, dim)) / np.sqrt(dim)).astype(np.float32)

    def embed_queries(self, texts, progress=None):
        v = super().embed_queries(texts) @ self.m.T
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _kl_to_teacher(adapter, base, teacher, queries, t=0.05):
    """Mean KL(teacher's softmax over every chunk || the adapter's), as the distillation measures it."""
    db = torch.tensor(base.embed_texts(CHUNKS))
    with torch.no_grad():
        s = torch.nn.functional.normalize(adapter(torch.tensor(base.embed_queries(queries))), dim=-1) @ db.T / t
        target = torch.softmax(torch.tensor(teacher.embed_queries(queries)) @ db.T / t, -1)
        return float(torch.nn.functional.kl_div(torch.log_softmax(s, -1), target, reduction="batchmean"))


def test_the_student_learns_to_rank_like_the_teacher_on_queries_it_never_saw():
    base, teacher = WordEmbedder(), RotatedTeacher()
    train_q = [f"What does section {i} say about {t}?" for i, t in enumerate(("revenue", "drivers", "risk") * 4)]
    held_out = [
        f"How did {t} change in {y}?" for t in ("costs", "growth", "insurance", "litigation") for y in ("2020", "2021")
    ]
    identity = torch.nn.Identity()
    before = _kl_to_teacher(identity, base, teacher, held_out)
    seen = len(base.queries)
    adapter, summary = distill_adapter(teacher, base, train_q, CHUNKS, DistillConfig(steps=150, lr=1e-2))
    trained_on = base.queries[seen:]
    after = _kl_to_teacher(adapter, base, teacher, held_out)
    assert after < 0.5 * before, (before, after)
    assert summary["final_loss"] < summary["first_loss"] and summary["steps_done"] == 150
    assert 0 < summary["n_pseudo_queries"] <= 2 * len(CHUNKS) and summary["n_chunks"] == len(CHUNKS)
    assert train_q[0] in trained_on and not set(held_out) & set(trained_on)  # never trained on the held-out


def test_a_teacher_that_ranks_as_the_base_leaves_the_identity():
    base = WordEmbedder()
    adapter, summary = distill_adapter(base, base, ["What about revenue?"], CHUNKS, DistillConfig(steps=20))
    x = torch.tensor(base.embed_queries(["How did costs change?"]))
    with torch.no_grad():
        y = adapter(x)
    # nothing to learn: still the identity, up to Adam's lr-sized steps on float-noise gradients (their signs,
    # and so the last digits, vary with the CPU: an exact 1e-3 bound failed on another machine)
    assert float(torch.nn.functional.cosine_similarity(y, x)) > 0.9999
    assert float((y - x).abs().max()) < 5e-3, (y - x).abs().max()
    assert _kl_to_teacher(adapter, base, base, ["How did costs change?", "What about insurance?"]) < 1e-3
    assert summary["final_loss"] < 1e-4


def test_pseudo_queries_come_from_each_chunks_own_text_and_can_be_turned_off():
    qs = distill_queries(["real?"], CHUNKS[:3], per_chunk=2, seed=0)
    assert qs[0] == "real?" and 1 + 3 <= len(qs) <= 1 + 2 * 3  # at least one per chunk, at most two
    assert distill_queries(["real?"], CHUNKS[:3], per_chunk=0) == ["real?"]
    assert qs == distill_queries(["real?"], CHUNKS[:3], per_chunk=2, seed=0)  # seeded
    # a large corpus: pseudo-queries from a sample of chunks, so a step's cost stays bounded
    capped = distill_queries(["real?"], CHUNKS, per_chunk=1, max_chunks=5)
    assert len(capped) == 1 + 5 and len(distill_queries([], CHUNKS, per_chunk=1)) == len(CHUNKS)


def test_a_large_corpus_ranks_a_seeded_sample_that_the_teacher_embeds_alone():
    class Recording(RotatedTeacher):
        def __init__(self):
            super().__init__()
            self.texts: list[str] = []

        def embed_texts(self, texts, progress=None):
            self.texts.extend(texts)
            return super().embed_texts(texts)

    base, teacher = WordEmbedder(), Recording()
    cfg = DistillConfig(steps=3, max_ranked_chunks=8, pseudo_queries=1)
    _, summary = distill_adapter(teacher, base, ["q?"], CHUNKS, cfg)
    assert summary["n_chunks"] == 8 and summary["n_chunks_distinct"] == len(CHUNKS)
    assert len(set(teacher.texts) & set(CHUNKS)) == 8  # of the chunks, the teacher embedded the sample only
    _, again = distill_adapter(RotatedTeacher(), WordEmbedder(), ["q?"], CHUNKS, cfg)
    assert again["n_pseudo_queries"] == summary["n_pseudo_queries"]  # the same seed, the same sample
    with pytest.raises(ValueError, match="max_ranked_chunks"):
        DistillConfig(max_ranked_chunks=1).validate()


def test_cancel_stops_after_the_current_step_and_bad_settings_are_refused():
    base, teacher = WordEmbedder(), RotatedTeacher()
    stop = threading.Event()
    calls = []

    def progress(done, total, message):
        calls.append(done)
        if done >= 10:
            stop.set()

    _, summary = distill_adapter(
        teacher, base, ["q?"], CHUNKS, DistillConfig(steps=500), progress=progress, cancel=stop
    )
    assert summary["cancelled"] and summary["steps_done"] == 10 and calls[0] == 0
    with pytest.raises(ValueError, match="two chunks"):
        distill_adapter(teacher, base, ["q?"], CHUNKS[:1])
    with pytest.raises(ValueError, match="positive"):
        distill_adapter(teacher, base, ["q?"], CHUNKS, DistillConfig(steps=0))
    with pytest.raises(ValueError, match="queries"):
        distill_adapter(teacher, base, [], CHUNKS, DistillConfig(pseudo_queries=0))


def test_the_cli_help_states_distill_config_defaults():
    """``distill``'s options leave their defaults to DistillConfig (the CLI never imports torch for
    --help); the help text states them and must not drift from it."""
    from core.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "cmd" or getattr(a, "choices", None))
    helps = {a.dest: a.help for a in sub.choices["distill"]._actions}
    cfg = DistillConfig()
    for name, value in (("steps", cfg.steps), ("lr", cfg.lr), ("temperature", cfg.temperature)):
        assert f"default {value:g}" in helps[name], (name, helps[name])
    assert f"default {cfg.pseudo_queries})" in helps["pseudo_queries"]


PASSAGE = (
    "Riders paid for trips in the period and drivers earned more per hour as the network grew across "
    "new cities. Insurance costs rose with the miles driven. The company expects regulatory changes in "
    "several states to affect how drivers are classified, and it disclosed pending litigation about them. "
    "Revenue grew with the number of active riders and with the average price per ride."
)


def test_fingerprints_find_the_same_passage_however_it_was_chunked_and_not_another(tmp_path):
    from core.distill import ranked_coverage, save_ranked

    words = PASSAGE.split()
    save_ranked(tmp_path, [" ".join(words[:30]), " ".join(words[30:])])  # one cut
    rechunked = [" ".join(words[:22]), " ".join(words[22:47]), " ".join(words[47:])]  # another cut, other spacing
    assert ranked_coverage(tmp_path, [c.upper().replace(" ", "  ") for c in rechunked]) >= 0.8
    other = "The museum's collection of maritime paintings moved to a new wing with climate control and a cafe."
    assert ranked_coverage(tmp_path, [other]) == 0.0
    assert ranked_coverage(tmp_path / "absent", [other]) is None  # no record: not a distilled adapter
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "distilled_over.txt").write_text("0123456789abcdef\n")  # another scheme: unknown, not "0% covered"
    assert ranked_coverage(legacy, [other]) is None


def test_coverage_is_set_on_distilled_systems_only(tmp_path):
    from core.datasets import QADataset
    from core.distill import save_ranked, text_fingerprints
    from core.provenance import distilled_coverage

    save_ranked(tmp_path, [PASSAGE])
    seen = QADataset({"q": "How did revenue grow?"}, {"c": PASSAGE}, {"q": ["c"]})
    unseen = QADataset(
        {"q": "Where did the paintings go?"}, {"c": "The paintings moved to a new wing of the museum."}, {"q": ["c"]}
    )
    for ds, share in ((seen, 1.0), (unseen, 0.0)):
        systems = {
            "distilled": {"kind": "adapter_dir", "_folder": str(tmp_path)},
            "plain adapter": {"kind": "adapter_dir", "_folder": str(tmp_path / "plain")},
            "base": {"kind": "base"},
        }
        distilled_coverage(systems, text_fingerprints(ds.corpus.values()))
        assert systems["distilled"]["distilled_coverage"] == share and "_folder" not in systems["distilled"]
        assert "distilled_coverage" not in systems["base"] and "distilled_coverage" not in systems["plain adapter"]


def test_documents_the_questions_are_not_about_are_found_however_the_training_set_was_chunked():
    from core.distill import choose_recipe, describe_searched, uncovered_documents

    words = PASSAGE.split()
    other = "The museum's collection of maritime paintings moved to a new wing with climate control and a cafe."
    docs = {"rides.pdf": [" ".join(words[:30]), " ".join(words[30:])], "museum.pdf": [other]}
    train_texts = [" ".join(words[:20]), " ".join(words[20:])]  # the same filing, cut elsewhere
    assert uncovered_documents(train_texts, docs) == ["museum.pdf"]
    assert uncovered_documents(train_texts + [other], docs) == []
    assert describe_searched(False, []) is None
    assert describe_searched(True, ["museum.pdf"]) == (
        "the evaluation set named; ingested documents the questions mostly do not ask about: museum.pdf"
    )
    # the rule: distil only for a local base once the searched documents are known
    recipe, why = choose_recipe("default", None)
    # blind, the reason says what naming the documents unlocks (core.carryover.DISTILLED_ELSEWHERE), not only the risk
    assert recipe == "adapter" and "by \u22120.2 / \u22120.5 points" in why and "gained +3.0 / +1.4 there" in why
    assert "changed hit@5 by \u22122.2 on the other" in why
    assert choose_recipe("default", "the evaluation set named")[0] == "distil"
    assert choose_recipe("openai:text-embedding-3-small", "the evaluation set named")[0] == "adapter"
    # an evaluation set named about the training chunks: new questions on the same documents, the adapter's case
    recipe, why = choose_recipe("default", None, eval_overlap=0.8)
    assert recipe == "adapter" and "asks about the training questions' own chunks (80% of the text" in why
    assert "+4.0 / +4.2" in why and "+2.6 / +2.3" in why  # core.carryover.DISTILLED_IN_CORPUS
    assert choose_recipe("default", None, eval_overlap=0.3)[1].startswith("nothing says")
    # offline pseudo-queries made from the chunks users will search: the adapter, with what each recipe carried
    # over to real questions there (core.carryover.OWN_CHUNKS_CARRYOVER); a minority of them changes nothing
    recipe, why = choose_recipe("default", None, offline_share=0.9)
    assert recipe == "adapter" and why.startswith("90% of the training questions are offline pseudo-queries")
    assert "+1.4 / +1.5 hit@5 / MRR@5 with the adapter" in why and "+2.9 / +3.5 with fine-tune, then distil" in why
    assert choose_recipe("default", None, offline_share=0.4)[1].startswith("nothing says")
    # other documents to search still decide by their chunks, whatever wrote the questions
    assert choose_recipe("default", "the evaluation set named", long_share=0.9, offline_share=1.0)[0] == "distil"
    # ingested documents the questions mostly do not ask about still call for the distillation
    assert (
        choose_recipe("default", "ingested documents the questions mostly do not ask about: museum.pdf", 1.0)[0]
        == "distil"
    )


def test_an_evaluation_set_is_judged_by_the_text_its_questions_ask_about(tmp_path):
    """core.distill.eval_overlap: the share of the chunks an evaluation set's questions name whose text is among
    the training chunks, whatever the chunking; core.runs.auto_recipe reads it (in-corpus: the adapter)."""
    from core.datasets import QADataset
    from core.distill import eval_overlap
    from core.runs import auto_recipe
    from core.workspace import Workspace

    words = PASSAGE.split()
    other = "The museum's collection of maritime paintings moved to a new wing with climate control and a cafe."
    train = QADataset(
        {"q1": "What grew?", "q2": "Who rode?"},
        {"a": " ".join(words[:20]), "b": " ".join(words[20:]), "c": other},
        {"q1": ["a"], "q2": ["b"]},
    )  # "c": a chunk no training question asks about: new text to the adapter
    # the same filing cut elsewhere, plus a chunk of other text that no question asks about
    same = QADataset(
        {"e1": "Which riders?", "e2": "What else?"},
        {"x": " ".join(words[:30]), "y": " ".join(words[30:]), "z": other},
        {"e1": ["x"], "e2": ["y", "gone"]},
    )
    assert eval_overlap(train, same) == 1.0
    museum = QADataset({"m1": "Where are the paintings?"}, {"m": other, "x": " ".join(words)}, {"m1": ["m"]})
    assert eval_overlap(train, museum) == 0.0
    assert eval_overlap(train, QADataset({"m1": "?"}, {"m": other}, {"m1": ["gone"]})) is None

    ws = Workspace(tmp_path / "ws")
    recipe, why = auto_recipe(ws, train, same, "default")
    assert recipe == "adapter" and "(100% of the text its questions are about)" in why
    # other text, in chunks the base model reads whole: the distillation's teacher sees nothing more there
    recipe, why = auto_recipe(ws, train, museum, "default")
    assert recipe == "adapter" and "are cut into chunks the base model reads whole (0% are longer" in why
    # ... and in chunks longer than it reads (256 tokens): fine-tune, then distil
    long = QADataset({"m1": "Where are the paintings?"}, {"m": " ".join([other] * 20)}, {"m1": ["m"]})
    recipe, why = auto_recipe(ws, train, long, "default")
    assert recipe == "distil" and "(the evaluation set named; 100% of their chunks are longer" in why
    assert auto_recipe(ws, train, None, "default")[0] == "adapter"
    assert auto_recipe(ws, train, long, "openai:text-embedding-3-small")[0] == "adapter"  # nothing to fine-tune
    # other chunks of the training questions' own documents (a validation split of them): the same rule, quoting
    # the measurements of that case (new sections of the training filing), not another company's filing
    meta = {"filename": "museum.pdf"}
    mine = QADataset(train.queries, {**train.corpus, "m": other}, train.relevant_docs,
                     node_meta={n: meta for n in [*train.corpus, "m"]})  # fmt: skip
    split = QADataset(museum.queries, museum.corpus, museum.relevant_docs, node_meta={n: meta for n in museum.corpus})
    recipe, why = auto_recipe(ws, mine, split, "default")
    assert recipe == "adapter" and why.startswith(
        "the evaluation set named asks about other chunks of the training questions' own documents (museum.pdf), "
        "cut into chunks the base model reads whole"
    )
    assert "another company" not in why and "+2.3 pt to +6.7 pt hit@5" in why
    split_long = QADataset(long.queries, long.corpus, long.relevant_docs, node_meta={"m": meta})
    recipe, why = auto_recipe(ws, mine, split_long, "default")
    assert recipe == "distil" and "fine-tune, then distil gained +2.4 pt to +3.7 pt" in why, why
    other_file = QADataset(museum.queries, museum.corpus, museum.relevant_docs,
                           node_meta={n: {"filename": "harbor.pdf"} for n in museum.corpus})  # fmt: skip
    assert "another company" in auto_recipe(ws, mine, other_file, "default")[1]


def test_long_chunk_share_counts_the_tokens_the_base_model_reads():
    from core.distill import long_chunk_share
    from core.embedders import resolve_embedder

    emb = resolve_embedder("default")
    short, long = "A short chunk about fleet vehicles.", " ".join(["The fleet grew across every market."] * 60)
    assert emb.max_seq_length == 256 and long_chunk_share([short, long, short, short], emb) == 0.25
    assert long_chunk_share([], emb) is None
    assert long_chunk_share([long], object()) is None  # no stated length: unknown


def test_a_long_document_is_judged_from_a_sample_of_its_chunks(monkeypatch):
    import core.distill as distill

    words = PASSAGE.split()
    rides = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    museum = [f"The museum's wing number {i} holds maritime paintings, a cafe and climate control." for i in range(9)]
    monkeypatch.setattr(distill, "_PER_DOCUMENT", 3)  # read 3 chunks of each document, not all
    read: list[int] = []
    real = distill.text_fingerprints
    monkeypatch.setattr(distill, "text_fingerprints", lambda texts: read.append(len(texts)) or real(texts))
    docs = {"rides.pdf": rides, "museum.pdf": museum}
    assert distill.uncovered_documents(rides, docs) == ["museum.pdf"]
    assert read == [len(rides), 3, 3]  # the training chunks whole; each document's sample


def test_saved_sets_about_documents_auto_cannot_see_are_listed_and_a_split_of_an_ingested_one_is_not(tmp_path):
    """core.runs.unnamed_search_sets: a saved set whose text is neither the training set's nor in an ingested
    document (an imported set of another filing) is listed for the Train page; the training document's other
    chunks (a validation split) are not, since the ingested PDF holds them."""
    from core.datasets import QADataset, save_dataset
    from core.documents.catalog import ingest_files
    from core.runs import unnamed_search_sets
    from core.workspace import Workspace
    from tests.pdfs import make_text_pdf

    ws = Workspace(tmp_path / "ws")
    words = PASSAGE.split()
    (report,) = ingest_files(ws, [("rides.pdf", make_text_pdf([PASSAGE]))])
    assert report.status == "ok"
    train = QADataset({"q1": "How did drivers earn?"}, {"c1": " ".join(words[:24])}, {"q1": ["c1"]})
    split = QADataset({"q2": "What about litigation?"}, {"c2": " ".join(words[24:])}, {"q2": ["c2"]})
    museum = "The museum's collection of maritime paintings moved to a new wing with climate control and a cafe."
    other = QADataset({"q3": "Where did the paintings go?"}, {"c3": museum}, {"q3": ["c3"]})
    train_id = save_dataset(ws, train, "rides train", role="train")
    save_dataset(ws, split, "rides validation", role="val")
    assert unnamed_search_sets(ws, train_id) == []  # no other documents: nothing to name
    other_id = save_dataset(ws, other, "museum questions", role="import")
    assert [d["id"] for d in unnamed_search_sets(ws, train_id)] == [other_id]
    assert unnamed_search_sets(ws, other_id) == []  # its own training set: every other set is in rides.pdf


def _run(kind, *, status="done", embedder="default", name="ft", **result):
    return {"kind": kind, "status": status, "name": name, "config": {"embedder": embedder}, "result": result}


def test_the_recipe_estimate_scales_this_machines_last_fine_tune_and_distillation():
    """Before the distil recipe starts: its steps always; its seconds at the pace of the newest finished
    fine-tune (and distillation) of the same base model here, never of another model's, a cancelled or a
    failed run's."""
    from core.distill import _DISTIL_PER_REEMBED, recipe_estimate

    none = recipe_estimate([], "default", 100, 40)
    assert none == {"steps": 4, "finetune_seconds": None, "distil_seconds": None, "basis": None}  # ceil(100/32)
    assert recipe_estimate([], "default", 100, 40, epochs=2, batch_size=8)["steps"] == 26

    cost = {"train_seconds": 50.0, "chunks_to_reembed": 100, "reembed_seconds_estimate": 10.0}
    ft = _run("finetune", name="last", seconds=50.0, n_train_queries=50, epochs=1, cost=cost)
    ignored = [
        _run("finetune", embedder="st:other", seconds=1.0, n_train_queries=50, epochs=1),  # another base model
        _run("finetune", status="failed", seconds=1.0, n_train_queries=50, epochs=1),
        _run("finetune", seconds=1.0, n_train_queries=50, epochs=1, cancelled=True),
    ]
    est = recipe_estimate([*ignored, ft], "default", 200, 40, epochs=2)
    assert est["finetune_seconds"] == pytest.approx(50.0 / 50 * 200 * 2)  # 1 s per question and epoch
    # no distillation yet: the fine-tune's timed re-embedding (0.1 s per chunk), scaled to a distillation
    assert est["distil_seconds"] == pytest.approx(0.1 * 40 * _DISTIL_PER_REEMBED)
    assert est["basis"] == "the fine-tune \u201clast\u201d: 50 questions in 50 s"

    dist = _run("distill", seconds=30.0, n_chunks=300)
    est = recipe_estimate([dist, _run("distill", seconds=1.0, n_chunks=300, cancelled=True), ft], "default", 10, 60)
    assert est["distil_seconds"] == pytest.approx(30.0 / 300 * 60)
    # a corpus above the distillation's cap ranks a sample of that many chunks: they are what it costs
    capped = recipe_estimate([dist, ft], "default", 10, 10_000, max_ranked_chunks=600)
    assert capped["distil_seconds"] == pytest.approx(30.0 / 300 * 600)


def test_a_teacher_read_at_two_lengths_ranks_by_the_mean_of_its_cosines():
    """``teacher`` as a list (one model at two input lengths, :func:`core.distill.teacher_readers`): the target is
    the softmax of the mean of the readers' cosines. Two identical readers are one teacher, to float precision;
    a blend of the rotated teacher and the base lands between them, its student too."""
    base, rotated = WordEmbedder(), RotatedTeacher()
    questions = ["What does section 3 say about revenue?", "How did drivers change in 2021?"]
    cfg = DistillConfig(steps=60, lr=1e-2, pseudo_queries=0)
    one, _ = distill_adapter(rotated, base, questions, CHUNKS, cfg)
    twice, summary = distill_adapter([rotated, RotatedTeacher()], base, questions, CHUNKS, cfg)
    assert summary["teacher_reads"] == [None, None]
    for a, b in zip(one.parameters(), twice.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    blended, _ = distill_adapter([rotated, base], base, questions, CHUNKS, cfg)
    kl_one, kl_blend = (_kl_to_teacher(m, base, rotated, questions) for m in (one, blended))
    assert kl_one < kl_blend < _kl_to_teacher(torch.nn.Identity(), base, rotated, questions), (kl_one, kl_blend)


def test_teacher_readers_blend_the_models_own_length_with_the_long_read():
    from core.distill import teacher_readers
    from core.embedders import bundled_model_path

    folder = bundled_model_path()  # reads 256 tokens, 512 positions
    own, long = teacher_readers(folder, DistillConfig())
    assert (own.max_seq_length, long.max_seq_length) == (256, 512) and long.identity.endswith("@len512")
    (alone,) = teacher_readers(folder, DistillConfig(teacher_blend=False))
    assert alone.max_seq_length == 512
    (plain,) = teacher_readers(folder, DistillConfig(teacher_max_tokens=0))
    assert plain.max_seq_length == 256 and plain.identity == own.identity
    (same,) = teacher_readers(folder, DistillConfig(teacher_max_tokens=256))  # the long read is its own length
    assert same.identity == own.identity
    # the short read is the index's (the base model's length), also for a fine-tune saved to read more
    short, long = teacher_readers(folder, DistillConfig(), short=128)
    assert (short.max_seq_length, long.max_seq_length) == (128, 512)


def test_the_cli_sets_the_teachers_read():
    from core.cli import build_parser

    parse = build_parser().parse_args
    args = parse(["distill", "--teacher", "RUN", "--teacher-max-tokens", "384", "--no-teacher-blend"])
    assert (args.teacher_max_tokens, args.teacher_blend) == (384, False)
    args = parse(["distill", "--teacher", "RUN"])  # unset: DistillConfig's defaults
    assert (args.teacher_max_tokens, args.teacher_blend) == (None, None)
    assert (DistillConfig().teacher_max_tokens, DistillConfig().teacher_blend) == (512, "auto")


def test_the_teachers_read_is_the_long_one_alone_for_another_document_altogether():
    """``auto``: the long read alone when a ranked document or the evaluation set named is another document
    altogether (under a tenth of its text among the training set's chunks), the blend when everything ranked is
    partly the training set's own (a sample of one filing asked about, a held-out part of it); a set value is
    kept."""
    import pytest

    from core.datasets import QADataset
    from core.distill import OTHER_DOCUMENT_SHARE, resolve_teacher_blend

    def words(tag: str, n: int) -> list[str]:
        return [
            " ".join(f"{tag} section {i} paragraph {j} says figure {i * 7 + j}." for j in range(12)) for i in range(n)
        ]

    own, other = words("lyft", 20), words("uber", 20)
    train = QADataset(
        {f"q{i}": f"What does section {i} say?" for i in range(5)},  # asks about a quarter of its filing
        {f"c{i}": t for i, t in enumerate(own)},
        {f"q{i}": [f"c{i}"] for i in range(5)},
    )
    auto = DistillConfig()
    blend, why = resolve_teacher_blend(auto, train, {"lyft.pdf": own})
    assert blend is True and "blended" in why  # a sample of the training filing: partly its own
    assert resolve_teacher_blend(auto, train, {})[0] is True  # nothing ingested: the training chunks alone
    blend, why = resolve_teacher_blend(auto, train, {"lyft.pdf": own, "uber.pdf": other})
    assert blend is False and "another document altogether (uber.pdf)" in why
    named = QADataset({"e": "What does uber say?"}, {"u0": other[0]}, {"e": ["u0"]})
    blend, why = resolve_teacher_blend(auto, train, {"lyft.pdf": own}, named)
    assert blend is False and "the evaluation set named" in why
    same = QADataset({"e": "And section 1?"}, {"x": own[1]}, {"e": ["x"]})  # chunked apart, the same text
    assert resolve_teacher_blend(auto, train, {}, same)[0] is True
    # new sections of the training filing (held out: no training question asks about them) are not another
    # document: the training set's chunks hold them
    held = QADataset({"e": "And section 15?"}, {"y": own[15]}, {"e": ["y"]})
    assert resolve_teacher_blend(auto, train, {"lyft.pdf": own}, held)[0] is True
    # other sections of the training filing, named as a file of their own (the training file holds the first
    # half): by text alone another document; with the filing ingested, the workspace shows they are its sections
    first_half = QADataset(dict(train.queries), {f"c{i}": own[i] for i in range(10)}, dict(train.relevant_docs))
    assert resolve_teacher_blend(auto, first_half, {}, held)[0] is False
    blend, why = resolve_teacher_blend(auto, first_half, {"lyft.pdf": own}, held)
    assert blend is True and "blended" in why
    # ... while another filing's set stays another document, with the training filing ingested or both
    assert resolve_teacher_blend(auto, first_half, {"lyft.pdf": own}, named)[0] is False
    assert resolve_teacher_blend(auto, first_half, {"lyft.pdf": own, "uber.pdf": other}, named)[0] is False
    # a user's setting wins either way
    assert resolve_teacher_blend(DistillConfig(teacher_blend=True), train, {"uber.pdf": other}) == (True, "set")
    assert resolve_teacher_blend(DistillConfig(teacher_blend=False), train, {}) == (False, "set")
    assert 0 < OTHER_DOCUMENT_SHARE < 0.25  # under protocol (q)'s quarter: a sample is not another document
    with pytest.raises(ValueError, match="teacher_blend"):
        DistillConfig(teacher_blend="sometimes").validate()


def test_a_document_a_sample_of_questions_barely_covers_counts_as_searched(tmp_path):
    """A dataset built in the workspace ranks among every chunk of its documents (core.datasets.build_dataset),
    so whether the questions cover a document is read from the chunks they ask about, not from its corpus:
    questions about one chunk of six leave most of the document new text (auto distils over it); about four
    of six, it is theirs (the adapter)."""
    import time

    from core.datasets import QADataset
    from core.runs import auto_recipe, searched_documents
    from core.workspace import Workspace

    topics = [
        "fleet vehicles",
        "driver earnings",
        "insurance reserves",
        "bike sharing",
        "lease accounting",
        "tax credits",
    ]
    # chunks longer than the base model reads (auto distils only for such: test_an_evaluation_set_is_judged...)
    texts = {
        f"c{i}": " ".join([f"Section {i} of the filing discusses {t} in detail across several fiscal years."] * 25)
        for i, t in enumerate(topics)
    }
    ws = Workspace(tmp_path / "ws")
    with ws.db() as con:
        con.execute(
            "INSERT INTO documents(id, filename, size_bytes, pages, chars, status, added_at) "
            "VALUES ('d1', 'filing.pdf', 1, 1, 1, 'ok', ?)",
            (time.time(),),
        )
        for i, (cid, text) in enumerate(texts.items()):
            con.execute(
                "INSERT INTO chunks(id, doc_id, idx, text, page_start, page_end, n_tokens) VALUES (?, 'd1', ?, ?, 1, 1, 10)",
                (cid, i, text),
            )

    def asking(n: int) -> QADataset:
        return QADataset(
            {f"q{i}": f"What about {topics[i]}?" for i in range(n)}, texts, {f"q{i}": [f"c{i}"] for i in range(n)}
        )

    assert (
        searched_documents(ws, asking(1), False)
        == "ingested documents the questions mostly do not ask about: filing.pdf"
    )
    assert auto_recipe(ws, asking(1), None, "default")[0] == "distil"
    # a distillation limited to other documents (--documents) does not rank this one: not said to be searched
    assert searched_documents(ws, asking(1), False, doc_ids=["d-other"]) is None
    assert searched_documents(ws, asking(4), False) is None
    assert auto_recipe(ws, asking(4), None, "default")[0] == "adapter"


def test_saved_sets_of_other_text_are_pointed_at_only_where_auto_would_distil_for_them(tmp_path):
    """core.runs.unnamed_search_sets with the base model: a saved set about other text whose chunks the base
    model reads whole is not listed (naming it would make Auto train the adapter anyway); one with chunks
    longer than it reads is."""
    from core.datasets import QADataset, save_dataset
    from core.runs import unnamed_search_sets
    from core.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    words = PASSAGE.split()
    train_id = save_dataset(ws, QADataset({"q": "What grew?"}, {"a": " ".join(words)}, {"q": ["a"]}), "train")
    short = QADataset({"m": "Where?"}, {"x": "The museum's maritime paintings moved to a new wing."}, {"m": ["x"]})
    long = QADataset(
        {"m": "Where?"},
        {"y": " ".join(f"The museum's wing {i} holds {20 + i} maritime paintings and a cafe." for i in range(30))},
        {"m": ["y"]},
    )
    short_id, long_id = save_dataset(ws, short, "short other"), save_dataset(ws, long, "long other")
    assert {d["id"] for d in unnamed_search_sets(ws, train_id)} == {short_id, long_id}
    assert [d["id"] for d in unnamed_search_sets(ws, train_id, "default")] == [long_id]


class _Spy:
    """An embedder that records the texts it is asked to embed; ``counts=False`` hides its token counter, so a
    distillation cannot tell which texts a shorter read already saw whole."""

    def __init__(self, inner, counts: bool = True):
        self.inner, self.seen = inner, []
        if not counts:
            self.count_tokens_batch = None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_queries(self, texts, progress=None):
        self.seen += list(texts)
        return self.inner.embed_queries(texts)

    def embed_texts(self, texts, progress=None):
        self.seen += list(texts)
        return self.inner.embed_texts(texts)


def test_the_long_read_embeds_only_the_texts_the_short_read_cut():
    """A blended teacher's long read of a text that fits the short read is the same vector, so the distillation
    takes it from the short read instead of embedding it again (most questions and pseudo-queries, short
    chunks); the student is the one it would be had the long read embedded everything. Real model, 24 / 64
    tokens."""
    from core.distill import teacher_readers
    from core.embedders import bundled_model_path, resolve_embedder

    base = resolve_embedder("default")
    long_chunks = [c + " " + " ".join(f"It adds note {j} on {c.split()[3]}." for j in range(6)) for c in CHUNKS[:12]]
    chunks = CHUNKS[12:] + long_chunks
    questions = ["What does section 3 say about revenue?", "How did drivers change in 2021?"]
    cfg = DistillConfig(steps=30, lr=1e-2, pseudo_queries=1, teacher_max_tokens=64)
    short, long = teacher_readers(bundled_model_path(), cfg, short=24)
    spy = _Spy(long)
    student, summary = distill_adapter([short, spy], base, questions, chunks, cfg)
    counts = dict(zip(chunks, long.count_tokens_batch(chunks), strict=True))
    cut = [c for c in chunks if counts[c] > 24]
    assert cut and len(cut) < len(chunks)  # both kinds present
    assert sorted(spy.seen) == sorted(cut), "the long read embedded a text the short one had whole, or missed one"
    n_queries = len(questions) + summary["n_pseudo_queries"]
    assert summary["teacher_texts_reused"] == n_queries + len(chunks) - len(cut)

    everything = _Spy(long, counts=False)
    plain, _ = distill_adapter([short, everything], base, questions, chunks, cfg)
    assert len(everything.seen) == n_queries + len(chunks)
    other = _Spy(long)
    other.identity = "st:another-model@len64"  # other weights: a short text's vector is not the short read's
    distill_adapter([short, other], base, questions, chunks, DistillConfig(**{**cfg.to_dict(), "steps": 1}))
    assert len(other.seen) == n_queries + len(chunks)
    for a, b in zip(student.parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-3), (a - b).abs().max()  # batch padding: float noise
