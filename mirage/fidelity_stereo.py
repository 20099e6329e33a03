"""A real-photo fidelity scene from a rectified stereo pair with ground-truth disparity.

:func:`make_stereo_scene` builds a :class:`~mirage.fidelity.FidelityScene` at run time from the Middlebury 2014
"Motorcycle" pair that scikit-image ships offline (``skimage.data.stereo_motorcycle()``, 741x500, the default
exposure downscaled 4x): the left view is the source, with its z-depth from the ground-truth disparity, and the
right view is the one target, seen from the camera ``baseline`` metres to the right (OpenCV axes: +x). Nothing is
copied into the repository. :func:`stereo_pair_scene` does the same for any rectified pair and calibration.

Middlebury's convention: ``disp0`` is the disparity of the left view, a left pixel ``(x, y)`` is seen at
``(x - d, y)`` in the right view, and the two principal points differ by ``doffs = cx1 - cx0``, so the z-depth is
``z = f * B / (d + doffs)``. See docs/fidelity.md, "Real stereo scene".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mirage._check import check_shape
from mirage.errors import InputError
from mirage.fidelity import FidelityScene


@dataclass(frozen=True)
class StereoCalib:
    """Calibration of a rectified stereo pair, in pixels of the images it describes.

    Attributes:
        fx: focal length (both cameras, square pixels).
        cx0, cy: principal point of the left camera; the right one is at ``(cx0 + doffs, cy)``.
        doffs: x-difference of the principal points, ``cx1 - cx0`` (Middlebury's ``doffs``).
        baseline: camera distance in metres (the right camera is at +baseline along x).
    """

    fx: float
    cx0: float
    cy: float
    doffs: float
    baseline: float

    def scaled(self, factor: float) -> StereoCalib:
        """The calibration of the images resized by ``factor`` (pixel quantities scale, the baseline does not)."""
        return StereoCalib(self.fx * factor, self.cx0 * factor, self.cy * factor, self.doffs * factor, self.baseline)


# Middlebury 2014 Motorcycle (calib.txt, full resolution 2964x2000): cam0 = [3979.911 0 1244.772; 0 3979.911
# 1019.507; 0 0 1], doffs = 124.343, baseline = 193.001 mm. scikit-image's copy is 741 px wide: 2964 / 741 = 4.
MOTORCYCLE_FULL = StereoCalib(fx=3979.911, cx0=1244.772, cy=1019.507, doffs=124.343, baseline=0.193001)
MOTORCYCLE_FULL_WIDTH = 2964
STEREO_SIZE = (736, 496)  # (W, H): the pair centre-cropped to multiples of 16, as a Wan render of it


def disparity_to_depth(disparity: torch.Tensor, fx: float, baseline: float, doffs: float) -> torch.Tensor:
    """Left-view disparity -> z-depth, ``z = fx * baseline / (d + doffs)``.

    Args:
        disparity: (H, W) float, pixels; non-finite (Middlebury: inf) = no ground truth.
        fx, doffs: pixels of the same image; baseline: metres.
    Returns:
        (H, W) float32 z-depth in metres, NaN where the disparity is invalid or ``d + doffs <= 0``.
    """
    check_shape(disparity, ("H", "W"), "disparity")
    d = disparity.double() + doffs
    ok = torch.isfinite(d) & (d > 0)
    return torch.where(ok, fx * baseline / d.where(ok, 1.0), float("nan")).float()


def stereo_pair_scene(
    left: torch.Tensor,
    right: torch.Tensor,
    disparity: torch.Tensor,
    calib: StereoCalib,
    *,
    size: tuple[int, int] = STEREO_SIZE,
    name: str = "right",
    where: str = "stereo pair",
) -> FidelityScene:
    """A fidelity scene from a rectified stereo pair: source = left (z-depth from ``disparity``), target = right.

    Both images are centre-cropped to ``size`` (the crop's top-left corner is subtracted from the principal points;
    no resampling). Cameras: source at the origin (identity ``w2c``); target at ``(+baseline, 0, 0)`` with the same
    orientation, ``w2c = [I | (-baseline, 0, 0)]``, and principal point ``cx0 + doffs``.

    Args:
        left, right: (3, H0, W0) float in [-1, 1].
        disparity: (H0, W0) float, the left view's disparity in pixels (non-finite = invalid).
        calib: :class:`StereoCalib` in pixels of these images.
        size: (W, H) of the scene, at most the images' size, multiples of 8.
        name: the target's name; where: for messages.
    Returns:
        :class:`FidelityScene` with 2 cameras and 1 target; depth in metres, NaN where invalid.
    """
    check_shape(left, (3, "H", "W"), "left")
    check_shape(right, tuple(left.shape), "right")
    check_shape(disparity, tuple(left.shape[1:]), "disparity")
    H0, W0 = left.shape[1:]
    W, H = size
    if W > W0 or H > H0 or W % 8 or H % 8:
        raise InputError(f"stereo scene size {W}x{H}: must be multiples of 8 and fit the {W0}x{H0} pair")
    x0, y0 = (W0 - W) // 2, (H0 - H) // 2
    crop = (slice(y0, y0 + H), slice(x0, x0 + W))
    depth = disparity_to_depth(disparity[crop], calib.fx, calib.baseline, calib.doffs)  # (H, W) metres
    K0 = torch.tensor([[calib.fx, 0.0, calib.cx0 - x0], [0.0, calib.fx, calib.cy - y0], [0.0, 0.0, 1.0]],
                      dtype=torch.float64)
    K1 = K0.clone()
    K1[0, 2] += calib.doffs
    w2c1 = torch.eye(4, dtype=torch.float64)
    w2c1[0, 3] = -calib.baseline  # camera centre at +baseline on x: xyz_cam = xyz_world - (B, 0, 0)
    return FidelityScene(
        source=left[:, crop[0], crop[1]].float().contiguous(),
        source_depth=depth,
        K=torch.stack([K0, K1]),
        w2c=torch.stack([torch.eye(4, dtype=torch.float64), w2c1]),
        targets=right[None, :, crop[0], crop[1]].float().contiguous(),
        names=(name,),
        where=where,
    )


def make_stereo_scene(size: tuple[int, int] = STEREO_SIZE) -> FidelityScene:
    """The Middlebury 2014 Motorcycle pair of ``skimage.data.stereo_motorcycle()`` as a fidelity scene (source =
    left, target = right; :func:`stereo_pair_scene`), built at run time; needs scikit-image (the dev extra).

    The pair is the full-resolution one downscaled 4x (2964 -> 741 px wide), so the calibration is
    :data:`MOTORCYCLE_FULL` scaled by 1/4: fx = 994.978 px, doffs = 31.086 px, baseline 0.193 m; depths 2.1-5.0 m.
    """
    try:
        from skimage.data import stereo_motorcycle
    except ImportError:
        raise InputError("the stereo fidelity scene needs scikit-image: pip install scikit-image "
                         "(or install mirage's dev extra)") from None
    left, right, disp = stereo_motorcycle()  # (500, 741, 3) uint8 x2, (500, 741) float32 (inf = invalid)

    def to_tensor(img: np.ndarray) -> torch.Tensor:  # (H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1]
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 127.5 - 1.0

    calib = MOTORCYCLE_FULL.scaled(left.shape[1] / MOTORCYCLE_FULL_WIDTH)
    return stereo_pair_scene(to_tensor(left), to_tensor(right), torch.from_numpy(np.asarray(disp, dtype=np.float32)),
                             calib, size=size, name="right", where="middlebury-2014-motorcycle (skimage)")
