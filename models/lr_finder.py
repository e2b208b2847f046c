"""The learning-rate range test (Smith 2017, as fastai's ``lr_find`` runs it): train for at most one epoch with a
learning rate growing exponentially per batch, record the loss, and suggest where it falls fastest."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.trainer import LOSSES, OPTIMIZERS, TrainSettings, _tensors, pick_device

SMOOTHING = 0.98  # beta of the loss's exponential moving average (fastai's)
DIVERGED = 4.0  # the test stops when the smoothed loss exceeds this many times its lowest value
# The first 20 steps count neither for the suggestion nor for divergence: the bias-corrected average of so few
# batches moves mostly with batch noise (fastai skips 10 points; with 10 the suggestion landed there on a third of
# the small-batch runs measured, and batches of a few rows "diverged" in the first steps). The last 5 points are
# left out of the suggestion too (fastai's).
SKIP_START, SKIP_END = 20, 5
SLOPE_SPAN = 2  # a point's slope is taken between the points this many steps either side of it
MIN_STEPS = 50  # fewer batches in one epoch than this, and the batch size shrinks (see ``lr_range_test``)


@dataclass(frozen=True)
class LRRangeResult:
    """One range test: per step its learning rate, raw and smoothed loss; the suggested learning rate; whether
    the loss diverged (the test stopped there); and the batch size it ran with."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    diverged: bool
    steps: int
    batch_size: int


def lr_range_test(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    settings: TrainSettings,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    max_steps: int = 100,
    device: torch.device | None = None,
) -> LRRangeResult:
    """Train ``model`` on seeded mini-batches of at most one epoch of ``train`` while the learning rate grows
    exponentially from ``start_lr`` (first batch) to ``end_lr`` (batch ``max_steps``, or the epoch's last), with
    ``settings``' loss, optimiser, weight decay, gradient clipping and seed; ``settings.lr`` and ``epochs`` are
    not used. The loss is smoothed by an exponential moving average with bias correction (beta 0.98); the test
    stops early, ``diverged``, when a loss is not finite or, from step 20 on, the smoothed loss exceeds 4 times its
    lowest value since step 20.

    The suggestion is the learning rate where the smoothed loss falls fastest against log(lr), each point's slope
    taken between its neighbours 2 steps either side, leaving out the first 20 and the last 5 points; a curve too
    short for that (under 30 points) suggests a tenth of the learning rate of its lowest smoothed loss (fastai's
    older rule). ``model``'s weights are restored afterwards.

    Few batches: when one epoch of ``settings.batch_size`` holds fewer than ``min(50, max_steps)`` batches, the
    batch size shrinks to ``max(1, rows // max_steps)``, so that one epoch gives ``max_steps`` batches (every
    row its own batch when there are fewer rows than ``max_steps``). ``batch_size`` in the result says which.

    Example:
        >>> result = lr_range_test(model, (X, y), TrainSettings(epochs=1, lr=1e-3, batch_size=32))
        >>> result.suggestion, result.steps, result.diverged
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"start_lr, end_lr: need 0 < start_lr < end_lr (got {start_lr:g}, {end_lr:g})")
    if max_steps < 2:
        raise ValueError(f"max_steps: need at least 2 steps (got {max_steps})")
    device = device or pick_device()
    criterion = LOSSES[settings.loss]()
    x, y = _tensors(train, settings.loss == "cross_entropy", device)
    n = len(x)
    if n == 0:
        raise ValueError("train: no rows to run the range test on")
    batch_size = _batch_size(n, settings.batch_size, max_steps)
    planned = min(max_steps, math.ceil(n / batch_size))
    growth = (end_lr / start_lr) ** (1 / max(planned - 1, 1))
    initial = copy.deepcopy(model.state_dict())
    model.to(device)
    model.train()
    optimizer = OPTIMIZERS[settings.optimizer](model.parameters(), lr=start_lr, weight_decay=settings.weight_decay)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed)).to(device)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best, diverged = 0.0, math.inf, False
    try:
        for step in range(planned):
            lr = start_lr * growth**step
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = order[step * batch_size : (step + 1) * batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x[idx]), y[idx])
            value = loss.item()
            if not math.isfinite(value):
                diverged = True
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smooth = average / (1 - SMOOTHING ** (step + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            if step >= SKIP_START:
                if smooth > DIVERGED * best:
                    diverged = True
                    break
                best = min(best, smooth)
            loss.backward()
            if settings.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
    finally:
        model.load_state_dict(initial)
    if not lrs:
        raise ValueError("train: the loss of the first batch is not finite; no learning rate can be suggested")
    return LRRangeResult(lrs, losses, smoothed, _suggest(lrs, smoothed), diverged, len(lrs), batch_size)


def _batch_size(rows: int, configured: int, max_steps: int) -> int:
    if math.ceil(rows / configured) >= min(MIN_STEPS, max_steps):
        return configured
    return max(1, rows // max_steps)


def _suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The learning rate at the steepest descent of the smoothed loss against log(lr)."""
    first, last = SKIP_START + SLOPE_SPAN, len(smoothed) - SKIP_END - SLOPE_SPAN  # points whose slope is taken
    if last - first < 1:
        return lrs[int(np.argmin(smoothed))] / 10
    loss, log_lr = np.asarray(smoothed), np.log(lrs)
    ahead, behind = slice(first + SLOPE_SPAN, last + SLOPE_SPAN), slice(first - SLOPE_SPAN, last - SLOPE_SPAN)
    slopes = (loss[ahead] - loss[behind]) / (log_lr[ahead] - log_lr[behind])
    return lrs[first + int(np.argmin(slopes))]
