"""The RGB point-cloud memory: the baseline the latent memory is measured against.

One coloured point per pixel. A read renders every pixel frame of a chunk at full resolution with the *same* splat
and z-buffer rules as the latent memory (it composes a :class:`~mirage.memory.latent.LatentMemory` on the pixel
grid, ``stride = 1``, colours as features) and then VAE-encodes the rendered video with the ``encode_video``
callable it was built with. Pixel holes are pooled to the latent grid: a latent cell is a hole when the *majority*
(more than half) of its ``stride x stride`` pixels over its group of pixel frames are holes (latent frame 0 <- pixel
frame 0; latent frame t > 0 <- pixel frames ``ts (t-1) + 1 .. ts t``, the causal VAE's grouping).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as Fnn

from mirage._check import check_shape
from mirage.errors import InputError, MemoryFileError, ModelError
from mirage.memory.files import check_header, load_store, save_store, to_uint8, write_ply
from mirage.memory.latent import InitReport, LatentMemory
from mirage.memory.splat import (
    MemoryConfig,
    latent_frame_indices,
)
from mirage.memory.types import MemoryKind, MemoryRead, MemoryStats, WriteStats
from mirage.memory.writeback import DepthSource, view_depth

logger = logging.getLogger("mirage")

EncodeVideo = Callable[[torch.Tensor], torch.Tensor]  # (F, 3, H, W) in [-1, 1] -> (T, C, h, w)


class RGBMemory:
    """Coloured points rendered to pixels and VAE-encoded on every read. Build with
    :func:`mirage.memory.create_memory` or :meth:`from_view`.

    Attributes:
        kind: :attr:`MemoryKind.RGB`.
        points: the composed pixel-grid point memory (xyz float32, colours float32 in [-1, 1]).
        stride, temporal_stride, latent_channels, model_id: the latent space ``encode_video`` produces.
        latent_dtype: dtype of the latents returned by :meth:`read`.
    """

    kind = MemoryKind.RGB

    def __init__(
        self,
        points: LatentMemory,
        *,
        encode_video: EncodeVideo,
        stride: int,
        temporal_stride: int,
        latent_channels: int,
        model_id: str = "",
        latent_dtype: torch.dtype = torch.float32,
    ):
        if not callable(encode_video):
            raise InputError("encode_video: the RGB memory needs a callable (F, 3, H, W) -> (T, C, h, w)")
        self.points = points
        self.encode_video = encode_video
        self.stride = int(stride)
        self.temporal_stride = int(temporal_stride)
        self.latent_channels = int(latent_channels)
        self.model_id = model_id
        self.latent_dtype = latent_dtype

    @property
    def config(self) -> MemoryConfig:
        return self.points.config

    @property
    def init_report(self) -> InitReport | None:
        return self.points.init_report

    @classmethod
    def from_view(
        cls,
        image: torch.Tensor,
        depth: torch.Tensor,
        K: torch.Tensor,
        c2w: torch.Tensor,
        *,
        encode_video: EncodeVideo,
        stride: int,
        temporal_stride: int,
        latent_channels: int,
        config: MemoryConfig,
        model_id: str = "",
        latent_dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> RGBMemory:
        """One point per pixel of ``image`` (3, H, W) in [-1, 1] at ``depth`` (H, W) (invalid depths masked and
        counted in :attr:`init_report`); ``K`` (3, 3) pixel intrinsics, ``c2w`` (4, 4). Colours are float32.
        The auto voxel size is the pixel footprint at the median depth (median depth / pixel focal)."""
        check_shape(image, (3, "H", "W"), "image")
        check_shape(depth, (image.shape[1], image.shape[2]), "depth")
        H, W = depth.shape
        if H % stride or W % stride:
            raise InputError(f"image: size {W}x{H} is not a multiple of the VAE stride {stride}; resize to a multiple")
        points = LatentMemory.from_view(
            image.float(), depth, K, c2w, stride=1, temporal_stride=1, config=config, model_id=model_id,
            dtype=torch.float32, device=device,
        )
        return cls(points, encode_video=encode_video, stride=stride, temporal_stride=temporal_stride,
                   latent_channels=latent_channels, model_id=model_id, latent_dtype=latent_dtype)

    # ----------------------------------------------------------------------------------------------------------
    def read(self, K: torch.Tensor, w2c: torch.Tensor) -> MemoryRead:
        """Render all F pixel frames, encode them, pool the holes to the latent grid. No host sync of its own.

        Args:
            K: (F, 3, 3) pixel intrinsics of the (H, W) image; w2c: (F, 4, 4), OpenCV.
        Returns:
            :class:`MemoryRead`: latents (T, C, h, w) from ``encode_video``, holes (T, h, w) (majority rule),
            depth (T, h, w) float32 (mean over the covered pixels of each cell at the latent frame's pose, 0 in
            holes), rgb (F, 3, H, W) in [-1, 1] (0 in holes), pixel_holes (F, H, W).
        """
        check_shape(K, ("F", 3, 3), "K")
        check_shape(w2c, (K.shape[0], 4, 4), "w2c")
        F = K.shape[0]
        idx = latent_frame_indices(F, self.temporal_stride)
        T, s = len(idx), self.stride
        H, W = self.points.image_size
        h, w = H // s, W // s
        sp = self.points.render_grid(K, w2c)  # pixel grid: K is already the grid's intrinsics
        rgb = sp.features  # (F, 3, H, W), 0 in holes
        latents = self.encode_video(rgb)
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != (T, self.latent_channels, h, w):
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ModelError(f"encode_video: returned {got} for {F} frames, expected {(T, self.latent_channels, h, w)}")
        hole_frac = Fnn.avg_pool2d(sp.holes.float()[:, None], s)[:, 0]  # (F, h, w)
        if T > 1:
            rest = hole_frac[1:].reshape(T - 1, self.temporal_stride, h, w).mean(1)  # (T-1, h, w)
            hole_frac = torch.cat([hole_frac[:1], rest])
        holes = hole_frac > 0.5  # (T, h, w): majority of the cell's pixels are holes
        idx_t = torch.tensor(idx, device=sp.depth.device)
        cov = (~sp.holes[idx_t]).float()[:, None]  # (T, 1, H, W)
        dsum = Fnn.avg_pool2d(sp.depth[idx_t][:, None] * cov, s)[:, 0]
        csum = Fnn.avg_pool2d(cov, s)[:, 0]
        depth = torch.where(holes | (csum == 0), 0.0, dsum / csum.clamp_min(1e-12))
        return MemoryRead(latents=latents.to(self.latent_dtype), holes=holes, depth=depth, rgb=rgb,
                          pixel_holes=sp.holes)

    def write(
        self,
        frames: torch.Tensor,
        latents: torch.Tensor,
        depth: torch.Tensor | DepthSource,
        K: torch.Tensor,
        c2w: torch.Tensor,
        region: torch.Tensor,
    ) -> WriteStats:
        """Add points from the decoded pixel frames where content is newly revealed.

        The frames of :meth:`write_frame_indices` are the candidates (the latent frames' poses, the same frames the
        latent memory writes, in the same order: :func:`~mirage.memory.writeback.integrate_views`), so both memories
        pay for the same depth estimates and differ only in what they store: a full image of coloured points per
        written frame here, a latent map of tokens there.

        Args:
            frames: (F, 3, H, W) decoded pixels in [-1, 1] (the colours stored).
            latents: (T, C, h, w), shape-checked only.
            depth: RAW depth-model output (aligned to the memory per frame): (F, H, W), only the written frames'
                (T, H, W), or a :data:`~mirage.memory.writeback.DepthSource` asked for the frames that add something.
            K: (F, 3, 3) pixel intrinsics; c2w: (F, 4, 4).
            region: (F, H, W) bool, or (T, h, w) bool expanded to the pixels of each latent cell.
        """
        H, W = self.points.image_size
        F = frames.shape[0] if frames.ndim == 4 else -1
        check_shape(frames, ("F", 3, H, W), "frames")
        idx = self.write_frame_indices(F)
        T = len(idx)
        depth_of = view_depth(depth, idx, F, (H, W))
        s = self.stride
        check_shape(latents, (T, self.latent_channels, H // s, W // s), "latents")
        check_shape(K, (F, 3, 3), "K")
        check_shape(c2w, (F, 4, 4), "c2w")
        if tuple(region.shape) == (F, H, W):
            region_px = region.bool()[idx]
        elif tuple(region.shape) == (T, H // s, W // s):
            region_px = region.bool().repeat_interleave(s, 1).repeat_interleave(s, 2)  # (T, H, W)
        else:
            raise InputError(f"region: expected shape {(F, H, W)} or {(T, H // s, W // s)}, got {tuple(region.shape)}")
        return self.points.integrate_views(frames[idx].float(), depth_of, K[idx], c2w[idx], region_px)

    def write_frame_indices(self, num_frames: int) -> list[int]:
        """The pixel frames of a chunk that :meth:`write` stores: the latent frames' poses (as the latent memory)."""
        return latent_frame_indices(num_frames, self.temporal_stride)

    # ----------------------------------------------------------------------------------------------------------
    def stats(self) -> MemoryStats:
        return self.points.stats()

    def save(self, path: str | Path) -> None:
        """safetensors + JSON header (kind "rgb"; stride/temporal_stride/latent_channels/model_id of the encoder)."""
        header = self.points.header()
        header.update(kind=self.kind.value, latent_channels=self.latent_channels, stride=self.stride,
                      temporal_stride=self.temporal_stride, model_id=self.model_id)
        save_store(path, self.points.store, header)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        encode_video: EncodeVideo,
        latent_channels: int | None = None,
        stride: int | None = None,
        temporal_stride: int | None = None,
        model_id: str | None = None,
        device: torch.device | str = "cpu",
        latent_dtype: torch.dtype = torch.float32,
    ) -> RGBMemory:
        """Load a file written by :meth:`save`; latent-space mismatch or corruption -> :class:`MemoryFileError`."""
        store, header = load_store(path, device)
        check_header(header, path, {"kind": cls.kind.value, "latent_channels": latent_channels, "stride": stride,
                                    "temporal_stride": temporal_stride, "model_id": model_id})
        try:
            config = MemoryConfig.from_dict(header["config"], where=f"memory file {path}")
            points = LatentMemory(store, stride=1, temporal_stride=1, image_size=tuple(header["image_size"]),
                                  config=config, voxel_size=header["voxel_size"], model_id=header["model_id"],
                                  writes=header["writes"])
            return cls(points, encode_video=encode_video, stride=header["stride"],
                       temporal_stride=header["temporal_stride"], latent_channels=header["latent_channels"],
                       model_id=header["model_id"], latent_dtype=latent_dtype)
        except (KeyError, TypeError, InputError) as e:
            raise MemoryFileError(f"memory file {path}: header is incomplete or invalid ({e}); the file is corrupt") from None

    def export_ply(self, path: str | Path, decode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """The points as a coloured binary .ply (their own colours; ``decode`` is accepted for the common
        interface and not needed)."""
        write_ply(path, self.points.store.xyz, to_uint8(self.points.store.features[:, :3]))
