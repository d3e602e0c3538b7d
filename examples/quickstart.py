"""Quick start: a Kalman filter and LQG on an environment with partially known dynamics.
=====================================================================================

The designer's nominal model of LinearSystem-v0 misses the true system by a 2 degree rotation
of the dynamics and a 30 % stronger actuator. Filter a rollout with the Kalman filter of each
model, run LQG built on each model in closed loop, and compare with the exact average cost.

    python examples/quickstart.py
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LQG, analytic_average_cost
from kalmannet_ctrl.estimators import KalmanFilter
from kalmannet_ctrl.metrics import mse_db


def main() -> None:
    envs = gym.make_vec("kalmannet_ctrl/LinearSystem-v0", num_envs=256)
    env = envs.unwrapped
    nominal, true, cost = env.nominal_model, env.true_model, env.cost
    bounds = (env.single_action_space.low, env.single_action_space.high)

    # 1. estimation: filter the same measurements with the nominal and the true model
    traj = true.simulate(200, 256, generator=torch.Generator().manual_seed(0))
    for name, model in (("nominal", nominal), ("true", true)):
        estimate = KalmanFilter(model).filter(traj.y, traj.u).mean
        print(f"KF on the {name} model: MSE {mse_db(estimate, traj.x):6.2f} dB")

    # 2. control: LQG on each model, 256 seeded episodes of 200 steps in one batched env
    for name, model in (("nominal", nominal), ("true", true)):
        controller = LQG(model, cost, input_bounds=bounds)
        obs, _ = envs.reset(seed=0)
        state, start, costs = None, np.ones(256, dtype=bool), []
        for _ in range(200):
            action, state = controller.predict(obs, state, episode_start=start)
            obs, reward, _, _, _ = envs.step(action)
            costs.append(-reward)
            start[:] = False
        simulated = np.mean(costs[100:])  # after the initial transient
        exact = analytic_average_cost(true, controller, cost)
        print(f"LQG on the {name} model: cost/step {simulated:.3f} (exact stationary {exact:.3f})")


if __name__ == "__main__":
    main()
