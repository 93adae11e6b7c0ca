"""A user-defined adapter, importable as ``tests.custom_adapter_example:MyAdapter``.

It is what a user would write for LlamaIndex's ``BaseAdapter``: an ``nn.Module`` with
``forward(embed)`` and ``get_config_dict()`` returning the constructor kwargs. A learned
per-dimension scale plus shift, initialised to the identity.
"""

from __future__ import annotations

import torch
from torch import nn


class MyAdapter(nn.Module):
    def __init__(self, in_features: int, out_features: int, init_scale: float = 1.0) -> None:
        super().__init__()
        if in_features != out_features:
            raise ValueError("MyAdapter keeps the dimension")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.init_scale = float(init_scale)
        self.scale = nn.Parameter(torch.full((self.in_features,), self.init_scale))
        self.shift = nn.Parameter(torch.zeros(self.in_features))

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        return embed * self.scale + self.shift

    def get_config_dict(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "init_scale": self.init_scale}


class NotAnAdapter:
    """Not an nn.Module: registering or importing it must be refused."""

    def get_config_dict(self) -> dict:
        return {}
