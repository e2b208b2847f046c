"""Pipeline configs: the YAML files in this folder and the typed objects they validate into.

Example:
    >>> from configs import load_config
    >>> cfg = load_config("configs/lstm_baseline.yaml", overrides=["search.n_trials=6"])
"""

from pathlib import Path

from configs._errors import ConfigError, DataError, InputError
from configs._loader import (
    check_environment,
    config_file,
    config_hash,
    load_config,
    typed_overrides,
    validate_config,
)
from configs._schema import (
    CategoricalParam,
    DataConfig,
    FloatParam,
    IntParam,
    ParamSpec,
    PipelineConfig,
    SearchConfig,
    SplitConfig,
)
from configs._transfer import FORMAT as TRANSFER_FORMAT
from configs._transfer import TransferredConfig, load_transferred_config

CONFIG_DIR = Path(__file__).resolve().parent


def shipped_configs() -> dict[str, Path]:
    """The pipeline configs shipped in this folder, by name."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


__all__ = [
    "CONFIG_DIR",
    "TRANSFER_FORMAT",
    "CategoricalParam",
    "ConfigError",
    "DataConfig",
    "DataError",
    "FloatParam",
    "InputError",
    "IntParam",
    "ParamSpec",
    "PipelineConfig",
    "SearchConfig",
    "SplitConfig",
    "TransferredConfig",
    "check_environment",
    "config_file",
    "config_hash",
    "load_config",
    "load_transferred_config",
    "shipped_configs",
    "typed_overrides",
    "validate_config",
]
