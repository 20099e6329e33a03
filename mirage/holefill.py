"""A simple, deterministic in-latent hole fill for previews (``--denoiser none``).

Push-pull: holes are filled with a mask-weighted average of a coarser level of the map, level by level, so a hole
takes the colour of its surroundings, blurred in proportion to its size. It is a preview aid that shows whether depth
and trajectory are right, not a generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def push_pull_fill(latents: torch.Tensor, holes: torch.Tensor, levels: int = 8) -> torch.Tensor:
    """Fill ``holes`` of ``latents`` from their surroundings.

    Args:
        latents: (T, C, h, w) any float dtype.
        holes: (T, h, w) bool, True where empty.
        levels: pyramid depth (each level halves the size).
    Returns:
        (T, C, h, w): ``latents`` where not a hole, a push-pull average elsewhere (unchanged if no valid cell).
    """
    x = latents.float()
    w = (~holes).float()[:, None]  # (T, 1, h, w)
    pyramid = []
    xw, ww = x * w, w
    for _ in range(levels):
        pyramid.append((xw, ww))
        if min(xw.shape[-2:]) <= 1:
            break
        xw = F.avg_pool2d(xw, 2, ceil_mode=True)
        ww = F.avg_pool2d(ww, 2, ceil_mode=True)
    filled = xw / ww.clamp(min=1e-6)
    for xw_l, ww_l in reversed(pyramid):
        up = F.interpolate(filled, size=xw_l.shape[-2:], mode="bilinear", align_corners=False)
        known = ww_l.clamp(max=1.0)
        filled = torch.where(ww_l > 0, xw_l / ww_l.clamp(min=1e-6), up) * known + up * (1 - known)
    out = torch.where(holes[:, None], filled, x)
    return out.to(latents.dtype)
