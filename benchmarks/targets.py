"""The speed and memory targets of plugattn, each measured as a ratio against its baseline in one run.

    .venv/bin/python benchmarks/targets.py            # every target (a few minutes on 2 CPU cores)
    .venv/bin/python benchmarks/targets.py --quick    # fewer repeats and sizes (about a minute)
    .venv/bin/python benchmarks/targets.py --full     # also (a)'s timing at 128×128 (5 more minutes)
    .venv/bin/python benchmarks/targets.py --only a b --md out.md --json out.json

Targets (CPU, float32):

(a) DANet position attention (``danet_pam``) and the non-local block (``non_local``): peak extra memory of one
    forward pass at 128×128 (C = 512, batch 2) at least 20× below the explicit formulation (the whole
    (H·W)² matrix, ``benchmarks/reference.py``), and no slower than it at 32×32 and above (timed at 32×32 and
    64×64; 128×128 with ``--full``, where one explicit pass takes seconds and 4 GiB).
(b) Triplet Attention at least 4× faster than the official permute-based formulation, forward, at
    (8, 64, 56, 56) and (8, 256, 28, 28).
(c) SE, ECA, CBAM, Coordinate Attention, GC and SK no slower than timm's implementation of the same module,
    built with the equivalent configuration and the same weights (outputs compared), forward and
    forward+backward; CBAM and Coordinate Attention at least 1.3× faster.
(d) SE-style channel gates within 1.5× of the memory-traffic floor at (8, 256, 28, 28): the time of
    ``x.mean((2, 3))`` plus the time of ``x * w`` (w of shape (N, C, 1, 1)) on the same tensor.
(e) channels_last input (module converted too) no slower than contiguous, for every registered module, forward.

Timing: every baseline is timed in the same call as the module it is compared with, interleaved round by round
(:func:`plugattn.analysis.bench.time_interleaved`), median of the rounds; the ratio is the median of the
per-round ratios. Memory: each pass runs in a fresh subprocess (:func:`plugattn.analysis.memory.peak_memory_mib`).

Allocator: on Linux the script re-executes itself with glibc's malloc pinned to keep freed memory for reuse
(``MALLOC_MMAP_THRESHOLD_`` = 32 MiB, ``MALLOC_TRIM_THRESHOLD_`` = 1 GiB; ``--system-malloc`` keeps the defaults),
as a caching allocator (PyTorch's CUDA allocator, jemalloc, tcmalloc) does. With glibc's dynamic defaults the
same code alternates between two speeds depending on the order of earlier allocations, because freed temporaries
of a few MiB are returned to the kernel and re-faulted on the next call (measured: DANet PAM at (8, 64, 56, 56)
took 110 or 280 ms; timm's CoordAttn forward+backward 4 or 16 ms), which swamps the differences measured here.
Status: PASS when the ratio meets the target; ``~`` when it misses by less than the run's own noise (the
larger relative interquartile range of the two timings), which on a shared machine means "not resolvable";
FAIL otherwise. Ratios are always "baseline / ours" for time and memory (higher is better), except (d),
which is "ours / floor" (lower is better).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import plugattn  # noqa: E402
import reference as ref  # noqa: E402
from plugattn.analysis.bench import forward_backward, paired_ratio, time_interleaved  # noqa: E402
from plugattn.analysis.memory import peak_memory_mib  # noqa: E402

SHAPES = [(8, 64, 56, 56), (8, 256, 28, 28)]
ROWS: list[dict] = []


# ---------------------------------------------------------------------------------------------------------------
# bookkeeping


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": os.getloadavg()}


def _spread(t: dict) -> float:
    return (t["p75"] - t["p25"]) / t["median"] if t["median"] > 0 else 0.0


def add_row(target: str, case: str, ours: str, baseline: str, ratio: float, need: float, *, lower_is_better=False,
            noise: float = 0.0, note: str = "") -> dict:
    met = ratio <= need if lower_is_better else ratio >= need
    near = (ratio <= need * (1 + noise)) if lower_is_better else (ratio >= need * (1 - noise))
    status = "PASS" if met else ("~" if near else "FAIL")
    if "info" in target:  # measured for information, not a target
        status = "info"
    r = {"target": target, "case": case, "ours": ours, "baseline": baseline, "ratio": ratio,
         "need": ("≤ " if lower_is_better else "≥ ") + f"{need:g}", "status": status, "noise": noise, "note": note}
    ROWS.append(r)
    print(f"  {status:<4} {case:<44} ratio {ratio:8.2f}  (need {r['need']}; noise ±{100 * noise:.0f}%)  "
          f"ours {ours}  baseline {baseline}{'  ' + note if note else ''}", flush=True)
    return r


def ms(t: dict) -> str:
    return f"{t['median']:.2f} ms"


DEVICE = "cpu"  # set by main() (benchmarks/gpu.py runs the same targets on CUDA)


def timed_pair(fns: dict[str, Callable], a: str, b: str, args) -> tuple[dict, float, float]:
    """Interleaved timings of ``fns``; returns (timings, paired ratio time[a]/time[b], noise)."""
    t = time_interleaved(fns, repeats=args.repeats, warmup=2, min_sample_ms=args.min_sample_ms, device=DEVICE)
    return t, paired_ratio(t, a, b), max(_spread(t[a]), _spread(t[b]))


def rand(shape, fmt=torch.contiguous_format, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(DEVICE).to(memory_format=fmt)


def make(name: str, c: int, **kw) -> nn.Module:
    torch.manual_seed(0)
    return plugattn.create(name, c, **kw).to(DEVICE).eval()


def no_grad(fn: Callable) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return fn()

    return run


# ---------------------------------------------------------------------------------------------------------------
# (a) PAM and non-local: memory and time vs the explicit matrix


def target_a(args) -> None:
    print("\n(a) position attention and non-local: explicit (H·W)² formulation vs plugattn (forward, no grad)")
    c, b, size = 512, 2, 128
    for name in ("danet_pam", "non_local"):
        shape = (b, c, size, size)
        ours = peak_memory_mib("plugattn:create", [name, c], shape=shape, device=DEVICE)
        base = peak_memory_mib("reference:build_reference", [name, c], shape=shape, sys_path=[str(HERE)],
                               device=DEVICE)
        add_row("a", f"{name} peak extra memory {size}×{size} C={c} N={b}", f"{ours:.0f} MiB", f"{base:.0f} MiB",
                base / ours, 20.0)
    for size in args.attn_sizes:
        for name in ("danet_pam", "non_local"):
            m = make(name, c)
            with torch.no_grad():
                if hasattr(m, "gamma"):
                    m.gamma.fill_(0.5)
            x = rand((b, c, size, size))
            r = ref.ReferenceModule(name, m)
            heavy = size >= 96 and DEVICE == "cpu"
            # at 128×128 on the CPU one call takes seconds and warms itself up: two rounds, no warm-up
            t = time_interleaved({"ours": no_grad(lambda: m(x)), "explicit": no_grad(lambda: r(x))},
                                 repeats=2 if heavy else args.repeats, warmup=0 if heavy else 1,
                                 min_sample_ms=0 if heavy else args.min_sample_ms, device=DEVICE)
            add_row("a", f"{name} forward time {size}×{size} C={c} N={b}", ms(t["ours"]), ms(t["explicit"]),
                    paired_ratio(t, "explicit", "ours"), 1.0, noise=max(_spread(t["ours"]), _spread(t["explicit"])))
            del m, r, x


# ---------------------------------------------------------------------------------------------------------------
# (b) Triplet vs the permute-based formulation


def target_b(args) -> None:
    print("\n(b) Triplet Attention vs the official permute-based formulation (forward, float32)")
    for shape in args.shapes:
        m = make("triplet", shape[1])
        x = rand(shape)
        r = ref.ReferenceModule("triplet", m)
        with torch.no_grad():
            diff = (m(x) - r(x)).abs().max().item()
        t, ratio, noise = timed_pair({"ours": no_grad(lambda: m(x)), "permute": no_grad(lambda: r(x))},
                                     "permute", "ours", args)
        add_row("b", f"triplet forward {shape}", ms(t["ours"]), ms(t["permute"]), ratio, 4.0, noise=noise,
                note=f"max abs diff {diff:.1e}")


# ---------------------------------------------------------------------------------------------------------------
# (c) vs timm


def _timm_pairs(c: int) -> dict[str, tuple[nn.Module, nn.Module, str]]:
    """name → (ours, timm's, note): the same configuration and the same weights."""
    from timm.layers import EcaModule, GlobalContext, SelectiveKernel, SEModule
    from timm.layers.cbam import CbamModule
    from timm.layers.coord_attn import CoordAttn

    torch.manual_seed(0)
    pairs = {}
    t = SEModule(c, rd_channels=c // 16)  # the official (Caffe) width C//16 with biases = our default
    pairs["se"] = (plugattn.from_official("se_timm", t.state_dict(), channels=c, rd_channels=c // 16), t,
                   "timm SEModule(rd_channels=C//16)")

    ours = plugattn.create("eca", c)
    t = EcaModule(kernel_size=ours.kernel_size)
    with torch.no_grad():
        ours.conv.weight.copy_(t.conv.weight)
    pairs["eca"] = (ours, t, f"timm EcaModule(kernel_size={ours.kernel_size})")

    ours = plugattn.create("cbam", c)
    t = CbamModule(c, rd_channels=c // 16, mlp_bias=True)
    with torch.no_grad():
        for a, b in ((ours.channel.fc1, t.channel.fc1), (ours.channel.fc2, t.channel.fc2)):
            a.weight.copy_(b.weight.view_as(a.weight))
            a.bias.copy_(b.bias)
        conv, bn = ref.zpool_parts(ours.spatial.attn)
        conv.weight.copy_(t.spatial.conv.conv.weight[:, [1, 0]])  # timm pools (mean, max), official (max, mean)
        for k in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, k).copy_(getattr(t.spatial.conv.bn, k))
    pairs["cbam"] = (ours, t, "timm CbamModule(rd_channels=C//16, mlp_bias=True); timm pools mean-then-max "
                              "(official: max-then-mean), equal up to the conv weight order")

    mip = max(8, c // 32)
    t = CoordAttn(c, rd_channels=mip, bias=True)
    pairs["coord"] = (plugattn.from_official("coord", t.state_dict(), inp=c, oup=c), t,
                      f"timm CoordAttn(rd_channels={mip}, bias=True)")

    t = GlobalContext(c, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16)
    pairs["gc"] = (plugattn.from_official("gc_timm", t.state_dict(), channels=c, fuse_add=True, fuse_scale=False,
                                          rd_ratio=1 / 16), t, "timm GlobalContext(fuse_add, rd_ratio=1/16)")

    t = SelectiveKernel(c)
    pairs["sk"] = (plugattn.from_official("sk_timm", t.state_dict(), in_channels=c), t,
                   "timm SelectiveKernel defaults (groups=1, split_input) on both sides")
    for a, b, _ in pairs.values():
        a.to(DEVICE).eval()
        b.to(DEVICE).eval()
    return pairs


def target_c(args) -> None:
    print("\n(c) vs timm.layers (same configuration and weights; forward in eval, forward+backward in train)")
    try:
        import timm  # noqa: F401
    except ImportError:
        print("  skipped: timm is not installed (pip install 'plugattn[timm]')")
        return
    need = {"cbam": 1.3, "coord": 1.3}
    for shape in args.shapes:
        pairs = _timm_pairs(shape[1])
        x = rand(shape)
        small = rand((2, shape[1], 9, 7), seed=1)
        for name, (ours, theirs, note) in pairs.items():
            with torch.no_grad():
                diff = (ours(small) - theirs(small)).abs().max().item()
            t, ratio, noise = timed_pair({"ours": no_grad(lambda: ours(x)), "timm": no_grad(lambda: theirs(x))},
                                         "timm", "ours", args)
            add_row("c", f"{name} forward {shape}", ms(t["ours"]), ms(t["timm"]), ratio, need.get(name, 1.0),
                    noise=noise, note=f"max abs diff {diff:.1e}; {note}")
            ours.train()
            theirs.train()
            t, ratio, noise = timed_pair({"ours": forward_backward(ours, x), "timm": forward_backward(theirs, x)},
                                         "timm", "ours", args)
            ours.eval()
            theirs.eval()
            add_row("c", f"{name} forward+backward {shape}", ms(t["ours"]), ms(t["timm"]), ratio,
                    need.get(name, 1.0), noise=noise)


# ---------------------------------------------------------------------------------------------------------------
# (d) SE-style gates vs the memory-traffic floor

SE_STYLE = ["se", "ese", "eca", "ceca", "ge", "eca_ms", "fca"]  # one pooling pass + one broadcast multiply
INFO_GATES = ["srm", "cbam_channel", "gc", "cluster_se"]  # more than one pass by design (for information)


def target_d(args) -> None:
    shape = (8, 256, 28, 28)
    print(f"\n(d) channel gates vs the memory-traffic floor t(x.mean((2, 3))) + t(x * w) at {shape}, forward")
    x = rand(shape)
    w = torch.rand(shape[0], shape[1], 1, 1, device=DEVICE)
    names = [n for n in SE_STYLE + INFO_GATES if n in plugattn.list_modules()]
    mods = {n: make(n, shape[1]) for n in names}
    fns = {"mean": lambda: x.mean((2, 3), keepdim=True), "mul": lambda: x * w}
    fns.update({n: no_grad(lambda m=m: m(x)) for n, m in mods.items()})
    t = time_interleaved(fns, repeats=args.repeats, warmup=2, min_sample_ms=args.min_sample_ms, device=DEVICE)
    floor = [a + b for a, b in zip(t["mean"]["times"], t["mul"]["times"])]
    floor_ms = statistics.median(floor)
    print(f"  floor: mean {ms(t['mean'])} + multiply {ms(t['mul'])} = {floor_ms:.2f} ms")
    for n in names:
        ratio = statistics.median(a / f for a, f in zip(t[n]["times"], floor))
        info = n in INFO_GATES
        add_row("d" if not info else "d (info)", f"{n} forward {shape}", ms(t[n]), f"floor {floor_ms:.2f} ms", ratio,
                1.5, lower_is_better=True, noise=max(_spread(t[n]), _spread(t["mean"]), _spread(t["mul"])),
                note="several passes by design; not a target" if info else "")


# ---------------------------------------------------------------------------------------------------------------
# (e) channels_last vs contiguous


def target_e(args) -> None:
    print("\n(e) channels_last vs contiguous input (module converted too), forward, every registered module")
    for shape in args.cl_shapes:
        x = rand(shape)
        x_cl = x.to(memory_format=torch.channels_last)
        # the PyTorch kernels the modules are made of, on the same data in the two layouts (for information)
        w = torch.rand(shape[0], shape[1], 1, 1, device=DEVICE)
        prims = {"x.mean((2, 3))": lambda t: t.mean((2, 3)), "x.amax(1)": lambda t: t.amax(1),
                 "x.mean(1)": lambda t: t.mean(1), "x * w, w (N, C, 1, 1)": lambda t: t * w}
        for label, op in prims.items():
            t, ratio, noise = timed_pair({"contiguous": no_grad(lambda op=op: op(x)),
                                          "channels_last": no_grad(lambda op=op: op(x_cl))},
                                         "contiguous", "channels_last", args)
            add_row("e (info)", f"kernel {label} {shape}", "cl " + ms(t["channels_last"]),
                    "contig " + ms(t["contiguous"]), ratio, 1.0, noise=noise, note="PyTorch kernel, not a module")
        for name in args.names or plugattn.list_modules():
            m = make(name, shape[1])
            m_cl = make(name, shape[1]).to(memory_format=torch.channels_last)
            m_cl.load_state_dict(m.state_dict())
            t, ratio, noise = timed_pair({"contiguous": no_grad(lambda: m(x)),
                                          "channels_last": no_grad(lambda: m_cl(x_cl))},
                                         "contiguous", "channels_last", args)
            add_row("e", f"{name} {shape}", "cl " + ms(t["channels_last"]), "contig " + ms(t["contiguous"]), ratio,
                    1.0, noise=noise)


# ---------------------------------------------------------------------------------------------------------------


def to_markdown(rows: list[dict], info: dict) -> str:
    out = [f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} torch threads, torch {info['torch']}, "
           f"Python {info['python']}; load average {info['loadavg_start'][0]:.1f} at start, "
           f"{info.get('loadavg_end', (0,))[0]:.1f} at end; {info.get('seconds', 0):.0f} s; malloc "
           f"{info.get('malloc', 'system defaults')}.", ""]
    for target in sorted({r["target"] for r in rows}):
        out += [f"| target {target} | ours | baseline | ratio | need | status | note |",
                "|---|---:|---:|---:|---|---|---|"]
        for r in rows:
            if r["target"] == target:
                out.append(f"| {r['case']} | {r['ours']} | {r['baseline']} | {r['ratio']:.2f} | {r['need']} | "
                           f"{r['status']} | {r['note']} |")
        out.append("")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and sizes (a smoke run)")
    p.add_argument("--full", action="store_true", help="also time (a) at 128×128 (minutes on a CPU)")
    p.add_argument("--only", nargs="+", choices=list("abcde"), default=list("abcde"))
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds per timing (default 9; quick 3)")
    p.add_argument("--min-sample-ms", type=float, default=None, help="least time of one sample (default 40; quick 10)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--names", nargs="+", help="modules for (e) (default: every registered module)")
    p.add_argument("--system-malloc", action="store_true", help="keep glibc's malloc defaults (see the docstring)")
    p.add_argument("--json", type=Path, help="write every row and the machine description here")
    p.add_argument("--md", type=Path, help="write the tables as markdown here")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 9)
    args.min_sample_ms = args.min_sample_ms if args.min_sample_ms is not None else (10.0 if args.quick else 40.0)
    args.shapes = [SHAPES[1]] if args.quick else SHAPES
    args.cl_shapes = [(2, 64, 28, 28)] if args.quick else SHAPES
    args.attn_sizes = [32] if args.quick else [32, 64, 128] if args.full else [32, 64]
    return args


def run(args: argparse.Namespace, device: str = "cpu", info: dict | None = None) -> list[dict]:
    """Measure the targets in ``args.only`` on ``device``; print them and return the rows."""
    global DEVICE
    DEVICE = device
    if args.threads:
        torch.set_num_threads(args.threads)
    info = info or machine()
    info["malloc"] = getattr(args, "malloc", "system defaults")
    print(f"plugattn targets on {device} — {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
          f"{info['threads']} threads, load average {info['loadavg_start'][0]:.1f}")
    start = len(ROWS)
    t0 = time.perf_counter()
    for key in args.only:
        {"a": target_a, "b": target_b, "c": target_c, "d": target_d, "e": target_e}[key](args)
    info["loadavg_end"] = os.getloadavg()
    info["seconds"] = time.perf_counter() - t0
    rows = ROWS[start:]
    counts = {s: sum(r["status"] == s for r in rows if "info" not in r["target"]) for s in ("PASS", "~", "FAIL")}
    print(f"\nsummary: {counts['PASS']} PASS, {counts['~']} within noise, {counts['FAIL']} FAIL "
          f"({info['seconds']:.0f} s; load average {info['loadavg_end'][0]:.1f} at the end)")
    for r in rows:
        if r["status"] == "FAIL" and "info" not in r["target"]:
            print(f"  FAIL ({r['target']}) {r['case']}: {r['ratio']:.2f}, need {r['need']}")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "machine": info, "rows": rows}, indent=1))
    if args.md:
        args.md.write_text(to_markdown(rows, info) + "\n")
    return rows


MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def pin_malloc(argv: list[str], script: str = __file__) -> None:
    """Re-execute ``script`` (default: this one) with :data:`MALLOC_ENV` set (glibc reads it at start-up only)."""
    if sys.platform.startswith("linux") and not all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, os.path.abspath(script), *argv], {**os.environ, **MALLOC_ENV})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.system_malloc:
        pin_malloc(argv)
    args.malloc = "system defaults" if args.system_malloc else "pinned: " + ", ".join(
        f"{k}={v}" for k, v in MALLOC_ENV.items())
    print(f"malloc: {args.malloc}")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
