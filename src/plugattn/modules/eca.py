"""Efficient Channel Attention (ECA): local cross-channel interaction by a 1-D convolution.

Paper: Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks", CVPR 2020. https://arxiv.org/abs/1910.03151 — official code: https://github.com/BangguWu/ECANet
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import Gate, LayerType, check_input, check_positive
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["EfficientChannelAttention", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """The paper's adaptive kernel size ψ(C) = |log₂(C)/γ + b/γ|_odd (t, bumped to the next odd)."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


@register(
    "eca", paper="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks", year=2020,
    url="https://arxiv.org/abs/1910.03151", kind="channel", official="BangguWu/ECANet eca_layer",
)
class EfficientChannelAttention(nn.Module):
    r"""ECA: :math:`y = x \cdot \sigma(\mathrm{conv1d}_k(\mathrm{GAP}(x)))`, one k-tap kernel shared by all channels.

    The 1-D convolution runs along the channel axis with zero padding at both ends and no bias.

    Args:
        channels: C, input channels.
        kernel_size: k (odd). Default: None, the paper's adaptive ψ(C) with γ, b below.
        gamma: γ of ψ(C). Default: 2.
        beta: b of ψ(C). Default: 1.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = EfficientChannelAttention(256)
        >>> m.kernel_size, m(torch.randn(1, 256, 4, 4)).shape
        (5, torch.Size([1, 256, 4, 4]))
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int | None = None,
        gamma: float = 2,
        beta: float = 1,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels)
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"{type(self).__name__}: kernel_size must be a positive odd int, got {kernel_size!r}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False, device=device, dtype=dtype)
        self.gate = Gate(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        n, c = x.shape[:2]
        s = x.mean((2, 3)).view(n, 1, c)  # (N, 1, C): channels as a 1-D sequence
        w = self.gate(self.conv(s).view(n, c, 1, 1))
        return x * w


@official("eca")
def _eca(channel: int, k_size: int = 3):
    """BangguWu/ECANet ``eca_layer(channel, k_size)``: k is given, not adaptive."""
    return EfficientChannelAttention(channel, kernel_size=k_size), rename_prefix()
