"""A series model forecasts from a history at its training's cadence: a history at another step (every other week,
hourly rows for a weekly model, an off-grid row) is refused with one line naming the time column and both steps,
gaps of whole steps pass as they did in training, and forecasts are the origin plus whole steps (calendar months
for a monthly model), never snapped to the training's anchor day. Unit level: a fitted preprocessing and a linear
module, no pipeline."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from automl.configs import DataError
from automl.tasks.data_prep.preprocessing import RawInputError, SeriesPreprocessing
from automl.tasks.registry.prediction import RegisteredModel, check_rows
from automl.tasks.registry.raw_model import predict_raw

LOOKBACK, HORIZON = 4, 2


def _model(times: pd.Series, time_column: str = "week") -> tuple[SeriesPreprocessing, torch.nn.Module]:
    """A preprocessing fitted on ``times`` (a target only) and a linear forecaster of its shape."""
    values = pd.DataFrame({"sales": np.linspace(10.0, 20.0, len(times))})
    pre = SeriesPreprocessing.fit(times, values, len(times), time_column, LOOKBACK, HORIZON)
    torch.manual_seed(0)
    return pre, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(LOOKBACK, HORIZON))


def _history(times, time_column: str = "week") -> pd.DataFrame:
    """Rows to forecast from, times as a file holds them (text)."""
    times = pd.Series(times)
    shown = times.astype(str) if pd.api.types.is_datetime64_any_dtype(times) else times
    return pd.DataFrame({time_column: shown.to_numpy(), "sales": np.linspace(15.0, 16.0, len(times))})


def _weekly() -> tuple[SeriesPreprocessing, torch.nn.Module]:
    return _model(pd.Series(pd.date_range("2001-01-06", periods=80, freq="W-SAT")))  # Saturdays, as W-SAT infers


@pytest.mark.parametrize(
    ("times", "message"),
    [
        (
            pd.date_range("2003-01-04", periods=10, freq="2W-SAT"),
            "column 'week': rows are 14 days apart; the model was trained on steps of 7 days",
        ),
        (
            pd.date_range("2003-01-04", periods=48, freq="h"),
            "column 'week': rows are 1 hour apart; the model was trained on steps of 7 days",
        ),
        (
            [*pd.date_range("2003-01-04", periods=8, freq="W-SAT"), pd.Timestamp("2003-03-03")],
            "column 'week': 2003-02-22 to 2003-03-03 is 9 days, not a whole number of the model's steps of 7 days",
        ),
    ],
    ids=["every other week", "hourly", "an off-grid row"],
)
def test_a_history_at_another_cadence_is_refused_naming_the_time_column_and_both_steps(times, message):
    pre, module = _weekly()
    rows = _history(times)
    with pytest.raises(RawInputError, match=f"^{re.escape(message)}$"):
        predict_raw(module, pre, rows)  # the pyfunc model's path
    model = RegisteredModel("models:/weekly/1", "weekly", "1", None, pre)
    with pytest.raises(DataError, match=f"^recent.csv: {re.escape(message)}$"):
        check_rows(model, rows, rolling=False, path=Path("recent.csv"))  # automl predict's, before it scores


def test_a_sunday_ending_weekly_history_with_gaps_is_forecast_for_the_origin_plus_whole_weeks():
    """The training's W-SAT anchors its weeks on Saturdays; a history of Sundays is forecast on Sundays, and its
    missing weeks (gaps of whole steps) pass, as they did in training."""
    pre, module = _weekly()
    sundays = pd.date_range("2003-01-05", periods=12, freq="W-SUN").delete([3, 7, 8])
    forecast = predict_raw(module, pre, _history(sundays), extra_allowed=False)
    origin = sundays[-1]
    assert forecast["origin"].tolist() == [origin, origin]
    assert forecast["week"].tolist() == [origin + pd.Timedelta(days=7), origin + pd.Timedelta(days=14)]
    assert forecast["step"].tolist() == [1, 2]


def test_monthly_series_are_forecast_in_calendar_months_and_refuse_another_step():
    pre, module = _model(pd.Series(pd.date_range("2001-01-01", periods=48, freq="MS")), "month")
    months = pd.date_range("2005-01-01", periods=12, freq="MS").delete(5)  # a missing month is a gap of one step
    forecast = predict_raw(module, pre, _history(months, "month"))
    assert forecast["month"].tolist() == [pd.Timestamp("2006-01-01"), pd.Timestamp("2006-02-01")]
    fifteenths = months + pd.Timedelta(days=14)  # monthly on another day: months added, not snapped to the 1st
    forecast = predict_raw(module, pre, _history(fifteenths, "month"))
    assert forecast["month"].tolist() == [pd.Timestamp("2006-01-15"), pd.Timestamp("2006-02-15")]
    every_other = pd.date_range("2005-01-01", periods=12, freq="2MS")
    with pytest.raises(RawInputError, match=r"^column 'month': rows are 2 months apart; .* steps of 1 month$"):
        predict_raw(module, pre, _history(every_other, "month"))
    with pytest.raises(RawInputError, match=r"^column 'month': rows are 1 day apart; .* steps of 1 month$"):
        predict_raw(module, pre, _history(pd.date_range("2005-01-01", periods=40, freq="D"), "month"))

    pre, module = _model(pd.Series(pd.date_range("2001-01-31", periods=48, freq="ME")), "month")
    history = pd.date_range("2003-05-31", periods=10, freq="ME")  # ends on Feb 29, 2004: a month end stays one
    forecast = predict_raw(module, pre, _history(history, "month"))
    assert forecast["month"].tolist() == [pd.Timestamp("2004-03-31"), pd.Timestamp("2004-04-30")]


def test_numeric_times_keep_their_step():
    pre, module = _model(pd.Series(np.arange(100)), "t")
    forecast = predict_raw(module, pre, _history(np.arange(50, 70).tolist(), "t"))
    assert forecast["t"].tolist() == [70, 71]
    with pytest.raises(RawInputError, match=r"^column 't': rows are 2 apart; the model was trained on steps of 1$"):
        predict_raw(module, pre, _history(np.arange(50, 90, 2).tolist(), "t"))


def test_a_model_of_irregular_times_takes_its_own_rows_and_refuses_twice_their_interval():
    """Irregular training times have no exact step: rows of the same process pass, a history at twice (or half)
    the typical interval does not."""
    hours = np.random.default_rng(0).integers(1, 6, size=300).cumsum()
    times = pd.Series(pd.Timestamp("2001-01-01") + pd.to_timedelta(hours, unit="h"))
    pre, module = _model(times, "seen")
    assert pre.freq is None and not pre.regular
    assert len(predict_raw(module, pre, _history(times.tail(40), "seen"))) == HORIZON
    with pytest.raises(RawInputError, match=r"^column 'seen': rows are .* apart; the model was trained on steps of"):
        predict_raw(module, pre, _history(times.iloc[::2].tail(40), "seen"))


@pytest.mark.parametrize(
    ("times", "problem"),
    [
        ([False, True, False, True], "must hold dates/times or numbers (got booleans)"),
        ([0.0, 1.0, 2.0, float("inf")], "values must be finite"),
        ([0.0, 1.0, 2.0, 1e300], "values must be finite"),
    ],
)
def test_booleans_and_numbers_that_are_not_finite_are_not_times(times, problem):
    with pytest.raises(RawInputError, match=re.escape(problem)):
        SeriesPreprocessing.parse_times(pd.Series(times), "t")
