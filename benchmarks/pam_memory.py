"""Peak memory and time of DANet position attention: plugattn's blockwise PAM vs the official explicit formula.

Each (variant, size) runs in a fresh subprocess, which builds the module and the input, warms the kernels up
on a tiny map, then runs one forward pass (float32, no grad). Extra memory is the process's peak resident set
after the pass (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus its resident set just before it
(``VmRSS``), so it counts every temporary of the pass, the output included, but not the input or the weights.
The outputs are saved and compared afterwards (max abs difference against the explicit formula).

    .venv/bin/python benchmarks/pam_memory.py                  # 32², 64², 128²; C=512, batch 2 (~1 min)
    .venv/bin/python benchmarks/pam_memory.py --sizes 32 64 --backward   # forward + backward instead
    .venv/bin/python benchmarks/pam_memory.py --sdpa           # also SDPA with q/k zero-padded to C

Variants:
    explicit   the official PAM_Module forward: full (H·W)² energy and softmax, written out in this file;
    ours       plugattn PositionAttention (default 8 MiB block budget);
    ours_ckpt  (--backward only) the same with grad_checkpoint=True;
    sdpa_pad   (--sdpa) F.scaled_dot_product_attention(scale=1) with q, k zero-padded to C channels, which
               lets the CPU flash kernel run; zero padding leaves QᵀK unchanged. For information only: the
               module does not use it (it bypasses the Gate that capture() hooks).

The explicit formula at 128×128 (C=512, batch 2) needs about 4.7 GiB: run this once, on a machine with room.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import explicit_pam  # noqa: E402

from plugattn.analysis.memory import _status_kib  # noqa: E402


def _rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sdpa_pam(m, x):
    b, c, h, w = x.shape
    q = m.query(x).flatten(2).transpose(1, 2)  # (B, N, C')
    k = m.key(x).flatten(2).transpose(1, 2)
    v = m.value(x).flatten(2).transpose(1, 2)  # (B, N, C)
    pad = v.shape[-1] - q.shape[-1]
    q, k, v = F.pad(q, (0, pad)), F.pad(k, (0, pad)), v.contiguous()  # a strided v sends SDPA to the math path
    out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]  # (B, N, C)
    return m.gamma * out.transpose(1, 2).reshape(b, c, h, w) + x


def worker(variant: str, size: int, channels: int, batch: int, backward: bool, out_path: str) -> None:
    """Runs in a fresh process: one measured pass, results as JSON on stdout."""
    from plugattn.modules.danet import PositionAttention

    torch.manual_seed(0)
    m = PositionAttention(channels, grad_checkpoint=variant == "ours_ckpt")
    with torch.no_grad():
        m.gamma.fill_(1.0)  # γ = 0 would make every variant the identity
    fn = {"explicit": explicit_pam, "sdpa_pad": sdpa_pam}.get(variant, lambda m, x: m(x))
    x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1))

    def run(t):
        if backward:
            t = t.clone().requires_grad_()
            y = fn(m, t)
            y.sum().backward()
            return y.detach()
        with torch.no_grad():
            return fn(m, t)

    run(x[:, :, :4, :4].contiguous())  # load kernels, allocate thread pools
    m.zero_grad(set_to_none=True)
    before, peak_before = _rss_mib(), _peak_mib()
    t0 = time.perf_counter()
    y = run(x)
    seconds = time.perf_counter() - t0
    peak = _peak_mib()
    torch.save(y, out_path)
    print(json.dumps({"extra_mib": peak - before, "seconds": seconds, "stale_peak": peak <= peak_before}))


def measure(variant, size, args, tmp: Path) -> dict:
    out_path = tmp / f"{variant}_{size}.pt"
    cmd = [sys.executable, __file__, "--worker", variant, str(size), "--channels", str(args.channels),
           "--batch", str(args.batch), "--out", str(out_path)] + (["--backward"] if args.backward else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if res.returncode != 0:
        raise RuntimeError(f"{variant} {size}: worker failed\n{res.stderr}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r["out"] = out_path
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128], help="H = W of the feature map")
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--backward", action="store_true", help="measure forward + backward instead of forward")
    p.add_argument("--sdpa", action="store_true", help="also measure SDPA with zero-padded q/k")
    p.add_argument("--worker", nargs=2, metavar=("VARIANT", "SIZE"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.channels, args.batch, args.backward, args.out)
        return

    variants = ["explicit", "ours"] + (["ours_ckpt"] if args.backward else []) + (["sdpa_pad"] if args.sdpa else [])
    mode = "forward+backward" if args.backward else "forward, no grad"
    print(f"DANet PAM, C={args.channels}, batch {args.batch}, float32, {mode}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = f"{'variant':<10} {'size':>8} {'matrix MiB':>10} {'extra MiB':>10} {'time s':>8} " \
             f"{'mem ratio':>9} {'time ratio':>10} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for size in args.sizes:
            n = size * size
            matrix = args.batch * n * n * 4 / 2**20
            results = {v: measure(v, size, args, tmp) for v in variants}
            ref = results["explicit"]
            y_ref = torch.load(ref["out"], weights_only=True)
            for v in variants:
                r = results[v]
                diff = (torch.load(r["out"], weights_only=True) - y_ref).abs().max().item()
                flag = " (peak may be stale)" if r["stale_peak"] else ""
                print(f"{v:<10} {f'{size}x{size}':>8} {matrix:>10.0f} {r['extra_mib']:>10.0f} {r['seconds']:>8.2f} "
                      f"{r['extra_mib'] / ref['extra_mib']:>9.3f} {r['seconds'] / ref['seconds']:>10.2f} "
                      f"{diff:>11.2e}{flag}")
            print(f"{'':<10} {'':>8} max |y| = {y_ref.abs().max().item():.2f}")


if __name__ == "__main__":
    main()
