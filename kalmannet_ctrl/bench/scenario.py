"""Scenarios: an environment id, a mismatch and an episode length."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import gymnasium as gym

from .. import envs as _envs  # registers the environments (also in worker processes)
from .._validation import check_positive_int

__all__ = ["Scenario"]


def _registered_ids() -> list[str]:
    return list(_envs.ENV_IDS)


@dataclass(frozen=True)
class Scenario:
    """One problem of a comparison: which environment, how mismatched, how long.

    Parameters
    ----------
    env_id : str
        A registered id, e.g. ``"kalmannet_ctrl/LinearSystem-v0"``, of a
        :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv` (your own ones too, once registered
        with a ``vector_entry_point``; with worker processes, register them in a module the
        workers import).
    mismatch : mapping, optional
        The env's ``mismatch`` (keys it leaves out take the env's defaults); ``None`` for the
        env's default mismatch.
    max_steps : int, optional
        Episode length; default the registration's ``max_episode_steps``.
    name : str, optional
        Label in tables and plots; default the id's short name plus the mismatch.
    env_kwargs : mapping, optional
        Other constructor arguments of the env.
    """

    env_id: str
    mismatch: Mapping[str, float] | None = None
    max_steps: int | None = None
    name: str | None = None
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str) or self.env_id not in gym.registry:
            raise ValueError(
                f"env_id: unknown environment {self.env_id!r}; expected a registered id such as "
                f"{_registered_ids()}"
            )
        if self.max_steps is not None:
            check_positive_int(self.max_steps, "max_steps")
        if self.mismatch is not None:
            object.__setattr__(self, "mismatch", dict(self.mismatch))
        object.__setattr__(self, "env_kwargs", dict(self.env_kwargs))
        self.make()  # validates the mismatch and the kwargs now, with the env's typed errors

    @property
    def label(self) -> str:
        """The name used in tables: ``name`` or ``<Env> <mismatch>``."""
        if self.name:
            return self.name
        short = self.env_id.split("/")[-1].removesuffix("-v0")
        if not self.mismatch:
            return f"{short} (default mismatch)"
        inner = ", ".join(f"{k}={v:g}" for k, v in sorted(self.mismatch.items()))
        return f"{short} ({inner})"

    @property
    def steps(self) -> int:
        """The episode length."""
        if self.max_steps is not None:
            return self.max_steps
        steps = gym.spec(self.env_id).max_episode_steps
        return int(steps) if steps is not None else 1000

    def key(self) -> str:
        """A stable short hash of what defines the scenario (for caches and file names)."""
        blob = json.dumps(
            {
                "env_id": self.env_id,
                "mismatch": self.mismatch,
                "steps": self.steps,
                "env_kwargs": self.env_kwargs,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def make_kwargs(self) -> dict[str, Any]:
        """The env's constructor arguments (``env_kwargs`` plus ``mismatch`` when given)."""
        kwargs = dict(self.env_kwargs)
        if self.mismatch is not None:
            kwargs["mismatch"] = dict(self.mismatch)
        return kwargs

    def make(self) -> Any:
        """The single env (unwrapped: no time limit), holding the nominal and true models."""
        env = gym.make(self.env_id, **self.make_kwargs()).unwrapped
        if not isinstance(env, _envs.PartiallyKnownEnv):
            raise TypeError(
                f"env_id: {self.env_id!r} is not an environment with partially known dynamics "
                f"(a kalmannet_ctrl.envs.PartiallyKnownEnv), found {type(env).__name__}"
            )
        return env

    def make_vec(self, num_envs: int) -> Any:
        """The native vector env with ``num_envs`` copies and this scenario's episode length."""
        return gym.make_vec(
            self.env_id, num_envs=num_envs, max_episode_steps=self.steps, **self.make_kwargs()
        )

    def to_dict(self) -> dict[str, Any]:
        """The constructor's arguments (JSON-able when the mismatch and ``env_kwargs`` are)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
