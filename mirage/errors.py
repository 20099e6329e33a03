"""The one exception family of mirage.

Every error a user can cause derives from :class:`MirageError`. Messages are one line that names the input,
the value received and the fix, so the CLI's error boundary can print them as they are.
"""

from __future__ import annotations


class MirageError(Exception):
    """Base class of every error mirage raises on purpose.

    Args:
        message: one line: what input, which value, what is wrong.
        hint: optional one-line fix ("use --offload", "pass --size WxH").
    """

    exit_code: int = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class InputError(MirageError):
    """Bad user input: a file, an option or a value (exit code 2)."""


class TrajectoryError(InputError):
    """A trajectory file or preset that cannot be read or resolved."""


class DepthError(InputError):
    """A depth map that cannot be read or used."""


class ModelError(MirageError):
    """A model that cannot be found, downloaded or loaded."""


class MemoryFileError(InputError):
    """A saved spatial-memory file that cannot be loaded."""


class RuntimeFailure(MirageError):
    """A failure while running (out of memory, disk full); not the user's input (exit code 1)."""

    exit_code = 1


class OutputBusy(RuntimeFailure):
    """An output another running mirage process is writing (its lock file is held; exit code 1)."""
