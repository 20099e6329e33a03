"""Batch throughput as a batch user gets it: `mirage render --out-dir` over a folder, MP4s and reports written.

    python scripts/bench_batch.py [--compile --fp8 all] [--steps 4] [--images 5] [--out batch.json]

``mirage bench``'s ``videos_per_hour`` counts the render only (3600 / one video's end-to-end seconds). A batch also
writes each video (the H.264 encode of 81 frames, on the host) and its report. This script renders the same folder
of ``--images`` copies of the example image with :func:`mirage.batch.render` on one loaded pipeline (random weights
at the real architectures, the default render path: 81 frames at 832x480, 33-frame chunks, write-back with the
real-size Depth Pro, which also estimates each input's depth; guidance off, FoV 60 degrees), twice after a warm-up
render (which pays any compile):

1. ``write_behind=False``: each input's files are written before the next input renders;
2. ``write_behind=True`` (the default of a batch): written on a thread while the next input renders.

Per batch: the wall seconds, videos per hour (3600 x images / wall seconds), each input's render and write times
(its report's ``total`` less ``video_write``, and ``video_write``), and the MP4 sizes. The videos of random weights
are noise-like: H.264 encodes them more slowly than a real scene's (the MP4 sizes say how far).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    from gpu_levers import write_report  # scripts/ is on sys.path when run as a script

    from mirage.batch import OutputRequest, render
    from mirage.bench import BenchConfig, build_pipeline, example_inputs
    from mirage.config import PipelineConfig, RenderOptions
    from mirage.inputs import TrajectoryOptions
    from mirage.precision import Fp8Mode
    from mirage.sampling import SamplingProfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--fp8", default="none", choices=[m.value for m in Fp8Mode])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--images", type=int, default=5, help="inputs per batch")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="wan-vace-1.3b")
    ap.add_argument("--size", default="832x480")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    on_gpu = args.device.startswith("cuda")
    config = PipelineConfig(preset=args.preset, device=args.device, dtype="bfloat16" if on_gpu else "float32",
                            vae_dtype="model" if on_gpu else "float32", compile=args.compile, fp8=Fp8Mode(args.fp8))
    size = tuple(int(v) for v in args.size.lower().split("x"))
    options = RenderOptions(size=size, fov=60.0, chunk_frames=33, profile=SamplingProfile.FAST, steps=args.steps)
    pipe = build_pipeline(BenchConfig(config=config, options=options, random_weights=args.preset != "tiny"))
    traj = TrajectoryOptions("orbit", frames=args.frames)
    work = Path(tempfile.mkdtemp(prefix="mirage-bench-batch-"))
    try:
        src = work / "in"
        src.mkdir()
        for i in range(args.images):
            shutil.copy(example_inputs()[0], src / f"room_{i:02d}.png")
        t = time.perf_counter()
        render([src / "room_00.png"], traj, OutputRequest(out=work / "warmup.mp4"), options=options, pipeline=pipe)
        res = {"config": {k: str(v) for k, v in vars(args).items()}, "warmup_s": time.perf_counter() - t}
        for name, behind in (("write_inline", False), ("write_behind", True)):
            out = work / name
            t = time.perf_counter()
            batch = render([src], traj, OutputRequest(out_dir=out, write_behind=behind), options=options,
                           pipeline=pipe)
            wall = time.perf_counter() - t
            if not batch.ok:
                raise SystemExit(f"{name}: {[i.error for i in batch.failed]}")
            reports = [json.loads(p.read_text())["timing_ms"] for p in sorted(out.glob("*.json"))]
            render_ms = [r["total"] - r["video_write"] for r in reports]
            write_ms = [r["video_write"] for r in reports]
            res[name] = {
                "wall_s": wall, "videos_per_hour": 3600 * args.images / wall,
                "render_ms": render_ms, "write_ms": write_ms,
                "render_ms_median": statistics.median(render_ms), "write_ms_median": statistics.median(write_ms),
                "mp4_bytes": [p.stat().st_size for p in sorted(out.glob("*.mp4"))],
            }
            print(name, f"{wall:.2f} s for {args.images} videos = {3600 * args.images / wall:.0f} videos/h; render "
                  f"{statistics.median(render_ms):.0f} ms, write {statistics.median(write_ms):.0f} ms (medians)",
                  flush=True)
        res["render_only_videos_per_hour"] = 3.6e6 / res["write_behind"]["render_ms_median"]
        write_report(res, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
