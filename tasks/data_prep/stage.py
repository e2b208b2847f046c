"""The data prep stage of the pipeline: ``prepare`` the checked table and log what it made to MLflow."""

from __future__ import annotations

import logging
import warnings

import mlflow
from prefect import task

from automl.tasks.data_prep.job import DataPrepJob
from automl.tasks.data_prep.prepare import CheckedData, prepare
from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.runtime.caching import pipeline_stage_key
from automl.tasks.tracking.catalog import (
    DATA_CARD_FILE,
    FEATURES_PARAM,
    KIND_PARAM,
    MISSING_FILLED_METRIC,
    ROWS_PARAM,
    SPLIT_FILE,
    SPLIT_SIZE_METRIC,
    TASK_PARAM,
)
from automl.tasks.tracking.runs import PipelineRun, log_frame, stage_run

logger = logging.getLogger("automl")


@task(name="data_prep", cache_key_fn=pipeline_stage_key, persist_result=True)
def data_prep(job: DataPrepJob, checked: CheckedData, pipeline: PipelineRun) -> PreparedData:
    """Prefect stage: ``prepare`` the table and log the data card, the splits (Parquet and as MLflow dataset
    inputs) and the preprocessing to the ``data_prep`` run."""
    source_fingerprint = checked.fingerprint
    with stage_run(pipeline, "data_prep"):
        prepared, split_rows = prepare(checked.frame, job, checked.plan, source_fingerprint)
        card = prepared.card
        mlflow.log_params(
            {
                ROWS_PARAM: card["n_rows"],
                FEATURES_PARAM: card["n_features"],
                TASK_PARAM: prepared.task,
                KIND_PARAM: prepared.kind,
            }
        )
        filled = card.get("missing_filled_total", card.get("missing_imputed_total", 0))
        mlflow.log_metrics(
            {
                MISSING_FILLED_METRIC: filled,
                **{SPLIT_SIZE_METRIC.format(split=k): len(getattr(prepared, k)) for k in ("train", "val", "test")},
            }
        )
        mlflow.log_dict(card, DATA_CARD_FILE)
        for name, rows in split_rows.items():
            log_frame(rows, SPLIT_FILE.format(split=name))
            with warnings.catch_warnings():  # MLflow finds two equivalent readers for a local file path
                warnings.simplefilter("ignore", UserWarning)
                dataset = mlflow.data.from_pandas(
                    rows, source=str(job.data.path), name=f"{job.config_name}-{name}", targets=job.data.target
                )
            mlflow.log_input(dataset, context=name)
        logger.info(
            "data prep: %s %s, %d rows -> train/val/test %d/%d/%d, %d missing values filled, fingerprint %s",
            prepared.kind,
            prepared.task,
            card["n_rows"],
            len(prepared.train),
            len(prepared.val),
            len(prepared.test),
            filled,
            source_fingerprint,
        )
    return prepared
