"""Named model presets: which Hub repo, revision, class and size each component of a preset has.

This is the one module that knows repo ids. Sizes are the real repos' file sizes (``../shared/hub/*/FILES.tsv``,
read off the Hub's tree pages; ``tests/test_hub_replica.py`` checks them against those listings).

Revisions are pinned to full commit hashes where one was seen (the 14B repo's tree at ``33d59f4b...``); where only
a short hash was seen (1.3B ``72ff8bd``, Depth Pro ``de816c8``) the revision is ``main``, since a short hash is not
a revision the Hub cache can be looked up by. ``docs/models.md`` says how to pin them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mirage.errors import InputError

WAN_VACE_1_3B_REPO = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
WAN_VACE_1_3B_REVISION = "main"  # tree page seen at 72ff8bd (short hash only)
WAN_VACE_14B_REPO = "Wan-AI/Wan2.1-VACE-14B-diffusers"
WAN_VACE_14B_REVISION = "33d59f4b703e484d3f28f5da4d065218dea42552"  # the official tree/blob pages' commit
TAESD_REPO = "madebyollin/taesd"  # the embedded preview VAE's origin (also loadable with --vae madebyollin/taesd)
TAESD_REVISION = "931366cc24b8bc15d6f682fa2e0352f1deec397b"

#: Sizes in bytes of the real repos' files (FILES.tsv; rounded Hub sizes where the exact one was not shown).
WAN_VAE_BYTES = 507_591_892  # vae/diffusion_pytorch_model.safetensors, same sha256 in the 1.3B and 14B repos
WAN_TEXT_ENCODER_BYTES = 4_940_000_000 + 4_983_103_192 + 1_442_935_480 + 22_500  # 3 shards + index
WAN_TOKENIZER_BYTES = 7_080 + 4_550_000 + 16_837_459 + 61_800  # special_tokens_map, spiece, tokenizer, config
WAN_VACE_1_3B_TRANSFORMER_BYTES = 5_000_000_000 + 2_150_000_000  # 2 shards
WAN_VACE_14B_TRANSFORMER_BYTES = 63_200_000_000  # 13 shards: 10 exact + 3 unseen at ~4.92e9 each
TAESD_BYTES = 4_903_270  # the embedded bf16 re-save (the Hub repo's float32 file is 9.79 MB)

#: lightx2v's step- and CFG-distilled LoRA for Wan 2.1 14B (4 steps, guidance off): the file lightx2v's own LoRA
#: config names (ModelTC/LightX2V ``configs/distill/wan_t2v_distill_4step_cfg_lora.json``). Only a short hash of
#: this repo was seen, so the revision is ``main``. No 1.3B lightx2v (or CausVid) LoRA is published.
LIGHTX2V_14B_REPO = "lightx2v/Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v"
LIGHTX2V_14B_REVISION = "main"
LIGHTX2V_14B_FILE = "loras/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors"
LIGHTX2V_14B_BYTES = 631_000_000  # "631 MB" on the Hub's file page (rounded)

SCHEDULER_CLASSES = ("UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler")  # flow-matching samplers


class Preset(str, Enum):
    """Named model sets (``mirage models`` lists them)."""

    WAN_VACE_1_3B = "wan-vace-1.3b"  # default: Wan 2.1 VACE 1.3B (480p)
    WAN_VACE_14B = "wan-vace-14b"  # Wan 2.1 VACE 14B (480p/720p, large GPU)
    PREVIEW = "preview"  # the embedded TAESD + depth, no denoiser: fast geometry previews
    TINY = "tiny"  # tiny random models built locally: tests and smoke runs


DEFAULT_PRESET = Preset.WAN_VACE_1_3B


class Component(str, Enum):
    """The parts a preset is made of; also the keys of ``overrides``."""

    VAE = "vae"
    TRANSFORMER = "transformer"
    TEXT_ENCODER = "text_encoder"
    TOKENIZER = "tokenizer"
    SCHEDULER = "scheduler"
    DEPTH = "depth"


class SourceKind(str, Enum):
    """Where a preset's component comes from."""

    HUB = "hub"  # a Hub repo (or its copy in the local Hugging Face cache)
    EMBEDDED = "embedded"  # shipped inside the mirage package (the TAESD preview VAE)
    TINY = "tiny"  # built locally under $MIRAGE_CACHE/tiny-v1 (tests, smoke runs)


@dataclass(frozen=True)
class ComponentSpec:
    """One component of a preset.

    Attributes:
        name: the component's role.
        cls_name: the diffusers/transformers class it loads as.
        repo_id: Hub repo id (TINY: the folder name under ``$MIRAGE_CACHE/tiny-v1``; EMBEDDED: the package folder).
        revision: pinned Hub revision (branch, tag or 40-hex commit); None unless ``kind`` is HUB.
        subfolder: folder inside the repo ("vae", "transformer", ...), or None.
        licence: licence of the weights.
        size_bytes: download size in bytes (0: nothing to download).
        kind: where it comes from.
    """

    name: Component
    cls_name: str
    repo_id: str
    revision: str | None
    subfolder: str | None
    licence: str
    size_bytes: int
    kind: SourceKind = SourceKind.HUB

    @property
    def size_gb(self) -> float:
        return self.size_bytes / 1e9


@dataclass(frozen=True)
class LoraFile:
    """A LoRA file on the Hub that a preset names (its step-distilled LoRA).

    Attributes:
        repo_id, revision, filename: where it is (``filename``: the path inside the repo).
        size_bytes: download size. description: what it is, for ``mirage models``.
    """

    repo_id: str
    revision: str
    filename: str
    size_bytes: int
    description: str

    @property
    def source(self) -> str:
        """The ``--lora`` spelling: ``owner/name@revision:path/in/repo.safetensors``."""
        return f"{self.repo_id}@{self.revision}:{self.filename}"


@dataclass(frozen=True)
class PresetSpec:
    """A preset: its components (without depth, which :mod:`mirage.depth` names) and whether it uses depth."""

    preset: Preset
    description: str
    components: tuple[ComponentSpec, ...]
    has_depth: bool  # True: the depth model named by mirage.depth.DEFAULT_DEPTH_MODEL is part of it
    local: bool = False  # True: built locally (tiny), nothing to download
    distill_lora: LoraFile | None = None  # the step-distilled LoRA of the model's size (--distilled); None: none

    def get(self, name: Component) -> ComponentSpec | None:
        return next((c for c in self.components if c.name is name), None)


def _wan_components(repo: str, revision: str, transformer_bytes: int) -> tuple[ComponentSpec, ...]:
    lic = "Apache-2.0"
    return (
        ComponentSpec(Component.VAE, "AutoencoderKLWan", repo, revision, "vae", lic, WAN_VAE_BYTES),
        ComponentSpec(Component.TRANSFORMER, "WanVACETransformer3DModel", repo, revision, "transformer", lic,
                      transformer_bytes),
        ComponentSpec(Component.TEXT_ENCODER, "UMT5EncoderModel", repo, revision, "text_encoder", lic,
                      WAN_TEXT_ENCODER_BYTES),
        ComponentSpec(Component.TOKENIZER, "T5TokenizerFast", repo, revision, "tokenizer", lic, WAN_TOKENIZER_BYTES),
        ComponentSpec(Component.SCHEDULER, "UniPCMultistepScheduler", repo, revision, "scheduler", lic, 751),
    )


def _tiny_components() -> tuple[ComponentSpec, ...]:
    def c(name: Component, cls: str) -> ComponentSpec:
        return ComponentSpec(name, cls, name.value, None, None, "Apache-2.0", 0, SourceKind.TINY)

    return (
        c(Component.VAE, "AutoencoderKLWan"),
        c(Component.TRANSFORMER, "WanVACETransformer3DModel"),
        c(Component.TEXT_ENCODER, "UMT5EncoderModel"),
        c(Component.TOKENIZER, "PreTrainedTokenizerFast"),
        c(Component.SCHEDULER, "UniPCMultistepScheduler"),
    )


PRESETS: dict[Preset, PresetSpec] = {
    Preset.WAN_VACE_1_3B: PresetSpec(
        Preset.WAN_VACE_1_3B,
        "Wan 2.1 VACE 1.3B (diffusers): 480p, fits a 24 GB GPU (the text encoder runs once per prompt)",
        _wan_components(WAN_VACE_1_3B_REPO, WAN_VACE_1_3B_REVISION, WAN_VACE_1_3B_TRANSFORMER_BYTES),
        has_depth=True,
    ),
    Preset.WAN_VACE_14B: PresetSpec(
        Preset.WAN_VACE_14B,
        "Wan 2.1 VACE 14B (diffusers): 480p/720p, needs an 80 GB GPU or offload",
        _wan_components(WAN_VACE_14B_REPO, WAN_VACE_14B_REVISION, WAN_VACE_14B_TRANSFORMER_BYTES),
        has_depth=True,
        distill_lora=LoraFile(LIGHTX2V_14B_REPO, LIGHTX2V_14B_REVISION, LIGHTX2V_14B_FILE, LIGHTX2V_14B_BYTES,
                              "lightx2v StepDistill-CfgDistill rank 64 (Wan 2.1 T2V 14B): 4 steps, guidance off"),
    ),
    Preset.PREVIEW: PresetSpec(
        Preset.PREVIEW,
        "the embedded TAESD + depth, no denoiser: geometry/warp previews in seconds",
        (ComponentSpec(Component.VAE, "AutoencoderTiny", "taesd", None, None, "MIT", 0, SourceKind.EMBEDDED),),
        has_depth=True,
    ),
    Preset.TINY: PresetSpec(
        Preset.TINY,
        "tiny random models built locally (seeded): tests and CPU smoke runs, output is noise",
        _tiny_components(),
        has_depth=True,
        local=True,
    ),
}


def parse_preset(name: str | Preset) -> Preset:
    """Preset from its name; unknown names raise :class:`InputError` listing the valid ones."""
    if isinstance(name, Preset):
        return name
    try:
        return Preset(name)
    except ValueError:
        valid = ", ".join(p.value for p in Preset)
        raise InputError(f"preset: unknown name {name!r}; valid presets: {valid}") from None


def depth_spec(preset: Preset) -> ComponentSpec:
    """The depth component of ``preset`` (its default comes from ``mirage.depth.DEFAULT_DEPTH_MODEL``)."""
    if preset is Preset.TINY:
        return ComponentSpec(Component.DEPTH, "DepthProForDepthEstimation", "depth", None, None, "Apache-2.0", 0,
                             SourceKind.TINY)
    from mirage import depth

    return ComponentSpec(
        Component.DEPTH, depth.DEFAULT_DEPTH_CLASS, depth.DEFAULT_DEPTH_MODEL, depth.DEFAULT_DEPTH_REVISION, None,
        depth.DEFAULT_DEPTH_LICENCE, int(depth.DEFAULT_DEPTH_SIZE_GB * 1e9),
    )


def preset_components(preset: Preset | str, *, with_depth: bool = True) -> tuple[ComponentSpec, ...]:
    """All components of a preset, depth included when the preset has one and ``with_depth``."""
    p = parse_preset(preset)
    spec = PRESETS[p]
    comps = spec.components
    if with_depth and spec.has_depth:
        comps = comps + (depth_spec(p),)
    return comps


@dataclass(frozen=True)
class PresetInfo:
    """What ``mirage models`` shows for one preset."""

    name: str
    description: str
    default: bool
    components: tuple[ComponentSpec, ...]
    download_bytes: int  # what `mirage download` fetches (embedded and tiny components count 0; the LoRA counts)
    local: bool
    distill_lora: LoraFile | None = None  # the preset's step-distilled LoRA (fetched by `mirage download` too)


def list_presets() -> list[PresetInfo]:
    """Every preset with its components (depth included) and download size."""
    out = []
    for p, spec in PRESETS.items():
        comps = preset_components(p)
        lora_bytes = spec.distill_lora.size_bytes if spec.distill_lora is not None else 0
        out.append(PresetInfo(p.value, spec.description, p is DEFAULT_PRESET, comps,
                              sum(c.size_bytes for c in comps if c.kind is SourceKind.HUB) + lora_bytes, spec.local,
                              spec.distill_lora))
    return out
