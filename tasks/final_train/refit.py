"""The production refit (``final.refit: all``): after the test, the registered model's configs train again on every
row (train, validation and test, with the preprocessing fitted on all of them) for as many optimiser updates as their
tested training ran (the epochs early stopping chose, scaled by the rows: Goodfellow et al., Deep Learning 7.8,
algorithm 7.2), from scratch with the same seed; an ensemble keeps its weights over the refitted members."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from automl.models import FitResult, fit, pick_device
from automl.models.ensemble import Ensemble
from automl.models.gbm import TREES_PER_EPOCH, GbmModel
from automl.tasks.data_prep.prepared import PreparedData, RefitData
from automl.tasks.final_train.job import FinalTrainJob
from automl.tasks.final_train.runs import Trained, train_once
from automl.tasks.final_train.training import build_config, resolve, train_settings
from automl.tasks.tracking.live_metrics import OnEpoch

logger = logging.getLogger("automl")

REFIT_PREFIX = "refit_"  # a refit training's name: refit_<the tested training's name>
_TAIL_ROWS = 512  # the refit has no validation rows: its curve's "validation" is the last rows it trains on


@dataclass(frozen=True)
class RefitResult:
    """The refitted model (one module: a member, or the ensemble of the refitted members), the rows it trained
    on, and each refitted training's epochs by name."""

    model: torch.nn.Module
    rows: int
    epochs: dict[str, int]


def refit_epochs(trained: Trained, job: FinalTrainJob, train_rows: int, all_rows: int) -> int:
    """Epochs on every row with as many updates as ``trained``'s weights had: its best epoch in the final stage, and
    the search's epochs when it started from the search's weights. A tree model boosts as many rounds as its tested
    trees on more rows (the number of trees does not shrink with more rows as a network's epochs do)."""
    if trained_trees(trained) is not None:  # trees: as many epochs of rounds as the tested model's trees took
        return max(1, math.ceil(trained_trees(trained) / TREES_PER_EPOCH))
    seen = trained.fit.best_epoch + 1 + (job.search_epochs if trained.fit.start_val_loss is not None else 0)
    return max(1, round(seen * train_rows / all_rows))


def trained_trees(trained: Trained) -> int | None:
    """The boosting rounds of a tree model's tested trees (what its refit boosts again); None for a network."""
    return trained.model.trees if isinstance(trained.model, GbmModel) else None


def refit(
    job: FinalTrainJob,
    prepared: PreparedData,
    experiment_id: str,
    stage_run_id: str,
    members: Sequence[Trained],
    weights: Sequence[float],
    seconds: Callable[[int], float | None],
) -> RefitResult:
    """Train each of ``members`` (the registered model's trainings) again on ``prepared.refit``'s rows, each run a
    training of the stage (kept for a resumed stage), mixed by ``weights`` when there are several (an ensemble);
    ``seconds(left)``: what the next may take when ``left`` remain, asked as it starts (None: no budget). Modules
    end on the CPU, as the registered model is saved."""
    data = prepared.refit
    if data is None:
        raise RuntimeError("final.refit is all but data prep made no refit rows")
    rows = len(data.rows)
    refitted, epochs = [], {}
    for i, member in enumerate(members):
        n = refit_epochs(member, job, len(prepared.train), rows)
        name = f"{REFIT_PREFIX}{member.name}"
        limit = seconds(len(members) - i)
        trained = train_once(
            experiment_id,
            stage_run_id,
            name,
            member.params,
            train=lambda on_epoch, m=member, n=n, s=limit: _train(
                job, prepared, data, m.params, n, s, trained_trees(m), on_epoch
            ),
            build=lambda m=member: build_config(job, prepared, m.params, data.rows.X.shape[-1]),
            epochs=n,
            logged={"refit_rows": rows, "refit_epochs": n},
        )
        epochs[name] = len(trained.fit.train_loss)  # what it ran: a budget may have ended it early
        logger.info(
            "refit: %s on all %d rows for %d epochs%s",
            member.name,
            rows,
            epochs[name],
            " (loaded from its run)" if trained.reused else "" if epochs[name] == n else f" of {n} (the budget)",
        )
        refitted.append(trained.model.cpu())
    if len(refitted) == 1:
        return RefitResult(refitted[0], rows, epochs)
    return RefitResult(Ensemble(refitted, list(weights), prepared.task == "classification"), rows, epochs)


def _train(
    job: FinalTrainJob,
    prepared: PreparedData,
    data: RefitData,
    params: dict,
    epochs: int,
    stop_after: float | None,
    rounds: int | None = None,
    on_epoch: OnEpoch | None = None,
) -> tuple[torch.nn.Module, FitResult]:
    """``params`` from scratch on every row for ``epochs`` (``rounds`` of boosting for a tree model; no early
    stopping: its last weights stand)."""
    _, full = resolve(job, params)
    model = build_config(job, prepared, params, data.rows.X.shape[-1])
    settings = replace(train_settings(job, prepared, full, epochs, stop_after, patience=None), rounds=rounds)
    X, y = data.rows.X, data.rows.y
    result = fit(
        model,
        (X, y),
        (X[-_TAIL_ROWS:], y[-_TAIL_ROWS:]),
        settings,
        pick_device(job.training.device),
        on_epoch=on_epoch,
        restore_best=False,
    )
    return result.model, result
