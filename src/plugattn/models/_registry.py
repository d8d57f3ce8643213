"""Name → network factory, with metadata; ``create_model`` and official checkpoint files."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
import torch.nn as nn

from ..official import from_official, list_official, unwrap_state_dict

__all__ = ["ModelInfo", "register_model", "list_models", "model_info", "create_model", "read_checkpoint"]

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one network.

    Attributes:
        name: registry key (NETWORKS.md's keys, and the other depths of each official factory).
        build: ``build(num_classes=..., **kwargs) -> nn.Module``, the released configuration by default.
        paper: paper title. url: paper link.
        official: the official source (repository @ commit, file, constructor).
        task: ``"classification"`` or ``"segmentation"``.
        input_size: default (C, H, W) input.
        num_classes: classes of the released configuration.
        checkpoints: names of the official released checkpoint files, where known.
    """

    name: str
    build: Callable[..., nn.Module]
    paper: str
    url: str
    official: str
    task: str = "classification"
    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    checkpoints: tuple[str, ...] = ()


_MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, **meta: Any) -> Callable[[F], F]:
    """Decorator registering a network factory under ``name`` (metadata: the fields of :class:`ModelInfo`)."""

    def deco(fn: F) -> F:
        if name in _MODELS:
            raise ValueError(f"register_model: {name!r} is already registered")
        _MODELS[name] = ModelInfo(name, fn, **meta)
        return fn

    return deco


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted network names, optionally filtered by a shell-style ``pattern`` (``"*resnet*"``)."""
    names = sorted(_MODELS)
    return names if pattern is None else [n for n in names if fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered network; an unknown name raises ``ValueError`` listing the valid ones."""
    if name not in _MODELS:
        raise ValueError(f"unknown network {name!r}; expected one of: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, *, num_classes: int | None = None, checkpoint: str | Path | None = None,
                 **kwargs: Any) -> nn.Module:
    """Build network ``name`` (the released configuration unless ``kwargs`` say otherwise), in eval mode.

    Args:
        name: one of :func:`list_models`.
        num_classes: classes of the classifier / segmentation head; ``None``: the released number.
        checkpoint: an official checkpoint file as released (``.pth``, ``.pth.tar``, ``.pkl``; wrapped dicts and
            ``module.`` prefixes are unwrapped), read with ``torch.load(weights_only=True)``, never executing
            pickled code, and loaded through ``from_official(name, ...)``; or a ``.safetensors`` file written by
            ``plugattn convert`` / :func:`~plugattn.models.convert.save_model` (with its ``.json`` beside it).
            With ``num_classes`` different from the file's, every weight but the classifier's is loaded.
        **kwargs: passed to the network's builder.

    Examples:
        >>> import plugattn
        >>> [n for n in plugattn.models.list_models("se_resnet*")][:1]
        ['se_resnet101']
    """
    info = model_info(name)
    if checkpoint is None:
        model = info.build(num_classes=info.num_classes if num_classes is None else num_classes, **kwargs)
        return model.eval()
    if kwargs:
        raise TypeError(f"create_model({name!r}): kwargs {sorted(kwargs)} cannot be combined with an official "
                        "checkpoint, which fixes the configuration")
    if Path(checkpoint).suffix == ".safetensors":  # plugattn's own format (plugattn convert / save_model)
        from .convert import load_model_file

        model = load_model_file(name, checkpoint)
    else:
        model = _load_official(name, checkpoint)
    if num_classes is not None and num_classes != getattr(model, "num_classes", info.num_classes):
        reset = getattr(model, "reset_classifier", None)
        if reset is None:
            raise ValueError(f"create_model({name!r}): this network cannot change num_classes")
        reset(num_classes)
    return model.eval()


def _load_official(name: str, checkpoint: str | Path) -> nn.Module:
    state = read_checkpoint(checkpoint)
    if name not in list_official():
        raise ValueError(f"create_model({name!r}): no official checkpoint converter for this network")
    return from_official(name, state)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, read with ``weights_only=True`` and unwrapped.

    A file holding other pickled objects (an optimizer class, argparse ``Namespace``) raises ``ValueError`` saying
    which, and how to proceed (re-save its ``state_dict`` from a trusted environment).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError with the offending global in its message
        first = str(e).splitlines()[0]
        raise ValueError(f"checkpoint {path}: holds objects other than tensors, which plugattn does not unpickle "
                         f"(weights_only=True): {first}. In a trusted environment, load it and save only its "
                         "state_dict: torch.save(torch.load(f, weights_only=False)['state_dict'], out)") from e
    return unwrap_state_dict(state, f"checkpoint {path.name}")
