"""What the final stage returns to the summary: the chosen model's test metrics next to its baselines', and where
the model went."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.summary import RegisteredVersion


@dataclass
class FinalResult:
    """Test metrics of the tuned model and its baselines, and where the model went."""

    params: dict[str, Any]  # those of the chosen model
    chosen: str  # tuned, or default_config when the default config's validation loss was lower
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
