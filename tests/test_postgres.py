"""Shared storage on PostgreSQL: two workers share one Optuna study, and a pipeline keeps its study and its
MLflow runs in PostgreSQL with the same results as on SQLite.

Runs when AUTOML_TEST_POSTGRES_URL points at a server (.ci/run sets it to the one on 127.0.0.1:5432) and fails
loudly when that server cannot be reached; skips, saying so, when the variable is not set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from itertools import pairwise

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.helpers import REPO, make_series, write_config
from tests.test_cli import AUTOML

SERVER = os.environ.get("AUTOML_TEST_POSTGRES_URL")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not SERVER, reason="AUTOML_TEST_POSTGRES_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"
    ),
]


@pytest.fixture(scope="module")
def databases():
    """Two fresh databases for this session (Optuna, MLflow), dropped afterwards."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(SERVER)
    try:
        admin = psycopg2.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database,
            connect_timeout=5,
        )
    except psycopg2.OperationalError as exc:
        pytest.fail(f"AUTOML_TEST_POSTGRES_URL={SERVER} is set but the server cannot be reached: {exc}")
    admin.autocommit = True
    names = [f"automl_{what}_{uuid.uuid4().hex[:8]}" for what in ("optuna", "mlflow")]
    with admin.cursor() as cursor:
        for name in names:
            cursor.execute(f'CREATE DATABASE "{name}"')
    base = url.set(drivername="postgresql+psycopg2")
    yield [base.set(database=name).render_as_string(hide_password=False) for name in names]
    with admin.cursor() as cursor:
        for name in names:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_two_workers_share_one_postgres_study(databases):
    optuna_db = databases[0]
    worker = str(REPO / "tests" / "shared_study_worker.py")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, worker, optuna_db, "shared", "12", name],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("worker-a", "worker-b")
    ]
    for process in processes:  # both have loaded the study: start them together
        assert process.stdout.readline().strip() == "ready", process.stderr.read()[-2000:]
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    trials = optuna.load_study(study_name="shared", storage=optuna_db).trials
    assert len(trials) == 24 and len({t.number for t in trials}) == 24
    assert all(t.state == TrialState.COMPLETE for t in trials)
    owners = [t.user_attrs["pipeline_run_id"] for t in sorted(trials, key=lambda t: t.number)]
    assert owners.count("worker-a") == owners.count("worker-b") == 12
    switches = sum(a != b for a, b in pairwise(owners))
    assert switches > 2, "the workers ran one after the other instead of sharing the study"


def test_a_pipeline_on_postgres_stores_its_study_and_runs_there(databases, tmp_path):
    optuna_db, mlflow_db = databases
    csv = tmp_path / "data.csv"
    make_series(220).to_csv(csv, index=False)
    config = write_config(tmp_path, csv, name="on_postgres", search={"n_trials": 3, "storage": optuna_db})
    env = {**os.environ, "AUTOML_HOME": str(tmp_path / "state"), "MLFLOW_TRACKING_URI": mlflow_db}
    result = subprocess.run(
        [AUTOML, "run", str(config), "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["storage"].startswith("postgresql+psycopg2://") and summary["mlflow_tracking_uri"] == mlflow_db

    study = optuna.load_study(study_name=summary["study_name"], storage=optuna_db)
    assert len(study.trials) == 3 and study.best_params == summary["best_params"]
    client = MlflowClient(tracking_uri=mlflow_db)
    parent = client.get_run(summary["pipeline_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_val_loss"] == pytest.approx(
        summary["best_val_loss"]
    )
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.data.tags["automl.stage"] for r in children) == ["data_prep", "final_train", "search", "warm_start"]
    assert not (tmp_path / "state" / "mlflow.db").exists()  # nothing went to the local SQLite store
