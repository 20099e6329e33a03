"""A batch writes each input's files on a thread while the next input renders (``OutputRequest.write_behind``).

The overlap itself is checked without clocks: input a's write waits until input b's render has started, which can
only happen when the write runs behind the render. Failures and Ctrl-C keep the batch's promises: a failed write is
that input's failure, a write in flight completes and is listed, and the order of items is the order of inputs.
"""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

import mirage.batch as mb
import mirage.outputs as mo
from mirage.config import DenoiserKind, split_settings
from mirage.errors import InputError
from mirage.inputs import TrajectoryOptions
from mirage.pipeline import Pipeline

W, H = 64, 48
TRAJ = TrajectoryOptions("orbit", frames=5)
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def pipe():
    from mirage.hub import build_tiny

    build_tiny()
    config, _ = settings()
    return Pipeline(config)


def settings():
    return split_settings(preset="tiny", size=(W, H), chunk_frames=5, steps=2, device="cpu", denoiser=DenoiserKind.NONE)


def images(folder: Path, names: str = "abc") -> Path:
    folder.mkdir()
    for i, n in enumerate(names):
        Image.new("RGB", (W, H), (40 + 60 * i, 90, 140)).save(folder / f"{n}.png")
    return folder


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def spy_renders(monkeypatch, pipe, on_render=None, after_render=None) -> list[str]:
    """Record which input each render was for (the image's stem), calling ``on_render(stem)`` first and
    ``after_render(stem)`` once it has rendered."""
    seen: list[str] = []
    real = pipe.render

    def render(plan, **kw):
        stem = Path(plan.name).stem
        seen.append(stem)
        if on_render is not None:
            on_render(stem)
        res = real(plan, **kw)
        if after_render is not None:
            after_render(stem)
        return res

    monkeypatch.setattr(pipe, "render", render)
    return seen


def spy_writes(monkeypatch, before_write) -> None:
    """Call ``before_write(stem)`` on the writing thread before each input's files are written."""
    real = mo.write_outputs

    def write_outputs(result, opts, **kw):
        before_write(opts.video.stem)
        return real(result, opts, **kw)

    monkeypatch.setattr(mb, "write_outputs", write_outputs)


def interrupted_after_a(pipe, tmp_path) -> None:
    """Render a, b, c expecting a Ctrl-C after a was rendered: a is listed done, and only a's files are there (whole,
    with no temporary file and no lock of b's)."""
    with pytest.raises(mb.BatchInterrupted) as e:
        mb.render([images(tmp_path / "in")], TRAJ, mb.OutputRequest(out_dir=tmp_path / "out"), pipeline=pipe,
                  options=settings()[1])
    assert [(i.image.name, i.status) for i in e.value.result.items] == [("a.png", "done")]
    assert files(tmp_path / "out") == ["a.json", "a.mp4"]


def test_a_batch_writes_an_input_while_the_next_one_renders(pipe, tmp_path, monkeypatch):
    b_renders = threading.Event()
    spy_renders(monkeypatch, pipe, on_render=lambda stem: b_renders.set() if stem == "b" else None)
    writers: dict[str, tuple[str, bool]] = {}

    def before_write(stem):
        # a's write holds on until b's render has begun: only a write behind the render lets that happen
        overlapped = b_renders.wait(TIMEOUT_S) if stem == "a" else True
        writers[stem] = (threading.current_thread().name, overlapped)

    spy_writes(monkeypatch, before_write)
    seen = []
    res = mb.render([images(tmp_path / "in")], TRAJ, mb.OutputRequest(out_dir=tmp_path / "out"), pipeline=pipe,
                    options=settings()[1], on_item=lambda item, i, n: seen.append((item.image.name, i)))
    assert writers["a"][1], "input a's files were written before input b started rendering"
    assert all(name.startswith("mirage-write") for name, _ in writers.values())
    assert [(i.image.name, i.status) for i in res.items] == [("a.png", "done"), ("b.png", "done"), ("c.png", "done")]
    assert seen == [("a.png", 0), ("b.png", 1), ("c.png", 2)]
    assert files(tmp_path / "out") == ["a.json", "a.mp4", "b.json", "b.mp4", "c.json", "c.mp4"]
    assert all(mb.is_done(mb.plan_output(tmp_path / "in" / f"{n}.png", mb.OutputRequest(out_dir=tmp_path / "out"),
                                         inputs=3).opts) for n in "abc")


def test_without_write_behind_each_input_is_written_before_the_next_renders(pipe, tmp_path, monkeypatch):
    order: list[str] = []
    spy_renders(monkeypatch, pipe, on_render=lambda stem: order.append(f"render {stem}"))
    spy_writes(monkeypatch, lambda stem: order.append(f"write {stem} on {threading.current_thread().name}"))
    res = mb.render([images(tmp_path / "in", "ab")], TRAJ,
                    mb.OutputRequest(out_dir=tmp_path / "out", write_behind=False), pipeline=pipe,
                    options=settings()[1])
    assert res.ok
    main = threading.current_thread().name
    assert order == ["render a", f"write a on {main}", "render b", f"write b on {main}"]


def test_a_write_that_fails_behind_the_render_fails_its_input_only(pipe, tmp_path, monkeypatch):
    import av

    real_mp4, real_frame = mo.write_mp4, av.VideoFrame.from_ndarray
    disk = {"full_for": None, "frames": 0}

    def write_mp4(path, *a, **k):  # b's MP4 meets a full disk after two frames, as test_render's full-disk test
        disk["full_for"], disk["frames"] = Path(path).stem, 0
        return real_mp4(path, *a, **k)

    def from_ndarray(*a, **k):
        disk["frames"] += 1
        if disk["full_for"] == "b" and disk["frames"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_frame(*a, **k)

    monkeypatch.setattr(mo, "write_mp4", write_mp4)
    monkeypatch.setattr(av.VideoFrame, "from_ndarray", from_ndarray)
    res = mb.render([images(tmp_path / "in")], TRAJ, mb.OutputRequest(out_dir=tmp_path / "out"), pipeline=pipe,
                    options=settings()[1])
    assert [(i.image.name, i.status) for i in res.items] == [("a.png", "done"), ("b.png", "failed"), ("c.png", "done")]
    assert "space" in res.items[1].error
    # nothing of b's is left: no file, no temporary file, no lock
    assert files(tmp_path / "out") == ["a.json", "a.mp4", "c.json", "c.mp4"]


def test_ctrl_c_during_a_render_lets_the_write_in_flight_finish_and_lists_it(pipe, tmp_path, monkeypatch):
    a_writing = threading.Event()

    def on_render(stem):
        if stem == "b":  # Ctrl-C while a's files are being written behind this render
            assert a_writing.wait(TIMEOUT_S)
            raise KeyboardInterrupt

    spy_renders(monkeypatch, pipe, on_render=on_render)
    spy_writes(monkeypatch, lambda stem: a_writing.set())
    interrupted_after_a(pipe, tmp_path)


def test_a_pipeline_and_another_config_are_refused(pipe, tmp_path):
    config = split_settings(preset="tiny", size=(W, H), device="cpu")[0]
    with pytest.raises(InputError, match="config differs from the given pipeline"):
        mb.render([images(tmp_path / "in", "a")], TRAJ, mb.OutputRequest(out=tmp_path / "a.mp4"), config,
                  pipeline=pipe)


def test_ctrl_c_while_waiting_for_a_write_frees_the_rendered_inputs_lock(pipe, tmp_path, monkeypatch):
    """Ctrl-C while the batch waits for input a's write, with input b rendered but not handed to the writer: a is
    written and listed, b leaves no lock (other processes could otherwise never render it)."""
    import os
    import signal

    b_rendered = threading.Event()
    spy_renders(monkeypatch, pipe, after_render=lambda stem: b_rendered.set() if stem == "b" else None)

    def before_write(stem):
        if stem == "a":  # b has rendered and the batch now waits for this write: Ctrl-C there
            assert b_rendered.wait(TIMEOUT_S)
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGINT)

    spy_writes(monkeypatch, before_write)
    interrupted_after_a(pipe, tmp_path)  # and no .b.mp4.lock


@pytest.mark.parametrize("write_behind", [True, False])
def test_a_rendered_video_is_freed_once_written_not_kept_through_the_next_render(pipe, tmp_path, monkeypatch,
                                                                                 write_behind):
    import gc
    import weakref

    kept: dict[str, weakref.ref] = {}
    alive_at_c: list[str] = []
    real = pipe.render

    def render(plan, **kw):  # keeps a weak reference to each video's frames
        stem = Path(plan.name).stem
        if stem == "c":  # written by now: b inline (before c renders); behind, a (before b's write was queued)
            gc.collect()
            done = "a" if write_behind else "b"
            alive_at_c.extend(s for s, ref in kept.items() if s == done and ref() is not None)
        res = real(plan, **kw)
        kept[stem] = weakref.ref(res.frames)
        return res

    monkeypatch.setattr(pipe, "render", render)
    res = mb.render([images(tmp_path / "in")], TRAJ, mb.OutputRequest(out_dir=tmp_path / "out",
                                                                      write_behind=write_behind),
                    pipeline=pipe, options=settings()[1])
    assert res.ok
    assert alive_at_c == []
