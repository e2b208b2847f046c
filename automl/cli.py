"""The ``automl`` command: run a pipeline, validate a config, and (later subcommands) reuse configs and serve.

Every failure caused by what the user gave (config, overrides, data) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from tasks.runtime.interrupts import Terminated, stop_on_signals
from tasks.runtime.state import configure_environment
from tasks.summary import render_table

EXIT_INPUT = 2
EXIT_FAILED = 1
MAX_MODEL_VERSION = 2**31 - 1  # the registry keeps versions in a 32-bit integer column
_FREEZE_AT_EXIT = True


def main(argv: Sequence[str] | None = None) -> int:
    started_at = time.time()  # a run's budget counts from here
    parser = _parser()
    args = parser.parse_args(argv)
    args.started_at = started_at
    configure_environment()  # before anything imports prefect
    global _FREEZE_AT_EXIT
    if _FREEZE_AT_EXIT:
        # Registered before the pipeline's modules register theirs, so it runs after them: the interpreter's
        # final garbage collection then skips the objects alive at exit (Prefect, MLflow, torch...), which took
        # about 3 s of every run's exit on 2 cores.
        atexit.register(gc.freeze)
        _FREEZE_AT_EXIT = False
    try:
        with stop_on_signals():
            return args.handler(args)
    except KeyboardInterrupt as exc:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    except Exception as exc:
        from configs import InputError

        if isinstance(exc, InputError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INPUT
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="automl", description="Workflow-orchestrated AutoML pipelines.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline end to end: data prep, warm start, search, final training")
    run.add_argument("config", help="pipeline config: a shipped config's name (lstm_baseline) or a YAML file")
    run.add_argument("--study-name", help="continue this Optuna study instead of starting a new one")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set search.n_trials=6 (repeatable)",
    )
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")
    run.add_argument(
        "--budget",
        metavar="SECONDS",
        help="a wall-clock budget for the whole run, start-up included (the same as --set budget.seconds=SECONDS)",
    )
    run.set_defaults(handler=_run)

    validate = sub.add_parser("validate", help="check a config and its data without training")
    validate.add_argument("config", help="pipeline config: a shipped config's name or a YAML file")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    validate.set_defaults(handler=_validate)

    lr_find = sub.add_parser(
        "lr-find", help="learning-rate range test of the family's default config: a suggested lr and its plot"
    )
    lr_find.add_argument("config", help="pipeline config: a shipped config's name (mlp_tabular) or a YAML file")
    lr_find.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    lr_find.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="test this model param's value instead of the default config's, e.g. --param batch_size=128 (repeatable)",
    )
    lr_find.set_defaults(handler=_lr_find)

    store = sub.add_parser("configs", help="reuse best configs of past runs (MLflow is the store)")
    store_sub = store.add_subparsers(dest="action", required=True)
    listing = store_sub.add_parser("list", help="table of stored configs: run id, dataset, metrics, age")
    listing.add_argument("--model", help="only this model family")
    listing.add_argument("--task", choices=["regression", "classification"], help="only this task type")
    listing.set_defaults(handler=_configs_list)
    show = store_sub.add_parser("show", help="a stored config with its metrics and dataset meta-features")
    show.add_argument("run_id")
    show.set_defaults(handler=_configs_show)
    export = store_sub.add_parser("export", help="write a stored config to a JSON file")
    export.add_argument("run_id")
    export.add_argument("-o", "--output", required=True, help="file to write, e.g. best.json")
    export.set_defaults(handler=_configs_export)
    imported = store_sub.add_parser("import", help="store a config file so warm start can use it")
    imported.add_argument("file")
    imported.set_defaults(handler=_configs_import)

    predict = sub.add_parser("predict", help="score a data file with a registered model (raw rows in)")
    predict.add_argument("--model", help="a registered model: models:/NAME@ALIAS or models:/NAME/VERSION")
    predict.add_argument("--config", help="use this config's champion (a shipped config name or a YAML file)")
    predict.add_argument("--data", required=True, help="rows to score (CSV or Parquet), raw columns as in training")
    predict.add_argument("--out", help="write predictions here (.csv or .parquet); default: CSV on stdout")
    predict.add_argument(
        "--rolling", action="store_true", help="series: one-step-ahead predictions over the whole history"
    )
    predict.add_argument(
        "--json", action="store_true", help="with --out: print rows, model_uri, model_version, out as one JSON line"
    )
    predict.set_defaults(handler=_predict)

    champion = sub.add_parser("champion", help="a registered model's champion alias: its history, and moving it")
    champion_sub = champion.add_subparsers(dest="action", required=True)
    history = champion_sub.add_parser("history", help="every move of the champion alias, oldest first")
    history.add_argument("name", help="registered model name (a config's name unless registry.model_name says)")
    history.add_argument("--json", action="store_true", help="one JSON object per move, one per line")
    history.set_defaults(handler=_champion_history)
    move = champion_sub.add_parser("set", help="point the champion alias at VERSION (e.g. roll back)")
    move.add_argument("name")
    move.add_argument("version", help="the model version to make champion")
    move.add_argument("--note", default="", help="why (recorded in the history)")
    move.set_defaults(handler=_champion_set)

    dashboard = sub.add_parser(
        "dashboard", help="open optuna-dashboard on the Optuna studies (needs the dashboard extra)"
    )
    dashboard.add_argument(
        "config",
        nargs="?",
        help="show this config's search.storage (a shipped config's name or a YAML file); default: the state "
        "folder's Optuna database",
    )
    dashboard.add_argument("--port", default="8080", help="port to listen on (default 8080)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    dashboard.set_defaults(handler=_dashboard)

    serve = sub.add_parser("serve", help="serve the pipelines as Prefect deployments (schedules, UI runs)")
    serve.add_argument(
        "--configs", nargs="+", metavar="CONFIG", help="shipped config names or YAML files (default: all shipped)"
    )
    serve.add_argument("--cron", help="one cron schedule for every deployment (default: each config's schedule.cron)")
    serve.add_argument("--limit", type=int, default=2, help="flow runs this process executes at once (default 2)")
    serve.set_defaults(handler=_serve)

    collect = sub.add_parser(
        "gc",
        help="remove trial weights, checkpoints, Prefect results and predictions of all but the last runs",
        description="Remove the trial weights, checkpoints, Prefect results and predictions of each experiment's "
        "runs beyond the newest N. MLflow runs, metrics and configs stay, as does every registered version's "
        "model and source run; a run in progress is never touched, an unfinished one only with --older-than.",
        epilog="example: automl gc --keep 3 --older-than 7 --dry-run",
    )
    collect.add_argument("--keep", default="5", metavar="N", help="runs kept whole per experiment (default 5)")
    collect.add_argument(
        "--older-than",
        metavar="DAYS",
        help="only runs last active more than DAYS days ago (then also unfinished runs and files no run owns)",
    )
    collect.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    collect.set_defaults(handler=_gc)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("automl-pipeline")
    except PackageNotFoundError:
        return "(not installed)"


def _config_path(value: str) -> str:
    """A config given by path, or by the name of a shipped config (``automl run lstm_baseline``)."""
    from automl.runner import resolve_config

    return resolve_config(value)


def _validate(args: argparse.Namespace) -> int:
    from configs import load_config
    from tasks.data_prep import load_and_check

    cfg = load_config(_config_path(args.config), args.overrides)
    checked = load_and_check(cfg)
    plan = checked.plan
    print(
        f"ok: {args.config}: {cfg.model.family} ({plan.kind}, {plan.task}) on {cfg.data.path} "
        f"({len(checked.frame)} rows, {len(plan.features)} features, fingerprint {checked.fingerprint}); "
        f"search {cfg.search.backend}/{cfg.search.sampler}, fidelity {cfg.search.fidelity}, "
        f"{len(cfg.search.space or {})} parameters"
    )
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    from configs import load_config
    from tasks.data_prep import DataPrepJob, load_and_check, prepare
    from tasks.runtime.state import local_state
    from tasks.search_stage.lr_range import find_lr, log_lr_find_run, parse_params, plot_lr_range, tested_config
    from tasks.tracking.catalog import LR_FIND_PLOT
    from tasks.tracking.runs import configure_mlflow, ensure_experiment

    setup_console()
    cfg = load_config(_config_path(args.config), args.overrides)
    params = parse_params(cfg.model.family, args.params)
    checked = load_and_check(cfg)  # every input error surfaces before the state folder or MLflow is touched
    state = local_state()
    configure_mlflow(state)  # and an unusable MLflow store before training
    prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
    result = find_lr(cfg.model, prepared, cfg.training, cfg.seed, params)
    plot = plot_lr_range(result, state.lr_find(cfg.name) / LR_FIND_PLOT)
    tested = tested_config(cfg.model, params)
    log_lr_find_run(ensure_experiment(cfg.name, state, cfg.description), cfg.model.family, tested, result, plot)
    ended = "diverged" if result.diverged else "did not diverge; ended"
    print(
        f"suggested lr: {result.suggestion:.2e} (in the valley of the smoothed loss; {result.steps} steps, "
        f"batch size {result.batch_size}, {ended} at lr {result.lrs[-1]:.2e})"
    )
    if not result.clear:
        print("no clear descent: the smoothed loss stays within 10% over the valley; take the suggestion lightly")
    print(f"plot: {plot}")
    return 0


def _store():
    from tasks.runtime.state import local_state
    from tasks.tracking.runs import configure_mlflow
    from tasks.warm_start import config_store

    configure_mlflow(local_state())
    return config_store


def _configs_list(args: argparse.Namespace) -> int:
    from tasks.warm_start.config_store import check_filters

    check_filters(args.model, args.task)
    store = _store()
    rows = [store.describe(run) for run in store.stored_runs(args.model, args.task)]
    if not rows:
        print("no stored configs")
        return 0
    columns = f"{'run id':<32}  {'experiment':<22} {'family':<11} {'task':<14} {'dataset':<20} {'val loss':>10}"
    print(f"{columns}  {'test metrics':<30} age")
    for row in rows:
        test = ", ".join(f"{k} {v:.4g}" for k, v in sorted(row["test"].items())) or "-"
        loss = f"{row['best_val_loss']:.5g}" if row["best_val_loss"] is not None else "-"
        print(
            f"{row['run_id']:<32}  {row['experiment'][:22]:<22} {row['family']:<11} {row['task']:<14} "
            f"{row['dataset'][:20]:<20} {loss:>10}  {test:<30} {row['age']}"
        )
    return 0


def _configs_show(args: argparse.Namespace) -> int:
    config = _store().export_config(args.run_id)
    print(json.dumps(config.model_dump(mode="json", exclude={"exported_at"}), indent=2, sort_keys=True))
    return 0


def _configs_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    store = _store()
    store.write_export(store.export_config(args.run_id), Path(args.output))
    print(f"exported {args.run_id} to {args.output}")
    return 0


def _configs_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from configs import load_transferred_config
    from tasks.runtime.state import local_state

    load_transferred_config(args.file)  # a malformed file stops here, before MLflow is touched
    run_id = _store().import_config(Path(args.file), local_state())
    print(f"imported {args.file} as run {run_id}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from configs import InputError
    from tasks.registry import prediction
    from tasks.runtime.state import local_state

    out = Path(args.out) if args.out else None
    if args.json and out is None:
        raise InputError("--json: give --out too (without it the predictions themselves go to stdout as CSV)")
    prediction.check_output(out)
    uri = args.model
    if not uri:
        if not args.config:
            raise InputError("--model: give a registered model (models:/NAME@champion) or --config CONFIG")
        uri = prediction.model_uri(_config_by_name_or_path(args.config))
    data = Path(args.data)
    frame = prediction.read_rows(data)
    state = local_state()
    prediction.open_registry(state)
    model = prediction.load_registered_model(uri)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    prediction.check_rows(model, frame, args.rolling, data, say)

    predictions = prediction.score_rows(model, frame, args.rolling, prediction.progress_printer(str(data), say))
    if out is None:
        predictions.to_csv(sys.stdout, index=False)
        return 0
    prediction.write_predictions(predictions, out)
    say(f"wrote {len(predictions)} predictions of {model.name} v{model.version} to {out}")
    if args.json:
        record = {
            "rows": len(predictions),
            "model_uri": uri,
            "model_name": model.name,
            "model_version": int(model.version),
            "out": str(out),
        }
        print(json.dumps(record))
    return 0


def _config_by_name_or_path(value: str):
    from pathlib import Path

    from configs import config_file, load_config

    path = Path(value)
    return load_config(path if path.suffix in (".yaml", ".yml") else config_file(value, None))


def _registry():
    from tasks.registry.prediction import open_registry
    from tasks.runtime.state import local_state

    return open_registry(local_state(), key="champion")


def _registered(client, name: str):
    from mlflow.exceptions import MlflowException

    from configs import InputError

    try:
        return client.get_registered_model(name)
    except MlflowException:
        raise InputError(f"champion: no registered model {name!r}") from None


def _champion_history(args: argparse.Namespace) -> int:
    from configs import check_name
    from tasks.registry.champion import champion_history

    check_name("champion: NAME", args.name)  # before the registry is opened (and the state folder made)
    client = _registry()
    _registered(client, args.name)
    moves = champion_history(client, args.name)
    if args.json:
        for move in moves:
            print(json.dumps(move.to_dict()))
        return 0
    if not moves:
        print(f"{args.name}: no recorded champion moves")
        return 0
    print(f"{'when (UTC)':<25} {'from':>5} -> {'to':<4} {'metric':<10} {'value':>10} {'previous':>10}  by; note")
    for m in moves:
        value = f"{m.value:.5g}" if m.value is not None else "-"
        previous = f"{m.previous_value:.5g}" if m.previous_value is not None else "-"
        print(
            f"{m.at:<25} {m.from_version or '-':>5} -> {'v' + m.to_version:<4} {m.metric or '-':<10} {value:>10} "
            f"{previous:>10}  {m.by}{'; ' + m.note if m.note else ''}"
        )
    return 0


def _champion_set(args: argparse.Namespace) -> int:
    import getpass
    import socket

    from mlflow.exceptions import MlflowException

    from configs import InputError, check_name
    from tasks.registry.champion import MAX_NOTE, current_champion, move_champion

    check_name("champion: NAME", args.name)  # before the registry is opened (and the state folder made)
    digits = args.version.isascii() and args.version.isdigit() and len(args.version) <= len(str(MAX_MODEL_VERSION))
    if not (digits and 1 <= int(args.version) <= MAX_MODEL_VERSION):
        raise InputError(f"champion: VERSION: {args.version!r} is not a model version (1, 2, ...)")
    if len(args.note) > MAX_NOTE:
        raise InputError(f"--note: at most {MAX_NOTE} characters (got {len(args.note)})")
    client = _registry()
    _registered(client, args.name)
    try:
        target = client.get_model_version(args.name, args.version)
    except MlflowException:
        raise InputError(f"champion: model {args.name!r} has no version {args.version!r}") from None
    current = current_champion(client, args.name)
    if current is not None and str(current.version) == str(target.version):  # "01" is version 1 too
        print(f"{args.name}: version {target.version} is already the champion; nothing recorded")
        return 0
    move = move_champion(
        client,
        args.name,
        args.version,
        by=f"automl champion set ({getpass.getuser()}@{socket.gethostname()})",
        note=args.note,
    )
    print(f"{args.name}: champion v{move.from_version or '-'} -> v{move.to_version}")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from rich.filesize import decimal

    from tasks.runtime.retention import check_retention_args, collect_garbage
    from tasks.runtime.state import local_state
    from tasks.tracking.runs import configure_mlflow

    keep, days = check_retention_args(args.keep, args.older_than)
    state = local_state()
    if not state.home.is_dir():
        print(f"{state.home}: no state folder, nothing to remove")
        return 0
    configure_mlflow(state)
    report = collect_garbage(state, keep, days, dry_run=args.dry_run)
    verb = "would remove" if report.dry_run else "removed"
    for kind, (count, size) in report.by_kind().items():
        print(f"{kind}: {verb} {count} ({decimal(size)})")
    after = "after (estimated)" if report.dry_run else "after"
    print(f"{report.home}: {decimal(report.before)} before, {decimal(report.after)} {after}")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from tasks.search_stage.dashboard import check_installed, check_port, dashboard_server, dashboard_storage

    port = check_port(args.port)
    check_installed()
    cfg = None
    if args.config is not None:
        from configs import load_config

        cfg = load_config(_config_path(args.config))
    url = dashboard_storage(cfg)
    server = dashboard_server(url, args.host, port)
    print(f"optuna-dashboard: http://{args.host}:{port}/ on {url} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: how a dashboard is meant to end, not a failure
        return 0
    finally:
        server.server_close()
    return 0


def _serve(args: argparse.Namespace) -> int:
    from configs import check_cron
    from deployments.serve import config_files, pipeline_deployments, serve

    if args.cron is not None:
        check_cron("--cron", args.cron)
    if args.limit < 1:
        print("error: --limit: must be at least 1", file=sys.stderr)
        return EXIT_INPUT
    setup_console(prefect_info=True)  # the served runs' lines: on this console and in each flow run's Logs tab
    deployments = pipeline_deployments(config_files(args.configs), args.cron)  # every config validated first
    serve(deployments, limit=args.limit)
    return 0


def _run(args: argparse.Namespace) -> int:
    from automl.runner import PipelineFailed, run_pipeline
    from configs import MAX_STUDY_NAME_LENGTH, InputError, check_name

    setup_console()
    if args.study_name is not None:  # it names the study and folders of the state: none may lead out of it
        check_name("--study-name", args.study_name, MAX_STUDY_NAME_LENGTH)
    if args.budget is not None and not args.budget.strip():
        raise InputError("--budget: give the run's budget in seconds, a number > 0 (got nothing)")
    overrides = [*args.overrides, *([f"budget.seconds={args.budget}"] if args.budget is not None else [])]
    try:
        summary = run_pipeline(
            _config_path(args.config), overrides, None, args.study_name, args.started_at, setup_console
        )
    except PipelineFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(render_table(summary))
    if args.json:
        print(json.dumps(summary.to_json(), default=str))
    return 0


def _quiet_reported(record: logging.LogRecord) -> bool:
    """Prefect's lines about what the CLI reports in its own last line stay in the Prefect UI, off the console: a
    run stopped by Ctrl-C or SIGTERM ("Crash detected! Execution was aborted by an interrupt signal.", a task's
    "Finished in state Crashed('Execution was aborted by a termination signal.')"), and the traceback each flow run
    logs for a search where no trial completed (``error: search failed: <reason>`` says it)."""
    from tasks.search import SearchFailed

    if "Execution was aborted by a" in record.getMessage():
        return False
    return not (record.exc_info and isinstance(record.exc_info[1], SearchFailed))


def setup_console(progress: bool = True, prefect_info: bool = False) -> None:
    """Progress lines of the ``automl`` logger go to stderr as they are (or nowhere with ``progress=False``), and
    to the Prefect UI's Logs tab of the flow run they belong to (``PREFECT_LOGGING_EXTRA_LOGGERS``); Prefect's
    console shows warnings only (its INFO lines still reach the Prefect UI; all of them with ``prefect_info``, as
    ``automl serve`` shows which flow runs it picks up), and none of the lines about what the CLI reports itself
    (``_quiet_reported``)."""
    if not prefect_info:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"  # read when Prefect sets up its logging
    logger = logging.getLogger("automl")
    logger.setLevel(logging.INFO if progress else logging.WARNING)
    logger.propagate = False
    if not any(getattr(h, "automl_console", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        handler.automl_console = True
        logger.addHandler(handler)
    if "prefect" in sys.modules:  # already set up: lower its console handlers too
        from prefect.logging.handlers import PrefectConsoleHandler

        for name in ("", "prefect"):
            for h in logging.getLogger(name).handlers:
                if isinstance(h, PrefectConsoleHandler):
                    if not prefect_info:
                        h.setLevel(logging.WARNING)
                    h.addFilter(_quiet_reported)
    for noisy in ("mlflow", "alembic", "optuna", "hyperopt", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    raise SystemExit(main())
