"""The fitted preprocessing and the raw-data model, without a pipeline: the raw path gives exactly the arrays and
predictions of the tensor path (tabular regression with gaps, categories and integers), unseen categories
encode as in training, bad raw rows are one line naming the column, and the classification report copes with
absent and many classes."""

from __future__ import annotations

import json
import os
import re

import mlflow
import numpy as np
import pandas as pd
import pytest

from automl.configs import load_config
from automl.models import ModelShape, build_model, get_family, predict
from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
from automl.tasks.data_prep.preprocessing import RawInputError, TabularPreprocessing, preprocessing_from_dict
from automl.tasks.registry.raw_model import predict_raw
from tests.helpers import REPO, write_config


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path, monkeypatch):
    """MLflow's default experiment keeps its artifacts in ./mlruns: these tests log there, so they run in tmp_path
    (before, they left an mlruns/ folder in the checkout)."""
    monkeypatch.chdir(tmp_path)


def _table(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "size": rng.normal(50, 10, n),
            "rooms": rng.integers(1, 6, n),  # integers in the file
            "city": rng.choice(["north", "south", "east"], n),
            "price": rng.normal(300, 50, n),
        }
    )
    frame.loc[[3, 17], "size"] = np.nan
    frame.loc[[5], "city"] = None
    return frame


def _houses_config(tmp_path, path):
    """An MLP regression config for the ``_table`` data at ``path``."""
    return write_config(
        tmp_path,
        path,
        name="houses",
        model={"family": "mlp"},
        data={"path": str(path), "target": "price", "time_column": None, "task": "regression"},
        search={"n_trials": 1, "epochs": 1, "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2}}},
    )


def _prepared_table(tmp_path):
    path = tmp_path / "houses.csv"
    _table().to_csv(path, index=False)
    config = _houses_config(tmp_path, path)
    cfg = load_config(config)
    checked = load_and_check(cfg)
    frame, plan, fp = checked.frame, checked.plan, checked.fingerprint
    prepared, _ = prepare(frame, DataPrepJob.of(cfg), plan, fp)
    family = get_family("mlp")
    model = build_model(family, ModelShape(prepared.n_features, prepared.n_outputs), family.defaults, seed=0)
    return prepared, model


def test_the_raw_path_reproduces_the_tensor_path_for_a_regression_table(tmp_path):
    prepared, model = _prepared_table(tmp_path)
    pre = preprocessing_from_dict(json.loads(json.dumps(prepared.preprocessing)))  # as saved with the model
    assert isinstance(pre, TabularPreprocessing) and pre.features == ["size", "rooms", "city"]
    raw = prepared.raw_test_input
    np.testing.assert_array_equal(pre.encode(pre.check(raw)), prepared.test.X)
    expected = prepared.to_original_units(predict(model, prepared.test.X))[:, 0]
    got = predict_raw(model, pre, raw)["prediction"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)

    # numbers as text (a JSON or CSV reader's choice) and integers in a float column are the same rows
    as_text = raw.astype({"size": str, "rooms": float}).replace({"size": {"nan": None}})
    np.testing.assert_allclose(predict_raw(model, pre, as_text)["prediction"].to_numpy(), expected, rtol=1e-6)


def test_unseen_categories_and_missing_values_encode_as_in_training(tmp_path):
    prepared, _ = _prepared_table(tmp_path)
    pre = preprocessing_from_dict(prepared.preprocessing)
    rows = pd.DataFrame({"size": [None, 40.0], "rooms": [2, 3], "city": ["atlantis", None]})
    encoded = pre.encode(pre.check(rows))
    city = [i for i, name in enumerate(pre.encoded_features) if name.startswith("city=")]
    assert encoded[0, city].tolist() == [0.0] * len(city)  # unseen: all zeros, like a category cut in training
    mode = pre.categorical["city"]["mode"]
    assert encoded[1, city].tolist() == [1.0 if pre.encoded_features[i] == f"city={mode}" else 0.0 for i in city]
    median = pre.numeric["size"]
    assert encoded[0, 0] == pytest.approx((median["median"] - median["mean"]) / median["std"])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (pd.DataFrame({"size": [1.0], "rooms": [2]}), "column 'city' is missing"),
        (
            pd.DataFrame({"size": ["big"], "rooms": [2], "city": ["north"]}),
            "column 'size' must be numeric; found 'big'",
        ),
        (pd.DataFrame({"size": [np.inf], "rooms": [2], "city": ["north"]}), "column 'size': data row 1 holds inf"),
        (pd.DataFrame({"size": [1e300], "rooms": [2], "city": ["north"]}), "data row 1 holds 1e+300; values must be"),
        (pd.DataFrame({"size": [True], "rooms": [2], "city": ["north"]}), "column 'size' must be numeric"),
        (pd.DataFrame({"size": [], "rooms": [], "city": []}), "no rows to predict"),
    ],
)
def test_bad_raw_rows_name_the_column(tmp_path, rows, message):
    prepared, model = _prepared_table(tmp_path)
    with pytest.raises(RawInputError, match=re.escape(message)):
        predict_raw(model, preprocessing_from_dict(prepared.preprocessing), rows)


def test_a_logged_model_takes_boolean_and_category_columns(tmp_path):
    """A True/False column and a pandas category column (from Parquet) are categories for data prep; the logged
    model takes them as they are and predicts what the tensor path predicts."""
    from automl.tasks.registry.raw_model import log_raw_model

    path = tmp_path / "houses.parquet"
    _table().assign(garden=lambda f: f.index % 2 == 0, city=lambda f: f["city"].astype("category")).to_parquet(path)
    config = _houses_config(tmp_path, path)
    cfg = load_config(config)
    checked = load_and_check(cfg)
    frame, plan, fp = checked.frame, checked.plan, checked.fingerprint
    assert set(plan.categorical) == {"city", "garden"}
    prepared, _ = prepare(frame, DataPrepJob.of(cfg), plan, fp)
    family = get_family("mlp")
    model = build_model(family, ModelShape(prepared.n_features, prepared.n_outputs), family.defaults, seed=0)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run():
        info = log_raw_model(model, preprocessing_from_dict(prepared.preprocessing), prepared.raw_test_input)
    served = mlflow.pyfunc.load_model(info.model_uri)
    expected = prepared.to_original_units(predict(model, prepared.test.X))[:, 0]
    got = served.predict(prepared.raw_test_input)["prediction"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert mlflow.pytorch.load_model(info.model_uri)(__import__("torch").zeros(2, prepared.n_features)).shape == (2, 1)


@pytest.mark.parametrize(("n_classes", "matrix"), [(4, True), (35, False)])
def test_the_classification_report_copes_with_absent_and_many_classes(tmp_path, n_classes, matrix):
    from automl.tasks.data_prep.prepared import PreparedData, Split
    from automl.tasks.final_train.plots import log_classification_report

    y_true = np.array([0, 1, 1, 0, 1])  # classes 2.. never occur in the test split
    proba = np.zeros((5, n_classes))
    proba[:, 0] = 1.0  # and the model only ever predicts class 0
    empty = Split(np.zeros((0, 1)), np.zeros(0))
    prepared = PreparedData(
        kind="tabular",
        task="classification",
        train=empty,
        val=empty,
        test=Split(np.zeros((5, 1)), y_true),
        feature_names=["x"],
        n_outputs=n_classes,
        lookback=None,
        target="label",
        classes=[f"c{i}" for i in range(n_classes)],
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        log_classification_report(prepared, y_true, proba, "tuned")
    client = mlflow.MlflowClient()
    per_class = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/per_class_metrics.csv"))
    assert per_class["class"].tolist() == [f"c{i}" for i in range(n_classes)]
    assert per_class.loc[0, "recall"] == 1.0 and per_class["support"].sum() == 5
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert ("plots/confusion_matrix.png" in plots) is matrix


def test_a_rerun_after_a_kill_in_registration_reuses_the_version_and_its_champion(tmp_path):
    """Killed after registering (and even after moving the alias), the resumed stage registers again: it finds
    the version its pipeline run made and neither adds a second one nor records a second move."""
    from automl.tasks.final_train.registration import register
    from automl.tasks.registry.champion import champion_history
    from automl.tasks.registry.raw_model import log_raw_model
    from automl.tasks.summary import RegisteredVersion
    from automl.tasks.tracking.runs import PipelineRun

    prepared, model = _prepared_table(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        info = log_raw_model(model, preprocessing_from_dict(prepared.preprocessing), prepared.raw_test_input)
        pipeline = PipelineRun(run.info.run_id, run.info.experiment_id, "houses", "study")
        first = register(info.model_uri, "houses", prepared, {"rmse": 1.0, "mae": 1.0, "mse": 1.0}, pipeline, None)
        again = register(info.model_uri, "houses", prepared, {"rmse": 1.0, "mae": 1.0, "mse": 1.0}, pipeline, None)
    client = mlflow.MlflowClient()
    assert [v.version for v in client.search_model_versions("name = 'houses'")] == [1]
    assert first[:2] == again[:2] == (RegisteredVersion("houses", 1), info.model_uri)
    assert first[3].promoted and again[3].promoted and "champion already" in again[2]
    assert len(champion_history(client, "houses")) == 1


def test_loading_a_registered_model_keeps_the_installed_package_first_and_reads_older_models(tmp_path):
    """MLflow puts a loaded model's own copy of its code (a partial ``tasks`` package) first on ``sys.path``; processes
    started later (Dask workers) would import it instead of the project, so ``automl predict`` and the score flow take
    it off again. A model registered before ``tasks/`` had rooms pickled its class as ``tasks.raw_model``."""
    import pickle
    import subprocess
    import sys

    from automl.tasks.final_train.registration import register
    from automl.tasks.registry.prediction import _installed_code_first, load_registered_model
    from automl.tasks.registry.raw_model import RawDataModel, log_raw_model
    from automl.tasks.tracking.runs import PipelineRun

    prepared, model = _prepared_table(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        info = log_raw_model(model, preprocessing_from_dict(prepared.preprocessing), prepared.raw_test_input)
        register(
            info.model_uri, "houses", prepared, {"rmse": 1.0}, PipelineRun(run.info.run_id, "0", "houses", "s"), None
        )
    before = list(sys.path)
    loaded = load_registered_model("models:/houses/1")
    assert sys.path == before
    assert loaded.pyfunc.predict(prepared.raw_test_input).shape[0] == len(prepared.raw_test_input)
    child = subprocess.run(
        [sys.executable, "-c", "import sys, automl.tasks.search_stage.objective; print('ok')"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.stdout.strip() == "ok", child.stderr[-500:]  # a child process sees the whole project
    current = pickle.dumps(RawDataModel(), protocol=0)
    for old in (b"tasks.raw_model", b"tasks.registry.raw_model"):  # before tasks/ had rooms; before automl.tasks
        legacy = current.replace(b"automl.tasks.registry.raw_model", old)
        with _installed_code_first():  # while a model loads, the old names are the modules' homes now
            assert b"automl." not in legacy and type(pickle.loads(legacy)) is RawDataModel
    assert not {"tasks", "models", "tasks.raw_model", "models.mlp"} & set(sys.modules)  # and then no longer

    # MLflow's own loader, as a user calls it: where the package is installed, the model's copy of its code stands
    # aside (``import automl`` is still the package, its API included); where it is not, the copy serves alone
    rows = tmp_path / "rows.parquet"
    prepared.raw_test_input.to_parquet(rows)
    load = (
        "import mlflow, pandas; m = mlflow.pyfunc.load_model('models:/houses/1'); "
        f"n = len(m.predict(pandas.read_parquet({str(rows)!r})))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    installed = subprocess.run(
        [sys.executable, "-c", f"{load}; import automl; from automl import load_champion; print(n, automl.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    expected = str(len(prepared.raw_test_input))
    assert installed.stdout.split() == [expected, str(REPO / "automl" / "__init__.py")], installed.stderr[-800:]
    site = next(p for p in sys.path if p.endswith("site-packages"))
    alone = subprocess.run(  # -S: no site-packages .pth files, so no installed automl; the libraries by PYTHONPATH
        [sys.executable, "-S", "-c", f"{load}; import automl; print(n, automl.__file__)"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": site},
        capture_output=True,
        text=True,
        timeout=120,
    )
    count, where = alone.stdout.split() if alone.returncode == 0 else ("", alone.stderr[-800:])
    assert count == expected and where.endswith("/code/automl/__init__.py"), where
