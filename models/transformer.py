"""Transformer-encoder regressor for time-series windows: (batch, lookback, features) -> (batch, horizon)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from automl.models._family import ModelShape
from automl.models._series import relative_to_last


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
