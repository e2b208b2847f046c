"""Population-based training (``search.strategy: pbt``) against the default search (TPE + Hyperband) at the same
total training epochs, and the learning-rate range test's suggestion against the best ``lr`` a full search found.

Runs the full pipeline (real Prefect, MLflow and Optuna; warm start and registry off; the final stage compares with
the naive baseline only, so the method's own model is the one tested) over several seeds on two datasets:

- ``co2``: the demo series (configs/lstm_baseline.yaml, weekly Mauna Loa CO2), an LSTM;
- ``diabetes``: scikit-learn's diabetes table (442 patients, 10 features; shipped with scikit-learn), an MLP.

Same total training epochs: for each seed the default search runs first, and its training is counted in full-data
epochs (every evaluation's epochs times its data fraction, from the study, plus the epochs its final stage trained).
PBT then gets that many epochs over its population (``search.pbt.epochs`` = total / population, rounded), for
populations of 8 (the default) and 4, ``interval_epochs`` 2; its final stage trains nothing (the best member's
weights are the model). Prints a Markdown table per dataset (median and range over seeds of the test RMSE,
wall-clock of search + final stage, epochs) and the range test's suggestion next to the best ``lr`` of each default
search; saves the raw rows (CSV) and a plot under ``benchmarks/results/``.

    .venv/bin/python benchmarks/pbt.py          # 3 seeds x 2 datasets: about 25 min
    .venv/bin/python benchmarks/pbt.py --quick  # a smoke run of the whole script: about 3 min
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import optuna
from _setup import isolated_pipeline_home, pipeline_benchmark_parser, save_rows

REPO = Path(__file__).resolve().parents[1]
POPULATIONS = (8, 4)  # the default, and half of it (at a 12-config search's epochs, 8 members get only ~6 each)
INTERVAL = 2
COMMON = ["warm_start.enabled=false", "registry.enabled=false", "final.baselines=[naive]"]
DEFAULT_SEARCH = ["search.strategy=sample", "search.sampler=tpe", "search.fidelity=hyperband"]


def datasets(folder: Path) -> dict[str, tuple[str, list[str]]]:
    from sklearn.datasets import load_diabetes

    load_diabetes(as_frame=True).frame.to_csv(folder / "diabetes.csv", index=False)
    return {
        "co2": ("lstm_baseline.yaml", []),
        "diabetes": (
            "mlp_tabular.yaml",
            [f"data.path={folder / 'diabetes.csv'}", "data.target=target", "data.task=regression", "search.epochs=20"],
        ),
    }


def main() -> None:
    parser = pipeline_benchmark_parser(__doc__, trials=12, seeds=3)
    args = parser.parse_args()
    extra = []
    if args.quick:
        args.trials, args.seeds = 4, 1
        extra = ["search.epochs=2", "final.epochs=2"]
    work = isolated_pipeline_home("automl-bench-pbt-")
    rows, ranges = [], []
    for name, (config, overrides) in datasets(work).items():
        ranges.append(range_test(name, config, overrides + extra))
        for seed in range(args.seeds):
            sample = run_once(name, config, "tpe_hyperband", seed, [*DEFAULT_SEARCH, *overrides, *extra], args.trials)
            rows.append(sample)
            for population in POPULATIONS:
                epochs = max(INTERVAL, round(sample["train_epochs"] / population))
                pbt = [
                    "search.strategy=pbt",
                    "search.fidelity=none",
                    f"search.pbt.population={population}",
                    f"search.pbt.interval_epochs={INTERVAL}",
                    f"search.pbt.epochs={epochs}",
                ]
                rows.append(run_once(name, config, f"pbt{population}", seed, [*overrides, *extra, *pbt], args.trials))
            for row in rows[-1 - len(POPULATIONS) :]:
                print(
                    f"{name} seed {seed} {row['method']:<14} {row['seconds']:6.1f}s  epochs {row['train_epochs']:6.1f}"
                    f"  best val {row['best_val_loss']:.5f}  test rmse {row['test_rmse']:.4f}  lr {row['best_lr']:.3g}",
                    file=sys.stderr,
                )
    saved = save_rows(rows, args.out, "pbt.csv")
    print(markdown_tables(rows, ranges, args.trials, args.seeds))
    plot(rows, saved.with_suffix(".png"))
    print(f"\nraw results: {saved}; plot: {saved.with_suffix('.png')}")


def run_once(dataset: str, config: str, method: str, seed: int, overrides: list[str], trials: int) -> dict:
    from automl.flows.pipeline import automl_pipeline

    summary = automl_pipeline(
        config_path=str(REPO / "configs" / config),
        overrides=[f"seed={seed}", f"search.n_trials={trials}", *COMMON, *overrides],
    )
    final_epochs = _final_epochs(summary)
    return {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "seconds": summary.stage_seconds["search"] + summary.stage_seconds["final_train"],
        "train_epochs": _search_epochs(summary) + final_epochs,
        "final_epochs": final_epochs,
        "best_val_loss": summary.best_val_loss,
        "test_rmse": summary.test_metrics["rmse"],
        "naive_rmse": summary.baseline_metrics["naive"]["rmse"],
        "best_lr": summary.best_params.get("lr", math.nan),
        "exploit_steps": summary.pbt.exploit_steps if summary.pbt else 0,
    }


def _search_epochs(summary) -> float:
    """Full-data epochs the search trained: each evaluation's epochs times its data fraction."""
    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage)
    if summary.strategy == "pbt":
        return float(sum(len(t.intermediate_values) for t in study.trials))
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    search = client.search_runs(
        [client.get_run(summary.pipeline_run_id).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{summary.pipeline_run_id}' and tags.`automl.stage` = 'search'",
    )[0]
    fractions = [float(f) for f in search.data.params["rung_fractions"].split(",")]
    epochs = int(search.data.params["epochs"])
    fraction_of = {round(f / fractions[0]): f for f in fractions}  # a rung's reported step (the scheduler's)
    return sum(epochs * fraction_of[step] for trial in study.trials for step in trial.intermediate_values)


def _final_epochs(summary) -> float:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    final = client.search_runs(
        [client.get_run(summary.pipeline_run_id).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{summary.pipeline_run_id}' and tags.`automl.stage` = 'final_train'",
    )[0]
    return final.data.metrics.get("epochs_run", 0.0)


def range_test(dataset: str, config: str, overrides: list[str]) -> dict:
    """The range test on the family's default config, as ``automl lr-find`` runs it."""
    from automl.configs import load_config
    from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
    from automl.tasks.search_stage.lr_range import find_lr

    cfg = load_config(REPO / "configs" / config, [*COMMON, *overrides])
    checked = load_and_check(cfg)
    prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
    suggestion = find_lr(cfg.model, prepared, cfg.training, cfg.seed).suggestion
    print(f"{dataset}: range test suggests lr {suggestion:.3g}", file=sys.stderr)
    return {"dataset": dataset, "suggested_lr": suggestion}


def markdown_tables(rows: list[dict], ranges: list[dict], trials: int, seeds: int) -> str:
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]

        def of(method: str, key: str, among: list[dict] = mine) -> list[float]:
            return [r[key] for r in among if r["method"] == method]

        reference_wall = statistics.median(of("tpe_hyperband", "seconds"))
        reference_test = statistics.median(of("tpe_hyperband", "test_rmse"))
        lines += [
            f"\n### {dataset}: TPE + Hyperband with {trials} configs vs PBT with "
            f"{' and '.join(str(p) for p in POPULATIONS)} members (pbt<population>), {seeds} seeds "
            "(median; range in brackets)\n",
            "| method | test RMSE | vs TPE+Hyperband | wall-clock, search + final (s) | vs TPE+Hyperband "
            "| training epochs (search + final) | final-stage epochs | exploit steps |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method in ("tpe_hyperband", *(f"pbt{p}" for p in POPULATIONS)):
            test, wall, epochs = of(method, "test_rmse"), of(method, "seconds"), of(method, "train_epochs")
            lines.append(
                f"| {method} | {statistics.median(test):.4f} ({min(test):.4f}–{max(test):.4f}) "
                f"| {statistics.median(test) / reference_test - 1:+.1%} "
                f"| {statistics.median(wall):.1f} ({min(wall):.1f}–{max(wall):.1f}) "
                f"| {statistics.median(wall) / reference_wall:.2f}x | {statistics.median(epochs):.0f} "
                f"| {statistics.median(of(method, 'final_epochs')):.0f} "
                f"| {statistics.median(of(method, 'exploit_steps')):.0f} |"
            )
        suggestion = next(r["suggested_lr"] for r in ranges if r["dataset"] == dataset)
        found = of("tpe_hyperband", "best_lr")
        decades = [abs(math.log10(suggestion / lr)) for lr in found]
        lines.append(
            f"\n{dataset}: the range test suggests lr {suggestion:.3g}; the default searches' best lr "
            f"{', '.join(f'{lr:.3g}' for lr in found)} ({statistics.median(decades):.2f} decades apart, median)."
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from automl.tasks.tracking.plotting import pyplot

    plt = pyplot()
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    colours = {"tpe_hyperband": "tab:blue", "pbt8": "tab:orange", "pbt4": "tab:green"}
    for column, dataset in enumerate(names):
        ax = axes[0][column]
        for method, colour in colours.items():
            mine = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            ax.scatter([r["seconds"] for r in mine], [r["test_rmse"] for r in mine], color=colour, label=method)
        ax.set_xlabel("wall-clock, search + final (s)")
        ax.set_ylabel("test RMSE")
        ax.set_title(dataset)
        ax.legend()
    figure.suptitle("PBT vs TPE + Hyperband at the same training epochs (one dot per seed)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
