"""The naive baselines on hand-made series: the seasonal-naive forecast is the value a whole number of seasons
before the target, the latest at or before the window's origin, also when the season is longer than the lookback
or shorter than the horizon; with a season of 1 it is the naive forecast."""

from __future__ import annotations

import numpy as np
import pytest

from automl.tasks.data_prep.prepared import PreparedData, Split
from automl.tasks.data_prep.preprocessing import make_windows
from automl.tasks.final_train.baselines import (
    NAIVE,
    SEASONAL_NAIVE,
    baseline_predictions,
    naive_predictions,
    seasonal_naive_predictions,
)

LOOKBACK, FIRST_TEST_ROW = 8, 60


def _series(values: np.ndarray, season: int, horizon: int) -> PreparedData:
    """Test windows from row ``FIRST_TEST_ROW`` on, in original units (mean 0, std 1)."""
    X, y = make_windows(values[:, None], LOOKBACK, horizon)
    first = np.arange(len(X)) + LOOKBACK
    test = Split(X[first >= FIRST_TEST_ROW], y[first >= FIRST_TEST_ROW])
    return PreparedData(
        kind="series",
        task="regression",
        train=test,
        val=test,
        test=test,
        feature_names=["y"],
        n_outputs=horizon,
        lookback=LOOKBACK,
        target="y",
        season=season,
        target_history=values,
        test_first_rows=first[first >= FIRST_TEST_ROW],
    )


def _one_season_back(values: np.ndarray, first_row: int, step: int, season: int) -> float:
    """The latest value at or before the origin (``first_row - 1``) in the target's phase of the season."""
    target_row = first_row + step
    return next(values[k] for k in range(first_row - 1, -1, -1) if (target_row - k) % season == 0)


@pytest.mark.parametrize(
    ("season", "horizon"),
    [(4, 2), (20, 3), (4, 6), (20, 25)],  # shorter and longer than the lookback (8); horizons past the season
)
def test_seasonal_naive_is_the_value_one_season_back(season, horizon):
    values = np.random.default_rng(season).normal(size=120)
    prepared = _series(values, season, horizon)
    predicted = seasonal_naive_predictions(prepared)
    assert predicted.shape == (len(prepared.test), horizon)
    for i, first_row in enumerate(prepared.test_first_rows):
        for step in range(horizon):
            assert predicted[i, step] == _one_season_back(values, first_row, step, season)


def test_seasonal_naive_by_hand():
    values = np.arange(120.0)  # each value is its row
    first_window = seasonal_naive_predictions(_series(values, season=4, horizon=6))[0]
    assert first_window.tolist() == [56, 57, 58, 59, 56, 57]  # targets 60..65 from the last season before row 60
    assert seasonal_naive_predictions(_series(values, season=20, horizon=2))[0].tolist() == [40, 41]


def test_a_season_of_one_is_the_naive_forecast_and_only_asked_baselines_are_predicted():
    prepared = _series(np.random.default_rng(0).normal(size=120), season=1, horizon=3)
    np.testing.assert_allclose(seasonal_naive_predictions(prepared), naive_predictions(prepared))
    assert set(baseline_predictions(prepared, ["default_config", NAIVE, SEASONAL_NAIVE])) == {NAIVE, SEASONAL_NAIVE}
    assert set(baseline_predictions(prepared, ["default_config", NAIVE])) == {NAIVE}
