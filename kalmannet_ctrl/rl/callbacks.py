"""The Stable-Baselines3 callbacks of :func:`~kalmannet_ctrl.rl.train_rl`: progress, checkpoints
(and resuming from them), keeping the policy of the best evaluation, and the learning curve."""

from __future__ import annotations

import copy
import csv
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from .._io import atomic_write_text
from ..metrics import ci95

__all__ = [
    "CURVE_COLUMNS",
    "BestPolicy",
    "Checkpoints",
    "LearningCurve",
    "plot_learning_curves",
    "progress_callback",
    "read_learning_curve",
    "write_learning_curve",
]


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


#: The columns of a learning curve (``learning_curve.csv``), one row per evaluation point.
CURVE_COLUMNS: tuple[str, ...] = (
    "env_steps",
    "train_s",
    "success",
    "cost",
    "cost_ci95",
    "episode_length",
)


class LearningCurve:
    """Evaluation points of a training run, measured as the comparison measures a controller.

    At the start of training (or of a resumed run), about every ``every`` env steps (at the
    first collection of experience after that many, when the policy is the one the last update
    left) and at the end, the policy of that moment is made into a controller on raw measurements
    (``make_controller(model)``) and run on ``episodes`` seeded episodes of the env's native
    vector env (:func:`~kalmannet_ctrl.training.run_episodes`, the same seeds at every point):
    the row records the env steps so far, the training wall time, the success rate
    (``env.unwrapped.succeeded``) and the mean cost per step on the env's own cost (failure
    costs included, divided by the episode length) with its 95 % confidence half-width.

    Parameters
    ----------
    make_controller : callable
        ``make_controller(model) -> Controller``: the policy as it is now (with the observation
        statistics of the moment, frozen).
    make_envs : callable
        ``make_envs(episodes) -> VectorEnv``: fresh copies of the env (closed after each point).
    judge : gymnasium.Env
        One copy of the env whose ``unwrapped.succeeded`` judges the episodes.
    every : int
        Env steps between points.
    episodes : int
        Seeded episodes per point.
    seed : int
        Seed of the evaluation resets.
    steps : int
        Episode length (the env's time limit).
    path : Path, optional
        The CSV the rows are written to (rewritten after every point, so an interrupted run
        keeps its curve; a resumed run keeps the rows before its start).

    Attributes
    ----------
    rows : list of dict
        The points so far, keys :data:`CURVE_COLUMNS`.
    eval_s : float
        Seconds spent evaluating in this run (not counted in the rows' ``train_s``).
    callback : BaseCallback
        The SB3 callback to pass to ``learn``.
    """

    def __init__(
        self,
        make_controller: Callable[[Any], Any],
        make_envs: Callable[[int], Any],
        judge: gym.Env,
        *,
        every: int,
        episodes: int,
        seed: int,
        steps: int,
        path: Path | None = None,
    ) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        self.rows: list[dict[str, float]] = []
        self.eval_s = 0.0
        self.path = path
        self.every, self.episodes, self.seed, self.steps = every, episodes, seed, steps
        self.make_controller, self.make_envs, self.judge = make_controller, make_envs, judge
        owner = self

        class _Curve(BaseCallback):  # type: ignore[misc]
            def _on_training_start(self) -> None:
                owner.start(int(self.model.num_timesteps))
                owner.point(self.model)

            # between collections, when the policy is the one the last update left
            def _on_rollout_start(self) -> None:
                if self.model.num_timesteps >= owner.next_at:
                    owner.point(self.model)

            def _on_step(self) -> bool:
                return True

            def _on_training_end(self) -> None:
                owner.point(self.model, final=True)

        self.callback = _Curve()

    def start(self, env_steps: int) -> None:
        """Begin at ``env_steps``: keep the rows of an earlier run up to there (from ``path``)."""
        if self.path is not None and self.path.is_file():
            self.rows = [r for r in read_learning_curve(self.path) if r["env_steps"] <= env_steps]
        self.offset = self.rows[-1]["train_s"] if self.rows else 0.0
        self.t0 = time.perf_counter()
        self.eval_s = 0.0
        self.next_at = env_steps

    def point(self, model: Any, *, final: bool = False) -> None:
        """Evaluate the policy of ``model`` now and record the row (one per env-step count; the
        ``final`` point replaces one taken at the same count before the last update)."""
        from ..training.rollout import run_episodes

        env_steps = int(model.num_timesteps)
        if self.rows and self.rows[-1]["env_steps"] >= env_steps:
            if not final or self.rows[-1]["env_steps"] > env_steps:
                self.next_at = int(self.rows[-1]["env_steps"]) + self.every
                return
            self.rows.pop()
        now = time.perf_counter()
        train_s = self.offset + (now - self.t0) - self.eval_s
        envs = self.make_envs(self.episodes)
        try:
            roll = run_episodes(envs, self.make_controller(model), self.steps, seed=self.seed)
        finally:
            envs.close()
        cost = roll.cost_per_step(self.steps)
        self.rows.append(
            {
                "env_steps": env_steps,
                "train_s": train_s,
                "success": float(np.mean(roll.succeeded(self.judge))),
                "cost": float(cost.mean()),
                "cost_ci95": ci95(cost),
                "episode_length": float(roll.lengths.mean()),
            }
        )
        self.next_at = env_steps + self.every
        if self.path is not None:
            write_learning_curve(self.rows, self.path)
        self.eval_s += time.perf_counter() - now  # the evaluations' time is not training time


def write_learning_curve(rows: list[dict[str, float]], path: Path) -> None:
    """Write ``rows`` (keys :data:`CURVE_COLUMNS`) to the CSV ``path`` (atomically)."""
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CURVE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in CURVE_COLUMNS} for r in rows)
    atomic_write_text(path, buf.getvalue())


def read_learning_curve(path: str | Path) -> list[dict[str, float]]:
    """The rows of a learning-curve CSV written by :class:`LearningCurve`.

    Raises
    ------
    ValueError
        If the file lacks a column of :data:`CURVE_COLUMNS` or holds a value that is not a
        number.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(CURVE_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"path: {path} lacks the learning-curve columns {sorted(missing)}")
        try:
            rows = [{k: float(r[k]) for k in CURVE_COLUMNS} for r in reader]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"path: {path} holds a value that is not a number ({exc})") from exc
    for r in rows:
        r["env_steps"] = int(r["env_steps"])
    return rows


def plot_learning_curves(
    curves: dict[str, list[dict[str, float]]], path: str | Path, *, title: str | None = None
) -> Path:
    """Draw learning curves (success rate and cost per step against env steps) to a PNG.

    Parameters
    ----------
    curves : dict
        Label -> rows (keys :data:`CURVE_COLUMNS`), e.g. one per training seed.
    path : path-like
        The PNG written.
    title : str, optional

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    fig, (ax_s, ax_c) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for label, rows in curves.items():
        steps = np.array([r["env_steps"] for r in rows], dtype=float)
        cost = np.array([r["cost"] for r in rows])
        ci = np.array([r["cost_ci95"] for r in rows])
        ax_s.plot(steps, [100 * r["success"] for r in rows], marker=".", label=label)
        (line,) = ax_c.plot(steps, cost, marker=".", label=label)
        ax_c.fill_between(steps, cost - ci, cost + ci, color=line.get_color(), alpha=0.2)
    ax_s.set(xlabel="env steps", ylabel="success [%]", ylim=(-3, 103))
    ax_c.set(xlabel="env steps", ylabel="cost per step (± 95 % CI)", yscale="log")
    for ax in (ax_s, ax_c):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 100k, not 100000
    ax_c.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
