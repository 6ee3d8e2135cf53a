"""Progress bars on stderr that ``--quiet`` silences."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


TAG_VARIABLE = "SENCA_LOG_TAG"  # set by a parallel `senca run` worker (commands.common.set_log_tag): its slide


def progress(iterable: Iterable[T], quiet: bool = False, **kwargs: Any) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr unless ``quiet``; a worker's bar names its slide."""
    tag = os.environ.get(TAG_VARIABLE)
    if tag and "desc" in kwargs:
        kwargs["desc"] = f"{tag}: {kwargs['desc']}"
    return tqdm(iterable, disable=quiet, leave=False, dynamic_ncols=True, **kwargs)
