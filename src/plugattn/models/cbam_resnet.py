"""CBAM, BAM and Triplet Attention ResNets: the ``ResidualNet`` networks of the official repositories.

Papers:

- Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018. https://arxiv.org/abs/1807.06521
- Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018. https://arxiv.org/abs/1807.06514
- Misra, Nalamada, Arasanipalai, Hou, "Rotate to Attend: Convolutional Triplet Attention Module", WACV 2021.
  https://arxiv.org/abs/2010.03045

Official code: Jongchan/attention-module @ 459efad0 (``MODELS/model_resnet.py``, ``ResidualNet('ImageNet', depth,
num_classes, att_type)`` with att_type ``'CBAM'`` or ``'BAM'``) and landskape-ai/triplet-attention @ 2cf02fb9
(``MODELS/resnet.py``, the same ``ResidualNet`` with ``'TripletAttention'``). Written from the specification in
NETWORKS.md (§2, §3.3, §3.4, §3.7, §4); no official code is copied.

All three are torchvision's ResNet (18/34 BasicBlock, 50/101 Bottleneck; stride on the 3×3 conv) with two changes:

- **the attention** — CBAM and Triplet sit at :func:`plugattn.insert`'s default site (the output of the block's
  last BN, before the residual add, in every block), so the networks are ``torchvision.models.ResNet`` +
  ``insert``. BAM instead sits **between stages**: one BAM on the output of each of ``layer1``, ``layer2`` and
  ``layer3`` (none after ``layer4``), placed by ``insert(model, ..., placement="stage")``, which appends the module to
  the stage's ``nn.Sequential`` as child ``attn`` (``layer1.attn``), so every torchvision key is unchanged and
  ``create_feature_extractor(model, {"layer1": ...})`` returns the attended stage output, as the next stage sees it.
- **the head** — the official pool is ``nn.AvgPool2d(7)``, not a global pool: the final map is ⌈s/32⌉ for an s×s
  input, so the pool is the global mean only for 193–224 px inputs; for 225–416 px it averages the top-left 7×7 of
  the map, smaller inputs fail, larger ones no longer fit ``fc``. ``global_pool="avg7"`` (the default) keeps it;
  ``global_pool="avg"`` takes the global mean at any size (identical at 193–224 px).

State-dict keys are torchvision's; the attention modules' keys follow ``insert`` (``layer1.0.bn3.module.weight``,
``layer1.0.bn3.attn.…``, ``layer1.attn.…`` for BAM). ``plugattn.from_official(KEY, official_state_dict)`` converts
the official keys (``layerL.B.cbam.…``, ``layerL.B.triplet_attention.…``, ``bamN.…``).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch.nn as nn
from torch import Tensor

from .. import official as _official
from ..integrate import insert
from ..modules.bam import BottleneckAttention
from ..official import KeyMap, official
from ._registry import register_model
from ._resnet import AttnResNet

__all__ = [
    "JongchanBAM",
    "cbam_resnet18",
    "cbam_resnet34",
    "cbam_resnet50",
    "cbam_resnet101",
    "bam_resnet18",
    "bam_resnet34",
    "bam_resnet50",
    "bam_resnet101",
    "triplet_resnet18",
    "triplet_resnet34",
    "triplet_resnet50",
    "triplet_resnet101",
]

_DEPTHS: dict[int, tuple[str, list[int]]] = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
}


class JongchanBAM(BottleneckAttention):
    """BAM with the official channel-branch pooling: ``avg_pool2d(x, H, stride=H)``.

    :class:`~plugattn.modules.bam.BottleneckAttention` takes the global mean; the official ``ChannelGate`` pools an
    H×H window (H = the map height), i.e. the mean over the first H columns. The two are equal for square maps
    (every map of a square input). Where the official network runs (H ≤ W < 2H), this class gives its numbers;
    where it fails (W < H, W ≥ 2H), this one averages the first min(H, W) columns. Arguments as the parent's.
    """

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[2]
        mc = self.channel(x[:, :, :, :h].mean((2, 3), keepdim=True))  # M_c: (N, C, 1, 1), over the H×H window
        ms = self.spatial(x)  # M_s: (N, 1, H, W)
        att = mc * ms if self.combine == "mul" else mc + ms  # (N, C, H, W)
        return x * (1 + self.gate(att))


def _build(depth: int, attention: str, *, num_classes: int, global_pool: str) -> AttnResNet:
    block, layers = _DEPTHS[depth]
    model = AttnResNet(block, layers, num_classes=num_classes, global_pool=global_pool)
    if attention == "cbam":
        insert(model, "cbam")  # CBAM(C, r 16) on bn2 / bn3's output, before the add, in every block
    elif attention == "triplet":
        insert(model, "triplet")  # TripletAttention (k 7) at the same site
    else:
        insert(model, JongchanBAM, placement="stage")  # BAM(C, r 16) on layer1/2/3's outputs
    return model.eval()


# --- official key maps ------------------------------------------------------------------------------------------

_BLOCK_KEY = re.compile(r"^(layer\d\.\d+)\.(\w+?)\.(.+)$")
_BAM_KEY = re.compile(r"^bam([123])\.(.+)$")


def _module_key_map(name: str, **kwargs: Any) -> KeyMap:
    """The key map of the attention module's own official converter (``plugattn.from_official(name)``)."""
    return _official.official_converter(name, **kwargs)[1]


def _key_map(depth: int, attention: str) -> KeyMap:
    """Official ``ResidualNet`` keys → ours (torchvision's, with ``insert``'s wrapping of the last BN)."""
    last_bn = "bn2" if _DEPTHS[depth][0] == "basic" else "bn3"
    if attention == "bam":
        bam_map = _module_key_map("bam", gate_channel=64)

        def bam_keys(key: str) -> str | None:
            m = _BAM_KEY.match(key)
            if m is None:
                return key  # the trunk: torchvision's names
            inner = bam_map(m.group(2))
            return None if inner is None else f"layer{m.group(1)}.attn.{inner}"

        return bam_keys

    official_attr = "cbam" if attention == "cbam" else "triplet_attention"
    attn_map = (_module_key_map("cbam", gate_channels=64) if attention == "cbam"
                else _module_key_map("triplet_models", gate_channels=64))

    def block_keys(key: str) -> str | None:
        m = _BLOCK_KEY.match(key)
        if m is None:
            return key
        block, child, rest = m.groups()
        if child == official_attr:
            inner = attn_map(rest)
            return None if inner is None else f"{block}.{last_bn}.attn.{inner}"
        if child == last_bn:
            return f"{block}.{last_bn}.module.{rest}"
        return key

    return block_keys


# --- registered networks ----------------------------------------------------------------------------------------

_ATTENTION = {
    "cbam": ("CBAM: Convolutional Block Attention Module", "https://arxiv.org/abs/1807.06521",
             "Jongchan/attention-module @ 459efad0e05ee7dde50c41ca10a3d0800bc3792a, MODELS/model_resnet.py, "
             "ResidualNet('ImageNet', {depth}, 1000, 'CBAM')"),
    "bam": ("BAM: Bottleneck Attention Module", "https://arxiv.org/abs/1807.06514",
            "Jongchan/attention-module @ 459efad0e05ee7dde50c41ca10a3d0800bc3792a, MODELS/model_resnet.py, "
            "ResidualNet('ImageNet', {depth}, 1000, 'BAM')"),
    "triplet": ("Rotate to Attend: Convolutional Triplet Attention Module", "https://arxiv.org/abs/2010.03045",
                "landskape-ai/triplet-attention @ 2cf02fb91196408ac6352f7984a0336aa4f7677a, MODELS/resnet.py, "
                "ResidualNet('ImageNet', {depth}, 1000, 'TripletAttention')"),
}


def _meta(attention: str, depth: int) -> dict[str, Any]:
    paper, url, source = _ATTENTION[attention]
    return {"paper": paper, "url": url, "official": source.format(depth=depth), "task": "classification",
            "input_size": (3, 224, 224), "num_classes": 1000}


def _converter(depth: int, attention: str) -> Callable[..., tuple[nn.Module, KeyMap]]:
    def convert(num_classes: int = 1000) -> tuple[nn.Module, KeyMap]:
        """The official ``ResidualNet('ImageNet', depth, num_classes, att_type)`` (default: 1000 classes)."""
        return _build(depth, attention, num_classes=num_classes, global_pool="avg7"), _key_map(depth, attention)

    return convert


for _att in ("cbam", "bam", "triplet"):
    for _depth in _DEPTHS:
        official(f"{_att}_resnet{_depth}")(_converter(_depth, _att))


_DOC = """{title}-{depth}: the official ``ResidualNet('ImageNet', {depth}, num_classes, '{att}')``.

    torchvision's ResNet-{depth} with {where}, and the official ``nn.AvgPool2d(7)`` head (module docstring).
    Output: logits (N, num_classes). Official parameters at 1000 classes: {params:,}.

    Args:
        num_classes: classifier outputs (0: none). Default: 1000.
        global_pool: ``"avg7"`` (official; 193–224 px inputs) or ``"avg"`` (the global mean, any size).
    """

_WHERE = {
    "cbam": "CBAM (r 16, avg + max pools, 7×7 spatial gate) on the last BN's output, before the add, in every block",
    "bam": "BAM (r 16, dilation 4) between stages, on the outputs of layer1, layer2 and layer3",
    "triplet": "Triplet Attention (k 7) on the last BN's output, before the add, in every block",
}
_TITLE = {"cbam": "CBAM-ResNet", "bam": "BAM-ResNet", "triplet": "Triplet-Attention ResNet"}
_OFFICIAL_ATT = {"cbam": "CBAM", "bam": "BAM", "triplet": "TripletAttention"}

# official parameter counts at 1000 classes (the 50s: NETWORKS.md §0; the others: the official factories)
OFFICIAL_PARAMS = {
    "cbam_resnet18": 11_779_392, "cbam_resnet34": 21_960_468, "cbam_resnet50": 28_089_624,
    "cbam_resnet101": 49_330_172,
    "bam_resnet18": 11_712_503, "bam_resnet34": 21_820_663, "bam_resnet50": 25_915_099,
    "bam_resnet101": 44_907_227,
    "triplet_resnet18": 11_691_912, "triplet_resnet34": 21_802_472, "triplet_resnet50": 25_561_832,
    "triplet_resnet101": 44_559_060,
}


def _factory(attention: str, depth: int) -> Callable[..., nn.Module]:
    def build(*, num_classes: int = 1000, global_pool: str = "avg7") -> nn.Module:
        return _build(depth, attention, num_classes=num_classes, global_pool=global_pool)

    key = f"{attention}_resnet{depth}"
    build.__name__ = build.__qualname__ = key
    build.__doc__ = _DOC.format(title=_TITLE[attention], depth=depth, att=_OFFICIAL_ATT[attention],
                                where=_WHERE[attention], params=OFFICIAL_PARAMS[key])
    return register_model(key, **_meta(attention, depth))(build)


cbam_resnet18 = _factory("cbam", 18)
cbam_resnet34 = _factory("cbam", 34)
cbam_resnet50 = _factory("cbam", 50)
cbam_resnet101 = _factory("cbam", 101)
bam_resnet18 = _factory("bam", 18)
bam_resnet34 = _factory("bam", 34)
bam_resnet50 = _factory("bam", 50)
bam_resnet101 = _factory("bam", 101)
triplet_resnet18 = _factory("triplet", 18)
triplet_resnet34 = _factory("triplet", 34)
triplet_resnet50 = _factory("triplet", 50)
triplet_resnet101 = _factory("triplet", 101)
