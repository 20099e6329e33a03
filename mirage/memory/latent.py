"""The latent spatial memory: one 3D token per latent cell, splatted straight into the latent grid of target views.

Init: the input image's VAE latents (C, h, w) and its depth (H, W). Token (i, j) takes the depth of its
stride x stride pixel footprint (:class:`~mirage.memory.splat.FootprintDepth`) and sits at the latent cell centre
``stride * j + (stride - 1) / 2`` (``intrinsics_to_latent``), back-projected with the frame-0 camera.

Polyphase init (``MemoryConfig.phases`` p > 1): the image is also encoded shifted by every multiple of
``stride / p`` pixels along each axis (``phase_latents``, from :func:`mirage.memory.encode_phases`); the token of
cell (i, j) of the image shifted by (dy, dx) pixels sits at pixel ``stride * j + (stride - 1) / 2 + dx`` (and the
same in y), so every token's features match its exact 3D position; p**2 x the tokens.

Read: the tokens are splatted (bilinear, soft z-buffer, :func:`~mirage.memory.splat.splat_points`) into the
latent grid of every *latent* frame of a chunk at once. Write: generated latent frames add tokens where content was
newly revealed, after their depth has been aligned to the memory (:mod:`mirage.memory.align`); voxel
de-duplication and a token budget keep the cloud bounded. See ``docs/memory.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mirage._check import check_shape
from mirage.camera import (
    check_poses,
    intrinsics_to_latent,
    pixel_grid,
    transform_points,
    unproject_to_cam,
)
from mirage.errors import InputError, MemoryFileError
from mirage.memory.files import check_header, load_store, save_store, to_uint8, write_ply
from mirage.memory.splat import (
    MemoryConfig,
    Splat,
    check_intrinsics,
    footprint_depth,
    grid_to_world,
    invalid_depth,
    latent_frame_indices,
    pool_any,
    splat_points,
)
from mirage.memory.store import PendingWrite, PointStore
from mirage.memory.types import MemoryKind, MemoryRead, MemoryStats, WriteStats
from mirage.memory.writeback import DepthSource, ViewDepth, integrate_views, view_depth

logger = logging.getLogger("mirage")


@dataclass(frozen=True)
class InitReport:
    """What building a memory from the first view did.

    Attributes:
        tokens: tokens stored.
        invalid_pixels: depth pixels that were NaN, inf or <= 0 (ignored).
        rejected_tokens: tokens not stored because no pixel of their footprint had a valid depth.
        voxel_size: the de-duplication voxel in world units (resolved when the config said auto).
        warning: one line when something was masked out, else None.
    """

    tokens: int
    invalid_pixels: int
    rejected_tokens: int
    voxel_size: float
    warning: str | None = None


class LatentMemory:
    """Tokens of a latent space in world space (also the point store of :class:`~mirage.memory.rgb.RGBMemory`,
    which composes one of these on the pixel grid: ``stride = 1``, colours as features).

    Build it with :func:`mirage.memory.create_memory` or :meth:`from_view`; the constructor takes a ready store.

    Attributes:
        kind: :attr:`MemoryKind.LATENT`.
        store: the points (xyz float32, features in the model dtype, birth).
        stride: spatial stride of the token grid relative to the image (8 for Wan / TAESD).
        temporal_stride: pixel frames per latent frame (4 for Wan, 1 for image VAEs).
        image_size: (H, W) of the pixel grid the intrinsics refer to.
        config: :class:`MemoryConfig`; voxel_size: the resolved voxel size.
        init_report: :class:`InitReport` of the first view (None after :meth:`load`).
    """

    kind = MemoryKind.LATENT

    def __init__(
        self,
        store: PointStore,
        *,
        stride: int,
        temporal_stride: int,
        image_size: tuple[int, int],
        config: MemoryConfig,
        voxel_size: float,
        model_id: str = "",
        writes: int = 0,
        init_report: InitReport | None = None,
    ):
        self.store = store
        self.stride = int(stride)
        self.temporal_stride = int(temporal_stride)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.config = config
        self.voxel_size = float(voxel_size)
        self.model_id = model_id
        self.writes = int(writes)
        self.init_report = init_report

    # ----------------------------------------------------------------------------------------------------------
    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the token grid."""
        return self.image_size[0] // self.stride, self.image_size[1] // self.stride

    @property
    def channels(self) -> int:
        return int(self.store.features.shape[1])

    @classmethod
    def from_view(
        cls,
        latents: torch.Tensor,
        depth: torch.Tensor,
        K: torch.Tensor,
        c2w: torch.Tensor,
        *,
        stride: int,
        temporal_stride: int,
        config: MemoryConfig,
        model_id: str = "",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        phase_latents: dict[tuple[int, int], torch.Tensor] | None = None,
    ) -> LatentMemory:
        """A memory holding one token per cell of ``latents`` (tokens with no valid depth are left out and counted),
        and with ``config.phases`` p > 1 one more token per cell of every shifted encoding in ``phase_latents``.

        Args:
            latents: (C, h, w) VAE-normalised latents of the input image (or colours, C=3, stride 1); or
                (T, C, h, w), the latents of a *static clip* of the image (``T`` latent slots of a video VAE, e.g.
                ``encode_video(image repeated 4(T-1)+1 times)``): slot 0 becomes the tokens' ``features``, slots
                1..T-1 their steady-slot features (``PointStore.slot_features``), which reads in latent slot t >= 1
                of a chunk use (see ``docs/memory.md``).
            depth: (H, W) z-depth in world units (metres where known), ``H = h * stride``; NaN/inf/<=0 are masked.
            K: (3, 3) pixel intrinsics of the (H, W) image.
            c2w: (4, 4) camera-to-world of the input view, OpenCV axes.
            stride, temporal_stride: the VAE's strides.
            config: :class:`MemoryConfig`.
            dtype: feature dtype (default: ``latents.dtype``); positions are always float32.
            device: where the cloud lives (default: ``latents.device``).
            phase_latents: polyphase only (required iff ``config.phases`` > 1): ``{(dy, dx): (C, h, w)}`` (or
                (T, C, h, w), static clips, shaped like ``latents``), the latents of the image shifted up/left by (dy, dx) pixels (crop + replicate the bottom/right edge,
                :func:`mirage.memory.encode_phases`), for every dy, dx in ``0, stride/p, ..., stride - stride/p``
                except (0, 0) (that is ``latents``; if present it is ignored). Depth is shifted the same way; a
                token whose centre falls outside the image (offsets > stride / 2, last row/column) is left out.
        """
        if latents.ndim == 3:
            latents = latents[None]  # (1, C, h, w): one slot
        check_shape(latents, ("T", "C", "h", "w"), "latents")
        check_shape(depth, ("H", "W"), "depth")
        if stride < 1:
            raise InputError(f"stride: {stride} must be >= 1")
        offsets = phase_offsets(stride, config.phases)
        if config.phases == 1 and phase_latents:
            raise InputError("phase_latents: given, but memory phases is 1; set MemoryConfig(phases=2 or 4) or drop them")
        if config.phases > 1:
            if phase_latents is None:
                raise InputError(
                    f"phase_latents: memory phases is {config.phases}, so the latents of the shifted images are "
                    "needed; compute them with mirage.memory.encode_phases(vae, image, phases)"
                )
            missing = [o for o in offsets if o != (0, 0) and o not in phase_latents]
            if missing:
                raise InputError(
                    f"phase_latents: offset(s) {missing} missing for {config.phases} phases at stride {stride}; "
                    "pass every (dy, dx) of encode_phases"
                )
            for o in offsets[1:]:
                lat_o = phase_latents[o]
                check_shape(lat_o if lat_o.ndim == 4 else lat_o[None], tuple(latents.shape), f"phase_latents[{o}]")
        n_slots, C, h, w = latents.shape
        H, W = depth.shape
        if (H, W) != (h * stride, w * stride):
            raise InputError(
                f"depth: size {W}x{H} does not match latents {w}x{h} at stride {stride} "
                f"(expected {w * stride}x{h * stride}); resize the depth map to the image"
            )
        check_intrinsics(K, H, W, "K")
        check_shape(c2w, (4, 4), "c2w")
        check_poses(c2w[None].double(), "c2w")
        device = torch.device(device) if device is not None else latents.device
        dtype = dtype or latents.dtype
        depth = depth.to(device)
        n_bad_px = int(invalid_depth(depth).sum())
        d_grid = footprint_depth(depth[None], stride, config.footprint_depth)  # (1, h, w)
        K_grid = intrinsics_to_latent(K.to(device).double(), stride).float()[None]  # (1, 3, 3)
        c2w_ = c2w.to(device).float()[None]
        ok = ~torch.isnan(d_grid.reshape(-1))  # (h*w,)
        xyz = grid_to_world(d_grid, K_grid, c2w_)[0]  # (h*w, 3)
        def tokens(lat: torch.Tensor) -> torch.Tensor:  # (T, C, h, w) -> (h*w, T, C), row-major cells
            return lat.to(device).reshape(-1, C, h * w).permute(2, 0, 1)

        feats = tokens(latents)  # (h*w, T, C)
        if config.phases > 1:  # phase-major order: phase (0, 0) first, then row-major offsets
            xs, fs, oks = [xyz], [feats], [ok]
            for dy, dx in offsets[1:]:
                d_shift = footprint_depth(shift_image(depth[None], dy, dx), stride, config.footprint_depth)  # (1, h, w)
                uv = pixel_grid(h, w, device=device).reshape(-1, 2) + torch.tensor(
                    [dx / stride, dy / stride], device=device
                )  # (h*w, 2) token-grid coordinates of the shifted cell centres
                inside = (uv[:, 0] * stride + (stride - 1) / 2 <= W - 0.5) & (uv[:, 1] * stride + (stride - 1) / 2 <= H - 0.5)
                xyz_cam = unproject_to_cam(uv[None], d_shift.reshape(1, -1), K_grid)  # (1, h*w, 3)
                xs.append(transform_points(c2w_, xyz_cam)[0])
                lat_o = phase_latents[(dy, dx)]
                fs.append(tokens(lat_o if lat_o.ndim == 4 else lat_o[None]))
                oks.append(~torch.isnan(d_shift.reshape(-1)) & inside)
            xyz, feats, ok = torch.cat(xs), torch.cat(fs), torch.cat(oks)  # (p*p*h*w, ...)
        n_rej = int((~ok).sum())
        if not bool(ok.any()):
            raise InputError("depth: no valid value (all NaN, inf or <= 0); pass a depth map with positive depths")
        if config.voxel_size is None:
            voxel = float(d_grid.reshape(-1).nanmedian()) / float(K_grid[0, 0, 0])
        else:
            voxel = float(config.voxel_size)
        n_ok = int(ok.sum())
        feats = feats[ok].to(dtype)  # (n, T, C)
        slot_features = slot_row = None
        if n_slots > 1:  # steady-slot features: row i of slot_features is token i's
            slot_features = feats[:, 1:].contiguous()  # (n, T - 1, C)
            slot_row = torch.arange(n_ok, dtype=torch.long, device=device)
        store = PointStore(xyz[ok].float(), feats[:, 0].contiguous(),
                           torch.zeros(n_ok, dtype=torch.long, device=device), slot_features, slot_row)
        warning = None
        if n_bad_px:
            warning = (
                f"depth: {n_bad_px} pixel(s) were NaN, inf or <= 0 and were ignored; "
                f"{n_rej} token(s) had no valid depth and were not stored"
            )
            logger.warning(warning)
        report = InitReport(len(store), n_bad_px, n_rej, voxel, warning)
        mem = cls(store, stride=stride, temporal_stride=temporal_stride, image_size=(H, W), config=config,
                  voxel_size=voxel, model_id=model_id, init_report=report)
        mem.store.trim(config.max_tokens)
        return mem

    # ----------------------------------------------------------------------------------------------------------
    def render_grid(self, K_grid: torch.Tensor, w2c: torch.Tensor, *, features: bool = True,
                    slots: torch.Tensor | None = None, pending: PendingWrite | None = None) -> Splat:
        """Splat the store into B cameras on the token grid. ``K_grid``: (B, 3, 3) token-grid intrinsics;
        ``w2c``: (B, 4, 4); ``slots``: (B,) int64 latent slot of each camera in its chunk (default: all 0, the
        tokens' own ``features``; see :meth:`PointStore.features_at`); ``pending``: draw the store as that write
        will leave it (depth and holes only, ``features=False``). No host sync. Returns :class:`Splat` with
        (B, C, h, w) float32 features."""
        h, w = self.grid_size
        dev = self.store.xyz.device
        c = self.config
        xyz, valid, init = self.store.xyz, None, self.store.birth == 0
        if pending is not None:
            if features:
                raise InputError("render_grid: a pending write is drawn without features; pass features=False")
            xyz, valid = pending.points()
            init = torch.cat([init, torch.zeros(xyz.shape[0] - len(self.store), dtype=torch.bool, device=dev)])
        weights = strong = None
        if c.phases > 1:  # init tokens are p*p times denser than written ones: weigh them so coverage stays ~1
            weights = torch.where(init, 1.0 / c.phases**2, 1.0).float()  # (N,)
            strong = (1.0 - 0.5 / c.phases) ** 2  # only a token within half the token spacing occludes a cell
        feats = None
        if features:
            feats = self.store.features if slots is None else self.store.features_at(slots)  # (N, C) or (B, N, C)
        return splat_points(
            xyz, feats, K_grid.to(dev).float(), w2c.to(dev).float(),
            h, w, mode=c.splat, depth_tolerance=c.depth_tolerance, min_coverage=c.min_coverage, near=c.near,
            valid=valid, weights=weights, strong_weight=strong, tent_radius=1.0 / c.phases,
        )

    def read(self, K: torch.Tensor, w2c: torch.Tensor) -> MemoryRead:
        """The memory seen from the latent frames of a chunk. No host sync (poses are not validated here: a
        non-finite pose renders as all holes).

        Args:
            K: (F, 3, 3) pixel intrinsics of the (H, W) image grid.
            w2c: (F, 4, 4) world-to-camera, OpenCV; F = ``temporal_stride * k + 1`` pixel frames.
        Returns:
            :class:`MemoryRead` with latents (T, C, h, w) in the store's dtype (0 in holes), holes (T, h, w) bool,
            depth (T, h, w) float32 (0 in holes); T = len(latent_frame_indices(F, temporal_stride)).
        """
        check_shape(K, ("F", 3, 3), "K")
        check_shape(w2c, (K.shape[0], 4, 4), "w2c")
        latent_frame_indices(K.shape[0], self.temporal_stride)  # validates F = temporal_stride * k + 1
        ts = self.temporal_stride  # latent frames are pixel frames 0, ts, 2 ts, ...: a strided view, no index copy
        K_grid = intrinsics_to_latent(K[::ts].float(), self.stride)
        # latent slot t of the chunk reads slot-t features: slot 0 the single-image kind, t >= 1 the steady kind
        sp = self.render_grid(K_grid, w2c.to(K.device)[::ts], slots=torch.arange(K_grid.shape[0], device=self.store.xyz.device))
        return MemoryRead(latents=sp.features.to(self.store.features.dtype), holes=sp.holes, depth=sp.depth)

    # ----------------------------------------------------------------------------------------------------------
    def write(
        self,
        frames: torch.Tensor,
        latents: torch.Tensor,
        depth: torch.Tensor | DepthSource,
        K: torch.Tensor,
        c2w: torch.Tensor,
        region: torch.Tensor,
    ) -> WriteStats:
        """Add the tokens of newly revealed regions of a generated chunk (uses its latent frames; the order and which
        frames get depth: :func:`~mirage.memory.writeback.integrate_views`).

        Args:
            frames: (F, 3, H, W) decoded pixels in [-1, 1] (shape-checked only; the latent memory stores latents).
            latents: (T, C, h, w) latents of the chunk, T = len(latent_frame_indices(F, temporal_stride)).
            depth: RAW depth-model output, aligned to the memory here: (F, H, W) of the pixel frames, (T, H, W) of
                the written frames only (:meth:`write_frame_indices`), or a
                :data:`~mirage.memory.writeback.DepthSource` called (at most twice) with the pixel frames whose
                depth is needed: only the views that add something.
            K: (F, 3, 3) pixel intrinsics; c2w: (F, 4, 4) camera-to-world, OpenCV.
            region: (F, H, W) or (T, h, w) bool, where content is newly revealed (a latent cell is in the region
                when any of its pixels is).
        Returns:
            :class:`WriteStats`.
        """
        F = frames.shape[0] if frames.ndim == 4 else -1
        H, W = self.image_size
        h, w = self.grid_size
        check_shape(frames, ("F", 3, H, W), "frames")
        idx = latent_frame_indices(F, self.temporal_stride)
        T = len(idx)
        depth_of = view_depth(depth, idx, F, (H, W))
        check_shape(latents, (T, self.channels, h, w), "latents")
        check_shape(K, (F, 3, 3), "K")
        check_shape(c2w, (F, 4, 4), "c2w")
        if tuple(region.shape) == (F, H, W):
            region_grid = pool_any(region[idx].bool(), self.stride)
        elif tuple(region.shape) == (T, h, w):
            region_grid = region.bool()
        else:
            raise InputError(f"region: expected shape {(F, H, W)} or {(T, h, w)}, got {tuple(region.shape)}")
        return self.integrate_views(latents, depth_of, K[idx], c2w[idx], region_grid)

    def write_frame_indices(self, num_frames: int) -> list[int]:
        """The pixel frames of a chunk that :meth:`write` may ask depth for (its latent frames' poses); a write asks
        only for those that add something (``WriteStats.depth_views``)."""
        return latent_frame_indices(num_frames, self.temporal_stride)

    def integrate_views(
        self,
        features_grid: torch.Tensor,
        depth_raw: torch.Tensor | ViewDepth,
        K: torch.Tensor,
        c2w: torch.Tensor,
        region_grid: torch.Tensor,
    ) -> WriteStats:
        """Write B views into the store (shared by both memories; may sync, runs once per chunk):
        :func:`mirage.memory.writeback.integrate_views`.

        Args:
            features_grid: (B, C, h, w) features of the views on the token grid.
            depth_raw: (B, H, W) raw depth, or view indices -> (n, H, W) raw depth of those views.
            K: (B, 3, 3) pixel intrinsics; c2w: (B, 4, 4).
            region_grid: (B, h, w) bool.
        """
        if isinstance(depth_raw, torch.Tensor):
            check_shape(depth_raw, (features_grid.shape[0], *self.image_size), "depth")
            raw = depth_raw
            depth_raw = lambda views: raw[views]  # noqa: E731
        return integrate_views(self, features_grid, depth_raw, K, c2w, region_grid)

    # ----------------------------------------------------------------------------------------------------------
    def stats(self) -> MemoryStats:
        lo, hi = self.store.bounds()
        return MemoryStats(tokens=len(self.store), bytes=self.store.nbytes, bounds_min=lo, bounds_max=hi)

    def header(self) -> dict[str, Any]:
        """The JSON header of a saved file (format and version are added by the writer)."""
        return {
            "kind": self.kind.value,
            "latent_channels": self.channels,
            "stride": self.stride,
            "temporal_stride": self.temporal_stride,
            "model_id": self.model_id,
            "image_size": list(self.image_size),
            "voxel_size": self.voxel_size,
            "writes": self.writes,
            "config": self.config.to_dict(),
        }

    def save(self, path: str | Path) -> None:
        """Write the memory as safetensors + JSON header, atomically (see ``docs/memory.md``)."""
        save_store(path, self.store, self.header())

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        latent_channels: int | None = None,
        stride: int | None = None,
        temporal_stride: int | None = None,
        model_id: str | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> LatentMemory:
        """Load a file written by :meth:`save`. The expected latent space (any argument not None) must match the
        file's, else :class:`MemoryFileError`; a corrupt file is a :class:`MemoryFileError` too."""
        store, header = load_store(path, device)
        check_header(header, path, {"kind": cls.kind.value, "latent_channels": latent_channels, "stride": stride,
                                    "temporal_stride": temporal_stride, "model_id": model_id})
        try:
            config = MemoryConfig.from_dict(header["config"], where=f"memory file {path}")
            mem = cls(store, stride=header["stride"], temporal_stride=header["temporal_stride"],
                      image_size=tuple(header["image_size"]), config=config, voxel_size=header["voxel_size"],
                      model_id=header["model_id"], writes=header["writes"])
        except (KeyError, TypeError, InputError) as e:
            raise MemoryFileError(f"memory file {path}: header is incomplete or invalid ({e}); the file is corrupt") from None
        if mem.store.features.shape[1] != header.get("latent_channels"):
            raise MemoryFileError(f"memory file {path}: feature channels disagree with the header; the file is corrupt")
        if dtype is not None:
            mem.store.features = mem.store.features.to(dtype)
            if mem.store.slot_features is not None:
                mem.store.slot_features = mem.store.slot_features.to(dtype)
        return mem

    def export_ply(self, path: str | Path, decode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Write the tokens as a coloured binary .ply for point-cloud viewers.

        Colours: with ``decode``, each token is decoded on its own: ``decode(latents (n, C, 1, 1)) -> rgb (n, 3, ...)``
        in [-1, 1], averaged over its spatial dims (batches of 4096 tokens). Without it, the first three latent
        channels are min-max normalised to false colours (a debugging view, logged as such).
        """
        feats = self.store.features
        if decode is not None:
            cols = []
            for i in range(0, feats.shape[0], 4096):
                out = decode(feats[i : i + 4096, :, None, None])
                if out.ndim < 2 or out.shape[0] != feats[i : i + 4096].shape[0] or out.shape[1] != 3:
                    raise InputError(f"export_ply decode: returned shape {tuple(out.shape)}, expected (n, 3, ...)")
                cols.append(out.float().reshape(out.shape[0], 3, -1).mean(-1))
            rgb = to_uint8(torch.cat(cols)) if cols else torch.zeros(0, 3, dtype=torch.uint8)
        else:
            logger.info("export_ply: no decoder given; colouring tokens by their first 3 latent channels")
            f = feats[:, :3].float()
            if f.shape[1] < 3:
                f = torch.cat([f, f[:, :1].expand(-1, 3 - f.shape[1])], dim=1)
            lo, hi = f.amin(0, keepdim=True), f.amax(0, keepdim=True)
            rgb = to_uint8((f - lo) / (hi - lo).clamp_min(1e-12) * 2 - 1)
        write_ply(path, self.store.xyz, rgb)


def phase_offsets(stride: int, phases: int) -> list[tuple[int, int]]:
    """The (dy, dx) pixel offsets of a polyphase memory, row-major from (0, 0): every multiple of
    ``stride // phases`` below ``stride`` on each axis (``phases**2`` offsets). ``stride`` must be divisible."""
    if phases < 1 or stride % phases:
        raise InputError(f"memory phases: {phases} does not divide the latent stride {stride}; use 1, 2 or 4")
    step = stride // phases
    return [(dy, dx) for dy in range(0, stride, step) for dx in range(0, stride, step)]


def shift_image(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift an image up/left by (dy, dx) >= 0 pixels: crop the first dy rows / dx columns, then replicate the last
    row/column to keep the size. ``x``: (..., H, W) any dtype -> same shape; ``out[..., y, x] =
    x[..., min(y + dy, H - 1), min(x + dx, W - 1)]``."""
    H, W = x.shape[-2:]
    if dy < 0 or dx < 0 or dy >= H or dx >= W:
        raise InputError(f"shift: offset ({dy}, {dx}) must be >= 0 and smaller than the {W}x{H} image")
    rows = torch.arange(H, device=x.device).add(dy).clamp(max=H - 1)
    cols = torch.arange(W, device=x.device).add(dx).clamp(max=W - 1)
    return x.index_select(-2, rows).index_select(-1, cols)
