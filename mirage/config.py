"""Settings, split by lifetime (as diffusers splits ``from_pretrained`` from ``__call__``):

- :class:`PipelineConfig`: what is fixed when the models load (preset, device, dtypes, offload, precision,
  compile); frozen inside a :class:`~mirage.pipeline.Pipeline`;
- :class:`RenderOptions`: what changes per video (memory kind, sampling, seed, size, chunking, camera).

Each is validated once, early, by :func:`check_pipeline_config` / :func:`check_render_options` (one-line
:class:`~mirage.errors.InputError` naming the option, the value and the fix), before any input is read or model
loads. ``settings_dict`` serialises both into the run report's ``settings``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from enum import Enum

import torch

from mirage.dtypes import DType, VaeDType, parse_dtype, parse_vae_dtype
from mirage.errors import InputError
from mirage.hub.lora import LoraSpec, check_loras, distill_lora
from mirage.limits import MAX_ASPECT, MAX_OUTPUT_PIXELS, MAX_STEPS, echo
from mirage.memory.types import MemoryKind
from mirage.offload import OffloadMode
from mirage.precision import Fp8Mode, check_fp8
from mirage.sampling import SamplingProfile, SamplingSettings, check_sampling_options

#: Pixel area of the default output size per preset (the image's aspect ratio is kept, sides rounded to 16).
PIXEL_AREA = {
    "wan-vace-1.3b": 832 * 480,  # Wan 2.1 480p
    "wan-vace-14b": 832 * 480,
    "preview": 416 * 240,  # quarter area: a CPU preview in seconds (TAESD decodes ~0.3 s a frame here)
    "tiny": 112 * 64,  # tests
}
SIZE_MULTIPLE = 16  # VAE stride 8 x transformer patch 2


class DenoiserKind(str, Enum):
    """What turns the memory's reads into frames."""

    VACE = "vace"  # Wan 2.1 VACE, conditioned on the reads
    NONE = "none"  # preview: decode the reads directly (holes filled by push-pull or left visible)


@dataclass(frozen=True)
class PipelineConfig:
    """What is fixed when a :class:`~mirage.pipeline.Pipeline` loads its models. Serialised into the report."""

    preset: str = "wan-vace-1.3b"  # model preset (mirage.hub.Preset): wan-vace-1.3b, wan-vace-14b, preview, tiny
    overrides: tuple[tuple[str, str], ...] = ()  # (component, Hub id or local folder) pairs: vae, transformer, ...
    denoiser: DenoiserKind = DenoiserKind.VACE  # NONE = preview without a generator
    device: str = "cpu"  # torch device string; "auto" is resolved by the CLI, not here
    dtype: DType = DType.FLOAT32  # model dtype: float32, bfloat16 or float16 (a plain string is accepted too)
    vae_dtype: VaeDType = VaeDType.FLOAT32  # VAE dtype: float32 (as diffusers' Wan examples) or model (the model's)
    offload: OffloadMode = OffloadMode.NONE  # CPU offload of the models
    compile: bool = False  # torch.compile the transformer, the VAE and the depth model (first calls pay the compile)
    fp8: Fp8Mode = Fp8Mode.NONE  # FP8 transformer (Hopper GPUs): attention, or attention + linear layers
    loras: tuple[LoraSpec, ...] = ()  # LoRAs fused into the transformer at load (mirage.hub.lora; --lora SOURCE[:SCALE])
    distill: bool = False  # also fuse the preset's step-distilled LoRA (--distilled; render with the DISTILLED profile)
    # move the loaded models' Python objects (and, after the first render, the compile's) out of the garbage
    # collector's reach (gc.freeze): a full collection otherwise scans them all mid-render (Pipeline._freeze_gc)
    freeze_gc: bool = True

    @property
    def fused_loras(self) -> tuple[LoraSpec, ...]:
        """The LoRAs the transformer gets: ``loras``, then the preset's step-distilled one with ``distill``."""
        return self.loras + ((distill_lora(self.preset),) if self.distill else ())

    @property
    def torch_dtype(self) -> torch.dtype:
        return parse_dtype(self.dtype).torch_dtype

    @property
    def torch_vae_dtype(self) -> torch.dtype:
        return torch.float32 if parse_vae_dtype(self.vae_dtype) is VaeDType.FLOAT32 else self.torch_dtype


@dataclass(frozen=True)
class RenderOptions:
    """What changes per video. Serialised into the report."""

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
    hole_fill: bool = True  # preview only: fill holes of the reads (push-pull) instead of leaving them visible
    fov: float | None = None  # horizontal FoV in degrees of the input image (overrides the depth model's)
    intrinsics: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy in pixels of the input image
    memory_phases: int = 1  # latent memory: 1, or 2 / 4 sub-stride phases per axis (polyphase: sharper reads,
    #                          phases**2 init encodes and tokens; see docs/fidelity.md)
    write_back: bool = True  # write revealed content back into the memory after each chunk
    write_back_last: bool = False  # also after the last chunk (set when the memory is saved: --save-memory)
    keep_reads: bool = False  # keep the decoded memory reads in the result (for --save-warped)
    scores: bool = True  # score the video's consistency with its memory (mirage.scores); off saves the decode of the
    #                      reads (0.56 s of 6.96 s for 81 frames at 832x480 on an H200, BENCHMARKS.md)


def split_settings(**settings) -> tuple[PipelineConfig, RenderOptions]:
    """Route keyword settings to the config or the options by their lifetime (an unknown name is an error).

    ``split_settings(preset="tiny", steps=2)`` -> ``(PipelineConfig(preset="tiny"), RenderOptions(steps=2))``.
    """
    load = {f.name for f in fields(PipelineConfig)}
    call = {f.name for f in fields(RenderOptions)}
    unknown = sorted(set(settings) - load - call)
    if unknown:
        raise InputError(f"settings: unknown name(s) {', '.join(unknown)}; valid: {', '.join(sorted(load | call))}")
    return (PipelineConfig(**{k: v for k, v in settings.items() if k in load}),
            RenderOptions(**{k: v for k, v in settings.items() if k in call}))


def check_output_shape(width: int, height: int, what: str) -> None:
    """An output frame within the pixel limit and of a shape the models handle (aspect ratio at most MAX_ASPECT)."""
    MAX_OUTPUT_PIXELS.check(width * height, f"{what} {width}x{height}")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InputError(f"{what} {width}x{height}: aspect ratio {max(width, height) / min(width, height):.1f}:1 is "
                         f"wider than {MAX_ASPECT:g}:1; pass a --size of a usual shape, e.g. 832x480")


@functools.lru_cache(maxsize=64)
def check_pipeline_config(c: PipelineConfig) -> None:
    """Validate the load-time settings before anything loads (one-line InputError naming the option).

    A config is checked once per process: ``mirage.batch.render`` checks it before reading any input and the
    ``Pipeline`` it then builds does not check it again (a config that fails is checked again, and fails again).
    """
    try:
        dev = torch.device(c.device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device: {c.device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    parse_dtype(c.dtype)
    parse_vae_dtype(c.vae_dtype)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device: {c.device} asked for, but torch sees no CUDA device; use --device cpu")
    if c.offload is not OffloadMode.NONE and dev.type != "cuda":
        raise InputError(f"--offload {c.offload.value}: offloading moves models between CPU and GPU; it needs --device cuda")
    if c.fp8 is not Fp8Mode.NONE:
        if c.denoiser is not DenoiserKind.VACE:
            raise InputError(f"--fp8 {c.fp8.value}: FP8 applies to the video transformer; --denoiser none has none "
                             "(drop --fp8)")
        if c.offload is not OffloadMode.NONE:
            raise InputError(f"--fp8 {c.fp8.value} with --offload {c.offload.value}: the FP8 weights are made on the "
                             "GPU and cannot be offloaded; drop one of the two")
        check_fp8(c.fp8, dev, c.torch_dtype)
    check_loras(c.loras)
    if (c.loras or c.distill) and c.denoiser is not DenoiserKind.VACE:
        raise InputError("--lora/--distilled: LoRAs apply to the video transformer; --denoiser none has none")
    if c.distill:
        distill_lora(c.preset)  # the preset must name one (none is published for 1.3B): one line now, not at load


#: Steps a step-distilled LoRA is sampled with: lightx2v publishes 4; a few more are common, dozens are not.
DISTILLED_MAX_STEPS = 8


def profile_warning(c: PipelineConfig, o: RenderOptions, s: SamplingSettings) -> str | None:
    """A warning when a render's sampling (``s``, resolved from ``o``) does not fit the LoRAs its pipeline fuses:
    the preset's step-distilled LoRA (``distill``) sampled with many steps or with guidance that a profile chose, or
    the distilled profile with no LoRA at all. None when they fit, without a denoiser, or for values ``o`` gives."""
    if c.denoiser is not DenoiserKind.VACE:
        return None  # no sampling: the preview
    if c.distill:
        off = [f"{s.steps} steps"] if s.steps > DISTILLED_MAX_STEPS and o.steps is None else []
        off += [f"guidance {s.guidance:g}"] if s.guidance > 1 and o.guidance is None else []
        if off:
            return (f"the preset's step-distilled LoRA is fused (distill), but this render samples with "
                    f"{' and '.join(off)} from the {s.profile.value} profile; the LoRA is made for 4 steps without "
                    "guidance: pass RenderOptions(profile=SamplingProfile.DISTILLED) (the CLI's --distilled sets both)")
    elif s.profile is SamplingProfile.DISTILLED and not c.loras:
        return ("the distilled profile (4 steps, guidance off) with no step-distilled LoRA fused: the base model gives "
                "blurred frames at 4 steps; pass PipelineConfig(distill=True), or your distilled LoRA in loras")
    return None


def check_render_options(o: RenderOptions) -> None:
    """Validate the per-video settings before any input is read (one-line InputError naming the option)."""
    check_sampling_options(steps=o.steps, guidance=o.guidance, flow_shift=o.flow_shift)
    if o.steps is not None:
        MAX_STEPS.check(o.steps, "--steps")
    if not (isinstance(o.seed, int) and 0 <= o.seed < 2**64):
        raise InputError(f"--seed: {echo(o.seed, 60)} is outside [0, 2^64 - 1]; pass a seed in that range")
    if o.chunk_frames < 5 or (o.chunk_frames - 1) % 4:
        raise InputError(f"--chunk-frames: {o.chunk_frames} must be 4k + 1 and at least 5 (e.g. 33 or 81)")
    if o.size is not None:
        if o.size[0] % SIZE_MULTIPLE or o.size[1] % SIZE_MULTIPLE or min(o.size) < SIZE_MULTIPLE:
            raise InputError(f"--size: {o.size[0]}x{o.size[1]} must be multiples of {SIZE_MULTIPLE} (e.g. 832x480)")
        check_output_shape(*o.size, "--size")
    if o.memory_phases not in (1, 2, 4):
        raise InputError(f"--memory-phases: {o.memory_phases} is not 1, 2 or 4 (sub-stride phases per axis)")
    if o.memory_phases > 1 and o.memory is not MemoryKind.LATENT:
        raise InputError(f"--memory-phases {o.memory_phases}: polyphase is a latent-memory setting; use --memory latent")


def settings_dict(config: PipelineConfig, options: RenderOptions) -> dict:
    """Both settings objects as one JSON-ready dict (the report's ``settings``)."""
    out = {}
    for obj in (config, options):
        for f in fields(obj):
            v = getattr(obj, f.name)
            if f.name == "loras":
                v = [{"source": lo.source, "scale": lo.scale} for lo in v]
            out[f.name] = v.value if isinstance(v, Enum) else (list(v) if isinstance(v, tuple) else v)
    return out
