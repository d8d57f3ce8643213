"""Numerics of Shuffle Attention (``plugattn.modules.shuffle``) against an independent formulation.

The reference follows the official ``sa_layer`` one group at a time (no batch fold): a channel gate from the
GAP on the first half of each group, a GroupNorm-based spatial gate (GN written out) on the second half, then
``channel_shuffle(·, 2)`` as an explicit index list. It reads an official-layout state_dict, so
``from_official("shuffle")`` is checked too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import plugattn
from helpers import TOL, assert_matches_reference, rand, randomize_
from plugattn.modules.shuffle import ShuffleAttention

F64 = torch.float64
SIZES = [(2, 7, 5), (1, 13, 17), (3, 6, 6), (2, 1, 1)]


def close(a, b, dtype=F64):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def official_state_dict(half: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random official-layout weights (float32 numbers held in float64)."""
    shapes = {k: (1, half, 1, 1) for k in ("cweight", "cbias", "sweight", "sbias")} | {
        "gn.weight": (half,), "gn.bias": (half,)}
    g = torch.Generator().manual_seed(seed)
    return {k: (0.5 * torch.randn(s, generator=g)).double() for k, s in shapes.items()}


def sa_reference(sd: dict[str, torch.Tensor], x: torch.Tensor, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """Official sa_layer, one group at a time: channel gate (first half), GN spatial gate (second half); shuffle."""
    b, c, h, w = x.shape
    cg, half = c // groups, c // (2 * groups)

    def v(k):
        return sd[k].view(1, half, 1, 1)

    parts = []
    for g in range(groups):
        x1, x2 = x[:, g * cg:g * cg + half], x[:, g * cg + half:(g + 1) * cg]
        parts.append(x1 * torch.sigmoid(v("cweight") * x1.mean((2, 3), keepdim=True) + v("cbias")))
        mu, var = x2.mean((2, 3), keepdim=True), x2.var((2, 3), unbiased=False, keepdim=True)
        xn = (x2 - mu) / torch.sqrt(var + eps) * sd["gn.weight"].view(1, half, 1, 1) + sd["gn.bias"].view(1, half, 1, 1)
        parts.append(x2 * torch.sigmoid(v("sweight") * xn + v("sbias")))
    pre = torch.cat(parts, 1)
    src = [(j % 2) * (c // 2) + j // 2 for j in range(c)]  # channel_shuffle(·, 2): output j ← input src[j]
    return pre[:, src]


@pytest.mark.parametrize("c,groups", [(128, 64), (32, 4), (16, 8), (24, 3), (12, 1)])
def test_shuffle_matches_official_with_gradients(c, groups):
    half = c // (2 * groups)
    sd = official_state_dict(half, seed=c + groups)
    m = plugattn.from_official("shuffle", sd, channel=c, groups=groups).double()
    assert_matches_reference(m, lambda x: sa_reference(sd, x, groups), SIZES, c, seeds=lambda i, s: (16 + s[1], 17))


def test_shuffle_parameter_gradients_match_official():
    sd = official_state_dict(2, seed=3)
    m = plugattn.from_official("shuffle", sd, channel=32, groups=8).double()
    leaves = {k: v.clone().requires_grad_() for k, v in sd.items()}
    x = rand(2, 32, 6, 5, seed=4, dtype=F64)
    gy = rand(2, 32, 6, 5, seed=5, dtype=F64)
    (m(x) * gy).sum().backward()
    (sa_reference(leaves, x, 8) * gy).sum().backward()
    names = {"cweight": "channel_weight", "cbias": "channel_bias", "sweight": "spatial_weight",
             "sbias": "spatial_bias", "gn.weight": "norm.weight", "gn.bias": "norm.bias"}
    ours = dict(m.named_parameters())
    for k, v in leaves.items():
        close(ours[names[k]].grad, v.grad)


def test_shuffle_init_is_official():
    m = ShuffleAttention(32, groups=4)
    zeros, ones = torch.zeros(1, 4, 1, 1), torch.ones(1, 4, 1, 1)
    assert torch.equal(m.channel_weight, zeros) and torch.equal(m.channel_bias, ones)
    assert torch.equal(m.spatial_weight, zeros) and torch.equal(m.spatial_bias, ones)
    x = rand(2, 32, 5, 4, seed=1)
    sd = {"cweight": torch.zeros(1, 4, 1, 1), "cbias": torch.ones(1, 4, 1, 1), "sweight": torch.zeros(1, 4, 1, 1),
          "sbias": torch.ones(1, 4, 1, 1), "gn.weight": torch.ones(4), "gn.bias": torch.zeros(4)}
    with torch.no_grad():  # both gates σ(1): y is the shuffled x times σ(1)
        close(m(x), sa_reference(sd, x, 4), torch.float32)
        close(m(x), x[:, [(j % 2) * 16 + j // 2 for j in range(32)]] * torch.sigmoid(torch.tensor(1.0)), torch.float32)


def test_shuffle_groups_cap_and_errors():
    assert [plugattn.create("shuffle", c).groups for c in (2, 16, 32, 256, 512)] == [1, 8, 16, 64, 64]
    # any even width: the largest g <= 64 dividing C / 2
    assert [plugattn.create("shuffle", c).groups for c in (160, 192, 440)] == [40, 48, 55]
    with pytest.raises(ValueError, match="ShuffleAttention.*even"):
        plugattn.create("shuffle", 3)
    with pytest.raises(ValueError, match="ShuffleAttention.*divisible.*groups=32 would work"):
        plugattn.create("shuffle", 64, groups=64)
    with pytest.raises(ValueError, match="groups"):
        plugattn.create("shuffle", 64, groups=0)


def test_shuffle_non_contiguous_input():
    m = randomize_(ShuffleAttention(32), seed=2).double()
    x = rand(2, 32, 9, 6, seed=3, dtype=F64).transpose(2, 3)  # (2, 32, 6, 9), not contiguous
    sd = {"cweight": m.channel_weight, "cbias": m.channel_bias, "sweight": m.spatial_weight,
          "sbias": m.spatial_bias, "gn.weight": m.norm.weight, "gn.bias": m.norm.bias}
    with torch.no_grad():
        close(m(x), sa_reference(sd, x, m.groups))


# ---- an ordinary nn.Module ---------------------------------------------------------------------------------------


def test_shuffle_symbolic_trace_equals_eager():
    m = randomize_(ShuffleAttention(32), seed=6)
    gm = torch.fx.symbolic_trace(m)
    with torch.no_grad():
        for shape in [(2, 32, 7, 5), (1, 32, 1, 1), (3, 32, 13, 17)]:
            x = rand(*shape, seed=7)
            close(gm(x), m(x), torch.float32)


def test_shuffle_forward_hooks_fire_on_every_parameter_leaf():
    m = ShuffleAttention(32)
    leaves = {p: s for p, s in m.named_modules() if p and not list(s.children()) and list(s.parameters(False))}
    assert set(leaves) == {"norm"}
    fired = []
    for path, leaf in leaves.items():
        leaf.register_forward_hook(lambda mod, args, out, path=path: fired.append(path))
    with torch.no_grad():
        m(rand(2, 32, 6, 5))
    assert fired == ["norm"]


def test_shuffle_norm_is_the_child_module():
    """Replacing the GroupNorm child by an identity gives the spatial gate σ(W₂·x₂ + b₂)."""
    m = randomize_(ShuffleAttention(16, groups=2), seed=8).double()
    m.norm = nn.Identity()
    x = rand(2, 16, 5, 6, seed=9, dtype=F64)
    cw, cb, sw, sb = m.channel_weight, m.channel_bias, m.spatial_weight, m.spatial_bias
    parts = []
    for g in range(2):
        x1, x2 = x[:, 8 * g:8 * g + 4], x[:, 8 * g + 4:8 * g + 8]
        parts += [x1 * torch.sigmoid(cw * x1.mean((2, 3), keepdim=True) + cb), x2 * torch.sigmoid(sw * x2 + sb)]
    want = torch.cat(parts, 1)[:, [(j % 2) * 8 + j // 2 for j in range(16)]]
    with torch.no_grad():
        close(m(x), want)


def test_shuffle_extra_repr():
    assert ShuffleAttention(64, groups=8).extra_repr() == "channels=64, groups=8"
