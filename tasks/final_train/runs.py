"""Each training of the final stage (the tuned config, the other ensemble candidates, the default config, their
refits) as an MLflow run nested under the stage's run: its params, per-epoch losses (logged while it trains, with its
console line: ``watch_training``), validation loss and a checkpoint (weights and curves). A resumed stage loads a
finished training's checkpoint instead of training it again, so a kill in the middle of the ensemble's or the refit's
trainings costs only the training it interrupted.

Example:
    >>> trainer = StageTrainer(job, prepared, experiment_id, stage_run_id)
    >>> trained = trainer.train("member_7", params, start_from=weights, seconds=30.0)
    >>> trained.model, trained.fit.best_val_loss, trained.reused
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from automl.models import FitResult
from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.final_train import training
from automl.tasks.final_train.job import FinalTrainJob
from automl.tasks.search import params_key
from automl.tasks.tracking.catalog import (
    BEST_EPOCH_METRIC,
    CONFIG_KEY_TAG,
    EPOCHS_RUN_METRIC,
    FINAL_TRAINING_ROLE,
    FINAL_TRAINING_TAG,
    INIT_PARAM,
    START_VAL_LOSS_METRIC,
    TRAINING_CHECKPOINT_FILE,
    VAL_LOSS_METRIC,
)
from automl.tasks.tracking.live_metrics import OnEpoch, watch_training
from automl.tasks.tracking.runs import child_runs, close_run, create_child_run, was_interrupted

logger = logging.getLogger("automl")

# FitResult's fields a checkpoint keeps besides the weights (the optimiser's state is not needed after the stage)
_KEPT = tuple(f.name for f in fields(FitResult) if f.name not in ("model", "optimizer_state"))


@dataclass
class Trained:
    """One final training: its name (``tuned``, ``member_<trial>``, ``default_config``, ``refit_<name>``), the
    params it trained (over the family's defaults), the model with its best (or, for a refit, last) weights, its
    curves, and whether a resumed stage loaded it from its run instead of training it."""

    name: str
    params: dict[str, Any]
    model: torch.nn.Module
    fit: FitResult
    run_id: str
    reused: bool = False


def train_once(
    experiment_id: str,
    stage_run_id: str,
    name: str,
    params: Mapping[str, Any],
    train: Callable[[OnEpoch], tuple[torch.nn.Module, FitResult]],
    build: Callable[[], torch.nn.Module],
    epochs: int,
    logged: Mapping[str, Any] | None = None,
) -> Trained:
    """The training ``name`` of ``params`` under the stage run: loaded from its finished run when a stopped attempt
    of the stage got that far (``build`` makes the module its weights load into), else trained (``train``, given
    the ``on_epoch`` callback of at most ``epochs`` epochs that logs them live) in a new nested run that ends
    FINISHED with its checkpoint, or KILLED/FAILED when training is stopped or fails. ``logged``: more params for
    the run (where its training started, its epochs)."""
    key = params_key(dict(params))
    for run in child_runs(experiment_id, stage_run_id, FINAL_TRAINING_ROLE):
        tags = run.data.tags
        if run.info.status == "FINISHED" and tags.get(FINAL_TRAINING_TAG) == name and tags.get(CONFIG_KEY_TAG) == key:
            kept = _load_checkpoint(run.info.run_id)
            if kept is not None:
                model = build()
                model.load_state_dict(kept.pop("state_dict"))
                logger.info("final training: %s trained before the stage was stopped; loaded from its run", name)
                return Trained(name, dict(params), model, FitResult(model=model, **kept), run.info.run_id, True)
    run_id = create_child_run(
        experiment_id, stage_run_id, name, FINAL_TRAINING_ROLE, tags={FINAL_TRAINING_TAG: name, CONFIG_KEY_TAG: key}
    )
    client = MlflowClient()
    try:
        client.log_batch(
            run_id, params=[Param(k, str(v)[:6000]) for k, v in {**params, **(logged or {})}.items()], synchronous=True
        )
        with watch_training(f"final training {name}", epochs, run_id) as on_epoch:
            model, fitted = train(on_epoch)
        _log_fit(client, run_id, fitted)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / TRAINING_CHECKPOINT_FILE
            torch.save({"state_dict": model.state_dict(), **{k: getattr(fitted, k) for k in _KEPT}}, path)
            client.log_artifact(run_id, str(path))
    except BaseException as exc:
        close_run(run_id, "KILLED" if was_interrupted(exc) else "FAILED", f"{name}: stopped before it finished")
        raise
    client.set_terminated(run_id, "FINISHED")
    return Trained(name, dict(params), model, fitted, run_id)


class StageTrainer:
    """The final stage's trainings of configs on the split, each through ``train_once`` under the stage run."""

    def __init__(self, job: FinalTrainJob, prepared: PreparedData, experiment_id: str, stage_run_id: str) -> None:
        self.job, self.prepared, self.experiment_id, self.stage_run_id = job, prepared, experiment_id, stage_run_id

    def train(
        self,
        name: str,
        params: dict[str, Any],
        start_from: Path | None,
        seconds: float | None,
        epochs: int | None = None,
        family: str | None = None,
    ) -> Trained:
        """``params`` trained as the final stage trains (``tasks.final_train.training.train_config``) for at most
        ``seconds`` (None: no budget), from ``start_from``'s weights when given, or loaded from its finished run;
        ``family``: another family than the config's (a baseline)."""
        job, prepared = self.job, self.prepared
        return train_once(
            self.experiment_id,
            self.stage_run_id,
            name,
            params,
            train=lambda on_epoch: training.train_config(
                job, prepared, params, seconds, start_from, epochs, family, on_epoch=on_epoch
            ),
            build=lambda: training.build_config(job, prepared, params, family=family),
            epochs=job.final.epochs if epochs is None else epochs,
            logged={INIT_PARAM: "search_weights" if start_from else "scratch"},
        )


def _log_fit(client: MlflowClient, run_id: str, fitted: FitResult) -> None:
    now = int(time.time() * 1000)
    metrics = [
        Metric(EPOCHS_RUN_METRIC, len(fitted.val_loss), now, 0),
        Metric(BEST_EPOCH_METRIC, fitted.best_epoch, now, 0),
    ]
    if fitted.val_loss:
        metrics.append(Metric(VAL_LOSS_METRIC, fitted.best_val_loss, now, 0))
    if fitted.start_val_loss is not None:
        metrics.append(Metric(START_VAL_LOSS_METRIC, fitted.start_val_loss, now, 0))
    finite = [m for m in metrics if m.value == m.value and abs(m.value) != float("inf")]
    client.log_batch(run_id, metrics=finite, synchronous=True)


def _load_checkpoint(run_id: str) -> dict[str, Any] | None:
    """The checkpoint a finished training logged; None when it cannot be read (the training runs again)."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = MlflowClient().download_artifacts(run_id, TRAINING_CHECKPOINT_FILE, tmp)
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a missing or truncated artifact: train again rather than fail the stage
        logger.warning("final training: the checkpoint of run %s cannot be read (%s); training again", run_id, exc)
        return None
