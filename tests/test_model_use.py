"""Using the champion: the registered model takes raw rows (series history or table rows) and reproduces the
test predictions and metrics the pipeline logged, in a fresh process, for an LSTM, a Transformer and an MLP;
``automl predict`` scores files and rejects bad input with one line; ``mlflow models serve`` answers raw JSON
rows; the champion alias has a history and can be moved back. Real MLflow registry, no mocks."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from automl.cli import main
from automl.tasks.summary import PipelineSummary
from tests.helpers import REPO, free_port, make_series, stop_process_group, write_config
from tests.test_cli import AUTOML

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent

TINY_TRANSFORMER_SPACE = {
    "d_model": {"type": "categorical", "choices": [8, 16]},
    "nhead": {"type": "categorical", "choices": [2]},
    "num_layers": {"type": "categorical", "choices": [1]},
    "dim_feedforward": {"type": "int", "low": 16, "high": 32, "step": 16},
    "dropout": {"type": "float", "low": 0.0, "high": 0.2},
    "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [32]},
}
TINY_GBM_SPACE = {
    "learning_rate": {"type": "float", "low": 0.05, "high": 0.3, "log": True},
    "num_leaves": {"type": "int", "low": 4, "high": 16},
    "min_child_samples": {"type": "int", "low": 3, "high": 10},
}
TINY_MLP_SPACE = {
    "hidden_size": {"type": "int", "low": 16, "high": 32, "step": 16},
    "num_layers": {"type": "int", "low": 1, "high": 2},
    "dropout": {"type": "float", "low": 0.0, "high": 0.2},
    "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-4, "log": True},
    "batch_size": {"type": "categorical", "choices": [32]},
}


@pytest.fixture(scope="module")
def champions(prefect_api, tmp_path_factory):
    """Five tiny pipelines (LSTM, Transformer and gbm on a series with a covariate and gaps, MLP and gbm on the
    penguins with missing values and categories) in one state folder, the MLP twice with another seed (two versions
    of one model, tested on other rows).
    The series gbm searches on rungs with continuation, as the default configs do."""
    from automl.flows.pipeline import automl_pipeline

    work = tmp_path_factory.mktemp("champions")
    series = work / "sales.csv"
    make_series(220).to_csv(series, index=False)
    quick = {
        "search": {"n_trials": 2, "epochs": 1},
        "final": {"epochs": 2, "patience": 1},
        "warm_start": {"enabled": False},
    }
    configs = {
        "lstm": write_config(work, series, description="A tiny LSTM forecasting weekly sales.", **quick),
        "transformer": write_config(
            work,
            series,
            name="tiny_transformer",
            model={"family": "transformer"},
            **{**quick, "search": {**quick["search"], "space": TINY_TRANSFORMER_SPACE}},
        ),
        "mlp": write_config(
            work,
            REPO / "configs" / "data" / "penguins.csv",
            name="tiny_penguins",
            model={"family": "mlp"},
            data={"path": str(REPO / "configs" / "data" / "penguins.csv"), "target": "species", "time_column": None},
            **{**quick, "search": {**quick["search"], "space": TINY_MLP_SPACE}},
        ),
        "gbm": write_config(
            work,
            REPO / "configs" / "data" / "penguins.csv",
            name="tiny_gbm_penguins",
            model={"family": "gbm"},
            data={"path": str(REPO / "configs" / "data" / "penguins.csv"), "target": "species", "time_column": None},
            **{**quick, "search": {**quick["search"], "space": TINY_GBM_SPACE}},
        ),
        "gbm_series": write_config(
            work,
            series,
            name="tiny_gbm_series",
            model={"family": "gbm"},
            **{
                **quick,
                "search": {"n_trials": 4, "epochs": 2, "fidelity": "successive_halving", "space": TINY_GBM_SPACE},
            },
        ),
    }
    state = work / "state"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOML_HOME", str(state))
        summaries = {family: automl_pipeline(config_path=str(path)) for family, path in configs.items()}
        second = automl_pipeline(config_path=str(configs["mlp"]), overrides=["seed=8"])
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    for summary in [*summaries.values(), second]:
        assert isinstance(summary, PipelineSummary) and summary.status == "completed", summary
    return {
        "work": work,
        "state": state,
        "series": series,
        "configs": configs,
        "summaries": summaries,
        "second": second,
    }


def _client(champions) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{champions['state'] / 'mlflow.db'}")


FRESH_PROCESS_CHECK = r"""
import json, sys
import mlflow, numpy as np, pandas as pd
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from sklearn import metrics

cases, out = json.loads(sys.argv[1]), {}
client = MlflowClient()
for case in cases:
    model = mlflow.pyfunc.load_model(case["uri"])
    run = client.get_run(case["final_run_id"])
    logged = pd.read_parquet(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/test_predictions.parquet"))
    rows = pd.read_parquet(case["rows"]) if case["rows"].endswith(".parquet") else pd.read_csv(case["rows"])
    if case["kind"] == "series":
        got = model.predict(rows, params={"rolling": True})
        assert list(got.columns) == list(logged.columns), (got.columns, logged.columns)
        error = got["prediction"].to_numpy() - got["actual"].to_numpy()
        mine = {"rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error)))}
        diff = float(np.max(np.abs(got["prediction"].to_numpy() - logged["prediction"].to_numpy())))
        same_rows = bool((got[case["time_column"]] == logged[case["time_column"]]).all())
    else:
        truth = rows.pop(case["target"])
        got = model.predict(rows)
        proba = [c for c in got.columns if c.startswith("proba_")]
        diff = float(np.max(np.abs(got[proba].to_numpy() - logged[proba].to_numpy())))
        mine = {
            "accuracy": float(metrics.accuracy_score(truth, got["prediction"])),
            "f1_macro": float(metrics.f1_score(truth, got["prediction"], average="macro")),
        }
        same_rows = bool((got["prediction"].to_numpy() == logged["prediction"].to_numpy()).all())
    torch_module = mlflow.pytorch.load_model(case["uri"])
    local = mlflow.artifacts.download_artifacts(case["uri"])
    out[case["family"]] = {
        "rows": len(got), "logged_rows": len(logged), "max_abs_diff": diff, "metrics": mine,
        "logged": {k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")},
        "same_rows": same_rows, "torch": type(torch_module).__name__,
        "inputs": model.metadata.get_input_schema().input_names(),
        "example": Model.load(local).load_input_example(local).columns.tolist(),
    }
out["imported"] = sorted({"prefect", "optuna", "hyperopt"} & {m.split(".")[0] for m in sys.modules})
print(json.dumps(out))
"""


def _series_test_history(champions, summary) -> Path:
    """The raw rows that hold every test window: the CSV ordered by time, from ``lookback`` rows before the test
    split (its size from the data card) to the end. Built here from the file, not taken from the pipeline."""
    mlflow.set_tracking_uri(summary.mlflow_tracking_uri)
    stage = _stage_run(champions, summary, "data_prep")
    card = mlflow.artifacts.load_dict(f"runs:/{stage.info.run_id}/data_card.json")
    frame = pd.read_csv(champions["series"]).sort_values("week")
    start = card["rows"]["train"] + card["rows"]["val"] - card["lookback"]
    path = champions["work"] / f"{summary.experiment}-history.csv"
    frame.iloc[start:].to_csv(path, index=False)
    return path


def _stage_run(champions, summary, stage: str, pipeline_run_id: str | None = None):
    client = _client(champions)
    return client.search_runs(
        [client.get_experiment_by_name(summary.experiment).experiment_id],
        f"tags.`mlflow.parentRunId` = '{pipeline_run_id or summary.pipeline_run_id}' "
        f"and tags.`automl.stage` = '{stage}'",
    )[0]


def test_the_champion_reproduces_the_logged_test_predictions_in_a_fresh_process(champions):
    cases = []
    client = _client(champions)
    for family, summary in champions["summaries"].items():
        name = summary.registered_model.name
        champion = client.get_model_version_by_alias(name, "champion")  # its run: the final_train stage that made it
        final = client.get_run(champion.run_id)
        if family in ("mlp", "gbm"):  # the test rows of the run that made the champion (its seed's split)
            prep = _stage_run(champions, summary, "data_prep", final.data.tags["mlflow.parentRunId"])
            rows = mlflow.artifacts.download_artifacts(
                f"runs:/{prep.info.run_id}/splits/test.parquet", dst_path=str(champions["work"] / f"{family}-test")
            )
            kind = "tabular"
        else:
            rows, kind = str(_series_test_history(champions, summary)), "series"
        cases.append(
            {
                "family": family,
                "uri": f"models:/{name}@champion",
                "final_run_id": final.info.run_id,
                "rows": rows,
                "kind": kind,
                "target": "species",
                "time_column": "week",
            }
        )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{champions['state'] / 'mlflow.db'}"}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_CHECK, json.dumps(cases)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=champions["work"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checked = json.loads(result.stdout.strip().splitlines()[-1])
    assert checked.pop("imported") == []  # the served model needs neither Prefect nor Optuna nor hyperopt
    for family, outcome in checked.items():
        logged = outcome["logged"]
        assert outcome["rows"] == outcome["logged_rows"] > 0, family
        assert outcome["max_abs_diff"] < 1e-5, family
        assert outcome["same_rows"], family  # the same times (series) or labels (tables)
        for metric, value in outcome["metrics"].items():
            assert value == pytest.approx(logged[metric], rel=1e-5, abs=1e-7), (family, metric)
        # one module either way (a gbm's trees are a module too)
        assert outcome["torch"] in {"LSTMRegressor", "TransformerRegressor", "MLP", "GbmModel", "Ensemble"}, family
    assert checked["lstm"]["inputs"] == checked["lstm"]["example"] == ["week", "sales", "temperature"]
    assert (
        checked["mlp"]["inputs"]
        == checked["mlp"]["example"]
        == [
            "island",
            "bill_length_mm",
            "bill_depth_mm",
            "flipper_length_mm",
            "body_mass_g",
            "sex",
            "year",
        ]
    )
    # the pipeline's experiments open on their runs in MLflow 3's UI (not its GenAI view)
    experiment = _client(champions).get_experiment_by_name("tiny_lstm")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"] == "A tiny LSTM forecasting weekly sales."  # the UI's description


def test_automl_predict_writes_a_forecast_and_table_predictions(champions, tmp_path):
    history = tmp_path / "recent.csv"
    pd.read_csv(champions["series"]).tail(30).to_csv(history, index=False)
    out = tmp_path / "forecast.parquet"
    result = subprocess.run(
        [
            AUTOML,
            "predict",
            "--model",
            "models:/tiny_lstm@champion",
            "--data",
            str(history),
            "--out",
            str(out),
            "--json",
        ],
        env={**os.environ, "AUTOML_HOME": str(champions["state"])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    version = _client(champions).get_model_version_by_alias("tiny_lstm", "champion").version
    assert record == {
        "rows": 2,
        "model_uri": "models:/tiny_lstm@champion",
        "model_name": "tiny_lstm",
        "model_version": int(version),
        "out": str(out),
    }
    forecast = pd.read_parquet(out)
    last = pd.Timestamp(pd.read_csv(history)["week"].iloc[-1])
    assert list(forecast.columns) == ["origin", "week", "step", "prediction"]
    assert forecast["week"].tolist() == [last + pd.Timedelta(days=7), last + pd.Timedelta(days=14)]
    assert forecast["step"].tolist() == [1, 2] and forecast["prediction"].between(5, 20).all()


def test_automl_predict_loads_no_prefect_and_warns_of_a_pin_this_environment_misses(champions, tmp_path):
    """``automl predict`` runs no flow, so it pays for no Prefect import (about 0.6 s of its start-up); it checks
    the model's pinned requirements itself (MLflow's check mapped every installed package first: 0.55 s)."""
    from automl.tasks.registry.prediction import requirement_mismatches

    rows = tmp_path / "rows.csv"
    pd.read_csv(REPO / "configs" / "data" / "penguins.csv").drop(columns=["species"]).head(20).to_csv(rows, index=False)
    out = tmp_path / "p.csv"
    argv = ["predict", "--model", "models:/tiny_penguins@champion", "--data", str(rows), "--out", str(out)]
    code = f"import sys; from automl.cli import main; print(main({argv!r}), 'prefect' in sys.modules)"
    downloads = set(Path(tempfile.gettempdir()).glob("automl-model-*"))
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "AUTOML_HOME": str(champions["state"])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.split() == ["0", "False"], result.stderr[-3000:]
    assert set(Path(tempfile.gettempdir()).glob("automl-model-*")) == downloads  # the model's download is gone
    assert "is required" not in result.stderr  # the registered model's pins are this environment's

    pins = tmp_path / "requirements.txt"
    pins.write_text(
        f"torch=={torch_version()}\n# a comment\n--extra-index-url https://example.org\n"
        "numpy==0.0.1\nno-such-package-anywhere==1.0\nmlflow>=1\n"
    )
    assert requirement_mismatches(pins) == [
        f"numpy==0.0.1 is required; {np.__version__} is installed",
        "no-such-package-anywhere==1.0 is required; it is not installed",
    ]
    assert requirement_mismatches(tmp_path / "missing.txt") == []


def torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


def test_automl_predict_reads_the_config_champion_and_rolls_over_history(champions, monkeypatch, capsys):
    monkeypatch.setenv("AUTOML_HOME", str(champions["state"]))
    rows = champions["work"] / "some-penguins.csv"
    pd.read_csv(REPO / "configs" / "data" / "penguins.csv").head(7).to_csv(rows, index=False)  # labelled rows
    # a "large" file: scored in chunks, a progress line each
    monkeypatch.setattr("automl.tasks.registry.prediction.CHUNK_ROWS", 3)
    assert main(["predict", "--config", str(champions["configs"]["mlp"]), "--data", str(rows)]) == 0
    captured = capsys.readouterr()
    assert [line.split(": ", 1)[1] for line in captured.err.strip().splitlines()] == [
        "column 'species' is the target this model predicts: not an input (kept in the output)",
        "scored 3 of 7 rows (43%)",
        "scored 6 of 7 rows (86%)",
        "scored 7 of 7 rows (100%)",
    ]
    table = pd.read_csv(io.StringIO(captured.out))
    assert len(table) == 7 and {"island", "species", "prediction", "proba_Adelie", "proba_Gentoo"} <= set(table.columns)
    assert np.allclose(table.filter(like="proba_").sum(axis=1), 1.0, atol=1e-5)
    assert set(table["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"}

    rolled_csv = champions["work"] / "rolled.csv"
    args = ["--model", "models:/tiny_lstm@champion", "--data", str(champions["series"]), "--rolling"]
    assert main(["predict", *args, "--out", str(rolled_csv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] == (220 - 8 - 2 + 1) * 2
    rolled = pd.read_csv(rolled_csv)  # every window of the history, 2 steps each
    assert list(rolled.columns) == ["origin", "week", "step", "prediction", "actual"]
    assert main(["predict", *args, "--json"]) == 0  # no --out: the predictions themselves, a JSON object a line
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(records) == len(rolled) and list(records[0]) == list(rolled.columns)
    assert [r["prediction"] for r in records] == pytest.approx(rolled["prediction"].tolist(), rel=1e-5)


def _write(path: Path, frame: pd.DataFrame | None) -> str:
    if frame is None:
        path.write_text("")
    else:
        frame.to_csv(path, index=False)
    return str(path)


def _history(n: int = 30) -> pd.DataFrame:
    return make_series(220).tail(n).reset_index(drop=True)


PENGUINS = REPO / "configs" / "data" / "penguins.csv"
LSTM = "models:/tiny_lstm@champion"
MLP = "models:/tiny_penguins@champion"
BAD_PREDICT_INPUTS = {
    "missing column": (LSTM, lambda: _history().drop(columns="temperature"), [], "column 'temperature' is missing"),
    "extra column": (LSTM, lambda: _history().assign(store=1), [], "column 'store' is not an input of this model"),
    "wrong type": (
        LSTM,
        lambda: _history().astype({"sales": object}).assign(sales=lambda f: f["sales"].where(f.index != 3, "lots")),
        [],
        "column 'sales' must be numeric; found 'lots'",
    ),
    "too little history": (
        LSTM,
        lambda: _history(5),
        [],
        "too little history: 5 rows of 'week'; this model needs at least 8",
    ),
    "too little history to roll": (
        LSTM,
        lambda: _history(9),
        ["--rolling"],
        "needs at least 10 (lookback 8 + horizon 2)",
    ),
    "unparseable time": (
        LSTM,
        lambda: _history().assign(week=lambda f: f["week"].where(f.index != 2, "someday")),
        [],
        "column 'week' is not a date/time",
    ),
    "duplicate time": (
        LSTM,
        lambda: _history().assign(week=lambda f: f["week"].where(f.index != 2, f["week"][1])),
        [],
        "column 'week' has duplicate timestamps",
    ),
    "every other week": (
        LSTM,
        lambda: make_series(220).iloc[::2].tail(30),
        [],
        "column 'week': rows are 14 days apart; the model was trained on steps of 7 days",
    ),
    "hourly rows for a weekly model": (
        LSTM,
        lambda: _history().assign(week=pd.date_range("2004-01-03", periods=30, freq="h").astype(str)),
        [],
        "column 'week': rows are 1 hour apart; the model was trained on steps of 7 days",
    ),
    "empty file": (LSTM, lambda: None, [], "the file is empty"),
    "header only": (LSTM, lambda: _history().head(0), [], "no data rows"),
    "unknown model": ("models:/no_such_model@champion", _history, [], "no registered model 'no_such_model'"),
    "unknown alias": ("models:/tiny_lstm@gold", _history, [], "model 'tiny_lstm' has no alias 'gold'"),
    "unknown version": ("models:/tiny_lstm/99", _history, [], "model 'tiny_lstm' has no version 99"),
    "not a model uri": ("runs:/abc/model", _history, [], "is not a registered model URI"),
    "category model asked to roll": (
        MLP,
        lambda: pd.read_csv(PENGUINS).drop(columns="species").head(5),
        ["--rolling"],
        "rolling predictions are for time-series models",
    ),
    "absurdly large number": (
        MLP,
        lambda: pd.read_csv(PENGUINS).drop(columns="species").head(5).assign(body_mass_g=1e300),
        [],
        "column 'body_mass_g': data row 1 holds 1e+300; values must be finite",
    ),
    "text in a numeric column": (
        MLP,
        lambda: (
            pd.read_csv(PENGUINS)
            .drop(columns="species")
            .head(5)
            .astype({"body_mass_g": object})
            .assign(body_mass_g="heavy")
        ),
        [],
        "column 'body_mass_g' must be numeric; found 'heavy'",
    ),
    "output not csv or parquet": (LSTM, _history, ["--out", "{tmp}/preds.xlsx"], "must end in .csv or .parquet"),
    "output in a missing folder": (LSTM, _history, ["--out", "{tmp}/nowhere/preds.csv"], "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_PREDICT_INPUTS))
def test_bad_predict_input_is_one_line_exit_2_and_writes_nothing(case, champions, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOML_HOME", str(champions["state"]))
    model, frame, extra, message = BAD_PREDICT_INPUTS[case]
    data = _write(tmp_path / "rows.csv", frame())
    out = tmp_path / "preds.csv"
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    args = ["predict", "--model", model, "--data", data, *(extra if "--out" in extra else [*extra, "--out", str(out)])]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]  # nothing written, not even a temp file


def test_categories_given_as_numbers_or_all_missing_are_scored_as_in_training(champions, tmp_path, monkeypatch):
    """MLflow's own schema check would refuse numbers or an all-missing (float) column for a category; the
    model's inputs are of type "any" and it converts categories to text as data prep did."""
    rows = pd.read_csv(PENGUINS).drop(columns="species").head(5).assign(sex=np.nan, island=3)
    mlflow.set_tracking_uri(f"sqlite:///{champions['state'] / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/tiny_penguins@champion")
    assert model.predict(rows)["prediction"].isin(["Adelie", "Chinstrap", "Gentoo"]).all()
    monkeypatch.setenv("AUTOML_HOME", str(champions["state"]))
    data = _write(tmp_path / "rows.csv", rows)
    assert main(["predict", "--model", MLP, "--data", data, "--out", str(tmp_path / "p.parquet")]) == 0
    assert len(pd.read_parquet(tmp_path / "p.parquet")) == 5


def test_predict_without_a_registry_creates_none(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOML_HOME", str(tmp_path / "state"))
    data = _write(tmp_path / "rows.csv", _history())
    assert main(["predict", "--model", LSTM, "--data", data]) == 2
    assert "no MLflow registry at" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_a_run_with_another_seed_is_compared_with_the_champion_on_its_own_test_rows(champions):
    """The second MLP run (seed 8) tests on other rows than the first (seed 42): the champion (version 1) is scored
    on the second run's test rows, and both recorded metrics are recomputed here from the two registered models."""
    from sklearn.metrics import f1_score

    first, second = champions["summaries"]["mlp"], champions["second"]
    assert (first.registered_model.version, second.registered_model.version) == (1, 2)
    assert first.promotion.champion_version is None and first.promotion.promoted
    rows = {}
    for summary in (first, second):
        prep = _stage_run(champions, summary, "data_prep")
        path = f"runs:/{prep.info.run_id}/splits/test.parquet"
        rows[summary.pipeline_run_id] = pd.read_parquet(mlflow.artifacts.download_artifacts(path))
    theirs, ours = rows[first.pipeline_run_id], rows[second.pipeline_run_id]
    assert not theirs.equals(ours)  # other seeds, other test rows
    promotion = second.promotion
    assert promotion.champion_version == 1 and promotion.rows == len(ours) and promotion.metric == "f1_macro"
    truth = ours.pop("species").astype(str)
    mlflow.set_tracking_uri(f"sqlite:///{champions['state'] / 'mlflow.db'}")
    recomputed = {}
    for version in (1, 2):
        predicted = mlflow.pyfunc.load_model(f"models:/tiny_penguins/{version}").predict(ours)
        classes = [c.removeprefix("proba_") for c in predicted.columns if c.startswith("proba_")]
        recomputed[version] = f1_score(truth, predicted["prediction"].astype(str), average="macro", labels=classes)
    assert promotion.champion_metric == pytest.approx(recomputed[1])
    assert promotion.challenger_metric == pytest.approx(recomputed[2])
    assert promotion.challenger_metric == pytest.approx(second.test_metrics["f1_macro"])
    assert promotion.promoted is (recomputed[2] > recomputed[1]) is second.champion
    recorded = second.to_json()["promotion"]
    assert {k: recorded[k] for k in ("champion_version", "rows", "promoted")} == {
        "champion_version": 1,
        "rows": len(ours),
        "promoted": second.champion,
    }
    tags = _client(champions).get_model_version("tiny_penguins", "2").tags
    assert tags["automl.promotion.rows"] == str(len(ours))


def test_a_series_champion_is_scored_on_the_forecasts_both_models_make(champions, monkeypatch):
    """Series: the challenger's rolling test forecasts are matched with the champion's by target time and step;
    a champion of other columns cannot score the rows at all."""
    from automl.tasks.final_train.promotion import compare_on_rows
    from automl.tasks.registry.prediction import load_registered_model

    monkeypatch.setenv("AUTOML_HOME", str(champions["state"]))
    mlflow.set_tracking_uri(f"sqlite:///{champions['state'] / 'mlflow.db'}")  # the autouse fixture clears it after
    history = pd.read_csv(_series_test_history(champions, champions["summaries"]["lstm"]))
    lstm = load_registered_model("models:/tiny_lstm@champion")
    transformer = load_registered_model("models:/tiny_transformer@champion")
    rows = lstm.pyfunc.predict(history, params={"rolling": True})
    compared = compare_on_rows(transformer, rows, history, "regression", "week")
    theirs = transformer.pyfunc.predict(history, params={"rolling": True}).merge(rows, on=["week", "step"])
    assert compared.rows == len(theirs) > 0
    rmse = lambda a, b: float(np.sqrt(np.mean((a.to_numpy() - b.to_numpy()) ** 2)))  # noqa: E731
    assert compared.champion_metric == pytest.approx(rmse(theirs["prediction_x"], theirs["actual_y"]))
    assert compared.challenger_metric == pytest.approx(rmse(theirs["prediction_y"], theirs["actual_y"]))
    penguins = load_registered_model("models:/tiny_penguins/1")
    with pytest.raises(ValueError, match="scores table rows"):
        compare_on_rows(penguins, rows, history, "regression", "week")


def test_champion_history_records_every_move_and_set_rolls_back(champions, monkeypatch, capsys):
    monkeypatch.setenv("AUTOML_HOME", str(champions["state"]))
    first, second = champions["summaries"]["mlp"], champions["second"]
    client = _client(champions)
    before = str(client.get_model_version_by_alias("tiny_penguins", "champion").version)
    other = "1" if before == "2" else "2"

    assert main(["champion", "set", "tiny_penguins", other, "--note", "trying it"]) == 0
    assert main(["champion", "set", "tiny_penguins", before, "--note", "rollback"]) == 0
    assert str(client.get_model_version_by_alias("tiny_penguins", "champion").version) == before
    capsys.readouterr()

    assert main(["champion", "history", "tiny_penguins", "--json"]) == 0
    moves = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert moves[0]["from_version"] is None and moves[0]["to_version"] == "1"
    assert moves[0]["by"] == f"pipeline run {first.pipeline_run_id}"
    assert moves[0]["pipeline_run_id"] == first.pipeline_run_id
    assert moves[0]["metric"] == "f1_macro" and moves[0]["value"] == pytest.approx(first.test_metrics["f1_macro"])
    if second.champion:  # the second run beat the first on its test rows: both values measured there
        assert moves[1]["from_version"] == "1" and moves[1]["to_version"] == "2"
        assert moves[1]["previous_value"] == pytest.approx(second.promotion.champion_metric)
        assert moves[1]["rows"] == second.promotion.rows
    assert [(m["from_version"], m["to_version"], m["note"]) for m in moves[-2:]] == [
        (before, other, "trying it"),
        (other, before, "rollback"),
    ]
    assert moves[-1]["by"].startswith("automl champion set (")
    assert len(moves) == 1 + int(second.champion) + 2

    assert main(["champion", "history", "tiny_penguins"]) == 0
    table = capsys.readouterr().out
    assert "rollback" in table and f"pipeline run {first.pipeline_run_id}" in table

    # to the champion it already is, however the version is spelt: said, and nothing recorded
    assert main(["champion", "set", "tiny_penguins", f"0{before}"]) == 0
    assert "already the champion" in capsys.readouterr().out
    assert main(["champion", "set", "tiny_penguins", before, "--json"]) == 0
    said = capsys.readouterr()
    assert json.loads(said.out) == {"name": "tiny_penguins", "moved": False, "to_version": before}
    assert "already the champion" in said.err
    assert main(["champion", "history", "tiny_penguins", "--json"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(moves)

    assert main(["champion", "set", "tiny_penguins", "42"]) == 2
    assert "model 'tiny_penguins' has no version '42'" in capsys.readouterr().err
    assert main(["champion", "history", "nobody"]) == 2
    assert "no registered model 'nobody'" in capsys.readouterr().err


def _serve(model_uri: str, champions) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{champions['state'] / 'mlflow.db'}",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the server runs uvicorn from the venv
    }
    process = subprocess.Popen(
        [
            BIN / "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def _wait_until_up(process: subprocess.Popen, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mlflow models serve exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow models serve did not answer on {url}")


def test_mlflow_models_serve_answers_raw_json_rows_for_both_kinds(champions):
    servers = [_serve("models:/tiny_lstm@champion", champions), _serve("models:/tiny_penguins@champion", champions)]
    try:
        for process, url in servers:  # both start at once; wait for each
            _wait_until_up(process, url)
        (_, series_url), (_, table_url) = servers

        history = _history(12)
        records = json.loads(history.to_json(orient="records"))  # JSON as a client sends it
        answer = httpx.post(f"{series_url}/invocations", json={"dataframe_records": records}, timeout=60)
        assert answer.status_code == 200, answer.text
        forecast = answer.json()["predictions"]
        assert [row["step"] for row in forecast] == [1, 2]
        last = pd.Timestamp(history["week"].iloc[-1])
        assert [pd.Timestamp(row["week"]) for row in forecast] == [last + pd.Timedelta(days=7 * k) for k in (1, 2)]
        rolled = httpx.post(
            f"{series_url}/invocations", json={"dataframe_records": records, "params": {"rolling": True}}, timeout=60
        ).json()["predictions"]
        assert len(rolled) == (12 - 8 - 2 + 1) * 2 and all("actual" in row for row in rolled)
        bad = httpx.post(
            f"{series_url}/invocations",
            json={"dataframe_records": json.loads(history.drop(columns="temperature").to_json(orient="records"))},
            timeout=60,
        )
        assert bad.status_code == 400 and "temperature" in bad.json()["message"]

        penguins = pd.read_csv(PENGUINS).drop(columns="species").iloc[[0, 3, 150, 300]]  # row 3 has missing values
        body = {"dataframe_split": json.loads(penguins.to_json(orient="split", index=False))}
        answer = httpx.post(f"{table_url}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        rows = answer.json()["predictions"]
        assert len(rows) == 4 and all(row["prediction"] in {"Adelie", "Chinstrap", "Gentoo"} for row in rows)
        assert all(abs(sum(v for k, v in row.items() if k.startswith("proba_")) - 1) < 1e-5 for row in rows)

        mlflow.set_tracking_uri(f"sqlite:///{champions['state'] / 'mlflow.db'}")
        local = mlflow.pyfunc.load_model("models:/tiny_penguins@champion").predict(penguins)
        assert [row["proba_Gentoo"] for row in rows] == pytest.approx(local["proba_Gentoo"].tolist(), abs=1e-6)
    finally:
        for process, _ in servers:
            stop_process_group(process, signal.SIGTERM)
