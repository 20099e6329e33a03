"""`mirage render`: parse options, build a PipelineConfig and RenderOptions, call mirage.parallel.render_batch, show
progress and a summary."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mirage.config import DenoiserKind, PipelineConfig, RenderOptions
from mirage.dtypes import DType, VaeDType, parse_dtype, parse_vae_dtype
from mirage.errors import InputError
from mirage.inputs import TrajectoryOptions
from mirage.memory.types import MemoryKind
from mirage.offload import OffloadMode
from mirage.precision import Fp8Mode
from mirage.sampling import SamplingProfile
from mirage.trajectory import TrajFormat
from mirage_cli.console import make_console, plain
from mirage_cli.options import (
    DTypeChoice,
    DTypeOpt,
    FormatOpt,
    FpsOpt,
    FramesOpt,
    SizeOpt,
    StartOpt,
    TrajOpt,
    TrajScaleOpt,
    VaeDTypeChoice,
    VaeDTypeOpt,
    parse_size,
)

console = make_console(stderr=True)


def parse_intrinsics(value: str | None) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(x) for x in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise InputError(f"--intrinsics: {value!r} is not fx,fy,cx,cy (four numbers in pixels of the input image)")
    return parts  # type: ignore[return-value]


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'. Only the CLI resolves 'auto'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: DTypeChoice, device: str) -> str:
    """'auto' -> bfloat16 on GPU, float32 on CPU; any other choice is its :class:`mirage.dtypes.DType`."""
    if dtype is DTypeChoice.AUTO:
        return (DType.BFLOAT16 if device.startswith("cuda") else DType.FLOAT32).value
    return parse_dtype(dtype.value).value


def resolve_vae_dtype(value: VaeDTypeChoice, device: str) -> str:
    """'auto' -> 'model' on GPU (bf16 decode: 1.6x faster, half the memory), 'float32' on CPU."""
    if value is VaeDTypeChoice.AUTO:
        return (VaeDType.MODEL if device.startswith("cuda") else VaeDType.FLOAT32).value
    return parse_vae_dtype(value.value).value


def sampling_profile(fast: bool, distilled: bool = False) -> SamplingProfile:
    """--fast -> the few-step, no-guidance profile; --distilled -> the preset's distilled LoRA and its settings;
    otherwise the model maintainers' defaults."""
    if fast and distilled:
        raise InputError("--fast and --distilled: choose one profile (--distilled: 4 steps with the distilled LoRA)")
    return SamplingProfile.DISTILLED if distilled else (SamplingProfile.FAST if fast else SamplingProfile.STANDARD)


def parse_loras(values: list[str] | None) -> tuple:
    """Every ``--lora SOURCE[:SCALE]`` -> a tuple of :class:`mirage.hub.LoraSpec`."""
    from mirage.hub.lora import parse_lora

    return tuple(parse_lora(v) for v in values or ())


def _overrides(**kw: str | None) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in kw.items() if v)


def render_command(
    images: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.", show_default=False)],
    traj: TrajOpt,
    out: Path | None = typer.Option(None, "--out", "-o", help="Output MP4 (one image)."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Output folder (several images; files named after inputs)."),
    traj_format: FormatOpt = TrajFormat.AUTO,
    frames: FramesOpt = None,
    fps: FpsOpt = None,
    traj_scale: TrajScaleOpt = 1.0,
    start: StartOpt = None,
    preset: str = typer.Option("wan-vace-1.3b", "--preset", help="Model preset (see `mirage models`)."),
    vae: str | None = typer.Option(None, "--vae", help="Override the VAE: Hub id or local folder."),
    transformer: str | None = typer.Option(None, "--transformer", help="Override the video transformer."),
    text_encoder: str | None = typer.Option(None, "--text-encoder", help="Override the text encoder."),
    depth_model: str | None = typer.Option(None, "--depth-model", help="Override the depth model."),
    denoiser: DenoiserKind = typer.Option(DenoiserKind.VACE, "--denoiser", help="none = preview: decode the memory reads directly."),
    memory: MemoryKind = typer.Option(MemoryKind.LATENT, "--memory", help="latent (mirage) or rgb (the point-cloud baseline)."),
    memory_phases: int = typer.Option(1, "--memory-phases", help="Latent memory: 1, 2 or 4 sub-stride phases per axis (sharper reads, phases^2 tokens)."),
    steps: int | None = typer.Option(None, "--steps", help="Denoising steps (default: 50; 20 with --fast)."),
    guidance: float | None = typer.Option(None, "--guidance", help="Classifier-free guidance; 1.0 = off (default: 5.0; 1.0 with --fast)."),
    negative_prompt: str | None = typer.Option(None, "--negative-prompt", help="Negative prompt of guidance (default: Wan's standard one)."),
    flow_shift: float | None = typer.Option(None, "--flow-shift", help="Scheduler flow shift (default: by resolution, 3.0 at 480p, 5.0 at 720p; the model's own with --fast)."),
    fast: bool = typer.Option(False, "--fast", help="Few-step profile for previews and distilled models: 20 steps, guidance off (explicit options win)."),
    distilled: bool = typer.Option(False, "--distilled", help="Fuse the preset's step-distilled LoRA (lightx2v, 14B only) and use its settings: 4 steps, guidance off, flow shift 5."),
    lora: list[str] | None = typer.Option(None, "--lora", help="Fuse a LoRA into the transformer: FILE.safetensors or owner/name[@rev]:path/in/repo.safetensors, then optionally :SCALE (repeatable)."),
    seed: int = typer.Option(0, "--seed"),
    prompt: str = typer.Option("", "--prompt", help="Text prompt (optional)."),
    chunk_frames: int = typer.Option(33, "--chunk-frames", help="Frames per chunk (4k+1); chunks overlap by one frame."),
    size: SizeOpt = None,
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    dtype: DTypeOpt = DTypeChoice.AUTO,
    offload: OffloadMode = typer.Option(OffloadMode.NONE, "--offload", help="CPU offload for small GPUs: model (~8 GB) or sequential (~6 GB)."),
    vae_dtype: VaeDTypeOpt = VaeDTypeChoice.AUTO,
    compile: bool = typer.Option(False, "--compile", help="torch.compile the transformer, VAE and depth model (pays a few minutes once per process)."),
    fp8: Fp8Mode = typer.Option(Fp8Mode.NONE, "--fp8", help="Hopper GPUs: FP8 attention, or attention + linear layers (all); faster, a few % less exact."),
    depth: Path | None = typer.Option(None, "--depth", help="Depth map for the image (.npy metres or 16-bit PNG millimetres)."),
    fov: float | None = typer.Option(None, "--fov", help="Horizontal field of view of the image, degrees."),
    intrinsics: str | None = typer.Option(None, "--intrinsics", help="fx,fy,cx,cy in pixels of the image."),
    no_fill: bool = typer.Option(False, "--no-fill", help="Preview: leave holes visible instead of filling them."),
    no_scores: bool = typer.Option(False, "--no-scores", help="Skip the consistency scores (saves decoding the memory's reads; the report's scores are null)."),
    frames_dir: Path | None = typer.Option(None, "--frames-dir", help="Also write PNG frames here (batch: per input)."),
    report: Path | None = typer.Option(None, "--report", help="JSON report path (default: next to the MP4)."),
    save_warped: bool = typer.Option(False, "--save-warped", help="Also write <out>_warped.mp4: decoded memory reads beside the output."),
    save_memory: Path | None = typer.Option(None, "--save-memory", help="Save the spatial memory (continue with --memory-from)."),
    memory_from: Path | None = typer.Option(None, "--memory-from", help="Continue from a saved spatial memory."),
    worldscore: Path | None = typer.Option(None, "--worldscore", help="Also write WorldScore's evaluation layout into this folder."),
    plot: Path | None = typer.Option(None, "--plot", help="Also draw the consistency scores along the camera path: a .png (one image), or a folder of <name>.png (--out-dir)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Re-render outputs that already exist."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Render a 3D-consistent video from IMAGE(S) along a camera trajectory."""
    from mirage.batch import OutputRequest

    if (out is None) == (out_dir is None):
        raise InputError("render: give exactly one of -o OUT.mp4 (one image) or --out-dir DIR (several images)")
    dev = resolve_device(device)
    config = PipelineConfig(
        preset=preset,
        overrides=_overrides(vae=vae, transformer=transformer, text_encoder=text_encoder, depth=depth_model),
        denoiser=denoiser, device=dev, dtype=resolve_dtype(dtype, dev), vae_dtype=resolve_vae_dtype(vae_dtype, dev),
        offload=offload, compile=compile, fp8=fp8, loras=parse_loras(lora), distill=distilled,
    )
    options = RenderOptions(
        memory=memory, memory_phases=memory_phases, seed=seed, prompt=prompt, profile=sampling_profile(fast, distilled),
        steps=steps, guidance=guidance, negative_prompt=negative_prompt, flow_shift=flow_shift,
        chunk_frames=chunk_frames, size=parse_size(size), hole_fill=not no_fill, fov=fov, scores=not no_scores,
        intrinsics=parse_intrinsics(intrinsics),
    )
    traj_opts = TrajectoryOptions(spec=traj, fmt=traj_format, frames=frames, fps=fps, scale=traj_scale, start=start)
    req = OutputRequest(
        out=out, out_dir=out_dir, report=report, frames_dir=frames_dir if frames_dir else False,
        save_warped=save_warped, save_memory=save_memory if save_memory else False, worldscore=worldscore,
        plot=plot, overwrite=overwrite,
    )
    show = not quiet and sys.stderr.isatty() and os.environ.get("CI") is None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, disable=not show, transient=True)
    tasks: dict[str, int] = {}

    def on_progress(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = progress.add_task({"chunk": "chunks", "step": "denoising"}.get(what, what), total=total)
        if done == 1 and what == "step":
            progress.reset(tasks[what], total=total)
        progress.update(tasks[what], completed=done, total=total)

    def on_item(item, i, n) -> None:
        mark = {"done": "[green]done[/]", "skipped": "[yellow]skipped[/]", "failed": "[red]failed[/]"}[item.status]
        console.print(f"{mark} {plain(item.image)} -> {plain(item.video)}" + (f" ({plain(item.error)})" if item.error else ""),
                      highlight=False)

    from mirage.batch import BatchInterrupted
    from mirage.parallel import render_batch

    try:
        with progress:  # under torchrun every rank renders its share; rank 0 reports progress and the summary
            result = render_batch(images, traj_opts, req, config, options, depth_file=depth, memory_from=memory_from,
                                  progress=on_progress, on_item=on_item)
    except BatchInterrupted as e:  # Ctrl-C: say what finished, then exit 130 through the error boundary
        _summary(e.result, interrupted=True)
        raise
    if result.is_main:
        _summary(result.batch)
    result.raise_if_failed()


def _summary(result, interrupted: bool = False) -> None:
    if interrupted:
        done = sum(i.status == "done" for i in result.items)
        console.print(f"interrupted after {len(result.items)} input(s): {done} rendered, "
                      f"{sum(i.status == 'skipped' for i in result.items)} skipped, {len(result.failed)} failed",
                      highlight=False, markup=False)
    if len(result.items) > 1 or result.failed or (interrupted and result.items):
        table = Table(title="mirage render" + (" (interrupted)" if interrupted else ""))
        for col in ("image", "status", "output", "seconds"):
            table.add_column(col)
        for it in result.items:
            table.add_row(plain(it.image), it.status, plain(it.video), f"{it.seconds:.1f}")
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("render")(render_command)
