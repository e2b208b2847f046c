"""Scheduled and UI-triggered runs over a real ``prefect server`` and ``automl serve``: deployments with cron
schedules and typed parameter forms, runs created the way the UI's Run button creates them, failures that read
as one line, queued collisions, and a click on Run -> Quick run in the Prefect UI itself (headless Chromium), whose
run a person then follows in the browser: its Logs tab in Prefect, its experiment, a trial's per-epoch chart and
the search's interactive plots in MLflow's UI, with the network blocked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from automl.deployments.serve import config_files, pipeline_deployments
from tests.helpers import REPO, free_port, make_series, stop_process_group, write_config

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ARTIFACTS_DIR = REPO / "test-artifacts"


def test_serve_builds_a_scheduled_deployment_per_shipped_config():
    built = pipeline_deployments(config_files(None))
    deployments = {d.name: d for d in built if d.flow_name == "automl-pipeline"}
    scoring = {d.name: d for d in built if d.flow_name == "automl-score"}
    assert set(deployments) == set(scoring) == {"lstm_baseline", "transformer_baseline", "mlp_tabular", "gbm_tabular"}
    for name, deployment in deployments.items():
        assert deployment.parameters == {"config": name}
        assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
        assert deployment.concurrency_limit == 1
        assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
        assert deployment.entrypoint == "automl.flows.pipeline.automl_pipeline"
        # the shipped configs set no scoring schedule: their score deployments run from the UI only
        assert scoring[name].schedules == [] and scoring[name].entrypoint == "automl.flows.score.automl_score"
    from prefect.utilities.callables import parameter_schema

    from automl.flows.pipeline import automl_pipeline

    schema = parameter_schema(automl_pipeline).model_dump()["properties"]
    assert schema["config"]["enum"] == ["gbm_tabular", "lstm_baseline", "mlp_tabular", "transformer_baseline"]
    assert {"n_trials", "timeout", "backend", "fidelity", "warm_start_enabled", "seed", "overrides"} <= set(schema)


def _wait(check, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f}s")


class _Api(httpx.Client):
    """An httpx client that retries 429/502/503 the way Prefect's own client does: a busy server on SQLite answers
    503 while its database is locked, and the UI simply retries."""

    def request(self, *args, **kwargs):
        for attempt in range(8):
            response = super().request(*args, **kwargs)
            if response.status_code not in (429, 502, 503):
                return response
            time.sleep(min(0.5 * 2**attempt, 8))
        return response


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """``prefect server start`` on a free loopback port with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": f"{url}/api",  # the UI assumes port 4200 unless told
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")  # noqa: SIM115  (closed with the server)
    process = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def healthy():
        try:
            return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(healthy, 180, "the Prefect server")
        yield url
    finally:
        stop_process_group(process)
        log.close()


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory):
    """``automl serve`` of one tiny pipeline against the server; yields what the tests need to reach it."""
    work = tmp_path_factory.mktemp("served")
    data = work / "demand.csv"
    make_series(200).to_csv(data, index=False)
    make_series(200).tail(40).to_csv(work / "latest.csv", index=False)
    config = write_config(
        work,
        data,
        name="tiny_served",
        description="A tiny LSTM served for the deployment tests.",
        search={"n_trials": 2, "epochs": 2},
        final={"epochs": 1, "patience": 1},
        schedule={"cron": "30 1 * * *", "score_cron": "45 3 * * *"},
        score={"data": "latest.csv"},
    )
    env = {
        **os.environ,
        "PREFECT_API_URL": f"{prefect_server}/api",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "AUTOML_HOME": str(work / "state"),
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # the served runs track into their own state folder
    log = open(work / "serve.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [BIN / "automl", "serve", "--configs", str(config), "--limit", "2"],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = _Api(base_url=f"{prefect_server}/api", timeout=30)

    def deployment(flow: str = "automl-pipeline"):
        response = api.get(f"/deployments/name/{flow}/tiny_served")
        return response.json() if response.status_code == 200 else None

    try:
        found = _wait(deployment, 120, "automl serve to register its deployment")
        scoring = _wait(lambda: deployment("automl-score"), 60, "automl serve to register its scoring deployment")
        yield {
            "api": api,
            "deployment": found,
            "score_deployment": scoring,
            "work": work,
            "config": config,
            "state": work / "state",
            "ui": prefect_server,
            "log": work / "serve.log",
        }
    finally:
        stop_process_group(process)
        log.close()
        api.close()


def _run(api: httpx.Client, deployment_id: str, parameters: dict) -> str:
    """Create a flow run exactly as the UI's Run button does (POST /deployments/{id}/create_flow_run)."""
    response = api.post(f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters})
    response.raise_for_status()
    return response.json()["id"]


def _finished(api: httpx.Client, flow_run_id: str, timeout: float = 300) -> dict:
    def done():
        run = api.get(f"/flow_runs/{flow_run_id}").json()
        return run if run["state"]["type"] in FINAL else None

    return _wait(done, timeout, f"flow run {flow_run_id}", interval=1)


@contextmanager
def _prefect(served: dict) -> Iterator:
    """Prefect's own Python client on the test server, as a user scripting Prefect would use it."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: f"{served['ui']}/api"}), get_client(sync_client=True) as client:
        yield client


def _logs(served: dict, flow_run_id: str) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    with _prefect(served) as client:
        return client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
            limit=200,
            sort=LogSort.TIMESTAMP_ASC,
        )


def _artifacts(served: dict, flow_run_id: str) -> dict:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _prefect(served) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])), limit=50
        )
    return {a.key: a for a in found}


def _pipeline_runs(state: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, "tags.`automl.role` = 'pipeline'", max_results=100) if experiments else []


def test_the_deployment_has_its_schedule_and_a_typed_form(served):
    deployment = served["deployment"]
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["30 1 * * *"]
    assert deployment["parameters"] == {"config_path": str(served["config"].resolve())}
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    properties = deployment["parameter_openapi_schema"]["properties"]
    assert properties["backend"]["anyOf"][0]["enum"] == ["optuna", "hyperopt"]
    assert properties["fidelity"]["anyOf"][0]["enum"] == ["none", "successive_halving", "hyperband"]
    assert properties["n_trials"]["anyOf"][0]["type"] == "integer"
    assert properties["warm_start_enabled"]["anyOf"][0]["type"] == "boolean"
    assert "configs to try" in properties["n_trials"]["description"]


def test_custom_runs_complete_one_at_a_time_and_land_in_mlflow_and_prefect(served):
    """Two runs of one pipeline queue instead of overlapping; the custom one lands in MLflow and Prefect."""
    api = served["api"]
    run_id = _run(api, served["deployment"]["id"], {"n_trials": 3, "backend": "hyperopt", "seed": 11})
    second = _run(api, served["deployment"]["id"], {"seed": 22, "n_trials": 1})
    seen_waiting = _wait(
        lambda: (
            api.get(f"/flow_runs/{second}").json()["state"]["name"] == "AwaitingConcurrencySlot"
            or api.get(f"/flow_runs/{second}").json()["state"]["type"] in FINAL
        ),
        120,
        "the second run to wait for a slot",
    )
    assert seen_waiting
    run, other = _finished(api, run_id), _finished(api, second)
    assert run["state"]["type"] == "COMPLETED", (run["state"], served["log"].read_text()[-3000:])
    assert other["state"]["type"] == "COMPLETED", (other["state"], served["log"].read_text()[-3000:])
    spans = sorted(
        (datetime.fromisoformat(r["start_time"]), datetime.fromisoformat(r["end_time"])) for r in (run, other)
    )
    assert spans[1][0] >= spans[0][1], "the two runs overlapped"
    assert run["parameters"]["n_trials"] == 3 and run["parameters"]["backend"] == "hyperopt"
    assert re.fullmatch(r"tiny_served-\d{8}-\d{4}", run["name"]), run["name"]  # its config and start, not random

    mine = [r for r in _pipeline_runs(served["state"]) if r.data.params.get("backend") == "hyperopt"]
    assert len(mine) == 1 and mine[0].info.status == "FINISHED"
    assert mine[0].data.params["n_trials"] == "3" and mine[0].data.metrics["trials_complete"] == 3

    kinds = _artifacts(served, run_id)
    assert mine[0].info.run_id in kinds["tiny-served-summary"].data
    assert kinds["tiny-served-trials"].type == "table"
    assert kinds["tiny-served-search-progress"].type == "progress"
    assert kinds["tiny-served-search-progress"].data == 100.0  # updated as trials finished, full at the end

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _prefect(served) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), limit=50)
    assert {"data_prep", "warm_start", "final_train"} <= {t.name.rsplit("-", 1)[0] for t in task_runs}

    # the pipeline run's Logs tab holds the pipeline's own lines, the search subflow's trial lines included
    try:
        _wait(
            lambda: any(log.message.startswith("registry:") for log in _logs(served, run_id)),
            60,
            "the run's last line to reach its logs",
        )
    except TimeoutError:
        raise AssertionError([(log.name, log.message[:80]) for log in _logs(served, run_id)]) from None
    lines = [log.message for log in _logs(served, run_id) if log.name == "automl"]
    trial_lines = [line for line in lines if re.match(r"trial +\d+ \| ", line)]
    assert [re.search(r"\| (\d+)/3, ", line).group(1) for line in trial_lines] == ["1", "2", "3"], trial_lines
    assert any(line.startswith("data prep:") for line in lines)


def test_prefects_own_cli_and_client_work_against_the_server(served):
    """Users script Prefect with its CLI and Python client: both must work against the pinned server stack."""
    env = {**os.environ, "PREFECT_API_URL": f"{served['ui']}/api", "COLUMNS": "200"}
    outputs = {}
    for command in ("deployment ls", "flow-run ls", "artifact ls"):
        result = subprocess.run(
            [BIN / "prefect", *command.split()], env=env, capture_output=True, text=True, timeout=120
        )
        # the failure this guards against: "Client error '422 Unprocessable Entity'" (ids may contain "422")
        failed = re.search(r"\b422\b|Unprocessable|Traceback", result.stdout + result.stderr)
        assert result.returncode == 0 and not failed, (command, result.stderr[-2000:])
        outputs[command] = result.stdout
    assert "tiny_served" in outputs["deployment ls"]
    with _prefect(served) as client:
        deployments = {d.name for d in client.read_deployments()}
        assert {"tiny_served"} <= deployments
        assert client.read_flow_runs(limit=5) and client.read_flows()
        client.read_artifacts(limit=5)
        client.read_task_runs(limit=5)


def test_a_scoring_run_writes_predictions_and_records_them_in_mlflow_and_prefect(served):
    api, scoring = served["api"], served["score_deployment"]
    assert [s["schedule"]["cron"] for s in scoring["schedules"]] == ["45 3 * * *"]
    assert scoring["parameters"] == {"config_path": str(served["config"].resolve())}
    properties = scoring["parameter_openapi_schema"]["properties"]
    assert {"data_path", "output_path", "model_alias", "rolling"} <= set(properties)
    assert "rows to score" in properties["data_path"]["description"]
    client = MlflowClient(tracking_uri=f"sqlite:///{served['state'] / 'mlflow.db'}")
    if not _pipeline_runs(served["state"]):  # this test alone: make a champion first
        assert _finished(api, _run(api, served["deployment"]["id"], {}))["state"]["type"] == "COMPLETED"
    champion = client.get_model_version_by_alias("tiny_served", "champion")

    out = served["work"] / "scored.parquet"
    run_id = _run(api, scoring["id"], {"output_path": str(out), "rolling": True})
    run = _finished(api, run_id)
    assert run["state"]["type"] == "COMPLETED", (run["state"], served["log"].read_text()[-3000:])
    predictions = pd.read_parquet(out)
    assert len(predictions) == (40 - 8 - 2 + 1) * 2  # score.data (40 rows), rolling: every window, 2 steps each
    assert {"origin", "week", "step", "prediction", "actual"} <= set(predictions.columns)

    experiment = client.get_experiment_by_name("tiny_served").experiment_id
    scored = client.search_runs([experiment], "tags.`automl.role` = 'score'")
    assert len(scored) == 1 and scored[0].info.status == "FINISHED"
    assert scored[0].data.params["model_version"] == str(champion.version)
    assert scored[0].data.params["output_path"] == str(out) and scored[0].data.metrics["predictions"] == len(
        predictions
    )
    assert "predictions.parquet" in {f.path for f in client.list_artifacts(scored[0].info.run_id)}

    markdown = _artifacts(served, run_id)["tiny-served-scoring"].data
    assert f"**Rows:** {len(predictions)} predictions" in markdown and f"version {champion.version}" in markdown
    assert "## Preview" in markdown

    missing = _finished(api, _run(api, scoring["id"], {"data_path": str(served["work"] / "nope.csv")}))
    assert missing["state"]["name"] == "InvalidInput" and "data_path: no such file" in missing["state"]["message"]
    assert len(client.search_runs([experiment], "tags.`automl.role` = 'score'")) == 1  # no run for bad input


def test_an_invalid_parameter_fails_with_one_line_and_leaves_no_run_running(served):
    api = served["api"]
    before = len(_pipeline_runs(served["state"]))
    run_id = _run(api, served["deployment"]["id"], {"n_trials": 0})
    run = _finished(api, run_id)
    assert run["state"]["type"] == "FAILED" and run["state"]["name"] == "InvalidInput"
    expected = "search.n_trials: Input should be greater than or equal to 1 (got 0)"
    assert expected in run["state"]["message"] and "\n" not in run["state"]["message"]
    # the run's logs reach the API in batches, shortly after its state
    _wait(
        lambda: any(expected in log.message for log in _logs(served, run_id) if log.level >= 40),
        60,
        "the error to reach the run's logs",
    )
    errors = [log.message for log in _logs(served, run_id) if log.level >= 40]
    # The first error is ours, one line; Prefect's engine then adds its own traceback for any failed run.
    assert expected in errors[0] and "\n" not in errors[0]
    runs = _pipeline_runs(served["state"])
    assert len(runs) == before and not [r for r in runs if r.info.status == "RUNNING"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def _mlflow_ui(state: Path) -> Iterator[str]:
    """MLflow's own UI server (``mlflow server``) on the served runs' store, on a free loopback port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(state / "mlflow-ui.log", "w")  # noqa: SIM115  (closed with the server)
    command = [BIN / "mlflow", "server", "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def healthy():
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(healthy, 120, "the MLflow UI")
        yield url
    finally:
        stop_process_group(process)
        log.close()


def _look_at_the_run_in_mlflow(browser, state: Path, shots: Path) -> None:
    """What a person opens in MLflow's UI after a run, with every request off this machine refused: the
    experiment's runs (training view, the config's description), a trial's per-epoch validation chart, and the
    search's interactive plots (plotly inside the page)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny_served")
    eid = experiment.experiment_id
    trial = client.search_runs([eid], "tags.`automl.role` = 'trial'", max_results=1)[0]
    history = client.get_metric_history(trial.info.run_id, "epoch_val_loss")
    assert [m.step for m in history] == [0, 1]  # two epochs, logged as the trial trained
    search = client.search_runs(
        [eid], "tags.`automl.stage` = 'search'", order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    with _mlflow_ui(state) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        refused = []

        def offline(route):
            if route.request.url.startswith(("http://127.0.0.1", "blob:", "data:")):
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort()

        context.route("**/*", offline)
        page = context.new_page()
        training = "?workflowType=machine_learning"
        try:
            page.goto(f"{url}/#/experiments/{eid}/runs{training}", wait_until="load")
            page.get_by_text("A tiny LSTM served for the deployment tests.").first.wait_for(timeout=60_000)
            page.get_by_text("Run Name", exact=True).first.wait_for(timeout=30_000)  # the runs table, not GenAI's
            page.screenshot(path=str(shots / "mlflow-experiment.png"))

            page.goto(f"{url}/#/experiments/{eid}/runs/{trial.info.run_id}/model-metrics{training}", wait_until="load")
            page.get_by_text("epoch_val_loss", exact=True).first.wait_for(timeout=60_000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
            page.screenshot(path=str(shots / "mlflow-trial-epochs.png"))

            page.goto(f"{url}/#/experiments/{eid}/runs/{search.info.run_id}/artifacts{training}", wait_until="load")
            page.get_by_text("plots", exact=True).first.click(timeout=60_000)
            page.get_by_text("search_plots.html", exact=True).first.click(timeout=30_000)
            drawn = page.frame_locator("iframe").first.locator(".js-plotly-plot .main-svg")
            drawn.first.wait_for(timeout=60_000)  # plotly drew them: it came inside the page
            page.screenshot(path=str(shots / "mlflow-search-plots.png"))
        except Exception:
            page.screenshot(path=str(shots / "mlflow-failed.png"), full_page=True)
            raise
        finally:
            context.close()
    assert not [u for u in refused if "plot" in u.lower()], refused  # nothing of plotly came from outside


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_quick_run_from_the_prefect_ui_then_its_logs_and_mlflow_in_the_browser(served):
    from playwright.sync_api import sync_playwright
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    api, deployment = served["api"], served["deployment"]

    def runs_of_the_deployment() -> set[str]:
        with _prefect(served) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment["id"]])), limit=200
            )
        return {str(r.id) for r in runs}

    before = runs_of_the_deployment()
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-quic",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{served['ui']}/deployments/deployment/{deployment['id']}", wait_until="networkidle")

        def quick_run():
            page.get_by_role("button", name="Run", exact=True).click()
            creating = page.expect_response(
                lambda r: r.request.method == "POST" and r.url.endswith("/create_flow_run"), timeout=60_000
            )
            with creating as response:
                page.get_by_text("Quick run", exact=True).click()
            return response.value

        try:
            response = quick_run()
            if response.status in (429, 502, 503):  # a busy Prefect server on SQLite; the UI does not retry
                page.keyboard.press("Escape")
                response = quick_run()
            assert response.ok, f"the UI's create_flow_run request answered {response.status}: {response.text()}"
        except Exception:
            page.screenshot(path=str(ARTIFACTS_DIR / "ui-quick-run-failed.png"), full_page=True)
            raise

        created = _wait(lambda: sorted(runs_of_the_deployment() - before), 60, "the Quick run to create a flow run")[0]
        assert created == response.json()["id"]
        run = _finished(api, created)
        page.goto(f"{served['ui']}/runs/flow-run/{created}", wait_until="networkidle")
        page.get_by_text("Completed").first.wait_for(timeout=30000)
        # its Logs tab holds the pipeline's lines, the search's trial lines with them (n/N, ETA)
        page.get_by_text(re.compile(r"trial +1 \| .* 2/2, ")).first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS_DIR / "ui-quick-run.png"), full_page=True)
        _look_at_the_run_in_mlflow(browser, served["state"], ARTIFACTS_DIR)
        browser.close()
    assert run["state"]["type"] == "COMPLETED"
    assert run["parameters"] == deployment["parameters"]  # a Quick run uses the deployment's defaults
    assert (ARTIFACTS_DIR / "ui-quick-run.png").stat().st_size > 10_000
