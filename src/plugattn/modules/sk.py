"""Selective Kernel (SK) convolution: M branches with different receptive fields, mixed by a softmax over branches.

Paper: Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019. https://arxiv.org/abs/1903.06586
Official code (Caffe): https://github.com/implus/SKNet (``models/sknet50.prototxt``).
PyTorch references: https://github.com/pppLang/SKNet (``sknet.py`` ``SKConv``, the port the first author
recommends), https://github.com/ResearchingDexter/SKNet_pytorch (``SKNet.py`` ``SKConv``, the Caffe layout)
and timm (``timm/layers/selective_kernel.py`` ``SelectiveKernel``).

Default = the paper / Caffe SK unit: M = 2 branches, a 3×3 and a dilated 3×3 (the "5×5"), 32 groups (capped to
the channel count), no conv bias, BN + ReLU on every branch, attention width d = max(⌊C/16⌋, 32) with BN + ReLU,
and one 1×1 ``fc_select`` producing the M·C logits in (m, c) order. The three references are the same class
with other arguments; :func:`plugattn.from_official` builds them (``sk``, ``sk_caffe``, ``sk_timm``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import (
    ConvNormAct,
    Gate,
    LayerType,
    check_input,
    check_positive,
    factory_kwargs,
    get_layer,
    largest_divisor,
    make_divisible,
    reduced_width,
)
from ..official import kwarg_check, official, rename_prefix
from ..registry import register

__all__ = ["SelectiveKernel"]


@register(
    "sk", paper="Selective Kernel Networks", year=2019, url="https://arxiv.org/abs/1903.06586", kind="channel",
    official="implus/SKNet (Caffe); pppLang/SKNet SKConv; ResearchingDexter/SKNet_pytorch SKConv; timm SelectiveKernel",
)
class SelectiveKernel(nn.Module):
    r"""Selective Kernel convolution: split, fuse, select.

    .. math::
        U_m = \delta(\mathrm{BN}(\mathrm{conv}_m(x))),\quad s = \mathrm{GAP}\big(\textstyle\sum_m U_m\big),\quad
        z = \delta(\mathrm{BN}(W_r s)),\quad a_{m,c} = \frac{e^{A_{m,c} z}}{\sum_{m'} e^{A_{m',c} z}},\quad
        V_c = \textstyle\sum_m a_{m,c}\, U_{m,c}

    :math:`W_r` is ``fc_reduce`` (C_out → d) and the rows of :math:`A` are ``fc_select`` (d → M·C_out, row m·C_out + c).
    It is a convolution, not a reweighting of ``x``: the output has ``out_channels`` channels and the stride of
    the branches.

    Branch m has kernel ``kernel_size[m]``; with ``keep_3x3`` a k×k kernel becomes a 3×3 kernel with dilation
    ``dilation·(k−1)/2`` (Caffe, Dexter, timm), otherwise it is a real k×k kernel with dilation ``dilation``
    (pppLang). Padding keeps the size at ⌊(H−1)/stride⌋ + 1.

    Args:
        channels: C, input channels.
        out_channels: C_out. Default: None, the same as ``channels``.
        kernel_size: one odd k per branch (M = its length), or one int for two branches of that size.
            Default: (3, 5).
        stride: stride of every branch. Default: 1.
        dilation: dilation multiplier of every branch. Default: 1.
        groups: G of every branch conv, capped at C_out as in timm (Caffe: 32; timm: 1). Must divide the
            input channels of a branch and C_out. Default: None, i.e. the largest count not above the paper's
            32 that divides both (32 where C is a multiple of 32; C = 40 → 20, 112 → 28, 440 → 22).
        keep_3x3: 3×3 dilated kernels instead of k×k ones. Default: True.
        split_input: each branch sees its own C/M input channels (timm), instead of all C. Default: False.
        bias: bias on the branch convs (pppLang: True). Default: False.
        rd_ratio: 1/r, reduction of the attention width d relative to C_out (paper r = 16). Default: 1/16.
        rd_channels: d, overriding ``rd_ratio``, ``rd_divisor`` and ``min_channels``. Default: None.
        rd_divisor: ``None`` floors C_out·rd_ratio (Caffe); an int rounds it to a multiple (timm: 8). Default: None.
        min_channels: L, the lower bound of d (paper: 32). Default: 32.
        attn_bias: bias on ``fc_reduce`` and ``fc_select`` (pppLang: True). Default: False.
        attn_norm_layer: norm after ``fc_reduce``; ``None`` for none (pppLang). Default: BatchNorm2d.
        attn_act_layer: δ after ``fc_reduce``; ``None`` for none (pppLang). Default: ReLU.
        act_layer: δ of the branches. Default: ReLU.
        norm_layer: norm of the branches. Default: BatchNorm2d.
        gate_layer: the selection over branches (dim 1 of the (N, M, C_out, 1, 1) logits). Default: softmax.

    Shape:
        (N, C, H, W) → (N, C_out, ⌊(H−1)/stride⌋ + 1, ⌊(W−1)/stride⌋ + 1).

    Examples:
        >>> m = SelectiveKernel(64)
        >>> m.fc_reduce.out_channels, m(torch.randn(2, 64, 7, 5)).shape
        (32, torch.Size([2, 64, 7, 5]))
        >>> SelectiveKernel(64, out_channels=128, stride=2)(torch.randn(2, 64, 7, 5)).shape
        torch.Size([2, 128, 4, 3])
    """

    def __init__(
        self,
        channels: int,
        *,
        out_channels: int | None = None,
        kernel_size: int | Sequence[int] = (3, 5),
        stride: int = 1,
        dilation: int = 1,
        groups: int | None = None,
        keep_3x3: bool = True,
        split_input: bool = False,
        bias: bool = False,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int | None = None,
        min_channels: int = 32,
        attn_bias: bool = False,
        attn_norm_layer: LayerType = "batchnorm2d",
        attn_act_layer: LayerType = "relu",
        act_layer: LayerType = "relu",
        norm_layer: LayerType = "batchnorm2d",
        gate_layer: LayerType = "softmax",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        out_channels = channels if out_channels is None else out_channels
        check_positive(name, channels=channels, out_channels=out_channels, stride=stride, dilation=dilation,
                       min_channels=min_channels)
        kernels = [kernel_size, kernel_size] if isinstance(kernel_size, int) else list(kernel_size)
        min_k = 3 if keep_3x3 else 1
        if not kernels or any(isinstance(k, bool) or not isinstance(k, int) or k < min_k or k % 2 == 0
                              for k in kernels):
            raise ValueError(f"{name}: kernel_size must be an odd int >= {min_k} or a non-empty sequence of them "
                             f"(keep_3x3={keep_3x3}), got {kernel_size!r}")
        num_paths = len(kernels)
        if keep_3x3:
            dilations = [dilation * (k - 1) // 2 for k in kernels]
            kernels = [3] * num_paths
        else:
            dilations = [dilation] * num_paths
        if split_input and channels % num_paths:
            raise ValueError(f"{name}: split_input needs channels ({channels}) divisible by the number of "
                             f"branches len(kernel_size) = {num_paths}")
        path_in = channels // num_paths if split_input else channels
        fits = math.gcd(path_in, out_channels)  # a group count must divide both
        if groups is None:
            groups = largest_divisor(fits, 32)
        check_positive(name, groups=groups)
        groups = min(groups, out_channels)
        if path_in % groups or out_channels % groups:
            raise ValueError(f"{name}: groups={groups} (capped at out_channels) must divide the input channels of "
                             f"a branch ({path_in}) and out_channels ({out_channels}); "
                             f"groups={largest_divisor(fits, groups)} would work")
        rd_channels = reduced_width(name, out_channels, rd_ratio, rd_channels, rd_divisor, min_channels=min_channels,
                                    round_limit=0.9)

        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.out_channels = out_channels
        self.num_paths = num_paths
        self.split_input = split_input
        self.paths = nn.ModuleList(
            ConvNormAct(path_in, out_channels, k, stride=stride, dilation=d, groups=groups, bias=bias,
                        norm_layer=norm_layer, act_layer=act_layer, **dd)
            for k, d in zip(kernels, dilations)
        )
        self.fc_reduce = nn.Conv2d(out_channels, rd_channels, 1, bias=attn_bias, **dd)
        self.norm = get_layer(attn_norm_layer, rd_channels, arg_name="attn_norm_layer", **dd)
        self.act = get_layer(attn_act_layer, arg_name="attn_act_layer")
        self.fc_select = nn.Conv2d(rd_channels, num_paths * out_channels, 1, bias=attn_bias, **dd)
        self.gate = Gate(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        if self.split_input:  # branch m sees input channels [m·C/M, (m + 1)·C/M)
            xs = x.chunk(self.num_paths, dim=1)
            u = [path(xs[m]) for m, path in enumerate(self.paths)]  # M × (N, C_out, H', W')
        else:
            u = [path(x) for path in self.paths]  # M × (N, C_out, H', W')
        n, c = u[0].shape[:2]
        s = sum(u[1:], start=u[0]).mean((2, 3), keepdim=True)  # s = GAP(U), U = Σ_m U_m: (N, C_out, 1, 1)
        z = self.act(self.norm(self.fc_reduce(s)))  # (N, d, 1, 1)
        logits = self.fc_select(z).view(n, self.num_paths, c, 1, 1)  # (N, M, C_out, 1, 1), channel m·C_out + c
        a = self.gate(logits)  # softmax over the M branches
        v = u[0] * a[:, 0]  # V = Σ_m a_m·U_m, a_m (N, C_out, 1, 1)
        for m in range(1, self.num_paths):
            v = v + u[m] * a[:, m]
        return v

    def extra_repr(self) -> str:
        convs = [cast(ConvNormAct, p).conv for p in self.paths]
        kernels = tuple(c.kernel_size[0] for c in convs)
        dilations = tuple(c.dilation[0] for c in convs)
        conv = convs[0]
        return (f"channels={self.channels}, out_channels={self.out_channels}, kernel_size={kernels}, "
                f"dilation={dilations}, stride={conv.stride[0]}, groups={conv.groups}, "
                f"rd_channels={self.fc_reduce.out_channels}, split_input={self.split_input}")


def _branch_kernels(num_paths: int, owner: str) -> tuple[int, ...]:
    check_positive(owner, M=num_paths)
    return tuple(3 + 2 * i for i in range(num_paths))


@official("sk")
def _sk_ppplang(features: int, WH: int | None, M: int, G: int, r: int, stride: int = 1, L: int = 32):
    """pppLang/SKNet ``SKConv(features, WH, M, G, r, stride=1, L=32)``; ``WH`` is unused there and here.

    Real (3 + 2i)×(3 + 2i) biased branch convs, d = max(int(features / r), L), a linear z (no BN, no ReLU) and M
    biased heads ``fcs.i``, which are one ``fc_select`` with the heads' rows stacked m-major: the third returned
    item concatenates them.
    """
    owner = "from_official('sk')"
    check_positive(owner, features=features, G=G, r=r, stride=stride, L=L)
    kernels = _branch_kernels(M, owner)
    module = SelectiveKernel(
        features, kernel_size=kernels, stride=stride, groups=G, keep_3x3=False, bias=True,
        rd_channels=max(int(features / r), L), attn_bias=True, attn_norm_layer=None, attn_act_layer=None,
    )

    def merge_heads(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        merged = {k: v for k, v in state_dict.items() if not k.startswith("fcs.")}
        for suffix in ("weight", "bias"):
            heads = [f"fcs.{i}.{suffix}" for i in range(M)]
            if all(k in state_dict for k in heads):
                merged[f"fcs.{suffix}"] = torch.cat([state_dict[k] for k in heads], dim=0)  # (M·C, ...)
        extra = sorted(k for k in state_dict if k.startswith("fcs.") and k.rsplit(".", 1)[0] not in
                       {f"fcs.{i}" for i in range(M)})
        if extra:
            raise KeyError(f"{owner}: unexpected keys {extra} for M={M} heads")
        return merged

    key_map = rename_prefix(
        *((f"convs.{i}.0.", f"paths.{i}.conv.") for i in range(M)),
        *((f"convs.{i}.1.", f"paths.{i}.bn.") for i in range(M)),
        ("fc.", "fc_reduce."), ("fcs.", "fc_select."),
    )
    return module, key_map, merge_heads


@official("sk_caffe")
def _sk_dexter(in_channels: int, out_channels: int, stride: int = 1, M: int = 2, r: int = 16, L: int = 32):
    """Build from ResearchingDexter/SKNet_pytorch ``SKConv(in_channels, out_channels, stride=1, M=2, r=16, L=32)``.

    The Caffe layout: 3×3 branch i with dilation 1 + i and 32 groups (hard-coded there; capped at out_channels
    here, where the original fails), d = max(in_channels // r, L), fc1 = conv + BN + ReLU, fc2 one conv to
    M·out_channels.
    """
    owner = "from_official('sk_caffe')"
    check_positive(owner, in_channels=in_channels, out_channels=out_channels, r=r, L=L)
    module = SelectiveKernel(
        in_channels, out_channels=out_channels, kernel_size=_branch_kernels(M, owner), stride=stride, groups=32,
        rd_channels=max(in_channels // r, L),
    )
    key_map = rename_prefix(
        *((f"conv.{i}.0.", f"paths.{i}.conv.") for i in range(M)),
        *((f"conv.{i}.1.", f"paths.{i}.bn.") for i in range(M)),
        ("fc1.0.", "fc_reduce."), ("fc1.1.", "norm."), ("fc2.", "fc_select."),
    )
    return module, key_map


@official("sk_timm")
def _sk_timm(in_channels: int, **kwargs):
    """Build from timm ``layers.SelectiveKernel``.

    Arguments as there (``out_channels``, ``kernel_size=[3, 5]``, ``groups=1``, ``rd_divisor=8``,
    ``split_input=True``, ...). Its attention always uses ReLU and BatchNorm2d, whatever ``act_layer`` and
    ``norm_layer`` say. ``aa_layer``, ``drop_layer`` and stride > 2 (where timm pads differently) are not supported.
    """
    owner = "from_official('sk_timm')"
    kwarg_check("sk_timm", kwargs, {
        "out_channels", "kernel_size", "stride", "dilation", "groups", "rd_ratio", "rd_channels", "rd_divisor",
        "keep_3x3", "split_input", "act_layer", "norm_layer", "aa_layer", "drop_layer",
    })
    for k in ("aa_layer", "drop_layer"):
        if kwargs.get(k) is not None:
            raise ValueError(f"{owner}: {k} is not supported, got {kwargs[k]!r}")
    out_channels = kwargs.get("out_channels") or in_channels  # timm: `out_channels or in_channels`
    stride = kwargs.get("stride", 1)
    if isinstance(stride, int) and stride > 2:
        raise ValueError(f"{owner}: stride={stride} is not supported (timm pads ((stride-1) + d(k-1)) // 2)")
    kernel_size = kwargs.get("kernel_size") or [3, 5]
    rd_channels = kwargs.get("rd_channels") or make_divisible(
        out_channels * kwargs.get("rd_ratio", 1 / 16), kwargs.get("rd_divisor", 8))
    module = SelectiveKernel(
        in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride,
        dilation=kwargs.get("dilation", 1), groups=kwargs.get("groups", 1), keep_3x3=kwargs.get("keep_3x3", True),
        split_input=kwargs.get("split_input", True), rd_channels=rd_channels,
        act_layer=kwargs.get("act_layer", "relu"), norm_layer=kwargs.get("norm_layer", "batchnorm2d"),
    )
    return module, rename_prefix(("attn.bn.", "norm."), ("attn.", ""))
