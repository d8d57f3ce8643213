"""Export of every registered module: ONNX (dynamic batch/height/width, onnxruntime parity), torch.export, compile.

ONNX parity is checked at the export size and at sizes the export never saw, including sizes that adaptive
pooling does not divide evenly (13×17, 7×5) and 1×1. Errors are measured relative to the output's scale,
|onnx − eager| / max(1, max |eager|) ≤ 1e-4: with random weights some outputs reach |y| ≈ 100.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import plugattn
from helpers import as_tuple, build, channel_counts, rand
from plugattn.cli import main
from plugattn.export import export_onnx
from plugattn.integrate import insert

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
ort.set_default_logger_severity(4)

NAMES = plugattn.list_modules()
EXPORT_SIZE = (12, 10)
CHECK_SIZES = [(2, 12, 10), (3, 13, 17), (1, 7, 5), (1, 1, 1)]


def ort_run(path, x: torch.Tensor) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})


def rel_err(out: np.ndarray, ref: torch.Tensor) -> float:
    r = ref.detach().double().numpy()
    assert out.shape == r.shape
    both_nan = np.isnan(out) & np.isnan(r)
    d = np.where(both_nan, 0.0, np.abs(out.astype(np.float64) - r))
    assert not np.isnan(d).any(), "NaN in one output only"
    return float(d.max(initial=0.0)) / max(1.0, float(np.nan_to_num(np.abs(r)).max(initial=0.0)))


@pytest.mark.parametrize("name", NAMES)
def test_onnx_dynamic_shapes_match_eager(name, tmp_path):
    m = build(name)
    c = channel_counts(name)[0]
    path = tmp_path / f"{name}.onnx"
    export_onnx(m, path, channels=c, size=EXPORT_SIZE, batch=2, opset=18)
    import onnx

    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert [dims[0], dims[2], dims[3]] == ["batch", "height", "width"]
    failures = []
    for n, h, w in CHECK_SIZES:
        x = rand(n, c, h, w, seed=n * 100 + h)
        with torch.no_grad():
            refs = as_tuple(m(x))
        try:
            outs = ort_run(path, x)
            errs = [rel_err(o, r) for o, r in zip(outs, refs)]
        except Exception as e:  # onnxruntime refuses the size
            failures.append(f"{n}x{h}x{w}: {type(e).__name__}")
            continue
        if not max(errs) <= 1e-4:
            failures.append(f"{n}x{h}x{w}: {max(errs):.1e}")
    assert not failures, failures


@pytest.mark.parametrize("name", NAMES)
def test_torch_export_dynamic_shapes(name):
    m = build(name)
    c = channel_counts(name)[0]
    dim = torch.export.Dim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(m, (rand(2, c, *EXPORT_SIZE),),
                                 dynamic_shapes={"x": {0: dim("batch"), 2: dim("height"), 3: dim("width")}})
    for n, h, w in [(3, 13, 17), (1, 7, 5), (1, 1, 1)]:
        x = rand(n, c, h, w, seed=h)
        with torch.no_grad():
            for a, b in zip(as_tuple(ep.module()(x)), as_tuple(m(x))):
                scale = max(1.0, b.abs().max().item())
                torch.testing.assert_close(a / scale, b / scale, atol=1e-5, rtol=0, equal_nan=True)


@pytest.mark.parametrize("name", [n for n in ("eca", "coord") if n in NAMES])
def test_compile_fullgraph_dynamic(name):
    m = build(name)
    c = channel_counts(name)[0]
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, dynamic=True)
    for n, h, w in [(2, 7, 9), (1, 13, 17)]:
        x = rand(n, c, h, w, seed=w)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=1e-5)


def test_inserted_network_exports(tmp_path):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = insert(tv.models.resnet18(num_classes=10), "eca").eval()
    path = export_onnx(net, tmp_path / "resnet18_eca.onnx", channels=3, size=(32, 32))
    for n, h, w in [(2, 32, 32), (1, 45, 37)]:
        x = rand(n, 3, h, w, seed=h)
        with torch.no_grad():
            assert rel_err(ort_run(path, x)[0], net(x)) <= 1e-4


def test_export_arguments(tmp_path):
    with pytest.raises(ValueError, match="channels is required"):
        export_onnx("se", tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="opset"):
        export_onnx("se", tmp_path / "a.onnx", channels=8, opset=13)
    with pytest.raises(ValueError, match="height must be an int >= 2"):
        export_onnx("se", tmp_path / "a.onnx", channels=8, size=(1, 4))
    with pytest.raises(TypeError, match="kwargs"):
        export_onnx(plugattn.create("se", 8), tmp_path / "a.onnx", rd_ratio=0.5)
    m = plugattn.create("se", 8).train()
    export_onnx(m, tmp_path / "b.onnx", size=(4, 4), dynamic=False)  # channels read from the module
    assert m.training  # mode restored
    import onnx

    dims = [d.dim_value for d in onnx.load(str(tmp_path / "b.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 8, 4, 4]


def test_cli_export(tmp_path, capsys):
    out = tmp_path / "sub" / "eca.onnx"
    rc = main(["export", "eca", "--channels", "24", "--out", str(out), "--opset", "18", "--size", "9", "7",
               "--check", "--kwargs", '{"kernel_size": 5}'])
    text = capsys.readouterr().out
    assert rc == 0 and out.exists() and "dynamic batch, height, width" in text
    assert text.count("onnxruntime vs eager") == 2
    m = plugattn.create("eca", 24, kernel_size=5).eval()
    x = rand(3, 24, 11, 6, seed=2)
    # the CLI's module has its own random init: compare shapes and the weights it stored
    import onnx

    conv = [t for t in onnx.load(str(out)).graph.initializer if len(t.dims) == 3]
    assert conv and list(conv[0].dims) == [1, 1, 5]
    assert ort_run(out, x)[0].shape == tuple(m(x).shape)
    assert main(["export", "eca", "--channels", "24", "--out", str(out), "--opset", "12"]) == 2
    assert main(["export", "eca", "--channels", "24", "--out", str(out), "--kwargs", "[1]"]) == 2
    assert main(["export", "nope", "--channels", "24", "--out", str(out)]) == 2
    assert "error" in capsys.readouterr().err


def test_onnx_file_is_self_contained(tmp_path):
    """One file: no ``.onnx.data`` beside it, and a copy of the file alone runs."""
    import shutil

    m = build("se", 64)
    path = export_onnx(m, tmp_path / "a" / "se.onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == ["se.onnx"]
    alone = tmp_path / "b" / "se.onnx"
    alone.parent.mkdir()
    shutil.copy(path, alone)
    x = rand(2, 64, 5, 7, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(ort_run(alone, x)[0]), m(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("wrapped", [False, True])
def test_cli_export_weights(tmp_path, wrapped):
    m = build("eca", 24)
    ckpt = tmp_path / "w.pt"
    torch.save({"state_dict": m.state_dict(), "epoch": 1} if wrapped else m.state_dict(), ckpt)
    out = tmp_path / "eca.onnx"
    assert main(["export", "eca", "--channels", "24", "--out", str(out), "--weights", str(ckpt)]) == 0
    x = rand(2, 24, 6, 5, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(ort_run(out, x)[0]), m(x), atol=1e-5, rtol=1e-5)
    assert main(["export", "eca", "--channels", "24", "--out", str(out), "--weights", str(tmp_path / "no.pt")]) == 2
