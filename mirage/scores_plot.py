"""A picture of a video's consistency scores along its camera path (``mirage render --plot``), drawn with PIL only.

Left: the top view (x-z) of the camera centres, each frame's dot coloured by its memory agreement (red: low,
green: high, grey: not scored) and the revisit pairs joined by a line. Right: the per-frame memory agreement PSNR and
temporal change against the frame index, with the chunk boundaries. A person sees at a glance where a video goes
wrong. The numbers are the report's (docs/report.md, "Consistency scores").
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from mirage.errors import InputError
from mirage.io import atomic_path
from mirage.trajectory.types import Trajectory

PANEL = 480  # pixels per panel
PSNR_RANGE = (10.0, 40.0)  # dB mapped red -> green on the path
_BG, _GRID, _TEXT, _AXIS = (255, 255, 255), (225, 225, 225), (20, 20, 20), (90, 90, 90)
_NONE = (170, 170, 170)
_PSNR, _CHANGE, _REVISIT = (30, 110, 200), (220, 120, 30), (150, 60, 170)


def _score_colour(psnr: float | None) -> tuple[int, int, int]:
    """Red (PSNR_RANGE[0] dB or less) -> green (PSNR_RANGE[1] or more); grey for None."""
    if psnr is None:
        return _NONE
    lo, hi = PSNR_RANGE
    a = min(max((psnr - lo) / (hi - lo), 0.0), 1.0)
    return int(220 * (1 - a) + 30 * a), int(40 * (1 - a) + 170 * a), 50


def plot_scores(report: dict, traj: Trajectory, path: str | Path) -> Path:
    """Write a PNG of the report's consistency scores along the trajectory.

    Args:
        report: the run report as a dict (:meth:`mirage.report.RunReport.to_dict`), with ``scores`` and ``chunks``.
        traj: the video's trajectory (its N frames are the report's).
        path: output ``.png`` (written atomically).
    Returns:
        ``path`` as a :class:`Path`.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"--plot {path}: the plot is a PNG; give a path ending in .png")
    s = report["scores"]
    psnr, change = s["per_frame"]["memory_agreement_psnr"], s["per_frame"]["temporal_change"]
    n = traj.num_frames
    if len(psnr) != n:
        raise InputError(f"plot_scores: the report scores {len(psnr)} frames, the trajectory has {n}; pass the video's own")
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=12)
    header = 30
    img = Image.new("RGB", (2 * PANEL, PANEL + header), _BG)
    draw = ImageDraw.Draw(img)
    draw.text((8, 7), "  |  ".join([
        f"memory agreement {_fmt(s['memory_agreement_psnr'], ' dB')} / SSIM {_fmt(s['memory_agreement_ssim'], '', 3)}",
        f"temporal change {_fmt(s['temporal_change'], '', 4)}",
        f"revisits {_fmt(s['revisit_psnr'], ' dB')} ({len(s['revisit_pairs'])} pairs)"]), fill=_TEXT, font=font)
    _draw_path(draw, traj.rebased().c2w.to(torch.float64)[:, :3, 3], psnr, s["revisit_pairs"], (0, header), font, small)
    top = header + 36
    h = (PANEL - 60) // 2
    bounds = [c["frames"][0] for c in report["chunks"][1:]]
    _draw_series(draw, psnr, (PANEL, top, h), "memory agreement PSNR per frame (dB, higher is better)", _PSNR, bounds,
                 font, small)
    _draw_series(draw, change, (PANEL, top + h + 14, h - 14), "temporal change per frame (lower is better)", _CHANGE,
                 bounds, font, small)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def _fmt(v: float | None, unit: str, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}{unit}"


def _draw_path(draw, centres: torch.Tensor, psnr: list, pairs: list, origin, font, small) -> None:
    """Top view (x right, z up the page) of the camera centres (N, 3), dots coloured by each frame's PSNR."""
    ox, oy = origin
    margin = 44
    size = PANEL - 2 * margin
    a, b = centres[:, 0], -centres[:, 2]
    span = max(float(a.max() - a.min()), float(b.max() - b.min()), 1e-9) * 1.1
    mid_a, mid_b = float(a.max() + a.min()) / 2, float(b.max() + b.min()) / 2

    def px(i: int) -> tuple[float, float]:
        return ((float(a[i]) - mid_a) / span * size + ox + PANEL / 2, (float(b[i]) - mid_b) / span * size + oy + PANEL / 2)

    draw.rectangle([ox + margin, oy + margin, ox + PANEL - margin, oy + PANEL - margin], outline=_GRID)
    draw.text((ox + margin, oy + 10), "camera path, top view (x-z): dot = frame's memory agreement", fill=_TEXT,
              font=small)
    draw.text((ox + margin, oy + PANEL - margin + 6), f"red <= {PSNR_RANGE[0]:g} dB, green >= {PSNR_RANGE[1]:g} dB, "
              "grey: not scored; purple: revisit pairs", fill=_AXIS, font=small)
    n = centres.shape[0]
    for i in range(n - 1):
        draw.line([px(i), px(i + 1)], fill=_GRID, width=2)
    for i, j in pairs:
        draw.line([px(i), px(j)], fill=_REVISIT, width=2)
    for i in range(n):
        u, v = px(i)
        r = 5 if i == 0 else 3
        draw.ellipse([u - r, v - r, u + r, v + r], fill=_score_colour(psnr[i]))
    u, v = px(0)
    draw.text((u + 8, v), "frame 0", fill=_TEXT, font=small)


def _draw_series(draw, values: list, box, title: str, colour, bounds: list[int], font, small) -> None:
    """A line chart of per-frame values (None: a gap) in the box (x0, y0, height), chunk starts as dotted lines."""
    x0, y0, h = box
    left, right = x0 + 50, x0 + PANEL - 16
    top, bottom = y0 + 20, y0 + h - 16
    draw.text((x0 + 8, y0), title, fill=_TEXT, font=small)
    draw.rectangle([left, top, right, bottom], outline=_GRID)
    known = [v for v in values if v is not None]
    n = len(values)
    if not known:
        draw.text((left + 8, top + 8), "not scored", fill=_AXIS, font=small)
        return
    lo, hi = min(known), max(known)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0 if lo >= 1.0 else 0.0, hi + 1.0 if lo >= 1.0 else max(hi * 2, 1e-3)

    def at(i: int, v: float) -> tuple[float, float]:
        return left + (right - left) * i / max(n - 1, 1), bottom - (bottom - top) * (v - lo) / (hi - lo)

    for f in bounds:
        x = at(f, lo)[0]
        for yy in range(int(top), int(bottom), 6):
            draw.line([(x, yy), (x, yy + 2)], fill=_AXIS)
    draw.text((left - 4, top), f"{hi:.3g}", fill=_AXIS, font=small, anchor="ra")
    draw.text((left - 4, bottom), f"{lo:.3g}", fill=_AXIS, font=small, anchor="rd")
    draw.text((right, bottom + 2), f"frame {n - 1}", fill=_AXIS, font=small, anchor="ra")
    prev = None
    for i, v in enumerate(values):
        if v is None:  # not scored: the line joins the scored frames on either side
            continue
        p = at(i, v)
        if prev is not None:
            draw.line([prev, p], fill=colour, width=2)
        draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)
        prev = p


__all__ = ["plot_scores", "PSNR_RANGE"]
