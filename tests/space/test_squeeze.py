"""Squeezes of the design space (plugattn/space/squeeze.py) against independent formulas."""

from __future__ import annotations

import pytest
import scipy.fft
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from helpers import rand, randomize_
from plugattn._layers import Gate, freq_indices
from plugattn.space import AttentionPool, ClusterPool, ConvPool, DCTPool, GeMPool, LinearPool, Pool

DIMS = {"hw": (2, 3), "h": (2,), "w": (3,), "c": (1,)}


def _x(n=2, c=6, h=5, w=4, seed=0, dtype=torch.float64):
    return rand(n, c, h, w, seed=seed, dtype=dtype) + rand(n, c, 1, 1, seed=seed + 100, dtype=dtype)


def ref_stat(x: torch.Tensor, stat: str, dims) -> torch.Tensor:
    """One statistic over ``dims`` (kept) by sums and loops; std is unbiased, 0 for one element."""
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


def ref_cluster(x: torch.Tensor, centres: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft means of the positions per centre: (N, C, H, W), (k, C) → (N, C, k)."""
    n, c, h, w = x.shape
    pos = x.flatten(2).transpose(1, 2)  # (N, P, C)
    a = torch.softmax(torch.einsum("npc,kc->npk", pos, centres) / c ** 0.5, dim=-1)  # (N, P, k)
    return torch.einsum("npk,npc->nck", a, pos) / a.sum(1).clamp_min(eps)[:, None, :]  # (N, C, k)


# --- Pool ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axes", ["hw", "h", "w", "c"])
@pytest.mark.parametrize("stat", ["avg", "max", "std", "lp", "lse"])
def test_pool_statistics(axes, stat):
    for i, (h, w) in enumerate([(5, 4), (1, 1), (3, 1), (7, 9)]):
        x = _x(2, 6, h, w, seed=i)
        m = Pool(6, stats=stat, axes=axes)
        torch.testing.assert_close(m(x), ref_stat(x, stat, DIMS[axes]))
        torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), ref_stat(x, stat, DIMS[axes]))


def test_pool_std_of_one_element_is_zero_with_finite_gradient():
    x = _x(3, 6, 1, 1, seed=1).requires_grad_()
    d = Pool(6, stats="std")(x)
    assert torch.equal(d, torch.zeros_like(d))
    d.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    xc = torch.ones(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)  # constant channels: var 0
    Pool(6, stats="std")(xc).sum().backward()
    assert torch.isfinite(xc.grad).all()
    xg = _x(2, 6, 3, 4, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(Pool(6, stats="avg+std", merge="concat"), (xg,))


def test_pool_merges_and_axial():
    x = _x(2, 6, 5, 4, seed=2)
    avg, mx = ref_stat(x, "avg", (2, 3)), ref_stat(x, "max", (2, 3))
    cat = Pool(6, stats="avg+max", merge="concat")
    assert cat.out_channels == 12 and not cat.shared
    torch.testing.assert_close(cat(x), torch.cat((avg, mx), 1))
    shared = Pool(6, stats=("avg", "max"))
    assert shared.shared and shared.out_channels == 6
    a, b = shared(x)
    torch.testing.assert_close(a, avg)
    torch.testing.assert_close(b, mx)
    torch.testing.assert_close(Pool(6, stats="avg+max", merge="mean")(x), (avg + mx) / 2)
    sp = Pool(6, stats="max+avg", axes="c")  # CBAM's [max; mean] over C, concatenated by default
    assert sp.out_channels == 2
    torch.testing.assert_close(sp(x), torch.cat((ref_stat(x, "max", (1,)), ref_stat(x, "avg", (1,))), 1))
    dh, dw = Pool(6, axes="h+w")(x)
    torch.testing.assert_close(dh, ref_stat(x, "avg", (3,)))
    torch.testing.assert_close(dw, ref_stat(x, "avg", (2,)))
    with pytest.raises(ValueError, match="Pool.*axes"):
        Pool(6, axes="hwc")
    with pytest.raises(ValueError, match="Pool.*statistic"):
        Pool(6, stats="avg+median")
    with pytest.raises(ValueError, match="h\\+w"):
        Pool(6, stats="avg+max", axes="h+w")
    with pytest.raises(ValueError, match="merge"):
        Pool(6, stats="avg+max", merge="stack")


# --- learned and fixed-filter squeezes --------------------------------------------------------------------------------


def test_gem_pool():
    x = _x(2, 6, 5, 4, seed=3)
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
    m = DCTPool(16, freq_sel_method="top16", dtype=torch.float64)
    coeff = torch.from_numpy(scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(2, 3)))
    us, vs = freq_indices("top16")
    want = torch.stack([coeff[:, i, u, v] for i, (u, v) in enumerate(zip(us, vs))], 1)  # one channel per frequency
    torch.testing.assert_close(m(x).flatten(1), want)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)).flatten(1), want)
    # other sizes: the input is average-pooled to the 7×7 grid first
    x2 = rand(2, 16, 14, 21, seed=5, dtype=torch.float64)
    pooled = x2.view(2, 16, 7, 2, 7, 3).mean((3, 5))
    coeff2 = torch.from_numpy(scipy.fft.dctn(pooled.numpy(), type=2, norm="ortho", axes=(2, 3)))
    want2 = torch.stack([coeff2[:, i, u, v] for i, (u, v) in enumerate(zip(us, vs))], 1)
    torch.testing.assert_close(m(x2).flatten(1), want2)
    assert DCTPool(16)(rand(2, 16, 3, 11, seed=5)).shape == (2, 16, 1, 1)
    with pytest.raises(ValueError, match="DCTPool.*divisible"):
        DCTPool(12)


def test_attention_pool_is_softmax_weighted_mean():
    m = randomize_(AttentionPool(8), seed=1).double()
    for i, (h, w) in enumerate([(5, 3), (1, 1), (4, 9)]):
        x = _x(2, 8, h, w, seed=5 + i)
        logits = (x * m.conv_attn.weight.view(1, 8, 1, 1)).sum(1) + m.conv_attn.bias  # (N, H, W)
        a = torch.softmax(logits.flatten(1), 1)  # (N, HW)
        want = torch.einsum("ncp,np->nc", x.flatten(2), a)
        torch.testing.assert_close(m(x).flatten(1), want)
        torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)).flatten(1), want)
    assert isinstance(m.attn_gate, Gate)


def test_linear_and_conv_pool():
    lp = randomize_(LinearPool(8, out_channels=2), seed=2).double()
    x = _x(2, 8, 5, 3, seed=6)
    want = torch.einsum("nchw,oc->nohw", x, lp.proj.weight[:, :, 0, 0]) + lp.proj.bias.view(1, 2, 1, 1)
    torch.testing.assert_close(lp(x), want)
    torch.testing.assert_close(lp(x.to(memory_format=torch.channels_last)), want)
    cp = randomize_(ConvPool(8), seed=3).double().eval()
    conv, bn = cp.convs[0].conv, cp.convs[0].bn
    want = F.batch_norm(F.conv2d(x, conv.weight, None, 2, 1, 1, 8), bn.running_mean, bn.running_var, bn.weight,
                        bn.bias, False, 0.0, bn.eps).mean((2, 3), keepdim=True)
    torch.testing.assert_close(cp(x), want)
    assert ConvPool(8, num_layers=2)(rand(2, 8, 1, 1, seed=1)).shape == (2, 8, 1, 1)


# --- the soft-cluster squeeze --------------------------------------------------------------------------------------


def test_cluster_pool_formula_and_properties():
    torch.manual_seed(0)
    m = ClusterPool(8, num_clusters=3, merge="concat").double()
    x = _x(2, 8, 5, 4, seed=7)
    d = m(x)
    assert d.shape == (2, 24, 1, 1) and torch.isfinite(d).all()
    want = ref_cluster(x, m.centres).transpose(1, 2).reshape(2, 24, 1, 1)  # cluster-major
    torch.testing.assert_close(d, want)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), want)
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
    x = _x(2, 8, 3, 4, seed=8).requires_grad_()
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


# --- every squeeze: an ordinary module ------------------------------------------------------------------------------

SQUEEZES = {
    "pool": lambda: Pool(8, stats="avg+max"),
    "pool_std_concat": lambda: Pool(8, stats="avg+std", merge="concat"),
    "pool_hw": lambda: Pool(8, stats="avg", axes="h+w"),
    "pool_c": lambda: Pool(8, stats="max+avg", axes="c"),
    "gem": lambda: GeMPool(8),
    "dct": lambda: DCTPool(8, freq_sel_method="top8"),
    "conv": lambda: ConvPool(8, num_layers=2),
    "linear": lambda: LinearPool(8, out_channels=2),
    "attn": lambda: AttentionPool(8),
    "cluster": lambda: ClusterPool(8, num_clusters=3),
}


def _flat(y):
    return torch.cat([t.flatten() for t in y]) if isinstance(y, (tuple, list)) else y.flatten()


@pytest.mark.parametrize("name", list(SQUEEZES))
def test_squeeze_fx_hooks_and_repr(name):
    m = randomize_(SQUEEZES[name](), seed=3).eval()
    gm = torch.fx.symbolic_trace(m)
    for i, (h, w) in enumerate([(7, 5), (1, 1), (14, 9)]):
        x = _x(2, 8, h, w, seed=40 + i, dtype=torch.float32).abs()
        torch.testing.assert_close(_flat(gm(x)), _flat(m(x)))
    owners = [mod for mod in m.modules() if any(True for _ in mod.parameters(recurse=False))]
    fired = set()
    for mod in owners:
        mod.register_forward_hook(lambda mod, args, out: fired.add(id(mod)))
    m(_x(2, 8, 5, 4, dtype=torch.float32))
    assert fired == {id(mod) for mod in owners}
    assert "channels=8" in repr(m)


def test_squeeze_reprs_name_the_hyper_parameters():
    assert "stats=('avg', 'max'), axes='hw', merge='shared'" in repr(Pool(8, stats="avg+max"))
    assert "num_clusters=3, merge='shared'" in repr(ClusterPool(8, num_clusters=3))
    assert "dct_h=7, dct_w=7, freq_sel_method='top8'" in repr(DCTPool(8, freq_sel_method="top8"))
    assert isinstance(LinearPool(8).proj, nn.Conv2d)
