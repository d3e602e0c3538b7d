"""The RL sanity ladder: where does model-free learning break on the way to partial observation?

Trains one Stable-Baselines3 algorithm with its registered hyperparameters
(``kalmannet_ctrl.rl.HYPERPARAMS``) on one environment, rung by rung, each for the same number
of env steps and training seeds:

1. the true state (``TrueStateObservation``), no model mismatch: a fully observed MDP;
2. the true state at the env's default mismatch (the plant the other rungs face);
3. the nominal KF/EKF's estimate (``observation="estimate"``);
4. the last 4 measurements (``observation="measurement"``),

and evaluates every trained policy on ``--episodes`` seeded episodes with the env's own cost
(cost per step, failures charged as the env charges them, and success), next to LQR on the true
state and the nominal LQG on the measurements. Rungs 3 and 4 run as controllers on the raw
measurements, on the comparison's episodes (the native vector env seeded ``--seed``); rungs 1
and 2 need the true state, so they run on the wrapped env (``--episodes`` copies seeded
``--seed`` onwards): other draws of the same distribution.

Usage::

    python benchmarks/rl_ladder.py [--env kalmannet_ctrl/CartPole-v1] [--algo ppo]
                                   [--steps 200000] [--train-seeds 0 1 2] [--episodes 100]
                                   [--rungs 1 2 3 4] [--threads 1]
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
from _common import machine, make_parser, parse
from tqdm import tqdm

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LQG, LQR, design_model
from kalmannet_ctrl.metrics import ci95
from kalmannet_ctrl.rl import TrueStateObservation, hyperparams_for, train_rl
from kalmannet_ctrl.rl.hyperparams import META_KEYS, constructor_arguments
from kalmannet_ctrl.training.rollout import run_episodes

#: The mismatch under which the true model is the nominal one, per env name.
NO_MISMATCH = {
    "CartPole": {"pole_length": 1.0, "pole_mass": 1.0, "cart_mass": 1.0, "friction": 0.0},
    "LinearSystem": {"rotation_A_deg": 0.0, "rotation_C_deg": 0.0, "input_scale": 1.0},
    "Pendulum": {"mass": 1.0, "length": 1.0, "damping": 1.0},
}
RUNGS = {
    1: "true state, no mismatch",
    2: "true state, default mismatch",
    3: "nominal filter's estimate",
    4: "last 4 measurements",
}


def summary(cost: np.ndarray, success: np.ndarray) -> tuple[float, float, float]:
    """Mean cost per step, its 95 % CI half-width, success rate."""
    return (
        float(cost.mean()),
        ci95(cost),
        float(np.mean(success)),
    )


def on_measurements(env_id: str, ctrl: Any, episodes: int, seed: int) -> tuple:
    """A controller on the raw measurements, on the comparison's seeded episodes."""
    envs = gym.make_vec(env_id, num_envs=episodes)
    try:
        steps = envs.max_episode_steps
        roll = run_episodes(envs, ctrl, steps, seed=seed)
    finally:
        envs.close()
    return summary(roll.cost_per_step(steps), roll.succeeded(gym.make(env_id)))


def on_true_state(env_kwargs: dict, env_id: str, act: Any, episodes: int, seed: int) -> tuple:
    """``act(x_features) -> u`` on the wrapped env's true state, ``episodes`` copies."""
    costs, successes = [], []
    for k in range(episodes):
        env = TrueStateObservation(gym.make(env_id, **env_kwargs))
        obs, info = env.reset(seed=seed + k)
        steps = env.spec.max_episode_steps
        states, total, failed, t = [info["state"]], 0.0, False, 0
        for t in range(1, steps + 1):  # noqa: B007  (t is the length after the loop)
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total -= reward
            states.append(info["state"])
            if terminated or truncated:
                failed = bool(terminated)
                break
        succeeded = env.unwrapped.succeeded(
            np.asarray(states)[None], np.array([t]), np.array([failed])
        )
        costs.append(total / steps)
        successes.append(bool(succeeded[0]))
        env.close()
    return summary(np.asarray(costs), np.asarray(successes))


def train_on_true_state(env_id: str, env_kwargs: dict, algo: str, steps: int, seed: int) -> Any:
    """SB3 with the registered hyperparameters on TrueStateObservation copies (the failure cost
    discounted where the entry says ``discount_failure``; stepped by SB3's DummyVecEnv)."""
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    ctor = hyperparams_for(env_id, algo)
    meta = {k: ctor.pop(k) for k in list(ctor) if k in META_KEYS}
    train_kwargs = dict(env_kwargs)
    if meta.get("discount_failure"):  # as train_rl's training copies
        train_kwargs["failure_discount"] = ctor.get("gamma", 0.99)
    venv = make_vec_env(
        lambda: TrueStateObservation(gym.make(env_id, **train_kwargs)),
        n_envs=int(meta.get("n_envs", 1)),
        seed=seed,
    )
    if meta.get("normalize"):
        venv = VecNormalize(venv, gamma=ctor.get("gamma", 0.99))
    model = {"ppo": PPO, "sac": SAC}[algo](
        "MlpPolicy", venv, seed=seed, **constructor_arguments(ctor)
    )
    model.learn(steps)
    if isinstance(venv, VecNormalize):
        venv.training = False

        def act(obs: np.ndarray) -> np.ndarray:
            return model.predict(venv.normalize_obs(obs[None]), deterministic=True)[0][0]
    else:

        def act(obs: np.ndarray) -> np.ndarray:
            return model.predict(obs[None], deterministic=True)[0][0]

    return act


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--env", default="kalmannet_ctrl/CartPole-v1")
    parser.add_argument("--algo", default="ppo", choices=["ppo", "sac"])
    parser.add_argument("--steps", type=int, default=200_000, help="env steps per run")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed")
    parser.add_argument("--rungs", type=int, nargs="+", default=list(RUNGS), choices=list(RUNGS))
    args = parse(parser)
    name = args.env.split("/")[-1].split("-")[0]
    none = {"mismatch": NO_MISMATCH[name]}
    single = gym.make(args.env).unwrapped
    bounds = (single.action_space.low, single.action_space.high)
    rows = []
    # references: LQR on the true state (of each rung's plant; envs without angle states,
    # whose observation is the state itself), the nominal LQG on the measurements
    for rung, kwargs in ((1, none), (2, {})) if not single.angle_states else ():
        env = gym.make(args.env, **kwargs).unwrapped
        gain = LQR(design_model(env.true_model), env.cost).gain.detach().numpy()

        def act(obs: np.ndarray, gain: np.ndarray = gain) -> np.ndarray:
            u = -gain @ obs.astype(np.float64)
            return np.clip(u, *bounds).astype(np.float32)

        res = on_true_state(kwargs, args.env, act, args.episodes, args.seed)
        rows.append((f"LQR (true model), {RUNGS[rung]}", "-", res, "-"))
    nominal = LQG(design_model(single.nominal_model), single.cost, input_bounds=bounds)
    res = on_measurements(args.env, nominal, args.episodes, args.seed)
    rows.append(("nominal LQG, measurements", "-", res, "-"))
    cases = [(r, s) for r in args.rungs for s in args.train_seeds]
    for rung, seed in tqdm(cases, desc="rl_ladder"):
        start = time.perf_counter()
        if rung in (1, 2):
            kwargs = none if rung == 1 else {}
            act = train_on_true_state(args.env, kwargs, args.algo, args.steps, seed)
            train_s = time.perf_counter() - start
            res = on_true_state(kwargs, args.env, act, args.episodes, args.seed)
        else:
            mode = "estimate" if rung == 3 else "measurement"
            ctrl, info = train_rl(
                args.env, args.algo, args.steps, observation=mode, seed=seed, progress=False
            )
            train_s = info["train_s"]
            res = on_measurements(args.env, ctrl, args.episodes, args.seed)
        rows.append((f"{args.algo.upper()}, {RUNGS[rung]}", str(seed), res, f"{train_s:.0f}"))
    print(
        f"\n{args.env}, {args.algo.upper()} (registered hyperparameters), {args.steps:,} env "
        f"steps per run, {args.episodes} seeded evaluation episodes; {machine(args.threads)}\n"
    )
    print("| policy | training seed | cost / step (± 95 % CI) | success | train [s] |")
    print("|---|---:|---:|---:|---:|")
    for label, seed, (c, ci, s), t in rows:
        print(f"| {label} | {seed} | {c:.4g} ± {ci:.2g} | {100 * s:.0f} % | {t} |")


if __name__ == "__main__":
    main()
