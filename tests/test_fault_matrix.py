"""Fault matrix: a search process is killed with SIGKILL at several points (during an evaluation, between two
rungs of a trial, during a later rung, between trials), for both backends and all three fidelities, then one
rerun must finish with nothing RUNNING in Optuna or MLflow, nothing duplicated and nothing recomputed.

The processes are forked from one forkserver that has imported the engine once, so each costs a second or two.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import signal
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from automl.tasks.search import SCHEDULED_AS_ATTR, Hyperband
from tests.fault_worker import N_TRIALS, PIPELINE_RUN, prepare_stores, run_search

CASES = [  # every kill point and every backend x fidelity pair at least once
    ("optuna", "none", ("evaluation", 5)),
    ("hyperopt", "none", ("after_trial", 4)),
    ("optuna", "successive_halving", ("during_rung", 2)),
    ("hyperopt", "successive_halving", ("between_rungs", 2)),
    ("optuna", "hyperband", ("between_rungs", 2)),  # its retry's own number falls in another bracket
    ("hyperopt", "hyperband", ("during_rung", 3)),
]
FOLDED = [  # search.cv: killed between folds of a rung, and during a later rung's folds
    ("optuna", "none", ("evaluation", 8)),
    ("hyperopt", "successive_halving", ("during_rung", 2)),
]
FOLDS = 3


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.fault_worker"])
    empty = tmp_path_factory.mktemp("empty-stores")
    assert _start(context, prepare_stores, str(empty)) == 0
    return context, empty


def _start(context, target, *args) -> int:
    process = context.Process(target=target, args=args)
    process.start()
    process.join(timeout=300)
    return process.exitcode


def _run(processes, root: Path, backend: str, fidelity: str, kill, folds: int = 1) -> int:
    context, empty = processes
    if not (root / "mlflow.db").exists():
        for store in empty.iterdir():
            shutil.copy(store, root / store.name)
    return _start(context, run_search, str(root), backend, fidelity, kill, folds)


def _evaluations(root: Path) -> tuple[list[str], list[str]]:
    lines = (root / "evaluations.log").read_text().splitlines()
    return [x[6:] for x in lines if x.startswith("start ")], [x[5:] for x in lines if x.startswith("done ")]


@pytest.mark.parametrize(("backend", "fidelity", "kill"), CASES, ids=[f"{b}-{f}-{k[0]}" for b, f, k in CASES])
def test_killed_anywhere_then_one_rerun_finishes(processes, tmp_path, backend, fidelity, kill):
    assert _run(processes, tmp_path, backend, fidelity, kill) == -signal.SIGKILL
    started_before, done_before = _evaluations(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    killed = {t.number: t for t in optuna.load_study(study_name="faults", storage=storage).trials}
    if kill[0] != "after_trial":
        assert [t for t in killed.values() if t.state == TrialState.RUNNING], "the kill left no trial to resume"
    best_before = min((t.value for t in killed.values() if t.state == TrialState.COMPLETE), default=None)

    assert _run(processes, tmp_path, backend, fidelity, None) == 0, "the one rerun did not finish"

    started, done = _evaluations(tmp_path)
    assert not [key for key, n in Counter(done).items() if n > 1], "an evaluation was computed twice"
    interrupted = set(started_before) - set(done_before)
    assert len(interrupted) <= 1 and set(started) - set(done) <= interrupted

    study = optuna.load_study(study_name="faults", storage=storage)
    trials = study.trials
    hyperband = Hyperband(3, 1 / 9)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    outcomes = Counter(
        t.user_attrs.get("outcome") for t in trials if t.user_attrs.get("pipeline_run_id") == PIPELINE_RUN
    )
    assert outcomes["complete"] + outcomes["pruned"] + outcomes["failed"] == N_TRIALS  # the budget held
    assert outcomes["failed"] == 0
    for number, before in killed.items():
        after = trials[number]
        if before.state == TrialState.RUNNING:
            assert after.state == TrialState.FAIL and after.user_attrs["outcome"] == "interrupted"
            retries = [t for t in trials if t.user_attrs.get("source") == f"retry:{number}"]
            assert len(retries) == 1 and retries[0].params == before.params
            retry = retries[0]
            # the retried config kept its rung schedule (its bracket): the same first rung, the rungs it had reached
            if before.intermediate_values:
                assert min(retry.intermediate_values) == min(before.intermediate_values)
            assert set(before.intermediate_values) <= set(retry.intermediate_values)
            # and Hyperband judges it in that bracket (its own new trial number may fall in another)
            assert retry.user_attrs[SCHEDULED_AS_ATTR] == number
            assert hyperband.bracket(_Numbered(retry.user_attrs[SCHEDULED_AS_ATTR])) == hyperband.bracket(before)
            assert all(retry.intermediate_values[s] == v for s, v in before.intermediate_values.items())
        else:
            assert after.state == before.state and after.intermediate_values == before.intermediate_values

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id], max_results=1000)
    trial_runs = [r for r in runs if r.data.tags.get("automl.role") == "trial"]
    assert not [r for r in trial_runs if r.info.status != "FINISHED"]
    configs = [t for t in trials if not t.user_attrs.get("source", "").startswith("retry:")]
    assert len(trial_runs) == len(configs), "one MLflow run per config: a retry continues the interrupted run"
    for run in trial_runs:
        fractions = [v for k, v in sorted(run.data.params.items()) if k.endswith("_fraction")]
        assert len(fractions) == len(set(fractions)) and len(fractions) == run.data.metrics["rungs_reached"]
        history = client.get_metric_history(run.info.run_id, "rung_val_loss")
        assert len(history) == len({m.step for m in history}), "a rung was logged twice"

    bests = [float(x) for x in (tmp_path / "best.log").read_text().splitlines()]
    rerun_bests = bests[len([t for t in killed.values() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) :]
    if best_before is not None:  # "best so far" after the rerun covers the trials finished before the kill
        assert rerun_bests[0] <= best_before
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["best_value"] == min(t.value for t in trials if t.state == TrialState.COMPLETE)


@pytest.mark.parametrize(("backend", "fidelity", "kill"), FOLDED, ids=[f"{b}-{f}-{k[0]}" for b, f, k in FOLDED])
def test_killed_between_folds_then_one_rerun_reuses_the_finished_folds(processes, tmp_path, backend, fidelity, kill):
    assert _run(processes, tmp_path, backend, fidelity, kill, FOLDS) == -signal.SIGKILL
    started_before, done_before = _evaluations(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    killed = [t for t in optuna.load_study(study_name="faults", storage=storage).trials]
    running = [t for t in killed if t.state == TrialState.RUNNING]
    assert len(running) == 1 and running[0].intermediate_values, "the kill should come after a finished fold"

    assert _run(processes, tmp_path, backend, fidelity, None, FOLDS) == 0, "the one rerun did not finish"

    started, done = _evaluations(tmp_path)
    assert not [key for key, n in Counter(done).items() if n > 1], "a fold was computed twice"
    assert set(started) - set(done) <= set(started_before) - set(done_before)
    trials = optuna.load_study(study_name="faults", storage=storage).trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retry = next(t for t in trials if t.user_attrs.get("source") == f"retry:{running[0].number}")
    assert all(retry.intermediate_values[s] == v for s, v in running[0].intermediate_values.items())
    assert retry.user_attrs["reused_evaluations"] == len(running[0].intermediate_values)
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            assert len(trial.user_attrs["fold_losses"]) == FOLDS
            assert trial.value == pytest.approx(sum(trial.user_attrs["fold_losses"]) / FOLDS)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id], max_results=1000)
    trial_runs = [r for r in runs if r.data.tags.get("automl.role") == "trial"]
    assert trial_runs and not [r for r in trial_runs if r.info.status != "FINISHED"]
    for run in trial_runs:
        for fold in range(FOLDS):
            history = client.get_metric_history(run.info.run_id, f"val_loss_fold{fold}")
            assert len(history) == len({m.step for m in history}), "a fold was logged twice"


class _Numbered:
    def __init__(self, number: int):
        self.number = number
