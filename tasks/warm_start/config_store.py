"""The config store behind ``automl configs``: best configs of finished pipeline runs, read from MLflow, exported
to a file another project can import (or use with ``warm_start.from_file``), and imported back as a run that
warm start finds like any other. MLflow is the store; there is no other database."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from automl.configs import ConfigError, TransferredConfig, load_transferred_config
from automl.tasks.runtime.state import LocalState
from automl.tasks.tracking.catalog import (
    BEST_CONFIG_FILE,
    BEST_PARAM_PREFIX,
    BEST_VAL_LOSS,
    CHOSEN_TAG,
    DATA_SOURCE,
    FAMILY,
    FINGERPRINT,
    IMPORTED_EXPERIMENT,
    IMPORTED_FROM,
    IMPORTED_ROLE,
    META_FEATURES,
    PIPELINE_ROLE,
    ROLE,
    SINGLE_METRIC_PREFIX,
    SOURCE_RUN_ID,
    SPACE_SIGNATURE,
    TASK_TYPE,
    TEST_METRIC_PREFIX,
    TRANSFERRED_CONFIG_FILE,
)
from automl.tasks.tracking.runs import configure_mlflow, ensure_experiment, json_tag
from automl.tasks.warm_start.stage import load_best_config


def stored_runs(family: str | None = None, task_type: str | None = None) -> list[Run]:
    """Finished pipeline runs and imported configs, newest first, optionally of one family and task type."""
    check_filters(family, task_type)
    client = MlflowClient()
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    query = "attributes.status = 'FINISHED'"
    if family:
        query += f" and tags.`{FAMILY}` = '{family}'"
    if task_type:
        query += f" and tags.`{TASK_TYPE}` = '{task_type}'"
    runs = client.search_runs(experiment_ids, query, max_results=1000, order_by=["attributes.start_time DESC"])
    return [r for r in runs if r.data.tags.get(ROLE) in (PIPELINE_ROLE, IMPORTED_ROLE)]


def check_filters(family: str | None, task_type: str | None) -> None:
    """Filter values are names (they go into an MLflow search query): anything else is a one-line error."""
    for key, value in (("--model", family), ("--task", task_type)):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ConfigError(f"{key}: {value!r} is not a model family or task name (letters, digits, _ . -)")


def describe(run: Run) -> dict[str, Any]:
    """One row of ``automl configs list``."""
    tags, metrics = run.data.tags, run.data.metrics
    test = {k.removeprefix(TEST_METRIC_PREFIX): v for k, v in metrics.items() if k.startswith(TEST_METRIC_PREFIX)}
    return {
        "run_id": run.info.run_id,
        "experiment": MlflowClient().get_experiment(run.info.experiment_id).name,
        "role": tags.get(ROLE, ""),
        "family": tags.get(FAMILY, ""),
        "task": tags.get(TASK_TYPE, ""),
        "dataset": tags.get(DATA_SOURCE, "") or tags.get(FINGERPRINT, "")[:8],
        "best_val_loss": metrics.get(BEST_VAL_LOSS),
        "test": test,
        "age": _age(run.info.start_time),
    }


def export_config(run_id: str) -> TransferredConfig:
    """The best config of a finished run with what is known about where it won."""
    run = _get_run(run_id)
    tags = run.data.tags
    if tags.get(ROLE) not in (PIPELINE_ROLE, IMPORTED_ROLE) or run.info.status != "FINISHED":
        raise ConfigError(f"run {run_id}: not a finished pipeline run; nothing to export")
    return TransferredConfig(
        model_family=tags[FAMILY],
        task_type=tags[TASK_TYPE],
        params=load_best_config(run_id),
        space_signature=json_tag(run, SPACE_SIGNATURE),
        meta_features=json_tag(run, META_FEATURES) or {},
        metrics=_config_metrics(run),
        source_run_id=run_id,
        experiment=MlflowClient().get_experiment(run.info.experiment_id).name,
        dataset_fingerprint=tags.get(FINGERPRINT),
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _config_metrics(run: Run) -> dict[str, float]:
    """The best config's validation loss and test metrics: under an ensemble (``automl.chosen: ensemble``) the
    single config's own test metrics, not the ensemble's."""
    metrics = run.data.metrics
    own = {k: v for k, v in metrics.items() if k == BEST_VAL_LOSS or k.startswith(TEST_METRIC_PREFIX)}
    if run.data.tags.get(CHOSEN_TAG) == "ensemble":
        single = {
            k.removeprefix(SINGLE_METRIC_PREFIX): v for k, v in metrics.items() if k.startswith(SINGLE_METRIC_PREFIX)
        }
        own = {k: v for k, v in own.items() if not k.startswith(TEST_METRIC_PREFIX)}
        own.update({f"{TEST_METRIC_PREFIX}{k}": v for k, v in single.items()})
    return own


def write_export(config: TransferredConfig, path: Path) -> None:
    """Write the file in one step, so a failure leaves no partial file behind (nor a temporary one)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--output: {path} is a directory; give a file name")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError as exc:
        raise ConfigError(f"--output: cannot write {path} ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def import_config(path: Path, state: LocalState) -> str:
    """Validate a transferred config file and store it as a finished ``imported`` run; returns the run id."""
    config = load_transferred_config(path)  # raises before anything is written
    from automl.models import AUTO, FAMILIES

    if config.model_family not in FAMILIES and config.model_family != AUTO:
        raise ConfigError(f"{path}: model_family: unknown model family {config.model_family!r}")
    configure_mlflow(state)
    experiment_id = ensure_experiment(IMPORTED_EXPERIMENT, state)
    tags = {
        ROLE: IMPORTED_ROLE,
        FAMILY: config.model_family,
        TASK_TYPE: config.task_type,
        META_FEATURES: json.dumps(config.meta_features, sort_keys=True),
        IMPORTED_FROM: str(Path(path).resolve()),
    }
    if config.space_signature is not None:
        tags[SPACE_SIGNATURE] = json.dumps(config.space_signature, sort_keys=True, default=str)
    if config.dataset_fingerprint:
        tags[FINGERPRINT] = config.dataset_fingerprint
    if config.source_run_id:
        tags[SOURCE_RUN_ID] = config.source_run_id
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"imported-{Path(path).stem}", tags=tags) as run:
        mlflow.log_params({f"{BEST_PARAM_PREFIX}{k}": v for k, v in config.params.items()})
        if config.metrics:
            mlflow.log_metrics(config.metrics)
        mlflow.log_dict(dict(config.params), BEST_CONFIG_FILE)
        mlflow.log_dict(config.model_dump(mode="json"), TRANSFERRED_CONFIG_FILE)
    return run.info.run_id


def _get_run(run_id: str) -> Run:
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        raise ConfigError(f"run {run_id}: no such MLflow run") from None


def _age(start_ms: int) -> str:
    seconds = max(0.0, datetime.now(UTC).timestamp() - start_ms / 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
