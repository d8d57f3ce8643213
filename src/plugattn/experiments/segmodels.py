"""Segmentation networks for ``plugattn compare --task segmentation``: an encoder at output stride 8 and a head.

The baseline is a small dilated ResNet encoder (He et al., CVPR 2016; dilation instead of the last stride as in
Yu & Koltun, ICLR 2016 and DeepLab) with the plain FCN head (Long, Shelhamer, Darrell, CVPR 2015: 3×3 conv, BN,
ReLU, dropout, 1×1 classifier). A comparison changes one thing at a time:

- an attention module (registry name, or a :func:`plugattn.compose` spec as a dict) in every encoder block, where
  SE-ResNet puts it;
- the head: ``danet_head`` (Fu et al., CVPR 2019: position + channel attention, fused) or ``light_head``
  (SeaFormer's LightHead, Wan et al., ICLR 2023: the 1/8 map gated by the last stage's map);
- or a whole segmentation network of :mod:`plugattn.models` (``seaformer_seg_t``), trained from scratch.

Every network returns logits at the input resolution (bilinear upsampling, ``align_corners=False``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import registry
from ..models import create_model as create_network
from ..models import list_models, model_info
from .models import AttnSpec, BasicBlock, init_convs_, resolve_attn

__all__ = ["SEG_HEADS", "BACKBONES", "SmallEncoder", "TorchvisionEncoder", "FCNHead", "SegNet", "NetworkSeg",
           "build_seg_model", "seg_networks"]

SEG_HEADS = ("fcn", "danet_head", "light_head")
BACKBONES = ("small", "resnet18", "resnet34", "resnet50")


def seg_networks() -> list[str]:
    """Names of the whole segmentation networks of :mod:`plugattn.models` that ``build_seg_model`` accepts."""
    return [n for n in list_models() if model_info(n).task == "segmentation" and n.startswith("seaformer_seg")]


class _StagedEncoder(nn.Module):
    """``stem`` then ``stages`` (an ``nn.ModuleList``); forward returns every stage's output."""

    stem: nn.Module
    stages: nn.ModuleList
    out_channels: list[int]

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class SmallEncoder(_StagedEncoder):
    """Stem (3×3/2 conv, BN, ReLU) and four stages of :class:`~plugattn.experiments.models.BasicBlock`.

    Strides 1, 2, 2, 1 with dilation 2 in the last stage: output stride 8, the receptive field of a dilated
    network. ``forward`` returns every stage's output (1/2, 1/4, 1/8, 1/8).

    Args:
        in_channels: image channels.
        widths: channels of the four stages. Default: (16, 32, 64, 128).
        depth: blocks per stage. Default: 1.
        attn_layer: attention module built in every block (see ``BasicBlock``).
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64, 128), depth: int = 1, *,
                 attn_layer: AttnSpec = None) -> None:
        super().__init__()
        if len(widths) != 4 or any(int(w) < 1 for w in widths) or depth < 1:
            raise ValueError(f"SmallEncoder: widths must be 4 positive ints and depth >= 1, got widths={widths!r} "
                             f"depth={depth!r}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages, c_in = [], widths[0]
        for w, stride, dilation in zip(widths, (1, 2, 2, 1), (1, 1, 1, 2)):
            blocks = []
            for j in range(depth):
                blocks.append(BasicBlock(c_in, w, stride if j == 0 else 1, dilation=dilation, attn_layer=attn_layer))
                c_in = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.out_channels = [int(w) for w in widths]
        init_convs_(self)


class TorchvisionEncoder(_StagedEncoder):
    """torchvision's ResNet at output stride 8: ``layer3`` dilated 2 and ``layer4`` dilated 4 instead of strided.

    Randomly initialised (no weights are downloaded). The attention module goes into every residual block with
    :func:`plugattn.insert`. ``forward`` returns ``layer1``–``layer4``'s outputs (strides 4, 8, 8, 8).

    Args:
        name: ``resnet18``, ``resnet34`` or ``resnet50``.
        in_channels: image channels (a first conv for them replaces the RGB one when not 3).
        attn_layer: attention module for every block, or None.
    """

    def __init__(self, name: str, in_channels: int = 3, *, attn_layer: AttnSpec = None) -> None:
        super().__init__()
        try:
            import torchvision
        except ImportError as e:  # pragma: no cover - torchvision is in the dev extra
            raise ImportError(f"backbone {name!r} needs torchvision (pip install torchvision)") from e
        if name not in BACKBONES[1:]:
            raise ValueError(f"TorchvisionEncoder: name must be one of {BACKBONES[1:]}, got {name!r}")
        net = getattr(torchvision.models, name)(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        for layer, dilation in ((net.layer3, 2), (net.layer4, 4)):
            _dilate_(layer, dilation)
        factory = resolve_attn(attn_layer)
        if factory is not None:
            from ..integrate import insert

            insert(net, factory)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        expansion = 4 if name == "resnet50" else 1
        self.out_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]



def _dilate_(stage: nn.Module, dilation: int) -> None:
    """Turn a stage's strides into dilation: every stride-2 conv gets stride 1, every 3×3 conv ``dilation``."""
    for m in stage.modules():
        if isinstance(m, nn.Conv2d):
            if m.stride != (1, 1):
                m.stride = (1, 1)
            if m.kernel_size == (3, 3):
                m.dilation, m.padding = (dilation, dilation), (dilation, dilation)


class FCNHead(nn.Sequential):
    """FCN head: 3×3 conv to C/4 channels, BN, ReLU, Dropout2d(0.1), 1×1 conv to the classes (Long et al. 2015)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1) -> None:
        inter = max(in_channels // 4, 8)
        super().__init__(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter),
                         nn.ReLU(inplace=True), nn.Dropout2d(dropout), nn.Conv2d(inter, num_classes, 1))


class SegNet(nn.Module):
    """Encoder + head; logits upsampled to the input size.

    Args:
        encoder: returns a list of stage outputs and has ``out_channels``.
        num_classes: output classes.
        head: ``"fcn"`` (on the last stage), ``"danet_head"`` (DANet's head on the last stage; its fused output,
            trained alone rather than with the official sum of the fused, position and channel losses) or
            ``"light_head"`` (SeaFormer's LightHead fusing the last two stages).

    Shape:
        (N, C, H, W) → (N, num_classes, H, W).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, head: str = "fcn") -> None:
        super().__init__()
        if head not in SEG_HEADS:
            raise ValueError(f"SegNet: head must be one of {SEG_HEADS}, got {head!r}")
        self.encoder = encoder
        self.head_kind = head
        chans: list[int] = list(encoder.out_channels)  # type: ignore[arg-type]
        self.head: nn.Module
        if head == "fcn":
            self.head = FCNHead(chans[-1], num_classes)
        elif head == "danet_head":
            self.head = registry.get("danet_head")(chans[-1], out_channels=num_classes)
        else:
            from ..models.seaformer import LightHead

            self.head = LightHead(chans[-2:], (chans[-2],), chans[-2], num_classes=num_classes)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.encoder(x)
        if self.head_kind == "light_head":
            out = self.head(feats[-2:])
        else:
            out = self.head(feats[-1])
            if isinstance(out, tuple):
                out = out[0]
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class NetworkSeg(nn.Module):
    """A :mod:`plugattn.models` segmentation network trained from scratch, logits resized to the input.

    A single-channel image is repeated to the three channels the network takes (no parameters).
    """

    def __init__(self, name: str, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.net = create_network(name, num_classes=num_classes)
        self.repeat = 3 // in_channels if in_channels in (1, 3) else 0
        if not self.repeat:
            raise ValueError(f"NetworkSeg: {name} takes 1- or 3-channel images, got in_channels={in_channels}")

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x.repeat(1, self.repeat, 1, 1) if self.repeat > 1 else x)
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_seg_model(module: str | dict | None, num_classes: int, in_channels: int, *, backbone: str = "small",
                    widths: Sequence[int] = (16, 32, 64, 128), depth: int = 1) -> nn.Module:
    """The segmentation model for one entry of a comparison.

    Args:
        module: ``None``/``"baseline"`` (encoder + FCN head), a shape-preserving registry name or a compose spec
            (dict of :func:`plugattn.compose` keywords) in every encoder block, ``"danet_head"`` or
            ``"light_head"`` (the head), or a segmentation network name (:func:`seg_networks`).
        num_classes: classes (background included).
        in_channels: image channels.
        backbone: ``"small"`` (:class:`SmallEncoder`) or a torchvision ResNet name (:data:`BACKBONES`).
        widths: the small encoder's stage widths.
        depth: the small encoder's blocks per stage.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"build_seg_model: backbone must be one of {BACKBONES}, got {backbone!r}")
    head, attn = "fcn", None
    if isinstance(module, str) and module in seg_networks():
        return NetworkSeg(module, num_classes, in_channels)
    if isinstance(module, str) and module in SEG_HEADS[1:]:
        head = module
    elif module not in (None, "baseline"):
        attn = module
    make: Callable[..., nn.Module] = SmallEncoder if backbone == "small" else TorchvisionEncoder
    kw: dict[str, Any] = {"widths": widths, "depth": depth} if backbone == "small" else {"name": backbone}
    return SegNet(make(in_channels=in_channels, attn_layer=attn, **kw), num_classes, head)
