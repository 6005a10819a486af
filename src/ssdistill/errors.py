"""User-facing errors: one line that says what is wrong and what to do."""


class SsdistillError(Exception):
    """An error caused by the user's input (config, paths, data); the CLI prints it as one line."""


def short(text: str, limit: int = 160) -> str:
    """The first line of ``text``, cut at a word boundary with an ellipsis when longer than ``limit``."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def one_line(exc: BaseException) -> str:
    """An error's message for the user: a DataLoader worker's re-raised error shows only its own last line, not the
    worker's traceback."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        return last.split(": ", 1)[1] if ": " in last and "Error" in last.split(": ", 1)[0] else last
    return text


class ConfigError(SsdistillError):
    """A config key or value is invalid."""


class DataError(SsdistillError):
    """A dataset path, image or split is missing or unreadable."""


class ModelError(SsdistillError):
    """A model, weights file or shape does not match what was asked for."""


class TrainingError(SsdistillError):
    """Training cannot continue (for example the loss became NaN)."""


class StorageError(SsdistillError):
    """A folder cannot take what must be written there: a full disk or quota, a read-only folder, an I/O error."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (SIGINT) or a scheduler's SIGTERM. The CLI prints ``interrupted: <message>`` (where it
    stopped, how to resume) and exits with ``exit_code`` (130 / 143). A KeyboardInterrupt, so code that cleans up after
    Ctrl-C cleans up after it too."""

    def __init__(self, message: str, exit_code: int = 130, run_dir=None, step: int | None = None) -> None:
        super().__init__(message)
        self.exit_code, self.run_dir, self.step = exit_code, run_dir, step
