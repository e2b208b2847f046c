"""Model families: does the tuned LightGBM (``gbm``) test at least as well as a default LightGBM, and does ``auto``
come within 2% of the best single family's test error in no more wall-clock than the slower single-family search?

The four datasets of ``model_quality.py`` (nothing downloaded; the same files, the last ``HOLDOUT`` of each series
left out), three seeds each, the full pipeline as ``automl run CONFIG --json`` (real Prefect, MLflow and Optuna;
warm start and registry off; the shipped final stage, ensemble included) with the same seed and number of configs
for every searched variant:

- ``co2``: the bundled weekly CO2 series (lookback 52); ``demand``: the generated hourly demand series of
  ``search_efficiency.py`` (lookback 24); both from ``configs/lstm_baseline.yaml``.
- ``diabetes`` (regression, 442 rows) and ``breast_cancer`` (classification, 569 rows): the tables scikit-learn
  ships in its wheel, from ``configs/mlp_tabular.yaml``.

The variants: ``network`` (the tuned LSTM for a series, MLP for a table), ``gbm`` (the tuned LightGBM: from
``configs/gbm_tabular.yaml`` for a table, from the LSTM config with ``model.family=gbm`` and the family's default
space for a series), ``auto`` (the network config with ``model.family=auto`` and no space; skipped when this version
refuses it) and ``default_lightgbm`` (no run of its own: the default LightGBM the network's run trains on the same
rows, its ``gbm`` baseline). The error is the delivered model's test RMSE for regression and log loss for
classification; the wall-clock is the whole ``automl run`` command's (start-up included), the search's seconds are
recorded beside it. It prints a Markdown table per dataset (median and range over seeds of each variant's test error
and wall-clock; tuned gbm / default LightGBM; auto / the best single family of the same seed; auto's wall-clock /
the slower single family's), saves the raw rows (CSV, appended run by run: a stopped benchmark resumes) and a plot
under ``benchmarks/results/``. Run it alone on the machine.

    .venv/bin/python benchmarks/families.py                  # 4 datasets x 3 seeds x 2-3 searches: hours on 2 cores
    .venv/bin/python benchmarks/families.py --quick          # a smoke run of the whole script (a few minutes)
    .venv/bin/python benchmarks/families.py --report         # the tables from the CSV; runs nothing
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
from _setup import RESULTS, isolated_pipeline_home
from model_quality import AUTOML, REPO, SERIES
from model_quality import datasets as quality_datasets

CSV = "families.csv"
DATASETS = ("co2", "demand", "diabetes", "breast_cancer")
VARIANTS = ("network", "gbm", "auto", "default_lightgbm")
SEARCHED = ("network", "gbm", "auto")  # each a search of its own; default_lightgbm comes from the network's run
SINGLE = ("network", "gbm")  # the single families auto is judged against
GBM_TABULAR = REPO / "configs" / "gbm_tabular.yaml"
AUTO_SKIPPED = "auto: not available in this version (skipped)"


def datasets(work: Path) -> dict[str, tuple[Path, list[str]]]:
    """model_quality's datasets (files written under ``work``) without its refit: no future is scored here."""
    return {
        name: (config, [o for o in overrides if not o.startswith("final.refit=")])
        for name, (config, overrides) in quality_datasets(work).items()
    }


def variant_run(name: str, variant: str, config: Path, overrides: list[str]) -> tuple[Path, list[str]]:
    """The config and overrides of one searched variant on a dataset (``config``, ``overrides``: the network's)."""
    if variant == "network":
        return config, overrides
    if variant == "gbm" and name not in SERIES:
        return GBM_TABULAR, overrides
    # a network config's space is the network's: the family's default space instead
    return config, [*overrides, f"model.family={variant}", "search.space=null"]


def auto_available(config: Path, overrides: list[str]) -> bool:
    """Whether this version accepts ``model.family: auto`` (``automl validate`` on one dataset's config)."""
    config, overrides = variant_run("", "auto", config, overrides)
    result = subprocess.run(
        [AUTOML, "validate", str(config), *_sets(overrides)], capture_output=True, text=True, check=False
    )
    return result.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="configs per search")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS)
    parser.add_argument("--out", help=f"folder for the CSV and plot (default {RESULTS}; {RESULTS}/quick with --quick)")
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming the CSV")
    parser.add_argument("--report", action="store_true", help="print the tables from the CSV; run nothing")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the script, measures nothing")
    args = parser.parse_args()
    names = args.datasets or list(DATASETS)
    extra = []
    if args.quick:
        args.trials, args.seeds, names = 3, 1, args.datasets or ["demand", "breast_cancer"]
        extra = ["search.epochs=1", "final.epochs=2"]
    out = Path(args.out or (RESULTS / "quick" if args.quick else RESULTS)) / CSV
    if args.report and not out.exists():
        sys.exit(f"no results yet: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh and out.exists():
        out.unlink()
    done = pd.read_csv(out) if out.exists() else pd.DataFrame()
    keys = set(zip(done["dataset"], done["seed"], done["variant"], strict=True)) if len(done) else set()
    todo = [
        (seed, name, variant)
        for seed in range(args.seeds)
        for name in names  # interleaved, so machine noise hits every dataset and variant alike
        for variant in SEARCHED
        if (name, seed, variant) not in keys
    ]
    if todo and not args.report:
        work = isolated_pipeline_home("automl-families-")
        data = datasets(work)
        first = data[todo[0][1]]
        if not auto_available(first[0], first[1] + extra):
            print(AUTO_SKIPPED)
            todo = [item for item in todo if item[2] != "auto"]
        for seed, name, variant in todo:
            config, overrides = variant_run(name, variant, *data[name])
            rows = run_once(name, variant, config, seed, args.trials, overrides + extra)
            pd.DataFrame(rows).to_csv(out, mode="a", header=not out.exists(), index=False)
            run, *baseline = rows
            print(
                f"{name:<14} seed {seed} {variant:<8} {run['metric']} {run['test_error']:.4f} ({run['chosen']}) "
                f"wall-clock {run['wall_seconds']:6.1f}s search {run['search_seconds']:6.1f}s"
                + "".join(f"; default LightGBM {b['test_error']:.4f}" for b in baseline),
                file=sys.stderr,
            )
    rows = pd.read_csv(out)
    rows = rows[rows["dataset"].isin(names)]
    command = " ".join(["benchmarks/families.py", *sys.argv[1:]])
    print(f"`{command}` on {date.today().isoformat()}, {platform.machine()} with {os.cpu_count()} CPUs\n")
    print(markdown_tables(rows))
    plot(rows, out.with_suffix(".png"))
    print(f"\nraw results: {out}; plot: {out.with_suffix('.png')}")


def _sets(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def run_once(name: str, variant: str, config: Path, seed: int, trials: int, overrides: list[str]) -> list[dict]:
    """One ``automl run --json`` (timed as a whole); its row, and for the network also the default LightGBM it
    trained on the same rows."""
    overrides = [
        f"seed={seed}",
        f"search.n_trials={trials}",
        "warm_start.enabled=false",
        "registry.enabled=false",
        *overrides,
    ]
    started = time.perf_counter()
    result = subprocess.run(
        [AUTOML, "run", str(config), "--json", *_sets(overrides)], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"automl run {config.name} ({name}, {variant}, seed {seed}) exited {result.returncode}: "
            f"{(result.stderr or result.stdout)[-3000:]}"
        )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    metric = "log_loss" if summary["task_type"] == "classification" else "rmse"
    baselines = summary.get("baseline_metrics") or {}
    ensemble = summary.get("ensemble") or {}
    single = ensemble.get("single_test_metrics") or summary["test_metrics"]
    row = {
        "dataset": name,
        "seed": seed,
        "variant": variant,
        "family": summary.get("family", summary["model_family"]),  # auto: the family that went on
        "metric": metric,
        "test_error": summary["test_metrics"][metric],
        "single_error": single.get(metric, math.nan),
        "f1_macro": summary["test_metrics"].get("f1_macro", math.nan),
        "chosen": summary["chosen"],
        "default_config_error": baselines.get("default_config", {}).get(metric, math.nan),
        "complete": summary["trials"]["complete"],
        "pruned": summary["trials"]["pruned"],
        "best_val_loss": summary["best_val_loss"],
        "wall_seconds": wall,
        "search_seconds": summary.get("stage_seconds", {}).get("search", math.nan),
        "total_seconds": summary["total_seconds"],
    }
    rows = [row]
    if variant == "network":
        gbm = baselines.get("gbm")
        if gbm is None:
            raise RuntimeError(f"{name} seed {seed}: the network's run has no gbm baseline ({sorted(baselines)})")
        rows.append(
            {
                **{key: math.nan for key in row},
                "dataset": name,
                "seed": seed,
                "variant": "default_lightgbm",
                "family": "gbm",
                "metric": metric,
                "test_error": gbm[metric],
                "single_error": gbm[metric],
                "f1_macro": gbm.get("f1_macro", math.nan),
                "chosen": "baseline",
            }
        )
    return rows


def _stats(values: pd.Series, digits: int = 4) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}g}"
    return f"{values.median():.{digits}g} ({values.min():.{digits}g}–{values.max():.{digits}g})"


def ratios(group: pd.DataFrame) -> dict[str, pd.Series]:
    """Per seed of one dataset: tuned gbm / default LightGBM (test error); auto / the better of network and gbm
    (test error); auto / the slower of network and gbm (wall-clock). NaN where a variant is missing."""
    error = group.pivot_table(index="seed", columns="variant", values="test_error").reindex(columns=list(VARIANTS))
    wall = group.pivot_table(index="seed", columns="variant", values="wall_seconds").reindex(columns=list(VARIANTS))
    single = list(SINGLE)
    return {
        "gbm_vs_default": error["gbm"] / error["default_lightgbm"],
        "auto_vs_best": error["auto"] / error[single].min(axis=1, skipna=False),
        "auto_wall_vs_slower": wall["auto"] / wall[single].max(axis=1, skipna=False),
    }


def markdown_tables(rows: pd.DataFrame) -> str:
    """Per dataset: each variant's test error, wall-clock and search seconds (median, range over seeds), then the
    ratios the targets are stated in, each with how many seeds meet its target."""
    targets = (
        ("gbm_vs_default", "tuned gbm / default LightGBM (test error)", 1.0),
        ("auto_vs_best", "auto / best single family (test error)", 1.02),
        ("auto_wall_vs_slower", "auto / slower single family (wall-clock)", 1.0),
    )
    blocks, verdicts = [], []
    for name, group in rows.groupby("dataset", sort=False):
        metric = group["metric"].iloc[0]
        family = group.loc[group["variant"] == "network", "family"]
        lines = [
            f"### {name} ({metric}, seeds: {group['seed'].nunique()})\n",
            f"| variant | test {metric} | wall-clock s | search s | delivered |",
            "|---|---|---|---|---|",
        ]
        for variant in VARIANTS:
            runs = group[group["variant"] == variant]
            label = f"network ({family.iloc[0]})" if variant == "network" and len(family) else variant
            if variant == "default_lightgbm":
                label, wall, search = "default LightGBM", "(in the network's run)", "-"
            else:
                wall, search = _stats(runs["wall_seconds"], 3), _stats(runs["search_seconds"], 3)
            delivered = runs["chosen"] + (" " + runs["family"] if variant == "auto" else "")
            chosen = ", ".join(f"{k} {v}" for k, v in delivered.value_counts().items()) or "-"
            lines.append(f"| {label} | {_stats(runs['test_error'])} | {wall} | {search} | {chosen} |")
        lines += ["", "| ratio | median (range) | target | seeds meeting it |", "|---|---|---|---|"]
        for key, title, target in targets:
            values = ratios(group)[key].dropna()
            met = f"{int((values <= target).sum())}/{len(values)}" if len(values) else "-"
            lines.append(f"| {title} | {_stats(values)} | <= {target:g} | {met} |")
            if key == "gbm_vs_default" and name not in SERIES and len(values):
                verdicts.append(f"{name}: tuned gbm <= default LightGBM in {met} seeds")
        blocks.append("\n".join(lines))
    if verdicts:
        blocks.append("Target on every table (tuned gbm <= a default LightGBM): " + "; ".join(verdicts) + ".")
    return "\n\n".join(blocks)


def plot(rows: pd.DataFrame, path: Path) -> None:
    """Per dataset: each variant's test error, one point per seed and a bar at the median."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(rows["dataset"]))
    figure, axes = plt.subplots(1, max(len(names), 1), figsize=(3.6 * max(len(names), 1), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        group = rows[rows["dataset"] == name]
        for i, variant in enumerate(VARIANTS):
            errors = group.loc[group["variant"] == variant, "test_error"].dropna()
            if errors.empty:
                continue
            ax.scatter([i] * len(errors), errors, s=18, color=f"C{i}")
            ax.hlines(errors.median(), i - 0.3, i + 0.3, color=f"C{i}")
        ax.set_xticks(range(len(VARIANTS)), ["network", "gbm", "auto", "default\nLightGBM"], fontsize=8)
        ax.set_title(f"{name}: test {group['metric'].iloc[0]}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
