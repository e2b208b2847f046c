"""The score flow's scoring step as a Prefect task. It lives apart from ``prediction`` so that ``automl predict``,
which runs no flow, does not import Prefect (about 0.6 s of its start-up)."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from automl.tasks.registry.prediction import ScoringRequest, progress_printer, score_rows


@task(name="score", cache_policy=NO_CACHE)
def score(request: ScoringRequest) -> pd.DataFrame:
    """Prefect task: the predictions for a checked request (a progress line per chunk in the run's log)."""
    return score_rows(
        request.model, request.frame, request.rolling, progress_printer(str(request.data), get_run_logger().info)
    )
