"""Learned optimization and deep unfolding for control: convex-optimization policies tuned on
the closed-loop cost (``ConvexPolicy`` + ``tune_policy``) and unfolded MPC (``Unfolded``).

Three tables:

1. **cvxgrp/cocp's constrained LQR** (``constrained_lqr.ipynb`` of Agrawal, Barratt, Boyd &
   Stellato, "Learning convex optimization control policies", L4DC 2020): ``np.random.seed(1)``,
   n = 8, m = 2, A = randn(n, n) scaled to spectral radius 1, B = randn(n, m), process noise
   W = 0.25 I, Q = I, R = I, ‖u‖∞ <= 0.1, x_0 ~ N(0, 0.25 I), 100-step episodes, full state,
   known model. The cost is the average over the 100 steps of x_t'Qx_t + u_t'Ru_t (as the
   notebook's). Clipped LQR, the ADP policy with the LQR's value matrix (untrained
   ``ConvexPolicy``) and the tuned one, on ``--episodes`` seeded episodes (common random numbers:
   every policy sees the same noise), next to the notebook's numbers (its 6-episode test set).
2. **Under mismatch** (LinearSystem-v0 at its default mismatch): a ConvexPolicy on the nominal
   Kalman filter's estimate, tuned in the simulator that ``learned_lqg`` fits (the nominal model
   plus a residual network fitted to 10,000 env steps of the nominal LQG with excitation, the
   env-step budget of KalmanNet-LQG in the bench), against nominal and oracle LQG on 100 seeded
   episodes: cost, success and the gap closed,
   (cost(nominal LQG) − cost) / (cost(nominal LQG) − cost(oracle LQG)).
3. **Unfolded MPC** on LinearSystem-v0 (H = 20, nominal model and filter): closed-loop cost on
   the same 100 episodes and B = 1 latency of ``predict`` at K = 3, 5, 10, untrained (steps
   1/λ_max) and tuned in the same fitted simulator, against the exact QP MPC.

Usage::

    python benchmarks/cocp.py [--episodes 5000] [--tune-steps 50] [--skip-mismatch]
                              [--threads 1] [--seed 0]
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from _common import machine, make_parser, parse

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LQG, MPC, ConvexPolicy, Unfolded, design_model
from kalmannet_ctrl.estimators import KalmanFilter
from kalmannet_ctrl.metrics import ci95
from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost
from kalmannet_ctrl.training import env_rollouts, tune_policy
from kalmannet_ctrl.training.lqg_pipeline import _fit_simulator
from kalmannet_ctrl.training.rollout import run_episodes

LINEAR = "kalmannet_ctrl/LinearSystem-v0"

#: The notebook's numbers (average stage cost per step, its 6-episode test set, seed 0).
PUBLISHED = {"adp_lqr": 16.94, "adp_tuned": 13.0, "lower_bound": 10.79}


def cocp_problem() -> tuple[LinearGaussianModel, QuadraticCost, float]:
    """The notebook's system, drawn in its order from ``np.random.seed(1)``."""
    rs = np.random.RandomState(1)  # the legacy stream of np.random.seed(1), as the notebook
    n, m = 8, 2
    A = rs.randn(n, n)
    A /= np.max(np.abs(np.linalg.eigvals(A)))
    B = rs.randn(n, m)
    # full state: C = I (the observation is the state; measurement_cov is not used)
    model = LinearGaussianModel(
        A, B, np.eye(n), 0.25 * np.eye(n), np.eye(n), x0_cov=0.25 * np.eye(n)
    )
    return model, QuadraticCost(np.eye(n), np.eye(m)), 0.1


def cocp_costs(model: LinearGaussianModel, act: Any, episodes: int, seed: int) -> np.ndarray:
    """Per-episode average stage cost over 100 steps of u = act(x), the noise seeded."""
    gen = torch.Generator().manual_seed(seed)
    n = model.n_x
    x = 0.5 * torch.randn(episodes, n, generator=gen, dtype=torch.float64)
    total = torch.zeros(episodes, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(100):
            u = act(x)
            total += (x * x).sum(-1) + (u * u).sum(-1)
            x = x @ model.A.mT + u @ model.B.mT
            x = x + 0.5 * torch.randn(episodes, n, generator=gen, dtype=torch.float64)
    return (total / 100).numpy()


def table_cocp(args: Any) -> None:
    model, cost, u_max = cocp_problem()
    policy = ConvexPolicy(model, cost, input_bounds=(-u_max, u_max), full_state=True)
    K = policy.lqr.gain
    rows = []
    clipped = cocp_costs(model, lambda x: (-(x @ K.mT)).clamp(-u_max, u_max), args.episodes, 1)
    rows.append(("clipped LQR", clipped, "-"))
    adp = cocp_costs(model, policy.action, args.episodes, 1)
    rows.append(("ADP, LQR's value matrix (untrained)", adp, f"{PUBLISHED['adp_lqr']:.2f}"))
    start = time.perf_counter()
    result = tune_policy(
        policy,
        model,
        steps=args.tune_steps,
        horizon=100,
        episodes=640,
        batch_size=64,
        lr=0.05,
        lr_schedule="cosine",
        val_episodes=64,
        val_every=10,
        seed=args.seed,
        progress=False,
    )
    tune_s = time.perf_counter() - start
    tuned = cocp_costs(model, policy.action, args.episodes, 1)
    rows.append(
        (
            f"ADP tuned ({args.tune_steps} Adam steps of 64 episodes)",
            tuned,
            f"~{PUBLISHED['adp_tuned']}",
        )
    )
    print(
        f"cvxgrp/cocp constrained LQR (n = 8, m = 2, |u| <= 0.1), {machine(args.threads)}; "
        f"{args.episodes} seeded episodes of 100 steps (common random numbers)\n"
    )
    print("| policy | cost per step (ours) | 95 % CI | published (6 episodes) |")
    print("|---|---|---|---|")
    for name, costs, published in rows:
        print(f"| {name} | {costs.mean():.3f} | ± {ci95(costs):.3f} | {published} |")
    print(f"| lower bound (SDP, published) | - | - | {PUBLISHED['lower_bound']:.2f} |")
    print(
        f"\ntuning time: {tune_s:.1f} s on {args.threads} thread(s) ({result.steps} steps, best "
        f"validation cost {result.best_val_loss:.3f} at step {result.best_step}); the "
        "notebook: 100 SGD steps of 6 episodes through cvxpylayers\n"
    )


def linear_rollouts(seed: int) -> tuple[Any, Any, Any]:
    """The env, 10,000 env steps of the nominal LQG with excitation (learned_lqg's rollouts),
    and the simulator fitted to them (learned_lqg's)."""
    env = gym.make(LINEAR).unwrapped
    nominal = env.nominal_model
    bounds = (env.action_space.low, env.action_space.high)
    baseline = LQG(design_model(nominal), env.cost, input_bounds=bounds)
    rollouts = env_rollouts(
        LINEAR, 100, controller=baseline, steps=100, seed=seed, exploration_std=0.01
    )
    env_steps = int(torch.isfinite(rollouts.y[..., 0]).sum())
    start = time.perf_counter()
    sim = _fit_simulator(rollouts, nominal, (32, 32), 5000, {}, seed=seed, progress=False)
    return env, sim, (env_steps, time.perf_counter() - start)


def evaluate(controller: Any, episodes: int, seed: int) -> tuple[float, float, float]:
    """Cost per step (mean, 95 % CI) and success rate of ``episodes`` seeded LinearSystem-v0
    episodes (the bench's evaluation loop)."""
    envs = gym.make_vec(LINEAR, num_envs=episodes)
    try:
        roll = run_episodes(envs, controller, 200, seed=seed)
    finally:
        envs.close()
    per_episode = -np.where(roll.running, roll.reward, 0.0).sum(1) / 200
    env = gym.make(LINEAR).unwrapped
    success = env.succeeded(roll.x[:, : roll.steps + 1], roll.lengths, roll.failed)
    return float(per_episode.mean()), ci95(per_episode), float(np.mean(success))


def latency_ms(controller: Any, steps: int = 200) -> float:
    """Median B = 1 ``predict`` time over ``steps`` closed-loop steps (after 20 untimed)."""
    env = gym.make(LINEAR)
    obs, _ = env.reset(seed=0)
    state, times = None, []
    for t in range(steps + 20):
        t0 = time.perf_counter()
        action, state = controller.predict(obs, state, np.array([t == 0]))
        if t >= 20:
            times.append(time.perf_counter() - t0)
        obs, *_ = env.step(action)
    return float(np.median(times)) * 1e3


def table_mismatch(args: Any) -> None:
    env, sim, (env_steps, sim_s) = linear_rollouts(args.seed)
    nominal, true, cost = env.nominal_model, env.true_model, env.cost
    bounds = (env.action_space.low, env.action_space.high)
    E = 100
    results: list[tuple[str, tuple[float, float, float], str, str]] = []
    oracle = evaluate(LQG(true, cost, input_bounds=bounds), E, args.seed)
    nom = evaluate(LQG(nominal, cost, input_bounds=bounds), E, args.seed)
    results.append(("LQG oracle (true model)", oracle, "-", "-"))
    results.append(("LQG nominal", nom, "-", "-"))

    def closed(cost_: float) -> str:
        return f"{100 * (nom[0] - cost_) / (nom[0] - oracle[0]):.0f} %"

    for trainable in (("S", "q"), ("S", "q", "A", "B")):
        policy = ConvexPolicy(
            nominal, cost, KalmanFilter(nominal), input_bounds=bounds, trainable=trainable
        )
        start = time.perf_counter()
        tune_policy(
            policy,
            sim,
            steps=args.tune_steps,
            horizon=200,
            episodes=256,
            batch_size=64,
            lr=0.02,
            lr_schedule="cosine",
            val_episodes=64,
            val_every=10,
            seed=args.seed,
            progress=False,
        )
        tune_s = time.perf_counter() - start
        res = evaluate(policy, E, args.seed)
        name = f"ConvexPolicy tuned ({', '.join(trainable)}), nominal KF"
        results.append((name, res, closed(res[0]), f"{tune_s:.0f} s"))
    print(
        f"LinearSystem-v0, default mismatch, {E} seeded episodes of 200 steps; simulator: nominal "
        f"model + residual MLP (32, 32) fitted to {env_steps:,} env steps ({sim_s:.0f} s)\n"
    )
    print("| method | cost per step | 95 % CI | success | gap closed | tuning |")
    print("|---|---|---|---|---|---|")
    for name, (c, ci, s), gap, t in results:
        print(f"| {name} | {c:.4f} | ± {ci:.4f} | {100 * s:.0f} % | {gap} | {t} |")
    print()
    table_unfolded(args, env, sim, nom, oracle)


def table_unfolded(args: Any, env: Any, sim: Any, nom: tuple, oracle: tuple) -> None:
    nominal, cost = env.nominal_model, env.cost
    bounds = (env.action_space.low, env.action_space.high)
    E, H = 100, 20
    rows = []
    exact = MPC(nominal, cost, H, input_bounds=bounds)
    rows.append(("exact QP", "-", evaluate(exact, E, args.seed), latency_ms(exact), "-"))
    for K in (3, 5, 10):
        mpc = MPC(nominal, cost, H, input_bounds=bounds, solver=Unfolded(K=K))
        rows.append(
            (f"unfolded K={K}", "untrained", evaluate(mpc, E, args.seed), latency_ms(mpc), "-")
        )
        start = time.perf_counter()
        tune_policy(
            mpc,
            sim,
            steps=args.tune_steps,
            horizon=200,
            episodes=256,
            batch_size=64,
            lr=0.05,
            lr_schedule="cosine",
            val_episodes=64,
            val_every=10,
            seed=args.seed,
            progress=False,
        )
        tune_s = time.perf_counter() - start
        rows.append(
            (
                f"unfolded K={K}",
                "tuned in the simulator",
                evaluate(mpc, E, args.seed),
                latency_ms(mpc),
                f"{tune_s:.0f} s",
            )
        )
    print(
        f"Unfolded MPC on LinearSystem-v0 (default mismatch, nominal model and KF, H = {H}), "
        f"{E} seeded episodes; B = 1 latency: median predict over 200 steps\n"
    )
    print(
        "| solver | parameters | cost per step | 95 % CI | gap closed | B=1 median [ms] | tuning |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, what, (c, ci, _), lat, t in rows:
        gap = 100 * (nom[0] - c) / (nom[0] - oracle[0])
        print(f"| {name} | {what} | {c:.4f} | ± {ci:.4f} | {gap:.0f} % | {lat:.3f} | {t} |")


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument(
        "--episodes", type=int, default=5000, help="seeded episodes of the cocp table (>= 1000)"
    )
    parser.add_argument("--tune-steps", type=int, default=50, help="tune_policy steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip-mismatch",
        action="store_true",
        help="only the cocp table (tables 2 and 3 fit a simulator first)",
    )
    args = parse(parser)
    table_cocp(args)
    if not args.skip_mismatch:
        table_mismatch(args)


if __name__ == "__main__":
    main()
