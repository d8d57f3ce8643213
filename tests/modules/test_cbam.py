"""CBAM (channel gate, spatial gate, both) against an independent re-derivation of the official code.

The reference below is plain PyTorch written from SPEC.md §3 (Jongchan/attention-module ``MODELS/cbam.py``): it
takes the official state_dict (official key names) and pools with ``avg_pool2d`` / ``max_pool2d`` /
``lp_pool2d`` windows over the whole map, as the official ``ChannelGate`` does. Our modules are built through
``from_official`` from random official state_dicts, so the key mapping is checked too.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import plugattn
from helpers import TOL, param_leaves, rand, randomize_
from plugattn._layers import Gate, ZPoolGate
from plugattn.modules.cbam import CBAM, CBAMChannelGate, CBAMSpatialGate

F64 = torch.float64
CL = torch.channels_last

# ---------------------------------------------------------------------------------------------------------------
# random official state_dicts (official key names)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape: int, scale: float = 0.5) -> Tensor:
    return scale * torch.randn(*shape, generator=g)


def official_basic_conv(g: torch.Generator, prefix: str, k: int = 7) -> dict[str, Tensor]:
    """``BasicConv(2, 1, k, relu=False)``: a bias-free conv 2 → 1 and its BN."""
    return {
        prefix + "conv.weight": _randn(g, 1, 2, k, k, scale=0.3),
        prefix + "bn.weight": 0.5 + torch.rand(1, generator=g),
        prefix + "bn.bias": _randn(g, 1, scale=0.3),
        prefix + "bn.running_mean": _randn(g, 1, scale=0.2),
        prefix + "bn.running_var": 0.5 + torch.rand(1, generator=g),
        prefix + "bn.num_batches_tracked": torch.tensor(7),
    }


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


def cast(sd: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}


# ---------------------------------------------------------------------------------------------------------------
# the independent reference (SPEC.md §3)


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
        else:  # lse, stable: logsumexp_2d
            flat = x.reshape(n, c, h * w)
            s = flat.max(2, keepdim=True)[0]
            v = s + (flat - s).exp().sum(2, keepdim=True).log()
        raw = mlp(v)
        total = raw if total is None else total + raw
    return x * torch.sigmoid(total).unsqueeze(2).unsqueeze(3).expand_as(x)


def ref_spatial_gate(x: Tensor, sd: dict[str, Tensor], p: str, training: bool = False) -> Tensor:
    """Official SpatialGate: ChannelPool [max_C; mean_C] → conv k×k (no bias) → BN → σ → x·σ."""
    z = torch.cat([torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)], 1)
    k = sd[p + "conv.weight"].shape[-1]
    z = ref_bn(F.conv2d(z, sd[p + "conv.weight"], padding=(k - 1) // 2), sd, p + "bn.", training)
    return x * torch.sigmoid(z)


def ref_cbam(x: Tensor, sd: dict[str, Tensor], pool_types, no_spatial: bool, training: bool = False) -> Tensor:
    y = ref_channel_gate(x, sd, pool_types, "ChannelGate.")
    return y if no_spatial else ref_spatial_gate(y, sd, "SpatialGate.spatial.", training)


def close(got: Tensor, want: Tensor) -> None:
    atol, rtol = TOL[want.dtype]
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


def make_input(shape, dtype=torch.float32, seed=1) -> Tensor:
    n, c = shape[:2]
    return rand(*shape, seed=seed, dtype=dtype) + rand(n, c, 1, 1, seed=seed + 100, dtype=dtype)


def grad_pair(m, ref, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(m(x), ref(x), ∂⟨m(x), g⟩/∂x, ∂⟨ref(x), g⟩/∂x) for a fixed random g."""
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = m(x1), ref(x2)
    g = rand(*x.shape, seed=9, dtype=x.dtype)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    return y1.detach(), y2.detach(), x1.grad, x2.grad


# ---------------------------------------------------------------------------------------------------------------
# CBAM

CBAM_CASES = [  # (C, r, pool_types, no_spatial, input shape, dtype)
    (64, 16, ["avg", "max"], False, (3, 64, 8, 8), torch.float32),
    (32, 8, ["lp"], False, (2, 32, 5, 7), torch.float32),
    (32, 16, ["lse"], True, (1, 32, 13, 17), F64),
    (48, 4, ["avg", "max", "lp", "lse"], False, (2, 48, 1, 1), torch.float32),
    (24, 16, ("lse", "avg", "max"), False, (1, 24, 9, 4), F64),  # hidden width 1
    (8, 16, ["avg", "max"], False, (2, 8, 6, 6), torch.float32),  # C < r: hidden width 0, constant gate
    (16, 2, ["max", "max"], False, (2, 16, 28, 28), torch.float32),  # a repeated pool type
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
        y_cl = m(x.contiguous(memory_format=CL))
        close(y_cl, want)
        assert y_cl.is_contiguous(memory_format=CL)
        close(m(x.transpose(2, 3).contiguous().transpose(2, 3)), want)  # non-contiguous


@pytest.mark.parametrize("c,r,pools,shape,dtype", [
    (32, 16, ["avg", "max"], (2, 32, 13, 17), torch.float32),
    (20, 4, ["lp", "lse"], (1, 20, 3, 11), F64),
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
        close(m(x.contiguous(memory_format=CL)), ref_channel_gate(x, sd, pools))


@pytest.mark.parametrize("shape,dtype", [
    ((2, 24, 13, 17), torch.float32), ((1, 3, 1, 1), torch.float32),
    ((2, 5, 7, 3), F64), ((1, 1, 28, 28), torch.float32),
], ids=str)
def test_cbam_spatial_gate_matches_reference_any_channels(shape, dtype):
    sd = cast(official_basic_conv(_gen(3), "spatial."), dtype)
    m = plugattn.from_official("cbam_spatial", sd).to(dtype).eval()
    assert isinstance(m, CBAMSpatialGate) and m.channels is None
    x = make_input(shape, dtype)
    with torch.no_grad():
        close(m(x), ref_spatial_gate(x, sd, "spatial."))
        close(m(x.contiguous(memory_format=CL)), ref_spatial_gate(x, sd, "spatial."))


@pytest.mark.parametrize("pools", [["avg", "max"], ["lp", "lse"], ["max", "lse"]], ids=str)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL], ids=str)
@pytest.mark.parametrize("hw", [(7, 6), (1, 1), (5, 9)], ids=str)
def test_cbam_gradients_match_reference(pools, memory_format, hw):
    """Backward (float64): input and parameter gradients equal the reference's autograd gradients."""
    c, r = 16, 4
    sd = cast(official_cbam(11, c, r, False), F64)
    m = plugattn.from_official("cbam", sd, gate_channels=c, reduction_ratio=r, pool_types=pools).double().eval()
    ref_sd = {k: v.clone().requires_grad_(v.is_floating_point() and "running" not in k) for k, v in sd.items()}
    x = make_input((2, c, *hw), F64).contiguous(memory_format=memory_format)
    y1, y2, g1, g2 = grad_pair(m, lambda t: ref_cbam(t, ref_sd, pools, False), x)
    close(y1, y2)
    close(g1, g2)
    assert y1.is_contiguous(memory_format=memory_format)
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
        close(m(x), ref_cbam(x, ref_sd, ["avg", "max"], False, training=True))
    bn = m.spatial.attn.conv.bn
    close(bn.running_mean, ref_sd["SpatialGate.spatial.bn.running_mean"])
    close(bn.running_var, ref_sd["SpatialGate.spatial.bn.running_var"])
    assert not torch.equal(bn.running_mean, sd["SpatialGate.spatial.bn.running_mean"])


def test_cbam_hidden_zero_is_constant_gate():
    """C // r = 0 (official, no minimum): the channel gate is σ(Σ_pools b₂) whatever the input."""
    sd = official_cbam(5, 8, 16, no_spatial=True)
    m = plugattn.from_official("cbam", sd, gate_channels=8, no_spatial=True).eval()
    x = make_input((2, 8, 5, 5))
    with torch.no_grad():
        close(m(x), x * torch.sigmoid(2 * sd["ChannelGate.mlp.3.bias"]).view(1, 8, 1, 1))


def test_cbam_input_unchanged():
    m = randomize_(CBAM(32)).eval()
    for fmt in (torch.contiguous_format, CL):
        x = make_input((2, 32, 9, 7)).contiguous(memory_format=fmt)
        before = x.clone()
        with torch.no_grad():
            y = m(x)
        assert torch.equal(x, before) and y.is_contiguous(memory_format=fmt)


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
    assert isinstance(plugattn.create("cbam_spatial", 8).attn, ZPoolGate)
    assert sum(isinstance(mod, Gate) for mod in m.modules()) == 2


def test_state_dict_keys():
    shapes = {k: tuple(v.shape) for k, v in CBAM(64).state_dict().items()}
    assert shapes == {
        "channel.fc1.weight": (4, 64), "channel.fc1.bias": (4,), "channel.fc2.weight": (64, 4),
        "channel.fc2.bias": (64,), "spatial.attn.conv.conv.weight": (1, 2, 7, 7),
        "spatial.attn.conv.bn.weight": (1,), "spatial.attn.conv.bn.bias": (1,),
        "spatial.attn.conv.bn.running_mean": (1,), "spatial.attn.conv.bn.running_var": (1,),
        "spatial.attn.conv.bn.num_batches_tracked": (),
    }


def test_spatial_gate_without_norm():
    m = CBAMSpatialGate(norm_layer=None).eval()
    assert not hasattr(m.attn.conv, "bn")
    x = make_input((2, 5, 6, 7))
    z = torch.cat([x.max(1, keepdim=True)[0], x.mean(1, keepdim=True)], 1)
    with torch.no_grad():
        close(m(x), x * torch.sigmoid(F.conv2d(z, m.attn.conv.conv.weight, padding=3)))


def test_extra_repr():
    assert "channels=64, rd_channels=4, kernel_size=7, no_spatial=False" in repr(CBAM(64))
    m = CBAMChannelGate(32, pool_types=["avg", "lse"])
    assert "channels=32, rd_channels=2, pool_types=('avg', 'lse')" in repr(m)
    assert "channels=None, kernel_size=3" in repr(CBAMSpatialGate(kernel_size=3))
    assert "dim=1, kernel_size=3" in repr(CBAMSpatialGate(kernel_size=3).attn)


@pytest.mark.parametrize("cls,kwargs", [
    (CBAM, {}), (CBAM, {"no_spatial": True, "pool_types": ("lp", "lse", "max")}),
    (CBAMChannelGate, {"pool_types": ("avg", "max", "lp", "lse")}), (CBAMSpatialGate, {"kernel_size": 3}),
], ids=str)
def test_fx_trace_and_hooks(cls, kwargs):
    m = randomize_(cls(16, **kwargs)).double().eval()
    gm = torch.fx.symbolic_trace(m)
    leaves = list(param_leaves(m))
    assert leaves
    fired: list[str] = []
    for name in leaves:
        m.get_submodule(name).register_forward_hook(lambda *_, name=name: fired.append(name))
    for n, h, w in [(2, 7, 5), (1, 1, 1)]:
        x = make_input((n, 16, h, w), F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert set(fired) == set(leaves)  # the shared MLP fires once per pool type


@pytest.mark.parametrize("name", ["cbam", "cbam_spatial"])
def test_export_with_dynamic_size_matches_eager(name):
    """torch.export with symbolic H, W: no size-dependent path is baked into the graph."""
    m = randomize_(plugattn.create(name, 8)).eval()
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


@pytest.mark.parametrize("cls", [CBAM, CBAMSpatialGate])
@pytest.mark.parametrize("k", [0, 4, 2.0])
def test_bad_kernel_size(cls, k):
    with pytest.raises(ValueError, match=f"{cls.__name__}.*kernel_size"):
        cls(16, kernel_size=k)


def test_bad_arguments():
    with pytest.raises(ValueError, match="CBAMChannelGate.*rd_channels"):
        CBAMChannelGate(16, rd_channels=-1)
    with pytest.raises(ValueError, match="CBAMChannelGate.*rd_ratio"):
        CBAMChannelGate(16, rd_ratio=0)
    with pytest.raises(ValueError, match="CBAMSpatialGate.*channels"):
        CBAMSpatialGate(0)
    with pytest.raises(ValueError, match="CBAMSpatialGate.*8 channels"):
        CBAMSpatialGate(8)(rand(1, 9, 4, 4))
    with pytest.raises(ValueError, match="CBAM.*16 channels"):
        CBAM(16)(rand(1, 9, 4, 4))


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
