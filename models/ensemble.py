"""A weighted ensemble of trained models as one torch module, so that everything that predicts with, saves or loads a
model (the trainer's ``predict``, the raw-data model, MLflow's pytorch flavour) takes an ensemble as it is.

Example:
    >>> ensemble = Ensemble([model_a, model_b], weights=[0.6, 0.4], classify=False)
    >>> ensemble(x)   # 0.6 * model_a(x) + 0.4 * model_b(x)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from automl.models.trainer import module_device


class Ensemble(nn.Module):
    """Members' outputs mixed by ``weights`` (normalised to sum to 1). Regression: the weighted mean of the members'
    values. Classification (``classify``): the weighted mean of the members' class probabilities, returned as
    log-probabilities, so that a softmax of the output (what a classifier's logits get) gives the mixture back and
    cross-entropy on it is the mixture's log loss."""

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float], classify: bool) -> None:
        super().__init__()
        if len(members) != len(weights) or not members:
            raise ValueError("an ensemble needs one weight per member, and at least one member")
        total = float(sum(weights))
        device = module_device(members[0])
        self.members = nn.ModuleList(member.to(device) for member in members)  # one device, the first member's
        self.register_buffer("weights", torch.tensor([w / total for w in weights], dtype=torch.float32, device=device))
        self.classify = classify

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([member(x) for member in self.members])  # (members, rows, outputs)
        weights = self.weights.view(-1, *([1] * (outputs.dim() - 1)))
        if self.classify:
            return torch.log((weights * torch.softmax(outputs, dim=-1)).sum(0).clamp_min(1e-12))
        return (weights * outputs).sum(0)
