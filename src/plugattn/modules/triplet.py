"""Triplet Attention: three Z-pool gates, one per pair of axes of (C, H, W).

Paper: Misra, Nalamada, Arasanipalai, Hou, "Rotate to Attend: Convolutional Triplet Attention Module",
WACV 2021. https://arxiv.org/abs/2010.03045 — official code: https://github.com/landskape-ai/triplet-attention
(``triplet_attention.py`` and ``MODELS/triplet_attention.py``, ``TripletAttention``). Written from the
specification of that code; no official code is copied.

The official code rotates ``x`` with ``permute(...).contiguous()`` for two of its branches and rotates the two
gated copies back. Here no full-size tensor is permuted or copied: each branch pools ``x`` along its own axis
(:class:`~plugattn.modules.cbam.ZPoolGate`, shared with CBAM's spatial gate), only the small pooled maps and
weights are transposed, and ``x`` is multiplied once, by the sum of the three weight maps.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import LayerType, check_input, check_odd_kernel, is_eager, like_layout
from ..official import official, rename_prefix
from ..registry import register
from .cbam import _BN_001, ZPoolGate, _check_optional_channels

__all__ = ["TripletAttention"]


@register(
    "triplet", paper="Rotate to Attend: Convolutional Triplet Attention Module", year=2021,
    url="https://arxiv.org/abs/2010.03045", kind="channel+spatial",
    official="landskape-ai/triplet-attention triplet_attention.py TripletAttention",
)
class TripletAttention(nn.Module):
    r"""Triplet Attention: :math:`y = \tfrac13\,(x\,\omega_{hw} + x\,\omega_{cw} + x\,\omega_{hc})`.

    Each :math:`\omega = \sigma(\mathrm{BN}(\mathrm{conv}_{k\times k}(\text{Z-pool}(x))))` comes from a
    :class:`~plugattn.modules.cbam.ZPoolGate` (Z-pool = [max; mean], max first):

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
        _check_optional_channels(name, channels)
        check_odd_kernel(name, kernel_size)
        kw = {"kernel_size": kernel_size, "norm_layer": norm_layer, "gate_layer": gate_layer,
              "device": device, "dtype": dtype}
        self.channels = channels
        self.cw = ZPoolGate(dim=2, **kw)
        self.hc = ZPoolGate(dim=3, **kw)
        self.hw: ZPoolGate | None = None if no_spatial else ZPoolGate(dim=1, **kw)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        k = 1 / 2 if self.hw is None else 1 / 3  # the official Python-float scale, folded into the small weights
        ws = [like_layout(self.cw(x) * k, x), like_layout(self.hc(x) * k, x)]  # (N, C, 1, W), (N, C, H, 1)
        if self.hw is not None:
            ws.insert(0, self.hw(x) * k)  # (N, 1, H, W); official order: hw + cw + hc
        # y = x · s, s = Σ k·ω summed in that order: one full-size product, so autograd's backward is lean
        graph = not is_eager() or (torch.is_grad_enabled() and any(t.requires_grad for t in (x, *ws)))
        # eager without autograd: the sum goes into one new tensor in x's format, and x multiplies it in place
        s = ws[0] + ws[1] if graph else torch.add(ws[0], ws[1], out=torch.empty_like(x))
        for w in ws[2:]:
            s.add_(w)  # autograd-safe: nothing saved the partial sum
        return x * s if graph else s.mul_(x)  # x's memory format


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
