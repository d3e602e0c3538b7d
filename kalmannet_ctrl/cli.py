"""The ``kalmannet-ctrl`` command.

Subcommands
-----------
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

import torch
from tqdm import tqdm

from . import __version__
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
    for sc, name, which in tqdm(jobs, desc="demo", disable=not progress, leave=False):
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
    return parser


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
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
