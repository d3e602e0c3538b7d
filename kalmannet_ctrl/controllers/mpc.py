"""Model predictive control: a finite-horizon plan re-solved at every step from the estimate."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._validation import (
    as_tensor,
    check_covariance,
    check_positive_float,
    check_positive_int,
    shape_str,
)
from ..errors import (
    DimensionError,
    NonFiniteError,
    NotAnEquilibriumError,
    ParameterError,
)
from ..estimators.base import Estimator
from ..models.base import SystemModel, one_pass_jacobians
from ..models.cost import QuadraticCost
from ..models.linear import LinearGaussianModel
from ..models.linearize import linearize
from ._qp import solve_box_qp
from .base import (
    as_action,
    as_observation_batch,
    check_estimator,
    episode_start_mask,
    estimator_mean,
    parse_input_bounds,
    resume_state,
)
from .lqr import LQR

__all__ = ["MPC", "MPCSolution", "MPCState"]

_SOLVERS = ("auto", "qp", "ltv", "mppi")
#: Step lengths the "ltv" line search tries (besides keeping the previous plan).
_LINE_SEARCH_STEPS = (1.0, 0.5, 0.25)


class MPCState(NamedTuple):
    """Recurrent state of an :class:`MPC` controller.

    Attributes
    ----------
    estimator_state :
        The estimator's state after the last measurement.
    u_prev : Tensor, (B, n_u)
        The action returned at the last call: the input the plant received, used by the
        estimator's next prediction. Zero for rows that start an episode.
    plan : Tensor, (B, H, n_u)
        The plan u_t … u_{t+H−1} behind the last action (its first entry is ``u_prev``, except
        for MPPI with ``deterministic=False``, which returns a sampled action). Shifted by one
        step, it is the warm start of the next call. The zero plan (projected onto the bounds)
        for rows that start an episode.
    trajectory : Tensor, (B, H + 1, n_x), or None
        "ltv" only: the states x_0 … x_H predicted along ``plan`` (by the linearized model
        unless ``line_search``), whose shift gives the next linearization points; None for the
        other solvers and before the first step.
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
        QP iterations (face problems solved, summed over the "ltv" iterations) of the slowest
        row for "qp" and "ltv"; MPPI updates for "mppi".
    """

    plan: Tensor
    states: Tensor
    cost: Tensor
    iterations: int


class MPC:
    """Model predictive control with output feedback, batched over B plants.

    At step t the estimator predicts with u_{t−1} (the previous, clipped action) and updates with
    the measurement y_t; from x̂_{t|t} the controller plans H inputs minimizing

        J = Σ_{k=0}^{H−1} (x_k' Q x_k + u_k' R u_k) + x_H' P x_H,   x_0 = x̂_{t|t},
        x_{k+1} = f(x_k, u_k),   low <= u_k <= high,

    on the (noise-free) model and applies u_0; the rest of the plan, shifted, warm-starts the
    next step. With ``cost_state`` the state enters the cost as c(x_k) instead of x_k.

    Solvers:

    - ``"qp"`` (default for a :class:`LinearGaussianModel`): the problem is condensed to a
      box-constrained QP in the H·n_u inputs, min ½ U'HU + U'G x_0, with H, its Cholesky factor
      and H⁻¹G computed once at construction. Without an active bound the plan is −H⁻¹G x_0
      (one matrix product); otherwise an exact batched active-set solver (primal-dual, then
      primal active set; ``_qp.py``) takes over, warm-started from the shifted plan. With
      ``terminal_cost="lqr"`` and inactive bounds the action is exactly the LQR action.
    - ``"ltv"`` (default for a nonlinear model): sequential linearization, the real-time
      iteration of Diehl et al. (2005) in multiple-shooting form. f is linearized at the
      previous plan and its predicted states, shifted by one step and started from x̂_{t|t}
      (all H Jacobians in one batched call; no sequential rollout: the defects
      f(x̄_k, ū_k) − x̄_{k+1} enter the linearized dynamics), and the condensed box-QP gives the
      correction (Gauss-Newton on the cost); repeated ``iterations`` times. Rows without a
      previous plan (first step, episode start) are linearized along the rollout of the zero
      plan. With ``line_search`` the step length is chosen by the cost of the plans rolled out
      on the model. A local method: it follows the gradient from the warm start (e.g. it does
      not find a pendulum's swing-up from hanging down, a stationary point; use "mppi"). On a
      linear model without ``cost_state`` one iteration gives the "qp" answer.
    - ``"mppi"``: model predictive path integral control (Williams et al., 2017). ``samples``
      input sequences are drawn around the mean plan (Gaussian, std ``noise_std``, clipped to
      the bounds; the mean plan itself is one of them), rolled out on the model, and averaged
      with weights exp(−J / ``temperature``); ``iterations`` updates per step. The action is
      the first input of the mean plan (``deterministic=True``) or of one sequence drawn with
      those weights.

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
    solver : {"auto", "qp", "ltv", "mppi"}
        See above; "auto" picks "qp" for a LinearGaussianModel and "ltv" otherwise.
    cost_state : callable, optional
        ``cost_state(x) -> c(x)``, (M, n_x) -> (M, n_x) on tensors (NumPy results are
        accepted, so an env's ``cost_state`` works as it is): the state as the cost sees it,
        e.g. with an angle wrapped to [−π, π). "ltv" treats it as a translation (its Jacobian
        as the identity), which holds for wrappings. Not used by "qp".
    iterations : int, optional
        Linearizations ("ltv", default 1) or MPPI updates ("mppi", default 1) per step.
    line_search : bool
        "ltv" only: choose the step length 1, 1/2 or 1/4 (or keep the previous plan) by the
        cost of the plans rolled out on the model (default False: one more rollout, H
        sequential calls of f, per iteration).
    samples : int
        MPPI: number of sampled input sequences K >= 2 (default 256).
    temperature : float
        MPPI: λ > 0, in units of the cost J (default 1).
    noise_std : float or array-like (n_u,), optional
        MPPI: standard deviation of the input perturbations. Default: a quarter of the bound
        width high − low where it is finite, 1 elsewhere.
    seed : int, optional
        MPPI: seed of a ``torch.Generator`` created for this controller.
    generator : torch.Generator, optional
        MPPI: the source of the sampling noise (exclusive with ``seed``). Default: torch's
        global generator.
    max_qp_iterations : int, optional
        Cap on the QP iterations per solve (default 50 + 4 H n_u); a RuntimeWarning is issued
        and the best feasible plan used when it is reached.
    rollout_dtype : torch.dtype, optional
        MPPI: the dtype of the sampled rollouts and their costs (default: the model's).
        ``torch.float32`` halves the arithmetic of MPPI's inner loop (the network layers of a
        :class:`~kalmannet_ctrl.models.ResidualModel` take about half the time); the sample
        weights depend on cost differences far above float32's resolution. The plan and the
        action stay in the model's dtype. The model's ``f`` must compute in that dtype (the
        library's pendulum and cart-pole models and ResidualModel do; a LinearGaussianModel,
        whose matrices are float64, does not), else ParameterError.

    Attributes
    ----------
    model, cost, horizon, estimator, solver, cost_state, iterations, line_search, samples,
    temperature, noise_std, generator, rollout_dtype
    input_bounds : tuple of Tensor (n_u,), or None
    terminal_weight : Tensor, (n_x, n_x)
        P.

    Shapes
    ------
    predict: observation (n_y,) or (B, n_y) -> action (n_u,) or (B, n_u);
    step: y (B, n_y) -> u (B, n_u); solve: x (B, n_x) -> plan (B, H, n_u)

    Raises
    ------
    TypeError
        If ``model`` is not a SystemModel, ``cost`` not a QuadraticCost, ``estimator`` lacks
        the Estimator protocol, ``cost_state`` is not callable, or ``solver="qp"`` is asked for
        a nonlinear model.
    DimensionError
        If the model has no input, or the cost, the estimator, the bounds, the terminal cost or
        ``cost_state``'s output do not match the model's dimensions.
    ParameterError
        If ``horizon`` < 1, the solver is unknown, or a solver option is out of range.
    ValueError
        If the bounds have low > high or NaN, or ``cost_state`` is given to "qp".
    NotPositiveDefiniteError, NotSymmetricError
        If ``terminal_cost`` is not symmetric positive semi-definite.
    NotAnEquilibriumError
        If ``terminal_cost="lqr"`` on a nonlinear model whose origin is not an equilibrium.
    RiccatiError
        If ``terminal_cost="lqr"`` and the (linearized) model is not stabilizable.

    Notes
    -----
    The condensed QP of "qp" and the terminal weight are computed from the model when the
    controller is built: rebuild it after changing the model's tensors. Condensing suits
    moderate horizons; for a strongly unstable A and a long horizon the QP becomes badly
    conditioned. Planning runs under ``torch.no_grad()``: the action is not differentiable.
    :meth:`predict` runs entirely under ``torch.inference_mode()`` (the per-step latency
    matters there), so the state it returns holds inference tensors: give it back to
    :meth:`predict`, not to :meth:`step` with a trainable estimator.
    MPPI draws its noise from the controller's generator, so a controller built with ``seed``
    gives the same actions run after run only when rebuilt (or its ``generator`` reseeded) for
    each run.

    Examples
    --------
    >>> import numpy as np
    >>> from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost
    >>> m = LinearGaussianModel(A=[[1.1]], B=[[1.0]], C=[[1.0]], process_cov=[[0.1]],
    ...                         measurement_cov=[[0.5]])
    >>> cost = QuadraticCost(Q=[[1.0]], R=[[0.1]])
    >>> mpc = MPC(m, cost, horizon=10, input_bounds=(-0.5, 0.5))
    >>> action, state = mpc.predict(np.array([0.3], dtype=np.float32))
    >>> action.shape, action.dtype, tuple(state.plan.shape)
    ((1,), dtype('float32'), (1, 10, 1))
    >>> mpc.solve([[5.0]]).plan[0, :3, 0].tolist()  # the open-loop plan from x = 5
    [-0.5, -0.5, -0.5]
    """

    def __init__(
        self,
        model: SystemModel,
        cost: QuadraticCost,
        horizon: int,
        *,
        input_bounds: tuple[Any, Any] | None = None,
        estimator: Estimator | None = None,
        terminal_cost: Any = "lqr",
        solver: str = "auto",
        cost_state: Callable[[Tensor], Any] | None = None,
        iterations: int | None = None,
        line_search: bool = False,
        samples: int = 256,
        temperature: float = 1.0,
        noise_std: Any = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        max_qp_iterations: int | None = None,
        rollout_dtype: torch.dtype | None = None,
    ) -> None:
        _check_model_and_cost(model, cost)
        self.model = model
        self.cost = cost
        self.horizon = check_positive_int(horizon, "horizon")
        self.solver = _resolve_solver(solver, model)
        self.estimator = check_estimator(estimator, model)
        self.input_bounds = parse_input_bounds(input_bounds, model)
        self.cost_state = cost_state
        self._cost_hook = (
            None if cost_state is None else _check_cost_state(cost_state, model, self.solver)
        )
        self.iterations = 1 if iterations is None else check_positive_int(iterations, "iterations")
        if not isinstance(line_search, bool):
            raise TypeError(f"line_search: expected a bool, found {type(line_search).__name__}")
        self.line_search = line_search
        self.samples = check_positive_int(samples, "samples", minimum=2)
        self.temperature = check_positive_float(temperature, "temperature")
        self.max_qp_iterations = (
            None
            if max_qp_iterations is None
            else check_positive_int(max_qp_iterations, "max_qp_iterations")
        )
        if seed is not None and generator is not None:
            raise ValueError("seed, generator: pass one of them, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator: expected a torch.Generator, found {type(generator).__name__}"
            )
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise TypeError(f"seed: expected an integer, found {type(seed).__name__}")
            generator = torch.Generator(device=model.device).manual_seed(int(seed))
        self.generator = generator

        dtype, device = model.dtype, model.device
        to = dict(dtype=dtype, device=device)
        H, n, m = self.horizon, model.n_x, model.n_u
        self._Q = cost.Q.detach().to(**to)
        self._R = cost.R.detach().to(**to)
        self.terminal_weight = _terminal_weight(terminal_cost, model, cost)
        # stage weights of x_1 … x_H, and R on the stacked inputs U = (u_0, …, u_{H−1})
        self._W = torch.cat([self._Q.expand(H - 1, n, n), self.terminal_weight[None]], 0)
        self._R_bar = torch.block_diag(*([self._R] * H))
        self.noise_std = _noise_std(noise_std, self.input_bounds, m, to)
        if self.input_bounds is None:
            self._lo = self._hi = None
            self._initial_plan = torch.zeros(H, m, **to)
        else:
            low, high = self.input_bounds
            self._lo, self._hi = low.repeat(H), high.repeat(H)
            self._initial_plan = torch.zeros(H, m, **to).clamp(low, high)
        self.rollout_dtype = _check_rollout_dtype(rollout_dtype, model, self.solver)
        self._cast: dict[torch.dtype, _Weights] = {
            dtype: _Weights(self._W, self._R, self.input_bounds, self.noise_std)
        }
        self._joint_jacobians = one_pass_jacobians(model)
        if self.solver == "qp":
            self._condense_linear()

    # -- properties ------------------------------------------------------------------------------
    @property
    def n_x(self) -> int:
        return self.model.n_x

    @property
    def n_u(self) -> int:
        return self.model.n_u

    @property
    def n_y(self) -> int:
        return self.model.n_y

    # -- the Controller protocol -----------------------------------------------------------------
    def init(self, batch_size: int) -> MPCState:
        """The state before the first measurement: the estimator's prior, u_prev = 0, the zero
        plan (projected onto the bounds).

        Shapes
        ------
        -> u_prev (B, n_u), plan (B, H, n_u)
        """
        est_state = self.estimator.init(batch_size)
        u_prev = torch.zeros(batch_size, self.n_u, dtype=self.model.dtype, device=self.model.device)
        plan = self._initial_plan.expand(batch_size, -1, -1).clone()
        return MPCState(est_state, u_prev, plan)

    def estimate(self, state: MPCState) -> Tensor:
        """The state estimate x̂_{t|t} behind the last action: the estimator state's ``mean``.

        Shapes
        ------
        -> (B, n_x)
        """
        return estimator_mean(state, MPCState)

    def step(
        self,
        state: MPCState | None,
        y: Any,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Tensor, MPCState]:
        """One control step on tensors.

        Parameters
        ----------
        state : MPCState or None
            From :meth:`init` or the previous step; ``None`` starts a new batch.
        y : array-like or Tensor, (B, n_y)
            Measurements y_t; a NaN in a row means no measurement (the estimator only predicts).
        episode_start : array-like of bool, (B,), optional
            Rows reset (estimator prior, u_prev = 0, zero plan) before this step.
        deterministic : bool
            MPPI only: the mean plan's first input (True) or a sampled one (False).

        Returns
        -------
        u : Tensor, (B, n_u)
            The action u_t (within the bounds), in the model's dtype; not differentiable.
        state : MPCState

        Shapes
        ------
        y : (B, n_y) -> u (B, n_u)
        """
        y = as_tensor(y, "y", dtype=self.model.dtype, device=self.model.device)
        if y.dim() != 2 or y.shape[1] != self.n_y:
            raise DimensionError(
                f"y: expected shape (B, {self.n_y}), found {shape_str(tuple(y.shape))}"
            )
        if bool(torch.isinf(y).any()):
            raise NonFiniteError(
                f"y: expected finite values (NaN marks a missing measurement), found "
                f"{int(torch.isinf(y).sum())} infinite entries"
            )
        mask = episode_start_mask(episode_start, y.shape[0], device=self.model.device)
        return self._step(state, y, mask, deterministic)

    def predict(
        self,
        observation: Any,
        state: MPCState | None = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, MPCState]:
        """The action for the measurement y_t, on the Controller protocol.

        Parameters
        ----------
        observation : array-like or Tensor, (n_y,) or (B, n_y)
            The measurements (NumPy float32 from a Gymnasium env, SB3 VecEnv or tensors). A NaN
            in a row means that measurement is missing: the estimator predicts only.
        state : MPCState, optional
            Returned by the previous call; ``None`` starts a new batch.
        episode_start : array-like of bool, (B,), optional
            Rows that begin a new episode: estimator reset, u_prev = 0, zero plan.
        deterministic : bool
            MPPI only: the mean plan's first input (True) or a sampled one (False).

        Returns
        -------
        action : np.ndarray, (n_u,) or (B, n_u)
            u_t, within ``input_bounds``; the observation's dtype when it is a NumPy floating
            array, float64 otherwise.
        state : MPCState

        Raises
        ------
        DimensionError
            If the observation is not (n_y,) or (B, n_y).
        BatchSizeError
            If B differs from the previous call's without a reset of every row, or
            ``episode_start`` has the wrong length.
        NonFiniteError
            If the observation holds infinite values.
        """
        obs = as_observation_batch(
            observation,
            self.n_y,
            dtype=self.model.dtype,
            device=self.model.device,
            allow_nan_rows=True,
        )
        mask = episode_start_mask(episode_start, obs.value.shape[0], device=self.model.device)
        with torch.inference_mode():  # ~10 % less overhead per tensor operation than no_grad
            u, new_state = self._step(state, obs.value, mask, deterministic)
        return as_action(u, obs.single, obs.np_dtype), new_state

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
            MPPI: the noise source for this call (default: the controller's).

        Returns
        -------
        MPCSolution
            plan (B, H, n_u), states (B, H + 1, n_x), cost (B,), iterations.

        Shapes
        ------
        x : (B, n_x), warm_start : (B, H, n_u) -> plan (B, H, n_u)
        """
        dtype, device = self.model.dtype, self.model.device
        x = as_tensor(x, "x", dtype=dtype, device=device)
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
            warm = self._initial_plan.expand(B, -1, -1)
        else:
            warm = as_tensor(warm_start, "warm_start", dtype=dtype, device=device)
            if tuple(warm.shape) != (B, self.horizon, self.n_u):
                raise DimensionError(
                    f"warm_start: expected shape ({B}, {self.horizon}, {self.n_u}), "
                    f"found {shape_str(tuple(warm.shape))}"
                )
            if not bool(torch.isfinite(warm).all()):
                raise NonFiniteError("warm_start: expected finite values, found NaN/inf")
        with torch.no_grad():
            plan, _, _, iterations = self._plan(x, warm, None, True, generator or self.generator)
            states = self._rollout(x, plan)
            cost = self._plan_cost(states, plan) + self._stage_state_cost(states[:, 0])
        return MPCSolution(plan, states, cost, iterations)

    def __repr__(self) -> str:
        return (
            f"MPC(n_x={self.n_x}, n_u={self.n_u}, n_y={self.n_y}, horizon={self.horizon}, "
            f"solver={self.solver!r}, estimator={type(self.estimator).__name__}, "
            f"bounded={self.input_bounds is not None})"
        )

    # -- one step --------------------------------------------------------------------------------
    def _reset_rows(self, state: MPCState, mask: Tensor) -> MPCState:
        est_state = self.estimator.reset(state.estimator_state, mask)
        u_prev = torch.where(mask[:, None], torch.zeros_like(state.u_prev), state.u_prev)
        plan = torch.where(mask[:, None, None], self._initial_plan, state.plan)
        return MPCState(est_state, u_prev, plan, state.trajectory)

    def _step(
        self, state: MPCState | None, y: Tensor, mask: Tensor | None, deterministic: bool
    ) -> tuple[Tensor, MPCState]:
        B = y.shape[0]
        state = resume_state(state, MPCState, B, mask, self.init, self._reset_rows)
        xhat, est_state = self.estimator.step(state.estimator_state, y, state.u_prev)
        with torch.no_grad():
            xhat = xhat.detach()
            # the previous plan shifted by one step, its last input repeated
            warm = torch.cat([state.plan[:, 1:], state.plan[:, -1:]], 1)
            traj = None
            if self.solver == "ltv":
                traj = self._shift_trajectory(xhat, warm, state.trajectory, mask)
            plan, u, traj, _ = self._plan(xhat, warm, traj, deterministic, self.generator)
        return u, MPCState(est_state, u, plan, traj)

    def _shift_trajectory(
        self, xhat: Tensor, warm: Tensor, previous: Tensor | None, fresh: Tensor | None
    ) -> Tensor:
        """Linearization points for "ltv": the previous prediction shifted, from x̂.

        Rows without one (first step, episode start) roll the warm plan out on the model.
        """
        if previous is None or previous.shape[0] != xhat.shape[0]:
            return self._rollout(xhat, warm)
        traj = torch.cat([xhat.unsqueeze(1), previous[:, 2:], previous[:, -1:]], 1)
        if fresh is not None:
            traj = traj.clone()
            traj[fresh] = self._rollout(xhat[fresh], warm[fresh])
        return traj

    def _plan(
        self,
        x0: Tensor,
        warm: Tensor,
        traj: Tensor | None,
        deterministic: bool,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor, Tensor | None, int]:
        """(plan (B, H, n_u), action (B, n_u), trajectory, iterations) from x0 (B, n_x) and the
        warm start (B, H, n_u) (and, for "ltv", the linearization points (B, H + 1, n_x))."""
        if self.solver == "qp":
            plan, iterations = self._plan_qp(x0, warm)
            return plan, plan[:, 0], None, iterations
        if self.solver == "ltv":
            if traj is None:
                traj = self._rollout(x0, warm)
            plan, traj, iterations = self._plan_ltv(x0, warm, traj)
            return plan, plan[:, 0], traj, iterations
        plan, u, iterations = self._plan_mppi(x0, warm, deterministic, generator)
        return plan, u, None, iterations

    # -- linear model: the condensed QP ----------------------------------------------------------
    def _condense_linear(self) -> None:
        """Precompute X = Φ x_0 + Γ U (x_1 … x_H), the QP's H = Γ'WΓ + R̄ and G = Γ'WΦ."""
        model = self.model
        assert isinstance(model, LinearGaussianModel)
        A, Bm = model.A.detach(), model.B.detach()
        Hh, n, m = self.horizon, self.n_x, self.n_u
        powers = [A]
        for _ in range(Hh - 1):
            powers.append(A @ powers[-1])
        Phi = torch.stack(powers, 0)  # (H, n, n): A^1 … A^H
        AkB = torch.stack([Bm] + [P @ Bm for P in powers[:-1]], 0)  # A^k B, k = 0 … H−1
        # x_{k+1} = A^{k+1} x_0 + Σ_{j<=k} A^{k−j} B u_j: block (k, j) of Γ is A^{k−j} B
        lag = torch.arange(Hh, device=A.device)[:, None] - torch.arange(Hh, device=A.device)
        Gamma = AkB[lag.clamp_min(0)] * (lag >= 0)[:, :, None, None].to(A.dtype)  # (H, H, n, m)
        Gamma = Gamma.permute(0, 2, 1, 3).reshape(Hh * n, Hh * m)
        W = torch.block_diag(*self._W.unbind(0))
        WG = W @ Gamma
        hess = Gamma.mT @ WG + self._R_bar
        hess = 0.5 * (hess + hess.mT)
        L = torch.linalg.cholesky(hess)
        G = WG.mT @ Phi.reshape(Hh * n, n)  # Γ'WΦ
        self._Phi = Phi.reshape(Hh * n, n)
        self._Gamma = Gamma
        self._hess = hess
        self._G = G
        self._gain = torch.cholesky_solve(G, L)  # H⁻¹G: the unconstrained plan is −H⁻¹G x_0

    def _plan_qp(self, x0: Tensor, warm: Tensor) -> tuple[Tensor, int]:
        B = x0.shape[0]
        U = -(x0 @ self._gain.mT)
        iterations = 0
        if self._lo is not None:
            res = solve_box_qp(
                self._hess,
                x0 @ self._G.mT,
                self._lo,
                self._hi,
                start=warm.reshape(B, -1),
                unconstrained=U,
                max_iterations=self.max_qp_iterations,
            )
            self._check_converged(res.converged)
            U, iterations = res.solution, res.iterations
        return U.reshape(B, self.horizon, self.n_u), iterations

    # -- nonlinear model: sequential linearization -----------------------------------------------
    def _plan_ltv(self, x0: Tensor, U: Tensor, X: Tensor) -> tuple[Tensor, Tensor, int]:
        """Gauss-Newton SQP iterations in multiple-shooting form.

        Linearization points X (B, H + 1, n_x) (X[:, 0] = x_0) need not follow the model: the
        defects f(x̄_k, ū_k) − x̄_{k+1} enter the linearized dynamics, so one batched evaluation
        of f and its Jacobians at the H points replaces a sequential rollout.
        """
        B, Hh, m = U.shape
        n = self.n_x
        U = self._clip_plan(U)
        total = 0
        for _ in range(self.iterations):
            A, Bm, F = self._linearize(X[:, :-1].reshape(B * Hh, n), U.reshape(B * Hh, m))
            defects = F.view(B, Hh, n) - X[:, 1:]
            S, free = _condense(A.view(B, Hh, n, n), Bm.view(B, Hh, n, m), defects)
            # residual of the cost at the linear prediction with δU = 0 (cost_state taken as a
            # translation: its Jacobian is the identity)
            E = self._cost_x(X[:, 1:]) + free
            WS = self._W @ S  # (B, H, n, N)
            hess = torch.einsum("bhin,bhim->bnm", S, WS) + self._R_bar
            hess = 0.5 * (hess + hess.mT)
            flat = U.reshape(B, Hh * m)
            grad = torch.einsum("bhin,bhi->bn", WS, E) + flat @ self._R_bar
            if self._lo is None:
                L = torch.linalg.cholesky(hess)
                dU = -torch.cholesky_solve(grad.unsqueeze(-1), L).squeeze(-1)
            else:
                res = solve_box_qp(
                    hess,
                    grad,
                    self._lo - flat,
                    self._hi - flat,
                    max_iterations=self.max_qp_iterations,
                )
                self._check_converged(res.converged)
                dU, total = res.solution, total + res.iterations
            if self.line_search:
                U, X = self._line_search(x0, U, dU.view(B, Hh, m))
            else:
                # the new linearization points: the linearized model's prediction
                dX = (S @ dU[:, None, :, None]).squeeze(-1) + free  # (B, H, n)
                X = torch.cat([X[:, :1], X[:, 1:] + dX], 1)
                U = self._clip_plan(U + dU.view(B, Hh, m))
        return U, X, total

    def _line_search(self, x0: Tensor, U: Tensor, dU: Tensor) -> tuple[Tensor, Tensor]:
        """The best of U + α dU (α in _LINE_SEARCH_STEPS, and 0) by the rolled-out cost.

        Returns the plan (B, H, n_u) and its rollout (B, H + 1, n_x) on the model.
        """
        B, Hh, m = U.shape
        steps = torch.tensor((*_LINE_SEARCH_STEPS, 0.0), dtype=U.dtype, device=U.device)
        C = steps.numel()
        cand = self._clip_plan(U.unsqueeze(1) + steps.view(1, C, 1, 1) * dU.unsqueeze(1))
        Xc = self._rollout(
            x0.unsqueeze(1).expand(B, C, -1).reshape(B * C, -1), cand.reshape(B * C, Hh, m)
        ).view(B, C, Hh + 1, -1)
        best = _finite(self._plan_cost(Xc, cand)).argmin(1)
        rows = torch.arange(B, device=U.device)
        return cand[rows, best], Xc[rows, best]

    def _linearize(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(∂f/∂x (M, n_x, n_x), ∂f/∂u (M, n_x, n_u), f (M, n_x)) at M points.

        A linear model gives A and B; a model with its own one-pass ``f_and_jacobians`` (exact
        closed forms, e.g. the library's pendulum and cart-pole, or a residual network's) gives
        that. Otherwise one forward and one backward pass of f on the points repeated n_x
        times, the i-th copy seeded with e_i (the rows of f are independent): exact, and faster
        than ``torch.func.jacrev`` or two Jacobian calls. A model whose f is not differentiable
        by torch falls back to its ``f_jacobian`` and ``input_jacobian``.
        """
        model = self.model
        if isinstance(model, LinearGaussianModel):
            M = x.shape[0]
            return model.A.expand(M, -1, -1), model.B.expand(M, -1, -1), model.f(x, u)
        if self._joint_jacobians is not None:
            F, A, Bm = self._joint_jacobians(x, u)
            return A, Bm, F
        M, n = x.shape
        xr = x.repeat(n, 1).requires_grad_(True)
        ur = u.repeat(n, 1).requires_grad_(True)
        with torch.enable_grad():
            out = model.f(xr, ur)
        if not out.requires_grad:
            return model.f_jacobian(x, u), model.input_jacobian(x, u), out[:M]
        seed = torch.eye(n, dtype=x.dtype, device=x.device).repeat_interleave(M, 0)
        gx, gu = torch.autograd.grad(out, (xr, ur), seed, allow_unused=True)
        gx = torch.zeros_like(xr) if gx is None else gx
        gu = torch.zeros_like(ur) if gu is None else gu
        return (
            gx.view(n, M, n).transpose(0, 1),
            gu.view(n, M, -1).transpose(0, 1),
            out[:M].detach(),
        )

    # -- MPPI ------------------------------------------------------------------------------------
    def _plan_mppi(
        self, x0: Tensor, mean: Tensor, deterministic: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, int]:
        B, Hh, m = mean.shape
        K = self.samples
        dtype = self.model.dtype
        rdtype = dtype if self.rollout_dtype is None else self.rollout_dtype
        mean = self._clip_plan(mean.to(rdtype))
        noise_std = self._weights(rdtype).noise_std
        x_rep = x0.to(rdtype).unsqueeze(1).expand(B, K, -1).reshape(B * K, -1)
        for _ in range(self.iterations):
            noise = torch.randn(B, K, Hh, m, dtype=rdtype, device=mean.device, generator=generator)
            noise[:, 0] = 0.0  # the mean plan is one of the samples
            U = self._clip_plan(torch.addcmul(mean.unsqueeze(1), noise, noise_std))
            X = self._rollout(x_rep, U.view(B * K, Hh, m)).view(B, K, Hh + 1, -1)
            costs = _finite(self._plan_cost(X, U))  # (B, K)
            weights = torch.softmax(-costs / self.temperature, dim=1)
            mean = torch.einsum("bk,bkhm->bhm", weights, U)
        if deterministic:
            u = mean[:, 0]
        else:
            pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)
            u = U[torch.arange(B, device=U.device), pick, 0]
        return mean.to(dtype), u.to(dtype), self.iterations

    def _weights(self, dtype: torch.dtype) -> _Weights:
        """The cost weights, bounds and MPPI noise scale in ``dtype`` (cached)."""
        if dtype not in self._cast:
            base = self._cast[self.model.dtype]
            bounds = None if base.bounds is None else tuple(b.to(dtype) for b in base.bounds)
            self._cast[dtype] = _Weights(
                base.W.to(dtype), base.R.to(dtype), bounds, base.noise_std.to(dtype)
            )
        return self._cast[dtype]

    # -- shared pieces ---------------------------------------------------------------------------
    def _rollout(self, x0: Tensor, U: Tensor) -> Tensor:
        """x_0 … x_H under the plan on the noise-free model.

        Shapes: x0 (b, n_x), U (b, H, n_u) -> (b, H + 1, n_x).
        """
        if self.solver == "qp":
            X = x0 @ self._Phi.mT + U.reshape(U.shape[0], -1) @ self._Gamma.mT
            return torch.cat([x0.unsqueeze(1), X.view(x0.shape[0], self.horizon, -1)], 1)
        f = self.model.rollout_step(x0.dtype)
        xs = [x0]
        x = x0
        for k in range(self.horizon):
            x = f(x, U[:, k])
            xs.append(x)
        return torch.stack(xs, 1)

    def _cost_x(self, X: Tensor) -> Tensor:
        """c(x) on (..., n_x)."""
        if self._cost_hook is None:
            return X
        shape = X.shape
        return self._cost_hook(X.reshape(-1, shape[-1])).view(shape)

    def _plan_cost(self, X: Tensor, U: Tensor) -> Tensor:
        """Σ_{k=1}^{H} c(x_k)'W_k c(x_k) + Σ_{k<H} u_k'Ru_k.

        Shapes: X (..., H + 1, n_x), U (..., H, n_u) -> (...).
        """
        E = self._cost_x(X[..., 1:, :])
        w = self._weights(X.dtype)
        # stages 1 … H−1 weigh Q, the last P: (E W) ⊙ E summed beats einsum here (MPPI's
        # (B, K, H, n) costs)
        Q, P = w.W[0], w.W[-1]
        stages, last = E[..., :-1, :], E[..., -1, :]
        cost = ((stages @ Q) * stages).sum((-1, -2)) + ((last @ P) * last).sum(-1)
        return cost + ((U @ w.R) * U).sum((-1, -2))

    def _stage_state_cost(self, x: Tensor) -> Tensor:
        e = self._cost_x(x)
        return torch.einsum("...i,ij,...j->...", e, self._Q, e)

    def _clip_plan(self, U: Tensor) -> Tensor:
        bounds = self._weights(U.dtype).bounds
        if bounds is None:
            return U
        return torch.minimum(torch.maximum(U, bounds[0]), bounds[1])

    def _check_converged(self, converged: Tensor) -> None:
        if not bool(converged.all()):
            warnings.warn(
                f"MPC: the box-QP solver reached max_qp_iterations in "
                f"{int((~converged).sum())} of {converged.numel()} rows; their plans are the "
                "best feasible ones found, not the optimum. Raise max_qp_iterations.",
                RuntimeWarning,
                stacklevel=4,
            )


# -- helpers ---------------------------------------------------------------------------------------
class _Weights(NamedTuple):
    """Stage weights W (H, n_x, n_x), R (n_u, n_u), bounds and MPPI noise std in one dtype."""

    W: Tensor
    R: Tensor
    bounds: tuple[Tensor, Tensor] | None
    noise_std: Tensor


def _check_rollout_dtype(dtype: Any, model: SystemModel, solver: str) -> torch.dtype | None:
    """``rollout_dtype`` checked: a floating dtype the model's f computes in, for "mppi"."""
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"rollout_dtype: expected a floating torch.dtype, found {dtype!r}")
    if solver != "mppi":
        raise ParameterError(
            f"rollout_dtype: only solver='mppi' rolls out samples, found solver={solver!r}"
        )
    x = torch.zeros(1, model.n_x, dtype=dtype, device=model.device)
    u = torch.zeros(1, model.n_u, dtype=dtype, device=model.device)
    try:
        with torch.no_grad():
            out_dtype = model.f(x, u).dtype
    except RuntimeError as exc:
        raise ParameterError(
            f"rollout_dtype: the model's f fails on {dtype} inputs ({exc}); use the model's "
            f"dtype {model.dtype}"
        ) from exc
    if out_dtype != dtype:
        raise ParameterError(
            f"rollout_dtype: the model's f returns {out_dtype} for {dtype} inputs (it holds "
            f"{model.dtype} tensors); use the model's dtype"
        )
    return dtype


def _condense(A: Tensor, Bm: Tensor, defects: Tensor) -> tuple[Tensor, Tensor]:
    """The linearized prediction δx_{k+1} = A_k δx_k + B_k δu_k + d_k, δx_0 = 0, condensed.

    Returns S and c with δx_{k+1} = Σ_{j<=k} S[k, :, j] δu_j + c_k. The recursion is one
    block-bidiagonal unit lower-triangular system (I − 𝒜) δX = ℬ δU + d, solved by one batched
    forward substitution (fewer, larger operations than a loop over k).

    Shapes
    ------
    A (b, H, n, n), Bm (b, H, n, m), defects (b, H, n) -> S (b, H, n, H·m), c (b, H, n)
    """
    b, Hh, n, m = Bm.shape
    N = Hh * m
    k = torch.arange(Hh, device=A.device)
    # (advanced indices on two separated dimensions put the indexed dimension first)
    lower = A.new_zeros(b, Hh, n, Hh, n)
    lower[:, k[1:], :, k[:-1], :] = -A[:, 1:].transpose(0, 1)  # −A_k at block (k, k − 1)
    rhs = A.new_zeros(b, Hh, n, N + 1)  # [ℬ | d]
    rhs[..., :N].view(b, Hh, n, Hh, m)[:, k, :, k, :] = Bm.transpose(0, 1)
    rhs[..., N] = defects
    out = torch.linalg.solve_triangular(
        lower.view(b, Hh * n, Hh * n), rhs.view(b, Hh * n, N + 1), upper=False, unitriangular=True
    ).view(b, Hh, n, N + 1)
    return out[..., :N], out[..., N]


def _finite(costs: Tensor) -> Tensor:
    """Costs with NaN/inf (diverged rollouts) replaced by the largest float."""
    return torch.where(torch.isfinite(costs), costs, torch.finfo(costs.dtype).max)


class _NumpyHook:
    """A ``cost_state`` written for NumPy arrays (like an env's), called on arrays."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, x: Tensor) -> Tensor:
        out = np.asarray(self.fn(x.detach().cpu().numpy()))
        return torch.as_tensor(out, device=x.device).to(dtype=x.dtype)


def _check_model_and_cost(model: Any, cost: Any) -> None:
    if not isinstance(model, SystemModel):
        raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
    if not isinstance(cost, QuadraticCost):
        raise TypeError(f"cost: expected a QuadraticCost(Q, R), found {type(cost).__name__}")
    if model.n_u == 0:
        raise DimensionError("model: MPC needs a model with inputs (n_u >= 1), found n_u = 0")
    if cost.n_x != model.n_x:
        raise DimensionError(
            f"cost: expected Q of shape ({model.n_x}, {model.n_x}) to match the model's n_x, "
            f"found {shape_str(tuple(cost.Q.shape))}"
        )
    if cost.n_u != model.n_u:
        raise DimensionError(
            f"cost: expected R of shape ({model.n_u}, {model.n_u}) to match the model's n_u, "
            f"found {shape_str(tuple(cost.R.shape))}"
        )


def _resolve_solver(solver: Any, model: SystemModel) -> str:
    if not isinstance(solver, str) or solver not in _SOLVERS:
        raise ParameterError(f"solver: expected one of {list(_SOLVERS)}, found {solver!r}")
    if solver == "auto":
        return "qp" if isinstance(model, LinearGaussianModel) else "ltv"
    if solver == "qp" and not isinstance(model, LinearGaussianModel):
        raise TypeError(
            f"model: solver='qp' needs a LinearGaussianModel, found {type(model).__name__}; "
            "use solver='ltv' or 'mppi', or linearize the model first "
            "(kalmannet_ctrl.models.linearize)"
        )
    return solver


def _check_cost_state(fn: Any, model: SystemModel, solver: str) -> Callable[[Tensor], Tensor]:
    """The hook as a function of tensors (NumPy-based hooks get arrays), after a probe call."""
    if not callable(fn):
        raise TypeError(f"cost_state: expected a callable x -> c(x), found {type(fn).__name__}")
    if solver == "qp":
        raise ValueError(
            "cost_state: not supported by solver='qp' (the condensed QP is quadratic in x); "
            "use solver='ltv' or 'mppi'"
        )
    probe = model.x0_mean.detach().expand(2, model.n_x).clone()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy code may warn about converting a tensor
        out = fn(probe)
    hook: Callable[[Tensor], Tensor] = fn
    if not isinstance(out, Tensor):
        hook = _NumpyHook(fn)
        out = hook(probe)
    if tuple(out.shape) != (2, model.n_x):
        raise DimensionError(
            f"cost_state: expected an output of shape (M, {model.n_x}) for an input "
            f"(M, {model.n_x}), found {shape_str(tuple(out.shape))} for M = 2"
        )
    return hook


def _terminal_weight(terminal_cost: Any, model: SystemModel, cost: QuadraticCost) -> Tensor:
    to = dict(dtype=model.dtype, device=model.device)
    n = model.n_x
    if terminal_cost is None:
        return torch.zeros(n, n, **to)
    if isinstance(terminal_cost, str):
        if terminal_cost != "lqr":
            raise ParameterError(
                "terminal_cost: expected None, 'lqr' or an (n_x, n_x) matrix, "
                f"found {terminal_cost!r}"
            )
        if isinstance(model, LinearGaussianModel):
            linear = model
        else:
            try:
                linear = linearize(model, torch.zeros(n, **to), torch.zeros(model.n_u, **to))
            except NotAnEquilibriumError as exc:
                raise NotAnEquilibriumError(
                    "terminal_cost: 'lqr' linearizes the model at the origin (x = 0, u = 0), "
                    f"which is not an equilibrium ({exc}); pass terminal_cost=None or a matrix"
                ) from exc
        return LQR(linear, cost).value_matrix.detach().to(**to)
    P = as_tensor(terminal_cost, "terminal_cost", **to)
    check_covariance(P, "terminal_cost", n, semidefinite=True)
    return 0.5 * (P + P.mT)


def _noise_std(
    noise_std: Any, bounds: tuple[Tensor, Tensor] | None, n_u: int, to: dict[str, Any]
) -> Tensor:
    if noise_std is None:
        std = torch.ones(n_u, **to)
        if bounds is not None:
            width = bounds[1] - bounds[0]
            std = torch.where(torch.isfinite(width) & (width > 0), 0.25 * width, std)
        return std
    std = as_tensor(noise_std, "noise_std", **to)
    if std.dim() == 0:
        std = std.expand(n_u).clone()
    if std.shape != (n_u,):
        raise DimensionError(
            f"noise_std: expected a scalar or shape ({n_u},), found {shape_str(tuple(std.shape))}"
        )
    if not bool((torch.isfinite(std) & (std > 0)).all()):
        raise ParameterError(f"noise_std: expected finite values > 0, found {std.tolist()}")
    return std
