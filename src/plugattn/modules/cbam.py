"""CBAM: Convolutional Block Attention Module (a channel gate, then a spatial gate).

Paper: Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018.
https://arxiv.org/abs/1807.06521 — official code: https://github.com/Jongchan/attention-module
(``MODELS/cbam.py``: ``CBAM``, ``ChannelGate``, ``SpatialGate``). Written from the specification of that code;
no official code is copied.

This file also holds :class:`ZPoolGate`, the Z-pool → k×k conv → BN → sigmoid primitive that CBAM's spatial
gate and Triplet Attention (``triplet.py``) share.

Speed notes (values are those of the plain formulation, up to float rounding):

- the channel gate's pooled descriptors go through the shared MLP as one stacked batch;
- the 2 → 1 k×k conv of :class:`ZPoolGate` runs as a 1×k conv and a shifted sum (:func:`_conv_2to1`), ~2x
  faster than oneDNN's direct conv with one output channel;
- max and mean pools are ``amax`` and ``mean`` (values and gradients), but in eager mode with one lean backward
  for both, and on CPU with maxima over H or W as a tree of vectorised elementwise maxima (see ``_max_mean``);
  only at exact ties does the gradient differ from the official ``torch.max``/``max_pool2d``, which give it all
  to one arg-max;
- in :class:`CBAM` without autograd, the spatial weights are applied in place to the channel-refined tensor
  (an intermediate, never the input), which saves one full-size allocation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .._layers import (
    ConvNormAct,
    Gate,
    LayerType,
    axis_mean,
    bn_momentum,
    check_input,
    check_odd_kernel,
    check_positive,
    get_layer,
    is_eager,
    make_divisible,
)
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["CBAM", "CBAMChannelGate", "CBAMSpatialGate", "ZPoolGate", "POOL_TYPES"]

POOL_TYPES = ("avg", "max", "lp", "lse")
"""Pool types of the official ``ChannelGate``: mean, max, L2 norm (``lp_pool2d`` with p = 2), log-sum-exp."""

_BN_001 = bn_momentum(0.01)  # CBAM and Triplet: BatchNorm2d(eps 1e-5, momentum 0.01)

_URL = "https://arxiv.org/abs/1807.06521"
_PAPER = "CBAM: Convolutional Block Attention Module"
_OFFICIAL = "Jongchan/attention-module MODELS/cbam.py"


def _check_pool_types(owner: str, pool_types: Sequence[str]) -> tuple[str, ...]:
    if isinstance(pool_types, str) or not isinstance(pool_types, Sequence):
        raise TypeError(f"{owner}: pool_types must be a sequence of names from {POOL_TYPES}, got {pool_types!r}")
    if len(pool_types) == 0 or any(p not in POOL_TYPES for p in pool_types):
        raise ValueError(f"{owner}: pool_types must be a non-empty sequence of {POOL_TYPES}, got {pool_types!r}")
    return tuple(pool_types)


def _check_optional_channels(owner: str, channels: int | None) -> None:
    if channels is not None:
        check_positive(owner, channels=channels)


def _tree_max(x: Tensor, dim: int) -> Tensor:
    """Max over ``dim`` by a halving tree of elementwise maxima (two overlapping halves when the length is odd)."""
    n = x.shape[dim]
    while n > 1:
        h = (n + 1) // 2
        x = torch.maximum(x.narrow(dim, 0, h), x.narrow(dim, n - h, h))
        n = h
    return x.squeeze(dim)


def _max_values(x: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """``x.amax(dim)`` without autograd, eager. On CPU, a maximum over H or W alone is a tree of elementwise maxima:
    PyTorch's CPU max reduction runs a scalar loop when the contiguous extent is not a multiple of the vector
    width (W = 7, 14, 28, 56, ...), 10-20x slower than a sum; the tree's ops are vectorised."""
    if isinstance(dim, int) and dim != 1 and x.device.type == "cpu":
        return _tree_max(x, dim)
    return x.amax(dim)


def _mean(x: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """``x.mean(dim)``; over H or W alone through :func:`~plugattn._layers.axis_mean` (fast on channels_last)."""
    return axis_mean(x, dim) if dim in (2, 3) else x.mean(dim)


class _MaxMean(torch.autograd.Function):
    """(amax, mean) over ``dim`` in eager mode, with one lean backward pass for both.

    Forward: :func:`_max_values` and ``mean``. Backward: the sum of ``amax``'s and ``mean``'s own gradients (tied
    maxima share theirs equally), built in one new tensor by a compare, a count, an in-place product and an
    in-place add, instead of amax's chain of full-size casts and products (~40x its forward), mean's expanded
    division and autograd's accumulation of the two.
    """

    @staticmethod
    def forward(ctx, x: Tensor, dim: int | tuple[int, ...]) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        mx = _max_values(x, dim)
        ctx.save_for_backward(x, mx)
        ctx.dim = dim
        return mx, _mean(x, dim)

    @staticmethod
    def backward(ctx, g_max: Tensor | None, g_mean: Tensor | None) -> tuple[Tensor | None, None]:
        x, mx = ctx.saved_tensors
        dims = sorted((ctx.dim,) if isinstance(ctx.dim, int) else ctx.dim)
        for d in dims:  # back to keepdim shapes
            mx = mx.unsqueeze(d)
            g_max = None if g_max is None else g_max.unsqueeze(d)
            g_mean = None if g_mean is None else g_mean.unsqueeze(d)
        grad = None
        if g_max is not None:
            grad = torch.eq(x, mx, out=torch.empty_like(x))  # 1 at the arg-maxima, 0 elsewhere; x's dtype, layout
            grad.mul_(g_max / grad.sum(dims, keepdim=True))
        if g_mean is not None:
            g_mean = g_mean / math.prod(x.shape[d] for d in dims)
            grad = torch.empty_like(x).copy_(g_mean.expand_as(x)) if grad is None else grad.add_(g_mean)
        return grad, None


def _max_mean(x: Tensor, dim: int | tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``(x.amax(dim), x.mean(dim))``: same values and gradients, computed the fastest way available.

    Eager: :class:`_MaxMean` when ``x`` needs a gradient, else :func:`_max_values` and ``mean``. Compiled, exported
    and traced graphs: plain ``amax`` and ``mean``, which they fuse well, with no loop unrolled by the input size.
    """
    if is_eager():
        if x.requires_grad and torch.is_grad_enabled():
            return _MaxMean.apply(x, dim)
        return _max_values(x, dim), _mean(x, dim)
    return x.amax(dim), x.mean(dim)


def _global_pools(x: Tensor, pool_types: tuple[str, ...]) -> list[Tensor]:
    """The official ``ChannelGate`` pools, in ``pool_types`` order: (N, C, H, W) → [(N, C), ...].

    ``avg`` and ``max`` come from one :func:`_max_mean` call (one backward pass for both).
    """
    pools: dict[str, Tensor] = {}
    if "max" in pool_types:
        pools["max"], pools["avg"] = _max_mean(x, (2, 3))
    elif "avg" in pool_types:
        pools["avg"] = x.mean((2, 3))
    if "lp" in pool_types:
        pools["lp"] = torch.linalg.vector_norm(x, 2, dim=(2, 3))  # lp_pool2d, p = 2, full window: √Σx²
    if "lse" in pool_types:
        pools["lse"] = torch.logsumexp(x, dim=(2, 3))  # stable log-sum-exp
    return [pools[p] for p in pool_types]


def _conv_2to1(z: Tensor, weight: Tensor) -> Tensor:
    """``F.conv2d(z, weight, padding=k // 2)`` for a bias-free k×k conv, 2 → 1 channel, stride 1 (k odd).

    Computed as a 1×k conv into k channels, one per kernel row (the rows zero-padded by k // 2), and the sum of
    those k maps, each shifted by its row: the same products, summed in another order. oneDNN's direct conv pads
    the single output channel to a vector of 16 and runs ~2x slower on CPU, forward and backward; the
    formulation is plain ops, so compiled and exported graphs use it too.
    """
    k = weight.shape[-1]
    rows = F.conv2d(z, weight.transpose(0, 2).reshape(k, 2, 1, k), padding=k // 2)  # (N, k, P + 2·(k//2), Q)
    h = z.shape[2]
    out = rows[:, :1, :h]  # kernel row i sees the input rows shifted by i: out = Σ_i rows[:, i, i:i + P]
    if k > 1:
        out = out + rows[:, 1:2, 1:1 + h]
    for i in range(2, k):
        out = out.add_(rows[:, i:i + 1, i:i + h])  # autograd-safe: nothing saved the partial sum
    return out


class ZPoolGate(nn.Module):
    r"""Z-pool over one axis, a k×k conv on the remaining plane, BN and a gate: attention weights for ``x``.

    :math:`w = \sigma(\mathrm{BN}(\mathrm{conv}_{k\times k}([\max_d x;\ \mathrm{mean}_d x])))` — the Z-pool puts
    the **max first** (official CBAM ``ChannelPool`` and Triplet ``ZPool``); the conv is 2 → 1 with padding k // 2
    and no bias, followed by BN (eps 1e-5, momentum 0.01) and no activation. The weights broadcast against ``x``:

    ============  ==========  ============================  ==================  ==========================
    ``dim``       pools over  conv plane (rows, cols)       gate output         returned (broadcastable)
    ============  ==========  ============================  ==================  ==========================
    1             C           (H, W)                        (N, 1, H, W)        (N, 1, H, W)
    2             H           (C, W)                        (N, 1, C, W)        (N, C, 1, W)
    3             W           (H, C)                        (N, 1, H, C)        (N, C, H, 1)
    ============  ==========  ============================  ==================  ==========================

    ``dim=1`` is CBAM's spatial gate and Triplet's ``hw`` branch; ``dim=2`` and ``dim=3`` are Triplet's ``cw``
    and ``hc`` branches, in the orientation the official permutes give ((0, 2, 1, 3) and (0, 3, 2, 1)), but
    computed without permuting ``x``: only the small pooled map and weights are transposed. ``conv`` is a
    :class:`~plugattn._layers.ConvNormAct` (``conv.conv.weight`` (1, 2, k, k), ``conv.bn.*``, as the official
    ``BasicConv``); its conv is applied by :func:`_conv_2to1`, equal to ``conv.conv(z)``.

    Args:
        dim: the axis of (N, C, H, W) to pool over: 1, 2 or 3. Default: 1.
        kernel_size: k (odd). Default: 7.
        norm_layer: the norm after the conv; ``None`` drops it. Default: BatchNorm2d with momentum 0.01.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → weights as in the table above.

    Examples:
        >>> g = ZPoolGate(dim=3)
        >>> g(torch.randn(2, 16, 7, 5)).shape
        torch.Size([2, 16, 7, 1])
    """

    def __init__(
        self,
        *,
        dim: int = 1,
        kernel_size: int = 7,
        norm_layer: LayerType = _BN_001,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if dim not in (1, 2, 3) or isinstance(dim, bool):
            raise ValueError(f"{type(self).__name__}: dim must be 1 (C), 2 (H) or 3 (W), got {dim!r}")
        check_odd_kernel(type(self).__name__, kernel_size)
        self.dim = dim
        self.kernel_size = kernel_size
        self.conv = ConvNormAct(2, 1, kernel_size, bias=False, norm_layer=norm_layer, device=device, dtype=dtype)
        self.gate = Gate(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        d = self.dim
        mx, mean = _max_mean(x, d)  # each (N, P, Q): the two remaining axes, in x's order
        if d == 3:
            mx, mean = mx.transpose(1, 2), mean.transpose(1, 2)  # (N, C, H) → (N, H, C): H as rows
        z = torch.stack((mx, mean), 1)  # (N, 2, P, Q)
        y = _conv_2to1(z, self.conv.conv.weight)  # = self.conv.conv(z), faster: (N, 1, P, Q)
        if hasattr(self.conv, "bn"):  # ConvNormAct has no "bn" when norm_layer is None
            y = self.conv.bn(y)
        w = self.gate(y)
        if d == 2:
            return w.transpose(1, 2)  # (N, 1, C, W) → (N, C, 1, W), a view
        if d == 3:
            return w.permute(0, 3, 2, 1)  # (N, 1, H, C) → (N, C, H, 1), a view
        return w

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


@register("cbam_channel", paper=_PAPER, year=2018, url=_URL, kind="channel", official=_OFFICIAL + " ChannelGate")
class CBAMChannelGate(nn.Module):
    r"""CBAM channel attention: :math:`F' = M_c(F) \otimes F`.

    :math:`M_c(F) = \sigma\big(\sum_{p} \mathrm{MLP}(\mathrm{Pool}_p(F))\big)` over the pools p in ``pool_types``.

    One MLP (Linear C → C/r with bias, δ, Linear C/r → C with bias) is shared by every pool type; the logits
    of the pools are summed before σ, in ``pool_types`` order (the paper's pair is avg and max).

    Args:
        channels: C, input channels.
        rd_ratio: reduction 1/r of the hidden width (paper r = 16). Default: 1/16.
        rd_channels: hidden width C/r, overriding ``rd_ratio``; 0 is allowed (the official ⌊C/r⌋ for C < r: the
            gate is then the constant σ(Σ b₂)). Default: None, ⌊C·rd_ratio⌋ but at least 1.
        rd_divisor: ``None`` floors C·rd_ratio (official); an int rounds to a multiple (timm's rule).
        pool_types: a sequence of ``"avg"``, ``"max"``, ``"lp"`` (L2 norm √Σx²) and ``"lse"`` (log-sum-exp).
            Default: ("avg", "max").
        bias: biases of the two linear layers (official: True; timm's ``mlp_bias``: False). Default: True.
        act_layer: δ. Default: ReLU.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = CBAMChannelGate(64, pool_types=("avg", "max", "lse"))
        >>> m(torch.randn(2, 64, 7, 5)).shape
        torch.Size([2, 64, 7, 5])
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int | None = None,
        pool_types: Sequence[str] = ("avg", "max"),
        bias: bool = True,
        act_layer: LayerType = "relu",
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, channels=channels)
        if rd_channels is None:
            rd_channels = max(1, make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0))
        elif isinstance(rd_channels, bool) or not isinstance(rd_channels, int) or rd_channels < 0:
            raise ValueError(f"{name}: rd_channels must be an int >= 0, got {rd_channels!r}")
        pool_types = _check_pool_types(name, pool_types)
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.pool_types = pool_types
        with warnings.catch_warnings():  # rd_channels = 0 (official C < r): empty weights, nothing to initialise
            warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op")
            self.fc1 = nn.Linear(channels, rd_channels, bias=bias, **dd)
            self.act = get_layer(act_layer, arg_name="act_layer")
            self.fc2 = nn.Linear(rd_channels, channels, bias=bias, **dd)
        self.gate = Gate(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        n, c = x.shape[:2]
        s = torch.stack(_global_pools(x, self.pool_types))  # (P, N, C): every pool through the MLP at once
        logits = self.fc2(self.act(self.fc1(s))).sum(0)  # (N, C): the pools' logits summed
        return x * self.gate(logits).view(n, c, 1, 1)

    def extra_repr(self) -> str:
        return f"pool_types={self.pool_types}"


@register("cbam_spatial", paper=_PAPER, year=2018, url=_URL, kind="spatial", official=_OFFICIAL + " SpatialGate")
class CBAMSpatialGate(nn.Module):
    r"""CBAM spatial attention: :math:`F'' = M_s(F) \otimes F`.

    :math:`M_s(F) = \sigma(\mathrm{BN}(f^{k\times k}([\max_c F;\ \mathrm{mean}_c F])))`.

    The official code pools **max first** (the paper writes avg, max) and follows the bias-free conv with
    BN (momentum 0.01) and no activation. Built on :class:`ZPoolGate` (``dim=1``).

    Args:
        channels: C, input channels; ``None`` accepts any channel count (the official ``SpatialGate()`` has no
            channel argument). Default: None.
        kernel_size: k (odd). Default: 7.
        norm_layer: norm after the conv. Default: BatchNorm2d with momentum 0.01.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = CBAMSpatialGate()
        >>> m(torch.randn(2, 24, 13, 17)).shape
        torch.Size([2, 24, 13, 17])
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        kernel_size: int = 7,
        norm_layer: LayerType = _BN_001,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_optional_channels(type(self).__name__, channels)
        check_odd_kernel(type(self).__name__, kernel_size)
        self.channels = channels
        self.attn = ZPoolGate(dim=1, kernel_size=kernel_size, norm_layer=norm_layer, gate_layer=gate_layer,
                              device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        return x * self.attn(x)  # (N, C, H, W) · (N, 1, H, W)


@register("cbam", paper=_PAPER, year=2018, url=_URL, kind="channel+spatial", official=_OFFICIAL + " CBAM")
class CBAM(nn.Module):
    r"""CBAM: :math:`F' = M_c(F) \otimes F`, then :math:`F'' = M_s(F') \otimes F'` (sequential, channel first).

    :math:`M_c` is :class:`CBAMChannelGate` and :math:`M_s` is :class:`CBAMSpatialGate`; the spatial gate sees
    the channel-refined tensor. Defaults reproduce the official ``CBAM(gate_channels, 16, ['avg', 'max'])``,
    except that the hidden width is at least 1 here (official ⌊C/16⌋ can be 0; pass ``rd_channels=0``).

    Args:
        channels: C, input channels.
        rd_ratio: reduction 1/r of the MLP width (paper r = 16). Default: 1/16.
        rd_channels: MLP width, overriding ``rd_ratio`` (0 allowed). Default: None.
        rd_divisor: ``None`` floors C·rd_ratio (official); an int rounds to a multiple. Default: None.
        pool_types: channel-gate pools, from ``"avg"``, ``"max"``, ``"lp"``, ``"lse"``. Default: ("avg", "max").
        no_spatial: drop the spatial gate (official option). Default: False.
        kernel_size: k of the spatial conv (odd). Default: 7.
        bias: biases of the MLP. Default: True.
        act_layer: δ of the MLP. Default: ReLU.
        norm_layer: norm after the spatial conv. Default: BatchNorm2d with momentum 0.01.
        gate_layer: σ of both gates. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = CBAM(64)
        >>> m(torch.randn(2, 64, 7, 5)).shape
        torch.Size([2, 64, 7, 5])
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int | None = None,
        pool_types: Sequence[str] = ("avg", "max"),
        no_spatial: bool = False,
        kernel_size: int = 7,
        bias: bool = True,
        act_layer: LayerType = "relu",
        norm_layer: LayerType = _BN_001,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels)
        _check_pool_types(type(self).__name__, pool_types)
        check_odd_kernel(type(self).__name__, kernel_size)
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.channel = CBAMChannelGate(
            channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor, pool_types=pool_types,
            bias=bias, act_layer=act_layer, gate_layer=gate_layer, **dd,
        )
        self.spatial: CBAMSpatialGate | None = None
        if not no_spatial:
            self.spatial = CBAMSpatialGate(
                channels, kernel_size=kernel_size, norm_layer=norm_layer, gate_layer=gate_layer, **dd
            )

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        y = self.channel(x)  # F' (N, C, H, W), a new tensor
        if self.spatial is None:
            return y
        w = self.spatial.attn(y)  # M_s(F') (N, 1, H, W)
        if y.requires_grad or w.requires_grad:
            return y * w
        return y.mul_(w)  # no autograd: F' is our own intermediate, so scale it in place


# --- official converters (Jongchan/attention-module MODELS/cbam.py) ---------------------------------------------

_CHANNEL_KEYS = (("mlp.1.", "fc1."), ("mlp.3.", "fc2."))  # official mlp = Flatten, Linear, ReLU, Linear


def _official_width(name: str, gate_channels: int, reduction_ratio: int) -> int:
    check_positive(f"from_official({name!r})", gate_channels=gate_channels, reduction_ratio=reduction_ratio)
    return gate_channels // reduction_ratio  # no minimum: 0 when C < r


@official("cbam")
def _cbam(gate_channels: int, reduction_ratio: int = 16, pool_types: Sequence[str] = ("avg", "max"),
          no_spatial: bool = False):
    """``CBAM(gate_channels, reduction_ratio=16, pool_types=['avg', 'max'], no_spatial=False)``."""
    module = CBAM(gate_channels, rd_channels=_official_width("cbam", gate_channels, reduction_ratio),
                  pool_types=pool_types, no_spatial=no_spatial)
    pairs = tuple(("ChannelGate." + a, "channel." + b) for a, b in _CHANNEL_KEYS)
    return module, rename_prefix(*pairs, ("SpatialGate.spatial.", "spatial.attn.conv."))


@official("cbam_channel")
def _cbam_channel(gate_channels: int, reduction_ratio: int = 16, pool_types: Sequence[str] = ("avg", "max")):
    """``ChannelGate(gate_channels, reduction_ratio=16, pool_types=['avg', 'max'])``."""
    module = CBAMChannelGate(gate_channels, rd_channels=_official_width("cbam_channel", gate_channels,
                                                                        reduction_ratio), pool_types=pool_types)
    return module, rename_prefix(*_CHANNEL_KEYS)


@official("cbam_spatial")
def _cbam_spatial():
    """``SpatialGate()``: no channel argument, so the module accepts any channel count."""
    return CBAMSpatialGate(None), rename_prefix(("spatial.", "attn.conv."))

