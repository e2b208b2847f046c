"""Test data and configs shared by several test modules."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]


def make_series(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """A weekly series with trend, yearly seasonality, noise, a covariate and a few gaps."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 10 + 0.02 * t + np.sin(2 * np.pi * t / 52) + 0.1 * rng.standard_normal(n)
    frame = pd.DataFrame(
        {
            "week": pd.date_range("2000-01-01", periods=n, freq="W-SAT").strftime("%Y-%m-%d"),
            "sales": y,
            "temperature": np.cos(2 * np.pi * t / 52) + 0.05 * rng.standard_normal(n),
        }
    )
    frame.loc[[5, 6, 100], "sales"] = np.nan
    return frame


TINY_SPACE = {
    "hidden_size": {"type": "int", "low": 8, "high": 16, "step": 8},
    "num_layers": {"type": "int", "low": 1, "high": 2},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
    "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [16, 32]},
}


def write_config(folder: Path, data_path: Path, **sections) -> Path:
    """A tiny LSTM pipeline config (seconds to run) with ``sections`` merged over it."""
    cfg = {
        "name": "tiny_lstm",
        "seed": 7,
        "model": {"family": "lstm"},
        "data": {"path": str(data_path), "target": "sales", "time_column": "week", "lookback": 8, "horizon": 2},
        # full fidelity unless a test asks for rungs: the tiny searches count their trials exactly
        "search": {"n_trials": 4, "epochs": 2, "fidelity": "none", "space": TINY_SPACE},
        "final": {"epochs": 3, "patience": 2},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(process: subprocess.Popen, first: signal.Signals = signal.SIGINT) -> None:
    """Stop a server started with ``start_new_session=True``: ``first`` to its process group, SIGKILL after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, first)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
