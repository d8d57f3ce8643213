"""Non-local block against an independent embedded-Gaussian formulation with the whole affinity matrix.

The reference is written from the paper's equation and the two official codes' documented behaviour
(Caffe2 ``spacetime_nonlocal``: logits scaled by C'^-1/2, x max-pooled before φ and g; AlexHex7
``NONLocalBlock2D``: no scale, φ and g max-pooled after their convs), on the official AlexHex7 state_dict
layout where a converter exists, so the key mapping is checked too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import plugattn
from helpers import TOL, LargestTensor, PeakLive, rand, randomize_
from plugattn._layers import Gate
from plugattn.modules.non_local import NonLocal

F64 = torch.float64


def close(a, b, dtype=F64):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def rand_sd(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A random official-layout state_dict (float32 values held in float64); BN running_var positive."""
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


def nl_official_sd(c: int, inter: int, sub_sample: bool, bn_layer: bool, seed: int = 0):
    """AlexHex7 NONLocalBlock2D state_dict layout (g and phi are Sequential(conv, pool) when sub-sampling)."""
    sub = ".0" if sub_sample else ""
    shapes = {f"g{sub}.weight": (inter, c, 1, 1), f"g{sub}.bias": (inter,),
              "theta.weight": (inter, c, 1, 1), "theta.bias": (inter,),
              f"phi{sub}.weight": (inter, c, 1, 1), f"phi{sub}.bias": (inter,)}
    if bn_layer:
        shapes |= {"W.0.weight": (c, inter, 1, 1), "W.0.bias": (c,)}
        shapes |= {f"W.1.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}
        shapes |= {"W.1.num_batches_tracked": ()}
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


def ref_of(m: NonLocal, x):
    """The reference with the module's own weights (Caffe2 scale and pooling, or the module's settings)."""

    def out(y):
        z = F.conv2d(y, m.proj.weight, m.proj.bias)
        if isinstance(m.norm, torch.nn.Identity):
            return z
        return F.batch_norm(z, m.norm.running_mean, m.norm.running_var, m.norm.weight, m.norm.bias, False, 0.0,
                            m.norm.eps)

    pool = None if not m.sub_sample else "after" if m.sub_sample_after_proj else "before"
    return nl_ref(x, m.theta.weight, m.theta.bias, m.phi.weight, m.phi.bias, m.g.weight, m.g.bias, out,
                  scale=1.0 if m.scale is None else m.scale, pool=pool)


@pytest.mark.parametrize("sub_sample", [True, False])
@pytest.mark.parametrize("bn_layer", [True, False])
def test_non_local_matches_alexhex7(sub_sample, bn_layer):
    c, inter = 32, 16
    sd = nl_official_sd(c, inter, sub_sample, bn_layer)
    m = plugattn.from_official("non_local", sd, in_channels=c, sub_sample=sub_sample, bn_layer=bn_layer)
    m = m.double().eval()
    sub = ".0" if sub_sample else ""
    if bn_layer:
        def out(y):
            z = F.conv2d(y, sd["W.0.weight"], sd["W.0.bias"])
            return F.batch_norm(z, sd["W.1.running_mean"], sd["W.1.running_var"], sd["W.1.weight"], sd["W.1.bias"],
                                False, 0.0, 1e-5)
    else:
        def out(y):
            return F.conv2d(y, sd["W.weight"], sd["W.bias"])
    for n, h, w in [(2, 8, 8), (2, 7, 5), (1, 13, 17)]:
        x = rand(n, c, h, w, seed=20, dtype=F64)
        want = nl_ref(x, sd["theta.weight"], sd["theta.bias"], sd[f"phi{sub}.weight"], sd[f"phi{sub}.bias"],
                      sd[f"g{sub}.weight"], sd[f"g{sub}.bias"], out, pool="after" if sub_sample else None)
        with torch.no_grad():
            close(m(x), want)
            y = m(x.to(memory_format=torch.channels_last))
        close(y, want)
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("sub_sample", [True, False])
@pytest.mark.parametrize("blocks", [{}, {"query_block": 5}, {"block_budget": 1}], ids=str)
def test_non_local_default_is_caffe2(sub_sample, blocks):
    """Caffe2 spacetime_nonlocal: logits scaled by C'^-1/2, x max-pooled before φ and g, BN after W_z."""
    m = randomize_(NonLocal(32, sub_sample=sub_sample, **blocks)).double().eval()
    assert m.rd_channels == 16 and m.scale == 16**-0.5

    def out(y):
        return m.norm(F.conv2d(y, m.proj.weight, m.proj.bias))

    for n, h, w in [(2, 8, 6), (1, 9, 7), (2, 2, 3)] + ([] if sub_sample else [(2, 1, 1), (1, 1, 6)]):
        x = rand(n, 32, h, w, seed=21, dtype=F64)
        want = nl_ref(x, m.theta.weight, m.theta.bias, m.phi.weight, m.phi.bias, m.g.weight, m.g.bias, out,
                      scale=16**-0.5, pool="before" if sub_sample else None)
        with torch.no_grad():
            close(m(x), want)
            close(m(x.to(memory_format=torch.channels_last)), want)


@pytest.mark.parametrize("kw", [{}, {"sub_sample": True}, {"sub_sample": True, "sub_sample_after_proj": True},
                                {"norm_layer": None, "use_scale": False}], ids=str)
@pytest.mark.parametrize("grad_checkpoint", [False, True])
def test_non_local_gradients_match_reference(kw, grad_checkpoint):
    m = randomize_(NonLocal(16, query_block=7, grad_checkpoint=grad_checkpoint, **kw), seed=2).double().eval()
    x = rand(2, 16, 9, 11, seed=23, dtype=F64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    seed = rand(2, 16, 9, 11, seed=24, dtype=F64)
    ya, yb = m(xa), ref_of(m, xb)
    close(ya, yb)
    params = list(m.parameters())
    ga = torch.autograd.grad((ya * seed).sum(), [xa, *params])
    gb = torch.autograd.grad((yb * seed).sum(), [xb, *params])
    for a, b in zip(ga, gb):
        close(a, b)


def test_non_local_blocks_follow_the_budget():
    m = randomize_(NonLocal(16, query_block=7)).eval()
    seen = []
    m.gate.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    with torch.no_grad():
        m(rand(2, 16, 4, 5, seed=25))
    assert seen == [(2, 7, 20), (2, 7, 20), (2, 6, 20)]
    seen.clear()
    m.query_block, m.block_budget = None, 2 * 20 * 4 * 8  # 8 float32 rows
    with torch.no_grad():
        m(rand(2, 16, 4, 5, seed=25))
    assert seen == [(2, 8, 20), (2, 8, 20), (2, 4, 20)]


def test_non_local_init_is_identity_and_caffe2():
    m = NonLocal(64)
    x = rand(2, 64, 7, 5, seed=22)
    assert torch.equal(m(x), x)
    assert all(float(p.detach().abs().sum()) == 0 for p in m.norm.parameters())
    assert abs(m.theta.weight.std().item() - 0.01) < 2e-3 and float(m.theta.bias.detach().abs().sum()) == 0
    m = NonLocal(64, norm_layer=None)
    assert float(m.proj.weight.detach().abs().sum()) == 0 and torch.equal(m(x), x)
    with pytest.raises(ValueError, match="NonLocal.*sub_sample"):
        NonLocal(16, sub_sample=True)(rand(1, 16, 1, 5))


def test_non_local_widths_and_errors():
    assert NonLocal(1).rd_channels == 1 and NonLocal(33).rd_channels == 16
    assert NonLocal(32, rd_ratio=1 / 4).rd_channels == 8 and NonLocal(32, rd_channels=5).rd_channels == 5
    for kw, arg in [({"rd_ratio": 0}, "rd_ratio"), ({"rd_channels": 0}, "rd_channels"),
                    ({"query_block": 0}, "query_block"), ({"block_budget": 0}, "block_budget")]:
        with pytest.raises(ValueError, match=f"NonLocal.*{arg}"):
            NonLocal(16, **kw)


def test_non_local_never_materialises_the_full_matrix():
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


def test_non_local_memory_20x_below_the_explicit_matrix_at_128():
    """At 128×128, C = 512, batch 2 (meta device: shapes only), the forward pass holds at most 1/20 of the
    memory of the one-block form (the explicit (H·W)² softmax), counted as peak live tensor storage."""
    x = torch.empty(2, 512, 128, 128, device="meta")
    peaks = []
    for budget in (None, NonLocal(8).block_budget):
        m = NonLocal(512, block_budget=budget, device="meta").eval()
        with torch.no_grad(), PeakLive() as probe, LargestTensor() as largest:
            assert m(x).shape == x.shape
        peaks.append((probe.peak, largest.largest))
    (explicit, explicit_largest), (ours, ours_largest) = peaks
    assert explicit_largest == 2 * (128 * 128) ** 2 * 4
    assert 20 * ours <= explicit and 20 * ours_largest <= explicit_largest


@pytest.mark.parametrize("sub_sample", [False, True])
def test_non_local_attention_rows(sub_sample):
    m = randomize_(NonLocal(16, sub_sample=sub_sample), seed=6, scale=0.3).double().eval()
    x = rand(2, 16, 8, 6, seed=7, dtype=F64)
    index = [0, 15, 47]
    theta = F.conv2d(x, m.theta.weight, m.theta.bias).flatten(2)[:, :, index]  # (N, C', I)
    phi = F.conv2d(F.max_pool2d(x, 2) if sub_sample else x, m.phi.weight, m.phi.bias).flatten(2)
    want = torch.softmax(torch.einsum("nci,ncj->nij", theta, phi) * m.scale, dim=-1)
    with torch.no_grad():
        close(m.attention_rows(x, index), want)


def test_non_local_compile_and_export_match_eager():
    from torch.export import Dim

    m = randomize_(NonLocal(16, query_block=5), seed=8).eval()
    x = rand(2, 16, 7, 9, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(m, fullgraph=True)(x), m(x), atol=1e-5, rtol=1e-5)
    ep = torch.export.export(m, (x,), dynamic_shapes={"x": {2: Dim("h", max=64), 3: Dim("w", max=64)}})
    for hw in [(7, 9), (11, 4), (13, 17)]:
        xi = rand(2, 16, *hw, seed=10)
        with torch.no_grad():
            torch.testing.assert_close(ep.module()(xi), m(xi), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# ordinary nn.Module: fx, hooks, repr

CONFIGS = [{}, {"query_block": 6}, {"sub_sample": True}, {"sub_sample": True, "sub_sample_after_proj": True},
           {"norm_layer": None}]


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_fx_symbolic_trace_equals_eager(kw):
    m = randomize_(NonLocal(32, **kw), seed=3).double().eval()
    gm = torch.fx.symbolic_trace(m)
    for hw in [(7, 5), (8, 9)] + ([] if kw.get("sub_sample") else [(1, 1)]):
        x = rand(2, 32, *hw, seed=40, dtype=F64)
        with torch.no_grad():
            close(gm(x), m(x))


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_every_parameter_owning_leaf_is_called(kw):
    m = randomize_(NonLocal(32, **kw), seed=4).eval()
    leaves = {n for n, sub in m.named_modules() if not list(sub.children()) and list(sub.parameters(False))}
    assert {"theta", "phi", "g", "proj"} <= leaves
    fired = set()
    for n, sub in m.named_modules():
        if n in leaves or isinstance(sub, Gate):
            sub.register_forward_hook(lambda mod, i, o, n=n: fired.add(n))
    with torch.no_grad():
        m(rand(2, 32, 7, 5, seed=41))
    assert fired == leaves | {"gate"}


def test_extra_repr():
    assert "channels=64, rd_channels=32, use_scale=True, block_budget=8388608" in repr(NonLocal(64))
    r = repr(NonLocal(64, sub_sample=True, query_block=3, use_scale=False, grad_checkpoint=True))
    assert "use_scale=False, sub_sample=True, sub_sample_after_proj=False" in r
    assert "query_block=3, grad_checkpoint=True" in r
