"""Model predictive control: the finite-horizon problem, re-solved at every step from the
estimate by a solver object (:class:`~.qp.QP`, :class:`~.ltv.LTV`, :class:`~.mppi.MPPI`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..._docstrings import fill
from ..._validation import as_tensor, check_positive_int, shape_str
from ...errors import DimensionError, NonFiniteError
from ...estimators.base import Estimator
from ...models.base import SystemModel
from ...models.cost import QuadraticCost
from .._docs import BASE_SHAPES, FEEDBACK_FIELDS, SCALAR_PLANT
from ..base import ModelBasedController, check_estimator, parse_input_bounds
from ._checks import (
    check_cost_state_callable,
    check_model_and_cost,
    cost_state_hook,
    resolve_solver,
    terminal_weight,
)
from .solver import PlanRequest, Solver

__all__ = ["MPC", "MPCSolution", "MPCState", "PlanWeights"]


@fill(feedback_fields=FEEDBACK_FIELDS)
class MPCState(NamedTuple):
    """Recurrent state of an :class:`MPC` controller.

    Attributes
    ----------
    %(feedback_fields)s
    plan : Tensor, (B, H, n_u)
        The plan u_t … u_{t+H−1} behind the last action (its first entry is ``u_prev``, except
        for MPPI with ``deterministic=False``, which returns a sampled action). Shifted by one
        step, it is the warm start of the next call. The zero plan (projected onto the bounds)
        for rows that start an episode.
    trajectory : Tensor, (B, H + 1, n_x), or None
        :class:`~.ltv.LTV` only: the states x_0 … x_H predicted along ``plan`` (by the
        linearized model unless ``line_search``), whose shift gives the next linearization
        points; None for the other solvers and before the first step.

    Shapes
    ------
    u_prev (B, n_u), plan (B, H, n_u), trajectory (B, H + 1, n_x) or None
    """

    estimator_state: Any
    u_prev: Tensor
    plan: Tensor
    trajectory: Tensor | None = None


class MPCSolution(NamedTuple):
    """An open-loop plan from :meth:`MPC.solve`.

    Attributes
    ----------
    plan : Tensor, (B, H, n_u)
        u_0 … u_{H−1}.
    states : Tensor, (B, H + 1, n_x)
        x_0 … x_H predicted by the model without noise under the plan.
    cost : Tensor, (B,)
        The planned cost Σ_{k<H} (c(x_k)' Q c(x_k) + u_k' R u_k) + c(x_H)' P c(x_H), with
        c the ``cost_state`` hook (identity by default).
    iterations : int
        QP iterations (face problems solved, summed over the LTV iterations) of the slowest
        row for QP and LTV; MPPI updates for MPPI.

    Shapes
    ------
    plan (B, H, n_u), states (B, H + 1, n_x), cost (B,)
    """

    plan: Tensor
    states: Tensor
    cost: Tensor
    iterations: int


class PlanWeights(NamedTuple):
    """The plan cost's weights and the input bounds in one dtype (:meth:`MPC.weights`).

    Attributes
    ----------
    W : Tensor, (H, n_x, n_x)
        Weights of x_1 … x_H: Q for k < H, P at H.
    R : Tensor, (n_u, n_u)
    bounds : tuple of Tensor (n_u,), or None

    Shapes
    ------
    W (H, n_x, n_x), R (n_u, n_u), bounds (n_u,) each
    """

    W: Tensor
    R: Tensor
    bounds: tuple[Tensor, Tensor] | None


@fill(base_shapes=BASE_SHAPES, scalar_plant=SCALAR_PLANT)
class MPC(ModelBasedController):
    """Model predictive control with output feedback, batched over B plants.

    At step t the estimator predicts with u_{t−1} (the previous, clipped action) and updates with
    the measurement y_t; from x̂_{t|t} the controller plans H inputs minimizing

        J = Σ_{k=0}^{H−1} (x_k' Q x_k + u_k' R u_k) + x_H' P x_H,   x_0 = x̂_{t|t},
        x_{k+1} = f(x_k, u_k),   low <= u_k <= high,

    on the (noise-free) model and applies u_0; the rest of the plan, shifted, warm-starts the
    next step. With ``cost_state`` the state enters the cost as c(x_k) instead of x_k.

    The object is the problem; the method that solves it is the ``solver`` object, which holds
    only its own settings: :class:`~.qp.QP` (the exact condensed box-QP, for a linear model),
    :class:`~.ltv.LTV` (sequential linearization / real-time iteration, for a nonlinear model)
    or :class:`~.mppi.MPPI` (sampling, for global problems such as a swing-up). Its per-problem
    work (condensing, weight casts, a seeded generator) is done here, once
    (:attr:`setup`), so one solver object may serve several MPCs.

    Parameters
    ----------
    model : SystemModel
        The prediction model (nominal or true), with n_u >= 1.
    cost : QuadraticCost
        Stage cost weights Q (n_x, n_x), R (n_u, n_u).
    horizon : int
        H >= 1, the number of planned inputs.
    input_bounds : (low, high), optional
        Actuator limits, each a scalar or an array (n_u,) (e.g. a Gymnasium Box's ``low`` and
        ``high``); infinite entries leave that side free. As in :class:`LQG`.
    estimator : Estimator, optional
        Any object with the Estimator protocol estimating the n_x states of ``model``. Default:
        ``KalmanFilter(model)`` for a LinearGaussianModel, ``ExtendedKalmanFilter(model)``
        otherwise.
    terminal_cost : None, "lqr" or array-like (n_x, n_x)
        P: zero (None), the infinite-horizon LQR value matrix of the model ("lqr", default;
        for a nonlinear model that of its linearization at the origin, which must be an
        equilibrium), or a symmetric positive semi-definite matrix.
    cost_state : callable, optional
        ``cost_state(x) -> c(x)``, (M, n_x) -> (M, n_x) on tensors (NumPy results are
        accepted, so an env's ``cost_state`` works as it is): the state as the cost sees it,
        e.g. with an angle wrapped to [−π, π). Not supported by QP.
    solver : Solver, {"qp", "ltv", "mppi", "unfolded"} or None
        The method (e.g. ``MPPI(samples=256, seed=0)``); a name stands for the
        default-configured solver; None (default) picks ``QP()`` for a LinearGaussianModel and
        ``LTV()`` otherwise.

    Attributes
    ----------
    model, cost, horizon, estimator, cost_state
    solver : Solver
        The solver object.
    setup : Setup
        What ``solver.bind(self)`` returned: the solver's state for this problem (e.g. QP's
        condensed matrices, MPPI's ``generator``).
    input_bounds : tuple of Tensor (n_u,), or None
    terminal_weight : Tensor, (n_x, n_x)
        P.
    state_weights : Tensor, (H, n_x, n_x)
        The weights of x_1 … x_H (Q, …, Q, P).
    input_weight : Tensor, (H·n_u, H·n_u)
        R̄ = blockdiag(R, …, R), on the stacked plan U = (u_0, …, u_{H−1}).
    plan_bounds : tuple of Tensor (H·n_u,), or None
        The input bounds on the stacked plan.
    initial_plan : Tensor, (H, n_u)
        The zero plan projected onto the bounds: the warm start of a new episode.

    Shapes
    ------
    solve: x (B, n_x) -> plan (B, H, n_u);
    %(base_shapes)s

    Raises
    ------
    TypeError
        If ``model`` is not a SystemModel, ``cost`` not a QuadraticCost, ``estimator`` lacks
        the Estimator protocol, ``cost_state`` is not callable, ``solver`` is of the wrong
        type, or QP is asked for a nonlinear model.
    DimensionError
        If the model has no input, or the cost, the estimator, the bounds, the terminal cost,
        ``cost_state``'s output or MPPI's ``noise_std`` do not match the model's dimensions.
    ParameterError
        If ``horizon`` < 1, the solver's name is unknown, or MPPI's ``rollout_dtype`` is one
        the model cannot compute in.
    ValueError
        If the bounds have low > high or NaN, or ``cost_state`` is given to QP.
    NotPositiveDefiniteError, NotSymmetricError
        If ``terminal_cost`` is not symmetric positive semi-definite.
    NotAnEquilibriumError
        If ``terminal_cost="lqr"`` on a nonlinear model whose origin is not an equilibrium.
    RiccatiError
        If ``terminal_cost="lqr"`` and the (linearized) model is not stabilizable.

    Notes
    -----
    The solver's set-up and the terminal weight are computed from the model when the
    controller is built: rebuild it after changing the model's tensors. Planning runs under
    ``torch.no_grad()``: the action is not differentiable, except with a solver whose setup is
    (:class:`~.unfolded.Unfolded`, whose parameters train on the closed-loop cost). With a
    model-based estimator (not an ``nn.Module``) :meth:`predict` runs entirely under
    ``torch.inference_mode()`` (the per-step latency matters there), so the state it returns
    holds inference tensors: give it back to :meth:`predict`, not to :meth:`step`; with a
    learned estimator it runs under ``torch.no_grad()``.

    Examples
    --------
    %(scalar_plant)s
    >>> mpc = MPC(m, cost, horizon=10, input_bounds=(-0.5, 0.5))
    >>> mpc.solver
    QP(max_iterations=None)
    >>> action, state = mpc.predict(np.array([0.3], dtype=np.float32))
    >>> action.shape, action.dtype, tuple(state.plan.shape)
    ((1,), dtype('float32'), (1, 10, 1))
    >>> mpc.solve([[5.0]]).plan[0, :3, 0].tolist()  # the open-loop plan from x = 5
    [-0.5, -0.5, -0.5]
    >>> from kalmannet_ctrl.controllers.mpc import MPPI
    >>> sampled = MPC(m, cost, 10, input_bounds=(-0.5, 0.5), solver=MPPI(samples=64, seed=0))
    >>> sampled.solve([[5.0]]).plan.shape
    torch.Size([1, 10, 1])
    """

    state_type = MPCState

    @property
    def inference_safe(self) -> bool:  # type: ignore[override]
        """True unless the estimator is a learned module (whose caches need version counters)
        or the solver's setup is differentiable (trained later: the estimator's caches made in
        :meth:`predict` must not be inference tensors)."""
        return not isinstance(self.estimator, torch.nn.Module) and not self.setup.differentiable

    def __init__(
        self,
        model: SystemModel,
        cost: QuadraticCost,
        horizon: int,
        *,
        input_bounds: tuple[Any, Any] | None = None,
        estimator: Estimator | None = None,
        terminal_cost: Any = "lqr",
        cost_state: Callable[[Tensor], Any] | None = None,
        solver: Solver | str | None = None,
    ) -> None:
        self._check_model(model, cost)
        self.model = model
        self.cost = cost
        self.horizon = check_positive_int(horizon, "horizon")
        self.solver = resolve_solver(solver, model)
        self.estimator = check_estimator(estimator, model)
        self.input_bounds = parse_input_bounds(input_bounds, model)
        self.cost_state = cost_state
        if cost_state is not None:
            check_cost_state_callable(cost_state)
        self.solver.check(model, cost_state=cost_state is not None)
        self._cost_hook = None if cost_state is None else cost_state_hook(cost_state, model)

        to = dict(dtype=model.dtype, device=model.device)
        H, n, m = self.horizon, model.n_x, model.n_u
        self._Q = cost.Q.detach().to(**to)
        self._R = cost.R.detach().to(**to)
        self.terminal_weight = self._terminal_weight(terminal_cost)
        self.state_weights = torch.cat([self._Q.expand(H - 1, n, n), self.terminal_weight[None]])
        self.input_weight = torch.block_diag(*([self._R] * H))
        self.plan_bounds: tuple[Tensor, Tensor] | None = None
        self.initial_plan = torch.zeros(H, m, **to)
        if self.input_bounds is not None:
            low, high = self.input_bounds
            self.plan_bounds = (low.repeat(H), high.repeat(H))
            self.initial_plan = self.initial_plan.clamp(low, high)
        self._cast = {model.dtype: PlanWeights(self.state_weights, self._R, self.input_bounds)}
        self.setup = self.solver.bind(self)

    # -- what a subclass may refine (NeuralMPC) --------------------------------------------------
    def _check_model(self, model: Any, cost: Any) -> None:
        """The typed error if ``model`` and ``cost`` do not make a problem: a SystemModel with
        inputs and a QuadraticCost of its dimensions."""
        check_model_and_cost(model, cost)

    def _terminal_weight(self, terminal_cost: Any) -> Tensor:
        """P of ``terminal_cost`` (None, "lqr" or a matrix; see the class), for :attr:`model`
        and :attr:`cost`."""
        return terminal_weight(terminal_cost, self.model, self.cost)

    # -- the controller base's hooks -------------------------------------------------------------
    def init(self, batch_size: int) -> MPCState:
        """The state before the first measurement: the estimator's prior, u_prev = 0, the zero
        plan (projected onto the bounds).

        Shapes
        ------
        -> u_prev (B, n_u), plan (B, H, n_u)
        """
        est_state = self.estimator.init(batch_size)
        u_prev = torch.zeros(batch_size, self.n_u, dtype=self.dtype, device=self.device)
        plan = self.initial_plan.expand(batch_size, -1, -1).clone()
        return MPCState(est_state, u_prev, plan)

    def reset_rows(self, state: MPCState, mask: Tensor) -> MPCState:
        """Estimator prior, u_prev = 0 and the zero plan for the rows where ``mask`` is True
        (their trajectory is rebuilt at the next step, which gets the mask as
        ``episode_start``).

        Shapes
        ------
        mask : (B,) bool
        """
        state = super().reset_rows(state, mask)
        return state._replace(plan=torch.where(mask[:, None, None], self.initial_plan, state.plan))

    def act(
        self, state: MPCState, y: Tensor, *, episode_start: Tensor | None, deterministic: bool
    ) -> tuple[Tensor, MPCState]:
        """Estimator step with (u_{t−1}, y_t), then one plan from x̂_{t|t}, warm-started from the
        shifted plan (and, for LTV, the shifted trajectory; rows in ``episode_start`` roll
        theirs out afresh).

        Shapes
        ------
        y : (B, n_y) -> u (B, n_u)
        """
        xhat, est_state = self.estimator.step(state.estimator_state, y, state.u_prev)
        grad = self.setup.differentiable and torch.is_grad_enabled()
        with torch.set_grad_enabled(grad):
            xhat = xhat if grad else xhat.detach()
            # the previous plan shifted by one step, its last input repeated
            warm = torch.cat([state.plan[:, 1:], state.plan[:, -1:]], 1)
            traj = self.setup.warm_trajectory(xhat, warm, state.trajectory, episode_start)
            out = self.setup.plan(PlanRequest(xhat, warm, traj, deterministic=deterministic))
        return out.u, MPCState(est_state, out.u, out.plan, out.trajectory)

    # -- open loop -------------------------------------------------------------------------------
    def solve(
        self,
        x: Any,
        warm_start: Any = None,
        *,
        generator: torch.Generator | None = None,
    ) -> MPCSolution:
        """The open-loop plan from the states ``x`` (no estimator involved).

        Parameters
        ----------
        x : array-like or Tensor, (B, n_x)
            Initial states x_0.
        warm_start : array-like or Tensor, (B, H, n_u), optional
            The initial plan (used as it is, not shifted; projected onto the bounds). Default:
            the zero plan.
        generator : torch.Generator, optional
            MPPI: the noise source for this call (default: the controller's,
            ``setup.generator``).

        Returns
        -------
        MPCSolution
            plan (B, H, n_u), states (B, H + 1, n_x), cost (B,), iterations.

        Raises
        ------
        DimensionError
            If ``x`` is not (B, n_x) or ``warm_start`` not (B, H, n_u).
        NonFiniteError
            On NaN/inf entries in ``x`` or ``warm_start``.

        Shapes
        ------
        x : (B, n_x), warm_start : (B, H, n_u) -> plan (B, H, n_u)
        """
        x = as_tensor(x, "x", dtype=self.dtype, device=self.device)
        if x.dim() != 2 or x.shape[1] != self.n_x or x.shape[0] < 1:
            raise DimensionError(
                f"x: expected shape (B, {self.n_x}), found {shape_str(tuple(x.shape))}"
            )
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError(
                f"x: expected finite values, found {int((~torch.isfinite(x)).sum())} "
                "NaN/inf entries"
            )
        B = x.shape[0]
        if warm_start is None:
            warm = self.initial_plan.expand(B, -1, -1)
        else:
            warm = as_tensor(warm_start, "warm_start", dtype=self.dtype, device=self.device)
            if tuple(warm.shape) != (B, self.horizon, self.n_u):
                raise DimensionError(
                    f"warm_start: expected shape ({B}, {self.horizon}, {self.n_u}), "
                    f"found {shape_str(tuple(warm.shape))}"
                )
            if not bool(torch.isfinite(warm).all()):
                raise NonFiniteError("warm_start: expected finite values, found NaN/inf")
        with torch.no_grad():
            out = self.setup.plan(PlanRequest(x, warm, generator=generator))
            states = self.setup.rollout(x, out.plan)
            cost = self.plan_cost(states, out.plan) + self._stage_state_cost(states[:, 0])
        return MPCSolution(out.plan, states, cost, out.iterations)

    # -- what the solvers share ------------------------------------------------------------------
    def weights(self, dtype: torch.dtype) -> PlanWeights:
        """The stage weights, R and the bounds in ``dtype`` (cast once, then kept).

        Shapes
        ------
        -> W (H, n_x, n_x), R (n_u, n_u), bounds (n_u,) each or None
        """
        if dtype not in self._cast:
            base = self._cast[self.dtype]
            bounds = None if base.bounds is None else tuple(b.to(dtype) for b in base.bounds)
            self._cast[dtype] = PlanWeights(base.W.to(dtype), base.R.to(dtype), bounds)
        return self._cast[dtype]

    def rollout(self, x0: Tensor, U: Tensor) -> Tensor:
        """x_0 … x_H under the plan on the noise-free model, in ``x0``'s dtype (H sequential
        calls of the model's ``rollout_step``).

        Shapes
        ------
        x0 (b, n_x), U (b, H, n_u) -> (b, H + 1, n_x)
        """
        f = self.model.rollout_step(x0.dtype)
        xs = [x0]
        x = x0
        for k in range(self.horizon):
            x = f(x, U[:, k])
            xs.append(x)
        return torch.stack(xs, 1)

    def cost_x(self, X: Tensor) -> Tensor:
        """c(x): the states as the cost sees them (``cost_state``; the identity without it).

        Shapes
        ------
        X (..., n_x) -> (..., n_x)
        """
        if self._cost_hook is None:
            return X
        shape = X.shape
        return self._cost_hook(X.reshape(-1, shape[-1])).view(shape)

    def plan_cost(self, X: Tensor, U: Tensor) -> Tensor:
        """Σ_{k=1}^{H} c(x_k)'W_k c(x_k) + Σ_{k<H} u_k'Ru_k, in ``X``'s dtype (without the
        first stage's state cost, which no plan changes).

        Shapes
        ------
        X (..., H + 1, n_x), U (..., H, n_u) -> (...)
        """
        E = self.cost_x(X[..., 1:, :])
        w = self.weights(X.dtype)
        # stages 1 … H−1 weigh Q, the last P: (E W) ⊙ E summed beats einsum here (MPPI's
        # (B, K, H, n) costs)
        Q, P = w.W[0], w.W[-1]
        stages, last = E[..., :-1, :], E[..., -1, :]
        cost = ((stages @ Q) * stages).sum((-1, -2)) + ((last @ P) * last).sum(-1)
        return cost + ((U @ w.R) * U).sum((-1, -2))

    def clip_plan(self, U: Tensor) -> Tensor:
        """``U`` projected onto the input bounds (:meth:`clip`), in ``U``'s dtype.

        Shapes
        ------
        U (..., n_u) -> (..., n_u)
        """
        if U.dtype == self.dtype:
            return self.clip(U)
        bounds = self.weights(U.dtype).bounds
        if bounds is None:
            return U
        return torch.clamp(U, min=bounds[0], max=bounds[1])

    def _stage_state_cost(self, x: Tensor) -> Tensor:
        e = self.cost_x(x)
        return torch.einsum("...i,ij,...j->...", e, self._Q, e)

    def __repr__(self) -> str:
        return (
            f"MPC(n_x={self.n_x}, n_u={self.n_u}, n_y={self.n_y}, horizon={self.horizon}, "
            f"solver={self.solver!r}, estimator={type(self.estimator).__name__}, "
            f"bounded={self.input_bounds is not None})"
        )
