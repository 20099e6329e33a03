"""Strict loading of one component through the libraries' own loaders.

diffusers' ``ModelMixin.from_pretrained`` (with accelerate: meta-device init, shard-by-shard loading straight into
the target dtype and device, ``_keep_in_fp32_modules`` honoured) loads the VAE and the transformer; transformers'
``from_pretrained`` the text encoder, ``AutoTokenizer`` the tokenizer. mirage adds only what makes loading strict
and its failures one line:

- the files are resolved first through huggingface_hub (``hf_hub_download`` / the local cache), one by one, so an
  uncached, missing or truncated file is named with its repo, revision and path;
- every safetensors header is read (``safe_open``) and, for diffusers models, its keys and shapes are checked
  against the model built on the meta device: a missing, unexpected or mis-shaped weight is an error, never a
  random or meta weight (diffusers does not report a key that the shard index lists but the shard lacks);
- ``output_loading_info`` of both libraries is checked too, and no parameter may be left on the meta device.

Peak host memory of a load is about one shard (GPU target) or the model in its dtype plus one shard (CPU target):
``BENCHMARKS.md`` has the measurement.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mirage.errors import ModelError
from mirage.hub.presets import SCHEDULER_CLASSES, Preset
from mirage.hub.sources import ResolvedSource, fix_hint, offline, one_line, translating, where

logger = logging.getLogger("mirage")

# Prompts are tokenised once per run, so the tokenizers (Rust/rayon) thread pool gains nothing; its idle workers
# were measured to slow torch's CPU kernels ~5x afterwards on a 2-core machine. A user's own setting wins.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".msgpack", ".h5")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


# ---------------------------------------------------------------------------------------------- files


def check_local_folder(src: ResolvedSource, config_name: str, needs_weights: bool, preset: Preset | None) -> Path:
    """A local component folder must exist and hold ``config_name`` (and safetensors weights if ``needs_weights``)."""
    folder = src.folder
    if not folder.is_dir():
        raise ModelError(f"{src.component.value}: folder {folder} does not exist", fix_hint(src, preset))
    if not (folder / config_name).is_file():
        raise ModelError(f"{src.component.value}: {folder} has no {config_name}; "
                         "pass the component's folder (save_pretrained output)")
    if needs_weights and not any(folder.glob("*.safetensors")):
        unsafe = sorted(p.name for p in folder.iterdir() if p.suffix in _UNSAFE_SUFFIXES)
        if unsafe:
            raise ModelError(f"{src.component.value}: {folder} holds only {', '.join(unsafe)}; mirage loads safetensors "
                             "only (no pickle); convert it with save_pretrained(..., safe_serialization=True)")
        raise ModelError(f"{src.component.value}: {folder} has no .safetensors weights; pass a complete folder")
    return folder


def _cached(src: ResolvedSource, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(src.source, src.repo_path(filename), revision=src.revision)
    return Path(hit) if isinstance(hit, str) else None


def fetch_file(src: ResolvedSource, filename: str, preset: Preset | None, *, cache_only: bool = False) -> Path:
    """One file of a component: from the folder, the local Hugging Face cache, or the Hub (huggingface_hub).
    ``cache_only`` (or ``HF_HUB_OFFLINE``): never the network."""
    if src.local:
        path = src.folder / filename
        if not path.is_file():
            raise ModelError(f"{where(src, filename)} does not exist; pass a complete folder", fix_hint(src, preset))
        return path
    if cache_only or offline():
        hit = _cached(src, filename)
        if hit is None:
            raise ModelError(f"{where(src, filename)} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1",
                             fix_hint(src, preset))
        return hit
    from huggingface_hub import hf_hub_download

    with translating(src, filename, preset):
        return Path(hf_hub_download(src.source, filename, subfolder=src.subfolder, revision=src.revision))


def weight_files(src: ResolvedSource, names: tuple[str, str], preset: Preset | None, *,
                 cache_only: bool = False) -> tuple[list[Path], Path | None]:
    """The safetensors files of a component: one file, or the index and every shard it names.

    Args:
        names: (single file name, index file name), e.g. :data:`DIFFUSERS_WEIGHTS`.
        cache_only: look in the local cache only, never the network (``mirage models``).

    Returns:
        (weight files, index file or None).
    """
    single, index = names
    if src.local:
        folder = src.folder
        use_index = not (folder / single).is_file() and (folder / index).is_file()
    elif (single_hit := _cached(src, single)) is not None or _cached(src, index) is not None:
        use_index = single_hit is None
    elif cache_only or offline():
        raise ModelError(f"{where(src, single)} (or its shard index {index}) is not in the local Hugging Face cache "
                         "and HF_HUB_OFFLINE=1", fix_hint(src, preset))
    else:
        from huggingface_hub import file_exists

        with translating(src, single, preset):
            use_index = not file_exists(src.source, src.repo_path(single), revision=src.revision)
    if not use_index:
        return [fetch_file(src, single, preset, cache_only=cache_only)], None
    idx = fetch_file(src, index, preset, cache_only=cache_only)
    with translating(src, index, preset):
        weight_map = json.loads(idx.read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    return [fetch_file(src, s, preset, cache_only=cache_only) for s in shards], idx


def read_headers(src: ResolvedSource, files: list[Path], index: Path | None,
                 preset: Preset | None) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor in ``files`` (headers only); a truncated or corrupt file is a ModelError.

    With an index, every key it maps must be in the shard it names.
    """
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    per_file: dict[str, set[str]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as h:
                keys = list(h.keys())
                for k in keys:
                    shapes[k] = tuple(h.get_slice(k).get_shape())
        except (SafetensorError, OSError) as e:
            raise ModelError(f"{where(src, f.name)}: unreadable safetensors file, truncated or corrupt ({one_line(e, 90)})",
                             redownload_hint(src, preset)) from None
        per_file[f.name] = set(keys)
    if index is not None:
        weight_map = json.loads(index.read_text())["weight_map"]
        absent = sorted(k for k, shard in weight_map.items() if k not in per_file.get(shard, ()))
        if absent:
            shard = weight_map[absent[0]]
            raise ModelError(f"{where(src, shard)}: lacks {len(absent)} weight(s) its index names ({absent[0]}, ...); "
                             "the shard is from another checkpoint or incomplete", redownload_hint(src, preset))
    return shapes


def redownload_hint(src: ResolvedSource, preset: Preset | None) -> str:
    """The fix for a broken file: fetch it again (Hub), or replace the folder."""
    if src.local:
        return f"re-save or re-download the folder {src.folder}"
    p = preset.value if preset is not None else "PRESET"
    return f"delete it from the Hugging Face cache (`hf cache rm {src.source}`) and run `mirage download {p}` again"


def check_keys(src: ResolvedSource, expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> None:
    """Missing, unexpected or mis-shaped weights against the model's own state dict: one ModelError line."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(f"{k} {found[k]} vs {expected[k]}" for k in set(found) & set(expected) if found[k] != expected[k])
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)):
        if keys:
            problems.append(f"{len(keys)} {what} ({', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''})")
    if problems:
        raise ModelError(f"{src.component.value}: {src.describe()} does not match its config: {'; '.join(problems)}",
                         "the checkpoint is incomplete or for another model")


def check_loading_info(src: ResolvedSource, info: dict[str, Any], model: torch.nn.Module) -> None:
    """The library's own loading report must be clean and no weight may be left on the meta device."""
    problems = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        vals = sorted(v if isinstance(v, str) else str(v[0]) for v in (info.get(key) or []))
        if vals:
            problems.append(f"{len(vals)} {key.replace('_', ' ')} ({', '.join(vals[:2])}{', ...' if len(vals) > 2 else ''})")
    if info.get("error_msgs"):
        problems.append(f"load errors ({one_line(info['error_msgs'][0], 80)})")
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if meta:
        problems.append(f"{len(meta)} weight(s) never loaded ({meta[0]})")
    if problems:
        raise ModelError(f"{src.component.value}: {src.describe()} does not match its config: {'; '.join(problems)}",
                         "the checkpoint is incomplete or for another model")


def _device_map(device: torch.device) -> dict[str, Any] | None:
    """accelerate device map that loads every shard straight to ``device`` (None: load on the CPU)."""
    if device.type == "cpu":
        return None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return {"": device}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No tqdm bars nor known-harmless deprecation warnings from diffusers/transformers while loading."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was_t, was_d = tlog.is_progress_bar_enabled(), dlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    dlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # diffusers 0.42 still passes this argument to huggingface_hub 1.x, which only warns that it is ignored
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            yield
    finally:
        if was_t:
            tlog.enable_progress_bar()
        if was_d:
            dlog.enable_progress_bar()


# ---------------------------------------------------------------------------------------------- loaders


def load_diffusers(src: ResolvedSource, *, device: torch.device | str, dtype: torch.dtype,
                   allowed_classes: tuple[str, ...], preset: Preset | None) -> Any:
    """Load one diffusers model strictly (``from_pretrained``, safetensors, every key matched).

    Args:
        src: where from. device, dtype: where and in which dtype the weights end up (``_keep_in_fp32_modules``
            stay float32, as diffusers does). allowed_classes: accepted ``_class_name`` values (empty: any).
        preset: for the hint in error messages.

    Returns:
        the model, ``eval()``, on ``device``.
    """
    import diffusers
    from accelerate import init_empty_weights

    device = torch.device(device)
    if src.local:
        check_local_folder(src, "config.json", True, preset)
    config_path = fetch_file(src, "config.json", preset)
    with translating(src, "config.json", preset):
        config = json.loads(config_path.read_text())
    cls_name = config.get("_class_name")
    if allowed_classes and cls_name not in allowed_classes:
        raise ModelError(f"{where(src, 'config.json')} is a {cls_name}, expected {' or '.join(allowed_classes)}; "
                         f"pass the right repo or folder with --{src.component.value.replace('_', '-')}")
    cls = getattr(diffusers, str(cls_name), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        raise ModelError(f"{where(src, 'config.json')} names model class {cls_name!r}, which diffusers "
                         f"{diffusers.__version__} does not have; pass a diffusers model folder")
    files, index = weight_files(src, DIFFUSERS_WEIGHTS, preset)
    found = read_headers(src, files, index, preset)
    with translating(src, "config.json", preset), init_empty_weights(), quiet():
        expected = {k: tuple(v.shape) for k, v in cls.from_config(cls.load_config(str(config_path.parent))).state_dict().items()}
    check_keys(src, expected, found)
    with translating(src, files[0].name, preset), quiet():
        model, info = cls.from_pretrained(
            src.source, subfolder=src.subfolder, revision=None if src.local else src.revision, torch_dtype=dtype,
            use_safetensors=True, low_cpu_mem_usage=True, output_loading_info=True, device_map=_device_map(device),
            local_files_only=src.local or offline(),
        )
    check_loading_info(src, info, model)
    return model.to(device).eval()


def load_text_encoder(src: ResolvedSource, *, device: torch.device | str, dtype: torch.dtype,
                      preset: Preset | None) -> Any:
    """UMT5 text encoder through transformers' ``from_pretrained`` (safetensors only, strict)."""
    from transformers import UMT5EncoderModel

    device = torch.device(device)
    if src.local:
        check_local_folder(src, "config.json", True, preset)
    fetch_file(src, "config.json", preset)
    files, index = weight_files(src, TRANSFORMERS_WEIGHTS, preset)
    read_headers(src, files, index, preset)
    with translating(src, files[0].name, preset), quiet():
        model, info = UMT5EncoderModel.from_pretrained(
            src.source, subfolder=src.subfolder or "", revision=None if src.local else src.revision, dtype=dtype,
            use_safetensors=True, output_loading_info=True, trust_remote_code=False, device_map=_device_map(device),
        )
    check_loading_info(src, info, model)
    return model.to(device).eval().requires_grad_(False)


def load_tokenizer(src: ResolvedSource, *, cls_name: str | None, preset: Preset | None) -> Any:
    """The tokenizer, through the class the repo names (as diffusers loads a pipeline's tokenizer).

    ``AutoTokenizer`` is not used: it first looks for a ``config.json`` that a pipeline repo's ``tokenizer/`` folder
    does not have. ``cls_name``: the class (``T5TokenizerFast``, from model_index.json); None: the
    ``tokenizer_class`` of tokenizer_config.json.
    """
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    if src.local:
        check_local_folder(src, "tokenizer_config.json", False, preset)
    config_path = fetch_file(src, "tokenizer_config.json", preset)
    with translating(src, "tokenizer_config.json", preset):
        name = cls_name or json.loads(config_path.read_text()).get("tokenizer_class") or "PreTrainedTokenizerFast"
    cls = tokenizer_class_from_name(name)
    if cls is None:
        raise ModelError(f"{where(src, 'tokenizer_config.json')}: tokenizer class {name!r} is not in transformers; "
                         "pass a tokenizer folder saved with save_pretrained")
    with translating(src, "tokenizer_config.json", preset), quiet():
        return cls.from_pretrained(src.source, subfolder=src.subfolder or "",
                                   revision=None if src.local else src.revision, trust_remote_code=False)


def load_scheduler_config(src: ResolvedSource, *, preset: Preset | None) -> dict[str, Any]:
    """The scheduler's ``scheduler_config.json`` (a flow-matching sampler's) as a dict."""
    import diffusers

    if src.local:
        check_local_folder(src, "scheduler_config.json", False, preset)
    fetch_file(src, "scheduler_config.json", preset)
    with translating(src, "scheduler_config.json", preset), quiet():
        config = diffusers.UniPCMultistepScheduler.load_config(  # reads scheduler_config.json of any class
            src.source, subfolder=src.subfolder, revision=None if src.local else src.revision)
    cls_name = config.get("_class_name")
    if cls_name not in SCHEDULER_CLASSES:
        raise ModelError(f"{where(src, 'scheduler_config.json')} is a {cls_name}; mirage samples with "
                         f"{' or '.join(SCHEDULER_CLASSES)}", "pass the scheduler folder of a Wan 2.1 repo")
    return dict(config)
