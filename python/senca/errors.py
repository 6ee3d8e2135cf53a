"""The one exception type for mistakes a user can make (and for an output that cannot be written).

Stages raise :class:`SencaError` for bad input (a missing file, a malformed column, an unknown spot);
only the CLI layer turns it into a one-line message and a non-zero exit. Anything else that escapes
is a bug in senca and keeps its traceback.

:class:`OutputError` is the one exception of the machine rather than of the input: a full disk, a
read-only or vanished output folder met *while writing*. It is still one line naming the file (a
traceback helps nobody free disk space), but exits 1 like a failed run, not 2 like a bad argument,
so a scheduler can tell "fix your samplesheet" from "retry elsewhere".
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path


class SencaError(Exception):
    """A user-facing error: the message names the file, column or spot at fault."""

    exit_code = 2  # a usage error: the input or an option is wrong

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        text = message if self.path is None else f"{self.path}: {message}"
        super().__init__(" ".join(text.split()))  # always one line


class OutputError(SencaError):
    """An output could not be written (no space left, read-only folder...): one line, exit status 1."""

    exit_code = 1


# OS errors that say "the machine cannot hold the output", not "senca has a bug": one line, exit 1
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def os_error_reason(exc: BaseException) -> str:
    """The short reason of an OS error ("No space left on device"), without Python's ``[Errno 28]`` noise."""
    text = str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc).strip()
    code = re.search(r"errno[ =]+(\d+)", text, flags=re.IGNORECASE)  # pyarrow / HDF5 carry it in the text
    if code:
        return os.strerror(int(code.group(1)))
    lines = text.splitlines()
    return lines[0] if lines else type(exc).__name__


def output_os_error(exc: OSError) -> OutputError | None:
    """An :class:`OutputError` for a full disk / quota / read-only file system met outside senca's own
    writers (a library writing its own file); None for any other OS error, which stays a bug report."""
    code = exc.errno
    if code is None:
        found = re.search(r"errno[ =]+(\d+)", str(exc), flags=re.IGNORECASE)
        code = int(found.group(1)) if found else None
    if code not in OUTPUT_ERRNOS:
        return None
    return OutputError(f"cannot write ({os_error_reason(exc)})", exc.filename)
