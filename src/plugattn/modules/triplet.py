"""Triplet Attention: three Z-pool gates, one per pair of axes of (C, H, W).

Paper: Misra, Nalamada, Arasanipalai, Hou, "Rotate to Attend: Convolutional Triplet Attention Module",
WACV 2021. https://arxiv.org/abs/2010.03045 — official code: https://github.com/landskape-ai/triplet-attention
(``triplet_attention.py`` and ``MODELS/triplet_attention.py``, ``TripletAttention``). Written from the
specification of that code; no official code is copied.

The official code rotates ``x`` with ``permute(...).contiguous()`` for two of its branches and rotates the two
gated copies back. Here each branch pools ``x`` along its own axis first and rotates only the small pooled map
(:class:`~plugattn._layers.ZPoolGate`, shared with CBAM's spatial gate): the same numbers, without full-size
copies.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import LayerType, ZPoolGate, check_input, check_odd_kernel, check_optional_positive
from ..official import official, rename_prefix
from ..registry import register
from .cbam import _BN_001

__all__ = ["TripletAttention"]


@register(
    "triplet", paper="Rotate to Attend: Convolutional Triplet Attention Module", year=2021,
    url="https://arxiv.org/abs/2010.03045", kind="channel+spatial",
    official="landskape-ai/triplet-attention triplet_attention.py TripletAttention",
)
class TripletAttention(nn.Module):
    r"""Triplet Attention: :math:`y = \tfrac13\,(x\,\omega_{hw} + x\,\omega_{cw} + x\,\omega_{hc})`.

    Each :math:`\omega = \sigma(\mathrm{BN}(\mathrm{conv}_{k\times k}(\text{Z-pool}(x))))` comes from a
    :class:`~plugattn._layers.ZPoolGate` (Z-pool = [max; mean], max first):

    - ``cw``: pools over H; the conv runs on the (C, W) plane; :math:`\omega_{cw}` broadcasts as (N, C, 1, W);
    - ``hc``: pools over W; the conv runs on the (H, C) plane (H as rows, as the official permute (0, 3, 2, 1));
      :math:`\omega_{hc}` broadcasts as (N, C, H, 1);
    - ``hw``: pools over C; the conv runs on the (H, W) plane (CBAM's spatial gate).

    With ``no_spatial`` the ``hw`` branch is absent and :math:`y = \tfrac12\,(x\,\omega_{cw} + x\,\omega_{hc})`.
    The module has no channel-sized parameter (3 · (2k² + 4) numbers), so it works for any C when ``channels``
    is None.

    Args:
        channels: C, input channels, checked at forward; ``None`` accepts any channel count. Default: None.
        kernel_size: k (odd). The official code hard-codes 7; its README's "k = 3" checkpoints need 3. Default: 7.
        no_spatial: drop the ``hw`` branch (official option). Default: False.
        norm_layer: norm after each conv. Default: BatchNorm2d with momentum 0.01.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = TripletAttention(16)
        >>> m(torch.randn(2, 16, 7, 5)).shape
        torch.Size([2, 16, 7, 5])
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        kernel_size: int = 7,
        no_spatial: bool = False,
        norm_layer: LayerType = _BN_001,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_optional_positive(name, channels=channels)
        check_odd_kernel(name, kernel_size)
        kw: dict[str, Any] = {"kernel_size": kernel_size, "norm_layer": norm_layer, "gate_layer": gate_layer,
                              "device": device, "dtype": dtype}
        self.channels = channels
        self.kernel_size = kernel_size
        self.scale = 1 / 2 if no_spatial else 1 / 3  # the official Python-float factor
        self.cw = ZPoolGate(dim=2, **kw)
        self.hc = ZPoolGate(dim=3, **kw)
        self.hw: ZPoolGate | None = None if no_spatial else ZPoolGate(dim=1, **kw)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, no_spatial={self.hw is None}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        k = self.scale  # 1/3 (1/2 with no_spatial), applied to the small weight maps
        w = self.cw(x) * k + self.hc(x) * k  # k·ω_cw (N, C, 1, W) + k·ω_hc (N, C, H, 1): (N, C, H, W)
        if self.hw is not None:
            w = self.hw(x) * k + w  # + k·ω_hw (N, 1, H, W)
        return x * w  # y = k · Σ_b x·ω_b


# --- official converters (landskape-ai/triplet-attention) --------------------------------------------------------


@official("triplet")
def _triplet(no_spatial: bool = False, kernel_size: int = 7):
    """``triplet_attention.py`` ``TripletAttention(no_spatial=False)``; its keys are already ours.

    ``kernel_size`` is **not an official argument** (the official kernel is hard-coded to 7): it is a plugattn
    extension for the README's k = 3 checkpoints (the root file used 3 before commit 71be1da).
    """
    return TripletAttention(None, kernel_size=kernel_size, no_spatial=no_spatial), rename_prefix()


@official("triplet_models")
def _triplet_models(gate_channels: int, reduction_ratio: int = 16, pool_types=("avg", "max"),
                    no_spatial: bool = False, kernel_size: int = 7):
    """``MODELS/triplet_attention.py`` ``TripletAttention(gate_channels, reduction_ratio=16, pool_types, no_spatial)``.

    The first three arguments are unused officially (the module accepts any channel count, as ours does).
    ``kernel_size`` is a plugattn extension, as for ``"triplet"``.
    """
    module = TripletAttention(None, kernel_size=kernel_size, no_spatial=no_spatial)
    return module, rename_prefix(
        ("ChannelGateH.spatial.", "cw.conv."),
        ("ChannelGateW.spatial.", "hc.conv."),
        ("SpatialGate.spatial.", "hw.conv."),
    )
