"""What the final stage returns to the summary: the chosen model's test metrics next to its baselines', and where
the model went."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from automl.tasks.summary import EnsembleSummary, PromotionSummary, RefitSummary, RegisteredVersion

ENSEMBLE = "ensemble"  # FinalResult.chosen when the ensemble of the best configs went on


@dataclass
class FinalResult:
    """Test metrics of the chosen model and its baselines, the ensemble selection and the refit, and where the model
    went."""

    params: dict[str, Any]  # those of the chosen model
    chosen: str  # tuned, default_config (its validation loss was lower), or ensemble (lower still)
    chosen_note: str
    test_metrics: dict[str, float]  # the chosen model's
    baseline_metrics: dict[str, dict[str, float]]
    primary_metric: str
    model_uri: str
    registered_model: RegisteredVersion | None
    champion: bool
    champion_note: str
    epochs_run: int
    best_epoch: int
    val_loss: float
    run_id: str = ""
    curves: dict[str, list[float]] = field(default_factory=dict)
    single: str = "tuned"  # the single model that went on, or that the ensemble beat: tuned or default_config
    ensemble: EnsembleSummary | None = None  # the selection, kept or not; None when none was tried
    refit: RefitSummary | None = None  # with final.refit all: the registered weights are a refit on every row
    promotion: PromotionSummary | None = None  # the champion decision; None when the registry is disabled
