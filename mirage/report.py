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
from enum import Enum
from pathlib import Path

import torch

REPORT_SCHEMA_VERSION = 5  # 2: the top-level ``sampling`` (issue 13); settings' steps/guidance may be null
#                           3: consistency ``scores`` at the top level and in every chunk; the ``scores`` stage (issue 16)
#                           4: each chunk's ``depth_frames`` (write-back depth on demand, issue 15)
#                           5: ``unstaged_ms``, the time outside every stage, by where it falls (issue 15)


class Stage(str, Enum):
    """The stages a render reports, in pipeline order (the timer's keys; ``total`` is the whole run but loading)."""

    LOAD = "load"
    DEPTH = "depth"
    ENCODE = "encode"
    MEMORY_INIT = "memory_init"
    MEMORY_READ = "memory_read"
    CONDITIONING = "conditioning"
    DENOISE = "denoise"
    DECODE = "decode"
    DECODE_READS = "decode_reads"
    WRITE_DEPTH = "write_depth"
    MEMORY_WRITE = "memory_write"
    SCORES = "scores"
    VIDEO_WRITE = "video_write"


#: The stage names, in pipeline order.
STAGES = tuple(s.value for s in Stage)


class StageTimer:
    """Accumulates time and peak VRAM per named stage.

    Stages may nest: a stage opened inside another is timed on its own and the outer stage is paused meanwhile
    (exclusive times, so the stages still add up to no more than the run; e.g. the write-back's depth calls,
    ``write_depth``, run inside ``memory_write``).

    The time outside every stage is kept too (:meth:`unstaged_ms`): from :meth:`start` to the first stage, between
    each stage and the next, and from the last stage to :meth:`stop`, on the same clock as the stages.

    Args:
        device: the device the work runs on; CUDA devices are timed with CUDA events.
    """

    def __init__(self, device: torch.device | str = "cpu", on_stage=None):
        self.device = torch.device(device)
        self.on_stage = on_stage  # called with the stage name as each stage begins or resumes (errors name it)
        self.cuda = self.device.type == "cuda"
        self._open: list[tuple[str, object, int]] = []  # the open stages, innermost last: (name, start, base bytes)
        self.peak_bytes: dict[str, int] = {}  # absolute peak (resident weights included)
        self.peak_extra_bytes: dict[str, int] = {}  # peak above what was allocated when the stage began (resumed)
        self._segments: list[tuple[str, object, object]] = []  # every timed segment in order: (name, start, end)
        self._bounds: list[object] = []  # [start] or [start, stop] of the run (events or perf_counter values)

    def _now(self) -> object:
        """A point on the timer's clock: a recorded CUDA event, or ``perf_counter()`` on the CPU."""
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        """Mark the start of the run (the clock :meth:`unstaged_ms` counts from)."""
        self._bounds = [self._now()]

    def stop(self) -> None:
        """Mark the end of the run."""
        if self._bounds:
            self._bounds = [self._bounds[0], self._now()]

    @contextlib.contextmanager
    def stage(self, name: Stage | str) -> Iterator[None]:
        """Time the enclosed block as (part of) stage ``name``; an enclosing stage is paused while it runs."""
        name = str(getattr(name, "value", name))  # the report's keys are the plain names
        if self._open:  # pause the enclosing stage
            self._record(*self._open[-1])
        self._open.append(self._begin(name))
        try:
            yield
        finally:
            self._record(*self._open.pop())
            if self._open:  # resume the enclosing stage
                self._open[-1] = self._begin(self._open[-1][0])

    def _begin(self, name: str) -> tuple[str, object, int]:
        """Open a timing segment of ``name``: (name, start event or perf_counter, allocated bytes)."""
        if self.on_stage is not None:
            self.on_stage(name)
        if not self.cuda:
            return name, self._now(), 0
        torch.cuda.reset_peak_memory_stats(self.device)
        base = int(torch.cuda.memory_allocated(self.device))
        return name, self._now(), base

    def _record(self, name: str, start, base: int) -> None:
        """Close a segment opened by :meth:`_begin`: add its time and peak VRAM to stage ``name``."""
        end = self._now()
        self._segments.append((name, start, end))
        if not self.cuda:
            return
        peak = int(torch.cuda.max_memory_allocated(self.device))
        self.peak_bytes[name] = max(self.peak_bytes.get(name, 0), peak)
        self.peak_extra_bytes[name] = max(self.peak_extra_bytes.get(name, 0), peak - base)

    def _between_ms(self, a: object, b: object) -> float:
        if not self.cuda:
            return max(0.0, (b - a) * 1e3)
        return max(0.0, float(a.elapsed_time(b)))

    def unstaged_ms(self) -> dict[str, float]:
        """The run's time outside every stage, by where it falls: ``start`` (from :meth:`start` to the first stage),
        ``A->B`` (after a segment of stage A, before one of stage B; summed over the run), ``end`` (from the last
        stage to :meth:`stop`). Empty unless both were marked. On CUDA these are gaps of the stream's timeline: the
        GPU idle or running work queued outside the stages (synchronises CUDA once)."""
        if len(self._bounds) != 2:
            return {}
        if self.cuda:
            torch.cuda.synchronize(self.device)
        out: dict[str, float] = {}

        def add(key: str, ms: float) -> None:
            out[key] = out.get(key, 0.0) + ms

        if not self._segments:
            add("start", self._between_ms(*self._bounds))
            return out
        add("start", self._between_ms(self._bounds[0], self._segments[0][1]))
        for (a, _, a_end), (b, b_start, _) in zip(self._segments, self._segments[1:], strict=False):
            add(f"{a}->{b}", self._between_ms(a_end, b_start))
        add("end", self._between_ms(self._segments[-1][2], self._bounds[1]))
        return out

    def times_ms(self) -> dict[str, float]:
        """Milliseconds per stage (synchronises CUDA once)."""
        if self.cuda and self._segments:
            torch.cuda.synchronize(self.device)
        out: dict[str, float] = {}
        for name, start, end in self._segments:
            out[name] = out.get(name, 0.0) + self._between_ms(start, end)
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


def stats_dict(stats) -> dict:
    """A stats dataclass (``MemoryStats``) as the report's plain JSON object (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in stats.__dict__.items()}


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
    depth_scale: float | None = None  # alignment fit of the write-back depth (None: no write-back, or no view needed depth)
    depth_frames: int = 0  # frames the depth model ran on for the write-back (only views that add something)
    # consistency scores (mirage.scores; docs/report.md); None where nothing was scored
    memory_agreement_psnr: float | None = None  # dB, generated vs the memory's view, where the memory saw
    memory_agreement_ssim: float | None = None  # [-1, 1], same pixels
    temporal_change: float | None = None  # [0, 1], mean change between consecutive frames after the camera warp
    warnings: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    """The JSON report of one render (schema version :data:`REPORT_SCHEMA_VERSION`, see docs/report.md)."""

    schema_version: int
    mirage_version: str
    inputs: dict  # image path + sha256, trajectory source + sha256, depth file
    models: dict  # component -> {"id", "revision", "class"}
    settings: dict  # the PipelineConfig and RenderOptions as given: preset, denoiser, memory, profile, steps, ...
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
    unstaged_ms: dict  # the time outside every stage, by where it falls: StageTimer.unstaged_ms
    peak_vram_bytes: dict  # "overall" and per stage, absolute (CUDA only; {} on CPU)
    peak_vram_extra_bytes: dict  # per stage: peak above the memory allocated when the stage began
    memory: dict  # kind, final stats
    chunks: list[dict]
    scores: dict  # the whole video's consistency scores (+ per frame under "per_frame"): docs/report.md
    warnings: list[str]
    outputs: dict  # kind -> path

    def to_dict(self) -> dict:
        return asdict(self)


def build_report(*, plan, config, options, models: dict, sampling: dict | None, frames: int, fps: float,
                 timer: StageTimer, load_timer: StageTimer, total_ms: float, memory_kind: str, memory_stats: dict,
                 chunks: list[ChunkReport], warnings: list[str], k_source: str, scores: dict | None = None) -> RunReport:
    """The :class:`RunReport` of one render.

    Args:
        plan: the render's :class:`mirage.inputs.InputPlan`. config, options: the settings
            (:class:`mirage.config.PipelineConfig`, :class:`mirage.config.RenderOptions`).
        models: component -> {"id", "revision", "class", "local"}. sampling: what the denoiser used, or None.
        frames, fps: the video. timer, load_timer: the render's and the model loading's stage timers.
        total_ms: wall time of the render (loading excluded). memory_kind, memory_stats: the memory at the end.
        chunks, warnings: per chunk, and for the run. k_source: where the input camera's intrinsics came from.
        scores: the video's consistency scores (:func:`mirage.scores.video_scores`), default: none scored.
    """
    from mirage import __version__
    from mirage.config import settings_dict
    from mirage.scores import video_scores

    times = timer.times_ms()
    times["total"] = total_ms
    times["load"] = load_timer.times_ms().get("load", 0.0)
    peak: dict = {}
    if timer.cuda:
        peak = dict(timer.peak_bytes)
        peak["load"] = load_timer.peak_bytes.get("load", 0)
        peak["overall"] = max(peak.values()) if peak else 0
    traj = plan.traj
    return RunReport(
        schema_version=REPORT_SCHEMA_VERSION,
        mirage_version=__version__,
        inputs={
            "image": plan.name, "image_sha256": plan.image_sha256(),
            "trajectory": traj.spec if traj is not None else None,
            "trajectory_sha256": sha256_file(traj.spec) if traj is not None and Path(traj.spec).is_file() else None,
            "depth_file": str(plan.depth_file) if plan.depth_file else None,
            "depth_file_sha256": sha256_file(plan.depth_file) if plan.depth_file else None,
            "memory_from": str(plan.memory_from) if plan.memory_from else None,
            "intrinsics_source": k_source,
        },
        models=models,
        settings=settings_dict(config, options),
        sampling=sampling,
        device=str(timer.device),
        dtype=str(getattr(config.dtype, "value", config.dtype)),
        frames=frames,
        fps=fps,
        width=plan.size[0],
        height=plan.size[1],
        timing_ms=times,
        timing_method="cuda-events" if timer.cuda else "perf_counter",
        unstaged_ms=timer.unstaged_ms(),
        peak_vram_bytes=peak,
        peak_vram_extra_bytes=dict(timer.peak_extra_bytes),
        memory={"kind": memory_kind, **memory_stats},
        chunks=[c.__dict__ for c in chunks],
        scores=scores if scores is not None else video_scores(None, None),
        warnings=warnings,
        outputs={},
    )
