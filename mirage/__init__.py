"""mirage: one image and a camera path -> a 3D-consistent video, with a latent spatial memory.

The library call behind ``mirage render`` is :func:`mirage.render` (:func:`mirage.batch.render`); a
:class:`mirage.Pipeline` (settings: :class:`mirage.PipelineConfig`) loads models once and renders many videos
(per-video settings: :class:`mirage.RenderOptions`), or hands out a :class:`mirage.World` to move chunk by chunk. Heavy modules (torch,
diffusers) load on first use, not at ``import mirage``.
"""

from __future__ import annotations

import logging

from mirage.errors import InputError, MirageError, ModelError, RuntimeFailure, TrajectoryError

__version__ = "0.1.0"

logging.getLogger("mirage").addHandler(logging.NullHandler())

_LAZY = {
    "render": ("mirage.batch", "render"),
    "OutputRequest": ("mirage.batch", "OutputRequest"),
    "Pipeline": ("mirage.pipeline", "Pipeline"),
    "World": ("mirage.pipeline", "World"),
    "PipelineConfig": ("mirage.config", "PipelineConfig"),
    "RenderOptions": ("mirage.config", "RenderOptions"),
    "split_settings": ("mirage.config", "split_settings"),
    "DenoiserKind": ("mirage.config", "DenoiserKind"),
    "OffloadMode": ("mirage.offload", "OffloadMode"),
    "TrajectoryOptions": ("mirage.inputs", "TrajectoryOptions"),
    "check_input": ("mirage.inputs", "check_input"),
    "SamplingProfile": ("mirage.sampling", "SamplingProfile"),
    "SamplingSettings": ("mirage.sampling", "SamplingSettings"),
    "resolve_sampling": ("mirage.sampling", "resolve_sampling"),
    "MemoryKind": ("mirage.memory.types", "MemoryKind"),
    "load_trajectory": ("mirage.trajectory", "load_trajectory"),
    "Trajectory": ("mirage.trajectory", "Trajectory"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mirage' has no attribute {name!r}")


__all__ = ["__version__", "MirageError", "InputError", "TrajectoryError", "ModelError", "RuntimeFailure", *_LAZY]
