"""Presets of the comparison: which methods run, and each learned method's training budget.

A preset is data. :data:`BUDGETS` is the one place that lists, per learned method, the budget
it trains with in each preset (keywords of its training function: rollouts, optimisation
steps, RL timesteps); :data:`PRESETS` says which methods each preset runs and over how many
episodes. The registered methods (:data:`~kalmannet_ctrl.bench.METHODS`) carry the ``"full"``
budgets, so :func:`~kalmannet_ctrl.bench.get_method` gives the benchmarks' settings.

- ``"quick"``, the default of ``kalmannet-ctrl compare``: every point of the spectrum on every
  control scenario (oracle and nominal LQG, nominal MPC, learned-noise LQG, KalmanNet-LQG,
  neural MPC and a Stable-Baselines3 policy), with budgets that fit a few minutes on 2 cores.
- ``"full"``: the budgets the README's large tables come from, plus SAC; resumable, and meant
  for Ray (``--executor ray``) when RL is in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .context import Method, get_method, lookup

__all__ = ["BUDGETS", "DEFAULT_PRESET", "PRESETS", "Preset", "budget", "get_preset"]

_ROLLOUTS = {"episodes": 100, "steps": 100}  # 10,000 env steps

#: Per learned method, per preset: the training budget (config keys of the method). The
#: ``"full"`` column is the registered methods' (the benchmarks'); ``"quick"`` changes some keys.
_FULL: dict[str, dict[str, Any]] = {
    "learned-noise": {**_ROLLOUTS, "fit_steps": 150},
    "kalmannet": {**_ROLLOUTS, "fit_steps": 300},
    "rnn": {**_ROLLOUTS, "fit_steps": 300},
    "neural-mpc": {"rounds": 3, "episodes": 20, "fit_steps": 1500},
    # segment training (fit and fit_closed_loop's defaults): benchmarks/closed_loop_training.py
    "learned-noise-lqg": {**_ROLLOUTS, "fit_steps": 50, "closed_loop_steps": 60},
    "kalmannet-lqg": {**_ROLLOUTS, "fit_steps": 100, "closed_loop_steps": 100},
    # tune_policy on whole simulated episodes (its learning rates are the methods' configs)
    "cocp": {**_ROLLOUTS, "tune_steps": 50},
    "unfolded-mpc": {**_ROLLOUTS, "tune_steps": 50},
    # RL: "full" leaves the env steps to the hyperparameter tables (rl/hyperparams/)
    "ppo": {},
    "ppo-measurement": {},
    "sac": {},
    "sac-measurement": {},
    "recurrentppo-measurement": {},
}
_QUICK: dict[str, dict[str, Any]] = {
    # on 20-step segments resumed from recorded filter states (fit's segment): on the Lorenz
    # scenario (seed 0) -23.7 dB in 21 s and -27.9 dB in 34 s, against -23.8 dB in 62 s and
    # -28.2 dB in 85 s on whole sequences
    "learned-noise": {"episodes": 50, "fit_steps": 100, "segment": 20, "batch_size": 128},
    "kalmannet": {"fit_steps": 150, "segment": 20, "batch_size": 256, "lr": 4e-3},
    "learned-noise-lqg": {"fit_steps": 30, "closed_loop_steps": 30, "simulator_fit_steps": 5000},
    "kalmannet-lqg": {"closed_loop_steps": 50, "simulator_fit_steps": 5000},
    "cocp": {"tune_steps": 20, "simulator_fit_steps": 2000},
    "unfolded-mpc": {"tune_steps": 20, "simulator_fit_steps": 2000},
    "ppo": {"total_timesteps": 10_000},
    "ppo-measurement": {"total_timesteps": 10_000},
    "sac": {"total_timesteps": 10_000},
    "sac-measurement": {"total_timesteps": 10_000},
    "recurrentppo-measurement": {"total_timesteps": 10_000},
}
BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    name: {"quick": {**full, **_QUICK.get(name, {})}, "full": full} for name, full in _FULL.items()
}

# the methods without training, and the estimation-only ones, that every preset runs
_MODEL_BASED = ("lqg-oracle", "lqg-nominal", "mpc-nominal")
_LEARNED_CONTROL = ("neural-mpc", "learned-noise-lqg", "kalmannet-lqg", "cocp", "unfolded-mpc")
_ESTIMATION = ("ekf-oracle", "ekf-nominal", "learned-noise", "kalmannet", "rnn")


def budget(method: str, preset: str = "full") -> dict[str, Any]:
    """The training budget of ``method`` in ``preset`` (empty for a method without one)."""
    return dict(BUDGETS.get(method, {}).get(preset, {}))


@dataclass(frozen=True)
class Preset:
    """A named set of methods with their budgets.

    Parameters
    ----------
    name : str
        The preset's name, the column of :data:`BUDGETS` it reads.
    description : str
    methods : tuple of str
        The methods it runs when none are named.
    episodes : int
        Seeded evaluation episodes per cell.
    """

    name: str
    description: str
    methods: tuple[str, ...]
    episodes: int = 100

    def method(self, name: str) -> Method:
        """The registered method ``name`` with this preset's budget in its config."""
        method = get_method(name)
        extra = budget(name, self.name)
        if not extra:
            return method
        return replace(method, config={**method.config, **extra})

    def resolve(self, names: Sequence[str] | None = None) -> list[Method]:
        """The methods ``names`` (default :attr:`methods`), with this preset's budgets."""
        return [self.method(n) for n in (self.methods if names is None else names)]


#: The presets by name.
PRESETS: dict[str, Preset] = {
    "quick": Preset(
        "quick",
        "every point of the spectrum on every scenario, budgets for a few minutes on 2 cores",
        _MODEL_BASED + _LEARNED_CONTROL + ("ppo",) + _ESTIMATION,
    ),
    "full": Preset(
        "full",
        "the benchmarks' budgets (the README's large tables), PPO and SAC at the "
        "hyperparameter tables' budgets; hours on 2 cores: resumable, use --executor ray",
        _MODEL_BASED + _LEARNED_CONTROL + ("ppo", "sac") + _ESTIMATION,
    ),
}

#: The preset ``kalmannet-ctrl compare`` runs when none is named.
DEFAULT_PRESET = "quick"


def get_preset(name: str) -> Preset:
    """The preset called ``name``."""
    return lookup(PRESETS, name, "preset")
