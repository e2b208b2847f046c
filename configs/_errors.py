"""Errors in what a user gave us (config, overrides, data): one line naming the file/key/column; exit code 2."""


class InputError(Exception):
    """Bad user input. ``str(error)`` is the whole one-line message shown to the user."""

    exit_code = 2


class ConfigError(InputError):
    """A config file or override that does not validate."""


class DataError(InputError):
    """A data file that cannot be read or does not fit the config."""
