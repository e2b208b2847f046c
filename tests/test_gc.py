"""Retention: ``automl gc`` and the clean-up a pipeline run does once it has finished, on three tiny real pipeline
runs of one config in one state folder (MLflow on SQLite, Optuna, Prefect). The tests run in file order: the last
ones remove files the first ones look at."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from automl.cli import main
from tasks.runtime.retention import disk_used
from tasks.summary import PipelineSummary
from tests.helpers import REPO, make_series, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runs(prefect_api, tmp_path_factory):
    """Three runs of one config (A, B: clean-up off; C: the default, on), each registering a version."""
    from flows.pipeline import automl_pipeline

    work = tmp_path_factory.mktemp("gc")
    series = work / "sales.csv"
    make_series(200).to_csv(series, index=False)
    config = write_config(
        work,
        series,
        search={"n_trials": 2, "epochs": 1},
        final={"epochs": 1, "patience": 1},
        warm_start={"enabled": False},
    )
    state = work / "state"
    with pytest.MonkeyPatch.context() as patch, _results_in(state):
        patch.setenv("AUTOML_HOME", str(state))
        summaries = [
            automl_pipeline(config_path=str(config), overrides=[f"seed={seed}", "final.clean_up=false"])
            for seed in (1, 2)
        ]
        summaries.append(automl_pipeline(config_path=str(config), overrides=["seed=3"]))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    for summary in summaries:
        assert isinstance(summary, PipelineSummary) and summary.status == "completed", summary
    return {"state": state, "a": summaries[0], "b": summaries[1], "c": summaries[2]}


def _results_in(state: Path):
    """Prefect's results in this state folder, as ``automl`` puts them (the suite's session keeps them elsewhere)."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    return temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: state / "prefect-results"})


def _client(runs) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{runs['state'] / 'mlflow.db'}")


def _files(state: Path) -> dict[str, int]:
    """Every file under the state folder but the databases (which MLflow writes to on every read), with its size."""
    return {
        str(p.relative_to(state)): p.stat().st_size
        for p in state.rglob("*")
        if p.is_file() and ".db" not in p.name and p.name != "prefect-server.log"
    }


def _heavy(runs, summary: PipelineSummary) -> dict[str, bool]:
    """Whether each kind of a pipeline run's heavy files is still there (True) or gone (False)."""
    client, state, run_id = _client(runs), runs["state"], summary.pipeline_run_id
    run = client.get_run(run_id)
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    stages = {r.data.tags["automl.stage"]: r for r in children}
    trainings = client.search_runs(
        [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{stages['final_train'].info.run_id}'"
    )
    assert trainings
    return {
        "trial_weights": (state / "trial-weights" / summary.study_name).is_dir(),
        "best_trial_weights.pt": "best_trial_weights.pt"
        in {f.path for f in client.list_artifacts(stages["search"].info.run_id)},
        "checkpoint.pt": any(
            "checkpoint.pt" in {f.path for f in client.list_artifacts(t.info.run_id)} for t in trainings
        ),
        "prefect_results": any(run_id in p.name for p in (state / "prefect-results").iterdir()),
    }


def _gc(runs, monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("AUTOML_HOME", str(runs["state"]))
    with _results_in(runs["state"]):
        code = main(["gc", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _owned_by(runs, summary: PipelineSummary, pid: int) -> None:
    """Mark a pipeline run RUNNING, owned by process ``pid`` on this host (what a run in progress looks like)."""
    client = _client(runs)
    client.update_run(summary.pipeline_run_id, status="RUNNING")
    client.set_tag(summary.pipeline_run_id, "automl.host", socket.gethostname())
    client.set_tag(summary.pipeline_run_id, "automl.pid", str(pid))


def test_a_finished_run_removes_its_own_trial_weights_checkpoints_and_prefect_results_unless_the_key_says_not(runs):
    assert _heavy(runs, runs["c"]) == dict.fromkeys(
        ("trial_weights", "best_trial_weights.pt", "checkpoint.pt", "prefect_results"), False
    )
    for kept in ("a", "b"):  # final.clean_up: false
        assert all(_heavy(runs, runs[kept]).values()), _heavy(runs, runs[kept])
    client = _client(runs)
    c = client.get_run(runs["c"].pipeline_run_id)
    assert c.info.status == "FINISHED" and c.data.metrics["test_rmse"] == pytest.approx(runs["c"].test_metrics["rmse"])
    mlflow.set_tracking_uri(f"sqlite:///{runs['state'] / 'mlflow.db'}")  # the autouse fixture clears it after
    assert mlflow.artifacts.load_dict(f"runs:/{c.info.run_id}/best_config.json")  # what warm start reads stays


def test_gc_dry_run_prints_what_it_would_remove_and_removes_nothing(runs, monkeypatch, capsys):
    before, used = _files(runs["state"]), disk_used(runs["state"])

    code, out, _ = _gc(runs, monkeypatch, capsys, "--keep", "0", "--dry-run")

    assert code == 0
    assert _files(runs["state"]) == before
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert lines["trial weights"].startswith("would remove 4 ")  # A's and B's folders and search artifacts
    assert lines["checkpoints"].startswith("would remove ") and not lines["checkpoints"].startswith("would remove 0")
    assert lines["Prefect results"].startswith("would remove 6 ")  # three stages' results of A and of B
    assert "before" in out and "after (estimated)" in out
    assert disk_used(runs["state"]) - used < 50_000  # only the databases may have grown (MLflow's reads)


@pytest.mark.parametrize(
    "args",
    [
        ("--keep", "-1"),
        ("--keep", "1.5"),
        ("--keep", "true"),
        ("--keep", ""),
        ("--keep", "99999999999999999999"),
        ("--older-than", "nan"),
        ("--older-than", "inf"),
        ("--older-than", "1e400"),
        ("--older-than", "-2"),
        ("--older-than", "a week"),
    ],
)
def test_bad_gc_arguments_are_refused_in_one_line_with_exit_2_and_nothing_removed(runs, monkeypatch, capsys, args):
    before = _files(runs["state"])

    code, out, err = _gc(runs, monkeypatch, capsys, *args)

    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {args[0]}: ")
    assert _files(runs["state"]) == before


def test_gc_keeps_the_last_runs_every_registered_version_and_a_run_in_progress(runs, monkeypatch, capsys):
    client = _client(runs)
    versions = client.search_model_versions("name = 'tiny_lstm'")
    assert len(versions) == 3
    sources = {v.run_id: {f.path for f in client.list_artifacts(v.run_id)} for v in versions}
    model_files = {
        v.version: {p for p in _files(runs["state"]) if f"/models/{v.source.rsplit('/', 1)[-1]}/" in p}
        for v in versions
    }
    assert all(model_files.values())
    _owned_by(runs, runs["a"], os.getpid())  # A is in progress: this very process owns it
    c_before = {p: s for p, s in _files(runs["state"]).items() if runs["c"].pipeline_run_id in p}

    code, out, _ = _gc(runs, monkeypatch, capsys, "--keep", "1", "--older-than", "0")  # as eager as gc gets

    assert code == 0 and "removed" in out
    assert not any(_heavy(runs, runs["b"]).values())  # beyond the last run, finished: its heavy files are gone
    assert all(_heavy(runs, runs["a"]).values())  # in progress: untouched, however old
    assert {p: s for p, s in _files(runs["state"]).items() if runs["c"].pipeline_run_id in p} == c_before
    files = _files(runs["state"])
    for version in versions:  # every registered version keeps its source run's artifacts and its model
        assert {f.path for f in client.list_artifacts(version.run_id)} == sources[version.run_id]
        assert model_files[version.version] <= set(files)
    b = client.get_run(runs["b"].pipeline_run_id)  # the run itself, its metrics and configs stay
    assert b.info.status == "FINISHED" and b.data.metrics["best_val_loss"] == pytest.approx(runs["b"].best_val_loss)
    assert "best_config.json" in {f.path for f in client.list_artifacts(b.info.run_id)}
    mlflow.set_tracking_uri(f"sqlite:///{runs['state'] / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("tiny_lstm", "champion")
    assert mlflow.pyfunc.load_model(f"models:/tiny_lstm/{champion.version}") is not None


def test_an_unfinished_run_whose_process_is_gone_is_removed_only_with_older_than(runs, monkeypatch, capsys):
    _owned_by(runs, runs["a"], 2**22 + 1)  # above Linux's largest pid: its process is gone, the run resumable

    assert _gc(runs, monkeypatch, capsys, "--keep", "1")[0] == 0
    assert all(_heavy(runs, runs["a"]).values())  # the same command would resume it: kept
    assert _gc(runs, monkeypatch, capsys, "--keep", "1", "--older-than", "1")[0] == 0
    assert all(_heavy(runs, runs["a"]).values())  # not a day old yet

    code, out, _ = _gc(runs, monkeypatch, capsys, "--keep", "1", "--older-than", "0")

    assert code == 0 and "trial weights: removed 2 " in out
    assert not any(_heavy(runs, runs["a"]).values())
    assert _client(runs).get_run(runs["a"].pipeline_run_id).info.status == "RUNNING"  # gc closes nothing


@pytest.mark.parametrize("value", ["1", '"true"', "[]"])
def test_final_clean_up_takes_only_a_real_boolean(value):
    from configs import InputError, load_config

    with pytest.raises(InputError, match=r"final\.clean_up: "):
        load_config(REPO / "configs" / "lstm_baseline.yaml", [f"final.clean_up={value}"])
