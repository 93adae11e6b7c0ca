"""Adapter modules, their registry, and save/load in LlamaIndex's folder format.

An adapter is an ``nn.Module`` with ``forward(embed) -> embed`` and ``get_config_dict()``
returning its constructor kwargs. It maps *query* embeddings only.

Built in:

* ``linear`` -> :class:`LinearLayer` (LlamaIndex ``LinearLayer``): ``linear.weight`` (+ bias),
  initialised to the identity.
* ``two-layer`` -> :class:`TwoLayerNN` (LlamaIndex ``TwoLayerNN``): ``linear1``, ``linear2``,
  ``residual_weight`` (init 0, so with ``add_residual`` it starts as the identity).
* ``low-rank`` -> :class:`LowRankResidual`, an example of a *custom* adapter registered the
  same way a user's would be: ``x + B(A x)`` with ``B`` initialised to zero.

Custom adapters: registered under a short name with :func:`register_adapter`, or any importable
class by ``"package.module:Class"`` (or dotted path). Importing a module runs its code, so an
import path is only ever imported on an explicit opt-in by the person running AdapterLab
(``allow_custom_code=True``: the CLI's ``--allow-custom-code`` or an import path they typed,
the dashboard's "Allow custom code" tick box), never because a file names it: a class named
in a folder's ``adapterlab.json`` is looked up in the registry only, and a folder that names an
import path is refused with an :class:`AdapterError` unless the caller opted in.

Folder format (LlamaIndex ``BaseAdapter.save``): ``config.json`` (constructor kwargs) and
``pytorch_model.bin`` (``torch.save(state_dict)``). AdapterLab adds ``adapterlab.json`` naming
the class and the base embedder; LlamaIndex ignores it. Loading uses
``torch.load(..., weights_only=True)``: tensors only, never arbitrary pickled objects.

Example::

    a = build_adapter("linear", dim=384)
    save_adapter(a, "out/linear", embedder_identity="st:all-MiniLM-L6-v2")
    b = load_adapter("out/linear")             # class found from adapterlab.json or config keys
    c = load_adapter("theirs", allow_custom_code=True)   # may import the class adapterlab.json names
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .workspace import atomic_write_bytes, atomic_write_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"
META_FILE = "adapterlab.json"


class AdapterError(ValueError):
    """An adapter that cannot be built, loaded or used; the message says what to do."""


class LinearLayer(nn.Module):
    """A linear map ``W x (+ b)``, ``W`` initialised to the identity (LlamaIndex ``LinearLayer``).

    Args:
        in_features: input dimension (the base embedder's). out_features: output dimension;
            with ``in == out`` the identity init makes the untrained adapter a no-op.
        bias: learn a bias too (initialised to zero).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.bias = bool(bias)
        self.linear = nn.Linear(self.in_features, self.out_features, bias=self.bias)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(self.out_features, self.in_features))
            if self.bias:
                self.linear.bias.zero_()

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        return self.linear(embed)

    def get_config_dict(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias}


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": F.leaky_relu,
    "silu": F.silu,
}


class TwoLayerNN(nn.Module):
    """Two linear layers with an activation, plus an optional residual (LlamaIndex ``TwoLayerNN``).

    ``forward(x) = residual_weight * linear2(act(linear1(x))) + x`` when ``add_residual``
    (``residual_weight`` starts at 0, so the untrained net is the identity), else the plain MLP.
    State keys: ``linear1.weight``, ``linear1.bias``, ``linear2.weight``, ``linear2.bias``,
    ``residual_weight``. Like LlamaIndex, both layers always carry a bias; ``bias`` is kept in
    the config for compatibility.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int,
        bias: bool = False,
        activation_fn_str: str = "relu",
        add_residual: bool = False,
    ) -> None:
        super().__init__()
        if activation_fn_str not in _ACTIVATIONS:
            raise AdapterError(f"unknown activation {activation_fn_str!r}; choose one of {sorted(_ACTIVATIONS)}")
        if add_residual and in_features != out_features:
            raise AdapterError("add_residual needs in_features == out_features")
        self.in_features = int(in_features)
        self.hidden_features = int(hidden_features)
        self.out_features = int(out_features)
        self.bias = bool(bias)
        self.activation_fn_str = activation_fn_str
        self._add_residual = bool(add_residual)
        self.linear1 = nn.Linear(self.in_features, self.hidden_features, bias=True)
        self.linear2 = nn.Linear(self.hidden_features, self.out_features, bias=True)
        self.residual_weight = nn.Parameter(torch.zeros(1))

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        out = self.linear2(_ACTIVATIONS[self.activation_fn_str](self.linear1(embed)))
        if self._add_residual:
            out = self.residual_weight * out + embed
        return out

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "hidden_features": self.hidden_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "activation_fn_str": self.activation_fn_str,
            "add_residual": self._add_residual,
        }


class LowRankResidual(nn.Module):
    """``x + B(A x)`` with rank ``rank``; ``B`` starts at zero so the adapter starts as the identity.

    An example of a custom adapter: fewer parameters than a full linear map (2 * d * rank), so
    it over-fits less on small question sets.
    """

    def __init__(self, in_features: int, out_features: int | None = None, rank: int = 32) -> None:
        super().__init__()
        out_features = in_features if out_features is None else out_features
        if out_features != in_features:
            raise AdapterError("LowRankResidual needs in_features == out_features")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.rank = int(rank)
        self.down = nn.Linear(self.in_features, self.rank, bias=False)
        self.up = nn.Linear(self.rank, self.out_features, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        return embed + self.up(self.down(embed))

    def get_config_dict(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "rank": self.rank}


_REGISTRY: dict[str, type[nn.Module]] = {
    "linear": LinearLayer,
    "two-layer": TwoLayerNN,
    "low-rank": LowRankResidual,
}
BUILTIN = ("linear", "two-layer")


def register_adapter(name: str, cls: type[nn.Module]) -> None:
    """Make ``cls`` available under ``name`` (in the CLI's ``--adapter`` and the dashboard)."""
    _check_adapter_class(cls, name)
    _REGISTRY[name] = cls


def registered_adapters() -> dict[str, type[nn.Module]]:
    return dict(_REGISTRY)


def _check_adapter_class(cls: Any, name: str) -> None:
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise AdapterError(f"{name} is not an nn.Module subclass")
    if not callable(getattr(cls, "get_config_dict", None)):
        raise AdapterError(f"{name} has no get_config_dict(): an adapter must return its constructor kwargs")


_ALIASES = {"twolayer": "two-layer", "two_layer": "two-layer", "2layer": "two-layer", "mlp": "two-layer"}


def is_import_path(name: str) -> bool:
    """True when ``name`` is not a registered adapter (or alias) but a ``pkg.mod:Class`` path."""
    name = str(name or "").strip()
    return name not in _REGISTRY and name.lower() not in _ALIASES and (":" in name or "." in name)


def resolve_adapter_class(name: str, allow_import: bool = False) -> type[nn.Module]:
    """A registered name (``linear``, ``two-layer``, ...) or, with ``allow_import``, an import path.

    ``allow_import`` must come from the person running AdapterLab (a flag, a tick box, a path
    they typed), never from a file: importing ``pkg.mod`` runs ``pkg/mod.py``.
    """
    name = str(name or "").strip()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.lower() in _ALIASES:
        return _REGISTRY[_ALIASES[name.lower()]]
    if is_import_path(name) and not allow_import:
        raise AdapterError(
            f"{name!r} is an import path, not a registered adapter ({', '.join(sorted(_REGISTRY))}): importing "
            "it would run that module's code. Allow custom code explicitly (CLI: --allow-custom-code; dashboard: "
            "the 'Allow custom code' tick box) only for code you trust."
        )
    if ":" in name:
        mod_name, _, attr = name.partition(":")
    elif "." in name:
        mod_name, _, attr = name.rpartition(".")
    else:
        raise AdapterError(
            f"unknown adapter {name!r}: use {', '.join(sorted(_REGISTRY))}, or an import path like mypkg.adapters:MyAdapter"
        )
    try:
        cls = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AdapterError(f"cannot import adapter class {name!r}: {exc}") from exc
    _check_adapter_class(cls, name)
    return cls


def adapter_name(adapter: nn.Module) -> str:
    """The registry name of an adapter's class, or its import path."""
    for name, cls in _REGISTRY.items():
        if type(adapter) is cls:
            return name
    cls = type(adapter)
    return f"{cls.__module__}:{cls.__qualname__}"


def build_adapter(kind: str, dim: int, *, allow_custom_code: bool = False, **kwargs: Any) -> nn.Module:
    """A fresh adapter of ``kind`` for embeddings of dimension ``dim``.

    ``kwargs`` override the defaults: linear ``bias``; two-layer ``hidden_features`` (1024),
    ``activation_fn_str``, ``add_residual`` (True); a custom class gets ``in_features`` /
    ``out_features`` / ``hidden_features`` when its constructor takes them. An import path as
    ``kind`` needs ``allow_custom_code`` (see :func:`resolve_adapter_class`).
    """
    cls = resolve_adapter_class(kind, allow_import=allow_custom_code)
    defaults: dict[str, Any] = {}
    if cls is LinearLayer:
        defaults = {"in_features": dim, "out_features": dim, "bias": False}
    elif cls is TwoLayerNN:
        defaults = {
            "in_features": dim,
            "hidden_features": 1024,
            "out_features": dim,
            "bias": True,
            "add_residual": True,
        }
    else:
        params = inspect.signature(cls.__init__).parameters
        for key, value in (("in_features", dim), ("out_features", dim), ("hidden_features", 1024)):
            if key in params:
                defaults[key] = value
    defaults.update({k: v for k, v in kwargs.items() if v is not None})
    try:
        return cls(**defaults)
    except TypeError as exc:
        raise AdapterError(f"cannot build {kind} with {defaults}: {exc}") from exc


def save_adapter(adapter: nn.Module, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``adapter`` as a LlamaIndex adapter folder (plus ``adapterlab.json`` with ``meta``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    import io

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in adapter.state_dict().items()}, buf)
    atomic_write_bytes(path / WEIGHTS_FILE, buf.getvalue())
    atomic_write_json(path / CONFIG_FILE, adapter.get_config_dict())
    atomic_write_json(path / META_FILE, {"adapter_cls": adapter_name(adapter), **meta})
    return path


def read_adapter_meta(path: str | os.PathLike) -> dict[str, Any]:
    meta_path = Path(path) / META_FILE
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return {}
        return meta if isinstance(meta, dict) else {}
    return {}


def folder_import_path(path: str | os.PathLike) -> str | None:
    """The import path a folder's ``adapterlab.json`` names (``None`` for a registered class or none):
    what loading it with ``allow_custom_code=True`` would import. Reads JSON only, imports nothing."""
    named = read_adapter_meta(path).get("adapter_cls")
    return str(named) if named and is_import_path(str(named)) else None


def _guess_class(config: dict[str, Any]) -> type[nn.Module]:
    keys = set(config)
    if keys <= {"in_features", "out_features", "bias"}:
        return LinearLayer
    if {"in_features", "hidden_features", "out_features"} <= keys and keys <= {
        "in_features",
        "hidden_features",
        "out_features",
        "bias",
        "activation_fn_str",
        "add_residual",
    }:
        return TwoLayerNN
    raise AdapterError(
        f"cannot tell the adapter class from config keys {sorted(keys)}: pass adapter_cls "
        "(e.g. --adapter-class mypkg.adapters:MyAdapter)."
    )


def load_adapter(
    path: str | os.PathLike,
    adapter_cls: str | type[nn.Module] | None = None,
    device: str = "cpu",
    *,
    allow_custom_code: bool = False,
) -> nn.Module:
    """Load an adapter folder written by AdapterLab or LlamaIndex (tensors only, ``weights_only``).

    The class is ``adapter_cls`` when given, else the one ``adapterlab.json`` names, else guessed
    from ``config.json``'s keys (LlamaIndex's linear and two-layer). A class name from the folder
    is looked up in the registry only; an import path there (or as ``adapter_cls``) is imported
    only with ``allow_custom_code=True``, which must come from the user, and is otherwise refused
    with an :class:`AdapterError`: a shared folder must not be able to run code.
    """
    path = Path(path)
    cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not cfg_path.exists() or not w_path.exists():
        raise AdapterError(f"{path} is not an adapter folder: it needs {CONFIG_FILE} and {WEIGHTS_FILE}.")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise AdapterError(f"{cfg_path}: not a UTF-8 text file ({exc.reason}); expected JSON.") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise AdapterError(f"{cfg_path}: not valid JSON ({getattr(exc, 'msg', 'nested too deeply')}).") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{cfg_path}: expected a JSON object of constructor arguments.")
    if isinstance(adapter_cls, str):
        cls = resolve_adapter_class(adapter_cls, allow_import=allow_custom_code)
    elif adapter_cls is not None:
        cls = adapter_cls
    else:
        named = read_adapter_meta(path).get("adapter_cls")
        if not named:
            cls = _guess_class(config)
        elif is_import_path(str(named)) and not allow_custom_code:
            raise AdapterError(
                f"{path}: its {META_FILE} names the class {str(named)[:200]!r}, an import path. AdapterLab does not "
                "import code because a file names it: loading this folder would run that module. If you trust "
                "the code, pass --allow-custom-code (Python: allow_custom_code=True) or give the class yourself "
                "(--adapter-class); a folder of a built-in adapter loads with --adapter-class linear or two-layer."
            )
        else:
            cls = resolve_adapter_class(str(named), allow_import=allow_custom_code)
    try:
        check_adapter_sizes(config)
        adapter = cls(**config)
    except (TypeError, ValueError, RuntimeError) as exc:  # a wrong key, a size of -1 (torch: negative dimension)
        raise AdapterError(f"{cfg_path}: config does not fit {cls.__name__}: {exc}") from exc
    try:
        state = torch.load(w_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused an object that is not a tensor
        raise AdapterError(
            f"{w_path}: cannot be read as plain tensors ({type(exc).__name__}). AdapterLab only loads "
            "weight files that contain tensors (weights_only); re-save it with torch.save(model.state_dict())."
        ) from exc
    except Exception as exc:  # a truncated or damaged file, or not a PyTorch file at all
        raise AdapterError(
            f"{w_path}: cannot be read ({type(exc).__name__}: {str(exc)[:120]}): the file is damaged or incomplete "
            "(a copy cut short?), or not PyTorch weights. Copy or export the adapter again."
        ) from exc
    try:
        adapter.load_state_dict(state)
    except RuntimeError as exc:
        raise AdapterError(f"{w_path}: weights do not fit {cls.__name__}{config}: {exc}") from exc
    return adapter.to(device).eval()


#: The layer sizes the built-in adapters take; a custom class's other arguments are its own business.
SIZE_ARGUMENTS = ("in_features", "out_features", "hidden_features", "rank")
#: Larger than any embedding a model gives (OpenAI's largest has 3,072 dimensions): a typo, or a file meant to make
#: the loader allocate gigabytes before the weights are read.
MAX_ADAPTER_SIZE = 65_536


def check_adapter_sizes(kwargs: dict) -> None:
    """Raise ``ValueError`` when a layer size among ``kwargs`` (a training setting or a folder's config.json) is
    not a whole number from 1 to :data:`MAX_ADAPTER_SIZE`, before any tensor is made."""
    for name in SIZE_ARGUMENTS:
        value = kwargs.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ADAPTER_SIZE:
            raise ValueError(f"{name} must be a whole number from 1 to {MAX_ADAPTER_SIZE:,}, got {value!r}")


def draws_no_random_numbers(kind: str) -> bool:
    """True for the built-in adapters, whose forward pass draws no random numbers (no dropout): their
    cross-validation folds may train side by side in threads with the same results as one at a time."""
    try:
        cls = resolve_adapter_class(kind)  # never imports: an import path is not built in
    except AdapterError:
        return False
    return cls in (LinearLayer, TwoLayerNN, LowRankResidual)


def affine_in_weights(adapter: nn.Module) -> bool:
    """True when the adapter's output is affine in its weights (a :class:`LinearLayer`), so that weights
    shrunk toward their initial values, ``init + alpha (trained - init)``, give the outputs shrunk the same
    way, ``out_init + alpha (out_trained - out_init)``: cross-validation scores shrunk copies from two
    outputs instead of loading and running each copy."""
    return type(adapter) is LinearLayer


def adapter_dims(adapter: nn.Module) -> tuple[int | None, int | None]:
    cfg = adapter.get_config_dict()
    return cfg.get("in_features"), cfg.get("out_features")


def check_adapter_fits(adapter: nn.Module, dim: int, where: str = "adapter") -> None:
    """Raise a clear error when the adapter's input dimension is not the embedder's."""
    in_f, out_f = adapter_dims(adapter)
    if in_f is not None and int(in_f) != int(dim):
        raise AdapterError(
            f"{where} expects {in_f}-dimensional embeddings but the embedder makes {dim}-dimensional ones: "
            "use the base embedder the adapter was trained on."
        )
    if out_f is not None and int(out_f) != int(dim):
        raise AdapterError(
            f"{where} outputs {out_f}-dimensional vectors but chunks are {dim}-dimensional: "
            "query and chunk vectors must have the same size to be compared."
        )
