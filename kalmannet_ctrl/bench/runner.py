"""Run methods on scenarios: one cell per (scenario, method), cached, in parallel."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from .._io import atomic_write_text
from .._progress import bar
from .._validation import check_positive_int
from ..metrics import ci95
from ..training.rollout import Rollout, run_episodes
from .cache import ArtifactCache, stable_hash
from .methods import BuildContext, Method
from .presets import BUDGETS
from .results import CellResult, Results
from .scenario import Scenario
from .status import Status, cell_reporting, local_sink, worker_init

__all__ = ["CellTask", "LocalExecutor", "compare", "run_cell"]

log = logging.getLogger(__name__)

_SAMPLE_EPISODES = 3


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs to run one cell (picklable)."""

    scenario: Scenario
    method: Method
    episodes: int
    seed: int
    cache_root: str | None
    #: Episodes whose states, measurements and estimates the cell keeps (``samples``).
    sample_episodes: int = _SAMPLE_EPISODES

    def key(self) -> str:
        spec = {
            "scenario": self.scenario.key(),
            "method": self.method.name,
            "config": self.method.key_config(self.scenario.env_id),
            "episodes": self.episodes,
            "seed": self.seed,
            "version": __version__,
        }
        if self.sample_episodes != _SAMPLE_EPISODES:
            spec["sample_episodes"] = self.sample_episodes
        return stable_hash(spec)


def run_cell(task: CellTask) -> CellResult | None:
    """Build the method's controller and run ``task.episodes`` seeded episodes of the scenario.

    Returns None when the method does not apply to the scenario.
    """
    torch.set_num_threads(1)
    scenario, method = task.scenario, task.method
    env = scenario.make()
    if method.applies is not None and not method.applies(env):
        return None
    start = time.perf_counter()
    cache = ArtifactCache(None if task.cache_root is None else Path(task.cache_root) / "artifacts")
    ctx = BuildContext(scenario, env, method.train_seed(task.seed), cache, method=method)
    B, T = task.episodes, scenario.steps
    with cell_reporting((scenario.label, method.name)):
        controller = method.build(ctx)
        build_s = time.perf_counter() - start
        envs = scenario.make_vec(B)
        try:
            with bar(desc="evaluate", total=T, enabled=False) as steps:
                roll = run_episodes(envs, controller, T, seed=task.seed, estimates=True, bar=steps)
        finally:
            envs.close()
    if roll.alive.any():  # pragma: no cover - the vector env truncates at T
        raise RuntimeError("run_cell: episodes did not end at the scenario's episode length")
    taken = roll.steps
    success = roll.succeeded(env)
    per_episode = roll.cost_per_step(T)
    mse_db, per_step, per_episode_err = _estimation_error(roll)
    return CellResult(
        scenario=scenario.label,
        env_id=scenario.env_id,
        method=method.name,
        episodes=B,
        steps=T,
        seed=task.seed,
        cost=float(per_episode.mean()),
        cost_ci95=ci95(per_episode),
        success_rate=float(np.mean(success)),
        mse_db=mse_db,
        build_s=build_s,
        latency_us=roll.predict_s / max(taken, 1) / B * 1e6,
        wall_s=time.perf_counter() - start,
        oracle=method.oracle,
        family=method.family,
        baseline=method.baseline,
        measure=method.measure,
        episode_costs=per_episode.tolist(),
        episode_sq_err=per_episode_err[0],
        episode_est_steps=per_episode_err[1],
        train_env_steps=int(ctx.train_info.get("env_steps", 0)),
        mse_db_per_step=per_step,
        samples=_samples(roll, taken, task.sample_episodes),
        scenario_spec={**scenario.to_dict(), "mismatch": dict(env.mismatch)},
        learning_curve=list(ctx.train_info.get("learning_curve") or []),
        key=task.key(),
    )


def _estimation_error(
    roll: Rollout,
) -> tuple[float, list[float], tuple[list[float], list[int]]]:
    """The estimation MSE in dB over every running step, per step (NaN where none ran), and
    per episode (summed squared error and the steps summed, for the bootstrap)."""
    if roll.estimate is None:
        return math.nan, [], ([], [])
    assert roll.x is not None
    T = roll.running.shape[1]
    err = np.where(roll.running, ((roll.estimate - roll.x[:, :T]) ** 2).mean(2), 0.0)
    sq_err_sum = err.sum(0)
    sq_err_count = roll.running.sum(0).astype(np.float64)
    per_episode = (err.sum(1).tolist(), roll.running.sum(1).astype(int).tolist())
    if sq_err_count.sum() == 0:
        return math.nan, [], per_episode
    mse = float(sq_err_sum.sum() / sq_err_count.sum())
    per_step = [
        10 * math.log10(s / n) if n > 0 and s > 0 else math.nan
        for s, n in zip(sq_err_sum, sq_err_count, strict=True)
    ]
    return (10 * math.log10(mse) if mse > 0 else -math.inf), per_step, per_episode


def _samples(roll: Rollout, taken: int, k: int) -> dict[str, Any]:
    """The first ``k`` episodes' states, measurements and estimates, for plots and videos."""
    assert roll.x is not None
    estimate = [] if roll.estimate is None else roll.estimate[:k, :taken].transpose(1, 0, 2)
    return {
        "state": roll.x[:k, : taken + 1].transpose(1, 0, 2).tolist(),
        "measurement": roll.y[:k, : taken + 1].transpose(1, 0, 2).tolist(),
        "estimate": [] if roll.estimate is None else estimate.tolist(),
        "length": roll.lengths[:k].tolist(),
    }


class LocalExecutor:
    """Runs cells in a pool of worker processes on this machine (serially with one worker).

    Parameters
    ----------
    workers : int, optional
        Worker processes; default the number of CPUs. Workers are started with ``spawn``.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = (
            check_positive_int(workers, "workers") if workers is not None else (os.cpu_count() or 1)
        )

    def map(
        self,
        fn: Callable[[CellTask], Any],
        tasks: Sequence[CellTask],
        *,
        status: Callable[..., None] | None = None,
    ) -> Iterable[tuple[int, Any]]:
        """Yield ``(index, fn(task))`` as cells finish; the cells' progress reports go to
        ``status(cell, stage, done, total)`` (see :mod:`kalmannet_ctrl.bench.status`)."""
        if self.workers == 1 or len(tasks) <= 1:
            with local_sink(status):
                for i, task in enumerate(tasks):
                    yield i, fn(task)
            return
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        workers = min(self.workers, len(tasks))
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=worker_init, initargs=(queue,)
        ) as pool:
            futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(queue, status)
                for fut in done:
                    yield futures[fut], fut.result()
        queue.close()


def _drain(queue: Any, status: Callable[..., None] | None) -> None:
    """Pass every report waiting in ``queue`` to ``status``."""
    while True:
        try:
            report = queue.get_nowait()
        except Exception:  # queue.Empty, or a queue closed under us
            return
        if status is not None:
            status(*report)


def _cell_path(root: Path, task: CellTask) -> Path:
    return root / "cells" / f"{task.key()}.json"


def _load_cell(path: Path, task: CellTask) -> tuple[bool, CellResult | None]:
    """``(found, cell)`` from disk; ``cell`` None with ``found`` True marks a method that does
    not apply. An absent or unreadable entry gives ``(False, None)`` and is recomputed."""
    if not path.exists():
        return False, None
    try:
        data = json.loads(path.read_text())
        if data is None:
            return True, None
        cell = CellResult.from_dict(data)
        if cell.key != task.key():
            raise ValueError("the entry belongs to another cell")
        return True, cell
    except Exception as exc:
        log.warning("ignoring the unreadable cached cell %s (%s); it is recomputed", path, exc)
        return False, None


def compare(
    scenarios: Sequence[Scenario],
    methods: Sequence[Method],
    *,
    episodes: int = 100,
    seed: int = 0,
    executor: Any = None,
    output_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    videos: int = 0,
) -> Results:
    """Run every method on every scenario and collect the measurements.

    Parameters
    ----------
    scenarios : sequence of Scenario
    methods : sequence of Method
        Cells where a method does not apply (``Method.applies``) are skipped.
    episodes : int
        Seeded episodes per cell (one native vector env with that many copies).
    seed : int
        Seeds the episodes and any training; the same seed gives the same numbers.
    executor : optional
        An object with ``map(fn, tasks)`` yielding ``(index, result)``: :class:`LocalExecutor`
        (default) or :class:`~kalmannet_ctrl.bench.executors.RayExecutor`.
    output_dir : path, optional
        Where finished cells (``cells/``) and trained artefacts (``artifacts/``) are cached;
        a run interrupted and started again with the same folder resumes from its finished
        cells. ``None`` caches nothing.
    progress : bool
        Show a progress bar.
    videos : int
        Keep the states, measurements and estimates of this many episodes per cell (at least
        3, the trajectory plots' samples) for
        :func:`~kalmannet_ctrl.bench.videos.write_videos`; at most ``episodes``.

    Returns
    -------
    Results
    """
    scenarios, methods = list(scenarios), list(methods)
    if not scenarios:
        raise ValueError("scenarios: expected at least one Scenario, found none")
    if not methods:
        raise ValueError("methods: expected at least one Method, found none")
    for s in scenarios:
        if not isinstance(s, Scenario):
            raise TypeError(f"scenarios: expected Scenario objects, found {type(s).__name__}")
    for m in methods:
        if not isinstance(m, Method):
            raise TypeError(f"methods: expected Method objects, found {type(m).__name__}")
    episodes = check_positive_int(episodes, "episodes", minimum=2)
    videos = check_positive_int(videos, "videos", minimum=0)
    if videos > episodes:
        raise ValueError(
            f"videos: expected at most the {episodes} episodes per cell, found {videos}"
        )
    sample_episodes = max(_SAMPLE_EPISODES, videos)
    root = None if output_dir is None else Path(output_dir)
    if root is not None:
        _check_writable(root)
    tasks = [
        CellTask(s, m, episodes, int(seed), None if root is None else str(root), sample_episodes)
        for s in scenarios
        for m in methods
    ]
    results: list[CellResult | None] = [None] * len(tasks)
    todo: list[int] = []
    for i, task in enumerate(tasks):
        found, cached = (False, None) if root is None else _load_cell(_cell_path(root, task), task)
        if found:
            results[i] = cached
        else:
            todo.append(i)
    # the cells that train first, so that the short ones fill the workers at the end
    todo.sort(key=lambda i: not _trains(tasks[i].method))
    executor = executor or LocalExecutor()
    workers = executor.workers if isinstance(executor, LocalExecutor) else 1
    status = Status([tasks[i].method.name for i in todo], workers=workers)
    cells = bar(desc="compare", total=len(todo), enabled=progress, unit="cell")

    def show(*report: Any) -> None:
        status.update(*report)
        cells.set_postfix_str(status.line(), refresh=True)

    try:
        mapped = (
            executor.map(run_cell, [tasks[i] for i in todo], status=show)
            if isinstance(executor, LocalExecutor)
            else executor.map(run_cell, [tasks[i] for i in todo])
        )
        for j, cell in mapped:
            i = todo[j]
            results[i] = cell
            status.finish((tasks[i].scenario.label, tasks[i].method.name))
            if root is not None:
                payload = json.dumps(None if cell is None else cell.to_dict(), default=str)
                atomic_write_text(_cell_path(root, tasks[i]), payload)
            cells.set_postfix_str(status.line(), refresh=False)
            cells.update(1)
    finally:
        cells.close()
    return Results(c for c in results if c is not None)


def _trains(method: Method) -> bool:
    """Whether the method has a training budget (its cells take longest)."""
    return method.name in BUDGETS


def _check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(
            f"output_dir: cannot write to {root} ({exc.strerror or exc})"
        ) from exc
