"""Spatial memories: the 3D cache a chunk is read from and written back to.

Two implementations share one interface (:class:`SpatialMemory`) so the pipeline and the benchmark can swap them:

- :class:`LatentMemory` (``MemoryKind.LATENT``, mirage's design): VAE latent tokens in world space, splatted
  straight into the latent grid of the target views;
- :class:`RGBMemory` (``MemoryKind.RGB``, the baseline): coloured points rendered to pixels, then VAE-encoded.

Build either with :func:`create_memory`; load a saved one with :func:`load_memory`. Design: ``docs/memory.md``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from mirage._check import check_shape
from mirage.errors import InputError
from mirage.latent_space import LatentSpace
from mirage.memory.align import AlignMode, DepthFit, fit_depth
from mirage.memory.files import load_store
from mirage.memory.latent import InitReport, LatentMemory, phase_offsets, shift_image
from mirage.memory.rgb import RGBMemory
from mirage.memory.splat import (
    FootprintDepth,
    MemoryConfig,
    SplatMode,
    VoxelWinner,
    latent_frame_indices,
    splat_points,
)
from mirage.memory.types import MemoryKind, MemoryRead, MemoryStats, WriteStats

logger = logging.getLogger("mirage")


@runtime_checkable
class SpatialMemory(Protocol):
    """What the pipeline needs from a memory (both kinds implement it)."""

    kind: MemoryKind

    def read(self, K: torch.Tensor, w2c: torch.Tensor) -> MemoryRead:
        """K: (F, 3, 3) pixel intrinsics; w2c: (F, 4, 4) OpenCV -> latents (T, C, h, w), holes, depth (T, h, w)."""
        ...

    def write(self, frames: torch.Tensor, latents: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
              c2w: torch.Tensor, region: torch.Tensor) -> WriteStats:
        """frames (F, 3, H, W) [-1, 1]; latents (T, C, h, w); depth (F, H, W) raw; K (F, 3, 3); c2w (F, 4, 4);
        region (F, H, W) or (T, h, w) bool. ``depth`` may also hold only the frames of
        :meth:`write_frame_indices`."""
        ...

    def write_frame_indices(self, num_frames: int) -> list[int]:
        """Which pixel frames of an F-frame chunk :meth:`write` needs depth for."""
        ...

    def stats(self) -> MemoryStats: ...

    def save(self, path: str | Path) -> None: ...

    def export_ply(self, path: str | Path, decode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None: ...


def create_memory(
    kind: MemoryKind,
    *,
    image: torch.Tensor,
    latents: torch.Tensor,
    depth: torch.Tensor,
    K: torch.Tensor,
    c2w: torch.Tensor,
    space: LatentSpace,
    config: MemoryConfig,
    encode_video: Callable[[torch.Tensor], torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    phase_latents: dict[tuple[int, int], torch.Tensor] | None = None,
) -> SpatialMemory:
    """A memory of the input view.

    Args:
        kind: which memory (:class:`MemoryKind`).
        image: (3, H, W) float in [-1, 1], the input image (the RGB memory's colours).
        latents: (C, h, w) its VAE-normalised latents, ``H = h * stride`` (the latent memory's tokens; the RGB
            memory only takes C from it); or (T, C, h, w), the latents of a static clip of the image
            (:func:`encode_static_clip`): the latent memory's tokens then keep a feature per latent slot.
        depth: (H, W) z-depth in world units; NaN/inf/<=0 are masked and counted (``memory.init_report``).
        K: (3, 3) pixel intrinsics of the image; c2w: (4, 4) camera-to-world of the input view, OpenCV.
        space: the VAE's latent space (:attr:`mirage.vae.VAE.latent_space`: channels, strides, model id; the id is
            stored in saved files and checked on load). Its ``channels`` must be ``latents``' C.
        config: :class:`MemoryConfig`.
        encode_video: RGB memory only (required there): (F, 3, H, W) in [-1, 1] -> latents (T, C, h, w).
        dtype: latent dtype (default ``latents.dtype``); device: where the cloud lives (default ``latents.device``).
        phase_latents: latent memory with ``config.phases`` > 1 only: ``{(dy, dx): (C, h, w)}`` (or (T, C, h, w),
            static clips shaped like ``latents``) latents of the image shifted by sub-stride offsets
            (:func:`encode_phases`; see
            :meth:`LatentMemory.from_view`). The RGB memory has no phases: it builds with ``phases = 1`` (logged).
    """
    kind = MemoryKind(kind)
    check_shape(image, (3, "H", "W"), "image")
    check_shape(latents, ("T", "C", "h", "w") if latents.ndim == 4 else ("C", "h", "w"), "latents")
    if space.channels != latents.shape[-3]:
        raise InputError(f"latents: {latents.shape[-3]} channels, but the latent space has {space.channels}; "
                         "pass the latents of the VAE the space belongs to")
    stride, temporal_stride, model_id = space.spatial_stride, space.temporal_stride, space.model_id
    if kind == MemoryKind.LATENT:
        return LatentMemory.from_view(latents, depth, K, c2w, stride=stride, temporal_stride=temporal_stride,
                                      config=config, model_id=model_id, dtype=dtype, device=device,
                                      phase_latents=phase_latents)
    if encode_video is None:
        raise InputError("memory rgb: needs an encode_video callable (the VAE encoder); pass encode_video=...")
    if config.phases != 1:
        logger.info("memory phases: %d -> 1 for the rgb memory (one point per pixel has no sub-stride phases)",
                    config.phases)
        config = dataclasses.replace(config, phases=1)
    return RGBMemory.from_view(image, depth, K, c2w, encode_video=encode_video, stride=stride,
                               temporal_stride=temporal_stride, latent_channels=latents.shape[-3], config=config,
                               model_id=model_id, latent_dtype=dtype or latents.dtype,
                               device=device if device is not None else latents.device)


def load_memory(
    path: str | Path,
    *,
    space: LatentSpace | None = None,
    encode_video: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> SpatialMemory:
    """Load a saved memory of either kind (the kind is read from the file); with ``space`` the file's latent space
    (channels, strides, model id) must be that one (else :class:`~mirage.errors.MemoryFileError`). An RGB memory
    needs ``encode_video``."""
    latent_channels = stride = temporal_stride = model_id = None
    if space is not None:
        latent_channels, stride, temporal_stride = space.channels, space.spatial_stride, space.temporal_stride
        model_id = space.model_id
    _, header = load_store(path, "cpu")
    if header.get("kind") == MemoryKind.RGB.value:
        if encode_video is None:
            raise InputError(f"memory file {path}: an RGB memory needs encode_video to be loaded; pass the encoder")
        return RGBMemory.load(path, encode_video=encode_video, latent_channels=latent_channels, stride=stride,
                              temporal_stride=temporal_stride, model_id=model_id, device=device)
    return LatentMemory.load(path, latent_channels=latent_channels, stride=stride, temporal_stride=temporal_stride,
                             model_id=model_id, device=device)


__all__ = [
    "AlignMode",
    "DepthFit",
    "FootprintDepth",
    "InitReport",
    "LatentMemory",
    "MemoryConfig",
    "MemoryKind",
    "MemoryRead",
    "MemoryStats",
    "RGBMemory",
    "SpatialMemory",
    "SplatMode",
    "VoxelWinner",
    "WriteStats",
    "create_memory",
    "fit_depth",
    "latent_frame_indices",
    "load_memory",
    "phase_offsets",
    "shift_image",
    "encode_phases",
    "encode_static_clip",
    "splat_points",
]


def encode_static_clip(vae: Any, images: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The latents a video VAE gives a clip that holds each image still for ``num_frames`` frames.

    A causal video VAE (Wan) encodes frame 0 alone into latent slot 0 and each following group of frames, with
    the earlier ones as context, into slot t >= 1; VACE learned its control stream from such encodes. So the
    latent memory's init tokens keep every slot of this clip, and a read in slot t of a chunk takes slot t's
    features: for a camera that does not move, the read *is* ``encode_video(image repeated)``, the stream
    ``WanVACEPipeline`` builds from that video (``docs/memory.md``). Slot 0 equals ``vae.encode_images``.

    Args:
        vae: a :class:`mirage.vae.VAE` with ``temporal_stride`` > 1.
        images: (P, 3, H, W) float in [-1, 1] (the image, or its polyphase shifts).
        num_frames: F = ``temporal_stride * k + 1``, the chunk length the slots are for.
    Returns:
        (P, T, C, H/stride, W/stride) normalised latents, T = ``vae.num_latent_frames(num_frames)``.
    """
    check_shape(images, ("P", 3, "H", "W"), "images")
    if vae.temporal_stride <= 1:
        raise InputError(f"vae {vae.source}: encodes frames one by one (temporal stride 1); a static clip has one "
                         "kind of latent there: use encode_images")
    return torch.stack([vae.encode_video(img[None].expand(num_frames, -1, -1, -1)) for img in images])


def encode_phases(vae: Any, image: torch.Tensor, phases: int, *, clip_frames: int = 1) -> dict[tuple[int, int], torch.Tensor]:
    """Latents of ``image`` at every sub-stride offset of a polyphase memory.

    The image shifted by (dy, dx) pixels is cropped by dy rows at the top and dx columns at the left and padded by
    replicating its last row/column (:func:`mirage.memory.shift_image`), so latent cell (i, j) of it covers source
    pixels ``stride * i + dy ..`` and its token sits at pixel ``stride * j + (stride - 1) / 2 + dx`` (and in y).

    Args:
        vae: a :class:`mirage.vae.VAE` (``spatial_stride``, ``encode_images``).
        image: (3, H, W) float in [-1, 1].
        phases: offsets per axis (1, 2 or 4): offsets are the multiples of ``stride / phases``.
        clip_frames: 1: encode each shifted image; F > 1: encode it as a static clip of F frames
            (:func:`encode_static_clip`, a video VAE's every latent slot).
    Returns:
        ``{(dy, dx): (C, H/stride, W/stride)}`` normalised latents for all ``phases**2`` offsets, (0, 0) included;
        ``(T, C, H/stride, W/stride)`` each with ``clip_frames`` > 1.
    """
    check_shape(image, (3, "H", "W"), "image")
    offsets = phase_offsets(int(vae.spatial_stride), phases)
    shifted = torch.stack([shift_image(image, dy, dx) for dy, dx in offsets])  # (p*p, 3, H, W)
    if clip_frames > 1:
        clips = encode_static_clip(vae, shifted, clip_frames)  # (p*p, T, C, h, w)
        return {o: clips[i] for i, o in enumerate(offsets)}
    lat = torch.cat([vae.encode_images(shifted[i : i + 4]) for i in range(0, len(offsets), 4)])  # (p*p, C, h, w)
    return {o: lat[i] for i, o in enumerate(offsets)}
