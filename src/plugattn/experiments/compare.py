"""``plugattn compare``: train the backbone with each attention module under one recipe and several seeds.

For every selected module (the baseline without attention is always included) and every seed, one run of
:func:`plugattn.experiments.train.train_run`; then one table with the module, the model's parameters and
FLOPs, CPU latency, test accuracy (mean ± std over seeds) and training time, written as JSON, markdown and a
PNG (accuracy against parameters and against FLOPs, with error bars).

Finished runs are kept under ``OUT/runs/<module>/seed<k>/`` and skipped when the command is run again
(an interrupted run resumes from its last epoch), so a long comparison can be stopped and restarted, or split
over several processes writing to the same ``OUT``. Under ``torchrun`` every run is data-parallel.

Python API::

    from plugattn.experiments.compare import compare
    summary = compare(["se", "eca"], seeds=2, recipe=Recipe(epochs=2))
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .. import registry
from ..analysis.cost import count_flops, count_params, human
from .data import ImageData, load_dataset
from .models import COMPOSE_PREFIX, parse_compose
from .segdata import SegData, load_segmentation
from .segmodels import SEG_HEADS, seg_networks
from .train import (
    Recipe,
    SegRecipe,
    add_data_arguments,
    add_recipe_arguments,
    build_model,
    data_from_args,
    device_from_args,
    dist_env,
    recipe_from_args,
    same_config,
    train_run,
)

__all__ = ["compare", "summarize", "write_report", "markdown_table", "class_iou_table", "model_cost", "input_shape",
           "resolve_modules", "DEFAULT_MODULES", "SEED_MODULES", "SEG_DEFAULT_MODULES", "SEG_MODULES", "HELP"]

HELP = ("train a small network with each attention module on real data (classification or segmentation) and "
        "compare accuracy / mIoU and cost")

DEFAULT_MODULES = ("se", "eca", "cbam")  # the quick default (with the baseline): a few minutes on 2 CPU cores
SEED_MODULES = ("se", "eca", "sk", "cbam", "coord", "triplet", "danet", "sea_attention")  # --modules all
SEG_DEFAULT_MODULES = ("se", "danet_head")  # the quick segmentation default (with the baseline)
SEG_MODULES = ("se", "eca", "cbam", "coord", "triplet", "gc", "danet_head", "seaformer_seg_t")  # segmentation 'all'


def resolve_modules(names: list[str] | tuple[str, ...], baseline: bool = True, task: str = "classification"
                    ) -> list[str]:
    """Expand ``all`` (the seed modules) and ``registered`` (every shape-preserving plug-in); baseline first.

    For segmentation, also the heads (``danet_head``, ``light_head``) and whole networks (``seaformer_seg_t``);
    ``all`` then means the segmentation set: the seed modules that fit the encoder, DANet's head and SeaFormer-T.
    """
    out: list[str] = []
    seg = task == "segmentation"
    for n in names:
        if n == "all":
            out += list(SEG_MODULES) if seg else [m for m in SEED_MODULES if m in registry.list_modules()]
        elif n == "registered":
            out += [m for m in registry.list_modules()
                    if registry.info(m).preserves_shape and registry.info(m).kind not in ("head", "block")]
        elif n in ("baseline", "none"):
            continue
        elif (seg and (n in SEG_HEADS[1:] or n in seg_networks())) or n.startswith(COMPOSE_PREFIX):
            out.append(n)  # compose specs are checked by building every model before training
        else:
            meta = registry.info(n)  # unknown name: ValueError listing the valid ones
            if not meta.preserves_shape or meta.kind in ("head", "block"):
                extra = (f"; as a segmentation head or network: {', '.join([*SEG_HEADS[1:], *seg_networks()])}"
                         if seg else "")
                raise ValueError(f"module {n!r} is a {meta.kind} that changes its input's shape; compare inserts "
                                 f"attention into the backbone's blocks, so it takes shape-preserving modules "
                                 f"only{extra}")
            out.append(n)
    return (["baseline"] if baseline else []) + list(dict.fromkeys(out))


def input_shape(data: ImageData | SegData) -> tuple[int, ...]:
    """(C, H, W) of one training sample."""
    if isinstance(data, SegData):
        return (data.in_channels, *data.crop_size)
    return tuple(data.train_x.shape[1:])


@torch.no_grad()
def model_cost(module: str, data_meta: dict, recipe: Recipe, *, shape: tuple[int, ...] | None = None,
               reps: int = 30) -> dict[str, float]:
    """Parameters, FLOPs (one image) and median CPU latency (ms, batch 1, current thread count) of the model."""
    torch.manual_seed(0)
    model = build_model(None if module == "baseline" else module, data_meta, recipe).eval()
    x = torch.randn(1, *(shape or data_meta["shape"]))
    flops = count_flops(model, x)
    for _ in range(5):
        model(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t)
    return {"params": count_params(model), "flops": flops, "latency_ms": 1000 * statistics.median(times)}


def _kind(m: str) -> str:
    if m == "baseline":
        return "none"
    if m in SEG_HEADS[1:]:
        return "head"
    if m in registry.list_modules():
        return registry.info(m).kind
    return "network" if m in seg_networks() else "compose"


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: list[dict], costs: dict[str, dict]) -> list[dict]:
    """One row per module: cost, the score's mean/std over seeds, Δ vs baseline with its standard error.

    The score is test accuracy (%) for classification (``acc``) and mean IoU (%) for segmentation (``miou``, with
    ``miou_fg``, ``pixel_acc`` and per-class ``iou`` means beside it).
    """
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["module"], []).append(r)
    rows = []
    for m, rs in by.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        row: dict[str, Any] = {"module": m, "kind": _kind(m), **costs[m], "seeds": [r["seed"] for r in rs],
                               "train_time_s": statistics.fmean(r["train_time"] for r in rs)}
        seg = "test_miou" in rs[0]
        key = "miou" if seg else "acc"
        row["metric"] = key
        row[key] = [100 * r["test_" + key] for r in rs]
        row[key + "_mean"], row[key + "_std"] = _stats(row[key])
        if seg:
            for extra in ("miou_fg", "pixel_acc"):
                row[extra + "_mean"], row[extra + "_std"] = _stats([100 * r["test_" + extra] for r in rs])
            per_class = list(zip(*[r["test_iou"] for r in rs]))
            row["iou_mean"] = [None if any(v is None for v in c) else 100 * statistics.fmean(c) for c in per_class]
        rows.append(row)
    base = next((r for r in rows if r["module"] == "baseline"), None)
    for r in rows:
        if base is None:
            continue
        k = r["metric"]
        r["delta"] = r[k + "_mean"] - base[k + "_mean"]
        se = math.sqrt(r[k + "_std"] ** 2 / len(r[k]) + base[k + "_std"] ** 2 / len(base[k]))
        r["delta_se"] = se
        enough = len(r[k]) > 1 and len(base[k]) > 1  # one seed gives no spread to judge by
        r["within_noise"] = None if not enough or r is base else abs(r["delta"]) < 2 * se
    return rows


def _mean_std(r: dict, key: str | None = None) -> str:
    key = key or r["metric"]
    n = len(r[r["metric"]])
    return f"{r[key + '_mean']:.2f}" if n < 2 else f"{r[key + '_mean']:.2f} ± {r[key + '_std']:.2f}"


def markdown_table(rows: list[dict]) -> str:
    """The comparison table (one row per module) in markdown."""
    base = next((r for r in rows if r["module"] == "baseline"), None)
    seg = bool(rows) and rows[0]["metric"] == "miou"
    score = ("mIoU, all classes (%) | mIoU, objects (%) | pixel acc (%) | Δ mIoU vs baseline (pp)" if seg
             else "test acc (%) | Δ vs baseline (pp)")
    lines = [f"| module | kind | params | Δparams | FLOPs | CPU latency (ms) | {score} | train time / run (s) |",
             "| --- | --- | ---: | ---: | ---: | ---: | " + "---: | " * (4 if seg else 2) + "---: |"]
    for r in rows:
        dp = "" if base is None or r is base else f"{r['params'] - base['params']:+,}"
        if base is None or r is base:
            delta = "—"
        else:
            delta = (f"{r['delta']:+.2f}" if r["within_noise"] is None else f"{r['delta']:+.2f} ± {r['delta_se']:.2f}"
                     + (" (within noise)" if r["within_noise"] else ""))
        cells = [_mean_std(r), _mean_std(r, "miou_fg"), _mean_std(r, "pixel_acc")] if seg else [_mean_std(r)]
        lines.append(f"| {r['module']} | {r['kind']} | {human(r['params'], 3)} | {dp} | {human(r['flops'], 3)} | "
                     f"{r['latency_ms']:.2f} | {' | '.join(cells)} | {delta} | {r['train_time_s']:.0f} |")
    return "\n".join(lines)


def class_iou_table(rows: list[dict], class_names: list[str]) -> str:
    """Per-class IoU (%, mean over seeds) of a segmentation comparison: one row per module."""
    lines = ["| module | " + " | ".join(class_names) + " |", "| --- |" + " ---: |" * len(class_names)]
    for r in rows:
        lines.append(f"| {r['module']} | " + " | ".join("—" if v is None else f"{v:.1f}" for v in r["iou_mean"]) + " |")
    return "\n".join(lines)


def write_report(summary: dict, out: Path) -> list[Path]:
    """results.json, results.md and a plot (accuracy.png or miou.png, when matplotlib is installed) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    cfg = summary["config"]
    rec, data = cfg["recipe"], cfg["data"]
    seeds = summary["seeds"]
    rows = summary["rows"]
    seg = summary.get("task") == "segmentation"
    if seg:
        shape = summary["input_shape"]
        backbone = ("small encoder, widths " + str(rec["widths"]) if rec["backbone"] == "small"
                    else f"torchvision {rec['backbone']}")
        md = [f"# plugattn compare --task segmentation: {data['name']}", "",
              f"Data: {data['source']}; {data.get('num_train', '?')} training samples per epoch, "
              f"{data.get('num_test', '?')} test images; training samples {shape}.  ",
              f"Network: {backbone}, output stride 8, FCN head unless the row names a head or a network; "
              f"{rec['epochs']} epochs, batch {rec['batch_size']}, SGD lr {rec['lr']} cosine, wd {rec['weight_decay']}."
              "  ",
              f"Seeds: {seeds}. mIoU: mean over classes of IoU from one confusion matrix over the whole test set, "
              "background included ('all classes') and excluded ('objects'); mean ± sample std over seeds. Δ: "
              "difference of the mean mIoU (all classes) ± its standard error; '(within noise)' when |Δ| < 2 SE.  ",
              f"Params/FLOPs: whole model, one {shape} sample. Latency: median CPU forward, batch 1, "
              f"{summary['threads']} thread(s), on a shared machine.", "",
              markdown_table(rows), "", "Per-class IoU (%, mean over seeds):", "",
              class_iou_table(rows, summary["class_names"]), ""]
    else:
        md = [f"# plugattn compare: {data['name']}", "",
              f"Data: {data['source']}; {data['train']} train / {data['test']} test images of shape {data['shape']}.  ",
              f"Backbone: ResNet widths {rec['widths']}, {rec['depth']} block(s)/stage, stem stride "
              f"{rec['stem_stride']}; {rec['epochs']} epochs, batch {rec['batch_size']}, SGD lr {rec['lr']} cosine, "
              f"wd {rec['weight_decay']}, augment={rec['augment']}.  ",
              f"Seeds: {seeds}. Test accuracy: mean ± sample std over seeds. Δ: difference of means ± its standard "
              "error; '(within noise)' when |Δ| < 2 SE.  ",
              f"Params/FLOPs: whole model, one {data['shape']} image (FLOPs: convs and matmuls, multiply-add = 2). "
              f"Latency: median CPU forward, batch 1, {summary['threads']} thread(s), on a shared machine.", "",
              markdown_table(rows), ""]
    (out / "results.md").write_text("\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'plugattn[plot]')")
        return written
    k = rows[0]["metric"]
    label = "mIoU, all classes (%)" if seg else "test accuracy (%)"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    base = next((r for r in rows if r["module"] == "baseline"), None)
    ranked = sorted(rows, key=lambda r: r[k + "_mean"])
    palette = [f"C{i}" for i in range(10)] if len(rows) <= 10 else [plt.get_cmap("tab20")(i) for i in range(20)]
    ax = axes[0]  # every seed's score, modules sorted by mean
    if base is not None:
        ax.axhspan(base[k + "_mean"] - base[k + "_std"], base[k + "_mean"] + base[k + "_std"], color="0.88", zorder=0)
    for i, r in enumerate(ranked):
        c = "k" if r["module"] == "baseline" else palette[i % len(palette)]
        ax.plot([i] * len(r[k]), r[k], "o", color=c, alpha=0.45, ms=5)
        ax.errorbar(i + 0.18, r[k + "_mean"], yerr=r[k + "_std"], fmt="D", color=c, capsize=3, ms=5)
    ax.set_xticks(range(len(ranked)), [plot_label(r["module"]) for r in ranked], rotation=35, ha="right",
                  fontsize=8)
    ax.set_ylabel(f"{label}\nseeds (dots), mean ± std (diamond)")
    ax.grid(alpha=0.3, axis="y")
    for ax, key, xlabel in ((axes[1], "params", "parameters (whole model)"), (axes[2], "flops", "FLOPs per image")):
        if base is not None:
            ax.axhspan(base[k + "_mean"] - base[k + "_std"], base[k + "_mean"] + base[k + "_std"], color="0.88",
                       zorder=0)
            ax.axhline(base[k + "_mean"], color="0.5", lw=1, zorder=0)
        for r in ranked[::-1]:  # legend from best to worst
            c = "k" if r["module"] == "baseline" else palette[ranked.index(r) % len(palette)]
            ax.errorbar(r[key], r[k + "_mean"], yerr=r[k + "_std"], fmt="D", capsize=3, color=c, ms=5,
                        label=plot_label(r["module"]))
        values = [r[key] for r in rows]
        if max(values) > 4 * min(values):  # a log axis only where the costs span a wide range
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            xlabel += " (log)"
        else:
            ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
        ax.xaxis.set_major_formatter(ticker.EngFormatter())
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which="both")
        ax.set_ylabel(f"{label}, mean ± std")
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle(f"{data['name']}: {len(seeds)} seeds, {rec['epochs']} epochs (grey band: baseline ± std)", fontsize=10)
    fig.tight_layout()
    png = out / ("miou.png" if seg else "accuracy.png")
    fig.savefig(png, dpi=130)
    plt.close(fig)
    written.append(png)
    return written


def plot_label(module: str) -> str:
    """A short label for plots: ``"compose:squeeze=avg,excite=conv1d,gate=tanh"`` → ``"avg conv1d tanh"``."""
    if not module.startswith(COMPOSE_PREFIX):
        return module
    spec = parse_compose(module)
    main = [str(spec.pop(k)) for k in ("squeeze", "axes", "excite", "gate", "reweight") if k in spec]
    for k, v in spec.items():
        main += [f"{k}.{i}={w}" for i, w in v.items()] if isinstance(v, dict) else [f"{k}={v}"]
    return " ".join(main)


def compare(
    modules: list[str] | tuple[str, ...] | None = None,
    *,
    seeds: int | list[int] = 3,
    recipe: Recipe | None = None,
    data: ImageData | SegData | None = None,
    out: str | Path = "runs/compare",
    device: str | torch.device = "cpu",
    progress: bool = True,
    report: bool = True,
    baseline: bool = True,
) -> dict[str, Any]:
    """Train and compare; returns the summary (also written to ``out`` when ``report``). See the module docstring.

    A :class:`~plugattn.experiments.train.SegRecipe` (or segmentation ``data``) compares segmentation networks;
    ``modules`` defaults to :data:`DEFAULT_MODULES` or :data:`SEG_DEFAULT_MODULES`.
    """
    if recipe is None:
        recipe = SegRecipe() if isinstance(data, SegData) else Recipe()
    task = recipe.task
    if data is None:
        if task == "segmentation":
            data = load_segmentation("fmnist-scenes")
        else:
            data = load_dataset()
    if modules is None:
        modules = SEG_DEFAULT_MODULES if task == "segmentation" else DEFAULT_MODULES
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    names = resolve_modules(modules, baseline, task)
    for m in names:  # every requested model builds before anything trains
        build_model(None if m == "baseline" else m, data.describe(), recipe)
    out = Path(out)
    rank = dist_env()[0]
    config: dict[str, Any] = {"task": task, "recipe": asdict(recipe), "data": data.describe()}
    cfg_path = out / "config.json"
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if not same_config(old, json.loads(json.dumps(config))):
            raise ValueError(f"compare: {out} holds runs of another recipe or data set ({cfg_path}); "
                             "use another --out or delete that folder")
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(json.dumps(config, indent=1))
    results = []
    jobs = [(m, s) for s in seeds for m in names]  # seed-major: an interrupted comparison has whole seeds
    t_start = time.perf_counter()
    for k, (m, s) in enumerate(jobs, 1):
        run_dir = out / "runs" / m / f"seed{s}"
        cached = (run_dir / "result.json").is_file()
        r = train_run(None if m == "baseline" else m, s, data, recipe, out_dir=run_dir, device=device,
                      progress=progress, desc=f"[{k}/{len(jobs)}] {m} seed {s}")
        results.append(r)
        if rank == 0:
            how = "cached" if cached else f"{r['train_time']:.0f}s train"
            score = (f"mIoU {100 * r['test_miou']:.2f}% (objects {100 * r['test_miou_fg']:.2f}%)" if "test_miou" in r
                     else f"test acc {100 * r['test_acc']:.2f}%")
            print(f"[{k}/{len(jobs)}] {m:<14} seed {s}: {score}  ({how}; {time.perf_counter() - t_start:.0f}s "
                  "elapsed)", flush=True)
    shape = input_shape(data)
    costs = {m: model_cost(m, config["data"], recipe, shape=shape) for m in names}
    rows = summarize(results, costs)
    score_keys = ("test_miou", "test_miou_fg", "test_pixel_acc") if task == "segmentation" else ("test_acc",)
    summary = {"task": task, "config": config, "seeds": seeds, "modules": names, "threads": torch.get_num_threads(),
               "input_shape": list(shape), "rows": rows,
               "runs": [{k: r[k] for k in ("module", "seed", *score_keys, "test_loss", "train_time")} for r in results]}
    if task == "segmentation":
        summary["class_names"] = list(data.class_names)  # type: ignore[union-attr]
    if report and rank == 0:
        summary["files"] = [str(p) for p in write_report(summary, out)]
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``plugattn compare``."""
    parser.add_argument("--modules", "-m", nargs="+", default=None,
                        help=f"registry names; 'all' = the seed modules (classification: {' '.join(SEED_MODULES)}; "
                             f"segmentation: {' '.join(SEG_MODULES)}), 'registered' = every plug-in, "
                             f"'compose:squeeze=avg+max,excite=conv1d,...' = a point of the design space; segmentation "
                             f"also takes the heads danet_head, light_head and the network seaformer_seg_t; the "
                             f"baseline is always included (default: {' '.join(DEFAULT_MODULES)}; segmentation: "
                             f"{' '.join(SEG_DEFAULT_MODULES)})")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds 0..N-1 (default 3; segmentation 2, the quick default)")
    parser.add_argument("--seed-list", type=int, nargs="+", default=None, help="explicit seeds (overrides --seeds)")
    parser.add_argument("--out", "-o", default="runs/compare", help="output folder (default runs/compare)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the baseline (to split one comparison over processes sharing --out; a last run "
                             "without this flag trains what is missing and writes the full table)")
    add_data_arguments(parser)
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the comparison and print the table."""
    device = device_from_args(args)
    data = data_from_args(args)
    recipe = recipe_from_args(args)
    seeds = args.seed_list or args.seeds or (2 if recipe.task == "segmentation" else 3)
    summary = compare(args.modules, seeds=seeds, recipe=recipe, data=data,
                      out=args.out, device=device, progress=not args.no_progress,
                      baseline=not args.no_baseline)
    if dist_env()[0] == 0:
        print()
        print(markdown_table(summary["rows"]))
        print("\nwrote " + ", ".join(summary.get("files", [])))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
