"""Per-stage timing, peak VRAM and the JSON run report (schema: ``docs/report.md``).

Timing: on CUDA every stage is bracketed by CUDA events, so the figures are GPU time between the stage's first and
last kernel as seen by the stream, read back with one synchronisation at the end of the run (no sync per stage);
on the CPU it is ``time.perf_counter``. Peak VRAM per stage is ``torch.cuda.max_memory_allocated`` after a
``reset_peak_memory_stats`` at the stage's start.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

REPORT_SCHEMA_VERSION = 2  # 2: the top-level ``sampling`` (issue 13); settings' steps/guidance may be null

#: The stages a render reports, in pipeline order (``total`` is the whole run but model loading).
STAGES = (
    "load",
    "depth",
    "encode",
    "memory_init",
    "memory_read",
    "conditioning",
    "denoise",
    "decode",
    "decode_reads",
    "write_depth",
    "memory_write",
    "video_write",
)


class StageTimer:
    """Accumulates time and peak VRAM per named stage.

    Args:
        device: the device the work runs on; CUDA devices are timed with CUDA events.
    """

    def __init__(self, device: torch.device | str = "cpu", on_stage=None):
        self.device = torch.device(device)
        self.on_stage = on_stage  # called with the stage name as each stage begins (error messages name it)
        self.cuda = self.device.type == "cuda"
        self._events: dict[str, list[tuple[object, object]]] = {}
        self._cpu_ms: dict[str, float] = {}
        self.peak_bytes: dict[str, int] = {}  # absolute peak (resident weights included)
        self.peak_extra_bytes: dict[str, int] = {}  # peak above what was allocated when the stage began

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block as (part of) stage ``name``; nested stages are allowed but double count."""
        if self.on_stage is not None:
            self.on_stage(name)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.setdefault(name, []).append((start, end))
                peak = torch.cuda.max_memory_allocated(self.device)
                self.peak_bytes[name] = max(self.peak_bytes.get(name, 0), int(peak))
                self.peak_extra_bytes[name] = max(self.peak_extra_bytes.get(name, 0), int(peak - base))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._cpu_ms[name] = self._cpu_ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3

    def times_ms(self) -> dict[str, float]:
        """Milliseconds per stage (synchronises CUDA once)."""
        out = dict(self._cpu_ms)
        if self._events:
            torch.cuda.synchronize(self.device)
            for name, pairs in self._events.items():
                out[name] = out.get(name, 0.0) + sum(float(s.elapsed_time(e)) for s, e in pairs)
        return out


def sha256_file(path: str | Path, limit_bytes: int | None = None) -> str:
    """Hex SHA-256 of a file (first ``limit_bytes`` only when given)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = limit_bytes
        while True:
            chunk = f.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    break
    return h.hexdigest()


@dataclass
class ChunkReport:
    """What happened in one chunk."""

    index: int
    frames: tuple[int, int]  # [first, last] pixel frame indices of the whole video, inclusive
    latent_frames: int
    hole_fraction: float  # fraction of latent cells of the chunk's read that were holes
    tokens: int  # memory tokens after this chunk's write-back
    bytes: int
    added: int
    merged: int
    dropped: int
    depth_scale: float | None = None  # alignment fit of the write-back depth (None if no write-back)
    warnings: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    """The JSON report of one render (schema version :data:`REPORT_SCHEMA_VERSION`, see docs/report.md)."""

    schema_version: int
    mirage_version: str
    inputs: dict  # image path + sha256, trajectory source + sha256, depth file
    models: dict  # component -> {"id", "revision", "class"}
    settings: dict  # the RenderConfig as given: preset, memory, denoiser, profile, steps, guidance, seed, prompt, ...
    sampling: dict | None  # what the denoiser used: profile, steps, guidance, negative_prompt, flow_shift (+ source);
    #                        None with --denoiser none
    device: str
    dtype: str
    frames: int
    fps: float
    width: int
    height: int
    timing_ms: dict  # stage -> ms; "total" = everything but "load"
    timing_method: str  # "cuda-events" or "perf_counter"
    peak_vram_bytes: dict  # "overall" and per stage, absolute (CUDA only; {} on CPU)
    peak_vram_extra_bytes: dict  # per stage: peak above the memory allocated when the stage began
    memory: dict  # kind, final stats
    chunks: list[dict]
    warnings: list[str]
    outputs: dict  # kind -> path

    def to_dict(self) -> dict:
        return asdict(self)
