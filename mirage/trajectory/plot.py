"""A picture of a camera path: top view (x-z) and side view (z-y) with small frusta, drawn with PIL only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from mirage.errors import InputError
from mirage.io import atomic_path
from mirage.trajectory.types import Trajectory

PANEL_SIZE = 480  # pixels per (square) view panel
MAX_FRUSTA = 9  # frusta drawn per view (evenly spaced, plus the first and last frame)
_BG = (255, 255, 255)
_GRID = (225, 225, 225)
_AXIS = (90, 90, 90)
_TEXT = (20, 20, 20)
_FIRST = (220, 30, 30)  # frame 0 (the input camera)
_SCENE = (40, 150, 60)  # the point at scene depth in front of frame 0


@dataclass(frozen=True)
class _View:
    """A 2D view of world points: which world axes go right and down on the page, with their labels."""

    title: str
    right: int  # world axis index drawn left -> right
    down: int  # world axis index drawn top -> bottom
    down_sign: float  # +1: the world axis grows downward on the page, -1: upward
    right_label: str
    down_label: str


_VIEWS = (
    _View("top view (x-z), looking down", right=0, down=2, down_sign=-1.0, right_label="x (right) ->",
          down_label="z (forward) ^"),
    _View("side view (z-y), y down", right=2, down=1, down_sign=1.0, right_label="z (forward) ->",
          down_label="y (down) v"),
)


def _time_colour(i: int, n: int) -> tuple[int, int, int]:
    """Blue (early) -> orange (late)."""
    a = i / max(n - 1, 1)
    return (int(30 + 220 * a), int(90 + 60 * a), int(220 - 190 * a))


def frustum_corners_world(traj: Trajectory, depth: float) -> torch.Tensor:
    """Image-corner rays of every camera cut at ``depth``.

    Args:
        traj: the trajectory (pixel ``K``, OpenCV ``w2c``).
        depth: z-depth of the frustum's far rectangle, in the trajectory's units.
    Returns:
        (N, 4, 3) float64 world points: top-left, top-right, bottom-right, bottom-left.
    """
    W, H = traj.width, traj.height
    uv = torch.tensor([[-0.5, -0.5], [W - 0.5, -0.5], [W - 0.5, H - 0.5], [-0.5, H - 0.5]], dtype=torch.float64)
    K = traj.K.to(torch.float64)
    fx, fy, cx, cy, s = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None], K[:, 0, 1, None]
    y = (uv[None, :, 1] - cy) / fy  # (N, 4)
    x = (uv[None, :, 0] - cx - s * y) / fx  # (N, 4)
    xyz_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1) * depth  # (N, 4, 3)
    c2w = traj.c2w.to(torch.float64)
    return xyz_cam @ c2w[:, :3, :3].transpose(-1, -2) + c2w[:, None, :3, 3]  # (N, 4, 3)


def plot_trajectory(traj: Trajectory, path: str | Path, *, scene_depth: float = 1.0) -> Path:
    """Write a PNG with a top view (x-z) and a side view (z-y, y down) of the camera path.

    Camera centres are joined by a line coloured blue (first) -> orange (last); small frusta show where the cameras
    look (their size is 0.15 x ``scene_depth``); frame 0 is drawn in red and thicker; a green cross marks the point
    at ``scene_depth`` straight in front of frame 0. Axes are in the trajectory's units (frame 0's camera frame
    after :meth:`Trajectory.rebased`).

    Args:
        traj: the trajectory to draw.
        path: output ``.png`` (written atomically).
        scene_depth: median scene depth in the trajectory's units (> 0), for the frustum size and the marker.
    Returns:
        ``path`` as a :class:`Path`.
    """
    if not (math.isfinite(scene_depth) and scene_depth > 0):
        raise InputError(f"scene_depth: {scene_depth} must be a positive finite number")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"--plot {path}: the plot is a PNG; give a path ending in .png")
    c2w = traj.c2w.to(torch.float64)
    centres = c2w[:, :3, 3]  # (N, 3)
    corners = frustum_corners_world(traj, 0.15 * scene_depth)  # (N, 4, 3)
    n = traj.num_frames
    shown = sorted({0, n - 1, *[round(i * (n - 1) / max(MAX_FRUSTA - 1, 1)) for i in range(MAX_FRUSTA)]})
    marker = torch.tensor([[0.0, 0.0, scene_depth]], dtype=torch.float64)
    everything = torch.cat([centres, corners[shown].reshape(-1, 3), marker])  # (M, 3) for the bounds

    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    header = 28
    img = Image.new("RGB", (PANEL_SIZE * len(_VIEWS), PANEL_SIZE + header), _BG)
    draw = ImageDraw.Draw(img)
    s = traj.stats()
    draw.text(
        (8, 6),
        f"{_shorten(traj.source or 'trajectory', 48)}: {n} frames @ {traj.fps:g} fps, {traj.width}x{traj.height}, "
        f"path {s.path_length:.3g}, max rot {s.max_rotation_deg:.1f} deg",
        fill=_TEXT, font=font,
    )
    for p, view in enumerate(_VIEWS):
        _draw_view(draw, view, (p * PANEL_SIZE, header), centres, corners, shown, marker[0], everything, font, small)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def _draw_view(draw, view: _View, origin, centres, corners, shown, marker, everything, font, small) -> None:
    ox, oy = origin
    margin = 44
    size = PANEL_SIZE - 2 * margin
    a = everything[:, view.right]
    b = everything[:, view.down] * view.down_sign
    lo_a, hi_a, lo_b, hi_b = float(a.min()), float(a.max()), float(b.min()), float(b.max())
    span = max(hi_a - lo_a, hi_b - lo_b, 1e-9) * 1.1
    mid_a, mid_b = (lo_a + hi_a) / 2, (lo_b + hi_b) / 2

    def to_px(pt: torch.Tensor) -> tuple[float, float]:
        u = (float(pt[view.right]) - mid_a) / span * size + ox + PANEL_SIZE / 2
        v = (float(pt[view.down]) * view.down_sign - mid_b) / span * size + oy + PANEL_SIZE / 2
        return u, v

    # frame, title, grid through the origin (frame 0's centre) and axis labels
    draw.rectangle([ox + margin, oy + margin, ox + PANEL_SIZE - margin, oy + PANEL_SIZE - margin], outline=_GRID)
    zero = torch.zeros(3, dtype=torch.float64)
    u0, v0 = to_px(zero)
    draw.line([(ox + margin, v0), (ox + PANEL_SIZE - margin, v0)], fill=_GRID)
    draw.line([(u0, oy + margin), (u0, oy + PANEL_SIZE - margin)], fill=_GRID)
    draw.text((ox + margin, oy + 8), view.title, fill=_TEXT, font=font)
    draw.text((ox + PANEL_SIZE - margin, oy + PANEL_SIZE - margin + 6), view.right_label, fill=_AXIS, font=small,
              anchor="ra")
    draw.text((ox + 6, oy + margin - 18), view.down_label, fill=_AXIS, font=small)
    draw.text((ox + margin, oy + PANEL_SIZE - margin + 6), f"grid box: {span:.3g} units", fill=_AXIS, font=small)

    # scene-depth marker
    mu, mv = to_px(marker)
    draw.line([(mu - 6, mv - 6), (mu + 6, mv + 6)], fill=_SCENE, width=2)
    draw.line([(mu - 6, mv + 6), (mu + 6, mv - 6)], fill=_SCENE, width=2)
    _label(draw, (mu, mv - 14), "scene depth", _SCENE, small, ox)

    # frusta (later ones first, so frame 0 is drawn on top)
    n = centres.shape[0]
    for i in sorted(shown, reverse=True):
        colour = _FIRST if i == 0 else _time_colour(i, n)
        width = 3 if i == 0 else 1
        c = to_px(centres[i])
        pts = [to_px(corners[i, j]) for j in range(4)]
        for q in pts:
            draw.line([c, q], fill=colour, width=width)
        draw.line(pts + [pts[0]], fill=colour, width=width)

    # path of the centres
    px = [to_px(centres[i]) for i in range(n)]
    for i in range(n - 1):
        draw.line([px[i], px[i + 1]], fill=_time_colour(i, n), width=3)
    for i, (u, v) in enumerate(px):
        r = 5 if i == 0 else 2
        draw.ellipse([u - r, v - r, u + r, v + r], fill=_FIRST if i == 0 else _time_colour(i, n))
    _label(draw, (px[0][0], px[0][1] + 6), "frame 0", _FIRST, small, ox)
    if n > 1:
        _label(draw, (px[-1][0], px[-1][1] - 20), f"frame {n - 1}", _time_colour(n - 1, n), small, ox)


def _shorten(text: str, n: int) -> str:
    """``text`` cut to its last ``n`` characters (paths keep their file name)."""
    return text if len(text) <= n else "..." + text[-(n - 3):]


def _label(draw, at, text: str, fill, font, ox: int) -> None:
    """Text beside a point, on whichever side keeps it inside its panel."""
    u, v = at
    if u > ox + PANEL_SIZE * 0.7:
        draw.text((u - 8, v), text, fill=fill, font=font, anchor="ra")
    else:
        draw.text((u + 8, v), text, fill=fill, font=font)


__all__ = ["plot_trajectory", "frustum_corners_world", "PANEL_SIZE"]
