"""State-space models: the base class, trajectories and models built from callables.

Conventions (shared by the whole library)::

    x_{t+1} = f(x_t, u_t) + w_t,   w_t ~ N(0, process_cov)
    y_t     = h(x_t) + v_t,        v_t ~ N(0, measurement_cov)
    x_0     ~ N(x0_mean, x0_cov)

Shapes are batch first: x (B, n_x), u (B, n_u), y (B, n_y); sequences (B, T, .).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._validation import as_tensor, check_covariance, check_finite, check_positive_int, check_shape
from ..errors import DimensionError, ParameterError

__all__ = ["NonlinearModel", "SystemModel", "Trajectory", "one_pass_jacobians", "psd_sqrt"]

# SystemModel's constructor arguments, held as attributes of the same names: the sizes and what a
# copy takes over (replace, the mismatch helpers, ResidualModel)
_SIZES = ("n_x", "n_u", "n_y")
_COPIED = ("process_cov", "measurement_cov", "x0_mean", "x0_cov", "dt", "params", "factory", "name")


class Trajectory(NamedTuple):
    """A batch of simulated trajectories.

    Shapes
    ------
    x : (B, T, n_x)  true states x_0 .. x_{T-1}
    y : (B, T, n_y)  measurements y_t = h(x_t) + v_t
    u : (B, T, n_u)  inputs; u[:, t] is applied after y_t is seen and moves x_t to x_{t+1}
    """

    x: Tensor
    y: Tensor
    u: Tensor


def psd_sqrt(M: Tensor) -> Tensor:
    """A square root L with L @ L.mT == M for symmetric positive semi-definite M.

    Uses the Cholesky factor where it exists and a symmetric eigen-decomposition (with negative
    round-off eigenvalues clamped to zero) for singular matrices.

    Shapes
    ------
    M : (..., n, n) -> (..., n, n)
    """
    L, info = torch.linalg.cholesky_ex(M)
    if not bool((info != 0).any()):
        return L
    evals, evecs = torch.linalg.eigh(0.5 * (M + M.mT))
    L_eig = evecs * evals.clamp_min(0.0).sqrt().unsqueeze(-2)
    bad = (info != 0).reshape(*info.shape, 1, 1)
    return torch.where(bad, L_eig, L)


class SystemModel(abc.ABC):
    """A discrete-time stochastic state-space model with additive Gaussian noise.

    Subclasses implement :meth:`f` and :meth:`h`; the Jacobians default to automatic
    differentiation and may be overridden with exact expressions.

    Parameters
    ----------
    n_x, n_u, n_y : int
        State, input and measurement dimensions (``n_u`` may be 0).
    process_cov : array-like, (n_x, n_x)
        Covariance of w_t; symmetric positive semi-definite.
    measurement_cov : array-like, (n_y, n_y)
        Covariance of v_t; symmetric positive definite.
    x0_mean : array-like, (n_x,), optional
        Mean of x_0 (default zeros).
    x0_cov : array-like, (n_x, n_x), optional
        Covariance of x_0; positive semi-definite (default zeros: a known initial state).
    dt : float, optional
        Sampling period in seconds, when the model comes from a continuous-time system.
    params : mapping of str to float, optional
        Named physical parameters the model was built from (for mismatch helpers).
    factory : callable, optional
        ``factory(**params)`` rebuilds the model with other parameter values.
    dtype, device :
        Default float64 on the CPU, or those of the tensors passed in.

    Shapes
    ------
    f : x (B, n_x), u (B, n_u) -> (B, n_x); h : x (B, n_x) -> (B, n_y);
    process_cov (n_x, n_x), measurement_cov (n_y, n_y), x0_mean (n_x,), x0_cov (n_x, n_x)
    """

    def __init__(
        self,
        *,
        n_x: int,
        n_u: int,
        n_y: int,
        process_cov: Any,
        measurement_cov: Any,
        x0_mean: Any = None,
        x0_cov: Any = None,
        dt: float | None = None,
        params: Mapping[str, Any] | None = None,
        factory: Callable[..., SystemModel] | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        name: str | None = None,
    ) -> None:
        self.n_x = check_positive_int(n_x, "n_x")
        self.n_u = check_positive_int(n_u, "n_u", minimum=0)
        self.n_y = check_positive_int(n_y, "n_y")
        dtype = _default_dtype(process_cov, dtype)
        self.process_cov = as_tensor(process_cov, "process_cov", dtype=dtype, device=device)
        device = self.process_cov.device
        self.measurement_cov = as_tensor(
            measurement_cov, "measurement_cov", dtype=dtype, device=device
        )
        check_covariance(self.process_cov, "process_cov", self.n_x, semidefinite=True)
        check_covariance(self.measurement_cov, "measurement_cov", self.n_y)
        if x0_mean is None:
            self.x0_mean = torch.zeros(self.n_x, dtype=dtype, device=device)
        else:
            self.x0_mean = as_tensor(x0_mean, "x0_mean", dtype=dtype, device=device)
            check_shape(self.x0_mean, "x0_mean", (self.n_x,))
            check_finite(self.x0_mean, "x0_mean")
        if x0_cov is None:
            self.x0_cov = torch.zeros(self.n_x, self.n_x, dtype=dtype, device=device)
        else:
            self.x0_cov = as_tensor(x0_cov, "x0_cov", dtype=dtype, device=device)
            check_covariance(self.x0_cov, "x0_cov", self.n_x, semidefinite=True)
        if dt is not None and not (float(dt) > 0 and np.isfinite(float(dt))):
            raise ValueError(f"dt: expected a positive finite sampling period, found {dt}")
        self.dt = None if dt is None else float(dt)
        self.params: dict[str, Any] = dict(params or {})
        self.factory = factory
        self.name = name or type(self).__name__

    # -- the model -------------------------------------------------------------------------------
    @abc.abstractmethod
    def f(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        """Mean of the next state.

        Shapes
        ------
        x : (B, n_x), u : (B, n_u) or None (zero input) -> (B, n_x)
        """

    @abc.abstractmethod
    def h(self, x: Tensor) -> Tensor:
        """Noise-free measurement.

        Shapes
        ------
        x : (B, n_x) -> (B, n_y)
        """

    def f_jacobian(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        """df/dx at (x, u), by automatic differentiation unless overridden.

        Differentiable with respect to the model's parameters when gradients are enabled.

        Shapes
        ------
        x : (B, n_x), u : (B, n_u) or None -> (B, n_x, n_x)
        """
        u = self._input(u, x)
        J = torch.func.jacrev(lambda z: self.f(z, u).sum(0))(x)  # (n_x, B, n_x)
        return J.movedim(1, 0)

    def h_jacobian(self, x: Tensor) -> Tensor:
        """dh/dx at x, by automatic differentiation unless overridden.

        Shapes
        ------
        x : (B, n_x) -> (B, n_y, n_x)
        """
        J = torch.func.jacrev(lambda z: self.h(z).sum(0))(x)  # (n_y, B, n_x)
        return J.movedim(1, 0)

    def input_jacobian(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        """df/du at (x, u), by automatic differentiation unless overridden.

        Shapes
        ------
        x : (B, n_x), u : (B, n_u) or None -> (B, n_x, n_u)
        """
        u = self._input(u, x)
        if self.n_u == 0:
            return x.new_zeros(x.shape[0], self.n_x, 0)
        J = torch.func.jacrev(lambda v: self.f(x, v).sum(0))(u)  # (n_x, B, n_u)
        return J.movedim(1, 0)

    def f_and_jacobians(self, x: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """f(x, u), df/dx and df/du (models with a faster joint computation override it).

        Shapes
        ------
        x : (B, n_x), u : (B, n_u) or None -> ((B, n_x), (B, n_x, n_x), (B, n_x, n_u))
        """
        return self.f(x, u), self.f_jacobian(x, u), self.input_jacobian(x, u)

    def rollout_step(self, dtype: torch.dtype | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """The transition f(x, u) as a function for many calls in a loop without gradients
        (MPC's rollouts; ``u`` is required). Models with per-call set-up (such as a learned
        model's folded weights) do it once here; by default it is :meth:`f` itself. ``dtype``
        is the dtype of the inputs the function will get (default: the model's).

        Shapes
        ------
        step(x (B, n_x), u (B, n_u)) -> (B, n_x)
        """
        return self.f

    def jacobians(self, x: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(df/dx at (x, u), dh/dx at x).

        Shapes
        ------
        x : (B, n_x), u : (B, n_u) or None -> ((B, n_x, n_x), (B, n_y, n_x))
        """
        return self.f_jacobian(x, u), self.h_jacobian(x)

    # -- properties and copies -------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The dtype of every tensor of the model."""
        return self.process_cov.dtype

    @property
    def device(self) -> torch.device:
        """The device of every tensor of the model."""
        return self.process_cov.device

    @property
    def is_linear(self) -> bool:
        """True for models whose f and h are linear (see :class:`LinearGaussianModel`)."""
        return False

    def _constructor_args(self) -> dict[str, Any]:
        """The arguments that rebuild this model as ``type(self)(**args)`` (see :meth:`replace`)."""
        return {name: getattr(self, name) for name in _COPIED}

    def _system_args(self, **changes: Any) -> dict[str, Any]:
        """SystemModel's constructor arguments as this model holds them, with ``changes``.

        The sizes, covariances, x_0 distribution, dt, params, factory and name: what a model built
        from this one (a rotated copy, a residual model around it) takes over.
        """
        return {name: getattr(self, name) for name in (*_SIZES, *_COPIED)} | changes

    def replace(self, **changes: Any) -> SystemModel:
        """A copy of this model with some constructor arguments changed.

        Example: ``model.replace(process_cov=4 * model.process_cov)``.

        Shapes
        ------
        changes : as in the constructor (process_cov (n_x, n_x), measurement_cov (n_y, n_y),
        x0_mean (n_x,), x0_cov (n_x, n_x)) -> model of the same type and dimensions
        """
        args = self._constructor_args()
        unknown = sorted(set(changes) - set(args))
        if unknown:
            raise TypeError(
                f"replace: unknown argument(s) {unknown} for {type(self).__name__}; "
                f"expected some of {sorted(args)}"
            )
        args.update(changes)
        return type(self)(**args)

    def with_params(self, **values: Any) -> SystemModel:
        """Rebuild the model from its named physical parameters with some of them changed.

        Shapes
        ------
        values : scalars (or nested tuples for x0_mean, x0_cov) -> model with the dimensions its
        factory gives (unchanged unless a dimension parameter such as ``n`` changes)
        """
        if self.factory is None:
            raise TypeError(
                f"with_params: {self.name} was not built from named parameters; "
                "build it with a function of kalmannet_ctrl.models.library"
            )
        self._check_param_names(values, "with_params")
        return self.factory(**{**self.params, **values})

    def _check_param_names(self, names: Iterable[str], caller: str) -> None:
        """Raise :class:`~kalmannet_ctrl.errors.ParameterError` (a ValueError) for the ``names``
        that are not entries of ``params``; ``caller`` begins the message."""
        unknown = sorted(set(names) - set(self.params))
        if unknown:
            raise ParameterError(
                f"{caller}: unknown parameter(s) {unknown} for {self.name!r}; "
                f"expected some of {sorted(self.params)}"
            )

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return (
            f"{type(self).__name__}(name={self.name!r}, n_x={self.n_x}, n_u={self.n_u}, "
            f"n_y={self.n_y}, dtype={self.dtype}{', ' + extra if extra else ''})"
        )

    # -- helpers ---------------------------------------------------------------------------------
    def _input(self, u: Tensor | None, x: Tensor) -> Tensor:
        if u is None:
            return x.new_zeros(x.shape[0], self.n_u)
        return u

    def sample_x0(self, batch_size: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw x_0 ~ N(x0_mean, x0_cov).

        Shapes
        ------
        -> (batch_size, n_x)
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        z = torch.randn(
            batch_size, self.n_x, dtype=self.dtype, device=self.device, generator=generator
        )
        return self.x0_mean + z @ psd_sqrt(self.x0_cov).mT

    def simulate(
        self,
        T: int,
        batch_size: int,
        *,
        u: Any = None,
        policy: Any = None,
        generator: torch.Generator | None = None,
        x0: Any = None,
    ) -> Trajectory:
        """Simulate ``batch_size`` trajectories of length ``T``.

        Parameters
        ----------
        T : int
            Number of time steps (measurements) per trajectory.
        batch_size : int
            Number of trajectories B.
        u : array-like, (B, T, n_u) or (T, n_u), optional
            Open-loop inputs. Mutually exclusive with ``policy``. Default: zero input.
        policy : optional
            Closed-loop inputs. Either a controller with the
            ``predict(observation, state, episode_start, deterministic)`` signature (fed the
            measurements), or a callable ``policy(t, y_t) -> u_t`` with y_t (B, n_y) and
            u_t (B, n_u).
        generator : torch.Generator, optional
            Source of all randomness (x_0, process and measurement noise).
        x0 : array-like, (B, n_x) or (n_x,), optional
            Initial states; by default drawn from N(x0_mean, x0_cov).

        Returns
        -------
        Trajectory
            x (B, T, n_x), y (B, T, n_y), u (B, T, n_u).

        Shapes
        ------
        u : (B, T, n_u) or (T, n_u), x0 : (B, n_x) or (n_x,)
        -> Trajectory(x (B, T, n_x), y (B, T, n_y), u (B, T, n_u))
        """
        T = check_positive_int(T, "T")
        B = check_positive_int(batch_size, "batch_size")
        if u is not None and policy is not None:
            raise ValueError(
                "simulate: pass either u (open loop) or policy (closed loop), not both"
            )
        dtype, device = self.dtype, self.device
        if u is not None:
            u = as_tensor(u, "u", dtype=dtype, device=device)
            if u.dim() == 2:
                check_shape(u, "u", (T, self.n_u))
                u = u.expand(B, T, self.n_u)
            check_shape(u, "u", (B, T, self.n_u))
            check_finite(u, "u")
        if x0 is None:
            x = self.sample_x0(B, generator=generator)
        else:
            x = as_tensor(x0, "x0", dtype=dtype, device=device)
            if x.dim() == 1:
                check_shape(x, "x0", (self.n_x,))
                x = x.expand(B, self.n_x)
            check_shape(x, "x0", (B, self.n_x))
        Lw = psd_sqrt(self.process_cov)
        Lv = psd_sqrt(self.measurement_cov)
        xs, ys, us = [], [], []
        ctrl_state = None
        is_controller = policy is not None and hasattr(policy, "predict")
        if policy is not None and not is_controller and not callable(policy):
            raise TypeError(
                "policy: expected a controller with .predict or a callable policy(t, y), "
                f"found {type(policy).__name__}"
            )
        for t in range(T):
            v = torch.randn(B, self.n_y, dtype=dtype, device=device, generator=generator) @ Lv.mT
            y = self.h(x) + v
            if u is not None:
                u_t = u[:, t]
            elif is_controller:
                start = np.full(B, t == 0)
                action, ctrl_state = policy.predict(
                    y.detach().cpu().numpy(),
                    state=ctrl_state,
                    episode_start=start,
                    deterministic=True,
                )
                u_t = as_tensor(action, "policy action", dtype=dtype, device=device).reshape(
                    B, self.n_u
                )
            elif policy is not None:
                u_t = as_tensor(policy(t, y), "policy action", dtype=dtype, device=device)
                if u_t.shape != (B, self.n_u):
                    raise DimensionError(
                        f"policy action: expected shape ({B}, {self.n_u}), found {tuple(u_t.shape)}"
                    )
            else:
                u_t = x.new_zeros(B, self.n_u)
            xs.append(x)
            ys.append(y)
            us.append(u_t)
            if t + 1 < T:
                w = (
                    torch.randn(B, self.n_x, dtype=dtype, device=device, generator=generator)
                    @ Lw.mT
                )
                x = self.f(x, u_t) + w
        return Trajectory(torch.stack(xs, 1), torch.stack(ys, 1), torch.stack(us, 1))


class NonlinearModel(SystemModel):
    """A model from batched callables ``f(x, u)`` and ``h(x)``.

    Parameters
    ----------
    f : callable
        ``f(x, u) -> x_next_mean`` with x (B, n_x), u (B, n_u) (zeros when no input is given;
        (B, 0) when n_u = 0) and result (B, n_x). Must be written with torch operations to be
        differentiable (EKF Jacobians are taken by autograd unless ``f_jacobian`` is given).
    h : callable
        ``h(x) -> y_mean``, (B, n_x) -> (B, n_y).
    n_x, n_y : int
    n_u : int, default 0
    f_jacobian, h_jacobian : callable, optional
        Exact Jacobians ``f_jacobian(x, u) -> (B, n_x, n_x)``, ``h_jacobian(x) -> (B, n_y, n_x)``.
    input_jacobian : callable, optional
        Exact ``input_jacobian(x, u) -> (B, n_x, n_u)``, df/du.
    f_and_jacobians : callable, optional
        ``f_and_jacobians(x, u) -> (f (B, n_x), df/dx (B, n_x, n_x), df/du (B, n_x, n_u))`` in
        one pass (see :meth:`f_and_jacobians`); must agree with ``f`` and the Jacobians.
    **kwargs
        Noise covariances, initial distribution and the rest, as in :class:`SystemModel`.

    Shapes
    ------
    f : x (B, n_x), u (B, n_u) -> (B, n_x); h : x (B, n_x) -> (B, n_y);
    f_jacobian -> (B, n_x, n_x), h_jacobian -> (B, n_y, n_x), input_jacobian -> (B, n_x, n_u)
    """

    def __init__(
        self,
        f: Callable[[Tensor, Tensor], Tensor],
        h: Callable[[Tensor], Tensor],
        *,
        n_x: int,
        n_y: int,
        n_u: int = 0,
        f_jacobian: Callable[[Tensor, Tensor], Tensor] | None = None,
        h_jacobian: Callable[[Tensor], Tensor] | None = None,
        input_jacobian: Callable[[Tensor, Tensor], Tensor] | None = None,
        f_and_jacobians: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]] | None = None,
        **kwargs: Any,
    ) -> None:
        fns = _Functions(f, h, f_jacobian, h_jacobian, input_jacobian, f_and_jacobians)
        for name, fn in fns._asdict().items():
            if fn is not None and not callable(fn):
                raise TypeError(f"{name}: expected a callable, found {type(fn).__name__}")
        super().__init__(n_x=n_x, n_u=n_u, n_y=n_y, **kwargs)
        self._fns = fns

    def f(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        return self._fns.f(x, self._input(u, x))

    def h(self, x: Tensor) -> Tensor:
        return self._fns.h(x)

    def rollout_step(self, dtype: torch.dtype | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        return self._fns.f

    def f_jacobian(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        if self._fns.f_jacobian is not None:
            return self._fns.f_jacobian(x, self._input(u, x))
        return super().f_jacobian(x, u)

    def h_jacobian(self, x: Tensor) -> Tensor:
        if self._fns.h_jacobian is not None:
            return self._fns.h_jacobian(x)
        return super().h_jacobian(x)

    def input_jacobian(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        if self._fns.input_jacobian is not None:
            return self._fns.input_jacobian(x, self._input(u, x))
        return super().input_jacobian(x, u)

    def f_and_jacobians(self, x: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """f(x, u), df/dx and df/du, in one pass when the model was given ``f_and_jacobians``.

        Shapes
        ------
        x : (B, n_x), u : (B, n_u) or None -> ((B, n_x), (B, n_x, n_x), (B, n_x, n_u))
        """
        u = self._input(u, x)
        if self._fns.f_and_jacobians is not None:
            return self._fns.f_and_jacobians(x, u)
        return self.f(x, u), self.f_jacobian(x, u), self.input_jacobian(x, u)

    def _constructor_args(self) -> dict[str, Any]:
        return {**self._fns._asdict(), **self._system_args()}


class _Functions(NamedTuple):
    """The callables of a :class:`NonlinearModel`, named as its constructor's arguments."""

    f: Callable[[Tensor, Tensor], Tensor]
    h: Callable[[Tensor], Tensor]
    f_jacobian: Callable[[Tensor, Tensor], Tensor] | None
    h_jacobian: Callable[[Tensor], Tensor] | None
    input_jacobian: Callable[[Tensor, Tensor], Tensor] | None
    f_and_jacobians: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]] | None


def one_pass_jacobians(
    model: SystemModel,
) -> Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor, Tensor]] | None:
    """The model's own one-pass ``f_and_jacobians``, or None.

    Returns the bound method when the model implements it (f, df/dx and df/du sharing their work),
    not the generic default (f plus two separate Jacobians); None otherwise. Estimators and
    planners use it to avoid evaluating f twice.

    Shapes
    ------
    -> fn(x (B, n_x), u (B, n_u) or None) -> ((B, n_x), (B, n_x, n_x), (B, n_x, n_u)), or None
    """
    method = getattr(type(model), "f_and_jacobians", None)
    if method is None or method is SystemModel.f_and_jacobians:
        return None
    # a NonlinearModel has one only when it was given one
    if method is NonlinearModel.f_and_jacobians and model._fns.f_and_jacobians is None:
        return None
    return model.f_and_jacobians


def _default_dtype(value: Any, dtype: torch.dtype | None) -> torch.dtype:
    """``dtype`` if given, else that of ``value`` when it is a tensor, else float64."""
    if dtype is None and isinstance(value, Tensor):
        dtype = value.dtype
    return dtype or torch.float64
