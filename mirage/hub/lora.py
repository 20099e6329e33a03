"""LoRAs fused into the video transformer at load time, through diffusers' own LoRA loading.

A LoRA is named by a :class:`LoraSpec`: a local ``.safetensors`` file, or ``owner/name[@revision]:path/in/repo.safetensors``
on the Hub, and a scale. :func:`fuse_loras` loads each one with diffusers' Wan LoRA path, in this order:

1. the file is found (a local path, the local Hugging Face cache, or ``hf_hub_download``); safetensors only;
2. ``WanVACEPipeline.lora_state_dict`` reads its keys and converts them to diffusers' names (its
   ``WanLoraLoaderMixin`` knows the diffusers/PEFT, original Wan/ComfyUI and musubi-tuner formats, ``.alpha`` and
   ``diff_b`` included);
3. mirage checks the converted keys strictly against the transformer (below);
4. ``WanVACEPipeline.load_lora_into_transformer`` injects the adapter (PEFT), ``transformer.fuse_lora`` merges it into
   the weights at the spec's scale, and ``transformer.unload_lora`` removes the LoRA modules again.

So the fused model is a plain ``WanVACETransformer3DModel`` again: FP8, ``torch.compile`` and offloading see ordinary
``nn.Linear`` layers and a denoising step costs what it cost without the LoRA.

Strictness (diffusers and PEFT only warn, or log at info level): a LoRA is applied whole or not at all.

- every converted weight must name a linear layer of the transformer with matching shapes, else a
  :class:`~mirage.errors.ModelError` that says how many did not and shows one;
- a weight delta that diffusers' converter leaves out (``.diff`` full-weight deltas, norm deltas, the ``diff_m``
  modulation deltas) is accepted only when it is all zeros (nothing is lost); a non-zero one is an error;
- after injection every layer the file names must hold a PEFT LoRA layer.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mirage.errors import InputError, ModelError
from mirage.hub.presets import PRESETS, Preset, parse_preset
from mirage.hub.sources import offline, one_line

logger = logging.getLogger("mirage")

#: ``owner/name[@revision]:path/in/repo.safetensors`` (the same ``@revision`` as ``--vae``/``--transformer``).
_HUB_LORA = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(@(?P<rev>[\w./-]+?))?:(?P<file>[^:@]+\.safetensors)$")
#: A Hub repo id without its file (``owner/name[@revision]``, optionally with the ``:`` a file would follow).
_HUB_REPO = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?P<rev>@[\w./-]+?)?:?$")
#: A file name's extension (``x.gguf``, ``x.bin``), as opposed to a dot inside a repo name (``Wan2.1-Distill-Loras``).
_FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,15}$")
_SYNTAX = "a local .safetensors file or owner/name[@revision]:path/in/repo.safetensors, then optionally :SCALE"
#: What a diffusers LoRA weight key ends with, and which side of the layer its shape must match.
_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_B.bias")


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to fuse into the transformer.

    Attributes:
        source: a local ``.safetensors`` file, or ``owner/name[@revision]:path/in/repo.safetensors`` on the Hub
            (revision ``main`` when left out). An existing local file of that name wins over a Hub id.
        scale: multiplies the LoRA's low-rank delta (``W + scale * alpha/rank * B @ A``); 1.0 = as published.
    """

    source: str
    scale: float = 1.0  # the LoRA's strength; 1.0 = as trained

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise InputError(f"--lora {self.source}: scale {self.scale!r} is not a finite number (e.g. :0.8)")
        if not str(self.source).endswith(".safetensors"):
            source = str(self.source)
            repo = _HUB_REPO.match(source)
            if repo and not Path(source).expanduser().exists() and not _FILE_SUFFIX.search(source.rstrip(":")):
                scale = "" if self.scale == 1.0 else f":{self.scale:g}"
                raise InputError(f"--lora {source}: not a .safetensors file, and a Hub LoRA needs its file; pass "
                                 f"{repo['repo']}{repo['rev'] or ''}:path/in/repo.safetensors{scale} (see the repo's "
                                 "files), or a local .safetensors file")
            raise InputError(f"--lora {source}: mirage loads .safetensors LoRAs only (no pickle); pass {_SYNTAX}")

    def hub(self) -> tuple[str, str, str] | None:
        """(repo id, revision, file path in the repo) for a Hub LoRA; None for a local file."""
        if Path(self.source).expanduser().is_file() or self.source.startswith((".", "/", "~")):
            return None
        m = _HUB_LORA.match(self.source)
        if m is None:
            return None
        return m["repo"], m["rev"] or "main", m["file"]

    def describe(self) -> str:
        """``source`` plus ``:scale`` when it is not 1 (for logs and messages)."""
        return self.source if self.scale == 1.0 else f"{self.source}:{self.scale:g}"


def parse_lora(value: str) -> LoraSpec:
    """``SOURCE[:SCALE]`` (the ``--lora`` syntax) -> :class:`LoraSpec`.

    ``SOURCE`` is a local ``.safetensors`` file or ``owner/name[@revision]:path/in/repo.safetensors``; a last
    ``:`` part that is a number is the scale (``file.safetensors:0.8``, ``owner/name:lora.safetensors:1.5``).
    """
    head, sep, tail = value.rpartition(":")
    if sep and not tail:
        if head.endswith(".safetensors"):
            raise InputError(f"--lora {value}: no scale after the last ':'; pass {head}, or {head}:SCALE (e.g. :0.8)")
        return LoraSpec(value)  # "owner/name:" names no file: LoraSpec says so
    if sep and head and not tail.endswith(".safetensors"):
        try:
            scale = float(tail)
        except ValueError:
            raise InputError(f"--lora {value}: {tail!r} is not a scale; pass {_SYNTAX}") from None
        return LoraSpec(head, scale)
    return LoraSpec(value)


def check_loras(loras: tuple[LoraSpec, ...] | list[LoraSpec]) -> None:
    """Validate LoRA specs before any model loads: a local file must exist, a Hub one must be well formed."""
    for spec in loras:
        if not isinstance(spec, LoraSpec):
            raise InputError(f"loras: {spec!r} is not a LoraSpec; build it with mirage.hub.parse_lora('SOURCE[:SCALE]')")
        if spec.hub() is not None:
            continue
        path = Path(spec.source).expanduser()
        if not path.is_file():
            raise InputError(f"--lora {spec.source}: no such file, and not a Hub id; pass {_SYNTAX}")


def distill_lora(preset: Preset | str) -> LoraSpec:
    """The step-distilled LoRA a preset names (``--distilled``), at scale 1.0 as lightx2v publishes it.

    Raises:
        InputError: the preset names none (only a 14B lightx2v LoRA is published; none for 1.3B).
    """
    p = parse_preset(preset)
    lora = PRESETS[p].distill_lora
    if lora is None:
        with_one = ", ".join(q.value for q, s in PRESETS.items() if s.distill_lora is not None)
        raise InputError(f"--distilled: preset {p.value} has no step-distilled LoRA (lightx2v publishes one for "
                         f"Wan 2.1 14B only); use --preset {with_one}, or pass your own LoRA with --lora and set "
                         "--steps/--guidance/--flow-shift")
    return LoraSpec(lora.source, 1.0)


# ---------------------------------------------------------------------------------------------- files


def _hub_hint(repo: str, revision: str, filename: str) -> str:
    return (f"run `hf download {repo} {filename} --revision {revision}` (or `mirage download PRESET` for a preset's "
            "distilled LoRA) on a machine with internet, or pass a local file with --lora PATH")


def lora_file(spec: LoraSpec) -> Path:
    """The local path of a LoRA file: as given, from the local Hugging Face cache, or downloaded (huggingface_hub).

    Raises:
        ModelError: one line naming the repo, revision and file (or the path) and the fix.
    """
    hub = spec.hub()
    if hub is None:
        path = Path(spec.source).expanduser()
        if not path.is_file():
            raise ModelError(f"lora: {path} does not exist", f"pass {_SYNTAX}")
        return path
    repo, revision, filename = hub
    at = f"lora: {repo}@{revision} file {filename}"
    if offline():
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo, filename, revision=revision)
        if not isinstance(hit, str):
            raise ModelError(f"{at} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1",
                             _hub_hint(repo, revision, filename))
        return Path(hit)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except GatedRepoError:
        raise ModelError(f"{at}: the repo is gated; accept its licence on the Hub and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise ModelError(f"{at}: repository not found (or private); check the id", f"pass {_SYNTAX}") from None
    except RevisionNotFoundError:
        raise ModelError(f"{at}: revision {revision} not found in the repository; check the revision") from None
    except EntryNotFoundError:
        raise ModelError(f"{at}: file not found in the repository; check the path", f"pass {_SYNTAX}") from None
    except LocalEntryNotFoundError:
        raise ModelError(f"{at} is not in the local Hugging Face cache and the Hub cannot be reached",
                         _hub_hint(repo, revision, filename)) from None
    except OSError as e:
        raise ModelError(f"{at}: cannot download ({type(e).__name__}: {one_line(e, 100)})",
                         _hub_hint(repo, revision, filename)) from None


def _unreadable(label: str, e: Exception) -> ModelError:
    return ModelError(f"lora {label}: unreadable safetensors file, truncated or corrupt ({one_line(e, 90)})",
                      "download it again or pass another file")


def open_lora(spec: LoraSpec) -> Path:
    """:func:`lora_file`, then the file's safetensors header read (its keys and offsets against the file's size, not
    the weights): a truncated or corrupt file, or one without tensors, fails here, before any model loads.

    Raises:
        ModelError: one line naming the file and the fix.
    """
    from safetensors import SafetensorError, safe_open

    path, label = lora_file(spec), spec.describe()
    try:
        with safe_open(str(path), framework="pt") as f:
            n_keys = len(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise _unreadable(label, e) from None
    if not n_keys:
        raise ModelError(f"lora {label}: the file holds no tensors", "pass a LoRA .safetensors file")
    return path


def _read(path: Path, label: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(tensors, diffusers' LoRA adapter metadata or None) of a safetensors LoRA file."""
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        metadata = json.loads(header[LORA_ADAPTER_METADATA_KEY]) if LORA_ADAPTER_METADATA_KEY in header else None
    except (SafetensorError, OSError, ValueError) as e:
        raise _unreadable(label, e) from None
    if not tensors:
        raise ModelError(f"lora {label}: the file holds no tensors", "pass a LoRA .safetensors file")
    return tensors, metadata


# ---------------------------------------------------------------------------------------------- strict conversion


@dataclass(frozen=True)
class FusedLora:
    """A LoRA fused into the transformer (logged, and kept on the loaded components).

    Attributes:
        source: the spec's source. scale: its scale. path: the local file read.
        layers: linear layers the LoRA changed. zero_deltas: weight deltas diffusers' converter leaves out that
            were all zeros (nothing lost).
    """

    source: str
    scale: float
    path: str
    layers: int
    zero_deltas: int

    def report_entry(self) -> dict:
        """Its entry in a run report's ``models``: id (a Hub LoRA as ``owner/name:file``), revision, class, local."""
        hub_id = LoraSpec(self.source, self.scale).hub()
        return {"id": self.source if hub_id is None else f"{hub_id[0]}:{hub_id[2]}",
                "revision": None if hub_id is None else hub_id[1],
                "class": f"LoRA fused at scale {self.scale:g} into {self.layers} layers", "local": hub_id is None}


def _leftover_keys(error: Exception, raw: dict[str, torch.Tensor]) -> list[str]:
    """The file's keys that diffusers' original-format Wan converter left over, read from its error (it raises
    ``ValueError("... original_state_dict.keys()=dict_keys([...])")`` with its ``diffusion_model.`` prefix cut), as
    the file names them (the key as diffusers shows it where no prefixed key matches exactly); [] when the error is
    another one."""
    m = re.search(r"dict_keys\((\[.*\])\)", str(error), re.S)
    try:
        left = ast.literal_eval(m[1]) if m else []
    except (ValueError, SyntaxError):
        return []
    named = ("diffusion_model.", "lora_unet_", "")  # the prefixes diffusers' converters cut, then none
    return [next((p + k for p in named if p + k in raw), k) for k in left if isinstance(k, str)]


def convert_lora(tensors: dict[str, torch.Tensor], transformer: torch.nn.Module,
                 label: str) -> tuple[dict[str, torch.Tensor], int]:
    """A LoRA state dict (any format diffusers' ``WanLoraLoaderMixin`` knows) converted by diffusers, checked strictly.

    Args:
        tensors: the file's tensors, key -> tensor.
        transformer: the ``WanVACETransformer3DModel`` it is for (only its module names and shapes are read).
        label: the LoRA's name in messages.

    Returns:
        (diffusers' converted state dict, keys ``transformer.<module>.lora_A.weight`` / ``.lora_B.weight`` /
        ``.lora_B.bias``; the number of all-zero deltas the converter left out).

    Raises:
        ModelError: keys diffusers cannot convert, a non-zero delta its converter drops, weights that match no
            linear layer, or shapes of another model.
    """
    from diffusers import WanVACEPipeline

    raw = dict(tensors)
    fix = "pass a Wan 2.1 LoRA (diffusers/PEFT, original Wan/ComfyUI or musubi-tuner keys) for this model"
    try:
        converted = WanVACEPipeline.lora_state_dict(dict(raw))
    except (ValueError, KeyError, IndexError, TypeError, RuntimeError) as e:
        left = _leftover_keys(e, raw)
        if left:  # the original-format converter went through the file and these keys matched nothing it knows
            raise ModelError(f"lora {label}: {len(left)} of {len(raw)} keys match nothing diffusers' Wan LoRA "
                             f"conversion knows (e.g. {left[0]}); nothing was applied", fix) from None
        first = next(iter(raw))
        raise ModelError(f"lora {label}: diffusers cannot convert its keys ({type(e).__name__}: {one_line(e, 80)}; "
                         f"first key {first})", fix) from None

    # deltas the converter leaves out on purpose: every one holds ".diff" in its key, and the ones it keeps
    # (diff_b -> lora_B.bias, head.head.diff) are passed through as the same tensor objects
    kept = {id(t) for t in converted.values()}
    dropped = [k for k, t in raw.items() if ".diff" in k and id(t) not in kept]
    nonzero = [k for k in dropped if bool(raw[k].count_nonzero())]
    if nonzero:
        raise ModelError(f"lora {label}: {len(nonzero)} non-zero weight delta(s) that diffusers' Wan LoRA conversion "
                         f"does not apply (e.g. {nonzero[0]}); the LoRA would be applied only in part",
                         "use a LoRA without full-weight/norm/modulation deltas (.diff, diff_m)")
    if dropped:
        logger.info("lora %s: %d all-zero weight deltas left out by diffusers' conversion (nothing lost)", label,
                 len(dropped))

    modules = dict(transformer.named_modules())
    unmatched: list[str] = []
    misshaped: list[str] = []
    parts: dict[str, set[str]] = {}
    for key, t in converted.items():
        name = key.removeprefix("transformer.")
        suffix = next((s for s in _LORA_SUFFIXES if name.endswith(s)), None)
        module = modules.get(name[: -len(suffix)]) if suffix and key.startswith("transformer.") else None
        if not isinstance(module, torch.nn.Linear):
            unmatched.append(key)
            continue
        mod_name = name[: -len(suffix)]
        parts.setdefault(mod_name, set()).add(suffix)
        if suffix == ".lora_A.weight":
            ok, want = t.ndim == 2 and t.shape[1] == module.in_features, f"(rank, {module.in_features})"
        elif suffix == ".lora_B.weight":
            ok, want = t.ndim == 2 and t.shape[0] == module.out_features, f"({module.out_features}, rank)"
        else:
            ok, want = tuple(t.shape) == (module.out_features,), f"({module.out_features},)"
        if not ok:
            misshaped.append(f"{key} is {tuple(t.shape)}, the layer takes {want}")
    if unmatched:
        raise ModelError(f"lora {label}: {len(unmatched)} of {len(converted)} weights match no linear layer of "
                         f"{type(transformer).__name__} (e.g. {unmatched[0]}); nothing was applied",
                         "it is a LoRA for another model, or its keys are in a format diffusers does not convert")
    if misshaped:
        raise ModelError(f"lora {label}: made for a model of another size: {misshaped[0]} ({len(misshaped)} of "
                         f"{len(converted)} weights differ)", "use a LoRA trained for this preset's model size")
    incomplete = sorted(m for m, s in parts.items() if not {".lora_A.weight", ".lora_B.weight"} <= s)
    if incomplete:
        raise ModelError(f"lora {label}: {len(incomplete)} layer(s) lack their lora_A or lora_B weight "
                         f"(e.g. {incomplete[0]})", "the file is incomplete; download it again")
    return converted, len(dropped)


def fuse_lora(transformer: torch.nn.Module, spec: LoraSpec, *, adapter_name: str = "mirage_lora") -> FusedLora:
    """Fuse one LoRA into ``transformer``'s weights (diffusers' loader + PEFT merge) and remove its LoRA modules.

    Args:
        transformer: a ``WanVACETransformer3DModel`` (changed in place; its weights' dtype and device are kept).
        spec: the LoRA and its scale.
        adapter_name: the PEFT adapter name used while loading (gone after fusing).

    Returns:
        what was fused.
    """
    from diffusers import WanVACEPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    from mirage.hub.loaders import quiet

    label = spec.describe()
    path = lora_file(spec)
    tensors, metadata = _read(path, label)
    converted, zero_deltas = convert_lora(tensors, transformer, label)
    names = {k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in converted}
    n_layers = len(names)
    if metadata is not None and not any(k.startswith("transformer.") for k in metadata):
        metadata = {f"transformer.{k}": v for k, v in metadata.items()}  # saved by transformer.save_lora_adapter
    try:
        with quiet():
            WanVACEPipeline.load_lora_into_transformer(converted, transformer=transformer, adapter_name=adapter_name,
                                                       metadata=metadata)
        injected = {n for n, m in transformer.named_modules() if isinstance(m, BaseTunerLayer)}
        missed = sorted(names - injected)  # (a PEFT config may target more layers: their B starts at zero)
        if missed:
            raise ModelError(f"lora {label}: PEFT left {len(missed)} of the file's {len(names)} layers out "
                             f"(e.g. {missed[0]}); nothing was applied", "report this with the LoRA file's name")
        transformer.fuse_lora(lora_scale=float(spec.scale), adapter_names=[adapter_name])
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        raise ModelError(f"lora {label}: diffusers/PEFT could not load it ({type(e).__name__}: {one_line(e, 100)})",
                         "check that the LoRA is for Wan 2.1 of this size") from None
    finally:
        if getattr(transformer, "_hf_peft_config_loaded", False) or any(
                isinstance(m, BaseTunerLayer) for m in transformer.modules()):
            transformer.unload_lora()  # fused weights stay; the LoRA modules (and a failed load's) go
    logger.info("lora %s: fused into %d linear layers (scale %g)", label, n_layers, spec.scale)
    return FusedLora(spec.source, float(spec.scale), str(path), n_layers, zero_deltas)


def fuse_loras(transformer: torch.nn.Module, loras: tuple[LoraSpec, ...] | list[LoraSpec]) -> tuple[FusedLora, ...]:
    """Fuse every LoRA of ``loras`` into ``transformer``, in order (see the module docstring)."""
    check_loras(loras)
    return tuple(fuse_lora(transformer, spec, adapter_name=f"mirage_lora_{i}") for i, spec in enumerate(loras))


__all__ = ["FusedLora", "LoraSpec", "check_loras", "convert_lora", "distill_lora", "fuse_lora", "fuse_loras", "lora_file",
           "open_lora", "parse_lora"]
