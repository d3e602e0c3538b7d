"""The build functions of the built-in methods: model-based baselines, trained estimators,
MPC and neural MPC, the learned-estimator LQG variants and Stable-Baselines3 policies.

Each reads its settings from the method's config through :meth:`BuildContext.options`: the keys
are keywords of the training function (or solver) it calls, so a default is stated once, in that
function's signature.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..controllers import LQG, EstimationOnly, design_model
from ..estimators import (
    ExtendedKalmanFilter,
    KalmanNet,
    LearnedNoiseKalmanFilter,
    RNNEstimator,
)
from ..models import LinearGaussianModel, SystemModel, Trajectory
from .context import BuildContext


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
    ``lr``, ``segment``); what it leaves out takes those functions' defaults.
    """
    from ..training import env_rollouts, fit, load_checkpoint, save_checkpoint, split

    keys = ("episodes", "steps", "fit_steps", "batch_size", "lr", "segment")
    data_opts = ctx.options("episodes", "steps", required=("episodes", "steps"), accepted=keys)
    fit_opts = ctx.options("fit_steps", "batch_size", "lr", "segment", accepted=keys)
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
        mpc_kwargs = {k: v for k, v in opts.items() if k != "input_bounds"}
        ctrl = ctx.train(train_neural_mpc, horizon=horizon, mpc_kwargs=mpc_kwargs, **training)
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
        return ctx.train(learned_lqg, kind, **options).estimator

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


#: The training keys of the tuned policies (cocp, unfolded MPC): keywords of
#: :func:`~kalmannet_ctrl.training.tune_policy_on_env`.
_TUNED_POLICY_KEYS = (
    "episodes",
    "steps",
    "exploration_std",
    "tune_steps",
    "tune_options",
    "simulator_hidden",
    "simulator_fit_steps",
)


def _tuned_policy(
    ctx: BuildContext,
    make: Callable[[], Any],
    module: Callable[[Any], torch.nn.Module],
    accepted: tuple[str, ...],
) -> Any:
    """``make()`` tuned with :func:`~kalmannet_ctrl.training.tune_policy_on_env` (the
    config's keywords of it), or a fresh ``make()`` with the cached parameters of the module
    ``module(policy)`` holds."""
    from ..training import load_checkpoint, save_checkpoint, tune_policy_on_env

    options = ctx.options(*_TUNED_POLICY_KEYS, accepted=accepted)
    if "simulator_hidden" in options:  # a JSON list in a config
        options["simulator_hidden"] = tuple(options["simulator_hidden"])

    def build() -> Any:
        return ctx.train(tune_policy_on_env, make(), **options)

    def save(policy: Any, folder: Path) -> None:
        save_checkpoint(module(policy), folder / "policy.pt")

    def load(folder: Path) -> Any:
        policy = make()
        target = module(policy)
        loaded, _ = load_checkpoint(folder / "policy.pt", type(target), *_rebuild_args(policy))
        target.load_state_dict(loaded.state_dict())
        return policy

    return ctx.cached(build, save, load)


def _rebuild_args(policy: Any) -> tuple[Any, ...]:
    """What rebuilds the module of ``policy`` that holds its parameters."""
    from ..controllers import ConvexPolicy

    if isinstance(policy, ConvexPolicy):
        return (policy.model, policy.cost)
    return (policy.solver, policy)  # an unfolded MPC's setup: UnfoldedSetup(solver, problem)


def build_cocp(ctx: BuildContext) -> Any:
    """The ADP convex-optimization policy (:class:`~kalmannet_ctrl.controllers.ConvexPolicy`)
    on the nominal design model and its KF, the parameters named by the config's
    ``trainable`` tuned on the closed-loop cost in a simulator learned from closed-loop
    rollouts of the nominal LQG."""
    from ..controllers import ConvexPolicy

    trainable = ctx.options("trainable", accepted=("trainable", *_TUNED_POLICY_KEYS))
    env = ctx.env
    bounds = (env.action_space.low, env.action_space.high)

    def make() -> ConvexPolicy:
        return ConvexPolicy(
            design_model(env.nominal_model), env.cost, input_bounds=bounds, **trainable
        )

    return _tuned_policy(ctx, make, lambda p: p, ("trainable", *_TUNED_POLICY_KEYS))


#: The unfolded MPC's settings: its horizon and keywords of
#: :class:`~kalmannet_ctrl.controllers.Unfolded`.
_UNFOLDED_KEYS = ("horizon", "K", "learn_qp")


def build_unfolded_mpc(ctx: BuildContext) -> Any:
    """MPC on the nominal design model and its KF, solved by K unfolded iterations of
    projected gradient (:class:`~kalmannet_ctrl.controllers.Unfolded`) whose step sizes are
    tuned on the closed-loop cost in a simulator learned from closed-loop rollouts of the
    nominal LQG."""
    from ..controllers import MPC, Unfolded

    accepted = _UNFOLDED_KEYS + _TUNED_POLICY_KEYS
    cfg = ctx.options(*_UNFOLDED_KEYS, required=("horizon",), accepted=accepted)
    solver = {k: cfg[k] for k in ("K", "learn_qp") if k in cfg}
    env = ctx.env
    bounds = (env.action_space.low, env.action_space.high)

    def make() -> MPC:
        model = design_model(env.nominal_model)
        return MPC(
            model, env.cost, int(cfg["horizon"]), input_bounds=bounds, solver=Unfolded(**solver)
        )

    return _tuned_policy(ctx, make, lambda p: p.setup, accepted)


#: What the RL methods' configs may hold: keywords of :func:`~kalmannet_ctrl.rl.train_rl`.
_RL_KEYS = (
    "total_timesteps",
    "observation",
    "history",
    "include_actions",
    "hyperparams",
    "curve_every",
    "curve_episodes",
)


def _rl(ctx: BuildContext, algo: str) -> Any:
    """A Stable-Baselines3 policy trained on the scenario (or loaded from the cache), with the
    config's keywords of :func:`~kalmannet_ctrl.rl.train_rl` (the rest take its defaults)."""
    from ..rl import RLController, train_rl

    options = ctx.options(*_RL_KEYS)

    def build() -> Any:
        return ctx.train(train_rl, algo, **options)

    def save(ctrl: Any, folder: Path) -> None:
        ctrl.save(folder / "policy.zip")

    def load(folder: Path) -> Any:
        return RLController.load(folder / "policy.zip", ctx.env.nominal_model)

    return ctx.cached(build, save, load)


def rl_settings(algo: str, env_id: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """An RL method's :attr:`Method.settings <kalmannet_ctrl.bench.Method>`: the entry of the
    hyperparameter table it trains with on ``env_id`` (with the config's ``hyperparams``
    overrides), :func:`~kalmannet_ctrl.rl.hyperparams_for`'s."""
    from ..rl.hyperparams import hyperparams_for

    return hyperparams_for(env_id, algo, config.get("hyperparams"))


def build_ppo(ctx: BuildContext) -> Any:
    """PPO (Stable-Baselines3), hyperparameters per env; it observes what the method's config
    ``observation`` says: the nominal filter's estimates (default) or a measurement history."""
    return _rl(ctx, "ppo")


def build_recurrent_ppo(ctx: BuildContext) -> Any:
    """RecurrentPPO (sb3-contrib, an LSTM policy), hyperparameters per env; it observes what
    the method's config says (the registered method: the raw measurements, one at a time)."""
    return _rl(ctx, "recurrentppo")


def build_sac(ctx: BuildContext) -> Any:
    """SAC (Stable-Baselines3), hyperparameters per env; it observes what the method's config
    ``observation`` says: the nominal filter's estimates (default) or a measurement history."""
    return _rl(ctx, "sac")
