"""Efficient Channel Attention (ECA): local cross-channel interaction by a 1-D convolution.

Paper: Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks", CVPR 2020. https://arxiv.org/abs/1910.03151 — official code: https://github.com/BangguWu/ECANet

Variant in this file: circular ECA (``ceca``), timm's ``layers.eca.CecaModule`` (by Chris Ha,
https://github.com/VRandme, contributed to timm: https://github.com/huggingface/pytorch-image-models; not in the
ECA paper): the same 1-D conv across channels with circular instead of zero padding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .._layers import Gate, LayerType, check_input, check_odd_kernel, check_positive, eca_kernel_size
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["EfficientChannelAttention", "CircularECA"]


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
        check_odd_kernel(type(self).__name__, kernel_size)
        self.channels = channels
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False, device=device, dtype=dtype)
        self.gate = Gate(gate_layer)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        n, c = x.shape[:2]
        s = x.mean((2, 3)).unsqueeze(1)  # (N, 1, C): the channel descriptor as a 1-D sequence
        z = self.conv(s)  # (N, 1, C)
        return x * self.gate(z.view(n, c, 1, 1))


@official("eca")
def _eca(channel: int, k_size: int = 3):
    """BangguWu/ECANet ``eca_layer(channel, k_size)``: k is given, not adaptive."""
    return EfficientChannelAttention(channel, kernel_size=k_size), rename_prefix()


@register(
    "ceca", paper="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks (circular variant)",
    year=2020, url="https://arxiv.org/abs/1910.03151", kind="channel",
    official="timm layers.eca.CecaModule (Chris Ha)",
)
class CircularECA(nn.Module):
    r"""Circular ECA: :math:`y = x \cdot \sigma(\mathrm{conv1d}_k(\mathrm{pad}_\circ(\mathrm{GAP}(x))))`.

    ECA with the channel sequence padded circularly (channel C−1 is a neighbour of channel 0), as in
    timm's ``CecaModule``, where it was introduced; not in the ECA paper. Channels have no natural order, so
    the wrap-around removes the zero-padding edge effect at both ends without adding parameters.

    timm's rules are kept: the adaptive kernel is ψ(C) bumped to at least 3 (``max(ψ(C), 3)``), and the
    conv has no bias unless ``bias=True`` (timm enables a bias when its ``act_layer`` is given, yet never
    applies that activation; ``from_official("ceca_timm", act_layer=...)`` reproduces this).

    Args:
        channels: C, input channels.
        kernel_size: k (odd). Default: None, i.e. max(ψ(C), 3) with γ, b below.
        gamma: γ of ψ(C). Default: 2.
        beta: b of ψ(C). Default: 1.
        bias: a bias on the 1-D conv. Default: False.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = CircularECA(16)
        >>> m.kernel_size, m(torch.randn(1, 16, 4, 4)).shape
        (3, torch.Size([1, 16, 4, 4]))
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int | None = None,
        gamma: float = 2,
        beta: float = 1,
        bias: bool = False,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        if kernel_size is None:
            kernel_size = max(eca_kernel_size(channels, gamma, beta), 3)
        check_odd_kernel(owner, kernel_size)
        if kernel_size // 2 > channels:
            raise ValueError(f"{owner}: kernel_size={kernel_size} wraps around more than once for channels={channels}; "
                             f"circular padding needs kernel_size // 2 <= channels")
        self.channels = channels
        self.kernel_size = kernel_size
        self.padding = kernel_size // 2
        self.conv = nn.Conv1d(1, 1, kernel_size, bias=bias, device=device, dtype=dtype)
        self.gate = Gate(gate_layer)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, padding={self.padding} (circular)"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        n, c = x.shape[:2]
        s = x.mean((2, 3)).unsqueeze(1)  # (N, 1, C)
        s = F.pad(s, (self.padding, self.padding), mode="circular")  # (N, 1, C + 2p): channel C − 1 next to 0
        z = self.conv(s)  # (N, 1, C)
        return x * self.gate(z.view(n, c, 1, 1))


@official("ceca_timm")
def _ceca_timm(channels: int | None = None, kernel_size: int = 3, gamma: float = 2, beta: float = 1,
               act_layer: LayerType = None, gate_layer: LayerType = "sigmoid"):
    """The timm ``CecaModule(channels=None, kernel_size=3, gamma=2, beta=1, act_layer=None, gate_layer='sigmoid')``.

    As in timm, given ``channels`` the kernel is adaptive and ``kernel_size`` is ignored; ``act_layer`` only
    turns the conv bias on (timm never applies it). ``channels`` is required here (timm's ``channels=None``
    form, a fixed kernel for any channel count, has no plugattn equivalent).
    """
    if channels is None:
        raise TypeError("from_official('ceca_timm'): channels is required (plugattn modules are built for a "
                        "channel count)")
    del kernel_size  # timm ignores it when channels is given
    module = CircularECA(channels, gamma=gamma, beta=beta, bias=act_layer is not None,
                         gate_layer=gate_layer)
    return module, rename_prefix()
