"""The parts of the config the search stage uses, with the final stage's plan (the search leaves the budget's reserve
for it) and the run's budget."""

from __future__ import annotations

from dataclasses import dataclass

from automl.configs import ModelConfig, PipelineConfig, SearchConfig, TrainingConfig
from automl.tasks.final_train.plan import FinalPlan
from automl.tasks.runtime.budget import RunBudget


@dataclass(frozen=True)
class SearchJob:
    """The parts of the config the search stage uses."""

    search: SearchConfig
    model: ModelConfig
    training: TrainingConfig
    seed: int
    config_name: str  # names the Prefect artifacts
    final_plan: FinalPlan  # what the final stage will train: a budget's reserve for it depends on it
    budget: RunBudget | None = None

    @classmethod
    def of(cls, cfg: PipelineConfig, budget: RunBudget | None = None) -> SearchJob:
        return cls(cfg.search, cfg.model, cfg.training, cfg.seed, cfg.name, FinalPlan.of(cfg), budget)
