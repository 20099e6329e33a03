"""COLMAP sparse models (text and binary) as a :class:`~mirage.trajectory.types.Trajectory`.

What is read (COLMAP ``doc/format.rst`` and ``scripts/python/read_write_model.py``):

- ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...``; ``cameras.bin``: little-endian ``uint64`` count, then
  per camera ``int32 id, int32 model_id, uint64 width, uint64 height`` and ``float64`` params.
- ``images.txt``: two lines per image: ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` and a line of 2D points
  (possibly empty); ``images.bin``: ``uint64`` count, then per image ``int32 id, 4 float64 q, 3 float64 t,
  int32 camera_id``, a NUL-terminated name, ``uint64`` number of 2D points and ``(float64 x, float64 y,
  int64 point3D_id)`` per point.
- Poses are world-to-camera (``R(q) x + t``) in OpenCV axes already: no flip.
- Pixel coordinates in COLMAP (principal point, 2D observations) are edge-based: the centre of the top-left pixel
  is ``(0.5, 0.5)``. mirage is pixel-centre based (``docs/conventions.md``), so ``cx_mirage = cx_colmap - 0.5``
  (and the same for ``cy``).
- Newer COLMAP models also hold ``rigs.txt`` / ``frames.txt`` (``.bin``); ``images.*`` still carry a pose per image,
  so those extra files are not read.
- Lens distortion (SIMPLE_RADIAL, RADIAL, OPENCV) is ignored with one warning per model: mirage renders pinhole
  cameras. Fisheye and other models are rejected.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from mirage.camera import make_rigid, quat_to_rotmat
from mirage.errors import InputError, TrajectoryError
from mirage.limits import echo, read_bounded

logger = logging.getLogger("mirage")

# model name -> (model id, number of params, has distortion); ids as in COLMAP's read_write_model.py
_MODELS: dict[str, tuple[int, int, bool]] = {
    "SIMPLE_PINHOLE": (0, 3, False),
    "PINHOLE": (1, 4, False),
    "SIMPLE_RADIAL": (2, 4, True),
    "RADIAL": (3, 5, True),
    "OPENCV": (4, 8, True),
}
# every model COLMAP knows (id -> (name, number of params)), so an unsupported one is named, not "unknown id"
_ALL_MODEL_IDS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
_SUPPORTED = ", ".join(_MODELS)
_QUAT_NORM_TOL = 1e-3  # |q| must be 1 within this (COLMAP writes unit quaternions; text keeps ~6 digits)


@dataclass(frozen=True)
class ColmapCamera:
    """One COLMAP camera.

    Attributes:
        camera_id: COLMAP's CAMERA_ID.
        model: model name (one of PINHOLE, SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV).
        width, height: image size in pixels.
        params: the model's parameters as in the file (COLMAP's edge-based principal point).
    """

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]

    def K(self) -> torch.Tensor:
        """(3, 3) float64 pixel intrinsics in mirage's pixel-centre convention (``cx - 0.5``, ``cy - 0.5``)."""
        p = self.params
        if self.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            fx = fy = p[0]
            cx, cy = p[1], p[2]
        else:  # PINHOLE, OPENCV
            fx, fy, cx, cy = p[0], p[1], p[2], p[3]
        return torch.tensor([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


@dataclass(frozen=True)
class ColmapImage:
    """One registered COLMAP image.

    Attributes:
        image_id: COLMAP's IMAGE_ID.
        qvec: (w, x, y, z) unit quaternion of the world-to-camera rotation.
        tvec: world-to-camera translation, scene units.
        camera_id: the camera it was taken with.
        name: image file name (relative to the image folder).
    """

    image_id: int
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]
    camera_id: int
    name: str

    def w2c(self) -> torch.Tensor:
        """(4, 4) float64 world-to-camera, OpenCV axes."""
        q = torch.tensor(self.qvec, dtype=torch.float64)
        t = torch.tensor(self.tvec, dtype=torch.float64)
        return make_rigid(quat_to_rotmat(q), t)


# --------------------------------------------------------------------------------------------------------------
# locating the model


def find_colmap_model(path: Path) -> tuple[Path, str] | None:
    """The folder holding a COLMAP model and its kind (``"txt"`` or ``"bin"``), or None if ``path`` holds none.

    Accepts the model folder itself, a project folder with ``sparse/0`` (or ``sparse``), or a path to one of the
    model's ``cameras``/``images`` files. Text wins when both kinds are present (it is what people edit).
    """
    path = Path(path)
    if path.is_file() and path.stem in ("cameras", "images", "points3D") and path.suffix in (".txt", ".bin"):
        path = path.parent
    if not path.is_dir():
        return None
    for folder in (path, path / "sparse" / "0", path / "sparse"):
        for kind in ("txt", "bin"):
            if (folder / f"cameras.{kind}").is_file() or (folder / f"images.{kind}").is_file():
                return folder, kind
    return None


# --------------------------------------------------------------------------------------------------------------
# text


def _read_bytes(path: Path) -> bytes:
    """The bytes of a camera file: a regular file within ``MIRAGE_MAX_FILE_BYTES`` (never a pipe or device)."""
    try:
        return read_bounded(path, "trajectory file")
    except InputError as e:
        raise TrajectoryError(e.message) from None


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; unreadable or binary files raise :class:`TrajectoryError` naming the file."""
    raw = _read_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TrajectoryError(
            f"{path}: not a UTF-8 text file (bad byte at offset {e.start}); pass a text camera file"
        ) from None


def parse_number(tok: str, path: Path, lineno: int, what: str) -> float:
    """``float(tok)``, finite; else :class:`TrajectoryError` naming ``path:lineno``, ``what`` and the token."""
    try:
        x = float(tok)
    except ValueError:
        raise TrajectoryError(
            f"{path}:{lineno}: {what} {tok[:40]!r} is not a number; fix that line"
        ) from None
    if not math.isfinite(x):
        raise TrajectoryError(f"{path}:{lineno}: {what} is {tok[:40]!r}; every value must be finite")
    return x


def _int(tok: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(tok)
    except ValueError:
        raise TrajectoryError(
            f"{path}:{lineno}: {what} {tok[:40]!r} is not an integer; fix that line"
        ) from None


def _check_model(model: str, nparams: int, where: str) -> None:
    if model not in _MODELS:
        known = model in {n for n, _ in _ALL_MODEL_IDS.values()}
        kind = "unsupported" if known else "unknown"
        raise TrajectoryError(
            f"{where}: {kind} camera model {model[:40]!r}; mirage reads {_SUPPORTED} "
            "(undistort the images with `colmap image_undistorter` first)"
        )
    need = _MODELS[model][1]
    if nparams != need:
        raise TrajectoryError(
            f"{where}: camera model {model} needs {need} parameters, got {nparams}; fix that line"
        )


def _check_size(width: int, height: int, where: str) -> None:
    if not (0 < width < 1_000_000 and 0 < height < 1_000_000):
        raise TrajectoryError(
            f"{where}: image size {width}x{height} is not a valid image size; fix the camera"
        )


def _check_quat(q: tuple[float, ...], where: str) -> None:
    n = math.sqrt(sum(x * x for x in q))
    if abs(n - 1.0) > _QUAT_NORM_TOL:
        raise TrajectoryError(
            f"{where}: quaternion (qw qx qy qz) has norm {n:.6g}, not 1; the columns are probably shifted"
        )


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    """Parse ``cameras.txt``. Returns ``{camera_id: ColmapCamera}``."""
    cams: dict[int, ColmapCamera] = {}
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        tok = s.split()
        if len(tok) < 5:
            raise TrajectoryError(
                f"{path}:{lineno}: {len(tok)} columns, expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...; fix that line"
            )
        cid = _int(tok[0], path, lineno, "CAMERA_ID")
        model = tok[1]
        _check_model(model, len(tok) - 4, f"{path}:{lineno}")
        w = _int(tok[2], path, lineno, "WIDTH")
        h = _int(tok[3], path, lineno, "HEIGHT")
        _check_size(w, h, f"{path}:{lineno}")
        params = tuple(parse_number(t, path, lineno, f"parameter {i + 1}") for i, t in enumerate(tok[4:]))
        if cid in cams:
            raise TrajectoryError(
                f"{path}:{lineno}: CAMERA_ID {cid} appears twice; camera ids must be unique"
            )
        cams[cid] = ColmapCamera(cid, model, w, h, params)
    return cams


def read_images_text(path: Path) -> list[ColmapImage]:
    """Parse ``images.txt`` (pose lines; the 2D-point line after each is skipped). Returns images in file order."""
    lines = read_text(path).splitlines()
    images: list[ColmapImage] = []
    i = 0
    while i < len(lines):
        lineno = i + 1
        s = lines[i].strip()
        if not s or s.startswith("#"):
            i += 1
            continue
        tok = s.split(maxsplit=9)
        if len(tok) < 10:
            raise TrajectoryError(
                f"{path}:{lineno}: {len(tok)} columns, expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME "
                "(pose lines alternate with 2D-point lines); fix that line"
            )
        iid = _int(tok[0], path, lineno, "IMAGE_ID")
        names = ("QW", "QX", "QY", "QZ", "TX", "TY", "TZ")
        vals = [parse_number(t, path, lineno, n) for t, n in zip(tok[1:8], names, strict=True)]
        q = (vals[0], vals[1], vals[2], vals[3])
        _check_quat(q, f"{path}:{lineno}")
        cid = _int(tok[8], path, lineno, "CAMERA_ID")
        images.append(ColmapImage(iid, q, (vals[4], vals[5], vals[6]), cid, tok[9].strip()))
        if i + 1 < len(lines):
            _check_points_line(lines[i + 1], path, lineno + 1)
        i += 2  # the next line holds this image's 2D points (it may be empty)
    return images


def _check_points_line(line: str, path: Path, lineno: int) -> None:
    """The line after a pose line must be ``X Y POINT3D_ID`` triplets (or empty); a second pose line is an error,
    since silently reading it as points would drop that image."""
    tok = line.split()
    ok = len(tok) % 3 == 0
    if ok:
        try:
            [float(t) for t in tok]
        except ValueError:
            ok = False
    if not ok:
        raise TrajectoryError(
            f"{path}:{lineno}: expected the 2D points (X Y POINT3D_ID triplets, or an empty line) of the image above, "
            f"got {len(tok)} columns starting {' '.join(tok[:3])[:40]!r}; every pose line needs a points line after it"
        )


# --------------------------------------------------------------------------------------------------------------
# binary


class _BinReader:
    """Bounds-checked little-endian reads from a whole file in memory."""

    def __init__(self, path: Path):
        self.path = path
        self.data = _read_bytes(path)
        self.pos = 0

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise TrajectoryError(
                f"{self.path}: truncated at byte {len(self.data)} while reading {what} "
                f"(needs {self.pos + size} bytes); re-export the model"
            )
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def skip(self, nbytes: int, what: str) -> None:
        if self.pos + nbytes > len(self.data):
            raise TrajectoryError(
                f"{self.path}: truncated at byte {len(self.data)} while reading {what} "
                f"(needs {self.pos + nbytes} bytes); re-export the model"
            )
        self.pos += nbytes

    def cstring(self, what: str) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise TrajectoryError(
                f"{self.path}: truncated inside {what} (no terminating NUL); re-export the model"
            )
        raw = self.data[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TrajectoryError(f"{self.path}: {what} is not valid UTF-8; re-export the model") from None

    def finish(self) -> None:
        extra = len(self.data) - self.pos
        if extra:
            logger.warning("%s: %d unexpected bytes after the last record were not read", self.path, extra)


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    """Parse ``cameras.bin``. Returns ``{camera_id: ColmapCamera}``."""
    r = _BinReader(path)
    if not r.data:
        raise TrajectoryError(f"{path}: empty file; re-export the model")
    (n,) = r.unpack("Q", "the camera count")
    cams: dict[int, ColmapCamera] = {}
    for k in range(n):
        cid, model_id, w, h = r.unpack("iiQQ", f"camera {k}")
        where = f"{path} (camera {cid})"
        if model_id not in _ALL_MODEL_IDS:
            raise TrajectoryError(f"{where}: unknown camera model id {model_id}; mirage reads {_SUPPORTED}")
        model, nparams = _ALL_MODEL_IDS[model_id]
        _check_model(model, nparams, where)
        _check_size(w, h, where)
        params = r.unpack("d" * nparams, f"camera {cid}'s parameters")
        if not all(math.isfinite(p) for p in params):
            raise TrajectoryError(f"{where}: parameters {params} hold NaN or inf; re-export the model")
        cams[cid] = ColmapCamera(cid, model, int(w), int(h), tuple(params))
    r.finish()
    return cams


def read_images_binary(path: Path) -> list[ColmapImage]:
    """Parse ``images.bin``. Returns images in file order."""
    r = _BinReader(path)
    if not r.data:
        raise TrajectoryError(f"{path}: empty file; re-export the model")
    (n,) = r.unpack("Q", "the image count")
    images: list[ColmapImage] = []
    for k in range(n):
        rec = r.unpack("idddddddi", f"image {k}")
        iid, q, t, cid = rec[0], tuple(rec[1:5]), tuple(rec[5:8]), rec[8]
        name = r.cstring(f"image {iid}'s name")
        where = f"{path} (image {iid} {name[:60]!r})"
        if not all(math.isfinite(x) for x in (*q, *t)):
            raise TrajectoryError(f"{where}: pose {q + t} holds NaN or inf; re-export the model")
        _check_quat(q, where)
        (npts,) = r.unpack("Q", f"image {iid}'s point count")
        r.skip(24 * npts, f"image {iid}'s {npts} 2D points")
        images.append(ColmapImage(iid, q, t, cid, name))  # type: ignore[arg-type]
    r.finish()
    return images


# --------------------------------------------------------------------------------------------------------------
# model -> trajectory pieces


@dataclass(frozen=True)
class ColmapModel:
    """A parsed COLMAP model: cameras by id and registered images in file order."""

    folder: Path
    kind: str  # "txt" or "bin"
    cameras: dict[int, ColmapCamera]
    images: list[ColmapImage]


def read_colmap_model(path: Path) -> ColmapModel:
    """Read the cameras and images of the COLMAP model at ``path`` (see :func:`find_colmap_model`)."""
    found = find_colmap_model(path)
    if found is None:
        raise TrajectoryError(
            f"{path}: no COLMAP model (cameras.txt/images.txt or cameras.bin/images.bin, here or in sparse/0); "
            "pass the model folder"
        )
    folder, kind = found
    for stem in ("cameras", "images"):
        if not (folder / f"{stem}.{kind}").is_file():
            raise TrajectoryError(
                f"{folder / f'{stem}.{kind}'}: missing from the COLMAP model; export the whole model"
            )
    if kind == "txt":
        cams = read_cameras_text(folder / "cameras.txt")
        images = read_images_text(folder / "images.txt")
    else:
        cams = read_cameras_binary(folder / "cameras.bin")
        images = read_images_binary(folder / "images.bin")
    return ColmapModel(folder, kind, cams, images)


def colmap_cameras(
    path: Path, *, order: str = "name", start: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, int, int, tuple[str, ...], Path]:
    """Cameras of a COLMAP model, ordered and optionally started at one image.

    Args:
        path: model folder, project folder with ``sparse/0``, or one of the model's files.
        order: ``"name"`` (image names, lexicographic) or ``"id"`` (IMAGE_ID).
        start: an image name that becomes frame 0 (the frames from it onward are kept), or None.
    Returns:
        K: (N, 3, 3) float64 pixel intrinsics (pixel-centre convention); w2c: (N, 4, 4) float64 OpenCV;
        width, height: the shared image size; names: image names; folder: the model folder that was read.
    """
    model = read_colmap_model(path)
    images_file = model.folder / f"images.{model.kind}"
    if not model.images:
        raise TrajectoryError(f"{images_file}: no registered images; the reconstruction is empty")
    if order == "name":
        images = sorted(model.images, key=lambda im: im.name)
    elif order == "id":
        images = sorted(model.images, key=lambda im: im.image_id)
    else:
        raise TrajectoryError(f"--colmap-order: {echo(order, 60)} is not a choice; use 'name' or 'id'")
    if start is not None:
        names = [im.name for im in images]
        if start not in names:
            raise TrajectoryError(
                f"{images_file}: --start image {echo(start, 60)} is not registered; valid names include "
                f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
            )
        images = images[names.index(start) :]
    used: dict[int, ColmapCamera] = {}
    for im in images:
        cam = model.cameras.get(im.camera_id)
        if cam is None:
            raise TrajectoryError(
                f"{images_file}: image {im.name!r} uses CAMERA_ID {im.camera_id}, which is not in "
                f"cameras.{model.kind}; export the whole model"
            )
        used[cam.camera_id] = cam
    sizes = sorted({(c.width, c.height) for c in used.values()})
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sizes[:4])
        raise TrajectoryError(
            f"{model.folder / f'cameras.{model.kind}'}: images have {len(sizes)} different sizes ({listed}); "
            "mirage needs one image size, so keep images of one camera (e.g. `colmap image_undistorter`)"
        )
    distorted = sorted({c.model for c in used.values() if _MODELS[c.model][2]})
    if distorted:
        logger.warning(
            "%s: lens distortion of camera model(s) %s is ignored (pinhole cameras are used)",
            model.folder,
            ", ".join(distorted),
        )
    K = torch.stack([used[im.camera_id].K() for im in images])  # (N, 3, 3)
    w2c = torch.stack([im.w2c() for im in images])  # (N, 4, 4)
    width, height = sizes[0]
    return K, w2c, width, height, tuple(im.name for im in images), model.folder
