"""What mirage guarantees about a user's files and its exit status (docs/reliability.md), one test per promise.

Ctrl-C exits 130 and says what finished; a SIGKILL'd batch resumes without redoing finished work and cleans its
temporary files; two batches on one --out-dir share the work; no output option destroys an input; --frames-dir
removes only frames mirage wrote; images are read as a photo viewer shows them; the MP4 and the report agree on
the frame rate; a full disk while saving the memory is one line and leaves nothing behind.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import run_main  # tests/_cli.py
from PIL import Image

from mirage import batch as mb
from mirage.config import DenoiserKind, split_settings
from mirage.errors import OutputBusy
from mirage.inputs import TrajectoryOptions
from mirage.io import claim, lock_path
from mirage.video import read_image, read_mp4

REPO = Path(__file__).resolve().parents[1]
W, H = 64, 48
BASE = ["--preset", "tiny", "--device", "cpu", "--denoiser", "none", "--size", f"{W}x{H}", "-q"]
FAST = [*BASE, "--frames", "5"]


@pytest.fixture(scope="module")
def tiny():
    from mirage.hub import build_tiny

    return build_tiny()


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
    return path


def _cfg() -> tuple:
    return split_settings(preset="tiny", denoiser=DenoiserKind.NONE, size=(W, H), device="cpu")


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if ".part-" in p.name or p.name.endswith(".lock"))


# ------------------------------------------------------------------------------------------------ exit status


def test_ctrl_c_in_a_single_render_exits_130(tiny, tmp_path, monkeypatch, capsys):
    """Typer returns 130 on Ctrl-C (standalone_mode=False); the boundary must turn it into the exit code."""
    from mirage.pipeline import Pipeline

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Pipeline, "render", interrupted)
    img = _image(tmp_path / "a.png")
    code, _, err = run_main(monkeypatch, capsys, "render", img, "--traj", "orbit", *FAST, "-o", tmp_path / "o" / "a.mp4")
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing half-written, not even the folder


def _cli_popen(*args, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="300", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MIRAGE_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "mirage_cli", *[str(a) for a in args]], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_done(p: subprocess.Popen, timeout: float = 120) -> list[str]:
    """Read stderr until the first input is reported done; returns the lines read."""
    lines, t0 = [], time.monotonic()
    assert p.stderr is not None
    while time.monotonic() - t0 < timeout:
        line = p.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("done "):
            return lines
    p.kill()
    raise AssertionError("no input finished: " + "".join(lines))


def test_sigint_during_a_batch_exits_130_with_the_summary(tiny, tmp_path):
    src = tmp_path / "in"
    for i, n in enumerate("abcdef"):
        _image(src / f"{n}.png", seed=i)
    out = tmp_path / "out"
    p = _cli_popen("render", src, "--traj", "orbit", *FAST, "--out-dir", out, cwd=tmp_path)
    first = _wait_for_done(p)
    p.send_signal(signal.SIGINT)
    _, rest = p.communicate(timeout=120)
    err = "".join(first) + rest
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert "interrupted after" in err and "rendered" in err  # the summary of what finished
    done = sorted(q.stem for q in out.glob("*.mp4"))
    assert done and len(done) < 6, done
    for stem in done:  # every MP4 left is complete, with its report
        assert mb.is_done(mb._paths_for(src / f"{stem}.png", mb.OutputRequest(out_dir=out), True))
    assert _leftovers(out) == []


def test_sigkill_mid_batch_then_resume_finishes_without_redoing(tiny, tmp_path, monkeypatch, capsys):
    src = tmp_path / "in"
    for i, n in enumerate("abcd"):
        _image(src / f"{n}.png", seed=i)
    out = tmp_path / "out"
    p = _cli_popen("render", src, "--traj", "orbit", *FAST, "--out-dir", out, cwd=tmp_path)
    _wait_for_done(p)  # a.png finished; b.png is under way
    p.kill()  # SIGKILL: no handler runs
    p.communicate(timeout=60)
    finished = {q.stem: q.stat().st_mtime_ns for q in out.glob("*.json")}
    # what a SIGKILL inside the encoder leaves: a temporary file and a 0-byte MP4 beside an old report
    (out / ".c.mp4.part-dead.mp4").write_bytes(b"\x00" * 100)
    (out / "d.mp4").write_bytes(b"")
    (out / "d.json").write_text(json.dumps({"frames": 5}))
    lock_path(out / "c.mp4").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}))  # dead
    code, _, err = run_main(monkeypatch, capsys, "render", src, "--traj", "orbit", *FAST, "--out-dir", out)  # resume
    assert code == 0, err
    want = sorted([*(f"{n}.{e}" for n in "abcd" for e in ("json", "mp4")), "summary.json"])  # the batch's summary
    assert sorted(q.name for q in out.iterdir()) == want
    for stem, mtime in finished.items():  # finished before the kill: skipped, not redone
        assert (out / f"{stem}.json").stat().st_mtime_ns == mtime
    assert read_mp4(out / "d.mp4")[0].shape == (5, H, W, 3)  # the 0-byte MP4 was not "done"


# ------------------------------------------------------------------------------------------------ claims


def test_an_output_claimed_by_a_live_process_is_skipped_not_redone(tiny, tmp_path):
    src = tmp_path / "in"
    _image(src / "a.png")
    _image(src / "b.png", seed=1)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        lock_path(out / "a.mp4").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        res = mb.render([src], TrajectoryOptions("orbit", frames=5), mb.OutputRequest(out_dir=out), *_cfg())
    finally:
        holder.kill()
        holder.wait()
    status = {i.image.name: (i.status, i.error) for i in res.items}
    assert status["b.png"] == ("done", None)
    assert status["a.png"][0] == "skipped" and f"pid {holder.pid}" in status["a.png"][1]
    assert not (out / "a.mp4").exists() and lock_path(out / "a.mp4").exists()  # the other process's claim is kept
    assert not lock_path(out / "b.mp4").exists()  # this run's claim is released


def test_claim_is_exclusive_and_released(tmp_path):
    target = tmp_path / "sub" / "v.mp4"
    with claim(target) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        other = subprocess.run([sys.executable, "-c", (
            "import sys; sys.path.insert(0, sys.argv[2]); from mirage.io import claim\n"
            "try:\n    claim(sys.argv[1]).__enter__()\nexcept Exception as e:\n    print(type(e).__name__)\n"),
            str(target), str(REPO)], capture_output=True, text=True, timeout=120)
        assert other.stdout.strip() == OutputBusy.__name__, other.stderr
    assert not lock.exists() and not (tmp_path / "sub").exists()  # released; the folder it made is gone


# ------------------------------------------------------------------------------------------------ user's files


def test_frames_dir_removes_only_frames_mirage_wrote(tiny, tmp_path, monkeypatch, capsys):
    img = _image(tmp_path / "a.png")
    frames = tmp_path / "frames"
    args = ["render", img, "--traj", "orbit", *BASE, "--overwrite", "--frames-dir", frames]
    assert run_main(monkeypatch, capsys, *args, "--frames", "9", "-o", tmp_path / "v.mp4")[0] == 0
    (frames / "notes.txt").write_text("mine")  # a user's file that is not a frame
    assert run_main(monkeypatch, capsys, *args, "--frames", "5", "-o", tmp_path / "v.mp4")[0] == 0
    assert sorted(p.name for p in frames.glob("*.png")) == [f"{i:05d}.png" for i in range(5)]  # earlier 9 trimmed
    assert (frames / "notes.txt").read_text() == "mine"
    # a numbered image the user adds is never removed or overwritten: the folder is refused
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(frames / "00042.png")
    code, _, err = run_main(monkeypatch, capsys, *args, "--frames", "5", "-o", tmp_path / "v2.mp4")
    assert code == 2 and "00042.png" in err and (frames / "00042.png").exists()
    assert not (tmp_path / "v2.mp4").exists()


def test_traj_convert_never_overwrites_its_input(tmp_path, monkeypatch, capsys):
    src = tmp_path / "t.json"
    assert run_main(monkeypatch, capsys, "traj", "convert", "orbit", "--size", "64x48", "-o", src)[0] == 0
    before = src.read_bytes()
    code, _, err = run_main(monkeypatch, capsys, "traj", "convert", src, "--frames", "9", "-o", src)
    assert code == 2 and "would overwrite the trajectory" in err
    assert src.read_bytes() == before


def test_full_disk_while_saving_the_memory_is_one_line_and_leaves_nothing(tiny, tmp_path, monkeypatch, capsys):
    import mirage.memory.files as files

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    img = _image(tmp_path / "a.png")
    out = tmp_path / "out"
    code, _, err = run_main(monkeypatch, capsys, "render", img, "--traj", "orbit", *FAST, "-o", out / "v.mp4",
                            "--save-memory", out / "m.memory.safetensors")
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1, err  # a runtime failure, not the user's input
    assert len(lines) == 1 and "No space left on device" in lines[0] and "free disk space" in lines[0], err
    assert "internal error" not in err
    assert not out.exists()  # the MP4 written before the memory is removed too, and the folder


# ------------------------------------------------------------------------------------------------ images


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored landscape with orientation 6 (rotate 90 cw to show) is read portrait."""
    from mirage.video import image_size

    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255  # left half white as stored
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    p = tmp_path / "phone.jpg"
    im.save(p, exif=exif.tobytes(), quality=95)
    assert image_size(p) == (20, 40)  # (width, height) as shown
    x = read_image(p)
    assert tuple(x.shape) == (3, 40, 20)
    # rotated 90 degrees clockwise: the stored left half is now the top half
    assert float(x[:, :18].mean()) > 0.9 and float(x[:, 22:].mean()) < -0.9


def test_16_bit_and_float_images_keep_their_brightness(tmp_path):
    ramp = np.linspace(0, 1, 64 * 48).reshape(48, 64)
    p16 = tmp_path / "g16.png"
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(p16)
    ptif = tmp_path / "f.tif"
    Image.fromarray(ramp.astype(np.float32), mode="F").save(ptif)
    for p in (p16, ptif):
        x = read_image(p)
        assert tuple(x.shape) == (3, 48, 64)
        np.testing.assert_allclose(x[0].numpy(), ramp * 2 - 1, atol=1e-3)
        assert torch.equal(x[0], x[2])


def test_8_bit_pixels_read_as_the_float32_formula_gives_them_on_any_device_argument(tmp_path):
    """Every 8-bit value v reads as float32 ``v / 255 * 2 - 1`` computed on the CPU, exactly, whether the image is
    read to the CPU or sent as uint8 to a device (``device=``) and mapped there (gpu_smoke.py check 0 on CUDA)."""
    v = np.arange(256)
    rgb = np.stack([v, v[::-1], v * 7 % 256], -1).astype(np.uint8)[None].repeat(2, 0)  # (2, 256, 3): every value
    p = tmp_path / "values.png"
    Image.fromarray(rgb).save(p)
    expected = (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0) * 2.0 - 1.0  # the definition, on the CPU
    for device in (None, "cpu", torch.device("cpu")):
        x = read_image(p, device)
        assert x.dtype == torch.float32 and tuple(x.shape) == (3, 2, 256)
        assert torch.equal(x, expected), device


def test_fps_in_the_report_is_the_rate_the_mp4_holds(tiny, tmp_path, monkeypatch, capsys):
    img = _image(tmp_path / "a.png")
    out = tmp_path / "v.mp4"
    # 10.3333333 is no fraction with a denominator up to 1001: the MP4 stores 31/3, and so must the report
    code, _, err = run_main(monkeypatch, capsys, "render", img, "--traj", "orbit", *FAST, "--fps", "10.3333333",
                            "-o", out)
    assert code == 0, err
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["fps"] == pytest.approx(31 / 3, abs=1e-12)
    assert read_mp4(out)[1] == pytest.approx(report["fps"], rel=1e-6)


def test_limits_are_lifted_by_their_environment_variable(monkeypatch, capsys):
    args = ["traj", "show", "orbit", "--size", "64x48", "--frames", "12"]
    monkeypatch.setenv("MIRAGE_MAX_FRAMES", "10")
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and "MIRAGE_MAX_FRAMES=12" in err
    monkeypatch.setenv("MIRAGE_MAX_FRAMES", "12")
    code, out, _ = run_main(monkeypatch, capsys, *args)
    assert code == 0 and "12" in out


def test_ctrl_c_inside_a_deferred_block_arrives_when_it_ends():
    from mirage.io import interrupts_deferred

    reached = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # Python runs signal handlers between bytecodes: here, had it not been deferred
        reached.append(True)
    assert reached == [True]


def test_ctrl_c_while_the_lock_is_taken_leaves_no_lock_and_no_temp_file(tmp_path, monkeypatch):
    """The CI flake this fixes: a Ctrl-C right after the lock's temp file was made (before the code that removes it
    runs) left the temp behind. The Ctrl-C is sent from inside mkstemp, just after the file exists."""
    import mirage.io as mio

    real = tempfile.mkstemp

    def mkstemp_then_ctrl_c(*args, **kwargs):
        made = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # undeferred, the KeyboardInterrupt is raised here, with the temp file made
        return made

    monkeypatch.setattr(mio.tempfile, "mkstemp", mkstemp_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt), mio.claim(tmp_path / "out" / "a.mp4"):
        pytest.fail("the block must not run: the Ctrl-C came while claiming")
    assert _leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt), mio.atomic_path(tmp_path / "b.mp4"):
        pytest.fail("the block must not run: the Ctrl-C came while making the temp file")
    assert _leftovers(tmp_path) == [] and not (tmp_path / "b.mp4").exists()


def test_a_lock_temp_left_by_a_killed_process_is_removed_by_the_next_claim(tmp_path):
    """SIGKILL between making the lock's temp file and linking it leaves the temp (no handler runs): the next claim
    of that output removes it, as its maker is dead; a live maker's temp is left alone."""
    import socket

    import mirage.io as mio

    out = tmp_path / "b.mp4"
    host = socket.gethostname()
    dead = tmp_path / f"..b.mp4.lock.part-{2**22 + 12345}@{host}-abcd1234"
    live = tmp_path / f"..b.mp4.lock.part-{os.getppid()}@{host}-efgh5678"
    other_host = tmp_path / f"..b.mp4.lock.part-{2**22 + 12345}@not-{host}-ijkl9012"
    for p in (dead, live, other_host):
        p.write_text("{}")
    with mio.claim(out):
        assert not dead.exists() and live.exists() and other_host.exists()


def _move_exif_after_pixels(png: bytes) -> bytes:
    """The same PNG with its eXIf chunk moved after the IDAT chunks (allowed by the PNG spec's extensions; each chunk
    keeps its own CRC)."""
    import struct

    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        chunks.append(png[pos:pos + 12 + length])
        pos += 12 + length
    exif = [c for c in chunks if c[4:8] == b"eXIf"]
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    assert len(exif) == 1 and rest[-1][4:8] == b"IEND"
    return png[:8] + b"".join(rest[:-1] + exif + rest[-1:])


def test_png_orientation_is_read_without_decoding_the_pixels_when_there_is_no_exif(tmp_path, monkeypatch):
    """image_size (run by every input check) decodes no pixels of a PNG without an eXIf chunk, and still honours an
    eXIf chunk before or after the pixels."""
    from PIL import PngImagePlugin

    from mirage.video import image_size

    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255
    im = Image.fromarray(stored)
    plain = tmp_path / "plain.png"
    im.save(plain)
    exif = im.getexif()
    exif[0x0112] = 6
    before = tmp_path / "exif_before.png"
    im.save(before, exif=exif.tobytes())
    after = tmp_path / "exif_after.png"
    after.write_bytes(_move_exif_after_pixels(before.read_bytes()))
    with Image.open(after) as check:
        assert "exif" not in check.info  # PIL finds this one only by decoding
    loads = []
    real_load = PngImagePlugin.PngImageFile.load

    def counted_load(self):
        loads.append(self.filename)
        return real_load(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", counted_load)
    assert image_size(plain) == (40, 20) and loads == []
    assert image_size(before) == (20, 40)
    assert image_size(after) == (20, 40)  # found after the pixels: PIL decoded to read it
    for p in (before, after):
        x = read_image(p)
        assert tuple(x.shape) == (3, 40, 20) and float(x[:, :18].mean()) > 0.9  # turned as shown


def test_frames_become_the_bytes_of_their_rounded_definition_and_stay_untouched():
    """to_uint8 (what every MP4 and PNG frame is written from) is round((clamp(x, -1, 1) + 1) * 127.5), computed out
    of place here; the caller's float frames are left as they were."""
    from mirage.video import to_uint8

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 10, generator=g) * 2.4 - 1.2  # out of range on both sides too
    x[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, (0.5 / 127.5) - 1.0, (1.5 / 127.5) - 1.0])  # ends and .5 ties
    before = x.clone()
    expected = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    got = to_uint8(x)
    assert got.dtype == np.uint8 and got.shape == (3, 8, 10, 3)
    np.testing.assert_array_equal(got, expected)
    assert torch.equal(x, before)
