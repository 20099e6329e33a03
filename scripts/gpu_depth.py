"""Depth on the GPU: the image processor on CUDA against the CPU, and Depth Pro's speed at its real size.

    python scripts/gpu_depth.py [--out depth.json]

1. tiny Depth Pro and Depth Anything (metric) models: ``pixel_values`` made by the processor on CUDA equal the CPU
   ones (float tolerance), and bf16 depth on CUDA is within 5% (median) of fp32 depth on the CPU;
2. random-weight Depth Pro at apple/DepthPro-hf's real config (:func:`mirage.depth.depth_pro_config`, 952 M) and at
   transformers' bare ``DepthProConfig()`` (211 M), bf16, on 832x480 frames: ms a frame (``estimate_batch``,
   processor and post-processing included) and peak memory.

Exit code 1 if a check of part 1 fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from mirage.depth import (
    DepthEstimator,
    DepthFamily,
    DepthKind,
    build_tiny_depth_model,
    depth_pro_config,
    depth_pro_processor,
    load_depth_model,
)


def _image(height: int = 480, width: int = 832) -> torch.Tensor:
    """(3, H, W) in [-1, 1]: smooth gradients plus noise, seeded."""
    g = torch.Generator().manual_seed(0)
    y = torch.linspace(-1, 1, height)[:, None].expand(height, width)
    x = torch.linspace(-1, 1, width)[None, :].expand(height, width)
    base = torch.stack([x, y, x * y])  # (3, H, W)
    return (0.8 * base + 0.2 * torch.rand(3, height, width, generator=g) * 2 - 0.2).clamp(-1, 1)


def check_cuda_vs_cpu(root: Path) -> dict:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    image = _image()
    out = {}
    for name, family, kind in (
        ("pro", DepthFamily.DEPTH_PRO, DepthKind.METRIC),
        ("da_metric", DepthFamily.DEPTH_ANYTHING, DepthKind.METRIC),
    ):
        build_tiny_depth_model(root / name, seed=0, family=family, kind=kind)
        ref = load_depth_model(str(root / name), revision=None, device=cpu, dtype=torch.float32)
        gpu32 = load_depth_model(str(root / name), revision=None, device=cuda, dtype=torch.float32)
        gpu16 = load_depth_model(str(root / name), revision=None, device=cuda, dtype=torch.bfloat16)
        pv_err = float((gpu32.pixel_values(image[None].to(cuda)).cpu() - ref.pixel_values(image[None])).abs().max())
        d_ref = ref.estimate(image)
        d_gpu = gpu16.estimate(image.to(cuda))
        m = d_ref.valid & d_gpu.valid.cpu()
        rel = float(((d_gpu.depth.cpu() - d_ref.depth).abs() / d_ref.depth)[m].median())
        # one 8-bit level in normalised units: torchvision's CPU and CUDA resize kernels may round an edge pixel
        # to neighbouring levels (Depth Anything's bicubic resize on the H200: exactly one level)
        std = ref.processor.image_std
        level = 1 / 255 / min(std if isinstance(std, (list, tuple)) else [std])
        out[name] = {
            "pixel_values_max_abs_err_cuda_vs_cpu": pv_err,
            "one_8bit_level": level,
            "depth_bf16_cuda_vs_fp32_cpu_median_rel": rel,
            "ok": pv_err <= 1.01 * level and rel < 0.05,
        }
    return out


def time_depth_pro(config, label: str, frames: int = 8) -> dict:
    from transformers import DepthProForDepthEstimation

    cuda = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.device(cuda):
        model = DepthProForDepthEstimation(config).to(torch.bfloat16).eval()
    n_params = sum(p.numel() for p in model.parameters())
    est = DepthEstimator(
        model, depth_pro_processor(), name=label, revision=None, family=DepthFamily.DEPTH_PRO,
        kind=DepthKind.METRIC, device=cuda, dtype=torch.bfloat16, max_batch=4,
    )
    batch = torch.stack([_image()] * frames).to(cuda)  # (F, 3, 480, 832)
    est.estimate_frames(batch, fov_x_deg=60.0)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        est.estimate_frames(batch, fov_x_deg=60.0)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / (reps * frames) * 1e3
    result = {
        "params_M": round(n_params / 1e6, 2),
        "ms_per_frame_bf16_832x480_batch4": round(ms, 1),
        "peak_MiB": round(torch.cuda.max_memory_allocated() / 2**20),
    }
    del est, model
    return result


def main() -> int:
    from transformers import DepthProConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    import torchvision
    import transformers

    report = {
        "device": torch.cuda.get_device_name(),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "transformers": transformers.__version__},
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["cuda_vs_cpu"] = check_cuda_vs_cpu(Path(tmp))
    report["depth_pro_real_config"] = time_depth_pro(depth_pro_config(), "random:DepthPro (real config)")
    report["depth_pro_default_config"] = time_depth_pro(DepthProConfig(use_fov_model=True), "random:DepthPro (default)")
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if all(v["ok"] for v in report["cuda_vs_cpu"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
