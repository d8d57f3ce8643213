"""Numerics of Selective Kernel and Coordinate Attention against independent formulations.

SK: timm's ``SelectiveKernel`` itself, and plain re-derivations (written from SPEC.md §2) of pppLang's and
ResearchingDexter's ``SKConv`` working on their official state_dicts. Coordinate Attention: a plain
re-derivation of the official ``CoordAtt`` (SPEC.md §4) in eval and train mode, gradients included, and timm's
``CoordAttn`` configured to the same math.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import TOL, rand, randomize_
from plugattn.modules.coord import CoordAttention
from plugattn.modules.sk import SelectiveKernel


def assert_close(a, b, dtype=torch.float32):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Official-style state_dict with random weights; BN buffers get plausible statistics.

    Values are drawn in float32 and then cast, so a float32 module loading them and cast to ``dtype`` afterwards
    holds exactly the same numbers.
    """
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            sd[k] = (0.5 + torch.rand(shape, generator=g)).to(dtype)
        elif k.endswith("running_mean"):
            sd[k] = (0.1 * torch.randn(shape, generator=g)).to(dtype)
        else:
            sd[k] = (0.5 * torch.randn(shape, generator=g)).to(dtype)
    return sd


def bn_shapes(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def bn(sd, prefix, t, training=False):
    return F.batch_norm(t, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                        sd[f"{prefix}.bias"], training=training, momentum=0.1, eps=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Selective Kernel
# --------------------------------------------------------------------------------------------------------------

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
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
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
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
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
        x = rand(2, c, 6, 5, seed=c, dtype=torch.float64)
        sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
        with torch.no_grad():
            assert_close(ours.double().eval()(x), dexter_reference(sd64, x, c, 2, 1), torch.float64)
    assert plugattn.create("sk", 16).paths[0].conv.groups == 16  # capped to the channel count


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
        f64 = torch.float64
        ours, ref = ours.double().train(), ref.double().train()
        xa, xb = x.double().requires_grad_(), x.double().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        assert_close(ya, yb, f64)
        g = rand(*ya.shape, seed=4, dtype=f64)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
        assert_close(xa.grad, xb.grad, f64)
        ours_params = dict(ours.named_parameters())
        for k, p in ref.named_parameters():
            assert_close(ours_params[_timm_to_ours(k)].grad, p.grad, f64)
        ours_state = ours.state_dict()
        for k, v in ref.state_dict().items():
            assert_close(ours_state[_timm_to_ours(k)], v, f64)


def test_sk_float64_and_batch1_against_timm():
    ref = randomize_(_timm_sk({"in_channels": 32, "out_channels": 48}), seed=5).double().eval()
    ours = plugattn.from_official("sk_timm", ref.state_dict(), in_channels=32, out_channels=48).double().eval()
    for shape in [(1, 32, 1, 1), (1, 32, 7, 3), (2, 32, 13, 17)]:
        x = rand(*shape, seed=6, dtype=torch.float64)
        with torch.no_grad():
            assert_close(ours(x), ref(x), torch.float64)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels": 48}, "groups"),  # 32 groups do not divide 48
        ({"channels": 64, "out_channels": 48}, "groups"),
        ({"channels": 33, "groups": 1, "split_input": True}, "split_input"),
        ({"channels": 32, "kernel_size": 4}, "kernel_size"),
        ({"channels": 32, "kernel_size": (3, 1)}, "kernel_size"),
        ({"channels": 32, "kernel_size": ()}, "kernel_size"),
        ({"channels": 32, "stride": 0}, "stride"),
        ({"channels": 32, "rd_ratio": -1.0}, "rd_ratio"),
        ({"channels": 32, "rd_channels": 0}, "rd_channels"),
        ({"channels": 32, "gate_layer": "nope"}, "gate_layer"),
    ],
)
def test_sk_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        SelectiveKernel(**kwargs)
    assert "SelectiveKernel" in str(e.value) or match == "gate_layer"


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


# --------------------------------------------------------------------------------------------------------------
# Coordinate Attention
# --------------------------------------------------------------------------------------------------------------

def coordatt_shapes(c, mip, names=("conv_h", "conv_w")):
    shapes = {"conv1.weight": (mip, c, 1, 1), "conv1.bias": (mip,)}
    shapes.update(bn_shapes("bn1", mip))
    for nm in names:
        shapes[f"{nm}.weight"], shapes[f"{nm}.bias"] = (c, mip, 1, 1), (c,)
    return shapes


def coordatt_reference(sd, x, training=False, names=("conv_h", "conv_w")):
    """Official CoordAtt as SPEC.md §4 describes it; BN runs on the concatenated (H+W) sequence."""
    n, c, h, w = x.shape
    x_h = x.mean(3, keepdim=True)  # (B, C, H, 1)
    x_w = x.mean(2, keepdim=True).permute(0, 1, 3, 2)  # (B, C, W, 1)
    y = F.conv2d(torch.cat([x_h, x_w], dim=2), sd["conv1.weight"], sd["conv1.bias"])
    y = bn(sd, "bn1", y, training=training)
    y = y * (F.relu6(y + 3) / 6)  # h-swish
    y_h, y_w = torch.split(y, [h, w], dim=2)
    a_h = torch.sigmoid(F.conv2d(y_h, sd[f"{names[0]}.weight"], sd[f"{names[0]}.bias"]))
    a_w = torch.sigmoid(F.conv2d(y_w.permute(0, 1, 3, 2), sd[f"{names[1]}.weight"], sd[f"{names[1]}.bias"]))
    return x * a_w * a_h


COORD = [  # channels, reduction, input (n, h, w)
    (64, 32, (3, 8, 8)),
    (256, 32, (2, 7, 5)),
    (96, 4, (1, 13, 17)),
    (16, 32, (2, 1, 9)),
    (40, 2, (2, 6, 1)),
    (24, 8, (1, 1, 1)),
]


@pytest.mark.parametrize("cfg", COORD, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_coord_matches_rederivation_eval(cfg, dtype):
    c, reduction, (n, h, w) = cfg
    mip = max(8, c // reduction)
    sd = random_state_dict(coordatt_shapes(c, mip), seed=c, dtype=dtype)
    m = plugattn.from_official("coord", sd, inp=c, oup=c, reduction=reduction).to(dtype).eval()
    assert m.conv1.out_channels == mip
    x = rand(n, c, h, w, seed=1, dtype=dtype) + rand(n, c, 1, 1, seed=2, dtype=dtype)
    ref = coordatt_reference(sd, x)
    with torch.no_grad():
        assert_close(m(x), ref, dtype)
        y_cl = m(x.to(memory_format=torch.channels_last))
        assert_close(y_cl, ref, dtype)
        assert_close(m(x.transpose(2, 3).contiguous().transpose(2, 3)), ref, dtype)  # non-contiguous input


@pytest.mark.parametrize("cfg", COORD[:5], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_coord_matches_rederivation_train_with_gradients(cfg, dtype):
    """Train mode: BN statistics over the concatenated sequence, running stats, and every gradient."""
    c, reduction, (n, h, w) = cfg
    mip = max(8, c // reduction)
    sd = random_state_dict(coordatt_shapes(c, mip), seed=c + 1, dtype=dtype)
    m = plugattn.from_official("coord", sd, inp=c, oup=c, reduction=reduction).to(dtype).train()
    ref_sd = {k: v.clone().requires_grad_(v.is_floating_point() and "running" not in k) for k, v in sd.items()}
    x = rand(n, c, h, w, seed=3, dtype=dtype) + rand(n, c, 1, 1, seed=4, dtype=dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = m(xa)
    yb = coordatt_reference(ref_sd, xb, training=True)
    assert_close(ya, yb.detach(), dtype)
    g = rand(*x.shape, seed=5, dtype=dtype)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    assert_close(xa.grad, xb.grad, dtype)
    ours = {"conv1.weight": m.conv1.weight, "conv1.bias": m.conv1.bias, "bn1.weight": m.norm.weight,
            "bn1.bias": m.norm.bias, "conv_h.weight": m.conv_h.weight, "conv_h.bias": m.conv_h.bias,
            "conv_w.weight": m.conv_w.weight, "conv_w.bias": m.conv_w.bias}
    for k, p in ours.items():
        assert_close(p.grad, ref_sd[k].grad, dtype)
    assert_close(m.norm.running_mean, ref_sd["bn1.running_mean"].detach(), dtype)
    assert_close(m.norm.running_var, ref_sd["bn1.running_var"].detach(), dtype)


def test_coord_train_bn_is_on_the_concatenated_sequence():
    """Normalising the H part and the W part separately would differ in train mode: check that we do not."""
    c = 32
    sd = random_state_dict(coordatt_shapes(c, 8), seed=9)
    m = plugattn.from_official("coord", sd, inp=c, oup=c).train()
    x = rand(2, c, 5, 11, seed=1) + 3 * rand(2, c, 5, 1, seed=2)  # rows and columns with different statistics
    with torch.no_grad():
        y = m(x)
    assert_close(y, coordatt_reference(sd, x, training=True))
    split = copy.deepcopy(m)
    split.forward = lambda t: _coord_split_bn(split, t)
    with torch.no_grad():
        assert (split(x) - y).abs().max() > 1e-3


def _coord_split_bn(m, x):
    h = x.shape[2]
    f_h = m.act(m.norm(m.conv1(x.mean(3, keepdim=True))))
    f_w = m.act(m.norm(m.conv1(x.mean(2, keepdim=True))))
    return x * torch.sigmoid(m.conv_w(f_w)) * torch.sigmoid(m.conv_h(f_h))[:, :, :h]


def test_coord_mbv2_matches_rederivation():
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


def test_coord_widths_and_defaults():
    for c, mip in [(16, 8), (256, 8), (512, 16), (1000, 31)]:
        assert CoordAttention(c).conv1.out_channels == mip
    assert CoordAttention(64, rd_channels=5).conv1.out_channels == 5
    assert CoordAttention(64, rd_ratio=1 / 4, min_channels=1).conv1.out_channels == 16
    m = CoordAttention(32)
    assert isinstance(m.act, nn.Hardswish) and isinstance(m.norm, nn.BatchNorm2d)
    assert m.conv1.bias is not None and m.conv_h.bias is not None
    assert CoordAttention(32, bias=False, norm_layer=None).conv_w.bias is None


def test_coord_gradcheck_and_gradgradcheck():
    m = randomize_(CoordAttention(8, rd_channels=4), seed=2).double()
    for train in (False, True):
        m.train(train)
        x = rand(2, 8, 3, 5, seed=3, dtype=torch.float64).requires_grad_()
        assert torch.autograd.gradcheck(m, (x,), fast_mode=True)
        assert torch.autograd.gradgradcheck(m, (x,), fast_mode=True)  # the custom backward is differentiable
        xc = x.detach().to(memory_format=torch.channels_last).requires_grad_()
        assert torch.autograd.gradcheck(m, (xc,), fast_mode=True)


def test_coord_export_compile_onnx():
    m = randomize_(CoordAttention(32), seed=4).eval()
    x = rand(2, 32, 7, 9, seed=5)
    with torch.no_grad():
        y = m(x)
        assert_close(torch.export.export(m, (x,)).module()(x), y)
        assert_close(torch.compile(m, fullgraph=True, dynamic=False)(x), y)
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "coord.onnx")
        torch.onnx.export(m, (x,), path, dynamo=True, verbose=False)
        sess = ort.InferenceSession(path)
        (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    assert_close(torch.from_numpy(out), y)


def test_coord_train_compile_gradients():
    m = randomize_(CoordAttention(16), seed=6).train()
    mc = copy.deepcopy(m)
    x = rand(4, 16, 5, 6, seed=7)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    m(xa).sum().backward()
    torch.compile(mc, fullgraph=True, dynamic=False)(xb).sum().backward()
    assert_close(xb.grad, xa.grad)


def test_coord_converter_errors():
    with pytest.raises(ValueError, match="oup"):
        plugattn.from_official("coord", None, inp=64, oup=32)
    with pytest.raises(ValueError, match="reduction"):
        plugattn.from_official("coord", None, inp=64, oup=64, reduction=0)
    with pytest.raises(ValueError, match="CoordAttention: min_channels"):
        CoordAttention(64, min_channels=0)
    with pytest.raises(ValueError, match="act_layer"):
        CoordAttention(64, act_layer="nope")


def test_no_input_modified_in_place_under_autograd():
    for m in (CoordAttention(16), plugattn.create("sk", 16)):
        x = rand(2, 16, 5, 4, seed=1).requires_grad_()
        before = x.detach().clone()
        m.train()(x).sum().backward()
        assert torch.equal(x.detach(), before)


def test_coord_gradients_when_only_some_inputs_need_them():
    """Frozen parameters, or an input that needs no gradient: the custom backward skips what is not needed."""
    m = randomize_(CoordAttention(16), seed=8).train()
    ref = copy.deepcopy(m)
    x = rand(2, 16, 5, 6, seed=9)
    m.requires_grad_(False)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    m(xa).sum().backward()
    ref(xb).sum().backward()
    assert_close(xa.grad, xb.grad)
    m.requires_grad_(True)
    m.zero_grad()
    ref.zero_grad()
    m(x).sum().backward()  # x needs no gradient, the parameters do
    ref(x.clone().requires_grad_()).sum().backward()
    for p, q in zip(m.parameters(), ref.parameters()):
        assert_close(p.grad, q.grad)
