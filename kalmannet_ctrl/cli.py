"""The ``kalmannet-ctrl`` command.

Subcommands
-----------
compare
    The main job: every method on every scenario, with tables, CSV, JSON and plots.
train
    Build (and train) methods for scenarios ahead of a comparison.
list
    The registered environments, methods and named scenarios.
demo
    Filters the KalmanNet paper's linear 2×2 model (true F rotated by 10°) and its synthetic
    nonlinear model (partial information) with KF/EKF/UKF built on the nominal and on the true
    model, and prints MSE in dB and wall time (with the paper's figures where it has them).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import __version__
from ._io import atomic_write_text
from ._progress import bar
from .estimators import ExtendedKalmanFilter, KalmanFilter, UnscentedKalmanFilter
from .metrics import mse_db
from .models import SystemModel
from .models.library import linear_canonical, noise_from_db, synthetic_nonlinear
from .models.mismatch import rotate_dynamics


@dataclass(frozen=True)
class DemoScenario:
    """One estimation problem of the demo: a nominal and a true model, a horizon."""

    name: str
    nominal: SystemModel
    true: SystemModel
    steps: int
    paper: dict[tuple[str, str], float]  # (filter, "nominal"/"true") -> published MSE [dB]


def demo_scenarios(steps: int | None = None) -> list[DemoScenario]:
    """The demo's scenarios, with the KalmanNet paper's settings.

    - Linear 2×2 canonical model, q² = r² = 1, T = 20; the true F is the nominal F₀ rotated by
      10° (F = R₁₀·F₀, an unstable system, hence the short horizon of the paper).
    - Synthetic nonlinear model, 1/r² = 0 dB, ν = q²/r² = −20 dB, T = 100; the nominal model
      has (α, β, φ, δ) = (1, 1, 0, 0) instead of the true (0.9, 1.1, 0.1π, 0.01).

    ``steps`` overrides both horizons.
    """
    linear = linear_canonical(2, q2=1.0, r2=1.0)
    q2, r2 = noise_from_db(0.0, -20.0)
    true_nonlinear = synthetic_nonlinear(q2=q2, r2=r2)
    nominal_nonlinear = true_nonlinear.with_params(alpha=1.0, beta=1.0, phi=0.0, delta=0.0)
    return [
        DemoScenario(
            "linear 2x2, F rotated 10 deg, q2=r2=1",
            linear,
            rotate_dynamics(linear, 10.0),
            steps or 20,
            {},
        ),
        DemoScenario(
            "synthetic nonlinear, 1/r2=0dB, nu=-20dB",
            nominal_nonlinear,
            true_nonlinear,
            steps or 100,
            # KalmanNet paper (Revach et al. 2022), T = 100
            {("EKF", "true"): -19.58, ("EKF", "nominal"): -7.57, ("UKF", "nominal"): -5.18},
        ),
    ]


FILTERS: dict[str, Callable[[SystemModel], object]] = {
    "KF": KalmanFilter,
    "EKF": ExtendedKalmanFilter,
    "UKF": UnscentedKalmanFilter,
}


def run_demo(
    *, trajectories: int = 1000, steps: int | None = None, seed: int = 0, progress: bool = True
) -> list[dict]:
    """Run the demo and return its rows as dicts (scenario, filter, model, mse_db, ...)."""
    rows = []
    scenarios = demo_scenarios(steps)
    jobs = [
        (sc, name, which)
        for sc in scenarios
        for name in FILTERS
        for which in ("nominal", "true")
        if name != "KF" or sc.nominal.is_linear
    ]
    data = {}
    for i, sc in enumerate(scenarios):
        gen = torch.Generator().manual_seed(seed + i)
        data[sc.name] = sc.true.simulate(sc.steps, trajectories, generator=gen)
    for sc, name, which in bar(jobs, desc="demo", enabled=progress):
        traj = data[sc.name]
        model = sc.nominal if which == "nominal" else sc.true
        flt = FILTERS[name](model)
        with torch.no_grad():
            t0 = time.perf_counter()
            res = flt.filter(traj.y, traj.u)
            wall = time.perf_counter() - t0
        rows.append(
            {
                "scenario": sc.name,
                "filter": name,
                "model": which,
                "steps": sc.steps,
                "mse_db": mse_db(res.mean, traj.x),
                "paper_db": sc.paper.get((name, which), math.nan),
                "wall_s": wall,
                "us_per_traj_step": wall / (trajectories * sc.steps) * 1e6,
            }
        )
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table of the demo's rows."""
    head = "| scenario | T | filter | model | MSE [dB] | paper [dB] | wall [ms] | us/traj-step |"
    lines = [head, "|---|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        paper = "" if math.isnan(r["paper_db"]) else f"{r['paper_db']:.2f}"
        lines.append(
            f"| {r['scenario']} | {r['steps']} | {r['filter']} | {r['model']} | "
            f"{r['mse_db']:.2f} | {paper} | "
            f"{r['wall_s'] * 1e3:.1f} | {r['us_per_traj_step']:.3f} |"
        )
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {value}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kalmannet-ctrl",
        description="Neural-augmented state estimation and control.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="filter the KalmanNet paper's models with KF/EKF/UKF, nominal vs true model",
        description=(
            "Filter the KalmanNet paper's linear 2x2 model (true F rotated by 10 degrees) and its "
            "synthetic nonlinear model (partial information) with KF/EKF/UKF built on the "
            "nominal and on the true model; print MSE in dB and wall time."
        ),
    )
    demo.add_argument(
        "--trajectories", type=_positive_int, default=1000, help="test trajectories (default 1000)"
    )
    demo.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="time steps T (default: each scenario's own)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    _add_compare_parser(sub)

    train = sub.add_parser(
        "train",
        help="build and train methods for scenarios, filling the artefact cache",
        description=(
            "Build (and train, for learned methods) each method for each scenario and store the "
            "trained artefacts in OUTPUT/artifacts, where 'compare' with the same output folder "
            "and seed finds them."
        ),
    )
    _add_grid_arguments(train)

    sub.add_parser(
        "list",
        help="list the environments, methods and named scenarios",
        description="List the registered environments, methods and named default scenarios.",
    )
    return parser


def _add_compare_parser(sub: Any) -> None:
    """The ``compare`` subcommand: the main job."""
    compare = sub.add_parser(
        "compare",
        help="benchmark estimators and controllers on scenarios (the main job)",
        description=(
            "Run every method on every scenario over seeded episodes and write a Markdown "
            "table, CSV, JSON and plots. With no arguments: the embedded default scenarios and "
            "methods (see 'kalmannet-ctrl list'). An interrupted run started again with the "
            "same output folder resumes from its finished cells."
        ),
    )
    _add_grid_arguments(compare)
    compare.add_argument(
        "--episodes",
        type=_positive_int,
        default=None,
        help="seeded episodes per cell (default: the preset's, 100)",
    )
    compare.add_argument(
        "--sweep",
        metavar="KEY=V1,V2,...",
        default=None,
        help="mismatch sweep: repeat every scenario with mismatch KEY set to each value",
    )
    compare.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where cells run (default local)",
    )
    compare.add_argument(
        "--workers", type=_positive_int, default=None, help="local worker processes (default: CPUs)"
    )
    compare.add_argument(
        "--ray-address", default=None, help="Ray cluster address (default: a local Ray instance)"
    )
    compare.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    compare.add_argument(
        "--videos",
        type=_nonnegative_int,
        default=0,
        metavar="N",
        help="write videos/<scenario>.gif: the first N seeded episodes of every method side by "
        'side (default 0: none; needs pip install "kalmannet-ctrl[render]")',
    )


def _add_grid_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenarios",
        nargs="+",
        metavar="NAME",
        default=None,
        help="named scenarios or environment ids (default: every named scenario)",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        default=None,
        help="methods (default: the preset's); each trains with the preset's budget",
    )
    p.add_argument(
        "--preset",
        default="quick",
        metavar="NAME",
        help="budgets and default methods: 'quick' (the default, a few minutes on 2 cores) or "
        "'full' (the benchmarks' budgets, PPO and SAC; hours: use --executor ray); see "
        "'kalmannet-ctrl list'",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--output",
        default="kalmannet-ctrl-results",
        help="output folder (default ./kalmannet-ctrl-results)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _grid(args: argparse.Namespace, parser: argparse.ArgumentParser):
    from .bench import DEFAULT_SCENARIO_NAMES, DEFAULT_SCENARIOS, Scenario, default_scenarios
    from .bench.presets import get_preset
    from .envs import ENV_IDS

    scenarios = []
    for name in args.scenarios or list(DEFAULT_SCENARIO_NAMES):
        if name in DEFAULT_SCENARIOS:
            scenarios += default_scenarios([name])
        elif name in ENV_IDS:
            scenarios.append(Scenario(name))
        else:
            parser.error(
                f"unknown scenario {name!r}; expected one of {sorted(DEFAULT_SCENARIOS)} "
                f"or an environment id {list(ENV_IDS)}"
            )
    try:
        preset = get_preset(args.preset)
        methods = preset.resolve(args.methods)
    except ValueError as exc:
        parser.error(str(exc))
    return scenarios, methods, preset


def _sweep(scenarios: list, spec: str, parser: argparse.ArgumentParser) -> list:
    from dataclasses import replace

    key, sep, values = spec.partition("=")
    try:
        numbers = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        numbers = []
    if not sep or not key or not numbers:
        parser.error(f"--sweep: expected KEY=V1,V2,... with numbers, found {spec!r}")
    out = []
    for sc in scenarios:
        for v in numbers:
            mismatch = {**(sc.mismatch or {}), key: v}
            name = f"{sc.label.split(' (')[0]} ({key}={v:g})"
            try:
                out.append(replace(sc, mismatch=mismatch, name=name))
            except (ValueError, TypeError) as exc:
                parser.error(f"--sweep: {exc}")
    return out


def _run_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from .bench import LocalExecutor, compare

    scenarios, methods, preset = _grid(args, parser)
    episodes = preset.episodes if args.episodes is None else args.episodes
    if args.videos > episodes:
        parser.error(
            f"--videos: expected at most the {episodes} episodes per cell, found {args.videos}"
        )
    if args.videos:
        from .bench.videos import require_rendering
        from .errors import MissingDependencyError

        try:  # before the comparison runs, not after
            require_rendering()
        except MissingDependencyError as exc:
            print(f"kalmannet-ctrl compare: error: {exc}", file=sys.stderr)
            return 1
    if args.sweep:
        scenarios = _sweep(scenarios, args.sweep, parser)
    if args.executor == "ray":
        from .bench.executors import RayExecutor

        try:
            executor = RayExecutor(args.ray_address)
        except ImportError as exc:
            print(f"kalmannet-ctrl compare: error: {exc}", file=sys.stderr)
            return 1
    else:
        executor = LocalExecutor(args.workers)
    out = Path(args.output)
    try:
        results = compare(
            scenarios,
            methods,
            episodes=episodes,
            seed=args.seed,
            executor=executor,
            output_dir=out,
            progress=not args.no_progress,
            videos=args.videos,
        )
    except PermissionError as exc:
        print(f"kalmannet-ctrl compare: error: {exc}", file=sys.stderr)
        return 1
    table = results.to_markdown()
    atomic_write_text(out / "results.md", table + "\n")
    results.to_csv(out / "results.csv")
    results.to_json(out / "results.json")
    written = ["results.md", "results.csv", "results.json"]
    if not args.no_plots:
        from .bench.plots import write_plots

        key = args.sweep.partition("=")[0] if args.sweep else None
        written += [p.name for p in write_plots(results, out / "plots", mismatch_parameter=key)]
    if args.videos:
        from .bench.videos import write_videos

        written += [
            f"videos/{p.name}" for p in write_videos(results, out / "videos", episodes=args.videos)
        ]
    print(
        f"kalmannet-ctrl {__version__} compare (preset {preset.name}): {len(scenarios)} "
        f"scenario(s) x {len(methods)} method(s), {episodes} episodes per cell, seed {args.seed}"
    )
    print(table)
    print(f"\nwrote {', '.join(written)} to {out}")
    return 0


def _run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from .bench import ArtifactCache, BuildContext

    scenarios, methods, _ = _grid(args, parser)
    cache = ArtifactCache(Path(args.output) / "artifacts")
    for sc in scenarios:
        for m in methods:
            env = sc.make()
            if m.applies is not None and not m.applies(env):
                continue
            t0 = time.perf_counter()
            ctx = BuildContext(sc, env, args.seed, cache, method=m)
            m.build(ctx)
            how = " (from the cache)" if ctx.train_info.get("loaded") else ""
            print(f"{sc.label} / {m.name}: ready in {time.perf_counter() - t0:.2f} s{how}")
    return 0


def _run_list() -> int:
    import gymnasium as gym

    from .bench import DEFAULT_SCENARIOS, METHODS
    from .bench.presets import BUDGETS, DEFAULT_PRESET, PRESETS
    from .envs import ENV_IDS

    print("environments:")
    for env_id in ENV_IDS:
        spec = gym.spec(env_id)
        doc = (gym.make(env_id).unwrapped.__doc__ or "").strip().splitlines()
        print(f"  {env_id}  ({spec.max_episode_steps} steps)  {doc[0] if doc else ''}")
    print(f"methods (* = in the default preset, {DEFAULT_PRESET!r}):")
    for name, m in METHODS.items():
        mark = "*" if name in PRESETS[DEFAULT_PRESET].methods else " "
        print(f"  {mark} {name} [{m.family}]: {m.description}")
    print("presets (--preset; each learned method's budget per preset):")
    for name, preset in PRESETS.items():
        print(f"  {name}: {preset.description}; {preset.episodes} episodes per cell")
        print(f"    methods: {', '.join(preset.methods)}")
        for method, budgets in BUDGETS.items():
            text = ", ".join(f"{k}={v}" for k, v in budgets.get(name, {}).items())
            print(f"    {method}: {text or 'the hyperparameter table'}")
    print("named scenarios (the default comparison runs all):")
    for name, spec in DEFAULT_SCENARIOS.items():
        extra = f" mismatch={spec['mismatch']}" if spec.get("mismatch") else " default mismatch"
        print(f"  {name}: {spec['env_id']}{extra}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kalmannet-ctrl``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        rows = run_demo(
            trajectories=args.trajectories,
            steps=args.steps,
            seed=args.seed,
            progress=not args.no_progress,
        )
        print(
            f"kalmannet-ctrl {__version__} demo: {args.trajectories} test trajectories per "
            f"scenario, seed {args.seed}; 'nominal' filters use the designer's model, 'true' the "
            "simulator's (oracle)"
        )
        print(format_table(rows))
        return 0
    if args.command == "compare":
        return _run_compare(args, parser)
    if args.command == "train":
        return _run_train(args, parser)
    if args.command == "list":
        return _run_list()
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
