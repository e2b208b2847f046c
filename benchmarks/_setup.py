"""What every pipeline benchmark shares: the common options, a throwaway state folder (its own MLflow, Optuna and
Prefect results) with Prefect's environment set before Prefect is imported and the console quiet, and where the raw
results go."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def pipeline_benchmark_parser(doc: str, trials: int, seeds: int) -> argparse.ArgumentParser:
    """The options every pipeline benchmark takes: trials per search, seeds, where results go, a quick smoke run."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--trials", type=int, default=trials, help="configs per search")
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the script, measures nothing")
    return parser


def isolated_pipeline_home(prefix: str) -> Path:
    """A new temporary folder; the pipelines run in this process keep their state under ``<folder>/state``."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["AUTOML_HOME"] = str(work / "state")
    from automl.tasks.runtime.state import configure_environment

    configure_environment()
    from automl.cli import setup_console

    setup_console(progress=False)
    return work


def save_rows(rows: list[dict], out: str | Path, name: str, leave_out: tuple[str, ...] = ()) -> Path:
    """The benchmark's raw rows (without the keys in ``leave_out``) as ``<out>/<name>``, a CSV; returns its path."""
    import pandas as pd

    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{k: v for k, v in row.items() if k not in leave_out} for row in rows]).to_csv(path, index=False)
    return path
