"""The search engine: asks the sampler backend for configs, lets the fidelity scheduler decide how far each
goes, runs evaluations through an executor, and records everything in the ledger (an Optuna study).

It optimises any ``objective(params, fidelity) -> loss`` (fidelity in (0, 1]), so it runs without torch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from tasks.search._backends import SamplerBackend
from tasks.search._executors import Executor, LocalExecutor
from tasks.search._scheduler import SCHEDULED_AS_ATTR, FidelityScheduler, Verdict
from tasks.state import process_alive

logger = logging.getLogger("automl")

# User attributes the engine keeps on ledger trials.
RUN_ATTR = "pipeline_run_id"
OUTCOME_ATTR = "outcome"
REASON_ATTR = "fail_reason"
SECONDS_ATTR = "train_seconds"
REUSED_ATTR = "reused_evaluations"
SOURCE_ATTR = "source"  # set when a config is enqueued: "warm_start:<run id>", "retry:<trial number>"
FULL_FIDELITY_ATTR = "full_fidelity"  # set on enqueued configs that skip the low-fidelity rungs
OWNER_ATTR = "owner"  # host:pid:token of the engine evaluating a RUNNING trial
INTERRUPTED = "interrupted"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_LIVE_TOKENS: set[str] = set()  # engines running in this process
COUNTED = ("complete", "pruned", "failed")  # outcomes that use up the trial budget
HEARTBEAT_SECONDS = 30.0
ORPHAN_AFTER = timedelta(seconds=4 * HEARTBEAT_SECONDS)  # a RUNNING trial without an owner this old was abandoned


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation of a config at one fidelity produced; ``error`` marks a failed evaluation."""

    loss: float
    curve: tuple[float, ...] = ()
    seconds: float = 0.0
    error: str | None = None

    @classmethod
    def of(cls, result: Any) -> Evaluation:
        """Accept an ``Evaluation`` or a bare number from a user's objective."""
        if isinstance(result, Evaluation):
            return result
        return cls(loss=float(result))


Objective = Callable[[dict[str, Any], float], "float | Evaluation"]


@dataclass
class TrialRecord:
    """One config's story in this search: the rungs it reached and how it ended."""

    number: int
    params: dict[str, Any]
    state: str = "running"  # complete | pruned | failed
    value: float | None = None
    rungs: list[tuple[float, float]] = field(default_factory=list)  # (fraction, loss)
    curves: list[tuple[float, ...]] = field(default_factory=list)
    seconds: float = 0.0
    reason: str | None = None
    reused: int = 0
    source: str = "sampler"


@dataclass
class SearchResult:
    """The outcome of one search invocation (``trials`` are this invocation's, ``best_*`` the study's)."""

    study_name: str
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    trials: list[TrialRecord]
    seconds: float
    evaluation_seconds: float
    parallelism: int = 1

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(t.state for t in self.trials)
        return {"complete": counts["complete"], "pruned": counts["pruned"], "failed": counts["failed"]}

    @property
    def overhead_share(self) -> float:
        """Share of the search's wall-clock not spent inside evaluations (sampling, scheduling, tracking)."""
        if self.seconds <= 0:
            return 0.0
        busy = self.evaluation_seconds / max(self.parallelism, 1)
        return max(0.0, 1 - busy / self.seconds)


class SearchFailed(RuntimeError):
    """No config could be evaluated: every trial failed."""


class SearchObserver(Protocol):
    """Hooks for tracking and progress; all optional (see ``NullObserver``)."""

    def trial_started(self, trial: optuna.Trial, record: TrialRecord) -> None: ...

    def rung_finished(
        self, record: TrialRecord, fraction: float, step: int, evaluation: Evaluation, verdict: Verdict
    ) -> None: ...

    def trial_finished(self, record: TrialRecord, best: TrialRecord | None) -> None: ...

    def trial_interrupted(self, record: TrialRecord, reason: str) -> None: ...


class NullObserver:
    def trial_started(self, trial: optuna.Trial, record: TrialRecord) -> None:
        return None

    def rung_finished(
        self, record: TrialRecord, fraction: float, step: int, evaluation: Evaluation, verdict: Verdict
    ) -> None:
        return None

    def trial_finished(self, record: TrialRecord, best: TrialRecord | None) -> None:
        return None

    def trial_interrupted(self, record: TrialRecord, reason: str) -> None:
        return None


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


class SearchEngine:
    """Runs a search to its budget. Promotion is asynchronous: a finished rung is judged at once.

    Example:
        >>> study = optuna.create_study()
        >>> space = SearchSpace.from_config({"x": FloatParam(type="float", low=-3, high=3)})
        >>> engine = SearchEngine(lambda p, f: (p["x"] - 1) ** 2, space_backend, FullFidelity(), n_trials=20)
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
        self.run_id = run_id
        self._known: dict[tuple[str, int], float] = {}
        self._records: list[TrialRecord] = []
        self._active: dict[int, _Running] = {}  # trials started and not finished, by number
        self._best_before: TrialRecord | None = None  # the study's best when this invocation started
        self._evaluation_seconds = 0.0
        self._last_heartbeat = 0.0
        self._token = uuid.uuid4().hex[:12]
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{self._token}"

    def run(self) -> SearchResult:
        started = time.monotonic()
        _LIVE_TOKENS.add(self._token)
        try:
            self.requeue_interrupted()
            previous = self._restore()
            running: dict[Any, _Running] = {}
            while True:
                while len(running) < self.executor.parallelism and self._may_start(started, previous):
                    self._submit(self._start_trial(), running)
                if not running:
                    break
                for future in self.executor.wait_any(list(running), timeout=HEARTBEAT_SECONDS / 2):
                    self._on_result(running.pop(future), future, running)
                if time.monotonic() - self._last_heartbeat >= HEARTBEAT_SECONDS / 2:
                    self._heartbeat({item.trial for item in running.values()})
        except BaseException as exc:
            self._interrupt(exc)
            raise
        finally:
            _LIVE_TOKENS.discard(self._token)
        return self._result(time.monotonic() - started)

    def requeue_interrupted(self) -> list[int]:
        """Fail the trials left RUNNING by engines that are gone and queue their configs again; their finished
        rungs stay in the ledger and are reused, not recomputed.

        On this host an engine is gone when its process is; elsewhere, when its heartbeat in the storage went
        stale (Optuna's heartbeat, for RDB storages created with ``heartbeat_interval``)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)  # calls requeue_stale_trial for each stale trial
        requeued = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = frozen.user_attrs.get(OWNER_ATTR)
            if owner is None and frozen.datetime_start and datetime.now() - frozen.datetime_start < ORPHAN_AFTER:
                continue  # another engine has just asked for it and is about to write its owner
            if owner is not None and owner_alive(owner):
                continue
            trial = optuna.Trial(self.study, frozen._trial_id)
            self._fail_and_requeue(trial, "interrupted: the process evaluating it stopped; queued again")
            requeued.append(frozen.number)
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
                item.record.state, item.record.reason = INTERRUPTED, reason
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
        trial.set_user_attr(OUTCOME_ATTR, INTERRUPTED)
        trial.set_user_attr(REASON_ATTR, reason)
        self.backend.tell(trial, TrialState.FAIL)
        requeue_stale_trial(self.study, trial)

    def _heartbeat(self, trials: set[optuna.Trial]) -> None:
        """Tell a heartbeat-enabled storage (RDB, with ``heartbeat_interval``) that these trials are alive."""
        self._last_heartbeat = time.monotonic()
        storage = self.study._storage
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        if trials and interval:
            for trial in trials:
                storage.record_heartbeat(trial._trial_id)

    # --- budget and restore ------------------------------------------------------------------------------

    def _restore(self) -> int:
        """Rebuild the scheduler and the table of known evaluations from the ledger; count this run's trials."""
        history = []
        already = 0
        for frozen in self.study.get_trials(deepcopy=False):
            key = _params_key(frozen.params)
            for step, value in frozen.intermediate_values.items():
                if value is not None and math.isfinite(value):
                    self._known.setdefault((key, step), value)
                    rung = self._rung_of_step(step)
                    if rung is not None and frozen.state in (TrialState.COMPLETE, TrialState.PRUNED):
                        history.append((_AsScheduled(frozen), rung, value))
            if _finite_complete(frozen) and (self._best_before is None or frozen.value < self._best_before.value):
                self._best_before = TrialRecord(
                    frozen.number, dict(frozen.params), state="complete", value=frozen.value
                )
            if self.run_id and frozen.user_attrs.get(RUN_ATTR) == self.run_id:
                already += frozen.state in _FINISHED and frozen.user_attrs.get(OUTCOME_ATTR) in COUNTED
        self.scheduler.restore(history)
        return already

    def _may_start(self, started: float, previous: int) -> bool:
        if self.timeout is not None and time.monotonic() - started >= self.timeout:
            return False
        if self.backend.exhausted:
            return False
        return self.n_trials is None or previous + len(self._records) < self.n_trials

    def _rung_of_step(self, step: int) -> int | None:
        for rung in range(len(self.scheduler.fractions)):
            if self.scheduler.step(rung) == step:
                return rung
        return None

    # --- trials ------------------------------------------------------------------------------------------

    def _start_trial(self) -> _Running:
        trial = self.backend.ask()
        record = TrialRecord(
            number=trial.number, params=dict(trial.params), source=trial.user_attrs.get(SOURCE_ATTR, "sampler")
        )
        scheduled = _AsScheduled(trial)
        rungs = self.scheduler.rungs(scheduled)
        if trial.user_attrs.get(FULL_FIDELITY_ATTR):
            rungs = rungs[-1:]
        item = self._active[trial.number] = _Running(trial, record, rungs, 0, scheduled)
        self._records.append(record)
        if self.run_id:
            trial.set_user_attr(RUN_ATTR, self.run_id)
        trial.set_user_attr(OWNER_ATTR, self._owner)
        self._heartbeat({trial})
        self.observer.trial_started(trial, record)
        return item

    def _submit(self, item: _Running, running: dict[Any, _Running]) -> None:
        """Evaluate the item's current rung, or reuse a result the ledger already holds for it."""
        while True:
            rung = item.rungs[item.position]
            step = self.scheduler.step(rung)
            known = self._known.get((_params_key(item.record.params), step))
            if known is None:
                fraction = self.scheduler.fractions[rung]
                label = f"trial-{item.record.number}-rung-{rung}"
                running[self.executor.submit(self.objective, item.record.params, fraction, label)] = item
                return
            item.record.reused += 1
            item.trial.set_user_attr(REUSED_ATTR, item.record.reused)
            if not self._advance(item, Evaluation(loss=known)):
                return

    def _on_result(self, item: _Running, future: Any, running: dict[Any, _Running]) -> None:
        evaluation = self.executor.outcome(future)
        self._evaluation_seconds += evaluation.seconds
        item.record.seconds += evaluation.seconds
        if evaluation.error is None and not math.isfinite(evaluation.loss):
            evaluation = Evaluation(evaluation.loss, evaluation.curve, evaluation.seconds, f"loss is {evaluation.loss}")
        if evaluation.error is not None:
            self._fail(item, evaluation.error)
            return
        self._known[(_params_key(item.record.params), self.scheduler.step(item.rungs[item.position]))] = evaluation.loss
        if self._advance(item, evaluation):
            self._submit(item, running)

    def _advance(self, item: _Running, evaluation: Evaluation) -> bool:
        """Report the rung to the ledger and the scheduler; True when the trial goes on to its next rung."""
        rung = item.rungs[item.position]
        step = self.scheduler.step(rung)
        fraction = self.scheduler.fractions[rung]
        item.trial.report(evaluation.loss, step)
        item.record.rungs.append((fraction, evaluation.loss))
        item.record.curves.append(evaluation.curve)
        verdict = self.scheduler.decide(item.scheduled, rung, evaluation.loss)
        if verdict == Verdict.PROMOTE and item.position == len(item.rungs) - 1:
            verdict = Verdict.COMPLETE
        self.observer.rung_finished(item.record, fraction, step, evaluation, verdict)
        if verdict == Verdict.PROMOTE:
            item.position += 1
            return True
        state = TrialState.COMPLETE if verdict == Verdict.COMPLETE else TrialState.PRUNED
        self._finish(item, state, evaluation.loss)
        return False

    def _fail(self, item: _Running, reason: str) -> None:
        item.record.reason = reason
        item.trial.set_user_attr(REASON_ATTR, reason)
        self._finish(item, TrialState.FAIL, None)

    def _finish(self, item: _Running, state: TrialState, value: float | None) -> None:
        record = item.record
        self._active.pop(record.number, None)
        record.state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(state, "failed")
        record.value = value
        item.trial.set_user_attr(OUTCOME_ATTR, record.state)
        item.trial.set_user_attr(SECONDS_ATTR, round(record.seconds, 3))
        self.backend.tell(item.trial, state, value)
        self.observer.trial_finished(record, self._best_record())

    def _best_record(self) -> TrialRecord | None:
        """The best so far over the whole study (trials of earlier runs and of a killed run included)."""
        done = [r for r in self._records if r.state == "complete" and r.value is not None]
        if self._best_before is not None:
            done.append(self._best_before)
        return min(done, key=lambda r: r.value) if done else None

    # --- result -----------------------------------------------------------------------------------------

    def _result(self, seconds: float) -> SearchResult:
        try:
            best: FrozenTrial = self.study.best_trial
        except ValueError:
            reasons = Counter(r.reason for r in self._records if r.reason)
            detail = f"; most common reason: {reasons.most_common(1)[0][0]}" if reasons else ""
            raise SearchFailed(f"no trial completed in study {self.study.study_name!r}{detail}") from None
        result = SearchResult(
            study_name=self.study.study_name,
            best_params=dict(best.params),
            best_value=float(best.value),
            best_trial=best.number,
            trials=list(self._records),
            seconds=seconds,
            evaluation_seconds=self._evaluation_seconds,
            parallelism=self.executor.parallelism,
        )
        return result


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


def requeue_stale_trial(study: optuna.Study, frozen: FrozenTrial | optuna.Trial) -> None:
    """Queue an interrupted trial's config again, as the same pipeline's ``retry:<number>``. Also Optuna's
    heartbeat callback (``RDBStorage(failed_trial_callback=...)``) for trials whose engine went silent."""
    attrs = {
        SOURCE_ATTR: f"retry:{frozen.number}",
        SCHEDULED_AS_ATTR: frozen.user_attrs.get(SCHEDULED_AS_ATTR, frozen.number),
    }
    for key in (RUN_ATTR, FULL_FIDELITY_ATTR):
        if key in frozen.user_attrs:
            attrs[key] = frozen.user_attrs[key]
    study.enqueue_trial(frozen.params, user_attrs=attrs)


def owner_alive(owner: str | None) -> bool:
    """Whether the engine that owns a RUNNING trial may still be running. Owners on other hosts are assumed
    alive; on this host a dead process, or a finished engine of this process, is not."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    pid = int(pid_text or 0)
    if host == socket.gethostname() and pid == os.getpid():
        return token in _LIVE_TOKENS
    return process_alive(host, pid)


def _finite_complete(frozen: FrozenTrial) -> bool:
    return frozen.state == TrialState.COMPLETE and frozen.value is not None and math.isfinite(frozen.value)


def _params_key(params: Mapping[str, Any]) -> str:
    return json.dumps({k: params[k] for k in sorted(params)}, default=str)
