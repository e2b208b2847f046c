"""The Python API (``from automl import run, load_champion``): the example in docs/api.md runs as written, and its
``run`` on a DataFrame finds what ``automl run`` finds on the same rows; its champion predicts what ``automl
predict`` writes; bad arguments are one ``InputError`` line with nothing created. Real Prefect, MLflow, Optuna."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from automl.configs import InputError
from tests.helpers import REPO
from tests.test_cli import automl

PENGUINS = REPO / "configs" / "data" / "penguins.csv"
DOC = REPO / "docs" / "api.md"
# the overrides of the doc's example, as the command takes them
CLI_SETTINGS = ["search.n_trials=2", "search.epochs=1", "final.epochs=2", "final.patience=1"]
# what a run decides from its config, seed and rows (not its ids, times or the data file's fingerprint)
DETERMINISTIC = (
    "backend",
    "sampler",
    "fidelity",
    "model_family",
    "family",
    "task_type",
    "trials",
    "best_trial",
    "best_params",
    "best_val_loss",
    "chosen",
    "test_metrics",
    "primary_metric",
    "baseline_metrics",
    "registered_model",
    "champion",
    "ensemble",
    "promotion",
)


def doc_example() -> str:
    """The Python block under docs/api.md's "Example" heading, as written."""
    section = DOC.read_text().split("\n## Example\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "docs/api.md: the Example section has one python block"
    return blocks[0]


@pytest.fixture(scope="module")
def runs(prefect_api, tmp_path_factory):
    """The doc's example executed as written (from the repository's root, into its own state folder), and
    ``automl run --json`` with the same overrides on the same rows (the shipped config's CSV) in another."""
    work = tmp_path_factory.mktemp("api")
    namespace: dict = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        patch.setenv("AUTOML_HOME", str(work / "api-home"))
        exec(compile(doc_example(), str(DOC), "exec"), namespace)
    import os

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    settings = [arg for item in CLI_SETTINGS for arg in ("--set", item)]
    result = automl("run", "mlp_tabular", *settings, "--budget", "600", "--json", cwd=work, home=work / "cli-home")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"work": work, "api": namespace, "cli": json.loads(result.stdout.strip().splitlines()[-1])}


def test_the_doc_example_runs_and_its_run_on_a_dataframe_gives_the_summary_the_cli_gives_on_the_same_rows(runs):
    api = json.loads(json.dumps(runs["api"]["summary"].to_json(), default=str))
    cli = runs["cli"]
    assert api["status"] == cli["status"] == "completed"
    assert sum(api["trials"].values()) == 2 and api["registered_model"] == {"name": "mlp_tabular", "version": 1}
    for field in DETERMINISTIC:
        assert api[field] == cli[field], field
    assert api["budget"]["seconds"] == cli["budget"]["seconds"] == 600
    assert api["pipeline_run_id"] != cli["pipeline_run_id"]  # two runs, in two state folders
    assert str(runs["work"] / "api-home") in api["mlflow_tracking_uri"]


def test_the_dataframe_is_kept_in_the_state_folder_under_its_fingerprint_as_the_runs_data_path(runs):
    summary = runs["api"]["summary"]
    kept = runs["work"] / "api-home" / "api-data" / f"{summary.dataset_fingerprint}.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(kept), pd.read_csv(PENGUINS))
    from mlflow.tracking import MlflowClient

    from automl.tasks.tracking.catalog import DATA_SOURCE

    run = MlflowClient(summary.mlflow_tracking_uri).get_run(summary.pipeline_run_id)
    assert run.data.tags[DATA_SOURCE] == kept.name


def test_the_champion_predicts_what_automl_predict_writes(runs, monkeypatch):
    from automl import load_champion

    home = runs["work"] / "api-home"
    out = runs["work"] / "predicted.parquet"
    result = automl(
        "predict", "--model", "models:/mlp_tabular@champion", "--data", str(PENGUINS), "--out", str(out),
        cwd=runs["work"], home=home,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    monkeypatch.setenv("AUTOML_HOME", str(home))
    champion = load_champion("mlp_tabular")
    assert (champion.name, champion.version, champion.uri) == ("mlp_tabular", 1, "models:/mlp_tabular/1")
    predicted = champion.predict(pd.read_csv(PENGUINS))
    pd.testing.assert_frame_equal(predicted, pd.read_parquet(out))
    assert predicted["prediction"].isin(["Adelie", "Chinstrap", "Gentoo"]).all() and len(predicted) == 344
    doc_rows = runs["api"]["predictions"]  # the example's five rows, without the target
    assert list(doc_rows["prediction"]) == list(predicted["prediction"].head())


def test_the_champion_refuses_rows_without_a_feature_and_an_unknown_model_in_one_line(runs, monkeypatch):
    from automl import load_champion

    monkeypatch.setenv("AUTOML_HOME", str(runs["work"] / "api-home"))
    champion = load_champion("mlp_tabular")
    with pytest.raises(InputError, match=r"^data: .*island"):
        champion.predict(pd.read_csv(PENGUINS).drop(columns="island"))
    with pytest.raises(InputError, match=r"^data: give a pandas DataFrame"):
        champion.predict(PENGUINS)
    with pytest.raises(InputError, match=r"^name: no registered model 'penguins'"):
        load_champion("penguins")


def _rows() -> pd.DataFrame:
    return pd.read_csv(PENGUINS)


BAD = [
    ({"data": _rows().drop(columns="species")}, r"^data\.target: column 'species' not found in data \("),
    ({"data": _rows().head(0)}, r"^data: the DataFrame is empty"),
    ({"data": "configs/data/penguins.csv"}, r"^data: give a pandas DataFrame \(got str\)"),
    ({"data": _rows().assign(island=[1, "x"] * 172)}, r"^data: cannot be stored as Parquet"),
    ({"overrides": {"search.n_trialz": 3}}, r"search\.n_trialz: unknown key; did you mean search\.n_trials\?"),
    ({"overrides": ["search.n_trialz=3"]}, r"search\.n_trialz: unknown key"),
    ({"overrides": {"search.n_trials": -3}}, r"search\.n_trials"),
    ({"overrides": "search.n_trials=3"}, r"^overrides: give a dict"),
    ({"overrides": {"": 3}}, r"^overrides: '' is not a config key"),
    ({"overrides": [3]}, r"^overrides: 3 is not a 'key=value' string"),
    ({"data": _rows(), "overrides": {"data.path": "x.csv"}}, r"^overrides: data\.path: the rows are given as data="),
    ({"data": _rows(), "overrides": [" data.path = x.csv"]}, r"^overrides: data\.path"),
    ({"budget": -1}, r"^budget: give the run's budget in seconds, a number > 0 \(got -1\)"),
    ({"budget": True}, r"^budget: .*\(got True\)"),
    ({"budget": float("nan")}, r"^budget: .*\(got nan\)"),
    ({"budget": 10**400}, r"^budget: .*\(got 1000000000"),  # past any float: not finite either
    ({"budget": "600"}, r"^budget: .*\(got '600'\)"),
    ({"study_name": "../escape"}, r"^study_name: '\.\./escape' is not a name"),
    ({"config": "no_such_config"}, r"no_such_config"),
    ({"config": 3}, r"^config: give a shipped config's name or a YAML file's path"),
]


@pytest.mark.parametrize(("arguments", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_arguments_raise_one_input_error_line_and_create_nothing(home, arguments, message):
    from automl import run

    arguments = {"config": "mlp_tabular", **arguments}
    with pytest.raises(InputError, match=message) as error:
        run(arguments.pop("config"), **arguments)
    assert "\n" not in str(error.value)
    assert not home.exists()  # no state folder: no MLflow run, Optuna study or kept data
    assert not (home.parent / "mlruns").exists() and not (home.parent / "mlflow.db").exists()


def test_importing_automl_is_cheap_and_exports_the_api_lazily():
    code = (
        "import sys, automl; loaded = sorted({'pandas', 'prefect', 'mlflow', 'torch'} & set(sys.modules)); "
        "from automl import run, load_champion, Champion, PipelineFailed; print(loaded, run.__module__)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[] automl.api"
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        import automl

        automl.fit  # noqa: B018
