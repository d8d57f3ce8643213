"""Frequency channel attention (FcaNet): a channel gate whose squeeze is a set of 2-D DCT components.

Paper: Qin, Zhang, Wu, Li, "FcaNet: Frequency Channel Attention Networks", ICCV 2021.
https://arxiv.org/abs/2012.11879 — official code: https://github.com/cfzd/FcaNet
(``model/layer.py``, ``MultiSpectralAttentionLayer`` and ``MultiSpectralDCTLayer``).

Input size. The official layer is built for a DCT grid ``dct_h × dct_w`` (56, 28, 14 or 7 for the four
ResNet stages) and average-pools any other input to that grid with ``adaptive_avg_pool2d`` before taking
the DCT (the official code notes that this path is used for detection and segmentation). This module
always applies the adaptive pooling: at the grid size it is exactly the identity, so the result equals
the official one at every size, without a shape-dependent branch. The grid is a hyperparameter of the
frequency space, not the input size: any H, W ≥ 1 works (inputs smaller than the grid are upsampled by
the adaptive pooling, which repeats values; a 1×1 input has only its DC component left). The pooling is
``plugattn._layers.adaptive_avg_pool2d``: the native op in eager mode, bin matrices built from the input
size when exported, so an exported graph runs at every size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import (
    FREQ_METHODS,
    Gate,
    LayerType,
    adaptive_avg_pool2d,
    check_input,
    check_positive,
    dct_filters,
    factory_kwargs,
    freq_indices,
    get_layer,
    reduced_width,
)
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["MultiSpectralChannelAttention"]


@register(
    "fca", paper="FcaNet: Frequency Channel Attention Networks", year=2021,
    url="https://arxiv.org/abs/2012.11879", kind="channel", official="cfzd/FcaNet MultiSpectralAttentionLayer",
)
class MultiSpectralChannelAttention(nn.Module):
    r"""Multi-spectral channel attention: an SE gate on 2-D DCT coefficients instead of the mean.

    .. math::
        \mathrm{Freq}^i = \mathrm{2DDCT}^{u_i, v_i}(X^i), \qquad
        y = x \cdot \sigma\big(W_2\,\delta(W_1\,[\mathrm{Freq}^0, \dots, \mathrm{Freq}^{n-1}])\big)

    The channels are split into n groups :math:`X^i`; group i is reduced by the DCT basis of frequency
    :math:`(u_i, v_i)` on the ``dct_h × dct_w`` grid (the input is first adaptively average-pooled to that
    grid, see the file docstring). Frequency (0, 0) is √(hw) times global average pooling, so SE is the
    special case ``freq_sel_method="low1"`` up to that scale.

    Args:
        channels: C, input channels; must be divisible by the number of frequencies.
        dct_h: height of the DCT grid (official: 56, 28, 14, 7 by ResNet stage). Default: 7.
        dct_w: width of the DCT grid. Default: 7.
        freq_sel_method: frequency selection, ``{top,low,bot}{1,2,4,8,16,32}``. Default: None, i.e. the paper's
            ``"top16"`` where 16 divides C, else the largest ``"top<n>"`` whose n divides C (C = 24 → ``"top8"``,
            40 → ``"top8"``, 440 → ``"top8"``, 18 → ``"top2"``). An explicit value must divide C.
        rd_ratio: 1/r of the bottleneck (paper r = 16). Default: 1/16.
        rd_channels: bottleneck width, overriding ``rd_ratio``. Default: None.
        rd_divisor: ``None`` floors C·rd_ratio (official ``C // r``); an int rounds as in timm.
        bias: biases on W₁, W₂ (official: False). Default: False.
        act_layer: δ. Default: ReLU.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W), any H, W ≥ 1.

    Examples:
        >>> m = MultiSpectralChannelAttention(64)
        >>> m(torch.randn(2, 64, 14, 9)).shape
        torch.Size([2, 64, 14, 9])
    """

    dct_weight: Tensor  # non-persistent buffer, registered in __init__

    def __init__(
        self,
        channels: int,
        *,
        dct_h: int = 7,
        dct_w: int = 7,
        freq_sel_method: str | None = None,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int | None = None,
        bias: bool = False,
        act_layer: LayerType = "relu",
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, channels=channels, dct_h=dct_h, dct_w=dct_w)
        if freq_sel_method is None:  # the paper's top16, or the largest top-n set that splits C evenly
            freq_sel_method = f"top{math.gcd(channels, 16)}"
        if freq_sel_method not in FREQ_METHODS:
            raise ValueError(f"{name}: freq_sel_method must be one of {list(FREQ_METHODS)}, got {freq_sel_method!r}")
        num_freq = len(freq_indices(freq_sel_method)[0])
        if channels % num_freq:
            fits = f"{freq_sel_method[:3]}{math.gcd(channels, num_freq)}"
            raise ValueError(f"{name}: channels ({channels}) must be divisible by the number of frequencies "
                             f"({num_freq} for freq_sel_method={freq_sel_method!r}); {fits!r} would work")
        rd_channels = reduced_width(name, channels, rd_ratio, rd_channels, rd_divisor)
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.rd_channels = rd_channels
        self.dct_h, self.dct_w = dct_h, dct_w
        self.freq_sel_method = freq_sel_method
        filters = dct_filters(channels, dct_h, dct_w, freq_sel_method)  # (C, dct_h, dct_w), float64
        self.register_buffer("dct_weight", filters.to(device=device, dtype=dtype or torch.get_default_dtype()),
                             persistent=False)  # fixed, rebuilt from the arguments; not in the state_dict
        self.fc1 = nn.Linear(channels, rd_channels, bias=bias, **dd)
        self.act = get_layer(act_layer, arg_name="act_layer")
        self.fc2 = nn.Linear(rd_channels, channels, bias=bias, **dd)
        self.gate = Gate(gate_layer)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, rd_channels={self.rd_channels}, dct_h={self.dct_h}, dct_w={self.dct_w}, "
                f"freq_sel_method={self.freq_sel_method!r}")

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        n, c = x.shape[:2]
        pooled = adaptive_avg_pool2d(x, (self.dct_h, self.dct_w))  # (N, C, dct_h, dct_w); identity at that size
        s = (pooled * self.dct_weight).sum((2, 3))  # (N, C): Freq^i, one DCT coefficient per channel
        w = self.gate(self.fc2(self.act(self.fc1(s))))  # (N, C)
        return x * w.view(n, c, 1, 1)


@official("fca")
def _fca(channel: int, dct_h: int, dct_w: int, reduction: int = 16, freq_sel_method: str = "top16"):
    """cfzd/FcaNet ``MultiSpectralAttentionLayer``; its fixed DCT buffer is rebuilt, not loaded."""
    module = MultiSpectralChannelAttention(channel, dct_h=dct_h, dct_w=dct_w, freq_sel_method=freq_sel_method,
                                           rd_channels=channel // reduction)
    renamed = rename_prefix(("fc.0.", "fc1."), ("fc.2.", "fc2."))

    def key_map(key: str) -> str | None:
        return None if key == "dct_layer.weight" else renamed(key)

    return module, key_map
