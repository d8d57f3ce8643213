"""Peak extra memory of one forward (or forward+backward) pass.

CUDA: ``torch.cuda.max_memory_allocated`` around the pass. CPU: PyTorch keeps no allocator statistics, so
the pass runs in a fresh subprocess that builds the module and input, warms the kernels up on a tiny map,
resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``), runs the pass once and reads
``VmHWM``. Extra memory is that peak minus the resident set just before the pass: every temporary of the
pass and its output, not the input or the weights.

The subprocess runs with glibc's mmap threshold fixed at 1 MiB (``MALLOC_MMAP_THRESHOLD_``, overriding the
caller's malloc settings), so every tensor of 1 MiB or more is its own mapping and leaves the resident set when
it is freed.
With glibc's default dynamic threshold, freed blocks of up to 32 MiB stay resident in the heap and the peak
depends on the order of allocations (measured: the same non-local forward pass at 128×128 peaked anywhere
between 167 and 207 MiB from one run to the next; with the fixed threshold, 167 MiB every time).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import subprocess
import sys
from typing import Any

import torch

__all__ = ["peak_memory_mib"]

_MIB = 1024 * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _build(spec: dict[str, Any]):
    torch.manual_seed(0)
    dtype = getattr(torch, spec["dtype"])
    device = torch.device(spec["device"])
    module = _resolve(spec["factory"])(*spec.get("args", []), **spec.get("kwargs", {}))
    module = module.to(device=device, dtype=dtype).train(spec["backward"])
    fmt = torch.channels_last if spec["channels_last"] else torch.contiguous_format
    module = module.to(memory_format=fmt)
    n, c, h, w = spec["shape"]
    x = torch.randn(n, c, h, w, device=device, dtype=dtype).to(memory_format=fmt)
    return module, x, fmt


def _run(module, x, backward: bool):
    if backward:
        x = x.detach().requires_grad_()
        out = module(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.sum().backward()
    else:
        with torch.no_grad():
            module(x)


def _measure_here(spec: dict[str, Any]) -> float:
    module, x, fmt = _build(spec)
    n, c, h, w = x.shape  # warm up at the same batch on a small map (kernel set-up is not the pass)
    small = torch.randn(n, c, min(h, 4), min(w, 4), dtype=x.dtype, device=x.device).to(memory_format=fmt)
    _run(module, small, spec["backward"])
    module.zero_grad(set_to_none=True)
    gc.collect()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _run(module, x, spec["backward"])
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / _MIB
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    _run(module, x, spec["backward"])
    return (_status_kib("VmHWM") - before) / 1024


def peak_memory_mib(
    factory: str,
    args: list | tuple = (),
    kwargs: dict | None = None,
    *,
    shape: tuple[int, int, int, int],
    dtype: str = "float32",
    device: str = "cpu",
    channels_last: bool = False,
    backward: bool = False,
    sys_path: list[str] | None = None,
) -> float:
    """Peak extra MiB of one pass of ``factory(*args, **kwargs)`` on a random input of ``shape``.

    ``factory`` is an importable ``"module:attr"`` (``"plugattn:create"`` with ``args=["se", 64]``). On CPU
    the pass runs in a subprocess (``sys_path`` is prepended to its import path); on CUDA, here.
    """
    spec = {"factory": factory, "args": list(args), "kwargs": kwargs or {}, "shape": list(shape), "dtype": dtype,
            "device": device, "channels_last": channels_last, "backward": backward}
    if device.startswith("cuda"):
        return _measure_here(spec)
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)  # see the module docstring
    for var in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):  # settings that keep freed memory resident
        env.pop(var, None)
    if sys_path:
        env["PYTHONPATH"] = os.pathsep.join([*sys_path, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "plugattn.analysis.memory"], input=json.dumps(spec), capture_output=True,
        text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement of {factory}{tuple(args)} failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("PLUGATTN_BENCH_THREADS", torch.get_num_threads())))
    print(_measure_here(json.loads(sys.stdin.read())))
