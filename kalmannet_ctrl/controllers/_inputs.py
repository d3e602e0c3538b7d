"""Input helpers shared by the controllers: observations to batch tensors and back, the
``episode_start`` mask, the recurrent state to continue from, and the checks of the pieces a
controller is built from (estimator, cost, actuator limits)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._validation import as_tensor, check_batch, shape_str
from ..errors import BatchSizeError, DimensionError, NonFiniteError
from ..estimators.base import Estimator
from ..estimators.default import default_filter
from ..models.cost import QuadraticCost
from ..models.linear import LinearGaussianModel

__all__ = [
    "ObservationBatch",
    "as_action",
    "as_observation_batch",
    "check_cost",
    "check_cost_type",
    "check_estimator",
    "check_linear_model",
    "episode_start_mask",
    "estimator_mean",
    "no_episode_start",
    "observation_row",
    "parse_input_bounds",
    "resume_state",
]

# the NumPy dtypes an observation converts from exactly as torch does (native byte order)
_NUMPY_FLOATS = frozenset(map(np.dtype, (np.float64, np.float32, np.float16)))


def check_finite_rows(y: Tensor, name: str, allow_nan: bool) -> None:
    """NonFiniteError naming ``name`` on infinite entries (and on NaN ones unless
    ``allow_nan``: a NaN marks a missing measurement).

    Shapes
    ------
    y : (B, n) (NaN allowed when ``allow_nan``)
    """
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

    Shapes
    ------
    value : (B, n)
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
    check_finite_rows(obs, name, allow_nan_rows)
    return ObservationBatch(obs, single, np_dtype)


def as_action(u: Tensor, single: bool, np_dtype: np.dtype) -> np.ndarray:
    """Convert a batch of actions to the NumPy layout of the observation it answers.

    Shapes
    ------
    u : (B, n_u) -> (n_u,) when ``single`` (then B = 1), else (B, n_u)
    """
    out = u.detach().cpu().numpy().astype(np_dtype, copy=False)
    return out[0] if single else out


def observation_row(observation: Any, n: int) -> tuple[np.ndarray, bool] | None:
    """One observation as a (1, n) NumPy row, for a controller's NumPy path, or None.

    Only a NumPy float16/32/64 array of shape (n,) or (1, n) qualifies (its values are not
    checked); anything else is for :func:`as_observation_batch` to convert and check.

    Returns
    -------
    (row, single) or None
        ``row`` is a (1, n) view of the observation in its dtype; ``single`` as in
        :class:`ObservationBatch`.

    Shapes
    ------
    observation : (n,) or (1, n) -> row (1, n)
    """
    if type(observation) is not np.ndarray or observation.dtype not in _NUMPY_FLOATS:
        return None
    shape = observation.shape
    if shape == (n,):
        return observation.reshape(1, n), True
    if shape == (1, n):
        return observation, False
    return None


def no_episode_start(episode_start: Any, batch_size: int) -> bool:
    """True when ``episode_start`` certainly restarts no row: None, False, or a NumPy (B,) array
    of bools or numbers that are all zero. False for anything else, which
    :func:`episode_start_mask` then reads and checks.

    Shapes
    ------
    episode_start : (B,) or scalar
    """
    if episode_start is None or episode_start is False:
        return True
    if type(episode_start) is np.ndarray:
        return (
            episode_start.shape == (batch_size,)
            and episode_start.dtype.kind in "biuf"
            and not any(episode_start.tolist())  # NaN counts as a start, as in the mask
        )
    return isinstance(episode_start, np.bool_) and not episode_start


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
    (the Kalman filter of a linear model, the extended Kalman filter of a nonlinear one).

    Shapes
    ------
    no tensors: the estimator's n_x (and its model's n_y, n_u) against the model's
    """
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
    two (n_u,) tensors in the model's dtype, or None; typed errors naming ``input_bounds``.

    Shapes
    ------
    input_bounds : scalars or (n_u,) each -> (low (n_u,), high (n_u,))
    """
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

    Shapes
    ------
    state.u_prev : (B, n_u); mask : (B,) bool or None
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

    Shapes
    ------
    -> (B, n_x)
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


def check_cost(cost: Any, model: Any) -> QuadraticCost:
    """``cost`` checked to be a QuadraticCost whose Q and R match the model's n_x and n_u.

    Raises
    ------
    TypeError, DimensionError

    Shapes
    ------
    cost: Q (n_x, n_x), R (n_u, n_u) of the model
    """
    check_cost_type(cost)
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
    return cost


def check_cost_type(cost: Any) -> QuadraticCost:
    """``cost`` checked to be a QuadraticCost (TypeError naming ``cost`` otherwise).

    Shapes
    ------
    no tensors
    """
    if not isinstance(cost, QuadraticCost):
        raise TypeError(f"cost: expected a QuadraticCost(Q, R), found {type(cost).__name__}")
    return cost


def check_linear_model(
    model: Any, name: str, hint: str, *, who: str | None = None
) -> LinearGaussianModel:
    """``model`` checked to be a LinearGaussianModel; otherwise a TypeError naming ``name``
    ("``who`` needs a LinearGaussianModel", or "expected a LinearGaussianModel" without ``who``),
    the type found, and ``hint`` (how to get a linear model, or why one is needed).

    Shapes
    ------
    no tensors
    """
    if not isinstance(model, LinearGaussianModel):
        needs = "expected" if who is None else f"{who} needs"
        raise TypeError(
            f"{name}: {needs} a LinearGaussianModel, found {type(model).__name__}; {hint}"
        )
    return model
