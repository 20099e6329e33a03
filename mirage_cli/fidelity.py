"""`mirage bench fidelity`: PSNR/SSIM of the memories' decoded reads against real target views (a thin shell over
:func:`mirage.fidelity.run_fidelity_folder`). Attached under the `bench` group with :func:`register`."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from mirage.data import example_dir, taesd_dir
from mirage.errors import InputError
from mirage.fidelity import (
    VARIANT_NAMES,
    FidelityReport,
    default_variants,
    run_fidelity_folder,
    variants_by_name,
)
from mirage_cli.console import make_console, plain

console = make_console()


def fidelity_command(
    scene: Path | None = typer.Argument(
        None, help="Scene folder: source.png, source_depth.png, targets/, cameras.json (default: the shipped example scene)."),
    vae: Path | None = typer.Option(
        None, "--vae", help="Image VAE folder (diffusers AutoencoderTiny: taesd, taesd3; default: the embedded TAESD)."),
    variant: list[str] = typer.Option(
        [v.name.removeprefix("latent-") for v in default_variants()], "--variant",
        help=f"Latent memory variant(s) to score (repeat): {', '.join(VARIANT_NAMES)}.",
    ),
    stereo_motorcycle: bool = typer.Option(
        False, "--stereo-motorcycle",
        help="Score the real Middlebury 2014 Motorcycle stereo pair (scikit-image's copy, built at run time, "
             "736x496: left = source with true depth, right = target) instead of a scene folder."),
    no_rgb: bool = typer.Option(False, "--no-rgb", help="Do not score the RGB point-cloud memory."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON here."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
) -> None:
    """Score latent vs RGB memory reads against real target views (PSNR, SSIM; VAE round trip = ceiling)."""
    import torch

    variants = variants_by_name(variant)  # validated before anything loads
    if stereo_motorcycle:
        if scene is not None:
            raise InputError(f"fidelity: pass either a SCENE folder ({scene}) or --stereo-motorcycle, not both")
        from mirage.fidelity_stereo import make_stereo_scene

        scene = make_stereo_scene()
    scene = scene if scene is not None else example_dir("fidelity")
    vae = vae if vae is not None else taesd_dir()
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    report = run_fidelity_folder(scene, vae, device=dev, variants=variants, rgb=not no_rgb)
    console.print(report_table(report))
    if json_out is not None:
        report.save_json(json_out)
        console.print(f"wrote {plain(json_out)}", highlight=False)


def report_table(report: FidelityReport) -> Table:
    """A rich table: one row per method; mean PSNR / SSIM, memory bytes, then PSNR per target (SSIM per target is
    in the JSON)."""
    h = report.header
    table = Table(title=f"mirage bench fidelity: {plain(Path(h['scene']).name)} ({h['size'][0]}x{h['size'][1]}, "
                        f"vae {plain(Path(h['vae']).name)})")
    table.add_column("method", no_wrap=True)
    table.add_column("PSNR", justify="right")
    table.add_column("SSIM", justify="right")
    table.add_column("bytes", justify="right")
    for i in range(1, len(report.targets) + 1):
        table.add_column(f"t{i}", justify="right")
    for m in report.methods:
        mean = report.mean[m]
        table.add_row(plain(m), _fmt(mean.psnr), "-" if math.isnan(mean.ssim) else f"{mean.ssim:.3f}",
                      f"{report.bytes[m]:,}" if m in report.bytes else "-",
                      *[_fmt(t.scores[m].psnr) for t in report.targets])
    legend = ", ".join(f"t{i} {plain(t.name)} ({100 * t.covered:.0f}% px)" for i, t in enumerate(report.targets, 1))
    table.caption = (f"mean PSNR (dB) / SSIM over the pixels every memory covers; vae-ceiling = encode + decode of "
                     f"the target. Targets: {legend}")
    return table


def _fmt(p: float) -> str:
    if math.isnan(p):
        return "-"
    return "inf" if math.isinf(p) else f"{p:.2f}"


def register(bench_app: typer.Typer) -> None:
    """Attach `fidelity` to the `mirage bench` command group."""
    bench_app.command("fidelity")(fidelity_command)
