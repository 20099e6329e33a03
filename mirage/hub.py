"""Where models come from: named presets -> Hub repos + pinned revisions, strict safetensors-only loading.

This is the one module that knows repo ids. Every component (VAE, VACE transformer, UMT5 text encoder and its
tokenizer, scheduler config, depth model) is loaded through the same code path whether it comes from the Hub,
the local Hugging Face cache (``HF_HUB_OFFLINE=1``) or a local folder given as an override. Loading is strict:
``use_safetensors=True``, never ``trust_remote_code``, and a checkpoint with missing, unexpected or mis-shaped
weights raises :class:`~mirage.errors.ModelError` instead of leaving random weights in the model.

The ``tiny`` preset is a set of tiny random models built locally (fixed seeds) on first use under
``$MIRAGE_CACHE/tiny-v1`` and then loaded back through :func:`load_components` like any other preset; tests and
CPU smoke runs use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from mirage.errors import InputError, ModelError
from mirage.io import atomic_write_text
from mirage.vae import VAE

log = logging.getLogger("mirage")

# Prompts are tokenised once per run, so the tokenizers (Rust/rayon) thread pool gains nothing; its idle workers
# were measured to slow torch's CPU kernels ~5x afterwards on a 2-core machine. A user's own setting wins.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_VERSION = "tiny-v1"  # bump when build_tiny's configs change, so stale tiny folders are not reused

# Revisions: "main" until someone with Hub access replaces them by 40-hex commits (see docs/models.md).
WAN_VACE_1_3B_REPO = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
WAN_VACE_1_3B_REVISION = "main"
WAN_VACE_14B_REPO = "Wan-AI/Wan2.1-VACE-14B-diffusers"
WAN_VACE_14B_REVISION = "main"
TAESD_REPO = "madebyollin/taesd"
TAESD_REVISION = "main"

SCHEDULER_CLASSES = ("UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler")  # flow-matching samplers


class Preset(str, Enum):
    """Named model sets (``mirage models`` lists them)."""

    WAN_VACE_1_3B = "wan-vace-1.3b"  # default: Wan 2.1 VACE 1.3B (480p, ~17 GB download)
    WAN_VACE_14B = "wan-vace-14b"  # Wan 2.1 VACE 14B (480p/720p, large GPU)
    PREVIEW = "preview"  # TAESD + depth, no denoiser: fast geometry previews
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


@dataclass(frozen=True)
class ComponentSpec:
    """One component of a preset.

    Attributes:
        name: the component's role.
        cls_name: the diffusers/transformers class it loads as.
        repo_id: Hub repo id (for the tiny preset: the folder name under ``$MIRAGE_CACHE/tiny-v1``).
        revision: pinned Hub revision (branch, tag or 40-hex commit); None for local folders.
        subfolder: folder inside the repo ("vae", "transformer", ...), or None.
        licence: SPDX-ish licence of the weights.
        approx_size_gb: approximate download size (GB), for ``mirage models``.
    """

    name: Component
    cls_name: str
    repo_id: str
    revision: str | None
    subfolder: str | None
    licence: str
    approx_size_gb: float


@dataclass(frozen=True)
class PresetSpec:
    """A preset: its components (without depth, which :mod:`mirage.depth` names) and whether it uses depth."""

    preset: Preset
    description: str
    components: tuple[ComponentSpec, ...]
    has_depth: bool  # True: the depth model named by mirage.depth.DEFAULT_DEPTH_MODEL is part of it
    local: bool = False  # True: built locally (tiny), nothing to download

    def get(self, name: Component) -> ComponentSpec | None:
        return next((c for c in self.components if c.name is name), None)


def _wan_components(repo: str, revision: str, transformer_gb: float, licence: str = "Apache-2.0") -> tuple[ComponentSpec, ...]:
    return (
        ComponentSpec(Component.VAE, "AutoencoderKLWan", repo, revision, "vae", licence, 0.5),
        ComponentSpec(Component.TRANSFORMER, "WanVACETransformer3DModel", repo, revision, "transformer", licence, transformer_gb),
        ComponentSpec(Component.TEXT_ENCODER, "UMT5EncoderModel", repo, revision, "text_encoder", licence, 11.4),
        ComponentSpec(Component.TOKENIZER, "T5TokenizerFast", repo, revision, "tokenizer", licence, 0.02),
        ComponentSpec(Component.SCHEDULER, "UniPCMultistepScheduler", repo, revision, "scheduler", licence, 0.0),
    )


def _tiny_components() -> tuple[ComponentSpec, ...]:
    return (
        ComponentSpec(Component.VAE, "AutoencoderKLWan", "vae", None, None, "Apache-2.0", 0.0),
        ComponentSpec(Component.TRANSFORMER, "WanVACETransformer3DModel", "transformer", None, None, "Apache-2.0", 0.0),
        ComponentSpec(Component.TEXT_ENCODER, "UMT5EncoderModel", "text_encoder", None, None, "Apache-2.0", 0.0),
        ComponentSpec(Component.TOKENIZER, "PreTrainedTokenizerFast", "tokenizer", None, None, "Apache-2.0", 0.0),
        ComponentSpec(Component.SCHEDULER, "UniPCMultistepScheduler", "scheduler", None, None, "Apache-2.0", 0.0),
    )


PRESETS: dict[Preset, PresetSpec] = {
    Preset.WAN_VACE_1_3B: PresetSpec(
        Preset.WAN_VACE_1_3B,
        "Wan 2.1 VACE 1.3B (diffusers): 480p, fits a 24 GB GPU with text-encoder offload",
        _wan_components(WAN_VACE_1_3B_REPO, WAN_VACE_1_3B_REVISION, transformer_gb=5.5),
        has_depth=True,
    ),
    Preset.WAN_VACE_14B: PresetSpec(
        Preset.WAN_VACE_14B,
        "Wan 2.1 VACE 14B (diffusers): 480p/720p, needs an 80 GB GPU or offload",
        _wan_components(WAN_VACE_14B_REPO, WAN_VACE_14B_REVISION, transformer_gb=69.0),
        has_depth=True,
    ),
    Preset.PREVIEW: PresetSpec(
        Preset.PREVIEW,
        "TAESD + depth, no denoiser: geometry/warp previews in seconds",
        (ComponentSpec(Component.VAE, "AutoencoderTiny", TAESD_REPO, TAESD_REVISION, None, "MIT", 0.01),),
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


# ---------------------------------------------------------------------------------------------- cache dir


def cache_dir() -> Path:
    """mirage's own cache (tiny models, prompt embeddings): ``$MIRAGE_CACHE`` or ``~/.cache/mirage``."""
    env = os.environ.get("MIRAGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mirage"


def tiny_dir(root: Path | None = None) -> Path:
    """Folder of the tiny preset's components (``<cache>/tiny-v1``)."""
    return (root if root is not None else cache_dir()) / TINY_VERSION


# ---------------------------------------------------------------------------------------------- depth spec


def _depth_module() -> Any:
    try:
        import mirage.depth as depth  # lazy: the depth stage is optional for most of this module
    except ImportError as e:
        raise ModelError(f"depth: mirage.depth cannot be imported ({e}); install mirage completely") from None
    return depth


def depth_spec(preset: Preset) -> ComponentSpec:
    """The depth component of ``preset`` (its default comes from ``mirage.depth.DEFAULT_DEPTH_MODEL``)."""
    if preset is Preset.TINY:
        return ComponentSpec(Component.DEPTH, "depth", "depth", None, None, "Apache-2.0", 0.0)
    depth = _depth_module()
    return ComponentSpec(
        Component.DEPTH,
        str(getattr(depth, "DEFAULT_DEPTH_CLASS", "AutoModelForDepthEstimation")),
        str(depth.DEFAULT_DEPTH_MODEL),
        str(getattr(depth, "DEFAULT_DEPTH_REVISION", "main")),
        None,
        str(getattr(depth, "DEFAULT_DEPTH_LICENCE", "see the model card")),
        float(getattr(depth, "DEFAULT_DEPTH_SIZE_GB", 0.1)),
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
    approx_size_gb: float
    local: bool


def list_presets() -> list[PresetInfo]:
    """Every preset with its components and approximate download size (depth shown when resolvable)."""
    out = []
    for p, spec in PRESETS.items():
        try:
            comps = preset_components(p)
        except ModelError:
            comps = spec.components  # depth module missing: show the rest
        out.append(
            PresetInfo(
                name=p.value,
                description=spec.description,
                default=p is DEFAULT_PRESET,
                components=comps,
                approx_size_gb=round(sum(c.approx_size_gb for c in comps), 2),
                local=spec.local,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ResolvedSource:
    """Where one component is actually loaded from (recorded in the run report).

    Attributes:
        component: the component's role.
        source: Hub repo id, or an absolute local folder.
        revision: the Hub revision asked for (None for local folders).
        subfolder: folder inside ``source`` (None: ``source`` is the component folder itself).
        local: True for local folders.
    """

    component: Component
    source: str
    revision: str | None
    subfolder: str | None
    local: bool

    def describe(self) -> str:
        where = self.source + (f"/{self.subfolder}" if self.subfolder else "")
        return where if self.local else f"{where}@{self.revision or 'main'}"


_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(@(?P<rev>[\w./-]+?))?(:(?P<sub>[\w./-]+))?$")


def parse_override(component: Component, value: str, default_subfolder: str | None) -> ResolvedSource:
    """Resolve an override: a local folder, or ``owner/name[@revision][:subfolder]`` on the Hub.

    A local folder is used as the component folder itself; a folder without a config file but with a
    ``<default_subfolder>/`` (or ``<component>/``) folder inside is taken as a whole pipeline folder.
    """
    path = Path(value).expanduser()
    if path.is_dir():
        sub = None
        if not any((path / n).is_file() for n in ("config.json", "tokenizer_config.json", "scheduler_config.json")):
            # a whole pipeline folder: use <subfolder>/ (the preset's, else the component's name)
            sub = next((s for s in (default_subfolder, component.value) if s and (path / s).is_dir()), None)
        return ResolvedSource(component, str(path.resolve()), None, sub, True)
    m = _HUB_ID.match(value)
    if m is None or value.startswith((".", "/", "~")):
        raise InputError(
            f"--{component.value.replace('_', '-')} {value}: not an existing folder nor a Hub id; "
            "pass a local folder or owner/name[@revision][:subfolder]"
        )
    return ResolvedSource(component, m["repo"], m["rev"] or "main", m["sub"], False)


def _resolve(preset: Preset, spec: ComponentSpec, overrides: dict[str, str], tiny_root: Path | None) -> ResolvedSource:
    if spec.name.value in overrides:
        return parse_override(spec.name, overrides[spec.name.value], spec.subfolder)
    if preset is Preset.TINY:
        root = tiny_dir(tiny_root)
        return ResolvedSource(spec.name, str(root / spec.repo_id), None, None, True)
    return ResolvedSource(spec.name, spec.repo_id, spec.revision, spec.subfolder, False)


# ---------------------------------------------------------------------------------------------- error translation


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return env or bool(constants.HF_HUB_OFFLINE)


def _fix_hint(src: ResolvedSource, preset: Preset | None) -> str:
    flag = "--" + src.component.value.replace("_", "-")
    p = preset.value if preset is not None else "PRESET"
    return f"run `mirage download {p}` on a machine with internet, or pass a local folder with {flag} PATH"


def _translate(src: ResolvedSource, filename: str, exc: BaseException, preset: Preset | None) -> ModelError:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    where = f"{src.component.value}: {src.describe()} file {filename}"
    hint = _fix_hint(src, preset)

    def has(t: type) -> bool:
        return any(isinstance(x, t) for x in chain)

    if has(GatedRepoError):
        return ModelError(f"{where}: the repo is gated; accept its licence on the Hub and log in (hf auth login)", hint)
    if has(RepositoryNotFoundError):
        return ModelError(f"{where}: repository not found (or private); check the id", hint)
    if has(RevisionNotFoundError):
        return ModelError(f"{where}: revision {src.revision} not found in the repository; check the revision", hint)
    if has(LocalEntryNotFoundError) or has(OfflineModeIsEnabled) or (not src.local and _offline()):
        return ModelError(f"{where} is not in the local Hugging Face cache and the Hub cannot be reached", hint)
    if has(EntryNotFoundError):
        return ModelError(f"{where}: file not found in the repository (is it a safetensors checkpoint?)", hint)
    return ModelError(f"{where}: cannot load ({type(exc).__name__}: {_one_line(str(exc))})", hint)


# ---------------------------------------------------------------------------------------------- strict loaders

_WEIGHT_SUFFIXES_UNSAFE = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".msgpack", ".h5")


def _check_local_folder(src: ResolvedSource, config_name: str, needs_weights: bool, preset: Preset | None) -> Path:
    folder = Path(src.source) / (src.subfolder or "")
    if not folder.is_dir():
        raise ModelError(f"{src.component.value}: folder {folder} does not exist", _fix_hint(src, preset))
    if not (folder / config_name).is_file():
        raise ModelError(
            f"{src.component.value}: {folder} has no {config_name}; pass the component's folder (save_pretrained output)"
        )
    if needs_weights:
        safetensors = list(folder.glob("*.safetensors")) + list(folder.glob("*.safetensors.index.json"))
        if not safetensors:
            unsafe = sorted(p.name for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES_UNSAFE)
            if unsafe:
                raise ModelError(
                    f"{src.component.value}: {folder} holds only {', '.join(unsafe)}; mirage loads safetensors only "
                    "(no pickle); convert it with save_pretrained(..., safe_serialization=True)"
                )
            raise ModelError(f"{src.component.value}: {folder} has no .safetensors weights; pass a complete folder")
    return folder


def _precheck_hub(src: ResolvedSource, filename: str, preset: Preset | None) -> None:
    """Offline: fail fast, with the exact file, when a Hub component is not in the local cache."""
    if src.local or not _offline():
        return
    from huggingface_hub import try_to_load_from_cache

    path = f"{src.subfolder}/{filename}" if src.subfolder else filename
    hit = try_to_load_from_cache(src.source, path, revision=src.revision)
    if not isinstance(hit, str):
        raise ModelError(
            f"{src.component.value}: {src.source}@{src.revision or 'main'} file {path} is not in the local Hugging Face "
            "cache and HF_HUB_OFFLINE=1",
            _fix_hint(src, preset),
        )


def _precheck_hub_any(src: ResolvedSource, filenames: list[str], preset: Preset | None) -> None:
    """Offline: fail fast unless one of ``filenames`` is cached."""
    if src.local or not _offline():
        return
    from huggingface_hub import try_to_load_from_cache

    pre = f"{src.subfolder}/" if src.subfolder else ""
    if not any(isinstance(try_to_load_from_cache(src.source, pre + f, revision=src.revision), str) for f in filenames):
        raise ModelError(
            f"{src.component.value}: {src.source}@{src.revision or 'main'} file {pre}{filenames[0]} is not in the local "
            "Hugging Face cache and HF_HUB_OFFLINE=1",
            _fix_hint(src, preset),
        )


def _check_loading_info(src: ResolvedSource, info: dict[str, Any]) -> None:
    problems = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        vals = [v if isinstance(v, str) else str(v[0]) for v in (info.get(key) or [])]
        if vals:
            shown = ", ".join(sorted(vals)[:3]) + (f" (+{len(vals) - 3} more)" if len(vals) > 3 else "")
            problems.append(f"{len(vals)} {key.replace('_', ' ')} ({shown})")
    errs = info.get("error_msgs") or []
    if errs:
        problems.append(f"{len(errs)} load error(s) ({_one_line(str(errs[0]), 80)})")
    if problems:
        raise ModelError(
            f"{src.component.value}: {src.describe()} does not match its config: {'; '.join(problems)}; "
            "the checkpoint is incomplete or for another model"
        )


@contextlib.contextmanager
def _translating(src: ResolvedSource, filename: str, preset: Preset | None) -> Iterator[None]:
    try:
        yield
    except ModelError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as e:  # hub errors subclass OSError / HTTPError
        raise _translate(src, filename, e, preset) from e


def load_diffusers_model(
    component: str | Component,
    repo_or_path: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    allowed_classes: tuple[str, ...] = (),
    preset: Preset | None = None,
) -> Any:
    """Load one diffusers model strictly (safetensors, all keys matched), from the Hub or a folder.

    Args:
        component: its role (for messages).
        repo_or_path: Hub id or local folder.
        revision: Hub revision (ignored for folders).
        subfolder: folder inside the repo/folder, or None.
        device, dtype: where and in which dtype the weights end up.
        allowed_classes: ``_class_name`` values accepted from config.json (empty: any diffusers model).
        preset: for the hint in error messages.

    Returns:
        the model (``eval()`` mode, on ``device``).
    """
    comp = Component(component)
    path = Path(repo_or_path).expanduser()
    local = path.is_dir()
    src = ResolvedSource(comp, str(path.resolve()) if local else repo_or_path, None if local else (revision or "main"), subfolder, local)
    return _load_diffusers(src, device=device, dtype=dtype, allowed_classes=allowed_classes, preset=preset)


def _load_diffusers(
    src: ResolvedSource, *, device: Any, dtype: torch.dtype, allowed_classes: tuple[str, ...], preset: Preset | None
) -> Any:
    import diffusers

    if src.local:
        _check_local_folder(src, "config.json", True, preset)
    _precheck_hub(src, "config.json", preset)
    kw: dict[str, Any] = {"subfolder": src.subfolder, "revision": None if src.local else src.revision}
    with _translating(src, "config.json", preset):
        config = diffusers.AutoencoderKLWan.load_config(src.source, **kw)  # any ConfigMixin reads config.json
    cls_name = config.get("_class_name")
    if allowed_classes and cls_name not in allowed_classes:
        raise ModelError(
            f"{src.component.value}: {src.describe()} is a {cls_name}, expected one of {', '.join(allowed_classes)}; "
            "pass the right folder"
        )
    cls = getattr(diffusers, str(cls_name), None)
    if cls is None or not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        raise ModelError(f"{src.component.value}: {src.describe()} has unknown model class {cls_name!r}; pass a diffusers model folder")
    files = _weight_files(src, preset)
    from diffusers.models.modeling_utils import no_init_weights
    from safetensors.torch import load_file

    # Our own strict load (not cls.from_pretrained): diffusers refuses to load Wan transformers without
    # `accelerate` (keep_in_fp32_modules needs low_cpu_mem_usage), and we want missing/unexpected/mis-shaped
    # keys to be errors, never randomly initialised weights. Same files, same dtype rules as diffusers.
    with no_init_weights():
        model = cls.from_config(config)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        with _translating(src, f.name, preset):
            state.update(load_file(str(f)))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    _check_loading_info(src, {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_keys": mismatched})
    model.load_state_dict(state, strict=True)
    del state
    # dtype as diffusers' from_pretrained(torch_dtype=...) sets it: _keep_in_fp32_modules stay float32
    keep = getattr(cls, "_keep_in_fp32_modules", None) or []
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point():
            t.data = t.data.to(device, torch.float32 if any(k in name.split(".") for k in keep) else dtype)
    return model.eval()


def _weight_files(src: ResolvedSource, preset: Preset | None) -> list[Path]:
    """The safetensors file(s) of a diffusers model: single file, or the shards named by the index."""
    single, index = "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"
    if src.local:
        folder = Path(src.source) / (src.subfolder or "")
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise ModelError(f"{src.component.value}: {folder} lacks shard(s) {', '.join(missing[:3])}; re-download the folder")
            return [folder / s for s in shards]
        raise ModelError(f"{src.component.value}: {folder} has no {single}; pass a diffusers model folder (safetensors)")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    _precheck_hub_any(src, [single, index], preset)
    kw = {"subfolder": src.subfolder, "revision": src.revision}
    try:
        return [Path(hf_hub_download(src.source, single, **kw))]
    except EntryNotFoundError as e:
        if isinstance(e, LocalEntryNotFoundError):
            raise _translate(src, single, e, preset) from e
    with _translating(src, index, preset):
        idx = Path(hf_hub_download(src.source, index, **kw))
        shards = sorted(set(json.loads(idx.read_text())["weight_map"].values()))
        return [Path(hf_hub_download(src.source, s, **kw)) for s in shards]


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No tqdm bars from transformers while loading (the library never prints; progress goes through callbacks)."""
    from transformers.utils import logging as tlog

    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()


def _load_text_encoder(src: ResolvedSource, *, device: Any, dtype: torch.dtype, preset: Preset | None) -> Any:
    from transformers import UMT5EncoderModel

    if src.local:
        _check_local_folder(src, "config.json", True, preset)
    _precheck_hub(src, "config.json", preset)
    with _translating(src, "model.safetensors", preset), _quiet_transformers():
        model, info = UMT5EncoderModel.from_pretrained(
            src.source,
            subfolder=src.subfolder or "",
            revision=None if src.local else src.revision,
            dtype=dtype,
            use_safetensors=True,
            output_loading_info=True,
            trust_remote_code=False,
        )
    _check_loading_info(src, info)
    return model.to(device).eval().requires_grad_(False)


def _load_tokenizer(src: ResolvedSource, *, preset: Preset | None) -> Any:
    from transformers import AutoTokenizer

    if src.local:
        _check_local_folder(src, "tokenizer_config.json", False, preset)
    _precheck_hub(src, "tokenizer_config.json", preset)
    with _translating(src, "tokenizer_config.json", preset):
        return AutoTokenizer.from_pretrained(
            src.source,
            subfolder=src.subfolder or "",
            revision=None if src.local else src.revision,
            trust_remote_code=False,
        )


def _load_scheduler_config(src: ResolvedSource, *, preset: Preset | None) -> dict[str, Any]:
    import diffusers

    if src.local:
        _check_local_folder(src, "scheduler_config.json", False, preset)
    _precheck_hub(src, "scheduler_config.json", preset)
    with _translating(src, "scheduler_config.json", preset):
        config = diffusers.UniPCMultistepScheduler.load_config(  # reads scheduler_config.json of any class

            src.source, subfolder=src.subfolder, revision=None if src.local else src.revision
        )
    cls_name = config.get("_class_name")
    if cls_name not in SCHEDULER_CLASSES:
        raise ModelError(
            f"scheduler: {src.describe()} is a {cls_name}; mirage samples with {' or '.join(SCHEDULER_CLASSES)}"
        )
    return dict(config)


# ---------------------------------------------------------------------------------------------- components


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
    """

    preset: Preset
    vae: VAE
    transformer: Any | None
    scheduler_config: dict[str, Any] | None
    text_encoder: Lazy | None
    tokenizer: Lazy | None
    depth: Lazy | None
    resolved: dict[str, ResolvedSource]


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
) -> Components:
    """Load a preset's components (VAE now; transformer + scheduler if ``need_denoiser``; text encoder, tokenizer
    and depth lazily).

    Args:
        preset: a :class:`Preset` or its name.
        overrides: component name -> Hub id (``owner/name[@revision][:subfolder]``) or local folder.
        device: where the VAE and transformer go (the text encoder too, when called).
        dtype: transformer / text-encoder dtype (bfloat16 on GPU; float32 for CPU tests).
        vae_dtype: VAE dtype (float32 by default, as diffusers' Wan examples keep it).
        need_denoiser: load the transformer + scheduler (the preview preset has none: asking raises).
        need_depth: attach the depth loader.
        tiny_root: cache root for the tiny preset (default :func:`cache_dir`).

    Raises:
        InputError: unknown preset or override key, bad override value.
        ModelError: a component missing, offline and uncached, not safetensors, or not matching its config.
    """
    p = parse_preset(preset)
    spec = PRESETS[p]
    overrides = dict(overrides or {})
    valid = {c.value for c in Component}
    for k in overrides:
        if k not in valid:
            raise InputError(f"overrides: unknown component {k!r}; valid: {', '.join(sorted(valid))}")
    if need_denoiser and spec.get(Component.TRANSFORMER) is None and "transformer" not in overrides:
        raise ModelError(f"preset {p.value}: has no denoiser; use preset {DEFAULT_PRESET.value} for generation")
    if p is Preset.TINY:
        build_tiny(tiny_root if tiny_root is not None else cache_dir())

    resolved: dict[str, ResolvedSource] = {}

    def res(name: Component) -> ResolvedSource:
        cspec = spec.get(name)
        if cspec is None and name.value in overrides:
            cspec = ComponentSpec(name, "", "", None, None, "", 0.0)
        if cspec is None:
            raise ModelError(f"preset {p.value}: has no {name.value} component; pass one with --{name.value.replace('_', '-')}")
        r = _resolve(p, cspec, overrides, tiny_root)
        resolved[name.value] = r
        return r

    vae_src = res(Component.VAE)
    vae_model = _load_diffusers(
        vae_src, device=device, dtype=vae_dtype, allowed_classes=("AutoencoderKLWan", "AutoencoderTiny"), preset=p
    )
    vae = VAE(vae_model, source=vae_src.describe())

    transformer = scheduler_config = text_encoder = tokenizer = None
    if need_denoiser:
        t_src = res(Component.TRANSFORMER)
        transformer = _load_diffusers(
            t_src, device=device, dtype=dtype, allowed_classes=("WanVACETransformer3DModel",), preset=p
        ).requires_grad_(False)
        scheduler_config = _load_scheduler_config(res(Component.SCHEDULER), preset=p)
        te_src = res(Component.TEXT_ENCODER)
        tok_src = res(Component.TOKENIZER)
        if not te_src.local or not tok_src.local:
            # fail now, not minutes later, when the (lazy) text encoder is uncached offline
            _precheck_hub(te_src, "config.json", p)
            _precheck_hub(tok_src, "tokenizer_config.json", p)
        text_encoder = Lazy(te_src, lambda: _load_text_encoder(te_src, device=device, dtype=dtype, preset=p), keep=False)
        tokenizer = Lazy(tok_src, lambda: _load_tokenizer(tok_src, preset=p), keep=True)

    depth = None
    if need_depth:
        if Component.DEPTH.value in overrides:
            d_src = parse_override(Component.DEPTH, overrides["depth"], None)
        else:
            d_src = _resolve(p, depth_spec(p), {}, tiny_root)
        if d_src.local and not Path(d_src.source).is_dir():
            raise ModelError(
                f"depth: tiny depth model missing at {d_src.source} (mirage.depth.build_tiny_depth_model unavailable?); "
                "pass need_depth=False or a depth folder with --depth"
            )
        resolved["depth"] = d_src

        def _load_depth() -> Any:
            # checked when first needed: a run with a depth file (--depth) never needs the depth model
            _precheck_hub(d_src, "config.json", p)
            dm = _depth_module()
            return dm.load_depth_model(
                d_src.source + (f"/{d_src.subfolder}" if d_src.subfolder and d_src.local else ""),
                revision=d_src.revision,
                device=device,
                dtype=dtype,
            )

        depth = Lazy(d_src, _load_depth, keep=True)

    log.info("models: %s", ", ".join(f"{k}={v.describe()}" for k, v in resolved.items()))
    return Components(p, vae, transformer, scheduler_config, text_encoder, tokenizer, depth, resolved)


# ---------------------------------------------------------------------------------------------- download / cache


def _allow_patterns(spec: ComponentSpec) -> list[str]:
    pre = f"{spec.subfolder}/" if spec.subfolder else ""
    if spec.name is Component.TOKENIZER:
        return [f"{pre}*.json", f"{pre}*.model", f"{pre}*.txt"]
    if spec.name is Component.SCHEDULER:
        return [f"{pre}*.json"]
    return [f"{pre}*.json", f"{pre}*.safetensors", f"{pre}*.txt"]


def download(
    preset: Preset | str,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Path]:
    """Fetch every component of a preset into the Hugging Face cache (safetensors, configs, tokenizer files).

    Args:
        preset: the preset (``tiny`` is built locally instead).
        progress: called as ``progress(component, done, total)`` before each component and once at the end.

    Returns:
        component name -> local snapshot folder.
    """
    from huggingface_hub import snapshot_download

    p = parse_preset(preset)
    if p is Preset.TINY:
        root = build_tiny(cache_dir())
        return {c.name.value: root / c.repo_id for c in preset_components(p) if (root / c.repo_id).is_dir()}
    comps = preset_components(p)
    out: dict[str, Path] = {}
    for i, spec in enumerate(comps):
        if progress is not None:
            progress(spec.name.value, i, len(comps))
        src = ResolvedSource(spec.name, spec.repo_id, spec.revision, spec.subfolder, False)
        with _translating(src, ",".join(_allow_patterns(spec)), p):
            folder = snapshot_download(spec.repo_id, revision=spec.revision, allow_patterns=_allow_patterns(spec))
        out[spec.name.value] = Path(folder) / (spec.subfolder or "")
        log.info("downloaded %s (%s)", spec.name.value, src.describe())
    if progress is not None:
        progress("done", len(comps), len(comps))
    return out


def _probe_files(spec: ComponentSpec) -> list[list[str]]:
    """Files proving a component is cached: every inner list needs one hit."""
    if spec.name is Component.TOKENIZER:
        return [["tokenizer_config.json"]]
    if spec.name is Component.SCHEDULER:
        return [["scheduler_config.json"]]
    if spec.name is Component.TEXT_ENCODER or spec.name is Component.DEPTH:
        return [["config.json"], ["model.safetensors", "model.safetensors.index.json"]]
    return [["config.json"], ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"]]


def cached(preset: Preset | str) -> dict[str, bool]:
    """Which components of a preset are available without network (local cache / tiny folders)."""
    from huggingface_hub import try_to_load_from_cache

    p = parse_preset(preset)
    out: dict[str, bool] = {}
    for spec in preset_components(p):
        if p is Preset.TINY:
            out[spec.name.value] = (tiny_dir() / spec.repo_id).is_dir()
            continue
        pre = f"{spec.subfolder}/" if spec.subfolder else ""
        ok = all(
            any(isinstance(try_to_load_from_cache(spec.repo_id, pre + f, revision=spec.revision), str) for f in group)
            for group in _probe_files(spec)
        )
        out[spec.name.value] = ok
    return out


# ---------------------------------------------------------------------------------------------- tiny preset

TINY_TEXT_DIM = 32  # UMT5 d_model == transformer text_dim
TINY_WORDS = (
    "a the of and in on with at to from by room house street forest sea sky tree trees wall floor window door "
    "light dark bright camera moves forward left right up down slowly scene photo view interior exterior wooden "
    "stone white black red green blue grey sofa table chair lamp ruin water sand grass road car building city"
).split()


def _tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in TINY_WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def _tiny_builders(seed: int) -> dict[str, Callable[[Path], None]]:
    def vae(out: Path) -> None:
        from diffusers import AutoencoderKLWan

        torch.manual_seed(seed)
        AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        ).save_pretrained(out, safe_serialization=True)

    def transformer(out: Path) -> None:
        from diffusers import WanVACETransformer3DModel

        torch.manual_seed(seed + 1)
        WanVACETransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=TINY_TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0], vace_in_channels=96,
        ).save_pretrained(out, safe_serialization=True)

    def text_encoder(out: Path) -> None:
        from transformers import UMT5Config, UMT5EncoderModel

        torch.manual_seed(seed + 2)
        cfg = UMT5Config(
            vocab_size=len(TINY_WORDS) + 3, d_model=TINY_TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
        UMT5EncoderModel(cfg).eval().save_pretrained(out, safe_serialization=True)

    def tokenizer(out: Path) -> None:
        _tiny_tokenizer().save_pretrained(out)

    def scheduler(out: Path) -> None:
        from diffusers import UniPCMultistepScheduler

        # the real Wan 2.1 VACE scheduler config (flow matching, shift 3)
        UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000,
            solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True, final_sigmas_type="zero",
        ).save_pretrained(out)

    def depth(out: Path) -> None:
        dm = _depth_module()
        dm.build_tiny_depth_model(out, seed=seed + 3)

    return {"vae": vae, "transformer": transformer, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "scheduler": scheduler, "depth": depth}


#: Files each tiny component must hold to be complete (a folder without them is rebuilt).
_TINY_FILES = {
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "transformer": ("config.json", "diffusion_pytorch_model.safetensors"),
    "text_encoder": ("config.json", "model.safetensors"),
    "tokenizer": ("tokenizer.json",),
    "scheduler": ("scheduler_config.json",),
    "depth": ("config.json", "model.safetensors", "preprocessor_config.json"),
}


def _tiny_complete(name: str, folder: Path) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in _TINY_FILES[name])


def _dist_rank() -> int:
    """This process's rank when torch.distributed is initialised (torchrun), else 0."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


#: How long torchrun ranks other than 0 wait for rank 0 to build the tiny preset.
TINY_WAIT_S = 600.0


def _wait_for_tiny(base: Path, builders: dict) -> None:
    """Wait (polling) until rank 0 has built every tiny component; ModelError naming the missing ones on timeout."""
    timeout_s = TINY_WAIT_S
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [n for n in builders if not _tiny_complete(n, base / n)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ModelError(f"tiny preset: rank {_dist_rank()} waited {timeout_s:.0f} s for rank 0 to build "
                             f"{', '.join(missing)} under {base}",
                             hint="check rank 0's log, or run one tiny render in a single process first")
        time.sleep(0.5)


def build_tiny(root: Path | None = None, *, seed: int = 0) -> Path:
    """Build the tiny preset's missing components under ``<root>/tiny-v1/<component>`` (idempotent).

    Each component is written with ``save_pretrained`` into a temporary folder that is renamed when complete, so
    an interrupted build never leaves a half-written component. The RNG state of the caller is not touched.
    Inside a torch.distributed group only rank 0 builds and the other ranks wait for its complete folders.

    Args:
        root: cache root (default :func:`cache_dir`).
        seed: base seed of the random weights.

    Returns:
        the ``tiny-v1`` folder.
    """
    base = tiny_dir(root if root is not None else cache_dir())
    base.mkdir(parents=True, exist_ok=True)
    builders = _tiny_builders(seed)
    if _dist_rank() != 0:
        # under torchrun only rank 0 builds: transformers' save_pretrained writes nothing on other ranks
        _wait_for_tiny(base, builders)
        return base
    for name, build in builders.items():
        final = base / name
        if _tiny_complete(name, final):
            continue
        if final.exists():  # left incomplete (an older mirage): rebuild it
            shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.part-", dir=base))
        try:
            with torch.random.fork_rng(devices=[]):
                build(tmp)
            if not _tiny_complete(name, tmp):
                raise ModelError(f"tiny preset: building {name} wrote {sorted(p.name for p in tmp.iterdir())}, "
                                 f"not {list(_TINY_FILES[name])}", hint="report this; delete " + str(base))
            try:
                os.replace(tmp, final)
            except OSError:
                if not _tiny_complete(name, final):  # lost a race with another process: theirs is as good as ours
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("tiny preset: built %s", final)
    readme = base / "README.txt"
    if not readme.exists():
        atomic_write_text(readme, "Tiny random models built by mirage.hub.build_tiny (seeded). Safe to delete.\n"
                          + json.dumps({"seed": seed}) + "\n")
    return base
