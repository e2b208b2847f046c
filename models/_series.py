"""Shared by the series families: windows are made relative to their last observed step, and the forecast is
a learned change added to the last observed target value (a residual on the naive forecast). This keeps a
trending series in the range the network saw during training."""

from torch import Tensor


def relative_to_last(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x - x[:, -1]`` per feature, and the last target value (feature 0) to add back, shape (batch, 1)."""
    last = x[:, -1:, :]
    return x - last, last[:, :, 0]
