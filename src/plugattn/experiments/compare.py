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
from ..analysis.cost import count_flops, count_params
from .data import ImageData, load_dataset
from .train import (
    Recipe,
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

__all__ = ["compare", "summarize", "write_report", "model_cost", "DEFAULT_MODULES", "SEED_MODULES", "HELP"]

HELP = "train a small ResNet with each attention module on real data and compare accuracy and cost"

DEFAULT_MODULES = ("se", "eca", "cbam")  # the quick default (with the baseline): a few minutes on 2 CPU cores
SEED_MODULES = ("se", "eca", "sk", "cbam", "coord", "triplet", "danet", "sea_attention")  # --modules all


def resolve_modules(names: list[str] | tuple[str, ...], baseline: bool = True) -> list[str]:
    """Expand ``all`` (the seed modules) and ``registered`` (every shape-preserving plug-in); baseline first."""
    out: list[str] = []
    for n in names:
        if n == "all":
            out += [m for m in SEED_MODULES if m in registry.list_modules()]
        elif n == "registered":
            out += [m for m in registry.list_modules()
                    if registry.info(m).preserves_shape and registry.info(m).kind not in ("head", "block")]
        elif n in ("baseline", "none"):
            continue
        else:
            meta = registry.info(n)  # unknown name: ValueError listing the valid ones
            if not meta.preserves_shape or meta.kind in ("head", "block"):
                raise ValueError(f"module {n!r} is a {meta.kind} that changes its input's shape; compare inserts "
                                 f"attention into the backbone's blocks, so it takes shape-preserving modules only")
            out.append(n)
    return (["baseline"] if baseline else []) + list(dict.fromkeys(out))


@torch.no_grad()
def model_cost(module: str, data_meta: dict, recipe: Recipe, *, reps: int = 30) -> dict[str, float]:
    """Parameters, FLOPs (one image) and median CPU latency (ms, batch 1, current thread count) of the model."""
    torch.manual_seed(0)
    model = build_model(None if module == "baseline" else module, data_meta, recipe).eval()
    x = torch.randn(1, *data_meta["shape"])
    flops = count_flops(model, x)
    for _ in range(5):
        model(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t)
    return {"params": count_params(model), "flops": flops, "latency_ms": 1000 * statistics.median(times)}


def summarize(results: list[dict], costs: dict[str, dict]) -> list[dict]:
    """One row per module: cost, accuracy mean/std over seeds, Δ vs baseline with its standard error."""
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["module"], []).append(r)
    rows = []
    for m, rs in by.items():
        accs = [100 * r["test_acc"] for r in sorted(rs, key=lambda r: r["seed"])]
        rows.append({
            "module": m, "kind": "none" if m == "baseline" else registry.info(m).kind, **costs[m],
            "seeds": [r["seed"] for r in sorted(rs, key=lambda r: r["seed"])], "acc": accs,
            "acc_mean": statistics.fmean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "train_time_s": statistics.fmean(r["train_time"] for r in rs),
        })
    base = next((r for r in rows if r["module"] == "baseline"), None)
    for r in rows:
        if base is None:
            continue
        r["delta"] = r["acc_mean"] - base["acc_mean"]
        se = math.sqrt(r["acc_std"] ** 2 / len(r["acc"]) + base["acc_std"] ** 2 / len(base["acc"]))
        r["delta_se"] = se
        enough = len(r["acc"]) > 1 and len(base["acc"]) > 1  # one seed gives no spread to judge by
        r["within_noise"] = None if not enough or r is base else abs(r["delta"]) < 2 * se
    return rows


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}T"


def _mean_std(r: dict) -> str:
    return f"{r['acc_mean']:.2f}" if len(r["acc"]) < 2 else f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f}"


def markdown_table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["module"] == "baseline"), None)
    lines = ["| module | kind | params | Δparams | FLOPs | CPU latency (ms) | test acc (%) | Δ vs baseline (pp) "
             "| train time / run (s) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        dp = "" if base is None or r is base else f"+{_human(r['params'] - base['params'])}"
        if base is None or r is base:
            delta = "—"
        else:
            delta = (f"{r['delta']:+.2f}" if r["within_noise"] is None else f"{r['delta']:+.2f} ± {r['delta_se']:.2f}"
                     + (" (within noise)" if r["within_noise"] else ""))
        lines.append(f"| {r['module']} | {r['kind']} | {_human(r['params'])} | {dp} | {_human(r['flops'])} | "
                     f"{r['latency_ms']:.2f} | {_mean_std(r)} | {delta} | {r['train_time_s']:.0f} |")
    return "\n".join(lines)


def write_report(summary: dict, out: Path) -> list[Path]:
    """results.json, results.md and accuracy.png (when matplotlib is installed) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    cfg = summary["config"]
    rec, data = cfg["recipe"], cfg["data"]
    seeds = summary["seeds"]
    md = [f"# plugattn compare: {data['name']}", "",
          f"Data: {data['source']}; {data['train']} train / {data['test']} test images of shape {data['shape']}.  ",
          f"Backbone: ResNet widths {rec['widths']}, {rec['depth']} block(s)/stage, stem stride {rec['stem_stride']}; "
          f"{rec['epochs']} epochs, batch {rec['batch_size']}, SGD lr {rec['lr']} cosine, wd {rec['weight_decay']}, "
          f"augment={rec['augment']}.  ",
          f"Seeds: {seeds}. Test accuracy: mean ± sample std over seeds. Δ: difference of means ± its standard "
          "error; '(within noise)' when |Δ| < 2 SE.  ",
          f"Params/FLOPs: whole model, one {data['shape']} image (FLOPs: convs and matmuls, multiply-add = 2). "
          f"Latency: median CPU forward, batch 1, {summary['threads']} thread(s), on a shared machine.", "",
          markdown_table(summary["rows"]), ""]
    (out / "results.md").write_text("\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no accuracy.png (pip install 'plugattn[plot]')")
        return written
    rows = summary["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    base = next((r for r in rows if r["module"] == "baseline"), None)
    ranked = sorted(rows, key=lambda r: r["acc_mean"])
    ax = axes[0]  # every seed's accuracy, modules sorted by mean
    if base is not None:
        ax.axhspan(base["acc_mean"] - base["acc_std"], base["acc_mean"] + base["acc_std"], color="0.88", zorder=0)
    for i, r in enumerate(ranked):
        c = "k" if r["module"] == "baseline" else f"C{i % 10}"
        ax.plot([i] * len(r["acc"]), r["acc"], "o", color=c, alpha=0.45, ms=5)
        ax.errorbar(i + 0.18, r["acc_mean"], yerr=r["acc_std"], fmt="D", color=c, capsize=3, ms=5)
    ax.set_xticks(range(len(ranked)), [r["module"] for r in ranked], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%): seeds (dots), mean ± std (diamond)")
    ax.grid(alpha=0.3, axis="y")
    for ax, key, label in ((axes[1], "params", "parameters (whole model)"), (axes[2], "flops", "FLOPs per image")):
        if base is not None:
            ax.axhspan(base["acc_mean"] - base["acc_std"], base["acc_mean"] + base["acc_std"], color="0.88", zorder=0)
            ax.axhline(base["acc_mean"], color="0.5", lw=1, zorder=0)
        for r in ranked[::-1]:  # legend from best to worst
            c = "k" if r["module"] == "baseline" else f"C{ranked.index(r) % 10}"
            ax.errorbar(r[key], r["acc_mean"], yerr=r["acc_std"], fmt="D", capsize=3, color=c, ms=5, label=r["module"])
        ax.set_xscale("log")
        ax.set_xlabel(label + " (log)")
        ax.grid(alpha=0.3, which="both")
        ax.set_ylabel("test accuracy (%), mean ± std")
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle(f"{data['name']}: {len(seeds)} seeds, {rec['epochs']} epochs (grey band: baseline ± std)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=130)
    plt.close(fig)
    written.append(out / "accuracy.png")
    return written


def compare(
    modules: list[str] | tuple[str, ...] = DEFAULT_MODULES,
    *,
    seeds: int | list[int] = 3,
    recipe: Recipe | None = None,
    data: ImageData | None = None,
    out: str | Path = "runs/compare",
    device: str | torch.device = "cpu",
    progress: bool = True,
    report: bool = True,
    baseline: bool = True,
) -> dict[str, Any]:
    """Train and compare; returns the summary (also written to ``out`` when ``report``). See the module docstring."""
    recipe = recipe or Recipe()
    data = data or load_dataset()
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    names = resolve_modules(modules, baseline)
    for m in names:  # every requested model builds before anything trains
        build_model(None if m == "baseline" else m, data.describe(), recipe)
    out = Path(out)
    rank = dist_env()[0]
    config = {"recipe": asdict(recipe), "data": data.describe()}
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
            print(f"[{k}/{len(jobs)}] {m:<14} seed {s}: test acc {100 * r['test_acc']:.2f}%  "
                  f"({how}; {time.perf_counter() - t_start:.0f}s elapsed)", flush=True)
    costs = {m: model_cost(m, config["data"], recipe) for m in names}
    rows = summarize(results, costs)
    summary = {"config": config, "seeds": seeds, "modules": names, "threads": torch.get_num_threads(), "rows": rows,
               "runs": [{k: r[k] for k in ("module", "seed", "test_acc", "test_loss", "train_time")} for r in results]}
    if report and rank == 0:
        summary["files"] = [str(p) for p in write_report(summary, out)]
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``plugattn compare``."""
    parser.add_argument("--modules", "-m", nargs="+", default=list(DEFAULT_MODULES),
                        help="registry names; 'all' = the seed modules (se eca sk cbam coord triplet danet "
                             "sea_attention), 'registered' = every plug-in; the baseline is always included")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds 0..N-1 (default 3)")
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
    summary = compare(args.modules, seeds=args.seed_list or args.seeds, recipe=recipe_from_args(args), data=data,
                      out=args.out, device=device, progress=not args.no_progress,
                      baseline=not args.no_baseline)
    if dist_env()[0] == 0:
        print()
        print(markdown_table(summary["rows"]))
        print("\nwrote " + ", ".join(summary.get("files", [])))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
