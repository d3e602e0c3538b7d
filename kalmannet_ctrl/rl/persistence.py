"""Saving and loading :class:`~kalmannet_ctrl.rl.RLController`: the policy and its sidecar.

A saved controller is two files side by side: ``<name>.zip``, the policy in Stable-Baselines3's
own format, and ``<name>.json``, the sidecar (format ``kalmannet_ctrl.rl/1``): the algorithm, the
observation settings, which estimator (the default one is rebuilt from the nominal model, a
trained one is passed at load), the observation normalization and JSON-able metadata. Both are
written atomically (:mod:`kalmannet_ctrl._io`). Sidecars of earlier versions, without
``angles`` or ``estimator_process_cov_scale``, load with their defaults (no angles, factor 1).
:func:`load_rl` rebuilds the nominal model from the env the sidecar records.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
from gymnasium import Env
from gymnasium.vector import VectorEnv

from kalmannet_ctrl.envs import PartiallyKnownEnv, PartiallyKnownVectorEnv

from .._docstrings import fill
from .._io import atomic_path, atomic_write_text
from ..errors import CheckpointError, DimensionError, ParameterError
from ..estimators.base import Estimator
from ..models.base import SystemModel
from ._deps import algorithm_class, require_sb3
from .observations import OBSERVATION_MODES, SETTING_TYPES

if TYPE_CHECKING:
    from .controller import RLController

__all__ = ["ALGORITHMS", "FORMAT", "load", "load_rl", "paths", "read_sidecar", "save", "sidecar"]

#: The ``format`` entry of every sidecar.
FORMAT = "kalmannet_ctrl.rl/1"
#: The Stable-Baselines3 algorithms a sidecar may name.
ALGORITHMS: tuple[str, ...] = ("PPO", "SAC", "TD3", "DDPG", "A2C", "RecurrentPPO")

#: The entries every sidecar has, and their types.
_SIDECAR_KEYS = {
    "format": str,
    "algo": str,
    "observation": str,
    **SETTING_TYPES,
    "metadata": dict,
}


def paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The ``.zip`` of ``path`` (suffix added when missing) and its ``.json`` sidecar."""
    p = Path(path)
    if p.suffix != ".zip":
        p = p.with_name(p.name + ".zip")
    return p, p.with_suffix(".json")


def sidecar(ctrl: RLController) -> dict[str, Any]:
    """The JSON sidecar of ``ctrl``: format, algorithm, observation settings, estimator,
    normalization, metadata."""
    est = ctrl.policy_input.estimator
    norm = ctrl.obs_normalization
    return {
        "format": FORMAT,
        "algo": type(ctrl.model).__name__,
        **ctrl.policy_input.config(),
        "estimator": None
        if est is None
        else ("default" if ctrl.default_estimator else type(est).__name__),
        "estimator_process_cov_scale": ctrl.process_cov_scale,
        "obs_normalization": None
        if norm is None
        else {
            "mean": norm["mean"].tolist(),
            "var": norm["var"].tolist(),
            "epsilon": norm["epsilon"],
            "clip_obs": norm["clip_obs"],
        },
        "action_bounds": [ctrl.action_low.tolist(), ctrl.action_high.tolist()]
        if ctrl.rescaled
        else None,
        "metadata": ctrl.metadata,
    }


def save(ctrl: RLController, path: str | os.PathLike[str]) -> Path:
    """Write ``ctrl``'s policy (``.zip``) and sidecar (``.json``) atomically; the ``.zip`` path.

    Raises
    ------
    TypeError
        If the metadata is not JSON-able.
    """
    zip_path, json_path = paths(path)
    try:
        text = json.dumps(sidecar(ctrl), indent=2, default=str)
    except (TypeError, ValueError) as exc:  # pragma: no cover - default=str covers it
        raise TypeError(f"metadata: expected JSON-able values ({exc})") from exc
    with atomic_path(zip_path, suffix=".zip") as tmp:  # SB3 picks the format from the suffix
        ctrl.model.save(str(tmp))
    atomic_write_text(json_path, text)
    return zip_path


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated sidecar of the controller saved at ``path`` (defaults of older versions
    filled in).

    Raises
    ------
    CheckpointError
        If the sidecar is missing, unreadable or foreign, or an entry is invalid.
    """
    path = paths(path)[1]
    if not path.is_file():
        raise CheckpointError(f"path: no sidecar at {path} (written by RLController.save)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"path: {path} is not readable JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"path: {path} is not a kalmannet_ctrl RL sidecar ({FORMAT})")
    for key, kind in _SIDECAR_KEYS.items():
        if not isinstance(config.get(key), kind):
            raise CheckpointError(
                f"path: {path} has no valid {key!r} (expected {kind.__name__}, "
                f"found {config.get(key)!r})"
            )
    if config["algo"] not in ALGORITHMS:
        raise CheckpointError(f"path: {path} names an unknown algorithm {config['algo']!r}")
    if config["observation"] not in OBSERVATION_MODES:
        raise CheckpointError(f"path: {path} has an unknown observation {config['observation']!r}")
    if config.get("estimator") is not None and not isinstance(config["estimator"], str):
        raise CheckpointError(f"path: {path} has an invalid 'estimator' entry")
    _fill_defaults(config, path)
    return config


def _fill_defaults(config: dict[str, Any], path: Path) -> None:
    """The entries older sidecars lack, with their defaults, and their checks."""
    angles = config.setdefault("angles", [])  # sidecars written before angles: none
    if not isinstance(angles, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in angles
    ):
        raise CheckpointError(f"path: {path} has an invalid 'angles' entry (expected ints)")
    config.setdefault("estimator", None)
    config.setdefault("obs_normalization", None)
    bounds = config.setdefault("action_bounds", None)  # older sidecars: actions not rescaled
    if bounds is not None and not (
        isinstance(bounds, list)
        and len(bounds) == 2
        and all(
            isinstance(b, list)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
            for b in bounds
        )
    ):
        raise CheckpointError(
            f"path: {path} has an invalid 'action_bounds' (expected [low, high] lists of numbers)"
        )
    scale = config.setdefault("estimator_process_cov_scale", 1.0)  # older sidecars: none
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise CheckpointError(
            f"path: {path} has an invalid 'estimator_process_cov_scale' (expected a number > 0, "
            f"found {scale!r})"
        )


def _zero(_: float) -> float:
    return 0.0


def _load_policy(sb3: Any, config: dict[str, Any], zip_path: Path, device: str) -> Any:
    """The Stable-Baselines3 algorithm saved at ``zip_path`` (schedules replaced by zero: the
    policy is for inference)."""
    if not zip_path.is_file():
        raise CheckpointError(f"path: no policy file at {zip_path}")
    algo_cls = algorithm_class(config["algo"])
    try:
        return algo_cls.load(
            str(zip_path),
            device=device,
            custom_objects={"learning_rate": 0.0, "lr_schedule": _zero, "clip_range": _zero},
        )
    except (
        zipfile.BadZipFile,
        OSError,
        KeyError,
        ValueError,
        RuntimeError,
        EOFError,
        AttributeError,
        TypeError,
    ) as exc:
        raise CheckpointError(
            f"path: {zip_path} is not a readable Stable-Baselines3 {config['algo']} ({exc})"
        ) from exc


def _nominal_model(model: Any) -> Any:
    """The nominal model given as itself or as a PartiallyKnownEnv (single or vector, wrapped
    or not); ``model`` unchanged otherwise."""
    if isinstance(model, (Env, VectorEnv)):
        unwrapped = model.unwrapped
        if isinstance(unwrapped, (PartiallyKnownEnv, PartiallyKnownVectorEnv)):
            return unwrapped.nominal_model
    return model


def _rebuild_nominal(config: dict[str, Any], model: Any, estimator: Any) -> SystemModel | None:
    """The nominal model the default estimator of an ``"estimate"`` policy is rebuilt on (None
    when an estimator is passed, or in ``"measurement"`` mode)."""
    if config["observation"] != "estimate":
        return None
    recorded = config["estimator"]
    if estimator is not None:
        if recorded not in ("default", type(estimator).__name__):
            raise TypeError(
                f"estimator: the policy was trained with a {recorded}, "
                f"found {type(estimator).__name__}"
            )
        return None
    if recorded != "default":
        raise TypeError(
            f"estimator: the policy was trained with a {recorded}; pass it "
            "(estimator=...), it is not saved with the policy"
        )
    nominal = _nominal_model(model)
    if not isinstance(nominal, SystemModel):
        raise TypeError(
            "model: an observation='estimate' policy needs the nominal model (a "
            "SystemModel or an env with unwrapped.nominal_model) to rebuild its "
            f"estimator, found {type(model).__name__}"
        )
    return nominal


#: The Raises entries of :func:`load` (and :meth:`RLController.load`).
LOAD_RAISES = """
CheckpointError
    If a file is missing, truncated or foreign, or does not fit the recorded settings.
TypeError
    If an ``"estimate"`` policy gets neither the estimator it needs nor a nominal model.
MissingDependencyError
    If Stable-Baselines3 is not installed.
"""


@fill(load_raises=LOAD_RAISES)
def load(
    cls: type[RLController],
    path: str | os.PathLike[str],
    model: Any = None,
    *,
    estimator: Estimator | None = None,
    device: str = "cpu",
) -> RLController:
    """A ``cls`` (:class:`~kalmannet_ctrl.rl.RLController`) loaded from the files written by
    :func:`save`; see :meth:`RLController.load <kalmannet_ctrl.rl.RLController.load>`.

    Raises
    ------
    %(load_raises)s
    """
    sb3 = require_sb3()
    zip_path = paths(path)[0]
    config = read_sidecar(path)
    policy = _load_policy(sb3, config, zip_path, device)
    nominal = _rebuild_nominal(config, model, estimator)
    try:
        ctrl = cls(
            policy,
            observation=config["observation"],
            estimator=estimator,
            history=config["history"],
            include_actions=config["include_actions"],
            include_covariance=config["include_covariance"],
            angles=config["angles"],
            nominal_model=nominal,
            process_cov_scale=config["estimator_process_cov_scale"],
            obs_normalization=config["obs_normalization"],
            action_bounds=config["action_bounds"],
            metadata=config["metadata"],
        )
    except (DimensionError, ParameterError) as exc:
        raise CheckpointError(f"path: {zip_path} does not fit its sidecar ({exc})") from exc
    if (ctrl.n_y, ctrl.n_u) != (config["n_y"], config["n_u"]):
        raise CheckpointError(
            f"path: expected n_y = {config['n_y']}, n_u = {config['n_u']} (sidecar), "
            f"found n_y = {ctrl.n_y}, n_u = {ctrl.n_u}"
        )
    return ctrl


def load_rl(
    path: str | os.PathLike[str],
    *,
    env_id: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    estimator: Estimator | None = None,
    device: str = "cpu",
) -> RLController:
    """Load an :class:`~kalmannet_ctrl.rl.RLController` saved by its ``save`` or by
    :func:`~kalmannet_ctrl.rl.train_rl`.

    The nominal model an ``"estimate"`` policy's default estimator needs is taken from
    ``gym.make(env_id, **env_kwargs)``; both default to what
    :func:`~kalmannet_ctrl.rl.train_rl` recorded in the sidecar.

    Raises
    ------
    CheckpointError
        If the files are missing or unreadable.
    TypeError
        If an ``"estimate"`` policy with the default estimator has no env id (argument or
        sidecar).
    """
    from .controller import RLController  # the controller module imports this one

    config = read_sidecar(path)
    env = None
    if config["observation"] == "estimate" and estimator is None:
        meta = config["metadata"]
        env_id = env_id if env_id is not None else meta.get("env_id")
        if not isinstance(env_id, str):
            raise TypeError(
                "env_id: the sidecar records no env id; pass env_id (or use "
                "RLController.load with the nominal model)"
            )
        kwargs = env_kwargs if env_kwargs is not None else meta.get("env_kwargs", {})
        env = gym.make(env_id, **dict(kwargs))
    try:
        return RLController.load(path, env, estimator=estimator, device=device)
    finally:
        if env is not None:
            env.close()
