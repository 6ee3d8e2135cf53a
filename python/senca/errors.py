"""The one exception type for mistakes a user can make.

Stages raise :class:`SencaError` for bad input (a missing file, a malformed column, an unknown spot);
only the CLI layer turns it into a one-line message and a non-zero exit. Anything else that escapes
is a bug in senca and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class SencaError(Exception):
    """A user-facing error: the message names the file, column or spot at fault."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        text = message if self.path is None else f"{self.path}: {message}"
        super().__init__(" ".join(text.split()))  # always one line
