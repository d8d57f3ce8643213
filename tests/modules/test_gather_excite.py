"""Gather-Excite (plugattn.modules.gather_excite) against a plain formulation of the paper and timm's class.

The reference gathers with explicit windows (the mean, and for ``add_maxpool`` the max, over the clipped
(2e − 1)² window centred at (e·i, e·j), i.e. padding excluded), or with the strided depthwise convs of GE-θ as
``F.conv2d``; the excite MLP as ``F.conv2d``; and redistributes by nearest-neighbour indexing
(row ⌊i·H'/H⌋, column ⌊j·W'/W⌋), independently of ``F.avg_pool2d`` and ``F.interpolate``.
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import assert_matches_reference, rand, randomize_
from plugattn.modules.gather_excite import GatherExcite

F64 = torch.float64
SHAPES = [(2, 7, 5), (1, 13, 17), (2, 1, 1), (3, 6, 6)]


def _bn_eval(t: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _window_pool(x: torch.Tensor, e: int, maximum: bool = False) -> torch.Tensor:
    """Mean (or max) over the clipped (2e − 1)² window centred at (e·i, e·j): (N, C, ⌈H/e⌉, ⌈W/e⌉)."""
    h, w = x.shape[-2:]
    rows = []
    for ci in range(0, h, e):
        cols = []
        for cj in range(0, w, e):
            win = x[:, :, max(ci - e + 1, 0):ci + e, max(cj - e + 1, 0):cj + e]
            cols.append(win.amax((2, 3)) if maximum else win.mean((2, 3)))
        rows.append(torch.stack(cols, -1))
    return torch.stack(rows, -2)


def ge_ref(m: GatherExcite, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    if m.gather is not None:  # GE-θ: depthwise 3×3 stride-2 convs, norm after each, act between
        s = x
        convs = [c for c in m.gather if isinstance(c, nn.Conv2d)]
        norms = [b for b in m.gather if isinstance(b, nn.BatchNorm2d)]
        for i, conv in enumerate(convs):
            s = _bn_eval(F.conv2d(s, conv.weight, None, 2, 1, 1, x.shape[1]), norms[i])
            if i != len(convs) - 1:
                s = F.relu(s)
    elif m.extent == 0:
        s = x.mean((2, 3), keepdim=True)
        if m.add_maxpool:
            s = 0.5 * s + 0.5 * x.amax((2, 3), keepdim=True)
    else:
        s = _window_pool(x, m.extent)
        if m.add_maxpool:
            s = 0.5 * s + 0.5 * _window_pool(x, m.extent, maximum=True)
    if m.fc1 is not None:
        s = F.conv2d(F.relu(F.conv2d(s, m.fc1.weight, m.fc1.bias)), m.fc2.weight, m.fc2.bias)
    if m.extent != 0:  # nearest neighbour back to H × W
        hs, ws = s.shape[-2:]
        s = s[:, :, [i * hs // h for i in range(h)]][:, :, :, [j * ws // w for j in range(w)]]
    return x * torch.sigmoid(s)


def build(channels: int = 32, seed: int = 0, **kwargs) -> GatherExcite:
    return randomize_(GatherExcite(channels, dtype=F64, **kwargs), seed).eval()


GE_CONFIGS = [
    {}, {"use_mlp": True}, {"extent": 2}, {"extent": 4, "use_mlp": True}, {"extent": 6},
    {"extent": 2, "extra_params": True}, {"extent": 8, "extra_params": True, "use_mlp": True},
    {"add_maxpool": True, "use_mlp": True}, {"extent": 4, "add_maxpool": True},
]


@pytest.mark.parametrize("kwargs", GE_CONFIGS, ids=str)
def test_ge_matches_reference(kwargs):
    """Output and input gradient equal the reference, for contiguous and channels_last x (layout kept)."""
    m = build(**kwargs)
    assert_matches_reference(m, lambda x: ge_ref(m, x), SHAPES, 32)


@pytest.fixture
def timm_ge(monkeypatch):
    """timm's GatherExcite, with its ``*dd`` (a dict passed positionally; timm 1.0.31) calls repaired."""
    import timm.layers.gather_excite as ge

    def strip(fn):
        def call(*args, **kwargs):
            return fn(*[a for a in args if not (isinstance(a, str) and a in ("device", "dtype"))], **kwargs)
        return call

    monkeypatch.setattr(ge, "ConvMlp", strip(ge.ConvMlp))
    monkeypatch.setattr(ge, "create_conv2d", strip(ge.create_conv2d))
    monkeypatch.setattr(ge, "nn", types.SimpleNamespace(
        Module=nn.Module, Sequential=nn.Sequential, Identity=nn.Identity, BatchNorm2d=strip(nn.BatchNorm2d)))
    return ge.GatherExcite


TIMM_CONFIGS = [
    {}, {"use_mlp": False}, {"extent": 2}, {"extent": 4, "use_mlp": False}, {"extent": 6, "use_mlp": False},
    {"extent": 2, "extra_params": True}, {"extent": 8, "extra_params": True},
    {"extent": 4, "extra_params": True, "use_mlp": False}, {"add_maxpool": True},
    {"extent": 4, "add_maxpool": True, "use_mlp": False}, {"rd_ratio": 0.25, "rd_divisor": 8},
]


@pytest.mark.parametrize("kw", TIMM_CONFIGS, ids=str)
def test_ge_matches_timm(timm_ge, kw):
    ref = randomize_(timm_ge(32, **kw)).double().eval()
    m = plugattn.from_official("ge_timm", ref.state_dict(), channels=32, **kw).double().eval()
    for n, h, w in SHAPES:
        x = rand(n, 32, h, w, seed=7, dtype=F64)
        torch.testing.assert_close(m(x), ref(x), atol=1e-10, rtol=1e-10)


def test_ge_default_is_parameter_free_global_theta_minus():
    m = plugattn.create("ge", 16).double()
    assert sum(p.numel() for p in m.parameters()) == 0
    x = rand(2, 16, 7, 5, seed=8, dtype=F64)
    torch.testing.assert_close(m(x), x * torch.sigmoid(x.mean((2, 3), keepdim=True)), atol=1e-12, rtol=1e-12)
    assert "channels=16, extent=0, extra_params=False, rd_channels=None" in repr(m)


def test_ge_keys_and_widths():
    m = GatherExcite(64, extent=4, extra_params=True, use_mlp=True)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")} == {
        "gather.conv1.weight": (64, 1, 3, 3), "gather.conv2.weight": (64, 1, 3, 3),
        **{f"gather.norm{i}.{b}": (64,) for i in (1, 2) for b in ("weight", "bias", "running_mean", "running_var")},
        "fc1.weight": (4, 64, 1, 1), "fc1.bias": (4,), "fc2.weight": (64, 4, 1, 1), "fc2.bias": (64,)}
    assert GatherExcite(64, use_mlp=True, rd_ratio=0.25, rd_divisor=8).rd_channels == 16
    assert GatherExcite(8, use_mlp=True).rd_channels == 1


@pytest.mark.parametrize("kw", [{"extent": 3}, {"extent": 0, "extra_params": True},
                                {"extent": 6, "extra_params": True}, {"extent": -2},
                                {"extent": 2, "extra_params": True, "add_maxpool": True},
                                {"use_mlp": True, "rd_ratio": 0}])
def test_ge_bad_arguments(kw):
    with pytest.raises(ValueError, match="GatherExcite"):
        plugattn.create("ge", 16, **kw)


def test_ge_torch_export_follows_the_size():
    """A local extent exports with dynamic sizes; PyTorch's pooling and resize guard the pooled size against 1,
    so sizes start at 3 (the global extent also exports at 1×1: tests/test_export.py)."""
    m = randomize_(GatherExcite(16, extent=2, use_mlp=True), seed=1).eval()
    dim = torch.export.Dim
    ep = torch.export.export(m, (rand(2, 16, 9, 11, seed=2),), dynamic_shapes={
        "x": {0: dim("batch"), 2: dim("height", min=3), 3: dim("width", min=3)}})
    for n, h, w in [(2, 9, 11), (3, 13, 17), (1, 3, 4)]:
        x = rand(n, 16, h, w, seed=h)
        with torch.no_grad():
            torch.testing.assert_close(ep.module()(x), m(x))


@pytest.mark.parametrize("kwargs", [{"use_mlp": True}, {"extent": 2, "use_mlp": True},
                                    {"extent": 4, "extra_params": True, "use_mlp": True}], ids=str)
def test_fx_trace_and_hooks(kwargs):
    m = build(**kwargs)
    gm = torch.fx.symbolic_trace(m)
    fired = []
    leaves = [n for n, s in m.named_modules() if not list(s.children()) and list(s.parameters(recurse=False))]
    assert {"fc1", "fc2"} <= set(leaves)
    for name in leaves:
        m.get_submodule(name).register_forward_hook(lambda *_, name=name: fired.append(name))
    for n, h, w in [(2, 7, 5), (1, 1, 1)]:
        x = rand(n, 32, h, w, seed=h, dtype=F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert sorted(fired) == sorted(leaves)
