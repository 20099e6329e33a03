"""Depth: monocular depth models, user depth files, and the intrinsics of the input image.

Three things live here, all of them about the input image's depth and camera:

- :class:`DepthEstimator` wraps a transformers depth model (Depth Pro, Depth Anything V1/V2 relative or metric,
  DPT) with its preprocessing done in torch on the model's device. :meth:`DepthEstimator.estimate` gives a
  :class:`DepthResult` for one image; :meth:`DepthEstimator.estimate_batch` gives depth for many frames (the
  write-back of generated frames) in batched model calls.
- :func:`read_depth_file` reads a user's depth map (``.npy`` metres or 16-bit PNG millimetres);
  :func:`save_depth_png16` writes one.
- :func:`resolve_intrinsics` picks the input camera's intrinsics: ``--intrinsics`` > ``--fov`` > the depth
  model's predicted FoV > :data:`DEFAULT_FOV_X_DEG` (with a warning).

Depth everywhere is z in the camera frame (``docs/conventions.md``), float32, metres for metric models and files,
scene units for relative models. Invalid pixels are marked in a ``valid`` mask and hold a placeholder clamped
into ``[MIN_DEPTH_M, MAX_DEPTH_M]`` that must not be used. ``docs/depth.md`` explains the choices.
"""

from __future__ import annotations

import enum
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from mirage._check import check_shape
from mirage.camera import intrinsics_from_fov
from mirage.errors import DepthError, InputError, ModelError
from mirage.io import atomic_path, atomic_write_text

logger = logging.getLogger("mirage")

# --------------------------------------------------------------------------------------------------------------
# constants

DEFAULT_DEPTH_MODEL: str = "apple/DepthPro-hf"
"""Hub repo of the default depth model: Depth Pro (metric depth and the horizontal FoV from one image)."""

DEFAULT_DEPTH_REVISION: str = "main"
DEFAULT_DEPTH_CLASS = "DepthProForDepthEstimation"
DEFAULT_DEPTH_LICENCE = "apple-amlr (Apple ML research licence)"
DEFAULT_DEPTH_SIZE_GB = 1.9  # fp32 safetensors
"""Pinned revision of :data:`DEFAULT_DEPTH_MODEL`. "main" because no full commit hash of apple/DepthPro-hf could be
verified offline; replace it with the commit hash (``huggingface_hub.model_info(...).sha``) when online."""

DEFAULT_FOV_X_DEG: float = 60.0
"""Horizontal FoV (degrees) used when neither the user nor the depth model gives one (a typical phone/photo lens)."""

MIN_DEPTH_M: float = 1e-3
"""Smallest depth (metres / scene units) any estimate holds; smaller or invalid values are clamped up to it."""

MAX_DEPTH_M: float = 1e4
"""Largest depth (metres / scene units): Depth Pro's inverse-depth clamp (1e-4 1/m), i.e. "at infinity" (sky)."""

RELATIVE_NEAR: float = 1.0
"""Depth (scene units) given to the largest disparity of a relative model's frame."""

RELATIVE_FAR: float = 10.0
"""Depth (scene units) given to the smallest disparity of a relative model's frame."""

PNG_DEPTH_SCALE: float = 1000.0
"""16-bit depth PNGs hold millimetres: ``depth_m = value / 1000``; 0 means invalid."""

_FOV_RANGE = (1.0, 179.0)  # open interval of accepted horizontal FoVs, degrees
_RANGE_TOL = 1e-3  # tolerance on the [-1, 1] range check of input images


class DepthKind(str, enum.Enum):
    """What a depth model's output means."""

    METRIC = "metric"  # z-depth in metres
    RELATIVE = "relative"  # affine-invariant disparity, turned into depth in scene units (see docs/depth.md)


class DepthFamily(str, enum.Enum):
    """Depth model families mirage can run (transformers ``config.model_type``)."""

    DEPTH_PRO = "depth_pro"  # DepthProForDepthEstimation: metric, predicts the horizontal FoV
    DEPTH_ANYTHING = "depth_anything"  # DepthAnythingForDepthEstimation: relative or metric (config)
    DPT = "dpt"  # DPTForDepthEstimation: relative disparity


class IntrinsicsSource(str, enum.Enum):
    """Where the input camera's intrinsics came from (highest precedence first)."""

    INTRINSICS = "--intrinsics"
    FOV = "--fov"
    MODEL = "depth model"
    DEFAULT = "default"


# --------------------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class DepthResult:
    """Depth of one image.

    Attributes:
        depth: (H, W) float32 z-depth, metres (scene units when ``kind`` is RELATIVE), in
            ``[MIN_DEPTH_M, MAX_DEPTH_M]``; a placeholder where not ``valid``.
        valid: (H, W) bool, True where ``depth`` may be used.
        fov_x_deg: horizontal FoV in degrees predicted by the model (Depth Pro), else None.
        kind: metric or relative.
        warnings: one-line notes for the user (resizing, masked pixels, relative scale).
    """

    depth: torch.Tensor
    valid: torch.Tensor
    fov_x_deg: float | None
    kind: DepthKind
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class DepthBatch:
    """Depth of F frames (see :class:`DepthResult` for the meaning of each field).

    Attributes:
        depth: (F, H, W) float32.
        valid: (F, H, W) bool.
        fov_x_deg: per frame, the model's predicted horizontal FoV in degrees, or None.
        kind: metric or relative.
        warnings: one-line notes, frames named by index.
    """

    depth: torch.Tensor
    valid: torch.Tensor
    fov_x_deg: tuple[float | None, ...]
    kind: DepthKind
    warnings: tuple[str, ...] = ()


class ResolvedIntrinsics(NamedTuple):
    """The input camera: ``K`` (3, 3) float64 pixels, where it came from, and warnings."""

    K: torch.Tensor
    source: IntrinsicsSource
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class _Preprocess:
    """How images become ``pixel_values`` (read from the model's preprocessor_config.json)."""

    height: int  # target size (exact, or the reference for keep_aspect_ratio)
    width: int
    keep_aspect_ratio: bool  # DPT rule: scale both sides by the factor closer to 1
    multiple: int  # output sides are multiples of this (14 for Depth Anything)
    mode: str  # torch interpolation mode
    antialias: bool  # torchvision's resize antialiases (DPT processors); Depth Pro's does not
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    do_normalize: bool


_RESAMPLE_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}  # PIL codes -> torch modes
_FAMILY_DEFAULTS = {  # the transformers image processor class defaults, for keys a config leaves out
    DepthFamily.DEPTH_PRO: dict(size={"height": 1536, "width": 1536}, resample=2, keep_aspect_ratio=False),
    DepthFamily.DEPTH_ANYTHING: dict(size={"height": 384, "width": 384}, resample=3, keep_aspect_ratio=False),
    DepthFamily.DPT: dict(size={"height": 384, "width": 384}, resample=3, keep_aspect_ratio=False),
}


# --------------------------------------------------------------------------------------------------------------
# the estimator


class DepthEstimator:
    """A loaded depth model plus its preprocessing; build it with :func:`load_depth_model`.

    Attributes:
        name: repo id or local folder it was loaded from.
        revision: Hub revision (None for local folders).
        family: which transformers model family.
        kind: metric or relative output.
        predicts_fov: whether :attr:`DepthResult.fov_x_deg` is filled (Depth Pro with its FoV head).
        device, dtype: where and in which precision the model runs.
        max_batch: frames per model call in :meth:`estimate_batch`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: _Preprocess,
        *,
        name: str,
        revision: str | None,
        family: DepthFamily,
        kind: DepthKind,
        device: torch.device,
        dtype: torch.dtype,
        max_batch: int = 1,
    ):
        self.model = model
        self.preprocess = preprocess
        self.name = name
        self.revision = revision
        self.family = family
        self.kind = kind
        self.device = device
        self.dtype = dtype
        self.max_batch = max_batch
        self.predicts_fov = family is DepthFamily.DEPTH_PRO and getattr(model, "fov_model", None) is not None

    def __repr__(self) -> str:
        return (
            f"DepthEstimator({self.name!r}, family={self.family.value}, kind={self.kind.value}, "
            f"device={self.device}, dtype={self.dtype})"
        )

    # ---- public

    def estimate(self, image: torch.Tensor, *, fov_x_deg: float | None = None) -> DepthResult:
        """Depth of one image at its own resolution.

        Args:
            image: (3, H, W) float RGB in [-1, 1], on :attr:`device`.
            fov_x_deg: the image's known horizontal FoV in degrees (from ``--fov``/``--intrinsics``). Depth Pro
                uses it instead of its predicted FoV to scale its depth to metres (as Apple's reference code
                does); other families ignore it.

        Returns:
            :class:`DepthResult` with (H, W) depth and mask on :attr:`device`.

        Raises:
            InputError: wrong shape, range, device. ModelError: Depth Pro predicted an unusable FoV and none was
            given. DepthError: the model gave no valid pixel.
        """
        check_shape(image, (3, "H", "W"), "image")
        batch = self.estimate_frames(image[None], fov_x_deg=fov_x_deg)
        n_valid = int(batch.valid.sum())
        if n_valid == 0:
            raise DepthError(
                f"depth model {self.name}: no valid depth in the image (all NaN/inf/<=0); "
                "pass a depth file with --depth or try another --depth-model"
            )
        return DepthResult(
            depth=batch.depth[0],
            valid=batch.valid[0],
            fov_x_deg=batch.fov_x_deg[0],
            kind=batch.kind,
            warnings=tuple(w.replace("frame 0: ", "") for w in batch.warnings),
        )

    def estimate_batch(self, frames: torch.Tensor, *, fov_x_deg: float | None = None) -> torch.Tensor:
        """Depth of F frames (write-back of generated frames), :attr:`max_batch` frames per model call.

        Args:
            frames: (F, 3, H, W) float RGB in [-1, 1], on :attr:`device`.
            fov_x_deg: known horizontal FoV in degrees (see :meth:`estimate`); pass it for generated frames.

        Returns:
            depth: (F, H, W) float32 z-depth (metres, or scene units for relative models), equal to
            :meth:`estimate` frame by frame; invalid pixels hold a placeholder (use :meth:`estimate_frames`
            for the mask).
        """
        return self.estimate_frames(frames, fov_x_deg=fov_x_deg).depth

    def estimate_frames(self, frames: torch.Tensor, *, fov_x_deg: float | None = None) -> DepthBatch:
        """Like :meth:`estimate_batch`, with the valid mask, per-frame FoVs and warnings (:class:`DepthBatch`)."""
        check_shape(frames, ("F", 3, "H", "W"), "frames")
        self._check_frames(frames)
        if fov_x_deg is not None:
            _check_fov(fov_x_deg, "fov_x_deg")
        n = frames.shape[0]
        depths, valids, fovs, warnings = [], [], [], []
        for start in range(0, n, self.max_batch):
            chunk = frames[start : start + self.max_batch]
            d, v, f, w = self._run_chunk(chunk, fov_x_deg, first_index=start)
            depths.append(d)
            valids.append(v)
            fovs.extend(f)
            warnings.extend(w)
        if self.kind is DepthKind.RELATIVE:
            warnings.insert(
                0,
                f"depth model {self.name} is relative: disparity normalised per frame to depth "
                f"[{RELATIVE_NEAR:g}, {RELATIVE_FAR:g}] scene units; camera translations are relative, not metres",
            )
        return DepthBatch(
            depth=torch.cat(depths),
            valid=torch.cat(valids),
            fov_x_deg=tuple(fovs),
            kind=self.kind,
            warnings=tuple(warnings),
        )

    # ---- internals

    def _check_frames(self, frames: torch.Tensor) -> None:
        if not frames.is_floating_point():
            raise InputError(
                f"frames: dtype {frames.dtype}, expected float in [-1, 1]; convert with x / 127.5 - 1"
            )
        if not _same_device(frames.device, self.device):
            raise InputError(
                f"frames: on {frames.device}, the depth model is on {self.device}; move the image there first"
            )
        if frames.numel() == 0:
            raise InputError(
                f"frames: empty tensor of shape {tuple(frames.shape)}; pass at least one 1x1 image"
            )
        lo, hi = (float(x) for x in torch.aminmax(frames.float()))
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise InputError(
                f"frames: values in [{lo:.3g}, {hi:.3g}], expected RGB in [-1, 1]; convert with x / 127.5 - 1"
            )

    def _pixel_values(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, h, w) normalised model input in :attr:`dtype`."""
        p = self.preprocess
        x = (frames.float() + 1.0) * 0.5  # (B, 3, H, W) in [0, 1] (== processor's rescale of 0..255)
        h, w = model_input_size(frames.shape[-2], frames.shape[-1], p)
        if (h, w) != tuple(frames.shape[-2:]):
            kw = {} if p.mode == "nearest-exact" else {"align_corners": False, "antialias": p.antialias}
            x = F.interpolate(x, size=(h, w), mode=p.mode, **kw)  # (B, 3, h, w)
        if p.do_normalize:
            mean = torch.tensor(p.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor(p.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x.to(self.dtype)

    def _run_chunk(
        self, frames: torch.Tensor, fov_x_deg: float | None, *, first_index: int
    ) -> tuple[torch.Tensor, torch.Tensor, list[float | None], list[str]]:
        b, _, height, width = frames.shape
        with torch.inference_mode():
            out = self.model(pixel_values=self._pixel_values(frames))
        raw = out.predicted_depth.float()[:, None]  # (B, 1, h', w')
        raw = F.interpolate(raw, size=(height, width), mode="bilinear", align_corners=False)
        raw = raw[:, 0]  # (B, H, W)
        warnings: list[str] = []
        fovs: list[float | None] = [None] * b

        if self.family is DepthFamily.DEPTH_PRO:
            # raw is canonical inverse depth: 0 (sky) is "at infinity", a valid depth of MAX_DEPTH_M
            valid = torch.isfinite(raw) & (raw >= 0)
            fov_used, fovs, fov_warn = self._depth_pro_fov(out, fov_x_deg, first_index)
            warnings.extend(fov_warn)
            # canonical inverse depth -> metric inverse depth: inv = raw * W / f_px = raw * 2 tan(fov / 2)
            scale = 2.0 * torch.tan(torch.deg2rad(fov_used.to(raw.device)) / 2.0)  # (B,)
            inv = (raw * scale.view(b, 1, 1).float()).nan_to_num(nan=1.0 / MIN_DEPTH_M)
            depth = 1.0 / inv.clamp(1.0 / MAX_DEPTH_M, 1.0 / MIN_DEPTH_M)
        elif self.kind is DepthKind.METRIC:
            valid = torch.isfinite(raw) & (raw > 0)
            depth = raw.nan_to_num(nan=MIN_DEPTH_M).clamp(MIN_DEPTH_M, MAX_DEPTH_M)
        else:
            valid = torch.isfinite(raw)
            depth, flat = _disparity_to_depth(raw, valid)
            for i in torch.nonzero(flat).flatten().tolist():
                warnings.append(
                    f"frame {first_index + i}: depth model {self.name} gave a constant disparity; "
                    f"depth set to {2 / (1 / RELATIVE_NEAR + 1 / RELATIVE_FAR):g} everywhere (a flat plane)"
                )

        n_bad = (~valid).flatten(1).sum(1).tolist()  # (B,)
        for i, bad in enumerate(n_bad):
            if bad:
                warnings.append(
                    f"frame {first_index + i}: {bad} of {height * width} pixels invalid (NaN/inf/<=0), masked"
                )
        return depth.contiguous(), valid, fovs, warnings

    def _depth_pro_fov(
        self, out, fov_x_deg: float | None, first_index: int
    ) -> tuple[torch.Tensor, list[float | None], list[str]]:
        """FoV used for Depth Pro's metric scale (B,) float64, predicted FoVs (None where unusable), warnings."""
        pred = getattr(out, "field_of_view", None)
        b = out.predicted_depth.shape[0]
        warnings: list[str] = []
        predicted: list[float | None] = [None] * b
        if pred is not None:
            for i, v in enumerate(pred.detach().float().flatten().tolist()):
                if math.isfinite(v) and _FOV_RANGE[0] < v < _FOV_RANGE[1]:
                    predicted[i] = float(v)
                elif fov_x_deg is not None:
                    warnings.append(
                        f"frame {first_index + i}: depth model {self.name} predicted an unusable FoV of {v:.4g} "
                        f"degrees; ignored, the given FoV {fov_x_deg:g} is used"
                    )
                else:
                    raise ModelError(
                        f"depth model {self.name}: predicted horizontal FoV {v:.4g} degrees is outside (1, 179)",
                        hint="pass --fov DEGREES or --intrinsics fx,fy,cx,cy",
                    )
        if fov_x_deg is not None:
            return torch.full((b,), float(fov_x_deg), dtype=torch.float64), predicted, warnings
        if pred is None:
            raise ModelError(
                f"depth model {self.name}: this Depth Pro checkpoint has no FoV head, so its depth cannot be "
                "scaled to metres without the camera's FoV",
                hint="pass --fov DEGREES or --intrinsics fx,fy,cx,cy",
            )
        return torch.tensor(predicted, dtype=torch.float64), predicted, warnings


def _disparity_to_depth(raw: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative disparity -> depth in scene units, per frame.

    ``d_n = (d - min) / (max - min)`` over the frame's valid pixels, then
    ``depth = 1 / (1/FAR + d_n (1/NEAR - 1/FAR))``, so the largest disparity is at ``RELATIVE_NEAR`` and the
    smallest (sky) at ``RELATIVE_FAR``.

    Args:
        raw: (B, H, W) float32 disparity (any affine scale). valid: (B, H, W) bool.

    Returns:
        depth (B, H, W) float32 in [RELATIVE_NEAR, RELATIVE_FAR]; flat (B,) bool, frames with constant disparity
        (depth set to the harmonic middle of the range).
    """
    inf = torch.tensor(float("inf"), device=raw.device)
    lo = torch.where(valid, raw, inf).flatten(1).amin(1)  # (B,)
    hi = torch.where(valid, raw, -inf).flatten(1).amax(1)  # (B,)
    span = hi - lo
    flat = ~(span > 1e-12 * torch.clamp(hi.abs(), min=1.0)) | ~torch.isfinite(span)
    safe_span = torch.where(flat, torch.ones_like(span), span)
    d_n = ((raw - lo.view(-1, 1, 1)) / safe_span.view(-1, 1, 1)).nan_to_num(nan=0.0).clamp(0.0, 1.0)
    d_n = torch.where(flat.view(-1, 1, 1), torch.full_like(d_n, 0.5), d_n)
    inv = 1.0 / RELATIVE_FAR + d_n * (1.0 / RELATIVE_NEAR - 1.0 / RELATIVE_FAR)
    return 1.0 / inv, flat


def model_input_size(height: int, width: int, preprocess: _Preprocess) -> tuple[int, int]:
    """Model input (h, w) for an image of (height, width), following transformers' DPT resize rule.

    With ``keep_aspect_ratio`` both sides are scaled by whichever of ``target_h / height`` and ``target_w / width``
    is closer to 1, then each side is rounded to a multiple of ``preprocess.multiple`` (at least one multiple).
    Without it the image is resized to exactly ``(target_h, target_w)`` (Depth Pro: 1536 x 1536).
    """
    p = preprocess
    scale_h, scale_w = p.height / height, p.width / width
    if p.keep_aspect_ratio:
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h

    def to_multiple(v: float) -> int:
        return max(p.multiple, int(round(v / p.multiple) * p.multiple))

    return to_multiple(scale_h * height), to_multiple(scale_w * width)


def _same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _check_fov(fov_x_deg: float, option: str) -> float:
    try:
        v = float(fov_x_deg)
    except (TypeError, ValueError):
        raise InputError(
            f"{option}: {fov_x_deg!r} is not a number; pass a horizontal FoV in degrees, e.g. 60"
        ) from None
    if not (math.isfinite(v) and _FOV_RANGE[0] < v < _FOV_RANGE[1]):
        raise InputError(
            f"{option}: {fov_x_deg} degrees is outside (1, 179); pass a horizontal FoV in degrees, e.g. 60"
        )
    return v


# --------------------------------------------------------------------------------------------------------------
# loading


def load_depth_model(
    repo_or_path: str,
    *,
    revision: str | None,
    device: torch.device,
    dtype: torch.dtype,
    max_batch: int = 1,
) -> DepthEstimator:
    """Load a transformers depth model strictly: safetensors only, no remote code, every key must match.

    Args:
        repo_or_path: Hub repo id ("apple/DepthPro-hf") or a local folder with config.json,
            preprocessor_config.json and *.safetensors. ``HF_HUB_OFFLINE=1`` is honoured by huggingface_hub.
        revision: Hub revision (branch, tag or commit); ignored (with a log line) for local folders.
        device: where the model runs. dtype: its precision (float32 / float16 / bfloat16).
        max_batch: frames per model call in :meth:`DepthEstimator.estimate_batch`.

    Raises:
        ModelError: cannot find, download or read the model; unsupported family; missing, unexpected or
        mis-shaped weights; no safetensors file.
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

    try:
        config = AutoConfig.from_pretrained(src, trust_remote_code=False, **hub_kw)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(
            f"depth model {src}: cannot read its config ({_first_line(e)})",
            hint="check the repo id / folder, your network, or HF_HUB_OFFLINE with a filled cache",
        ) from None
    try:
        family = DepthFamily(config.model_type)
    except ValueError:
        valid = ", ".join(f.value for f in DepthFamily)
        raise ModelError(
            f"depth model {src}: model_type {config.model_type!r} is not supported (supported: {valid})",
            hint=f"use --depth-model {DEFAULT_DEPTH_MODEL} or a Depth Anything V2 checkpoint",
        ) from None
    kind = _kind_of(config, family)
    preprocess = _read_preprocess(src, family, hub_kw)

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
            f"depth model {src}: cannot load safetensors weights ({_first_line(e)})",
            hint="mirage loads *.safetensors only; re-save the model with save_pretrained",
        ) from None
    problems = []
    for what in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(what) or ())
        if keys:
            shown = ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")
            problems.append(f"{what.replace('_', ' ')}: {shown}")
    if info.get("error_msgs"):
        problems.append(f"errors: {_first_line(info['error_msgs'][0])}")
    if problems:
        raise ModelError(
            f"depth model {src}: weights do not match its config ({'; '.join(problems)})",
            hint="the checkpoint is incomplete or for another architecture; re-download it",
        )
    model = model.to(device).eval().requires_grad_(False)
    logger.info("loaded depth model %s (%s, %s) on %s in %s", src, family.value, kind.value, device, dtype)
    return DepthEstimator(
        model,
        preprocess,
        name=src,
        revision=revision,
        family=family,
        kind=kind,
        device=device,
        dtype=dtype,
        max_batch=max_batch,
    )


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


def _kind_of(config, family: DepthFamily) -> DepthKind:
    if family is DepthFamily.DEPTH_PRO:
        return DepthKind.METRIC
    if family is DepthFamily.DEPTH_ANYTHING:
        t = getattr(config, "depth_estimation_type", "relative")
        if t not in ("relative", "metric"):
            raise ModelError(
                f"depth model: depth_estimation_type {t!r} is not 'relative' or 'metric'; fix config.json"
            )
        return DepthKind(t)
    return DepthKind.RELATIVE


def _read_preprocess(src: str, family: DepthFamily, hub_kw: dict) -> _Preprocess:
    """Read preprocessor_config.json (through transformers' file resolution, Hub or local)."""
    from transformers.image_processing_base import ImageProcessingMixin

    try:
        cfg, _ = ImageProcessingMixin.get_image_processor_dict(src, **hub_kw)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(
            f"depth model {src}: cannot read preprocessor_config.json ({_first_line(e)})",
            hint="the folder must hold the image processor saved with save_pretrained",
        ) from None
    merged = {**_FAMILY_DEFAULTS[family], **cfg}
    size = merged["size"]
    if isinstance(size, int):
        size = {"height": size, "width": size}
    try:
        height, width = int(size["height"]), int(size["width"])
        mean = tuple(float(x) for x in merged.get("image_mean", (0.5, 0.5, 0.5)))
        std = tuple(float(x) for x in merged.get("image_std", (0.5, 0.5, 0.5)))
        multiple = int(merged.get("ensure_multiple_of", 1) or 1)
    except (KeyError, TypeError, ValueError):
        raise ModelError(
            f"depth model {src}: preprocessor_config.json has an unreadable size/mean/std ({size!r})",
            hint="size must be {'height': H, 'width': W}",
        ) from None
    resample = merged.get("resample", 3)
    if resample not in _RESAMPLE_MODES or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ModelError(
            f"depth model {src}: preprocessor_config.json resample={resample!r}, mean={mean}, std={std} not supported",
            hint="resample must be 0, 2 or 3 (nearest, bilinear, bicubic) and mean/std 3 values",
        )
    if merged.get("do_resize", True) is False or merged.get("do_pad", False):
        raise ModelError(
            f"depth model {src}: preprocessor_config.json with do_resize=false or do_pad=true is not supported",
            hint="use a Depth Pro, Depth Anything or DPT checkpoint",
        )
    return _Preprocess(
        height=height,
        width=width,
        keep_aspect_ratio=bool(merged.get("keep_aspect_ratio", False)),
        multiple=multiple,
        mode=_RESAMPLE_MODES[resample],
        antialias=family is not DepthFamily.DEPTH_PRO,
        mean=mean,
        std=std,
        do_normalize=bool(merged.get("do_normalize", True)),
    )


def _first_line(e: object) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


# --------------------------------------------------------------------------------------------------------------
# tiny random models (tests, the "tiny" preset)


def build_tiny_depth_model(
    out_dir: Path,
    seed: int = 0,
    *,
    family: DepthFamily = DepthFamily.DEPTH_PRO,
    kind: DepthKind = DepthKind.METRIC,
) -> None:
    """Save a tiny random depth model (about 100k parameters) and its preprocessor config into ``out_dir``.

    The same seed gives identical weights. The output heads are set so that the random model gives sane
    values: positive depth (about 1 m for Depth Pro, 5 m for metric Depth Anything) and a predicted FoV of
    about 55 degrees (Depth Pro), with small image-dependent variation.

    Args:
        out_dir: folder to write config.json, model.safetensors and preprocessor_config.json into (created).
        seed: torch seed for the weights.
        family: DEPTH_PRO (the default model's family, input 128 x 128) or DEPTH_ANYTHING (input multiple of 14).
        kind: METRIC, or RELATIVE (Depth Anything only).
    """
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        DepthProConfig,
        DepthProForDepthEstimation,
    )

    family, kind = DepthFamily(family), DepthKind(kind)
    if family is DepthFamily.DEPTH_PRO and kind is not DepthKind.METRIC:
        raise InputError("build_tiny_depth_model: Depth Pro is metric only; pass kind=DepthKind.METRIC")
    if family is DepthFamily.DPT:
        raise InputError(
            "build_tiny_depth_model: family dpt has no tiny builder; use depth_pro or depth_anything"
        )
    out_dir = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family is DepthFamily.DEPTH_PRO:
            vit = dict(
                model_type="dinov2",
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                patch_size=8,
                image_size=32,
            )
            config = DepthProConfig(
                patch_size=32,
                fusion_hidden_size=16,
                intermediate_hook_ids=[1, 0],
                intermediate_feature_dims=[8, 8],
                scaled_images_ratios=[0.25, 0.5, 1.0],
                scaled_images_overlap_ratios=[0.0, 0.5, 0.25],
                scaled_images_feature_dims=[8, 8, 8],
                merge_padding_value=1,
                use_fov_model=True,
                num_fov_head_layers=1,
                image_model_config=dict(vit),
                patch_model_config=dict(vit),
                fov_model_config=dict(vit),
            )
            model = DepthProForDepthEstimation(config).eval()
            calib = torch.rand(4, 3, 128, 128) * 2 - 1  # (4, 3, 128, 128) calibration images
            # canonical inverse depth ~ 1 +- 0.3 (depth ~ 1 m), FoV ~ 55 +- 2 degrees
            _calibrate_conv(model, model.head.layers[-2], calib, mean=1.0, std=0.3)
            _calibrate_conv(model, model.fov_model.head.layers[-1], calib, mean=55.0, std=2.0)
            size, resample, mean, std, keep, multiple = 128, 2, [0.5] * 3, [0.5] * 3, False, 1
            processor_type = "DepthProImageProcessor"
        else:
            backbone = dict(
                model_type="dinov2",
                hidden_size=16,
                num_hidden_layers=4,
                num_attention_heads=2,
                intermediate_size=32,
                patch_size=14,
                image_size=56,
                out_indices=[1, 2, 3, 4],
                reshape_hidden_states=False,
            )
            config = DepthAnythingConfig(
                backbone_config=backbone,
                reassemble_hidden_size=16,
                neck_hidden_sizes=[8, 8, 8, 8],
                fusion_hidden_size=8,
                head_hidden_size=8,
                depth_estimation_type=kind.value,
                max_depth=20 if kind is DepthKind.METRIC else 1,
            )
            model = DepthAnythingForDepthEstimation(config).eval()
            calib = torch.rand(2, 3, 56, 84) * 2 - 1  # (2, 3, 56, 84) calibration images
            # random init shrinks activations ~1e5x through neck and head (fp16 would underflow): unit-std them
            convs = [
                m for m in (*model.neck.modules(), *model.head.modules()) if isinstance(m, torch.nn.Conv2d)
            ]
            _unit_std_outputs(model, convs[:-1], calib)
            # relative: disparity ~ 1 +- 0.3 before the ReLU; metric: sigmoid(-1.1 +- 0.5) * 20 ~ 5 m (2.5 to 8 m)
            metric = kind is DepthKind.METRIC
            _calibrate_conv(
                model, model.head.conv3, calib, mean=-1.1 if metric else 1.0, std=0.5 if metric else 0.3
            )
            size, resample, keep, multiple = 56, 3, True, 14
            mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
            processor_type = "DPTImageProcessor"
    model.save_pretrained(out_dir)
    processor = {
        "image_processor_type": processor_type,
        "do_resize": True,
        "size": {"height": size, "width": size},
        "resample": resample,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": mean,
        "image_std": std,
        "keep_aspect_ratio": keep,
        "ensure_multiple_of": multiple,
        "do_pad": False,
    }
    if family is DepthFamily.DEPTH_PRO:
        # DepthProImageProcessor has no keep_aspect_ratio / ensure_multiple_of / do_pad
        for k in ("keep_aspect_ratio", "ensure_multiple_of", "do_pad"):
            processor.pop(k)
    # written directly (same JSON as image_processor.save_pretrained): DepthProImageProcessor needs torchvision
    atomic_write_text(
        out_dir / "preprocessor_config.json", json.dumps(processor, indent=2, sort_keys=True) + "\n"
    )


def _unit_std_outputs(
    model: torch.nn.Module, convs: list[torch.nn.Conv2d], pixel_values: torch.Tensor
) -> None:
    """Rescale each conv's weight and bias so its output on ``pixel_values`` has unit std (LSUV-style).

    One forward pass: each hook rescales its conv and its output, so later convs see the rescaled inputs.
    Convs the forward pass does not use are left as they are.
    """

    def hook(conv: torch.nn.Module, _inputs, out: torch.Tensor) -> torch.Tensor:
        s = 1.0 / max(float(out.std()), 1e-12)
        conv.weight.mul_(s)
        if conv.bias is not None:
            conv.bias.mul_(s)
        return out * s

    handles = [conv.register_forward_hook(hook) for conv in convs]
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        for handle in handles:
            handle.remove()


def _calibrate_conv(
    model: torch.nn.Module, conv: torch.nn.Conv2d, pixel_values: torch.Tensor, *, mean: float, std: float
) -> None:
    """Rescale ``conv``'s weight and set its bias so its output on ``pixel_values`` has this mean and std."""
    seen: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        handle.remove()
    with torch.no_grad():
        z = seen[0] - conv.bias.view(1, -1, 1, 1)  # weight part of the output
        s = std / max(float(z.std()), 1e-12)
        conv.weight.mul_(s)
        conv.bias.fill_(mean - s * float(z.mean()))


# --------------------------------------------------------------------------------------------------------------
# intrinsics


def resolve_intrinsics(
    width: int,
    height: int,
    *,
    fov_x_deg: float | None = None,
    intrinsics: tuple[float, float, float, float] | None = None,
    predicted_fov_x_deg: float | None = None,
    default_fov_x_deg: float = DEFAULT_FOV_X_DEG,
) -> ResolvedIntrinsics:
    """Pick the input camera's intrinsics: ``--intrinsics`` > ``--fov`` > model's FoV > default (with a warning).

    Args:
        width, height: image size in pixels.
        fov_x_deg: ``--fov``, horizontal FoV in degrees, in (1, 179).
        intrinsics: ``--intrinsics fx,fy,cx,cy`` in pixels of this image, pixel-centre convention
            (``docs/conventions.md``): fx, fy > 0, cx in [-0.5, W - 0.5], cy in [-0.5, H - 0.5].
        predicted_fov_x_deg: the depth model's predicted horizontal FoV (:attr:`DepthResult.fov_x_deg`).
        default_fov_x_deg: used when nothing else is given.

    Returns:
        :class:`ResolvedIntrinsics` ``(K, source, warnings)``: K (3, 3) float64 pixels.

    Raises:
        InputError: an option out of range (the message names the option). ModelError: unusable predicted FoV.
    """
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise InputError(
            f"image size: {width}x{height} is not a positive integer size; check the input image"
        )
    warnings: list[str] = []
    if fov_x_deg is not None:
        fov_x_deg = _check_fov(fov_x_deg, "--fov")
    if intrinsics is not None:
        fx, fy, cx, cy = _check_intrinsics(intrinsics, width, height)
        if fov_x_deg is not None:
            warnings.append(f"--fov {fov_x_deg:g} ignored: --intrinsics takes precedence")
        K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
        return ResolvedIntrinsics(K, IntrinsicsSource.INTRINSICS, tuple(warnings))
    if fov_x_deg is not None:
        return ResolvedIntrinsics(intrinsics_from_fov(fov_x_deg, width, height), IntrinsicsSource.FOV, ())
    if predicted_fov_x_deg is not None:
        v = float(predicted_fov_x_deg)
        if not (math.isfinite(v) and _FOV_RANGE[0] < v < _FOV_RANGE[1]):
            raise ModelError(
                f"depth model: predicted horizontal FoV {predicted_fov_x_deg} degrees is outside (1, 179)",
                hint="pass --fov DEGREES or --intrinsics fx,fy,cx,cy",
            )
        return ResolvedIntrinsics(intrinsics_from_fov(v, width, height), IntrinsicsSource.MODEL, ())
    default = _check_fov(default_fov_x_deg, "default_fov_x_deg")
    warnings.append(
        f"no --fov or --intrinsics and the depth model predicts no FoV: assuming a horizontal FoV of {default:g} "
        "degrees; pass --fov for correct geometry"
    )
    return ResolvedIntrinsics(
        intrinsics_from_fov(default, width, height), IntrinsicsSource.DEFAULT, tuple(warnings)
    )


def _check_intrinsics(intrinsics, width: int, height: int) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(x) for x in intrinsics)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f"--intrinsics: {intrinsics!r} is not 4 finite numbers; pass fx,fy,cx,cy in pixels")
    fx, fy, cx, cy = values
    if fx <= 0 or fy <= 0:
        raise InputError(
            f"--intrinsics: focal lengths fx={fx:g}, fy={fy:g} must be > 0; pass fx,fy,cx,cy in pixels"
        )
    if not (-0.5 <= cx <= width - 0.5 and -0.5 <= cy <= height - 0.5):
        raise InputError(
            f"--intrinsics: principal point ({cx:g}, {cy:g}) is outside the {width}x{height} image; "
            f"pass cx in [-0.5, {width - 0.5:g}] and cy in [-0.5, {height - 0.5:g}] (pixels)"
        )
    return fx, fy, cx, cy


# --------------------------------------------------------------------------------------------------------------
# depth files

_FILE_FORMATS = "a .npy float array (H, W) in metres or a 16-bit grayscale PNG in millimetres (0 = invalid)"


def read_depth_file(path: str | Path, width: int, height: int) -> DepthResult:
    """Read a user's depth map for a ``width x height`` image.

    Formats: ``.npy`` float16/32/64 (H, W) or (1, H, W), metres; ``.png`` 16-bit grayscale, millimetres.
    NaN, inf and values <= 0 (0 in a PNG) are invalid: masked and counted in a warning. A map of another size with
    the same aspect ratio (within one pixel) is resized with nearest-neighbour sampling (keeps depth edges sharp:
    no invented depths between foreground and background), with a warning naming old -> new size.

    Returns:
        :class:`DepthResult`: depth (height, width) float32 metres on the CPU (invalid pixels hold MIN_DEPTH_M),
        valid (height, width) bool, fov_x_deg None, kind METRIC.

    Raises:
        DepthError: unreadable file, wrong format/dtype/shape, other aspect ratio, no valid pixel.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise DepthError(f"depth file {path}: not found; pass {_FILE_FORMATS}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _read_npy(path)
    elif suffix == ".png":
        array = _read_png16(path)
    else:
        raise DepthError(f"depth file {path}: unknown extension {path.suffix!r}; pass {_FILE_FORMATS}")

    depth = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).float()  # (h, w) metres
    valid = torch.isfinite(depth) & (depth > 0)
    warnings: list[str] = []
    n_bad, n_all = int((~valid).sum()), valid.numel()
    if n_bad == n_all:
        raise DepthError(f"depth file {path}: all {n_all} pixels invalid (NaN/inf/<=0); pass {_FILE_FORMATS}")
    if n_bad:
        warnings.append(f"{name}: {n_bad} of {n_all} pixels invalid (NaN/inf/<=0), masked")

    h, w = depth.shape
    if (h, w) != (height, width):
        if abs(w * height - width * h) > max(h, height):  # aspect ratios differ by more than one pixel
            raise DepthError(
                f"depth file {path}: size {w}x{h} has another aspect ratio than the {width}x{height} image; "
                "pass a depth map of the image's aspect ratio"
            )
        depth = F.interpolate(depth[None, None], size=(height, width), mode="nearest-exact")[0, 0]
        valid = (
            F.interpolate(valid[None, None].float(), size=(height, width), mode="nearest-exact")[0, 0] > 0.5
        )
        warnings.append(f"{name}: resized {w}x{h} -> {width}x{height} (nearest) to match the image")
    depth = torch.where(valid, depth, torch.full_like(depth, MIN_DEPTH_M)).clamp(MIN_DEPTH_M, MAX_DEPTH_M)
    return DepthResult(
        depth=depth.contiguous(), valid=valid, fov_x_deg=None, kind=DepthKind.METRIC, warnings=tuple(warnings)
    )


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DepthError(
            f"depth file {path}: cannot read as .npy ({_first_line(e)}); pass {_FILE_FORMATS}"
        ) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        dtype = getattr(array, "dtype", type(array).__name__)
        raise DepthError(f"depth file {path}: dtype {dtype}, expected float metres; pass {_FILE_FORMATS}")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or min(array.shape) < 1:
        raise DepthError(
            f"depth file {path}: shape {array.shape}, expected (H, W) or (1, H, W); pass {_FILE_FORMATS}"
        )
    return array


def _read_png16(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode not in ("I;16", "I;16B", "I;16L", "I;16N"):
                what = {"L": "an 8-bit grayscale", "RGB": "an RGB", "RGBA": "an RGBA", "P": "a palette"}.get(
                    mode, f"a mode-{mode}"
                )
                raise DepthError(
                    f"depth file {path}: {what} PNG, expected a 16-bit grayscale PNG in millimetres; "
                    "save depth with save_depth_png16 or as .npy metres"
                )
            array = np.asarray(img, dtype=np.uint16).astype(np.float64)  # (H, W) millimetres
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise DepthError(
            f"depth file {path}: cannot read as PNG ({_first_line(e)}); pass {_FILE_FORMATS}"
        ) from None
    return array / PNG_DEPTH_SCALE  # metres; 0 stays 0 (invalid)


def save_depth_png16(path: str | Path, depth: torch.Tensor | np.ndarray) -> None:
    """Write depth as a 16-bit grayscale PNG in millimetres (atomic).

    Args:
        path: output .png file.
        depth: (H, W) float metres; NaN/inf/<=0 are written as 0 (invalid); valid depth is rounded to the nearest
            millimetre and at least 1 mm.

    Raises:
        InputError: wrong shape, or valid depth above 65.535 m (the 16-bit range).
    """
    from PIL import Image

    array = (
        depth.detach().cpu().double().numpy()
        if isinstance(depth, torch.Tensor)
        else np.asarray(depth, np.float64)
    )
    if array.ndim != 2:
        raise InputError(f"depth: shape {array.shape}, expected (H, W) metres")
    valid = np.isfinite(array) & (array > 0)
    top = float(array[valid].max()) if valid.any() else 0.0
    if top * PNG_DEPTH_SCALE > 65535.5:
        raise InputError(
            f"depth: max {top:.3f} m exceeds the 16-bit PNG range of 65.535 m; save it as .npy instead"
        )
    mm = np.where(valid, np.clip(np.rint(np.where(valid, array, 0.0) * PNG_DEPTH_SCALE), 1, 65535), 0)
    image = Image.fromarray(mm.astype(np.uint16))  # mode "I;16"
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
