"""SimAM: a simple, parameter-free attention module (3-D weights from an energy function).

Paper: Yang, Zhang, Li, Xie, "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural
Networks", ICML 2021. https://proceedings.mlr.press/v139/yang21o.html — official code:
https://github.com/ZjjConan/SimAM (``networks/attentions/simam_module.py``, ``simam_module``).
Written from the paper and the official forward; no official code is copied.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import Gate, LayerType, check_input, check_positive
from ..official import official
from ..registry import register

__all__ = ["SimAM"]


@register(
    "simam", paper="SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks", year=2021,
    url="https://proceedings.mlr.press/v139/yang21o.html", kind="channel+spatial",
    official="ZjjConan/SimAM simam_module",
)
class SimAM(nn.Module):
    r"""SimAM: every activation weighted by the inverse of its minimal energy, no parameters.

    For each channel of each sample, with μ and σ² the mean and variance over the H·W positions,

    .. math::
        \frac{1}{e^*_t} = \frac{(t - \mu)^2}{4(\sigma^2 + \lambda)} + \frac{1}{2},\qquad
        \sigma^2 = \frac{1}{n}\sum_i (x_i - \mu)^2,\ n = H W - 1,\qquad
        y = x \cdot \sigma\!\left(\frac{1}{e^*}\right)

    (the official code's unbiased variance, n = H·W − 1). One deviation, for inputs with a single position
    (H·W = 1): the official code divides 0 by n = 0 and returns NaN; here n = max(H·W − 1, 1), so the
    energy term is 0 and y = x·σ(½). For H·W > 1 the two are identical.

    Args:
        channels: C, input channels. ``None`` accepts any channel count (the module has no parameters;
            this is what :func:`plugattn.from_official` builds for ``simam_module(channels=None)``).
        e_lambda: λ, the regulariser of the energy. Default: 1e-4 (paper, official).
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = SimAM(64)
        >>> m(torch.randn(2, 64, 7, 5)).shape, sum(p.numel() for p in m.parameters())
        (torch.Size([2, 64, 7, 5]), 0)
    """

    def __init__(
        self,
        channels: int | None,
        *,
        e_lambda: float = 1e-4,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if channels is not None:
            check_positive(type(self).__name__, channels=channels)
        if isinstance(e_lambda, bool) or not isinstance(e_lambda, (int, float)) or not e_lambda > 0:
            raise ValueError(f"{type(self).__name__}: e_lambda must be a positive number, got {e_lambda!r}")
        del device, dtype  # no parameters or buffers
        self.channels = channels
        self.e_lambda = float(e_lambda)
        self.gate = Gate(gate_layer)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, e_lambda={self.e_lambda}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        h, w = x.shape[2:]
        n = torch.full((), h * w - 1, dtype=x.dtype, device=x.device).clamp(min=1)  # max(H·W − 1, 1), see above
        d2 = (x - x.mean((2, 3), keepdim=True)).pow(2)  # (N, C, H, W): (t − μ)²
        energy_inv = d2 / (4 * (d2.sum((2, 3), keepdim=True) / n + self.e_lambda)) + 0.5  # 1 / e*_t
        return x * self.gate(energy_inv)


@official("simam")
def _simam(channels: int | None = None, e_lambda: float = 1e-4):
    """ZjjConan/SimAM ``simam_module(channels=None, e_lambda=1e-4)``: no parameters, any channel count."""
    return SimAM(channels, e_lambda=e_lambda), lambda key: key
