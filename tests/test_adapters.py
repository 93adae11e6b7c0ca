"""Adapters: identity init, LlamaIndex folder format both ways, safe loading, custom classes."""

from __future__ import annotations

import json
import os

import pytest
import torch

from core import adapters as A
from core.adapters import (
    AdapterError,
    LinearLayer,
    TwoLayerNN,
    build_adapter,
    check_adapter_fits,
    load_adapter,
    register_adapter,
    resolve_adapter_class,
    save_adapter,
)
from tests.custom_adapter_example import MyAdapter, NotAnAdapter

DIM = 8


def _x(n: int = 5, dim: int = DIM) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(1))


def _perturb(adapter: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        g = torch.Generator().manual_seed(7)
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return adapter


# ------------------------------------------------------------------------------------------------
# identity initialisation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [False, True])
def test_linear_starts_as_identity(bias):
    a = build_adapter("linear", DIM, bias=bias)
    x = _x()
    assert torch.equal(a(x), x)
    assert torch.equal(a.linear.weight, torch.eye(DIM))
    if bias:
        assert torch.equal(a.linear.bias, torch.zeros(DIM))


def test_two_layer_with_residual_starts_as_identity():
    a = build_adapter("two-layer", DIM, hidden_features=16)
    assert a.get_config_dict()["add_residual"] is True
    x = _x()
    assert torch.equal(a(x), x)
    assert a.residual_weight.shape == (1,) and a.residual_weight.item() == 0.0


def test_two_layer_without_residual_is_the_plain_mlp():
    a = TwoLayerNN(DIM, 16, DIM, add_residual=False)
    x = _x()
    expected = a.linear2(torch.relu(a.linear1(x)))
    assert torch.allclose(a(x), expected)
    assert not torch.allclose(a(x), x)


def test_two_layer_residual_formula():
    a = _perturb(TwoLayerNN(DIM, 16, DIM, add_residual=True, activation_fn_str="tanh"))
    x = _x()
    expected = a.residual_weight * a.linear2(torch.tanh(a.linear1(x))) + x
    assert torch.allclose(a(x), expected)


def test_two_layer_rejects_bad_arguments():
    with pytest.raises(AdapterError, match="activation"):
        TwoLayerNN(DIM, 16, DIM, activation_fn_str="swishy")
    with pytest.raises(AdapterError, match="in_features == out_features"):
        TwoLayerNN(DIM, 16, DIM + 1, add_residual=True)


# ------------------------------------------------------------------------------------------------
# LlamaIndex folder format
# ------------------------------------------------------------------------------------------------
def _state_keys(folder) -> set[str]:
    return set(torch.load(folder / "pytorch_model.bin", weights_only=True))


@pytest.mark.parametrize(
    "kind, kwargs, config_keys, state_keys",
    [
        ("linear", {}, {"in_features", "out_features", "bias"}, {"linear.weight"}),
        ("linear", {"bias": True}, {"in_features", "out_features", "bias"}, {"linear.weight", "linear.bias"}),
        (
            "two-layer",
            {"hidden_features": 16},
            {"in_features", "hidden_features", "out_features", "bias", "activation_fn_str", "add_residual"},
            {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "residual_weight"},
        ),
    ],
)
def test_save_writes_llamaindex_files(tmp_path, kind, kwargs, config_keys, state_keys):
    a = build_adapter(kind, DIM, **kwargs)
    folder = save_adapter(a, tmp_path / "out", embedder_identity="st:test")
    assert (folder / "config.json").is_file() and (folder / "pytorch_model.bin").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert set(config) == config_keys
    assert config["in_features"] == DIM and config["out_features"] == DIM
    assert _state_keys(folder) == state_keys
    # the config is exactly the constructor kwargs (LlamaIndex does cls(**config))
    type(a)(**config)
    meta = json.loads((folder / "adapterlab.json").read_text())
    assert meta["adapter_cls"] == kind and meta["embedder_identity"] == "st:test"


@pytest.mark.parametrize("kind", ["linear", "two-layer", "low-rank"])
def test_save_load_round_trip(tmp_path, kind):
    a = _perturb(build_adapter(kind, DIM, hidden_features=16 if kind == "two-layer" else None))
    save_adapter(a, tmp_path / kind)
    b = load_adapter(tmp_path / kind)
    assert type(b) is type(a)
    assert b.get_config_dict() == a.get_config_dict()
    x = _x()
    assert torch.allclose(a(x), b(x))
    assert not b.training  # loaded in eval mode


def test_saved_weights_are_plain_tensors(tmp_path):
    save_adapter(_perturb(build_adapter("two-layer", DIM, hidden_features=4)), tmp_path / "a")
    state = torch.load(tmp_path / "a" / "pytorch_model.bin", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["residual_weight"].shape == (1,)


def test_loads_a_linear_folder_written_by_llamaindex(tmp_path):
    """What LlamaIndex's BaseAdapter.save writes: config.json + torch.save(state_dict), no adapterlab.json."""
    folder = tmp_path / "li_linear"
    folder.mkdir()
    w = torch.randn(DIM, DIM)
    b = torch.randn(DIM)
    (folder / "config.json").write_text(json.dumps({"in_features": DIM, "out_features": DIM, "bias": True}))
    torch.save({"linear.weight": w, "linear.bias": b}, folder / "pytorch_model.bin")
    a = load_adapter(folder)  # class inferred from the config keys
    assert isinstance(a, LinearLayer)
    x = _x()
    assert torch.allclose(a(x), x @ w.T + b, atol=1e-6)


def test_loads_a_two_layer_folder_written_by_llamaindex(tmp_path):
    folder = tmp_path / "li_2layer"
    folder.mkdir()
    cfg = {
        "in_features": DIM,
        "hidden_features": 12,
        "out_features": DIM,
        "bias": True,
        "activation_fn_str": "relu",
        "add_residual": True,
    }
    state = {
        "linear1.weight": torch.randn(12, DIM),
        "linear1.bias": torch.randn(12),
        "linear2.weight": torch.randn(DIM, 12),
        "linear2.bias": torch.randn(DIM),
        "residual_weight": torch.tensor([0.3]),
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    torch.save(state, folder / "pytorch_model.bin")
    x = _x()
    expected = (
        0.3
        * (
            torch.relu(x @ state["linear1.weight"].T + state["linear1.bias"]) @ state["linear2.weight"].T
            + state["linear2.bias"]
        )
        + x
    )
    for a in (
        load_adapter(folder),
        load_adapter(folder, adapter_cls="two-layer"),
        load_adapter(folder, adapter_cls=TwoLayerNN),
    ):
        assert isinstance(a, TwoLayerNN)
        assert torch.allclose(a(x), expected, atol=1e-5)


def test_unknown_config_keys_need_adapter_cls(tmp_path):
    save_adapter(MyAdapter(DIM, DIM), tmp_path / "mine")
    os.remove(tmp_path / "mine" / "adapterlab.json")  # as if LlamaIndex had written it
    with pytest.raises(AdapterError, match="adapter_cls"):
        load_adapter(tmp_path / "mine")
    with pytest.raises(AdapterError, match="import path"):  # a path is imported only on the user's opt-in
        load_adapter(tmp_path / "mine", adapter_cls="tests.custom_adapter_example:MyAdapter")
    a = load_adapter(tmp_path / "mine", adapter_cls="tests.custom_adapter_example:MyAdapter", allow_custom_code=True)
    assert isinstance(a, MyAdapter)


class _Evil:
    """Unpickling this runs os.mkdir(marker): the classic malicious weights file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_weights_with_a_pickled_object_are_refused(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "config.json").write_text(json.dumps({"in_features": DIM, "out_features": DIM, "bias": False}))
    torch.save({"linear.weight": torch.eye(DIM), "payload": _Evil(str(marker))}, folder / "pytorch_model.bin")

    with pytest.raises(AdapterError, match="weights_only"):
        load_adapter(folder)
    assert not marker.exists(), "the payload ran: the weights were unpickled"

    # sanity: the file really is malicious when loaded the unsafe way
    torch.load(folder / "pytorch_model.bin", weights_only=False)
    assert marker.exists()


def test_broken_folders_give_clear_errors(tmp_path):
    with pytest.raises(AdapterError, match="not an adapter folder"):
        load_adapter(tmp_path)
    folder = save_adapter(build_adapter("linear", DIM), tmp_path / "a")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        load_adapter(folder)
    # weights of another size
    (folder / "config.json").write_text(json.dumps({"in_features": DIM * 2, "out_features": DIM * 2, "bias": False}))
    with pytest.raises(AdapterError, match="do not fit"):
        load_adapter(folder)
    # a config saved in another encoding, and weights cut short: the file is named and the cause said
    good = save_adapter(build_adapter("linear", DIM), tmp_path / "b")
    (good / "config.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(AdapterError, match=r"config.json: not a UTF-8 text file"):
        load_adapter(good)
    good = save_adapter(build_adapter("linear", DIM), tmp_path / "c")
    w = good / "pytorch_model.bin"
    w.write_bytes(w.read_bytes()[:200])
    with pytest.raises(AdapterError, match=r"pytorch_model.bin: cannot be read .*damaged or incomplete") as info:
        load_adapter(good)
    assert "weights_only" not in str(info.value)
    # a size no layer can have, or one that would allocate gigabytes before the weights are read: refused first
    for size in (-1, 0, 10**7, "384"):
        (folder / "config.json").write_text(json.dumps({"in_features": size, "out_features": DIM, "bias": False}))
        with pytest.raises(AdapterError, match=r"config does not fit .*in_features must be a whole number from 1"):
            load_adapter(folder)


def test_check_adapter_fits():
    a = build_adapter("linear", DIM)
    check_adapter_fits(a, DIM)
    with pytest.raises(AdapterError, match=rf"expects {DIM}-dimensional embeddings but the embedder makes 384"):
        check_adapter_fits(a, 384, where="my adapter")
    narrow = LinearLayer(DIM, 4)
    with pytest.raises(AdapterError, match="outputs 4-dimensional"):
        check_adapter_fits(narrow, DIM)


# ------------------------------------------------------------------------------------------------
# a shared folder cannot run code
# ------------------------------------------------------------------------------------------------
def malicious_folder(root, dim: int = DIM):
    """The audit's attack: ``downloaded_adapter/`` holding a valid linear adapter, a ``payload.py``
    and an ``adapterlab.json`` that names ``downloaded_adapter.payload:Evil``. Returns (folder,
    marker): the payload writes ``marker`` when it runs."""
    folder = save_adapter(build_adapter("linear", dim), root / "downloaded_adapter")
    marker = root / "PAYLOAD_RAN"
    (folder / "payload.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from core.adapters import LinearLayer as Evil\n"
    )
    meta = json.loads((folder / "adapterlab.json").read_text())
    (folder / "adapterlab.json").write_text(json.dumps({**meta, "adapter_cls": "downloaded_adapter.payload:Evil"}))
    return folder, marker


def test_a_shared_folder_cannot_make_adapterlab_import_its_code(tmp_path, monkeypatch):
    folder, marker = malicious_folder(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m core` run from the folder's parent
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AdapterError, match="does not import code because a file names it.*--allow-custom-code"):
        load_adapter(folder)
    with pytest.raises(AdapterError, match="an import path"):
        load_adapter(folder, adapter_cls="downloaded_adapter.payload:Evil")  # no opt-in: still refused
    assert A.folder_import_path(folder) == "downloaded_adapter.payload:Evil"
    assert not marker.exists(), "the payload ran"
    # the weights themselves are fine: the user can load them as the built-in class
    assert isinstance(load_adapter(folder, adapter_cls="linear"), LinearLayer)
    assert not marker.exists()
    # sanity: the payload is real, and the explicit opt-in is what runs it
    monkeypatch.delitem(__import__("sys").modules, "downloaded_adapter.payload", raising=False)
    load_adapter(folder, allow_custom_code=True)
    assert marker.exists()
    monkeypatch.delitem(__import__("sys").modules, "downloaded_adapter.payload", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "downloaded_adapter", raising=False)


def test_registered_names_in_a_folder_need_no_opt_in(tmp_path):
    folder = save_adapter(build_adapter("low-rank", DIM, rank=2), tmp_path / "lr")
    assert A.folder_import_path(folder) is None
    assert type(load_adapter(folder)).__name__ == "LowRankResidual"
    assert A.is_import_path("pkg.mod:Cls") and A.is_import_path("pkg.mod.Cls")
    assert not A.is_import_path("linear") and not A.is_import_path("MLP")


def test_a_deeply_nested_config_is_an_adapter_error(tmp_path):
    folder = save_adapter(build_adapter("linear", DIM), tmp_path / "a")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AdapterError, match="config.json"):
        load_adapter(folder)
    (folder / "adapterlab.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    assert A.read_adapter_meta(folder) == {}


# ------------------------------------------------------------------------------------------------
# registry and custom adapters
# ------------------------------------------------------------------------------------------------
def test_custom_adapter_by_import_path(tmp_path):
    a = build_adapter("tests.custom_adapter_example:MyAdapter", DIM, init_scale=1.0, allow_custom_code=True)
    assert isinstance(a, MyAdapter)
    x = _x()
    assert torch.equal(a(x), x)
    _perturb(a)
    save_adapter(a, tmp_path / "mine")
    meta = json.loads((tmp_path / "mine" / "adapterlab.json").read_text())
    assert meta["adapter_cls"] == "tests.custom_adapter_example:MyAdapter"
    with pytest.raises(AdapterError, match="names the class 'tests.custom_adapter_example:MyAdapter', an import path"):
        load_adapter(tmp_path / "mine")  # the file alone never makes AdapterLab import code
    b = load_adapter(tmp_path / "mine", allow_custom_code=True)  # class found from adapterlab.json
    assert isinstance(b, MyAdapter) and torch.allclose(a(x), b(x))
    # dotted form works too
    assert resolve_adapter_class("tests.custom_adapter_example.MyAdapter", allow_import=True) is MyAdapter


def test_register_adapter(monkeypatch):
    monkeypatch.setattr(A, "_REGISTRY", dict(A._REGISTRY))
    register_adapter("scale-shift", MyAdapter)
    assert "scale-shift" in A.registered_adapters()
    a = build_adapter("scale-shift", DIM)
    assert isinstance(a, MyAdapter) and a.in_features == DIM
    assert A.adapter_name(a) == "scale-shift"
    with pytest.raises(AdapterError, match="not an nn.Module"):
        register_adapter("bad", NotAnAdapter)


def test_aliases_and_unknown_names():
    assert resolve_adapter_class("two_layer") is TwoLayerNN
    assert resolve_adapter_class("MLP") is TwoLayerNN
    with pytest.raises(AdapterError, match=r"unknown adapter 'quadratic'.*linear.*two-layer"):
        resolve_adapter_class("quadratic")
    with pytest.raises(AdapterError, match="import path.*--allow-custom-code"):
        resolve_adapter_class("no_such_package.mod:Thing")
    with pytest.raises(AdapterError, match="cannot import"):
        resolve_adapter_class("no_such_package.mod:Thing", allow_import=True)
    with pytest.raises(AdapterError, match="cannot import"):
        resolve_adapter_class("tests.custom_adapter_example:Missing", allow_import=True)
    with pytest.raises(AdapterError, match="not an nn.Module"):
        resolve_adapter_class("tests.custom_adapter_example:NotAnAdapter", allow_import=True)
    with pytest.raises(AdapterError, match="cannot build"):
        build_adapter("linear", DIM, no_such_kwarg=3)
