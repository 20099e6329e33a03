"""The one camera-path type every preset and file format resolves to."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from mirage.camera import (
    check_poses,
    fov_x_from_intrinsics,
    invert_rigid,
    make_rigid,
    quat_to_rotmat,
    rotation_angle_deg,
    rotmat_to_quat,
    scale_intrinsics,
    slerp,
)
from mirage.errors import TrajectoryError

TRAJECTORY_JSON_FORMAT = "mirage-trajectory"
TRAJECTORY_JSON_VERSION = 1


@dataclass(frozen=True)
class TrajectoryStats:
    """Summary numbers of a trajectory (for ``mirage traj show`` and reports)."""

    frames: int
    fps: float
    duration_s: float
    fov_x_deg_first: float
    fov_x_deg_min: float
    fov_x_deg_max: float
    path_length: float  # sum of camera-centre steps, in the trajectory's units
    max_translation: float  # largest distance of a camera centre from frame 0's
    max_rotation_deg: float  # largest rotation of a frame relative to frame 0


@dataclass(frozen=True)
class Trajectory:
    """Per-frame cameras for one image size.

    Attributes:
        K: (N, 3, 3) float64 pixel intrinsics for an image of ``width`` x ``height``.
        w2c: (N, 4, 4) float64 world-to-camera, OpenCV axes. Frame 0 is the input image's camera.
        width, height: image size in pixels the intrinsics refer to.
        fps: frames per second of the video made from it.
        source: where it came from (a preset name or a file path), for reports.
        names: optional per-frame names (COLMAP image names, timestamps).
    """

    K: torch.Tensor
    w2c: torch.Tensor
    width: int
    height: int
    fps: float
    source: str = ""
    names: tuple[str, ...] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        where = self.source or "trajectory"
        if self.K.ndim != 3 or self.K.shape[-2:] != (3, 3):
            raise TrajectoryError(f"{where}: intrinsics must have shape (N, 3, 3), got {tuple(self.K.shape)}")
        if self.w2c.shape[0] != self.K.shape[0]:
            raise TrajectoryError(
                f"{where}: {self.K.shape[0]} intrinsics for {self.w2c.shape[0]} poses; give one per frame"
            )
        if self.w2c.shape[0] < 1:
            raise TrajectoryError(f"{where}: no frames")
        if not (isinstance(self.width, int) and isinstance(self.height, int)) or self.width < 1 or self.height < 1:
            raise TrajectoryError(f"{where}: image size {self.width}x{self.height} is not a positive integer size")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise TrajectoryError(f"{where}: fps={self.fps} must be a positive finite number")
        if not bool(torch.isfinite(self.K).all()):
            raise TrajectoryError(f"{where}: intrinsics hold NaN or inf; fix the file")
        if not bool((self.K[:, 0, 0] > 0).all() and (self.K[:, 1, 1] > 0).all()):
            raise TrajectoryError(f"{where}: focal lengths must be positive")
        try:
            check_poses(self.w2c, where)
        except Exception as e:  # re-raise as a trajectory error with the same one line
            raise TrajectoryError(str(e)) from None
        if self.names is not None and len(self.names) != self.w2c.shape[0]:
            raise TrajectoryError(f"{where}: {len(self.names)} names for {self.w2c.shape[0]} frames")

    # ----------------------------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(self.w2c.shape[0])

    def __len__(self) -> int:
        return self.num_frames

    @property
    def c2w(self) -> torch.Tensor:
        """(N, 4, 4) camera-to-world, OpenCV axes."""
        return invert_rigid(self.w2c)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    # ----------------------------------------------------------------------------------------------------------
    def rebased(self) -> Trajectory:
        """The same relative motion with frame 0 at the world origin (``w2c[0] = I``).

        ``w2c_i' = w2c_i @ c2w_0``: relative poses ``w2c_i @ c2w_j`` are kept exactly.
        """
        c2w0 = invert_rigid(self.w2c[0])
        return replace(self, w2c=self.w2c @ c2w0)

    def scaled(self, factor: float) -> Trajectory:
        """Translations multiplied by ``factor`` (rotations and intrinsics kept)."""
        if not (math.isfinite(factor) and factor > 0):
            raise TrajectoryError(f"--traj-scale: {factor} must be a positive finite number")
        w2c = self.w2c.clone()
        w2c[:, :3, 3] *= factor
        return replace(self, w2c=w2c)

    def resized(self, width: int, height: int, *, rtol: float = 0.01) -> Trajectory:
        """The same cameras for another image size of the same aspect ratio (intrinsics rescaled).

        Raises :class:`TrajectoryError` when the aspect ratio differs by more than ``rtol``: the cameras would
        not fit the image, and silently stretching them would distort the geometry.
        """
        if (width, height) == (self.width, self.height):
            return self
        a_src, a_dst = self.width / self.height, width / height
        if abs(a_src - a_dst) > rtol * a_src:
            raise TrajectoryError(
                f"{self.source or 'trajectory'}: cameras are for {self.width}x{self.height} "
                f"(aspect {a_src:.3f}), the image is {width}x{height} (aspect {a_dst:.3f}); "
                "crop or resize the image to the trajectory's aspect ratio"
            )
        K = scale_intrinsics(self.K, width / self.width, height / self.height)
        return replace(self, K=K, width=width, height=height)

    def with_fps(self, fps: float) -> Trajectory:
        return replace(self, fps=float(fps))

    def resampled(self, num_frames: int) -> Trajectory:
        """``num_frames`` cameras evenly spaced along the path (SLERP rotations, linear centres and intrinsics)."""
        if num_frames < 2:
            raise TrajectoryError(f"--frames: {num_frames} is fewer than 2; a video needs at least 2 frames")
        n = self.num_frames
        if num_frames == n:
            return self
        if n == 1:
            raise TrajectoryError(f"{self.source}: a single camera cannot be resampled to {num_frames} frames")
        pos = torch.linspace(0, n - 1, num_frames, dtype=torch.float64)
        i0 = pos.floor().long().clamp(max=n - 2)
        t = pos - i0
        c2w = self.c2w
        q = rotmat_to_quat(c2w[:, :3, :3])  # (n, 4)
        qs = torch.stack([slerp(q[a], q[a + 1], tt[None])[0] for a, tt in zip(i0.tolist(), t, strict=True)])
        R = quat_to_rotmat(qs)
        C = c2w[i0, :3, 3] * (1 - t[:, None]) + c2w[i0 + 1, :3, 3] * t[:, None]
        K = self.K[i0] * (1 - t[:, None, None]) + self.K[i0 + 1] * t[:, None, None]
        return replace(self, K=K, w2c=invert_rigid(make_rigid(R, C)), names=None)

    # ----------------------------------------------------------------------------------------------------------
    def stats(self) -> TrajectoryStats:
        c2w = self.c2w
        centres = c2w[:, :3, 3]
        steps = (centres[1:] - centres[:-1]).norm(dim=-1)
        rel = c2w[0, :3, :3].transpose(0, 1) @ c2w[:, :3, :3]
        fov = fov_x_from_intrinsics(self.K, self.width)
        return TrajectoryStats(
            frames=self.num_frames,
            fps=self.fps,
            duration_s=self.num_frames / self.fps,
            fov_x_deg_first=float(fov[0]),
            fov_x_deg_min=float(fov.min()),
            fov_x_deg_max=float(fov.max()),
            path_length=float(steps.sum()) if len(steps) else 0.0,
            max_translation=float((centres - centres[0]).norm(dim=-1).max()),
            max_rotation_deg=float(rotation_angle_deg(rel).max()),
        )

    def to_json_dict(self) -> dict:
        """The resolved trajectory JSON (``mirage traj convert``): pixel K, OpenCV w2c."""
        return {
            "format": TRAJECTORY_JSON_FORMAT,
            "version": TRAJECTORY_JSON_VERSION,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "frames": [
                {"K": k.tolist(), "w2c": w.tolist(), **({"name": n} if self.names else {})}
                for k, w, n in zip(self.K, self.w2c, self.names or [None] * self.num_frames, strict=True)
            ],
        }

    def save_json(self, path: str | Path) -> None:
        """Write :meth:`to_json_dict` atomically (temp file, then rename)."""
        from mirage.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_json_dict(), indent=1))
