"""EMA: Efficient Multi-scale Attention with cross-spatial learning.

Paper: Ouyang, He, Zhang, Huang, Zhong, Guo, Luo, Liu, "Efficient Multi-Scale Attention Module with
Cross-Spatial Learning", ICASSP 2023. https://arxiv.org/abs/2305.13563 — official code:
https://github.com/YOLOonMe/EMA-attention-module (``EMA_attention_module``: ``EMA(channels, c2=None,
factor=32)``; the same class as ``EmaModule`` in its ``timm/models/layers/ema.py``). Written from the paper and
the official code; no code is copied.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .._layers import Gate, LayerType, axis_mean, check_input, check_positive, conv1x1, is_channels_last, like_layout
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["EfficientMultiScaleAttention"]


@register(
    "ema", paper="Efficient Multi-Scale Attention Module with Cross-Spatial Learning", year=2023,
    url="https://arxiv.org/abs/2305.13563", kind="channel+spatial", official="YOLOonMe/EMA-attention-module EMA",
)
class EfficientMultiScaleAttention(nn.Module):
    r"""EMA: grouped coordinate-style 1×1 branch and 3×3 branch, fused by cross-spatial attention.

    The channels are split into G groups of C' = C/G adjacent channels. For each group x_g (C', H, W):

    .. math::
        [a_h; a_w] = \mathrm{conv}_{1\times1}([\mathrm{pool}_W(x_g); \mathrm{pool}_H(x_g)^\top]),\qquad
        x_1 = \mathrm{GN}(x_g \cdot \sigma(a_h) \cdot \sigma(a_w^\top)),\qquad x_2 = \mathrm{conv}_{3\times3}(x_g)

    .. math::
        A = \mathrm{softmax}_{C'}(\mathrm{GAP}(x_1))^\top x_2 + \mathrm{softmax}_{C'}(\mathrm{GAP}(x_2))^\top x_1
        \in \mathbb{R}^{1\times H W},\qquad y_g = x_g \cdot \sigma(A)

    Computed on x itself (no copy of x into a (B·G, C', H, W) batch): the shared 3×3 conv is one grouped conv
    with its weight tiled G times, the GroupNorm one group per channel; only the pooled descriptors are folded.
    The 1×1 conv (C' → C', bias) runs on the concatenated H- and W-pooled descriptors (official layout);
    GN is ``GroupNorm(C', C')`` (one group per channel, affine); the 3×3 conv is C' → C' with bias and
    padding 1. Both softmaxes run over the C' channels of a group; the convs and GN are shared by all groups.

    **Groups.** The official ``factor`` G = 32 needs C ≥ 32. With ``groups=None`` (default) G is the official
    32 capped at C // 2, so that every group keeps at least two channels and its channel softmax is not
    trivially 1: G = max(1, min(32, C // 2)), e.g. C = 16 → 8, C = 32 → 16, C ≥ 64 → 32. An explicit
    ``groups`` is used as given (the official ``factor``). C must be divisible by G (``ValueError``
    otherwise; the official code fails there too).

    Args:
        channels: C, input channels.
        groups: G (official ``factor``). Default: None, i.e. min(32, C // 2) (at least 1).
        gate_layer: σ of the final weights. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = EfficientMultiScaleAttention(64)
        >>> m.groups, m(torch.randn(2, 64, 7, 5)).shape
        (32, torch.Size([2, 64, 7, 5]))
        >>> EfficientMultiScaleAttention(16).groups
        8
    """

    def __init__(
        self,
        channels: int,
        *,
        groups: int | None = None,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        if groups is None:
            groups = max(1, min(32, channels // 2))
        check_positive(owner, groups=groups)
        if channels % groups:
            raise ValueError(f"{owner}: channels={channels} must be divisible by the number of groups {groups}")
        dd = {"device": device, "dtype": dtype}
        cg = channels // groups
        self.channels = channels
        self.groups = groups
        self.conv1x1 = nn.Conv2d(cg, cg, 1, bias=True, **dd)
        self.conv3x3 = nn.Conv2d(cg, cg, 3, padding=1, bias=True, **dd)
        self.norm = nn.GroupNorm(cg, cg, **dd)
        self.coord_gate = Gate("sigmoid")  # σ(a_h), σ(a_w): the 1×1 branch's directional weights
        self.channel_gate = Gate("softmax", dim=-1)  # softmax over the C' channels of a group
        self.gate = Gate(gate_layer)  # σ(A): the output weights, one per position and group

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        b, c, h, w = x.shape
        g = self.groups
        cg = c // g
        # Every step works on x (N, C, H, W) itself; groups are folded into the batch only for small tensors.
        # 1×1 branch: the H- and W-pooled descriptors of each group, one 1×1 conv (C' → C') on both
        z = torch.cat((axis_mean(x, 3), axis_mean(x, 2)), dim=2).reshape(b * g, cg, h + w)  # (B·G, C', H + W)
        a_h, a_w = conv1x1(self.conv1x1, z).split((h, w), dim=2)  # (B·G, C', H), (B·G, C', W)
        a_h = self.coord_gate(a_h.reshape(b * g, cg, h, 1))
        a_w = self.coord_gate(a_w.reshape(b * g, cg, 1, w))
        x1 = x * like_layout(a_h.view(b, c, h, 1), x) * like_layout(a_w.view(b, c, 1, w), x)  # official order
        # GroupNorm(C', C') on each group = one group per channel on (N, C, H, W), parameters tiled G times
        x1 = _per_channel_norm(x1, self.norm.weight.repeat(g), self.norm.bias.repeat(g), self.norm.eps)
        # 3×3 branch: the shared C' → C' conv as one grouped conv on x (6× faster than on the (B·G, C', H, W)
        # batch at C' = 2 on CPU, and no copy of x)
        x2 = F.conv2d(x, self.conv3x3.weight.repeat(g, 1, 1, 1), self.conv3x3.bias.repeat(g), padding=1, groups=g)
        s1 = self.channel_gate(x1.mean((2, 3)).reshape(b * g, 1, cg))  # (B·G, 1, C')
        s2 = self.channel_gate(x2.mean((2, 3)).reshape(b * g, 1, cg))  # (B·G, 1, C')
        attn = torch.bmm(s1, x2.reshape(b * g, cg, h * w)) + torch.bmm(s2, x1.reshape(b * g, cg, h * w))
        wgt = self.gate(attn.reshape(b, g, 1, h, w))  # (B, G, 1, H, W)
        return (x.view(b, g, cg, h, w) * wgt).reshape(b, c, h, w)  # x first: keeps x's memory format


def _per_channel_norm(y: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """``F.group_norm(y, C, weight, bias, eps)``: each (sample, channel) standardised over H·W, then affine.

    PyTorch's CPU group norm is 15× slower on channels_last input; there the statistics are two exact passes
    (the mean, then the mean square of the centred values) and the affine map a scale and a shift.
    """
    if not is_channels_last(y):  # the aten op: F.group_norm's batch-size check rejects N = 1 at 1×1 in training
        return torch.group_norm(y, y.shape[1], weight, bias, eps, False)
    d = y - y.mean((2, 3), keepdim=True)
    rstd = ((d * d).mean((2, 3), keepdim=True) + eps).rsqrt()
    return (d * (rstd * weight[:, None, None])).add_(bias[:, None, None])


@official("ema")
def _ema(channels: int, c2=None, factor: int = 32):
    """YOLOonMe/EMA-attention-module ``EMA(channels, c2=None, factor=32)`` (``c2`` is unused upstream)."""
    del c2
    module = EfficientMultiScaleAttention(channels, groups=factor)
    return module, rename_prefix(("gn.", "norm."))
