"""DANet: a dilated ResNet with the dual-attention segmentation head (PAM + CAM).

Paper: Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019.
https://arxiv.org/abs/1809.02983 — official code: https://github.com/junfu1115/DANet @ b0a0fa00
(``encoding/models/sseg/danet.py`` ``DANet``, backbone ``encoding/models/backbone/resnet.py``). Written from the
paper and ``reference/NETWORKS.md`` §3.11; no official code is copied.

The network is torchvision's ResNet with ``replace_stride_with_dilation=[False, True, True]`` (output stride 8,
single 7×7 stem, layer3 dilations 1, 2, 2, …), with layer4's 3×3 dilations set to the official multi-grid 4, 8, 16
(torchvision has 2, 4, 4), and :class:`plugattn.DANetHead` on layer4's output. The keys mean the released
configuration: ``DANet(nclass, backbone='resnetXX', aux=True, se_loss=False, multi_grid=True,
multi_dilation=[4, 8, 16], os=8, no_deepstem=True)``, the flags of the released DANet101 Cityscapes model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .._kernels import DEFAULT_BLOCK_BUDGET
from ..modules.danet import DANetHead
from ..official import official, official_converter
from ._registry import register_model

if TYPE_CHECKING:
    from torchvision.models.resnet import ResNet

__all__ = ["DANet", "dilated_resnet", "danet_resnet50", "danet_resnet101", "danet_resnet152"]

_PAPER = "Dual Attention Network for Scene Segmentation"
_URL = "https://arxiv.org/abs/1809.02983"
_REPO = "junfu1115/DANet @ b0a0fa00, encoding/models/sseg/danet.py"
_FLAGS = "aux=True, se_loss=False, multi_grid=True, multi_dilation=[4, 8, 16], os=8, no_deepstem=True"
_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def dilated_resnet(layers: Sequence[int], *, multi_grid: Sequence[int] = (4, 8, 16)) -> ResNet:
    """Torchvision's Bottleneck ResNet at output stride 8 with multi-grid dilations in layer4, without ``fc``.

    ``torchvision.models.resnet.ResNet(Bottleneck, layers, replace_stride_with_dilation=[False, True, True])``
    gives layer3 the dilations 1, 2, 2, … and layer4 2, 4, 4; the 3×3 conv (``conv2``, padding = dilation) of
    layer4's block i is then set to dilation ``multi_grid[i]``. ``fc`` is an ``nn.Identity`` (no keys).

    Args:
        layers: Bottleneck blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        multi_grid: layer4's dilation per block (official ``multi_dilation``); one per block. Default: (4, 8, 16).

    Returns:
        The torchvision ``ResNet``; its ``layer1``…``layer4`` give 256/512/1024/2048 channels at strides 4, 8, 8, 8.
    """
    from torchvision.models.resnet import Bottleneck, ResNet

    layers = list(layers)
    multi_grid = list(multi_grid)
    if len(layers) != 4 or any(n < 1 for n in layers):
        raise ValueError(f"dilated_resnet: layers must be 4 positive block counts, got {layers}")
    if len(multi_grid) != layers[3] or any(d < 1 for d in multi_grid):
        raise ValueError(f"dilated_resnet: multi_grid needs one positive dilation per layer4 block ({layers[3]}), "
                         f"got {multi_grid}")
    net = ResNet(Bottleneck, layers, replace_stride_with_dilation=[False, True, True])
    net.fc = nn.Identity()  # type: ignore[assignment]
    for block, d in zip(net.layer4, multi_grid):
        conv = block.conv2
        conv.dilation = (d, d)
        conv.padding = (d, d)
    return net


class DANet(nn.Module):
    r"""DANet for semantic segmentation: dilated ResNet (output stride 8) + the dual-attention head.

    ``forward_features`` runs the backbone (stem, then ``layer1``…``layer4``, see :func:`dilated_resnet`);
    :class:`~plugattn.DANetHead` (2048 → inter 512, PAM query/key 64, CAM) turns layer4's output into three
    class maps at 1/8 resolution, each upsampled bilinearly (``align_corners=True``) to the input size.

    Args:
        layers: Bottleneck blocks per stage. Default: (3, 4, 6, 3) (ResNet-50).
        num_classes: classes of the three classifiers (official ``nclass``). Default: 19 (Cityscapes).
        multi_grid: layer4's dilations. Default: (4, 8, 16).
        drop_rate: the head's Dropout2d before the classifiers. Default: 0.1.
        block_budget: the PAM's block budget in bytes (see :class:`~plugattn.PositionAttention`); ``None``
            builds the whole (H·W)² attention at once. Default: 8 MiB.

    Shape:
        (N, 3, H, W), already normalised (no mean/std inside) → a tuple of three (N, num_classes, H, W) logits:
        (fused PAM + CAM, PAM only, CAM only). **The output is element 0**; this is the official 3-tuple
        (``aux=True``), at the input resolution.

    Examples:
        >>> import torch
        >>> net = DANet(num_classes=5).eval()
        >>> [t.shape for t in net(torch.randn(1, 3, 64, 48))]
        [torch.Size([1, 5, 64, 48]), torch.Size([1, 5, 64, 48]), torch.Size([1, 5, 64, 48])]
        >>> [f.shape[1:] for f in net.forward_features(torch.randn(1, 3, 64, 48))][-1]
        torch.Size([2048, 8, 6])
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        *,
        num_classes: int = 19,
        multi_grid: Sequence[int] = (4, 8, 16),
        drop_rate: float = 0.1,
        block_budget: int | None = DEFAULT_BLOCK_BUDGET,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"DANet: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.layers = tuple(layers)
        self.multi_grid = tuple(multi_grid)
        self.backbone = dilated_resnet(layers, multi_grid=multi_grid)
        self.head = DANetHead(2048, out_channels=num_classes, drop_rate=drop_rate, block_budget=block_budget)

    def extra_repr(self) -> str:
        return f"layers={self.layers}, num_classes={self.num_classes}, output_stride=8, multi_grid={self.multi_grid}"

    def reset_classifier(self, num_classes: int) -> None:
        """New ``num_classes``-way classifiers (the head's three 1×1 convs); every other weight is kept."""
        if num_classes < 1:
            raise ValueError(f"DANet: num_classes must be >= 1, got {num_classes}")
        head = self.head
        for name in ("cls_fused", "cls_pam", "cls_cam"):
            old: nn.Conv2d = getattr(head, name)
            setattr(head, name, nn.Conv2d(old.in_channels, num_classes, 1, device=old.weight.device,
                                          dtype=old.weight.dtype))
        head.out_channels = num_classes
        self.num_classes = num_classes

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The four stage outputs [layer1, layer2, layer3, layer4]: 256/512/1024/2048 channels at 1/4, 1/8, 1/8, 1/8."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        c1 = b.layer1(x)
        c2 = b.layer2(c1)
        c3 = b.layer3(c2)
        c4 = b.layer4(c3)
        return [c1, c2, c3, c4]

    def forward_head(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The head's three logits at layer4's resolution (1/8), before the upsampling."""
        return self.head(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        size = x.shape[-2:]
        fused, pam, cam = self.forward_head(self.forward_features(x)[-1])
        return (
            F.interpolate(fused, size=size, mode="bilinear", align_corners=True),
            F.interpolate(pam, size=size, mode="bilinear", align_corners=True),
            F.interpolate(cam, size=size, mode="bilinear", align_corners=True),
        )


def _build(depth: int, num_classes: int, kwargs: dict[str, Any]) -> DANet:
    return DANet(_LAYERS[depth], num_classes=num_classes, **kwargs)


@register_model(
    "danet_resnet50", paper=_PAPER, url=_URL, task="segmentation", input_size=(3, 768, 768), num_classes=19,
    official=f"{_REPO}, DANet(19, backbone='resnet50', {_FLAGS})",
)
def danet_resnet50(*, num_classes: int = 19, **kwargs: Any) -> DANet:
    """DANet with a dilated ResNet-50 (47,462,651 parameters at 19 classes); see :class:`DANet`."""
    return _build(50, num_classes, kwargs)


@register_model(
    "danet_resnet101", paper=_PAPER, url=_URL, task="segmentation", input_size=(3, 768, 768), num_classes=19,
    official=f"{_REPO}, DANet(19, backbone='resnet101', {_FLAGS})", checkpoints=("DANet101.pth.tar",),
)
def danet_resnet101(*, num_classes: int = 19, **kwargs: Any) -> DANet:
    """DANet with a dilated ResNet-101 (66,454,779 parameters at 19 classes), the released Cityscapes model."""
    return _build(101, num_classes, kwargs)


@register_model(
    "danet_resnet152", paper=_PAPER, url=_URL, task="segmentation", input_size=(3, 768, 768), num_classes=19,
    official=f"{_REPO}, DANet(19, backbone='resnet152', {_FLAGS})",
)
def danet_resnet152(*, num_classes: int = 19, **kwargs: Any) -> DANet:
    """DANet with a dilated ResNet-152 (82,098,427 parameters at 19 classes); see :class:`DANet`."""
    return _build(152, num_classes, kwargs)


@functools.cache
def _head_key_map() -> Callable[[str], str | None]:
    """The ``danet_head`` converter's key map (official ``DANetHead`` keys → :class:`DANetHead`'s)."""
    return official_converter("danet_head", in_channels=2048, out_channels=19, norm_layer="batchnorm2d")[1]


def _key_map(key: str) -> str | None:
    if key.startswith("pretrained."):
        return "backbone." + key[len("pretrained."):]
    if key.startswith("head."):
        new = _head_key_map()(key[len("head."):])
        return None if new is None else "head." + new
    return key  # not an official key: the strict load reports it


def _converter(depth: int) -> Callable[[], tuple[nn.Module, Callable[[str], str | None]]]:
    def convert() -> tuple[nn.Module, Callable[[str], str | None]]:
        return _build(depth, 19, {}), _key_map

    convert.__doc__ = f"junfu1115/DANet ``DANet(19, backbone='resnet{depth}', {_FLAGS})``: ``pretrained.`` → " \
                      "``backbone.``, ``head.*`` by the ``danet_head`` converter."
    return convert


for _depth in _LAYERS:
    official(f"danet_resnet{_depth}")(_converter(_depth))
