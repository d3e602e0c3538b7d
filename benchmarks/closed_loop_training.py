"""Training time and gap closed of the learned-estimator LQG methods, old settings against new.

Trains KalmanNet-LQG and learned-noise LQG (:func:`kalmannet_ctrl.training.learned_lqg`) on
CartPole-v1 (the bench's ``cartpole`` scenario) with each setting below, for each training seed,
and evaluates every controller with the bench's own machinery
(:func:`kalmannet_ctrl.bench.runner.run_cell`: the seeded episodes ``compare --seed`` runs, 100
by default), next to nominal and oracle LQG on the same episodes:

    gap closed = (cost(lqg-nominal) − cost(method)) / (cost(lqg-nominal) − cost(lqg-oracle)).

Settings (the learned_lqg keywords are in :data:`SETTINGS`):

- ``old``: the settings before segments (whole-sequence supervised training at batch 32,
  closed-loop tuning on whole 200-step episodes at batch 32, 20,000 simulator steps);
- ``full``: segments (supervised: 20 steps, 256 per minibatch; closed loop: 100 steps, 512), the
  bench's full preset;
- ``quick``: the same with smaller budgets, the bench's quick preset.

Each row gives the training time of the whole of ``learned_lqg`` and its parts (rollouts,
supervised fit, simulator fit, closed-loop tuning). Rows are appended to ``--output`` (JSON
lines) as they finish; a rerun skips the rows already there (``--fresh`` starts over), and
``--table`` only prints the table of the file. The machine's load average is recorded with each
row: old and new run back to back for each seed, so that both see the same load.

Usage::

    python benchmarks/closed_loop_training.py [--seeds 0 1 2] [--episodes 100]
        [--only old full quick] [--estimators kalmannet learned-noise]
        [--output closed-loop-training.jsonl] [--fresh] [--table] [--threads 1]
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine, make_parser, parse
from tqdm import tqdm

from kalmannet_ctrl.bench import default_scenarios, get_method
from kalmannet_ctrl.bench.context import BuildContext, Method
from kalmannet_ctrl.bench.presets import budget
from kalmannet_ctrl.bench.runner import CellTask, run_cell
from kalmannet_ctrl.controllers import LQG
from kalmannet_ctrl.training import learned_lqg

_ROLLOUTS = {"episodes": 100, "steps": 100, "exploration_std": 0.01}
#: The closed-loop tuning before segments (fit_closed_loop's defaults then).
_OLD_TUNING = {
    "segment": None,
    "batch_size": 32,
    "lr": 3e-4,
    "lr_schedule": "constant",
    "episodes": 256,
    "val_episodes": 128,
    "val_every": 10,
    "horizon": 200,
}
#: The simulator before: 20,000 steps at fit_residual's batch 256.
_OLD_SIMULATOR = {"simulator_fit_steps": 20000, "simulator_options": {"batch_size": 256}}


def _bench_config(kind: str, preset: str) -> dict[str, Any]:
    """The learned_lqg keywords of the bench's ``<kind>-lqg`` method in ``preset``."""
    name = f"{kind}-lqg"
    return {**get_method(name).config, **budget(name, preset)}


#: setting -> estimator -> learned_lqg keywords; ``full`` and ``quick`` are the bench's own
#: methods in those presets.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "old": {
        "kalmannet": {
            **_ROLLOUTS,
            "fit_steps": 300,
            "batch_size": 32,
            "lr": 1e-3,
            "segment": None,
            "closed_loop_steps": 300,
            "closed_loop_options": _OLD_TUNING,
            **_OLD_SIMULATOR,
        },
        "learned-noise": {
            **_ROLLOUTS,
            "fit_steps": 150,
            "batch_size": 32,
            "lr": 2e-2,
            "segment": None,
            "closed_loop_steps": 100,
            "closed_loop_options": {**_OLD_TUNING, "lr": 1e-2},
            **_OLD_SIMULATOR,
        },
    },
    **{
        preset: {kind: _bench_config(kind, preset) for kind in ("kalmannet", "learned-noise")}
        for preset in ("full", "quick")
    },
}
_PARTS = ("rollouts", "fit", "simulator", "closed_loop")
_LAST_INFO: dict[str, Any] = {}


def _run(scenario: Any, method: Method, episodes: int, seed: int) -> Any:
    return run_cell(CellTask(scenario, method, episodes, seed, None))


def _row(setting: str, kind: str, seed: int, episodes: int, refs: dict[str, float]) -> dict:
    scenario = default_scenarios(["cartpole"])[0]
    config = {"estimator": kind, **SETTINGS[setting][kind]}
    method = Method(f"{kind}-lqg ({setting})", build, config=config)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    cell = _run(scenario, method, episodes, seed)
    wall = time.perf_counter() - start
    gap = refs["nominal"] - refs["oracle"]
    parts = {k: round(float(_LAST_INFO["time_s"].get(k, 0.0)), 2) for k in _PARTS}
    tuning = _LAST_INFO.get("closed_loop")
    return {
        "setting": setting,
        "estimator": kind,
        "seed": seed,
        "episodes": episodes,
        "train_s": round(float(_LAST_INFO["train_s"]), 2),
        **{f"{k}_s": v for k, v in parts.items()},
        "cost": cell.cost,
        "nominal_cost": refs["nominal"],
        "oracle_cost": refs["oracle"],
        "gap_closed": (refs["nominal"] - cell.cost) / gap if gap > 0 else math.nan,
        "success_rate": cell.success_rate,
        "fit_nonfinite_step": _LAST_INFO["fit"].nonfinite_step,
        "tuning_best_step": None if tuning is None else tuning.best_step,
        "wall_s": round(wall, 2),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "config": config,
    }


def build(ctx: BuildContext) -> LQG:
    """The bench's learned-LQG build (:func:`learned_lqg` on ``ctx``'s scenario and seed, as
    ``BuildContext.train`` calls it; its controller is the bench's: the trained estimator in
    LQG on the nominal design), taking any learned_lqg keyword and keeping the training info
    for the table."""
    config = dict(ctx.config)
    kind = config.pop("estimator")
    controller, info = learned_lqg(
        ctx.scenario.env_id,
        kind,
        seed=ctx.seed,
        env_kwargs=ctx.scenario.make_kwargs(),
        progress=True,
        **config,
    )
    _LAST_INFO.clear()
    _LAST_INFO.update(info)
    ctx.train_info.update(env_steps=int(info["env_steps"]), train_s=float(info["train_s"]))
    return controller


def _references(seed: int, episodes: int) -> dict[str, float]:
    scenario = default_scenarios(["cartpole"])[0]
    return {
        "nominal": _run(scenario, get_method("lqg-nominal"), episodes, seed).cost,
        "oracle": _run(scenario, get_method("lqg-oracle"), episodes, seed).cost,
    }


def _spread(values: list[float]) -> str:
    if not values:
        return ""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {statistics.stdev(values):.2g} [{min(values):.4g}, {max(values):.4g}]"


def table(rows: list[dict]) -> str:
    """The rows per seed, then mean ± standard deviation [min, max] per setting."""
    out = [
        "| estimator | setting | seed | train s | rollouts | fit | simulator | closed loop "
        "| cost | gap closed | load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def order(r: dict) -> tuple:
        return r["estimator"], list(SETTINGS).index(r["setting"]), r["seed"]

    for r in sorted(rows, key=order):
        out.append(
            f"| {r['estimator']} | {r['setting']} | {r['seed']} | {r['train_s']:.0f} "
            f"| {r['rollouts_s']:.1f} | {r['fit_s']:.0f} | {r['simulator_s']:.0f} "
            f"| {r['closed_loop_s']:.0f} | {r['cost']:.6f} | {100 * r['gap_closed']:.0f} % "
            f"| {r['load_before']:.1f}–{r['load_after']:.1f} |"
        )
    out += ["", "| estimator | setting | seeds | train s | gap closed (%) | speed-up vs old |"]
    out.append("|---|---|---:|---|---|---:|")
    for kind in dict.fromkeys(r["estimator"] for r in rows):
        old = [r["train_s"] for r in rows if r["estimator"] == kind and r["setting"] == "old"]
        for setting in SETTINGS:
            sel = [r for r in rows if r["estimator"] == kind and r["setting"] == setting]
            if not sel:
                continue
            times = [r["train_s"] for r in sel]
            gaps = [100 * r["gap_closed"] for r in sel]
            speed = statistics.fmean(old) / statistics.fmean(times) if old else math.nan
            out.append(
                f"| {kind} | {setting} | {len(sel)} | {_spread(times)} | {_spread(gaps)} "
                f"| {speed:.1f}× |"
            )
    return "\n".join(out)


def _load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument(
        "--estimators",
        nargs="+",
        choices=["kalmannet", "learned-noise"],
        default=["kalmannet", "learned-noise"],
    )
    parser.add_argument("--output", default="closed-loop-training.jsonl")
    parser.add_argument("--fresh", action="store_true", help="drop the rows already in --output")
    parser.add_argument("--table", action="store_true", help="only print --output's table")
    args = parse(parser)
    path = Path(args.output)
    if args.fresh and path.exists():
        path.unlink()
    rows = _load(path)
    if not args.table:
        done = {(r["setting"], r["estimator"], r["seed"], r["episodes"]) for r in rows}
        todo = [
            (seed, setting, kind)
            for kind in args.estimators
            for seed in args.seeds
            for setting in args.only
            if (setting, kind, seed, args.episodes) not in done
        ]
        print(f"CartPole-v1, {args.episodes} seeded episodes per cell; {machine(args.threads)}")
        refs: dict[int, dict[str, float]] = {}
        bar = tqdm(todo, desc="closed_loop_training")
        for seed, setting, kind in bar:
            bar.set_postfix(seed=seed, setting=setting, estimator=kind)
            if seed not in refs:
                refs[seed] = _references(seed, args.episodes)
            row = _row(setting, kind, seed, args.episodes, refs[seed])
            torch.set_num_threads(args.threads)  # run_cell sets one thread
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            tqdm.write(
                f"{kind} {setting} seed {seed}: {row['train_s']:.0f} s, "
                f"gap closed {100 * row['gap_closed']:.0f} %"
            )
    print(table([r for r in rows if r["episodes"] == args.episodes]))


if __name__ == "__main__":
    main()
