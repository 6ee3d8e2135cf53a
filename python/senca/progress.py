"""Progress bars on stderr that ``--quiet`` silences."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], quiet: bool = False, **kwargs: Any) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr unless ``quiet``."""
    return tqdm(iterable, disable=quiet, leave=False, dynamic_ncols=True, **kwargs)
