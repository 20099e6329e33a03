"""Property-based tests of the trajectory and camera-file parsers: whatever the bytes, the result is a valid
Trajectory or a one-line TrajectoryError (the documented error), in bounded time.

Inputs are drawn near the real formats (their keys, column counts and numbers, plus garbage, NaN, huge and negative
values), so the examples reach deep into each parser instead of failing at the first byte.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirage.errors import TrajectoryError
from mirage.trajectory import (
    Trajectory,
    TrajFormat,
    load_camera_preset,
    load_trajectory,
    read_camera_file,
    resolve_camera_preset,
)
from tests.test_traj_bad_files import _cam_bin, _img_bin  # the COLMAP binary writers

FUZZ = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([0, 1, -1, 0.5, 1e308, -1e308, 1e-308, 64, 48, 50.0, 31.5]),
)
TOKEN = st.one_of(
    NUMBER.map(lambda x: repr(x) if isinstance(x, float) else str(x)),
    st.sampled_from(["nan", "inf", "-inf", "PINHOLE", "OPENCV", "SIMPLE_RADIAL", "FANCY", "a.png", "#", "",
                     "https://www.youtube.com/watch?v=x", "1e999", "0x10", "--", "\x00"]),
    st.text(max_size=8),
)


def _line(n_min: int, n_max: int) -> st.SearchStrategy[str]:
    return st.lists(TOKEN, min_size=n_min, max_size=n_max).map(" ".join)


#: Edits applied to a valid file: (position, replacement token). None or no edit keeps the file valid, so the
#: examples cover the success path too; a few edits land deep inside the parsers.
EDITS = st.lists(st.tuples(st.integers(0, 10**6), TOKEN), max_size=3)


def _edit_tokens(text: str, edits: list[tuple[int, str]]) -> str:
    """Replace whitespace-separated tokens of ``text`` (lines kept) at the edits' positions."""
    lines = [ln.split(" ") for ln in text.split("\n")]
    slots = [(i, j) for i, ln in enumerate(lines) for j in range(len(ln))]
    for pos, tok in edits:
        i, j = slots[pos % len(slots)]
        lines[i][j] = tok
    return "\n".join(" ".join(ln) for ln in lines)


def _check(make, *, ok_type=Trajectory) -> bool:
    """Call ``make()``: it returns a valid ``ok_type`` or raises TrajectoryError with one short line.
    Returns whether it succeeded."""
    try:
        out = make()
    except TrajectoryError as e:
        msg = str(e)
        assert "\n" not in msg and 0 < len(msg) < 1200, msg
        return False
    assert isinstance(out, ok_type)
    if isinstance(out, Trajectory):
        assert out.num_frames >= 1
        assert bool(torch.isfinite(out.K).all()) and bool(torch.isfinite(out.w2c).all())
        assert out.width >= 1 and out.height >= 1 and math.isfinite(out.fps) and out.fps > 0
    return True


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="mirage-fuzz-"))


# ------------------------------------------------------------------------------------------------ text formats

RE10K = "https://www.youtube.com/watch?v=x\n" + "\n".join(
    f"{1000 * i} 0.5 0.9 0.5 0.5 0 0 1 0 0 {0.1 * i:g} 0 1 0 0 0 0 1 0" for i in range(4)) + "\n"
CAMS = "# Camera list\n1 PINHOLE 64 48 50 50 31.5 23.5\n2 SIMPLE_RADIAL 64 48 50 32 24 0.01\n"
IMGS = ("1 1 0 0 0 0 0 0 1 a.png\n10 20 -1\n2 0.9998 0.02 0 0 0.1 0 0 2 b.png\n\n"
        "3 1 0 0 0 0.2 0 0.1 1 c.png\n\n")


@FUZZ
@given(edits=EDITS, cut=st.one_of(st.none(), st.integers(0, len(RE10K))))
def test_realestate10k(edits, cut):
    p = _tmp() / "cams.txt"
    p.write_text(_edit_tokens(RE10K, edits)[:cut])
    _check(lambda: read_camera_file(p, TrajFormat.REALESTATE10K, width=64, height=48))
    _check(lambda: load_trajectory(p, width=64, height=48, frames=7))  # format detection on the same bytes


@FUZZ
@given(url=st.booleans(), rows=st.lists(_line(17, 21), min_size=0, max_size=6))
def test_realestate10k_random_rows(url, rows):
    p = _tmp() / "cams.txt"
    p.write_text(("https://www.youtube.com/watch?v=x\n" if url else "") + "\n".join(rows) + "\n")
    _check(lambda: read_camera_file(p, TrajFormat.REALESTATE10K, width=64, height=48))


@FUZZ
@given(cam_edits=EDITS, img_edits=EDITS, start=st.sampled_from([None, "b.png", "zz.png"]))
def test_colmap_text(cam_edits, img_edits, start):
    d = _tmp() / "sparse"
    d.mkdir()
    (d / "cameras.txt").write_text(_edit_tokens(CAMS, cam_edits))
    (d / "images.txt").write_text(_edit_tokens(IMGS, img_edits))
    _check(lambda: load_trajectory(d, width=64, height=48, start=start))


CAM_BIN = _cam_bin([(1, 1, 64, 48, [50.0, 50.0, 31.5, 23.5])])
IMG_BIN = _img_bin([(1, (1.0, 0, 0, 0), (0, 0, 0), 1, "a.png", 2), (2, (1.0, 0, 0, 0), (0.1, 0, 0), 1, "b.png", 0)])
BYTE_EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4)


def _edit_bytes(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        b[pos % len(b)] = val
    return bytes(b[:cut])


@FUZZ
@given(cam_edits=BYTE_EDITS, img_edits=BYTE_EDITS, cut=st.one_of(st.none(), st.integers(0, len(IMG_BIN))))
def test_colmap_binary(cam_edits, img_edits, cut):
    d = _tmp() / "model"
    d.mkdir()
    (d / "cameras.bin").write_bytes(_edit_bytes(CAM_BIN, cam_edits, None))
    (d / "images.bin").write_bytes(_edit_bytes(IMG_BIN, img_edits, cut))
    _check(lambda: read_camera_file(d, TrajFormat.COLMAP))


@FUZZ
@given(data=st.binary(max_size=400), name=st.sampled_from(["cams.txt", "transforms.json", "camera_data.json",
                                                           "traj.json", "x.yaml"]))
def test_any_bytes_any_name(data, name):
    p = _tmp() / name
    p.write_bytes(data)
    _check(lambda: load_trajectory(p, width=64, height=48))


# ------------------------------------------------------------------------------------------------ JSON formats

KEYS = ["frames", "transform_matrix", "fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_path",
        "camera_to_world", "render_width", "render_height", "fov", "aspect", "focal_length", "cameras",
        "cameras_interp", "format", "version", "width", "height", "fps", "K", "w2c", "name", "file_path"]
SCALAR = st.one_of(NUMBER, st.booleans(), st.none(), st.sampled_from(["mirage-trajectory", "a.png", ""]))
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)),
    max_leaves=40,
)
GL = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 2.0], [0, 0, 0, 1.0]]
GL2 = [[1.0, 0, 0, 0.1], [0, 1.0, 0, 0], [0, 0, 1.0, 2.0], [0, 0, 0, 1.0]]
K = [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1.0]]
VALID_JSON = [
    {"fl_x": 50.0, "fl_y": 50.0, "cx": 31.5, "cy": 23.5, "w": 64, "h": 48,
     "frames": [{"file_path": "a.png", "transform_matrix": GL}, {"file_path": "b.png", "transform_matrix": GL2}]},
    {"camera_angle_x": 1.0, "frames": [{"transform_matrix": GL}, {"transform_matrix": GL2}]},
    {"render_width": 64, "render_height": 48, "camera_path": [{"camera_to_world": sum(GL, []), "fov": 50.0},
                                                              {"camera_to_world": sum(GL2, []), "fov": 50.0}]},
    {"focal_length": 50.0, "cameras_interp": [GL, GL2]},
    {"format": "mirage-trajectory", "version": 1, "width": 64, "height": 48, "fps": 16.0,
     "frames": [{"K": K, "w2c": GL, "name": "a"}, {"K": K, "w2c": GL2, "name": "b"}]},
]


def _leaves(doc, path=()):
    """Paths of every value in a JSON document (containers included)."""
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, (*path, i))


def _edit_json(doc, edits):
    doc = json.loads(json.dumps(doc))
    for pos, value in edits:
        paths = [p for p in _leaves(doc) if p]
        if not paths:
            return value
        path = paths[pos % len(paths)]
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if value == "<delete>" and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return doc


@FUZZ
@given(which=st.integers(0, len(VALID_JSON) - 1),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.one_of(JSON, st.just("<delete>"))), max_size=2),
       fmt=st.sampled_from([TrajFormat.AUTO, TrajFormat.NERFSTUDIO, TrajFormat.WORLDSCORE, TrajFormat.MIRAGE]))
def test_json_camera_files(which, edits, fmt):
    p = _tmp() / "cams.json"
    p.write_text(json.dumps(_edit_json(VALID_JSON[which], edits), allow_nan=True))
    _check(lambda: read_camera_file(p, fmt, width=64, height=48))
    _check(lambda: load_trajectory(p, width=64, height=48, frames=5, fps=24.0, scale=2.0))


@FUZZ
@given(doc=JSON)
def test_json_any_document(doc):
    p = _tmp() / "cams.json"
    p.write_text(json.dumps(doc, allow_nan=True))
    _check(lambda: load_trajectory(p, width=64, height=48))


# ------------------------------------------------------------------------------------------------ presets

PRESET_KEYS = ["name", "description", "frames", "fps", "fov", "easing", "segments"]
SEG_KEYS = ["kind", "share", "easing", "distance", "angle", "yaw", "pitch", "factor", "pivot_depth", "turns",
            "radius", "keys", "position", "look_at", "roll", "zoom", "bogus"]
KINDS = ["orbit", "dolly", "truck", "pedestal", "pan", "tilt", "roll", "zoom", "dolly_zoom", "spiral", "keyframes",
         "teleport"]
YVAL = st.one_of(NUMBER, st.booleans(), st.none(), st.sampled_from(["smooth", "linear", "x"]),
                 st.lists(NUMBER, min_size=0, max_size=4))
SEGMENT = st.dictionaries(st.sampled_from(SEG_KEYS), st.one_of(YVAL, st.sampled_from(KINDS)), max_size=5).map(
    lambda d: {"kind": d.pop("kind", "orbit"), **d})
PRESET = st.fixed_dictionaries(
    {"segments": st.one_of(st.lists(SEGMENT, max_size=3), YVAL)},
    optional={k: YVAL for k in PRESET_KEYS if k != "segments"},
)


def _shipped_yaml() -> list[str]:
    from mirage.trajectory import camera_presets_dir

    return [p.read_text() for p in sorted(camera_presets_dir().glob("*.yaml"))]


SHIPPED = _shipped_yaml()


@FUZZ
@given(which=st.integers(0, len(SHIPPED) - 1), edits=EDITS, frames=st.one_of(st.none(), st.integers(-3, 40)),
       scale=st.floats(0.01, 100), fps=st.one_of(st.none(), st.floats(0.5, 300)))
def test_shipped_presets_edited(which, edits, frames, scale, fps):
    """Every shipped preset with a few tokens replaced: deep into the validation of each segment kind."""
    p = _tmp() / "mine.yaml"
    p.write_text(_edit_tokens(SHIPPED[which], edits))
    _check(lambda: load_camera_preset(p), ok_type=object)
    _check(lambda: load_trajectory(p, width=64, height=48, frames=frames, scale=scale, fps=fps))


@FUZZ
@given(doc=PRESET, frames=st.one_of(st.none(), st.integers(-3, 40)))
def test_yaml_presets_generated(doc, frames):
    import yaml

    p = _tmp() / "mine.yaml"
    p.write_text(yaml.safe_dump(doc))
    _check(lambda: load_trajectory(p, width=64, height=48, frames=frames))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("abc:-[]{}&*!|>'\"# \n\t0123456789.,<")), max_size=120))
def test_yaml_preset_any_text(text):
    p = _tmp() / "mine.yaml"
    p.write_text(text)
    _check(lambda: load_camera_preset(p), ok_type=object)


@FUZZ
@given(frames=st.integers(2, 300), size=st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
       name=st.sampled_from(["orbit", "spiral", "dolly_zoom", "pan_left", "push_in"]))
def test_shipped_presets_resolve_for_any_size(frames, size, name):
    from mirage.trajectory import find_camera_preset

    spec = load_camera_preset(find_camera_preset(name))
    _check(lambda: resolve_camera_preset(spec, width=size[0], height=size[1], frames=frames))


def test_fuzz_settings_bound_time():
    """Every property above runs under a per-example deadline: a parser that hangs fails the suite."""
    assert FUZZ.deadline is not None and FUZZ.deadline.total_seconds() <= 2


@pytest.mark.parametrize("fmt", [TrajFormat.REALESTATE10K, TrajFormat.NERFSTUDIO, TrajFormat.WORLDSCORE, TrajFormat.MIRAGE])
def test_endless_stream_is_refused_at_once(fmt):
    """A device that never ends is refused before a byte is read, whatever format is forced."""
    import time

    t0 = time.perf_counter()
    with pytest.raises(TrajectoryError, match="not a regular file"):
        read_camera_file(Path("/dev/zero"), fmt, width=64, height=48)
    assert time.perf_counter() - t0 < 1.0
