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
from torch import Tensor

from .._layers import Gate, LayerType, check_input, check_positive, factory_kwargs, largest_divisor
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

    As in the official code the groups are folded into the batch, (B·G, C', H, W), so the convs and GN are
    shared by all groups. The 1×1 conv (C' → C', bias) runs on the concatenated H- and W-pooled descriptors;
    GN is ``GroupNorm(C', C')`` (one group per channel, affine); the 3×3 conv is C' → C' with bias and
    padding 1. Both softmaxes run over the C' channels of a group. As in the official code, ``nn.GroupNorm``
    raises ``ValueError`` when it sees a single value per channel (B·G·H·W = 1: batch 1, 1×1 input and G = 1).

    **Groups.** The official ``factor`` G = 32 needs C divisible by 32. With ``groups=None`` (default) G is the
    largest divisor of C not above min(32, C // 2), so that every group keeps at least two channels and its
    channel softmax is not trivially 1, and any width works (C = 16 → 8, 80 → 20, 112 → 28, 440 → 22,
    C divisible by 32 and ≥ 64 → 32). An explicit ``groups`` (the official ``factor``) must divide C
    (``ValueError`` otherwise, naming a value that would; the official code fails there too).

    Args:
        channels: C, input channels.
        groups: G (official ``factor``). Default: None, i.e. the largest divisor of C not above
            min(32, C // 2) (at least 1).
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
            groups = largest_divisor(channels, min(32, channels // 2))
        check_positive(owner, groups=groups)
        if channels % groups:
            raise ValueError(f"{owner}: channels={channels} must be divisible by the number of groups {groups}; "
                             f"groups={largest_divisor(channels, groups)} would work")
        dd = factory_kwargs(device, dtype)
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
        group_x = x.reshape(b * g, cg, h, w)  # groups folded into the batch: (B·G, C', H, W)
        # 1×1 branch: pool_h (avg over W) and pool_w (avg over H), one shared 1×1 conv on both, split back
        x_h = group_x.mean(3, keepdim=True)  # (B·G, C', H, 1)
        x_w = group_x.mean(2, keepdim=True).permute(0, 1, 3, 2)  # (B·G, C', W, 1)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))  # (B·G, C', H + W, 1)
        x_h, x_w = hw[:, :, :h], hw[:, :, h:]
        x1 = self.norm(group_x * self.coord_gate(x_h) * self.coord_gate(x_w.permute(0, 1, 3, 2)))  # (B·G, C', H, W)
        # 3×3 branch
        x2 = self.conv3x3(group_x)  # (B·G, C', H, W)
        # cross-spatial learning: each branch's channel softmax (over C') weights the other branch's positions
        x11 = self.channel_gate(x1.mean((2, 3)).reshape(b * g, 1, cg))  # (B·G, 1, C')
        x12 = x2.reshape(b * g, cg, h * w)  # (B·G, C', H·W)
        x21 = self.channel_gate(x2.mean((2, 3)).reshape(b * g, 1, cg))  # (B·G, 1, C')
        x22 = x1.reshape(b * g, cg, h * w)  # (B·G, C', H·W)
        weights = torch.matmul(x11, x12) + torch.matmul(x21, x22)  # (B·G, 1, H·W)
        # y_g = x_g·σ(A) on x viewed as (B, G, C', H, W), so that y keeps x's memory format
        return (x.view(b, g, cg, h, w) * self.gate(weights.view(b, g, 1, h, w))).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}"


@official("ema")
def _ema(channels: int, c2=None, factor: int = 32):
    """YOLOonMe/EMA-attention-module ``EMA(channels, c2=None, factor=32)`` (``c2`` is unused upstream)."""
    del c2
    module = EfficientMultiScaleAttention(channels, groups=factor)
    return module, rename_prefix(("gn.", "norm."))
