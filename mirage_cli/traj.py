"""`mirage traj`: list presets, show (and plot) a trajectory, convert one to mirage's JSON.

Parsing and rendering only: every decision lives in :mod:`mirage.trajectory`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mirage.errors import InputError
from mirage.trajectory import Trajectory, TrajFormat, list_camera_presets, load_trajectory
from mirage_cli.console import make_console, plain
from mirage_cli.options import (
    FormatOpt,
    FpsOpt,
    FramesOpt,
    SizeOpt,
    StartOpt,
    TrajArg,
    TrajScaleOpt,
    parse_size,
)

console = make_console()

app = typer.Typer(
    help="Inspect, plot and convert camera trajectories (camera presets and camera files).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as shown (EXIF orientation applied), reading only its header."""
    from mirage.video import image_size as _image_size

    return _image_size(path, "--image")


def _size(image: Path | None, size: str | None) -> tuple[int | None, int | None]:
    if image is not None and size is not None:
        raise InputError("--image and --size both given; pass one (the image's size is used with --image)")
    if image is not None:
        return image_size(image)
    if size is not None:
        return parse_size(size)
    return None, None


def _not_an_input(output: Path, option: str, traj: str, image: Path | None) -> None:
    """Refuse an output path that is an input of the command (symlinks resolved), or a file inside an input
    folder (a COLMAP model): mirage never overwrites what it reads."""
    out = output.expanduser().resolve()
    inputs = [("trajectory", Path(traj))] + ([("--image", image)] if image is not None else [])
    for what, p in inputs:
        if not p.exists():
            continue
        src = p.expanduser().resolve()
        if out == src or (src.is_dir() and out.exists() and out.is_relative_to(src)):
            raise InputError(f"{option} {output}: would overwrite the {what} {p}; choose another output path")


def _load(traj, image, size, fmt, frames, fps, traj_scale, start, scene_depth, colmap_order) -> Trajectory:
    width, height = _size(image, size)
    return load_trajectory(
        traj, width=width, height=height, fmt=fmt, frames=frames, fps=fps, scale=traj_scale, start=start,
        scene_depth=scene_depth, colmap_order=colmap_order,
    )


# options of `traj show` and `traj convert` only (the ones render shares are in mirage_cli.options)
ImageOpt = Annotated[Path | None, typer.Option("--image", help="Input image: its size (only) is used.", dir_okay=False)]
SceneDepthOpt = Annotated[float, typer.Option(
    "--scene-depth", help="Median scene depth: presets' distances are multiplied by it.")]
ColmapOrderOpt = Annotated[str, typer.Option("--colmap-order", help="COLMAP image order: name or id.")]


@app.command("list")
def list_cmd() -> None:
    """One line per shipped preset: name and description."""
    presets = list_camera_presets()
    width = max((len(p.name) for p in presets), default=0)
    for p in presets:
        console.print(f"{p.name:<{width}}  {p.description}", highlight=False, markup=False, soft_wrap=True)


@app.command("show")
def show_cmd(
    traj: TrajArg,
    image: ImageOpt = None,
    size: SizeOpt = None,
    fmt: FormatOpt = TrajFormat.AUTO,
    frames: FramesOpt = None,
    fps: FpsOpt = None,
    traj_scale: TrajScaleOpt = 1.0,
    start: StartOpt = None,
    scene_depth: SceneDepthOpt = 1.0,
    colmap_order: ColmapOrderOpt = "name",
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write a top/side view of the path to this .png.", dir_okay=False)] = None,
) -> None:
    """Summarise a trajectory (frames, fps, FoV, path length, rotation) and optionally plot it."""
    if plot is not None:
        _not_an_input(plot, "--plot", traj, image)
    t = _load(traj, image, size, fmt, frames, fps, traj_scale, start, scene_depth, colmap_order)
    s = t.stats()
    table = Table(title=f"trajectory {plain(traj)}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("source", plain(t.source))
    table.add_row("frames", str(s.frames))
    table.add_row("fps", f"{s.fps:g}")
    table.add_row("duration", f"{s.duration_s:.2f} s")
    table.add_row("image size", f"{t.width}x{t.height}")
    fov = f"{s.fov_x_deg_first:.1f} deg"
    if s.fov_x_deg_max - s.fov_x_deg_min > 0.05:
        fov += f" (range {s.fov_x_deg_min:.1f} - {s.fov_x_deg_max:.1f})"
    table.add_row("horizontal fov", fov)
    table.add_row("path length", f"{s.path_length:.4g}")
    table.add_row("max translation", f"{s.max_translation:.4g}")
    table.add_row("max rotation", f"{s.max_rotation_deg:.1f} deg")
    console.print(table)
    if plot is not None:
        from mirage.trajectory.plot import plot_trajectory

        plot_trajectory(t, plot, scene_depth=scene_depth)
        console.print(f"plot written to {plot}", highlight=False, markup=False)


@app.command("convert")
def convert_cmd(
    traj: TrajArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output mirage trajectory .json.", dir_okay=False)],
    image: ImageOpt = None,
    size: SizeOpt = None,
    fmt: FormatOpt = TrajFormat.AUTO,
    frames: FramesOpt = None,
    fps: FpsOpt = None,
    traj_scale: TrajScaleOpt = 1.0,
    start: StartOpt = None,
    scene_depth: SceneDepthOpt = 1.0,
    colmap_order: ColmapOrderOpt = "name",
) -> None:
    """Resolve a trajectory (preset or camera file) and write it as mirage JSON (pixel K, OpenCV w2c)."""
    _not_an_input(output, "--output", traj, image)
    t = _load(traj, image, size, fmt, frames, fps, traj_scale, start, scene_depth, colmap_order)
    t.save_json(output)
    console.print(f"{t.num_frames} frames ({t.width}x{t.height}, {t.fps:g} fps) written to {output}",
                  highlight=False, markup=False)


__all__ = ["app", "image_size"]
