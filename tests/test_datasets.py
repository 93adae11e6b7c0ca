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
