"""The render pipeline: the only module that knows the order of the stages.

image -> VAE encode + depth -> memory init (a :class:`World`) -> for each chunk (:meth:`World.step`): read the
memory at the chunk's poses (one batched call) -> denoise -> decode -> depth of the new frames, aligned to the
memory, revealed content written back -> next chunk.

Chunks have ``4k + 1`` frames (Wan's VAE packs frame 0 alone, then groups of 4) and overlap by one frame: the last
frame of a chunk is the first, known, frame of the next. :meth:`Pipeline.render` moves a world along a whole
trajectory; :meth:`Pipeline.world` hands the world to a caller (an agent, a notebook) that moves it chunk by chunk.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mirage.camera import fov_x_from_intrinsics, scale_intrinsics
from mirage.config import (
    DenoiserKind,
    PipelineConfig,
    RenderOptions,
    check_pipeline_config,
    check_render_options,
)
from mirage.depth.scene import resize_depth_result, scene_depth
from mirage.errors import InputError, RuntimeFailure
from mirage.holefill import push_pull_fill
from mirage.inputs import InputPlan, TrajectoryOptions, check_input, with_profile_warning
from mirage.memory.types import MemoryKind, MemoryRead
from mirage.offload import OffloadMode, apply_offload, offload_denoiser
from mirage.precision import Fp8Mode, apply_fp8
from mirage.report import ChunkReport, RunReport, Stage, StageTimer, build_report, stats_dict
from mirage.sampling import SamplingSettings
from mirage.scores import FrameScores, chunk_scores, read_groups, video_revisits, video_scores
from mirage.trajectory.types import Trajectory
from mirage.video import HostFrames
from mirage.world import ChunkResult, World, check_sees_memory, dilate, pin_first_frame, plan_chunks

logger = logging.getLogger("mirage")

#: Per-progress-event callback: (what, done, total). ``what`` is "chunk" or "step".
ProgressCallback = Callable[[str, int, int], None]



@dataclass
class RenderResult:
    """What a render produced (tensors on the CPU)."""

    frames: torch.Tensor  # (N, 3, H, W) float32 in [-1, 1]; page-locked when rendered on CUDA (see _host_frames)
    reads: torch.Tensor | None  # (N, 3, H, W) decoded memory reads, when ``keep_reads``
    trajectory: Trajectory
    image: torch.Tensor  # (3, H, W) the input image at the output size
    report: RunReport
    memory: object  # the SpatialMemory after the last write-back
    time_s: float = 0.0


class Pipeline:
    """Loads the models of a preset once and renders any number of videos.

    Args:
        config: what is fixed while the models are loaded (:class:`mirage.config.PipelineConfig`).
        progress: optional callback for chunk/step progress (the CLI draws bars from it).
        components: already loaded components (``mirage.hub.Components``; e.g. random weights for the benchmark);
            default: loaded from ``config.preset`` and ``config.overrides``.
    """

    def __init__(self, config: PipelineConfig | None = None, *, progress: ProgressCallback | None = None,
                 components=None):
        from mirage import hub
        from mirage.denoise import Denoiser, make_scheduler

        config = config or PipelineConfig()
        check_pipeline_config(config)
        self.config = config
        self.progress = progress
        self.device = torch.device(config.device)
        self.dtype = config.torch_dtype
        self.load_timer = StageTimer(self.device)
        self._stage = "load"
        with self.load_timer.stage(Stage.LOAD):
            if components is None:
                components = hub.load_components(
                    config.preset, overrides=dict(config.overrides),
                    # offloading: weights are loaded on the CPU and visit the GPU while they run
                    device=self.device if config.offload is OffloadMode.NONE else torch.device("cpu"),
                    dtype=self.dtype, vae_dtype=config.torch_vae_dtype,
                    need_denoiser=config.denoiser is DenoiserKind.VACE, need_depth=True,
                    loras=config.fused_loras,  # fused before FP8, offload and compile below
                )
            elif config.fused_loras:  # given components (random-weight benchmark): fuse into their transformer
                components = replace(components, loras=hub.fuse_loras(components.transformer, config.fused_loras))
            components = apply_offload(components, config.offload, self.device)
            self.components = components
            self.vae = components.vae
            self.denoiser = None
            if config.denoiser is DenoiserKind.VACE:
                # a scheduler that cannot take a flow shift fails here, in one line, not mid-render
                make_scheduler(components.scheduler_config, 3.0)
                fp8 = apply_fp8(components.transformer, config.fp8)
                if fp8.mode is not Fp8Mode.NONE:
                    logger.info("--fp8 %s: %d self-attention modules on cuDNN FP8 attention, %d linear layers in "
                                "FP8", fp8.mode.value, fp8.attention_modules, fp8.linear_layers)
                denoiser = Denoiser(components.transformer, components.scheduler_config,
                                    space=components.vae.latent_space)
                if config.compile:
                    # diffusers' regional compilation: each repeated block class (WanTransformerBlock,
                    # WanVACETransformerBlock) is compiled once and reused by all its blocks: minutes less to compile
                    # than the whole model, a step 1.7% slower (H200, BENCHMARKS.md, fifth session)
                    denoiser.transformer.compile_repeated_blocks()
                self.denoiser = offload_denoiser(denoiser, config.offload, self.device)
            if self._compile_coders:
                self.vae.compile()  # the depth model is compiled when it loads (depth_model)
            self._freeze_gc()
        self.preset = str(getattr(components.preset, "value", components.preset))
        self._prompt_cache: dict[tuple[str, str | None], tuple] = {}
        self._rendered = False

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
        out = {k: {"id": r.source + (f"/{r.subfolder}" if r.subfolder else ""), "revision": r.revision,
                   "class": classes.get(k), "local": r.local} for k, r in self.components.resolved.items()}
        # fused into the transformer, in this order
        out.update({f"lora_{i}": lo.report_entry() for i, lo in enumerate(self.components.loras)})
        return out

    @property
    def vae_id(self) -> str:
        r = self.components.resolved.get("vae")
        return r.describe() if r is not None else "vae"

    def depth_model(self):
        """The depth estimator (loaded on first use)."""
        if self.components.depth is None:
            raise InputError("depth: this preset has no depth model; pass --depth FILE")
        model = self.components.depth()
        if self.config.offload is OffloadMode.NONE and self.device.type == "cuda":
            model.offload_fov_model()  # Depth Pro's FoV model on the GPU only while it predicts a FoV (~0.6 GB)
        if self._compile_coders:
            model.compile()
        return model

    @property
    def _compile_coders(self) -> bool:
        """``--compile`` compiles the VAE and the depth model too, unless they are offloaded (their weights then
        move between devices on every call, which a compiled graph would not follow)."""
        return self.config.compile and self.config.offload is OffloadMode.NONE

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

    def check_input(self, image: str | Path | torch.Tensor, traj: TrajectoryOptions | str | None,
                    options: RenderOptions | None = None, *, depth_file: str | Path | None = None,
                    memory_from: str | Path | None = None) -> InputPlan:
        """:func:`mirage.inputs.check_input` for this pipeline's preset and denoiser."""
        options = options or RenderOptions()
        check_render_options(options)
        plan = check_input(image, traj, options, preset=self.preset, denoiser=self.config.denoiser,
                           depth_file=depth_file, memory_from=memory_from)
        return with_profile_warning(plan, self.config, options)

    # ------------------------------------------------------------------------------------------------------------
    def render(self, image: InputPlan | str | Path | torch.Tensor, traj: TrajectoryOptions | str | None = None,
               options: RenderOptions | None = None, *, depth_file: str | Path | None = None,
               memory_from: str | Path | None = None) -> RenderResult:
        """Render one video along a trajectory.

        Args:
            image: an image file, a (3, H, W) float tensor in [-1, 1], or the :class:`InputPlan` that
                :meth:`check_input` (or :func:`mirage.inputs.check_input`) made of one (then ``traj``,
                ``depth_file`` and ``memory_from`` come from the plan).
            traj: the trajectory (preset name, camera file, or :class:`TrajectoryOptions`).
            options: per-video settings (default :class:`RenderOptions`).

        Raises:
            MirageError: bad input (before any heavy work); RuntimeFailure: CUDA out of memory, naming the stage.
        """
        options = options or RenderOptions()
        plan = with_profile_warning(image, self.config, options) if isinstance(image, InputPlan) else (
            self.check_input(image, traj, options, depth_file=depth_file, memory_from=memory_from))
        if plan.traj is None:
            raise InputError("render: no trajectory; pass traj (a preset name or camera file)")
        with self._oom_names_stage(plan, options):
            return self._render(plan, options)

    def world(self, image: str | Path | torch.Tensor, options: RenderOptions | None = None, *,
              depth_file: str | Path | None = None, memory_from: str | Path | None = None) -> World:
        """A :class:`World` of one image, at the input view, for a caller that moves it with :meth:`World.step`."""
        options = options or RenderOptions()
        plan = self.check_input(image, None, options, depth_file=depth_file, memory_from=memory_from)
        timer = StageTimer(self.device, on_stage=self._on_stage)
        with self._oom_names_stage(plan, options), torch.no_grad():
            image_t = plan.read_image(self.device)
            dres = self._depth_of(plan, image_t, timer)
            W, H = plan.size
            scene_depth(dres, plan.name).value()  # refuses a depth without a valid pixel
            K_src, _, k_warn = self._intrinsics(plan, options, dres)
            K = scale_intrinsics(K_src, W / plan.source_size[0], H / plan.source_size[1])
            encoded = self._encode_image(plan, options, image_t, timer, chunk_frames=options.chunk_frames)
            return self._open_world(plan, options, image_t, dres, K, torch.eye(4), timer,
                                    list(plan.warnings) + list(k_warn), encoded)

    def _freeze_gc(self) -> None:
        """With ``config.freeze_gc``: collect, then move every object alive to the garbage collector's permanent
        generation (``gc.freeze``), as inference servers do once their models are loaded. The loaded models are about
        0.55 M Python objects (1.3B preset with Depth Pro), and a full collection scans them all: 361 ms on the H200
        machine's host, 255 ms on a 2-core CPU, under 1 ms once frozen (BENCHMARKS.md, eighth session, run 5;
        ``scripts/gpu_gc.py``). One that started mid-render
        where the GPU waits for the host (reading the input, the write-back's waits) would hold the render up by as
        much; none did in the renders measured, so this is a guard, not a measured speed-up. Frozen objects are still
        freed by reference counting; only cycles among them are never collected. Called after loading and after the
        first render (the compile's objects, with ``compile``); its collection lands outside the timed render."""
        if self.config.freeze_gc:
            gc.collect()
            gc.freeze()

    # ------------------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _oom_names_stage(self, plan: InputPlan, options: RenderOptions) -> Iterator[None]:
        """CUDA out of memory inside the block becomes a RuntimeFailure naming the stage and what to try."""
        self._stage = "start"
        try:
            yield
        except torch.cuda.OutOfMemoryError:
            raise RuntimeFailure(
                f"{Path(plan.name).name}: CUDA out of memory in stage '{self._stage}' at {plan.size[0]}x{plan.size[1]}, "
                f"{options.chunk_frames} frames per chunk",
                hint="try --offload model (or sequential), fewer --chunk-frames, or a smaller --size",
            ) from None

    def _depth_of(self, plan: InputPlan, image: torch.Tensor, timer: StageTimer):
        """Depth of the input image at the video size (the ``--depth`` file, or the depth model)."""
        with timer.stage(Stage.DEPTH):
            if plan.depth is not None:
                # a depth file is in the coordinates of the image as given: read there, resized like the image
                return resize_depth_result(plan.depth, *plan.size)
            # Depth Pro's metric scale follows the focal length: give it the one the render will use, if known
            fov = None if plan.K_known is None else float(fov_x_from_intrinsics(plan.K_known, plan.source_size[0]))
            return self.depth_model().estimate(image, fov_x_deg=fov)

    def _intrinsics(self, plan: InputPlan, o: RenderOptions, dres):
        """(K (3, 3) of the image as given, its source, warnings): the user's, else the depth model's FoV."""
        from mirage import depth as depth_mod

        return depth_mod.resolve_intrinsics(*plan.source_size, fov_x_deg=o.fov, intrinsics=o.intrinsics,
                                            predicted_fov_x_deg=dres.fov_x_deg)

    def _encode_image(self, plan: InputPlan, options: RenderOptions, image: torch.Tensor, timer: StageTimer, *,
                      chunk_frames: int) -> _EncodedImage:
        """The image's latents for its memory (stage ``encode``): needs neither the camera nor the depth, so a render
        queues it before the host resolves the trajectory (docs/architecture.md, "The render's start")."""
        # a latent memory built here keeps every latent slot of a chunk (docs/memory.md, "Latent slots") and, with
        # --memory-phases, every sub-stride shift; a loaded memory keeps its own, the RGB memory needs neither
        builds_latent = options.memory is MemoryKind.LATENT and plan.memory_from is None
        clip = chunk_frames if builds_latent and self._space.temporal_stride > 1 else 1
        phase_latents = None
        with timer.stage(Stage.ENCODE):
            img = image.to(self.vae.dtype)
            if builds_latent and options.memory_phases > 1:  # every sub-stride shift, (0, 0) included
                from mirage.memory import encode_phases

                phase_latents = encode_phases(self.vae, img, options.memory_phases, clip_frames=clip)
                slot_latents = phase_latents[(0, 0)]  # (C, h, w), or (T, C, h, w) with clip > 1
            elif clip > 1:  # the image as a static clip: slot 0 is its image latent, slots >= 1 the steady kind
                from mirage.memory import encode_static_clip

                slot_latents = encode_static_clip(self.vae, img[None], clip)[0]  # (T, C, h, w)
            else:
                slot_latents = self.vae.encode_image(img)  # (C, h, w)
        return _EncodedImage(slot_latents, phase_latents)

    def _open_world(self, plan: InputPlan, options: RenderOptions, image: torch.Tensor, dres, K: torch.Tensor,
                    c2w: torch.Tensor, timer: StageTimer, warnings: list[str], encoded: _EncodedImage) -> World:
        """Build the image's memory from its latents (:meth:`_encode_image`) and depth (valid pixels checked by
        :func:`scene_depth`): a World at the input view (K (3, 3), c2w (4, 4))."""
        warnings.extend(dres.warnings)
        depth = dres.depth.to(self.device, torch.float32)  # (H, W) z, scene units
        valid = dres.valid.to(self.device)
        slot_latents = encoded.slot_latents
        latents = slot_latents[0] if slot_latents.ndim == 4 else slot_latents
        K = K.to(self.device, torch.float32)
        with timer.stage(Stage.MEMORY_INIT):
            memory = self._make_memory(plan, options, image, slot_latents, depth, valid, K,
                                       c2w.to(self.device, torch.float32), phase_latents=encoded.phase_latents)
        init_report = getattr(memory, "init_report", None)
        if init_report is not None and getattr(init_report, "warning", None):
            warnings.append(init_report.warning)
        return World(self, plan, options, image, latents, memory, K, c2w, timer, warnings)

    @torch.no_grad()
    def _render(self, plan: InputPlan, options: RenderOptions) -> RenderResult:
        from mirage.video import mp4_rate

        t_start = time.perf_counter()
        timer = StageTimer(self.device, on_stage=self._on_stage)
        timer.start()
        warnings = list(plan.warnings)
        W, H = plan.size
        src_w, src_h = plan.source_size
        image = plan.read_image(self.device)  # (3, H, W) [-1, 1]
        dres = self._depth_of(plan, image, timer)
        dres = replace(dres, depth=dres.depth.to(self.device, torch.float32), valid=dres.valid.to(self.device))
        # known before the trajectory resolves (what every resolve gives, tests/test_traj_presets.py): the encode
        # below needs the chunk length
        n_req = plan.num_frames
        n = self._space.round_frames(n_req)
        # the GPU encodes the image while the host waits for the depth's median and resolves the trajectory: the
        # median's copy is queued before the encode, and waiting for it waits for the depth only
        pending = scene_depth(dres, plan.name)
        encoded = self._encode_image(plan, options, image, timer, chunk_frames=min(options.chunk_frames, n))
        median_depth = pending.value()

        # --- intrinsics and trajectory, both for the image as given, then following its resize to (W, H)
        if plan.camera_traj is not None:
            traj_src, k_source = plan.camera_traj, plan.k_source
        else:
            K_src, k_source, k_warn = self._intrinsics(plan, options, dres)
            warnings.extend(k_warn)
            traj_src = plan.preset.resolve(src_w, src_h, K_src, median_depth)  # the preset checked before loading
        traj = replace(traj_src, K=scale_intrinsics(traj_src.K, W / src_w, H / src_h), width=W, height=H)
        if n != n_req:
            logger.info("frames: %d -> %d (a Wan video has 4k + 1 frames)", n_req, n)
            warnings.append(f"frames: {n_req} -> {n} (a Wan video has 4k + 1 frames)")
            traj = traj.resampled(n)
        rate = float(mp4_rate(traj.fps))
        if rate != traj.fps:  # the MP4 stores a fraction: the report states the rate the file holds
            logger.info("fps: %.6g -> %.6g (the nearest rate an MP4 stores)", traj.fps, rate)
            traj = traj.with_fps(rate)
        K_all = traj.K.to(self.device, torch.float32)  # (N, 3, 3)
        w2c_all = traj.w2c.to(self.device, torch.float32)  # (N, 4, 4)
        world = self._open_world(plan, options, image, dres, K_all[0], traj.c2w[0], timer, warnings, encoded)

        # --- chunks: each one a step of the world
        chunks = plan_chunks(n, options.chunk_frames if self.denoiser is not None else n)
        c2w_all = traj.c2w.to(self.device, torch.float32)  # (N, 4, 4)
        host = HostFrames(n, H, W, self.device)  # each chunk's frames copied in as soon as they are decoded
        reads_out = []
        for ci, (a, b) in enumerate(chunks):
            last = ci == len(chunks) - 1
            first = 0 if ci == 0 else 1  # chunks overlap by one frame

            def keep(frames: torch.Tensor, start: int = a + first, skip: int = first) -> None:
                host.put(start, frames[skip:])

            res = self._run_chunk(world, K_all[a:b], w2c_all[a:b], c2w_all[a:b],
                                  write_back=options.write_back and (not last or options.write_back_last),
                                  span=(a, b - 1), check_sees=plan.traj if ci == 0 else None, on_frames=keep)
            world.K, world.w2c = K_all[b - 1], w2c_all[b - 1]
            if res.reads is not None:
                reads_out.append((res.reads if ci == 0 else res.reads[1:]).cpu())
            if self.progress:
                self.progress("chunk", ci + 1, len(chunks))
        video = host.wait()  # (N, 3, H, W) float32 on the host
        memory = world.memory
        revisits = None
        if options.scores:
            with timer.stage(Stage.SCORES):
                revisits = video_revisits(video, K_all, w2c_all, world._read_depth, median_depth, self.device)
        total_ms = (time.perf_counter() - t_start) * 1e3
        timer.stop()
        report = build_report(
            plan=plan, config=self.config, options=options, models=self.model_ids,
            sampling=self.sampling_record(plan.sampling) if self.denoiser is not None else None,
            frames=int(video.shape[0]), fps=traj.fps, timer=timer, load_timer=self.load_timer,
            total_ms=total_ms, memory_kind=options.memory.value,
            memory_stats=stats_dict(memory.stats()), chunks=world.chunks, warnings=world.warnings,
            k_source=str(getattr(k_source, "value", k_source)), scores=video_scores(world.scores, revisits),
        )
        if not self._rendered:  # the first render made the compile's objects (with compile), and its caches
            self._rendered = True
            self._freeze_gc()
        return RenderResult(frames=video, reads=torch.cat(reads_out) if reads_out else None, trajectory=traj,
                            image=image.float().cpu(), report=report, memory=memory, time_s=report.timing_ms["total"] / 1e3)

    def _run_chunk(self, world: World, K: torch.Tensor, w2c: torch.Tensor, c2w: torch.Tensor, *, write_back: bool,
                   span: tuple[int, int] | None = None, check_sees: TrajectoryOptions | None = None,
                   on_frames: Callable[[torch.Tensor], None] | None = None) -> ChunkResult:
        """One chunk of ``world``: read the memory at the F poses (K (F, 3, 3), w2c and c2w (F, 4, 4); pose 0 is the
        known frame's), generate, decode, write back. ``span``: the chunk's [first, last] frame of the whole video;
        ``check_sees``: refuse reads that see nothing of the input image (a trajectory that leaves the scene);
        ``on_frames``: called with the decoded frames (F, 3, H, W) as soon as they are queued, before the scores and
        the write-back (a render starts their copy to the host there)."""
        o, timer, vae = world.options, world.timer, self.vae
        n_frames = int(w2c.shape[0])
        H_W = world.image.shape[-2:]
        index = len(world.chunks)
        span = span or (world._frame_index, world._frame_index + n_frames - 1)
        if world._latent is None:  # the previous chunk's last frame, encoded only when a next chunk comes
            with timer.stage(Stage.ENCODE):
                world._latent = vae.encode_image(world._frame.to(vae.dtype))
        with timer.stage(Stage.MEMORY_READ):
            read = world.memory.read(K, w2c)
        world.note_missing_slots(int(read.latents.shape[0]))
        if check_sees is not None:
            check_sees_memory(read, check_sees, span[1])
        with timer.stage(Stage.CONDITIONING):
            read = pin_first_frame(read, world._frame, world._latent)
        latents = None
        if self.denoiser is not None:
            s = world.plan.sampling
            if world._embeds is None:
                world._embeds = self.prompt_embeds(o.prompt, s.negative_prompt if s.guidance > 1 else None)
            with timer.stage(Stage.CONDITIONING):
                cond = self._conditioning(read)
            with timer.stage(Stage.DENOISE):
                latents = self.denoiser(
                    cond, *world._embeds, num_frames=n_frames, height=int(H_W[0]), width=int(H_W[1]), steps=s.steps,
                    guidance=s.guidance, flow_shift=s.flow_shift, generator=world.generator,
                    callback=self._step_callback,
                )
            with timer.stage(Stage.DECODE):
                frames = vae.decode(latents).float()  # (F, 3, H, W)
        else:
            with timer.stage(Stage.DECODE):
                lat = push_pull_fill(read.latents, read.holes) if o.hole_fill else read.latents
                frames = vae.decode_images(lat).float()  # (F, 3, H, W): one image per frame
        if on_frames is not None:
            on_frames(frames)
        ts = self._space.temporal_stride  # the latent reads are made at pixel frames 0, ts, 2 ts, ..., F - 1
        reads = rows = None
        if self.denoiser is None and not o.keep_reads:
            reads = frames  # the preview's frames are its decoded reads (filled only in holes, which are not scored)
        elif o.scores or o.keep_reads:
            with timer.stage(Stage.DECODE_READS):
                reads = self._decoded_reads(read, ts, world._frame)
        if o.scores:
            with timer.stage(Stage.SCORES):
                rows = chunk_scores(frames, reads, read.holes, read.pixel_holes, read.depth, K, w2c, c2w, ts)
            if world.plan.traj is not None:  # a trajectory's render scores its revisits at the end (a World: not)
                world._read_depth.update({span[0] + k * ts: read.depth[k] for k in range(1, read.depth.shape[0])})
        wstats = None
        if write_back and latents is not None:
            wstats = self._write_back(world.memory, read, frames, latents, K, c2w, timer)
            if wstats.warning:
                world.warnings.append(f"chunk {index}: {wstats.warning}")
        st = world.memory.stats()
        # the chunk's one read-back of its scores (none with scores off: the report's scores are null)
        sc = world.scores.add_chunk(rows.tolist(), overlap=index > 0) if rows is not None else FrameScores()
        report = ChunkReport(
            index=index, frames=span, latent_frames=int(read.latents.shape[0]),
            hole_fraction=float(read.holes[1:].float().mean()) if read.holes.shape[0] > 1 else 0.0,
            tokens=st.tokens, bytes=st.bytes, added=wstats.added if wstats else 0,
            merged=wstats.merged if wstats else 0, dropped=wstats.dropped if wstats else 0,
            depth_scale=float(statistics.median(wstats.scales)) if wstats and wstats.scales else None,
            depth_frames=len(wstats.depth_views) if wstats else 0,
            warnings=[wstats.warning] if wstats is not None and wstats.warning else [], **sc.summary(),
        )
        world.chunks.append(report)
        world._frame, world._latent = frames[-1], None
        world._frame_index = span[1]
        return ChunkResult(frames=frames, reads=reads if o.keep_reads else None, report=report)

    # ------------------------------------------------------------------------------------------------------------
    @property
    def _space(self):
        """The memory's latent space: the VAE's, one latent per frame without the video model (the preview)."""
        space = self.vae.latent_space
        return space if self.denoiser is not None else space.per_frame()

    def _memory_encoder(self):
        """(F, 3, H, W) -> (T, C, h, w): how the RGB memory encodes its renders."""
        return self.vae.encode_video if self._space.temporal_stride > 1 else self.vae.encode_images

    def _make_memory(self, plan: InputPlan, o: RenderOptions, image, image_latents, depth, valid, K_img, c2w0, *,
                     phase_latents: dict | None = None):
        """The memory of the input view; ``image_latents``: (C, h, w), or (T, C, h, w) of a static clip (a latent
        memory keeps every slot); ``phase_latents``: with ``--memory-phases`` > 1, every shift's (encode_phases)."""
        from mirage.memory import MemoryConfig, create_memory, load_memory

        vae = self.vae
        space = replace(self._space, model_id=self.vae_id)
        if plan.memory_from is not None:
            mem = load_memory(plan.memory_from, space=space, encode_video=self._memory_encoder(), device=self.device)
            saved_hw = tuple(getattr(mem, "image_size", None) or mem.points.image_size)
            if saved_hw != tuple(image.shape[-2:]):
                raise InputError(f"--memory-from {plan.memory_from}: saved for {saved_hw[1]}x{saved_hw[0]} images, this "
                                 f"render is {image.shape[-1]}x{image.shape[-2]}; pass --size {saved_hw[1]}x{saved_hw[0]}")
            if o.memory_phases > 1:
                logger.warning("--memory-phases applies when a memory is built; the loaded memory keeps its own")
            if mem.kind is not o.memory:
                raise InputError(f"--memory-from {plan.memory_from}: holds a {mem.kind.value} memory, but --memory is "
                                 f"{o.memory.value}; pass --memory {mem.kind.value}")
            return mem
        depth_in = torch.where(valid, depth, torch.full_like(depth, float("nan")))
        config = MemoryConfig()
        if o.memory_phases > 1:
            from mirage.memory import SplatMode

            # polyphase reads interpolate between the phases nearest each cell centre (a tent of the token spacing;
            # a bilinear blend of all phases is a blur; measured in docs/fidelity.md)
            config = MemoryConfig(phases=o.memory_phases, splat=SplatMode.TENT)
        return create_memory(
            o.memory, image=image.float(), latents=image_latents, depth=depth_in, K=K_img, c2w=c2w0, space=space,
            config=config, encode_video=self._memory_encoder(), dtype=vae.dtype, device=self.device,
            phase_latents=phase_latents,
        )

    def _conditioning(self, read: MemoryRead):
        from mirage import denoise

        if read.pixel_holes is not None:
            # the RGB baseline: its render (0 in holes) was VAE-encoded by the read; VACE packs the pixel mask
            return denoise.conditioning_from_render(self.vae, read.latents, read.pixel_holes)
        return denoise.conditioning_from_latents(self.vae, read.latents, read.holes,
                                                 num_frames=self.vae.num_pixel_frames(int(read.latents.shape[0])))

    def _decoded_reads(self, read: MemoryRead, ts: int, known: torch.Tensor) -> torch.Tensor:
        """(F, 3, H, W) what conditioned the chunk: the RGB render, or the decoded latent reads (made at pixel
        frames 0, ts, 2 ts, ...) held over their groups. Slot 0 is the pinned known frame (``known``, (3, H, W)):
        its pixels stand for it, so only slots 1.. are decoded."""
        if read.rgb is not None:
            return read.rgb.float()
        imgs = self.vae.decode_images(read.latents[1:]).float()  # (T - 1, 3, H, W)
        imgs = torch.cat([known.to(imgs.device, imgs.dtype)[None], imgs])  # (T, 3, H, W)
        n_frames = self._space.num_pixel_frames(imgs.shape[0])  # ts == self._space.temporal_stride
        return imgs[read_groups(n_frames, ts, device=imgs.device)]

    def _write_back(self, memory, read: MemoryRead, frames, latents, K, c2w, timer: StageTimer):
        """Write what the chunk revealed into ``memory``. The memory asks for the depth of only the frames that add
        something (``WriteStats.depth_views``); those depth-model calls are timed as ``write_depth`` (paused out of
        ``memory_write``)."""
        # the generated frames' cameras are known exactly: give their FoV to models that use one (Depth Pro)
        fov = float(fov_x_from_intrinsics(K[memory.write_frame_indices(frames.shape[0])[0]], frames.shape[-1]))
        def depth_of(frame_indices: list[int]) -> torch.Tensor:  # (n, H, W) raw depth of those pixel frames
            with timer.stage(Stage.WRITE_DEPTH):  # the model loads here on first use (a render with --depth FILE)
                return self.depth_model().estimate_batch(frames[frame_indices].to(self.dtype), fov_x_deg=fov)

        with timer.stage(Stage.MEMORY_WRITE):
            region = dilate(read.holes, 1)  # (T, h, w): revealed cells, dilated by one token
            return memory.write(frames=frames, latents=latents, depth=depth_of, K=K, c2w=c2w, region=region)

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


@dataclass(frozen=True)
class _EncodedImage:
    """The input image's latents for its memory: ``slot_latents`` (C, h, w), or (T, C, h, w) with a latent slot per
    frame of a chunk; ``phase_latents`` {(dy, dx): the same} with --memory-phases > 1, else None."""

    slot_latents: torch.Tensor
    phase_latents: dict | None = None


__all__ = [
    "ChunkResult", "DenoiserKind", "InputPlan", "OffloadMode", "Pipeline", "PipelineConfig", "ProgressCallback",
    "RenderOptions", "RenderResult", "TrajectoryOptions", "World", "dilate", "plan_chunks",
]
