"""CBAM and Triplet Attention against independent re-derivations of the official code.

The references below are plain PyTorch written from SPEC.md §3 (CBAM) and §5 (Triplet): they take the official
state_dict (official key names), and Triplet's reference rotates ``x`` with ``permute(...).contiguous()`` as the
official code does. Our modules are built through ``from_official`` from random official state_dicts.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import plugattn
from plugattn._layers import Gate
from plugattn.modules.cbam import CBAM, CBAMChannelGate, CBAMSpatialGate, ZPoolGate, _conv_2to1, _max_mean
from plugattn.modules.triplet import TripletAttention
from helpers import TOL, rand

# ---------------------------------------------------------------------------------------------------------------
# random official state_dicts (official key names)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape: int, scale: float = 0.5) -> Tensor:
    return scale * torch.randn(*shape, generator=g)


def official_bn(g: torch.Generator, prefix: str) -> dict[str, Tensor]:
    return {
        prefix + "weight": 0.5 + torch.rand(1, generator=g),
        prefix + "bias": _randn(g, 1, scale=0.3),
        prefix + "running_mean": _randn(g, 1, scale=0.2),
        prefix + "running_var": 0.5 + torch.rand(1, generator=g),
        prefix + "num_batches_tracked": torch.tensor(7),
    }


def official_basic_conv(g: torch.Generator, prefix: str, k: int = 7) -> dict[str, Tensor]:
    """A bias-free conv 2 → 1 and its BN (``BasicConv`` of both repositories)."""
    return {prefix + "conv.weight": _randn(g, 1, 2, k, k, scale=0.3), **official_bn(g, prefix + "bn.")}


def official_channel_gate(g: torch.Generator, prefix: str, c: int, r: int) -> dict[str, Tensor]:
    hidden = c // r
    return {
        prefix + "mlp.1.weight": _randn(g, hidden, c), prefix + "mlp.1.bias": _randn(g, hidden),
        prefix + "mlp.3.weight": _randn(g, c, hidden), prefix + "mlp.3.bias": _randn(g, c),
    }


def official_cbam(seed: int, c: int, r: int, no_spatial: bool) -> dict[str, Tensor]:
    g = _gen(seed)
    sd = official_channel_gate(g, "ChannelGate.", c, r)
    if not no_spatial:
        sd.update(official_basic_conv(g, "SpatialGate.spatial."))
    return sd


def official_triplet(seed: int, no_spatial: bool, k: int = 7, models: bool = False) -> dict[str, Tensor]:
    g = _gen(seed)
    names = ("ChannelGateH.spatial.", "ChannelGateW.spatial.", "SpatialGate.spatial.") if models else \
        ("cw.conv.", "hc.conv.", "hw.conv.")
    sd: dict[str, Tensor] = {}
    for name in names[:2] if no_spatial else names:
        sd.update(official_basic_conv(g, name, k))
    return sd


def cast(sd: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}


# ---------------------------------------------------------------------------------------------------------------
# independent references (SPEC.md §3, §5)


def ref_bn(z: Tensor, sd: dict[str, Tensor], p: str, training: bool = False) -> Tensor:
    return F.batch_norm(z, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        training=training, momentum=0.01, eps=1e-5)


def ref_channel_gate(x: Tensor, sd: dict[str, Tensor], pool_types, p: str = "") -> Tensor:
    """Official ChannelGate: each pool → shared MLP (biased Linear, ReLU, biased Linear); logits summed; σ."""
    n, c, h, w = x.shape

    def mlp(v: Tensor) -> Tensor:
        v = F.relu(F.linear(v.flatten(1), sd[p + "mlp.1.weight"], sd[p + "mlp.1.bias"]))
        return F.linear(v, sd[p + "mlp.3.weight"], sd[p + "mlp.3.bias"])

    total = None
    for t in pool_types:
        if t == "avg":
            v = F.avg_pool2d(x, (h, w), stride=(h, w))
        elif t == "max":
            v = F.max_pool2d(x, (h, w), stride=(h, w))
        elif t == "lp":
            v = F.lp_pool2d(x, 2, (h, w), stride=(h, w))
        else:  # lse, stable
            flat = x.reshape(n, c, h * w)
            s = flat.max(2, keepdim=True)[0]
            v = s + (flat - s).exp().sum(2, keepdim=True).log()
        raw = mlp(v)
        total = raw if total is None else total + raw
    return x * torch.sigmoid(total).view(n, c, 1, 1)


def ref_spatial_gate(x: Tensor, sd: dict[str, Tensor], p: str, training: bool = False) -> Tensor:
    """Official SpatialGate and Triplet AttentionGate: [max_C; mean_C] → conv (no bias) → BN → σ → x·σ."""
    z = torch.cat([x.max(1, keepdim=True)[0], x.mean(1, keepdim=True)], 1)
    k = sd[p + "conv.weight"].shape[-1]
    z = ref_bn(F.conv2d(z, sd[p + "conv.weight"], padding=k // 2), sd, p + "bn.", training)
    return x * torch.sigmoid(z)


def ref_cbam(x: Tensor, sd: dict[str, Tensor], pool_types, no_spatial: bool) -> Tensor:
    y = ref_channel_gate(x, sd, pool_types, "ChannelGate.")
    return y if no_spatial else ref_spatial_gate(y, sd, "SpatialGate.spatial.")


def ref_triplet(x: Tensor, sd: dict[str, Tensor], no_spatial: bool, training: bool = False) -> Tensor:
    """The official permute-based formulation."""
    o11 = ref_spatial_gate(x.permute(0, 2, 1, 3).contiguous(), sd, "cw.conv.", training)  # (N, H, C, W)
    o11 = o11.permute(0, 2, 1, 3).contiguous()
    o21 = ref_spatial_gate(x.permute(0, 3, 2, 1).contiguous(), sd, "hc.conv.", training)  # (N, W, H, C)
    o21 = o21.permute(0, 3, 2, 1).contiguous()
    if no_spatial:
        return 1 / 2 * (o11 + o21)
    return 1 / 3 * (ref_spatial_gate(x, sd, "hw.conv.", training) + o11 + o21)


def close(got: Tensor, want: Tensor) -> None:
    atol, rtol = TOL[want.dtype]
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


def make_input(shape, dtype=torch.float32, seed=1) -> Tensor:
    n, c = shape[:2]
    return rand(*shape, seed=seed, dtype=dtype) + rand(n, c, 1, 1, seed=seed + 100, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# CBAM

CBAM_CASES = [  # (C, r, pool_types, no_spatial, input shape, dtype)
    (64, 16, ["avg", "max"], False, (3, 64, 8, 8), torch.float32),
    (32, 8, ["lp"], False, (2, 32, 5, 7), torch.float32),
    (32, 16, ["lse"], True, (1, 32, 13, 17), torch.float64),
    (48, 4, ["avg", "max", "lp", "lse"], False, (2, 48, 1, 1), torch.float32),
    (24, 16, ("lse", "avg", "max"), False, (1, 24, 9, 4), torch.float64),  # hidden width 1
    (8, 16, ["avg", "max"], False, (2, 8, 6, 6), torch.float32),  # C < r: hidden width 0, constant gate
    (16, 2, ["max", "max"], False, (2, 16, 28, 28), torch.float32),  # a repeated pool type, W = 28
]


@pytest.mark.parametrize("c,r,pools,no_spatial,shape,dtype", CBAM_CASES, ids=str)
def test_cbam_matches_reference(c, r, pools, no_spatial, shape, dtype):
    sd = cast(official_cbam(c + r, c, r, no_spatial), dtype)
    m = plugattn.from_official("cbam", sd, gate_channels=c, reduction_ratio=r, pool_types=pools,
                               no_spatial=no_spatial).to(dtype).eval()
    assert m.channel.fc1.out_features == c // r
    assert (m.spatial is None) == no_spatial
    x = make_input(shape, dtype)
    with torch.no_grad():
        want = ref_cbam(x, sd, pools, no_spatial)
        close(m(x), want)
        close(m(x.contiguous(memory_format=torch.channels_last)), want)


@pytest.mark.parametrize("c,r,pools,shape,dtype", [
    (32, 16, ["avg", "max"], (2, 32, 13, 17), torch.float32),
    (20, 4, ["lp", "lse"], (1, 20, 3, 11), torch.float64),
    (12, 16, ["avg"], (2, 12, 1, 1), torch.float32),
], ids=str)
def test_cbam_channel_gate_matches_reference(c, r, pools, shape, dtype):
    sd = cast(official_channel_gate(_gen(c), "", c, r), dtype)
    m = plugattn.from_official("cbam_channel", sd, gate_channels=c, reduction_ratio=r, pool_types=pools)
    m = m.to(dtype).eval()
    assert isinstance(m, CBAMChannelGate)
    x = make_input(shape, dtype)
    with torch.no_grad():
        close(m(x), ref_channel_gate(x, sd, pools))


@pytest.mark.parametrize("shape,dtype", [
    ((2, 24, 13, 17), torch.float32), ((1, 3, 1, 1), torch.float32),
    ((2, 5, 7, 3), torch.float64), ((1, 1, 28, 28), torch.float32),
], ids=str)
def test_cbam_spatial_gate_matches_reference_any_channels(shape, dtype):
    sd = cast(official_basic_conv(_gen(3), "spatial."), dtype)
    m = plugattn.from_official("cbam_spatial", sd).to(dtype).eval()
    assert isinstance(m, CBAMSpatialGate) and m.channels is None
    x = make_input(shape, dtype)
    with torch.no_grad():
        close(m(x), ref_spatial_gate(x, sd, "spatial."))


def test_cbam_defaults_and_widths():
    assert plugattn.create("cbam", 8).channel.fc1.out_features == 1  # create() floors the width at 1
    assert plugattn.create("cbam", 256).channel.fc1.out_features == 16
    assert plugattn.create("cbam", 256, rd_ratio=1 / 8).channel.fc1.out_features == 32
    assert plugattn.create("cbam", 100, rd_ratio=1 / 16, rd_divisor=8).channel.fc1.out_features == 8
    assert plugattn.create("cbam", 64, rd_channels=0).channel.fc1.out_features == 0
    m = plugattn.create("cbam", 64)
    assert m.channel.pool_types == ("avg", "max")
    bn = m.spatial.attn.conv.bn
    assert bn.momentum == 0.01 and bn.eps == 1e-5
    assert m.spatial.attn.conv.conv.bias is None and m.spatial.attn.conv.conv.kernel_size == (7, 7)
    assert m.channel.fc1.bias is not None and m.channel.fc2.bias is not None
    assert plugattn.create("cbam", 64, bias=False).channel.fc1.bias is None


def test_cbam_hidden_zero_is_constant_gate():
    """C // r = 0 (official, no minimum): the channel gate is σ(Σ_pools b₂) whatever the input."""
    sd = official_cbam(5, 8, 16, no_spatial=True)
    m = plugattn.from_official("cbam", sd, gate_channels=8, no_spatial=True).eval()
    x = make_input((2, 8, 5, 5))
    with torch.no_grad():
        close(m(x), x * torch.sigmoid(2 * sd["ChannelGate.mlp.3.bias"]).view(1, 8, 1, 1))


@pytest.mark.parametrize("pools", [["avg", "max"], ["lp", "lse"], ["max", "lse"]], ids=str)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_cbam_gradients_match_reference(pools, memory_format):
    """Backward (float64): input and parameter gradients equal the reference's autograd gradients."""
    c, r = 16, 4
    sd = cast(official_cbam(11, c, r, False), torch.float64)
    m = plugattn.from_official("cbam", sd, gate_channels=c, reduction_ratio=r, pool_types=pools).double().eval()
    ref_sd = {k: v.clone().requires_grad_(v.is_floating_point() and "running" not in k) for k, v in sd.items()}
    x = make_input((2, c, 7, 6), torch.float64).contiguous(memory_format=memory_format)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = rand(2, c, 7, 6, seed=9, dtype=torch.float64)
    (m(x1) * g).sum().backward()
    (ref_cbam(x2, ref_sd, pools, False) * g).sum().backward()
    close(x1.grad, x2.grad)
    pairs = {"channel.fc1.weight": "ChannelGate.mlp.1.weight", "channel.fc2.bias": "ChannelGate.mlp.3.bias",
             "spatial.attn.conv.conv.weight": "SpatialGate.spatial.conv.weight",
             "spatial.attn.conv.bn.weight": "SpatialGate.spatial.bn.weight"}
    params = dict(m.named_parameters())
    for ours, theirs in pairs.items():
        close(params[ours].grad, ref_sd[theirs].grad)


def test_cbam_train_mode_batch_norm_momentum():
    """Train mode: BN uses batch statistics and updates its running stats with momentum 0.01."""
    c = 16
    sd = official_cbam(13, c, 4, False)
    m = plugattn.from_official("cbam", sd, gate_channels=c, reduction_ratio=4).train()
    ref_sd = copy.deepcopy(sd)
    x = make_input((4, c, 6, 5))
    with torch.no_grad():
        y = m(x)
        y_ref = ref_spatial_gate(ref_channel_gate(x, ref_sd, ["avg", "max"], "ChannelGate."), ref_sd,
                                 "SpatialGate.spatial.", training=True)
    close(y, y_ref)
    bn = m.spatial.attn.conv.bn
    close(bn.running_mean, ref_sd["SpatialGate.spatial.bn.running_mean"])
    close(bn.running_var, ref_sd["SpatialGate.spatial.bn.running_var"])
    assert not torch.equal(bn.running_mean, sd["SpatialGate.spatial.bn.running_mean"])


def test_cbam_inplace_and_autograd_paths_agree():
    """Without autograd the spatial weights are applied in place to an intermediate: same values, input intact."""
    m = plugattn.from_official("cbam", official_cbam(2, 32, 16, False), gate_channels=32).eval()
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = make_input((2, 32, 9, 7)).contiguous(memory_format=fmt)
        before = x.clone()
        with torch.no_grad():
            y0 = m(x)
        y1 = m(x.clone().requires_grad_())
        assert torch.equal(x, before)
        torch.testing.assert_close(y0, y1.detach(), atol=0, rtol=0)
        assert y0.is_contiguous(memory_format=fmt) and y1.is_contiguous(memory_format=fmt)


# ---------------------------------------------------------------------------------------------------------------
# Triplet

TRIPLET_CASES = [  # (no_spatial, kernel size, input shape, dtype)
    (False, 7, (3, 16, 8, 8), torch.float32),
    (False, 7, (1, 5, 13, 17), torch.float32),
    (True, 7, (2, 7, 5, 9), torch.float64),
    (False, 3, (2, 3, 1, 1), torch.float32),
    (False, 3, (1, 12, 4, 11), torch.float64),
    (True, 3, (2, 8, 6, 1), torch.float32),
    (False, 7, (2, 64, 28, 28), torch.float32),
    (False, 7, (1, 16, 56, 21), torch.float32),
]


@pytest.mark.parametrize("no_spatial,k,shape,dtype", TRIPLET_CASES, ids=str)
def test_triplet_matches_permute_reference(no_spatial, k, shape, dtype):
    sd = cast(official_triplet(k + shape[1], no_spatial, k), dtype)
    kw = {"kernel_size": k} if k != 7 else {}
    m = plugattn.from_official("triplet", sd, no_spatial=no_spatial, **kw).to(dtype).eval()
    assert isinstance(m, TripletAttention) and m.channels is None and (m.hw is None) == no_spatial
    x = make_input(shape, dtype)
    with torch.no_grad():
        want = ref_triplet(x, sd, no_spatial)
        close(m(x), want)
        close(m(x.contiguous(memory_format=torch.channels_last)), want)
        close(m(x.transpose(2, 3).contiguous().transpose(2, 3)), want)  # non-contiguous


@pytest.mark.parametrize("no_spatial", [False, True])
def test_triplet_models_key_renaming(no_spatial):
    sd = official_triplet(21, no_spatial, models=True)
    m = plugattn.from_official("triplet_models", sd, gate_channels=16, reduction_ratio=16,
                               pool_types=["avg", "max"], no_spatial=no_spatial).eval()
    ref_sd = {k.replace("ChannelGateH.spatial.", "cw.conv.").replace("ChannelGateW.spatial.", "hc.conv.")
              .replace("SpatialGate.spatial.", "hw.conv."): v for k, v in sd.items()}
    x = make_input((2, 9, 13, 17))  # any channel count: gate_channels is unused officially
    with torch.no_grad():
        close(m(x), ref_triplet(x, ref_sd, no_spatial))


def test_triplet_attention_maps_orientation():
    """Each branch's Gate output is the official gate in the official orientation: (C, W), (H, C), (H, W)."""
    sd = official_triplet(4, False)
    m = plugattn.from_official("triplet", sd).eval()
    maps: dict[str, Tensor] = {}
    for name in ("cw", "hc", "hw"):
        getattr(m, name).gate.register_forward_hook(lambda mod, i, o, name=name: maps.__setitem__(name, o))
    x = make_input((2, 6, 5, 9))

    def official_map(t: Tensor, p: str) -> Tensor:
        z = torch.cat([t.max(1, keepdim=True)[0], t.mean(1, keepdim=True)], 1)
        return torch.sigmoid(ref_bn(F.conv2d(z, sd[p + "conv.weight"], padding=3), sd, p + "bn."))

    with torch.no_grad():
        m(x)
        close(maps["cw"], official_map(x.permute(0, 2, 1, 3), "cw.conv."))  # (N, 1, C, W)
        close(maps["hc"], official_map(x.permute(0, 3, 2, 1), "hc.conv."))  # (N, 1, H, C)
        close(maps["hw"], official_map(x, "hw.conv."))  # (N, 1, H, W)
    assert maps["cw"].shape == (2, 1, 6, 9) and maps["hc"].shape == (2, 1, 5, 6) and maps["hw"].shape == (2, 1, 5, 9)


@pytest.mark.parametrize("no_spatial", [False, True])
def test_triplet_gradients_match_reference(no_spatial):
    sd = cast(official_triplet(8, no_spatial), torch.float64)
    m = plugattn.from_official("triplet", sd, no_spatial=no_spatial).double().eval()
    ref_sd = {k: v.clone().requires_grad_(v.is_floating_point() and "running" not in k) for k, v in sd.items()}
    shape = (2, 5, 7, 6)
    x1, x2 = make_input(shape, torch.float64).requires_grad_(), make_input(shape, torch.float64).requires_grad_()
    g = rand(*shape, seed=3, dtype=torch.float64)
    (m(x1) * g).sum().backward()
    (ref_triplet(x2, ref_sd, no_spatial) * g).sum().backward()
    close(x1.grad, x2.grad)
    params = dict(m.named_parameters())
    for key in ("cw.conv.conv.weight", "hc.conv.conv.weight", "hc.conv.bn.bias") + (
            () if no_spatial else ("hw.conv.conv.weight",)):
        close(params[key].grad, ref_sd[key].grad)  # our keys are the official ones


def test_triplet_train_mode_batch_norm_momentum():
    sd = official_triplet(6, False)
    m = plugattn.from_official("triplet", sd).train()
    ref_sd = copy.deepcopy(sd)
    x = make_input((4, 8, 6, 5))
    with torch.no_grad():
        close(m(x), ref_triplet(x, ref_sd, False, training=True))
    for b in ("cw", "hc", "hw"):
        close(getattr(m, b).conv.bn.running_mean, ref_sd[f"{b}.conv.bn.running_mean"])
        close(getattr(m, b).conv.bn.running_var, ref_sd[f"{b}.conv.bn.running_var"])


def test_triplet_is_channel_agnostic_and_checks_given_channels():
    m = TripletAttention().eval()
    with torch.no_grad():
        for c in (1, 3, 17):
            assert m(rand(2, c, 5, 4)).shape == (2, c, 5, 4)
    with pytest.raises(ValueError, match="TripletAttention.*16 channels"):
        TripletAttention(16)(rand(2, 15, 5, 4))
    assert sum(p.numel() for p in m.parameters()) == 3 * (2 * 49 + 2)


@pytest.mark.parametrize("no_spatial", [False, True])
def test_triplet_inplace_and_autograd_paths_agree(no_spatial):
    """Without autograd x·s is formed in place in one new tensor: same values and memory format, input intact."""
    m = plugattn.from_official("triplet", official_triplet(12, no_spatial), no_spatial=no_spatial).eval()
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = make_input((2, 6, 9, 7)).contiguous(memory_format=fmt)
        before = x.clone()
        with torch.no_grad():
            y0 = m(x)
        y1 = m(x.clone().requires_grad_())
        assert torch.equal(x, before)
        torch.testing.assert_close(y0, y1.detach(), atol=0, rtol=0)
        assert y0.is_contiguous(memory_format=fmt) and y1.is_contiguous(memory_format=fmt)


# ---------------------------------------------------------------------------------------------------------------
# shared primitive, eager fast paths vs compiled/exported graphs


def test_zpool_gate_is_shared():
    assert isinstance(plugattn.create("cbam_spatial", 8).attn, ZPoolGate)
    t = plugattn.create("triplet", 8)
    assert [b.dim for b in (t.cw, t.hc, t.hw)] == [2, 3, 1]
    gates = [mod for mod in plugattn.create("cbam", 32).modules() if isinstance(mod, Gate)]
    assert len(gates) == 2
    assert sum(isinstance(mod, Gate) for mod in t.modules()) == 3


def test_spatial_gate_without_norm():
    m = CBAMSpatialGate(norm_layer=None).eval()
    assert not hasattr(m.attn.conv, "bn")
    x = make_input((2, 5, 6, 7))
    z = torch.cat([x.max(1, keepdim=True)[0], x.mean(1, keepdim=True)], 1)
    with torch.no_grad():
        close(m(x), x * torch.sigmoid(F.conv2d(z, m.attn.conv.conv.weight, padding=3)))


@pytest.mark.parametrize("dim", [1, 2, 3, (2, 3)], ids=str)
@pytest.mark.parametrize("shape", [(2, 6, 28, 28), (1, 3, 13, 17), (2, 4, 1, 5)], ids=str)
@pytest.mark.parametrize("ties", [False, True])
def test_max_mean_fast_paths_equal_amax_and_mean(dim, shape, ties):
    """The eager fast paths (tree maximum, lean backward) give amax's and mean's exact values and gradients."""
    x = make_input(shape, torch.float64)
    if ties:  # many tied maxima: the gradient is shared equally among them, as amax's
        x = x.round().clamp(-1, 1)
    with torch.no_grad():
        mx, mean = _max_mean(x, dim)
        assert torch.equal(mx, x.amax(dim)) and torch.equal(mean, x.mean(dim))
        nan = x.clone()
        nan[0, 0, 0, 0] = float("nan")
        assert torch.isnan(_max_mean(nan, dim)[0]).any()
    g1, g2 = rand(*mx.shape, seed=2, dtype=torch.float64), rand(*mx.shape, seed=3, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    mx, mean = _max_mean(xa, dim)
    assert torch.equal(mx.detach(), xb.amax(dim).detach())
    ((mx * g1).sum() + (mean * g2).sum()).backward()
    ((xb.amax(dim) * g1).sum() + (xb.mean(dim) * g2).sum()).backward()
    close(xa.grad, xb.grad)
    xa.grad = None
    _max_mean(xa, dim)[0].mul(g1).sum().backward()  # the mean unused
    xb.grad = None
    xb.amax(dim).mul(g1).sum().backward()
    close(xa.grad, xb.grad)


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("shape", [(2, 2, 9, 6), (1, 2, 1, 1), (3, 2, 1, 12), (1, 2, 30, 4)], ids=str)
def test_conv_2to1_equals_conv2d(k, shape):
    z = rand(*shape, seed=k, dtype=torch.float64).requires_grad_()
    w = rand(1, 2, k, k, seed=k + 1, dtype=torch.float64).requires_grad_()
    out = _conv_2to1(z, w)
    ref = F.conv2d(z, w, padding=k // 2)
    close(out, ref)
    g = rand(*ref.shape, seed=0, dtype=torch.float64)
    for got, want in zip(torch.autograd.grad((out * g).sum(), (z, w)), torch.autograd.grad((ref * g).sum(), (z, w))):
        close(got, want)


@pytest.mark.parametrize("name", ["cbam", "triplet"])
def test_export_with_dynamic_size_matches_eager(name):
    """torch.export with symbolic H, W: no size-dependent eager-only path is baked into the graph."""
    m = plugattn.create(name, 8).eval()
    h, w = torch.export.Dim("h", min=2, max=64), torch.export.Dim("w", min=2, max=64)
    ep = torch.export.export(m, (rand(2, 8, 9, 7),), dynamic_shapes=({2: h, 3: w},))
    x = rand(2, 8, 28, 13, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("cls", [CBAM, CBAMChannelGate])
def test_bad_pool_types(cls):
    name = cls.__name__
    with pytest.raises(ValueError, match=f"{name}.*pool_types"):
        cls(16, pool_types=["avg", "median"])
    with pytest.raises(ValueError, match=f"{name}.*pool_types"):
        cls(16, pool_types=[])
    with pytest.raises(TypeError, match=f"{name}.*pool_types"):
        cls(16, pool_types="avg")


@pytest.mark.parametrize("cls", [CBAM, CBAMSpatialGate, TripletAttention])
@pytest.mark.parametrize("k", [0, 4, 2.0])
def test_bad_kernel_size(cls, k):
    with pytest.raises(ValueError, match=f"{cls.__name__}.*kernel_size"):
        cls(16, kernel_size=k)


def test_bad_arguments():
    with pytest.raises(ValueError, match="CBAMChannelGate.*rd_channels"):
        CBAMChannelGate(16, rd_channels=-1)
    with pytest.raises(ValueError, match="ZPoolGate.*dim"):
        ZPoolGate(dim=0)
    for cls in (CBAMSpatialGate, TripletAttention):
        with pytest.raises(ValueError, match=f"{cls.__name__}.*channels"):
            cls(0)
    with pytest.raises(ValueError, match="CBAMSpatialGate.*8 channels"):
        CBAMSpatialGate(8)(rand(1, 9, 4, 4))
    with pytest.raises(TypeError, match="TripletAttention"):
        TripletAttention()(torch.ones(1, 3, 4, 4, dtype=torch.int32))


def test_bad_official_arguments():
    sd = official_cbam(0, 64, 16, False)
    with pytest.raises(TypeError, match="unexpected keyword"):
        plugattn.from_official("cbam", sd, gate_channels=64, reduction=16)
    with pytest.raises(ValueError, match="gate_channels"):
        plugattn.from_official("cbam", None, gate_channels=0)
    with pytest.raises(ValueError, match="reduction_ratio"):
        plugattn.from_official("cbam_channel", None, gate_channels=16, reduction_ratio=0)
    with pytest.raises(KeyError, match="lacks"):  # spatial keys missing
        plugattn.from_official("cbam", official_cbam(0, 64, 16, True), gate_channels=64)
    with pytest.raises(KeyError):  # spatial keys present, but no_spatial=True
        plugattn.from_official("cbam", sd, gate_channels=64, no_spatial=True)
    with pytest.raises(ValueError, match="shape"):  # a k = 7 checkpoint into a k = 3 module
        plugattn.from_official("triplet", official_triplet(0, False), kernel_size=3)
    with pytest.raises(TypeError, match="unexpected keyword"):
        plugattn.from_official("triplet", official_triplet(0, False), gate_channels=16)
