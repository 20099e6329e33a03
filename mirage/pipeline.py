"""The render pipeline: the only module that knows the order of the stages.

image -> VAE encode + depth -> memory init -> for each chunk: read the memory at the chunk's poses (one batched
call) -> denoise -> decode -> depth of the new frames, aligned to the memory, revealed content written back ->
next chunk.

Chunks have ``4k + 1`` frames (Wan's VAE packs frame 0 alone, then groups of 4) and overlap by one frame: the last
frame of a chunk is the first, known, frame of the next.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import torch

from mirage import __version__
from mirage.camera import fov_x_from_intrinsics, scale_intrinsics
from mirage.errors import InputError, MirageError, RuntimeFailure
from mirage.holefill import push_pull_fill
from mirage.hub.lora import LoraSpec, check_loras, distill_lora
from mirage.memory.types import MemoryKind, MemoryRead
from mirage.precision import Fp8Mode, apply_fp8, check_fp8
from mirage.report import REPORT_SCHEMA_VERSION, ChunkReport, RunReport, StageTimer, sha256_file
from mirage.sampling import (
    FLOW_SHIFT_BY_RESOLUTION,
    SamplingProfile,
    SamplingSettings,
    check_sampling_options,
    resolve_sampling,
)
from mirage.trajectory.types import Trajectory

logger = logging.getLogger("mirage")


class DenoiserKind(str, Enum):
    """What turns the memory's reads into frames."""

    VACE = "vace"  # Wan 2.1 VACE, conditioned on the reads
    NONE = "none"  # preview: decode the reads directly (holes filled by push-pull or left visible)


class OffloadMode(str, Enum):
    """CPU offload for small GPUs."""

    NONE = "none"  # everything resident on the device
    MODEL = "model"  # each model on the device only while it runs
    SEQUENTIAL = "sequential"  # submodules streamed to the device (slowest, least VRAM)


#: Per-progress-event callback: (what, done, total). ``what`` is "chunk" or "step".
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RenderConfig:
    """Everything that decides how a render runs (not what it renders). Serialised into the report."""

    preset: str = "wan-vace-1.3b"  # model preset (mirage.hub.Preset): wan-vace-1.3b, wan-vace-14b, preview, tiny
    overrides: tuple[tuple[str, str], ...] = ()  # (component, Hub id or local folder) pairs: vae, transformer, ...
    denoiser: DenoiserKind = DenoiserKind.VACE  # NONE = preview without a generator
    memory: MemoryKind = MemoryKind.LATENT  # the latent cache (mirage) or the RGB point cloud (baseline)
    profile: SamplingProfile = SamplingProfile.STANDARD  # where unset sampling values come from (mirage.sampling):
    #                          the model maintainers' defaults, or FAST (20 steps, guidance off) for previews/distilled
    steps: int | None = None  # denoising steps; None = the profile's (standard 50, fast 20)
    guidance: float | None = None  # classifier-free guidance; 1.0 = off; None = the profile's (standard 5.0, fast 1.0)
    seed: int = 0  # seed of the initial noise
    prompt: str = ""  # text prompt (empty by default: the memory carries the scene)
    negative_prompt: str | None = None  # used only when guidance > 1; None = the profile's (standard: Wan's own)
    flow_shift: float | None = None  # scheduler flow shift; None = by resolution (standard) or the repo's (fast)
    chunk_frames: int = 33  # frames per chunk, 4k + 1; chunks overlap by one frame
    size: tuple[int, int] | None = None  # output (width, height); None = the preset's pixel area at the image's aspect
    device: str = "cpu"  # torch device string; "auto" is resolved by the CLI, not here
    dtype: str = "float32"  # model dtype: float32, bfloat16 or float16
    offload: OffloadMode = OffloadMode.NONE  # CPU offload of the models
    hole_fill: bool = True  # preview only: fill holes of the reads (push-pull) instead of leaving them visible
    fov: float | None = None  # horizontal FoV in degrees of the input image (overrides the depth model's)
    intrinsics: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy in pixels of the input image
    vae_dtype: str = "float32"  # VAE dtype: float32 (as diffusers' Wan examples) or "model" (the model dtype)
    memory_phases: int = 1  # latent memory: 1, or 2 / 4 sub-stride phases per axis (polyphase: sharper reads,
    #                          phases**2 init encodes and tokens; see docs/fidelity.md)
    compile: bool = False  # torch.compile the transformer (first chunk pays the compile time)
    fp8: Fp8Mode = Fp8Mode.NONE  # FP8 transformer (Hopper GPUs): attention, or attention + linear layers
    write_back: bool = True  # write revealed content back into the memory after each chunk
    write_back_last: bool = False  # also after the last chunk (set when the memory is saved: --save-memory)
    keep_reads: bool = False  # also decode the memory reads (for --save-warped)
    loras: tuple[LoraSpec, ...] = ()  # LoRAs fused into the transformer at load (mirage.hub.lora; --lora SOURCE[:SCALE]);
    #                                   the DISTILLED profile adds the preset's step-distilled LoRA after these

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]


@dataclass(frozen=True)
class TrajectoryOptions:
    """How to resolve ``--traj`` for an image."""

    spec: str  # preset name, YAML file or camera file
    fmt: str = "auto"  # mirage.trajectory.TrajFormat value
    frames: int | None = None  # resample to this many frames
    fps: float | None = None  # override the frame rate
    scale: float = 1.0  # multiply imported translations
    start: str | None = None  # COLMAP: image that becomes frame 0


@dataclass
class RenderResult:
    """What a render produced (tensors on the CPU)."""

    frames: torch.Tensor  # (N, 3, H, W) float32 in [-1, 1]
    reads: torch.Tensor | None  # (N, 3, H, W) decoded memory reads, when ``keep_reads``
    trajectory: Trajectory
    image: torch.Tensor  # (3, H, W) the input image at the output size
    report: RunReport
    memory: object  # the SpatialMemory after the last write-back
    time_s: float = 0.0


# ----------------------------------------------------------------------------------------------------------------
# small pure helpers (tested directly)


def adjust_num_frames(num_frames: int, temporal_stride: int) -> int:
    """Round a frame count up to ``temporal_stride * k + 1`` (what a chunked Wan video needs)."""
    if temporal_stride <= 1:
        return num_frames
    k = max(1, math.ceil((num_frames - 1) / temporal_stride))
    return temporal_stride * k + 1


def plan_chunks(num_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Split ``num_frames`` into chunks of at most ``chunk_frames`` that overlap by one frame.

    Returns ``[(start, stop), ...]`` half-open ranges: chunk i+1 starts at chunk i's last frame. With a temporal
    stride of 4 every chunk length is 4k + 1 as long as ``num_frames`` and ``chunk_frames`` are.
    """
    if chunk_frames < 2:
        raise InputError(f"--chunk-frames: {chunk_frames} is fewer than 2")
    chunks = []
    start = 0
    while True:
        stop = min(start + chunk_frames, num_frames)
        chunks.append((start, stop))
        if stop >= num_frames:
            return chunks
        start = stop - 1


def output_size(image_wh: tuple[int, int], pixel_area: int, multiple: int) -> tuple[int, int]:
    """The output size: ``pixel_area`` pixels at the image's aspect ratio, both sides multiples of ``multiple``."""
    w, h = image_wh
    s = math.sqrt(pixel_area / (w * h))
    W = max(multiple, round(w * s / multiple) * multiple)
    H = max(multiple, round(h * s / multiple) * multiple)
    return int(W), int(H)


def dilate(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Binary dilation of (N, h, w) bool masks by a (2r+1)^2 square (max-pool; no host sync)."""
    if radius <= 0:
        return mask
    x = mask.float()[:, None]
    return (torch.nn.functional.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius) > 0)[:, 0]


# ----------------------------------------------------------------------------------------------------------------


#: Pixel area of the default output size per preset (the image's aspect ratio is kept, sides rounded to 16).
PIXEL_AREA = {
    "wan-vace-1.3b": 832 * 480,  # Wan 2.1 480p
    "wan-vace-14b": 832 * 480,
    "preview": 416 * 240,  # quarter area: a CPU preview in seconds (TAESD decodes ~0.3 s a frame here)
    "tiny": 112 * 64,  # tests
}
SIZE_MULTIPLE = 16  # VAE stride 8 x transformer patch 2


def check_config(c: RenderConfig) -> None:
    """Validate the settings of a render before anything loads (one-line InputError naming the option)."""
    try:
        torch.device(c.device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device: {c.device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if c.dtype not in ("float32", "bfloat16", "float16"):
        raise InputError(f"--dtype: {c.dtype!r} is not one of float32, bfloat16, float16")
    check_sampling_options(steps=c.steps, guidance=c.guidance, flow_shift=c.flow_shift)
    if c.chunk_frames < 5 or (c.chunk_frames - 1) % 4:
        raise InputError(f"--chunk-frames: {c.chunk_frames} must be 4k + 1 and at least 5 (e.g. 33 or 81)")
    if torch.device(c.device).type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device: {c.device} asked for, but torch sees no CUDA device; use --device cpu")
    if c.size is not None and (c.size[0] % SIZE_MULTIPLE or c.size[1] % SIZE_MULTIPLE or min(c.size) < SIZE_MULTIPLE):
        raise InputError(f"--size: {c.size[0]}x{c.size[1]} must be multiples of {SIZE_MULTIPLE} (e.g. 832x480)")
    if c.memory_phases not in (1, 2, 4):
        raise InputError(f"--memory-phases: {c.memory_phases} is not 1, 2 or 4 (sub-stride phases per axis)")
    check_loras(c.loras)
    if (c.loras or c.profile is SamplingProfile.DISTILLED) and c.denoiser is not DenoiserKind.VACE:
        raise InputError("--lora/--distilled: LoRAs apply to the video transformer; --denoiser none has none")
    if c.profile is SamplingProfile.DISTILLED:
        distill_lora(c.preset)  # the preset must name one (none is published for 1.3B): one line now, not at load
    if c.memory_phases > 1 and c.memory is not MemoryKind.LATENT:
        raise InputError(f"--memory-phases {c.memory_phases}: polyphase is a latent-memory setting; use --memory latent")
    if c.offload is not OffloadMode.NONE and torch.device(c.device).type != "cuda":
        raise InputError(f"--offload {c.offload.value}: offloading moves models between CPU and GPU; it needs --device cuda")
    if c.fp8 is not Fp8Mode.NONE:
        if c.denoiser is not DenoiserKind.VACE:
            raise InputError(f"--fp8 {c.fp8.value}: FP8 applies to the video transformer; --denoiser none has none "
                             "(drop --fp8)")
        if c.offload is not OffloadMode.NONE:
            raise InputError(f"--fp8 {c.fp8.value} with --offload {c.offload.value}: the FP8 weights are made on the "
                             "GPU and cannot be offloaded; drop one of the two")
        check_fp8(c.fp8, torch.device(c.device), c.torch_dtype)


class Pipeline:
    """Loads the models of a preset once and renders any number of (image, trajectory) pairs.

    Args:
        config: how to render.
        progress: optional callback for chunk/step progress (the CLI draws bars from it).
        components: already loaded components (``mirage.hub.Components``; e.g. random weights for the benchmark);
            default: loaded from ``config.preset`` and ``config.overrides``.
    """

    def __init__(self, config: RenderConfig, *, progress: ProgressCallback | None = None, components=None):
        from mirage import hub
        from mirage.denoise import Denoiser

        check_config(config)
        self.config = config
        self.progress = progress
        self.offload_depth = False  # set by --offload: the depth model visits the GPU only while it runs
        self._offloaded_depth = None
        self.device = torch.device(config.device)
        self.dtype = config.torch_dtype
        self.load_timer = StageTimer(self.device)
        with self.load_timer.stage("load"):
            if components is None:
                components = hub.load_components(
                    config.preset,
                    overrides=dict(config.overrides),
                    # offloading: weights are loaded on the CPU and visit the GPU while they run
                    device=self.device if config.offload is OffloadMode.NONE else torch.device("cpu"),
                    dtype=self.dtype,
                    vae_dtype=torch.float32 if config.vae_dtype == "float32" else self.dtype,
                    need_denoiser=config.denoiser is DenoiserKind.VACE,
                    need_depth=True,
                    loras=render_loras(config),  # fused before FP8, offload and compile below
                )
            elif render_loras(config):  # given components (random-weight benchmark): fuse into their transformer
                components.loras = hub.fuse_loras(components.transformer, render_loras(config))
            self.components = components
            self.vae = components.vae
            self.denoiser = None
            if config.denoiser is DenoiserKind.VACE:
                self.denoiser = Denoiser(components.transformer, components.scheduler_config)
                if config.flow_shift is not None or config.profile is not SamplingProfile.FAST:
                    from mirage.denoise import make_scheduler

                    # a shift will be applied: a scheduler that cannot take one fails here, in one line, not mid-render
                    make_scheduler(components.scheduler_config, config.flow_shift or FLOW_SHIFT_BY_RESOLUTION[0][2])
                fp8 = apply_fp8(components.transformer, config.fp8)
                if fp8.mode is not Fp8Mode.NONE:
                    logger.info("--fp8 %s: %d self-attention modules on cuDNN FP8 attention, %d linear layers in "
                                "FP8", fp8.mode.value, fp8.attention_modules, fp8.linear_layers)
                self._apply_offload()
                if config.compile:
                    self.denoiser.transformer = torch.compile(self.denoiser.transformer, fullgraph=False)
        self.preset = str(getattr(components.preset, "value", components.preset))
        self._prompt_cache: dict[tuple[str, str | None], tuple] = {}

    def _apply_offload(self) -> None:
        """Model offload: the transformer lives on the CPU and visits the GPU for each chunk's denoising."""
        if self.config.offload is OffloadMode.NONE:
            return
        from mirage.offload import apply_offload

        apply_offload(self, self.config.offload)

    # ------------------------------------------------------------------------------------------------------------
    @property
    def model_ids(self) -> dict:
        """component -> {"id", "revision", "class", "local"} (for the run report); ``lora_<i>``: each fused LoRA."""
        classes = dict(self.components.classes)
        classes["vae"] = type(self.vae.model).__name__
        if self.components.transformer is not None:
            classes["transformer"] = type(self.components.transformer).__name__
        if self.components.scheduler_config:
            classes["scheduler"] = self.components.scheduler_config.get("_class_name")
        out = {}
        for k, r in self.components.resolved.items():
            out[k] = {"id": r.source + (f"/{r.subfolder}" if r.subfolder else ""), "revision": r.revision,
                      "class": classes.get(k), "local": r.local}
        for i, lo in enumerate(getattr(self.components, "loras", ())):  # fused into the transformer, in this order
            hub_id = LoraSpec(lo.source, lo.scale).hub()
            out[f"lora_{i}"] = {"id": lo.source if hub_id is None else f"{hub_id[0]}:{hub_id[2]}",
                                "revision": None if hub_id is None else hub_id[1],
                                "class": f"LoRA fused at scale {lo.scale:g} into {lo.layers} layers",
                                "local": hub_id is None}
        return out

    @property
    def vae_id(self) -> str:
        r = self.components.resolved.get("vae")
        return r.describe() if r is not None else "vae"

    def depth_model(self):
        """The depth estimator (loaded on first use; kept on the CPU between uses when offloading)."""
        if self.components.depth is None:
            raise InputError("depth: this preset has no depth model; pass --depth FILE")
        if self.offload_depth:
            if self._offloaded_depth is None:
                from mirage.offload import OffloadedDepth

                self._offloaded_depth = OffloadedDepth(self.components.depth(), self.device)
            return self._offloaded_depth
        return self.components.depth()

    def prompt_embeds(self, prompt: str, negative: str | None) -> tuple:
        """(prompt_embeds (L, D), negative (L, D) or None), from the on-disk cache when possible."""
        key = (prompt, negative)
        if key not in self._prompt_cache:
            from mirage.hub import cache_dir
            from mirage.prompt import PromptCache

            if self.components.prompt_embeds is not None:  # random-weight benchmark components
                pe = self.components.prompt_embeds.to(self.device, self.dtype)
                self._prompt_cache[key] = (pe, pe if negative is not None else None)
                return self._prompt_cache[key]
            te = self.components.resolved["text_encoder"]
            cache = PromptCache(cache_dir() / "prompts", te.describe(), te.revision)
            prompts = [prompt] + ([negative] if negative is not None else [])
            embeds = cache.encode(prompts, self.components.text_encoder, self.components.tokenizer,
                                  device=self.device, dtype=self.dtype)
            self._prompt_cache[key] = (embeds[0], embeds[1] if negative is not None else None)
        return self._prompt_cache[key]

    # ------------------------------------------------------------------------------------------------------------
    def render(
        self,
        image_path: str | Path,
        traj: TrajectoryOptions,
        *,
        depth_file: str | Path | None = None,
        memory_from: str | Path | None = None,
    ) -> RenderResult:
        """Render one video. See the module docstring for the order of the stages.

        Raises:
            MirageError: bad input (before any heavy work); RuntimeFailure: CUDA out of memory, naming the stage.
        """
        self._stage = "start"
        try:
            return self._render(image_path, traj, depth_file=depth_file, memory_from=memory_from)
        except torch.cuda.OutOfMemoryError:
            c = self.config
            size = f"{c.size[0]}x{c.size[1]}" if c.size else "the default size"
            raise RuntimeFailure(
                f"{Path(image_path).name}: CUDA out of memory in stage '{self._stage}' at {size}, "
                f"{c.chunk_frames} frames per chunk",
                hint="try --offload model (or sequential), fewer --chunk-frames, or a smaller --size",
            ) from None

    @torch.no_grad()
    def _render(self, image_path, traj: TrajectoryOptions, *, depth_file=None, memory_from=None) -> RenderResult:
        import time

        from mirage import depth as depth_mod
        from mirage.trajectory import load_trajectory
        from mirage.video import read_image, resize_image

        c = self.config
        t_start = time.perf_counter()
        timer = StageTimer(self.device, on_stage=self._on_stage)
        warnings: list[str] = []
        vae = self.vae

        # --- inputs, validated before any heavy work (the same checks batch.check_input runs before models load)
        image_path = Path(image_path)
        plan = plan_inputs(image_path, traj, c, self.preset, depth_file=depth_file)
        src_wh, (W, H) = plan.source_size, plan.size
        warnings.extend(plan.warnings)
        sampling = plan.sampling  # steps, guidance, negative prompt, flow shift at this size
        image = resize_image(read_image(image_path), W, H).to(self.device)  # (3, H, W) [-1, 1]

        # --- depth of the input image
        with timer.stage("depth"):
            if depth_file is not None:
                # a depth file is in the coordinates of the image as given: read it there, resize it like the image
                dres = _resize_depth_result(plan.depth, W, H)
            else:
                # Depth Pro's metric scale follows the focal length: give it the one the render will use, if known
                fov_hint = None if plan.K_known is None else float(fov_x_from_intrinsics(plan.K_known, src_wh[0]))
                dres = self.depth_model().estimate(image, fov_x_deg=fov_hint)
        warnings.extend(dres.warnings)
        depth = dres.depth.to(self.device, torch.float32)  # (H, W) z, scene units
        valid = dres.valid.to(self.device)
        if not bool(valid.any()):
            raise InputError(f"depth of {image_path}: no valid pixel; check --depth or the depth model")
        scene_depth = float(depth[valid].median())

        # --- intrinsics and trajectory, both for the image as given, then following its resize to (W, H)
        if plan.camera_traj is not None:
            traj_src, k_source = plan.camera_traj, plan.k_source
        else:
            K_src, k_source, k_warn = depth_mod.resolve_intrinsics(
                *src_wh, fov_x_deg=c.fov, intrinsics=c.intrinsics, predicted_fov_x_deg=dres.fov_x_deg
            )
            warnings.extend(k_warn)
            traj_src = load_trajectory(
                traj.spec, width=src_wh[0], height=src_wh[1], K=K_src, scene_depth=scene_depth, fmt=traj.fmt,
                frames=traj.frames, fps=traj.fps, scale=traj.scale, start=traj.start,
            )
        traj_t = replace(traj_src, K=scale_intrinsics(traj_src.K, W / src_wh[0], H / src_wh[1]), width=W, height=H)
        K_img = traj_t.K[0]
        n_req = traj_t.num_frames
        stride_t = vae.temporal_stride if c.denoiser is DenoiserKind.VACE else 1
        n = adjust_num_frames(n_req, stride_t)
        if n != n_req:
            logger.info("frames: %d -> %d (a Wan video has 4k + 1 frames)", n_req, n)
            warnings.append(f"frames: {n_req} -> {n} (a Wan video has 4k + 1 frames)")
            traj_t = traj_t.resampled(n)
        K_all = traj_t.K.to(self.device, torch.float32)  # (N, 3, 3)
        w2c_all = traj_t.w2c.to(self.device, torch.float32)  # (N, 4, 4)
        c2w_all = traj_t.c2w.to(self.device, torch.float32)
        K_img = K_img.to(self.device, torch.float32)

        # --- encode the input image, build the memory
        with timer.stage("encode"):
            image_latents = vae.encode_image(image.to(vae.dtype))  # (C, h, w)
        with timer.stage("memory_init"):
            memory = self._make_memory(image, image_latents, depth, valid, K_img, c2w_all[0], stride_t, memory_from)
        init_report = getattr(memory, "init_report", None)
        if init_report is not None and getattr(init_report, "warning", None):
            warnings.append(init_report.warning)

        # --- chunks
        chunk_len = c.chunk_frames if c.denoiser is DenoiserKind.VACE else n
        chunks = plan_chunks(n, chunk_len)
        out_frames: list[torch.Tensor] = []
        out_reads: list[torch.Tensor] = []
        chunk_reports: list[ChunkReport] = []
        prompt_embeds = negative_embeds = None
        if c.denoiser is DenoiserKind.VACE:
            prompt_embeds, negative_embeds = self.prompt_embeds(
                c.prompt, sampling.negative_prompt if sampling.guidance > 1 else None)
        known_frame = image  # (3, H, W): the chunk's first frame, already known
        known_latent = image_latents  # (C, h, w)
        generator = torch.Generator(device="cpu").manual_seed(c.seed)
        for ci, (a, b) in enumerate(chunks):
            F = b - a
            last = ci == len(chunks) - 1
            with timer.stage("memory_read"):
                read = memory.read(K_all[a:b], w2c_all[a:b])
            with timer.stage("conditioning"):
                read = _pin_first_frame(read, known_frame, known_latent)
            latents = None
            if c.denoiser is DenoiserKind.VACE:
                with timer.stage("conditioning"):
                    cond = self._conditioning(read)
                with timer.stage("denoise"):
                    latents = self.denoiser(
                        cond, prompt_embeds, negative_embeds, num_frames=F, height=H, width=W,
                        steps=sampling.steps, guidance=sampling.guidance, flow_shift=sampling.flow_shift,
                        generator=generator, callback=self._step_callback,
                    )
                with timer.stage("decode"):
                    frames = vae.decode(latents).float()  # (F, 3, H, W)
            else:
                with timer.stage("decode"):
                    lat = push_pull_fill(read.latents, read.holes) if c.hole_fill else read.latents
                    frames = vae.decode_images(lat).float()  # (F, 3, H, W): one image per frame
            if c.keep_reads:
                with timer.stage("decode_reads"):
                    decoded_reads = self._decoded_reads(read, F)
                    out_reads.append((decoded_reads if ci == 0 else decoded_reads[1:]).cpu())  # like the frames
            wstats = None
            if c.write_back and latents is not None and (not last or c.write_back_last):
                wstats = self._write_back(memory, read, frames, latents, K_all[a:b], c2w_all[a:b], timer)
                if wstats.warning:
                    warnings.append(f"chunk {ci}: {wstats.warning}")
            st = memory.stats()
            chunk_reports.append(
                ChunkReport(
                    index=ci, frames=(a, b - 1), latent_frames=int(read.latents.shape[0]),
                    hole_fraction=float(read.holes[1:].float().mean()) if read.holes.shape[0] > 1 else 0.0,
                    tokens=st.tokens, bytes=st.bytes,
                    added=wstats.added if wstats else 0, merged=wstats.merged if wstats else 0,
                    dropped=wstats.dropped if wstats else 0,
                    depth_scale=(float(statistics.median(wstats.scales)) if wstats and wstats.scales else None),
                    warnings=[wstats.warning] if wstats is not None and wstats.warning else [],
                )
            )
            out_frames.append((frames if ci == 0 else frames[1:]).cpu())  # chunks overlap by one frame
            if not last:
                known_frame = frames[-1]
                with timer.stage("encode"):
                    known_latent = vae.encode_image(known_frame.to(vae.dtype))
            if self.progress:
                self.progress("chunk", ci + 1, len(chunks))

        video = out_frames[0] if len(out_frames) == 1 else torch.cat(out_frames)  # (N, 3, H, W)
        reads = torch.cat(out_reads) if out_reads else None
        times = timer.times_ms()
        times["total"] = (time.perf_counter() - t_start) * 1e3
        times["load"] = self.load_timer.times_ms().get("load", 0.0)
        report = RunReport(
            schema_version=REPORT_SCHEMA_VERSION,
            mirage_version=__version__,
            inputs={
                "image": str(image_path), "image_sha256": sha256_file(image_path),
                "trajectory": traj.spec,
                "trajectory_sha256": sha256_file(traj.spec) if Path(traj.spec).is_file() else None,
                "depth_file": str(depth_file) if depth_file else None,
                "depth_file_sha256": sha256_file(depth_file) if depth_file else None,
                "memory_from": str(memory_from) if memory_from else None,
                "intrinsics_source": str(getattr(k_source, "value", k_source)),
            },
            models=self.model_ids,
            settings=_config_dict(c),
            sampling=self.sampling_record(sampling) if c.denoiser is DenoiserKind.VACE else None,
            device=str(self.device),
            dtype=c.dtype,
            frames=int(video.shape[0]),
            fps=traj_t.fps,
            width=W,
            height=H,
            timing_ms=times,
            timing_method="cuda-events" if self.device.type == "cuda" else "perf_counter",
            peak_vram_bytes=self._peak_vram(timer),
            peak_vram_extra_bytes=dict(timer.peak_extra_bytes),
            memory={"kind": c.memory.value, **_stats_dict(memory.stats())},
            chunks=[cr.__dict__ for cr in chunk_reports],
            warnings=warnings,
            outputs={},
        )
        return RenderResult(frames=video, reads=reads, trajectory=traj_t, image=image.float().cpu(), report=report,
                            memory=memory, time_s=times["total"] / 1e3)

    # ------------------------------------------------------------------------------------------------------------
    def _memory_encoder(self, stride_t: int):
        """(F, 3, H, W) -> (T, C, h, w): how the RGB memory encodes its renders."""
        return self.vae.encode_video if stride_t > 1 else self.vae.encode_images

    def _make_memory(self, image, image_latents, depth, valid, K_img, c2w0, stride_t, memory_from):
        from mirage.memory import MemoryConfig, create_memory, load_memory

        c = self.config
        vae = self.vae
        if memory_from is not None:
            mem = load_memory(
                memory_from, latent_channels=vae.latent_channels, stride=vae.spatial_stride,
                temporal_stride=stride_t, model_id=self.vae_id, encode_video=self._memory_encoder(stride_t),
                device=self.device,
            )
            saved_hw = tuple(getattr(mem, "image_size", None) or mem.points.image_size)
            if saved_hw != tuple(image.shape[-2:]):
                raise InputError(f"--memory-from {memory_from}: saved for {saved_hw[1]}x{saved_hw[0]} images, this render "
                                 f"is {image.shape[-1]}x{image.shape[-2]}; pass --size {saved_hw[1]}x{saved_hw[0]}")
            if c.memory_phases > 1:
                logger.warning("--memory-phases applies when a memory is built; the loaded memory keeps its own")
            if mem.kind is not c.memory:
                raise InputError(f"--memory-from {memory_from}: holds a {mem.kind.value} memory, but --memory is "
                                 f"{c.memory.value}; pass --memory {mem.kind.value}")
            return mem
        depth_in = torch.where(valid, depth, torch.full_like(depth, float("nan")))
        config, phase_latents = MemoryConfig(), None
        if c.memory_phases > 1:
            from mirage.memory import SplatMode, encode_phases

            # polyphase reads pick the nearest-centre token (a bilinear blend of phases is a blur: docs/fidelity.md)
            config = MemoryConfig(phases=c.memory_phases, splat=SplatMode.CLOSEST)
            phase_latents = encode_phases(vae, image.to(vae.dtype), c.memory_phases)
        return create_memory(
            c.memory, image=image.float(), latents=image_latents, depth=depth_in, K=K_img, c2w=c2w0,
            stride=vae.spatial_stride, temporal_stride=stride_t, config=config,
            encode_video=self._memory_encoder(stride_t), model_id=self.vae_id, dtype=vae.dtype, device=self.device,
            phase_latents=phase_latents,
        )

    def _conditioning(self, read: MemoryRead):
        from mirage import denoise

        if read.pixel_holes is not None:
            # the RGB baseline: its render (0 in holes) was VAE-encoded by the read; VACE packs the pixel mask
            return denoise.conditioning_from_render(self.vae, read.latents, read.pixel_holes)
        return denoise.conditioning_from_latents(self.vae, read.latents, read.holes, num_frames=self._frames_of(read))

    def _frames_of(self, read: MemoryRead) -> int:
        return self.vae.num_pixel_frames(int(read.latents.shape[0]))

    def _decoded_reads(self, read: MemoryRead, F: int) -> torch.Tensor:
        """(F, 3, H, W) what conditioned the chunk: the RGB render, or the decoded latent reads held per group."""
        if read.rgb is not None:
            return read.rgb.float()
        imgs = self.vae.decode_images(read.latents).float()  # (T, 3, H, W)
        if imgs.shape[0] == F:
            return imgs
        from mirage.memory import latent_frame_indices

        idx = latent_frame_indices(F, self.vae.temporal_stride)
        group = torch.searchsorted(torch.tensor(idx), torch.arange(F), right=False).clamp(max=len(idx) - 1)
        return imgs[group.to(imgs.device)]

    def _write_back(self, memory, read: MemoryRead, frames, latents, K, c2w, timer: StageTimer):
        idx = memory.write_frame_indices(frames.shape[0])
        # the generated frames' cameras are known exactly: give their FoV to models that use one (Depth Pro)
        fov = float(fov_x_from_intrinsics(K[idx[0]], frames.shape[-1]))
        with timer.stage("write_depth"):
            depth_new = self.depth_model().estimate_batch(frames[idx].to(self.dtype), fov_x_deg=fov)  # (T, H, W)
        with timer.stage("memory_write"):
            region = dilate(read.holes, 1)  # (T, h, w): revealed cells, dilated by one token
            return memory.write(frames=frames, latents=latents, depth=depth_new, K=K, c2w=c2w, region=region)

    def sampling_record(self, s: SamplingSettings) -> dict:
        """The report's ``sampling``: the settings the denoiser used, the flow shift resolved to a number (the
        scheduler config's where ``s.flow_shift`` is None) and the negative prompt only where guidance uses it."""
        shift = s.flow_shift if s.flow_shift is not None else (self.components.scheduler_config or {}).get("flow_shift")
        return {
            "profile": s.profile.value, "steps": s.steps, "guidance": s.guidance,
            "negative_prompt": s.negative_prompt if s.guidance > 1 else None,
            "flow_shift": shift, "flow_shift_source": s.flow_shift_source,
        }

    def _on_stage(self, name: str) -> None:
        self._stage = name

    def _step_callback(self, step: int, total: int) -> None:
        if self.progress:
            self.progress("step", step, total)

    def _peak_vram(self, timer: StageTimer) -> dict:
        if self.device.type != "cuda":
            return {}
        out = dict(timer.peak_bytes)
        out["load"] = self.load_timer.peak_bytes.get("load", 0)
        out["overall"] = max(out.values()) if out else 0
        return out


@dataclass(frozen=True)
class InputPlan:
    """What can be known about one render's inputs without any model (checked before models load).

    Attributes:
        source_size: (width, height) of the image file; size: (W, H) of the video.
        camera_traj: the camera file's trajectory at the image's own size (None for presets, which need the
            scene depth and are resolved after the depth estimate).
        K_known: (3, 3) intrinsics of the image as given when known before depth (``--intrinsics``/``--fov``, or a
            camera file's frame 0); None when the depth model's predicted FoV (or the default) will decide.
        k_source: where ``K_known`` came from. depth: the ``--depth`` file, read at the image's size.
        sampling: the denoiser's settings at this size (:func:`mirage.sampling.resolve_sampling`).
    """

    source_size: tuple[int, int]
    size: tuple[int, int]
    camera_traj: Trajectory | None
    K_known: torch.Tensor | None
    k_source: str
    depth: object | None
    warnings: tuple[str, ...]
    sampling: SamplingSettings


def plan_inputs(image_path: Path, traj: TrajectoryOptions, config: RenderConfig, preset: str, *,
                depth_file: str | Path | None = None) -> InputPlan:
    """Validate a render's inputs and resolve what needs no model (image header, output size, camera file,
    user intrinsics, depth file). Raises a one-line :class:`MirageError` on bad input."""
    from mirage import depth as depth_mod
    from mirage.trajectory import load_trajectory
    from mirage.video import image_size

    c = config
    src_wh = image_size(image_path)
    W, H = c.size if c.size is not None else output_size(src_wh, PIXEL_AREA.get(preset, 832 * 480), SIZE_MULTIPLE)
    warnings: list[str] = []
    if (W, H) != tuple(src_wh):
        logger.info("image %s: %dx%d -> %dx%d (the model's size)", image_path.name, *src_wh, W, H)
        stretch = (W / H) / (src_wh[0] / src_wh[1])
        if abs(stretch - 1) > 0.02:
            warnings.append(f"image {image_path.name}: {src_wh[0]}x{src_wh[1]} -> {W}x{H} changes the aspect ratio by "
                            f"{100 * (stretch - 1):+.0f}% (cameras follow the stretch); pass a --size of the image's "
                            "aspect to avoid it")
            logger.warning("%s", warnings[-1])
    K_user, k_source = None, ""
    if c.fov is not None or c.intrinsics is not None:
        K_user, k_source, k_warn = depth_mod.resolve_intrinsics(*src_wh, fov_x_deg=c.fov, intrinsics=c.intrinsics)
        warnings.extend(k_warn)
    # resolves presets too (with default K and unit scene depth), so a bad preset fails here, before any model
    first = load_trajectory(traj.spec, width=src_wh[0], height=src_wh[1], K=K_user, fmt=traj.fmt, frames=traj.frames,
                            fps=traj.fps, scale=traj.scale, start=traj.start)
    camera_traj, K_known = None, K_user
    if not first.source.startswith("preset:"):  # an imported camera file knows the input camera
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
    sampling = sampling_settings(c, int(W), int(H))
    if c.denoiser is DenoiserKind.VACE and sampling.guidance == 1.0 and c.negative_prompt:
        warnings.append("--negative-prompt is unused with guidance 1.0 (off); pass --guidance > 1 to use it")
        logger.warning("%s", warnings[-1])
    return InputPlan(tuple(src_wh), (int(W), int(H)), camera_traj, K_known, str(getattr(k_source, "value", k_source)),
                     dres, tuple(warnings), sampling)


def sampling_settings(config: RenderConfig, width: int, height: int) -> SamplingSettings:
    """The denoiser settings of a render at ``width`` x ``height``: the config's explicit values, else its
    profile's (:func:`mirage.sampling.resolve_sampling`)."""
    c = config
    return resolve_sampling(c.profile, width, height, steps=c.steps, guidance=c.guidance,
                            negative_prompt=c.negative_prompt, flow_shift=c.flow_shift)


def _pin_first_frame(read: MemoryRead, frame: torch.Tensor, latent: torch.Tensor) -> MemoryRead:
    """The first frame of a chunk is known (the input image, or the previous chunk's last frame): its latent and
    pixels replace the read there, and it has no holes."""
    lat = read.latents.clone()
    lat[0] = latent.to(lat.dtype)
    holes = read.holes.clone()
    holes[0] = False
    rgb, pix = read.rgb, read.pixel_holes
    if rgb is not None and pix is not None:
        rgb = rgb.clone()
        rgb[0] = frame.to(rgb.dtype)
        pix = pix.clone()
        pix[0] = False
    return replace(read, latents=lat, holes=holes, rgb=rgb, pixel_holes=pix)


def _resize_depth_result(dres, width: int, height: int):
    """A DepthResult resized to (width, height): nearest neighbour, so depth edges and the valid mask stay sharp."""
    if tuple(dres.depth.shape) == (height, width):
        return dres
    d = torch.nn.functional.interpolate(dres.depth[None, None].float(), size=(height, width), mode="nearest-exact")[0, 0]
    v = torch.nn.functional.interpolate(dres.valid[None, None].float(), size=(height, width), mode="nearest-exact")[0, 0]
    return replace(dres, depth=d, valid=v > 0.5)


def _stats_dict(st) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in st.__dict__.items()}


def render_loras(c: RenderConfig) -> tuple[LoraSpec, ...]:
    """The LoRAs a render fuses: ``c.loras``, then the preset's step-distilled LoRA with the DISTILLED profile."""
    return c.loras + ((distill_lora(c.preset),) if c.profile is SamplingProfile.DISTILLED else ())


def _config_dict(c: RenderConfig) -> dict:
    out = {}
    for k, v in c.__dict__.items():
        out[k] = v.value if isinstance(v, Enum) else (list(v) if isinstance(v, tuple) else v)
    return out


__all__ = [
    "DenoiserKind", "OffloadMode", "RenderConfig", "SamplingProfile", "sampling_settings", "TrajectoryOptions",
    "RenderResult", "Pipeline",
    "adjust_num_frames", "plan_chunks", "output_size", "dilate", "MirageError", "RuntimeFailure",
]
