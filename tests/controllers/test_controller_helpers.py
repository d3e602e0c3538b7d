"""The observation/action/episode_start helpers shared by controllers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kalmannet_ctrl.controllers import Controller
from kalmannet_ctrl.controllers.base import as_action, as_observation_batch, episode_start_mask
from kalmannet_ctrl.errors import BatchSizeError, NonFiniteError


@pytest.mark.parametrize("B", [1, 10])
def test_observation_round_trip(B: int) -> None:
    y = np.arange(3.0 * B, dtype=np.float32).reshape(B, 3)
    obs = as_observation_batch(y, 3)
    assert obs.value.shape == (B, 3) and obs.value.dtype == torch.float64
    assert not obs.single and obs.np_dtype == np.float32
    out = as_action(obs.value[:, :2], obs.single, obs.np_dtype)
    assert out.shape == (B, 2) and out.dtype == np.float32
    one = as_observation_batch(y[0], 3, dtype=torch.float32)
    assert one.single and one.value.shape == (1, 3) and one.value.dtype == torch.float32
    assert as_action(one.value, one.single, one.np_dtype).shape == (3,)
    assert as_observation_batch(torch.ones(B, 3), 3).np_dtype == np.float64
    assert as_observation_batch(np.ones((B, 3), dtype=np.int64), 3).np_dtype == np.float64


def test_observation_nan_and_inf() -> None:
    y = np.array([[np.nan, 1.0], [0.0, 1.0]])
    assert torch.isnan(as_observation_batch(y, 2, allow_nan_rows=True).value[0, 0])
    with pytest.raises(NonFiniteError, match="y: expected finite values, found 1 NaN"):
        as_observation_batch(y, 2, "y")
    with pytest.raises(NonFiniteError, match=r"y: expected finite values, found 1 infinite"):
        as_observation_batch(np.array([np.inf, 0.0]), 2, "y")


@pytest.mark.parametrize("B", [1, 10])
def test_episode_start_mask(B: int) -> None:
    assert episode_start_mask(None, B) is None
    assert episode_start_mask(np.zeros(B, dtype=bool), B) is None
    assert episode_start_mask(False, B) is None
    assert episode_start_mask(True, B).tolist() == [True] * B
    flags = np.arange(B) % 2 == 0
    assert episode_start_mask(torch.as_tensor(flags), B).tolist() == flags.tolist()
    assert episode_start_mask(flags.astype(np.float32), B).tolist() == flags.tolist()
    with pytest.raises(
        BatchSizeError, match=f"episode_start: expected batch size {B}, found {B + 1}"
    ):
        episode_start_mask(np.ones(B + 1, dtype=bool), B)


def test_protocol_is_structural() -> None:
    class Constant:
        def predict(self, observation, state=None, episode_start=None, deterministic=True):
            return np.zeros(1), state

    assert isinstance(Constant(), Controller)
    assert not isinstance(object(), Controller)
