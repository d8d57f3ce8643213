"""SeaFormer (Sea attention, block) against an independent re-derivation written from SPEC.md section 7.

The reference below works directly on the OFFICIAL state_dict keys (``to_q.c.weight``, ``proj.1.bn.*``,
``pos_emb_rowq.pos_embed``, ...), with explicit BN arithmetic, per-head loops, einsum, a 9-tap loop for the
depthwise convs and a hand-written linear interpolation; it is first checked against the golden cases from
the official code, then used to check ``from_official`` on random official state_dicts for many configs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import TOL, rand, randomize_
from plugattn.modules.seaformer import DropPath, SeaAttention, SeaFormerBlock, resample_pos_embed

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"

# ----------------------------------------------------------------------------------------------------------
# Independent reference (SPEC.md §7), on official keys


def _act_fn(act):
    name = act if isinstance(act, str) else act.__name__
    return {"relu6": lambda t: t.clamp(0, 6), "relu": lambda t: t.clamp(min=0)}[name.lower()]


def _h_sigmoid(t):
    return (t + 3).clamp(0, 6) / 6  # ReLU6(t + 3) / 6


def _bn(x, sd, p, eps=1e-5):
    s = (1, -1, 1, 1)
    scale = sd[p + "weight"].view(s) / torch.sqrt(sd[p + "running_var"].view(s) + eps)
    return (x - sd[p + "running_mean"].view(s)) * scale + sd[p + "bias"].view(s)


def _conv1x1_bn(x, sd, p):
    """Conv2d_BN with ks 1 and no bias: ``p + 'c.weight'`` then BN ``p + 'bn.'``."""
    return _bn(torch.einsum("oi,nihw->nohw", sd[p + "c.weight"][:, :, 0, 0], x), sd, p + "bn.")


def _dw3x3(x, w, bias=None):
    """Depthwise 3×3, zero padding 1, as a loop over the nine taps."""
    h, wd = x.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1))
    out = sum(w[:, 0, a, b].view(1, -1, 1, 1) * xp[:, :, a:a + h, b:b + wd] for a in range(3) for b in range(3))
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def hand_interp(pos, n):
    """Linear resampling of (1, C, L) to length n.

    Sample points src = (i + ½)·L/n − ½ clamped at 0; left = ⌊src⌋, right = min(left + 1, L − 1).
    """
    length = pos.shape[-1]
    cols = []
    for i in range(n):
        src = max((i + 0.5) * length / n - 0.5, 0.0)
        left = int(math.floor(src))
        right = min(left + 1, length - 1)
        lam = src - left
        cols.append((1 - lam) * pos[..., left] + lam * pos[..., right])
    return torch.stack(cols, -1)


def _axial(q, k, v, pos_q, pos_k, heads, kd, d):
    """q, k: (B, heads·kd, L); v: (B, heads·d, L); channel = head·kd + j. Returns (B, heads·d, L) and maps."""
    length = q.shape[-1]
    q = q + hand_interp(pos_q, length)
    k = k + hand_interp(pos_k, length)
    outs, maps = [], []
    for h in range(heads):
        qh, kh, vh = q[:, h * kd:(h + 1) * kd], k[:, h * kd:(h + 1) * kd], v[:, h * d:(h + 1) * d]
        logits = torch.einsum("bci,bcj->bij", qh, kh) * kd ** -0.5  # scale after the product
        e = torch.exp(logits - logits.amax(-1, keepdim=True))
        a = e / e.sum(-1, keepdim=True)
        outs.append(torch.einsum("bij,bcj->bci", a, vh))
        maps.append(a)
    return torch.cat(outs, 1), torch.stack(maps, 1)


def ref_sea_attention(x, sd, key_dim, num_heads, attn_ratio=2, activation="ReLU6", return_maps=False):
    act = _act_fn(activation)
    d = int(attn_ratio * key_dim)
    q = _conv1x1_bn(x, sd, "to_q.")
    k = _conv1x1_bn(x, sd, "to_k.")
    v = _conv1x1_bn(x, sd, "to_v.")
    qkv = torch.cat([q, k, v], 1)
    qkv = act(_bn(_dw3x3(qkv, sd["dwconv.c.weight"]), sd, "dwconv.bn."))
    qkv = _conv1x1_bn(qkv, sd, "pwconv.")
    h, w = x.shape[-2:]
    row, a_row = _axial(q.sum(3) / w, k.sum(3) / w, v.sum(3) / w, sd["pos_emb_rowq.pos_embed"],
                        sd["pos_emb_rowk.pos_embed"], num_heads, key_dim, d)
    col, a_col = _axial(q.sum(2) / h, k.sum(2) / h, v.sum(2) / h, sd["pos_emb_columnq.pos_embed"],
                        sd["pos_emb_columnk.pos_embed"], num_heads, key_dim, d)
    row = _conv1x1_bn(act(row[:, :, :, None]), sd, "proj_encode_row.1.")  # (B, dh, H, 1)
    col = _conv1x1_bn(act(col[:, :, None, :]), sd, "proj_encode_column.1.")  # (B, dh, 1, W)
    xx = v + (row + col)
    out = _h_sigmoid(_conv1x1_bn(act(xx), sd, "proj.1.")) * qkv
    return (out, a_row, a_col) if return_maps else out


def ref_sea_block(x, sd, key_dim, num_heads, mlp_ratio=4.0, attn_ratio=2.0, act_layer="ReLU"):
    attn_sd = {k[len("attn."):]: v for k, v in sd.items() if k.startswith("attn.")}
    x = x + ref_sea_attention(x, attn_sd, key_dim, num_heads, attn_ratio, act_layer)
    hdn = _conv1x1_bn(x, sd, "mlp.fc1.")
    hdn = _act_fn(act_layer)(_dw3x3(hdn, sd["mlp.dwconv.weight"], sd["mlp.dwconv.bias"]))
    return x + _conv1x1_bn(hdn, sd, "mlp.fc2.")


# ----------------------------------------------------------------------------------------------------------
# Random official state_dicts (keys and shapes from SPEC.md)


def _conv_bn_sd(p, out_c, in_c, ks, g, dtype):
    fan_in = in_c * ks * ks
    return {
        p + "c.weight": torch.randn(out_c, in_c, ks, ks, generator=g, dtype=dtype) / math.sqrt(fan_in),
        p + "bn.weight": 0.5 + torch.rand(out_c, generator=g, dtype=dtype),
        p + "bn.bias": 0.3 * torch.randn(out_c, generator=g, dtype=dtype),
        p + "bn.running_mean": 0.1 * torch.randn(out_c, generator=g, dtype=dtype),
        p + "bn.running_var": 0.5 + torch.rand(out_c, generator=g, dtype=dtype),
        p + "bn.num_batches_tracked": torch.tensor(0),
    }


def official_attn_sd(dim, key_dim, num_heads, attn_ratio, seed=0, dtype=torch.float64, prefix=""):
    g = torch.Generator().manual_seed(seed)
    nh_kd, dh = key_dim * num_heads, int(attn_ratio * key_dim) * num_heads
    c3 = 2 * nh_kd + dh
    sd = {}
    sd.update(_conv_bn_sd("to_q.", nh_kd, dim, 1, g, dtype))
    sd.update(_conv_bn_sd("to_k.", nh_kd, dim, 1, g, dtype))
    sd.update(_conv_bn_sd("to_v.", dh, dim, 1, g, dtype))
    sd.update(_conv_bn_sd("proj.1.", dim, dh, 1, g, dtype))
    sd.update(_conv_bn_sd("proj_encode_row.1.", dh, dh, 1, g, dtype))
    sd.update(_conv_bn_sd("proj_encode_column.1.", dh, dh, 1, g, dtype))
    for name in ("rowq", "rowk", "columnq", "columnk"):
        sd[f"pos_emb_{name}.pos_embed"] = torch.randn(1, nh_kd, 16, generator=g, dtype=dtype)
    sd.update(_conv_bn_sd("dwconv.", c3, 1, 3, g, dtype))
    sd.update(_conv_bn_sd("pwconv.", dim, c3, 1, g, dtype))
    return {prefix + k: v for k, v in sd.items()}


def official_block_sd(dim, key_dim, num_heads, mlp_ratio, attn_ratio, seed=0, dtype=torch.float64):
    sd = official_attn_sd(dim, key_dim, num_heads, attn_ratio, seed, dtype, prefix="attn.")
    g = torch.Generator().manual_seed(seed + 1)
    hidden = int(dim * mlp_ratio)
    sd.update({"mlp." + k: v for k, v in _conv_bn_sd("fc1.", hidden, dim, 1, g, dtype).items()})
    sd["mlp.dwconv.weight"] = torch.randn(hidden, 1, 3, 3, generator=g, dtype=dtype) / 3
    sd["mlp.dwconv.bias"] = 0.3 * torch.randn(hidden, generator=g, dtype=dtype)
    sd.update({"mlp." + k: v for k, v in _conv_bn_sd("fc2.", dim, hidden, 1, g, dtype).items()})
    return sd


def _input(b, c, h, w, seed, dtype=torch.float64):
    return rand(b, c, h, w, seed=seed, dtype=dtype) + rand(b, c, 1, 1, seed=seed + 100, dtype=dtype)


def load64(name, sd, **kwargs):
    """``from_official`` with the module built in float64, so float64 official weights load without rounding."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return plugattn.from_official(name, sd, **kwargs).eval()
    finally:
        torch.set_default_dtype(old)


SIZES = [(16, 16), (7, 7), (4, 4), (13, 17), (1, 1), (32, 20)]
# (dim, key_dim, num_heads, attn_ratio, activation): SeaFormer-T/S-like stages, ratio 2 and 4, class or string
ATTN_CONFIGS = [
    (32, 16, 4, 2, "ReLU6"),
    (48, 24, 6, 4, nn.ReLU6),
    (40, 16, 6, 4, "ReLU"),
    (24, 24, 4, 2, nn.ReLU),
    (20, 16, 2, 2.5, "ReLU6"),  # non-integer ratio: d = int(2.5 · 16) = 40
]
# (dim, key_dim, num_heads, mlp_ratio, attn_ratio, act_layer)
BLOCK_CONFIGS = [
    (32, 16, 4, 2.0, 2.0, "ReLU6"),
    (36, 24, 6, 4.0, 4.0, nn.ReLU6),
    (24, 16, 4, 1.5, 2.0, nn.ReLU),
]


# ----------------------------------------------------------------------------------------------------------
# The reference itself reproduces the official goldens


@pytest.mark.parametrize("prefix", ["sea_attn", "sea_block"])
def test_reference_reproduces_official_goldens(prefix):
    paths = sorted(GOLDENS.glob(f"{prefix}__*.pt"))
    assert paths
    for path in paths:
        case = torch.load(path, weights_only=True)
        kw = case["config"]["kwargs"]
        sd = {k: v.double() if v.is_floating_point() else v for k, v in case["state_dict"].items()}
        x = case["input"].double()
        if prefix == "sea_attn":
            y = ref_sea_attention(x, sd, kw["key_dim"], kw["num_heads"], kw.get("attn_ratio", 2), kw["activation"])
        else:
            y = ref_sea_block(x, sd, kw["key_dim"], kw["num_heads"], kw.get("mlp_ratio", 4.0),
                              kw.get("attn_ratio", 2.0), kw.get("act_layer", "ReLU"))
        torch.testing.assert_close(y.float(), case["output"], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# from_official == reference on random official state_dicts


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("cfg", ATTN_CONFIGS, ids=lambda c: f"d{c[0]}_kd{c[1]}_h{c[2]}_ar{c[3]}")
def test_sea_attention_matches_reference(cfg, size):
    dim, kd, nh, ar, act = cfg
    sd = official_attn_sd(dim, kd, nh, ar, seed=dim + kd)
    m = load64("sea_attention", sd, dim=dim, key_dim=kd, num_heads=nh, attn_ratio=ar, activation=act)
    for b in (1, 2):
        x = _input(b, dim, *size, seed=b)
        with torch.no_grad():
            y = m(x)
        want = ref_sea_attention(x, sd, kd, nh, ar, act)
        torch.testing.assert_close(y, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("cfg", BLOCK_CONFIGS, ids=lambda c: f"d{c[0]}_kd{c[1]}_h{c[2]}_mlp{c[3]}_ar{c[4]}")
def test_sea_block_matches_reference(cfg, size):
    dim, kd, nh, mlp, ar, act = cfg
    sd = official_block_sd(dim, kd, nh, mlp, ar, seed=dim)
    m = load64("sea_block", sd, dim=dim, key_dim=kd, num_heads=nh, mlp_ratio=mlp, attn_ratio=ar, act_layer=act)
    x = _input(1, dim, *size, seed=3)
    with torch.no_grad():
        y = m(x)
    torch.testing.assert_close(y, ref_sea_block(x, sd, kd, nh, mlp, ar, act), atol=1e-10, rtol=1e-10)


def test_sea_attention_float32_and_channels_last_match_reference():
    dim, kd, nh = 32, 16, 4
    sd64 = official_attn_sd(dim, kd, nh, 2, seed=5)
    sd32 = {k: v.float() if v.is_floating_point() else v for k, v in sd64.items()}
    m = plugattn.from_official("sea_attention", sd32, dim=dim, key_dim=kd, num_heads=nh, activation="ReLU6").eval()
    x = _input(2, dim, 9, 11, seed=4, dtype=torch.float32)
    want = ref_sea_attention(x.double(), sd64, kd, nh, 2, "ReLU6")
    with torch.no_grad():
        for inp in (x, x.to(memory_format=torch.channels_last)):
            y = m(inp)
            assert y.dtype == torch.float32
            torch.testing.assert_close(y.double(), want, atol=1e-5, rtol=1e-5)
        assert m(x.to(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)


def test_bfloat16_channels_last_close_to_reference():
    dim, kd, nh = 32, 16, 4
    sd = official_attn_sd(dim, kd, nh, 2, seed=6)
    m = plugattn.from_official("sea_attention", sd, dim=dim, key_dim=kd, num_heads=nh, activation="ReLU6").eval()
    x = _input(2, dim, 7, 9, seed=7)
    want = ref_sea_attention(x, sd, kd, nh, 2, "ReLU6")
    with torch.no_grad():
        y = m.to(torch.bfloat16)(x.to(torch.bfloat16).to(memory_format=torch.channels_last))
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    atol, rtol = TOL[torch.bfloat16]
    assert (y.double() - want).abs().max() <= atol * (1 + want.abs().max()) + rtol


# ----------------------------------------------------------------------------------------------------------
# Positional embedding resampling


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pos_embed_resampling_matches_hand_interpolation(dtype):
    pos = torch.randn(1, 12, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for n in [1, 2, 3, 4, 5, 7, 8, 13, 15, 16, 17, 20, 31, 32, 33, 64]:
        got = resample_pos_embed(pos.to(dtype), n)
        assert got.shape == (1, 12, n) and got.dtype == dtype
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(got.double(), hand_interp(pos.to(dtype).double(), n), atol=tol, rtol=tol)
    assert torch.equal(resample_pos_embed(pos, 16), pos)  # identity at the stored length
    # align_corners=True (a plausible mistake) differs visibly at the official stage sizes
    assert (F.interpolate(pos, size=7, mode="linear", align_corners=True) - hand_interp(pos, 7)).abs().max() > 1e-3


def test_pos_embed_resampling_bfloat16():
    pos = torch.randn(1, 8, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for n in (1, 7, 13, 32):
        got = resample_pos_embed(pos.to(torch.bfloat16), n)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.double(), hand_interp(pos.to(torch.bfloat16).double(), n), atol=2e-2, rtol=2e-2)


def test_pos_embed_used_at_every_size():
    """Changing one stored embedding column changes the output at H = 7 (resampled) as at H = 16."""
    torch.manual_seed(0)
    m = SeaAttention(16, key_dim=8, num_heads=2).double().eval()
    with torch.no_grad():
        for seq in (m.encode_row, m.encode_col, m.proj):
            seq.bn.weight.fill_(1.0)
        x = _input(1, 16, 7, 7, seed=8)
        y0 = m(x)
        m.pos_row_q[..., 5] += 1.0
        assert (m(x) - y0).abs().max() > 1e-6


# ----------------------------------------------------------------------------------------------------------
# Gates, init, drop path, converter behaviour


def test_axial_gates_capture_the_attention_maps():
    dim, kd, nh = 24, 16, 3
    sd = official_attn_sd(dim, kd, nh, 2, seed=9)
    m = load64("sea_attention", sd, dim=dim, key_dim=kd, num_heads=nh, activation="ReLU6")
    seen = {}
    for name in ("row_gate", "col_gate", "gate"):
        getattr(m, name).register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(name, o))
    x = _input(2, dim, 5, 11, seed=10)
    with torch.no_grad():
        m(x)
    _, a_row, a_col = ref_sea_attention(x, sd, kd, nh, 2, "ReLU6", return_maps=True)
    assert seen["row_gate"].shape == (2, nh, 5, 5) and seen["col_gate"].shape == (2, nh, 11, 11)
    torch.testing.assert_close(seen["row_gate"], a_row, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(seen["col_gate"], a_col, atol=1e-12, rtol=1e-12)
    assert seen["gate"].shape == (2, dim, 5, 11)
    assert ((seen["gate"] >= 0) & (seen["gate"] <= 1)).all()


def test_official_initialisation():
    torch.manual_seed(0)
    m = SeaAttention(32).eval()
    for seq in (m.encode_row, m.encode_col, m.proj):
        assert torch.equal(seq.bn.weight, torch.zeros_like(seq.bn.weight))
    for p in (m.pos_row_q, m.pos_row_k, m.pos_col_q, m.pos_col_k):
        assert p.shape == (1, 64, 16) and 0.7 < p.std().item() < 1.3  # randn
    seen = {}
    m.gate.register_forward_hook(lambda mod, i, o: seen.__setitem__("g", o))
    x = rand(2, 32, 6, 5)
    with torch.no_grad():
        y = m(x)
        qkv = m.detail_pw(m.detail_dw(torch.cat([m.to_q(x), m.to_k(x), m.to_v(x)], 1)))
    assert torch.equal(seen["g"], torch.full_like(seen["g"], 0.5))  # h-sigmoid(0): output = ½·qkv
    torch.testing.assert_close(y, 0.5 * qkv)


def test_defaults_and_sizes():
    m = SeaAttention(7)  # key_dim and num_heads do not depend on channels
    assert (m.key_dim, m.num_heads, m.value_dim, m.pos_row_q.shape[-1]) == (16, 4, 32, 16)
    assert m.to_q.conv.weight.shape == (64, 7, 1, 1) and m.to_v.conv.weight.shape == (128, 7, 1, 1)
    assert m.detail_dw.conv.weight.shape == (256, 1, 3, 3) and m.detail_pw.conv.weight.shape == (7, 256, 1, 1)
    b = SeaFormerBlock(8)
    assert b.mlp.fc1.conv.weight.shape == (32, 8, 1, 1) and isinstance(b.mlp.act, nn.ReLU6)
    assert isinstance(b.drop_path, nn.Identity)
    assert not any(".c." in k or "pos_emb_" in k or ".1." in k for k in b.state_dict())


def test_key_maps_are_one_to_one():
    sd = official_block_sd(32, 16, 4, 2.0, 2.0)
    m = load64("sea_block", sd, dim=32, key_dim=16, num_heads=4, mlp_ratio=2.0, act_layer="ReLU6")
    ours = m.state_dict()
    assert len(ours) == len(sd)
    # every official tensor landed in exactly one of ours (all random tensors are distinct)
    for key, value in sd.items():
        if value.dim() == 0:
            continue
        hits = [k for k, v in ours.items() if v.shape == value.shape and torch.equal(v.double(), value)]
        assert len(hits) == 1, (key, hits)


def test_drop_path_per_sample_scaled():
    dp = DropPath(0.3)
    x = torch.ones(4000, 3, 2, 2)
    assert dp.eval()(x) is x
    y = dp.train()(x)
    per_sample = y.flatten(1)
    assert ((per_sample == 0).all(1) | torch.isclose(per_sample, torch.tensor(1 / 0.7)).all(1)).all()
    kept = (per_sample[:, 0] != 0).double().mean().item()
    assert 0.66 < kept < 0.74
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(1.0)


def test_block_drop_path_identity_in_eval_and_active_in_train():
    torch.manual_seed(0)
    a = SeaFormerBlock(16, key_dim=8, num_heads=2, drop_path=0.5).double()
    b = SeaFormerBlock(16, key_dim=8, num_heads=2).double()
    b.load_state_dict(a.state_dict())
    x = _input(2, 16, 5, 5, seed=11)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), atol=0, rtol=0)
    assert isinstance(a.drop_path, DropPath) and a.drop_path.drop_prob == 0.5


def test_activation_string_equals_class_and_matters():
    sd = official_attn_sd(16, 8, 2, 2, seed=12)
    x = _input(2, 16, 6, 7, seed=13)

    def run(act):
        m = load64("sea_attention", sd, dim=16, key_dim=8, num_heads=2, activation=act)
        with torch.no_grad():
            return m(x)

    assert torch.equal(run("ReLU6"), run(nn.ReLU6))
    assert torch.equal(run("relu"), run(nn.ReLU))
    assert (run("ReLU6") - run("ReLU")).abs().max() > 1e-6  # ReLU6 clips: the activation is really used
    torch.testing.assert_close(run(nn.ReLU), ref_sea_attention(x, sd, 8, 2, 2, "ReLU"), atol=1e-10, rtol=1e-10)


def test_converter_errors_and_norm_cfg():
    with pytest.raises(TypeError, match="activation"):
        plugattn.from_official("sea_attention", dim=16, key_dim=8, num_heads=2)  # official default None crashes
    with pytest.raises(TypeError, match="act_layer"):
        plugattn.from_official("sea_block", dim=16, key_dim=8, num_heads=2, act_layer=None)
    with pytest.raises(ValueError, match="norm_cfg"):
        plugattn.from_official("sea_attention", dim=16, key_dim=8, num_heads=2, activation="ReLU6",
                               norm_cfg=dict(type="GN", num_groups=2))
    m = plugattn.from_official("sea_block", dim=16, key_dim=8, num_heads=2, act_layer="ReLU6",
                               norm_cfg=dict(type="SyncBN", requires_grad=False))
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert bns and all(not p.requires_grad for x in bns for p in x.parameters())
    assert all(p.requires_grad for n, p in m.named_parameters() if "bn" not in n)
    # the official Block's own default act_layer is ReLU (SeaFormer passes ReLU6)
    m = plugattn.from_official("sea_block", dim=16, key_dim=8, num_heads=2)
    assert isinstance(m.mlp.act, nn.ReLU) and isinstance(m.attn.proj.act, nn.ReLU)


@pytest.mark.parametrize("kwargs, arg", [
    ({"key_dim": 0}, "key_dim"), ({"num_heads": 2.5}, "num_heads"), ({"attn_ratio": 0.01}, "attn_ratio"),
    ({"pos_len": 0}, "pos_len"), ({"act_layer": None}, "act_layer"), ({"act_layer": "nope"}, "act_layer"),
])
def test_bad_attention_arguments(kwargs, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        SeaAttention(16, **kwargs)


@pytest.mark.parametrize("kwargs, arg", [
    ({"mlp_ratio": 0}, "mlp_ratio"), ({"drop": 1.5}, "drop"), ({"drop_path": 1.0}, "drop_path"),
    ({"key_dim": -1}, "key_dim"),
])
def test_bad_block_arguments(kwargs, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        SeaFormerBlock(16, **kwargs)


@pytest.mark.slow
def test_onnx_export_dynamic_sizes_matches_eager(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from torch.export import Dim

    sd = official_attn_sd(16, 8, 2, 2, seed=14, dtype=torch.float32)
    m = plugattn.from_official("sea_attention", sd, dim=16, key_dim=8, num_heads=2, activation="ReLU6").eval()
    x = _input(2, 16, 13, 17, seed=15, dtype=torch.float32)
    path = tmp_path / "sea_attention.onnx"
    torch.onnx.export(m, (x,), str(path), dynamo=True, verbose=False,
                      dynamic_shapes=({0: Dim("N", min=1, max=64), 2: Dim("H", min=2, max=128),
                                       3: Dim("W", min=2, max=128)},))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(13, 17), (4, 4), (32, 20), (16, 16)]:
        xi = _input(1, 16, h, w, seed=h, dtype=torch.float32)
        got = sess.run(None, {sess.get_inputs()[0].name: xi.numpy()})[0]
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), m(xi), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Gradients, ordinary nn.Module (fx, hooks, repr)


def test_sea_attention_and_block_input_gradients_match_reference():
    dim, kd, nh = 24, 8, 3
    sd = official_attn_sd(dim, kd, nh, 2, seed=16)
    m = load64("sea_attention", sd, dim=dim, key_dim=kd, num_heads=nh, activation="ReLU6")
    bsd = official_block_sd(dim, kd, nh, 2.0, 2.0, seed=17)
    b = load64("sea_block", bsd, dim=dim, key_dim=kd, num_heads=nh, mlp_ratio=2.0, act_layer="ReLU6")
    for module, ref in [(m, lambda t: ref_sea_attention(t, sd, kd, nh, 2, "ReLU6")),
                        (b, lambda t: ref_sea_block(t, bsd, kd, nh, 2.0, 2.0, "ReLU6"))]:
        x = _input(2, dim, 6, 9, seed=18).to(memory_format=torch.channels_last)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        seed = rand(2, dim, 6, 9, seed=19, dtype=torch.float64)
        (module(xa) * seed).sum().backward()
        (ref(xb) * seed).sum().backward()
        # PyTorch's float64 Hardsigmoid backward multiplies by the float32 constant 1/6 (relative error 3e-8)
        torch.testing.assert_close(xa.grad, xb.grad, atol=1e-7, rtol=1e-6)


MODULES = {
    "sea_attention": lambda: SeaAttention(32, key_dim=8, num_heads=2),
    "sea_block": lambda: SeaFormerBlock(32, key_dim=8, num_heads=2, mlp_ratio=2),
    "sea_block_drop_path": lambda: SeaFormerBlock(32, key_dim=8, num_heads=2, drop_path=0.3),
}


@pytest.mark.parametrize("name", MODULES)
def test_fx_symbolic_trace_equals_eager(name):
    m = randomize_(MODULES[name](), seed=3).double().eval()
    gm = torch.fx.symbolic_trace(m)
    for hw in [(7, 5), (1, 1), (16, 16), (13, 20)]:
        x = _input(2, 32, *hw, seed=40)
        with torch.no_grad():
            torch.testing.assert_close(gm(x), m(x), atol=1e-12, rtol=1e-12)


def test_fx_symbolic_trace_of_drop_path_in_training():
    dp = DropPath(0.4).train()
    gm = torch.fx.symbolic_trace(dp)
    x = torch.randn(64, 3, 2, 2)
    torch.manual_seed(5)
    want = dp(x)
    torch.manual_seed(5)
    torch.testing.assert_close(gm(x), want, atol=0, rtol=0)
    assert (want.flatten(1) == 0).all(1).any()  # some samples are dropped


@pytest.mark.parametrize("name", MODULES)
def test_every_parameter_owning_leaf_is_called(name):
    m = randomize_(MODULES[name](), seed=4).eval()
    leaves = {n for n, sub in m.named_modules() if not list(sub.children()) and list(sub.parameters(False))}
    fired = set()
    for n, sub in m.named_modules():
        if n in leaves:
            sub.register_forward_hook(lambda mod, i, o, n=n: fired.add(n))
    with torch.no_grad():
        m(rand(2, 32, 7, 5, seed=41))
    assert leaves and fired == leaves


def test_extra_repr():
    r = repr(SeaAttention(64, key_dim=8, num_heads=2, attn_ratio=4))
    assert "SeaAttention(\n  channels=64, key_dim=8, num_heads=2, attn_ratio=4, pos_len=16" in r
    assert "SeaFormerBlock(\n  channels=32, mlp_channels=64" in repr(SeaFormerBlock(32, mlp_ratio=2))
    assert "drop_prob=0.2" in repr(DropPath(0.2))
