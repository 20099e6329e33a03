"""Camera-file readers: COLMAP, RealEstate10K, nerfstudio/NeRF, WorldScore and mirage's own JSON.

:func:`read_camera_file` returns a :class:`~mirage.trajectory.types.Trajectory` in the file's own units and image
size: it is neither re-based nor resized (the trajectory dispatcher does that). Every malformed input raises
:class:`~mirage.errors.TrajectoryError` with one line naming the file (and the line for text formats), the value
and the fix.

Formats and their conventions (all converted to OpenCV world-to-camera and pixel-centre intrinsics,
``docs/conventions.md``):

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

import json
import logging
import math
import statistics
import struct
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from mirage.camera import intrinsics_from_normalized, invert_rigid, is_rotation, opengl_to_opencv_c2w
from mirage.errors import TrajectoryError
from mirage.limits import echo
from mirage.trajectory.colmap import colmap_cameras, find_colmap_model, parse_number, read_text
from mirage.trajectory.types import TRAJECTORY_JSON_FORMAT, TRAJECTORY_JSON_VERSION, Trajectory

logger = logging.getLogger("mirage")

DEFAULT_FPS = 30.0  # frame rate of files that carry none
_RE10K_COLUMNS = 19  # timestamp fx fy cx cy 0 0 + 12 (3x4 w2c)
_NERF_PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
_NERF_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


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
        d = _load_json(path)
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
    if len(tok) != _RE10K_COLUMNS:
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
            parts = _read_re10k(path, size)
        elif fmt is TrajFormat.NERFSTUDIO:
            parts = _read_nerfstudio(path, size)
        elif fmt is TrajFormat.WORLDSCORE:
            parts = _read_worldscore(path, size)
        else:  # MIRAGE
            parts = _read_mirage(path)
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


_Parts = tuple[torch.Tensor, torch.Tensor, int, int, float | None, tuple[str, ...] | None]


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


# --------------------------------------------------------------------------------------------------------------
# shared helpers


def _load_json(path: Path) -> Any:
    text = read_text(path)
    if not text.strip():
        raise TrajectoryError(f"{path}: empty file; pass a camera file with frames")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TrajectoryError(
            f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno}); fix the file"
        ) from None
    except RecursionError:
        raise TrajectoryError(f"{path}: JSON nested too deeply; a camera file is a shallow object") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise TrajectoryError(f"{path}: invalid JSON ({echo(str(e), 120)}); fix the file") from None


def _need_size(path: Path, size: tuple[int, int] | None, why: str) -> tuple[int, int]:
    if size is None:
        raise TrajectoryError(f"{path}: {why}; pass --size WxH or --image")
    return size


def _short(v: Any) -> str:
    return echo(v, 60)  # bounded time and length, whatever the file holds


def _json_number(v: Any, path: Path, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TrajectoryError(f"{path}: {key} is {_short(v)}, not a number; fix the file")
    x = float(v)
    if not math.isfinite(x):
        raise TrajectoryError(f"{path}: {key} is {_short(v)}; every value must be finite")
    return x


def _json_int(v: Any, path: Path, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer() or v <= 0:
        raise TrajectoryError(
            f"{path}: {key} is {_short(v)}, not a positive whole number of pixels; fix the file"
        )
    return int(v)


def _json_matrix(v: Any, rows: tuple[int, ...], cols: int, path: Path, key: str) -> torch.Tensor:
    """A JSON list of ``r`` lists of ``cols`` numbers, ``r`` in ``rows``. Returns (r, cols) float64."""
    if (
        not isinstance(v, list)
        or len(v) not in rows
        or not all(isinstance(r, list) and len(r) == cols for r in v)
    ):
        want = " or ".join(f"{r}x{cols}" for r in rows)
        raise TrajectoryError(f"{path}: {key} must be a {want} list of rows, got {_short(v)}; fix the file")
    vals = [[_json_number(x, path, f"{key}[{i}][{j}]") for j, x in enumerate(r)] for i, r in enumerate(v)]
    return torch.tensor(vals, dtype=torch.float64)


def _rigid_4x4(m: torch.Tensor, path: Path, key: str) -> torch.Tensor:
    """Complete a (3, 4) or (4, 4) float64 matrix to (4, 4); the last row must be ``0 0 0 1``."""
    if m.shape[0] == 3:
        m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=m.dtype)], dim=0)
    if not torch.allclose(m[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=m.dtype), atol=1e-6):
        raise TrajectoryError(
            f"{path}: {key}'s last row is {m[3].tolist()}, not [0, 0, 0, 1]; it must be a rigid camera pose"
        )
    return m


def _check_rotation(R: torch.Tensor, path: Path, key: str) -> None:
    if not bool(is_rotation(R)):
        raise TrajectoryError(
            f"{path}: {key}'s rotation is not a rotation matrix (orthonormal, det +1, det={float(torch.linalg.det(R)):.4g}); "
            "check the file's convention and column order"
        )


def _gl_c2w_to_w2c(c2w_gl: torch.Tensor, path: Path, key: str) -> torch.Tensor:
    """(4, 4) OpenGL camera-to-world -> (4, 4) OpenCV world-to-camera, checking the rotation first."""
    _check_rotation(c2w_gl[:3, :3], path, key)
    return invert_rigid(opengl_to_opencv_c2w(c2w_gl))


# --------------------------------------------------------------------------------------------------------------
# RealEstate10K


def _read_re10k(path: Path, size: tuple[int, int] | None) -> _Parts:
    lines = read_text(path).splitlines()
    rows: list[tuple[int, str, list[float]]] = []
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s:
            continue
        if not rows and s.startswith(("http://", "https://")):
            continue  # the video URL
        tok = s.split()
        if len(tok) != _RE10K_COLUMNS:
            raise TrajectoryError(
                f"{path}:{lineno}: {len(tok)} columns, expected {_RE10K_COLUMNS} "
                "(timestamp fx fy cx cy 0 0 and a row-major 3x4 world-to-camera); fix that line"
            )
        vals = [parse_number(t, path, lineno, f"column {j + 1}") for j, t in enumerate(tok)]
        if min(vals[1], vals[2]) <= 0:
            raise TrajectoryError(f"{path}:{lineno}: focal lengths fx={tok[1]} fy={tok[2]} must be positive")
        R = torch.tensor(vals[7:], dtype=torch.float64).reshape(3, 4)[:, :3]
        if not bool(is_rotation(R)):
            raise TrajectoryError(
                f"{path}:{lineno}: the 3x3 part of the pose is not a rotation matrix (orthonormal, det +1); "
                "columns 8-19 must be a row-major 3x4 world-to-camera"
            )
        rows.append((lineno, tok[0], vals))
    if not rows:
        raise TrajectoryError(
            f"{path}: no camera rows (expected a URL line, then one row of 19 numbers per frame)"
        )
    W, H = _need_size(
        path, size, "RealEstate10K intrinsics are normalised by the image size, which the file lacks"
    )
    K = torch.stack(
        [intrinsics_from_normalized(v[1], v[2], v[3], v[4], W, H) for _, _, v in rows]
    )  # (N, 3, 3)
    w2c_34 = torch.tensor([v[7:] for _, _, v in rows], dtype=torch.float64).reshape(-1, 3, 4)  # (N, 3, 4)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand(len(rows), 1, 4)
    w2c = torch.cat([w2c_34, bottom], dim=1)  # (N, 4, 4)
    ts = [v[0] for _, _, v in rows]
    steps = [b - a for a, b in zip(ts[:-1], ts[1:], strict=True)]
    file_fps: float | None = None
    if steps and all(s > 0 for s in steps):
        file_fps = 1e6 / statistics.median(steps)
    else:
        logger.info("%s: timestamps do not increase; using %g fps", path, DEFAULT_FPS)
    return K, w2c, W, H, file_fps, tuple(name for _, name, _ in rows)


# --------------------------------------------------------------------------------------------------------------
# nerfstudio / NeRF


def _read_nerfstudio(path: Path, size: tuple[int, int] | None) -> _Parts:
    d = _load_json(path)
    if not isinstance(d, dict):
        raise TrajectoryError(
            f"{path}: top level is {type(d).__name__}, expected an object with 'frames'; fix the file"
        )
    if "camera_path" in d and "frames" not in d:
        return _read_ns_camera_path(path, d)
    frames = d.get("frames")
    if not isinstance(frames, list) or not frames:
        raise TrajectoryError(
            f"{path}: missing or empty 'frames' list; a transforms.json needs one entry per image"
        )
    model = d.get("camera_model")
    if model is not None and model not in _NERF_PINHOLE_MODELS:
        raise TrajectoryError(
            f"{path}: camera_model {_short(model)} is not a pinhole model; mirage reads {', '.join(_NERF_PINHOLE_MODELS)}"
        )
    Ks, w2cs, names = [], [], []
    sizes: set[tuple[int, int]] = set()
    distorted = False
    for i, fr in enumerate(frames):
        key = f"frames[{i}]"
        if not isinstance(fr, dict):
            raise TrajectoryError(f"{path}: {key} is {_short(fr)}, expected an object; fix the file")
        if "transform_matrix" not in fr:
            raise TrajectoryError(
                f"{path}: {key} has no 'transform_matrix'; every frame needs its camera-to-world"
            )

        def get(name: str, fr: dict = fr) -> Any:
            return fr[name] if name in fr else d.get(name)

        m = _json_matrix(fr["transform_matrix"], (3, 4), 4, path, f"{key}.transform_matrix")
        c2w_gl = _rigid_4x4(m, path, f"{key}.transform_matrix")
        w2cs.append(_gl_c2w_to_w2c(c2w_gl, path, f"{key}.transform_matrix"))
        if get("w") is not None or get("h") is not None:
            if get("w") is None or get("h") is None:
                raise TrajectoryError(
                    f"{path}: {key} has only one of 'w' and 'h'; give both image dimensions"
                )
            W, H = _json_int(get("w"), path, f"{key}.w"), _json_int(get("h"), path, f"{key}.h")
        else:
            W, H = _need_size(path, size, "the file has no image size ('w', 'h')")
        sizes.add((W, H))
        fx = _nerf_focal(get, "x", W, path, key)
        if fx is None:
            raise TrajectoryError(f"{path}: {key} has no focal length ('fl_x' or 'camera_angle_x'); add one")
        fy = _nerf_focal(get, "y", H, path, key)
        if fy is None:
            fy = fx
        if fx <= 0 or fy <= 0:
            raise TrajectoryError(f"{path}: {key} focal lengths fl_x={fx:g} fl_y={fy:g} must be positive")
        # nerfstudio's principal point is edge-based (centre of a W-wide image = W / 2): pixel-centre = cx - 0.5
        cx = _json_number(get("cx"), path, f"{key}.cx") if get("cx") is not None else W / 2.0
        cy = _json_number(get("cy"), path, f"{key}.cy") if get("cy") is not None else H / 2.0
        Ks.append(
            torch.tensor([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
        )
        for k in _NERF_DISTORTION_KEYS:
            if get(k) is not None and _json_number(get(k), path, f"{key}.{k}") != 0.0:
                distorted = True
        fp = fr.get("file_path")
        names.append(fp if isinstance(fp, str) else None)
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
        raise TrajectoryError(
            f"{path}: frames have different image sizes ({listed}); mirage needs one image size"
        )
    if distorted:
        logger.warning("%s: lens distortion (k1..k4, p1, p2) is ignored (pinhole cameras are used)", path)
    W, H = sizes.pop()
    all_named = all(n is not None for n in names)
    return torch.stack(Ks), torch.stack(w2cs), W, H, None, (tuple(names) if all_named else None)  # type: ignore[arg-type]


def _nerf_focal(get: Callable[[str], Any], axis: str, size: int, path: Path, key: str) -> float | None:
    """Focal length in pixels along ``axis`` ("x"/"y") from ``fl_<axis>`` or ``camera_angle_<axis>`` (the full
    FoV in radians over ``size`` pixels); None when the frame has neither."""
    if get(f"fl_{axis}") is not None:
        return _json_number(get(f"fl_{axis}"), path, f"{key}.fl_{axis}")
    if get(f"camera_angle_{axis}") is None:
        return None
    angle = _json_number(get(f"camera_angle_{axis}"), path, f"{key}.camera_angle_{axis}")
    if not 0 < angle < math.pi:
        raise TrajectoryError(f"{path}: {key}.camera_angle_{axis} = {angle} is not in (0, pi) radians; fix the file")
    return 0.5 * size / math.tan(0.5 * angle)


def _read_ns_camera_path(path: Path, d: dict) -> _Parts:
    """nerfstudio ``camera_path.json``: see the module docstring."""
    cam_type = d.get("camera_type", "perspective")
    if not isinstance(cam_type, str) or cam_type.lower() != "perspective":
        raise TrajectoryError(
            f"{path}: camera_type {_short(cam_type)} is not a pinhole camera; mirage reads perspective camera paths"
        )
    for k in ("render_width", "render_height"):
        if k not in d:
            raise TrajectoryError(f"{path}: missing {k!r}; a nerfstudio camera path needs its render size")
    W, H = _json_int(d["render_width"], path, "render_width"), _json_int(d["render_height"], path, "render_height")
    fps = _json_number(d["fps"], path, "fps") if d.get("fps") is not None else None
    if fps is not None and fps <= 0:
        raise TrajectoryError(f"{path}: fps is {fps:g}; it must be positive")
    cams = d["camera_path"]
    if not isinstance(cams, list) or not cams:
        raise TrajectoryError(f"{path}: 'camera_path' is {_short(cams)}; it needs one entry per frame")
    Ks, w2cs = [], []
    for i, cam in enumerate(cams):
        key = f"camera_path[{i}]"
        if not isinstance(cam, dict) or "camera_to_world" not in cam:
            raise TrajectoryError(f"{path}: {key} has no 'camera_to_world'; every frame needs its pose")
        flat = cam["camera_to_world"]
        if not isinstance(flat, list) or len(flat) != 16:
            raise TrajectoryError(
                f"{path}: {key}.camera_to_world must be 16 numbers (a row-major 4x4), got {_short(flat)}"
            )
        m = _json_matrix([flat[r * 4:(r + 1) * 4] for r in range(4)], (4,), 4, path, f"{key}.camera_to_world")
        w2cs.append(_gl_c2w_to_w2c(_rigid_4x4(m, path, f"{key}.camera_to_world"), path, f"{key}.camera_to_world"))
        if cam.get("fov") is None:
            raise TrajectoryError(f"{path}: {key} has no 'fov' (vertical field of view, degrees); add it")
        fov = _json_number(cam["fov"], path, f"{key}.fov")
        if not 0 < fov < 180:
            raise TrajectoryError(f"{path}: {key}.fov = {fov:g} is not in (0, 180) degrees; fix the file")
        f = 0.5 * H / math.tan(math.radians(fov) / 2)
        # principal point at the image centre, edge-based W/2 in nerfstudio -> pixel-centre (W - 1)/2
        Ks.append(torch.tensor([[f, 0.0, W / 2.0 - 0.5], [0.0, f, H / 2.0 - 0.5], [0.0, 0.0, 1.0]],
                               dtype=torch.float64))
    return torch.stack(Ks), torch.stack(w2cs), W, H, fps, None


# --------------------------------------------------------------------------------------------------------------
# WorldScore


def _read_worldscore(path: Path, size: tuple[int, int] | None) -> _Parts:
    d = _load_json(path)
    if not isinstance(d, dict):
        raise TrajectoryError(
            f"{path}: top level is {type(d).__name__}, expected a WorldScore camera_data object"
        )
    key = "cameras_interp" if "cameras_interp" in d else "cameras"
    cams = d.get(key)
    if not isinstance(cams, list) or not cams:
        raise TrajectoryError(
            f"{path}: missing or empty 'cameras_interp' / 'cameras' list; a camera_data.json needs 4x4 camera-to-world "
            "matrices"
        )
    if "focal_length" not in d:
        raise TrajectoryError(
            f"{path}: missing 'focal_length' (pixels); WorldScore writes it, add it to the file"
        )
    f = _json_number(d["focal_length"], path, "focal_length")
    if f <= 0:
        raise TrajectoryError(f"{path}: focal_length = {f:g} must be positive (pixels)")
    if "width" in d and "height" in d:  # written by mirage's --worldscore: the focal length refers to this size
        W, H = _json_int(d["width"], path, "width"), _json_int(d["height"], path, "height")
    else:
        W, H = _need_size(path, size, "WorldScore camera_data.json has no image size")
    w2cs = []
    for i, m in enumerate(cams):
        k = f"{key}[{i}]"
        c2w_gl = _rigid_4x4(_json_matrix(m, (3, 4), 4, path, k), path, k)
        w2cs.append(_gl_c2w_to_w2c(c2w_gl, path, k))
    K = torch.tensor([[f, 0.0, (W - 1) / 2.0], [0.0, f, (H - 1) / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    n = len(w2cs)
    return K.expand(n, 3, 3).clone(), torch.stack(w2cs), W, H, None, None


# --------------------------------------------------------------------------------------------------------------
# mirage JSON


def _read_mirage(path: Path) -> _Parts:
    d = _load_json(path)
    if not isinstance(d, dict) or d.get("format") != TRAJECTORY_JSON_FORMAT:
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise TrajectoryError(
            f"{path}: 'format' is {_short(got)}, expected {TRAJECTORY_JSON_FORMAT!r}; pass --format for other files"
        )
    version = d.get("version")
    if version != TRAJECTORY_JSON_VERSION or isinstance(version, bool):
        raise TrajectoryError(
            f"{path}: unsupported version {_short(version)}; this mirage reads version {TRAJECTORY_JSON_VERSION} "
            "(re-export with `mirage traj convert`)"
        )
    for k in ("width", "height", "fps", "frames"):
        if k not in d:
            raise TrajectoryError(
                f"{path}: missing key {k!r}; a mirage trajectory needs width, height, fps and frames"
            )
    W = _json_int(d["width"], path, "width")
    H = _json_int(d["height"], path, "height")
    fps = _json_number(d["fps"], path, "fps")
    if fps <= 0:
        raise TrajectoryError(f"{path}: fps = {fps:g} must be positive")
    frames = d["frames"]
    if not isinstance(frames, list) or not frames:
        raise TrajectoryError(f"{path}: 'frames' must be a non-empty list of {{'K', 'w2c'}} objects")
    Ks, w2cs, names = [], [], []
    for i, fr in enumerate(frames):
        key = f"frames[{i}]"
        if not isinstance(fr, dict) or "K" not in fr or "w2c" not in fr:
            raise TrajectoryError(
                f"{path}: {key} must be an object with 'K' (3x3) and 'w2c' (4x4), got {_short(fr)}"
            )
        K = _json_matrix(fr["K"], (3,), 3, path, f"{key}.K")
        if K[2].tolist() != [0.0, 0.0, 1.0] or K[1, 0] != 0.0:
            raise TrajectoryError(
                f"{path}: {key}.K = {K.tolist()} is not [[fx, s, cx], [0, fy, cy], [0, 0, 1]]; fix the file"
            )
        Ks.append(K)
        w2c = _json_matrix(fr["w2c"], (4,), 4, path, f"{key}.w2c")
        _rigid_4x4(w2c, path, f"{key}.w2c")
        _check_rotation(w2c[:3, :3], path, f"{key}.w2c")
        w2cs.append(w2c)
        n = fr.get("name")
        names.append(n if isinstance(n, str) else None)
    all_named = all(n is not None for n in names)
    return torch.stack(Ks), torch.stack(w2cs), W, H, fps, (tuple(names) if all_named else None)  # type: ignore[arg-type]
