"""Errors a long command stops with when one item of its work fails (not bad input)."""

from __future__ import annotations

__all__ = ["WorkFailed", "EXIT_WORK_FAILED"]

#: Exit status of a command stopped by :class:`WorkFailed` (bad input is 2, an interrupt 130).
EXIT_WORK_FAILED = 1


class WorkFailed(RuntimeError):
    """One item of a long command failed (a method on one sample, say).

    The message names the item, the error and what was kept, in one line; the CLIs print it as
    ``prog: error: ...`` and exit with :data:`EXIT_WORK_FAILED` (``--debug``: the traceback).
    """
