"""The torch trainer as a search objective: ``objective(params, fidelity) -> Evaluation``.

At fidelity f a config trains on a subsample of f of the training windows/rows, for the same number of epochs
(so a rung costs about f of a full evaluation), and is always validated on the whole validation split.
Subsamples are deterministic per seed, the same for every config at a rung, and nested (a smaller rung's
subsample is part of every larger one): series keep the most recent contiguous windows; tabular rows come
from one seeded, class-interleaved permutation. An evaluation on all the data keeps its best epoch's weights
(``checkpoints.trial_weights_path``), so that the final stage continues from the winner instead of training again.

Continuation across rungs (``search.continuation``): an evaluation below all the data keeps a checkpoint (its best
epoch's weights and optimiser state; ``checkpoints.RungCheckpoints``) under ``rung_dir``; when the same config is
evaluated at a larger fraction (it was promoted), it continues from the checkpoint of the largest fraction below
instead of training from scratch, for the epochs that bring the rows it has seen to about ``epochs`` passes over that
fraction: ``epochs x (1 - previous / fraction)``. A config that reaches all the data so costs about one full
training. A checkpoint at the fraction asked for is a rung trained before a stop and not recorded: it is read back,
not trained again.

While it trains, an evaluation shows its epoch line on the console and logs its per-epoch losses to its trial's MLflow
run (``trial_runs``: the search's trial observer names the run of each config in training; ``watch_training``), the
steps following those the run already has, so a trial's chart runs on across its rungs (and folds).

``MemberTrainer`` is population-based training's objective: one member for one interval, from a checkpoint.

With cross-validation (``prepared.folds``) the engine calls ``objective(params, fidelity, fold=k)``: fold k's
training windows/rows are subsampled the same way and its validation part is the validation split. Fold models
keep no weights: none of them trained on the split the final stage trains on.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from automl.models import AUTO, ModelShape, TrainSettings, build_model, fit, get_family, loss_for, pick_device
from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.search import Evaluation, params_key
from automl.tasks.search_stage.checkpoints import RungCheckpoints, save_atomically, trial_weights_path
from automl.tasks.search_stage.job import SearchJob
from automl.tasks.search_stage.trial_runs import TrialsInTraining
from automl.tasks.space import split_family
from automl.tasks.tracking.live_metrics import watch_training


def subsample_indices(n: int, fraction: float, kind: str, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Indices of the training subsample at ``fraction`` (sorted).

    Example:
        >>> subsample_indices(10, 0.3, "series", seed=0)
        array([7, 8, 9])
    """
    size = max(1, min(n, math.ceil(fraction * n - 1e-9)))
    if kind == "series":
        return np.arange(n - size, n)
    return np.sort(_interleaved_permutation(n, seed, labels)[:size])


def _interleaved_permutation(n: int, seed: int, labels: np.ndarray | None) -> np.ndarray:
    """A seeded permutation whose every prefix keeps the class proportions (for classification labels)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if labels is None:
        return order
    labels = np.asarray(labels)[order]
    rank_in_class = np.zeros(n)
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        rank_in_class[members] = (np.arange(len(members)) + 0.5) / len(members)
    return order[np.argsort(rank_in_class, kind="stable")]


class TrainerObjective:
    """Trains a model family on a fidelity's subsample and returns the best validation loss over its epochs."""

    def __init__(
        self,
        family: str,
        prepared: PreparedData,
        base_params: dict[str, Any],
        epochs: int,
        loss: str,
        optimizer: str = "adam",
        grad_clip: float | None = 1.0,
        seed: int = 0,
        device: str = "auto",
        threads: int | None = None,
        time_limit: float | None = None,
        deadline: Callable[[], float] | None = None,
        weights_dir: Path | None = None,
        rung_dir: Path | None = None,
        tracking_uri: str | None = None,
    ):
        self.family = family
        self.n_outputs, self.lookback = prepared.n_outputs, prepared.lookback
        self.train = (prepared.train.X, prepared.train.y)
        self.val = (prepared.val.X, prepared.val.y)
        self.folds = [((f.train.X, f.train.y), (f.val.X, f.val.y)) for f in prepared.folds]
        self.kind = prepared.kind
        self.classification = prepared.task == "classification"
        self.base_params = dict(base_params)
        self.epochs = epochs
        self.loss = loss
        self.optimizer = optimizer
        self.grad_clip = grad_clip
        self.seed = seed
        self.device = device
        self.threads = threads
        self.time_limit = time_limit
        self.deadline = deadline  # training ends, keeping its best epoch, at this time.time() (the run's budget)
        self.weights_dir = weights_dir  # where full-fidelity evaluations keep their best epoch's weights
        self.rung_dir = rung_dir  # where evaluations below all the data keep checkpoints to continue from
        # the trial and MLflow run of each config in training, filled by the trial observer as trials start; a Dask
        # worker gets a copy with each evaluation, made after its trial started
        self.trial_runs = TrialsInTraining()
        self.tracking_uri = tracking_uri  # where trial runs live (a Dask worker process has no URI of its own)
        self._stop = threading.Event()

    @classmethod
    def of(
        cls, job: SearchJob, prepared: PreparedData, *, threads: int, deadline: Callable[[], float] | None, **extra: Any
    ) -> TrainerObjective:
        """Built from the search stage's job (its ``model``, ``training``, ``search`` and ``seed``); ``extra`` goes
        to the constructor (``weights_dir``, ``rung_dir``; ``checkpoint_dir`` for ``MemberTrainer``)."""
        auto = job.model.family == AUTO  # each config names its family; its defaults are that family's
        return cls(
            job.model.family,
            prepared,
            base_params={} if auto else job.model.default_config(),
            epochs=job.search.epochs,
            loss=loss_for(prepared.task, job.training.loss),
            optimizer=job.training.optimizer,
            grad_clip=job.training.grad_clip,
            seed=job.seed,
            device=job.training.device,
            threads=threads,
            time_limit=job.search.trial_timeout,
            deadline=deadline,
            **extra,
        )

    def interrupt(self) -> None:
        """Stop the evaluations running in this process at their next batch (the search is being stopped)."""
        self._stop.set()

    def __getstate__(self) -> dict[str, Any]:  # shipped to Dask workers: an Event does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "_stop"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stop = threading.Event()

    def _time_left(self) -> float | None:
        """Seconds this evaluation may train before the deadline. Past it (the engine starts an evaluation then
        only for a search that has no complete config yet) none: it trains one epoch, the least that gives the
        final stage weights to continue from, instead of its full budget of epochs past the run's budget."""
        if self.deadline is None:
            return None
        return max(self.deadline() - time.time(), 0.0)

    def _settings(self, full: dict[str, Any], epochs: int, seed: int) -> TrainSettings:
        return TrainSettings.of(
            full,
            epochs=epochs,
            loss=self.loss,
            optimizer=self.optimizer,
            grad_clip=self.grad_clip,
            seed=seed,
            time_limit=self.time_limit,
            stop_after=self._time_left(),
        )

    def subsample(self, fraction: float, fold: int | None = None) -> np.ndarray:
        X, y = self.train if fold is None else self.folds[fold][0]
        return subsample_indices(len(X), fraction, self.kind, self.seed, y if self.classification else None)

    def __call__(self, params: dict[str, Any], fidelity: float, fold: int | None = None) -> Evaluation:
        if self.threads:
            torch.set_num_threads(self.threads)
        rungs = RungCheckpoints(self.rung_dir) if self.rung_dir is not None and fidelity < 1 else None
        kept = rungs.at(params, fidelity, fold) if rungs is not None else None
        if kept is not None:  # this rung was trained before a stop and not recorded: read back, not trained again
            return Evaluation(kept["loss"], tuple(kept["curve"]), kept["seconds"], continued_from=kept["start"])
        family, own = split_family(params, self.family)  # under model.family auto a config names its family
        full = {**(self.base_params if family == self.family else get_family(family).defaults), **own}
        for name in get_family(family).row_counts:  # e.g. a leaf's minimum rows: a share of the rows trained on
            full[name] = max(1, round(full[name] * fidelity))
        train, val = (self.train, self.val) if fold is None else self.folds[fold]
        idx = self.subsample(fidelity, fold)
        # a fold's encoding may have fewer columns (categories its training rows lack)
        shape = ModelShape(train[0].shape[-1], self.n_outputs, self.lookback)
        model = build_model(get_family(family), shape, full, self.seed)
        start = RungCheckpoints(self.rung_dir).below(params, fidelity, fold) if self.rung_dir is not None else None
        epochs, optimizer_state = self.epochs, None
        if start is not None:
            model.load_state_dict(start["model"])
            optimizer_state = start["optimizer"]
            epochs = continued_epochs(self.epochs, start["fraction"], fidelity)
        number, run_id = self.trial_runs.of(params_key(params)) or (None, None)
        label = f"trial {number}" if number is not None else "trial"
        label += "" if fidelity >= 1 else f" at {fidelity:.0%} of the data"
        label += "" if fold is None else f", fold {fold + 1}"
        with watch_training(label, epochs, run_id, first_step=None, tracking_uri=self.tracking_uri) as on_epoch:
            result = fit(
                model,
                (train[0][idx], train[1][idx]),
                val,
                self._settings(full, epochs, self.seed),
                pick_device(self.device),
                on_epoch=on_epoch,
                should_stop=self._stop.is_set,
                validate_first=start is not None,
                optimizer_state=optimizer_state,
                keep_optimizer=rungs is not None,
            )
        evaluation = Evaluation(
            loss=result.best_val_loss,
            curve=tuple(result.val_loss),
            seconds=result.seconds,
            continued_from=start["fraction"] if start is not None else None,
        )
        if not math.isfinite(result.best_val_loss):
            return evaluation
        if rungs is not None:
            state = {"model": model.state_dict(), "optimizer": result.optimizer_state}
            result_of_rung = {"loss": evaluation.loss, "curve": list(evaluation.curve), "seconds": evaluation.seconds}
            rungs.keep(params, fidelity, fold, {**state, **result_of_rung, "start": evaluation.continued_from})
        if self.weights_dir is not None and fold is None and fidelity >= 1:
            # Trained on all the data: the final stage can continue from here instead of starting again.
            save_atomically(model.state_dict(), trial_weights_path(self.weights_dir, params))
        return evaluation


def continued_epochs(epochs: int, start: float, fraction: float) -> int:
    """Epochs a config continued from a checkpoint at ``start`` trains at ``fraction``: those that bring the rows it
    has seen to about ``epochs`` passes over ``fraction``, at least one.

    Example:
        >>> continued_epochs(5, 1 / 3, 1.0)  # 5 x 2/3
        3
    """
    return max(1, math.floor(epochs * (1 - start / fraction) + 0.5))  # half up: round() would take 2.5 to 2


class MemberTrainer(TrainerObjective):
    """Population-based training's objective: trains one member for one interval on all the training data, from
    fresh weights or from a member's checkpoint (its weights and optimiser state, with this member's params), and
    keeps a checkpoint of the best epoch's weights under ``checkpoint_dir``. A member-interval whose checkpoint is
    already there (trained before a stop, not yet recorded) is read back, not trained again."""

    def __init__(self, *args: Any, checkpoint_dir: Path, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.checkpoint_dir = checkpoint_dir

    def checkpoint_path(self, member: int, interval: int) -> Path:
        return self.checkpoint_dir / f"member{member:03d}_interval{interval:04d}.pt"

    def __call__(  # type: ignore[override]
        self, params: dict[str, Any], fidelity: float = 1.0, *, member: int, interval: int, start: Any, epochs: int
    ) -> Evaluation:
        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.checkpoint_path(member, interval)
        if path.is_file():
            kept = torch.load(path, map_location="cpu", weights_only=False)
            if kept["params"] == params and kept["start"] == str(start):
                return Evaluation(kept["loss"], tuple(kept["curve"]), kept["seconds"])
        full = {**self.base_params, **params}
        shape = ModelShape(self.train[0].shape[-1], self.n_outputs, self.lookback)
        model = build_model(get_family(self.family), shape, full, self.seed + member)
        optimizer_state = None
        if start is not None:
            parent = torch.load(
                self.checkpoint_path(start.member, start.interval), map_location="cpu", weights_only=False
            )
            model.load_state_dict(parent["model"])
            optimizer_state = parent["optimizer"]
        # each member-interval its own batch order, the same on every run
        settings = self._settings(full, epochs, self.seed + 7919 * member + interval)
        result = fit(
            model,
            self.train,
            self.val,
            settings,
            pick_device(self.device),
            should_stop=self._stop.is_set,
            optimizer_state=optimizer_state,
            keep_optimizer=True,
        )
        kept = {
            "model": model.state_dict(),
            "optimizer": result.optimizer_state,
            "params": params,
            "start": str(start),
            "loss": result.best_val_loss,
            "curve": list(result.val_loss),
            "seconds": result.seconds,
        }
        save_atomically(kept, path)
        return Evaluation(result.best_val_loss, tuple(result.val_loss), result.seconds)

    def drop_checkpoints_before(self, interval: int) -> None:
        """Delete the checkpoints of earlier intervals (a finished population needs only its last)."""
        for path in self.checkpoint_dir.glob("member*_interval*"):
            if path.suffix != ".pt" or int(path.stem.rsplit("interval", 1)[1]) < interval:
                path.unlink(missing_ok=True)  # and the partial files of writers that were killed

    def export_weights(self, member: int, interval: int, path: Path) -> Path:
        """The model weights of a member's checkpoint as a plain state dict (what the final stage loads)."""
        kept = torch.load(self.checkpoint_path(member, interval), map_location="cpu", weights_only=False)
        save_atomically(kept["model"], path)
        return path
