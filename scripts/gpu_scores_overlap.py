"""Can a chunk's scores hide behind the write-back's depth model? Two levers for the scores' GPU time, measured apart.

    python scripts/gpu_scores_overlap.py [--frames 33] [--depth-frames 2] [--repeats 10] [--compile-depth] [--out F.json]

On one chunk at 832x480 (the inputs of ``scripts/gpu_scores.py``) and random-weight Depth Pro at apple/DepthPro-hf's
real config (952 M, bf16, given the FoV as a write-back calls it), each timed end to end with CUDA events (median of
``--repeats``):

- ``depth``: ``estimate_batch`` of ``--depth-frames`` frames alone; ``scores``: ``chunk_scores`` alone;
- ``serial``: the scores, then the depth, on one stream (what a render does now);
- ``side_stream``: the scores on a side stream that starts with the depth, which runs on the main stream; the end
  waits for both;
- ``scores_compiled``: ``torch.compile(chunk_scores)`` alone (its compile time apart), and its largest difference
  from the eager scores.
"""

from __future__ import annotations

import argparse
import time

import torch
from gpu_depth import _image
from gpu_levers import write_report
from gpu_scores import chunk_inputs, median_ms


def main() -> None:
    from transformers import DepthProForDepthEstimation

    from mirage import scores
    from mirage.depth import DepthEstimator, DepthFamily, DepthKind, depth_pro_config, depth_pro_processor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--depth-frames", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--compile-depth", action="store_true", help="the depth model under torch.compile, as --compile")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cuda = torch.device("cuda")
    W, H = 832, 480
    x = chunk_inputs(args.frames, W, H, cuda)
    score_args = tuple(x[k] for k in ("frames", "reads", "holes")) + (None,) + tuple(
        x[k] for k in ("depth", "K", "w2c", "c2w", "read_stride"))
    with torch.device(cuda):
        model = DepthProForDepthEstimation(depth_pro_config()).to(torch.bfloat16).eval()
    est = DepthEstimator(model, depth_pro_processor(), name="random:DepthPro (real config)", revision=None,
                         family=DepthFamily.DEPTH_PRO, kind=DepthKind.METRIC, device=cuda, dtype=torch.bfloat16,
                         max_batch=4)
    if args.compile_depth:
        est.compile()
    depth_in = torch.stack([_image()] * args.depth_frames).to(cuda, torch.bfloat16)  # (n, 3, 480, 832)
    side = torch.cuda.Stream()

    def depth() -> None:
        est.estimate_batch(depth_in, fov_x_deg=60.0)

    def chunk_scores() -> torch.Tensor:
        return scores.chunk_scores(*score_args)

    def serial() -> None:
        chunk_scores()
        depth()

    def side_stream() -> None:
        main = torch.cuda.current_stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            chunk_scores()
        depth()
        main.wait_stream(side)

    def timed(fn) -> float:
        with torch.no_grad():
            return median_ms(fn, args.repeats, cuda)

    ms = {"depth": timed(depth), "scores": timed(chunk_scores), "serial": timed(serial),
          "side_stream": timed(side_stream)}
    compiled = torch.compile(scores.chunk_scores)
    with torch.no_grad():
        t = time.perf_counter()
        out_c = compiled(*score_args)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t
        diff = (out_c - chunk_scores()).abs()
        rel = float((diff / chunk_scores().abs().clamp(min=1e-6)).max())
    ms["scores_compiled"] = timed(lambda: compiled(*score_args))
    report = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "frames": args.frames,
        "depth_frames": args.depth_frames, "compile_depth": args.compile_depth, "ms": ms,
        "hidden_ms": round(ms["serial"] - ms["side_stream"], 3),
        "scores_compile_s": round(compile_s, 1), "scores_compiled_max_rel_diff": rel,
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
