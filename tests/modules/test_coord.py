"""Coordinate Attention against an independent re-derivation of the official ``CoordAtt``.

The reference below follows houqb/CoordAttention ``coordatt.py`` (SPEC.md §4) on an official-named state_dict:
adaptive average pools along W and along H, the W-pooled map transposed, concatenated along dim 2, conv1 → BN →
h-swish, split, the W part transposed back, conv_h / conv_w → σ, ``x · a_w · a_h``. BN runs on the concatenated
(H + W) sequence, which matters in train mode. timm's ``CoordAttn`` configured to the same math is a second check.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import TOL, param_leaves, rand, random_state_dict, randomize_
from plugattn.modules.coord import CoordAttention

F64 = torch.float64
CL = torch.channels_last


def assert_close(a, b, dtype=torch.float32):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def coordatt_shapes(c, mip, names=("conv_h", "conv_w")):
    shapes = {"conv1.weight": (mip, c, 1, 1), "conv1.bias": (mip,)}
    shapes |= {f"bn1.{k}": (mip,) for k in ("weight", "bias", "running_mean", "running_var")}
    shapes["bn1.num_batches_tracked"] = ()
    for nm in names:
        shapes[f"{nm}.weight"], shapes[f"{nm}.bias"] = (c, mip, 1, 1), (c,)
    return shapes


def coordatt_reference(sd, x, training=False, names=("conv_h", "conv_w")):
    """Official CoordAtt.forward; BN on the concatenated (H + W) sequence (updates sd's running stats in train)."""
    identity = x
    n, c, h, w = x.shape
    x_h = F.adaptive_avg_pool2d(x, (None, 1))  # pool_h: (N, C, H, 1)
    x_w = F.adaptive_avg_pool2d(x, (1, None)).permute(0, 1, 3, 2)  # pool_w: (N, C, 1, W) → (N, C, W, 1)
    y = torch.cat([x_h, x_w], dim=2)
    y = F.conv2d(y, sd["conv1.weight"], sd["conv1.bias"])
    y = F.batch_norm(y, sd["bn1.running_mean"], sd["bn1.running_var"], sd["bn1.weight"], sd["bn1.bias"],
                     training=training, momentum=0.1, eps=1e-5)
    y = y * (F.relu6(y + 3) / 6)  # h_swish
    x_h, x_w = torch.split(y, [h, w], dim=2)
    x_w = x_w.permute(0, 1, 3, 2)
    a_h = torch.sigmoid(F.conv2d(x_h, sd[f"{names[0]}.weight"], sd[f"{names[0]}.bias"]))
    a_w = torch.sigmoid(F.conv2d(x_w, sd[f"{names[1]}.weight"], sd[f"{names[1]}.bias"]))
    return identity * a_w * a_h


COORD = [  # channels, reduction, input (n, h, w)
    (64, 32, (3, 8, 8)),
    (256, 32, (2, 7, 5)),
    (96, 4, (1, 13, 17)),
    (16, 32, (2, 1, 9)),
    (40, 2, (2, 6, 1)),
    (24, 8, (1, 1, 1)),
]


@pytest.mark.parametrize("cfg", COORD, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
def test_coord_matches_reference_eval(cfg, dtype):
    c, reduction, (n, h, w) = cfg
    mip = max(8, c // reduction)
    sd = random_state_dict(coordatt_shapes(c, mip), seed=c, dtype=dtype)
    m = plugattn.from_official("coord", sd, inp=c, oup=c, reduction=reduction).to(dtype).eval()
    assert m.conv1.out_channels == mip
    x = rand(n, c, h, w, seed=1, dtype=dtype) + rand(n, c, 1, 1, seed=2, dtype=dtype)
    ref = coordatt_reference(sd, x)
    with torch.no_grad():
        assert_close(m(x), ref, dtype)
        y_cl = m(x.contiguous(memory_format=CL))
        assert_close(y_cl, ref, dtype)
        assert y_cl.is_contiguous(memory_format=CL)
        assert_close(m(x.transpose(2, 3).contiguous().transpose(2, 3)), ref, dtype)  # non-contiguous input


@pytest.mark.parametrize("cfg", COORD[:5], ids=str)  # not (1, 1, 1): train-mode BN needs two values per channel
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL], ids=str)
def test_coord_matches_reference_train_with_gradients(cfg, memory_format):
    """Train mode: BN statistics over the concatenated sequence, running stats, and every gradient (float64)."""
    c, reduction, (n, h, w) = cfg
    mip = max(8, c // reduction)
    sd = random_state_dict(coordatt_shapes(c, mip), seed=c + 1, dtype=F64)
    m = plugattn.from_official("coord", sd, inp=c, oup=c, reduction=reduction).double().train()
    ref_sd = {k: v.clone().requires_grad_(v.is_floating_point() and "running" not in k) for k, v in sd.items()}
    x = (rand(n, c, h, w, seed=3, dtype=F64) + rand(n, c, 1, 1, seed=4, dtype=F64)).contiguous(
        memory_format=memory_format)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = m(xa)
    yb = coordatt_reference(ref_sd, xb, training=True)
    assert_close(ya, yb.detach(), F64)
    assert ya.is_contiguous(memory_format=memory_format)
    g = rand(*x.shape, seed=5, dtype=F64)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    assert_close(xa.grad, xb.grad, F64)
    ours = {"conv1.weight": m.conv1.weight, "conv1.bias": m.conv1.bias, "bn1.weight": m.norm.weight,
            "bn1.bias": m.norm.bias, "conv_h.weight": m.conv_h.weight, "conv_h.bias": m.conv_h.bias,
            "conv_w.weight": m.conv_w.weight, "conv_w.bias": m.conv_w.bias}
    for k, p in ours.items():
        assert_close(p.grad, ref_sd[k].grad, F64)
    assert_close(m.norm.running_mean, ref_sd["bn1.running_mean"].detach(), F64)
    assert_close(m.norm.running_var, ref_sd["bn1.running_var"].detach(), F64)


def test_coord_train_bn_is_on_the_concatenated_sequence():
    """Normalising the H part and the W part separately would differ in train mode: check that we do not."""
    c = 32
    sd = random_state_dict(coordatt_shapes(c, 8), seed=9)
    m = plugattn.from_official("coord", sd, inp=c, oup=c).train()
    x = rand(2, c, 5, 11, seed=1) + 3 * rand(2, c, 5, 1, seed=2)  # rows and columns with different statistics
    with torch.no_grad():
        y = m(x)
    assert_close(y, coordatt_reference(copy.deepcopy(sd), x, training=True))
    split = copy.deepcopy(m)
    split.forward = lambda t: _coord_split_bn(split, t)
    with torch.no_grad():
        assert (split(x) - y).abs().max() > 1e-3


def _coord_split_bn(m, x):
    h = x.shape[2]
    f_h = m.act(m.norm(m.conv1(x.mean(3, keepdim=True))))
    f_w = m.act(m.norm(m.conv1(x.mean(2, keepdim=True))))
    return x * torch.sigmoid(m.conv_w(f_w)) * torch.sigmoid(m.conv_h(f_h))[:, :, :h]


def test_coord_mbv2_matches_reference():
    for c, groups, (n, h, w) in [(64, 32, (2, 13, 17)), (384, 32, (1, 7, 7)), (24, 4, (2, 3, 1))]:
        mip = max(8, c // groups)
        names = ("conv2", "conv3")
        sd = random_state_dict(coordatt_shapes(c, mip, names), seed=c)
        m = plugattn.from_official("coord_mbv2", sd, inp=c, oup=c, groups=groups).eval()
        x = rand(n, c, h, w, seed=c)
        with torch.no_grad():
            assert_close(m(x), coordatt_reference(sd, x, names=names))


def test_coord_matches_timm_coordattn():
    """timm's CoordAttn with the official width, biases and h-swish is the same math."""
    coord_attn = pytest.importorskip("timm.layers.coord_attn")
    for c, (n, h, w) in [(64, (2, 8, 8)), (128, (2, 9, 5))]:
        ref = coord_attn.CoordAttn(c, rd_channels=max(8, c // 32), bias=True, act_layer=nn.Hardswish)
        randomize_(ref, seed=c)
        ours = plugattn.create("coord", c)
        ours.load_state_dict({k.replace("bn1.", "norm."): v for k, v in ref.state_dict().items()})
        x = rand(n, c, h, w, seed=1)
        for train in (False, True):
            ours.train(train), ref.train(train)
            xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
            ya, yb = ours(xa), ref(xb)
            assert_close(ya, yb)
            ya.sum().backward()
            yb.sum().backward()
            assert_close(xa.grad, xb.grad)


def test_coord_widths_keys_and_extra_repr():
    for c, mip in [(16, 8), (256, 8), (512, 16), (1000, 31)]:
        assert CoordAttention(c).conv1.out_channels == mip
    assert CoordAttention(64, rd_channels=5).conv1.out_channels == 5
    assert CoordAttention(64, min_channels=4, rd_ratio=1 / 32).rd_channels == 4
    assert CoordAttention(100, rd_ratio=1 / 8, rd_divisor=8).rd_channels == 16
    shapes = {k: tuple(v.shape) for k, v in CoordAttention(64).state_dict().items()}
    assert shapes == {"conv1.weight": (8, 64, 1, 1), "conv1.bias": (8,), "norm.weight": (8,), "norm.bias": (8,),
                      "norm.running_mean": (8,), "norm.running_var": (8,), "norm.num_batches_tracked": (),
                      "conv_h.weight": (64, 8, 1, 1), "conv_h.bias": (64,), "conv_w.weight": (64, 8, 1, 1),
                      "conv_w.bias": (64,)}
    assert "channels=64, rd_channels=8" in repr(CoordAttention(64))


def test_coord_gates_record_a_h_and_a_w():
    m = randomize_(CoordAttention(16)).eval()
    maps = {}
    m.gate_h.register_forward_hook(lambda mod, i, o: maps.__setitem__("h", o))
    m.gate_w.register_forward_hook(lambda mod, i, o: maps.__setitem__("w", o))
    x = rand(2, 16, 5, 7, seed=3)
    with torch.no_grad():
        y = m(x)
    assert maps["h"].shape == (2, 16, 5, 1) and maps["w"].shape == (2, 16, 1, 7)
    assert_close(y, x * maps["w"] * maps["h"])


@pytest.mark.parametrize("kwargs", [{}, {"rd_channels": 5, "bias": False, "act_layer": "relu"}], ids=str)
def test_fx_trace_and_hooks(kwargs):
    m = randomize_(CoordAttention(24, **kwargs)).double().eval()
    gm = torch.fx.symbolic_trace(m)
    leaves = list(param_leaves(m))
    assert leaves
    fired: list[str] = []
    for name in leaves:
        m.get_submodule(name).register_forward_hook(lambda *_, name=name: fired.append(name))
    for n, h, w in [(2, 7, 5), (1, 1, 1), (1, 3, 10)]:
        x = rand(n, 24, h, w, seed=h, dtype=F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert sorted(fired) == sorted(leaves)


def test_bad_arguments():
    with pytest.raises(ValueError, match="CoordAttention.*channels"):
        CoordAttention(0)
    with pytest.raises(ValueError, match="CoordAttention.*rd_ratio"):
        CoordAttention(64, rd_ratio=-1)
    with pytest.raises(ValueError, match="CoordAttention.*rd_channels"):
        CoordAttention(64, rd_channels=0)
    with pytest.raises(ValueError, match="CoordAttention.*64 channels"):
        CoordAttention(64)(rand(1, 9, 4, 4))
    with pytest.raises(ValueError, match="oup"):
        plugattn.from_official("coord", None, inp=64, oup=32)
