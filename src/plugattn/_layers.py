"""Primitives shared by every module: layer lookup, width rounding, input checks, the gate and conv-norm-act."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Union

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LayerType", "factory_kwargs", "get_layer", "make_divisible", "reduced_width", "largest_divisor", "eca_kernel_size",
    "check_input", "check_positive", "check_optional_positive", "check_odd_kernel", "Gate", "ConvNormAct",
    "LayerNorm2d", "bn_momentum", "ZPoolGate", "FREQ_METHODS", "freq_indices", "dct_filters", "adaptive_avg_pool2d",
    "pool_bins",
]

LayerType = Union[str, type[nn.Module], Callable[..., nn.Module], None]
"""A sub-layer given by name (``"relu"``, ``"hard_sigmoid"``, ``"BatchNorm2d"``), class, factory or ``None``."""


class _Softmax(nn.Softmax):
    """Softmax over dim 1 by default (the branch or channel axis of an (N, C, ...) tensor)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__(dim=dim)


# One table, names normalised by lower-casing and dropping "_" and "-" (so "hard_sigmoid" == "hardsigmoid").
_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leakyrelu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "hardswish": nn.Hardswish,
    "hswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
    "hardsigmoid": nn.Hardsigmoid,
    "hsigmoid": nn.Hardsigmoid,
    "tanh": nn.Tanh,
    "softmax": _Softmax,
    "batchnorm": nn.BatchNorm2d,
    "batchnorm2d": nn.BatchNorm2d,
    "syncbatchnorm": nn.BatchNorm2d,  # equal to BatchNorm2d in eval and on one process
    "bn": nn.BatchNorm2d,
    "groupnorm": nn.GroupNorm,
    "layernorm": nn.LayerNorm,
    "instancenorm2d": nn.InstanceNorm2d,
}


def factory_kwargs(device: torch.device | str | None, dtype: torch.dtype | None) -> dict[str, Any]:
    """``{"device": device, "dtype": dtype}``, the keyword arguments every layer constructor takes."""
    return {"device": device, "dtype": dtype}


def get_layer(spec: LayerType, *args: Any, arg_name: str = "layer", **kwargs: Any) -> nn.Module:
    """Build a sub-layer from a name, a class or a factory; ``None`` gives ``nn.Identity``.

    Positional and keyword arguments go to the constructor (a norm layer's channel count, say).
    A string that names no known layer raises ``ValueError`` naming ``arg_name``.
    """
    if spec is None:
        return nn.Identity()
    if isinstance(spec, str):
        key = spec.lower().replace("_", "").replace("-", "")
        if key not in _LAYERS:
            raise ValueError(f"{arg_name}={spec!r} is not a known layer; expected one of {sorted(_LAYERS)}")
        spec = _LAYERS[key]
    if isinstance(spec, nn.Module):
        raise TypeError(f"{arg_name} must be a layer class or factory, not a module instance ({spec!r})")
    if not callable(spec):
        raise TypeError(f"{arg_name} must be a string, a layer class or a factory, got {type(spec).__name__}")
    return spec(*args, **kwargs)


def make_divisible(v: float, divisor: int | None = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round a width ``v`` to a multiple of ``divisor`` (timm's rule); ``divisor=None`` floors ``v`` instead.

    With a divisor: nearest multiple, at least ``min_value`` (default ``divisor``), and bumped one step up
    when rounding would lose more than ``1 - round_limit`` of ``v``. Without: ``floor(v)`` (SE, CBAM papers).
    """
    if divisor is None:
        return int(math.floor(v + 1e-9))
    min_value = min_value if min_value is not None else divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def check_positive(owner: str, **values: int) -> None:
    """Constructor check: each named value is an int ≥ 1, else ``ValueError`` naming it."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{owner}: {name} must be a positive int, got {v!r}")


def check_optional_positive(owner: str, **values: int | None) -> None:
    """Constructor check: each named value is ``None`` or an int ≥ 1, else ``ValueError`` naming it."""
    check_positive(owner, **{name: v for name, v in values.items() if v is not None})


def reduced_width(
    owner: str,
    channels: int,
    rd_ratio: float,
    rd_channels: int | None = None,
    rd_divisor: int | None = None,
    *,
    min_channels: int = 1,
    round_limit: float = 0.0,
) -> int:
    """The hidden width C' of a bottleneck: ``rd_channels`` if given, else C·``rd_ratio`` rounded.

    Rounding is :func:`make_divisible` (``rd_divisor=None`` floors, as the SE and CBAM papers do), at least
    ``min_channels``. ``rd_ratio`` must be > 0 and ``rd_channels`` a positive int, else ``ValueError`` naming them.
    """
    if rd_channels is not None:
        check_positive(owner, rd_channels=rd_channels)
        return rd_channels
    if isinstance(rd_ratio, bool) or not isinstance(rd_ratio, (int, float)) or not rd_ratio > 0:
        raise ValueError(f"{owner}: rd_ratio must be a number > 0, got {rd_ratio!r}")
    return max(min_channels, make_divisible(channels * rd_ratio, rd_divisor, round_limit=round_limit))


def largest_divisor(n: int, at_most: int) -> int:
    """The largest g ≤ ``at_most`` that divides ``n`` (at least 1): a group count that fits any width.

    Examples:
        >>> largest_divisor(96, 64), largest_divisor(440, 32), largest_divisor(7, 4)
        (48, 22, 1)
    """
    return next(g for g in range(max(1, min(n, at_most)), 0, -1) if n % g == 0)


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA's adaptive kernel size ψ(C) = |log₂(C)/γ + b/γ|_odd (the integer part, bumped to the next odd)."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


def check_odd_kernel(owner: str, kernel_size: int) -> None:
    """Constructor check: ``kernel_size`` is a positive odd int, else ``ValueError`` naming the owner."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{owner}: kernel_size must be a positive odd int, got {kernel_size!r}")


def check_input(owner: nn.Module, x: Any, channels: int | None) -> None:
    """Forward check: ``x`` is a floating (N, C, H, W) tensor with ``channels`` channels (``None``: any).

    Dtype policy (every module): ``x`` must have the dtype of the module's parameters (``module.to(dtype)``
    converts the module), except under ``torch.autocast``, which casts inside the ops; parameter-free modules
    take any floating dtype. The output has ``x``'s dtype.

    Raises ``TypeError``/``ValueError`` naming the module, the argument and what was expected. Only static
    properties are read (rank, dtype, channel dim), so the check is free under compile and export; under
    ``torch.fx`` symbolic tracing (a ``Proxy`` input) it is skipped.
    """
    if isinstance(x, torch.fx.Proxy):  # symbolic tracing: nothing static to read
        return
    name = type(owner).__name__
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected input x to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected input x of shape (N, C, H, W), got a {x.dim()}-D tensor {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point input x, got dtype {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected input x with {channels} channels (dim 1), got {x.shape[1]}")
    p = next(owner.parameters(), None)
    if p is not None and p.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name}: input x has dtype {x.dtype} but the module's parameters are {p.dtype}; "
                        f"convert the module with module.to({x.dtype}) (or the input with x.to({p.dtype}))")


class Gate(nn.Module):
    """Turns attention logits into weights; every module applies its weights through one of these.

    It is the single hook point for :func:`plugattn.capture`: its output is the attention map.

    Args:
        gate_layer: the activation (``"sigmoid"``, ``"hard_sigmoid"``, ``"softmax"``, a class or factory).
    """

    def __init__(self, gate_layer: LayerType = "sigmoid", **kwargs: Any) -> None:
        super().__init__()
        self.fn = get_layer(gate_layer, arg_name="gate_layer", **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class ConvNormAct(nn.Sequential):
    """``conv`` → ``bn`` (optional) → ``act`` (optional): the conv block every family uses.

    Children are named ``conv``, ``bn`` and ``act`` and absent when not used, so state_dict keys are
    ``conv.weight``, ``conv.bias`` (if ``bias``), ``bn.*``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm_layer: LayerType = nn.BatchNorm2d,
        act_layer: LayerType = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=bias,
            device=device, dtype=dtype,
        )
        if norm_layer is not None:
            self.bn = get_layer(norm_layer, out_channels, arg_name="norm_layer", device=device, dtype=dtype)
        if act_layer is not None:
            self.act = get_layer(act_layer, arg_name="act_layer")


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of an (N, C, H, W) tensor (each position normalised on its own).

    On the (N, C, 1, 1) context of GCNet it equals the official ``nn.LayerNorm([C, 1, 1])``; the weight
    has shape (C,) instead of (C, 1, 1) (``from_official`` reshapes).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, *, device=None, dtype=None) -> None:
        super().__init__(num_channels, eps=eps, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)  # (N, H, W, C)
        return y.permute(0, 3, 1, 2)  # (N, C, H, W)


# ---- Z-pool gate (CBAM spatial gate, Triplet branches) -------------------------------------------------------

# Per pooled axis, the permutation of the keepdim Z-pool (N, C|2, H|2, W|2) that puts the [max; mean] pair on
# dim 1 and the conv plane in the official orientation; each is its own inverse, so it also rotates the weights back.
_ZPOOL_PERMS = {1: (0, 1, 2, 3), 2: (0, 2, 1, 3), 3: (0, 3, 2, 1)}
_ZPOOL_NORM = partial(nn.BatchNorm2d, momentum=0.01)  # official BasicConv: BatchNorm2d(eps 1e-5, momentum 0.01)


class ZPoolGate(nn.Module):
    r"""Z-pool over one axis of x, a k×k conv, BN and a gate: attention weights that broadcast against x.

    :math:`w = \sigma(\mathrm{BN}(\mathrm{conv}_{k\times k}([\max_d x;\ \mathrm{mean}_d x])))`. The Z-pool puts
    the **max first** (official CBAM ``ChannelPool`` and Triplet ``ZPool``); the conv is 2 → 1 with padding k // 2
    and no bias, followed by BN (eps 1e-5, momentum 0.01) and no activation.

    ============  ==========  ============================  ==================  ==========================
    ``dim``       pools over  conv plane (rows, cols)       gate output         returned (broadcastable)
    ============  ==========  ============================  ==================  ==========================
    1             C           (H, W)                        (N, 1, H, W)        (N, 1, H, W)
    2             H           (C, W)                        (N, 1, C, W)        (N, C, 1, W)
    3             W           (H, C)                        (N, 1, H, C)        (N, C, H, 1)
    ============  ==========  ============================  ==================  ==========================

    ``dim=1`` is CBAM's spatial gate and Triplet's ``hw`` branch; ``dim=2`` and ``dim=3`` are Triplet's ``cw``
    and ``hc`` branches, which officially rotate x by ``permute(0, 2, 1, 3)`` and ``permute(0, 3, 2, 1)`` and
    pool over dim 1. Here x is pooled along ``dim`` first and only the small pooled map is rotated (the same
    numbers); the weights are rotated back to broadcast against x.

    Args:
        dim: the axis of (N, C, H, W) to pool over: 1, 2 or 3. Default: 1.
        kernel_size: k (odd). Default: 7.
        norm_layer: the norm after the conv; ``None`` drops it. Default: BatchNorm2d with momentum 0.01.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → weights as in the table above.

    Examples:
        >>> g = ZPoolGate(dim=3)
        >>> g(torch.randn(2, 16, 7, 5)).shape
        torch.Size([2, 16, 7, 1])
    """

    def __init__(
        self,
        *,
        dim: int = 1,
        kernel_size: int = 7,
        norm_layer: LayerType = _ZPOOL_NORM,
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or dim not in _ZPOOL_PERMS:
            raise ValueError(f"{type(self).__name__}: dim must be 1 (C), 2 (H) or 3 (W), got {dim!r}")
        check_odd_kernel(type(self).__name__, kernel_size)
        self.dim = dim
        self.kernel_size = kernel_size
        self.perm = _ZPOOL_PERMS[dim]
        self.conv = ConvNormAct(2, 1, kernel_size, bias=False, norm_layer=norm_layer, device=device, dtype=dtype)
        self.gate = Gate(gate_layer)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel_size={self.kernel_size}"

    def forward(self, x: Tensor) -> Tensor:
        d = self.dim
        z = torch.cat((x.amax(d, keepdim=True), x.mean(d, keepdim=True)), dim=d)  # Z-pool: [max; mean] along d
        z = z.permute(self.perm)  # (N, 2, P, Q): the pair as channels, the (P, Q) plane as in the table
        return self.gate(self.conv(z)).permute(self.perm)  # (N, 1, P, Q) rotated back to broadcast against x



# ---- FcaNet DCT filters ----------------------------------------------------------------------------------------

# Frequency (u, v) indices in a 7×7 DCT space, ranked in the paper's single-frequency ablation (official
# ``get_freq_indices``): "top" best first, "low" by increasing frequency, "bot" worst first.
_FREQ_TABLES = {
    "top": ([0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1],
            [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3]),
    "low": ([0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4],
            [0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3]),
    "bot": ([6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6],
            [6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3]),
}
FREQ_METHODS = tuple(f"{kind}{n}" for kind in ("top", "low", "bot") for n in (1, 2, 4, 8, 16, 32))


def freq_indices(freq_sel_method: str = "top16") -> tuple[list[int], list[int]]:
    """The (u, v) frequency indices in the 7×7 space for ``"top16"``, ``"low4"``, ``"bot32"``, ..."""
    if freq_sel_method not in FREQ_METHODS:
        raise ValueError(f"freq_sel_method must be one of {list(FREQ_METHODS)}, got {freq_sel_method!r}")
    n = int(freq_sel_method[3:])
    xs, ys = _FREQ_TABLES[freq_sel_method[:3]]
    return xs[:n], ys[:n]


def _basis(pos: int, freq: int, size: int) -> float:
    """Orthonormal DCT-II basis value B(pos; freq) = cos(π·freq·(pos + ½)/size)/√size, ×√2 for freq > 0."""
    v = math.cos(math.pi * freq * (pos + 0.5) / size) / math.sqrt(size)
    return v if freq == 0 else v * math.sqrt(2)


def dct_filters(channels: int, dct_h: int, dct_w: int, freq_sel_method: str = "top16") -> Tensor:
    """The fixed (C, dct_h, dct_w) float64 DCT filter bank: channel group i gets frequency i of the method.

    Frequencies are given in a 7×7 space and scaled by ``dct_h // 7`` and ``dct_w // 7`` (official rule,
    so (1, 1) in 7×7 becomes (2, 2) in 14×14). C must be divisible by the number of frequencies.
    """
    us, vs = freq_indices(freq_sel_method)
    if channels % len(us):
        raise ValueError(f"dct_filters: channels ({channels}) must be divisible by the number of frequencies "
                         f"({len(us)} for {freq_sel_method!r})")
    part = channels // len(us)
    bank = torch.empty(len(us), dct_h, dct_w, dtype=torch.float64)
    for i, (u, v) in enumerate(zip(us, vs)):
        u, v = u * (dct_h // 7), v * (dct_w // 7)
        for th in range(dct_h):
            for tw in range(dct_w):
                bank[i, th, tw] = _basis(th, u, dct_h) * _basis(tw, v, dct_w)
    return bank.repeat_interleave(part, dim=0)  # (C, dct_h, dct_w)


def bn_momentum(momentum: float) -> Callable[..., nn.Module]:
    """A BatchNorm2d factory with the given momentum (CBAM and Triplet use 0.01)."""
    return partial(nn.BatchNorm2d, momentum=momentum)


def pool_bins(size: int, out: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Bins of adaptive pooling along one axis: the (out, size) 0/1 membership matrix and the (out,) bin lengths.

    Bin i covers [floor(i·size/out), ceil((i + 1)·size/out)), as in ``F.adaptive_avg_pool2d``; ``size`` may be
    symbolic (it is only used in tensor ops), so the bins follow the input size in an exported graph.
    """
    i = torch.arange(out, device=like.device)  # (out,)
    start = torch.div(i * size, out, rounding_mode="floor")
    end = torch.div((i + 1) * size + (out - 1), out, rounding_mode="floor")
    j = torch.arange(size, device=like.device)  # (size,)
    member = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])  # (out, size)
    return member.to(like.dtype), (end - start).to(like.dtype)


def _adaptive_avg_pool2d_bins(x: Tensor, out_h: int | None, out_w: int | None) -> Tensor:
    """Adaptive average pooling as ``(M_h @ x @ M_wᵀ) / (len_h ⊗ len_w)`` with 0/1 bin matrices from ``x.shape``.

    Sums each bin, then divides by its element count, as the native kernel does; float16/bfloat16 are
    summed in float32. ``None`` keeps that axis. Non-finite values spread along their row/column (0·inf).
    """
    y = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    h, w = x.shape[-2], x.shape[-1]
    count = None
    if out_h is not None:
        m_h, len_h = pool_bins(h, out_h, y)
        y = torch.matmul(m_h, y)  # (..., out_h, W): bin sums over H
        count = len_h[:, None]  # (out_h, 1)
    if out_w is not None:
        m_w, len_w = pool_bins(w, out_w, y)
        y = torch.matmul(y, m_w.transpose(0, 1))  # (..., out_h, out_w): bin sums over W
        count = len_w[None, :] if count is None else count * len_w[None, :]  # (out_h, out_w)
    if count is not None:
        y = y / count
    return y.to(x.dtype)


def adaptive_avg_pool2d(x: Tensor, output_size: int | tuple[int | None, int | None]) -> Tensor:
    """``F.adaptive_avg_pool2d`` that exports with dynamic input sizes (ONNX, ``torch.export``).

    The exporters decompose the native op with indices computed for the example size when the output size
    does not divide the input (onnxruntime then reads out of bounds at other sizes). Under
    ``torch.onnx.export`` / ``torch.export`` this function pools with two bin matrices built from ``x.shape``
    at call time instead: bin i along an axis of length L averages [floor(i·L/out), ceil((i + 1)·L/out)),
    exactly the native bins for every L (L < out repeats values; L = 1 broadcasts), equal to the native op
    to float round-off (~1e-7 in float32), gradients included. Eager mode and ``torch.compile`` call the
    native op: as fast on contiguous input, 3-6× faster in forward on channels_last input (CPU).

    Args:
        x: (N, C, H, W) or (C, H, W).
        output_size: (out_h, out_w), or one int for both; ``None`` keeps that axis's size.

    Returns:
        (N, C, out_h, out_w) or (C, out_h, out_w), in ``x``'s dtype.

    Examples:
        >>> x = torch.randn(2, 3, 13, 5)
        >>> torch.equal(adaptive_avg_pool2d(x, (7, 7)), F.adaptive_avg_pool2d(x, (7, 7)))
        True
    """
    if isinstance(output_size, int):
        sizes: tuple = (output_size, output_size)
    else:
        sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else ()
    if len(sizes) != 2 or isinstance(output_size, bool) or any(
        s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1) for s in sizes
    ):
        raise ValueError(f"adaptive_avg_pool2d: output_size must be a positive int or a pair of positive ints "
                         f"(or None), got {output_size!r}")
    if isinstance(x, torch.fx.Proxy):  # symbolic tracing: record the native op
        return F.adaptive_avg_pool2d(x, sizes)
    if not isinstance(x, Tensor):
        raise TypeError(f"adaptive_avg_pool2d: expected input x to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(f"adaptive_avg_pool2d: expected input x of shape (N, C, H, W) or (C, H, W), "
                         f"got a {x.dim()}-D tensor")
    if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
        return _adaptive_avg_pool2d_bins(x, sizes[0], sizes[1])
    return F.adaptive_avg_pool2d(x, sizes)
