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
           "taps_plain", "DEFAULT_BLOCK_BUDGET", "attention_plain", "attention_blockwise"]


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
        return taps_fast(x, self.weight, self.bias, int(self.padding[0]), self.dilation[0])


# ---- blockwise attention (DANet PAM, non-local) ----

DEFAULT_BLOCK_BUDGET = 8 * 2**20
"""Bytes of one block of attention logits (batch × rows × keys × itemsize) in :func:`attention_blockwise`."""


def attention_plain(q: Tensor, k: Tensor, v: Tensor, gate: nn.Module, scale: float | None = None) -> Tensor:
    """Softmax attention with the whole matrix: ``v · gate(scale · q k)ᵀ``.

    Args:
        q: queries (N, L, d).
        k: keys (N, d, S).
        v: values (N, Cv, S).
        gate: the softmax over the keys (a ``Gate``), applied to the (N, L, S) logits.
        scale: logit scale; ``None`` leaves the logits unscaled (DANet).

    Returns:
        (N, Cv, L).
    """
    logits = torch.bmm(q, k)  # (N, L, S)
    if scale is not None:
        logits = logits * scale
    return torch.bmm(v, gate(logits).transpose(1, 2))  # (N, Cv, L)


def attention_blockwise(
    q: Tensor, k: Tensor, v: Tensor, gate: nn.Module, scale: float | None = None, *,
    block_budget: int | None = DEFAULT_BLOCK_BUDGET, query_block: int | None = None, grad_checkpoint: bool = False,
) -> Tensor:
    """:func:`attention_plain` over blocks of query positions, so the L × S matrix is never built whole.

    Each block of ``rows`` queries is :func:`attention_plain` on its own (``gate`` is called once per block, in
    order) and its output goes into its slice of the (N, Cv, L) result. ``rows`` is ``query_block`` if given, else
    the most rows whose logits (N × rows × S × itemsize bytes) fit in ``block_budget``; ``block_budget=None``,
    or ``rows >= L``, gives one block: :func:`attention_plain` itself. Under ``torch.fx`` symbolic tracing,
    compile and export (:func:`is_plain`) the plain twin runs. ``grad_checkpoint`` recomputes each block in the
    backward pass (``torch.utils.checkpoint``) instead of storing its attention.

    Shapes as in :func:`attention_plain`: q (N, L, d), k (N, d, S), v (N, Cv, S) → (N, Cv, L).
    """
    n, length, keys = q.shape[0], q.shape[1], k.shape[2]
    if is_plain(q) or (block_budget is None and query_block is None):
        return attention_plain(q, k, v, gate, scale)
    rows = query_block or max(1, block_budget // max(1, n * keys * q.element_size()))
    if rows >= length:
        return attention_plain(q, k, v, gate, scale)
    out = v.new_empty(n, v.shape[1], length)  # (N, Cv, L)
    for start in range(0, length, rows):
        q_blk = q[:, start:start + rows]  # (N, rows, d)
        if grad_checkpoint:
            y = torch.utils.checkpoint.checkpoint(attention_plain, q_blk, k, v, gate, scale, use_reentrant=False)
        else:
            y = attention_plain(q_blk, k, v, gate, scale)
        out[:, :, start:start + rows] = y  # (N, Cv, rows)
    return out
