"""Module overhead inside a torchvision ResNet-50 training step, next to timm's and a floor gate; the targets.

    .venv/bin/python benchmarks/network.py                  # every insertable module (about 10 minutes, 2 cores)
    .venv/bin/python benchmarks/network.py se eca cbam gc   # a subset
    .venv/bin/python benchmarks/network.py --rounds 9 --md out.md

Setting (issue 10): batch 4, 160×160, the module inserted in every bottleneck (16 sites), forward + backward,
each variant's minimum over interleaved rounds (``plugattn.analysis.network``). Targets: every module's
overhead ≤ timm's; CBAM and GC ≤ 0.7× timm's; SE and ECA within 1.5× the floor gate's overhead.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from plugattn.analysis.network import network_overhead, overhead_table

TARGETS = {"cbam": 0.7, "gc": 0.7}  # plugattn overhead / timm overhead at most this (default: 1.0)
FLOOR_TARGETS = {"se": 1.5, "eca": 1.5}  # plugattn overhead / floor overhead at most this


def check(rows: list[dict]) -> list[str]:
    """One PASS/FAIL line per target the rows cover."""
    by = {(r["name"], r["impl"]): r["overhead"] for r in rows}
    floor = by[("floor", "floor")]
    out = []
    for (name, impl), ours in by.items():
        if impl != "plugattn":
            continue
        if (name, "timm") in by:
            need, theirs = TARGETS.get(name, 1.0), by[(name, "timm")]
            ok = ours <= need * theirs
            out.append(f"{'PASS' if ok else 'FAIL'} {name}: overhead {ours:+.1%} vs timm {theirs:+.1%} "
                       f"(ratio {ours / theirs:.2f}, need ≤ {need})")
        if name in FLOOR_TARGETS:
            need = FLOOR_TARGETS[name]
            ok = ours <= need * floor
            out.append(f"{'PASS' if ok else 'FAIL'} {name}: overhead {ours:+.1%} vs floor {floor:+.1%} "
                       f"(ratio {ours / floor:.2f}, need ≤ {need})")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="registry names (default: every insertable module)")
    p.add_argument("--network", default="resnet50")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--md", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = network_overhead(args.names or None, network=args.network, batch=args.batch, size=args.size,
                            rounds=args.rounds, verbose=True)
    head = (f"{args.network}, batch {args.batch}, {args.size}×{args.size}, train step, min of {args.rounds} rounds; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{platform.processor() or platform.machine()}")
    text = "\n".join([head, "", overhead_table(rows), "", *check(rows)])
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
