"""Weights in a standard format: safetensors plus a small JSON config; the ``plugattn convert`` command.

``save_model(model, name, "net.safetensors")`` writes ``net.safetensors`` (the state_dict) and ``net.json``
(``{"network": name, "num_classes": ..., "plugattn": version}``); ``create_model(name, checkpoint="net.safetensors")``
reads them back. ``plugattn convert KEY OFFICIAL_FILE OUT.safetensors`` converts a released official checkpoint.
Needs the ``safetensors`` package (installed with timm, or ``pip install safetensors``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch.nn as nn

__all__ = ["save_model", "load_model_file"]

HELP = "convert an official network checkpoint to safetensors + JSON (read back by create_model)"


def _safetensors() -> Any:
    try:
        import safetensors.torch as st
    except ImportError as e:  # optional dependency
        raise ImportError("plugattn: saving and loading .safetensors needs `pip install safetensors`") from e
    return st


def save_model(model: nn.Module, name: str, path: str | Path) -> Path:
    """Write ``model``'s state_dict to ``path`` (``.safetensors``) and its config to ``path`` with ``.json``.

    Args:
        model: a network built by :func:`plugattn.models.create_model` (or ``from_official``) for ``name``.
        name: its registry name.
        path: the ``.safetensors`` file to write (parent folders are created).

    Returns:
        ``Path(path)``.
    """
    from .. import __version__
    from ._registry import model_info

    info = model_info(name)
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_model: path must end in .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    _safetensors().save_file(tensors, str(path))
    config = {"network": name, "num_classes": getattr(model, "num_classes", info.num_classes), "plugattn": __version__}
    path.with_suffix(".json").write_text(json.dumps(config, indent=1) + "\n")
    return path


def load_model_file(name: str, path: str | Path) -> nn.Module:
    """The network ``name`` with the weights of a file written by :func:`save_model` (strict), in eval mode."""
    from ._registry import model_info

    path = Path(path)
    config_path = path.with_suffix(".json")
    if not config_path.is_file():
        raise FileNotFoundError(f"{path}: its config {config_path.name} is missing (written by save_model beside it)")
    config = json.loads(config_path.read_text())
    if config.get("network") != name:
        raise ValueError(f"{path} holds network {config.get('network')!r}, not {name!r}")
    model = model_info(name).build(num_classes=config["num_classes"])
    model.load_state_dict(_safetensors().load_file(str(path)), strict=True)
    return model.eval()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``plugattn convert``."""
    parser.add_argument("network", help="network key (see plugattn.models.list_models())")
    parser.add_argument("official_file", help="the official checkpoint as released (.pth, .pth.tar, .pkl)")
    parser.add_argument("out", help="the .safetensors file to write (a .json config is written beside it)")


def run(args: argparse.Namespace) -> int:
    """Convert and report."""
    from ._registry import create_model

    model = create_model(args.network, checkpoint=args.official_file)
    path = save_model(model, args.network, args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {path} and {path.with_suffix('.json')} ({args.network}, {n:,} parameters)")
    return 0
