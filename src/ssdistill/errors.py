"""User-facing errors: one line that says what is wrong and what to do."""


class SsdistillError(Exception):
    """An error caused by the user's input (config, paths, data); the CLI prints it as one line."""


class ConfigError(SsdistillError):
    """A config key or value is invalid."""


class DataError(SsdistillError):
    """A dataset path, image or split is missing or unreadable."""


class ModelError(SsdistillError):
    """A model, weights file or shape does not match what was asked for."""


class TrainingError(SsdistillError):
    """Training cannot continue (for example the loss became NaN)."""
