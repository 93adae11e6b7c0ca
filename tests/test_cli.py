"""``python -m core`` as a user runs it: real subprocesses, a generated PDF, the bundled model.

The pipeline (ingest -> generate -> train -> evaluate) runs once per module in one workspace;
each test checks one aspect of it. Error paths must exit 2 with one line naming the problem.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.adapters import build_adapter, save_adapter
from core.datasets import QADataset
from tests.pdfs import corrupt_pdf_bytes, make_text_pdf, sample_report_pages

ROOT = Path(__file__).resolve().parent.parent
LYFT = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "lyft_2021_train_dataset.json"
COMMANDS = [
    "ingest",
    "generate",
    "train",
    "finetune",
    "distill",
    "evaluate",
    "import-queries",
    "embed",
    "runs",
    "documents",
    "export",
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ADAPTERLAB_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def cli(*args: str, workspace: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "core", *args]
    if workspace is not None:
        cmd += ["--workspace", str(workspace)]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


def cli_many(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Run several independent commands at once (they are mostly interpreter start-up)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "core", *c],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in commands
    ]
    out = []
    for c, p in zip(commands, procs):
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


def cli_inproc(capsys, *args: str) -> tuple[int, str, str]:
    """``core.cli.main`` in this process: the same code path for cheap checks (no interpreter
    start-up; the bundled model, when needed, is loaded once per test session)."""
    from core.cli import main

    try:
        rc = main(list(args))
    except SystemExit as exc:  # argparse: --help, usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Ingest a good and a corrupt PDF, generate offline questions, train, in one workspace."""
    d = tmp_path_factory.mktemp("cli")
    ws = d / "ws"
    good = d / "northwind_report.pdf"
    good.write_bytes(make_text_pdf(sample_report_pages(), page_numbers=True))
    bad = d / "broken.pdf"
    bad.write_bytes(corrupt_pdf_bytes())
    out = {"dir": d, "ws": ws}
    out["ingest"] = cli("ingest", str(good), str(bad), workspace=ws)
    out["generate"] = cli("generate", "--generator", "offline", "--out", str(d / "train.json"), "--json", workspace=ws)
    out["train"] = cli(
        "train",
        "--dataset",
        str(d / "train.json"),
        "--epochs",
        "2",
        "--checkpoint-every",
        "1",
        "--selection",
        "holdout",
        "--out",
        str(d / "adapter"),
        "--json",
        workspace=ws,
    )
    return out


# ------------------------------------------------------------------------------------------------
def test_help_for_every_command(capsys):
    top = _ok(cli("--help")).stdout
    assert top.startswith("usage: python -m core") and all(c in top for c in COMMANDS)
    helps = {}
    for c in COMMANDS:
        rc, out, _ = cli_inproc(capsys, c, "--help")
        assert rc == 0 and out.startswith(f"usage: python -m core {c}")
        helps[c] = out
    assert "--workspace" in helps["ingest"] and "--json" in helps["ingest"] and "--chunk-size" in helps["ingest"]
    assert "--generator" in helps["generate"] and "--out" in helps["generate"]
    for flag in ("--dataset", "--adapter", "--epochs", "--lr", "--loss", "--llamaindex-defaults", "--checkpoint-every"):
        assert flag in helps["train"]
    assert "linear" in helps["train"] and "two-layer" in helps["train"]
    for flag in ("--dataset", "--adapter", "--adapter-class", "--allow-custom-code", "--checkpoints", "--top-k"):
        assert flag in helps["evaluate"]
    rc, _, err = cli_inproc(capsys, "train")
    assert rc == 2 and "--dataset" in err  # argparse's own usage error


def test_ingest_reports_the_good_and_the_broken_file(pipeline):
    p = pipeline["ingest"]
    assert p.returncode == 1  # one file failed: a script notices, and the good file is still in (next test)
    assert p.stderr.strip().endswith(
        "1 of 2 files failed (broken.pdf); the others are ingested. Fix the failed files and ingest them again, "
        "or remove them: python -m core documents --remove NAME"
    )
    lines = p.stdout.splitlines()
    header = lines[0].split()
    assert header[:3] == ["file", "status", "pages"] and "error" in header
    good = next(line for line in lines if line.startswith("northwind_report.pdf"))
    bad = next(line for line in lines if line.startswith("broken.pdf"))
    assert good.split()[1] == "ok" and good.split()[2] == "4"
    assert bad.split()[1] == "error" and len(bad.split()) > 8  # the reason is printed


def test_documents_lists_both_files(pipeline, capsys):
    rc, out, _ = cli_inproc(capsys, "documents", "--json", "--workspace", str(pipeline["ws"]))
    assert rc == 0
    docs = json.loads(out)
    by_name = {d["filename"]: d for d in docs}
    assert by_name["northwind_report.pdf"]["status"] == "ok" and by_name["northwind_report.pdf"]["pages"] == 4
    assert by_name["northwind_report.pdf"]["chunks"] == len(QADataset.load(pipeline["dir"] / "train.json").corpus)
    assert by_name["broken.pdf"]["status"] == "error" and by_name["broken.pdf"]["error"]


def test_ingest_of_only_broken_files_fails(tmp_path, capsys):
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(corrupt_pdf_bytes())
    rc, out, _ = cli_inproc(capsys, "ingest", str(bad), "--json", "--workspace", str(tmp_path / "ws"))
    assert rc == 1
    (row,) = json.loads(out)
    assert row["file"] == "broken.pdf" and row["status"] == "error" and row["error"]
    rc, out, err = cli_inproc(capsys, "ingest", str(tmp_path / "nowhere.pdf"), "--workspace", str(tmp_path / "ws"))
    assert rc == 2 and out == "" and err.strip() == f"error: {tmp_path / 'nowhere.pdf'}: no such file"
    # the failed file stays listed, with its error, until removed; another name removes nothing
    other = tmp_path / "other.pdf"
    other.write_bytes(b"not a pdf at all")
    assert cli_inproc(capsys, "ingest", str(other), "--workspace", str(tmp_path / "ws"))[0] == 1
    rc, out, err = cli_inproc(capsys, "documents", "--remove", "x.pdf", "--workspace", str(tmp_path / "ws"))
    assert rc == 2 and "'x.pdf' is not in the workspace; documents: broken.pdf, other.pdf" in err
    rc, out, err = cli_inproc(
        capsys, "documents", "--remove", "broken.pdf", "--json", "--workspace", str(tmp_path / "ws")
    )
    assert rc == 0 and err.startswith("removed broken.pdf and its 0 chunks")
    assert [d["filename"] for d in json.loads(out)] == ["other.pdf"]
    rc, out, err = cli_inproc(capsys, "documents", "--remove", "broken.pdf", "--workspace", str(tmp_path / "ws"))
    assert rc == 2 and "not in the workspace" in err
    rc, out, err = cli_inproc(capsys, "ingest", str(tmp_path), "--workspace", str(tmp_path / "ws"))
    assert rc == 2 and err.strip() == f"error: {tmp_path}: a folder; pass its PDF files (e.g. {tmp_path / '*.pdf'})"


def test_generate_writes_llamaindex_json(pipeline):
    report = json.loads(_ok(pipeline["generate"]).stdout)
    path = pipeline["dir"] / "train.json"
    raw = json.loads(path.read_text())
    assert set(raw) == {"queries", "corpus", "relevant_docs", "mode"} and raw["mode"] == "text"
    ds = QADataset.load(path)
    assert report["dataset"] == str(path) and report["n_queries"] == len(ds.queries) >= 10
    assert all(ds.relevant_docs[q][0] in ds.corpus for q in ds.queries)
    assert report["report"]["questions_added"] == len(ds.queries)


def test_generate_with_another_offline_method(pipeline, tmp_path, capsys):
    import shutil

    from core.pseudo_queries import DEFAULT_OFFLINE_METHOD

    other = "keywords" if DEFAULT_OFFLINE_METHOD != "keywords" else "cloze"  # the pipeline generated the default
    ws = tmp_path / "ws"
    shutil.copytree(pipeline["ws"], ws)
    rc, out, err = cli_inproc(
        capsys,
        "generate",
        "--generator",
        "offline",
        "--offline-method",
        other,
        "--out",
        str(tmp_path / "other.json"),
        "--json",
        "--workspace",
        str(ws),
    )
    assert rc == 0, err
    report = json.loads(out)["report"]
    assert report["chunks_done_before"] == 0 and report["questions_added"] > 0  # its own generation key
    ds = QADataset.load(tmp_path / "other.json")
    assert len(ds.queries) > report["questions_added"]  # with the default method's questions (both offline)
    rc, _, err = cli_inproc(capsys, "generate", "--offline-method", "nope", "--out", "x.json", "--workspace", str(ws))
    assert rc == 2 and "--offline-method" in err


def test_train_writes_the_adapter_folder(pipeline):
    summary = json.loads(_ok(pipeline["train"]).stdout)
    out = pipeline["dir"] / "adapter"
    assert (out / "config.json").is_file() and (out / "pytorch_model.bin").is_file()
    ckpts = sorted((out / "checkpoints").iterdir())
    assert ckpts and all((c / "config.json").is_file() and (c / "pytorch_model.bin").is_file() for c in ckpts)
    assert json.loads((out / "config.json").read_text()) == {"in_features": 384, "out_features": 384, "bias": False}
    assert summary["run_id"].startswith("run-") and summary["best_epoch"] in (0, 1, 2)
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]


def test_runs_lists_the_training_run(pipeline, capsys):
    summary = json.loads(_ok(pipeline["train"]).stdout)
    rc, out, _ = cli_inproc(capsys, "runs", "--json", "--workspace", str(pipeline["ws"]))
    assert rc == 0
    runs = json.loads(out)
    mine = [r for r in runs if r["run"] == summary["run_id"]]
    assert len(mine) == 1 and mine[0]["status"] == "done" and mine[0]["best_epoch"] == summary["best_epoch"]


def test_runs_shows_a_cross_validated_runs_out_of_fold_gain(tmp_path, capsys):
    """A cross-validated run has no hold-out metrics: `runs` prints its out-of-fold gain instead of blanks."""
    from core.runs import _set_status, create_run
    from core.training import TrainConfig
    from core.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    data = QADataset(queries={"q1": "What?"}, corpus={"c1": "text"}, relevant_docs={"q1": ["c1"]})
    run_id = create_run(ws, TrainConfig(selection="cv"), dataset_path=str(data.save(tmp_path / "d.json")))
    _set_status(ws, run_id, "done", result={"best_epoch": 24, "selection": {"gain": 0.01234, "train": True}})
    rc, out, _ = cli_inproc(capsys, "runs", "--json", "--workspace", str(ws.root))
    assert rc == 0
    (row,) = json.loads(out)
    assert row["name"].endswith("epochs by CV") and row["best_epoch"] == 24
    assert row["val_mrr"] is None and row["cv_gain_pt"] == 1.23


def test_offline_questions_from_a_document_ingested_twice_under_other_bytes(tmp_path, capsys):
    """A re-saved copy (other bytes, the same text) made every sentence of the document 'repeated across the
    corpus', so offline generation made no question and blamed the user ("generate ... first")."""
    pdf = make_text_pdf(sample_report_pages())
    (tmp_path / "report.pdf").write_bytes(pdf)
    (tmp_path / "copy.pdf").write_bytes(pdf + b"\n% re-saved\n")
    ws = str(tmp_path / "ws")
    files = [str(tmp_path / "report.pdf"), str(tmp_path / "copy.pdf")]
    assert cli_inproc(capsys, "ingest", *files, "--chunk-size", "60", "--workspace", ws)[0] == 0
    out = tmp_path / "q.json"
    rc, _, err = cli_inproc(
        capsys, "generate", "--generator", "offline", "--documents", "report.pdf", "--out", str(out), "--workspace", ws
    )
    assert rc == 0, err
    assert len(QADataset.load(out).queries) > 0


def test_generate_with_val_out_on_one_document_splits_by_chunk(tmp_path, capsys):
    """The default split held out whole documents, so a first run on one PDF failed after generating ("needs at
    least two documents"): with one document --val-out now holds out chunks, and says so."""
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_text_pdf(sample_report_pages()))
    ws = str(tmp_path / "ws")
    assert cli_inproc(capsys, "ingest", str(pdf), "--chunk-size", "60", "--workspace", ws)[0] == 0
    train, val = tmp_path / "train.json", tmp_path / "val.json"
    rc, _, err = cli_inproc(
        capsys, "generate", "--generator", "offline", "--out", str(train), "--val-out", str(val), "--workspace", ws
    )
    assert rc == 0, err
    assert "note: one document, so --val-out holds out chunks" in err
    t, v = QADataset.load(train), QADataset.load(val)
    assert t.queries and v.queries
    assert not {c for r in t.relevant_docs.values() for c in r} & {c for r in v.relevant_docs.values() for c in r}
    # asked for by name, it is still refused with what to do
    rc, _, err = cli_inproc(
        capsys, "generate", "--generator", "offline", "--out", str(train), "--val-out", str(val), "--split-by",
        "document", "--workspace", ws,
    )  # fmt: skip
    assert rc != 0 and "split by chunk instead" in err


def test_generate_that_makes_no_question_says_why(tmp_path, capsys):
    pdf = tmp_path / "numbers.pdf"
    pdf.write_bytes(make_text_pdf(["2021 2020 2019\n1,234 5,678 9,012\n3,456 7,890 1,234"]))
    ws = str(tmp_path / "ws")
    assert cli_inproc(capsys, "ingest", str(pdf), "--workspace", ws)[0] == 0
    rc, _, err = cli_inproc(
        capsys, "generate", "--generator", "offline", "--out", str(tmp_path / "q.json"), "--workspace", ws
    )
    assert rc == 2 and "no question could be made from the 1 chosen chunk(s), so nothing was written" in err
    assert "generate or add questions first" not in err and not (tmp_path / "q.json").exists()


def test_generate_on_a_sample_of_chunks_resumes_the_same_sample(tmp_path, capsys):
    """--sample-chunks N asks about N chunks only, the same ones for the same seed (a rerun has nothing to
    do), and the dataset written still ranks among every chunk."""
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_text_pdf(sample_report_pages(), page_numbers=True))
    ws = str(tmp_path / "ws")
    assert cli_inproc(capsys, "ingest", str(pdf), "--chunk-size", "60", "--workspace", ws)[0] == 0
    gen = ["generate", "--generator", "offline", "--questions-per-chunk", "1", "--sample-chunks", "3", "--json"]
    rc, out, _ = cli_inproc(capsys, *gen, "--out", str(tmp_path / "d.json"), "--workspace", ws)
    assert rc == 0
    first = json.loads(out)
    ds = QADataset.load(tmp_path / "d.json")
    asked = {docs[0] for docs in ds.relevant_docs.values()}
    assert first["report"]["chunks_total"] == 3 and len(asked) == 3 and len(ds.corpus) > 6
    rc, out, _ = cli_inproc(capsys, *gen, "--out", str(tmp_path / "d2.json"), "--workspace", ws)
    again = json.loads(out)["report"]
    assert (again["chunks_done_before"], again["chunks_done_now"]) == (3, 0)  # the same 3 chunks: resumed
    other = QADataset.load(tmp_path / "d2.json")
    assert {docs[0] for docs in other.relevant_docs.values()} == asked
    # another seed's sample: its file holds its own chunks' questions, not the first sample's too
    rc, out, _ = cli_inproc(capsys, *gen, "--seed", "7", "--out", str(tmp_path / "d7.json"), "--workspace", ws)
    seventh = QADataset.load(tmp_path / "d7.json")
    assert rc == 0 and len({docs[0] for docs in seventh.relevant_docs.values()}) <= 3 and len(seventh.queries) <= 3
    rc, _, err = cli_inproc(
        capsys, "generate", "--sample-chunks", "0", "--out", str(tmp_path / "x.json"), "--workspace", ws
    )
    assert rc != 0 and "--sample-chunks must be at least 1" in err
    big = [a if a != "3" else "9999" for a in gen]  # a sample as large as the corpus: every chunk
    rc, out, _ = cli_inproc(capsys, *big, "--out", str(tmp_path / "d3.json"), "--workspace", ws)
    assert rc == 0 and json.loads(out)["report"]["chunks_total"] == len(ds.corpus)


def test_llm_generation_where_every_chunk_failed_writes_nothing_and_says_so(tmp_path, capsys, fake_openai):
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_text_pdf(sample_report_pages(), page_numbers=True))
    ws = str(tmp_path / "ws")
    assert cli_inproc(capsys, "ingest", str(pdf), "--workspace", ws)[0] == 0
    fake_openai.faults.extend(["garbage"] * 8)  # answers with no question in them, twice a chunk
    out = tmp_path / "q.json"
    args = ["generate", "--generator", "llm", "--base-url", fake_openai.base_url, "--model", "fake-model"]
    rc, stdout, err = cli_inproc(capsys, *args, "--sample-chunks", "2", "--out", str(out), "--workspace", ws)
    assert rc == 2 and not out.exists() and stdout == ""
    assert "error: every chunk this run tried failed (2); nothing was written. First error:" in err
    fake_openai.faults.clear()
    # the retry works; questions no user would type are counted (and kept)
    fake_openai.set_responder(lambda body: "1. What does the passage say about revenue?\n2. How did revenue change?")
    rc, stdout, _ = cli_inproc(capsys, *args, "--sample-chunks", "2", "--json", "--out", str(out), "--workspace", ws)
    result = json.loads(stdout)
    assert rc == 0 and result["report"]["chunks_done_now"] == 2 and out.exists()
    assert (
        result["unsearchable"] == 2 and result["unsearchable_examples"][0] == "What does the passage say about revenue?"
    )
    assert len(QADataset.load(out).queries) == 4


def test_llm_generation_says_which_model_answered(tmp_path, capsys, fake_openai):
    """A local server answers whatever model name it is sent: the output names the model that wrote the questions
    beside the name typed."""
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_text_pdf(sample_report_pages(), page_numbers=True))
    ws = str(tmp_path / "ws")
    assert cli_inproc(capsys, "ingest", str(pdf), "--workspace", ws)[0] == 0
    fake_openai.answer_model = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    args = ["generate", "--generator", "llm", "--base-url", fake_openai.base_url, "--model", "gpt-4o-mini"]
    rc, stdout, _ = cli_inproc(
        capsys, *args, "--sample-chunks", "2", "--out", str(tmp_path / "q.json"), "--workspace", ws
    )
    assert rc == 0
    assert "answered by SmolLM2-135M-Instruct.Q4_1.gguf (you asked for gpt-4o-mini)" in stdout
    assert "fewer questions" not in stdout  # two asked, two made


def test_llm_generation_says_when_it_made_fewer_questions_than_asked(tmp_path, capsys, fake_openai):
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_text_pdf(sample_report_pages(), page_numbers=True))
    ws = str(tmp_path / "ws")
    assert cli_inproc(capsys, "ingest", str(pdf), "--workspace", ws)[0] == 0
    fake_openai.set_responder(lambda body: "1. What did the company report about revenue in 2021?")
    args = ["generate", "--generator", "llm", "--base-url", fake_openai.base_url, "--model", "fake-model"]
    out = str(tmp_path / "q.json")
    rc, stdout, _ = cli_inproc(
        capsys, *args, "--questions-per-chunk", "3", "--sample-chunks", "2", "--out", out, "--workspace", ws
    )
    assert rc == 0
    rows = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in stdout.splitlines() if "  " in line}
    assert (
        rows["questions_asked"] == "6" and rows["questions_added"] == "2" and rows["chunks_with_fewer_questions"] == "2"
    )
    assert rows["fewer questions"] == (
        "2 of the 6 questions asked for were made: 2 of 2 chunks got fewer than 3 (the model wrote 2). They count "
        "as done with these settings."
    )


def test_llm_generation_progress_counts_the_failed_chunks(tmp_path, capsys, monkeypatch, fake_openai):
    """The bar reached '4/4' with two chunks failed and no word of them: its text counts the failures so far
    ('2 of 4 chunks done · 2 failed'); the summary after it is unchanged."""
    import dataclasses

    from core.llm import LLMSettings

    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_text_pdf(sample_report_pages(), page_numbers=True))
    ws = str(tmp_path / "ws")
    assert cli_inproc(capsys, "ingest", str(pdf), "--workspace", ws)[0] == 0
    resolved = LLMSettings.resolved
    monkeypatch.setattr(LLMSettings, "resolved", lambda self: dataclasses.replace(resolved(self), max_retries=0))
    monkeypatch.setenv("ADAPTERLAB_PROGRESS", "1")  # the bar, though stderr is no terminal here
    asked = []

    def responder(body):
        asked.append(body)
        if len(asked) in (2, 4):  # one request per chunk: no retries, one at a time
            raise RuntimeError("boom")
        return "1. What does the passage say about revenue?\n2. How did revenue change?"

    fake_openai.set_responder(responder)
    args = ["generate", "--generator", "llm", "--base-url", fake_openai.base_url, "--model", "fake-model"]
    rc, stdout, err = cli_inproc(
        capsys, *args, "--concurrency", "1", "--sample-chunks", "4", "--out", str(tmp_path / "q.json"),
        "--workspace", ws,
    )  # fmt: skip
    assert rc == 0 and len(asked) == 4
    bar = err.replace("\r", "\n")
    assert "1/4" in bar and "1 of 4 chunks done" in bar
    assert "1 of 4 chunks done · 1 failed" in bar and "2 of 4 chunks done · 1 failed" in bar
    assert "4/4" in bar and "2 of 4 chunks done · 2 failed" in bar
    assert re.search(r"failed chunks +2 \(rerun the same command to retry them\)", stdout)


def test_train_on_a_sample_validates_against_the_chunks_no_question_asks_about(tmp_path, capsys):
    """With no evaluation set named, the ingested chunks the training questions do not ask about stand in for it
    (they are the new parts of the document real queries will hit): the validation reads them. A dataset that
    asks about every chunk leaves nothing to stand in and keeps the conservative blind rule."""
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_text_pdf(sample_report_pages(), page_numbers=True))
    ws = str(tmp_path / "ws")
    assert cli_inproc(capsys, "ingest", str(pdf), "--chunk-size", "60", "--workspace", ws)[0] == 0
    gen = ["generate", "--generator", "offline", "--questions-per-chunk", "2", "--workspace", ws]
    assert cli_inproc(capsys, *gen, "--sample-chunks", "12", "--out", str(tmp_path / "s.json"))[0] == 0
    assert cli_inproc(capsys, *gen, "--sample-chunks", "9999", "--out", str(tmp_path / "all.json"))[0] == 0
    n_chunks = len(QADataset.load(tmp_path / "all.json").corpus)
    train = ["train", "--recipe", "adapter", "--json", "--workspace", ws, "--dataset"]
    rc, out, _ = cli_inproc(capsys, *train, str(tmp_path / "s.json"))
    assert rc == 0
    got = json.loads(out)
    sel = got["selection"]
    assert sel["design"] == "chunks" and sel["validation"] == "fold" and "validation_note" not in got
    stood_in = f"the {n_chunks - 12} chunks no training question asks about (no evaluation set named"
    assert stood_in in sel["validation_reason"]
    rc, out, _ = cli_inproc(capsys, *train, str(tmp_path / "all.json"))
    assert rc == 0
    got = json.loads(out)
    sel = got["selection"]
    assert sel["validation"] == "corpus" and sel["validation_reason"].startswith("no evaluation set named")
    # and says where to tell it otherwise (the sample's run, where chunks stood in, did not)
    assert "`--cv-design questions`" in got["validation_note"] and "`--eval-dataset`" in got["validation_note"]


def test_a_named_evaluation_set_spanning_two_documents_is_checked_per_document(tmp_path, capsys):
    """The run reads each document of a named evaluation set on its own (its chunks' documents found by their ids
    among the ingested chunks: the file was generated here), and says so with each one's mixing."""
    pages = sample_report_pages()
    ws = str(tmp_path / "ws")
    for name, part in (("north.pdf", pages[:2]), ("harbor.pdf", pages[2:])):
        (tmp_path / name).write_bytes(make_text_pdf(part, page_numbers=True))
        assert cli_inproc(capsys, "ingest", str(tmp_path / name), "--chunk-size", "60", "--workspace", ws)[0] == 0
    gen = ["generate", "--generator", "offline", "--questions-per-chunk", "2", "--workspace", ws]
    assert (
        cli_inproc(capsys, *gen, "--documents", "north.pdf", "--sample-chunks", "2", "--out", str(tmp_path / "t.json"))[
            0
        ]
        == 0
    )
    assert cli_inproc(capsys, *gen, "--sample-chunks", "9999", "--out", str(tmp_path / "all.json"))[0] == 0
    rc, out, _ = cli_inproc(
        capsys, "train", "--recipe", "adapter", "--json", "--workspace", ws, "--dataset", str(tmp_path / "t.json"), "--eval-dataset",
        str(tmp_path / "all.json"),
    )  # fmt: skip
    assert rc == 0
    reason = json.loads(out)["selection"]["validation_reason"]
    assert reason.startswith("the evaluation set's chunks (per document, the lowest decides: "), reason
    assert "harbor.pdf " in reason and "north.pdf " in reason


def test_sample_chunk_ids_is_seeded_ordered_and_bounded():
    from core.questions import sample_chunk_ids

    ids = [f"c{i:02d}" for i in range(40)]
    a = sample_chunk_ids(ids, 10, seed=1)
    assert a == sample_chunk_ids(ids, 10, seed=1) and a == sorted(a) and len(set(a)) == 10
    assert a != sample_chunk_ids(ids, 10, seed=2)
    assert sample_chunk_ids(ids, None) == ids and sample_chunk_ids(ids, 40) == ids and sample_chunk_ids(ids, 99) == ids
    with pytest.raises(ValueError, match="positive"):
        sample_chunk_ids(ids, -1)


def test_distill_writes_an_adapter_the_other_commands_load(pipeline, capsys):
    """`distill` with a teacher that ranks as the base (the bundled model itself) writes a LlamaIndex adapter
    folder that records its teacher; a run id that is not a fine-tune is refused with what to do."""
    from core.adapters import load_adapter

    ws, d = str(pipeline["ws"]), pipeline["dir"]
    out = d / "distilled"
    rc, stdout, err = cli_inproc(
        capsys, "distill", "--teacher", "default", "--dataset", str(d / "train.json"), "--steps", "5",
        "--out", str(out), "--json", "--workspace", ws,
    )  # fmt: skip
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["steps_done"] == 5 and summary["n_chunks"] > 1 and summary["n_pseudo_queries"] > 0
    assert summary["searched"] is None  # the questions cover the one PDF and no evaluation set was named
    meta = json.loads((out / "adapterlab.json").read_text())
    assert meta["distilled_from"] and meta["adapter_cls"] == "linear" and meta["run_id"] == summary["run_id"]
    assert load_adapter(out) is not None
    # a run of the workspace too (kind distill): listed by `runs`, and `evaluate --run` compares it
    runs = json.loads(_ok(cli("runs", "--json", workspace=ws)).stdout)
    assert next(r for r in runs if r["run"] == summary["run_id"])["kind"] == "distill"
    rc, stdout, err = cli_inproc(
        capsys, "evaluate", "--dataset", str(d / "train.json"), "--run", summary["run_id"], "--json", "--workspace", ws
    )  # fmt: skip
    assert rc == 0, err
    assert len(json.loads(stdout)) == 2  # the base and the distilled adapter
    train_run = json.loads(_ok(pipeline["train"]).stdout)["run_id"]
    rc, _, err = cli_inproc(
        capsys, "distill", "--teacher", train_run, "--dataset", str(d / "train.json"), "--out", str(d / "x"),
        "--workspace", ws,
    )  # fmt: skip
    assert rc != 0 and "is not a finished full fine-tune" in err


def _other_documents(tmp_path, sentences: int = 30):
    from core.datasets import QADataset

    # by default chunks longer than the base model reads (256 tokens), as a LlamaIndex file's often are: where
    # the distillation's measured gains came from (auto trains the adapter for chunks read whole)
    fleet = " ".join(f"In market {i} the other company's fleet grew to {900 + i} vehicles." for i in range(sentences))
    audit = " ".join(f"Its auditor for region {i} is a regional firm with {10 + i} partners." for i in range(sentences))
    return QADataset(
        {"o1": "How large was the fleet?", "o2": "Who audits the other company?"},
        {"x1": fleet, "x2": audit},
        {"o1": ["x1"], "o2": ["x2"]},
    ).save(tmp_path / f"other-{sentences}.json")


def test_train_points_to_fine_tune_then_distil_when_the_evaluation_set_is_other_documents(pipeline, capsys, tmp_path):
    ws, train = str(pipeline["ws"]), str(pipeline["dir"] / "train.json")
    other, short = _other_documents(tmp_path), _other_documents(tmp_path, sentences=3)
    hint = "the same command with `--recipe distil`"
    # other documents; the same chunks; other documents the base model reads whole, where the distillation
    # gained no more than the adapter (auto's own choice there is the adapter, below)
    for eval_set, expected in ((str(other), True), (train, False), (str(short), False)):
        rc, out, err = cli_inproc(
            capsys, "train", "--dataset", train, "--eval-dataset", eval_set, "--epochs", "1", "--workspace", ws
        )
        assert rc == 0, err
        assert (hint in out) is expected, out
        assert "recipe: adapter (adapter settings given (--epochs))" in out
    rc, out, err = cli_inproc(capsys, "train", "--dataset", train, "--eval-dataset", str(short), "--workspace", ws)
    assert rc == 0, err
    assert "recipe: adapter (" in out and "reads whole" in out and hint not in out, out


def test_a_validation_set_about_other_documents_points_to_naming_it_as_the_evaluation_set(pipeline, capsys, tmp_path):
    """LlamaIndex's guide validates on the other company's questions: ``--val-dataset other.json`` picks the
    adapter's epochs there, and the note says what naming it as the evaluation set would do instead; not for a
    validation set about the training chunks, nor when the adapter recipe was asked for."""
    ws, train = str(pipeline["ws"]), str(pipeline["dir"] / "train.json")
    other = str(_other_documents(tmp_path))
    cases = ((other, "auto", True), (train, "auto", False), (other, "adapter", False))
    for val, recipe, expected in cases:
        rc, out, err = cli_inproc(
            capsys, "train", "--dataset", train, "--val-dataset", val, "--recipe", recipe, "--epochs", "1",
            "--json", "--workspace", ws,
        )  # fmt: skip
        assert rc == 0, err
        note = json.loads(out).get("validation_note", "")
        assert bool(note) is expected, (val, recipe, note)
    rc, out, err = cli_inproc(
        capsys, "train", "--dataset", train, "--val-dataset", other, "--epochs", "1", "--json", "--workspace", ws
    )  # fmt: skip
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["validation_note"].startswith("the validation set asks about other documents than the training")
    assert "(--eval-dataset FILE, no --val-dataset): Auto then fine-tunes and distils for them" in out
    rc, out, err = cli_inproc(
        capsys, "train", "--dataset", train, "--val-dataset", other, "--epochs", "1", "--workspace", ws
    )  # fmt: skip
    assert rc == 0, err
    assert "note: the validation set asks about other documents than the training questions" in out
    # what the note says of evaluating on that same set: evaluate marks the gain as picked there
    rc, out, err = cli_inproc(capsys, "evaluate", "--dataset", other, "--run", summary["run_id"], "--workspace", ws)
    assert rc == 0, err
    assert "chose its best epoch on this same evaluation set" in out, out


def test_evaluate_prints_the_distil_command_for_an_adapter_on_other_documents(pipeline, capsys, tmp_path):
    """An adapter trained on one set's questions, evaluated on other documents: besides the caveat, the exact
    command of the recipe that carried over there (both files known); not on its own documents."""
    import shlex

    ws, train = str(pipeline["ws"]), str(pipeline["dir"] / "train.json")
    other = str(_other_documents(tmp_path))
    rc, out, err = cli_inproc(capsys, "train", "--dataset", train, "--epochs", "1", "--json", "--workspace", ws)
    assert rc == 0, err
    run_id = json.loads(out)["run_id"]
    rc, out, err = cli_inproc(capsys, "evaluate", "--dataset", other, "--run", run_id, "--workspace", ws)
    assert rc == 0, err
    assert "INFO: " in out and "the adapter was trained on questions about other text" in out
    command = f"NEXT: python -m core train --dataset {shlex.quote(train)} --eval-dataset {shlex.quote(other)}"
    assert command + " --recipe distil --out DIR" in out, out
    rc, out, err = cli_inproc(capsys, "evaluate", "--dataset", train, "--run", run_id, "--workspace", ws)
    assert rc == 0 and "NEXT:" not in out, out


def test_evaluate_on_other_chunks_of_the_training_document_quotes_that_case(pipeline, capsys, tmp_path):
    """A validation split by chunk of the one ingested document: the caveat had quoted another company's filing
    (and told of the distil recipe for it) beside a gain on new sections of the training filing itself."""
    ws = str(pipeline["ws"])
    train, val = tmp_path / "t.json", tmp_path / "v.json"
    gen = ["generate", "--generator", "offline", "--out", str(train), "--val-out", str(val), "--split-by", "chunk"]
    assert cli_inproc(capsys, *gen, "--workspace", ws)[0] == 0
    rc, out, err = cli_inproc(capsys, "train", "--dataset", str(train), "--epochs", "1", "--json", "--workspace", ws)
    assert rc == 0, err
    rc, out, err = cli_inproc(capsys, "evaluate", "--dataset", str(val), "--run", json.loads(out)["run_id"],
                              "--workspace", ws)  # fmt: skip
    assert rc == 0, err
    assert (
        "this set asks about other chunks of the documents its training questions came from (northwind_report.pdf"
        in out
    ), out
    assert "another company's filing" not in out and "NEXT:" not in out, out


def test_the_distil_command_keeps_the_adapters_query_and_passage_prefixes(pipeline, capsys, tmp_path):
    """A prefixed base (E5, BGE): the printed distil command carries the adapter run's prefixes, as Compare's
    button does, so the fine-tune and the distilled adapter see the texts the adapter saw."""
    import shlex

    ws, train = str(pipeline["ws"]), str(pipeline["dir"] / "train.json")
    other = str(_other_documents(tmp_path))
    prefixes = ["--query-prefix", "query: ", "--passage-prefix", "passage: "]
    rc, out, err = cli_inproc(
        capsys, "train", "--dataset", train, "--epochs", "1", "--json", "--workspace", ws, *prefixes
    )
    assert rc == 0, err
    run_id = json.loads(out)["run_id"]
    rc, out, err = cli_inproc(capsys, "evaluate", "--dataset", other, "--run", run_id, "--workspace", ws, *prefixes)
    assert rc == 0, err
    assert f"--recipe distil {shlex.join(prefixes)} --out DIR" in out, out


def _n_pairs_and_chunks(train: str, other: str) -> tuple[int, int]:
    """(training questions with a chunk, distinct chunks of both files): a distillation in a workspace with no
    documents ranks the training set's and the evaluation set's."""
    from core.datasets import QADataset

    a, b = QADataset.load(train), QADataset.load(other)
    return sum(1 for q in a.queries if a.relevant_docs.get(q)), len({*a.corpus.values(), *b.corpus.values()})


def test_train_recipe_auto_distils_only_when_the_searched_documents_are_known(pipeline, capsys, tmp_path):
    """``auto``: the adapter in a workspace with no documents and no evaluation set (a distilled adapter is
    fitted to the documents it ranks), nor for an evaluation set about the training chunks; fine-tune, then
    distil when an evaluation set of other text is named, its chunks ranked (and recorded); refusals for settings the distil recipe would ignore and for an API base."""
    from argparse import Namespace

    from core.cli import _recipe
    from core.distill import ranked_coverage
    from core.workspace import Workspace

    train, other = str(pipeline["dir"] / "train.json"), str(_other_documents(tmp_path))
    empty = str(tmp_path / "empty_ws")
    # no documents, and then the pipeline's: its one PDF, which the questions are about
    for ws in (empty, str(pipeline["ws"])):
        rc, out, err = cli_inproc(capsys, "train", "--dataset", train, "--json", "--workspace", ws)
        assert rc == 0, err
        summary = json.loads(out)
        # the pipeline's questions are offline pseudo-queries (this workspace generated them, from the chunks it
        # will search): what each recipe carried over to real queries there, and the CLI's way to the other one
        blind = "nothing says which documents you will search"
        offline = "100% of the training questions are offline pseudo-queries, made from the chunks you will search"
        assert summary["recipe"] == "adapter" and (blind if ws == empty else offline) in summary["reason"]
        caveat = summary.get("offline_caveat", "")
        assert (ws == empty) == (caveat == ""), caveat
        assert ws == empty or (
            "All of these training questions are offline pseudo-queries" in caveat
            and "(`train --recipe distil`)" in caveat
        )
        # asked for by hand, the distil recipe runs, and its reason is auto's measured one for offline questions,
        # not the blind-distillation warning
        by_hand = Namespace(recipe="distil", dataset=train, eval_dataset=None, embedder="default")
        recipe, why = _recipe(by_hand, Workspace(ws))
        assert recipe == "distil" and why.startswith(
            "--recipe distil; nothing says"
            if ws == empty
            else f"--recipe distil; auto would train the adapter: {offline}"
        ), why
    # an evaluation set named about the training chunks (here the training file itself): new questions on the
    # same documents, where the question-trained adapter gained more than the distillation (seconds, not minutes)
    rc, out, err = cli_inproc(
        capsys, "train", "--dataset", train, "--eval-dataset", train, "--json", "--workspace", empty
    )  # fmt: skip
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["recipe"] == "adapter" and "asks about the training questions' own chunks" in summary["reason"]

    out_dir = tmp_path / "distilled"
    # in a child process, like a user's command (this process's memory stays as the PDF tests expect it)
    done = _ok(cli("train", "--dataset", train, "--eval-dataset", other, "--out", str(out_dir), workspace=empty))
    out = done.stdout
    assert "recipe: distil (fine-tune, then distil over the documents you will search" in out
    # before it starts (on stderr, with the progress), what it will cost: no fine-tune has run here yet, so
    # steps, not seconds
    n_train, n_ranked = _n_pairs_and_chunks(train, other)
    steps = -(-n_train // 32)
    expect = (
        f"expect: a fine-tune of {steps} step{'s' * (steps != 1)} of 32 questions (several seconds each on a CPU), "
    )
    assert f"{expect}then a distillation ranking {n_ranked} chunks\n" in done.stderr, done.stderr
    runs = {r["kind"]: r for r in json.loads(_ok(cli("runs", "--json", workspace=empty)).stdout)}
    assert runs["finetune"]["status"] == runs["distill"]["status"] == "done"
    assert runs["distill"]["run"] in out and (out_dir / "config.json").is_file()
    # the next time, at the pace of the runs this workspace has finished
    from core.cli import _distil_expectation
    from core.distill import DistillConfig
    from core.finetune import FinetuneConfig

    line = _distil_expectation(
        Namespace(dataset=train, eval_dataset=other, embedder="default"), Workspace(empty), FinetuneConfig(),
        DistillConfig(),
    )  # fmt: skip
    assert re.fullmatch(
        rf"expect: a fine-tune of \d+ steps? of 32 questions \(about [^)]+\), then a distillation ranking {n_ranked} "
        r"chunks \(about [^)]+\), at this machine's pace in the fine-tune \u201c[^\u201d]+\u201d: \d+ questions in .+",
        line,
    ), line
    from core.datasets import QADataset

    # the evaluation set's chunks were ranked (never its questions); the training set's too
    assert ranked_coverage(out_dir, QADataset.load(other).corpus.values()) == 1.0
    assert ranked_coverage(out_dir, QADataset.load(train).corpus.values()) == 1.0

    rc, _, err = cli_inproc(
        capsys, "train", "--dataset", train, "--recipe", "distil", "--epochs", "3", "--workspace", empty
    )  # fmt: skip
    assert rc != 0 and "--epochs" in err and "--recipe distil does not read them" in err
    rc, _, err = cli_inproc(
        capsys, "train", "--dataset", train, "--recipe", "distil", "--embedder", "openai:text-embedding-3-small",
        "--workspace", empty,
    )  # fmt: skip
    assert rc != 0 and "cannot be fine-tuned" in err


def test_evaluate_prints_base_and_adapter_rows(pipeline):
    ds = str(pipeline["dir"] / "train.json")
    adapter = str(pipeline["dir"] / "adapter")
    table, as_json = cli_many(
        ["evaluate", "--dataset", ds, "--adapter", adapter, "--workspace", str(pipeline["ws"])],
        [
            "evaluate",
            "--dataset",
            ds,
            "--adapter",
            adapter,
            "--checkpoints",
            "--save",
            "--json",
            "--workspace",
            str(pipeline["ws"]),
        ],
    )
    lines = _ok(table).stdout.splitlines()
    assert lines[0].split()[:4] == ["system", "queries", "hit@5", "mrr@5"]
    assert lines[2].split()[:2] == ["base", "(all-MiniLM-L6-v2)"] and lines[3].split()[0] == "adapter"
    n = len(QADataset.load(ds).queries)
    assert lines[2].split()[2] == lines[3].split()[1] == str(n)

    rows = json.loads(_ok(as_json).stdout)
    systems = [r["system"] for r in rows]
    assert systems[:2] == ["base (all-MiniLM-L6-v2)", "adapter"] and any(
        s.startswith("adapter @ step ") for s in systems
    )
    assert rows[1]["id"] == str(pipeline["dir"] / "adapter")  # names for people, ids beside them
    assert "Δ mrr@5" not in rows[0] and "Δ mrr@5" in rows[1]
    assert 0 <= rows[0]["hit@5"] <= 1 and rows[0]["queries"] == n


def test_evaluate_on_the_training_set_warns_and_reports(pipeline, tmp_path, capsys):
    ws, ds = str(pipeline["ws"]), str(pipeline["dir"] / "train.json")
    run_id = json.loads(_ok(pipeline["train"]).stdout)["run_id"]
    report = tmp_path / "report.html"
    rc, out, err = cli_inproc(
        capsys, "evaluate", "--dataset", ds, "--run", run_id, "--report", str(report), "--workspace", ws
    )
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[3].split()[0] != run_id and "ERROR:" in out and "do not measure generalisation" in out
    page = report.read_text(encoding="utf-8")
    assert "caveat error" in page and run_id in page.split("<h2>Appendix</h2>")[0]  # the id: in the provenance table
    assert "offline pseudo-queries" in page and "carry over to real queries" in page
    # --json: stdout is the rows alone, the caveats go to stderr; --save says where the comparison went
    rc, out, err = cli_inproc(capsys, "evaluate", "--dataset", ds, "--run", run_id, "--json", "--workspace", ws)
    assert rc == 0 and isinstance(json.loads(out), list)
    assert err.startswith("ERROR: ") and "do not measure generalisation" in err
    rc, out, _ = cli_inproc(capsys, "evaluate", "--dataset", ds, "--run", run_id, "--save", "--workspace", ws)
    assert rc == 0 and "comparison saved in the workspace as 'train.json'" in out
    # every question leaked: excluding them leaves nothing, said in one line
    rc, _, err = cli_inproc(capsys, "evaluate", "--dataset", ds, "--run", run_id, "--exclude-leaked", "--workspace", ws)
    assert rc == 2 and "no question to evaluate on" in err


def test_import_real_queries_then_evaluate_without_leaked_ones(pipeline, tmp_path, capsys):
    ws = str(pipeline["ws"])
    train = QADataset.load(pipeline["dir"] / "train.json")
    qids = list(train.queries)
    rows = ["query,relevant_text"]
    for q in qids[:2]:  # two questions copied from the training set
        rows.append(f'"{train.queries[q]}","{train.corpus[train.relevant_docs[q][0]][:60]}"')
    for i, text in enumerate(list(train.corpus.values())[:4]):
        rows.append(f'"What does section {i} of the report say?","{text[20:90]}"')
    rows.append('"Where is the moon?","a sentence that is in no document at all"')
    csv_path = tmp_path / "real.csv"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out_json = tmp_path / "real_eval.json"
    rc, out, err = cli_inproc(
        capsys,
        "import-queries",
        str(csv_path),
        "--out",
        str(out_json),
        "--save",
        "real queries",
        "--no-embedding",
        "--json",
        "--workspace",
        ws,
    )
    assert rc == 0, err
    res = json.loads(out)
    assert res["queries"] == 6 and res["summary"].startswith("6 of 7 rows matched")
    assert [u["row"] for u in res["unmatched"]] == [8] and res["dataset_id"].startswith("ds-")
    rc, out, err = cli_inproc(
        capsys,
        "evaluate",
        "--dataset",
        str(out_json),
        "--adapter",
        str(pipeline["dir"] / "adapter"),
        "--exclude-leaked",
        "--report",
        str(tmp_path / "r.html"),
        "--json",
        "--workspace",
        ws,
    )
    assert rc == 0, err
    rows = json.loads(out)
    assert rows[0]["queries"] == 4  # the two copied questions are left out
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "2 leaked question(s) of 6" in page and "6 imported real queries" in page
    assert "real_eval.json (without leaked questions): 6 questions (4 measured)" in page  # told apart from the full set


def test_malformed_dataset_exits_2_with_one_line(pipeline, tmp_path, capsys):
    broken = tmp_path / "broken_dataset.json"
    broken.write_text('{"queries": {"q1": "what?"}, "corpus": ')
    p = cli("train", "--dataset", str(broken), workspace=pipeline["ws"])
    assert p.returncode == 2, p
    assert p.stdout == "" and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken_dataset.json" in lines[0]
    assert "not valid JSON" in lines[0]

    wrong = tmp_path / "wrong_shape.json"
    wrong.write_text(
        json.dumps({"queries": {"q1": "what?"}, "corpus": {"n1": "text"}, "relevant_docs": {"q1": ["n9"]}})
    )
    cases = [
        (["evaluate", "--dataset", str(broken)], "broken_dataset.json", "not valid JSON"),
        (["train", "--dataset", str(wrong)], "wrong_shape.json", "not in the corpus"),
        (["evaluate", "--dataset", str(wrong)], "wrong_shape.json", "not in the corpus"),
        (["train", "--dataset", str(tmp_path / "absent.json")], "absent.json", "no such"),
    ]
    for args, name, why in cases:
        rc, out, err = cli_inproc(capsys, *args, "--workspace", str(pipeline["ws"]))
        lines = err.strip().splitlines()
        assert rc == 2 and out == "" and len(lines) == 1, (args, err)
        assert lines[0].startswith("error: ") and name in lines[0] and why in lines[0]


def test_adapter_dimension_mismatch_exits_2(pipeline, tmp_path):
    small = save_adapter(build_adapter("linear", 64), tmp_path / "adapter64")
    p = cli(
        "evaluate", "--dataset", str(pipeline["dir"] / "train.json"), "--adapter", str(small), workspace=pipeline["ws"]
    )
    assert p.returncode == 2, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "expects 64-dimensional embeddings" in lines[0] and "384" in lines[0]


def test_bad_training_settings_exit_2(pipeline, capsys):
    ds, ws = str(pipeline["dir"] / "train.json"), str(pipeline["ws"])
    rc, _, err = cli_inproc(capsys, "train", "--dataset", ds, "--lr", "0", "--workspace", str(pipeline["ws"]))
    assert rc == 2 and err.strip() == "error: lr must be > 0"
    rc, _, err = cli_inproc(
        capsys, "train", "--dataset", ds, "--adapter", "nosuch", "--epochs", "1", "--workspace", str(pipeline["ws"])
    )
    assert rc == 2 and "unknown adapter 'nosuch'" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli_inproc(capsys, "train", "--dataset", ds, "--adapter-kwargs", "{rank:16}", "--workspace", ws)
    assert rc == 2 and err.startswith("error: --adapter-kwargs is not JSON")
    # a layer size no adapter can have: one line before a run is created (it was a traceback and a failed run)
    from core.workspace import Workspace

    n_runs = len(Workspace(ws).query("SELECT id FROM runs"))
    for flags in (["--adapter", "two-layer", "--hidden-features", "0"], ["--adapter-kwargs", '{"rank": -3}']):
        rc, _, err = cli_inproc(capsys, "train", "--dataset", ds, *flags, "--workspace", ws)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "must be a whole number from 1" in err, err
    assert len(Workspace(ws).query("SELECT id FROM runs")) == n_runs
    # a usage error: two lines, not under the whole usage block
    rc, _, err = cli_inproc(capsys, "train", "--dataset", ds, "--recipe", "fast", "--workspace", ws)
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 2 and lines[1] == "(see `python -m core train --help`)"
    assert lines[0].startswith("python -m core train: error: argument --recipe: invalid choice: 'fast'")
    # `--run $RID` with RID empty: it had evaluated the base model alone and said nothing
    for flag in ("--run", "--adapter", "--api-embedder"):
        rc, _, err = cli_inproc(capsys, "evaluate", "--dataset", ds, flag, "--workspace", ws)
        assert rc == 2 and err.startswith(f"error: {flag} was given without a value"), err


def test_unusable_devices_and_paths_are_one_line_errors_before_any_work(pipeline, tmp_path, capsys):
    from core.runs import list_runs
    from core.workspace import Workspace

    ds, ws = str(pipeline["dir"] / "train.json"), str(pipeline["ws"])
    runs_before = len(list_runs(Workspace(ws)))
    a_file = tmp_path / "afile"
    a_file.write_text("keep me")
    cases = [
        (["train", "--dataset", ds, "--device", "gpu"], "device 'gpu' is not a device torch knows"),
        (["train", "--dataset", ds, "--out", str(a_file)], "a file is in the way"),
        (["finetune", "--dataset", ds, "--out", str(a_file)], "a file is in the way"),
        (["evaluate", "--dataset", ds, "--report", str(tmp_path)], "that is a folder; give a file name"),
        (["generate", "--generator", "offline", "--out", str(tmp_path)], "that is a folder; give a file name"),
        (
            ["generate", "--generator", "offline", "--out", str(a_file), "--val-out", str(a_file)],
            "--out and --val-out are the same file",
        ),
        (["evaluate", "--dataset", ds, "--train-dataset", str(tmp_path / "typo.json")], "typo.json: no such file"),
        (["ingest", str(a_file), "--max-mb", "nan"], "--max-mb must be a positive number of megabytes, got nan"),
        (["ingest", str(a_file), "--max-mb", "0"], "--max-mb must be a positive number of megabytes, got 0"),
    ]
    if not torch.cuda.is_available():
        cases.append((["train", "--dataset", ds, "--device", "cuda"], "not available on this machine: use auto"))
    for args, why in cases:
        rc, out, err = cli_inproc(capsys, *args, "--workspace", ws)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and why in lines[0] and "Traceback" not in err, (args, err)
    assert a_file.read_text() == "keep me"
    assert len(list_runs(Workspace(ws))) == runs_before  # refused before a run was recorded


def test_llm_generation_without_a_key_for_openai_stops_before_the_estimate(pipeline, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    out = tmp_path / "q.json"
    rc, stdout, err = cli_inproc(
        capsys, "generate", "--generator", "llm", "--out", str(out), "--workspace", str(pipeline["ws"])
    )
    assert rc == 2 and stdout == "" and not out.exists()
    assert err.strip().splitlines() == [
        "error: no API key for OpenAI: set OPENAI_API_KEY, or give --base-url for an OpenAI-compatible server "
        "(a local one may need no key); --generator offline needs neither"
    ]


def test_a_finished_run_whose_out_copy_fails_stays_done_and_says_how_to_copy_it(pipeline, tmp_path):
    from core.runs import create_run, execute_run, get_run, has_adapter
    from core.train_config import TrainConfig
    from core.workspace import Workspace

    ws = Workspace(pipeline["ws"])
    run_id = create_run(ws, TrainConfig(epochs=1, selection="none"), dataset_path=str(pipeline["dir"] / "train.json"))
    blocked = tmp_path / "afile"
    blocked.write_text("")
    with pytest.raises(OSError, match=rf"run {run_id} finished .* `python -m core export --run {run_id}"):
        execute_run(ws, run_id, out_dir=blocked)
    assert get_run(ws, run_id)["status"] == "done" and has_adapter(ws, run_id)


def test_train_out_replaces_an_earlier_adapter_folder_whole_and_refuses_a_foreign_one(pipeline, tmp_path, capsys):
    """Another run's checkpoints stayed in --out beside the new adapter, and `evaluate --checkpoints` then read
    them as this adapter's; a folder of the user's own files is refused before any work, and keeps them."""
    ds, ws = str(pipeline["dir"] / "train.json"), str(pipeline["ws"])
    out = tmp_path / "adapter"
    flags = ["train", "--dataset", ds, "--epochs", "1", "--selection", "none", "--workspace", ws, "--out", str(out)]
    assert cli_inproc(capsys, *flags)[0] == 0
    (out / "checkpoints" / "step_5000").mkdir(parents=True)  # as another run's would be
    assert cli_inproc(capsys, *flags)[0] == 0
    assert (out / "adapterlab.json").is_file() and not (out / "checkpoints" / "step_5000").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    rc, _, err = cli_inproc(capsys, *flags[:-1], str(mine))
    assert rc == 2 and "is not empty and AdapterLab did not write it: give a new folder" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_evaluate_measures_a_run_on_the_base_model_and_prefix_it_was_trained_on(pipeline, capsys):
    """A run trained with a query prefix was scored on vectors without it (MRR 0.720 where its export gave
    0.742): with no base flag the run's own base is used, and said; a contradicting flag is refused."""
    ds, ws = str(pipeline["dir"] / "train.json"), str(pipeline["ws"])
    rc, out, _ = cli_inproc(
        capsys, "train", "--dataset", ds, "--epochs", "1", "--selection", "none", "--query-prefix", "query: ",
        "--json", "--workspace", ws,
    )  # fmt: skip
    run_id = json.loads(out)["run_id"]
    rc, plain, err = cli_inproc(capsys, "evaluate", "--dataset", ds, "--run", run_id, "--json", "--workspace", ws)
    assert (
        rc == 0 and "evaluating on the base model the run was trained on" in err and "--query-prefix 'query: '" in err
    )
    rc, flagged, _ = cli_inproc(
        capsys, "evaluate", "--dataset", ds, "--run", run_id, "--query-prefix", "query: ", "--json", "--workspace", ws
    )
    assert rc == 0 and json.loads(plain) == json.loads(flagged)
    rc, _, err = cli_inproc(
        capsys, "evaluate", "--dataset", ds, "--run", run_id, "--query-prefix", "q: ", "--workspace", ws
    )
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"run {run_id} was trained on another base model or prefix" in err and "--query-prefix 'query: '" in err
    assert "than this evaluation's (--embedder default --query-prefix 'q: ')" in err  # its own, not the run's
    # --api-embedder keeps the base the flags name: said, where the message had named the run's base as this one's
    rc, _, err = cli_inproc(
        capsys, "evaluate", "--dataset", ds, "--run", run_id, "--api-embedder", "openai:x", "--workspace", ws
    )
    assert rc == 2 and "than this evaluation's (--embedder default)" in err
    assert "with --adapter or --api-embedder the base is not switched" in err


def test_evaluate_says_when_a_run_is_measured_on_another_backend_of_its_model(pipeline, capsys):
    """A run trained on the ONNX backend was evaluated on the torch one without a word. With no --embedder it is
    measured on its own backend, as on its own model and prefixes (and said); a backend named outright is the
    user's choice (the same model: near-identical vectors), and one stderr line says which base it ran on and
    that the run was trained on the other."""
    ds, ws = str(pipeline["dir"] / "train.json"), str(pipeline["ws"])
    rc, out, _ = cli_inproc(
        capsys, "train", "--dataset", ds, "--epochs", "1", "--selection", "none", "--embedder", "default@onnx-int8",
        "--json", "--workspace", ws,
    )  # fmt: skip
    assert rc == 0
    run_id = json.loads(out)["run_id"]
    rc, plain, err = cli_inproc(capsys, "evaluate", "--dataset", ds, "--run", run_id, "--json", "--workspace", ws)
    assert rc == 0 and "evaluating on the base model the run was trained on" in err
    assert "ONNX Runtime int8" in err and "--embedder default@onnx-int8" in err
    rc, named, _ = cli_inproc(
        capsys, "evaluate", "--dataset", ds, "--run", run_id, "--embedder", "default@onnx-int8", "--json",
        "--workspace", ws,
    )  # fmt: skip
    assert rc == 0 and json.loads(plain) == json.loads(named)
    rc, torch_rows, err = cli_inproc(
        capsys, "evaluate", "--dataset", ds, "--run", run_id, "--embedder", "default", "--json", "--workspace", ws
    )
    lines = [line for line in err.splitlines() if f"run {run_id} was trained on" in line]  # caveats: stderr too
    assert rc == 0 and len(lines) == 1, err
    assert "PyTorch" in lines[0] and f"run {run_id} was trained on" in lines[0] and "ONNX Runtime int8" in lines[0]
    assert "--embedder default@onnx-int8" in lines[0]
    assert [r["id"] for r in json.loads(torch_rows)] == ["default", run_id]


def test_a_cli_run_cancelled_from_elsewhere_says_so_and_exits_1(pipeline, tmp_path, capsys):
    """The Train page's Cancel on a CLI run: the command printed a plain success and exited 0."""
    import shutil
    import threading
    import time

    from core.runs import list_runs, request_cancel
    from core.workspace import Workspace

    ws = tmp_path / "ws"
    shutil.copytree(pipeline["ws"], ws)
    before = {r["id"] for r in list_runs(Workspace(ws))}

    def cancel_when_running() -> None:
        for _ in range(600):
            running = [r for r in list_runs(Workspace(ws)) if r["id"] not in before and r["status"] == "running"]
            if running:
                time.sleep(0.5)
                request_cancel(Workspace(ws), running[0]["id"])
                return
            time.sleep(0.05)

    t = threading.Thread(target=cancel_when_running)
    t.start()
    rc, out, err = cli_inproc(
        capsys, "train", "--dataset", str(pipeline["dir"] / "train.json"), "--epochs", "100000", "--selection",
        "none", "--out", str(tmp_path / "a"), "--workspace", str(ws),
    )  # fmt: skip
    t.join()
    assert rc == 1 and "was cancelled before it finished: " in err and "its best state before the cancel" in err


def test_evaluate_a_run_that_saved_only_checkpoints(pipeline, tmp_path, capsys):
    """An interrupted run has checkpoints but no final adapter: --checkpoints evaluates them."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(pipeline["ws"], ws)
    run_id = json.loads(_ok(pipeline["train"]).stdout)["run_id"]
    final = ws / "runs" / run_id / "adapter"
    for name in ("config.json", "pytorch_model.bin", "adapterlab.json"):
        (final / name).unlink()
    ds = str(pipeline["dir"] / "train.json")
    rc, out, err = cli_inproc(
        capsys, "evaluate", "--dataset", ds, "--run", run_id, "--checkpoints", "--json", "--workspace", str(ws)
    )
    assert rc == 0, err
    systems = [r["system"] for r in json.loads(out)]
    # systems are named (main's naming): base, then only the run's checkpoints ("<run name> @ step N")
    assert systems[0] == "base (all-MiniLM-L6-v2)" and len(systems) > 1
    assert all(" @ step " in s for s in systems[1:])
    assert "saved no final adapter" in err
    rc, out, err = cli_inproc(capsys, "evaluate", "--dataset", ds, "--run", run_id, "--workspace", str(ws))
    assert rc == 2 and "saved no final adapter" in err and "--checkpoints" in err


def test_a_shared_adapter_folder_cannot_run_code(tmp_path):
    """The audit's attack, as a user would meet it: `python -m core evaluate --adapter downloaded_adapter`
    run next to a folder whose adapterlab.json names its own payload.py."""
    from tests.test_adapters import malicious_folder

    folder, marker = malicious_folder(tmp_path, dim=384)
    ds = QADataset({"q": "What grew?"}, {"n": "Revenue grew."}, {"q": ["n"]})
    ds.save(tmp_path / "eval.json")
    env = {**_env(), "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "evaluate",
            "--dataset",
            "eval.json",
            "--adapter",
            folder.name,
            "--workspace",
            str(tmp_path / "ws"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not marker.exists(), "the folder's payload.py ran"
    assert p.returncode == 2 and "Traceback" not in p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert "downloaded_adapter" in line and "import path" in line and "--allow-custom-code" in line


# ------------------------------------------------------------------------------------------------
# the real LlamaIndex dataset from the guide
# ------------------------------------------------------------------------------------------------
needs_lyft = pytest.mark.skipif(not LYFT.is_file(), reason="../shared/data/qa/lyft_2021_train_dataset.json is absent")


@needs_lyft
def test_real_llamaindex_file_loads_and_round_trips(tmp_path):
    ds = QADataset.load(LYFT)
    assert (len(ds.queries), len(ds.corpus)) == (668, 334)
    back = QADataset.load(ds.save(tmp_path / "copy.json"))
    original = json.loads(LYFT.read_text())
    assert "mode" not in original  # older LlamaIndex files lack it: "text" is implied
    assert back.to_dict() == {**original, "mode": "text"}


@needs_lyft
def test_train_and_evaluate_on_the_real_file(tmp_path):
    """CLI train/evaluate on the real file. Embedding all 1,002 texts takes about a minute on
    2 CPUs, so by default a slice of it is used (its first 40 chunks and their questions);
    set ADAPTERLAB_FULL_DATA=1 to use the whole file."""
    data = json.loads(LYFT.read_text())
    if os.environ.get("ADAPTERLAB_FULL_DATA") == "1":
        path = LYFT
    else:
        keep = list(data["corpus"])[:40]
        qids = [q for q, d in data["relevant_docs"].items() if d[0] in keep]
        sliced = {
            "queries": {q: data["queries"][q] for q in qids},
            "corpus": {n: data["corpus"][n] for n in keep},
            "relevant_docs": {q: data["relevant_docs"][q] for q in qids},
            "mode": "text",
        }
        path = tmp_path / "lyft_slice.json"
        path.write_text(json.dumps(sliced))
    ws = tmp_path / "ws"
    train = json.loads(
        _ok(
            cli(
                "train",
                "--dataset",
                str(path),
                "--epochs",
                "1",
                "--selection",
                "holdout",
                "--out",
                str(tmp_path / "lyft_linear"),
                "--json",
                workspace=ws,
            )
        ).stdout
    )
    n = len(QADataset.load(path).queries)
    assert train["n_train_queries"] + train["n_val_queries"] == n and train["n_val_queries"] > 0
    assert train["best_metrics"]["mrr@5"] >= train["base_metrics"]["mrr@5"]
    rows = json.loads(
        _ok(
            cli("evaluate", "--dataset", str(path), "--adapter", str(tmp_path / "lyft_linear"), "--json", workspace=ws)
        ).stdout
    )
    assert [r["system"] for r in rows] == ["base (all-MiniLM-L6-v2)", "lyft_linear"]
    assert rows[0]["queries"] == n and rows[0]["hit@5"] > 0.5  # the bundled model finds most chunks


def test_query_and_passage_prefixes_reach_the_embedder_options():
    """--query-prefix/--passage-prefix (E5, BGE) become resolve_embedder kwargs, recorded with a run."""
    from core.cli import _prefixes, build_parser

    args = build_parser().parse_args(
        ["train", "--dataset", "d.json", "--query-prefix", "query: ", "--passage-prefix", "passage: "]
    )
    assert _prefixes(args) == {"query_prefix": "query: ", "passage_prefix": "passage: "}
    assert _prefixes(build_parser().parse_args(["evaluate", "--dataset", "d.json"])) == {}


def test_api_options_reach_the_embedder_options():
    """--api-timeout/--api-batch-size/--api-concurrency are accepted wherever an embedder is, recorded
    with a run (train's embedder_options), and absent when not given."""
    from core.cli import _api_options, _embedder_options, build_parser

    flags = ["--api-timeout", "300", "--api-batch-size", "8", "--api-concurrency", "2"]
    want = {"api_timeout": 300.0, "api_batch_size": 8, "api_concurrency": 2}
    for argv in (["train", "--dataset", "d.json"], ["evaluate", "--dataset", "d.json"], ["ingest", "f.pdf"]):
        args = build_parser().parse_args(argv + flags)
        assert _api_options(args) == want
        assert _embedder_options(args) == want
    args = build_parser().parse_args(["train", "--dataset", "d.json", "--query-prefix", "q: "])
    assert _embedder_options(args) == {"query_prefix": "q: "}


def test_evaluate_an_api_embedder_on_a_slow_per_token_server(capsys, tmp_path, monkeypatch, fake_openai):
    """The issue's case in small: per-token answers, a server slower than the timeout for a whole
    batch, one request at a time. It completes with no timeout, the options recorded in the saved
    comparison."""
    fake_openai.per_token = True
    fake_openai.delay_per_token = 0.05
    fake_openai.serial = True
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    corpus = {f"n{i}": f"chunk {i} about topic{i} and revenue" for i in range(6)}  # 5 tokens each
    queries = {f"q{i}": f"what about topic{i}" for i in range(6)}  # 3 tokens each
    ds = tmp_path / "d.json"
    ds.write_text(
        json.dumps(
            {
                "queries": queries,
                "corpus": corpus,
                "mode": "text",
                "relevant_docs": {f"q{i}": [f"n{i}"] for i in range(6)},
            }
        )
    )
    ws = tmp_path / "ws"
    rc, out, err = cli_inproc(
        capsys,
        "evaluate",
        "--dataset",
        str(ds),
        "--embedder",
        "openai:fake-embed",
        "--api-timeout",
        "0.9",
        "--api-batch-size",
        "4",
        "--save",
        "--json",
        "--workspace",
        str(ws),
    )
    assert rc == 0, err
    rows = json.loads(out)
    assert rows[0]["hit@5"] == 1.0
    sizes = [len(r["body"]["input"]) for r in fake_openai.embedding_requests]
    # 4 chunks of 5 tokens would take 1 s: after the first answer, requests fit in half the timeout
    assert max(sizes) <= 2 and sum(sizes) == 12, sizes
    saved = next((ws / "evaluations").glob("*.json"))
    extra = json.loads(saved.read_text())["extra"]
    assert extra["embedder_options"] == {"api_timeout": 0.9, "api_batch_size": 4}


def test_evaluate_api_systems_carry_their_request_options(capsys, tmp_path, monkeypatch, fake_openai):
    """--api-* options reach --api-embedder systems through core.launch (their spec's "options") and
    are saved with the comparison beside its provenance context."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    ds = tmp_path / "d.json"
    ds.write_text(
        json.dumps(
            {
                "queries": {f"q{i}": f"what about topic{i}" for i in range(4)},
                "corpus": {f"n{i}": f"chunk about topic{i}" for i in range(4)},
                "mode": "text",
                "relevant_docs": {f"q{i}": [f"n{i}"] for i in range(4)},
            }
        )
    )
    ws = tmp_path / "ws"
    rc, out, err = cli_inproc(
        capsys,
        "evaluate",
        "--dataset",
        str(ds),
        "--embedder",
        "openai:fake-embed",
        "--api-embedder",
        "openai:other-embed",
        "--api-batch-size",
        "2",
        "--save",
        "--json",
        "--workspace",
        str(ws),
    )
    assert rc == 0, err
    assert len(json.loads(out)) == 2
    assert max(len(r["body"]["input"]) for r in fake_openai.embedding_requests) <= 2
    extra = json.loads(next((ws / "evaluations").glob("*.json")).read_text())["extra"]
    assert extra["embedder_options"] == {"api_batch_size": 2}
    assert extra["systems"] == [{"kind": "api", "spec": "openai:other-embed", "options": {"api_batch_size": 2}}]
    assert "context" in extra
    # the base model named again as an API embedder: compared once (two rows of the same numbers before)
    rc, out, err = cli_inproc(
        capsys, "evaluate", "--dataset", str(ds), "--embedder", "openai:fake-embed", "--api-embedder",
        "openai:fake-embed", "--json", "--workspace", str(ws),
    )  # fmt: skip
    assert rc == 0 and len(json.loads(out)) == 1, out
    assert "note: --api-embedder openai:fake-embed is this evaluation's base model: compared once" in err


def test_bad_api_options_are_one_line_errors(capsys, tmp_path):
    ds = tmp_path / "d.json"
    ds.write_text(
        json.dumps({"queries": {"q": "a?"}, "corpus": {"n": "a"}, "relevant_docs": {"q": ["n"]}, "mode": "text"})
    )
    rc, _, err = cli_inproc(
        capsys,
        "evaluate",
        "--dataset",
        str(ds),
        "--embedder",
        "openai:m",
        "--api-batch-size",
        "0",
        "--workspace",
        str(tmp_path / "ws"),
    )
    assert rc == 2 and err.strip() == "error: The API batch size must be at least 1, got 0."


def test_train_options_set_the_selection_knobs():
    from core.cli import _train_config, build_parser

    args = build_parser().parse_args(
        ["train", "--dataset", "d", "--shrinkage-grid", "--cv-fold-order", "shuffled", "--cv-rule", "one_se_more"]
    )
    cfg = _train_config(args)
    assert cfg.shrinkage_grid == [] and cfg.cv_fold_order == "shuffled" and cfg.cv_rule == "one_se_more"
    default = _train_config(build_parser().parse_args(["train", "--dataset", "d"]))
    assert default.shrinkage_grid == [0.25, 0.5, 0.75] and default.cv_fold_order == "blocks"


def test_every_train_flag_reaches_the_config():
    """The train command copies each TrainConfig field it has a flag for: no second list to keep in sync."""
    from core import cli as cli_mod

    args = cli_mod.build_parser().parse_args(
        ["train", "--dataset", "x.json", "--cv-min-gain-se", "1.5", "--hard-negatives", "3", "--epochs", "7"]
        + ["--pseudo-queries", "4"]
    )
    cfg = cli_mod._train_config(args)
    assert (cfg.cv_min_gain_se, cfg.hard_negatives, cfg.epochs, cfg.pseudo_queries) == (1.5, 3, 7, 4)
    assert cfg.lr == type(cfg)().lr  # a flag not given keeps the config's default


def test_training_commands_stop_on_the_first_ctrl_c_and_ignore_more_while_stopping():
    """A second Ctrl-C while a run stops (folds' threads ending, the run marked interrupted) must not cut
    that short: it once surfaced as a bare 'RuntimeError: release unlocked lock' and a failed run."""
    import os
    import signal
    import time

    from core.cli import _one_interrupt

    before = signal.getsignal(signal.SIGINT)
    stopped = []
    with pytest.raises(KeyboardInterrupt):
        with _one_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the first Ctrl-C interrupts this
            finally:  # stopping: another Ctrl-C changes nothing
                assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                stopped.append(True)
    assert stopped and signal.getsignal(signal.SIGINT) is before


def test_generation_stopped_with_ctrl_c_ends_in_one_clear_line(pipeline, monkeypatch, capsys, tmp_path):
    import core.questions

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(core.questions, "generate_questions", stopped)
    rc, out, err = cli_inproc(capsys, "generate", "--out", str(tmp_path / "q.json"), "--workspace", str(pipeline["ws"]))
    assert rc == 2 and out == "" and "Traceback" not in err
    assert err.strip() == (
        "error: interrupted; the chunks finished before it are saved: rerun the same command to resume"
    )


def test_a_run_command_stopped_with_ctrl_c_ends_in_one_clear_error(monkeypatch, tmp_path):
    """train, finetune and distill share one runner: Ctrl-C while the run trains becomes one line naming
    the run and what it kept, and the progress bar is closed."""
    import argparse

    import core.runs
    from core.cli import CLIError, _run_with_bar

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(core.runs, "execute_run", stopped)
    args = argparse.Namespace(json=True, out=None)
    with pytest.raises(CLIError, match="^interrupted; run run-x saved no model$"):
        _run_with_bar(args, None, "run-x", "fine-tune", "saved no model")


def test_a_damaged_workspace_catalog_is_a_one_line_error(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert cli_inproc(capsys, "documents", "--workspace", str(ws))[0] == 0
    (ws / "catalog.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 80 + b"garbage" * 50)
    for f in ws.glob("catalog.sqlite-*"):
        f.unlink()
    rc, out, err = cli_inproc(capsys, "documents", "--workspace", str(ws))
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: the workspace catalog {ws / 'catalog.sqlite'} cannot be read (")
    assert "Restore it from a backup, or use another workspace folder" in err


def test_the_cv_table_gives_a_shrunk_choice_its_own_row():
    """The table's rows are the full step (alpha 1): at the chosen epoch that can be a loss while the shrunk copy
    trained gains, so the chosen copy gets its own row with its own numbers, and the star."""
    from core.cli import _cv_rows
    from core.selection import CVResult

    def point(epoch, hit, mrr, gain):
        return {"epoch": epoch, "hit@5 mean": hit, "hit@5 std": 0.03, "mrr@5 mean": mrr, "mrr@5 std": 0.02,
                "gain": gain, "gain_se": 0.006}  # fmt: skip

    curve = [point(0, 0.753, 0.571, 0.0), point(1, 0.748, 0.546, -0.0145)]
    cv = CVResult("chunks", "r", 5, 5, 3e-4, 1, 0.0128, 0.006, True, "rule", {"0.0003": curve}, alpha=0.5,
                  shrinkage={"0.5": 0.0128, "1": -0.0145}, shrunk_point=point(1, 0.771, 0.579, 0.0128))  # fmt: skip
    rows = _cv_rows(cv, 5)
    assert [r["epoch"] for r in rows] == [0, 1, "1, alpha 0.5"]
    assert rows[1]["chosen"] == "shrunk by alpha 0.5: next row" and rows[1]["gain (pt)"].startswith("-1.45")
    assert (
        rows[2]["chosen"] == "* (this one)"
        and rows[2]["hit@5"] == "0.771 ± 0.030"
        and rows[2]["gain (pt)"] == "+1.28 ± 0.60"
    )
    # a run recorded before the shrunk point was: the star on the full step, naming its alpha
    cv.shrunk_point = {}
    assert [r["chosen"] for r in _cv_rows(cv, 5)] == ["", "* (alpha 0.5)"]


# ---- a signal to a training command: stop as a cancel does -------------------------------------

_SIGNAL_WAIT = 120.0  # generous: the run starts in about 2 s; a loaded machine must not fail the test
_SLOW_TRAIN = ["--embedder", "openai:fake-embed", "--recipe", "adapter", "--epochs", "100000", "--batch-size", "1"]
_SLOW_TRAIN += ["--selection", "holdout", "--checkpoint-every", "2"]  # a step is milliseconds: it never ends alone

#: ``python -m core`` whose run hangs in its third step (a long C call, an API answer that does not come): it
#: cannot see a cancel, so only a second signal stops it
_HANGING_CLI = """
import sys, time
import core.runs

execute_run = core.runs.execute_run


def hang(event):
    if event.get("type") == "step" and event.get("step") == 3:
        while True:
            time.sleep(0.05)


core.runs.execute_run = lambda *a, **k: execute_run(*a, callback=hang, **k)
from core.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _until(cond, what: str, proc: subprocess.Popen, timeout: float = _SIGNAL_WAIT):
    """``cond()`` once it is true; fails when ``timeout`` passes or ``proc`` ends first."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before {what}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _start_slow_train(tmp_path, fake_openai, prelude: list[str] | None = None):
    """A ``train`` command in a subprocess on a small dataset and the fake API embedder, once it has trained three
    steps: (process, workspace, run id, stderr file)."""
    from core.workspace import Workspace
    from tests.test_runs import small_dataset

    ds = small_dataset().save(tmp_path / "train.json")
    ws = tmp_path / "ws"
    env = _env()
    env.update(OPENAI_BASE_URL=fake_openai.base_url, OPENAI_API_KEY="sk-local", NO_PROXY="127.0.0.1,localhost")
    err = tmp_path / "stderr.txt"
    cmd = [sys.executable, *(prelude or ["-m", "core"]), "train", "--dataset", str(ds), *_SLOW_TRAIN]
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            [*cmd, "--workspace", str(ws)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=fh, text=True
        )

    def training() -> str | None:  # the run's id, once its history holds three steps
        for hist in ws.glob("runs/*/history.jsonl"):
            if sum('"type": "step"' in line for line in hist.read_text().splitlines()) >= 3:
                return hist.parent.name
        return None

    try:
        run_id = _until(training, "three training steps", proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, Workspace(ws), run_id, err


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_cancels_a_cli_run_which_keeps_its_best_state(sig, tmp_path, fake_openai):
    """SIGTERM (kill, timeout, a scheduler) left the run 'running' in the catalog; Ctrl-C left it 'interrupted'
    with checkpoints only. Either now stops it as the Train page's Cancel does, and the command says so and exits
    128 + the signal's number."""
    import signal

    from core.runs import get_run, has_adapter

    signum = getattr(signal, sig)
    proc, ws, run_id, err = _start_slow_train(tmp_path, fake_openai)
    proc.send_signal(signum)
    try:
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
    lines = err.read_text().strip().splitlines()
    run = get_run(ws, run_id)
    assert rc == 128 + signum, "\n".join(lines)
    assert (
        run["status"] == "cancelled" and run["error"] == f"stopped by {sig}; its best state before the signal was saved"
    )
    assert has_adapter(ws, run_id)  # the best state so far, as a cancel saves it
    assert lines[0].startswith(f"{sig}: stopping run {run_id} after its current step")
    assert lines[-1] == (
        f"run {run_id} was stopped by {sig} before it finished: the workspace keeps its best state before the "
        "stop, not a full run"
    )


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_second_signal_stops_a_cli_run_at_once_and_the_run_ends_interrupted(sig, tmp_path, fake_openai):
    """A run that cannot reach the end of its step (it hangs) ignores the cancel: the second signal stops it at
    once. Ctrl-C marks the run interrupted on its way out; SIGTERM ends the process as it always did, and its run,
    whose owner process is gone, is interrupted by the next reaper (here ``runs``) instead of staying running."""
    import signal

    from core.runs import get_run

    signum = getattr(signal, sig)
    proc, ws, run_id, err = _start_slow_train(tmp_path, fake_openai, prelude=["-c", _HANGING_CLI])
    try:
        proc.send_signal(signum)
        _until(lambda: f"{sig}: stopping run {run_id}" in err.read_text(), "the first signal's line", proc)
        proc.send_signal(signum)
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
    if signum == signal.SIGTERM:
        assert rc == -signal.SIGTERM
        # a process killed outright writes nothing more: the reaper sees the run's owner is gone
        listed = _ok(cli("runs", "--json", workspace=ws.root))
        assert {r["run"]: r["status"] for r in json.loads(listed.stdout)}[run_id] == "interrupted"
        assert get_run(ws, run_id)["error"] == "the process training this run stopped (server restart, crash or kill)"
    else:
        assert rc == 2 and err.read_text().strip().splitlines()[-1].startswith(f"error: interrupted; run {run_id}")
        assert get_run(ws, run_id)["error"] == "stopped with Ctrl-C before it finished"
    run = get_run(ws, run_id)
    assert run["status"] == "interrupted" and run["result"]["last_checkpoint"].endswith("step_2")


def test_ingest_for_an_api_embedder_on_another_server_fits_512_tokens(tmp_path, capsys, fake_openai, monkeypatch):
    """The README's claim: auto chunking for an embedder on a server other than OpenAI's fits 512 tokens (it made a
    4-page PDF one chunk, sized for OpenAI's 8191, which llama.cpp embeds to token 512 without a word), and a chunk
    size past that counts the chunks as truncated."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "none")
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_text_pdf(sample_report_pages()))
    reports = {}
    for label, flags in (("auto", []), ("1200", ["--chunk-size", "1200", "--chunk-overlap", "0"])):
        rc, out, err = cli_inproc(capsys, "ingest", str(pdf), "--embedder", "openai:fake-embed", *flags, "--json",
                                  "--workspace", str(tmp_path / label))  # fmt: skip
        assert rc == 0, err
        reports[label] = json.loads(out)[0]
    assert reports["auto"]["chunks"] > 1 and reports["auto"]["truncated"] == 0
    assert reports["1200"]["truncated"] == reports["1200"]["chunks"] >= 1
