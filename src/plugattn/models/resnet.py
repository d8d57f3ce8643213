"""SE-ResNets and ECA-ResNets as released: torchvision's ResNet plus attention put in by :func:`plugattn.insert`.

Papers:

- Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018 / TPAMI 2020.
  https://arxiv.org/abs/1709.01507 — official code (Caffe): https://github.com/hujie-frank/SENet
- Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
  CVPR 2020. https://arxiv.org/abs/1910.03151 — official code: https://github.com/BangguWu/ECANet

Three families, each at the depths its official factory offers (18, 34, 50, 101, 152):

- ``se_resnet*``: the Caffe SENet as converted for PyTorch (Cadene; timm ``legacy_seresnet*``,
  huggingface/pytorch-image-models @ aa4b5850, ``timm/models/senet.py``). torchvision's ResNet differs in two
  places, both reproduced here: the stem pool is Caffe's ``MaxPool2d(3, 2, padding=0, ceil_mode=True)``, and a
  strided bottleneck puts its stride on the first 1×1 conv instead of the 3×3. SE (biased 1×1 convs, width
  C/16) sits on the last BN output of every block; the head has dropout 0.2 before the classifier.
- ``se_resnet*_moskomule``: moskomule/senet.pytorch @ 8cb2669f (``senet/se_resnet.py``): torchvision's ResNet
  exactly, with bias-free SE (``SELayer``) at the same place.
- ``eca_resnet*``: BangguWu/ECANet @ b332f6b3 (``models/eca_resnet.py``): torchvision's ResNet with ECA at the
  same place and one kernel size per stage, as released (50: k 3/5/5/7; 18: 3/5/7/7; 34/101/152: 3/3/5/7).

Every network is :class:`AttnResNet` (torchvision's stem, stages and classifier with their torchvision names,
timm's ``forward_features`` / ``forward_head`` / ``reset_classifier``) with the attention modules put in by
:func:`plugattn.insert` at its default site: the output of ``bn2`` (basic block) / ``bn3`` (bottleneck),
before the residual addition. ``plugattn.from_official(KEY, official_state_dict)`` loads the official weights
(keys renamed, nothing else); the output is the official network's logits. torchvision is required.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Callable

import torch
import torch.nn as nn
from torch import Tensor

from ..integrate import insert
from ..modules.se import SqueezeExcite
from ..official import KeyMap, official
from ._registry import register_model
from ._resnet import AttnResNet

__all__ = [
    "AttnResNet",
    "se_resnet18", "se_resnet34", "se_resnet50", "se_resnet101", "se_resnet152",
    "se_resnet18_moskomule", "se_resnet34_moskomule", "se_resnet50_moskomule", "se_resnet101_moskomule",
    "se_resnet152_moskomule",
    "eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152",
]

_DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

_SE_PAPER = "Squeeze-and-Excitation Networks"
_SE_URL = "https://arxiv.org/abs/1709.01507"
_ECA_PAPER = "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks"
_ECA_URL = "https://arxiv.org/abs/1910.03151"
_TIMM = "huggingface/pytorch-image-models @ aa4b5850, timm/models/senet.py"
_MOSKOMULE = "moskomule/senet.pytorch @ 8cb2669f, senet/se_resnet.py"
_ECANET = "BangguWu/ECANet @ b332f6b3, models/eca_resnet.py"


def _block_paths(net: AttnResNet) -> list[list[str]]:
    """Paths of the blocks of each stage: [["layer1.0", "layer1.1", ...], ...]."""
    return [[f"layer{i + 1}.{b}" for b in range(n)] for i, n in enumerate(net.layers)]


def _last_bn(net: AttnResNet) -> str:
    return "bn2" if net.block == "basic" else "bn3"


def _block_key_map(official_attn: str, last_bn: str, rest: Callable[[str], str] = lambda k: k) -> Callable[[str], str]:
    """Official ``layerL.B.<official_attn>.*`` → ``layerL.B.<last_bn>.attn.*``, ``…<last_bn>.*`` → ``….module.*``.

    ``insert`` wraps the last BN of every block (:class:`plugattn.integrate.Inserted`): the BN becomes
    ``<last_bn>.module``, the attention ``<last_bn>.attn``. Other keys go through ``rest``.
    """
    pattern = re.compile(rf"^(layer\d+\.\d+)\.(?:({re.escape(official_attn)})|({last_bn}))\.(.+)$")

    def key_map(key: str) -> str:
        m = pattern.match(key)
        if m is None:
            return rest(key)
        block, attn, _, tail = m.groups()
        return f"{block}.{last_bn}.{'attn' if attn else 'module'}.{tail}"

    return key_map


def _caffe_rest(key: str) -> str:
    """Rename timm's legacy SENet keys outside the blocks: ``layer0.conv1/bn1`` → ``conv1/bn1``, ``last_linear``."""
    for old, new in (("layer0.", ""), ("last_linear.", "fc.")):  # layer0 = Sequential(conv1, bn1, relu1)
        if key.startswith(old):
            return new + key[len(old):]
    return key



# ---------------------------------------------------------------------------------------------------------
# SE-ResNet, Caffe layout (timm legacy_seresnet*)


class _SqueezeExciteAfterReLU(SqueezeExcite):
    """SE applied to ReLU(x), with the keys of :class:`SqueezeExcite`.

    timm's legacy ``SEResNetBlock`` (SE-ResNet-18/34) applies its ReLU to ``bn2``'s output before SE and the
    residual addition (then ReLU again after it).
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(torch.relu(x))


def _se_caffe(depth: int, num_classes: int, drop_rate: float) -> AttnResNet:
    """The network of timm's ``legacy_seresnet{depth}``.

    Caffe layout, Caffe SE (biased 1×1 convs, width ⌊C/16⌋) on bn3 (50+) or on ReLU(bn2) (18/34).
    """
    block, layers = _DEPTHS[depth]
    net = AttnResNet(block, layers, num_classes=num_classes, caffe=True, drop_rate=drop_rate)
    insert(net, "se" if block == "bottleneck" else _SqueezeExciteAfterReLU)
    return net


def _se_caffe_official(depth: int, num_classes: int) -> tuple[nn.Module, KeyMap]:
    net = _se_caffe(depth, num_classes, 0.2)
    return net, _block_key_map("se_module", _last_bn(net), _caffe_rest)


def _se_meta(depth: int, checkpoint: str) -> dict[str, Any]:
    return {"paper": _SE_PAPER, "url": _SE_URL, "official": f"{_TIMM}, legacy_seresnet{depth}()",
            "checkpoints": (checkpoint,)}


@register_model("se_resnet18", **_se_meta(18, "seresnet18-4bb0ce65.pth (timm legacy_seresnet18.in1k)"))
def se_resnet18(*, num_classes: int = 1000, drop_rate: float = 0.2) -> nn.Module:
    """SE-ResNet-18, timm ``legacy_seresnet18`` (``SENet(SEResNetBlock, [2, 2, 2, 2], groups=1, reduction=16)``).

    The Caffe-layout SENet code of timm (``timm/models/senet.py`` @ aa4b5850) at depth 18; its weights were
    trained by timm. torchvision's ResNet-18 with the Caffe stem pool ``MaxPool2d(3, 2, 0, ceil_mode=True)``, SE
    (biased 1×1 convs, C → C/16 → C) on ReLU(``bn2`` output) of every block (timm's ``SEResNetBlock`` applies
    the block's ReLU before SE and again after the residual addition), dropout before ``fc``. 11,778,592
    parameters. Paper: Hu et al., "Squeeze-and-Excitation Networks", https://arxiv.org/abs/1709.01507.

    Args:
        num_classes: classifier outputs. Default: 1000.
        drop_rate: dropout before the classifier (training only). Default: 0.2, as released.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _se_caffe(18, num_classes, drop_rate)


@register_model("se_resnet34", **_se_meta(34, "seresnet34-a4004e63.pth (timm legacy_seresnet34.in1k)"))
def se_resnet34(*, num_classes: int = 1000, drop_rate: float = 0.2) -> nn.Module:
    """SE-ResNet-34, timm ``legacy_seresnet34`` (``SENet(SEResNetBlock, [3, 4, 6, 3], ...)``).

    As :func:`se_resnet18`, with (3, 4, 6, 3) blocks. 21,958,868 parameters.

    Args:
        num_classes: classifier outputs. Default: 1000.
        drop_rate: dropout before the classifier (training only). Default: 0.2, as released.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _se_caffe(34, num_classes, drop_rate)


@register_model("se_resnet50", **_se_meta(50, "se_resnet50-ce0d4300.pth (timm legacy_seresnet50.in1k)"))
def se_resnet50(*, num_classes: int = 1000, drop_rate: float = 0.2) -> nn.Module:
    """SE-ResNet-50 of the SENet paper: the Caffe model as converted (Cadene; timm ``legacy_seresnet50``).

    Paper: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018,
    https://arxiv.org/abs/1709.01507. Official: the Caffe release (hujie-frank/SENet), converted to PyTorch;
    the layout is timm's ``legacy_seresnet50()`` = ``SENet(SEResNetBottleneck, [3, 4, 6, 3], groups=1,
    reduction=16)`` (``timm/models/senet.py`` @ aa4b5850).

    torchvision's ResNet-50 in the Caffe layout: the stem pool is ``MaxPool2d(3, 2, 0, ceil_mode=True)`` and
    block 0 of layer2–4 has its stride on the first 1×1 conv (``conv1``), not on the 3×3. SE (biased 1×1 convs,
    C → C/16 → C, ReLU, sigmoid) scales the ``bn3`` output of every block before the residual addition; the head
    is global average pooling, dropout, ``fc``. 28,088,024 parameters (paper: 28.09 M).

    Args:
        num_classes: classifier outputs. Default: 1000.
        drop_rate: dropout before the classifier (training only). Default: 0.2, as released.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.

    Examples:
        >>> net = se_resnet50(num_classes=10).eval()
        >>> net(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """
    return _se_caffe(50, num_classes, drop_rate)


@register_model("se_resnet101", **_se_meta(101, "se_resnet101-7e38fcc6.pth (timm legacy_seresnet101.in1k)"))
def se_resnet101(*, num_classes: int = 1000, drop_rate: float = 0.2) -> nn.Module:
    """SE-ResNet-101, the converted Caffe model (timm ``legacy_seresnet101``, blocks (3, 4, 23, 3)).

    As :func:`se_resnet50`, with (3, 4, 23, 3) blocks. 49,326,872 parameters.

    Args:
        num_classes: classifier outputs. Default: 1000.
        drop_rate: dropout before the classifier (training only). Default: 0.2, as released.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _se_caffe(101, num_classes, drop_rate)


@register_model("se_resnet152", **_se_meta(152, "se_resnet152-d17c99b7.pth (timm legacy_seresnet152.in1k)"))
def se_resnet152(*, num_classes: int = 1000, drop_rate: float = 0.2) -> nn.Module:
    """SE-ResNet-152, the converted Caffe model (timm ``legacy_seresnet152``, blocks (3, 8, 36, 3)).

    As :func:`se_resnet50`, with (3, 8, 36, 3) blocks. 66,821,848 parameters.

    Args:
        num_classes: classifier outputs. Default: 1000.
        drop_rate: dropout before the classifier (training only). Default: 0.2, as released.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _se_caffe(152, num_classes, drop_rate)


@official("se_resnet18")
def _official_se_resnet18(num_classes: int = 1000):
    """The timm ``legacy_seresnet18(num_classes=1000)``."""
    return _se_caffe_official(18, num_classes)


@official("se_resnet34")
def _official_se_resnet34(num_classes: int = 1000):
    """The timm ``legacy_seresnet34(num_classes=1000)``."""
    return _se_caffe_official(34, num_classes)


@official("se_resnet50")
def _official_se_resnet50(num_classes: int = 1000):
    """The timm ``legacy_seresnet50(num_classes=1000)``, the converted Caffe SE-ResNet-50 (``se_resnet50-ce0d4300``)."""
    return _se_caffe_official(50, num_classes)


@official("se_resnet101")
def _official_se_resnet101(num_classes: int = 1000):
    """The timm ``legacy_seresnet101(num_classes=1000)``."""
    return _se_caffe_official(101, num_classes)


@official("se_resnet152")
def _official_se_resnet152(num_classes: int = 1000):
    """The timm ``legacy_seresnet152(num_classes=1000)``."""
    return _se_caffe_official(152, num_classes)


# ---------------------------------------------------------------------------------------------------------
# SE-ResNet, moskomule/senet.pytorch


def _se_moskomule(depth: int, num_classes: int) -> AttnResNet:
    """The network of moskomule's ``se_resnet{depth}``: torchvision's ResNet, bias-free SE on bn2 / bn3."""
    block, layers = _DEPTHS[depth]
    net = AttnResNet(block, layers, num_classes=num_classes)
    insert(net, "se", bias=False)  # SELayer: Linear C → C/16 → C without biases
    return net


def _se_moskomule_official(depth: int, num_classes: int) -> tuple[nn.Module, KeyMap]:
    net = _se_moskomule(depth, num_classes)
    inner = _block_key_map("se", _last_bn(net))

    def key_map(key: str) -> str:  # SELayer.fc = Sequential(Linear, ReLU, Linear, Sigmoid)
        return inner(key).replace(".attn.fc.0.", ".attn.fc1.").replace(".attn.fc.2.", ".attn.fc2.")

    return net, key_map


def _moskomule_meta(depth: int, checkpoints: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"paper": _SE_PAPER, "url": _SE_URL, "official": f"{_MOSKOMULE}, se_resnet{depth}(num_classes=1000)",
            "checkpoints": checkpoints}


@register_model("se_resnet18_moskomule", **_moskomule_meta(18))
def se_resnet18_moskomule(*, num_classes: int = 1000) -> nn.Module:
    """SE-ResNet-18 of moskomule/senet.pytorch: torchvision's ResNet-18 with bias-free SE after ``bn2``.

    Official: moskomule/senet.pytorch @ 8cb2669f, ``senet/se_resnet.py``, ``se_resnet18()`` (torchvision
    ``ResNet`` with ``SEBasicBlock``; no released weights). ``SELayer(C, 16)``: global average pool, Linear
    C → C/16 → C without biases, ReLU, sigmoid. 11,776,552 parameters. Paper: Hu et al., "Squeeze-and-Excitation
    Networks", https://arxiv.org/abs/1709.01507.

    Args:
        num_classes: classifier outputs. Default: 1000.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _se_moskomule(18, num_classes)


@register_model("se_resnet34_moskomule", **_moskomule_meta(34))
def se_resnet34_moskomule(*, num_classes: int = 1000) -> nn.Module:
    """SE-ResNet-34 of moskomule/senet.pytorch (``se_resnet34()``; no released weights).

    As :func:`se_resnet18_moskomule`, with (3, 4, 6, 3) blocks. 21,954,856 parameters.

    Args:
        num_classes: classifier outputs. Default: 1000.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _se_moskomule(34, num_classes)


@register_model("se_resnet50_moskomule", **_moskomule_meta(50, ("seresnet50-60a8950a85b2b.pkl",)))
def se_resnet50_moskomule(*, num_classes: int = 1000) -> nn.Module:
    """SE-ResNet-50 of moskomule/senet.pytorch: torchvision's ResNet-50 with bias-free SE after ``bn3``.

    Paper: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018,
    https://arxiv.org/abs/1709.01507. Official: moskomule/senet.pytorch @ 8cb2669f, ``senet/se_resnet.py``,
    ``se_resnet50(num_classes=1000)`` = torchvision ``ResNet(SEBottleneck, [3, 4, 6, 3])``; released weights
    ``seresnet50-60a8950a85b2b.pkl``.

    torchvision's ResNet-50 exactly, with ``SELayer(C, 16)`` (global average pool, Linear C → C/16 → C without
    biases, ReLU, sigmoid) scaling the ``bn3`` output of every block before the residual addition.
    28,071,976 parameters.

    Args:
        num_classes: classifier outputs. Default: 1000.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _se_moskomule(50, num_classes)


@register_model("se_resnet101_moskomule", **_moskomule_meta(101))
def se_resnet101_moskomule(*, num_classes: int = 1000) -> nn.Module:
    """SE-ResNet-101 of moskomule/senet.pytorch (``se_resnet101()``; no released weights).

    As :func:`se_resnet50_moskomule`, with (3, 4, 23, 3) blocks. 49,292,328 parameters.

    Args:
        num_classes: classifier outputs. Default: 1000.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _se_moskomule(101, num_classes)


@register_model("se_resnet152_moskomule", **_moskomule_meta(152))
def se_resnet152_moskomule(*, num_classes: int = 1000) -> nn.Module:
    """SE-ResNet-152 of moskomule/senet.pytorch (``se_resnet152()``; no released weights).

    As :func:`se_resnet50_moskomule`, with (3, 8, 36, 3) blocks. 66,770,984 parameters.

    Args:
        num_classes: classifier outputs. Default: 1000.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _se_moskomule(152, num_classes)


@official("se_resnet18_moskomule")
def _official_se_resnet18_moskomule(num_classes: int = 1000):
    """moskomule/senet.pytorch ``se_resnet18(num_classes=1000)``."""
    return _se_moskomule_official(18, num_classes)


@official("se_resnet34_moskomule")
def _official_se_resnet34_moskomule(num_classes: int = 1000):
    """moskomule/senet.pytorch ``se_resnet34(num_classes=1000)``."""
    return _se_moskomule_official(34, num_classes)


@official("se_resnet50_moskomule")
def _official_se_resnet50_moskomule(num_classes: int = 1000):
    """moskomule/senet.pytorch ``se_resnet50(num_classes=1000)`` (``seresnet50-60a8950a85b2b.pkl``)."""
    return _se_moskomule_official(50, num_classes)


@official("se_resnet101_moskomule")
def _official_se_resnet101_moskomule(num_classes: int = 1000):
    """moskomule/senet.pytorch ``se_resnet101(num_classes=1000)``."""
    return _se_moskomule_official(101, num_classes)


@official("se_resnet152_moskomule")
def _official_se_resnet152_moskomule(num_classes: int = 1000):
    """moskomule/senet.pytorch ``se_resnet152(num_classes=1000)``."""
    return _se_moskomule_official(152, num_classes)


# ---------------------------------------------------------------------------------------------------------
# ECA-ResNet, BangguWu/ECANet


def _eca_resnet(depth: int, num_classes: int, k_size: Sequence[int]) -> AttnResNet:
    """ECANet ``eca_resnet{depth}(k_size)``: torchvision's ResNet, ECA with kernel ``k_size[i]`` in stage i + 1."""
    if len(k_size) != 4:
        raise ValueError(f"eca_resnet{depth}: k_size must give 4 kernel sizes (one per stage), got {k_size!r}")
    block, layers = _DEPTHS[depth]
    net = AttnResNet(block, layers, num_classes=num_classes)
    for paths, k in zip(_block_paths(net), k_size):
        insert(net, "eca", where=paths, kernel_size=int(k))  # fixed per stage, not ECA's adaptive ψ(C)
    return net


def _eca_official(depth: int, k_size: Sequence[int], num_classes: int) -> tuple[nn.Module, KeyMap]:
    net = _eca_resnet(depth, num_classes, k_size)
    return net, _block_key_map("eca", _last_bn(net))


def _eca_meta(depth: int, k: tuple[int, ...]) -> dict[str, Any]:
    ks = "".join(map(str, k))
    return {"paper": _ECA_PAPER, "url": _ECA_URL, "official": f"{_ECANET}, eca_resnet{depth}(k_size={list(k)})",
            "checkpoints": (f"eca_resnet{depth}_k{ks}",)}


_K18, _K50, _K3357 = (3, 5, 7, 7), (3, 5, 5, 7), (3, 3, 5, 7)


@register_model("eca_resnet18", **_eca_meta(18, _K18))
def eca_resnet18(*, num_classes: int = 1000, k_size: Sequence[int] = _K18) -> nn.Module:
    """ECA-ResNet-18 of BangguWu/ECANet as released (``eca_resnet18_k3577``): ECA after ``bn2``.

    Official: BangguWu/ECANet @ b332f6b3, ``models/eca_resnet.py``, ``eca_resnet18(k_size=[3, 5, 7, 7])``
    (``ECABasicBlock``). torchvision's ResNet-18 with ECA (bias-free 1-D conv across channels, sigmoid) on the
    ``bn2`` output of every block, kernel 3/5/7/7 in stages 1–4. 11,689,556 parameters. Paper: Wang et al.,
    "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks", https://arxiv.org/abs/1910.03151.

    Args:
        num_classes: classifier outputs. Default: 1000.
        k_size: the kernel size of each stage. Default: (3, 5, 7, 7), the released model's.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _eca_resnet(18, num_classes, k_size)


@register_model("eca_resnet34", **_eca_meta(34, _K3357))
def eca_resnet34(*, num_classes: int = 1000, k_size: Sequence[int] = _K3357) -> nn.Module:
    """ECA-ResNet-34 of BangguWu/ECANet as released (``eca_resnet34_k3357``).

    As :func:`eca_resnet18`, with (3, 4, 6, 3) blocks and kernels 3/3/5/7. 21,797,744 parameters.

    Args:
        num_classes: classifier outputs. Default: 1000.
        k_size: the kernel size of each stage. Default: (3, 3, 5, 7), the released model's.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _eca_resnet(34, num_classes, k_size)


@register_model("eca_resnet50", **_eca_meta(50, _K50))
def eca_resnet50(*, num_classes: int = 1000, k_size: Sequence[int] = _K50) -> nn.Module:
    """ECA-ResNet-50 of the ECA-Net paper as released (``eca_resnet50_k3557``).

    Paper: Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
    Networks", CVPR 2020, https://arxiv.org/abs/1910.03151. Official: BangguWu/ECANet @ b332f6b3,
    ``models/eca_resnet.py``, ``eca_resnet50(k_size=[3, 5, 5, 7])`` (the factory's default is [3, 3, 3, 3]; the
    released model, and this key, use 3/5/5/7).

    torchvision's ResNet-50 with ECA (global average pool, bias-free 1-D conv of kernel k across channels,
    sigmoid) scaling the ``bn3`` output of every block before the residual addition, k = 3, 5, 5, 7 in stages
    1–4 (given, not ECA's adaptive rule, which would give 5/5/5/7). Global average pool (the factory's
    ``AdaptiveAvgPool2d(1)``) and ``fc``. 25,557,112 parameters = ResNet-50's + 80 (README: 24.37 M).

    Args:
        num_classes: classifier outputs. Default: 1000.
        k_size: the kernel size of each stage. Default: (3, 5, 5, 7), the released model's.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _eca_resnet(50, num_classes, k_size)


@register_model("eca_resnet101", **_eca_meta(101, _K3357))
def eca_resnet101(*, num_classes: int = 1000, k_size: Sequence[int] = _K3357) -> nn.Module:
    """ECA-ResNet-101 of BangguWu/ECANet as released (``eca_resnet101_k3357``).

    As :func:`eca_resnet50`, with (3, 4, 23, 3) blocks and kernels 3/3/5/7. 44,549,317 parameters.

    Args:
        num_classes: classifier outputs. Default: 1000.
        k_size: the kernel size of each stage. Default: (3, 3, 5, 7), the released model's.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _eca_resnet(101, num_classes, k_size)


@register_model("eca_resnet152", **_eca_meta(152, _K3357))
def eca_resnet152(*, num_classes: int = 1000, k_size: Sequence[int] = _K3357) -> nn.Module:
    """ECA-ResNet-152 of BangguWu/ECANet as released (``eca_resnet152_k3357``).

    As :func:`eca_resnet50`, with (3, 8, 36, 3) blocks and kernels 3/3/5/7. 60,193,042 parameters.

    Args:
        num_classes: classifier outputs. Default: 1000.
        k_size: the kernel size of each stage. Default: (3, 3, 5, 7), the released model's.

    Returns:
        An :class:`AttnResNet` returning logits (N, num_classes), any input size.
    """
    return _eca_resnet(152, num_classes, k_size)


@official("eca_resnet18")
def _official_eca_resnet18(k_size: Sequence[int] = _K18, num_classes: int = 1000):
    """BangguWu/ECANet ``eca_resnet18(k_size, num_classes=1000)``; ``k_size`` defaults to the released 3/5/7/7."""
    return _eca_official(18, k_size, num_classes)


@official("eca_resnet34")
def _official_eca_resnet34(k_size: Sequence[int] = _K3357, num_classes: int = 1000):
    """BangguWu/ECANet ``eca_resnet34(k_size, num_classes=1000)``; ``k_size`` defaults to the released 3/3/5/7."""
    return _eca_official(34, k_size, num_classes)


@official("eca_resnet50")
def _official_eca_resnet50(k_size: Sequence[int] = _K50, num_classes: int = 1000):
    """BangguWu/ECANet ``eca_resnet50(k_size, num_classes=1000)``; ``k_size`` defaults to the released 3/5/5/7."""
    return _eca_official(50, k_size, num_classes)


@official("eca_resnet101")
def _official_eca_resnet101(k_size: Sequence[int] = _K3357, num_classes: int = 1000):
    """BangguWu/ECANet ``eca_resnet101(k_size, num_classes=1000)``; ``k_size`` defaults to the released 3/3/5/7."""
    return _eca_official(101, k_size, num_classes)


@official("eca_resnet152")
def _official_eca_resnet152(k_size: Sequence[int] = _K3357, num_classes: int = 1000):
    """BangguWu/ECANet ``eca_resnet152(k_size, num_classes=1000)``; ``k_size`` defaults to the released 3/3/5/7."""
    return _eca_official(152, k_size, num_classes)
