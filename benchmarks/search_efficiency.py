"""Search efficiency on the bundled CO2 series: does multi-fidelity reach the quality of a plain Optuna TPE search
with a fraction of the compute?

Compares, with the same number of sampled configs and over several seeds, the full pipeline (real Prefect,
MLflow and Optuna; warm start and registry off) with:

- ``random_full``: random search, every config trained on all the data (5 epochs);
- ``tpe_full``: Optuna TPE at full fidelity, the plain-script way;
- ``tpe_hyperband``: Optuna TPE + Hyperband over data subsamples (1/9, 1/3, 1);
- ``hyperopt_sha``: hyperopt TPE + asynchronous successive halving over the same rungs;
- ``tpe_hyperband_deferred``: ``tpe_hyperband`` with ``search.promotion: deferred`` (no promotion before a rung
  has eta results).

Prints a Markdown table (median and range over seeds) and the speed-ups, and saves the raw results (CSV) and a
plot of best validation loss against wall-clock under ``benchmarks/results/``.

    .venv/bin/python benchmarks/search_efficiency.py          # 20 configs x 3 seeds: about 40 min on 2 CPU cores
    .venv/bin/python benchmarks/search_efficiency.py --quick  # a smoke run of the whole script: about 2 min
    .venv/bin/python benchmarks/search_efficiency.py --methods tpe_hyperband  # one method against tpe_full
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _setup import isolated_pipeline_home, save_rows

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "random_full": ["search.backend=optuna", "search.sampler=random", "search.fidelity=none"],
    "tpe_full": ["search.backend=optuna", "search.sampler=tpe", "search.fidelity=none"],
    "tpe_hyperband": ["search.backend=optuna", "search.sampler=tpe", "search.fidelity=hyperband"],
    "hyperopt_sha": ["search.backend=hyperopt", "search.sampler=tpe", "search.fidelity=successive_halving"],
    "tpe_hyperband_deferred": [
        "search.backend=optuna",
        "search.sampler=tpe",
        "search.fidelity=hyperband",
        "search.promotion=deferred",
    ],
}
REFERENCE = "tpe_full"
TOLERANCE = 0.01  # "reaches the reference's best" means within 1%


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "lstm_baseline.yaml"))
    parser.add_argument("--configs", type=int, default=20, help="sampled configs per search")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the script, measures nothing")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        default=list(METHODS),
        help=f"methods to run ({REFERENCE} always runs: the others are measured against it)",
    )
    args = parser.parse_args()
    methods = {m: METHODS[m] for m in METHODS if m in args.methods or m == REFERENCE}
    extra = []
    if args.quick:
        args.configs, args.seeds = 6, 1
        extra = ["search.epochs=1", "final.epochs=2", "data.lookback=12"]

    isolated_pipeline_home("automl-bench-")
    rows = []
    for seed in range(args.seeds):
        for method, overrides in methods.items():  # interleaved, so machine noise hits every method alike
            rows.append(run_once(args.config, method, seed, args.configs, overrides + extra))
            print(
                f"seed {seed} {method:<14} search {rows[-1]['search_seconds']:7.1f}s  best val "
                f"{rows[-1]['best_val_loss']:.6f}  test rmse {rows[-1]['test_rmse']:.4f}",
                file=sys.stderr,
            )
    add_time_to_reference(rows)
    saved = save_rows(rows, args.out, "search_efficiency.csv", leave_out=("trajectory",))
    print(markdown_table(rows, list(methods), args.configs, args.seeds))
    plot(rows, saved.with_suffix(".png"))
    print(f"\nraw results: {saved}; plot: {saved.with_suffix('.png')}")


def run_once(config: str, method: str, seed: int, n_configs: int, overrides: list[str]) -> dict:
    import optuna
    from optuna.trial import TrialState

    from flows.pipeline import automl_pipeline

    summary = automl_pipeline(
        config_path=config,
        overrides=[
            f"seed={seed}",
            f"search.n_trials={n_configs}",
            "warm_start.enabled=false",
            "registry.enabled=false",
            *overrides,
        ],
    )
    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage)
    trials = study.get_trials(deepcopy=False)
    start = min(t.datetime_start for t in trials if t.datetime_start)
    best, trajectory = float("inf"), []
    for trial in sorted(
        (t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.datetime_complete
    ):  # only full-fidelity results count as "reached"
        best = min(best, trial.value)
        trajectory.append(((trial.datetime_complete - start).total_seconds(), best))
    n = sum(summary.trials.as_dict().values())
    return {
        "method": method,
        "seed": seed,
        "configs": n,
        "complete": summary.trials.complete,
        "pruned": summary.trials.pruned,
        "search_seconds": summary.search_seconds,
        "best_val_loss": summary.best_val_loss,
        "test_rmse": summary.test_metrics["rmse"],
        "overhead_share": summary.search_overhead_share,
        "overhead_per_trial": summary.search_seconds * summary.search_overhead_share / max(n, 1),
        "trajectory": trajectory,
    }


def add_time_to_reference(rows: list[dict]) -> None:
    """Seconds until each run's best full-fidelity loss came within 1% of the reference's best (same seed)."""
    reference = {r["seed"]: r["best_val_loss"] for r in rows if r["method"] == REFERENCE}
    for row in rows:
        target = reference[row["seed"]] * (1 + TOLERANCE)
        reached = [t for t, best in row["trajectory"] if best <= target]
        row["time_to_reference"] = reached[0] if reached else float("nan")


def markdown_table(rows: list[dict], methods: list[str], n_configs: int, n_seeds: int) -> str:
    def stat(method: str, key: str, fmt: str) -> str:
        values = [r[key] for r in rows if r["method"] == method and r[key] == r[key]]
        if not values:
            return "not reached"
        med = statistics.median(values)
        text = format(med, fmt)
        if len(values) > 1:
            text += f" ({format(min(values), fmt)}–{format(max(values), fmt)})"
        reached = len(values)
        total = sum(1 for r in rows if r["method"] == method)
        return text + (f" [{reached}/{total} seeds]" if reached < total else "")

    reference_wall = statistics.median(r["search_seconds"] for r in rows if r["method"] == REFERENCE)
    reference_test = statistics.median(r["test_rmse"] for r in rows if r["method"] == REFERENCE)
    lines = [
        f"\n### Search efficiency: LSTM on weekly CO2, {n_configs} configs per search, {n_seeds} seeds "
        "(median, range in brackets)\n",
        "| method | search wall-clock (s) | best val loss | test RMSE (ppm) | time to TPE-full best ±1% (s) "
        "| wall-clock vs TPE-full | test RMSE vs TPE-full | pruned configs | engine overhead |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        wall = statistics.median(r["search_seconds"] for r in mine)
        test = statistics.median(r["test_rmse"] for r in mine)
        lines.append(
            f"| {method} | {stat(method, 'search_seconds', '.0f')} | {stat(method, 'best_val_loss', '.5f')} "
            f"| {stat(method, 'test_rmse', '.4f')} | {stat(method, 'time_to_reference', '.0f')} "
            f"| {wall / reference_wall:.2f}x | {test / reference_test - 1:+.1%} "
            f"| {statistics.median(r['pruned'] for r in mine):.0f} "
            f"| {statistics.median(r['overhead_share'] for r in mine):.1%} "
            f"({statistics.median(r['overhead_per_trial'] for r in mine):.2f}s/trial) |"
        )
    for method in [m for m in methods if m != REFERENCE and m != "random_full"]:
        times = [r["time_to_reference"] for r in rows if r["method"] == method]
        ref_times = [r["search_seconds"] for r in rows if r["method"] == REFERENCE]
        ratios = [t / w for t, w in zip(times, ref_times, strict=True) if t == t]
        if ratios:
            lines.append(
                f"\n{method}: reached TPE-full's best (±1%) in {len(ratios)}/{len(times)} seeds, after a median "
                f"{statistics.median(ratios):.0%} of TPE-full's search wall-clock."
            )
        else:
            lines.append(f"\n{method}: did not reach TPE-full's best (±1%) in any seed.")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from tasks.tracking.plotting import pyplot

    plt = pyplot()

    colours = dict(zip(METHODS, ("tab:grey", "tab:blue", "tab:orange", "tab:green", "tab:red"), strict=True))
    figure, ax = plt.subplots(figsize=(9, 5))
    for row in rows:
        if not row["trajectory"]:
            continue
        times, bests = zip(*row["trajectory"], strict=True)
        label = row["method"] if row["seed"] == 0 else None
        ax.step(times, bests, where="post", color=colours[row["method"]], alpha=0.8, label=label)
    ax.set(xlabel="search wall-clock (s)", ylabel="best full-fidelity validation loss", title="Search efficiency")
    ax.set_yscale("log")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"total {time.time() - start:.0f}s", file=sys.stderr)
