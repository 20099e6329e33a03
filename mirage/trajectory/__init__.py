"""Camera trajectories: presets, camera files, and the one dispatcher that turns either into a :class:`Trajectory`.

``load_trajectory("orbit", width=832, height=480)`` resolves a shipped preset; ``load_trajectory("cams.txt", ...)``
reads a camera file (COLMAP, RealEstate10K, nerfstudio, WorldScore, mirage JSON), re-bases it so frame 0 is the
input camera, and fits it to the image size.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from mirage.errors import InputError, TrajectoryError
from mirage.limits import MAX_FRAMES, check_fps
from mirage.trajectory.formats import TrajFormat, detect_format, read_camera_file
from mirage.trajectory.presets import (
    PresetInfo,
    PresetSpec,
    find_preset,
    list_presets,
    load_preset,
    preset_names,
    presets_dir,
    resolve_preset,
)
from mirage.trajectory.types import Trajectory, TrajectoryStats

logger = logging.getLogger("mirage")

_YAML_SUFFIXES = (".yaml", ".yml")


def _looks_like_name(spec: str) -> bool:
    return bool(spec) and "/" not in spec and "\\" not in spec and not Path(spec).suffix


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
    """A trajectory from a preset name, a preset YAML file or a camera file.

    Resolution order: an existing path is read (``.yaml``/``.yml`` or ``fmt=PRESET`` as a preset, anything else
    with :func:`read_camera_file`); a string that is no existing path is looked up as a preset name.

    Presets are resolved for ``width`` x ``height`` (required) with the image intrinsics ``K`` (or the preset's
    FoV), their distances multiplied by ``scene_depth``, at ``frames`` frames. Camera files are read in their own
    units, then ``.scaled(scale)``, ``.rebased()`` (frame 0 = input camera, relative poses exact), ``.resized``
    to ``width`` x ``height`` when given (an aspect-ratio mismatch is an error), ``.resampled(frames)`` and
    ``.with_fps(fps)`` when given. ``scale`` multiplies preset translations too.

    Args:
        spec: preset name (``"orbit"``), preset file, or camera file / COLMAP folder.
        width, height: image size in pixels (both or neither; required for presets).
        K: (3, 3) pixel intrinsics of the input image; used by presets only (a camera file has its own).
        scene_depth: median scene depth (> 0) in scene units; used by presets only.
        fmt: camera-file format; AUTO detects it.
        frames: number of frames (>= 2).
        fps: frames per second (> 0).
        scale: factor on translations (> 0), ``--traj-scale``.
        start: name of the frame that becomes frame 0 (camera files with named frames only).
        colmap_order: COLMAP image order, ``"name"`` or ``"id"``.

    Returns:
        Trajectory: ``K`` (N, 3, 3) float64 pixels, ``w2c`` (N, 4, 4) float64 OpenCV with ``w2c[0] = I``.

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
    preset: PresetSpec | None = None
    if path.exists():
        if fmt is TrajFormat.PRESET or (fmt is TrajFormat.AUTO and path.suffix.lower() in _YAML_SUFFIXES):
            preset = load_preset(path)
    elif fmt in (TrajFormat.AUTO, TrajFormat.PRESET) and _looks_like_name(text) and text in preset_names():
        preset = load_preset(find_preset(text))
    else:
        raise TrajectoryError(
            f"trajectory {text!r}: no such file, and no preset of that name; presets: {', '.join(preset_names())}"
        )

    if preset is not None:
        if start is not None:
            raise TrajectoryError(f"--start {start!r}: applies to camera files with named frames, not to preset {preset.name}")
        if width is None or height is None:
            raise TrajectoryError(f"preset {preset.name}: needs the image size; pass --image IMG or --size WxH")
        traj = resolve_preset(preset, width=width, height=height, K=K, scene_depth=scene_depth, frames=frames, fps=fps)
        return traj.scaled(scale) if scale != 1.0 else traj

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
    return traj


__all__ = [
    "PresetInfo",
    "PresetSpec",
    "TrajFormat",
    "Trajectory",
    "TrajectoryStats",
    "detect_format",
    "find_preset",
    "list_presets",
    "load_preset",
    "load_trajectory",
    "presets_dir",
    "read_camera_file",
    "resolve_preset",
]
