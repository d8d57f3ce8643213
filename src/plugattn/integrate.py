"""``insert()``: plug an attention module into an existing torchvision or timm network.

Where it goes. By default one module goes into every *residual* block, on the output of the residual
branch, just before the residual addition (after the branch's last norm and, for ConvNeXt, after its layer
scale; before drop-path / stochastic depth). That is where SENet puts SE and where timm's ``attn_layer``
puts it. The supported blocks and the exact spot in each:

=====================================================  =======================================================
block                                                  the attention is applied to
=====================================================  =======================================================
torchvision ``resnet.BasicBlock`` / ``Bottleneck``     the output of ``bn2`` / ``bn3`` (``bn2`` is wrapped)
torchvision ``mobilenetv2/v3.InvertedResidual``,       the projected output: appended to the ``conv`` /
``efficientnet.MBConv`` / ``FusedMBConv``              ``block`` Sequential as child ``attn``
torchvision ``convnext.CNBlock``                       ``layer_scale * block(x)``: runs before ``stochastic_depth``
torchvision ``regnet.ResBottleneckBlock``              the output of ``f`` (appended to it as child ``attn``)
timm ``resnet.BasicBlock`` / ``Bottleneck``            the output of ``bn2`` / ``bn3``: timm's own ``se`` slot
timm ``DepthwiseSeparableConv``, ``InvertedResidual``  the projected output (``bn2`` / ``bn3`` / layer scale):
(incl. ``CondConvResidual``), ``EdgeResidual``,        runs before ``drop_path``
``UniversalInvertedResidual``
timm ``convnext.ConvNeXtBlock``                        the output after ``gamma``: runs before ``drop_path``
timm ``regnet.Bottleneck``                             the output of ``conv3``: runs before ``drop_path``
=====================================================  =======================================================

MobileNet / EfficientNet blocks without a residual connection (stride 2 or a width change) are skipped by
the default placement; name them in ``where`` to give them one too (it then goes on their projected output).

Other placements, as the papers place their modules (``insert(..., placement=...)``):

- ``"stage"`` (BAM): one module on the output of each stage, appended to the stage ``nn.Sequential`` as child
  ``attn`` (no existing key changes; the next stage sees the attended map). Found automatically in any module
  whose children ``layer1`` … ``layerN`` are Sequentials (torchvision and timm ResNet / ResNeXt): ``layer1`` …
  ``layer{N-1}``, none after the last stage, as BAM does. ``where`` names other stages (any ``nn.Sequential``).
  The channel count is that of the stage's last block.
- ``"expanded"`` (Coordinate Attention's CA-MobileNetV2, MobileNetV3's SE site): inside each inverted residual that
  has a 1×1 expansion layer, on the output of the depthwise conv-BN-act (the expanded channels), before the 1×1
  projection. Blocks without an expansion layer (t = 1: MobileNetV2's first block, timm's
  ``DepthwiseSeparableConv``) get none, as in the official ``mbv2_ca``; name them in ``where`` to give them one.
  torchvision ``mobilenetv2/v3.InvertedResidual`` and ``efficientnet.MBConv``: the depthwise Conv-BN-act is wrapped
  in :class:`Inserted` (``conv.1.0.weight`` becomes ``conv.1.module.0.weight``; old keys still load); timm
  ``InvertedResidual`` / ``DepthwiseSeparableConv``: the module goes after ``bn2`` / ``bn1`` by wrapping the
  parameter-free ``aa`` slot (no key changes). A block's own SE, if any, follows the inserted module.
- ``"replace"`` (SKNet): the spatial conv of each residual block and its norm are replaced, ``conv2`` by
  ``name(in_channels, out_channels=C_out, stride=s, groups=g, **kwargs)`` (plus ``dilation=d`` for a dilated
  conv; ``groups`` may be overridden in ``kwargs``) and ``bn2`` by ``nn.Identity`` (the module brings its own
  norm), in torchvision and timm ``BasicBlock`` / ``Bottleneck``. Only convolution replacements take those
  arguments (``"sk"``); ``conv2``'s keys are replaced by the module's. It cannot start as the identity, so
  ``zero_init`` is refused.

``where`` is a list of module paths (``"layer1.0"``, ``"features.3"``) or a predicate ``(path, module) ->
bool`` over ``model.named_modules()``. A selected module that is one of the blocks above gets the block rule
(whether or not it has a residual connection); any other module gets the attention on its output (it is
wrapped in :class:`Inserted`). The channel count is read from the module before the insertion point
(``num_features`` of a norm, ``out_channels`` of a conv).

State-dict keys. Existing keys never change where the block has a free slot (timm's ``se``, a Sequential to
append to, a parameter-free drop-path); torchvision ResNet's ``bn2``/``bn3`` and user-named modules are
wrapped (``bn2.weight`` becomes ``bn2.module.weight``) and the wrapper still loads state_dicts saved with the
old keys, so ``model.load_state_dict(pretrained, strict=False)`` works after insertion too.

``zero_init=True``. Every inserted module starts as the exact identity, so a pretrained network computes
bit-for-bit the same outputs right after insertion. A module that already is the identity when built (DANet's
modules, whose scale γ starts at 0) is inserted as it is and learns through γ; any other module is wrapped in
:class:`ZeroInit`, ``y = x + α (attn(x) − x)`` with a learnable scalar α = 0 (ReZero-style). Both learn: the
gradient of γ or α is nonzero from the first step (a product of two zero scales would never learn, which is
why modules that are already the identity are not wrapped).

Report. :func:`insert` returns the model; :func:`inserted(model) <inserted>` lists what was inserted (one
:class:`Insertion` per module: path, site, channels, class), over every call. Nothing is logged.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
import torch.nn as nn
from torch import Tensor

from . import registry

__all__ = ["insert", "inserted", "supported_blocks", "PLACEMENTS", "Insertion", "Inserted", "ZeroInit"]

Where = Union[None, str, Sequence[str], Callable[[str, nn.Module], bool]]
_INSERTIONS_ATTR = "_plugattn_insertions"  # the model attribute listing its insertions (see insert, inserted)


@dataclass(frozen=True)
class Insertion:
    """One inserted attention module.

    Attributes:
        path: dotted path of the attention module in the model (``model.get_submodule(path)``); with
            ``zero_init`` wrapping, the :class:`ZeroInit` wrapper's path; with ``placement="replace"``, the
            replaced conv's path (``layer1.0.conv2``).
        site: path of the block, stage (``placement="stage"``) or named module it was placed in or after.
        channels: the channel count it was built for.
        name: registry key (or the class name when a class or factory was given).
        cls: the attention module's class.
        wrapped: whether it sits in a :class:`ZeroInit` wrapper.
    """

    path: str
    site: str
    channels: int
    name: str
    cls: type
    wrapped: bool


class Inserted(nn.Module):
    """An existing ``module`` with an attention module ``attn`` applied after it (or before, ``attn_first``).

    Loading a state_dict saved before the insertion (``bn2.weight`` rather than ``bn2.module.weight``) works:
    keys of the wrapped module are renamed on load.
    """

    def __init__(self, module: nn.Module, attn: nn.Module, *, attn_first: bool = False) -> None:
        super().__init__()
        self.module = module
        self.attn = attn
        self.attn_first = attn_first

    def forward(self, x: Tensor) -> Tensor:
        if self.attn_first:
            return self.module(self.attn(x))
        return self.attn(self.module(x))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # noqa: D401  (nn.Module hook)
        own = set(self.module.state_dict().keys())
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            if rest in own and not rest.startswith(("module.", "attn.")):
                state_dict[prefix + "module." + rest] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class ZeroInit(nn.Module):
    r"""Starts an attention module as the exact identity: :math:`y = x + \alpha\,(\mathrm{attn}(x) - x)`, α = 0.

    With α = 0 the output is ``x`` bit for bit (``0 · finite = 0``, ``x + 0 = x``); ∂L/∂α =
    Σ ∂L/∂y · (attn(x) − x) is nonzero, so α and then the module learn.

    Args:
        attn: the attention module (shape-preserving).
        device, dtype: of α.
    """

    def __init__(self, attn: nn.Module, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.attn = attn
        self.alpha = nn.Parameter(torch.zeros(1, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.alpha.to(x.dtype) * (self.attn(x) - x)


# ---------------------------------------------------------------------------------------------------------
# block rules


@dataclass(frozen=True)
class _Rule:
    module: str  # import path of the block's module
    cls: str  # class name
    default: Callable[[nn.Module], bool]  # whether the block is a site when where is None (residual, expanding)
    channels: Callable[[nn.Module], int]  # the channel count the module is built for
    attach: Callable[[nn.Module, nn.Module], str]  # puts attn in the block, returns its path relative to it
    conv: str = ""  # "replace" only: the block's spatial conv, replaced (with its norm) by the module

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.cls}"


def _always(block: nn.Module) -> bool:
    return True


def _never(block: nn.Module) -> bool:
    return False


def _attr(name: str) -> Callable[[nn.Module], bool]:
    return lambda block: bool(getattr(block, name))


def _channels_of(path: str) -> Callable[[nn.Module], int]:
    def fn(block: nn.Module) -> int:
        c = _infer_channels(block.get_submodule(path))
        if c is None:
            raise ValueError(f"insert: cannot read the channel count of {type(block).__name__}.{path}")
        return c

    return fn


def _wrap(child: str, *, attn_first: bool = False) -> Callable[[nn.Module, nn.Module], str]:
    """Wrap ``block.<child>`` in :class:`Inserted`."""

    def fn(block: nn.Module, attn: nn.Module) -> str:
        parent, _, name = child.rpartition(".")
        owner = block.get_submodule(parent) if parent else block
        setattr(owner, name, Inserted(getattr(owner, name), attn, attn_first=attn_first))
        return f"{child}.attn"

    return fn


def _append(child: str) -> Callable[[nn.Module, nn.Module], str]:
    """Append to the Sequential ``block.<child>`` as child ``attn`` (no existing key changes)."""

    def fn(block: nn.Module, attn: nn.Module) -> str:
        seq = block.get_submodule(child)
        name = "attn"
        i = 1
        while name in seq._modules:
            i += 1
            name = f"attn{i}"
        seq.add_module(name, attn)
        return f"{child}.{name}"

    return fn


def _timm_se_slot(last: str) -> Callable[[nn.Module, nn.Module], str]:
    """Timm ResNet blocks apply ``self.se`` (None by default) right after the last norm."""

    def fn(block: nn.Module, attn: nn.Module) -> str:
        if getattr(block, "se", None) is None:
            block.se = attn
            return "se"
        return _wrap("se")(block, attn)

    return fn


def _timm_effnet(last: str) -> Callable[[nn.Module, nn.Module], str]:
    """Timm EfficientNet blocks: before ``drop_path`` when there is a skip (no key changes), else after ``last``."""

    def fn(block: nn.Module, attn: nn.Module) -> str:
        if getattr(block, "has_skip", False):
            return _wrap("drop_path", attn_first=True)(block, attn)
        return _wrap(last)(block, attn)

    return fn


_TV = "torchvision.models"
_TIMM = "timm.models"
_RULES: tuple[_Rule, ...] = (
    _Rule(f"{_TV}.resnet", "BasicBlock", _always, _channels_of("bn2"), _wrap("bn2")),
    _Rule(f"{_TV}.resnet", "Bottleneck", _always, _channels_of("bn3"), _wrap("bn3")),
    _Rule(f"{_TV}.mobilenetv2", "InvertedResidual", _attr("use_res_connect"), _channels_of("conv"), _append("conv")),
    _Rule(f"{_TV}.mobilenetv3", "InvertedResidual", _attr("use_res_connect"), _channels_of("block"),
          _append("block")),
    _Rule(f"{_TV}.efficientnet", "MBConv", _attr("use_res_connect"), _channels_of("block"), _append("block")),
    _Rule(f"{_TV}.efficientnet", "FusedMBConv", _attr("use_res_connect"), _channels_of("block"), _append("block")),
    _Rule(f"{_TV}.convnext", "CNBlock", _always, _channels_of("block.0"), _wrap("stochastic_depth", attn_first=True)),
    _Rule(f"{_TV}.regnet", "ResBottleneckBlock", _always, _channels_of("f"), _append("f")),
    _Rule(f"{_TIMM}.resnet", "BasicBlock", _always, _channels_of("bn2"), _timm_se_slot("bn2")),
    _Rule(f"{_TIMM}.resnet", "Bottleneck", _always, _channels_of("bn3"), _timm_se_slot("bn3")),
    _Rule(f"{_TIMM}._efficientnet_blocks", "DepthwiseSeparableConv", _attr("has_skip"), _channels_of("bn2"),
          _timm_effnet("bn2")),
    _Rule(f"{_TIMM}._efficientnet_blocks", "InvertedResidual", _attr("has_skip"), _channels_of("bn3"),
          _timm_effnet("bn3")),
    _Rule(f"{_TIMM}._efficientnet_blocks", "EdgeResidual", _attr("has_skip"), _channels_of("bn2"),
          _timm_effnet("bn2")),
    _Rule(f"{_TIMM}._efficientnet_blocks", "UniversalInvertedResidual", _attr("has_skip"), _channels_of("pw_proj"),
          _timm_effnet("layer_scale")),
    _Rule(f"{_TIMM}.convnext", "ConvNeXtBlock", _always, _channels_of("conv_dw"),
          _wrap("drop_path", attn_first=True)),
    _Rule(f"{_TIMM}.regnet", "Bottleneck", _always, _channels_of("conv3"), _wrap("drop_path", attn_first=True)),
)


# "expanded": on the output of the depthwise conv (+ norm + act) of an inverted residual, before the projection


def _depthwise_index(seq: nn.Module) -> int:
    """Index of the depthwise conv (+ norm + act) among the children of a block's Sequential."""
    for i, child in enumerate(seq.children()):
        conv = next((m for m in child.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is not None and conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels:
            return i
    raise ValueError(f"insert: found no depthwise conv in {type(seq).__name__} {list(seq._modules)}")


def _tv_expanding(seq: str) -> Callable[[nn.Module], bool]:
    """Torchvision inverted residuals have a 1×1 expansion before the depthwise conv unless t = 1."""
    return lambda block: _depthwise_index(block.get_submodule(seq)) > 0


def _tv_depthwise_channels(seq: str) -> Callable[[nn.Module], int]:
    def fn(block: nn.Module) -> int:
        owner = block.get_submodule(seq)
        return _channels_of(str(_depthwise_index(owner)))(owner)

    return fn


def _tv_after_depthwise(seq: str) -> Callable[[nn.Module, nn.Module], str]:
    """Wrap the depthwise Conv-BN-act ``block.<seq>.<i>`` (torchvision MobileNetV2/V3, EfficientNet's MBConv)."""

    def fn(block: nn.Module, attn: nn.Module) -> str:
        return _wrap(f"{seq}.{_depthwise_index(block.get_submodule(seq))}")(block, attn)

    return fn


_EXPANDED_RULES: tuple[_Rule, ...] = (
    _Rule(f"{_TV}.mobilenetv2", "InvertedResidual", _tv_expanding("conv"), _tv_depthwise_channels("conv"),
          _tv_after_depthwise("conv")),
    _Rule(f"{_TV}.mobilenetv3", "InvertedResidual", _tv_expanding("block"), _tv_depthwise_channels("block"),
          _tv_after_depthwise("block")),
    _Rule(f"{_TV}.efficientnet", "MBConv", _tv_expanding("block"), _tv_depthwise_channels("block"),
          _tv_after_depthwise("block")),
    # timm: bn2 / bn1 (BatchNormAct2d) ends the depthwise conv-BN-act; ``aa`` (identity without anti-aliasing)
    # follows it, then ``se``: the module wraps ``aa``, so no existing key changes.
    _Rule(f"{_TIMM}._efficientnet_blocks", "InvertedResidual", _always, _channels_of("conv_dw"), _wrap("aa")),
    _Rule(f"{_TIMM}._efficientnet_blocks", "DepthwiseSeparableConv", _never, _channels_of("conv_dw"), _wrap("aa")),
)


# "replace": the block's spatial conv and its norm are replaced by factory(in, out_channels=, stride=, groups=)


def _replace(conv: str, norm: str) -> Callable[[nn.Module, nn.Module], str]:
    def fn(block: nn.Module, module: nn.Module) -> str:
        setattr(block, conv, module)
        setattr(block, norm, nn.Identity())
        return conv

    return fn


def _conv_in(conv: str) -> Callable[[nn.Module], int]:
    return lambda block: int(getattr(block, conv).in_channels)


_REPLACE_RULES: tuple[_Rule, ...] = (
    _Rule(f"{_TV}.resnet", "BasicBlock", _always, _conv_in("conv2"), _replace("conv2", "bn2"), "conv2"),
    _Rule(f"{_TV}.resnet", "Bottleneck", _always, _conv_in("conv2"), _replace("conv2", "bn2"), "conv2"),
    _Rule(f"{_TIMM}.resnet", "BasicBlock", _always, _conv_in("conv2"), _replace("conv2", "bn2"), "conv2"),
    _Rule(f"{_TIMM}.resnet", "Bottleneck", _always, _conv_in("conv2"), _replace("conv2", "bn2"), "conv2"),
)

_PLACEMENT_RULES: dict[str, tuple[_Rule, ...]] = {"block": _RULES, "expanded": _EXPANDED_RULES,
                                                  "replace": _REPLACE_RULES}
PLACEMENTS = ("block", "stage", "expanded", "replace")
_STAGE_SITES = "children layer1, layer2, … that are nn.Sequential (torchvision / timm ResNet, ResNeXt, Wide ResNet)"


def supported_blocks(placement: str = "block") -> list[str]:
    """Qualified names of the block classes a placement knows (whether or not their library is installed).

    Args:
        placement: ``"block"`` (the default placement), ``"expanded"`` or ``"replace"``; ``"stage"`` finds
            stages by name, not by block class (see :func:`insert`).
    """
    if placement not in _PLACEMENT_RULES:
        raise ValueError(f"supported_blocks: placement must be one of {list(_PLACEMENT_RULES)}, got {placement!r}"
                         + (f"; 'stage' finds {_STAGE_SITES}" if placement == "stage" else ""))
    return [r.qualname for r in _PLACEMENT_RULES[placement]]


def _resolved_rules(rules: Sequence[_Rule] = _RULES) -> list[tuple[type, _Rule]]:
    """(class, rule) for every rule whose library is importable; subclasses match the most specific rule."""
    out = []
    for rule in rules:
        try:
            mod = importlib.import_module(rule.module)
        except ImportError:
            continue
        cls = getattr(mod, rule.cls, None)
        if isinstance(cls, type):
            out.append((cls, rule))
    return out


def _rule_for(module: nn.Module, rules: list[tuple[type, _Rule]]) -> _Rule | None:
    best = None
    for cls, rule in rules:
        if isinstance(module, cls) and (best is None or issubclass(cls, best[0])):
            best = (cls, rule)
    return best[1] if best else None


def _infer_channels(module: nn.Module) -> int | None:
    """Channels of ``module``'s output, read from its attributes, else from its last child that has them."""
    for attr in ("num_features", "num_channels", "out_channels", "channels"):
        v = getattr(module, attr, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    for child in reversed(list(module.children())):
        c = _infer_channels(child)
        if c is not None:
            return c
    return None


def _factory_kwargs(module: nn.Module) -> dict[str, Any]:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return {"device": t.device, "dtype": t.dtype}
    return {}


@torch.no_grad()
def _is_identity(attn: nn.Module, channels: int, fk: dict[str, Any]) -> bool:
    """Whether the freshly built module returns its input exactly (DANet's γ = 0), probed in eval mode."""
    was_training = attn.training
    attn.eval()
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, channels, 5, 6, generator=g).to(**fk) if fk else torch.randn(2, channels, 5, 6, generator=g)
        y = attn(x)
        return isinstance(y, Tensor) and y.shape == x.shape and torch.equal(y, x)
    finally:
        attn.train(was_training)


def _build(factory: Callable[..., nn.Module], channels: int, kwargs: dict[str, Any], fk: dict[str, Any]) -> nn.Module:
    """``factory(channels, **kwargs)`` on the device/dtype ``fk`` of the insertion site."""
    try:
        params = inspect.signature(factory).parameters
        accepts = {"device", "dtype"} <= set(params) or any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        accepts = False
    if accepts:
        return factory(channels, **{**fk, **kwargs})
    module = factory(channels, **kwargs)
    return module.to(**fk) if fk else module


def inserted(model: nn.Module) -> list[Insertion]:
    """What :func:`insert` put into ``model`` (every call), in model order; empty if nothing.

    Paths are read at call time (by module identity), so they stay right when a later insertion wraps an
    earlier one; modules removed from the model since are left out.
    """
    records = getattr(model, _INSERTIONS_ATTR, [])
    paths = {id(mod): (i, p) for i, (p, mod) in enumerate(model.named_modules())}
    found = sorted(((paths[id(m)], rec) for m, rec in records if id(m) in paths), key=lambda t: t[0][0])
    return [dataclasses.replace(rec, path=p) for (_, p), rec in found]


def _factory_of(name: str | Callable[..., nn.Module], placement: str) -> tuple[Callable[..., nn.Module], str]:
    """The constructor and the report label of ``name``, checked for ``placement``."""
    if isinstance(name, str):
        meta = registry.info(name)
        if placement == "replace":
            if not _replaces_conv(meta.cls):
                raise ValueError(f"insert: placement='replace' puts a convolution in place of the block's spatial "
                                 f"conv, built as f(in_channels, out_channels=, stride=, groups=); module {name!r} is "
                                 f"not one. Conv replacements: {', '.join(_conv_replacements())}")
        elif not meta.preserves_shape:
            raise ValueError(f"insert: module {name!r} changes the shape of its input (a {meta.kind}); only "
                             f"shape-preserving modules can be inserted into a network")
        return meta.cls, name
    if callable(name):
        if placement == "replace" and not _replaces_conv(name):
            raise ValueError(f"insert: placement='replace' needs a factory f(in_channels, *, out_channels, stride, "
                             f"groups, **kwargs); {getattr(name, '__name__', name)!r} takes no out_channels and "
                             f"stride. Registered conv replacements: {', '.join(_conv_replacements())}")
        return name, getattr(name, "__name__", type(name).__name__)
    raise TypeError(f"insert: name must be a registry key or a module class/factory, got {type(name).__name__}")


def _replaces_conv(factory: Callable[..., nn.Module]) -> bool:
    """Whether ``factory`` takes ``out_channels`` and ``stride`` (or ``**kwargs``): a convolution's replacement."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True  # cannot tell: building it will
    return {"out_channels", "stride"} <= set(params) or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _conv_replacements() -> list[str]:
    return [n for n in registry.list_modules() if _replaces_conv(registry.info(n).cls)]


def _stage_channels(stage: nn.Module, rules: list[tuple[type, _Rule]], done: set[int]) -> int | None:
    """Output channels of a stage: those of its last block that is not an inserted module."""
    for child in reversed(list(stage.children())):
        if id(child) in done:
            continue
        rule = _rule_for(child, rules)
        return rule.channels(child) if rule is not None else _infer_channels(child)
    return None


def _auto_stages(modules: dict[str, nn.Module], skip: tuple[str, ...]) -> list[str]:
    """``layer1`` … ``layer{N-1}`` of every module whose children ``layer1`` … ``layerN`` are Sequentials (N ≥ 2)."""
    out = []
    for path, m in modules.items():
        if (path + ".").startswith(skip):
            continue
        names: list[str] = []
        while isinstance(m._modules.get(f"layer{len(names) + 1}"), nn.Sequential):
            names.append(f"layer{len(names) + 1}")
        if len(names) >= 2:
            out += [f"{path}.{n}" if path else n for n in names[:-1]]  # none after the last stage (BAM)
    return out


def _select(modules: dict[str, nn.Module], where: Where, skip: tuple[str, ...]) -> list[str]:
    """The paths ``where`` names (checked to exist), or that its predicate accepts; never under an inserted module."""
    if isinstance(where, str):
        where = [where]
    if callable(where):
        return [p for p, m in modules.items() if p and not (p + ".").startswith(skip) and where(p, m)]
    if isinstance(where, Sequence) and all(isinstance(p, str) for p in where):
        missing = [p for p in where if p not in modules]
        if missing:
            raise ValueError(f"insert: where names modules that are not in the model: {missing}")
        if "" in where:
            raise ValueError("insert: where cannot select the model itself (path '')")
        inside = [p for p in where if (p + ".").startswith(skip)]
        if inside:
            raise ValueError(f"insert: where names modules inside inserted modules: {inside}")
        return list(dict.fromkeys(where))
    raise TypeError("insert: where must be None, a module path, a list of paths or a predicate(path, module)")


_Site = tuple[str, nn.Module, Union[_Rule, None]]


def _sites(model: nn.Module, placement: str, where: Where, previous: list[Insertion]) -> list[_Site]:
    """(path, module, rule) of every site of ``placement`` in ``model`` that ``where`` selects."""
    skip = tuple(i.path + "." for i in previous)  # never insert into an inserted module
    done = {id(model.get_submodule(i.path)) for i in previous}
    modules = dict(model.named_modules())
    kind = type(model).__name__
    if placement == "block":
        rules = _resolved_rules()
        if where is None:
            found: list[_Site] = [(p, m, r) for p, m in modules.items() if not (p + ".").startswith(skip)
                                  for r in [_rule_for(m, rules)] if r is not None and r.default(m)]
            if not found:
                raise ValueError(
                    f"insert: found no supported residual block in {kind}; supported blocks: "
                    f"{', '.join(supported_blocks())}. Name positions with where=[paths] or where=predicate."
                )
            return found
        selected = _select(modules, where, skip)
        if not selected:
            raise ValueError("insert: where selected no module")
        return [(p, modules[p], _rule_for(modules[p], rules)) for p in selected]

    if placement == "stage":
        if where is None:
            paths = _auto_stages(modules, skip)
            if not paths:
                raise ValueError(f"insert: placement='stage' found no stages in {kind}: it looks for {_STAGE_SITES}; "
                                 f"name the stages (nn.Sequential modules) with where=[paths]")
        else:
            sequential: dict[str, nn.Module] = {p: m for p, m in modules.items()
                                                if isinstance(m, nn.Sequential) and id(m) not in done}
            if callable(where):
                paths = _select(sequential, where, skip)
            else:
                paths = _select(modules, where, skip)
                wrong = [f"{p!r} is a {type(modules[p]).__name__}" for p in paths if p not in sequential]
                if wrong:
                    raise ValueError(f"insert: placement='stage' appends to nn.Sequential stages; {'; '.join(wrong)}")
            if not paths:
                raise ValueError("insert: where selected no stage (an nn.Sequential module)")
        return [(p, modules[p], None) for p in paths]

    rules = _resolved_rules(_PLACEMENT_RULES[placement])

    def replaced(m: nn.Module, rule: _Rule) -> bool:  # "replace": this block's conv already is an inserted module
        return bool(rule.conv) and id(getattr(m, rule.conv)) in done

    candidates = {p: (m, r) for p, m in modules.items() if not (p + ".").startswith(skip)
                  for r in [_rule_for(m, rules)] if r is not None}
    looks_for = ", ".join(supported_blocks(placement))
    if where is None:
        sites: list[_Site] = [(p, m, r) for p, (m, r) in candidates.items() if r.default(m) and not replaced(m, r)]
        if not sites:
            what = "block with an expansion layer" if placement == "expanded" else "block with a conv to replace"
            raise ValueError(f"insert: placement={placement!r} found no {what} in {kind}; it looks for: {looks_for}"
                             + (" (blocks whose conv was replaced already are skipped)" if candidates else ""))
        return sites
    if callable(where):
        selected = [p for p in _select(modules, where, skip) if p in candidates]
    else:
        selected = _select(modules, where, skip)
        wrong = [f"{p!r} is a {type(modules[p]).__name__}" for p in selected if p not in candidates]
        if wrong:
            raise ValueError(f"insert: placement={placement!r} puts the module in blocks of these types: {looks_for}; "
                             f"{'; '.join(wrong)}")
    if not selected:
        raise ValueError(f"insert: where selected no block of placement={placement!r} (it looks for: {looks_for})")
    again = [p for p in selected if replaced(*candidates[p])]
    if again:
        raise ValueError(f"insert: the conv of {again} was replaced already")
    return [(p, *candidates[p]) for p in selected]


def _replace_kwargs(block: nn.Module, rule: _Rule, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``out_channels``, ``stride``, ``groups`` (and ``dilation`` if not 1) of the conv being replaced, + kwargs."""
    conv = getattr(block, rule.conv)
    fixed: dict[str, Any] = {"out_channels": conv.out_channels, "stride": conv.stride[0]}
    if conv.dilation[0] != 1:
        fixed["dilation"] = conv.dilation[0]
    clash = sorted(set(fixed) & set(kwargs))
    if clash:
        raise ValueError(f"insert: placement='replace' sets {clash} from the replaced conv; do not pass them")
    return {**fixed, "groups": conv.groups, **kwargs}


def insert(
    model: nn.Module,
    name: str | Callable[..., nn.Module],
    where: Where = None,
    zero_init: bool = False,
    *,
    placement: str = "block",
    **kwargs: Any,
) -> nn.Module:
    """Insert attention module ``name`` into ``model`` in place, and return ``model``.

    ``placement`` chooses the site, as the papers place their modules (details in the module docstring):

    - ``"block"`` (default): in each residual block's branch, just before the addition (SENet, CBAM, ECA).
    - ``"stage"``: on the output of each stage, appended to the stage ``nn.Sequential`` as child ``attn`` (BAM).
      ``layer1`` … ``layer3`` of a ResNet with four stages (none after the last); ``where`` names other stages.
    - ``"expanded"``: inside each inverted residual with an expansion layer, on the expanded features after the
      depthwise conv-BN-act, before the 1×1 projection (Coordinate Attention in MobileNetV2, MobileNetV3's SE).
    - ``"replace"``: in place of each residual block's spatial conv and its norm, built as
      ``name(in_channels, out_channels=…, stride=…, groups=…, **kwargs)`` (SKNet); only convolution
      replacements (``"sk"``) qualify, and ``zero_init`` does not apply (a conv cannot start as the identity).

    For example ``insert(resnet50, "bam", placement="stage")`` gives BAM-ResNet-50's 3 modules,
    ``insert(mobilenet_v2, "coord", placement="expanded")`` CA-MobileNetV2's 16 and
    ``insert(resnext50_32x4d, "sk", placement="replace")`` SKNet-50's 16 SK convolutions.

    Args:
        model: a torchvision or timm network (or any module, with ``where``).
        name: a registry key (``"se"``, ``"cbam"``, ...), or a class / factory called as ``f(channels, **kwargs)``.
        where: ``None``: every site of the placement (for ``"block"``: every residual block of a supported type,
            see :func:`supported_blocks`); a module path or list of paths; or a predicate ``(path, module) ->
            bool`` over ``model.named_modules()``. With ``"block"`` a selected supported block gets the block
            rule and any other module the attention on its output; with ``"stage"`` it names the stages (any
            ``nn.Sequential``); otherwise it selects among the placement's blocks (for ``"expanded"`` a block
            without an expansion layer may be named too).
        zero_init: start every inserted module as the exact identity (module docstring); not with ``"replace"``.
        placement: ``"block"``, ``"stage"``, ``"expanded"`` or ``"replace"``. Default: ``"block"``.
        **kwargs: passed to the attention module's constructor.

    Returns:
        ``model``, modified in place; :func:`inserted` lists the insertions.

    Raises:
        ValueError: an unknown placement; no site found (the message says which blocks the placement looks
            for); a path that is not in the model or not a site of the placement; a channel count that cannot
            be inferred; an unknown module name; a module that does not preserve the shape of its input
            (``danet_head``), or, for ``"replace"``, one that is not a convolution replacement, or ``zero_init``.
        TypeError: ``model`` is not an ``nn.Module``, or ``where`` or ``placement`` has the wrong type.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
        >>> x = torch.randn(1, 3, 9, 9)
        >>> y = net(x)
        >>> net = insert(net, "se", where=["1"], zero_init=True)  # after the BN, starting as the identity
        >>> [(i.path, i.channels, i.cls.__name__) for i in inserted(net)]
        [('1.attn', 8, 'SqueezeExcite')]
        >>> torch.equal(net(x), y)
        True

        With torchvision or timm, ``insert(torchvision.models.resnet50(weights=...), "eca", zero_init=True)``
        puts one module in each of the 16 bottleneck blocks.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"insert: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(placement, str):
        raise TypeError(f"insert: placement must be a str, one of {list(PLACEMENTS)}, got {type(placement).__name__}")
    if placement not in PLACEMENTS:
        raise ValueError(f"insert: unknown placement {placement!r}; expected one of: {', '.join(PLACEMENTS)}")
    if placement == "replace" and zero_init:
        raise ValueError("insert: zero_init=True does not apply to placement='replace': the module takes the place "
                         "of a convolution, which it cannot reproduce, so it cannot start as the identity")
    factory, label = _factory_of(name, placement)
    previous = inserted(model)
    targets = _sites(model, placement, where, previous)

    # Resolve every channel count (and conv arguments) before changing anything: a failure leaves the model as is.
    block_rules = _resolved_rules()
    done = {id(model.get_submodule(i.path)) for i in previous}
    plans = []
    for path, m, rule in targets:
        if placement == "stage":
            c = _stage_channels(m, block_rules, done)
        else:
            c = rule.channels(m) if rule is not None else _infer_channels(m)
        if c is None:
            raise ValueError(
                f"insert: cannot infer the channel count after {path!r} ({type(m).__name__}); name a module with "
                f"num_features or out_channels (a norm or conv layer) or a supported block"
            )
        args = _replace_kwargs(m, rule, kwargs) if placement == "replace" and rule is not None else kwargs
        plans.append((path, m, rule, c, args))

    # Deepest first: wrapping a module never moves a target that is still to be processed.
    order = {p: i for i, p in enumerate(dict(model.named_modules()))}
    plans.sort(key=lambda t: order[t[0]], reverse=True)
    added = []
    for path, m, rule, c, args in plans:
        fk = _factory_kwargs(m)
        try:
            attn = _build(factory, c, args, fk).train(m.training)  # same mode as the network
        except (ValueError, TypeError) as e:
            raise type(e)(f"insert: building {label} for block {path!r} ({c} channels) failed: {e}") from e
        wrapped = False
        if zero_init and not _is_identity(attn, c, fk):
            attn = ZeroInit(attn, **fk).train(m.training)
            wrapped = True
        if placement == "stage":
            _append("")(m, attn)
        elif rule is not None:
            rule.attach(m, attn)
        else:
            parent_path, _, child = path.rpartition(".")
            parent = model.get_submodule(parent_path)
            setattr(parent, child, Inserted(getattr(parent, child), attn))
        inner = attn.attn if wrapped else attn
        added.append((attn, Insertion("", path, c, label, type(inner), wrapped)))
    # a plain attribute (not a submodule, not in the state_dict) read by inserted()
    setattr(model, _INSERTIONS_ATTR, list(getattr(model, _INSERTIONS_ATTR, [])) + added)
    return model
