"""The ledger: one Optuna study records every evaluation of a search, whichever backend sampled it. This module
keeps what the engine needs from it across processes and restarts: who owns a running trial (and heartbeats for
storages that keep them), recovery of trials whose engine stopped (failed as interrupted, their configs queued
again), and reuse of evaluations already finished (a retried config does not recompute its finished rungs).
"""

from __future__ import annotations

import json
import math
import os
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.tasks.search._types import COMPLETE, COUNTED, INTERRUPTED, TrialCounts, TrialRecord

# User attributes the ledger keeps on trials.
RUN_ATTR = "pipeline_run_id"  # the pipeline execution (MLflow parent run) the trial belongs to
OUTCOME_ATTR = "outcome"  # complete | pruned | failed | interrupted
REASON_ATTR = "fail_reason"
SECONDS_ATTR = "train_seconds"
REUSED_ATTR = "reused_evaluations"
SOURCE_ATTR = "source"  # set when a config is enqueued: "warm_start:<run id>", "retry:<n>", "promoted:<n>"
PROMOTED_SOURCE = "promoted:"  # a config continuing to its next rung (deferred promotion): not a new config
CONTINUATION_ATTR = "continuation"  # on promotions and on their retries: a config continuing, not a new one
FULL_FIDELITY_ATTR = "full_fidelity"  # set on enqueued configs that skip the low-fidelity rungs
SCHEDULED_AS_ATTR = "scheduled_as"  # on retried trials: the trial number whose bracket and rungs they keep
FOLD_LOSSES_ATTR = "fold_losses"  # cross-validation: the validation loss of each fold at the last rung reached
RUNG_COSTS_ATTR = "rung_costs"  # {rung index: seconds per epoch}: what each rung cost (cost-aware promotion)
OWNER_ATTR = "owner"  # host:pid:token of the engine evaluating a RUNNING trial

HEARTBEAT_SECONDS = 30.0
ORPHAN_AFTER = timedelta(seconds=4 * HEARTBEAT_SECONDS)  # a RUNNING trial without an owner this old was abandoned
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_COMPARED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # failed trials' rungs are not compared

# Engines running in this process. Several can share one (``automl serve`` runs flows side by side), so a RUNNING
# trial owned by this process is abandoned only when the engine that owns it has ended.
_live_engines: set[str] = set()


@dataclass(frozen=True)
class Restored:
    """What the ledger held when a search (re)started."""

    history: list[tuple[Any, int, int, float]]  # (trial as scheduled, rung, fold, running mean) of trials' results
    best: TrialRecord | None  # the study's best complete trial
    counted: int  # trials of this run that used up budget


class Ledger:
    """A study seen by one engine: its owner token, its heartbeats and its table of finished evaluations.

    ``storage`` is the study's storage, given for heartbeats (an RDB storage created with
    ``heartbeat_interval``); Optuna offers no public way to get it back from the study.
    """

    def __init__(
        self, study: optuna.Study, storage: optuna.storages.BaseStorage | None = None, run_id: str | None = None
    ):
        self.study = study
        self.storage = storage
        self.run_id = run_id
        self._token = uuid.uuid4().hex[:12]
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{self._token}"
        self._known: dict[tuple[str, int], float] = {}

    @contextmanager
    def engine_alive(self) -> Iterator[None]:
        """While the block runs, trials owned by this engine are not taken for abandoned."""
        _live_engines.add(self._token)
        try:
            yield
        finally:
            _live_engines.discard(self._token)

    # --- recovery ---------------------------------------------------------------------------------------------

    def abandoned_trials(self) -> list[optuna.Trial]:
        """RUNNING trials whose engine is gone: on this host when its process (or, in this process, the engine)
        has ended; elsewhere when its heartbeat in the storage went stale (Optuna then fails the trial itself and
        calls ``requeue_stale_trial``)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        abandoned = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = frozen.user_attrs.get(OWNER_ATTR)
            if owner is None and frozen.datetime_start and datetime.now() - frozen.datetime_start < ORPHAN_AFTER:
                continue  # another engine has just asked for it and is about to write its owner
            if owner is not None and owner_alive(owner):
                continue
            # Optuna has no public accessor for a frozen trial's storage id.
            abandoned.append(optuna.Trial(self.study, frozen._trial_id))
        return abandoned

    @staticmethod
    def mark_interrupted(trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr(OUTCOME_ATTR, INTERRUPTED)
        trial.set_user_attr(REASON_ATTR, reason)

    def requeue(self, trial: optuna.Trial) -> None:
        requeue_stale_trial(self.study, trial)

    def claim(self, trial: optuna.Trial) -> None:
        """Record that this engine evaluates ``trial`` (for this run)."""
        if self.run_id:
            trial.set_user_attr(RUN_ATTR, self.run_id)
        trial.set_user_attr(OWNER_ATTR, self.owner)
        self.heartbeat([trial])

    def heartbeat(self, trials: Iterator[optuna.Trial] | list[optuna.Trial]) -> None:
        """Tell a heartbeat-enabled storage that these trials are alive."""
        storage = self.storage
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        if storage is None or not interval:
            return
        for trial in trials:
            storage.record_heartbeat(trial._trial_id)  # takes the storage id; Optuna has no public accessor for it

    # --- finished evaluations ---------------------------------------------------------------------------------

    def restore(
        self, position_of: Callable[[int], tuple[int, int] | None], as_scheduled: Callable[[Any], Any]
    ) -> Restored:
        """Read the study: every finite rung result (kept for reuse), the rung history for the scheduler, the best
        complete trial, and how many of this run's trials used up budget."""
        best: TrialRecord | None = None
        counted = 0
        for frozen in self.study.get_trials(deepcopy=False):
            key = params_key(frozen.params)
            for step, value in frozen.intermediate_values.items():
                if value is not None and math.isfinite(value):
                    self._known.setdefault((key, step), value)
            if _finite_complete(frozen) and (best is None or frozen.value < best.value):
                best = TrialRecord(frozen.number, dict(frozen.params), outcome=COMPLETE, value=frozen.value)
            if self._of_this_run(frozen):
                counted += (
                    frozen.state in _FINISHED
                    and frozen.user_attrs.get(OUTCOME_ATTR) in COUNTED
                    and not frozen.user_attrs.get(CONTINUATION_ATTR)
                    and not str(frozen.user_attrs.get(SOURCE_ATTR, "")).startswith(PROMOTED_SOURCE)
                )
        return Restored(self.rung_history(position_of, as_scheduled), best, counted)

    def rung_history(
        self, position_of: Callable[[int], tuple[int, int] | None], as_scheduled: Callable[[Any], Any]
    ) -> list[tuple[Any, int, int, float]]:
        """(trial as scheduled, rung, fold, loss) for every finite result in the study of a trial that is running
        or ended complete or pruned: what a scheduler compares a new result with, including results that engines
        sharing the study (other processes or machines) have reported since this one started."""
        history = []
        for frozen in self.study.get_trials(deepcopy=False, states=_COMPARED):
            for step, value in frozen.intermediate_values.items():
                position = position_of(step)
                if position is not None and value is not None and math.isfinite(value):
                    history.append((as_scheduled(frozen), *position, value))
        return history

    def rung_costs(self, as_scheduled: Callable[[Any], Any]) -> list[tuple[Any, int, float]]:
        """(trial as scheduled, rung, seconds per epoch) for every rung cost recorded in the study, also of trials
        interrupted since (their retries keep their scheduled number): what a cost-aware scheduler restores after a
        restart, and learns from engines sharing the study."""
        costs = []
        for frozen in self.study.get_trials(deepcopy=False):
            for rung, cost in (frozen.user_attrs.get(RUNG_COSTS_ATTR) or {}).items():
                costs.append((as_scheduled(frozen), int(rung), float(cost)))
        return costs

    def known(self, params: Mapping[str, Any], step: int) -> float | None:
        return self._known.get((params_key(params), step))

    def remember(self, params: Mapping[str, Any], step: int, loss: float) -> None:
        self._known[(params_key(params), step)] = loss

    def counts(self, records: list[TrialRecord]) -> TrialCounts:
        """Outcomes of this run's finished trials, across resumes (interrupted ones not counted); without a run id,
        of ``records``."""
        if not self.run_id:
            return TrialCounts.of(r.outcome for r in records)
        finished = self.study.get_trials(deepcopy=False, states=_FINISHED)
        return TrialCounts.of(t.user_attrs.get(OUTCOME_ATTR) for t in finished if self._of_this_run(t))

    def _of_this_run(self, frozen: FrozenTrial) -> bool:
        return bool(self.run_id) and frozen.user_attrs.get(RUN_ATTR) == self.run_id


def requeue_stale_trial(study: optuna.Study, frozen: FrozenTrial | optuna.Trial) -> None:
    """Queue an interrupted trial's config again, as the same pipeline's ``retry:<number>`` keeping the trial's
    schedule. Also Optuna's heartbeat callback (``RDBStorage(failed_trial_callback=...)``) for trials whose
    engine went silent."""
    attrs = {
        SOURCE_ATTR: f"retry:{frozen.number}",
        SCHEDULED_AS_ATTR: frozen.user_attrs.get(SCHEDULED_AS_ATTR, frozen.number),
    }
    for key in (RUN_ATTR, FULL_FIDELITY_ATTR, CONTINUATION_ATTR):
        if key in frozen.user_attrs:
            attrs[key] = frozen.user_attrs[key]
    study.enqueue_trial(frozen.params, user_attrs=attrs)


def owner_alive(owner: str | None) -> bool:
    """Whether the engine that owns a RUNNING trial may still be running. Owners on other hosts are assumed
    alive; on this host a dead process, or an ended engine of this process, is not."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    pid = int(pid_text or 0)
    if host == socket.gethostname() and pid == os.getpid():
        return token in _live_engines
    return process_alive(host, pid)


def _finite_complete(frozen: FrozenTrial) -> bool:
    return frozen.state == TrialState.COMPLETE and frozen.value is not None and math.isfinite(frozen.value)


def params_key(params: Mapping[str, Any]) -> str:
    """One text per config, whatever the order of its params (what the ledger and kept weights are keyed by)."""
    return json.dumps({k: params[k] for k in sorted(params)}, default=str)


def process_alive(host: str | None, pid: int) -> bool:
    """Whether the process ``pid`` on ``host`` may still be running. Only this host can be checked; a process
    elsewhere is assumed alive (its heartbeat, where there is one, tells otherwise)."""
    if host != socket.gethostname():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
