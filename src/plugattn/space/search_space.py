"""The search space of ``plugattn search``: the one place that says which compositions a search may try.

A point of the space is a dict of plain choices (``params``); :func:`to_spec` turns it into the keyword arguments
of :func:`plugattn.compose` and :func:`compose_call` into the exact call that rebuilds it. The space is a tree of
decisions written once, in :func:`walk`: each decision depends only on the ones before it, so an invalid
combination is never produced (nothing is discovered by a crashing trial). The same function drives the
optuna sampler (:func:`suggest`) and the exhaustive listing (:func:`all_points`, used by the tests to build and
run every point).

Decisions (in order; a name is used by one context only, so its choices never change between trials):

============  =====================================================  ========================================
decision      choices                                                 when
============  =====================================================  ========================================
squeeze       avg, max, avg+max, avg+std, gem, dct, conv, linear,      always
              attn, cluster
axes          hw, h+w (Coordinate-style), c (spatial)                 avg, max, avg+max, avg+std
axes_gem      hw, c                                                   gem (GeM has no h+w)
merge         shared (CBAM), concat (SRM), mean                       two statistics over hw (h+w: mean;
                                                                      c: concat, fixed)
num_clusters  2, 4, 8                                                 cluster (kept apart, shared excite)
excite_hw     mlp, conv1d (ECA, local), attention (global),           a C-channel descriptor (hw)
              multiscale (1-D kernels 3, 5, 7)
excite_cat    mlp, cfc (SRM's channel-wise FC)                        concatenated statistics (K·C channels)
excite_hpw    axial (Coordinate), mlp, conv1d                         h+w
excite_c      conv2d, multiscale (2-D kernels 3, 7)                   c (spatial maps)
reduction     4, 8, 16 (MLP width C/r)                                mlp
reduction_ax  8, 16, 32                                               axial
kernel_size   adaptive (ECA's ψ(C)), 3, 5, 7                          conv1d
ms_fuse       sum, max                                                multiscale
kernel_2d     3, 7 (no bias, BatchNorm after, as CBAM)                conv2d
reweight      multiply, residual (x + γ·x·w, γ from 0)                always
gate_mul      sigmoid, hard_sigmoid, softmax (over channels)          multiply, not c
gate_res      sigmoid, hard_sigmoid, softmax, tanh                    residual, not c
gate_c_mul    sigmoid, hard_sigmoid                                   multiply, c
gate_c_res    sigmoid, hard_sigmoid, tanh                             residual, c
============  =====================================================  ========================================

Rules behind the tree (from :func:`plugattn.compose`): ``axes`` applies only to statistics and GeM; h+w takes
one statistic or their mean; ``conv1d``/``attention``/``multiscale`` map C channels to themselves, so they need
an un-concatenated descriptor; ``cfc`` needs concatenated statistics; ``axial`` needs h+w; over C (axes c) the
excitation is a 2-D conv on the 1-2 pooled maps and a softmax over one map would be the constant 1 (excluded);
``tanh`` (negative weights) only with the residual reweight, where it gives x·(1 + γ·tanh ℓ).

The named modules are points (:data:`PRESET_POINTS`); :data:`EXACT_PRESETS` are exactly their preset (the same
parameters and output, tested), the others the nearest point, their difference in the note.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["Choose", "walk", "suggest", "all_points", "to_spec", "compose_call", "point_key", "PRESET_POINTS",
           "EXACT_PRESETS", "SQUEEZE_CHOICES", "squeeze_choices"]

Choose = Callable[[str, Sequence[Any]], Any]
"""``choose(name, choices) -> one of choices``: how :func:`walk` makes a decision."""

SQUEEZE_CHOICES = ("avg", "max", "avg+max", "avg+std", "gem", "dct", "conv", "linear", "attn", "cluster")
_STATS = ("avg", "max", "avg+max", "avg+std")


def squeeze_choices(channels: Sequence[int] | None = None) -> tuple[str, ...]:
    """The squeezes valid at every width in ``channels``: ``dct`` (FcaNet's top16) needs C divisible by 16."""
    if channels is not None and any(int(c) % 16 for c in channels):
        return tuple(s for s in SQUEEZE_CHOICES if s != "dct")
    return SQUEEZE_CHOICES


def walk(choose: Choose, channels: Sequence[int] | None = None) -> dict[str, Any]:
    """Make the decisions of one point with ``choose``; returns the point (decision name → choice).

    ``channels``: the widths the module will be built at (None: any multiple of 16); a study keeps them fixed,
    so each decision's choices are the same in every trial.

    Examples:
        >>> walk(lambda name, choices: choices[0])  # the first choice everywhere: SE with r = 4
        {'squeeze': 'avg', 'axes': 'hw', 'excite_hw': 'mlp', 'reduction': 4, 'reweight': 'multiply', 'gate_mul': \
'sigmoid'}
    """
    p: dict[str, Any] = {}

    def pick(name: str, choices: Sequence[Any]) -> Any:
        p[name] = choose(name, choices)
        return p[name]

    sq = pick("squeeze", squeeze_choices(channels))
    if sq in _STATS:
        axes = pick("axes", ("hw", "h+w", "c"))
    elif sq == "gem":
        axes = pick("axes_gem", ("hw", "c"))
    else:
        axes = "c" if sq == "linear" else "hw"
    concat = False
    if "+" in sq and axes == "hw":
        concat = pick("merge", ("shared", "concat", "mean")) == "concat"
    if sq == "cluster":
        pick("num_clusters", (2, 4, 8))
    if axes == "c":
        ex = pick("excite_c", ("conv2d", "multiscale"))
    elif axes == "h+w":
        ex = pick("excite_hpw", ("axial", "mlp", "conv1d"))
    elif concat:
        ex = pick("excite_cat", ("mlp", "cfc"))
    else:
        ex = pick("excite_hw", ("mlp", "conv1d", "attention", "multiscale"))
    if ex == "mlp":
        pick("reduction", (4, 8, 16))
    elif ex == "axial":
        pick("reduction_ax", (8, 16, 32))
    elif ex == "conv1d":
        pick("kernel_size", ("adaptive", 3, 5, 7))
    elif ex == "multiscale":
        pick("ms_fuse", ("sum", "max"))
    elif ex == "conv2d":
        pick("kernel_2d", (3, 7))
    rw = pick("reweight", ("multiply", "residual"))
    if axes == "c":
        pick("gate_c_mul" if rw == "multiply" else "gate_c_res",
             ("sigmoid", "hard_sigmoid") if rw == "multiply" else ("sigmoid", "hard_sigmoid", "tanh"))
    else:
        pick("gate_mul" if rw == "multiply" else "gate_res",
             ("sigmoid", "hard_sigmoid", "softmax") if rw == "multiply" else ("sigmoid", "hard_sigmoid", "softmax",
                                                                               "tanh"))
    return p


def suggest(trial: Any, channels: Sequence[int] | None = None) -> dict[str, Any]:
    """A point sampled by an optuna ``trial`` (``trial.suggest_categorical`` makes every decision)."""
    return walk(trial.suggest_categorical, channels)


class _Branch(Exception):
    def __init__(self, n: int) -> None:
        self.n = n


def all_points(channels: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Every point of the space (1,366 at widths divisible by 16), in a fixed order: the exhaustive walk."""
    out: list[dict[str, Any]] = []

    def visit(prefix: list[int]) -> None:
        it: Iterator[int] = iter(prefix)

        def choose(name: str, choices: Sequence[Any]) -> Any:
            i = next(it, None)
            if i is None:
                raise _Branch(len(choices))
            return choices[i]

        try:
            out.append(walk(choose, channels))
        except _Branch as b:
            for i in range(b.n):
                visit([*prefix, i])

    visit([])
    return out


def _check_point(params: Mapping[str, Any], channels: Sequence[int] | None = None) -> None:
    """Raise ValueError unless ``params`` is a point :func:`walk` can produce."""
    if not isinstance(params, Mapping):
        raise TypeError(f"to_spec: params must be a mapping of decisions, got {type(params).__name__}")
    unused = set(params)

    def replay(name: str, choices: Sequence[Any]) -> Any:
        if name not in params:
            raise ValueError(f"to_spec: params lack the decision {name!r} (choices {tuple(choices)})")
        if params[name] not in choices:
            raise ValueError(f"to_spec: {name}={params[name]!r} is not one of {tuple(choices)}")
        unused.discard(name)
        return params[name]

    walk(replay, channels)
    if unused:
        raise ValueError(f"to_spec: decisions {sorted(unused)} do not apply to this point")


def to_spec(params: Mapping[str, Any], channels: Sequence[int] | None = None) -> dict[str, Any]:
    """The :func:`plugattn.compose` keywords (JSON-able) of a point; raises ValueError for a non-point.

    ``channels``: as in :func:`walk` (a point valid for other widths only is rejected).

    Examples:
        >>> to_spec({"squeeze": "avg", "axes": "hw", "excite_hw": "conv1d", "kernel_size": "adaptive",
        ...          "reweight": "multiply", "gate_mul": "sigmoid"})
        {'squeeze': 'avg', 'excite': 'conv1d', 'gate': 'sigmoid', 'reweight': 'multiply'}
    """
    _check_point(params, channels)
    p = dict(params)
    sq = p["squeeze"]
    axes = p.get("axes", p.get("axes_gem", "c" if sq == "linear" else "hw"))
    spec: dict[str, Any] = {"squeeze": sq}
    if sq in _STATS or sq == "gem":
        if axes != "hw":
            spec["axes"] = axes
        if "+" in sq:
            spec["merge"] = {"hw": p.get("merge"), "h+w": "mean", "c": "concat"}[axes]
        if axes == "c" and sq == "avg+max":
            spec["squeeze"] = "max+avg"  # CBAM's order of the two maps
    if sq == "cluster":
        spec["squeeze_kw"] = {"num_clusters": p["num_clusters"]}
    ex = next(p[k] for k in ("excite_hw", "excite_cat", "excite_hpw", "excite_c") if k in p)
    spec["excite"] = ex
    kw: dict[str, Any] = {}
    if ex == "mlp":
        kw["rd_ratio"] = 1 / p["reduction"]
    elif ex == "axial":
        kw["rd_ratio"] = 1 / p["reduction_ax"]
    elif ex == "conv1d" and p["kernel_size"] != "adaptive":
        kw["kernel_size"] = p["kernel_size"]
    elif ex == "multiscale":
        kw["fuse"] = p["ms_fuse"]
    elif ex == "conv2d":
        kw.update(kernel_size=p["kernel_2d"], bias=False, norm_layer="batchnorm")
    if ex == "mlp" and kw["rd_ratio"] == 1 / 16:
        kw = {}  # compose's default
    if ex == "axial" and kw["rd_ratio"] == 1 / 32:
        kw = {}
    if kw:
        spec["excite_kw"] = kw
    spec["gate"] = next(p[k] for k in ("gate_mul", "gate_res", "gate_c_mul", "gate_c_res") if k in p)
    spec["reweight"] = p["reweight"]
    return spec


def compose_call(spec: Mapping[str, Any], channels: str | int = "channels") -> str:
    """The exact ``plugattn.compose(...)`` call of a spec, as Python source.

    Examples:
        >>> compose_call({"squeeze": "avg", "excite": "conv1d", "excite_kw": {"kernel_size": 5}})
        "plugattn.compose(channels, squeeze='avg', excite='conv1d', excite_kw={'kernel_size': 5})"
    """
    return "plugattn.compose(" + ", ".join([str(channels), *(f"{k}={v!r}" for k, v in spec.items())]) + ")"


def point_key(params: Mapping[str, Any]) -> str:
    """A short stable key of a point (decision=value pairs, sorted), e.g. for file names and de-duplication."""
    return ",".join(f"{k}={params[k]}" for k in sorted(params))


def _pt(squeeze: str, excite: tuple[str, str], *extra: tuple[str, Any], gate: str = "sigmoid",
        axes: str | None = "hw") -> dict[str, Any]:
    p: dict[str, Any] = {"squeeze": squeeze}
    if axes is not None:
        p["axes"] = axes
    p.update(extra)
    p[excite[0]] = excite[1]
    p["reweight"] = "multiply"
    p["gate_c_mul" if axes == "c" else "gate_mul"] = gate
    return p


def _normalised(points: dict[str, tuple[dict[str, Any], str]]) -> dict[str, tuple[dict[str, Any], str]]:
    """The points in the walk's decision order (and checked to be points)."""
    def replay(p: dict[str, Any]) -> dict[str, Any]:
        return walk(lambda name, choices: p[name])

    return {k: (replay(p), note) for k, (p, note) in points.items()}


PRESET_POINTS: dict[str, tuple[dict[str, Any], str]] = _normalised({
    "se": (_pt("avg", ("excite_hw", "mlp"), ("reduction", 16)), "exact"),
    "eca": (_pt("avg", ("excite_hw", "conv1d"), ("kernel_size", "adaptive")), "exact"),
    "cbam_channel": (_pt("avg+max", ("excite_hw", "mlp"), ("merge", "shared"), ("reduction", 16)), "exact"),
    "coord": (_pt("avg", ("excite_hpw", "axial"), ("reduction_ax", 32), axes="h+w"), "exact"),
    "srm": (_pt("avg+std", ("excite_cat", "cfc"), ("merge", "concat")), "exact"),
    "cluster_se": (_pt("cluster", ("excite_hw", "mlp"), ("num_clusters", 4), ("reduction", 16), axes=None), "exact"),
    "eca_ms": (_pt("avg", ("excite_hw", "multiscale"), ("ms_fuse", "max")), "exact"),
    "cbam_spatial": (_pt("avg+max", ("excite_c", "conv2d"), ("kernel_2d", 7), axes="c"),
                     "nearest: BatchNorm momentum 0.1 (CBAM: 0.01)"),
    "fca": (_pt("dct", ("excite_hw", "mlp"), ("reduction", 16), axes=None), "nearest: the MLP has biases"),
    "gc": (_pt("attn", ("excite_hw", "mlp"), ("reduction", 16), axes=None),
           "nearest: GCNet's fuse_scale form, without the LayerNorm in the MLP"),
})
"""Named module → (its point, how exact). The exact ones equal ``preset(name, C)`` weight for weight."""


EXACT_PRESETS = tuple(k for k, (_, note) in PRESET_POINTS.items() if note == "exact")
