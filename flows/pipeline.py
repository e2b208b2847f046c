"""The AutoML pipeline flow: data prep -> warm start -> search -> final training and registry.

``automl_pipeline`` is the flow the Prefect UI, schedules and deployments run: it validates its parameters itself.
``checked_pipeline`` is the same flow (same name in Prefect) for callers that have validated the config and read
and checked the data already, as ``automl run`` does before it starts anything."""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.states import Failed

from automl.configs import InputError, PipelineConfig, config_file, load_config, shipped_configs, typed_overrides
from automl.tasks.data_prep import CheckedData, DataPrepJob, load_and_check
from automl.tasks.data_prep.stage import data_prep
from automl.tasks.final_train.job import FinalTrainJob
from automl.tasks.final_train.stage import final_train
from automl.tasks.pipeline_run import pipeline_run, record_summary
from automl.tasks.runtime.budget import RunBudget
from automl.tasks.search_stage.job import SearchJob
from automl.tasks.search_stage.stage import search_stage
from automl.tasks.search_stage.studies import check_study
from automl.tasks.summary import PipelineSummary
from automl.tasks.tracking.prefect_ui import lines_in_logs_tab
from automl.tasks.warm_start.stage import WarmStartJob, warm_start

# The shipped configs, offered as a choice in the Prefect UI's run form.
ShippedConfig = Literal[tuple(shipped_configs())]  # type: ignore[valid-type]
INVALID_INPUT = "InvalidInput"


def run_stages(cfg: PipelineConfig, checked: CheckedData, study_name: str | None, started_at: float) -> PipelineSummary:
    """The mission: each stage gets its part of the config and what the stage before returned."""
    budget = RunBudget(cfg.budget.seconds, started_at) if cfg.budget.seconds else None
    with pipeline_run(cfg, checked.fingerprint, checked.plan.task, study_name) as (pipeline, clock):
        with clock("data_prep"):
            prepared = data_prep(DataPrepJob.of(cfg), checked, pipeline)
        with clock("warm_start"):
            warm_start_decision = warm_start(WarmStartJob.of(cfg), prepared.meta_features, prepared.task, pipeline)
        with clock("search"):
            search_result = search_stage(SearchJob.of(cfg, budget), prepared, warm_start_decision, pipeline)
        with clock("final_train"):
            deadline = budget.deadline if budget else None
            final = final_train(
                FinalTrainJob.of(cfg, deadline),
                prepared,
                search_result.best_params,
                search_result.best_weights,
                pipeline,
                search_result.candidates,
            )
        return record_summary(cfg, pipeline, prepared, warm_start_decision, search_result, final, clock, budget)


def run_name() -> str:
    """A pipeline's flow run is named after its config and its start (UTC), e.g. ``lstm_baseline-20261206-0200``,
    in the Prefect UI's list of runs instead of a random name."""
    from datetime import UTC, datetime
    from pathlib import Path

    from prefect.runtime import flow_run

    params = flow_run.parameters
    cfg = params.get("cfg")
    if isinstance(cfg, PipelineConfig):
        name = cfg.name
    elif params.get("config_path"):
        name = Path(params["config_path"]).stem
    else:
        name = params.get("config") or "automl-pipeline"
    return f"{name}-{datetime.now(UTC):%Y%m%d-%H%M}"


@flow(name="automl-pipeline", flow_run_name=run_name, validate_parameters=False)
def automl_pipeline(
    config: ShippedConfig = "lstm_baseline",
    n_trials: int | None = None,
    timeout: float | None = None,
    backend: Literal["optuna", "hyperopt"] | None = None,
    fidelity: Literal["none", "successive_halving", "hyperband"] | None = None,
    warm_start_enabled: bool | None = None,
    seed: int | None = None,
    overrides: list[str] | None = None,
    study_name: str | None = None,
    config_path: str | None = None,
    budget_seconds: float | None = None,
) -> Any:
    """Tune, test and register a model for one pipeline config. Empty fields keep the config's own values.

    Args:
        config: a pipeline config shipped in configs/ (ignored when config_path is given).
        n_trials: configs to try (search.n_trials).
        timeout: search time limit in seconds (search.timeout).
        backend: optuna or hyperopt (search.backend).
        fidelity: none, successive_halving or hyperband (search.fidelity).
        warm_start_enabled: seed the search with the best configs of similar past runs (warm_start.enabled).
        seed: random seed for splits, models and samplers.
        overrides: further changes as dotted.key=value, as with automl run --set.
        study_name: continue this Optuna study instead of starting a new one.
        config_path: a config file outside configs/ (what automl run passes).
        budget_seconds: a wall-clock budget for the whole run, in seconds (budget.seconds).
    """
    started_at = time.time()
    lines_in_logs_tab()  # a deployment's run executes in Prefect's own process, where no CLI set the logger up
    try:
        typed = typed_overrides(
            n_trials=n_trials,
            timeout=timeout,
            backend=backend,
            fidelity=fidelity,
            warm_start=warm_start_enabled,
            seed=seed,
            budget_seconds=budget_seconds,
        )
        cfg = load_config(config_file(config, config_path), overrides or [], values=typed)
        checked = load_and_check(cfg)
        check_study(cfg.search, study_name)
        return run_stages(cfg, checked, study_name, started_at)
    except InputError as exc:  # a bad parameter, config or data file: one line in the log, no traceback
        return _invalid(exc)


@flow(name="automl-pipeline", flow_run_name=run_name, validate_parameters=False)
def checked_pipeline(
    cfg: PipelineConfig, checked: CheckedData, study_name: str | None = None, started_at: float | None = None
) -> Any:
    """The pipeline on a config and data file validated by the caller (``load_config``, ``load_and_check`` and
    ``check_study``), so that the file is read and hashed once per run. ``started_at`` (``time.time()``) is when
    the caller started: a budget counts from there."""
    try:
        return run_stages(cfg, checked, study_name, started_at or time.time())
    except InputError as exc:
        return _invalid(exc)


def _invalid(exc: InputError) -> Any:
    """A bad parameter, config or data file: one line in the log, no traceback."""
    get_run_logger().error(str(exc))
    return Failed(message=str(exc), name=INVALID_INPUT)
