"""`mirage bench` for several render variants on ONE loaded (and compiled) pipeline: the compile is paid once.

    python scripts/bench_variants.py --compile --fp8 all --out-prefix h200_compiled [--steps 4] [--memory latent]
                                     [--repeats N]

Runs the default render path (81 frames, 832x480, 33-frame chunks with write-back, the real-size Depth Pro for
write-back, guidance off as ``--fast``, random weights at the real architectures) with the consistency scores on
(the render default) and off (``--no-scores``), each written as ``<prefix>_scores.json`` / ``<prefix>_no_scores.json``
in ``mirage bench --json``'s format. The first variant's warm-up run pays the compile (reported as ``warmup_s``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace


def main() -> None:
    from mirage.bench import BenchConfig, build_pipeline, example_inputs, run_bench
    from mirage.config import PipelineConfig, RenderOptions
    from mirage.memory.types import MemoryKind
    from mirage.precision import Fp8Mode
    from mirage.sampling import SamplingProfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--fp8", default="none", choices=[m.value for m in Fp8Mode])
    ap.add_argument("--steps", default="4")
    ap.add_argument("--memory", default="latent", choices=[m.value for m in MemoryKind])
    ap.add_argument("--out-prefix", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="wan-vace-1.3b")
    ap.add_argument("--size", default="832x480")
    ap.add_argument("--repeats", type=int, default=1, help="timed renders per setting (each printed; the JSON's "
                    "summary holds their median)")
    args = ap.parse_args()
    image, depth = example_inputs()
    on_gpu = args.device.startswith("cuda")
    config = PipelineConfig(preset=args.preset, device=args.device, dtype="bfloat16" if on_gpu else "float32",
                            vae_dtype="model" if on_gpu else "float32",
                            compile=args.compile, fp8=Fp8Mode(args.fp8))
    size = tuple(int(v) for v in args.size.lower().split("x"))
    options = RenderOptions(size=size, fov=60.0, chunk_frames=33, profile=SamplingProfile.FAST)
    cfg = BenchConfig(config=config, options=options, image=image, depth_file=depth, frames=(81,),
                      steps=tuple(int(s) for s in args.steps.split(",")), repeats=args.repeats, warmup=1,
                      memories=(MemoryKind(args.memory),), random_weights=args.preset != "tiny")
    pipe = build_pipeline(cfg)
    for name, scores in (("scores", True), ("no_scores", False)):
        run = replace(cfg, options=replace(options, scores=scores))
        report = run_bench(run, pipeline=pipe)
        path = f"{args.out_prefix}_{name}.json"
        with open(path, "w") as f:
            json.dump(report.to_dict(), f, indent=1, default=str)
        for row in report.rows:
            if not row.runs:
                print(name, row.memory, row.steps, "error:", row.error, flush=True)
            for r in row.runs:
                print(name, row.memory, row.steps, round(r.total_ms), {k: round(v) for k, v in r.stages_ms.items()},
                      round(r.peak_vram_bytes.get("overall", 0) / 2**30, 2), "GiB", "unstaged",
                      {k: round(v, 1) for k, v in r.unstaged_ms.items() if v >= 0.5}, flush=True)


if __name__ == "__main__":
    main()
