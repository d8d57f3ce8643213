"""``plugattn viz``: what the trained modules attend to, from checkpoints that ``plugattn compare`` saved.

For each checkpoint, the model is rebuilt, run on test images inside :func:`plugattn.analysis.capture.capture`,
and every recorded attention map is drawn (needs matplotlib):

- ``<tag>_spatial.png``: spatial maps over the input image, one row per stage, one column per class:
  CBAM's spatial gate, Triplet's H-W branch, Coordinate attention's a_h ⊗ a_w (mean over channels),
  SeaFormer's output gate (mean over channels), DANet's position-attention row of the centre query;
- ``<tag>_axial.png``: SeaFormer's row and column attention (H×H and W×W, mean over heads and images);
- ``<tag>_channels.png``: channel weights (SE, ECA, CBAM's channel gate, …) averaged per class, channels
  sorted by their mean over all classes, as in the SE paper's Fig. 6; and SK's branch weights per class;
- ``<tag>_pam.png``: DANet position attention of several query positions (marked) on one image;
- a markdown gallery (``--gallery``) with every figure and a caption.

Segmentation checkpoints (``compare --task segmentation``) get the same maps drawn over test scenes instead of
one image per class (no per-class channel figure), and ``<dataset>_predictions.png``: input, ground truth and
every model's prediction side by side.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn as nn
from torch import Tensor

from ..analysis.capture import capture, overlay, query_indices
from .data import ImageData, load_dataset, normalize

if TYPE_CHECKING:
    from .segdata import SegData
from .train import Recipe, SegRecipe, build_model, load_checkpoint

__all__ = ["HELP", "load_model", "collect", "visualize", "predictions_figure", "add_arguments", "run"]

HELP = "draw the attention maps of models saved by `plugattn compare` (PNG figures and a markdown gallery)"


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a ``final.pt`` checkpoint (``weights_only=True``); returns (model in eval mode, meta)."""
    ck = load_checkpoint(path)
    meta = ck["meta"]
    recipe = (SegRecipe if meta.get("task") == "segmentation" else Recipe)(**meta["recipe"])
    model = build_model(meta.get("spec") or meta["module"], meta["data"], recipe)
    model.load_state_dict(ck["model"])
    return model.eval(), meta


def _stage_label(path: str) -> str:
    """A short label: ``layers.1.attn.gate`` → ``block 2``, ``encoder.stages.2.0.attn.gate`` → ``stage 3``."""
    parts = _stage_of(path).split(".")
    if parts[0] == "layers":
        return f"block {int(parts[1]) + 1}"
    if "stages" in parts and parts.index("stages") + 1 < len(parts):
        i = parts.index("stages")
        rest = parts[i + 2:]
        return f"stage {int(parts[i + 1]) + 1}" + (f" ({'.'.join(rest)})" if rest and rest != ["0"] else "")
    return ".".join(parts)


def _stage_of(path: str) -> str:
    """The module an attention map belongs to: the path up to its ``attn`` (or a head's ``pam``/``cam``)."""
    parts = path.split(".")
    for i, p in enumerate(parts):
        if p in ("attn", "pam", "cam") and i > 0:
            return ".".join(parts[:i])
    return ".".join(parts[:2]) if parts[0] == "layers" else parts[0]


@torch.no_grad()
def collect(model: nn.Module, x: Tensor, query: Any = None) -> dict[str, Tensor]:
    """Every attention map of ``model`` on the normalised batch ``x`` (see :func:`capture`)."""
    with capture(model, query=query) as maps:
        model(x)
    return maps


def spatial_maps(maps: dict[str, Tensor]) -> dict[str, tuple[str, Tensor]]:
    """Per stage: (what, (N, h, w) map) for the modules with a spatial map."""
    out: dict[str, tuple[str, Tensor]] = {}
    by_stage: dict[str, dict[str, Tensor]] = defaultdict(dict)
    for k, v in maps.items():
        by_stage[_stage_of(k)][k] = v
    for stage, d in by_stage.items():
        for k, v in d.items():
            if k.endswith("spatial.attn.gate") or k.endswith("spatial.gate"):
                out[stage] = ("CBAM spatial gate", v)
            elif k.endswith(".hw.gate"):
                out[stage] = ("Triplet H-W branch gate", v)
            elif "pam" in k and v.dim() == 4:
                out[stage] = ("position attention of the centre query", v[:, 0])
            elif k.endswith("attn.gate") and v.dim() == 4 and v.shape[-1] > 1 and v.shape[-2] > 1 and any(
                    kk.endswith("row_gate") for kk in d):
                out[stage] = ("SeaFormer output gate, mean over channels", v.mean(1))
        # Coordinate attention: gate_h gives a_h (N, C, H), gate_w gives a_w (N, C, W)
        pairs = [(v, d[k[:-1] + "w"]) for k, v in d.items() if k.endswith(".gate_h") and k[:-1] + "w" in d]
        if stage not in out and len(pairs) == 1:
            a_h, a_w = pairs[0]
            out[stage] = ("Coordinate attention a_h·a_w, mean over channels",
                          (a_h[..., None] * a_w[:, :, None, :]).mean(1))
    return out


def channel_weights(maps: dict[str, Tensor], model: nn.Module | None = None) -> dict[str, tuple[str, Tensor]]:
    """Per gate: (label, weights) for the gates that weight channels.

    Channel weights are (N, C); the gates of multi-branch modules in ``model`` (SK: a softmax over its
    ``paths``) give (N, M, C).
    """
    out = {}
    for k, v in maps.items():
        if v.dim() == 2:
            out[k] = ("channel weights", v)
        elif v.dim() == 3 and model is not None and _has_paths(model, k):
            out[k] = ("branch weights", v)
    return out


def _has_paths(model: nn.Module, gate_path: str) -> bool:
    try:
        return hasattr(model.get_submodule(gate_path.split("#")[0].rsplit(".", 1)[0]), "paths")
    except AttributeError:
        return False


def _branch_names(model: nn.Module, gate_path: str, n: int) -> list[str]:
    """SK branch labels from the first conv of each path: kernel, dilation and effective size."""
    names = [f"branch {b}" for b in range(n)]
    try:
        paths = cast(nn.ModuleList, model.get_submodule(gate_path.rsplit(".", 1)[0]).paths)
    except AttributeError:
        return names
    for b, p in enumerate(list(paths)[:n]):
        conv = next((m for m in p.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is not None:
            k, d = conv.kernel_size[0], conv.dilation[0]
            names[b] += f": {k}×{k}" + (f" dilated {d} (≙ {d * (k - 1) + 1}×{d * (k - 1) + 1})" if d > 1 else "")
    return names


def _images_per_class(data: ImageData, per_class: int) -> tuple[Tensor, Tensor]:
    idx = []
    for c in range(data.num_classes):
        idx.append(torch.nonzero(data.test_y == c).flatten()[:per_class])
    i = torch.cat(idx)
    return data.test_x[i], data.test_y[i]


def _show_image(ax, img: Tensor) -> None:
    im = img.permute(1, 2, 0).numpy()
    if im.shape[-1] == 1:
        ax.imshow(im[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(im)


def _overlay(ax, img: Tensor, m: Tensor) -> None:
    ax.imshow(overlay(img, m).permute(1, 2, 0).numpy())


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SystemExit("plugattn viz needs matplotlib: pip install 'plugattn[plot]'") from e
    return plt


def _load_data(meta: dict[str, Any], data_dir: str | None) -> ImageData | SegData:
    """The data set a checkpoint was trained on (its test split is what the figures show)."""
    d = meta["data"]
    if meta.get("task") == "segmentation":
        from .segdata import load_segmentation

        kw = {"size": d["size"], "seed": d["seed"]} if "size" in d else {}
        return load_segmentation(d["name"], data_dir, num_test=d["num_test"], **kw)
    return load_dataset(d["name"], data_dir)


def _test_scenes(data: SegData, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` test images of equal size (uint8) and their label maps."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    for x, y in data.test_batches(1):
        if xs and x.shape != xs[0].shape:
            continue
        xs.append(x)
        ys.append(y)
        if len(xs) == n:
            break
    return torch.cat(xs), torch.cat(ys)


def _score(meta: dict[str, Any]) -> str:
    if "test_miou" in meta:
        return f"test mIoU {100 * meta['test_miou']:.1f}% (objects {100 * meta['test_miou_fg']:.1f}%)"
    return f"test acc {100 * meta.get('test_acc', float('nan')):.1f}%"


def visualize(checkpoint: str | Path, out_dir: str | Path = "docs/figures", *, data: ImageData | SegData | None = None,
              data_dir: str | None = None, per_class: int = 100, tag: str | None = None,
              scenes: int = 6) -> list[dict[str, str]]:
    """Write the figures of one checkpoint; returns [{"file", "caption"}].

    Classification: one test image per class for the maps, ``per_class`` per class for the averages;
    segmentation: the first ``scenes`` test images.
    """
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    model, meta = load_model(checkpoint)
    seg = meta.get("task") == "segmentation"
    if data is None:
        data = _load_data(meta, data_dir)
    mean, std = tuple(meta["data"]["mean"]), tuple(meta["data"]["std"])
    classes = meta["data"]["classes"]
    ys: Tensor | None
    if seg:
        xs, _ = _test_scenes(cast("SegData", data), scenes)
        ys, first, titles = None, torch.arange(len(xs)), [f"test scene {i}" for i in range(len(xs))]
    else:
        xs, ys = _images_per_class(cast(ImageData, data), per_class)
        first = torch.stack([torch.nonzero(ys == c).flatten()[0] for c in range(len(classes))])
        titles = list(classes)
    module = meta["module"]
    tag = tag or f"{meta['data']['name']}_{module}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    maps = collect(model, normalize(xs, mean, std), query=[(0.5, 0.5)])
    figs: list[dict[str, str]] = []
    score = _score(meta)

    # spatial maps over the images: rows = stages, columns = one test image per class (or test scenes)
    sp = spatial_maps(maps)
    if sp:
        stages = sorted(sp)
        nc = len(titles)
        fig, axes = plt.subplots(len(stages) + 1, nc, figsize=(1.25 * nc + 0.8, 1.35 * (len(stages) + 1) + 0.6),
                                 squeeze=False)
        for j, i in enumerate(first.tolist()):
            _show_image(axes[0, j], xs[i])
            axes[0, j].set_title(titles[j], fontsize=8)
            for r, st in enumerate(stages, 1):
                what, m = sp[st]
                _overlay(axes[r, j], xs[i], m[i])
                axes[r, j].text(0.03, 0.03, f"{float(m[i].min()):.2f}–{float(m[i].max()):.2f}", fontsize=6,
                                color="w", transform=axes[r, j].transAxes,
                                bbox={"facecolor": "k", "alpha": 0.5, "pad": 1, "lw": 0})
                if "centre query" in what:
                    h, w = m.shape[-2:]
                    H, W = xs.shape[-2:]
                    axes[r, j].plot((w // 2 + 0.5) * W / w - 0.5, (h // 2 + 0.5) * H / h - 0.5, "w+", ms=8, mew=2)
        for r, st in enumerate(stages, 1):
            what, m = sp[st]
            axes[r, 0].set_ylabel(f"{_stage_label(st)}\n{m.shape[-2]}×{m.shape[-1]}", fontsize=8)
        axes[0, 0].set_ylabel("input", fontsize=8)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        what = sp[stages[0]][0]
        fig.suptitle(f"{module}: {what} (jet overlay, per-image colour scale, range in the corner; red = high)\n"
                     f"{meta['data']['name']}, seed {meta['seed']}, {score}", fontsize=9)
        fig.tight_layout()
        f = out / f"{tag}_spatial.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        which = "test scenes" if seg else "one test image per class"
        figs.append({"file": f.name, "caption": f"{module}: {what}, {which}, for each stage."})

    # SeaFormer axial attention matrices
    rows = {k: v for k, v in maps.items() if k.endswith("row_gate")}
    if rows:
        stages = sorted(rows)
        fig, axes = plt.subplots(2, len(stages), figsize=(3.0 * len(stages), 5.6), squeeze=False)
        for j, k in enumerate(stages):
            for r, (name, kk) in enumerate((("row (H×H)", k), ("column (W×W)", k.replace("row_gate", "col_gate")))):
                a = maps[kk].mean((0, 1))  # (L, L): mean over images and heads
                im = axes[r, j].imshow(a.numpy(), cmap="viridis")
                axes[r, j].set_title(f"{_stage_label(k)} {name}", fontsize=8)
                axes[r, j].set_xlabel("key position", fontsize=7)
                axes[r, j].set_ylabel("query position", fontsize=7)
                axes[r, j].tick_params(labelsize=6)
                axes[r, j].xaxis.set_major_locator(MaxNLocator(integer=True))
                axes[r, j].yaxis.set_major_locator(MaxNLocator(integer=True))
                fig.colorbar(im, ax=axes[r, j], fraction=0.046)
        fig.suptitle(f"{module}: squeezed axial attention (softmax rows), mean over heads and "
                     f"{len(xs)} test images", fontsize=9)
        fig.tight_layout()
        f = out / f"{tag}_axial.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        figs.append({"file": f.name, "caption": f"{module}: row and column attention of the squeezed axial "
                     "attention (query position × key position), averaged over heads and images."})

    # channel weights per class: top row the per-class means, bottom row their deviation from the mean over classes
    cw = {} if seg else channel_weights(maps, model)  # per-class averages need one class per image
    if cw and ys is not None:
        keys = sorted(cw)
        fig, axes = plt.subplots(2, len(keys), figsize=(4.2 * len(keys), 6.0), squeeze=False)
        for j, k in enumerate(keys):
            label, weights = cw[k]
            top, bottom = axes[0, j], axes[1, j]
            if label == "branch weights":  # SK: weight on each branch (kernel), per class
                per = torch.stack([weights[ys == c].mean((0, 2)) for c in range(len(classes))])  # (classes, M)
                nb = per.shape[1]
                names = _branch_names(model, k, nb)
                for b in range(nb):
                    top.bar(torch.arange(len(classes)) - 0.4 + 0.8 * (b + 0.5) / nb, per[:, b], width=0.8 / nb,
                            label=names[b])
                top.set_xticks(range(len(classes)), classes, rotation=60, fontsize=6)
                top.set_ylabel("mean branch weight", fontsize=8)
                top.set_ylim(0, max(0.8, float(per.max()) * 1.35))
                top.legend(fontsize=6, loc="upper center", ncol=2)
                dev = per - per.mean(0, keepdim=True)
                for b in range(nb):
                    bottom.bar(torch.arange(len(classes)) - 0.4 + 0.8 * (b + 0.5) / nb, dev[:, b], width=0.8 / nb)
                bottom.set_xticks(range(len(classes)), classes, rotation=60, fontsize=6)
                bottom.set_ylabel("minus mean over classes", fontsize=8)
            else:  # heat maps: classes × channels (sorted by their mean over all images)
                order = weights.mean(0).argsort(descending=True)
                per = torch.stack([weights[ys == c].mean(0)[order] for c in range(len(classes))])  # (classes, C)
                dev = per - per.mean(0, keepdim=True)
                im = top.imshow(per.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
                fig.colorbar(im, ax=top, fraction=0.046, pad=0.02)
                lim = float(dev.abs().max())
                im = bottom.imshow(dev.numpy(), aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                                   interpolation="nearest")
                fig.colorbar(im, ax=bottom, fraction=0.046, pad=0.02)
                for a in (top, bottom):
                    a.set_yticks(range(len(classes)), classes, fontsize=6)
                top.set_ylabel("mean weight per class", fontsize=8)
                bottom.set_ylabel("minus mean over classes", fontsize=8)
                bottom.set_xlabel("channel (sorted by mean weight)", fontsize=8)
            top.set_title(f"{_stage_label(k)}  ({k})", fontsize=8)
            for a in (top, bottom):
                a.tick_params(labelsize=7)
                if label == "branch weights":
                    a.grid(alpha=0.3)
        fig.suptitle(f"{module}: attention weights averaged per class ({per_class} test images per class), "
                     f"{meta['data']['name']}, seed {meta['seed']}", fontsize=9)
        fig.tight_layout()
        f = out / f"{tag}_channels.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        what = ("branch (kernel) weights per class (top) and their deviation from the mean over classes (bottom), "
                "as in the SKNet paper's per-class analysis" if cw[keys[0]][0] == "branch weights" else
                "channel weights averaged per class (top; channels sorted by their overall mean) and their deviation "
                "from the mean over classes (bottom): rows that differ show class-specific recalibration "
                "(SE paper, Fig. 6)")
        figs.append({"file": f.name, "caption": f"{module}: {what}."})

    # DANet: several query positions on one image
    pam_keys = [k for k, v in maps.items() if "pam" in k and v.dim() == 4]
    if pam_keys:
        queries = [(0.25, 0.25), (0.25, 0.75), (0.5, 0.5), (0.75, 0.25), (0.75, 0.75)]
        img_i = first[0:4].tolist()
        qmaps = collect(model, normalize(xs[img_i], mean, std), query=queries)
        keys = sorted(k for k in qmaps if "pam" in k and qmaps[k].dim() == 4)
        fig, axes = plt.subplots(len(img_i), len(keys) * len(queries),
                                 figsize=(1.2 * len(keys) * len(queries), 1.35 * len(img_i) + 0.6), squeeze=False)
        for r, i in enumerate(img_i):
            for ki, k in enumerate(keys):
                m = qmaps[k][r]  # (Q, h, w)
                h, w = m.shape[-2:]
                H, W = xs.shape[-2:]
                for q, (qy, qx) in enumerate(queries):
                    a = axes[r, ki * len(queries) + q]
                    _overlay(a, xs[i], m[q])
                    iy, ix = divmod(query_indices((qy, qx), h, w)[0], w)
                    a.plot((ix + 0.5) * W / w - 0.5, (iy + 0.5) * H / h - 0.5, "w+", ms=7, mew=2)
                    a.set_xticks([])
                    a.set_yticks([])
                    if r == 0:
                        a.set_title(f"{_stage_label(k)} q{q}", fontsize=7)
        fig.suptitle(f"{module}: position attention of 5 query positions (+) over all keys", fontsize=9)
        fig.tight_layout()
        f = out / f"{tag}_pam.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        figs.append({"file": f.name, "caption": f"{module}: position-attention rows (PAM) of five query positions (+); "
                     "each map is one softmax row over every key position."})
    return figs


def predictions_figure(checkpoints: list[Path], out_dir: str | Path, *, data: SegData | None = None,
                       data_dir: str | None = None, scenes: int = 4) -> dict[str, str]:
    """Segmentation checkpoints of one data set: input, ground truth and each model's prediction per test scene."""
    plt = _plt()
    from matplotlib.patches import Patch

    from .segdata import colour_labels

    loaded = [load_model(c) for c in checkpoints]
    meta0 = loaded[0][1]
    if data is None:
        data = cast("SegData", _load_data(meta0, data_dir))
    xs, ys = _test_scenes(data, scenes)
    mean, std = tuple(meta0["data"]["mean"]), tuple(meta0["data"]["std"])
    k = len(meta0["data"]["classes"])
    with torch.no_grad():
        preds = [m(normalize(xs, mean, std)).argmax(1) for m, _ in loaded]
    cols = 2 + len(loaded)
    fig, axes = plt.subplots(len(xs), cols, figsize=(1.7 * cols, 1.75 * len(xs) + 1.0), squeeze=False)
    for r in range(len(xs)):
        _show_image(axes[r, 0], xs[r])
        axes[r, 1].imshow(colour_labels(ys[r].numpy(), k), interpolation="nearest")
        for j, p in enumerate(preds):
            axes[r, 2 + j].imshow(colour_labels(p[r].numpy(), k), interpolation="nearest")
    axes[0, 0].set_title("input", fontsize=8)
    axes[0, 1].set_title("ground truth", fontsize=8)
    for j, (_, meta) in enumerate(loaded):
        axes[0, 2 + j].set_title(f"{meta['module']}\nmIoU {100 * meta['test_miou']:.1f}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    names = meta0["data"]["classes"]
    handles = [Patch(color=colour_labels(torch.tensor([c]).numpy(), k)[0], label=names[c]) for c in range(k)]
    fig.legend(handles=handles, loc="lower center", ncol=min(k, 6), fontsize=7, frameon=False)
    fig.suptitle(f"{meta0['data']['name']}: predictions of seed {meta0['seed']} (test mIoU of that run)", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    f = Path(out_dir) / f"{meta0['data']['name']}_predictions.png"
    f.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(f, dpi=110)
    plt.close(fig)
    return {"file": f.name, "caption": f"{meta0['data']['name']}: input, ground truth and every model's prediction "
                                       f"on {len(xs)} test scenes."}


def _find_checkpoints(paths: list[str], seed: int) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif (p / "runs").is_dir():  # a compare output folder: seed `seed` of every module
            here = sorted(p.glob(f"runs/*/seed{seed}/final.pt"))
            if not here:
                seeds = sorted({int(q.parent.name[4:]) for q in p.glob("runs/*/seed*/final.pt")})
                raise SystemExit(f"plugattn viz: no checkpoint of seed {seed} in {p}; seeds there: "
                                 f"{', '.join(map(str, seeds)) or 'none'} (use --seed)")
            found += here
        else:
            found += sorted(p.rglob("final.pt"))
    if not found:
        raise SystemExit(f"plugattn viz: no final.pt checkpoint under {', '.join(paths)} "
                         "(run `plugattn compare` first)")
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``plugattn viz``."""
    parser.add_argument("paths", nargs="*", default=["runs/compare"],
                        help="final.pt checkpoints or compare output folders (default runs/compare)")
    parser.add_argument("--seed", type=int, default=0, help="which seed's checkpoints to draw from a folder")
    parser.add_argument("--out", "-o", default=None,
                        help="figure folder (None: figures/ inside the first folder given, or beside the "
                             "checkpoint)")
    parser.add_argument("--gallery", default=None, help="write a markdown gallery here (e.g. docs/gallery.md)")
    parser.add_argument("--data-dir", default=None, help="data folder, if not the dataset's default place")
    parser.add_argument("--per-class", type=int, default=100, help="test images per class for the averages")


def run(args: argparse.Namespace) -> int:
    """Draw every checkpoint; optionally write the gallery."""
    ckpts = _find_checkpoints(args.paths, args.seed)
    if args.out is None:
        first = Path(args.paths[0])
        args.out = str((first if first.is_dir() else first.parent) / "figures")
    cache: dict[str, ImageData | SegData] = {}
    sections = []
    seg_groups: dict[str, list[Path]] = defaultdict(list)
    for c in ckpts:
        meta = load_checkpoint(c)["meta"]
        name = meta["data"]["name"]
        if name not in cache:
            cache[name] = _load_data(meta, args.data_dir)
        if meta.get("task") == "segmentation":
            seg_groups[name].append(c)
        figs = visualize(c, args.out, data=cache[name], per_class=args.per_class)
        for f in figs:
            print(f"wrote {Path(args.out) / f['file']}")
        if figs:
            sections.append((meta, figs))
    for name, group in seg_groups.items():
        fig = predictions_figure(group, args.out, data=cast("SegData", cache[name]))
        print(f"wrote {Path(args.out) / fig['file']}")
        sections.insert(0, ({"module": "all models", "data": {"name": name}, "seed": args.seed}, [fig]))
    if not sections:
        print(f"plugattn viz: no attention maps in {', '.join(map(str, ckpts))} (a baseline without attention?)",
              file=sys.stderr)
        return 1
    if args.gallery:
        g = Path(args.gallery)
        g.parent.mkdir(parents=True, exist_ok=True)
        rel = Path(args.out).resolve().relative_to(g.parent.resolve()) if Path(args.out).resolve().is_relative_to(
            g.parent.resolve()) else Path(args.out).resolve()
        lines = ["# Attention gallery", "",
                 "Made by `plugattn viz` from the checkpoints of `plugattn compare` (see results.md for the recipe): "
                 "every attention map that `plugattn.capture` records on the test images. Spatial maps are "
                 "overlaid on the input (jet colour map, scaled per image, red = high weight).", ""]
        for meta, figs in sections:
            score = f", {_score(meta)}" if "test_miou" in meta or "test_acc" in meta else ""
            lines += [f"## {meta['module']} ({meta['data']['name']}, seed {meta['seed']}{score})", ""]
            for f in figs:
                lines += [f"![{f['caption']}]({(rel / f['file']).as_posix()})", "", f"*{f['caption']}*", ""]
        g.write_text("\n".join(lines))
        print(f"wrote {g}")
    return 0
