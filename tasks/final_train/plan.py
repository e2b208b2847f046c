"""What the final stage will train, worked out once from the config and handed to both stages: the search leaves the
budget's reserve for it (``tasks.search_stage.deadline.SearchDeadline``) and the final stage splits what is left by
it, so the two never disagree on what is trained, for how many epochs, or which share of the budget each gets.

Example:
    >>> plan = FinalPlan.of(cfg)
    >>> plan.trainings(best_params)          # ('tuned', 'default_config'), or ('tuned',) when best is the default
    >>> plan.seconds_needed({"tuned": 0.5, "default_config": 0.4}, best_params)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from configs import PipelineConfig

TUNED = "tuned"  # the search's best config, trained on
DEFAULT_CONFIG = "default_config"  # the family's default config, a baseline (final.baselines)

# The final stage besides its trainings (test predictions, plots, logging the model, registering it) and the
# summary after it: measured 2 s on 2 cores here with the registry on SQLite (1 s without it), twice that kept as a
# margin. It was 10 s until a 30 s budget was seen to end 9 s early with both final trainings cut to an epoch or two.
FINAL_OVERHEAD_SECONDS = 4.0


@dataclass(frozen=True)
class FinalPlan:
    """The final stage's trainings: the search's best config (``trains_tuned``; not under PBT, whose best member is
    tested as it is) and the default-config baseline (``default_baseline``, when ``final.baselines`` asks for it),
    each for up to ``epochs`` with early stopping; ``overhead`` seconds for the rest of the stage."""

    epochs: int
    default_config: Mapping[str, Any]
    trains_tuned: bool = True
    default_baseline: bool = True
    overhead: float = FINAL_OVERHEAD_SECONDS

    @classmethod
    def of(cls, cfg: PipelineConfig) -> FinalPlan:
        return cls(
            epochs=cfg.final.epochs,
            default_config=cfg.model.default_config(),
            trains_tuned=cfg.search.strategy != "pbt",
            default_baseline=DEFAULT_CONFIG in cfg.final.baselines,
        )

    def is_default(self, params: Mapping[str, Any] | None) -> bool:
        """Whether ``params`` (a searched config) over the default config is the default config itself."""
        return params is not None and {**self.default_config, **params} == dict(self.default_config)

    def trainings(self, best_params: Mapping[str, Any] | None) -> tuple[str, ...]:
        """What the final stage trains when the search's best config is ``best_params`` (None: not known yet). A best
        config that is the default config is trained once and is its own baseline."""
        planned = [TUNED] if self.trains_tuned else []
        if self.default_baseline and not self.is_default(best_params):
            planned.append(DEFAULT_CONFIG)
        return tuple(planned)

    def seconds_needed(self, epoch_seconds: Mapping[str, float], best_params: Mapping[str, Any] | None) -> float:
        """Seconds the stage needs: each training's cost per epoch (``epoch_seconds`` by training) x ``epochs``, plus
        the overhead."""
        return sum(epoch_seconds[t] for t in self.trainings(best_params)) * self.epochs + self.overhead

    def share(self, training: str, best_params: Mapping[str, Any] | None) -> float:
        """The share of the time left (less the overhead) that ``training`` may take when it starts: the tuned
        config half when the default config trains after it, else all; the default config all that is left then."""
        return 0.5 if training == TUNED and DEFAULT_CONFIG in self.trainings(best_params) else 1.0

    def training_seconds(
        self, training: str, best_params: Mapping[str, Any] | None, deadline: float | None
    ) -> float | None:
        """Seconds ``training`` may take now before the run's ``deadline`` (``time.time()``; None: no budget)."""
        if deadline is None:
            return None
        return max(0.0, self.share(training, best_params) * (deadline - time.time() - self.overhead))
