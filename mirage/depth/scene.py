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
    on its way to the host: :meth:`value` waits for the work queued before it on the depth's stream, not for what
    the caller queues after it (a render queues the image's encode there, docs/architecture.md, "The render's
    start")."""

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
    ``name`` is the image its error names. On CUDA the median is taken by a sort (:func:`lower_median`), as torch's
    ``nanmedian`` reads a count back to the host first; on the CPU by ``nanmedian`` (the same value)."""
    if result.depth.device.type != "cuda":
        return SceneDepth(name, torch.nanmedian(torch.where(result.valid, result.depth, torch.nan)), None)
    med = lower_median(result.depth, result.valid)
    host = torch.empty((), dtype=med.dtype, pin_memory=True)
    host.copy_(med, non_blocking=True)  # on the depth device's current stream
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(med.device))
    return SceneDepth(name, host, done)


def lower_median(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The median of ``values`` where ``valid`` (and not NaN), the lower of the two middle values for an even count
    (torch's ``median`` rule); NaN when there is none. ``values``, ``valid``: the same shape. Returns a () tensor on
    their device, with no read-back: the valid values sorted first, and the middle one gathered at an index
    computed on the device."""
    keep = (valid & ~values.isnan()).flatten()
    ordered = torch.where(keep, values.flatten(), torch.inf).sort().values  # (N,) the kept values first, ascending
    n = keep.sum()
    mid = ordered.gather(0, ((n - 1).clamp(min=0) // 2)[None])[0]
    return torch.where(n > 0, mid, torch.nan)


def resize_depth_result(result: DepthResult, width: int, height: int) -> DepthResult:
    """``result`` resized to (width, height): nearest neighbour, so depth edges and the valid mask stay sharp."""
    if tuple(result.depth.shape) == (height, width):
        return result
    size = (height, width)
    d = torch.nn.functional.interpolate(result.depth[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    v = torch.nn.functional.interpolate(result.valid[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    return replace(result, depth=d, valid=v > 0.5)
