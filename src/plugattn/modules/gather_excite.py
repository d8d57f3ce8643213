"""Gather-Excite: gather context over a spatial extent, redistribute it as a gate.

Paper: Hu, Shen, Albanie, Sun, Vedaldi, "Gather-Excite: Exploiting Feature Context in Convolutional Neural
Networks", NeurIPS 2018. https://arxiv.org/abs/1810.12348 — official code (Caffe, partial: prototxts only):
https://github.com/hujie-frank/GENet. The PyTorch reference is timm's ``layers/gather_excite.py``
(``GatherExcite``, Ross Wightman), which covers every extent with and without parameters; this module follows
it (same structure, defaults except ``use_mlp``, and parameter layout; :func:`plugattn.from_official`
``"ge_timm"`` loads its state_dict). Written from the paper and timm; no code is copied.

Note: timm 1.0.31's ``GatherExcite`` cannot be constructed (it passes ``*dd``, a dict, positionally to
``ConvMlp`` and ``create_conv2d``, which raises ``TypeError``); the tests compare against it with those calls
patched.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .._layers import Gate, LayerType, check_input, check_positive, factory_kwargs, get_layer, reduced_width
from ..official import kwarg_check, official, rename_prefix
from ..registry import register

__all__ = ["GatherExcite"]


@register(
    "ge", paper="Gather-Excite: Exploiting Feature Context in Convolutional Neural Networks", year=2018,
    url="https://arxiv.org/abs/1810.12348", kind="channel",
    official="hujie-frank/GENet (Caffe, partial); timm layers.gather_excite.GatherExcite",
)
class GatherExcite(nn.Module):
    r"""Gather-Excite: :math:`y = x \odot \sigma(\mathrm{interp}(\xi_E(\xi_G(x))))`.

    The gather ξ_G summarises each channel over a spatial extent e; the excite ξ_E maps the summary back and
    it is resized (nearest neighbour) to the input size and gated. The paper's variants:

    - **GE-θ⁻** (default; parameter-free): ξ_G is average pooling, global (``extent=0``, one value per
      channel) or local with extent e (kernel 2e−1, stride e, padding e−1, padding excluded from the mean);
      ξ_E is the identity (``use_mlp=False``). With the global extent: ``y = x · σ(GAP(x))``.
    - **GE-θ** (``extra_params=True``): ξ_G is log₂(e) depthwise 3×3 stride-2 convs (no bias), each followed
      by ``norm_layer``, with ``act_layer`` between them (not after the last).
    - **GE-θ⁺** (``extra_params=True, use_mlp=True``): ξ_E is also SE's bottleneck MLP (1×1 convs with bias,
      width C·rd_ratio, ``act_layer`` between).

    Defaults: the paper's parameter-free GE-θ⁻ with global extent. timm's ``GatherExcite`` defaults to
    ``use_mlp=True`` (global average + MLP, which is SE with ``rd_divisor=1``); pass ``use_mlp=True`` for that.
    GE-θ with the *global* extent (a depthwise conv as large as the feature map) needs the input size at
    construction and is not supported (``ValueError``): use a local extent, or ``extra_params=False``.

    Args:
        channels: C, input channels.
        extent: e; 0 is global. Local extents must be even (timm) and, with ``extra_params``, a power of two
            (log₂(e) stride-2 convs). Default: 0.
        extra_params: GE-θ: a learned depthwise gather instead of average pooling. Default: False.
        use_mlp: the SE bottleneck MLP as the excite (GE-θ⁺). Default: False (GE-θ⁻; timm: True).
        rd_ratio: MLP width ratio. Default: 1/16.
        rd_channels: MLP width, overriding ``rd_ratio``. Default: None.
        rd_divisor: MLP width rounding (timm's ``make_divisible``, ``round_limit=0``). Default: 1.
        add_maxpool: gather with ½(mean + max) (timm's experimental option, not in the paper; parameter-free
            gather only). Default: False.
        act_layer: activation of the gather and of the MLP. Default: ReLU.
        norm_layer: norm after each gather conv (``None``: none). Default: BatchNorm2d.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = GatherExcite(64)  # GE-θ⁻, global extent: no parameters
        >>> m(torch.randn(2, 64, 7, 5)).shape, sum(p.numel() for p in m.parameters())
        (torch.Size([2, 64, 7, 5]), 0)
        >>> GatherExcite(64, extent=4, extra_params=True, use_mlp=True)(torch.randn(1, 64, 13, 17)).shape
        torch.Size([1, 64, 13, 17])
    """

    def __init__(
        self,
        channels: int,
        *,
        extent: int = 0,
        extra_params: bool = False,
        use_mlp: bool = False,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        add_maxpool: bool = False,
        act_layer: LayerType = "relu",
        norm_layer: LayerType = "batchnorm2d",
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        if isinstance(extent, bool) or not isinstance(extent, int) or extent < 0 or extent % 2:
            raise ValueError(f"{owner}: extent must be 0 (global) or a positive even int, got {extent!r}")
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.extent = extent
        self.add_maxpool = add_maxpool
        if extra_params:
            if extent == 0:
                raise ValueError(f"{owner}: extra_params=True with extent=0 (GE-θ, global) needs a depthwise conv "
                                 f"as large as the input, i.e. the input size at construction; not supported. "
                                 f"Use a local extent (2, 4, 8) or extra_params=False")
            num_conv = int(math.log2(extent))
            if 2**num_conv != extent:
                raise ValueError(f"{owner}: with extra_params=True, extent must be a power of two, got {extent}")
            if add_maxpool:
                raise ValueError(f"{owner}: add_maxpool applies to the parameter-free gather only")
            self.gather: nn.Sequential | None = nn.Sequential()
            for i in range(num_conv):
                self.gather.add_module(
                    f"conv{i + 1}", nn.Conv2d(channels, channels, 3, 2, 1, groups=channels, bias=False, **dd))
                if norm_layer is not None:
                    self.gather.add_module(
                        f"norm{i + 1}", get_layer(norm_layer, channels, arg_name="norm_layer", **dd))
                if i != num_conv - 1:
                    self.gather.add_module(f"act{i + 1}", get_layer(act_layer, arg_name="act_layer"))
        else:
            self.gather = None
        rd_channels = reduced_width(owner, channels, rd_ratio, rd_channels, rd_divisor)  # checked even if unused
        if use_mlp:
            self.fc1: nn.Conv2d | None = nn.Conv2d(channels, rd_channels, 1, bias=True, **dd)
            self.act: nn.Module | None = get_layer(act_layer, arg_name="act_layer")
            self.fc2: nn.Conv2d | None = nn.Conv2d(rd_channels, channels, 1, bias=True, **dd)
        else:
            rd_channels = None
            self.fc1 = self.act = self.fc2 = None
        self.rd_channels = rd_channels
        self.gate = Gate(gate_layer)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, extent={self.extent}, extra_params={self.gather is not None}, "
                f"rd_channels={self.rd_channels}, add_maxpool={self.add_maxpool}")

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        k, e = 2 * self.extent - 1, self.extent
        if self.gather is not None:  # GE-θ: strided depthwise convs
            s = self.gather(x)  # (N, C, ⌈H/e⌉, ⌈W/e⌉)
        elif e == 0:  # GE-θ⁻, global extent
            s = x.mean((2, 3), keepdim=True)  # (N, C, 1, 1)
            if self.add_maxpool:
                s = 0.5 * s + 0.5 * x.amax((2, 3), keepdim=True)
        else:  # GE-θ⁻, local extent: mean over (2e − 1)² windows at stride e, padding excluded
            s = F.avg_pool2d(x, k, e, k // 2, count_include_pad=False)  # (N, C, ⌈H/e⌉, ⌈W/e⌉)
            if self.add_maxpool:
                s = 0.5 * s + 0.5 * F.max_pool2d(x, k, e, k // 2)
        if self.fc1 is not None:  # GE-θ⁺: the excite MLP
            assert self.act is not None and self.fc2 is not None  # built with fc1 (use_mlp)
            s = self.fc2(self.act(self.fc1(s)))
        if e != 0:  # a local extent: back to H × W by nearest neighbour (global: broadcast)
            s = F.interpolate(s, size=x.shape[-2:], mode="nearest")
        return x * self.gate(s)


@official("ge_timm")
def _ge_timm(channels: int, feat_size=None, extra_params: bool = False, extent: int = 0, use_mlp: bool = True,
             **kwargs):
    """The timm ``GatherExcite``; ``feat_size`` (global GE-θ only) is not supported.

    timm's signature: ``GatherExcite(channels, feat_size=None, extra_params=False, extent=0, use_mlp=True,
    rd_ratio=1/16, rd_channels=None, rd_divisor=1, add_maxpool=False, act_layer=ReLU, norm_layer=BatchNorm2d,
    gate_layer='sigmoid')``.
    """
    kwarg_check("ge_timm", kwargs, {"rd_ratio", "rd_channels", "rd_divisor", "add_maxpool", "act_layer",
                                    "norm_layer", "gate_layer"})
    if extra_params and extent == 0:
        raise ValueError("from_official('ge_timm'): extra_params=True with extent=0 (feat_size) is not supported")
    if kwargs.get("rd_channels") == 0:  # timm: `if not rd_channels` recomputes it
        kwargs["rd_channels"] = None
    if "norm_layer" in kwargs:  # timm builds nn.BatchNorm2d whenever norm_layer is truthy
        kwargs["norm_layer"] = "batchnorm2d" if kwargs["norm_layer"] else None
    module = GatherExcite(channels, extra_params=extra_params, extent=extent, use_mlp=use_mlp, **kwargs)
    return module, rename_prefix(("mlp.fc1.", "fc1."), ("mlp.fc2.", "fc2."))
