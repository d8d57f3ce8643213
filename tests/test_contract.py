"""One contract over every registered module (STYLE.md point 14).

Per-module settings live in ``SETTINGS``; everything else is the same for every module.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn as nn

import plugattn
from helpers import SETTINGS, as_tuple, build, channel_counts, param_leaves, rand
from plugattn._layers import Gate

NAMES = plugattn.list_modules()

COMPILE_SUBSET = ["se", "cbam", "triplet", "danet_pam", "sea_attention"]


def check_output_shape(name: str, m: nn.Module, x: torch.Tensor, y) -> None:
    info = plugattn.info(name)
    for t in as_tuple(y):
        assert t.dtype == x.dtype
        if info.preserves_shape:
            assert t.shape == x.shape
        else:
            assert t.shape[0] == x.shape[0] and t.shape[2:] == x.shape[2:]


@pytest.mark.parametrize("name", NAMES)
def test_signature_contract(name):
    """``cls(channels, *, ...)``: channels positional, everything else keyword-only, device/dtype accepted."""
    cls = plugattn.get(name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert params[0].name == "channels"
    assert all(p.kind is p.KEYWORD_ONLY for p in params[1:]), name
    assert not any(p.kind is p.VAR_KEYWORD for p in params), f"{name} swallows **kwargs"
    names = {p.name for p in params}
    assert {"device", "dtype"} <= names, name
    assert cls.__doc__ and plugattn.info(name).paper and plugattn.info(name).url
    assert any(isinstance(m, Gate) for m in plugattn.create(name, 32).modules()), f"{name} has no Gate"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 5), (2, 13, 17)], ids=str)
def test_shapes_and_channels_last(name, shape):
    n, h, w = shape
    for c in channel_counts(name):
        m = build(name, c)
        x = rand(n, c, h, w, seed=1)
        x_before = x.clone()
        with torch.no_grad():
            y = m(x)
            y_cl = m(x.to(memory_format=torch.channels_last))
        assert torch.equal(x, x_before), "input modified in place"
        check_output_shape(name, m, x, y)
        for a, b in zip(as_tuple(y), as_tuple(y_cl)):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
            if a.shape[2] * a.shape[3] > 1 and a.shape[1] > 1 and plugattn.info(name).preserves_shape:
                assert b.is_contiguous(memory_format=torch.channels_last), "memory format not preserved"


@pytest.mark.parametrize("name", NAMES)
def test_non_contiguous_input(name):
    m = build(name)
    c = channel_counts(name)[0]
    x = rand(2, c, 9, 6, seed=2).transpose(2, 3)  # (2, C, 6, 9), not contiguous
    with torch.no_grad():
        for a, b in zip(as_tuple(m(x)), as_tuple(m(x.contiguous()))):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_close_to_float64(name):
    m = build(name)
    c = channel_counts(name)[0]
    x = rand(2, c, 6, 5, seed=3)
    with torch.no_grad():
        ref = as_tuple(copy.deepcopy(m).double()(x.double()))
        out = as_tuple(copy.deepcopy(m).to(torch.bfloat16)(x.to(torch.bfloat16)))
    for o, r in zip(out, ref):
        assert o.dtype == torch.bfloat16
        err = (o.double() - r).abs().max().item()
        assert err <= 0.05 * (1 + r.abs().max().item()), f"bf16 error {err}"


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    m = build(name).double()
    c = channel_counts(name)[0]
    x = rand(2, c, 3, 4, seed=4, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: as_tuple(m(t)), (x,), fast_mode=True)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_input_and_every_parameter(name):
    c = channel_counts(name)[-1]
    m = build(name, c).train()
    # per-sample channel offsets make the pooled descriptors differ, so no ReLU unit is dead for all
    x = (rand(8, c, 6, 5, seed=5) + rand(8, c, 1, 1, seed=11)).requires_grad_()
    y = as_tuple(m(x))
    sum((t * rand(*t.shape, seed=6)).sum() for t in y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    zero = []
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {pname}"
        if p.grad.abs().sum() == 0:  # a dead ReLU unit can zero one tensor legitimately
            zero.append(pname)
    assert len(zero) <= len(list(m.parameters())) // 4, f"zero gradients for {zero}"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    m = build(name, seed=7)
    fresh = build(name, seed=8)
    fresh.load_state_dict(m.state_dict())
    c = channel_counts(name)[0]
    x = rand(2, c, 5, 5, seed=9)
    with torch.no_grad():
        for a, b in zip(as_tuple(m(x)), as_tuple(fresh(x))):
            assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_clear_error(name):
    m = build(name)
    c = channel_counts(name)[0]
    cls_name = type(m).__name__
    with pytest.raises(ValueError, match=cls_name):
        m(rand(2, c + 1, 5, 5))
    with pytest.raises(ValueError, match=cls_name):
        m(rand(c, 5, 5))
    with pytest.raises(TypeError, match=cls_name):
        m(torch.ones(2, c, 5, 5, dtype=torch.int64))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [0, -3, 2.5])
def test_bad_channels_raise(name, channels):
    with pytest.raises((ValueError, TypeError), match="channels"):
        plugattn.create(name, channels, **SETTINGS.get(name, {}).get("kwargs", {}))


@pytest.mark.parametrize("name", [n for n in COMPILE_SUBSET if n in NAMES])
def test_compile_matches_eager(name):
    m = build(name)
    c = channel_counts(name)[0]
    compiled = torch.compile(m, fullgraph=True, dynamic=False)
    x = rand(2, c, 7, 9, seed=10)
    with torch.no_grad():
        for a, b in zip(as_tuple(m(x)), as_tuple(compiled(x))):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


# ---- an ordinary nn.Module: hooks, pruning, torch.fx, copies, repr ------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_forward_hooks_fire_on_every_parameter_leaf(name):
    m = build(name)
    fired: list[str] = []
    for path, leaf in param_leaves(m).items():
        leaf.register_forward_hook(lambda mod, args, out, path=path: fired.append(path))
    with torch.no_grad():
        m(rand(2, channel_counts(name)[0], 6, 5))
    assert set(fired) == set(param_leaves(m)), f"hooks not fired: {sorted(set(param_leaves(m)) - set(fired))}"


@pytest.mark.parametrize("name", NAMES)
def test_pruning_is_respected(name):
    """Prune every conv/linear, then change ``weight_orig``: the output follows the masked new weights."""
    import torch.nn.utils.prune as prune

    m = build(name)
    twin = copy.deepcopy(m)  # gets the masked weights written directly, no pruning machinery
    layers = {p: s for p, s in m.named_modules() if isinstance(s, (nn.Conv1d, nn.Conv2d, nn.Linear))}
    for layer in layers.values():
        prune.l1_unstructured(layer, "weight", amount=0.3)
    twin_layers = dict(twin.named_modules())
    with torch.no_grad():
        for i, (path, layer) in enumerate(layers.items()):
            layer.weight_orig.copy_(rand(*layer.weight_orig.shape, seed=100 + i) / layer.weight_orig[0].numel() ** 0.5)
            twin_layers[path].weight.copy_(layer.weight_orig * layer.weight_mask)
        x = rand(2, channel_counts(name)[0], 6, 5, seed=12)
        for a, b in zip(as_tuple(m(x)), as_tuple(twin(x))):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_trace_equals_eager(name):
    m = build(name)
    gm = torch.fx.symbolic_trace(m)
    c = channel_counts(name)[0]
    with torch.no_grad():
        for shape in [(2, c, 7, 5), (1, c, 1, 1)]:
            x = rand(*shape, seed=13)
            for a, b in zip(as_tuple(gm(x)), as_tuple(m(x))):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_deepcopy_and_pickle_round_trip(name):
    import pickle

    m = build(name)
    x = rand(2, channel_counts(name)[0], 5, 6, seed=14)
    with torch.no_grad():
        want = as_tuple(m(x))
        for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
            for a, b in zip(as_tuple(other(x)), want):
                assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_extra_repr_shows_channels(name):
    c = channel_counts(name)[0]
    text = build(name, c).extra_repr()
    assert f"={c}" in text and "channels" in text, f"{name}: extra_repr {text!r} does not show the channels"


# ---- dtype policy, empty batches, reduction widths ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_dtype_policy(name):
    """Input of another dtype than the parameters: a TypeError naming module.to; parameter-free: input's dtype."""
    m = build(name)
    c = channel_counts(name)[0]
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        x = rand(2, c, 5, 4, seed=15, dtype=dtype)
        if any(True for _ in m.parameters()):
            with pytest.raises(TypeError, match=rf"{type(m).__name__}.*module\.to\({dtype}\)"):
                m(x)
        elif dtype != torch.float16:  # float16 kernels are not all on CPU
            with torch.no_grad():
                assert all(t.dtype == dtype for t in as_tuple(m(x)))


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name):
    m = build(name).train()
    c = channel_counts(name)[0]
    x = rand(3, c, 6, 5, seed=16)[:0]
    with torch.no_grad():
        want = [t.shape[1:] for t in as_tuple(build(name)(rand(1, c, 6, 5, seed=16)))]
        for mode in (m.eval(), m.train()):
            ys = as_tuple(mode(x))
            assert [t.shape[1:] for t in ys] == want and all(t.shape[0] == 0 for t in ys)


@pytest.mark.parametrize("name", [n for n in NAMES if "rd_ratio" in inspect.signature(plugattn.get(n)).parameters])
def test_zero_reduction_ratio_raises(name):
    with pytest.raises(ValueError, match="rd_ratio"):
        plugattn.create(name, 32, rd_ratio=0, **SETTINGS.get(name, {}).get("kwargs", {}))
