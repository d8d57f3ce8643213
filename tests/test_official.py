"""from_official: strict loading, the usual checkpoint containers, clear errors naming public keys."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import plugattn
from helpers import rand


def _se_sd(c: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: torch.randn_like(v) for k, v in plugattn.from_official("se", None, channels=c).state_dict().items()}


def test_unknown_and_missing_keys_are_named():
    sd = _se_sd()
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="extra.weight"):
        plugattn.from_official("se", sd, channels=64)
    sd.pop("extra.weight")
    sd.pop("fc1.bias")
    with pytest.raises(KeyError, match="fc1.bias"):
        plugattn.from_official("se", sd, channels=64)


@pytest.mark.parametrize("bad_shape", [(64, 4), (2, 128), (4, 64, 2)])
def test_same_numel_other_shape_is_rejected(bad_shape):
    sd = _se_sd()
    sd["fc1.weight"] = torch.randn(bad_shape)  # (4, 64, 1, 1) expected: same element count, wrong layout
    with pytest.raises(ValueError, match="fc1.weight"):
        plugattn.from_official("se", sd, channels=64)


def test_size_one_dims_may_differ():
    sd = _se_sd()
    want = plugattn.from_official("se", sd, channels=64)
    sd["fc1.weight"] = sd["fc1.weight"].flatten(1)  # a linear layer's (4, 64)
    got = plugattn.from_official("se", sd, channels=64)
    x = rand(2, 64, 3, 3)
    torch.testing.assert_close(got(x), want(x), rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module.", "numpy"])
def test_usual_containers_are_unwrapped(wrap, caplog):
    sd = _se_sd()
    want = plugattn.from_official("se", sd, channels=64)
    if wrap == "module.":
        ckpt = {"module." + k: v for k, v in sd.items()}
    elif wrap == "numpy":
        ckpt = {k: v.numpy() for k, v in sd.items()}
    else:
        ckpt = {wrap: sd, "epoch": 3}
    with caplog.at_level(logging.INFO, logger="plugattn"):
        got = plugattn.from_official("se", ckpt, channels=64)
    if wrap != "numpy":
        assert wrap.rstrip(".") in caplog.text  # said in one log line
    x = rand(2, 64, 3, 3)
    torch.testing.assert_close(got(x), want(x), rtol=0, atol=0)


def test_non_tensor_value_is_named():
    sd = dict(_se_sd())
    sd["fc2.bias"] = [1.0, 2.0]
    with pytest.raises(TypeError, match="fc2.bias"):
        plugattn.from_official("se", sd, channels=64)


def test_missing_argument_names_the_public_key():
    with pytest.raises(TypeError, match=r"from_official\('se_timm'\).*channels") as e:
        plugattn.from_official("se_timm", None)
    assert "_se_timm" not in str(e.value)


def test_numpy_float64_checkpoint_loads_in_float64():
    sd = {k: v.double().numpy() for k, v in _se_sd().items()}
    m = plugattn.from_official("se", sd, channels=64)
    assert all(p.dtype == torch.float64 for p in m.parameters())
    assert isinstance(sd["fc1.weight"], np.ndarray)
