"""The whole pipeline over real Prefect, MLflow and Optuna on a tiny series and budget: what the summary says
is what landed in MLflow, Optuna and Prefect; a second run warm-starts from the first; a failed late stage is
resumed without redoing the finished ones."""

from __future__ import annotations

import json
import re

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from automl.flows.pipeline import automl_pipeline
from automl.tasks.summary import WarmStartSummary, render_markdown
from automl.tasks.tracking.catalog import STAGES

pytestmark = pytest.mark.e2e


def prefect_artifacts(key: str) -> list:
    """Prefect artifacts with ``key``, read with Prefect's own client as a user would."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        return prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def _children(client, experiment_id, parent_id):
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=500)


def _run(config, *overrides):
    return automl_pipeline(config_path=str(config), overrides=list(overrides))


def test_pipeline_end_to_end(prefect_api, home, series_csv, tmp_path):
    from tests.helpers import write_config

    config = write_config(
        tmp_path, series_csv, search={"fidelity": "successive_halving", "n_trials": 5}, final={"clean_up": False}
    )
    summary = _run(config)

    assert summary.status == "completed"
    assert summary.experiment == "tiny_lstm" and summary.backend == "optuna"
    assert sum(summary.trials.as_dict().values()) == 5 and summary.trials.complete >= 1
    assert set(summary.stage_seconds) == set(STAGES) and summary.total_seconds > 0
    assert summary.warm_start == WarmStartSummary(enqueued=0, source_run_ids=[])
    assert set(summary.test_metrics) == {"rmse", "mae", "mse"}
    assert set(summary.baseline_metrics) == {"default_config", "naive", "seasonal_naive", "gbm"}  # a series network's
    assert summary.test_metrics["rmse"] == pytest.approx(summary.test_metrics["mse"] ** 0.5)

    mlflow.set_tracking_uri(summary.mlflow_tracking_uri)
    client = MlflowClient()
    parent = client.get_run(summary.pipeline_run_id)
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["automl.role"] == "pipeline" and tags["automl.model_family"] == "lstm"
    assert tags["automl.task_type"] == "regression" and tags["automl.study_name"] == summary.study_name
    assert len(tags["automl.dataset_fingerprint"]) == 16 and json.loads(tags["automl.meta_features"])["n_rows"] == 240
    assert parent.data.metrics["best_val_loss"] == pytest.approx(summary.best_val_loss)
    assert parent.data.metrics["test_rmse"] == pytest.approx(summary.test_metrics["rmse"])
    assert parent.data.metrics["baseline_naive_rmse"] == pytest.approx(summary.baseline_metrics["naive"]["rmse"])
    defaults = {"hidden_size": 64, "num_layers": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 64}  # the LSTM's
    assert mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/best_config.json") == (
        summary.best_params if summary.chosen == "tuned" else defaults
    )
    assert tags["automl.chosen"] == summary.chosen
    logged = mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/summary.json")
    assert logged["pipeline_run_id"] == parent.info.run_id
    assert logged == json.loads(json.dumps(summary.to_json(), default=str))  # what automl run --json prints
    assert mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/summary.md") == render_markdown(summary)

    stages = {r.data.tags["automl.stage"]: r for r in _children(client, parent.info.experiment_id, parent.info.run_id)}
    assert set(stages) == set(STAGES)
    assert all(r.info.status == "FINISHED" for r in stages.values())
    artifacts = {name: {f.path for f in client.list_artifacts(run.info.run_id)} for name, run in stages.items()}
    assert {"data_card.json", "splits"} <= artifacts["data_prep"]
    assert {f.path for f in client.list_artifacts(stages["data_prep"].info.run_id, "splits")} == {
        "splits/train.parquet",
        "splits/val.parquet",
        "splits/test.parquet",
    }
    assert [i.tags[0].value for i in stages["data_prep"].inputs.dataset_inputs] and {
        i.tags[0].value for i in stages["data_prep"].inputs.dataset_inputs
    } == {"train", "val", "test"}
    assert "candidates.csv" in artifacts["warm_start"]
    plots = {f.path for f in client.list_artifacts(stages["search"].info.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/intermediate_values.png", "plots/search_plots.html"} <= plots
    page = mlflow.artifacts.load_text(f"runs:/{stages['search'].info.run_id}/plots/search_plots.html")
    # plotly inside the page (one copy), no script from a CDN: it opens on a machine without internet
    assert page.count("plotly.js v") == 1 and not re.findall(r"<script[^>]*\ssrc=", page)
    assert "<h2>optimization history</h2>" in page and "<h2>parallel coordinate</h2>" in page
    assert {"trials.parquet", "trials.csv"} <= artifacts["search"]
    final_plots = {f.path for f in client.list_artifacts(stages["final_train"].info.run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/predicted_vs_actual.png"} <= final_plots
    # promote, don't retrain: the final stage continued from the weights the best trial's evaluation kept
    final_run = stages["final_train"]
    assert final_run.data.params["init"] == "best_trial" and "best_trial_weights.pt" in artifacts["search"]
    assert final_run.data.metrics["start_val_loss"] == pytest.approx(summary.best_val_loss, rel=1e-4)
    assert final_run.data.metrics["val_loss"] <= final_run.data.metrics["start_val_loss"]

    trials = _children(client, parent.info.experiment_id, stages["search"].info.run_id)
    assert len(trials) == 5 and all(t.data.tags["automl.role"] == "trial" for t in trials)
    outcomes = sorted(t.data.tags["automl.outcome"] for t in trials)
    assert outcomes.count("complete") == summary.trials.complete
    assert outcomes.count("pruned") == summary.trials.pruned
    a_trial = trials[0]
    assert {"hidden_size", "num_layers", "dropout", "lr", "batch_size", "rung0_fraction"} <= set(a_trial.data.params)
    history = client.get_metric_history(a_trial.info.run_id, "val_loss_rung0")
    assert len(history) == 2  # validation loss per epoch (2 epochs per trial)
    assert client.get_metric_history(a_trial.info.run_id, "rung_val_loss")[0].step == 1

    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage)
    assert len(study.trials) == 5 and study.best_value == pytest.approx(summary.best_val_loss)
    assert study.best_params == summary.best_params
    # a cold start tries the family's default config first, fitted into the space (hidden 64 -> 16, batch 64 -> 32)
    assert study.trials[0].user_attrs["source"] == "default_config"
    assert study.trials[0].params == {"hidden_size": 16, "num_layers": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 32}
    assert "source" not in study.trials[1].user_attrs
    assert final_run.data.tags["automl.chosen"] == summary.chosen
    final_metrics = final_run.data.metrics
    single = min(final_metrics["tuned_val_loss"], final_metrics["default_config_val_loss"])
    # the ensemble of the best configs: every complete config but the best is a candidate (final.ensemble.top_k 5),
    # each a training run nested under the final stage with its checkpoint; kept only when it validates better
    ensemble = summary.ensemble
    trainings = _children(client, parent.info.experiment_id, final_run.info.run_id)
    assert all(r.data.tags["automl.role"] == "final_training" and r.info.status == "FINISHED" for r in trainings)
    complete = sorted(t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    others = [n for n in complete if n != summary.best_trial]
    assert {r.data.tags["automl.final_training"] for r in trainings} == {
        "tuned",
        "default_config",
        "gbm",  # the default-LightGBM baseline: trained and tested, never part of the model
        *(f"member_{n}" for n in others),
    }
    assert all("checkpoint.pt" in {f.path for f in client.list_artifacts(r.info.run_id)} for r in trainings)
    assert set(ensemble.candidates) == {r.data.tags["automl.final_training"] for r in trainings} - {"gbm"}
    gbm_rmse = summary.baseline_metrics["gbm"]["rmse"]
    assert final_metrics["baseline_gbm_rmse"] == pytest.approx(gbm_rmse) and 0 < gbm_rmse < 100
    assert sum(ensemble.weights.values()) == pytest.approx(1.0) and set(ensemble.weights) <= set(ensemble.candidates)
    assert ensemble.single_val_loss == pytest.approx(single, rel=1e-4)
    assert ensemble.val_loss <= min(ensemble.candidates.values()) + 1e-12  # it starts from the best single model
    assert ensemble.kept == (summary.chosen == "ensemble") == (ensemble.val_loss < ensemble.single_val_loss)
    assert final_metrics["ensemble_val_loss"] == pytest.approx(ensemble.val_loss)
    assert final_metrics["val_loss"] == pytest.approx(ensemble.val_loss if ensemble.kept else single)
    selection = mlflow.artifacts.load_dict(f"runs:/{final_run.info.run_id}/ensemble.json")
    assert selection["weights"] == ensemble.weights and len(selection["losses"]) == 25
    assert "plots/ensemble_selection.png" in final_plots
    assert {k: final_metrics[f"single_test_{k}"] for k in ("rmse", "mae", "mse")} == ensemble.single_test_metrics
    # an exported config carries its own test metrics, not the ensemble's it was part of
    from automl.tasks.warm_start.config_store import export_config

    exported = export_config(summary.pipeline_run_id).metrics
    own = ensemble.single_test_metrics if ensemble.kept else summary.test_metrics
    assert exported["test_rmse"] == pytest.approx(own["rmse"]) and exported["best_val_loss"] == summary.best_val_loss
    # the seasonal-naive baseline from the file itself: weekly data, so each test target's value 52 rows before
    assert mlflow.artifacts.load_dict(f"runs:/{stages['data_prep'].info.run_id}/data_card.json")["season"] == 52
    sales = pd.read_csv(series_csv)["sales"].ffill().bfill().to_numpy()
    first_targets = np.arange(int(240 * 0.7) + int(240 * 0.15), 240 - 1)  # each test window's (horizon 2)
    rows = first_targets[:, None] + np.arange(2)
    seasonal_rmse = float(np.sqrt(np.mean((sales[rows] - sales[rows - 52]) ** 2)))
    assert final_metrics["baseline_seasonal_naive_rmse"] == pytest.approx(seasonal_rmse)
    assert summary.baseline_metrics["seasonal_naive"]["rmse"] == pytest.approx(seasonal_rmse)
    assert parent.data.metrics["baseline_seasonal_naive_rmse"] == pytest.approx(seasonal_rmse)

    model = summary.registered_model
    version = client.get_model_version(model.name, str(model.version))
    assert version.run_id == stages["final_train"].info.run_id
    assert client.get_model_version_by_alias(model.name, "champion").version == version.version
    loaded = mlflow.pytorch.load_model(summary.model_uri)
    assert loaded(__import__("torch").zeros(2, 8, 2)).shape == (2, 2)

    artifacts = prefect_artifacts("tiny-lstm-summary")
    assert any(summary.pipeline_run_id in a.data for a in artifacts)


def test_second_run_warm_starts_from_the_first(prefect_api, home, series_csv, tmp_path):
    from tests.helpers import write_config

    config = write_config(tmp_path, series_csv, search={"n_trials": 3})
    first = _run(config)
    second = _run(config)
    assert second.warm_start.enqueued == 1
    assert second.warm_start.source_run_ids == [first.pipeline_run_id]
    assert second.study_name != first.study_name
    study = optuna.load_study(study_name=second.study_name, storage=second.storage)
    fitted_default = {"hidden_size": 16, "num_layers": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 32}
    assert study.trials[0].params == (first.best_params if first.chosen == "tuned" else fitted_default)
    assert study.trials[0].user_attrs["source"] == f"warm_start:{first.pipeline_run_id}"
    assert not any(t.user_attrs.get("source") == "default_config" for t in study.trials)  # warm configs go first

    client = MlflowClient(tracking_uri=second.mlflow_tracking_uri)
    stage = client.search_runs(
        [client.get_experiment_by_name("tiny_lstm").experiment_id],
        f"tags.`mlflow.parentRunId` = '{second.pipeline_run_id}' and tags.`automl.stage` = 'warm_start'",
    )[0]
    mlflow.set_tracking_uri(second.mlflow_tracking_uri)
    table = mlflow.artifacts.load_text(f"runs:/{stage.info.run_id}/candidates.csv")
    assert first.pipeline_run_id in table and "queued" in table
    assert stage.data.metrics["enqueued"] == 1


def test_a_failed_late_stage_resumes_without_redoing_finished_stages(
    prefect_api, home, series_csv, tmp_path, monkeypatch
):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    import automl.tasks.final_train.training as final_training
    from tests.helpers import write_config

    config = write_config(tmp_path, series_csv, search={"n_trials": 3})
    original = final_training.train_config

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(final_training, "train_config", broken)
    state = automl_pipeline(config_path=str(config), return_state=True)
    assert state.is_failed()
    monkeypatch.setattr(final_training, "train_config", original)

    mlflow_client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = mlflow_client.get_experiment_by_name("tiny_lstm").experiment_id
    failed = mlflow_client.search_runs([experiment], "tags.`automl.role` = 'pipeline'")
    assert [r.info.status for r in failed] == ["FAILED"]

    state = automl_pipeline(config_path=str(config), return_state=True)
    summary = state.result()
    assert summary.resumed is True and summary.pipeline_run_id == failed[0].info.run_id
    assert sum(summary.trials.as_dict().values()) == 3

    runs = mlflow_client.search_runs([experiment], "tags.`automl.role` = 'pipeline'")
    assert [r.info.status for r in runs] == ["FINISHED"]  # the same parent run, now finished
    stages = _children(mlflow_client, experiment, summary.pipeline_run_id)
    assert sorted(r.data.tags["automl.stage"] for r in stages) == sorted(STAGES)  # one run per stage, no duplicates
    trials = _children(
        mlflow_client, experiment, next(r.info.run_id for r in stages if r.data.tags["automl.stage"] == "search")
    )
    assert len(trials) == 3  # the search was not redone

    with get_client(sync_client=True) as prefect:
        task_runs = prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
            limit=200,
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )
    by_name = {
        t.name.split("-")[0]: t.state.name for t in task_runs if t.name.split("-")[0] in ("data_prep", "warm_start")
    }
    assert by_name == {"data_prep": "Cached", "warm_start": "Cached"}


def test_a_model_whose_test_metric_is_not_finite_is_not_registered(
    prefect_api, home, series_csv, tmp_path, monkeypatch
):
    import automl.tasks.final_train.stage as final_train
    from tests.helpers import write_config

    config = write_config(tmp_path, series_csv, search={"n_trials": 1, "epochs": 1})
    real_score = final_train.score
    monkeypatch.setattr(final_train, "score", lambda *a: {k: float("nan") for k in real_score(*a)})
    state = automl_pipeline(config_path=str(config), return_state=True)
    assert state.is_failed() and re.search(
        r"test rmse of the (tuned|default config|ensemble) model is nan", state.message
    )

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    assert client.search_registered_models() == []
    runs = client.search_runs([client.get_experiment_by_name("tiny_lstm").experiment_id], "")
    assert {r.info.status for r in runs if r.data.tags.get("automl.role") in ("pipeline", "stage")} <= {
        "FINISHED",
        "FAILED",
    }
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_refit_registers_weights_trained_on_every_row_and_records_the_tested_metrics(
    prefect_api, home, series_csv, tmp_path
):
    """final.refit all: the registered version's weights trained again on every window of the series, with scalers
    fitted on every row, for the updates the tested training ran; the version keeps the tested model's metrics
    and says it is a refit; the tested model stays logged beside it."""
    from tests.helpers import write_config

    config = write_config(
        tmp_path, series_csv, name="refitted", search={"n_trials": 3}, final={"refit": "all", "ensemble": {"top_k": 2}}
    )
    summary = _run(config)
    record = summary.to_json()
    windows = 240 - 8 - 2 + 1  # every window of the series (lookback 8, horizon 2)
    assert record["refit"]["rows"] == windows
    mlflow.set_tracking_uri(summary.mlflow_tracking_uri)
    client = MlflowClient()
    model = summary.registered_model
    version = client.get_model_version(model.name, str(model.version))
    assert version.tags["automl.refit"] == "all" and version.tags["automl.refit_rows"] == str(windows)
    epochs = record["refit"]["epochs"]
    assert version.tags["automl.refit_epochs"] == ",".join(f"{k}={v}" for k, v in epochs.items())
    assert float(version.tags["test_rmse"]) == pytest.approx(summary.test_metrics["rmse"])  # the tested model's

    experiment = client.get_experiment_by_name("refitted").experiment_id
    final_run = client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{summary.pipeline_run_id}' and tags.`automl.stage` = 'final_train'"
    )[0]
    assert final_run.data.tags["automl.refit"] == "all"
    logged = mlflow.search_logged_models(
        experiment_ids=[experiment], filter_string=f"source_run_id = '{final_run.info.run_id}'", output_format="list"
    )
    assert sorted(m.name for m in logged) == ["model", "refit_model"]  # the tested model is kept
    refit_uri = next(m.model_uri for m in logged if m.name == "refit_model")
    assert summary.model_uri == refit_uri and version.source == refit_uri
    trainings = {r.data.tags["automl.final_training"]: r for r in _children(client, experiment, final_run.info.run_id)}
    refits = {name: run for name, run in trainings.items() if name.startswith("refit_")}
    assert set(refits) == set(epochs) and all(r.info.status == "FINISHED" for r in refits.values())
    train_windows = int(240 * 0.7) - 8 - 2 + 1
    for name, run in refits.items():  # as many updates as the tested training's weights had
        tested = trainings[name.removeprefix("refit_")]
        seen = tested.data.metrics["best_epoch"] + 1 + (2 if "start_val_loss" in tested.data.metrics else 0)
        assert epochs[name] == max(1, round(seen * train_windows / windows)) == int(run.data.params["refit_epochs"])
        assert run.data.metrics["epochs_run"] == epochs[name]

    refitted = mlflow.pyfunc.load_model(f"models:/{model.name}/{model.version}")
    sales = pd.read_csv(series_csv)["sales"].ffill().bfill()
    assert refitted.unwrap_python_model().preprocessing.mean[0] == pytest.approx(sales.mean())  # every row's scaler
    tested_predictions = pd.read_parquet(
        mlflow.artifacts.download_artifacts(f"runs:/{final_run.info.run_id}/test_predictions.parquet")
    )
    history = pd.read_csv(series_csv).iloc[int(240 * 0.85) - 8 :]
    got = refitted.predict(history, params={"rolling": True})
    assert len(got) == len(tested_predictions) and np.isfinite(got["prediction"]).all()
    assert not np.allclose(got["prediction"].to_numpy(), tested_predictions["prediction"].to_numpy())
    assert "refit: the registered weights trained again on all 231 rows" in render_markdown(summary)
