"""One training run: a backbone with one attention module, one seed, one recipe; resumable and DDP-ready.

Deterministic on CPU for a given seed (and thread count): the model is initialised after
``torch.manual_seed(seed)``, and every epoch's shuffling and augmentation come from a generator seeded with
(seed, epoch), so a run resumed from its last epoch checkpoint continues exactly as if never stopped.

Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` set) the run is data-parallel (DDP; gloo on CPU, nccl on
CUDA): every process draws the same global permutation and augmentation, takes every N-th image of each global
batch, and gradients are averaged, so the optimisation matches the single-process run up to BatchNorm
statistics (per-process batches) and float round-off. Only rank 0 writes files and shows progress.

Run one training from the shell (single process or under torchrun)::

    python -m plugattn.experiments.train --module se --epochs 2 --out runs/one
    torchrun --nproc_per_node 2 -m plugattn.experiments.train --module se --epochs 2 --out runs/one-ddp
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .data import DATASETS, ImageData, augment, load_dataset, normalize
from .models import resnet
from .segdata import SEG_DATASETS, SegData, load_segmentation
from .segmodels import BACKBONES, build_seg_model

__all__ = ["Recipe", "SegRecipe", "train_run", "evaluate", "evaluate_segmentation", "segmentation_metrics",
           "build_model", "module_name", "load_checkpoint", "dist_env", "main"]

CKPT_VERSION = 1


@dataclass
class Recipe:
    """Everything that defines a training run apart from the module, the seed and the data.

    Defaults: SGD with Nesterov momentum 0.9, batch 128, peak lr 0.1 after a linear warm-up (one epoch, at most
    a quarter of the run),
    cosine decay to 0 per step, weight decay 5e-4 (not on BN and biases), random crop (zero pad 2, or 4 for
    inputs ≥ 32 px) and horizontal flip; ResNet with widths 16-32-64, one block per stage, stem stride 2.
    """

    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    augment: bool = True
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    depth: int = 1
    stem_stride: int = 2

    def __post_init__(self) -> None:
        self.widths = [int(w) for w in self.widths]
        for name in ("epochs", "batch_size", "depth", "stem_stride"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Recipe: {name} must be a positive int, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"Recipe: lr must be > 0, got {self.lr!r}")

    @property
    def task(self) -> str:
        """``"classification"``; :class:`SegRecipe` says ``"segmentation"``."""
        return "classification"


@dataclass
class SegRecipe(Recipe):
    """A segmentation run: the encoder at output stride 8 + head of :mod:`plugattn.experiments.segmodels`.

    Defaults: SGD Nesterov 0.9, batch 16, peak lr 0.4 after a linear warm-up, cosine decay, weight decay 1e-4,
    cross-entropy ignoring the data's ignore label; the small encoder (widths 16-32-64-128, one block per stage)
    unless ``backbone`` names a torchvision ResNet (the lr was tuned for the small encoder only). Augmentation is
    the data set's own (fresh scenes each epoch, or random scale / crop / flip).
    """

    epochs: int = 4
    batch_size: int = 16
    lr: float = 0.4  # small encoder's baseline, lr 0.05..0.8 by doubling: within noise of the best (docs/results.md)
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    backbone: str = "small"

    @property
    def task(self) -> str:
        """``"segmentation"``."""
        return "segmentation"


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _init_dist(device: torch.device) -> bool:
    """Initialise the default process group when launched by torchrun; True when distributed."""
    _, world, _ = dist_env()
    if world <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def module_name(module: str | dict | None) -> str:
    """The name a run goes by: the registry name, ``"baseline"``, or a compose spec as ``key=value`` pairs."""
    if module is None:
        return "baseline"
    if isinstance(module, dict):
        return "compose(" + ", ".join(f"{k}={v!r}" for k, v in sorted(module.items())) + ")"
    return module


def build_model(module: str | dict | None, data_meta: dict[str, Any], recipe: Recipe) -> nn.Module:
    """The network for ``module`` (None/"baseline": no attention; a dict: a compose spec) sized for the data set.

    A :class:`SegRecipe` builds the segmentation network of :func:`~plugattn.experiments.segmodels.build_seg_model`,
    a :class:`Recipe` the classification ResNet.
    """
    attn = None if module in (None, "baseline") else module
    if isinstance(recipe, SegRecipe):
        return build_seg_model(attn, len(data_meta["classes"]), int(data_meta["in_channels"]),
                               backbone=recipe.backbone, widths=recipe.widths, depth=recipe.depth)
    return resnet(attn, num_classes=len(data_meta["classes"]), in_channels=int(data_meta["shape"][0]),
                  widths=recipe.widths, depth=recipe.depth, stem_stride=recipe.stem_stride)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * t))


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, device: torch.device, batch_size: int = 500) -> tuple[float, float]:
    """(top-1 accuracy, mean loss) on the test split; under DDP each rank takes a shard and the sums are reduced."""
    rank, world, _ = dist_env() if dist.is_initialized() else (0, 1, 0)
    model.eval()
    n = data.test_x.shape[0]
    idx = torch.arange(rank, n, world)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, len(idx), batch_size):
        b = idx[i:i + batch_size]
        x = normalize(data.test_x[b], data.mean, data.std).to(device)
        y = data.test_y[b].to(device)
        out = model(x)
        correct += (out.argmax(1) == y).sum()
        loss += F.cross_entropy(out, y, reduction="sum").double()
    if world > 1:
        dist.all_reduce(correct)
        dist.all_reduce(loss)
    return float(correct) / n, float(loss) / n


def segmentation_metrics(confusion: Tensor, class_names: list[str] | tuple[str, ...] | None = None,
                         background: int | None = 0) -> dict[str, Any]:
    """Mean IoU, object-class mean IoU, pixel accuracy and per-class IoU from one confusion matrix.

    ``confusion[i, j]`` counts pixels of true class i predicted as j (ignored pixels excluded). A class that is
    neither present nor predicted has no IoU (``None``) and is left out of the means. ``miou`` averages every
    class, background included; ``miou_fg`` every class but ``background`` (None: same as ``miou``).
    """
    cm = confusion.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    valid = ~iou.isnan()
    fg = valid.clone()
    if background is not None:
        fg[background] = False
    total = cm.sum()
    return {
        "miou": float(iou[valid].mean()) if valid.any() else float("nan"),
        "miou_fg": float(iou[fg].mean()) if fg.any() else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
        "iou": [None if math.isnan(v) else v for v in iou.tolist()],
        "classes": list(class_names) if class_names is not None else None,
    }


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, data: SegData, device: torch.device, batch_size: int = 50
                          ) -> dict[str, Any]:
    """Metrics over the whole test set from one confusion matrix (:func:`segmentation_metrics`) and the mean loss.

    Under DDP each rank takes a shard of the test images and the confusion matrices and losses are summed.
    """
    rank, world, _ = dist_env() if dist.is_initialized() else (0, 1, 0)
    model.eval()
    k = data.num_classes
    cm = torch.zeros(k * k, dtype=torch.float64, device=device)
    loss = torch.zeros(2, dtype=torch.float64, device=device)  # summed loss, counted pixels
    for x, y in data.test_batches(batch_size, rank, world):
        x = normalize(x, data.mean, data.std).to(device)
        y = y.to(device)
        out = model(x)
        keep = y != data.ignore_index
        loss[0] += F.cross_entropy(out, y, ignore_index=data.ignore_index, reduction="sum").double()
        loss[1] += keep.sum()
        idx = y[keep] * k + out.argmax(1)[keep]
        cm += torch.bincount(idx, minlength=k * k).double()
    if world > 1:
        dist.all_reduce(cm)
        dist.all_reduce(loss)
    metrics = segmentation_metrics(cm.view(k, k).cpu(), data.class_names,
                                   background=0 if data.class_names[0].lower() == "background" else None)
    metrics["loss"] = float(loss[0] / loss[1].clamp_min(1))
    return metrics


def same_config(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Equal plain configs, floats to ``rel`` (data statistics may differ in the last bits across machines)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_config(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_config(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
        return numbers and math.isclose(a, b, rel_tol=rel, abs_tol=rel)
    return a == b


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train_run` (tensors and plain metadata only: ``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written checkpoint


def train_run(
    module: str | dict | None,
    seed: int,
    data: ImageData | SegData,
    recipe: Recipe | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> dict[str, Any]:
    """Train ``module`` in the network with ``seed``; return plain results (test metrics, loss, times, history).

    ``module`` is a registry name, ``None``/``"baseline"``, a compose spec (dict of :func:`plugattn.compose`
    keywords) or, for segmentation, a head or network name (see :func:`build_model`). A :class:`SegRecipe` with
    :class:`~plugattn.experiments.segdata.SegData` trains a segmentation network (a fresh training set per epoch
    from ``data.train_epoch``; results ``test_miou``, ``test_miou_fg``, ``test_pixel_acc``, ``test_iou``); a
    :class:`Recipe` with :class:`ImageData` a classifier (``test_acc``).

    With ``out_dir``, writes ``last.pt`` after every epoch (model, optimizer, epoch, history) and, when done,
    ``final.pt`` (model weights + metadata) and ``result.json``; an existing ``result.json`` means the run is
    finished and its result is returned without training; an existing ``last.pt`` resumes the run.
    ``on_epoch(epoch, model)`` is called after every epoch (1-based; e.g. to evaluate on a validation set and
    stop a weak run by raising).
    """
    recipe = recipe or (SegRecipe() if isinstance(data, SegData) else Recipe())
    seg = isinstance(recipe, SegRecipe)
    if seg != isinstance(data, SegData):
        raise TypeError(f"train_run: a {type(recipe).__name__} cannot train on {type(data).__name__} "
                        "(SegRecipe goes with segmentation data, Recipe with classification data)")
    device = torch.device(device)
    distributed = _init_dist(device)
    rank, world, _ = dist_env() if distributed else (0, 1, 0)
    if recipe.batch_size % world:
        raise ValueError(f"train_run: batch_size {recipe.batch_size} must be divisible by the world size {world}")
    name = module_name(module)
    out = Path(out_dir) if out_dir is not None else None
    meta: dict[str, Any] = {
        "module": name, "spec": module if isinstance(module, dict) else None, "seed": int(seed), "task": recipe.task,
        "recipe": asdict(recipe), "data": data.describe(), "world_size": world,
        "threads": torch.get_num_threads(), "device": device.type, "torch": str(torch.__version__),
        "version": CKPT_VERSION,
    }
    if out is not None and (out / "result.json").is_file():
        return json.loads((out / "result.json").read_text())

    torch.manual_seed(seed)
    model = build_model(module, meta["data"], recipe).to(device)
    opt = torch.optim.SGD(_param_groups(model, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=recipe.momentum > 0)
    n = data.num_train if seg else data.train_x.shape[0]  # type: ignore[union-attr]
    steps_per_epoch = n // recipe.batch_size  # drop the last partial batch
    if steps_per_epoch < 1:
        raise ValueError(f"train_run: {n} training samples is fewer than one batch of {recipe.batch_size}")
    total = steps_per_epoch * recipe.epochs
    warmup = min(int(round(recipe.warmup_epochs * steps_per_epoch)), total // 4)  # short runs: a quarter at most
    start_epoch, history, train_time = 0, [], 0.0
    if out is not None and (out / "last.pt").is_file():
        ck = load_checkpoint(out / "last.pt")
        if same_config(ck["meta"]["recipe"], meta["recipe"]) and same_config(ck["meta"]["data"], meta["data"]):
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            start_epoch, history, train_time = int(ck["epoch"]), list(ck["history"]), float(ck["train_time"])
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                  gradient_as_bucket_view=True)
    local = slice(rank, None, world)
    show = progress and rank == 0
    if show:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # progress bars need the `train` extra; train without them
            show = False
    ignore = getattr(data, "ignore_index", -100)
    for epoch in range(start_epoch, recipe.epochs):
        net.train()
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
        torch.manual_seed(int(seed) * 1_000_003 + epoch)  # dropout's draws: the same whether resumed or not
        if seg:
            train_x, train_y = data.train_epoch(epoch, seed)  # type: ignore[union-attr]
        else:
            train_x, train_y = data.train_x, data.train_y  # type: ignore[union-attr]
        perm = torch.randperm(n, generator=g)
        t0 = time.perf_counter()
        seen, correct, loss_sum = 0, 0, 0.0
        # a tqdm bar (untyped) when shown, else the plain range
        bar: Any = tqdm(range(steps_per_epoch), desc=desc or f"{name} seed {seed}", unit="batch", leave=False,
                        dynamic_ncols=True) if show else range(steps_per_epoch)
        if show:
            bar.set_description(f"{desc or name + ' seed ' + str(seed)} ep {epoch + 1}/{recipe.epochs}")
        for i in bar:
            b = perm[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            xb = train_x[b]
            if recipe.augment and not seg:
                xb = augment(xb, 4 if xb.shape[-1] >= 32 else 2, g)  # drawn for the global batch: same on every rank
            xb, yb = normalize(xb[local], data.mean, data.std).to(device), train_y[b][local].to(device)
            for group in opt.param_groups:
                group["lr"] = _lr_at(epoch * steps_per_epoch + i, total, warmup, recipe.lr)
            logits = net(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=recipe.label_smoothing, ignore_index=ignore)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                keep = yb != ignore
                counted = int(keep.sum())
                seen += counted
                correct += int(((logits.argmax(1) == yb) & keep).sum())
                loss_sum += float(loss) * counted
            if show and (i % 10 == 0 or i == steps_per_epoch - 1):
                bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
        if show:
            bar.close()
        train_time += time.perf_counter() - t0
        stats = torch.tensor([loss_sum, correct, seen], dtype=torch.float64)
        if distributed:
            dist.all_reduce(stats)
        history.append({"epoch": epoch + 1, "train_loss": float(stats[0] / stats[2]),
                        "train_acc": float(stats[1] / stats[2]),
                        "lr": opt.param_groups[0]["lr"], "time": train_time})
        if out is not None and rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            _save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "history": history,
                   "train_time": train_time, "meta": meta}, out / "last.pt")
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
    if seg:
        m = evaluate_segmentation(model, data, device)  # type: ignore[arg-type]
        scores = {"test_miou": m["miou"], "test_miou_fg": m["miou_fg"], "test_pixel_acc": m["pixel_acc"],
                  "test_iou": m["iou"], "test_loss": m["loss"]}
    else:
        test_acc, test_loss = evaluate(model, data, device)  # type: ignore[arg-type]
        scores = {"test_acc": test_acc, "test_loss": test_loss}
    result = {**meta, **scores, "train_time": train_time, "history": history,
              "final_train_acc": history[-1]["train_acc"] if history else None}
    if out is not None and rank == 0:
        meta = {k: v for k, v in result.items() if k != "history"}
        _save({"model": model.state_dict(), "meta": meta}, out / "final.pt")
        (out / "result.json").write_text(json.dumps(result, indent=1))
        (out / "last.pt").unlink(missing_ok=True)
    if distributed:
        dist.barrier()
    return result


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """Data options shared by ``compare`` and ``train``."""
    p.add_argument("--task", choices=["classification", "segmentation"], default="classification",
                   help="classification (a ResNet classifier) or segmentation (an output-stride-8 encoder + head)")
    p.add_argument("--dataset", default=None, choices=[*DATASETS, *SEG_DATASETS],
                   help="classification: fmnist-mini (embedded; the default), fashion-mnist (IDX folder), cifar10, "
                        "imagefolder; segmentation: fmnist-scenes (the default), fmnist-scenes-context (both generated "
                        "from Fashion-MNIST, no download), voc (Pascal VOC layout), segfolder (images/ + masks/)")
    p.add_argument("--data-dir", default=None, help="folder with the data (default: the standard place per dataset)")
    p.add_argument("--download", action="store_true", help="classification: download missing data from the "
                                                           "official address")
    p.add_argument("--train-per-class", type=int, default=None, help="class-balanced training subset (default: all)")
    p.add_argument("--test-per-class", type=int, default=None, help="class-balanced test subset (default: all)")
    p.add_argument("--image-size", type=int, default=None,
                   help="imagefolder: resize to this side (default 32); scenes: canvas side (default 96); voc / "
                        "segfolder: training crop side (default 320)")
    p.add_argument("--num-train", type=int, default=None,
                   help="segmentation scenes: training scenes generated per epoch (default 1000)")
    p.add_argument("--num-test", type=int, default=None, help="segmentation scenes: test scenes (default 1000)")


_RECIPE_ARGS = ("epochs", "batch_size", "lr", "weight_decay", "widths", "depth", "stem_stride", "backbone")


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """Recipe options shared by ``compare`` and ``train``; unset ones take the task's recipe default."""
    r, s = Recipe(), SegRecipe()
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs (default {r.epochs}; segmentation {s.epochs})")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"global batch size (default {r.batch_size}; segmentation {s.batch_size})")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {r.lr}; segmentation {s.lr})")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"weight decay (default {r.weight_decay}; segmentation {s.weight_decay})")
    p.add_argument("--widths", type=int, nargs="+", default=None,
                   help="stage widths (default 16 32 64; segmentation's small encoder 16 32 64 128)")
    p.add_argument("--depth", type=int, default=None, help=f"blocks per stage (default {r.depth})")
    p.add_argument("--stem-stride", type=int, default=None, help=f"classification: stride of the stem conv "
                                                                 f"(default {r.stem_stride})")
    p.add_argument("--backbone", default=None, choices=list(BACKBONES),
                   help="segmentation encoder: small (default) or a torchvision ResNet at output stride 8 (random "
                        "init; the attention goes into every residual block with plugattn.insert)")
    p.add_argument("--no-augment", action="store_true", help="classification: no random crop / flip")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu; under torchrun cuda uses LOCAL_RANK)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per process (default 1: fastest for this small network on a shared CPU, "
                        "and the same results on any machine; 0 = torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _task(args: argparse.Namespace) -> str:
    if args.dataset is None:
        return args.task
    task = "segmentation" if args.dataset in SEG_DATASETS else "classification"
    if args.task != task and args.task == "segmentation":
        raise ValueError(f"--dataset {args.dataset} is a classification data set; --task segmentation takes "
                         f"{', '.join(SEG_DATASETS)}")
    return task


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The task's recipe (:class:`Recipe` or :class:`SegRecipe`) with the options given on the command line."""
    seg = _task(args) == "segmentation"
    given = {k: getattr(args, k) for k in _RECIPE_ARGS if getattr(args, k, None) is not None}
    if not seg and "backbone" in given:
        raise ValueError("--backbone applies to --task segmentation (classification uses the small ResNet)")
    if seg and "stem_stride" in given:
        raise ValueError("--stem-stride applies to classification")
    if "widths" in given:
        given["widths"] = list(given["widths"])
    if seg:
        return SegRecipe(**given)
    return Recipe(**given, augment=not args.no_augment)


def data_from_args(args: argparse.Namespace) -> ImageData | SegData:
    """The data set named by the options (classification or segmentation)."""
    if _task(args) == "segmentation":
        kw = {k: getattr(args, k) for k in ("num_train", "num_test") if getattr(args, k) is not None}
        if args.image_size is not None:
            kw["size" if (args.dataset or "fmnist-scenes").startswith("fmnist") else "crop_size"] = args.image_size
        return load_segmentation(args.dataset or "fmnist-scenes", args.data_dir, **kw)
    return load_dataset(args.dataset or "fmnist-mini", args.data_dir, download=args.download,
                        train_per_class=args.train_per_class, test_per_class=args.test_per_class,
                        image_size=args.image_size or 32)


def device_from_args(args: argparse.Namespace) -> torch.device:
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist_env()[2])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    return device


def main(argv: list[str] | None = None) -> int:
    """``python -m plugattn.experiments.train``: one run; prints the result as JSON (rank 0)."""
    p = argparse.ArgumentParser(prog="python -m plugattn.experiments.train", description="one training run")
    p.add_argument("--module", default="baseline", help="registry name or 'baseline' (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (checkpoints, result.json); default: none written")
    add_data_arguments(p)
    add_recipe_arguments(p)
    args = p.parse_args(argv)
    device = device_from_args(args)
    res = train_run(None if args.module == "baseline" else args.module, args.seed, data_from_args(args),
                    recipe_from_args(args), out_dir=args.out, device=device, progress=not args.no_progress)
    if dist_env()[0] == 0:
        keys = ("module", "seed", "world_size", "test_miou", "test_miou_fg", "test_pixel_acc", "test_acc", "test_loss",
                "train_time")
        print(json.dumps({k: res[k] for k in keys if k in res}))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
