"""`mirage bench`: latent memory vs the RGB point-cloud baseline; `mirage bench fidelity`: read fidelity."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.table import Table
from typer.core import TyperGroup

from mirage.errors import InputError, RuntimeFailure
from mirage.memory.types import MemoryKind
from mirage.precision import Fp8Mode
from mirage_cli.console import make_console, plain
from mirage_cli.options import DTypeChoice, DTypeOpt, VaeDTypeChoice, VaeDTypeOpt

console = make_console()
err_console = make_console(stderr=True)


class _BenchGroup(TyperGroup):
    """`mirage bench [IMAGE] [options]` runs the speed benchmark; `mirage bench fidelity ...` is a subcommand."""

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["--image", args[0], *args[1:]]  # a leading positional that is no subcommand is the IMAGE
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_BenchGroup, invoke_without_command=True, no_args_is_help=False,
                  help="Latent memory vs the RGB point-cloud baseline, side by side (and `bench fidelity`).")


def parse_int_list(value: str, option: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{option}: {value!r} is not a comma-separated list of integers (e.g. 4,20,50)") from None
    if not out or min(out) < 1:
        raise InputError(f"{option}: {value!r} needs at least one positive integer")
    return out


def _mb(x) -> str:
    return "-" if x is None else f"{x / 2**20:,.0f}"


def _ms(x) -> str:
    return "-" if x is None else f"{x:,.1f}"


@app.callback()
def bench(
    ctx: typer.Context,
    image: Path | None = typer.Option(None, "--image", help="Input image (default: the example scene, with its true depth)."),
    traj: str = typer.Option("orbit", "--traj", "-t", help="Trajectory preset or camera file."),
    preset: str | None = typer.Option(None, "--preset", help="Model preset (default: wan-vace-1.3b on GPU, tiny on CPU)."),
    frames: str = typer.Option("81", "--frames", help="Comma-separated video lengths, e.g. 81,161."),
    steps: str = typer.Option("4,20,50", "--steps", help="Comma-separated denoising step counts."),
    guidance: float | None = typer.Option(None, "--guidance", help="Classifier-free guidance; 1.0 = off (default: 5.0; 1.0 with --fast)."),
    negative_prompt: str | None = typer.Option(None, "--negative-prompt", help="Negative prompt of guidance (default: Wan's standard one)."),
    flow_shift: float | None = typer.Option(None, "--flow-shift", help="Scheduler flow shift (default: by resolution; the model's own with --fast)."),
    fast: bool = typer.Option(False, "--fast", help="Guidance off and the model's flow shift, as `render --fast` (the figures in BENCHMARKS.md)."),
    lora: list[str] | None = typer.Option(None, "--lora", help="Fuse a LoRA first, as `render --lora` (a step must cost what it cost without)."),
    distilled: bool = typer.Option(False, "--distilled", help="Fuse the preset's step-distilled LoRA and use its guidance and flow shift, as `render --distilled` (14B; its steps: --steps 4)."),
    no_scores: bool = typer.Option(False, "--no-scores", help="Measure without the consistency scores, as `render --no-scores`."),
    chunk_frames: int | None = typer.Option(None, "--chunk-frames", help="Frames per chunk (default 81)."),
    repeats: int = typer.Option(3, "--repeats", help="Timed runs per setting (median and spread reported)."),
    warmup: int = typer.Option(1, "--warmup", help="Untimed warm-up runs per video length."),
    size: str | None = typer.Option(None, "--size", help="WIDTHxHEIGHT (default 832x480 on GPU)."),
    depth: Path | None = typer.Option(None, "--depth", help="Depth map of IMAGE (default: the depth model)."),
    fov: float | None = typer.Option(None, "--fov", help="Horizontal FoV of IMAGE, degrees."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Real architectures, random weights: no download."),
    device: str = typer.Option("auto", "--device"),
    dtype: DTypeOpt = DTypeChoice.AUTO,
    vae_dtype: VaeDTypeOpt = VaeDTypeChoice.AUTO,
    offload: str = typer.Option("none", "--offload", help="none, model or sequential."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the transformer, VAE and depth model (compile time reported apart)."),
    fp8: Fp8Mode = typer.Option(Fp8Mode.NONE, "--fp8", help="FP8 transformer on Hopper GPUs: attention, or attention + linear layers (all)."),
    memory: list[MemoryKind] | None = typer.Option(
        None, "--memory", help="A memory to run (repeatable; default: latent and rgb, side by side)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full results as JSON."),
    context_parallel: bool = typer.Option(
        False, "--context-parallel",
        help="Split the transformer's video tokens over the torchrun ranks (torchrun --nproc-per-node N -m mirage_cli bench ...)."),
) -> None:
    """Run the full render path with --memory latent and --memory rgb, same inputs and seed; report both and the ratios."""
    if ctx.invoked_subcommand is not None:
        return
    from mirage.bench import BenchConfig, example_inputs, run_bench
    from mirage.config import PipelineConfig, RenderOptions, check_pipeline_config, check_render_options
    from mirage.offload import OffloadMode
    from mirage_cli.options import parse_size
    from mirage_cli.render import parse_loras, resolve_device, resolve_dtype, resolve_vae_dtype
    from mirage_cli.render import sampling_profile as profile_of

    dev = resolve_device(device)
    env = None
    if context_parallel:
        from mirage.parallel import init_rank

        env = init_rank(dev)  # one process per GPU under torchrun; a world of 1 is the unsplit baseline
        dev = env.device  # cuda:LOCAL_RANK per rank
    on_gpu = dev.startswith("cuda")
    preset = preset or ("wan-vace-1.3b" if on_gpu else "tiny")
    size_t = parse_size(size) or ((832, 480) if on_gpu else (112, 64))
    if image is None:
        image, example_depth = example_inputs()
        depth, fov = depth or example_depth, fov or 60.0
    config = PipelineConfig(preset=preset, device=dev, dtype=resolve_dtype(dtype, dev),
                            vae_dtype=resolve_vae_dtype(vae_dtype, dev), offload=OffloadMode(offload), compile=compile,
                            fp8=fp8, loras=parse_loras(lora), distill=distilled)
    options = RenderOptions(size=size_t, fov=fov, chunk_frames=chunk_frames or 81, profile=profile_of(fast, distilled),
                            scores=not no_scores, guidance=guidance, negative_prompt=negative_prompt,
                            flow_shift=flow_shift)
    if context_parallel:
        from mirage.parallel import check_context_parallel

        check_context_parallel(config)  # what context parallel cannot run with, named first
    check_pipeline_config(config)  # bad --device, --fp8 ...: one line, before anything is built
    check_render_options(options)  # bad --guidance, --flow-shift, ...
    cfg = BenchConfig(config=config, options=options, image=image, depth_file=depth, traj=traj,
                      frames=parse_int_list(frames, "--frames"), steps=parse_int_list(steps, "--steps"),
                      repeats=repeats, warmup=warmup, random_weights=random_weights,
                      **({"memories": tuple(dict.fromkeys(memory))} if memory else {}))
    if not on_gpu:
        err_console.print("[yellow]note:[/] no GPU: running on the CPU with the tiny preset; figures are not "
                          "representative of GPU speed")
    show = sys.stderr.isatty() and os.environ.get("CI") is None

    def on_progress(what: str, done: int, total: int) -> None:
        if show:
            err_console.print(f"[dim]run {done}/{total}[/]", highlight=False)

    if env is None:
        report = run_bench(cfg, progress=on_progress)
    else:
        from mirage.parallel import bench_context_parallel, shutdown_distributed

        show = show and env.is_main
        report = bench_context_parallel(cfg, env, progress=on_progress)
        shutdown_distributed(barrier=True)  # every rank ran the same renders; the rest is local
        if not env.is_main:  # every rank renders the same video; rank 0 reports
            if report.failed:
                raise RuntimeFailure(f"rank {env.rank}: {len(report.failed)} setting(s) failed")
            return
    _print(report)
    if json_out is not None:
        from mirage.io import atomic_write_text

        atomic_write_text(json_out, json.dumps(report.to_dict(), indent=1, default=str))
        console.print(f"results written to {plain(json_out)}", highlight=False)
    if report.failed:
        raise RuntimeFailure(
            f"{len(report.failed)} setting(s) failed: "
            + "; ".join(f"{r.memory} frames={r.frames} steps={r.steps}: {r.error}" for r in report.failed)
        )


def _print(report) -> None:
    from mirage.bench import VIDEOS_PER_HOUR

    h = report.header
    title = (f"mirage bench on {h.get('gpu') or h['device']} | preset {h['preset']}"
             + (" (random weights)" if h["random_weights"] else "") + f" | {h['size'][0]}x{h['size'][1]}"
             + f" | {h['repeats']} repeat(s), median")
    t = Table(title=title)
    for col in ("memory", "frames", "steps", "total ms", "(min-max)", "cond. path ms", "denoise ms", "decode ms",
                "peak VRAM MiB", "cond. VRAM MiB", "cache MiB"):
        t.add_column(col, justify="right")
    # batch throughput of each setting, and the write-back depth (the lever of issue 15)
    tp = Table(title=f"batch throughput: {VIDEOS_PER_HOUR}")
    for col in ("memory", "frames", "steps", "end to end s", "write-back depth ms", "videos per hour"):
        tp.add_column(col, justify="right")
    # the same renders' consistency scores (docs/report.md), median over the repeats
    st = Table(title="consistency scores, median (memory agreement: higher is better; change: lower)")
    for col in ("memory", "frames", "steps", "agreement dB", "agreement SSIM", "temporal change", "revisit dB"):
        st.add_column(col, justify="right")
    for r in report.rows:
        if r.error:
            t.add_row(r.memory, str(r.frames), str(r.steps), "[red]failed[/]", *[""] * 7)
            continue
        sp = r.spread("total_ms")
        t.add_row(r.memory, str(r.frames), str(r.steps), _ms(r.median("total_ms")),
                  f"{sp[0]:,.0f}-{sp[1]:,.0f}" if sp else "-", _ms(r.median("conditioning_ms")),
                  _ms(r.median("denoise_ms")), _ms(r.median("decode_ms")), _mb(r.median("peak_vram_overall")),
                  _mb(r.median("peak_vram_conditioning")), _mb(r.median("memory_bytes_final")))
        total = r.median("total_ms")
        tp.add_row(r.memory, str(r.frames), str(r.steps), _num(None if total is None else total / 1e3, 3),
                   _ms(r.median("write_depth_ms")), _num(r.videos_per_hour(), 0))
        st.add_row(r.memory, str(r.frames), str(r.steps), _num(r.median("memory_agreement_psnr"), 1),
                   _num(r.median("memory_agreement_ssim"), 3), _num(r.median("temporal_change"), 4),
                   _num(r.median("revisit_psnr"), 1))
    console.print(t)
    console.print(tp)
    console.print(st)
    rt = Table(title="rgb / latent")
    for col in ("frames", "steps", "end to end", "cond. path", "cond. VRAM", "cache bytes"):
        rt.add_column(col, justify="right")
    for e in report.ratios:
        f = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
        rt.add_row(str(e["frames"]), str(e["steps"]), f(e["total_ms"]), f(e["conditioning_ms"]),
                   f(e["peak_vram_conditioning"]), f(e["memory_bytes_final"]))
    console.print(rt)
    if h.get("note"):
        console.print(f"[yellow]{plain(h['note'])}[/]")


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def register(root: typer.Typer) -> None:
    import importlib

    try:
        fidelity = importlib.import_module("mirage_cli.fidelity")
    except ModuleNotFoundError as e:
        if e.name != "mirage_cli.fidelity":
            raise
    else:
        fidelity.register(app)
    root.add_typer(app, name="bench")
