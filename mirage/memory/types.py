"""Types shared by every spatial memory (latent and RGB) and by the stages that consume their reads."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch


class MemoryKind(str, Enum):
    """Which 3D cache the pipeline keeps."""

    LATENT = "latent"  # tokens in the VAE's latent space (mirage's design)
    RGB = "rgb"  # coloured points, rendered to pixels and VAE-encoded on every read (the baseline)


@dataclass
class MemoryRead:
    """What a memory returns for a batch of target cameras (one chunk).

    Attributes:
        latents: (T, C, h, w) model dtype, VAE-normalised latents of the view (0 where ``holes``), one per
            *latent* frame of the chunk.
        holes: (T, h, w) bool, True where no stored content landed (latent grid).
        depth: (T, h, w) float32 z-depth of the front surface in scene units (0 where ``holes``).
        rgb: (F, 3, H, W) float in [-1, 1], the rendered pixels (RGB memory only; 0 in holes), one per *pixel*
            frame of the chunk; None for the latent memory.
        pixel_holes: (F, H, W) bool, pixel-resolution holes of ``rgb`` (RGB memory only).
    """

    latents: torch.Tensor
    holes: torch.Tensor
    depth: torch.Tensor
    rgb: torch.Tensor | None = None
    pixel_holes: torch.Tensor | None = None


@dataclass(frozen=True)
class WriteStats:
    """What one write-back did to the cache."""

    added: int  # new tokens/points stored
    merged: int  # candidates that landed in an occupied voxel and replaced/merged with its token
    dropped: int  # tokens removed to keep the budget (oldest first) or rejected (invalid depth)
    tokens: int  # tokens in the cache after the write
    bytes: int  # cache size after the write
    rejected: int = 0  # revealed cells/pixels not stored because their (aligned) depth was invalid (part of dropped)
    replaced: int = 0  # stored tokens removed because a newer one took their voxel (VoxelWinner.NEWEST)
    scales: tuple[float, ...] = ()  # depth-alignment scale per view of depth_views
    shifts: tuple[float, ...] = ()  # depth-alignment shift per view of depth_views
    residuals: tuple[float, ...] = ()  # median relative depth error per view of depth_views (NaN: no overlap)
    warning: str | None = None  # one line when something was not as asked (alignment fell back, depth masked)
    depth_views: tuple[int, ...] = ()  # the written views whose depth was asked (scales etc. are theirs, this order)


@dataclass(frozen=True)
class MemoryStats:
    """Size of a memory."""

    tokens: int
    bytes: int
    bounds_min: tuple[float, float, float]  # world-space AABB of the stored points
    bounds_max: tuple[float, float, float]
