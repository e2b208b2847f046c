"""The ``automl`` command as a user runs it (subprocesses): one-line errors with exit code 2 and nothing
written (the full matrix of malformed inputs is test_bad_input.py, in-process); a run on the user's own CSV whose
JSON matches what MLflow holds."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import REPO, make_series

AUTOML = str(Path(sys.executable).with_name("automl"))


def automl(*args: str, cwd: Path, home: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed ``automl`` command; its state folder is ``home`` or ``cwd/.automl``."""
    env = {**os.environ, "AUTOML_HOME": str(home or cwd / ".automl")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([AUTOML, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_validate_reports_the_plan(tmp_path):
    result = automl("validate", str(REPO / "configs" / "mlp_tabular.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ") and "classification" in result.stdout and "344 rows" in result.stdout


def test_a_shipped_config_is_named_on_the_command_line_and_the_version_is_printed(tmp_path, capsys):
    """``automl run|validate|lr-find NAME`` takes a shipped config by name, as ``predict --config`` does; a file
    of that name in the working directory wins."""
    from automl.cli import main

    assert main(["validate", "mlp_tabular"]) == 0
    assert "344 rows" in capsys.readouterr().out
    with pytest.raises(SystemExit) as shown:
        main(["--version"])
    assert shown.value.code == 0 and capsys.readouterr().out.startswith("automl 0.")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["run", "mlp_tabular", "--set", "search.n_trails=3"], "did you mean search.n_trials?"),
        (["lr-find", "mlp_tabular", "--param", "nope=1"], "nope"),
        (["predict", "--config", "mlp_tabular", "--data", "missing.csv"], "--data"),
        (["dashboard", "mlp_tabular"], "no Optuna studies"),
    ],
    ids=["run", "lr-find", "predict", "dashboard"],
)
def test_every_command_that_takes_a_config_takes_a_shipped_configs_name(tmp_path, capsys, monkeypatch, args, said):
    """The name resolves to the shipped file (the command gets past it and stops on the argument after, which these
    cases make bad), as ``validate NAME`` and ``serve --configs NAME`` do."""
    from automl.cli import main
    from automl.deployments.serve import config_files

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOML_HOME", str(tmp_path / "state"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err, err
    assert "no such config" not in err and "unknown shipped config" not in err  # a nonexistent name says these
    assert config_files(["mlp_tabular"]) == [REPO / "configs" / "mlp_tabular.yaml"]


def test_json_means_one_thing_and_every_command_shows_examples(tmp_path, capsys, monkeypatch):
    """Every ``--json`` has one meaning (stdout: the result, one JSON object per line, nothing else), and every
    command's ``--help`` ends with examples."""
    from automl.cli import JSON_HELP, _parser, main

    def commands(parser, prefix=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield (*prefix, name), child
                    yield from commands(child, (*prefix, name))

    found = dict(commands(_parser()))
    with_json = {name for name, p in found.items() if any("--json" in a.option_strings for a in p._actions)}
    assert {("run",), ("validate",), ("lr-find",), ("predict",), ("gc",), ("champion", "history")} <= with_json
    for name in with_json:
        (flag,) = [a for a in found[name]._actions if "--json" in a.option_strings]
        assert flag.help.startswith(JSON_HELP), name
    for name, p in found.items():
        if len(name) == 1:
            assert "examples:\n  automl " + name[0] in p.format_help(), name

    monkeypatch.setenv("AUTOML_HOME", str(tmp_path / "state"))
    assert main(["validate", "mlp_tabular", "--json"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert json.loads(line)["rows"] == 344 and json.loads(line)["task"] == "classification"
    assert main(["gc", "--json"]) == 0  # no state folder yet: nothing to remove, still one JSON line
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert json.loads(line)["before_bytes"] == 0 and not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "search.space.lr.low=0"], "search.space.lr: low (0.0) must be > 0 when log is true"),
        (["--set", "data.target=price"], "data.target: column 'price' not found in co2_weekly.csv"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, args, message):
    result = automl("run", str(REPO / "configs" / "lstm_baseline.yaml"), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip().removeprefix('error: ')}"]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / ".automl").exists()


@pytest.mark.e2e
def test_run_on_a_users_own_csv_prints_json_that_matches_mlflow(tmp_path):
    csv = tmp_path / "my_series.csv"
    make_series(260).rename(columns={"week": "timestamp", "sales": "load"}).to_csv(csv, index=False)
    result = automl(
        "run",
        str(REPO / "configs" / "lstm_baseline.yaml"),
        "--set",
        "search.n_trials=2",
        "--set",
        f"data.path={csv.name}",
        "--set",
        "data.target=load",
        "--set",
        "data.time_column=timestamp",
        "--set",
        "data.lookback=12",
        "--set",
        "search.epochs=1",
        "--set",
        "final.epochs=2",
        "--set",
        "search.space.hidden_size.high=128",
        "--budget",
        "300",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # --json: stdout is the JSON and nothing else
    summary = json.loads(lines[-1])
    assert "test metric" in result.stderr  # the human summary table goes to stderr
    assert "trial   0 |" in result.stderr and "best" in result.stderr  # a progress line per trial...
    assert re.search(r"trial   \d .*\| 1/2, \d+s in, ETA \d+s", result.stderr), result.stderr  # ...with n/N, an ETA
    for key in (
        "status",
        "experiment",
        "pipeline_run_id",
        "study_name",
        "backend",
        "trials",
        "best_params",
        "best_val_loss",
        "warm_start",
        "test_metrics",
        "baseline_metrics",
        "model_uri",
        "registered_model",
        "stage_seconds",
        "total_seconds",
    ):
        assert key in summary
    assert summary["status"] == "completed" and sum(summary["trials"].values()) == 2
    assert summary["budget"]["seconds"] == 300 and 0 < summary["budget"]["used"] < 300
    assert summary["mlflow_tracking_uri"] == f"sqlite:///{tmp_path / '.automl' / 'mlflow.db'}"
    assert (tmp_path / ".automl" / "optuna.db").is_file()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()

    client = MlflowClient(tracking_uri=summary["mlflow_tracking_uri"])
    parent = client.get_run(summary["pipeline_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["best_hidden_size"] == str(
        summary["best_params"]["hidden_size"]
    )
    stages = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(stages) == 4
    search = next(r for r in stages if r.data.tags["automl.stage"] == "search")
    trials = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{search.info.run_id}'")
    assert len(trials) == 2
    mlflow.set_tracking_uri(summary["mlflow_tracking_uri"])
    version = client.get_model_version(summary["registered_model"]["name"], str(summary["registered_model"]["version"]))
    assert version.source == summary["model_uri"]
    assert client.get_registered_model(summary["registered_model"]["name"]).aliases.get("champion") == version.version
