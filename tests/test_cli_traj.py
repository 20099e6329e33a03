"""`mirage traj list | show | convert`: what reaches the library, what the user sees, which files are written."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mirage.errors import InputError, TrajectoryError
from mirage.trajectory import list_camera_presets, load_trajectory

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
runner = CliRunner()


def _app():
    """The root app with its `traj` group (the CLI users run)."""
    from mirage_cli.main import app

    return app, ["traj"]


def invoke(*args: str):
    app, prefix = _app()
    return runner.invoke(app, [*prefix, *args])


def test_list_prints_one_line_per_preset():
    r = invoke("list")
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    names = [p.name for p in list_camera_presets()]
    assert len(lines) == len(names)
    assert [ln.split()[0] for ln in lines] == names
    assert any(ln.startswith("orbit_left") and "WorldScore" in ln for ln in lines)


def test_show_orbit_with_plot(tmp_path):
    png = tmp_path / "x.png"
    r = invoke("show", "orbit", "--size", "832x480", "--plot", str(png))
    assert r.exit_code == 0, r.output
    assert "preset:orbit" in r.output and "49" in r.output and "832x480" in r.output and "30.0 deg" in r.output
    assert png.is_file()
    with Image.open(png) as im:
        assert im.format == "PNG" and 600 <= im.size[0] <= 2000 and 300 <= im.size[1] <= 1200
        rgb = torch.from_numpy(np.array(im.convert("RGB"))).int()
    non_white = (rgb < 250).any(dim=-1).float().mean()
    assert 0.005 < float(non_white) < 0.5  # something is drawn, not everything
    red = (rgb[..., 0] > 180) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    assert int(red.sum()) > 50  # frame 0 highlighted in red
    assert not list(tmp_path.glob(".*part*"))  # atomic write left no temp file


def test_show_options_reach_the_library():
    r = invoke("show", "tour", "--size", "64x48", "--frames", "9", "--fps", "8", "--traj-scale", "2")
    assert r.exit_code == 0, r.output
    assert "9" in r.output and "1.12 s" in r.output  # 9 frames at 8 fps
    t = load_trajectory("tour", width=64, height=48, frames=9, fps=8, scale=2.0)
    assert f"{t.stats().path_length:.4g}" in r.output


def test_convert_writes_json_that_reads_back_identically(tmp_path):
    out = tmp_path / "orbit.json"
    r = invoke("convert", "orbit", "--size", "832x480", "-o", str(out), "--scene-depth", "2")
    assert r.exit_code == 0, r.output
    a = load_trajectory("orbit", width=832, height=480, scene_depth=2.0)
    b = load_trajectory(out)
    assert b.size == (832, 480) and b.fps == a.fps and b.num_frames == 49
    assert torch.equal(a.K, b.K)
    assert torch.allclose(a.w2c, b.w2c, rtol=0, atol=1e-15)
    # and a converted file converts again to the same file
    out2 = tmp_path / "again.json"
    assert invoke("convert", str(out), "-o", str(out2)).exit_code == 0
    assert out2.read_text() == out.read_text()


def test_image_option_reads_the_size(tmp_path):
    img = tmp_path / "im.png"
    Image.new("RGB", (96, 64)).save(img)
    out = tmp_path / "t.json"
    r = invoke("convert", "pan_left", "--image", str(img), "-o", str(out))
    assert r.exit_code == 0, r.output
    assert load_trajectory(out).size == (96, 64)


def test_image_option_with_real_photo(tmp_path):
    img = SHARED / "images" / "room.png"
    if not img.is_file():
        pytest.skip(f"shared data not found at {img}")
    out = tmp_path / "t.json"
    assert invoke("convert", "orbit", "--image", str(img), "-o", str(out)).exit_code == 0
    assert load_trajectory(out).size == (1024, 576)


@pytest.mark.parametrize("size", ["83x", "832", "axb", "0x480", "832x480x3"])
def test_bad_size_is_one_clear_input_error(size):
    r = invoke("show", "orbit", "--size", size)
    assert isinstance(r.exception, InputError)
    msg = str(r.exception)
    assert "\n" not in msg and "--size" in msg and repr(size) in msg and "832x480" in msg


def test_other_bad_inputs():
    r = invoke("show", "orbit", "--size", "64x48", "--image", "x.png")
    assert isinstance(r.exception, InputError) and "--image and --size" in str(r.exception)
    r = invoke("show", "orbitt", "--size", "64x48")
    assert isinstance(r.exception, TrajectoryError) and "orbit_left" in str(r.exception)
    r = invoke("show", "orbit")
    assert isinstance(r.exception, TrajectoryError) and "--size" in str(r.exception)
    r = invoke("show", "orbit", "--size", "64x48", "--format", "nope")
    assert r.exit_code == 2 and "nope" in r.output and "colmap" in r.output  # click lists the choices
    r = invoke("show", "orbit", "--image", "/nonexistent/im.png")
    assert isinstance(r.exception, InputError) and "does not exist" in str(r.exception)


def test_error_boundary_prints_one_red_line(monkeypatch, capsys):
    import mirage_cli.main as main_mod
    monkeypatch.setattr(sys, "argv", ["mirage", "traj", "show", "orbit", "--size", "83x"])
    monkeypatch.delenv("MIRAGE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        main_mod.main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --size: '83x'") and len(err.splitlines()) == 1

