"""Prefect cache keys for pipeline stages: a stage's result is reused within one pipeline execution (the same
MLflow parent run, i.e. the same config and data), so a re-run after a failure skips finished stages, while a
new execution computes everything afresh."""

from __future__ import annotations

from typing import Any


def pipeline_stage_key(context: Any, parameters: dict[str, Any]) -> str:
    return f"{context.task.name}-{parameters['pipeline'].run_id}"
