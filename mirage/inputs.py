"""A render's inputs, checked and planned before any model loads: :func:`check_input` -> :class:`InputPlan`.

What can be known without a model is resolved here once (the image's size and the output size, the camera file
or the camera preset, the user's intrinsics, the depth file, the sampling settings at that size); the pipeline then
renders the plan. A bad input fails here, in one line, before minutes of model loading.

The rules that pick the input camera's intrinsics (``--intrinsics`` > ``--fov`` > the depth model's FoV > a
default) live with the depth model, whose predicted FoV is one of them (:func:`mirage.depth.resolve_intrinsics`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mirage._check import check_shape
from mirage.config import (
    PIXEL_AREA,
    SIZE_MULTIPLE,
    DenoiserKind,
    PipelineConfig,
    RenderOptions,
    check_output_shape,
    profile_warning,
)
from mirage.errors import InputError
from mirage.limits import MAX_ASPECT, MAX_STEPS, check_video_fits, echo
from mirage.sampling import SamplingSettings, resolve_sampling
from mirage.trajectory.formats import TrajFormat
from mirage.trajectory.source import CameraPresetSource
from mirage.trajectory.types import Trajectory

logger = logging.getLogger("mirage")


@dataclass(frozen=True)
class TrajectoryOptions:
    """How to resolve ``--traj`` for an image."""

    spec: str  # preset name, YAML file or camera file
    fmt: TrajFormat | str = TrajFormat.AUTO  # camera-file format (AUTO detects it)
    frames: int | None = None  # resample to this many frames
    fps: float | None = None  # override the frame rate
    scale: float = 1.0  # multiply imported translations
    start: str | None = None  # COLMAP: image that becomes frame 0


@dataclass(frozen=True)
class InputPlan:
    """One render's inputs as far as they can be known without a model.

    Attributes:
        image: the image file, or a (3, H, W) float tensor in [-1, 1] given by a library caller.
        name: what messages and the report call the image (the file path, or ``<tensor>``).
        source_size: (width, height) of the image as given; size: (W, H) of the video.
        traj: the ``--traj`` request (None for a World: its poses come later).
        camera_traj: a camera file's trajectory at the image's own size, already read (None for a camera preset,
            which waits for the scene depth and is resolved after the depth estimate).
        preset: the camera preset, loaded and checked, that the pipeline resolves once the scene depth is known
            (:class:`mirage.trajectory.CameraPresetSource`); None for a camera file or without a trajectory.
        K_known: (3, 3) intrinsics of the image as given when known before depth (``--intrinsics``/``--fov``, or a
            camera file's frame 0); None when the depth model's predicted FoV (or the default) will decide.
        k_source: where ``K_known`` came from.
        depth: the ``--depth`` file read at the image's size (a DepthResult), or None.
        depth_file, memory_from: the files asked for (for the report).
        warnings: what the report's warnings start with.
        sampling: the denoiser's settings at this size (:func:`mirage.sampling.resolve_sampling`).
        num_frames: the frames the trajectory resolves to, before rounding to the video model's lengths (a preset's
            count does not depend on the scene depth or the intrinsics); None without a trajectory.
    """

    image: Path | torch.Tensor
    name: str
    source_size: tuple[int, int]
    size: tuple[int, int]
    traj: TrajectoryOptions | None
    camera_traj: Trajectory | None
    preset: CameraPresetSource | None
    K_known: torch.Tensor | None
    k_source: str
    depth: object | None
    depth_file: Path | None
    memory_from: Path | None
    warnings: tuple[str, ...]
    sampling: SamplingSettings
    num_frames: int | None

    def image_sha256(self) -> str:
        from mirage.report import sha256_file

        if isinstance(self.image, torch.Tensor):
            return hashlib.sha256(self.image.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
        return sha256_file(self.image)

    def read_image(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The image at the video size: (3, H, W) float32 in [-1, 1], on ``device`` (default: the CPU; a file's 8-bit
        pixels cross to it as uint8, and it is resized there)."""
        from mirage.video import read_image, resize_image

        if isinstance(self.image, torch.Tensor):
            img = self.image.detach().to(device=device if device is not None else "cpu", dtype=torch.float32)
        else:
            img = read_image(self.image, device)
        return resize_image(img, *self.size)


def output_size(image_wh: tuple[int, int], pixel_area: int, multiple: int) -> tuple[int, int]:
    """The output size: ``pixel_area`` pixels at the image's aspect ratio, both sides multiples of ``multiple``."""
    w, h = image_wh
    s = math.sqrt(pixel_area / (w * h))
    W = max(multiple, round(w * s / multiple) * multiple)
    H = max(multiple, round(h * s / multiple) * multiple)
    return int(W), int(H)


def with_profile_warning(plan: InputPlan, config: PipelineConfig, options: RenderOptions, *,
                         log: bool = True) -> InputPlan:
    """``plan`` with :func:`mirage.config.profile_warning`'s warning (its sampling against the LoRAs the pipeline
    fuses) added, and logged when ``log``; unchanged when there is none or the plan holds it already."""
    mismatch = profile_warning(config, options, plan.sampling)
    if mismatch is None or mismatch in plan.warnings:
        return plan
    if log:
        logger.warning("%s", mismatch)
    return replace(plan, warnings=(*plan.warnings, mismatch))


def check_input(image: str | Path | torch.Tensor, traj: TrajectoryOptions | str | None, options: RenderOptions, *,
                preset: str, denoiser: DenoiserKind = DenoiserKind.VACE, depth_file: str | Path | None = None,
                memory_from: str | Path | None = None) -> InputPlan:
    """Check one render's inputs and resolve what needs no model (image header, output size, camera file, user
    intrinsics, depth file, sampling). Raises a one-line :class:`~mirage.errors.MirageError` on bad input.

    Args:
        image: an image file, or a (3, H, W) float tensor in [-1, 1].
        traj: the trajectory request (a plain string is a preset name or camera file); None for a
            :class:`~mirage.pipeline.World`, whose poses come later.
        options: the per-video settings. preset: the model preset's name (default output size).
        denoiser: the pipeline's denoiser (sampling warnings apply to VACE only).
        depth_file, memory_from: optional input files.
    """
    from mirage import depth as depth_mod
    from mirage.trajectory import open_trajectory
    from mirage.video import image_size, mp4_rate

    o = options
    if traj is not None and not isinstance(traj, TrajectoryOptions):
        traj = TrajectoryOptions(str(traj))
    if isinstance(image, torch.Tensor):
        check_shape(image, (3, "H", "W"), "image")
        if not image.is_floating_point() or not bool(torch.isfinite(image).all()):
            raise InputError("image tensor: must be finite floats in [-1, 1]; convert it with x / 127.5 - 1")
        name, src_wh = "<tensor>", (int(image.shape[-1]), int(image.shape[-2]))
    else:
        image = Path(image)
        name, src_wh = str(image), tuple(image_size(image))
    short = Path(name).name
    if max(src_wh) > MAX_ASPECT * min(src_wh) and o.size is None:
        raise InputError(f"image {name}: {src_wh[0]}x{src_wh[1]} is wider than {MAX_ASPECT:g}:1; crop it, or pass "
                         "--size WxH to choose the video's shape")
    W, H = o.size if o.size is not None else output_size(src_wh, PIXEL_AREA.get(preset, 832 * 480), SIZE_MULTIPLE)
    check_output_shape(W, H, f"output size of {short}")
    warnings: list[str] = []
    if (W, H) != tuple(src_wh):
        logger.info("image %s: %dx%d -> %dx%d (the model's size)", short, *src_wh, W, H)
        stretch = (W / H) / (src_wh[0] / src_wh[1])
        if abs(stretch - 1) > 0.02:
            warnings.append(f"image {short}: {src_wh[0]}x{src_wh[1]} -> {W}x{H} changes the aspect ratio by "
                            f"{100 * (stretch - 1):+.0f}% (cameras follow the stretch); pass a --size of the image's "
                            "aspect to avoid it")
            logger.warning("%s", warnings[-1])
    K_user, k_source = None, ""
    if o.fov is not None or o.intrinsics is not None:
        K_user, k_source, k_warn = depth_mod.resolve_intrinsics(*src_wh, fov_x_deg=o.fov, intrinsics=o.intrinsics)
        warnings.extend(k_warn)
    camera_traj, K_known = None, K_user
    source = first = None
    if traj is not None:
        source = open_trajectory(traj.spec, width=src_wh[0], height=src_wh[1], fmt=traj.fmt, frames=traj.frames,
                                 fps=traj.fps, scale=traj.scale, start=traj.start)
        # a preset is checked too (with default K and unit scene depth), so a bad one fails here, before any model
        first = source.resolve(src_wh[0], src_wh[1], K_user, 1.0) if isinstance(source, CameraPresetSource) else (
            source.trajectory)
        mp4_rate(first.fps, "--fps" if traj.fps is not None else f"frame rate of {echo(traj.spec, 120)}")
        check_video_fits(first.num_frames, W, H, f"--traj {echo(traj.spec, 120)}")
    if first is not None and not isinstance(source, CameraPresetSource):  # a camera file knows the input camera
        camera_traj = first
        if K_user is None:
            K_known, k_source = first.K[0], f"trajectory file {traj.spec} (frame 0)"
        else:  # the user's camera wins: every frame's focal is rescaled by the same factor (zooms are kept)
            ratio = K_user[0, 0] / first.K[0, 0, 0]
            K = first.K.clone()
            K[:, :2, :2] *= ratio
            K[:, :2, 2] = K_user[:2, 2]
            camera_traj = replace(first, K=K)
            warnings.append(f"--fov/--intrinsics override the intrinsics of {traj.spec} (focal x{float(ratio):.3f} "
                            "on every frame)")
    dres = depth_mod.read_depth_file(depth_file, *src_wh) if depth_file is not None else None
    sampling = resolve_sampling(o.profile, int(W), int(H), steps=o.steps, guidance=o.guidance,
                                negative_prompt=o.negative_prompt, flow_shift=o.flow_shift)
    MAX_STEPS.check(sampling.steps, "--steps" if o.steps is not None else f"--steps ({o.profile.value} profile)")
    if denoiser is DenoiserKind.VACE and sampling.guidance == 1.0 and o.negative_prompt:
        warnings.append("--negative-prompt is unused with guidance 1.0 (off); pass --guidance > 1 to use it")
        logger.warning("%s", warnings[-1])
    preset = source if isinstance(source, CameraPresetSource) else None
    return InputPlan(image, name, tuple(src_wh), (int(W), int(H)), traj, camera_traj, preset, K_known,
                     str(getattr(k_source, "value", k_source)), dres,
                     Path(depth_file) if depth_file is not None else None,
                     Path(memory_from) if memory_from is not None else None, tuple(warnings), sampling,
                     None if first is None else first.num_frames)
