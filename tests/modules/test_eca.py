"""ECA and circular ECA (plugattn.modules.eca) against plain formulations of the official code, and timm's CECA.

ECA's reference is the official ``eca_layer``: ``F.conv1d`` over the (N, 1, C) descriptor with zero padding.
CECA's reference writes the circular 1-D convolution out as a sum of rolled descriptors,
z_i = Σ_j w_j s_{(i + j − p) mod C}, independently of padding.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import assert_matches_reference, param_leaves, rand, randomize_
from plugattn.modules.eca import CircularECA, EfficientChannelAttention

F64 = torch.float64
SHAPES = [(2, 7, 5), (1, 13, 17), (2, 1, 1), (3, 6, 6)]


def build(cls, channels: int = 32, seed: int = 0, **kwargs) -> nn.Module:
    return randomize_(cls(channels, dtype=F64, **kwargs), seed).eval()


def eca_ref(m: EfficientChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """ECANet eca_layer: GAP → (N, 1, C) → conv1d (zero padding (k − 1)/2, no bias) → sigmoid → x·y."""
    y = F.adaptive_avg_pool2d(x, 1)  # (N, C, 1, 1)
    k = m.conv.weight.shape[-1]
    y = F.conv1d(y.squeeze(-1).transpose(-1, -2), m.conv.weight, None, padding=(k - 1) // 2)  # (N, 1, C)
    return x * torch.sigmoid(y.transpose(-1, -2).unsqueeze(-1))


def ceca_ref(m: CircularECA, x: torch.Tensor) -> torch.Tensor:
    """timm CecaModule: the k-tap conv over the channel ring, z_i = Σ_j w_j s_{(i + j − p) mod C} (+ b)."""
    s = x.mean((2, 3))  # (N, C)
    w = m.conv.weight.reshape(-1)
    k = w.numel()
    p = (k - 1) // 2
    z = sum(w[j] * torch.roll(s, shifts=p - j, dims=1) for j in range(k))
    if m.conv.bias is not None:
        z = z + m.conv.bias
    return x * torch.sigmoid(z)[:, :, None, None]


@pytest.mark.parametrize("kwargs", [{}, {"kernel_size": 1}, {"kernel_size": 7}, {"kernel_size": 17}], ids=str)
def test_eca_matches_reference(kwargs):
    m = build(EfficientChannelAttention, **kwargs)
    assert_matches_reference(m, lambda x: eca_ref(m, x), SHAPES, 32)


@pytest.mark.parametrize("kwargs", [{}, {"kernel_size": 1}, {"kernel_size": 9, "bias": True}, {"kernel_size": 19}],
                         ids=str)
def test_ceca_matches_reference(kwargs):
    m = build(CircularECA, **kwargs)
    assert_matches_reference(m, lambda x: ceca_ref(m, x), SHAPES, 32)


def test_reference_other_width():
    for cls, ref in ((EfficientChannelAttention, eca_ref), (CircularECA, ceca_ref)):
        m = build(cls, 64, seed=3)
        x = rand(2, 64, 9, 8, seed=4, dtype=F64)
        with torch.no_grad():
            torch.testing.assert_close(m(x), ref(m, x), atol=1e-10, rtol=1e-10)


def test_adaptive_kernel_size_and_keys():
    """ψ(C) = |log₂(C)/γ + b/γ|_odd; CECA bumps it to at least 3 (timm). One conv.weight (1, 1, k), no bias."""
    assert [EfficientChannelAttention(c).kernel_size for c in (16, 64, 256, 512, 1024)] == [3, 3, 5, 5, 5]
    assert [CircularECA(c).kernel_size for c in (1, 4, 16, 256)] == [3, 3, 3, 5]
    assert EfficientChannelAttention(64, gamma=1, beta=1).kernel_size == 7
    assert {k: tuple(v.shape) for k, v in EfficientChannelAttention(256).state_dict().items()} == {
        "conv.weight": (1, 1, 5)}
    assert set(CircularECA(16, bias=True).state_dict()) == {"conv.weight", "conv.bias"}
    with pytest.raises(ValueError, match="EfficientChannelAttention: kernel_size"):
        EfficientChannelAttention(16, kernel_size=4)


def test_extra_repr():
    assert "channels=256, kernel_size=5" in repr(EfficientChannelAttention(256))
    assert "channels=16, kernel_size=3, padding=1" in repr(CircularECA(16))


def test_eca_matches_official_layout():
    sd = {"conv.weight": 0.5 * rand(1, 1, 3, seed=1, dtype=F64)}
    m = plugattn.from_official("eca", sd, channel=64, k_size=3).double()
    x = rand(2, 64, 7, 5, seed=2, dtype=F64)
    torch.testing.assert_close(m(x), eca_ref(m, x), atol=1e-10, rtol=1e-10)
    assert torch.equal(m.conv.weight, sd["conv.weight"])


@pytest.mark.parametrize("channels", [1, 3, 16, 32, 100, 256, 1000])
@pytest.mark.parametrize("act", [None, nn.ReLU])
def test_ceca_matches_timm(channels, act):
    from timm.layers.eca import CecaModule

    ref = randomize_(CecaModule(channels, act_layer=act)).double().eval()
    m = plugattn.from_official("ceca_timm", ref.state_dict(), channels=channels, act_layer=act).double()
    assert m.kernel_size == ref.conv.kernel_size[0]
    x = rand(2, channels, 5, 4, seed=5, dtype=F64)
    torch.testing.assert_close(m(x), ref(x), atol=1e-10, rtol=1e-10)


def test_ceca_wraps_around_unlike_eca():
    for cls, first in ((CircularECA, "wraps"), (EfficientChannelAttention, "zero")):
        m = cls(16, kernel_size=3, dtype=F64)
        with torch.no_grad():
            m.conv.weight.copy_(torch.tensor([[[1.0, 0.0, 0.0]]]))  # output channel i reads channel i − 1
        x = rand(1, 16, 3, 3, seed=6, dtype=F64)
        s = x.mean((2, 3))
        prev = torch.roll(s, 1, dims=1)
        if first == "zero":
            prev[:, 0] = 0  # channel 0 reads the zero padding
        torch.testing.assert_close(m(x), x * torch.sigmoid(prev)[:, :, None, None], atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="kernel_size"):
        plugattn.create("ceca", 16, kernel_size=4)
    with pytest.raises(ValueError, match="kernel_size"):
        plugattn.create("ceca", 2, kernel_size=7)


@pytest.mark.parametrize("cls,kwargs", [
    (EfficientChannelAttention, {}), (EfficientChannelAttention, {"kernel_size": 17}),
    (CircularECA, {}), (CircularECA, {"kernel_size": 1, "bias": True}),
], ids=str)
def test_fx_trace_and_hooks(cls, kwargs):
    m = build(cls, **kwargs)
    gm = torch.fx.symbolic_trace(m)
    fired = []
    leaves = list(param_leaves(m))
    assert leaves == ["conv"]
    for name in leaves:
        m.get_submodule(name).register_forward_hook(lambda *_, name=name: fired.append(name))
    for n, h, w in [(2, 7, 5), (1, 1, 1)]:
        x = rand(n, 32, h, w, seed=h, dtype=F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert fired == leaves
