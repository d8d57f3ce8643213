"""Plain reference formulations of every registered module, written from the papers and the official code.

Each reference follows the structure of the official implementation (SPEC.md; the official repositories
named in each module's docstring): explicit (H·W) × (H·W) matrices for position attention and non-local
blocks, permute-based Triplet Attention, adaptive pooling layers (``F.adaptive_avg_pool2d`` /
``F.adaptive_max_pool2d``) for every global or axial pooling, ``torch.cat`` + ``torch.split`` in coordinate
attention and EMA, one full-size temporary per step. They are slow and memory-hungry on purpose: they are the
baselines that ``benchmarks/targets.py`` measures against, and ``tests/test_reference.py`` checks that every
plugattn module (with its fast paths) computes the same function.

    reference(name, module, x)   # the output of plugattn module ``module`` (registry key ``name``) on x,
                                 # computed from the module's own parameters and buffers

The references read the module's weights (``module.fc1.weight``, BatchNorm running statistics, ...) and its
configuration attributes (pool types, groups, strides), and apply them with ``torch.nn.functional`` calls;
they never call the module's forward or its submodules' forwards. BatchNorm uses the running statistics in
eval mode and the batch statistics in training mode, without updating the running statistics. Settings the
reference does not cover raise ``NotImplementedError`` (the tests use the registered defaults).

A new module registered in plugattn must add its reference here: ``tests/test_reference.py`` fails for a
registered name without one.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["reference", "REFERENCES", "ReferenceModule", "build_reference", "has_reference", "zpool_parts"]

REFERENCES: dict[str, Callable[[nn.Module, Tensor], object]] = {}


def _ref(*names: str):
    def deco(fn):
        for n in names:
            REFERENCES[n] = fn
        return fn

    return deco


def has_reference(name: str) -> bool:
    return name in REFERENCES


def reference(name: str, module: nn.Module, x: Tensor):
    """The plain formulation of registered module ``name``, evaluated with ``module``'s weights on ``x``."""
    if name not in REFERENCES:
        raise KeyError(f"benchmarks/reference.py has no reference for {name!r}: add one (see the file docstring)")
    return REFERENCES[name](module, x)


class ReferenceModule(nn.Module):
    """Wraps a plugattn module; ``forward`` runs the plain reference with its weights (for timing and memory)."""

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.inner = module

    def forward(self, x: Tensor):
        return reference(self.name, self.inner, x)


def build_reference(name: str, channels: int, **kwargs) -> ReferenceModule:
    """``ReferenceModule(name, plugattn.create(name, channels, **kwargs))`` (a factory for subprocess measurements)."""
    import plugattn

    return ReferenceModule(name, plugattn.create(name, channels, **kwargs))


# ---------------------------------------------------------------------------------------------------------------
# helpers (plain functional building blocks)


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise NotImplementedError(f"reference: {what} is not covered by benchmarks/reference.py")


def _is(module: nn.Module | None, cls: type) -> bool:
    return module is not None and type(module) is cls


def _bn(t: Tensor, bn: nn.Module) -> Tensor:
    """BatchNorm from the module's statistics (eval) or the batch (train), without updating the statistics."""
    if bn is None or isinstance(bn, nn.Identity):
        return t
    _need(isinstance(bn, nn.modules.batchnorm._BatchNorm), f"norm layer {type(bn).__name__}")
    use_batch = bn.training or bn.running_mean is None
    return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, use_batch, 0.0, bn.eps)


def _conv(t: Tensor, conv: nn.Conv2d, **kw) -> Tensor:
    """A Conv2d's weights applied with F.conv2d and the conv's own stride/padding/dilation/groups."""
    args = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}
    args.update(kw)
    return F.conv2d(t, conv.weight, conv.bias, **args)


def _linear(t: Tensor, conv_or_linear: nn.Module) -> Tensor:
    """A 1×1 Conv2d or a Linear as ``F.linear`` on (N, C) vectors (the official Linear layers)."""
    w = conv_or_linear.weight
    return F.linear(t, w.reshape(w.shape[0], -1), conv_or_linear.bias)


def _act(t: Tensor, act: nn.Module, default: str) -> Tensor:
    """Activations written out: relu, relu6, hard swish (t·ReLU6(t+3)/6), sigmoid, hard sigmoid; identity."""
    kind = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hswish", nn.Sigmoid: "sigmoid",
            nn.Hardsigmoid: "hsigmoid", nn.Identity: "identity"}.get(type(act), None)
    if act is None:
        kind = default
    _need(kind is not None, f"activation {type(act).__name__}")
    if kind == "relu":
        return F.relu(t)
    if kind == "relu6":
        return F.relu6(t)
    if kind == "hswish":  # official h_swish: x * h_sigmoid(x)
        return t * (F.relu6(t + 3) / 6)
    if kind == "sigmoid":
        return torch.sigmoid(t)
    if kind == "hsigmoid":  # official h_sigmoid: ReLU6(x + 3) / 6
        return F.relu6(t + 3) / 6
    return t


def _gate(t: Tensor, gate: nn.Module, default: str = "sigmoid") -> Tensor:
    """The module's Gate (a plugattn ``Gate`` wrapping an activation), written out."""
    fn = getattr(gate, "fn", gate)
    if isinstance(fn, nn.Softmax):
        return torch.softmax(t, dim=fn.dim)
    return _act(t, fn, default)


def _gap(x: Tensor) -> Tensor:
    return F.adaptive_avg_pool2d(x, 1)  # (N, C, 1, 1)


def _gmp(x: Tensor) -> Tensor:
    return F.adaptive_max_pool2d(x, 1)  # (N, C, 1, 1)


# ---------------------------------------------------------------------------------------------------------------
# channel gates


@_ref("se")
def _se(m, x):
    """timm legacy / Caffe SE: GAP → FC C→C/r (bias) → ReLU → FC C/r→C (bias) → sigmoid → x·s."""
    n, c = x.shape[:2]
    s = _gap(x)
    if m.add_maxpool:
        s = 0.5 * s + 0.5 * _gmp(x)
    z = _linear(s.view(n, c), m.fc1)
    if not isinstance(m.norm, nn.Identity):
        z = _bn(z.view(n, -1, 1, 1), m.norm).view(n, -1)
    z = _linear(_act(z, m.act, "relu"), m.fc2)
    return x * _gate(z, m.gate).view(n, c, 1, 1).expand_as(x)


@_ref("ese")
def _ese(m, x):
    """vovnet eSEModule: GAP → 1×1 conv C→C (bias) → hard sigmoid → x·s."""
    s = _gap(x)
    if m.add_maxpool:
        s = 0.5 * s + 0.5 * _gmp(x)
    return x * _gate(_conv(s, m.fc), m.gate, "hsigmoid")


@_ref("eca")
def _eca(m, x):
    """ECANet eca_layer: GAP → (N, 1, C) → conv1d (zero padding, no bias) → sigmoid → x·y."""
    y = _gap(x)  # (N, C, 1, 1)
    k = m.conv.weight.shape[-1]
    y = F.conv1d(y.squeeze(-1).transpose(-1, -2), m.conv.weight, m.conv.bias, padding=(k - 1) // 2)
    y = _gate(y.transpose(-1, -2).unsqueeze(-1), m.gate)
    return x * y.expand_as(x)


@_ref("ceca")
def _ceca(m, x):
    """timm CecaModule: GAP → circular pad (F.pad mode="circular") → conv1d (no padding) → sigmoid → x·y."""
    y = _gap(x).view(x.shape[0], 1, -1)  # (N, 1, C)
    p = (m.conv.weight.shape[-1] - 1) // 2
    y = F.conv1d(F.pad(y, (p, p), mode="circular"), m.conv.weight, m.conv.bias)
    return x * _gate(y.view(x.shape[0], -1, 1, 1), m.gate).expand_as(x)


def _cbam_channel_gate(g, x):
    """Jongchan ChannelGate: each pool through the shared MLP (Linear+bias, ReLU, Linear+bias), logits summed."""
    n, c, h, w = x.shape
    att = None
    for pool in g.pool_types:
        if pool == "avg":
            p = _gap(x)
        elif pool == "max":
            p = _gmp(x)
        elif pool == "lp":
            p = F.lp_pool2d(x, 2, (h, w), stride=(h, w))
        else:  # "lse": logsumexp_2d, with the max subtracted and added back
            flat = x.view(n, c, -1)
            s, _ = torch.max(flat, dim=2, keepdim=True)
            p = s + (flat - s).exp().sum(dim=2, keepdim=True).log()
        raw = _linear(_act(_linear(p.reshape(n, c), g.fc1), g.act, "relu"), g.fc2)
        att = raw if att is None else att + raw
    return x * _gate(att, g.gate).unsqueeze(2).unsqueeze(3).expand_as(x)


def zpool_parts(zg: nn.Module) -> tuple[nn.Conv2d, nn.Module | None]:
    """The (conv, norm) of a plugattn Z-pool gate (CBAM spatial gate, Triplet branch)."""
    if isinstance(zg.conv, nn.Conv2d):  # conv and norm as siblings
        return zg.conv, getattr(zg, "bn", None)
    return zg.conv.conv, getattr(zg.conv, "bn", None)  # a ConvNormAct


def _zpool_conv_gate(zg, x):
    """Official SpatialGate / AttentionGate: ChannelPool (max, mean over dim 1) → 7×7 conv → BN → σ → x·s."""
    pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
    conv, bn = zpool_parts(zg)
    k = conv.weight.shape[-1]
    s = F.conv2d(pooled, conv.weight, conv.bias, padding=(k - 1) // 2)
    s = _bn(s, bn)
    return x * _gate(s, zg.gate)


@_ref("cbam_channel")
def _cbam_channel(m, x):
    return _cbam_channel_gate(m, x)


@_ref("cbam_spatial")
def _cbam_spatial(m, x):
    return _zpool_conv_gate(m.attn, x)


@_ref("cbam")
def _cbam(m, x):
    """CBAM: ChannelGate, then SpatialGate on the channel-refined map."""
    y = _cbam_channel_gate(m.channel, x)
    return y if m.spatial is None else _zpool_conv_gate(m.spatial.attn, y)


@_ref("srm")
def _srm(m, x):
    """SRMLayer: (mean, unbiased std) per channel → channel-wise FC (cfc) → BN → sigmoid → x·g."""
    b, c = x.shape[:2]
    mean = x.view(b, c, -1).mean(-1).unsqueeze(-1)
    std = x.view(b, c, -1).std(-1).unsqueeze(-1)
    u = torch.cat((mean, std), -1)  # (B, C, 2)
    z = torch.sum(u * m.cfc[None, :, :], dim=2)[:, :, None, None]  # (B, C, 1, 1)
    return x * _gate(_bn(z, m.bn), m.gate)


def _dct_filter(dct_h: int, dct_w: int, mapper_x, mapper_y, channel: int, dtype) -> Tensor:
    """FcaNet MultiSpectralDCTLayer.get_dct_filter, frequencies already scaled to the grid."""

    def build_filter(pos, freq, size):
        result = math.cos(math.pi * freq * (pos + 0.5) / size) / math.sqrt(size)
        return result if freq == 0 else result * math.sqrt(2)

    filt = torch.zeros(channel, dct_h, dct_w, dtype=torch.float64)
    c_part = channel // len(mapper_x)
    for i, (u_x, v_y) in enumerate(zip(mapper_x, mapper_y)):
        for t_x in range(dct_h):
            for t_y in range(dct_w):
                value = build_filter(t_x, u_x, dct_h) * build_filter(t_y, v_y, dct_w)
                filt[i * c_part:(i + 1) * c_part, t_x, t_y] = value
    return filt.to(dtype)


@_ref("fca")
def _fca(m, x):
    """MultiSpectralAttentionLayer: adaptive pool to the DCT grid → Σ x·DCT → Linear, ReLU, Linear, sigmoid."""
    from plugattn.modules.fca import freq_indices  # the official frequency table (a constant)

    n, c, h, w = x.shape
    mx, my = freq_indices(m.freq_sel_method)
    mx = [u * (m.dct_h // 7) for u in mx]
    my = [v * (m.dct_w // 7) for v in my]
    filt = _dct_filter(m.dct_h, m.dct_w, mx, my, c, x.dtype).to(x.device)
    pooled = x if (h, w) == (m.dct_h, m.dct_w) else F.adaptive_avg_pool2d(x, (m.dct_h, m.dct_w))
    y = torch.sum(pooled * filt, dim=[2, 3])  # (N, C)
    y = _gate(_linear(_act(_linear(y, m.fc1), m.act, "relu"), m.fc2), m.gate).view(n, c, 1, 1)
    return x * y.expand_as(x)


@_ref("gc")
def _gc(m, x):
    """GCNet ContextBlock: softmax(conv_mask) attention pooling, channel_mul (σ) then channel_add transforms."""
    batch, channel, height, width = x.shape
    if m.conv_attn is not None:
        input_x = x.view(batch, channel, height * width).unsqueeze(1)  # (N, 1, C, HW)
        mask = _conv(x, m.conv_attn).view(batch, 1, height * width)
        mask = torch.softmax(mask, dim=2).unsqueeze(-1)  # (N, 1, HW, 1)
        context = torch.matmul(input_x, mask).view(batch, channel, 1, 1)
    else:
        context = _gap(x)

    def transform(mlp):  # Conv2d, LayerNorm([planes, 1, 1]), ReLU, Conv2d
        t = _conv(context, mlp.fc1)
        norm = mlp.norm
        if not isinstance(norm, nn.Identity):
            _need(isinstance(norm, nn.LayerNorm), f"GC norm {type(norm).__name__}")
            planes = t.shape[1]
            t = F.layer_norm(t, (planes, 1, 1), norm.weight.view(planes, 1, 1), norm.bias.view(planes, 1, 1), norm.eps)
        return _conv(_act(t, mlp.act, "relu"), mlp.fc2)

    out = x
    if m.mlp_scale is not None:
        out = out * _gate(transform(m.mlp_scale), m.gate)
    if m.mlp_add is not None:
        out = out + transform(m.mlp_add)
    return out


@_ref("ge")
def _ge(m, x):
    """timm GatherExcite: gather (global mean, avg_pool2d over an extent, or strided depthwise convs), optional
    MLP, nearest-neighbour resize to H×W, sigmoid, x·w."""
    size = x.shape[-2:]
    if m.gather is not None:
        s = x
        for layer in m.gather:
            if isinstance(layer, nn.Conv2d):
                s = _conv(s, layer)
            elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
                s = _bn(s, layer)
            else:
                s = _act(s, layer, "relu")
    elif m.extent == 0:
        s = _gap(x)
        if m.add_maxpool:
            s = 0.5 * s + 0.5 * _gmp(x)
    else:
        k = m.extent * 2 - 1
        s = F.avg_pool2d(x, kernel_size=k, stride=m.extent, padding=k // 2, count_include_pad=False)
        if m.add_maxpool:
            s = 0.5 * s + 0.5 * F.max_pool2d(x, kernel_size=k, stride=m.extent, padding=k // 2)
    if m.fc1 is not None:
        s = _conv(_act(_conv(s, m.fc1), m.act, "relu"), m.fc2)
    if s.shape[-1] != 1 or s.shape[-2] != 1:
        s = F.interpolate(s, size=size)
    return x * _gate(s, m.gate)


@_ref("simam")
def _simam(m, x):
    """SimAM simam_module: (x − μ)² / (4(Σ(x − μ)²/n + λ)) + ½, n = H·W − 1, sigmoid, x·w."""
    b, c, h, w = x.shape
    n = w * h - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + m.e_lambda)) + 0.5
    return x * _gate(y, m.gate)


# ---------------------------------------------------------------------------------------------------------------
# spatial, channel + spatial


@_ref("triplet")
def _triplet(m, x):
    """landskape-ai TripletAttention: rotate x with permute().contiguous(), gate, rotate back, average."""
    x_perm1 = x.permute(0, 2, 1, 3).contiguous()  # (N, H, C, W)
    x_out11 = _zpool_conv_gate(m.cw, x_perm1).permute(0, 2, 1, 3).contiguous()
    x_perm2 = x.permute(0, 3, 2, 1).contiguous()  # (N, W, H, C)
    x_out21 = _zpool_conv_gate(m.hc, x_perm2).permute(0, 3, 2, 1).contiguous()
    if m.hw is not None:
        x_out = _zpool_conv_gate(m.hw, x)
        return 1 / 3 * (x_out + x_out11 + x_out21)
    return 1 / 2 * (x_out11 + x_out21)


@_ref("coord")
def _coord(m, x):
    """houqb CoordAtt: pool_h / pool_w (adaptive pools), cat, conv1-BN-h_swish, split, conv_h/conv_w, σ."""
    identity = x
    n, c, h, w = x.shape
    x_h = F.adaptive_avg_pool2d(x, (None, 1))  # (N, C, H, 1)
    x_w = F.adaptive_avg_pool2d(x, (1, None)).permute(0, 1, 3, 2)  # (N, C, W, 1)
    y = torch.cat([x_h, x_w], dim=2)
    y = _act(_bn(_conv(y, m.conv1), m.norm), m.act, "hswish")
    x_h, x_w = torch.split(y, [h, w], dim=2)
    x_w = x_w.permute(0, 1, 3, 2)
    a_h = _gate(_conv(x_h, m.conv_h), getattr(m, "gate_h", getattr(m, "gate", None)))
    a_w = _gate(_conv(x_w, m.conv_w), getattr(m, "gate_w", getattr(m, "gate", None)))
    return identity * a_w * a_h


@_ref("bam")
def _bam(m, x):
    """Jongchan BAM: channel gate (GAP, FC-BN-ReLU, FC) and spatial gate (1×1, dilated 3×3s, 1×1) in parallel,
    combined (official: product; paper: sum), x·(1 + σ(·)). Pooling: adaptive (the official avg_pool2d with an
    H×H window equals it for square inputs)."""
    mc = _gap(x)
    for layer in m.channel:
        if isinstance(layer, nn.Conv2d):
            mc = _conv(mc, layer)
        else:  # ConvNormAct
            mc = _act(_bn(_conv(mc, layer.conv), layer.bn), layer.act, "relu")
    ms = x
    for layer in m.spatial:
        if isinstance(layer, nn.Conv2d):
            ms = _conv(ms, layer)
        else:
            ms = _act(_bn(_conv(ms, layer.conv), layer.bn), layer.act, "relu")
    att = mc.expand_as(x) * ms.expand_as(x) if m.combine == "mul" else mc.expand_as(x) + ms.expand_as(x)
    return x * (1 + _gate(att, m.gate))


@_ref("scse")
def _scse(m, x):
    """ai-med ChannelSpatialSELayer: cSE (mean, Linear, ReLU, Linear, σ) and sSE (1×1 conv, σ), max-out / add."""
    b, c, h, w = x.shape
    squeeze = x.view(b, c, -1).mean(dim=2)
    fc = _gate(_linear(_act(_linear(squeeze, m.fc1), m.act, "relu"), m.fc2), m.channel_gate)
    cse = torch.mul(x, fc.view(b, c, 1, 1))
    sq = _gate(_conv(x, m.spatial_conv), m.spatial_gate)
    sse = torch.mul(x, sq.view(b, 1, h, w))
    return torch.max(cse, sse) if m.combine == "max" else cse + sse


@_ref("sge")
def _sge(m, x):
    """PytorchInsight SpatialGroupEnhance (torch.std: unbiased; NaN at H·W = 1 as official)."""
    b, c, h, w = x.shape
    g = m.groups
    x = x.reshape(b * g, -1, h, w)
    xn = (x * _gap(x)).sum(dim=1, keepdim=True)
    t = xn.view(b * g, -1)
    t = t - t.mean(dim=1, keepdim=True)
    std = t.std(dim=1, keepdim=True) + m.eps
    t = (t / std).view(b, g, h, w)
    t = (t * m.weight + m.bias).view(b * g, 1, h, w)
    return (x * _gate(t, m.gate)).view(b, c, h, w)


@_ref("shuffle")
def _shuffle(m, x):
    """SA-Net sa_layer: groups into the batch, chunk, channel gate (GAP) / spatial gate (GN), cat, shuffle."""
    b, c, h, w = x.shape
    x = x.reshape(b * m.groups, -1, h, w)
    x_0, x_1 = x.chunk(2, dim=1)
    xn = m.channel_weight * _gap(x_0) + m.channel_bias
    xn = x_0 * _gate(xn, m.channel_gate)
    xs = F.group_norm(x_1, m.norm.num_groups, m.norm.weight, m.norm.bias, m.norm.eps)
    xs = m.spatial_weight * xs + m.spatial_bias
    xs = x_1 * _gate(xs, m.spatial_gate)
    out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
    out = out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4).reshape(b, -1, h, w)  # channel_shuffle(out, 2)
    return out


@_ref("ema")
def _ema(m, x):
    """YOLOonMe EMA: grouped; pool_h/pool_w + cat + 1×1 conv + split; GN; 3×3 conv; cross-spatial matmuls."""
    b, c, h, w = x.shape
    g = m.groups
    group_x = x.reshape(b * g, -1, h, w)
    x_h = F.adaptive_avg_pool2d(group_x, (None, 1))
    x_w = F.adaptive_avg_pool2d(group_x, (1, None)).permute(0, 1, 3, 2)
    hw = _conv(torch.cat([x_h, x_w], dim=2), m.conv1x1)
    x_h, x_w = torch.split(hw, [h, w], dim=2)
    x1 = group_x * _gate(x_h, m.coord_gate) * _gate(x_w.permute(0, 1, 3, 2), m.coord_gate)
    x1 = F.group_norm(x1, m.norm.num_groups, m.norm.weight, m.norm.bias, m.norm.eps)
    x2 = _conv(group_x, m.conv3x3)
    x11 = torch.softmax(_gap(x1).reshape(b * g, -1, 1).permute(0, 2, 1), dim=-1)
    x12 = x2.reshape(b * g, c // g, -1)
    x21 = torch.softmax(_gap(x2).reshape(b * g, -1, 1).permute(0, 2, 1), dim=-1)
    x22 = x1.reshape(b * g, c // g, -1)
    weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * g, 1, h, w)
    return (group_x * _gate(weights, m.gate)).reshape(b, c, h, w)


# ---------------------------------------------------------------------------------------------------------------
# self-attention: explicit (H·W) × (H·W) matrices


def _pam_out(p, x):
    """PAM_Module without γ and residual: the whole energy matrix, softmax over keys, V·attentionᵀ."""
    b, c, h, w = x.shape
    q = _conv(x, p.query).view(b, -1, h * w).permute(0, 2, 1)  # (B, N, C')
    k = _conv(x, p.key).view(b, -1, h * w)  # (B, C', N)
    energy = torch.bmm(q, k)  # (B, N, N)
    attention = torch.softmax(energy, dim=-1)
    v = _conv(x, p.value).view(b, -1, h * w)  # (B, C, N)
    return torch.bmm(v, attention.permute(0, 2, 1)).view(b, c, h, w)


def _cam_out(x):
    """CAM_Module without γ and residual: softmax(rowmax(E) − E) with E = F Fᵀ, then attention·F."""
    b, c, h, w = x.shape
    q = x.view(b, c, -1)
    energy = torch.bmm(q, x.view(b, c, -1).permute(0, 2, 1))
    energy_new = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
    attention = torch.softmax(energy_new, dim=-1)
    return torch.bmm(attention, x.view(b, c, -1)).view(b, c, h, w)


@_ref("danet_pam")
def _danet_pam(m, x):
    return m.gamma * _pam_out(m, x) + x


@_ref("danet_cam")
def _danet_cam(m, x):
    return m.gamma * _cam_out(x) + x


@_ref("danet")
def _danet(m, x):
    """Dual attention plug-in: x + α·PAM_out + β·CAM_out."""
    return x + m.pam.gamma * _pam_out(m.pam, x) + m.cam.gamma * _cam_out(x)


@_ref("danet_head")
def _danet_head(m, x):
    """DANetHead (eval; Dropout2d off in eval, and skipped here): conv5a/c, PAM/CAM, conv51/52, conv6/7/8."""
    _need(not m.training or m.drop.p == 0, "DANetHead in training mode (dropout)")

    def cbr(t, block):
        return _act(_bn(_conv(t, block.conv), block.bn), block.act, "relu")

    feat1 = cbr(x, m.pam_in)
    sa_feat = m.pam.gamma * _pam_out(m.pam, feat1) + feat1
    sa_conv = cbr(sa_feat, m.pam_out)
    sa_output = _conv(sa_conv, m.cls_pam)
    feat2 = cbr(x, m.cam_in)
    sc_feat = m.cam.gamma * _cam_out(feat2) + feat2
    sc_conv = cbr(sc_feat, m.cam_out)
    sc_output = _conv(sc_conv, m.cls_cam)
    sasc_output = _conv(sa_conv + sc_conv, m.cls_fused)
    return sasc_output, sa_output, sc_output


@_ref("non_local")
def _non_local(m, x):
    """Embedded-Gaussian non-local block with the whole (H·W) × S affinity: softmax(s·θᵀφ) g, W_z, norm, + x.

    Sub-sampling: max-pool x before φ and g (Caffe2) or φ and g after the convs (paper text, AlexHex7).
    """
    b, c, h, w = x.shape
    theta = _conv(x, m.theta).view(b, m.rd_channels, -1).permute(0, 2, 1)  # (B, HW, C')
    src = F.max_pool2d(x, 2) if m.sub_sample and not m.sub_sample_after_proj else x
    phi, g = _conv(src, m.phi), _conv(src, m.g)
    if m.sub_sample and m.sub_sample_after_proj:
        phi, g = F.max_pool2d(phi, 2), F.max_pool2d(g, 2)
    phi = phi.view(b, m.rd_channels, -1)  # (B, C', S)
    g = g.view(b, m.rd_channels, -1).permute(0, 2, 1)  # (B, S, C')
    f = torch.matmul(theta, phi)  # (B, HW, S)
    if m.scale is not None:
        f = f * m.scale
    f_div_c = torch.softmax(f, dim=-1)
    y = torch.matmul(f_div_c, g).permute(0, 2, 1).contiguous().view(b, m.rd_channels, h, w)
    return _bn(_conv(y, m.proj), m.norm) + x


@_ref("sk")
def _sk(m, x):
    """Selective kernel (ResearchingDexter / Caffe layout): branches, U = Σ, GAP, fc1 (conv-BN-ReLU), fc2,
    softmax over branches, V = Σ a_m·U_m."""
    b = x.shape[0]
    inputs = x.chunk(m.num_paths, dim=1) if m.split_input else [x] * m.num_paths
    output = []
    for path, xi in zip(m.paths, inputs):
        output.append(_act(_bn(_conv(xi, path.conv), getattr(path, "bn", None)), getattr(path, "act", None),
                           "identity"))
    u = output[0]
    for o in output[1:]:
        u = u + o
    s = _gap(u)
    z = _act(_bn(_conv(s, m.fc_reduce), m.norm), m.act, "identity")
    a_b = _conv(z, m.fc_select).reshape(b, m.num_paths, m.out_channels, -1)
    a_b = _gate(a_b, m.gate)  # softmax over dim 1 (the branches)
    a_b = [t.reshape(b, m.out_channels, 1, 1) for t in a_b.chunk(m.num_paths, dim=1)]
    v = output[0] * a_b[0]
    for o, a in zip(output[1:], a_b[1:]):
        v = v + o * a
    return v


# ---------------------------------------------------------------------------------------------------------------
# SeaFormer


def _conv_bn(t, block, **kw):
    return _bn(_conv(t, block.conv, **kw), getattr(block, "bn", None))


def _sea_attention(a, x):
    """fudan-zvg Sea_Attention.forward (cls copy): detail branch, squeezed row / column attention, h-sigmoid."""
    B, C, H, W = x.shape
    act = a.detail_dw.act if hasattr(a.detail_dw, "act") else None
    q, k, v = _conv_bn(x, a.to_q), _conv_bn(x, a.to_k), _conv_bn(x, a.to_v)
    qkv = torch.cat([q, k, v], dim=1)
    qkv = _act(_conv_bn(qkv, a.detail_dw), act, "relu6")
    qkv = _conv_bn(qkv, a.detail_pw)
    nh, dh = a.num_heads, a.value_dim * a.num_heads

    def pos(t, p):  # SqueezeAxialPositionalEmbedding
        return t + F.interpolate(p, size=t.shape[-1], mode="linear", align_corners=False)

    qrow = pos(q.mean(-1), a.pos_row_q).reshape(B, nh, -1, H).permute(0, 1, 3, 2)
    krow = pos(k.mean(-1), a.pos_row_k).reshape(B, nh, -1, H)
    vrow = v.mean(-1).reshape(B, nh, -1, H).permute(0, 1, 3, 2)
    attn_row = torch.softmax(torch.matmul(qrow, krow) * a.scale, dim=-1)
    xx_row = torch.matmul(attn_row, vrow)  # (B, nH, H, d)
    xx_row = _act(xx_row.permute(0, 1, 3, 2).reshape(B, dh, H, 1), a.encode_row.act, "relu6")
    xx_row = _conv_bn(xx_row, a.encode_row)
    qcol = pos(q.mean(-2), a.pos_col_q).reshape(B, nh, -1, W).permute(0, 1, 3, 2)
    kcol = pos(k.mean(-2), a.pos_col_k).reshape(B, nh, -1, W)
    vcol = v.mean(-2).reshape(B, nh, -1, W).permute(0, 1, 3, 2)
    attn_col = torch.softmax(torch.matmul(qcol, kcol) * a.scale, dim=-1)
    xx_col = torch.matmul(attn_col, vcol)  # (B, nH, W, d)
    xx_col = _act(xx_col.permute(0, 1, 3, 2).reshape(B, dh, 1, W), a.encode_col.act, "relu6")
    xx_col = _conv_bn(xx_col, a.encode_col)
    xx = v.add(xx_row.add(xx_col))
    xx = _conv_bn(_act(xx, a.proj.act, "relu6"), a.proj)
    return _gate(xx, a.gate, "hsigmoid") * qkv


@_ref("sea_attention")
def _sea_attn(m, x):
    return _sea_attention(m, x)


@_ref("sea_block")
def _sea_block(m, x):
    """SeaFormer Block (eval: drop path and dropout are identities): x + attn(x), then x + mlp(x)."""
    _need(not m.training, "SeaFormerBlock in training mode (drop path, dropout)")
    x = x + _sea_attention(m.attn, x)
    mlp = m.mlp
    t = _conv_bn(x, mlp.fc1)
    t = _act(_conv(t, mlp.dwconv), mlp.act, "relu6")
    t = _conv_bn(t, mlp.fc2)
    return x + t


# ---------------------------------------------------------------------------------------------------------------
# design-space variants (plugattn.space): plain formulas from their docstrings


@_ref("cluster_se")
def _cluster_se(m, x):
    """y = x·σ(Σ_j MLP(d_j)), d_j the soft mean of the positions assigned to centre j
    (assignment softmax over the k centres of ⟨x_i, μ_j⟩/√C)."""
    n, c, h, w = x.shape
    sq, ex = m.squeeze, m.excite
    flat = x.reshape(n, c, h * w)  # (N, C, HW)
    a = torch.softmax(torch.einsum("kc,ncp->nkp", sq.centres, flat) / math.sqrt(c), dim=1)  # (N, k, HW)
    logits = None
    for j in range(sq.num_clusters):
        mass = a[:, j].sum(-1).clamp_min(sq.eps)  # (N,)
        d = (flat * a[:, j:j + 1]).sum(-1) / mass[:, None]  # (N, C)
        z = _conv(d.view(n, c, 1, 1), ex.fc1)
        z = _conv(_act(_bn(z, ex.norm), ex.act, "relu"), ex.fc2)
        logits = z if logits is None else logits + z
    return x * _gate(logits, m.gate)


@_ref("eca_ms")
def _eca_ms(m, x):
    """Multi-scale ECA: y = x·σ(fuse_k conv1d_k(GAP(x))) with fuse = max (default), sum or mean."""
    n, c = x.shape[:2]
    s = _gap(x).view(n, 1, c)
    ls = []
    for br in m.excite.branches:
        k = br.conv.weight.shape[-1]
        ls.append(F.conv1d(s, br.conv.weight, br.conv.bias, padding=(k - 1) // 2))
    fuse = m.excite.fuse
    stacked = torch.stack(ls)
    z = stacked.max(0)[0] if fuse == "max" else stacked.sum(0) if fuse == "sum" else stacked.mean(0)
    return x * _gate(z.view(n, c, 1, 1), m.gate)
