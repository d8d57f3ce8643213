"""MobileNetV2 with attention: Coordinate Attention (CA-MobileNetV2) and ECA (ECA-MobileNetV2).

Papers:
    Hou, Zhou, Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021.
    https://arxiv.org/abs/2103.02907 — official network: houqb/CoordAttention ``mbv2_ca.py`` ``mbv2_ca()``.
    Wang, Wu, Zhu, Wang, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    CVPR 2020. https://arxiv.org/abs/1910.03151 — official network: BangguWu/ECANet ``models/eca_mobilenetv2.py``
    ``eca_mobilenet_v2()``.

Both are torchvision's MobileNetV2 (``torchvision.models.MobileNetV2``: the same widths, strides, residual rule
and head) with attention placed by :func:`plugattn.insert`:

- CA-MobileNetV2: ``coord`` on the output of the depthwise Conv-BN-ReLU6 (``features.i.conv.1``) of the 16
  expanding blocks, i.e. on the expanded channels, before the projection (``placement="expanded"``);
- ECA-MobileNetV2: ``eca`` on the projected output of **all 17** inverted residuals (not only the 10 residual
  ones insert's default placement picks), kernel 1 in ``features.1``–``10`` and 3 in ``features.11``–``17``.

The official checkpoints load through ``plugattn.from_official(KEY, state_dict)`` (key maps below).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
from torch import Tensor
from torchvision.models.mobilenetv2 import MobileNetV2

from ..integrate import insert
from ..official import official
from ._registry import register_model
from ._resnet import reset_linear

__all__ = ["AttentionMobileNetV2", "coord_mobilenet_v2", "eca_mobilenet_v2"]

_NUM_BLOCKS = 17  # inverted residuals features.1 … features.17 of MobileNetV2 1.0
_ECA_K1 = range(1, 11)  # rows with c < 96 (features 1–10): k = 1
_ECA_K3 = range(11, 18)  # rows with c ≥ 96 (features 11–17): k = 3


class AttentionMobileNetV2(MobileNetV2):
    """torchvision's ``MobileNetV2`` with timm's backbone methods; the attention is inserted by the factories.

    ``forward(x) = forward_head(forward_features(x))``: ``features`` (stem, 17 inverted residuals, 1×1 conv to
    1280 + BN + ReLU6) → global average pool → flatten → ``classifier`` (Dropout, Linear). Output: logits
    (B, num_classes); ``forward_head(x, pre_logits=True)`` gives the pooled (B, 1280) features.
    """

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map, (B, 1280, ⌈H/32⌉, ⌈W/32⌉)."""
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool, flatten, then the classifier (skipped with ``pre_logits``)."""
        x = x.mean((2, 3))  # (B, 1280)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def num_features(self) -> int:
        """Channels of the pooled features (1280 at width 1.0)."""
        return self.last_channel

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised Linear(num_features, num_classes) (``0``: identity); other weights kept."""
        fc = reset_linear(self.last_channel, num_classes, next(self.features.parameters()))
        if isinstance(fc, nn.Linear):  # torchvision's MobileNetV2 initialisation
            nn.init.normal_(fc.weight, 0, 0.01)
            nn.init.zeros_(fc.bias)
        self.classifier[-1] = fc


def _expanding_blocks(model: MobileNetV2) -> list[int]:
    """Indices i of the inverted residuals ``features.i`` that have a 1×1 expansion (t ≠ 1)."""
    return [i for i in range(1, _NUM_BLOCKS + 1) if len(model.features[i].conv) == 4]


# --------------------------------------------------------------------------------------------------------------
# CA-MobileNetV2

_COORD_PAPER = "Coordinate Attention for Efficient Mobile Network Design"
_COORD_URL = "https://arxiv.org/abs/2103.02907"


@register_model(
    "coord_mobilenet_v2", paper=_COORD_PAPER, url=_COORD_URL,
    official="houqb/CoordAttention @ 7619bea9, mbv2_ca.py, mbv2_ca()", task="classification",
    input_size=(3, 224, 224), num_classes=1000, checkpoints=("mbv2_ca.pth",),
)
def coord_mobilenet_v2(*, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.1) -> nn.Module:
    """CA-MobileNetV2 (Hou et al., CVPR 2021): MobileNetV2 with Coordinate Attention in 16 inverted residuals.

    torchvision's MobileNetV2 with ``coord`` (:class:`plugattn.modules.coord.CoordAttention`, mip = max(8, C/32))
    inserted on the output of the depthwise Conv-BN-ReLU6 of every expanding block (``features.2``–``17``), on
    the expanded channels, before the 1×1 projection: the official ``mbv2_ca`` placement,
    ``insert(model, "coord", placement="expanded")``. Head: global average
    pool → Dropout(0.1) → Linear(1280, num_classes). Output: logits (B, num_classes). 3,950,648 parameters.

    ``width_mult`` rounds widths as torchvision does (to multiples of 8, the official rule at width 1.0).
    """
    model = AttentionMobileNetV2(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    return insert(model, "coord", placement="expanded")


def _coord_key_map(expanding: set[int]) -> Callable[[str], str]:
    """mbv2_ca's flat ``conv`` Sequential → torchvision's nested blocks with the inserted ``coord``."""
    flat_t6 = {"0": "0.0", "1": "0.1", "3": "1.module.0", "4": "1.module.1", "6": "1.attn", "7": "2", "8": "3"}
    flat_t1 = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
    coord = {"conv1": "conv1", "bn1": "norm", "conv2": "conv_h", "conv3": "conv_w"}  # mbv2_ca CoordAtt naming

    def key_map(key: str) -> str:
        parts = key.split(".")
        if parts[0] == "conv":  # the top-level 1×1 conv 320 → 1280 + BN is features.18 in torchvision
            return "features.18." + ".".join(parts[1:])
        if parts[0] == "features" and len(parts) > 3 and parts[2] == "conv":
            i = int(parts[1])
            table = flat_t6 if i in expanding else flat_t1
            rest = parts[4:]
            if parts[3] == "6":
                rest = [coord[rest[0]], *rest[1:]]
            return ".".join(["features", parts[1], "conv", table[parts[3]], *rest])
        return key

    return key_map


@official("coord_mobilenet_v2")
def _coord_mobilenet_v2_official() -> tuple[nn.Module, Callable[[str], str]]:
    """houqb/CoordAttention ``mbv2_ca.py`` ``mbv2_ca()`` (the released ``mbv2_ca.pth``)."""
    model = coord_mobilenet_v2()
    return model, _coord_key_map(set(_expanding_blocks(model)))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------
# ECA-MobileNetV2

_ECA_PAPER = "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks"
_ECA_URL = "https://arxiv.org/abs/1910.03151"


@register_model(
    "eca_mobilenet_v2", paper=_ECA_PAPER, url=_ECA_URL,
    official="BangguWu/ECANet @ b332f6b3, models/eca_mobilenetv2.py, eca_mobilenet_v2()", task="classification",
    input_size=(3, 224, 224), num_classes=1000, checkpoints=("eca_mobilenetv2_k13",),
)
def eca_mobilenet_v2(*, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.25) -> nn.Module:
    """ECA-MobileNetV2 (Wang et al., CVPR 2020): MobileNetV2 with ECA appended to every inverted residual.

    torchvision's MobileNetV2 with ``eca`` (:class:`plugattn.modules.eca.EfficientChannelAttention`) on the
    projected output of all 17 inverted residuals, before the residual add where there is one; kernel k = 1 in
    ``features.1``–``10`` (rows with c < 96; one shared scalar weight) and k = 3 in ``features.11``–``17``, the
    released ``eca_mobilenetv2_k13``. Head: global average pool → Dropout(0.25) → Linear(1280, num_classes).
    Output: logits (B, num_classes). 3,504,903 parameters.
    """
    model = AttentionMobileNetV2(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    insert(model, "eca", where=[f"features.{i}" for i in _ECA_K1], kernel_size=1)
    return insert(model, "eca", where=[f"features.{i}" for i in _ECA_K3], kernel_size=3)


def _eca_key_map(key: str) -> str:
    """ECANet's ``features.i.conv.{3,4}`` (the eca_layer at the end of the block) → the appended ``conv.attn``."""
    parts = key.split(".")
    if parts[0] == "features" and len(parts) > 4 and parts[2] == "conv" and parts[4] == "conv":
        if (parts[3] == "3" and parts[1] == "1") or parts[3] == "4":
            return ".".join(["features", parts[1], "conv", "attn", *parts[4:]])
    return key


@official("eca_mobilenet_v2")
def _eca_mobilenet_v2_official() -> tuple[nn.Module, Callable[[str], str]]:
    """BangguWu/ECANet ``eca_mobilenet_v2()`` (released as ``eca_mobilenetv2_k13``)."""
    return eca_mobilenet_v2(), _eca_key_map
