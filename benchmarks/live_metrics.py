"""Cost of live per-epoch metrics: ``models.fit`` without a callback against the same training logging its epochs to
an MLflow run on SQLite as the pipeline does (``watch_training``: batched, one write per 5 s and at the end), and
against a write per epoch (what batching avoids).

Short epochs are the worst case (the write is a fixed cost per epoch); runs alternate, best of ``--repeats`` each.
Prints a Markdown table of seconds, the ratio to no logging, and the seconds spent inside the writes themselves (what
the ratio is made of, and steady where other work on the machine makes the wall-clock ratio noisy).

    .venv/bin/python benchmarks/live_metrics.py            # about 2 minutes on 2 CPU cores
    .venv/bin/python benchmarks/live_metrics.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from throughput import data

from automl.models import ModelShape, TrainSettings, build_model, fit, get_family, pick_device
from automl.tasks.tracking.live_metrics import LiveEpochMetrics

CASES = {  # name -> (family, shape, params, rows, batch size, epochs)
    "mlp 32x1, 256 rows": ("mlp", ModelShape(8, 1), {"hidden_size": 32, "num_layers": 1}, 256, 64, 200),
    "lstm 64x2, lookback 24": ("lstm", ModelShape(1, 1, 24), {"hidden_size": 64, "num_layers": 2}, 1500, 32, 80),
}


class _TimedLive(LiveEpochMetrics):
    """Counts the writes and the seconds spent in them."""

    writes, seconds = 0, 0.0

    def flush(self) -> None:
        started = time.perf_counter()
        had = bool(self._pending)
        super().flush()
        if had:
            _TimedLive.writes += 1
            _TimedLive.seconds += time.perf_counter() - started


def train_once(case: tuple, run_id: str | None, flush_seconds: float) -> float:
    family, shape, params, rows, batch, epochs = case
    train, val = data(shape, rows)
    model = build_model(get_family(family), shape, {**get_family(family).defaults, **params}, 0)
    settings = TrainSettings(epochs=epochs, lr=1e-3, batch_size=batch, seed=0)
    started = time.perf_counter()
    if run_id is None:
        fit(model, train, val, settings, pick_device("cpu"))
    else:
        live = _TimedLive(run_id, flush_seconds=flush_seconds)
        fit(model, train, val, settings, pick_device("cpu"), on_epoch=live)
        live.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        client = MlflowClient()
        experiment = client.create_experiment("live_metrics")
        print("| case | epochs | no logging s | batched (5 s) s | ratio | writes, in them s | per epoch s | ratio |")
        print("|---|---|---|---|---|---|---|---|")
        for name, case in CASES.items():
            case = (*case[:5], 20 if args.quick else case[5])
            best = {"none": [], "batched": [], "per_epoch": []}
            train_once(case, None, 0)  # warm-up: torch's first use
            batched_writes = []
            for _ in range(repeats):
                best["none"].append(train_once(case, None, 0))
                _TimedLive.writes, _TimedLive.seconds = 0, 0.0
                best["batched"].append(train_once(case, client.create_run(experiment).info.run_id, 5.0))
                batched_writes.append((_TimedLive.writes, _TimedLive.seconds))
                best["per_epoch"].append(train_once(case, client.create_run(experiment).info.run_id, 0.0))
            writes, in_writes = min(batched_writes, key=lambda w: w[1])
            none, batched, per_epoch = (min(best[k]) for k in ("none", "batched", "per_epoch"))
            print(
                f"| {name} | {case[5]} | {none:.2f} | {batched:.2f} | {batched / none:.3f} |"
                f" {writes}, {in_writes:.3f} | {per_epoch:.2f} | {per_epoch / none:.3f} |"
            )


if __name__ == "__main__":
    main()
