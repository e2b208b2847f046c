"""Fidelity schedulers: how much budget (fraction of the training data) a config gets. They know nothing of
samplers, so one implementation serves every backend; the engine tells them each rung's result and they answer
promote, stop or complete (and records it in the ledger, where the sampler learns from pruned trials too).

Rungs are fractions ``eta**-k`` of the training data, from the smallest not below ``min_fraction`` up to 1.
A rung's *step* (what is reported to the ledger) is ``fraction / smallest fraction``: 1, 3, 9 for eta=3.
"""

from __future__ import annotations

import math
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


def promotable(loss: float, competing: list[float], eta: int) -> bool:
    """Asynchronous successive halving's rule: continue when ``loss`` ranks in the top 1/eta of the results
    seen at this rung so far (itself included); before ``eta`` results, only the best so far continues."""
    ranked = sorted(competing)
    index = max(len(ranked) // eta - 1, 0)
    return loss <= ranked[index]


class FidelityScheduler(ABC):
    """Decides, after each rung, whether a config goes on. Subclasses define the brackets and the rule."""

    name = "base"

    def __init__(self, eta: int = 3, min_fraction: float = 1 / 9):
        self.eta = eta
        self.fractions = rung_fractions(eta, min_fraction)

    def step(self, rung: int) -> int:
        """The resource step reported for ``rung`` (1, eta, eta**2, ...)."""
        return int(round(self.fractions[rung] / self.fractions[0]))

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

    def restore(self, history: Iterable[tuple[TrialLike, int, float]]) -> None:
        """Record (trial, rung, loss) results from the ledger: after a restart, so decisions continue where they left
        off, and before each decision, for results other engines sharing the study have reported. Recording a
        result twice changes nothing."""
        for trial, rung, loss in history:
            self._record(trial, rung, loss)

    def promotions_due(self) -> list[tuple[int, int]]:
        """Configs stopped earlier that are now to be promoted, as (trial number as scheduled, rung), each once
        (deferred promotion only; see ``SuccessiveHalving``)."""
        return []

    def waiting(self, trial: TrialLike, rung: int) -> bool:
        """Whether ``trial`` stopped at ``rung`` only to wait for the rung to fill (deferred promotion)."""
        return False

    def release(self, trial: TrialLike, rung: int) -> None:
        """``trial`` waits no more at ``rung``: the engine promotes it now (out of time, with nothing complete)."""
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

    def __init__(self, eta: int = 3, min_fraction: float = 1 / 9):
        super().__init__(eta, 1.0)

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
    (``flush``). Waiting configs are not remembered across a restart of the search: they stay stopped."""

    name = "successive_halving"

    def __init__(self, eta: int = 3, min_fraction: float = 1 / 9, deferred: bool = False):
        super().__init__(eta, min_fraction)
        self.deferred = deferred
        self._results: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
        self._waiting: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
        # trial number -> the rung a due config was promoted from: on its way back up it passes that rung and those
        # below, whatever they hold by then
        self._cleared: dict[int, int] = {}

    def bracket(self, trial: TrialLike) -> int:
        return 0

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
        return Verdict.PROMOTE if promotable(loss, competing, self.eta) else Verdict.STOP

    def promotions_due(self) -> list[tuple[int, int]]:
        due = []
        for (bracket, rung), waiting in self._waiting.items():
            competing = list(self._results[(bracket, rung)].values())
            if len(competing) < self.eta:
                continue
            for number, loss in list(waiting.items()):
                del waiting[number]
                if promotable(loss, competing, self.eta):
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


class Hyperband(SuccessiveHalving):
    """Several successive-halving brackets, each starting at a higher rung; configs are spread over brackets
    in proportion to Hyperband's allocation, deterministically by trial number."""

    name = "hyperband"

    def __init__(self, eta: int = 3, min_fraction: float = 1 / 9, deferred: bool = False):
        super().__init__(eta, min_fraction, deferred)
        n_brackets = len(self.fractions)
        budgets = [math.ceil(n_brackets * eta ** (n_brackets - 1 - b) / (n_brackets - b)) for b in range(n_brackets)]
        # Interleave brackets so that any run of consecutive trials samples all of them in proportion.
        order = sorted(((j + 0.5) / budget, b) for b, budget in enumerate(budgets) for j in range(budget))
        self._pattern = [b for _, b in order]

    def bracket(self, trial: TrialLike) -> int:
        return self._pattern[trial.number % len(self._pattern)]


def make_scheduler(kind: str, eta: int, min_fraction: float, deferred: bool = False) -> FidelityScheduler:
    """The scheduler for ``search.fidelity``, the same whichever sampler backend proposes the configs;
    ``deferred`` (``search.promotion: deferred``) holds promotions until a rung has ``eta`` results.

    Example:
        >>> make_scheduler("hyperband", 3, 1 / 9).fractions
        (0.1111111111111111, 0.3333333333333333, 1.0)
    """
    if kind == "none":
        return FullFidelity(eta, min_fraction)
    if kind == "successive_halving":
        return SuccessiveHalving(eta, min_fraction, deferred)
    if kind == "hyperband":
        return Hyperband(eta, min_fraction, deferred)
    raise ValueError(f"search.fidelity: unknown scheduler {kind!r}; choose none, successive_halving or hyperband")
