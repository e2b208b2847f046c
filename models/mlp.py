"""Multi-layer perceptron for tabular rows: (batch, features) -> (batch, 1) or (batch, n_classes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from models._family import COMMON_LIMITS, ModelFamily, ModelShape, ParamLimit


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


FAMILY = ModelFamily(
    name="mlp",
    kind="tabular",
    build=build,
    tasks=("regression", "classification"),
    defaults={
        "hidden_size": 64,
        "num_layers": 2,
        "dropout": 0.1,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "batch_size": 32,
    },
    default_space={
        "hidden_size": {"type": "int", "low": 32, "high": 256, "step": 32},
        "num_layers": {"type": "int", "low": 1, "high": 4},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    },
    limits={**COMMON_LIMITS, "hidden_size": ParamLimit("int", 1), "num_layers": ParamLimit("int", 1)},
)
