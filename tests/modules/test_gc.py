"""GCNet's global context block (plugattn.modules.gc) against the official ``ContextBlock`` forward, and timm.

The reference is ``ContextBlock.forward`` re-derived from the official code's structure, on an official-layout
state_dict (``conv_mask``, ``channel_add_conv.{0,1,3}``, ``channel_mul_conv.{0,1,3}``): the mask conv over the
full map, softmax over H·W, ``matmul`` of the (N, 1, C, HW) input with the (N, 1, HW, 1) mask, then the
``channel_mul`` transform (σ) and the ``channel_add`` transform, each conv → LayerNorm([C/r, 1, 1]) → ReLU → conv.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import TOL, assert_matches_reference, param_leaves, rand, randomize_
from plugattn.modules.gc import GlobalContextBlock, LayerNorm2d

F64 = torch.float64
SHAPES = [(2, 7, 5), (1, 13, 17), (2, 1, 1), (3, 6, 6)]


def _randn(*shape: int, seed: int, scale: float = 0.5) -> torch.Tensor:
    return scale * rand(*shape, seed=seed)


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


def official_gc_forward(sd: dict, x: torch.Tensor, pooling_type: str, fusion_types, eps: float = 1e-5):
    """ContextBlock.forward re-derived from the official code's structure (spatial_pool, then mul, then add)."""
    n, c, h, w = x.shape
    if pooling_type == "att":
        mask = F.conv2d(x, sd["conv_mask.weight"], sd["conv_mask.bias"]).view(n, 1, h * w)
        mask = torch.softmax(mask, dim=2).unsqueeze(-1)  # (N, 1, HW, 1)
        context = torch.matmul(x.reshape(n, 1, c, h * w), mask).view(n, c, 1, 1)
    else:
        context = F.adaptive_avg_pool2d(x, 1)

    def transform(p: str) -> torch.Tensor:
        t = F.conv2d(context, sd[f"{p}.0.weight"], sd[f"{p}.0.bias"])
        t = F.layer_norm(t, t.shape[1:], sd[f"{p}.1.weight"], sd[f"{p}.1.bias"], eps=eps)
        return F.conv2d(F.relu(t), sd[f"{p}.3.weight"], sd[f"{p}.3.bias"])

    out = x
    if "channel_mul" in fusion_types:
        out = out * torch.sigmoid(transform("channel_mul_conv"))
    if "channel_add" in fusion_types:
        out = out + transform("channel_add_conv")
    return out


def gc_ref(m: GlobalContextBlock, x: torch.Tensor) -> torch.Tensor:
    """The official forward with the module's weights, renamed to the official layout."""
    sd, fusions = {}, []
    if m.conv_attn is not None:
        sd["conv_mask.weight"], sd["conv_mask.bias"] = m.conv_attn.weight, m.conv_attn.bias
    for mlp, fusion in ((m.mlp_add, "channel_add"), (m.mlp_scale, "channel_mul")):
        if mlp is not None:
            fusions.append(fusion)
            planes = mlp.fc1.out_channels
            sd[f"{fusion}_conv.0.weight"], sd[f"{fusion}_conv.0.bias"] = mlp.fc1.weight, mlp.fc1.bias
            sd[f"{fusion}_conv.1.weight"] = mlp.norm.weight.view(planes, 1, 1)
            sd[f"{fusion}_conv.1.bias"] = mlp.norm.bias.view(planes, 1, 1)
            sd[f"{fusion}_conv.3.weight"], sd[f"{fusion}_conv.3.bias"] = mlp.fc2.weight, mlp.fc2.bias
    eps = (m.mlp_add or m.mlp_scale).norm.eps
    return official_gc_forward(sd, x, "att" if m.conv_attn is not None else "avg", fusions, eps)


def build(channels: int = 32, seed: int = 0, **kwargs) -> GlobalContextBlock:
    return randomize_(GlobalContextBlock(channels, dtype=F64, **kwargs), seed).eval()


GC_CONFIGS = [{}, {"fuse_scale": True}, {"fuse_add": False, "fuse_scale": True, "rd_ratio": 1 / 4},
              {"use_attn": False, "fuse_scale": True}]


@pytest.mark.parametrize("kwargs", GC_CONFIGS, ids=str)
def test_gc_matches_reference(kwargs):
    """Output and input gradient equal the official forward, for contiguous and channels_last x (layout kept)."""
    m = build(**kwargs)
    assert_matches_reference(m, lambda x: gc_ref(m, x), SHAPES, 32)


def test_gc_reference_other_width():
    m = build(64, seed=3)
    x = rand(2, 64, 9, 8, seed=4, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), gc_ref(m, x), atol=1e-10, rtol=1e-10)


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
            atol, rtol = TOL[dtype]
            torch.testing.assert_close(got, official_gc_forward(sdd, x, pooling_type, fusion_types), atol=atol,
                                       rtol=rtol)


def test_gc_default_is_official_channel_add_r16_and_starts_as_identity():
    m = GlobalContextBlock(64).eval()
    assert m.mlp_add is not None and m.mlp_scale is None and m.conv_attn is not None
    assert m.mlp_add.fc1.out_channels == 4 and isinstance(m.mlp_add.norm, LayerNorm2d) and m.mlp_add.norm.eps == 1e-5
    x = rand(2, 64, 5, 6, seed=1)
    with torch.no_grad():
        assert torch.equal(m(x), x)  # last conv zero-initialised: the block starts as the identity
    assert m.conv_attn.bias.abs().sum() == 0
    assert "channels=64, rd_channels=4, use_attn=True, fuse_add=True, fuse_scale=False" in repr(m)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "conv_attn.weight": (1, 64, 1, 1), "conv_attn.bias": (1,),
        "mlp_add.fc1.weight": (4, 64, 1, 1), "mlp_add.fc1.bias": (4,),
        "mlp_add.norm.weight": (4,), "mlp_add.norm.bias": (4,),
        "mlp_add.fc2.weight": (64, 4, 1, 1), "mlp_add.fc2.bias": (64,)}


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
    with pytest.raises(ValueError, match="GlobalContextBlock: rd_ratio"):
        GlobalContextBlock(32, rd_ratio=-1)
    with pytest.raises(ValueError, match="pooling_type"):
        plugattn.from_official("gc", None, inplanes=32, ratio=0.25, pooling_type="max")
    with pytest.raises(ValueError, match="fusion_types"):
        plugattn.from_official("gc", None, inplanes=32, ratio=0.25, fusion_types=("channel_cat",))
    with pytest.raises(TypeError, match="gc_timm"):
        plugattn.from_official("gc_timm", None, channels=32, rd=4)


def test_torch_export_odd_sizes():
    m = build(seed=1).float()
    x = rand(2, 32, 9, 11, seed=2)
    ep = torch.export.export(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x))


@pytest.mark.parametrize("kwargs", GC_CONFIGS, ids=str)
def test_fx_trace_and_hooks(kwargs):
    m = build(**kwargs)
    gm = torch.fx.symbolic_trace(m)
    fired = []
    leaves = list(param_leaves(m))
    assert ("conv_attn" in leaves) == (m.conv_attn is not None)
    for name in leaves:
        m.get_submodule(name).register_forward_hook(lambda *_, name=name: fired.append(name))
    for n, h, w in [(2, 7, 5), (1, 1, 1)]:
        x = rand(n, 32, h, w, seed=h, dtype=F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert sorted(fired) == sorted(leaves)
