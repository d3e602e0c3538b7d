"""Closed-loop control under model mismatch: every controller on the same seeded episodes.

Runs :func:`kalmannet_ctrl.bench.compare` on LinearSystem-v0, CartPole-v0 (both at their default
mismatch, CartPole also at the large one) and Pendulum-v0 (swing-up) with the model-based
baselines (LQG and MPC on the true and the nominal model) and the learned controllers (neural
MPC, LQG with a learned estimator trained on the state error only and then tuned on the
closed-loop cost), and prints the results table (mean cost per step ± 95 % CI over the
episodes, success, estimation MSE, env steps of training data, build/train time, latency)
followed by the fraction of the gap between nominal LQG and the oracle that each method closes:

    closed = (cost(lqg-nominal) − cost(method)) / (cost(lqg-nominal) − cost(lqg-oracle)).

``--rl`` adds the model-free policies (Stable-Baselines3 PPO and SAC, each observing the nominal
filter's estimate and a history of measurements; hyperparameters and budgets from
``kalmannet_ctrl.rl.HYPERPARAMS``): about two hours of CPU more (one with two workers),
most of it SAC.

Trained artefacts and finished cells are cached in ``--output`` (rerun to resume; delete the
folder to start over).

Usage::

    python benchmarks/closed_loop.py [--scenarios linear cartpole cartpole-large pendulum]
                                     [--episodes 100] [--methods ...] [--rl] [--seed 0]
                                     [--workers 2]
"""

from __future__ import annotations

import argparse
import math

from kalmannet_ctrl.bench import LocalExecutor, compare, default_scenarios, get_method

METHODS = (
    "lqg-oracle",
    "lqg-nominal",
    "mpc-nominal",
    "neural-mpc",
    "learned-noise-lqg-state",
    "learned-noise-lqg",
    "kalmannet-lqg-state",
    "kalmannet-lqg",
)
RL_METHODS = ("ppo", "ppo-measurement", "sac", "sac-measurement")


def gap_closed(results) -> list[tuple[str, str, float]]:
    """(scenario, method, fraction of the nominal-LQG-to-oracle gap closed) per cell."""
    out = []
    for scenario in dict.fromkeys(c.scenario for c in results):
        try:
            oracle = results.get(scenario, "lqg-oracle").cost
            nominal = results.get(scenario, "lqg-nominal").cost
        except KeyError:
            continue
        for c in results:
            if c.scenario == scenario and c.method not in ("lqg-oracle", "lqg-nominal"):
                gap = nominal - oracle
                out.append((scenario, c.method, (nominal - c.cost) / gap if gap > 0 else math.nan))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios", nargs="+", default=["linear", "cartpole", "cartpole-large", "pendulum"]
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--rl", action="store_true", help="add " + ", ".join(RL_METHODS))
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default="closed-loop-results")
    args = parser.parse_args()
    results = compare(
        default_scenarios(args.scenarios),
        [get_method(m) for m in args.methods + (list(RL_METHODS) if args.rl else [])],
        episodes=args.episodes,
        seed=args.seed,
        executor=LocalExecutor(args.workers),
        output_dir=args.output,
    )
    print(f"{args.episodes} seeded episodes per cell, seed {args.seed}\n")
    print(results.to_markdown())
    print("\n| scenario | method | gap to oracle closed (vs nominal LQG) |")
    print("|---|---|---:|")
    for scenario, method, closed in gap_closed(results):
        print(f"| {scenario} | {method} | {100 * closed:.0f} % |")


if __name__ == "__main__":
    main()
