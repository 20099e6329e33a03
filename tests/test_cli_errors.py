"""Bad input at the command line: one red line naming the input, exit code 2, no traceback, no output written.

Malformed trajectory files go through both `mirage traj show` and `mirage render`; every other command gets a few
bad values too. All through ``mirage_cli.main.main()`` in process, the real error boundary.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _cli import run_main  # tests/_cli.py
from PIL import Image

W, H = 64, 48
URL = "https://www.youtube.com/watch?v=abc\n"
ROW = "100 0.5 0.6 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0"  # RealEstate10K: identity pose
GL = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 2.0], [0, 0, 0, 1.0]]
CAMS = "# camera\n1 PINHOLE 64 48 50 50 31.5 23.5\n"
IMGS = "1 1 0 0 0 0 0 0 1 a.png\n\n2 1 0 0 0 0.1 0 0 1 b.png\n\n"


@pytest.fixture(scope="session")
def tiny():
    from mirage.hub import build_tiny

    return build_tiny()


@pytest.fixture(autouse=True)
def _restore_logger():
    """The CLI installs a rich handler on the "mirage" logger (propagate off): undo it after each test."""
    log = logging.getLogger("mirage")
    state = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = state[0], state[1], state[2]


def assert_one_red_line(code: int, err: str, *names: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    for n in names:
        assert n in lines[0], (n, lines[0])
    assert 20 < len(lines[0]) < 400, lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------ malformed files


def _w(p: Path, data: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
    return p


def _colmap(cams: str, imgs: str | None) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        _w(tmp / "sparse" / "cameras.txt", cams)
        if imgs is not None:
            _w(tmp / "sparse" / "images.txt", imgs)
        return tmp / "sparse"

    return make


def _nerf(**over) -> dict:
    d = {"fl_x": 50.0, "w": W, "h": H, "frames": [{"file_path": "a.png", "transform_matrix": GL}]}
    d.update(over)
    return d


def _mirage(**over) -> dict:
    d = {"format": "mirage-trajectory", "version": 1, "width": W, "height": H, "fps": 16.0,
         "frames": [{"K": [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1.0]], "w2c": [[1.0, 0, 0, 0], [0, 1.0, 0, 0],
                                                                                  [0, 0, 1.0, 0], [0, 0, 0, 1.0]]}]}
    d.update(over)
    return d


def _file(name: str, data: str | bytes | dict) -> Callable[[Path], Path]:
    return lambda tmp: _w(tmp / name, json.dumps(data) if isinstance(data, dict) else data)


# name -> (make(tmp) -> path to pass, substring the one error line must contain)
BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "re10k_empty": (_file("empty.txt", ""), "empty.txt"),
    "re10k_only_url": (_file("url.txt", URL), "url.txt"),
    "re10k_non_numeric": (_file("nonnum.txt", URL + ROW.replace("0.6", "abc") + "\n"), "nonnum.txt"),
    "re10k_nan": (_file("nan.txt", URL + ROW.replace("0.6", "nan") + "\n"), "nan.txt"),
    "re10k_truncated": (_file("trunc.txt", URL + ROW + "\n" + ROW[:-9] + "\n"), "trunc.txt"),
    "re10k_not_rotation": (_file("scaled.txt", URL + ROW.replace(" 0 0 1 0 0 0 0 1", " 0 0 3 0 0 0 0 3", 1) + "\n"),
                           "scaled.txt"),
    "re10k_not_utf8": (_file("bin.txt", b"\xff\xfe\x00\x81garbage"), "bin.txt"),
    "colmap_unknown_model": (_colmap("1 FANCY 64 48 50 50 31.5 23.5\n", IMGS), "cameras.txt"),
    "colmap_quat_not_unit": (_colmap(CAMS, "1 0.3 0 0 0 0 0 0 1 a.png\n\n"), "images.txt"),
    "colmap_missing_images": (_colmap(CAMS, None), "images.txt"),
    "colmap_bin_empty": (lambda tmp: (_w(tmp / "m" / "cameras.bin", b""), _w(tmp / "m" / "images.bin",
                                      struct.pack("<Q", 0)))[0].parent, "cameras.bin"),
    "json_syntax": (_file("transforms.json", '{"frames": [}'), "transforms.json"),
    "json_unknown_kind": (_file("cams.json", {"hello": 1}), "cams.json"),
    "nerf_no_frames": (_file("transforms.json", _nerf(frames=[])), "transforms.json"),
    "nerf_matrix_shape": (_file("transforms.json", _nerf(frames=[{"transform_matrix": [[1, 0, 0], [0, 1, 0]]}])),
                          "transforms.json"),
    "nerf_no_focal": (_file("transforms.json", {"w": W, "h": H, "frames": [{"transform_matrix": GL}]}),
                      "transforms.json"),
    "worldscore_empty": (_file("camera_data.json", {"focal_length": 50, "cameras_interp": []}), "camera_data.json"),
    "mirage_version": (_file("traj.json", _mirage(version=9)), "traj.json"),
    "mirage_nan_K": (_file("traj.json", json.dumps(_mirage()).replace("50.0", "NaN", 1)), "traj.json"),
    "mirage_other_aspect": (_file("square.json", _mirage(width=64, height=64)), "square.json"),
    "yaml_unknown_key": (_file("mine.yaml", "name: mine\nframs: 10\nsegments:\n  - kind: orbit\n"), "mine.yaml"),
    "yaml_syntax": (_file("broken.yaml", "segments: [\n"), "broken.yaml"),
    "unknown_extension": (_file("cams.csv", "1,2,3\n"), "cams.csv"),
    "missing_file": (lambda tmp: tmp / "nowhere.json", "nowhere.json"),
    "empty_folder": (lambda tmp: (tmp / "emptydir").mkdir(parents=True) or tmp / "emptydir", "emptydir"),
}


#: Cases that stop at format detection (their content or name tells no format): the one check they may share.
DETECTION = {"json_unknown_kind", "unknown_extension", "nerf_no_frames", "re10k_empty"}


def _check_of(message: str, root: Path) -> str:
    """The check an error message comes from: the message with the file names and numbers taken out."""
    import re

    m = message.replace(str(root), "")
    m = re.sub(r"[/\w.-]*?(\.txt|\.json|\.yaml|\.csv|\.bin|emptydir|sparse)\b", "F", m)
    return re.sub(r"\d+(\.\d+)?", "N", m)


def test_each_malformed_file_trips_its_own_check(tmp_path):
    """The malformed files are not one case many times: each is stopped by a different check of the parsers
    (only the format detector is shared, by the cases listed in DETECTION), and each message names its file."""
    from mirage.errors import TrajectoryError
    from mirage.trajectory import load_trajectory

    checks: dict[str, list[str]] = {}
    for name, (make, blame) in sorted(BAD_FILES.items()):
        path = make(tmp_path / name)
        with pytest.raises(TrajectoryError) as e:
            load_trajectory(path, width=W, height=H)
        assert blame in str(e.value), (name, str(e.value))
        checks.setdefault(_check_of(str(e.value), tmp_path / name), []).append(name)
    shared = {tuple(v) for v in checks.values() if len(v) > 1}
    assert shared == {tuple(sorted(DETECTION))}, shared
    assert len(checks) == len(BAD_FILES) - len(DETECTION) + 1


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_traj_show_malformed_file(name, tmp_path, monkeypatch, capsys):
    make, blame = BAD_FILES[name]
    path = make(tmp_path / "in")
    code, out, err = run_main(monkeypatch, capsys, "traj", "show", path, "--size", f"{W}x{H}")
    assert_one_red_line(code, err, blame)
    assert "frames" not in out  # no table printed for a file that did not load


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_render_malformed_file(name, tiny, tmp_path, monkeypatch, capsys):
    make, blame = BAD_FILES[name]
    path = make(tmp_path / "in")
    image = tmp_path / "img.png"
    Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(image)
    out = tmp_path / "out" / "v.mp4"
    code, _, err = run_main(monkeypatch, capsys, "render", image, "--traj", path, "--preset", "tiny", "--device", "cpu",
                            "--size", f"{W}x{H}", "--steps", "1", "--chunk-frames", "5", "-q", "-o", out)
    assert_one_red_line(code, err, blame)
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder


# ------------------------------------------------------------------------------------------------ other commands


@pytest.mark.parametrize(
    "args, names",
    [
        (["traj", "show", "orbit", "--size", "64by48"], ["--size", "64by48"]),
        (["traj", "show", "orbit"], ["needs the image size"]),
        (["traj", "show", "orbitt", "--size", "64x48"], ["'orbitt'", "presets:"]),
        (["traj", "show", "orbit", "--size", "64x48", "--frames", "1"], ["--frames", "1"]),
        (["traj", "show", "orbit", "--size", "64x48", "--traj-scale", "-1"], ["--traj-scale"]),
        (["traj", "show", "orbit", "--image", "/no/such/image.png"], ["/no/such/image.png"]),
        (["traj", "show", "orbit", "--size", "64x48", "--image", "x.png"], ["--image and --size"]),
        (["traj", "convert", "nope_preset", "--size", "64x48", "-o", "OUT/x.json"], ["'nope_preset'"]),
        (["download", "nope"], ["'nope'", "valid presets"]),
        (["render", "IMG", "--traj", "orbit", "--size", "64x48", "--intrinsics", "a,b,c,d", "-o", "OUT/x.mp4"],
         ["--intrinsics"]),
        (["render", "IMG", "--traj", "orbit", "--size", "wide", "-o", "OUT/x.mp4"], ["--size", "'wide'"]),
        (["render", "IMG", "--traj", "orbit", "--device", "cuda", "-o", "OUT/x.mp4"], ["--device", "cuda"]),
        (["render", "IMG", "--traj", "orbit", "--preset", "tiny", "--size", "64x48", "--depth", "NPY", "-o",
          "OUT/x.mp4"], ["nan.npy"]),
        (["render", "IMG", "--traj", "orbit", "--preset", "tiny", "--size", "64x48", "--memory-from", "CORRUPT",
          "-o", "OUT/x.mp4"], ["bad.memory.safetensors"]),
        (["bench", "--frames", "abc", "--device", "cpu"], ["--frames", "'abc'"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0] in ("traj", "render", "download", "bench") else "",
)
def test_other_bad_input_is_one_red_line(args, names, tiny, tmp_path, monkeypatch, capsys):
    if args[0] == "render":
        import torch

        if "cuda" in args and torch.cuda.is_available():
            pytest.skip("a CUDA device is present: --device cuda is not an error here")
    image = tmp_path / "img.png"
    Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(image)
    npy = tmp_path / "nan.npy"
    np.save(npy, np.full((H, W), np.nan, np.float32))
    corrupt = tmp_path / "bad.memory.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    subst = {"IMG": str(image), "NPY": str(npy), "CORRUPT": str(corrupt), "x.png": str(image)}
    args = [subst.get(a, a.replace("OUT", str(tmp_path / "out"))) for a in args]
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert_one_red_line(code, err, *names)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ closed sets
# Enum options: click rejects a typo (exit 2, usage error naming the value and every choice) before any work


def _commands_with(option: str) -> set[str]:
    """Every command of the CLI (walked from the root) that takes ``option``, as "traj show", "render", ..."""
    import typer

    from mirage_cli.main import app

    out: set[str] = set()

    def walk(cmd, path: str) -> None:
        for sub_name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, f"{path} {sub_name}".strip())
        if any(option in p.opts for p in getattr(cmd, "params", [])):
            out.add(path)

    walk(typer.main.get_command(app), "")
    return out


# the commands taking each closed-set option, with argv that is valid up to the option under test
_FORMAT_ARGV = {
    "traj show": ["traj", "show", "orbit", "--size", "64x48"],
    "traj convert": ["traj", "convert", "orbit", "--size", "64x48", "-o", "t.json"],
    "render": ["render", "img.png", "--traj", "orbit", "-o", "v.mp4"],
}
_DTYPE_ARGV = {"render": _FORMAT_ARGV["render"], "bench": ["bench"]}


def test_every_command_with_a_closed_set_option_is_tested():
    assert _commands_with("--format") == set(_FORMAT_ARGV)  # a new command taking --format joins the tests below
    assert _commands_with("--dtype") == _commands_with("--vae-dtype") == set(_DTYPE_ARGV)


@pytest.mark.parametrize("cmd", sorted(_FORMAT_ARGV))
def test_format_typo_exits_2_listing_the_trajformat_choices(cmd, tmp_path, monkeypatch, capsys):
    from mirage.trajectory import TrajFormat

    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, *_FORMAT_ARGV[cmd], "--format", "colmapp")
    assert code == 2 and "'colmapp'" in err
    assert all(f"'{f.value}'" in err for f in TrajFormat), err  # click lists the Enum's choices
    assert not list(tmp_path.iterdir())  # nothing read or written
    code, out, err = run_main(monkeypatch, capsys, *_FORMAT_ARGV[cmd], "--format", "COLMAP")
    assert "'COLMAP'" not in err  # case-insensitive: accepted as a choice (then fails on the preset, not here)


@pytest.mark.parametrize(("cmd", "option"), [(c, o) for c in sorted(_DTYPE_ARGV) for o in ("--dtype", "--vae-dtype")])
def test_dtype_typo_exits_2_listing_the_library_enum(cmd, option, tmp_path, monkeypatch, capsys):
    from mirage.dtypes import DType, VaeDType

    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, *_DTYPE_ARGV[cmd], option, "float8")
    assert code == 2 and "'float8'" in err
    assert all(f"'{v}'" in err for v in ["auto", *(d.value for d in (DType if option == "--dtype" else VaeDType))]), err


def test_env_lists_versions_and_fp8_readiness(monkeypatch, capsys):
    from tests._cli import run_main

    code, out, _ = run_main(monkeypatch, capsys, "env")
    assert code == 0
    for key in ("mirage", "torch", "diffusers", "nvidia-cudnn-frontend", "cuDNN (torch's)"):
        assert key in out, out
    assert ("no CUDA device seen" in out) or ("--fp8" in out)
