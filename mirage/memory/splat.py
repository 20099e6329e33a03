"""Shared machinery of both spatial memories: configuration, projection + z-buffer splatting, footprint depth.
The bounded point store (voxel de-duplication, token budget) is :mod:`mirage.memory.store`, the file format
:mod:`mirage.memory.files`.

Everything here is a pure function on tensors or a small container, used by :mod:`mirage.memory.latent` (tokens
on the VAE's latent grid) and :mod:`mirage.memory.rgb` (coloured points on the pixel grid); the two differ only in
the grid they splat on and in what they do with the result. See ``docs/memory.md`` for the design.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch

from mirage._check import check_shape
from mirage.camera import pixel_grid, project_cam_to_pixels, transform_points, unproject_to_cam
from mirage.errors import InputError
from mirage.memory.align import AlignMode

_DUMP_SLOTS = 1024  # spare cells that absorb rejected splat contributions (see splat_points)
_SNAP = 1e-3  # projected positions within this many cells of a cell centre snap onto it (float noise)


class SplatMode(str, Enum):
    """How a projected point spreads onto the target grid."""

    NEAREST = "nearest"  # the one cell whose centre is nearest
    BILINEAR = "bilinear"  # the 4 surrounding cells with bilinear weights (default)
    CLOSEST = "closest"  # coverage and z-buffer as BILINEAR, but each cell takes the features of the one accepted
    #                      (front-surface) point whose projection is nearest its centre: no blending (the read of
    #                      a polyphase memory, see MemoryConfig.phases)
    TENT = "tent"  # as CLOSEST, but each cell takes the tent-weighted mean of the accepted points within the token
    #                spacing of its centre (radius 1 / phases cell): linear interpolation between the sub-stride phases
    #                of a polyphase memory; the closest point where none is that near (docs/fidelity.md)


class FootprintDepth(str, Enum):
    """Which depth a token takes from the stride x stride pixels of depth under it."""

    MEDIAN = "median"  # the (lower) median of the valid pixels: the majority surface (default)
    MIN = "min"  # the nearest valid pixel: fattens foreground at depth edges


class VoxelWinner(str, Enum):
    """Which token survives when a new one lands in an occupied voxel."""

    EXISTING = "existing"  # the stored one (older = closer to the real input image) wins (default)
    NEWEST = "newest"  # the new one replaces every stored token of that voxel


@dataclass(frozen=True)
class MemoryConfig:
    """Settings of a spatial memory (both kinds). Serialised into saved memory files."""

    voxel_size: float | None = None  # world units; None = auto: median init depth / focal length of the memory's grid
    max_tokens: int = 1_000_000  # token budget; the oldest tokens are dropped beyond it (~52 MB at C=16 bf16)
    footprint_depth: FootprintDepth = FootprintDepth.MEDIAN  # median: a token sits on the surface it mostly shows
    splat: SplatMode = SplatMode.BILINEAR  # bilinear: sub-cell motion is visible, a half-cell shift averages
    depth_tolerance: float = 0.05  # soft z-test: accept z <= zmin * (1 + tol) (5% covers slanted surfaces)
    min_coverage: float = 0.25  # a cell is a hole when the accepted bilinear weight is below this; also the weight
    #                             a token needs on a cell to claim its z-buffer (weaker ones only blend in)
    near: float = 1e-3  # world units; points nearer than this to the camera plane are not drawn
    align: AlignMode = AlignMode.SCALE  # depth fit of written frames to the memory (see mirage.memory.align)
    align_min_valid: int = 32  # grid cells of overlap the depth fit needs, else scale 1 and a warning
    align_trim: float = 0.2  # fraction of outlier cells the depth fit drops
    voxel_winner: VoxelWinner = VoxelWinner.EXISTING  # see VoxelWinner
    phases: int = 1  # polyphase init: 1, 2 or 4 sub-stride offsets per axis (phases**2 x the init tokens); > 1
    #                  needs the latents of the shifted images (mirage.memory.encode_phases); read with TENT

    def __post_init__(self) -> None:
        if self.voxel_size is not None and not (math.isfinite(self.voxel_size) and self.voxel_size > 0):
            raise InputError(f"memory voxel_size: {self.voxel_size} must be positive and finite, or None for auto")
        if int(self.max_tokens) < 1:
            raise InputError(f"memory max_tokens: {self.max_tokens} must be >= 1")
        if not (math.isfinite(self.depth_tolerance) and self.depth_tolerance >= 0):
            raise InputError(f"memory depth_tolerance: {self.depth_tolerance} must be >= 0 (a relative band)")
        if not 0.0 < self.min_coverage <= 1.0:
            raise InputError(f"memory min_coverage: {self.min_coverage} must be in (0, 1]")
        if not (math.isfinite(self.near) and self.near > 0):
            raise InputError(f"memory near: {self.near} must be positive")
        if not 0.0 <= self.align_trim <= 0.9:
            raise InputError(f"memory align_trim: {self.align_trim} must be in [0, 0.9]")
        if self.phases not in (1, 2, 4):
            raise InputError(f"memory phases: {self.phases} is not one of 1, 2, 4 (sub-stride offsets per axis)")
        for name, enum in (("footprint_depth", FootprintDepth), ("splat", SplatMode), ("align", AlignMode),
                           ("voxel_winner", VoxelWinner)):
            value = getattr(self, name)
            if not isinstance(value, enum):
                try:
                    object.__setattr__(self, name, enum(value))
                except ValueError:
                    valid = ", ".join(m.value for m in enum)
                    raise InputError(f"memory {name}: {value!r} is not one of {valid}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (enums as their values)."""
        return {f.name: (v.value if isinstance(v := getattr(self, f.name), Enum) else v) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "memory config") -> MemoryConfig:
        """Inverse of :meth:`to_dict`; an unknown key is an :class:`InputError` naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(sorted(names))}")
        return cls(**d)


# --------------------------------------------------------------------------------------------------------------
# frames


def latent_frame_indices(num_frames: int, temporal_stride: int) -> list[int]:
    """The pixel frame whose pose each latent frame is read/written at (:meth:`LatentSpace.latent_frame_indices`:
    ``[0, ts, 2 ts, ..., F - 1]``; ``num_frames`` must be ``temporal_stride * k + 1``)."""
    from mirage.latent_space import LatentSpace

    return LatentSpace(channels=0, temporal_stride=temporal_stride).latent_frame_indices(num_frames)


# --------------------------------------------------------------------------------------------------------------
# splatting


@dataclass
class Splat:
    """A rendered view of a point set (one per target camera).

    Attributes:
        features: (B, C, H, W) float32 weighted mean of the accepted points' features, 0 in holes (None when
            rendering depth only).
        coverage: (B, H, W) float32, sum of the accepted bilinear weights (CLOSEST: their maximum).
        depth: (B, H, W) float32, z of the nearest surface (the hard z-buffer winner), 0 in holes.
        holes: (B, H, W) bool, ``coverage < min_coverage``.
    """

    features: torch.Tensor | None
    coverage: torch.Tensor
    depth: torch.Tensor
    holes: torch.Tensor


def splat_points(
    xyz_world: torch.Tensor,
    features: torch.Tensor | None,
    K: torch.Tensor,
    w2c: torch.Tensor,
    height: int,
    width: int,
    *,
    mode: SplatMode = SplatMode.BILINEAR,
    depth_tolerance: float = 0.05,
    min_coverage: float = 0.25,
    near: float = 1e-3,
    valid: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    strong_weight: float | None = None,
    tent_radius: float = 1.0,
) -> Splat:
    """Render points into B cameras at once with a deterministic soft z-buffer. No host sync, fixed shapes.

    1. project every point into every camera; each point contributes to 1 (nearest) or 4 (bilinear) cells with
       weight ``w``; contributions outside the image, behind ``near`` or with ``w == 0`` go to a dummy cell;
    2. z-buffer: ``zmin`` per cell = ``scatter_reduce(amin)`` of the depths of contributions with
       ``w >= min_coverage`` (a point must cover a good part of a cell to occlude it); cells that only weak
       contributions reach use the amin over all of them. amin is exact, so ``zmin`` (and ``depth``) do not depend on
       the order of the points;
    3. soft depth test: a contribution is accepted when ``z <= zmin * (1 + depth_tolerance)`` (nearer weak ones blend
       in: antialiased edges); accepted weights and weighted features are summed with ``index_add_`` (order-independent
       up to float rounding) and the features normalised by the weight sum;
    4. ``CLOSEST`` only: each cell instead takes the features of the accepted point nearest its centre (ties: the
       lower point index; an exact int64 ``scatter_reduce(amin)`` of (quantised squared distance, index) keys, so
       the choice is order-independent and deterministic); its coverage is the *largest* accepted splat weight (a
       cell is covered when some front-surface point lies within about half a cell of its centre), so a dense
       polyphase cloud neither over- nor under-counts;
    5. ``TENT`` only: as ``CLOSEST``, then a cell with accepted points closer than ``tent_radius`` to its centre
       (per axis) takes their mean weighted by ``(1 - |dx| / r) (1 - |dy| / r)`` instead of the closest one's
       features (a partition of unity on a lattice of spacing r: linear interpolation between polyphase tokens).

    Args:
        xyz_world: (N, 3) float world points.
        features: (N, C) any float dtype, the same for every camera; or (B, N, C), each camera its own features
            (a latent memory's init tokens read another feature in each latent slot); or None to render
            depth/coverage only.
        K: (B, 3, 3) intrinsics of the target grid (height x width), pixel-centre convention.
        w2c: (B, 4, 4) world-to-camera, OpenCV. Non-finite poses render as all holes (no error, no sync).
        height, width: target grid size.
        mode, depth_tolerance, min_coverage, near: see :class:`MemoryConfig`.
        valid: optional (N,) bool; False points are not drawn.
        weights: optional (N,) float32 per-point density weight, multiplying the splat weight in the coverage and
            the feature mean (a polyphase memory's init tokens weigh ``1 / phases**2``, so a cell's coverage stays
            ~1). The z-buffer's "strong" test uses the unweighted splat weight.
        strong_weight: splat weight a contribution needs to claim a cell's z-buffer (default ``min_coverage``); a
            polyphase read passes ``(1 - 0.5 / phases)**2``: only a point within half the token spacing of the cell
            centre can occlude it.
        tent_radius: ``TENT`` only: the kernel's half-width in cells (a polyphase read passes ``1 / phases``, the
            token spacing).
    Returns:
        :class:`Splat` on the points' device.
    """
    check_shape(xyz_world, ("N", 3), "xyz_world")
    N = xyz_world.shape[0]
    check_shape(K, ("B", 3, 3), "K")
    B = K.shape[0]
    check_shape(w2c, (B, 4, 4), "w2c")
    if features is not None:
        check_shape(features, (B, N, "C") if features.ndim == 3 else (N, "C"), "features")
    if valid is not None:
        check_shape(valid, (N,), "valid")
    if weights is not None:
        check_shape(weights, (N,), "weights")
    if mode == SplatMode.TENT and not (math.isfinite(tent_radius) and tent_radius > 0):
        raise InputError(f"splat tent_radius: {tent_radius} must be a positive number of cells")
    HW = height * width
    dev = xyz_world.device
    xyz_cam = transform_points(w2c.float(), xyz_world.float())  # (B, N, 3)
    uv, z = project_cam_to_pixels(xyz_cam, K.float())  # (B, N, 2), (B, N)
    finite = torch.isfinite(uv).all(-1) & torch.isfinite(z)  # (B, N)
    uv = uv.nan_to_num(nan=-4.0, posinf=-4.0, neginf=-4.0).clamp(-4.0, float(max(height, width) + 4))
    r = torch.round(uv)
    uv = torch.where((uv - r).abs() < _SNAP, r, uv)  # exact cell centres stay exact (identity reads are exact)
    if mode == SplatMode.NEAREST:
        corner = torch.floor(uv + 0.5)[:, :, None, :]  # (B, N, 1, 2)
        w = torch.ones(corner.shape[:-1], dtype=torch.float32, device=dev)  # (B, N, 1)
    else:
        base = torch.floor(uv)
        frac = uv - base  # (B, N, 2) in [0, 1)
        corner = torch.arange(4, device=dev)  # built on the device: no host-to-device copy (CUDA-graph safe)
        off = torch.stack([corner % 2, corner // 2], dim=-1).float()  # (4, 2): (0,0), (1,0), (0,1), (1,1)
        corner = base[:, :, None, :] + off  # (B, N, 4, 2)
        wxy = torch.where(off.bool(), frac[:, :, None, :], 1.0 - frac[:, :, None, :])  # (B, N, 4, 2)
        w = wxy[..., 0] * wxy[..., 1]  # (B, N, 4)
    cu, cv = corner[..., 0], corner[..., 1]
    ok = (
        (finite & (z > near))[..., None]
        & (w > 0)
        & (cu >= 0) & (cu <= width - 1) & (cv >= 0) & (cv <= height - 1)
    )  # (B, N, S)
    if valid is not None:
        ok = ok & valid[None, :, None]
    b = torch.arange(B, device=dev)[:, None, None]
    flat = b * HW + cv.long().clamp(0, height - 1) * width + cu.long().clamp(0, width - 1)  # (B, N, S)
    # rejected contributions go to _DUMP_SLOTS spare cells past the image, spread round robin: one shared dummy
    # cell would serialise every atomic of the out-of-view tokens on one address (measured 5x slower reads)
    dump = B * HW + torch.arange(flat.numel(), device=dev).reshape(flat.shape) % _DUMP_SLOTS
    flat = torch.where(ok, flat, dump)
    zc = z[..., None].expand_as(w)  # (B, N, S)
    inf = torch.full((B * HW + _DUMP_SLOTS,), float("inf"), dtype=torch.float32, device=dev)
    z_all = inf.scatter_reduce(0, flat.reshape(-1), torch.where(ok, zc, float("inf")).reshape(-1), "amin")
    strong = ok & (w >= (min_coverage if strong_weight is None else strong_weight))
    z_strong = inf.scatter_reduce(0, flat.reshape(-1), torch.where(strong, zc, float("inf")).reshape(-1), "amin")
    zmin = torch.where(torch.isinf(z_strong), z_all, z_strong)  # (B*HW + _DUMP_SLOTS,)
    accept = ok & (zc <= zmin[flat] * (1.0 + depth_tolerance))  # (B, N, S)
    pick = mode in (SplatMode.CLOSEST, SplatMode.TENT)  # one point's features per cell (or a narrow blend)
    if weights is not None and not pick:
        w = w * weights.float()[None, :, None]
    wa = torch.where(accept, w, 0.0)
    cov = torch.zeros(B * HW + _DUMP_SLOTS, dtype=torch.float32, device=dev)
    if pick:
        cov = cov.scatter_reduce(0, flat.reshape(-1), wa.reshape(-1), "amax")  # the nearest accepted point's weight
    else:
        cov = cov.index_add_(0, flat.reshape(-1), wa.reshape(-1))
    holes = cov[: B * HW] < min_coverage  # (B*HW,)
    depth = torch.where(holes, 0.0, zmin[: B * HW])
    feats_out = None
    if features is not None and pick:
        C = features.shape[-1]
        d2 = (corner - uv[:, :, None, :]).square().sum(-1)  # (B, N, 4) squared distance to the cell centre, <= 2
        big = torch.iinfo(torch.int64).max
        key = (d2 * float(1 << 24)).round().long() * (N + 1) + torch.arange(N, device=dev)[None, :, None]
        key = torch.where(accept, key, big)  # (B, N, 4): (distance, index), exact in int64 (2^25 * 2^31 < 2^63)
        best = torch.full((B * HW + _DUMP_SLOTS,), big, dtype=torch.int64, device=dev).scatter_reduce(
            0, flat.reshape(-1), key.reshape(-1), "amin"
        )[: B * HW]  # (B*HW,)
        winner = torch.where(best == big, 0, best % (N + 1)).clamp(max=max(N - 1, 0))  # (B*HW,)
        if features.ndim == 3:  # per camera: cell b*HW + k picks row b*N + winner of the flattened (B*N, C)
            winner = winner + torch.arange(B, device=dev).repeat_interleave(HW) * N
        picked = features.reshape(-1, C)[winner].float() if N else torch.zeros(B * HW, C, device=dev)  # (B*HW, C)
        if mode == SplatMode.TENT:
            t = 1.0 - (corner - uv[:, :, None, :]).abs() / tent_radius  # (B, N, 4, 2)
            k = torch.where(accept, torch.where(t < _SNAP, 0.0, t).prod(-1), 0.0)  # (B, N, 4) tent weights
            ksum = torch.zeros(B * HW + _DUMP_SLOTS, dtype=torch.float32, device=dev).index_add_(
                0, flat.reshape(-1), k.reshape(-1))
            acc = torch.zeros(B * HW + _DUMP_SLOTS, C, dtype=torch.float32, device=dev)
            f32 = features.float()  # (N, C) or (B, N, C)
            for s in range(4):  # the 4 corners: bounds the peak memory to B*N*C
                acc.index_add_(0, flat[:, :, s].reshape(-1),
                               (k[:, :, s, None] * (f32 if f32.ndim == 3 else f32[None])).reshape(-1, C))
            near = ksum[: B * HW] > 0  # (B*HW,): some accepted point within the tent
            picked = torch.where(near[:, None], acc[: B * HW] / ksum[: B * HW, None].clamp_min(1e-12), picked)
        picked = torch.where(holes[:, None] | (best == big)[:, None], 0.0, picked)
        feats_out = picked.reshape(B, height, width, C).permute(0, 3, 1, 2)  # (B, C, H, W)
    elif features is not None:
        C = features.shape[-1]
        f32 = features.float()  # (N, C) or (B, N, C): broadcast against the (B, N, 1) weights
        acc = torch.zeros(B * HW + _DUMP_SLOTS, C, dtype=torch.float32, device=dev)
        for s in range(w.shape[-1]):  # 1 or 4 corners: bounds the peak memory to B*N*C
            contrib = wa[:, :, s, None] * (f32 if f32.ndim == 3 else f32[None])  # (B, N, C)
            acc.index_add_(0, flat[:, :, s].reshape(-1), contrib.reshape(-1, C))
        mean = acc[: B * HW] / cov[: B * HW, None].clamp_min(1e-12)  # (B*HW, C)
        mean = torch.where(holes[:, None], 0.0, mean)
        feats_out = mean.reshape(B, height, width, C).permute(0, 3, 1, 2)  # (B, C, H, W)
    return Splat(
        features=feats_out,
        coverage=cov[: B * HW].reshape(B, height, width),
        depth=depth.reshape(B, height, width),
        holes=holes.reshape(B, height, width),
    )


# --------------------------------------------------------------------------------------------------------------
# depth -> points


def invalid_depth(depth: torch.Tensor) -> torch.Tensor:
    """True where a depth value cannot be used (NaN, inf, <= 0). Same shape, bool."""
    return ~(torch.isfinite(depth) & (depth > 0))


def footprint_depth(depth: torch.Tensor, stride: int, mode: FootprintDepth = FootprintDepth.MEDIAN) -> torch.Tensor:
    """Per-token depth from the stride x stride pixels under each token.

    Args:
        depth: (B, H, W) float z-depth; NaN/inf/<=0 pixels are ignored.
        stride: spatial stride of the token grid (H and W must be multiples of it; 1 = per pixel).
        mode: see :class:`FootprintDepth`.
    Returns:
        (B, H // stride, W // stride) float32 depth, NaN where no pixel of the footprint is valid.
    """
    B, H, W = depth.shape
    if H % stride or W % stride:
        raise InputError(f"depth: size {W}x{H} is not a multiple of the latent stride {stride}; resize to a multiple")
    d = torch.where(invalid_depth(depth), float("nan"), depth.float())
    if stride == 1:
        return d
    h, w = H // stride, W // stride
    blocks = d.reshape(B, h, stride, w, stride).permute(0, 1, 3, 2, 4).reshape(B, h, w, stride * stride)
    if mode == FootprintDepth.MIN:
        m = torch.where(torch.isnan(blocks), float("inf"), blocks).amin(-1)
        return torch.where(torch.isinf(m), float("nan"), m)
    return blocks.nanmedian(dim=-1).values


def grid_to_world(depth_grid: torch.Tensor, K_grid: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """Back-project every cell centre of a grid to world space.

    Args:
        depth_grid: (B, h, w) float32 z-depth (NaN allowed; gives NaN points).
        K_grid: (B, 3, 3) intrinsics of that grid.
        c2w: (B, 4, 4) camera-to-world.
    Returns:
        xyz_world: (B, h * w, 3) float32, row-major cells.
    """
    B, h, w = depth_grid.shape
    uv = pixel_grid(h, w, device=depth_grid.device).reshape(1, -1, 2).expand(B, -1, -1)  # (B, h*w, 2)
    xyz_cam = unproject_to_cam(uv, depth_grid.reshape(B, -1).float(), K_grid.float())  # (B, h*w, 3)
    return transform_points(c2w.float(), xyz_cam)


def pool_any(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, H, W) bool -> (B, H/stride, W/stride): True where any pixel of the block is True."""
    if stride == 1:
        return mask
    B, H, W = mask.shape
    return mask.reshape(B, H // stride, stride, W // stride, stride).any(dim=4).any(dim=2)


def check_intrinsics(K: torch.Tensor, height: int, width: int, name: str) -> None:
    """Raise :class:`InputError` unless ``K`` (..., 3, 3) is finite with positive focals and a principal point
    within a quarter image of the image (pixel-centre convention) of a ``width`` x ``height`` image."""
    if K.ndim < 2 or K.shape[-2:] != (3, 3):
        raise InputError(f"{name}: expected intrinsics of shape (3, 3), got {tuple(K.shape)}")
    if not bool(torch.isfinite(K).all()):
        raise InputError(f"{name}: intrinsics hold NaN or inf; fix the camera")
    if not bool((K[..., 0, 0] > 0).all() and (K[..., 1, 1] > 0).all()):
        raise InputError(f"{name}: focal lengths must be positive")
    cx, cy = K[..., 0, 2], K[..., 1, 2]
    if not bool(((cx > -0.25 * width) & (cx < 1.25 * width) & (cy > -0.25 * height) & (cy < 1.25 * height)).all()):
        raise InputError(
            f"{name}: principal point ({float(cx.reshape(-1)[0]):.1f}, {float(cy.reshape(-1)[0]):.1f}) is far outside "
            f"the {width}x{height} image; pass intrinsics in pixels of this image size"
        )
