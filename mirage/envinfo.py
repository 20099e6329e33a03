"""Versions and devices, for bug reports (``mirage env``)."""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def collect_env() -> dict[str, str]:
    """Versions of python, mirage, torch, diffusers, transformers, av, ... and the CUDA devices seen."""
    import torch

    import mirage

    info = {
        "mirage": mirage.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch CUDA build": str(torch.version.cuda),
    }
    for dist in ("diffusers", "transformers", "av", "huggingface-hub", "safetensors", "numpy", "typer", "rich",
                 "nvidia-cudnn-frontend"):
        info[dist] = _version(dist)
    info["cuDNN (torch's)"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none"
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            fp8 = "--fp8 ok" if p.major >= 9 else "no --fp8 (needs sm_90+)"
            info[f"cuda:{i}"] = f"{p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}, {fp8}"
    else:
        info["cuda"] = "no CUDA device seen"
    return info
