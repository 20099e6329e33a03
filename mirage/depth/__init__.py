"""Depth: monocular depth models, user depth files, and the intrinsics of the input image.

- :mod:`mirage.depth.estimator` / :mod:`mirage.depth.load`: :func:`load_depth_model` gives a :class:`DepthEstimator` (a transformers depth
  model with its own transformers image processor, both on the model's device); :meth:`DepthEstimator.estimate`
  gives a :class:`DepthResult` for one image, :meth:`DepthEstimator.estimate_batch` depth for many frames.
- :mod:`mirage.depth.files`: :func:`read_depth_file` reads a user's depth map (``.npy`` metres or 16-bit PNG
  millimetres); :func:`save_depth_png16` writes one.
- :mod:`mirage.depth.scene`: :func:`scene_depth` (the median of the valid depths, queued for the host without
  waiting) and :func:`resize_depth_result`.
- :mod:`mirage.depth.intrinsics`: :func:`resolve_intrinsics` picks the input camera's intrinsics: ``--intrinsics``
  > ``--fov`` > the depth model's predicted FoV > :data:`DEFAULT_FOV_X_DEG` (with a warning).
- :mod:`mirage.depth.tiny`: :func:`build_tiny_depth_model` (tests, the ``tiny`` preset) and apple/DepthPro-hf's
  real config and processor (:func:`depth_pro_config`, :func:`depth_pro_processor`) for random-weight builds.

Depth everywhere is z in the camera frame (``docs/conventions.md``), float32, metres for metric models and files,
scene units for relative models. Invalid pixels are marked in a ``valid`` mask and hold a placeholder clamped
into ``[MIN_DEPTH_M, MAX_DEPTH_M]`` that must not be used. ``docs/depth.md`` explains the choices.
"""

from mirage.depth.estimator import (
    DEFAULT_DEPTH_CLASS,
    DEFAULT_DEPTH_LICENCE,
    DEFAULT_DEPTH_MODEL,
    DEFAULT_DEPTH_PARAMS,
    DEFAULT_DEPTH_REVISION,
    DEFAULT_DEPTH_SIZE_GB,
    MAX_DEPTH_M,
    MIN_DEPTH_M,
    RELATIVE_FAR,
    RELATIVE_NEAR,
    DepthBatch,
    DepthEstimator,
    DepthFamily,
    DepthKind,
    DepthResult,
    _disparity_to_depth,
)
from mirage.depth.files import PNG_DEPTH_SCALE, read_depth_file, save_depth_png16
from mirage.depth.intrinsics import (
    DEFAULT_FOV_X_DEG,
    IntrinsicsSource,
    ResolvedIntrinsics,
    resolve_intrinsics,
)
from mirage.depth.load import load_depth_model
from mirage.depth.scene import SceneDepth, lower_median, resize_depth_result, scene_depth
from mirage.depth.tiny import build_tiny_depth_model, depth_pro_config, depth_pro_processor

__all__ = [
    "DEFAULT_DEPTH_CLASS",
    "DEFAULT_DEPTH_LICENCE",
    "DEFAULT_DEPTH_MODEL",
    "DEFAULT_DEPTH_PARAMS",
    "DEFAULT_DEPTH_REVISION",
    "DEFAULT_DEPTH_SIZE_GB",
    "DEFAULT_FOV_X_DEG",
    "MAX_DEPTH_M",
    "MIN_DEPTH_M",
    "PNG_DEPTH_SCALE",
    "RELATIVE_FAR",
    "RELATIVE_NEAR",
    "DepthBatch",
    "DepthEstimator",
    "DepthFamily",
    "DepthKind",
    "DepthResult",
    "IntrinsicsSource",
    "ResolvedIntrinsics",
    "SceneDepth",
    "_disparity_to_depth",
    "build_tiny_depth_model",
    "depth_pro_config",
    "depth_pro_processor",
    "load_depth_model",
    "lower_median",
    "read_depth_file",
    "resize_depth_result",
    "resolve_intrinsics",
    "save_depth_png16",
    "scene_depth",
]
