"""Value types of the search: what an evaluation produced, how a config's trial ended, its story in one search,
and the search's result."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState

# How a config's trial ended (also the ledger's ``outcome`` user attr). Complete, pruned and failed configs use
# up the trial budget; an interrupted one is queued again.
COMPLETE, PRUNED, FAILED, INTERRUPTED, RUNNING = "complete", "pruned", "failed", "interrupted", "running"
COUNTED = (COMPLETE, PRUNED, FAILED)


def outcome_of(ending: TrialState) -> str:
    """The outcome recorded for a trial that ended in ``ending``."""
    return {TrialState.COMPLETE: COMPLETE, TrialState.PRUNED: PRUNED}.get(ending, FAILED)


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation of a config at one fidelity produced; ``error`` marks a failed evaluation;
    ``continued_from`` is the lower fidelity whose checkpoint it continued from (None: it trained from scratch)."""

    loss: float
    curve: tuple[float, ...] = ()
    seconds: float = 0.0
    error: str | None = None
    continued_from: float | None = None

    @classmethod
    def of(cls, result: Any) -> Evaluation:
        """Accept an ``Evaluation`` or a bare number from a user's objective."""
        if isinstance(result, Evaluation):
            return result
        return cls(loss=float(result))


Objective = Callable[[dict[str, Any], float], "float | Evaluation"]


@dataclass(frozen=True)
class TrialCounts:
    """How many configs ended complete, pruned and failed (interrupted ones are queued again, not counted)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[str | None]) -> TrialCounts:
        counted = Counter(outcomes)
        return cls(counted[COMPLETE], counted[PRUNED], counted[FAILED])

    def as_dict(self) -> dict[str, int]:
        return {COMPLETE: self.complete, PRUNED: self.pruned, FAILED: self.failed}


@dataclass
class TrialRecord:
    """One config's story in this search: the rungs it reached and how it ended."""

    number: int
    params: dict[str, Any]
    outcome: str = RUNNING  # complete | pruned | failed | interrupted
    value: float | None = None
    rungs: list[tuple[float, float]] = field(default_factory=list)  # (fraction, loss)
    curves: list[tuple[float, ...]] = field(default_factory=list)
    folds: list[float] = field(default_factory=list)  # cross-validation: fold losses at the last rung it reached
    seconds: float = 0.0
    reason: str | None = None
    reused: int = 0
    source: str = "sampler"


@dataclass
class SearchResult:
    """The outcome of one search invocation: ``trials`` are this invocation's; ``best_*`` are the study's; ``counts``
    are the outcomes of every trial of the engine's ``run_id`` (across resumes), or of ``trials`` without one."""

    study_name: str
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    trials: list[TrialRecord]
    counts: TrialCounts
    seconds: float
    evaluation_seconds: float
    parallelism: int = 1

    @property
    def overhead_share(self) -> float:
        """Share of the search's wall-clock not spent inside evaluations (sampling, scheduling, tracking)."""
        if self.seconds <= 0:
            return 0.0
        busy = self.evaluation_seconds / max(self.parallelism, 1)
        return max(0.0, 1 - busy / self.seconds)


class SearchFailed(RuntimeError):
    """No config could be evaluated: every trial failed."""
