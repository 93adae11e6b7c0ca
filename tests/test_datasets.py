"""core.datasets: hostile dataset files fail with a DatasetError, never a traceback."""

from __future__ import annotations

import pytest

from core.datasets import DatasetError, QADataset


@pytest.mark.parametrize("deep", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000])
def test_deeply_nested_json_is_a_dataset_error(tmp_path, deep):
    path = tmp_path / "deep.json"
    path.write_text(deep)
    with pytest.raises(DatasetError, match=r"deep\.json: its JSON is nested too deeply"):
        QADataset.load(path)
    with pytest.raises(DatasetError, match="nested too deeply"):
        QADataset.loads(deep, source="upload.json")
    with pytest.raises(DatasetError, match="nested too deeply"):
        QADataset.loads(deep.encode(), source="upload.json")


def test_starting_a_training_run_does_not_import_the_llm_client(tmp_path):
    """core.runs reads datasets through core.datasets: no chat client, no openai (in a fresh interpreter)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "import core.runs\n"
        "from core.datasets import QADataset, load_dataset, save_dataset\n"
        "from core.workspace import Workspace\n"
        "ws = Workspace(sys.argv[1])\n"
        "ds = QADataset({'q1': 'What?'}, {'n1': 'Text.'}, {'q1': ['n1']})\n"
        "assert load_dataset(ws, save_dataset(ws, ds, 'train', role='train')).queries == ds.queries\n"
        "print(sorted(m for m in sys.modules if m == 'openai' or m.startswith(('openai.', 'core.llm', 'core.questions', "
        "'core.generators'))))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "ws")], capture_output=True, text=True, cwd=root, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_dataset_file_with_a_byte_order_mark_loads_as_on_the_page(tmp_path):
    """Windows editors save JSON with a UTF-8 BOM: the CLI reads it as the page's upload does."""
    from core.datasets import QADataset

    ds = QADataset({"q1": "What was revenue?"}, {"n1": "Revenue was 3 billion."}, {"q1": ["n1"]})
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + ds.dumps().encode())
    assert QADataset.load(path).queries == ds.queries == QADataset.loads(path.read_bytes()).queries
