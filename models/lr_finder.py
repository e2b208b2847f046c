"""The learning-rate range test (Smith 2017, as fastai's ``lr_find`` runs it): train for at most one epoch with a
learning rate growing exponentially per batch, record the loss, and suggest a learning rate in its valley (fastai's
``valley`` rule: about half way down the longest stretch over which the smoothed loss keeps falling), or
say that the curve shows no clear descent."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from automl.models.trainer import LOSSES, OPTIMIZERS, TrainSettings, _tensors, pick_device

SMOOTHING = 0.98  # beta of the loss's exponential moving average (fastai's)
DIVERGED = 4.0  # the test stops when the smoothed loss exceeds this many times its lowest value
# The first 20 steps count neither for the suggestion nor for divergence: the bias-corrected average of so few
# batches moves mostly with batch noise (with 10, as fastai, the steepest point landed there on a third of the
# small-batch runs measured, and batches of a few rows "diverged" in the first steps).
SKIP_START = 20
MIN_POINTS = 5  # a valley needs at least this many points after the first SKIP_START
# A curve shows a clear descent when its smoothed loss falls by at least this share from its level at the start of
# the valley to the valley's bottom. A flatter curve (measured: 81 batches of 27 rows on a half-hourly demand series,
# whose steepest point was 1e-5 while the searches chose about 1e-3) is noise, and its suggestion is not used to
# narrow a search space.
MIN_DESCENT = 0.1
MIN_STEPS = 50  # fewer batches in one epoch than this, and the batch size shrinks (see ``lr_range_test``)


@dataclass(frozen=True)
class LRRangeResult:
    """One range test: per step its learning rate, raw and smoothed loss; the suggested learning rate; whether
    the loss diverged (the test stopped there); the batch size it ran with; and whether the curve showed a clear
    descent (``clear``: the smoothed loss fell by at least ``MIN_DESCENT`` of its level over the valley)."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    diverged: bool
    steps: int
    batch_size: int
    clear: bool = True


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

    The suggestion is fastai's ``valley``: over the smoothed losses after the first 20 points, the longest run of
    points each lower than one before it (a longest decreasing subsequence) is the valley, and the suggestion is the
    learning rate about half way down it (fastai's ``start + int(length / 3) + int(length / 6)``). A curve too
    short for that (under 25 points) suggests a tenth of the learning rate of its lowest smoothed loss (fastai's
    older rule). ``clear`` says whether the valley is a real descent (the smoothed loss falls by at least
    ``MIN_DESCENT`` of its level over it). ``model``'s weights are restored afterwards.

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
    suggestion, clear = _suggest(lrs, smoothed)
    return LRRangeResult(lrs, losses, smoothed, suggestion, diverged, len(lrs), batch_size, clear)


def _batch_size(rows: int, configured: int, max_steps: int) -> int:
    if math.ceil(rows / configured) >= min(MIN_STEPS, max_steps):
        return configured
    return max(1, rows // max_steps)


def _suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, bool]:
    """fastai's valley rule on the smoothed loss (the first ``SKIP_START`` points left out), and whether the valley
    is a clear descent."""
    loss = np.asarray(smoothed[SKIP_START:])
    if len(loss) < MIN_POINTS:
        best = int(np.argmin(smoothed))
        return lrs[best] / 10, smoothed[best] <= (1 - MIN_DESCENT) * smoothed[0]
    start, end = _longest_descent(loss)
    third = (end - start) / 3
    index = SKIP_START + start + int(third) + int(third / 2)
    clear = end > start and loss[end] <= (1 - MIN_DESCENT) * loss[start]
    return lrs[index], bool(clear)


def _longest_descent(loss: np.ndarray) -> tuple[int, int]:
    """The first and last index of the longest decreasing subsequence of ``loss`` (fastai's valley)."""
    n = len(loss)
    length = [1] * n
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if loss[i] < loss[j] and length[i] < length[j] + 1:
                length[i] = length[j] + 1
        if length[end] < length[i]:
            end = i
            start = end - length[end] + 1
    return start, end
