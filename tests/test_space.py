"""The design space: parts against independent formulas, presets equal to the named modules, compose's contract."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import scipy.fft
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import rand, randomize_
from plugattn._layers import Gate
from plugattn.space import (
    MLP, Add, AttentionPool, AxialMLP, ChannelConv, ChannelSelfAttention, ChannelwiseFC, ClusterPool, ClusterSE,
    ComposedAttention, ConvPool, DCTPool, GeMPool, LinearPool, MultiScale, MultiScaleECA, Multiply, Parallel, Pool,
    Residual, Sequence, SpatialConv, SpatialSoftmax, compose, list_presets, load_named_state_dict, make_gate, preset,
    space_table,
)
from plugattn.space.compose import SPACE_MAP

C = 32
SHAPES = [(2, 7, 5), (1, 1, 1), (3, 13, 17), (2, 4, 4)]


def _x(n=2, c=C, h=7, w=5, seed=0, dtype=torch.float32):
    return rand(n, c, h, w, seed=seed, dtype=dtype) + rand(n, c, 1, 1, seed=seed + 100, dtype=dtype)


# --- presets equal the named modules ---------------------------------------------------------------------------

PRESET_CASES = [
    ("se", {}), ("se", {"bias": False}), ("se", {"rd_divisor": 8}), ("se", {"add_maxpool": True}),
    ("se", {"norm_layer": "batchnorm", "act_layer": "silu", "gate_layer": "hard_sigmoid", "rd_ratio": 1 / 4}),
    ("eca", {}), ("eca", {"kernel_size": 5}), ("eca", {"kernel_size": 1}), ("eca", {"gate_layer": "hard_sigmoid"}),
    ("cbam_channel", {}), ("cbam_channel", {"pool_types": ("avg", "max", "lp", "lse")}),
    ("cbam_channel", {"pool_types": ("max",), "rd_ratio": 1 / 4, "bias": False}),
    ("cbam_spatial", {}), ("cbam_spatial", {"kernel_size": 3}),
    ("cbam", {}), ("cbam", {"no_spatial": True}), ("cbam", {"kernel_size": 5, "pool_types": ("lse", "avg")}),
    ("coord", {}), ("coord", {"rd_ratio": 1 / 4}), ("coord", {"rd_channels": 5, "bias": False, "act_layer": "silu"}),
    ("srm", {}),
    ("fca", {}), ("fca", {"dct_h": 14, "dct_w": 14, "freq_sel_method": "low8"}),
    ("gc", {}), ("gc", {"use_attn": False}), ("gc", {"fuse_add": False, "fuse_scale": True, "rd_ratio": 1 / 4}),
]


def _named_and_preset(name: str, kwargs: dict, c: int = C, seed: int = 0):
    named_key = plugattn.space.PRESETS[name].named
    assert named_key in plugattn.list_modules(), f"preset {name!r} names an unregistered module {named_key!r}"
    torch.manual_seed(seed)
    named = randomize_(plugattn.create(named_key, c, **kwargs), seed=seed)
    p = preset(name, c, **kwargs)
    load_named_state_dict(p, name, named.state_dict())
    return named, p


@pytest.mark.parametrize("name,kwargs", PRESET_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PRESET_CASES)])
def test_preset_equals_named_module(name, kwargs):
    named, p = _named_and_preset(name, kwargs)
    assert sum(t.numel() for t in p.parameters()) == sum(t.numel() for t in named.parameters())
    named.eval(), p.eval()
    for i, (n, h, w) in enumerate(SHAPES):
        x = _x(n, C, h, w, seed=i)
        with torch.no_grad():
            torch.testing.assert_close(p(x), named(x), atol=1e-5, rtol=1e-5)
            xcl = x.to(memory_format=torch.channels_last)
            torch.testing.assert_close(p(xcl), named(xcl), atol=1e-5, rtol=1e-5)
    x = _x(2, C, 6, 5, seed=9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(p).double()(x), copy.deepcopy(named).double()(x),
                                   atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", ["cbam_spatial", "coord", "srm", "se"])
def test_preset_equals_named_module_in_training(name):
    """Batch statistics too: the norms see the same tensors (Coordinate Attention's BN sees H and W together)."""
    kwargs = {"norm_layer": "batchnorm"} if name == "se" else {}
    named, p = _named_and_preset(name, kwargs)
    named.train(), p.train()
    x = _x(4, C, 6, 5, seed=3).requires_grad_()
    y_named = named(x)
    y_p = p(x)
    torch.testing.assert_close(y_p, y_named, atol=1e-5, rtol=1e-5)
    g = rand(*x.shape, seed=4)
    gx_named, = torch.autograd.grad(y_named, x, g)
    gx_p, = torch.autograd.grad(y_p, x, g)
    torch.testing.assert_close(gx_p, gx_named, atol=1e-5, rtol=1e-5)
    sd_named = {k: v for k, v in named.state_dict().items() if "running" in k}
    sd_p = p.state_dict()
    for k, v in sd_named.items():
        torch.testing.assert_close(sd_p[plugattn.space.PRESETS[name].key_map(k)], v)


def test_every_preset_has_a_case_and_a_named_module():
    assert {n for n, _ in PRESET_CASES} == set(list_presets())
    assert {"se", "eca", "cbam_channel", "cbam_spatial", "coord"} <= set(list_presets())
    with pytest.raises(ValueError, match="expected one of"):
        preset("nope", 16)


def test_gc_preset_rejects_both_fusions():
    with pytest.raises(ValueError, match="one pipeline"):
        preset("gc", 32, fuse_add=True, fuse_scale=True)


def test_load_named_state_dict_is_strict():
    named = plugattn.create("se", 32)
    sd = dict(named.state_dict())
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="extra.weight"):
        load_named_state_dict(preset("se", 32), "se", sd)
    sd.pop("extra.weight")
    sd.pop("fc1.bias")
    with pytest.raises(RuntimeError, match="fc1.bias"):
        load_named_state_dict(preset("se", 32), "se", sd)


# --- squeeze parts -----------------------------------------------------------------------------------------------

DIMS = {"hw": (2, 3), "h": (2,), "w": (3,), "c": (1,)}


def ref_stat(x: torch.Tensor, stat: str, dims) -> torch.Tensor:
    n = 1
    for d in dims:
        n *= x.shape[d]
    if stat == "avg":
        return x.sum(dims, keepdim=True) / n
    if stat == "max":
        out = x
        for d in dims:
            out = out.max(d, keepdim=True).values
        return out
    if stat == "std":
        m = x.sum(dims, keepdim=True) / n
        return (((x - m) ** 2).sum(dims, keepdim=True) / max(n - 1, 1)).sqrt()
    if stat == "lp":
        return (x * x).sum(dims, keepdim=True).sqrt()
    m = ref_stat(x, "max", dims)
    return m + (x - m).exp().sum(dims, keepdim=True).log()


@pytest.mark.parametrize("axes", ["hw", "h", "w", "c"])
@pytest.mark.parametrize("stat", ["avg", "max", "std", "lp", "lse"])
def test_pool_statistics(axes, stat):
    x = _x(2, 6, 5, 4, seed=1, dtype=torch.float64)
    d = Pool(6, stats=stat, axes=axes)(x)
    torch.testing.assert_close(d, ref_stat(x, stat, DIMS[axes]))


def test_pool_merges_and_axial():
    x = _x(2, 6, 5, 4, seed=2, dtype=torch.float64)
    avg, mx = ref_stat(x, "avg", (2, 3)), ref_stat(x, "max", (2, 3))
    cat = Pool(6, stats="avg+max", merge="concat")
    assert cat.out_channels == 12 and not cat.shared
    torch.testing.assert_close(cat(x), torch.cat((avg, mx), 1))
    shared = Pool(6, stats=("avg", "max"))
    assert shared.shared and shared.out_channels == 6
    a, b = shared(x)
    torch.testing.assert_close(a, avg), torch.testing.assert_close(b, mx)
    torch.testing.assert_close(Pool(6, stats="avg+max", merge="mean")(x), (avg + mx) / 2)
    sp = Pool(6, stats="max+avg", axes="c")  # CBAM's [max; mean] over C, concatenated by default
    assert sp.out_channels == 2
    torch.testing.assert_close(sp(x), torch.cat((x.amax(1, keepdim=True), x.mean(1, keepdim=True)), 1))
    dh, dw = Pool(6, axes="h+w")(x)
    torch.testing.assert_close(dh, x.mean(3, keepdim=True)), torch.testing.assert_close(dw, x.mean(2, keepdim=True))
    with pytest.raises(ValueError, match="Pool.*axes"):
        Pool(6, axes="hwc")
    with pytest.raises(ValueError, match="Pool.*statistic"):
        Pool(6, stats="avg+median")
    with pytest.raises(ValueError, match="h\\+w"):
        Pool(6, stats="avg+max", axes="h+w")
    with pytest.raises(ValueError, match="merge"):
        Pool(6, stats="avg+max", merge="stack")


def test_gem_pool():
    x = _x(2, 6, 5, 4, seed=3, dtype=torch.float64)
    xc = x.clamp(min=1e-6)
    torch.testing.assert_close(GeMPool(6, p=1.0).double()(x), xc.mean((2, 3), keepdim=True))
    g3 = GeMPool(6, p=3.0).double()
    torch.testing.assert_close(g3(x), (xc ** 3).mean((2, 3), keepdim=True) ** (1 / 3))
    big = GeMPool(6, p=200.0, learnable=False).double()(x.abs() + 0.1)
    torch.testing.assert_close(big, (x.abs() + 0.1).amax((2, 3), keepdim=True), rtol=0.02, atol=0)
    g3(x).sum().backward()
    assert g3.p.grad is not None and torch.isfinite(g3.p.grad).all() and g3.p.grad.abs() > 0
    assert "p" not in dict(GeMPool(6, learnable=False).named_parameters())
    torch.testing.assert_close(GeMPool(6, axes="c", p=2.0).double()(x), (xc ** 2).mean(1, keepdim=True).sqrt())


def test_dct_pool_is_the_2d_dct():
    x = rand(2, 16, 7, 7, seed=4, dtype=torch.float64)
    d = DCTPool(16, freq_sel_method="top16", dtype=torch.float64)(x)
    coeff = torch.from_numpy(scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(2, 3)))
    us, vs = plugattn.modules.fca.freq_indices("top16")
    want = torch.stack([coeff[:, i, u, v] for i, (u, v) in enumerate(zip(us, vs))], 1)  # one channel per frequency
    torch.testing.assert_close(d.flatten(1), want)
    assert DCTPool(16)(rand(2, 16, 3, 11, seed=5)).shape == (2, 16, 1, 1)


def test_attention_pool_is_softmax_weighted_mean():
    m = randomize_(AttentionPool(8), seed=1).double()
    x = _x(2, 8, 5, 3, seed=5, dtype=torch.float64)
    logits = (x * m.conv_attn.weight.view(1, 8, 1, 1)).sum(1) + m.conv_attn.bias  # (N, H, W)
    a = torch.softmax(logits.flatten(1), 1)  # (N, HW)
    torch.testing.assert_close(m(x).flatten(1), torch.einsum("ncp,np->nc", x.flatten(2), a))
    assert isinstance(m.attn_gate, Gate)


def test_linear_and_conv_pool():
    lp = randomize_(LinearPool(8, out_channels=2), seed=2).double()
    x = _x(2, 8, 5, 3, seed=6, dtype=torch.float64)
    torch.testing.assert_close(lp(x), torch.einsum("nchw,oc->nohw", x, lp.proj.weight[:, :, 0, 0])
                               + lp.proj.bias.view(1, 2, 1, 1))
    cp = randomize_(ConvPool(8), seed=3).double().eval()
    conv, bn = cp.convs[0].conv, cp.convs[0].bn
    want = F.batch_norm(F.conv2d(x, conv.weight, None, 2, 1, 1, 8), bn.running_mean, bn.running_var, bn.weight,
                        bn.bias, False, 0.0, bn.eps).mean((2, 3), keepdim=True)
    torch.testing.assert_close(cp(x), want)
    assert ConvPool(8, num_layers=2)(rand(2, 8, 1, 1, seed=1)).shape == (2, 8, 1, 1)


# --- the soft-cluster squeeze ------------------------------------------------------------------------------------


def ref_cluster(x: torch.Tensor, centres: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    n, c, h, w = x.shape
    pos = x.flatten(2).transpose(1, 2)  # (N, P, C)
    a = torch.softmax(torch.einsum("npc,kc->npk", pos, centres) / c ** 0.5, dim=-1)  # (N, P, k)
    return torch.einsum("npk,npc->nck", a, pos) / a.sum(1).clamp_min(eps)[:, None, :]  # (N, C, k)


def test_cluster_pool_formula_and_properties():
    torch.manual_seed(0)
    m = ClusterPool(8, num_clusters=3, merge="concat").double()
    x = _x(2, 8, 5, 4, seed=7, dtype=torch.float64)
    d = m(x)
    assert d.shape == (2, 24, 1, 1) and torch.isfinite(d).all()
    want = ref_cluster(x, m.centres).transpose(1, 2).reshape(2, 24, 1, 1)  # cluster-major
    torch.testing.assert_close(d, want)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    xp = x.flatten(2)[:, :, perm].reshape(2, 8, 4, 5)  # positions permuted (and reshaped to 4×5)
    torch.testing.assert_close(m(xp), d)  # permutation-invariant over positions
    a = m.assignments(x)
    assert a.shape == (2, 3, 5, 4)
    torch.testing.assert_close(a.sum(1), torch.ones(2, 5, 4, dtype=torch.float64))
    per = d.view(2, 3, 8)  # each cluster descriptor is a convex combination of positions
    lo, hi = x.flatten(2).amin(-1), x.flatten(2).amax(-1)
    assert ((per >= lo[:, None] - 1e-9) & (per <= hi[:, None] + 1e-9)).all()


def test_cluster_pool_gradients_and_edge_cases():
    torch.manual_seed(1)
    m = ClusterPool(8, num_clusters=4).double()
    x = _x(2, 8, 3, 4, seed=8, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))
    loss = sum((t * rand(*t.shape, seed=i, dtype=torch.float64)).sum() for i, t in enumerate(m(x)))
    loss.backward()
    assert torch.isfinite(m.centres.grad).all() and (m.centres.grad.abs().sum(1) > 0).all()
    # a single position: every cluster pools that position
    x1 = rand(3, 8, 1, 1, seed=9, dtype=torch.float64)
    for t in m(x1):
        torch.testing.assert_close(t, x1)
    # a single cluster is the mean (SE's squeeze)
    one = ClusterPool(8, num_clusters=1).double()
    torch.testing.assert_close(one(x.detach()), x.detach().mean((2, 3), keepdim=True))
    # huge inputs: the assignments saturate but stay finite
    assert torch.isfinite(torch.stack(m(1e4 * x.detach()))).all()


def test_cluster_se_with_one_cluster_is_se():
    torch.manual_seed(2)
    se = randomize_(plugattn.create("se", C), seed=1).eval()
    cse = ClusterSE(C, num_clusters=1).eval()
    cse.excite.load_state_dict(se.state_dict())
    x = _x(2, C, 6, 5, seed=10)
    with torch.no_grad():
        torch.testing.assert_close(cse(x), se(x), atol=1e-6, rtol=1e-6)


def test_cluster_se_separates_what_se_cannot():
    """Two inputs with the same per-channel mean (so SE gives the same weights) but different spatial
    structure: the soft-cluster squeeze tells them apart."""
    torch.manual_seed(3)
    x_a = torch.zeros(1, C, 4, 4)
    x_a[:, :, :2] = 1.0  # half the positions at 1, half at 0 in every channel ...
    x_b = torch.full((1, C, 4, 4), 0.5)  # ... versus all at 0.5: equal means
    x_b[:, :C // 2] = x_a[:, :C // 2]
    se = randomize_(plugattn.create("se", C), seed=2).eval()
    cse = randomize_(ClusterSE(C, num_clusters=4), seed=2).eval()
    with torch.no_grad():
        se_w = [se.gate(se.fc2(se.act(se.fc1(x.mean((2, 3), keepdim=True))))) for x in (x_a, x_b)]
        assert torch.equal(se_w[0], se_w[1])
        assert (cse.weights(x_a) - cse.weights(x_b)).abs().max() > 1e-3


@pytest.mark.slow
def test_cluster_se_learns_what_se_cannot():
    """A two-class task whose classes have equal channel means (half the positions bright vs all at the
    mean): after a short training, SE stays at chance and the soft-cluster squeeze separates them."""
    c = 16

    def batch(n, g):
        y = torch.randint(0, 2, (n,), generator=g)
        x = 0.2 * torch.rand(n, c, 8, 8, generator=g)
        bright = (torch.rand(n, 1, 8, 8, generator=g) < 0.5).float()
        return torch.where(y.view(n, 1, 1, 1) == 1, x + bright, x + 0.5), y

    def accuracy(name):
        torch.manual_seed(1)
        g = torch.Generator().manual_seed(0)
        attn, head = plugattn.create(name, c, rd_channels=4), nn.Linear(c, 2)
        opt = torch.optim.Adam([*attn.parameters(), *head.parameters()], lr=1e-2)
        for _ in range(60):
            x, y = batch(32, g)
            loss = F.cross_entropy(head(attn(x).mean((2, 3))), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            x, y = batch(1000, g)
            return (head(attn.eval()(x).mean((2, 3))).argmax(1) == y).float().mean().item()

    assert accuracy("se") < 0.6
    assert accuracy("cluster_se") > 0.9


# --- excite parts ------------------------------------------------------------------------------------------------


def test_mlp_channel_conv_and_multiscale():
    torch.manual_seed(4)
    d = rand(3, 10, 1, 1, seed=11, dtype=torch.float64)
    mlp = randomize_(MLP(10, 10, rd_channels=3, norm_layer="batchnorm"), seed=1).double().eval()
    bn = mlp.norm
    h = F.batch_norm(F.linear(d.flatten(1), mlp.fc1.weight[:, :, 0, 0], mlp.fc1.bias), bn.running_mean,
                     bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    torch.testing.assert_close(mlp(d).flatten(1), F.linear(F.relu(h), mlp.fc2.weight[:, :, 0, 0], mlp.fc2.bias))

    cc = randomize_(ChannelConv(10, kernel_size=3), seed=2).double()
    k = cc.conv.weight.view(3)
    s = F.pad(d.flatten(1), (1, 1))  # zero padding at both channel ends
    torch.testing.assert_close(cc(d).flatten(1), k[0] * s[:, :-2] + k[1] * s[:, 1:-1] + k[2] * s[:, 2:])
    assert ChannelConv(256).kernel_size == 5  # ECA's adaptive ψ(C)
    dmap = rand(2, 10, 3, 2, seed=12, dtype=torch.float64)  # at every position of a map, too
    torch.testing.assert_close(cc(dmap)[:, :, 1, 0], cc(dmap[:, :, 1:2, 0:1]).flatten(1))

    branches = [randomize_(ChannelConv(10, kernel_size=k), seed=k).double() for k in (3, 5)]
    summed = MultiScale(branches, fuse="sum")
    one = ChannelConv(10, kernel_size=5).double()
    with torch.no_grad():  # the sum of linear branches is one conv with the summed, centred kernels
        one.conv.weight.copy_(branches[1].conv.weight + F.pad(branches[0].conv.weight, (1, 1)))
    torch.testing.assert_close(summed(d), one(d))
    mx = MultiScale(branches, fuse="max")
    torch.testing.assert_close(mx(d), torch.maximum(branches[0](d), branches[1](d)))
    torch.testing.assert_close(MultiScale(branches, fuse="mean")(d), (branches[0](d) + branches[1](d)) / 2)
    with pytest.raises(ValueError, match="ChannelConv.*odd"):
        ChannelConv(10, kernel_size=4)
    with pytest.raises(ValueError, match="MultiScale.*fuse"):
        MultiScale(branches, fuse="prod")


def test_channel_self_attention_formula():
    torch.manual_seed(5)
    m = randomize_(ChannelSelfAttention(6, embed_dim=4), seed=3).double()
    d = rand(2, 6, 1, 1, seed=13, dtype=torch.float64)
    e = d.view(2, 6, 1) * m.value_embed + m.channel_embed  # (N, C, e)
    wq, wk, wv = m.qkv.weight.split(4, 0)
    q, k, v = e @ wq.T, e @ wk.T, e @ wv.T
    a = torch.softmax(q @ k.transpose(1, 2) / 2.0, -1)
    want = (a @ v) @ m.proj.weight.T + m.proj.bias
    torch.testing.assert_close(m(d), want.view(2, 6, 1, 1))
    d.requires_grad_()
    assert torch.autograd.gradcheck(m, (d,))


def test_spatial_conv_axial_mlp_and_cfc():
    torch.manual_seed(6)
    sc = randomize_(SpatialConv(2, 1, kernel_size=5), seed=4).double().eval()
    d = rand(2, 2, 6, 7, seed=14, dtype=torch.float64)
    bn = sc.bn
    want = F.batch_norm(F.conv2d(d, sc.conv.weight, None, 1, 2), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                        False, 0.0, bn.eps)
    torch.testing.assert_close(sc(d), want)
    assert sc.bn.momentum == 0.01

    ax = randomize_(AxialMLP(16, rd_ratio=1 / 32), seed=5).double().eval()
    assert ax.fc1.out_channels == 8  # max(8, C // 32)
    x = rand(2, 16, 5, 3, seed=15, dtype=torch.float64)
    dh, dw = x.mean(3, keepdim=True), x.mean(2, keepdim=True)
    lh, lw = ax((dh, dw))
    assert lh.shape == (2, 16, 5, 1) and lw.shape == (2, 16, 1, 3)

    def branch(t, fc):  # the shared conv-BN-h-swish on one part (identical per position in eval)
        nb = ax.norm
        y = F.batch_norm(F.conv2d(t, ax.fc1.weight, ax.fc1.bias), nb.running_mean, nb.running_var, nb.weight, nb.bias,
                         False, 0.0, nb.eps)
        return F.conv2d(y * F.relu6(y + 3) / 6, fc.weight, fc.bias)

    torch.testing.assert_close(lh, branch(dh, ax.fc_h))
    torch.testing.assert_close(lw, branch(dw, ax.fc_w))
    with pytest.raises(TypeError, match="AxialMLP"):
        ax(dh)

    cfc = randomize_(ChannelwiseFC(4, num_stats=3, norm_layer=None), seed=6).double()
    t = rand(2, 12, 1, 1, seed=16, dtype=torch.float64)
    stats = t.view(2, 3, 4)  # stat-major
    torch.testing.assert_close(cfc(t).flatten(1), (stats * cfc.cfc.T).sum(1))


# --- gates and reweights -----------------------------------------------------------------------------------------


def test_gates():
    t = rand(2, 3, 4, 5, seed=17, dtype=torch.float64) * 3
    torch.testing.assert_close(make_gate("sigmoid")(t), 1 / (1 + (-t).exp()))
    torch.testing.assert_close(make_gate("hard_sigmoid")(t), (t + 3).clamp(0, 6) / 6)
    torch.testing.assert_close(make_gate("softmax")(t), t.exp() / t.exp().sum(1, keepdim=True))
    torch.testing.assert_close(make_gate("softmax_hw")(t), t.exp() / t.exp().sum((2, 3), keepdim=True))
    torch.testing.assert_close(make_gate("tanh")(t), torch.tanh(t))
    assert torch.equal(make_gate("identity")(t), t)
    assert torch.equal(make_gate(None)(t), t)
    torch.testing.assert_close(make_gate(SpatialSoftmax)(t), t.exp() / t.exp().sum((2, 3), keepdim=True))
    g = Gate("sigmoid")
    assert make_gate(g) is g
    with pytest.raises(TypeError, match="Gate"):
        make_gate(nn.Sigmoid())
    with pytest.raises(ValueError, match="gate_layer"):
        make_gate("nonexistent")


def test_reweights():
    x = _x(2, 4, 3, 5, seed=18, dtype=torch.float64)
    wc, ws = torch.rand(2, 4, 1, 1, dtype=torch.float64), torch.rand(2, 1, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(Multiply()(x, (wc, ws)), x * wc * ws)
    torch.testing.assert_close(Add()(x, wc), x + wc)
    r = Residual().double()
    assert torch.equal(r(x, wc), x) and r.gamma.requires_grad  # DANet: γ = 0 at the start
    torch.testing.assert_close(Residual(gamma_init=1.0, learnable=False).double()(x, wc), x * (1 + wc))
    assert not list(Residual(learnable=False).parameters())


def test_sequence_and_parallel():
    torch.manual_seed(7)
    ch = randomize_(compose(8, "avg", "mlp", excite_kw={"rd_channels": 2}), seed=1).double().eval()
    sp = randomize_(compose(8, "max+avg", "conv2d", axes="c"), seed=2).double().eval()
    x = _x(2, 8, 5, 4, seed=19, dtype=torch.float64)
    torch.testing.assert_close(Sequence(ch, sp, channels=8)(x), sp(ch(x)))
    torch.testing.assert_close(Parallel(ch, sp)(x), ch(x) + sp(x))
    torch.testing.assert_close(Parallel(ch, sp, combine="max")(x), torch.maximum(ch(x), sp(x)))
    torch.testing.assert_close(Parallel(ch, sp, combine="mean")(x), (ch(x) + sp(x)) / 2)
    bam_paper = Parallel(ch, sp, combine="logits_sum", reweight=Residual(gamma_init=1.0, learnable=False))
    want = x * (1 + torch.sigmoid(ch.logits(x) + sp.logits(x)))  # BAM's paper: x·(1 + σ(M_c + M_s))
    torch.testing.assert_close(bam_paper.double()(x), want)
    bam_code = Parallel(ch, sp, combine="logits_prod", reweight=Residual(gamma_init=1.0, learnable=False))
    torch.testing.assert_close(bam_code.double()(x), x * (1 + torch.sigmoid(ch.logits(x) * sp.logits(x))))
    with pytest.raises(ValueError, match="Sequence.*channels"):
        Sequence(ch, sp, channels=8)(_x(2, 9, 5, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="logits"):
        Parallel(ch, nn.Identity(), combine="logits_sum")
    with pytest.raises(ValueError, match="combine"):
        Parallel(ch, sp, combine="concat")


# --- compose and its contract --------------------------------------------------------------------------------------

COMPOSE_CASES = [
    dict(squeeze="avg", excite="mlp"),
    dict(squeeze="avg+max", excite="mlp"),
    dict(squeeze="avg+max", excite="mlp", merge="concat"),
    dict(squeeze="avg+std", excite="cfc", merge="concat"),
    dict(squeeze="std", excite="conv1d"),
    dict(squeeze="gem", excite="conv1d", gate="hard_sigmoid"),
    dict(squeeze="dct", excite="mlp"),
    dict(squeeze="conv", excite="mlp"),
    dict(squeeze="attn", excite="mlp", gate="identity", reweight="add"),
    dict(squeeze="cluster", excite="mlp"),
    dict(squeeze="cluster", excite="conv1d", merge="mean"),
    dict(squeeze="avg", excite="attention"),
    dict(squeeze="avg", excite="multiscale", excite_kw={"fuse": "max"}),
    dict(squeeze="max+avg", axes="c", excite="conv2d"),
    dict(squeeze="max+avg", axes="c", excite="multiscale"),
    dict(squeeze="linear", excite="identity"),
    dict(squeeze="avg", axes="c", excite="conv2d", gate="softmax_hw", reweight="residual"),
    dict(squeeze="avg", axes="h+w", excite="axial"),
    dict(squeeze="avg", axes="h+w", excite="conv1d"),
    dict(squeeze="avg", axes="h", excite="mlp", gate="tanh", reweight="residual", reweight_kw={"gamma_init": 1.0}),
    dict(squeeze="lse", axes="w", excite="conv1d"),
]


@pytest.mark.parametrize("cfg", COMPOSE_CASES, ids=[str(i) for i in range(len(COMPOSE_CASES))])
def test_compose_contract(cfg):
    torch.manual_seed(0)
    m = randomize_(compose(C, **cfg), seed=1).eval()
    assert isinstance(m, ComposedAttention) and isinstance(m.gate, Gate)
    for i, (n, h, w) in enumerate(SHAPES):
        x = _x(n, C, h, w, seed=20 + i)
        x0 = x.clone()
        with torch.no_grad():
            y, y_cl = m(x), m(x.to(memory_format=torch.channels_last))
        assert torch.equal(x, x0) and y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
        torch.testing.assert_close(y_cl, y, atol=1e-5, rtol=1e-5)
        if h * w > 1:
            assert y_cl.is_contiguous(memory_format=torch.channels_last)
    x = _x(2, C, 5, 4, seed=30)
    with torch.no_grad():
        ref = copy.deepcopy(m).double()(x.double())
        out = copy.deepcopy(m).to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and (out.double() - ref).abs().max() <= 0.05 * (1 + ref.abs().max())
    m.train()
    xg = _x(4, C, 5, 4, seed=31).requires_grad_()
    (m(xg) * rand(4, C, 5, 4, seed=32)).sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    with pytest.raises(ValueError, match="ComposedAttention"):
        m(_x(2, C + 1, 5, 4))
    with pytest.raises(TypeError, match="ComposedAttention"):
        m(torch.ones(2, C, 5, 4, dtype=torch.int64))


def test_compose_with_part_instances_and_errors():
    sq = Pool(C, stats="avg+max", merge="concat")
    m = compose(C, squeeze=sq, excite=MLP(2 * C, C), gate=Gate("hard_sigmoid"), reweight=Multiply())
    assert m.squeeze is sq and m(_x()).shape == (2, C, 7, 5)
    with pytest.raises(ValueError, match="compose: excite"):
        compose(C, excite="transformer")
    with pytest.raises(ValueError, match="concatenated"):
        compose(C, squeeze="avg+max", merge="concat", excite="conv1d")
    with pytest.raises(ValueError, match="axial"):
        compose(C, excite="axial")
    with pytest.raises(ValueError, match="compose: reweight"):
        compose(C, reweight="divide")
    with pytest.raises(ValueError, match="instance"):
        compose(C, squeeze=sq, axes="c")
    with pytest.raises(ValueError, match="channels"):
        compose(0)
    with pytest.raises(TypeError, match="Gate"):
        ComposedAttention(C, sq, MLP(2 * C, C), nn.Sigmoid(), Multiply())


def test_compose_export_and_compile():
    torch.manual_seed(1)
    m = randomize_(ClusterSE(C), seed=1).eval()
    x = _x(2, C, 7, 9, seed=33)
    ep = torch.export.export(m, (x,))
    compiled = torch.compile(m, fullgraph=True, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x))
        torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=1e-5)


# --- registered variants and the table -----------------------------------------------------------------------------


def test_registered_variants():
    assert {"cluster_se", "eca_ms"} <= set(plugattn.list_modules())
    assert plugattn.get("cluster_se") is ClusterSE and plugattn.get("eca_ms") is MultiScaleECA
    m = randomize_(MultiScaleECA(C, kernel_sizes=(3, 5)), seed=1).eval()
    x = _x(seed=34)
    s = x.mean((2, 3)).unsqueeze(1)  # (N, 1, C)
    l3 = F.conv1d(s, m.excite.branches[0].conv.weight, padding=1)
    l5 = F.conv1d(s, m.excite.branches[1].conv.weight, padding=2)
    with torch.no_grad():
        torch.testing.assert_close(m(x), x * torch.sigmoid(torch.maximum(l3, l5)).view(2, C, 1, 1))


def test_space_map_covers_every_registered_module():
    table = space_table()
    missing = [n for n in plugattn.list_modules() if n not in SPACE_MAP]
    assert not missing, f"add {missing} to plugattn.space.compose.SPACE_MAP and regenerate docs/space.md"
    assert "not mapped yet" not in table


def test_docs_space_table_is_current():
    doc = (Path(__file__).parents[1] / "docs" / "space.md").read_text()
    assert space_table() in doc, "regenerate the table in docs/space.md with plugattn.space.space_table()"


def test_plugattn_reexports_the_space():
    """STYLE.md 15: ``plugattn`` exports ``compose`` and the four primitive kinds (importing them also
    registers the composed variants, so the contract test covers them)."""
    from plugattn.space import Excite, Reweight, Squeeze

    missing = [n for n in ("compose", "Squeeze", "Excite", "Gate", "Reweight") if n not in plugattn.__all__]
    assert not missing, f"plugattn/__init__.py must re-export {missing} from plugattn.space"
    assert (plugattn.compose, plugattn.Squeeze, plugattn.Excite, plugattn.Gate, plugattn.Reweight) == (
        compose, Squeeze, Excite, Gate, Reweight)
