"""The denoise stage: VACE conditioning streams and the flow-matching sampler of ``WanVACEPipeline``.

VACE conditions the Wan transformer on ``2C + 64`` channels per latent frame (96 for Wan 2.1's C = 16):

* ``inactive`` (C): the normalised latent of ``video * (1 - mask)``: the content to keep;
* ``reactive`` (C): the normalised latent of ``video * mask``: content inside the region to generate;
* ``mask`` (64): the pixel mask (True = generate) packed per latent cell: channel ``8i + j`` of cell (y, x) is
  the mask at pixel ``(8y + i, 8x + j)``, sampled in time with ``nearest-exact`` from F pixel frames to T latent
  frames (diffusers' ``prepare_masks``).

:func:`conditioning_from_video` builds them exactly as diffusers does (two VAE encodes).
:func:`conditioning_from_latents` builds them from the latent memory without any VAE encode: inactive = the
warped latents, with holes set to the empty-video latent; reactive = the empty-video latent; mask = each latent
cell's hole flag on all 64 channels. Equivalence: for an RGB render that is 0 in its holes, ``video * mask`` is
all zeros, so diffusers' reactive stream *is* the empty-video latent, and ``video * (1 - mask) == video``, so
its inactive stream is the encoded render (whose hole cells encode zeros). See docs/models.md.

All latents here are *normalised* (see :mod:`mirage.vae`); :class:`Denoiser` returns normalised latents that
:meth:`mirage.vae.VAE.decode` takes directly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mirage._check import check_shape
from mirage.errors import InputError, ModelError
from mirage.latent_space import LatentSpace
from mirage.vae import VAE, VaeKind

logger = logging.getLogger("mirage")

#: Wan 2.1's latent space (the VACE transformers' default): 16 channels, 8 pixels a cell, 4 frames a latent frame.
WAN_LATENT_SPACE = LatentSpace(channels=16, spatial_stride=8, temporal_stride=4)

MASK_CHANNELS = 64  # 8 x 8 pixels per latent cell


@dataclass(frozen=True)
class VaceConditioning:
    """VACE's control input for one chunk.

    Attributes:
        video_latents: (T, 2C + 64, h, w) float: [inactive (C), reactive (C), packed mask (64)] per latent frame,
            latents normalised, mask in [0, 1] (1 = generate).
        num_frames: F, the pixel frames this conditioning describes (T = (F - 1) // 4 + 1).
    """

    video_latents: torch.Tensor
    num_frames: int

    @property
    def latent_channels(self) -> int:
        return (self.video_latents.shape[1] - MASK_CHANNELS) // 2

    @property
    def inactive(self) -> torch.Tensor:
        """(T, C, h, w) normalised latents of the content to keep."""
        return self.video_latents[:, : self.latent_channels]

    @property
    def reactive(self) -> torch.Tensor:
        """(T, C, h, w) normalised latents of the content inside the generated region."""
        c = self.latent_channels
        return self.video_latents[:, c : 2 * c]

    @property
    def mask(self) -> torch.Tensor:
        """(T, 64, h, w) packed mask, 1 = generate."""
        return self.video_latents[:, 2 * self.latent_channels :]


def _require_wan(vae: VAE) -> None:
    if vae.kind is not VaeKind.WAN or vae.spatial_stride != 8:
        raise ModelError(f"vae {vae.source}: VACE conditioning needs the Wan VAE (AutoencoderKLWan), got {vae.kind.value}")


def pack_mask(mask: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
    """Pack a pixel mask into VACE's 64-channel layout, as diffusers' ``prepare_masks`` does.

    Args:
        mask: (F, H, W) float in [0, 1] (or bool), 1 = generate; H, W multiples of 8.
        num_latent_frames: T.

    Returns:
        (T, 64, H/8, W/8) float32.
    """
    check_shape(mask, ["F", "H", "W"], "mask")
    f, hh, ww = mask.shape
    h, w = hh // 8, ww // 8
    m = mask.float().view(f, h, 8, w, 8)  # (F, h, 8, w, 8)
    m = m.permute(2, 4, 0, 1, 3).flatten(0, 1)  # (64, F, h, w)
    m = F.interpolate(m.unsqueeze(0), size=(num_latent_frames, h, w), mode="nearest-exact").squeeze(0)  # (64, T, h, w)
    return m.permute(1, 0, 2, 3).contiguous()  # (T, 64, h, w)


@torch.no_grad()
def conditioning_from_video(vae: VAE, video: torch.Tensor, mask: torch.Tensor) -> VaceConditioning:
    """VACE conditioning from pixels, exactly as ``WanVACEPipeline`` builds it (two VAE encodes).

    Args:
        vae: the Wan VAE.
        video: (F, 3, H, W) float in [-1, 1]; F = 4k+1; H, W multiples of 16.
        mask: (F, H, W) bool or float in [0, 1], True/1 = generate. The streams use ``mask > 0.5``; the packed
            mask channels keep the values as given (diffusers does the same).

    Returns:
        the conditioning, in the VAE dtype.
    """
    _require_wan(vae)
    check_shape(video, ["F", 3, "H", "W"], "video")
    f, _, hh, ww = video.shape
    check_shape(mask, [f, hh, ww], "mask")
    t = vae.num_latent_frames(f)
    m = mask.to(vae.device, torch.float32)
    binary = torch.where(m > 0.5, 1.0, 0.0).to(vae.dtype)[:, None]  # (F, 1, H, W)
    v = video.to(vae.device, torch.float32).to(vae.dtype)
    inactive = vae.encode_video(v * (1 - binary))  # (T, C, h, w)
    reactive = vae.encode_video(v * binary)  # (T, C, h, w)
    packed = pack_mask(m, t).to(inactive.dtype)  # (T, 64, h, w)
    return VaceConditioning(torch.cat([inactive, reactive, packed], dim=1), f)


@torch.no_grad()
def conditioning_from_render(vae: VAE, inactive: torch.Tensor, pixel_holes: torch.Tensor) -> VaceConditioning:
    """VACE conditioning of the RGB memory: its render, already VAE-encoded by the memory's read.

    Equal to :func:`conditioning_from_video` (diffusers' way) for a render that is 0 in its holes, with one VAE
    encode instead of two: ``video * (1 - mask)`` is the render itself (encoded by the RGB memory's read) and
    ``video * mask`` is an all-zero video, whose latent is the cached :meth:`VAE.empty_latents`.

    Args:
        vae: the Wan VAE.
        inactive: (T, C, h, w) normalised latents of the render (0 in holes), as ``RGBMemory.read`` returns them.
        pixel_holes: (F, H, W) bool, True = generate (the render's holes).
    """
    _require_wan(vae)
    check_shape(pixel_holes, ["F", "H", "W"], "pixel_holes")
    f, hh, ww = pixel_holes.shape
    t = vae.num_latent_frames(f)
    check_shape(inactive, [t, vae.latent_channels, hh // vae.spatial_stride, ww // vae.spatial_stride], "inactive")
    empty = vae.empty_latents(f, hh, ww)  # (T, C, h, w)
    packed = pack_mask(pixel_holes.to(empty.device), t).to(empty.dtype)  # (T, 64, h, w)
    return VaceConditioning(torch.cat([inactive.to(empty.device, empty.dtype), empty, packed], dim=1), f)


@torch.no_grad()
def conditioning_from_latents(
    vae: VAE, latents: torch.Tensor, holes: torch.Tensor, num_frames: int
) -> VaceConditioning:
    """VACE conditioning from the latent memory: no RGB, no VAE encode of renders.

    Args:
        vae: the Wan VAE (used only for the cached empty-video latent).
        latents: (T, C, h, w) warped, normalised latents (values in holes are ignored).
        holes: (T, h, w) bool, True where nothing landed (= generate).
        num_frames: F pixel frames of the chunk, (F - 1) // 4 + 1 == T.

    Returns:
        inactive = ``latents`` with holes replaced by the empty-video latent; reactive = the empty-video latent;
        mask = each cell's hole flag on all 64 channels (a cell's 8x8 pixels and its group of 4 frames, frame 0
        alone in latent frame 0, share the value).
    """
    _require_wan(vae)
    check_shape(latents, ["T", vae.latent_channels, "h", "w"], "latents")
    t, _, h, w = latents.shape
    check_shape(holes, [t, h, w], "holes")
    if vae.num_latent_frames(num_frames) != t:
        raise InputError(
            f"num_frames: {num_frames} pixel frames give {vae.num_latent_frames(num_frames)} latent frames, "
            f"but latents has {t}; pass num_frames = {vae.num_pixel_frames(t)}"
        )
    empty = vae.empty_latents(num_frames, h * vae.spatial_stride, w * vae.spatial_stride)  # (T, C, h, w)
    lat = latents.to(empty.device, empty.dtype)
    hole = holes.to(empty.device).bool()[:, None]  # (T, 1, h, w)
    inactive = torch.where(hole, empty, lat)
    packed = hole.to(empty.dtype).expand(t, MASK_CHANNELS, h, w)  # (T, 64, h, w)
    return VaceConditioning(torch.cat([inactive, empty, packed], dim=1), num_frames)


def make_scheduler(config: dict[str, Any], flow_shift: float | None = None) -> Any:
    """A fresh scheduler from its config dict (``_class_name`` picks the diffusers class).

    Args:
        config: the repo's scheduler config.
        flow_shift: overrides the config's ``flow_shift`` (as diffusers' Wan examples do:
            ``UniPCMultistepScheduler.from_config(config, flow_shift=...)``); None keeps the config's.
    """
    import diffusers

    name = config.get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ModelError(f"scheduler config: unknown _class_name {name!r}; use UniPCMultistepScheduler")
    if flow_shift is None:
        return cls.from_config(config)
    scheduler = cls.from_config(config, flow_shift=float(flow_shift))
    # from_config drops keys the class does not know: a shift the scheduler would ignore must not pass silently
    if scheduler.config.get("flow_shift") != float(flow_shift) or not scheduler.config.get("use_flow_sigmas", False):
        raise ModelError(f"flow shift {flow_shift:g}: scheduler {name} has none (it needs flow_shift and "
                         "use_flow_sigmas=True, as Wan's UniPCMultistepScheduler); use such a scheduler, or --fast "
                         "without --flow-shift to keep the scheduler config as it is")
    return scheduler


class Denoiser:
    """Wan VACE sampling, step for step as ``WanVACEPipeline.__call__`` (same scheduler, timesteps, noise, cfg).

    Args:
        transformer: a ``WanVACETransformer3DModel`` (eval, on its device/dtype).
        scheduler_config: the scheduler config dict (a fresh scheduler is made per call: they are stateful).
        space: the latent space of the VAE the latents belong to (default: Wan 2.1's, strides 8 and 4).
    """

    def __init__(self, transformer: Any, scheduler_config: dict[str, Any], *, space: LatentSpace | None = None,
                 execution_device: torch.device | None = None):
        self.transformer = transformer
        self.execution_device = execution_device  # where latents live when the weights are offloaded to the CPU
        self.scheduler_config = dict(scheduler_config)
        make_scheduler(self.scheduler_config)  # validate now
        self.space = space or WAN_LATENT_SPACE

    @property
    def device(self) -> torch.device:
        if self.execution_device is not None:
            return self.execution_device
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the transformer takes its inputs in. Not simply the first parameter's: loaded with
        ``torch_dtype=bfloat16``, diffusers keeps a few Wan modules (norms, time embedder, ...) in float32, and
        ``ModelMixin.dtype`` skips those."""
        dtype = getattr(self.transformer, "dtype", None)
        if isinstance(dtype, torch.dtype):
            return dtype
        return self.transformer.patch_embedding.weight.dtype

    def _check(self, cond: VaceConditioning, num_frames: int, height: int, width: int, embeds: torch.Tensor, name: str) -> None:
        cfg = self.transformer.config
        base = self.space.spatial_stride * cfg.patch_size[1]
        if height % base or width % base:
            raise InputError(
                f"size: {width}x{height} is not a multiple of {base}; use {width // base * base}x{height // base * base}"
            )
        t = self.space.num_latent_frames(num_frames)
        want = (t, cfg.vace_in_channels, *self.space.latent_size(height, width))
        if tuple(cond.video_latents.shape) != want:
            raise InputError(f"cond.video_latents: shape {tuple(cond.video_latents.shape)}, expected {want} for {num_frames} frames at {width}x{height}")
        if embeds.ndim != 2 or embeds.shape[1] != cfg.text_dim:
            raise InputError(f"{name}: shape {tuple(embeds.shape)}, expected (L, {cfg.text_dim})")

    @torch.no_grad()
    def __call__(
        self,
        cond: VaceConditioning,
        prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor | None = None,
        *,
        num_frames: int,
        height: int,
        width: int,
        steps: int = 20,
        guidance: float = 1.0,
        flow_shift: float | None = None,
        conditioning_scale: float | Sequence[float] = 1.0,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        callback: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Sample one chunk.

        Args:
            cond: VACE conditioning for the chunk.
            prompt_embeds: (L, D) text embeddings (:mod:`mirage.prompt`).
            negative_prompt_embeds: (L, D), required when ``guidance > 1``.
            num_frames: F (4k+1); height, width: pixels (multiples of 16).
            steps: scheduler steps.
            guidance: classifier-free guidance scale; 1.0 = off (one transformer forward per step), > 1 = two.
            flow_shift: the scheduler's flow shift (> 0); None = the scheduler config's own. See
                :mod:`mirage.sampling` for the defaults by resolution.
            conditioning_scale: VACE strength, one float or one per VACE layer.
            generator: source of the initial noise (on CPU or the transformer's device); or ``seed``.
            callback: called as ``callback(step, total)`` after each step (step counts from 1).

        Returns:
            (T, C, h, w) float32 *normalised* latents (decode with :meth:`mirage.vae.VAE.decode`).
        """
        from diffusers.utils.torch_utils import randn_tensor

        if steps < 1:
            raise InputError(f"steps: got {steps}; need at least 1")
        if guidance < 1.0:
            raise InputError(f"guidance: got {guidance}; use 1.0 (off) or more")
        do_cfg = guidance > 1.0
        if do_cfg and negative_prompt_embeds is None:
            raise InputError(f"negative_prompt_embeds: required with guidance {guidance} > 1; encode \"\" or a negative prompt")
        if flow_shift is not None and not (math.isfinite(flow_shift) and flow_shift > 0):
            raise InputError(f"flow_shift: got {flow_shift}; need a number > 0 (e.g. 3.0 at 480p, 5.0 at 720p)")
        if generator is not None and seed is not None:
            raise InputError("generator/seed: pass one of them, not both")
        self._check(cond, num_frames, height, width, prompt_embeds, "prompt_embeds")
        if do_cfg:
            self._check(cond, num_frames, height, width, negative_prompt_embeds, "negative_prompt_embeds")  # type: ignore[arg-type]

        device, tdtype = self.device, self.dtype
        cfg = self.transformer.config
        n_vace = len(cfg.vace_layers)
        scales = [float(conditioning_scale)] * n_vace if isinstance(conditioning_scale, (int, float)) else list(conditioning_scale)
        if len(scales) != n_vace:
            raise InputError(f"conditioning_scale: {len(scales)} values for {n_vace} VACE layers; pass one float or {n_vace}")
        scale_t = torch.tensor(scales).to(device=device, dtype=tdtype)
        if generator is None and seed is not None:
            generator = torch.Generator("cpu").manual_seed(int(seed))

        pos = prompt_embeds.to(device=device, dtype=tdtype)[None]  # (1, L, D)
        neg = negative_prompt_embeds.to(device=device, dtype=tdtype)[None] if do_cfg else None  # type: ignore[union-attr]
        control = cond.video_latents.permute(1, 0, 2, 3)[None].to(device=device, dtype=tdtype)  # (1, 96, T, h, w)

        scheduler = make_scheduler(self.scheduler_config, flow_shift)
        scheduler.set_timesteps(steps, device=device)
        timesteps = scheduler.timesteps
        shape = (1, cfg.in_channels, self.space.num_latent_frames(num_frames), *self.space.latent_size(height, width))
        latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

        model = self.transformer
        for i, t in enumerate(timesteps):
            x = latents.to(tdtype)
            timestep = t.expand(latents.shape[0])
            with model.cache_context("cond"):
                noise = model(hidden_states=x, timestep=timestep, encoder_hidden_states=pos,
                              control_hidden_states=control, control_hidden_states_scale=scale_t, return_dict=False)[0]
            if do_cfg:
                with model.cache_context("uncond"):
                    noise_uncond = model(hidden_states=x, timestep=timestep, encoder_hidden_states=neg,
                                         control_hidden_states=control, control_hidden_states_scale=scale_t, return_dict=False)[0]
                    noise = noise_uncond + guidance * (noise - noise_uncond)
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
            if callback is not None:
                callback(i + 1, len(timesteps))
        return latents[0].permute(1, 0, 2, 3).float().contiguous()  # (T, C, h, w)
