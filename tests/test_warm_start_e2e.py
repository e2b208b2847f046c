"""Warm start across runs, end to end: a run on related data is seeded with the first run's best config (clipped
into its own ranges, and logged), and configs round-trip through ``automl configs export`` / ``import``."""

from __future__ import annotations

import json

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from automl.cli import main
from automl.flows.pipeline import automl_pipeline
from automl.tasks.summary import WarmStartSummary
from tests.helpers import make_series, write_config

pytestmark = pytest.mark.e2e


def test_related_data_gets_the_first_runs_config_adapted_to_its_space(prefect_api, home, tmp_path):
    first_csv, second_csv = tmp_path / "store_a.csv", tmp_path / "store_b.csv"
    make_series(240, seed=0).to_csv(first_csv, index=False)
    make_series(220, seed=1).to_csv(second_csv, index=False)  # the same kind of series, another store
    first = automl_pipeline(config_path=str(write_config(tmp_path, first_csv, search={"n_trials": 3})))

    narrower = {"type": "float", "low": 0.02, "high": 0.05, "log": True}  # above the first run's whole lr range
    config = write_config(tmp_path, second_csv, name="tiny_lstm_b", search={"n_trials": 3})
    second = automl_pipeline(config_path=str(config), overrides=[f"search.space.lr={json.dumps(narrower)}"])

    assert second.warm_start.enqueued >= 1
    assert second.warm_start.source_run_ids[0] == first.pipeline_run_id
    study = optuna.load_study(study_name=second.study_name, storage=second.storage)
    expected = {**first.best_params, "lr": 0.02}
    assert study.trials[0].params == pytest.approx(expected)

    mlflow.set_tracking_uri(second.mlflow_tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("tiny_lstm_b").experiment_id
    stage = client.search_runs(
        [experiment],
        f"tags.`mlflow.parentRunId` = '{second.pipeline_run_id}' and tags.`automl.stage` = 'warm_start'",
    )[0]
    table = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{stage.info.run_id}/candidates.csv"))
    row = table.set_index("run_id").loc[first.pipeline_run_id]
    assert row["verdict"] == "queued (adapted)" and row["source"] == "similar"
    assert 0 <= row["distance"] < 1  # two stores of the same kind of series are close
    assert "lr:" in row["adaptations"] and "clipped -> 0.02" in row["adaptations"]
    queued = mlflow.artifacts.load_dict(f"runs:/{stage.info.run_id}/queued_configs.json")["queued"][0]
    assert queued["source_run_id"] == first.pipeline_run_id and queued["params"]["lr"] == 0.02


def test_configs_export_import_round_trip_and_a_bad_file_changes_nothing(
    prefect_api, home, series_csv, tmp_path, capsys
):
    first = automl_pipeline(config_path=str(write_config(tmp_path, series_csv, search={"n_trials": 3})))
    run_id = first.pipeline_run_id

    def cli(*args):
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, listing, _ = cli("configs", "list", "--model", "lstm")
    assert code == 0 and run_id in listing and "tiny_lstm" in listing and "sales.csv" in listing
    shown = json.loads(cli("configs", "show", run_id)[1])
    assert shown["params"] == first.best_params and shown["model_family"] == "lstm"
    assert shown["meta_features"]["n_rows"] == 240
    assert shown["metrics"]["best_val_loss"] == pytest.approx(first.best_val_loss)

    exported = tmp_path / "best.json"
    assert cli("configs", "export", run_id, "-o", str(exported))[0] == 0
    code, out, err = cli("configs", "import", str(exported))
    assert code == 0, err
    new_id = out.split()[-1]
    assert json.loads(cli("configs", "show", new_id)[1])["params"] == shown["params"]
    assert new_id in cli("configs", "list")[1]

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")

    def count_runs():
        return len(client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000))

    before = count_runs()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(exported.read_text()), "params": {}}))
    code, _, err = cli("configs", "import", str(bad))
    assert code == 2 and err.strip() == f"error: {bad}: params: must hold at least one parameter"
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    code, _, err = cli("configs", "import", str(garbage))
    assert code == 2 and err.startswith(f"error: {garbage}: not valid JSON") and err.count("\n") == 1
    code, _, err = cli("configs", "export", "0" * 32, "-o", str(tmp_path / "nothing.json"))
    assert code == 2 and "no such MLflow run" in err and not (tmp_path / "nothing.json").exists()
    assert count_runs() == before

    second = automl_pipeline(
        config_path=str(write_config(tmp_path, series_csv, name="from_file", search={"n_trials": 2})),
        overrides=[f"warm_start.from_file={exported}", "warm_start.top_k=0"],
    )
    assert second.warm_start == WarmStartSummary(enqueued=1, source_run_ids=[run_id])
