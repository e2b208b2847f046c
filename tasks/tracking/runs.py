"""MLflow edges of the pipeline: one experiment per config, one parent run per pipeline execution, one child run
per stage (and per trial or PBT member under the search run), and lookups by the tags later runs find them by (every
name is in ``tasks.tracking.catalog``). Stages call these; the maths never does."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

from automl.tasks.runtime.state import LocalState, enable_wal, first_use_lock, mlflow_uri_set_here
from automl.tasks.search import process_alive
from automl.tasks.tracking.catalog import (
    CONFIG_HASH,
    EXPERIMENT_KIND,
    FINGERPRINT,
    HOST,
    MODEL_TRAINING_KIND,
    PID,
    PIPELINE_ROLE,
    ROLE,
    STAGE,
    STAGE_ROLE,
    STUDY,
)


@dataclass(frozen=True)
class PipelineRun:
    """The MLflow parent run of one pipeline execution, and the study it searches in."""

    run_id: str
    experiment_id: str
    experiment_name: str
    study_name: str
    resumed: bool = False
    prefect_flow_run_id: str | None = None  # the Prefect flow run executing it (where its artifacts go)


def configure_mlflow(state: LocalState) -> None:
    """Point MLflow at the state folder's SQLite database (or at ``MLFLOW_TRACKING_URI``)."""
    uri = state.mlflow_uri
    _check_reachable(uri)
    state.ensure()
    mlflow_uri_set_here(uri)
    mlflow.set_tracking_uri(uri)
    try:
        with first_use_lock(uri):
            enable_wal(uri)
            MlflowClient().search_experiments(max_results=1)  # creates or migrates the schema, one at a time
    except Exception as exc:  # not a database, a locked or read-only file, a schema MLflow cannot migrate
        from automl.configs import InputError

        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InputError(f"MLflow tracking store {uri} cannot be used: {reason}") from None


def _check_reachable(uri: str, timeout: float = 10.0) -> None:
    """A tracking server that does not answer fails here in seconds, naming it (MLflow's own client retries for
    minutes before it gives up)."""
    if not uri.startswith(("http://", "https://")):
        return
    import httpx

    try:
        httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError as exc:
        from automl.configs import InputError

        raise InputError(
            f"MLFLOW_TRACKING_URI: the MLflow server at {uri} does not answer ({type(exc).__name__})"
        ) from None


def ensure_experiment(name: str, state: LocalState, description: str = "") -> str:
    """The id of experiment ``name``, created (artifacts under the state folder when local) if missing, marked
    as a model-training experiment so that MLflow 3's UI opens it on its runs, not in its GenAI view, and with
    ``description`` (a config's) as the description the UI shows above its runs (the latest config's wins)."""
    client = MlflowClient()
    tags = {EXPERIMENT_KIND: MODEL_TRAINING_KIND, **({MLFLOW_RUN_NOTE: description} if description else {})}
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        for key, value in tags.items():
            if experiment.tags.get(key) != value:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    location = (state.artifact_root / name).as_uri() if state.artifacts_in_home else None
    try:
        return client.create_experiment(name, artifact_location=location, tags=tags)
    except MlflowException:  # created meanwhile by a concurrent pipeline
        return client.get_experiment_by_name(name).experiment_id


def find_resumable_run(experiment_id: str, config_hash: str, fingerprint: str, study_name: str | None) -> Run | None:
    """The latest unfinished parent run of the same config and data whose process is gone, if any."""
    client = MlflowClient()
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{ROLE}` = '{PIPELINE_ROLE}' and tags.`{CONFIG_HASH}` = '{config_hash}' "
        f"and tags.`{FINGERPRINT}` = '{fingerprint}'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for run in runs:
        if run.info.status == "FINISHED":
            return None  # the newest run of this config finished: a new command starts a new run
        if study_name and run.data.tags.get(STUDY) != study_name:
            continue
        if run.info.status == "RUNNING" and process_alive(run.data.tags.get(HOST), int(run.data.tags.get(PID) or 0)):
            continue
        return run
    return None


def open_pipeline_run(
    experiment_id: str, experiment_name: str, tags: dict[str, str], study_name: str | None, resumable: Run | None
) -> PipelineRun:
    """Resume ``resumable`` or start a new parent run; either way it is RUNNING and owned by this process."""
    client = MlflowClient()
    owner = {HOST: socket.gethostname(), PID: str(os.getpid())}
    if resumable is not None:
        run_id = resumable.info.run_id
        client.update_run(run_id, status="RUNNING")
        for key, value in owner.items():
            client.set_tag(run_id, key, value)
        return PipelineRun(run_id, experiment_id, experiment_name, resumable.data.tags[STUDY], resumed=True)
    name = study_name or f"{experiment_name}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.urandom(2).hex()}"
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={**tags, **owner, ROLE: PIPELINE_ROLE, STUDY: name},
    )
    return PipelineRun(run.info.run_id, experiment_id, experiment_name, name)


INTERRUPTED_NOTE = "interrupted; run the same command again to resume"


def was_interrupted(exc: BaseException) -> bool:
    """Ctrl-C, or SIGTERM (the CLI turns it into KeyboardInterrupt; inside a flow Prefect raises its own)."""
    from prefect.exceptions import TerminationSignal

    return isinstance(exc, KeyboardInterrupt | TerminationSignal)


def close_run(run_id: str, status: str, note: str | None = None) -> None:
    client = MlflowClient()
    if note:
        client.set_tag(run_id, MLFLOW_RUN_NOTE, note)
    client.set_terminated(run_id, status=status)


@contextmanager
def stage_run(pipeline: PipelineRun, stage: str) -> Iterator[mlflow.ActiveRun]:
    """The active MLflow child run for ``stage`` under the pipeline run; a resumed pipeline reuses its stage
    run instead of adding a second one. It ends FINISHED, or FAILED when the stage raises."""
    existing = _stage_run(pipeline, stage)
    if existing is not None:
        run = mlflow.start_run(run_id=existing.info.run_id)
    else:
        run = mlflow.start_run(
            experiment_id=pipeline.experiment_id,
            run_name=stage,
            parent_run_id=pipeline.run_id,
            nested=True,
            tags={ROLE: STAGE_ROLE, STAGE: stage},
        )
    try:
        yield run
    except BaseException as exc:
        interrupted = was_interrupted(exc)
        note = (
            INTERRUPTED_NOTE
            if interrupted
            else f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        try:
            mlflow.set_tag(MLFLOW_RUN_NOTE, f"{stage} {note}")
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED if interrupted else RunStatus.FAILED))
        except Exception as error:  # the original failure matters more; a rerun closes the run as stale
            logging.getLogger("automl").warning("could not close the %s run (%s)", stage, error)
        raise
    mlflow.end_run("FINISHED")


def _stage_run(pipeline: PipelineRun, stage: str) -> Run | None:
    existing = MlflowClient().search_runs(
        [pipeline.experiment_id],
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{pipeline.run_id}' and tags.`{STAGE}` = '{stage}'",
        max_results=1,
    )
    return existing[0] if existing else None


def stage_run_record(pipeline: PipelineRun, stage: str) -> dict[str, str]:
    """The params and tags of the pipeline run's ``stage`` run ({} before it exists): what a stopped attempt of the
    stage logged."""
    run = _stage_run(pipeline, stage)
    return {**run.data.params, **run.data.tags} if run is not None else {}


def child_runs(experiment_id: str, parent_run_id: str, role: str | None = None) -> list[Run]:
    """Runs directly under ``parent_run_id`` (optionally of one role), oldest first."""
    query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"
    if role:
        query += f" and tags.`{ROLE}` = '{role}'"
    runs: list[Run] = []
    token = None
    client = MlflowClient()
    while True:
        page = client.search_runs(
            [experiment_id], query, max_results=1000, page_token=token, order_by=["attributes.start_time ASC"]
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def create_child_run(
    experiment_id: str, parent_run_id: str, name: str, role: str, tags: Mapping[str, str] | None = None
) -> str:
    """A run nested under ``parent_run_id`` (a trial or a PBT member under the search run), made with the client
    rather than the active-run API so that observer threads can fill it while the stage run is active; returns its
    id."""
    run = MlflowClient().create_run(
        experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: name, ROLE: role, **(tags or {})}
    )
    return run.info.run_id


def close_stale_children(pipeline: PipelineRun, note: str) -> int:
    """Close runs left RUNNING under a resumed pipeline (stages and trials of a process that died) as KILLED."""
    closed = 0
    stack = [pipeline.run_id]
    while stack:
        for run in child_runs(pipeline.experiment_id, stack.pop()):
            stack.append(run.info.run_id)
            if run.info.status == "RUNNING":
                close_run(run.info.run_id, "KILLED", note)
                closed += 1
    return closed


def log_file(path: Path, artifact_file: str) -> None:
    """Log the file at ``path`` as ``artifact_file`` of the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / Path(artifact_file).name
        shutil.copyfile(path, target)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(target), artifact_path=None if parent == "." else parent)


def log_frame(frame: pd.DataFrame, artifact_file: str) -> None:
    """Log a DataFrame as a Parquet (or CSV, by suffix) artifact of the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        if path.suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), artifact_path=None if parent == "." else parent)


@contextmanager
def quiet_mlflow_warnings() -> Iterator[None]:
    """Silence MLflow's advice printed on every model save (pickle and cloudpickle cautions, input-example
    validation notes); errors still show."""
    loggers = [logging.getLogger(name) for name in ("mlflow.pytorch", "mlflow.pyfunc", "mlflow.models")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def log_json_tag(key: str, value: Any) -> None:
    mlflow.set_tag(key, json.dumps(value, sort_keys=True, default=str))


def run_name_tag(run: Run) -> str:
    return run.data.tags.get(MLFLOW_RUN_NAME, run.info.run_id)


def json_tag(run: Run, key: str) -> Any:
    """A tag holding JSON, parsed (None when missing or not JSON)."""
    value = run.data.tags.get(key)
    if not value:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return None
