"""BAM: Bottleneck Attention Module (channel and spatial branches in parallel, residual gate).

Paper: Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018. https://arxiv.org/abs/1807.06514
— official code: https://github.com/Jongchan/attention-module (``MODELS/bam.py``: ``BAM``, ``ChannelGate``,
``SpatialGate``; init in ``MODELS/model_resnet.py``). Written from the paper and the official code; no code is
copied.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import ConvNormAct, Gate, LayerType, check_input, check_positive, factory_kwargs, reduced_width
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["BottleneckAttention"]

_COMBINE = ("mul", "add")


@register(
    "bam", paper="BAM: Bottleneck Attention Module", year=2018, url="https://arxiv.org/abs/1807.06514",
    kind="channel+spatial", official="Jongchan/attention-module MODELS/bam.py BAM",
)
class BottleneckAttention(nn.Module):
    r"""BAM: :math:`y = x \odot (1 + \sigma(M_c(x) \circ M_s(x)))`, channel and spatial maps in parallel.

    - Channel branch M_c (N, C, 1, 1): global average pool, then ``num_layers`` × (FC C → C/r with bias,
      BatchNorm, ReLU) and a final FC C/r → C with bias (the official ``ChannelGate``; its FCs are 1×1 convs
      here, its BatchNorm1d a BatchNorm2d on (N, C/r, 1, 1), which is the same computation).
    - Spatial branch M_s (N, 1, H, W): 1×1 conv C → C/r, BN, ReLU; ``num_dilated`` × (3×3 conv with
      dilation d and padding d, BN, ReLU); 1×1 conv C/r → 1. All convs with bias (the official ``SpatialGate``).
    - The two are broadcast to (N, C, H, W) and combined by ∘, gated by σ, and applied as a residual
      scaling ``x * (1 + σ(·))``.

    **Combination.** The paper writes M = σ(M_c + M_s) (element-wise sum; its Table 2 ablation finds the sum
    best), but the official code and its released checkpoints use the *product* σ(M_c · M_s). The default,
    ``combine="mul"``, is the official code; ``combine="add"`` is the paper's equation. (Upstream discussion:
    Jongchan/attention-module issues #1, #39, #52.)

    **Pooling.** The official channel branch pools with ``avg_pool2d(x, H, stride=H)``: the global mean for
    square inputs only (for W ≠ H it fails, or for H ≤ W < 2H averages just the first H columns). Here the
    channel branch uses the global mean for every size; for square inputs the two are identical.

    **Width.** C/r is floored (official ``C // r``) and at least 1 (the official code builds 0-wide layers
    for C < r, which fail).

    Args:
        channels: C, input channels.
        rd_ratio: 1/r, shared by both branches (paper r = 16). Default: 1/16.
        rd_channels: C/r, overriding ``rd_ratio``. Default: None.
        num_layers: hidden FC layers of the channel branch (official ``num_layers``). Default: 1.
        num_dilated: dilated 3×3 convs of the spatial branch (official ``dilation_conv_num``). Default: 2.
        dilation: d, their dilation and padding (official ``dilation_val``). Default: 4.
        combine: ``"mul"`` (official code) or ``"add"`` (paper). Default: ``"mul"``.
        act_layer: activation in both branches. Default: ReLU.
        norm_layer: norm in both branches. Default: BatchNorm2d.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = BottleneckAttention(64).eval()
        >>> m(torch.randn(2, 64, 7, 5)).shape
        torch.Size([2, 64, 7, 5])
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        num_layers: int = 1,
        num_dilated: int = 2,
        dilation: int = 4,
        combine: str = "mul",
        act_layer: LayerType = "relu",
        norm_layer: LayerType = "batchnorm2d",
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels, num_layers=num_layers, dilation=dilation)
        if isinstance(num_dilated, bool) or not isinstance(num_dilated, int) or num_dilated < 0:
            raise ValueError(f"{owner}: num_dilated must be a non-negative int, got {num_dilated!r}")
        if combine not in _COMBINE:
            raise ValueError(f"{owner}: combine must be one of {_COMBINE}, got {combine!r}")
        rd_channels = reduced_width(owner, channels, rd_ratio, rd_channels)
        dd = factory_kwargs(device, dtype)
        cna = {"bias": True, "norm_layer": norm_layer, "act_layer": act_layer, **dd}
        self.channels = channels
        self.rd_channels = rd_channels
        self.num_layers = num_layers
        self.num_dilated = num_dilated
        self.dilation = dilation
        self.combine = combine
        widths = [channels] + [rd_channels] * num_layers
        self.channel = nn.Sequential(  # on the pooled (N, C, 1, 1) descriptor: FC layers as 1×1 convs
            *(ConvNormAct(widths[i], widths[i + 1], 1, **cna) for i in range(num_layers)),
            nn.Conv2d(rd_channels, channels, 1, bias=True, **dd),
        )
        self.spatial = nn.Sequential(
            ConvNormAct(channels, rd_channels, 1, **cna),
            *(ConvNormAct(rd_channels, rd_channels, 3, dilation=dilation, **cna) for _ in range(num_dilated)),
            nn.Conv2d(rd_channels, 1, 1, bias=True, **dd),
        )
        self.gate = Gate(gate_layer)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official ResNet init (``model_resnet.py``).

        Spatial convs Kaiming-normal (fan_out), channel FCs PyTorch's default, every bias 0, every norm weight 1
        (its zero-init rule for "SpatialGate" keys never matches the ``spatial_att`` attribute names, so the
        spatial BN weights are 1).
        """
        for m in self.channel.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
        for m in self.spatial.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._NormBase) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, rd_channels={self.rd_channels}, num_layers={self.num_layers}, "
                f"num_dilated={self.num_dilated}, dilation={self.dilation}, combine={self.combine!r}")

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        mc = self.channel(x.mean((2, 3), keepdim=True))  # M_c(x): (N, C, 1, 1)
        ms = self.spatial(x)  # M_s(x): (N, 1, H, W)
        att = mc * ms if self.combine == "mul" else mc + ms  # (N, C, H, W)
        return x * (1 + self.gate(att))


@official("bam")
def _bam(gate_channel: int):
    """Jongchan/attention-module ``BAM(gate_channel)`` (reduction 16, one hidden FC, two dilated convs, d = 4).

    The official ``ChannelGate.__init__`` references an undefined ``gate_activation`` in some revisions; the
    architecture is the same in all. Pooling: exact for square inputs (see :class:`BottleneckAttention`).
    """
    module = BottleneckAttention(gate_channel, rd_channels=gate_channel // 16, combine="mul")
    pairs = [
        ("channel_att.gate_c.gate_c_fc_0.", "channel.0.conv."),
        ("channel_att.gate_c.gate_c_bn_1.", "channel.0.bn."),
        ("channel_att.gate_c.gate_c_fc_final.", "channel.1."),
        ("spatial_att.gate_s.gate_s_conv_reduce0.", "spatial.0.conv."),
        ("spatial_att.gate_s.gate_s_bn_reduce0.", "spatial.0.bn."),
        ("spatial_att.gate_s.gate_s_conv_final.", "spatial.3."),
    ]
    for i in range(2):
        pairs += [(f"spatial_att.gate_s.gate_s_conv_di_{i}.", f"spatial.{i + 1}.conv."),
                  (f"spatial_att.gate_s.gate_s_bn_di_{i}.", f"spatial.{i + 1}.bn.")]
    return module, rename_prefix(*pairs)
