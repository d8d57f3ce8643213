"""The compare backbone: a CIFAR-style ResNet whose residual blocks take the attention module as ``attn_layer``.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2 (the CIFAR-10
networks: a 3×3 stem, three stages of basic blocks at widths w, 2w, 4w with strides 1, 2, 2, global average
pooling and one linear layer). The attention module sits where SE-ResNet puts it (Hu et al. 2018, Fig. 3):
on the residual branch after the second BN, before the addition, and is built as ``attn_layer(channels)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .. import registry

__all__ = ["BasicBlock", "ResNet", "resolve_attn", "parse_compose", "compose_arg", "init_convs_", "resnet"]

AttnSpec = str | dict | type[nn.Module] | Callable[[int], nn.Module] | None


COMPOSE_PREFIX = "compose:"
_CONSTANTS = {"true": True, "false": False, "none": None}


def parse_compose(text: str) -> dict:
    """``"compose:squeeze=avg+max,merge=shared,excite_kw.kernel_size=5"`` → the keywords of :func:`plugattn.compose`.

    ``key=value`` pairs after ``compose:``, comma-separated; ``a.b=v`` sets ``a={"b": v}``; integer and float
    values are converted, and ``True``/``False``/``None`` (any case) become Python's. This is how
    ``plugattn compare -m`` names a point of the design space.

    Examples:
        >>> parse_compose("compose:squeeze=cluster,excite_kw.rd_ratio=0.25")
        {'squeeze': 'cluster', 'excite_kw': {'rd_ratio': 0.25}}
    """
    if not text.startswith(COMPOSE_PREFIX):
        raise ValueError(f"a compose spec starts with {COMPOSE_PREFIX!r}, got {text!r}")
    spec: dict = {}
    for item in filter(None, text[len(COMPOSE_PREFIX):].split(",")):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"compose spec {text!r}: {item!r} is not key=value")
        value: int | float | str | bool | None = _CONSTANTS.get(raw.lower(), raw)
        for conv in (int, float) if value is raw else ():
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
        outer, _, inner = key.partition(".")
        if inner:
            spec.setdefault(outer, {})[inner] = value
        else:
            spec[key] = value
    return spec


def compose_arg(spec: dict) -> str:
    """The ``"compose:..."`` text of :func:`plugattn.compose` keywords, the inverse of :func:`parse_compose`.

    Examples:
        >>> compose_arg({"squeeze": "cluster", "excite_kw": {"rd_ratio": 0.25, "bias": False}})
        'compose:squeeze=cluster,excite_kw.rd_ratio=0.25,excite_kw.bias=False'
    """
    items = []
    for key, value in spec.items():
        pairs = [(f"{key}.{k}", v) for k, v in value.items()] if isinstance(value, dict) else [(key, value)]
        for name, v in pairs:
            if not isinstance(v, str | int | float | bool | None) or any(c in str(v) for c in ",="):
                raise ValueError(f"compose_arg: {name}={v!r} cannot be written as a compose spec (a name, number, "
                                 f"bool or None without ',' or '=')")
            items.append(f"{name}={v}")
    return COMPOSE_PREFIX + ",".join(items)


def resolve_attn(attn_layer: AttnSpec) -> Callable[[int], nn.Module] | None:
    """The attention factory for a spec: None, a registry name, a compose spec (dict) or a class/factory.

    ``None``/``"none"``/``"baseline"`` → no attention; a registry name → its class; a dict (or a
    ``"compose:..."`` string, :func:`parse_compose`) → the :func:`plugattn.compose` call with those keywords (a point
    of the design space); a class/factory as is.
    """
    if attn_layer is None:
        return None
    if isinstance(attn_layer, str) and attn_layer.startswith(COMPOSE_PREFIX):
        attn_layer = parse_compose(attn_layer)
    if isinstance(attn_layer, dict):
        from ..space import compose

        return functools.partial(compose, **attn_layer)
    if isinstance(attn_layer, str):
        if attn_layer.lower() in ("none", "baseline", ""):
            return None
        return registry.get(attn_layer)
    if isinstance(attn_layer, nn.Module):
        raise TypeError(f"attn_layer must be a registry name, a class or a factory, not a module instance "
                        f"({attn_layer!r})")
    if not callable(attn_layer):
        raise TypeError(f"attn_layer must be a registry name, a class or a factory, got {type(attn_layer).__name__}")
    return attn_layer


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN → attention → + shortcut → ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels (the attention module is built for these).
        stride: stride of the first conv (and of the 1×1 projection shortcut when shapes change).
        dilation: dilation (and padding) of both 3×3 convs (the segmentation encoder's last stage). Default: 1.
        attn_layer: attention class, factory or registry name, built as ``attn_layer(out_channels)``;
            ``None`` for a plain block.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, dilation: int = 1,
                 attn_layer: AttnSpec = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        factory = resolve_attn(attn_layer)
        self.attn = nn.Identity() if factory is None else factory(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: stem, three stages of :class:`BasicBlock`, global average pooling, linear classifier.

    Args:
        num_classes: output classes.
        in_channels: image channels (1 for Fashion-MNIST, 3 for CIFAR-10).
        widths: channels of the three stages (paper: 16, 32, 64).
        depth: blocks per stage (paper: n = 3 for ResNet-20; here 1 by default, ResNet-8, for CPU speed).
        stem_stride: stride of the stem conv (1 as in the paper; 2 quarters the compute).
        attn_layer: attention module for every block (see :class:`BasicBlock`).

    Shape:
        (N, in_channels, H, W) → (N, num_classes).

    Examples:
        >>> m = ResNet(10, in_channels=1, attn_layer="se")
        >>> m(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        depth: int = 1,
        stem_stride: int = 1,
        attn_layer: AttnSpec = None,
    ) -> None:
        super().__init__()
        if len(widths) < 1 or any(int(w) < 1 for w in widths) or depth < 1:
            raise ValueError(f"ResNet: widths must be positive ints and depth >= 1, got widths={widths!r} "
                             f"depth={depth!r}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False), nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True)
        )
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for i, w in enumerate(widths):
            for j in range(depth):
                blocks.append(BasicBlock(c_in, w, 2 if (i > 0 and j == 0) else 1, attn_layer=attn_layer))
                c_in = w
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs (fan_out), unit BN, and the attention modules' own initialisation."""
        init_convs_(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def init_convs_(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) init of every conv of ``model`` outside the blocks' attention modules, in place.

    The attention modules keep their own initialisation (e.g. a zero-initialised residual scale).
    """
    inside = {id(m) for b in model.modules() if isinstance(b, BasicBlock) for m in b.attn.modules()}
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in inside:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def resnet(
    attn_layer: AttnSpec = None, *, num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64),
    depth: int = 1, stem_stride: int = 1,
) -> ResNet:
    """Build the compare backbone (see :class:`ResNet`)."""
    return ResNet(num_classes, in_channels=in_channels, widths=widths, depth=depth, stem_stride=stem_stride,
                  attn_layer=attn_layer)
