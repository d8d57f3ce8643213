"""ONNX export of any registered module (or any module), and the ``plugattn export`` command.

The graph takes ``x`` (N, C, H, W) with dynamic batch, height and width (named ``batch``, ``height``,
``width`` in the ONNX file) and returns ``y`` (or ``y0``, ``y1``, ... for modules that return a tuple).
The default exporter is PyTorch's ``torch.export``-based one (``dynamo=True``); ``dynamo=False`` selects the
deprecated TorchScript exporter. Which modules export, and how exactly onnxruntime reproduces them, is in
``docs/export.md`` (regenerate it with ``benchmarks/export_matrix.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from . import registry

__all__ = ["export_onnx", "onnx_max_error"]

HELP = "export a registered module to ONNX with dynamic batch, height and width"


def _example(module: nn.Module, channels: int, batch: int, size: tuple[int, int]) -> Tensor:
    kw: dict[str, Any] = {}
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            kw = {"device": t.device, "dtype": t.dtype}
            break
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, channels, *size, generator=g).to(**kw) if kw else torch.randn(
        batch, channels, *size, generator=g)


def _output_names(module: nn.Module, x: Tensor) -> list[str]:
    with torch.no_grad():
        y = module(x)
    return [f"y{i}" for i in range(len(y))] if isinstance(y, (tuple, list)) else ["y"]


def export_onnx(
    module: nn.Module | str,
    path: str | Path,
    *,
    channels: int | None = None,
    size: tuple[int, int] = (16, 16),
    batch: int = 2,
    opset: int = 18,
    dynamic: bool = True,
    dynamo: bool = True,
    optimize: bool = True,
    **kwargs: Any,
) -> Path:
    """Export ``module`` (an ``nn.Module`` or a registry key) to the ONNX file ``path``.

    Args:
        module: the module, or a registry key built as ``plugattn.create(module, channels, **kwargs)``.
        path: output ``.onnx`` file (parent folders are created).
        channels: C of the example input; required for a registry key, read from ``module.channels``
            otherwise when not given.
        size: (H, W) of the example input; with ``dynamic`` both must be ≥ 2 (a size-1 example would be
            specialised). Default: (16, 16).
        batch: N of the example input (≥ 2 with ``dynamic``). Default: 2.
        opset: ONNX opset version (≥ 17). Default: 18.
        dynamic: make batch, height and width dynamic. Default: True.
        dynamo: use the ``torch.export``-based exporter (else the deprecated TorchScript one). Default: True.
        optimize: run the ONNX graph optimizer (dynamo exporter only). Default: True.
        **kwargs: constructor arguments when ``module`` is a registry key.

    Returns:
        ``Path(path)``: one self-contained file (weights inside), unless they pass the 2 GB protobuf limit,
        when they go to ``path.data`` beside it (said on stderr). The module is exported in eval mode and
        left in the mode it was in.

    Raises:
        ValueError: bad sizes, opset < 17, or a missing channel count.
    """
    if isinstance(module, str):
        if channels is None:
            raise ValueError(f"export_onnx: channels is required to build module {module!r}")
        module = registry.create(module, channels, **kwargs)
    elif kwargs:
        raise TypeError(f"export_onnx: constructor kwargs {sorted(kwargs)} only apply to a registry key")
    if not isinstance(module, nn.Module):
        raise TypeError(f"export_onnx: module must be an nn.Module or a registry key, got {type(module).__name__}")
    if channels is None:
        channels = getattr(module, "channels", None)
        if not isinstance(channels, int):
            raise ValueError("export_onnx: channels is required (the module has no int `channels` attribute)")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17:
        raise ValueError(f"export_onnx: opset must be an int >= 17, got {opset!r}")
    h, w = size
    low = 2 if dynamic else 1
    for arg, v in (("batch", batch), ("height", h), ("width", w)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            cond = " with dynamic=True" if dynamic else ""
            raise ValueError(f"export_onnx: example {arg} must be an int >= {low}{cond}, got {v!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    was_training = module.training
    module.eval()
    try:
        x = _example(module, channels, batch, (h, w))
        outputs = _output_names(module, x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dynamo:
                dyn = None
                if dynamic:
                    dim = torch.export.Dim
                    dyn = {"x": {0: dim("batch"), 2: dim("height"), 3: dim("width")}}
                external = _needs_external_data(module)
                if external:
                    print(f"export_onnx: the weights exceed the 2 GB protobuf limit; they go to {path}.data, "
                          f"which must stay beside {path.name}", file=sys.stderr)
                torch.onnx.export(
                    module, (x,), str(path), dynamo=True, opset_version=opset, input_names=["x"],
                    output_names=outputs, dynamic_shapes=dyn, optimize=optimize, verbose=False,
                    external_data=external,
                )
            else:
                axes = {"x": {0: "batch", 2: "height", 3: "width"}} if dynamic else None
                torch.onnx.export(
                    module, (x,), str(path), dynamo=False, opset_version=opset, input_names=["x"],
                    output_names=outputs, dynamic_axes=axes,
                )
    finally:
        module.train(was_training)
    return path


def _needs_external_data(module: nn.Module) -> bool:
    """True when parameters and buffers pass ONNX's 2 GB protobuf limit (with a margin for the graph)."""
    size = sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))
    return size > 1_900_000_000


def onnx_max_error(path: str | Path, module: nn.Module, x: Tensor, *, relative: bool = False) -> float:
    """Largest |onnxruntime − eager| over all outputs for input ``x`` (needs ``onnxruntime``); NaNs match NaNs.

    With ``relative``, each output's error is divided by ``max(1, max |eager|)``: float32 round-off grows with
    the output's magnitude (a SeaFormer block with random weights reaches |y| ≈ 100). A shape mismatch is ``inf``.
    """
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            ref = module(x)
    finally:
        module.train(was_training)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    outs = sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().numpy()})
    err = 0.0
    for o, r in zip(outs, refs):
        r = r.detach().cpu().numpy()
        if o.shape != r.shape:
            return float("inf")
        both_nan = np.isnan(o) & np.isnan(r)
        d = np.where(both_nan, 0.0, np.abs(o.astype(np.float64) - r.astype(np.float64)))
        e = float(np.nan_to_num(d, nan=np.inf).max(initial=0.0))
        if relative:
            e /= max(1.0, float(np.nan_to_num(np.abs(r), nan=0.0).max(initial=0.0)))
        err = max(err, e)
    return err


# ---------------------------------------------------------------------------------------------------------
# CLI: plugattn export NAME --channels C --out FILE.onnx [--opset 18] [--size H W]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``plugattn export``."""
    parser.add_argument("name", help="registered module name (see `plugattn list`)")
    parser.add_argument("--channels", type=int, required=True, help="input channels C")
    parser.add_argument("--out", required=True, help="output .onnx file")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17)")
    parser.add_argument("--size", type=int, nargs=2, default=(16, 16), metavar=("H", "W"),
                        help="example input height and width; the graph accepts any size")
    parser.add_argument("--batch", type=int, default=2, help="example batch size")
    parser.add_argument("--static", action="store_true", help="fix batch, height and width to the example's")
    parser.add_argument("--torchscript", action="store_true", help="use the deprecated TorchScript exporter")
    parser.add_argument("--kwargs", default="{}", metavar="JSON",
                        help='constructor arguments as JSON, e.g. \'{"rd_ratio": 0.25}\'')
    parser.add_argument("--weights", metavar="FILE", default=None,
                        help="a state_dict or checkpoint (.pt/.pth) to load into the module before export")
    parser.add_argument("--check", action="store_true",
                        help="run the file with onnxruntime at the example size and another size and compare")


def run(args: argparse.Namespace) -> int:
    """Run ``plugattn export``; returns the exit status."""
    try:
        kwargs = json.loads(args.kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError(f"--kwargs must be a JSON object, got {args.kwargs!r}")
        module = registry.create(args.name, args.channels, **kwargs)
        if args.weights:
            from .official import unwrap_state_dict

            state = torch.load(args.weights, map_location="cpu", weights_only=True)
            module.load_state_dict(unwrap_state_dict(state, "plugattn export --weights"))
    except FileNotFoundError as e:
        print(f"plugattn export: error: --weights: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, RuntimeError) as e:  # json.JSONDecodeError is a ValueError
        print(f"plugattn export: error: {e}", file=sys.stderr)
        return 2
    try:
        path = export_onnx(
            module, args.out, channels=args.channels, size=tuple(args.size), batch=args.batch, opset=args.opset,
            dynamic=not args.static, dynamo=not args.torchscript,
        )
    except (ValueError, TypeError) as e:
        print(f"plugattn export: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # an exporter failure: report it, no traceback
        print(f"plugattn export: exporting {args.name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    dims = "static shape" if args.static else "dynamic batch, height, width"
    print(f"exported {args.name} (channels {args.channels}) to {path} (opset {args.opset}, {dims})")
    if args.check:
        h, w = args.size
        sizes = [(args.batch, h, w)] if args.static else [(args.batch, h, w), (args.batch + 1, h + 3, w + 1)]
        worst = 0.0
        for n, hh, ww in sizes:
            g = torch.Generator().manual_seed(1)
            err = onnx_max_error(path, module, torch.randn(n, args.channels, hh, ww, generator=g), relative=True)
            worst = max(worst, err)
            print(f"  onnxruntime vs eager at {n}x{args.channels}x{hh}x{ww}: max error {err:.2e} "
                  f"(relative to max(1, max|y|))")
        if not worst <= 1e-4:
            print("plugattn export: onnxruntime output differs from eager by more than 1e-4 (relative)",
                  file=sys.stderr)
            return 1
    return 0
