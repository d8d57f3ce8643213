"""Coordinate Attention: channel attention factorised into one map along H and one along W.

Paper: Hou, Zhou, Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021.
https://arxiv.org/abs/2103.02907 — official code: https://github.com/houqb/CoordAttention
(formerly Andrew-Qibin/CoordAttention; ``coordatt.py`` ``CoordAtt`` and ``mbv2_ca.py`` ``CoordAtt``).

Default = the official ``CoordAtt(inp, inp, reduction=32)``: width mip = max(8, ⌊C/32⌋), biased 1×1 convs,
BatchNorm on the concatenated (H+W) sequence, h-swish, sigmoid gates, out = x · a_w · a_h.

Speed: the two poolings are matrix–vector products whose gradients are broadcast views added in place, and the
final reweighting is one autograd node whose backward reduces with batched matrix products instead of
materialising broadcast products. Forward allocates one full-size tensor (the output; timm's CoordAttn two),
backward one (the official formulation under autograd: six). The nodes compute the same math as the plain
formulation; the tests compare against it, gradients and double backward included.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import (
    Gate,
    LayerType,
    axis_mean,
    check_input,
    check_positive,
    conv1x1,
    get_layer,
    like_layout,
    make_divisible,
)
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["CoordAttention"]


class _AxisMean(torch.autograd.Function):
    """x.mean(dim) for dim 2 (over H) or 3 (over W) of an (N, C, H, W) tensor, at full speed.

    Forward: :func:`~plugattn._layers.axis_mean` (fast on channels_last). The gradient is returned as a
    broadcast view, which autograd adds in place into x's gradient: no full-size allocation.
    """

    @staticmethod
    def forward(ctx, x: Tensor, dim: int) -> Tensor:  # type: ignore[override]
        ctx.shape, ctx.dim = tuple(x.shape), dim
        return axis_mean(x, dim)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        size = ctx.shape[ctx.dim]
        return (g * (1.0 / size)).unsqueeze(ctx.dim).expand(ctx.shape), None


def _reweight(x: Tensor, a_h: Tensor, a_w: Tensor) -> Tensor:
    """x · a_w · a_h, left to right as official, in place on our own intermediate: one full-size allocation."""
    return (x * like_layout(a_w, x)).mul_(like_layout(a_h, x))


class _CoordReweight(torch.autograd.Function):
    """y = x · a_w · a_h with a_h (N, C, H, 1) and a_w (N, C, 1, W), evaluated left to right as official."""

    @staticmethod
    def forward(ctx, x: Tensor, a_h: Tensor, a_w: Tensor) -> Tensor:  # type: ignore[override]
        a_h, a_w = like_layout(a_h, x), like_layout(a_w, x)  # channels_last x: C innermost in the weights too
        ctx.save_for_backward(x, a_h, a_w)
        return (x * a_w).mul_(a_h)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, a_h, a_w = ctx.saved_tensors
        need_x, need_h, need_w = ctx.needs_input_grad
        g_x = g_h = g_w = gx = None
        if need_h or need_w:
            gx = g * x  # (N, C, H, W)
            # Σ_w g·x·a_w and Σ_h g·x·a_h as batched matrix products: no broadcast product is materialised
            g_h = torch.matmul(a_w, gx.transpose(2, 3)).transpose(2, 3)  # (N,C,1,W) @ (N,C,W,H) → (N,C,H,1)
            g_w = torch.matmul(a_h.transpose(2, 3), gx)  # (N, C, 1, H) @ (N, C, H, W) → (N, C, 1, W)
        if need_x:
            if torch.is_grad_enabled():  # double backward: differentiable ops only
                g_x = g * a_w * a_h
            elif gx is not None:  # reuse the buffer of g·x, which is no longer needed
                g_x = torch.mul(g, a_w, out=gx).mul_(a_h)
            else:
                g_x = (g * a_w).mul_(a_h)
        return g_x, g_h, g_w


@register(
    "coord", paper="Coordinate Attention for Efficient Mobile Network Design", year=2021,
    url="https://arxiv.org/abs/2103.02907", kind="channel+spatial", official="houqb/CoordAttention CoordAtt",
)
class CoordAttention(nn.Module):
    r"""Coordinate Attention: :math:`y = x \cdot a^w \cdot a^h`.

    With :math:`z^h_c(h) = \frac1W \sum_w x_c(h, w)` and :math:`z^w_c(w) = \frac1H \sum_h x_c(h, w)`:

    .. math::
        f = \delta(\mathrm{BN}(F_1([z^h, z^w]))),\quad [f^h, f^w] = \mathrm{split}(f),\quad
        a^h = \sigma(F_h(f^h)),\quad a^w = \sigma(F_w(f^w))

    :math:`F_1` (C → mip), :math:`F_h`, :math:`F_w` (mip → C) are 1×1 convolutions with bias; BN normalises
    the concatenated sequence of H + W positions (as official, which matters in training mode).

    Args:
        channels: C, input channels.
        rd_ratio: 1/r, reduction of the hidden width mip (official ``reduction`` = 32). Default: 1/32.
        rd_channels: mip, overriding ``rd_ratio`` and ``min_channels``. Default: None.
        rd_divisor: ``None`` floors C·rd_ratio (official); an int rounds it to a multiple. Default: None.
        min_channels: lower bound of mip (official: 8). Default: 8.
        bias: biases on the three 1×1 convolutions (official: True). Default: True.
        act_layer: δ, h-swish t·ReLU6(t + 3)/6 (official). Default: ``"hard_swish"``.
        norm_layer: the BN after F₁; ``None`` for none. Default: BatchNorm2d.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = CoordAttention(64)
        >>> m.conv1.out_channels, m(torch.randn(2, 64, 7, 5)).shape
        (8, torch.Size([2, 64, 7, 5]))
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 32,
        rd_channels: int | None = None,
        rd_divisor: int | None = None,
        min_channels: int = 8,
        bias: bool = True,
        act_layer: LayerType = "hard_swish",
        norm_layer: LayerType = "batchnorm2d",
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, channels=channels, min_channels=min_channels)
        if rd_channels is None:
            if not isinstance(rd_ratio, (int, float)) or isinstance(rd_ratio, bool) or rd_ratio <= 0:
                raise ValueError(f"{name}: rd_ratio must be a positive number, got {rd_ratio!r}")
            rd_channels = max(min_channels, make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0))
        check_positive(name, rd_channels=rd_channels)
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.conv1 = nn.Conv2d(channels, rd_channels, 1, bias=bias, **dd)
        self.norm = get_layer(norm_layer, rd_channels, arg_name="norm_layer", **dd)
        self.act = get_layer(act_layer, arg_name="act_layer")
        self.conv_h = nn.Conv2d(rd_channels, channels, 1, bias=bias, **dd)
        self.conv_w = nn.Conv2d(rd_channels, channels, 1, bias=bias, **dd)
        self.gate_h = Gate(gate_layer)  # two gates, so capture() records a_h and a_w apart
        self.gate_w = Gate(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        h, w = x.shape[2], x.shape[3]
        # the autograd Functions only when a gradient is recorded: the same math, without their per-call cost
        grad = torch.is_grad_enabled()
        z_h = _AxisMean.apply(x, 3) if grad else axis_mean(x, 3)  # (N, C, H)
        z_w = _AxisMean.apply(x, 2) if grad else axis_mean(x, 2)  # (N, C, W)
        s = torch.cat((z_h, z_w), dim=2)  # (N, C, H + W): [z^h, z^w] as one sequence
        # the 1×1 convs as matrix products on the (N, C, L) sequences (see conv1x1); norm and act see 4-D maps
        f = self.act(self.norm(conv1x1(self.conv1, s).unsqueeze(3))).squeeze(3)  # (N, mip, H + W)
        f_h, f_w = f.split((h, w), dim=2)  # (N, mip, H), (N, mip, W)
        a_h = self.gate_h(conv1x1(self.conv_h, f_h).unsqueeze(3))  # (N, C, H, 1)
        a_w = self.gate_w(conv1x1(self.conv_w, f_w).unsqueeze(3)).transpose(2, 3)  # (N, C, 1, W)
        return _CoordReweight.apply(x, a_h, a_w) if grad else _reweight(x, a_h, a_w)


def _coord_module(key: str, inp: int, oup: int, width_divisor: int, arg: str) -> CoordAttention:
    owner = f"from_official({key!r})"
    check_positive(owner, inp=inp, oup=oup, **{arg: width_divisor})
    if oup != inp:
        raise ValueError(f"{owner}: CoordAtt needs oup == inp (its output x · a_w · a_h "
                         f"broadcasts a_h, a_w of oup channels over x of inp channels); got inp={inp}, oup={oup}")
    return CoordAttention(inp, rd_channels=max(8, inp // width_divisor))


@official("coord")
def _coord(inp: int, oup: int, reduction: int = 32):
    """houqb/CoordAttention ``coordatt.py`` ``CoordAtt(inp, oup, reduction=32)``; ``oup`` must equal ``inp``."""
    return _coord_module("coord", inp, oup, reduction, "reduction"), rename_prefix(("bn1.", "norm."))


@official("coord_mbv2")
def _coord_mbv2(inp: int, oup: int, groups: int = 32):
    """houqb/CoordAttention ``mbv2_ca.py`` ``CoordAtt(inp, oup, groups=32)``, the naming of ``mbv2_ca.pth``."""
    module = _coord_module("coord_mbv2", inp, oup, groups, "groups")
    return module, rename_prefix(("bn1.", "norm."), ("conv2.", "conv_h."), ("conv3.", "conv_w."))

