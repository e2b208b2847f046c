"""Training in the final stage: a config trained with the final budget and early stopping (continued from the weights
the search kept, when there are some), and the choice between the tuned and the default config on validation loss."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from automl.models import (
    AUTO,
    FitResult,
    ModelShape,
    TrainSettings,
    build_model,
    fit,
    get_family,
    loss_for,
    pick_device,
)
from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.final_train.job import FinalTrainJob
from automl.tasks.final_train.plan import DEFAULT_CONFIG, TUNED
from automl.tasks.space import split_family
from automl.tasks.tracking.live_metrics import OnEpoch

logger = logging.getLogger("automl")


def train_config(
    job: FinalTrainJob,
    prepared: PreparedData,
    params: dict[str, Any],
    stop_after: float | None = None,
    start_from: Path | None = None,
    epochs: int | None = None,
    family: str | None = None,
    on_epoch: OnEpoch | None = None,
) -> tuple[torch.nn.Module, FitResult]:
    """Train ``params`` (merged over the family's defaults) with the final budget and early stopping, ending after
    ``stop_after`` seconds if given (keeping the best epoch). With ``start_from`` (weights the search kept for this
    config), training continues from them, and they stand unless an epoch beats them on validation. ``epochs`` 0
    validates ``start_from`` without training. ``family``: another family's defaults under ``params`` (the gbm
    baseline beside a network) instead of the config's. ``on_epoch``: called after each epoch (``models.fit``)."""
    _, full = resolve(job, params, family)
    model = build_config(job, prepared, params, family=family)
    if start_from is not None:
        model.load_state_dict(torch.load(start_from, map_location="cpu", weights_only=True))
    epochs = job.final.epochs if epochs is None else epochs
    settings = train_settings(job, prepared, full, epochs, stop_after, job.final.patience)
    result = fit(
        model,
        (prepared.train.X, prepared.train.y),
        (prepared.val.X, prepared.val.y),
        settings,
        pick_device(job.training.device),
        on_epoch=on_epoch,
        validate_first=start_from is not None,
    )
    return result.model, result


def build_config(
    job: FinalTrainJob,
    prepared: PreparedData,
    params: dict[str, Any],
    n_features: int | None = None,
    family: str | None = None,
):
    """A fresh module of ``params`` (over the family's defaults), seeded, for ``n_features`` inputs (the split's by
    default; the refit's rows may encode more categories); ``family`` as in ``train_config``."""
    shape = ModelShape(n_features or prepared.n_features, prepared.n_outputs, prepared.lookback)
    name, full = resolve(job, params, family)
    return build_model(get_family(name), shape, full, job.seed)


def resolve(job: FinalTrainJob, params: dict[str, Any], family: str | None = None) -> tuple[str, dict[str, Any]]:
    """The family a final training trains and its whole config: ``params`` over the config's default config (its
    family's defaults and fixed ``model.params``); under ``model.family: auto`` over the defaults of the family
    ``params`` names (none: the plan's default config); over ``family``'s own defaults when another family trains
    beside the model (a baseline)."""
    if family is not None and family != job.model.family:
        return family, {**get_family(family).defaults, **params}
    if job.model.family == AUTO:
        name, own = split_family(params or job.plan.default_config, AUTO)
        return name, {**get_family(name).defaults, **own}
    return job.model.family, {**job.model.default_config(), **params}


def train_settings(
    job: FinalTrainJob,
    prepared: PreparedData,
    full: dict[str, Any],
    epochs: int,
    stop_after: float | None,
    patience: int | str | None = "final",
) -> TrainSettings:
    """How the final stage trains the config ``full`` (its params over the defaults): its lr, batch size and weight
    decay, the pipeline's loss, optimiser and clipping, the seed, and ``final.patience`` unless ``patience`` says
    otherwise (None: every epoch, as a refit runs)."""
    return TrainSettings.of(
        full,
        epochs=epochs,
        loss=loss_for(prepared.task, job.training.loss),
        optimizer=job.training.optimizer,
        grad_clip=job.training.grad_clip,
        patience=patience,
        stop_after=stop_after,
        seed=job.seed,
    )


def start_weights(job: FinalTrainJob, best_weights: str | None) -> Path | None:
    """The weights the tuned config starts from: the search's (its best trial's, or PBT's best member's), unless
    ``final.init`` is scratch or none were kept."""
    if job.final.init == "scratch" and job.plan.trains_tuned:
        return None
    if best_weights is None or not Path(best_weights).is_file():
        logger.info(
            "final training: the search kept no weights of the best config here (%s); training it from scratch",
            "the best PBT member's are missing"
            if not job.plan.trains_tuned
            else "none are kept under search.cv, whose fold models each trained on other rows",
        )
        return None
    return Path(best_weights)


def choose_model(tuned: FitResult, default: FitResult | None) -> tuple[str, str]:
    """Which of the two trained models goes on, on validation loss alone (the test split decides nothing): the
    tuned config, unless the default config, trained with the same budget and early stopping, did better (under a
    tight budget the tuned config may have had one epoch). Returns the choice and a line saying why."""
    if default is None:
        return TUNED, "the tuned config goes on (no default-config baseline trained)"
    if default.best_val_loss < tuned.best_val_loss or (
        math.isfinite(default.best_val_loss) and not math.isfinite(tuned.best_val_loss)
    ):
        return DEFAULT_CONFIG, (
            f"the default config goes on: its validation loss {default.best_val_loss:.5g} beat the tuned config's "
            f"{tuned.best_val_loss:.5g}"
        )
    return TUNED, (
        f"the tuned config goes on: validation loss {tuned.best_val_loss:.5g} against the default config's "
        f"{default.best_val_loss:.5g}"
    )
