"""What every senca command shares: options, logging to stderr, and turning user errors into one line."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from senca.errors import SencaError, output_os_error

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("senca")


_LOG_TAG: str | None = None  # the slide a `senca run --jobs N` worker is on: every line it logs names it


def set_log_tag(tag: str | None) -> None:
    """Tag this process's log lines ``[senca <tag>]`` from now on (a parallel ``senca run`` worker's slide),
    so interleaved lines from slides running side by side can be told apart."""
    global _LOG_TAG
    _LOG_TAG = tag
    if tag:  # progress bars read it too (senca.progress imports nothing from commands)
        os.environ["SENCA_LOG_TAG"] = tag
    else:
        os.environ.pop("SENCA_LOG_TAG", None)


def setup_logging(quiet: bool) -> None:
    """Log to stderr (data goes to files); ``--quiet`` keeps only warnings and errors."""
    level = logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("senca")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[senca {_LOG_TAG}] %(message)s" if _LOG_TAG else "[senca] %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def user_errors(func: F) -> F:
    """Turn :class:`SencaError` into ``Error: <one line>`` on stderr and its exit status (2, or 1 for outputs).

    The command's ``--outdir`` is checked first (:func:`senca.io.artifacts.check_output_dir`), so a
    folder that cannot be made or written is one line before any work, not a traceback after it. A
    full disk met by a library's own write (``OSError`` ENOSPC and kin) is one line too, exit 1.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if kwargs.get("outdir") is not None:
                from senca.io.artifacts import check_output_dir

                check_output_dir(kwargs["outdir"])
            return func(*args, **kwargs)
        except SencaError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:
            error = output_os_error(exc)
            if error is None:
                raise
            click.echo(f"Error: {error}", err=True)
            sys.exit(error.exit_code)

    return wrapper  # type: ignore[return-value]


def quiet_option(func: F) -> F:
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars or info logs (warnings still shown).")(func)


def seed_option(func: F) -> F:
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed (CPU runs are bit-identical for a seed).")(func)


def device_option(func: F) -> F:
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                        help="Where to run torch: auto picks CUDA when available.")(func)


def outdir_option(func: F) -> F:
    return click.option("--outdir", "-o", type=click.Path(file_okay=False), default=".", show_default=True,
                        help="Folder for this stage's outputs (created if missing).")(func)
