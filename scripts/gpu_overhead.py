"""Where a render's end-to-end time goes that no stage holds: the default render path, one video, profiled.

    python scripts/gpu_overhead.py [--steps 4] [--compile --fp8 all] [--no-scores] [--only plain|trace|gaps]
                                   [--repeats N] [--keep-trace T.json.gz] [--out F.json]

The report's stages are CUDA-event spans; ``total`` is the wall clock of the render. Their difference (about 0.36 s
a video on the H200 in the fifth session) is host work the GPU waits for, or GPU work outside every stage. On the
pipeline ``mirage bench --random-weights`` builds (81 frames, 832x480, 33-frame chunks, write-back, guidance off),
after one warm-up render:

1. ``plain``: one render as the bench runs it (``--repeats`` of them): total, the stages' sum, the gap, and the
   report's ``unstaged_ms`` (the gap by where it falls); ``--only plain`` stops here;
2. ``segments``: one render with the render's steps wrapped (a CUDA synchronisation before and after each, so each
   holds its own GPU work; inclusive wall times, ms, and calls);
3. ``cprofile``: one render under cProfile (no synchronisation added): the functions with the most own time;
4. ``trace``: one render under torch.profiler, each stage a ``record_function`` range: per stage (and ``unstaged``,
   the render outside every stage) the host wall time, the torch ops called from Python, the host synchronisations
   (calls of cudaStreamSynchronize, cudaDeviceSynchronize, cudaEventSynchronize, blocking cudaMemcpy; a copy from
   pageable memory waits inside cudaMemcpyAsync and is not counted) with the time the host waited in them, and the
   GPU time of the kernels launched (events belong to the innermost stage that holds their start), and the six ops
   whose own kernels took the most GPU time. A stage whose kernel time is far below its wall time keeps the GPU
   idle: launches or syncs. ``--only trace`` runs ``plain`` and this pass only;
5. ``gaps`` (``--only gaps`` only): one render under torch.profiler with Python stacks, read by
   ``scripts/gpu_gaps.py``: the GPU's idle time inside the render, charged to the stage, the mirage function and the
   torch op the render thread was in (``--keep-trace``: the events it read, to read again without a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import gzip
import io
import json
import os
import pstats
import tempfile
import time

import torch
from gpu_gaps import DEVICE_CATS, HOST_OP_CATS, idle_gaps  # scripts/ is on sys.path when run as a script
from gpu_levers import write_report

# (owner, attribute) pairs wrapped in the segments pass: the render's steps outside the stages and around them
SEGMENTS = [
    ("mirage.inputs:InputPlan", "read_image"),
    ("mirage.pipeline:Pipeline", "_depth_of"),
    ("mirage.pipeline:Pipeline", "_intrinsics"),
    ("mirage.pipeline:Pipeline", "_encode_image"),
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


SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


@contextlib.contextmanager
def staged_profile(**kwargs):
    """torch.profiler (CPU and CUDA) over the block, each StageTimer stage a ``stage:NAME`` range and the block itself
    ``stage:unstaged``; yields the profiler (read it after the block)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from mirage.report import StageTimer

    orig = StageTimer.stage

    @contextlib.contextmanager
    def ranged(self, name):
        with record_function(f"stage:{getattr(name, 'value', name)}"), orig(self, name):
            yield

    StageTimer.stage = ranged
    try:
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], **kwargs) as prof:
            with record_function("stage:unstaged"):
                yield prof
            torch.cuda.synchronize()
    finally:
        StageTimer.stage = orig


def traced_stages(render) -> dict:
    """``render()`` under torch.profiler, each StageTimer stage a ``stage:NAME`` range: per stage the host ms, the
    top-level torch ops, the host synchronisations and their waiting ms, and the launched kernels' GPU ms."""
    with staged_profile() as prof:
        render()
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    ranges = sorted(((e.time_range.start, e.time_range.end, e.name[6:]) for e in events if e.name.startswith("stage:")),
                    key=lambda r: r[0])

    def owner(t: float) -> str | None:  # the innermost stage range holding time t
        best = None
        for a, b, name in ranges:
            if a <= t <= b and (best is None or a >= best[0]):
                best = (a, b, name)
        return best[2] if best else None

    out: dict[str, dict] = {}
    by_op: dict[str, dict[str, float]] = {}  # stage -> op name -> GPU ms of the kernels it launched itself
    for a, b, name in ranges:
        out.setdefault(name, {"host_ms": 0.0, "ops": 0, "syncs": 0, "sync_wait_ms": 0.0, "kernel_ms": 0.0})
        out[name]["host_ms"] += (b - a) / 1e3
    for e in events:
        if e.name.startswith("stage:"):
            continue
        name = owner(e.time_range.start)
        if name is None:
            continue
        row = out[name]
        parent = e.cpu_parent
        if e.name.startswith("aten::") and (parent is None or not parent.name.startswith("aten::")):
            row["ops"] += 1
        if e.name in SYNC_CALLS:
            row["syncs"] += 1
            row["sync_wait_ms"] += (e.time_range.end - e.time_range.start) / 1e3
        row["kernel_ms"] += e.self_device_time_total / 1e3
        if e.self_device_time_total:
            ops = by_op.setdefault(name, {})
            ops[e.name] = ops.get(e.name, 0.0) + e.self_device_time_total / 1e3
    # a stage's host time holds its nested stages': take them out (exclusive, as the report's stages are)
    for a, b, name in ranges:
        inner = [r for r in ranges if a < r[0] and r[1] <= b and r[2] != name]
        direct = [r for r in inner if not any(o[0] < r[0] and r[1] <= o[1] and o != r for o in inner)]
        out[name]["host_ms"] -= sum((rb - ra) / 1e3 for ra, rb, _ in direct)
    for name, ops in by_op.items():  # the ops whose kernels took the most GPU time
        out[name]["top_kernel_ops_ms"] = {k: round(v, 2) for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:6]}
    return {k: {kk: round(vv, 2) if isinstance(vv, float) else vv for kk, vv in v.items()} for k, v in
            sorted(out.items(), key=lambda kv: -kv[1]["host_ms"])}


def traced_gaps(render, keep: str | None = None) -> dict:
    """``render()`` under torch.profiler with Python stacks: :func:`gpu_gaps.idle_gaps` of its chrome trace. ``keep``:
    also write the events the analysis reads (device spans; the render thread's stages, mirage functions and host
    ops) as gzipped JSON there, to read again without a GPU."""
    with staged_profile(with_stack=True) as prof:
        render()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.unlink(path)
    out = idle_gaps(events)
    if keep:
        win = max((e for e in events if e.get("name") == "stage:unstaged"), key=lambda e: float(e.get("dur", 0)))
        on_thread = (win.get("tid"), win.get("pid"))

        def wanted(e: dict) -> bool:
            if e.get("ph") != "X":
                return False
            if e.get("cat") in DEVICE_CATS:
                return True
            name = str(e.get("name", ""))
            return (e.get("tid"), e.get("pid")) == on_thread and (
                name.startswith("stage:") or e.get("cat") in HOST_OP_CATS
                or (e.get("cat") == "python_function" and "mirage/" in name))

        kept = [{k: e.get(k) for k in ("ph", "cat", "name", "ts", "dur", "tid", "pid")} for e in events if wanted(e)]
        for e in kept:
            if e["cat"] in DEVICE_CATS:
                e["name"] = str(e["name"])[:60]
        with gzip.open(keep, "wt") as f:
            json.dump({"traceEvents": kept}, f)
    return out


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
    ap.add_argument("--only", choices=["plain", "trace", "gaps"], default=None,
                    help="run only this pass (after the warm-up and the plain pass)")
    ap.add_argument("--repeats", type=int, default=1, help="plain renders (each with its report's unstaged_ms)")
    ap.add_argument("--keep-trace", default=None, help="with --only gaps: the trace's events, gzipped JSON, here")
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
    plain = []
    for _ in range(args.repeats):
        res = render()
        stages = {k: round(v, 1) for k, v in res.report.timing_ms.items() if k not in ("total", "load")}
        total = res.report.timing_ms["total"]
        plain.append({"total_ms": round(total, 1), "stages_ms": stages, "stages_sum_ms": round(sum(stages.values()), 1),
                      "gap_ms": round(total - sum(stages.values()), 1),
                      "unstaged_ms": {k: round(v, 2) for k, v in res.report.unstaged_ms.items()}})
        print(plain[-1], flush=True)
        del res  # a result holds its pinned frames: kept, the next render would allocate (and pin) a new block
    report["plain"] = plain[0] if len(plain) == 1 else plain
    if args.only == "plain":
        write_report(report, args.out)
        return
    if args.only == "gaps":
        report["gaps"] = traced_gaps(render, args.keep_trace)
        write_report(report, args.out)
        return
    if args.only == "trace":
        report["trace"] = traced_stages(render)
        print(report["trace"], flush=True)
        write_report(report, args.out)
        return
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
    report["trace"] = traced_stages(render)
    print(report["trace"], flush=True)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
