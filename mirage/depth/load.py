"""Loading a depth model: :func:`load_depth_model` gives a :class:`~mirage.depth.estimator.DepthEstimator`.

A transformers depth model and its own image processor, loaded strictly (safetensors only, no remote code, every
weight matched); see ``docs/depth.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from mirage.depth.estimator import (
    DEFAULT_DEPTH_MODEL,
    DepthEstimator,
    DepthFamily,
    DepthKind,
    first_line,
)
from mirage.errors import InputError, ModelError

logger = logging.getLogger("mirage")


def load_depth_model(
    repo_or_path: str,
    *,
    revision: str | None,
    device: torch.device,
    dtype: torch.dtype,
    max_batch: int = 1,
) -> DepthEstimator:
    """Load a transformers depth model and its image processor strictly: safetensors only, no remote code, every
    weight must match.

    Args:
        repo_or_path: Hub repo id ("apple/DepthPro-hf") or a local folder with config.json,
            preprocessor_config.json and *.safetensors. ``HF_HUB_OFFLINE=1`` is honoured by huggingface_hub.
        revision: Hub revision (branch, tag or commit); ignored (with a log line) for local folders.
        device: where the model and its preprocessing run. dtype: model precision (float32 / float16 / bfloat16).
        max_batch: frames per model call in :meth:`DepthEstimator.estimate_batch`.

    Raises:
        ModelError (one line naming the model, revision, file and fix): cannot find, download or read the model;
        unsupported family; a preprocessor_config.json transformers cannot read (or torchvision missing);
        missing, unexpected or mis-shaped weights; no safetensors file.
    """
    from transformers import AutoConfig, AutoModelForDepthEstimation  # heavy import, only when loading

    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputError(
            f"dtype: {dtype!r} is not a floating torch dtype; pass torch.float32, float16 or bfloat16"
        )
    if not isinstance(max_batch, int) or max_batch < 1:
        raise InputError(f"max_batch: {max_batch!r} must be a positive int; pass e.g. 4")
    device = torch.device(device)
    src = str(repo_or_path)
    local = Path(src).expanduser()
    is_local = local.exists() or src.startswith((".", "/", "~"))
    if is_local:
        _check_local_folder(local)
        src = str(local)
        if revision is not None:
            logger.info("depth model %s is a local folder: revision %r ignored", src, revision)
            revision = None
    hub_kw = {"revision": revision} if revision is not None else {}
    where = src if revision is None else f"{src} (revision {revision})"

    try:
        config = AutoConfig.from_pretrained(src, trust_remote_code=False, **hub_kw)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(
            f"depth model {where}: cannot read config.json ({first_line(e)})",
            hint="check the repo id / folder, your network, or HF_HUB_OFFLINE with a filled cache",
        ) from None
    try:
        family = DepthFamily(config.model_type)
    except ValueError:
        valid = ", ".join(f.value for f in DepthFamily)
        raise ModelError(
            f"depth model {where}: config.json model_type {config.model_type!r} is not supported "
            f"(supported: {valid})",
            hint=f"use --depth-model {DEFAULT_DEPTH_MODEL} or a Depth Anything V2 checkpoint",
        ) from None
    kind = _kind_of(config, family, where)
    processor = _load_processor(src, where, hub_kw)

    try:
        model, info = AutoModelForDepthEstimation.from_pretrained(
            src,
            use_safetensors=True,
            trust_remote_code=False,
            output_loading_info=True,
            dtype=dtype,
            **hub_kw,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ModelError(
            f"depth model {where}: cannot load *.safetensors weights ({first_line(e)})",
            hint="mirage loads *.safetensors only; re-save the model with save_pretrained",
        ) from None
    problems = []
    for what in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(what) or ())
        if keys:
            shown = ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")
            problems.append(f"{what.replace('_', ' ')}: {shown}")
    if info.get("error_msgs"):
        problems.append(f"errors: {first_line(info['error_msgs'][0])}")
    if problems:
        raise ModelError(
            f"depth model {where}: *.safetensors weights do not match config.json ({'; '.join(problems)})",
            hint="the checkpoint is incomplete or for another architecture; re-download it",
        )
    model = model.to(device).eval().requires_grad_(False)
    logger.info(
        "loaded depth model %s (%s, %s, %s) on %s in %s",
        where, family.value, kind.value, type(processor).__name__, device, dtype,
    )
    return DepthEstimator(
        model,
        processor,
        name=src,
        revision=revision,
        family=family,
        kind=kind,
        device=device,
        dtype=dtype,
        max_batch=max_batch,
    )


def _load_processor(src: str, where: str, hub_kw: dict) -> Any:
    """The model's own image processor from its preprocessor_config.json, torchvision backend (tensors, any device).

    The torchvision backend is required: it is the only one that runs on the model's device, and the only one
    Depth Pro has; transformers would otherwise fall back to a CPU/PIL processor (or fail) without saying so here.
    """
    from transformers import AutoImageProcessor
    from transformers.utils import is_torchvision_available

    fix = "pip install torchvision, the build made for your torch; see README.md, Dependencies"
    if not is_torchvision_available():
        raise ModelError(
            f"depth model {where}: its image processor (preprocessor_config.json) needs torchvision, "
            "which is not installed",
            hint=fix,
        )
    try:
        processor = AutoImageProcessor.from_pretrained(
            src, backend="torchvision", trust_remote_code=False, **hub_kw
        )
    except (ImportError, RuntimeError) as e:  # a torchvision built for another torch fails on import
        raise ModelError(
            f"depth model {where}: its image processor (preprocessor_config.json) needs a working torchvision "
            f"({first_line(e)})",
            hint=fix,
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelError(
            f"depth model {where}: transformers cannot read preprocessor_config.json ({first_line(e)})",
            hint="the folder must hold the image processor saved with its save_pretrained",
        ) from None
    if getattr(processor, "backend", None) != "torchvision":
        raise ModelError(
            f"depth model {where}: preprocessor_config.json gives {type(processor).__name__}, "
            "which does not run on torch tensors",
            hint=fix,
        )
    if not hasattr(processor, "post_process_depth_estimation"):
        raise ModelError(
            f"depth model {where}: preprocessor_config.json names {type(processor).__name__}, "
            "not a depth-estimation image processor",
            hint="use the preprocessor_config.json of the depth model's own repo",
        )
    return processor


def _check_local_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ModelError(
            f"depth model {folder}: not a folder", hint="pass a Hub repo id or a save_pretrained folder"
        )
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"depth model {folder}: no config.json in the folder", hint="pass a save_pretrained folder"
        )
    if not any(folder.glob("*.safetensors")):
        found = ", ".join(
            sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        )
        raise ModelError(
            f"depth model {folder}: no *.safetensors weights" + (f" (found {found})" if found else ""),
            hint="mirage loads safetensors only; re-save with model.save_pretrained(folder)",
        )


def _kind_of(config, family: DepthFamily, where: str) -> DepthKind:
    if family is DepthFamily.DEPTH_PRO:
        return DepthKind.METRIC
    if family is DepthFamily.DEPTH_ANYTHING:
        t = getattr(config, "depth_estimation_type", "relative")
        if t not in ("relative", "metric"):
            raise ModelError(
                f"depth model {where}: config.json depth_estimation_type {t!r} is not 'relative' or 'metric'",
                hint="fix config.json",
            )
        return DepthKind(t)
    return DepthKind.RELATIVE
