"""Squeeze-and-Excitation.

Paper: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018 / TPAMI 2020.
https://arxiv.org/abs/1709.01507 — official code (Caffe): https://github.com/hujie-frank/SENet

Default = the official Caffe structure (biased 1×1 convs, width ⌊C/16⌋, ReLU, sigmoid), which is also
timm's legacy ``senet.SEModule`` that carries the converted official weights. ``bias=False`` gives the
moskomule/senet.pytorch port; ``rd_divisor=8`` gives timm's ``layers.SEModule`` rounding.

Variant in this file: effective SE (eSE, ``ese``) from Lee, Park, "CenterMask: Real-Time Anchor-Free Instance
Segmentation", CVPR 2020, https://arxiv.org/abs/1911.06667 — official code:
https://github.com/youngwanLEE/vovnet-detectron2 (``eSEModule``); timm ``layers.EffectiveSEModule``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import (
    Gate,
    LayerType,
    check_input,
    check_positive,
    factory_kwargs,
    get_layer,
    make_divisible,
    reduced_width,
)
from ..official import kwarg_check, official, rename_prefix
from ..registry import register

__all__ = ["SqueezeExcite", "EffectiveSqueezeExcite"]


@register(
    "se", paper="Squeeze-and-Excitation Networks", year=2018, url="https://arxiv.org/abs/1709.01507",
    kind="channel", official="hujie-frank/SENet (Caffe); timm senet.SEModule; moskomule/senet.pytorch",
)
class SqueezeExcite(nn.Module):
    r"""Squeeze-and-Excitation: :math:`y = x \cdot \sigma(W_2\,\delta(W_1\,\mathrm{GAP}(x) + b_1) + b_2)`.

    The squeeze is global average pooling :math:`\mathrm{GAP}(x)_c = \frac{1}{HW}\sum_{i,j} x_{c,i,j}`; the
    excitation is the bottleneck :math:`W_1 \in \mathbb{R}^{C/r \times C}`, :math:`W_2 \in \mathbb{R}^{C \times C/r}`
    (1×1 convs ``fc1``, ``fc2``), and the gate rescales each channel of x.

    Args:
        channels: C, input channels.
        rd_ratio: reduction 1/r of the hidden width (paper r = 16). Default: 1/16.
        rd_channels: hidden width C/r, overriding ``rd_ratio``. Default: None.
        rd_divisor: ``None`` floors C·rd_ratio (paper, Caffe); an int rounds to a multiple (timm uses 8).
        bias: biases on W₁, W₂ (Caffe: True; moskomule port: False). Default: True.
        add_maxpool: squeeze with ½(mean + max) instead of the mean (timm option, not in the paper).
        act_layer: δ. Default: ReLU.
        norm_layer: optional norm after W₁ (timm option, not in the paper). Default: None.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = SqueezeExcite(64)
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
        bias: bool = True,
        add_maxpool: bool = False,
        act_layer: LayerType = "relu",
        norm_layer: LayerType = None,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        rd_channels = reduced_width(owner, channels, rd_ratio, rd_channels, rd_divisor)
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.rd_channels = rd_channels
        self.add_maxpool = add_maxpool
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=bias, **dd)
        self.norm = get_layer(norm_layer, rd_channels, arg_name="norm_layer", **dd)
        self.act = get_layer(act_layer, arg_name="act_layer")
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=bias, **dd)
        self.gate = Gate(gate_layer)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, rd_channels={self.rd_channels}, add_maxpool={self.add_maxpool}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        s = x.mean((2, 3), keepdim=True)  # (N, C, 1, 1): squeeze
        if self.add_maxpool:
            s = 0.5 * s + 0.5 * x.amax((2, 3), keepdim=True)
        z = self.fc2(self.act(self.norm(self.fc1(s))))  # (N, C, 1, 1): excitation
        return x * self.gate(z)


@official("se")
def _se_caffe(channels: int, reduction: int = 16):
    """Caffe SENet as converted for PyTorch (timm ``models/senet.py`` ``SEModule``)."""
    return SqueezeExcite(channels, rd_channels=channels // reduction), rename_prefix()


@official("se_moskomule")
def _se_moskomule(channel: int, reduction: int = 16):
    """moskomule/senet.pytorch ``SELayer``: bias-free linear layers."""
    module = SqueezeExcite(channel, rd_channels=channel // reduction, bias=False)
    return module, rename_prefix(("fc.0.", "fc1."), ("fc.2.", "fc2."))


@official("se_timm")
def _se_timm(channels: int, **kwargs):
    """The timm ``layers.SEModule`` (``rd_ratio``, ``rd_channels``, ``rd_divisor=8``, ``add_maxpool``, ...)."""
    kwarg_check("se_timm", kwargs, {"rd_ratio", "rd_channels", "rd_divisor", "add_maxpool", "bias",
                                    "act_layer", "norm_layer", "gate_layer"})
    rd_ratio = kwargs.pop("rd_ratio", 1 / 16)
    rd_divisor = kwargs.pop("rd_divisor", 8)
    rd_channels = kwargs.pop("rd_channels", None)
    if rd_channels is None:
        rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
    kwargs.setdefault("act_layer", "relu")
    return SqueezeExcite(channels, rd_channels=rd_channels, **kwargs), rename_prefix(("bn.", "norm."))


@register(
    "ese", paper="CenterMask: Real-Time Anchor-Free Instance Segmentation", year=2020,
    url="https://arxiv.org/abs/1911.06667", kind="channel",
    official="youngwanLEE/vovnet-detectron2 eSEModule; timm layers.EffectiveSEModule",
)
class EffectiveSqueezeExcite(nn.Module):
    r"""Effective SE (eSE, VoVNetV2): :math:`y = x \cdot \sigma_h(W\,\mathrm{GAP}(x) + b)`, one C → C FC.

    SE's two FCs with a C/r bottleneck lose channel information; eSE keeps one C → C layer (a 1×1 conv
    with bias) and gates with the hard sigmoid σ_h(z) = ReLU6(z + 3)/6 (the official ``Hsigmoid``, equal
    to ``nn.Hardsigmoid``).

    Paper: Lee, Park, "CenterMask: Real-Time Anchor-Free Instance Segmentation", CVPR 2020 (VoVNetV2).
    https://arxiv.org/abs/1911.06667 — official code: https://github.com/youngwanLEE/vovnet-detectron2
    (``vovnet.py``, ``eSEModule(channel, reduction=4)``; ``reduction`` is unused there) and
    https://github.com/youngwanLEE/CenterMask. timm's ``layers.EffectiveSEModule`` is the same module.

    Args:
        channels: C, input channels.
        add_maxpool: squeeze with ½(mean + max) instead of the mean (timm option, not in the paper).
            Default: False.
        gate_layer: σ_h. Default: hard sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = EffectiveSqueezeExcite(64)
        >>> m(torch.randn(2, 64, 7, 5)).shape, m.fc.weight.shape
        (torch.Size([2, 64, 7, 5]), torch.Size([64, 64, 1, 1]))
    """

    def __init__(
        self,
        channels: int,
        *,
        add_maxpool: bool = False,
        gate_layer: LayerType = "hard_sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels)
        self.channels = channels
        self.add_maxpool = add_maxpool
        self.fc = nn.Conv2d(channels, channels, 1, bias=True, device=device, dtype=dtype)
        self.gate = Gate(gate_layer)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, add_maxpool={self.add_maxpool}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        s = x.mean((2, 3), keepdim=True)  # (N, C, 1, 1)
        if self.add_maxpool:
            s = 0.5 * s + 0.5 * x.amax((2, 3), keepdim=True)
        return x * self.gate(self.fc(s))


@official("ese")
def _ese_vovnet(channel: int, reduction: int = 4):
    """youngwanLEE/vovnet-detectron2 ``eSEModule(channel, reduction=4)`` (``reduction`` is unused upstream)."""
    del reduction
    return EffectiveSqueezeExcite(channel), rename_prefix()


@official("ese_timm")
def _ese_timm(channels: int, add_maxpool: bool = False, gate_layer: LayerType = "hard_sigmoid"):
    """The timm ``layers.EffectiveSEModule(channels, add_maxpool=False, gate_layer='hard_sigmoid')``."""
    return EffectiveSqueezeExcite(channels, add_maxpool=add_maxpool, gate_layer=gate_layer), rename_prefix()
