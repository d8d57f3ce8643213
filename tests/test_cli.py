"""The ``plugattn`` command: user errors as one line (no traceback), defaults in --help, --version."""

from __future__ import annotations

import pytest

import plugattn
from plugattn.cli import main


def test_cli_list(capsys):
    assert main(["list", "--channels", "32", "--size", "7", "5"]) == 0
    out = capsys.readouterr().out
    for name in plugattn.list_modules():
        assert f"\n{name} " in out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and plugattn.__version__ in capsys.readouterr().out


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "(default: 20)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["bench", "nope"], "nope"),
    (["bench", "se", "--dtype", "float8"], "--dtype"),
    (["list", "--channels", "0"], "--channels"),
    (["compare", "--modules", "nope"], "nope"),
    (["compare", "--modules", "se", "danet_head"], "danet_head"),
])
def test_user_errors_are_one_line(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and err.count("\n") == 1


def test_bench_cuda_without_cuda(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", "se", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
