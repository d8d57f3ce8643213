"""plugattn on a CUDA device: every module checked against the CPU, then the same targets as on the CPU.

    python benchmarks/gpu.py                   # checks + targets + bench tables, a few minutes on one GPU
    python benchmarks/gpu.py --quick           # checks + quick targets, no bench tables (about a minute)
    python benchmarks/gpu.py --md gpu.md --json gpu.json

1. Correctness. Every registered module, with random weights (BatchNorm statistics included), in eval mode, at
   (2, 32, 13, 11) and (2, 64, 9, 8): the CPU float64 output is the truth; the device output in float32,
   bfloat16 and float16, contiguous and channels_last, must be within the tolerance table below, measured as
   max|y − y_ref| / (1 + max|y_ref|), or within twice the error of the plain reference formulation
   (``benchmarks/reference.py``) in the same dtype, where the official formula itself is ill-conditioned. The
   float32 output is also compared with the CPU float32 output, and one forward+backward pass per dtype must give
   finite gradients (unless the reference's are not finite either). TF32 is switched off for these checks.
2. Targets: ``benchmarks/targets.py`` (a)–(e) on the device (memory from ``torch.cuda.max_memory_allocated``),
   printed as the same table of ratios. The CPU targets were set for the CPU; on a GPU they are information.
3. ``plugattn bench`` tables for every module at (8, 64, 56, 56) and (8, 256, 28, 28), float32 and bfloat16.

On a machine without CUDA it prints a message and exits with status 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Tolerance on max|y − y_ref| / (1 + max|y_ref|) against the CPU float64 output.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CHECK_SHAPES = [(2, 32, 13, 11), (2, 64, 9, 8)]


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Random parameters (std 1/√fan_in for weights, ``scale`` for vectors) and BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        std = scale if p.dim() < 2 else 1.0 / max(1, p[0].numel()) ** 0.5
        p.copy_(std * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return module


def _outputs(y) -> tuple[torch.Tensor, ...]:
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def _rel_err(got, want) -> float:
    err = 0.0
    for a, b in zip(_outputs(got), _outputs(want)):
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        err = max(err, (a - b).abs().max().item() / (1 + b.abs().max().item()))
    return err


def _grads_finite(fn, m: nn.Module, x: torch.Tensor) -> bool:
    m.zero_grad(set_to_none=True)
    xg = x.detach().clone().requires_grad_()
    sum(t.float().sum() for t in _outputs(fn(m, xg))).backward()
    grads = [xg.grad] + [p.grad for p in m.parameters() if p.grad is not None]
    return all(torch.isfinite(g).all().item() for g in grads)


def check_module(name: str, device: str, dtypes=DTYPES, shapes=CHECK_SHAPES) -> dict:
    """One module on ``device`` against the CPU float64 output, per dtype and layout, and a backward smoke test.

    A dtype passes when its error is within ``TOLERANCE`` or within twice the error of the plain reference
    formulation (``benchmarks/reference.py``, the official structure) in the same dtype on the same device:
    some official formulas are ill-conditioned in low precision (DANet CAM's unnormalised channel energy), and
    the module is then held to "no worse than the official code". Likewise a non-finite gradient is a failure
    only when the reference's gradient is finite.
    """
    import plugattn
    import reference as ref

    row: dict = {"name": name, "errors": {}, "ref_errors": {}, "status": "PASS", "problems": [], "notes": []}
    for shape in shapes:
        n, c, h, w = shape
        torch.manual_seed(0)
        base = randomize_(plugattn.create(name, c)).eval()
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        with torch.no_grad():
            truth = copy.deepcopy(base).double()(x)
            cpu32 = copy.deepcopy(base).float()(x.float())
        for dtype in dtypes:
            key = str(dtype).replace("torch.", "")
            try:
                m = copy.deepcopy(base).to(device=device, dtype=dtype)
                xd = x.to(device=device, dtype=dtype)
                with torch.no_grad():
                    y = m(xd)
                    ref_err = _rel_err(ref.reference(name, m, xd), truth) if ref.has_reference(name) else 0.0
                    y_cl = m.to(memory_format=torch.channels_last)(xd.to(memory_format=torch.channels_last))
                if any(t.dtype != dtype for t in _outputs(y)):
                    row["problems"].append(f"{key}: output dtype {[t.dtype for t in _outputs(y)]}")
                err = max(_rel_err(y, truth), _rel_err(y_cl, truth))
                row["errors"][key] = max(row["errors"].get(key, 0.0), err)
                row["ref_errors"][key] = max(row["ref_errors"].get(key, 0.0), ref_err)
                if dtype == torch.float32:
                    row["errors"]["float32_vs_cpu32"] = max(row["errors"].get("float32_vs_cpu32", 0.0),
                                                            _rel_err(y, cpu32))
                allowed = max(TOLERANCE[dtype], 2 * ref_err)
                if not err <= allowed:
                    row["problems"].append(f"{key} {shape}: error {err:.1e} > {allowed:.0e} (reference formula in "
                                           f"{key}: {ref_err:.1e})")
                elif err > TOLERANCE[dtype]:
                    row["notes"].append(f"{key} {shape}: error {err:.1e}, the official formula's {ref_err:.1e}")
                m = m.train()
                if not _grads_finite(lambda mod, t: mod(t), m, xd):
                    if ref.has_reference(name) and not _grads_finite(lambda mod, t: ref.reference(name, mod, t), m, xd):
                        row["notes"].append(f"{key} {shape}: non-finite gradient, as the official formula's")
                    else:
                        row["problems"].append(f"{key} {shape}: non-finite gradient")
            except Exception as e:  # report and go on: one module must not stop the whole check
                row["problems"].append(f"{key} {shape}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
                row["errors"][key] = float("nan")
    if row["problems"]:
        row["status"] = "FAIL"
    return row


def check_all(device: str, names=None, dtypes=DTYPES, shapes=CHECK_SHAPES) -> list[dict]:
    import plugattn

    names = names or plugattn.list_modules()
    keys = [str(d).replace("torch.", "") for d in dtypes]
    print(f"\n1. every module on {device} vs the CPU float64 output: max|y − y_ref| / (1 + max|y_ref|), contiguous "
          f"and channels_last, shapes {shapes}; tolerance "
          + ", ".join(f"{str(d).replace('torch.', '')} {t:.0e}" for d, t in TOLERANCE.items() if d in dtypes))
    print(f"  {'module':<16}" + "".join(f"{k:>12}" for k in keys) + f"{'f32 vs cpu32':>14}  status")
    rows = []
    for name in names:
        r = check_module(name, device, dtypes, shapes)
        rows.append(r)
        errs = "".join(f"{r['errors'].get(k, float('nan')):>12.1e}" for k in keys)
        print(f"  {name:<16}{errs}{r['errors'].get('float32_vs_cpu32', float('nan')):>14.1e}  {r['status']}"
              + "".join(f"  {p}" for p in r["problems"] + r["notes"]), flush=True)
    bad = [r["name"] for r in rows if r["status"] != "PASS"]
    print(f"  {len(rows) - len(bad)}/{len(rows)} modules within tolerance" + (f"; FAIL: {bad}" if bad else ""))
    return rows


def device_info(device: str) -> dict:
    info = {"device": device, "torch": torch.__version__}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        info.update({"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": p.total_memory / 2**30,
                     "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()})
    return info


def bench_tables(device: str) -> list[dict]:
    from plugattn.analysis.bench import bench, to_markdown

    rows = []
    shapes = [(8, 64, 56, 56), (8, 256, 28, 28)]
    for dtype in ("float32", "bfloat16"):
        for shape in shapes:
            print(f"\n3. plugattn bench on {device}: {shape}, {dtype}, contiguous")
            r = bench(None, shape, dtype=dtype, device=device, repeats=30, warmup=3)
            print(to_markdown(r), flush=True)
            rows += r
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="a CUDA device (default cuda); 'cpu' runs the checks on the CPU")
    p.add_argument("--quick", action="store_true", help="quick targets and no bench tables")
    p.add_argument("--only", nargs="+", choices=["check", "targets", "bench"], default=["check", "targets", "bench"])
    p.add_argument("--names", nargs="+", help="modules to check (default: all registered)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--md", type=Path, help="write the target tables as markdown here")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device is available here (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}); nothing was measured. Run it on a machine with an NVIDIA GPU.")
        return 0
    t0 = time.perf_counter()
    info = device_info(args.device)
    print(f"plugattn on {info.get('name', args.device)} ({info})")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results: dict = {"info": info}
    if "check" in args.only:
        results["check"] = check_all(args.device, args.names)
    if "targets" in args.only:
        import targets

        md = ["--md", str(args.md)] if args.md else []
        targs = targets.parse_args(["--quick" if args.quick else "--full"] + md)
        try:
            cpu = targets.machine()
            cpu.update({"cpu": info.get("name", args.device), "gpu": info})
            results["targets"] = targets.run(targs, device=args.device, info=cpu)
        except Exception:  # keep the check results
            traceback.print_exc()
            results["targets_error"] = traceback.format_exc()
    if "bench" in args.only and not args.quick:
        try:
            results["bench"] = bench_tables(args.device)
        except Exception:
            traceback.print_exc()
            results["bench_error"] = traceback.format_exc()
    results["seconds"] = time.perf_counter() - t0
    print(f"\ndone in {results['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 1 if any(r["status"] != "PASS" for r in results.get("check", [])) else 0


if __name__ == "__main__":
    sys.exit(main())
