"""`mirage render` from the command line: what the user gets (files, lines, exit codes) with the tiny preset on CPU.

Three ways in: typer's CliRunner on ``mirage_cli.main.app`` (output checks), ``mirage_cli.main.main()`` in process
(the one error boundary: MirageError -> one red line + exit 2, RuntimeFailure -> exit 1), and a few subprocesses
of ``python -m mirage_cli`` (the real entry point's exit codes).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import run_main  # tests/_cli.py
from PIL import Image
from typer.testing import CliRunner

from mirage.trajectory import load_trajectory
from mirage.video import read_mp4

REPO = Path(__file__).resolve().parents[1]
ROOM = REPO / "examples" / "room" / "image.png"
W, H = 64, 48
TINY = ["--preset", "tiny", "--device", "cpu", "--size", f"{W}x{H}", "--chunk-frames", "5", "--steps", "2", "-q"]
runner = CliRunner()


@pytest.fixture(scope="session")
def tiny():
    """Build the tiny preset once per session (in $MIRAGE_CACHE, set by conftest)."""
    from mirage.hub import build_tiny

    return build_tiny()


@pytest.fixture(autouse=True)
def _restore_logger_and_check_temp_files(tmp_path, monkeypatch):
    """The CLI's root callback installs a rich handler on the "mirage" logger (propagate off): undo it so other
    tests' caplog still works. And no test may leave a ``.part`` temp file anywhere. Rich wraps at COLUMNS: wide,
    so that paths stay on one line."""
    monkeypatch.setenv("COLUMNS", "300")
    log = logging.getLogger("mirage")
    state = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = state[0], state[1], state[2]
    assert [p for p in tmp_path.rglob("*") if ".part-" in p.name] == []


def invoke(*args: str):
    from mirage_cli.main import app

    return runner.invoke(app, [str(a) for a in args])


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


def make_images(folder: Path, names: str = "ab") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, n in enumerate(names):
        arr = np.full((H, W, 3), 40 + 60 * i, np.uint8)
        arr[:, : W // 2, 0] = 220  # some structure, so frames differ
        Image.fromarray(arr).save(folder / f"{n}.png")
        paths.append(folder / f"{n}.png")
    return paths


def corrupt(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return path


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------ outputs


def test_render_writes_video_frames_warped_and_report(tiny, tmp_path):
    out = tmp_path / "v" / "room.mp4"
    frames_dir = tmp_path / "pngs"
    report = tmp_path / "meta" / "run.json"
    r = invoke("render", ROOM, "--traj", "orbit", "--frames", "9", *TINY, "-o", out, "--frames-dir", frames_dir,
               "--save-warped", "--report", report)
    assert r.exit_code == 0, r.output
    assert f"done {ROOM} -> {out}" in " ".join(r.stderr.split())
    video, fps = read_mp4(out)
    assert video.shape == (9, H, W, 3) and fps == pytest.approx(16.0)
    # PNG frames: 9 of them, the same pictures as the (lossy) MP4
    pngs = sorted(p for p in frames_dir.iterdir() if not p.name.startswith("."))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(9)]
    assert json.loads((frames_dir / ".mirage-frames.json").read_text())["files"] == [p.name for p in pngs]
    png = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pngs])
    assert png.shape == video.shape
    assert np.abs(png.astype(int) - video.astype(int)).mean() < 6.0
    # --save-warped: reads | output side by side, twice as wide, right half = the video
    warped, wfps = read_mp4(out.with_name("room_warped.mp4"))
    assert warped.shape == (9, H, 2 * W, 3) and wfps == pytest.approx(16.0)
    assert np.abs(warped[:, :, W:].astype(int) - video.astype(int)).mean() < 6.0
    assert np.abs(warped[:, :, :W].astype(int) - warped[:, :, W:].astype(int)).mean() > 0.5  # reads != output
    # --report: the report goes there (and not beside the MP4) and lists every output
    assert not out.with_suffix(".json").exists()
    rep = json.loads(report.read_text())
    assert rep["outputs"] == {"video": str(out), "frames_dir": str(frames_dir),
                              "warped": str(out.with_name("room_warped.mp4")), "report": str(report)}
    assert rep["settings"]["keep_reads"] is True and "decode_reads" in rep["timing_ms"]
    assert rep["frames"] == 9 and rep["width"] == W and rep["height"] == H
    # resume: the same command again skips, --overwrite redoes
    r2 = invoke("render", ROOM, "--traj", "orbit", "--frames", "9", *TINY, "-o", out, "--report", report)
    assert r2.exit_code == 0 and "done" not in r2.stderr
    assert "skipped" in r2.stderr and "--overwrite" in r2.stderr


def test_rgb_memory_from_the_cli(tiny, tmp_path):
    out = tmp_path / "rgb.mp4"
    r = invoke("render", ROOM, "--traj", "truck_right", "--frames", "9", *TINY, "-o", out, "--memory", "rgb")
    assert r.exit_code == 0, r.output
    assert read_mp4(out)[0].shape == (9, H, W, 3)
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["memory"]["kind"] == "rgb" and len(rep["chunks"]) == 2


def test_save_memory_then_continue_from_it(tiny, tmp_path, monkeypatch, capsys):
    mem = tmp_path / "state" / "room.memory.safetensors"
    a = tmp_path / "a.mp4"
    r = invoke("render", ROOM, "--traj", "orbit", "--frames", "13", *TINY, "-o", a, "--save-memory", mem)
    assert r.exit_code == 0, r.output
    rep_a = json.loads(a.with_suffix(".json").read_text())
    assert rep_a["outputs"]["memory"] == str(mem) and mem.is_file() and mem.stat().st_size > 1000
    grown = rep_a["memory"]["tokens"]
    assert grown > rep_a["chunks"][0]["tokens"]  # the saved memory holds what the write-back added
    b = tmp_path / "b.mp4"
    r = invoke("render", ROOM, "--traj", "orbit", "--frames", "5", *TINY, "-o", b, "--memory-from", mem)
    assert r.exit_code == 0, r.output
    rep_b = json.loads(b.with_suffix(".json").read_text())
    assert rep_b["inputs"]["memory_from"] == str(mem)
    assert rep_b["chunks"][0]["tokens"] == grown  # continued from the saved state, not rebuilt from the image
    fresh = tmp_path / "fresh.mp4"
    assert invoke("render", ROOM, "--traj", "orbit", "--frames", "5", *TINY, "-o", fresh).exit_code == 0
    assert json.loads(fresh.with_suffix(".json").read_text())["chunks"][0]["tokens"] < grown
    # the other memory kind cannot continue it: one line, exit 2
    code, _, err = run_main(monkeypatch, capsys, "render", ROOM, "--traj", "orbit", "--frames", "5", *TINY,
                            "-o", tmp_path / "c.mp4", "--memory-from", mem, "--memory", "rgb")
    assert code == 2 and len(error_lines(err)) == 1, err
    assert "holds a latent memory" in err and "--memory latent" in err and "Traceback" not in err
    assert not (tmp_path / "c.mp4").exists()


def test_worldscore_layout_reads_back(tiny, tmp_path):
    from mirage.camera import intrinsics_from_fov, scale_intrinsics
    from mirage.trajectory import TrajFormat, load_trajectory

    image = tmp_path / "wall.png"  # 4:3 like the output, so the resize to 64x48 keeps square pixels
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(image)
    depth = tmp_path / "flat.npy"
    np.save(depth, np.full((30, 40), 2.0, np.float32))  # a wall 2 m away: the median scene depth is exactly 2
    ws = tmp_path / "ws"
    out = tmp_path / "w.mp4"
    r = invoke("render", image, "--traj", "orbit", "--frames", "9", *TINY, "-o", out, "--worldscore", ws,
               "--depth", depth, "--fov", "60")
    assert r.exit_code == 0, r.output
    want = ([f"frames/{i:03d}.png" for i in range(9)] + ["frames/.mirage-frames.json"]  # the frames mirage wrote
            + ["camera_data.json", "image_data.json", "input_image.png", "time.txt", "videos/output.mp4"])
    assert files(ws) == sorted(want)
    assert read_mp4(ws / "videos" / "output.mp4")[0].shape == (9, H, W, 3)
    assert Image.open(ws / "input_image.png").size == (W, H)
    assert float((ws / "time.txt").read_text()) > 0
    img = json.loads((ws / "image_data.json").read_text())
    assert img["num_frames"] == 9 and img["resolution"] == [W, H] and img["image_path"] == "input_image.png"
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["outputs"]["worldscore_dir"] == str(ws)
    # camera_data.json reads back through the CLI ...
    cam = ws / "camera_data.json"
    r = invoke("traj", "show", cam, "--format", "worldscore", "--size", f"{W}x{H}")
    assert r.exit_code == 0, r.output
    assert "9" in r.output and f"{W}x{H}" in r.output and "60.0 deg" in r.output
    # ... to the cameras the render used: the orbit preset at the --fov intrinsics and the 2 m scene depth
    back = load_trajectory(cam, fmt=TrajFormat.WORLDSCORE, width=W, height=H)
    K = scale_intrinsics(intrinsics_from_fov(60.0, 128, 96), W / 128)  # --fov is of the image as given
    truth = load_trajectory("orbit", width=W, height=H, K=K, scene_depth=2.0, frames=9)
    assert back.num_frames == 9
    assert torch.allclose(back.w2c, truth.w2c, atol=1e-9)
    assert torch.allclose(back.K, truth.K, atol=1e-9)


# ------------------------------------------------------------------------------------------------ batch and errors


def test_batch_folder_one_corrupt_image(tiny, tmp_path, monkeypatch, capsys):
    src = tmp_path / "photos"
    make_images(src, "ac")
    corrupt(src / "b.png")
    out_dir = tmp_path / "videos"
    code, _, err = run_main(monkeypatch, capsys, "render", src, "--traj", "orbit", "--frames", "5", *TINY,
                            "--out-dir", out_dir, "--frames-dir", tmp_path / "pngs")
    assert code == 1, err
    assert files(out_dir) == ["a.json", "a.mp4", "c.json", "c.mp4", "summary.json"]  # outputs named after the inputs
    summary = json.loads((out_dir / "summary.json").read_text())  # the batch's summary names the failure
    assert summary["failed"] == [str(src / "b.png")] and len(summary["worst_first"]) == 2
    assert files(tmp_path / "pngs") == [f"{n}/{f}" for n in "ac"  # --frames-dir DIR/<name>/, with its manifest
                                        for f in [".mirage-frames.json", *(f"{i:05d}.png" for i in range(5))]]
    lines = error_lines(err)
    assert lines == [f"error: 1 of 3 inputs failed: {src / 'b.png'}"], err
    assert f"failed {src / 'b.png'}" in err and "cannot be read" in err  # the per-input line says why
    assert f"done {src / 'a.png'}" in err and f"done {src / 'c.png'}" in err
    assert "Traceback" not in err
    # the summary table names every input with its status
    table = err[err.index("mirage render"):]
    for name, status in (("a.png", "done"), ("b.png", "failed"), ("c.png", "done")):
        row = next(ln for ln in table.splitlines() if name in ln)
        assert status in row, row


def test_names_with_markup_and_emoji_codes_are_shown_as_written(tiny, tmp_path, monkeypatch, capsys):
    """rich reads [..] as markup and :name: as an emoji: a user's file name and an error message must not be either."""
    src = tmp_path / "in"
    make_images(src, "a")
    bad = corrupt(src / "b[red] :abc:.png")
    code, _, err = run_main(monkeypatch, capsys, "render", src, "--traj", "orbit", "--frames", "5", *TINY,
                            "--out-dir", tmp_path / "out")
    assert code == 1, err
    assert error_lines(err) == [f"error: 1 of 2 inputs failed: {bad}"], err
    assert f"failed {bad} -> {tmp_path / 'out' / 'b[red] :abc:.mp4'}" in err  # the per-input line
    assert next(ln for ln in err[err.index("mirage render"):].splitlines() if "b[red] :abc:" in ln)  # the table
    cam = tmp_path / "sc[/x]" / "c[red].json"  # a closing tag rich never opened was a MarkupError (a crash)
    cam.parent.mkdir(parents=True)  # the folders "sc[" and "x]"
    load_trajectory("orbit", width=W, height=H, frames=5).save_json(cam)
    code, out, err = run_main(monkeypatch, capsys, "traj", "show", cam)
    assert code == 0 and f"trajectory {cam}" in out and str(cam) in out, out + err
    code, _, err = run_main(monkeypatch, capsys, "render", src / "a.png", "-t", "orbit", "-o", tmp_path / "o.mp4",
                            "--lora", "x.safetensors:abc")
    assert code == 2 and error_lines(err)[0].startswith("error: --lora x.safetensors:abc: 'abc' is not a scale; pass "
                                                        "a local .safetensors file or owner/name[@revision]:"), err


@pytest.mark.parametrize(
    "case",
    ["both", "neither", "many_to_file", "not_mp4", "report_in_batch", "depth_in_batch", "bad_size", "bad_chunks",
     "missing_image", "unknown_preset", "bad_intrinsics", "offload_on_cpu"],
)
def test_option_errors_are_one_line_exit_2(tiny, tmp_path, monkeypatch, capsys, case):
    src = tmp_path / "in"
    a, b = make_images(src, "ab")
    base = ["--traj", "orbit", "--frames", "5", *TINY]
    args, expect = {
        "both": ([a, *base, "-o", tmp_path / "x.mp4", "--out-dir", tmp_path / "o"], "exactly one of -o"),
        "neither": ([a, *base], "exactly one of -o"),
        "many_to_file": ([src, *base, "-o", tmp_path / "x.mp4"], "2 inputs need --out-dir"),
        "not_mp4": ([a, *base, "-o", tmp_path / "x.avi"], "must end in .mp4"),
        "report_in_batch": ([src, *base, "--out-dir", tmp_path / "o", "--report", tmp_path / "r.json"],
                            "--report"),
        "depth_in_batch": ([src, *base, "--out-dir", tmp_path / "o", "--depth", tmp_path / "d.npy"], "--depth"),
        "bad_size": ([a, *base, "--size", "60x40", "-o", tmp_path / "x.mp4"], "multiples of 16"),
        "bad_chunks": ([a, *base, "--chunk-frames", "6", "-o", tmp_path / "x.mp4"], "4k + 1"),
        "missing_image": ([tmp_path / "nope.png", *base, "-o", tmp_path / "x.mp4"], "nope.png"),
        "unknown_preset": ([a, *base, "--preset", "tinyy", "-o", tmp_path / "x.mp4"], "tinyy"),
        "bad_intrinsics": ([a, *base, "--intrinsics", "1,2,3", "-o", tmp_path / "x.mp4"], "fx,fy,cx,cy"),
        "offload_on_cpu": ([a, *base, "--offload", "model", "-o", tmp_path / "x.mp4"], "--device cuda"),
    }[case]
    # later options win in click: "--size 60x40" after TINY's --size, etc.
    code, out, err = run_main(monkeypatch, capsys, "render", *args)
    assert code == 2, (code, err)
    lines = error_lines(err)
    assert len(lines) == 1 and expect in lines[0], err
    assert "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "o").exists()


def test_usage_errors_exit_2(tiny, tmp_path, monkeypatch, capsys):
    """click's own checks (missing --traj, a bad enum) go through the same boundary: exit 2, no traceback."""
    for args, expect in (
        ([ROOM, "-o", tmp_path / "x.mp4"], "--traj"),
        ([ROOM, "--traj", "orbit", "--memory", "voxels", "-o", tmp_path / "x.mp4"], "voxels"),
        ([ROOM, "--traj", "orbit", "--denoiser", "magic", "-o", tmp_path / "x.mp4"], "magic"),
        ([ROOM, "--traj", "orbit", "--frames", "many", "-o", tmp_path / "x.mp4"], "--frames"),
    ):
        code, _, err = run_main(monkeypatch, capsys, "render", *args)
        assert code == 2 and expect in err and "Traceback" not in err, (args, err)


# ------------------------------------------------------------------------------------------------ the real entry point


def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="300", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MIRAGE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "mirage_cli", *[str(a) for a in args]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def test_python_m_mirage_cli_exit_codes(tiny, tmp_path):
    # success: 0, a real MP4 of the asked frames
    out = tmp_path / "ok.mp4"
    p = _cli("render", ROOM, "--traj", "orbit", "--frames", "5", *TINY, "-o", out, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert read_mp4(out)[0].shape == (5, H, W, 3)
    # bad input: 2, one red line, no traceback
    p = _cli("render", tmp_path / "missing.png", "--traj", "orbit", *TINY, "-o", tmp_path / "m.mp4", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert error_lines(p.stderr) == [f"error: input {tmp_path / 'missing.png'}: no such file or folder; check the path"]
    assert "Traceback" not in p.stderr
    # a batch with one failure: 1 (a runtime failure), the others written
    src = tmp_path / "in"
    make_images(src, "a")
    corrupt(src / "b.png")
    p = _cli("render", src, "--traj", "orbit", "--frames", "5", *TINY, "--out-dir", tmp_path / "o", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert files(tmp_path / "o") == ["a.json", "a.mp4", "summary.json"]
    assert error_lines(p.stderr) == [f"error: 1 of 2 inputs failed: {src / 'b.png'}"] and "Traceback" not in p.stderr


# ------------------------------------------------------------------------------------------------ sampling options


def _captured_config(monkeypatch, capsys, *args):
    """The RenderOptions `mirage render ARGS` hands the library (mirage.batch.render replaced by a recorder)."""
    import mirage.batch as mb

    got = {}

    def fake_render(images, traj, req, config, options, **kw):
        got["config"] = options
        return mb.BatchResult(items=[])

    monkeypatch.setattr(mb, "render", fake_render)
    code, _, err = run_main(monkeypatch, capsys, "render", ROOM, "--traj", "orbit", "-o", "x.mp4", *args)
    assert code == 0, err
    return got["config"]


def test_sampling_flags_reach_the_library(monkeypatch, capsys, tmp_path):
    from mirage.sampling import SamplingProfile

    monkeypatch.chdir(tmp_path)
    c = _captured_config(monkeypatch, capsys)
    assert (c.profile, c.steps, c.guidance, c.negative_prompt, c.flow_shift) == (SamplingProfile.STANDARD, None, None,
                                                                                 None, None)  # the profile decides
    c = _captured_config(monkeypatch, capsys, "--steps", "7", "--guidance", "2.5", "--negative-prompt", "blurry, static",
                         "--flow-shift", "16")
    assert (c.profile, c.steps, c.guidance, c.negative_prompt, c.flow_shift) == (SamplingProfile.STANDARD, 7, 2.5,
                                                                                 "blurry, static", 16.0)
    c = _captured_config(monkeypatch, capsys, "--fast")
    assert (c.profile, c.steps, c.guidance, c.flow_shift) == (SamplingProfile.FAST, None, None, None)
    c = _captured_config(monkeypatch, capsys, "--fast", "--steps", "4", "--guidance", "3")  # explicit flags win
    assert (c.profile, c.steps, c.guidance) == (SamplingProfile.FAST, 4, 3.0)
    c = _captured_config(monkeypatch, capsys, "--negative-prompt", "")  # an empty negative prompt is a value
    assert c.negative_prompt == ""


@pytest.mark.parametrize(
    "args, line",
    [
        (["--flow-shift", "-1"], "error: --flow-shift -1: must be > 0"),
        (["--flow-shift", "0"], "error: --flow-shift 0: must be > 0"),
        (["--steps", "0"], "error: --steps 0: must be a whole number >= 1"),
        (["--guidance", "0.5"], "error: --guidance 0.5: must be >= 1.0"),
        (["--fast", "--guidance", "nan"], "error: --guidance nan: must be >= 1.0"),
    ],
)
def test_bad_sampling_values_exit_2_with_one_line(args, line, tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "render", ROOM, "--traj", "orbit", "--preset", "tiny", "--device",
                            "cpu", "-o", tmp_path / "x.mp4", *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and lines[0].startswith(line), err
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1 and "Traceback" not in err
    assert not (tmp_path / "x.mp4").exists()


def test_bench_sampling_flags_reach_the_library(monkeypatch, capsys):
    import mirage.bench as bench_mod
    from mirage.errors import InputError
    from mirage.sampling import SamplingProfile

    got = {}

    def fake_run_bench(cfg, **kw):
        got["cfg"] = cfg
        raise InputError("recorded")  # stop before anything is built

    monkeypatch.setattr(bench_mod, "run_bench", fake_run_bench)
    run_main(monkeypatch, capsys, "bench", "--device", "cpu", "--fast", "--guidance", "2", "--negative-prompt", "n",
             "--flow-shift", "4.5", "--steps", "2,3")
    r = got["cfg"].options
    assert (r.profile, r.guidance, r.negative_prompt, r.flow_shift) == (SamplingProfile.FAST, 2.0, "n", 4.5)
    assert got["cfg"].steps == (2, 3)
    run_main(monkeypatch, capsys, "bench", "--device", "cpu")
    r = got["cfg"].options
    assert (r.profile, r.guidance, r.negative_prompt, r.flow_shift) == (SamplingProfile.STANDARD, None, None, None)
    assert r.scores is True
    run_main(monkeypatch, capsys, "bench", "--device", "cpu", "--no-scores")
    assert got["cfg"].options.scores is False
    assert [m.value for m in got["cfg"].memories] == ["latent", "rgb"]  # both, side by side, by default
    run_main(monkeypatch, capsys, "bench", "--device", "cpu", "--memory", "latent", "--memory", "latent")
    assert [m.value for m in got["cfg"].memories] == ["latent"]


def test_bench_bad_flow_shift_is_one_line_before_any_model(monkeypatch, capsys):
    import mirage.bench as bench_mod

    monkeypatch.setattr(bench_mod, "build_pipeline", lambda cfg: pytest.fail("a model was built"))
    code, _, err = run_main(monkeypatch, capsys, "bench", "--device", "cpu", "--flow-shift", "-2")
    assert code == 2 and err.strip().splitlines()[0].startswith("error: --flow-shift -2: must be > 0"), err
