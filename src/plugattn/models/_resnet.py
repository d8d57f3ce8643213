"""The shared pieces of the classification networks: :class:`AttnResNet` and :func:`reset_linear`.

:class:`AttnResNet` is the one wrapper of torchvision's ResNet with timm's classification interface; the
SE/ECA-ResNets (``resnet.py``), the CBAM/BAM/Triplet ResNets (``cbam_resnet.py``) and SKNet (``sknet.py``) are it
with different options. torchvision is required.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["AttnResNet"]

_GLOBAL_POOLS = ("avg", "avg7")


def reset_linear(in_features: int, num_classes: int, like: Tensor) -> nn.Module:
    """A fresh ``Linear(in_features, num_classes)`` on ``like``'s device and dtype; ``0``: ``nn.Identity()``."""
    if num_classes > 0:
        return nn.Linear(in_features, num_classes, device=like.device, dtype=like.dtype)
    return nn.Identity()


def _torchvision_resnet() -> Any:
    try:
        import torchvision.models.resnet as tv_resnet
    except ImportError as e:  # torchvision is an optional dependency of plugattn
        raise ImportError("plugattn.models: the ResNet networks are built from torchvision's ResNet; "
                          "install it with `pip install plugattn[timm]` (or `pip install torchvision`)") from e
    return tv_resnet


class AttnResNet(nn.Module):
    """torchvision's ResNet with timm's classification interface, ready for :func:`plugattn.insert`.

    Children ``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1``–``4``, ``avgpool``, ``fc`` (and the parameter-free
    ``head_drop``). It holds torchvision's own modules (``torchvision.models.resnet.BasicBlock`` / ``Bottleneck``),
    so its state_dict keys are torchvision's and ``insert`` finds its blocks. Two switches reproduce the Caffe
    ResNet layout (Caffe SENet, timm ``legacy_seresnet*``), ``global_pool`` the official ``AvgPool2d(7)`` head of
    Jongchan's ``ResidualNet``, ``groups`` / ``width_per_group`` give ResNeXt (SKNet replaces their 3×3 convs with
    ``insert(..., placement="replace")``), and a dropout may precede the classifier.

    Args:
        block: ``"basic"`` (two 3×3 convs, ResNet-18/34) or ``"bottleneck"`` (1×1, 3×3, 1×1; ResNet-50+).
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        num_classes: classifier outputs; 0 gives no classifier (``fc`` is the identity). Default: 1000.
        caffe: Caffe layout: stem pool ``MaxPool2d(3, 2, padding=0, ceil_mode=True)`` and, in a strided
            bottleneck, the stride on the first 1×1 conv rather than the 3×3. Default: False (torchvision).
        drop_rate: dropout probability before ``fc`` (training only). Default: 0.
        global_pool: ``"avg"``: the global mean (``AdaptiveAvgPool2d(1)``) at any size; ``"avg7"``:
            ``nn.AvgPool2d(7)`` (the global mean only for 193–224 px inputs). Default: ``"avg"``.
        groups, width_per_group: torchvision's ResNeXt options (32 and 4: ``resnext50_32x4d``). Default: 1, 64.

    Shape:
        (N, 3, H, W) → (N, num_classes) logits, any H, W (the features are at stride 32).

    Examples:
        >>> net = AttnResNet("basic", (1, 1, 1, 1), num_classes=10).eval()
        >>> net(torch.randn(2, 3, 64, 64)).shape, net.forward_features(torch.randn(1, 3, 64, 64)).shape
        (torch.Size([2, 10]), torch.Size([1, 512, 2, 2]))
    """

    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    relu: nn.ReLU
    maxpool: nn.MaxPool2d
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential
    avgpool: nn.Module
    fc: nn.Module

    def __init__(self, block: str, layers: Sequence[int], *, num_classes: int = 1000, caffe: bool = False,
                 drop_rate: float = 0.0, global_pool: str = "avg", groups: int = 1, width_per_group: int = 64) -> None:
        super().__init__()
        name = type(self).__name__
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"{name}: block must be 'basic' or 'bottleneck', got {block!r}")
        if len(layers) != 4 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"{name}: layers must be 4 positive ints, got {layers!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"{name}: num_classes must be a non-negative int, got {num_classes!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"{name}: drop_rate must be in [0, 1), got {drop_rate!r}")
        if global_pool not in _GLOBAL_POOLS:
            raise ValueError(f"{name}: global_pool must be one of {_GLOBAL_POOLS}, got {global_pool!r}")
        tv = _torchvision_resnet()
        block_cls = tv.BasicBlock if block == "basic" else tv.Bottleneck
        net = tv.ResNet(block_cls, list(layers), num_classes=max(num_classes, 1), groups=groups,
                        width_per_group=width_per_group)
        for child_name, child in net.named_children():  # torchvision's modules, under torchvision's names
            self.add_module(child_name, child)
        self.block = block
        self.layers = tuple(layers)
        self.caffe = caffe
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.groups = groups
        self.width_per_group = width_per_group
        self.num_features = 512 * block_cls.expansion
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Identity() if num_classes == 0 else net.fc
        if global_pool == "avg7":
            self.avgpool = nn.AvgPool2d(7)
        if caffe:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
            if block == "bottleneck":
                for stage in (self.layer2, self.layer3, self.layer4):
                    first: Any = stage[0]  # a torchvision Bottleneck
                    first.conv1.stride, first.conv2.stride = first.conv2.stride, first.conv1.stride

    def extra_repr(self) -> str:
        text = (f"block={self.block!r}, layers={self.layers}, num_classes={self.num_classes}, caffe={self.caffe}, "
                f"drop_rate={self.drop_rate}")
        if self.global_pool != "avg":
            text += f", global_pool={self.global_pool!r}"
        if (self.groups, self.width_per_group) != (1, 64):
            text += f", groups={self.groups}, width_per_group={self.width_per_group}"
        return text

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem and the four stages: (N, 3, H, W) → (N, num_features, H/32, W/32) (rounded up)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool, flatten, dropout, classifier: (N, num_features, h, w) → (N, num_classes) logits.

        With ``pre_logits`` the pooled features are returned (after the dropout): (N, num_features), or
        (N, num_features·h'·w') for ``"avg7"`` on maps larger than 7×7.
        """
        x = self.head_drop(torch.flatten(self.avgpool(x), 1))  # (N, num_features)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The classifier ``fc``."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier with ``num_classes`` outputs (0: none); every other weight is kept."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"reset_classifier: num_classes must be a non-negative int, got {num_classes!r}")
        self.num_classes = num_classes
        self.fc = reset_linear(self.num_features, num_classes, self.conv1.weight)
