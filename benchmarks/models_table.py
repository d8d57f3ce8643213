"""Write docs/models.md: every registered network with its parameters and FLOPs, beside the papers' numbers.

    .venv/bin/python benchmarks/models_table.py [--out docs/models.md]

Parameters and FLOPs (a multiply-add = 2 FLOPs; matrix products and convolutions, by ``torch.utils.flop_counter``)
are computed by building each network on the meta device, so nothing is allocated. The paper-reported numbers
are the data table :data:`PAPER` below, each entry with its source.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import plugattn
from plugattn.analysis.cost import human


@dataclass(frozen=True)
class Reported:
    """Numbers a paper or an official README reports for one network (``None``: not reported / not verified).

    Attributes:
        params_m: parameters in millions, as printed.
        cost_g: compute in G, as printed (see ``cost_unit``).
        cost_unit: what ``cost_g`` counts: ``"MACs"`` (multiply-adds, whatever the paper calls them) or ``"FLOPs"``.
        metric: ``"top-1"`` (ImageNet val, single 224 crop, %) or ``"mIoU"`` (%), with the split in ``note``.
        paper: the metric as the paper reports it.
        released: the metric of the released checkpoint, as its README reports it.
        source: where each number comes from.
        note: anything needed to read the numbers.
    """

    params_m: float | None = None
    cost_g: float | None = None
    cost_unit: str = "MACs"
    metric: str = "top-1"
    paper: float | None = None
    released: float | None = None
    source: str = ""
    note: str = ""


_SE_README = "hujie-frank/SENet README Table 1 (released Caffe models, top-1 error)"
_ECA_README = "BangguWu/ECANet README (ImageNet table; M/G there are ÷2²⁰/÷2³⁰, see below)"
_TRIPLET = "landskape-ai/triplet-attention README (ImageNet table, k = 7 rows, top-1 error)"
_SK = "SKNet paper Table 2 = implus/SKNet README Table 2 (224 crop, top-1 error; official Caffe models)"
_SEA_CLS = "fudan-zvg/SeaFormer @ 9718d05b, seaformer-cls/README.md Model Zoo"
_SEA_SEG = "fudan-zvg/SeaFormer @ 9718d05b, seaformer-seg/README.md (ADE20K, 512×512, 4x8 160k rows, single scale)"
_SEA_CITY = "fudan-zvg/SeaFormer @ 9718d05b, seaformer-seg/README.md (Cityscapes val)"

#: Paper / official-README numbers, each verified against the source named in it (2026-12). Numbers that could not
#: be checked against a primary source are left out (``None``), not guessed.
PAPER: dict[str, Reported] = {
    "se_resnet50": Reported(
        cost_g=3.87, released=77.63,
        source=f"paper §4 (\"SE-ResNet-50 requires ~3.87 GFLOPs\", 0.26% over ResNet-50's 3.86); {_SE_README}: "
               "error 22.37",
        note="paper: ~2.5 M parameters over ResNet-50's ~25 M"),
    "se_resnet101": Reported(released=78.25, source=f"{_SE_README}: error 21.75"),
    "se_resnet152": Reported(released=78.66, source=f"{_SE_README}: error 21.34"),
    "se_resnet50_moskomule": Reported(
        released=77.06, source="moskomule/senet.pytorch README (seresnet50-60a8950a85b2b.pkl, 8-GPU run)"),
    "cbam_resnet50": Reported(
        paper=77.34, released=77.622,
        source="paper's ImageNet result as listed by paper-results indexes (the table itself not read); "
               "Jongchan/attention-module README (ACC@1 77.622, 100 epochs)"),
    "bam_resnet50": Reported(
        released=76.86, source="Jongchan/attention-module README (ACC@1 76.860, 90 epochs)"),
    "eca_resnet50": Reported(params_m=24.37, cost_g=3.86, paper=77.48, released=77.48,
                             source=f"paper abstract (80 vs 24.37M, 3.86 GFLOPs); {_ECA_README}"),
    "eca_resnet101": Reported(params_m=42.49, cost_g=7.35, released=78.65, source=_ECA_README),
    "eca_resnet152": Reported(params_m=57.41, cost_g=10.83, released=78.92, source=_ECA_README),
    "eca_mobilenet_v2": Reported(params_m=3.34, cost_g=0.3199, released=72.56, source=_ECA_README),
    "triplet_resnet18": Reported(params_m=11.69, cost_g=1.825, released=71.09, source=f"{_TRIPLET}: error 28.91"),
    "triplet_resnet50": Reported(params_m=25.56, cost_g=4.169, released=77.48, source=f"{_TRIPLET}: error 22.52"),
    "coord_mobilenet_v2": Reported(params_m=3.95, cost_g=0.310, released=74.3,
                                   source="houqb/CoordAttention @ 7619bea9 README (\"M-Adds\" column; mbv2_ca.pth)"),
    "sknet50": Reported(params_m=27.5, cost_g=4.47, paper=79.21, source=f"{_SK}: error 20.79",
                        note="the official Caffe SKNet-50; plugattn's key is ResearchingDexter's PyTorch port"),
    "sknet101": Reported(params_m=48.9, cost_g=8.46, paper=79.81, source=f"{_SK}: error 20.19"),
    "danet_resnet101": Reported(
        metric="mIoU", paper=81.5, released=79.93,
        source="paper abstract / junfu1115/DANet README: 81.5 on Cityscapes test; README: DANet101.pth.tar gives "
               "79.93 on Cityscapes val, single scale",
        note="paper = test set; released = val set"),
    "seaformer_t": Reported(params_m=1.8, cost_g=0.1, released=68.1, source=_SEA_CLS),
    "seaformer_s": Reported(params_m=4.1, cost_g=0.2, released=73.4, source=_SEA_CLS),
    "seaformer_b": Reported(params_m=8.7, cost_g=0.3, released=76.4, source=_SEA_CLS),
    "seaformer_l": Reported(params_m=14.0, cost_g=1.2, released=79.9, source=_SEA_CLS),
    "seaformer_seg_t": Reported(params_m=1.7, cost_g=0.6, metric="mIoU", released=36.5, source=_SEA_SEG),
    "seaformer_seg_s": Reported(params_m=4.0, cost_g=1.1, metric="mIoU", released=39.5, source=_SEA_SEG),
    "seaformer_seg_b": Reported(params_m=8.6, cost_g=1.8, metric="mIoU", released=41.9, source=_SEA_SEG),
    "seaformer_seg_l": Reported(params_m=14.0, cost_g=6.5, metric="mIoU", released=43.8, source=_SEA_SEG),
    "seaformer_seg_s_cityscapes": Reported(cost_g=2.0, metric="mIoU", released=71.1,
                                           source=f"{_SEA_CITY}, 1024x512 row"),
    "seaformer_seg_b_cityscapes": Reported(cost_g=13.7, metric="mIoU", released=77.7,
                                           source=f"{_SEA_CITY}, 1024x1024 row",
                                           note="the G figure matches a 2048×1024 input, see below"),
}

_BATCHED = {"bmm", "baddbmm"}  # attention's matrix products (DANet PAM/CAM, SeaFormer); Linear layers are mm/addmm


def row(name: str) -> dict:
    """Parameters, FLOPs and the FLOPs of batched matrix products of network ``name`` at its default input size."""
    info = plugattn.models.model_info(name)
    with torch.device("meta"):
        model = plugattn.models.create_model(name)
        x = torch.zeros(1, *info.input_size)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    by_op = counter.get_flop_counts().get("Global", {})
    batched = sum(v for op, v in by_op.items() if str(op).split(".")[1] in _BATCHED)
    return {"name": name, "params": params, "flops": counter.get_total_flops(), "bmm_flops": batched, "info": info}


def _num(v: float | None, fmt: str = "{:g}") -> str:
    return "—" if v is None else fmt.format(v)


def paper_table(rows: list[dict]) -> list[str]:
    """Markdown lines: ours beside the paper-reported numbers, for the networks in :data:`PAPER`."""
    lines = [
        "| network | params ours (M) | params reported (M) | GMACs ours (attention products) | G reported (unit) | "
        "metric | paper | released checkpoint | source |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        rep = PAPER.get(r["name"])
        if rep is None:
            continue
        macs, bmm = r["flops"] / 2e9, r["bmm_flops"] / 2e9
        ours_cost = f"{macs:.3g}" + (f" ({bmm:.2g})" if bmm else "")
        note = f" ({rep.note})" if rep.note else ""
        cost = "—" if rep.cost_g is None else f"{rep.cost_g:g} ({rep.cost_unit})"
        lines.append(
            f"| `{r['name']}` | {r['params'] / 1e6:.3f} | {_num(rep.params_m)} | {ours_cost} | "
            f"{cost} | {rep.metric} | {_num(rep.paper)} | {_num(rep.released)} | "
            f"{rep.source}{note} |")
    return lines


DIFFERENCES = """\
## Where ours differ from the reported numbers, and why

- **FLOPs vs MACs (factor 2).** The main table counts a multiply-add as 2 FLOPs. Every paper above reports
  multiply-adds, whatever the column is called ("GFLOPs" in SENet/CBAM/BAM/ECA/Triplet/SKNet, "M-Adds" in
  Coordinate Attention, "FLOPs (G)" in SeaFormer; our MAC counts match these). Compare the "GMACs ours" column (= our
  FLOPs / 2): SE-ResNet-50 7.72 GFLOPs = 3.86 GMACs vs the paper's 3.87.
- **Attention products.** We count matrix products (`torch.utils.flop_counter`), so DANet's position/channel
  attention and SeaFormer's axial attention are included (the figure in parentheses is the part in batched
  matrix products). Most paper counters (thop, mmcv `get_flops`) count only layers with a rule — convolutions,
  linear layers and, depending on the tool and version, norms, activations and pooling — and miss `torch.matmul`.
  We count no norms, activations or pooling; both effects are a few percent for the CNNs.
- **ECA README: binary units.** ECANet's `paras_flops.py` formats thop's counts with `clever_format`, which
  divides by 1024² / 1024³. So ECA-Net50's "24.37M" is our 25,557,112 / 2²⁰ = 24.37 Mi, ECA-MobileNetV2's "3.34M"
  is our 3,504,903 / 2²⁰ = 3.34 Mi, and ECA-Net101/152's 42.49/57.41 are 44.55/60.19 M. The parameter counts
  agree exactly; only the unit differs. The FLOPs are also ÷ 2³⁰ and include thop's norm/activation counts
  (ECA-MobileNetV2: 319.9 "M" = 335 M thop MACs vs our 301 M conv+linear MACs).
- **SE-ResNet-50: Caffe vs moskomule.** `se_resnet50` (Caffe layout, stride on the first 1×1, biased SE) has
  28,088,024 parameters and 3.86 GMACs. This agrees with the paper's ~25 M + ~2.5 M and 3.87 G. `se_resnet50_moskomule`
  (torchvision layout, stride on the 3×3, bias-free SE) has 16,048 fewer parameters (the SE biases). It costs
  4.09 GMACs, because in a strided torchvision block the first 1×1 conv still runs at full resolution (the stride
  comes later, on the 3×3).
- **SKNet.** `sknet50` is ResearchingDexter's PyTorch port (27.48 M, close to the paper's 27.5 M). The official
  models are Caffe. Our 4.46 GMACs agrees with the paper's 4.47 G.
- **Triplet.** The README's 25.56 M equals our 25.56 M. Its 4.169 G is above our 4.14 GMACs because thop also
  counts the pooling and BN inside the three gates.
- **DANet's auxiliary head.** `danet_resnet101` is built with `aux=True`, as released. In DANet's own code this
  adds no layers (it builds no FCN auxiliary head). All three head outputs (fused, PAM-only, CAM-only: `conv6`,
  `conv7`, `conv8`) are computed and counted, as the official forward does. The paper reports no
  parameters or FLOPs.
- **SeaFormer segmentation at 512².** The seg networks are measured at 512×512, like the README's ADE20K rows.
  T: 0.56 GMACs vs the README's 0.6 G. Their axial attention grows linearly with the side length, so the
  attention part stays small. The Cityscapes S row (1024×512) agrees: 1.92 GMACs vs 2.0 G.
  SeaFormer's 1.8/4.1/8.7/14.0 M classification counts match ours to the README's rounding.
- **moskomule SE-ResNet-101/152 in float32: round-off, not a layout error.** The check builds the official layout
  (torchvision ResNet with bias-free SE hooked onto every `bn3`, PyTorch's default init). It is compared with
  `from_official(...)` on the same state_dict, two 224² images. Relative gap = max|ours − official| / max|official|:

  | depth | weights | max abs output | f32 ours vs official | official f32 vs its f64 | f64 ours vs official |
  |---|---|---:|---:|---:|---:|
  | 101 | random, eval BN at init stats | 22.7 | 7.6e-7 | 7.7e-7 | 2e-15 |
  | 101 | BN statistics calibrated | 1.46 | 6.2e-6 | 1.9e-5 | 2e-14 |
  | 152 | random, eval BN at init stats | 4.1e3 | 0.11 (477 absolute) | 0.12 | 3.3e-10 |
  | 152 | BN statistics calibrated | 1.38 | 2.1e-5 | 5.8e-5 | 7e-14 |

  With random weights and BN running statistics at their initial values (mean 0, variance 1), BN does not
  normalise and every residual addition grows the activations. SE-ResNet-152's logits reach 4·10³, and the
  network amplifies float32 round-off. The official network's own float32 output is then 12% away from its
  float64 output, more than our 11% gap to it. With BN statistics calibrated (three training-mode passes on random
  input, cumulative average), the gap is ≤ 2.1e-5, below the official float32-vs-float64 spread and the 1e-4
  criterion. Tests of these depths should use float64 or calibrated statistics. (ResNet-50: 3.4e-7 / 1.8e-6.)
- **SeaFormer Cityscapes "1024x1024" rows.** The README's G for these rows matches a full 2048×1024 frame:
  ours at 2048×1024 is 13.3 GMACs (B, README 13.7) and 7.66 (S, README 8.0). At the registered 1024×1024 input,
  B is 6.65 GMACs.
"""


SPEED = """\
## Speed

`benchmarks/models_speed.py` times each attention network against the same torchvision/timm network with timm's
attention module at the same sites (same parameters and FLOPs), in one process. It measures a training step
(batch 8, 160²) and batch-1 inference at 224². On the shared 2-core machine (CPU time, 1 thread) every ratio
ours/theirs was within the ±5% noise of an A/A control: SE-ResNet-50 1.00, CBAM 0.98, ECA-ResNet-50 1.00,
SKNet-50 0.95 (vs timm `skresnext50_32x4d`), CA-MobileNetV2 0.93, ECA-MobileNetV2 1.03 (training). SeaFormer-T
classifies a 224² image in 12 ms and a 512² image in 36 ms on one CPU thread: 0.75× and 0.64× the time of
torchvision's MobileNetV3-Large, which has 2.3× the FLOPs. Tables and method:
[benchmarks.md, Networks](benchmarks.md#networks-benchmarksmodels_speedpy).
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/models.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    lines = [
        "# Networks", "",
        "Generated by `benchmarks/models_table.py`: every network of `plugattn.models`, built as released, with its",
        "parameters and FLOPs at its default input size (one image; a multiply-add counts 2 FLOPs). The parameter",
        "counts equal the official implementations' (`tests/models/` checks each against the official factory's",
        "count). `plugattn.from_official(name, official_state_dict)` loads the official weights;",
        "`plugattn.models.create_model(name, checkpoint=FILE)` reads a released file with `weights_only=True`;",
        "`plugattn convert NAME FILE OUT.safetensors` writes safetensors + JSON, which `create_model` reads back.", "",
        "| network | task | input | params | FLOPs | official source | released checkpoints |",
        "|---|---|---|---:|---:|---|---|",
    ]
    rows = []
    for name in plugattn.models.list_models():
        r = row(name)
        rows.append(r)
        info = r["info"]
        size = "×".join(map(str, info.input_size[1:]))
        ckpts = ", ".join(f"`{c}`" for c in info.checkpoints) or "—"
        lines.append(f"| `{name}` | {info.task} | {size} | {r['params'] / 1e6:.3f} M | {human(r['flops'])} | "
                     f"{info.official} | {ckpts} |")
        print(lines[-1], flush=True)
    lines += [
        "", "## Beside the papers' numbers", "",
        "Reported numbers from the paper or the official README (a blank \"—\" means not reported, or not verified",
        "against a primary source). Ours in the same units: GMACs = our FLOPs / 2. The batched matrix products of",
        "attention are in parentheses. Top-1 is ImageNet val (%), single crop; mIoU is on the data set named in the",
        "source. The data table is `PAPER` in `benchmarks/models_table.py`.", "",
        *paper_table(rows), "", DIFFERENCES, SPEED,
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
