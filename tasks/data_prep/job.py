"""What the data prep stage is given (``DataPrepJob``: its parts of the config), what checking the table decided
(``DataPlan``: the kind of data, the task and the columns to use), and what each kind of data provides
(``DataKind``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import pandas as pd

from automl.configs import CVConfig, DataConfig, PipelineConfig

if TYPE_CHECKING:
    from automl.tasks.data_prep.prepared import PreparedData


@dataclass(frozen=True)
class DataPrepJob:
    """The parts of the config the data prep stage uses."""

    data: DataConfig
    family: str
    seed: int
    config_name: str  # names the MLflow datasets
    cv: CVConfig = field(default_factory=CVConfig)  # search.cv: the folds data prep also makes
    refit: bool = False  # final.refit all: every row made model-ready too, with a preprocessing fitted on them

    @classmethod
    def of(cls, cfg: PipelineConfig) -> DataPrepJob:
        return cls(cfg.data, cfg.model.family, cfg.seed, cfg.name, cfg.search.cv, cfg.final.refit == "all")


@dataclass
class DataPlan:
    """What ``plan_data`` decided from the config and the file: task type and the columns to use."""

    kind: Literal["series", "tabular"]
    task: Literal["regression", "classification"]
    features: list[str]
    categorical: list[str]
    dropped: dict[str, str]  # a column of the file training leaves out -> why


class DataKind(Protocol):
    """What data prep checks and does for one kind of data (``series.SeriesData``, ``tabular.TabularData``), in
    the order ``plan_data`` and ``prepare`` call it."""

    name: str

    def check_columns(self, frame: pd.DataFrame, data: DataConfig) -> None:
        """The columns this kind needs besides the target."""

    def choose_features(
        self, frame: pd.DataFrame, data: DataConfig, candidates: list[str]
    ) -> tuple[list[str], list[str], dict[str, str]]:
        """The feature columns, the categorical ones among them, and the columns dropped (each with why)."""

    def check_rows(self, frame: pd.DataFrame, data: DataConfig, task: str) -> None:
        """Enough rows (and classes) for the split."""

    def check_folds(self, frame: pd.DataFrame, job: DataPrepJob, plan: DataPlan) -> None:
        """``search.cv`` fits the train+validation rows."""

    def prepare(
        self, frame: pd.DataFrame, job: DataPrepJob, plan: DataPlan
    ) -> tuple[PreparedData, dict[str, pd.DataFrame]]:
        """The model-ready arrays and the split rows."""
