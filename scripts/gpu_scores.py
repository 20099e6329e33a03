"""A chunk's consistency scores on the GPU at the default size: where their time goes.

    python scripts/gpu_scores.py [--frames 33] [--size 832x480] [--repeats 20] [--device cuda] [--kernels N] [--out F.json]

``chunk_scores`` of one chunk (random frames and reads, a latent read's holes and depth, an orbit's cameras) and its
parts, each timed with CUDA events after a warm-up (median of ``--repeats``): the memory agreement of the scored
frames (PSNR and SSIM), SSIM alone, the temporal change (two warps and the difference), one warp
(``sample_through_depth``) of the frame pairs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from gpu_levers import write_report  # scripts/ is on sys.path when run as a script


def chunk_inputs(n: int, W: int, H: int, dev: torch.device, ts: int = 4) -> dict:
    """What :func:`mirage.scores.chunk_scores` gets for one chunk of ``n`` frames at WxH, seeded: random frames and
    reads near them (F, 3, H, W) in [-1, 1], a latent read's holes (T, h, w) and depth (T, h, w), an orbit's cameras
    K (F, 3, 3), w2c and c2w (F, 4, 4); ``ts`` the latent reads' frame stride."""
    from mirage.camera import intrinsics_from_fov
    from mirage.trajectory import load_trajectory

    g = torch.Generator(device=dev).manual_seed(0)
    frames = torch.rand(n, 3, H, W, device=dev, generator=g) * 2 - 1
    reads = (frames + 0.1 * torch.randn(n, 3, H, W, device=dev, generator=g)).clamp(-1, 1)
    T = (n - 1) // ts + 1
    h, w = H // 8, W // 8
    holes = torch.rand(T, h, w, device=dev, generator=g) < 0.1
    depth = torch.where(holes, 0.0, 3.0 + torch.rand(T, h, w, device=dev, generator=g))
    K = intrinsics_from_fov(60.0, W, H).float()
    tj = load_trajectory("orbit", width=W, height=H, K=K.double(), scene_depth=3.5, frames=n)
    Ks, w2c = tj.K.float().to(dev), tj.w2c.float().to(dev)
    return {"frames": frames, "reads": reads, "holes": holes, "depth": depth, "K": Ks, "w2c": w2c,
            "c2w": torch.linalg.inv(w2c), "read_stride": ts}


def median_ms(fn, repeats: int, dev: torch.device) -> float:
    """Median ms of ``repeats`` calls of ``fn()`` after one warm-up: CUDA events on a GPU (each call waited for),
    the host clock on the CPU."""
    fn()
    times = []
    for _ in range(repeats):
        if dev.type != "cuda":
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
            continue
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return round(statistics.median(times), 3)


def top_kernels(fn, n: int) -> list[dict]:
    """The ``n`` ops of one ``fn()`` (after a warm-up) with the most device time: name, ms, calls."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages() if e.device_time_total > 0]
    rows.sort(key=lambda e: e.self_device_time_total, reverse=True)
    return [{"op": e.key[:90], "ms": round(e.self_device_time_total / 1e3, 3), "calls": e.count} for e in rows[:n]]


def ssim_variants(a: torch.Tensor, b: torch.Tensor, timed) -> dict:
    """``ssim_map`` of (N, 3, H, W) frames as written, against the same maths with its gaussian blur written other
    ways: the five maps stacked into one grouped convolution a direction (``stacked``), eleven shifted slices summed
    (``shifted``), and that under torch.compile. Each: ms (``timed``) and its largest difference from ``ssim_map``."""
    import torch.nn.functional as F

    from mirage.scores import _gaussian_window, ssim_from_moments, ssim_map, to_unit

    def variant(blur_kind: str):
        def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            x, y = to_unit(a), to_unit(b)
            g = _gaussian_window(11, 1.5, device=x.device)
            maps = torch.cat([x, y, x * x, y * y, x * y], 1)  # (N, 15, H, W)
            t = F.pad(maps, (5, 5, 5, 5), mode="reflect")
            H, W = x.shape[-2:]
            if blur_kind == "stacked":
                c = t.shape[1]
                t = F.conv2d(t, g.view(1, 1, 1, -1).expand(c, 1, 1, 11), groups=c)
                t = F.conv2d(t, g.view(1, 1, -1, 1).expand(c, 1, 11, 1), groups=c)
            else:
                t = sum(g[i] * t[..., i:i + W] for i in range(11))
                t = sum(g[i] * t[..., i:i + H, :] for i in range(11))
            return ssim_from_moments(*t.split(3, 1))
        return fn

    ref = ssim_map(a, b)
    out = {"conv": {"ms": timed(lambda: ssim_map(a, b)), "max_abs_diff": 0.0}}
    fns = {"stacked": variant("stacked"), "shifted": variant("shifted")}
    fns["shifted_compiled"] = torch.compile(fns["shifted"])
    for name, fn in fns.items():
        diff = float((fn(a, b) - ref).abs().max())
        out[name] = {"ms": timed(lambda fn=fn: fn(a, b)), "max_abs_diff": diff}
    return out


def main() -> None:
    from mirage import scores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", default="832x480")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script (timed by the host clock)")
    ap.add_argument("--kernels", type=int, default=0, help="also list the N kernels of one chunk's scores that take "
                    "the most GPU time (torch.profiler)")
    ap.add_argument("--blur-variants", action="store_true", help="also time ways to write the SSIM's blur")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    W, H = (int(v) for v in args.size.lower().split("x"))
    n, ts, dev = args.frames, 4, torch.device(args.device)
    x = chunk_inputs(n, W, H, dev)
    frames, reads, holes, depth, Ks, w2c, c2w = (x[k] for k in ("frames", "reads", "holes", "depth", "K", "w2c", "c2w"))
    scored = slice(ts, None, ts)
    seen = ~(scores.upsample_depth(holes[1:].float(), (H, W)) > 0.5)
    group = scores.read_groups(n, ts, device=dev)
    depth_px = scores.upsample_depth(depth, (H, W))[group]  # (F, H, W)
    K_key, c2w_key = Ks[::ts][group], c2w[::ts][group]

    def timed(fn) -> float:
        return median_ms(fn, args.repeats, dev)

    parts = {
        "chunk_scores": lambda: scores.chunk_scores(frames, reads, holes, None, depth, Ks, w2c, c2w, ts),
        "memory_agreement": lambda: scores.memory_agreement(frames[scored], reads[scored], seen),
        "ssim": lambda: scores.ssim(frames[scored], reads[scored], seen),
        "temporal_change": lambda: scores.temporal_change(frames, Ks, w2c, depth_px, K_key, c2w_key),
        "sample_through_depth": lambda: scores.sample_through_depth(frames[1:], Ks[1:], w2c[1:], depth_px[1:],
                                                                    K_key[1:], c2w_key[1:]),
    }
    report = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__,
              "frames": n, "scored_frames": int(frames[scored].shape[0]), "size": [W, H],
              "ms": {k: timed(fn) for k, fn in parts.items()}}
    if args.blur_variants:
        report["ssim_map_variants"] = ssim_variants(frames[scored], reads[scored], timed)
    if args.kernels:
        report["kernels"] = top_kernels(parts["chunk_scores"], args.kernels)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
