"""Scaling out and surviving faults: parallel trials on Dask worker processes, trial timeouts, two pipelines at
once on the default SQLite stores, and a pipeline stopped by Ctrl-C, SIGTERM and SIGKILL that the same command
resumes."""

from __future__ import annotations

import json
import os
import re
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
    quick = {"search": {"n_trials": 2, "epochs": 1}, "final": {"epochs": 1, "patience": 1}}
    configs = [write_config(tmp_path, csv, name=f"concurrent_{i}", **quick) for i in (1, 2)]
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


def _evaluation_running_for(db: Path) -> float | None:
    """Seconds since the RUNNING trial in the Optuna SQLite database started (None while there is none)."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db, timeout=1) as connection:
            row = connection.execute("select datetime_start from trials where state = 'RUNNING'").fetchone()
    except sqlite3.Error:
        return None
    return (datetime.now() - datetime.fromisoformat(row[0])).total_seconds() if row and row[0] else None


def _processes_of(state: Path) -> list[str]:
    """Processes whose environment names this state folder: the CLI and every process it started."""
    marker = f"AUTOML_HOME={state}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
        except OSError:
            continue
    return found


def _gone(state: Path, within: float = 15) -> list[str]:
    deadline = time.monotonic() + within
    while (left := _processes_of(state)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


STOPS = {  # how a run is stopped -> (signal, to the whole process group as a terminal's Ctrl-C is, exit code)
    "ctrl-c": (signal.SIGINT, True, 130),
    "sigterm": (signal.SIGTERM, False, 143),
    "kill -9": (signal.SIGKILL, False, -9),
}
INTERRUPTED_LINE = "interrupted; run the same command again to resume"


def test_ctrl_c_sigterm_and_kill_9_stop_the_run_and_the_same_command_finishes(tmp_path):
    """Each way of stopping lands while an evaluation runs; the next run of the same command resumes, and after
    the three a last run finishes the pipeline with nothing RUNNING, nothing duplicated, nothing recomputed."""
    state = tmp_path / "state"
    csv = tmp_path / "data.csv"
    make_series(3000).to_csv(csv, index=False)
    config = write_config(
        tmp_path,
        csv,
        name="stoppable",
        search={"n_trials": 1, "epochs": 12, "fidelity": "none"},
        final={"epochs": 1, "patience": 1},
    )
    args = ("run", str(config), "--json")
    storage = f"sqlite:///{state / 'optuna.db'}"
    client = _mlflow(state)
    stopped_after = {}
    for how, (signum, group, code) in STOPS.items():
        process = _cli(*args, state=state, cwd=tmp_path)
        deadline = time.monotonic() + 240
        while (running_for := _evaluation_running_for(state / "optuna.db")) is None or running_for < 0.5:
            assert process.poll() is None, f"{how}: the run ended first: " + process.stderr.read()[-2000:]
            assert time.monotonic() < deadline, f"{how}: no evaluation started"
            time.sleep(0.1)
        signalled = time.monotonic()
        os.killpg(process.pid, signum) if group else os.kill(process.pid, signum)
        process.wait(timeout=120)
        stopped_after[how] = (running_for, time.monotonic() - signalled)
        err = process.stderr.read()
        assert process.returncode == code, (how, err[-3000:])
        assert not _gone(state), f"{how}: processes left behind"  # the temporary Prefect server included
        if signum == signal.SIGKILL:
            continue
        # one line besides the progress lines ("HH:MM:SS message"), no traceback, no Prefect crash report
        assert [line for line in err.splitlines() if not re.match(r"\d\d:\d\d:\d\d ", line)] == [INTERRUPTED_LINE], err
        assert not [r for r in _all_runs(client) if r.info.status == "RUNNING"]
        statuses = {
            r.data.tags.get("automl.role"): r.info.status for r in _all_runs(client) if r.info.status == "KILLED"
        }
        assert statuses == {"pipeline": "KILLED", "stage": "KILLED", "trial": "KILLED"}
        study = optuna.load_study(
            study_name=_all_runs(client, "tags.`automl.role` = 'pipeline'")[0].data.tags["automl.study_name"],
            storage=storage,
        )
        assert not study.get_trials(states=(TrialState.RUNNING,))
        assert study.trials[-2].user_attrs["outcome"] == "interrupted" and study.trials[-1].state == TrialState.WAITING

    pipeline_before = _all_runs(client, "tags.`automl.role` = 'pipeline'")
    stages_before = {r.data.tags["automl.stage"]: r for r in _all_runs(client, "tags.`automl.role` = 'stage'")}
    last = _cli(*args, state=state, cwd=tmp_path)
    out, err = last.communicate(timeout=600)
    assert last.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["resumed"] is True and summary["pipeline_run_id"] == pipeline_before[0].info.run_id
    assert summary["trials"] == {"complete": 1, "pruned": 0, "failed": 0}

    runs = _all_runs(client)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len([r for r in runs if r.data.tags.get("automl.role") == "pipeline"]) == 1
    stages = {r.data.tags["automl.stage"]: r for r in runs if r.data.tags.get("automl.role") == "stage"}
    assert sorted(stages) == ["data_prep", "final_train", "search", "warm_start"]
    for name in ("data_prep", "warm_start"):  # finished stages were not redone
        assert stages[name].info.end_time == stages_before[name].info.end_time
    trial_runs = [r for r in runs if r.data.tags.get("automl.role") == "trial"]
    assert [r.info.status for r in trial_runs] == ["FINISHED"], "one MLflow run for the one config, reopened"
    study = optuna.load_study(study_name=summary["study_name"], storage=storage)
    assert [t.user_attrs.get("outcome") for t in study.trials] == ["interrupted"] * 3 + ["complete"]
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 1
    evaluation = study.trials[-1].user_attrs["train_seconds"]
    for how in ("ctrl-c", "sigterm"):  # the evaluation in flight was stopped, not waited for
        running_for, stopping = stopped_after[how]
        assert running_for + stopping < evaluation, (how, stopped_after, evaluation)
