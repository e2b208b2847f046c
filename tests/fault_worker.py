"""A search process for the fault matrix: the real engine, Optuna storage (SQLite, as the pipeline opens it) and
MLflow trial tracker on a cheap objective, which SIGKILLs itself at a chosen point of the search.

Every evaluation appends a ``start`` and a ``done`` line to ``evaluations.log`` so the test can tell what was
computed, and every finished trial appends the "best so far" it printed to ``best.log``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import hyperopt  # noqa: F401  (imported here, once, in the forkserver, not in every killed process)
import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
import optuna
from mlflow.tracking import MlflowClient

from automl.tasks.search import SearchEngine, SearchSpace, Verdict, make_backend, make_scheduler
from automl.tasks.search_stage.studies import make_storage
from automl.tasks.search_stage.trial_runs import MlflowTrialObserver
from automl.tasks.tracking.catalog import ROLE

SPACE = SearchSpace.from_dict(
    {
        "x": {"type": "float", "low": -4, "high": 4},
        "k": {"type": "int", "low": 0, "high": 10, "step": 2},
        "kind": {"type": "categorical", "choices": ["a", "b"]},
    }
)
PIPELINE_RUN = "pipeline-1"
N_TRIALS = 8


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _Faults:
    """Where to die: ``("evaluation", k)`` as the k-th evaluation starts; ``("between_rungs", k)`` right after the
    k-th promotion was recorded; ``("during_rung", k)`` inside the evaluation that follows the k-th promotion (a
    trial that has finished rungs); ``("after_trial", k)`` right after the k-th trial was recorded."""

    def __init__(self, kill: tuple[str, int] | None):
        self.kind, self.at = kill or ("", 0)
        self.evaluations = self.promotions = self.trials = 0
        self.armed = False

    def evaluation_started(self) -> None:
        self.evaluations += 1
        if self.armed or (self.kind == "evaluation" and self.evaluations == self.at):
            _kill()

    def promoted(self) -> None:
        self.promotions += 1
        if self.promotions == self.at and self.kind == "between_rungs":
            _kill()
        self.armed = self.promotions == self.at and self.kind == "during_rung"

    def trial_finished(self) -> None:
        self.trials += 1
        if self.kind == "after_trial" and self.trials == self.at:
            _kill()


class _Observer:
    def __init__(self, tracker: MlflowTrialObserver, faults: _Faults, best_log: Path):
        self.tracker, self.faults, self.best_log = tracker, faults, best_log

    def trial_started(self, trial, record):
        self.tracker.trial_started(trial, record)

    def rung_finished(self, record, fraction, step, evaluation, verdict):
        self.tracker.rung_finished(record, fraction, step, evaluation, verdict)
        if verdict == Verdict.PROMOTE:
            self.faults.promoted()

    def fold_finished(self, record, fraction, step, fold, loss):
        self.tracker.fold_finished(record, fraction, step, fold, loss)

    def trial_interrupted(self, record, reason):
        self.tracker.trial_interrupted(record, reason)

    def trial_finished(self, record, best):
        self.tracker.trial_finished(record, best)
        with self.best_log.open("a") as out:
            out.write(f"{best.value if best else 'nan'}\n")
        self.faults.trial_finished()


def prepare_stores(root: str) -> None:
    """Empty MLflow and Optuna databases with their schemas, for the test to copy (migrations take seconds)."""
    root_path = Path(root)
    MlflowClient(tracking_uri=f"sqlite:///{root_path / 'mlflow.db'}").create_experiment("faults")
    make_storage(f"sqlite:///{root_path / 'optuna.db'}")


def run_search(root: str, backend: str, fidelity: str, kill: tuple[str, int] | None, folds: int = 1) -> None:
    root_path = Path(root)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root_path / 'mlflow.db'}"
    client = MlflowClient()
    experiment = client.get_experiment_by_name("faults")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("faults")
    marker = root_path / "search_run_id"
    if not marker.exists():
        marker.write_text(client.create_run(experiment_id, tags={ROLE: "stage"}).info.run_id)
    search_run_id = marker.read_text()

    storage = make_storage(f"sqlite:///{root_path / 'optuna.db'}")
    study = optuna.create_study(study_name="faults", storage=storage, load_if_exists=True)
    faults = _Faults(kill)
    log = root_path / "evaluations.log"

    def objective(params, fidelity_, fold=None):
        key = json.dumps([sorted(params.items()), round(fidelity_, 6), fold])
        with log.open("a") as out:
            out.write(f"start {key}\n")
        faults.evaluation_started()
        time.sleep(0.005)
        with log.open("a") as out:
            out.write(f"done {key}\n")
        loss = (params["x"] - 1) ** 2 + (params["k"] - 6) ** 2 / 10 + (params["kind"] == "b") + (1 - fidelity_)
        return loss + 0.1 * (fold or 0)

    engine = SearchEngine(
        objective,
        make_backend(backend, "tpe", study, SPACE, len(study.trials), 3),
        make_scheduler(fidelity, 3, 1 / 9, folds=folds),
        n_trials=N_TRIALS,
        observer=_Observer(MlflowTrialObserver(experiment_id, search_run_id), faults, root_path / "best.log"),
        run_id=PIPELINE_RUN,
        storage=storage,
    )
    result = engine.run()
    (root_path / "result.json").write_text(json.dumps({"best_value": result.best_value, "best": result.best_trial}))
