"""Numerics of the second zoo batch against independent formulations.

Each reference below is written from the paper's equations and the official code's documented behaviour
(official parameter names, official state_dict layout, loops over groups instead of reshapes), or is timm's
class where timm has one (EffectiveSEModule, CecaModule, GatherExcite). Modules are built through
``plugattn.from_official`` from an official-layout state_dict wherever a converter exists, so the key
mapping is checked too.
"""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import TOL, LargestTensor, rand, randomize_

F64 = torch.float64
SIZES = [(2, 7, 5), (1, 13, 17), (2, 8, 8), (1, 1, 1)]


def close(a, b, dtype=F64):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def rand_sd(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A random official-layout state_dict; BN running_var positive, num_batches_tracked an int.

    Values are float32 numbers held in float64, so loading them into a float32 module loses nothing.
    """
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = (0.5 + torch.rand(shape, generator=g)).double()
        else:
            sd[k] = (0.5 * torch.randn(shape, generator=g)).double()
    return sd


def bn_shapes(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (n,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def bn_eval(t, sd, prefix):
    return F.batch_norm(t, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                        sd[f"{prefix}.bias"], training=False, eps=1e-5)


# --------------------------------------------------------------------------------------------------- SimAM
def simam_ref(x, lam=1e-4):
    """Paper eq. (5)/official forward: unbiased variance over H·W, E⁻¹ = (t−μ)²/(4(σ²+λ)) + ½."""
    mu = x.mean((2, 3), keepdim=True)
    var = x.var((2, 3), unbiased=True, keepdim=True)
    return x * torch.sigmoid((x - mu) ** 2 / (4 * (var + lam)) + 0.5)


@pytest.mark.parametrize("shape", SIZES[:3], ids=str)
@pytest.mark.parametrize("lam", [1e-4, 0.1])
def test_simam_matches_energy_formula(shape, lam):
    n, h, w = shape
    x = rand(n, 16, h, w, seed=1, dtype=F64)
    close(plugattn.create("simam", 16, e_lambda=lam)(x), simam_ref(x, lam))
    close(plugattn.from_official("simam", {}, e_lambda=lam)(x), simam_ref(x, lam))  # channels=None: any C


def test_simam_single_position_is_finite():
    x = rand(3, 8, 1, 1, seed=2, dtype=F64)
    close(plugattn.create("simam", 8)(x), x * torch.sigmoid(torch.tensor(0.5, dtype=F64)))
    with pytest.raises(ValueError, match="e_lambda"):
        plugattn.create("simam", 8, e_lambda=0.0)


# ------------------------------------------------------------------------------------------ eSE and CECA
@pytest.mark.parametrize("add_maxpool", [False, True])
def test_ese_matches_timm(add_maxpool):
    from timm.layers.squeeze_excite import EffectiveSEModule

    ref = randomize_(EffectiveSEModule(32, add_maxpool=add_maxpool)).double().eval()
    m = plugattn.from_official("ese_timm", ref.state_dict(), channels=32, add_maxpool=add_maxpool).double()
    for n, h, w in SIZES:
        x = rand(n, 32, h, w, seed=3, dtype=F64)
        close(m(x), ref(x))


def test_ese_matches_official_vovnet_formula():
    sd = rand_sd({"fc.weight": (24, 24, 1, 1), "fc.bias": (24,)})
    m = plugattn.from_official("ese", sd, channel=24, reduction=4).double()
    x = rand(2, 24, 7, 5, seed=4, dtype=F64)
    z = F.conv2d(x.mean((2, 3), keepdim=True), sd["fc.weight"], sd["fc.bias"])
    close(m(x), x * F.relu6(z + 3.0) / 6.0)  # the official Hsigmoid
    assert plugattn.create("ese", 24).fc.weight.shape == (24, 24, 1, 1)


@pytest.mark.parametrize("channels", [1, 3, 16, 32, 100, 256, 1000])
@pytest.mark.parametrize("act", [None, nn.ReLU])
def test_ceca_matches_timm(channels, act):
    from timm.layers.eca import CecaModule

    ref = randomize_(CecaModule(channels, act_layer=act)).double().eval()
    m = plugattn.from_official("ceca_timm", ref.state_dict(), channels=channels, act_layer=act).double()
    assert m.kernel_size == ref.conv.kernel_size[0]
    x = rand(2, channels, 5, 4, seed=5, dtype=F64)
    close(m(x), ref(x))


def test_ceca_wraps_around_unlike_eca():
    m = plugattn.create("ceca", 16, kernel_size=3).double()
    with torch.no_grad():
        m.conv.weight.copy_(torch.tensor([[[1.0, 0.0, 0.0]]]))  # output channel i reads channel i − 1
    x = rand(1, 16, 3, 3, seed=6, dtype=F64)
    s = x.mean((2, 3))
    close(m(x), x * torch.sigmoid(torch.roll(s, 1, dims=1))[:, :, None, None])
    with pytest.raises(ValueError, match="kernel_size"):
        plugattn.create("ceca", 16, kernel_size=4)
    with pytest.raises(ValueError, match="kernel_size"):
        plugattn.create("ceca", 2, kernel_size=7)


# ---------------------------------------------------------------------------------------- Gather-Excite
@pytest.fixture
def timm_ge(monkeypatch):
    """timm's GatherExcite, with its ``*dd`` (a dict passed positionally; timm 1.0.31) calls repaired."""
    import timm.layers.gather_excite as ge

    def strip(fn):
        def call(*args, **kwargs):
            return fn(*[a for a in args if not (isinstance(a, str) and a in ("device", "dtype"))], **kwargs)
        return call

    monkeypatch.setattr(ge, "ConvMlp", strip(ge.ConvMlp))
    monkeypatch.setattr(ge, "create_conv2d", strip(ge.create_conv2d))
    monkeypatch.setattr(ge, "nn", types.SimpleNamespace(
        Module=nn.Module, Sequential=nn.Sequential, Identity=nn.Identity, BatchNorm2d=strip(nn.BatchNorm2d)))
    return ge.GatherExcite


GE_CONFIGS = [
    {}, {"use_mlp": False}, {"extent": 2}, {"extent": 4, "use_mlp": False}, {"extent": 6, "use_mlp": False},
    {"extent": 2, "extra_params": True}, {"extent": 8, "extra_params": True},
    {"extent": 4, "extra_params": True, "use_mlp": False}, {"add_maxpool": True},
    {"extent": 4, "add_maxpool": True, "use_mlp": False}, {"rd_ratio": 0.25, "rd_divisor": 8},
]


@pytest.mark.parametrize("kw", GE_CONFIGS, ids=str)
def test_ge_matches_timm(timm_ge, kw):
    ref = randomize_(timm_ge(32, **kw)).double().eval()
    m = plugattn.from_official("ge_timm", ref.state_dict(), channels=32, **kw).double().eval()
    for n, h, w in SIZES:
        x = rand(n, 32, h, w, seed=7, dtype=F64)
        close(m(x), ref(x))


def test_ge_default_is_parameter_free_global_theta_minus():
    m = plugattn.create("ge", 16).double()
    assert sum(p.numel() for p in m.parameters()) == 0
    x = rand(2, 16, 7, 5, seed=8, dtype=F64)
    close(m(x), x * torch.sigmoid(x.mean((2, 3), keepdim=True)))


def test_ge_local_extent_by_hand():
    """GE-θ⁻, e = 2: mean over the clipped 3×3 window centred at (2i, 2j), copied back by nearest neighbour."""
    x = rand(1, 4, 5, 6, seed=9, dtype=F64)
    y = plugattn.create("ge", 4, extent=2).double()(x)
    for i in range(5):
        for j in range(6):
            ci, cj = 2 * (i // 2), 2 * (j // 2)
            win = x[:, :, max(ci - 1, 0):ci + 2, max(cj - 1, 0):cj + 2].mean((2, 3))
            close(y[:, :, i, j], x[:, :, i, j] * torch.sigmoid(win))


@pytest.mark.parametrize("kw", [{"extent": 3}, {"extent": 0, "extra_params": True},
                                {"extent": 6, "extra_params": True}, {"extent": -2}])
def test_ge_bad_arguments(kw):
    with pytest.raises(ValueError, match="GatherExcite"):
        plugattn.create("ge", 16, **kw)


# ------------------------------------------------------------------------------------------------- BAM
def bam_official_sd(c: int, r: int = 16) -> dict[str, torch.Tensor]:
    cr = c // r
    shapes = {"channel_att.gate_c.gate_c_fc_0.weight": (cr, c), "channel_att.gate_c.gate_c_fc_0.bias": (cr,),
              "channel_att.gate_c.gate_c_fc_final.weight": (c, cr), "channel_att.gate_c.gate_c_fc_final.bias": (c,),
              "spatial_att.gate_s.gate_s_conv_reduce0.weight": (cr, c, 1, 1),
              "spatial_att.gate_s.gate_s_conv_reduce0.bias": (cr,),
              "spatial_att.gate_s.gate_s_conv_final.weight": (1, cr, 1, 1),
              "spatial_att.gate_s.gate_s_conv_final.bias": (1,)}
    shapes |= bn_shapes("channel_att.gate_c.gate_c_bn_1", cr) | bn_shapes("spatial_att.gate_s.gate_s_bn_reduce0", cr)
    for i in range(2):
        shapes |= {f"spatial_att.gate_s.gate_s_conv_di_{i}.weight": (cr, cr, 3, 3),
                   f"spatial_att.gate_s.gate_s_conv_di_{i}.bias": (cr,)}
        shapes |= bn_shapes(f"spatial_att.gate_s.gate_s_bn_di_{i}", cr)
    return rand_sd(shapes, seed=c)


def bam_ref(sd, x, combine="mul", official_pool=True):
    """Official BAM forward (eval): Linear-BN1d-ReLU-Linear on the pooled x; 1×1, two dilated 3×3 (d = 4), 1×1."""
    c_, s_ = "channel_att.gate_c.", "spatial_att.gate_s."
    if official_pool:  # official avg_pool2d(x, H, stride=H): the global mean for square inputs
        pooled = F.avg_pool2d(x, x.shape[2], stride=x.shape[2]).flatten(1)
    else:
        pooled = x.mean((2, 3))
    h = F.linear(pooled, sd[c_ + "gate_c_fc_0.weight"], sd[c_ + "gate_c_fc_0.bias"])
    h = F.relu(bn_eval(h, sd, c_ + "gate_c_bn_1"))
    mc = F.linear(h, sd[c_ + "gate_c_fc_final.weight"], sd[c_ + "gate_c_fc_final.bias"])[:, :, None, None]
    t = F.conv2d(x, sd[s_ + "gate_s_conv_reduce0.weight"], sd[s_ + "gate_s_conv_reduce0.bias"])
    t = F.relu(bn_eval(t, sd, s_ + "gate_s_bn_reduce0"))
    for i in range(2):
        t = F.conv2d(t, sd[s_ + f"gate_s_conv_di_{i}.weight"], sd[s_ + f"gate_s_conv_di_{i}.bias"], padding=4,
                     dilation=4)
        t = F.relu(bn_eval(t, sd, s_ + f"gate_s_bn_di_{i}"))
    ms = F.conv2d(t, sd[s_ + "gate_s_conv_final.weight"], sd[s_ + "gate_s_conv_final.bias"])
    logits = mc * ms if combine == "mul" else mc + ms
    return (1 + torch.sigmoid(logits)) * x


@pytest.mark.parametrize("c", [32, 64])
def test_bam_matches_official_on_square_inputs(c):
    sd = bam_official_sd(c)
    m = plugattn.from_official("bam", sd, gate_channel=c).double().eval()
    for n, s in [(2, 8), (1, 13), (3, 1)]:
        x = rand(n, c, s, s, seed=10, dtype=F64)
        close(m(x), bam_ref(sd, x))
    m32 = plugattn.from_official("bam", {k: v.float() for k, v in sd.items()}, gate_channel=c).eval()
    x = rand(2, c, 9, 9, seed=11)
    torch.testing.assert_close(m32(x), bam_ref(sd, x.double()).float(), atol=1e-5, rtol=1e-5)


def test_bam_non_square_uses_the_global_mean_and_add_is_the_paper():
    sd = bam_official_sd(32)
    m = plugattn.from_official("bam", sd, gate_channel=32).double().eval()
    x = rand(2, 32, 7, 5, seed=12, dtype=F64)
    close(m(x), bam_ref(sd, x, official_pool=False))
    m.combine = "add"
    close(m(x), bam_ref(sd, x, combine="add", official_pool=False))


def test_bam_init_follows_official_resnet():
    m = plugattn.create("bam", 64)
    assert all(float(b.detach().abs().sum()) == 0 for n, b in m.named_parameters() if n.endswith("bias"))
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert len(bns) == 4 and all(torch.all(b.weight == 1) for b in bns)
    w = m.spatial[1].conv.weight  # Kaiming normal, fan_out = 4·9: std ≈ sqrt(2 / 36)
    assert abs(w.std().item() - math.sqrt(2 / 36)) < 0.1
    with pytest.raises(ValueError, match="combine"):
        plugattn.create("bam", 64, combine="max")


# ------------------------------------------------------------------------------------------------ scSE
def scse_ref(x, w1, b1, w2, b2, ws, bs, combine):
    wc = torch.sigmoid(F.linear(F.relu(F.linear(x.mean((2, 3)), w1, b1)), w2, b2))[:, :, None, None]
    xs = x * torch.sigmoid(F.conv2d(x, ws, bs))
    xc = x * wc
    return torch.max(xc, xs) if combine == "max" else xc + xs


def test_scse_matches_official_maxout():
    c = 32
    sd = rand_sd({"cSE.fc1.weight": (16, c), "cSE.fc1.bias": (16,), "cSE.fc2.weight": (c, 16), "cSE.fc2.bias": (c,),
                  "sSE.conv.weight": (1, c, 1, 1), "sSE.conv.bias": (1,)})
    m = plugattn.from_official("scse", sd, num_channels=c).double()
    for n, h, w in SIZES:
        x = rand(n, c, h, w, seed=13, dtype=F64)
        close(m(x), scse_ref(x, *sd.values(), combine="max"))
    assert plugattn.create("scse", c).fc1.out_channels == 16  # official r = 2


def test_scse_smp_is_addition():
    c = 32
    sd = rand_sd({"cSE.1.weight": (2, c, 1, 1), "cSE.1.bias": (2,), "cSE.3.weight": (c, 2, 1, 1), "cSE.3.bias": (c,),
                  "sSE.0.weight": (1, c, 1, 1), "sSE.0.bias": (1,)})
    m = plugattn.from_official("scse_smp", sd, in_channels=c).double()
    x = rand(2, c, 7, 5, seed=14, dtype=F64)
    v = list(sd.values())
    close(m(x), scse_ref(x, v[0].flatten(1), v[1], v[2].flatten(1), v[3], v[4], v[5], combine="add"))


# ------------------------------------------------------------------------------------------------- EMA
def ema_ref(sd, x, groups):
    """Official EMA, one group of one sample at a time (no reshapes): 1×1 and 3×3 branches, cross-spatial."""
    b, c, h, w = x.shape
    cg = c // groups
    w1, b1 = sd["conv1x1.weight"][:, :, 0, 0], sd["conv1x1.bias"]
    out = torch.empty_like(x)
    for n in range(b):
        for g in range(groups):
            xg = x[n, g * cg:(g + 1) * cg]  # (C', H, W)
            a_h = w1 @ xg.mean(2) + b1[:, None]  # (C', H): pooled over W
            a_w = w1 @ xg.mean(1) + b1[:, None]  # (C', W): pooled over H
            z = xg * torch.sigmoid(a_h)[:, :, None] * torch.sigmoid(a_w)[:, None, :]
            mu, var = z.mean((1, 2), keepdim=True), z.var((1, 2), unbiased=False, keepdim=True)
            x1 = (z - mu) / torch.sqrt(var + 1e-5) * sd["gn.weight"][:, None, None] + sd["gn.bias"][:, None, None]
            x2 = F.conv2d(xg[None], sd["conv3x3.weight"], sd["conv3x3.bias"], padding=1)[0]
            s1, s2 = torch.softmax(x1.mean((1, 2)), 0), torch.softmax(x2.mean((1, 2)), 0)
            attn = torch.einsum("c,chw->hw", s1, x2) + torch.einsum("c,chw->hw", s2, x1)
            out[n, g * cg:(g + 1) * cg] = xg * torch.sigmoid(attn)
    return out


@pytest.mark.parametrize("c,factor", [(64, 32), (32, 8), (24, 4)])
def test_ema_matches_official(c, factor):
    cg = c // factor
    sd = rand_sd({"conv1x1.weight": (cg, cg, 1, 1), "conv1x1.bias": (cg,), "conv3x3.weight": (cg, cg, 3, 3),
                  "conv3x3.bias": (cg,), "gn.weight": (cg,), "gn.bias": (cg,)})
    m = plugattn.from_official("ema", sd, channels=c, factor=factor).double()
    for n, h, w in SIZES:
        x = rand(n, c, h, w, seed=15, dtype=F64)
        close(m(x), ema_ref(sd, x, factor))


def test_ema_groups_cap_and_errors():
    assert [plugattn.create("ema", c).groups for c in (1, 2, 16, 32, 64, 256)] == [1, 1, 8, 16, 32, 32]
    assert plugattn.create("ema", 64, groups=8).groups == 8
    with pytest.raises(ValueError, match="EfficientMultiScaleAttention.*divisible"):
        plugattn.create("ema", 80)  # min(32, 40) = 32 does not divide 80
    with pytest.raises(ValueError, match="groups"):
        plugattn.create("ema", 64, groups=0)


# -------------------------------------------------------------------------------------- Shuffle Attention
def sa_ref(sd, x, groups, eps=1e-5):
    """Official sa_layer: per group, channel gate on the first half, GN spatial gate on the second; shuffle."""
    b, c, h, w = x.shape
    cg, half = c // groups, c // (2 * groups)

    def v(k):
        return sd[k].view(1, half, 1, 1)

    pre = torch.empty_like(x)
    for g in range(groups):
        x1, x2 = x[:, g * cg:g * cg + half], x[:, g * cg + half:(g + 1) * cg]
        pre[:, g * cg:g * cg + half] = x1 * torch.sigmoid(v("cweight") * x1.mean((2, 3), keepdim=True) + v("cbias"))
        mu, var = x2.mean((2, 3), keepdim=True), x2.var((2, 3), unbiased=False, keepdim=True)
        xn = (x2 - mu) / torch.sqrt(var + eps) * sd["gn.weight"].view(1, half, 1, 1) + sd["gn.bias"].view(1, half, 1, 1)
        pre[:, g * cg + half:(g + 1) * cg] = x2 * torch.sigmoid(v("sweight") * xn + v("sbias"))
    src = [(j % 2) * (c // 2) + j // 2 for j in range(c)]  # channel_shuffle(·, 2): output j ← input src[j]
    return pre[:, src]


@pytest.mark.parametrize("c,groups", [(128, 64), (32, 4), (16, 8), (24, 3), (12, 1)])
def test_shuffle_matches_official(c, groups):
    """Even G writes the shuffled halves in place (no autograd), odd G shuffles after; both layouts, both modes."""
    half = c // (2 * groups)
    sd = rand_sd({k: (1, half, 1, 1) for k in ("cweight", "cbias", "sweight", "sbias")}
                 | {"gn.weight": (half,), "gn.bias": (half,)})
    m = plugattn.from_official("shuffle", sd, channel=c, groups=groups).double()
    for n, h, w in SIZES:
        x = rand(n, c, h, w, seed=16, dtype=F64)
        want = sa_ref(sd, x, groups)
        close(m(x), want)
        with torch.no_grad():
            close(m(x), want)
            y = m(x.to(memory_format=torch.channels_last))
            close(y, want)
            assert y.is_contiguous(memory_format=torch.channels_last)


def test_shuffle_groups_cap_and_errors():
    assert [plugattn.create("shuffle", c).groups for c in (2, 16, 32, 256, 512)] == [1, 8, 16, 64, 64]
    with pytest.raises(ValueError, match="ShuffleAttention.*divisible"):
        plugattn.create("shuffle", 3)
    with pytest.raises(ValueError, match="ShuffleAttention.*divisible"):
        plugattn.create("shuffle", 64, groups=64)


# ------------------------------------------------------------------------------------------------- SGE
def sge_ref(weight, bias, x, groups):
    """Official SpatialGroupEnhance: per group, ⟨GAP, x_i⟩ normalised by its unbiased std (+1e-5)."""
    b, c, h, w = x.shape
    cg = c // groups
    out = torch.empty_like(x)
    for g in range(groups):
        xg = x[:, g * cg:(g + 1) * cg]
        t = (xg * xg.mean((2, 3), keepdim=True)).sum(1).flatten(1)  # (B, H·W)
        t = t - t.mean(1, keepdim=True)
        t = t / (t.std(1, keepdim=True) + 1e-5)
        out[:, g * cg:(g + 1) * cg] = xg * torch.sigmoid(t.view(b, 1, h, w) * weight[0, g] + bias[0, g])
    return out


@pytest.mark.parametrize("c,groups", [(64, 64), (128, 64), (32, 4)])
def test_sge_matches_official(c, groups):
    sd = rand_sd({"weight": (1, groups, 1, 1), "bias": (1, groups, 1, 1)})
    m = plugattn.from_official("sge", sd, groups=groups, channels=c).double()
    for n, h, w in SIZES[:3]:
        x = rand(n, c, h, w, seed=17, dtype=F64)
        close(m(x), sge_ref(sd["weight"], sd["bias"], x, groups))
    x = rand(2, c, 1, 1, seed=18, dtype=F64)  # official: NaN; here ĉ = 0, y = x·σ(β)
    close(m(x), x * torch.sigmoid(sd["bias"].repeat_interleave(c // groups, 1)))


def test_sge_groups_cap_and_errors():
    assert [plugattn.create("sge", c).groups for c in (1, 16, 64, 256)] == [1, 16, 64, 64]
    with pytest.raises(ValueError, match="SpatialGroupEnhance.*divisible"):
        plugattn.create("sge", 96, groups=64)


# ------------------------------------------------------------------------------------ registry metadata
def test_zoo_b_is_registered():
    keys = {"simam", "ge", "bam", "scse", "ema", "shuffle", "sge", "ese", "ceca"}
    assert keys <= set(plugattn.list_modules())
    assert {"simam", "ge_timm", "bam", "scse", "scse_smp", "ema", "shuffle", "sge", "ese", "ese_timm",
            "ceca_timm"} <= set(plugattn.list_official())
    for k in keys:
        assert plugattn.info(k).url.startswith("https://")


# ------------------------------------------------------------------------------------------- Non-local
@pytest.fixture
def NonLocal():  # noqa: N802
    """The class under test."""
    from plugattn.modules.non_local import NonLocal

    return NonLocal


def nl_official_sd(c: int, inter: int, sub_sample: bool, bn_layer: bool, seed: int = 0):
    """AlexHex7 NONLocalBlock2D state_dict layout (g and phi are Sequential(conv, pool) when sub-sampling)."""
    sub = ".0" if sub_sample else ""
    shapes = {f"g{sub}.weight": (inter, c, 1, 1), f"g{sub}.bias": (inter,),
              "theta.weight": (inter, c, 1, 1), "theta.bias": (inter,),
              f"phi{sub}.weight": (inter, c, 1, 1), f"phi{sub}.bias": (inter,)}
    if bn_layer:
        shapes |= {"W.0.weight": (c, inter, 1, 1), "W.0.bias": (c,)} | bn_shapes("W.1", c)
    else:
        shapes |= {"W.weight": (c, inter, 1, 1), "W.bias": (c,)}
    return rand_sd(shapes, seed)


def nl_ref(x, theta_w, theta_b, phi_w, phi_b, g_w, g_b, out, *, scale=1.0, pool=None):
    """Embedded Gaussian with the whole (H·W) × S matrix: softmax_j(s θᵢᵀφⱼ) gⱼ, then ``out`` (W_z, norm), + x.

    ``pool``: None, "before" (Caffe2: max-pool x, then φ and g) or "after" (paper text, AlexHex7).
    """
    b, c, h, w = x.shape
    src = F.max_pool2d(x, 2) if pool == "before" else x
    theta = F.conv2d(x, theta_w, theta_b).reshape(b, -1, h * w)  # (B, C', HW)
    phi, g = F.conv2d(src, phi_w, phi_b), F.conv2d(src, g_w, g_b)
    if pool == "after":
        phi, g = F.max_pool2d(phi, 2), F.max_pool2d(g, 2)
    f = torch.einsum("bci,bcj->bij", theta, phi.flatten(2)) * scale  # (B, HW, S)
    y = torch.einsum("bij,bcj->bci", torch.softmax(f, dim=-1), g.flatten(2)).reshape(b, -1, h, w)
    return out(y) + x


@pytest.mark.parametrize("sub_sample", [True, False])
@pytest.mark.parametrize("bn_layer", [True, False])
def test_non_local_matches_alexhex7(NonLocal, sub_sample, bn_layer):
    c, inter = 32, 16
    sd = nl_official_sd(c, inter, sub_sample, bn_layer)
    m = plugattn.from_official("non_local", sd, in_channels=c, sub_sample=sub_sample, bn_layer=bn_layer)
    m = m.double().eval()
    sub = ".0" if sub_sample else ""
    if bn_layer:
        def out(y):
            return bn_eval(F.conv2d(y, sd["W.0.weight"], sd["W.0.bias"]), sd, "W.1")
    else:
        def out(y):
            return F.conv2d(y, sd["W.weight"], sd["W.bias"])
    for n, h, w in [(2, 8, 8), (2, 7, 5), (1, 13, 17)]:
        x = rand(n, c, h, w, seed=20, dtype=F64)
        want = nl_ref(x, sd["theta.weight"], sd["theta.bias"], sd[f"phi{sub}.weight"], sd[f"phi{sub}.bias"],
                      sd[f"g{sub}.weight"], sd[f"g{sub}.bias"], out, pool="after" if sub_sample else None)
        close(m(x), want)


@pytest.mark.parametrize("sub_sample", [True, False])
def test_non_local_default_is_caffe2(NonLocal, sub_sample):
    """Caffe2 spacetime_nonlocal: logits scaled by C'^-1/2, x max-pooled before φ and g, BN after W_z."""
    m = randomize_(NonLocal(32, sub_sample=sub_sample)).double().eval()
    assert m.rd_channels == 16

    def out(y):
        return m.norm(F.conv2d(y, m.proj.weight, m.proj.bias))

    for n, h, w in [(2, 8, 6), (1, 9, 7)]:
        x = rand(n, 32, h, w, seed=21, dtype=F64)
        want = nl_ref(x, m.theta.weight, m.theta.bias, m.phi.weight, m.phi.bias, m.g.weight, m.g.bias, out,
                      scale=16**-0.5, pool="before" if sub_sample else None)
        close(m(x), want)


def test_non_local_init_is_identity_and_caffe2(NonLocal):
    m = NonLocal(64)
    x = rand(2, 64, 7, 5, seed=22)
    assert torch.equal(m(x), x)
    assert all(float(p.detach().abs().sum()) == 0 for p in m.norm.parameters())
    assert abs(m.theta.weight.std().item() - 0.01) < 2e-3 and float(m.theta.bias.detach().abs().sum()) == 0
    m = NonLocal(64, norm_layer=None)
    assert float(m.proj.weight.detach().abs().sum()) == 0 and torch.equal(m(x), x)
    with pytest.raises(ValueError, match="NonLocal.*sub_sample"):
        NonLocal(16, sub_sample=True)(rand(1, 16, 1, 5))


@pytest.mark.parametrize("sub_sample", [False, True])
def test_non_local_blocks_equal_one_block(NonLocal, sub_sample):
    one = randomize_(NonLocal(16, sub_sample=sub_sample, block_budget=None)).double().eval()
    blocked = randomize_(NonLocal(16, sub_sample=sub_sample, query_block=7)).double().eval()
    x = rand(2, 16, 9, 11, seed=23, dtype=F64)
    close(blocked(x), one(x))
    ckpt = randomize_(NonLocal(16, sub_sample=sub_sample, query_block=7, grad_checkpoint=True)).double().train()
    ref = randomize_(NonLocal(16, sub_sample=sub_sample, block_budget=None)).double().train()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ckpt(xa).square().sum().backward()
    ref(xb).square().sum().backward()
    close(xa.grad, xb.grad)
    for (name, pa), pb in zip(ckpt.named_parameters(), ref.parameters()):
        close(pa.grad, pb.grad)


def test_non_local_never_materialises_the_full_matrix(NonLocal):
    b, c, h, w = 2, 32, 40, 40
    full = b * (h * w) ** 2 * 4  # 20 MiB
    budget = 2**20
    m = randomize_(NonLocal(c, block_budget=budget)).eval()
    x = rand(b, c, h, w, seed=24)
    with torch.no_grad(), LargestTensor() as probe:
        y = m(x)
    assert probe.largest <= max(budget, x.numel() * x.element_size()) < full
    with torch.no_grad(), LargestTensor() as probe:
        want = randomize_(NonLocal(c, block_budget=None)).eval()(x)
    assert probe.largest >= full  # the probe does see the one-block matrix
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
