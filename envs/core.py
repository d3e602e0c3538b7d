"""The machinery shared by the environments: the base class of a single env, driven by the true
:class:`~kalmannet_ctrl.models.SystemModel` (its native batched vector env, driven by the same
model, is in ``envs/vector.py``).

An environment subclass describes its problem once, in :meth:`PartiallyKnownEnv.build`: the
nominal model (what a designer knows), the true model (what the simulator runs), the cost and the
actuator limits, from a validated ``mismatch`` mapping. Everything else (spaces, noise, clipping,
rewards, termination, seeding) lives here, and autoreset in the vector env.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from kalmannet_ctrl.errors import (
    ComplexValueError,
    DimensionError,
    NonFiniteError,
    ParameterError,
)
from kalmannet_ctrl.models import QuadraticCost, SystemModel, psd_sqrt

from . import _render

__all__ = [
    "MismatchParameter",
    "PartiallyKnownEnv",
    "Problem",
    "check_cost",
]


@dataclass(frozen=True)
class MismatchParameter:
    """One entry of an environment's ``mismatch`` mapping.

    Attributes
    ----------
    default : float
        Value used when the mapping does not name the entry.
    low, high : float
        Accepted closed range (finite values only).
    doc : str
        What the entry means, for error messages and docs.
    integer : bool
        Whether the value must be an integer (e.g. a Taylor order).
    """

    default: float
    low: float
    high: float
    doc: str
    integer: bool = False


@dataclass(frozen=True)
class Problem:
    """What :meth:`PartiallyKnownEnv.build` returns.

    Attributes
    ----------
    nominal, true : SystemModel
        The designer's model and the simulator's model (same dimensions).
    cost : QuadraticCost
        Stage cost; the reward is its negative.
    action_low, action_high : ndarray, (n_u,)
        Actuator limits; actions outside are clipped.
    """

    nominal: SystemModel
    true: SystemModel
    cost: QuadraticCost
    action_low: np.ndarray
    action_high: np.ndarray

    @classmethod
    def symmetric(
        cls, nominal: SystemModel, true: SystemModel, cost: QuadraticCost, bound: float
    ) -> Problem:
        """The problem whose every input lies in ``[-bound, bound]``."""
        n_u = nominal.n_u
        return cls(nominal, true, cost, np.full(n_u, -float(bound)), np.full(n_u, float(bound)))


def validate_mismatch(
    spec: Mapping[str, MismatchParameter],
    mismatch: Mapping[str, Any] | None,
    name: str = "mismatch",
) -> dict[str, float]:
    """The full mismatch dict: defaults completed, unknown keys and bad values rejected."""
    if mismatch is None:
        mismatch = {}
    if not isinstance(mismatch, Mapping):
        raise TypeError(
            f"{name}: expected a mapping of parameter names to numbers, "
            f"found {type(mismatch).__name__}"
        )
    unknown = sorted(set(mismatch) - set(spec))
    if unknown:
        raise ParameterError(f"{name}: unknown key(s) {unknown}; expected some of {sorted(spec)}")
    out: dict[str, float] = {}
    for key, p in spec.items():
        value = mismatch.get(key, p.default)
        if isinstance(value, (complex, np.complexfloating)):
            raise ComplexValueError(
                f"{name}[{key!r}]: expected a real number ({p.doc}), found {value}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(
                f"{name}[{key!r}]: expected a number ({p.doc}), found {type(value).__name__}"
            )
        value = float(value)
        if not math.isfinite(value):
            raise ParameterError(
                f"{name}[{key!r}]: expected a finite number ({p.doc}), found {value}"
            )
        if p.integer and value != int(value):
            raise ParameterError(f"{name}[{key!r}]: expected an integer ({p.doc}), found {value}")
        if not (p.low <= value <= p.high):
            raise ParameterError(
                f"{name}[{key!r}]: expected a value in [{p.low}, {p.high}] ({p.doc}), found {value}"
            )
        out[key] = int(value) if p.integer else value
    return out


def check_cost(cost: Any, n_x: int, n_u: int) -> QuadraticCost:
    """``cost`` if it is a QuadraticCost on n_x states and n_u inputs, else a typed error."""
    if not isinstance(cost, QuadraticCost):
        raise TypeError(f"cost: expected a QuadraticCost, found {type(cost).__name__}")
    if (cost.n_x, cost.n_u) != (n_x, n_u):
        raise DimensionError(
            f"cost: expected Q ({n_x}, {n_x}) and R ({n_u}, {n_u}), "
            f"found Q ({cost.n_x}, {cost.n_x}) and R ({cost.n_u}, {cost.n_u})"
        )
    return cost


class _Simulator:
    """The true model's transition and measurement with externally drawn standard normals."""

    def __init__(self, problem: Problem) -> None:
        true = problem.true
        self.model = true
        self.n_x, self.n_u, self.n_y = true.n_x, true.n_u, true.n_y
        self.Lw = psd_sqrt(true.process_cov).detach().cpu().numpy().astype(np.float64)
        self.Lv = psd_sqrt(true.measurement_cov).detach().cpu().numpy().astype(np.float64)
        self.L0 = psd_sqrt(true.x0_cov).detach().cpu().numpy().astype(np.float64)
        self.x0_mean = true.x0_mean.detach().cpu().numpy().astype(np.float64)

    def initial_state(self, z: np.ndarray) -> np.ndarray:
        """x_0 = x0_mean + L0 z; z (B, n_x) standard normal."""
        return self.x0_mean + z @ self.L0.T

    def measure(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """y = h(x) + Lv z; x (B, n_x), z (B, n_y)."""
        with torch.no_grad():
            hx = self.model.h(torch.as_tensor(x, dtype=self.model.dtype)).cpu().numpy()
        return hx + z @ self.Lv.T

    def transition(self, x: np.ndarray, u: np.ndarray, z: np.ndarray) -> np.ndarray:
        """x' = f(x, u) + Lw z; x (B, n_x), u (B, n_u), z (B, n_x)."""
        with torch.no_grad():
            fx = self.model.f(
                torch.as_tensor(x, dtype=self.model.dtype),
                torch.as_tensor(u, dtype=self.model.dtype),
            )
        return fx.cpu().numpy() + z @ self.Lw.T


class PartiallyKnownEnv(gym.Env[np.ndarray, np.ndarray]):
    """Base class of the environments with partially known dynamics.

    Subclasses set ``mismatch_spec`` and implement :meth:`build` (and :meth:`failed` where an
    episode can fail). Observations are noisy measurements y_t (float32), actions the inputs u_t
    (float32, clipped to the actuator limits), the reward is the negative stage cost
    −(x_t'Q x_t + u_t'R u_t) of the clipped action, minus :meth:`failure_cost` (default the
    constant ``failure_penalty``) on the step that terminates an episode, and ``info["state"]``
    is the true state.

    The mismatch is set by the ``mismatch`` constructor argument or by
    ``reset(options={"mismatch": {...}})``; either way the mapping given replaces the one in
    force, and the keys it leaves out take their default values.

    Attributes
    ----------
    nominal_model, true_model : SystemModel
    cost : QuadraticCost
    mismatch : dict
        The mismatch in force (defaults completed).
    angle_states, angle_measurements : tuple of int
        Indices of the state and of the measurement components that are angles (rad, 2π
        periodic); default none. Policies see them as (cos, sin)
        (:class:`~kalmannet_ctrl.rl.PolicyObservation`, the wrappers of
        :mod:`kalmannet_ctrl.rl.wrappers` and :func:`~kalmannet_ctrl.rl.train_rl` read them).
    task : str
        What the env is benchmarked on (see the class attribute); default "regulation".

    estimate : ndarray, (n_x,), or None
        What a controller believes the current state is, drawn beside the true state by
        :meth:`render` (set it after each ``step``, e.g. from a wrapper; ``reset`` clears it).

    These capabilities (with :meth:`cost_state`, :meth:`failed` and :meth:`succeeded`) are
    declared here with defaults, so callers read them from any ``PartiallyKnownEnv`` without
    probing; the native vector env forwards them.

    Rendering: ``render_mode="rgb_array"`` makes :meth:`render` return the current frame, an
    RGB ``uint8`` array (H, W, 3); ``"human"`` shows it in a window at ``metadata["render_fps"]``
    on every reset and step. The default frame is a live plot of the last steps of the true
    state, the measurement and the estimate (one panel per component); cart-pole and pendulum
    draw the mechanism. Drawing needs pygame (``pip install "kalmannet-ctrl[render]"``),
    imported on the first frame only. :meth:`render_frame` draws the frame of any recorded
    trajectory, e.g. to make a video of episodes run elsewhere.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 30}
    mismatch_spec: ClassVar[Mapping[str, MismatchParameter]] = {}
    failure_penalty: ClassVar[float] = 0.0
    #: What the env is benchmarked on: "regulation" (hold the origin), "swing-up" (reach the
    #: origin from far away, e.g. a pendulum hanging down) or "estimation" (zero input, the
    #: estimation error is the measure). Comparisons pick the methods that apply from it.
    task: ClassVar[str] = "regulation"
    #: Indices of the state components that are angles (x[i] and x[i] + 2π are one state).
    angle_states: ClassVar[tuple[int, ...]] = ()
    #: Indices of the measurement components that are angles (readings of an angle in rad).
    angle_measurements: ClassVar[tuple[int, ...]] = ()

    def __init__(
        self, *, mismatch: Mapping[str, Any] | None = None, render_mode: str | None = None
    ) -> None:
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self._configure(validate_mismatch(self.mismatch_spec, mismatch))
        self._x: np.ndarray | None = None
        self._t = 0  # steps since the last reset
        self._renderer: Any = None
        self._window: _render.Window | None = None
        self._history = _render.History(self.render_history)

    # -- to implement --------------------------------------------------------------------------
    def build(self, mismatch: dict[str, float]) -> Problem:
        """The nominal and true models, cost and actuator limits for a validated mismatch."""
        raise NotImplementedError

    def failed(self, x: np.ndarray) -> np.ndarray:
        """Which states end an episode as a failure; x (B, n_x) -> (B,) bool."""
        return np.zeros(x.shape[0], dtype=bool)

    def failure_cost(self, x: np.ndarray, steps_left: np.ndarray | None) -> np.ndarray:
        """What ending an episode by failure in the states ``x`` costs, on top of that step's
        stage cost, with ``steps_left`` steps of the episode's horizon not run (None where the
        horizon is unknown). Default: ``failure_penalty``, whatever the time left.

        Shapes
        ------
        x (B, n_x), steps_left (B,) int or None -> (B,) float
        """
        del steps_left
        return np.full(x.shape[0], float(self.failure_penalty))

    def _horizon(self) -> int | None:
        """The episode length of the registration (``max_episode_steps``), or None."""
        spec = self.spec
        return None if spec is None else spec.max_episode_steps

    def cost_state(self, x: np.ndarray) -> np.ndarray:
        """The state the stage cost is charged on, x (B, n_x) -> (B, n_x); default x itself.

        Environments with angle states override it to wrap the angles.
        """
        return x

    def succeeded(self, states: np.ndarray, lengths: np.ndarray, failed: np.ndarray) -> np.ndarray:
        """Which whole episodes count as a success (the ``success`` column of a comparison).

        Default: the episodes that did not fail. Environments whose episodes cannot fail (e.g.
        a swing-up) override it with a criterion on the trajectory.

        Parameters
        ----------
        states : ndarray, (B, T + 1, n_x)
            The true states x_0 … x_T of B episodes; row b is valid up to index ``lengths[b]``.
        lengths : ndarray of int, (B,)
            Steps each episode ran (≥ 1).
        failed : ndarray of bool, (B,)
            Episodes that ended by failure (:meth:`failed`).

        Returns
        -------
        ndarray of bool, (B,)
        """
        return ~np.asarray(failed, dtype=bool)

    #: Steps of history kept for the live plot of :meth:`render`.
    render_history: ClassVar[int] = 200

    def make_renderer(self) -> Any:
        """The object that draws this env's frames: ``draw(env, trace) -> (H, W, 3) uint8``.

        Default: the live plot of the state, measurement and estimate; environments with a
        mechanism to show override it.
        """
        return _render.TracePlotRenderer()

    # -- configuration -------------------------------------------------------------------------
    def _configure(self, mismatch: dict[str, float]) -> None:
        problem = self.build(mismatch)
        if (problem.nominal.n_x, problem.nominal.n_u, problem.nominal.n_y) != (
            problem.true.n_x,
            problem.true.n_u,
            problem.true.n_y,
        ):
            raise DimensionError("build: the nominal and true models must have the same dimensions")
        self.mismatch = mismatch
        self.problem = problem
        self.nominal_model = problem.nominal
        self.true_model = problem.true
        self.cost = problem.cost
        self._sim = _Simulator(problem)
        self._Q, self._R = problem.cost.numpy()
        self.action_space = spaces.Box(
            problem.action_low.astype(np.float32),
            problem.action_high.astype(np.float32),
            dtype=np.float32,
        )
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(problem.true.n_y,), dtype=np.float32
        )

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: draw x_0 and return its measurement y_0 and ``{"state": x_0}``.

        ``options={"mismatch": {...}}`` sets a new mismatch first (see the class).
        """
        super().reset(seed=seed)
        if options and "mismatch" in options:
            self._configure(
                validate_mismatch(self.mismatch_spec, options["mismatch"], "options['mismatch']")
            )
        sim = self._sim
        self._x = sim.initial_state(self.np_random.standard_normal((1, sim.n_x)))
        self._t = 0
        y = sim.measure(self._x, self.np_random.standard_normal((1, sim.n_y)))
        if self.render_mode is not None:
            self._history.clear()
            self._history.append(self._x[0], y[0])
            if self.render_mode == "human":
                self.render()
        return y[0].astype(np.float32), {"state": self._x[0].copy()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the (clipped) action: ``(y, reward, terminated, False, info)`` with
        ``info["state"]`` the new true state and ``info["cost"]`` the stage cost charged."""
        if self._x is None:
            raise RuntimeError("step: call reset() before step()")
        u = check_action(action, self.action_space, "action")[None]
        sim = self._sim
        x = self._x
        xc = self.cost_state(x)[0]
        stage = float(xc @ self._Q @ xc + u[0] @ self._R @ u[0])
        x_next = sim.transition(x, u, self.np_random.standard_normal((1, sim.n_x)))
        y = sim.measure(x_next, self.np_random.standard_normal((1, sim.n_y)))
        terminated = bool(self.failed(x_next)[0])
        self._t += 1
        reward = -stage
        if terminated:
            horizon = self._horizon()
            left = None if horizon is None else np.array([max(horizon - self._t, 0)])
            reward -= float(self.failure_cost(x_next, left)[0])
        self._x = x_next
        if self.render_mode is not None:
            self._history.append(x_next[0], y[0])
            if self.render_mode == "human":
                self.render()
        return (
            y[0].astype(np.float32),
            reward,
            terminated,
            False,
            {"state": x_next[0].copy(), "cost": stage},
        )

    # -- rendering -----------------------------------------------------------------------------
    @property
    def estimate(self) -> np.ndarray | None:
        """The controller's estimate of the current state drawn by :meth:`render`, or None."""
        est = self._history.estimates[-1] if self._history.estimates else None
        return None if est is None or not np.isfinite(est).all() else est.copy()

    @estimate.setter
    def estimate(self, value: Any) -> None:
        if self._x is None:
            raise RuntimeError("estimate: call reset() before setting the estimate")
        n_x = self._sim.n_x
        est = np.full(n_x, np.nan) if value is None else check_real(value, "estimate", (n_x,))
        if self.render_mode is not None:
            self._history.estimates[-1] = est

    def render(self) -> np.ndarray | None:
        """The current frame: an RGB uint8 array (H, W, 3) with ``render_mode="rgb_array"``;
        with ``"human"`` the frame is shown in a window (returns None); None without a render
        mode.

        Raises
        ------
        RuntimeError
            Before the first ``reset``.
        MissingDependencyError
            Without pygame (the message holds the pip command).
        """
        if self.render_mode is None:
            gym.logger.warn(
                "render: no render_mode was given; make the env with render_mode='rgb_array' "
                "(frames as arrays) or 'human' (a window)"
            )
            return None
        trace = self._history.trace()
        if trace is None:
            raise RuntimeError("render: call reset() before render()")
        frame = self._draw(trace)
        if self.render_mode == "human":
            if self._window is None:
                self._window = _render.Window(type(self).__name__)
            self._window.show(frame, float(self.metadata["render_fps"]))
            return None
        return frame

    def render_frame(
        self, states: Any, measurements: Any = None, estimates: Any = None, *, step: Any = None
    ) -> np.ndarray:
        """The frame :meth:`render` would draw after the trajectory ``states`` (any render mode).

        Parameters
        ----------
        states : array-like, (T, n_x) or (n_x,)
            True states x_0 … x_t; the frame shows the last one (and, for the live plot, the
            previous ones).
        measurements : array-like, (T, n_y), optional
            The measurements of those states.
        estimates : array-like, (T, n_x), optional
            The controller's estimates; NaN rows where there is none.
        step : int, optional
            The time step printed on the frame; default T − 1.

        Returns
        -------
        ndarray of uint8, (H, W, 3)

        Shapes
        ------
        states (T, n_x), measurements (T, n_y), estimates (T, n_x) -> (H, W, 3)

        Raises
        ------
        DimensionError
            When an argument has the wrong shape or the rows disagree in number.
        TypeError
            For complex values.
        MissingDependencyError
            Without pygame.
        """
        sim = self._sim
        return self._draw(
            _render.make_trace(states, measurements, estimates, step, sim.n_x, sim.n_y)
        )

    def _draw(self, trace: _render.Trace) -> np.ndarray:
        if self._renderer is None:
            self._renderer = self.make_renderer()
        return self._renderer.draw(self, trace)

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None
        super().close()


def check_render_mode(render_mode: Any, modes: Any) -> str | None:
    """``render_mode`` if it is None or one of ``modes``, else a ParameterError naming it."""
    if render_mode is None or render_mode in modes:
        return render_mode
    raise ParameterError(
        f"render_mode: expected None or one of {list(modes)}, found {render_mode!r}"
    )


def check_real(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float64 copy of a real array of ``shape`` (a leading batch of one is accepted)."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name}: expected an array of numbers, found {type(value).__name__}"
        ) from exc
    if np.iscomplexobj(arr):
        raise ComplexValueError(f"{name}: expected real numbers, found dtype {arr.dtype}")
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"{name}: expected an array of numbers, found dtype {arr.dtype}")
    if arr.shape != shape and arr.shape != (1, *shape):
        raise DimensionError(f"{name}: expected shape {shape}, found {arr.shape}")
    return arr.astype(np.float64).reshape(shape)


def check_action(action: Any, space: spaces.Box, name: str) -> np.ndarray:
    """A float64 copy of ``action`` clipped to ``space``; shape (..., n_u) as the space's."""
    if np.iscomplexobj(action):
        raise ComplexValueError(
            f"{name}: expected real numbers, found dtype {np.asarray(action).dtype}"
        )
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name}: expected an array of numbers of shape {space.shape}, "
            f"found {type(action).__name__}"
        ) from exc
    if a.shape != space.shape:
        # accepted: a scalar for a single input, and (B,) for a batch of single inputs
        single_input = space.shape[-1] == 1 and a.size == int(np.prod(space.shape))
        if single_input and a.ndim == len(space.shape) - 1:
            a = a.reshape(space.shape)
        else:
            raise DimensionError(f"{name}: expected shape {space.shape}, found {a.shape}")
    if not np.all(np.isfinite(a)):
        raise NonFiniteError(f"{name}: expected finite values, found {a.tolist()}")
    return np.clip(a, space.low, space.high)
