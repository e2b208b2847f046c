"""What the search stage returns to the later stages and the summary, whichever strategy searched."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from automl.tasks.final_train.plan import Candidate
from automl.tasks.search import TrialCounts
from automl.tasks.summary import PBTSummary


@dataclass
class SearchStageResult:
    """What later stages and the summary need from the search."""

    study_name: str
    storage: str  # the storage URL, password hidden
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    counts: TrialCounts  # this pipeline execution's trials, across resumes
    enqueued: int
    search_run_id: str
    seconds: float
    overhead_share: float
    importances: dict[str, float] = field(default_factory=dict)
    best_weights: str | None = None  # the best config's weights from its evaluation on all the data, when kept
    # search.cv: the fold kind, and the fold losses of the best config ("tuned") and of the default config
    # ("default_config", when it completed in this study)
    cv_kind: str | None = None
    cv_fold_losses: dict[str, list[float]] = field(default_factory=dict)
    strategy: str = "sample"  # search.strategy
    pbt: PBTSummary | None = None  # the population's story, with strategy pbt
    # the best distinct configs, best first (final.ensemble.top_k of them at most; none under PBT)
    candidates: list[Candidate] = field(default_factory=list)
