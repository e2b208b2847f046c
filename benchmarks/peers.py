"""Peers, side by side: wall-clock and test error of a plain Optuna script, Ray Tune and our pipeline (its default
run, and a run with ``--budget`` set to a third of the faster peer's wall-clock), in one run, on the same split and
the same search space.

Datasets: the bundled weekly CO2 series (``configs/lstm_baseline.yaml`` as it is) and a generated half-hourly
electricity-demand series (12 weeks, 4,032 rows: daily and weekly seasonality, a slow trend, temperature-like AR(1)
noise and a few spikes; lookback 48, one day) that the benchmark writes to its temporary folder.

Contenders, launched one after another, each as its own process with its own fresh state (MLflow, Optuna, Prefect
home and database, Ray results) in a temporary folder; wall-clock is from launch to exit, start-up included, which
is what a user waits:

- ``optuna script``: TPE (seeded), 10 configs x 5 epochs on all the training data (objective: the last epoch's
  validation loss), then the best config retrained for at most 50 epochs with early stopping (patience 5) on
  validation loss, best weights restored;
- ``ray tune``: ``OptunaSearch`` (seeded) + ``ASHAScheduler`` over epochs (max 5, grace 1, reduction factor 3),
  10 configs, one CPU per trial (``ray.init(num_cpus=2)``), the same retraining. Needs the ``peers`` extra; without
  it the table says Ray was skipped, and the budget run gets a third of the Optuna script's wall-clock;
- ``ours (default)``: ``automl run configs/lstm_baseline.yaml --json`` with the config's defaults (12 configs, not
  the peers' 10: Hyperband over data subsamples, final training from the best trial's weights, next to the
  default-config and naive baselines), warm start and registry off, so that every run starts cold;
- ``ours (--budget)``: the same with ``--budget`` = floor(faster peer's wall-clock / 3) seconds.

The peers (``benchmarks/_peer_worker.py``) are what a user could write by hand: they train on the arrays of our own
data prep (same split, windows and scaling), build the config's model family with the sampled params, sample the
config's ``search.space``, and train with a plain torch loop (Adam, MSE, the config's gradient clipping, the sampled
batch size). Their test predictions are scored here with the pipeline's own functions (test RMSE in the target's
units; naive = the last observed value), so every number is comparable with ours.

Prints a Markdown table per dataset (wall-clock, test RMSE, naive RMSE, their ratio, wall-clock against the faster
peer) and whether the two targets are met; saves the raw rows (CSV) and a plot of test RMSE / naive RMSE against
wall-clock (PNG) under ``benchmarks/results/``.

    .venv/bin/pip install -c constraints.txt -e ".[peers]"     # Ray Tune, for this benchmark only
    .venv/bin/python benchmarks/peers.py                      # 2 datasets x 1 seed: roughly 25 min on 2 CPU cores
    .venv/bin/python benchmarks/peers.py --datasets co2_weekly --seeds 3
    .venv/bin/python benchmarks/peers.py --quick              # smoke run of the whole script: 5 to 10 min

``--trials`` is the peers' configs per search (10); our runs keep the config's ``search.n_trials``. Run it on a quiet
machine: torch's threads slow down many times over when other processes load the cores.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _setup import isolated_pipeline_home, pipeline_benchmark_parser, save_rows

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "lstm_baseline.yaml"
WORKER = Path(__file__).resolve().with_name("_peer_worker.py")
OPTUNA, RAY, DEFAULT, BUDGET = "optuna script", "ray tune", "ours (default)", "ours (--budget)"
DEFERRED = "ours (promotion: deferred)"
PEERS = {OPTUNA: "optuna", RAY: "ray"}  # contender -> the worker's peer
CONTENDERS = (OPTUNA, RAY, DEFAULT, BUDGET, DEFERRED)
COLD = ["warm_start.enabled=false", "registry.enabled=false"]
# A smoke run: tiny budgets (search.epochs and final.epochs hold for the peers too) and short windows.
QUICK = ["search.n_trials=3", "search.epochs=1", "final.epochs=2", "data.lookback=12"]
RAY_INSTALL = '.venv/bin/pip install -c constraints.txt -e ".[peers]"'
BUDGET_SLACK = 1.1  # the budget run "kept its budget" when it ended within 10% of it


def main() -> None:
    parser = pipeline_benchmark_parser(__doc__, trials=10, seeds=1)
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument(
        "--deferred",
        action="store_true",
        help="also our default run with search.promotion=deferred (a candidate against the default's ASHA)",
    )
    args = parser.parse_args()
    if args.quick:
        args.trials, args.seeds = 2, 1
    work = isolated_pipeline_home("automl-peers-")
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")  # this process imports Prefect (with data prep)
    with_ray = importlib.util.find_spec("ray") is not None
    if not with_ray:
        print(f"ray is not installed: Ray Tune is skipped ({RAY_INSTALL})", file=sys.stderr)
    rows = []
    for seed in range(args.seeds):
        for dataset in args.datasets:
            overrides = [*DATASETS[dataset](work, args.quick), f"seed={seed}", *COLD, *(QUICK if args.quick else [])]
            folder = work / f"{dataset}-seed{seed}"
            rows += compare(dataset, seed, overrides, args.trials, with_ray, folder, args.deferred)
    saved = save_rows(rows, args.out, "peers.csv")
    plot(rows, saved.with_suffix(".png"))
    print(table(rows, contenders_line(args.trials, args.quick), args.seeds, with_ray))
    print(f"\nraw results: {saved}; plot: {saved.with_suffix('.png')}")


# --- datasets --------------------------------------------------------------------------------------------------


def _co2_weekly(work: Path, quick: bool) -> list[str]:
    """The demo's series, as the shipped config reads it."""
    return []


def _electricity_demand(work: Path, quick: bool) -> list[str]:
    """A generated half-hourly electricity demand (GW), 12 weeks (4 in a quick run): morning and evening peaks,
    quieter weekends, a slow upward trend, a temperature-like AR(1) drift, noise and a few short spikes."""
    import pandas as pd

    rng = np.random.default_rng(11)
    n = 48 * 7 * (4 if quick else 12)
    t = np.arange(n)
    hour = (t % 48) / 2
    weekend = (t // 48) % 7 >= 5
    daily = 2.5 * np.exp(-((hour - 8.5) ** 2) / 3) + 3.5 * np.exp(-((hour - 18.5) ** 2) / 5) - 2.0 * (hour < 5.5)
    weather = np.zeros(n)
    for i in range(1, n):  # AR(1): a temperature anomaly that drifts over days
        weather[i] = 0.995 * weather[i - 1] + rng.normal(0, 0.12)
    spikes = (rng.random(n) < 0.003) * rng.exponential(3.0, n)
    demand = (
        30
        + np.where(weekend, 0.6, 1.0) * daily
        - 2.5 * weekend
        + 1.5 * t / n
        + weather
        + spikes
        + rng.normal(0, 0.3, n)
    )
    path = work / f"electricity_demand{'_quick' if quick else ''}.csv"
    times = pd.date_range("2024-01-01", periods=n, freq="30min")
    pd.DataFrame({"timestamp": times, "demand_gw": demand.round(3)}).to_csv(path, index=False)
    return [f"data.path={path}", "data.target=demand_gw", "data.time_column=timestamp", "data.lookback=48"]


DATASETS: dict[str, Callable[[Path, bool], list[str]]] = {
    "co2_weekly": _co2_weekly,
    "electricity_demand": _electricity_demand,
}
UNITS = {"co2_weekly": "ppm", "electricity_demand": "GW"}


# --- one comparison --------------------------------------------------------------------------------------------


def compare(
    dataset: str, seed: int, overrides: list[str], peer_configs: int, with_ray: bool, folder: Path, deferred: bool
) -> list:
    """The peers, then our default run, then ours with a third of the faster peer's wall-clock, on one dataset."""
    from automl.configs import load_config
    from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
    from automl.tasks.final_train.baselines import naive_predictions
    from automl.tasks.final_train.evaluation import test_targets
    from automl.tasks.final_train.metrics import score

    cfg = load_config(CONFIG, overrides)
    if cfg.training.optimizer != "adam" or cfg.training.loss not in ("auto", "mse"):
        raise SystemExit("peers.py: the peers train with Adam on MSE; the config must too")
    checked = load_and_check(cfg)
    prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
    job = _write_job(cfg, prepared, folder, peer_configs)
    naive = score(prepared.task, test_targets(prepared), naive_predictions(prepared))["rmse"]
    base = {"dataset": dataset, "seed": seed}
    rows = []
    for contender, peer in PEERS.items():
        if peer == "ray" and not with_ray:
            continue
        predictions = folder / f"{peer}-test-predictions.npy"
        wall, result = launch(contender, [sys.executable, str(WORKER), peer, str(job), str(predictions)], folder)
        test = prepared.to_original_units(np.load(predictions))
        rmse = score(prepared.task, test_targets(prepared), test)["rmse"]
        rows.append(_row(base, contender, wall, rmse, naive, result))
    budget = max(1, math.floor(min(r["wall_clock"] for r in rows) / 3))
    automl = str(Path(sys.executable).with_name("automl"))
    settings = [arg for o in overrides for arg in ("--set", o)]
    ours = [(DEFAULT, []), (BUDGET, ["--budget", str(budget)])]
    if deferred:
        ours.append((DEFERRED, ["--set", "search.promotion=deferred"]))
    for contender, extra in ours:
        wall, summary = launch(contender, [automl, "run", str(CONFIG), "--json", *settings, *extra], folder)
        ours_naive = summary["baseline_metrics"]["naive"]["rmse"]
        if not math.isclose(ours_naive, naive, rel_tol=1e-6):
            print(f"warning: naive RMSE differs: pipeline {ours_naive} vs benchmark {naive}", file=sys.stderr)
        result = {
            "configs": sum(summary["trials"].values()),
            "stopped_early": summary["trials"]["pruned"],
            "best_params": summary["best_params"],
            "best_val_loss": summary["best_val_loss"],
            "chosen": summary["chosen"],
            "search_seconds": summary["stage_seconds"]["search"],
            "final_seconds": summary["stage_seconds"]["final_train"],
        }
        print(
            f"  {contender}: search {result['search_seconds']:.1f}s, final {result['final_seconds']:.1f}s, "
            f"the {'tuned config' if summary['chosen'] == 'tuned' else 'default config'} went on",
            file=sys.stderr,
        )
        rmse = summary["test_metrics"]["rmse"]
        rows.append(_row(base, contender, wall, rmse, naive, result, budget if contender == BUDGET else None))
    return rows


def _row(
    base: dict, contender: str, wall: float, rmse: float, naive: float, result: dict, budget: int | None = None
) -> dict:
    """One contender's result; ``result`` has its configs, how many stopped early, its best params and their
    validation loss."""
    print(
        f"{base['dataset']} seed {base['seed']} {contender:<16} {wall:6.1f}s  test rmse {rmse:.5g} (naive {naive:.5g})",
        file=sys.stderr,
    )
    return {
        **base,
        "contender": contender,
        "wall_clock": wall,
        "test_rmse": rmse,
        "naive_rmse": naive,
        "rmse_vs_naive": rmse / naive,
        "budget": budget,
        "configs": result["configs"],
        "stopped_early": result["stopped_early"],
        "best_val_loss": result["best_val_loss"],
        "best_params": json.dumps(result["best_params"]),
        "chosen": result.get("chosen", ""),  # ours: the model that went on (tuned | default_config)
        "search_seconds": result.get("search_seconds"),
        "final_seconds": result.get("final_seconds"),
    }


def _write_job(cfg, prepared, folder: Path, configs: int) -> Path:
    """The peers' job: our data prep's arrays, the config's model family, search space and budgets."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "prepared.npz"
    np.savez(
        data,
        train_X=prepared.train.X,
        train_y=prepared.train.y,
        val_X=prepared.val.X,
        val_y=prepared.val.y,
        test_X=prepared.test.X,
    )
    job = {
        "data": str(data),
        "family": cfg.model.family,
        "fixed": dict(cfg.model.params),
        "space": {name: spec.model_dump() for name, spec in (cfg.search.space or {}).items()},
        "configs": configs,
        "epochs": cfg.search.epochs,
        "final_epochs": cfg.final.epochs,
        "patience": cfg.final.patience,
        "grad_clip": cfg.training.grad_clip,
        "seed": cfg.seed,
        "storage": "ray-results",  # relative: under the contender's own state folder (its working directory)
    }
    path = folder / "job.json"
    path.write_text(json.dumps(job, indent=2))
    return path


def launch(contender: str, command: list[str], folder: Path) -> tuple[float, dict]:
    """Run one contender in its own state folder (also its working directory); its wall-clock from launch to exit
    and the JSON object on the last such line of its stdout. Its stderr goes to ``stderr.log`` there."""
    state = folder / f"state-{re.sub(r'[^a-z]+', '-', contender).strip('-')}"
    state.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AUTOML_", "RAY_"))}
    env.update(AUTOML_HOME=str(state), PREFECT_HOME=str(state / "prefect-home"), RAY_USAGE_STATS_ENABLED="0")
    log = state / "stderr.log"
    started = time.perf_counter()
    with log.open("w") as stderr:
        done = subprocess.run(command, cwd=state, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise SystemExit(f"{contender}: exit code {done.returncode}; last lines of {log}:\n{tail}")
    last = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    return wall, json.loads(last)


# --- report ----------------------------------------------------------------------------------------------------


def _stat(values: list[float], fmt: str) -> str:
    text = format(statistics.median(values), fmt)
    return text + (f" ({format(min(values), fmt)}–{format(max(values), fmt)})" if len(values) > 1 else "")


def targets(rows: list[dict]) -> tuple[list[bool], list[bool]]:
    """Per seed: (1) the budget run's RMSE/naive is at most the better peer's, and it ended within its budget
    (x 1.1); (2) the default run beats both peers' test RMSE in less wall-clock than the faster peer."""
    first, second = [], []
    for seed in sorted({r["seed"] for r in rows}):
        mine = {r["contender"]: r for r in rows if r["seed"] == seed}
        peers = [mine[c] for c in PEERS if c in mine]
        budget, default = mine[BUDGET], mine[DEFAULT]
        first.append(
            budget["rmse_vs_naive"] <= min(p["rmse_vs_naive"] for p in peers)
            and budget["wall_clock"] <= budget["budget"] * BUDGET_SLACK
        )
        second.append(
            all(default["test_rmse"] < p["test_rmse"] for p in peers)
            and default["wall_clock"] < min(p["wall_clock"] for p in peers)
        )
    return first, second


def contenders_line(peer_configs: int, quick: bool) -> str:
    """What each contender ran, in words, from the config the benchmark runs."""
    from automl.configs import load_config

    cfg = load_config(CONFIG, QUICK if quick else [])
    return (
        f"Peers: {peer_configs} configs x {cfg.search.epochs} epoch{'s' * (cfg.search.epochs > 1)}, the best "
        f"retrained for at most {cfg.final.epochs} epochs with early stopping (patience {cfg.final.patience}); "
        "ours (default): "
        f"`automl run {CONFIG.relative_to(REPO)}` as shipped ({cfg.search.n_trials} configs, {cfg.search.fidelity}), "
        "warm start and registry off; ours (--budget): the same with a third of the faster peer's wall-clock. "
        "Wall-clock: each contender's process from launch to exit, one after another, each with fresh state."
    )


def table(rows: list[dict], contenders: str, seeds: int, with_ray: bool) -> str:
    lines = [
        f"\n### Peers: LSTM, same split and search space, {seeds} seed{'s' * (seeds > 1)}"
        f"{' (median, range in brackets)' if seeds > 1 else ''}\n",
        f"{contenders}\n",
        "| dataset | contender | wall-clock (s) | test RMSE | naive RMSE | test RMSE / naive RMSE "
        "| wall-clock vs faster peer (x) |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        fastest = {
            seed: min(r["wall_clock"] for r in mine if r["seed"] == seed and r["contender"] in PEERS)
            for seed in {r["seed"] for r in mine}
        }
        for contender in CONTENDERS:
            group = [r for r in mine if r["contender"] == contender]
            label = f"{dataset} ({UNITS[dataset]})"
            if not group and contender == DEFERRED:
                continue
            if not group:
                lines.append(
                    f"| {label} | {contender} | skipped: ray is not installed (`{RAY_INSTALL}`); the budget is a "
                    "third of the Optuna script's wall-clock | | | | |"
                )
                continue
            if contender == BUDGET:
                contender = f"ours (--budget {_stat([r['budget'] for r in group], '.0f')} s)"
            lines.append(
                f"| {label} | {contender} | {_stat([r['wall_clock'] for r in group], '.1f')} "
                f"| {_stat([r['test_rmse'] for r in group], '.4g')} | {_stat([r['naive_rmse'] for r in group], '.4g')} "
                f"| {_stat([r['rmse_vs_naive'] for r in group], '.3f')} "
                f"| {_stat([r['wall_clock'] / fastest[r['seed']] for r in group], '.2f')} |"
            )
        first, second = targets(mine)
        peers = "the better peer's" if with_ray else "the Optuna script's (Ray skipped)"
        notes.append(
            f"- {dataset}: target 1, the budget run's RMSE / naive at most {peers}, ending within its budget "
            f"x {BUDGET_SLACK:g}: **{_verdict(first)}**; target 2, the default run beats "
            f"{'both peers' if with_ray else 'the Optuna script'} on test RMSE in less wall-clock than the faster "
            f"peer: **{_verdict(second)}**"
        )
    return "\n".join([*lines, "", *notes])


def _verdict(met: list[bool]) -> str:
    word = "met" if all(met) else "not met"
    return f"{word} ({sum(met)}/{len(met)} seeds)" if len(met) > 1 else word


def plot(rows: list[dict], path: Path) -> None:
    from automl.tasks.tracking.plotting import pyplot

    plt = pyplot()
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    style = dict(
        zip(
            CONTENDERS,
            (("tab:blue", "o"), ("tab:green", "s"), ("tab:orange", "*"), ("tab:red", "D"), ("tab:purple", "P")),
            strict=True,
        )
    )
    figure, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for contender in CONTENDERS:
            group = [r for r in rows if r["dataset"] == dataset and r["contender"] == contender]
            if group:
                colour, marker = style[contender]
                ax.scatter(
                    [r["wall_clock"] for r in group],
                    [r["rmse_vs_naive"] for r in group],
                    color=colour,
                    marker=marker,
                    s=90 if marker == "*" else 50,
                    label=contender,
                )
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":", label="naive (last value)")
        ax.set(xlabel="wall-clock, launch to exit (s)", ylabel="test RMSE / naive RMSE", title=dataset)
        ax.set_xlim(left=0)
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
