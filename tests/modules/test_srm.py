"""SRM (plugattn.modules.srm) against the official ``SRMLayer`` forward.

The reference is written from the official code: per-channel mean and unbiased ``torch.std`` over the flattened
H·W, the channel-wise FC as ``sum(t * cfc, dim=2)``, BatchNorm and σ. The official std is NaN at H·W = 1, where
plugattn takes std = 0 (documented); that case is checked against its own formula.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import assert_matches_reference, onnxruntime_or_skip, param_leaves, rand, randomize_
from plugattn.export import export_onnx, onnx_max_error
from plugattn.modules.srm import StyleRecalibration, style_pool

F64 = torch.float64
SHAPES = [(2, 7, 5), (1, 13, 17), (2, 1, 2), (3, 6, 6)]  # H·W > 1: the official std is defined
ONNX_SIZES = [(2, 12, 10), (3, 13, 17), (1, 7, 5), (1, 1, 1), (1, 1, 2), (2, 3, 20), (1, 56, 56), (2, 6, 7)]


def official_srm_forward(x: torch.Tensor, cfc: torch.Tensor, bn) -> torch.Tensor:
    """SRMLayer.forward: (mean, unbiased std) over H·W, CFC, ``bn``, σ."""
    n, c = x.shape[:2]
    t = torch.cat((x.view(n, c, -1).mean(dim=2).view(n, c, -1), x.reshape(n, c, -1).std(dim=2).view(n, c, -1)), dim=2)
    z = torch.sum(t * cfc[None, :, :], dim=2)[:, :, None, None]
    return x * torch.sigmoid(bn(z))


def module_ref(m: StyleRecalibration, x: torch.Tensor) -> torch.Tensor:
    """The official forward with the module's CFC and BatchNorm statistics (eval)."""
    b = m.bn
    return official_srm_forward(
        x, m.cfc, lambda z: F.batch_norm(z, b.running_mean, b.running_var, b.weight, b.bias, False, 0.0, b.eps))


def build(channels: int = 32, seed: int = 0, **kwargs) -> StyleRecalibration:
    return randomize_(StyleRecalibration(channels, dtype=F64, **kwargs), seed).eval()


def test_srm_matches_reference():
    """Output and input gradient equal the official forward, for contiguous and channels_last x (layout kept)."""
    m = build()
    assert_matches_reference(m, lambda x: module_ref(m, x), SHAPES, 32, layout_1x1=True)


def test_srm_reference_other_width():
    m = build(64, seed=3)
    x = rand(2, 64, 9, 8, seed=4, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), module_ref(m, x), atol=1e-10, rtol=1e-10)


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
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "cfc": (16, 2), "bn.weight": (16,), "bn.bias": (16,), "bn.running_mean": (16,), "bn.running_var": (16,),
        "bn.num_batches_tracked": ()}
    assert "channels=16" in repr(m)
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


def test_style_pool_divisor_and_gradient():
    """std = √(Σ(x − μ)² / max(H·W − 1, 1)); zero variance gives gradient 0 through the std, never NaN."""
    for h, w in [(1, 1), (1, 2), (3, 4), (7, 5)]:
        x = rand(2, 5, h, w, seed=h * w, dtype=F64).requires_grad_()
        flat = x.detach().reshape(2, 5, h * w)
        mean = flat.sum(-1) / (h * w)
        std = ((flat - mean[..., None]) ** 2).sum(-1).div(max(h * w - 1, 1)).sqrt()
        t = style_pool(x)
        torch.testing.assert_close(t.detach(), torch.stack((mean, std), -1), atol=1e-12, rtol=1e-12)
        g, = torch.autograd.grad(t.sum(), x)
        assert torch.isfinite(g).all()
        if h * w > 1:
            assert torch.autograd.gradcheck(style_pool, (x,))
    x = torch.full((1, 2, 3, 3), 0.5, dtype=F64, requires_grad=True)
    g, = torch.autograd.grad(style_pool(x)[..., 1].sum(), x)
    assert torch.equal(g, torch.zeros_like(g))
    x = rand(2, 3, 1, 1, seed=9).requires_grad_()
    g, = torch.autograd.grad(style_pool(x)[..., 1].sum(), x)
    assert torch.equal(g, torch.zeros_like(g))


def test_torch_export_odd_sizes():
    m = randomize_(StyleRecalibration(32), seed=1).eval()
    dim = torch.export.Dim
    ep = torch.export.export(m, (rand(2, 32, 9, 11, seed=2),),
                             dynamic_shapes={"x": {0: dim("batch"), 2: dim("height"), 3: dim("width")}})
    for n, h, w in [(2, 9, 11), (3, 13, 17), (1, 1, 1)]:
        x = rand(n, 32, h, w, seed=h)
        with torch.no_grad():
            torch.testing.assert_close(ep.module()(x), m(x))


def test_srm_onnx_parity(tmp_path):
    """Exported once with dynamic batch/height/width, the divisor follows every size, 1×1 included."""
    ort = onnxruntime_or_skip()
    torch.manual_seed(0)
    m = randomize_(plugattn.create("srm", 16), seed=2).eval()
    path = export_onnx(m, tmp_path / "srm.onnx", size=(12, 10))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, h, w in ONNX_SIZES:
        x = rand(n, 16, h, w, seed=h + w)
        err = onnx_max_error(path, m, x, relative=True)
        assert err <= 1e-5, f"{n}x{h}x{w}: {err:.1e}"
    x1 = rand(3, 16, 1, 1, seed=5)
    got = torch.from_numpy(sess.run(None, {"x": x1.numpy()})[0])
    with torch.no_grad():
        z = (x1[:, :, 0, 0] * m.cfc[:, 0])[:, :, None, None]
        want = x1 * torch.sigmoid(m.bn(z))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_torchscript_exporter_follows_the_input_size(tmp_path):
    """The deprecated exporter traces shapes as tensors: SRM's divisor must follow them."""
    onnxruntime_or_skip()
    torch.manual_seed(0)
    m = randomize_(plugattn.create("srm", 32), seed=3).eval()
    path = export_onnx(m, tmp_path / "srm.onnx", size=(12, 10), dynamo=False)
    for n, h, w in [(2, 12, 10), (3, 13, 17), (1, 7, 5), (1, 1, 1)]:
        err = onnx_max_error(path, m, rand(n, 32, h, w, seed=h), relative=True)
        assert err <= 1e-5, f"{n}x{h}x{w}: {err:.1e}"


def test_fx_trace_and_hooks():
    m = build()
    gm = torch.fx.symbolic_trace(m)
    fired = []
    leaves = list(param_leaves(m))
    assert leaves == ["bn"]
    m.bn.register_forward_hook(lambda *_: fired.append("bn"))
    for n, h, w in [(2, 7, 5), (1, 1, 1)]:
        x = rand(n, 32, h, w, seed=h, dtype=F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert fired == ["bn"]
