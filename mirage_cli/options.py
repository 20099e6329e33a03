"""Options several commands share, declared once as ``typing.Annotated`` Typer types.

A command writes ``frames: FramesOpt = None`` and gets the same flag, help and choices as every other command that
takes it. The closed sets (``--format``, ``--dtype``, ``--vae-dtype``) are the library's Enums, so Typer lists them
as choices and rejects a typo (exit 2); ``auto`` is added here because only the CLI resolves it.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated

import typer

from mirage.dtypes import DType, VaeDType
from mirage.errors import InputError
from mirage.trajectory import TrajFormat

_TRAJ_HELP = "Camera preset name (see `mirage traj list`), preset .yaml, or camera file / COLMAP folder."

# --- trajectory: `mirage traj show|convert` take it as an argument, `mirage render` as --traj
TrajArg = Annotated[str, typer.Argument(help=_TRAJ_HELP, show_default=False)]
TrajOpt = Annotated[str, typer.Option("--traj", "-t", help=_TRAJ_HELP, show_default=False)]
FormatOpt = Annotated[TrajFormat, typer.Option(
    "--format", help="Camera-file format; auto detects it from the path and content.", case_sensitive=False)]
FramesOpt = Annotated[int | None, typer.Option(
    "--frames", help="Number of frames (presets: resolved at it; camera files: resampled along the path).")]
FpsOpt = Annotated[float | None, typer.Option("--fps", help="Frames per second (default: the trajectory's own).")]
TrajScaleOpt = Annotated[float, typer.Option("--traj-scale", help="Multiply the trajectory's translations by this factor.")]
StartOpt = Annotated[str | None, typer.Option(
    "--start", help="Camera files with named frames (COLMAP): the frame that becomes frame 0.")]
SizeOpt = Annotated[str | None, typer.Option(
    "--size", help="Video size WIDTHxHEIGHT in pixels, e.g. 832x480 (default: from the image; render: multiples "
                   "of 16, the model's pixel area at the image's aspect).")]

# --- precision: the library's sets plus "auto", resolved by mirage_cli.render.resolve_dtype / resolve_vae_dtype
DTypeChoice = Enum("DTypeChoice", [("AUTO", "auto"), *((d.name, d.value) for d in DType)], type=str)
VaeDTypeChoice = Enum("VaeDTypeChoice", [("AUTO", "auto"), *((d.name, d.value) for d in VaeDType)], type=str)
DTypeOpt = Annotated[DTypeChoice, typer.Option(
    "--dtype", help="Model dtype; auto: bfloat16 on GPU, float32 on CPU.", case_sensitive=False)]
VaeDTypeOpt = Annotated[VaeDTypeChoice, typer.Option(
    "--vae-dtype", help="VAE dtype; auto: the model dtype on GPU (model), float32 on CPU.", case_sensitive=False)]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"832x480"`` -> ``(832, 480)``; None stays None; anything else raises a one-line :class:`InputError`."""
    if text is None:
        return None
    m = _SIZE_RE.match(text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise InputError(f"--size: {text!r} is not WIDTHxHEIGHT in pixels; write e.g. --size 832x480")
    return int(m.group(1)), int(m.group(2))


__all__ = [
    "DTypeChoice", "DTypeOpt", "FormatOpt", "FpsOpt", "FramesOpt", "SizeOpt", "StartOpt", "TrajArg", "TrajOpt",
    "TrajScaleOpt", "VaeDTypeChoice", "VaeDTypeOpt", "parse_size",
]
