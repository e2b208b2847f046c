"""The pipeline summary and its renderings: the JSON keeps the keys docs/operations.md documents, in order; the table
and the Markdown read as they always have."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from automl.tasks.search import TrialCounts
from automl.tasks.summary import (
    BudgetSummary,
    CVSummary,
    EnsembleSummary,
    PBTSummary,
    PipelineSummary,
    RefitSummary,
    RegisteredVersion,
    WarmStartSummary,
    render_markdown,
    render_table,
)


@pytest.fixture
def summary() -> PipelineSummary:
    return PipelineSummary(
        experiment="tiny_lstm",
        pipeline_run_id="abc123",
        resumed=False,
        study_name="tiny-2024",
        storage="sqlite:///x/optuna.db",
        backend="optuna",
        sampler="tpe",
        fidelity="hyperband",
        model_family="lstm",
        family="lstm",
        task_type="regression",
        dataset_fingerprint="ff00",
        trials=TrialCounts(complete=3, pruned=1, failed=0),
        best_trial=2,
        best_params={"lr": 0.001234567, "hidden_size": 64, "cell": "gru"},
        best_val_loss=0.123456789,
        warm_start=WarmStartSummary(enqueued=1, source_run_ids=["r1"]),
        chosen="tuned",
        test_metrics={"rmse": 1.23456789, "mae": 0.9876543},
        primary_metric="rmse",
        baseline_metrics={
            "default_config": {"rmse": 2.0, "mae": 1.5},
            "naive": {"rmse": 3.3333333, "mae": 2.25},
            "seasonal_naive": {"rmse": 2.5, "mae": 1.75},
        },
        model_uri="models:/m-123",
        registered_model=RegisteredVersion(name="tiny_lstm", version=3),
        champion=True,
        champion_note="first version of this model: champion",
        search_seconds=12.346,
        search_overhead_share=0.0123,
        param_importances={"lr": 0.7, "hidden_size": 0.3},
        stage_seconds={"data_prep": 0.5, "warm_start": 0.25, "search": 12.5, "final_train": 3.04},
        total_seconds=17.345,
        mlflow_tracking_uri="sqlite:///x/mlflow.db",
    )


def test_the_json_has_the_documented_keys_in_order_with_nested_parts(summary):
    record = summary.to_json()
    assert list(record) == [
        "status",
        "experiment",
        "experiment_id",
        "pipeline_run_id",
        "resumed",
        "study_name",
        "storage",
        "backend",
        "sampler",
        "fidelity",
        "model_family",
        "family",
        "task_type",
        "dataset_fingerprint",
        "trials",
        "best_trial",
        "best_params",
        "best_val_loss",
        "warm_start",
        "chosen",
        "test_metrics",
        "primary_metric",
        "baseline_metrics",
        "model_uri",
        "registered_model",
        "champion",
        "champion_note",
        "search_seconds",
        "search_overhead_share",
        "param_importances",
        "stage_seconds",
        "total_seconds",
        "mlflow_tracking_uri",
        "budget",
        "strategy",
        "ensemble",
        "refit",
        "promotion",
    ]
    assert record["ensemble"] is None and record["refit"] is None  # null without an ensemble tried, without a refit
    assert record["status"] == "completed" and record["strategy"] == "sample"
    assert "cv" not in record and "pbt" not in record  # absent without search.cv, without strategy pbt
    pbt = PBTSummary(population=8, intervals=15, exploit_steps=28, best_member=3, schedule=[{"lr": 0.001}])
    population = dataclasses.replace(summary, strategy="pbt", pbt=pbt)
    assert population.to_json()["strategy"] == "pbt"
    assert population.to_json()["pbt"] == {
        "population": 8,
        "intervals": 15,
        "exploit_steps": 28,
        "best_member": 3,
        "schedule": [{"lr": 0.001}],
    }
    assert (
        "  population-based training: 8 members, 15 intervals, 28 exploit steps; best member 3; its lr 0.001 -> 0.001\n"
        in render_table(population)
    )
    folded = dataclasses.replace(summary, cv=CVSummary.of("rolling_origin", [0.1, 0.3])).to_json()
    assert list(folded)[-5:] == ["cv", "strategy", "ensemble", "refit", "promotion"] and folded["cv"]["folds"] == 2
    assert folded["cv"]["mean"] == pytest.approx(0.2) and folded["cv"]["std"] == pytest.approx(0.1)
    assert record["trials"] == {"complete": 3, "pruned": 1, "failed": 0}
    assert record["warm_start"] == {"enqueued": 1, "source_run_ids": ["r1"]}
    assert record["registered_model"] == {"name": "tiny_lstm", "version": 3}
    assert json.loads(json.dumps(record)) == record
    unregistered = dataclasses.replace(summary, registered_model=None).to_json()
    assert unregistered["registered_model"] is None
    assert record["budget"] is None
    budgeted = dataclasses.replace(summary, budget=BudgetSummary(seconds=60, used=41.25)).to_json()
    assert budgeted["budget"] == {"seconds": 60, "used": 41.25}
    assert pickle.loads(pickle.dumps(summary)) == summary  # Prefect persists flow results as pickles


def test_the_ensemble_and_the_refit_in_the_json_and_both_renderings(summary):
    ensemble = EnsembleSummary(
        members=["member_4", "tuned"],
        weights={"member_4": 0.6, "tuned": 0.4},
        val_loss=0.0123,
        single_val_loss=0.0131,
        kept=True,
        candidates={"tuned": 0.0131, "member_4": 0.0135, "default_config": 0.02},
        rounds=5,
        single_test_metrics={"rmse": 1.3, "mae": 1.0},
    )
    both = dataclasses.replace(
        summary, chosen="ensemble", ensemble=ensemble, refit=RefitSummary(2232, {"refit_tuned": 6})
    )
    record = both.to_json()
    assert {k: record["ensemble"][k] for k in ("members", "weights", "val_loss", "single_val_loss", "kept")} == {
        "members": ["member_4", "tuned"],
        "weights": {"member_4": 0.6, "tuned": 0.4},
        "val_loss": 0.0123,
        "single_val_loss": 0.0131,
        "kept": True,
    }
    assert record["refit"] == {"rows": 2232, "epochs": {"refit_tuned": 6}}
    assert json.loads(json.dumps(record)) == record
    line = "ensemble: 2 of 3 candidates (trial 4 0.60, tuned 0.40); validation loss 0.0123 vs single 0.0131: kept"
    refit = "refit: the registered weights trained again on all 2232 rows (epochs: tuned 6); the test metrics are"
    table, markdown = render_table(both), render_markdown(both)
    assert f"  {line}\n" in table and refit in table
    assert "model (ensemble of the best configs):" in table
    assert f"{line}\n" in markdown and refit in markdown and "The model is the ensemble of the best configs" in markdown


def test_the_table(summary):
    assert render_table(summary) == (
        "\n"
        "Pipeline tiny_lstm completed in 17.3s (MLflow run abc123)\n"
        "  study tiny-2024 (optuna/tpe, fidelity hyperband): 3 complete, 1 pruned, 0 failed; "
        "1 warm-start configs queued\n"
        "  best params: lr=0.001235 hidden_size=64 cell=gru\n"
        "  best validation loss: 0.12346\n"
        "\n"
        "  test metric         model  default cfg        naive seasonal naive\n"
        "  rmse               1.2346            2       3.3333            2.5\n"
        "  mae               0.98765          1.5         2.25           1.75\n"
        "\n"
        "  model (tuned config): models:/m-123 -> tiny_lstm v3 (champion)\n"
        "  stage seconds: data_prep 0.5, warm_start 0.2, search 12.5, final_train 3.0\n"
        "  MLflow UI: mlflow ui --backend-store-uri sqlite:///x/mlflow.db, then http://127.0.0.1:5000/"
    )
    # MLflow 3's UI opens an experiment in its GenAI view unless the address asks for the training view
    tracked = dataclasses.replace(summary, experiment_id="7")
    assert ", then http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning" in render_table(tracked)
    served = dataclasses.replace(tracked, mlflow_tracking_uri="http://mlflow.internal:5000/")
    assert "MLflow UI: http://mlflow.internal:5000/#/experiments/7/runs?workflowType=machine_learning" in (
        render_table(served)
    )
    unregistered = dataclasses.replace(summary, registered_model=None, champion=False)
    assert "  model (tuned config): models:/m-123 -> not registered\n" in render_table(unregistered)
    default_won = dataclasses.replace(summary, chosen="default_config")
    assert "  model (default config): models:/m-123" in render_table(default_won)
    assert "The model is the default config (of it and" in render_markdown(default_won)
    naive_only = dataclasses.replace(summary, baseline_metrics={"naive": summary.baseline_metrics["naive"]})
    assert "The model is the tuned config.\n" in render_markdown(naive_only)
    assert "  rmse               1.2346            -       3.3333              -\n" in render_table(naive_only)
    assert "| rmse | 1.2346 | - | 3.3333 | - |" in render_markdown(naive_only)
    budgeted = dataclasses.replace(summary, budget=BudgetSummary(seconds=60, used=41.25))
    assert render_table(budgeted).endswith("then http://127.0.0.1:5000/\n  budget: 41.2s of 60s used")


def test_the_markdown(summary):
    assert render_markdown(summary) == (
        "# AutoML pipeline: tiny_lstm\n"
        "\n"
        "MLflow run `abc123` in experiment `tiny_lstm`; study `tiny-2024`\n"
        "(optuna/tpe, fidelity hyperband).\n"
        "\n"
        "**Trials:** 3 complete, 1 pruned, 0 failed;\n"
        "1 warm-start configs queued. **Best validation loss:** 0.12346\n"
        "\n"
        "## Best params\n"
        "| param | value |\n"
        "|---|---|\n"
        "| lr | 0.001235 |\n"
        "| hidden_size | 64 |\n"
        "| cell | gru |\n"
        "\n"
        "## Test metrics vs baselines\n"
        "The model is the tuned config (of it and the default config, the lower validation loss).\n"
        "\n"
        "| metric | model | default config | naive | seasonal naive |\n"
        "|---|---|---|---|---|\n"
        "| rmse | 1.2346 | 2 | 3.3333 | 2.5 |\n"
        "| mae | 0.98765 | 1.5 | 2.25 | 1.75 |\n"
        "\n"
        "**Model:** `tiny_lstm` version 3 (champion); first version of this model: champion.\n"
    )
    off = dataclasses.replace(summary, registered_model=None, champion=False, champion_note="registry disabled")
    assert render_markdown(off).endswith("**Model:** not registered; registry disabled.\n")
