"""Test helpers shared by the suite: seeded random modules and inputs, tolerance table."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn as nn
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import plugattn

# Tolerances by dtype (atol, rtol) for comparing two formulations of the same math.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (5e-2, 5e-2),
    torch.float16: (5e-3, 5e-3),
}


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Give every parameter and BatchNorm buffer random values, so that no part is an identity.

    Zero-initialised scales (DANet's gamma, SeaFormer's proj BN) would otherwise hide whole branches.
    Weight tensors (≥ 2-D) get std ``1/sqrt(fan_in)`` so that deep stacks keep activations O(1);
    vectors (biases, scales) get std ``scale``.
    """
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        std = scale if p.dim() < 2 else 1.0 / max(1, p[0].numel()) ** 0.5
        p.copy_(std * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.running_mean is not None:
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            if m.weight is not None:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
    return module


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """Seeded standard-normal tensor, drawn on CPU."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def assert_matches_reference(module: nn.Module, reference, shapes, channels: int, *, dtype: torch.dtype = torch.float64,
                             tol: tuple[float, float] | None = None, grad_tol: tuple[float, float] | None = None,
                             layouts: bool = True, grad: bool = True, layout_1x1: bool = False,
                             seeds=lambda i, shape: (i, 50 + i), make_x=None) -> None:
    """``module(x)`` and its input gradient equal ``reference(x)``'s, for every ``(n, h, w)`` in ``shapes``.

    For each shape: x = ``make_x((n, channels, h, w), seed)`` (default ``rand``) and an output gradient g (drawn
    with ``rand`` in the reference output's shape), with ``(x seed, g seed) = seeds(i, (n, h, w))``. The module
    runs on x in contiguous and (``layouts``) channels_last layout; each output and (``grad``) input gradient must
    equal the reference's within ``tol`` / ``grad_tol`` (default ``TOL[dtype]``), and the output must be
    channels_last exactly when x is, unless it has a single channel or a single position (``layout_1x1``: checked
    there too). The output under ``torch.no_grad`` is checked as well.
    """
    atol, rtol = tol or TOL[dtype]
    grad_atol, grad_rtol = grad_tol or TOL[dtype]
    for i, (n, h, w) in enumerate(shapes):
        x_seed, g_seed = seeds(i, (n, h, w))
        x = make_x((n, channels, h, w), x_seed) if make_x else rand(n, channels, h, w, seed=x_seed, dtype=dtype)
        xr = x.clone().requires_grad_(grad)
        want = reference(xr)
        g = rand(*want.shape, seed=g_seed, dtype=dtype)
        if grad:
            want_grad, = torch.autograd.grad(want, xr, g)
        with torch.no_grad():
            torch.testing.assert_close(module(x), want.detach(), atol=atol, rtol=rtol)
        for channels_last in (False, True) if layouts else (False,):
            xin = x.to(memory_format=torch.channels_last) if channels_last else x.contiguous()
            xa = xin.clone().requires_grad_(grad)
            got = module(xa)
            torch.testing.assert_close(got, want.detach(), atol=atol, rtol=rtol)
            if grad:
                got_grad, = torch.autograd.grad(got, xa, g)
                torch.testing.assert_close(got_grad, want_grad, atol=grad_atol, rtol=grad_rtol)
            if layout_1x1 or (got.shape[1] > 1 and got.shape[2] * got.shape[3] > 1):
                assert got.is_contiguous(memory_format=torch.channels_last) == channels_last, (
                    f"shape {(n, h, w)}: channels_last input {channels_last}, output strides {got.stride()}")


def as_tuple(y) -> tuple[Tensor, ...]:
    """Module outputs as a tuple (heads return several maps)."""
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


class LargestTensor(TorchDispatchMode):
    """Records the byte size of the largest tensor any op produces inside the ``with`` block (``.largest``)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


class PeakLive(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once inside the ``with`` block (``.peak``), counted from the
    storages that ops create (each counted once, freed when Python frees it); works on the meta device."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0

    def _free(self, n):
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and not getattr(t.untyped_storage(), "_peak_live", False):
                s = t.untyped_storage()
                s._peak_live = True
                self.live += s.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(s, self._free, s.nbytes())
        return out


# Per-module constructor kwargs and channel counts (default: no kwargs, channels 16 and 32).
SETTINGS: dict[str, dict] = {
    "danet_head": {"kwargs": {"out_channels": 5}},
}


def build(name: str, channels: int | None = None, seed: int = 0) -> nn.Module:
    """Registered module ``name`` with random weights (``randomize_``), in eval mode."""
    s = SETTINGS.get(name, {})
    c = channels or s.get("channels", (16, 32))[0]
    torch.manual_seed(seed)
    return randomize_(plugattn.create(name, c, **s.get("kwargs", {})), seed).eval()


def channel_counts(name: str) -> tuple[int, ...]:
    """The channel counts the contract tests use for ``name``."""
    return SETTINGS.get(name, {}).get("channels", (16, 32))


def network_golden(path) -> dict:
    """One whole-network golden (tests/goldens/networks): the official state_dict rebuilt, input, output."""
    import importlib.util
    from pathlib import Path

    here = Path(__file__).parent / "goldens" / "networks"
    spec = importlib.util.spec_from_file_location("fill", here / "fill.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    g = torch.load(path, weights_only=True)
    sd = fill.fill_state_dict([tuple(e) for e in g["entries"]], int(g["seed"]))
    assert fill.state_dict_sha256(sd) == g["fill"]["state_dict_sha256"], "fill.py does not rebuild the state_dict"
    sd.update(g["state_overrides"] or {})
    return {"key": g["key"], "state_dict": sd, "input": (g["input"].float() - 128) / 64, "output": g["output"],
            "select": g["output_select"]}


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Official-style state_dict with random weights; BN buffers get plausible statistics (drawn in float32)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            sd[k] = (0.5 + torch.rand(shape, generator=g)).to(dtype)
        elif k.endswith("running_mean"):
            sd[k] = (0.1 * torch.randn(shape, generator=g)).to(dtype)
        else:
            sd[k] = (0.5 * torch.randn(shape, generator=g)).to(dtype)
    return sd


def onnxruntime_or_skip():
    """onnxruntime with its logging silenced; skips the test when onnx or onnxruntime is missing."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    ort.set_default_logger_severity(4)
    return ort


def param_leaves(m: nn.Module) -> dict[str, nn.Module]:
    """Leaf submodules that own parameters directly (the layers hooks, pruning and wrappers act on)."""
    return {p: s for p, s in m.named_modules()
            if p and not list(s.children()) and list(s.parameters(recurse=False))}


def interrupt_after_epoch(monkeypatch, train_module, epoch: int = 1) -> None:
    """Make ``train_module._save`` raise KeyboardInterrupt right after writing ``last.pt`` of ``epoch``."""
    real_save = train_module._save

    def save_then_die(obj, path):
        real_save(obj, path)
        if path.name == "last.pt" and obj["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save", save_then_die)
