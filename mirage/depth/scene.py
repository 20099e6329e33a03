"""What a render takes from its input's depth: the median of the valid depths (the scale of camera presets and of
the revisit scores), and the depth resized to the video size.

Depth is z in the camera frame (``docs/conventions.md``): ``(H, W)`` float32, metres or scene units, with its
``valid`` mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from mirage.depth.estimator import DepthResult
from mirage.errors import InputError


@dataclass(frozen=True)
class SceneDepth:
    """The median of a depth's valid pixels (torch's lower middle value, scene units), taken where the depth is and
    on its way to the host: :meth:`value` waits for the work queued before it only, not for what the caller queues
    after it (a render queues the image's encode there, docs/architecture.md, "The render's start")."""

    name: str  # the image, for the error
    host: torch.Tensor  # () float32; pinned when copied from CUDA
    done: torch.cuda.Event | None  # the copy's completion (CUDA), else None

    def value(self) -> float:
        """The median, in the depth's units. Raises InputError when the depth has no valid pixel (a NaN median)."""
        if self.done is not None:
            self.done.synchronize()
        v = float(self.host)
        if not math.isfinite(v):
            raise InputError(f"depth of {self.name}: no valid pixel; check --depth or the depth model")
        return v


def scene_depth(result: DepthResult, name: str) -> SceneDepth:
    """Queue the median of ``result``'s valid depths for the host without waiting for it (:class:`SceneDepth`);
    ``name`` is the image its error names."""
    med = torch.nanmedian(torch.where(result.valid, result.depth, torch.nan))
    if med.device.type != "cuda":
        return SceneDepth(name, med, None)
    host = torch.empty((), dtype=med.dtype, pin_memory=True)
    host.copy_(med, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return SceneDepth(name, host, done)


def resize_depth_result(result: DepthResult, width: int, height: int) -> DepthResult:
    """``result`` resized to (width, height): nearest neighbour, so depth edges and the valid mask stay sharp."""
    if tuple(result.depth.shape) == (height, width):
        return result
    size = (height, width)
    d = torch.nn.functional.interpolate(result.depth[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    v = torch.nn.functional.interpolate(result.valid[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    return replace(result, depth=d, valid=v > 0.5)
