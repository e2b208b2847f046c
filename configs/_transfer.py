"""The file format of a transferred config (``automl configs export`` / ``import``, ``warm_start.from_file``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from configs._errors import ConfigError

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
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object with format {FORMAT!r}")
    try:
        return TransferredConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {loc}: {message}") from None
