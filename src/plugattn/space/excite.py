"""Excite: descriptor → attention logits.

An excite maps one descriptor tensor to logits shaped to broadcast against the input. When a squeeze
returns several descriptors for a shared excitation (``Squeeze.shared``), the composed module applies the
excite to each and sums the logits (CBAM's shared MLP); excites with ``takes_tuple = True`` instead take
the whole tuple (:class:`AxialMLP`, :class:`Identity`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import (
    Gate,
    LayerType,
    bn_momentum,
    check_odd_kernel,
    check_positive,
    eca_kernel_size,
    factory_kwargs,
    get_layer,
    reduced_width,
)

__all__ = [
    "Excite", "MLP", "ChannelConv", "ChannelSelfAttention", "SpatialConv", "MultiScale", "AxialMLP",
    "ChannelwiseFC", "Identity",
]


CBAM_NORM = bn_momentum(0.01)
"""CBAM's norm after its spatial conv: BatchNorm2d with momentum 0.01."""


def _norm(norm_layer: LayerType, channels: int, dd: dict) -> nn.Module:
    return get_layer(norm_layer, channels, arg_name="norm_layer", **dd)


class Excite(nn.Module):
    """Base class of the excites: ``forward(descriptor)`` → logits.

    Attributes:
        in_channels: dim 1 of the descriptor it takes.
        out_channels: dim 1 of the logits.
        takes_tuple: True if ``forward`` takes a tuple descriptor as a whole.
    """

    in_channels: int
    out_channels: int
    takes_tuple: bool = False


class MLP(Excite):
    r"""Bottleneck MLP (SE): :math:`W_2\,\delta(\mathrm{norm}(W_1 d + b_1)) + b_2` as 1×1 convs, at every position.

    Parameter names equal :class:`~plugattn.modules.se.SqueezeExcite`'s (``fc1``, ``norm``, ``fc2``). The
    1×1 convs (``nn.Conv2d``) on the pooled (N, C, 1, 1) descriptor.

    Args:
        in_channels: descriptor channels.
        out_channels: logit channels. Default: ``in_channels``.
        rd_ratio: hidden width as a fraction of ``out_channels``. Default: 1/16.
        rd_channels: hidden width, overriding ``rd_ratio``. Default: None.
        rd_divisor: ``None`` floors (SE paper); an int rounds to a multiple (timm). Default: None.
        bias: Default: True.
        act_layer: δ. Default: ReLU.
        norm_layer: optional norm after W₁, called with the hidden width. Default: None.

    Shape:
        (N, C_in, h, w) → (N, C_out, h, w).

    Examples:
        >>> MLP(16, rd_channels=4)(torch.randn(2, 16, 1, 1)).shape
        torch.Size([2, 16, 1, 1])
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, *, rd_ratio: float = 1 / 16,
                 rd_channels: int | None = None, rd_divisor: int | None = None, bias: bool = True,
                 act_layer: LayerType = "relu", norm_layer: LayerType = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        out_channels = in_channels if out_channels is None else out_channels
        check_positive(name, in_channels=in_channels, out_channels=out_channels)
        rd_channels = reduced_width(name, out_channels, rd_ratio, rd_channels, rd_divisor)
        dd = factory_kwargs(device, dtype)
        self.in_channels, self.out_channels, self.rd_channels = in_channels, out_channels, rd_channels
        self.fc1 = nn.Conv2d(in_channels, rd_channels, 1, bias=bias, **dd)
        self.norm = _norm(norm_layer, rd_channels, dd)
        self.act = get_layer(act_layer, arg_name="act_layer")
        self.fc2 = nn.Conv2d(rd_channels, out_channels, 1, bias=bias, **dd)

    def forward(self, d: Tensor) -> Tensor:
        return self.fc2(self.act(self.norm(self.fc1(d))))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, rd_channels={self.rd_channels}"


class ChannelConv(Excite):
    r"""Local interaction across channels (ECA): a k-tap 1-D conv along the channel axis, at every position.

    Zero padding at both channel ends, one kernel for all channels, no bias. Parameter name ``conv`` as
    :class:`~plugattn.modules.eca.EfficientChannelAttention`.

    Args:
        channels: C, descriptor channels.
        kernel_size: k (odd); None gives ECA's adaptive ψ(C). Default: None.
        gamma: γ of ψ(C). Default: 2.
        beta: b of ψ(C). Default: 1.
        dilation: spacing of the taps (not in ECA). Default: 1.

    Shape:
        (N, C, h, w) → (N, C, h, w).

    Examples:
        >>> ChannelConv(64)(torch.randn(2, 64, 1, 1)).shape
        torch.Size([2, 64, 1, 1])
    """

    def __init__(self, channels: int, *, kernel_size: int | None = None, gamma: float = 2, beta: float = 1,
                 dilation: int = 1, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, channels=channels, dilation=dilation)
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        check_odd_kernel(name, kernel_size)
        self.in_channels = self.out_channels = channels
        self.kernel_size, self.dilation = kernel_size, dilation
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
                              bias=False, device=device, dtype=dtype)

    def forward(self, d: Tensor) -> Tensor:
        n, c, h, w = d.shape
        s = d.permute(0, 2, 3, 1).reshape(n * h * w, 1, c)  # (N·h·w, 1, C): channels as a sequence
        return self.conv(s).reshape(n, h, w, c).permute(0, 3, 1, 2)  # (N, C, h, w)

    def extra_repr(self) -> str:
        return f"channels={self.in_channels}, kernel_size={self.kernel_size}, dilation={self.dilation}"


class ChannelSelfAttention(Excite):
    r"""Global interaction across channels: single-head self-attention with the channels as tokens.

    .. math::
        e_c = d_c\, u + p_c,\quad A = \mathrm{softmax}\Big(\frac{(E W_q)(E W_k)^\top}{\sqrt{e}}\Big),\quad
        \ell = (A\, E W_v)\, w_o + b_o

    Each channel is a token whose embedding :math:`e_c \in \mathbb{R}^e` is its descriptor value times a
    shared vector u plus a learned channel embedding :math:`p_c` (which channel it is). A (C × C)
    passes through a softmax :class:`~plugattn._layers.Gate` (``attn_gate``). Unlike the MLP (one fixed
    mixing of all channels) and ECA (a fixed local window), the mixing depends on the input. Not from a
    paper; in the spirit of DANet's channel attention, applied to the squeezed descriptor.

    Args:
        channels: C, descriptor channels.
        embed_dim: e. Default: 8.

    Shape:
        (N, C, h, w) → (N, C, h, w).

    Examples:
        >>> ChannelSelfAttention(16)(torch.randn(2, 16, 1, 1)).shape
        torch.Size([2, 16, 1, 1])
    """

    def __init__(self, channels: int, *, embed_dim: int = 8,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels, embed_dim=embed_dim)
        dd = factory_kwargs(device, dtype)
        self.in_channels = self.out_channels = channels
        self.embed_dim = embed_dim
        self.value_embed = nn.Parameter(torch.empty(embed_dim, **dd))  # u
        self.channel_embed = nn.Parameter(torch.empty(channels, embed_dim, **dd))  # p
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False, **dd)
        self.proj = nn.Linear(embed_dim, 1, **dd)
        self.attn_gate = Gate("softmax", dim=-1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.value_embed)
        nn.init.normal_(self.channel_embed, std=0.02)
        self.qkv.reset_parameters()
        self.proj.reset_parameters()

    def forward(self, d: Tensor) -> Tensor:
        n, c, h, w = d.shape
        s = d.permute(0, 2, 3, 1).reshape(n * h * w, c, 1)  # (B, C, 1), B = N·h·w
        e = s * self.value_embed + self.channel_embed  # (B, C, e)
        q, k, v = self.qkv(e).chunk(3, dim=-1)  # each (B, C, e)
        a = self.attn_gate(torch.matmul(q, k.transpose(1, 2)) * (self.embed_dim ** -0.5))  # (B, C, C)
        logits = self.proj(torch.matmul(a, v))  # (B, C, 1)
        return logits.reshape(n, h, w, c).permute(0, 3, 1, 2)  # (N, C, h, w)

    def extra_repr(self) -> str:
        return f"channels={self.in_channels}, embed_dim={self.embed_dim}"


class SpatialConv(Excite):
    r"""A k×k conv over a pooled map (CBAM's spatial gate): conv → norm → act, padding ``dilation·(k−1)/2``.

    Args:
        in_channels: descriptor maps (2 for CBAM's [max; mean]). Default: 2.
        out_channels: logit maps. Default: 1.
        kernel_size: k (odd). Default: 7.
        dilation: Default: 1.
        bias: Default: False (CBAM).
        norm_layer: Default: BatchNorm2d with momentum 0.01 (CBAM).
        act_layer: Default: None.

    Shape:
        (N, C_in, H, W) → (N, C_out, H, W).

    Examples:
        >>> SpatialConv()(torch.randn(2, 2, 9, 7)).shape
        torch.Size([2, 1, 9, 7])
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 1, *, kernel_size: int = 7, dilation: int = 1,
                 bias: bool = False, norm_layer: LayerType = CBAM_NORM, act_layer: LayerType = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, in_channels=in_channels, out_channels=out_channels, dilation=dilation)
        check_odd_kernel(name, kernel_size)
        dd = factory_kwargs(device, dtype)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.dilation = kernel_size, dilation
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                              dilation=dilation, bias=bias, **dd)
        self.bn = _norm(norm_layer, out_channels, dd)
        self.act = nn.Identity() if act_layer is None else get_layer(act_layer, arg_name="act_layer")

    def forward(self, d: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(d)))

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}")


class MultiScale(Excite):
    r"""Several excites of the same descriptor (e.g. kernel sizes 3, 5, 7), logits fused.

    ``fuse="sum"`` adds the logits (for linear branches such as :class:`ChannelConv` this is one conv with
    the largest kernel, re-parameterised), ``"mean"`` averages them, ``"max"`` takes the elementwise max
    (non-linear: with a monotone gate, each channel keeps its most confident scale).

    Args:
        branches: the excites; same in/out channels.
        fuse: ``"sum"``, ``"mean"`` or ``"max"``. Default: ``"sum"``.

    Shape:
        As each branch.

    Examples:
        >>> m = MultiScale([ChannelConv(16, kernel_size=k) for k in (3, 5)], fuse="max")
        >>> m(torch.randn(2, 16, 1, 1)).shape
        torch.Size([2, 16, 1, 1])
    """

    FUSES = ("sum", "mean", "max")

    def __init__(self, branches: Sequence[Excite], *, fuse: str = "sum") -> None:
        super().__init__()
        name = type(self).__name__
        branches = list(branches)
        if not branches or not all(isinstance(b, nn.Module) for b in branches):
            raise ValueError(f"{name}: branches must be a non-empty sequence of modules")
        if fuse not in self.FUSES:
            raise ValueError(f"{name}: fuse must be one of {self.FUSES}, got {fuse!r}")
        self.branches = nn.ModuleList(branches)
        self.fuse = fuse
        self.in_channels = branches[0].in_channels
        self.out_channels = branches[0].out_channels

    def forward(self, d: Tensor) -> Tensor:
        ls = [b(d) for b in self.branches]
        if self.fuse == "max":
            return torch.stack(ls).amax(0)
        out = sum(ls[1:], ls[0])
        return out * (1.0 / len(ls)) if self.fuse == "mean" else out

    def extra_repr(self) -> str:
        return f"fuse={self.fuse!r}"


class AxialMLP(Excite):
    r"""Coordinate Attention's excitation of the (H-pooled, W-pooled) pair.

    The two descriptors are concatenated along the spatial axis, (N, C, H+W, 1), and go through one
    shared 1×1 conv C → m (with bias) → norm → act (the norm sees both, as in the official code); the
    result is split back and mapped to the logits by ``fc_h`` and ``fc_w`` (1×1 convs m → C, with bias).
    m = max(``min_channels``, ⌊C·rd_ratio⌋).

    Args:
        channels: C, descriptor channels.
        out_channels: logit channels. Default: ``channels``.
        rd_ratio: 1/r (paper r = 32). Default: 1/32.
        rd_channels: m, overriding ``rd_ratio`` and ``min_channels``. Default: None.
        rd_divisor: ``None`` floors C·rd_ratio (official); an int rounds to a multiple. Default: None.
        min_channels: floor of m. Default: 8.
        bias: Default: True.
        norm_layer: Default: BatchNorm2d.
        act_layer: Default: hard swish.

    Shape:
        ((N, C, H, 1), (N, C, 1, W)) → ((N, C_out, H, 1), (N, C_out, 1, W)).

    Examples:
        >>> lh, lw = AxialMLP(16)((torch.randn(2, 16, 5, 1), torch.randn(2, 16, 1, 3)))
        >>> lh.shape, lw.shape
        (torch.Size([2, 16, 5, 1]), torch.Size([2, 16, 1, 3]))
    """

    takes_tuple = True

    def __init__(self, channels: int, out_channels: int | None = None, *, rd_ratio: float = 1 / 32,
                 rd_channels: int | None = None, rd_divisor: int | None = None, min_channels: int = 8,
                 bias: bool = True, norm_layer: LayerType = "batchnorm", act_layer: LayerType = "hardswish",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        out_channels = channels if out_channels is None else out_channels
        check_positive(name, channels=channels, out_channels=out_channels)
        check_positive(name, min_channels=min_channels)
        mip = reduced_width(name, channels, rd_ratio, rd_channels, rd_divisor, min_channels=min_channels)
        dd = factory_kwargs(device, dtype)
        self.in_channels, self.out_channels, self.rd_channels = channels, out_channels, mip
        self.fc1 = nn.Conv2d(channels, mip, 1, bias=bias, **dd)
        self.norm = _norm(norm_layer, mip, dd)
        self.act = get_layer(act_layer, arg_name="act_layer")
        self.fc_h = nn.Conv2d(mip, out_channels, 1, bias=bias, **dd)
        self.fc_w = nn.Conv2d(mip, out_channels, 1, bias=bias, **dd)

    def forward(self, d: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        if not isinstance(d, (tuple, list)) or len(d) != 2:
            raise TypeError(f"{type(self).__name__}: expected the (H-pooled, W-pooled) pair of a squeeze with "
                            f"axes='h+w', got {type(d).__name__}")
        dh, dw = d  # (N, C, H, 1), (N, C, 1, W)
        h, w = dh.shape[2], dw.shape[3]
        y = torch.cat((dh, dw.transpose(2, 3)), dim=2)  # (N, C, H+W, 1)
        y = self.act(self.norm(self.fc1(y)))  # (N, m, H+W, 1)
        yh, yw = y.split((h, w), dim=2)  # (N, m, H, 1), (N, m, W, 1)
        return self.fc_h(yh), self.fc_w(yw.transpose(2, 3))  # (N, C, H, 1), (N, C, 1, W)

    def extra_repr(self) -> str:
        return f"channels={self.in_channels}, out_channels={self.out_channels}, rd_channels={self.rd_channels}"


class ChannelwiseFC(Excite):
    r"""Channel-wise fully connected layer over K statistics (SRM's style integration), then a norm.

    :math:`z_c = \sum_k w_{c,k}\, d_{k,c}` on a stat-major concatenated descriptor (N, K·C, h, w) —
    each channel combines only its own K statistics (a depthwise Conv1d of kernel K) — then the norm.
    Parameter names ``cfc`` (C, K) and ``bn`` as :class:`~plugattn.modules.srm.StyleRecalibration`.

    Args:
        channels: C.
        num_stats: K. Default: 2.
        norm_layer: norm after the CFC, called with C. Default: BatchNorm2d.

    Shape:
        (N, K·C, h, w) → (N, C, h, w).

    Examples:
        >>> ChannelwiseFC(8)(torch.randn(2, 16, 1, 1)).shape
        torch.Size([2, 8, 1, 1])
    """

    def __init__(self, channels: int, *, num_stats: int = 2, norm_layer: LayerType = "batchnorm",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels, num_stats=num_stats)
        dd = factory_kwargs(device, dtype)
        self.in_channels, self.out_channels = channels * num_stats, channels
        self.num_stats = num_stats
        self.cfc = nn.Parameter(torch.empty(channels, num_stats, **dd))  # (C, K)
        self.bn = _norm(norm_layer, channels, dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.cfc)  # SRM's init

    def forward(self, d: Tensor) -> Tensor:
        n, _, h, w = d.shape
        t = d.reshape(n, self.num_stats, self.out_channels, h, w).permute(0, 2, 3, 4, 1)  # (N, C, h, w, K)
        return self.bn((t * self.cfc[:, None, None, :]).sum(-1))  # (N, C, h, w)

    def extra_repr(self) -> str:
        return f"channels={self.out_channels}, num_stats={self.num_stats}"


class Identity(Excite):
    """No excitation: the descriptor (or tuple) is the logits."""

    takes_tuple = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels)
        self.in_channels = self.out_channels = channels

    def forward(self, d: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        return d

    def extra_repr(self) -> str:
        return f"channels={self.in_channels}"
