"""Population-based training (Jaderberg et al., 2017) as a search strategy: a population trains side by side, and
after every interval the worst quantile copies the weights and params of a member of the best quantile (exploit)
and perturbs or resamples its mutable params (explore). Architecture params only change by copying.

The loop is a library like the engine: it imports neither torch, MLflow nor Prefect. The objective trains one
member for one interval from a checkpoint (``objective(params, 1.0, member=, interval=, start=, epochs=)``), runs
through the same executors as trials, and keeps the checkpoint it ends with. The study is the ledger: each member's
interval is one trial, recorded as it ends, so a stopped run resumes at the first unrecorded member-interval and
the exploit/explore draws of each interval are seeded by (seed, interval), the same on every run.

Example:
    >>> pbt = PopulationBasedTraining(objective, space, {"lr"}, PBTSettings(population=4, interval_epochs=1,
    ...                               epochs=4), study)
    >>> pbt.run().best_params
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import optuna
from optuna.trial import TrialState

from automl.tasks.search._executors import Executor, LocalExecutor
from automl.tasks.search._ledger import OUTCOME_ATTR, REASON_ATTR, RUN_ATTR, SECONDS_ATTR
from automl.tasks.search._space import SearchSpace
from automl.tasks.search._types import COMPLETE, FAILED, Evaluation, SearchFailed

logger = logging.getLogger("automl")

# User attributes of a member-interval's trial.
MEMBER_ATTR = "pbt_member"
INTERVAL_ATTR = "pbt_interval"
EXPLOITED_FROM_ATTR = "exploited_from"  # the member whose weights and params it copied before this interval
START_ATTR = "pbt_start"  # "member:interval" of the checkpoint it started from; absent for fresh weights


@dataclass(frozen=True)
class PBTSettings:
    """How the population trains (``search.pbt``)."""

    population: int
    interval_epochs: int
    epochs: int
    quantile: float = 0.25
    perturb: tuple[float, float] = (0.8, 1.2)
    resample_probability: float = 0.25
    seed: int = 0

    @property
    def intervals(self) -> int:
        return math.ceil(self.epochs / self.interval_epochs)

    def epochs_in(self, interval: int) -> int:
        """Epochs of ``interval`` (the last may be shorter)."""
        return min(self.interval_epochs, self.epochs - interval * self.interval_epochs)

    def cut(self) -> int:
        """Members in the bottom (and in the top) quantile: ceil(population * quantile), at most half."""
        return max(1, min(math.ceil(self.population * self.quantile - 1e-9), self.population // 2))


@dataclass(frozen=True)
class Checkpoint:
    """The weights a member had at the end of an interval."""

    member: int
    interval: int

    def __str__(self) -> str:
        return f"{self.member}:{self.interval}"

    @classmethod
    def parse(cls, text: str | None) -> Checkpoint | None:
        if not text:
            return None
        member, interval = text.split(":")
        return cls(int(member), int(interval))


@dataclass(frozen=True)
class MemberStep:
    """One member's interval: the params it trained with, where its weights came from, and how it ended."""

    member: int
    interval: int
    params: dict[str, Any]
    start: Checkpoint | None  # None: fresh weights (the first interval)
    exploited_from: int | None  # the member it copied before this interval (None: it went on with its own)
    loss: float = math.nan  # the loss of the checkpoint it ends with
    curve: tuple[float, ...] = ()  # validation loss per epoch
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.loss)


@dataclass
class PBTResult:
    """A population's training: every member-interval (``steps``, across resumes) and the best member at the last
    interval reached."""

    study_name: str
    steps: list[MemberStep]
    best_member: int
    best_value: float
    best_params: dict[str, Any]
    best_trial: int
    intervals_done: int
    seconds: float
    population: int

    @property
    def exploit_steps(self) -> int:
        return sum(step.exploited_from is not None for step in self.steps)

    def schedule(self, member: int) -> list[dict[str, Any]]:
        """The params ``member`` trained with, interval by interval (its hyperparameter schedule)."""
        return [dict(s.params) for s in sorted(self.steps, key=lambda s: s.interval) if s.member == member]

    def lineage(self) -> list[dict[str, Any]]:
        """One row per member-interval: where its weights came from and its loss."""
        return [
            {
                "interval": s.interval,
                "member": s.member,
                "exploited_from": s.exploited_from,
                "start": str(s.start) if s.start else "",
                "loss": s.loss,
                **s.params,
            }
            for s in sorted(self.steps, key=lambda s: (s.interval, s.member))
        ]


class PBTObserver(Protocol):
    """Hooks for tracking and progress; ``restored`` steps were recorded by an earlier run of the same search."""

    def member_finished(self, step: MemberStep, restored: bool) -> None: ...

    def interval_finished(
        self, interval: int, steps: Sequence[MemberStep], best: MemberStep, restored: bool
    ) -> None: ...


class _NullObserver:
    def member_finished(self, step: MemberStep, restored: bool) -> None:
        pass

    def interval_finished(self, interval: int, steps: Sequence[MemberStep], best: MemberStep, restored: bool) -> None:
        pass


class PopulationBasedTraining:
    """Trains ``settings.population`` members for ``settings.epochs`` in intervals of ``interval_epochs``.

    ``initial`` configs (the default config, warm-start configs) are the first members; the others are drawn from
    ``space``. Only ``mutable`` params are perturbed; the others are a member's architecture. ``time_up``, asked
    before each interval, ends the training early (a run's budget); the best member at the last finished interval
    is the result. ``run_id`` marks this pipeline execution's trials, so that a rerun resumes them.
    """

    def __init__(
        self,
        objective: Callable[..., Evaluation | float],
        space: SearchSpace,
        mutable: Collection[str],
        settings: PBTSettings,
        study: optuna.Study,
        *,
        initial: Sequence[Mapping[str, Any]] = (),
        executor: Executor | None = None,
        observer: PBTObserver | None = None,
        run_id: str | None = None,
        time_up: Callable[[], bool] | None = None,
    ):
        self.mutable = [name for name in space.names if name in set(mutable)]
        if not self.mutable:
            raise ValueError(f"PBT needs a mutable parameter in the space ({', '.join(sorted(mutable))})")
        self.objective = objective
        self.space = space
        self.settings = settings
        self.study = study
        self.initial = [dict(config) for config in initial][: settings.population]
        self.executor = executor or LocalExecutor(1)
        self.observer = observer or _NullObserver()
        self.run_id = run_id
        self.time_up = time_up
        self._trial_of: dict[tuple[int, int], int] = {}  # (member, interval): its trial's number

    # --- the loop -----------------------------------------------------------------------------------------------

    def run(self) -> PBTResult:
        started = time.monotonic()
        recorded = self._recorded()
        for step in sorted(recorded.values(), key=lambda s: (s.interval, s.member)):
            self.observer.member_finished(step, restored=True)
        lineup = self._first_lineup()
        done: list[MemberStep] = []
        interval = 0
        while interval < self.settings.intervals:
            recorded_whole = all((m, interval) in recorded for m in range(self.settings.population))
            if done and not recorded_whole and self.time_up is not None and self.time_up():
                logger.info("pbt: out of time after interval %d of %d", interval, self.settings.intervals)
                break
            done = self._train_interval(interval, lineup, recorded)
            best = min((s for s in done if s.ok), key=lambda s: s.loss, default=None)
            if best is None:
                raise SearchFailed(f"pbt: every member failed in interval {interval + 1}: {done[0].error}")
            restored = all(recorded.get((s.member, interval)) is s for s in done)
            self.observer.interval_finished(interval, done, best, restored)
            interval += 1
            if interval < self.settings.intervals:
                lineup = self._next_lineup(interval, done)
        return self._result(done, interval, time.monotonic() - started)

    def _train_interval(
        self, interval: int, lineup: list[MemberStep], recorded: dict[tuple[int, int], MemberStep]
    ) -> list[MemberStep]:
        """Every member's step of ``interval``: reused from the ledger when recorded, else trained."""
        done: dict[int, MemberStep] = {}
        in_flight: dict[Any, MemberStep] = {}
        epochs = self.settings.epochs_in(interval)
        for step in lineup:
            known = recorded.get((step.member, interval))
            if known is not None and known.params == step.params and known.start == step.start:
                done[step.member] = known
                continue
            call = functools.partial(
                self.objective, member=step.member, interval=interval, start=step.start, epochs=epochs
            )
            label = f"pbt-{interval + 1}-member-{step.member}"
            in_flight[self.executor.submit(call, step.params, 1.0, label)] = step
        try:
            while in_flight:
                for future in self.executor.wait_any(list(in_flight)):
                    step = in_flight.pop(future)
                    evaluation = Evaluation.of(self.executor.evaluation_of(future))
                    finished = MemberStep(
                        step.member,
                        interval,
                        step.params,
                        step.start,
                        step.exploited_from,
                        evaluation.loss,
                        tuple(evaluation.curve),
                        evaluation.seconds,
                        evaluation.error,
                    )
                    self._record(finished)
                    self.observer.member_finished(finished, restored=False)
                    done[step.member] = finished
        except BaseException:
            stop = getattr(self.objective, "interrupt", None)
            if callable(stop):  # members in flight stop at their next batch; their interval is trained again
                stop()
            raise
        return [done[m] for m in sorted(done)]

    # --- exploit and explore ------------------------------------------------------------------------------------

    def _first_lineup(self) -> list[MemberStep]:
        rng = np.random.default_rng([self.settings.seed, 0, 1])
        members = []
        for member in range(self.settings.population):
            if member < len(self.initial):
                params, _ = self.space.fit(self.initial[member], {})
            else:
                params = {d.name: d.sample(rng) for d in self.space.dimensions}
            members.append(MemberStep(member, 0, params, None, None))
        return members

    def _next_lineup(self, interval: int, done: list[MemberStep]) -> list[MemberStep]:
        """Truncation selection: the bottom ``cut`` members (and any that failed) copy a random member of the top
        ``cut`` and explore; the others go on from their own checkpoint. Seeded by (seed, interval)."""
        rng = np.random.default_rng([self.settings.seed, interval, 2])
        ranked = sorted(done, key=lambda s: (not s.ok, s.loss if s.ok else 0.0, s.member))
        cut = self.settings.cut()
        top = [s for s in ranked[:cut] if s.ok]
        bottom = {s.member for s in ranked[-cut:]} | {s.member for s in done if not s.ok}
        lineup = []
        for step in done:
            if step.member in bottom and top:
                donor = top[int(rng.integers(len(top)))]
                start = Checkpoint(donor.member, interval - 1)
                lineup.append(MemberStep(step.member, interval, self.explore(donor.params, rng), start, donor.member))
            else:
                start = Checkpoint(step.member, interval - 1)
                lineup.append(MemberStep(step.member, interval, step.params, start, None))
        return lineup

    def explore(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """``params`` with each mutable param resampled from the space (``resample_probability``) or scaled by one
        of the ``perturb`` factors."""
        explored = dict(params)
        for name in self.mutable:
            dimension = self.space[name]
            if rng.random() < self.settings.resample_probability:
                explored[name] = dimension.sample(rng)
            else:
                factor = self.settings.perturb[int(rng.integers(len(self.settings.perturb)))]
                explored[name] = dimension.perturb(explored[name], factor)
        return explored

    # --- the ledger ---------------------------------------------------------------------------------------------

    def _record(self, step: MemberStep) -> None:
        """One trial per member-interval: its params, loss, and validation curve at the run's epoch numbers."""
        first_epoch = step.interval * self.settings.interval_epochs
        attrs = {
            MEMBER_ATTR: step.member,
            INTERVAL_ATTR: step.interval,
            OUTCOME_ATTR: COMPLETE if step.ok else FAILED,
            SECONDS_ATTR: step.seconds,
        }
        if step.exploited_from is not None:
            attrs[EXPLOITED_FROM_ATTR] = step.exploited_from
        if step.start is not None:
            attrs[START_ATTR] = str(step.start)
        if self.run_id:
            attrs[RUN_ATTR] = self.run_id
        if not step.ok:
            attrs[REASON_ATTR] = step.error or f"loss {step.loss}"
        self.study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE if step.ok else TrialState.FAIL,
                value=step.loss if step.ok else None,
                params=step.params,
                distributions=self.space.optuna_distributions(),
                user_attrs=attrs,
                intermediate_values={first_epoch + i: loss for i, loss in enumerate(step.curve) if math.isfinite(loss)},
            )
        )

    def _recorded(self) -> dict[tuple[int, int], MemberStep]:
        """This run's member-intervals already in the study (a rerun reuses them)."""
        recorded = {}
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            attrs = frozen.user_attrs
            if MEMBER_ATTR not in attrs or attrs.get(RUN_ATTR) != self.run_id:
                continue
            curve = tuple(frozen.intermediate_values[k] for k in sorted(frozen.intermediate_values))
            recorded[(attrs[MEMBER_ATTR], attrs[INTERVAL_ATTR])] = MemberStep(
                attrs[MEMBER_ATTR],
                attrs[INTERVAL_ATTR],
                dict(frozen.params),
                Checkpoint.parse(attrs.get(START_ATTR)),
                attrs.get(EXPLOITED_FROM_ATTR),
                frozen.value if frozen.value is not None else math.nan,
                curve,
                attrs.get(SECONDS_ATTR, 0.0),
                attrs.get(REASON_ATTR) if frozen.state == TrialState.FAIL else None,
            )
        self._trial_of = {
            (t.user_attrs.get(MEMBER_ATTR), t.user_attrs.get(INTERVAL_ATTR)): t.number
            for t in self.study.get_trials(deepcopy=False)
            if t.user_attrs.get(RUN_ATTR) == self.run_id
        }
        return recorded

    def _result(self, last: list[MemberStep], intervals_done: int, seconds: float) -> PBTResult:
        recorded = self._recorded()
        best = min((s for s in last if s.ok), key=lambda s: s.loss)
        return PBTResult(
            study_name=self.study.study_name,
            steps=sorted(recorded.values(), key=lambda s: (s.interval, s.member)),
            best_member=best.member,
            best_value=best.loss,
            best_params=dict(best.params),
            best_trial=self._trial_of.get((best.member, best.interval), -1),
            intervals_done=intervals_done,
            seconds=seconds,
            population=self.settings.population,
        )
