"""Progress of long-running work: the library's bars, and a channel to whoever runs the work.

:func:`bar` is tqdm with the conventions that keep logs readable: it is hidden when the output is
not a terminal (``disable=None``: CI, a file) and redraws at most twice a second. Whatever it
counts is also passed to the current *reporter*, set with :func:`reporting`, even when the bar
itself is hidden: that is how the comparison shows, in one status line, which methods are
training in which scenario and how far along they are, while its worker processes draw nothing.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm import tqdm

__all__ = ["MININTERVAL", "bar", "report", "reporting"]

#: Seconds between two redraws of a bar (tqdm's default is 0.1).
MININTERVAL = 0.5

#: ``reporter(stage, done, total)``; ``total`` None when unknown.
Reporter = Callable[[str, int, "int | None"], None]

_reporter: Reporter | None = None


def report(stage: str, done: int, total: int | None) -> None:
    """Tell the current reporter (if any) that ``done`` of ``total`` units of ``stage`` ran."""
    if _reporter is not None:
        _reporter(stage, done, total)


@contextlib.contextmanager
def reporting(reporter: Reporter | None, *, every: float = 0.5) -> Iterator[None]:
    """Send what bars count to ``reporter`` (at most every ``every`` seconds, and always the
    last unit of a stage) while the block runs; the previous reporter is restored after."""
    global _reporter
    previous = _reporter
    last = [-math.inf]

    def throttled(stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= every or (total is not None and done >= total):
            last[0] = now
            reporter(stage, done, total)  # type: ignore[misc]

    _reporter = None if reporter is None else throttled
    try:
        yield
    finally:
        _reporter = previous


class _Bar(tqdm):  # type: ignore[type-arg]
    """tqdm that also reports its count (kept here: a hidden tqdm counts nothing)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # a disabled tqdm keeps neither its label nor, always, its total: kept here
        self._done, self._stage, self._total = 0, str(kwargs.get("desc")), kwargs.get("total")
        super().__init__(*args, **kwargs)

    def update(self, n: float | None = 1) -> bool | None:
        self._done += int(n or 0)
        report(self._stage, self._done, self._total)
        return super().update(n)

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            yield item
            self._done += 1
            report(self._stage, self._done, self._total)


def bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    total: int | None = None,
    enabled: bool = True,
    unit: str = "it",
) -> tqdm:  # type: ignore[type-arg]
    """A progress bar with the library's conventions (see the module's docstring).

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over (else call ``update``).
    desc : str
        The bar's label, also the stage reported.
    total : int, optional
        Default ``len(iterable)`` where it has one.
    enabled : bool
        False hides the bar whatever the output (the count is still reported).
    unit : str

    Returns
    -------
    tqdm
        Hidden when not ``enabled`` or when the output is not a terminal; not left on screen
        when done.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return _Bar(
        iterable,
        desc=desc,
        total=total,
        disable=None if enabled else True,
        mininterval=MININTERVAL,
        leave=False,
        unit=unit,
    )
