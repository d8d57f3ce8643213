"""scSE (plugattn.modules.scse) against the official ``ChannelSpatialSELayer`` forward and smp's ``SCSEModule``.

The reference is written from the official code: cSE with ``nn.Linear`` layers on the mean over H·W, sSE as a
1×1 conv C → 1 over the full map, and the element-wise max-out (official, TMI) or sum (MICCAI, smp) of the two
recalibrated maps.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn.functional as F

import plugattn
from helpers import assert_matches_reference, param_leaves, rand, randomize_
from plugattn.modules.scse import SpatialChannelSqueezeExcite

F64 = torch.float64
SHAPES = [(2, 7, 5), (1, 13, 17), (2, 1, 1), (3, 6, 6)]


def scse_ref(x, w1, b1, w2, b2, ws, bs, combine):
    """ai-med ChannelSpatialSELayer: cSE (mean, Linear, ReLU, Linear, σ) and sSE (1×1 conv, σ), max-out / add."""
    wc = torch.sigmoid(F.linear(F.relu(F.linear(x.mean((2, 3)), w1, b1)), w2, b2))[:, :, None, None]
    xc = x * wc
    xs = x * torch.sigmoid(F.conv2d(x, ws, bs))
    return torch.max(xc, xs) if combine == "max" else xc + xs


def module_ref(m: SpatialChannelSqueezeExcite, x: torch.Tensor) -> torch.Tensor:
    return scse_ref(x, m.fc1.weight.flatten(1), m.fc1.bias, m.fc2.weight.flatten(1), m.fc2.bias,
                    m.spatial_conv.weight, m.spatial_conv.bias, m.combine)


def build(channels: int = 32, seed: int = 0, **kwargs) -> SpatialChannelSqueezeExcite:
    return randomize_(SpatialChannelSqueezeExcite(channels, dtype=F64, **kwargs), seed).eval()


@pytest.mark.parametrize("kwargs", [{}, {"combine": "add"}, {"rd_ratio": 1 / 16}], ids=str)
def test_scse_matches_reference(kwargs):
    """Output and input gradient equal the reference, for contiguous and channels_last x (layout kept)."""
    m = build(**kwargs)
    assert_matches_reference(m, lambda x: module_ref(m, x), SHAPES, 32)


def test_scse_reference_other_width():
    m = build(64, seed=3)
    x = rand(2, 64, 9, 8, seed=4, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), module_ref(m, x), atol=1e-10, rtol=1e-10)


def _sd(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: 0.5 * rand(*shape, seed=i, dtype=F64) for i, (k, shape) in enumerate(shapes.items())}


def test_scse_matches_official_maxout():
    c = 32
    sd = _sd({"cSE.fc1.weight": (16, c), "cSE.fc1.bias": (16,), "cSE.fc2.weight": (c, 16), "cSE.fc2.bias": (c,),
              "sSE.conv.weight": (1, c, 1, 1), "sSE.conv.bias": (1,)})
    m = plugattn.from_official("scse", sd, num_channels=c).double()
    for n, h, w in SHAPES:
        x = rand(n, c, h, w, seed=13, dtype=F64)
        torch.testing.assert_close(m(x), scse_ref(x, *sd.values(), combine="max"), atol=1e-10, rtol=1e-10)
    assert plugattn.create("scse", c).fc1.out_channels == 16  # official r = 2


def test_scse_smp_is_addition():
    c = 32
    sd = _sd({"cSE.1.weight": (2, c, 1, 1), "cSE.1.bias": (2,), "cSE.3.weight": (c, 2, 1, 1), "cSE.3.bias": (c,),
              "sSE.0.weight": (1, c, 1, 1), "sSE.0.bias": (1,)})
    m = plugattn.from_official("scse_smp", sd, in_channels=c).double()
    x = rand(2, c, 7, 5, seed=14, dtype=F64)
    v = list(sd.values())
    want = scse_ref(x, v[0].flatten(1), v[1], v[2].flatten(1), v[3], v[4], v[5], combine="add")
    torch.testing.assert_close(m(x), want, atol=1e-10, rtol=1e-10)


def test_scse_keys_repr_and_errors():
    m = SpatialChannelSqueezeExcite(64)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "fc1.weight": (32, 64, 1, 1), "fc1.bias": (32,), "fc2.weight": (64, 32, 1, 1), "fc2.bias": (64,),
        "spatial_conv.weight": (1, 64, 1, 1), "spatial_conv.bias": (1,)}
    assert "channels=64, rd_channels=32, combine='max'" in repr(m)
    with pytest.raises(ValueError, match="SpatialChannelSqueezeExcite: combine"):
        SpatialChannelSqueezeExcite(64, combine="mul")
    with pytest.raises(ValueError, match="SpatialChannelSqueezeExcite: rd_ratio"):
        SpatialChannelSqueezeExcite(64, rd_ratio=0)


@pytest.mark.parametrize("combine", ["max", "add"])
def test_fx_trace_and_hooks(combine):
    m = build(combine=combine)
    gm = torch.fx.symbolic_trace(m)
    fired = []
    leaves = list(param_leaves(m))
    assert sorted(leaves) == ["fc1", "fc2", "spatial_conv"]
    for name in leaves:
        m.get_submodule(name).register_forward_hook(lambda *_, name=name: fired.append(name))
    for n, h, w in [(2, 7, 5), (1, 1, 1)]:
        x = rand(n, 32, h, w, seed=h, dtype=F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert sorted(fired) == sorted(leaves)
