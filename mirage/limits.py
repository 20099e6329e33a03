"""Bounds on what one run may ask for, so that no input can hang the machine or exhaust its memory.

Each limit has a default that covers real use and an environment variable that lifts it (``docs/reliability.md``
lists them). A limit is checked before the work it bounds: a camera file's size before it is read, the frame count
before any camera is computed, the video's size before any model loads.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from mirage.errors import InputError

#: Longest echo of a user's value inside an error message (characters).
MAX_ECHO = 300


def echo(value: object, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` on one line, at most ``limit`` characters, in bounded time: containers (subclasses too) show
    their first items to a small depth and are never expanded in full (a YAML alias bomb stays a few lines)."""
    s = " ".join(_brief(value, 3).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _brief(v: object, depth: int, items: int = 6) -> str:
    if isinstance(v, (list, tuple)):
        if depth == 0:
            return "[...]" if isinstance(v, list) else "(...)"
        inner = ", ".join(_brief(x, depth - 1) for x in v[:items]) + (", ..." if len(v) > items else "")
        return f"[{inner}]" if isinstance(v, list) else f"({inner})"
    if isinstance(v, dict):
        if depth == 0:
            return "{...}"
        keys = list(v)[:items]
        inner = ", ".join(f"{_brief(k, 0)}: {_brief(v[k], depth - 1)}" for k in keys) + (", ..." if len(v) > items else "")
        return "{" + inner + "}"
    if isinstance(v, str):
        return repr(v[:80]) + ("..." if len(v) > 80 else "")
    if isinstance(v, (bool, int, float, type(None))):
        r = repr(v) if not isinstance(v, int) or v.bit_length() < 1000 else f"<integer of {v.bit_length()} bits>"
        return r
    return f"<{type(v).__name__}>"


@dataclass(frozen=True)
class Limit:
    """One bound: ``env`` lifts it (a positive integer), ``default`` otherwise."""

    env: str  # environment variable that sets it
    default: int  # value without the variable
    unit: str  # what is counted, for messages ("frames", "bytes")

    def value(self) -> int:
        raw = os.environ.get(self.env)
        if raw is None or raw.strip() == "":
            return self.default
        try:
            v = int(raw.strip())
        except ValueError:
            v = 0
        if v < 1:
            raise InputError(f"{self.env}={echo(raw, 60)}: not a positive whole number of {self.unit}; "
                             f"set it to e.g. {self.default} or unset it")
        return v

    def check(self, value: int, what: str) -> None:
        """Raise a one-line InputError when ``value`` (``what``: the option or file) exceeds the limit."""
        limit = self.value()
        if value > limit:
            raise InputError(f"{what}: {value} {self.unit} is over the limit of {limit}; "
                             f"use fewer, or set {self.env}={value} to lift the limit")


#: Frames of one video (``--frames``, a preset's ``frames``, a camera file's rows).
MAX_FRAMES = Limit("MIRAGE_MAX_FRAMES", 10_000, "frames")
#: Denoising steps (``--steps``).
MAX_STEPS = Limit("MIRAGE_MAX_STEPS", 1_000, "steps")
#: Pixels of an input image (decoded in full, ~12 bytes a pixel; PIL's decompression-bomb guard is set to this).
#: 150 MP holds a 108 MP phone photo.
MAX_IMAGE_PIXELS = Limit("MIRAGE_MAX_IMAGE_PIXELS", 150_000_000, "pixels")
#: Pixels of one output frame (``--size``).
MAX_OUTPUT_PIXELS = Limit("MIRAGE_MAX_OUTPUT_PIXELS", 4096 * 4096, "pixels")
#: Bytes of a camera file, preset YAML or trajectory JSON (read whole into memory).
MAX_TEXT_FILE_BYTES = Limit("MIRAGE_MAX_FILE_BYTES", 64 * 1024 * 1024, "bytes")
#: Widest output aspect ratio (either way round); not liftable: pass a --size of a usual shape.
MAX_ASPECT = 8.0
#: Frame rates an MP4 player handles.
MIN_FPS, MAX_FPS = 1.0, 240.0


def check_fps(fps: object, what: str = "--fps") -> float:
    """A frame rate players handle: finite and within [MIN_FPS, MAX_FPS]. Returns it as a float."""
    import math

    if isinstance(fps, bool) or not (isinstance(fps, (int, float)) and math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise InputError(f"{what}: frame rate {echo(fps, 40)} is outside [{MIN_FPS:g}, {MAX_FPS:g}] fps, which "
                         "players handle; pass e.g. --fps 16, 24 or 30")
    return float(fps)


def read_bounded(path: str | Path, what: str, limit: Limit = MAX_TEXT_FILE_BYTES) -> bytes:
    """The bytes of a regular file no larger than ``limit``; a FIFO, device or endless stream is refused before
    it is read (so ``/dev/zero`` or a named pipe cannot hang the run).

    Args:
        what: how the message names the input ("trajectory file", "preset file").
    Raises:
        InputError (a TrajectoryError when the caller converts it): not a regular file, too large, unreadable.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise InputError(f"{what} {path}: cannot be read ({e.strerror}); check the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {path}: not a regular file (a pipe, device or socket); save it to a file first")
    cap = limit.value()
    if st.st_size > cap:
        raise InputError(f"{what} {path}: {st.st_size} bytes is over the limit of {cap}; "
                         f"set {limit.env}={st.st_size} to lift it")
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise InputError(f"{what} {path}: cannot be read ({e.strerror}); check the path and permissions") from None
    if len(data) > cap:  # grew while being read
        raise InputError(f"{what} {path}: more than {cap} bytes; set {limit.env} to lift the limit")
    return data


def host_memory_available() -> int | None:
    """Bytes of host memory available now (``MemAvailable``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_video_fits(frames: int, width: int, height: int, what: str) -> None:
    """The rendered video is held on the host as float32 (frames x 3 x H x W) before it is encoded: refuse a
    request that cannot fit in the host memory available now, before any model loads."""
    need = frames * 3 * width * height * 4
    have = host_memory_available()
    if have is not None and need > have:
        gib = 1024**3
        raise InputError(f"{what}: {frames} frames at {width}x{height} need {need / gib:.1f} GiB of host memory, "
                         f"{have / gib:.1f} GiB are available; use fewer --frames or a smaller --size")


def check_cache_dir(path: Path, env: str = "MIRAGE_CACHE") -> None:
    """mirage's cache folder must be a folder it can write (checked before any model loads)."""
    where = f"{env}={path}" if os.environ.get(env) else f"cache folder {path}"
    if path.exists() and not path.is_dir():
        raise InputError(f"{where}: is a file, not a folder; point {env} at a folder or unset it")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{where}: cannot be created ({e.strerror}); point {env} at a writable folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{where}: not writable; point {env} at a writable folder")
