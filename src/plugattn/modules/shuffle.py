"""Shuffle Attention (SA): grouped channel and spatial attention on channel halves, then a channel shuffle.

Paper: Zhang, Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", ICASSP 2021.
https://arxiv.org/abs/2102.00240 — official code: https://github.com/wofmanaf/SA-Net (``models/sa_resnet.py``,
``sa_layer(channel, groups=64)``). Written from the paper and the official code; no code is copied.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import Gate, LayerType, check_input, check_positive, is_channels_last, is_eager, like_layout
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["ShuffleAttention"]


@register(
    "shuffle", paper="SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", year=2021,
    url="https://arxiv.org/abs/2102.00240", kind="channel+spatial", official="wofmanaf/SA-Net sa_layer",
)
class ShuffleAttention(nn.Module):
    r"""Shuffle Attention: per group, a channel gate on one half and a spatial gate on the other.

    The channels are split into G groups (adjacent channels) and each group into two halves x₁, x₂ of
    C' = C/(2G) channels:

    .. math::
        x_1' = x_1 \cdot \sigma(W_1\,\mathrm{GAP}(x_1) + b_1),\qquad
        x_2' = x_2 \cdot \sigma(W_2\,\mathrm{GN}(x_2) + b_2)

    with per-channel scale and shift W, b ∈ ℝ^{C'} (official ``cweight``/``cbias``, ``sweight``/``sbias``,
    initialised to 0 and 1, so both gates start at σ(1)) and GN = ``GroupNorm(C', C')`` (one group per
    channel, affine). The halves are concatenated per group, the groups unfolded back to C channels, and the
    channels shuffled with 2 groups (``channel_shuffle(out, 2)``: output channel 2i is channel i, 2i+1 is
    channel C/2 + i). The parameters are shared by all groups.

    Neither the groups nor the halves are copied out of x: the gates see their inputs as (N, G, C', 1, 1) and
    (N, G, C', H, W) (what :func:`plugattn.capture` records), and with even G the gated halves are written straight
    into their shuffled output channels. channels_last input is converted to contiguous and back (its halves and
    the shuffle are gathers along the innermost axis).

    **Groups.** The official G = 64 needs C ≥ 128. With ``groups=None`` (default) G is the official 64 capped
    at C // 2 (each half keeps at least one channel): G = max(1, min(64, C // 2)), e.g. C = 16 → 8,
    C = 32 → 16, C ≥ 128 → 64. An explicit ``groups`` is used as given. C must be divisible by 2G
    (``ValueError`` otherwise; the official code fails there too).

    Args:
        channels: C, input channels (even).
        groups: G. Default: None, i.e. min(64, C // 2) (at least 1).
        gate_layer: σ of both gates. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = ShuffleAttention(256)
        >>> m.groups, m(torch.randn(2, 256, 7, 5)).shape
        (64, torch.Size([2, 256, 7, 5]))
    """

    def __init__(
        self,
        channels: int,
        *,
        groups: int | None = None,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        if groups is None:
            groups = max(1, min(64, channels // 2))
        check_positive(owner, groups=groups)
        if channels % (2 * groups):
            raise ValueError(f"{owner}: channels={channels} must be divisible by 2 * groups = {2 * groups}")
        dd = {"device": device, "dtype": dtype}
        half = channels // (2 * groups)
        self.channels = channels
        self.groups = groups
        self.channel_weight = nn.Parameter(torch.empty(1, half, 1, 1, **dd))
        self.channel_bias = nn.Parameter(torch.empty(1, half, 1, 1, **dd))
        self.spatial_weight = nn.Parameter(torch.empty(1, half, 1, 1, **dd))
        self.spatial_bias = nn.Parameter(torch.empty(1, half, 1, 1, **dd))
        self.norm = nn.GroupNorm(half, half, **dd)
        self.channel_gate = Gate(gate_layer)
        self.spatial_gate = Gate(gate_layer)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: weights 0, biases 1; GroupNorm affine (1, 0)."""
        nn.init.zeros_(self.channel_weight)
        nn.init.ones_(self.channel_bias)
        nn.init.zeros_(self.spatial_weight)
        nn.init.ones_(self.spatial_bias)
        self.norm.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        b, c, h, w = x.shape
        g, half = self.groups, c // (2 * self.groups)
        # Channel u = j·(C/2) + i goes to output channel 2i + j (the shuffle). With G even, u's group is
        # j·G/2 + g' for i = g'·2C' + part·C' + k, so x viewed as (N, 2, G/2, 2, C', H, W) holds the groups in
        # order and the output viewed as (N, G/2, 2, C', 2, H, W) holds the same elements in shuffled order: the
        # halves are written straight into their shuffled places. Odd G: (N, 1, G, 2, C', H, W), shuffled after.
        jn, gn = (2, g // 2) if g % 2 == 0 else (1, g)
        like = x
        if is_channels_last(x):  # the channel halves and the shuffle are strided gathers on channels_last memory
            x = x.contiguous()
        xv = x.reshape(b, jn, gn, 2, half, h, w)  # a view (x is contiguous or was made so)
        x1, x2 = xv[:, :, :, 0], xv[:, :, :, 1]  # (N, jn, gn, C', H, W): channel half, spatial half
        cw, cb, sw, sb = (p.view(half, 1, 1) for p in (self.channel_weight, self.channel_bias, self.spatial_weight,
                                                       self.spatial_bias))
        s1 = cw * x1.mean((4, 5), keepdim=True) + cb  # (N, jn, gn, C', 1, 1)
        g1 = self.channel_gate(s1.reshape(b, g, half, 1, 1)).view_as(s1)  # gates seen as (N, G, C', ·, ·)
        # GroupNorm(C', C') is a per-channel standardisation: σ_w·GN(x₂) + b_w = (x₂ − mean)·scale + shift,
        # with the biased variance from the centred values (two passes, as exact as GroupNorm; torch.var_mean on
        # this strided half took 1.9 ms at (8, 256, 28, 28), the mean 30 µs)
        d = x2 - x2.mean((4, 5), keepdim=True)  # (N, jn, gn, C', H, W)
        var = torch.linalg.vector_norm(d, dim=(4, 5), keepdim=True).square() * (1.0 / (h * w))
        scale = (var + self.norm.eps).rsqrt() * self.norm.weight.view(half, 1, 1) * sw
        shift = sb + sw * self.norm.bias.view(half, 1, 1)
        s2 = (d * scale).add_(shift)  # (addcmul(shift, d, scale), the broadcast shift first, is slower)
        g2 = self.spatial_gate(s2.reshape(b, g, half, h, w)).view(s2.shape)
        if jn == 2 and is_eager() and not (torch.is_grad_enabled() and (x.requires_grad or g1.requires_grad
                                                                        or g2.requires_grad)):
            out = torch.empty(b, c, h, w, dtype=x.dtype, device=x.device)
            ov = out.view(b, g // 2, 2, half, 2, h, w).permute(0, 4, 1, 2, 3, 5, 6)  # (N, 2, G/2, 2, C', H, W)
            torch.mul(x1, g1, out=ov[:, :, :, 0])
            torch.mul(x2, g2, out=ov[:, :, :, 1])
            return like_layout(out, like)
        y = torch.stack((x1 * g1, x2 * g2), dim=3).reshape(b, c, h, w)  # channels in group order
        out = y.reshape(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)  # channel shuffle, 2 groups
        return like_layout(out, like)


@official("shuffle")
def _shuffle(channel: int, groups: int = 64):
    """wofmanaf/SA-Net ``sa_layer(channel, groups=64)``."""
    module = ShuffleAttention(channel, groups=groups)
    return module, rename_prefix(("cweight", "channel_weight"), ("cbias", "channel_bias"),
                                 ("sweight", "spatial_weight"), ("sbias", "spatial_bias"), ("gn.", "norm."))
