"""When the search must stop under a run budget: the run's deadline less what the final stage will need, its plan
(``tasks.final_train.plan``) priced with the costs the search measured.

Example:
    >>> deadline = SearchDeadline(RunBudget(seconds=120, started_at=time.time()), FinalPlan.of(cfg))
    >>> engine = SearchEngine(objective, backend, scheduler, n_trials=20, deadline=deadline,
    ...                       observer=Observers(tracker, deadline))
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from automl.tasks.final_train.plan import DEFAULT_CONFIG, MEMBER, TUNED, FinalPlan
from automl.tasks.runtime.budget import RunBudget

# The share of the budget the final stage may reserve at most: the search always gets the rest.
FINAL_SHARE_CAP = 0.5


@dataclass
class SearchDeadline:
    """The time (``time.time()``) the search must stop by: the run's deadline less what the final stage will need.

    It watches the search's evaluations (as an observer) and keeps each config's cost per epoch on the whole training
    data; the final stage's ``plan`` says what it trains for the best config so far (the best config at its cost, the
    default config and the other ensemble candidates at a typical config's), capped at ``FINAL_SHARE_CAP`` of the
    budget (and that share until anything was measured). Called, it answers the current deadline; it pickles, so
    evaluations in other processes get the deadline of their submission.
    """

    budget: RunBudget
    plan: FinalPlan
    epoch_seconds: dict[int, float] = field(default_factory=dict)  # trial number -> seconds per full-data epoch
    best: int | None = None
    best_params: dict[str, Any] | None = None
    # rows the final stage trains on per row a search evaluation trains on at full fidelity: with search.cv, the
    # train split over a fold's training part (smaller, for series folds much smaller)
    train_scale: float = 1.0

    def __call__(self) -> float:
        return self.budget.deadline - self.final_reserve()

    def final_reserve(self) -> float:
        cap = FINAL_SHARE_CAP * self.budget.seconds
        if not self.epoch_seconds:
            return cap
        typical = statistics.median(self.epoch_seconds.values())
        best = self.epoch_seconds.get(self.best, typical) if self.best is not None else typical
        return min(
            self.plan.seconds_needed({TUNED: best, MEMBER: typical, DEFAULT_CONFIG: typical}, self.best_params), cap
        )

    # --- observer hooks -------------------------------------------------------------------------------------------

    def trial_started(self, trial: Any, record: Any) -> None:
        return None

    def rung_finished(self, record: Any, fraction: float, step: int, evaluation: Any, verdict: Any) -> None:
        if evaluation.curve and evaluation.seconds > 0 and fraction > 0:
            per_epoch = evaluation.seconds / len(evaluation.curve) / fraction
            self.epoch_seconds[record.number] = per_epoch * self.train_scale

    def fold_finished(self, record: Any, fraction: float, step: int, fold: int, loss: float) -> None:
        return None

    def trial_finished(self, record: Any, best: Any) -> None:
        self.best = best.number if best is not None else None
        self.best_params = dict(best.params) if best is not None else None

    def trial_interrupted(self, record: Any, reason: str) -> None:
        return None
