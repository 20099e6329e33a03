"""A preset's loaded components: the VAE and transformer now, the text encoder, tokenizer and depth model lazily."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mirage.errors import InputError, ModelError
from mirage.hub.loaders import (
    fetch_file,
    load_diffusers,
    load_scheduler_config,
    load_text_encoder,
    load_tokenizer,
    quiet,
)
from mirage.hub.presets import (
    DEFAULT_PRESET,
    PRESETS,
    Component,
    ComponentSpec,
    Preset,
    depth_spec,
    parse_preset,
)
from mirage.hub.sources import ResolvedSource, parse_override, resolve
from mirage.vae import VAE, VAE_CLASSES

logger = logging.getLogger("mirage")


@dataclass
class Lazy:
    """A component loaded on demand. ``keep=False`` (text encoder): every call loads a fresh copy that the
    caller frees after use, so it is never resident next to the transformer."""

    source: ResolvedSource
    _load: Callable[[], Any]
    keep: bool = False
    _value: Any = field(default=None, repr=False)

    def __call__(self) -> Any:
        if not self.keep:
            return self._load()
        if self._value is None:
            self._value = self._load()
        return self._value


@dataclass
class Components:
    """What :func:`load_components` returns.

    Attributes:
        preset: the preset asked for.
        vae: the loaded VAE wrapper.
        transformer: ``WanVACETransformer3DModel`` (eval, on ``device``) or None when not needed/available.
        scheduler_config: the scheduler's config dict (``_class_name`` included) or None.
        text_encoder: lazy UMT5 loader (each call loads; free it after use) or None.
        tokenizer: lazy tokenizer (loaded once) or None.
        depth: lazy depth-model loader (loaded once) or None.
        resolved: component name -> where it is loaded from (for the run report).
        prompt_embeds: fixed (L, D) prompt embeddings used instead of a text encoder (random-weight benchmark), or
            None.
        classes: component -> the class it loads as (known before a lazy component loads).
        loras: the LoRAs fused into the transformer (:class:`~mirage.hub.lora.FusedLora`), in order.
    """

    preset: Preset
    vae: VAE
    transformer: Any | None
    scheduler_config: dict[str, Any] | None
    text_encoder: Lazy | None
    tokenizer: Lazy | None
    depth: Lazy | None
    resolved: dict[str, Any]
    prompt_embeds: torch.Tensor | None = None
    classes: dict[str, str] = field(default_factory=dict)
    loras: tuple = ()  # the FusedLora records of the LoRAs fused into ``transformer`` (mirage.hub.lora)


def load_vae(repo_or_path: str | Path, *, revision: str | None = None, subfolder: str | None = None,
             device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> VAE:
    """A :class:`~mirage.vae.VAE` (Wan or TAESD family) from a Hub id or a local folder, loaded strictly.

    Args:
        repo_or_path: Hub repo id (``"madebyollin/taesd"``) or a folder with ``config.json`` and safetensors weights.
        revision: Hub revision (ignored for folders). subfolder: ``"vae"`` in a pipeline repo, or None.
        device, dtype: where and in which dtype the weights end up.
    """
    path = Path(repo_or_path).expanduser()
    local = path.is_dir()
    src = ResolvedSource(Component.VAE, str(path.resolve()) if local else str(repo_or_path),
                         None if local else (revision or "main"), subfolder, local)
    model = load_diffusers(src, device=device, dtype=dtype, allowed_classes=VAE_CLASSES, preset=None)
    return VAE(model, source=src.describe())


def load_components(
    preset: Preset | str = DEFAULT_PRESET,
    *,
    overrides: dict[str, str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    vae_dtype: torch.dtype = torch.float32,
    need_denoiser: bool = True,
    need_depth: bool = True,
    tiny_root: Path | None = None,
    loras: tuple = (),
) -> Components:
    """Load a preset's components (VAE now; transformer + scheduler if ``need_denoiser``; text encoder, tokenizer
    and depth lazily).

    Args:
        preset: a :class:`Preset` or its name.
        overrides: component name -> Hub id (``owner/name[@revision][:subfolder]``) or local folder.
        device: where the VAE and transformer go (the text encoder too, when called).
        dtype: transformer / text-encoder / depth dtype (bfloat16 on GPU; float32 for CPU tests).
        vae_dtype: VAE dtype (float32 by default, as diffusers' Wan examples keep it).
        need_denoiser: load the transformer + scheduler (the preview preset has none: asking raises).
        need_depth: attach the depth loader.
        tiny_root: cache root for the tiny preset (default :func:`~mirage.hub.sources.cache_dir`).
        loras: :class:`~mirage.hub.lora.LoraSpec` s fused into the transformer right after it loads (before any
            FP8 conversion, offload or compile the caller applies); see :mod:`mirage.hub.lora`.

    Raises:
        InputError: unknown preset or override key, bad override value.
        ModelError: a component missing, offline and uncached, not safetensors, or not matching its config.
    """
    from mirage.hub.lora import check_loras, fuse_loras, open_lora
    from mirage.hub.tiny import build_tiny

    p = parse_preset(preset)
    spec = PRESETS[p]
    check_loras(loras)
    if loras and not need_denoiser:
        raise InputError("--lora: LoRAs apply to the video transformer, which this run does not load (drop --lora)")
    overrides = dict(overrides or {})
    valid = {c.value for c in Component}
    for k in overrides:
        if k not in valid:
            raise InputError(f"overrides: unknown component {k!r}; valid: {', '.join(sorted(valid))}")
    if need_denoiser and spec.get(Component.TRANSFORMER) is None and "transformer" not in overrides:
        raise ModelError(f"preset {p.value}: has no denoiser; use preset {DEFAULT_PRESET.value} for generation")
    if p is Preset.TINY:
        build_tiny(tiny_root)
    for lora in loras:  # found (or downloaded) and its header read now: an uncached, truncated or corrupt LoRA
        open_lora(lora)  # fails before minutes of model loading

    resolved: dict[str, ResolvedSource] = {}

    def res(name: Component) -> ResolvedSource:
        cspec = spec.get(name)
        if cspec is None and name.value in overrides:
            cspec = ComponentSpec(name, "", "", None, None, "", 0)
        if cspec is None:
            raise ModelError(f"preset {p.value}: has no {name.value} component; pass one with "
                             f"--{name.value.replace('_', '-')}")
        r = resolve(cspec, overrides, tiny_root)
        resolved[name.value] = r
        return r

    vae_src = res(Component.VAE)
    vae = VAE(load_diffusers(vae_src, device=device, dtype=vae_dtype, allowed_classes=VAE_CLASSES, preset=p),
              source=vae_src.describe())

    transformer = scheduler_config = text_encoder = tokenizer = None
    fused: tuple = ()
    classes: dict[str, str] = {}
    if need_denoiser:
        t_src = res(Component.TRANSFORMER)
        transformer = load_diffusers(t_src, device=device, dtype=dtype, allowed_classes=("WanVACETransformer3DModel",),
                                     preset=p).requires_grad_(False)
        fused = fuse_loras(transformer, loras)
        scheduler_config = load_scheduler_config(res(Component.SCHEDULER), preset=p)
        te_src, tok_src = res(Component.TEXT_ENCODER), res(Component.TOKENIZER)
        # fail now, not minutes later, when the (lazy) text encoder or tokenizer is not there
        fetch_file(te_src, "config.json", p)
        fetch_file(tok_src, "tokenizer_config.json", p)
        text_encoder = Lazy(te_src, lambda: load_text_encoder(te_src, device=device, dtype=dtype, preset=p), keep=False)
        tok_cls = None if "tokenizer" in overrides else spec.get(Component.TOKENIZER).cls_name
        classes = {"text_encoder": "UMT5EncoderModel", "tokenizer": tok_cls or "from tokenizer_config.json"}
        tokenizer = Lazy(tok_src, lambda: load_tokenizer(tok_src, cls_name=tok_cls, preset=p), keep=True)

    depth = None
    if need_depth:
        d_src = (parse_override(Component.DEPTH, overrides["depth"], None) if "depth" in overrides
                 else resolve(depth_spec(p), {}, tiny_root))
        resolved["depth"] = d_src
        classes["depth"] = "AutoModelForDepthEstimation" if "depth" in overrides else depth_spec(p).cls_name

        def _load_depth() -> Any:
            # loaded when first needed: a run with a depth file (--depth) never needs the depth model
            from mirage import depth as depth_mod

            fetch_file(d_src, "config.json", p)
            with quiet():
                return depth_mod.load_depth_model(str(d_src.folder) if d_src.local else d_src.source,
                                                  revision=d_src.revision, device=device, dtype=dtype)

        depth = Lazy(d_src, _load_depth, keep=True)

    logger.info("models: %s", ", ".join(f"{k}={v.describe()}" for k, v in resolved.items()))
    return Components(p, vae, transformer, scheduler_config, text_encoder, tokenizer, depth, resolved, classes=classes,
                      loras=fused)
