"""Coordinate Attention: channel attention factorised into one map along H and one along W.

Paper: Hou, Zhou, Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021.
https://arxiv.org/abs/2103.02907 — official code: https://github.com/houqb/CoordAttention
(formerly Andrew-Qibin/CoordAttention; ``coordatt.py`` ``CoordAtt`` and ``mbv2_ca.py`` ``CoordAtt``).

Default = the official ``CoordAtt(inp, inp, reduction=32)``: width mip = max(8, ⌊C/32⌋), biased 1×1 convs,
BatchNorm on the concatenated (H+W) sequence, h-swish, sigmoid gates, out = x · a_w · a_h.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import Gate, LayerType, check_input, check_positive, factory_kwargs, get_layer, reduced_width
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["CoordAttention"]


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
        rd_channels = reduced_width(name, channels, rd_ratio, rd_channels, rd_divisor, min_channels=min_channels)
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.rd_channels = rd_channels
        self.conv1 = nn.Conv2d(channels, rd_channels, 1, bias=bias, **dd)
        self.norm = get_layer(norm_layer, rd_channels, arg_name="norm_layer", **dd)
        self.act = get_layer(act_layer, arg_name="act_layer")
        self.conv_h = nn.Conv2d(rd_channels, channels, 1, bias=bias, **dd)
        self.conv_w = nn.Conv2d(rd_channels, channels, 1, bias=bias, **dd)
        self.gate_h = Gate(gate_layer)  # two gates, so capture() records a_h and a_w apart
        self.gate_w = Gate(gate_layer)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, rd_channels={self.rd_channels}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        h, w = x.shape[2], x.shape[3]
        z_h = x.mean(3, keepdim=True)  # z^h: (N, C, H, 1), pooled along W
        z_w = x.mean(2, keepdim=True).transpose(2, 3)  # z^w: (N, C, 1, W) → (N, C, W, 1)
        f = self.act(self.norm(self.conv1(torch.cat((z_h, z_w), dim=2))))  # (N, mip, H + W, 1)
        f_h, f_w = f.split((h, w), dim=2)  # (N, mip, H, 1), (N, mip, W, 1)
        a_h = self.gate_h(self.conv_h(f_h))  # (N, C, H, 1)
        a_w = self.gate_w(self.conv_w(f_w.transpose(2, 3)))  # (N, C, 1, W)
        return x * a_w * a_h


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

