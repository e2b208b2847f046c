"""One training loop for every family: seeded mini-batches cut from in-memory tensors, gradient clipping,
early stopping on validation loss, learning curves returned."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "mse": nn.MSELoss,
    "mae": nn.L1Loss,
    "huber": nn.HuberLoss,
    "cross_entropy": nn.CrossEntropyLoss,
}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
_EVAL_BATCH = 4096


@dataclass(frozen=True)
class TrainSettings:
    """How to train: budget, optimiser and loss. ``patience=None`` runs every epoch."""

    epochs: int
    lr: float
    batch_size: int
    loss: str = "mse"
    optimizer: str = "adam"
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    patience: int | None = None
    seed: int = 0
    time_limit: float | None = None  # seconds; checked between batches; past it training fails (TimeLimitExceeded)
    stop_after: float | None = None  # seconds; past it training ends (after one epoch at least), keeping the best
    rounds: int | None = None  # boosting rounds exactly, instead of epochs (a tree family's refit: models.gbm)

    @classmethod
    def of(cls, params: Mapping[str, Any], **settings: Any) -> TrainSettings:
        """Settings for a config ``params`` (a family's params over its defaults): its lr, batch size and weight
        decay where the family has them (a tree family has none; it reads its own params), and ``settings``."""
        return cls(
            lr=float(params.get("lr", 0.0)),
            batch_size=int(params.get("batch_size", 1)),
            weight_decay=float(params.get("weight_decay", 0.0)),
            **settings,
        )


class TimeLimitExceeded(RuntimeError):
    """Training ran past ``TrainSettings.time_limit``."""


class TrainingStopped(RuntimeError):
    """``should_stop`` asked training to stop (the search it belongs to was interrupted)."""


@dataclass
class FitResult:
    """The model with its best weights restored, and the curves that led there."""

    model: nn.Module
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.nan
    seconds: float = 0.0
    stopped_early: bool = False
    out_of_time: bool = False  # ended by ``stop_after`` (a time budget), not by its epochs or early stopping
    start_val_loss: float | None = None  # with ``validate_first``: the loss of the weights training started from
    optimizer_state: dict | None = None  # with ``keep_optimizer``: the optimiser's state at the best weights


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, else the CPU."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def fit(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    settings: TrainSettings,
    device: torch.device | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    validate_first: bool = False,
    optimizer_state: dict | None = None,
    keep_optimizer: bool = False,
    restore_best: bool = True,
) -> FitResult:
    """Train ``model`` on ``train`` and keep the weights with the lowest loss on ``val``. ``should_stop`` is
    asked between batches; when it answers True training raises ``TrainingStopped``. Past ``settings.stop_after``
    seconds training ends between two batches with the best weights so far, but never before one epoch is done
    (so there is always a validated model). ``validate_first`` validates the weights ``model`` comes with before
    training (a model continued from trained weights): they count as the best so far (``best_epoch`` -1) until an
    epoch beats them, and early stopping counts from them. ``optimizer_state`` (a ``FitResult.optimizer_state``)
    continues the optimiser's moments, with ``settings``' learning rate and weight decay; ``keep_optimizer`` returns
    the optimiser's state as it was at the best weights (to continue from them later). ``restore_best=False`` keeps
    the last epoch's weights (a refit for a fixed number of epochs, whose ``val`` rows are among its training rows).

    Example:
        >>> result = fit(model, (X, y), (Xv, yv), TrainSettings(epochs=5, lr=1e-3, batch_size=32))
        >>> result.best_val_loss, len(result.val_loss)
    """
    if hasattr(model, "fit_rounds"):  # a family that trains itself (models.gbm), to the same contract
        return model.fit_rounds(train, val, settings, on_epoch, should_stop, validate_first, restore_best)
    device = device or pick_device()
    started = time.perf_counter()
    criterion = LOSSES[settings.loss]()
    classify = settings.loss == "cross_entropy"
    x_train, y_train = _tensors(train, classify, device)
    x_val, y_val = _tensors(val, classify, device)
    model.to(device)
    optimizer = OPTIMIZERS[settings.optimizer](model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
        for group in optimizer.param_groups:  # the loaded state brings its own; the settings' are the new ones
            group["lr"], group["weight_decay"] = settings.lr, settings.weight_decay
    generator = torch.Generator().manual_seed(settings.seed)
    result = FitResult(model=model)
    best_state = None
    since_best = 0
    if validate_first:
        result.start_val_loss = evaluate_loss(model, x_val, y_val, criterion)
        if math.isfinite(result.start_val_loss):
            result.best_val_loss = result.start_val_loss
            best_state = copy.deepcopy(model.state_dict())
            if keep_optimizer:
                result.optimizer_state = copy.deepcopy(optimizer.state_dict())
    n = len(x_train)
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        total, seen = 0.0, 0
        for start in range(0, n, settings.batch_size):
            if result.val_loss and _past(settings.stop_after, started):
                result.out_of_time = True
                break
            if settings.time_limit is not None and time.perf_counter() - started > settings.time_limit:
                raise TimeLimitExceeded(
                    f"trial_timeout of {settings.time_limit:g}s exceeded in epoch {epoch + 1} of {settings.epochs}"
                )
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"stopped in epoch {epoch + 1} of {settings.epochs}")
            idx = order[start : start + settings.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x_train[idx]), y_train[idx])
            loss.backward()
            if settings.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        if result.out_of_time:
            break  # the partial epoch is not validated: the best complete epoch stands
        train_loss = total / max(seen, 1)
        val_loss = evaluate_loss(model, x_val, y_val, criterion)
        result.train_loss.append(train_loss)
        result.val_loss.append(val_loss)
        if on_epoch is not None:
            on_epoch(epoch, train_loss, val_loss)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            result.best_val_loss = math.nan
            break
        if val_loss < result.best_val_loss or best_state is None:
            result.best_val_loss, result.best_epoch, since_best = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            if keep_optimizer:
                result.optimizer_state = copy.deepcopy(optimizer.state_dict())
        else:
            since_best += 1
            if settings.patience is not None and since_best >= settings.patience:
                result.stopped_early = True
                break
        if _past(settings.stop_after, started):
            result.out_of_time = True
            break
    if best_state is not None and restore_best:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - started
    return result


def _past(seconds: float | None, started: float) -> bool:
    return seconds is not None and time.perf_counter() - started > seconds


@torch.no_grad()
def evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module) -> float:
    """Mean loss over the whole split, in large batches, in eval mode."""
    model.eval()
    total = 0.0
    for start in range(0, len(x), _EVAL_BATCH):
        xb, yb = x[start : start + _EVAL_BATCH], y[start : start + _EVAL_BATCH]
        total += criterion(model(xb), yb).item() * len(xb)
    return total / max(len(x), 1)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, device: torch.device | None = None) -> np.ndarray:
    """Raw model outputs (regression values or class logits) as a NumPy array."""
    device = device or module_device(model)
    model.eval()
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    outs = [model(xt[i : i + _EVAL_BATCH]).cpu() for i in range(0, len(xt), _EVAL_BATCH)]
    return torch.cat(outs).numpy() if outs else np.empty((0,))


def module_device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: its first parameter's device, or its first buffer's (a tree model has no parameters)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _tensors(pair: tuple[np.ndarray, np.ndarray], classify: bool, device: torch.device):
    x, y = pair
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y, dtype=torch.long if classify else torch.float32, device=device)
    return xt, yt


def loss_for(task: str, configured: str = "auto") -> str:
    """The loss to train with: the configured one, or MSE for regression and cross-entropy for classification."""
    if configured != "auto":
        return configured
    return "cross_entropy" if task == "classification" else "mse"
