"""Video and image files: MP4 (PyAV, H.264, yuv420p), PNG frames, input images.

Frames cross this module's boundary as ``(F, 3, H, W)`` float tensors in ``[-1, 1]`` (mirage's image convention)
or ``(F, H, W, 3)`` uint8 arrays (what PyAV and PIL take).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from mirage.errors import InputError, RuntimeFailure
from mirage.io import atomic_path

logger = logging.getLogger("mirage")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: File names of numbered PNG frames (``--frames-dir``).
FRAME_PATTERN = "{:05d}.png"


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(F, 3, H, W)`` float in [-1, 1] (any device) -> ``(F, H, W, 3)`` uint8 on the host."""
    x = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def from_uint8(frames: np.ndarray) -> torch.Tensor:
    """``(F, H, W, 3)`` uint8 -> ``(F, 3, H, W)`` float32 in [-1, 1]."""
    return torch.from_numpy(np.array(frames, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def read_image(path: str | Path) -> torch.Tensor:
    """Read an RGB image file as ``(3, H, W)`` float32 in [-1, 1] (alpha dropped, greyscale expanded)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise InputError(f"image {path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"image {path}: is a folder; pass image files, or a folder to `mirage render` for a batch")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"image {path}: cannot be decoded ({type(e).__name__}); pass a PNG or JPEG image") from None
    arr = np.asarray(rgb, dtype=np.uint8)
    return from_uint8(arr[None])[0]


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, read from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"image {path}: cannot be read ({type(e).__name__}); pass a PNG or JPEG image") from None


def resize_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize ``(3, H, W)`` or ``(F, 3, H, W)`` images with antialiased bicubic filtering; values kept in [-1, 1]."""
    squeeze = image.ndim == 3
    x = image[None] if squeeze else image
    if x.shape[-2:] != (height, width):
        x = torch.nn.functional.interpolate(x.float(), size=(height, width), mode="bicubic", antialias=True,
                                            align_corners=False).clamp(-1, 1)
    return x[0] if squeeze else x


def write_png(path: str | Path, frame: torch.Tensor) -> None:
    """Write one ``(3, H, W)`` [-1, 1] frame as PNG, atomically."""
    from PIL import Image

    arr = to_uint8(frame[None])[0]
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def write_frames_dir(folder: str | Path, frames: torch.Tensor, pattern: str = FRAME_PATTERN) -> list[Path]:
    """Write ``(F, 3, H, W)`` frames as numbered PNGs into ``folder`` (created). Returns the paths."""
    import re

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"frames folder {folder}: exists as a file; pass a folder path") from None
    except OSError as e:
        raise InputError(f"frames folder {folder}: cannot be created ({e.strerror}); choose a writable path") from None
    for old in folder.iterdir():  # frames of an earlier, longer render would otherwise stay behind
        if re.fullmatch(r"\d+\.png", old.name):
            old.unlink()
    paths = []
    for i, f in enumerate(frames):
        p = folder / pattern.format(i)
        write_png(p, f)
        paths.append(p)
    return paths


def write_mp4(path: str | Path, frames: torch.Tensor | np.ndarray, fps: float, *, crf: int = 18) -> None:
    """Encode frames to an H.264 MP4 (yuv420p), written to a temporary name and renamed when complete.

    Args:
        path: output ``.mp4``.
        frames: ``(F, 3, H, W)`` float in [-1, 1], or ``(F, H, W, 3)`` uint8. H and W must be even (yuv420p).
        fps: frames per second (fractional rates are kept as an exact fraction where possible).
        crf: x264 quality (lower is better; 18 is visually lossless).
    """
    import av

    arr = to_uint8(frames) if isinstance(frames, torch.Tensor) else np.asarray(frames, dtype=np.uint8)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"video {path}: frames must be (F, H, W, 3) uint8 or (F, 3, H, W) float, got {arr.shape}")
    F, H, W, _ = arr.shape
    if H % 2 or W % 2:
        raise InputError(f"video {path}: size {W}x{H} must be even for H.264 yuv420p; use an even --size")
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        try:
            with av.open(str(tmp), mode="w", format="mp4") as container:
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height = W, H
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "medium"}
                for frame in arr:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        except av.error.FFmpegError as e:
            raise RuntimeFailure(f"video {path}: encoding failed ({e}); check free disk space") from None


def read_mp4(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode a video to ``(F, H, W, 3)`` uint8 and its average fps (for tests and round trips)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate) if stream.average_rate else float("nan")
    return np.stack(frames), fps


def side_by_side(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Concatenate two ``(F, 3, H, W)`` videos horizontally (same F, H)."""
    return torch.cat([left, right], dim=-1)
