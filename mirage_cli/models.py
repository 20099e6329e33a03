"""`mirage models` (presets, components, sizes, licences, cache state) and `mirage download PRESET`."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from mirage_cli.console import make_console, plain

console = make_console()


def models_command() -> None:
    """List model presets: components, Hub ids and revisions, sizes, licences, and whether each is cached."""
    from mirage import hub

    for info in hub.list_presets():
        try:
            state = hub.cached(info.name)
        except Exception as e:  # noqa: BLE001 -- a broken cache must not hide the list
            state = {}
            console.print(f"[yellow]{info.name}: cache state unknown ({type(e).__name__})[/]")
        title = f"{info.name}{' (default)' if info.default else ''}: {info.description}"
        t = Table(title=title, title_justify="left")
        for col in ("component", "class", "source", "revision", "size", "licence", "cached"):
            t.add_column(col)
        for c in info.components:
            src = {hub.SourceKind.HUB: c.repo_id + (f":{c.subfolder}" if c.subfolder else ""),
                   hub.SourceKind.EMBEDDED: "embedded in mirage", hub.SourceKind.TINY: "built locally"}[c.kind]
            ok = state.get(c.name.value)
            t.add_row(c.name.value, c.cls_name, plain(src), plain(c.revision or "-"), f"{c.size_gb:.2f} GB" if c.size_bytes else "-",
                      c.licence, "[green]yes[/]" if ok else ("[red]no[/]" if ok is not None else "?"))
        console.print(t)
        if info.distill_lora is not None:
            lo, ok = info.distill_lora, state.get("distill_lora")
            console.print(f"  distilled LoRA (--distilled): {plain(lo.repo_id)}:{plain(lo.filename)} @ {plain(lo.revision)}, "
                          f"{lo.size_bytes / 1e9:.2f} GB, cached: {'yes' if ok else ('no' if ok is not None else '?')}",
                          highlight=False)
        if info.local:
            console.print("  built locally on first use")
        else:
            console.print(f"  download: {info.download_bytes / 1e9:.1f} GB" if info.download_bytes else "  nothing to download")


def download_command(
    preset: str = typer.Argument(..., help="Preset to fetch into the Hugging Face cache (see `mirage models`)."),
) -> None:
    """Pre-fetch a preset's weights into the Hugging Face cache (needs internet; afterwards runs work offline).

    The preset's step-distilled LoRA (--distilled) is fetched too where the preset names one (14B: 0.63 GB)."""
    from mirage import hub

    hub.parse_preset(preset)  # an unknown name fails before any progress is drawn
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task(f"download {preset}", total=None)

        def on_progress(component: str, done: int, total: int) -> None:
            bar.update(task, total=total, completed=done, description=f"download {preset}: {component}")

        folders = hub.download(preset, progress=on_progress)
    for comp, folder in folders.items():
        console.print(f"{comp}: {plain(folder)}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
    app.command("download")(download_command)
