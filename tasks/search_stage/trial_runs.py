"""MLflow and console edge of the search: one nested MLflow run per trial under the ``search`` stage run, and a
progress line per trial (number, outcome, validation loss, best so far, params, seconds, then how far the search
is: trials finished of ``n_trials``, time in, and an ETA from the pace so far, the timeout and the run's budget).
The observer also tells the objective which run each config in training logs its epochs to (``TrialsInTraining``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from automl.tasks.search import FAILED, FOLD_PRUNED, INTERRUPTED, Evaluation, TrialRecord, Verdict, params_key
from automl.tasks.tracking.catalog import (
    FAIL_REASON,
    FOLD_VAL_LOSS_METRIC,
    MLFLOW_RUN_ATTR,
    OUTCOME,
    PROMOTIONS,
    RETRIED_FROM_TRIAL,
    RUNG_CONTINUED_FROM_PARAM,
    RUNG_CURVE_METRIC,
    RUNG_FRACTION_PARAM,
    RUNG_VAL_LOSS_METRIC,
    RUNG_VERDICT,
    RUNGS_REACHED_METRIC,
    TRAIN_SECONDS_METRIC,
    TRIAL_NUMBER,
    TRIAL_ROLE,
    TRIAL_SOURCE,
    VAL_LOSS_METRIC,
)
from automl.tasks.tracking.runs import child_runs, create_child_run

logger = logging.getLogger("automl")


@dataclass
class SearchPace:
    """How far a search is, for its progress lines: trials finished of ``n_trials`` (across resumes), seconds in,
    and when it should end: at the pace so far for the trials left, at its ``timeout``, or at the run's
    ``deadline`` (a callable answering a ``time.time()``: a budget's search deadline moves with measured costs),
    whichever comes first.

    Example:
        >>> pace = SearchPace(n_trials=12, finished=2)
        >>> line = pace.tick()  # after the third trial, e.g. "3/12, 41s in, ETA 4m33s"
    """

    n_trials: int | None = None
    timeout: float | None = None
    deadline: Callable[[], float] | None = None
    finished: int = 0
    started: float = field(default_factory=time.monotonic)
    _counted: int = 0  # trials finished since ``started``: the pace

    def tick(self) -> str:
        """Count a finished trial; the line's tail."""
        self.finished += 1
        self._counted += 1
        elapsed = time.monotonic() - self.started
        ends = []
        if self.n_trials:
            ends.append(elapsed / self._counted * max(self.n_trials - self.finished, 0))
        if self.timeout:
            ends.append(max(self.timeout - elapsed, 0.0))
        if self.deadline is not None:
            ends.append(max(self.deadline() - time.time(), 0.0))
        eta = f", ETA {_clock(min(ends))}" if ends else ""
        return f"{self.finished}/{self.n_trials or '-'}, {_clock(elapsed)} in{eta}"


class TrialsInTraining:
    """The trials in training by config (``params_key`` -> trial number and MLflow run id), which the trial observer
    fills and the objective reads to log each evaluation's epochs to its trial's run. The mapping is replaced, never
    changed in place: a Dask client's thread may be pickling it with an evaluation while the next trial starts.

    Example:
        >>> trials = TrialsInTraining()
        >>> trials.started("{...}", 3, run_id)
        >>> trials.of("{...}")  # (3, run_id)
    """

    def __init__(self) -> None:
        self._by_config: dict[str, tuple[int, str]] = {}

    def started(self, key: str, number: int, run_id: str) -> None:
        self._by_config = {**self._by_config, key: (number, run_id)}

    def ended(self, key: str, number: int, run_id: str) -> None:
        if self._by_config.get(key) == (number, run_id):  # not a later trial of the same config's
            self._by_config = {k: v for k, v in self._by_config.items() if k != key}

    def of(self, key: str) -> tuple[int, str] | None:
        return self._by_config.get(key)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


class MlflowTrialObserver:
    """Creates and fills the trial runs; reuses the run of a trial already tracked (resume). ``in_training``
    (``TrainerObjective.trial_runs``) holds each trial's run while it runs."""

    def __init__(
        self,
        experiment_id: str,
        search_run_id: str,
        progress: Any = None,
        pace: SearchPace | None = None,
        in_training: TrialsInTraining | None = None,
    ):
        self.client = MlflowClient()
        self.in_training = in_training if in_training is not None else TrialsInTraining()
        self.experiment_id = experiment_id
        self.search_run_id = search_run_id
        self.progress = progress
        tracked = child_runs(experiment_id, search_run_id, role=TRIAL_ROLE)
        self._runs = {
            int(run.data.tags[TRIAL_NUMBER]): run.info.run_id for run in tracked if TRIAL_NUMBER in run.data.tags
        }
        self.pace = pace or SearchPace()
        # a resumed search counts the trials it finished before (an interrupted one's run was closed KILLED)
        self.pace.finished = sum(run.info.status in ("FINISHED", "FAILED") for run in tracked)
        self._rungs_logged: dict[str, set[str]] = {}  # reopened runs: rung params logged before the interruption
        self._folds_logged: dict[str, set[tuple[str, int]]] = {}  # reopened runs: (fold metric, step) logged before
        self._started = time.monotonic()

    def trial_started(self, trial: optuna.Trial, record: TrialRecord) -> None:
        run_id = self._runs.get(record.number) or self._reopen_interrupted(record)
        if run_id is None:
            run_id = self._runs[record.number] = create_child_run(
                self.experiment_id,
                self.search_run_id,
                f"trial-{record.number:03d}",
                TRIAL_ROLE,
                {TRIAL_NUMBER: str(record.number), TRIAL_SOURCE: record.source},
            )
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in record.params.items()])
        trial.set_user_attr(MLFLOW_RUN_ATTR, run_id)
        self.in_training.started(params_key(record.params), record.number, run_id)

    def _reopen_interrupted(self, record: TrialRecord) -> str | None:
        """A retried config continues in the MLflow run of the trial that was interrupted: one run per config."""
        if not record.source.startswith("retry:"):
            return None
        previous = int(record.source.split(":", 1)[1])
        run_id = self._runs.get(previous)
        if run_id is None:
            return None
        self.client.update_run(run_id, status="RUNNING")
        logged = self.client.get_run(run_id).data.params
        rung_params = {RUNG_FRACTION_PARAM.format(rung=k) for k in range(len(logged))}
        self._rungs_logged[run_id] = rung_params & set(logged)
        fold_metrics = [k for k in self.client.get_run(run_id).data.metrics if k.startswith("val_loss_fold")]
        self._folds_logged[run_id] = {
            (key, point.step) for key in fold_metrics for point in self.client.get_metric_history(run_id, key)
        }
        self.client.log_batch(
            run_id,
            tags=[
                RunTag(TRIAL_NUMBER, str(record.number)),
                RunTag(RETRIED_FROM_TRIAL, str(previous)),
                RunTag(MLFLOW_RUN_NOTE, f"interrupted as trial {previous}; resumed as trial {record.number}"),
            ],
        )
        self._runs[record.number] = run_id
        return run_id

    def rung_finished(
        self, record: TrialRecord, fraction: float, step: int, evaluation: Evaluation, verdict: Verdict
    ) -> None:
        rung = len(record.rungs) - 1
        run_id = self._runs[record.number]
        verdict_tag = [RunTag(RUNG_VERDICT.format(rung=rung), verdict.value)]
        if RUNG_FRACTION_PARAM.format(rung=rung) in self._rungs_logged.get(run_id, ()):
            # A retried config reusing a rung it finished before the interruption: its run has that rung already
            # (a retry keeps its rung schedule, so rung k is the same fraction).
            self.client.log_batch(run_id, tags=verdict_tag)
            return
        now = int(time.time() * 1000)
        metrics = [Metric(RUNG_VAL_LOSS_METRIC, evaluation.loss, now, step)]
        curve = RUNG_CURVE_METRIC.format(rung=rung)
        metrics += [Metric(curve, v, now, epoch) for epoch, v in enumerate(evaluation.curve)]
        params = [Param(RUNG_FRACTION_PARAM.format(rung=rung), f"{fraction:.6g}")]
        if evaluation.continued_from is not None:
            params.append(Param(RUNG_CONTINUED_FROM_PARAM.format(rung=rung), f"{evaluation.continued_from:.6g}"))
        self.client.log_batch(run_id, metrics=metrics, params=params, tags=verdict_tag)

    def fold_finished(self, record: TrialRecord, fraction: float, step: int, fold: int, loss: float) -> None:
        run_id, key = self._runs[record.number], FOLD_VAL_LOSS_METRIC.format(fold=fold)
        if (key, step) in self._folds_logged.get(run_id, ()):
            return  # a retried config reusing a fold it finished before the interruption: its run has it
        self.client.log_batch(run_id, metrics=[Metric(key, loss, int(time.time() * 1000), step)])

    def trial_finished(self, record: TrialRecord, best: TrialRecord | None) -> None:
        run_id = self._runs[record.number]
        self._out_of_training(record, run_id)
        now = int(time.time() * 1000)
        metrics = [
            Metric(TRAIN_SECONDS_METRIC, record.seconds, now, 0),
            Metric(RUNGS_REACHED_METRIC, len(record.rungs), now, 0),
        ]
        if record.rungs:
            metrics.append(Metric(VAL_LOSS_METRIC, record.rungs[-1][1], now, 0))
        tags = [RunTag(OUTCOME, record.outcome), RunTag(PROMOTIONS, str(max(len(record.rungs) - 1, 0)))]
        if record.reason:
            tags.append(RunTag(FAIL_REASON, record.reason[:4000]))
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self.client.set_terminated(run_id, "FAILED" if record.outcome == FAILED else "FINISHED")
        logger.info("%s | %s", _progress_line(record, best), self.pace.tick())
        if self.progress is not None:
            self.progress(record, best)

    def trial_interrupted(self, record: TrialRecord, reason: str) -> None:
        """Closed KILLED; a retry of the config reopens this run when the search resumes."""
        run_id = self._runs.get(record.number)
        if run_id is None:
            return
        self._out_of_training(record, run_id)
        self.client.log_batch(run_id, tags=[RunTag(OUTCOME, INTERRUPTED), RunTag(MLFLOW_RUN_NOTE, reason)])
        self.client.set_terminated(run_id, "KILLED")
        logger.info("trial %3d | %s", record.number, reason)

    def _out_of_training(self, record: TrialRecord, run_id: str) -> None:
        self.in_training.ended(params_key(record.params), record.number, run_id)


def _progress_line(record: TrialRecord, best: TrialRecord | None) -> str:
    params = " ".join(f"{k}={_short(v)}" for k, v in record.params.items())
    if record.outcome == FAILED:
        outcome = f"failed: {record.reason}"
    else:
        fraction, loss = record.rungs[-1]
        where = "" if fraction >= 1 else f" at {fraction:.0%} of the data"
        if record.reason and record.reason.startswith(FOLD_PRUNED):
            where += f" after fold {len(record.folds)}"
        outcome = f"{record.outcome:<8} val_loss {loss:.5g}{where}"
    best_text = f"best {best.value:.5g} (#{best.number})" if best else "best -"
    return f"trial {record.number:>3} | {outcome} | {best_text} | {params} | {record.seconds:.1f}s"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
