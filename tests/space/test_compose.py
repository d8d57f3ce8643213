"""``compose`` and ComposedAttention (plugattn/space/compose.py): the module contract over many compositions."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx
import torch.nn as nn

import plugattn
from helpers import rand, randomize_
from plugattn._layers import Gate
from plugattn.space import MLP, ComposedAttention, Multiply, Pool, compose

C = 32
SHAPES = [(2, 7, 5), (1, 1, 1), (3, 13, 17), (2, 4, 4)]


def _x(n=2, c=C, h=7, w=5, seed=0, dtype=torch.float32):
    return rand(n, c, h, w, seed=seed, dtype=dtype) + rand(n, c, 1, 1, seed=seed + 100, dtype=dtype)


COMPOSE_CASES = [
    dict(squeeze="avg", excite="mlp"),
    dict(squeeze="avg+max", excite="mlp"),
    dict(squeeze="avg+max", excite="mlp", merge="concat"),
    dict(squeeze="avg+std", excite="cfc", merge="concat"),
    dict(squeeze="std", excite="conv1d"),
    dict(squeeze="gem", excite="conv1d", gate="hard_sigmoid"),
    dict(squeeze="dct", excite="mlp"),
    dict(squeeze="conv", excite="mlp"),
    dict(squeeze="attn", excite="mlp", gate="identity", reweight="add"),
    dict(squeeze="cluster", excite="mlp"),
    dict(squeeze="cluster", excite="conv1d", merge="mean"),
    dict(squeeze="avg", excite="attention"),
    dict(squeeze="avg", excite="multiscale", excite_kw={"fuse": "max"}),
    dict(squeeze="max+avg", axes="c", excite="conv2d"),
    dict(squeeze="max+avg", axes="c", excite="multiscale"),
    dict(squeeze="linear", excite="identity"),
    dict(squeeze="avg", axes="c", excite="conv2d", gate="softmax_hw", reweight="residual"),
    dict(squeeze="avg", axes="h+w", excite="axial"),
    dict(squeeze="avg", axes="h+w", excite="conv1d"),
    dict(squeeze="avg", axes="h", excite="mlp", gate="tanh", reweight="residual", reweight_kw={"gamma_init": 1.0}),
    dict(squeeze="lse", axes="w", excite="conv1d"),
]
IDS = [str(i) for i in range(len(COMPOSE_CASES))]


def _weights_by_parts(m: ComposedAttention, x: torch.Tensor):
    """The composition written out from the parts' own outputs: squeeze, excite each descriptor, gate."""
    d = m.squeeze(x)
    if isinstance(d, tuple) and not m.excite.takes_tuple:
        ls = [m.excite(t) for t in d]
        return m.gate(sum(ls)) if m.squeeze.shared else tuple(m.gate(t) for t in ls)
    ls = m.excite(d)
    return tuple(m.gate(t) for t in ls) if isinstance(ls, tuple) else m.gate(ls)


@pytest.mark.parametrize("cfg", COMPOSE_CASES, ids=IDS)
def test_compose_contract(cfg):
    torch.manual_seed(0)
    m = randomize_(compose(C, **cfg), seed=1).eval()
    assert isinstance(m, ComposedAttention) and isinstance(m.gate, Gate)
    for i, (n, h, w) in enumerate(SHAPES):
        x = _x(n, C, h, w, seed=20 + i)
        x0 = x.clone()
        with torch.no_grad():
            y, y_cl = m(x), m(x.to(memory_format=torch.channels_last))
            w_parts = _weights_by_parts(m, x)
        assert torch.equal(x, x0) and y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
        torch.testing.assert_close(y_cl, y, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(y, m.reweight(x, w_parts))
        if h * w > 1:
            assert y_cl.is_contiguous(memory_format=torch.channels_last)
    x = _x(2, C, 5, 4, seed=30)
    with torch.no_grad():
        ref = copy.deepcopy(m).double()(x.double())
        out = copy.deepcopy(m).to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and (out.double() - ref).abs().max() <= 0.05 * (1 + ref.abs().max())
    m.train()
    xg = _x(4, C, 5, 4, seed=31).requires_grad_()
    (m(xg) * rand(4, C, 5, 4, seed=32)).sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    with pytest.raises(ValueError, match="ComposedAttention"):
        m(_x(2, C + 1, 5, 4))
    with pytest.raises(TypeError, match="ComposedAttention"):
        m(torch.ones(2, C, 5, 4, dtype=torch.int64))


@pytest.mark.parametrize("cfg", COMPOSE_CASES, ids=IDS)
def test_compose_fx_and_hooks(cfg):
    m = randomize_(compose(C, **cfg), seed=2).eval()
    gm = torch.fx.symbolic_trace(m)
    for i, (n, h, w) in enumerate(SHAPES):
        x = _x(n, C, h, w, seed=50 + i)
        torch.testing.assert_close(gm(x), m(x))
        torch.testing.assert_close(gm(x.to(memory_format=torch.channels_last)), m(x))
    owners = [mod for mod in m.modules() if any(True for _ in mod.parameters(recurse=False))]
    assert owners
    fired = set()
    for mod in owners:
        mod.register_forward_hook(lambda mod, args, out: fired.add(id(mod)))
    m(_x(seed=60))
    assert fired == {id(mod) for mod in owners}


def test_compose_with_part_instances_and_errors():
    sq = Pool(C, stats="avg+max", merge="concat")
    m = compose(C, squeeze=sq, excite=MLP(2 * C, C), gate=Gate("hard_sigmoid"), reweight=Multiply())
    assert m.squeeze is sq and m(_x()).shape == (2, C, 7, 5)
    assert repr(m).startswith("ComposedAttention(\n  channels=32")
    with pytest.raises(ValueError, match="compose: excite"):
        compose(C, excite="transformer")
    with pytest.raises(ValueError, match="concatenated"):
        compose(C, squeeze="avg+max", merge="concat", excite="conv1d")
    with pytest.raises(ValueError, match="axial"):
        compose(C, excite="axial")
    with pytest.raises(ValueError, match="compose: reweight"):
        compose(C, reweight="divide")
    with pytest.raises(ValueError, match="instance"):
        compose(C, squeeze=sq, axes="c")
    with pytest.raises(ValueError, match="channels"):
        compose(0)
    with pytest.raises(TypeError, match="Gate"):
        ComposedAttention(C, sq, MLP(2 * C, C), nn.Sigmoid(), Multiply())


def test_descriptor_logits_weights():
    m = randomize_(compose(C, squeeze="avg+max", excite="mlp"), seed=3).eval()
    x = _x(seed=70)
    with torch.no_grad():
        avg, mx = m.descriptor(x)
        torch.testing.assert_close(avg, x.mean((2, 3), keepdim=True))
        torch.testing.assert_close(mx, x.amax((2, 3), keepdim=True))
        torch.testing.assert_close(m.logits(x), m.excite(avg) + m.excite(mx))  # shared MLP, logits summed (CBAM)
        torch.testing.assert_close(m.weights(x), torch.sigmoid(m.logits(x)))
        torch.testing.assert_close(m(x), x * m.weights(x))


def test_compose_export_and_compile():
    m = randomize_(compose(C, squeeze="avg+std", merge="concat", excite="mlp"), seed=1).eval()
    x = _x(2, C, 7, 9, seed=33)
    ep = torch.export.export(m, (x,))
    compiled = torch.compile(m, fullgraph=True, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x))
        torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=1e-5)


def test_plugattn_reexports_the_space():
    """STYLE.md 15: ``plugattn`` exports ``compose`` and the four primitive kinds."""
    from plugattn.space import Excite, Reweight, Squeeze

    missing = [n for n in ("compose", "Squeeze", "Excite", "Gate", "Reweight") if n not in plugattn.__all__]
    assert not missing, f"plugattn/__init__.py must re-export {missing} from plugattn.space"
    assert (plugattn.compose, plugattn.Squeeze, plugattn.Excite, plugattn.Gate, plugattn.Reweight) == (
        compose, Squeeze, Excite, Gate, Reweight)


def test_space_imports_only_downward():
    """The space builds on _layers, _kernels, official and registry, never on the named modules."""
    import ast
    from pathlib import Path

    root = Path(plugattn.space.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "modules" not in (node.module or ""), f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not any("modules" in a.name for a in node.names), path.name
