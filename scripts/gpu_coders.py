"""Speed levers outside the transformer (issue 15): the Wan VAE and Depth Pro, eager against ``--compile``.

    python scripts/gpu_coders.py [--size 832x480] [--frames 81] [--clip 33] [--skip vae,fov,depth,profile] [--out F]

On the random-weight models ``mirage bench --random-weights`` renders with (``random_components``: the real Wan
VAE and Depth Pro architectures, bf16, on CUDA), one lever at a time, each timed with CUDA events (median after a
warm-up) and compared with the eager output:

- the Wan VAE decode of a whole video (``--frames``, what a render decodes) and the encode of the static clip of
  the latent slots (``--clip`` frames of one image), eager (decoder channels-last, as rendered) and after
  :meth:`mirage.vae.VAE.compile` (the decoder by regions); the compile's one-time cost apart; each one's peak VRAM
  above what was allocated before it;
- Depth Pro on 8 frames (write-back depth, ``estimate_batch`` with a known FoV): with its FoV encoder (as before)
  and without it (:meth:`~mirage.depth.DepthEstimator.estimate_batch` now), batches of 1 and of 8, weights in
  channels-last, compiled (:meth:`~mirage.depth.DepthEstimator.compile`), and compiled with the ViT encoders'
  linear layers in FP8 (:class:`mirage.precision.Fp8Linear`, measured here only);
- Depth Pro's FoV model kept in host memory (:meth:`~mirage.depth.DepthEstimator.offload_fov_model`): the VRAM
  freed, and the input image's call (which predicts the FoV) with the model resident and offloaded;
- with ``profile`` not skipped: the top CUDA kernels of one eager Depth Pro frame and one eager decode.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from gpu_levers import (  # scripts/ is on sys.path when run as a script
    cuda_time,
    fov_head_output,
    peak_extra,
    rel,
    write_report,
)


def timed_once(fn) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def top_kernels(fn, n: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)[:n]
    return [{"kernel": e.key[:90], "ms": round(e.device_time_total / 1e3, 2), "calls": e.count} for e in rows]


def vae_part(vae, height: int, width: int, frames: int, clip: int, profile: bool) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    T = (frames - 1) // 4 + 1
    z = torch.randn(T, vae.latent_channels, height // 8, width // 8, device="cuda", generator=g, dtype=vae.dtype)
    image = torch.rand(3, height, width, device="cuda", generator=g) * 2 - 1
    clip_video = image[None].expand(clip, -1, -1, -1)
    out = {"frames": frames, "latent_frames": T, "clip": clip}
    ref_dec = vae.decode(z)
    ref_enc = vae.encode_video(clip_video)
    out["decode_ms_eager"] = round(cuda_time(lambda: vae.decode(z), repeats=3, warmup=1), 1)
    out["decode_peak_extra_GiB_eager"] = round(peak_extra(lambda: vae.decode(z)) / 2**30, 3)
    out["encode_clip_ms_eager"] = round(cuda_time(lambda: vae.encode_video(clip_video), repeats=3, warmup=1), 1)
    if profile:
        out["decode_top_kernels_eager"] = top_kernels(lambda: vae.decode(z[:3]))
    vae.compile()
    out["compile_decode_s"] = round(timed_once(lambda: vae.decode(z[:4])), 1)  # first, second, steady calls
    out["compile_encode_s"] = round(timed_once(lambda: vae.encode_video(clip_video[:9])), 1)
    out["decode_ms_compiled"] = round(cuda_time(lambda: vae.decode(z), repeats=3, warmup=1), 1)
    out["encode_clip_ms_compiled"] = round(cuda_time(lambda: vae.encode_video(clip_video), repeats=3, warmup=1), 1)
    out["decode_rel_err"] = rel(vae.decode(z), ref_dec)
    out["encode_rel_err"] = rel(vae.encode_video(clip_video), ref_enc)
    # a length the warm-up did not see: the compiled calls must be reused (no new compile)
    out["decode_9_latent_frames_s_after_compile"] = round(timed_once(lambda: vae.decode(z[:9])), 3)
    out["decode_peak_extra_GiB_compiled"] = round(peak_extra(lambda: vae.decode(z)) / 2**30, 3)
    return out


def fov_offload_part(est, height: int, width: int) -> dict:
    """Depth Pro's FoV model in host memory between calls (``DepthEstimator.offload_fov_model``, the render's
    default on CUDA): the VRAM it frees and what a call that predicts the FoV (the input image) pays for it."""
    g = torch.Generator(device="cuda").manual_seed(2)
    image = (torch.rand(3, height, width, device="cuda", generator=g) * 2 - 1).to(est.dtype)
    fov = 60.0  # random weights predict no valid FoV: given, the FoV head still runs (its prediction is checked)
    ref_fov = fov_head_output(est, image[None])
    out = {"image_ms_resident": round(cuda_time(lambda: est.estimate(image, fov_x_deg=fov), repeats=5, warmup=2), 1)}
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    est.offload_fov_model()
    torch.cuda.empty_cache()
    out["freed_GiB"] = round((before - torch.cuda.memory_allocated()) / 2**30, 3)
    out["image_ms_offloaded"] = round(cuda_time(lambda: est.estimate(image, fov_x_deg=fov), repeats=5, warmup=2), 1)
    out["fov_head_output_rel_diff"] = rel(fov_head_output(est, image[None]), ref_fov)  # the raw FoV: 0 expected
    return out


def depth_part(est, height: int, width: int, profile: bool, n: int = 8) -> dict:
    from mirage.precision import MIN_FP8_FEATURES, Fp8Linear

    g = torch.Generator(device="cuda").manual_seed(1)
    frames = (torch.rand(n, 3, height, width, device="cuda", generator=g) * 2 - 1).to(est.dtype)
    fov = 60.0
    out = {"frames": n}

    def per_frame(fn) -> float:
        return round(cuda_time(fn, repeats=3, warmup=1) / n, 1)

    ref = est.estimate_batch(frames, fov_x_deg=fov)
    with_head = est.estimate_frames(frames, fov_x_deg=fov, predict_fov=True).depth
    out["fov_head_changes_depth_max_abs"] = float((with_head - ref).abs().max())
    out["ms_per_frame_batch1_fov_head"] = per_frame(lambda: est.estimate_frames(frames, fov_x_deg=fov, predict_fov=True))
    out["ms_per_frame_batch1"] = per_frame(lambda: est.estimate_batch(frames, fov_x_deg=fov))
    est.max_batch = n
    out["ms_per_frame_batch8"] = per_frame(lambda: est.estimate_batch(frames, fov_x_deg=fov))
    out["batch8_rel_err"] = rel(est.estimate_batch(frames, fov_x_deg=fov), ref)
    est.max_batch = 1
    if profile:
        out["top_kernels_one_frame_eager"] = top_kernels(lambda: est.estimate_batch(frames[:1], fov_x_deg=fov))
    est.model.to(memory_format=torch.channels_last)
    out["ms_per_frame_batch1_channels_last"] = per_frame(lambda: est.estimate_batch(frames, fov_x_deg=fov))
    out["channels_last_rel_err"] = rel(est.estimate_batch(frames, fov_x_deg=fov), ref)
    est.model.to(memory_format=torch.contiguous_format)
    est.compile()
    out["compile_s"] = round(timed_once(lambda: est.estimate_batch(frames[:2], fov_x_deg=fov)), 1)
    out["ms_per_frame_batch1_compiled"] = per_frame(lambda: est.estimate_batch(frames, fov_x_deg=fov))
    out["compiled_rel_err"] = rel(est.estimate_batch(frames, fov_x_deg=fov), ref)
    # FP8 linears in the ViT encoders (measured here only; not a mirage option)
    model = est.model._orig_mod if hasattr(est.model, "_orig_mod") else est.model
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and min(m.in_features, m.out_features) >= MIN_FP8_FEATURES]
    for name, lin in targets:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, Fp8Linear(lin))
    out["fp8_linear_layers"] = len(targets)
    torch._dynamo.reset()
    out["compile_fp8_s"] = round(timed_once(lambda: est.estimate_batch(frames[:2], fov_x_deg=fov)), 1)
    out["ms_per_frame_batch1_compiled_fp8"] = per_frame(lambda: est.estimate_batch(frames, fov_x_deg=fov))
    out["compiled_fp8_rel_err"] = rel(est.estimate_batch(frames, fov_x_deg=fov), ref)
    return out


def main() -> None:
    from mirage.random_weights import random_components

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="832x480")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--clip", type=int, default=33)
    ap.add_argument("--skip", default="")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    width, height = (int(v) for v in args.size.split("x"))
    cuda = torch.device("cuda")
    torch._dynamo.config.cache_size_limit = 64
    comps = random_components("wan-vace-1.3b", device=cuda, dtype=torch.bfloat16, vae_dtype=torch.bfloat16)
    comps.transformer = None
    torch.cuda.empty_cache()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "size": args.size}
    if "vae" not in skip:
        report["wan_vae"] = vae_part(comps.vae, height, width, args.frames, args.clip, "profile" not in skip)
        print(json.dumps(report["wan_vae"], indent=1), flush=True)
    if "fov" not in skip:  # a Depth Pro of its own: depth_part compiles and swaps layers of comps.depth()'s
        fresh = random_components("wan-vace-1.3b", device=cuda, dtype=torch.bfloat16, vae_dtype=torch.bfloat16)
        fresh.transformer = None
        report["fov_offload"] = fov_offload_part(fresh.depth(), height, width)
        del fresh
        print(json.dumps(report["fov_offload"], indent=1), flush=True)
    if "depth" not in skip:
        report["depth_pro"] = depth_part(comps.depth(), height, width, "profile" not in skip)
        print(json.dumps(report["depth_pro"], indent=1), flush=True)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
