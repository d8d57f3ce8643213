"""SeaFormer networks: the ImageNet classifiers and the ADE20K segmentation networks (backbone + LightHead).

Paper: Wan, Zhang, Zhang, Lu, Zhang, "SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic
Segmentation", ICLR 2023. https://arxiv.org/abs/2301.13156 — official code: https://github.com/fudan-zvg/SeaFormer
@ 9718d05b (``seaformer-cls/seaformer.py``: ``SeaFormer_T/S/B/L``; ``seaformer-seg``: the mmseg backbone
``SeaFormer``, the decode head ``LightHead`` and the configs ``local_configs/seaformer/seaformer_*.py``).

The network is a MobileNetV2-style trunk of inverted residual stages (ReLU, 3×3 or 5×5 depthwise convs, total
stride 64) whose last two (T/S/B) or three (L) stages are each followed by a stack of
:class:`~plugattn.modules.seaformer.SeaFormerBlock`. The attention blocks are plugattn's own modules; this file
writes only the trunk, the heads and the key maps of :func:`plugattn.from_official`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .._layers import ConvNormAct, Gate, LayerType, check_positive
from ..modules.seaformer import SeaFormerBlock
from ..official import KeyMap, official, official_converter
from ._registry import register_model
from ._resnet import reset_linear

__all__ = ["SeaFormer", "SeaFormerSeg", "LightHead", "FusionBlock", "InvertedResidual", "SeaFormerStage"]

_PAPER = "SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic Segmentation"
_URL = "https://arxiv.org/abs/2301.13156"
_REPO = "fudan-zvg/SeaFormer @ 9718d05b"

# One row per inverted residual: (kernel_size k, expand ratio t, out channels c, stride s).
Row = tuple[int, int, int, int]

# The four released sizes (NETWORKS.md §3.12 / §3.13): stem width, MV2 stages, transformer settings, LightHead.
_CFGS: dict[str, dict[str, Any]] = {
    "t": dict(
        stem_channels=16,
        stages=[[(3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1)], [(5, 3, 32, 2), (5, 3, 32, 1)],
                [(3, 3, 64, 2), (3, 3, 64, 1)], [(5, 3, 128, 2)], [(3, 6, 160, 2)]],
        depths=(2, 2), key_dims=(16, 24), num_heads=4, mlp_ratios=(2, 4),
        head_embed_dims=(64, 96), head_channels=96,
    ),
    "s": dict(
        stem_channels=16,
        stages=[[(3, 1, 16, 1), (3, 4, 24, 2), (3, 3, 24, 1)], [(5, 3, 48, 2), (5, 3, 48, 1)],
                [(3, 3, 96, 2), (3, 3, 96, 1)], [(5, 4, 160, 2)], [(3, 6, 192, 2)]],
        depths=(3, 3), key_dims=(16, 24), num_heads=6, mlp_ratios=(2, 4),
        head_embed_dims=(96, 128), head_channels=128,
    ),
    "b": dict(
        stem_channels=16,
        stages=[[(3, 1, 16, 1), (3, 4, 32, 2), (3, 3, 32, 1)], [(5, 3, 64, 2), (5, 3, 64, 1)],
                [(3, 3, 128, 2), (3, 3, 128, 1)], [(5, 4, 192, 2)], [(3, 6, 256, 2)]],
        depths=(4, 4), key_dims=(16, 24), num_heads=8, mlp_ratios=(2, 4),
        head_embed_dims=(128, 160), head_channels=160,
    ),
    "l": dict(
        stem_channels=32,
        stages=[[(3, 3, 32, 1), (3, 4, 64, 2), (3, 4, 64, 1)], [(5, 4, 128, 2), (5, 4, 128, 1)],
                [(3, 4, 192, 2), (3, 4, 192, 1)], [(5, 4, 256, 2)], [(3, 6, 320, 2)]],
        depths=(3, 3, 3), key_dims=(16, 20, 24), num_heads=8, mlp_ratios=(2, 4, 6),
        head_embed_dims=(128, 160, 192), head_channels=192,
    ),
}
_SIZE_NAMES = {"t": "tiny", "s": "small", "b": "base", "l": "large"}


class InvertedResidual(nn.Module):
    r"""The MobileNetV2 inverted residual as SeaFormer uses it (ReLU, k×k depthwise conv).

    .. math::
        y = [x +]\ \mathrm{BN}(W_p * \delta(\mathrm{BN}(W_{dw} * \delta(\mathrm{BN}(W_e * x)))))

    with the 1×1 expansion :math:`W_e` to ``int(round(C_in·t))`` channels only when t ≠ 1, the k×k depthwise
    conv :math:`W_{dw}` carrying the stride, the linear 1×1 projection :math:`W_p` and δ = ReLU. The residual
    is added iff stride 1 and C_in = C_out. Convs have no bias; each is followed by BN.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: k of the depthwise conv (odd). Default: 3.
        stride: s of the depthwise conv. Default: 1.
        expand_ratio: t. Default: 1.
        act_layer: δ. Default: ``"relu"``.
        norm_layer: the norm after every conv. Default: ``"batchnorm2d"``.

    Shape:
        (N, C_in, H, W) → (N, C_out, ⌈H/s⌉, ⌈W/s⌉).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        expand_ratio: float = 1,
        act_layer: LayerType = "relu",
        norm_layer: LayerType = "batchnorm2d",
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, in_channels=in_channels, out_channels=out_channels, stride=stride)
        hidden = int(round(in_channels * expand_ratio))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.expand_ratio = kernel_size, stride, expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand: nn.Module = (
            nn.Identity() if expand_ratio == 1
            else ConvNormAct(in_channels, hidden, 1, norm_layer=norm_layer, act_layer=act_layer)
        )
        self.dw = ConvNormAct(hidden, hidden, kernel_size, stride=stride, groups=hidden, norm_layer=norm_layer,
                              act_layer=act_layer)
        self.project = ConvNormAct(hidden, out_channels, 1, norm_layer=norm_layer)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"expand_ratio={self.expand_ratio}, residual={self.use_residual}")

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.use_residual else y


class SeaFormerStage(nn.Module):
    """One SeaFormer stage: inverted residuals (official ``smbN``), then SeaFormer blocks (``transN``, may be empty).

    Args:
        blocks: the inverted residuals.
        transformer: the :class:`~plugattn.modules.seaformer.SeaFormerBlock` stack (an empty Sequential: none).
    """

    def __init__(self, blocks: Sequence[nn.Module], transformer: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.transformer = nn.Sequential(*transformer)

    def forward(self, x: Tensor) -> Tensor:
        return self.transformer(self.blocks(x))


class SeaFormer(nn.Module):
    r"""SeaFormer ImageNet classifier (and the backbone of :class:`SeaFormerSeg`).

    Wan et al., "SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic Segmentation", ICLR 2023.
    A 3×3/2 conv-BN-ReLU stem, five stages of :class:`InvertedResidual` blocks (strides 2 … 64 overall, each
    stride-2 layer giving ⌈H/2⌉), the last ``len(depths)`` stages each followed by ``depths[i]``
    :class:`~plugattn.modules.seaformer.SeaFormerBlock` (ReLU6, attn_ratio 2, key dim ``key_dims[i]``,
    ``num_heads`` heads, MLP ratio ``mlp_ratios[i]``) at the stage's width; then global average pooling and a
    linear classifier. Equals the official ``SeaFormer_T/S/B/L()`` of ``seaformer-cls/seaformer.py`` in eval
    mode (whose classifier is always 1000-way; here ``num_classes`` is honoured).

    Args:
        stages: per stage, its inverted residual rows (kernel_size, expand_ratio, out_channels, stride).
        stem_channels: width of the stem conv.
        depths: SeaFormer blocks after each of the last ``len(depths)`` stages.
        key_dims: d_k of the attention in each transformer stage.
        num_heads: heads of every attention.
        mlp_ratios: MLP ratio of each transformer stage.
        attn_ratio: value dim per head int(r·d_k). Default: 2.
        num_classes: classifier outputs; 0 leaves no classifier (``forward`` then returns pooled features).
            Default: 1000.
        drop_rate: dropout inside the MLPs. Default: 0.
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over all SeaFormer blocks.
            Default: 0.
        in_chans: input channels. Default: 3.

    Shape:
        (N, in_chans, H, W) → (N, num_classes) logits; ``forward_features``: (N, C_last, ⌈H/64⌉, ⌈W/64⌉).

    Examples:
        >>> import plugattn
        >>> m = plugattn.models.create_model("seaformer_t")
        >>> m(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 1000])
    """

    def __init__(
        self,
        stages: Sequence[Sequence[Row]],
        *,
        stem_channels: int,
        depths: Sequence[int],
        key_dims: Sequence[int],
        num_heads: int,
        mlp_ratios: Sequence[float],
        attn_ratio: float = 2,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, stem_channels=stem_channels, num_heads=num_heads, in_chans=in_chans)
        if not len(depths) == len(key_dims) == len(mlp_ratios) or not 0 < len(depths) <= len(stages):
            raise ValueError(f"{owner}: depths, key_dims and mlp_ratios need one entry per transformer stage "
                             f"(at most {len(stages)}), got {list(depths)}, {list(key_dims)}, {list(mlp_ratios)}")
        self.stem = ConvNormAct(in_chans, stem_channels, 3, stride=2, act_layer="relu")
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        first_trans = len(stages) - len(depths)
        self.transformer_stages = tuple(range(first_trans, len(stages)))
        channels = stem_channels
        built: list[SeaFormerStage] = []
        for i, rows in enumerate(stages):
            blocks = []
            for k, t, c, s in rows:
                blocks.append(InvertedResidual(channels, c, kernel_size=k, stride=s, expand_ratio=t))
                channels = c
            transformer: list[nn.Module] = []
            if i >= first_trans:
                j = i - first_trans
                start = sum(depths[:j])
                transformer = [
                    SeaFormerBlock(channels, key_dim=key_dims[j], num_heads=num_heads, mlp_ratio=mlp_ratios[j],
                                   attn_ratio=attn_ratio, drop=drop_rate, drop_path=rates[start + d],
                                   act_layer="relu6")
                    for d in range(depths[j])
                ]
            built.append(SeaFormerStage(blocks, transformer))
        self.stages = nn.Sequential(*built)
        self.stage_channels = tuple(rows[-1][2] for rows in stages)
        self.num_features = channels
        self.num_classes = num_classes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head: nn.Module = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()

    def extra_repr(self) -> str:
        return f"stage_channels={self.stage_channels}, num_classes={self.num_classes}"

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one with ``num_classes`` outputs (0: none)."""
        self.num_classes = num_classes
        self.head = reset_linear(self.num_features, num_classes, next(self.parameters()))

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Every stage's output: strides 4, 8, 16, 32, 64 (the stem's stride 2 included)."""
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, C_last, ⌈H/64⌉, ⌈W/64⌉): the last stage's output, before pooling."""
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Average pool and classify; ``pre_logits``: the pooled (N, C_last) features."""
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class FusionBlock(nn.Module):
    r"""LightHead's fusion of a detail map x with a low-resolution context map g (official ``Fusion_block``).

    .. math::
        y = \mathrm{BN}(W_l * x) \cdot \mathrm{resize}\big(\sigma_h(\mathrm{BN}(W_g * g)),\ (H_x, W_x)\big)

    with 1×1 convs :math:`W_l, W_g` (no bias), hard sigmoid :math:`\sigma_h` applied **before** the bilinear
    resize (align_corners False) to x's size.

    Args:
        in_channels: channels of x.
        global_channels: channels of g.
        embed_dim: output channels.

    Shape:
        x (N, C_x, H, W), g (N, C_g, H', W') → (N, embed_dim, H, W).
    """

    def __init__(self, in_channels: int, global_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.local_embedding = ConvNormAct(in_channels, embed_dim, 1)
        self.global_embedding = ConvNormAct(global_channels, embed_dim, 1)
        self.gate = Gate("hard_sigmoid")

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        weight = F.interpolate(self.gate(self.global_embedding(g)), size=(h, w), mode="bilinear",
                               align_corners=False)
        return self.local_embedding(x) * weight


class LightHead(nn.Module):
    """SeaFormer's segmentation head (official ``LightHead``): successive fusions into the 1/8 detail map.

    x = features[0]; ``x = fuse[i](x, features[i + 1])`` for each :class:`FusionBlock`; then a depthwise 1×1
    conv-BN-ReLU (``linear_fuse``), Dropout2d and a biased 1×1 conv to the classes.

    Args:
        in_channels: channels of the features (the 1/8 map first, then each transformer stage's output).
        embed_dims: output channels of each fusion (one fewer than ``in_channels``).
        channels: channels after the last fusion (= ``embed_dims[-1]``).
        num_classes: classes. Default: 150.
        dropout: Dropout2d probability before the classifier. Default: 0.1.

    Shape:
        list of (N, C_i, H_i, W_i) → (N, num_classes, H_0, W_0).
    """

    def __init__(
        self, in_channels: Sequence[int], embed_dims: Sequence[int], channels: int, num_classes: int = 150,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if len(embed_dims) != len(in_channels) - 1 or embed_dims[-1] != channels:
            raise ValueError(f"{owner}: need len(embed_dims) == len(in_channels) - 1 and embed_dims[-1] == "
                             f"channels, got {list(in_channels)}, {list(embed_dims)}, {channels}")
        check_positive(owner, channels=channels, num_classes=num_classes)
        self.in_channels, self.embed_dims, self.channels = tuple(in_channels), tuple(embed_dims), channels
        local = [in_channels[0], *embed_dims[:-1]]
        self.fuse = nn.ModuleList(FusionBlock(local[i], in_channels[i + 1], embed_dims[i])
                                  for i in range(len(embed_dims)))
        self.linear_fuse = ConvNormAct(channels, channels, 1, groups=channels, act_layer="relu")
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, embed_dims={self.embed_dims}, channels={self.channels}, "
                f"num_classes={self.classifier.out_channels}")

    def forward(self, features: list[Tensor]) -> Tensor:
        x = features[0]
        for i, fuse in enumerate(self.fuse):
            x = fuse(x, features[i + 1])
        return self.classifier(self.dropout(self.linear_fuse(x)))


class SeaFormerSeg(nn.Module):
    """SeaFormer semantic segmentation network: :class:`SeaFormer` backbone + :class:`LightHead`.

    Wan et al., ICLR 2023. Equals the official mmseg ``EncoderDecoder(backbone=SeaFormer, decode_head=LightHead)``
    of ``seaformer-seg/local_configs/seaformer/seaformer_{tiny,small,base,large}.py`` in eval mode. The head
    reads the stride-8 stage's output and every transformer stage's output.

    **Output: the head's logits at 1/8 of the input resolution** ((N, num_classes, ⌈H/8⌉, ⌈W/8⌉)), as the
    official forward returns them before mmseg's final resize; resize them to the input size with
    ``F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)`` as mmseg does.

    Args:
        backbone: a :class:`SeaFormer` (its classifier unused; build it with ``num_classes=0``).
        head: the :class:`LightHead`.

    Examples:
        >>> import plugattn
        >>> m = plugattn.models.create_model("seaformer_seg_t", num_classes=19)
        >>> m(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 19, 8, 8])
    """

    def __init__(self, backbone: SeaFormer, head: LightHead) -> None:
        super().__init__()
        self.feature_indices = (1, *backbone.transformer_stages)
        want = tuple(backbone.stage_channels[i] for i in self.feature_indices)
        if want != head.in_channels:
            raise ValueError(f"SeaFormerSeg: the head expects features of {head.in_channels} channels, the "
                             f"backbone gives {want}")
        self.backbone = backbone
        self.decode_head = head

    def extra_repr(self) -> str:
        return f"feature_indices={self.feature_indices}, num_classes={self.num_classes}"

    @property
    def num_classes(self) -> int:
        return self.decode_head.classifier.out_channels

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head's last 1×1 conv by a freshly initialised one with ``num_classes`` outputs."""
        old = self.decode_head.classifier
        self.decode_head.classifier = nn.Conv2d(old.in_channels, num_classes, 1, device=old.weight.device,
                                                dtype=old.weight.dtype)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The features the head reads: the 1/8 map, then each transformer stage's output."""
        outs = self.backbone.forward_stages(x)
        return [outs[i] for i in self.feature_indices]

    def forward(self, x: Tensor) -> Tensor:
        return self.decode_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------------
# Factories


def _backbone(size: str, num_classes: int, **kwargs: Any) -> SeaFormer:
    cfg = _CFGS[size]
    return SeaFormer(cfg["stages"], stem_channels=cfg["stem_channels"], depths=cfg["depths"],
                     key_dims=cfg["key_dims"], num_heads=cfg["num_heads"], mlp_ratios=cfg["mlp_ratios"],
                     num_classes=num_classes, **kwargs)


def _seg(size: str, num_classes: int, dropout: float = 0.1, **kwargs: Any) -> SeaFormerSeg:
    cfg = _CFGS[size]
    backbone = _backbone(size, 0, **kwargs)
    in_channels = [backbone.stage_channels[i] for i in (1, *backbone.transformer_stages)]
    head = LightHead(in_channels, cfg["head_embed_dims"], cfg["head_channels"], num_classes, dropout)
    return SeaFormerSeg(backbone, head)


def _cls_meta(size: str) -> dict[str, Any]:
    return dict(paper=_PAPER, url=_URL, official=f"{_REPO}, seaformer-cls/seaformer.py, SeaFormer_{size.upper()}()",
                task="classification", input_size=(3, 224, 224), num_classes=1000)


def _seg_meta(size: str, config: str, num_classes: int, input_size: tuple[int, int, int]) -> dict[str, Any]:
    return dict(paper=_PAPER, url=_URL,
                official=(f"{_REPO}, seaformer-seg (mmseg backbone SeaFormer + LightHead), "
                          f"local_configs/seaformer/{config}"),
                task="segmentation", input_size=input_size, num_classes=num_classes)


@register_model("seaformer_t", **_cls_meta("t"))
def seaformer_t(*, num_classes: int = 1000, **kwargs: Any) -> SeaFormer:
    """SeaFormer-T ImageNet classifier (1,781,096 parameters at 1000 classes); logits. See :class:`SeaFormer`."""
    return _backbone("t", num_classes, **kwargs)


@register_model("seaformer_s", **_cls_meta("s"))
def seaformer_s(*, num_classes: int = 1000, **kwargs: Any) -> SeaFormer:
    """SeaFormer-S ImageNet classifier (4,105,656 parameters at 1000 classes); logits. See :class:`SeaFormer`."""
    return _backbone("s", num_classes, **kwargs)


@register_model("seaformer_b", **_cls_meta("b"))
def seaformer_b(*, num_classes: int = 1000, **kwargs: Any) -> SeaFormer:
    """SeaFormer-B ImageNet classifier (8,742,664 parameters at 1000 classes); logits. See :class:`SeaFormer`."""
    return _backbone("b", num_classes, **kwargs)


@register_model("seaformer_l", **_cls_meta("l"))
def seaformer_l(*, num_classes: int = 1000, **kwargs: Any) -> SeaFormer:
    """SeaFormer-L ImageNet classifier (14,046,504 parameters at 1000 classes); logits. See :class:`SeaFormer`."""
    return _backbone("l", num_classes, **kwargs)


def _ade_meta(size: str) -> dict[str, Any]:
    config = f"seaformer_{_SIZE_NAMES[size]}.py (ADE20K: its *_512x512_160k_{{2x8,4x8}}_ade20k.py)"
    return _seg_meta(size, config, 150, (3, 512, 512))



@register_model("seaformer_seg_t", **_ade_meta("t"))
def seaformer_seg_t(*, num_classes: int = 150, **kwargs: Any) -> SeaFormerSeg:
    """SeaFormer-T ADE20K segmentation (1,667,318 parameters at 150 classes); 1/8-resolution logits.

    See :class:`SeaFormerSeg`.
    """
    return _seg("t", num_classes, **kwargs)


@register_model("seaformer_seg_s", **_ade_meta("s"))
def seaformer_seg_s(*, num_classes: int = 150, **kwargs: Any) -> SeaFormerSeg:
    """SeaFormer-S ADE20K segmentation (3,990,118 parameters at 150 classes); 1/8-resolution logits.

    See :class:`SeaFormerSeg`.
    """
    return _seg("s", num_classes, **kwargs)


@register_model("seaformer_seg_b", **_ade_meta("b"))
def seaformer_seg_b(*, num_classes: int = 150, **kwargs: Any) -> SeaFormerSeg:
    """SeaFormer-B ADE20K segmentation (8,605,654 parameters at 150 classes); 1/8-resolution logits.

    See :class:`SeaFormerSeg`.
    """
    return _seg("b", num_classes, **kwargs)


@register_model("seaformer_seg_l", **_ade_meta("l"))
def seaformer_seg_l(*, num_classes: int = 150, **kwargs: Any) -> SeaFormerSeg:
    """SeaFormer-L ADE20K segmentation (13,951,510 parameters at 150 classes); 1/8-resolution logits.

    See :class:`SeaFormerSeg`.
    """
    return _seg("l", num_classes, **kwargs)


@register_model("seaformer_seg_s_cityscapes",
                **_seg_meta("s", "seaformer_small_1024x512_160k_1x8city.py", 19, (3, 512, 1024)))
def seaformer_seg_s_cityscapes(*, num_classes: int = 19, **kwargs: Any) -> SeaFormerSeg:
    """SeaFormer-S Cityscapes segmentation (19 classes); 1/8-resolution logits. See :class:`SeaFormerSeg`."""
    return _seg("s", num_classes, **kwargs)


@register_model("seaformer_seg_b_cityscapes",
                **_seg_meta("b", "seaformer_base_1024x1024_160k_1x8city.py", 19, (3, 1024, 1024)))
def seaformer_seg_b_cityscapes(*, num_classes: int = 19, **kwargs: Any) -> SeaFormerSeg:
    """SeaFormer-B Cityscapes segmentation (19 classes); 1/8-resolution logits. See :class:`SeaFormerSeg`."""
    return _seg("b", num_classes, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Official converters: official state_dict keys → ours

_MV2_KEY = re.compile(r"smb(\d+)\.layer(\d+)\.conv\.(\d)\.(c|bn)\.(.+)")
_TRANS_KEY = re.compile(r"trans(\d+)\.transformer_blocks\.(\d+)\.(.+)")


@lru_cache(maxsize=1)
def _block_key_map() -> KeyMap:
    """The official ``Block`` → :class:`SeaFormerBlock` key map of the ``sea_block`` converter (width-independent)."""
    return official_converter("sea_block", dim=16, key_dim=4, num_heads=2)[1]


def _trunk_key_map(model: SeaFormer) -> Callable[[str], str]:
    """Map ``seaformer-cls`` keys (``smbN.layerM.conv.J.{c,bn}``, ``transN.transformer_blocks.I``, ``linear``)."""
    first_trans = model.transformer_stages[0]
    parts_of: dict[tuple[int, int], tuple[str, ...]] = {}  # (stage, block) → official conv.0 / 2 / 4, our names
    for i, stage in enumerate(model.stages):
        if isinstance(stage, SeaFormerStage):
            for j, block in enumerate(stage.blocks):
                expands = not isinstance(getattr(block, "expand", None), nn.Identity)
                parts_of[i, j] = ("expand", "dw", "project") if expands else ("dw", "project")

    def key_map(key: str) -> str:
        if key.startswith("smb1.stem_block.0."):
            rest = key[len("smb1.stem_block.0."):]
            return "stem." + ("conv." + rest[2:] if rest.startswith("c.") else rest)
        if key.startswith("linear."):
            return "head." + key[len("linear."):]
        m = _MV2_KEY.fullmatch(key)
        if m:
            stage, layer, idx, kind, rest = int(m[1]) - 1, int(m[2]) - 1, int(m[3]), m[4], m[5]
            parts = parts_of.get((stage, layer), ())
            if idx % 2 or idx // 2 >= len(parts):
                return key  # not ours: load_converted reports it
            return f"stages.{stage}.blocks.{layer}.{parts[idx // 2]}.{'conv' if kind == 'c' else 'bn'}.{rest}"
        m = _TRANS_KEY.fullmatch(key)
        if m:
            stage = first_trans + int(m[1]) - 1
            return f"stages.{stage}.transformer.{m[2]}.{_block_key_map()(m[3])}"
        return key  # not an official key: load_converted reports it

    return key_map


def _seg_key_map(model: SeaFormerSeg) -> Callable[[str], str]:
    """Map mmseg keys: ``backbone.`` + the trunk keys, ``decode_head.{conv_seg,linear_fuse,fuseI}``."""
    trunk = _trunk_key_map(model.backbone)

    def key_map(key: str) -> str:
        if key.startswith("backbone.") and not key.startswith("backbone.linear."):
            return "backbone." + trunk(key[len("backbone."):])
        if key.startswith("decode_head.conv_seg."):
            return "decode_head.classifier." + key[len("decode_head.conv_seg."):]
        if key.startswith("decode_head.linear_fuse."):
            return key
        m = re.fullmatch(r"decode_head\.fuse(\d+)\.(local_embedding|global_act)\.(.+)", key)
        if m:
            part = "local_embedding" if m[2] == "local_embedding" else "global_embedding"
            return f"decode_head.fuse.{int(m[1]) - 1}.{part}.{m[3]}"
        return key  # not an official key: load_converted reports it

    return key_map


def _cls_converter(size: str) -> Callable[[], tuple[nn.Module, Callable[[str], str]]]:
    def convert() -> tuple[nn.Module, Callable[[str], str]]:
        model = _backbone(size, 1000)
        return model, _trunk_key_map(model)

    convert.__doc__ = f"fudan-zvg/SeaFormer ``SeaFormer_{size.upper()}()`` (seaformer-cls), 1000 classes."
    return convert


def _seg_converter(size: str, default_classes: int) -> Callable[..., tuple[nn.Module, Callable[[str], str]]]:
    def convert(num_classes: int = default_classes) -> tuple[nn.Module, Callable[[str], str]]:
        model = _seg(size, num_classes)
        return model, _seg_key_map(model)

    convert.__doc__ = (f"fudan-zvg/SeaFormer mmseg EncoderDecoder, config seaformer_{_SIZE_NAMES[size]} "
                       f"({default_classes} classes unless ``num_classes`` says otherwise).")
    return convert


for _size in "tsbl":
    official(f"seaformer_{_size}")(_cls_converter(_size))
    official(f"seaformer_seg_{_size}")(_seg_converter(_size, 150))
official("seaformer_seg_s_cityscapes")(_seg_converter("s", 19))
official("seaformer_seg_b_cityscapes")(_seg_converter("b", 19))
