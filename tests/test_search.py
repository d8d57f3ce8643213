"""``plugattn search`` and its space: every point builds and runs, the split never touches the test set, the study
resumes, the budget rejects before training, the outputs hold the exact compose call."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import plugattn
from plugattn.space import preset
from plugattn.space import search_space as S

optuna = pytest.importorskip("optuna")

from plugattn.cli import main  # noqa: E402
from plugattn.experiments.data import load_dataset  # noqa: E402
from plugattn.experiments.models import compose_arg, parse_compose  # noqa: E402
from plugattn.experiments.search import pareto_front, parse_limit, search, validation_split  # noqa: E402
from plugattn.experiments.train import Recipe  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("channels", [(16, 32, 64), (8, 24)])
def test_every_point_builds_and_runs(channels):
    points = S.all_points(channels)
    assert len({S.point_key(p) for p in points}) == len(points)  # no point listed twice
    assert ("dct" in {p["squeeze"] for p in points}) == all(c % 16 == 0 for c in channels)
    g = torch.Generator().manual_seed(0)
    for p in points:
        spec = S.to_spec(p, channels)
        assert eval(S.compose_call(spec, 8).replace("plugattn.compose(8,", "dict("), {}) == spec  # exact call
        assert parse_compose(compose_arg(spec)) == spec  # and `plugattn compare -m` rebuilds the same point
        for c in channels[:2]:
            x = torch.randn(2, c, 9, 7, generator=g)
            y = plugattn.compose(c, **spec)(x)
            assert y.shape == x.shape and torch.isfinite(y).all(), spec


def test_sampler_produces_points_only():
    valid = {S.point_key(p) for p in S.all_points((8, 24))}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    seen = []
    study.optimize(lambda t: (seen.append(S.suggest(t, (8, 24))), len(seen) % 3)[1], n_trials=25)
    assert all(S.point_key(p) in valid for p in seen)


@pytest.mark.parametrize("name", S.EXACT_PRESETS)
def test_exact_preset_points_equal_their_preset(name):
    ref = preset(name, 32) if name in plugattn.space.PRESETS else plugattn.create(name, 32)
    m = plugattn.compose(32, **S.to_spec(S.PRESET_POINTS[name][0]))
    m.load_state_dict(ref.state_dict())  # strict: the same parameters
    x = torch.randn(2, 32, 9, 7)
    torch.testing.assert_close(m.eval()(x), ref.eval()(x))


def test_to_spec_rejects_non_points():
    p = dict(S.PRESET_POINTS["se"][0])
    with pytest.raises(ValueError, match="reduction"):
        S.to_spec({**p, "reduction": 3})
    with pytest.raises(ValueError, match="do not apply"):
        S.to_spec({**p, "kernel_2d": 3})
    with pytest.raises(ValueError, match="squeeze"):
        S.to_spec({**S.PRESET_POINTS["fca"][0]}, channels=(8,))  # dct needs C % 16 == 0


def test_parse_limit_and_front():
    assert parse_limit("10%", 500, "m") == 50 and parse_limit("2M", 1, "m") == 2e6 and parse_limit(None, 1, "m") is None
    with pytest.raises(ValueError, match="max_latency"):
        parse_limit("3", 1.0, "max_latency", relative_only=True)
    pts = [(3, 0.5), (1, 0.4), (2, 0.4), (1, 0.3), (5, 0.6), (4, 0.55)]
    brute = [i for i, (c, s) in enumerate(pts) if not any(
        c2 <= c and s2 >= s and (c2, s2) != (c, s) for c2, s2 in pts)]
    assert sorted(pareto_front(pts)) == brute


def test_validation_split_is_class_balanced_and_from_train():
    d = load_dataset(train_per_class=40, test_per_class=10)
    s, _ = validation_split(d, val_per_class=10, train_per_class=20)
    assert torch.bincount(s.test_y).tolist() == [10] * 10 and torch.bincount(s.train_y).tolist() == [20] * 10
    rows = {bytes(x.numpy()) for x in d.train_x}
    assert all(bytes(x.numpy()) in rows for x in s.test_x)  # validation images are training images
    assert not {bytes(x.numpy()) for x in s.test_x} & {bytes(x.numpy()) for x in s.train_x}  # disjoint
    with pytest.raises(ValueError, match="val_per_class"):
        validation_split(d, val_per_class=40)


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(train_per_class=30, test_per_class=8)


KW = dict(epochs=1, val_per_class=6, train_per_class=None, presets=["se", "eca", "coord"], retrain=0, log=False)


def test_resume_continues_the_study(tmp_path, tiny, monkeypatch):
    r = Recipe(epochs=1, batch_size=32)
    search(data=tiny, recipe=r, out=tmp_path, trials=2, **KW)
    first = {t["number"]: t for t in json.loads((tmp_path / "trials.json").read_text()) if t["state"] != "WAITING"}
    assert len(first) == 2 and {t["preset"] for t in first.values()} == {"se", "eca"}
    import plugattn.experiments.search as search_mod

    specs = []
    real = search_mod.train_run
    monkeypatch.setattr(search_mod, "train_run", lambda spec, *a, **kw: (specs.append(spec), real(spec, *a, **kw))[1])
    search(data=tiny, recipe=r, out=tmp_path, trials=4, **KW)
    assert None not in specs and len(specs) == 2  # resumed: the baseline is not trained again, two new trials are
    rows = json.loads((tmp_path / "trials.json").read_text())
    assert [t["number"] for t in rows] == [0, 1, 2, 3] and "WAITING" not in {t["state"] for t in rows}
    for n in (0, 1):  # the first two are kept, not re-run
        assert rows[n]["duration_s"] == first[n]["duration_s"] and rows[n]["value"] == first[n]["value"]
    assert rows[2]["preset"] == "coord"
    with open(tmp_path / "trials.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and all(row["compose"].startswith("plugattn.compose(channels, ") for row in table)
    assert all(parse_compose(row["compare_arg"]) == t["spec"]
               for row, t in zip(table, rows, strict=True))
    with pytest.raises(ValueError, match="another"):  # another recipe in the same folder
        search(data=tiny, recipe=Recipe(epochs=1, batch_size=16), out=tmp_path, trials=4, **KW)


@pytest.mark.parametrize("first", [1, 2])
def test_no_pruning_before_the_first_rung(first):
    from plugattn.experiments.search import _make_pruner

    def pruned_at(trial, value):  # the epoch at which a trial reporting `value` every epoch is pruned, or None
        for step in range(1, 7):
            trial.report(value, step)
            if trial.should_prune():
                return step
        return None

    for name in ("sh", "hyperband", "median"):
        # a fixed name: Hyperband assigns trials to brackets by a hash of the study name and trial number
        study = optuna.create_study(study_name="rungs", direction="maximize", pruner=_make_pruner(name, 6, first),
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(6):  # good trials that run to the end (asking every epoch, as a search does)
            t = study.ask()
            assert pruned_at(t, 0.9) is None
            study.tell(t, 0.9)
        bad = [pruned_at(study.ask(), 0.0) for _ in range(4)]
        assert None not in bad and min(bad) == first, (name, bad)


def test_min_epochs_is_checked(tmp_path, tiny):
    with pytest.raises(ValueError, match="min_epochs"):
        search(data=tiny, recipe=Recipe(epochs=1, batch_size=32), out=tmp_path, trials=1, min_epochs=2, **KW)


def test_budget_rejects_before_training(tmp_path, tiny):
    s = search(data=tiny, recipe=Recipe(epochs=1, batch_size=32), out=tmp_path, trials=1,
               budget={"max_params": 100}, **{**KW, "presets": ["se", "eca"]})
    rows = s["trials"]
    se, eca = rows[0], rows[1]
    assert se["preset"] == "se" and se["note"].startswith("over budget") and se["epochs"] == 0
    assert se["extra_params"] > 100 and eca["extra_params"] <= 100 and eca["state"] == "COMPLETE"
    assert len(rows) == 2  # the rejected point did not use up the one trial


def test_cli_search_with_retrain(tmp_path, capsys):
    argv = ["search", "--out", str(tmp_path), "--trials", "2", "--search-epochs", "1", "--presets", "se", "eca",
            "--val-per-class", "6", "--search-train-per-class", "0", "--train-per-class", "30", "--test-per-class",
            "8", "--epochs", "1", "--batch-size", "32", "--retrain", "1", "--seeds", "2", "--no-progress"]
    assert main(argv) == 0
    md = (tmp_path / "results.md").read_text()
    assert "| baseline |" in md and "plugattn.compose(channels" in md
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["seeds"] for r in res["rows"]] == [[0, 1], [0, 1]]
    assert (tmp_path / "pareto.md").is_file()
    assert main(["search", "--out", str(tmp_path), "--max-latency", "3"]) == 2  # relative only
    assert "max_latency" in capsys.readouterr().err


def test_best_points_take_the_front_first():
    from plugattn.experiments.search import best_points

    summary = {"scored": [5, 3, 7, 2], "front": {"extra_params": [2, 5]}}  # scored: best first; #2 cheap but weak
    assert best_points(summary, 3) == [5, 2, 3]
    assert best_points(summary, 9) == [5, 2, 3, 7]


def test_a_point_another_process_trained_is_reused(tmp_path, tiny, monkeypatch):
    import plugattn.experiments.search as search_mod

    channels = tuple(Recipe().widths)
    se, eca = (S.to_spec(S.PRESET_POINTS[n][0], channels) for n in ("se", "eca"))
    real, trained = search_mod.train_run, []

    def train_run(spec, *args, **kw):  # while this process trains its first point, another one finishes eca
        if not trained:
            other = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 'study.db'}")
            cost = {"extra_params": 9, "extra_flops": 9, "extra_latency_pct": 1.0}
            other.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"spec": eca, **cost}))
        trained.append(spec)
        return real(spec, *args, **kw)

    monkeypatch.setattr(search_mod, "train_run", train_run)
    search(data=tiny, recipe=Recipe(epochs=1, batch_size=32), out=tmp_path, trials=3, **KW)  # se, (eca), coord
    rows = {t["number"]: t for t in json.loads((tmp_path / "trials.json").read_text())}
    assert trained[0] is None and trained[1] == se  # the baseline (the front's reference line) comes first
    assert eca not in trained and len(trained) == 3  # eca is not re-trained: se, coord
    assert "Baseline (no attention)" in (tmp_path / "pareto.md").read_text()
    assert rows[1]["preset"] == "eca" and rows[1]["note"] == "same point as #3" and rows[1]["value"] == 0.5
