"""Prefect cache keys for pipeline stages: a stage's result is reused within one pipeline execution (the same
MLflow parent run, i.e. the same config and data), so a re-run after a failure skips finished stages, while a
new execution computes everything afresh."""

from __future__ import annotations

from typing import Any

# Raised when a stage's result type changes, so that a run resumed after an upgrade recomputes the stages an older
# version cached instead of failing to load their results (2: the restructured stages of issue 12;
# 3: the final stage's chosen model, issue 13; 4: cross-validation folds, issue 14; 5: population-based training;
# 6: tasks/ in rooms by pipeline step, so the pickled results' classes live in other modules; 7: FinalResult and
# WarmStartDecision in modules of their own, PreparedData.cv; 8: the ensemble's candidates, the refit rows, the
# seasonal-naive baseline's history, FinalResult.ensemble and .refit; 9: the packages install as automl.*, so the
# pickled results' classes live in automl.tasks.*).
RESULTS_VERSION = 9


def pipeline_stage_key(context: Any, parameters: dict[str, Any]) -> str:
    return f"{context.task.name}-{parameters['pipeline'].run_id}-v{RESULTS_VERSION}"
