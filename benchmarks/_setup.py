"""What every pipeline benchmark shares: the common options, a throwaway state folder (its own MLflow, Optuna and
Prefect results) with Prefect's environment set before Prefect is imported and the console quiet, where the raw
results go, and another commit's code to time beside today's (``export_checkout``)."""

from __future__ import annotations

import argparse
import os
import subprocess
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


def export_checkout(rev: str, work: Path) -> Path:
    """The code of commit ``rev``, extracted into a folder of ``work`` (reused when there), importable from that
    folder with this venv's libraries (``PYTHONPATH``): a checkout whose packages install under ``automl``
    (``automl.tasks`` is ``tasks/``) gets links in its ``automl/`` to its own ``tasks/``, ``configs/``, ... (else the
    installed package's finder would serve today's code under those names); an older one imports ``tasks`` itself."""
    repo = Path(__file__).resolve().parent.parent
    folder = work / f"code-{rev}"
    if not folder.is_dir():
        folder.mkdir()
        archive = subprocess.run(["git", "-C", str(repo), "archive", rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    if '"automl.tasks" = "tasks"' in (folder / "pyproject.toml").read_text():
        for name in ("configs", "flows", "tasks", "models", "deployments"):
            link = folder / "automl" / name
            if not link.exists():
                link.symlink_to(folder / name, target_is_directory=True)
    return folder
