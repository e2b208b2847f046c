"""The parts of the config the final stage uses, with its plan and the run's deadline."""

from __future__ import annotations

from dataclasses import dataclass

from automl.configs import FinalConfig, ModelConfig, PipelineConfig, RegistryConfig, TrainingConfig
from automl.tasks.final_train.plan import FinalPlan


@dataclass(frozen=True)
class FinalTrainJob:
    """The parts of the config the final training stage uses; ``model_name`` is the registered model's name;
    ``deadline`` (``time.time()``) is when the run's budget ends, if it has one."""

    final: FinalConfig
    model: ModelConfig
    training: TrainingConfig
    registry: RegistryConfig
    seed: int
    model_name: str
    plan: FinalPlan
    deadline: float | None = None
    search_epochs: int = 0  # the epochs the search's weights trained (a full-fidelity trial, or a PBT member)

    @classmethod
    def of(cls, cfg: PipelineConfig, deadline: float | None = None) -> FinalTrainJob:
        name = cfg.registry.model_name or cfg.name
        epochs = cfg.search.pbt.epochs if cfg.search.strategy == "pbt" else cfg.search.epochs
        return cls(
            cfg.final, cfg.model, cfg.training, cfg.registry, cfg.seed, name, FinalPlan.of(cfg), deadline, epochs
        )
