"""Property-based tests over the config schema and the CLI (Hypothesis): for every key that takes a number, found by
walking the schema rather than listed by hand, a boolean or a non-finite number given for it is refused in one
line naming the key, exit 2, before the state folder exists; so is an integer past what the libraries downstream
take, and any valid ensemble setting or seed is taken as given. Names (the config's, the registered model's, a
study's) are taken only when they are safe as file names and for MLflow and Optuna, and no name leads out of the
state folder; a key given twice at any depth of the YAML is refused; a cron string or time zone is taken exactly
when Prefect takes it; a storage file is refused exactly when its folder cannot be made."""

from __future__ import annotations

import math
import os
import re
import tempfile
import zoneinfo
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from automl.cli import main
from automl.configs import MAX_STUDY_NAME_LENGTH, InputError, check_environment, check_name, load_config
from automl.configs._loader import _read_yaml
from automl.configs._schema import PipelineConfig, _takes, cron_problem, name_problem
from tests.helpers import REPO

LSTM = str(REPO / "configs" / "lstm_baseline.yaml")
# keys inside the search space and the model's fixed params, which the schema holds as dicts of their own types
SPACE_KEYS = [
    "search.space.lr.low",
    "search.space.lr.high",
    "search.space.hidden_size.low",
    "search.space.dropout.high",
]
NOT_NUMBERS = ["true", "false", "yes", "no", "on", "off", ".nan", ".inf", "-.inf", "1e400", "-1e999", "nan", "[true]"]


def _number_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of ``model`` whose value is a number (or numbers), through nested sections."""
    keys = []
    for name, field in model.model_fields.items():
        nested = [a for a in (field.annotation, *get_args(field.annotation)) if isinstance(a, type)]
        section = next((a for a in nested if issubclass(a, BaseModel)), None)
        if section is not None:
            keys += _number_keys(section, f"{prefix}{name}.")
        elif _takes(field.annotation, (int, float)):
            keys.append(f"{prefix}{name}")
    return keys


NUMBER_KEYS = _number_keys(PipelineConfig) + SPACE_KEYS


def test_the_schema_walk_finds_the_number_keys():
    assert len(NUMBER_KEYS) >= 30
    assert {"seed", "final.ensemble.top_k", "final.ensemble.rounds", "data.season", "search.pbt.perturb"} <= set(
        NUMBER_KEYS
    )


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(NUMBER_KEYS), text=st.sampled_from(NOT_NUMBERS))
def test_a_boolean_or_a_non_finite_number_for_any_number_key_is_refused_naming_the_key(key, text):
    value = f"[{text}, 1.2]" if key == "search.pbt.perturb" and not text.startswith("[") else text
    with pytest.raises(InputError) as error:
        load_config(LSTM, [f"{key}={value}"])
    message = str(error.value)
    assert f"{key}:" in message and "\n" not in message, message


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(NUMBER_KEYS), text=st.sampled_from(NOT_NUMBERS))
def test_the_cli_refuses_them_in_one_line_with_exit_2_and_creates_nothing(key, text, capsys, monkeypatch):
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "state"
        monkeypatch.setenv("AUTOML_HOME", str(home))
        code = main(["run", LSTM, "--set", f"{key}={text}"])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
        assert f"{key}:" in err
        assert not home.exists(), "a refused run must not create the state folder"


@settings(max_examples=40, deadline=None)
@given(top_k=st.integers(1, 50), rounds=st.integers(1, 1000), refit=st.sampled_from(["none", "all"]))
def test_every_valid_ensemble_and_refit_setting_is_taken_as_given(top_k, rounds, refit):
    cfg = load_config(
        LSTM, [f"final.ensemble.top_k={top_k}", f"final.ensemble.rounds={rounds}", f"final.refit={refit}"]
    )
    assert (cfg.final.ensemble.top_k, cfg.final.ensemble.rounds, cfg.final.refit) == (top_k, rounds, refit)


@settings(max_examples=60, deadline=None)
@given(
    top_k=st.one_of(st.integers(max_value=0), st.integers(min_value=51), st.floats(allow_nan=True), st.booleans()),
)
def test_every_out_of_range_top_k_is_refused(top_k: Any):
    if isinstance(top_k, float) and math.isfinite(top_k) and top_k.is_integer() and 1 <= top_k <= 50:
        return  # 3.0 is a whole number in range: pydantic takes it as 3
    with pytest.raises(InputError, match=r"final\.ensemble\.top_k: "):
        load_config(LSTM, values={"final.ensemble.top_k": top_k})


FITTING = {"series": ["lstm", "transformer", "gbm"], "tabular": ["mlp", "gbm"]}
NAMES = st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), min_size=1, max_size=12)


@settings(max_examples=80, deadline=None)
@given(
    kind=st.sampled_from(["series", "tabular"]),
    families=st.lists(st.sampled_from(["lstm", "transformer", "mlp", "gbm"]) | NAMES, min_size=0, max_size=4),
)
def test_search_families_take_exactly_the_distinct_families_that_fit_the_data(kind, families):
    """Under model.family auto, a list of the families that fit the data, each once, validates as given; anything
    else (another kind's family, an unknown or odd name, a repeat, nothing) is one error naming search.families."""
    overrides = ["model.family=auto", "search.space=null", f"search.families={_yaml_list(families)}"]
    if kind == "tabular":
        overrides += ["data.time_column=null", "data.target=co2", "final.baselines=[naive]"]
    valid = bool(families) and len(set(families)) == len(families) and set(families) <= set(FITTING[kind])
    if valid:
        assert load_config(LSTM, overrides).search.families == families
        return
    with pytest.raises(InputError) as error:
        load_config(LSTM, overrides)
    assert "search.families" in str(error.value) and "\n" not in str(error.value)


def _yaml_list(items: list[str]) -> str:
    return "[" + ", ".join('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items) + "]"


def _int_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of ``model`` that takes an integer, through nested sections."""
    keys = []
    for name, field in model.model_fields.items():
        nested = [a for a in (field.annotation, *get_args(field.annotation)) if isinstance(a, type)]
        section = next((a for a in nested if issubclass(a, BaseModel)), None)
        if section is not None:
            keys += _int_keys(section, f"{prefix}{name}.")
        elif _takes(field.annotation, (int,)):
            keys.append(f"{prefix}{name}")
    return keys


# integer keys inside the search space and the model's fixed params (each a size the model is built with)
INT_SPACE_KEYS = ["search.space.hidden_size.low", "search.space.hidden_size.high", "search.space.hidden_size.step"]
INT_KEYS = _int_keys(PipelineConfig) + INT_SPACE_KEYS
HUGE = st.integers(min_value=2**63, max_value=10**40) | st.integers(min_value=-(10**40), max_value=-(2**63))


def test_the_schema_walk_finds_the_integer_keys():
    assert {"seed", "data.lookback", "data.season", "search.n_trials", "search.eta", "final.patience"} <= set(INT_KEYS)
    assert len(INT_KEYS) >= 20


@settings(max_examples=120, deadline=None)
@given(key=st.sampled_from(INT_KEYS), value=HUGE)
def test_an_integer_no_library_downstream_takes_is_refused_for_every_integer_key(key, value):
    with pytest.raises(InputError) as error:
        load_config(LSTM, values={key: value})
    message = str(error.value)
    assert f"{key}:" in message and "\n" not in message, message


@settings(max_examples=40, deadline=None)
@given(where=st.sampled_from(["model.params.hidden_size", "search.space.batch_size.choices"]), value=HUGE)
def test_a_model_size_past_a_c_int_is_refused_fixed_or_as_a_choice(where, value):
    values = {where: value, "search.space": None} if where.startswith("model") else {where: [32, value]}
    with pytest.raises(InputError, match=rf"^\S+: {re.escape(where)}: "):
        load_config(LSTM, values=values)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(INT_KEYS), value=HUGE)
def test_the_cli_refuses_an_out_of_range_integer_in_one_line_with_exit_2_and_creates_nothing(
    key, value, capsys, monkeypatch
):
    _refused_by_the_cli(["run", LSTM, "--set", f"{key}={value}"], f"{key}:", capsys, monkeypatch)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(-(2**40), 2**40) | st.sampled_from([-1, 0, 2**32 - 1, 2**32]))
def test_a_seed_is_taken_exactly_when_numpy_takes_it(seed):
    """numpy's RandomState seeds Optuna's samplers and scikit-learn's splits: a seed it refuses would fail there,
    after the run started."""
    import numpy as np

    try:
        np.random.RandomState(seed)
    except ValueError:
        with pytest.raises(InputError, match=r": seed: Input should be (greater|less) than or equal to"):
            load_config(LSTM, values={"seed": seed})
        return
    assert load_config(LSTM, values={"seed": seed}).seed == seed


# Text of every kind a name could hold: path separators, dots, '@' and ':', spaces, control characters, non-ASCII.
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200) | st.text(
    st.sampled_from("aZ09_-.@:/\\ \t\n\x00~é"), max_size=12
)
VALID_NAMES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z").filter(lambda name: ".." not in name)
NAME_KEYS = ["name", "registry.model_name"]


def _a_safe_name(name: str) -> bool:
    """What the rule for names guarantees: MLflow's registry takes it and a models:/ URI addresses it, Optuna
    stores it, and joined to a folder it is one ordinary file name in that folder."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException:
        return False
    folder = Path("/state")
    return (
        0 < len(name.encode()) <= 200
        and (folder / name).parent == folder
        and Path(os.path.normpath(folder / name)) == folder / name
        and not name.startswith(".")
        and "@" not in name
        and name.isprintable()
        and name.strip() == name
    )


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(NAME_KEYS), name=ANY_TEXT | VALID_NAMES)
def test_a_name_is_refused_naming_its_key_unless_it_is_safe_for_files_mlflow_and_optuna(key, name):
    try:
        cfg = load_config(LSTM, values={key: name})
    except InputError as error:
        assert f": {key}: " in str(error) and "\n" not in str(error), str(error)
        return
    taken = cfg.name if key == "name" else cfg.registry.model_name
    assert taken == name and _a_safe_name(name), name


@settings(max_examples=60, deadline=None)
@given(alias=ANY_TEXT | st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_-]{0,127}\Z") | st.sampled_from(["V2", "latest"]))
def test_an_alias_is_refused_naming_its_key_unless_mlflow_takes_it(alias):
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_alias_name, _validate_model_alias_name_reserved

    try:
        cfg = load_config(LSTM, values={"score.alias": alias})
    except InputError as error:
        assert ": score.alias: " in str(error) and "\n" not in str(error), str(error)
        return
    try:
        _validate_model_alias_name(alias)
        _validate_model_alias_name_reserved(alias)
    except MlflowException as exc:
        pytest.fail(f"{alias!r} was taken, and MLflow refuses it: {exc}")
    assert cfg.score.alias == alias and len(alias) <= 128


@settings(max_examples=40, deadline=None)
@given(name=VALID_NAMES)
def test_every_name_within_the_rule_is_taken_by_every_key_and_argument_that_names_something(name):
    cfg = load_config(LSTM, values={"name": name, "registry.model_name": name})
    assert cfg.name == cfg.registry.model_name == name
    assert check_name("--study-name", name, MAX_STUDY_NAME_LENGTH) == check_name("champion: NAME", name) == name


@settings(max_examples=40, deadline=None)
@given(name=VALID_NAMES)
def test_a_default_study_name_of_any_config_name_may_be_continued_by_name(name):
    """Studies the pipeline named itself ("<config name>-<UTC time>-<4 hex digits>", tasks/tracking/runs.py) keep
    their folders, and --study-name takes them."""
    from datetime import UTC, datetime

    from automl.tasks.runtime.state import folder_name

    study = f"{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.urandom(2).hex()}"
    assert check_name("--study-name", study, MAX_STUDY_NAME_LENGTH) == study
    assert folder_name(study) == study


@settings(max_examples=200, deadline=None)
@given(name=ANY_TEXT)
def test_no_name_leads_out_of_the_state_folder(name):
    """Whatever a study or config is called (a study begun before names were checked included), the folders of the
    state named after it are one ordinary folder inside it, with a name a file system takes."""
    from automl.tasks.runtime.state import LocalState, folder_name

    state = LocalState(Path("/state"))
    for folder in (state.trial_weights(name), state.rung_checkpoints(name), state.pbt_checkpoints(name)):
        assert folder.parent.parent == state.home and folder.name not in ("", ".", "..")
        assert Path(os.path.normpath(folder)) == folder and len(folder.name.encode()) <= 200
    for folder in (state.lr_find(name), state.predictions(name)):
        assert folder.parent.parent == state.home and folder.name == folder_name(name)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=ANY_TEXT.filter(lambda n: name_problem(n, MAX_STUDY_NAME_LENGTH) is not None and "\x00" not in n))
def test_the_cli_refuses_a_name_outside_the_rule_in_one_line_with_exit_2_and_creates_nothing(name, capsys, monkeypatch):
    _refused_by_the_cli(["run", LSTM, f"--study-name={name}"], "--study-name: ", capsys, monkeypatch)
    _refused_by_the_cli(["champion", "history", "--", name], "champion: NAME: ", capsys, monkeypatch)


def _refused_by_the_cli(args: list[str], expected: str, capsys, monkeypatch) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "state"
        monkeypatch.setenv("AUTOML_HOME", str(home))
        code = main(args)
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
        assert expected in err, err
        assert not home.exists(), "a refused run must not create the state folder"
        assert list(Path(tmp).iterdir()) == [], "nor anything beside it"


KEY_TEXT = st.text(st.sampled_from("abcxyz_"), min_size=1, max_size=4)
MAPPINGS = st.recursive(
    st.integers(0, 9) | st.sampled_from(["text", "null", "true"]),
    lambda inner: st.dictionaries(KEY_TEXT, inner, min_size=1, max_size=4),
    max_leaves=12,
).filter(lambda tree: isinstance(tree, dict))


def _block_yaml(tree: dict[str, Any], depth: int = 0) -> list[str]:
    lines = []
    for key, value in tree.items():
        if isinstance(value, dict):
            lines += [f"{'  ' * depth}{key}:", *_block_yaml(value, depth + 1)]
        else:
            lines.append(f"{'  ' * depth}{key}: {value}")
    return lines


def _mappings(tree: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    return [path] + [
        p for key, value in tree.items() if isinstance(value, dict) for p in _mappings(value, (*path, key))
    ]


@settings(max_examples=50, deadline=None)
@given(tree=MAPPINGS, data=st.data())
def test_a_key_given_twice_at_any_depth_is_refused_naming_the_file_line_and_key(tree, data):
    """A YAML mapping anywhere in the file with a key given twice is refused (YAML would keep the later value
    silently); the same file without the repeat reads as YAML reads it."""
    path = data.draw(st.sampled_from(_mappings(tree)))
    node = tree
    for key in path:
        node = node[key]
    key = data.draw(st.sampled_from(sorted(node)))
    lines = _block_yaml(tree)
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "clean.yaml"
        clean.write_text("\n".join(lines) + "\n")
        assert _read_yaml(clean) == yaml.safe_load(clean.read_text())
        # the repeat goes right after the last line of the mapping at ``path``: the same indentation
        depth, first = len(path), _line_of(lines, path, key)
        end = first
        while end + 1 < len(lines) and _indent(lines[end + 1]) > depth:
            end += 1
        doubled = Path(tmp) / "doubled.yaml"
        doubled.write_text("\n".join([*lines[: end + 1], f"{'  ' * depth}{key}: 1", *lines[end + 1 :]]) + "\n")
        with pytest.raises(InputError) as error:
            _read_yaml(doubled)
    expected = f"{doubled}: line {end + 2}: duplicate key {key!r} (first given at line {first + 1})"
    assert str(error.value) == expected


def _indent(line: str) -> int:
    return (len(line) - len(line.lstrip(" "))) // 2


def _line_of(lines: list[str], path: tuple[str, ...], key: str) -> int:
    """The index of ``key``'s line in the mapping at ``path`` (each key of a block mapping has its own line)."""
    at = -1
    for depth, part in enumerate((*path, key)):
        at = next(
            i
            for i in range(at + 1, len(lines))
            if _indent(lines[i]) == depth and lines[i].lstrip(" ").split(":")[0] == part
        )
    return at


CRON_FIELDS = st.sampled_from(
    [
        "*",
        "0",
        "5",
        "59",
        "60",
        "61",
        "23",
        "24",
        "*/15",
        "*/0",
        "1-5",
        "5-1",
        "1,2",
        "MON",
        "jan",
        "L",
        "1#2",
        "R",
        "H",
        "h",
        "?",
        "-1",
        "x",
        "0-59/5",
        "31",
        "32",
        "13",
    ]
)
CRONS = st.lists(CRON_FIELDS, min_size=0, max_size=7).map(" ".join) | st.sampled_from(["@daily", "@hourly", "@x"])


@settings(max_examples=100, deadline=None)
@given(expression=CRONS | ANY_TEXT.filter(lambda t: len(t) < 40))
def test_a_cron_string_is_taken_exactly_when_prefect_takes_it(expression):
    from prefect._internal.schemas.validators import validate_cron_string

    try:
        validate_cron_string(expression)
        prefect_takes = True
    except ValueError:
        prefect_takes = False
    assert (cron_problem(expression) is None) == prefect_takes, expression
    key = "schedule.cron"
    if prefect_takes:
        assert load_config(LSTM, values={key: expression}).schedule.cron == expression
    else:
        with pytest.raises(InputError, match=rf": {re.escape(key)}: "):
            load_config(LSTM, values={key: expression})


@settings(max_examples=60, deadline=None)
@given(zone=st.sampled_from(sorted(zoneinfo.available_timezones())) | ANY_TEXT.filter(bool))
def test_a_time_zone_is_taken_exactly_when_prefect_takes_it(zone):
    from prefect._internal.schemas.validators import default_timezone

    try:
        default_timezone(zone)
        prefect_takes = True
    except ValueError:
        prefect_takes = False
    if prefect_takes:
        assert load_config(LSTM, values={"schedule.timezone": zone}).schedule.timezone == zone
    else:
        with pytest.raises(InputError, match=r": schedule\.timezone: "):
            load_config(LSTM, values={"schedule.timezone": zone})


@settings(max_examples=30, deadline=None)
@given(
    scheme=st.sampled_from(["sqlite:///", "journal://"]),
    parts=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4),
    blocked=st.none() | st.integers(0, 3),
)
def test_a_storage_file_is_refused_exactly_when_its_folder_cannot_be_made_and_nothing_is_created(
    scheme, parts, blocked
):
    """A SQLite or journal file below a plain file cannot be made: refused naming search.storage. Any other is
    taken. The check creates nothing either way."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        in_the_way = blocked is not None and blocked < len(parts) - 1  # a folder of the file, not the file
        if in_the_way:
            root.joinpath(*parts[:blocked]).mkdir(parents=True, exist_ok=True)
            root.joinpath(*parts[: blocked + 1]).write_text("a plain file")
        before = sorted(root.rglob("*"))
        cfg = load_config(LSTM, values={"search.storage": f"{scheme}{root.joinpath(*parts)}.db"})
        if in_the_way:
            with pytest.raises(InputError, match=r"^search\.storage: cannot create .* is a file, not a folder$"):
                check_environment(cfg)
        else:
            check_environment(cfg)
        assert sorted(root.rglob("*")) == before
