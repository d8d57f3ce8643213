"""Measure, for every registered module: insert identity, timm attn_layer, ONNX parity, torch.export, compile.

    python benchmarks/export_matrix.py                      # print the markdown table
    python benchmarks/export_matrix.py --write docs/export.md   # replace the table between the markers
    python benchmarks/export_matrix.py --only se eca --no-compile

Columns (each cell: ``yes``, ``no`` with a footnote giving the error, or ``n/a``):

- insert identity: ``insert(torchvision resnet18, name, zero_init=True)`` leaves the eval-mode output bit-for-bit
  unchanged (max |Δ| = 0), and the same for timm ``resnet10t``.
- timm: ``timm.create_model("resnet10t", block_args={"attn_layer": cls})`` builds and runs.
- ONNX parity: dynamo export (opset 18, dynamic batch/height/width) at 2×C×12×10; onnxruntime at 2×12×10,
  3×13×17, 1×7×5 and 1×1×1 within 1e-4 of eager, relative to the output's scale: |Δ| / max(1, max |y|)
  (the largest is shown; random weights make some outputs reach |y| ≈ 100, where float32 round-off is ~1e-5).
- torch.export: ``torch.export.export`` with dynamic batch/height/width; the program at 3×13×17, 1×7×5 and
  1×1×1 within 1e-5 of eager (same relative measure).
- compile fullgraph: ``torch.compile(fullgraph=True)`` at 2×7×9 and 1×13×17 within 1e-5 of eager (same measure).

Modules get random parameters and BatchNorm statistics, so no branch is an identity (DANet's γ, GCNet's last
conv). Per-module constructor arguments are in ``SETTINGS``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

import plugattn
from plugattn.export import export_onnx, onnx_max_error
from plugattn.integrate import insert

SETTINGS: dict[str, dict] = {"danet_head": {"out_channels": 5}}
CHANNELS = 16
ONNX_SIZES = [(2, 12, 10), (3, 13, 17), (1, 7, 5), (1, 1, 1)]
START, END = "<!-- export-matrix:start -->", "<!-- export-matrix:end -->"


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.copy_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            if m.weight is not None:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
    return module


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_(plugattn.create(name, CHANNELS, **SETTINGS.get(name, {}))).eval()


def rand(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def outputs(y) -> tuple[torch.Tensor, ...]:
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def max_err(a, b) -> float:
    """Largest |a − b| / max(1, max |b|) over the outputs; NaN matches NaN."""
    err = 0.0
    for s, t in zip(outputs(a), outputs(b)):
        if s.shape != t.shape:
            return float("inf")
        d = (s.double() - t.double()).abs()
        d = torch.where(torch.isnan(s) & torch.isnan(t), torch.zeros_like(d), d)
        scale = max(1.0, float(torch.nan_to_num(t.double().abs(), nan=0.0).max()))
        err = max(err, float(torch.nan_to_num(d, nan=float("inf")).max()) / scale)
    return err


def reason(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
    text = re.sub(r"0x[0-9a-f]+", "0x…", text)
    return text if len(text) <= 220 else text[:219] + "…"


def check_insert(name: str) -> tuple[bool | None, str]:
    if not plugattn.info(name).preserves_shape:
        return None, ""
    import timm
    import torchvision

    x = rand(1, 3, 64, 64, seed=3)
    for ctor in (lambda: torchvision.models.resnet18(num_classes=10),
                 lambda: timm.create_model("resnet10t", num_classes=10)):
        torch.manual_seed(0)
        model = randomize_bn(ctor()).eval()
        with torch.no_grad():
            before = model(x)
            after = insert(model, name, zero_init=True)(x)
        d = (after - before).abs().max().item()
        if d != 0.0:
            return False, f"max |Δ| = {d:.1e} on {type(model).__module__}"
    return True, ""


@torch.no_grad()
def randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


def check_timm(name: str) -> tuple[bool | None, str]:
    if not plugattn.info(name).preserves_shape:
        return None, ""
    import timm

    model = timm.create_model("resnet10t", block_args={"attn_layer": plugattn.get(name)}, num_classes=10).eval()
    with torch.no_grad():
        y = model(rand(1, 3, 64, 64))
    return bool(torch.isfinite(y).all()), ""


def check_onnx(name: str, m: nn.Module, tmp: Path) -> tuple[bool, str]:
    path = tmp / f"{name}.onnx"
    export_onnx(m, path, channels=CHANNELS, size=(12, 10), batch=2, opset=18)
    errs = [onnx_max_error(path, m, rand(n, CHANNELS, h, w, seed=5), relative=True) for n, h, w in ONNX_SIZES]
    worst = max(errs)
    if worst <= 1e-4:
        return True, f"{worst:.0e}"
    bad = [f"{n}×{h}×{w}: {e:.1e}" for (n, h, w), e in zip(ONNX_SIZES, errs) if not e <= 1e-4]
    return False, "onnxruntime differs from eager at " + ", ".join(bad)


def check_export(name: str, m: nn.Module) -> tuple[bool, str]:
    dim = torch.export.Dim
    x = rand(2, CHANNELS, 12, 10)
    ep = torch.export.export(m, (x,), dynamic_shapes={"x": {0: dim("batch"), 2: dim("height"), 3: dim("width")}})
    for n, h, w in [(3, 13, 17), (1, 7, 5), (1, 1, 1)]:
        xi = rand(n, CHANNELS, h, w, seed=6)
        with torch.no_grad():
            e = max_err(ep.module()(xi), m(xi))
        if not e <= 1e-5:
            return False, f"exported program differs from eager at {n}×{h}×{w} by {e:.1e}"
    return True, ""


def check_compile(name: str, m: nn.Module) -> tuple[bool, str]:
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True)
    for n, h, w in [(2, 7, 9), (1, 13, 17)]:
        xi = rand(n, CHANNELS, h, w, seed=7)
        with torch.no_grad():
            e = max_err(compiled(xi), m(xi))
        if not e <= 1e-5:
            return False, f"compiled differs from eager at {n}×{h}×{w} by {e:.1e}"
    return True, ""


def run_checks(names: list[str], compile_: bool) -> list[dict]:
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # failures are reported in the table
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row: dict = {"name": name}
            t0 = time.time()
            checks = {
                "insert": lambda: check_insert(name),
                "timm": lambda: check_timm(name),
                "onnx": lambda: check_onnx(name, build(name), Path(tmp)),
                "export": lambda: check_export(name, build(name)),
            }
            if compile_:
                checks["compile"] = lambda: check_compile(name, build(name))
            for key, fn in checks.items():
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        row[key] = fn()
                except Exception as e:  # a failing check is a result, not a crash
                    row[key] = (False, reason(e))
            print(f"{name}: {time.time() - t0:.0f}s " + " ".join(
                f"{k}={'-' if v[0] is None else v[0]}" for k, v in row.items() if k != "name"), file=sys.stderr)
            rows.append(row)
    return rows


def table(rows: list[dict], compile_: bool) -> str:
    cols = [("insert", "insert identity"), ("timm", "timm"), ("onnx", "ONNX parity (max err)"),
            ("export", "torch.export")]
    if compile_:
        cols.append(("compile", "compile fullgraph"))
    notes: list[str] = []
    lines = ["| module | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in rows:
        cells = []
        for key, _ in cols:
            ok, detail = row.get(key, (None, "not run"))
            if ok is None:
                cells.append("n/a")
            elif ok:
                cells.append("yes" + (f" ({detail})" if detail else ""))
            else:
                if detail not in notes:
                    notes.append(detail)
                cells.append(f"**no** [{notes.index(detail) + 1}]")
        lines.append(f"| `{row['name']}` | " + " | ".join(cells) + " |")
    meta = (f"torch {torch.__version__}, measured by `benchmarks/export_matrix.py`, {len(rows)} modules, "
            f"channels {CHANNELS}.")
    foot = [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    return "\n".join([meta, "", *lines, "", *(f"{f}  " for f in foot)]).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="modules to check (default: all registered)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (the slow column)")
    parser.add_argument("--write", type=Path, help="replace the table between the markers in this file")
    args = parser.parse_args(argv)
    names = args.only or plugattn.list_modules()
    text = table(run_checks(names, not args.no_compile), not args.no_compile)
    if args.write:
        doc = args.write.read_text()
        if START not in doc or END not in doc:
            raise SystemExit(f"{args.write} has no {START} ... {END} markers")
        head, rest = doc.split(START, 1)
        _, tail = rest.split(END, 1)
        args.write.write_text(f"{head}{START}\n{text}{END}{tail}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
