"""Selective Kernel Networks: SKNet-50/101 (ResNeXt with SK units) and pppLang's CIFAR SKNet.

Paper: Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019. https://arxiv.org/abs/1903.06586
Official code (Caffe): https://github.com/implus/SKNet. PyTorch networks reproduced here:

- ``sknet50`` / ``sknet101``: ResearchingDexter/SKNet_pytorch ``SKNet.py`` ``SKNet50()`` / ``SKNet101()``, the Caffe
  layout: torchvision's ResNeXt (32 groups, width 4 per group: ``resnext50_32x4d``'s widths) whose grouped 3×3
  conv (and its BN) is **replaced** by an SK convolution (:class:`plugattn.modules.sk.SelectiveKernel`, the
  ``sk_caffe`` form: 3×3 branches with dilation 1 and 2, 32 groups, d = max(C/16, 32)). No released weights.
- ``sknet_ppplang_cifar``: pppLang/SKNet ``sknet.py`` ``SKNet(10)``, a 3-stage CIFAR-10 network of SK units
  (``sk`` form: real 3×3 and 5×5 branches, 8 groups, biased convs). No released weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache

import torch
import torch.nn as nn
from torch import Tensor

from ..integrate import insert
from ..official import official, official_converter
from ._registry import register_model
from ._resnet import AttnResNet, reset_linear

__all__ = ["SKUnit", "SKNetCifar", "sknet50", "sknet101", "sknet_ppplang_cifar"]

_PAPER = "Selective Kernel Networks"
_URL = "https://arxiv.org/abs/1903.06586"
_DEXTER = "ResearchingDexter/SKNet_pytorch @ 1e1ce1a2, SKNet.py"
_PPPLANG = "pppLang/SKNet @ ef76d8dd, sknet.py, SKNet(10)"


def _module_converter(name: str, **kwargs: object) -> tuple[nn.Module, Callable[[str], str | None]]:
    """The module and key map of module converter ``name`` (``from_official(name, ...)`` without loading)."""
    return official_converter(name, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# SKNet-50 / 101 (Caffe layout)


def _sknet(layers: list[int], num_classes: int) -> AttnResNet:
    """SKNet in the Caffe layout: :class:`~plugattn.models._resnet.AttnResNet` with SK convolutions.

    torchvision's ResNeXt (``groups=32, width_per_group=4``) whose every grouped 3×3 conv and its BN are replaced
    by an SK convolution, ``insert(model, "sk", placement="replace")``: ``conv2`` becomes
    ``SelectiveKernel(width, out_channels=width, stride=s, groups=32)``, i.e. the ``sk_caffe`` form (3×3 branches
    with dilation 1 and 2, d = max(width/16, 32)); it ends in BN + ReLU per branch, so ``bn2`` becomes the identity
    and the block's ReLU after it changes nothing (the SK output is a convex mix of ReLU outputs).
    Stem 7×7/2 conv + BN + ReLU + 3×3/2 max-pool, downsample 1×1 conv + BN, global average pool, ``fc``. Output:
    logits (B, num_classes). The official network ends in a softmax inside ``forward``; it is left out here
    (NETWORKS.md §1): apply ``.softmax(-1)`` for its probabilities.
    """
    model = AttnResNet("bottleneck", layers, num_classes=num_classes, groups=32, width_per_group=4)
    insert(model, "sk", placement="replace")
    return model


def _sknet_key_map(key: str) -> str | None:
    """Dexter's names → ours: stem ``conv.0/1``, ``convN.0/1`` → ``convN``/``bnN``, SKConv via ``sk_caffe``."""
    parts = key.split(".")
    if parts[0] == "conv":
        return {"0": "conv1", "1": "bn1"}[parts[1]] + "." + ".".join(parts[2:])
    if parts[0].startswith("layer") and len(parts) > 3:
        head, name, rest = parts[:2], parts[2], parts[3:]
        if name in ("conv1", "conv3"):
            new = name if rest[0] == "0" else "bn" + name[-1]
            return ".".join([*head, new, *rest[1:]])
        if name == "conv2":
            _, sk_map = _sk_caffe_map()
            sub = sk_map(".".join(rest))
            return None if sub is None else ".".join([*head, "conv2", sub])
    return key


@lru_cache(maxsize=1)
def _sk_caffe_map() -> tuple[nn.Module, Callable[[str], str | None]]:
    return _module_converter("sk_caffe", in_channels=32, out_channels=32)  # the key map does not depend on widths


_SKNET_DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


@register_model(
    "sknet50", paper=_PAPER, url=_URL, official=f"{_DEXTER}, SKNet50(nums_class=1000)", task="classification",
    input_size=(3, 224, 224), num_classes=1000,
)
def sknet50(*, num_classes: int = 1000) -> nn.Module:
    """SKNet-50 (Li et al., CVPR 2019), the Caffe layout of ResearchingDexter's ``SKNet50``; see :func:`_sknet`.

    Output: logits (B, num_classes), not the official softmax. 27,479,784 parameters.
    """
    return _sknet(_SKNET_DEPTHS[50], num_classes)


@register_model(
    "sknet101", paper=_PAPER, url=_URL, official=f"{_DEXTER}, SKNet101(nums_class=1000)", task="classification",
    input_size=(3, 224, 224), num_classes=1000,
)
def sknet101(*, num_classes: int = 1000) -> nn.Module:
    """SKNet-101 (Li et al., CVPR 2019), ResearchingDexter's ``SKNet101``: SKNet-50 with [3, 4, 23, 3] blocks.

    Output: logits (B, num_classes), not the official softmax. 48,736,040 parameters.
    """
    return _sknet(_SKNET_DEPTHS[101], num_classes)


@official("sknet50")
def _sknet50_official() -> tuple[nn.Module, Callable[[str], str | None]]:
    """ResearchingDexter/SKNet_pytorch ``SKNet50(nums_class=1000)``."""
    return sknet50(), _sknet_key_map


@official("sknet101")
def _sknet101_official() -> tuple[nn.Module, Callable[[str], str | None]]:
    """ResearchingDexter/SKNet_pytorch ``SKNet101(nums_class=1000)``."""
    return sknet101(), _sknet_key_map


# --------------------------------------------------------------------------------------------------------------
# pppLang's CIFAR SKNet


class SKUnit(nn.Module):
    """pppLang's SK unit: 1×1 conv + BN → SK conv (stride) + BN → 1×1 conv + BN, plus a shortcut, then ReLU.

    ``y = ReLU(bn3(conv3(bn2(sk(bn1(conv1(x)))))) + shortcut(x))``; no ReLU between the convs (as official); the
    1×1 convs have biases; mid = out/2; the SK conv is ``from_official("sk", features=mid, M=2, G=8, r=2)``
    (3×3 and 5×5 branches, d = max(mid/2, 32)). The shortcut is the identity when in = out and stride 1, else a
    biased 1×1 conv (stride) + BN (``downsample``).

    Args:
        in_channels, out_channels: widths. stride: of the SK conv and the shortcut. Default: 1.

    Examples:
        >>> unit = SKUnit(64, 128, stride=2).eval()
        >>> unit(torch.randn(1, 64, 9, 9)).shape, unit.sk.fc_reduce.out_channels
        (torch.Size([1, 128, 5, 5]), 32)
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.sk, _ = _module_converter("sk", features=mid, WH=None, M=2, G=8, r=2, stride=stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride),
                                            nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn3(self.conv3(self.bn2(self.sk(self.bn1(self.conv1(x))))))
        return self.relu(y + self.downsample(x))


class SKNetCifar(nn.Module):
    """pppLang's CIFAR SKNet: 3×3 conv + BN stem, three stages of 3 :class:`SKUnit`, AvgPool2d(8), ``fc``.

    Stages map 64→256, 256→512, 512→1024, the first unit of each with stride 2. No ReLU after the stem (as
    official). The head keeps the official ``AvgPool2d(8)``, so the network takes 57–120 px inputs (the final map
    is ⌈s/8⌉; 57–64 px gives the global mean); a 32×32 CIFAR image is too small, as in the official code.

    Output: logits (B, num_classes), with the batch dimension kept (the official ``torch.squeeze`` drops it for
    a batch of one).

    Args:
        num_classes: classes of ``fc``. Default: 10.
    """

    def __init__(self, *, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = nn.Sequential(SKUnit(64, 256, stride=2), SKUnit(256, 256), SKUnit(256, 256))
        self.layer2 = nn.Sequential(SKUnit(256, 512, stride=2), SKUnit(512, 512), SKUnit(512, 512))
        self.layer3 = nn.Sequential(SKUnit(512, 1024, stride=2), SKUnit(1024, 1024), SKUnit(1024, 1024))
        self.avgpool = nn.AvgPool2d(8)
        self.fc: nn.Module = nn.Linear(1024, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """The layer3 map, (B, 1024, ⌈H/8⌉, ⌈W/8⌉)."""
        return self.layer3(self.layer2(self.layer1(self.bn1(self.conv1(x)))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """AvgPool2d(8), flatten, then ``fc`` (skipped with ``pre_logits``): logits (B, num_classes)."""
        x = self.avgpool(x).flatten(1)  # (B, 1024) for 8–15 px maps
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def num_features(self) -> int:
        return 1024

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh Linear(1024, num_classes) (``0``: identity); every other weight kept."""
        self.fc = reset_linear(1024, num_classes, self.conv1.weight)


@register_model(
    "sknet_ppplang_cifar", paper=_PAPER, url=_URL, official=_PPPLANG, task="classification",
    input_size=(3, 64, 64), num_classes=10,
)
def sknet_ppplang_cifar(*, num_classes: int = 10) -> nn.Module:
    """The CIFAR SKNet of pppLang, ``SKNet(10)``; see :class:`SKNetCifar`. Output: logits (B, num_classes).

    10,453,322 parameters. Default input 64×64: the official AvgPool2d(8) head needs 57–120 px.
    """
    return SKNetCifar(num_classes=num_classes)


_UNIT = {"0": "conv1", "1": "bn1", "2": "sk", "3": "bn2", "4": "conv3", "5": "bn3"}


def _ppplang_key_map(key: str) -> str | None:
    """The names of pppLang's ``SKNet`` → ours.

    ``basic_conv.{0,1}`` → ``conv1``/``bn1``, ``stage_s.{0,2,4}`` → ``layer{s}.{0,1,2}``, ``feas.i`` → the unit's
    layers, ``shortcut`` → ``downsample``, ``classifier.0`` → ``fc``.
    """
    parts = key.split(".")
    if parts[0] == "basic_conv":
        return {"0": "conv1", "1": "bn1"}[parts[1]] + "." + ".".join(parts[2:])
    if parts[0] == "classifier":
        return "fc." + ".".join(parts[2:])
    if parts[0].startswith("stage_"):
        head = [f"layer{parts[0][-1]}", str(int(parts[1]) // 2)]
        if parts[2] == "shortcut":
            return ".".join([*head, "downsample", *parts[3:]])
        if parts[2] == "feas":
            name = _UNIT[parts[3]]
            rest = ".".join(parts[4:])
            if name == "sk":
                sub = _sk_ppplang_map()(rest)
                return None if sub is None else ".".join([*head, "sk", sub])
            return ".".join([*head, name, rest])
    return key


@lru_cache(maxsize=1)
def _sk_ppplang_map() -> Callable[[str], str | None]:
    return _module_converter("sk", features=32, WH=None, M=2, G=8, r=2)[1]  # the key map ignores the widths


def _merge_sk_heads(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The official SKConv has one Linear head per branch (``…feas.2.fcs.{0,1}``): stack them m-major (``…fcs``)."""
    out: dict[str, Tensor] = {}
    heads: dict[str, dict[int, Tensor]] = {}
    for key, value in state_dict.items():
        prefix, sep, rest = key.partition(".fcs.")
        if sep and prefix.endswith("feas.2"):
            i, _, suffix = rest.partition(".")
            heads.setdefault(f"{prefix}.fcs.{suffix}", {})[int(i)] = value
        else:
            out[key] = value
    for key, by_index in heads.items():
        out[key] = torch.cat([by_index[i] for i in sorted(by_index)], dim=0)  # (M·C, d)
    return out


@official("sknet_ppplang_cifar")
def _sknet_ppplang_cifar_official():
    """pppLang/SKNet ``SKNet(10)`` (no released weights)."""
    return sknet_ppplang_cifar(), _ppplang_key_map, _merge_sk_heads
