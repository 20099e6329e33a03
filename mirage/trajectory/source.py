"""Where a trajectory comes from: a camera file already read, or a camera preset waiting for the scene depth.

:func:`open_trajectory` validates the ``--traj`` options and reads what can be read without the image's depth: a
camera file becomes a :class:`CameraFileSource` (read, rebased so frame 0 is the input camera, resized to the
image); a preset becomes a :class:`CameraPresetSource`, whose distances are fractions of the scene depth and so
are resolved (:meth:`CameraPresetSource.resolve`) once the depth is known. :func:`load_trajectory` is the two
steps in one call.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from mirage.errors import InputError, TrajectoryError
from mirage.limits import MAX_FRAMES, check_fps
from mirage.trajectory.formats import TrajFormat, read_camera_file
from mirage.trajectory.preset_files import camera_preset_names, find_camera_preset, load_camera_preset
from mirage.trajectory.preset_resolve import resolve_camera_preset
from mirage.trajectory.preset_schema import CameraPresetSpec
from mirage.trajectory.types import Trajectory

logger = logging.getLogger("mirage")

_YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class CameraFileSource:
    """A camera file, read: its cameras are already final (they carry their own intrinsics and scale).

    Attributes:
        trajectory: ``K`` (N, 3, 3) float64 pixels, ``w2c`` (N, 4, 4) float64 OpenCV with ``w2c[0] = I``, scaled
            by ``--traj-scale``, resized to the image size when one was given, resampled to ``--frames``.
    """

    trajectory: Trajectory


@dataclass(frozen=True)
class CameraPresetSource:
    """A camera preset, loaded and validated, waiting for the image (size, intrinsics) and its scene depth."""

    preset: CameraPresetSpec  # the loaded preset file
    frames: int | None = None  # total frames; None: the preset's own
    fps: float | None = None  # frames per second; None: the preset's own
    scale: float = 1.0  # factor on translations (--traj-scale), on top of the scene depth

    def resolve(self, width: int, height: int, K: torch.Tensor | None = None, scene_depth: float = 1.0) -> Trajectory:
        """The preset's cameras for one image.

        Args:
            width, height: image size in pixels.
            K: (3, 3) pixel intrinsics of the image, or None for the preset's FoV (60 degrees without one).
            scene_depth: median scene depth (> 0) in scene units; every preset distance is multiplied by it.

        Returns:
            Trajectory: ``K`` (N, 3, 3) float64 pixels, ``w2c`` (N, 4, 4) float64 OpenCV, ``w2c[0] = I``,
            translations in the units of ``scene_depth`` times ``scale``.
        """
        traj = resolve_camera_preset(self.preset, width=width, height=height, K=K, scene_depth=scene_depth,
                                     frames=self.frames, fps=self.fps)
        return traj.scaled(self.scale) if self.scale != 1.0 else traj


TrajectorySource = CameraFileSource | CameraPresetSource


def _looks_like_name(spec: str) -> bool:
    return bool(spec) and "/" not in spec and "\\" not in spec and not Path(spec).suffix


def open_trajectory(
    spec: str | Path,
    *,
    fmt: TrajFormat = TrajFormat.AUTO,
    frames: int | None = None,
    fps: float | None = None,
    scale: float = 1.0,
    start: str | None = None,
    width: int | None = None,
    height: int | None = None,
    K: torch.Tensor | None = None,
    colmap_order: str = "name",
) -> TrajectorySource:
    """Validate the trajectory options and read ``spec``: a camera file, or a camera preset to resolve later.

    Resolution order: an existing path is read (``.yaml``/``.yml`` or ``fmt=PRESET`` as a preset, anything else
    with :func:`read_camera_file`); a string that is no existing path is looked up as a preset name.

    Camera files are read in their own units, then ``.scaled(scale)``, ``.rebased()`` (frame 0 = input camera,
    relative poses exact), ``.resized`` to ``width`` x ``height`` when given (an aspect-ratio mismatch is an
    error), ``.resampled(frames)`` and ``.with_fps(fps)`` when given. Presets keep ``frames``, ``fps`` and
    ``scale`` for :meth:`CameraPresetSource.resolve`.

    Args:
        spec: preset name (``"orbit"``), preset file, or camera file / COLMAP folder.
        fmt: camera-file format; AUTO detects it.
        frames: number of frames (>= 2).
        fps: frames per second (> 0).
        scale: factor on translations (> 0), ``--traj-scale``.
        start: name of the frame that becomes frame 0 (camera files with named frames only).
        width, height: image size in pixels (both or neither); camera files are resized to it.
        K: (3, 3) pixel intrinsics of the image; unused here (a camera file has its own, a preset takes them at
            :meth:`CameraPresetSource.resolve`), accepted so one set of options opens any source.
        colmap_order: COLMAP image order, ``"name"`` or ``"id"``.

    Raises:
        TrajectoryError: unknown name or missing file (the message lists the presets), malformed input, size or
            aspect mismatch, bad numbers.
    """
    try:
        fmt = TrajFormat(fmt)
    except ValueError:
        raise TrajectoryError(
            f"--format: {fmt!r} is not a choice; use one of {', '.join(f.value for f in TrajFormat)}"
        ) from None
    if (width is None) != (height is None):
        raise TrajectoryError(f"image size {width}x{height}: give both width and height (--size WxH)")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise TrajectoryError(f"--traj-scale: {scale} must be a positive finite number")
    try:
        if fps is not None:
            check_fps(fps, "--fps")
        if frames is not None:
            MAX_FRAMES.check(frames, "--frames")
    except InputError as e:
        raise TrajectoryError(e.message) from None
    text = str(spec)
    path = Path(spec)
    preset: CameraPresetSpec | None = None
    if path.exists():
        if fmt is TrajFormat.PRESET or (fmt is TrajFormat.AUTO and path.suffix.lower() in _YAML_SUFFIXES):
            preset = load_camera_preset(path)
    elif fmt in (TrajFormat.AUTO, TrajFormat.PRESET) and _looks_like_name(text) and text in camera_preset_names():
        preset = load_camera_preset(find_camera_preset(text))
    else:
        raise TrajectoryError(
            f"trajectory {text!r}: no such file, and no preset of that name; presets: {', '.join(camera_preset_names())}"
        )

    if preset is not None:
        if start is not None:
            raise TrajectoryError(f"--start {start!r}: applies to camera files with named frames, not to preset {preset.name}")
        return CameraPresetSource(preset=preset, frames=frames, fps=fps, scale=scale)

    if K is not None:
        logger.debug("%s: camera file intrinsics are used; the image's K is not", path)
    traj = read_camera_file(
        path, fmt, width=width, height=height, fps=fps, colmap_order=colmap_order, start=start
    )
    try:
        MAX_FRAMES.check(traj.num_frames, f"trajectory file {path}")
    except InputError as e:
        raise TrajectoryError(e.message) from None
    if scale != 1.0:
        traj = traj.scaled(scale)
    traj = traj.rebased()
    if width is not None and height is not None:
        traj = traj.resized(width, height)
    if frames is not None:
        if frames != traj.num_frames:
            logger.info("%s: %d frames -> %d (resampled along the path)", path, traj.num_frames, frames)
        traj = traj.resampled(frames)
    if fps is not None:
        traj = traj.with_fps(fps)
    return CameraFileSource(traj)


def load_trajectory(
    spec: str | Path,
    *,
    width: int | None = None,
    height: int | None = None,
    K: torch.Tensor | None = None,
    scene_depth: float = 1.0,
    fmt: TrajFormat = TrajFormat.AUTO,
    frames: int | None = None,
    fps: float | None = None,
    scale: float = 1.0,
    start: str | None = None,
    colmap_order: str = "name",
) -> Trajectory:
    """A trajectory from a preset name, a preset YAML file or a camera file: :func:`open_trajectory`, then, for
    a preset, :meth:`CameraPresetSource.resolve` at ``width`` x ``height`` (required) with ``K`` and
    ``scene_depth``.

    Args:
        spec, fmt, frames, fps, scale, start, colmap_order: as :func:`open_trajectory`.
        width, height: image size in pixels (both or neither; required for presets).
        K: (3, 3) pixel intrinsics of the input image; used by presets only (a camera file has its own).
        scene_depth: median scene depth (> 0) in scene units; used by presets only.

    Returns:
        Trajectory: ``K`` (N, 3, 3) float64 pixels, ``w2c`` (N, 4, 4) float64 OpenCV with ``w2c[0] = I``.

    Raises:
        TrajectoryError: as :func:`open_trajectory`; a preset without an image size.
    """
    src = open_trajectory(spec, fmt=fmt, frames=frames, fps=fps, scale=scale, start=start, width=width,
                          height=height, K=K, colmap_order=colmap_order)
    if isinstance(src, CameraFileSource):
        return src.trajectory
    if width is None or height is None:
        raise TrajectoryError(f"preset {src.preset.name}: needs the image size; pass --image IMG or --size WxH")
    return src.resolve(width, height, K=K, scene_depth=scene_depth)


__all__ = [
    "CameraFileSource",
    "CameraPresetSource",
    "TrajectorySource",
    "load_trajectory",
    "open_trajectory",
]
