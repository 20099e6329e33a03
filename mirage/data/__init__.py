"""Files shipped inside the package: camera presets, example scenes and the embedded preview VAE (TAESD).

The one place that knows where they are. The presets and example scenes stay in the repository's top-level
``trajectories/`` and ``examples/<name>/`` folders (the one copy); ``pyproject.toml`` maps them to the packages
``mirage.data.trajectories`` and ``mirage.data.examples.<name>`` (``[tool.setuptools.package-dir]``) and lists their
files as package data, so a wheel, ``pip install .`` and ``pip install -e .`` all install them under
``mirage/data/``. TAESD lives in ``mirage/weights/taesd/`` (see its ``SOURCE.md``). Everything is found with
:mod:`importlib.resources`, never by walking up from ``__file__``.

A missing file means a broken or stale install; the error names the file and the fix (reinstall).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from mirage.errors import MirageError

TRAJECTORIES_PACKAGE = "mirage.data.trajectories"
EXAMPLES_PACKAGE = "mirage.data.examples"
EXAMPLES = ("room", "fidelity")  # the shipped example scenes (``examples/<name>/`` in the repository)
TAESD_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "LICENSE")  # diffusers AutoencoderTiny folder

_REINSTALL = "reinstall mirage-video; in a source checkout, `pip install -e .`, which also refreshes an older editable install"


def _package_dir(package: str) -> Path:
    """The folder of a data package, as installed (a real folder: wheels and editable installs are not zipped)."""
    try:
        root = files(package)
    except ModuleNotFoundError:
        import mirage

        raise MirageError(
            f"package data {package} is not importable next to mirage at {Path(mirage.__file__).parent} "
            "(a source tree on PYTHONPATH that is not installed, or an editable install older than the data packages)",
            hint=_REINSTALL,
        ) from None
    if not isinstance(root, Path) or not root.is_dir():
        raise MirageError(f"package data {package}: {root} is not a folder on disk (zipped install?)", hint=_REINSTALL)
    return root


def trajectories_dir() -> Path:
    """The folder of the shipped camera presets (``<name>.yaml``)."""
    return _package_dir(TRAJECTORIES_PACKAGE)


def example_dir(name: str) -> Path:
    """The folder of the shipped example scene ``name`` (one of :data:`EXAMPLES`)."""
    if name not in EXAMPLES:
        raise MirageError(f"example scene {name!r}: unknown; shipped scenes: {', '.join(EXAMPLES)}")
    return _package_dir(f"{EXAMPLES_PACKAGE}.{name}")


def example_path(name: str, file: str) -> Path:
    """Path of ``file`` in the shipped example scene ``name`` (``example_path("room", "image.png")``)."""
    p = example_dir(name) / file
    if not p.is_file():
        raise MirageError(f"example file {name}/{file} is missing from the installed package ({p})", hint=_REINSTALL)
    return p


def taesd_dir() -> Path:
    """The embedded TAESD folder (diffusers ``AutoencoderTiny``: ``from_pretrained(taesd_dir())``), MIT licence."""
    d = _package_dir("mirage") / "weights" / "taesd"
    missing = [f for f in TAESD_FILES if not (d / f).is_file()]
    if missing:
        raise MirageError(f"embedded TAESD {d}: missing {', '.join(missing)}", hint=_REINSTALL)
    return d


__all__ = ["EXAMPLES", "example_dir", "example_path", "taesd_dir", "trajectories_dir"]
