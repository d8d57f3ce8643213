"""scSE: concurrent spatial and channel squeeze & excitation.

Paper: Roy, Navab, Wachinger, "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional
Networks", MICCAI 2018. https://arxiv.org/abs/1803.02579 — extended in "Recalibrating Fully Convolutional
Networks with Spatial and Channel 'Squeeze & Excitation' Blocks", IEEE TMI 2019,
https://arxiv.org/abs/1808.08127. Official code (the authors' lab): https://github.com/ai-med/squeeze_and_excitation
(``squeeze_and_excitation/squeeze_and_excitation.py``: ``ChannelSELayer``, ``SpatialSELayer``,
``ChannelSpatialSELayer``). Also segmentation_models_pytorch's ``SCSEModule`` (addition, r = 16).
Written from the papers and the official code; no code is copied.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import Gate, LayerType, check_input, check_positive, factory_kwargs, get_layer, reduced_width
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["SpatialChannelSqueezeExcite"]

_COMBINE = ("max", "add")


@register(
    "scse", paper="Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional Networks",
    year=2018, url="https://arxiv.org/abs/1803.02579", kind="channel+spatial",
    official="ai-med/squeeze_and_excitation ChannelSpatialSELayer",
)
class SpatialChannelSqueezeExcite(nn.Module):
    r"""scSE: a channel SE and a spatial SE on the same input, their recalibrated outputs combined.

    .. math::
        \hat x_{cSE} = x \cdot \sigma(W_2\,\delta(W_1\,\mathrm{GAP}(x) + b_1) + b_2),\qquad
        \hat x_{sSE} = x \cdot \sigma(w_s^\top x + b_s),\qquad
        y = \max(\hat x_{cSE}, \hat x_{sSE})\ \text{or}\ \hat x_{cSE} + \hat x_{sSE}

    cSE is SE with biased FCs (width C/r, r = 2 in the official code); sSE is a 1×1 conv C → 1 with bias
    and a sigmoid, one weight per position. Both gates see x, in parallel.

    **Combination.** The MICCAI paper adds the two (``combine="add"``, also segmentation_models_pytorch); the
    TMI extension compares max-out, addition, multiplication and concatenation and finds max-out best, and the
    authors' code (ai-med/squeeze_and_excitation) uses max-out: the element-wise maximum of the two
    *recalibrated maps* (not of the gates; for x < 0 these differ). The default follows the official code:
    ``combine="max"``, r = 2.

    Args:
        channels: C, input channels.
        rd_ratio: 1/r of the cSE bottleneck (official r = 2). Default: 1/2.
        rd_channels: cSE width, overriding ``rd_ratio``. Default: None.
        rd_divisor: ``None`` floors C·rd_ratio (official ``C // r``); an int rounds to a multiple. Default: None.
        combine: ``"max"`` (official code, TMI) or ``"add"`` (MICCAI paper, smp). Default: ``"max"``.
        act_layer: δ. Default: ReLU.
        gate_layer: σ of both gates. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = SpatialChannelSqueezeExcite(64)
        >>> m(torch.randn(2, 64, 7, 5)).shape, m.fc1.out_channels
        (torch.Size([2, 64, 7, 5]), 32)
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 2,
        rd_channels: int | None = None,
        rd_divisor: int | None = None,
        combine: str = "max",
        act_layer: LayerType = "relu",
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        if combine not in _COMBINE:
            raise ValueError(f"{owner}: combine must be one of {_COMBINE}, got {combine!r}")
        rd_channels = reduced_width(owner, channels, rd_ratio, rd_channels, rd_divisor)
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.rd_channels = rd_channels
        self.combine = combine
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=True, **dd)
        self.act = get_layer(act_layer, arg_name="act_layer")
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=True, **dd)
        self.channel_gate = Gate(gate_layer)
        self.spatial_conv = nn.Conv2d(channels, 1, 1, bias=True, **dd)
        self.spatial_gate = Gate(gate_layer)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, rd_channels={self.rd_channels}, combine={self.combine!r}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        wc = self.channel_gate(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))  # (N, C, 1, 1): cSE
        ws = self.spatial_gate(self.spatial_conv(x))  # (N, 1, H, W): sSE
        xc, xs = x * wc, x * ws
        return torch.maximum(xc, xs) if self.combine == "max" else xc + xs


@official("scse")
def _scse(num_channels: int, reduction_ratio: int = 2):
    """ai-med/squeeze_and_excitation ``ChannelSpatialSELayer(num_channels, reduction_ratio=2)`` (max-out)."""
    module = SpatialChannelSqueezeExcite(num_channels, rd_channels=num_channels // reduction_ratio, combine="max")
    return module, rename_prefix(("cSE.fc1.", "fc1."), ("cSE.fc2.", "fc2."), ("sSE.conv.", "spatial_conv."))


@official("scse_smp")
def _scse_smp(in_channels: int, reduction: int = 16):
    """segmentation_models_pytorch ``SCSEModule(in_channels, reduction=16)`` (addition)."""
    module = SpatialChannelSqueezeExcite(in_channels, rd_channels=in_channels // reduction, combine="add")
    return module, rename_prefix(("cSE.1.", "fc1."), ("cSE.3.", "fc2."), ("sSE.0.", "spatial_conv."))
