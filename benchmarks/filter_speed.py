"""Throughput of the batched Kalman filter against filterpy's predict/update loop.

Prints one table: time per trajectory-step of ``KalmanFilter.filter`` at B in {1, 32, 1024} and
n_x in {2, 6}, of the single-trajectory ``step`` (the closed-loop case, B = 1), and of filterpy's
``predict(); update()`` on the same model, with the ratio filterpy / ours (higher is better).
The step loop is timed over a first episode (a new filter, which computes the covariance
recursion as it goes) and over later episodes (the recursion from the model's prior is kept).

Usage::

    python benchmarks/filter_speed.py [--steps 1000] [--repeats 3] [--threads 1]

filterpy's cost per trajectory-step does not depend on B (it filters one trajectory at a time),
so it is measured once per n_x on one trajectory.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _common import machine, make_parser, parse
from filterpy.kalman import KalmanFilter as FilterPyKF
from tqdm import tqdm

from kalmannet_ctrl.estimators import KalmanFilter
from kalmannet_ctrl.models import LinearGaussianModel


def make_model(n_x: int, seed: int = 0) -> LinearGaussianModel:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n_x, n_x))
    A *= 0.95 / max(abs(np.linalg.eigvals(A)))
    n_y = max(1, n_x // 2)
    C = rng.normal(size=(n_y, n_x))
    return LinearGaussianModel(
        A,
        rng.normal(size=(n_x, 1)),
        C,
        process_cov=0.1 * np.eye(n_x),
        measurement_cov=np.eye(n_y),
        x0_cov=np.eye(n_x),
    )


def best_of(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_filterpy(model: LinearGaussianModel, y: np.ndarray, u: np.ndarray, repeats: int) -> float:
    m = model.numpy()

    def run() -> None:
        kf = FilterPyKF(dim_x=model.n_x, dim_z=model.n_y, dim_u=model.n_u)
        kf.F, kf.B, kf.H = m["A"], m["B"], m["C"]
        kf.Q, kf.R = m["process_cov"], m["measurement_cov"]
        kf.x, kf.P = m["x0_mean"].reshape(-1, 1).copy(), m["x0_cov"].copy()
        for t in range(y.shape[0]):
            kf.predict(u=u[t].reshape(-1, 1))
            kf.update(y[t].reshape(-1, 1))

    return best_of(run, repeats) / y.shape[0]


def time_step(
    model: LinearGaussianModel, y: torch.Tensor, u: torch.Tensor, repeats: int
) -> tuple[float, float]:
    """Per-step time of the B = 1 step loop over one episode: a new filter (the covariance
    recursion is computed along the way), and a filter that has run an episode before."""
    T = y.shape[1]

    def episode(kf: KalmanFilter) -> float:
        state = kf.init(1)
        t0 = time.perf_counter()
        for t in range(T):
            _, state = kf.step(state, y[:, t], u[:, t - 1] if t else None)
        return time.perf_counter() - t0

    cold = min(episode(KalmanFilter(model)) for _ in range(repeats)) / T
    kf = KalmanFilter(model)
    episode(kf)
    warm = min(episode(kf) for _ in range(repeats)) / T
    return cold, warm


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--steps", type=int, default=1000, help="time steps per trajectory")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parse(parser)
    T = args.steps
    rows = []
    cases = [(n_x, B) for n_x in (2, 6) for B in (1, 32, 1024)]
    with torch.no_grad():
        fp_cache: dict[int, float] = {}
        for n_x, B in tqdm(cases, desc="filter_speed", leave=False):
            model = make_model(n_x)
            gen = torch.Generator().manual_seed(n_x)
            u = torch.randn(B, T, 1, dtype=torch.float64, generator=gen)
            traj = model.simulate(T, B, u=u, generator=gen)
            if n_x not in fp_cache:
                fp_cache[n_x] = time_filterpy(
                    model, traj.y[0].numpy(), traj.u[0].numpy(), args.repeats
                )
            fp = fp_cache[n_x]
            kf = KalmanFilter(model)
            kf.filter(traj.y[:, :10], traj.u[:, :10])  # warm-up
            ours = best_of(lambda kf=kf, tr=traj: kf.filter(tr.y, tr.u), args.repeats) / (T * B)
            rows.append((f"filter B={B}", n_x, ours, fp))
            if B == 1:
                cold, warm = time_step(model, traj.y, traj.u, args.repeats)
                rows.append(("step B=1, 1st episode", n_x, cold, fp))
                rows.append(("step B=1, next episodes", n_x, warm, fp))
    print(
        f"Kalman filter throughput, T={T} steps, {machine(args.threads)}"
    )
    print(f"| {'case':<22} | n_x | ours [us/traj-step] | filterpy [us/step] | filterpy / ours |")
    print(f"|{'-' * 24}|-----|---------------------|--------------------|-----------------|")
    for name, n_x, ours, fp in rows:
        cells = f"{ours * 1e6:>19.4f} | {fp * 1e6:>18.2f} | {fp / ours:>14.1f}x"
        print(f"| {name:<22} | {n_x:>3} | {cells} |")


if __name__ == "__main__":
    main()
