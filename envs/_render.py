"""Drawing the environments' frames (internal module).

Frames are drawn with pygame on an off-screen surface and returned as RGB arrays; pygame is
imported only here, on the first frame, from the optional extra ``render``. Each renderer draws
the last row of a trajectory prefix (:class:`Trace`): the true state, and, where given, the
measurement and the controller's estimate beside it, so that the same code serves
``env.render()`` and frames replayed from recorded episodes.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kalmannet_ctrl.errors import ComplexValueError, DimensionError, MissingDependencyError

if TYPE_CHECKING:
    from .core import PartiallyKnownEnv

__all__ = ["CartPoleRenderer", "PendulumRenderer", "Trace", "TracePlotRenderer", "Window"]

BACKGROUND = (255, 255, 255)
TRUE = (30, 30, 30)
ESTIMATE = (31, 119, 180)
MEASURED = (255, 127, 14)
GRID = (220, 220, 220)
LIMIT = (214, 39, 40)
TEXT = (60, 60, 60)

_PIP = 'pip install "kalmannet-ctrl[render]"'


def pygame_module() -> Any:
    """pygame, initialised for fonts; a MissingDependencyError with the pip command if absent."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError as exc:
        raise MissingDependencyError(
            f"render_mode: drawing frames needs pygame; install it with {_PIP}"
        ) from exc
    if not pygame.font.get_init():
        pygame.font.init()
    return pygame


@dataclass(frozen=True)
class Trace:
    """A trajectory prefix to draw; its last row is the current step.

    Attributes
    ----------
    states : ndarray, (T, n_x)
        True states x_0 … x_t (or the last few of them).
    measurements : ndarray, (T, n_y), or None
    estimates : ndarray, (T, n_x), or None
        The controller's estimates; NaN rows where there is none.
    step : int
        The time step t of the last row.
    """

    states: np.ndarray
    measurements: np.ndarray | None
    estimates: np.ndarray | None
    step: int


def make_trace(
    states: Any, measurements: Any, estimates: Any, step: int | None, n_x: int, n_y: int
) -> Trace:
    """A checked :class:`Trace` from array-likes (one row, or T rows)."""

    def rows(value: Any, name: str, n: int) -> np.ndarray:
        arr = np.asarray(value)
        if np.iscomplexobj(arr):
            raise ComplexValueError(f"{name}: expected real numbers, found dtype {arr.dtype}")
        arr = np.atleast_2d(arr.astype(np.float64))
        if arr.ndim != 2 or arr.shape[1] != n:
            raise DimensionError(f"{name}: expected shape (T, {n}) or ({n},), found {arr.shape}")
        return arr

    x = rows(states, "states", n_x)
    if len(x) == 0:
        raise DimensionError("states: expected at least one row, found none")
    if not np.all(np.isfinite(x)):
        raise ValueError("states: expected finite values")
    y = None if measurements is None else rows(measurements, "measurements", n_y)
    est = None if estimates is None else rows(estimates, "estimates", n_x)
    for name, arr in (("measurements", y), ("estimates", est)):
        if arr is not None and len(arr) != len(x):
            raise DimensionError(
                f"{name}: expected {len(x)} rows (one per state), found {len(arr)}"
            )
    return Trace(x, y, est, len(x) - 1 if step is None else int(step))


class History:
    """The env's own recent states, measurements and estimates (at most ``length`` steps)."""

    def __init__(self, length: int) -> None:
        self.states: deque[np.ndarray] = deque(maxlen=length)
        self.measurements: deque[np.ndarray] = deque(maxlen=length)
        self.estimates: deque[np.ndarray] = deque(maxlen=length)
        self.step = -1

    def clear(self) -> None:
        self.states.clear()
        self.measurements.clear()
        self.estimates.clear()
        self.step = -1

    def append(self, x: np.ndarray, y: np.ndarray) -> None:
        self.states.append(np.array(x, dtype=np.float64))
        self.measurements.append(np.array(y, dtype=np.float64))
        self.estimates.append(np.full(x.shape, np.nan))
        self.step += 1

    def trace(self) -> Trace | None:
        if not self.states:
            return None
        return Trace(
            np.stack(self.states), np.stack(self.measurements), np.stack(self.estimates), self.step
        )


def _text(pygame: Any, surface: Any, text: str, pos: tuple[int, int], colour=TEXT, size=18):
    font = pygame.font.Font(None, size)
    surface.blit(font.render(text, True, colour), pos)


def _to_array(pygame: Any, surface: Any) -> np.ndarray:
    """(H, W, 3) uint8 copy of a surface."""
    return np.ascontiguousarray(np.transpose(pygame.surfarray.array3d(surface), (1, 0, 2)))


def _legend(pygame: Any, surface: Any, trace: Trace, x0: int = 8) -> None:
    entries = [("true", TRUE)]
    if trace.measurements is not None:
        entries.append(("measured", MEASURED))
    if trace.estimates is not None and np.isfinite(trace.estimates[-1]).all():
        entries.append(("estimate", ESTIMATE))
    x = x0
    for label, colour in entries:
        pygame.draw.line(surface, colour, (x, 14), (x + 16, 14), 3)
        _text(pygame, surface, label, (x + 20, 8), size=18)
        x += 30 + 8 * len(label)


class CartPoleRenderer:
    """The cart on its track with the pole; the estimate as an outline, the measured position
    and angle as a thin line."""

    size = (600, 400)

    def draw(self, env: PartiallyKnownEnv, trace: Trace) -> np.ndarray:
        pygame = pygame_module()
        width, height = self.size
        surface = pygame.Surface(self.size)
        surface.fill(BACKGROUND)
        limit = float(getattr(env, "position_limit", 2.4))
        scale = width / (2 * limit * 1.1)  # px per m
        track_y = int(height * 0.72)
        pole_px = 2 * float(env.true_model.params["pole_length"]) * scale
        cart_w, cart_h = 50, 28

        def cart_x(pos: float) -> float:
            return width / 2 + pos * scale

        pygame.draw.line(surface, GRID, (0, track_y), (width, track_y), 2)
        for side in (-1, 1):
            px = int(cart_x(side * limit))
            pygame.draw.line(surface, LIMIT, (px, track_y - 12), (px, track_y + 12), 3)

        def cart(pos: float, theta: float, colour: tuple[int, int, int], width_px: int) -> None:
            cx = cart_x(pos)
            rect = pygame.Rect(int(cx - cart_w / 2), int(track_y - cart_h), cart_w, cart_h)
            pivot = (cx, track_y - cart_h)
            tip = (pivot[0] + pole_px * math.sin(theta), pivot[1] - pole_px * math.cos(theta))
            if width_px == 0:  # the true cart: filled, the pole thick
                pygame.draw.rect(surface, colour, rect)
                pygame.draw.line(surface, (202, 152, 101), pivot, tip, 9)
                pygame.draw.circle(surface, (129, 132, 203), (int(pivot[0]), int(pivot[1])), 5)
            else:
                pygame.draw.rect(surface, colour, rect, width_px)
                pygame.draw.line(surface, colour, pivot, tip, width_px)

        x = trace.states[-1]
        cart(x[0], x[2], TRUE, 0)
        if trace.estimates is not None and np.isfinite(trace.estimates[-1]).all():
            est = trace.estimates[-1]
            cart(est[0], est[2], ESTIMATE, 2)
        if trace.measurements is not None and np.isfinite(trace.measurements[-1]).all():
            y = trace.measurements[-1]  # (x, θ)
            px = cart_x(y[0])
            pivot = (px, track_y - cart_h)
            tip = (pivot[0] + pole_px * math.sin(y[1]), pivot[1] - pole_px * math.cos(y[1]))
            pygame.draw.line(surface, MEASURED, pivot, tip, 1)
            pygame.draw.polygon(
                surface,
                MEASURED,
                [(px, track_y + 4), (px - 6, track_y + 14), (px + 6, track_y + 14)],
            )
        _legend(pygame, surface, trace)
        _text(pygame, surface, f"t = {trace.step}", (width - 80, 8))
        return _to_array(pygame, surface)


class PendulumRenderer:
    """The pendulum about its pivot (θ = 0 up); the estimate and the measured angle as thin
    rods."""

    size = (500, 500)

    def draw(self, env: PartiallyKnownEnv, trace: Trace) -> np.ndarray:
        pygame = pygame_module()
        width, height = self.size
        surface = pygame.Surface(self.size)
        surface.fill(BACKGROUND)
        centre = (width / 2, height / 2)
        params = env.true_model.params
        rod = 0.38 * min(width, height)
        pygame.draw.circle(surface, GRID, (int(centre[0]), int(centre[1])), int(rod), 1)

        def end(theta: float) -> tuple[float, float]:
            return centre[0] + rod * math.sin(theta), centre[1] - rod * math.cos(theta)

        theta = trace.states[-1][0]
        pygame.draw.line(surface, (204, 77, 77), centre, end(theta), 10)
        bob = int(8 + 6 * float(params["mass"]) ** (1 / 3))
        tip = end(theta)
        pygame.draw.circle(surface, (204, 77, 77), (int(tip[0]), int(tip[1])), bob)
        pygame.draw.circle(surface, TRUE, (int(centre[0]), int(centre[1])), 5)
        if trace.estimates is not None and np.isfinite(trace.estimates[-1]).all():
            pygame.draw.line(surface, ESTIMATE, centre, end(trace.estimates[-1][0]), 3)
        if trace.measurements is not None and np.isfinite(trace.measurements[-1]).all():
            pygame.draw.line(surface, MEASURED, centre, end(trace.measurements[-1][0]), 1)
        _legend(pygame, surface, trace)
        _text(pygame, surface, f"t = {trace.step}", (width - 80, 8))
        return _to_array(pygame, surface)


def measured_components(env: PartiallyKnownEnv) -> list[int | None]:
    """For each measurement component, the state component it reads directly (dh/dx of the
    nominal model at x0_mean is a unit row there, to 5 %), else None."""
    import torch

    model = env.nominal_model
    with torch.enable_grad():
        jac = model.h_jacobian(model.x0_mean[None])[0].detach().cpu().numpy()
    out: list[int | None] = []
    for row in jac:
        j = int(np.argmax(np.abs(row)))
        others = np.delete(np.abs(row), j)
        direct = abs(row[j] - 1.0) < 0.05 and (others.size == 0 or others.max() < 0.05)
        out.append(j if direct else None)
    return out


class TracePlotRenderer:
    """A live plot: one panel per state component (true state, estimate) with the measurements
    of the components they read, plus one panel per other measurement component, over the last
    :attr:`window` steps."""

    width = 640
    panel_height = 120
    window = 200

    def __init__(self) -> None:
        self._measured: list[int | None] | None = None

    def draw(self, env: PartiallyKnownEnv, trace: Trace) -> np.ndarray:
        pygame = pygame_module()
        if self._measured is None:
            self._measured = measured_components(env)
        measured = self._measured
        n_x = trace.states.shape[1]
        extra = [i for i, j in enumerate(measured) if j is None]
        panels = n_x + len(extra)
        header, footer, left = 28, 22, 64
        height = header + panels * self.panel_height + footer
        surface = pygame.Surface((self.width, height))
        surface.fill(BACKGROUND)
        window = self.window
        x = trace.states[-window:]
        y = None if trace.measurements is None else trace.measurements[-window:]
        est = None if trace.estimates is None else trace.estimates[-window:]
        first = trace.step - len(x) + 1
        plot_w = self.width - left - 12

        for p in range(panels):
            top = header + p * self.panel_height + 6
            bottom = top + self.panel_height - 12
            series: list[tuple[np.ndarray, tuple[int, int, int], str]] = []
            if p < n_x:
                series.append((x[:, p], TRUE, "line"))
                if est is not None:
                    series.append((est[:, p], ESTIMATE, "line"))
                if y is not None:
                    for i, j in enumerate(measured):
                        if j == p:
                            series.append((y[:, i], MEASURED, "dots"))
                label = f"x[{p}]"
            else:
                i = extra[p - n_x]
                if y is not None:
                    series.append((y[:, i], MEASURED, "dots"))
                label = f"y[{i}]"
            values = np.concatenate([s[0][np.isfinite(s[0])] for s in series] or [np.zeros(1)])
            lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
            if hi - lo < 1e-9:
                lo, hi = lo - 1.0, hi + 1.0
            pad = 0.08 * (hi - lo)
            lo, hi = lo - pad, hi + pad

            def py(v: np.ndarray, lo: float = lo, hi: float = hi, top=top, bottom=bottom):
                return bottom - (v - lo) / (hi - lo) * (bottom - top)

            pygame.draw.rect(surface, GRID, (left, top, plot_w, bottom - top), 1)
            if lo < 0 < hi:
                zero = float(py(np.array(0.0)))
                pygame.draw.line(surface, GRID, (left, zero), (left + plot_w, zero), 1)
            _text(pygame, surface, label, (6, (top + bottom) // 2 - 6), size=20)
            _text(pygame, surface, f"{hi:.3g}", (6, top), size=15)
            _text(pygame, surface, f"{lo:.3g}", (6, bottom - 10), size=15)
            cols = left + np.arange(len(x)) * (plot_w / max(window - 1, 1))
            for values_, colour, style in series:
                rows = py(values_)
                ok = np.isfinite(rows)
                pts = np.stack([cols, np.clip(rows, top, bottom)], 1)
                if style == "dots":
                    for c, r in pts[ok]:
                        pygame.draw.circle(surface, colour, (int(c), int(r)), 2)
                elif ok.sum() >= 2:
                    # one polyline per run of finite values
                    breaks = np.flatnonzero(np.diff(ok.astype(int)) != 0) + 1
                    for run in np.split(np.arange(len(ok)), breaks):
                        if ok[run[0]] and len(run) >= 2:
                            pygame.draw.lines(surface, colour, False, pts[run].tolist(), 2)
        _legend(pygame, surface, trace)
        _text(pygame, surface, f"t = {trace.step}", (self.width - 80, 8))
        _text(
            pygame,
            surface,
            f"steps {max(first, 0)} to {trace.step}",
            (left, height - footer + 4),
            size=16,
        )
        return _to_array(pygame, surface)


class Window:
    """The pygame window of ``render_mode="human"``, showing frames at ``fps``."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.screen: Any = None
        self.clock: Any = None

    def show(self, frame: np.ndarray, fps: float) -> None:
        pygame = pygame_module()
        if self.screen is None:
            pygame.display.init()
            pygame.display.set_caption(self.title)
            self.screen = pygame.display.set_mode((frame.shape[1], frame.shape[0]))
            self.clock = pygame.time.Clock()
        elif self.screen.get_size() != (frame.shape[1], frame.shape[0]):
            self.screen = pygame.display.set_mode((frame.shape[1], frame.shape[0]))
        pygame.surfarray.blit_array(self.screen, np.transpose(frame, (1, 0, 2)))
        pygame.event.pump()
        pygame.display.flip()
        self.clock.tick(fps)

    def close(self) -> None:
        if self.screen is not None:
            import pygame

            pygame.display.quit()
            self.screen = None
