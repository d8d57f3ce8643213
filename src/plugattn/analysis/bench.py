"""Speed and memory of registered modules; the ``plugattn bench`` command.

For each module at one input shape, dtype, memory format and device: parameters, FLOPs (matmuls and
convolutions, attention's included, by ``torch.utils.flop_counter``), forward and forward+backward
latency (warm-up, then the median and interquartile range of repeated runs) and peak extra memory of
one forward pass (see :mod:`plugattn.analysis.memory`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .. import registry
from .cost import count_flops, count_params, human
from .memory import peak_memory_mib

__all__ = ["bench", "time_fn", "time_interleaved", "interleaved_min", "paired_ratio", "forward_backward", "to_markdown"]

HELP = "measure parameters, FLOPs, latency and peak memory of modules"

_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def time_fn(fn: Callable[[], object], *, repeats: int = 20, warmup: int = 3, device: str = "cpu") -> dict[str, float]:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` runs: median, 25th and 75th percentile in ms."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return _stats(times)


def _stats(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {"median": statistics.median(times), "p25": q[0], "p75": q[2]}


def time_interleaved(
    fns: dict[str, Callable[[], object]], *, repeats: int = 7, warmup: int = 2, min_sample_ms: float = 20.0,
    device: str = "cpu",
) -> dict[str, dict[str, float | list[float]]]:
    """Time several functions side by side: median, 25th and 75th percentile in ms per call, per name.

    Each function is warmed up (``warmup`` calls), then called ``k`` times per sample, with ``k`` chosen so that one
    sample takes at least ``min_sample_ms`` (timer resolution, short kernels; ``min_sample_ms <= 0``: k = 1).
    The samples are interleaved: round r times every function once, in forward order on even rounds and reverse
    order on odd rounds, so slow drifts of the machine (other processes, clock changes) hit every function alike
    and cancel in the ratios. Each entry also holds the per-round ``times`` (see :func:`paired_ratio`).
    """
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    counts = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        sync()
        if min_sample_ms <= 0:  # one call per sample, no calibration run (long calls)
            counts[name] = 1
            continue
        t0 = time.perf_counter()
        fn()
        sync()
        once = max(time.perf_counter() - t0, 1e-6)
        counts[name] = max(1, math.ceil(min_sample_ms / 1e3 / once))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            fn, k = fns[name], counts[name]
            sync()
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            sync()
            samples[name].append((time.perf_counter() - t0) * 1e3 / k)
    return {name: {**_stats(ts), "calls_per_sample": counts[name], "times": ts} for name, ts in samples.items()}


def interleaved_min(
    fns: Mapping[str, Callable[[], object]],
    rounds: int,
    *,
    on_round: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Minimum ms per call of each function over ``rounds`` interleaved rounds, after one warm-up call each.

    Round r calls every function once, in forward order on even rounds and reverse order on odd ones, so slow
    drifts of the machine hit every function alike. ``on_round(r, best)`` is called after each round.
    """
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            fns[name]()
            best[name] = min(best[name], (time.perf_counter() - t0) * 1e3)
        if on_round is not None:
            on_round(r, best)
    return best


def paired_ratio(timings: dict[str, dict], num: str, den: str) -> float:
    """Median over rounds of ``time[num] / time[den]`` from :func:`time_interleaved`.

    The two were timed in the same round, so a drift of the machine between rounds cancels.
    """
    return statistics.median(a / b for a, b in zip(timings[num]["times"], timings[den]["times"]))


def forward_backward(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """A closure running one forward and backward pass (sum of the first output) on a copy of ``x``."""
    x = x.detach().clone().requires_grad_()

    def step() -> None:
        out = module(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.sum().backward()
        module.zero_grad(set_to_none=True)
        x.grad = None

    return step


def bench(
    names: list[str] | None = None,
    shape: tuple[int, int, int, int] = (8, 64, 56, 56),
    *,
    dtype: str = "float32",
    memory_format: str = "contiguous",
    device: str = "cpu",
    repeats: int = 20,
    warmup: int = 3,
    memory: bool = True,
    backward: bool = True,
) -> list[dict]:
    """Measure modules (default: all registered) on a random input of ``shape``; one dict per module."""
    names = names or registry.list_modules()
    if memory_format not in _FORMATS:
        raise ValueError(f"bench: memory_format must be one of {sorted(_FORMATS)}, got {memory_format!r}")
    if len(shape) != 4:
        raise ValueError(f"bench: shape must be (N, C, H, W), got {shape!r}")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ValueError(f"bench: dtype must name a floating torch dtype, got {dtype!r}")
    fmt = _FORMATS[memory_format]
    n, c, h, w = shape
    rows = []
    for name in names:
        torch.manual_seed(0)
        # Module.to accepts memory_format with device and dtype, but torch's overloads take it only alone
        module = registry.create(name, c).to(  # type: ignore[call-overload]
            device=device, dtype=torch_dtype, memory_format=fmt).eval()
        x = torch.randn(n, c, h, w, device=device, dtype=torch_dtype).to(memory_format=fmt)
        row: dict = {"name": name, "shape": list(shape), "dtype": dtype, "memory_format": memory_format,
                     "device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "params": count_params(module), "flops": count_flops(module, x)}
        with torch.no_grad():
            row["forward_ms"] = time_fn(lambda: module(x), repeats=repeats, warmup=warmup, device=device)
        if backward:
            row["backward_ms"] = time_fn(forward_backward(module.train(), x), repeats=repeats, warmup=warmup,
                                         device=device)
            module.eval()
        if memory:
            row["peak_mib"] = peak_memory_mib("plugattn:create", [name, c], shape=shape, dtype=dtype, device=device,
                                              channels_last=memory_format == "channels_last")
        rows.append(row)
    return rows


def _noisy(t: dict | None) -> bool:
    return t is not None and t["median"] > 0 and (t["p75"] - t["p25"]) / t["median"] > 0.25


def _fmt_ms(t: dict | None) -> str:
    return "—" if t is None else f"{t['median']:.3f} ({t['p25']:.3f}–{t['p75']:.3f})"


def caption(rows: list[dict]) -> str:
    """One line saying what the :func:`bench` rows measured: shape, dtype, memory format, device, threads."""
    if not rows:
        return ""
    r = rows[0]
    where = r["device"] if r["device"] != "cpu" else f"cpu, {r.get('threads', '?')} threads"
    return (f"Input {tuple(r['shape'])}, {r['dtype']}, {r['memory_format']}, on {where} (torch {r.get('torch', '?')}); "
            f"latency: median and interquartile range in ms; peak extra memory of one forward pass.")


def to_markdown(rows: list[dict], *, with_caption: bool = False) -> str:
    """A markdown table of :func:`bench` rows (``with_caption``: preceded by :func:`caption` and a blank line)."""
    lines = [caption(rows), ""] if with_caption else []
    lines += ["| module | params | FLOPs | forward ms (IQR) | fwd+bwd ms (IQR) | peak extra MiB |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        mem = f"{r['peak_mib']:.1f}" if "peak_mib" in r else "—"
        lines.append(f"| {r['name']} | {r['params']:,} | {human(r['flops'])} | {_fmt_ms(r['forward_ms'])} | "
                     f"{_fmt_ms(r.get('backward_ms'))} | {mem} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str | Path) -> None:
    """A PNG bar chart of forward and forward+backward latency per module (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - optional extra
        raise SystemExit("plugattn bench --plot needs matplotlib: pip install 'plugattn[plot]'") from e
    names = [r["name"] for r in rows]
    fwd = [r["forward_ms"]["median"] for r in rows]
    bwd = [r.get("backward_ms", {"median": 0})["median"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows)), 4))
    idx = range(len(rows))
    ax.bar([i - 0.2 for i in idx], fwd, width=0.4, label="forward")
    ax.bar([i + 0.2 for i in idx], bwd, width=0.4, label="forward+backward")
    ax.set_xticks(list(idx), names, rotation=60, ha="right")
    ax.set_ylabel("ms (median)")
    r0 = rows[0]
    ax.set_title(f"plugattn bench: {tuple(r0['shape'])} {r0['dtype']} {r0['memory_format']} on {r0['device']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``plugattn bench``."""
    parser.add_argument("names", nargs="*", help="modules to measure (default: all registered)")
    parser.add_argument("--shape", type=int, nargs=4, default=[8, 64, 56, 56], metavar=("N", "C", "H", "W"),
                        help="input shape")
    parser.add_argument("--dtype", default="float32", help="float32, float64, bfloat16 or float16")
    parser.add_argument("--channels-last", action="store_true", help="channels_last input and module")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--threads", type=int, help="torch threads on the CPU (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-backward", action="store_true", help="skip forward+backward timing")
    parser.add_argument("--network", metavar="NET", help="instead: overhead of each module inserted in every block "
                        "of this torchvision network (e.g. resnet50) in a training step, next to timm's and a "
                        "floor gate")
    parser.add_argument("--batch", type=int, default=4, help="--network: batch size")
    parser.add_argument("--size", type=int, default=160, help="--network: input height and width")
    parser.add_argument("--rounds", type=int, default=5, help="--network: timing rounds (minimum taken)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--md", type=Path, help="write a markdown table here")
    parser.add_argument("--plot", type=Path, help="write a PNG chart here")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the table."""
    for name in args.names:
        registry.info(name)  # unknown names fail before any measurement
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available in this PyTorch build or machine")
    torch_dtype = getattr(torch, args.dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ValueError(f"--dtype must name a floating torch dtype (float32, float64, bfloat16, float16), "
                         f"got {args.dtype!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["PLUGATTN_BENCH_THREADS"] = str(args.threads)  # the memory subprocesses too
    if args.network:
        from .network import network_overhead, overhead_table

        rows = network_overhead(args.names or None, network=args.network, batch=args.batch, size=args.size,
                                rounds=args.rounds, verbose=True)
        table = overhead_table(rows)
        print(table)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        if args.md:
            args.md.write_text(table + "\n")
        return 0
    rows = bench(args.names or None, tuple(args.shape), dtype=args.dtype,
                 memory_format="channels_last" if args.channels_last else "contiguous", device=args.device,
                 repeats=args.repeats, warmup=args.warmup, memory=not args.no_memory, backward=not args.no_backward)
    table = to_markdown(rows, with_caption=True)
    print(table)
    noisy = [r["name"] for r in rows if _noisy(r["forward_ms"]) or _noisy(r.get("backward_ms"))]
    if noisy:
        print(f"warning: timings of {', '.join(noisy)} spread by more than 25% between runs (interquartile range "
              f"over median): the machine looks loaded; rerun with more --repeats on a quiet machine",
              file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.md:
        args.md.write_text(table + "\n")
    if args.plot:
        plot(rows, args.plot)
    return 0
