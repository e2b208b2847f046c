"""The seam between the search stage and its strategies (``search.strategy``): the stage body opens the study and the
``search`` run and hands a strategy a ``SearchContext``; the strategy searches, logs what only it knows (its params,
trials or members, its report) and returns a ``StrategyOutcome``; the stage logs the rest and builds the
``SearchStageResult`` once. A new strategy is one class with a ``name`` and a ``run``.

Example:
    >>> class RandomRestarts:
    ...     name = "restarts"
    ...     def run(self, context: SearchContext) -> StrategyOutcome: ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from automl.tasks.final_train.plan import Candidate
from automl.tasks.search import SearchSpace, TrialCounts
from automl.tasks.summary import PBTSummary

if TYPE_CHECKING:  # annotations only: the stage's job, data and tracking types
    import optuna

    from automl.tasks.data_prep.prepared import PreparedData
    from automl.tasks.search_stage.deadline import SearchDeadline
    from automl.tasks.search_stage.job import SearchJob
    from automl.tasks.tracking.runs import PipelineRun
    from automl.tasks.warm_start.decision import WarmStartDecision


@dataclass(frozen=True)
class SearchContext:
    """What a strategy searches with, set up by the stage: the job and the data, the space (its ``lr`` narrowed by
    the range test when ``narrowed``), the study and its storage, the pipeline and its ``search`` run (active while
    the strategy runs), the warm-start decision, the search's deadline under a run budget, and the torch threads
    each evaluation may use."""

    job: SearchJob
    prepared: PreparedData
    space: SearchSpace
    narrowed: bool
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    pipeline: PipelineRun
    search_run_id: str
    warm_start: WarmStartDecision
    deadline: SearchDeadline | None
    threads: int


@dataclass
class StrategyOutcome:
    """What a strategy found, for the stage to log and hand on: the best config and its loss, the trials' counts,
    how many warm-start configs it used, the best config's weights trained on all the data (when kept), and what
    the summary says of this strategy in particular."""

    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    counts: TrialCounts
    seconds: float
    enqueued: int
    best_weights: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # logged on the search run beside the common ones
    overhead_share: float = 0.0
    importances: dict[str, float] = field(default_factory=dict)
    cv_fold_losses: dict[str, list[float]] = field(default_factory=dict)
    pbt: PBTSummary | None = None
    candidates: list[Candidate] = field(default_factory=list)  # the best distinct configs, best first


class SearchStrategy(Protocol):
    """How the search stage turns a study into a best config (``search.strategy``)."""

    name: str

    def run(self, context: SearchContext) -> StrategyOutcome: ...
