"""Numerics of EMA (``plugattn.modules.ema``) against an independent formulation.

The reference follows the official ``EMA`` one group of one sample at a time (no reshapes, no modules): the
1×1 branch on the W- and H-pooled descriptors, GroupNorm written out, the 3×3 conv, and the cross-spatial
softmax products. It reads an official-layout state_dict, so ``from_official("ema")`` is checked too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import TOL, assert_matches_reference, rand, randomize_
from plugattn.modules.ema import EfficientMultiScaleAttention

F64 = torch.float64
SIZES = [(2, 7, 5), (1, 13, 17), (3, 6, 6), (2, 1, 1), (1, 1, 4)]


def close(a, b, dtype=F64):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def official_state_dict(cg: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random official-layout weights (float32 numbers held in float64)."""
    shapes = {"conv1x1.weight": (cg, cg, 1, 1), "conv1x1.bias": (cg,), "conv3x3.weight": (cg, cg, 3, 3),
              "conv3x3.bias": (cg,), "gn.weight": (cg,), "gn.bias": (cg,)}
    g = torch.Generator().manual_seed(seed)
    return {k: (0.5 * torch.randn(s, generator=g)).double() for k, s in shapes.items()}


def ema_reference(sd: dict[str, torch.Tensor], x: torch.Tensor, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """Official EMA, one group of one sample at a time: 1×1 and 3×3 branches, cross-spatial learning."""
    b, c, h, w = x.shape
    cg = c // groups
    w1, b1 = sd["conv1x1.weight"][:, :, 0, 0], sd["conv1x1.bias"]
    outs = []
    for n in range(b):
        per_group = []
        for g in range(groups):
            xg = x[n, g * cg:(g + 1) * cg]  # (C', H, W)
            a_h = w1 @ xg.mean(2) + b1[:, None]  # (C', H): pooled over W
            a_w = w1 @ xg.mean(1) + b1[:, None]  # (C', W): pooled over H
            z = xg * torch.sigmoid(a_h)[:, :, None] * torch.sigmoid(a_w)[:, None, :]
            mu, var = z.mean((1, 2), keepdim=True), z.var((1, 2), unbiased=False, keepdim=True)
            x1 = (z - mu) / torch.sqrt(var + eps) * sd["gn.weight"][:, None, None] + sd["gn.bias"][:, None, None]
            x2 = F.conv2d(xg[None], sd["conv3x3.weight"], sd["conv3x3.bias"], padding=1)[0]
            s1, s2 = torch.softmax(x1.mean((1, 2)), 0), torch.softmax(x2.mean((1, 2)), 0)
            attn = torch.einsum("c,chw->hw", s1, x2) + torch.einsum("c,chw->hw", s2, x1)
            per_group.append(xg * torch.sigmoid(attn))
        outs.append(torch.cat(per_group, 0))
    return torch.stack(outs, 0)


@pytest.mark.parametrize("c,factor", [(64, 32), (32, 8), (24, 4), (16, 1)])
def test_ema_matches_official_with_gradients(c, factor):
    sd = official_state_dict(c // factor, seed=c + factor)
    m = plugattn.from_official("ema", sd, channels=c, factor=factor).double()
    assert_matches_reference(m, lambda x: ema_reference(sd, x, factor), SIZES, c, seeds=lambda i, s: (15 + s[1], 16))


def test_ema_parameter_gradients_match_official():
    sd = official_state_dict(4, seed=3)
    m = plugattn.from_official("ema", sd, channels=32, factor=8).double()
    leaves = {k: v.clone().requires_grad_() for k, v in sd.items()}
    x = rand(2, 32, 6, 5, seed=4, dtype=F64)
    gy = rand(2, 32, 6, 5, seed=5, dtype=F64)
    (m(x) * gy).sum().backward()
    (ema_reference(leaves, x, 8) * gy).sum().backward()
    ours = dict(m.named_parameters())
    for k, v in leaves.items():
        close(ours[k.replace("gn.", "norm.")].grad, v.grad)


def test_ema_float32_matches_float64():
    m = randomize_(EfficientMultiScaleAttention(64), seed=1)
    x = rand(2, 64, 9, 7, seed=2)
    with torch.no_grad():
        close(m(x), m.double()(x.double()).float(), torch.float32)


def test_ema_groups_cap_and_errors():
    assert [plugattn.create("ema", c).groups for c in (1, 2, 16, 32, 64, 256)] == [1, 1, 8, 16, 32, 32]
    assert plugattn.create("ema", 64, groups=8).groups == 8
    # any width: the largest divisor of C not above min(32, C // 2)
    assert [plugattn.create("ema", c).groups for c in (80, 112, 440)] == [20, 28, 22]
    with pytest.raises(ValueError, match="EfficientMultiScaleAttention.*divisible.*groups=20 would work"):
        plugattn.create("ema", 80, groups=32)
    with pytest.raises(ValueError, match="groups"):
        plugattn.create("ema", 64, groups=0)


def test_ema_layers_are_shared_by_the_groups():
    m = EfficientMultiScaleAttention(64, groups=16)
    assert m.conv1x1.weight.shape == (4, 4, 1, 1) and m.conv3x3.weight.shape == (4, 4, 3, 3)
    assert m.norm.num_groups == 4 and m.norm.num_channels == 4
    assert set(m.state_dict()) == {"conv1x1.weight", "conv1x1.bias", "conv3x3.weight", "conv3x3.bias",
                                   "norm.weight", "norm.bias"}


# ---- an ordinary nn.Module ---------------------------------------------------------------------------------------


def test_ema_symbolic_trace_equals_eager():
    m = randomize_(EfficientMultiScaleAttention(32), seed=6)
    gm = torch.fx.symbolic_trace(m)
    with torch.no_grad():
        for shape in [(2, 32, 7, 5), (1, 32, 1, 1), (3, 32, 13, 17)]:
            x = rand(*shape, seed=7)
            close(gm(x), m(x), torch.float32)


def test_ema_forward_hooks_fire_on_every_parameter_leaf():
    m = EfficientMultiScaleAttention(32)
    leaves = {p: s for p, s in m.named_modules() if p and not list(s.children()) and list(s.parameters(False))}
    assert set(leaves) == {"conv1x1", "conv3x3", "norm"}
    fired = []
    for path, leaf in leaves.items():
        leaf.register_forward_hook(lambda mod, args, out, path=path: fired.append(path))
    with torch.no_grad():
        m(rand(2, 32, 6, 5))
    assert sorted(fired) == sorted(leaves)


def test_ema_norm_is_the_child_module():
    """Replacing the GroupNorm child by an identity gives the formula without GN (the child is what runs)."""
    sd = official_state_dict(4, seed=8)
    m = plugattn.from_official("ema", sd, channels=16, factor=4).double()
    x = rand(2, 16, 5, 6, seed=9, dtype=F64)
    b, c, h, w = x.shape
    with torch.no_grad():
        with_norm = m(x)
        m.norm = nn.Identity()
        gx = x.reshape(b * 4, 4, h, w)
        a = F.conv2d(torch.cat([gx.mean(3, keepdim=True), gx.mean(2, keepdim=True).transpose(2, 3)], 2),
                     sd["conv1x1.weight"], sd["conv1x1.bias"])
        x1 = gx * torch.sigmoid(a[:, :, :h]) * torch.sigmoid(a[:, :, h:].transpose(2, 3))  # no GN
        x2 = F.conv2d(gx, sd["conv3x3.weight"], sd["conv3x3.bias"], padding=1)
        s1 = torch.softmax(x1.mean((2, 3)), 1)[:, None]
        s2 = torch.softmax(x2.mean((2, 3)), 1)[:, None]
        attn = s1 @ x2.flatten(2) + s2 @ x1.flatten(2)
        want = (gx * torch.sigmoid(attn.view(b * 4, 1, h, w))).view(b, c, h, w)
        close(m(x), want)
        assert not torch.allclose(with_norm, want)


def test_ema_extra_repr():
    assert EfficientMultiScaleAttention(64, groups=8).extra_repr() == "channels=64, groups=8"
