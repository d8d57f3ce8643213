"""Speed of plugattn's attention networks against torchvision + timm's attention at the same sites; SeaFormer-T on CPU.

    .venv/bin/python benchmarks/models_speed.py                      # about 3 minutes on 1 thread
    .venv/bin/python benchmarks/models_speed.py --rounds 5 --md out.md

Part 1 (issue 12): each network of ``plugattn.models`` next to the same torchvision (or timm) network with timm's
module put in at the same sites by ``plugattn.insert``: one training step (forward, cross-entropy, backward, SGD
step) and one inference pass (batch 1, 224², eval, no gradients). The ratio is ours / theirs; an A/A row (two
copies of the same timm-built network) shows the noise of the machine. Part 2: CPU latency per image of SeaFormer-T
(classification and segmentation) and torchvision's MobileNetV3-Large at 224² and 512², with parameters and
FLOPs (a multiply-add = 2 FLOPs). Every time is the minimum over interleaved rounds
(:func:`plugattn.analysis.bench.interleaved_min`). Each call's process CPU time is recorded as well: on a shared
machine the wall clock also counts the time spent waiting for a core. With one thread, CPU time shows only the
work itself (memory stalls caused by other processes still count). Ratios are given on both clocks.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import plugattn
from plugattn.analysis.bench import interleaved_min

Builder = Callable[[], nn.Module]


def _tv(name: str) -> nn.Module:
    import torchvision

    return getattr(torchvision.models, name)()


def _stage_blocks(stage: int) -> Callable[[str, nn.Module], bool]:
    """``where`` predicate: the residual blocks of torchvision ResNet stage ``layer{stage}``."""
    return lambda path, _m: path.startswith(f"layer{stage}.") and path.count(".") == 1


def _se_timm() -> nn.Module:
    from timm.layers import SEModule

    # moskomule's SELayer: C → C/16 → C without biases, after bn3 (insert's default site)
    return plugattn.insert(_tv("resnet50"), SEModule, rd_ratio=1 / 16, rd_divisor=1, bias=False)


def _cbam_timm() -> nn.Module:
    from timm.layers.cbam import CbamModule

    return plugattn.insert(_tv("resnet50"), CbamModule, rd_ratio=1 / 16, rd_divisor=1, mlp_bias=True)


def _eca_k(cls: type[nn.Module], k: int) -> Callable[[int], nn.Module]:
    # timm's EcaModule(channels, ...) replaces kernel_size by its adaptive rule; without channels it keeps k
    return lambda _channels: cls(kernel_size=k)


def _eca_timm() -> nn.Module:
    from timm.layers import EcaModule

    net = _tv("resnet50")
    for stage, k in zip((1, 2, 3, 4), (3, 5, 5, 7)):  # the released k3557
        plugattn.insert(net, _eca_k(EcaModule, k), where=_stage_blocks(stage))
    return net


def _sk_timm() -> nn.Module:
    import timm

    # ResNeXt-50 32x4d widths with SelectiveKernel (3×3 and dilated 3×3, group 32) replacing the 3×3 conv
    return timm.create_model("skresnext50_32x4d")


def _coord_timm() -> nn.Module:
    from timm.layers.coord_attn import CoordAttn

    net = _tv("mobilenet_v2")
    for i in range(2, 18):  # the 16 expanding blocks: CA on the depthwise Conv-BN-ReLU6 output
        hidden = net.features[i].conv[1][0].out_channels
        plugattn.insert(net, CoordAttn, where=[f"features.{i}.conv.1"], rd_channels=max(8, hidden // 32), bias=True)
    return net


def _eca_mbv2_timm() -> nn.Module:
    from timm.layers import EcaModule

    net = _tv("mobilenet_v2")
    plugattn.insert(net, _eca_k(EcaModule, 1), where=[f"features.{i}" for i in range(1, 11)])
    plugattn.insert(net, _eca_k(EcaModule, 3), where=[f"features.{i}" for i in range(11, 18)])
    return net


def _ours(name: str) -> Builder:
    return lambda: plugattn.models.create_model(name)


#: (ours, theirs, what theirs is, training input size)
PAIRS: dict[str, tuple[Builder, Builder, str, int]] = {
    "se_resnet50_moskomule": (_ours("se_resnet50_moskomule"), _se_timm,
                              "tv resnet50 + timm SEModule (bias-free, C/16)", 160),
    "cbam_resnet50": (_ours("cbam_resnet50"), _cbam_timm, "tv resnet50 + timm CbamModule (C/16, 7×7)", 224),
    "eca_resnet50": (_ours("eca_resnet50"), _eca_timm, "tv resnet50 + timm EcaModule (k 3/5/5/7)", 160),
    "sknet50": (_ours("sknet50"), _sk_timm, "timm skresnext50_32x4d", 160),
    "coord_mobilenet_v2": (_ours("coord_mobilenet_v2"), _coord_timm,
                           "tv mobilenet_v2 + timm CoordAttn after the depthwise conv", 160),
    "eca_mobilenet_v2": (_ours("eca_mobilenet_v2"), _eca_mbv2_timm,
                         "tv mobilenet_v2 + timm EcaModule in all 17 blocks (k 1/3)", 160),
}


def train_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    """One SGD training step of ``model`` on ``(x, target)``."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
        opt.step()

    return step


def infer(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One eval-mode forward pass without gradients."""
    model.eval()

    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


class _Clocked:
    """A timed function that also records the process CPU time (ms) of every call."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn, self.cpu = fn, []

    def __call__(self) -> None:
        t0 = time.process_time()
        self.fn()
        self.cpu.append((time.process_time() - t0) * 1e3)


def timed(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, dict[str, float]]:
    """``{name: {"wall": min ms, "cpu": min CPU ms}}`` over interleaved rounds (the warm-up call left out)."""
    clocked = {k: _Clocked(f) for k, f in fns.items()}
    wall = interleaved_min(clocked, rounds)
    return {k: {"wall": wall[k], "cpu": min(c.cpu[1:])} for k, c in clocked.items()}


def _build(fn: Builder) -> nn.Module:
    torch.manual_seed(0)
    return fn()


def compare(names: list[str], batch: int, rounds_train: int, rounds_infer: int) -> list[dict]:
    """Part 1: one row per pair (and the A/A control), times in ms."""
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(1, 3, 224, 224, generator=g)
    rows = []
    for name in names:
        ours_fn, theirs_fn, what, size = PAIRS[name]
        ours, theirs = _build(ours_fn), _build(theirs_fn)
        n = batch if size == 160 else max(1, batch * 160 * 160 // (224 * 224))  # CBAM's AvgPool2d(7) needs 224
        x = torch.randn(n, 3, size, size, generator=g)
        y = torch.randint(0, 1000, (n,), generator=g)
        tr = timed({"ours": train_step(ours, x, y), "theirs": train_step(theirs, x, y)}, rounds_train)
        inf = timed({"ours": infer(ours, x1), "theirs": infer(theirs, x1)}, rounds_infer)
        if _params(ours) != _params(theirs):
            print(f"warning: {name}: {_params(ours)} parameters, theirs {_params(theirs)}")
        rows.append({"name": name, "theirs": what, "train_input": (n, size), "train": tr, "infer": inf})
        print(_row_md(rows[-1]), flush=True)
    return rows


def control(batch: int, rounds_train: int, rounds_infer: int) -> dict:
    """A/A: two identical copies of the timm-SE ResNet-50; their ratio is the noise of the measurement."""
    g = torch.Generator().manual_seed(1)
    a, b = _build(_se_timm), _build(_se_timm)
    x = torch.randn(batch, 3, 160, 160, generator=g)
    y = torch.randint(0, 1000, (batch,), generator=g)
    x1 = torch.randn(1, 3, 224, 224, generator=g)
    tr = timed({"ours": train_step(a, x, y), "theirs": train_step(b, x, y)}, rounds_train)
    inf = timed({"ours": infer(a, x1), "theirs": infer(b, x1)}, rounds_infer)
    row = {"name": "A/A control", "theirs": "a second copy of the timm-SE ResNet-50", "train_input": (batch, 160),
           "train": tr, "infer": inf}
    print(_row_md(row), flush=True)
    return row


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _flops(m: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as c, torch.no_grad():
        m.eval()(x)
    return c.get_total_flops()


PAIR_HEAD = ("| network (ours) | theirs | train input | train step CPU ms ours / theirs | ratio CPU (wall) | "
             "infer 224² CPU ms ours / theirs | ratio CPU (wall) |\n|---|---|---|---:|---:|---:|---:|")


def _row_md(r: dict) -> str:
    tr, inf = r["train"], r["infer"]
    n, s = r["train_input"]

    def ratios(t: dict) -> str:
        return f"{t['ours']['cpu'] / t['theirs']['cpu']:.2f} ({t['ours']['wall'] / t['theirs']['wall']:.2f})"

    return (f"| `{r['name']}` | {r['theirs']} | {n}×{s}² | {tr['ours']['cpu']:.0f} / {tr['theirs']['cpu']:.0f} | "
            f"{ratios(tr)} | {inf['ours']['cpu']:.1f} / {inf['theirs']['cpu']:.1f} | {ratios(inf)} |")


def seaformer(rounds: int) -> list[str]:
    """Part 2: SeaFormer-T (cls, seg) and MobileNetV3-Large, batch 1 inference at 224² and 512²."""
    nets = {"seaformer_t": _build(_ours("seaformer_t")), "seaformer_seg_t": _build(_ours("seaformer_seg_t")),
            "tv mobilenet_v3_large": _build(lambda: _tv("mobilenet_v3_large"))}
    lines = ["| network | input | params (M) | GFLOPs | CPU ms / image | wall ms / image | ratio to MobileNetV3-L, "
             "CPU (wall) |", "|---|---|---:|---:|---:|---:|---:|"]
    ref = "tv mobilenet_v3_large"
    for size in (224, 512):
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        best = timed({k: infer(m, x) for k, m in nets.items()}, rounds)
        for k, m in nets.items():
            name = f"`{k}`" if not k.startswith("tv") else k
            b = best[k]
            lines.append(f"| {name} | {size}² | {_params(m) / 1e6:.2f} | {_flops(m, x) / 1e9:.3g} | {b['cpu']:.1f} | "
                         f"{b['wall']:.1f} | {b['cpu'] / best[ref]['cpu']:.2f} ({b['wall'] / best[ref]['wall']:.2f}) |")
            print(lines[-1], flush=True)
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"networks (default: all of {', '.join(PAIRS)})")
    p.add_argument("--batch", type=int, default=8, help="training batch at 160² (CBAM: the same pixels at 224²)")
    p.add_argument("--rounds", type=int, default=3, help="training rounds (inference: twice as many + 1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--md", type=Path, help="also write the tables here")
    args = p.parse_args()
    unknown = [n for n in args.names if n not in PAIRS]
    if unknown:
        raise ValueError(f"names: unknown {unknown}; expected some of {list(PAIRS)}")
    torch.set_num_threads(args.threads)
    head = (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.machine()}; "
            f"minimum of {args.rounds} training / {2 * args.rounds + 1} inference interleaved rounds")
    print(head)
    print(PAIR_HEAD)
    rows = compare(args.names or list(PAIRS), args.batch, args.rounds, 2 * args.rounds + 1)
    rows.append(control(args.batch, args.rounds, 2 * args.rounds + 1))
    print()
    sea = seaformer(2 * args.rounds + 1)
    if args.md:
        text = [head, "", PAIR_HEAD, *(_row_md(r) for r in rows), "", *sea]
        args.md.write_text("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
