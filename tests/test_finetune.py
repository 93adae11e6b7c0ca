"""The full fine-tune reference (core.finetune): a tiny real fine-tune of the bundled model, the
``finetune`` run kind through the CLI and as a background job, and its place in a comparison."""

from __future__ import annotations

import json
import math
import re
import threading
import time

import numpy as np
import pytest

from core.embedders import SentenceTransformerEmbedder, resolve_embedder
from core.finetune import MARKER, FinetuneConfig, FinetuneError, finetune, read_marker, weights_fingerprint
from core.jobs import JobManager
from core.launch import build_systems, start_finetune
from core.questions import save_dataset
from core.reports import has_curves, training_figure
from core.runs import create_finetune_run, get_run, has_model, list_runs, model_dir, read_history, run_kind
from tests.test_cli import cli_inproc
from tests.test_runs import small_dataset

PROBE = ["What about revenue growth?", "The report discusses airport pickup fee in detail with numbers and dates."]


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    return str(small_dataset().save(tmp_path_factory.mktemp("ft") / "train.json"))


def test_a_tiny_fine_tune_saves_a_loadable_model_that_differs_from_the_base(ws, tmp_path):
    events, ticks = [], []
    out = tmp_path / "ft"
    result = finetune(
        small_dataset(),
        "default",
        out,
        epochs=1,
        batch_size=8,
        lr=1e-4,
        device="cpu",
        callback=events.append,
        progress=lambda d, t, m: ticks.append((d, t, m)),
    )

    assert result.out_dir == out and not result.cancelled and result.steps == 3  # 24 questions, batch 8
    assert result.seconds > 0 and result.n_train_queries == 24
    assert result.cost()["chunks_to_reembed"] == 12 and result.cost()["reembed_seconds_estimate"] is not None
    # the history speaks the adapter runs' dialect (the live chart draws it)
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3] and all(
        set(e) == {"type", "step", "epoch", "loss", "lr"} for e in steps
    )
    assert [e for e in events if e["type"] == "epoch"][0]["train_loss"] == pytest.approx(
        np.mean([e["loss"] for e in steps])
    )
    assert events[-1]["type"] == "cost" and has_curves(events)
    training_figure(events)
    assert [t[:2] for t in ticks] == [(1, 3), (2, 3), (3, 3)]
    # a CPU step takes seconds: the line says how long is left, at the pace so far, until the last step
    assert all(re.search(r"step \d/3 · about \d+ s left$", m) for _, _, m in ticks[:2]), ticks
    assert ticks[-1][2] == "epoch 1/1 · step 3/3"

    marker = read_marker(out)
    assert marker["fingerprint"] == weights_fingerprint(out) and marker["cost"]["chunks_to_reembed"] == 12

    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(out), device="cpu").encode(PROBE)
    assert reference.shape == (2, 384)  # a plain ST folder
    base = resolve_embedder("default", workspace=ws)
    tuned = resolve_embedder(str(out), workspace=ws)
    assert tuned.identity != base.identity and "@ft-" in tuned.identity
    # on CPU the fine-tuned folder runs through the plain-torch encoder, with sentence-transformers' vectors
    from core.torch_encoder import lean_support

    assert lean_support(out)[0] is not None
    assert np.abs(tuned.embed_texts(PROBE) - reference).max() < 1e-5
    # sentence-transformers 6 keeps the model's input length in the tokenizer config only: it is read from
    # there (it was not: a chunk past 256 tokens was embedded at 512, other vectors at twice the cost), and
    # the cache identity says so, so vectors cached before the fix are not reused
    st_model = SentenceTransformer(str(out), device="cpu")
    assert st_model.max_seq_length == 256 and tuned.model.max_seq_length == 256 and "@len256" in tuned.identity
    long_text = " ".join(f"clause {i} of the revolving credit facility covers interest" for i in range(120))
    assert st_model.tokenizer(long_text, truncation=False)["input_ids"].__len__() > 512
    assert np.abs(tuned.embed_texts([long_text]) - st_model.encode([long_text])).max() < 1e-5
    # a distillation's teacher reads more of each chunk (DistillConfig.teacher_max_tokens, capped at the
    # model's 512 positions), under its own identity, and the shared 256-token model keeps its length
    from core.distill import DistillConfig, teacher_length

    assert (
        teacher_length(out, DistillConfig()) == 512 and teacher_length(out, DistillConfig(teacher_max_tokens=0)) is None
    )
    assert teacher_length(out, DistillConfig(teacher_max_tokens=4096)) == 512
    reader = resolve_embedder(str(out), workspace=ws, max_seq_length=512)
    assert reader.identity.endswith("@len512") and reader.identity.replace("@len512", "@len256") == tuned.identity
    st_model.max_seq_length = 512
    assert np.abs(reader.embed_texts([long_text]) - st_model.encode([long_text])).max() < 1e-5
    assert np.abs(reader.embed_texts([long_text]) - tuned.embed_texts([long_text])).max() > 1e-3
    assert tuned.model.max_seq_length == 256 and reader.model.max_seq_length == 512
    diff = np.abs(tuned.embed_queries(PROBE) - base.embed_queries(PROBE)).max()
    assert diff > 1e-3, diff

    # a second fine-tune into the same folder (stopped after one step) is a new model: a new
    # cache identity, and no stale copy served from the loaded-models cache
    stop = threading.Event()
    again = finetune(
        small_dataset(),
        "default",
        out,
        epochs=1,
        batch_size=8,
        lr=1e-3,
        seed=1,
        device="cpu",
        cancel=stop,
        progress=lambda d, t, m: stop.set(),
    )
    assert again.cancelled and again.steps == 1 and again.out_dir == out
    tuned2 = resolve_embedder(str(out), workspace=ws)
    assert tuned2.identity != tuned.identity
    assert np.abs(tuned2.embed_queries(PROBE) - tuned.embed_queries(PROBE)).max() > 1e-4


def test_the_saved_model_can_read_more_of_each_chunk_than_the_base_model(ws, tmp_path):
    """``read_tokens``: trained at the base model's 256 tokens, saved to read up to its 512 positions (a longer
    request is capped), so sentence-transformers and AdapterLab both embed the re-indexed corpus at that
    length; the label and the cost sentence say so. Asking for the base model's own length changes nothing."""
    from sentence_transformers import SentenceTransformer

    from core.finetune import cost_label, describe_cost, read_lengths

    assert read_lengths("default") == (256, 512) and read_lengths("openai:text-embedding-3-small") == (None, None)
    with pytest.raises(FinetuneError, match="read_tokens"):
        FinetuneConfig(read_tokens=-1).validate()

    def one_step(out, read_tokens):
        stop = threading.Event()
        return finetune(
            small_dataset(),
            "default",
            out,
            batch_size=8,
            device="cpu",
            read_tokens=read_tokens,
            cancel=stop,
            progress=lambda d, t, m: stop.set(),
        )

    long = one_step(tmp_path / "long", 4096)
    assert long.read_tokens == 512 and long.cost()["read_tokens"] == 512
    assert read_marker(long.out_dir)["cost"]["read_tokens"] == 512
    assert SentenceTransformer(str(long.out_dir), device="cpu").max_seq_length == 512
    emb = resolve_embedder(str(long.out_dir), workspace=ws)
    assert emb.model.max_seq_length == 512 and emb.identity.endswith("@len512")
    assert cost_label(long.cost()) == "full fine-tune, reads 512 tokens (re-embeds 12 chunks)"
    assert "reads 512 tokens of each text" in describe_cost(long.cost())

    same = one_step(tmp_path / "same", 256)
    assert same.read_tokens is None and "read_tokens" not in same.cost()
    assert SentenceTransformer(str(same.out_dir), device="cpu").max_seq_length == 256
    assert cost_label(same.cost()) == "full fine-tune (re-embeds 12 chunks)" == cost_label({"chunks_to_reembed": 12})
    assert cost_label(None) == "full fine-tune (re-embeds the corpus)"
    assert "reads" not in describe_cost(same.cost())
    # the CLI's flag is the config's field (cmd_finetune builds FinetuneConfig from the parsed fields)
    from core.cli import build_parser

    args = build_parser().parse_args(["finetune", "--dataset", "x.json", "--read-tokens", "512"])
    assert args.read_tokens == 512 and build_parser().parse_args(["finetune", "--dataset", "x.json"]).read_tokens == 0


def test_on_a_cpu_the_fine_tune_trains_without_attention_dropout_unless_asked(tmp_path):
    """``attention_dropout``: ``auto`` is 0 on a CPU, so PyTorch's fused CPU attention runs (any attention dropout
    sends every layer to the unfused path, about 1.5 times the time per step), and the model's own elsewhere; ``model``
    keeps the model's own 0.1. The rate reaches the attention layers the trainer runs, the saved config and the
    run's settings record it, and the other dropout stays the model's."""
    import torch

    from core.finetune import _load_trainable, attention_rate, resolve_base_path

    assert attention_rate("auto", "cpu") == 0.0 and attention_rate("auto", "cuda") is None
    assert attention_rate("auto", "mps") is None and attention_rate("model", "cpu") is None
    assert attention_rate(0.05, "cuda") == 0.05
    for bad in (1.0, -0.1, "none", True):
        with pytest.raises(FinetuneError, match="attention_dropout"):
            FinetuneConfig(attention_dropout=bad).validate()
    FinetuneConfig(attention_dropout=0).validate()
    assert FinetuneConfig.from_dict(FinetuneConfig().to_dict()).attention_dropout == "auto"

    path = resolve_base_path("default")

    def rates(model):  # (attention-probability dropout, every other dropout) of a loaded model
        drop = {n: m.p for n, m in model[0].auto_model.named_modules() if isinstance(m, torch.nn.Dropout)}
        attn = {n for n in drop if n.endswith("attention.self.dropout")}
        return {drop[n] for n in attn}, {p for n, p in drop.items() if n not in attn}

    assert rates(_load_trainable(path, "cpu", 0.0)) == ({0.0}, {0.1})
    assert rates(_load_trainable(path, "cpu", 0.05)) == ({0.05}, {0.1})
    assert rates(_load_trainable(path, "cpu", None)) == ({0.1}, {0.1})

    def one_step(out, **kw):
        stop = threading.Event()
        res = finetune(
            small_dataset(), "default", out, batch_size=8, device="cpu", cancel=stop,
            progress=lambda d, t, m: stop.set(), **kw,
        )  # fmt: skip
        return json.loads((res.out_dir / "config.json").read_text()), read_marker(res.out_dir)

    saved, marker = one_step(tmp_path / "fast")
    assert saved["attention_probs_dropout_prob"] == 0.0 and saved["hidden_dropout_prob"] == 0.1
    assert "attention_dropout" not in saved  # only the keys the model's config has
    assert marker["settings"]["attention_dropout"] == 0.0
    saved, marker = one_step(tmp_path / "own", attention_dropout="model")
    assert saved["attention_probs_dropout_prob"] == 0.1 and marker["settings"]["attention_dropout"] == "model"

    from core.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["finetune", "--dataset", "x.json"]).attention_dropout == "auto"
    assert parse(["finetune", "--dataset", "x.json", "--attention-dropout", "model"]).attention_dropout == "model"
    assert parse(["finetune", "--dataset", "x.json", "--attention-dropout", "0.1"]).attention_dropout == 0.1
    for bad in ("1.5", "off"):
        with pytest.raises(SystemExit):
            parse(["finetune", "--dataset", "x.json", "--attention-dropout", bad])


def test_bad_requests_are_refused_before_any_work(ws, tmp_path, dataset_path):
    ds = small_dataset()
    with pytest.raises(FinetuneError, match="embeddings API"):
        finetune(ds, "openai:text-embedding-3-small", tmp_path / "x")
    with pytest.raises(FinetuneError, match="batch_size"):
        finetune(ds, "default", tmp_path / "x", batch_size=1)
    with pytest.raises(FinetuneError, match="embeddings API"):
        create_finetune_run(ws, FinetuneConfig(), dataset_path=dataset_path, embedder="openai:m")
    assert list_runs(ws) == []
    stop = threading.Event()
    stop.set()  # cancelled before it started: nothing loaded, nothing saved
    r = finetune(ds, "default", tmp_path / "y", cancel=stop)
    assert r.cancelled and r.out_dir is None and r.steps == 0 and not (tmp_path / "y").exists()


def test_cli_refuses_an_api_base(capsys, tmp_path, dataset_path):
    rc, out, err = cli_inproc(
        capsys, "finetune", "--dataset", dataset_path, "--embedder", "openai:m", "--workspace", str(tmp_path / "ws")
    )
    assert rc == 2 and "error:" in err and "sentence-transformers" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, dataset_path):
    """``python -m core finetune`` once (in this process: the same code as the command line)."""
    d = tmp_path_factory.mktemp("ftcli")
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(
            [
                "finetune",
                "--dataset",
                dataset_path,
                "--batch-size",
                "8",
                "--device",
                "cpu",
                "--out",
                str(d / "export"),
                "--json",
                "--workspace",
                str(d / "ws"),
            ]
        )
    assert rc == 0, err.getvalue()
    return {"dir": d, "ws": d / "ws", "summary": json.loads(out.getvalue())}  # stdout is pure JSON


def test_the_finetune_run_kind_through_the_cli(cli_run, capsys, dataset_path):
    from core.workspace import Workspace

    s = cli_run["summary"]
    ws = Workspace(cli_run["ws"])
    run = get_run(ws, s["run_id"])
    assert run["kind"] == "finetune" == run_kind(run) and run["status"] == "done"
    assert run["result"]["cost"]["chunks_to_reembed"] == 12  # no ingested chunks: the dataset's corpus
    assert has_model(ws, run["id"]) and (cli_run["dir"] / "export" / MARKER).is_file()
    assert s["exported_to"] == str(cli_run["dir"] / "export")
    hist = read_history(ws, run["id"])
    assert [h["step"] for h in hist if h["type"] == "step"] == [1, 2, 3]

    rc, out, _ = cli_inproc(capsys, "runs", "--json", "--workspace", str(cli_run["ws"]))
    assert rc == 0 and json.loads(out)[0]["kind"] == "finetune"

    rc, out, err = cli_inproc(
        capsys, "evaluate", "--dataset", dataset_path, "--run", run["id"], "--json", "--workspace", str(cli_run["ws"])
    )
    assert rc == 0, err
    rows = {r["system"]: r for r in json.loads(out)}
    assert list(rows) == [
        "base (all-MiniLM-L6-v2)",
        f"{run['name']} · re-embeds 12 chunks",  # the default name says "full fine-tune" already: not twice
    ]  # names, not ids (issue 12)
    assert all(r["queries"] == 24 for r in rows.values())
    # its export carries a model card too: what it is, that the corpus must be embedded again, how to load it
    out = cli_run["dir"] / "exported-model"
    rc, _, err = cli_inproc(
        capsys, "export", "--run", run["id"], "--out", str(out), "--workspace", str(cli_run["ws"])
    )  # fmt: skip
    assert rc == 0, err
    card = (out / "README.md").read_text()
    assert "fully fine-tuned by AdapterLab" in card and "documents must be embedded again" in card
    assert "SentenceTransformer(" in card and "24 questions" in card


def test_build_systems_gives_a_finetune_run_its_own_embedder(cli_run):
    from core.workspace import Workspace

    ws = Workspace(cli_run["ws"])
    rid = cli_run["summary"]["run_id"]
    named = build_systems(ws, [{"kind": "base"}, {"kind": "run", "run_id": rid}])
    (base_name, base), (label, tuned) = named.items()
    assert label.endswith("· re-embeds 12 chunks") and label.count("full fine-tune") == 1
    assert isinstance(tuned.base, SentenceTransformerEmbedder) and tuned.base.path == str(model_dir(ws, rid))
    assert tuned.identity != base.identity and tuned.identity.startswith("st:model@ft-")
    # the chunks are embedded with the fine-tuned model (passages change too, unlike an adapter)
    assert np.abs(tuned.embed_texts(PROBE[1:]) - base.embed_texts(PROBE[1:])).max() > 1e-5


def test_a_distillation_over_another_document_reads_long_alone(cli_run, tmp_path):
    """``teacher_blend`` auto through the run: an evaluation set of other text named, the teacher reads at 512
    tokens alone (where another company's filing gained twice the blend's hit@5), and the run says why."""
    from core.datasets import QADataset
    from core.distill import DistillConfig
    from core.runs import create_distill_run, execute_run
    from core.workspace import Workspace

    ws = Workspace(cli_run["ws"])
    other = QADataset(
        {"o1": "How many vehicles are in the fleet?"},
        {"other-1": " ".join(f"Another filing's fleet section {i}, with its {40 + i} vehicles." for i in range(30))},
        {"o1": ["other-1"]},
    )
    other.save(tmp_path / "other.json")
    rid = create_distill_run(
        ws, cli_run["summary"]["run_id"], DistillConfig(steps=3), eval_dataset_path=str(tmp_path / "other.json")
    )
    execute_run(ws, rid)
    res = get_run(ws, rid)["result"]
    assert res["teacher_blend"] is False and res["teacher_reads"] == [512]
    assert "another document altogether (the evaluation set named)" in res["teacher_blend_reason"]
    assert get_run(ws, rid)["config"]["config"]["teacher_blend"] == "auto"  # the request keeps what was asked


def test_a_fine_tune_run_distils_into_an_adapter_run_that_compare_uses(cli_run, tmp_path):
    """The ``distill`` run kind: the teacher's base, prefixes and questions by default, a LlamaIndex adapter
    folder in the run, step events the live chart draws, and a plain adapter in a comparison."""
    from core.adapters import read_adapter_meta
    from core.distill import DistillConfig
    from core.embedders import AdapterEmbedder
    from core.runs import adapter_dir, create_distill_run, execute_run, has_adapter
    from core.workspace import Workspace

    ws = Workspace(cli_run["ws"])
    teacher = cli_run["summary"]["run_id"]
    rid = create_distill_run(ws, teacher, DistillConfig(steps=15))
    run = get_run(ws, rid)
    treq = get_run(ws, teacher)["config"]
    assert run["kind"] == "distill" == run_kind(run) and run["status"] == "queued"
    assert run["config"]["embedder"] == treq["embedder"] and run["config"]["dataset_path"] == treq["dataset_path"]
    assert run["name"].startswith("distilled from ") and "15 steps" in run["name"]

    said: list[str] = []
    result = execute_run(ws, rid, out_dir=tmp_path / "copy", progress=lambda d, t, m="": said.append(m))
    # the progress names each embedding pass (a new corpus takes the teacher minutes), then the steps
    # the teacher reads at its own 256 tokens and at 512, blended (DistillConfig.teacher_blend)
    assert any(m.startswith("fine-tuned model at 256 tokens, queries: embedding") for m in said), said
    # the long read takes the short read's vectors of texts that fit in 256 tokens: these short questions
    assert "fine-tuned model at 512 tokens, queries: 36 of 36 fit in 256 tokens, their vectors reused" in said
    assert said[-1].startswith("step 15/15: KL to the fine-tuned ranking")
    run = get_run(ws, rid)
    assert run["status"] == "done" and has_adapter(ws, rid) and not result.cancelled
    res = run["result"]
    assert res["teacher_run_id"] == teacher and res["steps_done"] == 15 and res["final_loss"] < res["first_loss"]
    assert res["n_chunks"] == 12 and res["n_questions"] == 24  # no ingested documents: the dataset's own chunks
    assert res["teacher_reads"] == [256, 512] and res["teacher_texts_reused"] >= 36
    assert res["teacher_blend"] is True and "blended" in res["teacher_blend_reason"]  # only its own chunks ranked
    meta = read_adapter_meta(adapter_dir(ws, rid))
    assert meta["distilled_from"].startswith("st:model@ft-") and meta["run_id"] == rid
    assert meta["distilled_from"].endswith("@len512") and "@len256 + " in meta["distilled_from"]
    assert read_adapter_meta(tmp_path / "copy")["run_id"] == rid
    hist = read_history(ws, rid)
    assert [h["step"] for h in hist if h["type"] == "step"] == list(range(1, 16)) and has_curves(hist)

    systems = build_systems(ws, [{"kind": "run", "run_id": rid}])
    (_, base), (label, student) = systems.items()
    assert label == run["name"] and isinstance(student, AdapterEmbedder)  # an adapter: no re-embedding
    assert np.abs(student.embed_queries(PROBE) - base.embed_queries(PROBE)).max() > 1e-4
    assert np.array_equal(student.embed_texts(PROBE), base.embed_texts(PROBE))

    # Compare's provenance: its training set is the fine-tune's questions (the leakage check reads them),
    # and no epoch was chosen on anything
    from core.provenance import describe_systems

    info = describe_systems(ws, [("d", {"kind": "run", "run_id": rid}), ("f", {"kind": "run", "run_id": teacher})])
    assert info["d"]["train_set"]["path"] == treq["dataset_path"] and info["d"]["validation"].startswith(
        "none: distilled"
    )
    assert info["f"]["validation"] == "none: every epoch set was trained"
    from core.datasets import QADataset
    from core.launch import evaluate_with_context
    from core.summary import system_provenance

    cmp, ctx = evaluate_with_context(
        ws, QADataset.load(treq["dataset_path"]), "train again", [{"kind": "run", "run_id": rid}]
    )
    (row,) = system_provenance(cmp, ctx)
    assert row["trained on"].endswith(
        f"+ {res['n_pseudo_queries']} offline pseudo-queries from the ingested chunks; 100% of this evaluation "
        "set's text was among the chunks it ranked"
    )
    assert row["best epoch chosen on"].startswith("none: distilled from the fine-tune")

    # it exports like an adapter run, and its model card says how it was made (no CV estimate claimed)
    from core.export import export_run, model_card

    card = model_card(ws, rid)
    assert "Distilled from the full fine-tune" in card and "24 questions" in card and "pseudo-queries" in card
    assert "## Estimated gain (cross-validated)" not in card and "There is no cross-validated estimate" in card
    out = export_run(ws, rid, "llamaindex", tmp_path / "li")
    assert (out / "config.json").is_file() and (out / "pytorch_model.bin").is_file()


def test_distillation_is_refused_or_fails_with_the_reason_when_there_is_nothing_to_distil(ws, dataset_path):
    from core.distill import DistillConfig
    from core.runs import _set_status, create_distill_run, create_run, execute_run
    from core.training import TrainConfig

    adapter_run = create_run(ws, TrainConfig(), dataset_path=dataset_path)
    with pytest.raises(ValueError, match="not a full fine-tune"):
        create_distill_run(ws, adapter_run)
    with pytest.raises(ValueError, match="neither a fine-tune run"):
        create_distill_run(ws, "run-nosuch")
    with pytest.raises(ValueError, match="steps"):
        create_distill_run(ws, "default", DistillConfig(steps=0), dataset_path=dataset_path)
    # a fine-tune still queued may be distilled (the queue runs it first) ...
    ft = create_finetune_run(ws, FinetuneConfig(), dataset_path=dataset_path)
    rid = create_distill_run(ws, ft)
    with pytest.raises(ValueError, match="still queued: distil it once it is done"):
        execute_run(ws, rid)  # run out of turn (the dashboard's queue never does this)
    rid = create_distill_run(ws, ft)
    # ... and when it ends without a model, the distillation fails saying why and what to do
    _set_status(ws, ft, "failed", error="out of memory")
    with pytest.raises(ValueError, match="nothing to distil"):
        execute_run(ws, rid)
    run = get_run(ws, rid)
    assert run["status"] == "failed" and "out of memory" in run["error"] and "rerun the fine-tune" in run["error"]
    with pytest.raises(ValueError, match="without saving a model"):
        create_distill_run(ws, ft)  # now it has ended: refused at once


def test_a_finetune_runs_as_a_background_job_and_cancels(ws, dataset_path):
    from core.datasets import QADataset

    ds_id = save_dataset(ws, QADataset.load(dataset_path), name="train", role="train")
    jm = JobManager(ws)
    try:
        with pytest.raises(ValueError, match="embeddings API"):
            start_finetune(jm, ws, ds_id, embedder="openai:text-embedding-3-small")
        # batch 2: enough steps that the cancel (a file the child polls) lands before the last one
        cfg = FinetuneConfig(batch_size=2, device="cpu")
        total_steps = cfg.epochs * math.ceil(len(QADataset.load(dataset_path).queries) / 2)
        job_id, run_id = start_finetune(jm, ws, ds_id, cfg)
        deadline = time.time() + 240
        while not any(h["type"] == "step" for h in read_history(ws, run_id)) and time.time() < deadline:
            time.sleep(0.05)
        jm.cancel(job_id)
        assert jm.wait(job_id, timeout=240)
        job, run = jm.get(job_id), get_run(ws, run_id)
        assert job["status"] == "cancelled" and run["status"] == "cancelled" and run["kind"] == "finetune"
        assert job["kind"] == "train" and job["params"] == {"run_id": run_id}
        assert 1 <= run["result"]["steps"] < total_steps and has_model(ws, run_id)  # what it trained is kept
    finally:
        jm.shutdown()


# ------------------------------------------------------------------------------------------------
# the dashboard: Train offers it with its price, runs it in the background; Compare lists it
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def page_ws(tmp_path, monkeypatch, dataset_path):
    from core.datasets import QADataset
    from core.workspace import Workspace

    root = tmp_path / "ws"
    ws = Workspace(root)
    save_dataset(ws, QADataset.load(dataset_path), "tiny train", role="train")
    save_dataset(ws, QADataset.load(dataset_path), "tiny eval", role="val")
    monkeypatch.setenv("ADAPTERLAB_WORKSPACE", str(root))
    return root


def test_train_page_offers_runs_and_prices_a_full_fine_tune_and_compare_lists_it(page_ws):
    from core.workspace import Workspace
    from tests.test_pages import frame, no_exceptions, page, rerun_until_settled, texts

    at = page("3_train.py")
    at.run()
    no_exceptions(at)
    assert "re-embedding the whole corpus" in texts(at.markdown)
    assert "re-embeds the whole corpus" in at.button(key="ft_start").label  # no ingested chunks: no count
    # "You will evaluate on" starts at the saved evaluation set; not named, the queued distillation is told nothing
    assert at.selectbox(key="train_eval_ds").value is not None
    at.selectbox(key="train_eval_ds").select_index(0)
    at.number_input(key="ft_batch_size").set_value(8)
    # the saved model may read more of each chunk than the base model (using it re-embeds them anyway)
    read = at.selectbox(key="ft_read_tokens")
    assert read.options == ["256 tokens (the base model's)", "512 tokens (reads more of each chunk)"]
    read.set_value(512)
    at.text_input(key="ft_name").input("ui fine-tune")
    at.button(key="ft_start").click().run()
    no_exceptions(at)
    jobs = rerun_until_settled(at, page_ws, "train")
    assert [j["status"] for j in jobs] == ["done", "done"], jobs  # the fine-tune, then its distillation
    runs = frame(at, "run", "status", "adapter")
    assert list(runs["run"]) == ["distilled from ui fine-tune · 200 steps", "ui fine-tune"]
    assert list(runs["adapter"]) == ["linear (distilled)", "full fine-tune"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Chunks to re-embed to use it"] == "12" and metrics["Epochs done"] == "1 / 1"
    assert "re-embedding all 12 chunks" in texts(at.info)
    run_id = at.selectbox(key="train_view").value
    assert at.download_button(key=f"ft_download_{run_id}") is not None
    assert len(at.get("plotly_chart")) == 0  # a finished run's curves are built when opened
    at.session_state["train_curves_open"] = True
    at.run()
    assert len(at.get("plotly_chart")) == 1  # the loss chart

    # the distilled adapter: its steps, its KL, where it came from, the adapter downloads
    distilled = next(r for r in list_runs(Workspace(page_ws)) if r["kind"] == "distill")
    at.selectbox(key="train_view").set_value(distilled["id"]).run()
    no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Steps done"] == "200 / 200" and metrics["Chunks ranked"] == "12"
    ranked = next(m for m in at.metric if m.label == "Chunks ranked")  # the lengths the blended teacher read
    assert "at 256 and 512 tokens, its scores averaged" in ranked.proto.help
    assert "Distilled from the full fine-tune **ui fine-tune**" in texts(at.info)
    assert "Nothing told this distillation which documents you will search" in texts(at.warning)
    assert at.download_button(key=f"train_download_{distilled['id']}") is not None
    # a second distillation from the form: its settings are used
    at.number_input(key="dist_steps").set_value(7)
    at.button(key="dist_start").click().run()
    no_exceptions(at)
    rerun_until_settled(at, page_ws, "train")
    newest = list_runs(Workspace(page_ws))[0]
    assert newest["kind"] == "distill" and newest["status"] == "done" and newest["result"]["steps_done"] == 7

    at = page("4_compare.py")
    at.run()
    no_exceptions(at)
    picker = at.multiselect(key="eval_runs")
    assert picker.options[-1] == "ui fine-tune (done) · full fine-tune, reads 512 tokens (re-embeds 12 chunks)"
    ft_run = next(r for r in list_runs(Workspace(page_ws)) if r["kind"] == "finetune")
    assert ft_run["config"]["config"]["read_tokens"] == 512 and ft_run["result"]["cost"]["read_tokens"] == 512
    assert "distilled from ui fine-tune · 200 steps (done)" in picker.options

    # an API base: the page says why it cannot fine-tune, and offers no button
    from ui.state import EMBEDDER_SETTING

    Workspace(page_ws).set_setting(EMBEDDER_SETTING, "openai:text-embedding-3-small")
    at = page("3_train.py")
    at.run()
    assert "its weights are not here" in texts(at.warning)
    assert all(b.key != "ft_start" for b in at.button)


def test_train_page_recipe_auto_distils_when_the_searched_documents_are_known(page_ws):
    """The New training run form's recipe: ``auto`` trains the adapter while the documents to search are
    unknown (nothing ingested, no evaluation set) or the evaluation set named asks about the training chunks,
    and fine-tunes then distils once an evaluation set of other text is named (one click queues both; the distillation ranks the evaluation set's chunks, not its questions).
    Chosen by hand, the adapter recipe advises the other one for an evaluation set of other documents."""
    from core.datasets import QADataset, list_datasets
    from core.distill import ranked_coverage
    from core.runs import adapter_dir, get_run
    from core.workspace import Workspace
    from tests.test_pages import no_exceptions, page, rerun_until_settled, texts

    ws = Workspace(page_ws)
    other = QADataset(  # a chunk longer than the base model reads: where the distillation's gains were measured
        {"o1": "What about fleet size?"},
        {"other-1": " ".join(f"Another filing's fleet section {i}, with its {40 + i} vehicles." for i in range(30))},
        {"o1": ["other-1"]},
    )
    other_id = save_dataset(ws, other, "other filing", role="eval")
    same = next(d["id"] for d in list_datasets(ws) if d["name"] == "tiny eval")
    at = page("3_train.py")
    at.run()
    no_exceptions(at)
    assert at.radio(key="train_recipe").value == "auto"
    # "You will evaluate on" starts at the newest evaluation set, the one Compare opens with: the other filing
    assert at.selectbox(key="train_eval_ds").value == other_id
    assert "Auto: fine-tune, then distil over the documents you will search" in texts(at.caption)
    at.selectbox(key="train_eval_ds").select_index(0).run()  # "Not named"
    no_exceptions(at)
    assert "Auto: nothing says which documents you will search" in texts(at.caption)
    assert at.number_input(key="hp_epochs") is not None and all(b.key != "train_start_distil" for b in at.button)
    hint = texts(at.info)  # the saved set Auto cannot see is pointed at; the same questions' copy is not
    assert "Saved questions about other text: other filing" in hint and "tiny eval" not in hint
    # LlamaIndex's guide validates on the other company's questions: chosen as the validation set, it is pointed
    # at "You will evaluate on" instead; a validation set about the training chunks is not
    named_instead = "choose it under \u201cYou will evaluate on\u201d instead and leave validation to cross-validation"
    at.selectbox(key="train_val_ds").set_value(other_id).run()
    no_exceptions(at)
    assert "The validation set asks about other documents" in texts(at.info) and named_instead in texts(at.info)
    at.selectbox(key="train_val_ds").set_value(same).run()
    assert "The validation set asks about other documents" not in texts(at.info)
    at.selectbox(key="train_val_ds").select_index(0).run()  # set_value(None) sends no value

    # named, but about the training chunks (a copy of the training set): new questions on the same documents
    at.selectbox(key="train_eval_ds").set_value(same).run()
    assert "Auto: the evaluation set named asks about the training questions' own chunks" in texts(at.caption)
    assert at.number_input(key="hp_epochs") is not None and all(b.key != "train_start_distil" for b in at.button)
    at.selectbox(key="train_eval_ds").set_value(other_id).run()  # other text: the searched documents are known
    assert "Auto: fine-tune, then distil over the documents you will search" in texts(at.caption)
    assert "Saved questions about other text" not in texts(at.info)
    assert all(b.key != "train_start" for b in at.button)  # the adapter form is not shown
    assert "and the evaluation set's chunks (never its questions)" in texts(at.markdown)

    at.radio(key="train_recipe").set_value("adapter").run()  # by hand: other documents get the advice
    no_exceptions(at)
    assert "New documents:" in texts(at.info) and "Fine-tune, then distil" in texts(at.info)
    at.radio(key="train_recipe").set_value("distil").run()
    at.text_input(key="train_name").input("recipe run")
    at.button(key="train_start_distil").click().run()
    no_exceptions(at)
    jobs = rerun_until_settled(at, page_ws, "train")
    assert [j["status"] for j in jobs] == ["done", "done"], jobs  # the fine-tune, then its distillation
    runs = {r["kind"]: r for r in list_runs(ws)}
    assert runs["finetune"]["name"] == "recipe run · fine-tune" and runs["distill"]["name"] == "recipe run"
    assert at.selectbox(key="train_view").value == runs["finetune"]["id"]  # the run that trains first
    distilled = get_run(ws, runs["distill"]["id"])
    assert distilled["config"]["eval_dataset_id"] == other_id and distilled["result"]["n_eval_chunks"] == 1
    assert ranked_coverage(adapter_dir(ws, distilled["id"]), other.corpus.values()) == 1.0
    at.selectbox(key="train_view").set_value(distilled["id"]).run()
    no_exceptions(at)
    assert "(the 1 of the evaluation set named with it among them; never its questions)" in texts(at.info)
    assert "Nothing told this distillation" not in texts(at.warning)


def test_an_unrelated_folder_is_never_replaced(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    with pytest.raises(FinetuneError, match="not a fine-tuned model folder"):
        finetune(small_dataset(), "default", keep)
    assert (keep / "notes.txt").read_text() == "precious"
