"""The peers of ``benchmarks/peers.py``, as a user could write them by hand: a plain Optuna script, and Ray Tune
(OptunaSearch + ASHA over epochs). Each searches the job's space, retrains the best config with early stopping,
saves its test predictions (in the scaled units the model outputs) and prints one JSON line. The benchmark writes
the job (the prepared arrays of our data prep, the search space, budgets) and launches this script, one process
per peer, so that its wall-clock is the script's own:

    .venv/bin/python benchmarks/_peer_worker.py optuna JOB.json PREDICTIONS.npy
    .venv/bin/python benchmarks/_peer_worker.py ray JOB.json PREDICTIONS.npy     # needs the `peers` extra

Imports only NumPy, torch, the search library and our model families (to build the same model).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from automl.models import ModelShape, build_model, get_family

RAY_CPUS = 2  # the machine's cores; one per trial, so two trials at a time


@dataclass(frozen=True)
class Job:
    """What ``benchmarks/peers.py`` asks of a peer (``job.json``)."""

    data: str  # .npz with train_X, train_y, val_X, val_y, test_X
    family: str
    fixed: dict[str, Any]  # model.params of the config (not searched)
    space: dict[str, dict[str, Any]]  # search.space as in the YAML: {name: {type, low, high, step, log | choices}}
    configs: int  # configs to sample
    epochs: int  # epochs per config
    final_epochs: int
    patience: int
    grad_clip: float | None
    seed: int
    storage: str  # a folder for the peer's own files (Ray's results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=["optuna", "ray"])
    parser.add_argument("job", type=Path)
    parser.add_argument("predictions", type=Path, help="where the retrained model's test predictions go (.npy)")
    args = parser.parse_args()
    job = Job(**json.loads(args.job.read_text()))
    started = time.perf_counter()
    search = optuna_search if args.peer == "optuna" else ray_search
    best_params, best_val, configs, stopped_early = search(job)
    search_seconds = time.perf_counter() - started
    data = load(job.data)
    model, val_losses = train(job, data, best_params, job.final_epochs, patience=job.patience)
    np.save(args.predictions, predict(model, data["test_X"]))
    print(
        json.dumps(
            {
                "peer": args.peer,
                "best_params": best_params,
                "best_val_loss": best_val,
                "configs": configs,
                "stopped_early": stopped_early,
                "search_seconds": search_seconds,
                "retrain_epochs": len(val_losses),
                "retrain_val_loss": min(val_losses),
                "retrain_seconds": time.perf_counter() - started - search_seconds,
            }
        )
    )


def load(path: str) -> dict[str, torch.Tensor]:
    with np.load(path) as arrays:
        return {name: torch.as_tensor(arrays[name], dtype=torch.float32) for name in arrays.files}


def train(
    job: Job,
    data: dict[str, torch.Tensor],
    params: dict[str, Any],
    epochs: int,
    patience: int | None = None,
    on_epoch=None,
) -> tuple[nn.Module, list[float]]:
    """Adam on MSE with gradient clipping, seeded mini-batches; with ``patience``, early stopping on validation
    loss. Returns the model with its best epoch's weights and the validation loss of every epoch."""
    family = get_family(job.family)
    full = {**family.defaults, **job.fixed, **params}
    x, y = data["train_X"], data["train_y"]
    model = build_model(family, ModelShape(x.shape[-1], y.shape[-1], x.shape[1]), full, job.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(full["lr"]), weight_decay=full.get("weight_decay", 0.0))
    loss_fn = nn.MSELoss()
    shuffle = torch.Generator().manual_seed(job.seed)
    val_losses: list[float] = []
    best_state, since_best = None, 0
    for epoch in range(epochs):
        model.train()
        for batch in torch.randperm(len(x), generator=shuffle).split(int(full["batch_size"])):
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            if job.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), job.grad_clip)
            optimizer.step()
        val_loss = float(np.mean((predict(model, data["val_X"]) - data["val_y"].numpy()) ** 2))
        val_losses.append(val_loss if math.isfinite(val_loss) else math.inf)
        if on_epoch is not None:
            on_epoch(epoch, val_losses[-1])
        if val_losses[-1] <= min(val_losses):
            best_state, since_best = copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
            if patience is not None and since_best >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, val_losses


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(chunk) for chunk in x.split(4096)]).numpy()


def optuna_search(job: Job) -> tuple[dict[str, Any], float, int, int]:
    """TPE, every config trained ``job.epochs`` epochs on all the training data; its last epoch's validation
    loss is the objective."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load(job.data)

    def objective(trial: optuna.Trial) -> float:
        params = {name: _suggest(trial, name, spec) for name, spec in job.space.items()}
        _, val_losses = train(job, data, params, job.epochs)
        print(f"optuna: trial {trial.number} val_loss {val_losses[-1]:.5g} {params}", file=sys.stderr)
        return val_losses[-1]

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=job.seed))
    study.optimize(objective, n_trials=job.configs)
    return study.best_params, study.best_value, len(study.trials), 0


def _suggest(trial, name: str, spec: dict[str, Any]) -> Any:
    if spec["type"] == "int":
        return trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False))
    if spec["type"] == "float":
        return trial.suggest_float(name, spec["low"], spec["high"], step=spec.get("step"), log=spec.get("log", False))
    return trial.suggest_categorical(name, spec["choices"])


def ray_search(job: Job) -> tuple[dict[str, Any], float, int, int]:
    """Ray Tune: OptunaSearch (TPE, seeded) proposes, ASHA stops configs early over epochs (max ``job.epochs``,
    grace 1 epoch, reduction factor 3); one CPU per trial. The best config is the one with the lowest validation
    loss at its last reported epoch (Ray's default)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)

    def trainable(config: dict[str, Any]) -> None:
        train(job, load(job.data), config, job.epochs, on_epoch=lambda _, loss: tune.report({"val_loss": loss}))

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={name: _domain(spec) for name, spec in job.space.items()},
        tune_config=tune.TuneConfig(
            metric="val_loss",
            mode="min",
            search_alg=OptunaSearch(seed=job.seed),
            scheduler=ASHAScheduler(max_t=job.epochs, grace_period=1, reduction_factor=3),
            num_samples=job.configs,
        ),
        run_config=tune.RunConfig(name="peer", storage_path=str(Path(job.storage).resolve()), verbose=0),
    )
    results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} Ray Tune trials failed; first: {results.errors[0]}")
    best = results.get_best_result()
    stopped = sum(1 for r in results if r.metrics.get("training_iteration", 0) < job.epochs)
    best_params = {name: best.config[name] for name in job.space}
    ray.shutdown()
    return best_params, float(best.metrics["val_loss"]), len(results), stopped


def _domain(spec: dict[str, Any]):
    from ray import tune

    if spec["type"] == "int":
        if spec.get("log"):
            return tune.lograndint(spec["low"], spec["high"] + 1)  # upper bound exclusive
        return tune.qrandint(spec["low"], spec["high"], spec.get("step", 1))  # upper bound inclusive
    if spec["type"] == "float":
        if spec.get("log"):
            return tune.loguniform(spec["low"], spec["high"])
        if spec.get("step"):
            return tune.quniform(spec["low"], spec["high"], spec["step"])
        return tune.uniform(spec["low"], spec["high"])
    return tune.choice(spec["choices"])


if __name__ == "__main__":
    main()
