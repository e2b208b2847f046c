"""Fidelity schedulers: how much budget (fraction of the training data) a config gets. They know nothing of
samplers, so one implementation serves every backend; the engine tells them each rung's result and they answer
promote, stop or complete (and records it in the ledger, where the sampler learns from pruned trials too).

Rungs are fractions ``eta**-k`` of the training data, from the smallest not below ``min_fraction`` up to 1.
A rung's *step* is ``fraction / smallest fraction``: 1, 3, 9 for eta=3.

With cross-validation (``folds`` > 1) a config is evaluated on every fold at each rung, rung by rung; its rung
result is the mean over the folds, on which promotion is decided as without folds. After each fold but the last,
the running mean is compared with the other configs' at the same rung and fold (Optuna's ``MedianPruner`` rule):
worse than their median, once ``eta`` others are there, and the config stops. What is reported to the ledger is
the running mean at ``fold_step(rung, fold) = step(rung) * folds + fold`` (the rung's step without folds).
"""

from __future__ import annotations

import itertools
import math
import statistics
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol


class Verdict(StrEnum):
    PROMOTE = "promote"
    STOP = "stop"
    COMPLETE = "complete"


class TrialLike(Protocol):
    number: int


def rung_fractions(eta: int, min_fraction: float) -> tuple[float, ...]:
    """Fractions ``eta**-n, ..., eta**-1, 1`` with ``eta**-n >= min_fraction`` (at least the full rung).

    Example:
        >>> rung_fractions(3, 1 / 9)
        (0.1111111111111111, 0.3333333333333333, 1.0)
    """
    if eta < 2:
        raise ValueError(f"eta must be >= 2 (got {eta})")
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1] (got {min_fraction})")
    n = math.floor(math.log(1 / min_fraction, eta) + 1e-9)
    return tuple(float(eta ** -(n - k)) for k in range(n + 1))


# Costs within this factor of the rung's median count as the same: seconds per epoch are measured, and noisy (other
# processes, the validation pass that dominates a small rung), so only a config far dearer than most is held back.
COST_TOLERANCE = 1.5


def promotable(loss: float, competing: list[float], eta: int, cost_ratio: float = 1.0) -> bool:
    """Asynchronous successive halving's rule: continue when ``loss`` ranks in the top 1/eta of the results
    seen at this rung so far (itself included); before ``eta`` results, only the best so far continues. A config
    whose cost is ``cost_ratio`` times the rung's median cost, beyond ``COST_TOLERANCE``, must rank in the top
    1/(eta x cost_ratio / COST_TOLERANCE): a config three times as dear as most takes half their promotions.

    Example:
        >>> rung = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
        >>> promotable(0.2, rung, eta=3), promotable(0.2, rung, eta=3, cost_ratio=1.4)
        (True, True)
        >>> promotable(0.2, rung, eta=3, cost_ratio=3.0)
        False
    """
    ranked = sorted(competing)
    index = max(int(len(ranked) / (eta * max(cost_ratio / COST_TOLERANCE, 1.0))) - 1, 0)
    return loss <= ranked[index]


class FidelityScheduler(ABC):
    """Decides, after each rung, whether a config goes on. Subclasses define the brackets and the rule."""

    name = "base"

    def __init__(self, eta: int = 3, min_fraction: float = 1 / 9, folds: int = 1, fold_pruning: bool = True):
        self.eta = eta
        self.fractions = rung_fractions(eta, min_fraction)
        self.folds = folds
        self.fold_pruning = fold_pruning
        self._fold_results: dict[tuple[int, int, int], dict[int, float]] = defaultdict(dict)
        # trial number -> the rung a due config was promoted from: on its way back up it passes that rung and those
        # below, whatever they hold by then (deferred promotion)
        self._cleared: dict[int, int] = {}

    def step(self, rung: int) -> int:
        """The resource step of ``rung`` (1, eta, eta**2, ...)."""
        return int(round(self.fractions[rung] / self.fractions[0]))

    def fold_step(self, rung: int, fold: int) -> int:
        """The step reported to the ledger for ``fold`` of ``rung``: ``step(rung)`` without folds."""
        return self.step(rung) * self.folds + fold

    def position_of(self, step: int) -> tuple[int, int] | None:
        """The (rung, fold) a reported step stands for; None for a step of another schedule."""
        rung_step, fold = divmod(step, self.folds)
        for rung in range(len(self.fractions)):
            if self.step(rung) == rung_step:
                return rung, fold
        return None

    def bracket(self, trial: TrialLike) -> int:
        return 0

    def decide_fold(self, trial: TrialLike, rung: int, fold: int, mean: float) -> Verdict:
        """After ``fold`` (not the last) of ``rung``, whose running mean over the folds so far is ``mean``: go on
        to the next fold (PROMOTE), or STOP when worse than the median of the ``eta`` or more other configs'
        running means at this rung and fold."""
        if not math.isfinite(mean):
            return Verdict.STOP
        self._record_fold(trial, rung, fold, mean)
        if not self.fold_pruning or rung <= self._cleared.get(trial.number, -1):
            return Verdict.PROMOTE
        results = self._fold_results[(self.bracket(trial), rung, fold)]
        others = [loss for number, loss in results.items() if number != trial.number]
        if len(others) < self.eta:
            return Verdict.PROMOTE
        return Verdict.PROMOTE if mean <= statistics.median(others) else Verdict.STOP

    def _record_fold(self, trial: TrialLike, rung: int, fold: int, mean: float) -> None:
        if math.isfinite(mean):
            self._fold_results[(self.bracket(trial), rung, fold)][trial.number] = mean

    @property
    def max_step(self) -> int:
        return self.step(len(self.fractions) - 1)

    def rungs(self, trial: TrialLike) -> tuple[int, ...]:
        """Indices into ``fractions`` that ``trial`` may visit, ascending; the last is always full fidelity."""
        return tuple(range(len(self.fractions)))

    def decide(self, trial: TrialLike, rung: int, loss: float) -> Verdict:
        """Record ``loss`` of ``trial`` at ``rung`` and say what happens next."""
        if rung == len(self.fractions) - 1:
            self._record(trial, rung, loss)
            return Verdict.COMPLETE
        return self._decide(trial, rung, loss)

    def restore(self, history: Iterable[tuple[TrialLike, int, int, float]]) -> None:
        """Record (trial, rung, fold, running mean) results from the ledger: after a restart, so decisions continue
        where they left off, and before each decision, for results other engines sharing the study have reported.
        The last fold's is the rung's result. Recording a result twice changes nothing."""
        for trial, rung, fold, loss in history:
            if fold == self.folds - 1:
                self._record(trial, rung, loss)
            else:
                self._record_fold(trial, rung, fold, loss)

    def promotions_due(self) -> list[tuple[int, int]]:
        """Configs stopped earlier that are now to be promoted, as (trial number as scheduled, rung), each once
        (deferred promotion only; see ``SuccessiveHalving``)."""
        return []

    def record_cost(self, trial: TrialLike, rung: int, seconds_per_epoch: float) -> None:
        """What ``trial``'s evaluation at ``rung`` cost, in seconds per epoch, told before its ``decide``: a
        cost-aware scheduler makes a config far dearer than its rung's median rank higher to be promoted."""
        return None

    def waiting(self, trial: TrialLike, rung: int) -> bool:
        """Whether ``trial`` stopped at ``rung`` only to wait for the rung to fill (deferred promotion)."""
        return False

    def release(self, trial: TrialLike, rung: int) -> None:
        """``trial`` waits no more at ``rung``: the engine promotes it now (out of time, with nothing complete)."""
        return None

    def restore_waiting(self, waiting: Iterable[tuple[TrialLike, int, float]]) -> None:
        """After a restart: (trial, rung, loss) of configs a stopped search left waiting (deferred promotion only)."""
        return None

    def flush(self) -> list[tuple[int, int]]:
        """The search has nothing left to run: configs still waiting for their rung to fill are due now or never,
        as (trial number as scheduled, rung) (deferred promotion only)."""
        return []

    @abstractmethod
    def _decide(self, trial: TrialLike, rung: int, loss: float) -> Verdict: ...

    def _record(self, trial: TrialLike, rung: int, loss: float) -> None:
        return None


class FullFidelity(FidelityScheduler):
    """No subsampling: every config trains on all the data once."""

    name = "none"

    def __init__(self, eta: int = 3, min_fraction: float = 1 / 9, folds: int = 1, fold_pruning: bool = True):
        super().__init__(eta, 1.0, folds, fold_pruning)

    def _decide(self, trial: TrialLike, rung: int, loss: float) -> Verdict:
        return Verdict.COMPLETE


class SuccessiveHalving(FidelityScheduler):
    """Asynchronous successive halving (ASHA): a result is compared with those already seen at its rung, so a
    free worker never waits for a rung to fill.

    With ``deferred=True`` a rung promotes nothing before it holds ``eta`` results: a config arriving earlier
    stops there (so the first configs of a bracket are not sent on to the full data for want of anything to
    compare them with) and waits; once the rung has ``eta`` results, the waiting configs that rank in its top
    1/eta are due for promotion (``promotions_due``), and the engine continues them, reusing their finished rungs.
    When the search has nothing left to run, the best waiting config of a rung that never filled goes on
    (``flush``). After a restart the engine tells it which configs were left waiting (``restore_waiting``)."""

    name = "successive_halving"

    def __init__(
        self,
        eta: int = 3,
        min_fraction: float = 1 / 9,
        deferred: bool = False,
        folds: int = 1,
        fold_pruning: bool = True,
        cost_aware: bool = False,
    ):
        super().__init__(eta, min_fraction, folds, fold_pruning)
        self.deferred = deferred
        self.cost_aware = cost_aware
        self._results: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
        self._waiting: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
        self._costs: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)  # seconds per epoch, if told

    def rungs(self, trial: TrialLike) -> tuple[int, ...]:
        return tuple(range(self.bracket(trial), len(self.fractions)))

    def results_at(self, rung: int, bracket: int = 0) -> dict[int, float]:
        """Losses recorded at ``rung`` (trial number -> loss)."""
        return dict(self._results[(bracket, rung)])

    def _record(self, trial: TrialLike, rung: int, loss: float) -> None:
        if math.isfinite(loss):
            self._results[(self.bracket(trial), rung)][trial.number] = loss

    def _decide(self, trial: TrialLike, rung: int, loss: float) -> Verdict:
        if not math.isfinite(loss):
            return Verdict.STOP
        self._record(trial, rung, loss)
        key = (self.bracket(trial), rung)
        competing = list(self._results[key].values())
        if rung <= self._cleared.get(trial.number, -1):
            if rung == self._cleared[trial.number]:
                del self._cleared[trial.number]
            return Verdict.PROMOTE
        if self.deferred and len(competing) < self.eta:
            self._waiting[key][trial.number] = loss
            return Verdict.STOP
        self._waiting[key].pop(trial.number, None)
        promoted = promotable(loss, competing, self.eta, self._cost_ratio(key, trial.number))
        return Verdict.PROMOTE if promoted else Verdict.STOP

    def record_cost(self, trial: TrialLike, rung: int, seconds_per_epoch: float) -> None:
        if self.cost_aware and math.isfinite(seconds_per_epoch) and seconds_per_epoch > 0:
            self._costs[(self.bracket(trial), rung)][trial.number] = seconds_per_epoch

    def _cost_ratio(self, key: tuple[int, int], number: int) -> float:
        """The config's cost over the median of its rung's (1 until ``eta`` configs' costs are known)."""
        costs = self._costs[key]
        if number not in costs or len(costs) < self.eta:
            return 1.0
        return costs[number] / statistics.median(costs.values())

    def promotions_due(self) -> list[tuple[int, int]]:
        due = []
        for (bracket, rung), waiting in self._waiting.items():
            competing = list(self._results[(bracket, rung)].values())
            if len(competing) < self.eta:
                continue
            for number, loss in list(waiting.items()):
                del waiting[number]
                if promotable(loss, competing, self.eta, self._cost_ratio((bracket, rung), number)):
                    due.append((number, rung))
                    self._cleared[number] = rung
        return due

    def waiting(self, trial: TrialLike, rung: int) -> bool:
        return trial.number in self._waiting[(self.bracket(trial), rung)]

    def flush(self) -> list[tuple[int, int]]:
        # A rung that never filled: ASHA's rule before eta results, only the best so far goes on.
        due = []
        for (bracket, rung), waiting in self._waiting.items():
            if not waiting:
                continue
            number, loss = min(waiting.items(), key=lambda item: item[1])
            waiting.clear()
            if loss <= min(self._results[(bracket, rung)].values()):
                due.append((number, rung))
                self._cleared[number] = rung
        return due

    def release(self, trial: TrialLike, rung: int) -> None:
        self._waiting[(self.bracket(trial), rung)].pop(trial.number, None)

    def restore_waiting(self, waiting: Iterable[tuple[TrialLike, int, float]]) -> None:
        if not self.deferred:
            return
        for trial, rung, loss in waiting:
            if math.isfinite(loss):
                self._waiting[(self.bracket(trial), rung)][trial.number] = loss


def hyperband_budgets(eta: int, rungs: int) -> list[int]:
    """Configs per bracket in one round of Hyperband over ``rungs`` rungs: bracket b starts at rung b.

    Example:
        >>> hyperband_budgets(3, 3)
        [9, 5, 3]
    """
    return [math.ceil(rungs * eta ** (rungs - 1 - b) / (rungs - b)) for b in range(rungs)]


def brackets_for(n_configs: int | None, eta: int, rungs: int) -> int:
    """How many Hyperband brackets a search of ``n_configs`` configs uses: a bracket only when the search samples
    enough configs for one round of it and of the brackets before it (so a small search is plain successive
    halving, which prunes the most; the later brackets hedge against misleading small rungs when configs are many).
    All of them without a count (a search bounded by time alone).

    Example:
        >>> [brackets_for(n, 3, 3) for n in (9, 14, 20, 50, None)]
        [1, 2, 3, 3, 3]
    """
    if n_configs is None:
        return rungs
    rounds = itertools.accumulate(hyperband_budgets(eta, rungs))
    return max(1, sum(n_configs >= needed for needed in rounds))


class Hyperband(SuccessiveHalving):
    """Several successive-halving brackets, each starting at a higher rung; configs are spread over brackets
    in proportion to Hyperband's allocation, deterministically by trial number. With ``n_configs`` (the search's
    trial budget) only the brackets it can fill are used (``brackets_for``); ``brackets`` sets their number instead
    (a continued study keeps the brackets it started with, so its trials stay in theirs)."""

    name = "hyperband"

    def __init__(
        self,
        eta: int = 3,
        min_fraction: float = 1 / 9,
        deferred: bool = False,
        folds: int = 1,
        fold_pruning: bool = True,
        n_configs: int | None = None,
        cost_aware: bool = False,
        brackets: int | None = None,
    ):
        super().__init__(eta, min_fraction, deferred, folds, fold_pruning, cost_aware)
        self.brackets = brackets or brackets_for(n_configs, eta, len(self.fractions))
        budgets = hyperband_budgets(eta, len(self.fractions))[: self.brackets]
        # Interleave brackets so that any run of consecutive trials samples all of them in proportion.
        order = sorted(((j + 0.5) / budget, b) for b, budget in enumerate(budgets) for j in range(budget))
        self._pattern = [b for _, b in order]

    def bracket(self, trial: TrialLike) -> int:
        return self._pattern[trial.number % len(self._pattern)]


def make_scheduler(
    kind: str,
    eta: int,
    min_fraction: float,
    deferred: bool = False,
    folds: int = 1,
    fold_pruning: bool = True,
    n_configs: int | None = None,
    cost_aware: bool = False,
    brackets: int | None = None,
) -> FidelityScheduler:
    """The scheduler for ``search.fidelity``, the same whichever sampler backend proposes the configs;
    ``deferred`` (``search.promotion: deferred``) holds promotions until a rung has ``eta`` results; ``folds``
    (``search.cv.folds``) evaluates each rung on that many folds, stopping a config after a fold when
    ``fold_pruning`` says so (``search.cv.pruning``); ``n_configs`` (``search.n_trials``) is how many configs the
    search samples, from which Hyperband chooses its brackets (``brackets`` fixes their number); ``cost_aware``
    (``search.cost_aware``) makes a config far dearer than its rung's median rank higher to be promoted.

    Example:
        >>> make_scheduler("hyperband", 3, 1 / 9).fractions
        (0.1111111111111111, 0.3333333333333333, 1.0)
    """
    if kind == "none":
        return FullFidelity(eta, min_fraction, folds, fold_pruning)
    if kind == "successive_halving":
        return SuccessiveHalving(eta, min_fraction, deferred, folds, fold_pruning, cost_aware)
    if kind == "hyperband":
        return Hyperband(eta, min_fraction, deferred, folds, fold_pruning, n_configs, cost_aware, brackets)
    raise ValueError(f"search.fidelity: unknown scheduler {kind!r}; choose none, successive_halving or hyperband")
