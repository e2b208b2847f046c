"""The scoring flow: load a config's registered model (its champion unless told otherwise), score a data file,
write the predictions as Parquet (or CSV), and record the run in MLflow and in the Prefect UI."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from automl.configs import InputError, config_file, load_config
from automl.flows.pipeline import INVALID_INPUT, ShippedConfig
from automl.tasks.registry import prediction
from automl.tasks.registry.stage import score
from automl.tasks.runtime.state import local_state
from automl.tasks.tracking.catalog import SCORING_ARTIFACT
from automl.tasks.tracking.prefect_ui import lines_in_logs_tab, publish_markdown
from automl.tasks.tracking.runs import ensure_experiment


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
    state = local_state()
    lines_in_logs_tab()  # a deployment's run executes in Prefect's own process, where no CLI set the logger up
    try:
        cfg = load_config(config_file(config, config_path))
        request = prediction.prepare_scoring(cfg, state, data_path, output_path, model_alias, rolling)
    except InputError as exc:  # a bad parameter, config, data file or model: one line, no run started
        get_run_logger().error(str(exc))
        return Failed(message=str(exc), name=INVALID_INPUT)

    started = time.monotonic()
    predictions = score(request)
    output = prediction.write_predictions(predictions, request.output)
    seconds = time.monotonic() - started
    experiment_id = ensure_experiment(cfg.name, state, cfg.description)
    run_id = prediction.log_scoring_run(experiment_id, request, predictions, seconds)
    model = request.model
    result = prediction.ScoringResult(
        len(predictions), model.name, model.version, model.uri, str(output), run_id, seconds
    )
    publish_markdown(cfg.name, SCORING_ARTIFACT, prediction.scoring_markdown(cfg.name, result, predictions), "Scoring")
    get_run_logger().info(
        "scored %d rows with %s v%s -> %s (MLflow run %s)",
        len(request.frame),
        model.name,
        model.version,
        output,
        run_id,
    )
    return result.to_dict()
