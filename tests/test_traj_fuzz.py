"""Property-based tests of the trajectory and camera-file parsers: whatever the bytes, the result is a valid
Trajectory or a one-line TrajectoryError (the documented error), in bounded time.

Inputs are drawn near the real formats (their keys, column counts and numbers, plus garbage, NaN, huge and negative
values), so the examples reach deep into each parser instead of failing at the first byte.
"""

from __future__ import annotations

import json
import math
import struct
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
    load_preset,
    load_trajectory,
    read_camera_file,
    resolve_preset,
)

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


def _check(make, *, ok_type=Trajectory) -> None:
    """Call ``make()``: it returns a valid ``ok_type`` or raises TrajectoryError with one short line."""
    try:
        out = make()
    except TrajectoryError as e:
        msg = str(e)
        assert "\n" not in msg and 0 < len(msg) < 1200, msg
        return
    assert isinstance(out, ok_type)
    if isinstance(out, Trajectory):
        assert out.num_frames >= 1
        assert bool(torch.isfinite(out.K).all()) and bool(torch.isfinite(out.w2c).all())
        assert out.width >= 1 and out.height >= 1 and math.isfinite(out.fps) and out.fps > 0


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="mirage-fuzz-"))


# ------------------------------------------------------------------------------------------------ text formats


@FUZZ
@given(url=st.booleans(), rows=st.lists(_line(17, 21), min_size=0, max_size=6))
def test_realestate10k_rows(url, rows):
    p = _tmp() / "cams.txt"
    p.write_text(("https://www.youtube.com/watch?v=x\n" if url else "") + "\n".join(rows) + "\n")
    _check(lambda: read_camera_file(p, TrajFormat.REALESTATE10K, width=64, height=48))
    _check(lambda: load_trajectory(p, width=64, height=48))  # format detection on the same bytes


@FUZZ
@given(cams=st.lists(_line(4, 9), max_size=3), imgs=st.lists(_line(8, 11), max_size=6))
def test_colmap_text(cams, imgs):
    d = _tmp() / "sparse"
    d.mkdir()
    (d / "cameras.txt").write_text("\n".join(cams) + "\n")
    (d / "images.txt").write_text("\n".join(imgs) + "\n")
    _check(lambda: read_camera_file(d, TrajFormat.COLMAP))


@FUZZ
@given(cams=st.binary(max_size=200), imgs=st.binary(max_size=300), prefix=st.integers(0, 3))
def test_colmap_binary(cams, imgs, prefix):
    d = _tmp() / "model"
    d.mkdir()
    # a plausible record count keeps some examples past the header
    (d / "cameras.bin").write_bytes(struct.pack("<Q", prefix) + cams)
    (d / "images.bin").write_bytes(struct.pack("<Q", prefix) + imgs)
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


def _matrix(rows: int, cols: int) -> st.SearchStrategy[list]:
    return st.lists(st.lists(NUMBER, min_size=cols, max_size=cols), min_size=rows, max_size=rows)


EYE = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]
NEAR_VALID = st.one_of(
    st.builds(lambda fr, ov: {"fl_x": 50.0, "w": 64, "h": 48, "frames": fr, **ov},
              st.lists(st.fixed_dictionaries({"transform_matrix": st.one_of(_matrix(4, 4), st.just(EYE))}), max_size=3),
              st.dictionaries(st.sampled_from(KEYS), SCALAR, max_size=2)),
    st.builds(lambda cams, f: {"focal_length": f, "cameras_interp": cams},
              st.lists(st.one_of(_matrix(4, 4), st.just(EYE)), max_size=3), NUMBER),
    st.builds(lambda fr, w, h, fps: {"format": "mirage-trajectory", "version": 1, "width": w, "height": h,
                                     "fps": fps, "frames": fr},
              st.lists(st.fixed_dictionaries({"K": _matrix(3, 3), "w2c": st.one_of(_matrix(4, 4), st.just(EYE))}),
                       max_size=3), NUMBER, NUMBER, NUMBER),
)


@FUZZ
@given(doc=st.one_of(JSON, NEAR_VALID), fmt=st.sampled_from([TrajFormat.AUTO, TrajFormat.NERFSTUDIO,
                                                             TrajFormat.WORLDSCORE, TrajFormat.MIRAGE]))
def test_json_camera_files(doc, fmt):
    p = _tmp() / "cams.json"
    p.write_text(json.dumps(doc, allow_nan=True))
    _check(lambda: read_camera_file(p, fmt, width=64, height=48))


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


@FUZZ
@given(doc=PRESET, frames=st.one_of(st.none(), st.integers(-3, 40)), scale=st.floats(0.01, 100),
       fps=st.one_of(st.none(), NUMBER))
def test_yaml_presets(doc, frames, scale, fps):
    import yaml

    p = _tmp() / "mine.yaml"
    p.write_text(yaml.safe_dump(doc))
    _check(lambda: load_preset(p), ok_type=object)
    fps_arg = fps if fps is None or isinstance(fps, float) else float(fps)
    _check(lambda: load_trajectory(p, width=64, height=48, frames=frames, scale=scale, fps=fps_arg))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("abc:-[]{}&*!|>'\"# \n\t0123456789.,<")), max_size=120))
def test_yaml_preset_any_text(text):
    p = _tmp() / "mine.yaml"
    p.write_text(text)
    _check(lambda: load_preset(p), ok_type=object)


@FUZZ
@given(frames=st.integers(2, 300), size=st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
       name=st.sampled_from(["orbit", "spiral", "dolly_zoom", "pan_left", "push_in"]))
def test_shipped_presets_resolve_for_any_size(frames, size, name):
    from mirage.trajectory import find_preset

    spec = load_preset(find_preset(name))
    _check(lambda: resolve_preset(spec, width=size[0], height=size[1], frames=frames))


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
