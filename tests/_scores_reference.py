"""mirage.scores.sample_through_depth as it was before its rewrite for speed (eighth session), kept verbatim as the
reference the rewrite is tested against (not against itself)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_through_depth(frames: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, depth_ref: torch.Tensor,
                         K_ref: torch.Tensor, c2w_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The colours of ``frames`` where the surface seen at each pixel of the reference cameras lands in their
    cameras (bilinear, pixel centres at integers).

    A reference pixel (u, v) at z-depth d lands at ``p = d * A @ (u, v, 1) + b`` in homogeneous pixels of the frame's
    camera, with ``A = K w2c[:3, :3] c2w_ref-rotation K_ref^-1`` and ``b = K (w2c c2w_ref)[:3, 3]``: one 3x3 map and
    a translation per camera pair, composed in float64, then a handful of element-wise ops at full resolution (no
    world-space points, no batched 3x3 matmuls).

    Args:
        frames: (N, 3, H, W) float in [-1, 1]; K: (N, 3, 3) pixel intrinsics; w2c: (N, 4, 4) their cameras.
        depth_ref: (N, h, w) z of the reference views, scene units (0 = unknown: the caller masks it);
            K_ref: (N, 3, 3); c2w_ref: (N, 4, 4).
    Returns:
        colours: (N, 3, h, w) float32; inside: (N, h, w) bool, in front of the camera and inside the image.
    """
    n, h, w = depth_ref.shape
    H, W = frames.shape[-2:]
    dev = depth_ref.device
    ref_to_cam = w2c.to(dev).double() @ c2w_ref.to(dev).double()  # (N, 4, 4): reference camera -> frame camera
    K64 = K.to(dev).double()
    A = (K64 @ ref_to_cam[:, :3, :3] @ torch.linalg.inv_ex(K_ref.to(dev).double()).inverse).float()  # (N, 3, 3)
    b = (K64 @ ref_to_cam[:, :3, 3:])[..., 0].float()  # (N, 3)
    v, u = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                          torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")  # (h, w)
    d = depth_ref.float()

    def row(i: int) -> torch.Tensor:  # (N, h, w) the i-th homogeneous coordinate
        a = A[:, i, :, None, None]
        return d * (a[:, 0] * u + a[:, 1] * v + a[:, 2]) + b[:, i, None, None]

    px, py, z = row(0), row(1), row(2)
    zs = z.clamp(min=1e-6)
    x, y = px / zs, py / zs
    inside = (z > 1e-6) & (x >= -0.5) & (x <= W - 0.5) & (y >= -0.5) & (y <= H - 0.5)
    grid = torch.stack([(2 * x + 1) / W - 1, (2 * y + 1) / H - 1], -1)  # (N, h, w, 2), align_corners=False
    grid = torch.where(inside[..., None], grid, 0.0)
    return F.grid_sample(frames.float(), grid, mode="bilinear", padding_mode="border", align_corners=False), inside
