"""What a comparison shows while it runs: which cells are training, how far along, and an
estimate of the time left.

Each cell runs under :func:`cell_reporting`, which forwards what the library's bars count (the
training loops' steps, RL's timesteps, the evaluation episodes' steps; see
:mod:`kalmannet_ctrl._progress`) to a *sink*: in a worker process, a queue the parent drains
(:func:`worker_init`); in the parent's own process, the :class:`Status` directly. The status
line names the running cells with their current stage (``CartPole / kalmannet-lqg: fit 120/300``).

The remaining time is an estimate, and says so (``≈``): a running stage's own rate gives its
remaining time; a cell not started yet is counted at the mean duration of the finished cells of
the same method (or of all finished cells, before any of that method finished); the sum is
divided by the number of workers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._progress import reporting

__all__ = ["Status", "cell_reporting", "local_sink", "worker_init"]

#: A cell: (scenario label, method name).
Cell = tuple[str, str]
#: ``sink(cell, stage, done, total)``.
Sink = Callable[[Cell, str, int, "int | None"], None]

_sink: Sink | None = None


def worker_init(queue: Any) -> None:
    """Initializer of a worker process: report every cell's progress into ``queue``."""
    global _sink

    def put(cell: Cell, stage: str, done: int, total: int | None) -> None:
        with contextlib.suppress(Exception):  # a full or closed queue must not fail a cell
            queue.put_nowait((cell, stage, done, total))

    _sink = put


@contextlib.contextmanager
def local_sink(sink: Sink | None) -> Iterator[None]:
    """Report to ``sink`` from this process while the block runs (cells run in the parent)."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous


@contextlib.contextmanager
def cell_reporting(cell: Cell) -> Iterator[None]:
    """While the block runs, what the bars count is reported as progress of ``cell``."""
    sink = _sink
    if sink is None:
        yield
        return
    sink(cell, "start", 0, None)

    def forward(stage: str, done: int, total: int | None) -> None:
        sink(cell, stage, done, total)

    with reporting(forward):
        yield


@dataclass
class _Running:
    started: float
    stage: str = "start"
    done: int = 0
    total: int | None = None
    stage_started: float = 0.0


@dataclass
class Status:
    """The parent's view: running cells, finished durations, and the line for the bar.

    Parameters
    ----------
    methods : list of str
        The method of every cell still to run (for the estimate of the time left).
    workers : int
        Cells that run at once.
    clock : callable
        ``time.monotonic`` (a test gives its own).
    """

    methods: list[str]
    workers: int = 1
    clock: Callable[[], float] = time.monotonic
    running: dict[Cell, _Running] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=dict)
    finished: set[Cell] = field(default_factory=set)

    def update(self, cell: Cell, stage: str, done: int, total: int | None) -> None:
        """Record a report of ``cell`` (``stage`` "start" when it begins); a report that
        arrives after the cell finished (a worker's queue lags its result) is ignored."""
        if cell in self.finished:
            return
        now = self.clock()
        run = self.running.setdefault(cell, _Running(now, stage_started=now))
        if stage != run.stage:
            run.stage, run.stage_started = stage, now
        run.done, run.total = done, total

    def finish(self, cell: Cell) -> None:
        """Record that ``cell`` ended."""
        method = cell[1]
        self.finished.add(cell)
        run = self.running.pop(cell, None)
        if run is not None:
            self.durations.setdefault(method, []).append(self.clock() - run.started)
        if method in self.methods:
            self.methods.remove(method)

    def remaining_s(self) -> float | None:
        """The estimated seconds left (None before any estimate is possible)."""
        finished = [d for ds in self.durations.values() for d in ds]
        now, total = self.clock(), 0.0
        for run in self.running.values():
            if run.total and run.done:
                rate = (now - run.stage_started) / run.done
                total += rate * max(run.total - run.done, 0)
        queued = list(self.methods)
        for _, method in self.running:
            if method in queued:
                queued.remove(method)
        for method in queued:
            known = self.durations.get(method) or finished
            if not known:
                return None
            total += sum(known) / len(known)
        return total / max(self.workers, 1)

    def line(self) -> str:
        """``≈ 2 min left | CartPole / kalmannet-lqg: fit 120/300 | ...``."""
        parts = []
        left = self.remaining_s()
        if left is not None:
            parts.append(f"≈ {_duration(left)} left")
        for (scenario, method), run in self.running.items():
            name = f"{scenario} / {method}"
            if run.stage == "start":
                parts.append(f"{name}: starting")
            elif run.total:
                parts.append(f"{name}: {run.stage} {run.done}/{run.total}")
            else:
                parts.append(f"{name}: {run.stage} {run.done}")
        return " | ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
