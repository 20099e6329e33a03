"""Camera presets resolved: a :class:`CameraPresetSpec`'s chained segments -> per-frame cameras for one image.

Conventions (OpenCV axes: x right, y down, z forward; see ``docs/conventions.md``):

- Frame 0 is the input camera: ``w2c[0] = I``. The world frame is frame 0's camera frame.
- Each segment starts where the previous one ended, and its motion is expressed in the frame of the camera it
  starts from (a ``truck`` after a ``pan`` moves along the panned camera's x axis).
- Distances are fractions of ``scene_depth`` (the median scene depth, supplied at resolve time), so one preset
  fits a room and a landscape. Angles are degrees.
- Signs: ``dolly`` + moves forward (+z), ``truck`` + moves right (+x), ``pedestal`` + moves up (-y),
  ``pan`` + turns right (scene content moves left in the image), ``tilt`` + looks up, ``roll`` + turns the camera
  clockwise in the image, ``orbit`` ``yaw`` + moves the camera right around the pivot and ``pitch`` + moves it up
  (the pivot stays at the image centre), ``zoom`` ``factor`` > 1 zooms in (focal length x factor).
- Time: the path parameter runs 0 -> 1 over the frames; each segment gets a part proportional to its ``share``.
  Within a segment the motion follows its ``easing`` (``smooth`` = smoothstep ``3t^2 - 2t^3``: the camera starts
  and stops gently; ``linear``: constant speed).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from mirage._check import check_shape
from mirage.camera import (
    axis_angle_to_rotmat,
    euler_to_rotmat,
    intrinsics_from_fov,
    invert_rigid,
    look_at_w2c,
    make_rigid,
    quat_to_rotmat,
    rotmat_to_quat,
    slerp,
)
from mirage.errors import InputError, TrajectoryError
from mirage.limits import MAX_FRAMES
from mirage.trajectory.preset_schema import (
    DEFAULT_FOV_DEG,
    CameraPresetSpec,
    DollySegment,
    DollyZoomSegment,
    Easing,
    KeyframesSegment,
    OrbitSegment,
    PanSegment,
    PedestalSegment,
    RollSegment,
    Segment,
    SpiralSegment,
    TiltSegment,
    TruckSegment,
    ZoomSegment,
)
from mirage.trajectory.types import Trajectory

logger = logging.getLogger("mirage")

_DTYPE = torch.float64  # trajectories are resolved in float64 (Trajectory stores float64)

@dataclass(frozen=True)
class _Motion:
    """Camera motion in the frame of a segment's start camera.

    R: (T, 3, 3) camera-to-start rotation (columns: camera axes); C: (T, 3) centres, scene units;
    focal: (T,) focal-length factor relative to the start.
    """

    R: torch.Tensor
    C: torch.Tensor
    focal: torch.Tensor


def _ease(t: torch.Tensor, easing: Easing) -> torch.Tensor:
    if easing is Easing.SMOOTH:
        return t * t * (3.0 - 2.0 * t)
    return t


def _rot(axis: tuple[float, float, float], angle_rad: torch.Tensor) -> torch.Tensor:
    """Rotations (T, 3, 3) about a fixed camera axis by ``angle_rad`` (T,)."""
    a = torch.tensor(axis, dtype=_DTYPE).expand(*angle_rad.shape, 3)
    return axis_angle_to_rotmat(a, angle_rad)


def _ypr(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor, roll_deg: torch.Tensor) -> torch.Tensor:
    """Yaw/pitch/roll in degrees (preset signs) -> (T, 3, 3) rotations (``euler_to_rotmat``)."""
    return euler_to_rotmat(torch.deg2rad(yaw_deg), torch.deg2rad(pitch_deg), torch.deg2rad(roll_deg))


def _motion(seg: Segment, t: torch.Tensor, depth: float) -> _Motion:
    """Motion of one segment at eased times ``t`` (T,) in [0, 1]; ``depth`` = scene depth (units of the result)."""
    T = t.shape[0]
    eye = torch.eye(3, dtype=_DTYPE).expand(T, 3, 3).clone()
    zero = torch.zeros(T, 3, dtype=_DTYPE)
    one = torch.ones(T, dtype=_DTYPE)
    z = torch.zeros_like(t)
    if isinstance(seg, (DollySegment, TruckSegment, PedestalSegment)):
        axis = {DollySegment: (0.0, 0.0, 1.0), TruckSegment: (1.0, 0.0, 0.0), PedestalSegment: (0.0, -1.0, 0.0)}[type(seg)]
        C = t[:, None] * torch.tensor(axis, dtype=_DTYPE) * (seg.distance * depth)  # (T, 3)
        return _Motion(eye, C, one)
    if isinstance(seg, PanSegment):
        return _Motion(_ypr(seg.angle * t, z, z), zero, one)
    if isinstance(seg, TiltSegment):
        return _Motion(_ypr(z, seg.angle * t, z), zero, one)
    if isinstance(seg, RollSegment):
        return _Motion(_ypr(z, z, seg.angle * t), zero, one)
    if isinstance(seg, ZoomSegment):
        return _Motion(eye, zero, seg.factor ** t)
    if isinstance(seg, OrbitSegment):
        p = seg.pivot_depth * depth
        # moving right around the pivot is a rotation by -yaw about +y; moving up is -pitch about +x
        R = _rot((0.0, 1.0, 0.0), torch.deg2rad(-seg.yaw * t)) @ _rot((1.0, 0.0, 0.0), torch.deg2rad(-seg.pitch * t))
        pivot = torch.tensor([0.0, 0.0, p], dtype=_DTYPE)
        C = pivot - (R @ pivot)  # (T, 3): the pivot stays at (0, 0, p) in every camera
        return _Motion(R, C, one)
    if isinstance(seg, DollyZoomSegment):
        p = seg.pivot_depth * depth
        dz = seg.distance * depth * t  # (T,)
        C = torch.stack([z, z, dz], dim=-1)
        return _Motion(eye, C, (p - dz) / p)  # pivot image size ~ f / (p - dz) stays constant
    if isinstance(seg, SpiralSegment):
        p = seg.pivot_depth * depth
        ang = 2.0 * math.pi * seg.turns * t
        r = seg.radius * depth * t  # radius grows from 0, so the segment starts at its start camera
        C = torch.stack([r * torch.cos(ang), -r * torch.sin(ang), seg.distance * depth * t], dim=-1)  # (T, 3)
        up = torch.tensor([0.0, -1.0, 0.0], dtype=_DTYPE)
        target = torch.tensor([0.0, 0.0, p], dtype=_DTYPE)
        w2c = look_at_w2c(C, target.expand_as(C), up.expand_as(C))
        return _Motion(w2c[:, :3, :3].transpose(-1, -2), C, one)
    if isinstance(seg, KeyframesSegment):
        return _keyframes_motion(seg, t, depth)
    raise AssertionError(f"unhandled segment {seg!r}")  # programming error


def _keyframes_motion(seg: KeyframesSegment, t: torch.Tensor, depth: float) -> _Motion:
    n = len(seg.keys)
    P = torch.zeros(n + 1, 3, dtype=_DTYPE)  # (n+1, 3) waypoints, start camera first
    R = torch.eye(3, dtype=_DTYPE).repeat(n + 1, 1, 1)  # (n+1, 3, 3)
    zoom = torch.ones(n + 1, dtype=_DTYPE)
    up = torch.tensor([0.0, -1.0, 0.0], dtype=_DTYPE)
    for i, key in enumerate(seg.keys, start=1):
        P[i] = torch.tensor(key.position, dtype=_DTYPE) * depth
        zoom[i] = key.zoom
        if key.look_at is not None:
            target = torch.tensor(key.look_at, dtype=_DTYPE) * depth
            try:
                R[i] = look_at_w2c(P[i], target, up)[:3, :3].T
            except InputError:
                raise TrajectoryError(
                    f"keyframes key {i - 1}: look_at {key.look_at} is straight above or below position {key.position} "
                    "(or equal to it); move the target"
                ) from None
        else:
            R[i] = _ypr(*(torch.tensor([v], dtype=_DTYPE) for v in (key.yaw, key.pitch, key.roll)))[0]
    u = t * n
    idx = u.floor().long().clamp(0, n - 1)  # (T,) interval index
    s = u - idx  # (T,) position within the interval, [0, 1]
    # centre: uniform Catmull-Rom through the waypoints, end points repeated
    Pe = torch.cat([P[:1], P, P[-1:]])  # (n+3, 3)
    p0, p1, p2, p3 = Pe[idx], Pe[idx + 1], Pe[idx + 2], Pe[idx + 3]
    s1 = s[:, None]
    C = 0.5 * (2 * p1 + (p2 - p0) * s1 + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s1**2 + (3 * p1 - p0 - 3 * p2 + p3) * s1**3)
    # rotation: SLERP between consecutive waypoints (constant angular speed within an interval)
    q = rotmat_to_quat(R)  # (n+1, 4)
    qt = torch.empty(t.shape[0], 4, dtype=_DTYPE)
    for i in range(n):
        sel = idx == i
        if bool(sel.any()):
            qt[sel] = slerp(q[i], q[i + 1], s[sel])
    focal = torch.exp(torch.log(zoom[idx]) * (1 - s) + torch.log(zoom[idx + 1]) * s)
    return _Motion(quat_to_rotmat(qt), C, focal)


def _base_intrinsics(spec: CameraPresetSpec, width: int, height: int, K: torch.Tensor | None) -> torch.Tensor:
    if K is not None:
        check_shape(K, (3, 3), "K")
        K = K.detach().to(device="cpu", dtype=_DTYPE)
        if not bool(torch.isfinite(K).all()) or float(K[0, 0]) <= 0 or float(K[1, 1]) <= 0:
            raise TrajectoryError(f"K: intrinsics must be finite with positive focal lengths, got {K.tolist()}")
        if spec.fov is not None:
            logger.debug("preset %s: fov %.1f ignored, the image's intrinsics are used", spec.name, spec.fov)
        return K
    fov = spec.fov if spec.fov is not None else DEFAULT_FOV_DEG
    return intrinsics_from_fov(fov, width, height, dtype=_DTYPE)


def resolve_camera_preset(
    spec: CameraPresetSpec,
    *,
    width: int,
    height: int,
    K: torch.Tensor | None = None,
    scene_depth: float = 1.0,
    frames: int | None = None,
    fps: float | None = None,
) -> Trajectory:
    """Cameras of a preset for one image.

    Args:
        spec: a loaded camera preset (:func:`~mirage.trajectory.load_camera_preset`).
        width, height: image size in pixels.
        K: (3, 3) pixel intrinsics of the input image, or None to use the preset's ``fov`` or, without one, a
            60 degree horizontal FoV (principal point at the image centre).
        scene_depth: median scene depth in scene units (> 0); every preset distance is multiplied by it.
        frames: total frames (>= 2), overriding the preset's ``frames``.
        fps: frames per second, overriding the preset's ``fps``.

    Returns:
        Trajectory with ``K`` (N, 3, 3) float64 pixels and ``w2c`` (N, 4, 4) float64 OpenCV, ``w2c[0] = I``,
        translations in the units of ``scene_depth``.
    """
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise TrajectoryError(f"image size {width}x{height}: must be positive integers; pass --size WxH or --image")
    if not (isinstance(scene_depth, (int, float)) and math.isfinite(scene_depth) and scene_depth > 0):
        raise TrajectoryError(f"scene_depth: {scene_depth} must be a positive finite number (median scene depth)")
    n = spec.frames if frames is None else frames
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise TrajectoryError(f"--frames: {n} is fewer than 2 or not an integer; a video needs at least 2 frames")
    try:
        MAX_FRAMES.check(n, "--frames" if frames is not None else f"preset {spec.name} frames")
    except InputError as e:
        raise TrajectoryError(e.message) from None
    fps_v = spec.fps if fps is None else float(fps)
    if not (math.isfinite(fps_v) and fps_v > 0):
        raise TrajectoryError(f"--fps: {fps_v} must be a positive finite number")
    K0 = _base_intrinsics(spec, width, height, K)

    shares = torch.tensor([seg.share for seg in spec.segments], dtype=_DTYPE)
    bounds = torch.cat([torch.zeros(1, dtype=_DTYPE), torch.cumsum(shares, 0) / shares.sum()])  # (S+1,)
    bounds[-1] = 1.0
    s_all = torch.linspace(0.0, 1.0, n, dtype=_DTYPE)  # (N,) path parameter per frame

    R_out = torch.empty(n, 3, 3, dtype=_DTYPE)
    C_out = torch.empty(n, 3, dtype=_DTYPE)
    f_out = torch.empty(n, dtype=_DTYPE)
    R0 = torch.eye(3, dtype=_DTYPE)  # start pose of the current segment (camera-to-world)
    C0 = torch.zeros(3, dtype=_DTYPE)
    f0 = 1.0
    assigned = torch.zeros(n, dtype=torch.bool)
    for k, seg in enumerate(spec.segments):
        easing = seg.easing or spec.easing
        a, b = float(bounds[k]), float(bounds[k + 1])
        sel = (s_all <= b) & ~assigned if k < len(spec.segments) - 1 else ~assigned
        if bool(sel.any()):
            t = ((s_all[sel] - a) / (b - a)).clamp(0.0, 1.0)
            m = _motion(seg, _ease(t, easing), scene_depth)
            R_out[sel] = R0 @ m.R
            C_out[sel] = C0 + m.C @ R0.T
            f_out[sel] = f0 * m.focal
            assigned |= sel
        end = _motion(seg, torch.ones(1, dtype=_DTYPE), scene_depth)  # the next segment starts here
        R0, C0, f0 = R0 @ end.R[0], C0 + R0 @ end.C[0], f0 * float(end.focal[0])

    w2c = invert_rigid(make_rigid(R_out, C_out))  # (N, 4, 4)
    Ks = K0.expand(n, 3, 3).clone()  # (N, 3, 3)
    Ks[:, 0, 0] = K0[0, 0] * f_out
    Ks[:, 0, 1] = K0[0, 1] * f_out
    Ks[:, 1, 1] = K0[1, 1] * f_out
    try:
        return Trajectory(K=Ks, w2c=w2c, width=width, height=height, fps=fps_v, source=f"preset:{spec.name}")
    except TrajectoryError as e:
        raise TrajectoryError(f"preset {spec.name} ({spec.path}): {e.message}") from None


__all__ = ["resolve_camera_preset"]
