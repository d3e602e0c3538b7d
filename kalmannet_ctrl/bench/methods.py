"""Methods of a comparison: how to build (and, if needed, train) a controller for a scenario.

A method is a name plus a module-level ``build(ctx) -> controller`` function (so that it can be
sent to worker processes), where the controller follows the Controller protocol
(``predict(observation, state, episode_start)``) and may expose ``estimate(state)`` for the
estimation error. Trainable methods keep their artefacts in ``ctx.cache``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_text
from ..controllers import LQG, EstimationOnly, design_model
from ..errors import ParameterError
from ..estimators import (
    ExtendedKalmanFilter,
    KalmanNet,
    LearnedNoiseKalmanFilter,
    RNNEstimator,
)
from ..models import LinearGaussianModel, SystemModel, Trajectory
from .cache import ArtifactCache, stable_hash
from .scenario import Scenario

__all__ = [
    "METHODS",
    "BuildContext",
    "Method",
    "get_method",
    "register_method",
]


@dataclass
class BuildContext:
    """What a method's ``build`` gets.

    Attributes
    ----------
    scenario : Scenario
    env : PartiallyKnownEnv
        A single env of the scenario (its ``nominal_model``, ``true_model``, ``cost`` and spaces).
    seed : int
        The comparison's seed (for training).
    cache : ArtifactCache
        Where trained artefacts live (folder per scenario, method, config and seed).
    """

    scenario: Scenario
    env: Any
    seed: int
    cache: ArtifactCache
    train_info: dict[str, Any] = field(default_factory=dict)
    method: Method | None = None

    @property
    def config(self) -> Mapping[str, Any]:
        """The method's settings (empty without a method)."""
        return {} if self.method is None else self.method.config

    def options(
        self,
        *names: str,
        required: tuple[str, ...] = (),
        accepted: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """The config's entries among ``names`` (keywords of a training function or a solver:
        what the config leaves out takes that function's default, so each default is stated
        once, in its signature).

        Parameters
        ----------
        names : str
            The keys wanted.
        required : tuple of str
            Keys the config must hold.
        accepted : tuple of str, optional
            Every key the method's build reads (default ``names``); any other key is an error,
            so that a misspelt setting is never silently ignored.

        Raises
        ------
        ParameterError
            If the config holds a key outside ``accepted`` or lacks one of ``required``.
        """
        cfg = dict(self.config)
        unknown = sorted(set(cfg) - set(names if accepted is None else accepted))
        if unknown:
            raise ParameterError(
                f"config: method {self.method_name!r} has no settings {unknown}; "
                f"it reads {sorted(names if accepted is None else accepted)}"
            )
        missing = [k for k in required if k not in cfg]
        if missing:
            raise ParameterError(f"config: method {self.method_name!r} needs {missing}")
        return {k: cfg[k] for k in names if k in cfg}

    @property
    def method_name(self) -> str:
        return "method" if self.method is None else self.method.name

    def cached(
        self,
        build: Callable[[], Any],
        save: Callable[[Any, Path], None],
        load: Callable[[Path], Any],
    ) -> Any:
        """A trained artefact of this method for this scenario, seed and config.

        Loaded from ``cache`` when a readable copy exists (a corrupt one is rebuilt), else
        built with ``build()`` and stored with ``save(obj, folder)``; ``load(folder)`` must raise
        on anything it cannot read. What ``build`` put in ``train_info`` (e.g. ``env_steps``,
        the training data used) is stored beside the artefact and restored with it;
        ``train_info["loaded"]`` tells which happened.
        """
        config = dict(self.config)
        parts = (
            self.scenario.key(),
            f"{self.method_name}-{stable_hash(config, 8)}",
            f"seed-{self.seed}",
        )
        info_file = "train_info.json"

        def save_all(obj: Any, folder: Path) -> None:
            save(obj, folder)
            atomic_write_text(folder / info_file, json.dumps(self.train_info, default=str))

        def load_all(folder: Path) -> Any:
            info = json.loads((folder / info_file).read_text())
            if not isinstance(info, dict):
                raise ValueError(f"{info_file}: expected a JSON object")
            obj = load(folder)
            self.train_info.update(info)
            return obj

        obj, loaded = self.cache.load_or_build(parts, build, save_all, load_all)
        self.train_info["loaded"] = loaded
        return obj


@dataclass(frozen=True)
class Method:
    """A named way to build a controller for a scenario.

    Parameters
    ----------
    name : str
        Unique name (used on the command line and in tables).
    build : callable
        ``build(ctx: BuildContext) -> controller``; module-level (picklable).
    description : str
    applies : callable, optional
        ``applies(env) -> bool``: whether the method makes sense for a scenario's env; cells
        where it does not are skipped. Default: always.
    oracle : bool
        Whether the method uses the true model (the reference of the gap to the oracle).
    config : mapping
        Settings that change the result (part of the cache keys).
    """

    name: str
    build: Callable[[BuildContext], Any]
    description: str = ""
    applies: Callable[[Any], bool] | None = None
    oracle: bool = False
    config: Mapping[str, Any] = field(default_factory=dict)


METHODS: dict[str, Method] = {}


def register_method(method: Method, *, overwrite: bool = False) -> Method:
    """Add ``method`` to :data:`METHODS` (the names the CLI and :func:`get_method` know)."""
    if not isinstance(method, Method):
        raise TypeError(f"method: expected a Method, found {type(method).__name__}")
    if method.name in METHODS and not overwrite:
        raise ValueError(f"method: a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"method: unknown method {name!r}; expected one of {sorted(METHODS)}"
        ) from None


# -- helpers for the built-in methods ------------------------------------------------------------
def regulates_the_origin(env: Any) -> bool:
    """Whether LQG applies: a linear env, or one whose task is to hold the origin (an
    equilibrium of the nominal model that the episodes start near)."""
    model = env.nominal_model
    if isinstance(model, LinearGaussianModel):
        return True
    zero_x = torch.zeros(1, model.n_x, dtype=model.dtype)
    zero_u = torch.zeros(1, model.n_u, dtype=model.dtype)
    with torch.no_grad():
        at_rest = float(model.f(zero_x, zero_u).abs().max()) < 1e-9
    return at_rest and float(model.x0_mean.abs().max()) < 1e-9


def estimation_only(env: Any) -> bool:
    """Whether the env is used for estimation only here: no regulation task LQG applies to."""
    return not regulates_the_origin(env)


def _lqg(ctx: BuildContext, model: SystemModel) -> LQG:
    env = ctx.env
    bounds = (env.action_space.low, env.action_space.high)
    return LQG(design_model(model), env.cost, input_bounds=bounds)


def build_lqg_oracle(ctx: BuildContext) -> LQG:
    """LQG designed on the true model (linearized about the origin if nonlinear)."""
    return _lqg(ctx, ctx.env.true_model)


def build_lqg_nominal(ctx: BuildContext) -> LQG:
    """LQG designed on the nominal model (linearized about the origin if nonlinear)."""
    return _lqg(ctx, ctx.env.nominal_model)


def _estimation_only(ctx: BuildContext, model: SystemModel, estimator: Any) -> EstimationOnly:
    bounds = (ctx.env.action_space.low, ctx.env.action_space.high)
    return EstimationOnly(model, estimator, input_bounds=bounds)


def _ekf_only(ctx: BuildContext, model: SystemModel) -> EstimationOnly:
    return _estimation_only(ctx, model, ExtendedKalmanFilter(model))


def build_ekf_oracle(ctx: BuildContext) -> EstimationOnly:
    """Zero input; an EKF on the true model estimates the state."""
    return _ekf_only(ctx, ctx.env.true_model)


def build_ekf_nominal(ctx: BuildContext) -> EstimationOnly:
    """Zero input; an EKF on the nominal model estimates the state."""
    return _ekf_only(ctx, ctx.env.nominal_model)


def _trained_estimator(ctx: BuildContext, cls: type, make: Callable[[], Any], float32: bool) -> Any:
    """Train ``make()`` on zero-input rollouts of the scenario (or load it from the cache).

    The method's config gives the rollouts (``episodes``, ``steps``) and the keywords of
    :func:`~kalmannet_ctrl.training.fit` (``fit_steps`` as its ``steps``, ``batch_size``,
    ``lr``); what it leaves out takes those functions' defaults.
    """
    from ..training import env_rollouts, fit, load_checkpoint, save_checkpoint, split

    keys = ("episodes", "steps", "fit_steps", "batch_size", "lr")
    data_opts = ctx.options("episodes", "steps", required=("episodes", "steps"), accepted=keys)
    fit_opts = ctx.options("fit_steps", "batch_size", "lr", accepted=keys)
    if "fit_steps" in fit_opts:
        fit_opts["steps"] = fit_opts.pop("fit_steps")

    def build() -> Any:
        start = time.perf_counter()
        data = env_rollouts(
            ctx.scenario.env_id, seed=ctx.seed, env_kwargs=ctx.scenario.make_kwargs(), **data_opts
        )
        if float32:
            data = Trajectory(*(t.float() for t in data))
        train, val = split(data, (0.8, 0.2), seed=ctx.seed)
        est = make()
        if isinstance(est, RNNEstimator):
            est.set_normalization(train)
        fit(est, train, val, seed=ctx.seed, progress=False, **fit_opts)
        env_steps = data_opts["episodes"] * data_opts["steps"]
        ctx.train_info.update(env_steps=env_steps, train_s=time.perf_counter() - start)
        return est

    def save(est: Any, folder: Path) -> None:
        save_checkpoint(est, folder / "estimator.pt")

    def load(folder: Path) -> Any:
        return load_checkpoint(folder / "estimator.pt", cls, ctx.env.nominal_model)[0]

    est = ctx.cached(build, save, load)
    est.eval()
    return est


def build_learned_noise(ctx: BuildContext) -> EstimationOnly:
    """Zero input; a KF/EKF on the nominal model with covariances learned from rollouts."""
    model = ctx.env.nominal_model
    est = _trained_estimator(
        ctx, LearnedNoiseKalmanFilter, lambda: LearnedNoiseKalmanFilter(model), float32=False
    )
    return _estimation_only(ctx, model, est)


def build_kalmannet(ctx: BuildContext) -> EstimationOnly:
    """Zero input; KalmanNet on the nominal model, trained on rollouts with state labels."""
    model = ctx.env.nominal_model
    gen = torch.Generator().manual_seed(ctx.seed)
    est = _trained_estimator(ctx, KalmanNet, lambda: KalmanNet(model, generator=gen), float32=True)
    return _estimation_only(ctx, model, est)


def build_rnn(ctx: BuildContext) -> EstimationOnly:
    """Zero input; a GRU from measurements to states, trained on rollouts."""
    model = ctx.env.nominal_model
    gen = torch.Generator().manual_seed(ctx.seed)
    est = _trained_estimator(
        ctx, RNNEstimator, lambda: RNNEstimator(model, generator=gen), float32=True
    )
    return _estimation_only(ctx, model, est)


def has_inputs(env: Any) -> bool:
    """Whether MPC applies: an env with inputs whose (declared) task is a regulation or a
    swing-up."""
    return env.nominal_model.n_u > 0 and env.unwrapped.task in ("regulation", "swing-up")


#: What the MPC methods' configs may hold: the horizon of a regulation task and of a swing-up
#: (MPPI), and MPPI's settings (keywords of :class:`~kalmannet_ctrl.controllers.MPPI`).
_MPC_KEYS = ("horizon", "swing_up_horizon", "samples", "rollout_dtype")
#: ... and for neural MPC the keywords of :func:`~kalmannet_ctrl.training.train_neural_mpc`.
_NEURAL_MPC_KEYS = (
    "rounds",
    "episodes",
    "steps",
    "exploration_std",
    "states",
    "hidden",
    "fit_steps",
)


def _mpc_options(ctx: BuildContext, accepted: tuple[str, ...]) -> tuple[int, dict[str, Any]]:
    """The horizon and MPC keywords for a scenario: the default solver (QP, or LTV about the
    regulated origin), MPPI for a swing-up (with the config's ``samples``/``rollout_dtype``)."""
    from ..controllers import MPPI
    from ..training.neural_mpc import env_cost_state

    env = ctx.env
    regulation = regulates_the_origin(env)
    horizon_key = "horizon" if regulation else "swing_up_horizon"
    cfg = ctx.options(*_MPC_KEYS, required=(horizon_key,), accepted=accepted)
    opts: dict[str, Any] = {"input_bounds": (env.action_space.low, env.action_space.high)}
    if not regulation:
        mppi = {k: cfg[k] for k in ("samples", "rollout_dtype") if k in cfg}
        if "rollout_dtype" in mppi:
            mppi["rollout_dtype"] = getattr(torch, str(mppi["rollout_dtype"]))
        opts["solver"] = MPPI(seed=ctx.seed, **mppi)
    hook = env_cost_state(env)
    if hook is not None:
        opts["cost_state"] = hook
    return int(cfg[horizon_key]), opts


def build_mpc_nominal(ctx: BuildContext) -> Any:
    """MPC on the nominal model (QP if linear, sequential linearization about the origin, or
    MPPI for a swing-up), output feedback through the nominal model's KF/EKF."""
    from ..controllers import MPC

    horizon, opts = _mpc_options(ctx, _MPC_KEYS)
    return MPC(ctx.env.nominal_model, ctx.env.cost, horizon, **opts)


def build_neural_mpc(ctx: BuildContext) -> Any:
    """MPC on the nominal model plus a residual learned from closed-loop rounds."""
    from ..controllers import NeuralMPC
    from ..models import ResidualModel
    from ..training import load_checkpoint, save_checkpoint, train_neural_mpc

    horizon, opts = _mpc_options(ctx, _MPC_KEYS + _NEURAL_MPC_KEYS)
    training = ctx.options(*_NEURAL_MPC_KEYS, accepted=_MPC_KEYS + _NEURAL_MPC_KEYS)
    nominal = ctx.env.nominal_model

    def build() -> Any:
        ctrl, info = train_neural_mpc(
            ctx.scenario.env_id,
            horizon=horizon,
            seed=ctx.seed,
            env_kwargs=ctx.scenario.make_kwargs(),
            mpc_kwargs={k: v for k, v in opts.items() if k != "input_bounds"},
            progress=False,
            **training,
        )
        ctx.train_info.update(env_steps=info["env_steps"], train_s=info["train_s"])
        return ctrl.residual

    def save(model: Any, folder: Path) -> None:
        # the learned process covariance lives on the model's copy of the nominal model, which
        # the checkpoint does not hold: keep it in the metadata
        save_checkpoint(model, folder / "residual.pt", process_cov=model.process_cov.tolist())

    def load(folder: Path) -> Any:
        model, meta = load_checkpoint(folder / "residual.pt", ResidualModel, nominal)
        return model.replace(process_cov=meta["process_cov"])

    model = ctx.cached(build, save, load)
    model.eval()
    return NeuralMPC(model, ctx.env.cost, horizon, **opts)


#: Data and state-error training of the LQG variants with a learned estimator (see
#: :func:`~kalmannet_ctrl.training.learned_lqg`).
#: ``exploration_std`` is relative to the action bounds: 0.01 is 0.1 N on CartPole-v0.
_LEARNED_NOISE_LQG = {"episodes": 100, "steps": 100, "fit_steps": 150, "exploration_std": 0.01}
_KALMANNET_LQG = {"episodes": 100, "steps": 100, "fit_steps": 300, "exploration_std": 0.01}
#: The config keys of the learned-estimator LQG methods: keywords of ``learned_lqg``.
_LEARNED_LQG_KEYS = (
    "episodes",
    "steps",
    "exploration_std",
    "fit_steps",
    "batch_size",
    "lr",
    "closed_loop_steps",
    "closed_loop_options",
    "simulator_hidden",
    "simulator_fit_steps",
)


def _learned_lqg(ctx: BuildContext, kind: str) -> Any:
    """LQG with a learned estimator from :func:`~kalmannet_ctrl.training.learned_lqg`, whose
    keywords the method's config gives (what it leaves out takes that function's defaults)."""
    from ..training import learned_lqg, load_checkpoint, save_checkpoint

    options = ctx.options(*_LEARNED_LQG_KEYS)
    nominal = ctx.env.nominal_model
    bounds = (ctx.env.action_space.low, ctx.env.action_space.high)
    cls = KalmanNet if kind == "kalmannet" else LearnedNoiseKalmanFilter

    def build() -> Any:
        ctrl, info = learned_lqg(
            ctx.scenario.env_id,
            kind,
            seed=ctx.seed,
            env_kwargs=ctx.scenario.make_kwargs(),
            progress=False,
            **options,
        )
        ctx.train_info.update(env_steps=info["env_steps"], train_s=info["train_s"])
        return ctrl.estimator

    def save(est: Any, folder: Path) -> None:
        save_checkpoint(est, folder / "estimator.pt")

    def load(folder: Path) -> Any:
        return load_checkpoint(folder / "estimator.pt", cls, nominal)[0]

    est = ctx.cached(build, save, load)
    est.eval()
    return LQG(design_model(nominal), ctx.env.cost, est, input_bounds=bounds)


def build_kalmannet_lqg(ctx: BuildContext) -> LQG:
    """LQG on the nominal model with KalmanNet as its estimator, trained on closed-loop data
    (config ``closed_loop_steps`` > 0: then fine-tuned on the closed-loop cost)."""
    return _learned_lqg(ctx, "kalmannet")


def build_learned_noise_lqg(ctx: BuildContext) -> LQG:
    """LQG on the nominal model whose KF/EKF has noise covariances learned in closed loop."""
    return _learned_lqg(ctx, "learned-noise")


#: What the RL methods' configs may hold: keywords of :func:`~kalmannet_ctrl.rl.train_rl`.
_RL_KEYS = ("total_timesteps", "observation", "history", "include_actions", "hyperparams")


def _rl(ctx: BuildContext, algo: str) -> Any:
    """A Stable-Baselines3 policy trained on the scenario (or loaded from the cache), with the
    config's keywords of :func:`~kalmannet_ctrl.rl.train_rl` (the rest take its defaults)."""
    from ..rl import RLController, train_rl

    options = ctx.options(*_RL_KEYS)

    def build() -> Any:
        ctrl, info = train_rl(
            ctx.scenario.env_id,
            algo,
            seed=ctx.seed,
            env_kwargs=ctx.scenario.make_kwargs(),
            progress=False,
            **options,
        )
        ctx.train_info.update(env_steps=int(info["env_steps"]), train_s=float(info["train_s"]))
        return ctrl

    def save(ctrl: Any, folder: Path) -> None:
        ctrl.save(folder / "policy.zip")

    def load(folder: Path) -> Any:
        return RLController.load(folder / "policy.zip", ctx.env.nominal_model)

    return ctx.cached(build, save, load)


def build_ppo(ctx: BuildContext) -> Any:
    """PPO (Stable-Baselines3), hyperparameters per env; it observes what the method's config
    ``observation`` says: the nominal filter's estimates (default) or a measurement history."""
    return _rl(ctx, "ppo")


def build_sac(ctx: BuildContext) -> Any:
    """SAC (Stable-Baselines3), hyperparameters per env; it observes what the method's config
    ``observation`` says: the nominal filter's estimates (default) or a measurement history."""
    return _rl(ctx, "sac")


for _method in (
    Method(
        "lqg-oracle",
        build_lqg_oracle,
        "LQG on the true model (linearized at the origin): the oracle",
        regulates_the_origin,
        oracle=True,
    ),
    Method(
        "lqg-nominal",
        build_lqg_nominal,
        "LQG on the nominal model (linearized at the origin): the model-based baseline",
        regulates_the_origin,
    ),
    Method(
        "ekf-oracle",
        build_ekf_oracle,
        "zero input, EKF on the true model (estimation only): the oracle",
        estimation_only,
        oracle=True,
    ),
    Method(
        "ekf-nominal",
        build_ekf_nominal,
        "zero input, EKF on the nominal model (estimation only)",
        estimation_only,
    ),
    Method(
        "learned-noise",
        build_learned_noise,
        "zero input, EKF on the nominal model with learned noise covariances (estimation only)",
        estimation_only,
        config={"episodes": 100, "steps": 100, "fit_steps": 150, "lr": 0.02},
    ),
    Method(
        "kalmannet",
        build_kalmannet,
        "zero input, KalmanNet on the nominal model (estimation only)",
        estimation_only,
        config={"episodes": 100, "steps": 100, "fit_steps": 300, "lr": 1e-3},
    ),
    Method(
        "rnn",
        build_rnn,
        "zero input, GRU from measurements to states (estimation only)",
        estimation_only,
        config={"episodes": 100, "steps": 100, "fit_steps": 300, "lr": 1e-2},
    ),
    Method(
        "mpc-nominal",
        build_mpc_nominal,
        "MPC on the nominal model (QP, sequential linearization, or MPPI for a swing-up)",
        has_inputs,
        config={
            "horizon": 20,
            "swing_up_horizon": 30,
            "samples": 256,
            "rollout_dtype": "float32",
        },
    ),
    Method(
        "neural-mpc",
        build_neural_mpc,
        "MPC on the nominal model plus a residual network learned in closed-loop rounds",
        has_inputs,
        config={
            "horizon": 20,
            "swing_up_horizon": 30,
            "samples": 256,
            "rollout_dtype": "float32",
            "rounds": 3,
            "episodes": 20,
            "fit_steps": 1500,
            "exploration_std": 0.05,
            "states": "privileged",
        },
    ),
    Method(
        "learned-noise-lqg",
        build_learned_noise_lqg,
        "LQG on the nominal model, KF/EKF noise covariances learned on closed-loop data, then "
        "tuned on the closed-loop cost in a learned simulator",
        regulates_the_origin,
        config={
            **_LEARNED_NOISE_LQG,
            "closed_loop_steps": 100,
            "closed_loop_options": {"lr": 1e-2},
        },
    ),
    Method(
        "kalmannet-lqg",
        build_kalmannet_lqg,
        "LQG on the nominal model with KalmanNet as the estimator, trained on closed-loop data, "
        "then tuned on the closed-loop cost in a learned simulator",
        regulates_the_origin,
        config={**_KALMANNET_LQG, "closed_loop_steps": 300},
    ),
    Method(
        "learned-noise-lqg-state",
        build_learned_noise_lqg,
        "learned-noise-lqg trained on the state error only (no closed-loop tuning)",
        regulates_the_origin,
        config=_LEARNED_NOISE_LQG,
    ),
    Method(
        "kalmannet-lqg-state",
        build_kalmannet_lqg,
        "kalmannet-lqg trained on the state error only (no closed-loop tuning)",
        regulates_the_origin,
        config=_KALMANNET_LQG,
    ),
    Method(
        "ppo",
        build_ppo,
        "PPO (Stable-Baselines3) observing the nominal KF/EKF estimate; long training",
        has_inputs,
        config={"observation": "estimate"},
    ),
    Method(
        "sac",
        build_sac,
        "SAC (Stable-Baselines3) observing the nominal KF/EKF estimate; long training",
        has_inputs,
        config={"observation": "estimate"},
    ),
    Method(
        "ppo-measurement",
        build_ppo,
        "PPO (Stable-Baselines3) observing the last measurements (history of 4); long training",
        has_inputs,
        config={"observation": "measurement"},
    ),
    Method(
        "sac-measurement",
        build_sac,
        "SAC (Stable-Baselines3) observing the last measurements (history of 4); long training",
        has_inputs,
        config={"observation": "measurement"},
    ),
):
    register_method(_method)
