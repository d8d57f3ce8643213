"""Shuffle Attention (SA): grouped channel and spatial attention on channel halves, then a channel shuffle.

Paper: Zhang, Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", ICASSP 2021.
https://arxiv.org/abs/2102.00240 — official code: https://github.com/wofmanaf/SA-Net (``models/sa_resnet.py``,
``sa_layer(channel, groups=64)``). Written from the paper and the official code; no code is copied.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import Gate, LayerType, check_input, check_positive, factory_kwargs, largest_divisor
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["ShuffleAttention"]


@register(
    "shuffle", paper="SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", year=2021,
    url="https://arxiv.org/abs/2102.00240", kind="channel+spatial", official="wofmanaf/SA-Net sa_layer",
)
class ShuffleAttention(nn.Module):
    r"""Shuffle Attention: per group, a channel gate on one half and a spatial gate on the other.

    The channels are split into G groups (adjacent channels) and each group into two halves x₁, x₂ of
    C' = C/(2G) channels:

    .. math::
        x_1' = x_1 \cdot \sigma(W_1\,\mathrm{GAP}(x_1) + b_1),\qquad
        x_2' = x_2 \cdot \sigma(W_2\,\mathrm{GN}(x_2) + b_2)

    with per-channel scale and shift W, b ∈ ℝ^{C'} (official ``cweight``/``cbias``, ``sweight``/``sbias``,
    initialised to 0 and 1, so both gates start at σ(1)) and GN = ``GroupNorm(C', C')`` (one group per
    channel, affine). The halves are concatenated per group, the groups unfolded back to C channels, and the
    channels shuffled with 2 groups (``channel_shuffle(out, 2)``: output channel 2i is channel i, 2i+1 is
    channel C/2 + i). The parameters are shared by all groups.

    As in the official code the groups are folded into the batch, so the gates see (N·G, C', 1, 1) and
    (N·G, C', H, W) inputs (what :func:`plugattn.capture` records), and ``nn.GroupNorm`` raises ``ValueError``
    when it sees a single value per channel (N·G·H·W = 1: batch 1, 1×1 input and G = 1). The output has x's
    memory format.

    **Groups.** The official G = 64 needs C divisible by 128. With ``groups=None`` (default) G is the largest
    g ≤ 64 with C divisible by 2g, so any even width works (C = 16 → 8, 160 → 40, 192 → 48, 440 → 55,
    C divisible by 128 → 64); an explicit ``groups`` must make C divisible by 2G (``ValueError`` otherwise,
    naming a value that would; the official code fails there too).

    Args:
        channels: C, input channels (even).
        groups: G. Default: None, i.e. the largest g ≤ 64 (the paper's) dividing C / 2.
        gate_layer: σ of both gates. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = ShuffleAttention(256)
        >>> m.groups, m(torch.randn(2, 256, 7, 5)).shape
        (64, torch.Size([2, 256, 7, 5]))
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
        if channels % 2:
            raise ValueError(f"{owner}: channels must be even (each group splits into two halves), got {channels}")
        if groups is None:
            groups = largest_divisor(channels // 2, 64)
        check_positive(owner, groups=groups)
        if channels % (2 * groups):
            raise ValueError(f"{owner}: channels={channels} must be divisible by 2 * groups = {2 * groups}; "
                             f"groups={largest_divisor(channels // 2, groups)} would work")
        dd = factory_kwargs(device, dtype)
        half = channels // (2 * groups)
        self.channels = channels
        self.groups = groups
        self.channel_weight = nn.Parameter(torch.empty(1, half, 1, 1, **dd))
        self.channel_bias = nn.Parameter(torch.empty(1, half, 1, 1, **dd))
        self.spatial_weight = nn.Parameter(torch.empty(1, half, 1, 1, **dd))
        self.spatial_bias = nn.Parameter(torch.empty(1, half, 1, 1, **dd))
        self.norm = nn.GroupNorm(half, half, **dd)
        self.channel_gate = Gate(gate_layer)
        self.spatial_gate = Gate(gate_layer)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: weights 0, biases 1; GroupNorm affine (1, 0)."""
        nn.init.zeros_(self.channel_weight)
        nn.init.ones_(self.channel_bias)
        nn.init.zeros_(self.spatial_weight)
        nn.init.ones_(self.spatial_bias)
        self.norm.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        b, c, h, w = x.shape
        half = c // (2 * self.groups)
        group_x = x.reshape(b * self.groups, 2 * half, h, w)  # groups folded into the batch: (B·G, 2C', H, W)
        x_0, x_1 = group_x[:, :half], group_x[:, half:]  # channel half, spatial half: (B·G, C', H, W) each
        # channel attention: x₁' = x₁·σ(W₁·GAP(x₁) + b₁), with x₁ the official x_0
        xn = self.channel_weight * x_0.mean((2, 3), keepdim=True) + self.channel_bias  # (B·G, C', 1, 1)
        xn = x_0 * self.channel_gate(xn)
        # spatial attention: x₂' = x₂·σ(W₂·GN(x₂) + b₂), with x₂ the official x_1
        xs = self.spatial_weight * self.norm(x_1) + self.spatial_bias  # (B·G, C', H, W)
        xs = x_1 * self.spatial_gate(xs)
        out = torch.cat([xn, xs], dim=1).reshape(b, c, h, w)  # groups unfolded: (N, C, H, W)
        # channel_shuffle(out, 2): output channel 2i + j is channel j·C/2 + i. The shuffle is a copy; it is
        # written into a tensor laid out like x, so that y keeps x's memory format
        shuffled = out.view(b, 2, c // 2, h, w).transpose(1, 2)  # (N, C/2, 2, H, W)
        return torch.empty_like(x).view(b, c // 2, 2, h, w).copy_(shuffled).view(b, c, h, w)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}"


@official("shuffle")
def _shuffle(channel: int, groups: int = 64):
    """wofmanaf/SA-Net ``sa_layer(channel, groups=64)``."""
    module = ShuffleAttention(channel, groups=groups)
    return module, rename_prefix(("cweight", "channel_weight"), ("cbias", "channel_bias"),
                                 ("sweight", "spatial_weight"), ("sbias", "spatial_bias"), ("gn.", "norm."))
