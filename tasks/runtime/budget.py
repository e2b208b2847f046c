"""The run's wall-clock budget (``budget.seconds``, ``automl run --budget``): when the run must end, how much of it
the final stage needs (from the costs the search measured), and so when the search must stop.

Example:
    >>> budget = RunBudget(seconds=120, started_at=time.time())
    >>> deadline = SearchDeadline(budget, final_epochs=50)
    >>> engine = SearchEngine(objective, backend, scheduler, n_trials=20, deadline=deadline,
    ...                       observer=Observers(tracker, deadline))
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from tasks.search_stage.studies import DEFAULT_CONFIG_SOURCE

# The final stage besides its two trainings (test predictions, plots, logging the model, registering it) and the
# summary after it: measured 2 s on 2 cores here with the registry on SQLite (1 s without it), twice that kept as a
# margin. It was 10 s until a 30 s budget was seen to end 9 s early with both final trainings cut to an epoch or two.
FINAL_OVERHEAD_SECONDS = 4.0
# The share of the budget the final stage may reserve at most: the search always gets the rest.
FINAL_SHARE_CAP = 0.5


@dataclass(frozen=True)
class RunBudget:
    """``seconds`` of wall-clock from ``started_at`` (``time.time()`` when the command or the flow run started)."""

    seconds: float
    started_at: float

    @property
    def deadline(self) -> float:
        return self.started_at + self.seconds

    def used(self) -> float:
        return time.time() - self.started_at


@dataclass
class SearchDeadline:
    """The time (``time.time()``) the search must stop by: the run's deadline less what the final stage will need.

    It watches the search's evaluations (as an observer) and keeps each config's cost per epoch on the whole training
    data; the final stage trains the best config (not under PBT: ``trains_tuned`` off) and (unless ``trains_default``
    is off) the default config for up to ``final_epochs`` each, so it needs (best's cost + a typical config's cost)
    x ``final_epochs`` + ``overhead`` (one training when the best is the default config, queued first), capped at
    ``FINAL_SHARE_CAP`` of the budget (and that share until anything was measured). Called, it answers the current
    deadline; it pickles, so evaluations in other processes get the deadline of their submission.
    """

    budget: RunBudget
    final_epochs: int
    overhead: float = FINAL_OVERHEAD_SECONDS
    trains_default: bool = True  # the final stage also trains the default config (final.baselines)
    epoch_seconds: dict[int, float] = field(default_factory=dict)  # trial number -> seconds per full-data epoch
    best: int | None = None
    default_trial: int | None = None  # the trial of the default config queued first (search.try_default_first)
    # rows the final stage trains on per row a search evaluation trains on at full fidelity: with search.cv, the
    # train split over a fold's training part (smaller, for series folds much smaller)
    train_scale: float = 1.0
    # the final stage trains the tuned config; not under PBT, where the best member is tested as it is
    trains_tuned: bool = True

    def __call__(self) -> float:
        return self.budget.deadline - self.final_reserve()

    def final_reserve(self) -> float:
        cap = FINAL_SHARE_CAP * self.budget.seconds
        if not self.epoch_seconds:
            return cap
        typical = statistics.median(self.epoch_seconds.values())
        best = self.epoch_seconds.get(self.best, typical) if self.best is not None else typical
        best = best if self.trains_tuned else 0.0
        # a best config that is the default config is trained once, as its own baseline
        own_baseline = self.trains_tuned and self.best == self.default_trial
        default = typical if self.trains_default and not own_baseline else 0.0
        return min((best + default) * self.final_epochs + self.overhead, cap)

    # --- observer hooks -------------------------------------------------------------------------------------------

    def trial_started(self, trial: Any, record: Any) -> None:
        if record.source == DEFAULT_CONFIG_SOURCE:
            self.default_trial = record.number

    def rung_finished(self, record: Any, fraction: float, step: int, evaluation: Any, verdict: Any) -> None:
        if evaluation.curve and evaluation.seconds > 0 and fraction > 0:
            per_epoch = evaluation.seconds / len(evaluation.curve) / fraction
            self.epoch_seconds[record.number] = per_epoch * self.train_scale

    def fold_finished(self, record: Any, fraction: float, step: int, fold: int, loss: float) -> None:
        return None

    def trial_finished(self, record: Any, best: Any) -> None:
        self.best = best.number if best is not None else None

    def trial_interrupted(self, record: Any, reason: str) -> None:
        return None
