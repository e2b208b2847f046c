"""The search stage inside the pipeline with multi-fidelity: hyperopt + successive halving and Optuna + Hyperband
both complete, count pruned configs, and show per-rung metrics, plots and importances in MLflow."""

from __future__ import annotations

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from automl.flows.pipeline import automl_pipeline
from tests.helpers import write_config

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("backend", "fidelity"), [("hyperopt", "successive_halving"), ("optuna", "hyperband")])
def test_multi_fidelity_search_in_the_pipeline(prefect_api, home, series_csv, tmp_path, backend, fidelity):
    config = write_config(tmp_path, series_csv, search={"n_trials": 9, "n_startup_trials": 3})
    only_naive = ["final.baselines=[naive]"] if backend == "hyperopt" else []  # one run also drops a baseline
    summary = automl_pipeline(
        config_path=str(config), overrides=[f"search.backend={backend}", f"search.fidelity={fidelity}", *only_naive]
    )
    every = {"default_config", "naive", "seasonal_naive", "gbm"}
    assert set(summary.baseline_metrics) == ({"naive"} if only_naive else every)
    assert summary.backend == backend and summary.fidelity == fidelity
    assert summary.trials.pruned >= 1 and sum(summary.trials.as_dict().values()) == 9
    assert 0 <= summary.search_overhead_share < 1

    mlflow.set_tracking_uri(summary.mlflow_tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("tiny_lstm").experiment_id
    search = client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{summary.pipeline_run_id}' and tags.`automl.stage` = 'search'"
    )[0]
    assert search.data.params["fidelity"] == fidelity and search.data.params["rung_fractions"] == "0.1111,0.3333,1"
    trials = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{search.info.run_id}'", max_results=50)
    outcomes = [t.data.tags["automl.outcome"] for t in trials]
    assert outcomes.count("pruned") == summary.trials.pruned
    promoted = [t for t in trials if int(t.data.tags["automl.promotions"]) >= 1]
    assert promoted, "at least one config should have been promoted to a higher rung"
    for trial in promoted:
        steps = [m.step for m in client.get_metric_history(trial.info.run_id, "rung_val_loss")]
        assert steps == sorted(steps) and len(steps) == int(trial.data.tags["automl.promotions"]) + 1
        assert {"rung0_fraction", "rung1_fraction"} <= set(trial.data.params)
        assert trial.data.tags["automl.rung0_verdict"] == "promote"
        # continuation: the promoted rung went on from the rung below's checkpoint
        assert trial.data.params["rung1_continued_from"] == trial.data.params["rung0_fraction"]
    # 9 configs fill one round of successive halving only: Hyperband runs one bracket, and the study keeps it
    assert search.data.params["brackets"] == "1" and search.data.params["continuation"] == "True"
    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage)
    assert study.user_attrs.get("hyperband_brackets") == (1 if fidelity == "hyperband" else None)
    assert not any((home / "rung-checkpoints").rglob("*.pt")), "the search removes its rung checkpoints"
    pruned = next(t for t in trials if t.data.tags["automl.outcome"] == "pruned")
    last = int(pruned.data.tags["automl.promotions"])
    assert pruned.data.tags[f"automl.rung{last}_verdict"] == "stop"

    artifacts = {f.path for f in client.list_artifacts(search.info.run_id, "plots")}
    assert {"plots/param_importances.png", "plots/intermediate_values.png", "plots/search_plots.html"} <= artifacts
    importances = mlflow.artifacts.load_dict(f"runs:/{search.info.run_id}/param_importances.json")
    assert set(importances) == {"hidden_size", "num_layers", "dropout", "lr", "batch_size"}
    assert sum(importances.values()) == pytest.approx(1.0, abs=1e-6)


def test_a_search_pace_counts_trials_across_resumes_and_its_eta_is_the_earliest_end():
    import time

    from automl.tasks.search_stage.trial_runs import SearchPace

    pace = SearchPace(n_trials=10, finished=4, started=time.monotonic() - 20)  # 4 before a resume; 20 s in
    assert pace.tick() == "5/10, 20s in, ETA 1m40s"  # one trial in 20 s, five left
    timed = SearchPace(n_trials=10, timeout=30, started=time.monotonic() - 20)
    assert timed.tick() == "1/10, 20s in, ETA 10s"  # the timeout comes first
    ends = time.time() + 3725
    budget = SearchPace(deadline=lambda: ends, started=time.monotonic() - 5)
    assert budget.tick() == "1/-, 5s in, ETA 1h02m"
    assert SearchPace(started=time.monotonic()).tick() == "1/-, 0s in"
