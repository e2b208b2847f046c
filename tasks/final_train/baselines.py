"""The naive baselines: what a model must beat to be worth anything (the last observed value for a series, or the
value one season back; the train mean, or the class frequencies, for a table). The other baseline, the default
config, is trained as the tuned config is (``tasks.final_train.training``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from automl.tasks.data_prep.prepared import PreparedData

NAIVE = "naive"  # its name in final.baselines
SEASONAL_NAIVE = "seasonal_naive"  # its name in final.baselines (series only)


def naive_predictions(prepared: PreparedData) -> np.ndarray:
    """Series: the last observed value for every horizon step; tabular: the train mean or class frequencies."""
    n = len(prepared.test)
    if prepared.kind == "series":
        last = prepared.test.X[:, -1, 0:1]  # the target is the first input column
        return prepared.to_original_units(np.repeat(last, prepared.n_outputs, axis=1))
    if prepared.task == "classification":
        counts = np.bincount(prepared.train.y, minlength=prepared.n_outputs).astype(float)
        return np.tile(counts / counts.sum(), (n, 1))
    return np.full((n, 1), prepared.to_original_units(prepared.train.y).mean())


def seasonal_naive_predictions(prepared: PreparedData) -> np.ndarray:
    """Series: for each test window and horizon step j, the value a whole number of seasons m before the target's
    row r, the latest one at or before the window's origin: y[r - m * ceil((j + 1) / m)] (m = 1 is the naive
    forecast).

    Example:
        >>> seasonal_naive_predictions(prepared)  # prepared.season 7: a daily series' value a week before
    """
    if prepared.target_history is None or prepared.test_first_rows is None:
        raise ValueError("the seasonal-naive baseline forecasts a series; this data is a table")
    m = prepared.season
    steps = np.arange(prepared.n_outputs)
    lags = m * ((steps + m) // m)  # m * ceil((j + 1) / m): whole seasons back to the origin or before
    rows = prepared.test_first_rows[:, None] + steps[None, :] - lags[None, :]
    return prepared.target_history[rows]


_PREDICTORS = {NAIVE: naive_predictions, SEASONAL_NAIVE: seasonal_naive_predictions}


def baseline_predictions(prepared: PreparedData, baselines: Iterable[str]) -> dict[str, np.ndarray]:
    """The test predictions of the naive baselines in ``baselines`` (``final.baselines``), by name; the
    default-config baseline is trained, not predicted here."""
    return {name: _PREDICTORS[name](prepared) for name in baselines if name in _PREDICTORS}
