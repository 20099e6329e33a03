"""Shared helper of the CLI tests (not a test module): run the real entry point in process."""

from __future__ import annotations

import sys


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run ``mirage_cli.main.main()`` (the error boundary) with ``args``: returns (exit code, stdout, stderr)."""
    from mirage_cli.main import main

    monkeypatch.setattr(sys, "argv", ["mirage", *[str(a) for a in args]])
    monkeypatch.setenv("COLUMNS", "300")  # rich wraps at the terminal width; keep paths on one line
    monkeypatch.delenv("MIRAGE_DEBUG", raising=False)
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
