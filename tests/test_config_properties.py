"""Property-based tests over the config schema and the CLI (Hypothesis): for every key that takes a number, found by
walking the schema rather than listed by hand, a boolean or a non-finite number given for it is refused in one
line naming the key, exit 2, before the state folder exists; and any valid ensemble setting is taken as given."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from automl.cli import main
from configs import InputError, load_config
from configs._schema import PipelineConfig, _takes
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
