"""The native vector env shared by the environments: batched copies of a
:class:`~kalmannet_ctrl.envs.PartiallyKnownEnv`, stepped by one call of its true model."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from kalmannet_ctrl._validation import check_positive_int
from kalmannet_ctrl.errors import ParameterError
from kalmannet_ctrl.models import QuadraticCost, SystemModel

from . import _render
from .core import PartiallyKnownEnv, check_action, check_render_mode, validate_mismatch

__all__ = ["PartiallyKnownVectorEnv"]


def _check_autoreset_mode(mode: Any) -> AutoresetMode:
    """NEXT_STEP or SAME_STEP (the native vector env's modes), from the enum or its value."""
    modes = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)
    try:
        checked = AutoresetMode(mode)
    except ValueError:
        checked = None
    if checked not in modes:
        raise ParameterError(
            f"autoreset_mode: expected one of {[m.value for m in modes]}, found {mode!r}"
        )
    return checked


class PartiallyKnownVectorEnv(VectorEnv):
    """Native batched copies of a :class:`PartiallyKnownEnv`, stepped by one batched call.

    All copies share one mismatch (one nominal and one true model). Episodes are truncated after
    ``max_episode_steps`` and, as in Gymnasium's own vector envs, reset on the step after they end
    (``AutoresetMode.NEXT_STEP``, the default): that step returns the first observation of the new
    episode with reward 0 and terminated = truncated = False. With
    ``autoreset_mode=AutoresetMode.SAME_STEP`` (the convention of Stable-Baselines3's VecEnv) a
    copy whose episode ends starts the next one in the same step: the step returns the new
    episode's first observation and state, the last ones in ``info["final_obs"]`` (an object
    array, None for the other copies) and ``info["final_info"]["state"]``, with the masks
    ``info["_final_obs"]`` and ``info["_final_info"]``. With one copy, the noise is drawn in the
    single env's order in either mode (a seeded single env that is reset after each episode sees
    the same episodes).

    A subclass names the env it batches, which is all it needs to say::

        class MyVectorEnv(PartiallyKnownVectorEnv, env_class=MyEnv):
            pass

    Parameters
    ----------
    num_envs : int
    max_episode_steps : int, optional
        Default: no truncation.
    render_mode : {None, "rgb_array"}
        With ``"rgb_array"``, :meth:`render` returns one frame per copy (as the single env
        draws it, from each copy's own episode).
    autoreset_mode : AutoresetMode or str, default NEXT_STEP
        ``NEXT_STEP`` or ``SAME_STEP`` (or their values, ``"NextStep"``, ``"SameStep"``).
    **kwargs
        Passed to the env class (e.g. ``mismatch``).

    Raises
    ------
    TypeError
        If the class declares no ``env_class``.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["rgb_array"],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }
    #: The :class:`PartiallyKnownEnv` subclass batched (declared in the class statement).
    env_class: ClassVar[type[PartiallyKnownEnv] | None] = None

    def __init_subclass__(
        cls, *, env_class: type[PartiallyKnownEnv] | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if env_class is not None:
            cls.env_class = env_class

    def __init__(
        self,
        num_envs: int = 1,
        *,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **kwargs: Any,
    ) -> None:
        env_class = type(self).env_class
        if env_class is None:
            raise TypeError(
                f"{type(self).__name__}: declare the env it batches, e.g. "
                f"class {type(self).__name__}(PartiallyKnownVectorEnv, env_class=MyEnv)"
            )
        self.num_envs = check_positive_int(num_envs, "num_envs")
        self.max_episode_steps = (
            None
            if max_episode_steps is None
            else check_positive_int(max_episode_steps, "max_episode_steps")
        )
        self.env = env_class(**kwargs)  # holds the models; never stepped itself
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.autoreset_mode = _check_autoreset_mode(autoreset_mode)
        self.metadata = {
            **self.metadata,
            "render_fps": self.env.metadata["render_fps"],
            "autoreset_mode": self.autoreset_mode,
        }
        self._histories = [_render.History(self.env.render_history) for _ in range(self.num_envs)]
        self._set_spaces()
        self._x: np.ndarray | None = None
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._prev_done = np.zeros(self.num_envs, dtype=bool)

    def _set_spaces(self) -> None:
        self.single_action_space = self.env.action_space
        self.single_observation_space = self.env.observation_space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

    @property
    def nominal_model(self) -> SystemModel:
        return self.env.nominal_model

    @property
    def true_model(self) -> SystemModel:
        return self.env.true_model

    @property
    def cost(self) -> QuadraticCost:
        return self.env.cost

    @property
    def mismatch(self) -> dict[str, float]:
        return self.env.mismatch

    # the single env's task description, so that code written for one env scores a batch
    @property
    def task(self) -> str:
        return self.env.task

    @property
    def angle_states(self) -> tuple[int, ...]:
        return self.env.angle_states

    @property
    def angle_measurements(self) -> tuple[int, ...]:
        return self.env.angle_measurements

    def cost_state(self, x: np.ndarray) -> np.ndarray:
        """As :meth:`PartiallyKnownEnv.cost_state` of the copies."""
        return self.env.cost_state(x)

    def succeeded(self, states: np.ndarray, lengths: np.ndarray, failed: np.ndarray) -> np.ndarray:
        """As :meth:`PartiallyKnownEnv.succeeded` of the copies."""
        return self.env.succeeded(states, lengths, failed)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode in every copy (one integer seed for all); as the single env's."""
        if isinstance(seed, list):
            raise TypeError("seed: the native vector env takes one integer seed for all copies")
        super().reset(seed=seed)
        if options and "mismatch" in options:
            self.env._configure(
                validate_mismatch(
                    self.env.mismatch_spec, options["mismatch"], "options['mismatch']"
                )
            )
            self._set_spaces()
        sim = self.env._sim
        B = self.num_envs
        self._x = sim.initial_state(self.np_random.standard_normal((B, sim.n_x)))
        y = sim.measure(self._x, self.np_random.standard_normal((B, sim.n_y)))
        self._steps[:] = 0
        self._prev_done[:] = False
        if self.render_mode is not None:
            for b, history in enumerate(self._histories):
                history.clear()
                history.append(self._x[b], y[b])
        return y.astype(np.float32), {"state": self._x.copy(), "_state": np.ones(B, dtype=bool)}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every copy with its row of ``actions`` (autoreset as the class says)."""
        if self._x is None:
            raise RuntimeError("step: call reset() before step()")
        u = check_action(actions, self.action_space, "actions")
        env, sim, B = self.env, self.env._sim, self.num_envs
        x = self._x
        xc = env.cost_state(x)
        stage = np.einsum("bi,ij,bj->b", xc, env._Q, xc) + np.einsum("bi,ij,bj->b", u, env._R, u)
        # copies whose episode ended at the previous step start a new one now (NEXT_STEP
        # autoreset); the noise is drawn in the single env's order: transition noise for the
        # running copies, initial-state noise for the restarted ones, then measurement noise
        done = self._prev_done
        n_done = int(done.sum())
        if n_done == 0:
            x_next = sim.transition(x, u, self.np_random.standard_normal((B, sim.n_x)))
        else:
            x_next = np.empty_like(x)
            running = ~done
            if n_done < B:
                z = self.np_random.standard_normal((B - n_done, sim.n_x))
                x_next[running] = sim.transition(x[running], u[running], z)
            x_next[done] = sim.initial_state(self.np_random.standard_normal((n_done, sim.n_x)))
        terminated = env.failed(x_next)
        self._steps += 1
        truncated = (
            self._steps >= self.max_episode_steps
            if self.max_episode_steps is not None
            else np.zeros(B, dtype=bool)
        )
        reward = -stage
        if terminated.any():
            horizon = self.max_episode_steps or env._horizon()
            left = None if horizon is None else np.maximum(horizon - self._steps, 0)[terminated]
            reward[terminated] -= env.failure_cost(x_next[terminated], left)
        self._steps[done] = 0
        reward[done] = 0.0
        stage[done] = 0.0
        terminated[done] = False
        truncated[done] = False
        y = sim.measure(x_next, self.np_random.standard_normal((B, sim.n_y)))
        self._x = x_next
        if self.render_mode is not None:
            for b, history in enumerate(self._histories):
                if done[b]:
                    history.clear()
                history.append(x_next[b], y[b])
        ended = terminated | truncated
        every = np.ones(B, dtype=bool)
        info: dict[str, Any] = {"cost": stage, "_state": every, "_cost": every.copy()}
        if self.autoreset_mode is AutoresetMode.SAME_STEP:
            info.update(self._restart(ended, y))
            x_next = self._x
        else:
            self._prev_done = ended
        info["state"] = x_next.copy()
        return y.astype(np.float32), reward, terminated, truncated, info

    def _restart(self, ended: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """SAME_STEP autoreset: start a new episode in the ``ended`` copies now (their state and
        measurement ``y`` replaced in place); the final observations and states of the info."""
        n_ended = int(ended.sum())
        if n_ended == 0:
            return {}
        sim = self.env._sim
        final_obs = np.empty(self.num_envs, dtype=object)
        final_state = np.zeros_like(self._x)
        final_state[ended] = self._x[ended]
        for b in np.flatnonzero(ended):
            final_obs[b] = y[b].astype(np.float32)
        x0 = sim.initial_state(self.np_random.standard_normal((n_ended, sim.n_x)))
        y[ended] = sim.measure(x0, self.np_random.standard_normal((n_ended, sim.n_y)))
        self._x = self._x.copy()
        self._x[ended] = x0
        self._steps[ended] = 0
        if self.render_mode is not None:
            for b in np.flatnonzero(ended):
                self._histories[b].clear()
                self._histories[b].append(self._x[b], y[b])
        return {
            "final_obs": final_obs,
            "_final_obs": ended.copy(),
            "final_info": {"state": final_state, "_state": ended.copy()},
            "_final_info": ended.copy(),
        }

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One RGB uint8 frame (H, W, 3) per copy with ``render_mode="rgb_array"``, else None.

        Raises
        ------
        RuntimeError
            Before the first ``reset``.
        """
        if self.render_mode is None:
            gym.logger.warn(
                "render: no render_mode was given; make the env with render_mode='rgb_array'"
            )
            return None
        traces = [history.trace() for history in self._histories]
        if any(trace is None for trace in traces):
            raise RuntimeError("render: call reset() before render()")
        return tuple(self.env._draw(trace) for trace in traces if trace is not None)
