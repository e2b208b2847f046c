"""The ``automl`` command: run a pipeline, validate a config, and (later subcommands) reuse configs and serve.

Every failure caused by what the user gave (config, overrides, data) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import signal
import sys
import textwrap
import time
from collections.abc import Sequence

from automl.console import setup_console
from automl.tasks.runtime.interrupts import Terminated, stop_on_signals
from automl.tasks.runtime.state import configure_environment
from automl.tasks.summary import render_table

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
        from automl.configs import InputError

        if isinstance(exc, InputError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INPUT
        raise


SET_HELP = (
    "set a config key, e.g. --set search.n_trials=6 (repeatable); VALUE is read as YAML, as in the config file: "
    "6, 0.1, true, null, [a, b], {low: 1, high: 8}"
)
JSON_HELP = "stdout holds the result as JSON, one object per line, and nothing else (other lines go to stderr)"


def _command(sub, name: str, help: str, examples: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with examples of its use."""
    return sub.add_parser(
        name,
        help=help,
        description=kwargs.pop("description", help[0].upper() + help[1:] + "."),
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def _human(args: argparse.Namespace):
    """Where a command's lines for a person go: stdout, or stderr under ``--json`` (stdout is the JSON's)."""
    return sys.stderr if getattr(args, "json", False) else sys.stdout


def _emit(record: object) -> None:
    """One line of a command's ``--json`` result."""
    print(json.dumps(record, default=str), flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="automl",
        description=textwrap.fill(
            "Workflow-orchestrated AutoML pipelines. Every command that takes a config takes a shipped config's "
            "name (lstm_baseline, mlp_tabular, ...) or a YAML file; --json means the same on every command: "
            + JSON_HELP
            + ".",
            100,
        ),
        epilog="examples:\n  automl run lstm_baseline\n  automl predict --config lstm_baseline --data recent.csv\n"
        "  automl <command> --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = _command(
        sub,
        "run",
        "run a pipeline end to end: data prep, warm start, search, final training",
        """
automl run lstm_baseline
automl run my_pipeline.yaml --set search.n_trials=6 --budget 600
automl run mlp_tabular --set data.path=mine.csv --set data.target=label --json > summary.json
""",
    )
    run.add_argument("config", help="pipeline config: a shipped config's name (lstm_baseline) or a YAML file")
    run.add_argument("--study-name", help="continue this Optuna study instead of starting a new one")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=SET_HELP,
    )
    run.add_argument("--json", action="store_true", help=JSON_HELP + ": the run's summary")
    run.add_argument(
        "--budget",
        metavar="SECONDS",
        help="a wall-clock budget for the whole run, start-up included (the same as --set budget.seconds=SECONDS)",
    )
    run.set_defaults(handler=_run)

    validate = _command(
        sub,
        "validate",
        "check a config and its data without training",
        """
automl validate mlp_tabular
automl validate my_pipeline.yaml --set data.path=new.csv --json
""",
    )
    validate.add_argument("config", help="pipeline config: a shipped config's name or a YAML file")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    validate.add_argument("--json", action="store_true", help=JSON_HELP + ": what was checked")
    validate.set_defaults(handler=_validate)

    lr_find = _command(
        sub,
        "lr-find",
        "learning-rate range test of the family's default config: a suggested lr and its plot",
        """
automl lr-find mlp_tabular
automl lr-find lstm_baseline --param batch_size=128 --json
""",
    )
    lr_find.add_argument("config", help="pipeline config: a shipped config's name (mlp_tabular) or a YAML file")
    lr_find.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    lr_find.add_argument("--json", action="store_true", help=JSON_HELP + ": the suggestion and the plot's path")
    lr_find.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="test this model param's value instead of the default config's, e.g. --param batch_size=128 (repeatable)",
    )
    lr_find.set_defaults(handler=_lr_find)

    store = _command(
        sub,
        "configs",
        "reuse best configs of past runs (MLflow is the store)",
        """
automl configs list --model lstm
automl configs export RUN_ID -o best.json
automl configs import best.json
""",
    )
    store_sub = store.add_subparsers(dest="action", required=True)
    listing = store_sub.add_parser("list", help="table of stored configs: run id, dataset, metrics, age")
    listing.add_argument("--model", help="only this model family")
    listing.add_argument("--task", choices=["regression", "classification"], help="only this task type")
    listing.add_argument("--json", action="store_true", help=JSON_HELP + ": one stored config per line")
    listing.set_defaults(handler=_configs_list)
    show = store_sub.add_parser("show", help="a stored config with its metrics and dataset meta-features")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help=JSON_HELP + ": the config on one line")
    show.set_defaults(handler=_configs_show)
    export = store_sub.add_parser("export", help="write a stored config to a JSON file")
    export.add_argument("run_id")
    export.add_argument("-o", "--output", required=True, help="file to write, e.g. best.json")
    export.add_argument("--json", action="store_true", help=JSON_HELP + ": the run id and the file")
    export.set_defaults(handler=_configs_export)
    imported = store_sub.add_parser("import", help="store a config file so warm start can use it")
    imported.add_argument("file")
    imported.add_argument("--json", action="store_true", help=JSON_HELP + ": the file and the run it became")
    imported.set_defaults(handler=_configs_import)

    predict = _command(
        sub,
        "predict",
        "score a data file with a registered model (raw rows in)",
        """
automl predict --config lstm_baseline --data recent.csv
automl predict --model models:/mlp_tabular@champion --data new.parquet --out scored.parquet
automl predict --model models:/mlp_tabular/3 --data new.csv --json
""",
    )
    predict.add_argument("--model", help="a registered model: models:/NAME@ALIAS or models:/NAME/VERSION")
    predict.add_argument("--config", help="use this config's champion (a shipped config name or a YAML file)")
    predict.add_argument("--data", required=True, help="rows to score (CSV or Parquet), raw columns as in training")
    predict.add_argument("--out", help="write predictions here (.csv or .parquet); default: CSV on stdout")
    predict.add_argument(
        "--rolling", action="store_true", help="series: one-step-ahead predictions over the whole history"
    )
    predict.add_argument(
        "--json",
        action="store_true",
        help=JSON_HELP + ": a prediction per line, or with --out what was written (rows, model, version, out)",
    )
    predict.set_defaults(handler=_predict)

    champion = _command(
        sub,
        "champion",
        "a registered model's champion alias: its history, and moving it",
        """
automl champion history lstm_baseline
automl champion set lstm_baseline 3 --note "roll back: v4 drifts"
""",
    )
    champion_sub = champion.add_subparsers(dest="action", required=True)
    history = champion_sub.add_parser("history", help="every move of the champion alias, oldest first")
    history.add_argument("name", help="registered model name (a config's name unless registry.model_name says)")
    history.add_argument("--json", action="store_true", help=JSON_HELP + ": one move per line")
    history.set_defaults(handler=_champion_history)
    move = champion_sub.add_parser("set", help="point the champion alias at VERSION (e.g. roll back)")
    move.add_argument("name")
    move.add_argument("version", help="the model version to make champion")
    move.add_argument("--note", default="", help="why (recorded in the history)")
    move.add_argument("--json", action="store_true", help=JSON_HELP + ": the move")
    move.set_defaults(handler=_champion_set)

    dashboard = _command(
        sub,
        "dashboard",
        "open optuna-dashboard on the Optuna studies (needs the dashboard extra)",
        """
automl dashboard
automl dashboard lstm_baseline --port 8081
""",
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

    serve = _command(
        sub,
        "serve",
        "serve the pipelines as Prefect deployments (schedules, UI runs)",
        """
automl serve
automl serve --configs lstm_baseline my_pipeline.yaml --cron "0 2 * * *" --limit 1
""",
    )
    serve.add_argument(
        "--configs", nargs="+", metavar="CONFIG", help="shipped config names or YAML files (default: all shipped)"
    )
    serve.add_argument("--cron", help="one cron schedule for every deployment (default: each config's schedule.cron)")
    serve.add_argument("--limit", type=int, default=2, help="flow runs this process executes at once (default 2)")
    serve.set_defaults(handler=_serve)

    collect = _command(
        sub,
        "gc",
        "remove trial weights, checkpoints, Prefect results and predictions of all but the last runs",
        """
automl gc --dry-run
automl gc --keep 3 --older-than 7
""",
        description="Remove the trial weights, checkpoints, Prefect results and predictions of each experiment's "
        "runs beyond the newest N. MLflow runs, metrics and configs stay, as does every registered version's "
        "model and source run; a run in progress is never touched, an unfinished one only with --older-than.",
    )
    collect.add_argument("--keep", default="5", metavar="N", help="runs kept whole per experiment (default 5)")
    collect.add_argument(
        "--older-than",
        metavar="DAYS",
        help="only runs last active more than DAYS days ago (then also unfinished runs and files no run owns)",
    )
    collect.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    collect.add_argument("--json", action="store_true", help=JSON_HELP + ": sizes before and after, and per kind")
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
    from automl.configs import load_config
    from automl.tasks.data_prep import load_and_check

    cfg = load_config(_config_path(args.config), args.overrides)
    checked = load_and_check(cfg)
    plan = checked.plan
    if args.json:
        _emit(
            {
                "config": cfg.name,
                "family": cfg.model.family,
                "kind": plan.kind,
                "task": plan.task,
                "data": str(cfg.data.path),
                "rows": len(checked.frame),
                "features": len(plan.features),
                "fingerprint": checked.fingerprint,
                "backend": cfg.search.backend,
                "sampler": cfg.search.sampler,
                "fidelity": cfg.search.fidelity,
                "parameters": sorted(cfg.search.space or {}),
            }
        )
        return 0
    print(
        f"ok: {args.config}: {cfg.model.family} ({plan.kind}, {plan.task}) on {cfg.data.path} "
        f"({len(checked.frame)} rows, {len(plan.features)} features, fingerprint {checked.fingerprint}); "
        f"search {cfg.search.backend}/{cfg.search.sampler}, fidelity {cfg.search.fidelity}, "
        f"{len(cfg.search.space or {})} parameters"
    )
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    from automl.configs import load_config
    from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
    from automl.tasks.runtime.state import local_state
    from automl.tasks.search_stage.lr_range import find_lr, log_lr_find_run, parse_params, plot_lr_range, tested_config
    from automl.tasks.tracking.catalog import LR_FIND_PLOT
    from automl.tasks.tracking.runs import configure_mlflow, ensure_experiment

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
    if args.json:
        _emit(
            {
                "suggested_lr": result.suggestion,
                "clear": result.clear,
                "diverged": result.diverged,
                "steps": result.steps,
                "batch_size": result.batch_size,
                "last_lr": result.lrs[-1],
                "plot": str(plot),
            }
        )
        return 0
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
    from automl.tasks.runtime.state import local_state
    from automl.tasks.tracking.runs import configure_mlflow
    from automl.tasks.warm_start import config_store

    configure_mlflow(local_state())
    return config_store


def _configs_list(args: argparse.Namespace) -> int:
    from automl.tasks.warm_start.config_store import check_filters

    check_filters(args.model, args.task)
    store = _store()
    rows = [store.describe(run) for run in store.stored_runs(args.model, args.task)]
    if args.json:
        for row in rows:
            _emit(row)
        return 0
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
    config = _store().export_config(args.run_id).model_dump(mode="json", exclude={"exported_at"})
    if args.json:
        _emit(config)
        return 0
    print(json.dumps(config, indent=2, sort_keys=True))
    return 0


def _configs_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    store = _store()
    store.write_export(store.export_config(args.run_id), Path(args.output))
    print(f"exported {args.run_id} to {args.output}", file=_human(args))
    if args.json:
        _emit({"run_id": args.run_id, "file": args.output})
    return 0


def _configs_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from automl.configs import load_transferred_config
    from automl.tasks.runtime.state import local_state

    load_transferred_config(args.file)  # a malformed file stops here, before MLflow is touched
    run_id = _store().import_config(Path(args.file), local_state())
    print(f"imported {args.file} as run {run_id}", file=_human(args))
    if args.json:
        _emit({"file": args.file, "run_id": run_id})
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from automl.configs import InputError
    from automl.tasks.registry import prediction
    from automl.tasks.runtime.state import local_state

    out = Path(args.out) if args.out else None
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
    if out is None and args.json:  # JSON Lines, times in ISO 8601
        predictions.to_json(sys.stdout, orient="records", lines=True, date_format="iso")
        return 0
    if out is None:
        predictions.to_csv(sys.stdout, index=False)
        return 0
    prediction.write_predictions(predictions, out)
    say(f"wrote {len(predictions)} predictions of {model.name} v{model.version} to {out}")
    if args.json:
        _emit(
            {
                "rows": len(predictions),
                "model_uri": uri,
                "model_name": model.name,
                "model_version": int(model.version),
                "out": str(out),
            }
        )
    return 0


def _config_by_name_or_path(value: str):
    from pathlib import Path

    from automl.configs import config_file, load_config

    path = Path(value)
    return load_config(path if path.suffix in (".yaml", ".yml") else config_file(value, None))


def _registry():
    from automl.tasks.registry.prediction import open_registry
    from automl.tasks.runtime.state import local_state

    return open_registry(local_state(), key="champion")


def _registered(client, name: str):
    from mlflow.exceptions import MlflowException

    from automl.configs import InputError

    try:
        return client.get_registered_model(name)
    except MlflowException:
        raise InputError(f"champion: no registered model {name!r}") from None


def _champion_history(args: argparse.Namespace) -> int:
    from automl.configs import check_name
    from automl.tasks.registry.champion import champion_history

    check_name("champion: NAME", args.name)  # before the registry is opened (and the state folder made)
    client = _registry()
    _registered(client, args.name)
    moves = champion_history(client, args.name)
    if args.json:
        for move in moves:
            _emit(move.to_dict())
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

    from automl.configs import InputError, check_name
    from automl.tasks.registry.champion import MAX_NOTE, current_champion, move_champion

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
        print(f"{args.name}: version {target.version} is already the champion; nothing recorded", file=_human(args))
        if args.json:
            _emit({"name": args.name, "moved": False, "to_version": str(target.version)})
        return 0
    move = move_champion(
        client,
        args.name,
        args.version,
        by=f"automl champion set ({getpass.getuser()}@{socket.gethostname()})",
        note=args.note,
    )
    if args.json:
        _emit({"name": args.name, "moved": True, **move.to_dict()})
        return 0
    print(f"{args.name}: champion v{move.from_version or '-'} -> v{move.to_version}")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from rich.filesize import decimal

    from automl.tasks.runtime.retention import check_retention_args, collect_garbage
    from automl.tasks.runtime.state import local_state
    from automl.tasks.tracking.runs import configure_mlflow

    keep, days = check_retention_args(args.keep, args.older_than)
    state = local_state()
    if not state.home.is_dir():
        print(f"{state.home}: no state folder, nothing to remove", file=_human(args))
        if args.json:
            _emit({"home": str(state.home), "dry_run": args.dry_run, "before_bytes": 0, "after_bytes": 0})
        return 0
    configure_mlflow(state)
    report = collect_garbage(state, keep, days, dry_run=args.dry_run)
    if args.json:
        _emit(
            {
                "home": str(report.home),
                "dry_run": report.dry_run,
                "before_bytes": report.before,
                "after_bytes": report.after,
                "removed": {kind: {"count": n, "bytes": size} for kind, (n, size) in report.by_kind().items()},
            }
        )
        return 0
    verb = "would remove" if report.dry_run else "removed"
    for kind, (count, size) in report.by_kind().items():
        print(f"{kind}: {verb} {count} ({decimal(size)})")
    after = "after (estimated)" if report.dry_run else "after"
    print(f"{report.home}: {decimal(report.before)} before, {decimal(report.after)} {after}")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from automl.tasks.search_stage.dashboard import (
        check_host,
        check_installed,
        check_port,
        dashboard_server,
        dashboard_storage,
    )

    port = check_port(args.port)
    check_host(args.host)
    check_installed()
    cfg = None
    if args.config is not None:
        from automl.configs import load_config

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
    from automl.configs import check_cron
    from automl.deployments.serve import config_files, pipeline_deployments, serve

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
    from automl.configs import MAX_STUDY_NAME_LENGTH, InputError, check_name
    from automl.runner import PipelineFailed, run_pipeline
    from automl.tasks.runtime.progress import show_epoch_progress

    setup_console()
    show_epoch_progress(not args.json)  # long trainings' epoch lines, on a terminal: not beside a JSON summary
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
    print(render_table(summary), file=_human(args))
    if args.json:
        _emit(summary.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
