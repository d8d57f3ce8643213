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

__all__ = ["insert", "inserted", "supported_blocks", "Insertion", "Inserted", "ZeroInit"]

Where = Union[None, str, Sequence[str], Callable[[str, nn.Module], bool]]
_INSERTIONS_ATTR = "_plugattn_insertions"  # the model attribute listing its insertions (see insert, inserted)


@dataclass(frozen=True)
class Insertion:
    """One inserted attention module.

    Attributes:
        path: dotted path of the attention module in the model (``model.get_submodule(path)``); with
            ``zero_init`` wrapping, the :class:`ZeroInit` wrapper's path.
        site: path of the block (or named module) it was placed in or after.
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
    residual: Callable[[nn.Module], bool]
    channels: Callable[[nn.Module], int]
    attach: Callable[[nn.Module, nn.Module], str]  # puts attn in the block, returns its path relative to it

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.cls}"


def _always(block: nn.Module) -> bool:
    return True


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


def supported_blocks() -> list[str]:
    """Qualified names of the block classes the default placement knows (whether or not their library is installed)."""
    return [r.qualname for r in _RULES]


def _resolved_rules() -> list[tuple[type, _Rule]]:
    """(class, rule) for every rule whose library is importable; subclasses match the most specific rule."""
    out = []
    for rule in _RULES:
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


def insert(
    model: nn.Module,
    name: str | Callable[..., nn.Module],
    where: Where = None,
    zero_init: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Insert attention module ``name`` into ``model`` in place, and return ``model``.

    Args:
        model: a torchvision or timm network (or any module, with ``where``).
        name: a registry key (``"se"``, ``"cbam"``, ...), or a class / factory called as ``f(channels, **kwargs)``.
        where: ``None``: every residual block of a supported type (see :func:`supported_blocks`); a module
            path or list of paths; or a predicate ``(path, module) -> bool`` over ``model.named_modules()``.
            A selected supported block gets the block rule, any other module gets the attention on its output.
        zero_init: start every inserted module as the exact identity (module docstring).
        **kwargs: passed to the attention module's constructor.

    Returns:
        ``model``, modified in place; :func:`inserted` lists the insertions.

    Raises:
        ValueError: no supported block found (the message lists the supported blocks), a path that is not in
            the model, a channel count that cannot be inferred, an unknown module name, or a module that does
            not preserve the shape of its input (``danet_head``).
        TypeError: ``model`` is not an ``nn.Module`` or ``where`` has the wrong type.

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
    if isinstance(name, str):
        meta = registry.info(name)
        if not meta.preserves_shape:
            raise ValueError(f"insert: module {name!r} changes the shape of its input (a {meta.kind}); only "
                             f"shape-preserving modules can be inserted into a network")
        factory: Callable[..., nn.Module] = meta.cls
        label = name
    elif callable(name):
        factory = name
        label = getattr(name, "__name__", type(name).__name__)
    else:
        raise TypeError(f"insert: name must be a registry key or a module class/factory, got {type(name).__name__}")

    rules = _resolved_rules()
    previous = inserted(model)
    skip = tuple(i.path + "." for i in previous)  # never insert into an inserted module
    modules = dict(model.named_modules())

    targets: list[tuple[str, nn.Module, _Rule | None]] = []
    if where is None:
        for path, m in modules.items():
            rule = _rule_for(m, rules)
            if rule is not None and rule.residual(m) and not (path + ".").startswith(skip):
                targets.append((path, m, rule))
        if not targets:
            raise ValueError(
                f"insert: found no supported residual block in {type(model).__name__}; supported blocks: "
                f"{', '.join(supported_blocks())}. Name positions with where=[paths] or where=predicate."
            )
    else:
        if isinstance(where, str):
            where = [where]
        if callable(where):
            selected = [p for p, m in modules.items() if not (p + ".").startswith(skip) and where(p, m)]
        elif isinstance(where, Sequence) and all(isinstance(p, str) for p in where):
            missing = [p for p in where if p not in modules]
            if missing:
                raise ValueError(f"insert: where names modules that are not in the model: {missing}")
            selected = list(dict.fromkeys(where))
        else:
            raise TypeError("insert: where must be None, a module path, a list of paths or a predicate(path, module)")
        if not selected:
            raise ValueError("insert: where selected no module")
        for p in selected:
            if p == "":
                raise ValueError("insert: where cannot select the model itself (path '')")
            targets.append((p, modules[p], _rule_for(modules[p], rules)))

    # Resolve every channel count before changing anything, so a failure leaves the model untouched.
    plans = []
    for path, m, rule in targets:
        c = rule.channels(m) if rule is not None else _infer_channels(m)
        if c is None:
            raise ValueError(
                f"insert: cannot infer the channel count after {path!r} ({type(m).__name__}); name a module with "
                f"num_features or out_channels (a norm or conv layer) or a supported block"
            )
        plans.append((path, m, rule, c))

    # Deepest first: wrapping a module never moves a target that is still to be processed.
    order = {p: i for i, p in enumerate(modules)}
    plans.sort(key=lambda t: order[t[0]], reverse=True)
    added = []
    for path, m, rule, c in plans:
        fk = _factory_kwargs(m)
        try:
            attn = _build(factory, c, kwargs, fk).train(m.training)  # same mode as the network
        except (ValueError, TypeError) as e:
            raise type(e)(f"insert: building {label} for block {path!r} ({c} channels) failed: {e}") from e
        wrapped = False
        if zero_init and not _is_identity(attn, c, fk):
            attn = ZeroInit(attn, **fk).train(m.training)
            wrapped = True
        if rule is not None:
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
