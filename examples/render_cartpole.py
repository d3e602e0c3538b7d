"""Watching a controller: LQG on the nominal and on the true cart-pole, frame by frame.
====================================================================================

At the large mismatch (``CARTPOLE_LARGE_MISMATCH``: a shorter, heavier pole, a lighter cart,
friction) LQG designed on the nominal model loses the pole in most episodes, while the same
design on the true model keeps it up. Run both on the same seeded episode with
``render_mode="rgb_array"``, hand each step's estimate to the env (``env.unwrapped.estimate``:
the blue outline beside the true cart and pole; orange, what the sensors read) and show a few
frames: the nominal design lets the pole swing ever wider until it falls. Needs the
``render`` extra (``pip install "kalmannet-ctrl[render]"``); a few seconds.

    python examples/render_cartpole.py
"""

from __future__ import annotations

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np

from kalmannet_ctrl.controllers import LQG, design_model
from kalmannet_ctrl.envs.cartpole import CARTPOLE_LARGE_MISMATCH

SHOWN = (0, 250, 350, 380)  # the steps drawn (the nominal design loses the pole at 381)


def episode_frames(designed_on: str, seed: int = 0) -> tuple[list[np.ndarray], int, bool]:
    """One episode: the frames at the steps of SHOWN (the last frame for those after its end),
    the steps it ran and whether it ended by failure."""
    env = gym.make(
        "kalmannet_ctrl/CartPole-v1", mismatch=CARTPOLE_LARGE_MISMATCH, render_mode="rgb_array"
    )
    model = getattr(env.unwrapped, f"{designed_on}_model")
    bounds = (env.action_space.low, env.action_space.high)
    controller = LQG(design_model(model), env.unwrapped.cost, input_bounds=bounds)
    obs, _ = env.reset(seed=seed)
    state, frames, t, terminated, truncated = None, [], 0, False, False
    while not (terminated or truncated):
        action, state = controller.predict(obs, state, episode_start=t == 0)
        env.unwrapped.estimate = controller.estimate(state)[0].numpy()
        if t in SHOWN:
            frames.append(env.render()[120:310, 100:500])  # the track's middle
        obs, _, terminated, truncated, _ = env.step(action)
        t += 1
    last = env.render()[120:310, 100:500]
    env.close()
    return frames + [last] * (len(SHOWN) - len(frames)), t, terminated


def main() -> None:
    fig, axes = plt.subplots(2, len(SHOWN), figsize=(3 * len(SHOWN), 3.6), layout="constrained")
    for row, designed_on in enumerate(("nominal", "true")):
        frames, steps, failed = episode_frames(designed_on)
        how = f"lost the pole after {steps} steps" if failed else f"held it for all {steps} steps"
        print(f"LQG designed on the {designed_on} model {how}")
        for ax, frame, t in zip(axes[row], frames, SHOWN, strict=True):
            ax.imshow(frame)
            ax.set_axis_off()
            ax.set_title(f"{designed_on} model, step {min(t, steps)}", fontsize=9)
    fig.suptitle("LQG at the large cart-pole mismatch (black: true, blue: estimate)")
    plt.show()


if __name__ == "__main__":
    main()
