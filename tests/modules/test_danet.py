"""DANet (PAM, CAM, dual attention, head) and the blockwise attention kernel against the official formulas.

The references below follow the official forward passes step by step (``PAM_Module``, ``CAM_Module``,
``DANetHead`` of junfu1115/DANet, SPEC.md section 6) on official-named state_dicts, with explicit (H·W) × (H·W)
matrices; modules are built through ``plugattn.from_official``, so the key mapping is checked too.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import TOL, LargestTensor, PeakLive, as_tuple, rand, randomize_
from plugattn._layers import Gate
from plugattn.modules.danet import ChannelAttention, DANetChannelAttention, DANetHead, DualAttention, PositionAttention

F64 = torch.float64
SIZES = [(1, 1), (7, 5), (13, 17)]


# ----------------------------------------------------------------------------------------------------------
# plain references (official forward passes)


def ref_pam(x, sd):
    """PAM_Module.forward: energy = QᵀK (no scaling), softmax over keys, out = V·attentionᵀ, γ·out + x."""
    b, c, h, w = x.shape
    q = F.conv2d(x, sd["query_conv.weight"], sd["query_conv.bias"]).reshape(b, -1, h * w).permute(0, 2, 1)
    k = F.conv2d(x, sd["key_conv.weight"], sd["key_conv.bias"]).reshape(b, -1, h * w)
    energy = torch.bmm(q, k)  # (B, N, N)
    attention = torch.softmax(energy, dim=-1)
    v = F.conv2d(x, sd["value_conv.weight"], sd["value_conv.bias"]).reshape(b, -1, h * w)
    out = torch.bmm(v, attention.permute(0, 2, 1)).view(b, c, h, w)
    return sd["gamma"] * out + x


def ref_pam_attention(x, sd):
    b, c, h, w = x.shape
    q = F.conv2d(x, sd["query_conv.weight"], sd["query_conv.bias"]).reshape(b, -1, h * w).permute(0, 2, 1)
    k = F.conv2d(x, sd["key_conv.weight"], sd["key_conv.bias"]).reshape(b, -1, h * w)
    return torch.softmax(torch.bmm(q, k), dim=-1)


def ref_cam(x, sd):
    """CAM_Module.forward: energy = F Fᵀ, softmax(rowmax − energy), out = attention·F, γ·out + x."""
    b, c, h, w = x.shape
    f = x.reshape(b, c, -1)
    energy = torch.bmm(f, f.permute(0, 2, 1))
    energy_new = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
    attention = torch.softmax(energy_new, dim=-1)
    out = torch.bmm(attention, f).view(b, c, h, w)
    return sd["gamma"] * out + x


def ref_head(x, sd):
    """DANetHead.forward in eval mode (BatchNorm from running stats, Dropout2d off)."""

    def cbr(t, name):
        t = F.conv2d(t, sd[f"{name}.0.weight"], None, padding=1)
        t = F.batch_norm(t, sd[f"{name}.1.running_mean"], sd[f"{name}.1.running_var"], sd[f"{name}.1.weight"],
                         sd[f"{name}.1.bias"], False, 0.0, 1e-5)
        return F.relu(t)

    def sub(prefix):
        return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

    sa_conv = cbr(ref_pam(cbr(x, "conv5a"), sub("sa.")), "conv51")
    sc_conv = cbr(ref_cam(cbr(x, "conv5c"), sub("sc.")), "conv52")
    sa_output = F.conv2d(sa_conv, sd["conv6.1.weight"], sd["conv6.1.bias"])
    sc_output = F.conv2d(sc_conv, sd["conv7.1.weight"], sd["conv7.1.bias"])
    sasc_output = F.conv2d(sa_conv + sc_conv, sd["conv8.1.weight"], sd["conv8.1.bias"])
    return sasc_output, sa_output, sc_output


# ----------------------------------------------------------------------------------------------------------
# official-named random state_dicts


def _normal(shape, g, std, dtype):
    # values exact in float32, so from_official (which builds a float32 module) loses nothing in float64 tests
    return (std * torch.randn(shape, generator=g, dtype=F64)).float().to(dtype)


def official_pam_sd(c, seed=0, dtype=F64, gamma=0.75):
    g = torch.Generator().manual_seed(seed)
    r = c // 8
    return {
        "gamma": torch.tensor([gamma], dtype=dtype),
        "query_conv.weight": _normal((r, c, 1, 1), g, 1 / math.sqrt(c), dtype),
        "query_conv.bias": _normal((r,), g, 0.1, dtype),
        "key_conv.weight": _normal((r, c, 1, 1), g, 1 / math.sqrt(c), dtype),
        "key_conv.bias": _normal((r,), g, 0.1, dtype),
        "value_conv.weight": _normal((c, c, 1, 1), g, 1 / math.sqrt(c), dtype),
        "value_conv.bias": _normal((c,), g, 0.1, dtype),
    }


def official_head_sd(cin, cout, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    inter = cin // 4
    sd = {}

    def cbr(name, ci):
        sd[f"{name}.0.weight"] = _normal((inter, ci, 3, 3), g, 1 / math.sqrt(9 * ci), dtype)
        sd[f"{name}.1.weight"] = (0.5 + torch.rand(inter, generator=g)).to(dtype)
        sd[f"{name}.1.bias"] = _normal((inter,), g, 0.1, dtype)
        sd[f"{name}.1.running_mean"] = _normal((inter,), g, 0.1, dtype)
        sd[f"{name}.1.running_var"] = (0.5 + torch.rand(inter, generator=g)).to(dtype)
        sd[f"{name}.1.num_batches_tracked"] = torch.tensor(3)

    cbr("conv5a", cin)
    cbr("conv5c", cin)
    sd.update({f"sa.{k}": v for k, v in official_pam_sd(inter, seed + 1, dtype, gamma=0.875).items()})
    sd["sc.gamma"] = torch.tensor([0.625], dtype=dtype)
    cbr("conv51", inter)
    cbr("conv52", inter)
    for name in ("conv6", "conv7", "conv8"):
        sd[f"{name}.1.weight"] = _normal((cout, inter, 1, 1), g, 1 / math.sqrt(inter), dtype)
        sd[f"{name}.1.bias"] = _normal((cout,), g, 0.1, dtype)
    return sd


def pam_sd_of(m: PositionAttention) -> dict[str, torch.Tensor]:
    """The official-named state_dict of one of our PAMs."""
    return {"gamma": m.gamma.detach(), **{f"{k}_conv.{p}": getattr(getattr(m, k), p).detach()
                                          for k in ("query", "key", "value") for p in ("weight", "bias")}}


def assert_close(got, want, dtype):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


def gate_calls(module):
    """Record every output of the module's Gate submodules (the attention blocks)."""
    seen = []
    for m in module.modules():
        if isinstance(m, Gate):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().clone()))
    return seen


# ----------------------------------------------------------------------------------------------------------
# the kernel and its plain twin


# ----------------------------------------------------------------------------------------------------------
# position attention


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("hw", SIZES, ids=str)
@pytest.mark.parametrize("blocks", [{}, {"query_block": 4}, {"block_budget": 1}, {"block_budget": None}],
                         ids=["default", "query_block4", "budget1", "one_block"])
def test_pam_matches_official_formula(dtype, hw, blocks):
    c = 32
    sd = official_pam_sd(c, seed=1, dtype=dtype)
    m = plugattn.from_official("danet_pam", sd, in_dim=c).to(dtype).eval()
    for k, v in blocks.items():
        setattr(m, k, v)
    x = rand(2, c, *hw, seed=2, dtype=dtype)
    want = ref_pam(x, sd)
    with torch.no_grad():
        assert_close(m(x), want, dtype)
        y = m(x.to(memory_format=torch.channels_last))
    assert_close(y, want, dtype)
    if hw != (1, 1):
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("grad_checkpoint", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pam_gradients_match_official_formula(grad_checkpoint, channels_last):
    """Backward through the blocks (stored or recomputed) equals backward through the explicit formula."""
    c, h, w = 16, 6, 7
    sd = {k: v.clone().requires_grad_() for k, v in official_pam_sd(c, seed=8).items()}
    m = plugattn.from_official("danet_pam", {k: v.detach() for k, v in sd.items()}, in_dim=c).double()
    m.query_block, m.grad_checkpoint = 5, grad_checkpoint
    x = rand(2, c, h, w, seed=9, dtype=F64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    seed = rand(2, c, h, w, seed=10, dtype=F64)
    (m(x1) * seed).sum().backward()
    (ref_pam(x2, sd) * seed).sum().backward()
    assert_close(x1.grad, x2.grad, F64)
    names = {"gamma": "gamma", "query.weight": "query_conv.weight", "query.bias": "query_conv.bias",
             "key.weight": "key_conv.weight", "key.bias": "key_conv.bias",
             "value.weight": "value_conv.weight", "value.bias": "value_conv.bias"}
    for ours, theirs in names.items():
        assert_close(m.get_parameter(ours).grad, sd[theirs].grad, F64)


def test_pam_trainable_gamma_with_frozen_projections():
    c = 16
    sd = official_pam_sd(c, seed=11)
    m = plugattn.from_official("danet_pam", sd, in_dim=c).double()
    m.query_block = 5
    for name, p in m.named_parameters():
        p.requires_grad_(name == "gamma")
    x = rand(2, c, 6, 7, seed=12, dtype=F64)
    seed = rand(2, c, 6, 7, seed=13, dtype=F64)
    (m(x) * seed).sum().backward()
    gamma = sd["gamma"].clone().requires_grad_()
    (ref_pam(x, {**sd, "gamma": gamma}) * seed).sum().backward()
    assert_close(m.gamma.grad, gamma.grad, F64)


def test_pam_blocks_and_budget():
    """The block size follows the budget (or query_block), the gate sees every block, no block exceeds it."""
    c, h, w, b = 16, 13, 17, 2
    n = h * w
    x = rand(b, c, h, w, seed=3)
    budget = 10 * b * n * 4 + 5  # room for 10 query rows in float32
    m = PositionAttention(c, block_budget=budget).eval()
    seen = gate_calls(m)
    with torch.no_grad():
        m(x)
    assert [t.shape for t in seen] == [torch.Size([b, 10, n])] * 22 + [torch.Size([b, 1, n])]
    assert all(t.numel() * t.element_size() <= budget for t in seen)
    seen.clear()
    m.query_block = 100
    with torch.no_grad():
        m(x)
    assert [t.shape[1] for t in seen] == [100, 100, 21]
    seen.clear()
    m.query_block = None
    m.block_budget = 2**26
    with torch.no_grad():
        m(x)
    assert [t.shape for t in seen] == [torch.Size([b, n, n])]  # small maps: one block, the official formula
    torch.testing.assert_close(seen[0].sum(-1), torch.ones(b, n))


def test_pam_never_materialises_the_full_matrix():
    """No tensor produced during the forward pass is as large as the (H·W)² attention matrix."""
    b, c, h, w = 2, 64, 40, 40
    full = b * (h * w) ** 2 * 4  # 25 MiB
    budget = 2**20
    m = PositionAttention(c, block_budget=budget).eval()
    with torch.no_grad():
        m.gamma.fill_(0.5)
    x = rand(b, c, h, w, seed=4)
    with torch.no_grad(), LargestTensor() as probe:
        y = m(x)
    assert probe.largest <= max(budget, x.numel() * x.element_size()) < full
    with torch.no_grad(), LargestTensor() as probe:
        want = ref_pam(x, pam_sd_of(m))
    assert probe.largest >= full  # the probe does see the explicit formula's matrix
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)


def test_pam_memory_20x_below_the_explicit_matrix_at_128():
    """At 128×128, C = 512, batch 2 (on the meta device: shapes only), the forward pass holds at most 1/20 of
    the memory of the one-block form (the explicit (H·W)² softmax), counted as peak live tensor storage."""
    x = torch.empty(2, 512, 128, 128, device="meta")
    peaks = {}
    for budget in (None, PositionAttention(8).block_budget):
        m = PositionAttention(512, block_budget=budget, device="meta").eval()
        with torch.no_grad(), PeakLive() as probe, LargestTensor() as largest:
            y = m(x)
        assert y.shape == x.shape
        peaks[budget] = probe.peak, largest.largest
    (explicit, explicit_largest), (ours, ours_largest) = peaks.values()
    assert explicit_largest == 2 * (128 * 128) ** 2 * 4  # the probe sees the whole matrix of the plain form
    assert 20 * ours <= explicit and 20 * ours_largest <= explicit_largest


def test_pam_attention_rows():
    c, h, w = 32, 7, 5
    sd = official_pam_sd(c, seed=5)
    m = plugattn.from_official("danet_pam", sd, in_dim=c).double().eval()
    x = rand(2, c, h, w, seed=6, dtype=F64)
    full = ref_pam_attention(x, sd)  # (B, N, N)
    index = [0, 17, 34, 17]
    seen = gate_calls(m)
    with torch.no_grad():
        assert_close(m.attention_rows(x, index), full[:, index], F64)
        assert_close(m.attention_rows(x, 12), full[:, [12]], F64)
        assert_close(m.attention_rows(x, torch.tensor([[3, 4]])), full[:, [3, 4]], F64)
    assert len(seen) == 3 and seen[0].shape == (2, 4, h * w)


def test_pam_gamma0_is_identity_and_init():
    m = PositionAttention(64)
    assert m.gamma.shape == (1,) and m.gamma.item() == 0.0
    assert m.query.out_channels == m.key.out_channels == 8 and m.value.out_channels == 64
    assert m.query.bias is not None and m.value.bias is not None
    assert [n for n, _ in m.named_parameters()][0] == "gamma"  # official state_dict order: gamma first
    x = rand(2, 64, 9, 6, seed=7)
    assert torch.equal(m(x), x)
    with torch.no_grad():
        m.gamma.fill_(1.0)
    m.reset_parameters()
    assert m.gamma.item() == 0.0


def test_pam_widths_and_errors():
    assert PositionAttention(15).rd_channels == 1  # floor, as in_dim // 8
    assert PositionAttention(64, rd_ratio=1 / 4).rd_channels == 16
    assert PositionAttention(4, rd_channels=2).rd_channels == 2
    with pytest.raises(ValueError, match=r"PositionAttention.*channels.*rd_ratio"):
        PositionAttention(7)
    with pytest.raises(ValueError, match="PositionAttention.*channels"):
        plugattn.create("danet_pam", 4)
    with pytest.raises(ValueError, match="rd_ratio"):
        PositionAttention(16, rd_ratio=0)
    with pytest.raises(ValueError, match="query_block"):
        PositionAttention(16, query_block=0)
    with pytest.raises(ValueError, match="block_budget"):
        PositionAttention(16, block_budget=-1)
    with pytest.raises(ValueError, match="DualAttention|PositionAttention"):
        DualAttention(7)


def test_pam_compile_matches_eager_blocks():
    m = PositionAttention(16, query_block=8).eval()
    with torch.no_grad():
        m.gamma.fill_(0.9)
    x = rand(2, 16, 5, 7, seed=11)
    compiled = torch.compile(m, fullgraph=True, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=1e-5)


def test_pam_export_dynamic_shapes_with_blocks():
    """Exported graphs hold the one-block form, so any size runs, whatever the block settings."""
    from torch.export import Dim

    m = PositionAttention(16, query_block=4).eval()
    with torch.no_grad():
        m.gamma.fill_(0.75)
    h, w = Dim("h", min=1, max=256), Dim("w", min=1, max=256)
    ep = torch.export.export(m, (rand(2, 16, 7, 9, seed=22),), dynamic_shapes={"x": {2: h, 3: w}})
    for hw in [(11, 4), (1, 1), (13, 17)]:
        x = rand(2, 16, *hw, seed=23)
        with torch.no_grad():
            torch.testing.assert_close(ep.module()(x), m(x), atol=1e-6, rtol=1e-6)


def test_pam_onnx_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    m = PositionAttention(16, query_block=10).eval()
    with torch.no_grad():
        m.gamma.fill_(0.75)
    x = rand(2, 16, 7, 9, seed=21)
    path = tmp_path / "pam.onnx"
    torch.onnx.export(m, (x,), str(path), dynamo=True)
    sess = ort.InferenceSession(str(path))
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), m(x), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# channel attention, dual attention


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("hw", SIZES, ids=str)
def test_cam_matches_official_formula(dtype, hw):
    c = 24
    sd = {"gamma": torch.tensor([0.875], dtype=dtype)}
    m = plugattn.from_official("danet_cam", sd, in_dim=c).to(dtype)
    # a small input keeps the softmax soft (with unit-scale input it is nearly one-hot)
    x = 0.1 * rand(2, c, *hw, seed=12, dtype=dtype)
    want = ref_cam(x, sd)
    with torch.no_grad():
        assert_close(m(x), want, dtype)
        y = m(x.to(memory_format=torch.channels_last))
    assert_close(y, want, dtype)
    if hw != (1, 1):
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_cam_gradient_matches_official_formula():
    sd = {"gamma": torch.tensor([0.5], dtype=F64)}
    m = plugattn.from_official("danet_cam", sd, in_dim=12).double()
    x = 0.2 * rand(2, 12, 5, 3, seed=30, dtype=F64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    seed = rand(2, 12, 5, 3, seed=31, dtype=F64)
    (m(xa) * seed).sum().backward()
    (ref_cam(xb, sd) * seed).sum().backward()
    assert_close(xa.grad, xb.grad, F64)


def test_cam_sign_flip_quirk():
    """The official rowmax − energy puts the largest weight on the *least* correlated channel."""
    m = DANetChannelAttention(3)
    seen = gate_calls(m)
    base = rand(1, 1, 4, 4, seed=13)
    x = torch.cat([base, 0.9 * base, -base], dim=1) * 0.5  # channel 2 is anti-correlated with 0 and 1
    with torch.no_grad():
        m(x)
    attn = seen[0][0]  # (C, C)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3))
    assert attn[0].argmax() == 2 and attn[1].argmax() == 2
    assert attn[2].argmax() != 2


def test_cam_gamma0_is_identity_and_alias():
    m = DANetChannelAttention(16)
    assert m.gamma.item() == 0.0 and [n for n, _ in m.named_parameters()] == ["gamma"]
    x = rand(2, 16, 5, 4, seed=14)
    assert torch.equal(m(x), x)
    assert ChannelAttention is DANetChannelAttention and plugattn.get("danet_cam") is DANetChannelAttention


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_dual_attention_is_the_sum_of_both_residual_branches(dtype):
    c, h, w = 32, 7, 5
    pam_sd = official_pam_sd(c, seed=15, dtype=dtype)
    cam_sd = {"gamma": torch.tensor([0.375], dtype=dtype)}
    m = DualAttention(c, query_block=6).to(dtype)
    ours = {f"pam.{k.replace('_conv', '')}": v for k, v in pam_sd.items()} | {"cam.gamma": cam_sd["gamma"]}
    m.load_state_dict(ours)
    x = 0.3 * rand(2, c, h, w, seed=16, dtype=dtype)
    want = x + (ref_pam(x, pam_sd) - x) + (ref_cam(x, cam_sd) - x)  # y = x + γ_p·PAM_out + γ_c·CAM_out
    with torch.no_grad():
        assert_close(m(x), want, dtype)
        y = m(x.to(memory_format=torch.channels_last))
    assert_close(y, want, dtype)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_dual_attention_identity_at_init_and_gates():
    m = DualAttention(16)
    x = rand(2, 16, 6, 6, seed=17)
    assert torch.equal(m(x), x)
    assert sorted(n for n, _ in m.named_parameters()) == sorted(
        ["pam.gamma", "pam.query.weight", "pam.query.bias", "pam.key.weight", "pam.key.bias",
         "pam.value.weight", "pam.value.bias", "cam.gamma"])
    seen = gate_calls(m)
    with torch.no_grad():
        m(x)
    assert [t.shape for t in seen] == [(2, 36, 36), (2, 16, 16)]


# ----------------------------------------------------------------------------------------------------------
# head


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("hw", SIZES, ids=str)
@pytest.mark.parametrize("norm_layer", ["BatchNorm2d", nn.BatchNorm2d], ids=["str", "cls"])
def test_head_matches_official_formula(dtype, hw, norm_layer):
    cin, cout = 64, 5
    sd = official_head_sd(cin, cout, seed=18, dtype=dtype)
    m = plugattn.from_official("danet_head", sd, in_channels=cin, out_channels=cout, norm_layer=norm_layer)
    m = m.to(dtype).eval()
    x = rand(2, cin, *hw, seed=19, dtype=dtype)
    want = ref_head(x, sd)
    with torch.no_grad():
        got = m(x)
        assert isinstance(got, tuple) and len(got) == 3
        for a, b in zip(got, want):
            assert a.shape == (2, cout, *hw)
            assert_close(a, b, dtype)
        m.pam.block_budget = 1  # one query row per block
        for a, b in zip(m(x.to(memory_format=torch.channels_last)), want):
            assert_close(a, b, dtype)


def test_head_gradient_matches_official_formula():
    sd = official_head_sd(32, 3, seed=24)
    m = plugattn.from_official("danet_head", sd, in_channels=32, out_channels=3, norm_layer="BatchNorm2d")
    m = m.double().eval()
    m.pam.query_block = 7
    x = rand(2, 32, 5, 6, seed=25, dtype=F64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    seeds = [rand(2, 3, 5, 6, seed=26 + i, dtype=F64) for i in range(3)]
    sum((t * s).sum() for t, s in zip(m(xa), seeds)).backward()
    sum((t * s).sum() for t, s in zip(ref_head(xb, sd), seeds)).backward()
    assert_close(xa.grad, xb.grad, F64)


def test_head_structure_and_defaults():
    m = DANetHead(128)
    assert m.out_channels == 128
    assert m.pam.channels == 32 and m.pam.rd_channels == 4  # inter = C/4, query/key = C/32
    assert m.pam_in.conv.bias is None and m.pam_out.conv.kernel_size == (3, 3)
    assert isinstance(m.pam_in.bn, nn.BatchNorm2d) and isinstance(m.pam_in.act, nn.ReLU)
    assert m.cls_fused.bias is not None and isinstance(m.drop, nn.Dropout2d) and m.drop.p == 0.1
    assert isinstance(m.cam, DANetChannelAttention)
    info = plugattn.info("danet_head")
    assert info.kind == "head" and info.preserves_shape is False
    sd = official_head_sd(128, 7)
    assert len(sd) == len(m.state_dict())
    plugattn.from_official("danet_head", sd, in_channels=128, out_channels=7, norm_layer="SyncBatchNorm")
    assert DANetHead(16).pam.rd_channels == 1  # the official head crashes below 32 channels
    with pytest.raises(ValueError, match="DANetHead.*channels"):
        DANetHead(3)
    with pytest.raises(ValueError, match="out_channels"):
        DANetHead(64, out_channels=0)


def test_head_training_mode_runs_dropout():
    m = DANetHead(32, out_channels=3).train()
    x = rand(4, 32, 6, 6, seed=20)
    fused, p, c = m(x)
    assert fused.shape == p.shape == c.shape == (4, 3, 6, 6)
    m.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(m(x), m(x)))


# ----------------------------------------------------------------------------------------------------------
# ordinary nn.Module: fx, hooks, repr

MODULES = {
    "danet_pam": lambda: PositionAttention(32),
    "danet_pam_blocks": lambda: PositionAttention(32, query_block=6),
    "danet_cam": lambda: DANetChannelAttention(32),
    "danet": lambda: DualAttention(32, query_block=6),
    "danet_head": lambda: DANetHead(32, out_channels=5),
}


@pytest.mark.parametrize("name", MODULES)
def test_fx_symbolic_trace_equals_eager(name):
    m = randomize_(MODULES[name](), seed=3, scale=0.3).double().eval()
    gm = torch.fx.symbolic_trace(m)
    for hw in [(7, 5), (1, 1), (9, 8)]:
        x = rand(2, 32, *hw, seed=40, dtype=F64)
        with torch.no_grad():
            for a, b in zip(as_tuple(gm(x)), as_tuple(m(x))):
                assert_close(a, b, F64)


@pytest.mark.parametrize("name", MODULES)
def test_every_parameter_owning_leaf_is_called(name):
    m = randomize_(MODULES[name](), seed=4).eval()
    leaves = {n for n, sub in m.named_modules() if not list(sub.children()) and list(sub.parameters(False))}
    assert leaves or name == "danet_cam"
    fired = set()
    for n, sub in m.named_modules():
        if n in leaves:
            sub.register_forward_hook(lambda mod, i, o, n=n: fired.add(n))
    with torch.no_grad():
        m(rand(2, 32, 7, 5, seed=41))
    assert fired == leaves


def test_extra_repr():
    assert "channels=64, rd_channels=8, block_budget=8388608" in repr(PositionAttention(64))
    assert "query_block=5" in repr(PositionAttention(64, query_block=5))
    assert "grad_checkpoint=True" in repr(PositionAttention(64, grad_checkpoint=True))
    assert "DANetChannelAttention(\n  channels=32" in repr(DANetChannelAttention(32))
    assert "DualAttention(\n  channels=32" in repr(DualAttention(32))
    assert "channels=64, out_channels=5, inter_channels=16" in repr(DANetHead(64, out_channels=5))
