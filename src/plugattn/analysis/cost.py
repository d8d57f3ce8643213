"""Parameters and FLOPs of every registered module; the ``plugattn list`` command."""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .. import registry

__all__ = ["count_params", "count_flops", "module_table"]

HELP = "list the registered modules with their paper, parameters and FLOPs"


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@torch.no_grad()
def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (matmuls and convs, as counted by ``torch.utils.flop_counter``).

    A multiply-add counts as 2 FLOPs; elementwise work (pooling, gating) is not counted. The pass is the steady
    state: one call runs first, so that work a module caches per input size (FCA's spread DCT filters) is not
    counted as per-call work.
    """
    module(x)
    with FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


def module_table(channels: int = 64, size: tuple[int, int] = (56, 56), batch: int = 1) -> list[dict]:
    """One row per registered module: name, paper, year, kind, params, FLOPs at (batch, channels, *size).

    A module that cannot be built at ``channels`` has ``None`` params and FLOPs and the reason in ``error``.
    """
    rows = []
    x = torch.randn(batch, channels, *size)
    for name in registry.list_modules():
        meta = registry.info(name)
        row: dict = {"name": name, "class": meta.cls.__name__, "paper": meta.paper, "year": meta.year,
                     "kind": meta.kind, "params": None, "flops": None}
        try:
            module = registry.create(name, channels).eval()
            row.update(params=count_params(module), flops=count_flops(module, x))
        except (ValueError, TypeError) as e:  # a module that cannot take this width: n/a in its cells
            row["error"] = str(e)
        rows.append(row)
    return rows


def human(n: float | None, digits: int = 4) -> str:
    """A count with a K/M/G/T suffix and ``digits`` significant digits (``None`` → ``"n/a"``)."""
    if n is None:
        return "n/a"
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.{digits}g}{unit}"
        n /= 1000
    return f"{n:.{digits}g}P"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``plugattn list``."""
    parser.add_argument("--channels", "-c", type=int, default=64, help="input channels C")
    parser.add_argument("--size", "-s", type=int, nargs="+", default=[56], help="H [W] of the input")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table with the official sources")


def run(args: argparse.Namespace) -> int:
    """Print the module table."""
    if args.channels < 1:
        raise ValueError(f"--channels must be >= 1, got {args.channels}")
    size = (args.size[0], args.size[-1])
    rows = module_table(args.channels, size)
    if args.markdown:
        print(f"| name | class | paper | year | kind | official source | params | FLOPs at (1, {args.channels}, "
              f"{size[0]}, {size[1]}) |")
        print("|---|---|---|---:|---|---|---:|---:|")
        for r in rows:
            meta = registry.info(r["name"])
            print(f"| `{r['name']}` | `{r['class']}` | [{r['paper']}]({meta.url}) | {r['year']} | {r['kind']} | "
                  f"{meta.official} | {human(r['params'])} | {human(r['flops'])} |")
        return 0
    print(f"plugattn modules at input (1, {args.channels}, {size[0]}, {size[1]})\n")
    header = f"{'name':<16}{'class':<26}{'year':>5}  {'kind':<16}{'params':>9}{'FLOPs':>10}  paper"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<16}{r['class']:<26}{r['year']:>5}  {r['kind']:<16}{human(r['params']):>9}"
              f"{human(r['flops']):>10}  {r['paper']}")
    for r in rows:
        if "error" in r:
            print(f"n/a {r['name']}: {r['error']}")
    return 0
