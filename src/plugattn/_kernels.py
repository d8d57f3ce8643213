"""The few fast paths a module may use, each beside its plain twin.

Every speed-up here lives in the ``forward`` of the layer that owns the weights (a subclass of the PyTorch
layer, same parameters and state_dict keys), so hooks, pruning, parametrizations and wrappers see the
layer as usual. A fast path is kept only where ``benchmarks/network.py`` shows that it matters inside a
network's training step; ``tests/test_kernels.py`` checks each against its twin. Under ``torch.fx``
symbolic tracing, ``torch.compile``, ``torch.export`` and ONNX export the plain twin runs.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PointwiseConv2d", "ChannelConv1d", "is_plain", "pointwise_fast", "pointwise_plain", "taps_fast",
           "taps_plain"]


def is_plain(x: Tensor) -> bool:
    """True where the plain twin must run: symbolic tracing (``x`` is a Proxy), compile, export, ONNX export."""
    return (isinstance(x, torch.fx.Proxy) or torch.compiler.is_compiling() or torch.compiler.is_exporting()
            or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing())


# ---- 1×1 conv on pooled descriptors ----------------------------------------------------------------------------


def pointwise_fast(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A 1×1 conv of an (N, C_in, 1, 1) descriptor as one matrix product: (N, C_out, 1, 1).

    On CPU the conv kernel has a fixed cost per call (tens of µs of set-up) that dwarfs the work on a
    descriptor; ``F.linear`` has almost none.
    """
    return F.linear(x.flatten(1), weight.flatten(1), bias)[:, :, None, None]


def pointwise_plain(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The twin of :func:`pointwise_fast`: ``F.conv2d``."""
    return F.conv2d(x, weight, bias)


class PointwiseConv2d(nn.Conv2d):
    """A 1×1, stride-1, ungrouped ``nn.Conv2d`` that runs as a matrix product on 1×1 maps (pooled descriptors).

    Any other spatial size, and traced, compiled or exported graphs, use the ordinary convolution.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        bias: a learnable bias. Default: True.

    Examples:
        >>> conv = PointwiseConv2d(8, 4)
        >>> conv(torch.randn(2, 8, 1, 1)).shape
        torch.Size([2, 4, 1, 1])
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, *, device=None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        if is_plain(x) or x.dim() != 4 or x.shape[-1] != 1 or x.shape[-2] != 1:
            return super().forward(x)
        return pointwise_fast(x, self.weight, self.bias)


# ---- 1-D conv across channels (ECA) ----------------------------------------------------------------------------

_MAX_TAPS = 16


def taps_fast(s: Tensor, weight: Tensor, bias: Tensor | None, padding: int, dilation: int) -> Tensor:
    """A one-channel conv1d of (N, 1, L) as k shifted multiply-adds: (N, 1, L') (zero padding).

    ECA's k-tap conv over the channel descriptor costs a few element-wise kernels instead of one conv call
    with a fixed set-up cost on CPU.
    """
    k = weight.shape[-1]
    if padding:
        s = F.pad(s, (padding, padding))
    taps = weight.reshape(k)
    out = s.shape[-1] - dilation * (k - 1)
    y = s[..., :out] * taps[0]
    for j in range(1, k):
        y = torch.addcmul(y, s[..., j * dilation:j * dilation + out], taps[j])
    return y if bias is None else y + bias


def taps_plain(s: Tensor, weight: Tensor, bias: Tensor | None, padding: int, dilation: int) -> Tensor:
    """The twin of :func:`taps_fast`: ``F.conv1d``."""
    return F.conv1d(s, weight, bias, padding=padding, dilation=dilation)


class ChannelConv1d(nn.Conv1d):
    """ECA's ``nn.Conv1d(1, 1, k)`` across the channel sequence (N, 1, C), zero-padded, stride 1.

    On CPU, for k ≤ 16 in eager mode, it runs as k shifted multiply-adds (:func:`taps_fast`); otherwise the
    ordinary convolution.

    Args:
        kernel_size: k.
        padding: zeros at each end. Default: (k − 1)·dilation / 2.
        dilation: tap spacing. Default: 1.
        bias: a learnable bias. Default: False.

    Examples:
        >>> conv = ChannelConv1d(3)
        >>> conv(torch.randn(2, 1, 16)).shape
        torch.Size([2, 1, 16])
    """

    def __init__(self, kernel_size: int, *, padding: int | None = None, dilation: int = 1, bias: bool = False,
                 device=None, dtype=None) -> None:
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        super().__init__(1, 1, kernel_size, padding=padding, dilation=dilation, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        if is_plain(x) or x.device.type != "cpu" or self.kernel_size[0] > _MAX_TAPS:
            return super().forward(x)
        return taps_fast(x, self.weight, self.bias, self.padding[0], self.dilation[0])
