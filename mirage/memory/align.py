"""Depth alignment: bring a new frame's raw depth into the memory's units before it is written back.

A monocular depth model gives each frame its own (unknown) scale, and sometimes a shift. Before a generated frame
is written into the memory, its depth is fitted to the memory's own rendered depth where the memory *did* see
something (the read was not a hole):

- ``AlignMode.SCALE`` (default): ``aligned = s * raw``. Robust fit in log space: ``r = log(ref) - log(raw)``;
  the ``trim`` fraction of pixels farthest from the median of ``r`` are dropped as outliers and ``log s`` is the
  mean of the rest (least squares in log space with outlier trimming).
- ``AlignMode.SCALE_SHIFT``: ``aligned = s * raw + t``, least squares on the inliers of the scale fit. A fit with
  ``s <= 0`` is rejected (it would turn the scene inside out), and so is one the inliers cannot determine (raw
  depth constant over them); the scale-only fit is then used, with a warning.
- ``AlignMode.NONE``: no fit (``s = 1``, ``t = 0``).

Too few valid pixels (fewer than ``min_valid``; not checked with ``NONE``) -> the fit keeps ``s = 1, t = 0`` and says so in
:attr:`DepthFit.warning`; the memory copies that warning into its :class:`~mirage.memory.types.WriteStats`.
Nothing here is silent.
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class DepthFits:
    """The fits of B frames, on the device (no host sync made them): ``aligned = scale * raw + shift``.

    Attributes:
        scale, shift, residual: (B,) float64 (see :class:`DepthFit`).
        valid, inliers: (B,) int64.
        too_few: (B,) bool, where fewer than ``min_valid`` pixels overlapped and scale 1 was kept (never in NONE mode).
        rejected: (B,) bool, where a scale+shift fit was not used and the scale-only fit was kept instead;
        rejected_scale: (B,) float64, that fit's scale (NaN where it was undetermined: constant raw depth).
    """

    scale: torch.Tensor
    shift: torch.Tensor
    residual: torch.Tensor
    valid: torch.Tensor
    inliers: torch.Tensor
    too_few: torch.Tensor
    rejected: torch.Tensor
    rejected_scale: torch.Tensor

    def apply(self, depth: torch.Tensor) -> torch.Tensor:
        """``scale * depth + shift`` for (B, ...) depth, in its dtype."""
        shape = (-1,) + (1,) * (depth.ndim - 1)
        return depth * self.scale.to(depth.dtype).reshape(shape) + self.shift.to(depth.dtype).reshape(shape)

    def to_host(self, min_valid: int) -> list[DepthFit]:
        """One :class:`DepthFit` per frame, with its warning (one host read-back)."""
        rows = torch.stack([self.scale, self.shift, self.residual, self.valid.double(), self.inliers.double(),
                            self.too_few.double(), self.rejected.double(), self.rejected_scale], dim=1).tolist()
        fits = []
        for scale, shift, residual, valid, inliers, too_few, rejected, s2 in rows:
            n = int(valid)
            warning = None
            if too_few:
                warning = (f"depth alignment: only {n} valid pixel(s) overlap the memory (need {min_valid}); "
                           "kept scale 1")
            elif rejected and math.isnan(s2):
                warning = ("depth alignment: the scale+shift fit is undetermined (the raw depth is constant over its "
                           f"inliers); used the scale-only fit {scale:.4g}")
            elif rejected:
                warning = (f"depth alignment: scale+shift fit gave scale {s2:.4g} <= 0; used the scale-only "
                           f"fit {scale:.4g}")
            fits.append(DepthFit(scale, shift, residual, n, int(inliers), warning))
        return fits


def fit_depth_batch(
    depth_raw: torch.Tensor,
    depth_ref: torch.Tensor,
    valid: torch.Tensor,
    *,
    mode: AlignMode = AlignMode.SCALE,
    min_valid: int = 32,
    trim: float = 0.2,
) -> DepthFits:
    """Fit B frames' raw depth to their reference depth at once, on the device, without a host sync (the
    write-back's fits queue behind the depth model). Same fit as :func:`fit_depth`, row by row; the ``trim`` outliers
    are the pixels farthest from the median log ratio (of pixels equally far, the earlier is kept).

    Args:
        depth_raw: (B, H, W) float, raw depth of the new frames (any positive units); NaN/inf/<=0 are ignored.
        depth_ref: (B, H, W) float, the memory's rendered z-depth in world units (0 in holes).
        valid: (B, H, W) bool, where the memory's read was not a hole.
        mode, min_valid, trim: see :func:`fit_depth`.
    Returns:
        :class:`DepthFits` ((B,) tensors on the inputs' device).
    """
    check_shape(depth_raw, ("B", "H", "W"), "depth_raw")
    check_shape(depth_ref, tuple(depth_raw.shape), "depth_ref")
    check_shape(valid, tuple(depth_raw.shape), "valid")
    if not 0.0 <= trim <= 0.9:
        raise InputError(f"align trim: {trim} is outside [0, 0.9]; pass a fraction of outliers to drop")
    B = depth_raw.shape[0]
    raw = depth_raw.double().reshape(B, -1)
    ref = depth_ref.double().reshape(B, -1)
    ok = valid.reshape(B, -1) & torch.isfinite(raw) & torch.isfinite(ref) & (raw > 0) & (ref > 0)  # (B, P)
    n = ok.sum(1)  # (B,)
    one, zero = torch.ones_like(n, dtype=torch.float64), torch.zeros_like(n, dtype=torch.float64)
    no = torch.zeros_like(n, dtype=torch.bool)
    if mode == AlignMode.NONE:
        return DepthFits(one, zero, _residual(raw, ref, ok, one, zero), n, n, no, no, zero)
    fits = n >= max(min_valid, 1)  # (B,) rows with enough pixels to fit
    r = torch.where(ok, torch.log(ref.where(ok, 1.0)) - torch.log(raw.where(ok, 1.0)), float("nan"))  # (B, P)
    med = r.nanmedian(dim=1).values  # (B,) the lower median, as Tensor.median
    keep = torch.clamp(torch.round(n.double() * (1.0 - trim)), min=1).long()  # (B,) inliers kept
    dist = torch.where(ok, (r - med[:, None]).abs(), float("inf"))  # (B, P)
    order = dist.argsort(dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    inl = ok & (rank < keep[:, None])  # (B, P) the `keep` ratios closest to the median
    log_s = torch.where(inl, r, 0.0).sum(1) / keep.double()
    scale = torch.where(fits, torch.exp(log_s), one)
    shift, rejected, rejected_scale = zero, no, zero
    if mode == AlignMode.SCALE_SHIFT:  # least squares y = s x + t on the inliers (centred sums, float64)
        w = inl.double()
        sw = w.sum(1).clamp(min=1.0)
        mx = torch.where(inl, raw, 0.0).sum(1) / sw  # (B,) means over the inliers
        my = torch.where(inl, ref, 0.0).sum(1) / sw
        dx = torch.where(inl, raw - mx[:, None], 0.0)
        dy = torch.where(inl, ref - my[:, None], 0.0)
        var, cov = (dx * dx).sum(1), (dx * dy).sum(1)
        # raw depth (nearly) constant over the inliers: the shift and the scale cannot be told apart
        undetermined = ~(var > 1e-12 * mx.square() * sw)
        s2 = torch.where(undetermined, float("nan"), cov / var.where(~undetermined, 1.0))
        t2 = my - s2 * mx
        take = fits & ~undetermined & (s2 > 0) & torch.isfinite(t2) & (keep >= 2)
        rejected, rejected_scale = fits & ~take, s2
        scale, shift = torch.where(take, s2, scale), torch.where(take, t2, zero)
    inliers = torch.where(fits, keep, torch.zeros_like(keep))
    return DepthFits(scale, shift, _residual(raw, ref, ok, scale, shift), n, inliers, ~fits, rejected, rejected_scale)


def fit_depth(
    depth_raw: torch.Tensor,
    depth_ref: torch.Tensor,
    valid: torch.Tensor,
    *,
    mode: AlignMode = AlignMode.SCALE,
    min_valid: int = 32,
    trim: float = 0.2,
) -> DepthFit:
    """Fit one frame's raw depth to a reference depth (robustly): :func:`fit_depth_batch` of one frame, read back
    to the host.

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
    return fit_depth_batch(depth_raw[None], depth_ref[None], valid[None], mode=mode, min_valid=min_valid,
                           trim=trim).to_host(min_valid)[0]


def _residual(raw: torch.Tensor, ref: torch.Tensor, ok: torch.Tensor, scale: torch.Tensor,
              shift: torch.Tensor) -> torch.Tensor:
    """(B,) median relative error of the fits over ``ok`` (NaN where a row has none). raw, ref: (B, P); ok (B, P)."""
    rel = ((raw * scale[:, None] + shift[:, None]) - ref).abs() / ref
    return torch.where(ok, rel, float("nan")).nanmedian(dim=1).values
