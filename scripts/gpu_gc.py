"""Full garbage collections during renders, with the loaded models' objects frozen (``PipelineConfig.freeze_gc``) and
without: how many start inside a render, how long each takes, and the render's unstaged time.

    python scripts/gpu_gc.py [--renders 4] [--steps 4] [--out F.json]
    python scripts/gpu_gc.py --device cpu --collect-only   # the models loaded, one full collection, no render

The default render path of ``mirage bench --random-weights`` (81 frames, 832x480, 33-frame chunks, write-back, scores
on), eager. The pipeline loads with ``freeze_gc=False``; after a warm-up, ``--renders`` renders; then the script
freezes the collector as ``Pipeline._freeze_gc`` does and renders as many again. Each generation-2 collection is
timed through ``gc.callbacks``.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch
from gpu_levers import write_report  # scripts/ is on sys.path when run as a script


def main() -> None:
    from mirage.bench import BenchConfig, build_pipeline, example_inputs
    from mirage.config import PipelineConfig, RenderOptions
    from mirage.inputs import TrajectoryOptions
    from mirage.sampling import SamplingProfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--renders", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--collect-only", action="store_true",
                    help="load the models (and the depth model), time one full collection before and after a freeze")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    image, depth = example_inputs()
    config = PipelineConfig(preset="wan-vace-1.3b", device=args.device, dtype="bfloat16", vae_dtype="model",
                            freeze_gc=False)
    options = RenderOptions(size=(832, 480), fov=60.0, chunk_frames=33, profile=SamplingProfile.FAST, steps=args.steps)
    cfg = BenchConfig(config=config, options=options, image=image, depth_file=depth, frames=(81,),
                      steps=(args.steps,), repeats=1, warmup=1, random_weights=True)
    pipe = build_pipeline(cfg)
    if args.collect_only:
        pipe.depth_model()  # the write-back's model is loaded on first use

        def full_collection_ms() -> float:  # the second of two: a scan with no loading garbage left to free
            gc.collect(2)
            t = time.perf_counter()
            gc.collect(2)
            return round((time.perf_counter() - t) * 1e3, 3)

        report = {"device": args.device, "torch": torch.__version__, "tracked_objects": len(gc.get_objects()),
                  "full_collection_ms": full_collection_ms()}
        gc.freeze()
        report["frozen_objects"] = gc.get_freeze_count()
        report["frozen_full_collection_ms"] = full_collection_ms()
        write_report(report, args.out)
        return
    traj = TrajectoryOptions(spec=cfg.traj, frames=81)
    pauses: list[float] = []
    started: list[float] = []

    def on_gc(phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append((time.perf_counter() - started.pop()) * 1e3)

    gc.callbacks.append(on_gc)
    pipe.render(image, traj, options, depth_file=depth)  # warm-up
    report = {"device": torch.cuda.get_device_name() if pipe.device.type == "cuda" else args.device, "torch": torch.__version__, "steps": args.steps,
              "tracked_objects": len(gc.get_objects())}
    for name in ("not_frozen", "frozen"):
        if name == "frozen":  # what Pipeline._freeze_gc does with freeze_gc on
            t = time.perf_counter()
            gc.collect()
            gc.freeze()
            report["freeze_ms"] = round((time.perf_counter() - t) * 1e3, 1)
            report["frozen_objects"] = gc.get_freeze_count()
        rows = []
        for _ in range(args.renders):
            pauses.clear()
            res = pipe.render(image, traj, options, depth_file=depth)
            tm = res.report.timing_ms
            staged = sum(v for k, v in tm.items() if k not in ("total", "load"))
            rows.append({"total_ms": round(tm["total"], 1), "unstaged_ms": round(tm["total"] - staged, 1),
                         "gen2_collections": len(pauses), "gen2_ms": [round(p, 1) for p in pauses]})
            del res
        report[name] = rows
        t = time.perf_counter()
        gc.collect(2)
        report[f"{name}_full_collection_ms"] = round((time.perf_counter() - t) * 1e3, 1)
    gc.callbacks.remove(on_gc)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
