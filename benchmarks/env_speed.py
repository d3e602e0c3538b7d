"""Throughput of the native vector environments against Gymnasium's SyncVectorEnv.

For every registered id (or those given with ``--ids``) and each number of copies, prints the
env-steps per second (copies × steps / seconds) of

- the native batched vector env, ``gymnasium.make_vec(id, num_envs=n)`` (the registered
  ``vector_entry_point``: all copies stepped by one batched call of the true model), and
- ``gymnasium.make_vec(id, num_envs=n, vectorization_mode="sync")``: a ``SyncVectorEnv`` that
  steps n single envs (each behind ``gym.make``'s default wrappers) one after the other,

and their ratio (native / sync; the target is at least 50× at 1024 copies). Actions are random
samples of the action space, drawn before the clock starts; episodes end and autoreset as they
would in training. Each measurement is the best of ``--repeats`` runs after 10 warm-up steps.

``--sb3`` prints a second table: the Stable-Baselines3 VecEnv an RL policy trains on, with the
policy's observation computed (the nominal KF/EKF's estimate, or the last 4 measurements), as
``kalmannet_ctrl.rl.NativeVecEnv`` (one batched env step and one batched estimator step) against
``make_vec_env`` of the wrapped single env (a DummyVecEnv: one env and one estimator step per
copy), on CartPole-v1 and LinearSystem-v0 at ``--sb3-copies`` copies.

Usage::

    python benchmarks/env_speed.py [--steps 500] [--sync-budget 20000] [--copies 1 64 1024]
                                   [--ids kalmannet_ctrl/Lorenz-v0 ...] [--threads 1]
                                   [--sb3] [--sb3-copies 1 8 64]

SyncVectorEnv's cost grows linearly with the copies, so it runs
``max(10, min(steps, sync_budget // copies))`` steps per measurement.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
from _common import machine, make_parser, parse
from tqdm import tqdm

from kalmannet_ctrl.envs import ENV_IDS


def best_seconds(step, actions: list, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``step(a)`` over ``actions``, after 10 warm-up steps."""
    for a in actions[:10]:
        step(a)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a in actions:
            step(a)
        best = min(best, time.perf_counter() - t0)
    return best


def env_steps_per_second(
    envs: gym.vector.VectorEnv, steps: int, repeats: int, seed: int = 0
) -> float:
    """Copies × steps / seconds of the fastest of ``repeats`` runs of ``steps`` steps."""
    envs.action_space.seed(seed)
    actions = [envs.action_space.sample() for _ in range(steps)]
    envs.reset(seed=seed)
    best = best_seconds(envs.step, actions, repeats)
    envs.close()
    return envs.num_envs * steps / best


def sb3_steps_per_second(venv, steps: int, repeats: int, seed: int = 0) -> float:
    """Copies × steps / seconds of the fastest of ``repeats`` runs of an SB3 VecEnv."""
    rng = np.random.default_rng(seed)
    high = venv.action_space.high
    shape = (venv.num_envs, *venv.action_space.shape)
    actions = [(rng.uniform(-0.5, 0.5, shape) * high).astype(np.float32) for _ in range(steps)]
    venv.seed(seed)
    venv.reset()
    best = best_seconds(venv.step, actions, repeats)
    venv.close()
    return venv.num_envs * steps / best


def sb3_table(args) -> None:
    from stable_baselines3.common.env_util import make_vec_env

    from kalmannet_ctrl.rl import EstimateObservation, MeasurementHistory, NativeVecEnv

    wrappers = {
        "estimate": lambda env: EstimateObservation(env),
        "measurement": lambda env: MeasurementHistory(env, 4),
    }
    ids = ["kalmannet_ctrl/CartPole-v1", "kalmannet_ctrl/LinearSystem-v0"]
    cases = [(i, mode, n) for i in ids for mode in wrappers for n in args.sb3_copies]
    rows = []
    for env_id, mode, n in tqdm(cases, desc="sb3 vec envs", leave=False):
        kw = {"observation": mode} if mode == "estimate" else {"observation": mode, "history": 4}
        native = sb3_steps_per_second(NativeVecEnv(env_id, n, **kw), args.steps, args.repeats)
        wrap = wrappers[mode]
        dummy_steps = max(10, min(args.steps, args.sync_budget // n))
        dummy_env = make_vec_env(lambda env_id=env_id, wrap=wrap: wrap(gym.make(env_id)), n)
        dummy = sb3_steps_per_second(dummy_env, dummy_steps, args.repeats)
        rows.append((env_id.split("/")[-1], mode, n, native, dummy))
    print(
        f"\nSB3 VecEnv env-steps per second with the policy input, NativeVecEnv vs make_vec_env "
        f"(DummyVecEnv of wrapped envs), best of {args.repeats}, {machine(args.threads)}"
    )
    print(
        "| env | policy input | copies | NativeVecEnv [steps/s] | make_vec_env [steps/s] | ratio |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for name, mode, n, native, dummy in rows:
        print(f"| {name} | {mode} | {n} | {native:,.0f} | {dummy:,.0f} | {native / dummy:.1f}x |")


def main() -> None:
    parser = make_parser(__doc__, steps=(500, "steps per measurement"))
    parser.add_argument(
        "--sync-budget",
        type=int,
        default=20_000,
        help="env-steps per SyncVectorEnv measurement (caps its steps at many copies)",
    )
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--ids", nargs="+", default=list(ENV_IDS), choices=ENV_IDS)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--sb3", action="store_true", help="add the SB3 VecEnv table")
    parser.add_argument("--sb3-copies", type=int, nargs="+", default=[1, 8, 64])
    args = parse(parser)
    cases = [(env_id, n) for env_id in args.ids for n in args.copies]
    rows = []
    for env_id, n in tqdm(cases, desc="env_speed", leave=False):
        native = env_steps_per_second(gym.make_vec(env_id, num_envs=n), args.steps, args.repeats)
        sync_steps = max(10, min(args.steps, args.sync_budget // n))
        sync_envs = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
        sync = env_steps_per_second(sync_envs, sync_steps, args.repeats)
        rows.append((env_id.split("/")[-1], n, native, sync, sync_steps))
    print(
        f"Env-steps per second, native vector env vs SyncVectorEnv, {args.steps} steps "
        f"(sync: {args.sync_budget} env-steps, at least 10 steps), best of {args.repeats}, "
        f"{machine(args.threads)}"
    )
    print(f"| {'env':<16} | copies | native [steps/s] | sync [steps/s] | native / sync |")
    print(f"|{'-' * 18}|--------|------------------|----------------|---------------|")
    for name, n, native, sync, _ in rows:
        cells = f"{native:>16,.0f} | {sync:>14,.0f} | {native / sync:>12.1f}x"
        print(f"| {name:<16} | {n:>6} | {cells} |")
    if args.sb3:
        sb3_table(args)


if __name__ == "__main__":
    main()
