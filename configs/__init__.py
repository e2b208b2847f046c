"""Pipeline configs: the YAML files in this folder and the typed objects they validate into.

Example:
    >>> from automl.configs import load_config
    >>> cfg = load_config("configs/lstm_baseline.yaml", overrides=["search.n_trials=6"])
"""

from automl.configs._errors import ConfigError, DataError, InputError
from automl.configs._loader import (
    CONFIG_DIR,
    check_cron,
    check_environment,
    check_name,
    check_param_value,
    config_file,
    config_hash,
    load_config,
    shipped_configs,
    storage_file,
    typed_overrides,
    validate_config,
)
from automl.configs._schema import (
    MAX_STUDY_NAME_LENGTH,
    BudgetConfig,
    CategoricalParam,
    CVConfig,
    DataConfig,
    FinalConfig,
    FloatParam,
    IntParam,
    ModelConfig,
    ParamSpec,
    PBTConfig,
    PipelineConfig,
    RegistryConfig,
    SearchConfig,
    SplitConfig,
    TrainingConfig,
    WarmStartConfig,
)
from automl.configs._transfer import FORMAT as TRANSFER_FORMAT
from automl.configs._transfer import TransferredConfig, load_transferred_config

__all__ = [
    "CONFIG_DIR",
    "MAX_STUDY_NAME_LENGTH",
    "TRANSFER_FORMAT",
    "BudgetConfig",
    "CVConfig",
    "CategoricalParam",
    "ConfigError",
    "DataConfig",
    "DataError",
    "FinalConfig",
    "FloatParam",
    "InputError",
    "IntParam",
    "ModelConfig",
    "PBTConfig",
    "ParamSpec",
    "PipelineConfig",
    "RegistryConfig",
    "SearchConfig",
    "SplitConfig",
    "TrainingConfig",
    "TransferredConfig",
    "WarmStartConfig",
    "check_cron",
    "check_environment",
    "check_name",
    "check_param_value",
    "config_file",
    "config_hash",
    "load_config",
    "load_transferred_config",
    "shipped_configs",
    "storage_file",
    "typed_overrides",
    "validate_config",
]
