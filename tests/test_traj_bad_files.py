"""Malformed camera files: each must raise TrajectoryError with one line naming the file (never a traceback)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from mirage.errors import TrajectoryError
from mirage.trajectory.formats import TrajFormat, read_camera_file

URL = "https://www.youtube.com/watch?v=xyz\n"
ROW = "100 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0"  # identity pose
ROW2 = "200 0.5 0.9 0.5 0.5 0 0 1 0 0 0.1 0 1 0 0 0 0 1 0"
CAMS = "# header\n1 PINHOLE 64 48 50 50 32 24\n"
IMG = "1 1 0 0 0 0 0 0 1 a.png\n\n2 1 0 0 0 0.1 0 0 1 b.png\n1.0 2.0 -1\n"
GL = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 5.0], [0, 0, 0, 1.0]]

# Each case writes its file(s) under tmp and returns (path to pass, file name the message must name, kwargs).
Case = Callable[[Path], tuple[Path, str, dict]]


def _write(p: Path, text: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def _txt(name: str, text: str, **kw) -> Case:
    return lambda tmp: (_write(tmp / name, text), name, kw)


def _colmap(cams: str, imgs: str, blame: str, **kw) -> Case:
    def make(tmp: Path):
        _write(tmp / "sparse" / "0" / "cameras.txt", cams)
        _write(tmp / "sparse" / "0" / "images.txt", imgs)
        return tmp, blame, kw

    return make


def _cam_bin(cams: list[tuple[int, int, int, int, list[float]]]) -> bytes:
    b = struct.pack("<Q", len(cams))
    for cid, mid, w, h, params in cams:
        b += struct.pack("<iiQQ", cid, mid, w, h) + struct.pack("<" + "d" * len(params), *params)
    return b


def _img_bin(imgs: list[tuple[int, tuple, tuple, int, str, int]]) -> bytes:
    b = struct.pack("<Q", len(imgs))
    for iid, q, t, cid, name, npts in imgs:
        b += struct.pack("<idddddddi", iid, *q, *t, cid) + name.encode() + b"\x00" + struct.pack("<Q", npts)
        b += b"".join(struct.pack("<ddq", 1.0, 2.0, -1) for _ in range(npts))
    return b


GOOD_CAM_BIN = _cam_bin([(1, 1, 64, 48, [50.0, 50.0, 32.0, 24.0])])
GOOD_IMG_BIN = _img_bin(
    [(1, (1.0, 0, 0, 0), (0, 0, 0), 1, "a.png", 3), (2, (1.0, 0, 0, 0), (0.1, 0, 0), 1, "b.png", 0)]
)


def _colmap_bin(cams: bytes, imgs: bytes, blame: str) -> Case:
    def make(tmp: Path):
        _write(tmp / "model" / "cameras.bin", cams)
        _write(tmp / "model" / "images.bin", imgs)
        return tmp / "model", blame, {}

    return make


def _json(name: str, obj, fmt: TrajFormat | None = None, raw: str | None = None, **kw) -> Case:
    def make(tmp: Path):
        text = raw if raw is not None else json.dumps(obj)
        return _write(tmp / name, text), name, ({"fmt": fmt} if fmt else {}) | kw

    return make


def _nerf(**over) -> dict:
    d = {"fl_x": 50.0, "w": 64, "h": 48, "frames": [{"file_path": "a.png", "transform_matrix": GL}]}
    d.update(over)
    return d


def _mirage(**over) -> dict:
    d = {
        "format": "mirage-trajectory",
        "version": 1,
        "width": 64,
        "height": 48,
        "fps": 30.0,
        "frames": [{"K": [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1.0]], "w2c": GL}],
    }
    d.update(over)
    return d


SIZE = {"width": 64, "height": 48}
CASES: dict[str, Case] = {
    # RealEstate10K
    "re10k_empty": _txt("empty.txt", "", fmt=TrajFormat.REALESTATE10K, **SIZE),
    "re10k_only_url": _txt("url.txt", URL, **SIZE),
    "re10k_truncated_line": _txt("trunc.txt", URL + ROW + "\n" + ROW2[:-6] + "\n", **SIZE),
    "re10k_non_numeric": _txt("nonnum.txt", URL + ROW.replace("0.9", "abc") + "\n", **SIZE),
    "re10k_nan": _txt("nan.txt", URL + ROW.replace("0.9", "nan") + "\n", **SIZE),
    "re10k_inf_pose": _txt("inf.txt", URL + ROW + "\n" + ROW2.replace(" 0.1 ", " inf ") + "\n", **SIZE),
    "re10k_not_rotation": _txt(
        "scaled.txt", URL + ROW.replace(" 0 0 1 0 0 0 0 1", " 0 0 2 0 0 0 0 2", 1) + "\n", **SIZE
    ),
    "re10k_no_size": _txt("nosize.txt", URL + ROW + "\n"),
    "re10k_zero_focal": _txt("f0.txt", URL + ROW.replace("0.5 0.9", "0 0.9", 1) + "\n", **SIZE),
    "re10k_not_utf8": _txt("bin.txt", "", fmt=TrajFormat.REALESTATE10K),  # replaced below with bytes
    # COLMAP text
    "colmap_fisheye_model": _colmap("1 OPENCV_FISHEYE 64 48 50 50 32 24 0 0 0 0\n", IMG, "cameras.txt"),
    "colmap_unknown_model": _colmap("1 FOO 64 48 50 50 32 24\n", IMG, "cameras.txt"),
    "colmap_param_count": _colmap("1 PINHOLE 64 48 50 32 24\n", IMG, "cameras.txt"),
    "colmap_cameras_short_line": _colmap("1 PINHOLE 64\n", IMG, "cameras.txt"),
    "colmap_bad_width": _colmap("1 PINHOLE 64.5 48 50 50 32 24\n", IMG, "cameras.txt"),
    "colmap_images_truncated": _colmap(CAMS, "1 1 0 0 0 0 0 0 1\n\n", "images.txt"),
    "colmap_images_non_numeric": _colmap(CAMS, "1 1 0 zero 0 0 0 0 1 a.png\n\n", "images.txt"),
    "colmap_images_nan": _colmap(CAMS, "1 1 0 0 0 nan 0 0 1 a.png\n\n", "images.txt"),
    "colmap_quat_not_unit": _colmap(CAMS, "1 0.5 0 0 0 0 0 0 1 a.png\n\n", "images.txt"),
    "colmap_missing_camera": _colmap(CAMS, "1 1 0 0 0 0 0 0 7 a.png\n\n", "images.txt"),
    "colmap_no_images": _colmap(CAMS, "# nothing registered\n", "images.txt"),
    "colmap_two_sizes": _colmap(
        CAMS + "2 PINHOLE 32 24 25 25 16 12\n",
        "1 1 0 0 0 0 0 0 1 a.png\n\n2 1 0 0 0 0 0 0 2 b.png\n\n",
        "cameras.txt",
    ),
    "colmap_points_line_missing": _colmap(
        CAMS, "1 1 0 0 0 0 0 0 1 a.png\n2 1 0 0 0 0.1 0 0 1 b.png\n", "images.txt"
    ),
    "colmap_start_absent": _colmap(CAMS, IMG, "images.txt", start="zzz.png"),
    "colmap_missing_images_file": lambda tmp: (
        _write(tmp / "m" / "cameras.txt", CAMS).parent,
        "images.txt",
        {},
    ),
    # COLMAP binary
    "colmap_bin_truncated_images": _colmap_bin(GOOD_CAM_BIN, GOOD_IMG_BIN[:-30], "images.bin"),
    "colmap_bin_truncated_name": _colmap_bin(GOOD_CAM_BIN, GOOD_IMG_BIN[: 8 + 64 + 3], "images.bin"),
    "colmap_bin_truncated_cameras": _colmap_bin(GOOD_CAM_BIN[:-5], GOOD_IMG_BIN, "cameras.bin"),
    "colmap_bin_empty_cameras": _colmap_bin(b"", GOOD_IMG_BIN, "cameras.bin"),
    "colmap_bin_unknown_model_id": _colmap_bin(
        _cam_bin([(1, 99, 64, 48, [50.0])]), GOOD_IMG_BIN, "cameras.bin"
    ),
    "colmap_bin_fisheye": _colmap_bin(_cam_bin([(1, 5, 64, 48, [50.0] * 8)]), GOOD_IMG_BIN, "cameras.bin"),
    "colmap_bin_nan_pose": _colmap_bin(
        GOOD_CAM_BIN, _img_bin([(1, (float("nan"), 0, 0, 0), (0, 0, 0), 1, "a.png", 0)]), "images.bin"
    ),
    # JSON in general
    "json_empty": _json("transforms.json", None, TrajFormat.NERFSTUDIO, raw=""),
    "json_syntax": _json("transforms.json", None, TrajFormat.NERFSTUDIO, raw='{"frames": [}'),
    "json_unknown_kind": _json("cams.json", {"hello": 1}),
    # nerfstudio
    "nerf_no_frames": _json("transforms.json", _nerf(frames=[]), TrajFormat.NERFSTUDIO),
    "nerf_frame_missing_matrix": _json(
        "transforms.json", _nerf(frames=[{"file_path": "a.png"}]), TrajFormat.NERFSTUDIO
    ),
    "nerf_matrix_shape": _json(
        "transforms.json", _nerf(frames=[{"transform_matrix": [[1, 0, 0], [0, 1, 0]]}])
    ),
    "nerf_matrix_string": _json("transforms.json", _nerf(frames=[{"transform_matrix": [["a"] * 4] * 4}])),
    "nerf_not_rotation": _json(
        "transforms.json",
        _nerf(frames=[{"transform_matrix": [[2.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}]),
    ),
    "nerf_bad_last_row": _json(
        "transforms.json",
        _nerf(frames=[{"transform_matrix": [[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]}]),
    ),
    "nerf_fisheye": _json("transforms.json", _nerf(camera_model="OPENCV_FISHEYE")),
    "nerf_no_focal": _json("transforms.json", {"w": 64, "h": 48, "frames": [{"transform_matrix": GL}]}),
    "nerf_no_size": _json("transforms.json", {"fl_x": 50.0, "frames": [{"transform_matrix": GL}]}),
    "nerf_negative_focal": _json("transforms.json", _nerf(fl_x=-5.0)),
    # WorldScore
    "worldscore_no_focal": _json("camera_data.json", {"cameras_interp": [GL]}, **SIZE),
    "worldscore_no_size": _json("camera_data.json", {"focal_length": 500, "cameras_interp": [GL]}),
    "worldscore_empty_list": _json("camera_data.json", {"focal_length": 500, "cameras_interp": []}, **SIZE),
    "worldscore_bad_matrix": _json(
        "camera_data.json", {"focal_length": 500, "cameras_interp": [[[1, 2], [3, 4]]]}, **SIZE
    ),
    # mirage JSON
    "mirage_version": _json("traj.json", _mirage(version=7)),
    "mirage_missing_key": _json("traj.json", {k: v for k, v in _mirage().items() if k != "fps"}),
    "mirage_nan_K": _json("traj.json", None, raw=json.dumps(_mirage()).replace("50.0", "NaN", 1)),
    "mirage_not_rotation": _json(
        "traj.json",
        _mirage(
            frames=[
                {
                    "K": [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1.0]],
                    "w2c": [[1.0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                }
            ]
        ),
    ),
    "mirage_K_last_row": _json(
        "traj.json", _mirage(frames=[{"K": [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 1.0, 1.0]], "w2c": GL}])
    ),
    "mirage_bad_width": _json("traj.json", _mirage(width="wide")),
    "mirage_frame_not_object": _json("traj.json", _mirage(frames=[[1, 2, 3]])),
    # paths and formats
    "unknown_extension": _txt("cams.csv", "1,2,3\n"),
    "missing_path": lambda tmp: (tmp / "nope.json", "nope.json", {}),
    "preset_as_camera_file": _txt("orbit.yaml", "kind: orbit\n", fmt=TrajFormat.PRESET),
    "empty_folder": lambda tmp: ((tmp / "emptydir").mkdir() or tmp / "emptydir", "emptydir", {}),
}
CASES["re10k_not_utf8"] = lambda tmp: (
    _write(tmp / "bin.txt", b"\xff\xfe\x00garbage"),
    "bin.txt",
    {"fmt": TrajFormat.REALESTATE10K},
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file_raises_one_line_naming_the_file(name: str, tmp_path: Path):
    path, blame, kwargs = CASES[name](tmp_path)
    with pytest.raises(TrajectoryError) as ei:
        read_camera_file(path, **kwargs)
    msg = str(ei.value)
    assert blame in msg, msg
    assert "\n" not in msg and "\r" not in msg, msg
    assert 20 < len(msg) < 400, msg
    assert ei.value.__cause__ is None or not isinstance(ei.value.__cause__, (KeyError, IndexError)), msg


def test_specific_messages(tmp_path: Path):
    """A few messages must carry the line number and the offending value."""
    p = _write(tmp_path / "r.txt", URL + ROW + "\n" + ROW2.replace("0.9", "x9") + "\n")
    with pytest.raises(TrajectoryError, match=r"r\.txt:3: column 3 'x9' is not a number"):
        read_camera_file(p, width=64, height=48)
    _write(tmp_path / "c" / "cameras.txt", "1 OPENCV_FISHEYE 64 48 50 50 32 24 0 0 0 0\n")
    _write(tmp_path / "c" / "images.txt", IMG)
    with pytest.raises(TrajectoryError, match=r"cameras\.txt:1: unsupported camera model 'OPENCV_FISHEYE'"):
        read_camera_file(tmp_path / "c")
    _write(tmp_path / "d" / "cameras.txt", CAMS)
    _write(tmp_path / "d" / "images.txt", IMG)
    with pytest.raises(TrajectoryError, match=r"valid names include a\.png, b\.png"):
        read_camera_file(tmp_path / "d", start="c.png")
    assert read_camera_file(tmp_path / "d").names == ("a.png", "b.png")  # the good files do load
