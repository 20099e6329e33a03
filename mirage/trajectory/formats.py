"""Camera-file readers: COLMAP, RealEstate10K, nerfstudio/NeRF, WorldScore and mirage's own JSON.

:func:`read_camera_file` returns a :class:`~mirage.trajectory.types.Trajectory` in the file's own units and image
size: it is neither re-based nor resized (the trajectory dispatcher does that). Every malformed input raises
:class:`~mirage.errors.TrajectoryError` with one line naming the file (and the line for text formats), the value
and the fix.

Detection and the entry point live here; the readers in :mod:`mirage.trajectory.colmap` (COLMAP) and
:mod:`mirage.trajectory.file_readers` (the others). Formats and their conventions (all converted to OpenCV
world-to-camera and pixel-centre intrinsics, ``docs/conventions.md``):

- **COLMAP** sparse model (text or binary): see :mod:`mirage.trajectory.colmap`.
- **RealEstate10K** ``.txt``: line 1 the video URL, then ``timestamp fx fy cx cy 0 0`` + the 12 numbers of a
  row-major 3x4 world-to-camera (OpenCV axes). Intrinsics are normalised by the image size (edge-based), so the
  image size must be given; :func:`mirage.camera.intrinsics_from_normalized` converts them. Timestamps are in
  microseconds; the fps is ``1e6 / median step`` when they increase, else 30.
- **nerfstudio / NeRF** ``transforms.json``: per frame an OpenGL camera-to-world ``transform_matrix`` (x right,
  y up, z backward), converted with :func:`mirage.camera.opengl_to_opencv_c2w` and inverted. Intrinsics are global
  or per frame: ``fl_x, fl_y, cx, cy, w, h``, or NeRF-synthetic ``camera_angle_x`` (horizontal FoV in radians,
  principal point at the image centre). nerfstudio's ``cx, cy`` are edge-based (the centre of a W-wide image is
  ``W / 2``), mirage's are pixel-centre based, so ``cx_mirage = cx - 0.5``. Frames keep the file's order.
  Distortion coefficients (``k1``... ``p2``) are ignored with a warning; non-pinhole ``camera_model`` values
  (fisheye, equirectangular) are rejected.
- **nerfstudio** ``camera_path.json`` (what the viewer exports and ``ns-render camera-path`` reads; read as
  nerfstudio's ``get_path_from_json`` does): ``render_width``, ``render_height``, ``fps`` and a ``camera_path`` list
  whose entries hold ``camera_to_world`` (16 numbers, a row-major 4x4 OpenGL camera-to-world) and ``fov`` (the
  *vertical* field of view in degrees, three.js style: ``f = (H / 2) / tan(fov / 2)`` for both axes; principal
  point at the image centre). ``camera_type`` other than ``perspective`` (fisheye, equirectangular,
  omnidirectional) is rejected. The poses are in the viewer's world (nerfstudio's normalised scene), which mirage
  re-bases on the first frame like any camera file.
- **WorldScore** ``camera_data.json``. Found in WorldScore's ``worldscore/benchmark/helpers/camera_generator.py``
  (``CameraGen.save_cameras``) and ``worldscore/benchmark/utils/utils.py`` (``save_cameras``, ``create_cameras``,
  ``convert_*_blender``), read from the copy in FofGofx/WorldCache (the upstream repository haoyi-duan/WorldScore
  was not in the index). The file is ``{"focal_length": f, "scale": camera_speed, "cameras": [...],
  "cameras_interp": [...]}``: ``cameras`` are the keyframe cameras, ``cameras_interp`` the per-frame interpolated
  path (SLERP rotations, linear translations); each entry is a 4x4 **Blender/OpenGL camera-to-world** (WorldScore
  builds a PyTorch3D world-to-camera, flips it with ``diag(-1, 1, -1, 1)`` and inverts it). ``save_cameras`` in
  ``utils.py`` writes only ``focal_length`` and ``cameras_interp``. ``focal_length`` is in pixels (default 500 in
  ``CameraGen``) for the generated frames, whose size is not stored: the image size must be given, and the
  principal point is the image centre. ``scale`` is already applied to the translations and is not used.
  ``cameras_interp`` is read when present, else ``cameras``. There is no fps in the file (30 unless given).
- **mirage** JSON: ``{"format": "mirage-trajectory", "version": 1, "width", "height", "fps",
  "frames": [{"K": 3x3, "w2c": 4x4, "name"?}]}`` (:meth:`Trajectory.to_json_dict`); read back bit-exactly.

An explicit ``fps`` argument overrides the file's frame rate; ``width``/``height`` are used only when the file
holds no image size (a file's own size wins; the dispatcher resizes afterwards).
"""

from __future__ import annotations

import logging
import math
import struct
from enum import Enum
from pathlib import Path

import torch

from mirage.errors import TrajectoryError
from mirage.limits import echo
from mirage.trajectory.colmap import colmap_cameras, find_colmap_model, read_text
from mirage.trajectory.file_readers import (
    DEFAULT_FPS,
    RE10K_COLUMNS,
    load_json,
    read_mirage,
    read_nerfstudio,
    read_re10k,
    read_worldscore,
)
from mirage.trajectory.types import TRAJECTORY_JSON_FORMAT, Trajectory

logger = logging.getLogger("mirage")



class TrajFormat(str, Enum):
    """Camera-file formats (``--format`` choices)."""

    AUTO = "auto"  # detect from the path and content (detect_format)
    PRESET = "preset"  # a mirage YAML preset (resolved by the preset module, not here)
    COLMAP = "colmap"  # COLMAP sparse model folder, text or binary
    REALESTATE10K = "realestate10k"  # RealEstate10K camera .txt
    NERFSTUDIO = "nerfstudio"  # nerfstudio / NeRF transforms.json, or a nerfstudio camera_path.json
    WORLDSCORE = "worldscore"  # WorldScore camera_data.json
    MIRAGE = "mirage"  # mirage's own trajectory JSON


_CHOICES = ", ".join(f.value for f in TrajFormat if f is not TrajFormat.AUTO)


# --------------------------------------------------------------------------------------------------------------
# detection


def detect_format(path: Path) -> TrajFormat:
    """The format of a camera file or folder, from its name and content.

    A folder (or ``cameras``/``images`` file) of a COLMAP model -> COLMAP; ``.yaml``/``.yml`` -> PRESET; ``.txt``
    whose first line is a URL or whose first row has 19 numbers -> REALESTATE10K; ``.json`` with
    ``"format": "mirage-trajectory"`` -> MIRAGE, with ``frames`` holding ``transform_matrix`` or ``camera_path``
    holding ``camera_to_world`` -> NERFSTUDIO, with
    ``cameras_interp`` (or ``cameras`` and ``focal_length``) -> WORLDSCORE.

    Raises:
        TrajectoryError: the path does not exist or matches no format (the message lists ``--format`` choices).
    """
    path = Path(path)
    if not path.exists():
        raise TrajectoryError(f"{path}: no such file or folder; check the trajectory path")
    if find_colmap_model(path) is not None:
        return TrajFormat.COLMAP
    if path.is_dir():
        raise TrajectoryError(
            f"{path}: folder holds no COLMAP model (cameras.txt/.bin here or in sparse/0); pass a camera file"
        )
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return TrajFormat.PRESET
    if suffix == ".txt":
        first = _first_line(path)
        if first.startswith(("http://", "https://")) or _is_re10k_row(first):
            return TrajFormat.REALESTATE10K
    elif suffix == ".json":
        d = load_json(path)
        if isinstance(d, dict):
            if d.get("format") == TRAJECTORY_JSON_FORMAT:
                return TrajFormat.MIRAGE
            frames = d.get("frames")
            if isinstance(frames, list) and any(
                isinstance(f, dict) and "transform_matrix" in f for f in frames
            ):
                return TrajFormat.NERFSTUDIO
            path_list = d.get("camera_path")
            if isinstance(path_list, list) and any(
                isinstance(c, dict) and "camera_to_world" in c for c in path_list
            ):
                return TrajFormat.NERFSTUDIO
            if "cameras_interp" in d or ("cameras" in d and "focal_length" in d):
                return TrajFormat.WORLDSCORE
    raise TrajectoryError(
        f"{path}: cannot tell the camera-file format from its name and content; pass --format ({_CHOICES})"
    )


def _first_line(path: Path) -> str:
    for line in read_text(path).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _is_re10k_row(line: str) -> bool:
    tok = line.split()
    if len(tok) != RE10K_COLUMNS:
        return False
    try:
        [float(t) for t in tok]
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------------
# entry point


def read_camera_file(
    path: Path,
    fmt: TrajFormat = TrajFormat.AUTO,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    colmap_order: str = "name",
    start: str | None = None,
) -> Trajectory:
    """Read a camera file into a :class:`Trajectory` (file units, not re-based, not resized).

    Args:
        path: the camera file, or a COLMAP model folder (or its parent holding ``sparse/0``).
        fmt: the format; AUTO detects it (:func:`detect_format`).
        width, height: image size in pixels, used when the file holds none (RealEstate10K, WorldScore, NeRF
            without ``w``/``h``); ignored when it does.
        fps: frame rate; overrides the file's (RealEstate10K timestamps, mirage JSON). Default: the file's, else 30.
        colmap_order: COLMAP image order, ``"name"`` or ``"id"``.
        start: name of the frame that becomes frame 0 (COLMAP image name, RealEstate10K timestamp, or a name in
            the file); the frames from it onward are kept.

    Returns:
        Trajectory with ``K`` (N, 3, 3) float64 pixel intrinsics (pixel-centre convention), ``w2c`` (N, 4, 4)
        float64 OpenCV world-to-camera, the file's image size (else ``width`` x ``height``), ``source = str(path)``.

    Raises:
        TrajectoryError: unreadable or malformed file, missing image size, unknown ``start``.
    """
    path = Path(path)
    try:
        fmt = TrajFormat(fmt)
    except ValueError:
        raise TrajectoryError(f"--format: {echo(fmt, 60)} is not a choice; use one of auto, {_CHOICES}") from None
    if (width is None) != (height is None):
        raise TrajectoryError(
            f"{path}: image size given as {width}x{height}; pass both width and height (--size WxH)"
        )
    if width is not None and height is not None:
        if (
            isinstance(width, bool)
            or isinstance(height, bool)
            or not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0)
        ):
            raise TrajectoryError(
                f"{path}: image size {width}x{height} is not a positive integer size (--size WxH)"
            )
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise TrajectoryError(f"--fps: {fps} must be a positive finite number")
    if not path.exists():
        raise TrajectoryError(f"{path}: no such file or folder; check the trajectory path")
    if fmt is TrajFormat.AUTO:
        fmt = detect_format(path)
    size = (width, height) if width is not None and height is not None else None
    try:
        if fmt is TrajFormat.PRESET:
            raise TrajectoryError(
                f"{path}: a YAML trajectory preset, not a camera file; presets are resolved by the preset loader"
            )
        if fmt is TrajFormat.COLMAP:
            return _read_colmap(path, fps=fps, order=colmap_order, start=start)
        if fmt is TrajFormat.REALESTATE10K:
            parts = read_re10k(path, size)
        elif fmt is TrajFormat.NERFSTUDIO:
            parts = read_nerfstudio(path, size)
        elif fmt is TrajFormat.WORLDSCORE:
            parts = read_worldscore(path, size)
        else:  # MIRAGE
            parts = read_mirage(path)
    except (KeyError, ValueError, TypeError, IndexError, struct.error, RuntimeError) as e:
        # safety net: a reader bug must still surface as one line naming the file, never a traceback
        msg = " ".join(str(e).split())[:200]
        raise TrajectoryError(
            f"{path}: cannot read as {fmt.value} ({type(e).__name__}: {msg}); check the file"
        ) from e
    K, w2c, w, h, file_fps, names = parts
    if fps is not None and file_fps is not None and abs(fps - file_fps) > 1e-9:
        logger.info("%s: fps %.6g from the file -> %.6g as requested", path, file_fps, fps)
    out_fps = float(fps if fps is not None else (file_fps if file_fps is not None else DEFAULT_FPS))
    K, w2c, names = _start_at(K, w2c, names, start, path)
    return Trajectory(K=K, w2c=w2c, width=w, height=h, fps=out_fps, source=str(path), names=names)


def _start_at(
    K: torch.Tensor, w2c: torch.Tensor, names: tuple[str, ...] | None, start: str | None, path: Path
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...] | None]:
    if start is None:
        return K, w2c, names
    if names is None:
        raise TrajectoryError(
            f"{path}: --start {echo(start, 60)} needs named frames, and this file names none; drop --start"
        )
    if start not in names:
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise TrajectoryError(f"{path}: --start {echo(start, 60)} is not a frame name; valid names include {listed}")
    i = names.index(start)
    return K[i:], w2c[i:], names[i:]


def _read_colmap(path: Path, *, fps: float | None, order: str, start: str | None) -> Trajectory:
    K, w2c, w, h, names, _folder = colmap_cameras(path, order=order, start=start)
    return Trajectory(
        K=K,
        w2c=w2c,
        width=w,
        height=h,
        fps=float(fps if fps is not None else DEFAULT_FPS),
        source=str(path),
        names=names,
    )
