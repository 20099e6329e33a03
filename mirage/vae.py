"""The VAE stage: pixels <-> normalised latents, in mirage's (T, C, h, w) layout.

One class, :class:`VAE`, wraps either diffusers' ``AutoencoderKLWan`` (Wan 2.1's causal video VAE: 8x spatial,
4x temporal) or ``AutoencoderTiny`` (TAESD: 8x spatial, per frame). Normalisation lives here and only here:
every latent that leaves this module is *normalised* (Wan: ``(z - latents_mean) / latents_std``, exactly as
``WanVACEPipeline`` does it; TAESD: ``(z - shift_factor) * scaling_factor``), and :meth:`VAE.decode` takes
normalised latents back. The denoiser works in the same normalised space.

Wan temporal layout (see docs/models.md): a video of ``F = 4k + 1`` frames gives ``T = k + 1`` latent frames;
latent frame 0 encodes pixel frame 0 alone, latent frame ``t >= 1`` encodes pixel frames ``4t-3 .. 4t`` (causally,
with the earlier frames as context). :meth:`VAE.latent_frame_indices` names the pixel frame each latent frame is
read at (0, then ``4t``, the last frame of its group).
"""

from __future__ import annotations

import itertools
import logging
import types
from enum import Enum
from typing import Any

import torch

from mirage._check import check_shape
from mirage.errors import InputError, ModelError
from mirage.latent_space import LatentSpace

logger = logging.getLogger("mirage")


class VaeKind(str, Enum):
    """Which autoencoder family a :class:`VAE` wraps."""

    WAN = "wan"  # AutoencoderKLWan: causal 3D VAE, temporal stride 4
    TINY = "tiny"  # AutoencoderTiny (TAESD family): per-frame 2D VAE, temporal stride 1


_CLASS_TO_KIND = {"AutoencoderKLWan": VaeKind.WAN, "AutoencoderTiny": VaeKind.TINY}
VAE_CLASSES = tuple(_CLASS_TO_KIND)  # the diffusers classes a VAE may be (``mirage.hub.load_vae`` loads them)


class VAE:
    """Encode/decode videos in mirage's layout; all latents are normalised.

    Args:
        model: a diffusers ``AutoencoderKLWan`` or ``AutoencoderTiny`` (already on its device/dtype).
        source: where it came from (Hub id or folder), for messages.
    """

    def __init__(self, model: Any, source: str = "<in-memory>"):
        name = type(model).__name__
        if name not in _CLASS_TO_KIND:
            raise ModelError(
                f"vae {source}: class {name} is not supported; use an AutoencoderKLWan or AutoencoderTiny folder"
            )
        self.model = model.eval().requires_grad_(False)
        self.kind = _CLASS_TO_KIND[name]
        self.source = source
        self._empty_cache: dict[tuple, torch.Tensor] = {}
        self._decoder_channels_last = False
        self._compiled = False
        self._stats_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        if self.kind is VaeKind.WAN:
            cfg = model.config
            self._latents_mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, cfg.z_dim, 1, 1, 1)
            # diffusers stores the reciprocal and multiplies; keep the same float ops for bit-for-bit parity
            self._latents_std_inv = 1.0 / torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, cfg.z_dim, 1, 1, 1)

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def spatial_stride(self) -> int:
        """Pixels per latent cell along each image axis (8 for Wan and TAESD)."""
        if self.kind is VaeKind.WAN:
            return 2 ** len(self.model.config.temperal_downsample)
        return 2 ** (len(self.model.config.encoder_block_out_channels) - 1)  # first block keeps the size

    @property
    def temporal_stride(self) -> int:
        """Pixel frames per latent frame after the first (4 for Wan, 1 for TAESD)."""
        if self.kind is VaeKind.WAN:
            return 2 ** sum(self.model.config.temperal_downsample)
        return 1

    @property
    def latent_channels(self) -> int:
        """Channels C of a latent (16 for Wan 2.1, 4 for TAESD, 16 for TAESD3)."""
        if self.kind is VaeKind.WAN:
            return int(self.model.config.z_dim)
        return int(self.model.config.latent_channels)

    @property
    def latent_space(self) -> LatentSpace:
        """This VAE's latent grid and temporal layout (:class:`mirage.latent_space.LatentSpace`)."""
        return LatentSpace(self.latent_channels, self.spatial_stride, self.temporal_stride, self.source)

    # ------------------------------------------------------------------ frame bookkeeping (the latent space's)

    def num_latent_frames(self, num_frames: int) -> int:
        """Latent frames T for ``num_frames`` pixel frames: ``(F - 1) // 4 + 1`` for Wan (F must be 4k+1), F for TAESD."""
        return self.latent_space.num_latent_frames(num_frames)

    def num_pixel_frames(self, num_latent_frames: int) -> int:
        """Pixel frames F that ``num_latent_frames`` decode to: ``4(T - 1) + 1`` for Wan, T for TAESD."""
        return self.latent_space.num_pixel_frames(num_latent_frames)

    def latent_frame_indices(self, num_frames: int) -> list[int]:
        """The pixel frame each latent frame is read at: ``[0, 4, 8, ..., F-1]`` for Wan, ``[0..F-1]`` for TAESD."""
        return self.latent_space.latent_frame_indices(num_frames)

    def _check_num_frames(self, num_frames: int) -> None:
        self.latent_space.check_frames(num_frames)

    def _check_size(self, height: int, width: int, name: str) -> None:
        s = self.spatial_stride
        if height % s or width % s or height <= 0 or width <= 0:
            raise InputError(
                f"{name}: size {width}x{height} is not a multiple of {s}; resize to "
                f"{max(s, width // s * s)}x{max(s, height // s * s)}"
            )

    # ------------------------------------------------------------------ memory switches

    def enable_tiling(self) -> None:
        """Encode/decode in overlapping spatial tiles (bounds VRAM at large sizes; results differ slightly at seams)."""
        self.model.enable_tiling()

    def disable_tiling(self) -> None:
        self.model.disable_tiling()

    def enable_slicing(self) -> None:
        """Process batch items one at a time (TAESD: frame by frame; Wan: no effect with mirage's batch of 1)."""
        self.model.enable_slicing()

    def disable_slicing(self) -> None:
        self.model.disable_slicing()

    # ------------------------------------------------------------------ speed

    def compile(self) -> None:
        """``torch.compile`` the encoder's per-frame call and the decoder by regions, once (``--compile``).

        diffusers runs the Wan VAE one latent frame at a time (``AutoencoderKLWan._decode``: a latent frame per
        decoder call, a causal feature cache between calls); compiled code fuses the RMS norms (float32 inside),
        SiLUs, causal pads and cache copies around cuDNN's convolutions, which run at full resolution and are
        memory-bound in eager mode. Same math as eager, the sums in another order (H200, bf16: relative difference
        1.4e-2 on the decode, 4e-4 on the encode, measured by ``scripts/gpu_coders.py``; ``scripts/gpu_smoke.py``
        checks both). TAESD (:attr:`VaeKind.TINY`) is left as it is: it is already a few ms a frame.

        - The encoder's call is compiled whole. Its input is first copied to a fresh tensor: the slice diffusers
          passes has strides that depend on the clip's length, and the compiled code would otherwise be rebuilt
          for every length.
        - The decoder is compiled by regions (:func:`decoder_regions`): its mid block, each up block but the last,
          the last (full-resolution) up block's residual blocks one by one, and the output norm. A compiled call holds the feature
          caches it reads and the ones it writes at once (dynamo applies the cache list's updates when the graph
          returns), so a whole-call compile held all ~1.9 GB of the decoder's caches twice at 832x480; a region holds
          only its own twice (at most ~0.46 GB, computed).

        A second frame size (``--size``, or another aspect in a batch of images) compiles each region once more
        with the size made dynamic (dynamo's automatic dynamic shapes); every later size reuses those graphs
        (``tests/test_vae.py``).

        Measured on an H200 at 832x480 (BENCHMARKS.md, fifth and sixth sessions): decode of 81 frames 1.65 s eager,
        1.05 s compiled whole, 1.08 s by regions (compile 108 s); the decode's peak above what the render held before
        it (the default path, 81 frames) 4.13 GB eager, 6.51 GB compiled whole, 5.21 GB by regions; encode of a
        33-frame clip 0.46 -> 0.34 s.
        """
        if self.kind is not VaeKind.WAN or self._compiled:
            return
        if self.device.type == "cuda":
            self._channels_last_decoder()  # settle the layout before the compiled code is traced
        vae_id = next(_COMPILED_VAES)  # names of their own per VAE: dynamo's size records are kept by name
        for i, region in enumerate(decoder_regions(self.model.decoder)):
            region.forward = torch.compile(_own_forward(region, f"vae{vae_id}_region{i}"))
        enc = self.model.encoder
        enc.forward = _fresh_input(torch.compile(enc.forward), torch.contiguous_format)
        self._compiled = True

    # ------------------------------------------------------------------ normalisation (the one place)

    def _wan_stats(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Wan's latent mean and 1/std, (1, C, 1, 1, 1), on ``device`` in ``dtype``: copied there once, not on
        every call (each host-to-device copy would block the stream)."""
        key = (device, dtype)
        if key not in self._stats_cache:
            self._stats_cache[key] = (self._latents_mean.to(device, dtype), self._latents_std_inv.to(device, dtype))
        return self._stats_cache[key]

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> normalised latents. raw: (B, C, T, h, w) (Wan) or (N, C, h, w) (TAESD)."""
        if self.kind is VaeKind.WAN:
            mean, std_inv = self._wan_stats(raw.device, torch.float32)
            return ((raw.float() - mean) * std_inv).to(self.dtype)
        cfg = self.model.config
        return (raw - float(getattr(cfg, "shift_factor", 0.0) or 0.0)) * float(cfg.scaling_factor)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> raw VAE latents (inverse of :meth:`normalize`, the pipeline's decode formula).
        latents: (B, C, T, h, w) (Wan) or (N, C, h, w) (TAESD)."""
        if self.kind is VaeKind.WAN:
            mean, std_inv = self._wan_stats(latents.device, latents.dtype)
            return latents / std_inv + mean
        cfg = self.model.config
        return latents / float(cfg.scaling_factor) + float(getattr(cfg, "shift_factor", 0.0) or 0.0)

    # ------------------------------------------------------------------ encode / decode

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Encode a video to normalised latents.

        Args:
            video: (F, 3, H, W) float in [-1, 1]; F = 4k+1 for Wan; H, W multiples of :attr:`spatial_stride`.

        Returns:
            (T, C, H/8, W/8) normalised latents in the VAE dtype, on the VAE device; T = (F-1)//4+1 (Wan) or F.
            Wan uses the posterior mode (``latent_dist.mode()``), as ``WanVACEPipeline`` does ("argmax").
        """
        check_shape(video, ["F", 3, "H", "W"], "video")
        f, _, h, w = video.shape
        self._check_num_frames(f)
        self._check_size(h, w, "video")
        x = video.to(self.device, self.dtype)
        if self.kind is VaeKind.WAN:
            x = x.permute(1, 0, 2, 3).unsqueeze(0)  # (1, 3, F, H, W)
            raw = self.model.encode(x).latent_dist.mode()  # (1, C, T, h, w)
            return self.normalize(raw)[0].permute(1, 0, 2, 3).contiguous()  # (T, C, h, w)
        raw = self.model.encode(x).latents  # (F, C, h, w)
        return self.normalize(raw)

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Encode one image. image: (3, H, W) float in [-1, 1]. Returns (C, H/8, W/8) normalised latents."""
        check_shape(image, [3, "H", "W"], "image")
        return self.encode_video(image.unsqueeze(0))[0]

    def _channels_last_decoder(self) -> None:
        """Wan decoder convolutions in channels-last-3d (NDHWC), once, on CUDA: cuDNN's conv3d kernels then skip
        their layout transposes (H100, bf16, 81 frames at 832x480: 2.07 -> 1.87 s; BENCHMARKS.md). Same math;
        the sums run in another order (differences at bf16 rounding, checked by scripts/gpu_smoke.py)."""
        if self._decoder_channels_last:
            return
        for part in (self.model.post_quant_conv, self.model.decoder):
            for m in part.modules():
                if isinstance(m, torch.nn.Conv3d):
                    m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)
        self._decoder_channels_last = True

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode normalised latents to pixels.

        Args:
            latents: (T, C, h, w) normalised latents (any float dtype; cast to the VAE dtype).

        Returns:
            (F, 3, 8h, 8w) float in [-1, 1] (VAE dtype), F = 4(T-1)+1 for Wan, T for TAESD.
        """
        check_shape(latents, ["T", self.latent_channels, "h", "w"], "latents")
        z = latents.to(self.device, self.dtype)
        if self.kind is VaeKind.WAN:
            z = self.denormalize(z.permute(1, 0, 2, 3).unsqueeze(0))  # (1, C, T, h, w)
            if z.device.type == "cuda":
                self._channels_last_decoder()
                z = z.contiguous(memory_format=torch.channels_last_3d)
            out = self.model.decode(z).sample  # (1, 3, F, H, W)
            return out[0].permute(1, 0, 2, 3).contiguous()  # (F, 3, H, W)
        return self.model.decode(self.denormalize(z)).sample.clamp(-1.0, 1.0)  # (T, 3, H, W)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Encode N independent images (each its own one-frame clip).

        Args:
            images: (N, 3, H, W) float in [-1, 1].
        Returns:
            (N, C, h, w) normalised latents (for Wan: latent frame 0 of a one-frame video, per image).
        """
        check_shape(images, ["N", 3, "H", "W"], "images")
        if self.kind is VaeKind.WAN:
            return torch.cat([self.encode_video(img[None]) for img in images])
        return self.encode_video(images)

    @torch.no_grad()
    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode N independent latent maps (each a one-frame clip) to images.

        Args:
            latents: (N, C, h, w) normalised latents.
        Returns:
            (N, 3, 8h, 8w) float in [-1, 1].
        """
        check_shape(latents, ["N", self.latent_channels, "h", "w"], "latents")
        if self.kind is VaeKind.WAN:
            return torch.cat([self.decode(z[None]) for z in latents])
        return self.decode(latents)

    @torch.no_grad()
    def empty_latents(self, num_frames: int, height: int, width: int) -> torch.Tensor:
        """The normalised latent of an all-zero (mid-grey) video: what the VAE gives for "no content".

        Computed once per (F, H, W, device, dtype) and cached; returns a clone so callers may edit it.

        Args:
            num_frames: F pixel frames (4k+1 for Wan).
            height, width: pixel size H, W (multiples of 8).

        Returns:
            (T, C, H/8, W/8) normalised latents, VAE dtype and device.
        """
        self._check_num_frames(num_frames)
        self._check_size(height, width, "empty_latents")
        key = (num_frames, height, width, str(self.device), self.dtype)
        if key not in self._empty_cache:
            zeros = torch.zeros(num_frames, 3, height, width, device=self.device, dtype=self.dtype)
            self._empty_cache[key] = self.encode_video(zeros)
        return self._empty_cache[key].clone()


_COMPILED_VAES = itertools.count()  # VAE.compile's count, in this process


def decoder_regions(decoder: torch.nn.Module) -> list[torch.nn.Module]:
    """The parts of a Wan decoder (diffusers' ``WanDecoder3d``) that :meth:`VAE.compile` compiles one by one: the mid
    block, each up block but the last, the last up block's residual blocks and the output norm. The input
    convolution, the last up block's loop and the output SiLU and convolution stay eager (single passes).

    Feature caches each region holds twice during its call, at 832x480 in bf16 (computed: channels x 2 frames x
    pixels x 2 bytes per causal convolution): mid 38 MB, up blocks 68, 250 and 460 MB, a full-resolution
    residual block 307 MB; the whole decoder ~1.9 GB."""
    *ups, last = decoder.up_blocks
    return [decoder.mid_block, *ups, *last.resnets, decoder.norm_out]


def _own_forward(module: torch.nn.Module, tag: str) -> Any:
    """``module.forward`` bound, its code object copied under a name of its own.

    dynamo keeps compiled graphs, the recompile limit and the automatic-dynamic size records per code object
    (its name, file and line): regions that share a class (the up blocks, the residual blocks) would otherwise
    count as one function whose sizes change, and be recompiled with dynamic shapes."""
    fn = type(module).forward
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    own = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    own.__kwdefaults__ = fn.__kwdefaults__
    return own.__get__(module)


def _fresh_input(fn: Any, memory_format: torch.memory_format) -> Any:
    """``fn(x, ...)`` called with ``x`` copied to a new tensor in ``memory_format`` (strides that depend only on its
    shape, so a compiled ``fn`` sees the same strides for every slice of every clip length)."""

    def call(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return fn(x.clone(memory_format=memory_format), *args, **kwargs)

    return call

