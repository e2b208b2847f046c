"""Promote, don't retrain: an evaluation on all the data keeps its best epoch's weights, and the final training
continues from them (its first validation loss is the trial's best) unless ``final.init`` says scratch; the model
that goes on is the one with the lower validation loss, the tuned config or the default config trained beside it."""

from __future__ import annotations

import pytest

from automl.configs import load_config
from automl.models import FitResult, get_family, loss_for
from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
from automl.tasks.final_train.job import FinalTrainJob
from automl.tasks.final_train.training import choose_model, start_weights, train_config
from automl.tasks.search_stage.checkpoints import trial_weights_path
from automl.tasks.search_stage.objective import TrainerObjective
from tests.helpers import TINY_SPACE, write_config

PARAMS = {"hidden_size": 16, "num_layers": 1, "dropout": 0.0, "lr": 0.01, "batch_size": 32}


@pytest.fixture
def prepared_and_config(series_csv, tmp_path):
    cfg = load_config(write_config(tmp_path, series_csv, final={"epochs": 4, "patience": 2}))
    checked = load_and_check(cfg)
    prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
    return prepared, cfg


def test_the_final_training_starts_where_the_best_trial_ended(prepared_and_config, tmp_path):
    prepared, cfg = prepared_and_config
    family = get_family("lstm")
    objective = TrainerObjective(
        "lstm", prepared, dict(family.defaults), epochs=3, loss=loss_for(prepared.task), weights_dir=tmp_path / "w"
    )
    low = objective(PARAMS, 1 / 3)
    assert not trial_weights_path(tmp_path / "w", PARAMS).exists()  # only evaluations on all the data keep theirs
    full = objective(PARAMS, 1.0)
    weights = trial_weights_path(tmp_path / "w", PARAMS)
    assert weights.is_file() and low.loss != full.loss

    job = FinalTrainJob.of(cfg)
    assert start_weights(job, str(weights)) == weights
    _, fitted = train_config(job, prepared, PARAMS, start_from=start_weights(job, str(weights)))
    assert fitted.start_val_loss == pytest.approx(full.loss, rel=1e-5)  # the trial's best epoch, exactly
    assert fitted.best_val_loss <= fitted.start_val_loss  # training on only keeps a better epoch

    scratch = FinalTrainJob.of(load_config(write_config(tmp_path, cfg.data.path, final={"init": "scratch"})))
    assert start_weights(scratch, str(weights)) is None
    _, fresh = train_config(scratch, prepared, PARAMS)
    assert fresh.start_val_loss is None and fresh.val_loss[0] > full.loss  # one epoch from scratch is worse
    assert start_weights(job, str(tmp_path / "missing.pt")) is None  # no weights kept: from scratch, said in the log


def test_the_lower_validation_loss_decides_which_model_goes_on():
    tuned = FitResult(model=None, best_val_loss=0.5)
    assert choose_model(tuned, None)[0] == "tuned"
    assert choose_model(tuned, FitResult(model=None, best_val_loss=0.7))[0] == "tuned"
    chosen, note = choose_model(tuned, FitResult(model=None, best_val_loss=0.25))
    assert chosen == "default_config" and "0.25 beat the tuned config's 0.5" in note
    assert choose_model(tuned, FitResult(model=None, best_val_loss=0.5))[0] == "tuned"  # a tie keeps the tuned
    # a tuned config that diverged (NaN) loses to a finite default config; two NaNs keep the tuned (then refused)
    assert choose_model(FitResult(model=None), FitResult(model=None, best_val_loss=0.1))[0] == "default_config"
    assert choose_model(FitResult(model=None), FitResult(model=None))[0] == "tuned"


@pytest.mark.e2e
def test_a_default_config_that_beats_the_tuned_one_on_validation_is_the_model(prefect_api, home, series_csv, tmp_path):
    """A search confined to a useless learning rate (1e-6) cannot beat the default config (lr 1e-3) trained beside
    it: the default config is what is tested, logged and registered, and the summary says so."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from automl.flows.pipeline import automl_pipeline

    space = {**TINY_SPACE, "lr": {"type": "float", "low": 1e-6, "high": 1.1e-6}}
    config = write_config(
        tmp_path, series_csv, search={"n_trials": 2, "space": space, "try_default_first": False}, final={"epochs": 4}
    )
    summary = automl_pipeline(config_path=str(config))
    assert summary.chosen == "default_config"
    assert summary.best_params["lr"] < 2e-6  # the search's best is still reported as the search's
    assert summary.test_metrics == summary.baseline_metrics["default_config"]

    client = MlflowClient(tracking_uri=summary.mlflow_tracking_uri)
    version = client.get_model_version(summary.registered_model.name, str(summary.registered_model.version))
    final = client.get_run(version.run_id)
    assert final.data.tags["automl.chosen"] == "default_config"
    metrics = final.data.metrics
    assert metrics["val_loss"] == metrics["default_config_val_loss"] < metrics["tuned_val_loss"]
    assert metrics["test_rmse"] == pytest.approx(summary.baseline_metrics["default_config"]["rmse"])
    parent = client.get_run(summary.pipeline_run_id)
    assert parent.data.tags["automl.chosen"] == "default_config"
    defaults = get_family("lstm").defaults
    # what a later run warm-starts from (and `automl configs export` exports) is the model's config
    assert mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/best_config.json") == {
        name: defaults[name] for name in summary.best_params
    }
    model = mlflow.pytorch.load_model(summary.model_uri)
    assert model.lstm.hidden_size == get_family("lstm").defaults["hidden_size"]  # the default config's network
