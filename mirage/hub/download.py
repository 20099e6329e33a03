"""``mirage download`` (fetch a preset into the Hugging Face cache) and ``mirage models``' cache state."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mirage.errors import ModelError
from mirage.hub.loaders import DIFFUSERS_WEIGHTS, TRANSFORMERS_WEIGHTS, read_headers, weight_files
from mirage.hub.presets import (
    PRESETS,
    Component,
    ComponentSpec,
    Preset,
    SourceKind,
    parse_preset,
    preset_components,
)
from mirage.hub.sources import ResolvedSource, resolve, tiny_dir, translating

logger = logging.getLogger("mirage")


def _allow_patterns(spec: ComponentSpec) -> list[str]:
    pre = f"{spec.subfolder}/" if spec.subfolder else ""
    if spec.name is Component.TOKENIZER:
        return [f"{pre}*.json", f"{pre}*.model", f"{pre}*.txt"]
    if spec.name is Component.SCHEDULER:
        return [f"{pre}*.json"]
    return [f"{pre}*.json", f"{pre}*.safetensors", f"{pre}*.txt"]


def download(preset: Preset | str, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Path]:
    """Fetch every Hub component of a preset into the Hugging Face cache (safetensors, configs, tokenizer files).

    Args:
        preset: the preset (``tiny`` is built locally instead; the embedded preview VAE needs nothing).
        progress: called as ``progress(component, done, total)`` before each component and once at the end.

    Returns:
        component name -> local folder; ``distill_lora`` -> the file of the preset's step-distilled LoRA (fetched
        too, where the preset names one: 0.63 GB for the 14B preset).
    """
    from huggingface_hub import snapshot_download

    from mirage.hub.tiny import build_tiny

    p = parse_preset(preset)
    if p is Preset.TINY:
        root = build_tiny()
        return {c.name.value: root / c.repo_id for c in preset_components(p)}
    comps = preset_components(p)
    out: dict[str, Path] = {}
    for i, spec in enumerate(comps):
        if progress is not None:
            progress(spec.name.value, i, len(comps))
        src = resolve(spec, {})
        if spec.kind is not SourceKind.HUB:
            out[spec.name.value] = src.folder
            continue
        with translating(replace(src, subfolder=None), ",".join(_allow_patterns(spec)), p):
            folder = snapshot_download(spec.repo_id, revision=spec.revision, allow_patterns=_allow_patterns(spec))
        out[spec.name.value] = Path(folder) / (spec.subfolder or "")
        logger.info("downloaded %s (%s)", spec.name.value, src.describe())
    lora = PRESETS[p].distill_lora
    if lora is not None:  # the preset's step-distilled LoRA (--distilled), so that it works offline afterwards
        if progress is not None:
            progress("distill_lora", len(comps), len(comps))
        from mirage.hub.lora import LoraSpec, lora_file

        out["distill_lora"] = lora_file(LoraSpec(lora.source))
        logger.info("downloaded the distilled LoRA (%s)", lora.source)
    if progress is not None:
        progress("done", len(comps), len(comps))
    return out


def _required(spec: ComponentSpec) -> tuple[str, tuple[str, str] | None]:
    """(config file, weight names or None) that a component needs."""
    if spec.name is Component.TOKENIZER:
        return "tokenizer_config.json", None
    if spec.name is Component.SCHEDULER:
        return "scheduler_config.json", None
    if spec.name in (Component.TEXT_ENCODER, Component.DEPTH):
        return "config.json", TRANSFORMERS_WEIGHTS
    return "config.json", DIFFUSERS_WEIGHTS


def component_ready(src: ResolvedSource, spec: ComponentSpec) -> bool:
    """True when every file the component loads is present without network: its config, and every weight shard
    with a readable safetensors header (folder, or the local Hugging Face cache)."""
    from huggingface_hub import try_to_load_from_cache

    config, weights = _required(spec)
    if src.local:
        if not (src.folder / config).is_file():
            return False
    elif not isinstance(try_to_load_from_cache(src.source, src.repo_path(config), revision=src.revision), str):
        return False
    if weights is None:
        return True
    try:
        files, index = weight_files(src, weights, None, cache_only=True)
        read_headers(src, files, index, None)
    except ModelError:
        return False
    return True


def cached(preset: Preset | str) -> dict[str, bool]:
    """Which components of a preset can load without network (local cache, embedded or tiny folders)."""
    p = parse_preset(preset)
    out: dict[str, bool] = {}
    for spec in preset_components(p):
        if spec.kind is SourceKind.TINY:
            out[spec.name.value] = (tiny_dir() / spec.repo_id).is_dir()
            continue
        out[spec.name.value] = component_ready(resolve(spec, {}), spec)
    lora = PRESETS[p].distill_lora
    if lora is not None:
        from huggingface_hub import try_to_load_from_cache

        out["distill_lora"] = isinstance(try_to_load_from_cache(lora.repo_id, lora.filename, revision=lora.revision), str)
    return out
