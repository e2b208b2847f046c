"""Trainer throughput: training samples per second of ``models.fit`` against a minimal hand-written torch loop on
the same model, data, optimiser, batch size and epochs (both validate once per epoch, as the trainer does).

Runs the two alternately, best of several repeats each, for the demo's LSTM (lookback 24, 1 feature) and an MLP on
a tabular shape, at the default gradient clipping and without it. Prints a Markdown table of samples/s and the
ratio (target: the trainer at >= 0.9x the hand-written loop).

    .venv/bin/python benchmarks/throughput.py            # about 2 minutes on 2 CPU cores
    .venv/bin/python benchmarks/throughput.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from automl.models import ModelShape, TrainSettings, build_model, fit, get_family

CASES = {  # name -> (family, shape, params, rows, batch size)
    "lstm 64x2, lookback 24": ("lstm", ModelShape(1, 1, 24), {"hidden_size": 64, "num_layers": 2}, 1500, 32),
    "mlp 128x2, 20 features": ("mlp", ModelShape(20, 1), {"hidden_size": 128, "num_layers": 2}, 8000, 64),
}


def data(shape: ModelShape, rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    if shape.lookback:
        x = rng.standard_normal((rows, shape.lookback, shape.n_features)).astype(np.float32)
    else:
        x = rng.standard_normal((rows, shape.n_features)).astype(np.float32)
    y = (x.reshape(rows, -1).mean(axis=1, keepdims=True) + 0.1 * rng.standard_normal((rows, 1))).astype(np.float32)
    split = int(rows * 0.8)
    return (x[:split], y[:split]), (x[split:], y[split:])


def hand_written(model: nn.Module, train, val, epochs: int, batch: int, lr: float, clip: float | None) -> float:
    """The loop one writes by hand: shuffle, batches, forward, backward, (clip,) step; validate each epoch."""
    x, y = torch.as_tensor(train[0]), torch.as_tensor(train[1])
    xv, yv = torch.as_tensor(val[0]), torch.as_tensor(val[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = nn.MSELoss()
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            optimizer.zero_grad()
            loss = criterion(model(x[idx]), y[idx])
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            criterion(model(xv), yv).item()
    return time.perf_counter() - started


def ours(model: nn.Module, train, val, epochs: int, batch: int, lr: float, clip: float | None) -> float:
    settings = TrainSettings(epochs=epochs, lr=lr, batch_size=batch, grad_clip=clip)
    started = time.perf_counter()
    fit(model, train, val, settings, torch.device("cpu"))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 1, 1
    lines = [
        f"\n### Trainer throughput ({torch.get_num_threads()} torch threads, {args.epochs} epochs, best of "
        f"{args.repeats})\n",
        "| model | grad clip | hand-written (samples/s) | models.fit (samples/s) | fit vs hand-written |",
        "|---|---|---|---|---|",
    ]
    for name, (family_name, shape, params, rows, batch) in CASES.items():
        family = get_family(family_name)
        train, val = data(shape, rows)
        for clip in (1.0, None):
            best = {"hand": float("inf"), "ours": float("inf")}
            for _ in range(args.repeats):  # alternating, so machine noise hits both alike
                for label, loop in (("hand", hand_written), ("ours", ours)):
                    model = build_model(family, shape, {**family.defaults, **params, "dropout": 0.0}, seed=0)
                    best[label] = min(best[label], loop(model, train, val, args.epochs, batch, 1e-3, clip))
            samples = len(train[0]) * args.epochs
            hand, mine = samples / best["hand"], samples / best["ours"]
            lines.append(f"| {name} | {clip or 'off'} | {hand:,.0f} | {mine:,.0f} | {mine / hand:.2f}x |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
