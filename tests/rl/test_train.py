"""train_rl and load_rl: seeded training, the env's angles, the table's estimator factor,
normalization, checkpoints, resume, best-evaluation selection and errors."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

sb3 = pytest.importorskip("stable_baselines3")

from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402

from kalmannet_ctrl.errors import ParameterError  # noqa: E402
from kalmannet_ctrl.rl import HYPERPARAMS, RLController, load_rl, train_rl  # noqa: E402

from .policies import CARTPOLE, LINEAR, PENDULUM, policy_actions  # noqa: E402

# -- train_rl --------------------------------------------------------------------------------------
TINY = {
    "ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "sac": {"learning_starts": 64, "buffer_size": 1000, "policy_kwargs": {"net_arch": [32, 32]}},
}


def _weights(ctrl: RLController) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in ctrl.model.policy.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_rl_applies_the_tables_estimator_process_cov_scale() -> None:
    ctrl, info = train_rl(
        PENDULUM,
        "sac",
        70,
        observation="estimate",
        hyperparams={**TINY["sac"], "estimator_process_cov_scale": 30.0},
        progress=False,
    )
    nominal = gym.make(PENDULUM).unwrapped.nominal_model
    assert ctrl.default_estimator and ctrl.process_cov_scale == 30.0
    torch.testing.assert_close(ctrl.estimator.model.process_cov, 30.0 * nominal.process_cov)
    assert info["hyperparams"]["estimator_process_cov_scale"] == 30.0


@pytest.mark.parametrize(("algo", "mode"), [("ppo", "measurement"), ("sac", "estimate")])
def test_train_rl_tiny_budget_is_seeded_and_reproducible(algo: str, mode: str) -> None:
    kwargs = dict(
        observation=mode, hyperparams=TINY[algo], n_envs=2 if algo == "ppo" else 1, progress=False
    )
    ctrl, info = train_rl(LINEAR, algo, 256, seed=3, **kwargs)
    again, _ = train_rl(LINEAR, algo, 256, seed=3, **kwargs)
    other, _ = train_rl(LINEAR, algo, 256, seed=4, **kwargs)
    assert _same(_weights(ctrl), _weights(again))
    assert not _same(_weights(ctrl), _weights(other))
    assert isinstance(ctrl, RLController) and ctrl.observation == mode
    assert type(ctrl.model).__name__ == algo.upper()
    assert info["env_steps"] == 256 and info["train_s"] > 0 and info["resumed_from"] is None
    assert info["hyperparams"]["n_envs"] == kwargs["n_envs"]
    assert (
        info["hyperparams"]["learning_rate"] == HYPERPARAMS[("LinearSystem", algo)]["learning_rate"]
    )
    if mode == "measurement":
        assert ctrl.policy_input.history == 4  # train_rl's default
    env = Monitor(gym.make(LINEAR))
    mean, _ = evaluate_policy(ctrl, env, n_eval_episodes=1)
    assert np.isfinite(mean)


@pytest.mark.parametrize(
    ("mode", "angles", "size"),
    [("measurement", None, 4 * 2), ("measurement", (), 4), ("estimate", None, 3)],
)
def test_train_rl_takes_the_angles_the_env_declares(
    mode: str, angles: tuple[int, ...] | None, size: int
) -> None:
    ctrl, _ = train_rl(
        PENDULUM,
        "sac",
        70,
        observation=mode,
        angles=angles,
        hyperparams=TINY["sac"],
        progress=False,
    )
    assert ctrl.policy_input.angles == ((0,) if angles is None else ())
    assert ctrl.model.observation_space.shape == (size,) == (ctrl.policy_input.size,)


def test_train_rl_normalization_checkpoints_resume_and_load_rl(tmp_path: Path) -> None:
    hp = {**TINY["ppo"], "normalize": True}
    ctrl, _ = train_rl(
        CARTPOLE,
        "ppo",
        128,
        observation="estimate",
        hyperparams=hp,
        n_envs=1,
        progress=False,
        log_dir=tmp_path,
        checkpoint_every=64,
    )
    assert ctrl.obs_normalization is not None
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.zip")) == [
        "rl_model_128_steps.zip",
        "rl_model_64_steps.zip",
    ]
    assert (tmp_path / "checkpoints" / "rl_model_vecnormalize_128_steps.pkl").is_file()
    loaded = load_rl(tmp_path / "final")  # env id and nominal model from the sidecar
    assert loaded.metadata["env_id"] == CARTPOLE
    y = np.random.default_rng(0).normal(0, 0.05, (2, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(policy_actions(loaded, y), policy_actions(ctrl, y))

    resumed, info2 = train_rl(
        CARTPOLE,
        "ppo",
        256,
        observation="estimate",
        hyperparams=hp,
        n_envs=1,
        progress=False,
        log_dir=tmp_path,
        checkpoint_every=64,
        resume=True,
    )
    assert info2["resumed_from"].endswith("rl_model_128_steps.zip")
    assert info2["env_steps"] == 256
    assert (tmp_path / "checkpoints" / "rl_model_256_steps.zip").is_file()
    assert resumed.obs_normalization is not None


def test_train_rl_closes_its_log_and_the_policy_trains_on(tmp_path: Path) -> None:
    """SB3's CSV log in log_dir is complete and closed on return; the returned policy's
    algorithm can still learn (with the logger SB3 gives a fresh model)."""
    ctrl, info = train_rl(
        LINEAR,
        "ppo",
        128,
        hyperparams=TINY["ppo"],
        n_envs=1,
        progress=False,
        log_dir=tmp_path,
    )
    log = (tmp_path / "progress.csv").read_text()
    assert log.splitlines()[0] and len(log.splitlines()) >= 2
    ctrl.model.learn(64, reset_num_timesteps=False)
    assert ctrl.model.num_timesteps == info["env_steps"] + 64
    assert (tmp_path / "progress.csv").read_text() == log  # further learning logs elsewhere


def test_train_rl_keeps_the_policy_of_the_best_evaluation() -> None:
    """With eval_every, the returned policy (and its observation normalization) is the one of
    the best evaluation, not the last: compared with snapshots taken at each evaluation."""
    from stable_baselines3.common.callbacks import BaseCallback

    snapshots: dict[int, tuple[dict[str, torch.Tensor], np.ndarray]] = {}

    class Record(BaseCallback):  # runs before the evaluation of the same step
        def _on_step(self) -> bool:
            if self.num_timesteps % 128 == 0:
                state = {k: v.clone() for k, v in self.model.policy.state_dict().items()}
                snapshots[self.num_timesteps] = (state, self.training_env.obs_rms.mean.copy())
            return True

    hp = {**TINY["ppo"], "normalize": True}
    ctrl, info = train_rl(
        CARTPOLE,
        "ppo",
        640,
        observation="estimate",
        hyperparams=hp,
        n_envs=1,
        progress=False,
        callback=Record(),
        eval_every=128,
        eval_episodes=2,
        seed=1,  # its best evaluation is an early one (128 steps)
    )
    best = info["best_eval"]
    assert best is not None and best["env_steps"] in snapshots
    assert best["env_steps"] < 640
    assert ctrl.metadata["best_eval"] == best  # saved with the policy
    assert np.isfinite(best["mean_return"])
    weights, obs_mean = snapshots[best["env_steps"]]
    for key, value in ctrl.model.policy.state_dict().items():
        assert torch.equal(value, weights[key]), key
    np.testing.assert_array_equal(ctrl.obs_normalization["mean"], obs_mean)
    last = snapshots[640][0]  # the last policy differs from the one returned
    assert any(not torch.equal(v, last[k]) for k, v in ctrl.model.policy.state_dict().items())
    with pytest.raises(ParameterError, match="eval_every"):
        train_rl(CARTPOLE, "ppo", 64, eval_every=0)


# -- errors ----------------------------------------------------------------------------------------
def test_train_rl_bad_inputs() -> None:
    with pytest.raises(
        ParameterError,
        match=r"algo: expected one of \['ppo', 'sac', 'recurrentppo'\], found 'dqn'",
    ):
        train_rl(LINEAR, "dqn", 64)
    with pytest.raises(ParameterError, match="observation: expected one of"):
        train_rl(LINEAR, "sac", 64, observation="pixels")
    with pytest.raises(ParameterError, match="history: expected an integer >= 1, found 0"):
        train_rl(LINEAR, "sac", 64, history=0)
    with pytest.raises(ParameterError, match="total_timesteps: expected an integer >= 1"):
        train_rl(LINEAR, "sac", 0)
    with pytest.raises(ParameterError, match="log_dir: checkpoint_every and resume need"):
        train_rl(LINEAR, "sac", 64, checkpoint_every=32)
    with pytest.raises(TypeError, match="hyperparams: expected a mapping"):
        train_rl(LINEAR, "sac", 64, hyperparams=[("gamma", 0.9)])  # type: ignore[arg-type]


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_train_rl_without_log_dir_writes_no_folder(
    algo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a log_dir nothing is written: SB3's own default logger would create an empty
    SB3-<date> folder in the temporary directory at every learn call."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ctrl, _ = train_rl(LINEAR, algo, 128, hyperparams=TINY[algo], n_envs=1, progress=False)
    ctrl.model.learn(64)  # a further learn call on the returned model works and writes nothing
    assert sorted(p.name for p in tmp_path.glob("SB3-*")) == []


def test_train_rl_reads_zoo_schedules_and_saves_them(tmp_path: Path) -> None:
    """The text "lin_1e-3" trains with SB3's linear schedule (rl-zoo's convention), an
    activation name builds that activation, the record keeps the table's text and the saved
    policy loads (for inference: its schedules are not restored) and acts the same."""
    hp = {
        **TINY["ppo"],
        "learning_rate": "lin_1e-3",
        "clip_range": "lin_0.2",
        "policy_kwargs": {"activation_fn": "ReLU", "net_arch": [16]},
    }
    ctrl, info = train_rl(
        LINEAR, "ppo", 128, hyperparams=hp, n_envs=1, progress=False, log_dir=tmp_path
    )
    model = ctrl.model
    assert model.lr_schedule(1.0) == pytest.approx(1e-3)
    assert model.lr_schedule(0.25) == pytest.approx(2.5e-4)
    assert model.clip_range(0.5) == pytest.approx(0.1)
    # the last update (after 128 of 128 steps) ran at the schedule's end, not at 1e-3
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert any(isinstance(m, torch.nn.ReLU) for m in model.policy.modules())
    assert not any(isinstance(m, torch.nn.Tanh) for m in model.policy.modules())
    assert info["hyperparams"]["learning_rate"] == "lin_1e-3"
    loaded = load_rl(tmp_path / "final.zip")
    assert any(isinstance(m, torch.nn.ReLU) for m in loaded.model.policy.modules())
    y = np.random.default_rng(0).normal(size=(6, 50, 1))
    np.testing.assert_array_equal(policy_actions(ctrl, y), policy_actions(loaded, y))
