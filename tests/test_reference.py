"""Every registered module equals its plain reference formulation (benchmarks/reference.py).

The references are written from the papers and the official code's structure (explicit attention matrices,
permute-based Triplet, adaptive pooling) and read the module's weights; the fast paths of plugattn must
compute the same function, values and input gradients, in float64 to 1e-10. A registered module without a
reference fails here: add one to benchmarks/reference.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import plugattn
from helpers import TOL, as_tuple, rand, randomize_

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reference as ref  # noqa: E402  (benchmarks/ is not a package)

NAMES = plugattn.list_modules()
CHANNELS = 32
# (N, H, W): odd, non-square, square (BAM's official pooling is exact for square maps), tiny. Not 1×1: the
# official SGE, SimAM and SRM divide by H·W − 1 there (NaN), where plugattn deliberately differs.
SIZES = [(2, 7, 5), (1, 13, 17), (3, 6, 6), (2, 2, 3)]
F64 = torch.float64
# Known float64 deviations that are not the module's math (atol, rtol), each measured and explained:
# - fca: the fixed DCT filter buffer is built in float64 but stored in the default dtype (float32) at
#   construction, so after ``.double()`` it carries float32 round-off (~2e-8 in the output).
FWD_TOL = {"fca": (1e-7, 1e-6)}
# - hard-sigmoid gates (ese, sea_attention, sea_block): PyTorch's float64 Hardsigmoid backward multiplies by
#   the float32 constant 1/6 (0.16666667163...), a relative error of 3e-8 in those gradients.
GRAD_TOL = {"ese": (1e-7, 1e-6), "sea_attention": (1e-7, 1e-6), "sea_block": (1e-7, 1e-6), "fca": (1e-7, 1e-6)}


def build(name: str, channels: int = CHANNELS, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize_(plugattn.create(name, channels, **kwargs), seed).to(F64).eval()


def assert_same(got, want, name: str = "") -> None:
    got, want = as_tuple(got), as_tuple(want)
    assert len(got) == len(want)
    atol, rtol = FWD_TOL.get(name, TOL[F64])
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def test_every_registered_module_has_a_reference():
    missing = [n for n in NAMES if not ref.has_reference(n)]
    assert not missing, f"add a reference to benchmarks/reference.py for: {missing}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_module_equals_reference(name, size):
    n, h, w = size
    m = build(name)
    x = rand(n, CHANNELS, h, w, seed=1, dtype=F64)
    with torch.no_grad():
        want = ref.reference(name, m, x)
        assert_same(m(x), want, name)
        assert_same(m(x.to(memory_format=torch.channels_last)), want, name)


@pytest.mark.parametrize("name", NAMES)
def test_module_equals_reference_other_width(name):
    m = build(name, 64, seed=3)
    x = rand(2, 64, 9, 8, seed=4, dtype=F64)
    with torch.no_grad():
        assert_same(m(x), ref.reference(name, m, x), name)


def _blocked(m: torch.nn.Module) -> int:
    """Force several query blocks in every blockwise attention inside ``m``; returns how many were set."""
    count = 0
    for sub in m.modules():
        if hasattr(sub, "query_block") and hasattr(sub, "block_budget"):
            sub.query_block = 5
            count += 1
    return count


@pytest.mark.parametrize("name", [n for n in NAMES if _blocked(plugattn.create(n, CHANNELS))])
def test_blockwise_attention_equals_reference(name):
    m = build(name)
    assert _blocked(m)
    x = rand(2, CHANNELS, 7, 9, seed=5, dtype=F64)
    with torch.no_grad():
        want = ref.reference(name, m, x)
        assert_same(m(x), want, name)
        assert_same(m(x.to(memory_format=torch.channels_last)), want, name)


@pytest.mark.parametrize("name", NAMES)
def test_input_gradient_equals_reference(name):
    """The fast paths' custom backward passes (fused pools, reweighting) give the reference's gradients."""
    m = build(name, seed=6)
    x = rand(2, CHANNELS, 6, 7, seed=7, dtype=F64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = as_tuple(m(xa)), as_tuple(ref.reference(name, m, xb))
    seeds = [rand(*t.shape, seed=8 + i, dtype=F64) for i, t in enumerate(ya)]
    grads_a = torch.autograd.grad(sum((t * s).sum() for t, s in zip(ya, seeds)), [xa, *m.parameters()],
                                  allow_unused=True)
    grads_b = torch.autograd.grad(sum((t * s).sum() for t, s in zip(yb, seeds)), [xb, *m.parameters()],
                                  allow_unused=True)
    atol, rtol = GRAD_TOL.get(name, TOL[F64])
    for (pname, _), ga, gb in zip([("input", None), *m.named_parameters()], grads_a, grads_b):
        if ga is None and gb is None:
            continue
        assert ga is not None and gb is not None, pname
        torch.testing.assert_close(ga, gb, atol=atol, rtol=rtol, msg=lambda s, p=pname: f"{p}: {s}")


def test_reference_raises_for_unknown_name():
    with pytest.raises(KeyError, match="no reference"):
        ref.reference("no_such_module", torch.nn.Identity(), torch.zeros(1))


def test_reference_module_wraps_the_reference():
    m = build("danet_pam")
    x = rand(2, CHANNELS, 5, 4, seed=9, dtype=F64)
    with torch.no_grad():
        assert torch.equal(ref.ReferenceModule("danet_pam", m)(x), ref.reference("danet_pam", m, x))
    assert isinstance(ref.build_reference("se", 16), ref.ReferenceModule)


# ---------------------------------------------------------------------------------------------------------------
# the benchmark scripts themselves (no timings here: only that they run and compare like with like)

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_script_exits_cleanly_without_cuda():
    import os
    import subprocess

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "gpu.py")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA device is available" in proc.stdout


def test_gpu_check_runs_on_cpu_and_flags_errors():
    import gpu  # benchmarks/gpu.py

    row = gpu.check_module("danet_pam", "cpu", dtypes=(torch.float32, torch.bfloat16), shapes=[(2, 16, 5, 4)])
    assert row["status"] == "PASS", row["problems"]
    assert row["errors"]["float32"] < 1e-5 and row["errors"]["float32_vs_cpu32"] == 0.0
    assert 0 < row["errors"]["bfloat16"] < gpu.TOLERANCE[torch.bfloat16]
    # a module whose low-precision path is worse than the official formula's is flagged
    original = plugattn.get("se").forward

    def bad_forward(self, x):
        y = original(self, x)
        return y + 0.1 * y.abs().max() if y.dtype == torch.bfloat16 else y

    try:
        plugattn.get("se").forward = bad_forward
        row = gpu.check_module("se", "cpu", dtypes=(torch.float32, torch.bfloat16), shapes=[(2, 16, 5, 4)])
    finally:
        plugattn.get("se").forward = original
    assert row["status"] == "FAIL" and any("bfloat16" in p for p in row["problems"])


def test_targets_compare_like_with_like():
    """benchmarks/targets.py times plugattn against timm modules built with the same configuration and weights."""
    pytest.importorskip("timm")
    import targets  # benchmarks/targets.py

    x = rand(2, 64, 9, 7, seed=11)
    for name, (ours, theirs, _) in targets._timm_pairs(64).items():
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5, msg=lambda s, n=name: f"{n}: {s}")
