"""Video and image files: MP4 (PyAV, H.264, yuv420p), PNG frames, input images.

Frames cross this module's boundary as ``(F, 3, H, W)`` float tensors in ``[-1, 1]`` (mirage's image convention)
or ``(F, H, W, 3)`` uint8 arrays (what PyAV and PIL take).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirage.errors import InputError, RuntimeFailure
from mirage.io import atomic_path

logger = logging.getLogger("mirage")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: File names of numbered PNG frames (``--frames-dir``).
FRAME_PATTERN = "{:05d}.png"


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(F, 3, H, W)`` float in [-1, 1] (any device) -> ``(F, H, W, 3)`` uint8 on the host: ``round((x + 1) *
    127.5)`` of ``x`` clamped to [-1, 1]; for float32 frames one new float tensor, the rest in place (a video is
    388 MB of float32 at 81 frames of 832x480: every out-of-place step would allocate and fill that again)."""
    x = frames.detach().float().clamp(-1, 1)  # a new tensor: the caller's frames are not touched
    x.add_(1).mul_(127.5).round_()
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def from_uint8(frames: np.ndarray) -> torch.Tensor:
    """``(F, H, W, 3)`` uint8 -> ``(F, 3, H, W)`` float32 in [-1, 1]."""
    return torch.from_numpy(np.array(frames, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@contextlib.contextmanager
def open_image(path: str | Path, what: str = "image") -> Iterator[Any]:
    """Open an image file with PIL after mirage's checks: a regular file (never a pipe or device), within the
    pixel limit (``MIRAGE_MAX_IMAGE_PIXELS``; PIL's decompression-bomb guard follows it). Yields the PIL image."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from mirage.limits import MAX_IMAGE_PIXELS

    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path}: does not exist; check the path")
    if path.is_dir():
        raise InputError(f"{what} {path}: is a folder; pass image files, or a folder to `mirage render` for a batch")
    if not path.is_file():
        raise InputError(f"{what} {path}: not a regular file (a pipe or device); save the image to a file first")
    limit = MAX_IMAGE_PIXELS.value()
    Image.MAX_IMAGE_PIXELS = limit  # PIL raises DecompressionBombError above twice this; mirage checks it exactly
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:
        raise InputError(f"{what} {path}: far more pixels than the limit of {limit} (a decompression bomb?); shrink "
                         f"the image or set {MAX_IMAGE_PIXELS.env} to lift the limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{what} {path}: cannot be read ({type(e).__name__}); pass a PNG or JPEG image") from None
    with im:
        w, h = im.size
        if w * h > limit:
            raise InputError(f"{what} {path}: {w}x{h} is {w * h} pixels, over the limit of {limit}; shrink the image "
                             f"or set {MAX_IMAGE_PIXELS.env}={w * h} to lift the limit")
        if w < 1 or h < 1:
            raise InputError(f"{what} {path}: size {w}x{h} is empty; pass a real image")
        yield im


#: EXIF orientations (5-8) that turn the stored image by 90 degrees.
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)


def _png_has_exif(path: str | Path) -> bool:
    """Whether a PNG file holds an eXIf chunk, read from its chunk headers alone (the pixels are skipped, not
    decoded). Anything that does not walk as a PNG answers True: PIL then looks for itself."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return True
        while True:
            head = f.read(8)
            if len(head) < 8:
                return True  # cut short: let PIL read what is there
            length, kind = struct.unpack(">I4s", head)
            if kind == b"eXIf":
                return True
            if kind == b"IEND":
                return False
            f.seek(length + 4, 1)  # the data and its CRC


def _orientation(im: Any) -> int:
    # PIL's PNG getexif() decodes the whole image to look for an eXIf chunk after the pixels (for a header read,
    # BENCHMARKS.md, eighth session): a PNG whose chunk headers hold none has orientation 1 without decoding
    filename = getattr(im, "filename", None)
    if getattr(im, "format", None) == "PNG" and "exif" not in im.info and filename and not _png_has_exif(filename):
        return 1
    try:
        v = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as e:  # noqa: BLE001 -- a damaged EXIF block: the pixels as stored, said in the log
        logger.warning("image %s: EXIF block unreadable (%s); orientation not applied",
                       getattr(im, "filename", "?"), type(e).__name__)
        return 1
    return v if isinstance(v, int) and 1 <= v <= 8 else 1


def _to_rgb(im: Any, path: Path) -> np.ndarray:
    """Pixels of a PIL image as (H, W, 3), read as a photo viewer shows them: 8-bit modes through PIL's own
    conversion, as uint8; 16-bit and 32-bit integer greyscale scaled from their full range, and float images in
    [0, 1], as float32 in [0, 1]. Anything else that cannot be shown faithfully is refused (never rendered black)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.float64)
        hi = 65535.0
        if a.size and (a.min() < 0 or a.max() > hi):
            raise InputError(f"image {path}: 32-bit integer pixels span [{a.min():g}, {a.max():g}], outside the 16-bit "
                             "range; save it as an 8- or 16-bit PNG")
        g = (a / hi).astype(np.float32)
        return np.repeat(g[..., None], 3, axis=-1)
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if not np.isfinite(a).all():
            raise InputError(f"image {path}: float pixels hold NaN or inf; save it as an 8- or 16-bit PNG")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
        if lo < 0 or hi > 1:
            raise InputError(f"image {path}: float pixels span [{lo:g}, {hi:g}], not [0, 1] (HDR or depth?); "
                             "tone-map it and save an 8- or 16-bit PNG")
        return np.repeat(a[..., None], 3, axis=-1)
    return np.array(im.convert("RGB"), dtype=np.uint8)  # a writable copy: torch takes no read-only arrays


def read_image(path: str | Path, device: torch.device | str | None = None) -> torch.Tensor:
    """Read an image file as ``(3, H, W)`` float32 in [-1, 1], the way a photo viewer shows it: EXIF orientation
    applied, alpha dropped, greyscale expanded, 16-bit and float pixels scaled from their range (others refused).

    ``device``: where the result lives (default: the CPU). An 8-bit image crosses to it as uint8 and is mapped there
    through a 256-entry table (``v / 255 * 2 - 1`` in float32 on the CPU): a quarter of the bytes, no float pass over
    the pixels on the host, and the same values on every device (CUDA divides by a scalar as a multiplication by its
    reciprocal, one ulp away for some values; a table lookup is exact everywhere)."""
    from PIL import ImageOps

    path = Path(path)
    with open_image(path) as im:
        try:
            im.load()
            if _orientation(im) != 1:
                im = ImageOps.exif_transpose(im)
            arr = _to_rgb(im, path)  # (H, W, 3) uint8, or float32 in [0, 1]
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(f"image {path}: cannot be decoded ({type(e).__name__}); pass a PNG or JPEG image") from None
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    if x.dtype == torch.uint8:
        # int32 indices: an int64 copy of a large photo would take more device memory than the float result
        return _UINT8_TO_UNIT.to(x.device).index_select(0, x.flatten().int()).view(x.shape).permute(2, 0, 1)
    return (x * 2.0 - 1.0).permute(2, 0, 1)


#: 8-bit pixel value -> float32 in [-1, 1], computed once on the CPU (read_image looks values up here on any device)
_UINT8_TO_UNIT = torch.arange(256, dtype=torch.float32) / 255.0 * 2.0 - 1.0


class HostFrames:
    """A render's video on the host, ``(N, 3, H, W)`` float32 in [-1, 1], each chunk's frames copied in as soon as
    they are decoded (:meth:`put`); :meth:`wait` returns it once every copy has landed.

    From CUDA the tensor is pinned and the copies run on a side stream of their own: a chunk's copy (about 150 MB at
    832x480) then overlaps the GPU work that follows the decode (the reads' decode, the scores, the write-back's depth
    model) instead of holding it up on the compute stream, and no copy waits for the host (a copy to pageable memory
    stalled the GPU: three chunks at 832x480, ~260 ms of a 4-step render on an H200, BENCHMARKS.md, sixth session).
    The source of each copy is marked as used by that stream (``record_stream``), so the caching allocator does not
    hand its memory out again before the copy has read it. torch's caching host allocator keeps the pinned block for
    the next render of the same size once the result is dropped; it rounds the size up to a power of two (512 MiB for
    81 frames at 832x480) and never returns it to the OS. A caller that keeps many results holds a page-locked block
    each: ``frames.clone()`` keeps a pageable copy.
    """

    def __init__(self, n: int, height: int, width: int, device: torch.device) -> None:
        cuda = device.type == "cuda"
        self.frames = torch.empty(n, 3, height, width, dtype=torch.float32, pin_memory=cuda)
        self._stream = torch.cuda.Stream(device) if cuda else None

    def put(self, start: int, frames: torch.Tensor) -> None:
        """Copy ``frames`` (F, 3, H, W), on the render's device, into video frames ``start .. start + F - 1``; from
        CUDA asynchronously, after the work queued so far on the current stream (which made them)."""
        dst = self.frames[start:start + frames.shape[0]]
        if self._stream is None or frames.device.type != "cuda":
            dst.copy_(frames)
            return
        self._stream.wait_stream(torch.cuda.current_stream(frames.device))
        with torch.cuda.stream(self._stream):
            dst.copy_(frames, non_blocking=True)
        frames.record_stream(self._stream)

    def wait(self) -> torch.Tensor:
        """The video, once every copy has landed (the host waits for the copy stream only)."""
        if self._stream is not None:
            self._stream.synchronize()
        return self.frames


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file as it is shown (EXIF orientation applied), read from its header."""
    with open_image(path, what) as im:
        w, h = im.size
        return (h, w) if _orientation(im) in _TRANSPOSED else (w, h)


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


#: Manifest of the numbered frames mirage wrote into a ``--frames-dir`` folder (only those are ever removed).
FRAMES_MANIFEST = ".mirage-frames.json"
_FRAME_RE = re.compile(r"\d+\.png")


def _manifest(folder: Path) -> set[str]:
    try:
        d = json.loads((folder / FRAMES_MANIFEST).read_text(encoding="utf-8"))
        files = d.get("files") if isinstance(d, dict) else None
        return {f for f in files if isinstance(f, str) and _FRAME_RE.fullmatch(f)} if isinstance(files, list) else set()
    except (OSError, ValueError):
        return set()


def check_frames_dir(folder: str | Path, what: str = "--frames-dir") -> None:
    """A frames folder must be new, empty of numbered PNGs, or hold only frames an earlier mirage run wrote (its
    manifest lists them): mirage never overwrites or deletes a numbered image it did not write."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InputError(f"{what} {folder}: exists as a file; pass a folder path")
    ours = _manifest(folder)
    try:
        foreign = sorted(p.name for p in folder.iterdir() if _FRAME_RE.fullmatch(p.name) and p.name not in ours)
    except OSError as e:
        raise InputError(f"{what} {folder}: cannot be listed ({e.strerror}); choose another folder") from None
    if foreign:
        raise InputError(f"{what} {folder}: holds {len(foreign)} numbered image(s) mirage did not write (e.g. "
                         f"{foreign[0]}); pass a new or empty folder so that none is overwritten or removed")


def write_frames_dir(folder: str | Path, frames: torch.Tensor, pattern: str = FRAME_PATTERN) -> list[Path]:
    """Write ``(F, 3, H, W)`` frames as numbered PNGs into ``folder`` (created). Returns the paths.

    Frames of an earlier, longer mirage render in the folder are removed; only files listed in the folder's
    manifest (``.mirage-frames.json``, written with the frames) are ever removed, and a folder holding numbered
    images mirage did not write is refused (:func:`check_frames_dir`).
    """
    from mirage.io import atomic_write_text

    folder = Path(folder)
    check_frames_dir(folder, "frames folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"frames folder {folder}: exists as a file; pass a folder path") from None
    except OSError as e:
        raise InputError(f"frames folder {folder}: cannot be created ({e.strerror}); choose a writable path") from None
    old = _manifest(folder)
    names = [pattern.format(i) for i in range(frames.shape[0])]
    # list the new names before writing them: a killed run leaves no frame the manifest does not know
    atomic_write_text(folder / FRAMES_MANIFEST, json.dumps({"format": "mirage-frames", "files": sorted(old | set(names))}))
    paths = []
    for name, f in zip(names, frames, strict=True):
        p = folder / name
        write_png(p, f)
        paths.append(p)
    for stale in sorted(old - set(names)):  # frames of an earlier, longer render
        (folder / stale).unlink(missing_ok=True)
    atomic_write_text(folder / FRAMES_MANIFEST, json.dumps({"format": "mirage-frames", "files": names}))
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
    rate = mp4_rate(fps, f"video {path}")
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


def mp4_rate(fps: float, what: str = "--fps") -> Fraction:
    """The exact frame rate an MP4 stores for ``fps``: a fraction with a denominator up to 1001 (so 23.976 is
    24000/1001). Rates no player handles (outside [1, 240] fps, or not finite) are refused; the report states the
    rate returned here, which is what the file holds."""
    from mirage.limits import check_fps

    check_fps(fps, what)
    return Fraction(fps).limit_denominator(1001)


def mp4_frame_count(path: str | Path) -> int:
    """Frames of a video file (0 when it cannot be opened or holds no video stream): decodes nothing but the
    container's index."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for p in container.demux(stream) if p.size)
    except (av.error.FFmpegError, OSError, ValueError):
        return 0


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
