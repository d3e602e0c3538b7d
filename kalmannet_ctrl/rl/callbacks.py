"""The Stable-Baselines3 callbacks of :func:`~kalmannet_ctrl.rl.train_rl`: progress, checkpoints
(and resuming from them) and keeping the policy of the best evaluation."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BestPolicy", "Checkpoints", "progress_callback"]


def progress_callback(sb3: Any, *, enabled: bool = True) -> Any:
    """A callback counting the env steps on the library's progress bar (hidden unless
    ``enabled`` and the output is a terminal; the count is always reported, see
    :mod:`kalmannet_ctrl._progress`)."""
    from .._progress import bar

    class _ProgressCallback(sb3.common.callbacks.BaseCallback):  # type: ignore[misc, name-defined]
        def _on_training_start(self) -> None:
            total = self.locals["total_timesteps"]
            desc = type(self.model).__name__
            self.pbar = bar(desc=desc, total=total, enabled=enabled, unit="step")
            self.pbar.update(self.model.num_timesteps)  # resumed runs start where they were

        def _on_step(self) -> bool:
            self.pbar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.pbar.close()

    return _ProgressCallback()


@dataclass(frozen=True)
class Checkpoints:
    """SB3's checkpoints in ``folder``: ``rl_model_<steps>_steps.zip`` with the replay buffer
    and VecNormalize statistics of the same step beside.

    Attributes
    ----------
    folder : Path or None
        None without a ``log_dir`` (no checkpoints).
    latest : (steps, path) or None
        The checkpoint to resume from (with ``resume``), else None.
    """

    folder: Path | None
    latest: tuple[int, Path] | None

    @classmethod
    def find(cls, folder: Path | None, resume: bool) -> Checkpoints:
        """The checkpoints of ``folder``, resuming from the latest one when ``resume``."""
        if not resume or folder is None:
            return cls(folder, None)
        best: tuple[int, Path] | None = None
        for p in folder.glob("rl_model_*_steps.zip"):
            match = re.fullmatch(r"rl_model_(\d+)_steps\.zip", p.name)
            if match and (best is None or int(match.group(1)) > best[0]):
                best = (int(match.group(1)), p)
        return cls(folder, best)

    def file(self, kind: str) -> Path | None:
        """The ``kind`` file ("replay_buffer", "vecnormalize") of the latest checkpoint, if any."""
        if self.latest is None or self.folder is None:
            return None
        path = self.folder / f"rl_model_{kind}_{self.latest[0]}_steps.pkl"
        return path if path.is_file() else None

    def callback(self, every: int, n_envs: int) -> Any:
        """SB3's ``CheckpointCallback`` about every ``every`` env steps over ``n_envs`` copies
        (model, replay buffer, VecNormalize statistics)."""
        from stable_baselines3.common.callbacks import CheckpointCallback

        return CheckpointCallback(
            save_freq=max(every // n_envs, 1),
            save_path=str(self.folder),
            name_prefix="rl_model",
            save_replay_buffer=True,
            save_vecnormalize=True,
        )


class BestPolicy:
    """SB3's ``EvalCallback`` on a separate env, keeping (in memory) the policy weights and the
    observation-normalization statistics of the best evaluation.

    Parameters
    ----------
    eval_env : VecEnv
        The evaluation copies (wrapped in a non-training VecNormalize when ``train_env`` is one).
    train_env : VecEnv
        The training copies.
    eval_every : int
        Calls of the callback (steps of the vectorized env) between evaluations.
    episodes : int
        Deterministic episodes per evaluation.

    Attributes
    ----------
    callback : EvalCallback
    snapshot : dict or None
        ``{"policy", "obs_rms", "env_steps", "mean_return"}`` of the best evaluation so far.
    """

    def __init__(self, eval_env: Any, train_env: Any, *, eval_every: int, episodes: int) -> None:
        from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
        from stable_baselines3.common.vec_env import VecNormalize

        if isinstance(train_env, VecNormalize):
            # EvalCallback copies the training statistics into it before each evaluation
            eval_env = VecNormalize(
                eval_env,
                training=False,
                norm_obs=train_env.norm_obs,
                norm_reward=False,
                clip_obs=train_env.clip_obs,
                epsilon=train_env.epsilon,
            )
        self.env = eval_env
        self.snapshot: dict[str, Any] | None = None
        owner = self
        normalized = isinstance(train_env, VecNormalize)

        class _OnNewBest(BaseCallback):  # type: ignore[misc]
            def _on_step(self) -> bool:
                parent = self.parent
                rms = train_env.obs_rms if normalized else None
                owner.snapshot = {
                    "policy": copy.deepcopy(parent.model.policy.state_dict()),
                    "obs_rms": None
                    if rms is None
                    else (
                        np.asarray(rms.mean, dtype=np.float64).copy(),
                        np.asarray(rms.var, dtype=np.float64).copy(),
                    ),
                    "env_steps": int(parent.model.num_timesteps),
                    "mean_return": float(parent.best_mean_reward),
                }
                return True

        self.callback = EvalCallback(
            eval_env,
            callback_on_new_best=_OnNewBest(),
            n_eval_episodes=episodes,
            eval_freq=eval_every,
            deterministic=True,
            verbose=0,
        )

    def restore(self, model: Any, obs_normalization: dict[str, Any] | None) -> dict[str, Any]:
        """Load the best policy into ``model`` and its statistics into ``obs_normalization``
        (in place); ``{"env_steps", "mean_return"}`` of that evaluation.

        Call only when :attr:`snapshot` is set.
        """
        assert self.snapshot is not None
        model.policy.load_state_dict(self.snapshot["policy"])
        if obs_normalization is not None and self.snapshot["obs_rms"] is not None:
            mean, var = self.snapshot["obs_rms"]
            obs_normalization.update(mean=mean, var=var)
        return {
            "env_steps": self.snapshot["env_steps"],
            "mean_return": self.snapshot["mean_return"],
        }

    def close(self) -> None:
        """Close the evaluation env."""
        self.env.close()
