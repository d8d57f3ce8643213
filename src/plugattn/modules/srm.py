"""Style-based Recalibration Module (SRM).

Paper: Lee, Kim, Nam, "SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
ICCV 2019. https://arxiv.org/abs/1903.10829 — official code:
https://github.com/hyunjaelee410/style-based-recalibration-module (``models/recalibration_modules.py``,
``SRMLayer``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import Gate, LayerType, check_input, check_positive, factory_kwargs, get_layer
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["StyleRecalibration", "style_pool"]


def style_pool(x: Tensor) -> Tensor:
    """Style pooling: each channel's mean and unbiased standard deviation over H·W, (N, C, H, W) → (N, C, 2).

    std = √(Σ(x − μ)² / max(H·W − 1, 1)): ``torch.std`` (the official code) where H·W > 1; at H·W = 1, where
    the official layer returns NaN, it is 0. H·W enters as a tensor built from the shape at call time, so an
    exported graph follows the input size. Where the variance is 0 the gradient through the std is 0, as with
    ``torch.std``.
    """
    n, c, h, w = x.shape
    hw = torch.full((), h * w, dtype=x.dtype, device=x.device)  # H·W
    std = x.std((2, 3), correction=0) * (hw / (hw - 1).clamp(min=1)).sqrt()  # (N, C): biased std → unbiased
    return torch.stack((x.mean((2, 3)), std), dim=2)  # (N, C, 2)


@register(
    "srm", paper="SRM: A Style-based Recalibration Module for Convolutional Neural Networks", year=2019,
    url="https://arxiv.org/abs/1903.10829", kind="channel",
    official="hyunjaelee410/style-based-recalibration-module SRMLayer",
)
class StyleRecalibration(nn.Module):
    r"""SRM: :math:`y = x \cdot \sigma(\mathrm{BN}(z))`, :math:`z_c = w_{c,1}\,\mu_c + w_{c,2}\,\sigma_c`.

    Style pooling takes each channel's mean :math:`\mu_c` and standard deviation :math:`\sigma_c`; style
    integration combines them with a channel-wise fully connected layer (CFC, two weights per channel,
    equal to a depthwise Conv1d of kernel 2 over the (μ, σ) pair), then batch norm and the gate.

    Deviation: at H·W = 1 the standard deviation is taken as 0 instead of the official NaN
    (see :func:`style_pool`). Like the official layer, training with batch size 1 fails in BatchNorm.

    Args:
        channels: C, input channels.
        norm_layer: the norm after the CFC, called with C. Default: BatchNorm2d.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = StyleRecalibration(64)
        >>> m.cfc.shape, m(torch.randn(2, 64, 7, 5)).shape
        (torch.Size([64, 2]), torch.Size([2, 64, 7, 5]))
    """

    def __init__(
        self,
        channels: int,
        *,
        norm_layer: LayerType = "batchnorm",
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels)
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.cfc = nn.Parameter(torch.empty(channels, 2, **dd))  # (C, 2): weights of (mean, std)
        self.bn = get_layer(norm_layer, channels, arg_name="norm_layer", **dd)
        self.gate = Gate(gate_layer)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: CFC weights zero (the gate starts at σ(BN bias)); norm keeps its own init."""
        nn.init.zeros_(self.cfc)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        t = style_pool(x)  # (N, C, 2): style pooling (μ_c, σ_c)
        z = (t * self.cfc).sum(dim=2)[:, :, None, None]  # (N, C, 1, 1): style integration (CFC)
        return x * self.gate(self.bn(z))


@official("srm")
def _srm(channel: int):
    """hyunjaelee410 ``SRMLayer(channel)``: same parameter names (``cfc``, ``bn.*``)."""
    return StyleRecalibration(channel), rename_prefix()
