"""User depth files: :func:`read_depth_file` (``.npy`` metres or 16-bit PNG millimetres) and
:func:`save_depth_png16`.

Depth is z in the camera frame (``docs/conventions.md``), float32 metres; 0 / NaN / inf / <= 0 are invalid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mirage.depth.estimator import MAX_DEPTH_M, MIN_DEPTH_M, DepthKind, DepthResult, first_line
from mirage.errors import DepthError, InputError
from mirage.io import atomic_path

PNG_DEPTH_SCALE: float = 1000.0
"""16-bit depth PNGs hold millimetres: ``depth_m = value / 1000``; 0 means invalid."""

_FILE_FORMATS = "a .npy float array (H, W) in metres or a 16-bit grayscale PNG in millimetres (0 = invalid)"


def read_depth_file(path: str | Path, width: int, height: int) -> DepthResult:
    """Read a user's depth map for a ``width x height`` image.

    Formats: ``.npy`` float16/32/64 (H, W) or (1, H, W), metres; ``.png`` 16-bit grayscale, millimetres.
    NaN, inf and values <= 0 (0 in a PNG) are invalid: masked and counted in a warning. A map of another size with
    the same aspect ratio (within one pixel) is resized with nearest-neighbour sampling (keeps depth edges sharp:
    no invented depths between foreground and background), with a warning naming old -> new size.

    Returns:
        :class:`DepthResult`: depth (height, width) float32 metres on the CPU (invalid pixels hold MIN_DEPTH_M),
        valid (height, width) bool, fov_x_deg None, kind METRIC.

    Raises:
        DepthError: unreadable file, wrong format/dtype/shape, other aspect ratio, no valid pixel.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise DepthError(f"depth file {path}: not found; pass {_FILE_FORMATS}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _read_npy(path)
    elif suffix == ".png":
        array = _read_png16(path)
    else:
        raise DepthError(f"depth file {path}: unknown extension {path.suffix!r}; pass {_FILE_FORMATS}")

    depth = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).float()  # (h, w) metres
    valid = torch.isfinite(depth) & (depth > 0)
    warnings: list[str] = []
    n_bad, n_all = int((~valid).sum()), valid.numel()
    if n_bad == n_all:
        raise DepthError(f"depth file {path}: all {n_all} pixels invalid (NaN/inf/<=0); pass {_FILE_FORMATS}")
    if n_bad:
        warnings.append(f"{name}: {n_bad} of {n_all} pixels invalid (NaN/inf/<=0), masked")

    h, w = depth.shape
    if (h, w) != (height, width):
        if abs(w * height - width * h) > max(h, height):  # aspect ratios differ by more than one pixel
            raise DepthError(
                f"depth file {path}: size {w}x{h} has another aspect ratio than the {width}x{height} image; "
                "pass a depth map of the image's aspect ratio"
            )
        depth = F.interpolate(depth[None, None], size=(height, width), mode="nearest-exact")[0, 0]
        valid = (
            F.interpolate(valid[None, None].float(), size=(height, width), mode="nearest-exact")[0, 0] > 0.5
        )
        warnings.append(f"{name}: resized {w}x{h} -> {width}x{height} (nearest) to match the image")
    depth = torch.where(valid, depth, torch.full_like(depth, MIN_DEPTH_M)).clamp(MIN_DEPTH_M, MAX_DEPTH_M)
    return DepthResult(
        depth=depth.contiguous(), valid=valid, fov_x_deg=None, kind=DepthKind.METRIC, warnings=tuple(warnings)
    )


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DepthError(
            f"depth file {path}: cannot read as .npy ({first_line(e)}); pass {_FILE_FORMATS}"
        ) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        dtype = getattr(array, "dtype", type(array).__name__)
        raise DepthError(f"depth file {path}: dtype {dtype}, expected float metres; pass {_FILE_FORMATS}")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or min(array.shape) < 1:
        raise DepthError(
            f"depth file {path}: shape {array.shape}, expected (H, W) or (1, H, W); pass {_FILE_FORMATS}"
        )
    return array


def _read_png16(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode not in ("I;16", "I;16B", "I;16L", "I;16N"):
                what = {"L": "an 8-bit grayscale", "RGB": "an RGB", "RGBA": "an RGBA", "P": "a palette"}.get(
                    mode, f"a mode-{mode}"
                )
                raise DepthError(
                    f"depth file {path}: {what} PNG, expected a 16-bit grayscale PNG in millimetres; "
                    "save depth with save_depth_png16 or as .npy metres"
                )
            array = np.asarray(img, dtype=np.uint16).astype(np.float64)  # (H, W) millimetres
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise DepthError(
            f"depth file {path}: cannot read as PNG ({first_line(e)}); pass {_FILE_FORMATS}"
        ) from None
    return array / PNG_DEPTH_SCALE  # metres; 0 stays 0 (invalid)


def save_depth_png16(path: str | Path, depth: torch.Tensor | np.ndarray) -> None:
    """Write depth as a 16-bit grayscale PNG in millimetres (atomic).

    Args:
        path: output .png file.
        depth: (H, W) float metres; NaN/inf/<=0 are written as 0 (invalid); valid depth is rounded to the nearest
            millimetre and at least 1 mm.

    Raises:
        InputError: wrong shape, or valid depth above 65.535 m (the 16-bit range).
    """
    from PIL import Image

    array = (
        depth.detach().cpu().double().numpy()
        if isinstance(depth, torch.Tensor)
        else np.asarray(depth, np.float64)
    )
    if array.ndim != 2:
        raise InputError(f"depth: shape {array.shape}, expected (H, W) metres")
    valid = np.isfinite(array) & (array > 0)
    top = float(array[valid].max()) if valid.any() else 0.0
    if top * PNG_DEPTH_SCALE > 65535.5:
        raise InputError(
            f"depth: max {top:.3f} m exceeds the 16-bit PNG range of 65.535 m; save it as .npy instead"
        )
    mm = np.where(valid, np.clip(np.rint(np.where(valid, array, 0.0) * PNG_DEPTH_SCALE), 1, 65535), 0)
    image = Image.fromarray(mm.astype(np.uint16))  # mode "I;16"
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
