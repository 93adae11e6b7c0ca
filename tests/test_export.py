"""Exports (core.export): a sentence-transformers folder whose encode_query / encode_document give
AdapterLab's own query and document vectors, its model card, the adapter-only export for API base
models, and ``python -m core export``. Loads the real bundled model (no download)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from core.adapters import build_adapter, load_adapter
from core.cli import main
from core.datasets import save_dataset
from core.embedders import AdapterEmbedder, SentenceTransformerEmbedder
from core.export import (
    EXPORT_MARKER,
    ExportError,
    adapter_to_dense,
    build_sentence_transformer,
    export_run,
    export_support,
)
from core.launch import evaluate_with_context
from core.reports import save_comparison
from core.runs import adapter_dir, create_run, execute_run
from core.training import TrainConfig
from tests.test_runs import SECRET, small_dataset

pytestmark = pytest.mark.integration

QUESTIONS = [
    "What was the revenue growth in the fiscal year?",
    "How many active riders were there?",
    "Which insurance liability policy applies?",
]
PASSAGES = ["The report discusses revenue growth fiscal year in detail.", "Airport pickup fees rose in 2021."]


def _perturbed(kind: str, **kwargs):
    """An adapter of ``kind`` with every weight moved off its identity start (so the test can fail)."""
    torch.manual_seed(0)
    adapter = build_adapter(kind, 384, **kwargs)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return adapter


def _load(folder):
    from sentence_transformers import SentenceTransformer

    assert not list(folder.rglob("*.py")), "an export must need no custom code"
    return SentenceTransformer(str(folder), device="cpu")  # trust_remote_code stays False


EXPORTABLE = [
    ("linear", {}),
    ("linear", {"bias": True}),
    ("low-rank", {"rank": 8}),
    ("two-layer", {"hidden_features": 64, "activation_fn_str": "relu"}),
    ("two-layer", {"hidden_features": 64, "activation_fn_str": "gelu"}),
    ("two-layer", {"hidden_features": 64, "activation_fn_str": "silu"}),
    ("two-layer", {"hidden_features": 64, "activation_fn_str": "leaky_relu"}),
    ("two-layer", {"hidden_features": 64, "activation_fn_str": "tanh", "add_residual": False}),
]


@pytest.mark.parametrize(
    "kind,kwargs", EXPORTABLE, ids=[f"{k}-{'-'.join(map(str, v.values()))}" for k, v in EXPORTABLE]
)
def test_exported_model_gives_adapterlabs_query_and_document_vectors(kind, kwargs, tmp_path):
    adapter = _perturbed(kind, **kwargs)
    assert export_support(adapter) is None
    model = build_sentence_transformer(adapter, "default", query_prefix="query: ", passage_prefix="passage: ")
    model.save(str(tmp_path / "m"), create_model_card=False)
    loaded = _load(tmp_path / "m")

    ours = AdapterEmbedder(
        SentenceTransformerEmbedder("default", query_prefix="query: ", passage_prefix="passage: ", device="cpu"),
        adapter,
    )
    q_ours, d_ours = ours.embed_queries(QUESTIONS), ours.embed_texts(PASSAGES)
    np.testing.assert_allclose(loaded.encode_query(QUESTIONS), q_ours, atol=1e-5, rtol=0)
    np.testing.assert_allclose(loaded.encode_document(PASSAGES), d_ours, atol=1e-5, rtol=0)
    np.testing.assert_allclose(loaded.encode(PASSAGES), d_ours, atol=1e-5, rtol=0)  # plain encode = documents
    # the adapter really changed the query vectors, so the match above is not the identity's
    assert np.abs(loaded.encode_query(QUESTIONS) - ours.base.embed_queries(QUESTIONS)).max() > 1e-2


def test_kinds_without_a_stock_form_are_refused_with_the_reason():
    tanh = build_adapter("two-layer", 384, hidden_features=8, activation_fn_str="tanh")
    assert "tanh" in export_support(tanh)
    with pytest.raises(ExportError, match="llamaindex"):
        adapter_to_dense(tanh)

    class Custom(torch.nn.Module):
        def forward(self, x):
            return x

        def get_config_dict(self):
            return {}

    assert "custom adapter class Custom" in export_support(Custom())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with a cross-validated linear run on the bundled model and a saved comparison of it."""
    from core.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("export") / "ws")
    ds = small_dataset()
    train_id = save_dataset(ws, ds, "topics train", role="train")
    run_id = create_run(
        ws,
        TrainConfig(epochs=3, batch_size=6, lr=5e-3, device="cpu", cv_folds=2, seed=1),
        dataset_id=train_id,
        embedder="default",
        embedder_options={"query_prefix": "q: "},
        name="tiny linear",
    )
    execute_run(ws, run_id)
    systems = [{"kind": "run", "run_id": run_id}]
    cmp, context = evaluate_with_context(
        ws,
        ds,
        "topics eval",
        systems,
        top_k=5,
        embedder="default",
        embedder_options={"query_prefix": "q: "},
        dataset_id=train_id,
    )
    eval_id = save_comparison(
        ws,
        cmp,
        "topics eval",
        extra={"dataset_id": train_id, "systems": systems, "run_ids": [run_id], "context": context},
    )
    return ws, run_id, eval_id


def test_cli_exports_a_run_as_a_sentence_transformers_model_with_a_card(trained, tmp_path, capsys):
    ws, run_id, eval_id = trained
    out = tmp_path / "tuned"
    rc = main(
        [
            "export",
            "--workspace",
            str(ws.root),
            "--run",
            run_id,
            "--format",
            "sentence-transformers",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["out"] == str(out) and "README.md" in report["files"] and "modules.json" in report["files"]

    loaded = _load(out)
    ours = AdapterEmbedder(
        SentenceTransformerEmbedder("default", query_prefix="q: ", device="cpu"), load_adapter(adapter_dir(ws, run_id))
    )
    np.testing.assert_allclose(loaded.encode_query(QUESTIONS), ours.embed_queries(QUESTIONS), atol=1e-5, rtol=0)
    np.testing.assert_allclose(loaded.encode_document(PASSAGES), ours.embed_texts(PASSAGES), atol=1e-5, rtol=0)

    card = (out / "README.md").read_text()
    assert "all-MiniLM-L6-v2" in card and "linear" in card and "24 questions from topics train" in card
    assert "2-fold cross-validation" in card and '"lr_grid"' in card  # the estimate and the settings
    assert f"`{eval_id}`" in card and "| tiny linear |" in card and "Δ hit@5 (95% CI)" in card
    assert "SentenceTransformer(" in card and "encode_query" in card


def test_cli_exports_the_llamaindex_folder(trained, tmp_path, capsys):
    ws, run_id, _ = trained
    out = tmp_path / "li"
    assert (
        main(["export", "--workspace", str(ws.root), "--run", run_id, "--format", "llamaindex", "--out", str(out)]) == 0
    )
    assert "exported" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"config.json", "pytorch_model.bin", "adapterlab.json", EXPORT_MARKER}
    a, b = load_adapter(out), load_adapter(adapter_dir(ws, run_id))
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_an_export_replaces_an_earlier_export_and_never_mixes_with_other_files(trained, tmp_path, capsys):
    """A sentence-transformers export, then a LlamaIndex one into the same folder: the folder holds the second
    alone (it held both, so two users of it got two different adapters); a folder of other files is refused
    before the model loads, and keeps its files."""
    ws, run_id, _ = trained
    out = tmp_path / "out"
    export_run(ws, run_id, "sentence-transformers", out)
    assert (out / "modules.json").is_file()
    export_run(ws, run_id, "llamaindex", out)
    assert {p.name for p in out.iterdir()} == {"config.json", "pytorch_model.bin", "adapterlab.json", EXPORT_MARKER}
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # as a plain mkdir makes it
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    rc = main(["export", "--workspace", str(ws.root), "--run", run_id, "--out", str(mine)])
    err = capsys.readouterr().err
    assert rc == 2 and "is not empty and AdapterLab did not write it: give a new folder" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and not list(tmp_path.glob(".*export"))
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    assert main(["export", "--workspace", str(ws.root), "--run", run_id, "--out", str(a_file)]) == 2
    assert "a file is in the way" in capsys.readouterr().err and a_file.read_text() == "x"


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_cli_export_errors_are_one_line(trained, tmp_path, capsys):
    ws, _, _ = trained
    assert main(["export", "--workspace", str(ws.root), "--run", "run-nope", "--out", str(tmp_path / "x")]) == 2
    assert "no run 'run-nope'" in capsys.readouterr().err


def test_an_api_base_model_exports_the_adapter_with_a_loader_card(ws, fake_openai, tmp_path):
    path = str(small_dataset().save(tmp_path / "train.json"))
    run_id = create_run(
        ws,
        TrainConfig(epochs=1, batch_size=6, device="cpu", selection="none"),
        dataset_path=path,
        embedder="openai:fake-embed",
        embedder_options={"base_url": fake_openai.base_url},
    )
    execute_run(ws, run_id, api_key=SECRET)
    out = export_run(ws, run_id, "sentence-transformers", tmp_path / "api")
    assert not (out / "modules.json").exists()
    assert {"config.json", "pytorch_model.bin", "README.md"} <= {p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert 'model="fake-embed"' in card and "load_adapter" in card and 'state["linear.weight"]' in card
    assert SECRET not in card and fake_openai.base_url not in card
    # the training file by its name: a card travels, and the local path says only where someone's files are
    assert "questions from the file train.json" in card and str(tmp_path) not in card
    assert load_adapter(out).get_config_dict()["in_features"] == 64
    assert os.path.getsize(out / "pytorch_model.bin") > 0


def test_the_train_pages_zip_holds_the_model_folder(trained):
    import io
    import zipfile

    from core.export import export_zip

    ws, run_id, _ = trained
    names = zipfile.ZipFile(io.BytesIO(export_zip(ws, run_id))).namelist()
    assert {"model/README.md", "model/modules.json", "model/router_config.json"} <= set(names)
    assert any(n.endswith("Dense/model.safetensors") for n in names)


def test_a_cancelled_run_exports_saying_so_and_one_without_an_adapter_points_to_its_checkpoints(ws, tmp_path):
    """A cancelled run's card quoted its settings (3000 epochs) as if they had run; an interrupted run's error
    said "train it to the end first", which cannot be done, while its checkpoints could be used."""
    from core.adapters import build_adapter, save_adapter
    from core.export import model_card

    path = str(small_dataset().save(tmp_path / "train.json"))
    run_id = create_run(ws, TrainConfig(epochs=1, batch_size=6, device="cpu", selection="none"), dataset_path=path)
    execute_run(ws, run_id)
    with ws.db() as con:
        con.execute("UPDATE runs SET status='cancelled' WHERE id=?", (run_id,))
    assert "**Cancelled before it finished:** this is the run's best state before the cancel" in model_card(ws, run_id)
    final = adapter_dir(ws, run_id)
    for name in ("config.json", "pytorch_model.bin", "adapterlab.json"):
        (final / name).unlink()
    save_adapter(build_adapter("linear", 8), final / "checkpoints" / "step_3")
    with pytest.raises(
        ExportError,
        match=rf"stopped early; its \d+ checkpoint\(s\) can be compared .*evaluate --run {run_id} --checkpoints",
    ):
        export_run(ws, run_id, "llamaindex", tmp_path / "x")


def test_a_low_rank_llamaindex_export_says_how_to_load_it(ws, tmp_path, capsys):
    """LlamaIndex ships linear and two-layer adapter classes only: a low-rank folder does not load there as is."""
    path = str(small_dataset().save(tmp_path / "train.json"))
    cfg = TrainConfig(adapter="low-rank", adapter_kwargs={"rank": 4}, epochs=1, batch_size=6, selection="none")
    run_id = create_run(ws, cfg, dataset_path=path)
    execute_run(ws, run_id)
    out = tmp_path / "li"
    assert (
        main(["export", "--workspace", str(ws.root), "--run", run_id, "--format", "llamaindex", "--out", str(out)]) == 0
    )
    err = capsys.readouterr().err
    assert "note: LlamaIndex's AdapterEmbeddingModel has no low-rank class" in err
