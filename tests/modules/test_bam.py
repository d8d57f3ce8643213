"""BAM (Bottleneck Attention Module) against an independent re-derivation of the official code.

The reference below follows Jongchan/attention-module ``MODELS/bam.py`` step by step on an official-named
state_dict: ``ChannelGate`` (avg_pool2d over an H×H window, Flatten, Linear, BatchNorm1d, ReLU, Linear),
``SpatialGate`` (1×1 reduce, BN, ReLU, two dilated 3×3 convs with BN and ReLU, 1×1 to one map), and
``att = 1 + σ(M_c · M_s)``, ``out = att · x``. Modules are built through ``plugattn.from_official``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import TOL, param_leaves, rand, randomize_
from plugattn.modules.bam import BottleneckAttention

F64 = torch.float64
CL = torch.channels_last


def close(a, b, dtype=F64):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def bn_shapes(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (n,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def bam_official_sd(c: int, r: int = 16, seed: int | None = None) -> dict[str, torch.Tensor]:
    """A random official ``BAM(c)`` state_dict; float32 numbers held in float64 (lossless in a float32 module)."""
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
    g = torch.Generator().manual_seed(c if seed is None else seed)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = (0.5 + torch.rand(shape, generator=g)).double()
        else:
            sd[k] = (0.5 * torch.randn(shape, generator=g)).double()
    return sd


def bam_ref(sd, x, combine="mul", official_pool=True, training=False):
    """Official BAM forward: Linear-BN1d-ReLU-Linear on the pooled x; 1×1, two dilated 3×3 (d = 4), 1×1."""
    c_, s_ = "channel_att.gate_c.", "spatial_att.gate_s."

    def bn(t, prefix):
        return F.batch_norm(t, sd[f"{prefix}.running_mean"].clone(), sd[f"{prefix}.running_var"].clone(),
                            sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], training=training, eps=1e-5)

    if official_pool:  # official avg_pool2d(x, H, stride=H): the global mean for square inputs
        pooled = F.avg_pool2d(x, x.shape[2], stride=x.shape[2]).flatten(1)
    else:
        pooled = x.mean((2, 3))
    h = F.linear(pooled, sd[c_ + "gate_c_fc_0.weight"], sd[c_ + "gate_c_fc_0.bias"])
    h = F.relu(bn(h, c_ + "gate_c_bn_1"))
    mc = F.linear(h, sd[c_ + "gate_c_fc_final.weight"], sd[c_ + "gate_c_fc_final.bias"])
    mc = mc.unsqueeze(2).unsqueeze(3).expand_as(x)
    t = F.conv2d(x, sd[s_ + "gate_s_conv_reduce0.weight"], sd[s_ + "gate_s_conv_reduce0.bias"])
    t = F.relu(bn(t, s_ + "gate_s_bn_reduce0"))
    for i in range(2):
        t = F.conv2d(t, sd[s_ + f"gate_s_conv_di_{i}.weight"], sd[s_ + f"gate_s_conv_di_{i}.bias"], padding=4,
                     dilation=4)
        t = F.relu(bn(t, s_ + f"gate_s_bn_di_{i}"))
    ms = F.conv2d(t, sd[s_ + "gate_s_conv_final.weight"], sd[s_ + "gate_s_conv_final.bias"]).expand_as(x)
    att = 1 + torch.sigmoid(mc * ms if combine == "mul" else mc + ms)
    return att * x


@pytest.mark.parametrize("c", [32, 64])
def test_bam_matches_official_on_square_inputs(c):
    sd = bam_official_sd(c)
    m = plugattn.from_official("bam", sd, gate_channel=c).double().eval()
    for n, s in [(2, 8), (1, 13), (3, 1)]:
        x = rand(n, c, s, s, seed=10, dtype=F64)
        with torch.no_grad():
            close(m(x), bam_ref(sd, x))
            y_cl = m(x.contiguous(memory_format=CL))
            close(y_cl, bam_ref(sd, x))
            assert y_cl.is_contiguous(memory_format=CL)
    m32 = plugattn.from_official("bam", {k: v.float() for k, v in sd.items()}, gate_channel=c).eval()
    x = rand(2, c, 9, 9, seed=11)
    with torch.no_grad():
        torch.testing.assert_close(m32(x), bam_ref(sd, x.double()).float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 32, 7, 5), (1, 32, 1, 9), (2, 32, 13, 17)], ids=str)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL], ids=str)
def test_bam_non_square_gradients_and_add_is_the_paper(shape, memory_format):
    """Non-square inputs: the global mean (the official window covers only the first H columns); input gradients."""
    sd = bam_official_sd(32)
    m = plugattn.from_official("bam", sd, gate_channel=32).double().eval()
    x = rand(*shape, seed=12, dtype=F64).contiguous(memory_format=memory_format)
    for combine in ("mul", "add"):
        m.combine = combine
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = m(x1), bam_ref(sd, x2, combine=combine, official_pool=False)
        close(y1, y2)
        assert y1.is_contiguous(memory_format=memory_format)
        g = rand(*shape, seed=13, dtype=F64)
        (y1 * g).sum().backward()
        (y2 * g).sum().backward()
        close(x1.grad, x2.grad)


def test_bam_train_mode_matches_official():
    """Train mode: batch statistics in every BN, the channel branch's over the batch of pooled vectors."""
    sd = bam_official_sd(32)
    m = plugattn.from_official("bam", sd, gate_channel=32).double().train()
    x = rand(4, 32, 8, 8, seed=14, dtype=F64)
    with torch.no_grad():
        close(m(x), bam_ref(sd, x, training=True))
    assert not torch.equal(m.channel[0].bn.running_mean, sd["channel_att.gate_c.gate_c_bn_1.running_mean"])


def test_bam_init_follows_official_resnet():
    m = plugattn.create("bam", 64)
    assert all(float(b.detach().abs().sum()) == 0 for n, b in m.named_parameters() if n.endswith("bias"))
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert len(bns) == 4 and all(torch.all(b.weight == 1) for b in bns)
    w = m.spatial[1].conv.weight  # Kaiming normal, fan_out = 4·9: std ≈ sqrt(2 / 36)
    assert abs(w.std().item() - math.sqrt(2 / 36)) < 0.1


def test_bam_state_dict_keys_and_widths():
    m = BottleneckAttention(64)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert shapes["channel.0.conv.weight"] == (4, 64, 1, 1) and shapes["channel.1.weight"] == (64, 4, 1, 1)
    assert shapes["spatial.0.conv.weight"] == (4, 64, 1, 1) and shapes["spatial.3.weight"] == (1, 4, 1, 1)
    assert shapes["spatial.1.conv.weight"] == (4, 4, 3, 3) and shapes["spatial.2.bn.running_var"] == (4,)
    assert {k.split(".")[0] for k in shapes} == {"channel", "spatial"}
    assert BottleneckAttention(8).rd_channels == 1  # ⌊8/16⌋ floored at 1
    assert BottleneckAttention(64, rd_channels=5).channel[0].conv.out_channels == 5
    m2 = BottleneckAttention(64, num_layers=2, num_dilated=1, dilation=2)
    assert len(m2.channel) == 3 and len(m2.spatial) == 3 and m2.spatial[1].conv.dilation == (2, 2)
    assert "channels=64, rd_channels=4, num_layers=2, num_dilated=1, dilation=2, combine='mul'" in repr(m2)


@pytest.mark.parametrize("kwargs", [{}, {"combine": "add", "num_layers": 2, "num_dilated": 0}], ids=str)
def test_fx_trace_and_hooks(kwargs):
    m = randomize_(BottleneckAttention(32, **kwargs)).double().eval()
    gm = torch.fx.symbolic_trace(m)
    leaves = list(param_leaves(m))
    assert leaves
    fired: list[str] = []
    for name in leaves:
        m.get_submodule(name).register_forward_hook(lambda *_, name=name: fired.append(name))
    for n, h, w in [(2, 7, 5), (1, 1, 1)]:
        x = rand(n, 32, h, w, seed=h, dtype=F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert sorted(fired) == sorted(leaves)


def test_bad_arguments():
    with pytest.raises(ValueError, match="combine"):
        plugattn.create("bam", 64, combine="max")
    with pytest.raises(ValueError, match="BottleneckAttention.*num_dilated"):
        BottleneckAttention(64, num_dilated=-1)
    with pytest.raises(ValueError, match="BottleneckAttention.*rd_ratio"):
        BottleneckAttention(64, rd_ratio=0)
    with pytest.raises(ValueError, match="BottleneckAttention.*rd_channels"):
        BottleneckAttention(64, rd_channels=0)
    with pytest.raises(ValueError, match="BottleneckAttention.*64 channels"):
        BottleneckAttention(64)(rand(1, 9, 4, 4))
