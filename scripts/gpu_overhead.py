"""Where a render's end-to-end time goes that no stage holds: the default render path, one video, profiled.

    python scripts/gpu_overhead.py [--steps 4] [--compile --fp8 all] [--no-scores] [--out h200_overhead.json]

The report's stages are CUDA-event spans; ``total`` is the wall clock of the render. Their difference (about 0.36 s
a video on the H200 in the fifth session) is host work the GPU waits for, or GPU work outside every stage. On the
pipeline ``mirage bench --random-weights`` builds (81 frames, 832x480, 33-frame chunks, write-back, guidance off),
after one warm-up render:

1. ``plain``: one render as the bench runs it: total, the stages' sum, the gap;
2. ``segments``: one render with the render's steps wrapped (a CUDA synchronisation before and after each, so each
   holds its own GPU work; inclusive wall times, ms, and calls);
3. ``cprofile``: one render under cProfile (no synchronisation added): the functions with the most own time.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import pstats
import time

import torch
from gpu_levers import write_report  # scripts/ is on sys.path when run as a script

# (owner, attribute) pairs wrapped in the segments pass: the render's steps outside the stages and around them
SEGMENTS = [
    ("mirage.inputs:InputPlan", "read_image"),
    ("mirage.pipeline:Pipeline", "_depth_of"),
    ("mirage.pipeline:Pipeline", "_intrinsics"),
    ("mirage.pipeline:Pipeline", "_open_world"),
    ("mirage.pipeline:Pipeline", "_run_chunk"),
    ("mirage.pipeline:Pipeline", "_conditioning"),
    ("mirage.pipeline:Pipeline", "_decoded_reads"),
    ("mirage.pipeline:Pipeline", "_write_back"),
    ("mirage.pipeline:Pipeline", "prompt_embeds"),
    ("mirage.pipeline", "build_report"),
    ("mirage.pipeline", "video_revisits"),
    ("mirage.pipeline", "chunk_scores"),
    ("mirage.pipeline", "plan_chunks"),
    ("mirage.pipeline", "pin_first_frame"),
    ("mirage.pipeline", "check_sees_memory"),
    ("torch:Tensor", "cpu"),
]


def _owner(spec: str):
    import importlib

    mod, _, cls = spec.partition(":")
    m = importlib.import_module(mod)
    return getattr(m, cls) if cls else m


def wrapped_segments(render) -> dict:
    """``render()`` with every SEGMENTS entry timed (synchronised), inclusive ms and calls per entry."""
    times: dict[str, list[float]] = {}
    saved = []

    def wrap(name, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            torch.cuda.synchronize()
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.synchronize()
                times.setdefault(name, []).append((time.perf_counter() - t) * 1e3)
        return timed

    for spec, attr in SEGMENTS:
        owner = _owner(spec)
        fn = getattr(owner, attr)
        saved.append((owner, attr, fn))
        setattr(owner, attr, wrap(f"{spec.split(':')[-1]}.{attr}", fn))
    try:
        torch.cuda.synchronize()
        t = time.perf_counter()
        res = render()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t) * 1e3
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)
    seg = {k: {"ms": round(sum(v), 1), "calls": len(v)} for k, v in sorted(times.items(), key=lambda kv: -sum(kv[1]))}
    return {"wall_ms": round(wall, 1), "total_ms": round(res.report.timing_ms["total"], 1), "segments": seg}


def main() -> None:
    from mirage.bench import BenchConfig, build_pipeline, example_inputs
    from mirage.config import PipelineConfig, RenderOptions
    from mirage.inputs import TrajectoryOptions
    from mirage.precision import Fp8Mode
    from mirage.sampling import SamplingProfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--fp8", default="none", choices=[m.value for m in Fp8Mode])
    ap.add_argument("--no-scores", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    image, depth = example_inputs()
    config = PipelineConfig(preset="wan-vace-1.3b", device="cuda", dtype="bfloat16", vae_dtype="model",
                            compile=args.compile, fp8=Fp8Mode(args.fp8))
    options = RenderOptions(size=(832, 480), fov=60.0, chunk_frames=33, profile=SamplingProfile.FAST,
                            steps=args.steps, scores=not args.no_scores)
    cfg = BenchConfig(config=config, options=options, image=image, depth_file=depth, frames=(81,),
                      steps=(args.steps,), repeats=1, warmup=1, random_weights=True)
    pipe = build_pipeline(cfg)
    traj = TrajectoryOptions(spec=cfg.traj, frames=81)

    def render():
        return pipe.render(image, traj, options, depth_file=depth)

    t = time.perf_counter()
    render()  # warm-up (and the compile, with --compile)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "steps": args.steps,
              "compile": args.compile, "fp8": args.fp8, "scores": not args.no_scores,
              "warmup_s": round(time.perf_counter() - t, 1)}
    res = render()
    stages = {k: round(v, 1) for k, v in res.report.timing_ms.items() if k not in ("total", "load")}
    total = res.report.timing_ms["total"]
    report["plain"] = {"total_ms": round(total, 1), "stages_ms": stages, "stages_sum_ms": round(sum(stages.values()), 1),
                       "gap_ms": round(total - sum(stages.values()), 1)}
    print(report["plain"], flush=True)
    report["segments"] = wrapped_segments(render)
    print(report["segments"], flush=True)
    prof = cProfile.Profile()
    prof.enable()
    res = render()
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf).sort_stats("tottime")
    st.print_stats(30)
    report["cprofile"] = {"total_ms": round(res.report.timing_ms["total"], 1), "top_tottime": buf.getvalue()[-9000:]}
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats("mirage", 40)
    report["cprofile"]["top_cumulative_mirage"] = buf.getvalue()[-9000:]
    write_report(report, args.out)


if __name__ == "__main__":
    main()
