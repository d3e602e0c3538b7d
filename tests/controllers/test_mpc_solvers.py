"""MPC's solver objects: their settings' checks, the default choice, names, bind-time checks,
one solver serving several MPCs, and MPC on the controller base."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from kalmannet_ctrl.controllers import LTV, MPC, MPPI, QP, NeuralMPC, Unfolded
from kalmannet_ctrl.controllers.base import BaseController
from kalmannet_ctrl.controllers.mpc import Setup, Solver
from kalmannet_ctrl.errors import DimensionError, ParameterError
from kalmannet_ctrl.models import (
    NonlinearModel,
    QuadraticCost,
    ResidualModel,
    cartpole,
    pendulum,
)

from .systems import plant, plant_cost, random_system

CARTPOLE_COST = QuadraticCost(np.diag([1.0, 0.1, 10.0, 0.1]), [[0.01]])
PENDULUM_COST = QuadraticCost(np.diag([1.0, 0.1]), [[0.01]])


# -- the settings, checked when a solver is built ------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: QP(max_iterations=0), ParameterError, "max_iterations: expected an integer >= 1"),
        (lambda: QP(max_iterations=2.5), TypeError, "max_iterations: expected an integer"),
        (lambda: LTV(iterations=0), ParameterError, "iterations: expected an integer >= 1"),
        (lambda: LTV(iterations="2"), TypeError, "iterations: expected an integer"),
        (lambda: LTV(line_search=1), TypeError, "line_search: expected a bool, found int"),
        (
            lambda: LTV(max_qp_iterations=0),
            ParameterError,
            "max_qp_iterations: expected an integer >= 1",
        ),
        (lambda: LTV(max_qp_iterations=1.0), TypeError, "max_qp_iterations: expected an integer"),
        (lambda: MPPI(samples=1), ParameterError, "samples: expected an integer >= 2, found 1"),
        (lambda: MPPI(samples=8.0), TypeError, "samples: expected an integer >= 2"),
        (lambda: MPPI(temperature=0.0), ParameterError, "temperature: expected a finite number"),
        (lambda: MPPI(temperature=np.inf), ParameterError, "temperature: expected a finite"),
        (lambda: MPPI(temperature="1"), TypeError, "temperature: expected a number > 0"),
        (lambda: MPPI(noise_std=-1.0), ParameterError, "noise_std: expected finite values > 0"),
        (lambda: MPPI(noise_std=[1.0, np.nan]), ParameterError, "noise_std: expected finite"),
        (lambda: MPPI(noise_std=[1.0, 0.0]), ParameterError, "noise_std: expected finite"),
        (
            lambda: MPPI(noise_std=np.ones((2, 2))),
            DimensionError,
            r"noise_std: expected a scalar or a vector \(n_u,\), found \(2, 2\)",
        ),
        (lambda: MPPI(noise_std=[]), DimensionError, "noise_std: expected a scalar or a vector"),
        (lambda: MPPI(noise_std="wide"), TypeError, "noise_std: expected an array-like"),
        (lambda: MPPI(iterations=0), ParameterError, "iterations: expected an integer >= 1"),
        (lambda: MPPI(seed=1.5), TypeError, "seed: expected an integer, found float"),
        (lambda: MPPI(seed=True), TypeError, "seed: expected an integer, found bool"),
        (lambda: MPPI(generator=3), TypeError, "generator: expected a torch.Generator"),
        (
            lambda: MPPI(seed=0, generator=torch.Generator()),
            ValueError,
            "seed, generator: pass one of them, not both",
        ),
        (lambda: MPPI(rollout_dtype=torch.int64), TypeError, "rollout_dtype: expected a floating"),
        (lambda: MPPI(rollout_dtype="float32"), TypeError, "rollout_dtype: expected a floating"),
        (lambda: QP(5), TypeError, "positional argument"),  # keyword-only
        (lambda: MPPI(64), TypeError, "positional argument"),
        (lambda: LTV(samples=8), TypeError, "unexpected keyword argument 'samples'"),
    ],
)
def test_bad_settings_are_refused_when_the_solver_is_built(make, error, match) -> None:
    with pytest.raises(error, match=match):
        make()


def test_settings_are_normalized_frozen_and_shown() -> None:
    mppi = MPPI(samples=np.int64(64), temperature=2, noise_std=np.array([0.5, 1.0]), seed=3)
    assert mppi.samples == 64 and type(mppi.samples) is int
    assert mppi.temperature == 2.0 and type(mppi.temperature) is float
    assert mppi.noise_std == (0.5, 1.0) and MPPI(noise_std=0.25).noise_std == 0.25
    assert repr(mppi) == (
        "MPPI(samples=64, temperature=2.0, noise_std=(0.5, 1.0), iterations=1, seed=3, "
        "generator=None, rollout_dtype=None)"
    )
    assert "generator=<torch.Generator>" in repr(MPPI(generator=torch.Generator()))
    assert repr(QP()) == "QP(max_iterations=None)"
    assert repr(LTV(iterations=3)) == "LTV(iterations=3, line_search=False, max_qp_iterations=None)"
    for solver in (QP(max_iterations=7), LTV(line_search=True), mppi):
        assert repr(type(solver)(**solver.settings())) == repr(solver)
        with pytest.raises(dataclasses.FrozenInstanceError):
            solver.iterations = 5  # type: ignore[misc]
    # a replaced copy is checked again
    with pytest.raises(ParameterError, match="samples"):
        dataclasses.replace(mppi, samples=1)


# -- choosing the solver ---------------------------------------------------------------------------


def test_solver_none_picks_qp_for_a_linear_model_and_ltv_otherwise() -> None:
    linear = MPC(plant(), plant_cost(), 5)
    assert type(linear.solver) is QP and linear.solver.settings() == QP().settings()
    nonlinear = MPC(cartpole(), CARTPOLE_COST, 5)
    assert type(nonlinear.solver) is LTV and nonlinear.solver.settings() == LTV().settings()
    neural = NeuralMPC(ResidualModel(plant(), hidden=(4,)), plant_cost(), 5)
    assert type(neural.solver) is LTV
    for mpc in (linear, nonlinear, neural):
        assert isinstance(mpc.setup, Setup) and mpc.setup.solver is mpc.solver
        assert mpc.setup.problem is mpc


@pytest.mark.parametrize(
    ("name", "cls"), [("qp", QP), ("ltv", LTV), ("mppi", MPPI), ("unfolded", Unfolded)]
)
def test_a_name_stands_for_the_default_configured_solver(name: str, cls: type) -> None:
    linear = name in ("qp", "unfolded")
    model = plant() if linear else pendulum()
    cost = plant_cost() if linear else PENDULUM_COST
    mpc = MPC(model, cost, 5, solver=name)
    assert type(mpc.solver) is cls and mpc.solver.settings() == cls().settings()
    assert cls.name == name and isinstance(mpc.solver, Solver)


def test_the_solver_object_given_is_the_one_kept() -> None:
    solver = LTV(iterations=2)
    mpc = MPC(pendulum(), PENDULUM_COST, 5, solver=solver)
    assert mpc.solver is solver
    assert "solver=LTV(iterations=2, line_search=False" in repr(mpc)


def test_solvers_that_cannot_serve_the_problem_are_refused_when_bound() -> None:
    with pytest.raises(TypeError, match="model: solver='qp' needs a LinearGaussianModel"):
        MPC(pendulum(), PENDULUM_COST, 5, solver=QP())
    with pytest.raises(ValueError, match="cost_state: not supported by solver='qp'"):
        MPC(plant(), plant_cost(), 5, solver=QP(), cost_state=lambda x: x)
    with pytest.raises(ParameterError, match=r"rollout_dtype: .*f fails on torch\.float32"):
        MPC(plant(), plant_cost(), 5, solver=MPPI(rollout_dtype=torch.float32))
    upcast = NonlinearModel(
        lambda x, u: (0.5 * x + u).double(),
        lambda x: x,
        n_x=1,
        n_y=1,
        n_u=1,
        process_cov=[[1.0]],
        measurement_cov=[[1.0]],
    )
    with pytest.raises(ParameterError, match=r"rollout_dtype: .*f returns torch\.float64"):
        MPC(upcast, QuadraticCost([[1.0]], [[1.0]]), 5, solver=MPPI(rollout_dtype=torch.float32))
    with pytest.raises(DimensionError, match=r"noise_std: expected a scalar or shape \(1,\)"):
        MPC(pendulum(), PENDULUM_COST, 5, solver=MPPI(noise_std=[0.1, 0.2]))
    for bad in (3, LTV, object()):
        with pytest.raises(TypeError, match="solver: expected None, a Solver"):
            MPC(plant(), plant_cost(), 5, solver=bad)
    names = r"\['qp', 'ltv', 'mppi', 'unfolded'\]"
    with pytest.raises(ParameterError, match=rf"solver: expected .* {names}"):
        MPC(plant(), plant_cost(), 5, solver="auto")


# -- one solver object, several problems -----------------------------------------------------------


def drive(ctrl: MPC, y: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
    a, state = ctrl.predict(y, state)
    return a, state


def interleaved_and_alone(make_a, make_b, ya: np.ndarray, yb: np.ndarray, shared: Solver):
    """Actions of two MPCs built with one solver object and stepped alternately, and of the
    same MPCs built each with its own copy of the solver and run one after the other."""
    a, b = make_a(shared), make_b(shared)
    sa = sb = None
    acts_a, acts_b = [], []
    for t in range(ya.shape[1]):
        ua, sa = a.predict(ya[:, t], sa)
        ub, sb = b.predict(yb[:, t], sb)
        acts_a.append(ua)
        acts_b.append(ub)
    alone = []
    for make, y in ((make_a, ya), (make_b, yb)):
        ctrl = make(type(shared)(**shared.settings()))
        state, acts = None, []
        for t in range(y.shape[1]):
            u, state = ctrl.predict(y[:, t], state)
            acts.append(u)
        alone.append(np.stack(acts, 1))
    return (a, b), (np.stack(acts_a, 1), np.stack(acts_b, 1)), tuple(alone)


def test_one_qp_serves_two_linear_problems() -> None:
    shared = QP(max_iterations=200)
    model3, cost3 = random_system(3, 2, 2, seed=1)
    rng = np.random.default_rng(0)
    ya, yb = rng.normal(size=(3, 8, 1)), rng.normal(size=(2, 8, 2))
    (a, b), together, alone = interleaved_and_alone(
        lambda s: MPC(plant(), plant_cost(), 6, input_bounds=(-0.3, 0.3), solver=s),
        lambda s: MPC(model3, cost3, 9, input_bounds=(-0.2, 0.1), solver=s),
        ya,
        yb,
        shared,
    )
    assert a.solver is b.solver is shared and a.setup is not b.setup
    assert a.setup.Gamma.shape == (6 * 2, 6 * 1) and b.setup.Gamma.shape == (9 * 3, 9 * 2)
    for t, s in zip(together, alone, strict=True):
        np.testing.assert_array_equal(t, s)


def test_one_ltv_serves_two_nonlinear_problems() -> None:
    shared = LTV(iterations=2, line_search=True)
    rng = np.random.default_rng(1)
    ya, yb = 0.1 * rng.normal(size=(2, 6, 2)), 0.1 * rng.normal(size=(3, 6, 1))
    (a, b), together, alone = interleaved_and_alone(
        lambda s: MPC(cartpole(), CARTPOLE_COST, 8, input_bounds=(-10.0, 10.0), solver=s),
        lambda s: MPC(pendulum(), PENDULUM_COST, 5, input_bounds=(-2.0, 2.0), solver=s),
        ya,
        yb,
        shared,
    )
    assert a.setup is not b.setup
    for t, s in zip(together, alone, strict=True):
        np.testing.assert_array_equal(t, s)


def test_one_seeded_mppi_gives_each_problem_its_own_stream() -> None:
    """With ``seed`` each bound MPC gets its own generator: stepping two MPCs alternately gives
    what each gives alone, and two MPCs of one problem give the same actions."""
    shared = MPPI(samples=16, seed=4, rollout_dtype=torch.float32)
    rng = np.random.default_rng(2)
    ya, yb = 0.1 * rng.normal(size=(2, 6, 2)), rng.normal(size=(3, 6, 1))
    (a, b), together, alone = interleaved_and_alone(
        lambda s: MPC(cartpole(), CARTPOLE_COST, 8, input_bounds=(-10.0, 10.0), solver=s),
        lambda s: MPC(pendulum(), PENDULUM_COST, 5, input_bounds=(-2.0, 2.0), solver=s),
        ya,
        yb,
        shared,
    )
    assert a.setup.generator is not b.setup.generator
    assert a.setup.noise_std.dtype == torch.float32
    torch.testing.assert_close(a.setup.noise_std, torch.tensor([5.0]), check_dtype=False)
    for t, s in zip(together, alone, strict=True):
        np.testing.assert_array_equal(t, s)


def test_an_mppi_with_a_generator_shares_it() -> None:
    gen = torch.Generator().manual_seed(0)
    shared = MPPI(samples=8, generator=gen)
    a = MPC(pendulum(), PENDULUM_COST, 5, solver=shared)
    b = MPC(cartpole(), CARTPOLE_COST, 5, solver=shared)
    assert a.setup.generator is gen and b.setup.generator is gen
    before = gen.get_state()
    a.solve(np.zeros((1, 2)))
    assert not torch.equal(gen.get_state(), before)  # drawn from the shared generator
    # an explicit generator for one solve leaves the MPC's own untouched
    own = gen.get_state()
    plans = [a.solve(np.zeros((1, 2)), generator=torch.Generator().manual_seed(9)) for _ in "ab"]
    torch.testing.assert_close(plans[0].plan, plans[1].plan, rtol=0, atol=0)
    assert torch.equal(gen.get_state(), own)


# -- MPC on the controller base --------------------------------------------------------------------


def test_mpc_is_a_base_controller_without_its_own_predict() -> None:
    mpc = MPC(plant(), plant_cost(), 4)
    assert isinstance(mpc, BaseController)
    for name in ("predict", "step", "estimate", "clip"):
        assert getattr(MPC, name) is getattr(BaseController, name), name
    assert mpc.dtype == torch.float64 and mpc.device == torch.device("cpu")
    # predict runs under inference mode, step does not
    _, state = mpc.predict(np.zeros(1))
    assert state.plan.is_inference()
    _, state = mpc.step(None, torch.zeros(1, 1))
    assert not state.plan.is_inference()
