"""Numerics of Selective Kernel (``plugattn.modules.sk``) against independent formulations.

- A plain functional SK unit (paper / Caffe layout, SPEC.md §2a) reading the module's weights: outputs and input
  gradients, eval and train mode, odd and 1×1 sizes, channels_last input.
- Re-derivations of pppLang's and ResearchingDexter's ``SKConv`` (SPEC.md §2b, §2c) on their official
  state_dicts, through ``from_official``.
- timm's ``SelectiveKernel`` itself (skipped without timm).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import TOL, assert_matches_reference, param_leaves, rand, random_state_dict, randomize_
from plugattn.modules.sk import SelectiveKernel

F64 = torch.float64


def assert_close(a, b, dtype=torch.float32):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


# ---- the plain formulation, on the module's weights --------------------------------------------------------------


def batch_norm(t, bn, training):
    """BatchNorm from the running statistics (eval) or the batch (train, statistics not updated)."""
    return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, training, 0.0, bn.eps)


def sk_reference(m: SelectiveKernel, x: torch.Tensor, training: bool = False) -> torch.Tensor:
    """Split, fuse, select with F.conv2d / F.batch_norm / softmax; BN + ReLU branches and attention (defaults)."""
    b = x.shape[0]
    inputs = x.chunk(m.num_paths, dim=1) if m.split_input else [x] * m.num_paths
    feats = []
    for path, xi in zip(m.paths, inputs):
        conv = path.conv
        y = F.conv2d(xi, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        feats.append(F.relu(batch_norm(y, path.bn, training)))  # U_m
    u = feats[0]
    for f in feats[1:]:
        u = u + f
    s = F.adaptive_avg_pool2d(u, 1).flatten(1)  # (N, C_out)
    w_r = m.fc_reduce.weight.flatten(1)
    z = F.relu(batch_norm(F.linear(s, w_r, m.fc_reduce.bias)[:, :, None, None], m.norm, training))
    logits = F.linear(z.flatten(1), m.fc_select.weight.flatten(1), m.fc_select.bias)  # (N, M·C_out)
    a = torch.softmax(logits.view(b, m.num_paths, -1), dim=1)  # over the branches
    return sum(f * a[:, i, :, None, None] for i, f in enumerate(feats))


SK_CASES = [  # (kwargs, (n, h, w))
    ({"channels": 64}, (2, 7, 5)),
    ({"channels": 32, "out_channels": 48, "groups": 8, "stride": 2}, (3, 9, 6)),
    ({"channels": 48, "kernel_size": (3, 5, 7), "groups": 4, "split_input": True}, (2, 6, 7)),
    ({"channels": 32, "keep_3x3": False, "groups": 1, "bias": True, "attn_bias": True}, (2, 5, 5)),
    ({"channels": 32, "rd_channels": 8}, (4, 1, 1)),
    ({"channels": 16, "rd_ratio": 0.5, "rd_divisor": 8, "min_channels": 1}, (2, 13, 17)),
]


@pytest.mark.parametrize("cfg", SK_CASES, ids=lambda c: str(c[0]))
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_sk_matches_plain_formulation_with_gradients(cfg, training):
    kwargs, (n, h, w) = cfg
    torch.manual_seed(0)
    m = randomize_(SelectiveKernel(**kwargs), seed=1).to(F64).train(training)
    c = kwargs["channels"]

    def make_x(shape, seed):  # random x plus a random per-channel offset
        return rand(*shape, seed=seed, dtype=F64) + rand(n, c, 1, 1, seed=3, dtype=F64)

    assert_matches_reference(m, lambda x: sk_reference(m, x, training), [(n, h, w)], c,
                             seeds=lambda i, s: (2, 4), make_x=make_x)


# ---- official state_dicts: pppLang and ResearchingDexter ---------------------------------------------------------


def bn_shapes(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def bn(sd, prefix, t):
    return F.batch_norm(t, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                        sd[f"{prefix}.bias"], training=False, momentum=0.1, eps=1e-5)


def ppplang_shapes(features, M, G, r, L):
    d = max(int(features / r), L)
    shapes = {}
    for i in range(M):
        k = 3 + 2 * i
        shapes[f"convs.{i}.0.weight"] = (features, features // G, k, k)
        shapes[f"convs.{i}.0.bias"] = (features,)
        shapes.update(bn_shapes(f"convs.{i}.1", features))
    shapes["fc.weight"], shapes["fc.bias"] = (d, features), (d,)
    for i in range(M):
        shapes[f"fcs.{i}.weight"], shapes[f"fcs.{i}.bias"] = (features, d), (features,)
    return shapes


def ppplang_reference(sd, x, M, G, stride):
    """pppLang SKConv as SPEC.md §2b describes it (eval mode)."""
    feas = []
    for i in range(M):
        y = F.conv2d(x, sd[f"convs.{i}.0.weight"], sd[f"convs.{i}.0.bias"], stride, padding=1 + i, groups=G)
        feas.append(F.relu(bn(sd, f"convs.{i}.1", y)))
    feas = torch.stack(feas, dim=1)  # (B, M, C, H', W')
    s = feas.sum(dim=1).mean(-1).mean(-1)  # (B, C)
    z = F.linear(s, sd["fc.weight"], sd["fc.bias"])  # linear, no BN, no ReLU
    v = torch.stack([F.linear(z, sd[f"fcs.{i}.weight"], sd[f"fcs.{i}.bias"]) for i in range(M)], dim=1)
    a = torch.softmax(v, dim=1)  # (B, M, C)
    return (feas * a[..., None, None]).sum(dim=1)


def dexter_shapes(cin, cout, M, r, L):
    d = max(cin // r, L)
    shapes = {}
    for i in range(M):
        shapes[f"conv.{i}.0.weight"] = (cout, cin // 32, 3, 3)
        shapes.update(bn_shapes(f"conv.{i}.1", cout))
    shapes["fc1.0.weight"] = (d, cout, 1, 1)
    shapes.update(bn_shapes("fc1.1", d))
    shapes["fc2.weight"] = (M * cout, d, 1, 1)
    return shapes


def dexter_reference(sd, x, cout, M, stride):
    """ResearchingDexter SKConv (the Caffe layout) as SPEC.md §2a/§2c describe it (eval mode)."""
    outs = []
    for i in range(M):
        y = F.conv2d(x, sd[f"conv.{i}.0.weight"], None, stride, padding=1 + i, dilation=1 + i, groups=32)
        outs.append(F.relu(bn(sd, f"conv.{i}.1", y)))
    u = sum(outs)
    s = F.adaptive_avg_pool2d(u, 1)
    z = F.relu(bn(sd, "fc1.1", F.conv2d(s, sd["fc1.0.weight"])))
    ab = F.conv2d(z, sd["fc2.weight"]).reshape(x.shape[0], M, cout, -1)  # channel m·C + c
    ab = torch.softmax(ab, dim=1)
    return sum(o * ab[:, i].reshape(x.shape[0], cout, 1, 1) for i, o in enumerate(outs))


PPPLANG = [  # features, M, G, r, L, stride, input (n, h, w)
    (64, 2, 8, 2, 32, 1, (3, 8, 8)),
    (32, 3, 4, 16, 8, 2, (2, 9, 7)),
    (48, 1, 48, 4, 32, 1, (1, 5, 6)),
    (16, 4, 1, 2, 4, 2, (2, 13, 17)),
    (24, 2, 6, 3, 2, 3, (1, 1, 1)),
]


@pytest.mark.parametrize("cfg", PPPLANG, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
def test_sk_ppplang_matches_rederivation(cfg, dtype):
    features, M, G, r, L, stride, (n, h, w) = cfg
    sd = random_state_dict(ppplang_shapes(features, M, G, r, L), seed=features + M, dtype=dtype)
    m = plugattn.from_official("sk", sd, features=features, WH=h, M=M, G=G, r=r, stride=stride, L=L)
    m = m.to(dtype).eval()
    x = rand(n, features, h, w, seed=M, dtype=dtype)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (n, features, (h - 1) // stride + 1, (w - 1) // stride + 1)
    assert_close(y, ppplang_reference(sd, x, M, G, stride), dtype)


DEXTER = [  # in, out, stride, M, r, L, input (n, h, w)
    (64, 64, 1, 2, 16, 32, (3, 8, 8)),
    (64, 128, 2, 3, 8, 16, (2, 11, 7)),
    (96, 32, 1, 2, 16, 32, (1, 5, 9)),
    (32, 64, 2, 2, 2, 4, (2, 1, 1)),
]


@pytest.mark.parametrize("cfg", DEXTER, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
def test_sk_dexter_matches_rederivation(cfg, dtype):
    cin, cout, stride, M, r, L, (n, h, w) = cfg
    sd = random_state_dict(dexter_shapes(cin, cout, M, r, L), seed=cin + cout + M, dtype=dtype)
    m = plugattn.from_official("sk_caffe", sd, in_channels=cin, out_channels=cout, stride=stride, M=M, r=r, L=L)
    m = m.to(dtype).eval()
    x = rand(n, cin, h, w, seed=stride, dtype=dtype)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (n, cout, (h - 1) // stride + 1, (w - 1) // stride + 1)
    assert_close(y, dexter_reference(sd, x, cout, M, stride), dtype)


def test_sk_default_is_the_caffe_layout():
    """Registry default: M = 2 dilated 3×3 branches, 32 groups, no bias, BN+ReLU reduction, d = max(C//16, 32)."""
    for c in (64, 128, 1024):
        ours = plugattn.create("sk", c)
        caffe = plugattn.from_official("sk_caffe", None, in_channels=c, out_channels=c)
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in caffe.state_dict().items()}
        assert ours.fc_reduce.out_channels == max(c // 16, 32)
        assert [p.conv.dilation for p in ours.paths] == [(1, 1), (2, 2)]
        assert all(p.conv.groups == 32 and p.conv.kernel_size == (3, 3) and p.conv.bias is None for p in ours.paths)
        sd = random_state_dict(dexter_shapes(c, c, 2, 16, 32), seed=c)
        ours.load_state_dict(plugattn.from_official("sk_caffe", sd, in_channels=c, out_channels=c).state_dict())
        x = rand(2, c, 6, 5, seed=c, dtype=F64)
        sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
        with torch.no_grad():
            assert_close(ours.double().eval()(x), dexter_reference(sd64, x, c, 2, 1), F64)
    assert plugattn.create("sk", 16).paths[0].conv.groups == 16  # capped to the channel count


# ---- timm's SelectiveKernel -----------------------------------------------------------------------------------------

TIMM_SK = [  # (timm kwargs, input (n, h, w))
    ({"in_channels": 64}, (3, 8, 8)),
    ({"in_channels": 32, "out_channels": 64}, (2, 7, 9)),
    ({"in_channels": 64, "stride": 2}, (2, 9, 8)),
    ({"in_channels": 48, "kernel_size": [3, 5, 7]}, (2, 6, 5)),
    ({"in_channels": 32, "kernel_size": 3}, (1, 5, 5)),
    ({"in_channels": 32, "split_input": False}, (2, 5, 7)),
    ({"in_channels": 64, "out_channels": 32, "groups": 8, "stride": 2}, (2, 13, 17)),
    ({"in_channels": 32, "groups": 64, "split_input": False}, (2, 4, 4)),  # groups capped at out_channels
    ({"in_channels": 32, "keep_3x3": False, "kernel_size": [3, 5]}, (2, 6, 6)),
    ({"in_channels": 32, "dilation": 2, "rd_channels": 12}, (2, 9, 9)),
    ({"in_channels": 64, "rd_ratio": 0.25, "rd_divisor": 4, "act_layer": "ReLU6"}, (2, 5, 5)),
]


def _timm_sk(kwargs):
    timm_layers = pytest.importorskip("timm.layers")
    kw = dict(kwargs)
    if kw.get("act_layer") == "ReLU6":
        kw["act_layer"] = nn.ReLU6
    return timm_layers.SelectiveKernel(**kw)


def _timm_to_ours(key: str) -> str:
    return key.replace("attn.bn.", "norm.").replace("attn.", "")


@pytest.mark.parametrize("cfg", TIMM_SK, ids=lambda c: str(c[0]))
def test_sk_matches_timm(cfg):
    kwargs, (n, h, w) = cfg
    torch.manual_seed(0)
    ref = randomize_(_timm_sk(kwargs), seed=1)
    ours = plugattn.from_official("sk_timm", ref.state_dict(), **kwargs)
    x = rand(n, kwargs["in_channels"], h, w, seed=2) + rand(n, kwargs["in_channels"], 1, 1, seed=3)
    with torch.no_grad():
        assert_close(ours.eval()(x), ref.eval()(x))
        assert_close(ours.eval()(x.to(memory_format=torch.channels_last)), ref(x))
    if n > 1:  # train mode: BatchNorm batch statistics, running stats and gradients (float64: sums of many terms)
        ours, ref = ours.double().train(), ref.double().train()
        xa, xb = x.double().requires_grad_(), x.double().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        assert_close(ya, yb, F64)
        g = rand(*ya.shape, seed=4, dtype=F64)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
        assert_close(xa.grad, xb.grad, F64)
        ours_params = dict(ours.named_parameters())
        for k, p in ref.named_parameters():
            assert_close(ours_params[_timm_to_ours(k)].grad, p.grad, F64)
        ours_state = ours.state_dict()
        for k, v in ref.state_dict().items():
            assert_close(ours_state[_timm_to_ours(k)], v, F64)


def test_sk_float64_and_batch1_against_timm():
    ref = randomize_(_timm_sk({"in_channels": 32, "out_channels": 48}), seed=5).double().eval()
    ours = plugattn.from_official("sk_timm", ref.state_dict(), in_channels=32, out_channels=48).double().eval()
    for shape in [(1, 32, 1, 1), (1, 32, 7, 3), (2, 32, 13, 17)]:
        x = rand(*shape, seed=6, dtype=F64)
        with torch.no_grad():
            assert_close(ours(x), ref(x), F64)


# ---- arguments, converters, an ordinary nn.Module ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels": 64, "out_channels": 48, "groups": 32}, "groups=16 would work"),
        ({"channels": 33, "groups": 1, "split_input": True}, "split_input"),
        ({"channels": 32, "kernel_size": 4}, "kernel_size"),
        ({"channels": 32, "kernel_size": (3, 1)}, "kernel_size"),
        ({"channels": 32, "kernel_size": ()}, "kernel_size"),
        ({"channels": 32, "stride": 0}, "stride"),
        ({"channels": 32, "rd_ratio": -1.0}, "rd_ratio"),
        ({"channels": 32, "rd_ratio": 0}, "rd_ratio"),
        ({"channels": 32, "rd_channels": 0}, "rd_channels"),
        ({"channels": 32, "gate_layer": "nope"}, "gate_layer"),
    ],
)
def test_sk_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        SelectiveKernel(**kwargs)
    assert "SelectiveKernel" in str(e.value) or match == "gate_layer"


def test_sk_widths():
    assert SelectiveKernel(64).fc_reduce.out_channels == 32  # max(⌊64/16⌋, L = 32)
    assert SelectiveKernel(1024).fc_reduce.out_channels == 64
    assert SelectiveKernel(64, min_channels=1).fc_reduce.out_channels == 4  # ⌊64/16⌋
    assert SelectiveKernel(64, min_channels=1, rd_divisor=8).fc_reduce.out_channels == 8
    assert SelectiveKernel(200, groups=8, min_channels=1, rd_ratio=0.2, rd_divisor=8).fc_reduce.out_channels == 40
    # timm's make_divisible: 176/16 = 11 rounds to 8, less than 90 % of 11, so one step up
    assert SelectiveKernel(176, groups=16, min_channels=1, rd_divisor=8).fc_reduce.out_channels == 16
    assert SelectiveKernel(64, rd_channels=5).fc_reduce.out_channels == 5
    m = SelectiveKernel(32, out_channels=64, kernel_size=(3, 5, 7))
    assert m.fc_select.in_channels == 32 and m.fc_select.out_channels == 3 * 64


def test_sk_converter_errors():
    with pytest.raises(ValueError, match="aa_layer"):
        plugattn.from_official("sk_timm", None, in_channels=32, aa_layer="avgpool")
    with pytest.raises(ValueError, match="stride"):
        plugattn.from_official("sk_timm", None, in_channels=32, stride=3)
    with pytest.raises(TypeError, match="unexpected"):
        plugattn.from_official("sk_timm", None, in_channels=32, reduction=4)
    sd = random_state_dict(ppplang_shapes(32, 2, 4, 2, 8), seed=0)
    sd["fcs.2.weight"] = sd["fcs.1.weight"]
    with pytest.raises(KeyError, match="fcs.2"):
        plugattn.from_official("sk", sd, features=32, WH=8, M=2, G=4, r=2, L=8)


def test_sk_keep_3x3_false_is_real_kernels():
    m = SelectiveKernel(32, kernel_size=(3, 5, 7), keep_3x3=False, groups=4)
    assert [p.conv.kernel_size for p in m.paths] == [(3, 3), (5, 5), (7, 7)]
    assert [p.conv.padding for p in m.paths] == [(1, 1), (2, 2), (3, 3)]
    assert m.fc_select.out_channels == 3 * 32


def test_sk_input_not_modified_in_place_under_autograd():
    m = plugattn.create("sk", 16)
    x = rand(2, 16, 5, 4, seed=1).requires_grad_()
    before = x.detach().clone()
    m.train()(x).sum().backward()
    assert torch.equal(x.detach(), before)


SPLIT3 = {"split_input": True, "groups": 4, "kernel_size": (3, 5, 7), "attn_bias": True}


@pytest.mark.parametrize("kwargs", [{"groups": 16}, SPLIT3], ids=["default", "split3"])
def test_sk_symbolic_trace_equals_eager(kwargs):
    m = randomize_(SelectiveKernel(48, **kwargs), seed=2).eval()
    gm = torch.fx.symbolic_trace(m)
    with torch.no_grad():
        for shape in [(2, 48, 7, 5), (1, 48, 1, 1), (3, 48, 13, 17)]:
            x = rand(*shape, seed=3)
            assert_close(gm(x), m(x))


def test_sk_forward_hooks_fire_on_every_parameter_leaf():
    m = SelectiveKernel(32, kernel_size=(3, 5, 7), attn_bias=True).eval()
    leaves = param_leaves(m)
    assert {"fc_reduce", "fc_select", "norm", "paths.2.conv", "paths.2.bn"} <= set(leaves)
    fired = []
    for path, leaf in leaves.items():
        leaf.register_forward_hook(lambda mod, args, out, path=path: fired.append(path))
    with torch.no_grad():
        m(rand(2, 32, 6, 5))
    assert set(fired) == set(leaves)


def test_sk_hook_on_fc_select_changes_the_output():
    """The logits come from ``fc_select``'s own forward: a hook that rewrites its output steers the selection."""
    m = randomize_(SelectiveKernel(32), seed=4).eval()
    x = rand(2, 32, 6, 5, seed=5)
    big = torch.tensor([50.0, -50.0]).repeat_interleave(32)[None, :, None, None]  # all weight on branch 0
    m.fc_select.register_forward_hook(lambda mod, args, out: out * 0 + big)
    with torch.no_grad():
        u0 = m.paths[0](x)
        assert_close(m(x), u0)


def test_sk_extra_repr():
    text = SelectiveKernel(64, out_channels=128, stride=2).extra_repr()
    for part in ("channels=64", "out_channels=128", "stride=2", "groups=32", "rd_channels=32", "dilation=(1, 2)"):
        assert part in text, text


@pytest.mark.parametrize("c, g", [(40, 20), (48, 24), (112, 28), (440, 22), (64, 32), (1024, 32)])
def test_sk_default_groups_fit_any_width(c, g):
    m = SelectiveKernel(c).eval()
    convs = [conv for conv in m.modules() if isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (3, 3)]
    assert convs and all(conv.groups == g for conv in convs)
    assert m(torch.randn(1, c, 5, 4)).shape == (1, c, 5, 4)
