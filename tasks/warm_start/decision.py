"""Warm start's decision, pure: past configs (``Candidate``) ranked by how alike their datasets are, fitted into this
run's search space, deduplicated, and the ones to queue first (``WarmStartDecision``). No MLflow: the stage
(``tasks.warm_start.stage``) finds the candidates and logs the decision.

Distance: for the meta-features both datasets have (sizes and sampling interval on a log scale, the rest as
they are: autocorrelations, trend and seasonality strength, class balance, categorical share, target shape),
the root mean square of their differences. 0 means the same profile; about 1 means unrelated data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from automl.tasks.search import SearchSpace

# Meta-features compared on a log scale (sizes, intervals); all others are compared as they are.
LOG_SCALED = {"n_rows", "n_features", "step_seconds", "n_classes", "seasonal_period"}


# Target level and spread depend on units, so they never count towards similarity.
NOT_COMPARED = {"target_mean", "target_std"}


@dataclass
class Candidate:
    """A past config considered for warm start, and what became of it."""

    run_id: str
    source: str  # similar | from_runs | from_file
    experiment: str = ""
    run_name: str = ""
    distance: float | None = None
    val_loss: float | None = None
    shared_params: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    verdict: str = ""
    queued_params: dict[str, Any] | None = None  # its params fitted into this run's space, when queued
    adaptations: list[str] = field(default_factory=list)


@dataclass
class WarmStartDecision:
    """What the warm-start stage decided: every candidate with its verdict, and the configs to queue."""

    candidates: list[Candidate]
    skip_low_fidelity: bool = False

    @property
    def queued(self) -> list[Candidate]:
        return [c for c in self.candidates if c.queued_params is not None]

    @property
    def source_run_ids(self) -> list[str]:
        return [c.run_id for c in self.queued]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "run_id": c.run_id,
                    "source": c.source,
                    "experiment": c.experiment,
                    "run_name": c.run_name,
                    "distance": c.distance,
                    "val_loss": c.val_loss,
                    "shared_params": c.shared_params,
                    "verdict": c.verdict,
                    "params": json.dumps(c.params, sort_keys=True),
                    "queued_params": json.dumps(c.queued_params, sort_keys=True) if c.queued_params else "",
                    "adaptations": "; ".join(c.adaptations),
                }
                for c in self.candidates
            ],
            columns=[
                "run_id",
                "source",
                "experiment",
                "run_name",
                "distance",
                "val_loss",
                "shared_params",
                "verdict",
                "params",
                "queued_params",
                "adaptations",
            ],
        )


def meta_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Root-mean-square difference of the meta-features both have (sizes log-scaled); inf when none are shared.

    Example:
        >>> meta_distance({"n_rows": 1000, "acf_1": 0.9}, {"n_rows": 1000, "acf_1": 0.5})
        0.282...
    """
    shared = sorted((set(a) & set(b)) - NOT_COMPARED)
    diffs = []
    for name in shared:
        x, y = float(a[name]), float(b[name])
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        if name in LOG_SCALED:
            x, y = math.log1p(max(x, 0.0)), math.log1p(max(y, 0.0))
            diffs.append((x - y) / math.log(10))  # one decade apart counts as 1
        else:
            diffs.append(x - y)
    if not diffs:
        return math.inf
    return math.sqrt(sum(d * d for d in diffs) / len(diffs))


def space_overlap(signature: dict[str, Any] | None, space: SearchSpace) -> int:
    """How many parameters a past run's space shares with ``space`` (by name)."""
    if not signature:
        return 0
    return len(set(signature) & set(space.names))


def choose(
    candidates: list[Candidate],
    space: SearchSpace,
    defaults: dict[str, Any],
    top_k: int,
) -> list[Candidate]:
    """Fit candidates into ``space`` and queue distinct ones: every explicit source (``from_file``,
    ``from_runs``) first, then up to ``top_k`` similar runs by distance, then validation loss. Every candidate
    gets a verdict."""
    order = sorted(
        candidates,
        key=lambda c: (
            c.source == "similar",
            c.distance if c.distance is not None else math.inf,
            c.val_loss if c.val_loss is not None else math.inf,
        ),
    )
    seen: dict[str, str] = {}
    similar_queued = 0  # top_k limits configs found by similarity; the ones named explicitly come on top
    for candidate in order:
        if candidate.verdict:  # already rejected while loading
            continue
        if candidate.source == "similar" and similar_queued >= top_k:
            candidate.verdict = f"not chosen: beyond top_k={top_k}"
            continue
        fitted, notes = space.fit(candidate.params, defaults)
        candidate.adaptations = notes
        key = json.dumps(fitted, sort_keys=True, default=str)
        if key in seen:
            candidate.verdict = f"duplicate of {seen[key]} after adaptation"
            continue
        seen[key] = candidate.run_id
        candidate.queued_params = fitted
        candidate.verdict = "queued" + (" (adapted)" if notes else "")
        similar_queued += candidate.source == "similar"
    return order
