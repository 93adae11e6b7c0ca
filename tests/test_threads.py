"""AdapterLab's processes make idle torch threads sleep instead of spin (core/threads.py), and
that changes how fast training runs on a busy machine, never what it computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.threads import prefer_passive_waiting

ROOT = Path(__file__).resolve().parents[1]


def test_passive_waiting_is_set_unless_the_user_chose_a_policy():
    env: dict[str, str] = {}
    assert prefer_passive_waiting(env) is True and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert prefer_passive_waiting(mine) is False and mine == {"OMP_WAIT_POLICY": "ACTIVE"}


ENTRY = """
import runpy, sys, os, json
sys.argv = ["core", "--help"]
try:
    runpy.run_module("core", run_name="__main__")
except SystemExit:
    pass
print("ENV " + json.dumps({"policy": os.environ.get("OMP_WAIT_POLICY"), "torch": "torch" in sys.modules}))
"""


def _entry_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", ENTRY], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("ENV ")), None)
    assert line, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(line[4:])


def test_python_m_core_sets_it_before_torch_loads_and_keeps_the_users_choice():
    assert _entry_env() == {"policy": "PASSIVE", "torch": False}
    assert _entry_env(OMP_WAIT_POLICY="ACTIVE")["policy"] == "ACTIVE"


@pytest.mark.integration
def test_training_is_bit_identical_whatever_the_wait_policy(tmp_path):
    from core.embedders import resolve_embedder
    from core.workspace import Workspace
    from tests.test_runs import small_dataset

    ws = Workspace(tmp_path / "ws")
    ds = small_dataset()
    resolve_embedder("default", workspace=ws).embed_texts(list(ds.queries.values()) + list(ds.corpus.values()))
    dataset = str(ds.save(tmp_path / "train.json"))
    weights = {}
    for policy in ("ACTIVE", "PASSIVE"):
        out = tmp_path / policy
        env = {**os.environ, "OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": "2"}
        cmd = [sys.executable, "-m", "core", "train", "--workspace", str(ws.root), "--dataset", dataset]
        cmd += ["--llamaindex-defaults", "--epochs", "3", "--out", str(out), "--json"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        weights[policy] = (out / "pytorch_model.bin").read_bytes()
    assert weights["ACTIVE"] == weights["PASSIVE"]
