"""`mirage bench`: the latent memory against the RGB point-cloud baseline, measured side by side.

Both memories run the full render code path (:class:`mirage.pipeline.Pipeline`), same inputs, same seed, same
denoiser, in one process, after a warm-up; each setting is repeated and the median and spread are reported.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from mirage.config import PipelineConfig, RenderOptions, check_pipeline_config, check_render_options
from mirage.data import example_path
from mirage.errors import InputError, MirageError
from mirage.inputs import TrajectoryOptions
from mirage.memory.types import MemoryKind
from mirage.pipeline import Pipeline
from mirage.report import Stage
from mirage.sampling import resolve_sampling

logger = logging.getLogger("mirage")

#: Stages between the denoiser calls: what a spatial memory costs (read, render + VAE encode of renders for the
#: RGB memory, VACE conditioning, write-back with its depth estimates).
CONDITIONING_STAGES = (Stage.MEMORY_READ, Stage.CONDITIONING, Stage.WRITE_DEPTH, Stage.MEMORY_WRITE)

BENCH_SCHEMA_VERSION = 4  # 2: each run's consistency scores (``scores``) and their medians in the summary (issue 16)
#                          3: ``videos_per_hour`` in each row's summary (issue 15)
#                          4: each run's ``unstaged_ms`` (the report's time outside every stage, issue 15)

#: What a row's ``videos_per_hour`` means (printed under the table and kept in the JSON header).
VIDEOS_PER_HOUR = ("videos per hour = 3600 / end-to-end seconds of one video (median), the models loaded once "
                   "(loading not included), one video at a time, its MP4 not written (a batch writes it while the next "
                   "video renders: scripts/bench_batch.py measures both)")

#: The consistency scores a row summarises (the render report's ``scores``, docs/report.md).
SCORE_KEYS = ("memory_agreement_psnr", "memory_agreement_ssim", "temporal_change", "revisit_psnr")


def example_inputs() -> tuple[Path, Path]:
    """``(image, depth)`` of the shipped example scene ``room`` (true depth), what ``mirage bench`` runs by default."""
    return example_path("room", "image.png"), example_path("room", "depth.png")


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run: a sweep over frames x steps, both memories per setting."""

    config: PipelineConfig  # models, device, dtypes, offload, precision, compile
    options: RenderOptions = RenderOptions()  # size, chunking, sampling (steps and memory are swept)
    image: Path = field(default_factory=lambda: example_path("room", "image.png"))  # input image (default: the example scene)
    depth_file: Path | None = field(default_factory=lambda: example_path("room", "depth.png"))  # its true depth; None = depth model
    traj: str = "orbit"  # trajectory preset or file
    frames: tuple[int, ...] = (81,)  # video lengths to sweep
    steps: tuple[int, ...] = (4, 20, 50)  # denoising steps to sweep
    repeats: int = 3  # timed runs per setting (median and spread reported)
    warmup: int = 1  # untimed runs before the first timed one (per frames value)
    memories: tuple[MemoryKind, ...] = (MemoryKind.LATENT, MemoryKind.RGB)
    random_weights: bool = False  # components at their real architecture with random weights (no download)


@dataclass
class RunMeasure:
    """One timed render."""

    total_ms: float
    stages_ms: dict[str, float]
    peak_vram_bytes: dict[str, int]  # absolute per stage, and "overall"
    peak_vram_extra_bytes: dict[str, int]  # per stage, above what was allocated when the stage began
    memory_bytes: list[int]  # cache size after each chunk
    depth_frames: list[int] = field(default_factory=list)  # frames the depth model ran on for each chunk's write-back
    scores: dict = field(default_factory=dict)  # the render's consistency scores (SCORE_KEYS; null: not scored)
    unstaged_ms: dict[str, float] = field(default_factory=dict)  # the time outside every stage (RunReport.unstaged_ms)


@dataclass
class BenchRow:
    """One setting (memory, frames, steps): all its timed runs and their summary."""

    memory: str
    frames: int
    steps: int
    runs: list[RunMeasure] = field(default_factory=list)
    error: str | None = None

    def median(self, key: str) -> float | None:
        vals = [_get(r, key) for r in self.runs]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def spread(self, key: str) -> tuple[float, float] | None:
        vals = [v for v in (_get(r, key) for r in self.runs) if v is not None]
        return (min(vals), max(vals)) if vals else None

    def videos_per_hour(self) -> float | None:
        """Batch throughput of this setting: 3600 / the median end-to-end seconds of one video (``total_ms``: the
        models are loaded once, before the timed runs, so loading is not in it). None without a timed run."""
        t = self.median("total_ms")
        return 3.6e6 / t if t else None

    def summary(self) -> dict:
        keys = ["total_ms", "conditioning_ms", "denoise_ms", "decode_ms", "write_depth_ms", "memory_read_ms",
                "memory_write_ms", "peak_vram_overall", "peak_vram_conditioning", "memory_bytes_final", *SCORE_KEYS]
        out = {k: {"median": self.median(k), "min_max": self.spread(k)} for k in keys}
        sp = self.spread("total_ms")  # the slowest run is the fewest videos per hour
        out["videos_per_hour"] = {"median": self.videos_per_hour(),
                                  "min_max": (3.6e6 / sp[1], 3.6e6 / sp[0]) if sp and sp[0] > 0 else None}
        return out


def _get(r: RunMeasure, key: str) -> float | None:
    if key == "total_ms":
        return r.total_ms
    if key in SCORE_KEYS:
        return r.scores.get(key)
    if key == "conditioning_ms":
        return sum(r.stages_ms.get(s, 0.0) for s in CONDITIONING_STAGES)
    if key.endswith("_ms"):
        return r.stages_ms.get(key[:-3])
    if key == "peak_vram_overall":
        return r.peak_vram_bytes.get("overall")
    if key == "peak_vram_conditioning":  # working memory of the conditioning path, above the resident models
        vals = [r.peak_vram_extra_bytes[s] for s in CONDITIONING_STAGES if s in r.peak_vram_extra_bytes]
        return max(vals) if vals else None
    if key == "memory_bytes_final":
        return r.memory_bytes[-1] if r.memory_bytes else None
    raise KeyError(key)


@dataclass
class BenchReport:
    """What `mirage bench` prints and writes as JSON."""

    schema_version: int
    header: dict  # device, versions, preset, size, random_weights, representative, command settings
    rows: list[BenchRow]
    ratios: list[dict]  # per (frames, steps): rgb / latent for time, conditioning time, VRAM, bytes

    @property
    def failed(self) -> list[BenchRow]:
        return [r for r in self.rows if r.error]

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "header": self.header,
            "rows": [dict(asdict(r), summary=r.summary()) for r in self.rows],
            "ratios": self.ratios,
        }


def compute_ratios(rows: list[BenchRow]) -> list[dict]:
    """rgb / latent for each (frames, steps) where both ran: end to end, conditioning path, peak VRAM, bytes."""
    out = []
    by_key = {(r.memory, r.frames, r.steps): r for r in rows if not r.error and r.runs}
    for (mem, frames, steps), lat in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if mem != MemoryKind.LATENT.value:
            continue
        rgb = by_key.get((MemoryKind.RGB.value, frames, steps))
        if rgb is None:
            continue
        entry = {"frames": frames, "steps": steps}
        for key in ("total_ms", "conditioning_ms", "peak_vram_conditioning", "peak_vram_overall", "memory_bytes_final"):
            a, b = rgb.median(key), lat.median(key)
            entry[key] = (a / b) if (a is not None and b not in (None, 0)) else None
        out.append(entry)
    return out


def _header(cfg: BenchConfig, pipe: Pipeline) -> dict:
    import platform

    import mirage

    dev = pipe.device
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    rc, ro = cfg.config, cfg.options
    return {
        "mirage_version": mirage.__version__,
        "torch": torch.__version__,
        "device": str(dev),
        "gpu": gpu,
        "host": platform.node(),
        "preset": rc.preset,
        "random_weights": cfg.random_weights,
        "representative": dev.type == "cuda",
        "note": None if dev.type == "cuda" else "CPU run: figures are not representative of GPU speed",
        "dtype": rc.dtype,
        "size": list(ro.size) if ro.size else None,
        "chunk_frames": ro.chunk_frames,
        "image": str(cfg.image),
        "depth_file": str(cfg.depth_file) if cfg.depth_file else None,
        "traj": cfg.traj,
        "frames": list(cfg.frames),
        "steps": list(cfg.steps),
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "conditioning_stages": [s.value for s in CONDITIONING_STAGES],
        "videos_per_hour": VIDEOS_PER_HOUR,
        "timing": "cuda-events" if dev.type == "cuda" else "perf_counter",
        "compile": rc.compile,
        "fp8": rc.fp8.value,
        "offload": rc.offload.value,
        "vae_dtype": rc.vae_dtype,
        "sampling": _sampling_header(ro, pipe),
    }


def _sampling_header(o: RenderOptions, pipeline: Pipeline) -> dict | None:
    """The sweep's sampling settings but the swept steps (null without a fixed --size: they depend on the size)."""
    if o.size is None:
        return None
    rec = pipeline.sampling_record(resolve_sampling(o.profile, *o.size, steps=o.steps, guidance=o.guidance,
                                                    negative_prompt=o.negative_prompt, flow_shift=o.flow_shift))
    rec.pop("steps")
    return rec


def build_pipeline(cfg: BenchConfig) -> Pipeline:
    """The pipeline the benchmark measures: the preset's models, or random weights at their real architecture."""
    if cfg.random_weights:
        from mirage.hub.lora import open_lora
        from mirage.random_weights import random_components

        rc = cfg.config
        for lora in rc.fused_loras:  # an unreadable LoRA fails before the models are built, as load_components does
            open_lora(lora)
        comps = random_components(rc.preset, device=torch.device(rc.device), dtype=rc.torch_dtype,
                                  vae_dtype=rc.torch_vae_dtype)
        return Pipeline(rc, components=comps)
    return Pipeline(cfg.config)


def run_bench(
    cfg: BenchConfig,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    pipeline: Pipeline | None = None,
) -> BenchReport:
    """Run the sweep. A failing setting is recorded in its row (``error``) and the sweep goes on.

    Args:
        cfg: what to measure.
        progress: called as ("run", done, total) after each render.
        pipeline: a ready pipeline (tests); default: one built from ``cfg.config`` (random weights if asked).
    """
    if cfg.repeats < 1:
        raise InputError(f"--repeats: {cfg.repeats} must be at least 1")
    if not cfg.frames or not cfg.steps:
        raise InputError("bench: --frames and --steps need at least one value each")
    for s in cfg.steps:
        if s < 1:
            raise InputError(f"--steps: {s} must be at least 1")
    check_pipeline_config(cfg.config)  # --device, --fp8, ...: before any model is built
    check_render_options(cfg.options)  # --guidance, --flow-shift, ...
    t0 = time.perf_counter()
    if pipeline is None:
        pipeline = build_pipeline(cfg)
    load_s = time.perf_counter() - t0
    header = _header(cfg, pipeline)
    header["load_s"] = load_s
    rows: list[BenchRow] = []
    total_runs = len(cfg.frames) * len(cfg.steps) * len(cfg.memories) * cfg.repeats
    done = 0
    base = cfg.options
    for frames in cfg.frames:
        traj = TrajectoryOptions(spec=cfg.traj, frames=frames)
        # warm-up: kernels, allocator, autotuning, prompt-embedding cache; one per memory kind, fewest steps
        t_warm = time.perf_counter()
        for _ in range(cfg.warmup):
            for mem in cfg.memories:
                try:
                    pipeline.render(cfg.image, traj, replace(base, memory=mem, steps=min(cfg.steps)),
                                    depth_file=cfg.depth_file)
                except MirageError as e:
                    logger.warning("warm-up (%s, %d frames) failed: %s", mem.value, frames, e)
        # warm-up time holds torch.compile's compile time when --compile is on (reported apart, never in a row)
        header.setdefault("warmup_s", {})[str(frames)] = time.perf_counter() - t_warm
        for steps in cfg.steps:
            for mem in cfg.memories:
                row = BenchRow(memory=mem.value, frames=frames, steps=steps)
                options = replace(base, memory=mem, steps=steps)
                for _ in range(cfg.repeats):
                    try:
                        res = pipeline.render(cfg.image, traj, options, depth_file=cfg.depth_file)
                    except (MirageError, torch.cuda.OutOfMemoryError) as e:
                        row.error = f"{type(e).__name__}: {e}"
                        break
                    rep = res.report
                    row.runs.append(
                        RunMeasure(
                            total_ms=rep.timing_ms["total"],
                            stages_ms={k: v for k, v in rep.timing_ms.items() if k not in ("total", "load")},
                            peak_vram_bytes=dict(rep.peak_vram_bytes),
                            peak_vram_extra_bytes=dict(rep.peak_vram_extra_bytes),
                            memory_bytes=[c["bytes"] for c in rep.chunks],
                            depth_frames=[c["depth_frames"] for c in rep.chunks],
                            scores={k: rep.scores.get(k) for k in SCORE_KEYS},
                            unstaged_ms=dict(rep.unstaged_ms),
                        )
                    )
                    done += 1
                    if progress:
                        progress("run", done, total_runs)
                rows.append(row)
    return BenchReport(BENCH_SCHEMA_VERSION, header, rows, compute_ratios(rows))
