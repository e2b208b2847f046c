"""The champion decision: the current champion and the new model scored on the same rows (the new run's test rows,
through each one's raw-data model), and ``registry.promote``'s rule.

Each run's own test metric is measured on its own split; two runs with other seeds, or a nightly run on grown data,
share few test rows, so their own metrics do not compare. The champion is scored here on the challenger's raw test
rows instead (a series: the forecasts both models make for the same target times and steps), and both metrics are
computed from the predictions on those rows alone.

Example:
    >>> compared = compare_on_rows(champion, challenger_rows, prepared.raw_test_input, "regression", "rmse")
    >>> compared.rows, compared.challenger_metric < compared.champion_metric
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from automl.tasks.final_train.metrics import PRIMARY_METRIC
from automl.tasks.registry.raw_model import PROBA_PREFIX

ROLLING_KEYS = ("step",)  # besides the time column: a series' forecast is keyed by its target time and step


@dataclass(frozen=True)
class Comparison:
    """The primary metric of both models on the ``rows`` they were both scored on."""

    metric: str
    champion_metric: float
    challenger_metric: float
    rows: int


def compare_on_rows(
    champion: Any, challenger_rows: pd.DataFrame, raw_input: pd.DataFrame, task: str, time_column: str | None
) -> Comparison:
    """Score ``champion`` (a ``tasks.registry.prediction.RegisteredModel``) on ``raw_input``, the challenger's raw
    test rows, and compare it with ``challenger_rows`` (the challenger's test predictions from the same rows, with
    ``actual``). Raises ``ValueError`` naming why when the champion cannot score them (other columns, another
    cadence, no forecast in common)."""
    metric, _ = PRIMARY_METRIC[task]
    series = time_column is not None
    try:
        champion.preprocessing.validate(raw_input, rolling=series)  # a missing column or another cadence, named
        theirs = champion.pyfunc.predict(raw_input, params={"rolling": True} if series else None)
    except Exception as exc:  # RawInputError from the check above, or whatever else keeps an old model from scoring
        raise ValueError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None
    if series:
        keys = [time_column, *ROLLING_KEYS]
        if any(key not in theirs.columns for key in keys):
            raise ValueError(f"its forecasts have no {time_column!r} column")
        both = challenger_rows[[*keys, "prediction", "actual"]].merge(
            theirs[[*keys, "prediction"]].rename(columns={"prediction": "champion"}), on=keys
        )
        if both.empty:
            raise ValueError("it forecasts none of the test rows' target times and steps")
        ours_pred, their_pred, actual = both["prediction"], both["champion"], both["actual"]
    else:
        if len(theirs) != len(challenger_rows):
            raise ValueError(f"it gave {len(theirs)} predictions for {len(challenger_rows)} rows")
        ours_pred, their_pred, actual = challenger_rows["prediction"], theirs["prediction"], challenger_rows["actual"]
    return Comparison(
        metric,
        _metric(task, actual, their_pred, challenger_rows),
        _metric(task, actual, ours_pred, challenger_rows),
        len(actual),
    )


def _metric(task: str, actual: pd.Series, predicted: pd.Series, challenger_rows: pd.DataFrame) -> float:
    """The primary metric (``PRIMARY_METRIC``) of ``predicted`` against ``actual``: RMSE, or macro F1 over the
    challenger's classes (a class the champion never predicts counts as missed)."""
    if task == "classification":
        from sklearn.metrics import f1_score

        classes = [_label(c.removeprefix(PROBA_PREFIX)) for c in challenger_rows.columns if c.startswith(PROBA_PREFIX)]
        labels = [_label(v) for v in actual]
        return float(f1_score(labels, [_label(v) for v in predicted], average="macro", labels=classes, zero_division=0))
    error = np.asarray(predicted, dtype=float) - np.asarray(actual, dtype=float)
    value = float(np.sqrt(np.mean(error**2)))
    return value if math.isfinite(value) else math.inf  # a champion that forecasts NaN loses


def challenger_metric(challenger_rows: pd.DataFrame, task: str) -> float:
    """The primary metric of the challenger's own test predictions (``challenger_rows``, with ``actual``)."""
    return _metric(task, challenger_rows["actual"], challenger_rows["prediction"], challenger_rows)


def _label(value: Any) -> str:
    """A class label as text that reads the same however a file spelt it: 1, 1.0 and "1.0" are "1" (a label column
    read as floats one night, because of a missing value, is the same classes as the integers the champion saw)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if math.isfinite(number) and number.is_integer() else str(value)


def better(task: str, comparison: Comparison) -> bool:
    """Whether the challenger scored strictly better than the champion on the shared rows."""
    _, lower_is_better = PRIMARY_METRIC[task]
    ours, theirs = comparison.challenger_metric, comparison.champion_metric
    return ours < theirs if lower_is_better else ours > theirs
