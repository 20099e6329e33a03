"""Scenes with exactly known geometry, rendered analytically (ray casting of axis-aligned boxes).

Used by ``examples/make_example.py`` (the offline example scene), by the fidelity benchmark and by tests: any
camera's true image and true z-depth are available, so novel views can be checked against the truth.

World frame: OpenCV axes of the example's frame-0 camera (x right, y down, z forward), units metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mirage.camera import invert_rigid, pixel_grid


@dataclass(frozen=True)
class Box:
    """An axis-aligned box with a procedural texture.

    Attributes:
        lo, hi: opposite corners (x, y, z) in metres.
        color: base RGB in [0, 1].
        checker: checker square size in metres (0 = none).
        inside: True for a room seen from inside (rays hit its far side).
    """

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    color: tuple[float, float, float]
    checker: float = 0.25
    inside: bool = False


@dataclass(frozen=True)
class Scene:
    boxes: tuple[Box, ...] = field(default_factory=tuple)


def example_room() -> Scene:
    """A 6 m wide room with a checkered floor, textured walls, and two boxes in front of the back wall."""
    return Scene(
        boxes=(
            Box(lo=(-3.0, -2.0, -2.0), hi=(3.0, 1.2, 6.0), color=(0.85, 0.8, 0.7), checker=0.5, inside=True),
            Box(lo=(-1.6, 0.2, 3.0), hi=(-0.4, 1.2, 4.0), color=(0.85, 0.25, 0.2), checker=0.2),
            Box(lo=(0.5, -0.4, 4.2), hi=(1.5, 1.2, 5.0), color=(0.2, 0.45, 0.85), checker=0.2),
        )
    )


def _texture(xyz: torch.Tensor, axis: torch.Tensor, box: Box, face_sign: torch.Tensor) -> torch.Tensor:
    """Colour (N, 3) in [0, 1] of surface points ``xyz`` (N, 3) on faces normal to ``axis`` (N,) of ``box``."""
    coords = torch.stack([xyz[:, 0], xyz[:, 1], xyz[:, 2]], dim=-1)
    # the two in-plane coordinates of each face
    a_idx = torch.where(axis == 0, 1, 0)
    b_idx = torch.where(axis == 2, 1, 2)
    a = coords.gather(1, a_idx[:, None])[:, 0]
    b = coords.gather(1, b_idx[:, None])[:, 0]
    base = torch.tensor(box.color, dtype=xyz.dtype, device=xyz.device)
    shade = 0.75 + 0.25 * torch.cos(axis.to(xyz.dtype) * 1.3 + face_sign * 0.7)  # per-face brightness
    if box.checker > 0:
        chk = ((torch.floor(a / box.checker) + torch.floor(b / box.checker)) % 2) * 0.35 + 0.65
    else:
        chk = torch.ones_like(a)
    fine = 0.9 + 0.1 * torch.sin(a * 23.0) * torch.sin(b * 17.0)  # detail at a finer scale than the checker
    grad = torch.stack([0.9 + 0.1 * torch.sin(a * 2.1), 0.9 + 0.1 * torch.cos(b * 1.7), 0.95 + 0.05 * torch.sin(a + b)], -1)
    return (base[None] * grad * (shade * chk * fine)[:, None]).clamp(0, 1)


def _cast(scene: Scene, origin: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest hit of rays ``origin`` (3,) + t * ``dirs`` (N, 3): returns t (N,) (inf if none) and colour (N, 3)."""
    N = dirs.shape[0]
    best_t = torch.full((N,), float("inf"), dtype=dirs.dtype, device=dirs.device)
    best_c = torch.zeros((N, 3), dtype=dirs.dtype, device=dirs.device)
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    for box in scene.boxes:
        lo = torch.tensor(box.lo, dtype=dirs.dtype, device=dirs.device)
        hi = torch.tensor(box.hi, dtype=dirs.dtype, device=dirs.device)
        t1 = (lo - origin) / safe  # (N, 3)
        t2 = (hi - origin) / safe
        tmin = torch.minimum(t1, t2)
        tmax = torch.maximum(t1, t2)
        t_near, ax_near = tmin.max(dim=-1)
        t_far, ax_far = tmax.min(dim=-1)
        if box.inside:
            t, axis = t_far, ax_far
            hit = (t_near <= t_far) & (t_far > 1e-6)
        else:
            t, axis = t_near, ax_near
            hit = (t_near <= t_far) & (t_near > 1e-6)
        closer = hit & (t < best_t)
        xyz = origin + t[:, None] * dirs
        sign = torch.sign(dirs.gather(1, axis[:, None])[:, 0])
        col = _texture(xyz, axis, box, sign)
        best_t = torch.where(closer, t, best_t)
        best_c = torch.where(closer[:, None], col, best_c)
    return best_t, best_c


def render_scene(
    scene: Scene, K: torch.Tensor, w2c: torch.Tensor, width: int, height: int, *, supersample: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the true image and z-depth of ``scene`` from one camera.

    Args:
        K: (3, 3) pixel intrinsics; w2c: (4, 4) OpenCV world-to-camera.
        supersample: sub-samples per pixel side for antialiasing the colour (depth uses the pixel centre).
    Returns:
        image: (3, H, W) float32 in [-1, 1]; depth: (H, W) float32 z-depth in metres (inf where no surface).
    """
    K = K.to(torch.float64)
    c2w = invert_rigid(w2c.to(torch.float64))
    R, origin = c2w[:3, :3], c2w[:3, 3]
    s = supersample
    # sub-pixel sample offsets around each pixel centre
    off = (torch.arange(s, dtype=torch.float64) + 0.5) / s - 0.5
    uv = pixel_grid(height, width, dtype=torch.float64).reshape(-1, 2)  # (H*W, 2)
    colours = torch.zeros((height * width, 3), dtype=torch.float64)
    Kinv = torch.linalg.inv(K)
    for dy in off:
        for dx in off:
            p = torch.cat([uv + torch.stack([dx, dy]), torch.ones(uv.shape[0], 1, dtype=torch.float64)], -1)
            d_cam = p @ Kinv.T  # (N, 3), z = 1
            _, c = _cast(scene, origin, d_cam @ R.T)
            colours += c
    colours /= s * s
    p = torch.cat([uv, torch.ones(uv.shape[0], 1, dtype=torch.float64)], -1)
    d_cam = p @ Kinv.T  # z component is 1, so the ray parameter t is the z-depth
    t, _ = _cast(scene, origin, d_cam @ R.T)
    image = (colours.T.reshape(3, height, width) * 2 - 1).float()
    depth = t.reshape(height, width).float()
    return image, depth
