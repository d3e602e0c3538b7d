"""The rl package's optional dependency and its place in the layers."""

from __future__ import annotations

import subprocess
import sys

import pytest

sb3 = pytest.importorskip("stable_baselines3")

from kalmannet_ctrl.errors import MissingDependencyError  # noqa: E402
from kalmannet_ctrl.rl import RLController, require_sb3, train_rl  # noqa: E402

from .policies import LINEAR, untrained  # noqa: E402


def test_missing_stable_baselines3_raises_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, _ = untrained(LINEAR, "measurement")
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    with pytest.raises(MissingDependencyError, match=r"pip install \"stable-baselines3>=2.3\""):
        require_sb3()
    with pytest.raises(MissingDependencyError, match="stable_baselines3 is needed"):
        RLController(model)
    with pytest.raises(MissingDependencyError):
        train_rl(LINEAR, "sac", 64)
    assert issubclass(MissingDependencyError, ImportError)


def test_importing_the_package_does_not_import_stable_baselines3() -> None:
    code = (
        "import sys, kalmannet_ctrl, kalmannet_ctrl.controllers, kalmannet_ctrl.training, "
        "kalmannet_ctrl.envs; assert 'stable_baselines3' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_lower_layers_do_not_import_rl() -> None:
    """envs (and a gym.make of every env), controllers and training load neither the rl
    package nor Stable-Baselines3; the RL names live in kalmannet_ctrl.rl only."""
    code = (
        "import sys, gymnasium as gym, kalmannet_ctrl.envs as envs\n"
        "import kalmannet_ctrl.controllers as c, kalmannet_ctrl.training as t\n"
        "[gym.make(i).reset(seed=0) for i in envs.ENV_IDS]\n"
        "rl = ('kalmannet_ctrl.rl', 'stable_baselines3')\n"
        "loaded = [m for m in sys.modules if m.startswith(rl)]\n"
        "assert not loaded, loaded\n"
        "names = ('RLController', 'train_rl', 'EstimateObservation', 'HYPERPARAMS')\n"
        "assert not [n for m in (envs, c, t) for n in names if hasattr(m, n)]\n"
        "import kalmannet_ctrl.rl\n"
        "assert 'stable_baselines3' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
