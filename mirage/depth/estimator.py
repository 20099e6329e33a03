"""Monocular depth models: :func:`load_depth_model` gives a :class:`DepthEstimator`.

The estimator wraps a transformers depth model (Depth Pro, Depth Anything V1/V2 relative or metric, DPT) and the
model's own transformers image processor (``AutoImageProcessor``, torchvision backend), which does the
preprocessing and the post-processing on the model's device. :meth:`DepthEstimator.estimate` gives a
:class:`DepthResult` for one image; :meth:`DepthEstimator.estimate_batch` gives depth for many frames (the
write-back of generated frames) in batched model calls.

Depth is z in the camera frame (``docs/conventions.md``), float32, metres for metric models, scene units for
relative models. Invalid pixels are marked in a ``valid`` mask and hold a placeholder clamped into
``[MIN_DEPTH_M, MAX_DEPTH_M]`` that must not be used. ``docs/depth.md`` explains the choices.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from mirage._check import check_shape
from mirage.depth.intrinsics import FOV_RANGE, check_fov
from mirage.errors import DepthError, InputError, ModelError

logger = logging.getLogger("mirage")

# --------------------------------------------------------------------------------------------------------------
# constants

DEFAULT_DEPTH_MODEL: str = "apple/DepthPro-hf"
"""Hub repo of the default depth model: Depth Pro (metric depth and the horizontal FoV from one image)."""

DEFAULT_DEPTH_REVISION: str = "main"
"""Pinned revision of :data:`DEFAULT_DEPTH_MODEL`. "main" because no full commit hash of apple/DepthPro-hf could be
verified offline; replace it with the commit hash (``huggingface_hub.model_info(...).sha``) when online."""

DEFAULT_DEPTH_CLASS = "DepthProForDepthEstimation"
DEFAULT_DEPTH_LICENCE = "apple-amlr (Apple ML research licence)"

DEFAULT_DEPTH_PARAMS: int = 951_991_330
"""Parameters of :data:`DEFAULT_DEPTH_MODEL` (952 M): transformers' ``DepthProForDepthEstimation`` at
:func:`mirage.depth.depth_pro_config` (three DINOv2 ViT-L/16 encoders at 384 px, FoV head), counted in
``tests/test_depth.py``."""

DEFAULT_DEPTH_SIZE_GB: float = 1.9
"""Download size of :data:`DEFAULT_DEPTH_MODEL`: its one ``model.safetensors`` is 1.9 GB on the Hub, i.e. 2 bytes
per parameter (16-bit weights; the exact dtype is not in the files seen). Loaded in float32 it takes 3.8 GB."""

MIN_DEPTH_M: float = 1e-3
"""Smallest depth (metres / scene units) any estimate holds; smaller or invalid values are clamped up to it."""

MAX_DEPTH_M: float = 1e4
"""Largest depth (metres / scene units): Depth Pro's inverse-depth clamp (1e-4 1/m), i.e. "at infinity" (sky)."""

RELATIVE_NEAR: float = 1.0
"""Depth (scene units) given to the largest disparity of a relative model's frame."""

RELATIVE_FAR: float = 10.0
"""Depth (scene units) given to the smallest disparity of a relative model's frame."""

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


# --------------------------------------------------------------------------------------------------------------
# the estimator


class DepthEstimator:
    """A loaded depth model plus its transformers image processor; build it with :func:`load_depth_model`.

    Attributes:
        model: the transformers ``*ForDepthEstimation`` model, eval mode, on :attr:`device` in :attr:`dtype`.
        processor: the model's transformers image processor (torchvision backend: runs on tensors, on any device);
            it resizes and normalises the frames and post-processes the model's output (see ``docs/depth.md``).
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
        processor: Any,
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
        self.processor = processor
        self.name = name
        self.revision = revision
        self.family = family
        self.kind = kind
        self.device = device
        self.dtype = dtype
        self.max_batch = max_batch
        self.predicts_fov = family is DepthFamily.DEPTH_PRO and getattr(model, "fov_model", None) is not None
        self._compiled: torch.nn.Module | None = None  # compile(): the model under torch.compile
        self._fov_offloaded = False  # offload_fov_model(): the FoV model kept in host memory between calls
        self._lock = threading.Lock()  # one model call at a time (it may switch the FoV encoder off for the call)

    def __repr__(self) -> str:
        return (
            f"DepthEstimator({self.name!r}, family={self.family.value}, kind={self.kind.value}, "
            f"processor={type(self.processor).__name__}, device={self.device}, dtype={self.dtype})"
        )

    # ---- public

    def offload_fov_model(self) -> None:
        """Keep Depth Pro's FoV model in host memory; it visits :attr:`device` only inside a call that predicts a FoV
        (diffusers' group offloading, leaf by leaf from pinned host memory, the next leaf's copy on a side stream
        while the current one runs). Once; a no-op for models without one.

        The FoV model is a fourth ViT-L (~0.6 GB of the 952 M-parameter Depth Pro in bf16) that most calls skip: the
        write-back's frames come with their known FoV, and a render given ``--depth`` never asks. A call that
        predicts a FoV (the input image, once a video) pays the copies (BENCHMARKS.md, sixth session). The predicted
        FoV and the depth are unchanged (``tests/test_depth.py``; ``scripts/gpu_smoke.py`` compares the FoV head's raw
        output on the GPU)."""
        from diffusers.hooks import apply_group_offloading

        with self._lock:
            if not self.predicts_fov or self._fov_offloaded:
                return
            apply_group_offloading(self.model.fov_model, onload_device=self.device, offload_device=torch.device("cpu"),
                                   offload_type="leaf_level", use_stream=self.device.type == "cuda")
            self._fov_offloaded = True

    def compile(self) -> None:
        """``torch.compile`` the model, once (``--compile``), for the calls that skip Depth Pro's FoV encoder: the
        write-back's frames (and every call of a model without one). A call that predicts the FoV (the input image,
        once a video) stays eager: its own graph would cost about a minute of compile for ~25 ms a video.

        Depth Pro's input is always the processor's 1536 x 1536 in batches of :attr:`max_batch`, so one graph serves
        every call of that batch size (a last, smaller batch gets its own; Depth Anything, which keeps the aspect,
        one per frame size); the processor and the post-processing stay eager. On an H200, Depth Pro goes from ~71 to ~45 ms a frame (BENCHMARKS.md)."""
        if self._compiled is None:
            self._compiled = torch.compile(self.model)

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
        return self.estimate_frames(frames, fov_x_deg=fov_x_deg, predict_fov=fov_x_deg is None,
                                    count_invalid=False).depth

    def estimate_frames(
        self, frames: torch.Tensor, *, fov_x_deg: float | None = None, predict_fov: bool = True,
        count_invalid: bool = True,
    ) -> DepthBatch:
        """Like :meth:`estimate_batch`, with the valid mask, per-frame FoVs and warnings (:class:`DepthBatch`).

        ``predict_fov=False`` with a ``fov_x_deg`` skips Depth Pro's FoV encoder (a fourth ViT-L pass and its head,
        through transformers' own ``use_fov_model`` switch), whose prediction the given FoV would replace anyway;
        the batch's ``fov_x_deg`` are then None. :meth:`estimate_batch` does that whenever it is given a FoV.

        ``count_invalid=False`` leaves out the per-frame warnings about invalid pixels (and a relative model's
        constant-disparity frames): they read counts back to the host, so the call would wait for the model; without
        them a call given a FoV returns as soon as the model is queued (:meth:`estimate_batch`, whose callers use
        the depth only)."""
        check_shape(frames, ("F", 3, "H", "W"), "frames")
        self._check_frames(frames)
        if fov_x_deg is not None:
            check_fov(fov_x_deg, "fov_x_deg")
        n = frames.shape[0]
        depths, valids, fovs, warnings = [], [], [], []
        for start in range(0, n, self.max_batch):
            chunk = frames[start : start + self.max_batch]
            d, v, f, w = self._run_chunk(chunk, fov_x_deg, first_index=start,
                                         fov_head=predict_fov or fov_x_deg is None, count_invalid=count_invalid)
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

    def pixel_values(self, frames: torch.Tensor) -> torch.Tensor:
        """The model input of ``frames``, made by :attr:`processor` on :attr:`device`.

        The frames are quantised to 8-bit RGB first, so the processor sees exactly what it sees for an 8-bit photo
        (its ``rescale_factor`` is 1/255) and gives the same ``pixel_values`` as on that photo as a PIL image.

        Args:
            frames: (B, 3, H, W) float RGB in [-1, 1], on :attr:`device`.

        Returns:
            (B, 3, h, w) in :attr:`dtype`: resized as the processor's config says (Depth Pro: 1536 x 1536;
            Depth Anything: aspect kept, sides multiples of 14) and normalised with its ``image_mean``/``image_std``.
        """
        rgb8 = ((frames.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)  # (B, 3, H, W) 0..255
        out = self.processor(
            images=rgb8, input_data_format="channels_first", device=self.device, return_tensors="pt"
        )
        return out["pixel_values"].to(self.dtype)

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

    def _run_chunk(
        self, frames: torch.Tensor, fov_x_deg: float | None, *, first_index: int, fov_head: bool = True,
        count_invalid: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, list[float | None], list[str]]:
        """Depth (B, H, W) float32, valid (B, H, W) bool, predicted FoVs and warnings of B frames.
        ``fov_head=False``: Depth Pro's FoV encoder does not run (a FoV is given); ``count_invalid=False``: no
        warnings that need a host read-back (see :meth:`estimate_frames`)."""
        b, _, height, width = frames.shape
        fov_on = fov_head and self.predicts_fov
        model = self._compiled if self._compiled is not None and not fov_on else self.model
        # the switch and the call under one lock: two threads must not interleave its set and restore
        with self._lock, torch.inference_mode(), _fov_model_on(self.model, fov_on):
            out = model(pixel_values=self.pixel_values(frames))
        raw = out.predicted_depth.float()  # (B, h', w') at the model's resolution
        warnings: list[str] = []
        fovs: list[float | None] = [None] * b

        if self.family is DepthFamily.DEPTH_PRO:
            # raw is canonical inverse depth (its head ends in a ReLU); anything else (NaN, inf from fp16
            # overflow, < 0) becomes NaN, which the processor's interpolation carries into the mask below.
            # 0 (sky) is "at infinity": the processor's clamp makes it a valid depth of MAX_DEPTH_M.
            raw = torch.where(torch.isfinite(raw) & (raw >= 0), raw, torch.full_like(raw, float("nan")))
            fov_used, fovs, fov_warn = self._depth_pro_fov(out, fov_x_deg, first_index)
            warnings.extend(fov_warn)
            depth = self._post_process(raw, height, width, fov=fov_used)  # (B, H, W) metres
            valid = torch.isfinite(depth)
            depth = depth.nan_to_num(nan=MIN_DEPTH_M).clamp(MIN_DEPTH_M, MAX_DEPTH_M)
        elif self.kind is DepthKind.METRIC:
            depth = self._post_process(raw, height, width)  # (B, H, W) metres
            valid = torch.isfinite(depth) & (depth > 0)
            depth = depth.nan_to_num(nan=MIN_DEPTH_M).clamp(MIN_DEPTH_M, MAX_DEPTH_M)
        else:
            disparity = self._post_process(raw, height, width)  # (B, H, W) affine-invariant disparity
            valid = torch.isfinite(disparity)
            depth, flat = _disparity_to_depth(disparity, valid)
            for i in torch.nonzero(flat).flatten().tolist() if count_invalid else []:
                warnings.append(
                    f"frame {first_index + i}: depth model {self.name} gave a constant disparity; "
                    f"depth set to {2 / (1 / RELATIVE_NEAR + 1 / RELATIVE_FAR):g} everywhere (a flat plane)"
                )

        n_bad = (~valid).flatten(1).sum(1).tolist() if count_invalid else []  # (B,)
        for i, bad in enumerate(n_bad):
            if bad:
                warnings.append(
                    f"frame {first_index + i}: {bad} of {height * width} pixels invalid (NaN/inf/<=0), masked"
                )
        return depth.contiguous(), valid, fovs, warnings

    def _post_process(
        self, raw: torch.Tensor, height: int, width: int, *, fov: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The processor's ``post_process_depth_estimation`` of B frames, back at (height, width).

        Args:
            raw: (B, h', w') float32 model output. fov: Depth Pro only, (B,) horizontal FoV in degrees that scales
                its canonical inverse depth to metres.

        Returns:
            (B, height, width) float32: Depth Pro: metric depth ``1 / clamp(raw * 2 tan(fov / 2), 1e-4, 1e4)``,
            bilinear; DPT / Depth Anything: the output bicubic-resized (metres or disparity).
        """
        if fov is None:
            from transformers.modeling_outputs import DepthEstimatorOutput

            out = DepthEstimatorOutput(predicted_depth=raw)
        else:
            from transformers.models.depth_pro.modeling_depth_pro import DepthProDepthEstimatorOutput

            out = DepthProDepthEstimatorOutput(predicted_depth=raw, field_of_view=fov.to(raw.device, torch.float32))
        results = self.processor.post_process_depth_estimation(out, target_sizes=[(height, width)] * len(raw))
        # each result's depth is (height, width), squeezed to fewer dims when a side is 1
        return torch.stack([r["predicted_depth"].reshape(height, width) for r in results]).float()

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
                if math.isfinite(v) and FOV_RANGE[0] < v < FOV_RANGE[1]:
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
        if fov_x_deg is not None:  # made on the model's device: a copy from host memory would wait for the model
            return (torch.full((b,), float(fov_x_deg), dtype=torch.float64, device=out.predicted_depth.device),
                    predicted, warnings)
        if pred is None:
            raise ModelError(
                f"depth model {self.name}: this Depth Pro checkpoint has no FoV head, so its depth cannot be "
                "scaled to metres without the camera's FoV",
                hint="pass --fov DEGREES or --intrinsics fx,fy,cx,cy",
            )
        return torch.tensor(predicted, dtype=torch.float64), predicted, warnings


@contextlib.contextmanager
def _fov_model_on(model: torch.nn.Module, on: bool) -> Iterator[None]:
    """Depth Pro's ``use_fov_model`` (read by its forward) set to ``on`` for the block; other models untouched."""
    if not hasattr(model, "use_fov_model") or getattr(model, "fov_model", None) is None:
        yield
        return
    before = model.use_fov_model
    model.use_fov_model = on
    try:
        yield
    finally:
        model.use_fov_model = before


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


def _same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def first_line(e: object) -> str:
    """The first non-empty line of an exception's message (at most 300 characters), for one-line errors."""
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]
