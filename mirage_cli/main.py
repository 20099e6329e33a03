"""The `mirage` command: a thin Typer shell over the library.

Every command parses options, calls one library function and renders its result. This module holds the one error
boundary: a :class:`mirage.errors.MirageError` becomes one red line (plus a hint) and a non-zero exit code;
``MIRAGE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import platform
import sys

import typer
from rich.logging import RichHandler
from rich.table import Table

import mirage
from mirage.errors import MirageError
from mirage_cli.console import make_console, plain

err_console = make_console(stderr=True)
console = make_console()

app = typer.Typer(
    name="mirage",
    help="One image + a camera path -> a 3D-consistent video, with a latent spatial memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"mirage {mirage.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Show the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs."),
) -> None:
    """mirage: one image + a camera path -> a 3D-consistent video."""
    _setup_logging(logging.DEBUG if verbose else logging.INFO)


def _setup_logging(level: int) -> None:
    log = logging.getLogger("mirage")
    for h in list(log.handlers):
        if isinstance(h, RichHandler):
            log.removeHandler(h)
    handler = RichHandler(console=err_console, show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    if level > logging.DEBUG:  # diffusers/transformers chatter (config notes, weight-loading bars) only with -v
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@app.command()
def env() -> None:
    """Print versions of python, torch, diffusers, transformers, av and the CUDA devices seen (for bug reports)."""
    from mirage.envinfo import collect_env

    info = collect_env()
    table = Table(show_header=False, box=None)
    for k, v in info.items():
        table.add_row(plain(k), plain(v))
    console.print(table)


def _register_subcommands() -> None:
    """Attach the command groups. Each lives in its own module; a missing one is an install bug, not silent."""
    from mirage_cli import traj

    app.add_typer(traj.app, name="traj", help="Inspect, plot and convert camera trajectories.")
    for name in ("render", "models", "bench"):
        try:
            module = __import__(f"mirage_cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name == f"mirage_cli.{name}":
                continue  # command group not built yet in this version
            raise
        module.register(app)


_register_subcommands()


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """ClickException and Abort of click and of typer's bundled copy of click (typer >= 0.29 vendors it)."""
    import click

    usage, abort = [click.exceptions.ClickException], [click.exceptions.Abort]
    try:
        from typer import _click  # type: ignore[attr-defined]

        usage.append(_click.exceptions.ClickException)
        abort.append(_click.exceptions.Abort)
    except (ImportError, AttributeError):
        pass
    return tuple(usage), tuple(abort)


def main() -> None:
    """Console-script entry point with the one error boundary."""
    debug = os.environ.get("MIRAGE_DEBUG", "") not in ("", "0")
    try:
        code = app(standalone_mode=False)
    except MirageError as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {plain(_cap(e.message))}", highlight=False, soft_wrap=True)
        if e.hint:
            err_console.print(f"[dim]hint:[/] {plain(_cap(e.hint))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit:
        raise
    except Exception as e:  # click's own usage errors arrive here in standalone_mode=False
        click_exc, abort_exc = _click_exception_types()
        if isinstance(e, click_exc):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, abort_exc):
            err_console.print("[red]aborted[/]")
            sys.exit(1)
        if debug:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {plain(_cap(str(e)))}", highlight=False, soft_wrap=True
        )
        err_console.print("[dim]hint:[/] this is a bug in mirage; rerun with MIRAGE_DEBUG=1 and report the traceback")
        sys.exit(1)
    # standalone_mode=False: typer turns Ctrl-C into Exit(130) and returns its code instead of raising
    if code == EXIT_INTERRUPTED:
        _interrupted()
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        sys.exit(code)


#: Exit code of a run stopped by Ctrl-C (SIGINT), as shells report 128 + SIGINT.
EXIT_INTERRUPTED = 130
#: Longest message line the error boundary prints (library messages cap the values they echo well below it).
MAX_MESSAGE = 1000


def _cap(text: str) -> str:
    """One line of at most MAX_MESSAGE characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def _interrupted() -> None:
    err_console.print("[red]interrupted[/] (Ctrl-C): outputs finished so far are complete; rerun the same command "
                      "to resume", highlight=False, soft_wrap=True)
    sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()


__all__ = ["app", "main", "platform"]
