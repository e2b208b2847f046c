"""What the final stage will train, worked out once from the config and handed to both stages: the search leaves the
budget's reserve for it (``tasks.search_stage.deadline.SearchDeadline``) and the final stage splits what is left by
it, so the two never disagree on what is trained, for how many epochs, or which share of the budget each gets.

Example:
    >>> plan = FinalPlan.of(cfg)
    >>> plan.trainings(best_params)   # ('tuned', 'member', ..., 'default_config'); no default when best is it
    >>> plan.seconds_needed({"tuned": 0.5, "member": 0.4, "default_config": 0.4}, best_params)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from automl.configs import PipelineConfig
from automl.tasks.space import default_configs

TUNED = "tuned"  # the search's best config, trained on
DEFAULT_CONFIG = "default_config"  # the family's default config, a baseline (final.baselines)
GBM = "gbm"  # a default LightGBM beside a network, a baseline (final.baselines)
MEMBER = "member"  # another of the search's best configs, an ensemble candidate (final.ensemble.top_k)

# The final stage besides its trainings (test predictions, plots, logging the model, registering it) and the
# summary after it: measured 2 s on 2 cores here with the registry on SQLite (1 s without it), twice that kept as a
# margin. It was 10 s until a 30 s budget was seen to end 9 s early with both final trainings cut to an epoch or two.
FINAL_OVERHEAD_SECONDS = 4.0


@dataclass(frozen=True)
class Candidate:
    """One of the search's best distinct configs (the search finds them), an ensemble candidate for the final stage:
    its params, its validation loss (out-of-fold under ``search.cv``), its trial, and its weights trained on all the
    data when the search kept them."""

    params: dict[str, Any]
    value: float
    trial: int
    weights: str | None = None


@dataclass(frozen=True)
class FinalPlan:
    """The final stage's trainings: the search's best config (``trains_tuned``; not under PBT, whose best member is
    tested as it is), up to ``members`` more of the search's best configs as ensemble candidates (``final.ensemble``,
    none under PBT), the default-config baseline (``default_baseline``, when ``final.baselines`` asks for it) and a
    default LightGBM (``gbm_baseline``), each for up to ``epochs`` with early stopping; with ``refit``
    (``final.refit: all``) the registered model's configs train again on every row; ``overhead`` seconds for the rest
    of the stage."""

    epochs: int
    default_config: Mapping[str, Any]
    trains_tuned: bool = True
    default_baseline: bool = True
    overhead: float = FINAL_OVERHEAD_SECONDS
    members: int = 0
    refit: bool = False
    gbm_baseline: bool = False

    @classmethod
    def of(cls, cfg: PipelineConfig) -> FinalPlan:
        trains_tuned = cfg.search.strategy != "pbt"
        return cls(
            epochs=cfg.final.epochs,
            default_config=default_configs(cfg.model, cfg.search.families)[0],
            trains_tuned=trains_tuned,
            default_baseline=DEFAULT_CONFIG in cfg.final.baselines,
            members=cfg.final.ensemble.top_k - 1 if trains_tuned else 0,
            refit=cfg.final.refit == "all",
            gbm_baseline=GBM in cfg.final.baselines,
        )

    def is_default(self, params: Mapping[str, Any] | None) -> bool:
        """Whether ``params`` (a searched config) over the default config is the default config itself."""
        return params is not None and {**self.default_config, **params} == dict(self.default_config)

    def trainings(self, best_params: Mapping[str, Any] | None) -> tuple[str, ...]:
        """What the final stage trains when the search's best config is ``best_params`` (None: not known yet). A best
        config that is the default config is trained once and is its own baseline."""
        planned = [TUNED, *[MEMBER] * self.members] if self.trains_tuned else []
        if self.default_baseline and not self.is_default(best_params):
            planned.append(DEFAULT_CONFIG)
        if self.gbm_baseline:
            planned.append(GBM)
        return tuple(planned)

    def seconds_needed(self, epoch_seconds: Mapping[str, float], best_params: Mapping[str, Any] | None) -> float:
        """Seconds the stage needs: each training's cost per epoch (``epoch_seconds`` by training; a member costs
        what ``MEMBER`` says, or the tuned config's) x ``epochs``; with a refit, the same again for every config that
        may be registered (a refit runs as many updates as the tested training, on more rows per epoch); plus the
        overhead."""
        trainings = self.trainings(best_params)
        cost = {name: epoch_seconds.get(name, epoch_seconds[TUNED]) for name in trainings}
        split = sum(cost[t] for t in trainings) * self.epochs
        refit = sum(cost[t] for t in self._refittable(trainings)) * self.epochs if self.refit else 0.0
        return split + refit + self.overhead

    def _refittable(self, trainings: tuple[str, ...]) -> list[str]:
        """The trainings a refit may train again: all but the baselines when a tuned config trains (an ensemble may
        hold any of them, the default config only in place of one of the others; the gbm baseline never)."""
        return [t for t in trainings if t not in (DEFAULT_CONFIG, GBM)] or [t for t in trainings if t != GBM]

    def ends(self, deadline: float | None, best_params: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
        """When the stage's trainings on the split must end and when the refit's must, fixed once as the stage
        starts (``time.time()``; None without a budget): the split's share of the time left (less the overhead) is
        its trainings' share of all the trainings the stage may run, the refit gets the rest."""
        if deadline is None:
            return None, None
        now = time.time()
        available = max(0.0, deadline - now - self.overhead)
        trainings = self.trainings(best_params)
        refits = len(self._refittable(trainings)) if self.refit else 0
        share = len(trainings) / max(1, len(trainings) + refits)
        return now + share * available, now + available

    @staticmethod
    def training_seconds(left: int, end: float | None) -> float | None:
        """Seconds the next training may take when ``left`` trainings (this one included) remain before ``end``
        (one of ``ends``; None: no budget): an equal share of the time left."""
        if end is None:
            return None
        return max(0.0, (end - time.time()) / max(1, left))
