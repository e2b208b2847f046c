"""Warm start: how much faster does a search on related data get when it starts from another task's best config?

Two related tasks from the bundled CO2 series: its first half (1958-1979) and its second half (1980-2001). For
each seed and each direction (first -> second, second -> first), a cold search on the target task is compared
with a warm one seeded (``warm_start.from_runs``) with the best config of a cold search on the source task. Same
budget, full fidelity, so trials can be counted.

Prints a Markdown table: the trials the warm search needed to come within 1% of the cold search's final best
validation loss, and how close the first transferred config alone came; saves best-after-N-trials curves.

    .venv/bin/python benchmarks/warm_start.py            # 12 trials, 3 seeds: about 20 min on 2 CPU cores
    .venv/bin/python benchmarks/warm_start.py --quick    # smoke run
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from _setup import isolated_pipeline_home, pipeline_benchmark_parser, save_rows

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.01
CURVES = ("cold_curve", "warm_curve")  # plotted, not saved in the CSV
SETTINGS = ["data.lookback=26", "search.epochs=3", "search.fidelity=none", "final.epochs=1", "registry.enabled=false"]


def main() -> None:
    args = pipeline_benchmark_parser(__doc__, trials=12, seeds=3).parse_args()
    extra = []
    if args.quick:
        args.trials, args.seeds = 3, 1
        extra = ["search.epochs=1"]
    work = isolated_pipeline_home("automl-warm-bench-")
    tasks = split_series(work)
    rows = []
    for seed in range(args.seeds):
        cold = {
            name: search(path, seed, args.trials, ["warm_start.enabled=false", *extra]) for name, path in tasks.items()
        }
        for source, target in (("first_half", "second_half"), ("second_half", "first_half")):
            warm = search(
                tasks[target],
                seed,
                args.trials,
                [
                    "warm_start.enabled=true",
                    "warm_start.top_k=0",
                    f"warm_start.from_runs=[{cold[source]['run_id']}]",
                    *extra,
                ],
            )
            assert warm["enqueued"] == 1, "the source run's config was not queued"
            rows.append(compare(f"{source} -> {target}", seed, cold[target], warm))
            print(
                f"seed {seed} {rows[-1]['direction']}: warm needed {rows[-1]['warm_trials_to_cold_best']} trials, "
                f"first transferred config {rows[-1]['first_vs_cold_best']:+.1%}",
                file=sys.stderr,
            )
    saved = save_rows(rows, args.out, "warm_start.csv", leave_out=CURVES)
    print(table(rows, args.trials, args.seeds))
    plot(rows, saved.with_suffix(".png"))
    print(f"\nraw results: {saved}; plot: {saved.with_suffix('.png')}")


def split_series(work: Path) -> dict[str, Path]:
    import pandas as pd

    frame = pd.read_csv(REPO / "configs" / "data" / "co2_weekly.csv")
    middle = frame["date"] < "1980-01-01"
    paths = {"first_half": work / "co2_1958_1979.csv", "second_half": work / "co2_1980_2001.csv"}
    frame[middle].to_csv(paths["first_half"], index=False)
    frame[~middle].to_csv(paths["second_half"], index=False)
    return paths


def search(data: Path, seed: int, n_trials: int, overrides: list[str]) -> dict:
    import optuna
    from optuna.trial import TrialState

    from automl.flows.pipeline import automl_pipeline

    summary = automl_pipeline(
        config_path=str(REPO / "configs" / "lstm_baseline.yaml"),
        overrides=[f"data.path={data}", f"seed={seed}", f"search.n_trials={n_trials}", *SETTINGS, *overrides],
    )
    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage)
    losses = [t.value for t in sorted(study.trials, key=lambda t: t.number) if t.state == TrialState.COMPLETE]
    best, curve = float("inf"), []
    for loss in losses:
        best = min(best, loss)
        curve.append(best)
    return {
        "run_id": summary.pipeline_run_id,
        "curve": curve,
        "first": losses[0],
        "best": best,
        "enqueued": summary.warm_start.enqueued,
    }


def compare(direction: str, seed: int, cold: dict, warm: dict) -> dict:
    target = cold["best"] * (1 + TOLERANCE)
    reached = [i + 1 for i, best in enumerate(warm["curve"]) if best <= target]
    cold_reached = [i + 1 for i, best in enumerate(cold["curve"]) if best <= target]
    return {
        "direction": direction,
        "seed": seed,
        "cold_best": cold["best"],
        "warm_best": warm["best"],
        "warm_first": warm["first"],
        "first_vs_cold_best": warm["first"] / cold["best"] - 1,
        "warm_trials_to_cold_best": reached[0] if reached else None,
        "cold_trials_to_own_best": cold_reached[0],
        "budget": len(cold["curve"]),
        "cold_curve": cold["curve"],
        "warm_curve": warm["curve"],
    }


def table(rows: list[dict], n_trials: int, n_seeds: int) -> str:
    lines = [
        f"\n### Warm start: LSTM on two halves of the CO2 series, {n_trials} trials per search, {n_seeds} seeds "
        "(median, range in brackets)\n",
        "| direction | cold: final best val loss | cold: trials to reach it | warm: trials to reach cold's best (±1%) "
        "| warm: first (transferred) config vs cold's best | warm: final best val loss |",
        "|---|---|---|---|---|---|",
    ]

    def stat(values, fmt):
        values = [v for v in values if v is not None]
        if not values:
            return "never"
        text = format(statistics.median(values), fmt)
        return text + (f" ({format(min(values), fmt)}–{format(max(values), fmt)})" if len(values) > 1 else "")

    for direction in dict.fromkeys(r["direction"] for r in rows):
        mine = [r for r in rows if r["direction"] == direction]
        never = sum(r["warm_trials_to_cold_best"] is None for r in mine)
        lines.append(
            f"| {direction} | {stat([r['cold_best'] for r in mine], '.5f')} "
            f"| {stat([r['cold_trials_to_own_best'] for r in mine], '.0f')} "
            f"| {stat([r['warm_trials_to_cold_best'] for r in mine], '.0f')}"
            + (f" [not reached in {never}/{len(mine)} seeds]" if never else "")
            + f" | {stat([r['first_vs_cold_best'] for r in mine], '+.1%')}"
            + f" | {stat([r['warm_best'] for r in mine], '.5f')} |"
        )
    needed = [r["warm_trials_to_cold_best"] / r["budget"] for r in rows if r["warm_trials_to_cold_best"] is not None]
    within = sum(abs(r["first_vs_cold_best"]) <= 0.10 or r["first_vs_cold_best"] < 0 for r in rows)
    lines.append(
        f"\nWarm searches reached the cold search's final best (±1%) in {len(needed)}/{len(rows)} cases, "
        f"after a median {statistics.median(needed):.0%} of the trial budget; "
        if needed
        else "\nWarm searches never reached the cold best; "
    )
    lines[-1] += (
        f"the first transferred config alone was within 10% of (or better than) the cold best in {within}/{len(rows)}."
    )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from automl.tasks.tracking.plotting import pyplot

    plt = pyplot()

    directions = list(dict.fromkeys(r["direction"] for r in rows))
    figure, axes = plt.subplots(1, len(directions), figsize=(5 * len(directions), 4), squeeze=False)
    for ax, direction in zip(axes[0], directions, strict=True):
        for row in (r for r in rows if r["direction"] == direction):
            label = row["seed"] == 0
            ax.plot(
                range(1, len(row["cold_curve"]) + 1),
                row["cold_curve"],
                color="tab:blue",
                alpha=0.7,
                label="cold" if label else None,
            )
            ax.plot(
                range(1, len(row["warm_curve"]) + 1),
                row["warm_curve"],
                color="tab:orange",
                alpha=0.7,
                label="warm" if label else None,
            )
        ax.set(title=direction, xlabel="trials", ylabel="best validation loss so far")
        ax.set_yscale("log")
        ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"total {time.time() - started:.0f}s", file=sys.stderr)
