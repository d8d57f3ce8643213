"""Numerics of GCNet, FcaNet and SRM against independent re-derivations of their official code (and timm)."""

from __future__ import annotations

import math

import pytest
import scipy.fft
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import TOL, rand, randomize_
from plugattn.modules.fca import MultiSpectralChannelAttention, dct_filters, freq_indices
from plugattn.modules.gc import GlobalContextBlock, LayerNorm2d
from plugattn.modules.srm import StyleRecalibration

SHAPES = [(2, 7, 7), (3, 13, 9), (1, 1, 1), (2, 4, 6)]


def _randn(*shape: int, seed: int, scale: float = 0.5) -> torch.Tensor:
    return scale * rand(*shape, seed=seed)


# --- GCNet -------------------------------------------------------------------------------------------------------


def official_gc_state_dict(c: int, planes: int, pooling_type: str, fusion_types, seed: int = 0) -> dict:
    """A random state_dict with the official ``ContextBlock`` names and shapes."""
    sd, s = {}, seed
    if pooling_type == "att":
        sd["conv_mask.weight"], sd["conv_mask.bias"] = _randn(1, c, 1, 1, seed=s), _randn(1, seed=s + 1)
    for f in fusion_types:
        p = f"{f}_conv"
        s += 10
        sd[f"{p}.0.weight"], sd[f"{p}.0.bias"] = _randn(planes, c, 1, 1, seed=s), _randn(planes, seed=s + 1)
        sd[f"{p}.1.weight"] = 1 + _randn(planes, 1, 1, seed=s + 2, scale=0.2)
        sd[f"{p}.1.bias"] = _randn(planes, 1, 1, seed=s + 3)
        sd[f"{p}.3.weight"], sd[f"{p}.3.bias"] = _randn(c, planes, 1, 1, seed=s + 4), _randn(c, seed=s + 5)
    return sd


def official_gc_forward(sd: dict, x: torch.Tensor, planes: int, pooling_type: str, fusion_types) -> torch.Tensor:
    """ContextBlock.forward re-derived from the official code's structure (spatial_pool, then mul, then add)."""
    n, c, h, w = x.shape
    if pooling_type == "att":
        mask = F.conv2d(x, sd["conv_mask.weight"], sd["conv_mask.bias"]).view(n, 1, h * w)
        mask = torch.softmax(mask, dim=2).unsqueeze(-1)  # (N, 1, HW, 1)
        context = torch.matmul(x.view(n, 1, c, h * w), mask).view(n, c, 1, 1)
    else:
        context = F.adaptive_avg_pool2d(x, 1)

    def transform(p: str) -> torch.Tensor:
        t = F.conv2d(context, sd[f"{p}.0.weight"], sd[f"{p}.0.bias"])
        t = F.layer_norm(t, [planes, 1, 1], sd[f"{p}.1.weight"], sd[f"{p}.1.bias"], eps=1e-5)
        return F.conv2d(F.relu(t), sd[f"{p}.3.weight"], sd[f"{p}.3.bias"])

    out = x
    if "channel_mul" in fusion_types:
        out = out * torch.sigmoid(transform("channel_mul_conv"))
    if "channel_add" in fusion_types:
        out = out + transform("channel_add_conv")
    return out


@pytest.mark.parametrize("pooling_type", ["att", "avg"])
@pytest.mark.parametrize("fusion_types", [("channel_add",), ("channel_mul",), ("channel_mul", "channel_add")],
                         ids=lambda f: "+".join(f))
@pytest.mark.parametrize("c,ratio", [(64, 1 / 16), (32, 1 / 4)])
def test_gc_matches_official(pooling_type, fusion_types, c, ratio):
    planes = int(c * ratio)
    sd = official_gc_state_dict(c, planes, pooling_type, fusion_types)
    m = plugattn.from_official("gc", sd, inplanes=c, ratio=ratio, pooling_type=pooling_type,
                               fusion_types=fusion_types).eval()
    for i, (n, h, w) in enumerate(SHAPES):
        for dtype in (torch.float32, torch.float64):
            x = rand(n, c, h, w, seed=10 + i, dtype=dtype)
            sdd = {k: v.to(dtype) for k, v in sd.items()}
            with torch.no_grad():
                got = m.to(dtype)(x)
            want = official_gc_forward(sdd, x, planes, pooling_type, fusion_types)
            atol, rtol = TOL[dtype]
            torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


def test_gc_default_is_official_channel_add_r16_and_starts_as_identity():
    m = GlobalContextBlock(64).eval()
    assert m.mlp_add is not None and m.mlp_scale is None and m.conv_attn is not None
    assert m.mlp_add.fc1.out_channels == 4 and isinstance(m.mlp_add.norm, LayerNorm2d) and m.mlp_add.norm.eps == 1e-5
    x = rand(2, 64, 5, 6, seed=1)
    with torch.no_grad():
        assert torch.equal(m(x), x)  # last conv zero-initialised: the block starts as the identity
    assert m.conv_attn.bias.abs().sum() == 0


@pytest.mark.parametrize("kwargs", [
    {},  # timm default: fuse_scale, rd_ratio 1/8
    {"fuse_add": True, "fuse_scale": False, "rd_ratio": 1 / 16},  # the official configuration
    {"fuse_add": True, "fuse_scale": True},
    {"use_attn": False, "rd_ratio": 1 / 4, "act_layer": nn.SiLU},
], ids=["timm_default", "official_add", "both", "avg_silu"])
def test_gc_matches_timm(kwargs):
    from timm.layers.global_context import GlobalContext

    c = 48
    torch.manual_seed(0)
    ref = randomize_(GlobalContext(c, **kwargs), seed=3).eval()
    m = plugattn.from_official("gc_timm", ref.state_dict(), channels=c, **kwargs).eval()
    for i, (n, h, w) in enumerate(SHAPES):
        x = rand(n, c, h, w, seed=20 + i)
        with torch.no_grad():
            torch.testing.assert_close(m(x), ref(x), atol=1e-5, rtol=1e-5)


def test_layer_norm_2d_equals_official_layer_norm_on_context():
    ln = randomize_(LayerNorm2d(12), seed=1)
    ref = nn.LayerNorm([12, 1, 1])
    with torch.no_grad():
        ref.weight.copy_(ln.weight.view(12, 1, 1))
        ref.bias.copy_(ln.bias.view(12, 1, 1))
    t = rand(3, 12, 1, 1, seed=2)
    torch.testing.assert_close(ln(t), ref(t))


def test_gc_bad_arguments():
    with pytest.raises(ValueError, match="GlobalContextBlock.*fuse_add"):
        GlobalContextBlock(32, fuse_add=False, fuse_scale=False)
    with pytest.raises(ValueError, match="pooling_type"):
        plugattn.from_official("gc", None, inplanes=32, ratio=0.25, pooling_type="max")
    with pytest.raises(ValueError, match="fusion_types"):
        plugattn.from_official("gc", None, inplanes=32, ratio=0.25, fusion_types=("channel_cat",))
    with pytest.raises(TypeError, match="gc_timm"):
        plugattn.from_official("gc_timm", None, channels=32, rd=4)


# --- FcaNet ------------------------------------------------------------------------------------------------------


def ortho_dct_matrix(n: int) -> torch.Tensor:
    """B[k, t]: the orthonormal DCT-II basis, from scipy (DCT of the identity), independent of our code."""
    return torch.from_numpy(scipy.fft.dct(torch.eye(n, dtype=torch.float64).numpy(), type=2, norm="ortho", axis=0))


def official_fca_filters(c: int, dct_h: int, dct_w: int, method: str) -> torch.Tensor:
    us, vs = freq_indices(method)
    bh, bw = ortho_dct_matrix(dct_h), ortho_dct_matrix(dct_w)
    part = c // len(us)
    out = torch.zeros(c, dct_h, dct_w, dtype=torch.float64)
    for i, (u, v) in enumerate(zip(us, vs)):
        out[i * part:(i + 1) * part] = torch.outer(bh[u * (dct_h // 7)], bw[v * (dct_w // 7)])
    return out


def official_fca_forward(sd: dict, x: torch.Tensor, dct_h: int, dct_w: int) -> torch.Tensor:
    """MultiSpectralAttentionLayer.forward: pool only when the size differs, DCT-weighted sum, FC-ReLU-FC-σ."""
    n, c, h, w = x.shape
    xp = x if (h, w) == (dct_h, dct_w) else F.adaptive_avg_pool2d(x, (dct_h, dct_w))
    y = (xp * sd["dct_layer.weight"]).sum(dim=[2, 3])
    y = torch.sigmoid(F.linear(F.relu(F.linear(y, sd["fc.0.weight"])), sd["fc.2.weight"]))
    return x * y.view(n, c, 1, 1)


def test_fca_frequency_table_is_the_official_top16():
    us, vs = freq_indices("top16")
    assert list(zip(us, vs))[:6] == [(0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0)]
    assert len(set(zip(us, vs))) == 16
    with pytest.raises(ValueError, match="freq_sel_method"):
        freq_indices("top3")


@pytest.mark.parametrize("method", ["top16", "low4", "bot32", "top1"])
@pytest.mark.parametrize("grid", [(7, 7), (14, 14), (56, 28)])
def test_fca_filters_are_dct_components(method, grid):
    c = 64
    dh, dw = grid
    filt = dct_filters(c, dh, dw, method)
    torch.testing.assert_close(filt, official_fca_filters(c, dh, dw, method), atol=1e-12, rtol=0)
    # Σ x·filter is a coefficient of the 2-D orthonormal DCT of x (scipy), at the scaled frequency
    x = rand(c, dh, dw, seed=5, dtype=torch.float64)
    coeff = torch.from_numpy(scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(1, 2)))
    us, vs = freq_indices(method)
    part = c // len(us)
    for i, (u, v) in enumerate(zip(us, vs)):
        sl = slice(i * part, (i + 1) * part)
        torch.testing.assert_close((x[sl] * filt[sl]).sum((1, 2)), coeff[sl, u * (dh // 7), v * (dw // 7)])


@pytest.mark.parametrize("grid,shapes", [
    ((7, 7), [(2, 7, 7), (3, 13, 9), (1, 1, 1), (2, 4, 6)]),
    ((14, 14), [(2, 14, 14), (1, 28, 20)]),
])
@pytest.mark.parametrize("c,reduction,method", [(64, 16, "top16"), (32, 4, "low8"), (16, 16, "top16")])
def test_fca_matches_official(grid, shapes, c, reduction, method):
    dh, dw = grid
    rd = c // reduction
    sd = {"dct_layer.weight": official_fca_filters(c, dh, dw, method).float(),
          "fc.0.weight": _randn(rd, c, seed=1), "fc.2.weight": _randn(c, rd, seed=2)}
    m = plugattn.from_official("fca", sd, channel=c, dct_h=dh, dct_w=dw, reduction=reduction,
                               freq_sel_method=method).eval()
    assert "dct_weight" not in m.state_dict()  # fixed filters are rebuilt, not stored
    for i, (n, h, w) in enumerate(shapes):
        x = rand(n, c, h, w, seed=30 + i)
        with torch.no_grad():
            torch.testing.assert_close(m(x), official_fca_forward(sd, x, dh, dw), atol=1e-5, rtol=1e-5)


def test_fca_spread_filters_cache_follows_size_layout_and_dtype():
    """The squeeze's spread DCT filters are cached per (H, W, dtype, device); a size seen before, channels_last
    input (pooled natively), and a module converted with ``.double()`` after a forward give the official result."""
    c = 32
    sd = {"dct_layer.weight": official_fca_filters(c, 7, 7, "top16").float(),
          "fc.0.weight": _randn(2, c, seed=1), "fc.2.weight": _randn(c, 2, seed=2)}
    m = plugattn.from_official("fca", sd, channel=c, dct_h=7, dct_w=7).eval()
    sizes = [(9, 11), (7, 7), (9, 11)]
    with torch.no_grad():
        for i, (h, w) in enumerate(sizes):
            x = rand(2, c, h, w, seed=40 + i)
            want = official_fca_forward(sd, x, 7, 7)
            torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), want, atol=1e-5, rtol=1e-5)
        assert len(m._spread_cache) == 2  # two sizes; channels_last input pools natively
        m.double()
        assert not m._spread_cache
        x = rand(2, c, 9, 11, seed=50, dtype=torch.float64)
        sd64 = {k: v.double() for k, v in sd.items()}
        torch.testing.assert_close(m(x), official_fca_forward(sd64, x, 7, 7), atol=1e-6, rtol=1e-6)


def test_fca_low1_is_se_on_scaled_mean():
    """Frequency (0, 0) is √(hw)·mean: with one DC frequency FcaNet is SE on 7·GAP (7×7 grid, 7×7 input)."""
    c = 32
    m = randomize_(MultiSpectralChannelAttention(c, freq_sel_method="low1"), seed=2).eval()
    x = rand(2, c, 7, 7, seed=3)
    s = 7 * x.mean((2, 3))
    want = x * torch.sigmoid(m.fc2(F.relu(m.fc1(s)))).view(2, c, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-5)


def test_fca_bad_arguments():
    with pytest.raises(ValueError, match="MultiSpectralChannelAttention.*divisible"):
        MultiSpectralChannelAttention(24)
    with pytest.raises(ValueError, match="freq_sel_method"):
        MultiSpectralChannelAttention(32, freq_sel_method="mid16")
    with pytest.raises(ValueError, match="dct_h"):
        MultiSpectralChannelAttention(32, dct_h=0)


# --- SRM ---------------------------------------------------------------------------------------------------------


def official_srm_forward(x: torch.Tensor, cfc: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """SRMLayer.forward: (mean, unbiased std) over H·W, CFC, BN, σ."""
    n, c = x.shape[:2]
    t = torch.cat((x.view(n, c, -1).mean(dim=2).view(n, c, -1), x.view(n, c, -1).std(dim=2).view(n, c, -1)), dim=2)
    z = torch.sum(t * cfc[None, :, :], dim=2)[:, :, None, None]
    return x * torch.sigmoid(bn(z))


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_srm_matches_official(train):
    c = 32
    m = randomize_(StyleRecalibration(c), seed=4)
    ref_bn = nn.BatchNorm2d(c)
    ref_bn.load_state_dict(m.bn.state_dict())
    sd = {"cfc": m.cfc.detach().clone(), **{f"bn.{k}": v for k, v in ref_bn.state_dict().items()}}
    m = plugattn.from_official("srm", sd, channel=c)
    m.train(train)
    ref_bn.train(train)
    for i, (n, h, w) in enumerate([(4, 7, 7), (3, 13, 9), (2, 4, 6)]):
        x = rand(n, c, h, w, seed=40 + i) + rand(n, c, 1, 1, seed=50 + i)
        with torch.no_grad():
            got, want = m(x), official_srm_forward(x, sd["cfc"], ref_bn)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.bn.running_mean, ref_bn.running_mean)  # same batch statistics in training
    torch.testing.assert_close(m.bn.running_var, ref_bn.running_var)


def test_srm_default_init_and_single_position():
    m = StyleRecalibration(16).eval()
    assert torch.equal(m.cfc, torch.zeros(16, 2))  # official init: gate = σ(BN bias) = 0.5 at the start
    x = rand(2, 16, 5, 5, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), 0.5 * x)
    # 1×1 input: the official unbiased std is NaN; ours takes std = 0, so only the mean term remains
    m = randomize_(StyleRecalibration(16), seed=2).eval()
    x1 = rand(3, 16, 1, 1, seed=3)
    with torch.no_grad():
        z = (x1[:, :, 0, 0] * m.cfc[:, 0])[:, :, None, None]
        torch.testing.assert_close(m(x1), x1 * torch.sigmoid(m.bn(z)))
    x1.requires_grad_()
    m(x1).sum().backward()
    assert torch.isfinite(x1.grad).all()


def test_srm_std_is_unbiased():
    x = rand(2, 8, 3, 4, seed=6, dtype=torch.float64)
    from plugattn.modules.srm import style_pool

    t = style_pool(x)
    flat = x.reshape(2, 8, 12)
    mean = flat.sum(-1) / 12
    std = ((flat - mean[..., None]) ** 2).sum(-1).div(11).sqrt()
    torch.testing.assert_close(t, torch.stack((mean, std), -1))


# --- export-readiness of the three modules -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gc", "fca", "srm"])
def test_torch_export_and_odd_sizes(name):
    torch.manual_seed(0)
    m = randomize_(plugattn.create(name, 32), seed=1).eval()
    x = rand(2, 32, 9, 11, seed=2)
    ep = torch.export.export(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x))
    with torch.no_grad():
        assert math.isfinite(float(m(rand(1, 32, 1, 1, seed=3)).sum()))
