"""Global Context (GC) block.

Paper: Cao, Xu, Lin, Wei, Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
ICCV Workshops 2019 / TPAMI 2020. https://arxiv.org/abs/1904.11492 — official code:
https://github.com/xvjiarui/GCNet (``mmdet/ops/gcb/context_block.py``, ``ContextBlock``; the same class
now lives in mmcv as ``mmcv/cnn/bricks/context_block.py``).

Default = the official block as used in the paper's detection models: attention pooling, one
``channel_add`` fusion, bottleneck ratio 1/16 with LayerNorm (ε = 1e-5), ReLU, and the official
initialisation (Kaiming fan-in for the mask conv, zeros for the last conv of each transform, so the block
starts as the identity). timm's ``layers.GlobalContext`` is the same math with other defaults
(``fuse_scale`` instead of ``fuse_add``, ratio 1/8, LayerNorm ε = 1e-6); :func:`from_official` accepts both.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import (
    Gate,
    LayerNorm2d,
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

__all__ = ["GlobalContextBlock"]


class _ContextMlp(nn.Module):
    """The GC transform: 1×1 conv C → C/r, norm, act, 1×1 conv C/r → C (timm's ``ConvMlp`` names)."""

    def __init__(self, channels: int, rd_channels: int, bias: bool, act_layer: LayerType, norm_layer: LayerType,
                 dd: dict) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=bias, **dd)
        self.norm = get_layer(norm_layer, rd_channels, arg_name="norm_layer", **dd)
        self.act = get_layer(act_layer, arg_name="act_layer")
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=bias, **dd)

    def forward(self, s: Tensor) -> Tensor:
        """(N, C, 1, 1) context → (N, C, 1, 1)."""
        return self.fc2(self.act(self.norm(self.fc1(s))))


@register(
    "gc", paper="GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond", year=2019,
    url="https://arxiv.org/abs/1904.11492", kind="channel",
    official="xvjiarui/GCNet ContextBlock (mmcv ContextBlock); timm layers.GlobalContext",
)
class GlobalContextBlock(nn.Module):
    r"""Global context block: attention pooling, a bottleneck transform, and fusion by addition.

    .. math::
        z_i = x_i + W_{v2}\,\mathrm{ReLU}\big(\mathrm{LN}\big(W_{v1} \textstyle\sum_j
              \frac{e^{W_k x_j}}{\sum_m e^{W_k x_m}}\, x_j\big)\big)

    :math:`W_k` is a 1×1 conv C → 1 (the context mask, softmax over all H·W positions through the
    ``attn_gate``), :math:`W_{v1}, W_{v2}` the bottleneck C → C/r → C. With ``fuse_scale`` the
    transform's output also scales the input through σ (the paper's ``channel_mul`` fusion), applied
    before the addition as in the official code.

    Args:
        channels: C, input channels.
        rd_ratio: 1/r, the bottleneck ratio (paper: 1/16 for the detection models). Default: 1/16.
        rd_channels: C/r, overriding ``rd_ratio``. Default: None.
        rd_divisor: ``None`` floors C·rd_ratio (official ``int(C * ratio)``); an int rounds as in timm.
        use_attn: attention pooling (official ``pooling_type='att'``); False averages (``'avg'``). Default: True.
        fuse_add: the ``channel_add`` fusion. Default: True.
        fuse_scale: the ``channel_mul`` fusion. Default: False.
        bias: biases on the 1×1 convs (official: True). Default: True.
        act_layer: the transform's activation. Default: ReLU.
        norm_layer: the transform's norm, called with the width C/r. Default: :class:`LayerNorm2d` (ε 1e-5).
        gate_layer: σ of the ``channel_mul`` fusion. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = GlobalContextBlock(64)
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
        use_attn: bool = True,
        fuse_add: bool = True,
        fuse_scale: bool = False,
        bias: bool = True,
        act_layer: LayerType = "relu",
        norm_layer: LayerType = LayerNorm2d,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, channels=channels)
        if not (fuse_add or fuse_scale):
            raise ValueError(f"{name}: at least one of fuse_add, fuse_scale must be True")
        rd_channels = reduced_width(name, channels, rd_ratio, rd_channels, rd_divisor)
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.rd_channels = rd_channels
        self.conv_attn = nn.Conv2d(channels, 1, 1, bias=bias, **dd) if use_attn else None
        self.attn_gate = Gate("softmax", dim=-1) if use_attn else None
        self.mlp_add = _ContextMlp(channels, rd_channels, bias, act_layer, norm_layer, dd) if fuse_add else None
        self.mlp_scale = _ContextMlp(channels, rd_channels, bias, act_layer, norm_layer, dd) if fuse_scale else None
        self.gate = Gate(gate_layer) if fuse_scale else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: Kaiming-normal (fan-in) mask conv with zero bias; last conv of each transform zero."""
        if self.conv_attn is not None:
            nn.init.kaiming_normal_(self.conv_attn.weight, mode="fan_in", nonlinearity="relu")
            if self.conv_attn.bias is not None:
                nn.init.zeros_(self.conv_attn.bias)
        for mlp in (self.mlp_add, self.mlp_scale):
            if mlp is not None:
                nn.init.zeros_(mlp.fc2.weight)
                if mlp.fc2.bias is not None:
                    nn.init.zeros_(mlp.fc2.bias)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, rd_channels={self.rd_channels}, use_attn={self.conv_attn is not None}, "
                f"fuse_add={self.mlp_add is not None}, fuse_scale={self.mlp_scale is not None}")

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        n, c = x.shape[:2]
        if self.conv_attn is not None:  # attention pooling: softmax over the H·W positions of W_k x
            assert self.attn_gate is not None  # built with conv_attn (use_attn)
            a = self.attn_gate(self.conv_attn(x).flatten(2))  # (N, 1, HW)
            context = torch.matmul(x.flatten(2), a.transpose(1, 2)).view(n, c, 1, 1)  # (N, C, 1, 1): Σ_j a_j x_j
        else:
            context = x.mean((2, 3), keepdim=True)  # (N, C, 1, 1)
        out = x
        if self.mlp_scale is not None:
            assert self.gate is not None  # built with mlp_scale (fuse_scale)
            out = out * self.gate(self.mlp_scale(context))
        if self.mlp_add is not None:
            out = out + self.mlp_add(context)
        return out


_FUSIONS = {"channel_add", "channel_mul"}


@official("gc")
def _gc(inplanes: int, ratio: float, pooling_type: str = "att", fusion_types=("channel_add",)):
    """xvjiarui/GCNet ``ContextBlock(inplanes, ratio, pooling_type, fusion_types)`` (mmcv: ``in_channels``)."""
    if pooling_type not in ("att", "avg"):
        raise ValueError(f"from_official('gc'): pooling_type must be 'att' or 'avg', got {pooling_type!r}")
    fusion_types = tuple(fusion_types)
    if not fusion_types or not set(fusion_types) <= _FUSIONS:
        raise ValueError(f"from_official('gc'): fusion_types must be a non-empty subset of {sorted(_FUSIONS)}, "
                         f"got {fusion_types!r}")
    module = GlobalContextBlock(
        inplanes, rd_channels=int(inplanes * ratio), use_attn=pooling_type == "att",
        fuse_add="channel_add" in fusion_types, fuse_scale="channel_mul" in fusion_types,
    )
    key_map = rename_prefix(
        ("conv_mask.", "conv_attn."),
        ("channel_add_conv.0.", "mlp_add.fc1."), ("channel_add_conv.1.", "mlp_add.norm."),
        ("channel_add_conv.3.", "mlp_add.fc2."),
        ("channel_mul_conv.0.", "mlp_scale.fc1."), ("channel_mul_conv.1.", "mlp_scale.norm."),
        ("channel_mul_conv.3.", "mlp_scale.fc2."),
    )
    return module, key_map


@official("gc_timm")
def _gc_timm(channels: int, **kwargs):
    """The timm ``layers.GlobalContext`` (``use_attn``, ``fuse_add``, ``fuse_scale``, ``rd_ratio=1/8``, ...).

    Same parameter names as ours; timm's LayerNorm2d has ε = 1e-6 and its width rounds with
    ``rd_divisor=1``. ``init_last_zero`` only changes the initialisation, which the checkpoint overrides.
    """
    kwarg_check("gc_timm", kwargs, {"use_attn", "fuse_add", "fuse_scale", "init_last_zero", "rd_ratio",
                                    "rd_channels", "rd_divisor", "act_layer", "gate_layer"})
    kwargs.pop("init_last_zero", None)
    rd_ratio = kwargs.pop("rd_ratio", 1 / 8)
    rd_divisor = kwargs.pop("rd_divisor", 1)
    rd_channels = kwargs.pop("rd_channels", None)
    if rd_channels is None:
        rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
    kwargs.setdefault("use_attn", True)
    kwargs.setdefault("fuse_add", False)
    kwargs.setdefault("fuse_scale", True)
    kwargs.setdefault("act_layer", "relu")

    def ln_eps6(c: int, device=None, dtype=None) -> nn.Module:
        return LayerNorm2d(c, eps=1e-6, device=device, dtype=dtype)

    return GlobalContextBlock(channels, rd_channels=rd_channels, norm_layer=ln_eps6, **kwargs), rename_prefix()
