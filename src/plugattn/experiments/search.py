"""``plugattn search``: find the best composition of the design space for a network, a data set and a cost budget.

Every trial samples a point of :mod:`plugattn.space.search_space` (the one description of the space; the named
modules are points too, enqueued first), builds the network with ``plugattn.compose(...)`` in every block, rejects
it before training when it exceeds the budget (extra parameters, FLOPs or latency over the baseline), trains it
with one seed on a training split and scores it on a validation split carved from the training data (the test set
is never used to select). The sampler is optuna's TPE (seeded); weak trials are stopped early by successive
halving (or Hyperband) on the validation score reported after every epoch. The study lives in an optuna RDB
(``OUT/study.db``, SQLite), so a search that stops resumes where it stopped, and several processes may run the
same command on the same ``OUT`` at once. Before the first trial, the baseline (no attention) is trained once on
the same split for the same epochs: the reference line of the front.

Then, in ``OUT/``: ``trials.csv`` / ``trials.json`` (every trial: state, validation score, cost, the exact
``plugattn.compose(...)`` call), the Pareto front of validation score against extra parameters and FLOPs
(``pareto.md``, ``pareto.png``), and the best ``retrain`` points re-trained with ``seeds`` seeds on the whole
training set and scored on the test set beside the baseline (``results.md``, ``results.json``): a trial's
single-seed validation score is a lead, not a result.

Python API::

    from plugattn.experiments.search import search
    summary = search(out="runs/search", trials=16, budget={"max_params": "5%"})
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..space.search_space import PRESET_POINTS, compose_call, point_key, suggest, to_spec
from .compare import input_shape, markdown_table, model_cost, summarize
from .data import ImageData, balanced_subset, load_dataset
from .models import compose_arg
from .segdata import SegData
from .train import (
    Recipe,
    SegRecipe,
    add_data_arguments,
    add_recipe_arguments,
    data_from_args,
    device_from_args,
    evaluate,
    evaluate_segmentation,
    module_name,
    recipe_from_args,
    same_config,
    train_run,
)

__all__ = ["search", "best_points", "validation_split", "parse_limit", "pareto_front", "write_outputs",
           "add_arguments", "run", "HELP", "PRUNERS"]

HELP = ("search the attention design space (optuna TPE + successive halving) for the best composition under a cost "
        "budget, then re-train the best points with several seeds")

PRUNERS = ("sh", "hyperband", "median", "none")
_NUM = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kKmMgG%]?)\s*$")
_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_limit(value: str | float | int | None, base: float, what: str, *, relative_only: bool = False
                ) -> float | None:
    """An extra-cost limit as an absolute amount over the baseline.

    ``"5%"`` is 5 % of ``base``; a number (``2000``, ``"1.5k"``, ``"2M"``) is the absolute extra amount.

    Examples:
        >>> parse_limit("5%", 1000, "max_params"), parse_limit("1.5k", 1000, "max_params")
        (50.0, 1500.0)
    """
    if value is None:
        return None
    m = _NUM.match(str(value))
    if m is None or (relative_only and m.group(2) != "%"):
        expected = "a percentage such as '10%'" if relative_only else "a number (e.g. 2000, '1.5k') or '5%'"
        raise ValueError(f"{what}: expected {expected}, got {value!r}")
    x = float(m.group(1))
    if m.group(2) == "%":
        return x / 100 * base
    return x * _SCALE[m.group(2).lower()]


# --------------------------------------------------------------------------------------------- data splits
def validation_split(data: ImageData | SegData, *, val_per_class: int = 100, train_per_class: int | None = None,
                     val_count: int = 200, num_train: int | None = None, seed: int = 0
                     ) -> tuple[ImageData | SegData, str]:
    """A data set whose training part is a subset of ``data``'s training part and whose test part is held out of it.

    Classification: ``val_per_class`` images of every class (class-balanced, seeded) become the validation set;
    the trials train on the rest, or on ``train_per_class`` of it per class. Scenes: a tenth of the training
    item images (class-balanced) is held out; ``val_count`` fixed scenes are made from them, and the trials'
    fresh training scenes (``num_train`` per epoch) from the other items. Files (VOC, folders): the last
    ``val_count`` training files of a seeded shuffle. The test set of ``data`` is never touched.

    Returns:
        (the split data set, a sentence that describes it).
    """
    if isinstance(data, ImageData):
        import numpy as np

        y = data.train_y.numpy()
        per_class = int(np.bincount(y).min())
        if not 0 < val_per_class < per_class:
            raise ValueError(f"validation_split: val_per_class must be in 1..{per_class - 1} (the smallest class "
                             f"has {per_class} training images), got {val_per_class}")
        val = balanced_subset(y, val_per_class, seed)
        rest = np.setdiff1d(np.arange(len(y)), val)
        if train_per_class:
            if train_per_class > per_class - val_per_class:
                raise ValueError(f"validation_split: train_per_class={train_per_class} exceeds the "
                                 f"{per_class - val_per_class} images per class left after the validation split")
            rest = rest[balanced_subset(y[rest], train_per_class, seed + 1)]
        rest_t, val_t = torch.from_numpy(rest), torch.from_numpy(val)
        split = ImageData(data.name, data.train_x[rest_t], data.train_y[rest_t], data.train_x[val_t],
                          data.train_y[val_t], list(data.classes), data.source + " [search split]")
        return split, (f"{len(rest)} training images ({train_per_class or 'all the rest'} per class) and a "
                       f"validation set of {val_per_class} per class, both from the training set")
    from .segdata import FileSegData, SceneData

    if isinstance(data, SceneData):
        import numpy as np

        x, y = data.pools[0], data.pools[1]
        per_class = int(np.bincount(y).min())
        held = balanced_subset(y, max(1, per_class // 10), seed)
        keep = np.setdiff1d(np.arange(len(y)), held)
        split_s = dataclasses.replace(data, pools=(x[keep], y[keep], x[held], y[held]), test_count=val_count,
                                      num_train=num_train or data.num_train, source=data.source + " [search split]")
        return split_s, (f"{split_s.num_train} fresh training scenes per epoch from {len(keep)} training items; "
                         f"{val_count} validation scenes from {len(held)} held-out training items")
    if isinstance(data, FileSegData):
        files = list(data.train_files)
        if not 0 < val_count < len(files):
            raise ValueError(f"validation_split: val_count must be in 1..{len(files) - 1}, got {val_count}")
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
        tr, va = [files[i] for i in order[:-val_count]], [files[i] for i in order[-val_count:]]
        if num_train:
            tr = tr[:num_train]
        split_f = dataclasses.replace(data, train_files=tr, test_files=va, num_train=len(tr),
                                      source=data.source + " [search split]")
        return split_f, f"{len(tr)} training files, {val_count} held-out training files for validation"
    raise TypeError(f"validation_split: data must be ImageData or SegData, got {type(data).__name__}")


# --------------------------------------------------------------------------------------------- the front
def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, score) that no other point beats (cost ≤ and score ≥, one strictly).

    Examples:
        >>> pareto_front([(0, 80.0), (10, 82.0), (5, 79.0), (20, 82.0), (30, 85.0)])
        [0, 1, 4]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _trial_rows(study: Any) -> list[dict[str, Any]]:
    """One plain dict per trial of the study."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        iv = t.intermediate_values
        rows.append({
            "number": t.number, "state": t.state.name,
            "value": t.value if t.state.name == "COMPLETE" else None,  # optuna 5 also gives pruned trials one
            "last_value": iv[max(iv)] if iv else None, "epochs": max(iv) if iv else 0,
            "preset": a.get("preset", ""), "note": a.get("rejected") or a.get("duplicate_of") or "",
            "params": a.get("params"), "flops": a.get("flops"), "latency_ms": a.get("latency_ms"),
            "extra_params": a.get("extra_params"), "extra_flops": a.get("extra_flops"),
            "extra_latency_pct": a.get("extra_latency_pct"),
            "duration_s": t.duration.total_seconds() if t.duration is not None else None,
            "compose": a.get("compose", ""), "compare_arg": compose_arg(a["spec"]) if a.get("spec") else "",
            "spec": a.get("spec"), "decisions": dict(t.params),
        })
    return rows


def _scored(rows: list[dict]) -> list[dict]:
    """Completed, trained trials (no duplicates), one per point."""
    seen, out = set(), []
    for r in sorted((r for r in rows if r["state"] == "COMPLETE" and r["spec"] is not None and not r["note"]),
                    key=lambda r: -r["value"]):
        k = json.dumps(r["spec"], sort_keys=True)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def _label(r: dict) -> str:
    return f"#{r['number']}" + (f" ({r['preset']})" if r["preset"] else "")


def write_outputs(study: Any, out: Path, metric: str) -> dict[str, Any]:
    """trials.csv, trials.json, pareto.md and pareto.png (with matplotlib) from the study; returns the front."""
    rows = _trial_rows(study)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trials.json").write_text(json.dumps(rows, indent=1))
    cols = ["number", "state", "value", "last_value", "epochs", "preset", "note", "params", "flops", "latency_ms",
            "extra_params", "extra_flops", "extra_latency_pct", "duration_s", "compose", "compare_arg"]
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    scored = _scored(rows)
    fronts = {}
    base = study.user_attrs.get("baseline_value")
    md = [f"# Pareto front: validation {metric} against extra cost", "",
          "Completed trials only (one seed each, validation split of the training data); a point is on the front "
          "when no other point is at least as good for less or equal cost.", ""]
    if base is not None:
        md += [f"Baseline (no attention), same split, epochs and seed: {100 * base:.2f}%.", ""]
    for cost in ("extra_params", "extra_flops"):
        idx = pareto_front([(r[cost], r["value"]) for r in scored])
        fronts[cost] = [scored[i]["number"] for i in idx]
        md += [f"## Against {cost.replace('_', ' ')}", "",
               f"| trial | validation {metric} (%) | extra params | extra FLOPs | extra latency (%) | compose |",
               "| --- | ---: | ---: | ---: | ---: | --- |"]
        for i in idx:
            r = scored[i]
            md.append(f"| {_label(r)} | {100 * r['value']:.2f} | {r['extra_params']:+,} | {r['extra_flops']:+,} | "
                      f"{r['extra_latency_pct']:+.1f} | `{r['compose']}` |")
        md.append("")
    (out / "pareto.md").write_text("\n".join(md))
    _plot(rows, scored, fronts, out / "pareto.png", metric, base)
    return {"trials": rows, "front": fronts, "scored": [r["number"] for r in scored], "baseline_value": base}


def _plot(rows: list[dict], scored: list[dict], fronts: dict, path: Path, metric: str, base: float | None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    by_num = {r["number"]: r for r in scored}
    for ax, cost in zip(axes, ("extra_params", "extra_flops")):
        pruned = [r for r in rows if r["state"] == "PRUNED" and r["last_value"] is not None and r[cost] is not None]
        ax.plot([r[cost] for r in pruned], [100 * r["last_value"] for r in pruned], "x", color="0.6",
                label="pruned (last reported)")
        ax.plot([r[cost] for r in scored], [100 * r["value"] for r in scored], "o", color="C0", alpha=0.7,
                label="completed")
        f = [by_num[n] for n in fronts[cost]]
        ax.step([r[cost] for r in f], [100 * r["value"] for r in f], "-", where="post", color="C3", label="front")
        for r in scored:
            if r["preset"]:
                ax.annotate(r["preset"], (r[cost], 100 * r["value"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xscale("symlog", linthresh=100)
        if base is not None:  # across the points' range (axhline would widen a symlog axis to negative costs)
            lo, hi = ax.get_xlim()
            ax.hlines(100 * base, lo, hi, color="k", lw=1, ls="--", label="baseline (no attention)")
            ax.set_xlim(lo, hi)
        ax.set_xlabel(cost.replace("_", " ") + " over the baseline (symlog)")
        ax.set_ylabel(f"validation {metric} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- the search
def _make_pruner(name: str, epochs: int, min_epochs: int) -> Any:
    import optuna

    if name == "sh":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=min_epochs)  # epochs count from 1
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"search: pruner must be one of {PRUNERS}, got {name!r}")


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as e:  # pragma: no cover
        raise ImportError("plugattn search needs optuna: pip install 'plugattn[search]'") from e
    return optuna


def _storage(optuna: Any, path: Path) -> Any:
    """The SQLite RDB storage, waiting up to 2 minutes for a lock.

    A trial whose process died (no heartbeat for 3 minutes) is marked failed and re-queued once by the next
    process that starts a trial.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        kw: dict[str, Any] = {"heartbeat_interval": 60, "grace_period": 180}
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
            kw["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        else:
            kw["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=1)
        return optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 120}},
                                          **kw)


def _counts(study: Any) -> tuple[int, int]:
    """(trained or training trials, all trials) of the study: budget rejections and duplicates are not trained."""
    n = 0
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state.name in ("COMPLETE", "PRUNED", "RUNNING") and not (
                t.user_attrs.get("rejected") or t.user_attrs.get("duplicate_of")):
            n += 1
    return n, len(trials)


def search(
    task: str | None = None,
    *,
    data: ImageData | SegData | None = None,
    recipe: Recipe | None = None,
    out: str | os.PathLike = "runs/search",
    trials: int | None = 16,
    timeout: float | None = None,
    epochs: int = 3,
    budget: dict[str, str | float | None] | None = None,
    val_per_class: int = 100,
    train_per_class: int | None = 300,
    val_count: int = 200,
    num_train: int | None = 1000,
    pruner: str = "sh",
    min_epochs: int | None = None,
    presets: Sequence[str] | str = "all",
    seed: int = 0,
    retrain: int = 2,
    seeds: int = 2,
    device: str | torch.device = "cpu",
    progress: bool = False,
    study_name: str = "search",
    log: bool = True,
) -> dict[str, Any]:
    """Search the design space; see the module docstring. Returns a summary (also written to ``out``).

    Args:
        task: ``"classification"`` or ``"segmentation"`` (default: from ``recipe`` / ``data``, else
            classification).
        data: the data set (default: fmnist-mini, or fmnist-scenes for segmentation).
        recipe: the recipe of the re-training runs (a :class:`SegRecipe` for segmentation); trials use it with
            ``epochs`` epochs.
        out: output folder; ``out/study.db`` holds the study (resumed when present).
        trials: stop when the study holds this many trained trials (all processes together; over-budget
            rejections and repeated points do not count). None: no limit (then give ``timeout``).
        timeout: stop starting new trials after this many seconds (a running trial finishes).
        epochs: epochs of a trial (the pruner's maximum resource).
        budget: ``{"max_params": ..., "max_flops": ..., "max_latency": ...}``, extra over the baseline:
            absolute (``2000``, ``"1.5k"``) or relative (``"5%"``); latency relative only.
        val_per_class: classification: validation images per class, taken from the training set.
        train_per_class: classification: training images per class of a trial (None: all the rest).
        val_count: segmentation: validation scenes (or files).
        num_train: segmentation: training scenes per epoch of a trial (None: the data set's).
        pruner: ``"sh"`` (successive halving), ``"hyperband"``, ``"median"`` or ``"none"``.
        min_epochs: the first epoch at which a trial can be pruned (the first rung); default a third of
            ``epochs``, at least 1 (after one epoch, scores barely rank trials).
        presets: named points enqueued first (``"all"``, ``"none"`` or names of :data:`PRESET_POINTS`).
        seed: seed of the trials' training, of the split and of the sampler.
        retrain: how many best points to re-train (Pareto front on extra parameters first, then by score).
        seeds: seeds 0..seeds-1 of every re-training (and of the baseline).
        device: ``"cpu"`` or ``"cuda"``.
        progress: progress bars of the training runs.
        study_name: the study's name in the storage.
        log: print one line per trial.
    """
    optuna = _import_optuna()
    if task is None:
        task = "segmentation" if isinstance(recipe, SegRecipe) or isinstance(data, SegData) else "classification"
    if task not in ("classification", "segmentation"):
        raise ValueError(f"search: task must be 'classification' or 'segmentation', got {task!r}")
    seg = task == "segmentation"
    if recipe is None:
        recipe = SegRecipe() if seg else Recipe()
    if isinstance(recipe, SegRecipe) != seg:
        raise TypeError(f"search: task {task!r} needs a {'SegRecipe' if seg else 'Recipe'}, got "
                        f"{type(recipe).__name__}")
    if data is None:
        if seg:
            from .segdata import load_segmentation

            data = load_segmentation("fmnist-scenes")
        else:
            data = load_dataset()
    if isinstance(data, SegData) != seg:
        raise TypeError(f"search: task {task!r} does not take {type(data).__name__}")
    for arg, v in (("epochs", epochs), ("seeds", seeds)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"search: {arg} must be a positive int, got {v!r}")
    if not isinstance(retrain, int) or retrain < 0:
        raise ValueError(f"search: retrain must be an int >= 0, got {retrain!r}")
    if trials is None and timeout is None:
        raise ValueError("search: give trials or timeout (or both), else the search never stops")
    if trials is not None and (not isinstance(trials, int) or trials < 0):
        raise ValueError(f"search: trials must be an int >= 0, got {trials!r}")
    if pruner not in PRUNERS:
        raise ValueError(f"search: pruner must be one of {PRUNERS}, got {pruner!r}")
    first_rung = max(1, epochs // 3) if min_epochs is None else min_epochs
    if not isinstance(first_rung, int) or not 1 <= first_rung <= epochs:
        raise ValueError(f"search: min_epochs must be an int between 1 and epochs ({epochs}), got {min_epochs!r}")
    if isinstance(presets, str):
        presets = list(PRESET_POINTS) if presets == "all" else [] if presets == "none" else [presets]
    unknown = [p for p in presets if p not in PRESET_POINTS]
    if unknown:
        raise ValueError(f"search: unknown presets {unknown}; expected names from {list(PRESET_POINTS)}")
    budget = dict(budget or {})
    bad_keys = set(budget) - {"max_params", "max_flops", "max_latency"}
    if bad_keys:
        raise ValueError(f"search: budget keys must be max_params, max_flops, max_latency; got {sorted(bad_keys)}")

    metric = "miou" if seg else "acc"
    channels = tuple(int(c) for c in recipe.widths)
    search_recipe = dataclasses.replace(recipe, epochs=epochs)
    split, split_text = (validation_split(data, val_count=val_count, num_train=num_train, seed=seed) if seg else
                         validation_split(data, val_per_class=val_per_class, train_per_class=train_per_class,
                                          seed=seed))
    meta = split.describe()
    shape = input_shape(data)
    base = model_cost("baseline", meta, search_recipe, shape=shape)
    limits = {"params": parse_limit(budget.get("max_params"), base["params"], "max_params"),
              "flops": parse_limit(budget.get("max_flops"), base["flops"], "max_flops"),
              "latency_ms": parse_limit(budget.get("max_latency"), base["latency_ms"], "max_latency",
                                        relative_only=True)}

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps({
        "task": task, "data": data.describe(), "recipe": asdict(recipe), "epochs": epochs, "split": split_text,
        "budget": {k: (None if v is None else str(v)) for k, v in budget.items() if v is not None},
        "pruner": pruner, "min_epochs": first_rung, "seed": seed, "channels": list(channels)}))
    storage = _storage(optuna, out / "study.db")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    probe = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", load_if_exists=True)
    old = probe.user_attrs.get("config")
    if old is None:
        probe.set_user_attr("config", config)
    elif not same_config(old, config):
        raise ValueError(f"search: {out} holds a study of another task, data, recipe, budget or split "
                         f"(its config is in the study's user attrs); use another --out or delete {out}")
    n_before = len(probe.get_trials(deepcopy=False))
    # a seeded sampler; a resumed or second process starts its stream where the study stands, not from the top
    sampler = optuna.samplers.TPESampler(seed=seed + n_before, n_startup_trials=10)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=sampler, pruner=_make_pruner(pruner, epochs, first_rung))
    if not study.user_attrs.get("presets_enqueued"):
        study.set_user_attr("presets_enqueued", True)
        for name in presets:
            params = PRESET_POINTS[name][0]
            if params["squeeze"] == "dct" and any(c % 16 for c in channels):
                continue
            study.enqueue_trial(params, user_attrs={"preset": name}, skip_if_exists=True)

    if study.user_attrs.get("baseline_value") is None:  # the reference line of the front: same split, same epochs
        res = train_run(None, seed, split, search_recipe, device=device, progress=progress, desc="baseline")
        value = float(res["test_" + metric])
        study.set_user_attr("baseline_value", value)
        if log:
            print(f"baseline (no attention): val {metric} {100 * value:.2f}%", flush=True)

    costs: dict[str, dict[str, float]] = {}

    def trained_before(key: str) -> Any:
        """A completed, trained trial of the same point, read from the storage: another process may have run it."""
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            a = t.user_attrs
            if not a.get("duplicate_of") and json.dumps(a.get("spec"), sort_keys=True) == key:
                return t
        return None

    evaluate_fn = evaluate_segmentation if seg else evaluate
    t0 = time.perf_counter()

    def objective(trial: Any) -> float:
        params = suggest(trial, channels)
        spec = to_spec(params, channels)
        key = json.dumps(spec, sort_keys=True)
        trial.set_user_attr("spec", spec)
        trial.set_user_attr("compose", compose_call(spec))
        trial.set_user_attr("key", point_key(params))
        if key not in costs:
            # builds the model (cheap, no training); model_cost passes the spec on to build_model
            costs[key] = model_cost(spec, meta, search_recipe, shape=shape)  # type: ignore[arg-type]
        c = costs[key]
        trial.set_user_attr("params", int(c["params"]))
        trial.set_user_attr("flops", int(c["flops"]))
        trial.set_user_attr("latency_ms", float(c["latency_ms"]))
        extra = {k: c[k] - base[k] for k in ("params", "flops", "latency_ms")}
        trial.set_user_attr("extra_params", int(extra["params"]))
        trial.set_user_attr("extra_flops", int(extra["flops"]))
        trial.set_user_attr("extra_latency_pct", 100 * extra["latency_ms"] / base["latency_ms"])
        over = []
        for k, lim in limits.items():
            if lim is None:
                continue
            # feasible when ≤ 0 (optuna's convention); scaled by the baseline so the constraints are comparable
            if hasattr(trial, "set_constraint"):
                with warnings.catch_warnings():  # a re-queued trial keeps its constraints (same point)
                    warnings.filterwarnings("ignore", message="The constraint value is ignored")
                    trial.set_constraint(k, (extra[k] - lim) / max(base[k], 1e-9))
            if extra[k] > lim:
                over.append(f"extra {k} {extra[k]:.4g} > {lim:.4g}")
        if over:
            trial.set_user_attr("rejected", "over budget: " + "; ".join(over))
            raise optuna.TrialPruned("over budget")
        prev = trained_before(key)
        if prev is not None:  # the sampler repeats itself in a finite space: reuse, do not re-train
            trial.set_user_attr("duplicate_of", f"same point as #{prev.number}")
            return float(prev.value)

        def on_epoch(epoch: int, model: torch.nn.Module) -> None:
            r = evaluate_fn(model, split, torch.device(device))  # type: ignore[arg-type]
            score = r["miou"] if seg else r[0]  # type: ignore[index, call-overload]
            trial.report(score, epoch)
            if epoch < epochs and trial.should_prune():  # a finished trial is scored, not pruned
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        res = train_run(spec, seed, split, search_recipe, device=device, progress=progress,
                        desc=f"trial {trial.number}", on_epoch=on_epoch)
        return float(res["test_" + metric])  # the split's test part is the validation set

    def log_trial(study: Any, t: Any) -> None:
        if not log:
            return
        a = t.user_attrs
        iv = t.intermediate_values
        what = a.get("rejected") or a.get("duplicate_of") or (
            f"val {metric} {100 * t.value:.2f}%" if t.state.name == "COMPLETE" else
            f"pruned after epoch {max(iv)} (val {metric} {100 * iv[max(iv)]:.2f}%)" if iv else t.state.name.lower())
        tag = f" ({a['preset']})" if a.get("preset") else ""
        print(f"trial {t.number}{tag}: {what}; extra params {a.get('extra_params', 0):+,}  "
              f"[{time.perf_counter() - t0:.0f}s] {a.get('compose', '')}", flush=True)

    attempts = 0
    cap = 20 * (trials if trials else 50)
    while True:
        trained, _ = _counts(study)
        if trials is not None and trained >= trials:
            break
        if timeout is not None and time.perf_counter() - t0 >= timeout:
            break
        if attempts >= cap:
            print(f"search: stopped after {attempts} attempts: the budget or repeats leave too few new points")
            break
        attempts += 1
        study.optimize(objective, n_trials=1, callbacks=[log_trial], gc_after_trial=False)

    summary = write_outputs(study, out, metric)
    summary.update(config=config, baseline_cost=base, limits=limits, split=split_text)
    if retrain:
        summary["retrain"] = _retrain(summary, data, recipe, out, retrain, seeds, device, progress, shape, log)
    (out / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=1,
                                                 default=str))
    return summary


def best_points(summary: dict, k: int) -> list[int]:
    """The ``k`` trials to re-train: the front on extra parameters by score, then the other completed points.

    ``summary``: what :func:`search` returns, or ``OUT/summary.json``.
    """
    front = set(summary["front"]["extra_params"])
    scored = summary["scored"]  # completed points, best score first
    return ([n for n in scored if n in front] + [n for n in scored if n not in front])[:k]


def _retrain(summary: dict, data: Any, recipe: Recipe, out: Path, k: int, seeds: int, device: Any, progress: bool,
             shape: tuple[int, ...], log: bool) -> dict[str, Any]:
    """Re-train the best ``k`` points and the baseline with ``seeds`` seeds on the whole training set; results.md."""
    rows = {r["number"]: r for r in summary["trials"]}
    picked = best_points(summary, k)
    jobs: list[tuple[str, dict | None]] = [("baseline", None)] + [(f"trial{n}", rows[n]["spec"]) for n in picked]
    results, costs, names = [], {}, {}
    meta = data.describe()
    for s in range(seeds):
        for tag, spec in jobs:
            r = train_run(spec, s, data, recipe, out_dir=out / "retrain" / tag / f"seed{s}", device=device,
                          progress=progress, desc=f"retrain {tag} seed {s}")
            results.append(r)
            if log:
                score = float(r["test_miou"] if "test_miou" in r else r["test_acc"])
                print(f"retrain {tag} seed {s}: test {100 * score:.2f}%", flush=True)
    for tag, spec in jobs:
        name = module_name(spec)
        names[name] = tag
        costs[name] = model_cost(spec if spec is not None else "baseline", meta, recipe, shape=shape)  # type: ignore[arg-type]
    table = summarize(results, costs)
    md = ["# plugattn search: the best points re-trained", "",
          f"Re-trained on the whole training set with seeds 0..{seeds - 1} and scored on the test set "
          f"({recipe.epochs} epochs each); the search itself saw only a validation split of the training data "
          f"({summary['split']}). Δ: difference of means ± its standard error; '(within noise)' when |Δ| < 2 SE.",
          "", markdown_table(table), "", "| module | trial | validation score (search, 1 seed) | compose |",
          "| --- | --- | ---: | --- |"]
    for n in picked:
        r = rows[n]
        md.append(f"| {module_name(r['spec'])} | {_label(r)} | {100 * r['value']:.2f} | `{r['compose']}` |")
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps({"rows": table, "picked": picked}, indent=1))
    return {"rows": table, "picked": picked}


# --------------------------------------------------------------------------------------------- the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``plugattn search``."""
    g = parser.add_argument_group("search")
    g.add_argument("--trials", type=int, default=16,
                   help="stop when the study holds this many trained trials (all processes together; 0 with "
                        "--timeout: no trial limit)")
    g.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    g.add_argument("--search-epochs", type=int, default=3, help="epochs of one trial (the pruner's maximum)")
    g.add_argument("--max-params", default=None, help="budget: extra parameters over the baseline, absolute "
                                                      "(2000, 1.5k) or relative (5%%)")
    g.add_argument("--max-flops", default=None, help="budget: extra FLOPs over the baseline, absolute or relative")
    g.add_argument("--max-latency", default=None, help="budget: extra CPU latency over the baseline, relative (10%%)")
    g.add_argument("--val-per-class", type=int, default=100,
                   help="classification: validation images per class, held out of the training set")
    g.add_argument("--search-train-per-class", type=int, default=300,
                   help="classification: training images per class of a trial (0: all the rest)")
    g.add_argument("--val-count", type=int, default=200, help="segmentation: validation scenes / files")
    g.add_argument("--search-num-train", type=int, default=1000,
                   help="segmentation: training scenes per epoch of a trial (0: the data set's)")
    g.add_argument("--pruner", choices=PRUNERS, default="sh",
                   help="early stopping: successive halving, Hyperband, median, none")
    g.add_argument("--min-epochs", type=int, default=None,
                   help="first epoch at which a trial can be pruned (default: a third of --search-epochs, at least 1)")
    g.add_argument("--presets", nargs="+", default=["all"],
                   help=f"named points tried first: all, none, or names from {' '.join(PRESET_POINTS)}")
    g.add_argument("--seed", type=int, default=0, help="seed of the trials, the split and the sampler")
    g.add_argument("--retrain", type=int, default=2, help="best points re-trained with --seeds seeds (0: none)")
    g.add_argument("--seeds", type=int, default=2, help="seeds of every re-training (and of the baseline)")
    g.add_argument("--out", "-o", default="runs/search", help="output folder (the study is OUT/study.db)")
    g.add_argument("--study-name", default="search", help="name of the study in the storage")
    add_data_arguments(parser)
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the search and print where the outputs are."""
    device = device_from_args(args)
    data = data_from_args(args)
    recipe = recipe_from_args(args)
    presets: Any = args.presets[0] if len(args.presets) == 1 and args.presets[0] in ("all", "none") else args.presets
    budget = {"max_params": args.max_params, "max_flops": args.max_flops, "max_latency": args.max_latency}
    trials = None if args.trials == 0 and args.timeout is not None else args.trials
    search(recipe.task, data=data, recipe=recipe, out=args.out, trials=trials, timeout=args.timeout,
                     epochs=args.search_epochs, budget=budget, val_per_class=args.val_per_class,
                     train_per_class=args.search_train_per_class or None, val_count=args.val_count,
                     num_train=args.search_num_train or None, pruner=args.pruner, min_epochs=args.min_epochs,
                     presets=presets, seed=args.seed, retrain=args.retrain, seeds=args.seeds, device=device,
                     progress=not args.no_progress)
    out = Path(args.out)
    print("\n" + (out / "pareto.md").read_text())
    if (out / "results.md").is_file() and args.retrain:
        print((out / "results.md").read_text())
    print(f"wrote {out}/: trials.csv, trials.json, pareto.md, pareto.png" + (", results.md" if args.retrain else ""))
    return 0
