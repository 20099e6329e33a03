"""Readers of the text and JSON camera files: RealEstate10K, nerfstudio/NeRF (``transforms.json`` and the viewer's
``camera_path.json``), WorldScore and mirage's own JSON.

Each reader returns the file's cameras as :data:`CameraParts` (OpenCV world-to-camera, pixel-centre intrinsics, the
file's units and image size); :func:`mirage.trajectory.formats.read_camera_file` picks the reader and builds the
:class:`~mirage.trajectory.types.Trajectory`. Each format's conventions are written in :mod:`mirage.trajectory.formats`.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mirage.camera import intrinsics_from_normalized, invert_rigid, is_rotation, opengl_to_opencv_c2w
from mirage.errors import TrajectoryError
from mirage.limits import echo
from mirage.trajectory.colmap import parse_number, read_text
from mirage.trajectory.types import TRAJECTORY_JSON_FORMAT, TRAJECTORY_JSON_VERSION

logger = logging.getLogger("mirage")

DEFAULT_FPS = 30.0  # frame rate of files that carry none
RE10K_COLUMNS = 19  # timestamp fx fy cx cy 0 0 + 12 (3x4 w2c)
_NERF_PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
_NERF_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")

#: One file's cameras: K (N, 3, 3) float64 pixels, w2c (N, 4, 4) float64 OpenCV, width, height, the file's fps (or
#: None), per-frame names (or None).
CameraParts = tuple[torch.Tensor, torch.Tensor, int, int, float | None, tuple[str, ...] | None]


# --------------------------------------------------------------------------------------------------------------
# shared helpers


def load_json(path: Path) -> Any:
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


def read_re10k(path: Path, size: tuple[int, int] | None) -> CameraParts:
    lines = read_text(path).splitlines()
    rows: list[tuple[int, str, list[float]]] = []
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s:
            continue
        if not rows and s.startswith(("http://", "https://")):
            continue  # the video URL
        tok = s.split()
        if len(tok) != RE10K_COLUMNS:
            raise TrajectoryError(
                f"{path}:{lineno}: {len(tok)} columns, expected {RE10K_COLUMNS} "
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


def read_nerfstudio(path: Path, size: tuple[int, int] | None) -> CameraParts:
    d = load_json(path)
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


def _read_ns_camera_path(path: Path, d: dict) -> CameraParts:
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


def read_worldscore(path: Path, size: tuple[int, int] | None) -> CameraParts:
    d = load_json(path)
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


def read_mirage(path: Path) -> CameraParts:
    d = load_json(path)
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


__all__ = ["DEFAULT_FPS", "RE10K_COLUMNS", "CameraParts", "load_json", "read_mirage", "read_nerfstudio", "read_re10k", "read_worldscore"]
