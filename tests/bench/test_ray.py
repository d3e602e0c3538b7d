"""RayExecutor: the same cells as the local executor, its Ray lifecycle, and its errors.

The equivalence tests run on one local Ray instance per module; they are skipped only where Ray
is not installed. The lifecycle and error tests use a stand-in ``ray`` module and always run.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from kalmannet_ctrl.bench import LocalExecutor, Method, Scenario, compare, get_method, run_cell
from kalmannet_ctrl.bench.executors import CellError, RayExecutor
from kalmannet_ctrl.bench.runner import CellTask
from kalmannet_ctrl.errors import MissingDependencyError, ParameterError

RAY_MISSING = "Ray is not installed: pip install 'kalmannet-ctrl[distributed]'"
PIP_COMMAND = 'pip install "kalmannet-ctrl[distributed]"'

SCENARIOS = [
    Scenario("kalmannet_ctrl/LinearSystem-v0", max_steps=30),
    Scenario("kalmannet_ctrl/CartPole-v0", max_steps=30),
]
METHODS = [get_method("lqg-oracle"), get_method("lqg-nominal")]
#: Wall-clock measurements, which differ from run to run.
TIMING_FIELDS = {"build_s", "latency_us", "wall_s"}


def _measurements(cell: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cell).items() if k not in TIMING_FIELDS}


def _tasks() -> list[CellTask]:
    return [CellTask(s, m, 8, 3, None) for s in SCENARIOS for m in METHODS]


def _broken_method() -> Method:
    def build(ctx: Any) -> Any:  # local, so that Ray pickles it by value
        raise ValueError("cannot build a controller here")

    return Method("broken", build)


# -- a stand-in for the ray module -----------------------------------------------------------------
class _FakeRayError(Exception):
    pass


class _FakeRayTaskError(_FakeRayError):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _FakeRef:
    def __init__(self, fn: Any, task: Any, options: dict[str, Any]) -> None:
        self.options = options
        try:
            self.value, self.error = fn(task), None
        except Exception as exc:
            self.value, self.error = None, _FakeRayTaskError(exc)


class _FakeRemote:
    def __init__(self, ray: FakeRay, fn: Any) -> None:
        self.ray, self.fn, self.opts = ray, fn, {}

    def options(self, **opts: Any) -> _FakeRemote:
        out = _FakeRemote(self.ray, self.fn)
        out.opts = opts
        return out

    def remote(self, task: Any) -> _FakeRef:
        ref = _FakeRef(self.fn, task, self.opts)
        self.ray.refs.append(ref)
        return ref


class FakeRay(types.ModuleType):
    """Runs each task at submission; ``wait`` hands them back last-submitted first."""

    def __init__(self, initialized: bool = False) -> None:
        super().__init__("ray")
        self.initialized = initialized
        self.init_calls: list[dict[str, Any]] = []
        self.shutdown_calls = 0
        self.cancelled: list[_FakeRef] = []
        self.refs: list[_FakeRef] = []
        self.exceptions = types.SimpleNamespace(RayError=_FakeRayError)

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs: Any) -> None:
        self.init_calls.append(kwargs)
        self.initialized = True

    def shutdown(self) -> None:
        self.shutdown_calls += 1
        self.initialized = False

    def remote(self, fn: Any) -> _FakeRemote:
        return _FakeRemote(self, fn)

    def wait(self, refs: list[_FakeRef], num_returns: int = 1) -> tuple[list[Any], list[Any]]:
        return refs[-num_returns:], refs[:-num_returns]

    def get(self, ref: _FakeRef) -> Any:
        if ref.error is not None:
            raise ref.error
        return ref.value

    def cancel(self, ref: _FakeRef) -> None:
        self.cancelled.append(ref)


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    return fake


def _label(task: CellTask) -> str:
    return f"{task.scenario.label}|{task.method.name}"


def _fail_on_cartpole(task: CellTask) -> str:
    if task.scenario.env_id.endswith("CartPole-v0"):
        raise ValueError("no controller for this scenario")
    return _label(task)


# -- without Ray ---------------------------------------------------------------------------------
def test_missing_ray_raises_with_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes ``import ray`` raise ImportError
    with pytest.raises(
        MissingDependencyError, match=r"pip install \"kalmannet-ctrl\[distributed\]\""
    ):
        RayExecutor()
    with pytest.raises(ImportError, match="Ray"):
        RayExecutor(num_cpus=2)


# -- lifecycle and errors, against the stand-in ---------------------------------------------------
def test_starts_and_shuts_down_its_own_instance(fake_ray: FakeRay) -> None:
    tasks = _tasks()
    executor = RayExecutor(
        num_cpus=2, runtime_env={"env_vars": {"A": "1"}}, init_kwargs={"include_dashboard": False}
    )
    out = list(executor.map(_label, tasks))
    assert sorted(i for i, _ in out) == list(range(len(tasks)))
    assert [i for i, _ in out] == list(reversed(range(len(tasks))))  # as they complete
    assert all(result == _label(tasks[i]) for i, result in out)
    assert fake_ray.init_calls == [
        {
            "address": None,
            "num_cpus": 2,
            "runtime_env": {"env_vars": {"A": "1"}},
            "include_dashboard": False,
        }
    ]
    assert fake_ray.shutdown_calls == 1
    # the job-level runtime_env covers the tasks; each task is named after its cell
    assert fake_ray.refs[0].options == {"name": "LinearSystem (default mismatch) / lqg-oracle"}


def test_shutdown_false_keeps_its_instance(fake_ray: FakeRay) -> None:
    list(RayExecutor(address="auto", shutdown=False).map(_label, _tasks()))
    assert fake_ray.init_calls == [{"address": "auto"}]
    assert fake_ray.shutdown_calls == 0 and fake_ray.initialized


def test_uses_and_keeps_a_running_instance(fake_ray: FakeRay) -> None:
    fake_ray.initialized = True
    env = {"pip": ["kalmannet-ctrl"]}
    out = list(RayExecutor(runtime_env=env, shutdown=True).map(_label, _tasks()))
    assert len(out) == 4
    assert fake_ray.init_calls == [] and fake_ray.shutdown_calls == 0
    assert all(ref.options["runtime_env"] == env for ref in fake_ray.refs)


def test_no_tasks_starts_nothing(fake_ray: FakeRay) -> None:
    assert list(RayExecutor().map(_label, [])) == []
    assert fake_ray.init_calls == []


def test_failed_task_names_its_cell_and_cleans_up(fake_ray: FakeRay) -> None:
    tasks = _tasks()  # the last two are CartPole cells; the stand-in finishes them first
    with pytest.raises(CellError, match=r"cell 3 \(scenario 'CartPole.*', method 'lqg-nominal'\)"):
        list(RayExecutor().map(_fail_on_cartpole, tasks))
    assert len(fake_ray.cancelled) == 3  # the cells still pending
    assert fake_ray.shutdown_calls == 1


def test_cell_error_attributes_and_cause(fake_ray: FakeRay) -> None:
    with pytest.raises(CellError) as info:
        list(RayExecutor().map(_fail_on_cartpole, _tasks()))
    err = info.value
    assert (err.index, err.method) == (3, "lqg-nominal")
    assert err.scenario == "CartPole (default mismatch)"
    assert "ValueError: no controller for this scenario" in str(err)
    assert isinstance(err, RuntimeError) and isinstance(err.__cause__, _FakeRayError)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"address": 1}, TypeError, "address: expected a str"),
        ({"address": "auto", "num_cpus": 2}, ValueError, "num_cpus: only applies"),
        ({"num_cpus": 0}, ParameterError, "num_cpus: expected an integer >= 1"),
        ({"num_cpus": 1.5}, TypeError, "num_cpus: expected an integer"),
        ({"runtime_env": ["pip"]}, TypeError, "runtime_env: expected a mapping"),
        ({"init_kwargs": "x"}, TypeError, "init_kwargs: expected a mapping"),
        ({"init_kwargs": {"num_cpus": 2}}, ValueError, r"init_kwargs: \['num_cpus'\]"),
        ({"shutdown": "yes"}, TypeError, "shutdown: expected a bool"),
    ],
)
def test_argument_errors(
    fake_ray: FakeRay, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RayExecutor(**kwargs)


# -- on a local Ray instance ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """One local Ray instance (2 CPUs) for the module, started through a RayExecutor."""
    ray = pytest.importorskip("ray", reason=RAY_MISSING)
    running = ray.is_initialized()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        executor = RayExecutor(
            num_cpus=None if running else 2,
            init_kwargs={"include_dashboard": False},
            shutdown=False,
        )

        def echo(x: str) -> str:  # local, so that Ray pickles it by value
            return x

        assert list(executor.map(echo, ["ping"])) == [(0, "ping")]
    assert ray.is_initialized()
    if not running:
        assert ray.cluster_resources()["CPU"] == 2
    yield ray
    if not running:
        ray.shutdown()


def test_ray_gives_the_same_cells_as_local(ray_instance: Any) -> None:
    local = compare(
        SCENARIOS, METHODS, episodes=8, seed=3, executor=LocalExecutor(1), progress=False
    )
    on_ray = compare(SCENARIOS, METHODS, episodes=8, seed=3, executor=RayExecutor(), progress=False)
    assert len(local) == len(on_ray) == 4
    for a, b in zip(local, on_ray, strict=True):
        assert (a.scenario, a.method) == (b.scenario, b.method)
        assert len(a.mse_db_per_step) == 30
        assert _measurements(a) == _measurements(b)  # cost, success, MSE, curves: bit for bit
    assert ray_instance.is_initialized()  # an instance it did not start stays up


def test_ray_yields_every_task(ray_instance: Any) -> None:
    tasks = _tasks()
    out = dict(RayExecutor().map(run_cell, tasks))
    assert sorted(out) == list(range(len(tasks)))
    for i, task in enumerate(tasks):
        assert (out[i].scenario, out[i].method) == (task.scenario.label, task.method.name)


def test_ray_reports_the_failed_cell(ray_instance: Any) -> None:
    with pytest.raises(CellError, match=r"scenario 'LinearSystem.*', method 'broken'") as info:
        compare(
            SCENARIOS[:1],
            [METHODS[0], _broken_method()],
            episodes=2,
            seed=0,
            executor=RayExecutor(),
            progress=False,
        )
    assert "cannot build a controller here" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)  # Ray's error keeps the original type
    assert ray_instance.is_initialized()
