"""The controller base, the Controller and OutputFeedback protocols, and their shared helpers.

A controller has the policy signature of Stable-Baselines3,
``predict(observation, state=None, episode_start=None, deterministic=True)``, so that the same
object runs in our environments, in :meth:`SystemModel.simulate` and in
``stable_baselines3.common.evaluation.evaluate_policy``. Observations arrive as NumPy arrays
(float32 from Gymnasium environments) or tensors, one ``(n_y,)`` or a batch ``(B, n_y)``; the
helpers here turn them into a batch tensor and turn actions back into NumPy arrays of the
matching layout.

:class:`BaseController` follows the template of Stable-Baselines3's ``BasePolicy.predict``: the
public :meth:`~BaseController.predict` (and its tensor twin :meth:`~BaseController.step`)
converts and checks the input once, applies the ``episode_start`` resets, runs without gradients
and converts the action back; a subclass implements :meth:`~BaseController.init`,
:meth:`~BaseController.reset_rows` and one :meth:`~BaseController.act` step.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from .._validation import as_tensor, check_batch, shape_str
from ..errors import BatchSizeError, DimensionError, NonFiniteError
from ..estimators.base import Estimator
from ..estimators.default import default_filter

__all__ = [
    "BaseController",
    "Controller",
    "ObservationBatch",
    "OutputFeedback",
    "as_action",
    "as_observation_batch",
    "check_estimator",
    "episode_start_mask",
    "estimator_mean",
    "parse_input_bounds",
    "resume_state",
]


@runtime_checkable
class Controller(Protocol):
    """What every controller provides: the policy signature of Stable-Baselines3.

    ``predict`` maps the current observation (the measurement y_t, one or a batch) and the
    controller's recurrent state to the action u_t. State is passed in and returned, never kept on
    the object, so one controller serves any number of environments.
    """

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """Choose the action for ``observation``.

        Parameters
        ----------
        observation : array-like or Tensor, (n_obs,) or (B, n_obs)
        state : optional
            The state returned by the previous call; ``None`` starts a new batch.
        episode_start : array-like of bool, (B,), optional
            Rows that begin a new episode at this call (their state is reset first).
        deterministic : bool
            Ignored by deterministic controllers.

        Returns
        -------
        action : np.ndarray, (n_u,) or (B, n_u)
        state : the new recurrent state (``None`` for memoryless controllers)
        """
        ...


@runtime_checkable
class OutputFeedback(Protocol):
    """A controller that acts on a state estimate and reports it.

    Every :class:`BaseController` has it (``estimate`` returns None when the controller carries
    no estimator); other objects with the Controller protocol may declare it too. Benchmarks use
    it for the estimation error of closed-loop runs.
    """

    def estimate(self, state: Any) -> Tensor | None:
        """x̂_{t|t} behind the last action, (B, n_x), or None when there is none.

        Shapes
        ------
        -> (B, n_x) or None
        """
        ...


class BaseController(abc.ABC):
    """The base of the library's controllers, on the template of SB3's ``BasePolicy.predict``.

    :meth:`predict` (NumPy or tensors, one observation or a batch) and :meth:`step` (tensors)
    convert and check the observation once (shape (n_y,) / (B, n_y), no infinite entries; NaN
    rows mark missing measurements when :attr:`accepts_missing`), start a batch or reset the
    rows flagged by ``episode_start``, and call the subclass's :meth:`act`; :meth:`predict` runs
    it without gradients (``torch.no_grad()``, or ``torch.inference_mode()`` where
    :attr:`inference_safe`) and returns the action as a NumPy array in the observation's dtype.
    A subclass implements:

    - :meth:`init` — the recurrent state of a new batch (a NamedTuple of type
      :attr:`state_type` with a ``u_prev`` (B, n_u) field: the last action, zero at a start);
    - :meth:`reset_rows` — that state with the flagged rows restarted;
    - :meth:`act` — one step from a checked (B, n_y) measurement tensor to the action (within
      :attr:`input_bounds`: see :meth:`clip`) and the new state.

    Output feedback: a controller that carries an :attr:`estimator` keeps its state in the
    ``estimator_state`` field of its state, and :meth:`estimate` returns x̂_{t|t}.

    Attributes
    ----------
    state_type : type
        The NamedTuple class of the recurrent state.
    accepts_missing : bool
        Whether a NaN in an observation row is accepted (a missing measurement: the estimator
        predicts only); otherwise NonFiniteError.
    inference_safe : bool
        Whether :meth:`predict` may run under ``torch.inference_mode()`` (about 10 % less
        overhead per tensor operation than ``torch.no_grad()``, the default). Inference tensors
        have no version counters and cannot be saved for backward, so only controllers whose
        ``act`` (estimator included) never relies on either declare it (MPC).
    estimator : Estimator or None
    input_bounds : tuple of Tensor (n_u,), or None
        Actuator limits the actions are kept in.

    Shapes
    ------
    predict: observation (n_y,) or (B, n_y) -> action (n_u,) or (B, n_u);
    step: y (B, n_y) -> u (B, n_u)
    """

    state_type: ClassVar[type]
    accepts_missing: ClassVar[bool] = True
    inference_safe: ClassVar[bool] = False
    estimator: Any = None
    input_bounds: tuple[Tensor, Tensor] | None = None

    # -- what a subclass provides ----------------------------------------------------------------
    @property
    @abc.abstractmethod
    def n_y(self) -> int:
        """Size of one observation."""

    @property
    @abc.abstractmethod
    def n_u(self) -> int:
        """Size of one action."""

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the controller computes in (float64 unless a subclass says otherwise)."""
        return torch.float64

    @property
    def device(self) -> torch.device:
        """The device the controller computes on (CPU unless a subclass says otherwise)."""
        return torch.device("cpu")

    @abc.abstractmethod
    def init(self, batch_size: int) -> Any:
        """The state before the first measurement of ``batch_size`` episodes.

        Shapes
        ------
        -> a ``state_type`` whose ``u_prev`` is (B, n_u) zeros
        """

    @abc.abstractmethod
    def reset_rows(self, state: Any, mask: Tensor) -> Any:
        """``state`` with the rows where ``mask`` is True restarted as by :meth:`init`.

        Shapes
        ------
        mask : (B,) bool
        """

    @abc.abstractmethod
    def act(
        self, state: Any, y: Tensor, *, episode_start: Tensor | None, deterministic: bool
    ) -> tuple[Tensor, Any]:
        """One control step: the action u_t for the measurements y_t, and the new state.

        Parameters
        ----------
        state :
            A ``state_type`` of batch size B (already reset where ``episode_start`` is True).
        y : Tensor, (B, n_y)
            Checked measurements in :attr:`dtype` (NaN rows only if :attr:`accepts_missing`).
        episode_start : Tensor of bool, (B,), or None
            The rows reset before this step (None when none was).
        deterministic : bool
            For stochastic controllers: the mean action (True) or a sample.

        Returns
        -------
        u : Tensor, (B, n_u)
            Within :attr:`input_bounds`; it is also the new state's ``u_prev``.
        state

        Shapes
        ------
        y : (B, n_y) -> u (B, n_u)
        """

    # -- shared ----------------------------------------------------------------------------------
    def estimate(self, state: Any) -> Tensor | None:
        """The state estimate x̂_{t|t} behind the last action, or None without an estimator.

        Raises
        ------
        TypeError
            If ``state`` is not a :attr:`state_type`.

        Shapes
        ------
        -> (B, n_x) or None
        """
        if self.estimator is None:
            if not isinstance(state, self.state_type):
                raise TypeError(
                    f"state: expected an {self.state_type.__name__}, found {type(state).__name__}"
                )
            return None
        return estimator_mean(state, self.state_type)

    def clip(self, u: Tensor) -> Tensor:
        """``u`` clamped to :attr:`input_bounds` (unchanged without bounds).

        Shapes
        ------
        u : (B, n_u) -> (B, n_u)
        """
        if self.input_bounds is None:
            return u
        low, high = self.input_bounds
        return torch.clamp(u, min=low, max=high)

    def step(
        self, state: Any, y: Any, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[Tensor, Any]:
        """One control step on tensors (differentiable where the controller is).

        Parameters
        ----------
        state : ``state_type`` or None
            From :meth:`init` or the previous step; ``None`` starts a new batch.
        y : array-like or Tensor, (B, n_y)
            Measurements y_t; a NaN in a row means no measurement (if :attr:`accepts_missing`).
        episode_start : array-like of bool, (B,), optional
            Rows restarted (:meth:`reset_rows`) before this step.
        deterministic : bool
            For stochastic controllers: the mean action (True) or a sample.

        Returns
        -------
        u : Tensor, (B, n_u)
            The action u_t in :attr:`dtype`.
        state

        Raises
        ------
        DimensionError
            If ``y`` is not (B, n_y).
        NonFiniteError
            On infinite entries in ``y`` (or NaN ones unless :attr:`accepts_missing`).
        BatchSizeError
            If B differs from the state's without a reset of every row.

        Shapes
        ------
        y : (B, n_y) -> u (B, n_u)
        """
        y = as_tensor(y, "y", dtype=self.dtype, device=self.device)
        if y.dim() != 2 or y.shape[1] != self.n_y or y.shape[0] < 1:
            raise DimensionError(
                f"y: expected shape (B, {self.n_y}), found {shape_str(tuple(y.shape))}"
            )
        _check_finite_rows(y, "y", self.accepts_missing)
        return self._run(state, y, episode_start, deterministic)

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """The action for the measurement y_t, on the Controller protocol.

        Parameters
        ----------
        observation : array-like or Tensor, (n_y,) or (B, n_y)
            The measurements (NumPy float32 from a Gymnasium env, an SB3 VecEnv, or tensors). A
            NaN in a row means that measurement is missing (if :attr:`accepts_missing`).
        state : ``state_type``, optional
            Returned by the previous call; ``None`` starts a new batch.
        episode_start : array-like of bool, (B,), optional
            Rows that begin a new episode (:meth:`reset_rows`).
        deterministic : bool
            For stochastic controllers: the mean action (True) or a sample.

        Returns
        -------
        action : np.ndarray, (n_u,) or (B, n_u)
            u_t, within :attr:`input_bounds`; the observation's dtype when it is a NumPy
            floating array, float64 otherwise.
        state : ``state_type``
            Computed without gradients (under ``torch.inference_mode()`` where
            :attr:`inference_safe`): pass it back to :meth:`predict`; for a differentiable loop
            use :meth:`step` from ``state=None``.

        Raises
        ------
        DimensionError
            If the observation is not (n_y,) or (B, n_y).
        BatchSizeError
            If B differs from the previous call's without a reset of every row, or
            ``episode_start`` has the wrong length.
        NonFiniteError
            On infinite entries (or NaN ones unless :attr:`accepts_missing`).

        Shapes
        ------
        observation : (n_y,) or (B, n_y) -> action (n_u,) or (B, n_u)
        """
        obs = as_observation_batch(
            observation,
            self.n_y,
            dtype=self.dtype,
            device=self.device,
            allow_nan_rows=self.accepts_missing,
        )
        with torch.inference_mode() if self.inference_safe else torch.no_grad():
            u, new_state = self._run(state, obs.value, episode_start, deterministic)
        return as_action(u, obs.single, obs.np_dtype), new_state

    def _run(
        self, state: Any, y: Tensor, episode_start: Any, deterministic: bool
    ) -> tuple[Tensor, Any]:
        mask = episode_start_mask(episode_start, y.shape[0], device=self.device)
        state = resume_state(state, self.state_type, y.shape[0], mask, self.init, self.reset_rows)
        return self.act(state, y, episode_start=mask, deterministic=deterministic)


def _check_finite_rows(y: Tensor, name: str, allow_nan: bool) -> None:
    if bool(torch.isinf(y).any()):
        hint = " (NaN marks a missing measurement)" if allow_nan else ""
        raise NonFiniteError(
            f"{name}: expected finite values{hint}, "
            f"found {int(torch.isinf(y).sum())} infinite entries"
        )
    if not allow_nan and bool(torch.isnan(y).any()):
        raise NonFiniteError(
            f"{name}: expected finite values, found {int(torch.isnan(y).sum())} NaN entries"
        )


class ObservationBatch(NamedTuple):
    """An observation converted to a batch tensor, and how to shape the answer.

    Attributes
    ----------
    value : Tensor, (B, n)
    single : bool
        True when the observation was one vector (n,): the action is returned as (n_u,).
    np_dtype : np.dtype
        The dtype of the returned action: the observation's when it is a NumPy floating array,
        float64 otherwise.
    """

    value: Tensor
    single: bool
    np_dtype: np.dtype


def as_observation_batch(
    observation: Any,
    n: int,
    name: str = "observation",
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    allow_nan_rows: bool = False,
) -> ObservationBatch:
    """Convert one observation (n,) or a batch (B, n) to a (B, n) tensor.

    Parameters
    ----------
    observation : array-like or Tensor, (n,) or (B, n)
    n : int
        Expected size of one observation.
    name : str
        Argument name used in error messages.
    dtype, device :
        Of the returned tensor.
    allow_nan_rows : bool
        Accept NaN entries (a NaN in a row marks a missing measurement for the estimators);
        infinite entries are always rejected.

    Shapes
    ------
    observation : (n,) or (B, n) -> value (B, n)

    Raises
    ------
    DimensionError
        If the observation is not (n,) or (B, n) with B >= 1.
    NonFiniteError
        On infinite entries, or on NaN entries unless ``allow_nan_rows``.
    """
    if isinstance(observation, np.ndarray) and np.issubdtype(observation.dtype, np.floating):
        np_dtype = observation.dtype
    else:
        np_dtype = np.dtype(np.float64)
    obs = as_tensor(observation, name)
    found = shape_str(tuple(obs.shape))
    if obs.dim() == 1:
        single = True
        obs = obs.unsqueeze(0)
    elif obs.dim() == 2:
        single = False
    else:
        raise DimensionError(f"{name}: expected shape ({n},) or (B, {n}), found {found}")
    if obs.shape[1] != n or obs.shape[0] < 1:
        raise DimensionError(
            f"{name}: expected shape ({n},) or (B, {n}) with B >= 1, found {found}"
        )
    obs = obs.detach().to(dtype=dtype, device=device)
    _check_finite_rows(obs, name, allow_nan_rows)
    return ObservationBatch(obs, single, np_dtype)


def as_action(u: Tensor, single: bool, np_dtype: np.dtype) -> np.ndarray:
    """Convert a batch of actions to the NumPy layout of the observation it answers.

    Shapes
    ------
    u : (B, n_u) -> (n_u,) when ``single`` (then B = 1), else (B, n_u)
    """
    out = u.detach().cpu().numpy().astype(np_dtype, copy=False)
    return out[0] if single else out


def episode_start_mask(
    episode_start: Any,
    batch_size: int,
    *,
    device: torch.device | str | None = None,
) -> Tensor | None:
    """Rows that start an episode, as a (B,) bool tensor, or None when no row does.

    Parameters
    ----------
    episode_start : None, bool, or array-like of bool/0-1 numbers, (B,)
        SB3 passes a float or bool array of shape (n_envs,); a single bool applies to every row.
    batch_size : int
        B, the batch size of the observation.

    Shapes
    ------
    episode_start : (B,) or scalar -> (B,) bool, or None

    Raises
    ------
    BatchSizeError
        If the array's length is not B.
    """
    if episode_start is None:
        return None
    if isinstance(episode_start, Tensor):
        arr = episode_start.detach().cpu().numpy()
    else:
        arr = np.asarray(episode_start)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.bool_) or np.issubdtype(arr.dtype, np.number)
    ):
        raise TypeError(
            "episode_start: expected None or an array of bools, "
            f"found {type(episode_start).__name__}"
        )
    if arr.ndim == 0:
        arr = np.full(batch_size, bool(arr))
    if arr.ndim != 1:
        raise DimensionError(
            f"episode_start: expected shape ({batch_size},), found {shape_str(arr.shape)}"
        )
    check_batch("episode_start", arr.shape[0], batch_size)
    mask = torch.as_tensor(arr.astype(bool), device=device)
    if not bool(mask.any()):
        return None
    return mask


def check_estimator(estimator: Any, model: Any) -> Any:
    """``estimator`` checked against the controller's ``model`` (Estimator protocol, n_x, and
    the n_y/n_u of its own model); None gives :func:`~kalmannet_ctrl.estimators.default_filter`
    (the Kalman filter of a linear model, the extended Kalman filter of a nonlinear one)."""
    if estimator is None:
        return default_filter(model)
    if not isinstance(estimator, Estimator):
        raise TypeError(
            "estimator: expected an object with the Estimator protocol "
            f"(n_x, init, step, filter, reset), found {type(estimator).__name__}"
        )
    if estimator.n_x != model.n_x:
        raise DimensionError(
            f"estimator: expected an estimator of the model's n_x = {model.n_x} states, "
            f"found n_x = {estimator.n_x}"
        )
    est_model = getattr(estimator, "model", None)
    for dim in ("n_y", "n_u"):
        found = getattr(est_model, dim, None)
        if found is not None and found != getattr(model, dim):
            raise DimensionError(
                f"estimator: expected a model with {dim} = {getattr(model, dim)} like "
                f"the controller's model, found {dim} = {found}"
            )
    return estimator


def parse_input_bounds(input_bounds: Any, model: Any) -> tuple[Tensor, Tensor] | None:
    """Actuator limits ``(low, high)`` (scalars or (n_u,) arrays, infinite entries allowed) as
    two (n_u,) tensors in the model's dtype, or None; typed errors naming ``input_bounds``."""
    if input_bounds is None:
        return None
    if not isinstance(input_bounds, (tuple, list)) or len(input_bounds) != 2:
        raise TypeError(
            f"input_bounds: expected a pair (low, high), found {type(input_bounds).__name__}"
            + (f" of length {len(input_bounds)}" if isinstance(input_bounds, (tuple, list)) else "")
        )
    n_u = model.n_u
    out = []
    for name, b in zip(("low", "high"), input_bounds, strict=True):
        t = as_tensor(b, f"input_bounds {name}", dtype=model.dtype, device=model.device)
        if t.dim() == 0:
            t = t.expand(n_u)
        if t.shape != (n_u,):
            raise DimensionError(
                f"input_bounds: expected {name} to be a scalar or of shape ({n_u},), "
                f"found {shape_str(tuple(t.shape))}"
            )
        if bool(torch.isnan(t).any()):
            raise ValueError(f"input_bounds: expected {name} without NaN, found {t.tolist()}")
        out.append(t.clone())
    low, high = out
    if bool((low > high).any()):
        raise ValueError(
            f"input_bounds: expected low <= high in every entry, found low = {low.tolist()}, "
            f"high = {high.tolist()}"
        )
    return low, high


def resume_state(
    state: Any,
    expected: type,
    batch_size: int,
    mask: Tensor | None,
    init: Any,
    reset_rows: Any,
) -> Any:
    """The recurrent state to continue from, for controllers whose state has ``u_prev``.

    ``None`` starts a batch (``init(batch_size)``); a state of another batch size is accepted
    only when every row starts an episode (then a fresh batch begins); otherwise the rows
    flagged in ``mask`` are reset with ``reset_rows(state, mask)``.

    Raises
    ------
    TypeError
        If ``state`` is not None or an instance of ``expected``.
    BatchSizeError
        If the batch size changed while some rows continue their episodes.
    """
    if state is None:
        return init(batch_size)
    if not isinstance(state, expected):
        raise TypeError(
            f"state: expected the {expected.__name__} returned by the previous call (or None), "
            f"found {type(state).__name__}"
        )
    if state.u_prev.shape[0] != batch_size:
        if mask is None or not bool(mask.all()):
            raise BatchSizeError(
                f"observation: expected batch size {state.u_prev.shape[0]} (from state), "
                f"found {batch_size}; pass state=None or reset every row (episode_start) to "
                "start a new batch"
            )
        return init(batch_size)
    if mask is not None:
        return reset_rows(state, mask)
    return state


def estimator_mean(state: Any, expected: type) -> Tensor:
    """x̂_{t|t} of a controller state that holds an ``estimator_state`` with a ``mean`` tensor.

    Raises
    ------
    TypeError
        If ``state`` is not an ``expected`` instance or its estimator state has no ``mean``.
    """
    if not isinstance(state, expected):
        raise TypeError(f"state: expected an {expected.__name__}, found {type(state).__name__}")
    mean = getattr(state.estimator_state, "mean", None)
    if not isinstance(mean, Tensor):
        raise TypeError(
            "state: the estimator's state has no 'mean' tensor holding the estimate, found "
            f"{type(state.estimator_state).__name__}"
        )
    return mean
