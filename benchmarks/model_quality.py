"""Model quality: does the ensemble of the search's best configs test better than the single tuned model, and does a
series model refitted on every row forecast the future better than the one that was tested?

Four datasets the project was not tuned on, three seeds each, the full pipeline (real Prefect, MLflow and Optuna; warm
start off) with ``final.ensemble: {top_k: 5, rounds: 25}``:

- ``co2``: the bundled weekly CO2 series (LSTM, lookback 52); ``demand``: the generated hourly demand series of
  ``search_efficiency.py`` (LSTM, lookback 24). The last ``HOLDOUT`` of each series is held out of the whole run; the
  run refits (``final.refit: all``), and both the tested model and the refitted one are registered and score the
  held-out future with ``automl predict --rolling`` (one-step-ahead from the history before each point).
- ``diabetes`` (regression, 442 rows) and ``breast_cancer`` (classification, 569 rows): the tables scikit-learn
  ships in its wheel (MLP); no refit (there is no future to judge it on).

One run gives both models: the final stage logs the single chosen model's test metrics (``single_test_*``) beside the
delivered model's (the ensemble when it validated better, else the same single model). The error is RMSE for
regression and log loss for classification (the ensemble averages probabilities; F1 is printed too). It prints a
Markdown table per dataset (median and range over seeds of the ratio delivered / single; the refit's future RMSE
against the tested model's), saves the raw rows (CSV, appended run by run: a stopped benchmark resumes) and a plot
under ``benchmarks/results/``. Run it alone on the machine.

    .venv/bin/python benchmarks/model_quality.py                  # 4 datasets x 3 seeds: about an hour on 2 cores
    .venv/bin/python benchmarks/model_quality.py --quick          # a smoke run of the whole script
    .venv/bin/python benchmarks/model_quality.py --report         # the tables from the CSV; runs nothing
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from _setup import RESULTS, isolated_pipeline_home
from search_efficiency import demand_series

REPO = Path(__file__).resolve().parents[1]
AUTOML = str(Path(sys.executable).with_name("automl"))
CSV = "model_quality.csv"
HOLDOUT = 0.1  # of a series' rows, after everything the run sees: the future the refit is judged on
SERIES = ("co2", "demand")


def datasets(work: Path) -> dict[str, tuple[Path, list[str]]]:
    """Each dataset: the config it starts from and its overrides (the data files written under ``work``)."""
    from sklearn.datasets import load_breast_cancer, load_diabetes

    lstm, mlp = REPO / "configs" / "lstm_baseline.yaml", REPO / "configs" / "mlp_tabular.yaml"
    co2 = pd.read_csv(REPO / "configs" / "data" / "co2_weekly.csv")
    demand = pd.read_csv(demand_series(work / "demand_full.csv"))
    diabetes = load_diabetes(as_frame=True).frame
    cancer = load_breast_cancer(as_frame=True).frame
    cancer["target"] = np.where(cancer["target"] == 1, "benign", "malignant")
    files = {}
    for name, frame in (("co2", co2), ("demand", demand), ("diabetes", diabetes), ("breast_cancer", cancer)):
        frame.to_csv(work / f"{name}_all.csv", index=False)
        seen = frame.iloc[: len(frame) - int(len(frame) * HOLDOUT)] if name in SERIES else frame
        seen.to_csv(work / f"{name}.csv", index=False)
        files[name] = work / f"{name}.csv"
    return {
        "co2": (lstm, [f"data.path={files['co2']}", "final.refit=all"]),
        "demand": (
            lstm,
            [
                f"data.path={files['demand']}",
                "data.target=load",
                "data.time_column=timestamp",
                "data.lookback=24",
                "final.refit=all",
            ],
        ),
        "diabetes": (mlp, [f"data.path={files['diabetes']}", "data.target=target", "data.task=regression"]),
        "breast_cancer": (mlp, [f"data.path={files['breast_cancer']}", "data.target=target"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="configs per search")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", choices=["co2", "demand", "diabetes", "breast_cancer"])
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming the CSV")
    parser.add_argument("--report", action="store_true", help="print the tables from the CSV; run nothing")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the script, measures nothing")
    args = parser.parse_args()
    names = args.datasets or ["co2", "demand", "diabetes", "breast_cancer"]
    extra = []
    if args.quick:
        args.trials, args.seeds, names = 3, 1, ["demand", "breast_cancer"]
        extra = ["search.epochs=1", "final.epochs=2"]
        args.out = str(Path(args.out) / "quick")
    work = isolated_pipeline_home("automl-quality-")
    out = Path(args.out) / CSV
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh and out.exists():
        out.unlink()
    done = pd.read_csv(out) if out.exists() else pd.DataFrame()
    keys = set(zip(done["dataset"], done["seed"], strict=True)) if len(done) else set()
    data = datasets(work)
    for seed in [] if args.report else range(args.seeds):
        for name in names:  # interleaved, so machine noise hits every dataset alike
            if (name, seed) in keys:
                continue
            config, overrides = data[name]
            row = run_once(work, name, config, seed, args.trials, overrides + extra)
            pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)
            print(
                f"{name:<14} seed {seed}: {row['metric']} single {row['single']:.4f} delivered {row['delivered']:.4f} "
                f"({row['chosen']}){_refit_note(row)}",
                file=sys.stderr,
            )
    rows = pd.read_csv(out)
    rows = rows[rows["dataset"].isin(names)]
    command = " ".join(["benchmarks/model_quality.py", *sys.argv[1:]])
    print(f"`{command}` on {date.today().isoformat()}, {platform.machine()} with {os.cpu_count()} CPUs\n")
    print(markdown_table(rows))
    plot(rows, out.with_suffix(".png"))
    print(f"\nraw results: {out}; plot: {out.with_suffix('.png')}")


def run_once(work: Path, name: str, config: Path, seed: int, trials: int, overrides: list[str]) -> dict:
    from automl.flows.pipeline import automl_pipeline

    model_name = f"{name}-{seed}"
    overrides = [
        f"seed={seed}",
        f"search.n_trials={trials}",
        "warm_start.enabled=false",
        f"registry.model_name={model_name}",
        "final.ensemble.top_k=5",
        "final.ensemble.rounds=25",
        *overrides,
    ]
    summary = automl_pipeline(config_path=str(config), overrides=overrides)
    ensemble = summary.ensemble
    classify = summary.task_type == "classification"
    metric = "log_loss" if classify else "rmse"
    single = ensemble.single_test_metrics if ensemble is not None else summary.test_metrics
    row = {
        "dataset": name,
        "seed": seed,
        "metric": metric,
        "single": single[metric],
        "delivered": summary.test_metrics[metric],
        "single_f1": single.get("f1_macro", math.nan),
        "delivered_f1": summary.test_metrics.get("f1_macro", math.nan),
        "chosen": summary.chosen,
        "kept": bool(ensemble is not None and ensemble.kept),
        "members": len(ensemble.weights) if ensemble is not None and ensemble.kept else 1,
        "candidates": len(ensemble.candidates) if ensemble is not None else 1,
        "single_val_loss": ensemble.single_val_loss if ensemble is not None else summary.best_val_loss,
        "ensemble_val_loss": ensemble.val_loss if ensemble is not None else math.nan,
        "final_seconds": summary.stage_seconds.get("final_train", math.nan),
        "total_seconds": summary.total_seconds,
        "future_tested": math.nan,
        "future_refit": math.nan,
    }
    if summary.refit is not None:
        row["future_tested"], row["future_refit"] = score_future(work, name, summary, model_name)
    return row


def score_future(work: Path, name: str, summary, model_name: str) -> tuple[float, float]:
    """RMSE on the held-out future of the tested model and of the refitted one, each registered and scored with
    ``automl predict --rolling`` over the whole series (targets after the run's last row only)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(summary.mlflow_tracking_uri)
    client = MlflowClient()
    final = client.search_runs(
        [client.get_experiment_by_name(summary.experiment).experiment_id],
        f"tags.`mlflow.parentRunId` = '{summary.pipeline_run_id}' and tags.`automl.stage` = 'final_train'",
    )[0]
    logged = mlflow.search_logged_models(
        experiment_ids=[final.info.experiment_id],
        filter_string=f"source_run_id = '{final.info.run_id}'",
        output_format="list",
    )
    tested_uri = next(m.model_uri for m in logged if m.name == "model")
    tested = mlflow.register_model(tested_uri, f"{model_name}-tested")
    time_column = summary_time_column(name)
    seen_until = pd.read_csv(work / f"{name}.csv")[time_column].iloc[-1]
    errors = []
    for uri in (
        f"models:/{model_name}-tested/{tested.version}",
        f"models:/{model_name}/{summary.registered_model.version}",
    ):
        out = work / f"{model_name}-{len(errors)}.csv"
        result = subprocess.run(
            [
                AUTOML,
                "predict",
                "--model",
                uri,
                "--data",
                str(work / f"{name}_all.csv"),
                "--rolling",
                "--out",
                str(out),
            ],
            env={**os.environ, "MLFLOW_TRACKING_URI": summary.mlflow_tracking_uri},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"automl predict {uri} failed: {result.stderr[-2000:]}")
        forecast = pd.read_csv(out)
        future = forecast[pd.to_datetime(forecast[time_column]) > pd.to_datetime(seen_until)]
        future = future[future["step"] == 1]
        errors.append(float(np.sqrt(np.mean((future["prediction"] - future["actual"]) ** 2))))
    return errors[0], errors[1]


def summary_time_column(name: str) -> str:
    return {"co2": "date", "demand": "timestamp"}[name]


def _refit_note(row: dict) -> str:
    if math.isnan(row["future_refit"]):
        return ""
    return f"; future rmse tested {row['future_tested']:.4f} refit {row['future_refit']:.4f}"


def _stats(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    return f"{values.median():.3f} ({values.min():.3f}–{values.max():.3f})"


def markdown_table(rows: pd.DataFrame) -> str:
    """One line per dataset: the delivered model's test error over the single tuned model's (median, range over
    seeds), how often the ensemble was kept and with how many members, and for series the refit's future error over
    the tested model's."""
    lines = [
        "| dataset | error | seeds | delivered / single (median, range) | ensemble kept | members (median) "
        "| future RMSE refit / tested | refit better |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, group in rows.groupby("dataset", sort=False):
        ratio = group["delivered"] / group["single"]
        future = group["future_refit"] / group["future_tested"]
        better = (group["future_refit"] < group["future_tested"]).sum() if future.notna().any() else None
        lines.append(
            f"| {name} | {group['metric'].iloc[0]} | {len(group)} | {_stats(ratio)} | {int(group['kept'].sum())}/"
            f"{len(group)} | {group['members'].median():g} | {_stats(future)} | "
            f"{'-' if better is None else f'{better}/{future.notna().sum()}'} |"
        )
    ratios = rows["delivered"] / rows["single"]
    lines.append(
        f"\nOver all {len(rows)} runs: delivered / single mean {ratios.mean():.3f}, max {ratios.max():.3f} "
        f"(targets: mean <= 0.95, none above 1.01)."
    )
    f1 = rows.dropna(subset=["single_f1"])
    if len(f1):
        lines.append(
            f"Classification F1 (macro): single {f1['single_f1'].mean():.4f}, delivered {f1['delivered_f1'].mean():.4f}"
            " (mean over seeds)."
        )
    return "\n".join(lines)


def plot(rows: pd.DataFrame, path: Path) -> None:
    """Per dataset and seed: the delivered model's test error over the single model's, and for series the refit's
    future error over the tested model's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(rows["dataset"]))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, name in enumerate(names):
        group = rows[rows["dataset"] == name]
        axes[0].scatter([i] * len(group), group["delivered"] / group["single"], label=name)
        future = group["future_refit"] / group["future_tested"]
        if future.notna().any():
            axes[1].scatter([i] * future.notna().sum(), future.dropna(), label=name)
    for ax, title in zip(axes, ("test error: delivered / single tuned", "future RMSE: refit / tested"), strict=True):
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(title)
    axes[0].axhline(0.95, color="grey", linestyle=":", linewidth=0.8, label="target mean 0.95")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
