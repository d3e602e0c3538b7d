"""Videos of a comparison: the recorded episodes replayed with the env's frames, side by side."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from PIL import Image

from kalmannet_ctrl import cli
from kalmannet_ctrl.bench import Scenario, compare, get_method
from kalmannet_ctrl.bench.videos import MAX_FPS, video_frames, write_videos
from kalmannet_ctrl.errors import MissingDependencyError

LARGE = {"pole_length": 0.45, "pole_mass": 2.0, "cart_mass": 0.6, "friction": 1.0}
STEPS = 60


@pytest.fixture(scope="module")
def results():
    scenario = Scenario("kalmannet_ctrl/CartPole-v0", mismatch=LARGE, max_steps=STEPS, name="cp")
    methods = [get_method("lqg-nominal"), get_method("lqg-oracle")]
    return compare([scenario], methods, episodes=4, seed=0, progress=False, videos=4)


def test_compare_keeps_the_sample_episodes_asked_for(results) -> None:
    for cell in results:
        samples = cell.samples
        assert np.asarray(samples["state"]).shape[1] == 4
        y = np.asarray(samples["measurement"])
        x = np.asarray(samples["state"])
        assert y.shape == (x.shape[0], 4, 2)
        # the measurement reads (x, θ) of the state with noise of std 0.01
        assert np.abs(y - x[:, :, [0, 2]]).max() < 0.08
    with pytest.raises(ValueError, match="videos: expected at most the 2 episodes per cell"):
        compare(
            [Scenario("kalmannet_ctrl/CartPole-v0", max_steps=5)],
            [get_method("lqg-oracle")],
            episodes=2,
            progress=False,
            videos=3,
        )


def test_frames_tile_the_methods_and_replay_their_episodes(results) -> None:
    frames, fps = video_frames(results, "cp", episode=1, tile_width=200)
    stride = math.ceil(50 / MAX_FPS)  # CartPole renders at 50 fps
    assert fps == 50 / stride
    # every stride-th step and the last
    assert len(frames) == len(range(0, STEPS + 1, stride)) + 1
    assert all(f.shape == frames[0].shape and f.dtype == np.uint8 for f in frames)
    assert frames[0].shape[1] == 2 * 200
    # each tile is the env's own frame of that method's episode, scaled (frame 10: step 20,
    # where the two methods' episodes have parted)
    cell = next(c for c in results if c.method == "lqg-oracle")
    k = 10 * stride
    x = np.asarray(cell.samples["state"])[: k + 1, 1]
    y = np.asarray(cell.samples["measurement"])[: k + 1, 1]
    est = np.asarray(cell.samples["estimate"])[: k + 1, 1]
    env = Scenario("kalmannet_ctrl/CartPole-v0", mismatch=LARGE).make()
    own = Image.fromarray(env.render_frame(x, y, est, step=k))
    scaled = np.asarray(own.resize((200, round(own.height * 200 / own.width))), dtype=float)
    tile = frames[10][-scaled.shape[0] :, 200:400].astype(float)
    other = frames[10][-scaled.shape[0] :, :200].astype(float)
    assert np.abs(tile - scaled).mean() < 0.5 * np.abs(other - scaled).mean()
    # the tiles change over the episode
    assert not np.array_equal(frames[0], frames[-1])


def test_write_videos_writes_one_gif_per_scenario(results, tmp_path) -> None:
    paths = write_videos(results, tmp_path / "videos", episodes=2, tile_width=160)
    assert [p.name for p in paths] == ["cp.gif"]
    gif = Image.open(paths[0])
    assert gif.size[0] == 2 * 160
    assert gif.n_frames > 2 * (STEPS // 2)  # two episodes (identical frames may be merged)
    assert gif.info["loop"] == 0
    with pytest.raises(ValueError, match=r"episodes: the cells of 'cp' kept 4 sample episode"):
        write_videos(results, tmp_path, episodes=5)
    with pytest.raises(ValueError, match="scenario: unknown scenario 'nope'"):
        video_frames(results, "nope")


def test_missing_pygame_is_reported_with_the_pip_command(results, monkeypatch, tmp_path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pygame" else real(name, *a)
    )
    with pytest.raises(
        MissingDependencyError, match=re.escape('pip install "kalmannet-ctrl[render]"')
    ):
        write_videos(results, tmp_path)


def test_cli_compare_writes_the_side_by_side_gif(tmp_path, capsys) -> None:
    argv = [
        "compare",
        "--scenarios",
        "cartpole-large",
        "--methods",
        "lqg-nominal",
        "lqg-oracle",
        "--videos",
        "1",
        "--episodes",
        "2",
        "--workers",
        "1",
        "--no-plots",
        "--no-progress",
        "--output",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    gif = tmp_path / "videos" / "cartpole_large_mismatch.gif"
    assert gif.exists()
    assert "videos/cartpole_large_mismatch.gif" in capsys.readouterr().out
    image = Image.open(gif)
    assert image.size[0] == 2 * 320 and image.n_frames > 10


def test_cli_rejects_more_videos_than_episodes(capsys) -> None:
    argv = ["compare", "--scenarios", "linear", "--methods", "lqg-oracle", "--episodes", "2"]
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--videos", "3"])
    assert exc.value.code == 2
    assert "--videos: expected at most the 2 episodes per cell, found 3" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_compare_videos_with_a_trained_method(tmp_path) -> None:
    argv = ["compare", "--scenarios", "cartpole-large", "--methods", "lqg-nominal", "neural-mpc"]
    argv += ["--videos", "1", "--episodes", "2", "--workers", "1", "--no-plots", "--no-progress"]
    assert cli.main([*argv, "--output", str(tmp_path)]) == 0
    image = Image.open(tmp_path / "videos" / "cartpole_large_mismatch.gif")
    assert image.size[0] == 2 * 320
