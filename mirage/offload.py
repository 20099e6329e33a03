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

import torch

logger = logging.getLogger("mirage")


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


def apply_offload(pipe, mode) -> None:
    """Set up ``pipe`` (a :class:`mirage.pipeline.Pipeline`) for ``mode`` (an OffloadMode other than NONE)."""
    from mirage.pipeline import OffloadMode

    dev = pipe.device
    tr = pipe.denoiser.transformer
    if mode is OffloadMode.MODEL:
        pipe.denoiser = ModelOffloadDenoiser(pipe.denoiser, dev)
    elif mode is OffloadMode.SEQUENTIAL:
        tr.to("cpu")
        tr.enable_group_offload(onload_device=dev, offload_device=torch.device("cpu"), offload_type="block_level",
                                num_blocks_per_group=1, use_stream=True)
        pipe.denoiser.execution_device = dev
    pipe.vae.model.to(dev)
    pipe.vae.enable_tiling()
    pipe.offload_depth = True
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    logger.info("offload: %s (transformer weights on the CPU, VAE tiled, depth model on the GPU only while used)",
                mode.value)
