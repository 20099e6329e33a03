"""Context-parallel speed-up of one long chunk: `mirage bench`'s code path with the transformer split over N GPUs.

Run once per GPU count (1 = the baseline, no context parallel), on the same machine kind, then compare:

    export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
    python scripts/bench_context_parallel.py --fast --frames 81 --steps 20 --random-weights --json out/cp1.json
    for n in 2 4 8; do
      torchrun --nproc-per-node $n scripts/bench_context_parallel.py --fast --frames 81,161 --steps 20 --random-weights \\
          --json out/cp$n.json
    done
    python scripts/bench_context_parallel.py --compare out/cp1.json out/cp2.json out/cp4.json out/cp8.json

Each frame count is rendered as ONE chunk (chunk_frames = frames), latent memory only, so the split is over
all its video tokens (81 frames at 832x480: 21 x 30 x 52 = 32760 tokens). Every rank renders the same video
(same seed); rank 0 writes the JSON. CPU check (tiny preset, gloo, no speed meaning):

    torchrun --nproc-per-node 2 scripts/bench_context_parallel.py --preset tiny --device cpu --size 64x32 \\
        --frames 9 --steps 2 --repeats 1 --warmup 0 --json /tmp/cp2.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def run(args: argparse.Namespace) -> int:
    from mirage.bench import BenchConfig, example_inputs
    from mirage.config import PipelineConfig, RenderOptions
    from mirage.io import atomic_write_text
    from mirage.memory.types import MemoryKind
    from mirage.parallel import bench_context_parallel, init_rank, shutdown_distributed
    from mirage.sampling import SamplingProfile
    from mirage_cli.options import parse_size
    from mirage_cli.render import resolve_device, resolve_dtype

    image, depth = example_inputs()
    env = init_rank(resolve_device(args.device))  # each rank: cuda:LOCAL_RANK (or the CPU with gloo)
    results = []
    for frames in _ints(args.frames):
        rc = PipelineConfig(preset=args.preset, device=env.device, dtype=resolve_dtype(args.dtype, env.device))
        ro = RenderOptions(size=parse_size(args.size), chunk_frames=frames, fov=60.0, memory=MemoryKind.LATENT,
                           profile=SamplingProfile.FAST if args.fast else SamplingProfile.STANDARD)
        cfg = BenchConfig(config=rc, options=ro, image=image, depth_file=depth, traj="orbit", frames=(frames,),
                          steps=_ints(args.steps), repeats=args.repeats, warmup=args.warmup,
                          memories=(MemoryKind.LATENT,), random_weights=args.random_weights)
        report = bench_context_parallel(cfg, env, attention_backend=args.attention_backend)
        for row in report.rows:
            results.append({"frames": row.frames, "steps": row.steps, "error": row.error,
                            "total_ms": row.median("total_ms"), "denoise_ms": row.median("denoise_ms"),
                            "peak_vram_overall": row.median("peak_vram_overall")})
        header = report.header
    if env.is_main:
        out = {"world_size": env.world_size, "context_parallel": header["context_parallel"],
               "header": header, "rows": results}
        text = json.dumps(out, indent=1, default=str)
        if args.json:
            atomic_write_text(args.json, text + "\n")
        for r in results:
            print(f"N={env.world_size} frames={r['frames']} steps={r['steps']} total={r['total_ms']} ms "
                  f"denoise={r['denoise_ms']} ms" + (f" ERROR {r['error']}" if r["error"] else ""))
    shutdown_distributed(barrier=True)
    return 1 if any(r["error"] for r in results) else 0


def compare(paths: list[str]) -> int:
    """Speed-up table (markdown) of several JSON results against the one with the fewest GPUs."""
    runs = sorted((json.loads(Path(p).read_text()) for p in paths), key=lambda r: r["world_size"])
    base = {(r["frames"], r["steps"]): r for r in runs[0]["rows"]}
    print("| GPUs | frames | steps | denoise ms | end to end ms | denoise speed-up | end-to-end speed-up |")
    print("|---|---|---|---|---|---|---|")
    for run_ in runs:
        for r in run_["rows"]:
            b = base.get((r["frames"], r["steps"]))
            sd = b["denoise_ms"] / r["denoise_ms"] if b and r["denoise_ms"] else None
            st = b["total_ms"] / r["total_ms"] if b and r["total_ms"] else None
            print(f"| {run_['world_size']} | {r['frames']} | {r['steps']} | {r['denoise_ms'] or 0:,.0f} | "
                  f"{r['total_ms'] or 0:,.0f} | {'-' if sd is None else f'{sd:.2f}x'} | "
                  f"{'-' if st is None else f'{st:.2f}x'} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="wan-vace-1.3b")
    ap.add_argument("--frames", default="81", help="comma-separated; each is one chunk")
    ap.add_argument("--steps", default="20")
    ap.add_argument("--fast", action="store_true",
                    help="guidance off and the model's flow shift, as `mirage render --fast` (the published figures)")
    ap.add_argument("--size", default="832x480")
    ap.add_argument("--device", default="auto", help="auto, cuda (each rank: cuda:LOCAL_RANK) or cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--attention-backend", default=None, help="diffusers backend, e.g. _native_cudnn, flash")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--compare", nargs="+", default=None, help="print the speed-up table of these JSON results")
    args = ap.parse_args()
    if args.compare:
        return compare(args.compare)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
