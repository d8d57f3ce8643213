"""What a module costs where users pay for it: its overhead in a network's training step.

Each variant is one copy of a torchvision network (default ResNet-50) with an attention module inserted at
every residual block by :func:`plugattn.insert`: the plain network (``baseline``), a parameter-free floor gate
``x · σ(mean(x))`` (``floor``), plugattn's modules, and timm's implementation of the same module at the same
sites where timm has one (``timm:<name>``). One training step (forward, backward of the summed logits, zeroed
gradients) of every variant is timed per round, round after round in alternating order, and each variant's
time is its minimum over the rounds; overhead = time / baseline time − 1.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torch import Tensor

from .. import registry
from ..integrate import insert
from .bench import interleaved_min

__all__ = ["FloorGate", "timm_factories", "network_overhead", "overhead_table"]


class FloorGate(nn.Module):
    r"""The cheapest channel gate, :math:`y = x \cdot \sigma(\mathrm{mean}_{HW}(x))`: the overhead floor."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x.mean((2, 3), keepdim=True))


def timm_factories() -> dict[str, Callable[[int], nn.Module]]:
    """Registry name → a factory ``f(channels)`` for timm's implementation with plugattn's default configuration.

    Empty when timm is not installed.
    """
    try:
        from timm.layers import (
            CecaModule,
            EcaModule,
            EffectiveSEModule,
            GatherExcite,
            GlobalContext,
            SelectiveKernel,
            SEModule,
        )
        from timm.layers.cbam import CbamModule
        from timm.layers.coord_attn import CoordAttn
    except ImportError:
        return {}
    from ..modules.eca import CircularECA, EfficientChannelAttention

    return {
        "se": lambda c: SEModule(c, rd_channels=c // 16),
        "ese": lambda c: EffectiveSEModule(c),
        "eca": lambda c: EcaModule(kernel_size=EfficientChannelAttention(c).kernel_size),
        "ceca": lambda c: CecaModule(kernel_size=CircularECA(c).kernel_size),
        "cbam": lambda c: CbamModule(c, rd_channels=c // 16, mlp_bias=True),
        "coord": lambda c: CoordAttn(c, rd_channels=max(8, c // 32), bias=True),
        "gc": lambda c: GlobalContext(c, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16),
        "ge": lambda c: GatherExcite(c, use_mlp=False),  # ours: parameter-free by default
        "sk": lambda c: SelectiveKernel(c),
    }


def _resnet(network: str) -> nn.Module:
    try:
        import torchvision
    except ImportError as e:  # pragma: no cover - optional extra
        raise SystemExit("the network benchmark needs torchvision: pip install 'plugattn[timm]'") from e
    return getattr(torchvision.models, network)()


def _step(model: nn.Module, x: Tensor) -> Callable[[], None]:
    def step() -> None:
        model(x).sum().backward()
        model.zero_grad(set_to_none=True)

    return step


def network_overhead(
    names: list[str] | None = None,
    *,
    network: str = "resnet50",
    batch: int = 4,
    size: int = 160,
    rounds: int = 5,
    with_timm: bool = True,
    verbose: bool = False,
) -> list[dict]:
    """Time one training step of ``network`` with each module inserted; one dict per variant.

    Args:
        names: registry names (default: every insertable module).
        network: a torchvision classification network with residual blocks ``insert`` supports.
        batch: N of the input. Default: 4.
        size: H = W of the input. Default: 160.
        rounds: timing rounds; each variant's time is its minimum over them. Default: 5.
        with_timm: also time timm's implementation where it has one.
        verbose: print each round's progress.

    Returns:
        Rows ``{"name", "impl", "ms", "overhead"}`` (``impl``: ``"torchvision"``, ``"floor"``, ``"plugattn"``
        or ``"timm"``), the baseline first.
    """
    names = names or [n for n in registry.list_modules() if registry.info(n).preserves_shape]
    timm = timm_factories() if with_timm else {}
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size)
    variants: dict[str, tuple[str, str, nn.Module]] = {"baseline": ("baseline", "torchvision", _resnet(network))}
    variants["floor"] = ("floor", "floor", insert(_resnet(network), FloorGate))
    for name in names:
        variants[name] = (name, "plugattn", insert(_resnet(network), name))
        if name in timm:
            variants["timm:" + name] = (name, "timm", insert(_resnet(network), timm[name]))
    steps = {key: _step(model.train(), x) for key, (_, _, model) in variants.items()}

    def report(r: int, best: dict[str, float]) -> None:
        if verbose:
            print(f"round {r + 1}/{rounds}: baseline {best['baseline']:.1f} ms", flush=True)

    best = interleaved_min(steps, rounds, on_round=report)
    base = best["baseline"]
    return [{"name": name, "impl": impl, "ms": best[key], "overhead": best[key] / base - 1}
            for key, (name, impl, _) in variants.items()]


def overhead_table(rows: list[dict]) -> str:
    """A markdown table of :func:`network_overhead` rows: overhead of plugattn, timm and the floor per module."""
    by = {(r["name"], r["impl"]): r for r in rows}
    floor = by[("floor", "floor")]["overhead"]
    lines = [f"baseline step {by[('baseline', 'torchvision')]['ms']:.1f} ms; floor gate overhead {floor:+.1%}", "",
             "| module | plugattn overhead | timm overhead | plugattn / timm | plugattn / floor |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["impl"] != "plugattn":
            continue
        t = by.get((r["name"], "timm"))
        tim = f"{t['overhead']:+.1%}" if t else "—"
        ratio = f"{r['overhead'] / t['overhead']:.2f}" if t and t["overhead"] > 0 else "—"
        vs_floor = f"{r['overhead'] / floor:.2f}" if floor > 0 else "—"
        lines.append(f"| {r['name']} | {r['overhead']:+.1%} | {tim} | {ratio} | {vs_floor} |")
    return "\n".join(lines)
