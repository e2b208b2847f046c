"""Multi-layer perceptron for tabular rows: (batch, features) -> (batch, 1) or (batch, n_classes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from automl.models._family import ModelShape


class MLP(nn.Module):
    """``num_layers`` hidden layers of ``hidden_size`` units with ReLU and dropout, then a linear head."""

    def __init__(self, n_features: int, n_outputs: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_size
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def build(shape: ModelShape, params: Mapping[str, Any]) -> MLP:
    return MLP(
        n_features=shape.n_features,
        n_outputs=shape.n_outputs,
        hidden_size=int(params["hidden_size"]),
        num_layers=int(params["num_layers"]),
        dropout=float(params["dropout"]),
    )
