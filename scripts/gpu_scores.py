"""A chunk's consistency scores on the GPU at the default size: time and agreement, the current warps against the ones
kept in ``tests/_scores_reference.py``.

    python scripts/gpu_scores.py [--frames 33] [--size 832x480] [--repeats 20] [--out F.json]

``chunk_scores`` of one chunk (random frames and reads, a latent read's holes and depth, an orbit's cameras), timed
with CUDA events after a warm-up (median of ``--repeats``), once as it is and once with ``sample_through_depth``
swapped for the reference; the two score tables must agree to float rounding.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from gpu_levers import write_report  # scripts/ is on sys.path when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/_scores_reference.py


def main() -> None:
    from mirage import scores
    from mirage.camera import intrinsics_from_fov
    from mirage.trajectory import load_trajectory
    from tests._scores_reference import sample_through_depth as reference

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", default="832x480")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script (timed by the host clock)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    W, H = (int(v) for v in args.size.lower().split("x"))
    n, ts, dev = args.frames, 4, torch.device(args.device)
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
    c2w = torch.linalg.inv(w2c)

    def run() -> torch.Tensor:
        return scores.chunk_scores(frames, reads, holes, None, depth, Ks, w2c, c2w, ts)

    def timed() -> tuple[float, torch.Tensor]:
        out = run()
        times = []
        for _ in range(args.repeats):
            if dev.type != "cuda":
                t = time.perf_counter()
                out = run()
                times.append((time.perf_counter() - t) * 1e3)
                continue
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            out = run()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        return statistics.median(times), out

    now_ms, now = timed()
    current = scores.sample_through_depth
    scores.sample_through_depth = reference
    try:
        ref_ms, ref = timed()
    finally:
        scores.sample_through_depth = current
    report = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__, "frames": n, "size": [W, H],
              "chunk_scores_ms": round(now_ms, 3), "chunk_scores_reference_warp_ms": round(ref_ms, 3),
              "temporal_change_max_abs_diff": float((now[3] - ref[3]).abs().max()),
              "points_counted_rel_diff": float((now[4] - ref[4]).abs().sum() / ref[4].abs().sum().clamp(min=1))}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
