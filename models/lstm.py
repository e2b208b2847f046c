"""LSTM regressor for time-series windows: (batch, lookback, features) -> (batch, horizon)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from automl.models._family import ModelShape
from automl.models._series import relative_to_last


class LSTMRegressor(nn.Module):
    """Stacked LSTM over the window (relative to its last step); the last hidden state feeds a linear head
    giving, per horizon step, the change from the last observed value."""

    def __init__(self, n_features: int, horizon: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(
            n_features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, horizon)

    def forward(self, x: Tensor) -> Tensor:
        relative, last = relative_to_last(x)
        out, _ = self.lstm(relative)
        return last + self.head(self.dropout(out[:, -1]))


def build(shape: ModelShape, params: Mapping[str, Any]) -> LSTMRegressor:
    return LSTMRegressor(
        n_features=shape.n_features,
        horizon=shape.n_outputs,
        hidden_size=int(params["hidden_size"]),
        num_layers=int(params["num_layers"]),
        dropout=float(params["dropout"]),
    )
