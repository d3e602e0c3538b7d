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

from .._docstrings import fill
from .._validation import as_tensor, shape_str
from ..errors import DimensionError
from ._docs import FEEDBACK_FIELDS
from ._inputs import (
    ObservationBatch,
    as_action,
    as_observation_batch,
    check_estimator,
    check_finite_rows,
    episode_start_mask,
    estimator_mean,
    parse_input_bounds,
    resume_state,
)

__all__ = [
    "BaseController",
    "Controller",
    "FeedbackState",
    "ModelBasedController",
    "ModelDims",
    "ObservationBatch",
    "OutputFeedback",
    "as_action",
    "as_observation_batch",
    "check_estimator",
    "delegated",
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

    Shapes
    ------
    predict: observation (n_obs,) or (B, n_obs) -> action (n_u,) or (B, n_u)
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

        Shapes
        ------
        observation : (n_obs,) or (B, n_obs) -> action (n_u,) or (B, n_u)
        """
        ...


@runtime_checkable
class OutputFeedback(Protocol):
    """A controller that acts on a state estimate and reports it.

    Every :class:`BaseController` has it (``estimate`` returns None when the controller carries
    no estimator); other objects with the Controller protocol may declare it too. Benchmarks use
    it for the estimation error of closed-loop runs.

    Shapes
    ------
    estimate: -> (B, n_x) or None
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
        check_finite_rows(y, "y", self.accepts_missing)
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
        fast = self._fast_predict(observation, state, episode_start, deterministic)
        if fast is not None:
            return fast
        obs = self._observation_batch(observation)
        with torch.inference_mode() if self.inference_safe else torch.no_grad():
            u, new_state = self._run(state, obs.value, episode_start, deterministic)
        return as_action(u, obs.single, obs.np_dtype), new_state

    def _fast_predict(
        self, observation: Any, state: Any, episode_start: Any, deterministic: bool
    ) -> tuple[np.ndarray, Any] | None:
        """A subclass's shortcut for :meth:`predict` where it applies with the same result (to
        round-off) and the same state, or None: :meth:`predict` then converts, checks, resets and
        calls :meth:`act`."""
        return None

    def _observation_batch(self, observation: Any) -> ObservationBatch:
        """``observation`` as a checked (B, n_y) batch in :attr:`dtype` (as :meth:`predict`)."""
        return as_observation_batch(
            observation,
            self.n_y,
            dtype=self.dtype,
            device=self.device,
            allow_nan_rows=self.accepts_missing,
        )

    def _resume(self, state: Any, y: Tensor, episode_start: Any) -> tuple[Any, Tensor | None]:
        """The state to step from for the batch ``y`` (new, continued or with rows reset) and
        the ``episode_start`` mask."""
        mask = episode_start_mask(episode_start, y.shape[0], device=self.device)
        state = resume_state(state, self.state_type, y.shape[0], mask, self.init, self.reset_rows)
        return state, mask

    def _run(
        self, state: Any, y: Tensor, episode_start: Any, deterministic: bool
    ) -> tuple[Tensor, Any]:
        state, mask = self._resume(state, y, episode_start)
        return self.act(state, y, episode_start=mask, deterministic=deterministic)


def delegated(source: str, name: str, doc: str) -> property:
    """A read-only property returning ``self.<source>.<name>``: the sizes, dtype and device a
    controller takes from the object it is built on (its model, a policy's input).

    Parameters
    ----------
    source : str
        The attribute holding the object (e.g. ``"model"``).
    name : str
        The attribute of that object to return (e.g. ``"n_x"``).
    doc : str
        The property's docstring.

    Returns
    -------
    property

    Shapes
    ------
    no tensors: sizes, dtypes and devices
    """

    def get(self: Any) -> Any:
        return getattr(getattr(self, source), name)

    return property(get, doc=doc)


class ModelDims:
    """The sizes, dtype and device of :attr:`model`, for a controller built on a model
    (:class:`ModelBasedController`, :class:`~kalmannet_ctrl.controllers.LQR`).

    Shapes
    ------
    n_x, n_u, n_y : ints, the model's
    """

    model: Any
    n_x = delegated("model", "n_x", "The model's state size.")
    n_u = delegated("model", "n_u", "The model's input size.")
    n_y = delegated("model", "n_y", "The model's measurement size.")
    dtype = delegated(
        "model", "dtype", "The model's dtype: of the actions and the estimator's state."
    )
    device = delegated("model", "device", "The model's device.")


@fill(feedback_fields=FEEDBACK_FIELDS)
class FeedbackState(NamedTuple):
    """The recurrent state of a controller with an estimator in the loop: the default of
    :class:`ModelBasedController`, whose controllers subclass it to tell their states apart
    (:class:`~kalmannet_ctrl.controllers.LQGState`,
    :class:`~kalmannet_ctrl.controllers.EstimationState`).

    Attributes
    ----------
    %(feedback_fields)s

    Shapes
    ------
    u_prev : (B, n_u)
    """

    estimator_state: Any
    u_prev: Tensor


class ModelBasedController(ModelDims, BaseController):
    """A controller built on a model, with an estimator of the model's states in the loop.

    The sizes, dtype and device are the model's (:attr:`model`, see :class:`ModelDims`). The
    default recurrent state is a :class:`FeedbackState` ``state_type(estimator_state, u_prev)``:
    :meth:`init` starts from the estimator's prior with u_prev = 0 and :meth:`reset_rows`
    restarts rows the same way; controllers whose state holds more (MPC's plan) extend both.

    Shapes
    ------
    init: -> u_prev (B, n_u); reset_rows: mask (B,) bool
    """

    def init(self, batch_size: int) -> Any:
        """The estimator's prior and u_prev = 0.

        Shapes
        ------
        -> u_prev (B, n_u)
        """
        u_prev = torch.zeros(batch_size, self.n_u, dtype=self.dtype, device=self.device)
        return self.state_type(self.estimator.init(batch_size), u_prev)

    def reset_rows(self, state: Any, mask: Tensor) -> Any:
        """The estimator's prior and u_prev = 0 for the rows where ``mask`` is True.

        Shapes
        ------
        mask : (B,) bool
        """
        est_state = self.estimator.reset(state.estimator_state, mask)
        u_prev = torch.where(mask[:, None], torch.zeros_like(state.u_prev), state.u_prev)
        return state._replace(estimator_state=est_state, u_prev=u_prev)
