"""Camera geometry: pure tensor functions, frames in the names.

Conventions (written down once in ``docs/conventions.md``):

- camera axes are OpenCV's: x right, y down, z forward;
- poses are stored world-to-camera (``w2c``, 4x4), ``xyz_cam = R @ xyz_world + t``;
- intrinsics ``K`` are in pixels, and pixel ``(u, v)`` names the *centre* of pixel column u / row v, so the
  image spans ``[-0.5, W - 0.5]``;
- depth is z in the camera frame (not the ray length), in the scene's units (metres where known).

Nothing here touches a device or a dtype of its own: every function follows its inputs.
"""

from __future__ import annotations

import math

import torch

from mirage.errors import InputError

# --------------------------------------------------------------------------------------------------------------
# intrinsics


def intrinsics_from_fov(fov_x_deg: float, width: int, height: int, *, dtype=torch.float64) -> torch.Tensor:
    """Pinhole intrinsics from a horizontal field of view, principal point at the image centre.

    Args:
        fov_x_deg: horizontal field of view in degrees, in (1, 179).
        width, height: image size in pixels.

    Returns:
        K: (3, 3) pixel intrinsics, square pixels, ``cx = (W - 1) / 2`` (pixel-centre convention).
    """
    if not (1.0 < float(fov_x_deg) < 179.0) or not math.isfinite(float(fov_x_deg)):
        raise InputError(f"fov: {fov_x_deg} degrees is outside (1, 179); pass a horizontal FoV in degrees")
    f = 0.5 * width / math.tan(math.radians(float(fov_x_deg)) / 2.0)
    return torch.tensor([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]], dtype=dtype)


def fov_x_from_intrinsics(K: torch.Tensor, width: int) -> torch.Tensor:
    """Horizontal field of view in degrees. ``K``: (..., 3, 3) pixels. Returns (...,)."""
    return torch.rad2deg(2.0 * torch.atan(0.5 * width / K[..., 0, 0]))


def intrinsics_from_normalized(
    fx: float, fy: float, cx: float, cy: float, width: int, height: int, *, dtype=torch.float64
) -> torch.Tensor:
    """Pixel intrinsics from intrinsics normalised by image size (RealEstate10K style).

    Normalised coordinates span the image edges: ``u_edge = x_norm * W``, so a pixel-centre coordinate is
    ``u = x_norm * W - 0.5``.
    """
    return torch.tensor(
        [[fx * width, 0.0, cx * width - 0.5], [0.0, fy * height, cy * height - 0.5], [0.0, 0.0, 1.0]], dtype=dtype
    )


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float | None = None) -> torch.Tensor:
    """Intrinsics of the same camera on a grid resampled by ``(sx, sy)`` (e.g. 1/8 for an 8x VAE latent).

    With pixel centres, pixel ``u`` of the old grid lands at ``(u + 0.5) * s - 0.5`` of the new one, so latent
    token ``j`` of an 8x VAE sits over pixel ``8 j + 3.5`` (stride * j + (stride - 1) / 2).

    Args:
        K: (..., 3, 3) pixel intrinsics.
        sx, sy: new size / old size along x and y (``sy`` defaults to ``sx``).
    Returns:
        (..., 3, 3) intrinsics on the new grid.
    """
    sy = sx if sy is None else sy
    out = K.clone()
    out[..., 0, 0] = K[..., 0, 0] * sx
    out[..., 0, 1] = K[..., 0, 1] * sx
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 1] = K[..., 1, 1] * sy
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return out


def intrinsics_to_latent(K: torch.Tensor, stride: int) -> torch.Tensor:
    """Intrinsics of the latent grid of a VAE with spatial ``stride`` (8 for Wan and TAESD)."""
    return scale_intrinsics(K, 1.0 / stride)


# --------------------------------------------------------------------------------------------------------------
# rigid transforms


def invert_rigid(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid 4x4 transforms (``w2c <-> c2w``). ``T``: (..., 4, 4). Exact for rotations."""
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    out = torch.zeros_like(T)
    Rt = R.transpose(-1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def w2c_to_c2w(w2c: torch.Tensor) -> torch.Tensor:
    """Camera-to-world from world-to-camera, (..., 4, 4)."""
    return invert_rigid(w2c)


def c2w_to_w2c(c2w: torch.Tensor) -> torch.Tensor:
    """World-to-camera from camera-to-world, (..., 4, 4)."""
    return invert_rigid(c2w)


def make_rigid(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """4x4 transform from ``R`` (..., 3, 3) and ``t`` (..., 3)."""
    out = torch.zeros((*R.shape[:-2], 4, 4), dtype=R.dtype, device=R.device)
    out[..., :3, :3] = R
    out[..., :3, 3] = t
    out[..., 3, 3] = 1.0
    return out


def transform_points(T: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    """Apply 4x4 transforms ``T`` (..., 4, 4) to points ``xyz`` (..., N, 3). Returns (..., N, 3)."""
    return xyz @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def is_rotation(R: torch.Tensor, atol: float = 1e-3) -> torch.Tensor:
    """True where ``R`` (..., 3, 3) is orthonormal with determinant +1 (within ``atol``). Returns (...,) bool."""
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    ortho = (R @ R.transpose(-1, -2) - eye).abs().amax(dim=(-1, -2)) < atol
    det = (torch.linalg.det(R) - 1.0).abs() < atol
    return ortho & det


def check_poses(w2c: torch.Tensor, name: str, atol: float = 1e-3) -> None:
    """Raise :class:`InputError` unless ``w2c`` (N, 4, 4) holds finite rigid transforms."""
    if w2c.ndim != 3 or w2c.shape[-2:] != (4, 4):
        raise InputError(f"{name}: expected poses of shape (N, 4, 4), got {tuple(w2c.shape)}")
    finite = torch.isfinite(w2c).all(dim=(-1, -2))
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0])
        raise InputError(f"{name}: frame {i} has a non-finite pose (NaN or inf); fix or drop that frame")
    ok = is_rotation(w2c[:, :3, :3], atol)
    if not bool(ok.all()):
        i = int((~ok).nonzero()[0])
        raise InputError(
            f"{name}: frame {i}'s rotation is not a rotation matrix (orthonormal, det +1); "
            "check the file's column order and convention"
        )


def orthonormalize(R: torch.Tensor) -> torch.Tensor:
    """Nearest rotation (SVD projection) to ``R`` (..., 3, 3); cleans up float noise in files."""
    U, _, Vh = torch.linalg.svd(R)
    d = torch.linalg.det(U @ Vh)
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    return U @ D @ Vh


# --------------------------------------------------------------------------------------------------------------
# conventions


_FLIP_YZ = (1.0, -1.0, -1.0)


def opengl_to_opencv_c2w(c2w_gl: torch.Tensor) -> torch.Tensor:
    """Camera-to-world of an OpenGL/Blender/nerfstudio camera (x right, y up, z backward) -> OpenCV axes.

    The camera's own y and z axes flip; the world frame is untouched. ``c2w_gl``: (..., 4, 4).
    """
    flip = torch.tensor(_FLIP_YZ, dtype=c2w_gl.dtype, device=c2w_gl.device)
    out = c2w_gl.clone()
    out[..., :3, :3] = c2w_gl[..., :3, :3] * flip  # scales columns: R @ diag(1, -1, -1)
    return out


def opencv_to_opengl_c2w(c2w_cv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`opengl_to_opencv_c2w` (the flip is its own inverse)."""
    return opengl_to_opencv_c2w(c2w_cv)


def pytorch3d_to_opencv_w2c(R_p3d: torch.Tensor, T_p3d: torch.Tensor) -> torch.Tensor:
    """PyTorch3D camera (row-vector convention, x left, y up, z forward) -> OpenCV world-to-camera.

    PyTorch3D maps ``X_cam = X_world @ R + T``; its camera x and y axes point the other way to OpenCV's.

    Args:
        R_p3d: (..., 3, 3); T_p3d: (..., 3).
    Returns:
        w2c: (..., 4, 4) OpenCV.
    """
    flip = torch.tensor((-1.0, -1.0, 1.0), dtype=R_p3d.dtype, device=R_p3d.device)
    R_cv = R_p3d.transpose(-1, -2) * flip[:, None]  # rows scaled: diag(-1, -1, 1) @ R^T
    t_cv = T_p3d * flip
    return make_rigid(R_cv, t_cv)


def opencv_to_pytorch3d_w2c(w2c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pytorch3d_to_opencv_w2c`: returns ``(R_p3d (..., 3, 3), T_p3d (..., 3))``."""
    flip = torch.tensor((-1.0, -1.0, 1.0), dtype=w2c.dtype, device=w2c.device)
    R_p3d = (w2c[..., :3, :3] * flip[:, None]).transpose(-1, -2)
    T_p3d = w2c[..., :3, 3] * flip
    return R_p3d, T_p3d


# --------------------------------------------------------------------------------------------------------------
# projection


def pixel_grid(height: int, width: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates ``uv`` (H, W, 2): ``uv[v, u] = (u, v)``."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype), torch.arange(width, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([u, v], dim=-1)


def unproject_to_cam(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Back-project pixels to camera-frame points.

    Args:
        uv: (..., N, 2) pixel-centre coordinates.
        depth: (..., N) z-depth.
        K: (..., 3, 3) pixel intrinsics (broadcast over N).
    Returns:
        xyz_cam: (..., N, 3).
    """
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    skew = K[..., 0, 1, None]
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - skew * y) / fx
    return torch.stack([x * depth, y * depth, depth], dim=-1)


def project_cam_to_pixels(xyz_cam: torch.Tensor, K: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera-frame points to pixels.

    Args:
        xyz_cam: (..., N, 3).
        K: (..., 3, 3) pixel intrinsics.
    Returns:
        uv: (..., N, 2) pixel-centre coordinates (meaningless where z <= eps);
        z: (..., N) depth.
    """
    z = xyz_cam[..., 2]
    zs = z.clamp(min=eps)
    x = xyz_cam[..., 0] / zs
    y = xyz_cam[..., 1] / zs
    u = K[..., 0, 0, None] * x + K[..., 0, 1, None] * y + K[..., 0, 2, None]
    v = K[..., 1, 1, None] * y + K[..., 1, 2, None]
    return torch.stack([u, v], dim=-1), z


def project_world_to_pixels(
    xyz_world: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into cameras.

    Args:
        xyz_world: (N, 3) or (B, N, 3).
        K: (B, 3, 3) or (3, 3); w2c: (B, 4, 4) or (4, 4).
    Returns:
        uv: (B, N, 2) (or (N, 2) unbatched); z: (B, N).
    """
    xyz_cam = transform_points(w2c, xyz_world)
    return project_cam_to_pixels(xyz_cam, K)


def depth_to_xyz_world(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """Back-project a depth map to world points.

    Args:
        depth: (H, W) z-depth.
        K: (3, 3) intrinsics of that grid; c2w: (4, 4).
    Returns:
        xyz_world: (H * W, 3), row-major (index ``v * W + u``).
    """
    H, W = depth.shape
    uv = pixel_grid(H, W, device=depth.device, dtype=depth.dtype).reshape(-1, 2)  # (H*W, 2)
    xyz_cam = unproject_to_cam(uv, depth.reshape(-1), K.to(depth.dtype))  # (H*W, 3)
    return transform_points(c2w.to(depth.dtype), xyz_cam)


# --------------------------------------------------------------------------------------------------------------
# rotations


def look_at_w2c(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """OpenCV world-to-camera looking from ``eye`` at ``target``; ``up`` is the world's up (camera -y).

    Args:
        eye, target, up: (..., 3).
    Returns:
        w2c: (..., 4, 4).
    """
    z = target - eye
    z = z / z.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    x = torch.linalg.cross(z, up)  # camera y ~ -up, and x = y x z = z x up (right-handed)
    xn = x.norm(dim=-1, keepdim=True)
    if bool((xn < 1e-9).any()):
        raise InputError("look_at: the view direction is parallel to 'up'; choose another up vector")
    x = x / xn
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z], dim=-2)  # rows: camera axes in world coordinates
    t = -(R @ eye[..., None])[..., 0]
    return make_rigid(R, t)


def axis_angle_to_rotmat(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``axis`` (..., 3) (normalised here), ``angle`` (...,) radians -> (..., 3, 3)."""
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    Kx = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*x.shape, 3, 3)
    s = torch.sin(angle)[..., None, None]
    c = torch.cos(angle)[..., None, None]
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device).expand_as(Kx)
    return eye + s * Kx + (1 - c) * (Kx @ Kx)


def euler_to_rotmat(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Camera rotation from yaw (about camera y, positive turns right), pitch (about x, positive looks up) and
    roll (about z, positive clockwise in the image), radians, applied roll then pitch then yaw.

    Returns ``R_c2w_delta`` (..., 3, 3): the new camera's axes expressed in the old camera's frame.
    """
    ex = torch.tensor([1.0, 0.0, 0.0], dtype=yaw.dtype, device=yaw.device)
    ey = torch.tensor([0.0, 1.0, 0.0], dtype=yaw.dtype, device=yaw.device)
    ez = torch.tensor([0.0, 0.0, 1.0], dtype=yaw.dtype, device=yaw.device)
    Ry = axis_angle_to_rotmat(ey.expand(*yaw.shape, 3), yaw)
    Rx = axis_angle_to_rotmat(ex.expand(*pitch.shape, 3), pitch)  # y is down: +x rotation tilts +z toward -y (up)
    Rz = axis_angle_to_rotmat(ez.expand(*roll.shape, 3), roll)
    return Ry @ Rx @ Rz


def rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) as (w, x, y, z), w >= 0."""
    m = R
    t = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    q = torch.stack(
        [
            1 + t,
            1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        dim=-1,
    )
    # pick the numerically best of the four standard formulas per matrix
    best = q.argmax(dim=-1, keepdim=True)
    cand = torch.stack(
        [
            torch.stack([1 + t, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], q[..., 1], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], q[..., 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], q[..., 3]], -1),
        ],
        dim=-2,
    )  # (..., 4 candidates, 4)
    out = torch.take_along_dim(cand, best[..., None].expand(*best.shape[:-1], 1, 4), dim=-2)[..., 0, :]
    out = out / out.norm(dim=-1, keepdim=True)
    return torch.where(out[..., :1] < 0, -out, out)


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Quaternions (..., 4) as (w, x, y, z) (normalised here) -> rotation matrices (..., 3, 3)."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation of unit quaternions (w, x, y, z), shortest arc.

    Args:
        q0, q1: (4,) or (..., 4); t: (T,) in [0, 1].
    Returns:
        (T, 4) (or (..., T, 4)): constant angular speed from q0 (t=0) to q1 (t=1).
    """
    q0 = q0 / q0.norm(dim=-1, keepdim=True)
    q1 = q1 / q1.norm(dim=-1, keepdim=True)
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)  # (..., 1)
    tt = t[..., None]  # (T, 1)
    sin_theta = torch.sin(theta)
    small = sin_theta < 1e-6
    w0 = torch.where(small, 1 - tt, torch.sin((1 - tt) * theta) / torch.where(small, 1.0, sin_theta))
    w1 = torch.where(small, tt, torch.sin(tt * theta) / torch.where(small, 1.0, sin_theta))
    out = w0 * q0[..., None, :] + w1 * q1[..., None, :]
    return out / out.norm(dim=-1, keepdim=True)


def rotation_angle_deg(R: torch.Tensor) -> torch.Tensor:
    """Angle of rotations (..., 3, 3) in degrees, (...,)."""
    return angle_deg_from_trace(R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2])


def angle_deg_from_trace(trace: torch.Tensor) -> torch.Tensor:
    """Angle in degrees of rotations given their traces (any shape): ``acos((trace - 1) / 2)``, clamped. The angle
    between R_i and R_j is that of ``trace(R_i R_j^T) = sum(R_i * R_j)``."""
    return torch.rad2deg(torch.acos(((trace - 1) / 2).clamp(-1.0, 1.0)))
