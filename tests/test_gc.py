"""Retention: ``automl gc`` and the clean-up a pipeline run does once it has finished, on three tiny real pipeline
runs of one config in one state folder (MLflow on SQLite, Optuna, Prefect). The tests run in file order: the last
ones remove files the first ones look at."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow import MlflowClient

from automl.cli import main
from automl.tasks.runtime.retention import disk_used
from automl.tasks.search_stage.checkpoints import trial_weights_path
from automl.tasks.summary import PipelineSummary
from tests.helpers import REPO, make_series, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runs(prefect_api, tmp_path_factory):
    """Three runs of one config (A, B: clean-up off; C: the default, on), each registering a version."""
    from automl.flows.pipeline import automl_pipeline

    work = tmp_path_factory.mktemp("gc")
    series = work / "sales.csv"
    make_series(200).to_csv(series, index=False)
    config = write_config(
        work,
        series,
        search={"n_trials": 2, "epochs": 1},
        final={"epochs": 1, "patience": 1, "ensemble": {"top_k": 1}},
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
    assert _heavy(runs, runs["c"]) == {
        "trial_weights": True,  # the best config's weights, which a run continuing the study starts from
        "best_trial_weights.pt": False,
        "checkpoint.pt": False,
        "prefect_results": False,
    }
    folder = runs["state"] / "trial-weights" / runs["c"].study_name
    best = trial_weights_path(folder, runs["c"].best_params)
    assert best.is_file() and list(folder.iterdir()) == [best]  # final.ensemble.top_k: 1
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
    # A's and B's study folders and search artifacts, and C's study folder (its best config's weights)
    assert lines["trial weights"].startswith("would remove 5 ")
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
        ("--keep", "٥"),  # digits, but not ASCII ones
        ("--keep", "５"),
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
    results = runs["state"] / "prefect-results"
    foreign = results / "another-projects-result"  # the folder may be shared: not named as ours, never ours
    gone = results / f"search-{'0' * 32}-v1"  # named as ours, of a run this store does not know
    for path in (foreign, gone):
        path.write_text("x" * 1000)
        os.utime(path, (0, 0))

    assert _gc(runs, monkeypatch, capsys, "--keep", "1")[0] == 0
    assert all(_heavy(runs, runs["a"]).values())  # the same command would resume it: kept
    assert _gc(runs, monkeypatch, capsys, "--keep", "1", "--older-than", "1")[0] == 0
    assert all(_heavy(runs, runs["a"]).values())  # not a day old yet

    code, out, _ = _gc(runs, monkeypatch, capsys, "--keep", "1", "--older-than", "0")

    assert code == 0 and "trial weights: removed 2 " in out
    assert not any(_heavy(runs, runs["a"]).values())
    assert foreign.is_file() and not gone.exists()
    assert _client(runs).get_run(runs["a"].pipeline_run_id).info.status == "RUNNING"  # gc closes nothing


@pytest.mark.parametrize("value", ["1", '"true"', "[]"])
def test_final_clean_up_takes_only_a_real_boolean(value):
    from automl.configs import InputError, load_config

    with pytest.raises(InputError, match=r"final\.clean_up: "):
        load_config(REPO / "configs" / "lstm_baseline.yaml", [f"final.clean_up={value}"])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_the_clean_up_of_a_finished_run_ends_only_the_clean_up(monkeypatch, signum):
    """The run is FINISHED before its clean-up: a Ctrl-C or SIGTERM then must not reach the CLI (which would lose the
    summary and ask for a rerun that starts a new pipeline); the clean-up stops at its next file."""
    from automl.tasks import pipeline_run
    from automl.tasks.runtime.interrupts import raise_if_stopped, stop_on_signals

    closed, seen = [], []

    def clean_up(state, pipeline, storage, top_k, stopped):
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # the handler runs here, in the middle of the clean-up
        seen.append(stopped())
        return []

    monkeypatch.setattr(pipeline_run, "close_run", lambda run_id, status: closed.append(status))
    monkeypatch.setattr(pipeline_run, "clean_up_finished_run", clean_up)
    cfg = SimpleNamespace(final=SimpleNamespace(clean_up=True, ensemble=SimpleNamespace(top_k=1)), search=None)
    monkeypatch.setattr(pipeline_run, "storage_url", lambda search: "sqlite://")
    with stop_on_signals():
        handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        pipeline_run.finish(cfg, Path("unused"), SimpleNamespace(run_id="r"))
        raise_if_stopped()  # what the CLI asks as the flow ends: nothing to raise
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # put back
    assert closed == ["FINISHED"] and seen == [True]
