"""Malformed configs and data: each is one line naming what is wrong, exit code 2, and nothing left behind (no
state folder, so no MLflow run, no Optuna study, no partial file). The CLI runs in-process here; test_cli.py
checks the same contract across a real process boundary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl.cli import main
from tests.helpers import REPO, make_series

LSTM = str(REPO / "configs" / "lstm_baseline.yaml")


def _series(tmp: Path, frame: pd.DataFrame, name: str = "data.csv", **to_csv) -> str:
    path = tmp / name
    frame.to_csv(path, index=False, **to_csv)
    return str(path)


def _file(tmp: Path, name: str, content: bytes | str) -> str:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _data(path_of):
    """Overrides pointing the LSTM config at a series written by ``path_of(tmp)``, with its column names."""
    return lambda tmp: [
        "--set",
        f"data.path={path_of(tmp)}",
        "--set",
        "data.target=sales",
        "--set",
        "data.time_column=week",
        "--set",
        "data.lookback=8",
    ]


PBT = ["--set", "search.strategy=pbt", "--set", "search.fidelity=none"]
CASES = {
    # config and overrides
    "unknown key": (
        lambda t: ["--set", "search.n_trails=3"],
        "search.n_trails: unknown key; did you mean search.n_trials?",
    ),
    "unknown nested key": (
        lambda t: ["--set", "final.ensemble.topk=3"],
        "final.ensemble.topk: unknown key; did you mean final.ensemble.top_k?",
    ),
    "wrong type": (lambda t: ["--set", "search.n_trials=many"], "search.n_trials: Input should be a valid integer"),
    "negative budget": (
        lambda t: ["--set", "search.n_trials=-3"],
        "search.n_trials: Input should be greater than or equal to 1",
    ),
    "low >= high": (
        lambda t: ["--set", "search.space.dropout.low=0.5"],
        "search.space.dropout: low (0.5) must be < high (0.4)",
    ),
    "log scale from 0": (
        lambda t: ["--set", "search.space.lr.low=0"],
        "search.space.lr: low (0.0) must be > 0 when log is true",
    ),
    "empty choices": (
        lambda t: ["--set", "search.space.batch_size.choices=[]"],
        "search.space.batch_size.choices: choices must not be empty",
    ),
    "unknown model family": (
        lambda t: ["--set", "model.family=xgboost"],
        "model.family: unknown model family 'xgboost'",
    ),
    "unknown backend": (
        lambda t: ["--set", "search.backend=ray"],
        "search.backend: Input should be 'optuna' or 'hyperopt'",
    ),
    "sampler of another backend": (
        lambda t: ["--set", "search.sampler=anneal"],
        "sampler 'anneal' is not available for backend 'optuna'",
    ),
    "unknown fidelity scheduler": (
        lambda t: ["--set", "search.fidelity=asha"],
        "search.fidelity: Input should be 'auto', 'none', 'successive_halving' or 'hyperband'",
    ),
    "unknown promotion rule": (
        lambda t: ["--set", "search.promotion=eager"],
        "search.promotion: Input should be 'asha' or 'deferred'",
    ),
    "empty promotion rule": (
        lambda t: ["--set", "search.promotion="],
        "search.promotion: Input should be 'asha' or 'deferred'",
    ),
    "promotion rule of another type": (
        lambda t: ["--set", "search.promotion=3"],
        "search.promotion: Input should be 'asha' or 'deferred'",
    ),
    "default-first flag not a boolean": (
        lambda t: ["--set", "search.try_default_first=maybe"],
        "search.try_default_first: Input should be a valid boolean",
    ),
    "empty default-first flag": (
        lambda t: ["--set", "search.try_default_first="],
        "search.try_default_first: Input should be a valid boolean",
    ),
    "default-first flag a number other than 0 or 1": (
        lambda t: ["--set", "search.try_default_first=2"],
        "search.try_default_first: Input should be a valid boolean",
    ),
    "continuation not a boolean": (
        lambda t: ["--set", "search.continuation=sometimes"],
        "search.continuation: Input should be a valid boolean",
    ),
    "continuation a number": (
        lambda t: ["--set", "search.continuation=1"],
        "search.continuation: Input should be a valid boolean",
    ),
    "empty continuation": (lambda t: ["--set", "search.continuation="], "search.continuation: Input should be a valid"),
    "cost-aware flag a string": (
        lambda t: ["--set", "search.cost_aware=on second thought"],
        "search.cost_aware: Input should be a valid boolean",
    ),
    "cost-aware flag a number": (
        lambda t: ["--set", "search.cost_aware=0"],
        "search.cost_aware: Input should be a valid boolean",
    ),
    "fidelity auto spelled otherwise": (
        lambda t: ["--set", "search.fidelity=Auto"],
        "search.fidelity: Input should be 'auto', 'none', 'successive_halving' or 'hyperband'",
    ),
    "eta below 2": (lambda t: ["--set", "search.eta=1"], "search.eta: must be >= 2 (got 1)"),
    "min fraction 0": (
        lambda t: ["--set", "search.min_fraction=0"],
        "search.min_fraction: must be in (0, 1] (got 0.0)",
    ),
    "grid over a float": (
        lambda t: ["--set", "search.sampler=grid"],
        "search.space.dropout: the grid sampler needs discrete parameters",
    ),
    "split not summing to 1": (lambda t: ["--set", "data.split.train=0.9"], "data.split: train + val + test must be 1"),
    "no parallel workers": (
        lambda t: ["--set", "search.parallelism=0"],
        "search.parallelism: Input should be greater than or equal to 1",
    ),
    "not a storage URL": (
        lambda t: ["--set", "search.storage=redis://localhost"],
        "storage 'redis://localhost' is not an Optuna storage URL",
    ),
    "override without value": (
        lambda t: ["--set", "search.n_trials"],
        "--set 'search.n_trials': expected dotted.key=value",
    ),
    "dropout above 1": (
        lambda t: ["--set", "search.space=null", "--set", "model.params.dropout=1.5"],
        "model.params.dropout: 1.5 is out of range; dropout takes a number in [0, 1)",
    ),
    "space reaching past a limit": (
        lambda t: ["--set", "search.space.dropout.high=1.0"],
        "search.space.dropout.high: 1.0 is out of range; dropout takes a number in [0, 1)",
    ),
    "negative size": (
        lambda t: ["--set", "search.space.num_layers.low=-1"],
        "search.space.num_layers.low: -1 is out of range; num_layers takes an integer in [1, inf]",
    ),
    "boolean choice for a number": (
        lambda t: ["--set", "search.space.batch_size.choices=[true, 16]"],
        "search.space.batch_size.choices: True is not a number; batch_size takes an integer",
    ),
    "fractional choice for an integer": (
        lambda t: ["--set", "search.space.batch_size.choices=[1.5, 16]"],
        "search.space.batch_size.choices: 1.5 is not an integer",
    ),
    "float range for an integer": (
        lambda t: ["--set", "search.space.hidden_size={type: float, low: 8, high: 64}"],
        "search.space.hidden_size: hidden_size takes integers; use type: int",
    ),
    "storage without its driver": (
        lambda t: ["--set", "search.storage=postgresql://postgres@127.0.0.1:5432/test"],
        "search.storage: the database driver for 'postgresql' is not installed",
    ),
    "storage database not answering": (
        lambda t: ["--set", "search.storage=postgresql+psycopg2://postgres:secret@127.0.0.1:9/test"],
        "search.storage: cannot connect to postgresql+psycopg2://postgres:***@127.0.0.1:9/test",
    ),
    "Dask scheduler not answering": (
        lambda t: ["--set", "search.cluster_address=tcp://127.0.0.1:9"],
        "search.cluster_address: no Dask scheduler answers at tcp://127.0.0.1:9",
    ),
    "missing warm-start file": (
        lambda t: ["--set", f"warm_start.from_file={t / 'best.json'}"],
        "warm_start.from_file: {tmp}/best.json: no such file",
    ),
    "unknown registry promote rule": (
        lambda t: ["--set", "registry.promote=sometimes"],
        "registry.promote: Input should be 'better', 'always' or 'never'",
    ),
    "boolean registry promote rule": (
        lambda t: ["--set", "registry.promote=true"],
        "registry.promote: Input should be 'better', 'always' or 'never'",
    ),
    "registry name MLflow refuses": (
        lambda t: ["--set", "registry.model_name=team/model"],
        "registry.model_name: 'team/model' is not a name: letters, digits, '_', '-' and '.', first a letter or digit",
    ),
    # names become folders, experiments, studies and registered models: the rule for names, checked at the door
    "registry name a models:/ URI cannot address": (
        lambda t: ["--set", "registry.model_name=a@b"],
        "registry.model_name: 'a@b' is not a name",
    ),
    "registry name that is a way up": (lambda t: ["--set", "registry.model_name=.."], "registry.model_name: '..' is"),
    "config name of 600 characters": (
        lambda t: ["--set", f"name={'n' * 600}"],
        "name: a name of 600 characters is too long (at most 128)",
    ),
    "config name with a control character": (lambda t: ["--set", 'name="co2\tweekly"'], "name: 'co2\\tweekly' is not"),
    "study name that is a path": (lambda t: ["--study-name", "/tmp/x"], "--study-name: '/tmp/x' is not a name"),
    "study name leading out of the state": (lambda t: ["--study-name", "../../x"], "--study-name: '../../x' is not"),
    "study name of 600 characters": (
        lambda t: ["--study-name", "s" * 600],
        "--study-name: a name of 600 characters is too long (at most 149)",
    ),
    "empty study name": (lambda t: ["--study-name", ""], "--study-name: '' is not a name"),
    "reserved alias": (lambda t: ["--set", "score.alias=latest"], "score.alias: 'latest' is reserved"),
    "description past MLflow's tag length": (
        lambda t: ["--set", "description=" + "d" * 20_001],
        "description: String should have at most 20000 characters",
    ),
    "version alias in capitals": (lambda t: ["--set", "score.alias=V2"], "score.alias: 'V2' is reserved"),
    # integers within what the libraries downstream take
    "negative seed": (lambda t: ["--set", "seed=-1"], "seed: Input should be greater than or equal to 0 (got -1)"),
    "seed past numpy's": (
        lambda t: ["--set", "seed=4294967296"],
        "seed: Input should be less than or equal to 4294967295 (got 4294967296)",
    ),
    "trials past any budget": (
        lambda t: ["--set", f"search.n_trials={10**30}"],
        "search.n_trials: Input should be less than or equal to 1000000",
    ),
    "a searched size past a C int": (
        lambda t: ["--set", f"search.space.hidden_size.high={10**30}"],
        "search.space.hidden_size.high: Input should be less than or equal to 2147483647",
    ),
    "a fixed size past a C int": (
        lambda t: ["--set", "search.space=null", "--set", f"model.params.hidden_size={10**30}"],
        f"model.params.hidden_size: {10**30} is out of range; hidden_size takes an integer of at most 2147483647",
    ),
    "an integer choice past a C int": (
        lambda t: ["--set", f"search.space.batch_size.choices=[32, {2**31}]"],
        "search.space.batch_size.choices: 2147483648 is out of range",
    ),
    "a season past any series": (
        lambda t: ["--set", f"data.season={10**30}"],
        "data.season: must be at most 1000000 steps",
    ),
    # a key given twice: the later value would win without a word
    "duplicate key in an override's mapping": (
        lambda t: [
            "--set",
            "search.space={lr: {type: float, low: 0.001, high: 0.01}, lr: {type: float, low: 0.1, high: 1}}",
        ],
        "--set search.space: duplicate key 'lr'",
    ),
    # schedules: what Prefect takes, checked by `automl validate` and `run`, not first by `automl serve`
    "unknown time zone": (
        lambda t: ["--set", "schedule.timezone=Mars/Olympus"],
        "schedule.timezone: 'Mars/Olympus' is not a time zone name",
    ),
    "cron minute past 59": (
        lambda t: ["--set", "schedule.cron=61 * * * *"],
        "schedule.cron: '61 * * * *' is not a cron",
    ),
    "random cron field": (
        lambda t: ["--set", "schedule.cron=R 2 * * *"],
        "schedule.cron: 'R 2 * * *': Prefect does not take random (R) or hashed (H) cron fields",
    ),
    "scoring cron not a cron": (
        lambda t: ["--set", "score.data=x.csv", "--set", "schedule.score_cron=every day"],
        "schedule.score_cron: 'every day' is not a cron",
    ),
    # storage files whose folder cannot be made
    "SQLite storage under a file": (
        lambda t: ["--set", f"search.storage=sqlite:///{_file(t, 'plain', 'x')}/studies/optuna.db"],
        "search.storage: cannot create {tmp}/plain/studies: {tmp}/plain is a file, not a folder",
    ),
    "journal storage under a file": (
        lambda t: ["--set", f"search.storage=journal://{_file(t, 'plain', 'x')}/studies.log"],
        "search.storage: cannot create {tmp}/plain: {tmp}/plain is a file, not a folder",
    ),
    "storage file that is a folder": (
        lambda t: ["--set", f"search.storage=sqlite:///{t}"],
        "search.storage: {tmp} is a folder, not a file for the studies",
    ),
    "scoring schedule without data": (
        lambda t: ["--set", "schedule.score_cron=0 6 * * *"],
        "schedule.score_cron: a scoring schedule needs score.data",
    ),
    "scoring output of another format": (
        lambda t: ["--set", "score.output=preds.xlsx"],
        "score.output: must end in .parquet or .csv",
    ),
    # data
    "missing data file": (lambda t: ["--set", f"data.path={t / 'nope.csv'}"], "data.path: no such file"),
    "empty file": (_data(lambda t: _file(t, "empty.csv", "")), "the file is empty"),
    "header only": (_data(lambda t: _file(t, "header.csv", "week,sales\n")), "no data rows"),
    "wrong delimiter": (_data(lambda t: _series(t, make_series(), sep=";")), "does not look comma-separated"),
    "non-numeric target": (
        _data(lambda t: _series(t, make_series().assign(sales="high"))),
        "data.target: column 'sales' must be numeric",
    ),
    "all-NaN covariate": (
        _data(lambda t: _series(t, make_series().assign(temperature=np.nan))),
        "column 'temperature': all values are missing",
    ),
    "all-NaN target": (
        _data(lambda t: _series(t, make_series().assign(sales=np.nan))),
        "data.target: column 'sales' has no values",
    ),
    "duplicate timestamps": (
        _data(lambda t: _series(t, pd.concat([make_series(), make_series().tail(3)]))),
        "data.time_column: column 'week' has duplicate timestamps",
    ),
    "unparseable timestamps": (
        _data(lambda t: _series(t, make_series().assign(week="soon"))),
        "data.time_column: column 'week' is not a date/time",
    ),
    "too few rows": (
        _data(lambda t: _series(t, make_series().head(15))),
        "data.path: too few rows (15) for lookback 8 + horizon 1",
    ),
    "unreadable parquet": (
        _data(lambda t: _file(t, "data.parquet", b"PAR1 this is not parquet")),
        "data.path: cannot read",
    ),
    "unsupported file type": (_data(lambda t: _file(t, "data.xlsx", b"\x00\x01")), "unsupported file type '.xlsx'"),
    "infinite target": (
        _data(lambda t: _series(t, make_series().assign(sales=lambda f: f["sales"].where(f.index != 30, np.inf)))),
        "column 'sales': data row 31 holds inf; values must be finite",
    ),
    "absurdly large target": (
        _data(lambda t: _series(t, make_series().assign(sales=lambda f: f["sales"].where(f.index != 9, 1e308)))),
        "column 'sales': data row 10 holds 1e+308",
    ),
    "infinite covariate": (
        _data(
            lambda t: _series(
                t, make_series().assign(temperature=lambda f: f["temperature"].where(f.index != 4, -np.inf))
            )
        ),
        "column 'temperature': data row 5 holds -inf",
    ),
    "missing target column": (
        lambda t: ["--set", "data.target=price"],
        "data.target: column 'price' not found in co2_weekly.csv",
    ),
    "missing time column": (
        lambda t: ["--set", "data.time_column=when"],
        "data.time_column: column 'when' not found in co2_weekly.csv",
    ),
    "--budget of 0 seconds": (lambda t: ["--budget", "0"], "budget.seconds: Input should be greater than 0 (got 0)"),
    "negative --budget": (lambda t: ["--budget", "-5"], "budget.seconds: Input should be greater than 0 (got -5)"),
    "--budget not a number": (lambda t: ["--budget", "ten"], "budget.seconds: Input should be a valid number"),
    "infinite --budget": (lambda t: ["--budget", ".inf"], "budget.seconds: inf is not a finite number"),
    "empty --budget": (lambda t: ["--budget", " "], "--budget: give the run's budget in seconds"),
    "budget in the config not a number": (
        lambda t: ["--set", "budget.seconds=[60]"],
        "budget.seconds: Input should be a valid number",
    ),
    # cross-validation (search.cv)
    "more folds than the series allows": (
        lambda t: ["--set", "search.cv.folds=100", "--set", "data.horizon=30"],
        "search.cv.folds: 100 folds of 1940 train+validation rows give validation windows of 19 rows, too short",
    ),
    "a fold smaller than lookback + horizon": (
        lambda t: ["--set", "search.cv.folds=2", "--set", "data.lookback=700"],
        "search.cv.folds: with 2 folds the first fold trains on 648 rows, fewer than lookback 700 + horizon 1 + 7",
    ),
    "stratified folds of a series": (
        lambda t: ["--set", "search.cv.folds=3", "--set", "search.cv.kind=stratified"],
        "search.cv.kind: 'stratified' does not apply to the series family 'lstm'; use auto, rolling_origin or",
    ),
    "zero folds": (lambda t: ["--set", "search.cv.folds=0"], "search.cv.folds: Input should be greater than or equal"),
    "folds not a number": (lambda t: ["--set", "search.cv.folds=five"], "search.cv.folds: Input should be a valid"),
    "negative gap": (lambda t: ["--set", "search.cv.gap=-1"], "search.cv.gap: Input should be greater than or equal"),
    "unknown fold kind": (lambda t: ["--set", "search.cv.kind=loo"], "search.cv.kind: Input should be 'auto'"),
    # population-based training (search.strategy pbt) and the range test (search.lr_range)
    "a population of one": (
        lambda t: [*PBT, "--set", "search.pbt.population=1"],
        "search.pbt.population: Input should be greater than or equal to 2",
    ),
    "a quantile of zero": (lambda t: [*PBT, "--set", "search.pbt.quantile=0"], "search.pbt.quantile: Input should be"),
    "a quantile above a half": (
        lambda t: [*PBT, "--set", "search.pbt.quantile=0.6"],
        "search.pbt.quantile: Input should be less than or equal to 0.5",
    ),
    "a non-finite quantile": (
        lambda t: [*PBT, "--set", "search.pbt.quantile=.nan"],
        "search.pbt.quantile: nan is not a finite number",
    ),
    "an interval longer than the training": (
        lambda t: [*PBT, "--set", "search.pbt.interval_epochs=10", "--set", "search.pbt.epochs=4"],
        "search.pbt: interval_epochs (10) must be <= epochs (4)",
    ),
    "a perturb factor of zero": (
        lambda t: [*PBT, "--set", "search.pbt.perturb=[0, 1.2]"],
        "search.pbt.perturb: factors must be finite and > 0 (got [0.0, 1.2])",
    ),
    "pbt with nothing mutable to perturb": (
        lambda t: [
            *PBT,
            "--set",
            "model.params.lr=0.001",
            "--set",
            "model.params.dropout=0.1",
            "--set",
            "model.params.batch_size=32",
            "--set",
            "search.space={hidden_size: {type: int, low: 8, high: 16}}",
        ],
        "search.space: PBT perturbs parameters that can change while a model trains",
    ),
    "pbt with hyperband": (
        lambda t: ["--set", "search.strategy=pbt", "--set", "search.fidelity=hyperband"],
        "search.fidelity: hyperband does not apply to strategy pbt",
    ),
    "pbt with folds": (
        lambda t: [*PBT, "--set", "search.cv.folds=3"],
        "search.cv.folds: strategy pbt trains on one validation split",
    ),
    "pbt on a remote Dask cluster": (
        lambda t: [*PBT, "--set", "search.cluster_address=tcp://127.0.0.1:1"],
        "search.cluster_address: PBT members keep their checkpoints on this machine's disk",
    ),
    "unknown strategy": (lambda t: ["--set", "search.strategy=evolve"], "search.strategy: Input should be 'sample'"),
    "lr_range without lr in the space": (
        lambda t: [
            "--set",
            "search.lr_range=auto",
            "--set",
            "model.params.lr=0.001",
            "--set",
            "search.space={hidden_size: {type: int, low: 8, high: 16}}",
        ],
        "search.lr_range: auto narrows the space's lr, and lr is not in search.space",
    ),
    "unknown final.init": (lambda t: ["--set", "final.init=warm"], "final.init: Input should be 'best_trial' or"),
    "final.baselines not a list": (lambda t: ["--set", "final.baselines=naive"], "final.baselines: Input should be"),
    "unknown baseline": (lambda t: ["--set", "final.baselines=[naive, best]"], "final.baselines.1: Input should be"),
    # data.season: a positive integer or auto; true is not 1, 2.0 is not 2
    "season of zero": (lambda t: ["--set", "data.season=0"], "data.season: must be a positive integer or auto (got 0)"),
    "negative season": (
        lambda t: ["--set", "data.season=-7"],
        "data.season: must be a positive integer or auto (got -7)",
    ),
    "season a boolean": (lambda t: ["--set", "data.season=true"], "data.season: "),  # not taken as 1
    "fractional season": (lambda t: ["--set", "data.season=1.5"], "data.season: must be a positive integer or auto"),
    "season a whole float": (lambda t: ["--set", "data.season=2.0"], "data.season: must be a positive integer or auto"),
    "season not a number": (lambda t: ["--set", "data.season=.nan"], "data.season: nan is not a finite number"),
    "infinite season": (lambda t: ["--set", "data.season=.inf"], "data.season: inf is not a finite number"),
    "season a word": (
        lambda t: ["--set", "data.season=weekly"],
        "data.season: must be a positive integer or auto (got 'weekly')",
    ),
    "season auto spelled otherwise": (lambda t: ["--set", "data.season=AUTO"], "data.season: must be a positive"),
    "season longer than the training rows": (
        lambda t: [*_data(lambda t: _series(t, make_series()))(t), "--set", "data.season=169"],
        "data.season: 169 is longer than the training rows (168)",
    ),
    # final.ensemble and final.refit
    "no ensemble candidates": (
        lambda t: ["--set", "final.ensemble.top_k=0"],
        "final.ensemble.top_k: Input should be greater than or equal to 1 (got 0)",
    ),
    "negative selection rounds": (
        lambda t: ["--set", "final.ensemble.rounds=-1"],
        "final.ensemble.rounds: Input should be greater than or equal to 1 (got -1)",
    ),
    "rounds a boolean": (
        lambda t: ["--set", "final.ensemble.rounds=true"],
        "final.ensemble.rounds: True is a boolean; this key takes a number",
    ),
    "top_k a fraction": (lambda t: ["--set", "final.ensemble.top_k=2.5"], "final.ensemble.top_k: Input should be"),
    "rounds not a number": (
        lambda t: ["--set", "final.ensemble.rounds=.nan"],
        "final.ensemble.rounds: nan is not a finite number",
    ),
    "an unknown ensemble key": (lambda t: ["--set", "final.ensemble.size=3"], "final.ensemble.size: unknown key"),
    "refit yes": (lambda t: ["--set", "final.refit=yes"], "final.refit: Input should be 'none' or 'all' (got True)"),
    "top_k empty": (
        lambda t: ["--set", "final.ensemble.top_k="],
        "final.ensemble.top_k: Input should be a valid integer",
    ),
    "rounds huge": (
        lambda t: ["--set", "final.ensemble.rounds=99999999"],
        "final.ensemble.rounds: Input should be less than or equal to 1000",
    ),
    "refit a path": (lambda t: ["--set", "final.refit=../../etc"], "final.refit: Input should be 'none' or 'all'"),
    "refit a word": (
        lambda t: ["--set", "final.refit=everything"],
        "final.refit: Input should be 'none' or 'all' (got 'everything')",
    ),
    # a boolean for a number anywhere in the config is refused, not read as 1 or 0
    "a boolean for an int key": (
        lambda t: ["--set", "warm_start.top_k=true"],
        "warm_start.top_k: True is a boolean; this key takes a number",
    ),
    "a boolean for a float key": (
        lambda t: ["--set", "search.timeout=false"],
        "search.timeout: False is a boolean; this key takes a number",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, home, tmp_path, capsys):
    make_args, expected = CASES[case]
    code = main(["run", LSTM, *make_args(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected.format(tmp=tmp_path) in err
    assert out == ""
    assert not home.exists(), "a rejected run must not create the state folder"


def test_the_matrix_is_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_more_classes_than_a_split_has_rows(home, tmp_path, capsys):
    rows = pd.DataFrame({"x": np.arange(30.0), "kind": [f"c{i % 6}" for i in range(30)]})
    path = _series(tmp_path, rows, "kinds.csv")
    args = ["--set", f"data.path={path}", "--set", "data.target=kind"]
    assert main(["run", str(REPO / "configs" / "mlp_tabular.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert "data.split: the test split gets 5 of 30 rows, fewer than the 6 classes of 'kind'" in err
    assert err.count("\n") == 1 and not home.exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.task=regression", "data.target=body_mass_g", "search.cv.kind=stratified"], "search.cv.kind: strat"),
        (["data.target=body_mass_g", "search.cv.folds=3", "search.cv.kind=stratified"], "search.cv.kind: strat"),
        (["search.cv.folds=70"], "search.cv.folds: stratified folds put every class in every fold; class"),
        (["search.cv.folds=3", "search.cv.kind=rolling_origin"], "search.cv.kind: 'rolling_origin' does not apply"),
        (["search.cv.folds=3", "search.cv.gap=2"], "search.cv.gap: only series folds have a gap"),
    ],
)
def test_tabular_folds_the_data_does_not_allow(overrides, expected, home, capsys):
    args = [arg for override in overrides for arg in ("--set", override)]
    assert main(["run", str(REPO / "configs" / "mlp_tabular.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    assert not home.exists(), "a rejected run must not create the state folder"


def test_a_seasonal_baseline_for_a_table(home, capsys):
    args = ["--set", "final.baselines=[naive, seasonal_naive]"]
    assert main(["run", str(REPO / "configs" / "mlp_tabular.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert "final.baselines: seasonal_naive forecasts a series; the tabular family 'mlp' takes default_config" in err
    assert err.count("\n") == 1 and not home.exists(), "a rejected run must not create the state folder"


def test_a_study_continued_with_other_cv_settings(home, tmp_path, capsys):
    import optuna

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="earlier", storage=storage)
    study.set_user_attr("rung_fractions", [1.0])  # a study from before search.cv: one split
    capsys.readouterr()  # Optuna's own line about the study made here, when its logging is still at INFO
    args = ["--set", f"search.storage={storage}", "--set", "search.fidelity=none", "--set", "search.cv.folds=3"]
    assert main(["run", LSTM, *args, "--study-name", "earlier"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: search.cv: study 'earlier' was run with cross-validation {'folds': 1}")
    assert err.count("\n") == 1 and not study.trials


def test_a_study_continued_with_another_strategy(home, tmp_path, capsys):
    import optuna

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="sampled", storage=storage)
    study.set_user_attr("rung_fractions", [1.0])  # a sampled study from before search.strategy
    capsys.readouterr()  # Optuna's own line about the study made here, when its logging is still at INFO
    assert main(["run", LSTM, *PBT, "--set", f"search.storage={storage}", "--study-name", "sampled"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: search.strategy: study 'sampled' was run with strategy sample; this config gives")
    assert err.count("\n") == 1 and not study.trials


def test_a_study_continued_with_other_fidelity_settings(home, tmp_path, capsys):
    import optuna
    from mlflow.tracking import MlflowClient

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="earlier", storage=storage)
    study.set_user_attr("rung_fractions", [1.0])
    capsys.readouterr()  # Optuna's own line about the study made here, when its logging is still at INFO
    args = ["--set", f"search.storage={storage}", "--set", "search.fidelity=hyperband", "--study-name", "earlier"]
    assert main(["run", LSTM, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: search.fidelity: study 'earlier' was run with rungs [1.0]") and err.count("\n") == 1
    assert optuna.get_all_study_names(storage) == ["earlier"] and not study.trials
    assert not (home / "mlflow.db").exists() or not MlflowClient(f"sqlite:///{home / 'mlflow.db'}").search_runs(["0"])


def test_a_bad_config_file(home, tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: {family: lstm\n")
    assert main(["run", str(broken)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {broken}: not valid YAML at line")
    assert main(["run", str(tmp_path / "absent.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    assert not home.exists()


def test_a_cuda_device_that_is_not_there(home, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["run", LSTM, "--set", "training.device=cuda"]) == 2
    assert "training.device: cuda requested, but torch sees no CUDA device here" in capsys.readouterr().err
    assert not home.exists()


def test_odd_files_and_folders_are_one_line(home, tmp_path, capsys):
    """A symlink loop for data.path, YAML nested too deeply, a state folder that is a file, a tracking database
    that is not one, an unreachable tracking server: one line each, exit 2, no traceback."""
    loop = tmp_path / "loop.csv"
    loop.symlink_to(tmp_path / "loop.csv")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 2000 + "]" * 2000 + "\n")
    cases = [
        (["run", LSTM, "--set", f"data.path={loop}"], {}, "data.path"),
        (["run", str(deep)], {}, "nested too deeply"),
        (["run", LSTM], {"AUTOML_HOME": str(REPO / "README.md")}, "is a file, not a folder for the state"),
        (["configs", "list", "--model", "lstm' or 1=1 --"], {}, '--model: "lstm\' or 1=1 --" is not a model family'),
        (["configs", "list"], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, "the MLflow server at http://127.0.0.1:9"),
    ]
    for args, env, message in cases:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            code = main(args)
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, (args, err)
    assert not home.exists()  # not even the state folder


def test_a_tracking_database_that_is_not_one(home, capsys):
    home.mkdir()
    (home / "mlflow.db").write_text("this is not a database")
    assert main(["configs", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MLflow tracking store sqlite:///") and "cannot be used" in err
    assert err.count("\n") == 1


def test_an_export_to_a_folder_leaves_nothing_behind(home, tmp_path, capsys, monkeypatch):
    from automl.tasks.warm_start import config_store

    monkeypatch.setattr(config_store, "export_config", lambda run_id: None)
    folder = tmp_path / "exports"
    folder.mkdir()
    assert main(["configs", "export", "some-run", "-o", str(folder)]) == 2
    assert f"--output: {folder} is a directory" in capsys.readouterr().err
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob(".*.tmp"))


def test_a_key_given_twice_in_a_config_file_is_refused_naming_the_file_line_and_key(home, tmp_path, capsys):
    config = (REPO / "configs" / "lstm_baseline.yaml").read_text()
    doubled = tmp_path / "doubled.yaml"
    doubled.write_text(config.replace("search:\n", "search:\n  epochs: 3\n  epochs: 4\n", 1))
    line = doubled.read_text().splitlines().index("  epochs: 4") + 1
    assert main(["run", str(doubled)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {doubled}: line {line}: duplicate key 'epochs' (first given at line {line - 1})\n"
    assert not home.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["champion", "history", "a@b"], "champion: NAME: 'a@b' is not a name"),
        (["champion", "history", "--", "../mlruns"], "champion: NAME: '../mlruns' is not a name"),
        (["champion", "set", "x" * 300, "1"], "champion: NAME: a name of 300 characters is too long (at most 128)"),
        (["champion", "set", "co2", "v2"], "champion: VERSION: 'v2' is not a model version"),
        (["champion", "set", "co2", "0"], "champion: VERSION: '0' is not a model version"),
        (["champion", "set", "co2", str(2**31)], "champion: VERSION: '2147483648' is not a model version"),
        (["champion", "set", "co2", "9" * 5000], "champion: VERSION: '99999"),  # past int()'s digit limit
        (["serve", "--cron", "0 25 * * *", "--configs", "lstm_baseline"], "--cron: '0 25 * * *' is not a cron"),
    ],
)
def test_champion_and_serve_arguments_are_refused_before_the_registry_or_prefect_is_touched(
    args, expected, home, capsys
):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1, err
    assert not home.exists()
