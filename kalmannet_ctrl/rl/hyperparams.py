"""The hyperparameters of :func:`~kalmannet_ctrl.rl.train_rl`, read from data files.

As in rl-baselines3-zoo, the tuned settings live in one YAML file per algorithm,
``kalmannet_ctrl/rl/hyperparams/<algo>.yml``, one entry per environment, each with a comment
naming its source and why it departs from it. They are read once, at import, into
:data:`HYPERPARAMS`; :func:`hyperparams_for` merges the fallback, the env's entry and a caller's
overrides. Reading them needs PyYAML (in the extra ``rl``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from ..errors import ParameterError

__all__ = [
    "ALGOS",
    "ALGO_CLASSES",
    "HYPERPARAMS",
    "META_KEYS",
    "check_algo",
    "constructor_arguments",
    "env_name",
    "hyperparams_for",
]

#: The algorithms :func:`~kalmannet_ctrl.rl.train_rl` trains, by their class names
#: (Stable-Baselines3's PPO and SAC, sb3-contrib's RecurrentPPO).
ALGO_CLASSES: dict[str, str] = {"ppo": "PPO", "sac": "SAC", "recurrentppo": "RecurrentPPO"}
#: The same names in lower case; each has its file ``hyperparams/<algo>.yml``.
ALGOS: tuple[str, ...] = tuple(ALGO_CLASSES)

#: Keys of an entry that are not constructor arguments of the Stable-Baselines3 algorithm.
META_KEYS: tuple[str, ...] = (
    "n_envs",
    "n_timesteps",
    "normalize",
    "policy",
    "estimator_process_cov_scale",
    "eval_every",
    "eval_episodes",
    "vec_env",
    "rescale_actions",
    "discount_failure",
)


def _read_tables() -> dict[tuple[str, str], dict[str, Any]]:
    """Every ``hyperparams/<algo>.yml`` as {(env name, algo): entry}."""
    import yaml  # a dependency of the package

    table: dict[tuple[str, str], dict[str, Any]] = {}
    folder = files(__package__).joinpath("hyperparams")
    for algo in ALGOS:
        entries = yaml.safe_load(folder.joinpath(f"{algo}.yml").read_text(encoding="utf-8"))
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise TypeError(
                f"hyperparams/{algo}.yml: expected a mapping of environment names to mappings"
            )
        for name, entry in entries.items():
            table[(str(name), algo)] = entry
    return table


#: Hyperparameters per (environment name, algorithm), from ``hyperparams/<algo>.yml``.
#: Environment names are the ids of :mod:`kalmannet_ctrl.envs` without namespace and version
#: ("Pendulum" for ``kalmannet_ctrl/Pendulum-v0``); ``"*"`` holds the fallback for any other
#: environment. Keys are Stable-Baselines3 constructor arguments of the algorithm, plus
#: ``n_envs`` (copies of the env), ``n_timesteps`` (the budget when ``train_rl`` gets none),
#: ``normalize`` (VecNormalize of the observations and rewards, as rl-zoo's
#: ``normalize: true``), ``estimator_process_cov_scale`` (of the default estimator of
#: ``observation="estimate"``, :func:`~kalmannet_ctrl.rl.default_estimator`), ``eval_every`` /
#: ``eval_episodes`` (keep the best evaluated policy, see :func:`~kalmannet_ctrl.rl.train_rl`)
#: and ``policy``. Anything not set takes Stable-Baselines3's default. The values follow
#: rl-baselines3-zoo's tuned settings for the closest Gymnasium task, cited per entry in the
#: files.
HYPERPARAMS: dict[tuple[str, str], dict[str, Any]] = _read_tables()


def env_name(env_id: str) -> str:
    """ "kalmannet_ctrl/Pendulum-v0" -> "Pendulum"; other ids -> "*" (the fallback)."""
    match = re.fullmatch(r"kalmannet_ctrl/(\w+)-v\d+", env_id)
    return match.group(1) if match else "*"


def check_algo(algo: Any) -> str:
    """``algo`` in lower case if it is one of :data:`ALGOS`, else ParameterError."""
    if not isinstance(algo, str) or algo.lower() not in ALGOS:
        raise ParameterError(f"algo: expected one of {list(ALGOS)}, found {algo!r}")
    return algo.lower()


def hyperparams_for(
    env_id: str, algo: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The hyperparameters :func:`~kalmannet_ctrl.rl.train_rl` uses: fallback, then the env's
    entry, then overrides.

    Returns a deep copy (``policy_kwargs`` in ``overrides`` replaces the table's whole).

    Raises
    ------
    ParameterError
        On an unknown ``algo``.
    TypeError
        If ``overrides`` is not a mapping.

    Examples
    --------
    >>> hyperparams_for("kalmannet_ctrl/Pendulum-v0", "sac")["learning_rate"]
    0.001
    >>> hyperparams_for("MountainCarContinuous-v0", "ppo", {"gamma": 0.9})
    {'n_envs': 4, 'n_timesteps': 200000, 'gamma': 0.9}
    """
    algo = check_algo(algo)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(f"hyperparams: expected a mapping, found {type(overrides).__name__}")
    out = dict(HYPERPARAMS[("*", algo)])
    out.update(HYPERPARAMS.get((env_name(env_id), algo), {}))
    out.update(overrides or {})
    return copy.deepcopy(out)


#: Constructor arguments that may be written as rl-zoo's linear schedules, ``"lin_<value>"``.
SCHEDULE_KEYS: tuple[str, ...] = ("learning_rate", "clip_range", "clip_range_vf")


def constructor_arguments(ctor: Mapping[str, Any]) -> dict[str, Any]:
    """The table's constructor arguments as the algorithm takes them, read as rl-zoo reads
    its files: ``"lin_<value>"`` for :data:`SCHEDULE_KEYS` is a schedule falling linearly
    from the value to 0 over training (SB3's ``LinearSchedule``), and ``policy_kwargs``'
    ``activation_fn`` names a class of ``torch.nn`` (``"ReLU"``). Everything else is passed
    as written.

    Raises
    ------
    ParameterError
        On a schedule that is not ``lin_`` and a number, or an unknown activation.

    Examples
    --------
    >>> constructor_arguments({"learning_rate": "lin_1e-3"})["learning_rate"](0.5)
    0.0005
    """
    from stable_baselines3.common.utils import LinearSchedule

    out = copy.deepcopy(dict(ctor))
    for key in SCHEDULE_KEYS:
        value = out.get(key)
        if not isinstance(value, str):
            continue
        match = re.fullmatch(r"lin_([0-9.eE+-]+)", value)
        try:
            start = float(match.group(1)) if match else float("nan")
        except ValueError:
            start = float("nan")
        if not start > 0:
            raise ParameterError(
                f"{key}: expected a number or rl-zoo's 'lin_<positive number>', found {value!r}"
            )
        out[key] = LinearSchedule(start, 0.0, 1.0)
    kwargs = out.get("policy_kwargs")
    if isinstance(kwargs, dict) and isinstance(kwargs.get("activation_fn"), str):
        import torch.nn

        name = kwargs["activation_fn"]
        activation = getattr(torch.nn, name, None)
        if not (
            isinstance(activation, type)
            and issubclass(activation, torch.nn.Module)
            and activation.__module__ == "torch.nn.modules.activation"
        ):
            raise ParameterError(
                f"policy_kwargs.activation_fn: expected the name of a torch.nn activation "
                f"class such as 'ReLU', found {name!r}"
            )
        kwargs["activation_fn"] = activation
    return out
