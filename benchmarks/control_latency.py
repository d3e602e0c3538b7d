"""Latency and throughput of the controllers: LQG, MPC (QP, LTV, MPPI, unfolded), the ADP
convex policy and neural MPC.

For each controller, prints one row of a Markdown table with

- the per-step latency at B = 1: median and 95th percentile of the time of one
  ``predict(observation, state, episode_start)`` call (estimator step + planning), over
  ``--steps`` closed-loop steps after ``--warmup-episodes`` episodes and ``--warmup`` more steps
  (what a controller computes once and keeps, such as the Kalman filter's gains from the prior,
  is computed in the first episode), and
- the batched throughput at B = 100: milliseconds per ``predict`` call on 100 environments and
  the resulting controller steps per second summed over the environments.

Observations come from the environment's native vector env run in closed loop with the
controller (so bounds are active as often as they would be in use); only ``predict`` is timed.
Every controller is built on the env's true model (the oracle; the nominal model costs the
same) with the env's actuator bounds.

Usage::

    python benchmarks/control_latency.py [--threads 1] [--steps 300] [--warmup 30]
                                         [--warmup-episodes 1] [--batch-steps 40]
                                         [--only lqg mppi ...]

``--only`` keeps the rows whose controller name contains one of the words (case-insensitive).

One torch thread by default: at B = 1 the operations are too small to gain from a second
thread, and on a machine whose cores are shared (the second core busy with the env or other
jobs) every operation that opens a parallel region, even a 20 × 20 matrix product, then waits
milliseconds for the second thread to be scheduled. ``--threads 2`` shows the difference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from _common import machine, make_parser, parse

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LQG, LTV, MPC, MPPI, ConvexPolicy, NeuralMPC, Unfolded
from kalmannet_ctrl.models import ResidualModel, linearize

LINEAR = "kalmannet_ctrl/LinearSystem-v0"
CARTPOLE = "kalmannet_ctrl/CartPole-v1"
PENDULUM = "kalmannet_ctrl/Pendulum-v0"


@dataclass(frozen=True)
class Case:
    """One row: a controller built from the (vector) env, and how to describe it."""

    name: str
    env_id: str
    settings: str
    make: Callable[[Any], Any]  # the vector env's ``unwrapped`` -> a controller
    env_kwargs: dict[str, Any] | None = None


def _bounds(env: Any) -> tuple[np.ndarray, np.ndarray]:
    return env.single_action_space.low, env.single_action_space.high


def classical_cases() -> list[Case]:
    """LQG and MPC on the linear system, the cart-pole and the pendulum."""

    def lqg_cartpole(env: Any) -> LQG:
        return LQG(linearize(env.true_model, np.zeros(4)), env.cost, input_bounds=_bounds(env))

    def pendulum(env: Any, **kwargs: Any) -> MPC:  # the swing-up: H = 30, wrapped angle cost
        return MPC(
            env.true_model,
            env.cost,
            30,
            input_bounds=_bounds(env),
            cost_state=env.cost_state,
            **kwargs,
        )

    return [
        Case(
            "LQG (KF + LQR)",
            LINEAR,
            "-",
            lambda env: LQG(env.true_model, env.cost, input_bounds=_bounds(env)),
        ),
        Case(
            "MPC qp, bounds inactive",
            LINEAR,
            "H=20",
            lambda env: MPC(env.true_model, env.cost, 20, input_bounds=_bounds(env)),
        ),
        Case(
            "MPC qp, bounds active",
            LINEAR,
            "H=20, bound 0.5",
            lambda env: MPC(env.true_model, env.cost, 20, input_bounds=(-0.5, 0.5)),
            {"action_bound": 0.5},
        ),
        *(
            Case(
                "MPC unfolded, bounds active",
                LINEAR,
                f"H=20, bound 0.5, K={K}",
                lambda env, K=K: MPC(
                    env.true_model, env.cost, 20, input_bounds=(-0.5, 0.5), solver=Unfolded(K=K)
                ),
                {"action_bound": 0.5},
            )
            for K in (3, 5, 10)
        ),
        Case(
            "ConvexPolicy (ADP), bounds active",
            LINEAR,
            "H=1, bound 0.5",
            lambda env: ConvexPolicy(env.true_model, env.cost, input_bounds=(-0.5, 0.5)),
            {"action_bound": 0.5},
        ),
        Case("LQG (linearized, KF)", CARTPOLE, "-", lqg_cartpole),
        Case(
            "MPC ltv (EKF)",
            CARTPOLE,
            "H=20, 1 iteration",
            lambda env: MPC(env.true_model, env.cost, 20, input_bounds=_bounds(env)),
        ),
        Case(
            "MPC ltv + line search (EKF)",
            CARTPOLE,
            "H=20, 1 iteration",
            lambda env: MPC(
                env.true_model,
                env.cost,
                20,
                input_bounds=_bounds(env),
                solver=LTV(line_search=True),
            ),
        ),
        Case(
            "MPC mppi (EKF)",
            CARTPOLE,
            "H=20, K=256",
            lambda env: MPC(
                env.true_model, env.cost, 20, input_bounds=_bounds(env), solver=MPPI(seed=0)
            ),
        ),
        Case("MPC ltv (EKF)", PENDULUM, "H=30, 1 iteration", lambda env: pendulum(env)),
        Case(
            "MPC mppi (EKF)",
            PENDULUM,
            "H=30, K=256",
            lambda env: pendulum(env, solver=MPPI(seed=0)),
        ),
        Case(
            "MPC mppi (EKF)",
            PENDULUM,
            "H=30, K=256, float32 rollouts",
            lambda env: pendulum(env, solver=MPPI(seed=0, rollout_dtype=torch.float32)),
        ),
    ]


def neural_mpc_cases() -> list[Case]:
    """Neural MPC: the nominal model plus a residual MLP (32, 32) with its linear path.

    The residual is untrained here (its output layers start at zero): the latency does not
    depend on the weights' values, only on the network's size, the horizon and the planner.
    """

    def neural(env: Any, horizon: int, **kwargs: Any) -> NeuralMPC:
        model = ResidualModel(env.nominal_model, hidden=(32, 32))
        return NeuralMPC(model, env.cost, horizon, input_bounds=_bounds(env), **kwargs)

    def swing_up(env: Any, **settings: Any) -> NeuralMPC:
        return neural(env, 30, solver=MPPI(seed=0, **settings), cost_state=env.cost_state)

    return [
        Case("neural MPC ltv (EKF on f̂)", LINEAR, "H=20, MLP 32x32", lambda env: neural(env, 20)),
        Case("neural MPC ltv (EKF on f̂)", CARTPOLE, "H=20, MLP 32x32", lambda env: neural(env, 20)),
        Case(
            "neural MPC mppi (EKF on f̂)",
            PENDULUM,
            "H=30, K=256, MLP 32x32",
            lambda env: swing_up(env),
        ),
        Case(
            "neural MPC mppi (EKF on f̂)",
            PENDULUM,
            "H=30, K=256, MLP 32x32, float32 rollouts",
            lambda env: swing_up(env, rollout_dtype=torch.float32),
        ),
    ]


def time_predict(
    case: Case, num_envs: int, steps: int, warmup: int, seed: int = 0, warmup_episodes: int = 0
) -> np.ndarray:
    """Seconds per ``predict`` call over ``steps`` closed-loop steps, after ``warmup_episodes``
    episodes (of the first env) and then ``warmup`` steps, none of them timed."""
    venv = gym.make_vec(case.env_id, num_envs=num_envs, **(case.env_kwargs or {}))
    try:
        ctrl = case.make(venv.unwrapped)
        obs, _ = venv.reset(seed=seed)
        state, start = None, np.ones(num_envs, dtype=bool)
        times: list[float] = []
        episodes, untimed = 0, warmup
        while len(times) < steps:
            t0 = time.perf_counter()
            action, state = ctrl.predict(obs, state, start)
            elapsed = time.perf_counter() - t0
            if episodes >= warmup_episodes:
                if untimed:
                    untimed -= 1
                else:
                    times.append(elapsed)
            obs, _, terminated, truncated, _ = venv.step(action)
            start = terminated | truncated
            episodes += bool(start[0])
    finally:
        venv.close()
    return np.asarray(times)


def main() -> None:
    parser = make_parser(__doc__, steps=(300, "timed steps at B = 1"))
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps before timing")
    parser.add_argument(
        "--warmup-episodes",
        type=int,
        default=1,
        help="untimed episodes at B = 1 before the --warmup steps",
    )
    parser.add_argument("--batch", type=int, default=100, help="B of the throughput column")
    parser.add_argument("--batch-steps", type=int, default=40, help="timed steps at B = --batch")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="keep the rows whose name contains any of these (case-insensitive)",
    )
    args = parse(parser)
    cases = classical_cases() + neural_mpc_cases()
    if args.only:
        words = [word.lower() for word in args.only]
        cases = [c for c in cases if any(word in c.name.lower() for word in words)]
    batch_warmup = max(5, args.warmup // 3)
    print(
        f"Control latency, {machine(args.threads)}; B = 1 over {args.steps} steps after "
        f"{args.warmup_episodes} episode(s) and {args.warmup} steps, B = {args.batch} over "
        f"{args.batch_steps} steps (after {batch_warmup} steps)\n"
    )
    head = (
        f"| controller | env | settings | B=1 median [ms] | B=1 p95 [ms] "
        f"| B={args.batch} [ms/step] | B={args.batch} [steps/s] |"
    )
    print(head)
    print("|" + "|".join("---" for _ in range(7)) + "|")
    for case in cases:
        single = time_predict(
            case, 1, args.steps, args.warmup, warmup_episodes=args.warmup_episodes
        )
        batched = time_predict(case, args.batch, args.batch_steps, batch_warmup)
        per_batch = float(np.median(batched))
        env = case.env_id.split("/")[-1]
        print(
            f"| {case.name} | {env} | {case.settings} | {np.median(single) * 1e3:.3f} "
            f"| {np.percentile(single, 95) * 1e3:.3f} | {per_batch * 1e3:.2f} "
            f"| {args.batch / per_batch:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
