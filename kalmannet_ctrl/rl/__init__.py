"""Model-free RL with Stable-Baselines3: policy observations, their Gymnasium wrappers, the
adapter on the controller base, training, persistence and hyperparameters.

- :mod:`~kalmannet_ctrl.rl.observations`: what a policy sees (:class:`PolicyObservation`, an
  estimate x̂_{t|t} or a measurement history, angles as (cos, sin)), its state :class:`RLState`;
- :mod:`~kalmannet_ctrl.rl.wrappers`: :class:`EstimateObservation` and
  :class:`MeasurementHistory`, the training envs' view;
- :mod:`~kalmannet_ctrl.rl.controller`: :class:`RLController`, a trained policy on raw
  measurements (a :class:`~kalmannet_ctrl.controllers.base.BaseController`);
- :mod:`~kalmannet_ctrl.rl.persistence`: save/load, the JSON sidecar, :func:`load_rl`;
- :mod:`~kalmannet_ctrl.rl.train`: :func:`train_rl`;
- :mod:`~kalmannet_ctrl.rl.vec_env`: :class:`NativeVecEnv`, a Stable-Baselines3 VecEnv over the
  native vector envs (imported on first use);
- :mod:`~kalmannet_ctrl.rl.callbacks`: its callbacks, among them :class:`LearningCurve` (success
  and cost against env steps, :func:`plot_learning_curves`, :func:`read_learning_curve`,
  :func:`write_learning_curve`);
- :mod:`~kalmannet_ctrl.rl.hyperparams`: :data:`HYPERPARAMS`, read from
  ``hyperparams/<algo>.yml`` as in rl-baselines3-zoo.

Stable-Baselines3 is a dependency of the library (the default comparison has a PPO row); it is
imported when a policy is built, trained or loaded, never at import.
"""

from ._deps import require_sb3
from .callbacks import (
    CURVE_COLUMNS,
    LearningCurve,
    plot_learning_curves,
    read_learning_curve,
    write_learning_curve,
)
from .controller import RLController
from .hyperparams import ALGOS, HYPERPARAMS, hyperparams_for
from .observations import (
    OBSERVATION_MODES,
    PolicyObservation,
    RLState,
    angle_features,
    default_estimator,
)
from .persistence import load_rl
from .train import train_rl
from .wrappers import (
    EstimateObservation,
    MeasurementHistory,
    TrueStateObservation,
    declared_angles,
)

__all__ = [
    "ALGOS",
    "CURVE_COLUMNS",
    "HYPERPARAMS",
    "OBSERVATION_MODES",
    "EstimateObservation",
    "LearningCurve",
    "MeasurementHistory",
    "NativeVecEnv",
    "PolicyObservation",
    "RLController",
    "RLState",
    "TrueStateObservation",
    "angle_features",
    "declared_angles",
    "default_estimator",
    "hyperparams_for",
    "load_rl",
    "plot_learning_curves",
    "read_learning_curve",
    "require_sb3",
    "train_rl",
    "write_learning_curve",
]


def __getattr__(name: str) -> object:
    # NativeVecEnv subclasses Stable-Baselines3's VecEnv: imported on first use, not here
    if name == "NativeVecEnv":
        from .vec_env import NativeVecEnv

        return NativeVecEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
