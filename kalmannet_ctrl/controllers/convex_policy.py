"""Convex-optimization control policies: the ADP policy and its H-step form, with trainable
weights, value function and model (Agrawal, Barratt, Boyd & Stellato, "Learning convex
optimization control policies", L4DC 2020)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .._docstrings import fill
from .._validation import as_tensor, check_positive_int, shape_str
from ..errors import DimensionError, NonFiniteError, ParameterError
from ..estimators.base import Estimator
from ..models.base import psd_sqrt
from ..models.cost import QuadraticCost
from ..models.linear import LinearGaussianModel
from ._docs import BASE_SHAPES, FEEDBACK_FIELDS
from .base import FeedbackState, ModelBasedController, check_estimator, parse_input_bounds
from .lqr import LQR, check_design_inputs
from .mpc._boxqp import solve_box_qp

__all__ = ["TRAINABLE", "ConvexPolicy", "ConvexPolicyState", "condense", "solve_box_qp_layer"]

#: The parameter groups a :class:`ConvexPolicy` can train, by name.
TRAINABLE = ("S", "q", "A", "B", "R", "Q")


@fill(feedback_fields=FEEDBACK_FIELDS)
class ConvexPolicyState(FeedbackState):
    """Recurrent state of a :class:`ConvexPolicy`.

    Attributes
    ----------
    %(feedback_fields)s
        ``estimator_state`` is None for a full-state policy.

    Shapes
    ------
    u_prev : (B, n_u)
    """

    __slots__ = ()


def condense(A: Tensor, B: Tensor, horizon: int) -> tuple[Tensor, Tensor]:
    """The stacked predictions X = Φ x_0 + Γ U of x_1 … x_H, differentiably in A and B.

    Block k of Φ is A^{k+1}; block (k, j) of Γ is A^{k−j} B for j <= k, zero otherwise.

    Parameters
    ----------
    A : Tensor, (n_x, n_x)
    B : Tensor, (n_x, n_u)
    horizon : int
        H >= 1.

    Returns
    -------
    Phi : Tensor, (H·n_x, n_x)
    Gamma : Tensor, (H·n_x, H·n_u)

    Shapes
    ------
    A (n_x, n_x), B (n_x, n_u) -> Phi (H·n_x, n_x), Gamma (H·n_x, H·n_u)
    """
    n, m = B.shape
    powers = [A]
    for _ in range(horizon - 1):
        powers.append(A @ powers[-1])
    AkB = torch.stack([B] + [P @ B for P in powers[:-1]], 0)  # A^k B, k = 0 … H−1
    lag = torch.arange(horizon, device=A.device)[:, None] - torch.arange(horizon, device=A.device)
    Gamma = AkB[lag.clamp_min(0)] * (lag >= 0)[:, :, None, None].to(A.dtype)  # (H, H, n, m)
    Gamma = Gamma.permute(0, 2, 1, 3).reshape(horizon * n, horizon * m)
    return torch.cat(powers, 0), Gamma


def solve_box_qp_layer(
    hessian: Tensor, linear: Tensor, lower: Tensor | None, upper: Tensor | None
) -> Tensor:
    """argmin ½ z'Hz + g'z over lower <= z <= upper, differentiable with respect to H and g.

    The forward pass is the exact batched active-set solver of the library's MPC
    (:func:`~kalmannet_ctrl.controllers.mpc._boxqp.solve_box_qp`). The backward pass
    differentiates the KKT conditions on the optimal face implicitly: with the active bounds
    A held (z_A = bound, dz_A = 0), the free variables F solve H_FF z_F = −g_F − H_FA z_A, so
    dz_F = −H_FF⁻¹ (dH z + dg)_F, and a loss's gradients are ∂/∂g = −λ and
    ∂/∂H = −½(λz' + zλ') with λ_F = H_FF⁻¹ ∂/∂z_F, λ_A = 0: one batched Cholesky solve of the
    reduced system. This is exact wherever the optimal face is locally constant (strict
    complementarity: every active bound has a positive multiplier). At a degenerate point, a
    bound active with a zero multiplier, the solution map is only directionally
    differentiable; the bound is then counted as active (the solver puts z exactly on it), so
    the gradient is that of the face with the bound held, one of the one-sided derivatives.
    The bounds themselves are constants (no gradient).

    Parameters
    ----------
    hessian : Tensor, (N, N) shared by the batch, or (B, N, N)
        Symmetric positive definite H.
    linear : Tensor, (B, N)
        g.
    lower, upper : Tensor, (N,), or None
        Bounds (infinite entries leave a side free); None for an unconstrained problem.

    Returns
    -------
    Tensor, (B, N)
        The minimizers.

    Raises
    ------
    NonFiniteError
        If H or g has NaN/inf entries (e.g. parameters that diverged in training).

    Shapes
    ------
    hessian (N, N) or (B, N, N), linear (B, N), lower/upper (N,) -> (B, N)
    """
    if not bool(torch.isfinite(hessian).all()) or not bool(torch.isfinite(linear).all()):
        raise NonFiniteError(
            "hessian, linear: expected finite QP data, found NaN/inf (non-finite policy "
            "parameters or states)"
        )
    if lower is None or upper is None:
        L = torch.linalg.cholesky(hessian)
        if hessian.dim() == 2:
            return -torch.cholesky_solve(linear.mT, L).mT
        return -torch.cholesky_solve(linear.unsqueeze(-1), L).squeeze(-1)
    return _BoxQP.apply(hessian, linear, lower, upper)


class _BoxQP(torch.autograd.Function):
    """The box-QP's solution, with the implicit derivative on the optimal face."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, hessian: Tensor, linear: Tensor, lower: Tensor, upper: Tensor
    ) -> Tensor:
        res = solve_box_qp(hessian, linear, lower, upper)
        if not bool(res.converged.all()):
            warnings.warn(
                f"ConvexPolicy: the box-QP solver reached its iteration cap in "
                f"{int((~res.converged).sum())} of {res.converged.numel()} rows; their inputs "
                "are the best feasible ones found, not the optimum",
                RuntimeWarning,
                stacklevel=4,
            )
        z = res.solution
        fixed = (z <= lower) | (z >= upper)
        ctx.save_for_backward(hessian, z, fixed)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        hessian, z, fixed = ctx.saved_tensors
        free = ~fixed
        Bsz, N = z.shape
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        Hm = torch.where(free.unsqueeze(-1) & free.unsqueeze(-2), hessian.expand(Bsz, N, N), zero)
        Hm = Hm + torch.diag_embed(fixed.to(z.dtype))
        rhs = torch.where(free, grad, zero)
        lam = torch.cholesky_solve(rhs.unsqueeze(-1), torch.linalg.cholesky(Hm)).squeeze(-1)
        d_hess = None
        if ctx.needs_input_grad[0]:
            outer = lam.unsqueeze(-1) * z.unsqueeze(-2)  # (B, N, N): λ z'
            d_hess = -0.5 * (outer + outer.mT)
            if hessian.dim() == 2:
                d_hess = d_hess.sum(0)
        d_linear = -lam if ctx.needs_input_grad[1] else None
        return d_hess, d_linear, None, None


def _factor(M: Tensor) -> Tensor:
    """F with F'F = M for symmetric positive semi-definite M (the transposed Cholesky factor,
    or an eigen-decomposition's square root for a singular M)."""
    return psd_sqrt(0.5 * (M + M.mT)).mT.contiguous()


@fill(base_shapes=BASE_SHAPES)
class ConvexPolicy(ModelBasedController, nn.Module):
    """A convex-optimization control policy with trainable parameters, on the estimate x̂_{t|t}.

    With ``horizon=1`` (default) the approximate-dynamic-programming (ADP) policy

        u = argmin_{low <= u <= high}  u'Ru + ‖S(Âx + B̂u)‖² + q'(Âx + B̂u),

    the one-step lookahead on the quadratic value function V(x) = x'S'Sx + q'x; with
    ``horizon=H`` its H-step form, an MPC whose stage weight, input weight, terminal value and
    model are parameters:

        min Σ_{k<H} u_k'Ru_k + Σ_{k=1}^{H−1} ‖F x_k‖² + ‖S x_H‖² + q'x_H,
        x_0 = x, x_{k+1} = Âx_k + B̂u_k, low <= u_k <= high,

    of which u_0 is applied. The problem is condensed to a box-constrained QP in the H·n_u
    inputs and solved exactly by the batched active-set solver of
    :class:`~kalmannet_ctrl.controllers.mpc.QP` (:func:`solve_box_qp_layer`); its gradient is
    the implicit derivative of the KKT conditions on the optimal face (see
    :func:`solve_box_qp_layer`, also for degenerate points), so the closed-loop cost can be
    differentiated with respect to every parameter
    (:func:`~kalmannet_ctrl.training.tune_policy`).

    The parameters start from the LQR of ``model`` and ``cost``: S'S = P (the DARE solution),
    q = 0, F'F = Q, R = the cost's R, Â, B̂ = the model's A, B. Where no bound is active the
    untrained policy is then the LQR, u = −Kx̂ (for any H: P is the infinite-horizon
    cost-to-go). The QP can never become non-convex: R = LL' with L lower triangular with a
    positive diagonal (parametrised by its logarithm) is positive definite, and the state
    weights F'F and S'S are positive semi-definite by construction.

    Parameters
    ----------
    model : LinearGaussianModel
        The design model (nominal or true): Â, B̂ start from it, and the default estimator is
        its Kalman filter.
    cost : QuadraticCost
        Stage cost weights Q (n_x, n_x), R (n_u, n_u).
    estimator : Estimator, optional
        Any object with the Estimator protocol estimating the n_x states of ``model``. Default:
        ``KalmanFilter(model)``, as for :class:`LQG`. Not part of the module's parameters
        (``parameters()`` and ``state_dict()`` hold the policy's own only).
    horizon : int
        H >= 1 (1: the ADP policy).
    input_bounds : (low, high), optional
        Actuator limits, each a scalar or an array (n_u,); infinite entries leave that side
        free. Without bounds the policy is linear, u = −K(θ) x̂ − k(θ).
    full_state : bool
        Act on the state itself: the observation is x_t (n_y = n_x), no estimator.
    trainable : iterable of str
        The parameter groups that train (``requires_grad``), among ``"S"`` (value factor),
        ``"q"`` (linear value term), ``"A"``, ``"B"`` (the model Â, B̂), ``"R"`` (input weight,
        by its Cholesky factor) and ``"Q"`` (stage weight factor F, used for H > 1). Default
        ``("S", "q")``, the value function, as in the reference.

    Attributes
    ----------
    S : Parameter, (n_x, n_x)
        Factor of the value matrix S'S.
    q : Parameter, (n_x,)
    A, B : Parameter, (n_x, n_x) and (n_x, n_u)
        The policy's model Â, B̂.
    R_factor : Parameter, (n_u, n_u)
        Below the diagonal: L's entries; on it: log of L's diagonal (R = LL').
    Q_factor : Parameter, (n_x, n_x)
        F (stage weight F'F).
    input_weight : Tensor, (n_u, n_u)
        R = LL'.
    stage_weight, value_matrix : Tensor, (n_x, n_x)
        F'F and S'S.
    lqr : LQR
        The regulator the parameters start from.
    model, cost, horizon, estimator, full_state
    input_bounds : tuple of Tensor (n_u,), or None

    Shapes
    ------
    action: x (B, n_x) -> u (B, n_u); plan: x (B, n_x) -> (B, H, n_u);
    %(base_shapes)s

    Raises
    ------
    TypeError
        If ``model`` is not linear, ``cost`` not a QuadraticCost, ``estimator`` lacks the
        Estimator protocol, or ``trainable`` is not an iterable of names.
    DimensionError
        If the model has no input, or the cost, the estimator or the bounds do not match it.
    ParameterError
        If ``horizon`` < 1, a ``trainable`` name is unknown, or ``full_state`` is given with an
        estimator.
    ValueError
        If the bounds have low > high or NaN.
    RiccatiError
        If the DARE of (model, cost) has no stabilizing solution.

    Examples
    --------
    >>> import numpy as np
    >>> from kalmannet_ctrl.controllers import LQR
    >>> from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost
    >>> m = LinearGaussianModel(A=[[1.1]], B=[[1.0]], C=[[1.0]], process_cov=[[0.1]],
    ...                         measurement_cov=[[0.5]])
    >>> cost = QuadraticCost(Q=[[1.0]], R=[[0.1]])
    >>> policy = ConvexPolicy(m, cost, input_bounds=(-0.5, 0.5), full_state=True)
    >>> u = policy.action([[0.1], [5.0]]).detach()  # the LQR's input, then the bound
    >>> bool(torch.allclose(u[:1], LQR(m, cost).action([[0.1]]))), float(u[1, 0])
    (True, -0.5)
    >>> sorted(n for n, p in policy.named_parameters() if p.requires_grad)
    ['S', 'q']
    """

    state_type = ConvexPolicyState
    _names: ClassVar[dict[str, str]] = {
        "S": "S",
        "q": "q",
        "A": "A",
        "B": "B",
        "R": "R_factor",
        "Q": "Q_factor",
    }

    def __init__(
        self,
        model: LinearGaussianModel,
        cost: QuadraticCost,
        estimator: Estimator | None = None,
        *,
        horizon: int = 1,
        input_bounds: tuple[Any, Any] | None = None,
        full_state: bool = False,
        trainable: Iterable[str] = ("S", "q"),
    ) -> None:
        check_design_inputs(model, cost, "ConvexPolicy")
        nn.Module.__init__(self)
        horizon = check_positive_int(horizon, "horizon")
        names = _check_trainable(trainable)
        if full_state and estimator is not None:
            raise ParameterError(
                "estimator: a full_state policy acts on the state itself; pass estimator=None "
                f"or full_state=False, found {type(estimator).__name__}"
            )
        # kept outside the module tree: the policy's parameters are its own
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "cost", cost)
        object.__setattr__(
            self, "estimator", None if full_state else check_estimator(estimator, model)
        )
        self.full_state = bool(full_state)
        self.horizon = horizon
        self.input_bounds = parse_input_bounds(input_bounds, model)
        self.lqr = LQR(model, cost)
        to = dict(dtype=model.dtype, device=model.device)
        P = self.lqr.value_matrix.detach().to(**to)
        R = cost.R.detach().to(**to)
        L = torch.linalg.cholesky(0.5 * (R + R.mT))
        raw_R = torch.tril(L, -1) + torch.diag(torch.log(torch.diagonal(L)))
        init = {
            "S": _factor(P),
            "q": torch.zeros(model.n_x, **to),
            "A": model.A.detach().to(**to).clone(),
            "B": model.B.detach().to(**to).clone(),
            "R_factor": raw_R,
            "Q_factor": _factor(cost.Q.detach().to(**to)),
        }
        for key, value in init.items():
            trains = any(self._names[n] == key for n in names)
            setattr(self, key, nn.Parameter(value.clone(), requires_grad=trains))
        self._bounds_plan = None
        if self.input_bounds is not None:
            low, high = self.input_bounds
            self._bounds_plan = (low.repeat(horizon), high.repeat(horizon))

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def n_y(self) -> int:  # type: ignore[override]
        """The observation's size: n_x for a full-state policy, the model's n_y otherwise."""
        return self.model.n_x if self.full_state else self.model.n_y

    @property
    def accepts_missing(self) -> bool:  # type: ignore[override]
        """NaN rows (missing measurements) are accepted with an estimator, not on the state."""
        return not self.full_state

    # -- the parameters as weights ---------------------------------------------------------------
    @property
    def input_weight(self) -> Tensor:
        """R = LL' (positive definite by construction).

        Shapes
        ------
        -> (n_u, n_u)
        """
        L = self._input_cholesky()
        return L @ L.mT

    @property
    def stage_weight(self) -> Tensor:
        """F'F.

        Shapes
        ------
        -> (n_x, n_x)
        """
        return self.Q_factor.mT @ self.Q_factor

    @property
    def value_matrix(self) -> Tensor:
        """S'S: the value function is x'S'Sx + q'x.

        Shapes
        ------
        -> (n_x, n_x)
        """
        return self.S.mT @ self.S

    def _input_cholesky(self) -> Tensor:
        raw = self.R_factor
        return torch.tril(raw, -1) + torch.diag_embed(torch.exp(torch.diagonal(raw)))

    def qp(self) -> tuple[Tensor, Tensor, Tensor]:
        """The condensed QP min ½ U'HU + (Gx + c)'U over the stacked inputs U (bounds aside),
        differentiable with respect to the parameters.

        With X = Φx + ΓU (x_1 … x_H) and the weights W = blockdiag(F'F, …, F'F, S'S):
        H = R̄ + Γ'WΓ, G = Γ'WΦ and c = ½ Γ_H' q (Γ_H: the block row of x_H), half the
        objective of the class docstring (the same minimizer).

        Returns
        -------
        hessian : Tensor, (H·n_u, H·n_u)
        G : Tensor, (H·n_u, n_x)
        c : Tensor, (H·n_u,)

        Shapes
        ------
        -> hessian (H·n_u, H·n_u), G (H·n_u, n_x), c (H·n_u,)
        """
        H, n = self.horizon, self.n_x
        L = self._input_cholesky()
        if H == 1:  # the ADP policy: Φ = Â, Γ = B̂
            SB, SA = self.S @ self.B, self.S @ self.A
            hess = L @ L.mT + SB.mT @ SB
            return 0.5 * (hess + hess.mT), SB.mT @ SA, 0.5 * (self.B.mT @ self.q)
        Phi, Gamma = condense(self.A, self.B, H)
        blocks = [self.Q_factor] * (H - 1) + [self.S]
        F = torch.block_diag(*blocks) if H > 1 else self.S
        FG, FP = F @ Gamma, F @ Phi
        Rbar = torch.block_diag(*([L @ L.mT] * H))
        hess = Rbar + FG.mT @ FG
        hess = 0.5 * (hess + hess.mT)
        c = 0.5 * (Gamma[(H - 1) * n :].mT @ self.q)
        return hess, FG.mT @ FP, c

    # -- the policy ------------------------------------------------------------------------------
    def plan(self, x: Any) -> Tensor:
        """The optimal inputs u_0 … u_{H−1} from the states ``x`` (differentiable).

        Parameters
        ----------
        x : array-like or Tensor, (B, n_x)

        Returns
        -------
        Tensor, (B, H, n_u)

        Raises
        ------
        DimensionError
            If ``x`` is not (B, n_x).
        NonFiniteError
            On NaN/inf in ``x`` or in the parameters.

        Shapes
        ------
        x : (B, n_x) -> (B, H, n_u)
        """
        x = as_tensor(x, "x", dtype=self.dtype, device=self.device)
        if x.dim() != 2 or x.shape[1] != self.n_x or x.shape[0] < 1:
            raise DimensionError(
                f"x: expected shape (B, {self.n_x}), found {shape_str(tuple(x.shape))}"
            )
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError(
                f"x: expected finite values, found {int((~torch.isfinite(x)).sum())} NaN/inf "
                "entries"
            )
        return self._plan(x)

    def _plan(self, x: Tensor) -> Tensor:
        hess, G, c = self.qp()
        low, high = (None, None) if self._bounds_plan is None else self._bounds_plan
        U = solve_box_qp_layer(hess, x @ G.mT + c, low, high)
        return U.view(x.shape[0], self.horizon, self.n_u)

    def action(self, x: Any) -> Tensor:
        """The policy's input for the states ``x``: the first of :meth:`plan`.

        Shapes
        ------
        x : (B, n_x) -> (B, n_u)
        """
        return self.plan(x)[:, 0]

    # -- the controller base's hooks -------------------------------------------------------------
    def init(self, batch_size: int) -> ConvexPolicyState:
        """The estimator's prior (None on the full state) and u_prev = 0.

        Shapes
        ------
        -> u_prev (B, n_u)
        """
        u_prev = torch.zeros(batch_size, self.n_u, dtype=self.dtype, device=self.device)
        est = None if self.estimator is None else self.estimator.init(batch_size)
        return ConvexPolicyState(est, u_prev)

    def reset_rows(self, state: ConvexPolicyState, mask: Tensor) -> ConvexPolicyState:
        """The estimator's prior and u_prev = 0 for the rows where ``mask`` is True.

        Shapes
        ------
        mask : (B,) bool
        """
        if self.estimator is not None:
            return super().reset_rows(state, mask)
        u_prev = torch.where(mask[:, None], torch.zeros_like(state.u_prev), state.u_prev)
        return state._replace(u_prev=u_prev)

    def act(
        self,
        state: ConvexPolicyState,
        y: Tensor,
        *,
        episode_start: Tensor | None,
        deterministic: bool,
    ) -> tuple[Tensor, ConvexPolicyState]:
        """Estimator step with (u_{t−1}, y_t) (or x_t = y_t on the full state), then the QP's
        first input. Differentiable through the estimator and the parameters.

        Shapes
        ------
        y : (B, n_y) -> u (B, n_u)
        """
        if self.estimator is None:
            xhat, est_state = y, None
        else:
            xhat, est_state = self.estimator.step(state.estimator_state, y, state.u_prev)
        u = self._plan(xhat.to(dtype=self.dtype))[:, 0]
        return u, ConvexPolicyState(est_state, u)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments: ``ConvexPolicy(model, cost, estimator, **config)``
        rebuilds it (the model, the cost and the estimator are not saved and must be passed
        again; :func:`~kalmannet_ctrl.training.load_checkpoint` then loads the parameters).

        Shapes
        ------
        input_bounds: two lists of n_u floats, or None
        """
        bounds = None
        if self.input_bounds is not None:
            bounds = [b.tolist() for b in self.input_bounds]
        return {
            "horizon": self.horizon,
            "input_bounds": bounds,
            "full_state": self.full_state,
            "trainable": self._trains(),
        }

    def _trains(self) -> list[str]:
        return [n for n in TRAINABLE if getattr(self, self._names[n]).requires_grad]

    def __repr__(self) -> str:
        trains = self._trains()
        est = "full state" if self.full_state else type(self.estimator).__name__
        return (
            f"ConvexPolicy(n_x={self.n_x}, n_u={self.n_u}, horizon={self.horizon}, "
            f"estimator={est}, trainable={trains}, bounded={self.input_bounds is not None})"
        )


def _check_trainable(trainable: Any) -> list[str]:
    if isinstance(trainable, str) or not isinstance(trainable, Iterable):
        raise TypeError(
            f"trainable: expected an iterable of names among {TRAINABLE}, found "
            f"{type(trainable).__name__}"
            + (f" {trainable!r}" if isinstance(trainable, str) else "")
        )
    names = list(trainable)
    unknown = [n for n in names if n not in TRAINABLE]
    if unknown:
        raise ParameterError(f"trainable: expected names among {TRAINABLE}, found {unknown}")
    return names
