"""Videos of a comparison: the recorded episodes of every method, side by side.

Every cell keeps the true states, measurements and estimates of its first sample episodes
(``CellResult.samples``); :func:`write_videos` draws them with the environment's own frames
(:meth:`~kalmannet_ctrl.envs.PartiallyKnownEnv.render_frame`: the true state, the measurement
and the method's estimate) and writes one animated GIF per scenario, one labelled tile per
method, the episodes one after the other. Frames are drawn with pygame (``pip install
"kalmannet-ctrl[render]"``) and the GIF is written with Pillow (a dependency of matplotlib).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_positive_int
from ..errors import DimensionError, MissingDependencyError
from .results import CellResult, Results
from .scenario import Scenario

__all__ = ["require_rendering", "video_frames", "write_videos"]

PIP_HINT = 'pip install "kalmannet-ctrl[render]"'
#: Highest frame rate written: browsers slow GIF frames shorter than 20 ms down to 100 ms.
MAX_FPS = 25.0
LABEL_HEIGHT = 22


def require_rendering() -> None:
    """Raise :class:`MissingDependencyError` (with the pip command) unless pygame and Pillow
    are installed."""
    for module, what in (("pygame", "pygame draws the frames"), ("PIL", "Pillow writes GIFs")):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(
                f"videos: {what}, and {module} is not installed; install it with: {PIP_HINT}"
            )


def _recorded(cell: CellResult, key: str) -> np.ndarray | None:
    values = (cell.samples or {}).get(key)
    if values is None or len(values) == 0:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 3:
        raise DimensionError(
            f"results: samples[{key!r}] of cell ({cell.scenario!r}, {cell.method!r}) must have "
            f"shape (T, episodes, n), found shape {arr.shape}"
        )
    return arr


def _episode(cell: CellResult, episode: int) -> dict[str, Any] | None:
    """The recorded (states, measurements, estimates, length) of one sample episode, cut at its
    end; None when the cell kept fewer episodes."""
    states = _recorded(cell, "state")
    if states is None or states.shape[1] <= episode:
        return None
    lengths = (cell.samples or {}).get("length")
    length = int(lengths[episode]) if lengths is not None else states.shape[0] - 1
    x = states[: length + 1, episode]
    y = _recorded(cell, "measurement")
    est = _recorded(cell, "estimate")
    n_x = x.shape[1]
    estimates = None
    if est is not None and est.shape[1] > episode:
        # estimate[t] is x̂_{t|t}, one per step run; the final state has none
        estimates = np.full((length + 1, n_x), np.nan)
        estimates[:length] = est[:length, episode]
    measurements = None
    if y is not None and y.shape[1] > episode:
        measurements = y[: length + 1, episode]
    ended = length < states.shape[0] - 1
    return {"states": x, "measurements": measurements, "estimates": estimates, "ended": ended}


def video_frames(
    results: Results, scenario: str, *, episode: int = 0, tile_width: int = 320
) -> tuple[list[np.ndarray], float]:
    """The frames of one recorded episode of every method of ``scenario``, tiled side by side.

    A tile shows the method's frame, scaled to ``tile_width`` pixels, under a label with its
    name and the step; a method whose episode ended early keeps its last frame, labelled with
    the step it ended at.

    Parameters
    ----------
    results : Results
        A comparison's results whose cells hold sample episodes (``CellResult.samples``).
    scenario : str
        A scenario label of ``results``.
    episode : int
        Which sample episode (0 <= episode < the number kept).
    tile_width : int
        Width of each method's tile in pixels.

    Returns
    -------
    frames : list of ndarray of uint8, each (H, W, 3)
        One frame per time step shown (every few steps: at most :data:`MAX_FPS` frames per
        simulated second).
    fps : float
        Frames per second for real time.

    Shapes
    ------
    -> frames: (H, n_methods · tile_width, 3) each

    Raises
    ------
    ValueError
        When ``scenario`` is unknown, or no cell of it kept ``episode``.
    MissingDependencyError
        Without pygame or Pillow.
    """
    require_rendering()
    from PIL import Image, ImageDraw

    tile_width = check_positive_int(tile_width, "tile_width", minimum=32)
    if isinstance(episode, bool) or not isinstance(episode, (int, np.integer)):
        raise TypeError(f"episode: expected an int, found {type(episode).__name__}")
    if scenario not in results.scenarios():
        raise ValueError(
            f"scenario: unknown scenario {scenario!r}; expected one of {results.scenarios()}"
        )
    cells = [c for c in results if c.scenario == scenario]
    recorded = [(c, _episode(c, episode)) for c in cells]
    recorded = [(c, r) for c, r in recorded if r is not None]
    if not recorded:
        raise ValueError(
            f"episode: no cell of {scenario!r} kept sample episode {episode}; run the "
            "comparison with videos=episode + 1 or more"
        )
    env = Scenario(**recorded[0][0].scenario_spec).make()
    fps_env = float(env.metadata.get("render_fps", 30))
    stride = max(1, math.ceil(fps_env / MAX_FPS))
    steps = max(len(r["states"]) for _, r in recorded)
    tiles: list[list[Image.Image]] = []
    for cell, rec in recorded:
        n = len(rec["states"])
        column = []
        for t in [*range(0, steps, stride), steps - 1]:
            k = min(t, n - 1)
            est = None if rec["estimates"] is None else rec["estimates"][: k + 1]
            meas = None if rec["measurements"] is None else rec["measurements"][: k + 1]
            frame = env.render_frame(rec["states"][: k + 1], meas, est, step=k)
            image = Image.fromarray(frame)
            height = round(image.height * tile_width / image.width)
            image = image.resize((tile_width, height), Image.Resampling.LANCZOS)
            label = Image.new("RGB", (tile_width, LABEL_HEIGHT), (245, 245, 245))
            draw = ImageDraw.Draw(label)
            status = f"ended at step {n - 1}" if rec["ended"] and t >= n - 1 else f"step {k}"
            draw.text((6, 5), f"{cell.method}: {status}", fill=(20, 20, 20))
            tile = Image.new("RGB", (tile_width, LABEL_HEIGHT + height), (255, 255, 255))
            tile.paste(label, (0, 0))
            tile.paste(image, (0, LABEL_HEIGHT))
            column.append(tile)
        tiles.append(column)
    height = max(col[0].height for col in tiles)
    frames = []
    for i in range(len(tiles[0])):
        canvas = Image.new("RGB", (tile_width * len(tiles), height), (255, 255, 255))
        for j, col in enumerate(tiles):
            canvas.paste(col[i], (j * tile_width, 0))
        frames.append(np.asarray(canvas))
    env.close()
    return frames, fps_env / stride


def _file_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_").lower() or "scenario"


def write_videos(
    results: Results,
    folder: str | os.PathLike[str],
    *,
    episodes: int = 1,
    tile_width: int = 320,
) -> list[Path]:
    """Write one animated GIF per scenario: every method's recorded episodes side by side.

    The GIF of a scenario plays its first ``episodes`` sample episodes one after the other, in
    real time (frames from :func:`video_frames`), and loops. Scenarios whose cells kept no
    sample episode are skipped.

    Parameters
    ----------
    results : Results
        A comparison's results; ``compare(..., videos=episodes)`` keeps enough sample episodes.
    folder : path
        Output folder, created if needed; files are named after the scenario labels
        (``cartpole_large_mismatch.gif``).
    episodes : int
        Episodes per scenario (each cell must have kept that many).
    tile_width : int
        Width of each method's tile in pixels.

    Returns
    -------
    list of Path
        The files written, one per scenario.

    Raises
    ------
    ValueError
        When a scenario's cells kept fewer than ``episodes`` sample episodes.
    MissingDependencyError
        Without pygame or Pillow (the message holds the pip command).
    """
    require_rendering()
    from PIL import Image

    episodes = check_positive_int(episodes, "episodes")
    if not isinstance(results, Results):
        raise TypeError(f"results: expected a Results object, found {type(results).__name__}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for scenario in results.scenarios():
        cells = [c for c in results if c.scenario == scenario and _episode(c, 0) is not None]
        if not cells:
            continue
        kept = min(np.asarray(c.samples["state"]).shape[1] for c in cells)
        if kept < episodes:
            raise ValueError(
                f"episodes: the cells of {scenario!r} kept {kept} sample episode(s), fewer than "
                f"{episodes}; run the comparison with videos={episodes}"
            )
        frames: list[np.ndarray] = []
        fps = 25.0
        for e in range(episodes):
            shown, fps = video_frames(results, scenario, episode=e, tile_width=tile_width)
            frames += shown + [shown[-1]] * round(fps)  # hold the end for a second
        images = [Image.fromarray(f) for f in frames]
        path = out / f"{_file_name(scenario)}.gif"
        tmp = path.with_suffix(".gif.tmp")
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=round(1000 / fps),
            loop=0,
        )
        os.replace(tmp, path)
        written.append(path)
    return written
