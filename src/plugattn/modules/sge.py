"""SGE: Spatial Group-wise Enhance.

Paper: Li, Hu, Yang, "Spatial Group-wise Enhance: Improving Semantic Feature Learning in Convolutional
Networks", 2019. https://arxiv.org/abs/1905.09646 — official code: https://github.com/implus/PytorchInsight
(``classification/models/imagenet/resnet_sge.py``, ``SpatialGroupEnhance(groups=64)``). Written from the
paper and the official code; no code is copied.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import Gate, LayerType, check_input, check_positive, largest_divisor
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["SpatialGroupEnhance"]


@register(
    "sge", paper="Spatial Group-wise Enhance: Improving Semantic Feature Learning in Convolutional Networks",
    year=2019, url="https://arxiv.org/abs/1905.09646", kind="spatial",
    official="implus/PytorchInsight resnet_sge.py SpatialGroupEnhance",
)
class SpatialGroupEnhance(nn.Module):
    r"""SGE: per channel group, a spatial gate from the similarity of each position to the group's mean.

    The channels are split into G groups of C/G (adjacent channels). For group features x_i at position i:

    .. math::
        c_i = \langle \mathrm{GAP}(x), x_i \rangle,\qquad
        \hat c_i = \frac{c_i - \mu_c}{s_c + \epsilon},\qquad
        y_i = x_i \cdot \sigma(\gamma_g \hat c_i + \beta_g)

    with μ_c, s_c the mean and the **unbiased** standard deviation of c over the H·W positions (``torch.std``
    in the official code), ε = 1e-5 added to the standard deviation, and one γ, β per group (official
    ``weight``/``bias``, initialised to 0 and 1, so the gate starts at σ(1)).

    One deviation, for inputs with a single position (H·W = 1): the unbiased standard deviation of one value
    is 0/0 and the official code returns NaN; here its divisor is max(H·W − 1, 1), so ĉ = 0 and
    y = x·σ(β). For H·W > 1 the two are identical.

    **Groups.** The official G = 64 needs C divisible by 64 (the official ResNet-18 uses it at C = 64, one
    channel per group). With ``groups=None`` (default) G is the largest divisor of C not above 64, so any
    width works (C = 96 → 48, 160 → 32, 440 → 55); an explicit ``groups`` must divide C (``ValueError``
    otherwise, naming a value that would; the official code fails there too).

    Args:
        channels: C, input channels.
        groups: G. Default: None, i.e. the largest divisor of C not above the paper's 64.
        eps: ε. Default: 1e-5.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = SpatialGroupEnhance(128)
        >>> m.groups, m(torch.randn(2, 128, 7, 5)).shape
        (64, torch.Size([2, 128, 7, 5]))
    """

    def __init__(
        self,
        channels: int,
        *,
        groups: int | None = None,
        eps: float = 1e-5,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        if groups is None:
            groups = largest_divisor(channels, 64)
        check_positive(owner, groups=groups)
        if channels % groups:
            raise ValueError(f"{owner}: channels={channels} must be divisible by groups={groups}; "
                             f"groups={largest_divisor(channels, groups)} would work")
        self.channels = channels
        self.groups = groups
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(1, groups, 1, 1, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(1, groups, 1, 1, device=device, dtype=dtype))
        self.gate = Gate(gate_layer)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: γ = 0, β = 1."""
        nn.init.zeros_(self.weight)
        nn.init.ones_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        b, c, h, w = x.shape
        xg = x.view(b, self.groups, c // self.groups, h, w)  # (N, G, C/G, H, W): a view of x
        t = (xg * xg.mean((3, 4), keepdim=True)).sum(2)  # c_i = ⟨GAP(x_g), x_i⟩: (N, G, H, W)
        # ĉ: standardised over the H·W positions, s_c = ‖c − μ_c‖ / √(H·W − 1) (torch.std; divisor 1 at H·W = 1)
        t = t - t.mean((2, 3), keepdim=True)
        std = torch.linalg.vector_norm(t, dim=(2, 3), keepdim=True) / torch.sym_max(h * w - 1, 1) ** 0.5 + self.eps
        t = t / std
        a = self.gate(t * self.weight + self.bias)  # σ(γ_g ĉ_i + β_g): (N, G, H, W)
        return (xg * a.unsqueeze(2)).reshape(b, c, h, w)  # x first: y keeps x's memory format

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, eps={self.eps}"


@official("sge")
def _sge(groups: int = 64, channels: int | None = None):
    """Build from implus/PytorchInsight ``SpatialGroupEnhance(groups=64)``.

    The official class takes no channel count; pass ``channels`` (any multiple of ``groups``) for the plugattn
    module.
    """
    if channels is None:
        raise TypeError("from_official('sge'): pass channels=... (the official class works for any multiple of "
                        "groups; a plugattn module is built for one channel count)")
    return SpatialGroupEnhance(channels, groups=groups), rename_prefix()
