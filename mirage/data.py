"""Data shipped inside the package (placeholder until the packaging branch lands)."""

from __future__ import annotations

from pathlib import Path


def taesd_dir() -> Path:
    return Path(__file__).resolve().parent / "weights" / "taesd"
