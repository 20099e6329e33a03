"""The CLI's rich consoles, and how a value is shown verbatim in them.

rich reads ``[...]`` in printed text as markup and ``:name:`` as an emoji code: a file named ``img[red].png`` would
lose its brackets, and ``--lora x.safetensors:abc`` would show an emoji. The consoles here have emoji codes off, and
every value the CLI did not write (file names, messages, repo ids) goes through :func:`plain` before it is printed or
put in a table.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape


def make_console(*, stderr: bool = False) -> Console:
    """A rich console without emoji codes (stdout, or stderr)."""
    return Console(stderr=stderr, emoji=False)


def plain(value: object) -> str:
    """``str(value)`` with rich's markup escaped: shown as written."""
    return escape(str(value))
