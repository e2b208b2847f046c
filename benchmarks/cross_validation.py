"""Cross-validation in the search (``search.cv``): does 5-fold selection make the chosen model's test error less
seed-dependent than holdout selection, and how much search time does per-fold pruning save?

Runs the full pipeline (real Prefect, MLflow and Optuna; warm start and registry off; the final stage compares with
the naive baseline only, so the search's choice is always the model tested, and trains it from scratch, as under
``search.cv`` it must) over several seeds on two small public
datasets that are not the demo files:

- ``diabetes``: scikit-learn's diabetes table (442 patients, 10 features, a disease-progression score; shipped
  with scikit-learn), an MLP;
- ``seasonal``: a daily series the benchmark generates (500 days; trend, weekly and yearly seasons, AR(1) noise
  and a level shift; fixed generator seed), an LSTM.

Methods, with the same number of sampled configs: ``holdout`` (one validation split), ``cv5`` (5 folds of the
default kind, per-fold pruning on, the default), ``cv5_no_pruning``, and for the series ``cv5_expanding`` (5
expanding folds instead of rolling-origin ones). The seed changes the sampler, the trainings and, for the table,
the split; each seed runs every method on the same split. Prints a Markdown table per dataset (median, spread of the
test error across seeds, search wall-clock and its ratio to ``cv5_no_pruning``) and saves the raw rows (CSV) and a
plot under ``benchmarks/results/``.

    .venv/bin/python benchmarks/cross_validation.py          # 20 configs x 5 seeds x 2 datasets: about 25 min
    .venv/bin/python benchmarks/cross_validation.py --quick  # a smoke run of the whole script: about 2 min
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from _setup import isolated_pipeline_home, pipeline_benchmark_parser, save_rows

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "holdout": ["search.cv.folds=1"],
    "cv5": ["search.cv.folds=5", "search.cv.pruning=true"],
    "cv5_no_pruning": ["search.cv.folds=5", "search.cv.pruning=false"],
    "cv5_expanding": ["search.cv.folds=5", "search.cv.kind=expanding"],  # series only: auto is rolling_origin
}
SERIES_ONLY = ("cv5_expanding",)
REFERENCE = "cv5_no_pruning"
# The final stage trains the chosen config from scratch for every method: under search.cv no trial kept weights on
# the train split to continue from (a holdout search's do), and the comparison is of the selection.
COMMON = [
    "warm_start.enabled=false",
    "registry.enabled=false",
    "final.baselines=[naive]",
    "final.init=scratch",
    "search.fidelity=none",
]


def datasets(folder: Path) -> dict[str, tuple[str, list[str]]]:
    """Each dataset's config and overrides, its data written under ``folder``."""
    from sklearn.datasets import load_diabetes

    diabetes = load_diabetes(as_frame=True).frame
    diabetes.to_csv(folder / "diabetes.csv", index=False)
    rng = np.random.default_rng(2026)
    n = 500
    noise = np.zeros(n)
    for t in range(1, n):
        noise[t] = 0.6 * noise[t - 1] + rng.normal(scale=0.5)
    t = np.arange(n)
    weekly = np.array([0.0, 0.4, 0.6, 0.8, 1.2, 2.5, 2.0])[t % 7] * 2
    level = 20 + 0.005 * t + 1.5 * np.sin(2 * np.pi * t / 365) + weekly + 1.5 * (t >= 300) + noise
    dates = pd.date_range("2022-01-01", periods=n, freq="D")
    pd.DataFrame({"day": dates.strftime("%Y-%m-%d"), "demand": level}).to_csv(folder / "seasonal.csv", index=False)
    return {
        "diabetes": (
            "mlp_tabular.yaml",
            [f"data.path={folder / 'diabetes.csv'}", "data.target=target", "data.task=regression", "search.epochs=20"],
        ),
        "seasonal": (
            "lstm_baseline.yaml",
            [
                f"data.path={folder / 'seasonal.csv'}",
                "data.target=demand",
                "data.time_column=day",
                "data.lookback=14",
                "search.epochs=5",
            ],
        ),
    }


def main() -> None:
    parser = pipeline_benchmark_parser(__doc__, trials=20, seeds=5)
    args = parser.parse_args()
    extra = []
    if args.quick:
        args.trials, args.seeds = 4, 2
        extra = ["search.epochs=1", "final.epochs=2"]
    work = isolated_pipeline_home("automl-bench-cv-")
    rows = []
    for name, (config, overrides) in datasets(work).items():
        methods = {m: v for m, v in METHODS.items() if m not in SERIES_ONLY or config == "lstm_baseline.yaml"}
        for seed in range(args.seeds):
            for method, settings in methods.items():  # interleaved, so machine noise hits every method alike
                rows.append(run_once(name, config, method, seed, args.trials, overrides + settings + extra))
                row = rows[-1]
                print(
                    f"{name} seed {seed} {method:<15} search {row['search_seconds']:6.1f}s  pruned {row['pruned']:2d}"
                    f"  best val {row['best_val_loss']:.5f}  test rmse {row['test_rmse']:.4f}",
                    file=sys.stderr,
                )
    saved = save_rows(rows, args.out, "cross_validation.csv")
    print(markdown_tables(rows, args.trials, args.seeds))
    plot(rows, saved.with_suffix(".png"))
    print(f"\nraw results: {saved}; plot: {saved.with_suffix('.png')}")


def run_once(dataset: str, config: str, method: str, seed: int, trials: int, overrides: list[str]) -> dict:
    from automl.flows.pipeline import automl_pipeline

    summary = automl_pipeline(
        config_path=str(REPO / "configs" / config),
        overrides=[f"seed={seed}", f"search.n_trials={trials}", *COMMON, *overrides],
    )
    return {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "complete": summary.trials.complete,
        "pruned": summary.trials.pruned,
        "search_seconds": summary.search_seconds,
        "best_val_loss": summary.best_val_loss,
        "cv_mean": summary.cv.mean if summary.cv else float("nan"),
        "cv_std": summary.cv.std if summary.cv else float("nan"),
        "test_rmse": summary.test_metrics["rmse"],
        "naive_rmse": summary.baseline_metrics["naive"]["rmse"],
        "best_params": str(summary.best_params),
    }


def markdown_tables(rows: list[dict], trials: int, seeds: int) -> str:
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]

        def of(method: str, key: str, among: list[dict] = mine) -> list[float]:
            return [r[key] for r in among if r["method"] == method]

        reference_wall = statistics.median(of(REFERENCE, "search_seconds"))
        reference_test = statistics.median(of(REFERENCE, "test_rmse"))
        lines += [
            f"\n### {dataset}: {trials} configs per search, {seeds} seeds (median; range in brackets)\n",
            "| method | test RMSE | spread of test RMSE over seeds (std) | search wall-clock (s) "
            f"| wall-clock vs {REFERENCE} | test RMSE vs {REFERENCE} | pruned configs |",
            "|---|---|---|---|---|---|---|",
        ]
        for method in [m for m in METHODS if of(m, "test_rmse")]:
            test, wall = of(method, "test_rmse"), of(method, "search_seconds")
            spread = statistics.stdev(test) if len(test) > 1 else float("nan")
            lines.append(
                f"| {method} | {statistics.median(test):.4f} ({min(test):.4f}–{max(test):.4f}) | {spread:.4f} "
                f"| {statistics.median(wall):.1f} ({min(wall):.1f}–{max(wall):.1f}) "
                f"| {statistics.median(wall) / reference_wall:.2f}x "
                f"| {statistics.median(test) / reference_test - 1:+.1%} "
                f"| {statistics.median(of(method, 'pruned')):.0f} |"
            )
        holdout, cv5, expanding = of("holdout", "test_rmse"), of("cv5", "test_rmse"), of("cv5_expanding", "test_rmse")
        if len(expanding) > 1:
            lines.append(
                f"\n{dataset}: expanding folds' test RMSE spread is {statistics.stdev(expanding):.4f} (median "
                f"{statistics.median(expanding):.4f}) against rolling-origin's {statistics.stdev(cv5):.4f} (median "
                f"{statistics.median(cv5):.4f})."
            )
        if len(holdout) > 1:
            narrower = statistics.stdev(cv5) < statistics.stdev(holdout)
            lines.append(
                f"\n{dataset}: 5-fold selection's test RMSE spread is {statistics.stdev(cv5):.4f} against holdout's "
                f"{statistics.stdev(holdout):.4f} ({'narrower' if narrower else 'NOT narrower'}); per-fold pruning "
                f"took {statistics.median(of('cv5', 'search_seconds')) / reference_wall:.0%} of the unpruned search's "
                f"wall-clock (target <= 60%) at {statistics.median(cv5) / reference_test - 1:+.1%} test RMSE "
                "(target within ±2%)."
            )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from automl.tasks.tracking.plotting import pyplot

    plt = pyplot()
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    figure, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    colours = dict(zip(METHODS, ("tab:grey", "tab:blue", "tab:orange", "tab:green"), strict=True))
    for column, dataset in enumerate(names):
        methods = [m for m in METHODS if any(r["dataset"] == dataset and r["method"] == m for r in rows)]
        for position, method in enumerate(methods):
            mine = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            for key, row_index in (("test_rmse", 0), ("search_seconds", 1)):
                values = [r[key] for r in mine]
                axes[row_index][column].scatter([position] * len(values), values, color=colours[method], alpha=0.7)
        for row_index, label in enumerate(("selected model's test RMSE", "search wall-clock (s)")):
            ax = axes[row_index][column]
            ax.set_xticks(range(len(methods)), methods, fontsize=8)
            ax.set_ylabel(label)
            ax.set_title(dataset if row_index == 0 else "")
    figure.suptitle("Holdout vs 5-fold selection, and per-fold pruning (one dot per seed)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
