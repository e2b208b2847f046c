"""Promote, don't retrain: does the final stage do as well when it continues from the best trial's weights
(``final.init: best_trial``, the default) as when it trains the best config again from scratch?

For each seed, one pipeline search on a dataset (the bundled CO2 series, and a generated noisy seasonal series
the benchmark makes itself), then the final training of its best config both ways on the same split, side by
side: test RMSE in the target's units, seconds and epochs. Prints a Markdown table (per dataset: median over
seeds) and saves the raw rows as CSV.

    .venv/bin/python benchmarks/final_init.py            # 3 seeds x 2 datasets: about 10 min on 2 CPU cores
    .venv/bin/python benchmarks/final_init.py --quick    # smoke run
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _setup import isolated_pipeline_home, pipeline_benchmark_parser, save_rows

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    args = pipeline_benchmark_parser(__doc__, trials=12, seeds=3).parse_args()
    extra: list[str] = []
    if args.quick:
        args.seeds, args.trials = 1, 3
        extra = ["search.epochs=1", "final.epochs=2"]
    work = isolated_pipeline_home("automl-final-init-")
    datasets = {"co2_weekly": [], "noisy_seasonal": _noisy_seasonal(work)}
    rows = []
    for seed in range(args.seeds):
        for name, data in datasets.items():
            for row in compare(seed, args.trials, data + extra):
                rows.append({"dataset": name, **row})
                print(
                    f"{name} seed {seed} {row['init']:<10} test rmse {row['test_rmse']:.5g}  "
                    f"{row['seconds']:.1f}s  {row['epochs']} epochs",
                    file=sys.stderr,
                )
    saved = save_rows(rows, args.out, "final_init.csv")
    print(table(rows, args.seeds, args.trials))
    print(f"\nraw results: {saved}")


def _noisy_seasonal(work: Path) -> list[str]:
    """A generated daily series (trend, weekly and yearly seasonality, heavy noise): not the demo's smooth one."""
    import pandas as pd

    rng = np.random.default_rng(7)
    t = np.arange(1500)
    values = 0.01 * t + 3 * np.sin(2 * np.pi * t / 7) + 5 * np.sin(2 * np.pi * t / 365.25) + rng.normal(0, 2, t.size)
    path = work / "noisy_seasonal.csv"
    pd.DataFrame({"day": pd.date_range("2020-01-01", periods=t.size, freq="D"), "value": values}).to_csv(
        path, index=False
    )
    return [f"data.path={path}", "data.target=value", "data.time_column=day", "data.lookback=28"]


def compare(seed: int, trials: int, overrides: list[str]) -> list[dict]:
    """One search, then the final training of its best config from the best trial's weights and from scratch."""
    from automl.configs import load_config
    from automl.flows.pipeline import automl_pipeline
    from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
    from automl.tasks.final_train.evaluation import test_predictions, test_targets
    from automl.tasks.final_train.job import FinalTrainJob
    from automl.tasks.final_train.metrics import score
    from automl.tasks.final_train.training import train_config
    from automl.tasks.runtime.state import local_state
    from automl.tasks.search_stage.checkpoints import trial_weights_path

    settings = [f"seed={seed}", f"search.n_trials={trials}", "warm_start.enabled=false", "registry.enabled=false"]
    settings += ["final.clean_up=false"]  # the best trial's weights are read after the run
    config = REPO / "configs" / "lstm_baseline.yaml"
    summary = automl_pipeline(config_path=str(config), overrides=settings + overrides)
    cfg = load_config(config, settings + overrides)
    checked = load_and_check(cfg)
    prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
    weights = trial_weights_path(local_state().trial_weights(summary.study_name), summary.best_params)
    rows = []
    for init, start_from in (("best_trial", weights), ("scratch", None)):
        started = time.perf_counter()
        model, fitted = train_config(FinalTrainJob.of(cfg), prepared, summary.best_params, start_from=start_from)
        seconds = time.perf_counter() - started
        rmse = score(prepared.task, test_targets(prepared), test_predictions(model, prepared))["rmse"]
        rows.append({"seed": seed, "init": init, "test_rmse": rmse, "seconds": seconds, "epochs": len(fitted.val_loss)})
    return rows


def table(rows: list[dict], seeds: int, trials: int) -> str:
    lines = [
        f"\n### Final training from the best trial's weights vs from scratch (LSTM, {trials} trials, {seeds} seeds; "
        "median, range in brackets)\n",
        "| dataset | init | test RMSE | final training (s) | epochs | RMSE vs scratch | time vs scratch |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = {
            init: [r for r in rows if r["dataset"] == dataset and r["init"] == init]
            for init in ("best_trial", "scratch")
        }
        for init, group in mine.items():
            rmse = [r["test_rmse"] for r in group]
            secs = [r["seconds"] for r in group]
            ratio_rmse = statistics.median(
                a["test_rmse"] / b["test_rmse"] for a, b in zip(group, mine["scratch"], strict=True)
            )
            ratio_time = statistics.median(
                a["seconds"] / b["seconds"] for a, b in zip(group, mine["scratch"], strict=True)
            )
            lines.append(
                f"| {dataset} | {init} | {statistics.median(rmse):.4g} ({min(rmse):.4g}–{max(rmse):.4g}) "
                f"| {statistics.median(secs):.1f} ({min(secs):.1f}–{max(secs):.1f}) "
                f"| {statistics.median(r['epochs'] for r in group):.0f} | {ratio_rmse - 1:+.1%} | {ratio_time:.2f}x |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
