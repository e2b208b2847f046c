"""The columns training leaves out are explicit: named in one warning per run, recorded with their reason in the
data card and the model's preprocessing, and ignored in the rows a model predicts from (present or absent, whatever
their values), so rows of the training file itself can be scored. A preprocessing saved before the record still
loads. Data prep on tiny files and a linear module: no pipeline."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from automl.configs import load_config
from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
from automl.tasks.data_prep.preprocessing import SeriesPreprocessing, TabularPreprocessing, preprocessing_from_dict
from automl.tasks.registry.prediction import RegisteredModel, check_rows
from automl.tasks.registry.raw_model import predict_raw
from tests.helpers import make_series, write_config

TEXT_REASON = "text; series use numeric covariates only"


class _Records(logging.Handler):
    """The ``automl`` logger's records, whichever handlers the CLI set up on it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def automl_log():
    logger = logging.getLogger("automl")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _checked_and_prepared(config: Path, **job_changes):
    cfg = load_config(config)
    checked = load_and_check(cfg)
    job = dataclasses.replace(DataPrepJob.of(cfg), **job_changes)
    prepared, _ = prepare(checked.frame, job, checked.plan, checked.fingerprint)
    return checked.plan, prepared


def _forecaster(pre: SeriesPreprocessing) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(pre.lookback * len(pre.features), pre.horizon))


def test_a_text_column_a_series_drops_is_named_once_recorded_and_ignored_when_predicting(tmp_path, automl_log):
    path = tmp_path / "sales.csv"
    make_series(200).assign(notes=lambda f: np.where(f.index % 3 == 0, "promo", "calm")).to_csv(path, index=False)
    plan, prepared = _checked_and_prepared(write_config(tmp_path, path))
    warnings = [r.getMessage() for r in automl_log if r.levelno >= logging.WARNING]
    assert warnings == [f"data: dropped column 'notes' ({TEXT_REASON})"]
    assert plan.dropped == prepared.card["dropped_columns"] == {"notes": TEXT_REASON}
    pre = preprocessing_from_dict(json.loads(json.dumps(prepared.preprocessing)))  # as saved with the model
    assert isinstance(pre, SeriesPreprocessing) and pre.dropped == {"notes": TEXT_REASON}
    assert "notes" not in pre.columns

    rows = pd.read_csv(path).tail(30)  # rows of the training file, text column and all
    module = _forecaster(pre)
    expected = predict_raw(module, pre, rows.drop(columns="notes"), extra_allowed=False)
    for given in (rows, rows.assign(notes=1.5), rows.assign(notes=None)):
        pd.testing.assert_frame_equal(predict_raw(module, pre, given, extra_allowed=False), expected)
    model = RegisteredModel("models:/sales/1", "sales", "1", None, pre)
    check_rows(model, rows, rolling=True, path=path)  # automl predict's check takes the file's own rows

    _, refitted = _checked_and_prepared(write_config(tmp_path, path), refit=True)
    assert refitted.refit.preprocessing["dropped"] == {"notes": TEXT_REASON}  # the model registered after a refit


def test_a_boolean_covariate_a_series_trains_on_is_taken_when_predicting_from_the_same_file(tmp_path):
    """pandas counts True/False as numbers, so a series trains on a boolean covariate as 1/0: the rows of its own
    file (read back as booleans) are predicted from, not refused."""
    path = tmp_path / "sales.csv"
    make_series(200).assign(promo=lambda f: f.index % 4 == 0).to_csv(path, index=False)
    plan, prepared = _checked_and_prepared(write_config(tmp_path, path))
    pre = preprocessing_from_dict(json.loads(json.dumps(prepared.preprocessing)))
    assert "promo" in pre.features and not plan.dropped
    rows = pd.read_csv(path).tail(30)
    assert rows["promo"].dtype == bool
    module = _forecaster(pre)
    expected = predict_raw(module, pre, rows.assign(promo=rows["promo"].astype(float)), extra_allowed=False)
    pd.testing.assert_frame_equal(predict_raw(module, pre, rows, extra_allowed=False), expected)


def test_a_table_models_time_column_is_dropped_by_name_and_ignored_when_scoring(tmp_path, automl_log):
    """A table family (mlp) given a ``data.time_column`` reads rows, not their time: the column is left out, and
    said so, and rows to score may keep it."""
    rng = np.random.default_rng(0)
    path = tmp_path / "houses.csv"
    pd.DataFrame(
        {
            "day": pd.date_range("2001-01-01", periods=60, freq="D").strftime("%Y-%m-%d"),
            "size": rng.normal(50, 10, 60),
            "price": rng.normal(300, 50, 60),
        }
    ).to_csv(path, index=False)
    config = write_config(
        tmp_path,
        path,
        name="houses",
        model={"family": "mlp"},
        data={"path": str(path), "target": "price", "time_column": "day", "task": "regression"},
        search={"n_trials": 1, "epochs": 1, "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2}}},
    )
    reason = "data.time_column; a table model reads no time"
    plan, prepared = _checked_and_prepared(config)
    assert plan.dropped == prepared.card["dropped_columns"] == {"day": reason}
    assert [r.getMessage() for r in automl_log if r.levelno >= logging.WARNING] == [
        f"data: dropped column 'day' ({reason})"
    ]
    pre = preprocessing_from_dict(json.loads(json.dumps(prepared.preprocessing)))
    assert isinstance(pre, TabularPreprocessing) and pre.features == ["size"] and pre.dropped == {"day": reason}
    rows = pd.read_csv(path).drop(columns="price").head(5)
    assert pre.validate(rows, extra_allowed=False).columns.tolist() == ["size"]

    older = {k: v for k, v in prepared.preprocessing.items() if k != "dropped"}  # saved before the record
    assert preprocessing_from_dict(older).dropped == {}


def test_a_series_preprocessing_saved_before_dropped_columns_and_regular_steps_still_loads(tmp_path):
    path = tmp_path / "sales.csv"
    make_series(200).to_csv(path, index=False)
    _, prepared = _checked_and_prepared(write_config(tmp_path, path))
    older = {k: v for k, v in prepared.preprocessing.items() if k not in ("dropped", "regular")}
    pre = preprocessing_from_dict(older)
    assert pre.dropped == {} and pre.regular is False and pre.freq == "W-SAT"
    history = pd.read_csv(path).tail(30)
    assert len(predict_raw(_forecaster(pre), pre, history, extra_allowed=False)) == pre.horizon
