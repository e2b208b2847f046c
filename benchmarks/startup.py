"""Start-up: how long from typing ``automl run`` to the first trial starting, on a machine where the venv is installed.

Runs ``automl run`` on the demo config with a one-trial, one-epoch search several times, each a new process, in one
throwaway state folder (its own MLflow, Optuna and Prefect databases): the first run is the first on a fresh
machine (databases created), the others are what every later run waits. Then the same later runs against a
``prefect server`` already running (``PREFECT_API_URL`` set, as for deployments and schedules), where no run
boots a Prefect API of its own. For each run it times, from launching the
command: the pipeline's first progress line (flow started, MLflow run open), the search's first line (data prep and
warm start done, study open), the first trial's start (Optuna's record of the trial) and the whole run. Prints a
Markdown table (median of the later runs) and saves the raw rows as CSV.

    .venv/bin/python benchmarks/startup.py            # 1 + 5 runs, then 5 with a server: about 4 min on 2 CPU cores
    .venv/bin/python benchmarks/startup.py --runs 2   # quicker
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _setup import RESULTS, export_checkout, save_rows

REPO = Path(__file__).resolve().parents[1]
AUTOML = Path(sys.executable).parent / "automl"
TARGET_SECONDS = 5.0
SETTINGS = [
    "search.n_trials=1",
    "search.epochs=1",
    "final.epochs=1",
    "final.baselines=[]",
    "warm_start.enabled=false",
    "registry.enabled=false",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs after the first")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument(
        "--before",
        metavar="GIT_REV",
        help="also time this commit's code (a git archive of it), run for run alternating with the current code",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="automl-startup-"))
    before = export_checkout(args.before, work) if args.before else None
    env = {
        **os.environ,
        "AUTOML_HOME": str(work / "state"),
        "PREFECT_HOME": str(work / "prefect"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PREFECT_API_URL", None)
    rows = []
    for run in range(args.runs + 1):
        row = {"run": run, "first_on_machine": run == 0, "prefect": "temporary", **one_run(env, work)}
        rows.append(row)
        print(
            f"run {run}: first line {row['first_line']:.2f}s, search line {row['search_line']:.2f}s, "
            f"first trial {row['first_trial']:.2f}s, whole run {row['whole_run']:.1f}s",
            file=sys.stderr,
        )
        if before is not None and run > 0:
            rows.append({"run": run, "first_on_machine": False, "prefect": "before", **one_run(env, work, before)})
            print(f"run {run} of {args.before}: first trial {rows[-1]['first_trial']:.2f}s", file=sys.stderr)
    with prefect_server(env, work) as url:
        for run in range(args.runs):
            row = {
                "run": run,
                "first_on_machine": False,
                "prefect": "server",
                **one_run({**env, "PREFECT_API_URL": url}, work),
            }
            rows.append(row)
            print(f"run {run} against a running prefect server: first trial {row['first_trial']:.2f}s", file=sys.stderr)
    saved = save_rows(rows, args.out, "startup.csv")
    print(table(rows))
    print(f"\nraw results: {saved}")


def one_run(env: dict[str, str], work: Path, code: Path | None = None) -> dict:
    """One ``automl run`` (of ``code``, another checkout's folder, when given): seconds from launch to its first
    lines, its first trial's start and its end."""
    import json

    if code is None:
        command = [str(AUTOML), "run", str(REPO / "configs" / "lstm_baseline.yaml"), "--json"]
    else:  # the same venv, that checkout's packages first on the path
        command = [sys.executable, "-m", "automl.cli", "run", str(code / "configs" / "lstm_baseline.yaml"), "--json"]
        env = {**env, "PYTHONPATH": str(code)}
    for setting in SETTINGS:
        command += ["--set", setting]
    launched = time.time()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[str, float] = {}
    assert process.stderr is not None
    for line in process.stderr:
        if " pipeline run " in line:
            seen.setdefault("first_line", time.time() - launched)
        if " search: study " in line:
            seen.setdefault("search_line", time.time() - launched)
    stdout = process.stdout.read() if process.stdout else ""
    if process.wait() != 0:
        raise SystemExit(f"automl run failed with code {process.returncode}")
    ended = time.time() - launched
    summary = json.loads(stdout.strip().splitlines()[-1])
    import optuna

    study = optuna.load_study(study_name=summary["study_name"], storage=f"sqlite:///{work / 'state' / 'optuna.db'}")
    first = min(t.datetime_start for t in study.trials if t.datetime_start is not None)
    return {**seen, "first_trial": first.timestamp() - launched, "whole_run": ended}


@contextmanager
def prefect_server(env: dict[str, str], work: Path) -> Iterator[str]:
    """``prefect server start`` on a free port, as a team runs it for deployments; yields its API URL."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (work / "prefect-server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"prefect server did not start; see {work / 'prefect-server.log'}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        log.close()


def table(rows: list[dict]) -> str:
    first = rows[0]

    def cell(key: str, group: list[dict]) -> str:
        values = [r[key] for r in group]
        return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})" if values else "-"

    later = [r for r in rows if not r["first_on_machine"] and r["prefect"] == "temporary"]
    served = [r for r in rows if r["prefect"] == "server"]
    before = [r for r in rows if r["prefect"] == "before"]

    lines = [
        "\n### Start-up of `automl run`: seconds from the command to ... (demo config, a one-trial search)\n",
        "| run | first progress line (flow started, MLflow run open) | search line (study open) | first trial starts "
        "| whole run |",
        "|---|---|---|---|---|",
        f"| first on a fresh machine (databases created) | {first['first_line']:.2f} | {first['search_line']:.2f} "
        f"| {first['first_trial']:.2f} | {first['whole_run']:.1f} |",
    ]
    groups = [("later runs", later), ("later runs, a `prefect server` already running", served)]
    if before:
        groups.insert(1, ("later runs, the code before (`--before`)", before))
    for label, group in groups:
        lines.append(
            f"| {label} (median of {len(group)}, range) | {cell('first_line', group)} | {cell('search_line', group)} "
            f"| {cell('first_trial', group)} | {cell('whole_run', group)} |"
        )
    for label, group in (("its own temporary Prefect API", later), ("a running prefect server", served)):
        if group:
            median = statistics.median(r["first_trial"] for r in group)
            verdict = "met" if median <= TARGET_SECONDS else "NOT met"
            lines.append(
                f"\nTarget, first trial within {TARGET_SECONDS:g} s of the command, with {label}: {verdict} "
                f"({median:.2f} s)."
            )
    if before and later:
        ratio = statistics.median(r["first_trial"] for r in later) / statistics.median(r["first_trial"] for r in before)
        lines.append(f"\nFirst trial, now against before: {ratio:.2f}x the time.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
