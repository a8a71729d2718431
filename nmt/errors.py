"""Typed errors. Library code raises these; the CLI turns each into one line and an exit code."""


class NmtError(Exception):
    """Base class: a problem the user can fix, reported as one line without a traceback."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class CheckpointError(NmtError):
    """A checkpoint is missing, truncated, foreign or incompatible."""


class DataError(NmtError):
    """Input data is missing, malformed or inconsistent."""


class ConfigError(NmtError):
    """A preset, flag or config file asks for something that does not exist or cannot work."""
