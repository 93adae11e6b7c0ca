"""Small optimisers for adapters: Adam, AdamW and SGD with torch's update rules and defaults.

Why not ``torch.optim``: constructing any ``torch.optim.Optimizer`` imports ``torch._dynamo``,
which costs 1.5 to 3 s on a 2-core machine, longer than a whole warm training run on cached
vectors. An adapter has a handful of parameter tensors, so the plain per-tensor update is as
fast as torch's fused variants here. ``tests/test_optim.py`` checks every step against
``torch.optim`` to float rounding.

The interface is the part of ``torch.optim.Optimizer`` that training uses: ``param_groups``
(a list with one dict whose ``"lr"`` may be changed between steps), ``zero_grad`` and ``step``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class _Optimizer:
    def __init__(self, params: Iterable[torch.nn.Parameter], **group) -> None:
        self.param_groups = [{"params": [p for p in params if p.requires_grad], **group}]
        self.state: dict[torch.nn.Parameter, dict] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()


class Adam(_Optimizer):
    """Adam (``decoupled=False``: weight decay added to the gradient) or AdamW (decoupled)."""

    decoupled = False

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float | None = None,
    ) -> None:
        if weight_decay is None:
            weight_decay = 1e-2 if self.decoupled else 0.0
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        lr, (beta1, beta2), eps, wd = g["lr"], g["betas"], g["eps"], g["weight_decay"]
        for p in g["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            st = self.state.get(p)
            if st is None:  # (not setdefault: its default dict would allocate two tensors every step)
                st = self.state[p] = {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
            st["step"] += 1
            if wd:
                if self.decoupled:
                    p.mul_(1 - lr * wd)
                else:
                    grad = grad.add(p, alpha=wd)
            st["exp_avg"].lerp_(grad, 1 - beta1)
            st["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias1 = 1 - beta1 ** st["step"]
            bias2_sqrt = math.sqrt(1 - beta2 ** st["step"])
            denom = (st["exp_avg_sq"].sqrt() / bias2_sqrt).add_(eps)
            p.addcdiv_(st["exp_avg"], denom, value=-lr / bias1)


class AdamW(Adam):
    decoupled = True


class SGD(_Optimizer):
    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        for p in g["params"]:
            if p.grad is None:
                continue
            grad = p.grad.add(p, alpha=g["weight_decay"]) if g["weight_decay"] else p.grad
            p.add_(grad, alpha=-g["lr"])


OPTIMIZERS = {"adamw": AdamW, "adam": Adam, "sgd": SGD}
