"""The observer hooks that tracking and progress plug into: the engine calls them as trials start, finish rungs,
finish, or are interrupted."""

from __future__ import annotations

from typing import Protocol

import optuna

from automl.tasks.search._scheduler import Verdict
from automl.tasks.search._types import Evaluation, TrialRecord


class SearchObserver(Protocol):
    """Hooks for tracking and progress; all optional (see ``NullObserver``)."""

    def trial_started(self, trial: optuna.Trial, record: TrialRecord) -> None: ...

    def rung_finished(
        self, record: TrialRecord, fraction: float, step: int, evaluation: Evaluation, verdict: Verdict
    ) -> None: ...

    def fold_finished(self, record: TrialRecord, fraction: float, step: int, fold: int, loss: float) -> None:
        """Cross-validation: ``fold`` of the rung at ``fraction`` (reported as ``step``) ended with ``loss``; its
        rung's ``rung_finished`` follows the last fold (or the fold after which the config stops)."""

    def trial_finished(self, record: TrialRecord, best: TrialRecord | None) -> None: ...

    def trial_interrupted(self, record: TrialRecord, reason: str) -> None: ...


class NullObserver:
    def trial_started(self, trial: optuna.Trial, record: TrialRecord) -> None:
        return None

    def rung_finished(
        self, record: TrialRecord, fraction: float, step: int, evaluation: Evaluation, verdict: Verdict
    ) -> None:
        return None

    def fold_finished(self, record: TrialRecord, fraction: float, step: int, fold: int, loss: float) -> None:
        return None

    def trial_finished(self, record: TrialRecord, best: TrialRecord | None) -> None:
        return None

    def trial_interrupted(self, record: TrialRecord, reason: str) -> None:
        return None


class Observers:
    """Several observers as one, called in order (MLflow tracking and a budget, say)."""

    def __init__(self, *observers: SearchObserver):
        self.observers = observers

    def trial_started(self, trial: optuna.Trial, record: TrialRecord) -> None:
        for observer in self.observers:
            observer.trial_started(trial, record)

    def rung_finished(
        self, record: TrialRecord, fraction: float, step: int, evaluation: Evaluation, verdict: Verdict
    ) -> None:
        for observer in self.observers:
            observer.rung_finished(record, fraction, step, evaluation, verdict)

    def fold_finished(self, record: TrialRecord, fraction: float, step: int, fold: int, loss: float) -> None:
        for observer in self.observers:
            observer.fold_finished(record, fraction, step, fold, loss)

    def trial_finished(self, record: TrialRecord, best: TrialRecord | None) -> None:
        for observer in self.observers:
            observer.trial_finished(record, best)

    def trial_interrupted(self, record: TrialRecord, reason: str) -> None:
        for observer in self.observers:
            observer.trial_interrupted(record, reason)
