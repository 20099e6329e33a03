"""Depth alignment: bring a new frame's raw depth into the memory's units before it is written back.

A monocular depth model gives each frame its own (unknown) scale, and sometimes a shift. Before a generated frame
is written into the memory, its depth is fitted to the memory's own rendered depth where the memory *did* see
something (the read was not a hole):

- ``AlignMode.SCALE`` (default): ``aligned = s * raw``. Robust fit in log space: ``r = log(ref) - log(raw)``;
  the ``trim`` fraction of pixels farthest from the median of ``r`` are dropped as outliers and ``log s`` is the
  mean of the rest (least squares in log space with outlier trimming).
- ``AlignMode.SCALE_SHIFT``: ``aligned = s * raw + t``, least squares on the inliers of the scale fit. A fit with
  ``s <= 0`` is rejected (it would turn the scene inside out) and the scale-only fit is used, with a warning.
- ``AlignMode.NONE``: no fit (``s = 1``, ``t = 0``).

Too few valid pixels (fewer than ``min_valid``) -> the fit keeps ``s = 1, t = 0`` and says so in
:attr:`DepthFit.warning`; the memory copies that warning into its :class:`~mirage.memory.types.WriteStats`.
Nothing here is silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from mirage._check import check_shape
from mirage.errors import InputError


class AlignMode(str, Enum):
    """How a new depth map is fitted to the memory's depth."""

    NONE = "none"  # trust the raw depth as it is
    SCALE = "scale"  # one scale per frame (robust, log space)
    SCALE_SHIFT = "scale_shift"  # scale and shift per frame (least squares on the scale fit's inliers)


@dataclass(frozen=True)
class DepthFit:
    """The fit of one frame: ``aligned = scale * raw + shift``.

    Attributes:
        scale, shift: the fit (1, 0 when it was not possible).
        residual: median absolute relative error ``|aligned - ref| / ref`` over the valid pixels after the fit
            (NaN when there were no valid pixels).
        valid: how many pixels the fit could use (not a hole, finite positive depth in both maps).
        inliers: how many survived the outlier trimming.
        warning: one line when the fit was not possible or was downgraded, else None.
    """

    scale: float
    shift: float
    residual: float
    valid: int
    inliers: int
    warning: str | None = None

    def apply(self, depth: torch.Tensor) -> torch.Tensor:
        """``scale * depth + shift`` (any shape, same dtype)."""
        return depth * self.scale + self.shift


def fit_depth(
    depth_raw: torch.Tensor,
    depth_ref: torch.Tensor,
    valid: torch.Tensor,
    *,
    mode: AlignMode = AlignMode.SCALE,
    min_valid: int = 32,
    trim: float = 0.2,
) -> DepthFit:
    """Fit one frame's raw depth to a reference depth (robustly). Syncs with the host (runs once per write).

    Args:
        depth_raw: (H, W) float, raw depth of the new frame (any positive units); NaN/inf/<=0 are ignored.
        depth_ref: (H, W) float, the memory's rendered z-depth in world units (0 in holes).
        valid: (H, W) bool, where the memory's read was not a hole.
        mode: see :class:`AlignMode`.
        min_valid: fewer usable pixels than this -> scale 1, shift 0 and a warning.
        trim: fraction of the pixels (farthest from the median log ratio) dropped as outliers, in [0, 0.9].
    Returns:
        :class:`DepthFit`.
    """
    check_shape(depth_raw, ("H", "W"), "depth_raw")
    check_shape(depth_ref, tuple(depth_raw.shape), "depth_ref")
    check_shape(valid, tuple(depth_raw.shape), "valid")
    if not 0.0 <= trim <= 0.9:
        raise InputError(f"align trim: {trim} is outside [0, 0.9]; pass a fraction of outliers to drop")
    raw = depth_raw.double().reshape(-1)
    ref = depth_ref.double().reshape(-1)
    ok = valid.reshape(-1) & torch.isfinite(raw) & torch.isfinite(ref) & (raw > 0) & (ref > 0)
    n = int(ok.sum())
    if mode == AlignMode.NONE:
        return DepthFit(1.0, 0.0, _residual(raw, ref, ok, 1.0, 0.0), n, n, None)
    if n < max(min_valid, 1):
        return DepthFit(
            1.0, 0.0, _residual(raw, ref, ok, 1.0, 0.0), n, 0,
            f"depth alignment: only {n} valid pixel(s) overlap the memory (need {min_valid}); kept scale 1",
        )
    r = torch.log(ref[ok]) - torch.log(raw[ok])  # (n,) log ratios
    med = r.median()
    keep = max(1, int(round(n * (1.0 - trim))))
    order = (r - med).abs().argsort()[:keep]  # the `keep` ratios closest to the median
    log_s = r[order].mean()
    scale, shift = float(torch.exp(log_s)), 0.0
    warning = None
    if mode == AlignMode.SCALE_SHIFT:
        x = raw[ok][order]
        y = ref[ok][order]
        A = torch.stack([x, torch.ones_like(x)], dim=-1)  # (keep, 2)
        sol = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
        s2, t2 = float(sol[0]), float(sol[1])
        if s2 > 0 and keep >= 2:
            scale, shift = s2, t2
        else:
            warning = f"depth alignment: scale+shift fit gave scale {s2:.4g} <= 0; used the scale-only fit {scale:.4g}"
    return DepthFit(scale, shift, _residual(raw, ref, ok, scale, shift), n, keep, warning)


def _residual(raw: torch.Tensor, ref: torch.Tensor, ok: torch.Tensor, scale: float, shift: float) -> float:
    """Median relative error of the fit over ``ok`` (NaN if empty)."""
    if not bool(ok.any()):
        return float("nan")
    rel = ((raw[ok] * scale + shift) - ref[ok]).abs() / ref[ok]
    return float(rel.median())
