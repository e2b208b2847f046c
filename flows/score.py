"""The scoring flow: load a config's registered model (its champion unless told otherwise), score a data file,
write the predictions as Parquet (or CSV), and record the run in MLflow and in the Prefect UI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.states import Failed

from configs import InputError, config_file, load_config
from flows.pipeline import INVALID_INPUT, ShippedConfig
from tasks import scoring
from tasks.artifacts import publish_markdown
from tasks.state import local_state
from tasks.tracking import configure_mlflow, ensure_experiment


@task(name="score")
def score_task(model: scoring.RegisteredModel, frame: Any, rolling: bool) -> Any:
    """Predictions for the checked rows (a task, so the run's page shows it)."""
    return scoring.score_rows(model, frame, rolling, scoring.progress_printer("score", get_run_logger().info))


@flow(name="automl-score", validate_parameters=False)
def automl_score(
    config: ShippedConfig = "lstm_baseline",
    data_path: str | None = None,
    output_path: str | None = None,
    model_alias: str | None = None,
    rolling: bool | None = None,
    config_path: str | None = None,
) -> Any:
    """Score a data file with a pipeline's registered model. Empty fields take the config's ``score`` section.

    Args:
        config: a pipeline config shipped in configs/ (ignored when config_path is given).
        data_path: the rows to score, CSV or Parquet, raw columns as in training (score.data).
        output_path: where the predictions go, .parquet or .csv (score.output; default: a new file under
            AUTOML_HOME/predictions/<config>/).
        model_alias: the registered model's alias to use (score.alias, default champion).
        rolling: series only: one-step-ahead predictions over the whole history (score.rolling).
        config_path: a config file outside configs/.
    """
    try:
        cfg = load_config(config_file(config, config_path))
        data = Path(data_path).resolve() if data_path else cfg.score.data
        if data is None:
            raise InputError("data_path: no file to score; give data_path or set score.data in the config")
        rolling = cfg.score.rolling if rolling is None else rolling
        state = local_state()
        output = Path(output_path).resolve() if output_path else cfg.score.output
        scoring.check_output(output, key="output_path")
        frame = scoring.read_rows(data, key="data_path")
        uri = f"models:/{cfg.registry.model_name or cfg.name}@{model_alias or cfg.score.alias}"
        scoring.check_registry(state, key="model_alias")
        configure_mlflow(state)
        model = scoring.load_registered_model(uri, key="model_alias")
        scoring.check_rows(model, frame, rolling, data)
    except InputError as exc:  # a bad parameter, config, data file or model: one line, no run started
        get_run_logger().error(str(exc))
        return Failed(message=str(exc), name=INVALID_INPUT)

    started = time.monotonic()
    predictions = score_task(model, frame, rolling)
    output = scoring.write_predictions(predictions, output or scoring.default_output(state, cfg.name))
    seconds = time.monotonic() - started
    run_id = scoring.log_scoring_run(
        ensure_experiment(cfg.name, state), model, data, frame, predictions, output, rolling, seconds
    )
    result = scoring.ScoringResult(len(predictions), model.name, model.version, uri, str(output), run_id, seconds)
    publish_markdown(cfg.name, "scoring", scoring.scoring_markdown(cfg.name, result, predictions), "Scoring")
    get_run_logger().info(
        "scored %d rows with %s v%s -> %s (MLflow run %s)", len(frame), model.name, model.version, output, run_id
    )
    return result.to_dict()
