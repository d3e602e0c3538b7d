"""The Kalman filter for linear Gaussian models, batched and differentiable."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._riccati import solve_dare
from ..errors import RiccatiError
from ..models.linear import LinearGaussianModel
from .base import FilterResult, GaussianFilter, GaussianState, gain_and_joseph, joseph_cov

__all__ = ["KalmanFilter", "SteadyStateGain", "steady_state_gain"]


class _Affine(NamedTuple):
    """One step of the cached recursion as a map: x̂_t = [x̂_{t-1}, y_t, u_{t-1}] M, then P_t.

    M stacks ((I − K_t C) A)', K_t' and ((I − K_t C) B)' (at t = 0, with no prediction,
    (I − K_0 C)', K_0' and zeros).
    """

    matrix: Tensor  # M (n_x + n_y + n_u, n_x)
    no_input: Tensor  # M[: n_x + n_y], for a step without u_{t-1}
    cov: Tensor  # P_{t|t}, the object the recursion keeps (the next step recognizes it)
    matrix_np: np.ndarray  # M as a NumPy view (the model is on the CPU)


class _Stationary(NamedTuple):
    """Constants of the converged filter: x̂_t = x̂_{t-1} Φ' + u_{t-1} Γ' + y_t K'."""

    gain: Tensor  # K (n_x, n_y)
    cov: Tensor  # stationary P_{t|t}; also the marker of a converged state
    phi_t: Tensor  # ((I - KC) A)'
    gamma_t: Tensor  # ((I - KC) B)'
    gain_t: Tensor  # K'
    tol: float


_MAX_SCHEDULE = 10_000


class _ModelCache:
    """Constants derived from the model, valid while its tensors are unchanged (same objects,
    same in-place version counters): the DARE solution, the stationary filter, and the gains and
    covariances of the recursion started from the model's prior (the same for every batch)."""

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.dare: SteadyStateGain | None = None
        self.stationary: _Stationary | bool | None = None  # False: no stabilizing DARE solution
        self.gains: list[Tensor] = []
        self.covs: list[Tensor] = []
        self.index: dict[int, int] = {}
        self.steps: dict[int, _Affine] = {}  # schedule step t as a map (see _affine_step)
        self.steady_step: _Affine | None = None


class SteadyStateGain(NamedTuple):
    """Stationary Kalman filter quantities of a time-invariant linear model (from the DARE).

    Attributes
    ----------
    gain : (n_x, n_y)
        Filter-form gain K: x̂_{t|t} = x̂_{t|t-1} + K (y_t − C x̂_{t|t-1}).
    predictor_gain : (n_x, n_y)
        Predictor-form gain A K, as returned by ``control.dlqe``'s convention
        x̂_{t+1|t} = A x̂_{t|t-1} + B u_t + A K (y_t − C x̂_{t|t-1}).
    cov_pred : (n_x, n_x)
        Stationary a-priori error covariance P_{t|t-1} (the DARE's solution).
    cov : (n_x, n_x)
        Stationary a-posteriori error covariance P_{t|t}.

    Shapes
    ------
    gain : (n_x, n_y), predictor_gain : (n_x, n_y), cov_pred : (n_x, n_x), cov : (n_x, n_x)
    """

    gain: Tensor
    predictor_gain: Tensor
    cov_pred: Tensor
    cov: Tensor


def steady_state_gain(model: LinearGaussianModel) -> SteadyStateGain:
    """Solve the filter DARE of ``model`` with SciPy.

    P = A P A' − A P C' (C P C' + V)^{-1} C P A' + W, with W = process_cov, V = measurement_cov.

    Raises
    ------
    RiccatiError
        If (A, C) is not detectable or (A, W^{1/2}) not stabilizable on the unit circle.

    Shapes
    ------
    model with A (n_x, n_x), C (n_y, n_x) -> SteadyStateGain(gain (n_x, n_y),
    predictor_gain (n_x, n_y), cov_pred (n_x, n_x), cov (n_x, n_x)) in the model's dtype
    """
    if not isinstance(model, LinearGaussianModel):
        raise TypeError(f"model: expected a LinearGaussianModel, found {type(model).__name__}")
    m = model.numpy()
    A, C, W, V = m["A"], m["C"], m["process_cov"], m["measurement_cov"]
    # the filter DARE is the control DARE of the dual pair (A', C')
    P, _ = solve_dare(
        A.T,
        C.T,
        W,
        V,
        kind="filter",
        hint="check that (A, C) is detectable and that the process noise reaches every "
        "unstable mode",
    )
    S = C @ P @ C.T + V
    K = np.linalg.solve(S, C @ P).T
    I_KC = np.eye(A.shape[0]) - K @ C
    P_post = I_KC @ P @ I_KC.T + K @ V @ K.T
    P_post = 0.5 * (P_post + P_post.T)
    to = dict(dtype=model.dtype, device=model.device)
    return SteadyStateGain(
        torch.as_tensor(K, **to),
        torch.as_tensor(A @ K, **to),
        torch.as_tensor(P, **to),
        torch.as_tensor(P_post, **to),
    )


class KalmanFilter(GaussianFilter):
    """Kalman filter for a :class:`LinearGaussianModel`, batched over trajectories.

    Predict: x̂⁻ = A x̂ + B u, P⁻ = A P A' + W. Update (Joseph form):
    K = P⁻C'(C P⁻ C' + V)^{-1}, x̂ = x̂⁻ + K (y − C x̂⁻), P = (I − KC) P⁻ (I − KC)' + K V K'.

    The covariance recursion does not depend on the data: while every trajectory of the batch
    shares it (same prior, no missing measurement) it is computed once, as an (n_x, n_x) matrix,
    for the whole batch. Rows with missing measurements (NaN) get their own covariance. The
    recursion from the model's prior is kept for later batches and episodes; along it (or once
    converged) a :meth:`step` of one trajectory on the CPU, where no gradient with respect to the
    model is needed, is one affine map of (x̂_{t-1}, y_t, u_{t-1}), with the same result.

    Parameters
    ----------
    model : LinearGaussianModel
        The model the filter believes. Gradients flow to its tensors (A, B, C, covariances).
    steady_state : bool, default False
        Use the constant stationary gain from the DARE (:func:`steady_state_gain`) instead of the
        time-varying one. The covariance then reported is the exact error covariance of that
        fixed-gain filter (the Joseph form holds for any gain); it converges to the stationary
        P_{t|t}. The DARE is solved with SciPy, so the gain itself is not differentiable.

    Shapes
    ------
    step: y (B, n_y), u_prev (B, n_u) -> x̂ (B, n_x);
    filter: y (B, T, n_y), u (B, T, n_u) -> mean (B, T, n_x), cov (B, T, n_x, n_x)

    Examples
    --------
    >>> import numpy as np, torch
    >>> from kalmannet_ctrl.models import LinearGaussianModel
    >>> model = LinearGaussianModel(A=[[1.0, 1.0], [0.0, 1.0]], C=[[1.0, 0.0]],
    ...                             process_cov=0.01 * np.eye(2), measurement_cov=[[1.0]])
    >>> traj = model.simulate(50, 8, generator=torch.Generator().manual_seed(0))
    >>> KalmanFilter(model).filter(traj.y).mean.shape
    torch.Size([8, 50, 2])
    """

    def __init__(self, model: LinearGaussianModel, *, steady_state: bool = False) -> None:
        if not isinstance(model, LinearGaussianModel):
            raise TypeError(
                f"model: KalmanFilter needs a LinearGaussianModel, found {type(model).__name__}; "
                "use ExtendedKalmanFilter or UnscentedKalmanFilter for nonlinear models, "
                "or kalmannet_ctrl.models.linearize"
            )
        super().__init__(model)
        self.steady_state = bool(steady_state)
        self._cache: _ModelCache | None = None
        if self.steady_state:
            self.steady  # noqa: B018 - solve the DARE now: an unsolvable model fails here

    @property
    def steady(self) -> SteadyStateGain:
        """The stationary gain and covariances of the model (solved on first use).

        Shapes
        ------
        -> SteadyStateGain(gain (n_x, n_y), predictor_gain (n_x, n_y), cov_pred (n_x, n_x),
        cov (n_x, n_x))
        """
        cache = self._model_cache()
        if cache.dare is None:
            cache.dare = steady_state_gain(self.model)
        return cache.dare

    def _predict(self, mean: Tensor, cov: Tensor, u: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.model.f(mean, u), self._predict_cov(cov)

    def _predict_cov(self, cov: Tensor) -> Tensor:
        m = self.model
        cov = m.A @ cov @ m.A.mT + m.process_cov
        return 0.5 * (cov + cov.mT)

    def _gain_and_cov(self, cov_pred: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        if not self.steady_state:
            return gain_and_joseph(cov_pred, m.C, m.measurement_cov)
        K = self.steady.gain
        return K, joseph_cov(cov_pred, K, m.C, m.measurement_cov)

    def _update(self, mean: Tensor, cov: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        K, cov = self._gain_and_cov(cov)
        innovation = y - self.model.h(mean)
        if K.dim() == 2:
            return mean + innovation @ K.mT, cov
        return mean + (K @ innovation.unsqueeze(-1)).squeeze(-1), cov

    # -- fast paths ------------------------------------------------------------------------------
    # The covariance recursion from the model's prior is the same for every batch and episode:
    # it is computed once, kept in the model cache, and a state that holds one of its covariance
    # objects is recognized by identity. Once the covariance has converged to the stationary one
    # (to round-off) the recursion reduces to x̂_t = Φ x̂_{t-1} + Γ u_{t-1} + K y_t. Both paths
    # are used only where no gradient with respect to the model is needed.

    def _model_cache(self) -> _ModelCache:
        m = self.model
        A, B, C, W, V, P0 = m.A, m.B, m.C, m.process_cov, m.measurement_cov, m.x0_cov
        key = (
            id(A), A._version, id(B), B._version, id(C), C._version,
            id(W), W._version, id(V), V._version, id(P0), P0._version,
        )  # fmt: skip
        if self._cache is None or self._cache.key != key:
            self._cache = _ModelCache(key)
        return self._cache

    def _grad_needed(self) -> bool:
        if not torch.is_grad_enabled():
            return False
        m = self.model
        return (  # written out: this runs at every step
            m.A.requires_grad
            or m.B.requires_grad
            or m.C.requires_grad
            or m.process_cov.requires_grad
            or m.measurement_cov.requires_grad
            or m.x0_mean.requires_grad
            or m.x0_cov.requires_grad
        )

    def _stationary_of(self, cache: _ModelCache) -> _Stationary | None:
        """The converged filter's constants (None without a stabilizing DARE solution)."""
        if cache.stationary is None:
            try:
                ss = self.steady
            except RiccatiError:
                cache.stationary = False
                return None
            m = self.model
            I_KC = torch.eye(m.n_x, dtype=m.dtype, device=m.device) - ss.gain @ m.C
            tol = 1e-12 if m.dtype == torch.float64 else 1e-5
            cache.stationary = _Stationary(
                ss.gain, ss.cov, (I_KC @ m.A).mT, (I_KC @ m.B).mT, ss.gain.mT.contiguous(), tol
            )
        return cache.stationary or None

    def _snap(self, cov: Tensor, fast: _Stationary | None) -> Tensor:
        """The stationary covariance object when ``cov`` (shared) equals it to round-off."""
        if fast is None or cov.dim() != 2:
            return cov
        scale = float(fast.cov.abs().amax())
        if float((cov - fast.cov).abs().amax()) <= fast.tol * max(scale, 1e-300):
            return fast.cov
        return cov

    def _schedule(
        self, t: int, fast: _Stationary | None, cache: _ModelCache
    ) -> tuple[Tensor, Tensor] | None:
        """(K_t, P_{t|t}) of the recursion from the model's prior, computed once and kept."""
        while len(cache.covs) <= t:
            k = len(cache.covs)
            if k >= _MAX_SCHEDULE:
                return None
            cov = self.model.x0_cov if k == 0 else self._predict_cov(cache.covs[-1])
            K, cov = self._gain_and_cov(cov)
            cov = self._snap(cov, fast)
            cache.gains.append(K)
            cache.covs.append(cov)
            cache.index.setdefault(id(cov), k)
        return cache.gains[t], cache.covs[t]

    def _schedule_position(self, state: GaussianState, cache: _ModelCache) -> int | None:
        """The schedule step that follows ``state``, if its covariance is a scheduled one."""
        if state.fresh is not None:
            if state.cov is self.model.x0_cov and bool(state.fresh.all()):
                return 0
            return None
        t = cache.index.get(id(state.cov))
        if t is None or cache.covs[t] is not state.cov:
            return None
        return t + 1

    def _step(
        self,
        state: GaussianState,
        y: Tensor,
        u_prev: Tensor | None,
        complete: bool | None = None,
    ) -> tuple[Tensor, GaussianState]:
        if complete is None:
            complete = math.isfinite(float(y.detach().sum()))
        # the model cache is looked up once per step (the key reads every tensor's version)
        cache = None if self._grad_needed() else self._model_cache()
        fast = None if cache is None else self._stationary_of(cache)
        if complete and cache is not None:
            if fast is not None and state.cov is fast.cov and state.fresh is None:
                mean = torch.addmm(y @ fast.gain_t, state.mean, fast.phi_t)
                if u_prev is not None and self.model.n_u > 0:
                    mean = torch.addmm(mean, u_prev, fast.gamma_t)
                return mean, GaussianState(mean, state.cov, None)
            t = self._schedule_position(state, cache)
            entry = None if t is None else self._schedule(t, fast, cache)
            if entry is not None:
                K, cov = entry
                m = self.model
                pred = state.mean if t == 0 else m.f(state.mean, u_prev)
                mean = pred + (y - m.h(pred)) @ K.mT
                return mean, GaussianState(mean, cov, None)
        mean, new = super()._step(state, y, u_prev, complete)
        return mean, GaussianState(new.mean, self._snap(new.cov, fast), None)

    # -- the one-trajectory shortcut of step ------------------------------------------------------
    # Along the cached recursion (from the model's prior, or converged) a step is one affine map of
    # the previous estimate, the measurement and the input: one concatenation and one product
    # instead of step's conversions, checks and predict/update pieces. It is taken for B = 1 on
    # the CPU, for a state on that recursion, complete finite inputs and where no gradient with
    # respect to the model is needed; anything else takes the general path.

    def _affine_step(self, state: Any) -> _Affine | None:
        """The next step of ``state`` as a map, where ``state`` is on the cached recursion.

        For one trajectory (B = 1) of a model on the CPU, when no gradient with respect to the
        model is needed. :class:`~kalmannet_ctrl.controllers.LQG`'s NumPy path uses it as well.
        """
        if not isinstance(state, GaussianState) or state.mean.shape[0] != 1:
            return None
        if self._grad_needed() or not self.model.A.is_cpu:
            return None
        cache = self._model_cache()
        fast = cache.stationary
        if state.fresh is None and isinstance(fast, _Stationary) and state.cov is fast.cov:
            if cache.steady_step is None:
                cache.steady_step = self._affine(fast.gain, fast.cov, first=False)
            return cache.steady_step
        t = self._schedule_position(state, cache)
        if t is None:
            return None
        step = cache.steps.get(t)
        if step is None:
            entry = self._schedule(t, self._stationary_of(cache), cache)
            if entry is None:
                return None
            step = cache.steps[t] = self._affine(*entry, first=t == 0)
        return step

    def _affine(self, gain: Tensor, cov: Tensor, *, first: bool) -> _Affine:
        """The step with gain K_t that ends at P_t = ``cov``; ``first``: t = 0, no prediction."""
        m = self.model
        # constants of the model, kept: never inference tensors, never part of a graph
        with torch.inference_mode(False), torch.no_grad():
            I_KC = torch.eye(m.n_x, dtype=m.dtype, device=m.device) - gain @ m.C
            if first:
                phi, gamma = I_KC, torch.zeros_like(m.B)
            else:
                phi, gamma = I_KC @ m.A, I_KC @ m.B
            matrix = torch.cat((phi.mT, gain.mT, gamma.mT)).contiguous()
        return _Affine(matrix, matrix[: m.n_x + m.n_y], cov, matrix.numpy())

    def _fast_step(self, state: Any, y: Any, u_prev: Any) -> tuple[Tensor, GaussianState] | None:
        step = self._affine_step(state)
        if step is None:
            return None
        m = self.model
        y = _cpu_row(y, m.n_y, m.dtype)
        if u_prev is None:
            parts, matrix = (state.mean, y), step.no_input
        else:
            u_prev = _cpu_row(u_prev, m.n_u, m.dtype) if m.n_u else None
            parts, matrix = (state.mean, y, u_prev), step.matrix
        if y is None or parts[-1] is None:
            return None
        z = torch.cat(parts, 1)
        if not all(map(math.isfinite, z.tolist()[0])):  # a missing measurement, or inf
            return None
        mean = torch.mm(z, matrix)
        return mean, GaussianState(mean, step.cov, None)

    def filter(
        self, y: Any, u: Any = None, *, x0_mean: Any = None, x0_cov: Any = None
    ) -> FilterResult:
        """Filter a batch of sequences (see :meth:`GaussianFilter.filter`).

        Without missing measurements and with a prior covariance shared by the batch, the gains
        and covariances are computed once for all trajectories, then the means follow from one
        batched linear recursion.

        Shapes
        ------
        y : (B, T, n_y), u : (B, T, n_u) or None -> mean (B, T, n_x), cov (B, T, n_x, n_x)
        """
        y, u = self._check_sequences(y, u)
        B, T = y.shape[0], y.shape[1]
        state = self.init(B, x0_mean=x0_mean, x0_cov=x0_cov)
        if state.cov.dim() == 3 or bool(torch.isnan(y).any()):
            return self._filter_loop(state, y, u)
        m = self.model
        n = m.n_x
        eye = torch.eye(n, dtype=m.dtype, device=m.device)
        # time-varying gains for t < tc, the stationary gain K_ss from tc on
        gains, covs, K_ss = self._gain_sequence(state.cov, T)
        tc = gains.shape[0]
        I_KC = eye - gains @ m.C  # (tc, n, n)
        phi = I_KC @ m.A
        yT = y.transpose(0, 1)  # (T, B, n_y)
        # drive_t = K_t y_t + (I - K_t C) B u_{t-1}, laid out (T, B, n)
        drive = torch.empty(T, B, n, dtype=m.dtype, device=m.device)
        drive[:tc] = yT[:tc] @ gains.mT
        if tc < T:
            I_KC_ss = eye - K_ss @ m.C
            drive[tc:] = yT[tc:] @ K_ss.mT
        if u is not None and m.n_u > 0 and T > 1:
            Bu = u.transpose(0, 1)[:-1] @ m.B.mT  # (T-1, B, n): B u_{t-1} for t = 1 .. T-1
            drive[1:tc] += Bu[: tc - 1] @ I_KC[1:].mT
            if tc < T:
                drive[tc:] += Bu[tc - 1 :] @ I_KC_ss.mT
        phi_t = phi.mT
        phi_ss_t = (I_KC_ss @ m.A).mT if tc < T else None
        first = state.mean @ I_KC[0].mT + drive[0]
        no_grad = not (torch.is_grad_enabled() and (first.requires_grad or drive.requires_grad))
        if no_grad:  # write each step straight into the output buffer
            means = torch.empty(T, B, n, dtype=m.dtype, device=m.device)
            means[0] = first
            for t in range(1, T):
                torch.addmm(drive[t], means[t - 1], phi_t[t] if t < tc else phi_ss_t, out=means[t])
            mean_seq = means.transpose(0, 1)
        else:
            mean = first
            out = [mean]
            for t in range(1, T):
                mean = torch.addmm(drive[t], mean, phi_t[t] if t < tc else phi_ss_t)
                out.append(mean)
            mean_seq = torch.stack(out, 1)
        return FilterResult(mean_seq, covs.unsqueeze(0).expand(B, -1, -1, -1))

    def _gain_sequence(self, cov0: Tensor, T: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Gains and posterior covariances P_{t|t} for t < T, from the prior covariance.

        Returns the gains K_t for t < tc, the T covariances, and the stationary gain used from tc
        on (None when tc = T): tc is the step after the covariance reached the stationary one.
        """
        cache = None if self._grad_needed() else self._model_cache()
        fast = None if cache is None else self._stationary_of(cache)
        scheduled = cache is not None and cov0 is self.model.x0_cov
        gains, covs = [], []
        cov = cov0
        for t in range(T):
            entry = self._schedule(t, fast, cache) if scheduled else None
            if entry is not None:
                K, cov = entry
            else:
                if t > 0:
                    cov = self._predict_cov(cov)
                K, cov = self._gain_and_cov(cov)
                cov = self._snap(cov, fast)
            gains.append(K)
            covs.append(cov)
            if fast is not None and cov is fast.cov and t + 1 < T:
                covs.extend([fast.cov] * (T - t - 1))
                return torch.stack(gains), torch.stack(covs), fast.gain
        return torch.stack(gains), torch.stack(covs), None

    def __repr__(self) -> str:
        return f"KalmanFilter(model={self.model!r}, steady_state={self.steady_state})"


def _cpu_row(value: Any, n: int, dtype: torch.dtype) -> Tensor | None:
    """``value`` as one (1, n) row in ``dtype`` when it is a floating CPU tensor of that shape
    (None otherwise: the general path converts and checks it)."""
    if not isinstance(value, Tensor) or value.shape != (1, n) or not value.is_cpu:
        return None
    if value.dtype == dtype:
        return value
    return value.to(dtype) if value.is_floating_point() else None
