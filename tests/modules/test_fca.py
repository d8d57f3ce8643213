"""FcaNet's multi-spectral channel attention (plugattn.modules.fca) against the official forward.

The reference is ``MultiSpectralAttentionLayer.forward`` with filters built from scipy's orthonormal DCT-II
(independent of plugattn's filter code): adaptive average pooling to the DCT grid only when the size differs
(the official branch), the DCT-weighted sum, Linear → ReLU → Linear → σ, channel-wise scale.
"""

from __future__ import annotations

import pytest
import scipy.fft
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import assert_matches_reference, onnxruntime_or_skip, param_leaves, rand, randomize_
from plugattn.export import export_onnx, onnx_max_error
from plugattn.modules.fca import MultiSpectralChannelAttention, dct_filters, freq_indices

F64 = torch.float64
SHAPES = [(2, 7, 7), (2, 7, 5), (1, 13, 17), (2, 1, 1), (3, 6, 6)]
ONNX_SIZES = [(2, 12, 10), (3, 13, 17), (1, 7, 5), (1, 1, 1), (1, 1, 2), (2, 3, 20), (1, 56, 56), (2, 6, 7)]


def ortho_dct_matrix(n: int) -> torch.Tensor:
    """B[k, t]: the orthonormal DCT-II basis, from scipy (DCT of the identity), independent of our code."""
    return torch.from_numpy(scipy.fft.dct(torch.eye(n, dtype=F64).numpy(), type=2, norm="ortho", axis=0))


def official_fca_filters(c: int, dct_h: int, dct_w: int, method: str) -> torch.Tensor:
    us, vs = freq_indices(method)
    bh, bw = ortho_dct_matrix(dct_h), ortho_dct_matrix(dct_w)
    part = c // len(us)
    out = torch.zeros(c, dct_h, dct_w, dtype=F64)
    for i, (u, v) in enumerate(zip(us, vs)):
        out[i * part:(i + 1) * part] = torch.outer(bh[u * (dct_h // 7)], bw[v * (dct_w // 7)])
    return out


def official_fca_forward(sd: dict, x: torch.Tensor, dct_h: int, dct_w: int) -> torch.Tensor:
    """MultiSpectralAttentionLayer.forward: pool only when the size differs, DCT-weighted sum, FC-ReLU-FC-σ."""
    n, c, h, w = x.shape
    xp = x if (h, w) == (dct_h, dct_w) else F.adaptive_avg_pool2d(x, (dct_h, dct_w))
    y = (xp * sd["dct_layer.weight"]).sum(dim=[2, 3])
    y = torch.sigmoid(F.linear(F.relu(F.linear(y, sd["fc.0.weight"], sd.get("fc.0.bias"))), sd["fc.2.weight"],
                               sd.get("fc.2.bias")))
    return x * y.view(n, c, 1, 1)


def module_ref(m: MultiSpectralChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """The official forward with the module's FC weights and scipy-built filters."""
    sd = {"dct_layer.weight": official_fca_filters(m.channels, m.dct_h, m.dct_w, m.freq_sel_method).to(x.dtype),
          "fc.0.weight": m.fc1.weight, "fc.0.bias": m.fc1.bias, "fc.2.weight": m.fc2.weight, "fc.2.bias": m.fc2.bias}
    return official_fca_forward(sd, x, m.dct_h, m.dct_w)


def build(channels: int = 32, seed: int = 0, **kwargs) -> MultiSpectralChannelAttention:
    return randomize_(MultiSpectralChannelAttention(channels, dtype=F64, **kwargs), seed).eval()


FCA_CONFIGS = [{}, {"dct_h": 14, "dct_w": 7, "freq_sel_method": "low8"}, {"freq_sel_method": "bot32", "bias": True},
               {"dct_h": 5, "dct_w": 3, "freq_sel_method": "top1"}]


@pytest.mark.parametrize("kwargs", FCA_CONFIGS, ids=str)
def test_fca_matches_reference(kwargs):
    """Output and input gradient equal the official forward, for contiguous and channels_last x (layout kept)."""
    m = build(**kwargs)
    assert_matches_reference(m, lambda x: module_ref(m, x), SHAPES, 32)


def test_fca_reference_other_width():
    m = build(64, seed=3)
    x = rand(2, 64, 9, 8, seed=4, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), module_ref(m, x), atol=1e-10, rtol=1e-10)


def test_fca_frequency_table_is_the_official_top16():
    us, vs = freq_indices("top16")
    assert list(zip(us, vs))[:6] == [(0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0)]
    assert len(set(zip(us, vs))) == 16
    with pytest.raises(ValueError, match="freq_sel_method"):
        freq_indices("top3")


@pytest.mark.parametrize("method", ["top16", "low4", "bot32", "top1"])
@pytest.mark.parametrize("grid", [(7, 7), (14, 14), (56, 28)])
def test_fca_filters_are_dct_components(method, grid):
    c = 64
    dh, dw = grid
    filt = dct_filters(c, dh, dw, method)
    torch.testing.assert_close(filt, official_fca_filters(c, dh, dw, method), atol=1e-12, rtol=0)
    # Σ x·filter is a coefficient of the 2-D orthonormal DCT of x (scipy), at the scaled frequency
    x = rand(c, dh, dw, seed=5, dtype=F64)
    coeff = torch.from_numpy(scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(1, 2)))
    us, vs = freq_indices(method)
    part = c // len(us)
    for i, (u, v) in enumerate(zip(us, vs)):
        sl = slice(i * part, (i + 1) * part)
        torch.testing.assert_close((x[sl] * filt[sl]).sum((1, 2)), coeff[sl, u * (dh // 7), v * (dw // 7)])


@pytest.mark.parametrize("grid,shapes", [
    ((7, 7), [(2, 7, 7), (3, 13, 9), (1, 1, 1), (2, 4, 6)]),
    ((14, 14), [(2, 14, 14), (1, 28, 20)]),
])
@pytest.mark.parametrize("c,reduction,method", [(64, 16, "top16"), (32, 4, "low8"), (16, 16, "top16")])
def test_fca_matches_official(grid, shapes, c, reduction, method):
    dh, dw = grid
    rd = c // reduction
    sd = {"dct_layer.weight": official_fca_filters(c, dh, dw, method).float(),
          "fc.0.weight": 0.5 * rand(rd, c, seed=1), "fc.2.weight": 0.5 * rand(c, rd, seed=2)}
    m = plugattn.from_official("fca", sd, channel=c, dct_h=dh, dct_w=dw, reduction=reduction,
                               freq_sel_method=method).eval()
    for i, (n, h, w) in enumerate(shapes):
        x = rand(n, c, h, w, seed=30 + i)
        with torch.no_grad():
            torch.testing.assert_close(m(x), official_fca_forward(sd, x, dh, dw), atol=1e-5, rtol=1e-5)


def test_fca_state_dict_and_buffer():
    """Only the FC weights are stored; the fixed DCT bank is a non-persistent buffer that follows .to()."""
    m = MultiSpectralChannelAttention(64)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {"fc1.weight": (4, 64), "fc2.weight": (64, 4)}
    assert dict(m.named_buffers())["dct_weight"].shape == (64, 7, 7)
    m.double()
    assert m.dct_weight.dtype == F64
    assert "channels=64, rd_channels=4, dct_h=7, dct_w=7, freq_sel_method='top16'" in repr(m)


def test_fca_low1_is_se_on_scaled_mean():
    """Frequency (0, 0) is √(hw)·mean: with one DC frequency FcaNet is SE on 7·GAP (7×7 grid, 7×7 input)."""
    c = 32
    m = build(c, seed=2, freq_sel_method="low1")
    x = rand(2, c, 7, 7, seed=3, dtype=F64)
    s = 7 * x.mean((2, 3))
    want = x * torch.sigmoid(F.linear(F.relu(F.linear(s, m.fc1.weight)), m.fc2.weight)).view(2, c, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), want, atol=1e-10, rtol=1e-10)


def test_fca_bad_arguments():
    with pytest.raises(ValueError, match="MultiSpectralChannelAttention.*divisible"):
        MultiSpectralChannelAttention(24, freq_sel_method="low16")
    with pytest.raises(ValueError, match="freq_sel_method"):
        MultiSpectralChannelAttention(32, freq_sel_method="mid16")
    with pytest.raises(ValueError, match="dct_h"):
        MultiSpectralChannelAttention(32, dct_h=0)
    with pytest.raises(ValueError, match="MultiSpectralChannelAttention: rd_ratio"):
        MultiSpectralChannelAttention(32, rd_ratio=0)


def test_torch_export_follows_the_size():
    m = randomize_(MultiSpectralChannelAttention(32), seed=1).eval()
    dim = torch.export.Dim
    ep = torch.export.export(m, (rand(2, 32, 9, 11, seed=2),),
                             dynamic_shapes={"x": {0: dim("batch"), 2: dim("height"), 3: dim("width")}})
    for n, h, w in [(2, 9, 11), (3, 13, 17), (1, 7, 7), (1, 1, 1)]:
        x = rand(n, 32, h, w, seed=h)
        with torch.no_grad():
            torch.testing.assert_close(ep.module()(x), m(x))


@pytest.mark.parametrize("kwargs", [{}, {"dct_h": 14, "dct_w": 7, "freq_sel_method": "low8"}], ids=str)
def test_fca_onnx_parity(tmp_path, kwargs):
    """Exported once with dynamic batch/height/width, the pooling bins follow every size."""
    onnxruntime_or_skip()
    torch.manual_seed(0)
    m = randomize_(plugattn.create("fca", 32, **kwargs), seed=1).eval()
    path = export_onnx(m, tmp_path / "fca.onnx", size=(12, 10))
    for n, h, w in ONNX_SIZES:
        x = rand(n, 32, h, w, seed=h + w)
        err = onnx_max_error(path, m, x, relative=True)
        assert err <= 1e-5, f"{n}x{h}x{w}: {err:.1e}"


def test_torchscript_exporter_follows_the_input_size(tmp_path):
    """The deprecated exporter traces shapes as tensors: the pooling bins must follow them."""
    onnxruntime_or_skip()
    torch.manual_seed(0)
    m = randomize_(plugattn.create("fca", 32), seed=3).eval()
    path = export_onnx(m, tmp_path / "fca.onnx", size=(12, 10), dynamo=False)
    for n, h, w in [(2, 12, 10), (3, 13, 17), (1, 7, 5), (1, 1, 1)]:
        err = onnx_max_error(path, m, rand(n, 32, h, w, seed=h), relative=True)
        assert err <= 1e-5, f"{n}x{h}x{w}: {err:.1e}"


@pytest.mark.parametrize("kwargs", FCA_CONFIGS[:2], ids=str)
def test_fx_trace_and_hooks(kwargs):
    m = build(**kwargs)
    gm = torch.fx.symbolic_trace(m)
    fired = []
    leaves = list(param_leaves(m))
    assert leaves == ["fc1", "fc2"]
    for name in leaves:
        m.get_submodule(name).register_forward_hook(lambda *_, name=name: fired.append(name))
    for n, h, w in [(2, 7, 5), (1, 1, 1), (2, 7, 7)]:
        x = rand(n, 32, h, w, seed=h, dtype=F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert fired == leaves
    assert isinstance(gm.fc1, nn.Linear)


@pytest.mark.parametrize("c, method", [(16, "top16"), (24, "top8"), (40, "top8"), (18, "top2"), (440, "top8"),
                                       (7, "top1")])
def test_fca_default_frequencies_fit_any_width(c, method):
    m = MultiSpectralChannelAttention(c)
    assert m.freq_sel_method == method
    assert m(torch.randn(2, c, 9, 9)).shape == (2, c, 9, 9)
    with pytest.raises(ValueError, match="'top8' would work"):
        MultiSpectralChannelAttention(24, freq_sel_method="top16")
