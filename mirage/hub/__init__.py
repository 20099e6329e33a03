"""Where models come from and how they load: presets -> Hub repos + pinned revisions, strict loading through the
libraries' own loaders (diffusers / transformers ``from_pretrained`` with accelerate), downloads, the tiny preset.

- :mod:`mirage.hub.presets`: the named presets, their components, revisions and real sizes;
- :mod:`mirage.hub.sources`: where a component loads from (Hub, folder, embedded, tiny) and one-line failures;
- :mod:`mirage.hub.loaders`: strict loading of one component;
- :mod:`mirage.hub.components`: a preset's loaded components (:func:`load_components`), :func:`load_vae`;
- :mod:`mirage.hub.lora`: LoRAs fused into the transformer through diffusers' LoRA loader (``--lora``, ``--distilled``);
- :mod:`mirage.hub.download`: ``mirage download`` and the cache state ``mirage models`` shows;
- :mod:`mirage.hub.tiny`: the tiny random preset for tests.
"""

from mirage.hub.components import Components, Lazy, load_components, load_vae
from mirage.hub.download import cached, download
from mirage.hub.lora import FusedLora, LoraSpec, distill_lora, fuse_loras, parse_lora
from mirage.hub.presets import (
    DEFAULT_PRESET,
    PRESETS,
    Component,
    ComponentSpec,
    LoraFile,
    Preset,
    PresetInfo,
    PresetSpec,
    SourceKind,
    list_presets,
    parse_preset,
    preset_components,
)
from mirage.hub.sources import TINY_VERSION, ResolvedSource, cache_dir, parse_override, tiny_dir
from mirage.hub.tiny import TINY_TEXT_DIM, build_tiny

__all__ = [
    "DEFAULT_PRESET", "PRESETS", "TINY_TEXT_DIM", "TINY_VERSION", "Component", "ComponentSpec", "Components",
    "FusedLora", "Lazy", "LoraFile", "LoraSpec", "Preset", "PresetInfo", "PresetSpec", "ResolvedSource", "SourceKind",
    "build_tiny", "cache_dir", "cached", "distill_lora", "download", "fuse_loras", "list_presets", "load_components",
    "load_vae", "parse_lora", "parse_override", "parse_preset", "preset_components", "tiny_dir",
]
