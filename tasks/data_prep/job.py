"""What the data prep stage is given (``DataPrepJob``: its parts of the config) and what checking the table decided
(``DataPlan``: the kind of data, the task and the columns to use)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from configs import CVConfig, DataConfig, PipelineConfig


@dataclass(frozen=True)
class DataPrepJob:
    """The parts of the config the data prep stage uses."""

    data: DataConfig
    family: str
    seed: int
    config_name: str  # names the MLflow datasets
    cv: CVConfig = field(default_factory=CVConfig)  # search.cv: the folds data prep also makes

    @classmethod
    def of(cls, cfg: PipelineConfig) -> DataPrepJob:
        return cls(cfg.data, cfg.model.family, cfg.seed, cfg.name, cfg.search.cv)


@dataclass
class DataPlan:
    """What ``plan_data`` decided from the config and the file: task type and the columns to use."""

    kind: Literal["series", "tabular"]
    task: Literal["regression", "classification"]
    features: list[str]
    categorical: list[str]
    dropped: list[str]

