"""Transformer-encoder regressor for time-series windows: (batch, lookback, features) -> (batch, horizon)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from models._family import COMMON_LIMITS, ModelFamily, ModelShape, ParamLimit
from models._series import relative_to_last


class TransformerRegressor(nn.Module):
    """Projects each step (relative to the window's last step) to ``d_model``, adds a learned position
    embedding, encodes, and reads the last step's change from the last observed value."""

    def __init__(
        self,
        n_features: int,
        horizon: int,
        lookback: int,
        d_model: int,
        nhead: int,
        num_layers: int,
        dim_feedforward: int,
        dropout: float,
    ):
        super().__init__()
        self.proj = nn.Linear(n_features, d_model)
        self.position = nn.Parameter(torch.zeros(1, lookback, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=dim_feedforward, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, horizon)

    def forward(self, x: Tensor) -> Tensor:
        relative, last = relative_to_last(x)
        h = self.encoder(self.proj(relative) + self.position[:, : x.shape[1]])
        return last + self.head(h[:, -1])


def build(shape: ModelShape, params: Mapping[str, Any]) -> TransformerRegressor:
    if shape.lookback is None:
        raise ValueError("the transformer family needs a lookback")
    d_model, nhead = int(params["d_model"]), int(params["nhead"])
    if d_model % nhead:
        raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
    return TransformerRegressor(
        n_features=shape.n_features,
        horizon=shape.n_outputs,
        lookback=shape.lookback,
        d_model=d_model,
        nhead=nhead,
        num_layers=int(params["num_layers"]),
        dim_feedforward=int(params["dim_feedforward"]),
        dropout=float(params["dropout"]),
    )


FAMILY = ModelFamily(
    name="transformer",
    kind="series",
    build=build,
    defaults={
        "d_model": 64,
        "nhead": 4,
        "num_layers": 2,
        "dim_feedforward": 128,
        "dropout": 0.1,
        "lr": 1e-3,
        "batch_size": 64,
    },
    default_space={
        "d_model": {"type": "categorical", "choices": [32, 64, 128]},
        "nhead": {"type": "categorical", "choices": [2, 4]},
        "num_layers": {"type": "int", "low": 1, "high": 3},
        "dim_feedforward": {"type": "int", "low": 64, "high": 256, "step": 64},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    },
    limits={
        **COMMON_LIMITS,
        "d_model": ParamLimit("int", 1),
        "nhead": ParamLimit("int", 1),
        "num_layers": ParamLimit("int", 1),
        "dim_feedforward": ParamLimit("int", 1),
    },
)
