"""The latent grid a VAE maps pixels to, and Wan's causal 4k+1 temporal layout: the one place that knows them.

A causal video VAE (Wan 2.1: ``temporal_stride`` 4, ``spatial_stride`` 8) maps pixel frame 0 to latent frame 0
alone and each following group of ``temporal_stride`` pixel frames to one latent frame, so a video of
``F = temporal_stride * k + 1`` frames has ``T = k + 1`` latent frames. Latent frame ``t > 0`` is read at the pose
of the *last* pixel frame of its group, ``temporal_stride * t``. An image VAE (TAESD) has ``temporal_stride`` 1:
every frame is its own latent frame. The VAE owns its :class:`LatentSpace` (:attr:`mirage.vae.VAE.latent_space`)
and hands it to the memories and the denoiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from mirage.errors import InputError


@dataclass(frozen=True)
class LatentSpace:
    """A VAE's latent grid.

    Attributes:
        channels: C, latent channels (16 for Wan 2.1 and TAESD3, 4 for TAESD).
        spatial_stride: pixels per latent cell along each image axis (8).
        temporal_stride: pixel frames per latent frame after the first (Wan 4; image VAEs and per-frame use 1).
        model_id: the VAE the latents belong to (stored in memory files and checked when one is loaded).
    """

    channels: int
    spatial_stride: int = 8
    temporal_stride: int = 1
    model_id: str = ""

    def __post_init__(self) -> None:
        if self.temporal_stride < 1 or self.spatial_stride < 1:
            raise InputError(f"latent space: strides {self.spatial_stride}, {self.temporal_stride} must be >= 1")

    def per_frame(self) -> LatentSpace:
        """The same grid used one latent per pixel frame (an image VAE's reads, the preview without a video model)."""
        return replace(self, temporal_stride=1)

    def check_frames(self, num_frames: int) -> None:
        """``num_frames`` must be ``temporal_stride * k + 1``; else one InputError line naming two counts that are."""
        s = self.temporal_stride
        if num_frames < 1 or (num_frames - 1) % s:
            lo = max(1, (num_frames - 1) // s * s + 1)
            raise InputError(f"frames: {num_frames} pixel frames do not form whole latent frames with temporal stride "
                             f"{s}; pass {s}k+1 frames (e.g. {lo} or {lo + s})")

    def num_latent_frames(self, num_frames: int) -> int:
        """T for ``num_frames`` pixel frames: ``(F - 1) // temporal_stride + 1`` (F must be ``temporal_stride k + 1``)."""
        self.check_frames(num_frames)
        return (num_frames - 1) // self.temporal_stride + 1

    def num_pixel_frames(self, num_latent_frames: int) -> int:
        """F that ``num_latent_frames`` decode to: ``temporal_stride (T - 1) + 1``."""
        if num_latent_frames < 1:
            raise InputError(f"num_latent_frames: got {num_latent_frames}; need at least 1")
        return (num_latent_frames - 1) * self.temporal_stride + 1

    def latent_frame_indices(self, num_frames: int) -> list[int]:
        """The pixel frame each latent frame is read at: ``[0, ts, 2 ts, ..., F - 1]``."""
        self.check_frames(num_frames)
        return list(range(0, num_frames, self.temporal_stride))

    def round_frames(self, num_frames: int) -> int:
        """``num_frames`` rounded up to ``temporal_stride * k + 1`` (k >= 1) (what a chunked Wan video needs)."""
        if self.temporal_stride <= 1:
            return num_frames
        k = max(1, math.ceil((num_frames - 1) / self.temporal_stride))
        return self.temporal_stride * k + 1

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the latent grid of (height, width) pixels."""
        return height // self.spatial_stride, width // self.spatial_stride
