"""Start-up of ``automl predict``: seconds from typing the command to its exit, on a machine with the venv installed.

Builds a throwaway state folder (its own MLflow registry, Optuna and Prefect databases) with two registered models
from tiny runs (``mlp_tabular`` and ``lstm_baseline``, two trials of one or two epochs: their quality is beside the
point), then, several times each, as new processes:

- ``automl predict`` on 10,000 table rows (penguins, sampled with replacement) to a CSV file;
- ``automl predict`` on the CO2 series' whole history (the next step), and with ``--rolling`` (every window);

and times the whole command from its launch to its exit. Beside each, ``benchmarks/_predict_phases.py`` makes the
command's calls one by one with a clock between them: interpreter start, imports (the CLI, pandas, MLflow), reading
the rows, opening the registry (MLflow's SQLAlchemy store), loading the model (torch, its weights), checking and
predicting, writing, and the interpreter's exit. Prints a Markdown table (medians) and saves the raw rows as CSV and
the phases as a plot in ``benchmarks/results/``.

    .venv/bin/python benchmarks/predict_startup.py                    # 5 repeats: about 3 min on 2 CPU cores
    .venv/bin/python benchmarks/predict_startup.py --before 8d177a9   # also the code of that commit, alternating
    .venv/bin/python benchmarks/predict_startup.py --state DIR        # reuse DIR's models (built when missing)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _setup import RESULTS, export_checkout, save_rows

REPO = Path(__file__).resolve().parents[1]
AUTOML = Path(sys.executable).parent / "automl"
PHASES = Path(__file__).resolve().parent / "_predict_phases.py"
TARGET_SECONDS = 3.0
TABLE_ROWS = 10_000
TINY = [
    "search.n_trials=2",
    "search.epochs=2",
    "search.fidelity=none",
    "final.epochs=2",
    "final.baselines=[]",
    "final.ensemble.top_k=1",
    "warm_start.enabled=false",
]
STEPS = ["interpreter", "imports", "read", "registry", "model_load", "predict", "write", "exit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--state", help="a folder for the throwaway state (kept); default: a new temporary one")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--before", metavar="GIT_REV", help="also time this commit's code, alternating run for run")
    args = parser.parse_args()
    work = Path(args.state or tempfile.mkdtemp(prefix="automl-predict-startup-")).resolve()
    env = {**os.environ, "AUTOML_HOME": str(work / "state"), "PREFECT_HOME": str(work / "prefect")}
    env.pop("MLFLOW_TRACKING_URI", None)
    cases = build_state(work, env)
    before = export_checkout(args.before, work) if args.before else None
    load = os.getloadavg()[0]
    rows = []
    for repeat in range(args.repeats):
        for case, (uri, data, extra) in cases.items():  # interleaved, so the machine's load hits every case alike
            out = work / f"out-{len(rows)}.csv"
            row = {"case": case, "repeat": repeat, "code": "current", **whole_command(env, uri, data, out, extra)}
            row.update(phases(env, uri, data, work / f"phases-{len(rows)}.csv", extra))
            rows.append(row)
            print(f"{case} #{repeat}: {row['whole']:.2f}s", file=sys.stderr)
            if before is not None:
                old = whole_command(env, uri, data, out, extra, before)
                rows.append({"case": case, "repeat": repeat, "code": args.before, **old})
                print(f"{case} #{repeat} at {args.before}: {old['whole']:.2f}s", file=sys.stderr)
    saved = save_rows(rows, args.out, "predict_startup.csv")
    plot(rows, saved.with_suffix(".png"))
    command = " ".join(["benchmarks/predict_startup.py", *sys.argv[1:]])
    print(
        f"`{command}` on {date.today().isoformat()}, {platform.machine()} with {os.cpu_count()} CPUs "
        f"(load average {load:.1f} at the start)\n"
    )
    print(table(rows, args.before))
    print(f"\nraw results: {saved}; plot: {saved.with_suffix('.png')}")


def build_state(work: Path, env: dict[str, str]) -> dict[str, tuple[str, Path, list[str]]]:
    """Register the two models (unless ``work`` has them) and write the table's rows; the cases to time."""
    import pandas as pd

    rows = work / "table-rows.csv"
    if not (work / "state" / "mlflow.db").is_file():
        for config in ("mlp_tabular", "lstm_baseline"):
            sets = [arg for setting in TINY for arg in ("--set", setting)]
            print(f"registering a tiny {config} model in {work}", file=sys.stderr)
            subprocess.run([str(AUTOML), "run", config, *sets], env=env, check=True, capture_output=True)
    if not rows.is_file():
        penguins = pd.read_csv(REPO / "configs" / "data" / "penguins.csv").drop(columns=["species"])
        penguins.sample(TABLE_ROWS, replace=True, random_state=0).to_csv(rows, index=False)
    series = REPO / "configs" / "data" / "co2_weekly.csv"
    return {
        f"table, {TABLE_ROWS:,} rows": ("models:/mlp_tabular@champion", rows, []),
        "series, next step from the history": ("models:/lstm_baseline@champion", series, []),
        "series, --rolling over the history": ("models:/lstm_baseline@champion", series, ["--rolling"]),
    }


def whole_command(
    env: dict[str, str], uri: str, data: Path, out: Path, extra: list[str], code: Path | None = None
) -> dict:
    """One ``automl predict`` (of ``code``, another checkout's folder, when given): seconds from launch to exit."""
    args = ["predict", "--model", uri, "--data", str(data), "--out", str(out), *extra]
    if code is None:
        command = [str(AUTOML), *args]
    else:  # the same venv, that checkout's packages first on the path
        command = [sys.executable, "-m", "automl.cli", *args]
        env = {**env, "PYTHONPATH": str(code)}
    launched = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    ended = time.time() - launched
    if done.returncode != 0:
        raise SystemExit(f"automl predict failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return {"whole": ended}


def phases(env: dict[str, str], uri: str, data: Path, out: Path, extra: list[str]) -> dict:
    """The command's steps, each in seconds (``_predict_phases.py`` in a new process)."""
    launched = time.time()
    done = subprocess.run(
        [sys.executable, str(PHASES), uri, str(data), str(out), *extra],
        env={**env, "PREDICT_LAUNCHED_AT": repr(launched)},
        capture_output=True,
        text=True,
    )
    ended = time.time() - launched
    if done.returncode != 0:
        raise SystemExit(f"_predict_phases.py failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    marks["exit"] = ended
    steps, previous = {}, 0.0
    for step in STEPS:
        steps[step] = marks[step] - previous
        previous = marks[step]
    return {**steps, "phases_whole": ended, "rows_out": marks["rows_out"]}


def table(rows: list[dict], before: str | None) -> str:
    def median(key: str, group: list[dict]) -> float:
        return statistics.median(r[key] for r in group)

    cases = list(dict.fromkeys(r["case"] for r in rows))
    current = {case: [r for r in rows if r["case"] == case and r["code"] == "current"] for case in cases}
    head = "| case | predictions | whole command (median, range) |"
    rule = "|---|---|---|"
    if before:
        head += f" the code at {before} |"
        rule += "---|"
    head += " " + " | ".join(STEPS) + f" | within {TARGET_SECONDS:g} s |"
    rule += "---|" * (len(STEPS) + 1)
    lines = [
        f"### Start-up of `automl predict`: seconds from launch to exit (median of {len(current[cases[0]])})\n",
        head,
        rule,
    ]
    for case, group in current.items():
        whole = [r["whole"] for r in group]
        cells = [
            case,
            f"{group[0]['rows_out']:,}",
            f"{statistics.median(whole):.2f} ({min(whole):.2f}–{max(whole):.2f})",
        ]
        if before:
            old = [r["whole"] for r in rows if r["case"] == case and r["code"] == before]
            cells.append(f"{statistics.median(old):.2f} ({min(old):.2f}–{max(old):.2f})")
        cells += [f"{median(step, group):.2f}" for step in STEPS]
        cells.append("met" if statistics.median(whole) <= TARGET_SECONDS else "NOT met")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "\nSteps (from `_predict_phases.py`, the command's calls with a clock between them): interpreter = launch "
        "to the first line; imports = the CLI, pandas, MLflow; registry = MLflow's SQLAlchemy store opened; "
        "model_load = resolving the alias, torch, the model's weights; predict = checking the rows and predicting; "
        "exit = the interpreter's shutdown."
    )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    figure, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(cases)))
    for i, case in enumerate(cases):
        group = [r for r in rows if r["case"] == case and r["code"] == "current"]
        left = 0.0
        for j, step in enumerate(STEPS):
            width = statistics.median(r[step] for r in group)
            ax.barh(i, width, left=left, color=f"C{j}", label=step if i == 0 else None)
            left += width
    ax.axvline(TARGET_SECONDS, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(cases)), cases, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from launch (median of each step)")
    ax.legend(fontsize=7, ncol=4, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
