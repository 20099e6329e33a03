"""The input camera's intrinsics: ``--intrinsics`` > ``--fov`` > the depth model's FoV > a default (warned).

K is (3, 3) float64 in pixels of the input image, pixel-centre convention (``docs/conventions.md``).
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple

import torch

from mirage.camera import intrinsics_from_fov
from mirage.errors import InputError, ModelError

DEFAULT_FOV_X_DEG: float = 60.0
"""Horizontal FoV (degrees) used when neither the user nor the depth model gives one (a typical phone/photo lens)."""

FOV_RANGE = (1.0, 179.0)  # open interval of accepted horizontal FoVs, degrees


class IntrinsicsSource(str, enum.Enum):
    """Where the input camera's intrinsics came from (highest precedence first)."""

    INTRINSICS = "--intrinsics"
    FOV = "--fov"
    MODEL = "depth model"
    DEFAULT = "default"


class ResolvedIntrinsics(NamedTuple):
    """The input camera: ``K`` (3, 3) float64 pixels, where it came from, and warnings."""

    K: torch.Tensor
    source: IntrinsicsSource
    warnings: tuple[str, ...]


def resolve_intrinsics(
    width: int,
    height: int,
    *,
    fov_x_deg: float | None = None,
    intrinsics: tuple[float, float, float, float] | None = None,
    predicted_fov_x_deg: float | None = None,
    default_fov_x_deg: float = DEFAULT_FOV_X_DEG,
) -> ResolvedIntrinsics:
    """Pick the input camera's intrinsics: ``--intrinsics`` > ``--fov`` > model's FoV > default (with a warning).

    Args:
        width, height: image size in pixels.
        fov_x_deg: ``--fov``, horizontal FoV in degrees, in (1, 179).
        intrinsics: ``--intrinsics fx,fy,cx,cy`` in pixels of this image, pixel-centre convention
            (``docs/conventions.md``): fx, fy > 0, cx in [-0.5, W - 0.5], cy in [-0.5, H - 0.5].
        predicted_fov_x_deg: the depth model's predicted horizontal FoV (:attr:`DepthResult.fov_x_deg`).
        default_fov_x_deg: used when nothing else is given.

    Returns:
        :class:`ResolvedIntrinsics` ``(K, source, warnings)``: K (3, 3) float64 pixels.

    Raises:
        InputError: an option out of range (the message names the option). ModelError: unusable predicted FoV.
    """
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise InputError(
            f"image size: {width}x{height} is not a positive integer size; check the input image"
        )
    warnings: list[str] = []
    if fov_x_deg is not None:
        fov_x_deg = check_fov(fov_x_deg, "--fov")
    if intrinsics is not None:
        fx, fy, cx, cy = _check_intrinsics(intrinsics, width, height)
        if fov_x_deg is not None:
            warnings.append(f"--fov {fov_x_deg:g} ignored: --intrinsics takes precedence")
        K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
        return ResolvedIntrinsics(K, IntrinsicsSource.INTRINSICS, tuple(warnings))
    if fov_x_deg is not None:
        return ResolvedIntrinsics(intrinsics_from_fov(fov_x_deg, width, height), IntrinsicsSource.FOV, ())
    if predicted_fov_x_deg is not None:
        v = float(predicted_fov_x_deg)
        if not (math.isfinite(v) and FOV_RANGE[0] < v < FOV_RANGE[1]):
            raise ModelError(
                f"depth model: predicted horizontal FoV {predicted_fov_x_deg} degrees is outside (1, 179)",
                hint="pass --fov DEGREES or --intrinsics fx,fy,cx,cy",
            )
        return ResolvedIntrinsics(intrinsics_from_fov(v, width, height), IntrinsicsSource.MODEL, ())
    default = check_fov(default_fov_x_deg, "default_fov_x_deg")
    warnings.append(
        f"no --fov or --intrinsics and the depth model predicts no FoV: assuming a horizontal FoV of {default:g} "
        "degrees; pass --fov for correct geometry"
    )
    return ResolvedIntrinsics(
        intrinsics_from_fov(default, width, height), IntrinsicsSource.DEFAULT, tuple(warnings)
    )


def _check_intrinsics(intrinsics, width: int, height: int) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(x) for x in intrinsics)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f"--intrinsics: {intrinsics!r} is not 4 finite numbers; pass fx,fy,cx,cy in pixels")
    fx, fy, cx, cy = values
    if fx <= 0 or fy <= 0:
        raise InputError(
            f"--intrinsics: focal lengths fx={fx:g}, fy={fy:g} must be > 0; pass fx,fy,cx,cy in pixels"
        )
    if not (-0.5 <= cx <= width - 0.5 and -0.5 <= cy <= height - 0.5):
        raise InputError(
            f"--intrinsics: principal point ({cx:g}, {cy:g}) is outside the {width}x{height} image; "
            f"pass cx in [-0.5, {width - 0.5:g}] and cy in [-0.5, {height - 0.5:g}] (pixels)"
        )
    return fx, fy, cx, cy




def check_fov(fov_x_deg: float, option: str) -> float:
    """``fov_x_deg`` as a float in (1, 179) degrees, or an InputError naming ``option``."""
    try:
        v = float(fov_x_deg)
    except (TypeError, ValueError):
        raise InputError(
            f"{option}: {fov_x_deg!r} is not a number; pass a horizontal FoV in degrees, e.g. 60"
        ) from None
    if not (math.isfinite(v) and FOV_RANGE[0] < v < FOV_RANGE[1]):
        raise InputError(
            f"{option}: {fov_x_deg} degrees is outside (1, 179); pass a horizontal FoV in degrees, e.g. 60"
        )
    return v
