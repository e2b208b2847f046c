"""Serve the pipelines as Prefect deployments: one per config, each on its cron schedule (nightly unless the
config's ``schedule.cron`` says otherwise) with that config's defaults as parameters. At most one run per
pipeline at a time (a scheduled run and a UI-triggered one of the same pipeline queue, never overlap), and an
explicit limit on the runs this process executes at once.

Beside each pipeline, a scoring deployment (``automl-score/<config name>``) scores a data file with the
config's champion: on ``schedule.score_cron`` when set, and from the UI with a form (data path, output path,
model alias, rolling)."""

from __future__ import annotations

import os
from pathlib import Path

from automl.configs import check_cron, config_file, load_config, shipped_configs
from automl.tasks.runtime.state import local_state

DEFAULT_LIMIT = 2


def config_files(names_or_paths: list[str] | None) -> list[Path]:
    """Shipped config names or YAML paths; all shipped configs when none are given."""
    if not names_or_paths:
        return list(shipped_configs().values())
    files = []
    for item in names_or_paths:
        path = Path(item)
        files.append(path if path.suffix in (".yaml", ".yml") else config_file(item, None))
    return files


def pipeline_deployments(files: list[Path], cron: str | None = None) -> list:
    """Two ``RunnerDeployment``s per config file, the pipeline and its scoring (each config validated first)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType

    from automl.flows.pipeline import automl_pipeline
    from automl.flows.score import automl_score

    shipped = {path.resolve() for path in shipped_configs().values()}
    deployments = []
    for path in files:
        cfg = load_config(path)
        schedule = _cron(
            cron or cfg.schedule.cron, cfg.schedule.timezone, "--cron" if cron else f"{path}: schedule.cron"
        )
        parameters = {"config": cfg.name} if path.resolve() in shipped else {"config_path": str(path.resolve())}
        one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
        deployments.append(
            automl_pipeline.to_deployment(
                name=cfg.name,
                description=cfg.description or f"AutoML pipeline {cfg.name}",
                schedules=[schedule],
                parameters=parameters,
                tags=["automl", cfg.model.family],
                concurrency_limit=one_at_a_time,
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
        score_schedule = cfg.schedule.score_cron
        deployments.append(
            automl_score.to_deployment(
                name=cfg.name,
                description=f"Score {cfg.score.data or 'a data file'} with the {cfg.score.alias} of {cfg.name}",
                schedules=[_cron(score_schedule, cfg.schedule.timezone, f"{path}: schedule.score_cron")]
                if score_schedule
                else [],
                parameters=parameters,
                tags=["automl", "score", cfg.model.family],
                concurrency_limit=one_at_a_time,
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments


def _cron(expression: str, timezone: str, key: str):
    """Prefect's schedule, its cron checked first: Prefect's own check waits until the deployment is built."""
    from prefect.schedules import Cron

    return Cron(check_cron(key, expression), timezone=timezone)


def serve(deployments: list, limit: int = DEFAULT_LIMIT) -> None:
    """Register ``deployments`` with the Prefect API and execute their flow runs until interrupted."""
    from prefect import serve as prefect_serve

    # Flow runs execute in subprocesses: give them the same state folder whatever their working directory.
    os.environ["AUTOML_HOME"] = str(local_state().home)
    prefect_serve(*deployments, limit=limit)
