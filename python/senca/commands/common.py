"""What every senca command shares: options, logging to stderr, and turning user errors into one line."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from senca.errors import SencaError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("senca")


def setup_logging(quiet: bool) -> None:
    """Log to stderr (data goes to files); ``--quiet`` keeps only warnings and errors."""
    level = logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("senca")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[senca] %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def user_errors(func: F) -> F:
    """Turn :class:`SencaError` into ``Error: <one line>`` on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SencaError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)

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
