"""Scaling out and surviving faults: parallel trials on Dask worker processes, trial timeouts, two pipelines at
once on the default SQLite stores, and a pipeline killed with SIGKILL mid-search that the same command resumes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import httpx
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from prefect.settings import PREFECT_API_URL

from flows.cli import main
from flows.pipeline import automl_pipeline
from tests.helpers import REPO, make_series, write_config
from tests.test_cli import AUTOML

pytestmark = pytest.mark.e2e


def _mlflow(state: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")


def _all_runs(client: MlflowClient, query: str = "") -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, query, max_results=1000)


def test_parallel_trials_share_one_study_and_one_parent_run(prefect_api, home, series_csv, tmp_path):
    config = write_config(tmp_path, series_csv, search={"n_trials": 4, "parallelism": 2, "epochs": 3})
    started = datetime.now(UTC)
    summary = automl_pipeline(config_path=str(config))
    assert sum(summary["trials"].values()) == 4
    study = optuna.load_study(study_name=summary["study_name"], storage=summary["storage"])
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 4
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in pairwise(spans)), "no two trials overlapped"

    client = _mlflow(home)
    pipelines = _all_runs(client, "tags.`automl.role` = 'pipeline'")
    assert [r.info.run_id for r in pipelines] == [summary["pipeline_run_id"]]
    search = _all_runs(
        client, f"tags.`mlflow.parentRunId` = '{summary['pipeline_run_id']}' and tags.`automl.stage` = 'search'"
    )[0]
    assert search.data.params["parallelism"] == "2"
    assert len(_all_runs(client, f"tags.`mlflow.parentRunId` = '{search.info.run_id}'")) == 4

    # the evaluations the Dask workers ran are task runs in the flow's Prefect API
    body = {
        "task_runs": {"name": {"like_": "trial-"}, "start_time": {"after_": started.isoformat()}},
        "limit": 50,
        "offset": 0,
    }
    evaluations = httpx.post(f"{PREFECT_API_URL.value()}/task_runs/filter", json=body, timeout=30).json()
    assert sorted(t["name"] for t in evaluations if t["state_type"] == "COMPLETED") == [
        f"trial-{n}-rung-0" for n in range(4)
    ]


def test_dask_settings_of_one_parallel_search_leave_dask_defaults_for_the_next():
    # A fresh process where distributed is not imported yet, as `automl serve` before its first parallel run.
    code = (
        "import sys, dask\n"
        "from tasks.search.stage import local_dask_settings\n"
        "assert 'distributed' not in sys.modules\n"
        "with local_dask_settings():\n"
        "    assert dask.config.get('distributed.worker.profile.enabled') is False\n"
        "get = dask.config.get\n"
        "print(get('distributed.comm.timeouts.connect'), get('distributed.worker.profile.enabled'))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["30s", "True"]


def test_trial_timeouts_fail_the_trials_and_the_pipeline_names_the_reason(
    prefect_api, home, series_csv, tmp_path, capsys
):
    config = write_config(tmp_path, series_csv, search={"n_trials": 3})
    code = main(["run", str(config), "--set", "search.trial_timeout=0.001"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: search failed: no trial completed in study")
    assert "most common reason: TimeLimitExceeded: trial_timeout of 0.001s exceeded in epoch 1 of 2" in err[-1]

    client = _mlflow(home)
    runs = _all_runs(client)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    pipeline = next(r for r in runs if r.data.tags.get("automl.role") == "pipeline")
    assert pipeline.info.status == "FAILED" and "SearchFailed" in pipeline.data.tags["mlflow.note.content"]
    trials = [r for r in runs if r.data.tags.get("automl.role") == "trial"]
    assert len(trials) == 3 and all(r.info.status == "FAILED" for r in trials)
    assert all(r.data.tags["automl.fail_reason"].startswith("TimeLimitExceeded: trial_timeout") for r in trials)
    study = optuna.load_study(
        study_name=pipeline.data.tags["automl.study_name"], storage=f"sqlite:///{home / 'optuna.db'}"
    )
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert all("trial_timeout" in t.user_attrs["fail_reason"] for t in study.trials)


def _cli(*args: str, state: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "AUTOML_HOME": str(state)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [AUTOML, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_two_pipelines_at_once_on_the_default_sqlite_stores(tmp_path):
    state = tmp_path / "shared-state"
    csv = tmp_path / "data.csv"
    make_series(240).to_csv(csv, index=False)
    configs = [write_config(tmp_path, csv, name=f"concurrent_{i}", search={"n_trials": 4}) for i in (1, 2)]
    processes = [_cli("run", str(c), "--json", state=state, cwd=tmp_path) for c in configs]
    results = [(p, *p.communicate(timeout=600)) for p in processes]
    for process, _, err in results:
        assert process.returncode == 0, err[-3000:]
        assert "database is locked" not in err
    summaries = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    assert summaries[0]["study_name"] != summaries[1]["study_name"]
    client = _mlflow(state)
    pipelines = _all_runs(client, "tags.`automl.role` = 'pipeline'")
    assert sorted(r.info.status for r in pipelines) == ["FINISHED", "FINISHED"]
    assert len(optuna.get_all_study_summaries(f"sqlite:///{state / 'optuna.db'}")) == 2


def _finished_and_partial(db: Path) -> tuple[int, int]:
    """(finished trials, running trials with at least one rung reported) in the Optuna SQLite database."""
    if not db.exists():
        return 0, 0
    try:
        with sqlite3.connect(db, timeout=1) as connection:
            finished = connection.execute(
                "select count(*) from trials where state in ('COMPLETE', 'PRUNED')"
            ).fetchone()[0]
            partial = connection.execute(
                "select count(distinct t.trial_id) from trials t join trial_intermediate_values v "
                "on t.trial_id = v.trial_id where t.state = 'RUNNING'"
            ).fetchone()[0]
            return finished, partial
    except sqlite3.Error:
        return 0, 0


def test_sigkill_mid_search_then_the_same_command_resumes(tmp_path):
    state = tmp_path / "state"
    csv = tmp_path / "data.csv"
    make_series(300).to_csv(csv, index=False)
    config = write_config(
        tmp_path,
        csv,
        name="crashy",
        search={"n_trials": 6, "epochs": 3, "fidelity": "hyperband", "eta": 2, "min_fraction": 0.25},
    )
    args = ("run", str(config), "--json")
    first = _cli(*args, state=state, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        finished, partial = _finished_and_partial(state / "optuna.db")
        if finished >= 2 and partial >= 1:
            break
        assert first.poll() is None, "the run ended before it could be killed: " + first.stderr.read()[-2000:]
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()

    client = _mlflow(state)
    before = {r.data.tags.get("automl.stage"): r for r in _all_runs(client, "tags.`automl.role` = 'stage'")}
    pipeline_before = _all_runs(client, "tags.`automl.role` = 'pipeline'")
    assert [r.info.status for r in pipeline_before] == ["RUNNING"]  # left behind by the kill
    study_name = pipeline_before[0].data.tags["automl.study_name"]
    storage = f"sqlite:///{state / 'optuna.db'}"
    killed = {t.number: t for t in optuna.load_study(study_name=study_name, storage=storage).trials}
    finished_before = {n: t for n, t in killed.items() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    interrupted = [t for t in killed.values() if t.state == TrialState.RUNNING]

    second = _cli(*args, state=state, cwd=tmp_path)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["resumed"] is True and summary["pipeline_run_id"] == pipeline_before[0].info.run_id
    assert sum(summary["trials"].values()) == 6  # the budget holds across the crash

    trials = {t.number: t for t in optuna.load_study(study_name=study_name, storage=storage).trials}
    for number, trial in finished_before.items():  # finished evaluations kept as they were
        assert trials[number].state == trial.state and trials[number].intermediate_values == trial.intermediate_values
    for trial in interrupted:
        assert trials[trial.number].state == TrialState.FAIL
        assert trials[trial.number].user_attrs["outcome"] == "interrupted"
        retry = [t for t in trials.values() if t.user_attrs.get("source") == f"retry:{trial.number}"]
        assert len(retry) == 1 and retry[0].params == trial.params
        # rungs the killed trial had finished were reused, not computed again
        assert retry[0].user_attrs.get("reused_evaluations", 0) == len(trial.intermediate_values)

    runs = _all_runs(client)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    stages = [r for r in runs if r.data.tags.get("automl.role") == "stage"]
    assert sorted(r.data.tags["automl.stage"] for r in stages) == ["data_prep", "final_train", "search", "warm_start"]
    for name in ("data_prep", "warm_start"):  # finished stages were not redone
        after = next(r for r in stages if r.data.tags["automl.stage"] == name)
        assert after.info.end_time == before[name].info.end_time
    trial_runs = [r for r in runs if r.data.tags.get("automl.role") == "trial"]
    assert len(trial_runs) == 6, "one MLflow run per config: the retried config continues the interrupted run"
    assert all(r.info.status in ("FINISHED", "FAILED") for r in trial_runs)
