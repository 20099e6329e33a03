"""Depth models built here: the tiny random ones (tests, the ``tiny`` preset) and the real Depth Pro config.

- :func:`build_tiny_depth_model` saves a ~100k-parameter random model and its image processor with transformers'
  own ``save_pretrained``, so the folder has the real file formats and loads through
  :func:`mirage.depth.load_depth_model` like a Hub repo.
- :func:`depth_pro_config` and :func:`depth_pro_processor` are apple/DepthPro-hf's real config (952 M parameters)
  and image processor, for random-weight builds at the real size (``mirage bench --random-weights``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mirage.depth.estimator import DepthFamily, DepthKind
from mirage.errors import InputError

# apple/DepthPro-hf's encoders: the same DINOv2 ViT-L/16 at 384 px for the image, patch and FoV models, as written
# by transformers' src/transformers/models/depth_pro/convert_depth_pro_weights_to_hf.py (``backbone_config``)
_DEPTH_PRO_ENCODER = dict(
    model_type="dinov2",
    num_hidden_layers=24,
    patch_size=16,
    hidden_size=1024,
    num_attention_heads=16,
    image_size=384,
    use_mask_token=False,
)

_IMAGENET_MEAN = [0.485, 0.456, 0.406]  # Depth Anything V2's preprocessor_config.json image_mean
_IMAGENET_STD = [0.229, 0.224, 0.225]  # ... and image_std


def depth_pro_config() -> Any:
    """apple/DepthPro-hf's ``DepthProConfig``: 951,991,330 parameters (952 M) with its FoV head.

    Three DINOv2 ViT-L/16 encoders (24 layers, 1024 wide, 16 heads, 384 px: image, patch and FoV models), every
    other key at transformers' ``DepthProConfig`` defaults (fusion 256 wide, 1536 px input split into 384 px
    patches at scales 0.25 / 0.5 / 1), ``use_fov_model=True``. The first 80 lines of the real config.json
    (``../shared/hub/apple--DepthPro-hf/config.json.partial``) are checked against it in ``tests/test_depth.py``.
    """
    from transformers import DepthProConfig

    config = DepthProConfig(
        image_model_config=dict(_DEPTH_PRO_ENCODER),
        patch_model_config=dict(_DEPTH_PRO_ENCODER),
        fov_model_config=dict(_DEPTH_PRO_ENCODER),
        use_fov_model=True,
    )
    config.architectures = ["DepthProForDepthEstimation"]
    return config


def depth_pro_processor(size: int = 1536) -> Any:
    """apple/DepthPro-hf's image processor (``preprocessor_config.json``): ``size`` x ``size`` bilinear, no
    antialias, rescale 1/255, scalar mean and std 0.5 (pixels in [-1, 1]). ``size`` other than 1536 is for tiny
    models only. Needs torchvision (transformers' DepthPro processor has no PIL backend)."""
    from transformers import DepthProImageProcessor
    from transformers.image_utils import PILImageResampling

    return DepthProImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        resample=PILImageResampling.BILINEAR,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=0.5,
        image_std=0.5,
    )


def _depth_anything_processor(size: int) -> Any:
    """Depth Anything V2's image processor settings (its preprocessor_config.json) at ``size`` instead of 518."""
    from transformers import DPTImageProcessor
    from transformers.image_utils import PILImageResampling

    return DPTImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=PILImageResampling.BICUBIC,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(_IMAGENET_MEAN),
        image_std=list(_IMAGENET_STD),
        do_pad=False,
    )


def build_tiny_depth_model(
    out_dir: Path,
    seed: int = 0,
    *,
    family: DepthFamily = DepthFamily.DEPTH_PRO,
    kind: DepthKind = DepthKind.METRIC,
) -> None:
    """Save a tiny random depth model (about 100k parameters) and its image processor into ``out_dir``.

    The same seed gives identical weights. The output heads are set so that the random model gives sane
    values: positive depth (about 1 m for Depth Pro, 5 m for metric Depth Anything) and a predicted FoV of
    about 55 degrees (Depth Pro), with small image-dependent variation. The processor is the real family's
    (``DepthProImageProcessor`` with scalar mean/std 0.5 like apple/DepthPro-hf; ``DPTImageProcessor`` with
    Depth Anything V2's settings) at the tiny input size, written by its own ``save_pretrained``.

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
            processor = depth_pro_processor(size=128)
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
            processor = _depth_anything_processor(size=56)
    model.save_pretrained(out_dir)  # config.json + model.safetensors
    processor.save_pretrained(out_dir)  # preprocessor_config.json, written by the processor class itself


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


