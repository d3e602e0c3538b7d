"""Executors for :func:`~kalmannet_ctrl.bench.compare` beyond this machine's process pool.

An executor is any object with ``map(fn, tasks)`` that yields ``(index, fn(tasks[index]))`` pairs
as the cells finish, in any order. :class:`~kalmannet_ctrl.bench.LocalExecutor` (a process pool)
is the default; :class:`RayExecutor` runs the same cells as tasks on a Ray cluster.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

from .._validation import check_positive_int
from ..errors import KalmanNetCtrlError, MissingDependencyError
from .runner import CellTask

__all__ = ["CellError", "RayExecutor"]

_PIP_HINT = 'pip install "kalmannet-ctrl[distributed]"'

#: ``ray.init`` arguments that :class:`RayExecutor` sets itself.
_OWN_INIT_KEYS = ("address", "num_cpus", "runtime_env")


class CellError(KalmanNetCtrlError, RuntimeError):
    """A cell of a comparison failed on a worker.

    The message names the cell (index, scenario and method) and the worker's error, which is
    also chained as ``__cause__``.

    Attributes
    ----------
    index : int
        Position of the task in the list given to ``map``.
    scenario : str or None
        The scenario's label.
    method : str or None
        The method's name.
    """

    def __init__(self, message: str, *, index: int, scenario: str | None, method: str | None):
        super().__init__(message)
        self.index = index
        self.scenario = scenario
        self.method = method


def _import_ray() -> ModuleType:
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise MissingDependencyError(
            f"RayExecutor needs Ray, which is not installed; install it with: {_PIP_HINT}"
        ) from exc


def _describe(task: Any) -> tuple[str | None, str | None]:
    """The scenario label and method name of a :class:`CellTask` (None for other tasks)."""
    scenario = getattr(getattr(task, "scenario", None), "label", None)
    method = getattr(getattr(task, "method", None), "name", None)
    return scenario, method


def _cell_error(index: int, task: Any, err: BaseException) -> CellError:
    scenario, method = _describe(task)
    cause = getattr(err, "cause", None) or err
    cell = f"cell {index}"
    if scenario is not None:
        cell += f" (scenario {scenario!r}, method {method!r})"
    return CellError(
        f"{cell} failed on the Ray cluster: {type(cause).__name__}: {cause}",
        index=index,
        scenario=scenario,
        method=method,
    )


class RayExecutor:
    """Runs cells as Ray tasks, on a Ray cluster or on a local Ray instance.

    Each task of :meth:`map` becomes one Ray task (one CPU each); results come back as the
    tasks finish. Needs the ``distributed`` extra: ``pip install "kalmannet-ctrl[distributed]"``.

    The workers unpickle the cells, so they must be able to import ``kalmannet_ctrl`` (and any
    module that defines a custom method's ``build``). A local instance shares this Python
    environment. On a remote cluster install the package on every node, or let Ray install it
    per job with ``runtime_env={"pip": ["kalmannet-ctrl"]}``.

    Parameters
    ----------
    address : str, optional
        The cluster to connect to, passed to ``ray.init``: ``"auto"`` for the cluster running on
        this node (``ray start --head``), ``"ray://<host>:10001"`` for a remote one through Ray
        Client, or ``None`` (default) for Ray's own resolution: the cluster in the
        ``RAY_ADDRESS`` environment variable if set, else a new local instance.
    num_cpus : int, optional
        CPUs of a new local instance (default: all of this machine's); only with
        ``address=None``.
    runtime_env : mapping, optional
        Ray runtime environment of the tasks, e.g. ``{"pip": ["kalmannet-ctrl"]}``. Given to
        ``ray.init`` when this executor connects, else attached to each task.
    init_kwargs : mapping, optional
        Further keyword arguments of ``ray.init`` (e.g. ``{"include_dashboard": False}``).
    shutdown : bool, optional
        What to do after :meth:`map` when this executor called ``ray.init``: ``None`` (default)
        or ``True`` disconnect (stopping a local instance it started), ``False`` stay
        connected for later runs (call ``ray.shutdown()`` yourself). When Ray was already
        initialized, the executor uses that connection and never shuts it down.

    Raises
    ------
    MissingDependencyError
        When Ray is not installed; the message holds the pip command.

    Examples
    --------
    >>> from kalmannet_ctrl.bench import Scenario, compare, get_method
    >>> from kalmannet_ctrl.bench.executors import RayExecutor
    >>> results = compare(  # doctest: +SKIP
    ...     [Scenario("kalmannet_ctrl/LinearSystem-v0")], [get_method("lqg-oracle")],
    ...     episodes=20, executor=RayExecutor(address="auto"))
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
        shutdown: bool | None = None,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise TypeError(
                f"address: expected a str such as 'auto' or 'ray://host:10001', or None, "
                f"found {type(address).__name__}"
            )
        if num_cpus is not None:
            num_cpus = check_positive_int(num_cpus, "num_cpus")
            if address is not None:
                raise ValueError(
                    f"num_cpus: only applies to a new local instance (address=None); "
                    f"found num_cpus={num_cpus} with address={address!r}"
                )
        if runtime_env is not None and not isinstance(runtime_env, Mapping):
            raise TypeError(
                f"runtime_env: expected a mapping or None, found {type(runtime_env).__name__}"
            )
        if init_kwargs is not None and not isinstance(init_kwargs, Mapping):
            raise TypeError(
                f"init_kwargs: expected a mapping or None, found {type(init_kwargs).__name__}"
            )
        clash = sorted(set(init_kwargs or {}) & set(_OWN_INIT_KEYS))
        if clash:
            raise ValueError(
                f"init_kwargs: {clash} are RayExecutor arguments; pass them as such, "
                f"not in init_kwargs"
            )
        if shutdown is not None and not isinstance(shutdown, bool):
            raise TypeError(f"shutdown: expected a bool or None, found {type(shutdown).__name__}")
        _import_ray()
        self.address = address
        self.num_cpus = num_cpus
        self.runtime_env = None if runtime_env is None else dict(runtime_env)
        self.init_kwargs = dict(init_kwargs or {})
        self.shutdown = shutdown

    def _connect(self, ray: ModuleType) -> bool:
        """Initialize Ray unless it already is; whether this call did."""
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = dict(self.init_kwargs)
        if self.num_cpus is not None:
            kwargs["num_cpus"] = self.num_cpus
        if self.runtime_env is not None:
            kwargs["runtime_env"] = self.runtime_env
        ray.init(address=self.address, **kwargs)
        return True

    def map(
        self, fn: Callable[[CellTask], Any], tasks: Sequence[CellTask]
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, fn(tasks[index]))`` as the Ray tasks finish.

        Parameters
        ----------
        fn : callable
            Picklable function of one task, e.g. :func:`~kalmannet_ctrl.bench.run_cell`.
        tasks : sequence of CellTask

        Yields
        ------
        index : int
            Position of the task in ``tasks``.
        result : object
            ``fn(tasks[index])``.

        Raises
        ------
        CellError
            When a task raises (or its worker dies); names the cell and chains the error. The
            tasks still running are cancelled.
        """
        tasks = list(tasks)
        if not tasks:
            return
        ray = _import_ray()
        started = self._connect(ray)
        pending: dict[Any, int] = {}
        try:
            remote_fn = ray.remote(fn)
            per_task: dict[str, Any] = {}
            if self.runtime_env is not None and not started:
                per_task["runtime_env"] = self.runtime_env
            for i, task in enumerate(tasks):
                scenario, method = _describe(task)
                name = f"cell {i}" if scenario is None else f"{scenario} / {method}"
                pending[remote_fn.options(name=name, **per_task).remote(task)] = i
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                i = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as err:
                    raise _cell_error(i, tasks[i], err) from err
                yield i, result
        finally:
            for ref in pending:
                # the task may have finished or its worker gone meanwhile
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            if started and self.shutdown is not False:
                ray.shutdown()

    def __repr__(self) -> str:
        return (
            f"RayExecutor(address={self.address!r}, num_cpus={self.num_cpus!r}, "
            f"runtime_env={self.runtime_env!r}, init_kwargs={self.init_kwargs!r}, "
            f"shutdown={self.shutdown!r})"
        )
