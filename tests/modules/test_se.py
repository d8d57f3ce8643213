"""SE and eSE (plugattn.modules.se) against plain formulations of the official code, and timm's classes.

The references apply the module's weights with ``F.conv2d`` on the pooled map, the way the Caffe SE (timm's
legacy ``senet.SEModule``) and VoVNet's ``eSEModule`` do.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import assert_matches_reference, param_leaves, rand, randomize_
from plugattn.modules.se import EffectiveSqueezeExcite, SqueezeExcite

F64 = torch.float64
SHAPES = [(2, 7, 5), (1, 13, 17), (2, 1, 1), (3, 6, 6)]
# PyTorch's float64 Hardsigmoid backward multiplies by the float32 constant 1/6 (relative error 3e-8).
HSIG_TOL = (1e-7, 1e-6)


def build(cls, channels: int = 32, seed: int = 0, **kwargs) -> nn.Module:
    return randomize_(cls(channels, dtype=F64, **kwargs), seed).eval()


def se_ref(m: SqueezeExcite, x: torch.Tensor) -> torch.Tensor:
    """Caffe SE: GAP, 1×1 conv C → C/r, (norm), ReLU, 1×1 conv C/r → C, sigmoid, channel-wise scale."""
    s = F.adaptive_avg_pool2d(x, 1)
    if m.add_maxpool:
        s = 0.5 * s + 0.5 * F.adaptive_max_pool2d(x, 1)
    z = F.conv2d(s, m.fc1.weight, m.fc1.bias)
    if isinstance(m.norm, nn.BatchNorm2d):
        n = m.norm
        z = F.batch_norm(z, n.running_mean, n.running_var, n.weight, n.bias, training=False, eps=n.eps)
    z = F.conv2d(F.relu(z), m.fc2.weight, m.fc2.bias)
    return x * torch.sigmoid(z)


def ese_ref(m: EffectiveSqueezeExcite, x: torch.Tensor) -> torch.Tensor:
    """VoVNet eSE: GAP, one 1×1 conv C → C with bias, the official Hsigmoid ReLU6(z + 3)/6, channel-wise scale."""
    s = F.adaptive_avg_pool2d(x, 1)
    if m.add_maxpool:
        s = 0.5 * s + 0.5 * F.adaptive_max_pool2d(x, 1)
    return x * (F.relu6(F.conv2d(s, m.fc.weight, m.fc.bias) + 3.0) / 6.0)


SE_CONFIGS = [{}, {"add_maxpool": True}, {"bias": False}, {"norm_layer": "batchnorm"},
              {"rd_ratio": 0.25, "rd_divisor": 8}]


@pytest.mark.parametrize("kwargs", SE_CONFIGS, ids=str)
def test_se_matches_reference(kwargs):
    m = build(SqueezeExcite, **kwargs)
    assert_matches_reference(m, lambda x: se_ref(m, x), SHAPES, 32)


@pytest.mark.parametrize("add_maxpool", [False, True])
def test_ese_matches_reference(add_maxpool):
    m = build(EffectiveSqueezeExcite, add_maxpool=add_maxpool)
    assert_matches_reference(m, lambda x: ese_ref(m, x), SHAPES, 32, grad_tol=HSIG_TOL)


def test_se_reference_other_width():
    m = build(SqueezeExcite, 64, seed=3)
    x = rand(2, 64, 9, 8, seed=4, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), se_ref(m, x), atol=1e-10, rtol=1e-10)


def test_se_widths_and_keys():
    """Caffe: hidden width ⌊C/16⌋ with biases; timm: rounded to a multiple of 8; same state_dict keys."""
    assert SqueezeExcite(64).fc1.out_channels == 4
    assert SqueezeExcite(64, rd_divisor=8).fc1.out_channels == 8
    assert SqueezeExcite(1024, rd_divisor=8).fc1.out_channels == 64
    assert SqueezeExcite(8).fc1.out_channels == 1  # at least one hidden unit
    shapes = {k: tuple(v.shape) for k, v in SqueezeExcite(64).state_dict().items()}
    assert shapes == {"fc1.weight": (4, 64, 1, 1), "fc1.bias": (4,), "fc2.weight": (64, 4, 1, 1), "fc2.bias": (64,)}
    assert set(SqueezeExcite(64, bias=False).state_dict()) == {"fc1.weight", "fc2.weight"}
    assert {k: tuple(v.shape) for k, v in EffectiveSqueezeExcite(24).state_dict().items()} == {
        "fc.weight": (24, 24, 1, 1), "fc.bias": (24,)}
    with pytest.raises(ValueError, match="SqueezeExcite: rd_ratio"):
        SqueezeExcite(64, rd_ratio=0)
    with pytest.raises(ValueError, match="SqueezeExcite: rd_channels"):
        SqueezeExcite(64, rd_channels=0)


def test_extra_repr():
    assert "channels=64, rd_channels=4" in repr(SqueezeExcite(64))
    assert "channels=24" in repr(EffectiveSqueezeExcite(24))


def test_se_matches_moskomule_layout():
    """moskomule/senet.pytorch SELayer: Linear layers without bias, keys fc.0 / fc.2."""
    c = 32
    sd = {"fc.0.weight": 0.3 * rand(2, c, seed=1), "fc.2.weight": 0.3 * rand(c, 2, seed=2)}
    m = plugattn.from_official("se_moskomule", sd, channel=c).eval()
    x = rand(2, c, 7, 5, seed=3)
    want = x * torch.sigmoid(F.linear(F.relu(F.linear(x.mean((2, 3)), sd["fc.0.weight"])), sd["fc.2.weight"]))[
        :, :, None, None]
    with torch.no_grad():
        torch.testing.assert_close(m(x), want)


@pytest.mark.parametrize("kwargs", [{}, {"add_maxpool": True}, {"rd_ratio": 0.25}], ids=str)
def test_se_matches_timm(kwargs):
    from timm.layers.squeeze_excite import SEModule

    ref = randomize_(SEModule(32, **kwargs)).double().eval()
    m = plugattn.from_official("se_timm", ref.state_dict(), channels=32, **kwargs).double().eval()
    for n, h, w in SHAPES:
        x = rand(n, 32, h, w, seed=3, dtype=F64)
        torch.testing.assert_close(m(x), ref(x), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("add_maxpool", [False, True])
def test_ese_matches_timm(add_maxpool):
    from timm.layers.squeeze_excite import EffectiveSEModule

    ref = randomize_(EffectiveSEModule(32, add_maxpool=add_maxpool)).double().eval()
    m = plugattn.from_official("ese_timm", ref.state_dict(), channels=32, add_maxpool=add_maxpool).double()
    for n, h, w in SHAPES:
        x = rand(n, 32, h, w, seed=3, dtype=F64)
        torch.testing.assert_close(m(x), ref(x), atol=1e-10, rtol=1e-10)


def test_ese_matches_official_vovnet_layout():
    sd = {"fc.weight": 0.3 * rand(24, 24, 1, 1, seed=1, dtype=F64), "fc.bias": 0.5 * rand(24, seed=2, dtype=F64)}
    m = plugattn.from_official("ese", sd, channel=24, reduction=4).double()
    x = rand(2, 24, 7, 5, seed=4, dtype=F64)
    z = F.conv2d(x.mean((2, 3), keepdim=True), sd["fc.weight"], sd["fc.bias"])
    torch.testing.assert_close(m(x), x * F.relu6(z + 3.0) / 6.0, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cls,kwargs", [(SqueezeExcite, {}), (SqueezeExcite, {"add_maxpool": True, "norm_layer": "bn"}),
                                        (EffectiveSqueezeExcite, {})], ids=str)
def test_fx_trace_and_hooks(cls, kwargs):
    m = build(cls, **kwargs)
    gm = torch.fx.symbolic_trace(m)
    fired = []
    leaves = list(param_leaves(m))
    assert leaves
    for name in leaves:
        m.get_submodule(name).register_forward_hook(lambda *_, name=name: fired.append(name))
    for n, h, w in [(2, 7, 5), (1, 1, 1)]:
        x = rand(n, 32, h, w, seed=h, dtype=F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert sorted(fired) == sorted(leaves)
