"""``plugattn._kernels``: blockwise attention against its plain twin (values, gate calls, gradients)."""

from __future__ import annotations

import pytest
import torch

from helpers import rand
from plugattn._kernels import attention_blockwise, attention_plain, is_plain
from plugattn._layers import Gate

F64 = torch.float64


def assert_close(a, b, dtype=F64):
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def gate_calls(gate):
    seen = []
    gate.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().clone()))
    return seen


@pytest.mark.parametrize("scale", [None, 0.25])
@pytest.mark.parametrize("blocks", [{"query_block": 1}, {"query_block": 4}, {"block_budget": 1},
                                    {"block_budget": 2 * 35 * 8 * 10}, {"block_budget": None}], ids=str)
def test_blockwise_kernel_equals_plain_twin(scale, blocks):
    q, k, v = rand(2, 23, 3, seed=1, dtype=F64), rand(2, 3, 35, seed=2, dtype=F64), rand(2, 6, 35, seed=3, dtype=F64)
    gate = Gate("softmax", dim=-1)
    seen = gate_calls(gate)
    want = attention_plain(q, k, v, gate, scale)
    seen.clear()
    got = attention_blockwise(q, k, v, gate, scale, **blocks)
    assert_close(got, want, F64)
    rows = blocks.get("query_block") or (1 if blocks.get("block_budget") == 1 else 10 if blocks.get("block_budget")
                                         else 23)
    assert [t.shape[1] for t in seen] == [min(rows, 23 - i) for i in range(0, 23, rows)]
    # the twin is the formula: softmax(scale · q k) contracted with v
    logits = torch.einsum("nld,nds->nls", q, k) * (1.0 if scale is None else scale)
    assert_close(want, torch.einsum("ncs,nls->ncl", v, torch.softmax(logits, -1)), F64)


@pytest.mark.parametrize("grad_checkpoint", [False, True])
def test_blockwise_kernel_gradients_equal_plain_twin(grad_checkpoint):
    gate = Gate("softmax", dim=-1)
    tensors = [rand(2, 17, 3, seed=4, dtype=F64), rand(2, 3, 11, seed=5, dtype=F64), rand(2, 5, 11, seed=6, dtype=F64)]
    a = [t.clone().requires_grad_() for t in tensors]
    b = [t.clone().requires_grad_() for t in tensors]
    seed = rand(2, 5, 17, seed=7, dtype=F64)
    (attention_blockwise(*a, gate, 0.5, query_block=4, grad_checkpoint=grad_checkpoint) * seed).sum().backward()
    (attention_plain(*b, gate, 0.5) * seed).sum().backward()
    for ta, tb in zip(a, b):
        assert_close(ta.grad, tb.grad, F64)


def test_is_plain_under_tracing_only():
    x = torch.zeros(1)
    assert not is_plain(x)
    traced = []
    torch.fx.symbolic_trace(lambda t: traced.append(is_plain(t)) or t)
    assert traced == [True]
