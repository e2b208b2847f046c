"""The learning-rate range test: its suggestion against a learning rate known to be good, divergence, the batch
size on short data, the narrowing of the search space's lr, and ``automl lr-find`` with its MLflow run."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from torch import nn

from automl.cli import main
from automl.configs import CategoricalParam, FloatParam, IntParam, load_config
from automl.models import FAMILIES, LRRangeResult, TrainSettings, fit, lr_range_test
from automl.models.lr_finder import _suggest
from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
from automl.tasks.runtime.state import local_state
from automl.tasks.search_stage.lr_range import find_lr_range, narrow_lr, narrow_space, narrowed_by
from automl.tasks.tracking.runs import configure_mlflow

CPU = torch.device("cpu")
LOG_SPACE = FloatParam(type="float", low=1e-4, high=1e-1, log=True)


def _regression(rows: int = 3200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-scaled linear data: standard-normal features, a unit-scale target with a little noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 8)).astype(np.float32)
    y = x @ rng.standard_normal(8).astype(np.float32) + 0.1 * rng.standard_normal(rows).astype(np.float32)
    return x, y[:, None]


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(8, 1)


def test_the_suggestion_is_within_a_decade_of_the_best_fixed_learning_rate():
    x, y = _regression()
    settings = TrainSettings(epochs=1, lr=1e-3, batch_size=32, seed=0)  # Adam, MSE, gradient clipping 1.0
    result = lr_range_test(_linear(), (x, y), settings, device=CPU)

    # the known good lr: of a quarter-decade grid, the one with the lowest loss on all rows after the same 50 steps
    # (one epoch of 1600 rows) from the same weights
    grid = 10.0 ** np.arange(-5, 0.01, 0.25)
    losses = [
        fit(_linear(), (x[:1600], y[:1600]), (x, y), TrainSettings(epochs=1, lr=lr, batch_size=32), CPU).best_val_loss
        for lr in grid
    ]
    good = grid[int(np.nanargmin(losses))]
    assert result.steps == 100 and result.batch_size == 32 and not result.diverged
    assert abs(math.log10(result.suggestion) - math.log10(good)) <= 1, (result.suggestion, good)


def test_a_diverging_loss_stops_the_test_early_and_the_weights_are_restored():
    x, y = _regression()
    model = _linear()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = TrainSettings(epochs=1, lr=1e-3, batch_size=32, optimizer="sgd", grad_clip=None, seed=0)
    result = lr_range_test(model, (x, y), settings, max_steps=100, device=CPU)
    assert result.diverged and result.steps < 100 and result.lrs[-1] < 10.0
    assert result.smoothed[-1] > 4 * min(result.smoothed[20:-1])  # the first 20 steps are the smoothing's warm-up
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == result.steps
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("rows", "batch_size", "steps"),
    [(6400, 64, 100), (4000, 64, 63), (300, 64, 100), (40, 64, 40)],
    ids=["enough batches", "enough for the curve", "shrunk", "one row per batch"],
)
def test_one_epoch_with_too_few_batches_runs_smaller_batches(rows, batch_size, steps):
    x, y = _regression(rows)
    settings = TrainSettings(epochs=1, lr=1e-3, batch_size=batch_size, seed=0)
    result = lr_range_test(_linear(), (x, y), settings, device=CPU)
    expected = batch_size if rows // batch_size >= 50 else max(1, rows // 100)
    assert (result.batch_size, result.steps) == (expected, steps)
    assert math.isclose(result.lrs[0], 1e-7)
    assert result.diverged or math.isclose(result.lrs[-1], 10.0)


def test_the_valley_rule_suggests_half_way_down_the_descent_and_a_flat_curve_is_not_clear():
    """fastai's valley on a made curve: flat, a long descent from step 40 to 80, then a rise; and a flat, noisy curve
    (what a short test on a hard series gives) that shows no clear descent, so the search keeps its bounds."""
    lrs = list(np.geomspace(1e-7, 10, 100))
    steps = np.arange(100)
    valley = np.where(steps < 40, 1.0, np.where(steps <= 80, 1.0 - 0.5 * (steps - 40) / 40, 0.5 + 0.2 * (steps - 80)))
    suggestion, clear = _suggest(lrs, list(valley))
    index = lrs.index(suggestion)
    assert clear and 55 <= index <= 65  # half way down the descent over steps 40..80
    noisy = list(1.0 + 0.01 * np.random.default_rng(0).standard_normal(100))
    _, flat_clear = _suggest(lrs, noisy)
    assert not flat_clear
    flat = LRRangeResult(lrs, noisy, noisy, 1e-5, False, 100, 27, clear=False)
    space = {"lr": LOG_SPACE, "hidden_size": IntParam(type="int", low=8, high=16)}
    kept, note = narrowed_by(space, flat)
    assert kept == space and "no clear descent" in note
    narrowed, _ = narrowed_by(space, LRRangeResult(lrs, noisy, noisy, 1e-3, False, 100, 27, clear=True))
    assert (narrowed["lr"].low, narrowed["lr"].high) == pytest.approx((1e-4, 3e-3))


def test_narrow_lr_keeps_a_tenth_to_three_times_the_suggestion():
    spec, note = narrow_lr(LOG_SPACE, 3e-3)
    assert (spec.low, spec.high, spec.log, spec.step) == (pytest.approx(3e-4), pytest.approx(9e-3), True, None)
    assert note.startswith("lr: [0.0001, 0.1] narrowed to [0.0003, 0.009]")


@pytest.mark.parametrize(
    ("suggestion", "low", "high"),
    [(5e-4, 1e-4, 1.5e-3), (0.1, 0.01, 0.1), (0.4, 0.04, 0.1)],
    ids=["low end clipped", "high end clipped", "mostly above"],
)
def test_narrow_lr_clips_to_the_configured_bounds(suggestion, low, high):
    spec, _ = narrow_lr(LOG_SPACE, suggestion)
    assert (spec.low, spec.high) == (pytest.approx(low), pytest.approx(high))


@pytest.mark.parametrize("suggestion", [5.0, 1e-6, 5e-5], ids=["far above", "far below", "a sliver left"])
def test_narrow_lr_keeps_the_configured_bounds_when_the_suggestion_is_far_outside(suggestion):
    spec, note = narrow_lr(LOG_SPACE, suggestion)
    assert spec == LOG_SPACE
    assert "too far outside the configured [0.0001, 0.1]" in note and "\n" not in note


def test_narrow_lr_on_a_grid_moves_the_bounds_onto_it():
    grid = FloatParam(type="float", low=0.001, high=0.02, step=0.001)
    spec, _ = narrow_lr(grid, 2.5e-3)
    assert (spec.low, spec.high, spec.step) == (pytest.approx(0.001), pytest.approx(0.007), 0.001)


def test_narrow_space_replaces_only_lr():
    space = {
        "hidden_size": IntParam(type="int", low=8, high=16),
        "lr": LOG_SPACE,
        "batch_size": CategoricalParam(type="categorical", choices=[16, 32]),
    }
    narrowed, note = narrow_space(space, 3e-3)
    assert list(narrowed) == list(space)
    assert narrowed["hidden_size"] is space["hidden_size"] and narrowed["batch_size"] is space["batch_size"]
    assert (narrowed["lr"].low, narrowed["lr"].high) == (pytest.approx(3e-4), pytest.approx(9e-3))
    assert space["lr"] is LOG_SPACE  # the configured space is not changed
    chosen = {**space, "lr": CategoricalParam(type="categorical", choices=[1e-3, 1e-2])}
    unchanged, note = narrow_space(chosen, 3e-3)
    assert unchanged == chosen and "categorical" in note


def _tiny_config(folder: Path, **search) -> Path:
    """A tabular regression config for the mlp family: 1,000 rows of ``_regression`` data (700 to train on)."""
    x, y = _regression(1000)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(y=y[:, 0])
    frame.to_csv(folder / "rows.csv", index=False)
    config = {
        "name": "tiny_mlp",
        "seed": 3,
        "model": {"family": "mlp", "params": {"num_layers": 1}},
        "data": {"path": str(folder / "rows.csv"), "target": "y", "task": "regression"},
        "search": {"n_trials": 2, "epochs": 1, **search},
    }
    path = folder / "tiny_mlp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_lr_find_prints_the_suggestion_saves_the_plot_and_logs_the_run(home, tmp_path, capsys):
    config = _tiny_config(tmp_path)
    assert main(["lr-find", str(config), "--param", "hidden_size=8"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2, out
    found = re.fullmatch(r"suggested lr: (\S+) \(in the valley of the smoothed loss; (\d+) steps, .*\)", out[0])
    assert found, out[0]
    plot = home / "lr_find" / "tiny_mlp" / "lr_range.png"
    assert out[1] == f"plot: {plot}" and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny_mlp")
    [run] = client.search_runs([experiment.experiment_id], "attributes.run_name = 'lr_find'")
    assert run.data.metrics["suggested_lr"] == pytest.approx(float(found[1]), rel=5e-3)
    assert run.data.params["model_family"] == "mlp" and run.data.params["hidden_size"] == "8"
    assert (run.data.params["num_layers"], run.data.params["lr_find_batch_size"]) == ("1", "7")  # 700 rows / 100
    assert run.data.params["lr_find_steps"] == found[2]
    assert len(client.get_metric_history(run.info.run_id, "lr_find_loss")) == int(found[2])
    assert "lr_range.png" in [a.path for a in client.list_artifacts(run.info.run_id)]


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("hiden_size=8", "--param hiden_size: not a parameter of mlp"),
        ("lr=20", "--param lr: 20 is out of range"),
        ("hidden_size=many", "--param hidden_size: 'many' is not a number"),
    ],
    ids=["unknown name", "out of range", "not a number"],
)
def test_lr_find_refuses_a_bad_param_in_one_line_before_mlflow(home, tmp_path, capsys, param, message):
    config = _tiny_config(tmp_path)
    assert main(["lr-find", str(config), "--param", param]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert not home.exists()  # no state folder: no MLflow store, no run


def test_search_lr_range_auto_narrows_the_space_and_logs_into_the_search_run(home, tmp_path):
    lr = {"type": "float", "low": 1e-5, "high": 1.0, "log": True}
    cfg = load_config(
        _tiny_config(tmp_path, lr_range="auto", space={"lr": lr, "dropout": FAMILIES["mlp"].default_space["dropout"]})
    )
    checked = load_and_check(cfg)
    prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan)
    job = SimpleNamespace(search=cfg.search, model=cfg.model, training=cfg.training, seed=cfg.seed)
    narrowing = find_lr_range(job, prepared)
    configured, lr, suggestion = cfg.search.space["lr"], narrowing.space["lr"], narrowing.result.suggestion
    assert (lr.low, lr.high) == (pytest.approx(max(1e-5, suggestion / 10)), pytest.approx(min(1.0, suggestion * 3)))
    assert (lr.low, lr.high) != (configured.low, configured.high), narrowing.note
    assert {k: v for k, v in narrowing.space.items() if k != "lr"} == {
        k: v for k, v in cfg.search.space.items() if k != "lr"
    }

    configure_mlflow(local_state())
    with mlflow.start_run(run_name="search") as run:
        narrowing.log()
    logged = MlflowClient().get_run(run.info.run_id).data
    assert logged.metrics["lr_range_suggestion"] == pytest.approx(suggestion)
    assert float(logged.params["lr_range_low"]) == pytest.approx(lr.low)
    assert logged.tags["automl.lr_range"] == narrowing.note
    assert "plots/lr_range.png" in [a.path for a in MlflowClient().list_artifacts(run.info.run_id, "plots")]

    # a resumed search: the stopped attempt's test is reused from its run (its bounds exactly), not run again
    record = {**logged.params, **logged.tags}
    resumed = find_lr_range(job, prepared, record)
    assert resumed.result is None and resumed.space["lr"] == lr and resumed.note == narrowing.note
    with mlflow.start_run(run_id=run.info.run_id):
        resumed.log()
    history = MlflowClient().get_metric_history(run.info.run_id, "lr_range_suggestion")
    assert len(history) == 1  # nothing logged twice
