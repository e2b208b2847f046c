"""Search efficiency: does multi-fidelity reach the test error of a plain Optuna TPE search at full fidelity in a
fraction of its search time, on series it was not tuned on?

Two series: the bundled weekly CO2 (2,284 rows, lookback 52) and a generated hourly electricity-demand series
(4,032 rows: a daily cycle with two peaks, a weekly one, a trend, a temperature covariate and noise; lookback 24).
The full pipeline runs (real Prefect, MLflow and Optuna; warm start and registry off) with the shipped LSTM space,
at each number of configs and seed, for the methods:

- ``tpe_full``: Optuna TPE, every config trained on all the data (the plain-script way; the reference);
- ``tpe_mf``: Optuna TPE with the shipped multi-fidelity defaults (``fidelity: auto``: Hyperband over 1/9, 1/3 and
  all of the data with the brackets the search can fill; promoted configs continue from their rung checkpoint;
  cost-aware promotion);
- ``hyperopt_mf``: hyperopt's TPE with the same;
- ``tpe_mf_deferred``: ``tpe_mf`` with ``search.promotion: deferred`` (no promotion before a rung holds eta results);
- ``tpe_mf_no_cost``: ``tpe_mf`` without cost-aware promotion;
- ``tpe_mf_restart``: ``tpe_mf`` without continuation (every rung trains from scratch, as before);
- ``tpe_mf_sh``: ``tpe_mf`` with plain successive halving (one bracket, whatever the number of configs).

It prints one Markdown table (median and range over seeds of the search seconds and test RMSE as ratios to
``tpe_full`` of the same seed; the share of trained epochs, in passes over all the data, spent on configs that were
pruned; what a config that reached all the data cost, in full trainings), the learning-rate range test's suggestion
against the lrs the full searches chose, and saves the raw rows (CSV, appended run by run: a stopped benchmark
resumes where it stopped) and a plot under ``benchmarks/results/``. Run it alone on the machine.

    .venv/bin/python benchmarks/search_efficiency.py                     # 9, 20, 50 configs x 3 seeds: hours
    .venv/bin/python benchmarks/search_efficiency.py --sizes 9 20 --methods tpe_full tpe_mf hyperopt_mf
    .venv/bin/python benchmarks/search_efficiency.py --quick             # a smoke run of the whole script
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _setup import RESULTS, isolated_pipeline_home

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "lstm_baseline.yaml"
DEFAULTS = ["search.fidelity=auto", "search.promotion=asha", "search.continuation=true", "search.cost_aware=true"]
METHODS = {
    "tpe_full": ["search.backend=optuna", "search.sampler=tpe", "search.fidelity=none"],
    "tpe_mf": ["search.backend=optuna", "search.sampler=tpe", *DEFAULTS],
    "hyperopt_mf": ["search.backend=hyperopt", "search.sampler=tpe", *DEFAULTS],
    "tpe_mf_deferred": ["search.backend=optuna", "search.sampler=tpe", *DEFAULTS, "search.promotion=deferred"],
    "tpe_mf_no_cost": ["search.backend=optuna", "search.sampler=tpe", *DEFAULTS, "search.cost_aware=false"],
    "tpe_mf_restart": ["search.backend=optuna", "search.sampler=tpe", *DEFAULTS, "search.continuation=false"],
    "tpe_mf_sh": ["search.backend=optuna", "search.sampler=tpe", *DEFAULTS, "search.fidelity=successive_halving"],
}
REFERENCE = "tpe_full"
CSV = "search_efficiency.csv"
# The final stage trains up to this many epochs (shipped: 50, with the same early stopping), the same for every
# method, so that the whole benchmark fits in a few hours on 2 cores.
FINAL_EPOCHS = 20


def demand_series(path: Path, rows: int = 4032, seed: int = 0) -> Path:
    """An hourly electricity-demand-like series with a daily and a weekly cycle (generated, so nothing is
    downloaded): two daily peaks, lower weekends, a slow trend, demand rising with temperature, and noise."""
    rng = np.random.default_rng(seed)
    hours = np.arange(rows)
    hour, day = hours % 24, (hours // 24) % 7
    temperature = 12 + 2.4 * np.sin(2 * np.pi * (hour - 9) / 24) + 6 * np.sin(2 * np.pi * hours / (24 * 90))
    temperature += rng.normal(0, 1.5, rows)
    daily = 0.6 * np.exp(-((hour - 8) ** 2) / 6) + 0.9 * np.exp(-((hour - 19) ** 2) / 8)
    load = 3 + daily * np.where(day >= 5, 0.7, 1.0) - 0.3 * (day >= 5) + 0.0002 * hours
    load += 0.04 * np.maximum(temperature - 15, 0) + rng.normal(0, 0.08, rows)
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2026-01-05", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M"),
            "load": np.round(load, 4),
            "temperature": np.round(temperature, 2),
        }
    )
    frame.to_csv(path, index=False)
    return path


def datasets(work: Path) -> dict[str, list[str]]:
    """The series, as overrides of the shipped LSTM config."""
    demand = demand_series(work / "demand.csv")
    return {
        "co2": [],
        "demand": [
            f"data.path={demand}",
            "data.target=load",
            "data.time_column=timestamp",
            "data.lookback=24",
            "data.horizon=1",
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[9, 20, 50], help="configs per search")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", choices=["co2", "demand"], default=["co2", "demand"])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming the CSV")
    parser.add_argument("--report", action="store_true", help="print the tables from the CSV; run nothing")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the script, measures nothing")
    args = parser.parse_args()
    methods = [m for m in METHODS if m in args.methods or m == REFERENCE]
    extra = []
    if args.quick:
        args.sizes, args.seeds, args.datasets = [3], 1, ["demand"]
        extra = ["search.epochs=1", "final.epochs=2", "data.lookback=12"]
        args.out = str(Path(args.out) / "quick")

    work = isolated_pipeline_home("automl-bench-")
    out = Path(args.out) / CSV
    out.parent.mkdir(parents=True, exist_ok=True)
    done = pd.read_csv(out) if out.exists() and not args.fresh else pd.DataFrame()
    if args.fresh and out.exists():
        out.unlink()
    keys = set(zip(done["dataset"], done["configs"], done["seed"], done["method"], strict=True)) if len(done) else set()
    series = datasets(work)
    for dataset in [] if args.report else args.datasets:
        for size in args.sizes:
            for seed in range(args.seeds):
                for method in methods:  # interleaved, so machine noise hits every method alike
                    if (dataset, size, seed, method) in keys:
                        continue
                    row = run_once(dataset, method, seed, size, series[dataset] + METHODS[method] + extra)
                    pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)
                    print(
                        f"{dataset} {size:>3} configs seed {seed} {method:<16} search {row['search_seconds']:7.1f}s "
                        f"test rmse {row['test_rmse']:.4f} pruned share {row['pruned_share']:.0%}",
                        file=sys.stderr,
                    )
    rows = pd.read_csv(out)
    if not args.report:
        rows = rows[rows["dataset"].isin(args.datasets) & rows["configs"].isin(args.sizes)]
    print(markdown_table(rows, methods))
    print(lr_range_table(rows, series, args.datasets))
    plot(rows, methods, out.with_suffix(".png"))
    print(f"\nraw results: {out}; plot: {out.with_suffix('.png')}")


def run_once(dataset: str, method: str, seed: int, n_configs: int, overrides: list[str]) -> dict:
    from automl.configs import load_config
    from automl.flows.pipeline import automl_pipeline

    overrides = [
        f"seed={seed}",
        f"search.n_trials={n_configs}",
        "warm_start.enabled=false",
        "registry.enabled=false",
        f"final.epochs={FINAL_EPOCHS}",
        *overrides,
    ]
    epochs = load_config(CONFIG, overrides).search.epochs
    summary = automl_pipeline(config_path=str(CONFIG), overrides=overrides)
    spent = trained_passes(summary)
    full_cost = [passes for outcome, passes in spent if outcome == "complete"]
    total = sum(passes for _, passes in spent)
    return {
        "dataset": dataset,
        "configs": n_configs,
        "seed": seed,
        "method": method,
        "complete": summary.trials.complete,
        "pruned": summary.trials.pruned,
        "search_seconds": summary.search_seconds,
        "final_seconds": summary.stage_seconds.get("final_train", math.nan),
        "best_val_loss": summary.best_val_loss,
        "test_rmse": summary.test_metrics["rmse"],
        "best_lr": summary.best_params.get("lr", math.nan),
        "pruned_share": sum(p for o, p in spent if o == "pruned") / total if total else math.nan,
        # what a config reaching all the data trained, in passes over all the data, per full training's epochs
        "full_cost": statistics.median(full_cost) / epochs if full_cost else math.nan,
        "full_cost_max": max(full_cost) / epochs if full_cost else math.nan,
    }


def trained_passes(summary) -> list[tuple[str, float]]:
    """Per trial run of the search: its outcome and the epochs it trained, weighted by each rung's share of the data
    (passes over all the training data), read from MLflow."""
    from mlflow.tracking import MlflowClient

    from automl.tasks.tracking.catalog import OUTCOME, RUNG_CURVE_METRIC, RUNG_FRACTION_PARAM

    client = MlflowClient(summary.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(summary.experiment).experiment_id
    search = client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{summary.pipeline_run_id}' and tags.`automl.stage` = 'search'"
    )[0]
    trials = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{search.info.run_id}'", max_results=1000)
    spent = []
    for run in trials:
        passes, rung = 0.0, 0
        while (fraction := run.data.params.get(RUNG_FRACTION_PARAM.format(rung=rung))) is not None:
            curve = client.get_metric_history(run.info.run_id, RUNG_CURVE_METRIC.format(rung=rung))
            passes += len(curve) * float(fraction)
            rung += 1
        spent.append((run.data.tags.get(OUTCOME, ""), passes))
    return spent


def _ratio_stats(rows: pd.DataFrame, method: str, key: str) -> tuple[float, float, float]:
    """Median, min and max over seeds of ``key`` divided by the reference's of the same seed."""
    mine = rows[rows["method"] == method].set_index("seed")[key]
    reference = rows[rows["method"] == REFERENCE].set_index("seed")[key]
    ratios = (mine / reference).dropna()
    if ratios.empty:
        return math.nan, math.nan, math.nan
    return float(ratios.median()), float(ratios.min()), float(ratios.max())


def markdown_table(rows: pd.DataFrame, methods: list[str]) -> str:
    lines = [
        "\n| series | configs | method | seeds | search s (median) | search time × tpe_full | test RMSE × tpe_full "
        "| pruned configs | epochs on pruned configs | a config reaching all the data, in full trainings |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, size), group in rows.groupby(["dataset", "configs"], sort=True):
        for method in methods:
            mine = group[group["method"] == method]
            if mine.empty:
                continue
            time_ratio, time_low, time_high = _ratio_stats(group, method, "search_seconds")
            test_ratio, test_low, test_high = _ratio_stats(group, method, "test_rmse")
            full = mine["full_cost"].dropna()
            full_text = f"{full.median():.2f} (max {mine['full_cost_max'].max():.2f})" if not full.empty else "-"
            lines.append(
                f"| {dataset} | {size} | {method} | {len(mine)} | {mine['search_seconds'].median():.0f} "
                f"| {time_ratio:.2f} ({time_low:.2f}–{time_high:.2f}) "
                f"| {test_ratio:.3f} ({test_low:.3f}–{test_high:.3f}) "
                f"| {mine['pruned'].median():.0f} | {mine['pruned_share'].median():.0%} | {full_text} |"
            )
    return "\n".join(lines)


def lr_range_table(rows: pd.DataFrame, series: dict[str, list[str]], names: list[str]) -> str:
    """The range test on each series' default config against the lrs its full-fidelity searches chose."""
    from automl.configs import load_config
    from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
    from automl.tasks.search_stage.lr_range import find_lr

    lines = [
        "\n| series | range test's suggestion | clear descent | lrs the tpe_full searches chose | decades apart "
        "(median) |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        cfg = load_config(CONFIG, series[name])
        checked = load_and_check(cfg)
        prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
        result = find_lr(cfg.model, prepared, cfg.training, cfg.seed)
        chosen = rows[(rows["dataset"] == name) & (rows["method"] == REFERENCE)]["best_lr"].dropna().tolist()
        apart = statistics.median(abs(math.log10(result.suggestion / lr)) for lr in chosen) if chosen else math.nan
        lines.append(
            f"| {name} | {result.suggestion:.2e} | {'yes' if result.clear else 'no'} "
            f"| {', '.join(f'{lr:.1e}' for lr in chosen)} | {apart:.2f} |"
        )
    return "\n".join(lines)


def plot(rows: pd.DataFrame, methods: list[str], path: Path) -> None:
    from automl.tasks.tracking.plotting import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, dataset in zip(axes, ["co2", "demand"], strict=True):
        group = rows[rows["dataset"] == dataset]
        for method in methods[1:]:
            points = []
            for size in sorted(group["configs"].unique()):
                at = group[group["configs"] == size]
                time_ratio = _ratio_stats(at, method, "search_seconds")[0]
                test_ratio = _ratio_stats(at, method, "test_rmse")[0]
                if time_ratio == time_ratio:
                    points.append((time_ratio, test_ratio, size))
            if points:
                xs, ys, _ = zip(*points, strict=True)
                # one colour per method in both panels
                ax.plot(xs, ys, marker="o", label=method, color=f"C{methods.index(method)}")
                for x, y, size in points:
                    ax.annotate(str(size), (x, y), fontsize=7)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.axvline(1.0, color="grey", linewidth=0.8)
        ax.set(title=f"{dataset}: vs TPE at full fidelity (labels: configs)", xlabel="search time × tpe_full")
    axes[0].set_ylabel("test RMSE × tpe_full")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"total {time.time() - start:.0f}s", file=sys.stderr)
