"""The torch trainer as a search objective: ``objective(params, fidelity) -> Evaluation``.

At fidelity f a config trains on a subsample of f of the training windows/rows, for the same number of epochs
(so a rung costs about f of a full evaluation), and is always validated on the whole validation split.
Subsamples are deterministic per seed, the same for every config at a rung, and nested (a smaller rung's
subsample is part of every larger one): series keep the most recent contiguous windows; tabular rows come
from one seeded, class-interleaved permutation. An evaluation on all the data keeps its best epoch's weights
(``trial_weights_path``), so that the final stage continues from the winner instead of training it again.

Continuation across rungs (``search.continuation``): an evaluation below all the data keeps a checkpoint (its best
epoch's weights and optimiser state) under ``rung_dir``; when the same config is evaluated at a larger fraction (it
was promoted), it continues from the checkpoint of the largest fraction below instead of training from scratch, for
the epochs that bring the rows it has seen to about ``epochs`` passes over that fraction: ``epochs x (1 - previous /
fraction)``. A config that reaches all the data so costs about one full training. A checkpoint at the fraction asked
for is a rung trained before a stop and not recorded: it is read back, not trained again.

``MemberTrainer`` is population-based training's objective: one member for one interval, from a checkpoint.

With cross-validation (``prepared.folds``) the engine calls ``objective(params, fidelity, fold=k)``: fold k's
training windows/rows are subsampled the same way and its validation part is the validation split. Fold models
keep no weights: none of them trained on the split the final stage trains on.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import ModelShape, TrainSettings, build_model, fit, get_family, loss_for, pick_device
from tasks.data_prep.prepared import PreparedData
from tasks.search import Evaluation, params_key
from tasks.search_stage.job import SearchJob


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
        self._stop = threading.Event()

    @classmethod
    def of(
        cls, job: SearchJob, prepared: PreparedData, *, threads: int, deadline: Callable[[], float] | None, **extra: Any
    ) -> TrainerObjective:
        """Built from the search stage's job (its ``model``, ``training``, ``search`` and ``seed``); ``extra`` goes
        to the constructor (``weights_dir``, ``checkpoint_dir``)."""
        family = get_family(job.model.family)
        return cls(
            family.name,
            prepared,
            base_params=job.model.default_config(),
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
        return TrainSettings(
            epochs=epochs,
            lr=float(full["lr"]),
            batch_size=int(full["batch_size"]),
            weight_decay=float(full.get("weight_decay", 0.0)),
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
        kept = self._checkpoint(params, fidelity, fold)
        if kept is not None:  # this rung was trained before a stop and not recorded: read back, not trained again
            return Evaluation(kept["loss"], tuple(kept["curve"]), kept["seconds"], continued_from=kept["start"])
        full = {**self.base_params, **params}
        train, val = (self.train, self.val) if fold is None else self.folds[fold]
        idx = self.subsample(fidelity, fold)
        # a fold's encoding may have fewer columns (categories its training rows lack)
        shape = ModelShape(train[0].shape[-1], self.n_outputs, self.lookback)
        model = build_model(get_family(self.family), shape, full, self.seed)
        start = self._checkpoint_below(params, fidelity, fold)
        epochs, optimizer_state = self.epochs, None
        if start is not None:
            model.load_state_dict(start["model"])
            optimizer_state = start["optimizer"]
            epochs = continued_epochs(self.epochs, start["fraction"], fidelity)
        keeps_checkpoint = self.rung_dir is not None and fidelity < 1
        result = fit(
            model,
            (train[0][idx], train[1][idx]),
            val,
            self._settings(full, epochs, self.seed),
            pick_device(self.device),
            should_stop=self._stop.is_set,
            validate_first=start is not None,
            optimizer_state=optimizer_state,
            keep_optimizer=keeps_checkpoint,
        )
        evaluation = Evaluation(
            loss=result.best_val_loss,
            curve=tuple(result.val_loss),
            seconds=result.seconds,
            continued_from=start["fraction"] if start is not None else None,
        )
        if not math.isfinite(result.best_val_loss):
            return evaluation
        if keeps_checkpoint:
            kept = {
                "model": model.state_dict(),
                "optimizer": result.optimizer_state,
                "params": params,
                "fraction": fidelity,
                "start": evaluation.continued_from,
                "loss": evaluation.loss,
                "curve": list(evaluation.curve),
                "seconds": evaluation.seconds,
            }
            _save_atomically(kept, self._checkpoint_path(params, fidelity, fold))
        if self.weights_dir is not None and fold is None and fidelity >= 1:
            # Trained on all the data: the final stage can continue from here instead of starting again.
            _save_atomically(model.state_dict(), trial_weights_path(self.weights_dir, params))
        return evaluation

    def _checkpoint_path(self, params: dict[str, Any], fraction: float, fold: int | None) -> Path:
        config = hashlib.sha256(params_key(params).encode()).hexdigest()[:20]
        return Path(self.rung_dir or ".") / f"{config}-fold{'x' if fold is None else fold}-{fraction:.6f}.pt"

    def _checkpoint(self, params: dict[str, Any], fraction: float, fold: int | None) -> dict[str, Any] | None:
        """The checkpoint this config kept at exactly ``fraction`` (a rung trained before a stop), if any."""
        if self.rung_dir is None or fraction >= 1:
            return None
        path = self._checkpoint_path(params, fraction, fold)
        if not path.is_file():
            return None
        kept = torch.load(path, map_location="cpu", weights_only=False)
        return kept if kept["params"] == params else None

    def _checkpoint_below(self, params: dict[str, Any], fraction: float, fold: int | None) -> dict[str, Any] | None:
        """The checkpoint this config kept at the largest fraction below ``fraction`` (the rung it was promoted
        from), if any."""
        if self.rung_dir is None or not self.rung_dir.is_dir():
            return None
        prefix = self._checkpoint_path(params, 1.0, fold).name.rsplit("-", 1)[0]
        below = []
        for path in self.rung_dir.glob(f"{prefix}-*.pt"):
            kept_fraction = float(path.stem.rsplit("-", 1)[1])
            if kept_fraction < fraction - 1e-9:
                below.append((kept_fraction, path))
        for _, path in sorted(below, reverse=True):
            kept = torch.load(path, map_location="cpu", weights_only=False)
            if kept["params"] == params:
                return kept
        return None


def continued_epochs(epochs: int, start: float, fraction: float) -> int:
    """Epochs a config continued from a checkpoint at ``start`` trains at ``fraction``: those that bring the rows it
    has seen to about ``epochs`` passes over ``fraction``, at least one.

    Example:
        >>> continued_epochs(5, 1 / 3, 1.0)  # 5 x 2/3
        3
    """
    return max(1, round(epochs * (1 - start / fraction)))


def trial_weights_path(weights_dir: Path, params: dict[str, Any]) -> Path:
    """Where the best epoch's weights of ``params`` trained on all the data are kept (one file per config)."""
    return weights_dir / f"{hashlib.sha256(params_key(params).encode()).hexdigest()[:20]}.pt"


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
        _save_atomically(kept, path)
        return Evaluation(result.best_val_loss, tuple(result.val_loss), result.seconds)

    def drop_checkpoints_before(self, interval: int) -> None:
        """Delete the checkpoints of earlier intervals (a finished population needs only its last)."""
        for path in self.checkpoint_dir.glob("member*_interval*"):
            if path.suffix != ".pt" or int(path.stem.rsplit("interval", 1)[1]) < interval:
                path.unlink(missing_ok=True)  # and the partial files of writers that were killed

    def export_weights(self, member: int, interval: int, path: Path) -> Path:
        """The model weights of a member's checkpoint as a plain state dict (what the final stage loads)."""
        kept = torch.load(self.checkpoint_path(member, interval), map_location="cpu", weights_only=False)
        _save_atomically(kept["model"], path)
        return path


def _save_atomically(value: Any, path: Path) -> None:
    """``torch.save`` to a file of this process, then renamed: a killed writer never leaves half a file under the
    real name, and two writers (a rerun and a worker of the stopped run) never write the same partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    torch.save(value, partial)
    partial.replace(path)
