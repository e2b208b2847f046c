"""Ensemble selection (Caruana et al. 2004, "Ensemble selection from libraries of models"): greedy forward selection
with replacement on validation predictions, starting from the best single model, keeping the best prefix of the
picks (AutoGluon's greedy weighted ensemble); the weights are pick counts over the prefix's length. NumPy only: the
loss is the caller's (the training loss, on what the members' outputs mix to).

Example:
    >>> selection = select_ensemble({"a": pa, "b": pb}, loss=lambda mix: float(np.mean((mix - y) ** 2)), rounds=25)
    >>> selection.weights, selection.val_loss
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

_ROUNDING = 1e-12  # relative: losses closer than this are the same loss


@dataclass(frozen=True)
class Selection:
    """The ensemble the picks chose: ``weights`` by candidate (members only, in order of their first pick), the
    validation loss after each pick (``losses``), the prefix kept (``kept_rounds`` picks) and its ``val_loss``; each
    candidate's own loss (``single_losses``)."""

    weights: dict[str, float]
    losses: list[float]
    kept_rounds: int
    val_loss: float
    single_losses: dict[str, float]

    @property
    def members(self) -> list[str]:
        return list(self.weights)


def select_ensemble(outputs: Mapping[str, np.ndarray], loss: Callable[[np.ndarray], float], rounds: int) -> Selection:
    """Pick ``rounds`` times, with replacement, the candidate whose addition gives the lowest ``loss`` of the mixed
    ``outputs`` (regression values or class probabilities, by candidate name; mixed as a mean over the picks), the
    first pick being the best single candidate; ties go to the candidate listed first. The prefix of picks with the
    lowest loss is kept (the first such prefix, so a longer one must be strictly better)."""
    names = list(outputs)
    if not names or rounds < 1:
        raise ValueError("ensemble selection needs at least one candidate and one round")
    stacked = np.stack([np.asarray(outputs[name], dtype=float) for name in names])
    single = [loss(stacked[i]) for i in range(len(names))]
    first = int(np.nanargmin(np.where(np.isfinite(single), single, np.nan))) if np.isfinite(single).any() else 0
    picks = [first]
    total = stacked[first].copy()
    losses = [single[first]]
    for n in range(1, rounds):
        tried = [loss((total + stacked[i]) / (n + 1)) for i in range(len(names))]
        finite = [value if np.isfinite(value) else np.inf for value in tried]
        best = int(np.argmin(finite))
        picks.append(best)
        total += stacked[best]
        losses.append(tried[best])
    finite_losses = [value if np.isfinite(value) else np.inf for value in losses]
    lowest = min(finite_losses)
    # the first prefix within rounding of the lowest loss: repeating one model's picks changes the mean by nothing
    # but rounding, which must not count as better
    kept = next(i for i, value in enumerate(finite_losses) if value <= lowest + _ROUNDING * max(1.0, abs(lowest))) + 1
    counts: dict[str, int] = {}
    for index in picks[:kept]:
        counts[names[index]] = counts.get(names[index], 0) + 1
    weights = {name: count / kept for name, count in counts.items()}
    return Selection(weights, losses, kept, losses[kept - 1], dict(zip(names, single, strict=True)))


def keep_ensemble(selection: Selection, single: str, single_val_loss: float) -> bool:
    """Whether the selection goes on instead of ``single`` (the single chosen model, whose validation loss is
    ``single_val_loss``): only when it validates strictly better, and is not that model alone. The test split
    decides nothing."""
    return bool(selection.val_loss < single_val_loss) and list(selection.weights) != [single]
