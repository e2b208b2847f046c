"""The champion decision without a pipeline: the current champion is scored on the new version's test rows through
its raw-data model, both metrics and the row count land on the new version's tags, and ``registry.promote`` decides
(better, always, never), also when the champion cannot score those rows. The end-to-end case (two pipeline runs
with other seeds on one table) is in test_model_use.py."""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pytest
import torch

from automl.models import ModelShape, build_model, get_family
from automl.tasks.data_prep.preprocessing import preprocessing_from_dict
from automl.tasks.final_train import evaluation
from automl.tasks.final_train.registration import register
from automl.tasks.registry.champion import champion_history
from automl.tasks.registry.raw_model import log_raw_model, predict_raw
from automl.tasks.tracking.catalog import PROMOTION_PREFIX
from automl.tasks.tracking.runs import PipelineRun
from tests.test_raw_model import _prepared_table


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default experiment writes ./mlruns
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _rmse(predicted, actual) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, float) - np.asarray(actual, float)) ** 2)))


def _register(prepared, model, promote="better"):
    """One pipeline run registering ``model`` as the next version of ``houses``: (note, promotion, rows scored)."""
    pre = preprocessing_from_dict(prepared.preprocessing)
    rows = evaluation.raw_test_predictions(model, pre, prepared, evaluation.test_predictions(model, prepared))
    with mlflow.start_run() as run:
        info = log_raw_model(model, pre, prepared.raw_test_input)
        pipeline = PipelineRun(run.info.run_id, run.info.experiment_id, "houses", "study")
        metrics = {"rmse": _rmse(rows["prediction"], rows["actual"])}
        _, _, note, promotion = register(info.model_uri, "houses", prepared, metrics, pipeline, rows, promote)
    return note, promotion


def _model(prepared, seed: int):
    family = get_family("mlp")
    return build_model(family, ModelShape(prepared.n_features, prepared.n_outputs), family.defaults, seed=seed)


def test_the_champion_is_scored_on_the_challengers_test_rows_and_both_metrics_are_recorded(tmp_path):
    prepared, first = _prepared_table(tmp_path)
    note, promotion = _register(prepared, first)
    assert promotion.promoted and promotion.champion_version is None and note.startswith("first version")

    # the champion is scored on the new version's raw test rows, through its own raw-data model
    second = _model(prepared, seed=1)
    pre = preprocessing_from_dict(prepared.preprocessing)
    actual = prepared.to_original_units(prepared.test.y)[:, 0]
    theirs = _rmse(predict_raw(first, pre, prepared.raw_test_input)["prediction"], actual)
    ours = _rmse(predict_raw(second, pre, prepared.raw_test_input)["prediction"], actual)
    assert ours != theirs
    note, promotion = _register(prepared, second)

    assert promotion.champion_version == 1 and promotion.rows == len(prepared.raw_test_input)
    assert promotion.champion_metric == pytest.approx(theirs) and promotion.challenger_metric == pytest.approx(ours)
    assert promotion.promoted is (ours < theirs) and promotion.metric == "rmse" and promotion.rule == "better"
    assert f"on this run's {promotion.rows} test rows" in note
    client = mlflow.MlflowClient()
    tags = client.get_model_version("houses", "2").tags
    assert float(tags[f"{PROMOTION_PREFIX}champion_metric"]) == pytest.approx(theirs)
    assert float(tags[f"{PROMOTION_PREFIX}challenger_metric"]) == pytest.approx(ours)
    assert tags[f"{PROMOTION_PREFIX}rows"] == str(len(prepared.raw_test_input))
    assert tags[f"{PROMOTION_PREFIX}promoted"] == str(ours < theirs)
    champion = str(client.get_model_version_by_alias("houses", "champion").version)
    assert champion == ("2" if ours < theirs else "1")
    moves = champion_history(client, "houses")
    assert len(moves) == 1 + (ours < theirs)
    if ours < theirs:  # the move records the values measured on the same rows
        assert (moves[-1].value, moves[-1].previous_value, moves[-1].rows) == pytest.approx(
            (ours, theirs, promotion.rows)
        )


def test_promote_never_and_always_override_the_comparison(tmp_path):
    prepared, first = _prepared_table(tmp_path)
    _register(prepared, first)
    _, never = _register(prepared, first, promote="never")  # the same weights: compared, and never moved
    assert never.champion_metric == pytest.approx(never.challenger_metric) and not never.promoted
    note, always = _register(prepared, _model(prepared, seed=3), promote="always")
    assert always.promoted and always.rows == len(prepared.raw_test_input) and "registry.promote always" in note
    assert str(mlflow.MlflowClient().get_model_version_by_alias("houses", "champion").version) == "3"


@pytest.mark.parametrize(("promote", "moves"), [("better", False), ("always", True), ("never", False)])
def test_a_champion_that_cannot_score_the_rows_is_compared_on_nothing_and_the_rule_decides(tmp_path, promote, moves):
    prepared, first = _prepared_table(tmp_path)
    _register(prepared, first)
    # the new run's rows lack a column the champion was trained on (its data grew another shape)
    narrower = dataclasses.replace(prepared, raw_test_input=prepared.raw_test_input.drop(columns=["city"]))
    pre = preprocessing_from_dict(prepared.preprocessing)
    rows = evaluation.raw_test_predictions(first, pre, prepared, evaluation.test_predictions(first, prepared))
    with mlflow.start_run() as run:
        info = log_raw_model(first, pre, prepared.raw_test_input)
        pipeline = PipelineRun(run.info.run_id, run.info.experiment_id, "houses", "study")
        _, _, note, promotion = register(info.model_uri, "houses", narrower, {"rmse": 1.0}, pipeline, rows, promote)
    assert "cannot score this run's test rows" in note and "city" in note and "not compared" in note
    assert (promotion.champion_version, promotion.champion_metric, promotion.rows) == (1, None, 0)
    assert promotion.promoted is moves
    champion = str(mlflow.MlflowClient().get_model_version_by_alias("houses", "champion").version)
    assert champion == ("2" if moves else "1")


def test_a_champion_scored_by_another_metric_is_not_compared_and_a_refit_one_on_each_ones_own_rows(tmp_path):
    """A champion of another task under the same name is compared on nothing; a champion refit on every row has
    trained on these test rows, so the two are compared on each one's recorded test metric instead (rows 0)."""
    from automl.tasks.tracking.catalog import PRIMARY_METRIC_TAG, REFIT_TAG

    prepared, first = _prepared_table(tmp_path)
    _register(prepared, first)
    client = mlflow.MlflowClient()
    client.set_model_version_tag("houses", "1", PRIMARY_METRIC_TAG, "f1_macro")
    note, other_task = _register(prepared, _model(prepared, seed=1))
    assert "scored by f1_macro, this run by rmse" in note and other_task.champion_metric is None
    assert not other_task.promoted

    client.set_model_version_tag("houses", "1", PRIMARY_METRIC_TAG, "rmse")
    client.set_model_version_tag("houses", "1", REFIT_TAG, "all")
    client.set_model_version_tag("houses", "1", "test_rmse", "1e9")  # its own test rows, before its refit
    note, refit = _register(prepared, _model(prepared, seed=2))
    assert refit.rows == 0 and refit.champion_metric == 1e9 and refit.promoted and "own test rows" in note


def test_class_labels_compare_however_the_file_spelt_them(tmp_path):
    """Integer labels read as floats one night (a missing value in the column) are the same classes."""
    from types import SimpleNamespace

    import pandas as pd

    from automl.tasks.final_train.promotion import compare_on_rows

    rows = pd.DataFrame({"prediction": [0.0, 1.0, 1.0], "proba_0.0": [0.9, 0.2, 0.1], "proba_1.0": [0.1, 0.8, 0.9]})
    rows["actual"] = [0.0, 1.0, 0.0]
    champion = SimpleNamespace(  # what the registry gives: its check of the rows, and its predictions
        preprocessing=SimpleNamespace(validate=lambda frame, rolling: None),
        pyfunc=SimpleNamespace(predict=lambda frame, params=None: pd.DataFrame({"prediction": [0, 1, 0]})),
    )
    compared = compare_on_rows(champion, rows, pd.DataFrame({"x": [1, 2, 3]}), "classification", None)
    assert compared.champion_metric == 1.0 and compared.challenger_metric < 1.0


def test_a_series_champion_that_looks_back_further_forecasts_every_test_row_from_the_whole_history(tmp_path):
    from automl.configs import load_config
    from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
    from tests.helpers import make_series, write_config

    def prepared_with(lookback: int):
        config = write_config(tmp_path, path, name=f"sales{lookback}", data={"lookback": lookback})
        checked = load_and_check(load_config(config))
        return prepare(checked.frame, DataPrepJob.of(load_config(config)), checked.plan, checked.fingerprint)[0]

    def linear(prepared):
        pre = preprocessing_from_dict(prepared.preprocessing)
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(pre.lookback * len(pre.features), pre.horizon))

    path = tmp_path / "sales.csv"
    make_series(200).to_csv(path, index=False)
    far, near = prepared_with(40), prepared_with(8)
    assert len(near.raw_test_input) < 40 + near.lookback  # this run's test rows alone are too short for the champion
    _register(far, linear(far))  # the champion looks back 40 steps
    _, promotion = _register(near, linear(near))
    pre = preprocessing_from_dict(near.preprocessing)
    rows = predict_raw(linear(near), pre, near.raw_test_input, rolling=True)
    assert promotion.champion_version == 1 and promotion.rows == len(rows) > 0
