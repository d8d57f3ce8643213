"""``plugattn._layers``: the shared primitives.

``adaptive_avg_pool2d`` pools with bin matrices built from ``x.shape`` when exported; its bin form is checked
against ``F.adaptive_avg_pool2d`` and a loop written from the definition, for many sizes (inputs smaller than
the output and 1×1 included), values and gradients, and in ONNX at sizes the export never saw.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import rand
from plugattn._layers import _adaptive_avg_pool2d_bins, adaptive_avg_pool2d
from plugattn.export import export_onnx

HEIGHTS = [1, 2, 3, 5, 7, 13, 14, 17, 56, 100]
WIDTHS = [1, 3, 7, 9, 28]
OUTS = [(1, 1), (2, 3), (7, 7), (14, 5), (3, 14)]
POOL_TOL = {torch.float32: (5e-7, 1e-6), torch.float64: (1e-12, 1e-12)}


class _Pool(nn.Module):
    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool2d(x, self.output_size)


def _loop_pool(x: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
    """Adaptive average pooling written out from its definition (bins [floor(i·L/o), ceil((i + 1)·L/o)))."""
    h, w = x.shape[-2:]
    out = x.new_empty(*x.shape[:-2], oh, ow)
    for i in range(oh):
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[..., i, j] = x[..., h0:h1, w0:w1].mean((-2, -1))
    return out


# --- the bin-matrix pooling equals adaptive pooling -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("out", OUTS, ids=str)
def test_bins_pool_matches_native(dtype, out):
    atol, rtol = POOL_TOL[dtype]
    for k, (h, w) in enumerate(itertools.product(HEIGHTS, WIDTHS)):
        x = rand(2, 3, h, w, seed=k, dtype=dtype)
        got = _adaptive_avg_pool2d_bins(x, *out)
        want = F.adaptive_avg_pool2d(x, out)
        assert got.shape == want.shape and got.dtype == dtype
        torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=f"{h}x{w} -> {out}")
        xcl = x.to(memory_format=torch.channels_last)
        torch.testing.assert_close(_adaptive_avg_pool2d_bins(xcl, *out), want, atol=atol, rtol=rtol)


def test_bins_pool_exact_bins():
    # small integers: every bin sum and mean is exact in float64, so the bins themselves must agree exactly
    for h, w, oh, ow in [(5, 3, 7, 7), (13, 17, 7, 7), (1, 1, 7, 7), (7, 5, 3, 2), (2, 9, 4, 4)]:
        x = torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w) * 3
        assert torch.equal(_adaptive_avg_pool2d_bins(x, oh, ow), _loop_pool(x, oh, ow))
        assert torch.equal(F.adaptive_avg_pool2d(x, (oh, ow)), _loop_pool(x, oh, ow))


def test_bins_pool_shapes_none_and_half():
    x = rand(3, 13, 6, seed=1)  # (C, H, W)
    torch.testing.assert_close(_adaptive_avg_pool2d_bins(x, 7, 4), F.adaptive_avg_pool2d(x, (7, 4)))
    x = rand(2, 3, 13, 6, seed=2)
    torch.testing.assert_close(_adaptive_avg_pool2d_bins(x, None, 4), F.adaptive_avg_pool2d(x, (None, 4)))
    torch.testing.assert_close(_adaptive_avg_pool2d_bins(x, 5, None), F.adaptive_avg_pool2d(x, (5, None)))
    assert torch.equal(_adaptive_avg_pool2d_bins(x, None, None), x)
    assert torch.equal(_adaptive_avg_pool2d_bins(x, 13, 6), x)  # identity at the grid size, bit for bit
    xb = x.to(torch.bfloat16)
    got = _adaptive_avg_pool2d_bins(xb, 7, 7)
    assert got.dtype == torch.bfloat16  # summed in float32, rounded once
    torch.testing.assert_close(got, F.adaptive_avg_pool2d(xb, (7, 7)), atol=1e-2, rtol=1e-2)
    assert _adaptive_avg_pool2d_bins(rand(0, 3, 5, 5), 7, 7).shape == (0, 3, 7, 7)


@pytest.mark.parametrize("size", [(13, 17, 7, 7), (5, 3, 7, 7), (1, 1, 7, 7), (14, 14, 7, 7), (9, 2, 4, 3)], ids=str)
def test_bins_pool_gradient(size):
    h, w, oh, ow = size
    x = rand(2, 3, h, w, seed=h, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: _adaptive_avg_pool2d_bins(t, oh, ow), (x,))
    g = rand(2, 3, oh, ow, seed=w, dtype=torch.float64)
    got, = torch.autograd.grad(_adaptive_avg_pool2d_bins(x, oh, ow), x, g)
    want, = torch.autograd.grad(F.adaptive_avg_pool2d(x, (oh, ow)), x, g)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    x32 = x.detach().float().requires_grad_()
    got, = torch.autograd.grad(_adaptive_avg_pool2d_bins(x32, oh, ow), x32, g.float())
    want, = torch.autograd.grad(F.adaptive_avg_pool2d(x32, (oh, ow)), x32, g.float())
    torch.testing.assert_close(got, want, atol=5e-7, rtol=1e-6)


# --- the public helper ------------------------------------------------------------------------------------------


def test_helper_is_the_native_op_in_eager():
    for h, w in [(13, 17), (5, 3), (1, 1)]:
        x = rand(2, 4, h, w, seed=h)
        assert torch.equal(adaptive_avg_pool2d(x, (7, 7)), F.adaptive_avg_pool2d(x, (7, 7)))
        assert torch.equal(adaptive_avg_pool2d(x, 3), F.adaptive_avg_pool2d(x, 3))


def test_helper_bad_arguments():
    x = rand(1, 2, 5, 5)
    for bad in (0, (7,), (7, 0), (7, 2.0), "77", True, None, (True, 2)):
        with pytest.raises(ValueError, match="adaptive_avg_pool2d: output_size"):
            adaptive_avg_pool2d(x, bad)
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: expected input x"):
        adaptive_avg_pool2d(rand(5, 5), 2)
    with pytest.raises(TypeError, match="adaptive_avg_pool2d: expected input x to be a torch.Tensor"):
        adaptive_avg_pool2d([[1.0]], 2)


def test_helper_torch_export_follows_the_input_size():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dim = torch.export.Dim
        ep = torch.export.export(_Pool((7, 5)), (rand(2, 3, 12, 10),),
                                 dynamic_shapes={"x": {0: dim("batch"), 2: dim("height"), 3: dim("width")}})
    targets = {str(node.target) for node in ep.graph.nodes if node.op == "call_function"}
    assert not any("adaptive_avg_pool" in t or "_adaptive_avg" in t for t in targets), targets
    for n, h, w in [(2, 12, 10), (3, 13, 17), (1, 1, 1), (1, 3, 20), (2, 56, 9)]:
        x = rand(n, 3, h, w, seed=h)
        torch.testing.assert_close(ep.module()(x), F.adaptive_avg_pool2d(x, (7, 5)), atol=5e-7, rtol=1e-6)


# --- ONNX parity ------------------------------------------------------------------------------------------------


def _ort():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    ort.set_default_logger_severity(4)
    return ort

ONNX_SIZES = [(2, 12, 10), (3, 13, 17), (1, 7, 5), (1, 1, 1), (1, 1, 2), (2, 3, 20), (1, 56, 56), (2, 6, 7)]


def test_helper_onnx_at_every_size(tmp_path):
    ort = _ort()
    m = _Pool((7, 7))
    path = export_onnx(m, tmp_path / "pool.onnx", channels=3, size=(12, 10))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, h, w in ONNX_SIZES:
        x = rand(n, 3, h, w, seed=h * 31 + w)
        got = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(got, F.adaptive_avg_pool2d(x, (7, 7)), atol=5e-7, rtol=1e-6,
                                   msg=f"{n}x{h}x{w}")


def test_largest_divisor_and_reduced_width():
    from plugattn._layers import largest_divisor, reduced_width

    for n in range(1, 200):
        for cap in (1, 7, 32, 64):
            g = largest_divisor(n, cap)
            assert n % g == 0 and g <= cap and all(n % k for k in range(g + 1, min(n, cap) + 1))
    assert reduced_width("M", 64, 1 / 16) == 4 and reduced_width("M", 64, 1 / 16, rd_divisor=8) == 8
    assert reduced_width("M", 8, 1 / 16) == 1 and reduced_width("M", 64, 0.5, rd_channels=3) == 3
    for bad in (0, -0.5):
        with pytest.raises(ValueError, match="M: rd_ratio"):
            reduced_width("M", 64, bad)
    with pytest.raises(ValueError, match="M: rd_channels"):
        reduced_width("M", 64, 0.25, rd_channels=0)


def test_check_input_dtype_policy():
    from plugattn._layers import check_input

    m = plugattn.create("se", 8)
    with pytest.raises(TypeError, match=r"SqueezeExcite.*float64.*module.to\(torch.float64\)"):
        check_input(m, torch.zeros(1, 8, 2, 2, dtype=torch.float64), 8)
    check_input(plugattn.create("simam", 8), torch.zeros(1, 8, 2, 2, dtype=torch.float64), 8)  # no parameters
    with torch.autocast("cpu", dtype=torch.bfloat16):
        check_input(m, torch.zeros(1, 8, 2, 2, dtype=torch.bfloat16), 8)  # autocast casts inside the ops
