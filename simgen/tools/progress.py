"""Progress bars that the user can switch off (``AET_PROGRESS=0``) and tests keep quiet."""

from __future__ import annotations

import os
import sys

__all__ = ["progress_enabled", "progress_bar"]


def progress_enabled() -> bool:
    """True unless ``AET_PROGRESS=0`` is set or stderr is not a terminal and ``AET_PROGRESS`` unset."""
    value = os.environ.get("AET_PROGRESS")
    if value is not None:
        return value not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def progress_bar(iterable=None, *, total=None, desc=None, unit="it", enabled=None, **kwargs):
    """A tqdm bar with rate and ETA, or a silent pass-through when progress is off."""
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = progress_enabled()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        **kwargs,
    )
