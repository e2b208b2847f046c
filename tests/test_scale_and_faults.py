"""Scaling out and surviving faults: parallel trials on Dask worker processes, trial timeouts, two pipelines at
once on the default SQLite stores (one stopped by SIGTERM), and a pipeline stopped by Ctrl-C and SIGKILL that the
same command resumes."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import httpx
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from prefect.settings import PREFECT_API_URL

from automl.cli import main
from automl.flows.pipeline import automl_pipeline
from tests.helpers import REPO, TINY_SPACE, make_series, write_config
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
    assert sum(summary.trials.as_dict().values()) == 4
    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage)
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 4
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in pairwise(spans)), "no two trials overlapped"

    client = _mlflow(home)
    pipelines = _all_runs(client, "tags.`automl.role` = 'pipeline'")
    assert [r.info.run_id for r in pipelines] == [summary.pipeline_run_id]
    search = _all_runs(
        client, f"tags.`mlflow.parentRunId` = '{summary.pipeline_run_id}' and tags.`automl.stage` = 'search'"
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
        "from automl.tasks.search_stage.task_runners import local_dask_settings\n"
        "assert 'distributed' not in sys.modules\n"
        "with local_dask_settings():\n"
        "    assert dask.config.get('distributed.worker.profile.enabled') is False\n"
        "get = dask.config.get\n"
        "print(get('distributed.comm.timeouts.connect'), get('distributed.worker.profile.enabled'))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["30s", "True"]


@contextmanager
def prefect_console() -> Iterator[io.StringIO]:
    """What Prefect's console handler prints during the block, for in-process runs: a second PrefectConsoleHandler
    on the ``prefect`` logger, writing to a buffer, which ``setup_console`` quiets as it quiets the real one (whose
    stream pytest took over before any test ran)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    console = io.StringIO()
    handler = PrefectConsoleHandler(stream=console)
    logging.getLogger("prefect").addHandler(handler)
    try:
        yield console
    finally:
        logging.getLogger("prefect").removeHandler(handler)


def test_trial_timeouts_fail_the_trials_and_the_pipeline_names_the_reason(
    prefect_api, home, series_csv, tmp_path, capsys
):
    config = write_config(tmp_path, series_csv, search={"n_trials": 3})
    with prefect_console() as console:
        code = main(["run", str(config), "--set", "search.trial_timeout=0.001"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: search failed: no trial completed in study")
    # the one line says it all: no Prefect traceback (one per flow run) before it
    assert "Traceback" not in console.getvalue() and "SearchFailed" not in console.getvalue(), console.getvalue()
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


def _first_value(db: Path, query: str, prefix: str):
    """The first column of the first row ``query`` finds for names starting with ``prefix`` in the SQLite database
    ``db`` as a run writes it (None when there is none, or the database is busy or not there yet)."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db, timeout=1) as connection:
            row = connection.execute(query, (f"{prefix}%",)).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _evaluation_running_for(db: Path, study_prefix: str) -> float | None:
    """Seconds since the RUNNING trial of a study named ``study_prefix...`` started (None while there is none)."""
    started = _first_value(
        db,
        "select t.datetime_start from trials t join studies s on t.study_id = s.study_id "
        "where t.state = 'RUNNING' and s.study_name like ?",
        study_prefix,
    )
    return (datetime.now() - datetime.fromisoformat(started)).total_seconds() if started else None


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


INTERRUPTED_LINE = "interrupted; run the same command again to resume"


def _stop_during_an_evaluation(process: subprocess.Popen, state: Path, name: str, signum: int, group: bool):
    """Send ``signum`` (to the process group, as a terminal's Ctrl-C does, or to the process) once an evaluation
    of pipeline ``name`` has run half a second; returns (seconds it had run, seconds the process took to end)."""
    return _stop_when(process, lambda: _evaluation_running_for(state / "optuna.db", f"{name}-"), signum, group)


def _stop_when(process: subprocess.Popen, running_for, signum: int, group: bool, wait: float = 240):
    """Send ``signum`` once what ``running_for()`` watches has run half a second (it answers None while nothing
    runs); returns (seconds it had run, seconds the process took to end)."""
    deadline = time.monotonic() + wait
    while (seconds := running_for()) is None or seconds < 0.5:
        assert process.poll() is None, "the run ended first: " + process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "nothing to stop started"
        time.sleep(0.1)
    signalled = time.monotonic()
    os.killpg(process.pid, signum) if group else os.kill(process.pid, signum)
    process.wait(timeout=120)
    return seconds, time.monotonic() - signalled


def _assert_stopped_cleanly(err: str, client: MlflowClient, storage: str, name: str) -> None:
    """One line besides the progress lines ("HH:MM:SS message"), no traceback, no Prefect crash report; the runs
    closed KILLED, the trial recorded as interrupted and its config queued again."""
    assert [line for line in err.splitlines() if not re.match(r"\d\d:\d\d:\d\d ", line)] == [INTERRUPTED_LINE], err
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert {r.data.tags.get("automl.role"): r.info.status for r in runs if r.info.status == "KILLED"} == {
        "pipeline": "KILLED",
        "stage": "KILLED",
        "trial": "KILLED",
    }
    pipeline = next(r for r in runs if r.data.tags.get("automl.role") == "pipeline")
    study = optuna.load_study(study_name=pipeline.data.tags["automl.study_name"], storage=storage)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert study.trials[-2].user_attrs["outcome"] == "interrupted" and study.trials[-1].state == TrialState.WAITING


def test_two_pipelines_at_once_on_the_default_sqlite_stores_and_sigterm_stops_one(tmp_path):
    """Both write the same default SQLite stores; SIGTERM (as `kill` or a container stop sends it) stops the one in
    the middle of a long evaluation within seconds and cleanly, and the other finishes."""
    state = tmp_path / "shared-state"
    short, long = tmp_path / "short.csv", tmp_path / "long.csv"
    make_series(240).to_csv(short, index=False)
    make_series(3000).to_csv(long, index=False)
    quick = {"search": {"n_trials": 2, "epochs": 1}, "final": {"epochs": 1, "patience": 1}}
    finishing = write_config(tmp_path, short, name="finishing", **quick)
    # one evaluation of 60 epochs takes tens of seconds: a stop that waited for it could not be quick
    stopped = write_config(tmp_path, long, name="stopped", search={"n_trials": 1, "epochs": 60, "fidelity": "none"})
    first = _cli("run", str(finishing), "--json", state=state, cwd=tmp_path)
    second = _cli("run", str(stopped), state=state, cwd=tmp_path)
    _, stopping = _stop_during_an_evaluation(second, state, "stopped", signal.SIGTERM, group=False)
    out, err = first.communicate(timeout=600)
    stopped_err = second.stderr.read()
    assert second.returncode == 143 and stopping < 15, (stopping, stopped_err[-3000:])
    assert first.returncode == 0, err[-3000:]
    assert "database is locked" not in err + stopped_err
    assert not _gone(state), "processes left behind"  # the temporary Prefect servers included

    storage = f"sqlite:///{state / 'optuna.db'}"
    client = _mlflow(state)
    _assert_stopped_cleanly(stopped_err, client, storage, "stopped")
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed" and sum(summary["trials"].values()) == 2
    assert client.get_run(summary["pipeline_run_id"]).info.status == "FINISHED"
    assert len(optuna.get_all_study_summaries(storage)) == 2


STOPS = {  # how a run is stopped -> (signal, to the whole process group as a terminal's Ctrl-C is, exit code)
    "ctrl-c": (signal.SIGINT, True, 130),
    "kill -9": (signal.SIGKILL, False, -9),
}


def test_ctrl_c_and_kill_9_stop_the_run_and_the_same_command_finishes(tmp_path):
    """Each way of stopping lands while an evaluation runs; the next run of the same command resumes, and after
    the two a last run finishes the pipeline with nothing RUNNING, nothing duplicated, nothing recomputed."""
    state = tmp_path / "state"
    csv = tmp_path / "data.csv"
    make_series(1500).to_csv(csv, index=False)
    config = write_config(
        tmp_path,
        csv,
        name="stoppable",
        # seconds long (80 epochs of about 1,000 windows, the largest config of the tiny space held fixed): a stop
        # 0.5 s into it lands inside it (with 30 epochs a small sampled config once finished first on a fresh clone,
        # and the Ctrl-C then landed in the hand-over; 150 epochs of a sampled one cost the suite a minute more)
        model={"family": "lstm", "params": {"hidden_size": 16, "num_layers": 2, "batch_size": 16}},
        search={
            "n_trials": 1,
            "epochs": 80,
            "fidelity": "none",
            "try_default_first": False,
            "space": {"lr": TINY_SPACE["lr"], "dropout": TINY_SPACE["dropout"]},
        },
        final={"epochs": 1, "patience": 1},
    )
    args = ("run", str(config), "--json")
    storage = f"sqlite:///{state / 'optuna.db'}"
    client = _mlflow(state)
    stopped_after = {}
    for how, (signum, group, code) in STOPS.items():
        process = _cli(*args, state=state, cwd=tmp_path)
        stopped_after[how] = _stop_during_an_evaluation(process, state, "stoppable", signum, group)
        err = process.stderr.read()
        assert process.returncode == code, (how, err[-3000:])
        assert not _gone(state), f"{how}: processes left behind"  # the temporary Prefect server included
        if signum != signal.SIGKILL:
            _assert_stopped_cleanly(err, client, storage, "stoppable")

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
    assert [t.user_attrs.get("outcome") for t in study.trials] == ["interrupted"] * 2 + ["complete"]
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 1
    evaluation = study.trials[-1].user_attrs["train_seconds"]
    running_for, stopping = stopped_after["ctrl-c"]  # the evaluation in flight was stopped, not waited for
    assert running_for + stopping < evaluation, (stopped_after, evaluation)


def _final_training_running(db: Path, prefix: str) -> float | None:
    """Seconds since the RUNNING final training whose name starts with ``prefix`` started (None while there is
    none), read from the MLflow database as the run goes."""
    started = _first_value(
        db,
        "select r.start_time from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'automl.final_training' and t.value like ? and r.status = 'RUNNING'",
        prefix,
    )
    return time.time() - started / 1000 if started else None


def test_killed_in_the_ensemble_and_in_the_refit_then_one_rerun_trains_nothing_twice(tmp_path):
    """Ctrl-C while an ensemble candidate trains, then kill -9 while the refit trains: each next run of the same command
    loads the trainings that finished before from their runs (one FINISHED run each, trained once), trains again
    only the one that was killed, and the last run registers one version with nothing RUNNING."""
    state = tmp_path / "state"
    csv = tmp_path / "data.csv"
    make_series(3000).to_csv(csv, index=False)
    config = write_config(
        tmp_path,
        csv,
        name="refitting",
        search={"n_trials": 3, "epochs": 1, "fidelity": "none"},
        # seconds per training (20 epochs of 2,000 windows), so a kill half a second into one lands inside it
        final={
            "epochs": 20,
            "patience": 20,
            "init": "scratch",
            "refit": "all",
            "ensemble": {"top_k": 3},
            "baselines": ["default_config", "naive"],  # the gbm baseline's 2,000 rounds would add nothing here
        },
    )
    args = ("run", str(config), "--json")
    db = state / "mlflow.db"
    for prefix, (signum, group, code) in (("member_", STOPS["ctrl-c"]), ("refit_", STOPS["kill -9"])):
        process = _cli(*args, state=state, cwd=tmp_path)
        _stop_when(process, lambda prefix=prefix: _final_training_running(db, prefix), signum, group, wait=300)
        assert process.returncode == code, (prefix, process.stderr.read()[-3000:])
        assert not _gone(state), "processes left behind"
    client = _mlflow(state)
    finished_before = {
        r.data.tags["automl.final_training"]: r.info.run_id
        for r in _all_runs(client, "tags.`automl.role` = 'final_training' and attributes.status = 'FINISHED'")
    }
    assert "tuned" in finished_before  # the split's first training finished before the first kill

    last = _cli(*args, state=state, cwd=tmp_path)
    out, err = last.communicate(timeout=600)
    assert last.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["resumed"] is True and summary["refit"] is not None
    runs = _all_runs(client)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    trainings = [r for r in runs if r.data.tags.get("automl.role") == "final_training"]
    finished = [r.data.tags["automl.final_training"] for r in trainings if r.info.status == "FINISHED"]
    killed = [r.data.tags["automl.final_training"] for r in trainings if r.info.status == "KILLED"]
    assert len(finished) == len(set(finished)), "a training finished twice"
    assert sorted(name.split("_")[0] for name in killed) == ["member", "refit"], killed
    assert set(killed) <= set(finished)  # the killed ones trained again, once
    for name, run_id in finished_before.items():  # those that finished before a kill were loaded, not trained
        assert (
            next(
                r.info.run_id
                for r in trainings
                if r.data.tags["automl.final_training"] == name and r.info.status == "FINISHED"
            )
            == run_id
        )
    assert "loaded from its run" in err
    assert {f"refit_{m}" for m in summary["ensemble"]["weights"]} == set(summary["refit"]["epochs"]) or (
        not summary["ensemble"]["kept"] and len(summary["refit"]["epochs"]) == 1
    )
    versions = client.search_model_versions("name = 'refitting'")
    assert len(versions) == 1 and versions[0].tags["automl.refit"] == "all"
