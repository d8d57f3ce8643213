"""CBAM: Convolutional Block Attention Module (a channel gate, then a spatial gate).

Paper: Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018.
https://arxiv.org/abs/1807.06521 — official code: https://github.com/Jongchan/attention-module
(``MODELS/cbam.py``: ``CBAM``, ``ChannelGate``, ``SpatialGate``). Written from the specification of that code;
no official code is copied.

The spatial gate is :class:`~plugattn._layers.ZPoolGate`, the Z-pool → k×k conv → BN → sigmoid primitive that
Triplet Attention (``triplet.py``) shares.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Callable

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import (
    Gate,
    LayerType,
    ZPoolGate,
    check_input,
    check_odd_kernel,
    check_optional_positive,
    check_positive,
    factory_kwargs,
    get_layer,
    reduced_width,
)
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["CBAM", "CBAMChannelGate", "CBAMSpatialGate", "POOL_TYPES"]

POOL_TYPES = ("avg", "max", "lp", "lse")
"""Pool types of the official ``ChannelGate``: mean, max, L2 norm (``lp_pool2d`` with p = 2), log-sum-exp."""

# (N, C, H, W) → (N, C) for each pool type of the official ChannelGate
_POOLS: dict[str, Callable[[Tensor], Tensor]] = {
    "avg": lambda x: x.mean((2, 3)),
    "max": lambda x: x.amax((2, 3)),
    "lp": lambda x: torch.linalg.vector_norm(x, 2, dim=(2, 3)),  # lp_pool2d, p = 2, full window: √Σx²
    "lse": lambda x: torch.logsumexp(x, dim=(2, 3)),  # stable log-sum-exp
}

_BN_001 = partial(nn.BatchNorm2d, momentum=0.01)  # CBAM and Triplet: BatchNorm2d(eps 1e-5, momentum 0.01)

_URL = "https://arxiv.org/abs/1807.06521"
_PAPER = "CBAM: Convolutional Block Attention Module"
_OFFICIAL = "Jongchan/attention-module MODELS/cbam.py"


def _check_pool_types(owner: str, pool_types: Sequence[str]) -> tuple[str, ...]:
    if isinstance(pool_types, str) or not isinstance(pool_types, Sequence):
        raise TypeError(f"{owner}: pool_types must be a sequence of names from {POOL_TYPES}, got {pool_types!r}")
    if len(pool_types) == 0 or any(p not in POOL_TYPES for p in pool_types):
        raise ValueError(f"{owner}: pool_types must be a non-empty sequence of {POOL_TYPES}, got {pool_types!r}")
    return tuple(pool_types)


@register("cbam_channel", paper=_PAPER, year=2018, url=_URL, kind="channel", official=_OFFICIAL + " ChannelGate")
class CBAMChannelGate(nn.Module):
    r"""CBAM channel attention: :math:`F' = M_c(F) \otimes F`.

    :math:`M_c(F) = \sigma\big(\sum_{p} W_1\,\delta(W_0\,\mathrm{Pool}_p(F) + b_0) + b_1\big)` over the pools
    p in ``pool_types``.

    One MLP (Linear ``fc1`` C → C/r with bias, δ, Linear ``fc2`` C/r → C with bias) is shared by every pool
    type; the logits of the pools are summed before σ (the paper's pair is avg and max).

    Args:
        channels: C, input channels.
        rd_ratio: reduction 1/r of the hidden width (paper r = 16). Default: 1/16.
        rd_channels: hidden width C/r, overriding ``rd_ratio``; 0 is allowed (the official ⌊C/r⌋ for C < r: the
            gate is then the constant σ(Σ b₁)). Default: None, ⌊C·rd_ratio⌋ but at least 1.
        rd_divisor: ``None`` floors C·rd_ratio (official); an int rounds to a multiple (timm's rule).
        pool_types: a sequence of ``"avg"``, ``"max"``, ``"lp"`` (L2 norm √Σx²) and ``"lse"`` (log-sum-exp).
            Default: ("avg", "max").
        bias: biases b₀, b₁ of the two linear layers (official: True; timm's ``mlp_bias``: False). Default: True.
        act_layer: δ. Default: ReLU.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = CBAMChannelGate(64, pool_types=("avg", "max", "lse"))
        >>> m
        CBAMChannelGate(
          channels=64, rd_channels=4, pool_types=('avg', 'max', 'lse')
          (fc1): Linear(in_features=64, out_features=4, bias=True)
          (act): ReLU()
          (fc2): Linear(in_features=4, out_features=64, bias=True)
          (gate): Gate(
            (fn): Sigmoid()
          )
        )
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
            rd_channels = reduced_width(name, channels, rd_ratio, None, rd_divisor)
        elif isinstance(rd_channels, bool) or not isinstance(rd_channels, int) or rd_channels < 0:
            raise ValueError(f"{name}: rd_channels must be an int >= 0, got {rd_channels!r}")
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.rd_channels = rd_channels
        self.pool_types = _check_pool_types(name, pool_types)
        with warnings.catch_warnings():  # rd_channels = 0 (official C < r): empty weights, nothing to initialise
            warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op")
            self.fc1 = nn.Linear(channels, rd_channels, bias=bias, **dd)
            self.act = get_layer(act_layer, arg_name="act_layer")
            self.fc2 = nn.Linear(rd_channels, channels, bias=bias, **dd)
        self.gate = Gate(gate_layer)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, rd_channels={self.rd_channels}, pool_types={self.pool_types}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        n, c = x.shape[:2]
        pooled = [_POOLS[p](x) for p in self.pool_types]  # (N, C) each
        logits = sum(self.fc2(self.act(self.fc1(s))) for s in pooled)  # (N, C): the shared MLP, summed over pools
        return x * self.gate(logits).view(n, c, 1, 1)


@register("cbam_spatial", paper=_PAPER, year=2018, url=_URL, kind="spatial", official=_OFFICIAL + " SpatialGate")
class CBAMSpatialGate(nn.Module):
    r"""CBAM spatial attention: :math:`F'' = M_s(F) \otimes F`.

    :math:`M_s(F) = \sigma(\mathrm{BN}(f^{k\times k}([\max_c F;\ \mathrm{mean}_c F])))`.

    The official code pools **max first** (the paper writes avg, max) and follows the bias-free conv with
    BN (momentum 0.01) and no activation. Built on :class:`~plugattn._layers.ZPoolGate` (``dim=1``).

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
        >>> m.extra_repr()
        'channels=None, kernel_size=7'
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
        check_optional_positive(type(self).__name__, channels=channels)
        check_odd_kernel(type(self).__name__, kernel_size)
        self.channels = channels
        self.kernel_size = kernel_size
        self.attn = ZPoolGate(dim=1, kernel_size=kernel_size, norm_layer=norm_layer, gate_layer=gate_layer,
                              device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"

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
        >>> m.extra_repr()
        'channels=64, rd_channels=4, kernel_size=7, no_spatial=False'
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
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.kernel_size = kernel_size
        self.channel = CBAMChannelGate(
            channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor, pool_types=pool_types,
            bias=bias, act_layer=act_layer, gate_layer=gate_layer, **dd,
        )
        self.spatial: CBAMSpatialGate | None = None
        if not no_spatial:
            self.spatial = CBAMSpatialGate(
                channels, kernel_size=kernel_size, norm_layer=norm_layer, gate_layer=gate_layer, **dd
            )

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, rd_channels={self.channel.rd_channels}, kernel_size={self.kernel_size}, "
                f"no_spatial={self.spatial is None}")

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        y = self.channel(x)  # F' = M_c(F) ⊗ F
        return y if self.spatial is None else self.spatial(y)  # F'' = M_s(F') ⊗ F'


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

