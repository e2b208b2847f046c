"""The search engine: asks the sampler backend for configs, lets the fidelity scheduler decide how far each
goes, runs evaluations through an executor, and records everything in the ledger (an Optuna study).

It optimises any ``objective(params, fidelity) -> loss`` (fidelity in (0, 1]), so it runs without torch.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import signal
import statistics
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.tasks.search._backends import SamplerBackend
from automl.tasks.search._executors import Executor, LocalExecutor
from automl.tasks.search._ledger import (
    CONTINUATION_ATTR,
    FOLD_LOSSES_ATTR,
    FULL_FIDELITY_ATTR,
    HEARTBEAT_SECONDS,
    OUTCOME_ATTR,
    PROMOTED_SOURCE,
    REASON_ATTR,
    REUSED_ATTR,
    RUNG_COSTS_ATTR,
    SCHEDULED_AS_ATTR,
    SECONDS_ATTR,
    SOURCE_ATTR,
    Ledger,
)
from automl.tasks.search._observer import NullObserver, SearchObserver
from automl.tasks.search._scheduler import FidelityScheduler, Verdict
from automl.tasks.search._types import (
    COMPLETE,
    INTERRUPTED,
    Evaluation,
    Objective,
    SearchFailed,
    SearchResult,
    TrialRecord,
    outcome_of,
)

logger = logging.getLogger("automl")
OUT_OF_TIME = "out of time: the run's budget left no time for its next rung"
FLUSHED = "as the best of a rung that no more configs will reach"
FOLD_PRUNED = "pruned after fold"  # the start of the reason of a config stopped after one of its folds
WAITING = "waiting: its rung had fewer than eta results to compare with; promoted later if it ranks in the top 1/eta"


class _AsScheduled:
    """A trial as the fidelity scheduler sees it: under the number its config was first scheduled with, so a
    config retried after an interruption keeps its bracket and rungs (Hyperband assigns brackets by number)."""

    def __init__(self, trial: Any):
        self._trial = trial
        self.number: int = trial.user_attrs.get(SCHEDULED_AS_ATTR, trial.number)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


@dataclass
class _Running:
    trial: optuna.Trial
    record: TrialRecord
    rungs: tuple[int, ...]
    position: int  # index into rungs
    scheduled: _AsScheduled
    fold: int = 0  # cross-validation: the fold in progress at rungs[position]
    rung_folds: list[float] = field(default_factory=list)  # the losses of the rung in progress's finished folds
    rung_seconds: float = 0.0  # spent on them
    rung_curves: list[tuple[float, ...]] = field(default_factory=list)  # their validation curves
    rung_continued_from: float | None = None  # the fraction the rung's folds continued from (continuation)
    costs: dict[str, float] = field(default_factory=dict)  # rung index -> seconds per epoch (RUNG_COSTS_ATTR)

    def rung_evaluation(self, mean: float) -> Evaluation:
        """The rung so far as one evaluation: the mean loss, the mean curve, and seconds for that many epochs at
        the folds' average cost per epoch (the budget's cost estimate reads seconds per epoch)."""
        curve = _mean_curve(self.rung_curves)
        epochs = sum(len(c) for c in self.rung_curves)
        seconds = self.rung_seconds * len(curve) / epochs if epochs else self.rung_seconds / len(self.rung_folds)
        return Evaluation(mean, curve, seconds, continued_from=self.rung_continued_from)


class SearchEngine:
    """Runs a search to its budget. Promotion is asynchronous: a finished rung is judged at once.

    ``storage`` is the study's storage, for heartbeats (see ``Ledger``); ``run_id`` marks the trials of one
    pipeline execution, whose budget a resumed search continues. ``deadline``, when given, answers the wall-clock
    time (``time.time()``) after which no evaluation starts; it is asked each time, so it may move (a run's budget
    re-estimated as costs are measured). A trial due for a higher rung past it ends pruned at the rung it reached,
    except that until one config is complete one trial goes on (so a search always has a result).

    Example:
        >>> study = optuna.create_study()
        >>> space = SearchSpace.from_dict({"x": {"type": "float", "low": -3, "high": 3}})
        >>> backend = make_backend("optuna", "tpe", study, space, seed=0, n_startup=5)
        >>> engine = SearchEngine(lambda p, f: (p["x"] - 1) ** 2, backend, FullFidelity(), n_trials=20)
        >>> engine.run().best_params
    """

    def __init__(
        self,
        objective: Objective,
        backend: SamplerBackend,
        scheduler: FidelityScheduler,
        *,
        n_trials: int | None = None,
        timeout: float | None = None,
        executor: Executor | None = None,
        observer: SearchObserver | None = None,
        run_id: str | None = None,
        storage: optuna.storages.BaseStorage | None = None,
        deadline: Callable[[], float] | None = None,
    ):
        if n_trials is None and timeout is None:
            raise ValueError("give n_trials, timeout or both")
        self.objective = objective
        self.backend = backend
        self.study = backend.study
        self.scheduler = scheduler
        self.n_trials = n_trials
        self.timeout = timeout
        self.executor = executor or LocalExecutor(1)
        self.observer = observer or NullObserver()
        self.ledger = Ledger(self.study, storage, run_id)
        self.deadline = deadline
        self._records: list[TrialRecord] = []
        self._active: dict[int, _Running] = {}  # trials started and not finished, by number
        self._best_before: TrialRecord | None = None  # the study's best when this invocation started
        self._evaluation_seconds = 0.0
        self._last_heartbeat = 0.0
        self._params_of: dict[int, dict[str, Any]] = {}  # params of the configs started here, by scheduled number
        self._promotions_queued = 0  # deferred promotions queued in the study and not started yet
        self._continuing: set[int] = set()  # trials started here that continue a config (not new configs)

    def run(self) -> SearchResult:
        started = time.monotonic()
        with self.ledger.engine_alive():
            try:
                self.requeue_interrupted()
                restored = self.ledger.restore(self.scheduler.position_of, _AsScheduled)
                self.scheduler.restore(restored.history)
                self._restore_costs()
                self._restore_waiting()
                self._best_before = restored.best
                in_flight: dict[Any, _Running] = {}
                while True:
                    while len(in_flight) < self.executor.parallelism and self._may_start(started, restored.counted):
                        self._submit(self._start_trial(), in_flight)
                    if not in_flight:
                        if self._may_continue(started) and self._queue(self.scheduler.flush(), FLUSHED):
                            continue  # the best of a rung that never filled goes on (deferred promotion)
                        break
                    for future in self.executor.wait_any(list(in_flight), timeout=HEARTBEAT_SECONDS / 2):
                        self._on_result(in_flight.pop(future), future, in_flight)
                    if time.monotonic() - self._last_heartbeat >= HEARTBEAT_SECONDS / 2:
                        self._last_heartbeat = time.monotonic()
                        self.ledger.heartbeat([item.trial for item in in_flight.values()])
            except BaseException as exc:
                self._interrupt(exc)
                raise
        return self._result(time.monotonic() - started)

    def _restore_costs(self) -> None:
        """The rung costs the study holds (this engine's before a restart, other engines' sharing the study)."""
        for trial, rung, cost in self.ledger.rung_costs(_AsScheduled):
            self.scheduler.record_cost(trial, rung, cost)

    def _restore_waiting(self) -> None:
        """Deferred promotion after a restart: configs a stopped search left waiting at a rung (pruned with the
        WAITING reason, and not continued since) wait again, so that they are promoted when their rung fills, or
        flushed when the search runs out, instead of staying stopped."""
        trials = self.study.get_trials(deepcopy=False)
        continued = {t.user_attrs.get(SCHEDULED_AS_ATTR) for t in trials if _is_promotion(t)}
        # promotions (or their retries) queued before the stop start as continuations, outside the trial count
        self._promotions_queued += sum(
            t.state == TrialState.WAITING and bool(t.user_attrs.get(CONTINUATION_ATTR)) for t in trials
        )
        waiting = []
        for frozen in trials:
            if frozen.state != TrialState.PRUNED or frozen.user_attrs.get(REASON_ATTR) != WAITING:
                continue
            scheduled = _AsScheduled(frozen)
            position = self.scheduler.position_of(max(frozen.intermediate_values, default=-1))
            if scheduled.number in continued or position is None:
                continue
            waiting.append((scheduled, position[0], frozen.intermediate_values[max(frozen.intermediate_values)]))
            self._params_of.setdefault(scheduled.number, dict(frozen.params))
        self.scheduler.restore_waiting(waiting)

    def requeue_interrupted(self) -> list[int]:
        """Fail the trials left RUNNING by engines that are gone and queue their configs again; their finished
        rungs stay in the ledger and are reused, not recomputed."""
        requeued = []
        for trial in self.ledger.abandoned_trials():
            self._fail_and_requeue(trial, "interrupted: the process evaluating it stopped; queued again")
            requeued.append(trial.number)
        return requeued

    def _interrupt(self, exc: BaseException) -> None:
        """The search is being stopped (Ctrl-C, SIGTERM, an error outside the objective): ask the objective to
        stop its evaluations in flight (``objective.interrupt()``, when it has one) instead of waiting for them,
        record each running trial as interrupted and queue its config again, as a killed engine's would be on
        the next run. Finished rungs stay in the ledger and are reused."""
        stop = getattr(self.objective, "interrupt", None)
        if callable(stop):
            stop()
        # Prefect's TerminationSignal (SIGTERM inside a flow) is named, not imported: the engine needs no Prefect.
        if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TerminationSignal":
            reason = "interrupted: the search was stopped; queued again"
        else:
            reason = f"interrupted: the search failed ({type(exc).__name__}); queued again"
        with _signals_held():  # a second Ctrl-C must not cut this short (a trial failed but not queued again)
            for item in list(self._active.values()):
                del self._active[item.record.number]
                item.record.outcome, item.record.reason = INTERRUPTED, reason
                try:
                    self._fail_and_requeue(item.trial, reason)
                except Exception as error:  # the storage may be what failed; a RUNNING trial is requeued next run
                    logger.warning("trial %d: could not record the interruption (%s)", item.record.number, error)
                try:
                    self.observer.trial_interrupted(item.record, reason)
                except Exception as error:  # a resumed pipeline closes runs its process left RUNNING
                    logger.warning("trial %d: could not close its run (%s)", item.record.number, error)

    def _fail_and_requeue(self, trial: optuna.Trial, reason: str) -> None:
        """Record ``trial`` as interrupted (FAIL, not counted in the budget) and queue its config again."""
        self.ledger.mark_interrupted(trial, reason)
        self.backend.tell(trial, TrialState.FAIL)
        self.ledger.requeue(trial)

    # --- budget -----------------------------------------------------------------------------------------------

    def _may_start(self, started: float, counted_before: int) -> bool:
        if self._timed_out(started):
            return False
        if self._past_deadline() and (self._best_record() is not None or self._active):
            return False  # until one config is complete, one trial runs on: a late result beats none
        if self._promotions_queued:
            return True  # a config continuing, not a new one: outside the trial count
        if self.backend.exhausted:
            return False
        new_configs = sum(r.number not in self._continuing for r in self._records)
        return self.n_trials is None or counted_before + new_configs < self.n_trials

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline()

    # --- trials -----------------------------------------------------------------------------------------------

    def _start_trial(self) -> _Running:
        with warnings.catch_warnings():
            # The engine drives trials with ask/tell and records heartbeats itself (Optuna expects optimize()).
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            trial = self.backend.ask()
        record = TrialRecord(
            number=trial.number, params=dict(trial.params), source=trial.user_attrs.get(SOURCE_ATTR, "sampler")
        )
        scheduled = _AsScheduled(trial)
        self._params_of.setdefault(scheduled.number, dict(trial.params))
        if trial.user_attrs.get(CONTINUATION_ATTR) or record.source.startswith(PROMOTED_SOURCE):
            self._continuing.add(trial.number)
            self._promotions_queued = max(self._promotions_queued - 1, 0)
        rungs = self.scheduler.rungs(scheduled)
        if trial.user_attrs.get(FULL_FIDELITY_ATTR):
            rungs = rungs[-1:]
        item = self._active[trial.number] = _Running(trial, record, rungs, 0, scheduled)
        self._records.append(record)
        self.ledger.claim(trial)
        self.observer.trial_started(trial, record)
        return item

    def _submit(self, item: _Running, in_flight: dict[Any, _Running]) -> None:
        """Evaluate the item's current rung (and fold), or reuse a result the ledger already holds for it."""
        while True:
            rung, fold = item.rungs[item.position], item.fold
            known = self.ledger.known(item.record.params, self.scheduler.fold_step(rung, fold))
            if (
                known is None
                and (item.position > 0 or fold > 0)
                and self._past_deadline()
                and self._best_record() is not None
            ):
                if fold > 0:  # in the middle of a rung's folds: it ends with the folds it finished
                    self._end_rung(item, statistics.fmean(item.rung_folds))
                item.record.reason = OUT_OF_TIME
                item.trial.set_user_attr(REASON_ATTR, OUT_OF_TIME)
                self._finish(item, TrialState.PRUNED, item.record.rungs[-1][1])
                return
            if known is None:
                fraction = self.scheduler.fractions[rung]
                label = f"trial-{item.record.number}-rung-{rung}"
                objective = self.objective
                if self.scheduler.folds > 1:
                    label += f"-fold-{fold}"
                    objective = functools.partial(self.objective, fold=fold)
                in_flight[self.executor.submit(objective, item.record.params, fraction, label)] = item
                return
            item.record.reused += 1
            item.trial.set_user_attr(REUSED_ATTR, item.record.reused)
            # The ledger keeps running means over the folds: this fold's own loss is what it added to the mean.
            done = item.rung_folds
            fold_loss = known * (len(done) + 1) - sum(done)
            if not self._advance(item, Evaluation(loss=fold_loss), known):
                return

    def _on_result(self, item: _Running, future: Any, in_flight: dict[Any, _Running]) -> None:
        evaluation = self.executor.evaluation_of(future)
        self._evaluation_seconds += evaluation.seconds
        item.record.seconds += evaluation.seconds
        if evaluation.error is None and not math.isfinite(evaluation.loss):
            evaluation = dataclasses.replace(evaluation, error=f"loss is {evaluation.loss}")
        if evaluation.error is not None:
            self._fail(item, evaluation.error)
            return
        mean = statistics.fmean([*item.rung_folds, evaluation.loss])
        self.ledger.remember(item.record.params, self.scheduler.fold_step(item.rungs[item.position], item.fold), mean)
        if self._advance(item, evaluation, mean):
            self._submit(item, in_flight)

    def _advance(self, item: _Running, evaluation: Evaluation, mean: float) -> bool:
        """Report the fold (the rung, without folds) to the ledger and the scheduler, ``mean`` being the running
        mean over the rung's folds so far; True when the trial goes on to its next fold or rung."""
        rung, fold, folds = item.rungs[item.position], item.fold, self.scheduler.folds
        step = self.scheduler.step(rung)
        fraction = self.scheduler.fractions[rung]
        item.trial.report(mean, self.scheduler.fold_step(rung, fold))
        item.rung_folds.append(evaluation.loss)
        item.rung_seconds += evaluation.seconds
        item.rung_curves.append(evaluation.curve)
        if evaluation.continued_from is not None:
            item.rung_continued_from = evaluation.continued_from
        # Engines sharing the study (other processes, other machines) may have reported results at this rung since
        # this one started: the scheduler compares with them too, as Optuna's pruners, reading the study, do.
        self.scheduler.restore(self.ledger.rung_history(self.scheduler.position_of, _AsScheduled))
        self._restore_costs()
        if folds > 1:
            self.observer.fold_finished(item.record, fraction, step, fold, evaluation.loss)
            evaluation = item.rung_evaluation(mean)
        if fold < folds - 1:
            if self.scheduler.decide_fold(item.scheduled, rung, fold, mean) == Verdict.PROMOTE:
                item.fold += 1
                return True
            self._end_rung(item, mean)
            item.record.reason = f"{FOLD_PRUNED} {fold + 1} of {folds}: its mean is worse than the others' median"
            item.trial.set_user_attr(REASON_ATTR, item.record.reason)
            self._finish(item, TrialState.PRUNED, mean)
            return False
        item.record.rungs.append((fraction, evaluation.loss))
        item.record.curves.append(evaluation.curve)
        item.record.folds = list(item.rung_folds)
        if evaluation.curve and evaluation.seconds > 0:  # a rung reused from the ledger has its cost recorded there
            item.costs[str(rung)] = evaluation.seconds / len(evaluation.curve)
            item.trial.set_user_attr(RUNG_COSTS_ATTR, dict(item.costs))
            self.scheduler.record_cost(item.scheduled, rung, item.costs[str(rung)])
        verdict = self.scheduler.decide(item.scheduled, rung, evaluation.loss)
        if verdict == Verdict.PROMOTE and item.position == len(item.rungs) - 1:
            verdict = Verdict.COMPLETE
        if (
            verdict == Verdict.STOP
            and self.scheduler.waiting(item.scheduled, rung)
            and self._past_deadline()
            and self._best_record() is None
        ):  # no time left to wait for the rung to fill, and nothing complete yet: this config goes on
            self.scheduler.release(item.scheduled, rung)
            verdict = Verdict.PROMOTE
        self.observer.rung_finished(item.record, fraction, step, evaluation, verdict)
        self._queue_promotions()
        if verdict == Verdict.PROMOTE:
            item.position, item.fold = item.position + 1, 0
            item.rung_folds, item.rung_seconds, item.rung_curves = [], 0.0, []
            item.rung_continued_from = None
            return True
        if verdict == Verdict.STOP and self.scheduler.waiting(item.scheduled, rung):
            item.record.reason = WAITING
            item.trial.set_user_attr(REASON_ATTR, WAITING)
        ending = TrialState.COMPLETE if verdict == Verdict.COMPLETE else TrialState.PRUNED
        self._finish(item, ending, evaluation.loss)
        return False

    def _end_rung(self, item: _Running, mean: float) -> None:
        """The rung in progress ends before its last fold (pruned after a fold, or out of time): its folds so far
        are its result."""
        rung = item.rungs[item.position]
        fraction = self.scheduler.fractions[rung]
        evaluation = item.rung_evaluation(mean)
        item.record.rungs.append((fraction, mean))
        item.record.curves.append(evaluation.curve)
        item.record.folds = list(item.rung_folds)
        self.observer.rung_finished(item.record, fraction, self.scheduler.step(rung), evaluation, Verdict.STOP)

    def _queue_promotions(self) -> None:
        self._queue(self.scheduler.promotions_due(), "now that its rung has filled")

    def _queue(self, due: list[tuple[int, int]], why: str) -> int:
        """Deferred promotion: queue the configs now due to continue, under their scheduled number (so they keep
        their bracket, and their finished rungs are reused from the ledger); how many were queued."""
        queued = 0
        for number, rung in due:
            params = self._params_of.get(number)
            if params is None:  # started by another engine sharing the study: that engine promotes it
                continue
            attrs = {SOURCE_ATTR: f"{PROMOTED_SOURCE}{number}", SCHEDULED_AS_ATTR: number, CONTINUATION_ATTR: True}
            self.study.enqueue_trial(params, user_attrs=attrs)
            self._promotions_queued += 1
            queued += 1
            fraction = self.scheduler.fractions[rung]
            logger.info("trial %d: promoted from %.0f%% of the data %s", number, 100 * fraction, why)
        return queued

    def _may_continue(self, started: float) -> bool:
        """Whether time is left for a continuation (a queued one must be able to start, or it would stay queued)."""
        return not self._timed_out(started) and not self._past_deadline()

    def _timed_out(self, started: float) -> bool:
        return self.timeout is not None and time.monotonic() - started >= self.timeout

    def _fail(self, item: _Running, reason: str) -> None:
        item.record.reason = reason
        item.trial.set_user_attr(REASON_ATTR, reason)
        self._finish(item, TrialState.FAIL, None)

    def _finish(self, item: _Running, ending: TrialState, value: float | None) -> None:
        record = item.record
        self._active.pop(record.number, None)
        record.outcome = outcome_of(ending)
        record.value = value
        item.trial.set_user_attr(OUTCOME_ATTR, record.outcome)
        item.trial.set_user_attr(SECONDS_ATTR, round(record.seconds, 3))
        if self.scheduler.folds > 1 and record.folds:
            item.trial.set_user_attr(FOLD_LOSSES_ATTR, list(record.folds))
        self.backend.tell(item.trial, ending, value)
        self.observer.trial_finished(record, self._best_record())

    def _best_record(self) -> TrialRecord | None:
        """The best so far over the whole study (trials of earlier runs and of a killed run included)."""
        done = [r for r in self._records if r.outcome == COMPLETE and r.value is not None]
        if self._best_before is not None:
            done.append(self._best_before)
        return min(done, key=lambda r: r.value) if done else None

    # --- result -----------------------------------------------------------------------------------------------

    def _result(self, seconds: float) -> SearchResult:
        try:
            best: FrozenTrial = self.study.best_trial
        except ValueError:
            reasons = Counter(r.reason for r in self._records if r.reason)
            detail = f"; most common reason: {reasons.most_common(1)[0][0]}" if reasons else ""
            raise SearchFailed(f"no trial completed in study {self.study.study_name!r}{detail}") from None
        return SearchResult(
            study_name=self.study.study_name,
            best_params=dict(best.params),
            best_value=float(best.value),
            best_trial=best.number,
            trials=list(self._records),
            counts=self.ledger.counts(self._records),
            seconds=seconds,
            evaluation_seconds=self._evaluation_seconds,
            parallelism=self.executor.parallelism,
        )


def _is_promotion(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(CONTINUATION_ATTR)) or str(trial.user_attrs.get(SOURCE_ATTR, "")).startswith(
        PROMOTED_SOURCE
    )


def _mean_curve(curves: list[tuple[float, ...]]) -> tuple[float, ...]:
    """The epoch-by-epoch mean of the folds' validation curves (as long as the shortest)."""
    length = min((len(c) for c in curves), default=0)
    return tuple(statistics.fmean(c[epoch] for c in curves) for epoch in range(length))


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (in the main thread, where Python handles them)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
