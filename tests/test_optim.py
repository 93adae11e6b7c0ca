"""core.optim follows torch.optim's update rules step for step."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from core import optim


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("adamw", {"lr": 3e-3, "weight_decay": 0.01}),
        ("adamw", {"lr": 1e-2, "weight_decay": 0.0}),
        ("adam", {"lr": 3e-3, "weight_decay": 0.0}),
        ("adam", {"lr": 3e-3, "weight_decay": 0.05}),
        ("sgd", {"lr": 0.1}),
        ("sgd", {"lr": 0.1, "weight_decay": 0.01}),
    ],
)
def test_steps_match_torch_optim(name, kwargs):
    torch.manual_seed(0)
    ref_model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    ours_model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    ours_model.load_state_dict(ref_model.state_dict())
    start = ours_model[0].weight.detach().clone()
    ref = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name](
        ref_model.parameters(), **kwargs
    )
    ours = optim.OPTIMIZERS[name](ours_model.parameters(), **kwargs)
    x, y = torch.randn(32, 8), torch.randn(32, 4)
    for step in range(25):
        lr = kwargs["lr"] * min(1.0, (step + 1) / 5)  # a warm-up changes the group's lr between steps
        for o in (ref, ours):
            o.param_groups[0]["lr"] = lr
        for model, o in ((ref_model, ref), (ours_model, ours)):
            o.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(x), y).backward()
            o.step()
    for a, b in zip(ref_model.parameters(), ours_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours_model[0].weight, start, atol=1e-4)  # the steps did move the weights


def test_training_does_not_import_dynamo():
    code = (
        "import sys, torch; from core.optim import AdamW; p = torch.nn.Parameter(torch.zeros(3)); "
        "o = AdamW([p], lr=0.1); p.sum().backward(); o.step(); print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
