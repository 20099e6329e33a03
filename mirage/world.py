"""A scene held in a spatial memory and moved chunk by chunk (:class:`World`), and the chunk arithmetic the pipeline
uses: how a video splits into overlapping chunks, the known first frame of a chunk, revealed-region dilation.

The stage order lives in :mod:`mirage.pipeline` (``Pipeline._run_chunk``); a :class:`World` only holds the state
between chunks (memory, current pose, known frame) and calls back into its pipeline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mirage.config import RenderOptions
from mirage.errors import InputError
from mirage.inputs import InputPlan, TrajectoryOptions
from mirage.limits import echo
from mirage.memory.types import MemoryRead
from mirage.report import ChunkReport, StageTimer
from mirage.scores import FrameScores

if TYPE_CHECKING:
    from mirage.pipeline import Pipeline

logger = logging.getLogger("mirage")

#: Hole fraction above which the first chunk's reads count as seeing nothing of the input image.
ALL_HOLES = 0.999


@dataclass
class ChunkResult:
    """One chunk of a world (tensors on the pipeline's device).

    Attributes:
        frames: (F, 3, H, W) float32 in [-1, 1]; frame 0 is the known first frame.
        reads: (F, 3, H, W) the decoded memory reads, when ``keep_reads``, else None.
        report: what happened (holes, memory size, write-back).
    """

    frames: torch.Tensor
    reads: torch.Tensor | None
    report: ChunkReport


# ----------------------------------------------------------------------------------------------------------------
# small pure helpers (tested directly)


def plan_chunks(num_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Split ``num_frames`` into chunks of at most ``chunk_frames`` that overlap by one frame.

    Returns ``[(start, stop), ...]`` half-open ranges: chunk i+1 starts at chunk i's last frame. With a temporal
    stride of 4 every chunk length is 4k + 1 as long as ``num_frames`` and ``chunk_frames`` are.
    """
    if chunk_frames < 2:
        raise InputError(f"--chunk-frames: {chunk_frames} is fewer than 2")
    chunks = []
    start = 0
    while True:
        stop = min(start + chunk_frames, num_frames)
        chunks.append((start, stop))
        if stop >= num_frames:
            return chunks
        start = stop - 1


def dilate(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Binary dilation of (N, h, w) bool masks by a (2r+1)^2 square (max-pool; no host sync)."""
    if radius <= 0:
        return mask
    x = mask.float()[:, None]
    return (torch.nn.functional.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius) > 0)[:, 0]


# ----------------------------------------------------------------------------------------------------------------


class World:
    """The scene of one image in a spatial memory, moved chunk by chunk: :meth:`step` renders the frames of new
    poses and writes what they reveal back into the memory. :meth:`Pipeline.render` runs the same steps along a
    trajectory. Build it with :meth:`Pipeline.world`.

    Attributes:
        memory: the spatial memory (``save`` it to continue later with ``memory_from``).
        K: (3, 3) pixel intrinsics of the input view at the video size; w2c: (4, 4) the current pose (OpenCV).
        image: (3, H, W) the input image at the video size, on the pipeline's device.
    """

    def __init__(self, pipe: Pipeline, plan: InputPlan, options: RenderOptions, image: torch.Tensor,
                 image_latents: torch.Tensor, memory, K: torch.Tensor, c2w: torch.Tensor, timer: StageTimer,
                 warnings: list[str]):
        self.pipe, self.plan, self.options = pipe, plan, options
        self.image, self.memory, self.timer, self.warnings = image, memory, timer, warnings
        self.K = K.to(pipe.device, torch.float32)  # (3, 3)
        self.w2c = torch.linalg.inv(c2w.double()).to(pipe.device, torch.float32)  # (4, 4)
        self.chunks: list[ChunkReport] = []
        self.scores, self._read_depth = FrameScores(), {}  # per frame so far; frame -> (h, w) read depth (revisits)
        self._frame, self._latent = image, image_latents  # the known frame (3, H, W) and its latent (C, h, w)
        self._frame_index = 0
        self._embeds = None
        self._slots_noted = False  # the warning about latent slots the memory lacks is given once
        self.generator = torch.Generator(device="cpu").manual_seed(options.seed)

    @property
    def size(self) -> tuple[int, int]:
        return self.plan.size

    @torch.no_grad()
    def step(self, w2c: torch.Tensor, K: torch.Tensor | None = None, *, write_back: bool = True) -> torch.Tensor:
        """Render the frames of the poses ``w2c`` that follow the current pose, and move there.

        Args:
            w2c: (F, 4, 4) world-to-camera poses (OpenCV) of the new frames; with the video denoiser ``F + 1`` must
                be ``4k + 1`` (Wan's chunks: the current frame and 4k new ones), e.g. 32 or 80.
            K: (F, 3, 3) pixel intrinsics of the new frames (default: the input view's).
            write_back: write what the new frames reveal into the memory.

        Returns:
            (F, 3, H, W) float32 in [-1, 1] on the pipeline's device: the new frames.
        """
        w2c = w2c.to(self.pipe.device, torch.float32)
        if w2c.ndim != 3 or w2c.shape[1:] != (4, 4) or w2c.shape[0] < 1:
            raise InputError(f"w2c: shape {tuple(w2c.shape)}; pass (F, 4, 4) poses of the new frames")
        K = self.K.expand(w2c.shape[0], 3, 3) if K is None else K.to(self.pipe.device, torch.float32)
        if K.shape != (w2c.shape[0], 3, 3):
            raise InputError(f"K: shape {tuple(K.shape)}; pass ({w2c.shape[0]}, 3, 3) intrinsics or None")
        n_frames = w2c.shape[0] + 1
        if self.pipe.denoiser is not None and (n_frames - 1) % self.pipe.vae.temporal_stride:
            raise InputError(f"w2c: {n_frames - 1} new poses; the video model makes "
                             f"{self.pipe.vae.temporal_stride}k new frames a step (e.g. 32 or 80)")
        w2c_c = torch.cat([self.w2c[None], w2c])  # (F, 4, 4): the current pose, then the new ones
        c2w_c = torch.linalg.inv(w2c_c.double()).float()
        res = self.pipe._run_chunk(self, torch.cat([self.K[None], K]), w2c_c, c2w_c, write_back=write_back)
        self.K, self.w2c = K[-1], w2c[-1]
        return res.frames[1:]

    def note_missing_slots(self, num_latent_frames: int) -> None:
        """Once per world: a warning when a chunk reads latent slots the latent memory keeps no features for (a
        step longer than the chunk the world was opened for, or a memory file without slot features); those slots
        read the last slot the memory keeps (its image latent when it keeps none)."""
        space = self.pipe._space
        store = getattr(self.memory, "store", None)  # the latent memory's (the RGB memory encodes its renders)
        if store is None or space.temporal_stride == 1 or self._slots_noted:
            return
        if num_latent_frames - 1 > store.slots:
            self._slots_noted = True
            need = space.num_pixel_frames(num_latent_frames)
            fix = (f"re-create {Path(self.plan.memory_from).name} with --chunk-frames >= {need}"
                   if self.plan.memory_from is not None else f"open the world with chunk_frames >= {need}")
            msg = (f"memory: this chunk reads {num_latent_frames - 1} steady latent slots, the memory keeps "
                   f"{store.slots}; slots past {store.slots} read slot {store.slots}'s features ({fix} to keep them "
                   "all)")
            logger.warning(msg)
            self.warnings.append(msg)

    def save(self, path: str | Path) -> None:
        """Save the memory (``mirage render --memory-from`` or :meth:`Pipeline.world` continue from it)."""
        self.memory.save(path)


def check_sees_memory(read: MemoryRead, traj: TrajectoryOptions, stop: int) -> None:
    """The first chunk's cameras must see some of the input image: reads that are all holes mean the path leaves
    the scene (an absurd --traj-scale, a camera file made for another image or scene); rendering would only
    invent content. holes: (T, h, w) bool, entry 0 the input frame."""
    if read.holes.shape[0] < 2:
        return
    frac = float(read.holes[1:].float().mean())
    if frac >= ALL_HOLES:
        raise InputError(f"--traj {echo(traj.spec, 120)}: frames 1-{stop} see none of the input image "
                         f"({100 * frac:.1f}% holes); check --traj-scale (now {traj.scale:g}) and that the cameras are "
                         "for this image and scene")


def pin_first_frame(read: MemoryRead, frame: torch.Tensor, latent: torch.Tensor) -> MemoryRead:
    """The first frame of a chunk is known (the input image, or the previous chunk's last frame): its latent and
    pixels replace the read there, and it has no holes."""
    lat = read.latents.clone()
    lat[0] = latent.to(lat.dtype)
    holes = read.holes.clone()
    holes[0] = False
    rgb, pix = read.rgb, read.pixel_holes
    if rgb is not None and pix is not None:
        rgb = rgb.clone()
        rgb[0] = frame.to(rgb.dtype)
        pix = pix.clone()
        pix[0] = False
    return replace(read, latents=lat, holes=holes, rgb=rgb, pixel_holes=pix)


__all__ = ["ALL_HOLES", "ChunkResult", "World", "check_sees_memory", "dilate", "pin_first_frame", "plan_chunks"]
