"""The shared trainer: learns a simple function, stops early, is reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest

from automl.models import ModelShape, TrainSettings, build_model, fit, get_family, predict


def _linear_task(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.05 * rng.standard_normal(n)).astype(np.float32).reshape(-1, 1)
    return (X[:300], y[:300]), (X[300:], y[300:])


def test_mlp_learns_a_linear_function():
    train, val = _linear_task()
    family = get_family("mlp")
    model = build_model(family, ModelShape(5, 1), {**family.defaults, "dropout": 0.0}, seed=0)
    result = fit(model, train, val, TrainSettings(epochs=60, lr=1e-2, batch_size=32))
    baseline = float(np.mean((val[1] - train[1].mean()) ** 2))
    assert result.best_val_loss < 0.05 * baseline
    assert result.val_loss[-1] < result.val_loss[0]
    assert float(np.mean((predict(model, val[0]) - val[1]) ** 2)) == pytest.approx(result.best_val_loss, rel=1e-4)


def test_lstm_learns_to_continue_a_sine_wave():
    t = np.arange(600)
    series = np.sin(2 * np.pi * t / 25).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(series, 21).copy()
    X, y = windows[:, :20, None], windows[:, 20:]
    family = get_family("lstm")
    model = build_model(family, ModelShape(1, 1, 20), family.defaults, seed=0)
    result = fit(model, (X[:450], y[:450]), (X[450:], y[450:]), TrainSettings(epochs=15, lr=5e-3, batch_size=32))
    naive = float(np.mean((X[450:, -1, 0] - y[450:, 0]) ** 2))
    assert result.best_val_loss < 0.2 * naive


def test_early_stopping_restores_the_best_epoch_and_is_seeded():
    train, val = _linear_task()
    family = get_family("mlp")
    runs = []
    for _ in range(2):
        model = build_model(family, ModelShape(5, 1), family.defaults, seed=3)
        runs.append(fit(model, train, val, TrainSettings(epochs=200, lr=5e-2, batch_size=16, patience=3, seed=3)))
    first, second = runs
    assert first.stopped_early and len(first.val_loss) < 200
    assert first.best_val_loss == min(first.val_loss)
    assert len(first.val_loss) - 1 - first.best_epoch == 3
    assert first.val_loss == second.val_loss  # same seed, same curve


def test_should_stop_ends_training_at_the_next_batch():
    from automl.models.trainer import TrainingStopped

    family = get_family("mlp")
    model = build_model(family, ModelShape(n_features=2, n_outputs=1), family.defaults, seed=0)
    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    asked = []
    with pytest.raises(TrainingStopped, match="stopped in epoch 1 of 50"):
        fit(
            model,
            (x, x[:, :1]),
            (x, x[:, :1]),
            TrainSettings(epochs=50, lr=1e-2, batch_size=8),
            should_stop=lambda: asked.append(1) or len(asked) > 2,
        )
    assert len(asked) == 3  # asked before each batch, stopped at the third


def test_diverging_training_reports_nan():
    train, val = _linear_task()
    family = get_family("mlp")
    model = build_model(family, ModelShape(5, 1), family.defaults, seed=0)
    result = fit(model, train, val, TrainSettings(epochs=5, lr=1e12, batch_size=32, grad_clip=None, optimizer="sgd"))
    assert math.isnan(result.best_val_loss)


def test_a_time_budget_ends_training_with_the_best_epoch_so_far():
    """``stop_after`` (a run's budget) ends training between batches without failing: the model keeps its best
    complete epoch; with no time at all it still trains one epoch, so there is always a validated model."""
    train, val = _linear_task(n=4000)
    family = get_family("mlp")
    train = (np.repeat(train[0], 20, axis=0), np.repeat(train[1], 20, axis=0))  # slow enough epochs
    model = build_model(family, ModelShape(5, 1), family.defaults, seed=0)
    full = fit(model, train, val, TrainSettings(epochs=1, lr=1e-3, batch_size=16))
    epoch = full.seconds
    model = build_model(family, ModelShape(5, 1), family.defaults, seed=0)
    cut = fit(model, train, val, TrainSettings(epochs=50, lr=1e-3, batch_size=16, stop_after=2.5 * epoch))
    assert cut.out_of_time and not cut.stopped_early
    assert 1 <= len(cut.val_loss) < 50 and math.isfinite(cut.best_val_loss)
    assert cut.best_val_loss == min(cut.val_loss)
    assert float(np.mean((predict(model, val[0]) - val[1]) ** 2)) == pytest.approx(cut.best_val_loss, rel=1e-4)
    model = build_model(family, ModelShape(5, 1), family.defaults, seed=0)
    none_left = fit(model, train, val, TrainSettings(epochs=5, lr=1e-3, batch_size=16, stop_after=0.0))
    assert none_left.out_of_time and len(none_left.val_loss) == 1 and math.isfinite(none_left.best_val_loss)
