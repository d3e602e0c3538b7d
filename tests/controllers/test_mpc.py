"""MPC against independent references: LQR gains, SciPy's bounded least squares, the analytic
LQG cost, converged solutions; its box-QP solver alone; closed loops; the protocol; errors."""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.optimize import lsq_linear

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import (
    LQG,
    LQR,
    LTV,
    MPC,
    MPPI,
    QP,
    Controller,
    MPCSolution,
    MPCState,
    analytic_average_cost,
)
from kalmannet_ctrl.controllers.mpc._boxqp import solve_box_qp
from kalmannet_ctrl.errors import (
    BatchSizeError,
    DimensionError,
    NonFiniteError,
    NotAnEquilibriumError,
    NotPositiveDefiniteError,
    ParameterError,
)
from kalmannet_ctrl.estimators import ExtendedKalmanFilter, KalmanFilter
from kalmannet_ctrl.models import (
    LinearGaussianModel,
    NonlinearModel,
    QuadraticCost,
    SystemModel,
    cartpole,
    pendulum,
)

from .systems import plant, plant_cost, random_system

# -- helpers ---------------------------------------------------------------------------------------


def as_nonlinear(model: LinearGaussianModel) -> NonlinearModel:
    """The same linear system as a NonlinearModel (Jacobians by automatic differentiation)."""
    A, B, C = model.A, model.B, model.C
    return NonlinearModel(
        lambda x, u: x @ A.mT + u @ B.mT,
        lambda x: x @ C.mT,
        n_x=model.n_x,
        n_y=model.n_y,
        n_u=model.n_u,
        process_cov=model.process_cov,
        measurement_cov=model.measurement_cov,
        x0_mean=model.x0_mean,
        x0_cov=model.x0_cov,
    )


def psd_root(M: np.ndarray) -> np.ndarray:
    """S with S'S = M for symmetric positive semi-definite M."""
    w, V = np.linalg.eigh(0.5 * (M + M.T))
    return (V * np.sqrt(np.clip(w, 0.0, None))).T


def reference_plan(
    model: LinearGaussianModel,
    cost: QuadraticCost,
    P: np.ndarray,
    H: int,
    x0: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
) -> tuple[np.ndarray, float]:
    """The optimal plan (H, n_u) and cost from x0, by scipy's bounded least squares (BVLS).

    The prediction x_1..x_H = Φ x0 + Γ U is built by simulating the model's A and B with unit
    inputs (superposition), and J = Σ_{k<H} x_k'Qx_k + u_k'Ru_k + x_H'Px_H = |M U − b|² + const
    with square roots of the weights: nothing is shared with MPC's condensing.
    """
    m = model.numpy()
    A, B = m["A"], m["B"]
    Q, R = cost.numpy()
    n, nu = B.shape

    def simulate(x: np.ndarray, U: np.ndarray) -> np.ndarray:
        xs = []
        for k in range(H):
            x = A @ x + B @ U[k]
            xs.append(x)
        return np.concatenate(xs)

    free = simulate(x0, np.zeros((H, nu)))
    Gamma = np.stack(
        [simulate(np.zeros(n), np.eye(H * nu)[j].reshape(H, nu)) for j in range(H * nu)], 1
    )
    Sq, Sr, Sp = psd_root(Q), psd_root(R), psd_root(P)
    Wx = scipy.linalg.block_diag(*([Sq] * (H - 1) + [Sp]))
    M = np.vstack([Wx @ Gamma, scipy.linalg.block_diag(*([Sr] * H))])
    b = -np.concatenate([Wx @ free, np.zeros(H * nu)])
    res = lsq_linear(M, b, bounds=(np.tile(low, H), np.tile(high, H)), method="bvls", tol=1e-14)
    U = res.x
    J = float(x0 @ Q @ x0 + np.sum((M @ U - b) ** 2))
    return U.reshape(H, nu), J


class _Direct(NamedTuple):
    last: Any


class StateFeedback:
    """An 'estimator' that returns the measurement as the state (for models with h(x) = x)."""

    def __init__(self, n_x: int) -> None:
        self.n_x = n_x

    def init(self, batch_size: int, *, x0_mean: Any = None, x0_cov: Any = None) -> _Direct:
        return _Direct(None)

    def step(self, state: Any, y: Any, u_prev: Any = None) -> tuple[torch.Tensor, _Direct]:
        return torch.as_tensor(y, dtype=torch.float64), _Direct(u_prev)

    def filter(self, y: Any, u: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    def reset(self, state: Any, mask: Any) -> _Direct:
        return state


def full_state(model: Any) -> NonlinearModel:
    """``model``'s dynamics measured without noise: h(x) = x."""
    return NonlinearModel(
        model.f,
        lambda x: x,
        n_x=model.n_x,
        n_y=model.n_x,
        n_u=model.n_u,
        process_cov=model.process_cov,
        measurement_cov=1e-6 * np.eye(model.n_x),
    )


def run(ctrl: Any, y: np.ndarray, starts: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Drive ``ctrl.predict`` over y (B, T, n_y); ``starts[t]`` is the episode_start at step t."""
    B, T, _ = y.shape
    starts = starts or {}
    state, actions = None, []
    for t in range(T):
        start = starts.get(t, np.full(B, t == 0))
        a, state = ctrl.predict(y[:, t], state, episode_start=start)
        actions.append(a)
    return np.stack(actions, 1)


def closed_loop(ctrl: MPC, model: Any, x0: torch.Tensor, T: int, reset_warm: bool = False):
    """Noise-free closed loop with full-state feedback: actions (B, T, n_u), final state."""
    x, state, us = x0, None, []
    for _ in range(T):
        if reset_warm and state is not None:  # throw the warm start away
            state = state._replace(plan=torch.zeros_like(state.plan), trajectory=None)
        u, state = ctrl.step(state, x)
        us.append(u)
        x = model.f(x, u)
    return torch.stack(us, 1), x


CARTPOLE_COST = QuadraticCost(np.diag([1.0, 0.1, 10.0, 0.1]), [[0.01]])


# -- linear model: the QP --------------------------------------------------------------------------


@pytest.mark.parametrize("B", [1, 10])
@pytest.mark.parametrize("H", [1, 5, 30])
@pytest.mark.parametrize(("dims", "seed"), [((2, 1, 1), 0), ((3, 2, 2), 1), ((4, 2, 3), 2)])
def test_unbounded_with_lqr_terminal_cost_is_lqr(B: int, H: int, dims, seed: int) -> None:
    """With P the DARE solution every Riccati step returns P, so the plan starts with −Kx."""
    model, cost = random_system(*dims, seed=seed)
    K = LQR(model, cost).gain.numpy()
    x = np.random.default_rng(seed).normal(size=(B, model.n_x))
    for bounds in (None, (-1e6, 1e6)):  # no bounds, and bounds that are never active
        sol = MPC(model, cost, H, input_bounds=bounds).solve(x)
        np.testing.assert_allclose(sol.plan[:, 0].numpy(), -x @ K.T, rtol=0, atol=1e-8)


@pytest.mark.parametrize("H", [1, 4, 12])
def test_unbounded_finite_horizon_equals_riccati_recursion(H: int) -> None:
    """Zero and custom terminal costs against LQR's finite-horizon recursion (K_0)."""
    model, cost = random_system(3, 2, 2, seed=3)
    x = np.random.default_rng(3).normal(size=(5, 3))
    Pf = np.diag([2.0, 0.0, 1.0])
    for terminal, Qf in ((None, np.zeros((3, 3))), (Pf, Pf)):
        K0 = LQR(model, cost, horizon=H, terminal_weight=Qf).gain[0].numpy()
        plan = MPC(model, cost, H, terminal_cost=terminal).solve(x).plan
        np.testing.assert_allclose(plan[:, 0].numpy(), -x @ K0.T, rtol=0, atol=1e-8)


@pytest.mark.parametrize("B", [1, 10])
@pytest.mark.parametrize(("dims", "seed", "H"), [((2, 1, 1), 0, 8), ((3, 2, 2), 1, 15)])
def test_active_bounds_match_bounded_least_squares(B: int, dims, seed: int, H: int) -> None:
    model, cost = random_system(*dims, seed=seed)
    rng = np.random.default_rng(10 + seed)
    low = -rng.uniform(0.05, 0.3, size=model.n_u)
    high = rng.uniform(0.05, 0.3, size=model.n_u)
    x = 3.0 * rng.normal(size=(B, model.n_x))
    mpc = MPC(model, cost, H, input_bounds=(low, high))
    sol = mpc.solve(x)
    P = mpc.terminal_weight.numpy()
    active = 0
    for b in range(B):
        ref, J_ref = reference_plan(model, cost, P, H, x[b], low, high)
        np.testing.assert_allclose(sol.plan[b].numpy(), ref, rtol=0, atol=1e-7)
        assert float(sol.cost[b]) == pytest.approx(J_ref, rel=1e-9)
        active += int(np.isclose(ref, low).sum() + np.isclose(ref, high).sum())
    assert active >= 0.3 * B * H * model.n_u  # many constraints are active
    assert np.all(sol.plan.numpy() >= low - 1e-15) and np.all(sol.plan.numpy() <= high + 1e-15)


def test_solution_states_and_cost_are_the_model_rollout() -> None:
    model, cost = random_system(3, 2, 2, seed=4)
    x = np.random.default_rng(4).normal(size=(3, 3))
    mpc = MPC(model, cost, 6, input_bounds=(-0.2, 0.2))
    sol = mpc.solve(x)
    assert isinstance(sol, MPCSolution) and sol.states.shape == (3, 7, 3)
    A, Bm = model.A.numpy(), model.B.numpy()
    Q, R = cost.numpy()
    P = mpc.terminal_weight.numpy()
    for b in range(3):
        xs, J = [x[b]], 0.0
        for k in range(6):
            u = sol.plan[b, k].numpy()
            J += xs[-1] @ Q @ xs[-1] + u @ R @ u
            xs.append(A @ xs[-1] + Bm @ u)
        J += xs[-1] @ P @ xs[-1]
        np.testing.assert_allclose(sol.states[b].numpy(), np.stack(xs), rtol=1e-12, atol=1e-12)
        assert float(sol.cost[b]) == pytest.approx(J, rel=1e-12)


# -- the box-QP solver alone -----------------------------------------------------------------------


def random_box_qp(rng: np.random.Generator, B: int, N: int, log_cond: float, shared: bool):
    def spd() -> np.ndarray:
        V, _ = np.linalg.qr(rng.normal(size=(N, N)))
        return (V * 10 ** rng.uniform(-log_cond / 2, log_cond / 2, size=N)) @ V.T

    H = spd() if shared else np.stack([spd() for _ in range(B)])
    H = 0.5 * (H + np.swapaxes(H, -1, -2))
    g = 10 * rng.normal(size=(B, N))
    low, high = -rng.random(size=(B, N)), rng.random(size=(B, N))
    low[:, ::5] = -np.inf  # some variables are free on one side
    high[:, 3::7] = np.inf
    return H, g, low, high


def kkt_violation(H: np.ndarray, g: np.ndarray, z: np.ndarray, low, high) -> float:
    """Largest violation of the KKT conditions, scaled by diag(H): 0 at the solution."""
    grad = H @ z + g
    at_low, at_high = z <= low, z >= high
    bad = np.where(at_low, np.minimum(grad, 0), np.where(at_high, np.maximum(grad, 0), grad))
    return float(np.abs(bad / np.diag(H)).max())


@pytest.mark.parametrize("B", [1, 10])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("log_cond", [1.0, 4.0, 8.0])
def test_box_qp_matches_bvls_and_satisfies_kkt(B: int, shared: bool, log_cond: float) -> None:
    rng = np.random.default_rng(int(10 * log_cond) + B + shared)
    for N in (1, 7, 40):
        H, g, low, high = random_box_qp(rng, B, N, log_cond, shared)
        res = solve_box_qp(
            torch.as_tensor(H), torch.as_tensor(g), torch.as_tensor(low), torch.as_tensor(high)
        )
        assert bool(res.converged.all())
        z = res.solution.numpy()
        assert np.all(z >= low) and np.all(z <= high)
        for b in range(B):
            Hb = H if shared else H[b]
            L = np.linalg.cholesky(Hb)
            # ½z'Hz + g'z = ½|L'z + L⁻¹g|² + const: bounded least squares
            ref = lsq_linear(
                L.T,
                -np.linalg.solve(L, g[b]),
                bounds=(low[b], high[b]),
                method="bvls",
                tol=1e-15,
            ).x
            f = lambda v, Hb=Hb, gb=g[b]: 0.5 * v @ Hb @ v + gb @ v  # noqa: E731
            assert f(z[b]) <= f(ref) + 1e-12 * (1 + abs(f(ref)))
            scale = 1 + np.abs(ref).max()
            tol = 1e-9 if log_cond <= 4 else 1e-5  # the minimizer itself is ill-conditioned
            np.testing.assert_allclose(z[b], ref, rtol=0, atol=tol * scale)
            assert kkt_violation(Hb, g[b], z[b], low[b], high[b]) <= 1e-9 * scale


def test_box_qp_fixed_variables_and_warm_start() -> None:
    rng = np.random.default_rng(7)
    H, g, low, high = random_box_qp(rng, 6, 12, 3.0, shared=True)
    high[:, 1::4] = low[:, 1::4] = np.where(np.isfinite(low[:, 1::4]), low[:, 1::4], 0.0)
    args = [torch.as_tensor(a) for a in (H, g, low, high)]
    res = solve_box_qp(*args)
    z = res.solution.numpy()
    assert bool(res.converged.all()) and res.iterations > 0
    np.testing.assert_array_equal(z[:, 1::4], low[:, 1::4])
    for b in range(6):
        free = np.ones(12, dtype=bool)
        free[1::4] = False
        # the other variables solve the problem with the fixed ones substituted
        Hf, gf = H[np.ix_(free, free)], g[b, free] + H[np.ix_(free, ~free)] @ z[b, ~free]
        assert kkt_violation(Hf, gf, z[b, free], low[b, free], high[b, free]) < 1e-10
    # started at its solution the solver does not iterate
    again = solve_box_qp(*args, start=res.solution)
    assert again.iterations == 0
    np.testing.assert_array_equal(again.solution.numpy(), z)
    # an iteration cap that is too small is reported, with a feasible point
    capped = solve_box_qp(*args, max_iterations=1, pdas_iterations=1)
    assert not bool(capped.converged.all())
    zc = capped.solution.numpy()
    assert np.all(zc >= low) and np.all(zc <= high)


# -- nonlinear solvers -----------------------------------------------------------------------------


@pytest.mark.parametrize("B", [1, 10])
@pytest.mark.parametrize("line_search", [False, True])
def test_ltv_on_a_linear_model_equals_the_qp(B: int, line_search: bool) -> None:
    model, cost = random_system(3, 2, 2, seed=5)
    x = 3.0 * np.random.default_rng(5).normal(size=(B, 3))
    bounds = (-0.3, 0.25)
    qp = MPC(model, cost, 10, input_bounds=bounds).solve(x)
    ltv = MPC(
        as_nonlinear(model), cost, 10, input_bounds=bounds, solver=LTV(line_search=line_search)
    )
    assert isinstance(ltv.solver, LTV) and ltv.solver.line_search is line_search
    sol = ltv.solve(x)
    np.testing.assert_allclose(sol.plan.numpy(), qp.plan.numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(sol.cost.numpy(), qp.cost.numpy(), rtol=1e-10)
    # in closed loop (through the EKF, which equals the KF on a linear model)
    y = np.random.default_rng(6).normal(size=(B, 8, 2))
    a_qp = run(MPC(model, cost, 10, input_bounds=bounds), y)
    a_ltv = run(ltv, y)
    np.testing.assert_allclose(a_ltv, a_qp, rtol=0, atol=1e-8)


class NumpyLinear(SystemModel):
    """A linear model whose f is computed in NumPy (not differentiable by torch), with exact
    Jacobians: MPC's "ltv" must fall back to them."""

    def __init__(self, model: LinearGaussianModel) -> None:
        super().__init__(
            n_x=model.n_x,
            n_u=model.n_u,
            n_y=model.n_y,
            process_cov=model.process_cov,
            measurement_cov=model.measurement_cov,
        )
        self.lin = model

    def f(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        A, B = self.lin.A.numpy(), self.lin.B.numpy()
        out = x.detach().numpy() @ A.T + self._input(u, x).detach().numpy() @ B.T
        return torch.as_tensor(out)

    def h(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin.h(x)

    def f_jacobian(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.lin.f_jacobian(x, u)

    def input_jacobian(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.lin.input_jacobian(x, u)


def test_ltv_uses_the_model_jacobians_when_f_is_not_differentiable() -> None:
    model, cost = random_system(3, 2, 2, seed=5)
    x = 3.0 * np.random.default_rng(5).normal(size=(4, 3))
    qp = MPC(model, cost, 10, input_bounds=(-0.3, 0.25)).solve(x)
    sol = MPC(NumpyLinear(model), cost, 10, input_bounds=(-0.3, 0.25)).solve(x)
    np.testing.assert_allclose(sol.plan.numpy(), qp.plan.numpy(), rtol=0, atol=1e-9)


def test_mppi_with_many_samples_approaches_the_qp() -> None:
    model = plant()
    cost = plant_cost()
    x = np.array([[2.0, -1.0], [-0.5, 1.5]])
    bounds = (-0.6, 0.6)
    qp = MPC(model, cost, 5, input_bounds=bounds).solve(x)
    mppi = MPC(
        model,
        cost,
        5,
        input_bounds=bounds,
        solver=MPPI(samples=4000, iterations=15, temperature=0.05, noise_std=0.2, seed=0),
    )
    sol = mppi.solve(x)
    np.testing.assert_allclose(sol.plan[:, 0].numpy(), qp.plan[:, 0].numpy(), atol=0.05)
    assert np.all(sol.cost.numpy() <= 1.01 * qp.cost.numpy())
    assert np.all(sol.cost.numpy() >= qp.cost.numpy() - 1e-9)  # the QP is optimal


def test_mppi_in_float32_finds_the_float64_optimum() -> None:
    """rollout_dtype=float32 samples and rolls out in float32; with many samples both dtypes
    converge to the same plan (the pendulum's balance from a tilt, bounds active), and the plan
    and its cost come back in float64."""
    env_cost = QuadraticCost(Q=np.diag([1.0, 0.1]), R=[[0.01]])
    x = np.array([[0.4, -0.3], [-0.2, 0.5]])
    sols = []
    for dtype in (None, torch.float32):
        mpc = MPC(
            pendulum(),
            env_cost,
            10,
            input_bounds=(-3.0, 3.0),
            solver=MPPI(
                samples=4000,
                iterations=15,
                temperature=0.01,
                noise_std=0.5,
                seed=0,
                rollout_dtype=dtype,
            ),
        )
        assert mpc.solver.rollout_dtype == dtype
        assert mpc.setup.rollout_dtype == (torch.float64 if dtype is None else dtype)
        sols.append(mpc.solve(x))
    ref, single = sols
    assert single.plan.dtype == single.cost.dtype == torch.float64
    np.testing.assert_allclose(single.plan[:, 0].numpy(), ref.plan[:, 0].numpy(), atol=0.05)
    np.testing.assert_allclose(single.cost.numpy(), ref.cost.numpy(), rtol=0.01)
    # the float32 rollout is the float64 one to float32 precision
    mpc = MPC(pendulum(), env_cost, 10, solver=MPPI(rollout_dtype=torch.float32))
    U = torch.linspace(-1.0, 1.0, 10, dtype=torch.float64).view(1, 10, 1).expand(2, -1, -1)
    x0 = torch.as_tensor(x)
    X64 = mpc.rollout(x0, U)
    X32 = mpc.rollout(x0.float(), U.float())
    assert X32.dtype == torch.float32
    np.testing.assert_allclose(X32.double().numpy(), X64.numpy(), rtol=1e-5, atol=1e-5)
    c64, c32 = mpc.plan_cost(X64, U), mpc.plan_cost(X32, U.float())
    assert c32.dtype == torch.float32
    np.testing.assert_allclose(c32.double().numpy(), c64.numpy(), rtol=1e-5)


def test_rollout_dtype_errors() -> None:
    cost = QuadraticCost(Q=np.eye(2), R=[[0.1]])
    with pytest.raises(ParameterError, match="rollout_dtype"):  # float64 matrices
        MPC(plant(), plant_cost(), 5, solver=MPPI(rollout_dtype=torch.float32))
    MPC(pendulum(), cost, 5, solver=MPPI(rollout_dtype=torch.float32))  # the pendulum can
    with pytest.raises(TypeError, match="rollout_dtype"):  # no sampled rollouts: no setting
        LTV(rollout_dtype=torch.float32)
    with pytest.raises(TypeError, match="rollout_dtype"):  # nor an MPC keyword
        MPC(pendulum(), cost, 5, rollout_dtype=torch.float32)
    for bad in (torch.int32, "float32", np.float32):
        with pytest.raises(TypeError, match="rollout_dtype"):
            MPPI(rollout_dtype=bad)


def test_warm_start_tracks_the_converged_solution() -> None:
    """Real-time iterations (one linearization per step) from the shifted plan stay close to a
    converged solver; thrown away at every step, the same single iteration does not. MPPI with
    few samples, too, tracks it better when it keeps its mean plan."""
    model = full_state(cartpole())
    bounds = (-10.0, 10.0)
    x0 = torch.tensor([[0.0, 0.0, 0.35, 0.0], [0.5, 0.0, -0.3, 0.5]], dtype=torch.float64)
    est = StateFeedback(4)
    ref = MPC(
        model,
        CARTPOLE_COST,
        20,
        input_bounds=bounds,
        estimator=est,
        solver=LTV(iterations=4, line_search=True),
    )
    u_ref, _ = closed_loop(ref, model, x0, 30)
    for solver, factor in ((LTV(), 0.1), (MPPI(samples=32, seed=1), 0.5)):
        errors = []
        for reset_warm in (False, True):
            ctrl = MPC(model, CARTPOLE_COST, 20, input_bounds=bounds, estimator=est, solver=solver)
            u, _ = closed_loop(ctrl, model, x0, 30, reset_warm=reset_warm)
            errors.append(float((u - u_ref).abs().mean()))
        assert errors[0] < factor * errors[1], (solver, errors)


def test_mppi_replays_the_shifted_plan() -> None:
    """With negligible sampling noise the MPPI update keeps its warm start: the actions read out
    the stored plan one step at a time (so a broken shift or a dropped plan shows)."""
    model = full_state(cartpole())
    mpc = MPC(
        model,
        CARTPOLE_COST,
        6,
        estimator=StateFeedback(4),
        solver=MPPI(noise_std=1e-12, samples=4, seed=0),
    )
    x = torch.zeros(2, 4, dtype=torch.float64)
    state = mpc.init(2)
    plan = torch.arange(12, dtype=torch.float64).view(2, 6, 1)
    state = state._replace(plan=plan)
    for k in range(1, 9):
        u, state = mpc.step(state, x)
        expected = plan[:, min(k, 5)]
        np.testing.assert_allclose(u.numpy(), expected.numpy(), atol=1e-9)
        assert torch.equal(state.u_prev, u)
    # a reset row starts again from the zero plan
    u, state = mpc.step(state, x, episode_start=np.array([True, False]))
    np.testing.assert_allclose(u.numpy(), [[0.0], [11.0]], atol=1e-9)


def test_cost_state_wraps_the_pendulum_angle() -> None:
    """With the env's wrapped-angle cost, one turn more is the same problem (f is 2π-periodic)."""
    env = gym.make("kalmannet_ctrl/Pendulum-v0").unwrapped
    model = pendulum()
    x = torch.tensor([[0.3, -0.5], [2.5, 1.0]], dtype=torch.float64)
    turned = x + torch.tensor([2 * math.pi, 0.0], dtype=torch.float64)
    for solver in (LTV(), MPPI(samples=64, seed=0)):
        plans = [
            MPC(
                model,
                env.cost,
                15,
                input_bounds=(-2.0, 2.0),
                cost_state=env.cost_state,
                solver=solver,
            ).solve(z)
            for z in (x, turned)
        ]
        np.testing.assert_allclose(plans[1].plan.numpy(), plans[0].plan.numpy(), atol=1e-6)
        np.testing.assert_allclose(plans[1].cost.numpy(), plans[0].cost.numpy(), rtol=1e-6)
    # without the wrap, the turned state is far from upright
    plain = MPC(model, env.cost, 15, input_bounds=(-2.0, 2.0)).solve(turned)
    assert float(plain.cost[0]) > 10 * float(plans[0].cost[0])


@pytest.mark.parametrize("solver", ["ltv", "mppi"])
def test_cartpole_stays_up(solver: str) -> None:
    """Four episodes of 150 steps (3 s) on CartPole-v0 with the true model and the EKF."""
    venv = gym.make_vec("kalmannet_ctrl/CartPole-v0", num_envs=4)
    env = venv.unwrapped
    bounds = (env.single_action_space.low, env.single_action_space.high)
    method = MPPI(samples=128, seed=0) if solver == "mppi" else LTV()
    ctrl = MPC(env.true_model, env.cost, 15, input_bounds=bounds, solver=method)
    assert isinstance(ctrl.estimator, ExtendedKalmanFilter)
    obs, _ = venv.reset(seed=3)
    state, start = None, np.ones(4, dtype=bool)
    costs = []
    for _ in range(150):
        action, state = ctrl.predict(obs, state, start)
        assert np.all(np.abs(action) <= bounds[1])
        obs, reward, terminated, _, _ = venv.step(action)
        assert not terminated.any()
        costs.append(-reward)
        start = np.zeros(4, dtype=bool)
    assert np.mean(costs) < 0.1  # LQG on the true model: about 0.01 per step


@pytest.mark.slow
@pytest.mark.parametrize("rollout_dtype", [None, torch.float32])
def test_mppi_swings_the_pendulum_up(rollout_dtype: torch.dtype | None) -> None:
    venv = gym.make_vec("kalmannet_ctrl/Pendulum-v0", num_envs=2)
    env = venv.unwrapped
    ctrl = MPC(
        env.true_model,
        env.cost,
        30,
        input_bounds=(-2.0, 2.0),
        cost_state=env.env.cost_state,
        solver=MPPI(seed=0, rollout_dtype=rollout_dtype),
    )
    obs, _ = venv.reset(seed=0)
    state, start, costs = None, np.ones(2, dtype=bool), []
    for _ in range(400):
        action, state = ctrl.predict(obs, state, start)
        obs, reward, _, _, _ = venv.step(action)
        costs.append(-reward)
        start = np.zeros(2, dtype=bool)
    assert np.mean(costs[-100:]) < 0.05  # upright (hanging down costs π² ≈ 9.9 per step)


# -- closed loop on LinearSystem-v0 ----------------------------------------------------------------


def test_closed_loop_cost_is_the_analytic_lqg_cost() -> None:
    """MPC on the true model with inactive bounds and the LQR terminal cost acts like LQG, so
    its simulated average cost must match ``analytic_average_cost`` of LQG.

    400 seeded episodes of 200 steps; each episode's cost is averaged over steps 100..199, after
    the transient from x_0 ~ N(0, I) and the filter's start (closed-loop spectral radius < 0.96,
    0.96^100 < 2e-2 of a transient that is a fraction of the cost). Episodes are independent,
    so the standard error is the standard deviation of the per-episode averages over
    sqrt(400) (about 2.5 % of the mean); the bound is 4 standard errors (a false failure has
    probability below 1e-4, and the seed is fixed). The actions also equal LQG's, step by step.
    """
    venv = gym.make_vec("kalmannet_ctrl/LinearSystem-v0", num_envs=400)
    env = venv.unwrapped
    true, cost = env.true_model, env.cost
    bounds = (env.single_action_space.low, env.single_action_space.high)
    mpc = MPC(true, cost, 20, input_bounds=bounds)
    lqg = LQG(true, cost, input_bounds=bounds)
    obs, _ = venv.reset(seed=7)
    s_mpc = s_lqg = None
    start = np.ones(400, dtype=bool)
    costs = np.empty((400, 200))
    for t in range(200):
        action, s_mpc = mpc.predict(obs, s_mpc, start)
        a_lqg, s_lqg = lqg.predict(obs, s_lqg, start)
        np.testing.assert_allclose(action, a_lqg, rtol=1e-5, atol=1e-6)
        assert np.abs(action).max() < bounds[1][0]  # never saturated
        obs, reward, _, truncated, _ = venv.step(action)
        assert truncated.all() == (t == 199)
        costs[:, t] = -reward
        start = np.zeros(400, dtype=bool)
    per_episode = costs[:, 100:].mean(1)
    mean, se = per_episode.mean(), per_episode.std(ddof=1) / np.sqrt(len(per_episode))
    analytic = analytic_average_cost(true, lqg, cost)
    assert abs(mean - analytic) <= 4 * se, (mean, se, analytic)


def test_closed_loop_warm_start_reduces_qp_iterations() -> None:
    """From the shifted plan the active-set solver needs fewer face solves than from scratch."""
    m = plant().numpy()
    lin = LinearGaussianModel(m["A"], m["B"], np.eye(2), m["process_cov"], 1e-6 * np.eye(2))
    mpc = MPC(lin, plant_cost(), 20, input_bounds=(-0.5, 0.5), estimator=StateFeedback(2))
    assert isinstance(mpc.solver, QP)
    x = torch.tensor([[6.0, -3.0], [-5.0, 4.0]], dtype=torch.float64)
    warm_its, cold_its, state = [], [], None
    for _ in range(15):
        u, state = mpc.step(state, x)
        shifted = torch.cat([state.plan[:, 1:], state.plan[:, -1:]], 1)
        x = lin.f(x, u)
        warm = mpc.solve(x, shifted)
        cold = mpc.solve(x)
        np.testing.assert_allclose(warm.plan.numpy(), cold.plan.numpy(), atol=1e-10)
        warm_its.append(warm.iterations)
        cold_its.append(cold.iterations)
    assert sum(cold_its) > 0 and sum(warm_its) < 0.5 * sum(cold_its), (warm_its, cold_its)


# -- the Controller protocol -----------------------------------------------------------------------


def test_evaluate_policy_matches_lqg() -> None:
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    returns = []
    for make in (MPC, LQG):
        venv = DummyVecEnv([lambda: Monitor(gym.make("kalmannet_ctrl/LinearSystem-v0"))])
        env = venv.envs[0].unwrapped
        bounds = (env.action_space.low, env.action_space.high)
        if make is MPC:
            ctrl = MPC(env.true_model, env.cost, 10, input_bounds=bounds)
        else:
            ctrl = LQG(env.true_model, env.cost, input_bounds=bounds)
        venv.seed(0)
        rewards, lengths = evaluate_policy(
            ctrl, venv, n_eval_episodes=3, return_episode_rewards=True
        )
        assert lengths == [200, 200, 200]
        returns.append(rewards)
    np.testing.assert_allclose(returns[0], returns[1], rtol=1e-5)


@pytest.mark.parametrize("B", [1, 10])
@pytest.mark.parametrize("solver", ["qp", "ltv"])
def test_episode_start_resets_only_flagged_rows(B: int, solver: str) -> None:
    model = plant(x0_mean=[1.0, -2.0], x0_cov=0.5 * np.eye(2))
    if solver == "ltv":
        model = as_nonlinear(model)
    y = np.random.default_rng(2).normal(size=(B, 12, 1))
    flagged = np.zeros(B, dtype=bool)
    flagged[1::3] = True
    if B == 1:
        flagged[0] = True
    k = 5
    make = lambda: MPC(model, plant_cost(), 8, input_bounds=(-0.4, 0.4))  # noqa: E731
    with_reset = run(make(), y, {k: flagged})
    without = run(make(), y)
    fresh = run(make(), y[flagged, k:])
    # the other rows are untouched, up to the round-off of per-row against shared covariance
    # products in the estimator (1 ulp on some CPUs)
    np.testing.assert_allclose(with_reset[~flagged], without[~flagged], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(with_reset[flagged, k:], fresh, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(with_reset[:, :k], without[:, :k])
    assert np.abs(with_reset[flagged, k:] - without[flagged, k:]).max() > 1e-3


@pytest.mark.parametrize("B", [1, 10])
def test_shapes_dtypes_and_state(B: int) -> None:
    model, cost = random_system(3, 2, 2, seed=8)
    ctrl = MPC(model, cost, 7, input_bounds=(-0.5, 0.5))
    assert isinstance(ctrl, Controller) and isinstance(ctrl.estimator, KalmanFilter)
    y = np.random.default_rng(8).normal(size=(B, 2))
    a32, state = ctrl.predict(y.astype(np.float32))
    assert a32.shape == (B, 2) and a32.dtype == np.float32
    assert isinstance(state, MPCState) and state.plan.shape == (B, 7, 2)
    assert state.u_prev.shape == (B, 2) and state.trajectory is None
    np.testing.assert_array_equal(state.plan[:, 0].numpy().astype(np.float32), a32)
    a64, _ = ctrl.predict(y)
    assert a64.dtype == np.float64
    a1, s1 = ctrl.predict(y[0].astype(np.float32))
    assert a1.shape == (2,) and s1.plan.shape == (1, 7, 2)
    # state passthrough: the state passed in is not modified, the answer is repeatable
    saved = (state.plan.clone(), state.u_prev.clone(), state.estimator_state.mean.clone())
    first, s_a = ctrl.predict(y, state)
    second, s_b = ctrl.predict(y, state)
    np.testing.assert_array_equal(first, second)
    assert torch.equal(s_a.plan, s_b.plan)
    for before, after in zip(
        saved, (state.plan, state.u_prev, state.estimator_state.mean), strict=True
    ):
        assert torch.equal(before, after)
    # the estimate and the step API
    np.testing.assert_array_equal(ctrl.estimate(s_a).numpy(), s_a.estimator_state.mean.numpy())
    u, s_t = ctrl.step(None, torch.as_tensor(y))
    assert u.shape == (B, 2) and u.dtype == torch.float64 and isinstance(s_t, MPCState)
    ltv = MPC(as_nonlinear(model), cost, 7)
    _, s_ltv = ltv.predict(y)
    assert s_ltv.trajectory.shape == (B, 8, 3)
    np.testing.assert_allclose(s_ltv.trajectory[:, 0].numpy(), ltv.estimate(s_ltv).numpy())


def test_missing_measurements_predict_only() -> None:
    model, cost = random_system(3, 2, 2, seed=9)
    ctrl = MPC(model, cost, 5, input_bounds=(-0.5, 0.5))
    y = np.random.default_rng(9).normal(size=(4, 10, 2))
    y[0, 3] = np.nan
    y[2, 0] = np.nan
    actions = run(ctrl, y)
    assert np.isfinite(actions).all()


def test_mppi_is_deterministic_with_a_seed() -> None:
    model = as_nonlinear(plant())
    y = np.random.default_rng(10).normal(size=(3, 10, 1))

    def actions(seed: int, deterministic: bool) -> np.ndarray:
        ctrl = MPC(
            model, plant_cost(), 8, input_bounds=(-1.0, 1.0), solver=MPPI(samples=32, seed=seed)
        )
        state, out = None, []
        for t in range(10):
            a, state = ctrl.predict(y[:, t], state, deterministic=deterministic)
            out.append(a)
        return np.stack(out, 1)

    np.testing.assert_array_equal(actions(0, True), actions(0, True))
    np.testing.assert_array_equal(actions(0, False), actions(0, False))
    assert not np.array_equal(actions(0, True), actions(1, True))
    assert not np.array_equal(actions(0, True), actions(0, False))
    gen = torch.Generator().manual_seed(0)
    ctrl = MPC(model, plant_cost(), 8, solver=MPPI(samples=32, generator=gen))
    assert ctrl.setup.generator is gen


def test_qp_iteration_cap_warns() -> None:
    model, cost = random_system(3, 2, 2, seed=19)
    x = 5 * np.random.default_rng(19).normal(size=(4, 3))
    assert MPC(model, cost, 20, input_bounds=(-0.05, 0.05)).solve(x).iterations > 2
    mpc = MPC(model, cost, 20, input_bounds=(-0.05, 0.05), solver=QP(max_iterations=2))
    with pytest.warns(RuntimeWarning, match="QP's max_iterations"):
        sol = mpc.solve(x)
    assert np.all(np.abs(sol.plan.numpy()) <= 0.05)
    # the same cap on the box-QPs of sequential linearization
    ltv = MPC(
        as_nonlinear(model), cost, 20, input_bounds=(-0.05, 0.05), solver=LTV(max_qp_iterations=2)
    )
    with pytest.warns(RuntimeWarning, match="LTV's max_qp_iterations"):
        sol = ltv.solve(x)
    assert np.all(np.abs(sol.plan.numpy()) <= 0.05)


def test_attributes_and_repr() -> None:
    model, cost = plant(), plant_cost()
    mpc = MPC(model, cost, 4)
    assert isinstance(mpc.solver, QP) and mpc.horizon == 4 and mpc.input_bounds is None
    np.testing.assert_allclose(mpc.terminal_weight.numpy(), LQR(model, cost).value_matrix.numpy())
    assert "MPC(n_x=2, n_u=1, n_y=1, horizon=4, solver=QP(max_iterations=None)" in repr(mpc)
    nl = MPC(cartpole(), CARTPOLE_COST, 4)
    assert isinstance(nl.solver, LTV) and isinstance(nl.estimator, ExtendedKalmanFilter)
    assert np.all(np.linalg.eigvalsh(nl.terminal_weight.numpy()) > 0)
    assert MPC(model, cost, 4, terminal_cost=None).terminal_weight.abs().max() == 0


# -- errors ----------------------------------------------------------------------------------------


def test_constructor_errors() -> None:
    model, cost = plant(), plant_cost()
    with pytest.raises(ParameterError, match="horizon: expected an integer >= 1, found 0"):
        MPC(model, cost, 0)
    with pytest.raises(TypeError, match="horizon: expected an integer"):
        MPC(model, cost, 2.5)
    with pytest.raises(ValueError, match="input_bounds: expected low <= high"):
        MPC(model, cost, 5, input_bounds=(1.0, -1.0))
    with pytest.raises(DimensionError, match=r"input_bounds: expected low .*\(1,\)"):
        MPC(model, cost, 5, input_bounds=([-1.0, -1.0], 1.0))
    with pytest.raises(TypeError, match="model: expected a SystemModel"):
        MPC("plant", cost, 5)
    with pytest.raises(TypeError, match="cost: expected a QuadraticCost"):
        MPC(model, (np.eye(2), [[1.0]]), 5)
    with pytest.raises(DimensionError, match=r"cost: expected Q of shape \(2, 2\)"):
        MPC(model, QuadraticCost(np.eye(3), [[1.0]]), 5)
    auto = LinearGaussianModel([[0.5]], None, [[1.0]], [[1.0]], [[1.0]])
    with pytest.raises(DimensionError, match=r"model: MPC needs a model with inputs"):
        MPC(auto, QuadraticCost([[1.0]], np.zeros((0, 0))), 5)
    with pytest.raises(ParameterError, match="solver: expected None, a Solver"):
        MPC(model, cost, 5, solver="ipopt")
    with pytest.raises(TypeError, match="solver: expected None, a Solver"):
        MPC(model, cost, 5, solver=LTV)  # the class, not an object
    for qp in ("qp", QP()):
        with pytest.raises(TypeError, match=r"model: solver='qp' needs a LinearGaussianModel"):
            MPC(cartpole(), CARTPOLE_COST, 5, solver=qp)
    with pytest.raises(ValueError, match="cost_state: not supported by solver='qp'"):
        MPC(model, cost, 5, cost_state=lambda x: x)
    with pytest.raises(TypeError, match="cost_state: expected a callable"):
        MPC(model, cost, 5, solver="ltv", cost_state=3)
    with pytest.raises(DimensionError, match=r"cost_state: expected an output of shape \(M, 2\)"):
        MPC(model, cost, 5, solver="ltv", cost_state=lambda x: x[:, :1])
    with pytest.raises(TypeError, match="estimator: expected an object with the Estimator"):
        MPC(model, cost, 5, estimator=object())
    with pytest.raises(DimensionError, match="estimator: expected an estimator of the model's"):
        MPC(model, cost, 5, estimator=StateFeedback(3))
    with pytest.raises(ParameterError, match="samples: expected an integer >= 2"):
        MPPI(samples=1)
    with pytest.raises(ParameterError, match="temperature: expected a finite number > 0"):
        MPPI(temperature=0.0)
    with pytest.raises(ParameterError, match="noise_std: expected finite values > 0"):
        MPPI(noise_std=-1.0)
    with pytest.raises(DimensionError, match=r"noise_std: expected a scalar or shape \(1,\)"):
        MPC(model, cost, 5, solver=MPPI(noise_std=[1.0, 2.0]))  # n_u = 1: checked when bound
    with pytest.raises(ValueError, match="seed, generator: pass one of them"):
        MPPI(seed=0, generator=torch.Generator())
    with pytest.raises(ParameterError, match="iterations: expected an integer >= 1"):
        LTV(iterations=0)
    with pytest.raises(TypeError, match="line_search: expected a bool"):
        LTV(line_search="yes")
    for old in ({"iterations": 2}, {"samples": 8}, {"line_search": True}, {"seed": 0}):
        with pytest.raises(TypeError, match="unexpected keyword argument"):  # solver settings
            MPC(model, cost, 5, **old)


def test_terminal_cost_errors() -> None:
    model, cost = plant(), plant_cost()
    with pytest.raises(NotPositiveDefiniteError, match="terminal_cost: expected a positive semi"):
        MPC(model, cost, 5, terminal_cost=np.diag([1.0, -1.0]))
    with pytest.raises(DimensionError, match=r"terminal_cost: expected a square matrix .*\(2, 2\)"):
        MPC(model, cost, 5, terminal_cost=np.eye(3))
    with pytest.raises(ParameterError, match="terminal_cost: expected None, 'lqr' or"):
        MPC(model, cost, 5, terminal_cost="dare")
    shifted = NonlinearModel(
        lambda x, u: 0.5 * x + u + 1.0,
        lambda x: x,
        n_x=1,
        n_y=1,
        n_u=1,
        process_cov=[[1.0]],
        measurement_cov=[[1.0]],
    )
    q1 = QuadraticCost([[1.0]], [[1.0]])
    with pytest.raises(NotAnEquilibriumError, match="terminal_cost: 'lqr' linearizes the model"):
        MPC(shifted, q1, 5)
    MPC(shifted, q1, 5, terminal_cost=None)  # fine without the LQR terminal cost


def test_predict_and_solve_errors() -> None:
    ctrl = MPC(plant(), plant_cost(), 5)
    with pytest.raises(DimensionError, match=r"observation: expected shape \(1,\) or \(B, 1\)"):
        ctrl.predict(np.ones(2))
    with pytest.raises(NonFiniteError, match=r"observation: .*found 1 infinite"):
        ctrl.predict(np.array([[np.inf], [0.0]]))
    with pytest.raises(NonFiniteError, match="y: expected finite values"):
        ctrl.step(None, np.array([[-np.inf]]))
    with pytest.raises(DimensionError, match=r"y: expected shape \(B, 1\), found \(3,\)"):
        ctrl.step(None, np.ones(3))
    _, state = ctrl.predict(np.ones((3, 1)))
    with pytest.raises(BatchSizeError, match=r"observation: expected batch size 3 .*found 2"):
        ctrl.predict(np.ones((2, 1)), state)
    with pytest.raises(BatchSizeError, match="episode_start: expected batch size 3, found 2"):
        ctrl.predict(np.ones((3, 1)), state, episode_start=np.array([True, False]))
    with pytest.raises(TypeError, match="state: expected the MPCState"):
        ctrl.predict(np.ones((3, 1)), state.estimator_state)
    with pytest.raises(TypeError, match="state: expected an MPCState"):
        ctrl.estimate((1, 2))
    a, state = ctrl.predict(np.ones((2, 1)), state, episode_start=np.ones(2, dtype=bool))
    assert a.shape == (2, 1) and state.plan.shape == (2, 5, 1)
    with pytest.raises(DimensionError, match=r"x: expected shape \(B, 2\), found \(2,\)"):
        ctrl.solve(np.ones(2))
    with pytest.raises(NonFiniteError, match="x: expected finite values"):
        ctrl.solve(np.array([[np.nan, 0.0]]))
    with pytest.raises(DimensionError, match=r"warm_start: expected shape \(1, 5, 1\)"):
        ctrl.solve(np.ones((1, 2)), np.zeros((1, 4, 1)))


def test_no_warning_in_normal_use() -> None:
    model, cost = random_system(3, 2, 2, seed=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(MPC(model, cost, 10, input_bounds=(-0.2, 0.2)), np.ones((2, 5, 2)))
