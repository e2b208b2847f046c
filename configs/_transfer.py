"""The file format of a transferred config (``automl configs export`` / ``import``, ``warm_start.from_file``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from automl.configs._errors import ConfigError

FORMAT = "automl-config/v1"


class TransferredConfig(BaseModel):
    """A best config carried from one run (or project) to another, with what is known about where it won."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["automl-config/v1"] = FORMAT
    model_family: str = Field(min_length=1)
    task_type: Literal["regression", "classification"]
    params: dict[str, bool | int | float | str]
    space_signature: dict[str, dict[str, Any]] | None = None
    meta_features: dict[str, float] = {}
    metrics: dict[str, float] = {}
    source_run_id: str | None = None
    experiment: str | None = None
    dataset_fingerprint: str | None = None
    exported_at: str | None = None

    @field_validator("params")
    @classmethod
    def _non_empty(cls, params: dict[str, Any]) -> dict[str, Any]:
        if not params:
            raise ValueError("must hold at least one parameter")
        return params


def load_transferred_config(path: str | Path) -> TransferredConfig:
    """Read and validate a transferred config file; any problem is one ``ConfigError`` naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = json.loads(path.read_text(), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    except ValueError as exc:  # a key given twice, NaN or Infinity: what strict JSON and this format do not hold
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object with format {FORMAT!r}")
    try:
        return TransferredConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {loc}: {message}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (Python's reader would keep the last of two without a word)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity, which Python's reader takes and strict JSON does not."""
    raise ValueError(f"{name} is not a number this file may hold")
