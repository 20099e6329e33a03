"""A chunk's consistency scores on the GPU at the default size: where their time goes.

    python scripts/gpu_scores.py [--frames 33] [--size 832x480] [--repeats 20] [--device cuda] [--out F.json]

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


def main() -> None:
    from mirage import scores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", default="832x480")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script (timed by the host clock)")
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
        fn()
        times = []
        for _ in range(args.repeats):
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
    write_report(report, args.out)


if __name__ == "__main__":
    main()
