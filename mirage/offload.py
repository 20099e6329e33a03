"""CPU offload for small GPUs (``--offload``).

- ``model``: the transformer's weights live on the CPU and move to the GPU, whole, for each chunk's denoising,
  then back; the depth model visits the GPU only while it runs; the VAE decodes in tiles. Peak VRAM: the
  transformer plus one step's activations.
- ``sequential``: the transformer runs block by block with diffusers' group offloading (one block on the GPU at a
  time, the next one prefetched on a side stream); depth and VAE as above. Peak VRAM: one block plus one step's
  activations (the 6 GB mode), at the cost of streaming every weight over PCIe every step.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from enum import Enum
from typing import Any

import torch

logger = logging.getLogger("mirage")


class OffloadMode(str, Enum):
    """CPU offload for small GPUs."""

    NONE = "none"  # everything resident on the device
    MODEL = "model"  # each model on the device only while it runs
    SEQUENTIAL = "sequential"  # submodules streamed to the device (slowest, least VRAM)


class _OffloadedModel:
    """Wraps a module so it sits on ``offload`` and visits ``onload`` only inside :meth:`on_device`."""

    def __init__(self, module: torch.nn.Module, onload: torch.device, offload: torch.device = torch.device("cpu")):
        self.module = module.to(offload)
        self.onload = onload
        self.offload = offload

    @contextlib.contextmanager
    def on_device(self) -> Iterator[torch.nn.Module]:
        self.module.to(self.onload)
        try:
            yield self.module
        finally:
            self.module.to(self.offload)
            if self.onload.type == "cuda":
                torch.cuda.empty_cache()


class ModelOffloadDenoiser:
    """A Denoiser whose transformer is on the GPU only during a call."""

    def __init__(self, denoiser, device: torch.device):
        self.inner = denoiser
        self.holder = _OffloadedModel(denoiser.transformer, device)
        denoiser.execution_device = device

    @property
    def transformer(self):
        return self.inner.transformer

    def __call__(self, *args, **kwargs):
        with self.holder.on_device():
            return self.inner(*args, **kwargs)


class OffloadedDepth:
    """A depth estimator whose model visits the GPU only while it estimates."""

    def __init__(self, estimator, device: torch.device):
        self.inner = estimator
        self.holder = _OffloadedModel(estimator.model, device)
        estimator.device = device  # inputs go where the model runs

    def estimate(self, *args, **kwargs):
        with self.holder.on_device():
            return self.inner.estimate(*args, **kwargs)

    def estimate_batch(self, *args, **kwargs):
        with self.holder.on_device():
            return self.inner.estimate_batch(*args, **kwargs)


def apply_offload(components: Any, mode: OffloadMode, device: torch.device) -> Any:
    """``components`` (:class:`mirage.hub.Components`, loaded on the CPU) set up for ``mode``: a new Components.

    MODEL: the transformer stays on the CPU (:func:`offload_denoiser` moves it per chunk); SEQUENTIAL: the transformer
    runs with diffusers' block-level group offload; both: the VAE on ``device`` decoding in tiles, the depth model
    on the GPU only while it estimates.
    """
    if mode is OffloadMode.NONE:
        return components
    from mirage.hub import Lazy

    tr = components.transformer
    if tr is not None:
        tr.to("cpu")
        if mode is OffloadMode.SEQUENTIAL:
            tr.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                    offload_type="block_level", num_blocks_per_group=1, use_stream=True)
    components.vae.model.to(device)
    components.vae.enable_tiling()
    depth = components.depth
    if depth is not None:
        inner = depth
        depth = Lazy(inner.source, lambda: OffloadedDepth(inner(), device), keep=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    logger.info("offload: %s (transformer weights on the CPU, VAE tiled, depth model on the GPU only while used)",
                mode.value)
    return replace(components, depth=depth)


def offload_denoiser(denoiser: Any, mode: OffloadMode, device: torch.device) -> Any:
    """The denoiser for ``mode``: MODEL moves the transformer to ``device`` for each call; the others run where the
    weights are (SEQUENTIAL's group offload streams them), with inputs on ``device``."""
    if mode is OffloadMode.NONE:
        return denoiser
    denoiser.execution_device = device
    return ModelOffloadDenoiser(denoiser, device) if mode is OffloadMode.MODEL else denoiser
