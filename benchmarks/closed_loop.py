"""Closed-loop control under model mismatch: every controller on the same seeded episodes.

Runs :func:`kalmannet_ctrl.bench.compare` on LinearSystem-v0, CartPole-v1 (both at their default
mismatch, CartPole also at the large one) and Pendulum-v0 (swing-up) with the model-based
baselines (LQG and MPC on the true and the nominal model) and the learned controllers (neural
MPC, LQG with a learned estimator trained on the state error only and then tuned on the
closed-loop cost), and prints the results table (mean cost per step ± 95 % CI over the
episodes, success, estimation MSE, env steps of training data, build/train time, latency)
followed by the fraction of the gap between nominal LQG and the oracle that each method closes:

    closed = (cost(lqg-nominal) − cost(method)) / (cost(lqg-nominal) − cost(lqg-oracle)).

``--rl [NAME ...]`` adds the model-free policies (Stable-Baselines3 PPO and SAC, each observing
the nominal filter's estimate and a history of measurements, and sb3-contrib's RecurrentPPO on
the raw measurements; hyperparameters and budgets from ``kalmannet_ctrl.rl.HYPERPARAMS``), all
of them without names: hours of CPU more, most of it SAC. Their training records a learning
curve (``--curve-every`` env steps between points, each ``--curve-episodes`` seeded episodes
judged as the table judges them: success and cost per step on the env's own cost); ``--rl``
prints the last point of each and writes the curves to ``<output>/curves/`` (a CSV per scenario
and method, a PNG per scenario), and the cost of zero input on the same episodes (what a policy
on measurements must beat).

``--unfolded`` adds the deep-unfolding rows at three iteration counts: ``unfolded-mpc`` (MPC on
the nominal model solved by K projected-gradient iterations with learned step sizes and QP data,
tuned on the closed-loop cost in the learned simulator) at K = 3, 5 and 10, named
``unfolded-mpc-k3`` and so on, next to ``mpc-nominal`` (the exact box-QP on the same model). Their
B = 1 latencies are in ``benchmarks/control_latency.py``; the untrained solvers at the same K are
in ``benchmarks/cocp.py``.

``--train-seeds 0 1 2`` trains every learned method once per seed (rows ``<method>-seed<k>``,
the config's ``train_seed``), each evaluated on the same seeded episodes, and adds a table per
method of every seed's gap closed, success and cost, with their mean and standard deviation.

Trained artefacts and finished cells are cached in ``--output`` (rerun to resume; delete the
folder to start over).

Usage::

    python benchmarks/closed_loop.py [--scenarios linear cartpole cartpole-large pendulum]
                                     [--episodes 100] [--methods ...] [--rl] [--unfolded]
                                     [--curve-every 10000] [--curve-episodes 20] [--seed 0]
                                     [--train-seeds 0 1 2]
                                     [--workers 2]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from kalmannet_ctrl.bench import LocalExecutor, compare, default_scenarios, get_method
from kalmannet_ctrl.metrics import ci95
from kalmannet_ctrl.rl import plot_learning_curves, write_learning_curve
from kalmannet_ctrl.training.rollout import run_episodes

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
RL_METHODS = ("ppo", "ppo-measurement", "sac", "sac-measurement", "recurrentppo-measurement")
UNFOLDED_K = (3, 5, 10)


def unfolded_methods(ks=UNFOLDED_K) -> list:
    """The registered ``unfolded-mpc`` (full budget) at each K of ``ks``, named by K."""
    base = get_method("unfolded-mpc")
    return [replace(base, name=f"unfolded-mpc-k{k}", config={**base.config, "K": k}) for k in ks]


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


def rl_methods(names, curve_every: int, curve_episodes: int) -> list:
    """The registered RL methods ``names`` (full budgets) recording learning curves."""
    curve = {"curve_every": curve_every, "curve_episodes": curve_episodes}
    return [replace(m, config={**m.config, **curve}) for m in map(get_method, names)]


#: The methods without training (one row whatever the training seeds).
UNTRAINED = ("lqg-oracle", "lqg-nominal", "mpc-nominal")


def per_train_seed(methods: list, seeds: list[int]) -> list:
    """Each learned method of ``methods`` once per training seed (named ``<name>-seed<k>``)."""
    out = []
    for m in methods:
        if m.name in UNTRAINED:
            out.append(m)
            continue
        out += [
            replace(m, name=f"{m.name}-seed{k}", config={**m.config, "train_seed": k})
            for k in seeds
        ]
    return out


def seed_summary(results, seeds: list[int]) -> list[str]:
    """Markdown rows: per scenario and learned method, each training seed's gap closed,
    success and cost, and their mean ± standard deviation over the seeds."""
    closed = {(sc, m): g for sc, m, g in gap_closed(results)}
    rows = []
    for scenario in dict.fromkeys(c.scenario for c in results):
        names = [c.method for c in results if c.scenario == scenario]
        bases = dict.fromkeys(n.rsplit("-seed", 1)[0] for n in names if "-seed" in n)
        for base in bases:
            cells = [results.get(scenario, f"{base}-seed{k}") for k in seeds]
            gaps = np.array([100 * closed.get((scenario, c.method), math.nan) for c in cells])
            succ = np.array([100 * c.success_rate for c in cells])
            cost = np.array([c.cost for c in cells])
            sd = lambda a: float(a.std(ddof=1)) if len(a) > 1 else math.nan  # noqa: E731
            rows.append(
                f"| {scenario} | {base} | {' / '.join(f'{g:.0f}' for g in gaps)} % | "
                f"{gaps.mean():.0f} ± {sd(gaps):.0f} % | "
                f"{' / '.join(f'{x:.0f}' for x in succ)} % | "
                f"{' / '.join(f'{x:.4g}' for x in cost)} | {cost.mean():.4g} ± {sd(cost):.2g} |"
            )
    return rows


def save_curves(results, folder: Path) -> list[tuple[str, str, dict]]:
    """Write each cell's learning curve to ``folder`` (CSV per cell, PNG per scenario); the
    (scenario, method, last point) of each."""
    last = []
    by_scenario: dict[str, dict[str, list]] = {}
    for c in results:
        if c.learning_curve:
            by_scenario.setdefault(c.scenario, {})[c.method] = c.learning_curve
            last.append((c.scenario, c.method, c.learning_curve[-1]))
    for scenario, curves in by_scenario.items():
        slug = "".join(ch if ch.isalnum() else "-" for ch in scenario.lower()).strip("-")
        for method, rows in curves.items():
            write_learning_curve(rows, folder / f"{slug}_{method}.csv")
        plot_learning_curves(curves, folder / f"{slug}.png", title=scenario)
    return last


class _ZeroInput:
    """The controller that never acts (a batch of zero inputs)."""

    def __init__(self, n_u: int) -> None:
        self.n_u = n_u

    def predict(self, y, state=None, episode_start=None, deterministic=True):
        return np.zeros((np.asarray(y).shape[0], self.n_u), np.float32), state


def zero_input(scenario, episodes: int, seed: int) -> tuple[float, float, float]:
    """Mean cost per step, its 95 % CI half-width and the success rate of zero input on the
    comparison's seeded episodes of ``scenario``."""
    envs = scenario.make_vec(episodes)
    try:
        steps = scenario.steps
        n_u = int(np.prod(envs.single_action_space.shape))
        roll = run_episodes(envs, _ZeroInput(n_u), steps, seed=seed)
    finally:
        envs.close()
    cost = roll.cost_per_step(steps)
    success = roll.succeeded(scenario.make().unwrapped)
    return float(cost.mean()), ci95(cost), float(np.mean(success))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios", nargs="+", default=["linear", "cartpole", "cartpole-large", "pendulum"]
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument(
        "--rl",
        nargs="*",
        choices=RL_METHODS,
        help="add these RL methods (all of " + ", ".join(RL_METHODS) + " without names)",
    )
    parser.add_argument(
        "--unfolded",
        action="store_true",
        help="add unfolded-mpc at K = " + ", ".join(map(str, UNFOLDED_K)),
    )
    parser.add_argument("--curve-every", type=int, default=10_000, help="RL env steps per point")
    parser.add_argument("--curve-episodes", type=int, default=20, help="episodes per point")
    parser.add_argument(
        "--train-seeds",
        nargs="+",
        type=int,
        help="train each learned method once per seed (same evaluation episodes)",
    )
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default="closed-loop-results")
    args = parser.parse_args()
    methods = [get_method(m) for m in args.methods]
    if args.rl is not None:
        methods += rl_methods(args.rl or RL_METHODS, args.curve_every, args.curve_episodes)
    if args.unfolded:
        methods += unfolded_methods()
    if args.train_seeds:
        methods = per_train_seed(methods, args.train_seeds)
    results = compare(
        default_scenarios(args.scenarios),
        methods,
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
    if args.train_seeds:
        seeds = " / ".join(map(str, args.train_seeds))
        print(f"\nPer training seed ({seeds}), the same {args.episodes} evaluation episodes:\n")
        print(
            "| scenario | method | gap closed per seed | mean ± sd | success per seed | "
            "cost / step per seed | mean ± sd |"
        )
        print("|---|---|---:|---:|---:|---:|---:|")
        print("\n".join(seed_summary(results, args.train_seeds)))
    if args.rl is not None:
        print(f"\nZero input on the same {args.episodes} episodes (what a policy must beat):\n")
        print("| scenario | cost / step (± 95% CI) | success |")
        print("|---|---:|---:|")
        for scenario in default_scenarios(args.scenarios):
            cost, ci, success = zero_input(scenario, args.episodes, args.seed)
            print(f"| {scenario.label} | {cost:.4g} ± {ci:.2g} | {100 * success:.0f} % |")
        folder = Path(args.output) / "curves"
        print(f"\nLearning curves in {folder}; their last points:\n")
        print("| scenario | method | env steps | train [s] | success | cost / step (± 95% CI) |")
        print("|---|---|---:|---:|---:|---:|")
        for scenario, method, r in save_curves(results, folder):
            print(
                f"| {scenario} | {method} | {r['env_steps']:,} | {r['train_s']:.0f} | "
                f"{100 * r['success']:.0f} % | {r['cost']:.4g} ± {r['cost_ci95']:.2g} |"
            )


if __name__ == "__main__":
    main()
