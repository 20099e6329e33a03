"""Writing a render's outputs: MP4, JSON report, PNG frames, side-by-side reads, WorldScore layout, memory file.

Every file is written to a temporary name and renamed when complete (``mirage.io``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mirage.camera import fov_x_from_intrinsics, opencv_to_opengl_c2w
from mirage.errors import InputError
from mirage.io import atomic_write_text
from mirage.report import Stage
from mirage.video import FRAME_PATTERN, FRAMES_MANIFEST, side_by_side, write_frames_dir, write_mp4, write_png

if TYPE_CHECKING:  # a stage module never imports the pipeline at run time
    from mirage.pipeline import RenderResult

logger = logging.getLogger("mirage")


@dataclass(frozen=True)
class OutputOptions:
    """Which files to write for one render (None = not written)."""

    video: Path  # the MP4
    report: Path | None = None  # JSON report; default: the MP4 with .json
    frames_dir: Path | None = None  # PNG frames
    warped: Path | None = None  # MP4 of the decoded memory reads beside the output
    memory: Path | None = None  # the spatial memory, to continue later with --memory-from
    worldscore_dir: Path | None = None  # WorldScore's evaluation layout
    plot: Path | None = None  # PNG of the consistency scores along the camera path (mirage.scores_plot)
    crf: int = 18  # x264 quality


def default_report_path(video: Path) -> Path:
    return video.with_suffix(".json")


def write_outputs(result: RenderResult, opts: OutputOptions, *, timer=None) -> dict[str, str]:
    """Write every requested output of ``result``. Returns {kind: path}; also fills ``result.report.outputs``.

    The JSON report is written last: it marks the render as complete (``mirage.batch`` skips an output only when
    its MP4 and its report both exist). If any write fails (e.g. a full disk), every file this call was writing is
    removed again (and the folders it created, when left empty), so no partial set of outputs remains; the error
    is re-raised (``RuntimeFailure`` for OS errors, from ``mirage.io``).

    ``timer`` (a StageTimer), when given, times the writing as stage ``video_write``; that time is added to the
    report's ``total`` (writing the outputs is part of the render, docs/report.md).
    """

    stage = timer.stage(Stage.VIDEO_WRITE) if timer is not None else contextlib.nullcontext()
    fps = result.trajectory.fps
    written: dict[str, str] = {}
    report_path = opts.report or default_report_path(opts.video)
    targets: list[Path] = []  # files this call (re)writes, removed again on failure
    new_dirs: list[Path] = []  # folders this call creates, removed on failure when empty

    def will_write(*paths: Path) -> None:
        for path in paths:
            for parent in reversed(Path(path).parents):
                if not parent.exists() and parent not in new_dirs:
                    new_dirs.append(parent)
            targets.append(Path(path))

    try:
        with stage:
            will_write(opts.video)
            write_mp4(opts.video, result.frames, fps, crf=opts.crf)
            written["video"] = str(opts.video)
            if opts.frames_dir is not None:
                if not Path(opts.frames_dir).exists():  # a new folder: its manifest goes too on failure
                    will_write(Path(opts.frames_dir) / FRAMES_MANIFEST)
                will_write(*_frame_paths(opts.frames_dir, result.frames.shape[0]))
                write_frames_dir(opts.frames_dir, result.frames)
                written["frames_dir"] = str(opts.frames_dir)
            if opts.warped is not None:
                if result.reads is None:
                    raise InputError("write_outputs: a warped video was asked for, but the render kept no reads; render with RenderOptions(keep_reads=True)")
                will_write(opts.warped)
                write_mp4(opts.warped, side_by_side(result.reads, result.frames), fps, crf=opts.crf)
                written["warped"] = str(opts.warped)
            if opts.memory is not None:
                will_write(opts.memory)
                result.memory.save(opts.memory)
                written["memory"] = str(opts.memory)
            if opts.worldscore_dir is not None:
                if not (Path(opts.worldscore_dir) / "frames").exists():
                    will_write(Path(opts.worldscore_dir) / "frames" / FRAMES_MANIFEST)
                will_write(*_worldscore_paths(opts.worldscore_dir, result.frames.shape[0]))
                write_worldscore(opts.worldscore_dir, result)
                written["worldscore_dir"] = str(opts.worldscore_dir)
            if opts.plot is not None:
                from mirage.scores_plot import plot_scores

                will_write(opts.plot)
                plot_scores(result.report.to_dict(), result.trajectory, opts.plot)
                written["plot"] = str(opts.plot)
        result.report.outputs = dict(written, report=str(report_path))
        if timer is not None:
            t_write = timer.times_ms().get("video_write", 0.0)
            result.report.timing_ms["video_write"] = t_write
            if "total" in result.report.timing_ms:
                result.report.timing_ms["total"] += t_write
                result.time_s = result.report.timing_ms["total"] / 1e3
        will_write(report_path)
        atomic_write_text(report_path, json.dumps(result.report.to_dict(), indent=1, default=_json_default))
    except BaseException:
        _remove(targets, new_dirs)
        raise
    written["report"] = str(report_path)
    return written


#: WorldScore names its frames 000.png, 001.png, ...
WORLDSCORE_FRAME_PATTERN = "{:03d}.png"


def _frame_paths(folder: Path, n: int, pattern: str = FRAME_PATTERN) -> list[Path]:
    return [Path(folder) / pattern.format(i) for i in range(n)]


def _worldscore_paths(folder: Path, n: int) -> list[Path]:
    folder = Path(folder)
    return [*_frame_paths(folder / "frames", n, WORLDSCORE_FRAME_PATTERN), folder / "videos" / "output.mp4",
            folder / "input_image.png", folder / "camera_data.json", folder / "image_data.json", folder / "time.txt"]


def _remove(files: list[Path], new_dirs: list[Path]) -> None:
    """Best-effort removal of a failed write's files, then of the folders it created (deepest first, if empty)."""
    for f in files:
        try:
            f.unlink(missing_ok=True)
        except OSError as e:  # keep the original error; say what could not be cleaned
            logger.warning("could not remove partial output %s (%s)", f, e.strerror or e)
    for d in sorted(new_dirs, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "value"):
        return o.value
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_worldscore(folder: Path, result: RenderResult) -> None:
    """The layout WorldScore evaluates: frames/000.png..., videos/output.mp4, camera_data.json, image_data.json,
    input_image.png, time.txt (seconds of generation).

    ``camera_data.json`` holds OpenGL camera-to-world matrices and the focal length in pixels, the convention of
    WorldScore's own camera files (see mirage/trajectory/formats.py); it reads back with ``--format worldscore``.
    """
    folder = Path(folder)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    write_frames_dir(folder / "frames", result.frames, pattern=WORLDSCORE_FRAME_PATTERN)
    write_mp4(folder / "videos" / "output.mp4", result.frames, result.trajectory.fps)
    write_png(folder / "input_image.png", result.image)
    traj = result.trajectory
    c2w_gl = opencv_to_opengl_c2w(traj.c2w)
    fov = fov_x_from_intrinsics(traj.K, traj.width)
    cams = {
        "focal_length": float(traj.K[0, 0, 0]),
        "scale": 1.0,
        "fov_x_deg": float(fov[0]),
        "width": traj.width,
        "height": traj.height,
        "cameras": [m.tolist() for m in c2w_gl],
        "cameras_interp": [m.tolist() for m in c2w_gl],
    }
    atomic_write_text(folder / "camera_data.json", json.dumps(cams, indent=1))
    image_data = {
        "image_path": "input_image.png",
        "source": result.report.inputs.get("image"),
        "prompt": result.report.settings.get("prompt", ""),
        "num_frames": int(result.frames.shape[0]),
        "resolution": [traj.width, traj.height],
    }
    atomic_write_text(folder / "image_data.json", json.dumps(image_data, indent=1))
    atomic_write_text(folder / "time.txt", f"{result.time_s:.3f}\n")
