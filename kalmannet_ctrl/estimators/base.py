"""The Estimator protocol and the machinery shared by Gaussian filters.

Timing convention: the state returned by :meth:`Estimator.init` holds the prior of x_0,
N(x0_mean, x0_cov). Step t predicts with u_{t-1} (skipped at t = 0, where the prior already
describes x_0), then updates with y_t, and returns x̂_{t|t}. A NaN anywhere in a measurement row
means "no measurement" for that trajectory and step (predict only).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from .._validation import (
    as_tensor,
    check_batch,
    check_covariance,
    check_finite,
    check_positive_int,
    check_shape,
)
from ..errors import DimensionError, NonFiniteError
from ..models.base import SystemModel

__all__ = ["Estimator", "FilterResult", "GaussianFilter", "GaussianState", "SequenceFilter"]

def step_through(
    step: Callable[[Any, Tensor, Tensor | None], tuple[Tensor, Any]],
    state: Any,
    y: Tensor,
    u: Tensor | None,
) -> Iterator[tuple[Tensor, Any]]:
    """Run ``step(state, y_t, u_{t-1})`` along whole sequences, yielding each ``(x̂_t, state)``.

    Shapes
    ------
    y : (B, T, n_y), u : (B, T, n_u) or None -> T pairs of x̂_{t|t} (B, n_x) and the state
    """
    for t in range(y.shape[1]):
        u_prev = u[:, t - 1] if (u is not None and t > 0) else None
        mean, state = step(state, y[:, t], u_prev)
        yield mean, state


class FilterResult(NamedTuple):
    """Filtered estimates of a batch of sequences.

    Shapes
    ------
    mean : (B, T, n_x)  x̂_{t|t}
    cov : (B, T, n_x, n_x) or None  the filter's error covariance P_{t|t} (None for estimators
        that do not propagate one). It may be an expanded view that shares memory across B.
    """

    mean: Tensor
    cov: Tensor | None


class GaussianState(NamedTuple):
    """Recurrent state of a Gaussian filter.

    Shapes
    ------
    mean : (B, n_x)  x̂_{t|t}, or the prior mean of x_0 for rows that are ``fresh``
    cov : (n_x, n_x) shared by the batch, or (B, n_x, n_x)
    fresh : (B,) bool, or None when no row is fresh. A fresh row holds the prior of x_0: its next
        step skips the prediction.
    """

    mean: Tensor
    cov: Tensor
    fresh: Tensor | None


@runtime_checkable
class Estimator(Protocol):
    """What every estimator, classical or learned, provides.

    An estimator object holds parameters only; the recurrent state is passed in and returned,
    so one object serves any batch size.

    Shapes
    ------
    step: y (B, n_y), u_prev (B, n_u) -> x̂_{t|t} (B, n_x);
    filter: y (B, T, n_y), u (B, T, n_u) -> mean (B, T, n_x), cov (B, T, n_x, n_x) or None
    """

    n_x: int

    def init(self, batch_size: int, *, x0_mean: Any = None, x0_cov: Any = None) -> Any:
        """The state before the first measurement, for ``batch_size`` trajectories.

        Shapes
        ------
        x0_mean : (n_x,) or (B, n_x), x0_cov : (n_x, n_x) or (B, n_x, n_x)
        -> state with mean (B, n_x), every row fresh
        """
        ...

    def step(self, state: Any, y: Any, u_prev: Any = None) -> tuple[Tensor, Any]:
        """Predict with u_{t-1} and update with y_t: (x̂_{t|t}, new state).

        Shapes
        ------
        y : (B, n_y), a NaN row means no measurement; u_prev : (B, n_u) or None
        -> x̂_{t|t} (B, n_x) and the new state
        """
        ...

    def filter(
        self, y: Any, u: Any = None, *, x0_mean: Any = None, x0_cov: Any = None
    ) -> FilterResult:
        """Filter whole sequences y with inputs u.

        Shapes
        ------
        y : (B, T, n_y), u : (B, T, n_u) or None
        -> FilterResult(mean (B, T, n_x), cov (B, T, n_x, n_x) or None)
        """
        ...

    def reset(self, state: Any, mask: Any) -> Any:
        """Restart the rows where ``mask`` is True from the prior of x_0.

        Shapes
        ------
        mask : (B,) bool -> state of the same batch size
        """
        ...


class SequenceFilter:
    """The ``filter`` of a recursive estimator: its ``init``, then ``step`` along the sequences.

    A subclass provides ``init``, ``_check_sequences(y, u)`` (conversion and shape checks) and
    ``_filter_loop(state, y, u)`` (usually over :func:`step_through`).
    """

    def filter(
        self, y: Any, u: Any = None, *, x0_mean: Any = None, x0_cov: Any = None
    ) -> FilterResult:
        """Filter a batch of sequences (a loop of ``step``).

        Parameters
        ----------
        y : array-like, (B, T, n_y)
            Measurements; a NaN anywhere in a row means no measurement at that step.
        u : array-like, (B, T, n_u), optional
            Inputs, u[:, t] applied after y_t (the layout of
            :class:`~kalmannet_ctrl.models.Trajectory`); the prediction into step t uses
            u[:, t-1]. Default: zero input.
        x0_mean, x0_cov : optional
            Prior of x_0, as in ``init`` (an estimator that propagates no covariance, such as
            KalmanNet, ignores ``x0_cov``).

        Returns
        -------
        FilterResult
            mean (B, T, n_x) in the estimator's dtype; cov (B, T, n_x, n_x), or None for an
            estimator that propagates no covariance.

        Shapes
        ------
        y : (B, T, n_y), u : (B, T, n_u) or None -> mean (B, T, n_x), cov (B, T, n_x, n_x) or None
        """
        y, u = self._check_sequences(y, u)
        state = self.init(y.shape[0], x0_mean=x0_mean, x0_cov=x0_cov)
        return self._filter_loop(state, y, u)

    def _check_sequences(self, y: Any, u: Any) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def _filter_loop(self, state: Any, y: Tensor, u: Tensor | None) -> FilterResult:
        raise NotImplementedError

    def init(self, batch_size: int, *, x0_mean: Any = None, x0_cov: Any = None) -> Any:
        raise NotImplementedError


class GaussianFilter(SequenceFilter, abc.ABC):
    """Base of the Kalman-type filters: validation, batching, missing data and resets.

    Subclasses implement :meth:`_predict` and :meth:`_update` on valid tensors.

    Parameters
    ----------
    model : SystemModel
        The model the filter believes (nominal or true).

    Shapes
    ------
    step: y (B, n_y), u_prev (B, n_u) -> x̂_{t|t} (B, n_x);
    filter: y (B, T, n_y), u (B, T, n_u) -> mean (B, T, n_x), cov (B, T, n_x, n_x)
    """

    def __init__(self, model: SystemModel) -> None:
        if not isinstance(model, SystemModel):
            raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
        self.model = model

    @property
    def n_x(self) -> int:
        """The state dimension of the model."""
        return self.model.n_x

    # -- subclass hooks ----------------------------------------------------------------------------
    @abc.abstractmethod
    def _predict(self, mean: Tensor, cov: Tensor, u: Tensor | None) -> tuple[Tensor, Tensor]:
        """Time update from x̂_{t-1|t-1} to x̂_{t|t-1}; cov (n, n) or (B, n, n)."""

    @abc.abstractmethod
    def _update(self, mean: Tensor, cov: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Measurement update from x̂_{t|t-1} to x̂_{t|t}; y holds no NaN."""

    # -- the protocol ------------------------------------------------------------------------------
    def init(self, batch_size: int, *, x0_mean: Any = None, x0_cov: Any = None) -> GaussianState:
        """The prior of x_0 for ``batch_size`` trajectories.

        Parameters
        ----------
        batch_size : int
        x0_mean : array-like, (n_x,) or (B, n_x), optional
            Default: the model's ``x0_mean``.
        x0_cov : array-like, (n_x, n_x) or (B, n_x, n_x), optional
            Default: the model's ``x0_cov``. Positive semi-definite.

        Shapes
        ------
        x0_mean : (n_x,) or (B, n_x), x0_cov : (n_x, n_x) or (B, n_x, n_x)
        -> GaussianState(mean (B, n_x), cov (n_x, n_x) or (B, n_x, n_x), fresh (B,))
        """
        m = self.model
        B, n = check_positive_int(batch_size, "batch_size"), m.n_x
        if x0_mean is None:
            mean = m.x0_mean.expand(B, n).clone()
        else:
            mean = as_tensor(x0_mean, "x0_mean", dtype=m.dtype, device=m.device)
            if mean.dim() == 1:
                check_shape(mean, "x0_mean", (n,))
                mean = mean.expand(B, n).clone()
            check_shape(mean, "x0_mean", (B, n))
            check_finite(mean, "x0_mean")
        if x0_cov is None:
            cov = m.x0_cov
        else:
            cov = as_tensor(x0_cov, "x0_cov", dtype=m.dtype, device=m.device)
            if cov.dim() == 3:
                check_shape(cov, "x0_cov", (B, n, n))
            check_covariance(cov, "x0_cov", n, semidefinite=True, batched=cov.dim() == 3)
        fresh = torch.ones(B, dtype=torch.bool, device=m.device)
        return GaussianState(mean, cov, fresh)

    def step(
        self, state: GaussianState, y: Any, u_prev: Any = None
    ) -> tuple[Tensor, GaussianState]:
        """One predict (with u_{t-1}) and update (with y_t).

        Shapes
        ------
        state.mean : (B, n_x); y : (B, n_y), a NaN row means no measurement;
        u_prev : (B, n_u) or None (zero input) -> x̂_{t|t} (B, n_x) and the new state
        """
        fast = self._fast_step(state, y, u_prev)
        if fast is not None:
            return fast
        m = self.model
        if not isinstance(state, GaussianState):
            raise TypeError(
                f"state: expected a GaussianState from init(), found {type(state).__name__}"
            )
        B = state.mean.shape[0]
        y = as_tensor(y, "y", dtype=m.dtype, device=m.device)
        if y.dim() != 2 or y.shape[1] != m.n_y:
            raise DimensionError(f"y: expected shape ({B}, {m.n_y}), found {tuple(y.shape)}")
        check_batch("y", y.shape[0], B)
        complete = math.isfinite(float(y.detach().sum()))  # no NaN (missing) and no inf
        if not complete:
            _check_no_inf(y)
        if u_prev is not None:
            u_prev = as_tensor(u_prev, "u_prev", dtype=m.dtype, device=m.device)
            check_shape(u_prev, "u_prev", (B, m.n_u))
            check_finite(u_prev, "u_prev")
        return self._step(state, y, u_prev, complete)

    def _fast_step(self, state: Any, y: Any, u_prev: Any) -> tuple[Tensor, GaussianState] | None:
        """A subclass's shortcut for :meth:`step` where it applies with the same result (to
        round-off), or None: :meth:`step` then converts, checks and runs :meth:`_step`."""
        return None

    def _step(
        self,
        state: GaussianState,
        y: Tensor,
        u_prev: Tensor | None,
        complete: bool | None = None,
    ) -> tuple[Tensor, GaussianState]:
        """Predict and update; ``complete`` (no NaN in y) is passed when already known."""
        mean, cov = self._predict_rows(state, u_prev)
        mean, cov = self._update_rows(mean, cov, y, complete)
        return mean, GaussianState(mean, cov, None)

    def _check_sequences(self, y: Any, u: Any) -> tuple[Tensor, Tensor | None]:
        m = self.model
        return check_sequences(y, u, m, y_dtype=m.dtype, device=m.device)

    def _filter_loop(self, state: GaussianState, y: Tensor, u: Tensor | None) -> FilterResult:
        means, covs = [], []
        for mean, after in step_through(self._step, state, y, u):
            means.append(mean)
            covs.append(after.cov)
        return FilterResult(torch.stack(means, 1), _stack_covs(covs, y.shape[0]))

    def reset(self, state: GaussianState, mask: Any) -> GaussianState:
        """Restart the rows where ``mask`` is True from the model's prior of x_0.

        Shapes
        ------
        mask : (B,) bool
        """
        mask = torch.as_tensor(mask, dtype=torch.bool, device=state.mean.device).reshape(-1)
        B, n = state.mean.shape
        check_batch("mask", mask.shape[0], B)
        if not bool(mask.any()):
            return state
        prior = self.model
        if bool(mask.all()):
            return self.init(B)
        mean = torch.where(mask[:, None], prior.x0_mean.expand(B, n), state.mean)
        cov = torch.where(
            mask[:, None, None], prior.x0_cov.expand(B, n, n), state.cov.expand(B, n, n)
        )
        fresh = mask if state.fresh is None else (mask | state.fresh)
        return GaussianState(mean, cov, fresh)

    # -- row-wise handling of fresh rows and missing measurements ----------------------------------
    def _predict_rows(self, state: GaussianState, u: Tensor | None) -> tuple[Tensor, Tensor]:
        fresh = state.fresh
        if fresh is not None:
            n_fresh = int(fresh.sum())
            if n_fresh == fresh.shape[0]:
                return state.mean, state.cov
            if n_fresh == 0:
                fresh = None
        mean, cov = self._predict(state.mean, state.cov, u)
        if fresh is None:
            return mean, cov
        B, n = mean.shape
        mean = torch.where(fresh[:, None], state.mean, mean)
        cov = torch.where(fresh[:, None, None], state.cov.expand(B, n, n), cov.expand(B, n, n))
        return mean, cov

    def _update_rows(
        self, mean: Tensor, cov: Tensor, y: Tensor, complete: bool | None = None
    ) -> tuple[Tensor, Tensor]:
        if complete:
            return self._update(mean, cov, y)
        missing = torch.isnan(y).any(-1)
        n_missing = int(missing.sum())
        if n_missing == 0:
            return self._update(mean, cov, y)
        if n_missing == y.shape[0]:
            return mean, cov
        y_filled = torch.where(missing[:, None], torch.zeros_like(y), y)
        new_mean, new_cov = self._update(mean, cov, y_filled)
        B, n = mean.shape
        mean = torch.where(missing[:, None], mean, new_mean)
        cov = torch.where(missing[:, None, None], cov.expand(B, n, n), new_cov.expand(B, n, n))
        return mean, cov


def check_sequences(
    y: Any,
    u: Any,
    model: SystemModel,
    *,
    y_dtype: torch.dtype,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Validate the arguments of an estimator's ``filter``.

    ``y`` becomes a ``y_dtype`` tensor of shape (B, T, n_y) with B, T >= 1 and no inf (NaN
    marks missing measurements); ``u``, when given, a finite tensor (B, T, n_u) in the model's
    dtype.

    Shapes
    ------
    y : (B, T, n_y), u : (B, T, n_u) or None -> (y (B, T, n_y), u (B, T, n_u) or None)
    """
    y = as_tensor(y, "y", dtype=y_dtype, device=device)
    if y.dim() != 3 or y.shape[2] != model.n_y:
        raise DimensionError(f"y: expected shape (B, T, {model.n_y}), found {tuple(y.shape)}")
    B, T = y.shape[0], y.shape[1]
    if T < 1 or B < 1:
        raise DimensionError(
            f"y: expected at least one trajectory and one step, found shape {tuple(y.shape)}"
        )
    _check_no_inf(y)
    if u is not None:
        u = as_tensor(u, "u", dtype=model.dtype, device=model.device)
        check_shape(u, "u", (B, T, model.n_u))
        check_finite(u, "u")
    return y, u


def _check_no_inf(y: Tensor) -> None:
    if bool(torch.isinf(y).any()):
        raise NonFiniteError(
            "y: found inf in the measurements; mark a missing measurement with NaN instead"
        )


def _stack_covs(covs: list[Tensor], B: int) -> Tensor:
    if all(c.dim() == 2 for c in covs):
        return torch.stack(covs, 0).unsqueeze(0).expand(B, -1, -1, -1)
    n = covs[0].shape[-1]
    return torch.stack([c.expand(B, n, n) for c in covs], 1)


def gain_and_joseph(cov: Tensor, H: Tensor, R: Tensor) -> tuple[Tensor, Tensor]:
    """Kalman gain and Joseph-form posterior covariance, batched or shared.

    K = P H'(H P H' + R)^{-1}, P⁺ = (I − K H) P (I − K H)' + K R K' (symmetrized).

    Shapes
    ------
    cov : (n, n) or (B, n, n); H : (m, n) or (B, m, n); R : (m, m)
    -> K (.., n, m), P⁺ (.., n, n), batched if cov or H is
    """
    PHt = cov @ H.mT  # (.., n, m)
    S = H @ PHt + R
    S = 0.5 * (S + S.mT)
    K = torch.linalg.solve(S, PHt.mT).mT  # (.., n, m)
    return K, joseph_cov(cov, K, H, R)


def joseph_cov(cov: Tensor, K: Tensor, H: Tensor, R: Tensor) -> Tensor:
    """(I − K H) P (I − K H)' + K R K', symmetrized; valid for any gain K.

    Shapes
    ------
    cov : (n, n) or (B, n, n); K : (.., n, m); H : (m, n) or (B, m, n); R : (m, m) -> (.., n, n)
    """
    n = cov.shape[-1]
    I_KH = torch.eye(n, dtype=cov.dtype, device=cov.device) - K @ H
    new_cov = I_KH @ cov @ I_KH.mT + K @ R @ K.mT
    return 0.5 * (new_cov + new_cov.mT)


def joseph_update(
    mean: Tensor, cov: Tensor, innovation: Tensor, H: Tensor, R: Tensor
) -> tuple[Tensor, Tensor]:
    """Kalman measurement update in Joseph form, batched or shared.

    Shapes
    ------
    mean : (B, n); cov : (n, n) or (B, n, n); innovation : (B, m); H : (m, n) or (B, m, n);
    R : (m, m) -> mean (B, n), cov (n, n) if cov and H are shared, else (B, n, n)
    """
    K, new_cov = gain_and_joseph(cov, H, R)
    if K.dim() == 2:
        mean = mean + innovation @ K.mT
    else:
        mean = mean + (K @ innovation.unsqueeze(-1)).squeeze(-1)
    return mean, new_cov
