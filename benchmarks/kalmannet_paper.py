"""The KalmanNet paper's settings on a CPU: MSE in dB on held-out data and training time.

For each setting, prints one table row per estimator: the model-based filter on the nominal
model, the same filter on the true model (oracle), the learned-noise filter, a GRU (RNN) and
KalmanNet, each trained on the same data with :func:`kalmannet_ctrl.training.fit`.

Settings (Revach et al., IEEE TSP 2022; REFERENCES.md):

1. ``linear``: 2x2 canonical model, r² = 1, q²/r² = −20 dB, T = 100, full information.
2. ``linear-long``: the same, trained on T = 20 and tested on T = 200.
3. ``rotated``: true F = R(10°)·F0, nominal F0, T = 20, q² = r² = 1.
4. ``synthetic``: the synthetic nonlinear model with partial information, 1/r² = 0 dB,
   ν = −20 dB, T = 100.
5. ``lorenz``: Lorenz attractor, J = 5, true h rotated by 1°, 1/r² = 20 dB, ν = −20 dB,
   trained on T = 100, tested on T = 1000.

Usage::

    python benchmarks/kalmannet_paper.py [--settings linear rotated ...] [--steps 1500]
                                         [--seed 0] [--train 1000] [--threads 2]
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from _common import machine, make_parser, parse

from kalmannet_ctrl.estimators import (
    ExtendedKalmanFilter,
    KalmanFilter,
    LearnedNoiseKalmanFilter,
    RNNEstimator,
)
from kalmannet_ctrl.metrics import mse_db
from kalmannet_ctrl.models import (
    SystemModel,
    Trajectory,
    linear_canonical,
    lorenz,
    noise_from_db,
    rotate_dynamics,
    set_parameters,
    synthetic_nonlinear,
)
from kalmannet_ctrl.training import fit, trajectories


@dataclass
class Setting:
    name: str
    nominal: SystemModel
    true: SystemModel
    train_T: int
    test_T: int
    paper: dict[str, float]
    lr: float = 1e-3
    #: Training sequences per ``--train`` sequence (short sequences get more, see "linear-long").
    data_factor: int = 1
    batch_size: int = 32


def settings() -> dict[str, Setting]:
    q2, r2 = noise_from_db(0.0, -20.0)
    linear = linear_canonical(2, q2=q2, r2=r2)
    rot_nominal = linear_canonical(2, q2=1.0, r2=1.0)
    syn_true = synthetic_nonlinear(q2=q2, r2=r2)
    syn_nominal = syn_true.with_params(alpha=1.0, beta=1.0, phi=0.0, delta=0.0)
    lq2, lr2 = noise_from_db(20.0, -20.0)
    lor_true = lorenz(q2=lq2, r2=lr2, measurement_rotation_deg=1.0)
    lor_nominal = set_parameters(lor_true, measurement_rotation_deg=0.0)
    return {
        "linear": Setting("linear", linear, linear, 100, 100, {}),
        "linear-long": Setting(
            "linear-long",
            linear,
            linear,
            20,
            200,
            {"KF (true, oracle)": -21.91, "KalmanNet": -21.90},
            # as many training time steps as the T = 100 setting (5 x 1000 sequences of 20)
            data_factor=5,
            batch_size=64,
        ),
        "rotated": Setting(
            "rotated",
            rot_nominal,
            rotate_dynamics(rot_nominal, 10.0),
            20,
            20,
            {},
            # short sequences: as many training time steps as the T = 100 settings
            data_factor=5,
            batch_size=64,
        ),
        "synthetic": Setting(
            "synthetic",
            syn_nominal,
            syn_true,
            100,
            100,
            {"EKF (nominal)": -7.57, "EKF (true, oracle)": -19.58, "KalmanNet": -15.83},
        ),
        "lorenz": Setting(
            "lorenz",
            lor_nominal,
            lor_true,
            100,
            1000,
            {"EKF (nominal)": -18.19, "KalmanNet": -27.32},
            lr=1e-3,
        ),
    }


def model_filter(model: SystemModel):
    return KalmanFilter(model) if model.is_linear else ExtendedKalmanFilter(model)


def evaluate(estimator, test: Trajectory) -> float:
    with torch.no_grad():
        res = estimator.filter(test.y, test.u)
    return mse_db(res.mean.double(), test.x.double())


def run_setting(
    s: Setting, *, steps: int, n_train: int, seed: int
) -> list[tuple[str, float, float]]:
    from kalmannet_ctrl.estimators import KalmanNet

    g = torch.Generator().manual_seed(seed)
    n_train *= s.data_factor
    train = trajectories(s.true, n_train, s.train_T, generator=g)
    val = trajectories(s.true, max(n_train // 10, 10), s.train_T, generator=g)
    test = trajectories(s.true, 200, s.test_T, generator=g)
    kind = "KF" if s.nominal.is_linear else "EKF"
    rows = [
        (f"{kind} (nominal)", evaluate(model_filter(s.nominal), test), 0.0),
        (f"{kind} (true, oracle)", evaluate(model_filter(s.true), test), 0.0),
    ]
    f32 = Trajectory(*(t.float() for t in train))
    v32 = Trajectory(*(t.float() for t in val))
    t32 = Trajectory(*(t.float() for t in test))
    candidates = [
        ("learned-noise " + kind, LearnedNoiseKalmanFilter(s.nominal), train, val, test, 0.02),
        (
            "RNN",
            RNNEstimator(s.nominal, generator=torch.Generator().manual_seed(seed)),
            f32,
            v32,
            t32,
            1e-2,
        ),
        (
            "KalmanNet",
            KalmanNet(s.nominal, generator=torch.Generator().manual_seed(seed)),
            f32,
            v32,
            t32,
            s.lr,
        ),
    ]
    for name, est, tr, va, te, lr in candidates:
        if isinstance(est, RNNEstimator):
            est.set_normalization(tr)
        t0 = time.perf_counter()
        fit(
            est,
            tr,
            va,
            steps=steps,
            batch_size=s.batch_size,
            lr=lr,
            weight_decay=1e-4 if name == "KalmanNet" else 0.0,
            val_every=max(steps // 20, 1),
            seed=seed,
            progress=True,
        )
        rows.append((name, evaluate(est, te), time.perf_counter() - t0))
    return rows


def main() -> None:
    parser = make_parser(__doc__, threads=2)
    parser.add_argument("--settings", nargs="+", default=list(settings()), choices=list(settings()))
    parser.add_argument(
        "--steps", type=int, default=1500, help="optimisation steps per learned estimator"
    )
    parser.add_argument(
        "--train",
        type=int,
        default=1000,
        help="training trajectories (times the setting's data factor: 5 for the T = 20 settings)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parse(parser)
    all_settings = settings()
    print(
        f"KalmanNet paper settings on the CPU ({machine(args.threads)}), seed {args.seed}, "
        f"{args.steps} steps"
    )
    print("| setting | estimator | test MSE [dB] | paper [dB] | training [s] |")
    print("|---|---|---:|---:|---:|")
    for name in args.settings:
        s = all_settings[name]
        for est, db, wall in run_setting(s, steps=args.steps, n_train=args.train, seed=args.seed):
            paper = s.paper.get(est)
            paper_s = "" if paper is None else f"{paper:.2f}"
            print(
                f"| {name} (T={s.train_T}->{s.test_T}) | {est} | {db:.2f} | {paper_s} "
                f"| {wall:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
